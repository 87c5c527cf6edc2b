"""Ctrl-C and SIGKILL at many points of a training run, then ``resume``: bit-for-bit the uninterrupted run.

Two kinds of interruption, each in a subprocess:

* SIGINT sent by the process to itself at exact points (inside the forward pass, gradient clipping, right
  after the optimiser step, inside the EMA update, inside a metrics row, inside the periodic, interrupt and
  final checkpoint writes, twice, and before the first step). The semantics fix the step of the checkpoint
  left behind: the number of updates completed when the interrupt is acted on (an update, a log row and a
  checkpoint write finish first).
* SIGINT (twice in a row) and SIGKILL sent from outside at whatever point the run has reached, SIGKILL
  between keeping the previous checkpoint and renaming the new one, and SIGKILL inside a checkpoint write,
  one after the other on one run folder.

Every time, a checkpoint labelled k (and its previous one) equals the checkpoint of an uninterrupted run
stopped at k (model, EMA, optimiser), and resuming ends with weights bit-identical to an uninterrupted run
and a metrics.csv with exactly one row per logged step.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from physdiff.training.checkpoint import load_checkpoint, previous_path
from physdiff.training.trainer import TrainConfig, train
from test_training import make_denoiser, toy_data

TESTS = str(Path(__file__).parent)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# ------------------------------------------------------------------------------------------ helpers
_reference_cache: dict = {}


def reference(tmp_path_factory, n_data: int, k: int, **cfg) -> dict:
    """The checkpoint of an uninterrupted run stopped at step k (the lr schedule does not depend on ``steps``)."""
    key = (n_data, k, tuple(sorted(cfg.items())))
    if key not in _reference_cache:
        run = tmp_path_factory.mktemp("reference")
        train(make_denoiser(), toy_data(n_data), TrainConfig(**{**cfg, "steps": k}), run, progress=False)
        _reference_cache[key] = load_checkpoint(run / "checkpoint.pt")
    return _reference_cache[key]


def assert_same(a, b, where="state"):
    """Bit-identical nested dicts / lists / tensors / numbers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(a), sorted(b))
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def assert_checkpoints_are_exact(tmp_path_factory, run: Path, n_data: int, **cfg) -> int:
    """checkpoint.pt (and checkpoint.prev.pt) equal an uninterrupted run stopped at their step; returns
    the newest one's step."""
    return checkpoint_steps(tmp_path_factory, run, n_data, **cfg)[0]


def checkpoint_steps(tmp_path_factory, run: Path, n_data: int, **cfg) -> list[int]:
    """The steps of checkpoint.pt and checkpoint.prev.pt (those present), each checked against the reference."""
    steps = []
    for path in (run / "checkpoint.pt", previous_path(run / "checkpoint.pt")):
        if path.exists():
            state = load_checkpoint(path)
            k = int(state["step"])
            ref = reference(tmp_path_factory, n_data, k, **cfg)
            for key in ("model", "ema", "optimizer", "step"):
                assert_same(state[key], ref[key], f"{path.name}[{key}] at step {k}")
            steps.append(k)
    return steps


