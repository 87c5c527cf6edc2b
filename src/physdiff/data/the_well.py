"""Reader and writer for **The Well** HDF5 format (PolymathicAI, NeurIPS 2024 Datasets & Benchmarks).

The layout follows the format specification in the ``PolymathicAI/the_well`` repository
(``docs/data_format.md``), the reference loader ``the_well/data/datasets.py`` (``WellDataset``), the
format checker ``scripts/check_thewell_formatting.py`` and the xarray exporter
``the_well/utils/export.py``. Attributes are marked ``@``::

    /                       @dataset_name str, @grid_type str ('cartesian', 'equiangular', ...),
                            @n_spatial_dims int, @n_trajectories int (B),
                            @simulation_parameters list[str] (each also a root attribute and a
                            dataset in /scalars)
    /dimensions             @spatial_dims list[str] (e.g. ['x', 'y']; planetswe: ['theta', 'phi'])
        time                float (T,) -- or (B, T) when @sample_varying; @sample_varying, @time_varying
        <dim>               float (W,) -- or (B, W) when @sample_varying; @sample_varying, @time_varying
    /boundary_conditions/<name>   (e.g. x_periodic, y_wall, theta_open)
                            @bc_type 'PERIODIC' | 'WALL' | 'OPEN' (case-insensitive),
                            @associated_dims list[str], @associated_fields list[str],
                            @sample_varying, @time_varying
        mask                bool, over the associated dims: True where the boundary is defined
        values              float (NumTrue(mask),) (optional; not read)
    /scalars                @field_names list[str]
        <name>              float () or (1,) [constant], (B,) [@sample_varying], (T,)/(B, T) [@time_varying]
    /t0_fields, /t1_fields, /t2_fields     @field_names list[str]
        <name>              float [B?, T?, W?, H?, D^order] -- the leading B only if @sample_varying,
                            T only if @time_varying, each spatial axis only where @dim_varying is True;
                            @symmetric / @antisymmetric on t2 fields (not read)

:func:`load_the_well` returns :class:`WellData` with ``fields [N, T, C, X, Y]`` (float64). Channel
order: the ``t0_fields`` in their ``field_names`` order, then every component of each ``t1_fields``
entry, then every component of each ``t2_fields`` entry -- the order in which the reference loader
concatenates its channels. Components are named after the file's ``spatial_dims`` like the reference
loader (``velocity_x``, ``velocity_y``; ``D_xx``, ``D_xy``, ``D_yx``, ``D_yy`` -- row-major over the
last two axes; on planetswe ``velocity_theta``, ``velocity_phi``). **t2 tensor fields are included**
as their ``D*D`` components (a flattened ``D^2`` last axis, as ``docs/data_format.md`` writes it, is
accepted too).

Attributes honoured (missing ones take the format's usual value and leave a note in ``messages``):

* ``time_varying = False`` on a field: stored without the time axis; broadcast over the frames (the
  reference loader returns such fields separately as ``constant_fields``; here they are channels).
* ``sample_varying = False``: stored without the trajectory axis; broadcast over trajectories.
* ``dim_varying[i] = False``: stored without spatial axis ``i``; broadcast along it.
* ``dimensions/time`` with ``sample_varying = True`` (shape ``[B, T]``): ``coords["t"]`` is the first
  loaded trajectory's times, every loaded trajectory must be uniformly spaced with the same step,
  and the per-trajectory times are kept in ``coords["t_per_trajectory"] [N, T]``.
* sample-varying spatial coordinates: accepted only when equal across the loaded trajectories;
  time-varying spatial coordinates are refused (the reference exporter refuses them too).
* scalars: constant ones become floats in ``parameters``; sample-varying constant ones become a float
  when equal across the loaded trajectories, else a float64 array ``[N]``; time-varying ones are
  skipped (with a note). Names in the root ``simulation_parameters`` missing from ``scalars`` are
  taken from the root attribute of that name.
* boundary conditions (same reading as the reference loader's ``_padding_bcs``): a condition marks
  the low / high edge of each of its ``associated_dims`` when its ``mask`` is True on that edge (any
  point for PERIODIC / OPEN, every point for WALL). An axis is periodic when both of its edges are
  marked PERIODIC and by nothing else; an edge nothing marks counts as OPEN (the reference default).

Only 2-D data (``n_spatial_dims == 2``) are supported. Every structural problem raises
:class:`TheWellFormatError` (a ``ValueError``) naming the file and the key: a non-HDF5 or truncated
file, a missing root attribute / group / dataset, ``n_spatial_dims != 2``, a shape that does not match
``[n_trajectories, n_steps, X, Y(, D(, D))]`` as reduced by the attributes above, non-numeric fields,
NaN/inf in the loaded values, coordinates or constant scalars, a non-uniform time grid, a boundary
condition on an unknown dimension, and a name in ``fields=`` that the file lacks (the available names
are listed). NaN/inf are checked on the values actually loaded (after ``max_samples`` and
down-sampling), so that a large file is never read whole.

:func:`write_the_well` writes the same layout (float32 by default, as the format specifies), with
boundary-condition groups named ``<dim>_periodic`` / ``<dim>_wall`` / ``<dim>_open``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physdiff.data.hdf5 import (
    GridSpacing,
    atomic_write,
    check_downsample,
    check_links,
    check_read,
    decode_attr,
    default_max_bytes,
    nonfinite,
)

__all__ = ["TheWellFormatError", "WellData", "load_the_well", "write_the_well", "BC_TYPES"]

BC_TYPES = ("WALL", "OPEN", "PERIODIC")  # the reference loader's BoundaryCondition enum
_FIELD_GROUPS = ("t0_fields", "t1_fields", "t2_fields")
_N_DIMS = 2


class TheWellFormatError(ValueError):
    """A file does not follow The Well's layout (or holds values this reader cannot use)."""


