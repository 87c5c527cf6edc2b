r"""A distributional metric for generation: the maximum mean discrepancy between generated and held-out samples.

For samples X = {x_i}_{i≤m} and Y = {y_j}_{j≤n} (rows flattened to vectors, physical units) and the RBF kernel
k(a, b) = exp(−‖a − b‖² / (2h²)), the unbiased estimator of MMD² (Gretton et al. 2012, JMLR, eq. 3) is

    MMD²_u = 1/(m(m−1)) Σ_{i≠i'} k(x_i, x_i') + 1/(n(n−1)) Σ_{j≠j'} k(y_j, y_j') − 2/(mn) Σ_{i,j} k(x_i, y_j),

whose expectation is 0 when X and Y come from the same distribution (it can be negative) and the population
MMD² > 0 otherwise. The bandwidth h is the median heuristic: the median of the pairwise distances ‖a − b‖ over
the pooled samples (Gretton et al. 2012, §8). A generator that collapses onto a trivial solution of a law (the
zero field, a particle at rest) meets the law but not the data's distribution: its MMD is large.

The floor of the metric is the same estimator between two disjoint halves of the held-out samples
(:func:`mmd_floor`): what a perfect generator's MMD looks like at this sample size.

For particles, :func:`particle_invariant_features` gives the same statistic on E(n)-invariant features (the
pairwise distances and the speeds in every frame), which a rotation, reflection or translation of a sample
does not change.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "MMD_KEYS",
    "generation_mmd",
    "median_bandwidth",
    "mmd",
    "mmd2_unbiased",
    "mmd_floor",
    "particle_generation_mmd",
    "particle_mmd_floor",
    "particle_invariant_features",
]


def _rows(x: np.ndarray) -> torch.Tensor:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[0] < 2:
        raise ValueError(f"MMD: need at least 2 samples, got an array of shape {x.shape}")
    return torch.from_numpy(x.reshape(x.shape[0], -1))


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """The median heuristic: the median pairwise distance over the pooled rows of ``x`` and ``y`` (pairs i < j)."""
    z = torch.cat([_rows(x), _rows(y)])
    d = _sq_dists(z, z)
    iu = torch.triu_indices(len(z), len(z), offset=1)
    h = float(np.median(d[iu[0], iu[1]].sqrt().numpy()))  # numpy: the mean of the middle two for an even count
    return h if h > 0 else 1.0  # all rows equal: any bandwidth gives MMD² = 0


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """The unbiased MMD² estimate between the rows of ``x`` ``[m, ...]`` and ``y`` ``[n, ...]`` (flattened) with the
    RBF kernel of bandwidth ``bandwidth`` (default: :func:`median_bandwidth`)."""
    a, b = _rows(x), _rows(y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"MMD: samples of {a.shape[1]} and {b.shape[1]} entries per row cannot be compared")
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"MMD: the bandwidth must be > 0, got {h}")
    m, n = len(a), len(b)
    kxx = torch.exp(-_sq_dists(a, a) / (2 * h * h))
    kyy = torch.exp(-_sq_dists(b, b) / (2 * h * h))
    kxy = torch.exp(-_sq_dists(a, b) / (2 * h * h))
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def mmd(samples: np.ndarray, held_out: np.ndarray) -> float:
    """MMD²_u between generated ``samples`` and ``held_out`` samples (median-heuristic bandwidth); the table's
    ``mmd``. Non-finite samples make it NaN (counted as such in the tables)."""
    if not (np.isfinite(samples).all() and np.isfinite(held_out).all()):
        return float("nan")
    return mmd2_unbiased(samples, held_out)


def mmd_floor(held_out: np.ndarray, seed: int = 0) -> float:
    """The floor of :func:`mmd`: MMD²_u between two disjoint random halves of ``held_out`` (fixed ``seed``)."""
    n = len(held_out)
    if n < 4:
        raise ValueError(f"MMD floor: need at least 4 held-out samples to split in two, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    held_out = np.asarray(held_out)
    return mmd(held_out[perm[: n // 2]], held_out[perm[n // 2 :]])


def particle_invariant_features(positions: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """E(n)-invariant features per sample ``[N, L·(K(K−1)/2 + K)]``: in every frame, the distances |R_i − R_j|
    (i < j) and the speeds |V_i|, from ``positions``/``velocities`` ``[N, L, K, D]``."""
    R, V = np.asarray(positions, dtype=np.float64), np.asarray(velocities, dtype=np.float64)
    K = R.shape[2]
    i, j = np.triu_indices(K, k=1)
    dist = np.linalg.norm(R[:, :, i] - R[:, :, j], axis=-1)  # [N, L, K(K−1)/2]
    speed = np.linalg.norm(V, axis=-1)  # [N, L, K]
    return np.concatenate([dist, speed], axis=-1).reshape(R.shape[0], -1)


#: the metric keys this module adds to generation tables
MMD_KEYS: tuple[str, ...] = ("mmd", "mmd_invariant")


def generation_mmd(samples: np.ndarray, held_out: np.ndarray) -> dict[str, np.ndarray]:
    """``{"mmd": [MMD²_u]}``: one value per evaluation (a statistic of the whole set, not per sample)."""
    return {"mmd": np.array([mmd(samples, held_out)])}


def particle_generation_mmd(
    positions: np.ndarray, velocities: np.ndarray, held_positions: np.ndarray, held_velocities: np.ndarray
) -> dict[str, np.ndarray]:
    """``mmd`` on the raw trajectories (positions and velocities) and ``mmd_invariant`` on
    :func:`particle_invariant_features`, one value each."""
    raw = np.concatenate([np.asarray(positions), np.asarray(velocities)], axis=-1)
    held = np.concatenate([np.asarray(held_positions), np.asarray(held_velocities)], axis=-1)
    inv = particle_invariant_features(positions, velocities)
    held_inv = particle_invariant_features(held_positions, held_velocities)
    return {"mmd": np.array([mmd(raw, held)]), "mmd_invariant": np.array([mmd(inv, held_inv)])}


def particle_mmd_floor(positions: np.ndarray, velocities: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The floors of :func:`particle_generation_mmd`: two disjoint random halves of the held-out trajectories."""
    n = len(positions)
    if n < 4:
        raise ValueError(f"MMD floor: need at least 4 held-out samples to split in two, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    a, b = perm[: n // 2], perm[n // 2 :]
    R, V = np.asarray(positions), np.asarray(velocities)
    return {k: float(v[0]) for k, v in particle_generation_mmd(R[a], V[a], R[b], V[b]).items()}
