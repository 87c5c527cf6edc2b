"""The fault classes beyond the bad-input catalogue (issue 24), generated per class and counted.

Imported by ``benchmarks/reliability.py`` (``--faults N``: N generated cases per class). Each class draws its
cases from a seeded generator (writers × target kinds × failure points, random declared sizes, random
nesting, random user files, random corruptions of a condition), runs them against the library and
classifies each as ``held`` (the fault was refused with one clear error, nothing outside the run's own
files changed, no temporary file left) or ``failed`` (with the reason).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from physdiff.config import ConfigError, apply_overrides, save_yaml
from physdiff.data.hdf5 import atomic_write
from physdiff.outputs import WriteError, record_outputs, write_json, write_text
from physdiff.training.checkpoint import save_checkpoint
from physdiff.training.lock import RunLock
from physdiff.training.metrics_log import MetricsLog


def _h5(p: Path) -> None:
    with atomic_write(p) as f:
        f["x"] = np.zeros(3)


WRITERS: dict[str, Callable[[Path], Any]] = {
    "write_text (table.md, report.html)": lambda p: write_text(p, "new"),
    "write_json (results.json, scaling.json)": lambda p: write_json(p, {"a": 1}),
    "save_yaml (config.yaml)": lambda p: save_yaml({"a": 1}, p),
    "atomic_write (samples/data HDF5)": _h5,
    "save_checkpoint": lambda p: save_checkpoint(p, {"model": {}, "step": 1}),
    "MetricsLog (metrics.csv)": lambda p: MetricsLog(
        p, start=0, total=1, enabled=True, progress=False, tensorboard=False
    ).write({"step": 1, "loss": 0.5}),
    "RunLock (run.lock)": lambda p: RunLock(p.parent).__enter__(),
}
TARGETS = ("link to a file", "link to a folder", "dangling link", "fifo")
DISK_ERRORS = {"ENOSPC": errno.ENOSPC, "EROFS": errno.EROFS, "EACCES": errno.EACCES, "EIO": errno.EIO}


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


def link_targets(rng: np.random.Generator, n: int, tmp: Path) -> list[dict]:
    """A writer × a link or special file at its target: refused, the link's target untouched."""
    out = []
    names = list(WRITERS)
    for i in range(n):
        writer, target = names[rng.integers(len(names))], TARGETS[rng.integers(len(TARGETS))]
        d = tmp / f"link{i}"
        (d / "run").mkdir(parents=True)
        victim = d / "victim"
        if target == "link to a folder":
            victim.mkdir()
        elif target != "dangling link":
            victim.write_text("precious")
        name = "run.lock" if writer.startswith("RunLock") else "metrics.csv" if "Metrics" in writer else "out"
        p = d / "run" / name
        if target == "fifo":
            os.mkfifo(p)
        else:
            p.symlink_to(victim)
        reason = ""
        try:
            WRITERS[writer](p)
            reason = "accepted"
        except WriteError:
            pass
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: {e}"
        if target != "link to a folder" and target != "dangling link" and victim.read_text() != "precious":
            reason = reason or "the link's target was written"
        if target == "dangling link" and victim.exists():
            reason = reason or "the dangling link's target was created"
        if _temp_files(d):
            reason = reason or "temporary file left"
        out.append({"class": "link targets", "case": f"{writer} / {target}", "held": not reason, "reason": reason})
    return out


@contextlib.contextmanager
def _failing(call: str, code: int):
    real = getattr(os, call)

    def fail(*a, **k):
        raise OSError(code, os.strerror(code))

    setattr(os, call, fail)
    try:
        yield
    finally:
        setattr(os, call, real)


