"""HDF5 storage of particle data sets (and of generated samples, in the same layout).

Layout of a file::

    positions        float64 [N, L, K, D]
    velocities       float64 [N, L, K, D]   (saved at the same instants as positions)
    masses           float64 [N, K]          (> 0)
    edges            float64 [N, K, K]       (spring systems only; symmetric 0/1, zero diagonal)
    source_indices   int64   [N]             (optional, samples files: rows of the reference file)
    splits/train, splits/val, splits/test    int64 index arrays (default 0.8/0.1/0.1, seeded shuffle)
    attributes:
        system                 "three-body" | "five-spring"
        G / kappa, dt          physical constants named as in the equations (dt = time between frames)
        seed, n, substeps, …   the simulator's settings
        floor_energy_error, floor_momentum_error, floor_dynamic_error
                               the data set's own floor: mean over samples of the metrics of
                               :mod:`physdiff.evaluation.particle_metrics` with prediction = reference

Writes are atomic (a temporary file in the same folder, then :func:`os.replace`). Reads validate every
array and report the file, the key and the shape of anything wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from physdiff.data.hdf5 import atomic_write, decode_attr, nonfinite
from physdiff.systems.particle_system import ParticleSystem
from physdiff.systems.registry import PARTICLE_SYSTEMS, get_system

__all__ = [
    "ParticleData",
    "load_particles",
    "make_splits",
    "simulate_to_file",
    "validate_particle_arrays",
    "write_particles",
]

ARRAY_KEYS = ("positions", "velocities", "masses", "edges", "source_indices")
SPLIT_NAMES = ("train", "val", "test")
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
FLOOR_ATTRS = {
    "energy_error": "floor_energy_error",
    "momentum_error": "floor_momentum_error",
    "dynamic_error": "floor_dynamic_error",
}


@dataclass
class ParticleData:
    """A particle data set (or a set of generated samples) in memory.

    Attributes:
        positions, velocities: ``[N, L, K, D]`` float64.
        masses: ``[N, K]`` float64.
        edges: ``[N, K, K]`` float64 for spring systems, else ``None``.
        system: registry name of the system.
        constants: physical constants (``G`` or ``kappa``, and ``dt``).
        attrs: every attribute of the file (settings, floors, …).
        splits: ``{"train", "val", "test"}`` int64 index arrays (empty dict if the file has none).
        source_indices: ``[N]`` int64 rows of a reference file (samples files), else ``None``.
        path: the file it was read from, if any.
    """

    positions: np.ndarray
    velocities: np.ndarray
    masses: np.ndarray
    edges: np.ndarray | None
    system: str
    constants: dict[str, float]
    attrs: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    source_indices: np.ndarray | None = None
    path: str | None = None

    @property
    def n(self) -> int:
        """Number of trajectories N."""
        return int(self.positions.shape[0])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, L, K, D)."""
        return tuple(self.positions.shape)  # type: ignore[return-value]

    def get_system(self) -> ParticleSystem:
        """The registry system with this data set's constants."""
        return get_system(self.system).with_constants(**self.constants)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ParticleData:
        """The trajectories ``indices`` (splits are dropped, source indices kept)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < -self.n or idx.max() >= self.n):
            raise IndexError(f"{self.path or 'data'}: indices out of range for N = {self.n}")
        return dataclasses.replace(
            self,
            positions=self.positions[idx],
            velocities=self.velocities[idx],
            masses=self.masses[idx],
            edges=None if self.edges is None else self.edges[idx],
            source_indices=None if self.source_indices is None else self.source_indices[idx],
            splits={},
        )

    def split(self, name: str) -> ParticleData:
        """The ``train``/``val``/``test`` part."""
        if name not in self.splits:
            raise KeyError(f"{self.path or 'data'}: no split {name!r}; available: {sorted(self.splits)}")
        return self.subset(self.splits[name])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays as a dict in the file's layout (``edges``/``source_indices`` only when present)."""
        out = {"positions": self.positions, "velocities": self.velocities, "masses": self.masses}
        if self.edges is not None:
            out["edges"] = self.edges
        if self.source_indices is not None:
            out["source_indices"] = self.source_indices
        return out


# ------------------------------------------------------------------------------------------ validation
def _shape(a: np.ndarray) -> str:
    return "[" + ", ".join(str(s) for s in a.shape) + "]"


