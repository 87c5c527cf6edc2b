r"""Metrics of generated particle trajectories (the public contract of the particle results tables).

For each sample n with prediction (R̂, V̂) and ground truth (R, V), frames l = 0 … L−1, all computed on
the generated frames l ≥ s (``start`` s = 1: frame 0 is the given initial condition; s = k when the first k
frames are given, e.g. GeoTDM's protocol, k = 10):

* ``traj_error``     = sqrt( mean_{l≥s,k,d} (R̂_{l,k,d} − R_{l,k,d})² )
* ``vel_error``      = sqrt( mean_{l≥s,k,d} (V̂_{l,k,d} − V_{l,k,d})² )
* ``energy_error``   = mean_{l≥s} | E(R̂_l, V̂_l) − E(R_0, V_0) |, E the system's total energy
                       (kinetic + potential, with the reference's charges for charged particles) and frame 0
                       the ground truth's
* ``momentum_error`` = mean_{l≥s} ‖ P(V̂_l) − P(V_0) ‖₂,  P = Σ_k m_k V_k
* ``dynamic_error``  = sqrt( mean_{l,k,d} ρ_{l,k,d}² ),  ρ_l = m a_l − F(R̂_l),
                       a_l = (R̂_{l+1} − 2R̂_l + R̂_{l−1})/Δt², over the interior frames l = max(1, s−1) … L−2
                       (every residual that involves a generated frame)

Masses, spring graph, charges and constants (``G``/``kappa``/``k``, ``dt``) are the reference's. A system
without forces (``generic``: data of unknown physics) has no energy and no Newton residual: only
``traj_error``, ``vel_error`` and ``momentum_error`` are computed. Summaries are the mean and the sample
standard deviation (ddof = 1) over samples, with the count of non-finite values. The *floor* is the same
conservation metrics (energy, momentum, dynamic) of the reference against itself.

GeoTDM's displacement errors over K draws (``min_ade``, ``min_fde``, ``ave_ade``, ``ave_fde``) are
:mod:`physdiff.evaluation.geotdm`'s.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from physdiff.evaluation.statistics import summarize_samples
from physdiff.physics.particles import coincident
from physdiff.systems.particle_system import ParticleSystem
from physdiff.systems.registry import get_system

__all__ = [
    "CONSERVATION_KEYS",
    "METRIC_KEYS",
    "conservation_curves",
    "differenced_floor_metrics",
    "evaluate_files",
    "floor_metrics",
    "per_sample_metrics",
    "summarize",
]

METRIC_KEYS: tuple[str, ...] = ("traj_error", "vel_error", "energy_error", "momentum_error", "dynamic_error")
CONSERVATION_KEYS: tuple[str, ...] = ("energy_error", "momentum_error", "dynamic_error")
_COINCIDENT = "_coincident"  # per-sample flag of _chunk_metrics (not a metric)
_CHUNK = 2048  # trajectories per chunk, to bound the memory of the [n, L, K, K, D] pair tensors


def _reference_arrays(ref: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(R, V, m, edges) from a ParticleData-like object, a mapping, or a tuple (R, V, m[, edges[, charges]])."""
    if isinstance(ref, Mapping):
        return (ref["positions"], ref["velocities"], ref["masses"], ref.get("edges"))
    if isinstance(ref, Sequence) and not isinstance(ref, str):
        R, V, m, *rest = ref
        return R, V, m, (rest[0] if rest else None)
    return ref.positions, ref.velocities, ref.masses, getattr(ref, "edges", None)


def _per_trajectory(ref: Any, system: ParticleSystem) -> dict[str, np.ndarray]:
    """The per-trajectory arrays ``[N, K]`` of ``system.per_trajectory`` (the charges) held by ``ref``: an
    attribute or key of that name, or the 5th entry of a tuple (R, V, m, edges, charges)."""
    out = {}
    for name in system.per_trajectory:
        if isinstance(ref, Mapping):
            value = ref.get(name)
        elif isinstance(ref, Sequence) and not isinstance(ref, str):
            value = ref[4] if name == "charges" and len(ref) > 4 else None
        else:
            value = getattr(ref, name, None)
        if value is None:
            raise ValueError(f"{system.name}: the reference has no {name!r} [N, K]")
        out[name] = np.asarray(value, dtype=np.float64)
    return out


def _resolve_system(ref: Any, system: ParticleSystem | str | None) -> ParticleSystem:
    constants = getattr(ref, "constants", None)
    if isinstance(system, ParticleSystem):
        return system
    name = system if system is not None else getattr(ref, "system", None)
    if name is None:
        raise ValueError("per_sample_metrics: pass `system` (a ParticleSystem or a registry name)")
    sys_obj = get_system(str(name))
    return sys_obj.with_constants(**constants) if constants else sys_obj


