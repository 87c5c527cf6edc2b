"""What a PDEBench-layout file looks like: the three layouts and their detection, :class:`FieldData`,
the default splits and the parsing of PDEBench file names.

Layouts (identical key names to PDEBench, so real PDEBench files load unchanged); which systems a layout
holds follows from the systems' ``field_axes`` in :mod:`physdiff.systems.pde_registry`:

* **1-D time-dependent** (``field_axes ("t", "x")``: advection, Burgers): ``tensor [N, T, X]``,
  ``x-coordinate [X]``, ``t-coordinate`` with ``T + 1`` entries (PDEBench's convention: the frames are
  the first ``T`` entries) or ``T`` entries; the parameter in the root attribute ``beta`` (advection) /
  ``Nu`` (Burgers; the equation uses ``Nu/pi``) -- the attribute names the system lists in its
  ``parameters`` -- or parsed from the file name (``1D_Advection_Sols_beta0.4.hdf5``,
  ``1D_Burgers_Sols_Nu0.01.hdf5``).
* **Darcy** (``field_axes ("x", "y")`` with a coefficient): ``nu [N, X, Y]`` (the permeability ``a``),
  ``tensor [N, 1, X, Y]`` (the pressure ``u``), ``x-coordinate [X]``, ``y-coordinate [Y]``; the source
  ``f`` from attribute ``f`` (ours) or ``beta`` or the file name (``2D_DarcyFlow_beta1.0_Train.hdf5``),
  default 1.
* **2-D time-dependent** (``field_axes ("t", "c", "x", "y")``: shallow water): one group per sample
  ``NNNN`` holding ``data [T, X, Y, C]`` and ``grid/x``, ``grid/y``, ``grid/t``. Our files store all the
  system's channels (``C = 3`` conservative variables ``(h, hu, hv)``); PDEBench's ``2D_rdb_NA_NA.h5``
  stores ``C = 1`` (``h`` only), which loads with ``FieldData.priors_available = False`` (mass/momentum
  residuals need the momenta) and a warning.

Files written by physdiff add the root attribute ``system`` and the parameters (scalars as root
attributes, arrays under the group ``params/``), and the sample splits as index arrays under
``splits/{train,val,test}``. PDEBench files carry no splits: the loader then follows PDEBench's own
convention (:func:`default_splits`) -- the **first 10 % of samples are the test set** -- takes the next
10 % as validation and the rest as training (``FieldData.split_source == "pdebench-convention"``).

:class:`FieldData` axis orders (the systems' ``field_axes`` after the sample axis):

* advection, burgers: ``fields [N, T, X]``;
* darcy: ``fields [N, X, Y]`` (``u``) and ``coefficient [N, X, Y]`` (``a``);
* shallow-water: ``fields [N, T, C, X, Y]`` (``C = 3``: ``h, hu, hv``; ``C = 1``: ``h``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physdiff.data.hdf5 import GridSpacing, nonfinite
from physdiff.systems.pde_registry import PDE_SYSTEMS, PDESystem

__all__ = [
    "FieldData",
    "LAYOUTS",
    "Layout",
    "PARAMETER_MEANING",
    "PDEBenchFormatError",
    "POSITIVE_PARAMETERS",
    "SYSTEMS",
    "check_finite",
    "default_splits",
    "detect_layout",
    "layout_of",
    "params_from_file_name",
    "system_from_file_name",
    "system_named",
    "systems_in",
]

SYSTEMS = tuple(PDE_SYSTEMS)

#: short names accepted for a system besides its registry name (PDEBench calls shallow water "rdb")
_ALIASES = {"swe": "shallow-water", "rdb": "shallow-water"}
#: words that mark a system in a PDEBench file name (lower case; the first system that matches wins)
_FILE_NAME_WORDS = {
    "advection": ("advection",),
    "burgers": ("burgers",),
    "darcy": ("darcy",),
    "shallow-water": ("rdb", "shallow", "swe"),
}
#: what the 1-D layout's parameters are called in messages
PARAMETER_MEANING = {"beta": "advection speed", "nu": "Burgers viscosity"}
#: parameters that must be > 0 when read or written (the Burgers viscosity)
POSITIVE_PARAMETERS = ("nu",)


class PDEBenchFormatError(ValueError):
    """A file does not match a supported layout or holds invalid values."""


@dataclass
class FieldData(GridSpacing):
    """A loaded PDE data set.

    Attributes:
        system: one of ``advection``, ``burgers``, ``darcy``, ``shallow-water``.
        fields: float64 array in the axis order of the module docstring.
        coords: ``x``, ``y``, ``t`` coordinate arrays as present (``t`` has one entry per frame).
        parameters: physical parameters (``beta``, ``nu``, ``f``, ``g``, ...).
        coefficient: Darcy permeability ``a [N, X, Y]``; ``None`` otherwise.
        splits: index arrays ``train``, ``val``, ``test`` into the sample axis.
        split_source: ``"file"`` or ``"pdebench-convention"`` (first 10 % test).
        channels: channel names of the shallow-water fields (``("u",)`` for scalar fields).
        priors_available: ``False`` when the stored variables cannot evaluate the system's residual
            (PDEBench shallow water stores ``h`` only).
        messages: human-readable notes about the load (fallbacks, unavailable priors).
        source: the file path; ``origin``: ``"physdiff"`` or ``"pdebench"``.
    """

    system: str
    fields: np.ndarray
    coords: dict[str, np.ndarray]
    parameters: dict[str, Any]
    coefficient: np.ndarray | None = None
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    split_source: str = "file"
    channels: tuple[str, ...] = ("u",)
    priors_available: bool = True
    messages: list[str] = field(default_factory=list)
    source: str | None = None
    origin: str = "physdiff"

    @property
    def path(self) -> str | None:
        """The file the data were read from (as ``ParticleData.path``)."""
        return self.source

    @property
    def n_samples(self) -> int:
        return int(self.fields.shape[0])

    def subset(self, idx: np.ndarray | list[int]) -> FieldData:
        """The samples ``idx`` (same grid and parameters; no splits)."""
        idx = np.asarray(idx, dtype=np.int64)
        coef = None if self.coefficient is None else self.coefficient[idx]
        return dataclasses.replace(self, fields=self.fields[idx], coefficient=coef, splits={})


# ------------------------------------------------------------------------------------------------
# layouts
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """One PDEBench file layout.

    Attributes:
        name: ``1d``, ``darcy`` or ``2d-time`` (as error messages name it).
        field_axes: the ``field_axes`` of the systems whose data it holds.
        form: its datasets and shapes, for error messages.
        kind: what error messages call a file of this layout.
        coefficient: whether it stores a coefficient field with each sample (Darcy's permeability).
    """

    name: str
    field_axes: tuple[str, ...]
    form: str
    kind: str
    coefficient: bool = False

    def holds(self, system: PDESystem) -> bool:
        """Whether this layout stores ``system``'s data (same ``field_axes``, a coefficient iff it has one)."""
        return system.field_axes == self.field_axes and (system.coefficient is not None) == self.coefficient


LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout("1d", ("t", "x"), "1-D 'tensor' [N,T,X]", "1-D 'tensor' file"),
        Layout("darcy", ("x", "y"), "Darcy 'nu' + 'tensor' [N,1,X,Y]", "Darcy file", coefficient=True),
        Layout("2d-time", ("t", "c", "x", "y"), "2-D groups 'NNNN/data' [T,X,Y,C]", "2-D group file"),
    )
}


