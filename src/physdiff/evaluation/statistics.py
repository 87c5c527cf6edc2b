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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "summarize_samples",
    "aggregate_seeds",
    "paired_difference",
    "student_t_interval",
    "format_number",
    "metric_order",
    "samples_metric_order",
    "metric_label",
    "arm_label",
    "EXTRA_KEYS",
]

#: metrics shown after the table's own when every arm has them (PDEBench's, on prediction samples), in this order
EXTRA_KEYS = ("nrmse", "crmse", "brmse", "frmse_low", "frmse_mid", "frmse_high", "max_error")


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


# ----------------------------------------------------------------------------------------------- display
def format_number(x: Any, digits: int = 4, *, sign: bool = False, decimals: int | None = None) -> str:
    """One number as every table shows it: ``digits`` significant digits (``decimals``: that many decimals
    instead, as ratios show, 0.970); e-notation when ``0 < |x| < 1e-3`` or ``|x| >= 1e5`` (so no nonzero
    value reads ``0.000``); ``NaN``, ``inf``, ``−inf``; ``—`` for ``None``; a leading ``+`` with ``sign``."""
    if x is None:
        return "—"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "−inf"
    plus = "+" if sign else ""
    a = abs(v)
    if a and (a < 1e-3 or a >= 1e5):  # g-style: trailing zeros of the mantissa dropped (1e-09, 1.23e-07)
        mantissa, exponent = format(v, f"{plus}.{max(digits - 1, 0)}e").split("e")
        return (mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa) + "e" + exponent
    if decimals is not None:
        return format(v, f"{plus}.{decimals}f")
    if not a:
        return format(v, f"{plus}g")
    places = digits - 1 - math.floor(math.log10(a))  # positional below 1e5: 197 to 2 digits is 200, not 2e+02
    text = format(round(v, places), f"{plus}.{max(places, 0)}f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def metric_order(results: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(main, extra)``: the metrics every arm of ``results`` has, the table's own first (``metric_tasks``,
    in their order), then the others (:data:`EXTRA_KEYS` in their order, then the rest by name). Without
    ``metric_tasks`` every common metric is ``main``, in the first arm's order."""
    arms = list((results.get("arms") or {}).values())
    if not arms:
        return [], []
    common = [k for k in arms[0] if all(k in m for m in arms[1:])]
    tasks = results.get("metric_tasks")
    if not tasks:
        return common, []
    main = [k for k in tasks if k in common]
    rest = [k for k in common if k not in main]
    return main, [k for k in EXTRA_KEYS if k in rest] + sorted(k for k in rest if k not in EXTRA_KEYS)


def samples_metric_order(
    keys: Sequence[str], metric_tasks: Mapping[str, str] | None, subtask: str | None = None
) -> list[str]:
    """``keys`` (the metrics of one samples file) in :func:`metric_order`'s order: the experiment's table metrics
    of ``subtask`` (``metric_tasks``, every one when ``subtask`` is ``None``) first, then the others. What
    ``physdiff sample`` and ``physdiff evaluate`` print, the same for the same file."""
    tasks = {k: t for k, t in (metric_tasks or {}).items() if subtask is None or t == subtask}
    main, extra = metric_order({"arms": {"samples": dict.fromkeys(keys)}, "metric_tasks": tasks or None})
    return main + extra


def metric_label(results: Mapping[str, Any], key: str) -> str:
    """``key (task)``: a metric with the sub-task it scores (PDEBench's: prediction); else the key."""
    from physdiff.priors.base import prior_label  # (torch only when labelling)

    task = (results.get("metric_tasks") or {}).get(key) or ("prediction" if key in EXTRA_KEYS else None)
    if key.startswith("law:"):  # a user law by import path: law:<Class> (the key keeps it)
        key = "law:" + prior_label(key.removeprefix("law:"))
    return f"{key} ({task})" if task else key


def arm_label(arm: str) -> str:
    """An arm's label: ``prior:<module or file.py>:<Class>`` (a user prior by import path) → ``prior:<Class>``;
    a sampling-constraint row ``"<arm> + <mode>:<priors>"`` keeps its part after ``" + "``; others unchanged."""
    from physdiff.priors.base import prior_label

    head, plus, tail = arm.partition(" + ")
    if head.startswith("prior:"):
        head = "prior:" + prior_label(head.removeprefix("prior:"))
    return head + plus + tail
