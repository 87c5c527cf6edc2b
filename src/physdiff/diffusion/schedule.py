"""Gaussian noising processes: variance-preserving schedules and the flow-matching linear interpolant.

Every process is x_t = α_t x_0 + σ_t ε with ε ~ N(0, I), for continuous time t ∈ [t_eps, t_max], and is
described by (α_t, σ_t) and its log signal-to-noise ratio λ(t) = log(α_t² / σ_t²), strictly decreasing
and invertible, t(λ), so that samplers can work on any grid of noise levels. Two families (``kind``):

* ``vp`` — variance preserving, α_t² + σ_t² = 1 (:class:`VPSchedule`: :class:`LinearSchedule`,
  :class:`CosineSchedule`; method.md §1). A VP schedule is fully described by log α_t; σ_t and λ follow
  from α_t through α² + σ² = 1, and α² = sigmoid(λ), σ² = sigmoid(−λ).
* ``flow`` — the linear interpolant of flow matching / rectified flow, α_t = 1 − t, σ_t = t, so
  α + σ = 1 and α² + σ² < 1 inside (0, 1) (:class:`FlowProcess`; Lipman et al. 2023, Liu et al. 2023).

What holds for every process lives in :class:`DiffusionProcess` and is written in (α_t, σ_t) only: the
EDM noise level σ̃ = σ/α = e^{−λ/2}, its inverse, the broadcast ``coefficients``, the ODE variables of the
Heun/Euler samplers. What needs the VP constraint is in :class:`VPSchedule` and says so. The objective,
the :class:`~physdiff.diffusion.parametrisation.Denoiser` and the samplers see only this interface, so
one network class, one loss and one set of samplers serve both families.

Build a process with :func:`make_process` (``"vp"`` with a ``schedule`` name, or ``"flow"``) or, from an
experiment config, with ``make_schedule(cfg.diffusion.schedule, process=cfg.diffusion.process)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

__all__ = [
    "DiffusionProcess",
    "VPSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "FlowProcess",
    "make_schedule",
    "make_process",
    "SCHEDULES",
    "PROCESSES",
]


@dataclass(frozen=True)
class DiffusionProcess(ABC):
    """A Gaussian noising process x_t = α_t x_0 + σ_t ε, t ∈ [t_eps, t_max] (the interface every consumer uses).

    Subclasses set ``kind`` (the key of :data:`PROCESSES`) and implement :meth:`alpha`, :meth:`sigma`,
    :meth:`log_snr`, :meth:`t_from_log_snr` and :meth:`alpha_sigma_from_noise_level`. Nothing here
    assumes α² + σ² = 1.
    """

    t_eps: float = 1e-3
    t_max: float = 1.0

    #: the process family, a key of :data:`PROCESSES` (``"vp"`` or ``"flow"``)
    kind: ClassVar[str]

    # -- provided by subclasses ---------------------------------------------------------------
    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """α_t, the signal coefficient."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """σ_t, the noise coefficient."""

    @abstractmethod
    def log_snr(self, t: Tensor) -> Tensor:
        """λ(t) = log(α_t² / σ_t²), strictly decreasing."""

    @abstractmethod
    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr`."""

    @abstractmethod
    def alpha_sigma_from_noise_level(self, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(α, σ) of this family from the network's noise level c = log(σ/α) alone (needs the family's
        constraint between α and σ; used by the analytic test denoiser)."""

    # -- derived quantities, valid for every process ---------------------------------------------------
    def edm_sigma(self, t: Tensor) -> Tensor:
        """EDM noise level σ̃_t = σ_t / α_t = e^{−λ/2} of the scaled variable x_t / α_t = x_0 + σ̃_t ε."""
        return torch.exp(-0.5 * self.log_snr(t))

    def t_from_edm_sigma(self, s: Tensor) -> Tensor:
        """Inverse of :meth:`edm_sigma` (λ = −2 log σ̃)."""
        return self.t_from_log_snr(-2.0 * torch.log(s))

    def coefficients(self, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """(α_t, σ_t) reshaped to broadcast against a batch of rank ``ndim`` (batch on axis 0)."""
        shape = (-1,) + (1,) * (ndim - 1)
        return self.alpha(t).reshape(shape), self.sigma(t).reshape(shape)

    def ode_variables(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(s_t, τ_t) in which the probability-flow ODE reads dy/dτ = (y − x̂0(x_t, t)) / τ for y = x_t / s_t.

        The default is Karras et al.'s (2022, eq. 4) choice for any Gaussian process, s = α_t, τ = σ̃_t =
        σ_t/α_t: y = x_0 + σ̃ ε is a variance-exploding process, whose ODE is dy/dσ̃ = E[ε | y] =
        (y − E[x_0 | y]) / σ̃. The Euler and Heun samplers step in these variables.
        """
        return self.alpha(t), self.edm_sigma(t)

    def start_std(self) -> float:
        """Standard deviation of the samplers' start draw x_{t_max} ≈ N(0, start_std² I) (the α_{t_max} x_0
        part is dropped). Default σ_{t_max}."""
        return float(self.sigma(torch.tensor(self.t_max, dtype=torch.float64)))


