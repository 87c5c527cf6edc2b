"""Issue 24, the remaining gaps: coincident particles, reading only the rows used, The Well's samples
written in one atomic write, a real full filesystem (tmpfs)."""

from __future__ import annotations

import numpy as np
import pytest

from physdiff.experiments.config import ExperimentConfig
from physdiff.experiments.task import make_task


# --------------------------------------------------------------------------- The Well: one atomic write
def _waves(path, n=12, frames=4, nx=6, ny=6):
    from physdiff.data.the_well import write_the_well

    t = np.linspace(0.0, 0.3, frames)
    x = np.arange(nx) / nx
    y = (np.arange(ny) + 0.5) / ny
    h = 1.0 + 0.1 * np.sin(
        2 * np.pi * (x[None, None, :, None] - t[None, :, None, None]) + np.arange(n)[:, None, None, None]
    )
    h = np.broadcast_to(h, (n, frames, nx, ny)).copy()
    write_the_well(path, {"h": h}, t=t, x=x, y=y, periodic=(True, False), dataset_name="waves")
    return path


def test_the_well_samples_are_written_in_one_atomic_write(tmp_path, monkeypatch):
    """The provenance and ``source_indices`` go into the temporary file before its rename: a failure while
    adding them leaves the previous file as it was and no half-written sample file (on the old code the file
    was renamed into place first and then amended with h5py mode 'a')."""
    import h5py

    import physdiff.experiments.well_task as wt

    data = _waves(tmp_path / "waves.hdf5")
    cfg = ExperimentConfig(task="the-well")
    cfg.data.path = str(data)
    task = make_task(cfg)
    ref = task.load(tmp_path, progress=False)
    samples = {"u": ref.fields[:3].copy()}
    out = tmp_path / "samples.h5"
    task.write_samples(out, samples, ref, np.arange(3), "test", "generation")
    with h5py.File(out, "r") as f:
        assert f.attrs["generated"] and list(f["source_indices"][()]) == [0, 1, 2]
        assert f.attrs["reference_split"] == "test"
    back = task.read_samples(out)
    np.testing.assert_array_equal(back["u"], samples["u"])

    before = out.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("fingerprint failed")

    monkeypatch.setattr(wt, "fingerprint", broken)
    with pytest.raises(RuntimeError, match="fingerprint failed"):
        task.write_samples(out, {"u": ref.fields[3:6].copy()}, ref, np.arange(3, 6), "test", "generation")
    assert out.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    fresh = tmp_path / "fresh.h5"
    with pytest.raises(RuntimeError):
        task.write_samples(fresh, samples, ref, np.arange(3), "test", "generation")
    assert not fresh.exists()


# --------------------------------------------------------------------------- particles: only the rows used
def test_particles_read_only_the_rows_that_max_samples_keeps(tmp_path, capsys):
    """``data.max_samples`` reads the first rows only: a file declaring 10⁶ trajectories, of which the first 12
    are written, loads in a fraction of a second with a small allocation; the read budget is checked on the
    slice (a budget between the slice and the whole file passes), and the splits keep the rows read."""
    import time
    import tracemalloc

    import h5py

    from physdiff.cli.main import main
    from physdiff.data.particles_h5 import load_particles

    small = tmp_path / "d.h5"
    assert main(["simulate", "three-body", "--n", "30", "--frames", "4", "--out", str(small)]) == 0
    capsys.readouterr()
    full = load_particles(small)
    part = load_particles(small, max_samples=12)
    assert part.positions.shape == (12, *full.positions.shape[1:])
    np.testing.assert_array_equal(part.positions, full.positions[:12])
    np.testing.assert_array_equal(part.masses, full.masses[:12])
    for k, idx in full.splits.items():
        np.testing.assert_array_equal(part.splits[k], idx[idx < 12])
    per_row = sum(a[:1].size * 8 for a in (full.positions, full.velocities, full.masses))
    with pytest.raises(ValueError, match="read budget"):
        load_particles(small, max_bytes=20 * per_row)
    assert load_particles(small, max_bytes=20 * per_row, max_samples=12).positions.shape[0] == 12
    with pytest.raises(ValueError, match="max_samples must be an integer >= 1"):
        load_particles(small, max_samples=0)

    big = tmp_path / "big.h5"
    n = 10**6
    with h5py.File(big, "w") as f, h5py.File(small, "r") as src:
        f.attrs.update(src.attrs)
        for key in ("positions", "velocities", "masses"):
            a = getattr(full, key)
            f.create_dataset(key, shape=(n, *a.shape[1:]), dtype="f8", chunks=(1, *a.shape[1:]))
            f[key][:12] = a[:12]
    tracemalloc.start()
    t0 = time.perf_counter()
    got = load_particles(big, max_samples=12, max_bytes=1 << 20)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got.positions, full.positions[:12])
    # the whole file is 10⁶ × 72 doubles per array (~0.6 GB each); the 12 rows are a few KB
    assert seconds < 1.0 and peak < 8 << 20, (seconds, peak)

    # the particle task passes data.max_samples on
    cfg = ExperimentConfig(task="particles")
    cfg.data.system = "three-body"
    cfg.data.path = str(small)
    cfg.data.max_samples = 9
    assert make_task(cfg).load(tmp_path, progress=False).positions.shape[0] == 9


