r"""GeoTDM's evaluation protocol for N-body trajectories: min-ADE / min-FDE over K samples per condition.

Han et al. 2024, "Geometric Trajectory Diffusion Models" (NeurIPS; code github.com/hanjq17/GeoTDM,
``experiments/nbody_train.py``) condition on the first T_c = 10 frames of a 30-frame trajectory, generate the
next 20, draw K = 5 samples per test case and report, per case, the smallest over the K samples of

* ADE = mean over the generated frames l ≥ s and the particles p of ‖R̂_{l,p} − R_{l,p}‖₂ (the Euclidean
  position error, not squared),
* FDE = mean over the particles of ‖R̂_{L−1,p} − R_{L−1,p}‖₂ (the final frame),

each minimised over the K samples separately (the best ADE and the best FDE may come from different
samples), then averaged over the test cases. Positions are compared as they are (GeoTDM does not centre
them), so the centre of mass of the samples counts.

Which of the two GeoTDM *published*: its code logs both ``minADE_5`` and ``aveADE_5`` (the mean over the K
draws), and the paper's N-body section says "for probabilistic models, we report average ADE and FDE
derived from K = 5 samples" (Table 10: "mean ± standard deviation ... computed from 5 samples"; ETH-UCY,
by contrast, reports minADE/minFDE of 20). The N-body numbers of its Table 1 (charged 0.110 / 0.258, springs
0.0030 / 0.0079, gravity 0.256 / 0.613) are therefore best compared with ``ave_ade`` / ``ave_fde``
(:func:`ave_ade_fde`); ``min_ade`` ≤ ``ave_ade`` always.

Pure numpy functions here; drawing the K samples of a trained model is the experiment layer's
(:func:`physdiff.experiments.particle_task.evaluate_geotdm`, or K samples files with
:func:`physdiff.evaluation.particle_metrics.evaluate_files` ``draws=``). :func:`draw_seed` numbers the
sampling seeds of the K draws so that draw 0 is the ordinary sample of a seed.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "GEOTDM_KNOWN_FRAMES",
    "GEOTDM_FRAMES",
    "GEOTDM_K",
    "ade_fde",
    "ave_ade_fde",
    "draw_metrics",
    "draw_seed",
    "group_draws",
    "min_ade_fde",
]

#: GeoTDM's N-body protocol: 30 frames (``span: 30``), the first 10 given (``cond_mask: [[0, 10]]``), K = 5
GEOTDM_FRAMES = 30
GEOTDM_KNOWN_FRAMES = 10
GEOTDM_K = 5


def _check(samples: np.ndarray, truth: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    samples = np.asarray(samples, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if samples.ndim == truth.ndim:  # one draw
        samples = samples[None]
    if truth.ndim != 4 or samples.ndim != 5 or samples.shape[1:] != truth.shape:
        raise ValueError(
            f"need samples [K, N, L, P, D] and truth [N, L, P, D] of the same N, L, P, D; got "
            f"{list(samples.shape)} and {list(truth.shape)}"
        )
    if not 0 <= int(start) < truth.shape[1]:
        raise ValueError(
            f"start (the first generated frame) must lie in [0, L − 1 = {truth.shape[1] - 1}], got {start}"
        )
    return samples, truth


def ade_fde(samples: np.ndarray, truth: np.ndarray, start: int) -> dict[str, np.ndarray]:
    """ADE and FDE of every draw: ``{"ade": [K, N], "fde": [K, N]}``.

    Args:
        samples: generated positions ``[K, N, L, P, D]`` (K draws of N cases; ``[N, L, P, D]`` for one draw).
        truth: the true positions ``[N, L, P, D]``.
        start: the first generated frame s (frames ``< s`` were given and are not scored).
    """
    samples, truth = _check(samples, truth, start)
    dist = np.linalg.norm(samples[:, :, start:] - truth[None, :, start:], axis=-1)  # [K, N, L - s, P]
    return {"ade": dist.mean((2, 3)), "fde": dist[:, :, -1].mean(-1)}


def min_ade_fde(samples: np.ndarray, truth: np.ndarray, start: int) -> dict[str, np.ndarray]:
    """GeoTDM's per-case metrics: ``{"min_ade": [N], "min_fde": [N]}``, the minimum over the K draws of
    :func:`ade_fde` (each metric minimised separately); their mean over cases is the published number."""
    per = ade_fde(samples, truth, start)
    return {"min_ade": per["ade"].min(0), "min_fde": per["fde"].min(0)}


def ave_ade_fde(samples: np.ndarray, truth: np.ndarray, start: int) -> dict[str, np.ndarray]:
    """``{"ave_ade": [N], "ave_fde": [N]}``: the mean over the K draws of :func:`ade_fde` (GeoTDM's ``aveADE_K``,
    the statistic its N-body tables report)."""
    per = ade_fde(samples, truth, start)
    return {"ave_ade": per["ade"].mean(0), "ave_fde": per["fde"].mean(0)}


def draw_metrics(samples: np.ndarray, truth: np.ndarray, start: int) -> dict[str, np.ndarray]:
    """Every per-case metric over K draws: ``min_ade``, ``min_fde``, ``ave_ade``, ``ave_fde`` (each ``[N]``)."""
    per = ade_fde(samples, truth, start)
    return {
        "min_ade": per["ade"].min(0),
        "min_fde": per["fde"].min(0),
        "ave_ade": per["ade"].mean(0),
        "ave_fde": per["fde"].mean(0),
    }


def draw_seed(seed: int, draw: int) -> int:
    """The sampling seed of draw ``draw`` (0 … K−1) of a run sampled with ``seed``: ``seed`` itself for draw 0
    (the ordinary samples), then seeds far from any run's (``seed + 1_000_003·draw``)."""
    if draw < 0:
        raise ValueError(f"draw must be >= 0, got {draw}")
    return int(seed) + 1_000_003 * int(draw)


def group_draws(source_indices: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a samples file that holds several draws per condition (rows of one condition share their
    ``source_indices``): ``(order [K, N], conditions [N])`` with ``rows[order[j, i]]`` the j-th draw of
    condition ``conditions[i]`` (conditions in order of first appearance, draws in row order).

    Every condition must have the same number of draws, ``k`` when given; ``ValueError`` otherwise."""
    idx = np.asarray(source_indices, dtype=np.int64).ravel()
    values, first, counts = np.unique(idx, return_index=True, return_counts=True)
    if counts.size == 0:
        raise ValueError("no samples")
    if counts.min() != counts.max():
        raise ValueError(
            f"the conditions have different numbers of draws ({int(counts.min())} to {int(counts.max())}); "
            "every condition needs the same K"
        )
    if k is not None and int(counts[0]) != int(k):
        raise ValueError(f"--k {k}: the samples hold {int(counts[0])} draw(s) per condition, not {k}")
    rows = np.argsort(idx, kind="stable").reshape(values.size, int(counts[0]))  # per value, draws in row order
    appear = np.argsort(first, kind="stable")
    return rows[appear].T, values[appear]
