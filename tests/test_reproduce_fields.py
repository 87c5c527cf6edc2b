"""Tiny end-to-end PDE tables through the CLI: one 1-D system (advection, both tasks) and one 2-D (Darcy)."""

import json

import h5py
import numpy as np
import pytest

from physdiff.cli.main import main

TINY = [
    "data.n=40",
    "model.base_channels=8",
    "model.channel_mults=[1,2]",
    "train.steps=12",
    "train.batch_size=8",
    "train.log_every=6",
    "sample.steps=4",
    "sample.n_test=4",
    "sample.batch_size=4",
]
SIZES = {
    "advection": ["data.settings.nx=16", "data.settings.nt=8", "data.settings.k_max=1"],
    "darcy": ["data.settings.n_grid=16"],
}


@pytest.mark.parametrize(
    "experiment,keys", [("advection", ("rmse", "constraint_rmse", "mmd")), ("darcy", ("rmse", "constraint_rmse"))]
)
def test_reproduce_pde_table_both_arms(tmp_path, capsys, experiment, keys):
    out = tmp_path / "res"
    argv = ["reproduce", experiment, "--out", str(out), "--seeds", "0,1", "--device", "cpu", *TINY, *SIZES[experiment]]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["experiment"] == experiment and res["seeds"] == [0, 1] and res["split"] == "test"
    assert set(res["arms"]) == {"no_prior", "prior:residual"}
    pdebench = {"nrmse", "crmse", "brmse", "max_error", "frmse_low", "frmse_mid", "frmse_high"}
    for arm in res["arms"].values():
        # PDEBench's metrics on the prediction samples too, and the prior's law (law:residual)
        assert set(arm) == set(keys) | pdebench | {"law:residual"}
        for k in [*keys, "nrmse", "crmse", "brmse", "frmse_low"]:
            assert np.isfinite(arm[k]["mean"]) and arm[k]["std"] >= 0 and len(arm[k]["per_seed"]) == 2
    assert "nrmse (prediction)" in (out / "table.md").read_text()
    assert res["floor"]["constraint_rmse"] >= 0
    # the law's floor is the PDE residual's RMS on the ground truth: the constraint_rmse floor, computed apart
    assert res["floor"]["law:residual"] == pytest.approx(res["floor"]["constraint_rmse"], rel=1e-9)
    for k in keys:  # paired comparison over the two seeds
        p = res["paired"]["prior:residual"][k]
        assert p["n"] == 2 and len(p["ci95"]) == 2 and p["ci95"][0] <= p["mean_diff"] <= p["ci95"][1]
    table = (out / "table.md").read_text()
    assert "| no_prior |" in table and "| prior:residual |" in table and "ground-truth floor" in table
    assert "ratio prior:residual : no_prior" in table and "paired Δ prior:residual − no_prior [95 % CI]" in table
    tasks = ["prediction", "generation"] if experiment == "advection" else ["prediction"]
    run = out / "arms" / "prior_residual" / "seed1"
    for task in tasks:
        assert (run / f"samples_{task}.h5").is_file()
        assert (out / "plots" / f"fields_{task}.png").is_file()
    assert (run / "checkpoint.pt").is_file() and (run / "metrics.csv").is_file()
    assert "residual" in (run / "metrics.csv").read_text().splitlines()[0]  # the prior term is logged
    # samples keep PDEBench's layout
    with h5py.File(run / f"samples_{tasks[0]}.h5") as f:
        assert "tensor" in f
        if experiment == "darcy":
            assert "nu" in f and f["tensor"].shape[1] == 1

    # `physdiff evaluate` on a written samples file reproduces the per-seed numbers of results.json
    js = tmp_path / "eval.json"
    assert (
        main(["evaluate", str(run / "samples_prediction.h5"), "--reference", str(out / res["data"]), "--json", str(js)])
        == 0
    )
    ev = json.loads(js.read_text())
    assert ev["metrics"]["rmse"]["mean"] == pytest.approx(res["arms"]["prior:residual"]["rmse"]["per_seed"][1])
    capsys.readouterr()
    # a reference with other samples (another seed) is refused, naming both files
    other = tmp_path / "other.h5"
    settings = [s.removeprefix("data.settings.") for s in SIZES[experiment]]
    from physdiff.data.pdebench import simulate_to_file

    simulate_to_file(experiment, other, 40, 7, **{k: int(v) for k, v in (x.split("=") for x in settings)})
    assert main(["evaluate", str(run / "samples_prediction.h5"), "--reference", str(other)]) == 2
    err = capsys.readouterr().err
    assert "was not generated from" in err and str(other) in err


