"""HDF5 storage of particle data sets (and of generated samples, in the same layout).

Layout of a file::

    positions        float64 [N, L, K, D]
    velocities       float64 [N, L, K, D]   (saved at the same instants as positions)
    masses           float64 [N, K]          (> 0)
    edges            float64 [N, K, K]       (spring systems only; symmetric 0/1, zero diagonal)
    charges          float64 [N, K]          (charged particles: finite, ±1 for ``charged``)
    clip_steps       int64   [N]             (optional diagnostics of ``charged``: force evaluations at which
                                              EGNN's force clip acted; 0 = the trajectory obeys the laws)
    source_indices   int64   [N]             (optional, samples files: rows of the reference file)
    splits/train, splits/val, splits/test    int64 index arrays (default 0.8/0.1/0.1, seeded shuffle)
    attributes:
        system                 "three-body" | "five-spring" | "charged" (a file without one is read with
                               ``system="generic"``: :class:`physdiff.systems.registry.GenericParticles`)
        G / kappa / k, dt      physical constants named as in the equations (dt = time between frames)
        seed, n, substeps, …   the simulator's settings (``None``, e.g. ``clip_force`` = None, is stored as an
                               empty attribute and read back as None)
        floor_energy_error, floor_momentum_error, floor_dynamic_error
                               the data set's own floor: mean over samples of the metrics of
                               :mod:`physdiff.evaluation.particle_metrics` with prediction = reference
        clip_fraction, clipped_trajectories, clipped_steps_mean, floor_<metric>_unclipped,
        floor_<metric>_clipped  with ``clip_steps``: the share of trajectories the force clip touched and the
                               floors over the unclipped / clipped ones (NaN where there are none)

Writes are atomic (a temporary file in the same folder, then :func:`os.replace`). Reads validate every
array and report the file, the key and the shape of anything wrong.

A user's file without a ``splits`` group gets the default seeded split written *next to it* as
``<file>.splits.json`` (:func:`side_splits`); the file itself is never modified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
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

from physdiff.data.hdf5 import atomic_write, check_reads, decode_attr, nonfinite
from physdiff.outputs import write_json
from physdiff.physics.particles import coincident
from physdiff.systems.particle_system import ParticleSystem
from physdiff.systems.registry import PARTICLE_SYSTEMS, SIMULATED_SYSTEMS, get_system

__all__ = [
    "ParticleData",
    "estimate_frame_spacing",
    "load_particles",
    "make_splits",
    "side_splits",
    "side_splits_path",
    "simulate_to_file",
    "validate_particle_arrays",
    "write_particles",
]

ARRAY_KEYS = ("positions", "velocities", "masses", "edges", "charges", "clip_steps", "source_indices")
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
        edges: ``[N, K, K]`` float64 for spring systems (and a ``generic`` file holding one), else ``None``.
        system: registry name of the system.
        constants: physical constants (``G`` or ``kappa``, and ``dt``).
        attrs: every attribute of the file (settings, floors, …).
        splits: ``{"train", "val", "test"}`` int64 index arrays (empty dict if the file has none).
        source_indices: ``[N]`` int64 rows of a reference file (samples files), else ``None``.
        path: the file it was read from, if any.
        charges: ``[N, K]`` float64 for charged systems (and a ``generic`` file holding them), else ``None``.
        clip_steps: ``[N]`` int64, the simulator's count of clipped force evaluations per trajectory, or ``None``.
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
    charges: np.ndarray | None = None
    clip_steps: np.ndarray | None = None

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

    def physics_arrays(self) -> dict[str, np.ndarray]:
        """The per-trajectory arrays ``[N, K]`` the system's physics takes (``{"charges": ...}`` for charged;
        empty for the others), as keyword arguments of ``conservation_errors``."""
        names = get_system(self.system).per_trajectory
        return {k: getattr(self, k) for k in names if getattr(self, k, None) is not None}

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
            charges=None if self.charges is None else self.charges[idx],
            clip_steps=None if self.clip_steps is None else self.clip_steps[idx],
            source_indices=None if self.source_indices is None else self.source_indices[idx],
            splits={},
        )

    def split(self, name: str) -> ParticleData:
        """The ``train``/``val``/``test`` part."""
        if name not in self.splits:
            raise KeyError(f"{self.path or 'data'}: no split {name!r}; available: {sorted(self.splits)}")
        return self.subset(self.splits[name])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays as a dict in the file's layout (``edges``/``charges``/``clip_steps``/``source_indices``
        only when present)."""
        out = {"positions": self.positions, "velocities": self.velocities, "masses": self.masses}
        for key in ("edges", "charges", "clip_steps", "source_indices"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


# ------------------------------------------------------------------------------------------ validation
def _shape(a: np.ndarray) -> str:
    return "[" + ", ".join(str(s) for s in a.shape) + "]"


def validate_particle_arrays(
    data: Mapping[str, np.ndarray], system: ParticleSystem | None = None, where: str = "data"
) -> None:
    """Check keys, ranks, consistent N/L/K/D, finiteness, masses > 0, the spring graph and the charges.

    Raises:
        KeyError: a required key is missing (``edges`` is required when ``system.has_edges``, ``charges`` when
            the system's ``per_trajectory`` names them).
        ValueError: wrong rank or shape, inconsistent sizes, NaN/inf, mass ≤ 0, invalid edges.
        The messages name ``where`` (the file), the key and the shape.
    """
    required = ["positions", "velocities", "masses"]
    if system is not None and system.has_edges:
        required.append("edges")
    if system is not None:
        required += [k for k in system.per_trajectory if k not in required]
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
        "charges": (N, K),
        "clip_steps": (N,),
        "source_indices": (N,),
    }
    names = {
        "velocities": "[N, L, K, D]",
        "masses": "[N, K]",
        "edges": "[N, K, K]",
        "charges": "[N, K]",
        "clip_steps": "[N]",
        "source_indices": "[N]",
    }
    for key, shape in expected.items():
        if key not in data:
            continue
        a = np.asarray(data[key])
        if a.shape != shape:
            raise ValueError(
                f"{where}: {key!r} has shape {_shape(a)}; expected {names[key]} = "
                f"[{', '.join(map(str, shape))}] to match 'positions' {_shape(R)} (N, L, K, D)"
            )
    for key in ("positions", "velocities", "masses", "edges", "charges"):
        if key in data:
            a = np.asarray(data[key])
            if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.bool_):
                raise ValueError(f"{where}: {key!r} has non-numeric dtype {a.dtype}")
            if np.issubdtype(a.dtype, np.complexfloating):
                raise ValueError(f"{where}: {key!r} has complex dtype {a.dtype}; particle data must be real")
            bad, first = nonfinite(a)
            if bad:
                raise ValueError(f"{where}: {key!r} {_shape(a)} contains {bad} NaN/inf value(s), first at {first}")
    m = np.asarray(data["masses"])
    if (m <= 0).any():
        first = tuple(int(i) for i in np.argwhere(m <= 0)[0])
        raise ValueError(f"{where}: 'masses' {_shape(m)} must be > 0; found {m[first]} at {first}")
    tiny = np.finfo(np.float64).tiny
    if (m < tiny).any():  # subnormal: 1/m overflows the accelerations
        first = tuple(int(i) for i in np.argwhere(m < tiny)[0])
        raise ValueError(
            f"{where}: 'masses' {_shape(m)} must be > 0 and not subnormal (>= {tiny:.3g}); found {m[first]} at {first}"
        )
    # a generic file's edges are real-valued edge attributes (EGNN: q_i q_j)
    if "edges" in data and (system is None or system.has_forces):
        e = np.asarray(data["edges"])
        if not np.isin(e, (0, 1)).all():
            raise ValueError(f"{where}: 'edges' {_shape(e)} must contain only 0 and 1")
        if not np.array_equal(e, np.swapaxes(e, -1, -2)):
            raise ValueError(f"{where}: 'edges' {_shape(e)} must be symmetric")
        if np.diagonal(e, axis1=-2, axis2=-1).any():
            raise ValueError(f"{where}: 'edges' {_shape(e)} must have a zero diagonal")
    allowed = getattr(system, "allowed_charges", None)
    if "charges" in data and allowed is not None:
        q = np.asarray(data["charges"])
        bad = ~np.isin(q, allowed)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{where}: 'charges' {_shape(q)} of system {system.name!r} must be one of {list(allowed)}; "
                f"found {q[first]} at {first}"
            )
    for key in ("clip_steps", "source_indices"):
        if key in data:
            s = np.asarray(data[key])
            if not np.issubdtype(s.dtype, np.integer) or (s < 0).any():
                raise ValueError(f"{where}: {key!r} {_shape(s)} must be non-negative integers")


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
    """Make an attribute value storable by h5py: ``None`` as an empty attribute (read back as ``None``),
    dicts and lists of mixed types as JSON."""
    if value is None:
        return h5py.Empty("f8")
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
            try:
                value = float(attrs[name])
            except (TypeError, ValueError):
                raise ValueError(f"{where}: attribute {name!r} = {attrs[name]!r} is not a number") from None
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{where}: attribute {name!r} = {value!r}; the constant must be finite and > 0")
            constants[name] = value
        else:
            warnings.warn(
                f"{where}: attribute {name!r} ({system.CONSTANT_DOCS.get(name, 'constant')}) is missing; "
                f"using the {system.name} default {name} = {default}",
                UserWarning,
                stacklevel=3,
            )
            constants[name] = float(default)
    return constants


