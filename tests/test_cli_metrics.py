"""``physdiff sample`` and ``physdiff evaluate`` print the same metrics of the same samples file, in the
experiment's order (the table's metrics first, then the others: :func:`samples_metric_order`), through one
function; ``evaluate`` reads the system the samples file records."""

from __future__ import annotations

import re
import shutil

import h5py
import pytest

from physdiff.cli.main import main
from physdiff.evaluation.statistics import samples_metric_order
from test_reproduce_fields import SIZES, TINY
from test_walkthrough import TINY_TRAIN

LINE = re.compile(r"^\s+(\S+): (\S+) ± (\S+)(?:\s+\(floor (\S+)\))?$")


def _printed(text: str) -> list[tuple[str, ...]]:
    """The metric lines of the console output: (key, mean, std, floor or None)."""
    return [m.groups() for m in map(LINE.match, text.splitlines()) if m]


def test_samples_metric_order():
    tasks = {"traj_error": "prediction", "vel_error": "prediction", "energy_error": "prediction"}
    keys = ["traj_error", "vel_error", "energy_error", "momentum_error", "dynamic_error", "max_error"]
    assert samples_metric_order(keys, tasks) == [
        "traj_error",
        "vel_error",
        "energy_error",
        "max_error",
        "dynamic_error",
        "momentum_error",
    ]
    # a sub-task's own table metrics first; another sub-task's are extras here
    fields = {"rmse": "prediction", "constraint_rmse": "generation", "mmd": "generation"}
    keys = ["nrmse", "constraint_rmse", "rmse", "frmse_high", "frmse_low", "rmse_pooled"]
    order = ["rmse", "nrmse", "frmse_low", "frmse_high", "constraint_rmse", "rmse_pooled"]
    assert samples_metric_order(keys, fields, "prediction") == order
    assert samples_metric_order(["b", "a"], None) == ["b", "a"]  # no experiment: the evaluator's order


@pytest.mark.parametrize("experiment", ["three-body", "advection"])
def test_sample_and_evaluate_print_the_same_metrics_in_the_same_order(tmp_path, capsys, experiment):
    if experiment == "three-body":
        data = ["--data", str(tmp_path / "d.h5")]
        assert main(["simulate", "three-body", "--n", "30", "--frames", "8", "--out", data[1]]) == 0
        over = TINY_TRAIN
    else:
        data, over = [], [*TINY, *SIZES["advection"]]
    run = tmp_path / "run"
    assert main(["train", experiment, *data, "--run-dir", str(run), "--device", "cpu", *over]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--subtask", "prediction", "--n", "3", "--device", "cpu"]) == 0
    sampled = _printed(capsys.readouterr().out)
    samples = run / "samples_prediction.h5"
    with h5py.File(samples) as f:
        reference = str(f.attrs["reference_path"])
    assert main(["evaluate", str(samples), "--reference", reference]) == 0
    evaluated = _printed(capsys.readouterr().out)
    assert sampled == evaluated and len(sampled) >= 5
    keys = [row[0] for row in sampled]
    from physdiff.cli.main import _run_config

    metrics = dict(_run_config(run).metrics)
    assert keys == samples_metric_order(keys, metrics, "prediction")
    table = [k for k, t in metrics.items() if t == "prediction"]
    assert keys[: len(table)] == table  # the table's metrics first, in the experiment's order
    if experiment == "advection":  # PDEBench's and the residual's, whichever the config names
        assert {"nrmse", "frmse_low", "rmse_pooled", "constraint_rmse"} <= set(keys)
    # outside its run folder the file is read in the preset's order of the system it records, without --system
    moved = tmp_path / "elsewhere" / "s.h5"
    moved.parent.mkdir()
    shutil.copy(samples, moved)
    assert main(["evaluate", str(moved), "--reference", reference]) == 0
    assert _printed(capsys.readouterr().out) == evaluated
    if experiment == "three-body":  # a reference without a 'system' attribute: the samples' record, no --system
        bare = tmp_path / "bare.h5"
        shutil.copy(reference, bare)
        with h5py.File(bare, "a") as f:
            del f.attrs["system"]
        assert main(["evaluate", str(samples), "--reference", str(bare)]) == 0
        assert _printed(capsys.readouterr().out) == evaluated


def test_a_user_priors_training_log_column_is_its_label_and_a_resumed_old_log_keeps_its_history(tmp_path):
    """metrics.csv names a user prior's column by its class (as table.md and the figures label it), not by its
    import path; a log written with the import path is renamed on --resume, its rows kept under the label."""
    import csv

    from physdiff.evaluation.statistics import arm_label
    from physdiff.training.metrics_log import MetricsLog

    spec = "my_priors.py:DampedTether"

    def rows(path):
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    def log_at(path, start):
        return MetricsLog(path, start=start, total=4, enabled=True, progress=False, tensorboard=False)

    fresh = tmp_path / "fresh.csv"
    log = log_at(fresh, 0)
    log.advance(1.0)
    log.write({"step": 1, "loss": 1.0, "energy": 0.25, spec: 0.5})
    log.close()
    (row,) = rows(fresh)
    assert arm_label(f"prior:{spec}") == "prior:DampedTether"
    assert "DampedTether" in row and spec not in row and row["DampedTether"] == "0.5" and row["energy"] == "0.25"
    # a two-class clash keeps the import paths (two columns, never one)
    clash = tmp_path / "clash.csv"
    log = log_at(clash, 0)
    log.write({"step": 1, "loss": 1.0, spec: 0.5, "other.py:DampedTether": 0.75})
    log.close()
    assert {spec, "other.py:DampedTether"} <= set(rows(clash)[0])
    # an older log (import-path column) resumed at step 2: steps 1-2 kept under the label, step 3 appended
    old = tmp_path / "old.csv"
    old.write_text(f"step,loss,{spec},loss_mean,elapsed_s\n1,1.0,0.5,1.0,0.1\n2,0.9,0.4,0.9,0.2\n3,0.8,0.3,0.8,0.3\n")
    log = log_at(old, 2)
    log.advance(0.7)
    log.write({"step": 3, "loss": 0.7, spec: 0.2})
    log.close()
    got = rows(old)
    assert [r["step"] for r in got] == ["1", "2", "3"] and [r["DampedTether"] for r in got] == ["0.5", "0.4", "0.2"]
