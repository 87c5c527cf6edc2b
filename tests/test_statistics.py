"""Summary statistics against closed forms: ddof = 1, NaN propagation, paired Student-t intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from physdiff.evaluation.statistics import aggregate_seeds, paired_difference, student_t_interval, summarize_samples
from physdiff.experiments import tables


def test_summarize_samples_uses_ddof_one_and_counts_nonfinite():
    s = summarize_samples({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.0, np.nan, 3.0]})
    assert s["a"]["mean"] == 2.5 and s["a"]["std"] == pytest.approx(math.sqrt(5 / 3)) and s["a"]["n"] == 4
    assert math.isnan(s["b"]["mean"]) and s["b"]["nonfinite"] == 1


def test_aggregate_seeds_sample_std_over_seed_means():
    per_seed = {0: {"m": np.array([1.0, 3.0])}, 1: {"m": np.array([4.0])}, 2: {"m": np.array([6.0, 6.0])}}
    a = aggregate_seeds(per_seed)["m"]
    assert a["per_seed"] == [2.0, 4.0, 6.0]
    assert a["mean"] == 4.0 and a["std"] == pytest.approx(2.0)  # ddof = 1: sqrt((4 + 0 + 4) / 2)
    assert a["nonfinite"] == 0
    bad = aggregate_seeds({0: {"m": np.array([1.0, np.inf])}, 1: {"m": np.array([2.0])}})["m"]
    assert bad["nonfinite"] == 1 and math.isnan(bad["mean"])


def test_paired_difference_closed_form():
    # d = (−1, −2, −3): mean −2, s_d = 1, t_{0.975, 2} = 4.302653, half width 4.302653 / sqrt(3)
    p = paired_difference([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert p["mean_diff"] == -2.0 and p["better_seeds"] == 3 and p["n"] == 3
    assert p["ci95"] == pytest.approx([-2.0 - half, -2.0 + half], rel=1e-9)
    assert paired_difference([1.0], [2.0])["ci95"] is None  # one seed: no interval
    assert student_t_interval([0.5, np.nan]) is None
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0, 2.0], [1.0])


def test_t_interval_covers_at_its_nominal_rate():
    """Coverage of the 95 % interval over many small samples of a known mean (n = 3 seeds)."""
    rng = np.random.default_rng(0)
    trials = 4000
    hits = sum(lo <= 0.3 <= hi for lo, hi in (student_t_interval(rng.normal(0.3, 1.0, 3)) for _ in range(trials)))
    # binomial standard error of the coverage: sqrt(0.95 · 0.05 / 4000) = 0.0034; allow 4 of them
    assert abs(hits / trials - 0.95) < 4 * math.sqrt(0.95 * 0.05 / trials)


def test_tables_report_paired_intervals():
    arms = {
        "no_prior": {"err": {"mean": 2.0, "std": 1.0, "per_seed": [1.0, 2.0, 3.0]}},
        "prior:x": {"err": {"mean": 1.0, "std": 1.0, "per_seed": [0.5, 0.9, 1.6]}},
    }
    pairs = tables.paired(arms)
    assert pairs["prior:x"]["err"]["better_seeds"] == 3 and pairs["prior:x"]["err"]["n"] == 3
    assert pairs["prior:x"]["err"]["mean_diff"] == pytest.approx(-1.0)
    rows = {"prior:x + projection:m": {"err": {"mean": 0.8, "std": 0.1, "per_seed": [0.4, 0.8, 1.2]}}}
    against = tables.paired_constraints(rows, arms)["prior:x + projection:m"]["err"]
    assert against["against"] == "prior:x" and against["mean_diff"] == pytest.approx(-0.2)
    md = tables.markdown_table(
        {"experiment": "toy", "preset": "quick", "seeds": [0, 1, 2], "arms": arms, "sampling_constraints": rows},
        ["err"],
    )
    assert "paired Δ prior:x − no_prior [95 % CI]" in md and "(3/3)" in md
    assert "paired Δ prior:x + projection:m − prior:x" in md
