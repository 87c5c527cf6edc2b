"""Fields of unknown physics in PDEBench's layouts (``physdiff reproduce generic --data FILE``).

A file holds, in PDEBench's key names, either 1-D time-dependent fields ``tensor [N, T, X]`` with
``x-coordinate`` and ``t-coordinate`` (``T`` or ``T + 1`` entries), or 2-D time-dependent fields, one group per
sample ``NNNN/data [T, X, Y, C]`` with ``NNNN/grid/{x,y,t}`` (any number of channels ``C``). No coefficient is
required: every numeric scalar root attribute is kept as a constant (``parameters``; a user prior reads those
named as its dataclass fields), and the boundary is periodic along the axes the attribute ``periodic`` names
(``"x"``, ``"x,y"``, ``true`` for all; default: none). :func:`generic_system` describes such a file as a
:class:`~physdiff.systems.pde_registry.PDESystem` with no built-in residual.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import h5py
import numpy as np

from physdiff.data.hdf5 import atomic_write, check_reads, decode_attr, describe
from physdiff.data.pdebench.layout import FieldData, PDEBenchFormatError, check_finite, default_splits
from physdiff.systems.pde_registry import PDESystem

__all__ = ["GENERIC_PREFIX", "generic_system", "is_generic_field_file", "load_generic_fields", "write_generic_fields"]

GENERIC_PREFIX = "generic:"


def _not_simulated(*args: Any, **kwargs: Any) -> dict[str, Any]:
    raise ValueError("generic fields are read from a file (--data FILE), not simulated")


def generic_system(name: str, spatial: int, channels: tuple[str, ...], periodic: tuple[str, ...]) -> PDESystem:
    """The system a generic field file describes: 1-D ``("t", "x")`` (one channel) or 2-D ``("t", "c", "x", "y")``
    fields, its periodic axes, no coefficient and no built-in residual."""
    axes = ("t", "x") if spatial == 1 else ("t", "c", "x", "y")
    return PDESystem(
        name=f"{GENERIC_PREFIX}{name}",
        equation=f"fields of {name!r} (unknown physics: user priors only)",
        field_axes=axes,
        channels=channels,
        periodic=periodic,
        coefficient=None,
        tasks=("prediction", "generation"),
        parameters=MappingProxyType({}),
        simulate_fn=_not_simulated,
        defaults=MappingProxyType({}),
        large=MappingProxyType({}),
        residuals=MappingProxyType({}),
    )


def is_generic_field_file(path: str | os.PathLike[str]) -> bool:
    """Whether a field file in PDEBench's layout holds physics no built-in system names: its ``system`` attribute
    is a generic one (``generic:<name>``, samples files), or it has none, no system in its file name and none of
    the built-ins' parameter attributes (``beta``, ``Nu``/``nu``, ``g``, Darcy's ``nu`` dataset)."""
    from physdiff.data.pdebench.layout import system_from_file_name

    with h5py.File(path, "r") as f:
        if "t0_fields" in f or "positions" in f:
            return False
        if not ("tensor" in f or any(k.isdigit() for k in f.keys())):
            return False
        stored = f.attrs.get("system")
        if stored is not None:
            return str(decode_attr(stored)).startswith(GENERIC_PREFIX)
        if "nu" in f or any(k in f.attrs for k in ("beta", "Nu", "nu", "g")):
            return False
    return system_from_file_name(Path(path).name) is None


def _periodic(value: Any, axes: tuple[str, ...], path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (bool, np.bool_)):
        return axes if value else ()
    names = tuple(a.strip() for a in str(value).replace(" ", ",").split(",") if a.strip())
    if names in (("true",), ("True",)):
        return axes
    bad = [a for a in names if a not in axes]
    if bad:
        raise PDEBenchFormatError(f"{path}: attribute 'periodic' = {value!r} names axes {bad}; the file has {axes}")
    return names


def _frames(t: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if len(t) in (n, n + 1):
        return t[:n]
    raise PDEBenchFormatError(f"{path}: {key!r} has {len(t)} entries but the data have {n} frames ({n} or {n + 1})")


def load_generic_fields(
    path: str | os.PathLike[str],
    downsample_x: int = 1,
    downsample_t: int = 1,
    max_samples: int | None = None,
    *,
    max_bytes: int | None = None,
) -> tuple[FieldData, PDESystem]:
    """Read a generic field file (module docstring): its data set and the system it describes.

    Only the first ``max_samples`` samples are read; their declared size (with the coordinates and splits) is
    checked against ``max_bytes`` (default: a fraction of the available memory), and virtual rows without a
    source or links outside the file's folder are refused, before anything is read.

    Raises:
        PDEBenchFormatError: no supported layout (the datasets found are listed), inconsistent grid sizes,
            non-finite values or a grid too small (fewer than 3 points along an axis or 3 frames).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    keep = slice(None, max_samples)
    with h5py.File(path, "r") as f:
        attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
        groups = sorted(k for k in f if k.isdigit() and isinstance(f[k], h5py.Group))
        split_keys = [f"splits/{k}" for k in f["splits"]] if isinstance(f.get("splits"), h5py.Group) else []
        wanted = ["tensor", "x-coordinate", "t-coordinate", *split_keys]
        wanted += [f"{g}/{k}" for g in groups[keep] for k in ("data", "grid/t", "grid/x", "grid/y")]
        check_reads(f, str(path), wanted, rows={"tensor": max_samples}, max_bytes=max_bytes)  # before any read
        if "tensor" in f and isinstance(f["tensor"], h5py.Dataset) and f["tensor"].ndim == 3:
            for key in ("x-coordinate", "t-coordinate"):
                if key not in f:
                    raise PDEBenchFormatError(f"{path}: 1-D layout needs dataset {key!r}; found: {describe(f)}")
            u = np.asarray(f["tensor"][keep], dtype=np.float64)
            coords = {"t": np.asarray(f["t-coordinate"][()], dtype=np.float64).ravel()}
            coords["x"] = np.asarray(f["x-coordinate"][()], dtype=np.float64).ravel()
            u = u[:, ::downsample_t, ::downsample_x]
            coords["t"] = _frames(coords["t"], f["tensor"].shape[1], path, "t-coordinate")[::downsample_t]
            coords["x"] = coords["x"][::downsample_x]
            spatial, channels, axes = 1, ("u",), ("x",)
        elif groups:
            names = groups[keep]
            blocks = []
            for name in names:
                if f"{name}/data" not in f:
                    raise PDEBenchFormatError(f"{path}: missing dataset '{name}/data'; found: {describe(f)}")
                blocks.append(np.asarray(f[f"{name}/data"][()], dtype=np.float64))
            if len({b.shape for b in blocks}) != 1 or blocks[0].ndim != 4:
                raise PDEBenchFormatError(f"{path}: every 'NNNN/data' must be [T, X, Y, C] of one shape")
            u = np.moveaxis(np.stack(blocks), -1, 2)[:, ::downsample_t, :, ::downsample_x, ::downsample_x]
            g = f[names[0]]
            coords = {k: np.asarray(g[f"grid/{k}"][()], dtype=np.float64).ravel() for k in ("t", "x", "y")}
            coords["t"] = _frames(coords["t"], blocks[0].shape[0], path, f"{names[0]}/grid/t")[::downsample_t]
            coords["x"], coords["y"] = coords["x"][::downsample_x], coords["y"][::downsample_x]
            n_c = u.shape[2]
            stored = attrs.get("channels")
            channels = tuple(str(stored).split(",")) if stored and len(str(stored).split(",")) == n_c else ()
            channels = channels or tuple(f"c{i}" for i in range(n_c))
            spatial, axes = 2, ("x", "y")
        else:
            raise PDEBenchFormatError(
                f"{path}: no generic field layout (1-D 'tensor' [N,T,X] or 2-D groups 'NNNN/data' [T,X,Y,C]); "
                f"found: {describe(f)}"
            )
        splits = {k: np.asarray(f["splits"][k][()], dtype=np.int64) for k in f["splits"]} if "splits" in f else {}
    check_finite(u, path, "fields")
    for key, c in coords.items():
        check_finite(c, path, f"{key}-coordinate")
        n_axis = u.shape[1] if key == "t" else u.shape[u.ndim - len(axes) + axes.index(key)]
        if len(c) != n_axis:
            raise PDEBenchFormatError(f"{path}: {key!r} has {len(c)} entries but the fields have {n_axis} along it")
        if len(c) < 3:
            raise PDEBenchFormatError(f"{path}: {len(c)} points along {key!r}; a finite difference needs at least 3")
    periodic = _periodic(attrs.get("periodic"), axes, path)
    params = {
        k: float(v)
        for k, v in attrs.items()
        if np.ndim(v) == 0 and not isinstance(v, (bool, np.bool_, str, bytes)) and np.isreal(v)
    }
    n = u.shape[0]
    source = "file" if splits else "pdebench-convention"
    splits = {k: v[v < n] for k, v in splits.items()} if splits else default_splits(n)
    name = str(attrs.get("name") or path.stem)
    system = generic_system(name, spatial, channels, periodic)
    data = FieldData(
        system=system.name,
        fields=u,
        coords=coords,
        parameters=params,
        splits=splits,
        split_source=source,
        channels=channels,
        priors_available=True,
        source=str(path),
        origin="generic",
    )
    return data, system


def write_generic_fields(
    path: str | os.PathLike[str],
    fields: np.ndarray,
    coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any] | None = None,
    source_indices: np.ndarray | None = None,
) -> Path:
    """Fields ``[N, T, X]`` (1-D layout) or ``[N, T, C, X, Y]`` (2-D groups) with their coordinates, root
    attributes and ``source_indices`` (samples files), written atomically."""
    path = Path(path)
    u = np.asarray(fields, dtype=np.float64)
    with atomic_write(path) as f:
        if u.ndim == 3:
            f["tensor"] = u
            f["x-coordinate"] = np.asarray(coords["x"], dtype=np.float64)
            f["t-coordinate"] = np.asarray(coords["t"], dtype=np.float64)
        else:
            for i, sample in enumerate(u):
                g = f.create_group(f"{i:04d}")
                g["data"] = np.moveaxis(sample, 1, -1)
                for k in ("x", "y", "t"):
                    g[f"grid/{k}"] = np.asarray(coords[k], dtype=np.float64)
        if source_indices is not None:
            f["source_indices"] = np.asarray(source_indices, dtype=np.int64)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path
