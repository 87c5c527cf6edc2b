r"""Built-in priors for particle systems, acting on states ``x`` ``[B, L, K, 2D]`` in model coordinates.

The diffusion model sees normalised data: positions divided by ``positions_scale`` and velocities by
``velocities_scale`` (``scale``); every prior undoes that before computing physics. Context keyword
arguments: ``masses`` ``[B, K]`` (default: unit masses), for springs ``edges`` ``[B, K, K]`` and for charged
particles ``charges`` ``[B, K]``. Frame 0 is the conditioned first frame.

* :class:`MomentumPrior` (linear): R_l = Σ_k m_k V_{l,k} − Σ_k m_k V_{0,k}, l ≥ 1.
* :class:`AngularMomentumPrior` (multilinear): R_l = L_l − L_0, L_l = Σ_k m_k R_{l,k} × V_{l,k}.
* :class:`NewtonSpringPrior` (linear in positions given the graph): m a_l − F_spring(R_l) on interior frames.
* :class:`GravityEnergyPrior` (nonlinear, multilinear reduction): match 1/R_ij (i<j) and V²_{l,k,d}.
* :class:`SpringEnergyPrior` (nonlinear): match e_ij R_ij² (i<j) and V²_{l,k,d}.
* :class:`CoulombEnergyPrior` (nonlinear, like gravity's): match q_i q_j / R_ij (i<j) and V²_{l,k,d}.

Which priors apply: momentum (and angular momentum) to every system, ``generic`` included (data without
external forces; no constants needed); ``energy`` resolves to the system's energy prior (``generic`` has
none); ``newton`` to springs only. The charged data's force clip (EGNN's, per component at ±100) makes
momentum and energy inexact on the trajectories it touched: the task checks a prior against the ground
truth on the trajectories the clip did not touch (their ``clip_steps`` is 0), where the laws hold to
round-off, and documents the clipped ones' floor (:mod:`physdiff.data.particles_h5`).

The energy priors train on features (the reduction); their :meth:`residual` E_l − E_0 (the conservation
law itself) is what sampling-time constraints (:mod:`physdiff.priors.sampling`) act on.

**Positions-only state** (``state="positions"``, ``model.state: positions``): the state is ``[B, L, K, D]``
(R only) and every prior's velocities are R differenced in time with ``dt``
(:func:`physdiff.physics.finite_difference.velocities_from_positions`, second order, one-sided at the ends).
Cases then: momentum stays linear (in R); angular momentum stays multilinear (R_l × (R_{l+1} − R_{l−1}):
distinct frames, and R_0 × R_0 = 0 in the end stencil); the kinetic features V² become quadratic in R
(squares of R_{l±1}), so the energy priors stay nonlinear (feature matching); Newton's residual is
unchanged (linear in R). On the mass-centred states the task feeds them, Σ_k m_k R_k = 0 on every frame,
so the differenced momentum is identically zero: the momentum prior has nothing left to act on there.

The kinetic features are the poster's per-component squares V²_{l,k,d} by default (J_KE of method.md §3.3:
each component enters the energy through its own square). ``kinetic_per_component=False`` matches the
per-particle squared speeds |V_{l,k}|² = Σ_d V²_{l,k,d} instead: a coarser feature whose penalty is rotation
invariant, which the auxiliary-head variant needs (its head reads invariant hidden states).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from physdiff.physics import particles as phys
from physdiff.physics.finite_difference import velocities_from_positions
from physdiff.priors.base import Constraint, FeaturePrior, Prior, ResidualPrior
from physdiff.systems.registry import PARTICLE_SYSTEMS, get_system

__all__ = [
    "PARTICLE_PRIORS",
    "AngularMomentumPrior",
    "CoulombEnergyPrior",
    "GravityEnergyPrior",
    "MomentumPrior",
    "NewtonSpringPrior",
    "ParticlePrior",
    "SpringEnergyPrior",
    "make_prior",
]

Scale = tuple[float, float] | Mapping[str, float] | float

#: a prior's state: (R, V) channels, or R only with V differenced in time
PARTICLE_STATES: tuple[str, ...] = ("positions+velocities", "positions")


def _parse_scale(scale: Scale) -> tuple[float, float]:
    if isinstance(scale, Mapping):
        return float(scale.get("positions_scale", 1.0)), float(scale.get("velocities_scale", 1.0))
    if isinstance(scale, int | float):
        return float(scale), float(scale)
    ps, vs = scale
    return float(ps), float(vs)


@dataclass
class ParticlePrior(Prior):
    """Base of the particle priors: unit conversion, masses and edges from the context. A concrete prior
    also derives from :class:`ResidualPrior` or :class:`FeaturePrior` (its kind).

    Attributes:
        dim: spatial dimension D (the state has 2D channels; D in the positions-only state).
        scale: ``(positions_scale, velocities_scale)`` (or a dict with those keys, or one float for both).
        state: ``"positions+velocities"`` (default) or ``"positions"``: R only, V differenced from it.
        dt: the frame spacing (the positions-only state's differencing; Newton's residual).
        system: the particle systems the prior applies to (class attribute).
    """

    dim: int = 3
    scale: Scale = (1.0, 1.0)
    state: str = "positions+velocities"
    dt: float | None = None
    system: ClassVar[tuple[str, ...]] = PARTICLE_SYSTEMS
    needs_edges: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim not in (2, 3):
            raise ValueError(f"prior {self.name!r}: dim must be 2 or 3, got {self.dim}")
        ps, vs = _parse_scale(self.scale)
        if not (ps > 0 and vs > 0):
            raise ValueError(f"prior {self.name!r}: scales must be > 0, got {(ps, vs)}")
        self.scale = (ps, vs)
        if self.state not in PARTICLE_STATES:
            raise ValueError(f"prior {self.name!r}: state must be one of {PARTICLE_STATES}, got {self.state!r}")
        if self.state == "positions" and not (self.dt is not None and self.dt > 0):
            raise ValueError(f"prior {self.name!r}: the positions-only state differences R in time: dt must be > 0")

    def check_system(self, system_name: str) -> None:
        """Raise ``ValueError`` if the prior does not apply to ``system_name``."""
        if system_name not in self.system:
            raise ValueError(
                f"prior {self.name!r} ({type(self).__name__}) does not apply to system {system_name!r}; "
                f"it applies to: {', '.join(self.system)}"
            )

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Physical positions and velocities ``[B, L, K, D]`` from a model state ``[B, L, K, 2D]``, or from a
        positions-only state ``[B, L, K, D]`` (velocities: R differenced in time with ``dt``)."""
        width = self.dim if self.state == "positions" else 2 * self.dim
        if x.dim() != 4 or x.shape[-1] != width:
            raise ValueError(
                f"prior {self.name!r}: expected a {self.state} state [B, L, K, {width}], got {tuple(x.shape)}"
            )
        ps, vs = self.scale  # type: ignore[misc]
        if self.state == "positions":
            R = x * ps
            return R, velocities_from_positions(R, float(self.dt), dim=1)  # type: ignore[arg-type]
        return x[..., : self.dim] * ps, x[..., self.dim :] * vs

    def masses(self, x: Tensor, context: Mapping[str, Any]) -> Tensor:
        """Masses ``[B, 1, K]`` (broadcast over frames); unit masses when the context has none."""
        m = context.get("masses")
        if m is None:
            return x.new_ones(x.shape[0], 1, x.shape[2])
        m = torch.as_tensor(m, dtype=x.dtype, device=x.device)
        return m.reshape(-1, 1, x.shape[2]) if m.dim() == 2 else m

    def edges(self, x: Tensor, context: Mapping[str, Any]) -> Tensor:
        """Spring adjacency ``[B, 1, K, K]``; ``ValueError`` when the context has no edge graph."""
        e = context.get("edges")
        if e is None:
            raise ValueError(
                f"prior {self.name!r} ({type(self).__name__}) needs the spring graph: pass edges=[B, K, K] "
                "in the context (it applies to spring systems only)"
            )
        e = torch.as_tensor(e, dtype=x.dtype, device=x.device)
        return e[:, None] if e.dim() == 3 else e

    def charges(self, x: Tensor, context: Mapping[str, Any]) -> Tensor:
        """Charges ``[B, 1, K]`` (broadcast over frames); ``ValueError`` when the context has none."""
        q = context.get("charges")
        if q is None:
            raise ValueError(
                f"prior {self.name!r} ({type(self).__name__}) needs the particle charges: pass charges=[B, K] in "
                "the context (it applies to charged particles only)"
            )
        q = torch.as_tensor(q, dtype=x.dtype, device=x.device)
        return q.reshape(-1, 1, x.shape[2]) if q.dim() == 2 else q