# ------------------------------------------------------------------------------------------------ VP
def _vp_alpha_sigma_from_noise_level(noise: Tensor) -> tuple[Tensor, Tensor]:
    """VP only: α² = 1/(1 + e^{2c}) = sigmoid(−2c), σ² = sigmoid(2c), as exp(½ logsigmoid(∓2c)) so that
    neither underflows to 0 for |c| large."""
    logsig = torch.nn.functional.logsigmoid
    return torch.exp(0.5 * logsig(-2.0 * noise)), torch.exp(0.5 * logsig(2.0 * noise))


@dataclass(frozen=True)
class VPSchedule(DiffusionProcess):
    """Variance-preserving schedules (α_t² + σ_t² = 1): subclasses define ``log_alpha(t)`` and
    ``t_from_log_alpha``; σ_t, λ(t) and t(λ) follow from the VP constraint (VP only)."""

    kind: ClassVar[str] = "vp"

    # -- provided by subclasses ---------------------------------------------------------------
    @abstractmethod
    def log_alpha(self, t: Tensor) -> Tensor:
        """log α_t."""

    @abstractmethod
    def t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        """Inverse of :meth:`log_alpha`."""

    # -- derived quantities (VP) -------------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        """α_t."""
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        """VP only: σ_t = sqrt(1 − α_t²), computed as sqrt(−expm1(2 log α_t)) for accuracy at small t."""
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def log_snr(self, t: Tensor) -> Tensor:
        """VP only: λ(t) = log(α_t² / (1 − α_t²))."""
        la2 = 2.0 * self.log_alpha(t)
        return la2 - torch.log(-torch.expm1(la2))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """VP only: inverse of :meth:`log_snr`: α² = sigmoid(λ) ⇒ log α = ½ log sigmoid(λ)."""
        return self.t_from_log_alpha(0.5 * torch.nn.functional.logsigmoid(lam))

    def alpha_sigma_from_noise_level(self, noise: Tensor) -> tuple[Tensor, Tensor]:
        """VP only: α² = sigmoid(−2c), σ² = sigmoid(2c) for c = log(σ/α)."""
        return _vp_alpha_sigma_from_noise_level(noise)

    def start_std(self) -> float:
        """1: the VP samplers start from N(0, I) (σ_{t_max} = sqrt(1 − α²_{t_max}) ≈ 1 − 2e-5 for the
        linear schedule, closer for the cosine one)."""
        return 1.0


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