def validate_particle_arrays(
    data: Mapping[str, np.ndarray], system: ParticleSystem | None = None, where: str = "data"
) -> None:
    """Check keys, ranks, consistent N/L/K/D, finiteness, masses > 0 and the spring graph.

    Raises:
        KeyError: a required key is missing (``edges`` is required when ``system.has_edges``).
        ValueError: wrong rank or shape, inconsistent sizes, NaN/inf, mass ≤ 0, invalid edges.
        The messages name ``where`` (the file), the key and the shape.
    """
    required = ["positions", "velocities", "masses"]
    if system is not None and system.has_edges:
        required.append("edges")
    for key in required:
        if key not in data:
            raise KeyError(f"{where}: missing dataset {key!r} (required: {', '.join(required)})")
    unknown = set(data) - set(ARRAY_KEYS)
    if unknown:
        raise KeyError(f"{where}: unknown dataset(s) {sorted(unknown)}; expected {', '.join(ARRAY_KEYS)}")
    R = np.asarray(data["positions"])
    if R.ndim != 4:
        raise ValueError(f"{where}: 'positions' has shape {_shape(R)} (rank {R.ndim}); expected [N, L, K, D]")
    N, L, K, D = R.shape
    expected = {
        "velocities": (N, L, K, D),
        "masses": (N, K),
        "edges": (N, K, K),
        "source_indices": (N,),
    }
    names = {"velocities": "[N, L, K, D]", "masses": "[N, K]", "edges": "[N, K, K]", "source_indices": "[N]"}
    for key, shape in expected.items():
        if key not in data:
            continue
        a = np.asarray(data[key])
        if a.shape != shape:
            raise ValueError(
                f"{where}: {key!r} has shape {_shape(a)}; expected {names[key]} = "
                f"[{', '.join(map(str, shape))}] to match 'positions' {_shape(R)} (N, L, K, D)"
            )
    for key in ("positions", "velocities", "masses", "edges"):
        if key in data:
            a = np.asarray(data[key])
            if not np.issubdtype(a.dtype, np.number):
                raise ValueError(f"{where}: {key!r} has non-numeric dtype {a.dtype}")
            bad, first = nonfinite(a)
            if bad:
                raise ValueError(f"{where}: {key!r} {_shape(a)} contains {bad} NaN/inf value(s), first at {first}")
    m = np.asarray(data["masses"])
    if (m <= 0).any():
        first = tuple(int(i) for i in np.argwhere(m <= 0)[0])
        raise ValueError(f"{where}: 'masses' {_shape(m)} must be > 0; found {m[first]} at {first}")
    if "edges" in data:
        e = np.asarray(data["edges"])
        if not np.isin(e, (0, 1)).all():
            raise ValueError(f"{where}: 'edges' {_shape(e)} must contain only 0 and 1")
        if not np.array_equal(e, np.swapaxes(e, -1, -2)):
            raise ValueError(f"{where}: 'edges' {_shape(e)} must be symmetric")
        if np.diagonal(e, axis1=-2, axis2=-1).any():
            raise ValueError(f"{where}: 'edges' {_shape(e)} must have a zero diagonal")
    if "source_indices" in data:
        s = np.asarray(data["source_indices"])
        if not np.issubdtype(s.dtype, np.integer) or (s < 0).any():
            raise ValueError(f"{where}: 'source_indices' {_shape(s)} must be non-negative integers")


