"""Training loop: learns a toy, resumes bit-for-bit, DDP(gloo) equals one process, refuses bad checkpoints."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from physdiff.diffusion import Denoiser, make_schedule, sample
from physdiff.models.mlp import MLPDenoiser
from physdiff.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from physdiff.training.trainer import TrainConfig, load_ema_weights, train

MU = torch.tensor([2.0, -1.0])
COV = torch.tensor([[0.5, 0.3], [0.3, 0.4]])


def toy_data(n=2048, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x0": MU + torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(COV).T}


def make_denoiser(seed=0):
    torch.manual_seed(seed)
    return Denoiser(MLPDenoiser(2, hidden=64, layers=2), make_schedule("linear"), prediction="eps")


def test_toy_model_learns_first_two_moments(tmp_path):
    """Trained on n = 8192 draws of N(μ, Σ) and sampled n times with DDPM-200, the model's moments match the
    training data's within Monte-Carlo error: 4 standard errors of the difference of two samples of size n
    (the model may land anywhere between the population and the empirical distribution it saw)."""
    n = 8192
    data = toy_data(n)
    den = make_denoiser()
    cfg = TrainConfig(
        steps=3000, batch_size=256, lr=3e-3, warmup=50, ema_decay=0.99, log_every=200, checkpoint_every=10_000
    )
    train(den, data, cfg, tmp_path, progress=False)
    load_ema_weights(den, tmp_path / "checkpoint.pt")
    x = sample(den, (n, 2), sampler="ddpm", steps=200, generator=torch.Generator().manual_seed(0))
    emp = data["x0"]
    # standard errors of a mean sqrt(Σ_ii/n) and of a covariance sqrt((Σ_ii Σ_jj + Σ_ij²)/n), for two samples
    se_mean = (2 * torch.diag(COV) / n).sqrt()
    se_cov = (2 * (torch.outer(torch.diag(COV), torch.diag(COV)) + COV**2) / n).sqrt()
    assert ((x.mean(0) - emp.mean(0)).abs() <= 4 * se_mean).all(), x.mean(0)
    assert ((torch.cov(x.T) - torch.cov(emp.T)).abs() <= 4 * se_cov).all(), torch.cov(x.T)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 1 + 15


def test_resume_is_bit_for_bit(tmp_path):
    cfg = TrainConfig(steps=40, batch_size=32, log_every=10, checkpoint_every=20)
    full = make_denoiser()
    train(full, toy_data(256), cfg, tmp_path / "full", progress=False)

    part = make_denoiser()
    cfg_half = TrainConfig(steps=20, batch_size=32, log_every=10, checkpoint_every=20)
    train(part, toy_data(256), cfg_half, tmp_path / "part", progress=False)
    resumed = make_denoiser(seed=123)  # different init: everything must come from the checkpoint
    train(resumed, toy_data(256), cfg, tmp_path / "part", resume=True, progress=False)
    for a, b in zip(full.net.state_dict().values(), resumed.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len((tmp_path / "part" / "metrics.csv").read_text().splitlines()) == 1 + 4


def test_checkpoint_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    # a checkpoint of another config is refused and left untouched
    cfg = TrainConfig(steps=5, batch_size=8, log_every=5)
    run = tmp_path / "run"
    train(make_denoiser(), toy_data(64), cfg, run, config_dict={"model": {"hidden": 64}}, progress=False)
    before = (run / "checkpoint.pt").read_bytes()
    cfg10 = TrainConfig(steps=10, batch_size=8, log_every=5)
    with pytest.raises(CheckpointError, match="model.hidden"):
        train(
            make_denoiser(),
            toy_data(64),
            cfg10,
            run,
            config_dict={"model": {"hidden": 32}},
            resume=True,
            progress=False,
        )
    assert (run / "checkpoint.pt").read_bytes() == before


def test_atomic_save_leaves_no_temp_files(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}, "step": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 1


def test_nan_data_refused(tmp_path):
    data = toy_data(16)
    data["x0"][3, 1] = float("nan")
    with pytest.raises(ValueError, match="'x0' contains NaN"):
        train(make_denoiser(), data, TrainConfig(steps=2, batch_size=4), tmp_path, progress=False)


DDP_SCRIPT = r"""
import sys, torch
sys.path.insert(0, {tests!r})
from test_training import make_denoiser, toy_data
from physdiff.training.distributed import init_distributed, cleanup
from physdiff.training.trainer import TrainConfig, train
info = init_distributed(torch.device("cpu"))
den = make_denoiser()
train(den, toy_data(128), TrainConfig(steps=6, batch_size=16, log_every=3), {out!r}, dist_info=info,
      progress=False)
cleanup(info)
"""


def test_ddp_gloo_matches_single_process(tmp_path):
    single = make_denoiser()
    train(
        single,
        toy_data(128),
        TrainConfig(steps=6, batch_size=16, log_every=3),
        tmp_path / "one",
        progress=False,
    )
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path / "two")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",  # rendezvous on a free port (a fixed port collides with concurrent suites)
            str(script),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    two = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["model"]
    for k, v in single.net.state_dict().items():
        assert torch.allclose(v, two[k], atol=1e-5), k
