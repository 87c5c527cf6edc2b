"""What every sampling-time constraint method shares: the law it acts on, its settings, and the interface.

A method is a :class:`SamplingMethod` subclass in its own module of :mod:`physdiff.priors.sampling` and one
line in the registry (:data:`physdiff.priors.sampling.METHODS`). It acts in one of two ways:

* through the ordinary sampler, by correcting the Tweedie estimate x̂0 after every denoiser evaluation
  (:meth:`SamplingMethod.x0_hook`; ``projection`` and ``guidance``), or
* by driving the sampling loop itself (:meth:`SamplingMethod.loop`; ``pcfm``, ``eci``, ``diffusionpde``,
  ``dps``, ``dflow``): it receives the sampler (its denoiser with the call's conditioning, its noise and its
  time grid) and the start state, and returns the sample.

Every method acts through the same :class:`Law`: the concatenated residual R(x) of the priors (built-in laws
or user priors that are :class:`~physdiff.priors.base.Constraint` objects) with their context, and the
conditioning mask (known entries are never moved).
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from physdiff.priors.base import Constraint, Prior
from physdiff.priors.fields import FieldResidualPrior

if TYPE_CHECKING:  # the sampler is handed in at run time (diffusion sits below priors)
    from physdiff.diffusion.samplers import Sampler

__all__ = ["FirstStepResidual", "Law", "MethodOptions", "SamplingMethod", "make_law"]

Residual = Callable[[Tensor], Tensor]
X0Hook = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class MethodOptions:
    """The settings of every method (each reads those it uses; docs/priors.md, "Sampling-time methods").

    ``iterations``: guidance steps per sampler step (``guidance``); the most Gauss–Newton steps of a projection
    (``projection``, ``pcfm``); ECI's mixing iterations per step (``eci``); L-BFGS iterations (``dflow``).
    ``scale``: the normalised guidance step (``guidance``); the step size η of ``diffusionpde``, ζ of ``dps``;
    the L-BFGS learning rate of ``dflow``. ``penalty`` (λ), ``penalty_steps``, ``penalty_step``: PCFM's optional
    relaxed penalty correction (off at λ = 0). ``resample_every``: ECI's noise re-sampling interval in mixing
    iterations (0 = never: the initial noise throughout).
    """

    t_start: float = 1.0
    iterations: int = 1
    scale: float = 1.0
    tol: float = 1e-6
    cg_iters: int = 50
    method: str = "auto"
    dense_max: int = 512
    sparse_max: int = 1 << 15
    rtol: float = 1e-8
    first_step: bool = False
    penalty: float = 0.0
    penalty_steps: int = 20
    penalty_step: float = 1e-2
    resample_every: int = 0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class Law:
    """The law R(x) = 0 that a method enforces: the residual of the priors (rows concatenated per sample),
    whether it is affine, a label for messages, and the conditioning mask (1 = known entry, never moved)."""

    residual: Residual
    linear: bool
    label: str
    mask: Tensor | None = None

    def free(self, like: Tensor) -> Tensor:
        """M: 1 on the entries a method may move, 0 on the known ones; shaped like ``like``."""
        return torch.ones_like(like) if self.mask is None else (1.0 - self.mask.to(like)).expand_as(like)

    def loss(self, x: Tensor) -> Tensor:
        """‖R(x)‖² per sample ``[B]``."""
        return self.residual(x).flatten(1).square().sum(1)


class FirstStepResidual(Constraint):
    r"""The first step's equation of a time-dependent PDE prior, the rows that central time differences lack.

    The system's residual uses (u^{n+1} − u^{n−1})/(2Δt) on the interior frames 1..T−2, so with the first frame
    given, (T−2) frames of equations constrain (T−1) free frames: one frame's worth of freedom is left. This
    adds the midpoint (Crank–Nicolson) equation of the step 0 → 1,

        (u¹ − u⁰)/Δt + F((u⁰ + u¹)/2) = 0,

    evaluated by the system's own residual on the three frames (u⁰, (u⁰ + u¹)/2, u¹) with Δt/2 (second-order
    accurate, like the interior rows; linear when the residual is). Divided by the prior's normaliser.
    """

    def __init__(self, prior: FieldResidualPrior) -> None:
        if not isinstance(prior, FieldResidualPrior) or prior.system is None or not prior.system.time_dependent:
            raise ValueError(
                f"first_step: prior {getattr(prior, 'name', prior)!r} is not a time-dependent PDE-residual prior; "
                "the first-step equation applies to advection, Burgers and shallow-water residuals"
            )
        if prior.spacing.get("dt") is None:
            raise ValueError(f"first_step: prior {prior.name!r} has no time step dt in its spacing")
        self.prior = prior
        self.name = f"{prior.name}:first-step"
        self.case = prior.case

    def residual(self, x: Tensor, cond: Tensor | None = None, **context: Any) -> Tensor:
        p = self.prior
        u = p.to_physical(x) if p.to_physical is not None else x
        u3 = torch.stack([u[:, 0], 0.5 * (u[:, 0] + u[:, 1]), u[:, 1]], dim=1)
        coef = None
        if p.coefficient_to_physical is not None and cond is not None:
            coef = p.coefficient_to_physical(cond).to(u.dtype)
        spacing = {**p.spacing, "dt": float(p.spacing["dt"]) / 2.0}
        fn = p.system.get_residual(p.residual_name).fn
        return fn(u3, coef, spacing, p.parameters) / p.normaliser


def make_law(
    priors: Sequence[Prior],
    *,
    mask: Tensor | None = None,
    context: Mapping[str, Any] | None = None,
    first_step: bool = False,
) -> Law:
    """The :class:`Law` of ``priors`` (each must state R(x) = 0: a ``ResidualPrior`` or another
    :class:`~physdiff.priors.base.Constraint`); ``first_step`` adds each time-dependent PDE prior's first-step
    equation (:class:`FirstStepResidual`)."""
    if not priors:
        raise ValueError("a sampling-time constraint needs at least one prior")
    for p in priors:
        if not isinstance(p, Constraint):
            raise ValueError(
                f"prior {p.name!r} ({type(p).__name__}) states no law R(x) = 0; sampling-time constraints act on "
                "residuals (a ResidualPrior, or a prior that is also a Constraint, like the energy priors)"
            )
    laws: list[Any] = list(priors)
    if first_step:
        laws += [FirstStepResidual(p) for p in priors]  # refuses a prior without a time axis, by name
    label = "priors " + ", ".join(repr(p.name) for p in priors) + (" (+ first step)" if first_step else "")
    ctx = dict(context or {})

    def residual(x: Tensor) -> Tensor:
        return torch.cat([p.residual(x, **ctx).flatten(1) for p in laws], dim=1)

    linear = all(getattr(p, "case", None) == "linear" for p in laws)
    return Law(residual, linear, label, mask)


class SamplingMethod(ABC):  # noqa: B024 (a method implements x0_hook or loop, not necessarily both)
    """One sampling-time constraint method (a mode of ``sample.constraints``).

    Subclasses set ``name`` (the mode), ``reference`` (the paper), ``processes`` (the process families on which
    the paper defines the method; others are refused by :meth:`check_process` in one line saying why) and
    implement :meth:`x0_hook` or :meth:`loop`.
    """

    name: ClassVar[str]
    reference: ClassVar[str]
    processes: ClassVar[tuple[str, ...]] = ("vp", "flow")
    #: why a process outside :attr:`processes` is refused
    process_note: ClassVar[str] = ""

    def __init__(self, law: Law, options: MethodOptions) -> None:
        self.law = law
        self.options = options
        self.check_options()

    def check_options(self) -> None:  # noqa: B027 (optional)
        """Raise ``ValueError`` naming the setting at fault."""

    def check_process(self, process: str) -> None:
        """Refuse a model whose process family (``diffusion.process``) the method is not defined on."""
        if process not in self.processes:
            raise ValueError(
                f"sampling-time constraint mode {self.name!r} does not apply to diffusion.process={process!r}: "
                f"{self.process_note or 'it is defined on ' + ', '.join(self.processes) + ' only'}"
            )

    def x0_hook(self) -> X0Hook | None:
        """A correction ``f(x̂0, t) -> x̂0`` for the ordinary sampler, or ``None`` if the method drives the loop."""
        return None

    #: ``loop(sampler, x_start, ts) -> sample`` for methods that drive the sampling loop (``None``: hook methods)
    loop: Callable[[Sampler, Tensor, Tensor], Tensor] | None = None


def coefficients(sampler: Sampler, t: Tensor) -> tuple[Tensor, Tensor]:
    """(α_t, σ_t) of the sampler's process at a scalar time; at t = 0, (1, 0) exactly (the data end)."""
    if float(t) == 0.0:
        return torch.ones_like(t), torch.zeros_like(t)
    return sampler.schedule.alpha(t), sampler.schedule.sigma(t)


def targets(ts: Tensor) -> Tensor:
    """The step targets of a method that ends on the data: ts[1:] with the last one (t_eps) replaced by 0, so the
    last step lands on the (corrected) endpoint estimate, as the papers' grids end at the data (τ = 1)."""
    s = ts[1:].clone()
    s[-1] = 0.0
    return s
