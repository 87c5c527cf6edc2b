"""An analytic denoiser for Gaussian data, to test samplers and objectives against closed forms.

For x_0 ~ N(μ, Σ) the marginal is x_t ~ N(α_t μ, α_t² Σ + σ_t² I) and the posterior mean is

    E[x_0 | x_t] = μ + α_t Σ (α_t² Σ + σ_t² I)^{-1} (x_t − α_t μ),

which is exactly the minimiser of J_data; the minimisers of J_noise and J_v follow by conversion. The
formula holds for any (α_t, σ_t), so it serves the VP schedules and the flow interpolant alike (for flow,
(x_t − E[x_0 | x_t]) / t is the exact velocity E[ε − x_0 | x_t]).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from physdiff.diffusion.schedule import DiffusionProcess, _vp_alpha_sigma_from_noise_level

__all__ = ["GaussianDenoiserNet", "gaussian_posterior_mean", "coefficients_from_noise_level"]


def gaussian_posterior_mean(x_t: Tensor, alpha: Tensor, sigma: Tensor, mu: Tensor, cov: Tensor) -> Tensor:
    """E[x_0 | x_t] for x_0 ~ N(μ, Σ); x_t [B, d], alpha/sigma [B, 1]."""
    # in the eigenbasis Σ = U diag(λ) Uᵀ the gain α Σ (α² Σ + σ² I)^{-1} is diag(α λ / (α² λ + σ²))
    lam, u = torch.linalg.eigh(cov)
    gain = alpha * lam / (alpha**2 * lam + sigma**2)  # [B, d]
    return mu + ((x_t - alpha * mu) @ u * gain) @ u.T


def coefficients_from_noise_level(noise: Tensor, process: DiffusionProcess | None = None) -> tuple[Tensor, Tensor]:
    """(α, σ) from c = log(σ/α) alone, given the family: VP (``process`` None or a VP schedule):
    α² = 1/(1 + e^{2c}) = sigmoid(−2c), σ² = sigmoid(2c), computed as exp(½ logsigmoid(∓2c)) so that neither
    underflows to 0 for |c| large; flow: α = sigmoid(−c), σ = sigmoid(c)."""
    if process is None:
        return _vp_alpha_sigma_from_noise_level(noise)
    return process.alpha_sigma_from_noise_level(noise)


class GaussianDenoiserNet(nn.Module):
    """The exact optimal network for N(μ, Σ) data, in the ``x0`` parametrisation.

    It follows the network signature of ``docs/architecture.md``: it sees the noise level
    c_noise = log(σ/α) only and derives α, σ from it (:func:`coefficients_from_noise_level`), so it is
    exact under any schedule of the family of ``schedule``: VP when ``schedule`` is None or a VP schedule
    (only the family matters, not which VP schedule), the flow interpolant when it is a
    :class:`~physdiff.diffusion.schedule.FlowProcess` (c alone cannot tell the families apart). It ignores
    conditioning inputs (the :class:`~physdiff.diffusion.parametrisation.Denoiser` enforces known entries
    itself).
    """

    def __init__(self, mu: Tensor, cov: Tensor, schedule: DiffusionProcess | None = None) -> None:
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("cov", cov)
        self.process = schedule

    def forward(self, x_t: Tensor, noise: Tensor, known: Tensor, mask: Tensor, **_: Tensor) -> Tensor:
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        alpha, sigma = coefficients_from_noise_level(noise.to(x_t.dtype), self.process)
        return gaussian_posterior_mean(
            x_t, alpha.reshape(shape), sigma.reshape(shape), self.mu.to(x_t), self.cov.to(x_t)
        )
