"""What the HDF5 readers and writers of the data formats share (PDEBench, The Well, particle files).

* :func:`atomic_write`: a new file appears at its path only once it is completely written (through
  :mod:`physdiff.outputs`: a temporary file in the same folder, fsync, rename; nothing left on error).
* :func:`describe`: the datasets of a file with their shapes, for error messages.
* :func:`nonfinite`: how many NaN/inf values an array holds and where the first is, for the finite
  checks that name the file and the key.
* :func:`decode_attr`: an attribute value as a plain Python value (``bytes`` decoded, numpy scalars
  unwrapped).
* :func:`check_downsample`: validation of a reader's ``downsample_x`` / ``downsample_t`` argument.
* :class:`GridSpacing`: ``dt``, ``dx``, ``dy`` of loaded data from their ``coords``.

Each format keeps its own error class and message wording; these helpers hold the logic they share.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physdiff.outputs import WriteError, atomic_path, os_reason

__all__ = ["GridSpacing", "atomic_write", "check_downsample", "content_sha256", "decode_attr", "describe", "nonfinite"]


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """Open a new HDF5 file for writing that replaces ``path`` only when the ``with`` block completes.

    Through :func:`physdiff.outputs.atomic_path`: a hidden temporary file in the destination folder
    (created if needed, with the user's umask), fsynced and renamed into place; a symbolic link or
    non-regular file at ``path`` is refused, and if the block raises the temporary file is removed and
    ``path`` is left as it was (OS errors name ``path``).
    """
    with atomic_path(path) as tmp:
        try:
            with h5py.File(tmp, "w") as f:
                yield f
        except OSError as e:
            if isinstance(e, WriteError):
                raise
            raise WriteError(path, os_reason(e), e.errno) from None


def content_sha256(data: Any) -> str:
    """The sha256 of the arrays a loaded data set holds (its fields, positions, masses, coordinates, splits,
    ...: every numpy array among its attributes, in dicts too, with its name, dtype and shape), computed once
    at load and recorded in a run's ``config.yaml``: a data file whose content changed is then refused."""
    h = hashlib.sha256()

    def visit(name: str, value: Any) -> None:
        if isinstance(value, np.ndarray) and value.dtype != object:
            a = np.ascontiguousarray(value)
            h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(memoryview(a).cast("B"))
        elif isinstance(value, Mapping):
            for k in sorted(value, key=str):
                visit(f"{name}.{k}", value[k])

    items = vars(data) if hasattr(data, "__dict__") else {}
    for key in sorted(items):
        visit(key, items[key])
    return h.hexdigest()


#: the share of the available memory a read may take when ``data.max_bytes`` is not set
MEMORY_FRACTION = 0.5


def default_max_bytes() -> int:
    """The read budget when ``data.max_bytes`` is not set: :data:`MEMORY_FRACTION` of the memory available
    now (``/proc/meminfo``'s MemAvailable, else the free physical pages), at least 256 MiB."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 8 << 30
    return max(int(avail * MEMORY_FRACTION), 256 << 20)


def _inside(folder: Path, name: str) -> bool:
    target = (folder / name).resolve()
    return target == folder or folder in target.parents


def check_links(f: h5py.Group, where: str, keys: Any = None) -> None:
    """Refuse external links (of ``keys``, default: every name in the file, groups walked without following
    external links) that point outside the folder of the file ``f``: a data file reads only files beside it."""
    folder = Path(f.file.filename).resolve().parent
    if keys is None:
        keys, stack = [], [""]
        while stack and len(keys) < 100_000:
            group = stack.pop()
            for name in f[group or "/"]:
                key = f"{group}/{name}" if group else name
                keys.append(key)
                link = f.get(key, getlink=True)
                if isinstance(link, (h5py.HardLink, h5py.SoftLink)) and isinstance(f.get(key), h5py.Group):
                    stack.append(key)
    for key in keys:
        link = f.get(key, getlink=True)
        if isinstance(link, h5py.ExternalLink) and not _inside(folder, link.filename):
            raise ValueError(
                f"{where}: '{key}' is an external link to {link.filename}, outside the file's folder {folder}; "
                "physdiff reads only files beside the data file (copy the linked data into it)"
            )


def check_read(ds: h5py.Dataset, where: str, key: str, *, rows: int | None = None, max_bytes: int | None = None) -> int:
    """Before reading ``rows`` rows (default: all) of ``ds``: refuse a virtual dataset whose rows are not all
    mapped to a source (they would read as the fill value) or whose sources lie outside the file's folder,
    raw external storage outside it, and a read larger than ``max_bytes`` (default :func:`default_max_bytes`).
    Only the declared shape and dtype are used: nothing is read. Returns the bytes the read takes (as float64)."""
    folder = Path(ds.file.filename).resolve().parent
    shape = ds.shape or ()
    n = shape[0] if shape else 1
    n = n if rows is None else min(n, rows)
    if ds.is_virtual:
        covered = []
        for vs in ds.virtual_sources():
            if vs.file_name not in (".", "") and not _inside(folder, vs.file_name):
                raise ValueError(
                    f"{where}: dataset '{key}' is virtual with a source {vs.file_name} outside the file's folder "
                    f"{folder}; physdiff reads only files beside the data file"
                )
            if vs.file_name not in (".", "") and not (folder / vs.file_name).is_file():
                raise ValueError(f"{where}: dataset '{key}' is virtual and its source file {vs.file_name} is missing")
            lo, hi = vs.vspace.get_select_bounds()
            covered.append((lo[0] if lo else 0, (hi[0] if hi else 0) + 1))
        end = 0
        for lo, hi in sorted(covered):
            if lo > end:
                break
            end = max(end, hi)
        if end < n:
            raise ValueError(
                f"{where}: dataset '{key}' is virtual and its rows {end}..{n - 1} of {shape[0]} are mapped to no "
                "source (they would read as the fill value); map every row or keep only the mapped ones"
            )
    for name, _, _ in ds.external or ():
        name = name.decode() if isinstance(name, bytes) else str(name)
        if not _inside(folder, name):
            raise ValueError(f"{where}: dataset '{key}' stores its data in {name}, outside the file's folder {folder}")
    per_row = int(np.prod(shape[1:], dtype=np.float64)) if len(shape) > 1 else 1
    nbytes = int(n) * per_row * max(ds.dtype.itemsize, 8)
    budget = default_max_bytes() if max_bytes is None else int(max_bytes)
    if nbytes > budget:
        raise ValueError(
            f"{where}: dataset '{key}' declares shape {shape}; reading {n} rows of it takes {_size(nbytes)}, more "
            f"than the read budget {_size(budget)} (data.max_bytes; default {MEMORY_FRACTION:.0%} of the available "
            "memory); read fewer samples with data.max_samples=N or raise data.max_bytes"
        )
    return nbytes


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} B"


def check_reads(
    f: h5py.Group,
    where: str,
    keys: Any,
    *,
    rows: int | Mapping[str, int | None] | None = None,
    max_bytes: int | None = None,
) -> int:
    """:func:`check_links` and :func:`check_read` for the datasets ``keys`` of ``f`` that exist, with one
    budget for all of them together; ``rows``: the rows read of each (one count, or per key)."""
    keys = [k for k in keys if f.get(k, getlink=True) is not None]
    check_links(f, where, keys)
    budget = default_max_bytes() if max_bytes is None else int(max_bytes)
    sizes = {}
    for k in keys:
        ds = f.get(k)
        if isinstance(ds, h5py.Dataset):
            n = rows.get(k) if isinstance(rows, Mapping) else rows
            sizes[k] = check_read(ds, where, k, rows=n, max_bytes=budget)
    total = sum(sizes.values())
    if total > budget:
        raise ValueError(
            f"{where}: reading {', '.join(sizes)} takes {_size(total)} together, more than the read budget "
            f"{_size(budget)} (data.max_bytes; default {MEMORY_FRACTION:.0%} of the available memory); read fewer "
            "samples with data.max_samples=N or raise data.max_bytes"
        )
    return total


def describe(f: h5py.Group, limit: int = 12) -> str:
    """The datasets under ``f`` as ``"name (shape), ..."`` (at most ``limit``, then a count of the rest);
    the top-level groups when there are no datasets."""
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


def nonfinite(arr: np.ndarray) -> tuple[int, tuple[int, ...] | None]:
    """The number of NaN/inf entries of ``arr`` and the index of the first one (``None`` when all are
    finite). ``arr`` must be numeric (``np.isfinite`` raises ``TypeError`` otherwise)."""
    bad = ~np.isfinite(arr)
    count = int(np.count_nonzero(bad))
    return count, (tuple(int(i) for i in np.argwhere(bad)[0]) if count else None)


def decode_attr(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value: ``bytes`` decoded to ``str``, numpy scalars
    unwrapped with ``.item()``; anything else (arrays, str) unchanged."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_downsample(name: str, step: Any) -> int:
    """``step`` as an ``int`` if it is an integer ``>= 1`` (``True``/``False`` are refused), else a
    ``ValueError`` naming the argument ``name``."""
    try:
        ok = not isinstance(step, bool) and int(step) == step and step >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= 1, got {step!r}")
    return int(step)


class GridSpacing:
    """Mixin for loaded data with uniform coordinate arrays ``coords`` (``t``, ``x``, ``y`` as present):
    the spacings ``dt``, ``dx``, ``dy`` (``None`` where the axis is absent or has a single point)."""

    coords: Mapping[str, np.ndarray]

    def _spacing(self, key: str) -> float | None:
        c = self.coords.get(key)
        return float(c[1] - c[0]) if c is not None and len(c) > 1 else None

    @property
    def dt(self) -> float | None:
        """Time between stored frames (``None`` for steady problems)."""
        return self._spacing("t")

    @property
    def dx(self) -> float | None:
        """Grid spacing along the first spatial axis."""
        return self._spacing("x")

    @property
    def dy(self) -> float | None:
        """Grid spacing along the second spatial axis."""
        return self._spacing("y")