@dataclass
class WellData(GridSpacing):
    """A loaded Well file (2-D).

    Attributes:
        fields: float64 ``[N, T, C, X, Y]``; channel order in the module docstring.
        channels: the ``C`` channel names (``h``, ``velocity_x``, ``velocity_y``, ``D_xy``, ...).
        coords: ``t`` (frame times, ``[T]``), ``x`` and ``y`` (the first and second spatial axis,
            whatever the file calls them -- see ``spatial_dims``); ``t_per_trajectory [N, T]`` when the
            file's time is sample-varying.
        periodic: per spatial axis, whether both of its edges are PERIODIC boundaries.
        parameters: constant scalars (floats; ``[N]`` arrays for sample-varying unequal ones).
        messages: notes about what was skipped, broadcast or assumed.
        source: the file path. ``name``: the file's ``dataset_name`` attribute.
        spatial_dims: the file's names of the two spatial axes (``("x", "y")`` usually).
        grid_type: the file's ``grid_type`` (``cartesian``, ``equiangular``, ...).
        boundary: per axis, ``(low edge, high edge)`` type: ``PERIODIC``/``WALL``/``OPEN`` (or an
            unknown type as written in the file, or ``MIXED`` when several conditions mark it).
    """

    fields: np.ndarray
    channels: tuple[str, ...]
    coords: dict[str, np.ndarray]
    periodic: tuple[bool, bool]
    parameters: dict[str, Any]
    messages: list[str] = field(default_factory=list)
    source: str | None = None
    name: str = ""
    spatial_dims: tuple[str, str] = ("x", "y")
    grid_type: str = "cartesian"
    boundary: tuple[tuple[str, str], tuple[str, str]] = (("OPEN", "OPEN"), ("OPEN", "OPEN"))

    @property
    def n_samples(self) -> int:
        return int(self.fields.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.fields.shape[1])

    def channel_index(self, name: str) -> int:
        """Index of channel ``name`` along axis 2 of :attr:`fields`."""
        try:
            return self.channels.index(name)
        except ValueError:
            raise KeyError(f"no channel {name!r}; channels: {list(self.channels)}") from None


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


