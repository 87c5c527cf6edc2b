"""PDEBench-compatible HDF5 storage for the PDE data sets.

Layouts (identical key names to PDEBench, so real PDEBench files load unchanged):

* **1-D time-dependent** (advection, Burgers): ``tensor [N, T, X]``, ``x-coordinate [X]``,
  ``t-coordinate`` with ``T + 1`` entries (PDEBench's convention: the frames are the first ``T``
  entries) or ``T`` entries; the parameter in the root attribute ``beta`` (advection) / ``Nu``
  (Burgers; the equation uses ``Nu/pi``) or parsed from the file name (``1D_Advection_Sols_beta0.4.hdf5``,
  ``1D_Burgers_Sols_Nu0.01.hdf5``).
* **Darcy**: ``nu [N, X, Y]`` (the permeability ``a``), ``tensor [N, 1, X, Y]`` (the pressure ``u``),
  ``x-coordinate [X]``, ``y-coordinate [Y]``; the source ``f`` from attribute ``f`` (ours) or ``beta``
  or the file name (``2D_DarcyFlow_beta1.0_Train.hdf5``), default 1.
* **2-D time-dependent** (shallow water): one group per sample ``NNNN`` holding ``data [T, X, Y, C]``
  and ``grid/x``, ``grid/y``, ``grid/t``. Our files store ``C = 3`` conservative variables
  ``(h, hu, hv)``; PDEBench's ``2D_rdb_NA_NA.h5`` stores ``C = 1`` (``h`` only), which loads with
  ``FieldData.priors_available = False`` (mass/momentum residuals need the momenta) and a warning.

Files written by physdiff add the root attribute ``system`` and the parameters (scalars as root
attributes, arrays under the group ``params/``), and the sample splits as index arrays under
``splits/{train,val,test}``. PDEBench files carry no splits: the loader then follows PDEBench's own
convention -- the **first 10 % of samples are the test set** -- takes the next 10 % as validation and
the rest as training (``FieldData.split_source == "pdebench-convention"``). Our writer stores the same
partition explicitly, so both kinds of file split identically.

:class:`FieldData` axis orders (shared with :mod:`physdiff.systems.pde_registry`):

* advection, burgers: ``fields [N, T, X]``;
* darcy: ``fields [N, X, Y]`` (``u``) and ``coefficient [N, X, Y]`` (``a``);
* shallow-water: ``fields [N, T, C, X, Y]`` (``C = 3``: ``h, hu, hv``; ``C = 1``: ``h``).

Fields are returned as float64. Downsampling takes every ``k``-th point (``downsample_x`` applies to
every spatial axis, ``downsample_t`` to frames; Darcy has no time axis) and is done while reading.
Note that striding a cell-centred grid by an even factor does not give the cell centres of the coarse
grid; the Darcy residual (whose walls sit half a cell outside the outer centres) then has a larger
floor -- measure it on the loaded ground truth.

Bad input raises :class:`PDEBenchFormatError` (a ``ValueError``) naming the file and the key: a layout
that matches no supported format (the datasets found are listed), an unknown ``system`` attribute or one
that contradicts the layout, inconsistent grid sizes, NaN/inf in fields or coordinates, a non-positive
Burgers viscosity (attribute or file name), a non-positive Darcy permeability anywhere in the loaded
samples (checked at full resolution even when downsampling), a non-positive depth or gravity ``g`` in
shallow-water files, and malformed ``splits/``. :func:`write_pde` refuses NaN/inf arrays, coordinates and
numeric parameters, unknown array/coordinate/split keys, ``nu <= 0`` (Burgers) and ``a <= 0`` (Darcy).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = [
    "FieldData",
    "PDEBenchFormatError",
    "write_pde",
    "load_pde",
    "simulate_to_file",
    "default_splits",
    "SYSTEMS",
]

SYSTEMS = ("advection", "burgers", "darcy", "shallow-water")
_ONE_D = ("advection", "burgers")
_SW_CHANNELS = {3: ("h", "hu", "hv"), 1: ("h",)}


class PDEBenchFormatError(ValueError):
    """A file does not match a supported layout or holds invalid values."""


@dataclass
class FieldData:
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

    def _spacing(self, key: str) -> float | None:
        c = self.coords.get(key)
        return float(c[1] - c[0]) if c is not None and len(c) > 1 else None

    @property
    def dt(self) -> float | None:
        """Time between stored frames (``None`` for steady problems)."""
        return self._spacing("t")

    @property
    def dx(self) -> float | None:
        return self._spacing("x")

    @property
    def dy(self) -> float | None:
        return self._spacing("y")


# ------------------------------------------------------------------------------------------------
# helpers
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


def _canonical(system: str, where: str = "") -> str:
    key = str(system).strip().lower().replace("_", "-")
    aliases = {"shallow-water": "shallow-water", "swe": "shallow-water", "rdb": "shallow-water"}
    key = aliases.get(key, key)
    if key not in SYSTEMS:
        raise ValueError(f"{where}unknown PDE system {system!r}; valid names: {', '.join(SYSTEMS)}")
    return key


_NUM = r"([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"


def _params_from_name(name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    m = re.search(r"beta" + _NUM, name)
    if m:
        out["beta"] = float(m.group(1))
    m = re.search(r"Nu" + _NUM, name)
    if m:
        out["nu"] = float(m.group(1))
    return out


def _system_from_name(name: str) -> str | None:
    low = name.lower()
    if "advection" in low:
        return "advection"
    if "burgers" in low:
        return "burgers"
    if "darcy" in low:
        return "darcy"
    if "rdb" in low or "shallow" in low or "swe" in low:
        return "shallow-water"
    return None


def _attr_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _finite(arr: np.ndarray, path: Path, key: str) -> None:
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise PDEBenchFormatError(f"{path}: dataset {key!r} (shape {arr.shape}) contains {bad} NaN/inf values")


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


def _check_len(c: np.ndarray, n: int, path: Path, key: str, what: str) -> None:
    if c.ndim != 1 or len(c) != n:
        raise PDEBenchFormatError(
            f"{path}: inconsistent grid sizes: {key!r} has shape {c.shape} but the data have {n} points {what}"
        )


def _check_uniform(c: np.ndarray, path: Path, key: str) -> None:
    if len(c) > 2:
        d = np.diff(c)
        if not np.all(d > 0) or np.ptp(d) > 1e-3 * abs(d.mean()):
            raise PDEBenchFormatError(f"{path}: coordinate {key!r} is not a uniform increasing grid")


def _stride_idx(n: int, step: int) -> slice:
    if step < 1:
        raise ValueError(f"downsampling factors must be >= 1, got {step}")
    return slice(0, n, step)


def _describe(f: h5py.File, limit: int = 12) -> str:
    items: list[str] = []
    count = 0

    def visit(name: str, obj: Any) -> None:
        nonlocal count
        if isinstance(obj, h5py.Dataset):
            count += 1
            if len(items) < limit:
                items.append(f"{name} {obj.shape}")

    f.visititems(visit)
    if not items:
        groups = sorted(f.keys())[:limit]
        return f"(no datasets; groups: {', '.join(groups)})" if groups else "(no datasets)"
    more = f", ... ({count - len(items)} more)" if count > len(items) else ""
    return ", ".join(items) + more


def _finite_value(val: Any, path: Path, label: str) -> None:
    """Refuse NaN/inf in a numeric parameter (scalar or array); non-numeric values pass."""
    try:
        arr = np.asarray(val)
    except (TypeError, ValueError):  # ragged or odd objects: not a numeric parameter
        return
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: parameter {label!r} contains NaN/inf values ({val!r})")


def _check_downsample(name: str, step: Any) -> int:
    try:
        ok = not isinstance(step, bool) and int(step) == step and step >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= 1, got {step!r}")
    return int(step)


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------


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
    system = _canonical(system, "write_pde: ")
    path = Path(path)
    attrs = dict(attrs or {})
    want_arrays = ("u", "a") if system == "darcy" else ("u",)
    want_coords = {"advection": ("x", "t"), "burgers": ("x", "t"), "darcy": ("x", "y")}.get(system, ("x", "y", "t"))
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
    _finite(u, path, "u")
    expect = {"advection": 3, "burgers": 3, "darcy": 3, "shallow-water": 5}[system]
    if u.ndim != expect:
        raise ValueError(f"{system}: fields must have {expect} dims (see FieldData), got shape {u.shape}")
    if n < 1:
        raise ValueError(f"{path}: array 'u' holds no samples (shape {u.shape})")
    for key in want_coords:
        c = np.asarray(coords[key], dtype=np.float64)
        if c.ndim != 1:
            raise ValueError(f"{path}: coordinate {key!r} must be 1-D, got shape {c.shape}")
        _finite(c, path, key)
    x = np.asarray(coords["x"], dtype=np.float64)
    spatial = u.shape[-2:] if system in ("darcy", "shallow-water") else u.shape[-1:]
    if len(x) != spatial[0]:
        raise ValueError(f"{system}: x has {len(x)} points, fields have {spatial[0]}")
    if system in ("darcy", "shallow-water") and len(np.asarray(coords["y"])) != spatial[1]:
        raise ValueError(f"{system}: y has {len(coords['y'])} points, fields have {spatial[1]}")
    if system != "darcy":
        t = np.asarray(coords["t"], dtype=np.float64)
        if len(t) != u.shape[1]:
            raise ValueError(f"{system}: t has {len(t)} entries, fields have {u.shape[1]} frames")
    if system == "darcy":
        a = np.asarray(arrays["a"])
        if a.shape != u.shape:
            raise ValueError(f"darcy: a has shape {a.shape}, u has {u.shape}")
        _finite(a, path, "a")
        if np.any(a <= 0):
            raise ValueError(f"{path}: permeability 'a' (shape {a.shape}) must be > 0, min is {float(a.min()):.3g}")
    for key, val in attrs.items():
        if val is not None:
            _finite_value(val, path, str(key))
    if system == "burgers" and attrs.get("nu") is not None and not float(attrs["nu"]) > 0:
        raise ValueError(f"{path}: Burgers viscosity parameter 'nu' must be > 0, got {attrs['nu']}")
    splits = dict(splits) if splits is not None else default_splits(n)
    unknown = sorted(str(k) for k in splits if k not in ("train", "val", "test"))
    if unknown:
        raise ValueError(f"{path}: unknown split keys {unknown}; valid: ['train', 'val', 'test']")
    for name, idx in splits.items():
        idx = np.asarray(idx)
        if idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{path}: split {name!r} must hold integer indices in [0, {n}), got {idx!r}")

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["system"] = system
            f.attrs["format"] = "physdiff-pdebench-v1"
            if system in _ONE_D:
                f.create_dataset("tensor", data=u.astype(dtype))
                f.create_dataset("x-coordinate", data=x)
                dt = t[1] - t[0] if len(t) > 1 else 1.0
                f.create_dataset("t-coordinate", data=np.append(t, t[-1] + dt))  # PDEBench: T + 1
            elif system == "darcy":
                f.create_dataset("nu", data=a.astype(dtype))
                f.create_dataset("tensor", data=u[:, None].astype(dtype))
                f.create_dataset("x-coordinate", data=x)
                f.create_dataset("y-coordinate", data=np.asarray(coords["y"], dtype=np.float64))
            else:
                y = np.asarray(coords["y"], dtype=np.float64)
                data = np.moveaxis(u, 2, -1).astype(dtype)  # [N, T, X, Y, C]
                for i in range(n):
                    g = f.create_group(f"{i:04d}")
                    g.create_dataset("data", data=data[i])
                    g.create_dataset("grid/x", data=x)
                    g.create_dataset("grid/y", data=y)
                    g.create_dataset("grid/t", data=t)
            for key, val in attrs.items():
                if val is None:
                    continue
                arr = np.asarray(val)
                if arr.ndim == 0:
                    f.attrs[key] = val
                else:
                    f.create_dataset(f"params/{key}", data=arr)
            if system == "burgers" and "nu" in attrs:
                f.attrs["Nu"] = float(attrs["nu"])
            for name in ("train", "val", "test"):
                f.create_dataset(f"splits/{name}", data=np.asarray(splits.get(name, []), dtype=np.int64))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def simulate_to_file(
    system: str, path: str | os.PathLike[str], n: int, seed: int, dtype: Any = np.float64, **settings: Any
) -> Path:
    """Simulate ``n`` samples of ``system`` (registry defaults overridden by ``settings``) and write them."""
    from physdiff.systems.pde_registry import get_pde_system

    sim = get_pde_system(system).simulate(n, seed, **settings)
    arrays = {"u": sim.fields}
    if sim.coefficient is not None:
        arrays["a"] = sim.coefficient
    return write_pde(path, sim.system, arrays, sim.coords, sim.parameters, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------


def _detect_layout(f: h5py.File) -> str:
    keys = set(f.keys())
    if "tensor" in keys and "nu" in keys and all(isinstance(f[k], h5py.Dataset) for k in ("tensor", "nu")):
        return "darcy"
    if "tensor" in keys and isinstance(f["tensor"], h5py.Dataset) and f["tensor"].ndim == 3:
        return "1d"
    digit = [k for k in keys if k.isdigit()]
    if digit and isinstance(f[sorted(digit)[0]], h5py.Group) and "data" in f[sorted(digit)[0]]:
        return "2d-time"
    return "unknown"


def load_pde(
    path: str | os.PathLike[str],
    system: str | None = None,
    downsample_x: int = 1,
    downsample_t: int = 1,
    max_samples: int | None = None,
) -> FieldData:
    """Load a physdiff or PDEBench HDF5 file.

    Args:
        path: the file.
        system: expected system; inferred from the ``system`` attribute or the file name if omitted
            (required for a 1-D file carrying neither).
        downsample_x: keep every ``k``-th point along each spatial axis.
        downsample_t: keep every ``k``-th frame.
        max_samples: read at most this many samples (the first ones).

    Raises:
        PDEBenchFormatError: unsupported layout (the datasets found are listed), inconsistent grid
            sizes, NaN/inf values, non-positive viscosity or permeability -- naming file, key and shape.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    downsample_x = _check_downsample("downsample_x", downsample_x)
    downsample_t = _check_downsample("downsample_t", downsample_t)
    want = None if system is None else _canonical(system, f"{path}: argument 'system': ")
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise PDEBenchFormatError(f"{path}: not a readable HDF5 file ({e})") from e
    with h5 as f:
        layout = _detect_layout(f)
        if layout == "unknown":
            raise PDEBenchFormatError(
                f"{path}: layout matches no supported format (1-D 'tensor' [N,T,X]; Darcy 'nu' + 'tensor' "
                f"[N,1,X,Y]; 2-D groups 'NNNN/data' [T,X,Y,C]); found: {_describe(f)}"
            )
        attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
        origin = "physdiff" if "system" in attrs else "pdebench"
        stored = attrs.get("system")
        if stored:
            try:
                guess: str | None = _canonical(str(stored))
            except ValueError:
                raise PDEBenchFormatError(
                    f"{path}: attribute 'system' = {stored!r} is not a supported system; valid names: "
                    f"{', '.join(SYSTEMS)}"
                ) from None
        else:
            guess = _system_from_name(path.name)
        layout_system = {"darcy": "darcy", "2d-time": "shallow-water"}.get(layout)
        if stored and (guess != layout_system if layout_system is not None else guess not in _ONE_D):
            raise PDEBenchFormatError(
                f"{path}: attribute 'system' = {stored!r} contradicts the file's {layout} layout; found: {_describe(f)}"
            )
        if layout_system is not None:
            found = layout_system
        else:
            found = guess if guess in _ONE_D else None
        if want is not None:
            if found is not None and want != found:
                raise PDEBenchFormatError(f"{path}: asked for system {want!r} but the file holds {found!r} data")
            if found is None and want not in _ONE_D:
                raise PDEBenchFormatError(f"{path}: a 1-D 'tensor' file cannot hold {want!r} data")
            found = want
        if found is None:
            raise PDEBenchFormatError(
                f"{path}: 1-D 'tensor' file without a 'system' attribute and no system in the file name; "
                "pass system='advection' or 'burgers'"
            )

        params: dict[str, Any] = {k: v for k, v in attrs.items() if k not in ("system", "format", "config")}
        if "params" in f:
            for k in f["params"]:
                params[k] = f["params"][k][()]
        messages: list[str] = []
        if found == "darcy":
            data = _load_darcy(f, path, downsample_x, max_samples, params)
        elif found in _ONE_D:
            data = _load_1d(f, path, found, downsample_x, downsample_t, max_samples, params)
        else:
            data = _load_sw(f, path, downsample_x, downsample_t, max_samples, params, messages)
        n = data.fields.shape[0]
        if "splits" in f:
            splits = {}
            for k in ("train", "val", "test"):
                key = f"splits/{k}"
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    raise PDEBenchFormatError(f"{path}: missing split dataset {key!r}; found: {_describe(f)}")
                raw = np.asarray(f[key][()])
                if raw.size and (raw.dtype.kind not in "iu" or raw.min() < 0):
                    raise PDEBenchFormatError(f"{path}: {key!r} must hold non-negative integer sample indices")
                v = raw.astype(np.int64).ravel()
                splits[k] = v[v < n]
            split_source = "file"
        else:
            n_total = n
            splits = default_splits(n_total)
            split_source = "pdebench-convention"
            messages.append("no splits in the file: PDEBench convention used (first 10 % of samples = test)")
    data.splits = splits
    data.split_source = split_source
    data.messages = messages + data.messages
    data.source = str(path)
    data.origin = origin
    return data