def _constants(
    system: ParticleSystem, attrs: Mapping[str, Any], where: str, arrays: Mapping[str, np.ndarray]
) -> tuple[dict[str, float], dict[str, Any]]:
    """The constants of a file and the attributes to add: a system without forces (``generic``) whose file has
    no ``dt`` gets it estimated from the data (:func:`estimate_frame_spacing`), noted as ``dt_estimated`` and
    ``dt_misfit``; any other missing constant falls back to its default with a warning."""
    if not system.has_forces and "dt" not in attrs:
        dt, misfit = estimate_frame_spacing(arrays["positions"], arrays["velocities"], arrays["masses"])
        return {"dt": dt}, {"dt_estimated": True, "dt_misfit": misfit}
    return _resolve_constants(system, attrs, where), {}


def _system_by_name(name: str, where: str) -> ParticleSystem:
    try:
        return get_system(name)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _kept_arrays(system: ParticleSystem, data: Mapping[str, Any]) -> set[str]:
    """The arrays a file of ``system`` keeps: the required ones, ``clip_steps`` and ``source_indices`` when
    present, and for a system without forces (``generic``) any ``edges``/``charges`` found (model context)."""
    keep = {"positions", "velocities", "masses", "clip_steps", "source_indices", *system.per_trajectory}
    if system.has_edges:
        keep.add("edges")
    if not system.has_forces:
        keep |= {"edges", "charges"}
    return {k for k in keep if k in data}