def full_disk(rng: np.random.Generator, n: int, tmp: Path) -> list[dict]:
    """An atomic writer × an OS error (ENOSPC, EROFS, EACCES, EIO) at fsync or rename: one WriteError naming
    the file, the previous file intact, no temporary file."""
    out = []
    names = [w for w in WRITERS if not w.startswith(("RunLock", "MetricsLog"))]
    for i in range(n):
        writer = names[rng.integers(len(names))]
        err = list(DISK_ERRORS)[rng.integers(len(DISK_ERRORS))]
        call = ("fsync", "replace")[rng.integers(2)]
        d = tmp / f"disk{i}"
        d.mkdir()
        p = d / "results.json"
        p.write_bytes(b'{"previous": true}')
        reason = ""
        try:
            with _failing(call, DISK_ERRORS[err]):
                WRITERS[writer](p)
            reason = "no error"
        except WriteError as e:
            if str(p) not in str(e) or "\n" in str(e):
                reason = f"message does not name the file: {e}"
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: {e}"
        if p.read_bytes() != b'{"previous": true}':
            reason = reason or "previous file changed"
        if _temp_files(d):
            reason = reason or "temporary file left"
        out.append({"class": "full disk", "case": f"{writer} / {err} at {call}", "held": not reason, "reason": reason})
    return out


def declared_sizes(rng: np.random.Generator, n: int, tmp: Path) -> list[dict]:
    """A small file declaring 10^9..10^12 rows (particles or a PDEBench tensor): refused in under a second."""
    from physdiff.data.particles_h5 import load_particles
    from physdiff.data.pdebench import load_pde
    from physdiff.data.pdebench.generic import load_generic_fields

    out = []
    for i in range(n):
        rows = int(10 ** rng.uniform(9, 12))
        kind = ("particles", "pdebench", "generic fields")[rng.integers(3)]
        p = tmp / f"big{i}.h5"
        with h5py.File(p, "w") as f:
            if kind == "particles":
                f.attrs["system"] = "three-body"
                for k in ("positions", "velocities"):
                    f.create_dataset(k, shape=(rows, 10, 3, 3), dtype="f8", chunks=(1, 10, 3, 3))
                f.create_dataset("masses", shape=(rows, 3), dtype="f8", chunks=(1, 3))
            else:
                f.create_dataset("tensor", shape=(rows, 41, 256), dtype="f4", chunks=(1, 41, 256))
                f["x-coordinate"] = np.linspace(0, 1, 256)
                f["t-coordinate"] = np.linspace(0, 2, 42)
        t0 = time.perf_counter()
        reason = ""
        try:
            if kind == "particles":
                load_particles(p)
            elif kind == "pdebench":
                load_pde(p, "advection")
            else:
                load_generic_fields(p)
            reason = "accepted"
        except ValueError as e:
            if "declares shape" not in str(e):
                reason = f"other error: {e}"
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: {e}"
        seconds = time.perf_counter() - t0
        if seconds > 1.0:
            reason = reason or f"took {seconds:.2f} s"
        out.append(
            {"class": "declared sizes", "case": f"{kind}, {rows:.2e} rows", "held": not reason, "reason": reason}
        )
    return out


def virtual_and_links(rng: np.random.Generator, n: int, tmp: Path) -> list[dict]:
    """Virtual datasets mapping a random fraction of their rows, external links outside the folder."""
    from physdiff.data.particles_h5 import load_particles

    src = tmp / "vsrc" / "src.h5"
    src.parent.mkdir()
    rows, shape = 8, (8, 4, 3, 3)
    with h5py.File(src, "w") as f:
        f["positions"] = f["velocities"] = np.zeros(shape)
        f["masses"] = np.ones((rows, 3))
    out = []
    for i in range(n):
        d = tmp / f"v{i}" / "sub"
        d.mkdir(parents=True)
        kind = ("unmapped rows", "link outside")[rng.integers(2)]
        p = d / "f.h5"
        with h5py.File(p, "w") as f:
            f.attrs["system"] = "three-body"
            if kind == "unmapped rows":
                (d / "src.h5").write_bytes(src.read_bytes())
                extra = int(rng.integers(1, 100))
                for k, s in (("positions", shape), ("velocities", shape), ("masses", (rows, 3))):
                    lay = h5py.VirtualLayout(shape=(rows + extra, *s[1:]), dtype="f8")
                    lay[:rows] = h5py.VirtualSource("src.h5", k, shape=s)
                    f.create_virtual_dataset(k, lay, fillvalue=0.0)
            else:
                for k in ("positions", "velocities", "masses"):
                    f[k] = h5py.ExternalLink(str(src), k)
        reason = ""
        try:
            load_particles(p)
            reason = "accepted"
        except ValueError as e:
            if "virtual" not in str(e) and "external link" not in str(e):
                reason = f"other error: {e}"
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: {e}"
        out.append({"class": "virtual datasets and links", "case": kind, "held": not reason, "reason": reason})
    return out