class _Ctx:
    """The file being read and the key currently read (for error messages)."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = path
        self.key = "/"
        self.budget = default_max_bytes() if max_bytes is None else int(max_bytes)  # bytes a load may read
        self.used = 0

    def error(self, key: str, msg: str) -> TheWellFormatError:
        return TheWellFormatError(f"{self.path}: {key!r}: {msg}")


def _str_attr(obj: h5py.HLObject, name: str, ctx: _Ctx, key: str) -> str:
    v = obj.attrs[name]
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(()).item()
    if not isinstance(v, str | bytes | np.bytes_ | np.str_):
        raise ctx.error(f"{key}@{name}", f"attribute must be a string, got {v!r}")
    return str(decode_attr(v))


def _str_list_attr(obj: h5py.HLObject, name: str, ctx: _Ctx, key: str) -> list[str]:
    if name not in obj.attrs:
        raise ctx.error(f"{key}@{name}", "missing attribute")
    v = obj.attrs[name]
    if isinstance(v, str | bytes | np.bytes_ | np.str_):  # a single name stored as a plain string
        return [str(decode_attr(v))]
    arr = np.asarray(v)
    if arr.size == 0:
        return []
    if arr.ndim != 1 or arr.dtype.kind not in "OSU":
        raise ctx.error(f"{key}@{name}", f"attribute must be a list of strings, got {v!r}")
    return [str(decode_attr(s)) for s in arr]


def _bool_attr(obj: h5py.HLObject, name: str, default: bool, ctx: _Ctx, key: str, messages: list[str]) -> bool:
    if name not in obj.attrs:
        messages.append(f"{key}: no '{name}' attribute; assumed {name}={default}")
        return default
    v = np.asarray(obj.attrs[name])
    if v.size != 1 or v.dtype.kind not in "biu":
        raise ctx.error(f"{key}@{name}", f"attribute must be a boolean, got {obj.attrs[name]!r}")
    return bool(v.reshape(()).item())


def _dim_varying(obj: h5py.Dataset, ctx: _Ctx, key: str, messages: list[str]) -> tuple[bool, ...]:
    if "dim_varying" not in obj.attrs:
        messages.append(f"{key}: no 'dim_varying' attribute; assumed the field varies along every spatial axis")
        return (True,) * _N_DIMS
    v = np.asarray(obj.attrs["dim_varying"]).reshape(-1)
    if v.size != _N_DIMS or v.dtype.kind not in "biu":
        raise ctx.error(
            f"{key}@dim_varying", f"attribute must be {_N_DIMS} booleans (one per spatial axis), got {v.tolist()!r}"
        )
    return tuple(bool(b) for b in v)


def _group(parent: h5py.Group, name: str, ctx: _Ctx) -> h5py.Group:
    key = f"{parent.name.rstrip('/')}/{name}".lstrip("/")
    if name not in parent:
        have = ", ".join(sorted(parent.keys())) or "nothing"
        raise ctx.error(key, f"missing group (found: {have})")
    obj = parent[name]
    if not isinstance(obj, h5py.Group):
        raise ctx.error(key, "must be a group, found a dataset")
    return obj


def _dataset(parent: h5py.Group, name: str, ctx: _Ctx) -> h5py.Dataset:
    key = f"{parent.name.rstrip('/')}/{name}".lstrip("/")
    if name not in parent:
        have = ", ".join(sorted(parent.keys())) or "nothing"
        raise ctx.error(key, f"missing dataset (found: {have})")
    obj = parent[name]
    if not isinstance(obj, h5py.Dataset):
        raise ctx.error(key, "must be a dataset, found a group")
    return obj


def _numeric(ds: h5py.Dataset, ctx: _Ctx, key: str, kinds: str = "fiub") -> None:
    if ds.dtype.kind not in kinds:
        raise ctx.error(key, f"dataset must hold real numbers, has dtype {ds.dtype}")


def _read(ds: h5py.Dataset, sel: Any, ctx: _Ctx, key: str) -> np.ndarray:
    ctx.key = key
    first = sel[0] if isinstance(sel, tuple) and sel else sel
    rows = first.stop if isinstance(first, slice) else None
    try:  # the declared shape against what is left of the budget (and virtual / external storage), before reading
        ctx.used += check_read(ds, str(ctx.path), key, rows=rows, max_bytes=ctx.budget - ctx.used)
    except ValueError as e:
        raise TheWellFormatError(str(e)) from None
    try:
        return np.asarray(ds[sel])
    except OSError as e:  # truncated / corrupt storage
        raise ctx.error(key, f"could not be read ({e})") from e


def _finite(arr: np.ndarray, ctx: _Ctx, key: str) -> None:
    bad = nonfinite(arr)[0] if arr.dtype.kind in "fc" else 0
    if bad:
        raise ctx.error(key, f"contains {bad} NaN/inf values (shape {arr.shape})")


def _uniform_step(c: np.ndarray, stored: np.dtype) -> tuple[bool, float]:
    """Whether ``c`` is strictly increasing with a constant step (to storage precision); the mean step."""
    if len(c) < 2:
        return True, 0.0
    d = np.diff(c)
    mean = float(d.mean())
    if np.any(d <= 0):
        return False, mean
    eps = float(np.finfo(stored).eps) if np.dtype(stored).kind == "f" else float(np.finfo(np.float64).eps)
    tol = max(1e-3 * abs(mean), 8.0 * eps * float(np.max(np.abs(c))))
    return bool(np.max(np.abs(d - mean)) <= tol), mean


def _int_root_attr(f: h5py.File, name: str, ctx: _Ctx) -> int:
    if name not in f.attrs:
        raise ctx.error(f"@{name}", "missing root attribute")
    v = np.asarray(f.attrs[name])
    if v.size != 1 or v.dtype.kind not in "iuf" or float(v.reshape(())) != int(v.reshape(())):
        raise ctx.error(f"@{name}", f"root attribute must be an integer, got {f.attrs[name]!r}")
    return int(v.reshape(()))


@dataclass
class _FieldSpec:
    group: str
    name: str
    order: int
    key: str
    sample_varying: bool
    time_varying: bool
    dim_varying: tuple[bool, ...]
    channels: tuple[str, ...]
    comp_ndim: int  # trailing component axes as stored: 0, 1 (vector or flattened D^2 tensor) or 2


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------


def load_the_well(
    path: str | os.PathLike[str],
    *,
    fields: Sequence[str] | None = None,
    max_samples: int | None = None,
    downsample_x: int = 1,
    downsample_t: int = 1,
    max_bytes: int | None = None,
) -> WellData:
    """Load a 2-D file of The Well.

    Args:
        path: the ``.hdf5`` / ``.h5`` file.
        fields: the fields to load, by field name (``"velocity"``: every component) or channel name
            (``"velocity_x"``); default all. The channels keep the file's order (module docstring),
            whatever the order of this list.
        max_samples: load at most this many trajectories (the first ones).
        downsample_x: keep every ``k``-th point along both spatial axes.
        downsample_t: keep every ``k``-th frame.
        max_bytes: the read budget of the load (default: a fraction of the available memory); each read's
            declared size is checked against what is left of it before reading, and links outside the
            file's folder and virtual datasets with unmapped rows are refused.

    Raises:
        FileNotFoundError: no such file.
        ValueError: bad arguments.
        TheWellFormatError: the file does not follow the layout (see the module docstring).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if max_samples is not None and (
        isinstance(max_samples, bool) or int(max_samples) != max_samples or max_samples < 1
    ):
        raise ValueError(f"max_samples must be an integer >= 1, got {max_samples!r}")
    sx = check_downsample("downsample_x", downsample_x)
    st = check_downsample("downsample_t", downsample_t)
    if fields is not None:
        if isinstance(fields, str):
            fields = [fields]
        fields = [str(n) for n in fields]
        if not fields:
            raise ValueError("fields must name at least one field (or be None for all)")
    ctx = _Ctx(path, max_bytes)
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise TheWellFormatError(f"{path}: '/': not a readable HDF5 file ({e})") from e
    try:
        with h5 as f:
            try:
                check_links(f, str(path))
            except ValueError as e:
                raise TheWellFormatError(str(e)) from None
            return _load(f, ctx, fields, max_samples, sx, st)
    except OSError as e:  # corrupt/truncated storage hit while reading metadata
        raise ctx.error(ctx.key, f"could not be read ({e})") from e