# ---------------------------------------------------------------------------------------------- flow
@dataclass(frozen=True)
class FlowProcess(DiffusionProcess):
    """The linear interpolant of flow matching (Lipman et al. 2023, σ_min = 0; rectified flow, Liu et al.
    2023): x_t = (1 − t) x_0 + t ε, i.e. α_t = 1 − t, σ_t = t (α + σ = 1, not variance preserving).

    Its velocity is v = dx_t/dt = ε − x_0 and the sampling ODE is dx/dt = v̂(x_t, t) = E[ε − x_0 | x_t]
    = (x_t − x̂0)/t. λ(t) = 2 log((1 − t)/t), t(λ) = sigmoid(−λ/2); the network's noise level is
    c = log(σ/α) = log(t/(1 − t)), σ̃ = t/(1 − t).

    Time runs over [t_eps, t_max] with t_max = 0.999 by default (not 1): at t = 1, α = 0 and
    c = log(t/(1 − t)) = +∞, which no noise-level embedding can take; with t_eps = 1e-3 the network sees
    c ∈ [−6.9, 6.9], the range of the VP schedules (``models/embedding.py``). The samplers start from
    N(0, t_max² I), the t_max ε part of x_{t_max} (the dropped 10⁻³ x_0 part is the analogue of the VP
    schedules' α_{t_max} x_0 ≈ 7e-3 x_0).
    """

    t_max: float = 0.999
    kind: ClassVar[str] = "flow"

    def __post_init__(self) -> None:
        if not 0.0 < self.t_eps < self.t_max < 1.0:
            raise ValueError(
                f"the flow process needs 0 < t_eps < t_max < 1, got t_eps={self.t_eps}, t_max={self.t_max}"
            )

    def alpha(self, t: Tensor) -> Tensor:
        """α_t = 1 − t."""
        return 1.0 - t

    def sigma(self, t: Tensor) -> Tensor:
        """σ_t = t."""
        return t * 1.0

    def log_snr(self, t: Tensor) -> Tensor:
        """λ(t) = 2 (log(1 − t) − log t)."""
        return 2.0 * (torch.log1p(-t) - torch.log(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """(1 − t)/t = e^{λ/2} ⇒ t = sigmoid(−λ/2)."""
        return torch.sigmoid(-0.5 * lam)

    def edm_sigma(self, t: Tensor) -> Tensor:
        """σ̃_t = t/(1 − t)."""
        return t / (1.0 - t)

    def t_from_edm_sigma(self, s: Tensor) -> Tensor:
        """t = σ̃/(1 + σ̃)."""
        return s / (1.0 + s)

    def alpha_sigma_from_noise_level(self, noise: Tensor) -> tuple[Tensor, Tensor]:
        """α = sigmoid(−c), σ = sigmoid(c) for c = log(t/(1 − t)) (α + σ = 1)."""
        return torch.sigmoid(-noise), torch.sigmoid(noise)

    def ode_variables(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(1, t): the flow ODE itself, dx/dt = v̂ = (x − x̂0)/t, already has the form dy/dτ = (y − x̂0)/τ
        (since x − x̂0 = t (ε̂ − x̂0) on the linear interpolant), so Euler and Heun step in (x, t)."""
        return torch.ones_like(t), t * 1.0


#: VP schedules by name (the experiment config's ``diffusion.schedule``)
SCHEDULES: dict[str, type[VPSchedule]] = {"linear": LinearSchedule, "cosine": CosineSchedule}

#: process families by name (the experiment config's ``diffusion.process``)
PROCESSES: dict[str, type[DiffusionProcess]] = {"vp": VPSchedule, "flow": FlowProcess}


def make_process(name: str = "vp", *, schedule: str = "linear", **kwargs: float) -> DiffusionProcess:
    """Build a process by family: ``"vp"`` with the VP ``schedule`` (``linear`` or ``cosine``), or ``"flow"``
    (the linear interpolant, which has no schedule to choose; ``schedule`` must then be ``"linear"``, the
    default, or ``"flow"``). ``kwargs`` go to the class (``t_eps``, ``t_max``, schedule parameters)."""
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; choose one of {sorted(PROCESSES)}")
    if name == "flow":
        if schedule not in ("linear", "flow"):
            raise ValueError(
                f"the flow process has a single schedule, the linear interpolant x_t = (1 − t) x0 + t ε; "
                f"schedule {schedule!r} applies to process 'vp' only"
            )
        return FlowProcess(**kwargs)
    try:
        cls = SCHEDULES[schedule]
    except KeyError:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}") from None
    return cls(**kwargs)


def make_schedule(name: str = "linear", process: str = "vp", **kwargs: float) -> DiffusionProcess:
    """Build the schedule ``name`` of the process family ``process`` (what the experiment config calls:
    ``make_schedule(cfg.diffusion.schedule, process=cfg.diffusion.process)``).

    ``process="vp"`` (default): the VP schedule ``linear`` or ``cosine``. ``process="flow"``: the linear
    interpolant (:class:`FlowProcess`); ``name`` must be ``"linear"`` (the config default) or ``"flow"``.
    """
    return make_process(process, schedule=name, **kwargs)