def _upper_pairs(K: int, device: torch.device) -> tuple[Tensor, Tensor]:
    iu = torch.triu_indices(K, K, offset=1, device=device)
    return iu[0], iu[1]


def _kinetic_features(V: Tensor, per_component: bool) -> Tensor:
    return V.square() if per_component else V.square().sum(-1)


class _EnergyScale:
    """The yardstick of an energy law E_l − E_0: the RMS of the kinetic energy (relative drift tolerance 1e-3:
    the simulators' integrators conserve energy to < 1e-4)."""

    DEFAULT_TOL: ClassVar[float] = 1e-3

    def law_scale(self, x: Tensor, **context: Any) -> Tensor:
        _, V = self.split(x)  # type: ignore[attr-defined]
        return phys.kinetic_energy(V, self.masses(x, context)).square().mean().sqrt()  # type: ignore[attr-defined]


@dataclass
class MomentumPrior(ParticlePrior, ResidualPrior):
    """Conservation of linear momentum (linear): Σ_k m_k V_{l,k} − Σ_k m_k V_{0,k} = 0 for l ≥ 1."""

    name: str = "momentum"
    case: str = "linear"

    def residual(self, x: Tensor, **context: Any) -> Tensor:
        _, V = self.split(x)
        P = phys.linear_momentum(V, self.masses(x, context))  # [B, L, D]
        return P[:, 1:] - P[:, :1]

    def law_scale(self, x: Tensor, **context: Any) -> Tensor:
        """RMS of Σ_k m_k |V_k| (the momentum a frame could carry): the yardstick of the law's drift."""
        _, V = self.split(x)
        return (self.masses(x, context) * V.norm(dim=-1)).sum(-1).square().mean().sqrt()