def _load(f: h5py.File, ctx: _Ctx, select: list[str] | None, max_samples: int | None, sx: int, st: int) -> WellData:
    path = ctx.path
    messages: list[str] = []

    # --- root attributes ------------------------------------------------------------------------
    nd = _int_root_attr(f, "n_spatial_dims", ctx)
    if nd != _N_DIMS:
        raise ctx.error(
            "@n_spatial_dims", f"only 2-D data are supported; the file has n_spatial_dims = {nd} ({nd}-D data)"
        )
    n_traj = _int_root_attr(f, "n_trajectories", ctx)
    if n_traj < 1:
        raise ctx.error("@n_trajectories", f"must be >= 1, got {n_traj}")
    if "dataset_name" in f.attrs:
        name = _str_attr(f, "dataset_name", ctx, "")
    else:
        name = path.stem
        messages.append(f"no root attribute 'dataset_name'; using the file name {name!r}")
    grid_type = _str_attr(f, "grid_type", ctx, "") if "grid_type" in f.attrs else "cartesian"
    if "grid_type" not in f.attrs:
        messages.append("no root attribute 'grid_type'; assumed 'cartesian'")
    elif grid_type.lower() != "cartesian":
        messages.append(
            f"grid_type is {grid_type!r}: coords hold the file's coordinates as stored "
            "(not Cartesian x/y); finite differences on them need the grid's metric"
        )
    n = n_traj if max_samples is None else min(int(max_samples), n_traj)

    # --- dimensions -----------------------------------------------------------------------------
    ctx.key = "dimensions"
    dims = _group(f, "dimensions", ctx)
    spatial = _str_list_attr(dims, "spatial_dims", ctx, "dimensions")
    if len(spatial) != _N_DIMS:
        raise ctx.error("dimensions@spatial_dims", f"must name n_spatial_dims = {_N_DIMS} dimensions, got {spatial!r}")
    if len(set(spatial)) != len(spatial):
        raise ctx.error("dimensions@spatial_dims", f"repeats a name: {spatial!r}")
    if tuple(spatial) != ("x", "y"):
        messages.append(
            f"spatial_dims are {spatial!r}: coords 'x' and 'y' hold {spatial[0]!r} and {spatial[1]!r}; "
            "vector/tensor components are named after the file's dims"
        )
    coords: dict[str, np.ndarray] = {}
    t_all, n_steps, t_sample_varying = _read_time(dims, ctx, n_traj, n, st, messages)
    coords["t"] = t_all[0]
    if t_sample_varying:
        coords["t_per_trajectory"] = t_all
    sizes: list[int] = []
    for axis, dim in zip(("x", "y"), spatial, strict=True):
        c = _read_space(dims, dim, ctx, n_traj, n, messages)
        sizes.append(len(c))
        coords[axis] = c[::sx]

    # --- fields ---------------------------------------------------------------------------------
    specs = _field_specs(f, ctx, spatial, n_traj, n_steps, sizes, messages)
    all_channels = [c for s in specs for c in s.channels]
    dup = sorted({c for c in all_channels if all_channels.count(c) > 1})
    if dup:
        raise ctx.error("t0_fields", f"channel names {dup} occur more than once across t0/t1/t2_fields")
    if not specs:
        raise ctx.error("t0_fields", "the file lists no fields in t0_fields, t1_fields or t2_fields")
    chosen = _select(specs, select, ctx)
    n_t = len(range(0, n_steps, st))
    shape_xy = tuple(len(range(0, s, sx)) for s in sizes)
    channels = [spec.channels[i] for spec, comps in chosen for i in comps]
    out = np.empty((n, n_t, len(channels), *shape_xy), dtype=np.float64)
    c0 = 0
    for spec, comps in chosen:
        arr = _read_field(f, spec, ctx, n, n_steps, sizes, sx, st, messages)  # [N, T, X, Y, ncomp]
        for j, comp in enumerate(comps):
            out[:, :, c0 + j] = arr[..., comp]
        c0 += len(comps)

    # --- scalars, boundary conditions -----------------------------------------------------------
    parameters = _read_scalars(f, ctx, n_traj, n, messages)
    periodic, boundary = _read_boundaries(f, ctx, spatial, sizes, messages)
    if max_samples is not None and max_samples > n_traj:
        messages.append(f"max_samples={max_samples} but the file holds {n_traj} trajectories; loaded all")

    return WellData(
        fields=out,
        channels=tuple(channels),
        coords=coords,
        periodic=periodic,
        parameters=parameters,
        messages=messages,
        source=str(path),
        name=name,
        spatial_dims=(spatial[0], spatial[1]),
        grid_type=grid_type,
        boundary=boundary,
    )


def _read_time(
    dims: h5py.Group, ctx: _Ctx, n_traj: int, n: int, st: int, messages: list[str]
) -> tuple[np.ndarray, int, bool]:
    """Frame times ``[N or 1, T']`` (down-sampled), the stored number of steps ``T``, sample-varying."""
    key = "dimensions/time"
    ds = _dataset(dims, "time", ctx)
    _numeric(ds, ctx, key, "fiu")
    sv = _bool_attr(ds, "sample_varying", False, ctx, key, messages)
    if sv:
        if ds.ndim != 2 or ds.shape[0] != n_traj:
            raise ctx.error(key, f"sample-varying time must have shape [n_trajectories={n_traj}, T], got {ds.shape}")
        t = _read(ds, (slice(0, n), slice(None)), ctx, key).astype(np.float64)
    else:
        if ds.ndim != 1:
            raise ctx.error(key, f"time must have shape [T] (sample_varying=False), got {ds.shape}")
        t = _read(ds, slice(None), ctx, key).astype(np.float64)[None]
    n_steps = int(ds.shape[-1])
    if n_steps < 1:
        raise ctx.error(key, "holds no time steps")
    _finite(t if sv else t[0], ctx, key)
    dt0 = None
    for i, row in enumerate(t):
        ok, step = _uniform_step(row, ds.dtype)
        if not ok:
            which = f" (trajectory {i})" if sv else ""
            raise ctx.error(key, f"frame times{which} are not uniformly spaced and increasing: {row[:6].tolist()}...")
        if dt0 is None:
            dt0 = step
        elif n_steps > 1 and abs(step - dt0) > 1e-3 * abs(dt0):
            raise ctx.error(key, f"trajectory {i} has time step {step:.6g} but trajectory 0 has {dt0:.6g}")
    if sv:
        same = bool(np.allclose(t, t[0], rtol=1e-6, atol=0.0))
        messages.append(
            "dimensions/time is sample-varying: coords['t'] is trajectory 0's times"
            + ("" if same else " (the trajectories start at different times)")
            + "; coords['t_per_trajectory'] holds each loaded trajectory's"
        )
    return t[:, ::st], n_steps, sv


