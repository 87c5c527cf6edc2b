"""The README's multi-process commands, as written: `torchrun … -m physdiff.cli.main train|reproduce` with
2 gloo processes on CPU give what one process gives (the global batch is the same; sampling is shared out
by batches seeded by their index)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from physdiff.cli.main import main
from physdiff.training.checkpoint import load_checkpoint
from test_reproduce_particles import TINY

TWO = TINY + ["sample.constraints=[]", "train.batch_size=8"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([*cmd, "physdiff.cli.main", *args], capture_output=True, text=True, env=env, timeout=600)


def _losses(run) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_torchrun_train_matches_one_process(tmp_path):
    data = tmp_path / "springs.h5"
    assert main(["simulate", "five-spring", "--n", "60", "--frames", "8", "--out", str(data)]) == 0
    common = ["train", "five-spring", "--arm", "prior:momentum", "--device", "cpu", "--data", str(data), *TWO]
    assert main([*common, "--run-dir", str(tmp_path / "one")]) == 0
    res = torchrun(*common, "--run-dir", str(tmp_path / "two"))
    assert res.returncode == 0, res.stderr[-3000:]
    # the console and run.log say that torchrun ran it, with the world size
    assert "world size 2 (torchrun" in res.stderr and "world size 2 (torchrun" in (tmp_path / "two/run.log").read_text()
    one, two = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("one", "two"))
    assert one["step"] == two["step"] == 30
    # the logged loss is the global batch's (all-reduced), not rank 0's half: equal up to the float32
    # rounding of a mean taken in another order (~1e-7 per term, far below 1e-4)
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-4)
    # the weights: the mean over ranks rounds differently from the mean over the batch, and Adam normalises
    # each coordinate's step to ~lr, so a tiny gradient can move by up to lr per step; the two runs must
    # still agree to less than one optimiser step (lr = 2e-3) — a rank training on the wrong half, or without
    # gradient synchronisation, drifts by many steps
    lr = 2e-3
    worst = max(float((v - two["ema"]["model"][k]).abs().max()) for k, v in one["ema"]["model"].items())
    assert worst < lr, worst

    # `physdiff sample` under torchrun: the ranks share the batches (seeded by their index), rank 0 writes
    # what one process writes
    run = str(tmp_path / "one")
    opts = ["--device", "cpu", "--steps", "4", "sample.batch_size=2"]
    assert main(["sample", run, "--out", str(tmp_path / "s1.h5"), *opts]) == 0
    res = torchrun("sample", run, "--out", str(tmp_path / "s2.h5"), *opts)
    assert res.returncode == 0, res.stderr[-3000:]
    with h5py.File(tmp_path / "s1.h5") as f1, h5py.File(tmp_path / "s2.h5") as f2:
        assert f1["positions"].shape[0] >= 4  # several batches, shared by the two ranks
        for key in ("positions", "velocities", "source_indices"):  # same ops on the same batch: float32 noise
            np.testing.assert_allclose(f2[key][()], f1[key][()], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_torchrun_reproduce_matches_one_process(tmp_path):
    common = ["reproduce", "five-spring", "--seeds", "0", "--arms", "no_prior", "--device", "cpu"]
    common += ["--cache-dir", str(tmp_path / "data"), *TWO]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    res = torchrun(*common, "--out", str(tmp_path / "two"))
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    for key, m in one["arms"]["no_prior"].items():
        assert two["arms"]["no_prior"][key]["mean"] == pytest.approx(m["mean"], rel=1e-3), key
    assert (tmp_path / "two" / "table.md").is_file()
