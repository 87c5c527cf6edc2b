"""Registry of the particle systems: ``get_system("three-body")``, ``"five-spring"``, ``"charged"``, ``"generic"``.

PDE systems live in their own registry; this one only knows particle systems.

``generic`` is not a simulator but the system of a particle file whose physics is unknown (a file without a
``system`` attribute, read with ``--system generic``): :class:`GenericParticles` has no physical constants
besides the frame spacing ``dt`` (read from the file's ``dt`` attribute, else estimated from the data by
:func:`physdiff.data.particles_h5.estimate_frame_spacing`), no potential, forces or Newton residual
(``has_forces = False``), so only the metrics and priors that need none apply: trajectory, velocity and
momentum errors; the momentum prior where the data conserve momentum (no external forces), and a user's own
laws (whose constants the file's attributes give).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from physdiff.systems.charged import Charged
from physdiff.systems.five_spring import FiveSpring
from physdiff.systems.particle_system import Array, ParticleSystem
from physdiff.systems.three_body import ThreeBody

__all__ = ["GenericParticles", "PARTICLE_SYSTEMS", "SIMULATED_SYSTEMS", "get_system"]


@dataclass
class GenericParticles(ParticleSystem):
    """The system of a particle file of unknown physics: positions, velocities and masses only.

    ``dt`` (the time between frames) places the centre of mass of generated frames (it moves by
    dt · P/M per frame in a closed system); there is no other constant. Energies, forces and the Newton
    residual raise ``ValueError``; :meth:`conservation_errors` measures the momentum only.
    """

    name: ClassVar[str] = "generic"
    DEFAULT_CONSTANTS: ClassVar[dict[str, float]] = {"dt": 1.0}
    CONSTANT_DOCS: ClassVar[dict[str, str]] = {
        "dt": "time between saved frames (the file's 'dt' attribute, else estimated from the data)",
    }
    has_edges: ClassVar[bool] = False
    has_forces: ClassVar[bool] = False

    constants: dict[str, float] = field(default_factory=dict)

    def _no_physics(self, what: str) -> ValueError:
        return ValueError(
            f"generic: a file of unknown physics has no {what}; only the trajectory, velocity and momentum "
            "errors and the momentum prior apply (give the file a 'system' attribute for its physics)"
        )

    def potential_energy(self, R: Array, m: Array | float, edges: Array | None = None) -> Array:
        raise self._no_physics("potential energy")

    def forces(self, R: Array, m: Array | float, edges: Array | None = None) -> Array:
        raise self._no_physics("forces")

    def total_energy(self, R: Array, V: Array, m: Array | float, edges: Array | None = None) -> Array:
        raise self._no_physics("energy")

    def newton_residual(self, R: Array, m: Array | float, dt: float | None = None, edges: Array | None = None) -> Array:
        raise self._no_physics("Newton residual")

    def conservation_errors(
        self, R: np.ndarray, V: np.ndarray, m: np.ndarray, edges: np.ndarray | None = None, **per_trajectory: Any
    ) -> dict[str, np.ndarray]:
        """``momentum_error`` = mean_{l≥1} ‖P_l − P_0‖ per trajectory ``[N]`` (no energy, no forces);
        per-trajectory arrays (charges) are accepted and unused."""
        V, m = np.asarray(V, dtype=np.float64), np.asarray(m, dtype=np.float64)
        P = np.asarray(self.momentum(V, m[:, None]))  # [N, L, D]
        return {"momentum_error": np.linalg.norm(P[:, 1:] - P[:, :1], axis=-1).mean(1)}

    def simulate(self, n: int, seed: int, *, progress: bool = False, **settings: Any) -> dict[str, np.ndarray]:
        raise ValueError("generic is not a simulator: it reads a user's file (--data FILE --system generic)")


_SYSTEMS: dict[str, type[ParticleSystem]] = {
    ThreeBody.name: ThreeBody,
    FiveSpring.name: FiveSpring,
    Charged.name: Charged,
    GenericParticles.name: GenericParticles,
}

#: every particle system name (files, priors, metrics)
PARTICLE_SYSTEMS: tuple[str, ...] = tuple(_SYSTEMS)
#: the systems ``physdiff simulate`` can simulate (``generic`` reads a user's file)
SIMULATED_SYSTEMS: tuple[str, ...] = tuple(name for name, cls in _SYSTEMS.items() if cls.has_forces)


def get_system(name: str, **settings: Any) -> ParticleSystem:
    """A fresh particle system by name, with optional constants (``constants={...}``) and settings.

    Raises:
        ValueError: for an unknown name (the message lists the valid names).
    """
    try:
        cls = _SYSTEMS[name]
    except KeyError:
        raise ValueError(f"unknown particle system {name!r}; valid names: {', '.join(PARTICLE_SYSTEMS)}") from None
    _check_settings(cls, settings)
    return cls(**settings)


def _check_settings(cls: type[ParticleSystem], settings: dict[str, Any]) -> None:
    """Refuse, naming it, a setting the system does not have or a value of the wrong kind (a string for a
    number) before the simulator sees it."""
    import dataclasses

    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key, value in settings.items():
        if key not in known:
            valid = ", ".join(sorted(k for k in known if k != "constants"))
            raise ValueError(f"data.settings.{key}: the {cls.name} system has no setting {key!r}; valid: {valid}")
        default = known[key].default
        if value is None or default is dataclasses.MISSING or default is None:
            continue
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"data.settings.{key}: must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"data.settings.{key}: must be an integer, got {value!r}")
