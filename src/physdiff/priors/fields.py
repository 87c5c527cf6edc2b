r"""PDE-residual priors: the finite-difference residual of a PDE system as a :class:`Prior` (method.md §3).

The diffusion model works on normalised fields ``x`` in its own layout (channel-first, see
:mod:`physdiff.experiments.field_task`); the prior maps ``x`` back to physical fields with ``to_physical``,
evaluates the system's residual R(u) on the grid of the data (spacings, β / ν / f / g from the data's
parameters, the permeability ``a`` for Darcy from the context), and divides by ``normaliser`` (the residual's gain
on white noise, :func:`noise_gain`) so that λ weighs the penalty against the data-matching loss:

    J_R = E_t w(t) ‖R(to_physical(x̂0)) / normaliser‖²   (mean over the points where the stencil applies).

Cases: advection, Darcy (given a) and shallow-water mass are linear in u — no Jensen gap; Burgers
(``u_i (u_{i+1} − u_{i−1})``, products of distinct grid points) and shallow-water momentum (multiplied
through by h², :func:`physdiff.physics.pde_residuals.shallow_water_momentum_residual`) are multilinear:
the penalty is ‖R(x̂0)‖² in every case.
On ground truth the residual is the discretisation error (the floor), not zero, so
:meth:`FieldResidualPrior.check_ground_truth` bounds the *relative* residual instead.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from physdiff.priors.base import PriorNotApplicable, ResidualPrior, law_error
from physdiff.systems.pde_registry import PDESystem, get_pde_system

__all__ = ["FieldPrior", "FieldResidualPrior", "make_field_prior", "noise_gain"]


@dataclass
class FieldResidualPrior(ResidualPrior):
    """The residual of a PDE system on model-space fields.

    Attributes:
        system: the :class:`~physdiff.systems.pde_registry.PDESystem`.
        residual_name: ``"residual"`` (the system's) or an extra residual of the system (``"momentum"``).
        spacing: ``{"dt", "dx", "dy"}`` of the data grid.
        parameters: physical parameters (``beta``, ``nu``, ``f``, ``g``).
        to_physical: model tensor ``[B, ...]`` → fields in the system's layout (undoing the scaling).
        coefficient_to_physical: context ``cond`` → Darcy permeability ``a [B, X, Y]`` (``None`` otherwise).
        normaliser: the residual is divided by this (> 0); :func:`noise_gain` makes λ ≈ the weight of
            the penalty relative to the data-matching loss for white errors.
        term_scale: a typical magnitude of one PDE term on clean data (RMS of u_t, or |f|), the yardstick of
            :meth:`check_ground_truth`.
    """

    system: PDESystem | None = None
    residual_name: str = "residual"
    spacing: Mapping[str, float | None] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    to_physical: Callable[[Tensor], Tensor] | None = None
    coefficient_to_physical: Callable[[Tensor], Tensor] | None = None
    normaliser: float = 1.0
    term_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.system is None:
            raise ValueError(f"prior {self.name!r}: a PDE system is required")
        if not self.normaliser > 0:
            raise ValueError(f"prior {self.name!r}: normaliser must be > 0, got {self.normaliser}")
        self._fn = self.system.get_residual(self.residual_name).fn
        if self.system.coefficient is not None and self.coefficient_to_physical is None:
            raise ValueError(
                f"prior {self.name!r}: the {self.system.name} residual needs the coefficient field "
                f"{self.system.coefficient!r} (e.g. Darcy's permeability)"
            )

    def residual(self, x: Tensor, cond: Tensor | None = None, **context: Any) -> Tensor:
        """R(u)/normaliser with u = to_physical(x); ``cond`` carries Darcy's (scaled) permeability."""
        u = self.to_physical(x) if self.to_physical is not None else x
        coef = None
        if self.coefficient_to_physical is not None:
            if cond is None:
                raise ValueError(f"prior {self.name!r}: the Darcy residual needs the permeability (context 'cond')")
            coef = self.coefficient_to_physical(cond).to(u.dtype)
        return self._fn(u, coef, self.spacing, self.parameters) / self.normaliser

    #: RMS(R) ≤ half a PDE term (measured at the quick sizes: advection 0.07, Burgers 0.17, Darcy 1e-5,
    #: shallow-water mass 0.3); a sign error gives ≈ 2, a missing grid spacing orders of magnitude more
    DEFAULT_TOL: ClassVar[float] = 0.5

    def law_scale(self, x: Tensor, **context: Any) -> Tensor:
        """One typical term of the PDE on clean data (``term_scale``: RMS of u_t, or |f|), in the residual's
        units (divided by ``normaliser``)."""
        return torch.tensor(self.term_scale / self.normaliser, dtype=torch.float64)

    def check_ground_truth(self, x0: Tensor, *, tol: float | None = None, **context: Any) -> None:
        """Refuse a prior whose residual on clean data is not small relative to a PDE term.

        On simulated ground truth R is the discretisation error, so the bound is relative: RMS(R) / term_scale
        over the batch must be ≤ ``tol`` (default ``DEFAULT_TOL`` = 0.5, or the prior's ``tol``)."""
        limit = self.tolerance(tol)
        rms, scale, value = law_error(self, x0, **context)
        if not value <= limit:
            raise PriorNotApplicable(
                f"prior {self.name!r} ({self.system.name} {self.residual_name}): the residual is not ≈ its floor "
                f"on the ground-truth data (RMS R / term_scale = {value:.3e} > tol = {limit:.1e}, priors.N.tol); "
                "check the grid spacing, parameters (beta, nu, f, g) and the scaling of the fields"
            )


@dataclass
class FieldPrior(ResidualPrior):
    """A user's field law R(u) = 0 on *physical* fields: implement :meth:`pde_residual` (and, optionally,
    :meth:`term`, one typical term of the law, the yardstick of the ground-truth check). No PDE system is needed:
    the field task fills in the grid and the file's constants.

    Attributes (set by the task; a user's own dataclass fields named as a file attribute get its value):
        spacing: ``{"dt", "dx", "dy"}`` of the data grid (``None`` where absent).
        coords: the coordinate arrays ``t``, ``x`` (and ``y``) as tensors.
        periodic: the spatial axes with periodic boundaries (``()``: none).
        axes: the axes of the physical fields after the sample axis, e.g. ``("t", "x")`` or ``("t", "c", "x", "y")``.
        to_physical: model tensor → physical fields ``[B, *axes]`` (undoing the normalisation).
        normaliser: the residual is divided by it in training (its white-noise gain, :func:`noise_gain`), 1 when
            it is measured (``law:<name>``) or enforced.
    """

    spacing: Mapping[str, float | None] = field(default_factory=dict)
    coords: Mapping[str, Tensor] = field(default_factory=dict)
    periodic: tuple[str, ...] = ()
    axes: tuple[str, ...] = ()
    to_physical: Callable[[Tensor], Tensor] | None = None
    normaliser: float = 1.0

    #: RMS(R) / RMS(term) on the ground truth (a discretisation error) must be below one half
    DEFAULT_TOL: ClassVar[float] = 0.5

    def fields(self, x: Tensor) -> Tensor:
        """Physical fields of a model state."""
        return self.to_physical(x) if self.to_physical is not None else x

    @abstractmethod
    def pde_residual(self, u: Tensor, **context: Any) -> Tensor:
        """R(u) on physical fields ``u`` ``[B, *axes]``; returns ``[B, ...]``."""

    def term(self, u: Tensor, **context: Any) -> Tensor | None:
        """One typical term of the law on ``u`` (e.g. u_t), or ``None`` (then the scale is the white-noise gain)."""
        return None

    def residual(self, x: Tensor, **context: Any) -> Tensor:
        return self.pde_residual(self.fields(x), **context) / self.normaliser

    def law_scale(self, x: Tensor, **context: Any) -> Tensor:
        with torch.no_grad():
            t = self.term(self.fields(x), **context)
        if t is None:
            return super().law_scale(x, **context)
        return t.square().mean().sqrt() / self.normaliser


def noise_gain(
    prior: FieldResidualPrior, x0: Tensor, generator: torch.Generator | None = None, **context: Any
) -> float:
    """RMS response of the (unnormalised) residual to unit white noise in model coordinates,
    ``sqrt(E‖R(x0 + ξ) − R(x0)‖²)``, ξ ~ N(0, I): the operator's gain. Dividing R by it puts the penalty
    on the scale of the data-matching loss ``‖x̂0 − x0‖²`` for white errors (smooth errors cost less)."""
    saved = prior.normaliser
    prior.normaliser = 1.0
    try:
        with torch.no_grad():
            xi = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
            d = prior.residual(x0 + xi, **context) - prior.residual(x0, **context)
    finally:
        prior.normaliser = saved
    return float(d.square().mean().sqrt())


def make_field_prior(
    name: str,
    system: str | PDESystem,
    *,
    weight: float = 1.0,
    time_weight: Callable[[Tensor], Tensor] | None = None,
    **kwargs: Any,
) -> FieldResidualPrior:
    """A PDE-residual prior by name (``residual`` or, for shallow water, ``momentum``).

    ``kwargs`` go to :class:`FieldResidualPrior` (``spacing``, ``parameters``, ``to_physical``,
    ``coefficient_to_physical``, ``normaliser``). The case (linear / multilinear) is the residual's.
    """
    sys_ = get_pde_system(system) if isinstance(system, str) else system
    if name not in sys_.residuals:
        raise ValueError(f"prior {name!r} does not apply to {sys_.name}; valid priors: {', '.join(sys_.residuals)}")
    return FieldResidualPrior(
        name=name,
        case=sys_.get_residual(name).kind,
        weight=weight,
        time_weight=time_weight,
        system=sys_,
        residual_name=name,
        **kwargs,
    )