def estimate_frame_spacing(positions: np.ndarray, velocities: np.ndarray, masses: np.ndarray) -> tuple[float, float]:
    """The time between frames Δt of trajectories ``[N, L, K, D]`` whose file does not say, and the fit's
    relative misfit.

    The mass-weighted centre of mass C_l moves with the centre-of-mass velocity v_l, so least squares of
    C_{l+1} − C_l ≈ Δt (v_l + v_{l+1})/2 over every trajectory and frame give Δt (exact for a closed system
    integrated by leapfrog, where both sides are constant). The misfit ‖ΔC − Δt v̄‖/‖ΔC‖ is ≈ 0 for a closed
    system; a large one says the centre of mass does not move as the velocities say (external forces, or
    velocities that are not time derivatives). Returns ``(1.0, nan)`` when the centre of mass is at rest
    (Δt is then irrelevant: nothing moves it).
    """
    R, V = np.asarray(positions, dtype=np.float64), np.asarray(velocities, dtype=np.float64)
    w = np.asarray(masses, dtype=np.float64)[:, None, :, None]  # [N, 1, K, 1]
    C = (w * R).sum(2) / w.sum(2)  # [N, L, D]
    Vc = (w * V).sum(2) / w.sum(2)
    dC = C[:, 1:] - C[:, :-1]
    vbar = 0.5 * (Vc[:, 1:] + Vc[:, :-1])
    den = float(np.square(vbar).sum())
    scale = float(np.square(V).sum()) + np.finfo(np.float64).tiny
    if den <= 1e-24 * scale:
        return 1.0, float("nan")
    dt = float((dC * vbar).sum() / den)
    misfit = float(np.sqrt(np.square(dC - dt * vbar).sum() / max(float(np.square(dC).sum()), 1e-300)))
    if not (np.isfinite(dt) and dt > 0):
        return 1.0, float("inf")
    return dt, misfit


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
        data: ``positions``, ``velocities``, ``masses`` (``edges`` for springs, ``charges`` for charged
            particles; optionally ``clip_steps``, ``source_indices``), converted to float64 (int64 for
            ``clip_steps`` and ``source_indices``).
        attrs: file attributes; must contain ``system``. Missing constants are filled with the system's
            defaults (with a warning). ``None`` values are stored as empty attributes.
        splits: explicit ``{"train", "val", "test"}`` index arrays, ``"auto"`` for the default seeded
            0.8/0.1/0.1 split (seed ``attrs["seed"]``, else 0), or ``None`` for no ``splits`` group.
        floor: compute and store the ``floor_*`` attributes of these arrays (replacing any in ``attrs``), and
            with ``clip_steps`` the clip statistics (``clip_fraction``, ``floor_*_unclipped``, ...).

    Returns:
        The path written.
    """
    path = Path(path)
    where = str(path)
    if "system" not in attrs:
        raise KeyError(f"{where}: attrs must contain 'system' (one of {', '.join(PARTICLE_SYSTEMS)})")
    system = _system_by_name(str(attrs["system"]), where)
    validate_particle_arrays(data, system, where)
    integer = ("clip_steps", "source_indices")
    arrays = {
        k: np.ascontiguousarray(data[k], dtype=np.int64 if k in integer else np.float64)
        for k in _kept_arrays(system, data)
    }
    arrays = {k: arrays[k] for k in ARRAY_KEYS if k in arrays}  # the file's order
    all_attrs = dict(attrs)
    constants, notes = _constants(system, attrs, where, arrays)
    all_attrs |= constants | notes
    N = arrays["positions"].shape[0]
    if floor:
        for stale in [k for k in all_attrs if k.startswith("floor_") or k in CLIP_ATTRS]:
            del all_attrs[stale]  # always recomputed: never inherit a stale floor
    if floor and arrays["positions"].shape[1] >= 3:
        per_traj = {k: arrays[k] for k in system.per_trajectory}
        errors = system.with_constants(**constants).conservation_errors(
            arrays["positions"], arrays["velocities"], arrays["masses"], arrays.get("edges"), **per_traj
        )
        for key, value in errors.items():
            all_attrs[FLOOR_ATTRS[key]] = float(np.mean(value))
        if "clip_steps" in arrays:
            all_attrs |= clip_statistics(arrays["clip_steps"], errors)
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


#: the clip statistics attributes (besides ``floor_<metric>_unclipped`` / ``_clipped``)
CLIP_ATTRS = ("clip_fraction", "clipped_trajectories", "clipped_steps_mean")


def clip_statistics(clip_steps: np.ndarray, errors: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The floor a force clip puts on a data set, as file attributes: ``clip_fraction`` (trajectories with at
    least one clipped force evaluation), ``clipped_trajectories``, ``clipped_steps_mean`` and, per metric of
    ``errors`` (per-trajectory conservation errors), ``floor_<metric>_unclipped`` / ``floor_<metric>_clipped``,
    the means over the unclipped / clipped trajectories (NaN where there are none)."""
    steps = np.asarray(clip_steps)
    clipped = steps > 0
    out: dict[str, float] = {
        "clip_fraction": float(clipped.mean()) if steps.size else 0.0,
        "clipped_trajectories": int(clipped.sum()),
        "clipped_steps_mean": float(steps.mean()) if steps.size else 0.0,
    }
    for key, value in errors.items():
        value = np.asarray(value)
        out[f"{FLOOR_ATTRS[key]}_unclipped"] = float(value[~clipped].mean()) if (~clipped).any() else float("nan")
        out[f"{FLOOR_ATTRS[key]}_clipped"] = float(value[clipped].mean()) if clipped.any() else float("nan")
    return out


