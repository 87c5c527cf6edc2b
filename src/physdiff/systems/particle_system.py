"""Common interface of the particle systems (three-body gravity, five-particle springs, charged particles).

A :class:`ParticleSystem` bundles the physical constants of a system (e.g. ``G`` or ``kappa`` and the
frame spacing ``dt``), its energy, forces and Newton residual (thin wrappers around
:mod:`physdiff.physics.particles`), and a vectorised, seeded simulator that produces a data set.

Array conventions follow :mod:`physdiff.physics.particles`: ``R``, ``V`` are ``[..., K, D]``; masses
``m`` broadcast right-aligned against ``R.shape[:-1]`` (pass ``masses[:, None, :]`` for ``R`` of shape
``[N, L, K, D]``); ``edges`` broadcast against ``R.shape[:-2] + (K, K)`` (``edges[:, None]``).
Every method accepts torch tensors or numpy arrays (numpy in, numpy out).

Per-trajectory quantities beyond the masses (the charges of :class:`~physdiff.systems.charged.Charged`)
are named in ``per_trajectory``; the physics methods take them as keyword arguments laid out like the
masses (``charges=q[:, None, :]`` for ``R`` of shape ``[N, L, K, D]``), and :meth:`conservation_errors`
takes them ``[N, K]`` like ``m``. A system with ``has_forces = False`` (``generic``: a data file of an
unknown system) has no energy, forces or Newton residual: only its momentum is measured.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from physdiff.physics import particles as phys

Array = Tensor | np.ndarray

__all__ = ["ParticleSystem"]


@dataclass
class ParticleSystem(ABC):
    """Base class of a particle system: constants, physics and a simulator.

    Subclasses set the class variables ``name``, ``DEFAULT_CONSTANTS`` (with ``CONSTANT_DOCS``) and
    ``has_edges`` (and ``per_trajectory`` when the physics needs per-trajectory arrays besides the masses),
    declare their simulation settings as dataclass fields with defaults, and implement
    :meth:`potential_energy`, :meth:`forces` and :meth:`simulate`.

    Attributes:
        constants: physical constants; missing entries are filled from ``DEFAULT_CONSTANTS``.
        n_particles: K.
        n_dims: D.
        n_frames: L, the number of saved frames of a simulated trajectory.
    """

    name: ClassVar[str] = ""
    DEFAULT_CONSTANTS: ClassVar[dict[str, float]] = {}
    CONSTANT_DOCS: ClassVar[dict[str, str]] = {}
    has_edges: ClassVar[bool] = False
    #: per-trajectory arrays ``[N, K]`` the physics needs besides the masses (keyword arguments of the
    #: physics methods, laid out like ``m``), e.g. ``("charges",)``; stored as datasets of the same name
    per_trajectory: ClassVar[tuple[str, ...]] = ()
    #: False for a data-only system (``generic``): no potential, forces or Newton residual; only the
    #: momentum is measured, and the optional arrays found in its files (edges, charges) are model context
    has_forces: ClassVar[bool] = True

    constants: dict[str, float] = field(default_factory=dict)
    n_particles: int = 3
    n_dims: int = 3
    n_frames: int = 30

    def __post_init__(self) -> None:
        unknown = set(self.constants) - set(self.DEFAULT_CONSTANTS)
        if unknown:
            raise ValueError(
                f"unknown constant(s) {sorted(unknown)} for system {self.name!r}; "
                f"valid: {sorted(self.DEFAULT_CONSTANTS)}"
            )
        self.constants = {k: float(self.constants.get(k, v)) for k, v in self.DEFAULT_CONSTANTS.items()}
        if self.n_dims not in (2, 3):
            raise ValueError(f"{self.name}: n_dims must be 2 or 3, got {self.n_dims}")
        if self.n_frames < 3:
            raise ValueError(f"{self.name}: n_frames must be >= 3, got {self.n_frames}")

    # ----------------------------------------------------------------------------------------- copies
    def with_constants(self, **constants: float) -> ParticleSystem:
        """A copy with some constants replaced (unknown names raise ``ValueError``)."""
        return dataclasses.replace(self, constants={**self.constants, **constants})

    def with_settings(self, **settings: Any) -> ParticleSystem:
        """A copy with some simulation settings (dataclass fields) replaced."""
        names = {f.name for f in dataclasses.fields(self)} - {"constants"}
        unknown = set(settings) - names
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} for system {self.name!r}; valid: {sorted(names)}")
        return dataclasses.replace(self, **settings)

    def settings(self) -> dict[str, Any]:
        """The simulation settings (every dataclass field except ``constants``), for file attributes."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "constants"}

    @property
    def dt(self) -> float:
        """Time between saved frames Δt."""
        return self.constants["dt"]

    # ---------------------------------------------------------------------------------------- physics
    @abstractmethod
    def potential_energy(self, R: Array, m: Array | float, edges: Array | None = None) -> Array:
        """Potential energy U(R), shape ``[...]``."""

    @abstractmethod
    def forces(self, R: Array, m: Array | float, edges: Array | None = None) -> Array:
        """Forces F(R) = −∇U(R), shape ``[..., K, D]``."""

    def kinetic_energy(self, V: Array, m: Array | float) -> Array:
        """T = ½ Σ_{k,d} m_k V_{k,d}², shape ``[...]``."""
        return phys.kinetic_energy(V, m)

    def total_energy(self, R: Array, V: Array, m: Array | float, edges: Array | None = None) -> Array:
        """E = T(V) + U(R), shape ``[...]``."""
        return self.kinetic_energy(V, m) + self.potential_energy(R, m, edges)

    def momentum(self, V: Array, m: Array | float) -> Array:
        """Linear momentum P = Σ_k m_k V_k, shape ``[..., D]``."""
        return phys.linear_momentum(V, m)

    def angular_momentum(self, R: Array, V: Array, m: Array | float) -> Array:
        """Angular momentum Σ_k m_k R_k × V_k (scalar for D = 2, ``[..., 3]`` for D = 3)."""
        return phys.angular_momentum(R, V, m)

    def newton_residual(self, R: Array, m: Array | float, dt: float | None = None, edges: Array | None = None) -> Array:
        """m a_l − F(R_l) on interior frames, a_l = (R_{l+1} − 2R_l + R_{l−1})/Δt²; ``[..., L−2, K, D]``.

        ``dt`` defaults to the system's frame spacing ``constants["dt"]``; ``m`` and ``edges`` broadcast
        against the interior frames (``[N, 1, K]`` and ``[N, 1, K, K]`` for ``R`` of shape ``[N, L, K, D]``).
        """
        step = self.dt if dt is None else float(dt)
        return phys.newton_residual(R, m, step, lambda X: self.forces(X, m, edges))

    def conservation_errors(
        self,
        R: np.ndarray,
        V: np.ndarray,
        m: np.ndarray,
        edges: np.ndarray | None = None,
        **per_trajectory: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """How far trajectories ``[N, L, K, D]`` (masses ``[N, K]``, edges ``[N, K, K]``, the arrays of
        ``per_trajectory`` ``[N, K]``, e.g. ``charges``) are from the laws, per trajectory ``[N]``:
        ``energy_error`` = mean_{l≥1} |E_l − E_0|, ``momentum_error`` = mean_{l≥1} ‖P_l − P_0‖,
        ``dynamic_error`` = RMS of the Newton residual on interior frames. On the simulator's own data this
        is the data set's *floor* (the metrics of :mod:`physdiff.evaluation.particle_metrics` with
        prediction = reference)."""
        R, V, m = (np.asarray(a, dtype=np.float64) for a in (R, V, m))
        e = None if edges is None else np.asarray(edges, dtype=np.float64)[:, None]
        extra = self._frame_arrays(per_trajectory)
        E = np.asarray(self.total_energy(R, V, m[:, None], e, **extra))  # [N, L]
        P = np.asarray(self.momentum(V, m[:, None]))  # [N, L, D]
        res = np.asarray(self.newton_residual(R, m[:, None], self.dt, e, **extra))  # [N, L-2, K, D]
        return {
            "energy_error": np.abs(E[:, 1:] - E[:, :1]).mean(1),
            "momentum_error": np.linalg.norm(P[:, 1:] - P[:, :1], axis=-1).mean(1),
            "dynamic_error": np.sqrt(np.square(res).mean((1, 2, 3))),
        }

    def _frame_arrays(self, per_trajectory: dict[str, Any]) -> dict[str, np.ndarray]:
        """Per-trajectory arrays ``[N, K]`` → ``[N, 1, K]`` (broadcast over frames, like ``m[:, None]``); a name
        outside ``per_trajectory`` is refused, a missing one is the physics methods' to report."""
        unknown = set(per_trajectory) - set(self.per_trajectory)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown per-trajectory array(s) {sorted(unknown)}; this system takes "
                f"{list(self.per_trajectory) or 'none'}"
            )
        return {k: np.asarray(v, dtype=np.float64)[:, None] for k, v in per_trajectory.items() if v is not None}

    # -------------------------------------------------------------------------------------- simulator
    @abstractmethod
    def simulate(self, n: int, seed: int, *, progress: bool = False, **settings: Any) -> dict[str, np.ndarray]:
        """Simulate ``n`` trajectories with a seeded :class:`numpy.random.Generator`.

        Returns float64 numpy arrays ``positions``, ``velocities`` ``[n, L, K, D]``, ``masses`` ``[n, K]``
        and, for spring systems, ``edges`` ``[n, K, K]``. The same seed and settings give byte-identical
        arrays. ``settings`` override the dataclass fields for this call.
        """
