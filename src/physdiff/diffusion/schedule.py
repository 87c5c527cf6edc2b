"""Variance-preserving noise schedules.

The forward process is x_t = α_t x_0 + σ_t ε with ε ~ N(0, I) and α_t² + σ_t² = 1, for continuous
time t ∈ [t_eps, 1]. A schedule is fully described by its log signal-to-noise ratio
λ(t) = log(α_t² / σ_t²), which is strictly decreasing; α_t² = sigmoid(λ), σ_t² = sigmoid(−λ).
Every schedule can be inverted, t(λ), so that samplers can work on any grid of noise levels.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["VPSchedule", "LinearSchedule", "CosineSchedule", "make_schedule", "SCHEDULES"]


@dataclass(frozen=True)
class VPSchedule(ABC):
    """Base class: subclasses define ``log_alpha(t)`` and ``t_from_log_alpha``."""

    t_eps: float = 1e-3
    t_max: float = 1.0

    # -- provided by subclasses ---------------------------------------------------------------
    @abstractmethod
    def log_alpha(self, t: Tensor) -> Tensor:
        """log α_t."""

    @abstractmethod
    def t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        """Inverse of :meth:`log_alpha`."""

    # -- derived quantities ------------------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        """α_t."""
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        """σ_t = sqrt(1 − α_t²), computed as sqrt(−expm1(2 log α_t)) for accuracy at small t."""
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def log_snr(self, t: Tensor) -> Tensor:
        """λ(t) = log(α_t² / σ_t²)."""
        la2 = 2.0 * self.log_alpha(t)
        return la2 - torch.log(-torch.expm1(la2))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr`: α² = sigmoid(λ) ⇒ log α = ½ log sigmoid(λ)."""
        return self.t_from_log_alpha(0.5 * torch.nn.functional.logsigmoid(lam))

    def t_from_edm_sigma(self, s: Tensor) -> Tensor:
        """Inverse of the EDM noise level σ̃ = σ_t / α_t (λ = −2 log σ̃)."""
        return self.t_from_log_snr(-2.0 * torch.log(s))

    def edm_sigma(self, t: Tensor) -> Tensor:
        """EDM noise level σ̃_t = σ_t / α_t of the scaled variable x_t / α_t."""
        return torch.exp(-0.5 * self.log_snr(t))

    def coefficients(self, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """(α_t, σ_t) reshaped to broadcast against a batch of rank ``ndim`` (batch on axis 0)."""
        shape = (-1,) + (1,) * (ndim - 1)
        return self.alpha(t).reshape(shape), self.sigma(t).reshape(shape)


@dataclass(frozen=True)
class LinearSchedule(VPSchedule):
    """Linear-β VP schedule (Song et al. 2021): β(t) = β_min + t(β_max − β_min),

    log α_t = −¼ t² (β_max − β_min) − ½ t β_min.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        # Solve ¼ a t² + ½ b t + log α = 0 for t ≥ 0, with a = β_max − β_min, b = β_min.
        a = self.beta_max - self.beta_min
        b = self.beta_min
        disc = b * b - 4.0 * a * log_alpha
        # numerically stable root: t = −4 log α / (b + sqrt(b² − 4 a log α))
        return (-4.0 * log_alpha) / (b + torch.sqrt(disc))


@dataclass(frozen=True)
class CosineSchedule(VPSchedule):
    """Cosine schedule (Nichol & Dhariwal 2021) in its continuous, truncated form:

    α_t = cos θ(t), θ(t) = θ_0 + t (θ_1 − θ_0), i.e. λ(t) = −2 log tan θ(t), with θ_0, θ_1 chosen so
    that λ runs from ``log_snr_max`` at t = 0 to ``log_snr_min`` at t = 1 (exactly invertible).
    """

    log_snr_max: float = 15.0
    log_snr_min: float = -15.0

    def _theta_range(self) -> tuple[float, float]:
        return math.atan(math.exp(-0.5 * self.log_snr_max)), math.atan(math.exp(-0.5 * self.log_snr_min))

    def log_alpha(self, t: Tensor) -> Tensor:
        th0, th1 = self._theta_range()
        return torch.log(torch.cos(th0 + t * (th1 - th0)))

    def t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        th0, th1 = self._theta_range()
        theta = torch.arccos(torch.clamp(torch.exp(log_alpha), -1.0, 1.0))
        return (theta - th0) / (th1 - th0)


SCHEDULES = {"linear": LinearSchedule, "cosine": CosineSchedule}


def make_schedule(name: str = "linear", **kwargs: float) -> VPSchedule:
    """Build a schedule by name (``linear`` or ``cosine``)."""
    try:
        cls = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}") from None
    return cls(**kwargs)