# ------------------------------------------------------------------------------------------------ load
def _decode(value: Any) -> Any:
    """An attribute as a plain value; an empty attribute (a stored ``None``) as ``None``."""
    return None if isinstance(value, h5py.Empty) else decode_attr(value)


def _charges_from_edges(arrays: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """EGNN's and GeoTDM's charged N-body files store ``edges`` ``[N, K, K]`` as the charge products q_i q_j
    (±1): the charges are recovered from them (up to one global sign per trajectory, which the Coulomb physics
    does not see: q_0 = +1), or, when the file also has ``charges``, checked against them; ``edges`` is dropped
    (a charged system has no spring graph). Returns the arrays and a note attribute."""
    e = np.asarray(arrays["edges"], dtype=np.float64)
    out = {k: v for k, v in arrays.items() if k != "edges"}
    if e.ndim != 3 or e.shape[1] != e.shape[2]:
        raise ValueError(f"{where}: 'edges' {_shape(e)} must be [N, K, K] (the charge products q_i q_j)")
    off = ~np.eye(e.shape[1], dtype=bool)
    if "charges" in arrays:
        q = np.asarray(arrays["charges"], dtype=np.float64)
        source = "checked against 'charges'"
    else:
        q = e[:, 0, :].copy()  # q_i = q_0 q_i with q_0 = +1
        q[:, 0] = 1.0
        out["charges"] = q
        source = "charges recovered from them (q_0 = +1)"
    products = q[:, :, None] * q[:, None, :]
    if q.shape != e.shape[:2] or not np.allclose(products[:, off], e[:, off], rtol=0, atol=1e-12):
        raise ValueError(
            f"{where}: 'edges' {_shape(e)} of a charged file must be the charge products q_i q_j (EGNN's layout)"
            + (" of its 'charges'" if "charges" in arrays else "")
        )
    return out, {"edges_note": f"'edges' read as charge products q_i q_j ({source})"}


def _refuse_singular(
    arrays: Mapping[str, Any], system: ParticleSystem, constants: Mapping[str, float], where: str
) -> None:
    """Refuse data in which two distinct particles share a position where the system's energy is not finite
    there (gravity's and Coulomb's 1/r): its energy, forces and Newton residual are undefined. Springs are
    finite at r = 0 and pass. Checked in chunks of trajectories (the pair tensor is ``[n, L, K, K, D]``)."""
    R = np.asarray(arrays["positions"], dtype=np.float64)
    for s in range(0, R.shape[0], 1024):
        hit = np.argwhere(coincident(R[s : s + 1024]))  # [(n, l)], in order
        if not hit.size:
            continue
        n_i, l_i = hit[:, 0] + s, hit[:, 1]
        per_traj = {k: np.asarray(arrays[k], dtype=np.float64)[n_i] for k in system.per_trajectory if k in arrays}
        edges = np.asarray(arrays["edges"], dtype=np.float64)[n_i] if "edges" in arrays else None
        V = np.asarray(arrays["velocities"], dtype=np.float64)[n_i, l_i]
        m = np.asarray(arrays["masses"], dtype=np.float64)[n_i]
        sys_c = system.with_constants(**{k: v for k, v in constants.items() if k in system.DEFAULT_CONSTANTS})
        energy = np.asarray(sys_c.total_energy(R[n_i, l_i], V, m, edges, **per_traj))
        bad = np.flatnonzero(~np.isfinite(energy))
        if bad.size:
            n0, l0 = int(n_i[bad[0]]), int(l_i[bad[0]])
            r2 = np.square(R[n0, l0, :, None] - R[n0, l0, None]).sum(-1)
            i, j = (int(v) for v in np.argwhere(np.triu(r2 == 0, 1))[0])
            raise ValueError(
                f"{where}: 'positions' has coincident particles: sample {n0}, frame {l0}, particles {i} and {j} "
                f"share a position, where the {system.name} energy and forces are infinite (a 1/r potential); "
                "remove or correct that sample"
            )


def load_particles(
    path: str | os.PathLike[str],
    system: str | None = None,
    *,
    max_bytes: int | None = None,
    max_samples: int | None = None,
) -> ParticleData:
    """Read and validate a particle file.

    Args:
        path: the ``.h5`` file.
        system: system name, required when the file has no ``system`` attribute; if both are given they
            must agree, except ``generic``, which reads any particle file as data of unknown physics (its
            ``system`` is kept as the attribute ``file_system``).
        max_bytes: the read budget (default: a fraction of the available memory); declared shapes beyond it,
            virtual datasets with unmapped rows and links outside the file's folder are refused before reading.
        max_samples: read only the first ``max_samples`` trajectories (the budget is checked on that slice,
            and only it is read); split indices beyond them are dropped.

    Raises:
        FileNotFoundError, KeyError, ValueError with the file, key and shape named.
    """
    path = Path(path)
    where = str(path)
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1
    ):
        raise ValueError(f"{where}: max_samples must be an integer >= 1, got {max_samples!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such particle file")
    try:
        with h5py.File(path, "r") as f:
            splits_keys = [f"splits/{k}" for k in f["splits"]] if isinstance(f.get("splits"), h5py.Group) else []
            rows = {k: max_samples for k in ARRAY_KEYS}  # the slice read of each per-trajectory array
            check_reads(f, where, [*ARRAY_KEYS, "splits", *splits_keys], rows=rows, max_bytes=max_bytes)
            attrs = {k: _decode(v) for k, v in f.attrs.items()}
            keep = slice(None, max_samples)
            arrays = {
                k: (f[k][keep] if f[k].ndim else f[k][()])
                for k in ARRAY_KEYS
                if k in f and isinstance(f[k], h5py.Dataset)
            }
            pos = f.get("positions")
            n_file = pos.shape[0] if isinstance(pos, h5py.Dataset) and pos.ndim else None
            extra = [k for k in f if k not in ARRAY_KEYS and k != "splits"]
            raw_splits = {k: np.asarray(f["splits"][k][()]) for k in f["splits"]} if "splits" in f else {}
    except OSError as e:  # empty, truncated or not HDF5: h5py's message does not name the file
        raise OSError(f"{where}: not a readable HDF5 file ({' '.join(str(e).split())})") from None
    splits = {}
    for split_name, idx in raw_splits.items():
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"{where}: 'splits/{split_name}' has dtype {idx.dtype}; split indices must be integers")
        splits[split_name] = idx.astype(np.int64)
    file_system = attrs.get("system")
    if file_system is None and system is None:
        raise ValueError(
            f"{where}: the file has no 'system' attribute; pass --system NAME "
            f"(system=NAME in Python), one of: {', '.join(PARTICLE_SYSTEMS)} ('generic': unknown physics)"
        )
    name = str(system if system is not None else file_system)
    sys_obj = _system_by_name(name, where)
    if file_system is not None and system is not None and str(file_system) != system:
        if sys_obj.has_forces:
            raise ValueError(f"{where}: the file's system is {file_system!r} but {system!r} was requested")
        attrs["file_system"] = str(file_system)  # read as data of unknown physics (generic)
    if extra:
        warnings.warn(f"{where}: ignoring unknown entries {extra}", UserWarning, stacklevel=2)
    if "charges" in sys_obj.per_trajectory and "edges" in arrays:
        arrays, note = _charges_from_edges(arrays, where)
        attrs |= note
    validate_particle_arrays(arrays, sys_obj, where)
    kept = _kept_arrays(sys_obj, arrays)
    constants, notes = _constants(sys_obj, attrs, where, arrays)
    attrs |= notes
    N = arrays["positions"].shape[0]
    n_file = N if n_file is None else n_file
    for split_name, idx in splits.items():
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n_file)):
            raise ValueError(f"{where}: 'splits/{split_name}' must be 1-D indices in [0, {n_file})")
        if np.unique(idx).size != idx.size:
            raise ValueError(f"{where}: 'splits/{split_name}' lists a sample more than once")
    if N < n_file:  # data.max_samples: the splits keep the trajectories read
        splits = {k: v[v < N] for k, v in splits.items()}
    names = sorted(splits)
    for i, a in enumerate(names):  # a sample in two splits (e.g. train and test) would leak the test set
        for b in names[i + 1 :]:
            shared = np.intersect1d(splits[a], splits[b])
            if shared.size:
                raise ValueError(
                    f"{where}: 'splits/{a}' and 'splits/{b}' share {shared.size} sample(s) (first {int(shared[0])}); "
                    "the splits must be disjoint"
                )
    attrs["system"] = name
    if sys_obj.has_forces and not attrs.get("generated"):  # a generated file's collisions are measured instead
        _refuse_singular(arrays, sys_obj, constants, where)

    def get(key: str, dtype: Any) -> np.ndarray | None:
        return np.asarray(arrays[key], dtype=dtype) if key in kept else None

    return ParticleData(
        positions=np.asarray(arrays["positions"], dtype=np.float64),
        velocities=np.asarray(arrays["velocities"], dtype=np.float64),
        masses=np.asarray(arrays["masses"], dtype=np.float64),
        edges=get("edges", np.float64),
        system=name,
        constants=constants,
        attrs=attrs,
        splits=splits,
        source_indices=get("source_indices", np.int64),
        path=where,
        charges=get("charges", np.float64),
        clip_steps=get("clip_steps", np.int64),
    )