# --------------------------------------------------------------------------- coincident particles
@pytest.fixture(scope="module")
def particle_files(tmp_path_factory):
    from physdiff.cli.main import main

    folder = tmp_path_factory.mktemp("coincident")
    out = {}
    for system in ("three-body", "charged", "five-spring"):
        out[system] = folder / f"{system}.h5"
        assert main(["simulate", system, "--n", "6", "--frames", "4", "--out", str(out[system])]) == 0
    return out


@pytest.mark.parametrize("system", ["three-body", "charged"])
def test_data_with_coincident_particles_are_refused_at_load(particle_files, tmp_path, system):
    """A 1/r potential is infinite where two particles coincide: such a data file is refused with one line
    naming the file, the first sample, frame and pair (the old code loaded it and its floor energy was NaN)."""
    import shutil

    import h5py

    from physdiff.data.particles_h5 import load_particles

    bad = tmp_path / "bad.h5"
    shutil.copy(particle_files[system], bad)
    with h5py.File(bad, "a") as f:
        R = f["positions"][()]
        R[4, 2, 2] = R[4, 2, 1]
        R[5, 1, 0] = R[5, 1, 1]
        f["positions"][...] = R
    with pytest.raises(ValueError) as e:
        load_particles(bad)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg
    assert "coincident particles: sample 4, frame 2, particles 1 and 2" in msg


def test_springs_are_finite_at_coincidence_and_load(particle_files, tmp_path):
    import shutil

    import h5py

    from physdiff.data.particles_h5 import load_particles

    ok = tmp_path / "springs.h5"
    shutil.copy(particle_files["five-spring"], ok)
    with h5py.File(ok, "a") as f:
        R = f["positions"][()]
        R[1, 2, 3] = R[1, 2, 0]
        f["positions"][...] = R
    assert load_particles(ok).positions[1, 2, 3].tolist() == load_particles(ok).positions[1, 2, 0].tolist()


def test_generated_coincident_particles_give_inf_not_nan_with_a_warning(particle_files):
    """Three particles of unlike and like charges at one point: U = k Σ q_i q_j / r_ij is +inf − inf (NaN on
    the old code, and the Newton residual 0 · inf = NaN): the sample's energy_error and dynamic_error are
    +inf, the other samples keep their values, a warning names the count, the summary counts it."""
    from physdiff.data.particles_h5 import load_particles
    from physdiff.evaluation.particle_metrics import per_sample_metrics, summarize

    ref = load_particles(particle_files["charged"])
    q = ref.charges[0]
    plus, minus = np.flatnonzero(q > 0), np.flatnonzero(q < 0)
    assert plus.size >= 2 and minus.size >= 1, q  # the simulator's charges (fixed seed)
    R = ref.positions.copy()
    for k in (plus[1], minus[0]):
        R[0, 2, k] = R[0, 2, plus[0]]
    clean = per_sample_metrics(ref.positions, ref.velocities, ref)
    with pytest.warns(UserWarning, match=r"energy_error: 1 of 6 sample\(s\) have coincident particles"):
        got = per_sample_metrics(R, ref.velocities, ref)
    assert got["energy_error"][0] == np.inf and got["dynamic_error"][0] == np.inf
    for k in got:
        np.testing.assert_array_equal(got[k][1:], clean[k][1:])
    s = summarize(got)
    assert s["energy_error"]["nonfinite"] == 1 and np.isnan(s["energy_error"]["mean"])