# --------------------------------------------------------------------------------------------- helpers
def make_splits(n: int, seed: int = 0, fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS) -> dict[str, np.ndarray]:
    """Seeded random train/val/test split of ``range(n)``: sorted int64 index arrays.

    Sizes: round(f_train n), round(f_val n), and the rest for test. The shuffle uses its own stream
    ``default_rng([seed, 1])``, independent of the simulation's ``default_rng(seed)``.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    perm = np.random.default_rng([seed, 1]).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = min(int(round(fractions[1] * n)), n - n_train)
    parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    return {name: np.sort(p).astype(np.int64) for name, p in zip(SPLIT_NAMES, parts, strict=True)}


def _attr_value(value: Any) -> Any:
    """Make an attribute value storable by h5py (None, dicts, lists of mixed types go to JSON)."""
    if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return np.asarray(value)
    return json.dumps(value)


def _resolve_constants(system: ParticleSystem, attrs: Mapping[str, Any], where: str) -> dict[str, float]:
    """Constants from ``attrs``; a missing one falls back to the documented default with a warning."""
    constants = {}
    for name, default in system.DEFAULT_CONSTANTS.items():
        if name in attrs:
            constants[name] = float(attrs[name])
        else:
            warnings.warn(
                f"{where}: attribute {name!r} ({system.CONSTANT_DOCS.get(name, 'constant')}) is missing; "
                f"using the {system.name} default {name} = {default}",
                UserWarning,
                stacklevel=3,
            )
            constants[name] = float(default)
    return constants


def _system_by_name(name: str, where: str) -> ParticleSystem:
    try:
        return get_system(name)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


# ----------------------------------------------------------------------------------------------- write
def write_particles(
    path: str | os.PathLike[str],
    data: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    *,
    splits: Mapping[str, np.ndarray] | Literal["auto"] | None = "auto",
    floor: bool = True,
) -> Path:
    """Validate and atomically write a particle file.

    Args:
        path: destination ``.h5`` file (its folder is created if needed).
        data: ``positions``, ``velocities``, ``masses`` (and ``edges`` for springs, optionally
            ``source_indices``), converted to float64 (int64 for ``source_indices``).
        attrs: file attributes; must contain ``system``. Missing constants are filled with the system's
            defaults (with a warning).
        splits: explicit ``{"train", "val", "test"}`` index arrays, ``"auto"`` for the default seeded
            0.8/0.1/0.1 split (seed ``attrs["seed"]``, else 0), or ``None`` for no ``splits`` group.
        floor: compute and store the ``floor_*`` attributes of these arrays (replacing any in ``attrs``).

    Returns:
        The path written.
    """
    path = Path(path)
    where = str(path)
    if "system" not in attrs:
        raise KeyError(f"{where}: attrs must contain 'system' (one of {', '.join(PARTICLE_SYSTEMS)})")
    system = _system_by_name(str(attrs["system"]), where)
    validate_particle_arrays(data, system, where)
    arrays = {
        k: np.ascontiguousarray(v, dtype=np.int64 if k == "source_indices" else np.float64) for k, v in data.items()
    }
    if not system.has_edges:
        arrays.pop("edges", None)
    all_attrs = dict(attrs)
    constants = _resolve_constants(system, attrs, where)
    all_attrs.update(constants)
    N = arrays["positions"].shape[0]
    if floor and arrays["positions"].shape[1] >= 3:
        errors = system.with_constants(**constants).conservation_errors(
            arrays["positions"], arrays["velocities"], arrays["masses"], arrays.get("edges")
        )
        for key, value in errors.items():
            all_attrs[FLOOR_ATTRS[key]] = float(np.mean(value))  # always recomputed: never inherit a stale floor
    if isinstance(splits, str):
        if splits != "auto":
            raise ValueError(f"splits must be a mapping, 'auto' or None, got {splits!r}")
        splits = make_splits(N, int(attrs.get("seed", 0)))
    if splits is not None:
        for name, idx in splits.items():
            idx = np.asarray(idx)
            if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= N)):
                raise ValueError(f"{where}: split {name!r} must be 1-D indices in [0, {N})")

    with atomic_write(path) as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        if splits is not None:
            group = f.create_group("splits")
            for name, idx in splits.items():
                group.create_dataset(name, data=np.asarray(idx, dtype=np.int64))
        for key, value in all_attrs.items():
            f.attrs[key] = _attr_value(value)
    return path


# ------------------------------------------------------------------------------------------------ load
def load_particles(path: str | os.PathLike[str], system: str | None = None) -> ParticleData:
    """Read and validate a particle file.

    Args:
        path: the ``.h5`` file.
        system: system name, required when the file has no ``system`` attribute; if both are given they
            must agree.

    Raises:
        FileNotFoundError, KeyError, ValueError with the file, key and shape named.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such particle file")
    with h5py.File(path, "r") as f:
        attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
        arrays = {k: f[k][()] for k in ARRAY_KEYS if k in f and isinstance(f[k], h5py.Dataset)}
        extra = [k for k in f if k not in ARRAY_KEYS and k != "splits"]
        splits = {}
        if "splits" in f:
            splits = {k: np.asarray(f["splits"][k][()], dtype=np.int64) for k in f["splits"]}
    file_system = attrs.get("system")
    if file_system is None and system is None:
        raise ValueError(
            f"{where}: the file has no 'system' attribute; pass --system NAME "
            f"(system=NAME in Python), one of: {', '.join(PARTICLE_SYSTEMS)}"
        )
    if file_system is not None and system is not None and str(file_system) != system:
        raise ValueError(f"{where}: the file's system is {file_system!r} but {system!r} was requested")
    name = str(file_system if file_system is not None else system)
    sys_obj = _system_by_name(name, where)
    if extra:
        warnings.warn(f"{where}: ignoring unknown entries {extra}", UserWarning, stacklevel=2)
    validate_particle_arrays(arrays, sys_obj, where)
    constants = _resolve_constants(sys_obj, attrs, where)
    N = arrays["positions"].shape[0]
    for split_name, idx in splits.items():
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= N)):
            raise ValueError(f"{where}: 'splits/{split_name}' must be 1-D indices in [0, {N})")
    attrs["system"] = name
    return ParticleData(
        positions=np.asarray(arrays["positions"], dtype=np.float64),
        velocities=np.asarray(arrays["velocities"], dtype=np.float64),
        masses=np.asarray(arrays["masses"], dtype=np.float64),
        edges=np.asarray(arrays["edges"], dtype=np.float64) if sys_obj.has_edges else None,
        system=name,
        constants=constants,
        attrs=attrs,
        splits=splits,
        source_indices=(np.asarray(arrays["source_indices"], dtype=np.int64) if "source_indices" in arrays else None),
        path=where,
    )


