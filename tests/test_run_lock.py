"""The run-folder lock: one writer at a time, the second fails at once naming the holder; stale locks of dead
processes are taken over; ``train`` holds the lock, and a refused second training changes nothing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from physdiff.training.checkpoint import load_checkpoint, save_checkpoint
from physdiff.training.errors import RunLockedError
from physdiff.training.lock import LOCK_NAME, RunLock, read_lock_holder
from physdiff.training.trainer import TrainConfig, train
from test_training import make_denoiser, toy_data

TESTS = str(Path(__file__).parent)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# holds the lock of argv[1] until a line arrives on stdin; must not need torch
HOLDER = r"""
import sys
from physdiff.training.errors import CheckpointError, RunLockedError
from physdiff.training.lock import RunLock
assert "torch" not in sys.modules, "the lock and the errors must be importable without torch"
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def start_holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    line = proc.stdout.readline()
    assert line == "locked\n", proc.stderr.read()
    return proc


def lockable_by_another_process(run_dir: Path) -> bool:
    code = "import sys\nfrom physdiff.training.lock import RunLock\nwith RunLock(sys.argv[1]): pass"
    return subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, env=ENV).returncode == 0


def test_second_writer_fails_at_once_naming_the_folder_and_the_holder(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": {"w": torch.ones(2)}, "step": 3})
    holder = start_holder(tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(RunLockedError) as err:
            RunLock(tmp_path).acquire()
        assert time.monotonic() - t0 < 1.0  # at once, not after waiting
        assert str(tmp_path) in str(err.value) and f"pid {holder.pid}" in str(err.value)
        assert err.value.pid == holder.pid and err.value.run_dir == str(tmp_path)
        assert isinstance(err.value, RuntimeError)
        assert read_lock_holder(tmp_path)["pid"] == holder.pid
        assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3  # readers do not lock
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0, holder.stderr
    assert not (tmp_path / LOCK_NAME).exists()  # released and removed by the holder
    with RunLock(tmp_path):
        assert read_lock_holder(tmp_path)["pid"] == os.getpid()


def test_lock_is_reentrant_in_one_process_and_released_on_exceptions(tmp_path):
    with pytest.raises(ValueError, match="boom"):
        with RunLock(tmp_path):
            with RunLock(tmp_path):  # e.g. a harness locks the folder, then calls train on it
                pass
            assert (tmp_path / LOCK_NAME).exists() and not lockable_by_another_process(tmp_path)
            raise ValueError("boom")
    assert not (tmp_path / LOCK_NAME).exists()
    assert lockable_by_another_process(tmp_path)


def test_stale_lock_of_a_killed_process_is_taken_over_with_a_note(tmp_path):
    holder = start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert read_lock_holder(tmp_path)["pid"] == holder.pid  # the file stays, its pid is dead
    with pytest.warns(UserWarning, match=f"stale lock .* pid {holder.pid} .*no longer holds it"):
        with RunLock(tmp_path):
            assert read_lock_holder(tmp_path)["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_file_of_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_NAME).write_text(f'{{"pid": {pid}, "host": "somewhere", "since": "earlier"}}\n')
    with pytest.warns(UserWarning, match=f"pid {pid} on host somewhere"):
        with RunLock(tmp_path):
            pass


# the first training: blocks after its first update until told to go on
FIRST = r"""
import sys
sys.path.insert(0, {tests!r})
from test_training import make_denoiser, toy_data
from physdiff.training.ema import EMA
from physdiff.training.trainer import TrainConfig, train

update = EMA.update


def update_then_wait(self, model):
    update(self, model)
    if self.num_updates == 1:
        print("training", flush=True)
        sys.stdin.readline()


EMA.update = update_then_wait
train(make_denoiser(), toy_data(128), TrainConfig(**{cfg!r}), sys.argv[1], progress=False)
"""
CFG = dict(steps=30, batch_size=16, log_every=5, checkpoint_every=10)


def test_two_trainings_into_one_folder(tmp_path):
    run = tmp_path / "run"
    script = tmp_path / "first.py"
    script.write_text(FIRST.format(tests=TESTS, cfg=CFG))
    first = subprocess.Popen(
        [sys.executable, str(script), str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert first.stdout.readline() == "training\n", first.stderr.read()
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        t0 = time.monotonic()
        with pytest.raises(RunLockedError, match=f"run folder {run} is locked .*pid {first.pid}"):
            train(make_denoiser(), toy_data(128), TrainConfig(**CFG), run, resume=True, progress=False)
        assert time.monotonic() - t0 < 2.0
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # the refused one wrote nothing
    finally:
        first.communicate("\n", timeout=120)
    assert first.returncode == 0, first.stderr[-3000:]

    lone = tmp_path / "lone"
    train(make_denoiser(), toy_data(128), TrainConfig(**CFG), lone, progress=False)
    a, b = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(lone / "checkpoint.pt")
    assert a["step"] == b["step"] == CFG["steps"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["ema"]["model"].items():
        assert torch.equal(v, b["ema"]["model"][k]), k
    for i, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)

    def no_time(path):
        return [line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]  # elapsed_s is the last column

    assert no_time(run / "metrics.csv") == no_time(lone / "metrics.csv")
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in lone.iterdir())
