"""Training loop: learns a toy, resumes bit-for-bit, DDP(gloo) equals one process (and logs the global loss),
refuses bad checkpoints; checkpoint hygiene: checksums, fallback to the previous checkpoint, old formats refused,
stale temp files removed, metrics.csv without duplicate steps after a resume."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from physdiff.diffusion import Denoiser, make_schedule, sample
from physdiff.models.mlp import MLPDenoiser
from physdiff.training.checkpoint import CheckpointError, load_checkpoint, previous_path, save_checkpoint
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
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}, "step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.prev.pt", "c.pt"]
    assert load_checkpoint(tmp_path / "c.prev.pt")["step"] == 1


def states_equal(a, b) -> bool:
    """Bit-identical model, EMA and optimiser states."""
    flat_a, flat_b = [], []
    for flat, s in ((flat_a, a), (flat_b, b)):
        flat += list(s["model"].values()) + list(s["ema"]["model"].values())
        flat += [v for st in s["optimizer"]["state"].values() for v in st.values()]
    return len(flat_a) == len(flat_b) and all(torch.equal(x, y) for x, y in zip(flat_a, flat_b, strict=True))


def two_checkpoints(run, steps=8, every=4):
    cfg = TrainConfig(steps=steps, batch_size=8, log_every=1, checkpoint_every=every)
    train(make_denoiser(), toy_data(64), cfg, run, progress=False)
    return run / "checkpoint.pt", run / "checkpoint.prev.pt"


def test_checkpoint_has_a_checksum_and_plain_torch_load_reads_it(tmp_path):
    newest, prev = two_checkpoints(tmp_path)
    assert prev == previous_path(newest)
    plain = torch.load(newest, weights_only=True)  # the checksum lives in the zip comment
    assert plain["format_version"] == 2 and plain["step"] == 8
    assert newest.read_bytes()[-80:-64] == b"physdiff-sha256:"
    assert load_checkpoint(prev)["step"] == 4


def test_a_flipped_byte_anywhere_in_the_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    newest, prev = two_checkpoints(tmp_path)
    good = newest.read_bytes()
    n = len(good)
    positions = sorted({*range(0, n, max(n // 150, 1)), *range(n - 120, n)})  # spread out, plus the whole tail
    for i in positions:
        bad = bytearray(good)
        bad[i] ^= 0x01
        newest.write_bytes(bad)
        with pytest.warns(UserWarning, match=f"{newest}.*corrupt.*falling back to the previous checkpoint {prev}"):
            assert load_checkpoint(newest)["step"] == 4, i
    newest.write_bytes(good[: n // 2])  # truncated
    with pytest.warns(UserWarning, match=f"{newest} is corrupt .*truncated.*falling back"):
        assert load_checkpoint(newest)["step"] == 4
    prev.write_bytes(prev.read_bytes()[:-1])  # both bad: a clear error naming both
    with pytest.raises(CheckpointError, match=f"{newest} is corrupt.*previous checkpoint {prev} is unusable too"):
        load_checkpoint(newest)
    prev.unlink()  # only the newest, and bad
    with pytest.raises(CheckpointError, match=f"{newest} is corrupt.*no previous checkpoint"):
        load_checkpoint(newest)


def test_resume_from_a_damaged_newest_checkpoint_continues_bit_for_bit(tmp_path):
    ref_run = tmp_path / "ref"
    two_checkpoints(ref_run, steps=12)
    newest, prev = two_checkpoints(tmp_path / "run", steps=8)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x10
    newest.write_bytes(data)
    cfg = TrainConfig(steps=12, batch_size=8, log_every=1, checkpoint_every=4)
    resumed = make_denoiser(seed=123)
    with pytest.warns(UserWarning, match="falling back to the previous checkpoint"):
        with pytest.warns(UserWarning, match="moved the damaged checkpoint aside to .*checkpoint.pt.corrupt"):
            train(resumed, toy_data(64), cfg, tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "checkpoint.pt.corrupt").read_bytes() == bytes(data)  # kept aside, named
    assert states_equal(load_checkpoint(newest), load_checkpoint(ref_run / "checkpoint.pt"))
    assert states_equal(load_checkpoint(prev), load_checkpoint(ref_run / "checkpoint.prev.pt"))
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 13))


def test_old_format_checkpoint_is_refused_with_a_clear_message(tmp_path):
    den = make_denoiser()
    old = {"format_version": 1, "model": den.net.state_dict(), "step": 5, "ema": {}, "optimizer": {}, "config": {}}
    torch.save(old, tmp_path / "checkpoint.pt")  # what physdiff wrote before (no checksum)
    with pytest.raises(CheckpointError, match="older physdiff .*format 1.*log σ/α.*retrain"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match="older physdiff"):
        train(den, toy_data(64), TrainConfig(steps=8, batch_size=8), tmp_path, resume=True, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_stale_temp_files_removed_and_metrics_truncated_on_resume(tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(steps=16, batch_size=8, log_every=1, checkpoint_every=10)
    train(make_denoiser(), toy_data(64), cfg, run, progress=False)
    # as if killed at step 16 before its checkpoint: the newest is step 10, the log ran ahead, writes were cut
    os.replace(run / "checkpoint.prev.pt", run / "checkpoint.pt")
    with open(run / "metrics.csv", "a") as f:
        f.write("17,0.5,0.5")
    stale = [run / ".checkpoint.pt.abc123.tmp", run / ".checkpoint.prev.pt.x.tmp", run / ".metrics.csv.y.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    (run / "notes.tmp").write_text("not ours")
    cfg20 = TrainConfig(steps=20, batch_size=8, log_every=1, checkpoint_every=10)
    resumed = make_denoiser(seed=123)
    train(resumed, toy_data(64), cfg20, run, resume=True, progress=False)
    assert not any(p.exists() for p in stale) and (run / "notes.tmp").exists()
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 21))  # no duplicates, no half line
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert elapsed == sorted(elapsed)  # continues the interrupted run's clock
    ref = make_denoiser()
    train(ref, toy_data(64), cfg20, tmp_path / "ref", progress=False)
    for a, b in zip(ref.net.state_dict().values(), resumed.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_without_a_checkpoint_says_so_and_starts_fresh(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=8, log_every=2)
    fresh, resumed = make_denoiser(), make_denoiser()
    train(fresh, toy_data(64), cfg, tmp_path / "a", progress=False)
    with pytest.warns(UserWarning, match=f"no checkpoint {tmp_path / 'b' / 'checkpoint.pt'} found; starting from"):
        state = train(resumed, toy_data(64), cfg, tmp_path / "b", resume=True, progress=False)
    assert state.step == 6
    for a, b in zip(fresh.net.state_dict().values(), resumed.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_fresh_run_in_a_used_folder_drops_the_old_runs_previous_checkpoint(tmp_path):
    two_checkpoints(tmp_path, steps=8, every=4)
    cfg = TrainConfig(steps=3, batch_size=8, checkpoint_every=10)
    train(make_denoiser(1), toy_data(64), cfg, tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert not (tmp_path / "checkpoint.prev.pt").exists()  # a fallback can never reach the old run


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
    # the logged loss is the global batch's (all ranks), not rank 0's half
    logs = {}
    for name in ("one", "two"):
        with open(tmp_path / name / "metrics.csv", newline="") as f:
            logs[name] = [(int(r["step"]), float(r["loss"]), float(r["loss_score"])) for r in csv.DictReader(f)]
    assert [r[0] for r in logs["two"]] == [r[0] for r in logs["one"]] == [3, 6]
    for (_, l1, s1), (_, l2, s2) in zip(logs["one"], logs["two"], strict=True):
        assert l2 == pytest.approx(l1, rel=1e-5) and s2 == pytest.approx(s1, rel=1e-5)
