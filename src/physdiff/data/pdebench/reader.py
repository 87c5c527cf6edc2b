"""Reading physdiff and PDEBench HDF5 files into :class:`~physdiff.data.pdebench.layout.FieldData`
(:func:`load_pde`).

The file's layout is detected from its dataset names (:func:`~physdiff.data.pdebench.layout.detect_layout`);
which system it holds comes from the ``system`` attribute, the file name or the caller, and must be one
of the systems the layout stores (by their ``field_axes``). The system's ``parameters`` name the
attributes its parameter is read from.

Fields are returned as float64. Downsampling takes every ``k``-th point (``downsample_x`` applies to
every spatial axis, ``downsample_t`` to frames; Darcy has no time axis) and is done while reading.
Note that striding a cell-centred grid by an even factor does not give the cell centres of the coarse
grid; the Darcy residual (whose walls sit half a cell outside the outer centres) then has a larger
floor -- measure it on the loaded ground truth.

Bad input raises :class:`~physdiff.data.pdebench.layout.PDEBenchFormatError` (a ``ValueError``) naming
the file and the key: a layout that matches no supported format (the datasets found are listed), an
unknown ``system`` attribute or one that contradicts the layout, inconsistent grid sizes, NaN/inf in
fields or coordinates, a non-positive Burgers viscosity (attribute or file name), a non-positive Darcy
permeability anywhere in the loaded samples (checked at full resolution even when downsampling), a
non-positive depth or gravity ``g`` in shallow-water files, fields or coordinates that are not real
numbers (complex, strings, booleans), a loaded grid too small to learn on (fewer than 3 points along a
spatial axis or 2 frames, after down-sampling), and malformed ``splits/``: not 1-D, not integers, out of
range, a sample listed twice, or splits that share a sample.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physdiff.data.hdf5 import check_downsample, check_links, check_reads, decode_attr, describe
from physdiff.data.pdebench.layout import (
    LAYOUTS,
    PARAMETER_MEANING,
    POSITIVE_PARAMETERS,
    SYSTEMS,
    FieldData,
    Layout,
    PDEBenchFormatError,
    check_finite,
    default_splits,
    detect_layout,
    params_from_file_name,
    system_from_file_name,
    system_named,
    systems_in,
)
from physdiff.systems.pde_registry import PDE_SYSTEMS, PDESystem

__all__ = ["load_pde"]


def load_pde(
    path: str | os.PathLike[str],
    system: str | None = None,
    downsample_x: int = 1,
    downsample_t: int = 1,
    max_samples: int | None = None,
    max_bytes: int | None = None,
) -> FieldData:
    """Load a physdiff or PDEBench HDF5 file.

    Args:
        path: the file.
        system: expected system; inferred from the ``system`` attribute or the file name if omitted
            (required for a 1-D file carrying neither).
        downsample_x: keep every ``k``-th point along each spatial axis.
        downsample_t: keep every ``k``-th frame.
        max_samples: read at most this many samples (the first ones).
        max_bytes: the read budget (default: a fraction of the available memory): the declared shapes of what
            is read are checked against it before reading; virtual datasets with unmapped rows and links
            outside the file's folder are refused.

    Raises:
        PDEBenchFormatError: unsupported layout (the datasets found are listed), inconsistent grid
            sizes, NaN/inf values, non-positive viscosity or permeability -- naming file, key and shape.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    downsample_x = check_downsample("downsample_x", downsample_x)
    downsample_t = check_downsample("downsample_t", downsample_t)
    want = None if system is None else system_named(system, f"{path}: argument 'system': ").name
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise PDEBenchFormatError(f"{path}: not a readable HDF5 file ({e})") from e
    with h5 as f:
        _check_size(f, path, max_samples, max_bytes)  # declared shapes against the budget, before any read
        layout = detect_layout(f)
        if layout is None:
            forms = "; ".join(lay.form for lay in LAYOUTS.values())
            raise PDEBenchFormatError(f"{path}: layout matches no supported format ({forms}); found: {describe(f)}")
        attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
        origin = "physdiff" if "system" in attrs else "pdebench"
        found = _which_system(path, f, layout, attrs.get("system"), want)
        params: dict[str, Any] = {k: v for k, v in attrs.items() if k not in ("system", "format", "config")}
        if "params" in f:
            for k in f["params"]:
                params[k] = f["params"][k][()]
        messages: list[str] = []
        read = _READERS[layout.name]
        data = read(f, path, PDE_SYSTEMS[found], downsample_x, downsample_t, max_samples, params, messages)
        n = data.fields.shape[0]
        _check_grid_size(data, path, PDE_SYSTEMS[found])
        if "splits" in f:
            splits = _read_splits(f, path, n, _samples_in_file(f, layout))
            split_source = "file"
        else:
            splits = default_splits(n)
            split_source = "pdebench-convention"
            messages.append("no splits in the file: PDEBench convention used (first 10 % of samples = test)")
    data.splits = splits
    data.split_source = split_source
    data.messages = messages + data.messages
    data.source = str(path)
    data.origin = origin
    return data