def _read_space(dims: h5py.Group, dim: str, ctx: _Ctx, n_traj: int, n: int, messages: list[str]) -> np.ndarray:
    key = f"dimensions/{dim}"
    ds = _dataset(dims, dim, ctx)
    _numeric(ds, ctx, key, "fiu")
    if _bool_attr(ds, "time_varying", False, ctx, key, messages):
        raise ctx.error(key, "time-varying spatial coordinates are not supported")
    if _bool_attr(ds, "sample_varying", False, ctx, key, messages):
        if ds.ndim != 2 or ds.shape[0] != n_traj:
            raise ctx.error(
                key, f"sample-varying coordinate must have shape [n_trajectories={n_traj}, W], got {ds.shape}"
            )
        c = _read(ds, (slice(0, n), slice(None)), ctx, key).astype(np.float64)
        _finite(c, ctx, key)
        if not np.allclose(c, c[0], rtol=1e-6, atol=0.0):
            raise ctx.error(
                key, "sample-varying spatial coordinates that differ between trajectories are not supported"
            )
        messages.append(f"{key} is sample-varying but equal across the loaded trajectories; used trajectory 0's")
        c = c[0]
    else:
        if ds.ndim != 1:
            raise ctx.error(key, f"coordinate must have shape [W], got {ds.shape}")
        c = _read(ds, slice(None), ctx, key).astype(np.float64)
        _finite(c, ctx, key)
    if len(c) < 1:
        raise ctx.error(key, "holds no points")
    ok, _ = _uniform_step(c, ds.dtype)
    if not ok:
        messages.append(f"{key} is not a uniform increasing grid; dx/dy from coords are only the first spacing")
    return c


def _field_specs(
    f: h5py.File, ctx: _Ctx, spatial: list[str], n_traj: int, n_steps: int, sizes: list[int], messages: list[str]
) -> list[_FieldSpec]:
    specs: list[_FieldSpec] = []
    for order, gname in enumerate(_FIELD_GROUPS):
        ctx.key = gname
        if gname not in f and order > 0:
            messages.append(f"no group {gname!r}; treated as empty")
            continue
        grp = _group(f, gname, ctx)
        names = _str_list_attr(grp, "field_names", ctx, gname)
        unlisted = sorted(set(grp.keys()) - set(names))
        if unlisted:
            messages.append(f"{gname}: datasets {unlisted} are not in field_names; ignored")
        for fname in names:
            key = f"{gname}/{fname}"
            ctx.key = key
            ds = _dataset(grp, fname, ctx)
            _numeric(ds, ctx, key)
            sv = _bool_attr(ds, "sample_varying", True, ctx, key, messages)
            tv = _bool_attr(ds, "time_varying", True, ctx, key, messages)
            dv = _dim_varying(ds, ctx, key, messages)
            lead: list[int] = []
            labels: list[str] = []
            if sv:
                lead.append(n_traj)
                labels.append("n_trajectories")
            if tv:
                lead.append(n_steps)
                labels.append("n_steps")
            for d, size, varies in zip(spatial, sizes, dv, strict=True):
                if varies:
                    lead.append(size)
                    labels.append(d)
            comp_shapes = [(_N_DIMS,) * order]
            if order == 2:
                comp_shapes.append((_N_DIMS**2,))  # docs/data_format.md writes D^2
            got = tuple(ds.shape)
            match = [cs for cs in comp_shapes if got == (*lead, *cs)]
            if not match:
                want = " or ".join(str(tuple(lead) + cs) for cs in comp_shapes)
                comp_lbl = ["D"] * order
                raise ctx.error(
                    key,
                    f"shape {got} does not match [{', '.join(labels + comp_lbl)}] = {want} "
                    f"(sample_varying={sv}, time_varying={tv}, dim_varying={list(dv)})",
                )
            if order == 0:
                chans: tuple[str, ...] = (fname,)
            elif order == 1:
                chans = tuple(f"{fname}_{d}" for d in spatial)
            else:
                chans = tuple(f"{fname}_{a}{b}" for a in spatial for b in spatial)
            specs.append(_FieldSpec(gname, fname, order, key, sv, tv, dv, chans, len(match[0])))
    return specs


def _select(specs: list[_FieldSpec], select: list[str] | None, ctx: _Ctx) -> list[tuple[_FieldSpec, list[int]]]:
    if select is None:
        return [(s, list(range(len(s.channels)))) for s in specs]
    wanted = set(select)
    known = {s.name for s in specs} | {c for s in specs for c in s.channels}
    missing = [w for w in select if w not in known]
    if missing:
        avail = ", ".join(f"{s.key} -> {list(s.channels)}" for s in specs)
        raise ctx.error(
            "fields=" + ",".join(missing),
            f"field(s) {missing} not in the file; available fields (group/name -> channels): {avail}",
        )
    chosen: list[tuple[_FieldSpec, list[int]]] = []
    for s in specs:
        comps = [i for i, c in enumerate(s.channels) if s.name in wanted or c in wanted]
        if comps:
            chosen.append((s, comps))
    return chosen