def _param_from(params: dict[str, Any], path: Path, keys: tuple[str, ...]) -> tuple[float | None, str]:
    """The first of ``keys`` found in the attributes/``params/`` (else in the file name) and where it came from."""
    for k in keys:
        if k in params:
            arr = np.asarray(params[k])
            if arr.size != 1 or arr.dtype.kind not in "iuf":
                raise PDEBenchFormatError(f"{path}: parameter {k!r} must be a single number, got {params[k]!r}")
            return float(arr.reshape(())), f"attribute {k!r}"
    from_name = _params_from_name(path.name)
    for k in keys:
        if k.lower() in from_name:
            return from_name[k.lower()], f"file name {path.name!r}"
    return None, ""


def _load_1d(
    f: h5py.File,
    path: Path,
    system: str,
    sx: int,
    st: int,
    max_samples: int | None,
    params: dict[str, Any],
) -> FieldData:
    ds = f["tensor"]
    n_all, n_t, n_x = ds.shape
    if min(ds.shape) < 1:
        raise PDEBenchFormatError(f"{path}: dataset 'tensor' [N, T, X] is empty (shape {ds.shape})")
    for key in ("x-coordinate", "t-coordinate"):
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise PDEBenchFormatError(f"{path}: 1-D layout needs dataset {key!r}; found: {_describe(f)}")
    x_all = np.asarray(f["x-coordinate"][()], dtype=np.float64).ravel()
    _check_len(x_all, n_x, path, "x-coordinate", "along x (tensor axis 2)")
    _finite(x_all, path, "x-coordinate")
    t_raw = np.asarray(f["t-coordinate"][()], dtype=np.float64).ravel()
    _finite(t_raw, path, "t-coordinate")
    t_all = _frames_from_t(t_raw, n_t, path, "t-coordinate")
    _check_uniform(x_all, path, "x-coordinate")
    _check_uniform(t_all, path, "t-coordinate")
    n = n_all if max_samples is None else min(n_all, max_samples)
    u = np.asarray(ds[:n, _stride_idx(n_t, st), _stride_idx(n_x, sx)], dtype=np.float64)
    _finite(u, path, "tensor")
    out_params = {k: v for k, v in params.items() if k not in ("beta", "Nu", "nu")}
    if system == "advection":
        beta, src = _param_from(params, path, ("beta",))
        if beta is None:
            raise PDEBenchFormatError(f"{path}: advection speed not found (attribute 'beta' or 'beta<value>' in name)")
        if not np.isfinite(beta):
            raise PDEBenchFormatError(f"{path}: attribute 'beta' is not finite ({beta})")
        out_params["beta"] = beta
    else:
        nu, src = _param_from(params, path, ("nu", "Nu"))
        if nu is None:
            raise PDEBenchFormatError(f"{path}: Burgers viscosity not found (attribute 'Nu' or 'Nu<value>' in name)")
        if not (np.isfinite(nu) and nu > 0):
            raise PDEBenchFormatError(f"{path}: Burgers viscosity 'Nu' must be > 0, got {nu} (from {src})")
        out_params["nu"] = nu
    coords = {"x": x_all[::sx], "t": t_all[::st]}
    return FieldData(system=system, fields=u, coords=coords, parameters=out_params)