def _check_size(f: h5py.File, path: Path, max_samples: int | None, max_bytes: int | None) -> None:
    """:func:`physdiff.data.hdf5.check_reads` over what a load reads: the per-sample arrays (their first
    ``max_samples`` rows), coordinates and splits (whole)."""
    per_sample = ["tensor", "nu"] + [f"{k}/data" for k in sorted(k for k in f.keys() if k.isdigit())[:max_samples]]
    whole = ["x-coordinate", "y-coordinate", "t-coordinate", "splits/train", "splits/val", "splits/test"]
    rows = {k: max_samples for k in per_sample[:2]}
    check_links(f, str(path))
    check_reads(f, str(path), per_sample + whole, rows=rows, max_bytes=max_bytes)


def _which_system(path: Path, f: h5py.File, layout: Layout, stored: Any, want: str | None) -> str:
    """The system a file of ``layout`` holds: the only one the layout stores, else the one named by the
    ``system`` attribute ``stored`` or the file name; checked against the caller's ``want``."""
    candidates = systems_in(layout)
    if stored:
        try:
            guess: str | None = system_named(str(stored)).name
        except ValueError:
            raise PDEBenchFormatError(
                f"{path}: attribute 'system' = {stored!r} is not a supported system; valid names: {', '.join(SYSTEMS)}"
            ) from None
        if guess not in candidates:
            raise PDEBenchFormatError(
                f"{path}: attribute 'system' = {stored!r} contradicts the file's {layout.name} layout; "
                f"found: {describe(f)}"
            )
    else:
        guess = system_from_file_name(path.name)
    if len(candidates) == 1:
        found: str | None = candidates[0]
    else:
        found = guess if guess in candidates else None
    if want is not None:
        if found is not None and want != found:
            raise PDEBenchFormatError(f"{path}: asked for system {want!r} but the file holds {found!r} data")
        if found is None and want not in candidates:
            raise PDEBenchFormatError(f"{path}: a {layout.kind} cannot hold {want!r} data")
        found = want
    if found is None:
        raise PDEBenchFormatError(
            f"{path}: {layout.kind} without a 'system' attribute and no system in the file name; "
            f"pass system={' or '.join(repr(name) for name in candidates)}"
        )
    return found


def _samples_in_file(f: h5py.File, layout: Layout) -> int:
    """How many samples the file holds (before ``max_samples``)."""
    if layout.name == "2d-time":
        return sum(1 for k in f.keys() if k.isdigit())
    return int(f["tensor"].shape[0])


