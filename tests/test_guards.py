"""Guards the CLI and the API share (issue 20): ``train --resume`` keeps the run's own config, arm and seed
and refuses a changed one before anything is written; ``--config`` files merge onto the preset on every
verb; ``simulate`` defaults to the quick preset's data and takes grid settings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import pytest
import yaml

from physdiff.cli.main import main
from physdiff.experiments.config import preset_config
from test_walkthrough import TINY_TRAIN


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder``: (mtime, sha256)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny finished no_prior three-body run (trained with non-preset settings) and its data file."""
    d = tmp_path_factory.mktemp("guards")
    data = d / "tb.h5"
    assert main(["simulate", "three-body", "--n", "30", "--frames", "8", "--out", str(data)]) == 0
    argv = ["train", "three-body", "--data", str(data), "--run-dir", str(d / "run"), "--device", "cpu", *TINY_TRAIN]
    assert main(argv) == 0
    return d, data, d / "run"


def _resume(run: Path, *extra: str) -> list[str]:
    return ["train", "three-body", "--run-dir", str(run), "--device", "cpu", "--resume", *extra]


def test_resume_restores_the_run_config_without_repeating_overrides(run, capsys):
    _, _, folder = run
    before = snapshot(folder)
    # the old code rebuilt the preset (hidden 64, no data file) and refused the checkpoint, or changed settings
    assert main(_resume(folder)) == 0, capsys.readouterr().err
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    assert cfg["model"]["hidden"] == 16 and cfg["train"]["steps"] == 20 and cfg["arm"] == "no_prior"
    assert before["checkpoint.pt"] == snapshot(folder)["checkpoint.pt"]  # finished: nothing more trained