def test_reproduce_rejects_unknown_prior_and_variant(tmp_path, capsys):
    argv = ["reproduce", "burgers", "--out", str(tmp_path / "r"), *TINY, "data.settings.nx=16", "data.settings.nt=8"]
    assert main(argv + ["priors.0.name=energy"]) == 2
    assert "does not apply" in capsys.readouterr().err
    assert main(argv + ["priors.0.variant=aux_head"]) == 2
    assert "tweedie" in capsys.readouterr().err


def test_overrides_accept_new_solver_settings_but_not_unknown_fields():
    from physdiff.config import ConfigError, apply_overrides
    from physdiff.experiments.config import preset_config

    cfg = apply_overrides(preset_config("burgers"), ["data.settings.nu=0.05", "priors.0.weight=0.5"])
    assert cfg.data.settings["nu"] == 0.05 and cfg.priors[0].weight == 0.5
    with pytest.raises(ConfigError, match="data.nope"):
        apply_overrides(preset_config("burgers"), ["data.nope=1"])


def test_sweep_command_runs_the_grid_on_val_and_names_the_best(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "burgers", "--out", str(out), "--seeds", "0", "--device", "cpu", "--grid", "priors.0.weight=0.1,1"]
    argv += [*TINY, "data.settings.nx=16", "data.settings.nt=8", "data.settings.k_max=1"]
    assert main(argv) == 0
    res = json.loads((out / "sweep.json").read_text())
    assert res["split"] == "val" and res["metrics"] == ["constraint_rmse", "mmd"]
    assert [p["overrides"] for p in res["points"]] == [["priors.0.weight=0.1"], ["priors.0.weight=1"]]
    for p in res["points"]:  # ratios and eligibility flags follow from the means, the floors and max_worse
        r = p["arms"]["prior:residual"]
        for m in res["metrics"]:
            assert r["ratio"][m] == pytest.approx(r["mean"][m] / res["baseline"][m])
        assert "mmd" not in res["floor"]  # a distance between distributions has no floor to stay above
        assert r["below_floor"] == [m for m in res["floor"] if r["mean"][m] < res["floor"][m]]
        assert r["worse"] == [m for m in res["metrics"] if r["ratio"][m] > 1 + res["max_worse"]]
    eligible = [
        p
        for p in res["points"]
        if not (p["arms"]["prior:residual"]["below_floor"] or p["arms"]["prior:residual"]["worse"])
    ]
    if eligible:  # the best is the eligible point of smallest score
        best = min(eligible, key=lambda p: p["arms"]["prior:residual"]["score"])
        assert res["best"]["prior:residual"]["overrides"] == best["overrides"]
    else:  # a tiny model can undershoot the floor of a tiny grid: then no point is named
        assert "prior:residual" not in res["best"]
    assert "score" in (out / "sweep.md").read_text()
    html = (out / "report.html").read_text()
    assert "priors.0.weight=0.1" in html and "physdiff sweep burgers" in html
    (out / "report.html").unlink()
    assert main(["plot", str(out)]) == 0 and (out / "report.html").is_file()
    assert (out / "priors.0.weight-0.1" / "arms" / "prior_residual").is_dir()
    assert not (out / "priors.0.weight-0.1" / "arms" / "no_prior").exists()  # the baseline runs once
    # a second call resumes every run from its checkpoint and gives the same numbers
    assert main(argv) == 0
    assert json.loads((out / "sweep.json").read_text())["points"] == res["points"]
    capsys.readouterr()


