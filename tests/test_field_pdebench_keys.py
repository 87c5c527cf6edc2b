"""The field tables' and ``physdiff evaluate``'s PDEBench metrics (issue 21, item 5): ``rmse`` is PDEBench's
``err_RMSE`` (per frame the spatial RMSE, averaged over the frames not given), the pooled RMSE is named
``rmse_pooled``; ``evaluate`` reports every PDEBench key; fRMSE takes Lx = 1 unless asked for the physical
length; ``max_error`` is a column of table.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from physdiff.cli.main import main
from physdiff.data.pdebench import load_pde, simulate_to_file
from physdiff.evaluation.field_metrics import pdebench_field_metrics
from physdiff.evaluation.pdebench_metrics import METRIC_KEYS
from physdiff.experiments import tables
from physdiff.experiments.config import preset_config
from physdiff.experiments.field_task import FieldTask
from physdiff.experiments.harness import configure


@pytest.fixture(scope="module")
def advection(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("adv") / "advection.h5"
    simulate_to_file("advection", path, 5, 0, nx=32, nt=6, k_max=2)
    return path


def _frame_scaled_error(ref, amplitudes: np.ndarray) -> np.ndarray:
    """A prediction whose error on frame t is a_t · (±1 alternating in x): spatial RMSE |a_t| per frame."""
    sign = np.where(np.arange(ref.fields.shape[-1]) % 2 == 0, 1.0, -1.0)
    return ref.fields + amplitudes[None, :, None] * sign[None, None, :]


def test_table_rmse_is_pdebench_err_rmse_and_pooled_is_named_so(advection: Path) -> None:
    ref = load_pde(advection)
    cfg = configure(
        preset_config("advection", "quick"),
        ["metrics={rmse: prediction, rmse_pooled: prediction, constraint_rmse: prediction}"],
    )
    task = FieldTask(cfg)
    a = np.array([0.0, 0.1, 0.2, 0.4, 0.8, 1.6])  # frame 0 is given: not scored
    out = task.evaluate({"u": _frame_scaled_error(ref, a)}, ref, "prediction")
    np.testing.assert_allclose(out["rmse"], np.mean(a[1:]), rtol=1e-12)  # mean over frames of the RMSE
    np.testing.assert_allclose(out["rmse_pooled"], np.sqrt(np.mean(a[1:] ** 2)), rtol=1e-12)  # one root
    assert set(METRIC_KEYS) <= set(out) and np.all(out["rmse_pooled"] > 1.1 * out["rmse"])


def test_frmse_domain_length_unit_by_default_physical_on_request(advection: Path) -> None:
    ref = load_pde(advection)
    ref.coords = {**ref.coords, "x": ref.coords["x"] * 3.0}  # a domain three times as long
    pred = _frame_scaled_error(ref, np.linspace(0.0, 1.0, 6))
    unit = pdebench_field_metrics(pred, ref)
    physical = pdebench_field_metrics(pred, ref, "physical")
    length = float(np.ptp(ref.coords["x"]) + ref.coords["x"][1] - ref.coords["x"][0])
    assert length == pytest.approx(3.0)
    for key in ("frmse_low", "frmse_mid", "frmse_high"):
        np.testing.assert_allclose(physical[key], length * unit[key], rtol=1e-12)
    np.testing.assert_allclose(physical["rmse"], unit["rmse"], rtol=0)  # only fRMSE depends on the length
    with pytest.raises(ValueError, match="frmse_lengths must be one of"):
        pdebench_field_metrics(pred, ref, "metres")


def test_evaluate_reports_the_pdebench_keys_of_sample_and_reproduce(advection: Path, tmp_path: Path) -> None:
    ref_all = load_pde(advection)
    idx = np.array([3, 1])
    ref = ref_all.subset(idx)
    task = FieldTask(configure(preset_config("advection", "quick"), []))
    pred = _frame_scaled_error(ref, np.array([0.0, 0.3, 0.1, 0.2, 0.5, 0.05]))
    samples = task.write_samples(tmp_path / "s.h5", {"u": pred}, ref, idx, "test", "prediction")
    expected = task.evaluate({"u": pred}, ref, "prediction")
    for lengths in ("unit", "physical"):
        js = tmp_path / f"eval_{lengths}.json"
        argv = ["evaluate", str(samples), "--reference", str(advection), "--json", str(js)]
        assert main([*argv, "--frmse-lengths", lengths]) == 0
        ev = json.loads(js.read_text())["metrics"]
        assert set(METRIC_KEYS) | {"rmse_pooled", "constraint_rmse"} <= set(ev)
        want = expected if lengths == "unit" else pdebench_field_metrics(pred, ref, "physical")
        for key in METRIC_KEYS:
            assert ev[key]["mean"] == pytest.approx(float(np.mean(want[key])), rel=1e-9)


def test_max_error_is_a_column_of_the_table() -> None:
    cell = {"mean": 1.0, "std": 0.1, "per_seed": [1.0]}
    res = {
        "arms": {"no_prior": {"rmse": cell, "nrmse": cell, "max_error": {**cell, "mean": 2.5}}},
        "metric_tasks": {"rmse": "prediction"},
        "experiment": "advection",
        "preset": "quick",
        "seeds": [0],
        "floor": {},
        "paired": {},
    }
    keys = tables.table_keys(res)
    assert keys == ["rmse", "nrmse", "max_error"]
    table = tables.markdown_table(res, keys)
    assert "| max_error (prediction) |" in table and "| 2.5 ± 0.1 |" in table