# --------------------------------------------------------------------------- a real full filesystem
FULL_DISK_SCRIPT = r"""
import errno, json, os, subprocess, sys
from pathlib import Path

import numpy as np

from physdiff.config import save_yaml
from physdiff.data.hdf5 import atomic_write
from physdiff.outputs import WriteError, write_json
from physdiff.training.checkpoint import save_checkpoint

mnt = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
names = ["results.json", "config.yaml", "data.h5", "checkpoint.pt", "three_body.h5"]
before = {}
for name in names:
    (mnt / name).write_bytes(b"previous " + name.encode())
    before[name] = (mnt / name).read_bytes()
fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)  # fill the filesystem: no block is left (ENOSPC)
try:
    while True:
        os.write(fd, b"\0" * 1024)
except OSError as e:
    assert e.errno == errno.ENOSPC, e
os.close(fd)
big = np.random.default_rng(0).standard_normal(64 << 10)


def h5(p):
    with atomic_write(p) as f:
        f["x"] = big


writers = {
    "results.json": lambda p: write_json(p, {"x": big.tolist()}),
    "config.yaml": lambda p: save_yaml({"x": big[:20000].tolist()}, p),
    "data.h5": h5,
    "checkpoint.pt": lambda p: save_checkpoint(p, {"model": {"w": big}, "step": 1}),
}
report = {}
for name, write in writers.items():
    try:
        write(mnt / name)
        report[name] = "written"
    except WriteError as e:
        report[name] = [str(e), e.errno]
cli = subprocess.run(
    [sys.executable, "-m", "physdiff.cli.main", "simulate", "three-body", "--n", "4", "--frames", "4",
     "--out", str(mnt / "three_body.h5"), "--force"],
    capture_output=True, text=True,
)
report["cli"] = [cli.returncode, [ln for ln in cli.stderr.splitlines() if ln.startswith("physdiff")],
                 "Traceback" in cli.stderr]
report["intact"] = sorted(n for n in names if (mnt / n).read_bytes() == before[n])
report["left"] = sorted(p.name for p in mnt.iterdir())
print(json.dumps(report))
"""


def _namespace_prefix() -> list[str] | None:
    """How to mount a tmpfs in a private mount namespace here: ``unshare -m`` as root, ``unshare -rm``
    (a user namespace) otherwise; ``None`` where neither can mount (no unshare, no privilege)."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return None
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = 'd=$(mktemp -d) && { mount -t tmpfs -o size=64k tmpfs "$d" && umount "$d"; r=$?; rmdir "$d"; exit $r; }'
        try:
            ok = subprocess.run([*prefix, "sh", "-c", probe], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return prefix
    return None


def test_a_real_full_tmpfs_keeps_every_previous_file_and_names_it(tmp_path):
    """A 256 KiB tmpfs filled to the last block (a real ENOSPC from the kernel, not a patched fsync): every
    writer raises one WriteError naming its file, ``simulate --force`` exits 2 with one line naming it, every
    previous file is byte-for-byte intact and no temporary file is left. Mounted in a private mount namespace
    (the host's mounts are untouched); skipped only where this machine cannot mount one (the monkeypatched
    ENOSPC tests in test_reliability.py run everywhere)."""
    import json
    import os
    import subprocess
    import sys

    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs here (no root and no user namespaces): the patched-ENOSPC tests stand")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    src = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src}
    run = subprocess.run(
        [*prefix, sys.executable, "-c", FULL_DISK_SCRIPT, str(mnt)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    for name in ("results.json", "config.yaml", "data.h5", "checkpoint.pt"):
        assert report[name] == [f"cannot write {mnt / name}: No space left on device", 28], (name, report[name])
    code, lines, traceback = report["cli"]
    assert code == 2 and not traceback, report["cli"]
    assert lines == [f"physdiff simulate: error: cannot write {mnt / 'three_body.h5'}: No space left on device"]
    assert report["intact"] == ["checkpoint.pt", "config.yaml", "data.h5", "results.json", "three_body.h5"]
    assert report["left"] == ["checkpoint.pt", "config.yaml", "data.h5", "filler", "results.json", "three_body.h5"]


# --------------------------------------------------------------------------- class 7 on generic field files
def test_a_generic_field_file_is_sized_before_it_is_read(tmp_path):
    """The generic field reader checked nothing before reading (walking issue 24's class 7 again): a 1-D file
    declaring 10⁹ samples is refused in under a second with no large allocation; with ``max_samples`` only
    that slice is read; the budget is ``max_bytes``."""
    import time
    import tracemalloc

    import h5py

    from physdiff.data.pdebench.generic import load_generic_fields

    path = tmp_path / "waves.h5"
    nx, nt = 16, 5
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("tensor", shape=(10**9, nt, nx), dtype="f8", chunks=(1, nt, nx))
        x = np.arange(nx) / nx
        t = np.linspace(0.0, 0.4, nt)
        ds[:8] = np.sin(2 * np.pi * (x[None, None, :] - t[None, :, None]) + np.arange(8)[:, None, None])
        f["x-coordinate"] = x
        f["t-coordinate"] = t
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"waves\.h5: dataset 'tensor' declares shape \(1000000000, 5, 16\)"):
        load_generic_fields(path)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 1.0 and peak < 50 << 20, (seconds, peak)
    data, _ = load_generic_fields(path, max_samples=8)
    assert data.fields.shape[0] == 8
    with pytest.raises(ValueError, match="read budget"):
        load_generic_fields(path, max_samples=8, max_bytes=8 * nt * nx * 8 - 1)