@pytest.mark.parametrize(
    "extra, recorded, asked",
    [
        (["--arm", "prior:energy"], "'no_prior'", "'prior:energy'"),
        (["--seed", "3"], "0", "3"),
        (["train.batch_size=4"], "8", "4"),
        (["train.lr=0.5"], None, "0.5"),
    ],
)
def test_resume_refuses_a_changed_arm_seed_or_setting_before_writing(run, capsys, extra, recorded, asked):
    _, _, folder = run
    capsys.readouterr()
    before = snapshot(folder)
    assert main(_resume(folder, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and asked in err, err
    if recorded is not None:
        assert f"checkpoint {recorded} vs now {asked}" in err, err
    assert snapshot(folder) == before  # config.yaml is not rewritten with the new arm, nothing else written


def test_train_arm_refuses_resuming_another_arm(run):
    """The harness's own check (reproduce, the API): a run folder of one arm does not resume as another."""
    from physdiff.config import from_dict, load_yaml_dict
    from physdiff.experiments.config import ExperimentConfig
    from physdiff.experiments.harness import prepare, train_arm
    from physdiff.training.errors import CheckpointError

    _, _, folder = run
    raw = {k: v for k, v in load_yaml_dict(folder / "config.yaml").items() if k not in ("arm", "seed")}
    cfg = from_dict(ExperimentConfig, raw).with_arms(["prior:energy"])
    prep = prepare(cfg, folder / "data", progress=False)
    before = snapshot(folder)
    with pytest.raises(CheckpointError, match="arm: checkpoint 'no_prior' vs now 'prior:energy'"):
        train_arm(prep, "prior:energy", 0, folder, resume=True, progress=False)
    assert snapshot(folder) == before


def test_a_partial_config_file_merges_onto_the_preset(tmp_path, capsys):
    part = tmp_path / "part.yaml"
    part.write_text("train:\n  steps: 7\nmodel:\n  hidden: 24\n")
    assert main(["config", "three-body", "--config", str(part), "train.lr=0.002"]) == 0
    got = yaml.safe_load(capsys.readouterr().out)
    preset = preset_config("three-body", "quick")
    assert got["train"]["steps"] == 7 and got["model"]["hidden"] == 24 and got["train"]["lr"] == 0.002
    assert [p["name"] for p in got["priors"]] == [p.name for p in preset.priors] != []  # the preset's priors stay
    assert got["metrics"] == preset.metrics and got["model"]["layers"] == preset.model.layers
    assert got["train"]["batch_size"] == preset.train.batch_size
    # a list replaces the preset's; another model kind starts from that kind's defaults
    part.write_text("priors: []\nmodel: {kind: transformer, layers: 2}\n")
    assert main(["config", "three-body", "--config", str(part)]) == 0
    got = yaml.safe_load(capsys.readouterr().out)
    assert got["priors"] == [] and got["model"]["kind"] == "transformer" and got["model"]["layers"] == 2
    assert "vector_channels" not in got["model"]
    # a bad key names the file and the key; another experiment's file is refused
    part.write_text("train:\n  stepz: 7\n")
    assert main(["config", "three-body", "--config", str(part)]) == 2
    err = capsys.readouterr().err
    assert str(part) in err and "train.stepz" in err and "'steps'" in err
    part.write_text("experiment: darcy\n")
    assert main(["config", "three-body", "--config", str(part)]) == 2
    assert "'darcy'" in capsys.readouterr().err


def test_reproduce_and_sweep_take_config_and_data(run, tmp_path, capsys, monkeypatch):
    d, data, _ = run
    part = tmp_path / "tiny.yaml"
    tiny = {"model": {"hidden": 16, "layers": 1, "vector_channels": 4}}
    tiny |= {"train": {"steps": 6, "batch_size": 8}, "sample": {"n_test": 3, "batch_size": 3, "constraints": []}}
    part.write_text(yaml.safe_dump(tiny))
    out = tmp_path / "res"
    argv = ["reproduce", "three-body", "--config", str(part), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--seeds", "0", "--arms", "no_prior", "--device", "cpu"]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["hidden"] == 16 and cfg["train"]["steps"] == 6 and cfg["priors"]  # merged, priors kept
    assert cfg["data"]["path"] == str(data.resolve())
    capsys.readouterr()

    import physdiff.experiments.sweep as sweep

    seen = {}

    def fake_sweep(experiment, grid, **kw):
        seen.update(kw, experiment=experiment, grid=grid)
        Path(kw["out"]).mkdir(parents=True)
        (Path(kw["out"]) / "sweep.md").write_text("sweep\n")
        return {}

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    argv = ["sweep", "three-body", "--grid", "priors.0.weight=0.1,1", "--config", str(part), "--data", str(data)]
    assert main([*argv, "--out", str(tmp_path / "sw")]) == 0
    assert seen["config"].train.steps == 6 and seen["config"].priors
    assert f"data.path={data.resolve()}" in seen["overrides"]


def test_simulate_defaults_are_the_quick_presets_and_fields_take_grid_settings(tmp_path, capsys, monkeypatch):
    from physdiff.cli.main import build_parser, simulate_defaults

    monkeypatch.chdir(tmp_path)
    for system, exp in (("three-body", "three-body"), ("five-spring", "five-spring"), ("charged", "nbody-charged")):
        cfg = preset_config(exp, "quick")
        assert simulate_defaults(system) == (cfg.data.n, cfg.data.seed, dict(cfg.data.settings))
    assert main(["simulate", "advection", "--n", "3"]) == 0  # default --out; the preset's grid (nt 32, not 40)
    grid = preset_config("advection", "quick").data.settings
    with h5py.File("data/advection.h5") as f:
        assert f["tensor"].shape == (3, grid["nt"], grid["nx"])
    assert main(["simulate", "burgers", "--n", "2", "nx=16", "nt=8", "--out", "b.h5"]) == 0
    with h5py.File("b.h5") as f:
        assert f["tensor"].shape == (2, 8, 16)
    capsys.readouterr()
    assert main(["simulate", "burgers", "--n", "2", "nz=16", "--out", "c.h5"]) == 2
    assert "nz" in capsys.readouterr().err and not Path("c.h5").exists()
    assert main(["simulate", "burgers", "--n", "2", "--frames", "8", "--out", "c.h5"]) == 2
    assert "nt=" in capsys.readouterr().err
    text = build_parser().verbs["simulate"].format_help()
    assert "data/three_body.h5" in text and "quick preset" in text


def test_resume_may_continue_a_run_to_more_steps(run, tmp_path, capsys):
    """train.steps alone may change on --resume (the same run, continued): the run trains on from its checkpoint to
    the new count and records it; every other setting still has to agree."""
    import shutil

    _, _, folder = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    assert main(_resume(copy, "train.steps=24")) == 0, capsys.readouterr().err
    assert yaml.safe_load((copy / "config.yaml").read_text())["train"]["steps"] == 24
    from physdiff.training.checkpoint import load_checkpoint

    assert int(load_checkpoint(copy / "checkpoint.pt")["step"]) == 24
    assert main(_resume(copy, "train.steps=28", "train.batch_size=4")) == 2  # another setting beside it: refused