# -------------------------------------------------------------------------------------------- simulate
def simulate_to_file(
    system_name: str,
    path: str | os.PathLike[str],
    n: int,
    seed: int,
    *,
    progress: bool = False,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    constants: Mapping[str, float] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Simulate ``n`` trajectories of a particle system and write them to ``path`` (the CLI's ``simulate``).

    Args:
        system_name: ``three-body`` or ``five-spring``.
        path: output ``.h5`` file.
        n: number of trajectories.
        seed: seed of the numpy ``Generator`` (the split uses ``[seed, 1]``).
        progress: show a tqdm progress bar over time steps.
        split_fractions: train/val/test fractions.
        constants: overrides of the physical constants (``G``, ``kappa``, ``dt``).
        **settings: overrides of the system's simulation settings (``n_frames``, ``substeps``, …).

    Returns:
        A summary: path, system, n, seed, seconds, shape, constants, settings, the floor metrics and the
        observed maximum relative energy drift of the ground truth.
    """
    system = get_system(system_name, **settings)
    if constants:
        system = system.with_constants(**constants)
    start = time.perf_counter()
    data = system.simulate(n, seed, progress=progress)
    seconds = time.perf_counter() - start
    sys_settings = system.settings()
    attrs: dict[str, Any] = {
        "system": system.name,
        **system.constants,
        **sys_settings,
        "seed": int(seed),
        "n": int(n),
        "integrator_step": system.dt / sys_settings["substeps"],
        "split_fractions": np.asarray(split_fractions, dtype=np.float64),
        "created_by": "physdiff.data.particles_h5.simulate_to_file",
    }
    out = write_particles(path, data, attrs, splits=make_splits(n, seed, split_fractions))
    m = data["masses"][:, None]
    edges = data["edges"][:, None] if "edges" in data else None
    E = np.asarray(system.total_energy(data["positions"], data["velocities"], m, edges))
    drift = float((np.abs(E - E[:, :1]) / np.abs(E[:, :1])).max())
    with h5py.File(out, "r") as f:
        floors = {key: float(f.attrs[attr]) for key, attr in FLOOR_ATTRS.items() if attr in f.attrs}
    return {
        "path": str(out),
        "system": system.name,
        "n": int(n),
        "seed": int(seed),
        "shape": list(data["positions"].shape),
        "seconds": seconds,
        "trajectories_per_second": n / seconds if seconds > 0 else float("inf"),
        "constants": dict(system.constants),
        "settings": sys_settings,
        "floor": floors,
        "max_relative_energy_drift": drift,
    }
