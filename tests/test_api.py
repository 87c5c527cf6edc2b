"""The public run API (physdiff.load_run → Run.sample / Run.evaluate), and the README's example run as
written."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

import physdiff
from physdiff.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = ["train.steps=30", "train.batch_size=8", "model.hidden=16", "model.layers=1", "model.vector_channels=4"]
TINY += ["sample.steps=5", "sample.n_test=6", "sample.batch_size=6", "sample.constraints=[]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny three-body run trained from a simulated file, in a fresh working directory."""
    root = tmp_path_factory.mktemp("api")
    data = root / "data" / "three_body.h5"
    assert main(["simulate", "three-body", "--n", "60", "--frames", "8", "--seed", "0", "--out", str(data)]) == 0
    run = root / "runs" / "tb-base"
    argv = ["train", "three-body", "--run-dir", str(run), "--device", "cpu", f"data.path={data}", *TINY]
    assert main(argv) == 0
    return root, data, run


def test_load_run_samples_from_user_conditions_and_the_test_split(trained):
    root, data, run = trained
    r = physdiff.load_run(run)
    assert r.arm == "no_prior" and r.config.experiment == "three-body"
    with h5py.File(data) as f:
        cond = {k: f[k][:3, 0] for k in ("positions", "velocities")} | {"masses": f["masses"][:3]}
        truth_frames = f["positions"].shape[1]
    out = r.sample(condition=cond, steps=4)
    assert out["positions"].shape == (3, truth_frames, 3, 3) and out["velocities"].shape == (3, truth_frames, 3, 3)
    assert np.allclose(out["positions"][:, 0], cond["positions"], atol=1e-5)  # the condition is kept
    assert "source_indices" not in out
    test = r.sample(n=4, steps=4)
    assert test["source_indices"].shape == (4,)
    m = r.evaluate(test, reference=data)
    assert set(m) >= {"traj_error", "vel_error", "energy_error", "momentum_error", "dynamic_error"}
    assert all(np.isfinite(v["mean"]) and v["n"] == 4 for v in m.values())
    # the same seed gives the same samples; a sampling-time constraint is an argument
    again = r.sample(n=4, steps=4)
    assert np.array_equal(again["positions"], test["positions"])
    projected = r.sample(n=4, steps=4, constraints=[{"priors": ["momentum"]}])
    assert r.evaluate(projected)["momentum_error"]["mean"] < 1e-4 < m["momentum_error"]["mean"]
    guided = r.sample(n=4, steps=4, constraints=[{"priors": ["momentum"], "mode": "dps", "scale": 0.1}])
    assert np.isfinite(guided["positions"]).all() and not np.array_equal(guided["positions"], test["positions"])
    with pytest.raises(ValueError, match="mode 'pcfm' does not apply to diffusion.process='vp'"):
        r.sample(n=4, steps=4, constraints=[{"priors": ["momentum"], "mode": "pcfm"}])
    with pytest.raises(ValueError, match="source_indices"):
        r.evaluate(out)
    with pytest.raises(ValueError, match="first frames"):
        r.sample(condition={"positions": np.zeros((2, 4, 3)), "velocities": np.zeros((2, 4, 3))})
    with pytest.raises(FileNotFoundError, match="not a trained run folder"):
        physdiff.load_run(root)


def test_readme_api_example_runs_as_written(trained, monkeypatch, capsys):
    root, _, _ = trained
    text = README.read_text()
    block = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README.md lost its API example (marked <!-- api-example -->)"
    monkeypatch.chdir(root)
    exec(compile(block.group(1), "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_evaluate_refuses_a_reference_that_is_not_the_samples_like_the_cli(trained, capsys):
    """``Run.evaluate(samples, reference=FILE)`` of another file's rows: refused with ``physdiff evaluate``'s
    check and message (the old API returned metrics against the wrong rows without a word)."""
    root, data, run = trained
    other, longer = root / "other.h5", root / "longer.h5"
    assert main(["simulate", "three-body", "--n", "60", "--frames", "8", "--seed", "1", "--out", str(other)]) == 0
    assert main(["simulate", "three-body", "--n", "60", "--frames", "12", "--seed", "0", "--out", str(longer)]) == 0
    r = physdiff.load_run(run)
    test = r.sample(n=3, steps=3)
    with pytest.raises(ValueError, match="was not generated from") as api:
        r.evaluate(test, reference=other)
    with pytest.raises(ValueError, match=r"do not match the reference .* in L, K or D"):
        r.evaluate(test, reference=longer)
    with pytest.raises(ValueError, match="out of range"):
        r.evaluate(test | {"source_indices": test["source_indices"] + 1000})
    assert r.evaluate(test, reference=data)["traj_error"]["n"] == 3  # its own file still evaluates
    samples = root / "s.h5"
    assert main(["sample", str(run), "--n", "3", "--steps", "3", "--out", str(samples)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(samples), "--reference", str(other)]) == 2
    cli = capsys.readouterr().err
    reason = str(api.value).split(f"was not generated from {other}: ", 1)[1].split("(max |difference|")[0]
    assert f"was not generated from {other}: {reason}" in cli, (cli, str(api.value))
