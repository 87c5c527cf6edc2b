"""A The Well file (written here in its documented layout) is trained, sampled and evaluated through the
field task: `physdiff reproduce the-well --data FILE`, `physdiff evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from physdiff.cli.main import main
from physdiff.data.the_well import write_the_well

TINY = ["train.steps=12", "train.batch_size=4", "model.base_channels=8", "model.channel_mults=[1,2]"]
TINY += ["sample.steps=4", "sample.n_test=3", "sample.batch_size=3", "train.log_every=6"]


def _well_file(path, n=20, frames=5, nx=8, ny=8, seed=0):
    """Travelling periodic waves: a scalar h and a vector field (two channels), periodic in x, walls in y."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 0.4, frames)
    x = np.arange(nx) / nx
    y = (np.arange(ny) + 0.5) / ny
    k = rng.integers(1, 3, size=n)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    tt, xx, yy = np.meshgrid(t, x, y, indexing="ij")
    h = 1.0 + 0.2 * np.sin(2 * np.pi * k[:, None, None, None] * (xx - 0.5 * tt) + phase[:, None, None, None])
    v = np.stack([np.cos(np.pi * yy)[None].repeat(n, 0), 0.1 * h], axis=-1)
    write_the_well(path, {"h": h, "velocity": v}, t=t, x=x, y=y, periodic=(True, False), dataset_name="waves")
    return path


def test_the_well_file_trains_samples_and_evaluates(tmp_path, capsys):
    data = _well_file(tmp_path / "waves.hdf5")
    out = tmp_path / "res"
    argv = ["reproduce", "the-well", "--data", str(data), "--out", str(out), "--seeds", "0", "--device", "cpu", *TINY]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["arms"]) == {"no_prior"}  # no residual is known for such a file
    m = res["arms"]["no_prior"]
    assert np.isfinite(m["rmse"]["mean"]) and np.isfinite(m["nrmse"]["mean"])
    run = out / "arms" / "no_prior" / "seed0"
    cfg = (run / "config.yaml").read_text()
    assert "the-well:waves" in cfg
    # the U-Net of the 3 channels × 5 frames is periodic in x only (from the file's boundary conditions)
    import physdiff

    r = physdiff.load_run(run)
    assert r.task.layout(r.prepared.scaling).periodic == (True, False)
    assert r.data.channels == ("h", "velocity_x", "velocity_y")
    # samples are written in The Well's layout and evaluated against the file
    js = tmp_path / "m.json"
    assert main(["evaluate", str(run / "samples_prediction.h5"), "--reference", str(data), "--json", str(js)]) == 0
    ev = json.loads(js.read_text())
    assert ev["metrics"]["rmse"]["mean"] == pytest.approx(m["rmse"]["per_seed"][0], rel=1e-9)
    capsys.readouterr()
    assert main(["reproduce", "the-well", "--out", str(tmp_path / "x"), *TINY]) == 2
    assert "--data FILE" in capsys.readouterr().err
