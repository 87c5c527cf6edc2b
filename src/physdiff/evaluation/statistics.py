r"""Summary statistics of metrics: over evaluation samples, over seeds, and paired with/without-prior
comparisons (the numbers every table reports).

* :func:`summarize_samples` — per metric over the samples of one run: ``mean``, ``std`` (sample standard
  deviation, ddof = 1), ``n`` and ``nonfinite``, the count of NaN/inf values. The mean propagates NaN: a
  diverged sample makes the mean NaN instead of silently dropping out of it.
* :func:`aggregate_seeds` — per metric over seeds of the per-seed means: ``mean``, ``std`` (ddof = 1;
  with one seed the spread over evaluation samples stands in), ``per_seed`` and ``nonfinite``.
* :func:`paired_difference` — arms that share data and seeds are compared seed by seed: the differences
  d_s = m_prior(s) − m_base(s) give ``mean_diff`` = d̄, the 95 % interval d̄ ± t_{0.975, n−1} s_d / √n
  (Student's t over seeds; ``None`` with fewer than 2 seeds), ``better_seeds`` (seeds with d_s < 0: every
  metric is an error, lower is better) and ``n``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["summarize_samples", "aggregate_seeds", "paired_difference", "student_t_interval"]


def _values(v: Any) -> np.ndarray:
    try:  # torch tensors
        v = v.detach().cpu().double().numpy()
    except AttributeError:
        pass
    return np.asarray(v, dtype=np.float64).ravel()


def _std(v: np.ndarray) -> float:
    return float(np.std(v, ddof=1)) if v.size > 1 else 0.0


def summarize_samples(per_sample: Mapping[str, Any]) -> dict[str, dict[str, float | int]]:
    """``{key: {"mean", "std", "n", "nonfinite"}}`` over the per-sample values of each metric.

    ``std`` is the sample standard deviation (ddof = 1; 0 for a single sample). NaN/inf values are counted
    in ``nonfinite`` and make ``mean`` and ``std`` NaN.
    """
    out: dict[str, dict[str, float | int]] = {}
    for key, val in per_sample.items():
        v = _values(val)
        bad = int(v.size - np.count_nonzero(np.isfinite(v)))
        nan = float("nan")
        out[key] = {
            "mean": float(np.mean(v)) if v.size and not bad else nan,
            "std": _std(v) if v.size and not bad else nan,
            "n": int(v.size),
            "nonfinite": bad,
        }
    return out


def aggregate_seeds(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric: ``mean`` and ``std`` (ddof = 1) over seeds of the per-seed means, ``per_seed`` and
    ``nonfinite`` (NaN/inf per-sample values over all seeds; any makes the mean NaN).

    With one seed, ``std`` is the spread over that seed's evaluation samples (ddof = 1).
    """
    seeds = sorted(per_seed)
    out: dict[str, dict[str, Any]] = {}
    for k in per_seed[seeds[0]]:
        samples = [_values(per_seed[s][k]) for s in seeds]
        bad = int(sum(v.size - np.count_nonzero(np.isfinite(v)) for v in samples))
        vals = [float(np.mean(v)) if v.size and np.isfinite(v).all() else float("nan") for v in samples]
        std = _std(np.asarray(vals)) if len(vals) > 1 else _std(samples[0])
        out[k] = {"mean": float(np.mean(vals)), "std": std, "per_seed": vals, "nonfinite": bad}
    return out


def student_t_interval(d: Sequence[float], level: float = 0.95) -> list[float] | None:
    """The ``level`` interval of the mean of ``d`` from Student's t with n − 1 degrees of freedom
    (``None`` for n < 2 or non-finite values)."""
    from scipy.stats import t as student_t

    d = np.asarray(d, dtype=np.float64)
    if d.size < 2 or not np.isfinite(d).all():
        return None
    half = float(student_t.ppf(0.5 + level / 2, d.size - 1)) * float(np.std(d, ddof=1)) / np.sqrt(d.size)
    m = float(np.mean(d))
    return [m - half, m + half]


def paired_difference(treated: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    """Paired comparison over seeds of per-seed means (lower is better):
    ``{"mean_diff", "ci95": [lo, hi] | None, "better_seeds", "n"}`` with d_s = treated_s − base_s."""
    a, b = np.asarray(treated, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same seeds: {a.size} vs {b.size} values")
    d = a - b
    return {
        "mean_diff": float(np.mean(d)) if d.size else float("nan"),
        "ci95": student_t_interval(d),
        "better_seeds": int(np.sum(d < 0)),
        "n": int(d.size),
    }
