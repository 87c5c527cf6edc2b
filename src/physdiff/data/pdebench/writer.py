"""Writing PDE data sets in PDEBench's layout (:func:`write_pde`) and simulating straight to a file
(:func:`simulate_to_file`).

What is written follows from the system's facts in :mod:`physdiff.systems.pde_registry`: the layout
from its ``field_axes``, the arrays (``u`` and its ``coefficient``), the coordinates (its spatial axes,
and ``t`` when time-dependent) and the PDEBench attribute names of its ``parameters`` (Burgers' ``nu``
is also written as ``Nu``).

:func:`write_pde` refuses NaN/inf arrays, coordinates and numeric parameters, unknown
array/coordinate/split keys, ``nu <= 0`` (Burgers) and ``a <= 0`` (Darcy).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from physdiff.data.hdf5 import atomic_write
from physdiff.data.pdebench.layout import (
    PARAMETER_MEANING,
    POSITIVE_PARAMETERS,
    check_finite,
    default_splits,
    layout_of,
    system_named,
)
from physdiff.systems.pde_registry import get_pde_system

__all__ = ["write_pde", "simulate_to_file"]


def _finite_value(val: Any, path: Path, label: str) -> None:
    """Refuse NaN/inf in a numeric parameter (scalar or array); non-numeric values pass."""
    try:
        arr = np.asarray(val)
    except (TypeError, ValueError):  # ragged or odd objects: not a numeric parameter
        return
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: parameter {label!r} contains NaN/inf values ({val!r})")


def write_pde(
    path: str | os.PathLike[str],
    system: str,
    arrays: Mapping[str, np.ndarray],
    coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any] | None = None,
    splits: Mapping[str, np.ndarray] | None = None,
    dtype: Any = np.float64,
) -> Path:
    """Write a data set in PDEBench's layout (atomically: temp file in the same folder + ``os.replace``).

    Args:
        path: destination ``.hdf5``/``.h5`` file.
        system: ``advection``, ``burgers``, ``darcy`` or ``shallow-water``.
        arrays: ``{"u": fields}`` in the :class:`FieldData` axis order, plus ``"a"`` for Darcy.
        coords: ``x`` (and ``y`` for 2-D), ``t`` (one entry per frame) for time-dependent systems.
        attrs: parameters; scalars become root attributes, arrays go under ``params/``. The
            parameter names ``beta`` (advection), ``nu`` (Burgers; also written as PDEBench's ``Nu``),
            ``f`` (Darcy), ``g`` (shallow water) are the ones the loader reads back.
        splits: index arrays; default :func:`default_splits`.
        dtype: storage dtype of the fields (float64 by default; float32 halves the size).

    Returns:
        The written path.
    """
    spec = system_named(system, "write_pde: ")
    system = spec.name
    layout = layout_of(spec)
    path = Path(path)
    attrs = dict(attrs or {})
    coef = spec.coefficient
    want_arrays = ("u",) if coef is None else ("u", coef)
    want_coords = spec.spatial_axes + (("t",) if spec.time_dependent else ())
    for what, given, want in (("arrays", arrays, want_arrays), ("coords", coords, want_coords)):
        unknown = sorted(str(k) for k in given if k not in want)
        missing = [k for k in want if k not in given]
        if unknown or missing:
            raise ValueError(
                f"{path}: {system} {what} must have the keys {list(want)}; "
                f"unknown keys {unknown}, missing keys {missing}"
            )
    u = np.asarray(arrays["u"])
    n = u.shape[0] if u.ndim else 0
    check_finite(u, path, "u")
    expect = len(spec.field_axes) + 1
    if u.ndim != expect:
        raise ValueError(f"{system}: fields must have {expect} dims (see FieldData), got shape {u.shape}")
    if n < 1:
        raise ValueError(f"{path}: array 'u' holds no samples (shape {u.shape})")
    grid: dict[str, np.ndarray] = {}
    for key in want_coords:
        c = np.asarray(coords[key], dtype=np.float64)
        if c.ndim != 1:
            raise ValueError(f"{path}: coordinate {key!r} must be 1-D, got shape {c.shape}")
        check_finite(c, path, key)
        grid[key] = c
    for key in want_coords:
        n_pts = u.shape[1 + spec.field_axes.index(key)]
        if len(grid[key]) != n_pts:
            if key == "t":
                raise ValueError(f"{system}: t has {len(grid[key])} entries, fields have {n_pts} frames")
            raise ValueError(f"{system}: {key} has {len(grid[key])} points, fields have {n_pts}")
    a = None
    if coef is not None:
        a = np.asarray(arrays[coef])
        if a.shape != u.shape:
            raise ValueError(f"{system}: {coef} has shape {a.shape}, u has {u.shape}")
        check_finite(a, path, coef)
        if np.any(a <= 0):
            raise ValueError(
                f"{path}: permeability {coef!r} (shape {a.shape}) must be > 0, min is {float(a.min()):.3g}"
            )
    for key, val in attrs.items():
        if val is not None:
            _finite_value(val, path, str(key))
    for name in spec.parameters:
        if name in POSITIVE_PARAMETERS and attrs.get(name) is not None and not float(attrs[name]) > 0:
            raise ValueError(f"{path}: {PARAMETER_MEANING[name]} parameter {name!r} must be > 0, got {attrs[name]}")
    splits = dict(splits) if splits is not None else default_splits(n)
    unknown = sorted(str(k) for k in splits if k not in ("train", "val", "test"))
    if unknown:
        raise ValueError(f"{path}: unknown split keys {unknown}; valid: ['train', 'val', 'test']")
    for name, idx in splits.items():
        idx = np.asarray(idx)
        if idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{path}: split {name!r} must hold integer indices in [0, {n}), got {idx!r}")

    with atomic_write(path) as f:
        f.attrs["system"] = system
        f.attrs["format"] = "physdiff-pdebench-v1"
        x = grid["x"]
        if layout.name == "1d":
            t = grid["t"]
            f.create_dataset("tensor", data=u.astype(dtype))
            f.create_dataset("x-coordinate", data=x)
            dt = t[1] - t[0] if len(t) > 1 else 1.0
            f.create_dataset("t-coordinate", data=np.append(t, t[-1] + dt))  # PDEBench: T + 1
        elif layout.name == "darcy":
            f.create_dataset("nu", data=a.astype(dtype))
            f.create_dataset("tensor", data=u[:, None].astype(dtype))
            f.create_dataset("x-coordinate", data=x)
            f.create_dataset("y-coordinate", data=grid["y"])
        else:
            data = np.moveaxis(u, 2, -1).astype(dtype)  # [N, T, X, Y, C]
            for i in range(n):
                g = f.create_group(f"{i:04d}")
                g.create_dataset("data", data=data[i])
                g.create_dataset("grid/x", data=x)
                g.create_dataset("grid/y", data=grid["y"])
                g.create_dataset("grid/t", data=grid["t"])
        for key, val in attrs.items():
            if val is None:
                continue
            arr = np.asarray(val)
            if arr.ndim == 0:
                f.attrs[key] = val
            else:
                f.create_dataset(f"params/{key}", data=arr)
        if layout.name == "1d":  # PDEBench's 1-D files carry the parameter under its own name (Burgers: 'Nu')
            for name, aliases in spec.parameters.items():
                for alias in aliases:
                    if alias != name and attrs.get(name) is not None:
                        f.attrs[alias] = float(attrs[name])
        for name in ("train", "val", "test"):
            f.create_dataset(f"splits/{name}", data=np.asarray(splits.get(name, []), dtype=np.int64))
    return path


def simulate_to_file(
    system: str, path: str | os.PathLike[str], n: int, seed: int, dtype: Any = np.float64, **settings: Any
) -> Path:
    """Simulate ``n`` samples of ``system`` (registry defaults overridden by ``settings``) and write them."""
    spec = get_pde_system(system)
    sim = spec.simulate(n, seed, **settings)
    arrays = {"u": sim.fields}
    if spec.coefficient is not None:
        arrays[spec.coefficient] = sim.coefficient
    return write_pde(path, sim.system, arrays, sim.coords, sim.parameters, dtype=dtype)
