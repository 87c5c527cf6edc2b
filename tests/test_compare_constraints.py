"""physdiff compare-constraints on a tiny advection table: the rows, pairing, costs, refusals and report
(untrained networks stand in for the trained arms: the comparison's bookkeeping is what is tested here; the
methods' maths is tested in tests/test_constraint_methods.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from physdiff.cli.main import main
from physdiff.experiments.compare_constraints import compare_constraints, parse_methods

TINY = [
    "data.n=40",
    "model.base_channels=8",
    "model.channel_mults=[1,2]",
    "sample.steps=4",
    "sample.n_test=4",
    "sample.batch_size=4",
    "data.settings.nx=16",
    "data.settings.nt=8",
    "data.settings.k_max=1",
]


def _untrained(prep, arm, seed, run_dir, **kw):
    """Both arms of a seed get the same untrained network (the harness initialises from the seed alone), its
    weights perturbed so that its output (zero-initialised last layer) is not a trivial solution of the law."""
    torch.manual_seed(seed)
    tensors = prep.task.to_tensors(prep.train, prep.scaling, prep.cfg.subtasks[0])
    den = prep.task.build_denoiser(prep.scaling, tensors).eval()
    with torch.no_grad():
        for w in den.parameters():
            w.add_(0.05 * torch.randn_like(w))
    return den


def test_compare_constraints_rows_pairs_costs_and_refusals(tmp_path):
    methods = ["penalty", "projection", "pcfm", "eci", "diffusionpde", "dps"]
    res = compare_constraints(
        "advection",
        methods,
        out=tmp_path / "cc",
        overrides=TINY,
        seeds=[0, 1],
        device="cpu",
        progress=False,
        method_options={"dps": {"scale": 1e-3}, "diffusionpde": {"scale": 1e-3}},
        train=_untrained,
    )
    rows = res["rows"]
    assert set(res["refused"]) == {"vp: pcfm", "vp: eci"}  # defined on the flow path only
    assert "does not apply to diffusion.process='vp'" in res["refused"]["vp: pcfm"]
    expected = {f"{p}: {m}" for p in ("vp", "flow") for m in ["no_prior", *methods]} - set(res["refused"])
    assert set(rows) == expected
    law = "law:residual"
    assert res["keys"][:1] == [law] and {"rmse", "mmd", "evaluations", "seconds"} <= set(res["keys"])
    for p in ("vp", "flow"):
        base = rows[f"{p}: no_prior"]
        # the same model and noise: the penalty arm's (here identical) network gives the same samples
        assert rows[f"{p}: penalty"][law]["per_seed"] == base[law]["per_seed"]
        # an exact method meets the law to float32 precision, far below the unconstrained model
        assert rows[f"{p}: projection"][law]["mean"] < 1e-4 * base[law]["mean"]
        # network evaluations per sample: dpmpp2m's 4 steps + the final denoise; loop methods one per step
        assert rows[f"{p}: projection"]["evaluations"]["mean"] == 5
        assert rows[f"{p}: dps"]["evaluations"]["mean"] == 4
        pair = res["paired"][f"{p}: projection"][law]
        assert pair["against"] == f"{p}: no_prior" and pair["n"] == 2 and pair["mean_diff"] < 0
    for m in ("pcfm", "eci"):
        assert rows[f"flow: {m}"][law]["mean"] < 1e-4 * rows["flow: no_prior"][law]["mean"]
    assert res["floor"][law] > 0 and "mmd" in res["floor"]
    assert np.isfinite(rows["flow: pcfm"]["mmd"]["mean"])
    out = tmp_path / "cc"
    table = (out / "table.md").read_text()
    assert "| flow: pcfm |" in table and "ground-truth floor" in table and "Not run: vp: eci" in table
    assert json.loads((out / "results.json").read_text())["methods"] == methods
    assert (out / "plots" / "compare_constraints_advection.png").is_file()
    assert "compare_constraints_advection" in (out / "report.html").read_text()


def test_bad_method_lists_and_settings_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['teleport'\]"):
        parse_methods("penalty,teleport")
    with pytest.raises(ValueError, match="listed twice"):
        parse_methods("dps,dps")
    argv = ["compare-constraints", "advection", "--methods", "pcfm,nope", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
    argv = ["compare-constraints", "advection", "--methods", "dps", "--set", "dps", "--out", str(tmp_path / "y")]
    assert main(argv) == 2
    assert "METHOD.KEY=VALUE" in capsys.readouterr().err
    argv = ["compare-constraints", "advection", "--methods", "dps", "--set", "pcfm.penalty=1", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--set: options for ['pcfm']" in capsys.readouterr().err


def test_the_preset_defaults_to_quick_on_the_command_line(tmp_path, capsys):
    # without --preset the CLI passes preset=None, which must mean quick (the help's default), not "no preset None";
    # an unknown method setting then stops the call before any training, naming the setting
    argv = ["compare-constraints", "advection", "--methods", "dps", "--set", "dps.bogus=1", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no preset None" not in err and "bogus" in err
