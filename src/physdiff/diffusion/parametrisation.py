"""Parametrisations of one denoiser: ε-, x0- and v-prediction, the score, and the Tweedie estimate.

With x_t = α_t x_0 + σ_t ε (α² + σ² = 1) the optimal predictions are linked by

* Tweedie:   E[x_0 | x_t] = (x_t − σ_t ε*) / α_t = x_θ*                      (x0_from_eps)
* score:     ∇ log q_t(x_t) = −ε* / σ_t                                      (score_from_eps)
* velocity:  v = α_t ε − σ_t x_0,  x_0 = α_t x_t − σ_t v,  ε = σ_t x_t + α_t v

The :class:`Denoiser` wraps a network (which knows nothing of schedules) and turns its raw output
into the Tweedie estimate x̂0 that every physical prior acts on. Known (conditioned) entries are
exact in x̂0, so every sampler keeps them fixed.

The network is conditioned on the noise level c_noise = log(σ_t/α_t) = −½ λ(t) (λ the log-SNR), not on
t: two schedules at times with the same σ/α give the network the same input, so a trained network does
not depend on the schedule it was trained with (the c_noise of Karras et al. 2022, there ¼ ln σ).

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from physdiff.diffusion.schedule import VPSchedule

__all__ = [
    "PREDICTIONS",
    "DenoiserOutput",
    "Denoiser",
    "x0_from_eps",
    "eps_from_x0",
    "score_from_eps",
    "eps_from_score",
    "v_from_eps_x0",
    "x0_from_v",
    "eps_from_v",
]

PREDICTIONS = ("eps", "x0", "v")


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Tweedie estimate from a noise prediction: x̂0 = (x_t − σ_t ε̂) / α_t."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """ε̂ = (x_t − α_t x̂0) / σ_t."""
    return (x_t - alpha * x0) / sigma


def score_from_eps(eps: Tensor, sigma: Tensor) -> Tensor:
    """∇ log q_t(x_t) = −ε̂ / σ_t."""
    return -eps / sigma


def eps_from_score(score: Tensor, sigma: Tensor) -> Tensor:
    """ε̂ = −σ_t ∇ log q_t(x_t)."""
    return -sigma * score


def v_from_eps_x0(eps: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """v = α_t ε − σ_t x_0 (Salimans & Ho 2022)."""
    return alpha * eps - sigma * x0


def x0_from_v(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x̂0 = α_t x_t − σ_t v̂."""
    return alpha * x_t - sigma * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """ε̂ = σ_t x_t + α_t v̂."""
    return sigma * x_t + alpha * v


@dataclass
class DenoiserOutput:
    """One evaluation of the denoiser at (x_t, t): the Tweedie estimate and the matching noise."""

    x0: Tensor
    eps: Tensor
    alpha: Tensor
    sigma: Tensor
    raw: Tensor
    hidden: Tensor | None = None

    @property
    def score(self) -> Tensor:
        return score_from_eps(self.eps, self.sigma)

    @property
    def v(self) -> Tensor:
        return v_from_eps_x0(self.eps, self.x0, self.alpha, self.sigma)


class Denoiser(nn.Module):
    """Parametrisation wrapper: network raw output → (x̂0, ε̂), with conditioning and projection.

    ``forward(x_t, t, ...)`` takes the diffusion time t (samplers and losses work in t) and calls the
    network with the noise level c_noise = log(σ_t/α_t) (:meth:`noise_level`) instead of t.

    Args:
        net: a network with signature ``net(x_t, noise, known, mask, **context)``, ``noise`` the noise
            level c_noise ``[B]`` (docs/architecture.md).
        schedule: the VP schedule.
        prediction: what the raw output means: ``"eps"``, ``"x0"`` or ``"v"``.
        project: an optional linear orthogonal projection ``project(x, **context)`` onto the data subspace
            (e.g. zero mass-weighted centre of mass for particle positions, which needs the ``masses`` of
            the context), applied to the raw output and to every noise draw.
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: VPSchedule,
        prediction: str = "eps",
        project: Callable[..., Tensor] | None = None,
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self._project = project

    def project(self, x: Tensor, **context: Tensor) -> Tensor:
        """Project onto the data subspace (identity when no projection is set); ``context`` as in forward."""
        return x if self._project is None else self._project(x, **context)

    def noise_level(self, t: Tensor) -> Tensor:
        """The network's conditioning c_noise = log(σ_t/α_t) = −½ λ(t), from the schedule's stable log-SNR."""
        return -0.5 * self.schedule.log_snr(t)

    def noise_like(self, x: Tensor, generator: torch.Generator | None = None, **context: Tensor) -> Tensor:
        """A draw of ε ~ N(0, I) restricted to the data subspace."""
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return self.project(eps, **context)

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        known: Tensor | None = None,
        mask: Tensor | None = None,
        return_hidden: bool = False,
        **context: Tensor,
    ) -> DenoiserOutput:
        """Evaluate at diffusion time ``t`` ``[B]`` (a scalar is broadcast); the network sees c_noise(t)."""
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        if mask is None:
            mask = torch.zeros_like(x_t)
            known = torch.zeros_like(x_t)
        elif known is None:
            raise ValueError("a conditioning mask was given without the known values")
        known = known * mask
        alpha, sigma = self.schedule.coefficients(t, x_t.ndim)
        noise = self.noise_level(t)
        if return_hidden:
            raw, hidden = self.net(x_t, noise, known, mask, return_hidden=True, **context)
        else:
            raw, hidden = self.net(x_t, noise, known, mask, **context), None
        raw = self.project(raw, **context)
        if self.prediction == "eps":
            eps = raw
            x0 = x0_from_eps(x_t, eps, alpha, sigma)
        elif self.prediction == "x0":
            x0 = raw
            eps = eps_from_x0(x_t, x0, alpha, sigma)
        else:
            x0 = x0_from_v(x_t, raw, alpha, sigma)
            eps = eps_from_v(x_t, raw, alpha, sigma)
        # known entries are exact in the Tweedie estimate; ε̂ there is the noise actually in x_t
        is_known = mask > 0.5
        x0 = torch.where(is_known, known, x0)
        eps = torch.where(is_known, eps_from_x0(x_t, known, alpha, sigma), eps)
        return DenoiserOutput(x0=x0, eps=eps, alpha=alpha, sigma=sigma, raw=raw, hidden=hidden)
