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
from typing import Any

import h5py
import numpy as np

from physdiff.outputs import WriteError, atomic_path

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
            raise WriteError(path, e.strerror or str(e), e.errno) from None


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