@dataclass
class AngularMomentumPrior(ParticlePrior, ResidualPrior):
    """Conservation of angular momentum (multilinear): L_l − L_0 = 0, L = Σ_k m_k R_k × V_k (about 0)."""

    name: str = "angular-momentum"
    case: str = "multilinear"

    def residual(self, x: Tensor, **context: Any) -> Tensor:
        R, V = self.split(x)
        Lm = phys.angular_momentum(R, V, self.masses(x, context))  # [B, L] (D=2) or [B, L, 3]
        return Lm[:, 1:] - Lm[:, :1]

    def law_scale(self, x: Tensor, **context: Any) -> Tensor:
        """RMS of Σ_k m_k |R_k| |V_k|."""
        R, V = self.split(x)
        return (self.masses(x, context) * R.norm(dim=-1) * V.norm(dim=-1)).sum(-1).square().mean().sqrt()


@dataclass
class NewtonSpringPrior(ParticlePrior, ResidualPrior):
    """Newton's law for springs (linear in positions given the graph): m a_l + κ(deg R − e R) = 0.

    a_l = (R_{l+1} − 2R_l + R_{l−1})/Δt² on interior frames; the residual has force units. Its scale is the
    RMS of m a (the finite difference's error is O(ω²Δt²/12) of it: tolerance 1e-2).
    """

    DEFAULT_TOL: ClassVar[float] = 1e-2

    name: str = "newton"
    case: str = "linear"
    dt: float = 0.1
    kappa: float = 0.1
    system: ClassVar[tuple[str, ...]] = ("five-spring",)
    needs_edges: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dt > 0:
            raise ValueError(f"prior {self.name!r}: dt must be > 0, got {self.dt}")

    def residual(self, x: Tensor, **context: Any) -> Tensor:
        R, _ = self.split(x)
        e = self.edges(x, context)
        m = self.masses(x, context)
        return phys.newton_residual(R, m, self.dt, lambda X: phys.spring_forces(X, e, self.kappa))

    def law_scale(self, x: Tensor, **context: Any) -> Tensor:
        R, _ = self.split(x)
        a = (R[:, 2:] - 2 * R[:, 1:-1] + R[:, :-2]) / self.dt**2
        return (self.masses(x, context)[..., None] * a).square().mean().sqrt()


