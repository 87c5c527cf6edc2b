"""Fault classes beyond the bad-input catalogue (issue 24): writes through links, destructive ``--force``,
full disks, foreign checkpoints, changed data, declared sizes, API inputs, sweeps' baselines.

Each test fails on the code before the fix (3c322d3): there, writes followed links, files were created
0600, a failed write left a truncated results.json, ``--force`` cleared before locking and globbed
``checkpoint*`` and ``tb/``.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from physdiff.cli.main import main
from physdiff.config import save_yaml
from physdiff.data.hdf5 import atomic_write
from physdiff.outputs import WriteError, check_new_output, record_outputs, remove_recorded, write_json, write_text
from physdiff.training.checkpoint import load_checkpoint, save_checkpoint
from physdiff.training.lock import RunLock
from physdiff.training.metrics_log import MetricsLog

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


# --------------------------------------------------------------------------- one place that writes
def write_h5(path: Path) -> None:
    with atomic_write(path) as f:
        f["x"] = np.zeros(3)


WRITERS = {
    "write_text": lambda p: write_text(p, "new"),
    "write_json": lambda p: write_json(p, {"a": 1}),
    "save_yaml (config.yaml)": lambda p: save_yaml({"a": 1}, p),
    "atomic_write (HDF5)": lambda p: write_h5(p),
    "save_checkpoint": lambda p: save_checkpoint(p, {"model": {}, "step": 1}),
    "MetricsLog (metrics.csv)": lambda p: MetricsLog(
        p, start=0, total=1, enabled=True, progress=False, tensorboard=False
    ).write({"step": 1, "loss": 0.5}),
    "RunLock (run.lock)": lambda p: RunLock(p.parent).acquire(),
}
TARGET_NAME = {"RunLock (run.lock)": "run.lock", "MetricsLog (metrics.csv)": "metrics.csv"}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_symlinked_target_is_refused_and_its_target_untouched(tmp_path, writer):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    target = run / TARGET_NAME.get(writer, "out.file")
    target.symlink_to(victim)
    with pytest.raises(WriteError, match=r"cannot write .*symbolic link"):
        WRITERS[writer](target)
    assert victim.read_text() == "precious" and target.is_symlink()
    assert temp_files(run) == []


def test_the_lock_file_is_created_with_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with RunLock(tmp_path / "run"):
            assert stat.S_IMODE((tmp_path / "run" / "run.lock").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_umask_0644_for_text_and_hdf5_and_checkpoints(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.md", "x")
        with atomic_write(tmp_path / "b.h5") as f:
            f["x"] = np.zeros(3)
        save_checkpoint(tmp_path / "c.pt", {"model": {}, "step": 1})
        os.umask(0o077)
        write_text(tmp_path / "d.md", "x")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"a.md": 0o644, "b.h5": 0o644, "c.pt": 0o644, "d.md": 0o600}, modes


def full_disk(monkeypatch, after: int = 0):
    """Every fsync after the first ``after`` fails as on a full disk (ENOSPC)."""
    calls = [0]
    real = os.fsync

    def fsync(fd):
        calls[0] += 1
        if calls[0] > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("writer", [w for w in WRITERS if w not in ("RunLock (run.lock)", "MetricsLog (metrics.csv)")])
def test_a_full_disk_keeps_the_previous_file_and_names_it(tmp_path, monkeypatch, writer):
    target = tmp_path / "results.json"
    target.write_bytes(b'{"previous": true}')
    full_disk(monkeypatch)
    with pytest.raises(WriteError) as e:
        WRITERS[writer](target)
    assert str(e.value) == f"cannot write {target}: No space left on device"
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert target.read_bytes() == b'{"previous": true}'
    assert temp_files(tmp_path) == []


def test_a_full_disk_during_simulate_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "three_body.h5"
    assert main(["simulate", "three-body", "--n", "4", "--frames", "4", "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    full_disk(monkeypatch)
    assert main(["simulate", "three-body", "--n", "5", "--frames", "4", "--out", str(out), "--force"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("physdiff")]  # besides the progress bars
    assert lines == [f"physdiff simulate: error: cannot write {out}: No space left on device"], err
    assert "Traceback" not in err
    assert out.read_bytes() == before and temp_files(tmp_path) == []


def test_a_failed_write_leaves_no_temp_file_on_other_exceptions(tmp_path):
    target = tmp_path / "x.h5"
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f["x"] = np.zeros(2)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["missing", "regular", "link", "folder", "fifo"])
def test_force_replaces_only_a_regular_file(tmp_path, kind):
    p = tmp_path / "out.h5"
    if kind == "regular":
        p.write_text("x")
    elif kind == "link":
        p.symlink_to(tmp_path / "elsewhere")
    elif kind == "folder":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    if kind == "missing":
        assert check_new_output(p, "--out", force=False) == p
        return
    if kind == "regular":
        with pytest.raises(ValueError, match="exists; pass --force"):
            check_new_output(p, "--out", force=False)
        assert check_new_output(p, "--out", force=True) == p
        return
    with pytest.raises(ValueError, match=r"--out .*(folder|symbolic link|not a regular file)"):
        check_new_output(p, "--out", force=True)


def test_simulate_refuses_an_existing_out_without_force(tmp_path, capsys):
    out = tmp_path / "d.h5"
    argv = ["simulate", "three-body", "--n", "4", "--frames", "4", "--out", str(out)]
    assert main(argv) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main([*argv, "--seed", "1"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*argv, "--seed", "1", "--force"]) == 0
    assert out.read_bytes() != before


def test_simulate_force_never_replaces_a_link(tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "d.h5"
    out.symlink_to(victim)
    assert main(["simulate", "three-body", "--n", "4", "--frames", "4", "--out", str(out), "--force"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious" and out.is_symlink()


def test_checkpoint_fallback_still_works_after_the_routing(tmp_path):
    p = tmp_path / "checkpoint.pt"
    save_checkpoint(p, {"model": {"w": torch.ones(2)}, "step": 1})
    save_checkpoint(p, {"model": {"w": torch.zeros(2)}, "step": 2})
    assert load_checkpoint(p)["step"] == 2
    assert load_checkpoint(tmp_path / "checkpoint.prev.pt")["step"] == 1
    assert temp_files(tmp_path) == []


# --------------------------------------------------------------------------- manifest and --force
def test_remove_recorded_removes_exactly_the_recorded_regular_files(tmp_path):
    (tmp_path / "tb").mkdir()
    for name in ("checkpoint.pt", "metrics.csv", "tb/events.1", "tb/mine.txt", "checkpoint_notes.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "checkpoints_archive").mkdir()
    (tmp_path / "checkpoints_archive" / "old.pt").write_text("old")
    record_outputs(tmp_path, [tmp_path / "checkpoint.pt", "metrics.csv", "tb/events.1", "../outside", "/etc/passwd"])
    removed = remove_recorded(tmp_path)
    assert sorted(p.name for p in removed) == [".physdiff-manifest.json", "checkpoint.pt", "events.1", "metrics.csv"]
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["checkpoint_notes.txt", "checkpoints_archive", "checkpoints_archive/old.pt", "tb", "tb/mine.txt"]


def _lock_holder(folder: Path) -> subprocess.Popen:
    code = textwrap.dedent(
        f"""
        import sys
        from physdiff.training.lock import RunLock
        with RunLock({str(folder)!r}):
            print("locked", flush=True)
            sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_force_on_a_live_run_is_refused_before_anything_is_removed(tmp_path):
    from physdiff.experiments.harness import RunFolderError, locked_run_folder
    from physdiff.training.errors import RunLockedError

    run = tmp_path / "run"
    run.mkdir()
    files = {n: n for n in ("checkpoint.pt", "config.yaml", "scaling.json", "run.log", "metrics.csv")}
    for n in files:
        (run / n).write_text(n)
    record_outputs(run, list(files))
    holder = _lock_holder(run)
    try:
        with pytest.raises(RunLockedError, match="locked by another training process"):
            with locked_run_folder(run, {}, resume=False, force=True):
                pass
        assert {p.name for p in run.iterdir()} >= set(files)
        assert all((run / n).read_text() == n for n in files)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with pytest.raises(RunFolderError):  # the checkpoint is not a loadable one, but without --force it is refused
        with locked_run_folder(run, {}, resume=False, force=False):
            pass
