"""`diffusion.process=flow` runs through the same harness, tasks, priors and constraints as VP."""

from __future__ import annotations

import json

import numpy as np

from physdiff.cli.main import main
from test_reproduce_fields import SIZES
from test_reproduce_fields import TINY as FIELD_TINY
from test_reproduce_particles import TINY

FLOW = ["diffusion.process=flow", "diffusion.prediction=v", "train.objective=v", "sample.sampler=heun"]


def test_particle_and_field_tables_with_flow_matching(tmp_path, capsys):
    out = tmp_path / "springs"
    argv = ["reproduce", "five-spring", "--out", str(out), "--seeds", "0", "--arms", "no_prior,prior:momentum"]
    argv += ["--device", "cpu", *TINY, *FLOW, "sample.constraints=[{priors: [momentum]}]"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert all(np.isfinite(m["mean"]) for arm in res["arms"].values() for m in arm.values())
    # the sampling-time projection acts on the flow's x̂0 = x_t − t v̂ just as on VP's
    assert res["sampling_constraints"]["no_prior + projection:momentum"]["momentum_error"]["mean"] < 1e-4
    cfg = (out / "arms" / "no_prior" / "seed0" / "config.yaml").read_text()
    assert "process: flow" in cfg

    out = tmp_path / "adv"
    argv = ["reproduce", "advection", "--out", str(out), "--seeds", "0", "--device", "cpu", *FIELD_TINY]
    argv += [*SIZES["advection"], *FLOW, "sample.constraints=[]"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["arms"]) == {"no_prior", "prior:residual"}
    assert all(np.isfinite(res["arms"][a][k]["mean"]) for a in res["arms"] for k in ("rmse", "constraint_rmse"))
    capsys.readouterr()


def test_flow_with_noise_prediction_or_a_cosine_schedule_is_refused(capsys):
    assert main(["config", "three-body", "diffusion.process=flow", "diffusion.prediction=eps"]) == 2
    assert "predict 'v' or 'x0'" in capsys.readouterr().err
    assert main(["config", "three-body", "diffusion.process=flow", "diffusion.schedule=cosine"]) == 2
    assert "linear interpolant" in capsys.readouterr().err