def logged_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def temp_files(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------ (a) SIGINT at exact points, in-process
HOOKED = dict(batch_size=16, log_every=2, checkpoint_every=3, warmup=5)
HOOKED_STEPS, HOOKED_DATA = 20, 64

RUNNER = r"""
import csv, json, os, signal, sys
sys.path.insert(0, {tests!r})
import torch
from test_training import make_denoiser, toy_data
from physdiff.models.mlp import MLPDenoiser
from physdiff.training.ema import EMA
from physdiff.training.trainer import TrainConfig, train

out = {out!r}
cfg = TrainConfig(steps={steps}, **{cfg!r})
data = toy_data({n_data})


def sigint():
    os.kill(os.getpid(), signal.SIGINT)


def counting(original, fire):
    # wrap ``original`` so that ``fire(call number, args)`` decides to send SIGINT before calling it
    calls = [0]
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if fire(calls[0], args):
            sigint()
        return original(*args, **kwargs)
    return wrapper


def after(original, fire):
    calls = [0]
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls[0] += 1
        if fire(calls[0], args):
            sigint()
        return result
    return wrapper


saved_step = lambda args: args[0]["step"] if isinstance(args[0], dict) else None
first_fired = [False]


def forward_then_every_save():
    def fire_forward(n, args):
        first_fired[0] = first_fired[0] or n == 14
        return n == 14
    return [(MLPDenoiser, "forward", counting(MLPDenoiser.forward, fire_forward)),
            (torch, "save", counting(torch.save, lambda n, a: first_fired[0]))]


SCENARIOS = {{
    # name: (patches, augment)
    "before_first_step": lambda: [(MLPDenoiser, "forward", counting(MLPDenoiser.forward, lambda n, a: n == 1))],
    "in_batch_augmentation": lambda: [],
    "in_forward": lambda: [(MLPDenoiser, "forward", counting(MLPDenoiser.forward, lambda n, a: n == 8))],
    "in_grad_clip": lambda: [(torch.nn.utils, "clip_grad_norm_",
                              counting(torch.nn.utils.clip_grad_norm_, lambda n, a: n == 10))],
    "after_optimizer_step": lambda: [(torch.optim.AdamW, "step", after(torch.optim.AdamW.step, lambda n, a: n == 5))],
    "in_ema_update": lambda: [(EMA, "update", counting(EMA.update, lambda n, a: n == 11))],
    "in_metrics_row": lambda: [(csv.DictWriter, "writerow",
                                counting(csv.DictWriter.writerow, lambda n, a: a[1].get("step") == 4))],
    "in_periodic_save": lambda: [(torch, "save", counting(torch.save, lambda n, a: saved_step(a) == 6))],
    "twice_second_in_interrupt_save": forward_then_every_save,
    "in_final_save": lambda: [(torch, "save", counting(torch.save, lambda n, a: saved_step(a) == {steps}))],
}}


def augment_firing_at(step):
    calls = [0]
    def augment(batch, g):
        calls[0] += 1
        if calls[0] == step:
            sigint()
        return batch
    return augment


results = {{}}
for name, make in SCENARIOS.items():
    first_fired[0] = False
    patches = make()
    originals = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    for obj, attr, new in patches:
        setattr(obj, attr, new)
    augment = augment_firing_at(3) if name == "in_batch_augmentation" else None
    raised = False
    try:
        train(make_denoiser(), data, cfg, os.path.join(out, name), augment=augment, progress=False)
    except KeyboardInterrupt:
        raised = True
    finally:
        for obj, attr, old in originals:
            setattr(obj, attr, old)
    restored = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    results[name] = {{"raised": raised, "handler_restored": restored}}
print(json.dumps(results))
"""

# the step of the checkpoint each interrupt must leave (None: nothing saved), from the semantics
EXPECTED = {
    "before_first_step": None,  # in the first forward pass: nothing completed, nothing to save
    "in_batch_augmentation": 2,  # while drawing the batch of step 3 (two updates completed)
    "in_forward": 7,  # forward pass of the 8th update
    "in_grad_clip": 9,  # after backward of the 10th update, before its optimiser step
    "after_optimizer_step": 5,  # deferred until the 5th update's EMA update is done
    "in_ema_update": 11,  # likewise, within the 11th update
    "in_metrics_row": 4,  # the row of step 4 is written whole, then step 4 is saved
    "in_periodic_save": 6,  # the save of step 6 completes, nothing else is saved
    "twice_second_in_interrupt_save": 13,  # 14th forward pass, then again during the save of step 13
    "in_final_save": HOOKED_STEPS,  # the final save completes; the interrupt still propagates
}


@pytest.fixture(scope="module")
def hooked_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("hooked")
    script = base / "runner.py"
    script.write_text(RUNNER.format(tests=TESTS, out=str(base), steps=HOOKED_STEPS, cfg=HOOKED, n_data=HOOKED_DATA))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return base, json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_sigint_at_an_exact_point_then_resume_is_bit_for_bit(name, hooked_runs, tmp_path_factory):
    base, results = hooked_runs
    run = base / name
    assert results[name] == {"raised": True, "handler_restored": True}
    assert temp_files(run) == []
    k = EXPECTED[name]
    if k is None:
        assert not (run / "checkpoint.pt").exists()
    else:
        # the newest holds step k, the previous one the last periodic checkpoint before it (if any)
        every = HOOKED["checkpoint_every"]
        expected = [k] + ([(k - 1) // every * every] if k > every else [])
        assert checkpoint_steps(tmp_path_factory, run, HOOKED_DATA, **HOOKED) == expected
    # resume; a different initialisation, so that everything must come from the checkpoint
    resumed = make_denoiser(seed=0 if k is None else 123)
    cfg = TrainConfig(steps=HOOKED_STEPS, **HOOKED)
    if k is None:
        with pytest.warns(UserWarning, match="no checkpoint .* starting from step 0"):
            train(resumed, toy_data(HOOKED_DATA), cfg, run, resume=True, progress=False)
    else:
        train(resumed, toy_data(HOOKED_DATA), cfg, run, resume=True, progress=False)
    ref = reference(tmp_path_factory, HOOKED_DATA, HOOKED_STEPS, **HOOKED)
    assert_same(resumed.net.state_dict(), ref["model"], "model")
    assert_same(load_checkpoint(run / "checkpoint.pt")["ema"], ref["ema"], "ema")
    assert_same(load_checkpoint(run / "checkpoint.pt")["optimizer"], ref["optimizer"], "optimizer")
    assert logged_steps(run) == list(range(2, HOOKED_STEPS + 1, 2))


# -------------------------------------------------- (b) external SIGINT / SIGKILL, one after the other
CHAIN = dict(batch_size=16, log_every=1, checkpoint_every=2, warmup=20)
CHAIN_STEPS, CHAIN_DATA = 200, 128

CHILD = r"""
import os, signal, sys
import torch
sys.path.insert(0, {tests!r})
from test_training import make_denoiser, toy_data
from physdiff.training.ema import EMA
from physdiff.training.trainer import TrainConfig, train

mode, target = sys.argv[1], int(sys.argv[2])
update, replace, completed = EMA.update, os.replace, [0]


def reporting_update(self, model):
    update(self, model)
    completed[0] = self.num_updates
    print(f"step {{self.num_updates}}", flush=True)


def killing_replace(src, dst):  # SIGKILL after keeping the previous checkpoint, before renaming the new one
    replace(src, dst)
    if str(dst).endswith("checkpoint.prev.pt") and completed[0] >= target:
        os.kill(os.getpid(), signal.SIGKILL)


def killing_fsync(fd):  # SIGKILL inside a checkpoint write: the temporary file written, not yet fsynced or renamed
    if completed[0] >= target:
        os.kill(os.getpid(), signal.SIGKILL)
    fsync(fd)


EMA.update = reporting_update
if mode == "kill_between_renames":
    os.replace = killing_replace
if mode == "kill_in_checkpoint_write":
    fsync, os.fsync = os.fsync, killing_fsync
train(make_denoiser(), toy_data({n_data}), TrainConfig(steps={steps}, **{cfg!r}), {run!r}, resume=True,
      progress=False)
"""


def run_child(script: Path, mode: str, target: int, sig: signal.Signals | None, twice: bool = False):
    """Start the child; once it reports ``target`` completed updates send ``sig`` (twice: 2 ms apart)."""
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    for line in proc.stdout:
        if sig is not None and line.startswith("step ") and int(line.split()[1]) >= target:
            proc.send_signal(sig)
            if twice:
                time.sleep(0.002)
                if proc.poll() is None:
                    proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.mark.slow
def test_external_sigint_and_sigkill_then_resume_is_bit_for_bit(tmp_path, tmp_path_factory):
    run = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=TESTS, n_data=CHAIN_DATA, steps=CHAIN_STEPS, cfg=CHAIN, run=str(run)))
    done = []

    # 1. Ctrl-C twice, from outside, wherever the run is: the checkpoint holds the state at its label
    rc, out, err = run_child(script, "signal", 40, signal.SIGINT, twice=True)
    assert rc == -signal.SIGINT and "KeyboardInterrupt" in err, err[-2000:]
    k1 = assert_checkpoints_are_exact(tmp_path_factory, run, CHAIN_DATA, **CHAIN)
    assert f"interrupted after {k1} completed steps" in out
    done.append(k1)

    # 2. SIGKILL between keeping the previous checkpoint and renaming the new one: a stale temp file and lock
    rc, out, err = run_child(script, "kill_between_renames", 100, None)
    assert rc == -signal.SIGKILL, err[-2000:]
    assert temp_files(run) and (run / "run.lock").exists()
    k2 = assert_checkpoints_are_exact(tmp_path_factory, run, CHAIN_DATA, **CHAIN)
    assert load_checkpoint(previous_path(run / "checkpoint.pt"))["step"] == k2  # the new one never landed
    done.append(k2)

    # 3. SIGKILL from outside wherever the run is (the stale lock is taken over, the stale temp file removed)
    rc, out, err = run_child(script, "signal", 150, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert "taking over the stale lock" in err
    k3 = assert_checkpoints_are_exact(tmp_path_factory, run, CHAIN_DATA, **CHAIN)
    done.append(k3)

    # 4. SIGKILL inside a checkpoint write (the temporary file written, before its fsync and the renames)
    rc, out, err = run_child(script, "kill_in_checkpoint_write", 175, None)
    assert rc == -signal.SIGKILL, err[-2000:]
    assert temp_files(run)
    done.append(assert_checkpoints_are_exact(tmp_path_factory, run, CHAIN_DATA, **CHAIN))
    every = CHAIN["checkpoint_every"]
    # each interruption came after its target (less the steps since the last checkpoint for SIGKILL)
    assert done == sorted(done) and all(k >= t - every for k, t in zip(done, (40, 100, 150, 175), strict=True)), done

    # 5. resume to the end in this process: identical to an uninterrupted run, one row per step
    resumed = make_denoiser(seed=123)
    with pytest.warns(UserWarning, match="stale lock"):
        train(resumed, toy_data(CHAIN_DATA), TrainConfig(steps=CHAIN_STEPS, **CHAIN), run, resume=True, progress=False)
    ref = reference(tmp_path_factory, CHAIN_DATA, CHAIN_STEPS, **CHAIN)
    assert_same(resumed.net.state_dict(), ref["model"], "model")
    assert assert_checkpoints_are_exact(tmp_path_factory, run, CHAIN_DATA, **CHAIN) == CHAIN_STEPS
    assert logged_steps(run) == list(range(1, CHAIN_STEPS + 1))
    assert temp_files(run) == [] and not (run / "run.lock").exists()
