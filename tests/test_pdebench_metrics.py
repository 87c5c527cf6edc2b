"""PDEBench metrics: closed forms on tiny fields, layouts, mask, per-sample independence, bad input, and a
cross-check against an independent loop implementation of PDEBench's batch-aggregate formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physdiff.evaluation.pdebench_metrics import (
    FRMSE_KEYS,
    I_HIGH,
    I_LOW,
    METRIC_KEYS,
    brmse,
    crmse,
    frmse,
    max_error,
    nrmse,
    pdebench_metrics,
    rmse,
)

LAYOUT_1D = dict(spatial_dims=1, channel_axis=None, time_axis=1)  # [N, T, X]
LAYOUT_DARCY = dict(spatial_dims=2, channel_axis=None, time_axis=None)  # [N, X, Y]
LAYOUT_SWE = dict(spatial_dims=2, channel_axis=2, time_axis=1)  # [N, T, C, X, Y]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _mode_1d(nx: int, k: int, amp: float) -> np.ndarray:
    x = np.arange(nx)
    return amp * np.cos(2 * np.pi * k * x / nx)


def _mode_2d(nx: int, ny: int, kx: int, ky: int, amp: float) -> np.ndarray:
    x, y = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    return amp * np.cos(2 * np.pi * (kx * x / nx + ky * y / ny))


def test_contract() -> None:
    assert METRIC_KEYS == ("rmse", "nrmse", "crmse", "max_error", "brmse", "frmse_low", "frmse_mid", "frmse_high")
    assert FRMSE_KEYS == ("frmse_low", "frmse_mid", "frmse_high")
    assert (I_LOW, I_HIGH) == (4, 12)


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((3, 4, 32), LAYOUT_1D), ((3, 32, 32), LAYOUT_DARCY), ((3, 4, 2, 32, 32), LAYOUT_SWE)],
)
def test_exact_prediction_is_zero_and_shapes(rng, shape, layout) -> None:
    u = rng.normal(size=shape)
    out = pdebench_metrics(u, u.copy(), **layout)
    assert set(out) == set(METRIC_KEYS)
    for key, val in out.items():
        assert val.shape == (3,) and val.dtype == np.float64, key
        assert np.all(val == 0), key


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((3, 4, 32), LAYOUT_1D), ((3, 16, 16), LAYOUT_DARCY), ((3, 4, 2, 16, 16), LAYOUT_SWE)],
)
def test_nrmse_of_scaled_truth_is_abs_c(rng, shape, layout) -> None:
    u = rng.normal(size=shape)
    c = np.array([0.1, -0.25, 2.0]).reshape(3, *[1] * (len(shape) - 1))
    np.testing.assert_allclose(nrmse((1 + c) * u, u, **layout), [0.1, 0.25, 2.0], rtol=1e-12)


def test_nrmse_is_per_time_step_then_averaged() -> None:
    # two time steps with very different norms: PDEBench normalises each slice by its own norm
    u = np.stack([np.full(8, 1.0), np.full(8, 10.0)])[None]  # [1, 2, 8]
    pred = u + np.array([0.5, 0.5])[None, :, None]
    np.testing.assert_allclose(nrmse(pred, u, **LAYOUT_1D), [(0.5 / 1 + 0.5 / 10) / 2])


def test_rmse_and_max_error_closed_forms() -> None:
    u = np.zeros((2, 3, 16))
    pred = u.copy()
    pred[0] += 0.3  # constant error
    pred[1, :, 5] = np.array([1.0, -2.0, 4.0])  # one spike per time step
    np.testing.assert_allclose(rmse(pred, u, **LAYOUT_1D), [0.3, (1 + 2 + 4) / 3 / 4])
    np.testing.assert_allclose(max_error(pred, u, **LAYOUT_1D), [0.3, (1 + 2 + 4) / 3])


def test_crmse_zero_for_mean_preserving_and_abs_shift(rng) -> None:
    u = rng.normal(size=(4, 3, 2, 8, 12))
    noise = rng.normal(size=u.shape)
    noise -= noise.mean(axis=(-2, -1), keepdims=True)  # zero spatial mean in every slice
    np.testing.assert_allclose(crmse(u + noise, u, **LAYOUT_SWE), 0.0, atol=1e-14)
    assert np.all(rmse(u + noise, u, **LAYOUT_SWE) > 0.5)
    # constant shift per sample, and a shift that differs between time steps: mean_t |delta_t|
    delta = np.array([0.2, -0.7, 1.5, 0.0]).reshape(4, 1, 1, 1, 1)
    np.testing.assert_allclose(crmse(u + delta, u, **LAYOUT_SWE), [0.2, 0.7, 1.5, 0.0], atol=1e-13)
    v = rng.normal(size=(1, 3, 16))
    shift = np.array([0.1, -0.3, 0.5])[None, :, None]
    np.testing.assert_allclose(crmse(v + shift, v, **LAYOUT_1D), [0.3], rtol=1e-12)


def test_crmse_is_sum_difference_over_number_of_points_darcy(rng) -> None:
    u = rng.normal(size=(2, 6, 10))
    pred = u.copy()
    pred[:, 2, 3] += np.array([6.0, -12.0])  # one point: sum changes by 6 resp. -12 over 60 points
    np.testing.assert_allclose(crmse(pred, u, **LAYOUT_DARCY), [0.1, 0.2], rtol=1e-12)


def test_brmse_1d() -> None:
    u = np.zeros((3, 2, 10))
    pred = u.copy()
    pred[0, :, 1:-1] = 5.0  # interior only
    pred[1, :, [0, -1]] = -0.4  # boundary only
    pred[2, :, 0] = 0.6  # left end only: sqrt(0.6^2 / 2)
    np.testing.assert_allclose(brmse(pred, u, **LAYOUT_1D), [0.0, 0.4, 0.6 / math.sqrt(2)], atol=1e-15)


def test_brmse_2d_edges_and_corner_convention() -> None:
    nx, ny = 6, 9
    u = np.zeros((4, nx, ny))
    pred = u.copy()
    pred[0, 1:-1, 1:-1] = 3.0  # interior only
    pred[1] = 0.25
    pred[1, 1:-1, 1:-1] = 0.0  # constant on the whole boundary only
    # the x = 0 edge: its ny points, plus its two corners once more as points of the y = 0 and y = -1 edges
    pred[2, 0, :] = 0.5
    pred[3, 0, 0] = 1.0  # one corner: in the x = 0 and the y = 0 edge, 2 / (2 nx + 2 ny)
    expected = [0.0, 0.25, math.sqrt((ny + 2) * 0.25 / (2 * nx + 2 * ny)), math.sqrt(2 / (2 * nx + 2 * ny))]
    np.testing.assert_allclose(brmse(pred, u, **LAYOUT_DARCY), expected, atol=1e-15)


@pytest.mark.parametrize(
    ("k", "band", "n_bins"),
    [(2, "frmse_low", 4), (7, "frmse_mid", 8), (20, "frmse_high", 64 // 2 + 1 - 12)],
)
def test_frmse_1d_single_mode(k, band, n_bins) -> None:
    nx, amp = 64, 0.8
    u = np.zeros((1, 2, nx))
    pred = u + _mode_1d(nx, k, amp)  # |rfft|_k = amp * nx / 2 -> b_k = amp / 2
    out = frmse(pred, u, **LAYOUT_1D)
    for key in FRMSE_KEYS:
        want = amp / 2 / n_bins if key == band else 0.0
        np.testing.assert_allclose(out[key], [want], atol=1e-14, err_msg=key)


def test_frmse_1d_constant_nyquist_and_domain_length() -> None:
    nx = 32
    u = np.zeros((2, 1, nx))
    pred = u.copy()
    pred[0] += -0.6  # bin 0: |delta|
    pred[1] += 0.3 * (-1.0) ** np.arange(nx)  # Nyquist bin nx / 2 (rfft includes it): |E| = 0.3 nx
    out = frmse(pred, u, **LAYOUT_1D)
    np.testing.assert_allclose(out["frmse_low"], [0.6 / 4, 0.0], atol=1e-14)
    np.testing.assert_allclose(out["frmse_high"], [0.0, 0.3 / (nx // 2 + 1 - 12)], atol=1e-14)
    scaled = frmse(pred, u, **LAYOUT_1D, domain_lengths=2.5)
    np.testing.assert_allclose(scaled["frmse_low"], 2.5 * out["frmse_low"], rtol=1e-12)


@pytest.mark.parametrize(
    ("kx", "ky", "band", "n_bins"),
    [(1, 1, "frmse_low", 4), (3, 4, "frmse_mid", 8), (0, 9, "frmse_mid", 8), (10, 10, "frmse_high", 16 - 12)],
)
def test_frmse_2d_single_mode(kx, ky, band, n_bins) -> None:
    n, amp = 32, 1.3
    u = np.zeros((1, n, n))
    pred = u + _mode_2d(n, n, kx, ky, amp)  # |E| = amp * n^2 / 2 at (kx, ky) -> shell floor(|k|), b = amp / 2
    out = frmse(pred, u, **LAYOUT_DARCY)
    for key in FRMSE_KEYS:
        want = amp / 2 / n_bins if key == band else 0.0
        np.testing.assert_allclose(out[key], [want], atol=1e-13, err_msg=key)
    scaled = frmse(pred, u, **LAYOUT_DARCY, domain_lengths=(2.0, 0.5))  # Lx * Ly = 1
    np.testing.assert_allclose(scaled[band], out[band], rtol=1e-12)


def test_frmse_2d_pdebench_quadrant_and_empty_band() -> None:
    # PDEBench sums only the quadrant 0 <= i < nx/2, 0 <= j < ny/2 of the 2-D FFT: a mode with
    # frequencies of opposite signs has its two coefficients outside it and is not seen
    n = 32
    u = np.zeros((1, n, n))
    out = frmse(u + _mode_2d(n, n, 3, -4, 1.0), u, **LAYOUT_DARCY)
    for key in FRMSE_KEYS:
        np.testing.assert_allclose(out[key], [0.0], atol=1e-13)
    # non-square 32 x 16 grid: min(16, 8) = 8 shells, so the high band [12, 8) is empty (NaN)
    v = np.zeros((1, 32, 16))
    out = frmse(v + _mode_2d(32, 16, 5, 0, 1.0), v, **LAYOUT_DARCY)
    np.testing.assert_allclose(out["frmse_mid"], [0.5 / 4])
    np.testing.assert_allclose(out["frmse_low"], [0.0], atol=1e-14)
    assert np.isnan(out["frmse_high"]).all()


def test_frmse_custom_band_limits() -> None:
    nx = 64
    u = np.zeros((1, 1, nx))
    out = frmse(u + _mode_1d(nx, 5, 1.0), u, **LAYOUT_1D, i_low=2, i_high=6)
    np.testing.assert_allclose([out[k][0] for k in FRMSE_KEYS], [0.0, 0.5 / 4, 0.0], atol=1e-14)


def test_layout_equivalence_swe(rng) -> None:
    u = rng.normal(size=(3, 4, 2, 16, 20))
    pred = u + 0.2 * rng.normal(size=u.shape) + 0.05
    a = pdebench_metrics(pred, u, **LAYOUT_SWE)
    perm = (0, 3, 4, 1, 2)  # PDEBench's own layout [N, X, Y, T, C]
    b = pdebench_metrics(pred.transpose(perm), u.transpose(perm), spatial_dims=2, channel_axis=-1, time_axis=-2)
    c = pdebench_metrics(torch.from_numpy(pred), torch.from_numpy(u).float(), **LAYOUT_SWE)
    for key in METRIC_KEYS:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(c[key], a[key], rtol=1e-5, atol=1e-7, err_msg=key)
        assert isinstance(c[key], np.ndarray) and c[key].dtype == np.float64


def test_single_metric_functions_match_pdebench_metrics(rng) -> None:
    u = rng.normal(size=(2, 3, 32))
    pred = u + 0.1 * rng.normal(size=u.shape)
    allm = pdebench_metrics(pred, u, **LAYOUT_1D)
    for fn in (rmse, nrmse, crmse, max_error, brmse):
        np.testing.assert_array_equal(fn(pred, u, **LAYOUT_1D), allm[fn.__name__])
    bands = frmse(pred, u, **LAYOUT_1D)
    for key in FRMSE_KEYS:
        np.testing.assert_array_equal(bands[key], allm[key])


def test_permuting_samples_permutes_outputs(rng) -> None:
    u = rng.normal(size=(5, 3, 2, 16, 16))
    pred = u + rng.normal(size=u.shape) * rng.uniform(0.1, 1.0, size=(5, 1, 1, 1, 1))
    perm = rng.permutation(5)
    a = pdebench_metrics(pred, u, **LAYOUT_SWE)
    b = pdebench_metrics(pred[perm], u[perm], **LAYOUT_SWE)
    single = pdebench_metrics(pred[2:3], u[2:3], **LAYOUT_SWE)
    for key in METRIC_KEYS:
        np.testing.assert_allclose(b[key], a[key][perm], rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(single[key], a[key][2:3], rtol=1e-12, err_msg=key)


def test_mask_drops_known_frames(rng) -> None:
    u = rng.normal(size=(3, 5, 32))
    pred = u + 0.1 * rng.normal(size=u.shape)
    pred[:, 0] += 100.0  # garbage on the given first frame
    mask = np.zeros((1, 5, 1))
    mask[:, 0] = 1
    masked = pdebench_metrics(pred, u, **LAYOUT_1D, mask=mask)
    dropped = pdebench_metrics(pred[:, 1:], u[:, 1:], **LAYOUT_1D)
    for key in METRIC_KEYS:
        np.testing.assert_allclose(masked[key], dropped[key], rtol=1e-12, err_msg=key)
    # a fully known sample gets NaN, the others are unaffected; torch bool masks work
    full = np.zeros(u.shape, dtype=bool)
    full[:, 0] = True
    full[1] = True
    out = pdebench_metrics(pred, u, **LAYOUT_1D, mask=torch.from_numpy(full))
    for key in METRIC_KEYS:
        assert np.isnan(out[key][1])
        np.testing.assert_allclose(out[key][[0, 2]], dropped[key][[0, 2]], rtol=1e-12)


def test_mask_per_channel_and_partial_slices(rng) -> None:
    u = rng.normal(size=(2, 3, 2, 8, 8))
    pred = u + 0.1 * rng.normal(size=u.shape)
    # channel 0 known at every time step: only channel 1 is scored
    mask = np.zeros((1, 1, 2, 1, 1))
    mask[:, :, 0] = 1
    out = rmse(pred, u, **LAYOUT_SWE, mask=mask)
    np.testing.assert_allclose(out, rmse(pred[:, :, 1:], u[:, :, 1:], **LAYOUT_SWE), rtol=1e-12)
    # a partially known slice (sparse observations) is scored in full
    sparse = np.zeros(u.shape)
    sparse[..., ::2, ::2] = 1
    np.testing.assert_allclose(rmse(pred, u, **LAYOUT_SWE, mask=sparse), rmse(pred, u, **LAYOUT_SWE), rtol=1e-14)


def _pdebench_aggregate(pred: np.ndarray, true: np.ndarray, i_low: int = 4, i_high: int = 12) -> dict[str, float]:
    """Independent loop implementation of PDEBench's batch-level formulas on its layout ``[B, X(, Y), T, C]``
    (1-D or 2-D), written from the paper's definitions with PDEBench's reduction order: per (channel, time)
    a batch reduction, then the mean over channels and time steps."""
    nb, *space, nt, nc = pred.shape
    npts = math.prod(space)
    vals: dict[str, list[float]] = {k: [] for k in ("rmse", "nrmse", "crmse", "max_error", "brmse")}
    bands: list[list[float]] = [[], [], []]
    for c in range(nc):
        for t in range(nt):
            e = [pred[b, ..., t, c] - true[b, ..., t, c] for b in range(nb)]
            u = [true[b, ..., t, c] for b in range(nb)]
            vals["rmse"].append(sum(math.sqrt((x**2).sum() / npts) for x in e) / nb)
            vals["nrmse"].append(
                sum(math.sqrt((x**2).sum()) / math.sqrt((y**2).sum()) for x, y in zip(e, u, strict=True)) / nb
            )
            vals["crmse"].append(math.sqrt(sum(x.sum() ** 2 for x in e) / nb) / npts)
            vals["max_error"].append(max(abs(x).max() for x in e))
            if len(space) == 1:
                vals["brmse"].append(sum(math.sqrt((x[0] ** 2 + x[-1] ** 2) / 2) for x in e) / nb)
                spec = np.zeros((nb, space[0] // 2 + 1))
                for b, x in enumerate(e):
                    for k in range(space[0] // 2 + 1):
                        coef = sum(x[j] * np.exp(-2j * np.pi * k * j / space[0]) for j in range(space[0]))
                        spec[b, k] = abs(coef) ** 2
                per_bin = np.sqrt(spec.mean(axis=0)) / space[0]
            else:
                nx, ny = space
                edge = [
                    (x[0] ** 2).sum() + (x[-1] ** 2).sum() + (x[:, 0] ** 2).sum() + (x[:, -1] ** 2).sum() for x in e
                ]
                vals["brmse"].append(sum(math.sqrt(s / (2 * nx + 2 * ny)) for s in edge) / nb)
                nbins = min(nx // 2, ny // 2)
                spec = np.zeros((nb, nbins))
                for b, x in enumerate(e):
                    coefs = np.fft.fft2(x)
                    for i in range(nx // 2):
                        for j in range(ny // 2):
                            shell = math.isqrt(i * i + j * j)
                            if shell < nbins:
                                spec[b, shell] += abs(coefs[i, j]) ** 2
                per_bin = np.sqrt(spec.mean(axis=0)) / (nx * ny)
            for band, (lo, hi) in enumerate(((0, i_low), (i_low, i_high), (i_high, len(per_bin)))):
                bands[band].append(float(per_bin[lo:hi].mean()) if hi > lo else math.nan)
    out = {k: float(np.mean(v)) for k, v in vals.items()}
    out.update({k: float(np.mean(v)) for k, v in zip(FRMSE_KEYS, bands, strict=True)})
    return out


@pytest.mark.parametrize(
    ("ours_shape", "layout", "to_pdebench"),
    [
        ((4, 3, 32), LAYOUT_1D, lambda a: np.moveaxis(a, 1, -1)[..., None]),  # [N, X, T, 1]
        ((3, 2, 2, 32, 28), LAYOUT_SWE, lambda a: a.transpose(0, 3, 4, 1, 2)),  # [N, X, Y, T, C]
    ],
)
def test_cross_check_against_pdebench_aggregate(rng, ours_shape, layout, to_pdebench) -> None:
    u = rng.normal(size=ours_shape)
    pred = u + 0.3 * rng.normal(size=ours_shape) + 0.05 * rng.normal(size=ours_shape[:1] + (1,) * (len(ours_shape) - 1))
    ours = pdebench_metrics(pred, u, **layout)
    agg = _pdebench_aggregate(to_pdebench(pred), to_pdebench(u))
    # batch means of per-slice quantities: the sample mean of our values is PDEBench's number
    for key in ("rmse", "nrmse", "brmse"):
        assert ours[key].mean() == pytest.approx(agg[key], rel=1e-10), key
    # batch RMS / max inside each slice: PDEBench's number for a batch of one sample is our value
    for n in range(ours_shape[0]):
        one = _pdebench_aggregate(to_pdebench(pred[n : n + 1]), to_pdebench(u[n : n + 1]))
        for key in METRIC_KEYS:
            assert ours[key][n] == pytest.approx(one[key], rel=1e-9), (key, n)


def test_crmse_and_max_error_aggregate_with_single_slice(rng) -> None:
    # with one channel and one time step PDEBench's aggregate is the RMS (crmse) / max (max_error) of ours
    u = rng.normal(size=(6, 26, 28))
    pred = u + rng.normal(size=u.shape) + rng.normal(size=(6, 1, 1))
    ours = pdebench_metrics(pred, u, **LAYOUT_DARCY)
    agg = _pdebench_aggregate(pred[..., None, None], u[..., None, None])
    assert math.sqrt(np.mean(ours["crmse"] ** 2)) == pytest.approx(agg["crmse"], rel=1e-10)
    assert ours["max_error"].max() == pytest.approx(agg["max_error"], rel=1e-12)


def test_bad_inputs() -> None:
    a = np.zeros((2, 3, 8))
    with pytest.raises(ValueError, match=r"\(2, 3, 8\) vs \(2, 3, 9\)"):
        rmse(a, np.zeros((2, 3, 9)), **LAYOUT_1D)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 8\) has rank 3.*require rank 5"):
        pdebench_metrics(a, a, **LAYOUT_SWE)
    with pytest.raises(ValueError, match=r"rank 3.*require rank 4"):
        pdebench_metrics(a, a, spatial_dims=2, channel_axis=None, time_axis=1)
    with pytest.raises(ValueError, match="spatial_dims must be 1 or 2"):
        pdebench_metrics(a, a, spatial_dims=3, channel_axis=None, time_axis=None)
    with pytest.raises(ValueError, match="sample axis"):
        pdebench_metrics(a, a, spatial_dims=1, channel_axis=None, time_axis=0)
    with pytest.raises(ValueError, match="time_axis=5"):
        pdebench_metrics(a, a, spatial_dims=1, channel_axis=None, time_axis=5)
    b = np.zeros((2, 3, 4, 8))
    with pytest.raises(ValueError, match="same axis"):
        pdebench_metrics(b, b, spatial_dims=1, channel_axis=1, time_axis=-3)
    with pytest.raises(ValueError, match=r"mask of shape \(3, 7\) does not broadcast.*\(2, 3, 8\)"):
        pdebench_metrics(a, a, **LAYOUT_1D, mask=np.zeros((3, 7)))
    with pytest.raises(ValueError, match="i_low"):
        frmse(a, a, **LAYOUT_1D, i_low=5, i_high=3)
    with pytest.raises(ValueError, match="domain_lengths"):
        frmse(a, a, **LAYOUT_1D, domain_lengths=(1.0, 2.0))
