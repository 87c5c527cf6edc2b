"""Registry of the particle systems: ``get_system("three-body")``, ``get_system("five-spring")``.

PDE systems live in their own registry; this one only knows particle systems.
"""

from __future__ import annotations

from typing import Any

from physdiff.systems.five_spring import FiveSpring
from physdiff.systems.particle_system import ParticleSystem
from physdiff.systems.three_body import ThreeBody

__all__ = ["PARTICLE_SYSTEMS", "get_system"]

_SYSTEMS: dict[str, type[ParticleSystem]] = {ThreeBody.name: ThreeBody, FiveSpring.name: FiveSpring}

PARTICLE_SYSTEMS: tuple[str, ...] = tuple(_SYSTEMS)


def get_system(name: str, **settings: Any) -> ParticleSystem:
    """A fresh particle system by name, with optional constants (``constants={...}``) and settings.

    Raises:
        ValueError: for an unknown name (the message lists the valid names).
    """
    try:
        cls = _SYSTEMS[name]
    except KeyError:
        raise ValueError(f"unknown particle system {name!r}; valid names: {', '.join(PARTICLE_SYSTEMS)}") from None
    return cls(**settings)