@dataclass
class GravityEnergyPrior(_EnergyScale, ParticlePrior, FeaturePrior, Constraint):
    """Energy for gravity via the multilinear reduction: match 1/R_ij (i<j) and the kinetic terms.

    J = potential_weight · mean(1/R̂_ij − 1/R_ij)² + kinetic_weight · mean(|V̂|² − |V|²)².
    """

    name: str = "energy"
    case: str = "nonlinear"
    potential_weight: float = 1.0
    kinetic_weight: float = 1.0
    kinetic_per_component: bool = True
    G: float = 1.0
    system: ClassVar[tuple[str, ...]] = ("three-body",)

    def residual(self, x: Tensor, **context: Any) -> Tensor:
        """E_l − E_0 for l ≥ 1, ``[B, L−1]``: E = ½ Σ m|V|² − Σ_{i<j} G m_i m_j / r_ij."""
        R, V = self.split(x)
        m = self.masses(x, context)
        E = phys.kinetic_energy(V, m) + phys.gravity_potential(R, m, self.G)
        return E[:, 1:] - E[:, :1]

    def features(self, x: Tensor, **context: Any) -> dict[str, Tensor]:
        R, V = self.split(x)
        i, j = _upper_pairs(R.shape[-2], R.device)
        inv_r = phys.inverse_distances(R)[..., i, j]  # [B, L, K(K-1)/2]
        return {"potential": inv_r, "kinetic": _kinetic_features(V, self.kinetic_per_component)}

    def group_weights(self) -> dict[str, float]:
        return {"potential": self.potential_weight, "kinetic": self.kinetic_weight}


@dataclass
class SpringEnergyPrior(_EnergyScale, ParticlePrior, FeaturePrior, Constraint):
    """Energy for springs: match e_ij R_ij² over pairs i<j and the kinetic terms (needs ``edges``)."""

    name: str = "energy"
    case: str = "nonlinear"
    potential_weight: float = 1.0
    kinetic_weight: float = 1.0
    kinetic_per_component: bool = True
    kappa: float = 0.1
    system: ClassVar[tuple[str, ...]] = ("five-spring",)
    needs_edges: ClassVar[bool] = True

    def residual(self, x: Tensor, **context: Any) -> Tensor:
        """E_l − E_0 for l ≥ 1, ``[B, L−1]``: E = ½ Σ m|V|² + ½κ Σ_{i<j} e_ij r_ij²."""
        R, V = self.split(x)
        U = phys.spring_potential(R, self.edges(x, context), self.kappa)
        E = phys.kinetic_energy(V, self.masses(x, context)) + U
        return E[:, 1:] - E[:, :1]

    def features(self, x: Tensor, **context: Any) -> dict[str, Tensor]:
        R, V = self.split(x)
        e = self.edges(x, context)
        r2 = phys.pairwise_differences(R).square().sum(-1) * e  # [B, L, K, K]
        i, j = _upper_pairs(R.shape[-2], R.device)
        return {"potential": r2[..., i, j], "kinetic": _kinetic_features(V, self.kinetic_per_component)}

    def group_weights(self) -> dict[str, float]:
        return {"potential": self.potential_weight, "kinetic": self.kinetic_weight}


