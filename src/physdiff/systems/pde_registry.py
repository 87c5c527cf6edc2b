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
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from physdiff.physics import pde_residuals as R
from physdiff.physics.finite_difference import time_derivative
from physdiff.systems import advection, burgers, darcy, shallow_water

__all__ = [
    "PDESimulation",
    "PDESystem",
    "Residual",
    "get_pde_system",
    "register_pde_system",
    "PDE_SYSTEMS",
    "spacing_from_coords",
]


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
class Residual:
    """A discrete residual R(u) of a system: ``fn(fields, coefficient, spacing, parameters)`` on torch
    tensors, its prior case (``linear`` / ``multilinear``) and ``term``, one typical term of the equation
    with the same units (the yardstick of ground-truth checks: u_t, h² (hu)_t, or the source f)."""

    fn: ResidualFn
    kind: str
    term: ResidualFn


@dataclass(frozen=True)
class PDESystem:
    """One PDE system and the facts about its data that the rest of the library asks for.

    Attributes:
        name: registry name.
        equation: the PDE in words.
        field_axes: axes of ``fields`` after the sample axis, named ``t`` (frames), ``c`` (channels),
            ``x``, ``y`` (space), e.g. ``("t", "x")``, ``("x", "y")``, ``("t", "c", "x", "y")``.
        channels: the physical channels (``("u",)`` or ``("h", "hu", "hv")``).
        periodic: the spatial axes with periodic boundaries.
        coefficient: the name of a coefficient field given with each sample (Darcy's permeability ``a``),
            or ``None``.
        tasks: ``prediction`` (given the first frame, or the coefficient of a steady problem) and/or
            ``generation`` (unconditional).
        parameters: the physical parameters read from files, each with the attribute names it may carry
            there (PDEBench's ``Nu`` for ``nu``, ``beta`` for Darcy's source).
        simulate_fn: module-level simulator returning a dict (``u``, optional ``a``, ``coords``,
            ``parameters``).
        defaults: quick-scale simulator settings; ``large``: a larger scale (benchmarks / paper).
        residuals: ``{"residual": the system's own residual, ...extra ones}``.
    """

    name: str
    equation: str
    field_axes: tuple[str, ...]
    channels: tuple[str, ...]
    periodic: tuple[str, ...]
    coefficient: str | None
    tasks: tuple[str, ...]
    parameters: Mapping[str, tuple[str, ...]]
    simulate_fn: Callable[..., dict[str, Any]]
    defaults: Mapping[str, Any]
    large: Mapping[str, Any]
    residuals: Mapping[str, Residual]

    # ------------------------------------------------------------------------------------ facts
    @property
    def spatial_axes(self) -> tuple[str, ...]:
        return tuple(a for a in self.field_axes if a not in ("t", "c"))

    @property
    def time_dependent(self) -> bool:
        return "t" in self.field_axes

    @property
    def residual_kind(self) -> str:
        return self.residuals["residual"].kind

    def prediction_mask(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """Known entries of the prediction task in the physical layout ``[N, *field_axes]``: the first frame
        of a time-dependent system; ``None`` for a steady one (its condition is the coefficient field)."""
        if not self.time_dependent:
            return None
        mask = np.zeros(shape[:2] + (1,) * (len(shape) - 2))
        mask[:, 0] = 1.0
        return mask

    # ------------------------------------------------------------------------------ simulation
    def simulate(self, n: int, seed: int, **settings: Any) -> PDESimulation:
        """Simulate ``n`` samples with ``defaults`` overridden by ``settings``."""
        valid = set(inspect.signature(self.simulate_fn).parameters) - {"n", "seed"}
        unknown = set(settings) - valid
        if unknown:
            raise ValueError(f"{self.name}: unknown settings {sorted(unknown)}; valid: {sorted(valid)}")
        out = self.simulate_fn(n, seed, **{**self.defaults, **settings})
        return PDESimulation(self.name, out["u"], out["coords"], out["parameters"], out.get("a"))

    # -------------------------------------------------------------------------------- residuals
    def get_residual(self, name: str = "residual") -> Residual:
        if name not in self.residuals:
            raise ValueError(f"residual {name!r} does not apply to {self.name}; valid: {', '.join(self.residuals)}")
        return self.residuals[name]

    def _apply(self, fn: ResidualFn, data: _HasFields, fields: Tensor | np.ndarray | None) -> Tensor:
        u = data.fields if fields is None else fields
        u_t = torch.as_tensor(u)
        if not u_t.is_floating_point():
            u_t = u_t.double()
        coef = None if data.coefficient is None else torch.as_tensor(data.coefficient, dtype=u_t.dtype)
        return fn(u_t, coef, spacing_from_coords(data.coords), data.parameters)

    def residual(self, data: _HasFields, fields: Tensor | np.ndarray | None = None, name: str = "residual") -> Tensor:
        """Residual ``name`` of ``fields`` (default ``data.fields``) with the grid, coefficient and parameters
        of ``data`` (a :class:`PDESimulation` or :class:`~physdiff.data.pdebench.FieldData`)."""
        return self._apply(self.get_residual(name).fn, data, fields)

    def residual_rmse(self, data: _HasFields, fields: Tensor | np.ndarray | None = None) -> np.ndarray:
        """Per-sample RMSE of :meth:`residual` over all points where the stencil applies, ``[N]``."""
        r = self.residual(data, fields)
        return r.reshape(r.shape[0], -1).pow(2).mean(dim=1).sqrt().detach().cpu().numpy()

    def term_scale(self, data: _HasFields, name: str = "residual", n: int = 64) -> float:
        """RMS over the first ``n`` samples of one typical term of residual ``name`` (its yardstick)."""
        sub = data.subset(np.arange(min(n, len(data.fields)))) if hasattr(data, "subset") else data
        value = float(self._apply(self.get_residual(name).term, sub, None).square().mean().sqrt())
        return value if value > 0 else 1.0

    def measure_floor(self, n: int = 32, seed: int = 0, **settings: Any) -> float:
        """Mean per-sample residual RMSE of freshly simulated ground truth."""
        return float(np.mean(self.residual_rmse(self.simulate(n, seed, **settings))))


def _dt(u: Tensor, s: Mapping[str, float | None]) -> Tensor:
    return time_derivative(u, s["dt"], dim=1)


def _adv(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return R.advection_residual(u, s["dt"], s["dx"], float(p["beta"]))


def _burgers(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return R.burgers_residual(u, s["dt"], s["dx"], float(p["nu"]))


def _u_t(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return _dt(u, s)


def _darcy(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    if a is None:
        raise ValueError("darcy residual needs the permeability field a (coefficient)")
    return R.darcy_residual(u, a, s["dx"], float(p.get("f", 1.0)))


def _source(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return torch.full((1,), float(p.get("f", 1.0)), dtype=u.dtype)


def _sw_mass(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return R.shallow_water_mass_residual(u, s["dt"], s["dx"], s["dy"])


def _h_t(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return _dt(u[:, :, 0], s)


def _sw_mom(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return R.shallow_water_momentum_residual(u, s["dt"], s["dx"], s["dy"], float(p.get("g", 1.0)))


def _h2_hu_t(u: Tensor, a: Tensor | None, s: Mapping[str, float | None], p: Mapping[str, Any]) -> Tensor:
    return u[:, 1:-1, 0].square() * _dt(u[:, :, 1], s)


PDE_SYSTEMS: Mapping[str, PDESystem] = MappingProxyType(
    {
        "advection": PDESystem(
            name="advection",
            equation="u_t + beta u_x = 0, x in [0,1) periodic (exact shift)",
            field_axes=("t", "x"),
            channels=("u",),
            periodic=("x",),
            coefficient=None,
            tasks=("prediction", "generation"),
            parameters=MappingProxyType({"beta": ("beta",)}),
            simulate_fn=advection.simulate,
            defaults=MappingProxyType(dict(advection.DEFAULTS)),
            large=MappingProxyType({**advection.DEFAULTS, "nx": 256, "nt": 101, "t_final": 2.0}),
            residuals=MappingProxyType({"residual": Residual(_adv, "linear", _u_t)}),
        ),
        "burgers": PDESystem(
            name="burgers",
            equation="u_t + u u_x = (nu/pi) u_xx, x in [0,1) periodic (pseudo-spectral IF-RK4)",
            field_axes=("t", "x"),
            channels=("u",),
            periodic=("x",),
            coefficient=None,
            tasks=("prediction", "generation"),
            parameters=MappingProxyType({"nu": ("nu", "Nu")}),
            simulate_fn=burgers.simulate,
            defaults=MappingProxyType(dict(burgers.DEFAULTS)),
            large=MappingProxyType({**burgers.DEFAULTS, "nx": 256, "nt": 101, "t_final": 2.0}),
            residuals=MappingProxyType({"residual": Residual(_burgers, "multilinear", _u_t)}),
        ),
        "darcy": PDESystem(
            name="darcy",
            equation="-div(a grad u) = f on (0,1)^2, u = 0 on the boundary (finite volume)",
            field_axes=("x", "y"),
            channels=("u",),
            periodic=(),
            coefficient="a",
            tasks=("prediction",),
            parameters=MappingProxyType({"f": ("f", "beta")}),
            simulate_fn=darcy.simulate,
            defaults=MappingProxyType(dict(darcy.DEFAULTS)),
            large=MappingProxyType({**darcy.DEFAULTS, "n_grid": 128}),
            residuals=MappingProxyType({"residual": Residual(_darcy, "linear", _source)}),
        ),
        "shallow-water": PDESystem(
            name="shallow-water",
            equation="2-D shallow water (h, hu, hv), g = 1, radial dam break, reflective walls",
            field_axes=("t", "c", "x", "y"),
            channels=("h", "hu", "hv"),
            periodic=(),
            coefficient=None,
            tasks=("prediction", "generation"),
            parameters=MappingProxyType({"g": ("g",)}),
            simulate_fn=shallow_water.simulate,
            defaults=MappingProxyType(dict(shallow_water.DEFAULTS)),
            large=MappingProxyType({**shallow_water.DEFAULTS, "nx": 128, "ny": 128, "nt": 101}),
            residuals=MappingProxyType(
                {"residual": Residual(_sw_mass, "linear", _h_t), "momentum": Residual(_sw_mom, "multilinear", _h2_hu_t)}
            ),
        ),
    }
)


#: systems described by a data file at run time (e.g. a The Well data set: its fields, channels, periodic axes)
_FROM_FILES: dict[str, PDESystem] = {}


def register_pde_system(system: PDESystem) -> PDESystem:
    """Make a system described by a data file known by its name for this process (the built-ins cannot be
    replaced); returns it."""
    if system.name in PDE_SYSTEMS:
        raise ValueError(f"{system.name!r} is a built-in PDE system and cannot be replaced")
    _FROM_FILES[system.name] = system
    return system


def get_pde_system(name: str) -> PDESystem:
    """Look up a PDE system by name (``shallow_water`` is accepted for ``shallow-water``)."""
    if name in _FROM_FILES:
        return _FROM_FILES[name]
    key = name.strip().lower().replace("_", "-")
    if key not in PDE_SYSTEMS:
        raise ValueError(f"unknown PDE system {name!r}; valid names: {', '.join(PDE_SYSTEMS)}")
    return PDE_SYSTEMS[key]