def layout_of(system: PDESystem) -> Layout:
    """The layout that stores ``system``'s data (from its ``field_axes`` and ``coefficient``)."""
    for layout in LAYOUTS.values():
        if layout.holds(system):
            return layout
    raise ValueError(
        f"{system.name}: no PDEBench layout stores fields with axes {system.field_axes} "
        f"and coefficient {system.coefficient!r}"
    )


def systems_in(layout: Layout) -> tuple[str, ...]:
    """The names of the registry systems whose data ``layout`` holds (registry order)."""
    return tuple(name for name, system in PDE_SYSTEMS.items() if layout.holds(system))


def detect_layout(f: h5py.File) -> Layout | None:
    """The layout of an open file from its dataset names and shapes (``None``: none matches)."""
    keys = set(f.keys())
    if "tensor" in keys and "nu" in keys and all(isinstance(f[k], h5py.Dataset) for k in ("tensor", "nu")):
        return LAYOUTS["darcy"]
    if "tensor" in keys and isinstance(f["tensor"], h5py.Dataset) and f["tensor"].ndim == 3:
        return LAYOUTS["1d"]
    digit = [k for k in keys if k.isdigit()]
    if digit and isinstance(f[sorted(digit)[0]], h5py.Group) and "data" in f[sorted(digit)[0]]:
        return LAYOUTS["2d-time"]
    return None


# ------------------------------------------------------------------------------------------------
# splits, names, checks
# ------------------------------------------------------------------------------------------------


def default_splits(n: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """PDEBench's convention: the first ``test_fraction`` of samples test, the next ``val_fraction``
    validation, the rest training (at least one test sample when ``n >= 2``)."""
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    if n >= 2:
        n_test = max(n_test, 1)
    if n >= 3:
        n_val = max(n_val, 1)
    n_val = min(n_val, max(n - n_test - 1, 0))
    idx = np.arange(n)
    return {
        "test": idx[:n_test],
        "val": idx[n_test : n_test + n_val],
        "train": idx[n_test + n_val :],
    }


def system_named(system: str, where: str = "") -> PDESystem:
    """The registry system called ``system`` (``_`` for ``-``, any case; ``swe``/``rdb`` for shallow water);
    a ``ValueError`` starting with ``where`` and listing the valid names otherwise."""
    key = str(system).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in PDE_SYSTEMS:
        raise ValueError(f"{where}unknown PDE system {system!r}; valid names: {', '.join(SYSTEMS)}")
    return PDE_SYSTEMS[key]


_NUM = r"([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"


def params_from_file_name(name: str) -> dict[str, float]:
    """Parameters in a PDEBench file name: ``beta<value>`` as ``beta``, ``Nu<value>`` as ``nu``."""
    out: dict[str, float] = {}
    m = re.search(r"beta" + _NUM, name)
    if m:
        out["beta"] = float(m.group(1))
    m = re.search(r"Nu" + _NUM, name)
    if m:
        out["nu"] = float(m.group(1))
    return out


def system_from_file_name(name: str) -> str | None:
    """The system a PDEBench file name names (``1D_Advection_...``, ``2D_rdb_...``), or ``None``."""
    low = name.lower()
    for system in PDE_SYSTEMS:
        if any(word in low for word in _FILE_NAME_WORDS.get(system, ())):
            return system
    return None


def check_finite(arr: np.ndarray, path: Path, key: str) -> None:
    """Raise :class:`PDEBenchFormatError` naming the file, key and shape if ``arr`` holds NaN/inf."""
    bad, _ = nonfinite(arr)
    if bad:
        raise PDEBenchFormatError(f"{path}: dataset {key!r} (shape {arr.shape}) contains {bad} NaN/inf values")
