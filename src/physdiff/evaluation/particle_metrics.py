r"""Metrics of generated particle trajectories (the public contract of the particle results tables).

For each sample n with prediction (R̂, V̂) and ground truth (R, V), frames l = 0 … L−1, all computed on
the generated frames l ≥ 1 (frame 0 is the given initial condition):

* ``traj_error``     = sqrt( mean_{l≥1,k,d} (R̂_{l,k,d} − R_{l,k,d})² )
* ``vel_error``      = sqrt( mean_{l≥1,k,d} (V̂_{l,k,d} − V_{l,k,d})² )
* ``energy_error``   = mean_{l≥1} | E(R̂_l, V̂_l) − E(R_0, V_0) |, E the system's total energy
                       (kinetic + potential) and frame 0 the ground truth's
* ``momentum_error`` = mean_{l≥1} ‖ P(V̂_l) − P(V_0) ‖₂,  P = Σ_k m_k V_k
* ``dynamic_error``  = sqrt( mean_{l,k,d} ρ_{l,k,d}² ),  ρ_l = m a_l − F(R̂_l),
                       a_l = (R̂_{l+1} − 2R̂_l + R̂_{l−1})/Δt², over the interior frames l = 1 … L−2

Masses, spring graph and constants (``G``/``kappa``, ``dt``) are the reference's. Summaries are the
mean and the sample standard deviation (ddof = 1) over samples, with the count of non-finite values.
The *floor* is the same conservation metrics (energy, momentum, dynamic) of the reference against itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from physdiff.evaluation.statistics import summarize_samples
from physdiff.systems.particle_system import ParticleSystem
from physdiff.systems.registry import get_system

__all__ = [
    "CONSERVATION_KEYS",
    "METRIC_KEYS",
    "evaluate_files",
    "floor_metrics",
    "per_sample_metrics",
    "summarize",
]

METRIC_KEYS: tuple[str, ...] = ("traj_error", "vel_error", "energy_error", "momentum_error", "dynamic_error")
CONSERVATION_KEYS: tuple[str, ...] = ("energy_error", "momentum_error", "dynamic_error")
_CHUNK = 2048  # trajectories per chunk, to bound the memory of the [n, L, K, K, D] pair tensors


def _reference_arrays(ref: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(R, V, m, edges) from a ParticleData-like object, a mapping, or a tuple (R, V, m[, edges])."""
    if isinstance(ref, Mapping):
        return (ref["positions"], ref["velocities"], ref["masses"], ref.get("edges"))
    if isinstance(ref, Sequence) and not isinstance(ref, str):
        R, V, m, *rest = ref
        return R, V, m, (rest[0] if rest else None)
    return ref.positions, ref.velocities, ref.masses, getattr(ref, "edges", None)


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
) -> dict[str, np.ndarray]:
    """All metrics of :data:`METRIC_KEYS` per sample, each an array ``[N]``.

    Args:
        pred_R, pred_V: predicted positions and velocities ``[N, L, K, D]`` (frame 0 included).
        ref: the ground truth: a :class:`~physdiff.data.particles_h5.ParticleData`, a mapping with
            ``positions``, ``velocities``, ``masses`` (``edges``), or a tuple ``(R, V, m[, edges])``.
        system: a :class:`ParticleSystem` (its constants are used), a registry name, or ``None`` to take
            ``ref.system`` and ``ref.constants``.
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
    if sys_obj.has_edges and edges is None:
        raise ValueError(f"{sys_obj.name}: the reference has no 'edges'")
    N = R.shape[0]
    out = {k: np.empty(N) for k in METRIC_KEYS}
    for s in range(0, N, _CHUNK):
        sl = slice(s, s + _CHUNK)
        e = None if edges is None else edges[sl]
        chunk = _chunk_metrics(pred_R[sl], pred_V[sl], R[sl], V[sl], m[sl], e, sys_obj)
        for k in METRIC_KEYS:
            out[k][sl] = chunk[k]
    return out


def _chunk_metrics(
    pR: np.ndarray,
    pV: np.ndarray,
    R: np.ndarray,
    V: np.ndarray,
    m: np.ndarray,
    edges: np.ndarray | None,
    system: ParticleSystem,
) -> dict[str, np.ndarray]:
    m_l = m[:, None, :]  # [n, 1, K]: broadcast over frames
    e_l = None if edges is None else edges[:, None]
    E0 = np.asarray(system.total_energy(R[:, 0], V[:, 0], m, edges))  # [n]
    P0 = np.asarray(system.momentum(V[:, 0], m))  # [n, D]
    E = np.asarray(system.total_energy(pR[:, 1:], pV[:, 1:], m_l, e_l))  # [n, L-1]
    P = np.asarray(system.momentum(pV[:, 1:], m_l))  # [n, L-1, D]
    res = np.asarray(system.newton_residual(pR, m_l, system.dt, e_l))  # [n, L-2, K, D]
    return {
        "traj_error": np.sqrt(np.square(pR[:, 1:] - R[:, 1:]).mean((1, 2, 3))),
        "vel_error": np.sqrt(np.square(pV[:, 1:] - V[:, 1:]).mean((1, 2, 3))),
        "energy_error": np.abs(E - E0[:, None]).mean(1),
        "momentum_error": np.linalg.norm(P - P0[:, None], axis=-1).mean(1),
        "dynamic_error": np.sqrt(np.square(res).mean((1, 2, 3))),
    }


def summarize(per_sample: Mapping[str, np.ndarray]) -> dict[str, dict[str, float | int]]:
    """``{key: {"mean", "std", "n", "nonfinite"}}`` over samples: sample std (ddof = 1); a NaN/inf value is
    counted in ``nonfinite`` and makes the mean NaN (:func:`physdiff.evaluation.statistics.summarize_samples`)."""
    return summarize_samples(per_sample)


def floor_metrics(ref: Any, system: ParticleSystem | str | None = None) -> dict[str, float]:
    """The reference's own floor: mean over samples of ``energy_error``, ``momentum_error`` and
    ``dynamic_error`` computed with prediction = reference."""
    R, V, m, edges = _reference_arrays(ref)
    errors = _resolve_system(ref, system).conservation_errors(R, V, m, edges)
    return {k: float(np.mean(errors[k])) for k in CONSERVATION_KEYS}


def evaluate_files(
    samples_path: str | os.PathLike[str],
    reference_path: str | os.PathLike[str],
    system: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate a samples file against a reference data file.

    Samples are matched to reference rows by the samples file's ``source_indices`` dataset if present,
    otherwise row by row (then N must match). Masses, edges and constants are the reference's. The reference
    must be the samples' own: their first frames, masses and graph must equal the reference rows', and a
    recorded ``reference_sha256`` must match (:func:`physdiff.data.provenance.check_reference`).

    Returns:
        ``{"metrics": {key: {"mean", "std"}}, "floor": {key: value}}``, the floor computed on the
        matched reference rows.
    """
    from physdiff.data.particles_h5 import load_particles
    from physdiff.data.provenance import check_reference, fingerprint

    ref = load_particles(reference_path, system)
    samples = load_particles(samples_path, ref.system)
    if samples.source_indices is not None:
        idx = samples.source_indices
        if idx.size and idx.max() >= ref.n:
            raise ValueError(
                f"{samples_path}: 'source_indices' max {int(idx.max())} out of range for the reference "
                f"{reference_path} with N = {ref.n}"
            )
        ref = ref.subset(idx)
    elif samples.n != ref.n:
        raise ValueError(
            f"{samples_path} has N = {samples.n} samples but the reference {reference_path} has N = {ref.n}; "
            "write an int64 'source_indices' dataset [N] to say which reference rows the samples belong to"
        )
    if samples.shape[1:] != ref.shape[1:]:
        raise ValueError(
            f"{samples_path}: samples [N, L, K, D] = {list(samples.shape)} do not match the reference "
            f"{reference_path} {list(ref.shape)} in L, K or D"
        )
    conditioned = {  # the task generates a trajectory given its first frame and its masses (and graph)
        "positions[:, 0]": (samples.positions[:, 0], ref.positions[:, 0]),
        "velocities[:, 0]": (samples.velocities[:, 0], ref.velocities[:, 0]),
        "masses": (samples.masses, ref.masses),
    }
    if ref.edges is not None and samples.edges is not None:
        conditioned["edges"] = (samples.edges, ref.edges)
    check_reference(
        str(samples_path),
        str(reference_path),
        conditioned,
        samples.attrs.get("reference_sha256"),
        fingerprint(ref.positions, ref.velocities, ref.masses, ref.edges),
    )
    sys_obj = ref.get_system()
    per = per_sample_metrics(samples.positions, samples.velocities, ref, sys_obj)
    return {"metrics": summarize(per), "floor": floor_metrics(ref, sys_obj)}
