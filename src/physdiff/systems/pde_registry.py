"""Registry of the PDE systems: ``get_pde_system(name)`` for ``advection``, ``burgers``, ``darcy`` and
``shallow-water``.

Each :class:`PDESystem` bundles the simulator (``simulate(n, seed, **settings)`` returning a
:class:`PDESimulation`), its ``quick`` default settings and a larger preset, its residual function
(used as the physical prior and for ``constraint_rmse``); :meth:`PDESystem.measure_floor` measures the
residual *floor*, the mean per-sample residual RMSE of the system's own ground truth.

Field axis orders (shared with :class:`physdiff.data.pdebench.FieldData`):

* advection, burgers: ``fields [N, T, X]`` (``X`` periodic);
* darcy: ``fields [N, X, Y]`` (pressure ``u``), ``coefficient [N, X, Y]`` (permeability ``a``);
* shallow-water: ``fields [N, T, C, X, Y]`` with ``C = 3`` channels ``(h, hu, hv)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from physdiff.physics import pde_residuals as R
from physdiff.systems import advection, burgers, darcy, shallow_water

__all__ = ["PDESimulation", "PDESystem", "get_pde_system", "PDE_SYSTEMS", "spacing_from_coords"]


def spacing_from_coords(coords: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """Uniform spacings ``dt, dx, dy`` from coordinate arrays (``None`` where absent)."""
    out: dict[str, float | None] = {}
    for key, name in (("t", "dt"), ("x", "dx"), ("y", "dy")):
        c = coords.get(key)
        out[name] = float(c[1] - c[0]) if c is not None and len(c) > 1 else None
    return out


class _HasFields(Protocol):
    fields: np.ndarray
    coefficient: np.ndarray | None
    coords: Mapping[str, np.ndarray]
    parameters: Mapping[str, Any]


@dataclass
class PDESimulation:
    """Simulated data set: ``fields`` in the system's axis order (module docstring), optional
    ``coefficient`` (Darcy ``a``), ``coords`` (``x``, ``y``, ``t`` as present) and ``parameters``."""

    system: str
    fields: np.ndarray
    coords: dict[str, np.ndarray]
    parameters: dict[str, Any]
    coefficient: np.ndarray | None = None

    @property
    def dt(self) -> float | None:
        return spacing_from_coords(self.coords)["dt"]

    @property
    def dx(self) -> float | None:
        return spacing_from_coords(self.coords)["dx"]

    @property
    def dy(self) -> float | None:
        return spacing_from_coords(self.coords)["dy"]


ResidualFn = Callable[[Tensor, "Tensor | None", Mapping[str, float | None], Mapping[str, Any]], Tensor]


@dataclass(frozen=True)
class PDESystem:
    """One PDE system.

    Attributes:
        name: registry name.
        equation: the PDE in words.
        layout: axis order of ``fields``.
        simulate_fn: module-level simulator returning a dict (``u``, optional ``a``, ``coords``,
            ``parameters``).
        defaults: quick-preset settings; ``large``: a larger preset (benchmarks / paper scale).
        residual_kind: prior case of the residual (``linear`` / ``multilinear``).
        residual_fn: ``(fields, coefficient, spacing, parameters) -> residual`` on torch tensors.
    """

    name: str
    equation: str
    layout: str
    simulate_fn: Callable[..., dict[str, Any]]
    defaults: Mapping[str, Any]
    large: Mapping[str, Any]
    residual_kind: str
    residual_fn: ResidualFn
    extra_residuals: Mapping[str, ResidualFn] = field(default_factory=dict)
    extra_residual_kinds: Mapping[str, str] = field(default_factory=dict)

    def simulate(self, n: int, seed: int, **settings: Any) -> PDESimulation:
        """Simulate ``n`` samples with ``defaults`` overridden by ``settings``."""
        valid = set(inspect.signature(self.simulate_fn).parameters) - {"n", "seed"}
        unknown = set(settings) - valid
        if unknown:
            raise ValueError(f"{self.name}: unknown settings {sorted(unknown)}; valid: {sorted(valid)}")
        out = self.simulate_fn(n, seed, **{**self.defaults, **settings})
        return PDESimulation(self.name, out["u"], out["coords"], out["parameters"], out.get("a"))

    def residual(self, data: _HasFields, fields: Tensor | np.ndarray | None = None) -> Tensor:
        """Residual of ``fields`` (default ``data.fields``) with the grid, coefficient and parameters
        of ``data`` (a :class:`PDESimulation` or :class:`~physdiff.data.pdebench.FieldData`)."""
        u = data.fields if fields is None else fields
        u_t = torch.as_tensor(u)
        if not u_t.is_floating_point():
            u_t = u_t.double()
        coef = None if data.coefficient is None else torch.as_tensor(data.coefficient, dtype=u_t.dtype)
        return self.residual_fn(u_t, coef, spacing_from_coords(data.coords), data.parameters)

    def residual_rmse(self, data: _HasFields, fields: Tensor | np.ndarray | None = None) -> np.ndarray:
        """Per-sample RMSE of :meth:`residual` over all points where the stencil applies, ``[N]``."""
        r = self.residual(data, fields)
        return r.reshape(r.shape[0], -1).pow(2).mean(dim=1).sqrt().detach().cpu().numpy()

    def measure_floor(self, n: int = 32, seed: int = 0, **settings: Any) -> float:
        """Mean per-sample residual RMSE of freshly simulated ground truth."""
        return float(np.mean(self.residual_rmse(self.simulate(n, seed, **settings))))


def _adv(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return R.advection_residual(u, s["dt"], s["dx"], float(p["beta"]))


def _burgers(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return R.burgers_residual(u, s["dt"], s["dx"], float(p["nu"]))


def _darcy(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    if a is None:
        raise ValueError("darcy residual needs the permeability field a (coefficient)")
    return R.darcy_residual(u, a, s["dx"], float(p.get("f", 1.0)))


def _sw_mass(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return R.shallow_water_mass_residual(u, s["dt"], s["dx"], s["dy"])


def _sw_mom(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return R.shallow_water_momentum_residual(u, s["dt"], s["dx"], s["dy"], float(p.get("g", 1.0)))


PDE_SYSTEMS: Mapping[str, PDESystem] = MappingProxyType(
    {
        "advection": PDESystem(
            name="advection",
            equation="u_t + beta u_x = 0, x in [0,1) periodic (exact shift)",
            layout="[N, T, X]",
            simulate_fn=advection.simulate,
            defaults=MappingProxyType(dict(advection.DEFAULTS)),
            large=MappingProxyType({**advection.DEFAULTS, "nx": 256, "nt": 101, "t_final": 2.0}),
            residual_kind="linear",
            residual_fn=_adv,
        ),
        "burgers": PDESystem(
            name="burgers",
            equation="u_t + u u_x = (nu/pi) u_xx, x in [0,1) periodic (pseudo-spectral IF-RK4)",
            layout="[N, T, X]",
            simulate_fn=burgers.simulate,
            defaults=MappingProxyType(dict(burgers.DEFAULTS)),
            large=MappingProxyType({**burgers.DEFAULTS, "nx": 256, "nt": 101, "t_final": 2.0}),
            residual_kind="multilinear",
            residual_fn=_burgers,
        ),
        "darcy": PDESystem(
            name="darcy",
            equation="-div(a grad u) = f on (0,1)^2, u = 0 on the boundary (finite volume)",
            layout="fields [N, X, Y], coefficient [N, X, Y]",
            simulate_fn=darcy.simulate,
            defaults=MappingProxyType(dict(darcy.DEFAULTS)),
            large=MappingProxyType({**darcy.DEFAULTS, "n_grid": 128}),
            residual_kind="linear",
            residual_fn=_darcy,
        ),
        "shallow-water": PDESystem(
            name="shallow-water",
            equation="2-D shallow water (h, hu, hv), g = 1, radial dam break, reflective walls",
            layout="[N, T, C=3 (h, hu, hv), X, Y]",
            simulate_fn=shallow_water.simulate,
            defaults=MappingProxyType(dict(shallow_water.DEFAULTS)),
            large=MappingProxyType({**shallow_water.DEFAULTS, "nx": 128, "ny": 128, "nt": 101}),
            residual_kind="linear",
            residual_fn=_sw_mass,
            extra_residuals=MappingProxyType({"momentum": _sw_mom}),
            extra_residual_kinds=MappingProxyType({"momentum": "multilinear"}),
        ),
    }
)


def get_pde_system(name: str) -> PDESystem:
    """Look up a PDE system by name (``shallow_water`` is accepted for ``shallow-water``)."""
    key = name.strip().lower().replace("_", "-")
    if key not in PDE_SYSTEMS:
        raise ValueError(f"unknown PDE system {name!r}; valid names: {', '.join(PDE_SYSTEMS)}")
    return PDE_SYSTEMS[key]
