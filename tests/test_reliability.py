"""Fault classes beyond the bad-input catalogue (issue 24): writes through links, destructive ``--force``,
full disks, foreign checkpoints, changed data, declared sizes, API inputs, sweeps' baselines.

Each test fails on the code before the fix (3c322d3): there, writes followed links, files were created
0600, a failed write left a truncated results.json, ``--force`` cleared before locking and globbed
``checkpoint*`` and ``tb/``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
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


# --------------------------------------------------------------------------- a run knows its data
TINY = ["train.steps=6", "train.batch_size=8", "model.hidden=16", "model.layers=1", "model.vector_channels=4"]
TINY += ["sample.steps=2", "sample.n_test=4", "sample.batch_size=4", "sample.constraints=[]", "--device", "cpu"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny three-body runs of the same model size, on two files (seeds 0 and 1)."""
    d = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        sim = [
            "simulate",
            "three-body",
            "--n",
            "24",
            "--frames",
            "6",
            "--seed",
            str(seed),
            "--out",
            str(d / f"{seed}.h5"),
        ]
        assert main(sim) == 0
        argv = ["train", "three-body", "--data", str(d / f"{seed}.h5"), "--run-dir", str(d / f"run{seed}"), *TINY]
        assert main(argv) == 0
    return d


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("run.lock"))
    return dst


def test_the_run_records_its_data(two_runs):
    import yaml

    cfg = yaml.safe_load((two_runs / "run0" / "config.yaml").read_text())
    assert cfg["data"]["file_bytes"] == (two_runs / "0.h5").stat().st_size
    assert len(cfg["data"]["content_sha256"]) == 64
    other = yaml.safe_load((two_runs / "run1" / "config.yaml").read_text())
    assert other["data"]["content_sha256"] != cfg["data"]["content_sha256"]
    assert sorted(json.loads((two_runs / "run0" / ".physdiff-manifest.json").read_text())) == sorted(
        [
            "checkpoint.pt",
            "checkpoint.prev.pt",
            "metrics.csv",
            "validation.csv",
            "scaling.json",
            "config.yaml",
            "run.log",
            "checkpoint.pt.corrupt",
        ]
    )


