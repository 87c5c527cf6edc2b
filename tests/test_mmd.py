"""The MMD of physdiff.evaluation.mmd tested as math: the unbiased estimator's mean over replicates equals the
closed-form MMD² of two Gaussians (0 for identical ones) within its standard error, a shift is detected at the
sample size of a quick table, the median heuristic and the invariant features behave as stated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from physdiff.evaluation.mmd import (
    median_bandwidth,
    mmd,
    mmd2_unbiased,
    mmd_floor,
    particle_generation_mmd,
    particle_invariant_features,
)

D, N, REPS = 3, 40, 300


def _closed_form(shift: float, s: float, h: float, d: int) -> float:
    """MMD² of N(0, s²I) and N(δ, s²I) for k = exp(−‖a − b‖²/(2h²)): E k over a difference z ~ N(m, 2s²I) is
    (h²/(h² + 2s²))^{d/2} exp(−‖m‖²/(2(h² + 2s²))), so MMD² = 2c (1 − exp(−δ²/(2(h² + 2s²))))."""
    c = (h * h / (h * h + 2 * s * s)) ** (d / 2)
    return 2 * c * (1 - math.exp(-(shift**2) / (2 * (h * h + 2 * s * s))))


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_unbiased_estimator_has_the_closed_form_mean(shift):
    rng = np.random.default_rng(0)
    h, s = 1.3, 1.0
    delta = np.zeros(D)
    delta[0] = shift
    vals = np.array(
        [mmd2_unbiased(rng.normal(size=(N, D)), delta + rng.normal(size=(N + 7, D)), h) for _ in range(REPS)]
    )
    se = vals.std(ddof=1) / math.sqrt(REPS)
    assert abs(vals.mean() - _closed_form(shift, s, h, D)) <= 4 * se  # 4 standard errors: false alarm ~6e-5
    if shift == 0.0:
        assert (vals < 0).any()  # unbiased, not a biased V-statistic, which is >= 0


def test_a_shift_is_detected_beyond_the_null_spread_at_table_size():
    rng = np.random.default_rng(1)
    null = np.array([mmd(rng.normal(size=(N, D)), rng.normal(size=(N, D))) for _ in range(100)])
    shifted = mmd(rng.normal(size=(N, D)), 1.0 + rng.normal(size=(N, D)))
    # the null estimates spread O(1/N) around 0; a unit shift of every coordinate sits far outside
    assert abs(null.mean()) <= 4 * null.std(ddof=1) / math.sqrt(len(null))
    assert shifted > null.mean() + 6 * null.std(ddof=1)


def test_median_heuristic_and_floor():
    x = np.array([[0.0], [1.0]])
    y = np.array([[3.0], [7.0]])
    # pairwise distances 1, 3, 7, 2, 6, 4: median 3.5
    assert median_bandwidth(x, y) == pytest.approx(3.5)
    rng = np.random.default_rng(2)
    held = rng.normal(size=(200, 2, 4))
    assert abs(mmd_floor(held)) < 0.02  # two halves of one distribution: ~0 at n = 100 per half
    assert mmd(held + 5.0, held) > 0.5
    assert math.isnan(mmd(np.full((4, 2), np.nan), held))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd2_unbiased(held[:1], held)


def test_particle_features_are_invariant_to_rotations_and_translations():
    rng = np.random.default_rng(3)
    R, V = rng.normal(size=(30, 4, 3, 2)), rng.normal(size=(30, 4, 3, 2))
    th = 0.7
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    R2, V2 = R @ rot.T + np.array([2.0, -1.0]), V @ rot.T
    np.testing.assert_allclose(particle_invariant_features(R2, V2), particle_invariant_features(R, V), atol=1e-12)
    assert particle_invariant_features(R, V).shape == (30, 4 * (3 + 3))
    ref = (rng.normal(size=R.shape), rng.normal(size=V.shape))
    a, b = particle_generation_mmd(R, V, *ref), particle_generation_mmd(R2, V2, *ref)
    assert a["mmd_invariant"][0] == pytest.approx(b["mmd_invariant"][0], abs=1e-12)
    assert a["mmd"][0] != pytest.approx(b["mmd"][0])  # the raw trajectories are moved