def per_sample_metrics(
    pred_R: np.ndarray,
    pred_V: np.ndarray,
    ref: Any,
    system: ParticleSystem | str | None = None,
    start: int = 1,
) -> dict[str, np.ndarray]:
    """All metrics of :data:`METRIC_KEYS` per sample, each an array ``[N]`` (for a system without forces,
    ``generic``, only ``traj_error``, ``vel_error`` and ``momentum_error``).

    Args:
        pred_R, pred_V: predicted positions and velocities ``[N, L, K, D]`` (the given frames included).
        ref: the ground truth: a :class:`~physdiff.data.particles_h5.ParticleData`, a mapping with
            ``positions``, ``velocities``, ``masses`` (``edges``, ``charges``), or a tuple
            ``(R, V, m[, edges[, charges]])``.
        system: a :class:`ParticleSystem` (its constants are used), a registry name, or ``None`` to take
            ``ref.system`` and ``ref.constants``.
        start: the first generated frame s (the frames before it were given): 1 ≤ s ≤ L − 1.
    """
    R, V, m, edges = (None if a is None else np.asarray(a, dtype=np.float64) for a in _reference_arrays(ref))
    pred_R = np.asarray(pred_R, dtype=np.float64)
    pred_V = np.asarray(pred_V, dtype=np.float64)
    sys_obj = _resolve_system(ref, system)
    if pred_R.shape != R.shape or pred_V.shape != V.shape:
        raise ValueError(
            f"prediction shapes {pred_R.shape}, {pred_V.shape} differ from the reference's {R.shape} [N, L, K, D]"
        )
    if R.ndim != 4 or R.shape[1] < 3:
        raise ValueError(f"need trajectories [N, L, K, D] with L >= 3, got {R.shape}")
    if not 1 <= int(start) <= R.shape[1] - 1:
        raise ValueError(f"start (the first generated frame) must lie in [1, L − 1 = {R.shape[1] - 1}], got {start}")
    if sys_obj.has_edges and edges is None:
        raise ValueError(f"{sys_obj.name}: the reference has no 'edges'")
    extra = _per_trajectory(ref, sys_obj)
    N = R.shape[0]
    keys = metric_keys(sys_obj)
    out = {k: np.empty(N) for k in keys}
    singular = np.zeros(N, dtype=bool)
    for s in range(0, N, _CHUNK):
        sl = slice(s, s + _CHUNK)
        e = None if edges is None else edges[sl]
        q = {k: v[sl] for k, v in extra.items()}
        chunk = _chunk_metrics(pred_R[sl], pred_V[sl], R[sl], V[sl], m[sl], e, sys_obj, int(start), q)
        for k in keys:
            out[k][sl] = chunk[k]
        if _COINCIDENT in chunk:
            singular[sl] = chunk[_COINCIDENT]
    if singular.any():
        warnings.warn(
            f"energy_error: {int(singular.sum())} of {N} sample(s) have coincident particles (r_ij = 0) in a "
            f"generated frame, first sample {int(np.flatnonzero(singular)[0])}: the {sys_obj.name} potential "
            "diverges there, so their energy_error (and dynamic_error) is inf, counted in the summary's "
            "'nonfinite' (its mean is then NaN)",
            UserWarning,
            stacklevel=2,
        )
    return out


def metric_keys(system: ParticleSystem) -> tuple[str, ...]:
    """The metrics a system has: :data:`METRIC_KEYS`, or without forces (``generic``) traj, vel, momentum."""
    if system.has_forces:
        return METRIC_KEYS
    return ("traj_error", "vel_error", "momentum_error")