def test_a_foreign_checkpoint_is_refused_by_load_run_and_sample(two_runs, tmp_path, capsys):
    from physdiff.api import load_run
    from physdiff.training.errors import CheckpointError

    run = copy_run(two_runs / "run0", tmp_path / "run")
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run / name).unlink(missing_ok=True)
    (run / "checkpoint.pt").write_bytes((two_runs / "run1" / "checkpoint.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"another configuration: data.content_sha256: checkpoint '[0-9a-f]+'"):
        load_run(run)
    capsys.readouterr()
    assert main(["sample", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.content_sha256" in err[0], err
    assert not list(run.glob("samples_*.h5"))


def test_a_changed_data_file_is_refused_on_resume_and_by_sample(two_runs, tmp_path, capsys):
    data = tmp_path / "0.h5"
    data.write_bytes((two_runs / "0.h5").read_bytes())
    run = tmp_path / "run"
    argv = ["train", "three-body", "--data", str(data), "--run-dir", str(run), *TINY]
    assert main(argv) == 0
    with h5py.File(data, "r+") as f:  # same size, one value changed
        f["positions"][0, 0, 0, 0] += 1e-9
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main([*argv, "--resume", "train.steps=8"]) == 2
    err = capsys.readouterr().err
    assert "changed since the run recorded it" in err and "data.content_sha256" in err, err
    assert main(["sample", str(run), "--device", "cpu"]) == 2
    assert "changed since the run recorded it" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_force_keeps_the_users_files(two_runs, tmp_path):
    run = copy_run(two_runs / "run0", tmp_path / "run")
    (run / "checkpoints_archive").mkdir()
    (run / "checkpoints_archive" / "best.pt").write_text("mine")
    (run / "checkpoint_notes.txt").write_text("notes")
    (run / "tb").mkdir()
    (run / "tb" / "events.out.tfevents.mine").write_text("mine")
    argv = ["train", "three-body", "--data", str(two_runs / "0.h5"), "--run-dir", str(run), *TINY]
    assert main([*argv, "--force"]) == 0
    assert (run / "checkpoints_archive" / "best.pt").read_text() == "mine"
    assert (run / "checkpoint_notes.txt").read_text() == "notes"
    assert (run / "tb" / "events.out.tfevents.mine").read_text() == "mine"
    assert (run / "checkpoint.pt").is_file()


def test_force_on_a_live_run_through_the_cli_leaves_it_untouched(two_runs, tmp_path, capsys):
    run = copy_run(two_runs / "run0", tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    holder = _lock_holder(run)
    try:
        argv = ["train", "three-body", "--data", str(two_runs / "0.h5"), "--run-dir", str(run), *TINY, "--force"]
        assert main(argv) == 2
        assert "locked by another training process" in capsys.readouterr().err
        after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "run.lock"}
        assert after == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# --------------------------------------------------------------------------- size before read
def declared_particle_file(path: Path, n: int) -> Path:
    """A small file whose datasets declare ``n`` rows (chunked, nothing written: the fill value)."""
    with h5py.File(path, "w") as f:
        f.attrs["system"] = "three-body"
        for key in ("positions", "velocities"):
            f.create_dataset(key, shape=(n, 6, 3, 3), dtype="f8", chunks=(1, 6, 3, 3))
        f.create_dataset("masses", shape=(n, 3), dtype="f8", chunks=(1, 3))
    return path


def test_a_billion_declared_rows_are_refused_fast_without_allocating(tmp_path):
    import time
    import tracemalloc

    from physdiff.data.particles_h5 import load_particles

    path = declared_particle_file(tmp_path / "big.h5", 10**9)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"big\.h5: dataset 'positions' declares shape \(1000000000, 6, 3, 3\)"):
        load_particles(path)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 1.0 and peak < 50 << 20, (seconds, peak)


def test_the_budget_is_data_max_bytes(tmp_path, capsys):
    path = tmp_path / "d.h5"
    assert main(["simulate", "three-body", "--n", "12", "--frames", "4", "--out", str(path)]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    argv = ["train", "three-body", "--data", str(path), "--run-dir", str(run), *TINY, "data.max_bytes=1000"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than the read budget" in err[0] and "data.max_bytes" in err[0], err
    assert not run.exists() or not any(run.iterdir())


def test_a_declared_pdebench_tensor_is_refused_before_reading(tmp_path):
    from physdiff.data.pdebench import load_pde

    path = tmp_path / "1D_Advection_Sols_beta0.1.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", shape=(10**9, 41, 1024), dtype="f4", chunks=(1, 41, 1024))
        f["x-coordinate"] = np.linspace(0, 1, 1024)
        f["t-coordinate"] = np.linspace(0, 2, 42)
    with pytest.raises(ValueError, match=r"dataset 'tensor' declares shape"):
        load_pde(path, "advection")
    with pytest.raises(ValueError, match=r"dataset 'tensor' declares shape"):  # 1e5 samples still exceed 1 MB
        load_pde(path, "advection", max_samples=100_000, max_bytes=1 << 20)


def test_virtual_rows_without_a_source_and_links_outside_are_refused(tmp_path):
    from physdiff.data.particles_h5 import load_particles

    src = tmp_path / "src.h5"
    assert main(["simulate", "three-body", "--n", "6", "--frames", "4", "--out", str(src)]) == 0
    with h5py.File(src) as f:
        shapes = {k: f[k].shape for k in ("positions", "velocities", "masses")}
    vds = tmp_path / "vds.h5"
    with h5py.File(vds, "w") as f:
        f.attrs["system"] = "three-body"
        for key, shape in shapes.items():
            layout = h5py.VirtualLayout(shape=(2 * shape[0], *shape[1:]), dtype="f8")
            layout[: shape[0]] = h5py.VirtualSource(src.name, key, shape=shape)  # the second half maps to nothing
            f.create_virtual_dataset(key, layout, fillvalue=0.0)
    with pytest.raises(ValueError, match=r"'positions' is virtual and its rows 6\.\.11 of 12 are mapped to no source"):
        load_particles(vds)
    outside = tmp_path / "sub"
    outside.mkdir()
    linked = outside / "linked.h5"
    with h5py.File(linked, "w") as f:
        f.attrs["system"] = "three-body"
        for key in shapes:
            f[key] = h5py.ExternalLink(str(src), key)
    with pytest.raises(ValueError, match=r"'positions' is an external link to .*src\.h5, outside the file's folder"):
        load_particles(linked)


# --------------------------------------------------------------------------- the API validates like the CLI
@pytest.fixture(scope="module")
def spring_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("spring")
    sim = ["simulate", "five-spring", "--n", "24", "--frames", "6", "--out", str(d / "fs.h5")]
    assert main(sim) == 0
    assert main(["train", "five-spring", "--data", str(d / "fs.h5"), "--run-dir", str(d / "run"), *TINY]) == 0
    from physdiff.api import load_run

    return load_run(d / "run")


def first_frame(run, n: int = 2) -> dict[str, np.ndarray]:
    d = run.data.subset(np.arange(n))
    out = {"positions": d.positions[:, 0], "velocities": d.velocities[:, 0], "masses": d.masses}
    if d.edges is not None:
        out["edges"] = d.edges
    return out


BAD_CONDITIONS = {
    "NaN position": (lambda c: c["positions"].__setitem__((0, 0, 0), np.nan), r"'positions' .*NaN/inf"),
    "inf velocity": (lambda c: c["velocities"].__setitem__((1, 0, 0), np.inf), r"'velocities' .*NaN/inf"),
    "zero mass": (lambda c: c["masses"].__setitem__((0, 0), 0.0), r"'masses' .*must be > 0"),
    "negative mass": (lambda c: c["masses"].__setitem__((0, 1), -1.0), r"'masses' .*must be > 0"),
    "negative denormal mass": (lambda c: c["masses"].__setitem__((0, 1), -5e-324), r"'masses' .*must be > 0"),
    "denormal mass": (
        lambda c: c["masses"].__setitem__((0, 1), 5e-324),
        r"'masses' .*must be > 0 and not subnormal",
    ),
    "non-binary edges": (lambda c: c["edges"].__setitem__((0, 0, 1), 0.5), r"'edges' .*only 0 and 1"),
    "asymmetric edges": (lambda c: c["edges"].__setitem__((0, 0, 1), 1 - c["edges"][0, 1, 0]), r"'edges' .*symmetric"),
    "missing edges": (lambda c: c.pop("edges"), r"needs the spring graph 'edges'"),
    "wrong shape": (lambda c: c.__setitem__("positions", c["positions"][:, :2]), r"positions and velocities must be"),
    "missing velocities": (lambda c: c.pop("velocities"), r"condition: .*velocities"),
    "masses wrong shape": (lambda c: c.__setitem__("masses", np.ones(3)), r"'masses' has shape"),
}


@pytest.mark.parametrize("case", list(BAD_CONDITIONS))
def test_bad_conditions_raise_one_clear_value_error(spring_run, case):
    cond = first_frame(spring_run)
    change, expect = BAD_CONDITIONS[case]
    change(cond)
    with pytest.raises(ValueError, match=expect) as e:
        spring_run.sample(cond, steps=2)
    assert "\n" not in str(e.value)


def test_bad_api_arguments_raise_value_errors(spring_run):
    with pytest.raises(ValueError, match=r"subtask must be one of \['prediction', 'generation'\], got 'bogus'"):
        spring_run.sample(n=2, subtask="bogus", steps=2)
    with pytest.raises(ValueError, match="condition must be a mapping"):
        spring_run.sample([1, 2, 3], steps=2)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        spring_run.sample(n=2, steps=2, seed=-1)
    out = spring_run.sample(n=2, steps=2)
    with pytest.raises(ValueError, match=r"subtask must be one of"):
        spring_run.evaluate(out, subtask="bogus")
    bad = dict(out, source_indices=np.array([-1, -2]))
    with pytest.raises(ValueError, match=r"'source_indices' must lie in \[0, 23\]"):
        spring_run.evaluate(bad)
    with pytest.raises(ValueError, match=r"'source_indices' must be a 1-D integer array"):
        spring_run.evaluate(dict(out, source_indices=np.array([0.5, 1.0])))
    with pytest.raises(ValueError, match="samples must be a mapping"):
        spring_run.evaluate("samples.h5")
    with pytest.raises(ValueError, match=r"^samples: "):
        spring_run.evaluate({"source_indices": out["source_indices"]})
    assert spring_run.evaluate(out)  # the valid samples still evaluate


# --------------------------------------------------------------------------- sweeps pair like with like
def test_a_sampler_grid_pairs_each_point_with_its_own_baseline(tmp_path, capsys):
    from test_reproduce_fields import TINY as FIELD_TINY

    out = tmp_path / "sweep"
    argv = ["sweep", "burgers", "--out", str(out), "--seeds", "0", "--device", "cpu"]
    argv += ["--grid", "sample.sampler=ddim,heun", "--grid", "priors.0.weight=1"]
    argv += [*FIELD_TINY, "data.settings.nx=16", "data.settings.nt=8", "data.settings.k_max=1"]
    assert main(argv) == 0
    res = json.loads((out / "sweep.json").read_text())
    for p in res["points"]:
        sampler = p["overrides"][0]
        assert p["baseline_overrides"] == [sampler]
        folder = out / f"no_prior__{sampler.replace('=', '-')}"
        assert f"sampler: {sampler.split('=')[1]}" in (folder / "config.yaml").read_text()
        base = json.loads((folder / "results.json").read_text())["arms"]["no_prior"]["constraint_rmse"]["mean"]
        assert p["baseline"]["constraint_rmse"] == base
        r = p["arms"]["prior:residual"]
        assert r["ratio"]["constraint_rmse"] == pytest.approx(r["mean"]["constraint_rmse"] / base)
    bases = [p["baseline"]["constraint_rmse"] for p in res["points"]]
    assert bases[0] != bases[1]  # DDIM and Heun baselines differ: each point has its own
    assert "| no_prior | sample.sampler=heun |" in (out / "sweep.md").read_text()
    capsys.readouterr()


def test_every_data_path_of_a_grid_is_checked_before_training(tmp_path, capsys):
    good = tmp_path / "good.h5"
    assert main(["simulate", "three-body", "--n", "12", "--frames", "4", "--out", str(good)]) == 0
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    out = tmp_path / "sweep"
    argv = ["sweep", "three-body", "--out", str(out), "--seeds", "0", *TINY, "--grid", f"data.path={good},{bad}"]
    capsys.readouterr()
    assert main(argv) == 2
    assert "bad.h5" in capsys.readouterr().err
    assert not list(out.rglob("checkpoint.pt"))


# --------------------------------------------------------------------------- bounded parsers
BOMB = (
    "["
    + ",".join(["&a0 [x,x,x,x,x,x,x,x,x]"] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)])
    + "]"
)


@pytest.mark.parametrize(
    "value, expect",
    [
        (BOMB, r"expands to more than 100000 values"),
        ("[" * 200 + "]" * 200, r"nested too deeply"),
        ("[" * 5000 + "]" * 5000, r"nested too deeply"),
    ],
)
def test_yaml_bombs_and_deep_nesting_are_one_config_error(value, expect, capsys):
    assert len(BOMB) < 600
    assert main(["config", "three-body", f"seeds={value}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(expect, err[0]) and "override 'seeds=" in err[0], err


def test_deep_json_is_one_clear_error(tmp_path):
    from physdiff.outputs import read_json

    p = tmp_path / "scaling.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"scaling\.json: the JSON is nested 100000 levels deep"):
        read_json(p)
    p.write_text(json.dumps({"a": "[" * 80}))
    assert read_json(p) == {"a": "[" * 80}  # brackets inside strings do not count


# --------------------------------------------------------------------------- user priors
@pytest.mark.parametrize(
    "body, expect",
    [
        ("import sys\nsys.exit(0)\n", r"cannot import .*SystemExit"),
        (
            "from physdiff.priors.base import ResidualPrior\nclass P(ResidualPrior):\n    name = 'p'\n",
            r"'P' is abstract: implement residual",
        ),
    ],
)
def test_a_user_prior_that_exits_or_is_abstract_is_one_clear_error(tmp_path, body, expect):
    from physdiff.experiments.task import import_prior_class

    path = tmp_path / "myprior.py"
    path.write_text(body)
    with pytest.raises(ValueError, match=expect):
        import_prior_class(f"{path}:P")


def test_a_metrics_log_saved_with_a_byte_order_mark_keeps_its_history(tmp_path):
    from physdiff.training.metrics_log import truncate_metrics

    p = tmp_path / "metrics.csv"
    p.write_text("\ufeffstep,loss,elapsed_s\n1,0.5,1.0\n2,0.4,2.0\n3,0.3,3.0\n", encoding="utf-8")
    header, elapsed = truncate_metrics(p, 2)
    assert header == ["step", "loss", "elapsed_s"] and elapsed == 2.0
    assert p.read_text(encoding="utf-8-sig").splitlines() == ["step,loss,elapsed_s", "1,0.5,1.0", "2,0.4,2.0"]
