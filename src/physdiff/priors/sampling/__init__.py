r"""Sampling-time constraints: the prior objects applied to the Tweedie estimate while sampling.

This goes **beyond the paper** (method.md §3, last item), whose priors act on training only; results
obtained with it are reported in their own rows, never as the paper's with-prior arm.

At every sampler step whose time is ≤ ``t_start`` the estimate x̂0 is replaced by a corrected one (the
sampler then recomputes ε̂ from x_t and the new x̂0, so the correction carries into x_{t−Δt}):

One registry, :data:`METHODS`, keyed by the mode name (``sample.constraints[].mode``, ``--constraint-mode``,
``Run.sample(constraints=...)``); a new method is one module with a :class:`~physdiff.priors.sampling.base.
SamplingMethod` subclass and one line in :data:`METHODS`:

* ``projection`` (:mod:`.projection`): exact Gauss–Newton projection of x̂0 (dense / sparse / matrix-free);
* ``guidance`` (:mod:`.guidance`): normalised gradient steps on ½‖R(x̂0)‖²;
* ``pcfm`` (:mod:`.pcfm`): Physics-Constrained Flow Matching (Utkarsh, Cai et al. 2025), flow models;
* ``eci`` (:mod:`.eci`): Extrapolation–Correction–Interpolation (Cheng et al. 2025), flow models;
* ``diffusionpde`` (:mod:`.diffusionpde`): DiffusionPDE's guidance (Huang et al. 2024);
* ``dps`` (:mod:`.dps`): Diffusion Posterior Sampling (Chung et al. 2023);
* ``dflow`` (:mod:`.dflow`): D-Flow, optimising the initial noise through the ODE (Ben-Hamu et al. 2024).

The first two correct x̂0 inside the ordinary sampler (an ``x0_hook``); the others drive the loop
(:meth:`physdiff.diffusion.samplers.Sampler.__call__`'s ``loop``). A method that is not defined on the model's
process family is refused in one line (:meth:`~physdiff.priors.sampling.base.SamplingMethod.check_process`).

Known entries (the conditioning mask) are never moved. The residual of several priors is their
concatenation, so a projection meets all of them at once. ``first_step=True`` adds, for every time-dependent
PDE prior, the first step's equation (:class:`FirstStepResidual`) to the rows, constraining the one
frame's worth of freedom that central time differences leave.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from physdiff.priors.base import Prior
from physdiff.priors.sampling.base import FirstStepResidual, Law, MethodOptions, SamplingMethod, make_law
from physdiff.priors.sampling.dflow import DFlowMethod
from physdiff.priors.sampling.diffusionpde import DiffusionPDEMethod
from physdiff.priors.sampling.dps import DPSMethod
from physdiff.priors.sampling.eci import ECIMethod
from physdiff.priors.sampling.guidance import GuidanceMethod, gradient_guidance
from physdiff.priors.sampling.pcfm import PCFMMethod
from physdiff.priors.sampling.projection import (
    PROJECTION_METHODS,
    ProjectionMethod,
    Projector,
    SingularSystemError,
    batched_cg,
    choose_projection_method,
    gauss_newton_projection,
)

__all__ = [
    "CONSTRAINT_MODES",
    "METHODS",
    "PROJECTION_METHODS",
    "FirstStepResidual",
    "Law",
    "MethodOptions",
    "Projector",
    "SamplingMethod",
    "SingularSystemError",
    "batched_cg",
    "choose_projection_method",
    "constraint_hook",
    "gauss_newton_projection",
    "gradient_guidance",
    "make_law",
    "make_method",
]

#: mode name → method class: a new sampling-time method is one module and one line here
METHODS: dict[str, type[SamplingMethod]] = {
    ProjectionMethod.name: ProjectionMethod,
    GuidanceMethod.name: GuidanceMethod,
    PCFMMethod.name: PCFMMethod,
    ECIMethod.name: ECIMethod,
    DiffusionPDEMethod.name: DiffusionPDEMethod,
    DPSMethod.name: DPSMethod,
    DFlowMethod.name: DFlowMethod,
}
CONSTRAINT_MODES: tuple[str, ...] = tuple(METHODS)


def make_method(
    priors: Sequence[Prior],
    *,
    mode: str = "projection",
    mask: Tensor | None = None,
    context: Mapping[str, Any] | None = None,
    **options: Any,
) -> SamplingMethod:
    """The sampling-time method ``mode`` (a key of :data:`METHODS`) enforcing ``priors``.

    Args:
        priors: priors with a residual (``ResidualPrior`` or another ``Constraint``), concatenated into one law.
        mode: the method's name.
        mask: the conditioning mask (1 = known entry, never moved); ``None`` moves every entry.
        context: keyword context of the priors (``masses``, ``edges``, ``cond``, ...).
        options: the settings of :class:`~physdiff.priors.sampling.base.MethodOptions` (``t_start``,
            ``iterations``, ``scale``, ``tol``, ``cg_iters``, ``method``, ``dense_max``, ``sparse_max``, ``rtol``,
            ``first_step``, ``penalty``, ``penalty_steps``, ``penalty_step``, ``resample_every``).

    Raises:
        ValueError: an unknown mode or setting, no priors, a bad value (named), or a prior without a residual.
    """
    if mode not in METHODS:
        raise ValueError(f"unknown sampling-time constraint mode {mode!r}; choose one of {CONSTRAINT_MODES}")
    unknown = set(options) - set(MethodOptions.names())
    if unknown:
        raise ValueError(
            f"sampling-time constraint: unknown setting(s) {sorted(unknown)}; known: {MethodOptions.names()}"
        )
    opts = MethodOptions(**options)
    if not opts.iterations >= 1:
        raise ValueError(f"sampling-time constraint: iterations must be >= 1, got {opts.iterations}")
    if not opts.cg_iters >= 1:
        raise ValueError(f"sampling-time constraint: cg_iters must be >= 1, got {opts.cg_iters}")
    law = make_law(priors, mask=mask, context=context, first_step=opts.first_step)
    return METHODS[mode](law, opts)


def constraint_hook(
    priors: Sequence[Prior],
    *,
    mode: str = "projection",
    mask: Tensor | None = None,
    context: Mapping[str, Any] | None = None,
    **options: Any,
) -> Callable[[Tensor, Tensor], Tensor]:
    """An ``x0_hook(x̂0, t)`` for :func:`physdiff.diffusion.samplers.sample` that enforces ``priors`` by a method
    that corrects x̂0 (``projection``: Gauss–Newton, exact for affine residuals; ``guidance``: gradient steps);
    arguments as in :func:`make_method`. The hook carries its :class:`Projector` as ``hook.projector`` (``None``
    for guidance), whose ``info`` tells the path taken and the residual reached.

    Raises:
        ValueError: as :func:`make_method`; a mode that drives the sampling loop (use :func:`make_method` and
            pass its ``loop`` to the sampler); at the first projection, a singular or inconsistent linear system.
    """
    method = make_method(priors, mode=mode, mask=mask, context=context, **options)
    hook = method.x0_hook()
    if hook is None:
        raise ValueError(
            f"sampling-time constraint mode {mode!r} drives the sampling loop and has no x̂0 hook; use "
            "make_method(...).loop with the sampler"
        )
    return hook