def force_keeps_foreign_files(rng: np.random.Generator, n: int, tmp: Path) -> list[dict]:
    """A run folder with random user files (``checkpoint*``-like names, files in ``tb/``, folders): --force's
    clear removes exactly the recorded files."""
    from physdiff.experiments.harness import RUN_FILES, clear_run_folder

    stems = ["checkpoint", "checkpoints_archive", "metrics", "samples_", "config", "run", "tb/events.out.tfevents."]
    out = []
    for i in range(n):
        run = tmp / f"force{i}"
        (run / "tb").mkdir(parents=True)
        for name in RUN_FILES:
            (run / name).write_text("physdiff")
        record_outputs(run, RUN_FILES)
        user = set()
        for _ in range(int(rng.integers(1, 6))):
            name = (
                f"{stems[rng.integers(len(stems))]}{rng.integers(1000)}{('.txt', '.pt', '.csv', '')[rng.integers(4)]}"
            )
            if name in RUN_FILES:
                continue
            p = run / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("mine")
            user.add(name)
        clear_run_folder(run)
        left = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
        reason = ""
        if left != user:
            reason = f"removed {sorted(user - left)}, kept {sorted(left - user)}"
        out.append(
            {
                "class": "--force keeps foreign files",
                "case": ", ".join(sorted(user)),
                "held": not reason,
                "reason": reason,
            }
        )
    return out


def bounded_parsers(rng: np.random.Generator, n: int, tmp: Path) -> list[dict]:
    """YAML alias bombs (random fan-out and levels) and deep nesting in overrides: one ConfigError."""
    from physdiff.experiments.config import preset_config

    cfg = preset_config("three-body", "quick")
    out = []
    for _ in range(n):
        if rng.integers(2):
            fan, levels = int(rng.integers(6, 12)), int(rng.integers(6, 10))
            parts = ["&a0 [" + ",".join(["x"] * fan) + "]"]
            parts += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels)]
            value, case = "[" + ",".join(parts) + "]", f"alias bomb {fan}^{levels}"
        else:
            depth = int(10 ** rng.uniform(1.9, 4))
            value, case = "[" * depth + "]" * depth, f"nesting depth {depth}"
        reason = ""
        try:
            apply_overrides(cfg, [f"seeds={value}"])
            reason = "accepted"
        except ConfigError as e:
            if "\n" in str(e):
                reason = "more than one line"
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}"
        out.append({"class": "bounded parsers", "case": case, "held": not reason, "reason": reason})
    return out


def _simulated(tmp: Path, system: str) -> Path:
    from physdiff.data.particles_h5 import simulate_to_file

    p = tmp / f"{system}.h5"
    if not p.is_file():
        simulate_to_file(system, p, 12, 0, progress=False, n_frames=5)
    return p