def _read_splits(f: h5py.File, path: Path, n: int, n_file: int) -> dict[str, np.ndarray]:
    """The ``splits/{train,val,test}`` index arrays (indices ``>= n`` dropped, for ``max_samples``).

    Each must be a 1-D array of distinct integer indices into the file's ``n_file`` samples, and the three
    must not share a sample (a test sample that is also trained on would make the table's numbers wrong)."""
    splits = {}
    for k in ("train", "val", "test"):
        key = f"splits/{k}"
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise PDEBenchFormatError(f"{path}: missing split dataset {key!r}; found: {describe(f)}")
        raw = np.asarray(f[key][()])
        if raw.ndim != 1:
            raise PDEBenchFormatError(f"{path}: {key!r} must be a 1-D array of sample indices, got shape {raw.shape}")
        if raw.size and (raw.dtype.kind not in "iu" or raw.min() < 0):
            raise PDEBenchFormatError(f"{path}: {key!r} must hold non-negative integer sample indices")
        v = raw.astype(np.int64)
        if v.size and v.max() >= n_file:
            raise PDEBenchFormatError(
                f"{path}: {key!r} holds index {int(v.max())}, out of range for the file's {n_file} samples"
            )
        uniq, counts = np.unique(v, return_counts=True)
        if (counts > 1).any():
            raise PDEBenchFormatError(f"{path}: {key!r} lists sample {int(uniq[counts > 1][0])} more than once")
        splits[k] = v
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = np.intersect1d(splits[a], splits[b])
        if both.size:
            raise PDEBenchFormatError(
                f"{path}: 'splits/{a}' and 'splits/{b}' share {both.size} sample(s) (first: {int(both[0])}); "
                "the splits must be disjoint"
            )
    return {k: v[v < n] for k, v in splits.items()}


# ------------------------------------------------------------------------------------------------
# grid checks
# ------------------------------------------------------------------------------------------------


def _frames_from_t(t: np.ndarray, n_frames: int, path: Path, key: str) -> np.ndarray:
    """Frame times: PDEBench stores ``T + 1`` entries (use the first ``T``); ``T`` is used as is."""
    if len(t) == n_frames + 1:
        return t[:n_frames]
    if len(t) == n_frames:
        return t
    raise PDEBenchFormatError(
        f"{path}: inconsistent grid sizes: {key!r} has {len(t)} entries but the data have {n_frames} "
        f"frames (expected {n_frames} or {n_frames + 1})"
    )


def _check_real(ds: h5py.Dataset, path: Path, key: str) -> None:
    """Raise unless the dataset ``key`` holds real numbers (integers or floats): complex values would lose
    their imaginary part and strings or booleans are no field."""
    kind = ds.dtype.kind
    if kind not in "iuf":
        raise PDEBenchFormatError(
            f"{path}: dataset {key!r} (shape {ds.shape}) has dtype {ds.dtype}; expected real numbers "
            "(integers or floats)"
        )


#: the fewest points a loaded spatial axis may have (a central finite-difference stencil) and the fewest
#: frames of a time-dependent system (a first frame and one to predict)
MIN_POINTS, MIN_FRAMES = 3, 2


def _check_grid_size(data: FieldData, path: Path, system: PDESystem) -> None:
    """Raise if the loaded grid (after down-sampling) is too small to learn or evaluate the system on."""
    for axis in system.spatial_axes:
        n = len(data.coords[axis])
        if n < MIN_POINTS:
            raise PDEBenchFormatError(
                f"{path}: the loaded grid has {n} point(s) along {axis}; {system.name} needs at least {MIN_POINTS} "
                "(finite-difference stencils; check the file or downsample_x)"
            )
    if "t" in system.field_axes:
        n = len(data.coords["t"])
        if n < MIN_FRAMES:
            raise PDEBenchFormatError(
                f"{path}: the loaded data have {n} frame(s); {system.name} needs at least {MIN_FRAMES} "
                "(check the file or downsample_t)"
            )


def _check_len(c: np.ndarray, n: int, path: Path, key: str, what: str) -> None:
    """Raise unless the coordinate ``c`` is 1-D with ``n`` points."""
    if c.ndim != 1 or len(c) != n:
        raise PDEBenchFormatError(
            f"{path}: inconsistent grid sizes: {key!r} has shape {c.shape} but the data have {n} points {what}"
        )


def _check_uniform(c: np.ndarray, path: Path, key: str) -> None:
    """Raise unless the coordinate ``c`` is increasing with a constant step (to 0.1 %)."""
    if len(c) > 2:
        d = np.diff(c)
        if not np.all(d > 0) or np.ptp(d) > 1e-3 * abs(d.mean()):
            raise PDEBenchFormatError(f"{path}: coordinate {key!r} is not a uniform increasing grid")