def _read_field(
    f: h5py.File,
    spec: _FieldSpec,
    ctx: _Ctx,
    n: int,
    n_steps: int,
    sizes: list[int],
    sx: int,
    st: int,
    messages: list[str],
) -> np.ndarray:
    """One field as float64 ``[N, T', X', Y', ncomp]`` (broadcast over the axes it does not store)."""
    ds = f[spec.group][spec.name]
    sel: list[slice] = []
    if spec.sample_varying:
        sel.append(slice(0, n))
    if spec.time_varying:
        sel.append(slice(0, n_steps, st))
    for size, varies in zip(sizes, spec.dim_varying, strict=True):
        if varies:
            sel.append(slice(0, size, sx))
    arr = _read(ds, tuple(sel) if sel else (), ctx, spec.key).astype(np.float64)
    _finite(arr, ctx, spec.key)
    ncomp = len(spec.channels)
    arr = arr.reshape(*arr.shape[: arr.ndim - spec.comp_ndim], ncomp)  # components row-major on the last axis
    pos = 0  # insert the axes the field does not store
    if not spec.sample_varying:
        arr = arr[None]
        messages.append(f"{spec.key} is not sample-varying: broadcast over the {n} trajectories")
    pos += 1
    if not spec.time_varying:
        arr = np.expand_dims(arr, pos)
        messages.append(f"{spec.key} is not time-varying: broadcast over the time axis (all frames)")
    pos += 1
    for dim_i, varies in enumerate(spec.dim_varying):
        if not varies:
            arr = np.expand_dims(arr, pos)
            messages.append(f"{spec.key} does not vary along spatial axis {dim_i}: broadcast along it")
        pos += 1
    n_t = len(range(0, n_steps, st))
    shape_xy = tuple(len(range(0, s, sx)) for s in sizes)
    return np.broadcast_to(arr, (n, n_t, *shape_xy, ncomp))