def _load_darcy(f: h5py.File, path: Path, sx: int, max_samples: int | None, params: dict[str, Any]) -> FieldData:
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
    coords: dict[str, np.ndarray] = {}
    for key, n_pts, name in (("x-coordinate", n_x, "x"), ("y-coordinate", n_y, "y")):
        if key in f:
            c = np.asarray(f[key][()], dtype=np.float64).ravel()
            _check_len(c, n_pts, path, key, f"along {name}")
            _finite(c, path, key)
            _check_uniform(c, path, key)
        else:
            c = (np.arange(n_pts) + 0.5) / n_pts
        coords[name] = c[::sx]
    n = n_all if max_samples is None else min(n_all, max_samples)
    u = np.asarray(ds_u[:n, 0, _stride_idx(n_x, sx), _stride_idx(n_y, sx)], dtype=np.float64)
    a = np.asarray(ds_a[:n, _stride_idx(n_x, sx), _stride_idx(n_y, sx)], dtype=np.float64)
    _finite(u, path, "tensor")
    _finite(a, path, "nu")
    _check_permeability(a, ds_a.shape, path, 0)
    if sx > 1:  # the strided read skips points: check the loaded samples at full resolution, in chunks
        per = max(1, (1 << 22) // max(1, n_x * n_y))
        for s in range(0, n, per):
            full = np.asarray(ds_a[s : min(n, s + per)], dtype=np.float64)
            _finite(full, path, "nu")
            _check_permeability(full, ds_a.shape, path, s)
    fsrc, src = _param_from(params, path, ("f", "beta"))
    if fsrc is not None and not np.isfinite(fsrc):
        raise PDEBenchFormatError(f"{path}: Darcy source f from {src} is not finite ({fsrc})")
    out_params = {k: v for k, v in params.items() if k not in ("f", "beta")}
    out_params["f"] = 1.0 if fsrc is None else fsrc
    return FieldData(system="darcy", fields=u, coords=coords, parameters=out_params, coefficient=a)


def _check_permeability(a: np.ndarray, shape: tuple[int, ...], path: Path, offset: int) -> None:
    """Raise if the permeability block ``a`` (samples ``offset...``) has a value ``<= 0``."""
    if np.any(a <= 0):
        i, j, k = (int(v) for v in np.unravel_index(int(np.argmin(a)), a.shape))
        raise PDEBenchFormatError(
            f"{path}: permeability 'nu' (shape {shape}) must be > 0, min is {float(a.min()):.3g} "
            f"at sample {offset + i}, point ({j}, {k}) of the stored grid"
        )


def _load_sw(
    f: h5py.File,
    path: Path,
    sx: int,
    st: int,
    max_samples: int | None,
    params: dict[str, Any],
    messages: list[str],
) -> FieldData:
    names = sorted(k for k in f.keys() if k.isdigit())
    if max_samples is not None:
        names = names[:max_samples]
    for name in names:
        for sub in ("data", "grid/x", "grid/y", "grid/t"):
            key = f"{name}/{sub}"
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise PDEBenchFormatError(f"{path}: missing dataset {key!r}; found: {_describe(f)}")
    first = f[names[0]]
    shape = first["data"].shape
    if len(shape) != 4 or shape[-1] not in _SW_CHANNELS:
        raise PDEBenchFormatError(
            f"{path}: '{names[0]}/data' must have shape [T, X, Y, C] with C = 3 (h, hu, hv) or 1 (h), got {shape}"
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
        k = f"{names[0]}/grid/{key}"
        c = np.asarray(f[k][()], dtype=np.float64).ravel()
        _check_len(c, n_pts, path, k, f"along {key}")
        _finite(c, path, k)
        _check_uniform(c, path, k)
        coords[key] = c[::sx]
    kt = f"{names[0]}/grid/t"
    t_raw = np.asarray(f[kt][()], dtype=np.float64).ravel()
    _finite(t_raw, path, kt)
    t = _frames_from_t(t_raw, n_t, path, kt)
    _check_uniform(t, path, kt)
    coords["t"] = t[::st]
    out = []
    for name in names:
        key = f"{name}/data"
        ds = f[key]
        if ds.shape != shape:
            raise PDEBenchFormatError(
                f"{path}: inconsistent grid sizes: {key!r} has shape {ds.shape}, '{names[0]}/data' has {shape}"
            )
        block = np.asarray(ds[_stride_idx(n_t, st), _stride_idx(n_x, sx), _stride_idx(n_y, sx)], dtype=np.float64)
        _finite(block, path, key)
        if np.any(block[..., 0] <= 0):
            raise PDEBenchFormatError(
                f"{path}: water depth h ({key!r} channel 0) must be > 0, min is {float(block[..., 0].min()):.3g}"
            )
        out.append(block)
    q = np.moveaxis(np.stack(out), -1, 2)  # [N, T, C, X, Y]
    params = dict(params)
    params.setdefault("g", 1.0)
    g_arr = np.asarray(params["g"])
    if g_arr.size != 1 or g_arr.dtype.kind not in "iuf" or not (np.isfinite(g_arr).all() and g_arr.item() > 0):
        raise PDEBenchFormatError(f"{path}: gravity attribute 'g' must be a finite number > 0, got {params['g']!r}")
    priors = n_c == 3
    if not priors:
        msg = (
            f"{path}: shallow-water data store h only (C=1, PDEBench layout): the mass and momentum "
            "priors/residuals need (h, hu, hv) and are unavailable for this file"
        )
        messages.append(msg)
        warnings.warn(msg, stacklevel=3)
    return FieldData(
        system="shallow-water",
        fields=q,
        coords=coords,
        parameters=params,
        channels=_SW_CHANNELS[n_c],
        priors_available=priors,
    )