def _space_coordinate(f: h5py.File, key: str, n: int, path: Path, axis: str) -> np.ndarray:
    """The coordinate dataset ``key`` of spatial axis ``axis``: 1-D, ``n`` points, real, finite, uniform."""
    _check_real(f[key], path, key)
    c = np.asarray(f[key][()], dtype=np.float64).ravel()
    _check_len(c, n, path, key, f"along {axis}")
    check_finite(c, path, key)
    _check_uniform(c, path, key)
    return c


def _stride_idx(n: int, step: int) -> slice:
    """Every ``step``-th of ``n`` indices."""
    if step < 1:
        raise ValueError(f"downsampling factors must be >= 1, got {step}")
    return slice(0, n, step)


def _param_from(params: dict[str, Any], path: Path, keys: tuple[str, ...]) -> tuple[float | None, str]:
    """The first of ``keys`` found in the attributes/``params/`` (else in the file name) and where it came from."""
    for k in keys:
        if k in params:
            arr = np.asarray(params[k])
            if arr.size != 1 or arr.dtype.kind not in "iuf":
                raise PDEBenchFormatError(f"{path}: parameter {k!r} must be a single number, got {params[k]!r}")
            return float(arr.reshape(())), f"attribute {k!r}"
    from_name = params_from_file_name(path.name)
    for k in keys:
        if k.lower() in from_name:
            return from_name[k.lower()], f"file name {path.name!r}"
    return None, ""