# ------------------------------------------------------------------------------------------ side splits
SIDE_SPLITS_SUFFIX = ".splits.json"


def side_splits_path(path: str | os.PathLike[str]) -> Path:
    """``<file>.splits.json``: where the default split of a file without a ``splits`` group is kept."""
    path = Path(path)
    return path.with_name(path.name + SIDE_SPLITS_SUFFIX)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def side_splits(
    path: str | os.PathLike[str], n: int, seed: int = 0, fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS
) -> tuple[dict[str, np.ndarray], str]:
    """The train/val/test split of a data file without a ``splits`` group, kept next to it.

    ``<file>.splits.json`` holds the default seeded split (:func:`make_splits` with ``seed`` and
    ``fractions``), ``n`` and the file's SHA-256; it is read back when it matches the file and (re)written
    atomically otherwise. The data file itself is only read. Returns ``(splits, status)``, ``status`` one of
    ``"read"``, ``"written"``, ``"rewritten"`` (the side file described another file or another split) or
    ``"in-memory"`` (its folder is not writable: the same split, not kept).
    """
    path = Path(path)
    side = side_splits_path(path)
    digest = _file_sha256(path)
    fractions = [float(f) for f in fractions]
    status = "written"
    if side.is_file():
        try:
            stored = json.loads(side.read_text())
            if (
                stored.get("sha256") == digest
                and stored.get("n") == n
                and stored.get("seed") == seed
                and stored.get("fractions") == fractions
            ):
                splits = {k: np.asarray(stored[k], dtype=np.int64) for k in SPLIT_NAMES}
                if all(i.ndim == 1 and (not i.size or (i.min() >= 0 and i.max() < n)) for i in splits.values()):
                    return splits, "read"
        except (ValueError, KeyError, TypeError):
            pass
        status = "rewritten"
    splits = make_splits(n, seed, fractions)
    content = {
        "note": (
            f"physdiff: the default train/val/test split of {path.name}, which has no 'splits' group "
            "(written here so that the data file is never modified)"
        ),
        "file": path.name,
        "sha256": digest,
        "n": int(n),
        "seed": int(seed),
        "fractions": fractions,
        **{k: v.tolist() for k, v in splits.items()},
    }
    try:
        write_json(side, content, indent=None)
    except OSError:  # an unwritable folder, or a link / non-regular file at the side file's name (never followed)
        return splits, "in-memory"
    return splits, status


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
        system_name: ``three-body``, ``five-spring`` or ``charged``.
        path: output ``.h5`` file.
        n: number of trajectories.
        seed: seed of the numpy ``Generator`` (the split uses ``[seed, 1]``).
        progress: show a tqdm progress bar over time steps.
        split_fractions: train/val/test fractions.
        constants: overrides of the physical constants (``G``, ``kappa``, ``k``, ``dt``).
        **settings: overrides of the system's simulation settings (``n_frames``, ``substeps``, ...).

    Returns:
        A summary: path, system, n, seed, seconds, shape, constants, settings, the floor metrics, the
        observed maximum relative energy drift of the ground truth and, for a simulator with diagnostics
        (``charged``), ``clip``: the clip statistics stored in the file (:func:`clip_statistics`).
    """
    system = get_system(system_name, **settings)
    if constants:
        system = system.with_constants(**constants)
    if not system.has_forces:
        raise ValueError(f"{system_name!r} is not a simulator; simulate one of {', '.join(SIMULATED_SYSTEMS)}")
    start = time.perf_counter()
    diagnostics = "diagnostics" in inspect.signature(system.simulate).parameters
    data = system.simulate(n, seed, progress=progress, **({"diagnostics": True} if diagnostics else {}))
    seconds = time.perf_counter() - start
    data = {k: v for k, v in data.items() if k in ARRAY_KEYS}  # per-trajectory diagnostics beyond clip_steps
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
    extra = {k: data[k][:, None] for k in system.per_trajectory}
    drift_fn = getattr(system, "relative_energy_drift", None)
    if drift_fn is not None:  # a system whose energy can vanish defines its own scale (charged)
        drift = float(np.max(drift_fn(data)))
    else:
        m = data["masses"][:, None]
        edges = data["edges"][:, None] if "edges" in data else None
        E = np.asarray(system.total_energy(data["positions"], data["velocities"], m, edges, **extra))
        drift = float((np.abs(E - E[:, :1]) / np.abs(E[:, :1])).max())
    with h5py.File(out, "r") as f:
        floors = {key: float(f.attrs[attr]) for key, attr in FLOOR_ATTRS.items() if attr in f.attrs}
        clip = {k: _decode(v) for k, v in f.attrs.items() if k in CLIP_ATTRS or k.endswith(("_unclipped", "_clipped"))}
    summary = {
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
    if clip:
        summary["clip"] = clip
    return summary