@dataclass
class CoulombEnergyPrior(_EnergyScale, ParticlePrior, FeaturePrior, Constraint):
    """Energy for charged particles via the multilinear reduction (as gravity's): match the Coulomb pair
    features q_i q_j / R_ij (i<j) and the kinetic terms (needs ``charges``).

    U = k Σ_{i<j} q_i q_j / r_ij is a sum of these features, so matching them (with V²) matches E; the charge
    product weights each pair by its share of U (±1 for EGNN's charges: the sign only).
    """

    name: str = "energy"
    case: str = "nonlinear"
    potential_weight: float = 1.0
    kinetic_weight: float = 1.0
    kinetic_per_component: bool = True
    k: float = 1.0
    system: ClassVar[tuple[str, ...]] = ("charged",)

    def residual(self, x: Tensor, **context: Any) -> Tensor:
        """E_l − E_0 for l ≥ 1, ``[B, L−1]``: E = ½ Σ m|V|² + Σ_{i<j} k q_i q_j / r_ij."""
        R, V = self.split(x)
        U = phys.coulomb_potential(R, self.charges(x, context), self.k)
        E = phys.kinetic_energy(V, self.masses(x, context)) + U
        return E[:, 1:] - E[:, :1]

    def features(self, x: Tensor, **context: Any) -> dict[str, Tensor]:
        R, V = self.split(x)
        q = self.charges(x, context)  # [B, 1, K]
        i, j = _upper_pairs(R.shape[-2], R.device)
        pair = phys.inverse_distances(R)[..., i, j] * (q[..., i] * q[..., j])  # [B, L, K(K-1)/2]
        return {"potential": pair, "kinetic": _kinetic_features(V, self.kinetic_per_component)}

    def group_weights(self) -> dict[str, float]:
        return {"potential": self.potential_weight, "kinetic": self.kinetic_weight}


PARTICLE_PRIORS: tuple[str, ...] = (
    "momentum",
    "energy",
    "newton",
    "angular-momentum",
    "gravity-energy",
    "spring-energy",
    "coulomb-energy",
)

_BY_NAME: dict[str, type[ParticlePrior]] = {
    "momentum": MomentumPrior,
    "newton": NewtonSpringPrior,
    "angular-momentum": AngularMomentumPrior,
    "gravity-energy": GravityEnergyPrior,
    "spring-energy": SpringEnergyPrior,
    "coulomb-energy": CoulombEnergyPrior,
}

#: the energy prior of each system by name (``energy``); a system without one (``generic``) has none
_ENERGY: dict[str, type[ParticlePrior]] = {
    "three-body": GravityEnergyPrior,
    "five-spring": SpringEnergyPrior,
    "charged": CoulombEnergyPrior,
}


def make_prior(
    name: str, system_name: str, *, constants: Mapping[str, float] | None = None, **kw: Any
) -> ParticlePrior:
    """A built-in particle prior by name for a particle system.

    Names: ``momentum``, ``energy`` (gravity, spring or Coulomb energy, by system), ``newton``,
    ``angular-momentum`` and the explicit ``gravity-energy`` / ``spring-energy`` / ``coulomb-energy``. ``dim``
    defaults to the system's; the physical constants the prior uses (``dt``, ``G``, ``kappa``, ``k``) come
    from ``constants`` (a data file's attributes),
    else from the system's defaults; other keywords (``weight``, ``scale``, ``time_weight``, ...) go to the
    prior.

    Raises:
        ValueError: unknown prior or system name, or a prior that does not apply to the system.
    """
    if system_name not in PARTICLE_SYSTEMS:
        raise ValueError(f"unknown particle system {system_name!r}; valid names: {', '.join(PARTICLE_SYSTEMS)}")
    if name not in PARTICLE_PRIORS:
        raise ValueError(f"unknown prior {name!r}; valid names: {', '.join(PARTICLE_PRIORS)}")
    sys = get_system(system_name)
    if name == "energy":
        if system_name not in _ENERGY:
            applies = [n for n, c in _BY_NAME.items() if system_name in c.system]
            raise ValueError(
                f"prior 'energy': system {system_name!r} has no energy (data of unknown physics); priors that "
                f"apply to it: {', '.join(applies)}"
            )
        cls: type[ParticlePrior] = _ENERGY[system_name]
    else:
        cls = _BY_NAME[name]
    if system_name not in cls.system:
        raise ValueError(
            f"prior {name!r} ({cls.__name__}) does not apply to system {system_name!r}; "
            f"it applies to: {', '.join(cls.system)}"
            + (" (it needs a spring graph, edges)" if cls.needs_edges and not sys.has_edges else "")
        )
    kw.setdefault("dim", sys.n_dims)
    values = {**sys.constants, **(constants or {})}
    fields = {f.name for f in dataclasses.fields(cls)}
    for const, value in values.items():  # the physical constants this prior uses
        if const in fields:
            kw.setdefault(const, float(value))
    return cls(**kw)
