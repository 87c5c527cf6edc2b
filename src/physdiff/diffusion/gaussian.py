"""An analytic denoiser for Gaussian data, to test samplers and objectives against closed forms.

For x_0 ~ N(μ, Σ) the marginal is x_t ~ N(α_t μ, α_t² Σ + σ_t² I) and the posterior mean is

    E[x_0 | x_t] = μ + α_t Σ (α_t² Σ + σ_t² I)^{-1} (x_t − α_t μ),

which is exactly the minimiser of J_data; the minimisers of J_noise and J_v follow by conversion.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from physdiff.diffusion.schedule import VPSchedule

__all__ = ["GaussianDenoiserNet", "gaussian_posterior_mean"]


def gaussian_posterior_mean(x_t: Tensor, alpha: Tensor, sigma: Tensor, mu: Tensor, cov: Tensor) -> Tensor:
    """E[x_0 | x_t] for x_0 ~ N(μ, Σ); x_t [B, d], alpha/sigma [B, 1]."""
    # in the eigenbasis Σ = U diag(λ) Uᵀ the gain α Σ (α² Σ + σ² I)^{-1} is diag(α λ / (α² λ + σ²))
    lam, u = torch.linalg.eigh(cov)
    gain = alpha * lam / (alpha**2 * lam + sigma**2)  # [B, d]
    return mu + ((x_t - alpha * mu) @ u * gain) @ u.T


class GaussianDenoiserNet(nn.Module):
    """The exact optimal network for N(μ, Σ) data, in the ``x0`` parametrisation.

    It follows the network signature of ``docs/architecture.md`` and ignores conditioning inputs
    (the :class:`~physdiff.diffusion.parametrisation.Denoiser` enforces known entries itself).
    """

    def __init__(self, mu: Tensor, cov: Tensor, schedule: VPSchedule) -> None:
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("cov", cov)
        self.schedule = schedule

    def forward(self, x_t: Tensor, t: Tensor, known: Tensor, mask: Tensor, **_: Tensor) -> Tensor:
        alpha, sigma = self.schedule.coefficients(t, x_t.ndim)
        return gaussian_posterior_mean(x_t, alpha, sigma, self.mu.to(x_t), self.cov.to(x_t))