def _without_layout_parameters(params: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """``params`` less every attribute name a parameter of the layout's systems may carry (they are read
    into the system's canonical names)."""
    names = {alias for s in systems_in(layout) for aliases in PDE_SYSTEMS[s].parameters.values() for alias in aliases}
    return {k: v for k, v in params.items() if k not in names}


# ------------------------------------------------------------------------------------------------
# the layouts
# ------------------------------------------------------------------------------------------------


def _load_1d(
    f: h5py.File,
    path: Path,
    system: PDESystem,
    sx: int,
    st: int,
    max_samples: int | None,
    params: dict[str, Any],
    messages: list[str],
) -> FieldData:
    """The 1-D time-dependent layout: ``tensor [N, T, X]``, ``x-coordinate``, ``t-coordinate``."""
    ds = f["tensor"]
    n_all, n_t, n_x = ds.shape
    if min(ds.shape) < 1:
        raise PDEBenchFormatError(f"{path}: dataset 'tensor' [N, T, X] is empty (shape {ds.shape})")
    for key in ("x-coordinate", "t-coordinate"):
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise PDEBenchFormatError(f"{path}: 1-D layout needs dataset {key!r}; found: {describe(f)}")
    _check_real(ds, path, "tensor")
    for key in ("x-coordinate", "t-coordinate"):
        _check_real(f[key], path, key)
    x_all = np.asarray(f["x-coordinate"][()], dtype=np.float64).ravel()
    _check_len(x_all, n_x, path, "x-coordinate", "along x (tensor axis 2)")
    check_finite(x_all, path, "x-coordinate")
    t_raw = np.asarray(f["t-coordinate"][()], dtype=np.float64).ravel()
    check_finite(t_raw, path, "t-coordinate")
    t_all = _frames_from_t(t_raw, n_t, path, "t-coordinate")
    _check_uniform(x_all, path, "x-coordinate")
    _check_uniform(t_all, path, "t-coordinate")
    n = n_all if max_samples is None else min(n_all, max_samples)
    u = np.asarray(ds[:n, _stride_idx(n_t, st), _stride_idx(n_x, sx)], dtype=np.float64)
    check_finite(u, path, "tensor")
    out_params = _without_layout_parameters(params, LAYOUTS["1d"])
    for name, aliases in system.parameters.items():
        value, src = _param_from(params, path, aliases)
        attr, meaning = aliases[-1], PARAMETER_MEANING.get(name, f"parameter {name!r}")
        if value is None:
            raise PDEBenchFormatError(f"{path}: {meaning} not found (attribute {attr!r} or '{attr}<value>' in name)")
        if name in POSITIVE_PARAMETERS:
            if not (np.isfinite(value) and value > 0):
                raise PDEBenchFormatError(f"{path}: {meaning} {attr!r} must be > 0, got {value} (from {src})")
        elif not np.isfinite(value):
            raise PDEBenchFormatError(f"{path}: attribute {attr!r} is not finite ({value})")
        out_params[name] = value
    coords = {"x": x_all[::sx], "t": t_all[::st]}
    return FieldData(system=system.name, fields=u, coords=coords, parameters=out_params, channels=system.channels)


def _load_darcy(
    f: h5py.File,
    path: Path,
    system: PDESystem,
    sx: int,
    st: int,
    max_samples: int | None,
    params: dict[str, Any],
    messages: list[str],
) -> FieldData:
    """The Darcy layout: permeability ``nu [N, X, Y]``, pressure ``tensor [N, 1, X, Y]``, optional
    ``x-``/``y-coordinate`` (cell centres of the unit square when absent). No time axis (``st`` unused)."""
    ds_u, ds_a = f["tensor"], f["nu"]
    if ds_u.ndim != 4 or ds_u.shape[1] != 1:
        raise PDEBenchFormatError(f"{path}: Darcy 'tensor' must have shape [N, 1, X, Y], got {ds_u.shape}")
    n_all, _, n_x, n_y = ds_u.shape
    if min(ds_u.shape) < 1:
        raise PDEBenchFormatError(f"{path}: Darcy 'tensor' [N, 1, X, Y] is empty (shape {ds_u.shape})")
    if ds_a.shape != (n_all, n_x, n_y):
        raise PDEBenchFormatError(
            f"{path}: inconsistent grid sizes: 'nu' has shape {ds_a.shape}, 'tensor' has {ds_u.shape}"
        )
    _check_real(ds_u, path, "tensor")
    _check_real(ds_a, path, "nu")
    coords: dict[str, np.ndarray] = {}
    for key, n_pts, name in (("x-coordinate", n_x, "x"), ("y-coordinate", n_y, "y")):
        c = _space_coordinate(f, key, n_pts, path, name) if key in f else (np.arange(n_pts) + 0.5) / n_pts
        coords[name] = c[::sx]
    n = n_all if max_samples is None else min(n_all, max_samples)
    u = np.asarray(ds_u[:n, 0, _stride_idx(n_x, sx), _stride_idx(n_y, sx)], dtype=np.float64)
    a = np.asarray(ds_a[:n, _stride_idx(n_x, sx), _stride_idx(n_y, sx)], dtype=np.float64)
    check_finite(u, path, "tensor")
    check_finite(a, path, "nu")
    _check_permeability(a, ds_a.shape, path, 0)
    if sx > 1:  # the strided read skips points: check the loaded samples at full resolution, in chunks
        per = max(1, (1 << 22) // max(1, n_x * n_y))
        for s in range(0, n, per):
            full = np.asarray(ds_a[s : min(n, s + per)], dtype=np.float64)
            check_finite(full, path, "nu")
            _check_permeability(full, ds_a.shape, path, s)
    ((name, aliases),) = system.parameters.items()  # the source f
    fsrc, src = _param_from(params, path, aliases)
    if fsrc is not None and not np.isfinite(fsrc):
        raise PDEBenchFormatError(f"{path}: Darcy source {name} from {src} is not finite ({fsrc})")
    out_params = _without_layout_parameters(params, LAYOUTS["darcy"])
    out_params[name] = 1.0 if fsrc is None else fsrc
    return FieldData(
        system=system.name, fields=u, coords=coords, parameters=out_params, coefficient=a, channels=system.channels
    )


def _check_permeability(a: np.ndarray, shape: tuple[int, ...], path: Path, offset: int) -> None:
    """Raise if the permeability block ``a`` (samples ``offset...``) has a value ``<= 0``."""
    if np.any(a <= 0):
        i, j, k = (int(v) for v in np.unravel_index(int(np.argmin(a)), a.shape))
        raise PDEBenchFormatError(
            f"{path}: permeability 'nu' (shape {shape}) must be > 0, min is {float(a.min()):.3g} "
            f"at sample {offset + i}, point ({j}, {k}) of the stored grid"
        )


def _load_2d_time(
    f: h5py.File,
    path: Path,
    system: PDESystem,
    sx: int,
    st: int,
    max_samples: int | None,
    params: dict[str, Any],
    messages: list[str],
) -> FieldData:
    """The 2-D time-dependent layout: groups ``NNNN`` with ``data [T, X, Y, C]`` and ``grid/{x,y,t}``.

    ``C`` is all of the system's channels, or the first one only (PDEBench's shallow water stores
    ``h``): then ``priors_available`` is ``False`` and a warning is issued."""
    channels = system.channels
    names = sorted(k for k in f.keys() if k.isdigit())
    if max_samples is not None:
        names = names[:max_samples]
    for name in names:
        for sub in ("data", "grid/x", "grid/y", "grid/t"):
            key = f"{name}/{sub}"
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise PDEBenchFormatError(f"{path}: missing dataset {key!r}; found: {describe(f)}")
    first = f[names[0]]
    shape = first["data"].shape
    if len(shape) != 4 or shape[-1] not in (len(channels), 1):
        raise PDEBenchFormatError(
            f"{path}: '{names[0]}/data' must have shape [T, X, Y, C] with C = {len(channels)} "
            f"({', '.join(channels)}) or 1 ({channels[0]}), got {shape}"
        )
    n_t, n_x, n_y, n_c = shape
    if min(shape) < 1:
        raise PDEBenchFormatError(f"{path}: '{names[0]}/data' [T, X, Y, C] is empty (shape {shape})")
    for name in names[1:]:  # the other samples' grids: shapes only (metadata, no data read)
        for key, n_pts in (("x", n_x), ("y", n_y)):
            k = f"{name}/grid/{key}"
            if f[k].size != n_pts:
                raise PDEBenchFormatError(
                    f"{path}: inconsistent grid sizes: {k!r} has shape {f[k].shape} but the data have {n_pts} "
                    f"points along {key}"
                )
    coords: dict[str, np.ndarray] = {}
    for key, n_pts in (("x", n_x), ("y", n_y)):
        coords[key] = _space_coordinate(f, f"{names[0]}/grid/{key}", n_pts, path, key)[::sx]
    kt = f"{names[0]}/grid/t"
    _check_real(f[kt], path, kt)
    t_raw = np.asarray(f[kt][()], dtype=np.float64).ravel()
    check_finite(t_raw, path, kt)
    t = _frames_from_t(t_raw, n_t, path, kt)
    _check_uniform(t, path, kt)
    coords["t"] = t[::st]
    out = []
    for name in names:
        key = f"{name}/data"
        ds = f[key]
        _check_real(ds, path, key)
        if ds.shape != shape:
            raise PDEBenchFormatError(
                f"{path}: inconsistent grid sizes: {key!r} has shape {ds.shape}, '{names[0]}/data' has {shape}"
            )
        block = np.asarray(ds[_stride_idx(n_t, st), _stride_idx(n_x, sx), _stride_idx(n_y, sx)], dtype=np.float64)
        check_finite(block, path, key)
        if np.any(block[..., 0] <= 0):
            raise PDEBenchFormatError(
                f"{path}: water depth h ({key!r} channel 0) must be > 0, min is {float(block[..., 0].min()):.3g}"
            )
        out.append(block)
    q = np.moveaxis(np.stack(out), -1, 2)  # [N, T, C, X, Y]
    params = dict(params)
    ((g, _),) = system.parameters.items()  # the gravity g
    params.setdefault(g, 1.0)
    g_arr = np.asarray(params[g])
    if g_arr.size != 1 or g_arr.dtype.kind not in "iuf" or not (np.isfinite(g_arr).all() and g_arr.item() > 0):
        raise PDEBenchFormatError(f"{path}: gravity attribute {g!r} must be a finite number > 0, got {params[g]!r}")
    priors = n_c == len(channels)
    if not priors:
        msg = (
            f"{path}: {system.name} data store {channels[0]} only (C=1, PDEBench layout): the mass and momentum "
            f"priors/residuals need ({', '.join(channels)}) and are unavailable for this file"
        )
        messages.append(msg)
        warnings.warn(msg, stacklevel=3)
    return FieldData(
        system=system.name,
        fields=q,
        coords=coords,
        parameters=params,
        channels=channels[:n_c],
        priors_available=priors,
    )


#: the reader of each layout, by layout name
_READERS: dict[str, Callable[..., FieldData]] = {"1d": _load_1d, "darcy": _load_darcy, "2d-time": _load_2d_time}