def _chunk_metrics(
    pR: np.ndarray,
    pV: np.ndarray,
    R: np.ndarray,
    V: np.ndarray,
    m: np.ndarray,
    edges: np.ndarray | None,
    system: ParticleSystem,
    start: int = 1,
    per_trajectory: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    s = start
    m_l = m[:, None, :]  # [n, 1, K]: broadcast over frames
    P0 = np.asarray(system.momentum(V[:, 0], m))  # [n, D]
    P = np.asarray(system.momentum(pV[:, s:], m_l))  # [n, L-s, D]
    out = {
        "traj_error": np.sqrt(np.square(pR[:, s:] - R[:, s:]).mean((1, 2, 3))),
        "vel_error": np.sqrt(np.square(pV[:, s:] - V[:, s:]).mean((1, 2, 3))),
        "momentum_error": np.linalg.norm(P - P0[:, None], axis=-1).mean(1),
    }
    if not system.has_forces:
        return out
    q0 = dict(per_trajectory or {})
    q_l = {k: v[:, None] for k, v in q0.items()}  # laid out like m_l
    e_l = None if edges is None else edges[:, None]
    E0 = np.asarray(system.total_energy(R[:, 0], V[:, 0], m, edges, **q0))  # [n]
    E = np.asarray(system.total_energy(pR[:, s:], pV[:, s:], m_l, e_l, **q_l))  # [n, L-s]
    first = max(1, s - 1)  # the interior frames whose residual involves a generated frame
    res = np.asarray(system.newton_residual(pR[:, first - 1 :], m_l, system.dt, e_l, **q_l))  # [n, L-1-first, K, D]
    # distinct particles at one position (r_ij = 0): a 1/r potential and its forces diverge there, so the
    # error is +inf (inf − inf or 0 · inf would read NaN); a finite potential (springs) is left as computed
    coinc = np.asarray(coincident(pR))  # [n, L]
    err = np.abs(E - E0[:, None])
    err = np.where(coinc[:, s:] & ~np.isfinite(err), np.inf, err)
    dyn = np.sqrt(np.square(res).mean((1, 2, 3)))
    out["energy_error"] = err.mean(1)
    out["dynamic_error"] = np.where(np.isnan(dyn) & coinc[:, first - 1 :].any(1), np.inf, dyn)
    out = {k: out[k] for k in METRIC_KEYS if k in out}
    out[_COINCIDENT] = np.isinf(err).any(1) & coinc[:, s:].any(1)
    return out


def summarize(per_sample: Mapping[str, np.ndarray]) -> dict[str, dict[str, float | int]]:
    """``{key: {"mean", "std", "n", "nonfinite"}}`` over samples: sample std (ddof = 1); a NaN/inf value is
    counted in ``nonfinite`` and makes the mean NaN (:func:`physdiff.evaluation.statistics.summarize_samples`)."""
    return summarize_samples(per_sample)


def floor_metrics(ref: Any, system: ParticleSystem | str | None = None, start: int = 1) -> dict[str, float]:
    """The reference's own floor: mean over samples of ``energy_error``, ``momentum_error`` and
    ``dynamic_error`` computed with prediction = reference (``momentum_error`` only for a system without
    forces), on the frames from ``start`` (:func:`per_sample_metrics`)."""
    R, V, m, edges = _reference_arrays(ref)
    sys_obj = _resolve_system(ref, system)
    if start == 1:
        errors = sys_obj.conservation_errors(R, V, m, edges, **_per_trajectory(ref, sys_obj))
    else:
        errors = per_sample_metrics(R, V, ref, sys_obj, start=start)
    return {k: float(np.mean(errors[k])) for k in CONSERVATION_KEYS if k in errors}


def differenced_floor_metrics(ref: Any, start: int = 1) -> dict[str, float]:
    """The floor of a positions-only model (``model.state: positions``): what generating the true positions
    exactly would score, their velocities differenced in time with the reference's ``dt``
    (:func:`physdiff.physics.finite_difference.velocities_from_positions`): ``vel_error`` (the stencil's
    error), ``energy_error``, ``momentum_error`` and ``dynamic_error``, mean over the reference's rows."""
    import torch

    from physdiff.physics.finite_difference import velocities_from_positions

    R = np.asarray(ref.positions, dtype=np.float64)
    V = velocities_from_positions(torch.from_numpy(np.ascontiguousarray(R)), float(ref.constants["dt"])).numpy()
    per = per_sample_metrics(R, V, ref, start=start)
    return {k: float(np.mean(v)) for k, v in per.items() if k != "traj_error"}


def conservation_curves(ref: Any, positions: np.ndarray, velocities: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame errors of trajectories ``[N, L, K, D]`` row-aligned with ``ref`` (a ParticleData), each
    ``[N, L]``: ``energy`` |E_l − E_0|, ``momentum`` ‖P_l − P_0‖ (E_0, P_0: the ground truth's frame 0) and
    ``newton``, the RMS over particles and dimensions of m a_l − F(R_l) (NaN at the first and last frame).
    The reference's charges enter the physics of charged particles; a system without forces (``generic``)
    has NaN energy and Newton curves. (The curves of :mod:`physdiff.evaluation.plots`' conservation figure.)"""
    system = ref.get_system()
    q0 = _per_trajectory(ref, system)
    q_l = {k: v[:, None] for k, v in q0.items()}
    m = ref.masses[:, None]
    R, V = np.asarray(positions, dtype=np.float64), np.asarray(velocities, dtype=np.float64)
    p0 = np.asarray(system.momentum(ref.velocities[:, 0], ref.masses))
    momentum = np.linalg.norm(np.asarray(system.momentum(V, m)) - p0[:, None], axis=-1)
    energy = np.full(momentum.shape, np.nan)
    newton = np.full(momentum.shape, np.nan)
    if system.has_forces:
        e = ref.edges[:, None] if ref.edges is not None else None
        e0 = np.asarray(system.total_energy(ref.positions[:, 0], ref.velocities[:, 0], ref.masses, ref.edges, **q0))
        energy = np.abs(np.asarray(system.total_energy(R, V, m, e, **q_l)) - e0[:, None])
        res = np.asarray(system.newton_residual(R, m, system.dt, e, **q_l))
        newton[:, 1:-1] = np.sqrt(np.square(res).mean((2, 3)))
    return {"energy": energy, "momentum": momentum, "newton": newton}


def evaluate_files(
    samples_path: str | os.PathLike[str],
    reference_path: str | os.PathLike[str],
    system: str | None = None,
    draws: Sequence[str | os.PathLike[str]] = (),
    protocol: str | None = None,
    k: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate a samples file against a reference data file.

    Samples are matched to reference rows by the samples file's ``source_indices`` dataset if present,
    otherwise row by row (then N must match). Masses, edges, charges and constants are the reference's. The
    reference must be the samples' own: their given frames (the first ``known_frames`` attribute's, default
    1), masses, graph and charges must equal the reference rows', and a recorded ``reference_sha256`` must
    match (:func:`physdiff.data.provenance.check_reference`). The metrics start after the given frames.

    Several draws per condition (rows of the samples file, and of the further files ``draws``, that share a
    ``source_indices`` value; ``physdiff sample --draws K`` writes them): ``min_ade``, ``min_fde``,
    ``ave_ade`` and ``ave_fde`` over each condition's draws are added
    (:func:`physdiff.evaluation.geotdm.draw_metrics`); the one-sample metrics are then draw 0's (each
    condition's first row), as the tables report them. ``protocol="geotdm"``: GeoTDM's N-body protocol —
    10 given frames and ``k`` (default 5) draws per condition, both checked.

    Returns:
        ``{"metrics": {key: {"mean", "std"}}, "floor": {key: value}}``, the floor computed on the
        matched reference rows (each condition once).
    """
    from physdiff.data.particles_h5 import load_particles
    from physdiff.evaluation.geotdm import GEOTDM_K, GEOTDM_KNOWN_FRAMES, draw_metrics, group_draws

    if protocol not in (None, "geotdm"):
        raise ValueError(f"--protocol: unknown evaluation protocol {protocol!r}; choose geotdm")
    if k is not None and k < 1:
        raise ValueError(f"--k must be a positive number of draws, got {k}")
    full = load_particles(reference_path, system)
    paths = [samples_path, *draws]
    matched = [_matched(path, reference_path, full) for path in paths]
    starts = {_known_frames(s) for s, _ in matched}
    if len(starts) > 1:
        raise ValueError(f"{paths}: the files were generated given different numbers of frames {sorted(starts)}")
    start = starts.pop()
    if protocol == "geotdm":
        k = GEOTDM_K if k is None else k
        if start != GEOTDM_KNOWN_FRAMES:
            raise ValueError(
                f"{samples_path}: GeoTDM's protocol gives the first {GEOTDM_KNOWN_FRAMES} frames; these samples were "
                f"generated given {start} (train with known_frames={GEOTDM_KNOWN_FRAMES}, e.g. the nbody-* presets)"
            )
    positions = np.concatenate([s.positions for s, _ in matched])
    velocities = np.concatenate([s.velocities for s, _ in matched])
    rows = np.concatenate([r.source_indices for _, r in matched])
    ref_rows = full.subset(rows)
    order, conditions = group_draws(rows, k) if (k is not None or len(paths) > 1) else (None, None)
    if order is None and np.unique(rows).size < rows.size:  # a file of several draws per condition
        order, conditions = group_draws(rows)
    if order is None:
        ref_once = ref_rows
        per = per_sample_metrics(positions, velocities, ref_rows, ref_rows.get_system(), start=start)
    else:  # the one-sample metrics on draw 0 (as the tables report them), the draw metrics over all K
        ref_once = full.subset(conditions)
        first = order[0]
        per = per_sample_metrics(positions[first], velocities[first], ref_once, ref_once.get_system(), start=start)
        per |= draw_metrics(positions[order], ref_once.positions, start)
    sys_obj = ref_once.get_system()
    if all(s.attrs.get("state") == "positions" for s, _ in matched):  # a positions-only model's floor
        return {"metrics": summarize(per), "floor": differenced_floor_metrics(ref_once, start=start)}
    return {"metrics": summarize(per), "floor": floor_metrics(ref_once, sys_obj, start=start)}


def _known_frames(samples: Any) -> int:
    """The given frames of a samples file (its ``known_frames`` attribute; 1 when absent or generation)."""
    if samples.attrs.get("task", "prediction") != "prediction":
        return 1
    return int(samples.attrs.get("known_frames", 1) or 1)


def check_particle_reference(
    samples_name: str,
    reference_name: str,
    samples: Mapping[str, np.ndarray | None],
    ref: Any,
    known_frames: int,
    recorded: str | None = None,
    positions_only: bool = False,
) -> None:
    """Refuse reference rows ``ref`` (a ParticleData, row-aligned) that are not those ``samples`` (``positions``,
    ``velocities`` [N, L, K, D], ``masses``, optional ``edges``/``charges``) were generated from: the trajectory
    shape [L, K, D], the given frames, the masses, graph and charges must agree, and a ``recorded`` fingerprint
    (the samples file's ``reference_sha256``) must match (:func:`physdiff.data.provenance.check_reference`).
    ``positions_only``: samples of a positions-only model, whose given frames' velocities are differenced (not
    compared). ``physdiff evaluate`` and :meth:`physdiff.Run.evaluate` refuse with this one check and message."""
    from physdiff.data.provenance import check_reference, fingerprint

    shape = tuple(np.shape(samples["positions"]))
    if shape[1:] != tuple(ref.shape[1:]):
        raise ValueError(
            f"{samples_name}: samples [N, L, K, D] = {list(shape)} do not match the reference "
            f"{reference_name} {list(ref.shape)} in L, K or D"
        )
    k = known_frames
    conditioned = {  # the task generates a trajectory given its first frames and its masses (graph, charges)
        f"positions[:, :{k}]": (np.asarray(samples["positions"])[:, :k], ref.positions[:, :k]),
        f"velocities[:, :{k}]": (np.asarray(samples["velocities"])[:, :k], ref.velocities[:, :k]),
        "masses": (samples["masses"], ref.masses),
    }
    if positions_only:
        del conditioned[f"velocities[:, :{k}]"]
    for key in ("edges", "charges"):
        if getattr(ref, key) is not None and samples.get(key) is not None:
            conditioned[key] = (samples[key], getattr(ref, key))
    actual = fingerprint(ref.positions, ref.velocities, ref.masses, ref.edges) if recorded is not None else ""
    check_reference(samples_name, reference_name, conditioned, recorded, actual)


def _matched(samples_path: Any, reference_path: Any, full: Any) -> tuple[Any, Any]:
    """A samples file and the reference rows it was generated from (checked: shape, given frames, masses,
    graph, charges and the recorded fingerprint); the reference's ``source_indices`` are set to its rows."""
    from physdiff.data.particles_h5 import load_particles

    samples = load_particles(samples_path, full.system)
    ref = full
    if samples.source_indices is not None:
        idx = samples.source_indices
        if idx.size and idx.max() >= full.n:
            raise ValueError(
                f"{samples_path}: 'source_indices' max {int(idx.max())} out of range for the reference "
                f"{reference_path} with N = {full.n}"
            )
        ref = full.subset(idx)
        ref.source_indices = np.asarray(idx, dtype=np.int64)
    elif samples.n != full.n:
        raise ValueError(
            f"{samples_path} has N = {samples.n} samples but the reference {reference_path} has N = {full.n}; "
            "write an int64 'source_indices' dataset [N] to say which reference rows the samples belong to"
        )
    else:
        ref = full.subset(np.arange(full.n))
        ref.source_indices = np.arange(full.n, dtype=np.int64)
    arrays = {"positions": samples.positions, "velocities": samples.velocities, "masses": samples.masses}
    arrays |= {"edges": samples.edges, "charges": samples.charges}
    recorded = samples.attrs.get("reference_sha256")
    positions_only = samples.attrs.get("state") == "positions"  # its given frames' V are differenced
    check_particle_reference(
        str(samples_path), str(reference_path), arrays, ref, _known_frames(samples), recorded, positions_only
    )
    return samples, ref