def test_train_and_sample_one_pde_arm_cli(tmp_path, capsys):
    run = tmp_path / "run"
    sizes = ["data.settings.nx=16", "data.settings.nt=8", "data.settings.k_max=1"]
    argv = ["train", "advection", "--arm", "prior:residual", "--run-dir", str(run), "--device", "cpu", *TINY, *sizes]
    assert main(argv) == 0
    assert (run / "checkpoint.pt").is_file() and (run / "scaling.json").is_file()
    assert main(["sample", str(run), "--steps", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "rmse" in out and "constraint_rmse" in out
    assert main(["plot", str(run)]) == 0  # a run folder: its training curves
    assert "wrote" in capsys.readouterr().out
    for task in ("prediction", "generation"):
        with h5py.File(run / f"samples_{task}.h5") as f:
            assert f["tensor"].shape == (4, 8, 16) and f.attrs["task"] == task


def test_sweep_best_point_skips_points_below_the_floor():
    from physdiff.experiments.sweep import best_points, parse_grid

    def point(w, score, below=(), worse=()):
        r = {"score": score, "ratio": {}, "below_floor": list(below), "worse": list(worse)}
        return {"overrides": [f"w={w}"], "arms": {"prior:r": r}}

    pts = [point(1, 0.9), point(10, 0.5), point(100, 0.2, below=["constraint_rmse"]), point(3, 0.4, worse=["rmse"])]
    assert best_points(pts)["prior:r"]["overrides"] == ["w=10"]
    assert parse_grid(["a.b=1, 2", "c=x"]) == {"a.b": ["1", "2"], "c": ["x"]}
    with pytest.raises(ValueError, match="key=v1"):
        parse_grid(["nonsense"])


def test_plot_and_evaluate_a_downsampled_run(tmp_path, capsys):
    """`physdiff plot` and `evaluate` read the reference as the run did (down-sampled)."""
    out = tmp_path / "res"
    sizes = ["data.settings.nx=32", "data.settings.nt=8", "data.settings.k_max=1", "data.downsample_x=2"]
    argv = ["reproduce", "advection", "--out", str(out), "--seeds", "0", "--arms", "no_prior", *TINY, *sizes]
    assert main(argv) == 0
    for png in (out / "plots").glob("*.png"):
        png.unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "plots" / "fields_prediction.png").is_file() and (out / "plots" / "fields_generation.png").is_file()
    # `physdiff evaluate` reads the full-resolution reference as the run did (the samples record it)
    res = json.loads((out / "results.json").read_text())
    js = tmp_path / "eval.json"
    samples = out / "arms" / "no_prior" / "seed0" / "samples_prediction.h5"
    assert main(["evaluate", str(samples), "--reference", str(out / res["data"]), "--json", str(js)]) == 0
    ev = json.loads(js.read_text())
    assert ev["metrics"]["rmse"]["mean"] == pytest.approx(res["arms"]["no_prior"]["rmse"]["mean"])
    capsys.readouterr()


def test_trained_field_model_beats_an_untrained_one(tmp_path):
    """A broken pipeline (data, scaling, conditioning, sampler, restore) cannot pass: a model trained for 150
    steps predicts advection from u(0,·) better than one trained for 1 step (seeded, tiny)."""
    sizes = ["data.settings.nx=16", "data.settings.nt=8", "data.settings.k_max=1"]
    rmse = {}
    for steps in (1, 150):
        out = tmp_path / f"s{steps}"
        over = [o for o in TINY if not o.startswith("train.steps")] + [f"train.steps={steps}", "train.warmup=10"]
        argv = ["reproduce", "advection", "--out", str(out), "--arms", "no_prior", "--seeds", "0", "--device", "cpu"]
        argv += ["--cache-dir", str(tmp_path / "data"), *over, *sizes, "sample.constraints=[]"]
        assert main(argv) == 0
        rmse[steps] = json.loads((out / "results.json").read_text())["arms"]["no_prior"]["rmse"]["mean"]
    assert rmse[150] < 0.7 * rmse[1], rmse


def test_float64_sampling_keeps_an_exact_projection_exact(tmp_path):
    """``sample.dtype=float64``: the state, the conditions and the network in float64, so Darcy's exact
    projection (the discrete solve) is not rounded to float32 on the way out. In float32 the projected
    residual is float32 round-off of its terms (~1e-7 of the unprojected residual: float32's eps); in float64
    it must fall below 1e-9 of it — between float64's eps times the system's condition number (~1e-12) and
    float32's eps — and the samples file holds float64 fields."""
    rows = {}
    for dtype in ("float32", "float64"):
        out = tmp_path / dtype
        argv = ["reproduce", "darcy", "--out", str(out), "--seeds", "0", "--arms", "no_prior", "--device", "cpu"]
        assert main([*argv, *TINY, *SIZES["darcy"], f"sample.dtype={dtype}"]) == 0
        res = json.loads((out / "results.json").read_text())
        plain = res["arms"]["no_prior"]["constraint_rmse"]["mean"]
        rows[dtype] = res["sampling_constraints"]["no_prior + projection:residual"]["constraint_rmse"]["mean"] / plain
        with h5py.File(out / "arms" / "no_prior" / "seed0" / "samples_prediction_projection_residual.h5") as f:
            assert f["tensor"].dtype == (np.float64 if dtype == "float64" else f["tensor"].dtype)
    assert rows["float32"] > 1e-8  # float32 round-off, the control
    assert rows["float64"] < 1e-9, rows