def rows_used(rng: np.random.Generator, n: int, tmp: Path) -> list[dict]:
    """A particle file declaring 10^6..10^9 trajectories of which the first m (1..12) are written, read with
    ``max_samples = m``: only those rows are read (under a second, the budget checked on the slice)."""
    from physdiff.data.particles_h5 import load_particles

    src = load_particles(_simulated(tmp, "three-body"))
    out = []
    for i in range(n):
        rows, m = int(10 ** rng.uniform(6, 9)), int(rng.integers(1, 13))
        p = tmp / f"rows{i}.h5"
        with h5py.File(p, "w") as f:
            f.attrs.update({"system": "three-body", **src.constants})
            for k in ("positions", "velocities", "masses"):
                a = getattr(src, k)
                f.create_dataset(k, shape=(rows, *a.shape[1:]), dtype="f8", chunks=(1, *a.shape[1:]))
                f[k][:m] = a[:m]
        t0 = time.perf_counter()
        reason = ""
        try:
            got = load_particles(p, max_samples=m, max_bytes=1 << 20)
            if not np.array_equal(got.positions, src.positions[:m]):
                reason = "other rows read"
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: {e}"
        seconds = time.perf_counter() - t0
        if seconds > 1.0:
            reason = reason or f"took {seconds:.2f} s"
        p.unlink()
        out.append({"class": "rows used", "case": f"{m} of {rows:.1e} rows", "held": not reason, "reason": reason})
    return out


def coincident_particles(rng: np.random.Generator, n: int, tmp: Path) -> list[dict]:
    """Two or three particles put on one point (random system with a 1/r potential, sample, frame): a data
    file is refused naming the file and that sample; as generated samples, energy_error is inf (never NaN)
    with a warning naming the count."""
    import shutil
    import warnings

    from physdiff.data.particles_h5 import load_particles
    from physdiff.evaluation.particle_metrics import per_sample_metrics

    out = []
    for i in range(n):
        system = ("three-body", "charged")[rng.integers(2)]
        ref = load_particles(_simulated(tmp, system))
        N, L, K, _ = ref.positions.shape
        s, frame = int(rng.integers(N)), int(rng.integers(1, L))
        who = rng.choice(K, size=int(rng.integers(2, 4)), replace=False)
        R = ref.positions.copy()
        R[s, frame, who[1:]] = R[s, frame, who[0]]
        as_data = ("data file", "generated")[rng.integers(2)]
        reason = ""
        try:
            if as_data == "data file":
                p = tmp / f"coincident{i}.h5"
                shutil.copy(ref.path, p)
                with h5py.File(p, "a") as f:
                    f["positions"][...] = R
                try:
                    load_particles(p)
                    reason = "accepted"
                except ValueError as e:
                    if str(p) not in str(e) or f"sample {s}, frame {frame}" not in str(e) or "\n" in str(e):
                        reason = f"message: {e}"
                p.unlink()
            else:
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    m = per_sample_metrics(R, ref.velocities, ref)
                if m["energy_error"][s] != np.inf:
                    reason = f"energy_error {m['energy_error'][s]}"
                elif not any("1 of" in str(x.message) and "coincident" in str(x.message) for x in w):
                    reason = "no warning naming the count"
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: {e}"
        case = f"{system}, {len(who)} particles at sample {s} frame {frame}, {as_data}"
        out.append({"class": "coincident particles", "case": case, "held": not reason, "reason": reason})
    return out


CLASSES = {
    "link targets": link_targets,
    "full disk": full_disk,
    "declared sizes": declared_sizes,
    "virtual datasets and links": virtual_and_links,
    "--force keeps foreign files": force_keeps_foreign_files,
    "bounded parsers": bounded_parsers,
    "rows used": rows_used,
    "coincident particles": coincident_particles,
}


def run_fault_classes(n: int, seed: int = 0) -> list[dict]:
    """``n`` generated cases of each class (seeded), as records."""
    records = []
    with tempfile.TemporaryDirectory(prefix="physdiff-faults-") as d:
        for k, fn in enumerate(CLASSES.values()):
            folder = Path(d) / f"c{k}"
            folder.mkdir()
            records += fn(np.random.default_rng([seed, k]), n, folder)
    return records