def _read_scalars(f: h5py.File, ctx: _Ctx, n_traj: int, n: int, messages: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    skipped: set[str] = set()
    if "scalars" not in f:
        messages.append("no group 'scalars'; no parameters read from it")
    else:
        ctx.key = "scalars"
        grp = _group(f, "scalars", ctx)
        for sname in _str_list_attr(grp, "field_names", ctx, "scalars"):
            key = f"scalars/{sname}"
            ctx.key = key
            ds = _dataset(grp, sname, ctx)
            sv = _bool_attr(ds, "sample_varying", False, ctx, key, messages)
            tv = _bool_attr(ds, "time_varying", False, ctx, key, messages)
            if tv:
                skipped.add(sname)
                messages.append(f"{key} is time-varying (shape {ds.shape}); skipped (parameters hold constants only)")
                continue
            if ds.dtype.kind not in "fiub":
                skipped.add(sname)
                messages.append(f"{key} is not numeric (dtype {ds.dtype}); skipped")
                continue
            val = _read(ds, (), ctx, key).astype(np.float64)
            if sv:
                if val.ndim < 1 or val.shape[0] != n_traj or val[0].size != 1:
                    raise ctx.error(
                        key, f"sample-varying scalar must have shape [n_trajectories={n_traj}], got {val.shape}"
                    )
                val = val.reshape(n_traj)[:n]
                _finite(val, ctx, key)
                if np.all(val == val[0]):
                    params[sname] = float(val[0])
                else:
                    params[sname] = val
                    messages.append(f"{key} differs between trajectories; parameters[{sname!r}] is an array [N]")
            else:
                if val.size != 1:
                    raise ctx.error(
                        key, f"constant scalar must hold one value (shape () or (1,)), got shape {val.shape}"
                    )
                _finite(val, ctx, key)
                params[sname] = float(val.reshape(()))
    if "simulation_parameters" in f.attrs:
        for pname in _str_list_attr(f, "simulation_parameters", ctx, ""):
            if pname in params or pname in skipped:
                continue
            if pname not in f.attrs:
                raise ctx.error(
                    f"@{pname}", "listed in simulation_parameters but neither a root attribute nor in scalars"
                )
            v = np.asarray(f.attrs[pname])
            if v.size == 1 and v.dtype.kind in "fiub":
                fv = float(v.reshape(()))
                if not np.isfinite(fv):
                    raise ctx.error(f"@{pname}", f"parameter is not finite ({fv})")
                params[pname] = fv
                messages.append(f"parameter {pname!r} is not in 'scalars'; taken from the root attribute")
            else:
                messages.append(f"parameter {pname!r}: root attribute {f.attrs[pname]!r} is not a number; skipped")
    return params


def _read_boundaries(
    f: h5py.File, ctx: _Ctx, spatial: list[str], sizes: list[int], messages: list[str]
) -> tuple[tuple[bool, bool], tuple[tuple[str, str], tuple[str, str]]]:
    edges: list[list[set[str]]] = [[set(), set()] for _ in spatial]
    if "boundary_conditions" not in f:
        messages.append("no group 'boundary_conditions'; every edge treated as OPEN (not periodic)")
    else:
        ctx.key = "boundary_conditions"
        grp = _group(f, "boundary_conditions", ctx)
        for bname in sorted(grp.keys()):
            key = f"boundary_conditions/{bname}"
            ctx.key = key
            sub = _group(grp, bname, ctx)
            if "bc_type" not in sub.attrs:
                raise ctx.error(f"{key}@bc_type", "missing attribute")
            bc_type = _str_attr(sub, "bc_type", ctx, key).upper()
            assoc = _str_list_attr(sub, "associated_dims", ctx, key)
            unknown = [d for d in assoc if d not in spatial]
            if unknown or not assoc:
                raise ctx.error(f"{key}@associated_dims", f"names {assoc!r}; must be among spatial_dims {spatial!r}")
            if bc_type not in BC_TYPES:
                messages.append(
                    f"{key}: unknown bc_type {bc_type!r} (known: {list(BC_TYPES)}); treated as not periodic"
                )
            mds = _dataset(sub, "mask", ctx)
            mkey = f"{key}/mask"
            axes = [i for i, d in enumerate(spatial) if d in assoc]  # mask axes follow spatial_dims order
            want = tuple(sizes[i] for i in axes)
            mask = _read(mds, (), ctx, mkey).astype(bool)
            if mask.ndim < len(want) or mask.shape[mask.ndim - len(want) :] != want:
                raise ctx.error(mkey, f"shape {mask.shape} does not end with the associated dims' sizes {want}")
            if mask.ndim > len(want):  # sample- / time-varying mask: an edge counts if marked anywhere
                mask = mask.reshape(-1, *want).any(axis=0)
                messages.append(f"{mkey} varies over samples/time; an edge counts where it is marked in any of them")
            marked = 0
            for j, ax in enumerate(axes):
                for side, idx in enumerate((0, -1)):
                    edge = np.take(mask, idx, axis=j)
                    hit = bool(edge.all()) if bc_type == "WALL" else bool(edge.any())
                    if hit:
                        edges[ax][side].add(bc_type)
                        marked += 1
            if not marked:
                messages.append(f"{key}: the mask marks no domain edge (interior boundary?); ignored for periodicity")
    periodic: list[bool] = []
    boundary: list[tuple[str, str]] = []
    for ax, dim in enumerate(spatial):
        labels: list[str] = []
        for side, sname in enumerate(("low", "high")):
            types = edges[ax][side]
            if not types:
                if "boundary_conditions" in f:
                    messages.append(f"no boundary condition marks the {sname} edge of {dim!r}; treated as OPEN")
                labels.append("OPEN")
            elif len(types) == 1:
                labels.append(next(iter(types)))
            else:
                messages.append(f"the {sname} edge of {dim!r} is marked {sorted(types)}; recorded as MIXED")
                labels.append("MIXED")
        is_periodic = labels[0] == labels[1] == "PERIODIC"
        if not is_periodic and "PERIODIC" in (edges[ax][0] | edges[ax][1]):
            messages.append(f"{dim!r} has a PERIODIC condition but edges {labels}; treated as not periodic")
        periodic.append(is_periodic)
        boundary.append((labels[0], labels[1]))
    return (periodic[0], periodic[1]), (boundary[0], boundary[1])


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------


def _str_array(names: Sequence[str]) -> np.ndarray:
    return np.array(list(names), dtype=h5py.string_dtype())


def write_the_well(
    path: str | os.PathLike[str],
    fields: Mapping[str, np.ndarray],
    *,
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    periodic: tuple[bool, bool] = (True, True),
    scalars: Mapping[str, Any] | None = None,
    dataset_name: str = "physdiff_export",
    constant_fields: Mapping[str, np.ndarray] | None = None,
    nonperiodic_bc: str = "WALL",
    grid_type: str = "cartesian",
    dtype: Any = np.float32,
    amend: Callable[[h5py.File], None] | None = None,
) -> Path:
    """Write a 2-D data set in The Well's layout (atomically: temp file + ``os.replace``).

    Args:
        path: destination file.
        fields: ``name -> array``; the tensor order follows from the shape: ``[N, T, X, Y]`` is a
            scalar field (``t0_fields``), ``[N, T, X, Y, 2]`` a vector field (``t1_fields``),
            ``[N, T, X, Y, 2, 2]`` a rank-2 tensor field (``t2_fields``).
        t, x, y: frame times ``[T]`` (uniformly spaced, increasing) and grid coordinates ``[X]``, ``[Y]``.
        periodic: per axis; a periodic axis gets the group ``<dim>_periodic`` (``bc_type='PERIODIC'``),
            another one ``<dim>_wall`` / ``<dim>_open`` after ``nonperiodic_bc``.
        scalars: constant parameters ``name -> float`` (written to ``scalars/`` and as root attributes
            listed in ``simulation_parameters``) or ``name -> [N]`` array (sample-varying, ``scalars/``
            only).
        dataset_name: the root ``dataset_name`` attribute.
        constant_fields: fields that do not vary in time, ``[N, X, Y(, 2(, 2))]`` (``time_varying=False``).
        nonperiodic_bc: ``"WALL"`` or ``"OPEN"``.
        grid_type: the root ``grid_type`` attribute.
        dtype: storage dtype of fields and coordinates (float32, as the format specifies).
        amend: called with the open file after the layout is written, inside the same atomic write
            (extra attributes or datasets appear together with the rest, or not at all).

    Returns:
        The written path.
    """
    path = Path(path)
    nonperiodic_bc = str(nonperiodic_bc).upper()
    if nonperiodic_bc not in ("WALL", "OPEN"):
        raise ValueError(f"nonperiodic_bc must be 'WALL' or 'OPEN', got {nonperiodic_bc!r}")
    if len(tuple(periodic)) != _N_DIMS:
        raise ValueError(f"periodic must give one flag per spatial axis (2), got {periodic!r}")
    t = np.asarray(t, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    for key, c in (("t", t), ("x", x), ("y", y)):
        if c.ndim != 1 or len(c) < 1:
            raise ValueError(f"{path}: coordinate {key!r} must be a non-empty 1-D array, got shape {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError(f"{path}: coordinate {key!r} contains NaN/inf values")
    ok, _ = _uniform_step(t, np.dtype(dtype))
    if not ok:
        raise ValueError(f"{path}: t must be increasing with a constant step (The Well stores uniform frames)")
    n_t, n_x, n_y = len(t), len(x), len(y)

    entries: dict[int, list[tuple[str, np.ndarray, bool]]] = {0: [], 1: [], 2: []}
    all_names: list[str] = []
    n_traj: int | None = None
    for what, group, tv in (("fields", fields, True), ("constant_fields", constant_fields or {}, False)):
        for fname, arr in group.items():
            fname = str(fname)
            if not fname or "/" in fname:
                raise ValueError(f"{path}: {what} name {fname!r} must be non-empty and contain no '/'")
            if fname in all_names:
                raise ValueError(f"{path}: field name {fname!r} given twice")
            all_names.append(fname)
            a = np.asarray(arr)
            if a.dtype.kind not in "fiub":
                raise ValueError(f"{path}: {what}[{fname!r}] must be real numbers, got dtype {a.dtype}")
            n_a = a.shape[0] if a.ndim else 0
            lead = (n_a, n_t, n_x, n_y) if tv else (n_a, n_x, n_y)
            order = a.ndim - len(lead)
            if order not in (0, 1, 2) or a.shape != (*lead, *((_N_DIMS,) * order)):
                form = "[N, T, X, Y(, 2(, 2))]" if tv else "[N, X, Y(, 2(, 2))]"
                raise ValueError(
                    f"{path}: {what}[{fname!r}] has shape {a.shape}; expected {form} with T={n_t}, X={n_x}, Y={n_y}"
                )
            if n_traj is None:
                n_traj = a.shape[0]
            elif a.shape[0] != n_traj:
                raise ValueError(f"{path}: {what}[{fname!r}] has {a.shape[0]} trajectories, other fields {n_traj}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{path}: {what}[{fname!r}] contains NaN/inf values")
            entries[order].append((fname, a, tv))
    if n_traj is None:
        raise ValueError(f"{path}: no fields to write")
    if n_traj < 1:
        raise ValueError(f"{path}: the fields hold no trajectories")
    chans = [f"{fn}_{c}" for fn, _, _ in entries[1] for c in "xy"]
    chans += [f"{fn}_{a}{b}" for fn, _, _ in entries[2] for a in "xy" for b in "xy"]
    clash = sorted(set(chans) & set(all_names))
    if clash:
        raise ValueError(f"{path}: channel names {clash} would be ambiguous (a field and a component share them)")

    const_params: dict[str, float] = {}
    varying_params: dict[str, np.ndarray] = {}
    for sname, val in (scalars or {}).items():
        sname = str(sname)
        if not sname or "/" in sname:
            raise ValueError(f"{path}: scalar name {sname!r} must be non-empty and contain no '/'")
        v = np.asarray(val, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{path}: scalar {sname!r} contains NaN/inf values")
        if v.size == 1:
            const_params[sname] = float(v.reshape(()))
        elif v.shape == (n_traj,):
            varying_params[sname] = v
        else:
            raise ValueError(f"{path}: scalar {sname!r} must be a number or an array [N={n_traj}], got shape {v.shape}")

    with atomic_write(path) as f:
        f.attrs["dataset_name"] = str(dataset_name)
        f.attrs["grid_type"] = str(grid_type)
        f.attrs["n_spatial_dims"] = np.int64(_N_DIMS)
        f.attrs["n_trajectories"] = np.int64(n_traj)
        f.attrs["simulation_parameters"] = _str_array(list(const_params))
        for sname, v in const_params.items():
            f.attrs[sname] = v

        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = _str_array(["x", "y"])
        for key, c, tv in (("time", t, True), ("x", x, False), ("y", y, False)):
            ds = dims.create_dataset(key, data=c.astype(dtype))
            ds.attrs["sample_varying"] = False
            ds.attrs["time_varying"] = tv

        bcs = f.create_group("boundary_conditions")
        for dim, size, per in zip(("x", "y"), (n_x, n_y), periodic, strict=True):
            bc_type = "PERIODIC" if per else nonperiodic_bc
            g = bcs.create_group(f"{dim}_{bc_type.lower()}")
            g.attrs["associated_dims"] = _str_array([dim])
            g.attrs["associated_fields"] = _str_array([])
            g.attrs["bc_type"] = bc_type
            g.attrs["sample_varying"] = False
            g.attrs["time_varying"] = False
            mask = np.zeros(size, dtype=bool)
            mask[0] = mask[-1] = True
            g.create_dataset("mask", data=mask)
            g.create_dataset("values", data=np.zeros(int(mask.sum()), dtype=dtype))

        sc = f.create_group("scalars")
        sc.attrs["field_names"] = _str_array(list(const_params) + list(varying_params))
        for sname, v in const_params.items():
            ds = sc.create_dataset(sname, data=np.asarray(v, dtype=np.float64))
            ds.attrs["sample_varying"] = False
            ds.attrs["time_varying"] = False
        for sname, v in varying_params.items():
            ds = sc.create_dataset(sname, data=v.astype(np.float64))
            ds.attrs["sample_varying"] = True
            ds.attrs["time_varying"] = False

        for order, gname in enumerate(_FIELD_GROUPS):
            g = f.create_group(gname)
            g.attrs["field_names"] = _str_array([fn for fn, _, _ in entries[order]])
            for fname, a, tv in entries[order]:
                ds = g.create_dataset(fname, data=a.astype(dtype))
                ds.attrs["dim_varying"] = np.array([True, True])
                ds.attrs["sample_varying"] = True
                ds.attrs["time_varying"] = tv
                if order == 2:
                    at = np.swapaxes(a, -1, -2)
                    ds.attrs["symmetric"] = bool(np.array_equal(a, at))
                    ds.attrs["antisymmetric"] = bool(np.array_equal(a, -at))
        if amend is not None:
            amend(f)
    return path
