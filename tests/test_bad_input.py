"""Bad input through the command line ends in one clear line, exit code 2, and nothing written.

Every case runs ``physdiff.cli.main.main(argv)`` in-process (a few also in a subprocess, to see the real
stderr) and must end

* with exit code 2 and exactly one line on stderr, ``physdiff <verb>: error: ...``, that matches the case's
  ``expect`` (it names the key, the file or the path at fault); no ``Traceback`` and no Python warning (a
  real run prints those to stderr too). Errors of argparse itself (``--steps 0``, a bad ``--device``) also
  print argparse's usage block before that line; that block is allowed for them and counted apart
  (``usage=True``; see ``test_argparse_errors_print_a_usage_block_too``);
* with no file written or changed in the case's folder (inputs and outputs alike; a snapshot of every
  file's size and mtime before and after). Only the data cache (``work/cache``) may be written, and only
  by the cases marked ``cache=True``, whose error depends on simulated data (the simulator's progress lines
  may then precede the error line). Every other data case reads a ``--data`` file: nothing to cache.

Families: ``config`` (values, keys, YAML, names, constraints, seeds, argparse options), ``particles``
(particle HDF5 files through ``train``, ``evaluate`` and ``reproduce``), ``pde`` (PDEBench-layout files
through ``train advection|darcy``, ``evaluate`` and ``reproduce``) and ``paths`` (output paths, run folders,
corrupt run files, refused and forced re-training). Randomised families use hypothesis.

A case whose input today ends in a traceback, is accepted, or writes before failing, and whose fix lies
outside the data readers and the config module, is marked ``xfail(strict=True)`` with the defect: file,
input, behaviour. ``benchmarks/reliability.py`` runs the same catalogue (:data:`CASES`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import typing
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from physdiff.cli.main import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SRC = str(Path(__file__).resolve().parents[1] / "src")

#: tiny settings (as tests/test_reproduce_particles.py's and tests/test_reproduce_fields.py's TINY): cases that
#: do train finish in a second or two
PARTICLE_TINY = [
    "model.hidden=16",
    "model.layers=1",
    "model.vector_channels=4",
    "train.steps=4",
    "train.batch_size=8",
    "train.log_every=2",
    "sample.steps=2",
    "sample.n_test=4",
    "sample.batch_size=4",
    "sample.constraints=[]",
]
FIELD_TINY = [
    "model.base_channels=8",
    "model.channel_mults=[1,2]",
    "train.steps=4",
    "train.batch_size=8",
    "train.log_every=2",
    "sample.steps=2",
    "sample.n_test=4",
    "sample.batch_size=4",
    "sample.constraints=[]",
]
TINY = {"five-spring": PARTICLE_TINY, "three-body": PARTICLE_TINY, "advection": FIELD_TINY, "darcy": FIELD_TINY}
#: deprecation-type warnings are hidden by Python's default filters, so a real run does not print them
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


# ============================================================================================ inputs
@dataclasses.dataclass(frozen=True)
class Inputs:
    """Valid files every case starts from (made once): data sets, trained run folders, their samples."""

    fs: Path  # five-spring particles [20, 6, 5, 2] with splits 16/2/2
    tb: Path  # three-body particles [20, 6, 3, 2]
    adv: Path  # advection tensor [20, 8, 16]
    darcy: Path  # darcy nu, tensor [20, (1,) 16, 16]
    fs_run: Path  # `physdiff train five-spring` (4 steps) + `sample`
    adv_run: Path  # `physdiff train advection` (4 steps) + `sample --subtask prediction`

    @property
    def fs_samples(self) -> Path:
        return self.fs_run / "samples_prediction.h5"

    @property
    def adv_samples(self) -> Path:
        return self.adv_run / "samples_prediction.h5"


def make_inputs(folder: Path) -> Inputs:
    """Simulate the data sets and train + sample the two runs (a few seconds on one core)."""
    from physdiff.data.particles_h5 import simulate_to_file
    from physdiff.data.pdebench import simulate_to_file as simulate_pde

    folder.mkdir(parents=True, exist_ok=True)
    i = Inputs(*(folder / n for n in ("fs.h5", "tb.h5", "adv.h5", "darcy.h5", "fs_run", "adv_run")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate_to_file("five-spring", i.fs, 20, 0, n_frames=6)
        simulate_to_file("three-body", i.tb, 20, 0, n_frames=6)
        simulate_pde("advection", i.adv, 20, 0, nx=16, nt=8, k_max=1)
        simulate_pde("darcy", i.darcy, 20, 0, n_grid=16)
    for exp, data, run, extra in (
        ("five-spring", i.fs, i.fs_run, []),
        ("advection", i.adv, i.adv_run, ["--subtask", "prediction"]),
    ):
        argv = ["train", exp, "--data", str(data), "--run-dir", str(run), "--device", "cpu", *TINY[exp]]
        for a in (argv, ["sample", str(run), "--device", "cpu", *extra]):
            got = run_cli(a)
            assert got.code == 0, (a, got.stderr)
    return i


# ========================================================================================= workspace
class Workspace:
    """One case's folder: ``in/`` (the inputs it wrote), ``work/`` (where the command may write: ``run/``,
    ``out/``, ``cache/``), ``tmp/`` (the temporary folder while it runs: internal-error logs)."""

    def __init__(self, root: Path, inputs: Inputs) -> None:
        self.root, self.inputs = Path(root), inputs
        self.inp, self.work, self.tmp = self.root / "in", self.root / "work", self.root / "tmp"
        for p in (self.inp, self.work, self.tmp):
            p.mkdir(parents=True, exist_ok=True)
        self.run, self.out, self.cache = self.work / "run", self.work / "out", self.work / "cache"

    def copy(self, src: Path, name: str = "bad.h5", mutate: Callable[[h5py.File], object] | None = None) -> str:
        """A copy of an input file (in ``in/``), changed by ``mutate(h5 file)``."""
        dst = self.inp / name
        shutil.copy(src, dst)
        if mutate is not None:
            with h5py.File(dst, "a") as f:
                mutate(f)
        return str(dst)

    def write(self, data: bytes, name: str = "bad.h5") -> str:
        dst = self.inp / name
        dst.write_bytes(data)
        return str(dst)

    def copy_run(self, src: Path) -> str:
        shutil.copytree(src, self.run)
        return str(self.run)

    # --------------------------------------------------------------------------------- argv builders
    def common(self) -> list[str]:
        return ["--device", "cpu", "--cache-dir", str(self.cache)]

    def train(
        self, exp: str, data: str | None = None, *over: str, arm: str | None = None, keep_constraints: bool = False
    ) -> list[str]:
        """``train EXP`` with the tiny settings (``keep_constraints``: the preset's sampling constraints stay, so
        that their keys exist)."""
        tiny = [o for o in TINY[exp] if not (keep_constraints and o.startswith("sample.constraints"))]
        argv = ["train", exp, "--run-dir", str(self.run), *self.common(), *tiny, *over]
        return argv + (["--data", data] if data else []) + (["--arm", arm] if arm else [])

    def reproduce(self, exp: str, data: str | None = None, *over: str) -> list[str]:
        argv = ["reproduce", exp, "--out", str(self.out), "--seeds", "0", *self.common(), *TINY[exp], *over]
        return argv + (["--data", data] if data else [])

    def evaluate(self, samples: str, reference: str, *extra: str) -> list[str]:
        return ["evaluate", samples, "--reference", reference, *extra]

    def sample(self, run: str, *extra: str) -> list[str]:
        return ["sample", run, "--device", "cpu", *extra]


# ======================================================================================= the runner
@dataclasses.dataclass
class Outcome:
    code: int | str | None
    stderr: list[str]
    warnings: list[str]
    changed: list[str]
    seconds: float = 0.0


def run_cli(argv: list[str]) -> Outcome:
    """``main(argv)`` in-process: its exit code, stderr lines and the warnings a real run would print."""
    err, out = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("physdiff").level)
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(out),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        try:
            code: int | str | None = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            code = e.code
        except BaseException as e:  # noqa: BLE001 - main() must not raise: report what escaped
            code = f"raised {type(e).__name__}: {e}"
            err.write("Traceback (escaped main)\n")
        finally:  # main() points the root logger at this call's stderr: put the previous handlers back
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
            logging.getLogger("physdiff").setLevel(saved[2])
    shown = sorted(
        {f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, HIDDEN_WARNINGS)}
    )
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return Outcome(code, lines, shown, [], time.perf_counter() - t0)


def snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (but under ``skip``) with its size and mtime; folders as (-1, -1)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if any(p == s or s in p.parents for s in skip):
            continue
        st_ = p.stat()
        out[str(p.relative_to(root))] = (-1, -1) if p.is_dir() else (st_.st_size, st_.st_mtime_ns)
    return out


def changes(before: dict, after: dict) -> list[str]:
    new = [f"+{k}" for k in after if k not in before]
    gone = [f"-{k}" for k in before if k not in after]
    mod = [f"~{k}" for k in after if k in before and after[k] != before[k]]
    return new + gone + mod


#: a progress line (tqdm's, or physdiff's line-per-10 % form): ``five-spring:  40%|####  | ...``
PROGRESS = re.compile(r"^[\w -]+:\s+\d+%(\||\s\()")


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: ``build(ws)`` writes its files and returns argv; ``expect`` must match the error line."""

    family: str
    name: str
    build: Callable[[Workspace], list[str]]
    expect: str
    cache: bool = False  # the error depends on data: the data cache may be written
    usage: bool = False  # an argparse error: its usage block precedes the error line
    defect: str | None = None  # a known defect (xfail): file, input, behaviour

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


def run_case(case: Case, root: Path, inputs: Inputs) -> Outcome:
    """Build the case in ``root`` and run it in-process, with the temporary folder inside ``root/tmp``."""
    ws = Workspace(root, inputs)
    argv = case.build(ws)
    skip = (ws.tmp, ws.cache) if case.cache else (ws.tmp,)
    before = snapshot(ws.root, skip)
    time.sleep(0.01)  # mtimes of rewritten files differ
    old_tmp = tempfile.tempdir
    tempfile.tempdir = str(ws.tmp)
    try:
        got = run_cli(argv)
    finally:
        tempfile.tempdir = old_tmp
    got.changed = changes(before, snapshot(ws.root, skip))
    return got


def verdict(case: Case, got: Outcome) -> tuple[str, str]:
    """(category, detail): ``clean``, ``traceback`` (a Python traceback, or exit 1: an internal error whose
    traceback went to a log), ``accepted`` (exit 0: the bad input was taken), ``unclean`` (exit 2, but more
    than one line, a warning, a message without what it should name, or files written)."""
    text = "\n".join(got.stderr)
    detail = f"exit {got.code}; stderr: {text[-600:]!r}; warnings: {got.warnings}; changed: {got.changed}"
    if "Traceback" in text or got.code == 1 or isinstance(got.code, str):
        return "traceback", detail
    if got.code == 0:
        return "accepted", detail
    lines = list(got.stderr)
    if case.usage:  # argparse: "usage: ..." and its indented continuation lines
        lines = [line for line in lines if not (line.startswith("usage:") or line.startswith(" "))]
    if case.cache:  # the data were simulated (allowed): the simulator's progress lines came with that work
        lines = [line for line in lines if not PROGRESS.match(line)]
    problems = []
    if got.code != 2:
        problems.append(f"exit code {got.code}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines")
    elif not re.match(r"physdiff [a-z]+: error: \S", lines[0]):
        problems.append("the line is not 'physdiff <verb>: error: ...'")
    elif not re.search(case.expect, lines[0]):
        problems.append(f"the message does not match {case.expect!r}")
    if got.warnings:
        problems.append("warnings printed")
    if got.changed:
        problems.append("files written or changed")
    return ("unclean", "; ".join(problems) + " -- " + detail) if problems else ("clean", detail)


# ================================================================================ h5py edit helpers
def put(key: str, value) -> Callable[[h5py.File], None]:
    """Replace (or create) dataset ``key``; ``value`` may be a function of the old array."""

    def edit(f: h5py.File) -> None:
        old = f[key][()] if key in f else None
        new = value(old) if callable(value) else value
        if key in f:
            del f[key]
        f.create_dataset(key, data=new)

    return edit


def set_at(key: str, index: tuple, value: float) -> Callable[[h5py.File], None]:
    def change(a):
        a = np.array(a, dtype=np.float64)
        a[index] = value
        return a

    return put(key, change)


def drop(*keys: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        for k in keys:
            del f[k]

    return edit


def attr(name: str, value=None, delete: bool = False) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        if delete:
            del f.attrs[name]
        else:
            f.attrs[name] = value

    return edit


def both(*edits: Callable[[h5py.File], object]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        for e in edits:
            e(f)

    return edit


def first(n: int, *keys: str, axis: int = 0) -> Callable[[h5py.File], None]:
    """Keep the first ``n`` entries of ``keys`` along ``axis``."""
    return both(*(put(k, lambda a, n=n: np.take(a, np.arange(n), axis=axis)) for k in keys))


PARTICLE_ARRAYS = ("positions", "velocities")
FS_ALL = ("positions", "velocities", "masses", "edges")


# ========================================================================================= the cases
def D(family: str, name: str, build, expect: str, **kw) -> Case:
    return Case(family, name, build, expect, **kw)


# --------------------------------------------------------------------------------------- config
def _cfg(over: str, exp: str = "five-spring") -> Callable[[Workspace], list[str]]:
    """``train EXP --data FILE KEY=VALUE``: the config is checked before the data are read."""
    return lambda ws: ws.train(exp, str(ws.inputs.fs if exp == "five-spring" else ws.inputs.adv), over)


CONFIG_VALUES = [
    ("train.steps=-1", r"'train\.steps' must be >= 1, got -1"),
    ("train.steps=0", r"'train\.steps' must be >= 1"),
    ("train.steps=abc", r"'train\.steps' must be an integer, got 'abc'"),
    ("train.steps=1.5", r"'train\.steps' must be an integer"),
    ("train.steps=1e30", r"'train\.steps' must be an integer"),
    ("train.steps=", r"'train\.steps' must be an integer"),
    ("train.steps=null", r"'train\.steps' must be an integer"),
    ("train.steps=true", r"'train\.steps' must be an integer"),
    ("train.lr=.nan", r"'train\.lr' must be a finite number"),
    ("train.lr=nan", r"'train\.lr' must be a finite number"),
    ("train.lr=.inf", r"'train\.lr' must be a finite number"),
    ("train.lr=-.inf", r"'train\.lr' must be a finite number"),
    ("train.lr=0", r"'train\.lr' must be > 0"),
    ("train.lr=-0.001", r"'train\.lr' must be > 0"),
    ("train.lr=1e300", r"'train\.lr' must be at most .* \(float32\)"),  # fixed: overflow error after writing
    ("train.lr=[1]", r"'train\.lr' must be a number"),
    ("train.batch_size=0", r"'train\.batch_size' must be >= 1"),
    ("train.batch_size=1180591620717411303424", r"'train\.batch_size' must fit a 64-bit integer"),  # fixed
    ("train.ema_decay=1", r"'train\.ema_decay' must be < 1"),
    ("train.grad_clip=0", r"'train\.grad_clip' must be > 0"),
    ("train.weight_decay=1e300", r"'train\.weight_decay' must be at most"),  # fixed: inf loss after writing
    ("train.checkpoint_every=0", r"'train\.checkpoint_every' must be >= 1"),
    ("train.tensorboard=maybe", r"'train\.tensorboard' must be true or false"),
    ("data.seed=1180591620717411303424", r"'data\.seed' must fit a 64-bit integer"),  # fixed: HDF5 TypeError
    ("data.n=2", r"'data\.n' must be >= 3"),
    ("data.max_samples=0", r"'data\.max_samples' must be >= 1"),
    ("data.downsample_x=0", r"'data\.downsample_x' must be >= 1"),
    ("model.hidden=0", r"'model\.hidden' must be >= 1"),
    ("model.hidden=-1180591620717411303424", r"'model\.hidden' must fit a 64-bit integer"),  # fixed
    ("sample.steps=1180591620717411303424", r"'sample\.steps' must fit a 64-bit integer"),  # fixed: late
    ("sample.eta=2", r"'sample\.eta' must be <= 1"),
    ("sample.n_test=0", r"'sample\.n_test' must be >= 1"),
    ("cond_drop=1", r"'cond_drop' must be < 1"),
    ("priors.0.weight=-1", r"'priors\.0\.weight' must be >= 0"),
    ("priors.0.weight=1e300", r"'priors\.0\.weight' must be at most"),  # fixed: inf loss after writing
    ("seeds=[]", r"'seeds' names no seed"),
    ("seeds=[1,1]", r"'seeds' lists a seed twice"),
    ("seeds=[-1]", r"'seeds' must be >= 0"),
    ("seeds=0", r"'seeds' must be a list"),
    ("seeds=[a]", r"'seeds\.0' must be an integer"),
    ("train=3", r"'train' must be a mapping"),
    ("data=null", r"'data\.path': 'data' is None, not a mapping"),  # fixed: the message named only 'data.path'
    ("diffusion=null", r"'diffusion' must be a mapping"),
    ("priors=null", r"'priors' must be a list"),
    ("metrics={x: foo}", r"'metrics'.*not one of"),
]
CONFIG_KEYS = [
    ("train.stepz=3", r"unknown config key 'train\.stepz' \(did you mean 'steps'\?\)"),
    ("modle.hidden=3", r"unknown config key 'modle\.hidden' \(did you mean 'model'"),
    ("sample.sampelr=ddim", r"unknown config key 'sample\.sampelr' \(did you mean 'sampler'\?\)"),
    ("priors.0.wieght=1", r"unknown config key 'priors\.0\.wieght' \(did you mean 'weight'"),
    ("diffusion.shedule=linear", r"'diffusion\.shedule' \(did you mean 'schedule'\?\)"),
    ("priors.7.weight=1", r"'priors\.7\.weight': index '7' is not in a list of"),
    ("=3", r"unknown config key ''"),
    ("model.channel_mults=[1]", r"unknown config key 'model\.channel_mults'"),
]
CONFIG_YAML = [
    ("train.steps=[1", r"override 'train\.steps=\[1': the value is not valid YAML"),
    ("sample.constraints=[{priors: [momentum]", r"'sample\.constraints=.*not valid YAML"),
    ("train.lr={", r"override 'train\.lr=\{': the value is not valid YAML"),
    ("priors.0.options={a: [}", r"not valid YAML"),
]
CONFIG_NAMES = [
    ("sample.sampler=ddimm", r"'sample\.sampler': 'ddimm' is not one of .*did you mean 'ddim'"),
    ("diffusion.schedule=cosin", r"'diffusion\.schedule': 'cosin' is not one of .*did you mean 'cosine'"),
    ("diffusion.process=vpp", r"'diffusion\.process': 'vpp' is not one of .*did you mean 'vp'"),
    ("diffusion.prediction=epsilon", r"'diffusion\.prediction': 'epsilon' is not one of .*did you mean 'eps'"),
    ("train.objective=bogus", r"'train\.objective': 'bogus' is not one of"),
    ("priors.0.time_weight=two", r"'priors\.0\.time_weight': 'two' is not one of"),
    ("priors.0.variant=aux", r"'priors\.0\.variant': 'aux' is not one of .*did you mean 'aux_head'"),
    ("model.kind=bogus", r"'model\.kind': unknown model 'bogus'"),
    ("task=bogus", r"unknown task 'bogus'"),
    (("diffusion.process=flow", "diffusion.schedule=cosine"), r"'diffusion\.schedule': the flow process"),
    (("diffusion.process=flow", "diffusion.prediction=eps"), r"'diffusion\.prediction': with the flow process"),
]
CONFIG_CONSTRAINTS = [
    ("sample.constraints=[{priors: [nope]}]", r"unknown prior 'nope'"),
    ("sample.constraints=[{priors: []}]", r"a constraint names no prior"),
    ("sample.constraints=[{priors: [momentum]}, {priors: [momentum]}]", r"'projection:momentum' is listed twice"),
    ("sample.constraints=[{priors: [momentum], mode: foo}]", r"'sample\.constraints\.0\.mode': 'foo' is not one"),
    ("sample.constraints=[{priors: [momentum], t_start: 0}]", r"'sample\.constraints\.0\.t_start' must be > 0"),
    ("sample.constraints=[{priors: [momentum], t_start: 2}]", r"'sample\.constraints\.0\.t_start' must be <= 1"),
    ("sample.constraints=[{priors: [momentum], iterations: 0}]", r"'sample\.constraints\.0\.iterations' must be"),
    ("sample.constraints=[{priors: [momentum], scale: -1}]", r"'sample\.constraints\.0\.scale' must be > 0"),
    ("sample.constraints=[{priors: [momentum], bogus: 1}]", r"unknown config key.*sample\.constraints\.0\.bogus"),
    ("sample.constraints=3", r"'sample\.constraints' must be a list"),
]


CASES: list[Case] = []
for _over, _expect in CONFIG_VALUES + CONFIG_KEYS + CONFIG_YAML + CONFIG_NAMES:
    _overs = _over if isinstance(_over, tuple) else (_over,)
    CASES.append(
        D("config", " ".join(_overs), lambda ws, o=_overs: ws.train("five-spring", str(ws.inputs.fs), *o), _expect)
    )
for _over, _expect in CONFIG_CONSTRAINTS:  # checked once the data (and the priors' constants) are read
    CASES.append(
        D(
            "config",
            _over,
            lambda ws, o=_over: ws.reproduce("five-spring", str(ws.inputs.fs), "--arms", "no_prior", o),
            _expect,
        )
    )
CASES += [
    D(
        "config",
        "field model.channel_mults=[0]",
        _cfg("model.channel_mults=[0]", "advection"),
        r"'model\.channel_mults' must be >= 1",
    ),
    D("config", "field model.dropout=1", _cfg("model.dropout=1", "advection"), r"'model\.dropout' must be < 1"),
    D(
        "config",
        "priors.0.name=nonexistent",
        lambda ws: ws.reproduce("five-spring", str(ws.inputs.fs), "priors.0.name=nonexistent"),
        r"unknown prior 'nonexistent'",
    ),
    D("config", "data.system=bogus", _cfg("data.system=bogus"), r"'bogus'"),
    D(
        "config",
        "--arm bogus",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), arm="bogus"),
        r"unknown arm 'bogus'",
    ),
    D(
        "config",
        "--arm prior:missing.py:X",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), arm=f"prior:{ws.inp}/missing.py:X"),
        r"prior '.*missing\.py:X': cannot import",
    ),
    D(
        "config",
        "--arm prior:file.py:NotAPrior",
        lambda ws: (
            (ws.inp / "mine.py").write_text("class NotAPrior:\n    pass\n"),
            ws.train("five-spring", str(ws.inputs.fs), arm=f"prior:{ws.inp}/mine.py:NotAPrior"),
        )[1],
        r"'NotAPrior' .* is not a physdiff Prior subclass",
    ),
    D("config", "--seeds ''", lambda ws: ws.reproduce("five-spring", None, "--seeds", ""), r"--seeds names no seed"),
    D(
        "config",
        "--seeds 1,1",
        lambda ws: ws.reproduce("five-spring", None, "--seeds", "1,1"),
        r"'seeds' lists a seed twice",
    ),
    D("config", "--seeds -1", lambda ws: ws.reproduce("five-spring", None, "--seeds", "-1"), r"'seeds' must be >= 0"),
    D(
        "config",
        "--seeds a,b",
        lambda ws: ws.reproduce("five-spring", None, "--seeds", "a,b"),
        r"--seeds must be comma-separated integers",
    ),
    D(
        "config",
        "--arms bogus",
        lambda ws: ws.reproduce("five-spring", str(ws.inputs.fs), "--arms", "bogus"),
        r"unknown arm\(s\) \['bogus'\]",
    ),
    D(
        "config",
        "--config missing",
        lambda ws: ws.train("five-spring", None, "--config", str(ws.inp / "no.yaml")),
        r"config file .*no\.yaml does not exist",
    ),
    D(
        "config",
        "--config invalid YAML",
        lambda ws: ws.train("five-spring", None, "--config", ws.write(b"train: [1\n", "c.yaml")),
        r"config file .*c\.yaml is not valid YAML",
    ),
    D(
        "config",
        "--config of another experiment",
        lambda ws: ws.train("three-body", None, "--config", ws.write(b"experiment: five-spring\n", "c.yaml")),
        r"is a config of 'five-spring', not 'three-body'",
    ),
    # argparse
    D(
        "config",
        "sample --steps 0",
        lambda ws: ws.sample(str(ws.inputs.fs_run), "--steps", "0"),
        r"argument --steps: must be >= 1",
        usage=True,
    ),
    D(
        "config",
        "simulate --frames 0",
        lambda ws: ["simulate", "three-body", "--frames", "0", "--out", str(ws.out / "x.h5")],
        r"argument --frames: must be >= 1",
        usage=True,
    ),
    D(
        "config",
        "simulate --n 0",
        lambda ws: ["simulate", "three-body", "--n", "0", "--out", str(ws.out / "x.h5")],
        r"argument --n: must be >= 1",
        usage=True,
    ),
    D(
        "config",
        "simulate --n abc",
        lambda ws: ["simulate", "three-body", "--n", "abc", "--out", str(ws.out / "x.h5")],
        r"argument --n: 'abc' is not an integer",
        usage=True,
    ),
    D(
        "config",
        "train --seed -1",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "--seed", "-1"),
        r"argument --seed: must be >= 0",
        usage=True,
    ),
    D(
        "config",
        "--device tpu",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "--device", "tpu"),
        r"argument --device: invalid choice",
        usage=True,
    ),
    D(
        "config",
        "--preset bogus",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "--preset", "bogus"),
        r"argument --preset: invalid choice",
        usage=True,
    ),
    D(
        "config",
        "unknown experiment",
        lambda ws: ["train", "four-body", "--run-dir", str(ws.run)],
        r"invalid choice: 'four-body'",
        usage=True,
    ),
    D(
        "config",
        "override without '='",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "train.steps"),
        r"unrecognized arguments: train\.steps",
        usage=True,
    ),
    D(
        "config",
        "simulate unknown system",
        lambda ws: ["simulate", "four-body", "--out", str(ws.out / "x.h5")],
        r"unknown system 'four-body'",
    ),
    D(
        "config",
        "sweep grid without '='",
        lambda ws: ["sweep", "five-spring", "--grid", "nonsense", "--out", str(ws.out)],
        r"grid entry 'nonsense' is not of the form",
    ),
    D(
        "config",
        "sweep grid bad value",
        lambda ws: (
            ["sweep", "five-spring", "--grid", "train.steps=1,-2", "--out", str(ws.out), *ws.common()]
            + ["data.n=10", "data.settings.n_frames=4"]
        ),
        r"'train\.steps' must be >= 1, got -2",
    ),
    # errors that depend on simulated data (no --data): the data cache may be written, nothing else
    D(
        "config",
        "priors.0.name=nonexistent (simulated data)",
        lambda ws: ws.reproduce(
            "five-spring", None, "data.n=10", "data.settings.n_frames=4", "priors.0.name=nonexistent"
        ),
        r"unknown prior 'nonexistent'",
        cache=True,  # the priors are built from the data's constants, after the data are simulated
    ),
    D(
        "config",
        "sample.constraints unknown prior (simulated data)",
        lambda ws: ws.reproduce(
            "five-spring", None, "data.n=10", "data.settings.n_frames=4", "sample.constraints=[{priors: [nope]}]"
        ),
        r"unknown prior 'nope'",
        cache=True,
    ),
    D(
        "config",
        "data.settings.n_frames=2 (simulated data)",
        lambda ws: ws.reproduce("five-spring", None, "data.n=10", "data.settings.n_frames=2"),
        r"n_frames must be >= 3, got 2",
        cache=True,
    ),
    # known defects
    D(
        "config",
        "data.settings.n_frames=abc",
        lambda ws: ws.reproduce("five-spring", None, "data.n=10", "data.settings.n_frames=abc"),
        r"n_frames",
    ),
    D(
        "config",
        "data.settings.bogus=3",
        lambda ws: ws.reproduce("five-spring", None, "data.n=10", "data.settings.bogus=3"),
        r"bogus",
    ),
    D(
        "config",
        "priors.0.options.zzz=1",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "priors.0.options.zzz=1", arm="prior:momentum"),
        r"zzz",
    ),
    D(
        "config",
        "model.kind=unet for particles (reproduce)",
        lambda ws: ws.reproduce("five-spring", str(ws.inputs.fs), "--arms", "no_prior", "model.kind=unet"),
        r"model kind 'unet' does not apply",
    ),
    D(
        "config",
        "metrics of another task",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "metrics={rmse: prediction}"),
        r"'metrics': \['rmse'\] are not metrics of a particles task",
    ),
    D(
        "config",
        "sweep --max-worse nan",
        lambda ws: ["sweep", "five-spring", "--grid", "priors.0.weight=1", "--max-worse", "nan", "--out", str(ws.out)],
        r"--max-worse: must be a finite number >= 0",
        usage=True,
    ),
    D(
        "config",
        "experiment=bogus",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "experiment=bogus"),
        r"'experiment'",
    ),
    D(
        "config",
        "train.lr=1e30",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "train.lr=1e30"),
        r"'train\.lr' must be <= 1",
    ),
]


# ------------------------------------------------------------------------------------ particles
def _p(name: str, mutate, expect: str, *, src="fs", exp="five-spring", defect=None, verbs=("train",)) -> list[Case]:
    """A particle file ``bad.h5`` (a copy of input ``src`` changed by ``mutate``) through each verb."""
    out = []
    for verb in verbs:
        if verb == "train":
            build = lambda ws: ws.train(exp, ws.copy(getattr(ws.inputs, src), mutate=mutate))  # noqa: E731
        elif verb == "reproduce":
            build = lambda ws: ws.reproduce(exp, ws.copy(getattr(ws.inputs, src), mutate=mutate))  # noqa: E731
        elif verb == "evaluate-reference":
            build = lambda ws: ws.evaluate(str(ws.inputs.fs_samples), ws.copy(getattr(ws.inputs, src), mutate=mutate))  # noqa: E731
        elif verb == "evaluate-samples":
            build = lambda ws: ws.evaluate(ws.copy(ws.inputs.fs_samples, mutate=mutate), str(ws.inputs.fs))  # noqa: E731
        out.append(D("particles", f"{verb}: {name}", build, expect, defect=defect))
    return out


ALL3 = ("train", "evaluate-reference", "reproduce")
BAD = r"bad\.h5"
CASES += [
    *_p("missing 'positions'", drop("positions"), BAD + r": missing dataset 'positions'", verbs=("train", "reproduce")),
    *_p(
        "missing 'positions'",
        drop("positions"),
        BAD + r": not a particle \(positions/velocities\) or field \(PDEBench layout\) HDF5 file",
        verbs=("evaluate-reference",),
    ),
    *_p("missing 'velocities'", drop("velocities"), BAD + r": missing dataset 'velocities'"),
    *_p("missing 'masses'", drop("masses"), BAD + r": missing dataset 'masses'", verbs=("train", "evaluate-samples")),
    *_p("missing 'edges' (springs)", drop("edges"), BAD + r": missing dataset 'edges'"),
    *_p(
        "'positions' is a group",
        both(drop("positions"), lambda f: f.create_group("positions")),
        BAD + r": missing dataset 'positions'",
    ),
    *_p(
        "positions rank 3",
        put("positions", lambda a: a[:, 0]),
        BAD + r": 'positions' has shape \[20, 5, 2\] \(rank 3\)",
        verbs=ALL3,
    ),
    *_p("positions rank 5", put("positions", lambda a: a[..., None]), BAD + r": 'positions' has shape .* \(rank 5\)"),
    *_p(
        "velocities [N, L-1, K, D]",
        put("velocities", lambda a: a[:, :-1]),
        BAD + r": 'velocities' has shape \[20, 5, 5, 2\]",
    ),
    *_p("masses [N, K-1]", put("masses", lambda a: a[:, :-1]), BAD + r": 'masses' has shape \[20, 4\]"),
    *_p("edges [N, K, K-1]", put("edges", lambda a: a[:, :, :-1]), BAD + r": 'edges' has shape"),
    *_p(
        "NaN in positions",
        set_at("positions", (1, 2, 1, 0), np.nan),
        BAD + r": 'positions' .* NaN/inf .* first at \(1, 2, 1, 0\)",
        verbs=(*ALL3, "evaluate-samples"),
    ),
    *_p(
        "+inf in velocities",
        set_at("velocities", (0, 5, 4, 1), np.inf),
        BAD + r": 'velocities' .* NaN/inf",
        verbs=("train", "evaluate-reference"),
    ),
    *_p("-inf in masses", set_at("masses", (1, 1), -np.inf), BAD + r": 'masses' .* NaN/inf"),
    *_p("string masses", put("masses", lambda a: np.full(a.shape, b"m")), BAD + r": 'masses' has non-numeric dtype"),
    *_p(
        "complex positions",
        put("positions", lambda a: a.astype(np.complex128) + 1j),
        BAD + r": 'positions'.*(complex|real)",
        verbs=("train", "evaluate-reference", "evaluate-samples"),
    ),
    *_p(
        "N = 0",
        both(first(0, *FS_ALL), drop("splits")),
        BAD + r": N = 0 trajectories; a train/val/test split needs at least 3",
        verbs=("train", "reproduce"),
    ),
    *_p(
        "K = 1",
        both(first(1, *PARTICLE_ARRAYS, axis=2), first(1, "masses", axis=1), put("edges", lambda a: a[:, :1, :1])),
        BAD + r": 'positions' has K = 1 particle",
        verbs=("train", "reproduce"),
    ),
    *_p(
        "L = 1",
        first(1, *PARTICLE_ARRAYS, axis=1),
        BAD + r": 'positions' has L = 1 frame",
        verbs=("train", "reproduce"),
    ),
    *_p("L = 2", first(2, *PARTICLE_ARRAYS, axis=1), BAD + r": 'positions' has L = 2 frame"),
    *_p(
        "huge values (x1e200)",
        both(put("positions", lambda a: a * 1e200), put("velocities", lambda a: a * 1e200)),
        BAD + r": the training split's positions have standard deviation inf",
        verbs=("train", "reproduce"),
    ),
    *_p(
        "huge velocities (x1e300)",
        put("velocities", lambda a: a * 1e300),
        BAD + r": the training split's velocities have standard deviation inf",
    ),
    *_p(
        "all positions equal",
        put("positions", lambda a: np.zeros_like(a)),
        BAD + r": the training split's positions have standard deviation 0",
    ),
    *_p(
        "a mass = 0",
        set_at("masses", (0, 3), 0.0),
        BAD + r": 'masses' \[20, 5\] must be > 0; found 0\.0 at \(0, 3\)",
        verbs=ALL3,
    ),
    *_p(
        "masses < 0",
        put("masses", lambda a: -a),
        BAD + r": 'masses' .* must be > 0",
        verbs=("train", "evaluate-samples"),
    ),
    *_p(
        "split index out of range",
        put("splits/train", np.array([0, 1, 999])),
        BAD + r": 'splits/train' must be 1-D indices in \[0, 20\)",
        verbs=("train", "reproduce"),
    ),
    *_p("split index < 0", put("splits/train", np.array([0, 1, -1])), BAD + r": 'splits/train' must be 1-D indices"),
    *_p("split 2-D", put("splits/train", np.array([[0, 1], [2, 3]])), BAD + r": 'splits/train' must be 1-D indices"),
    *_p(
        "split of floats",
        put("splits/train", np.array([0.5, 1.5, 2.5])),
        BAD + r": 'splits/train'.*integer",
    ),
    *_p(
        "split lists a sample twice",
        put("splits/train", np.array([2, 2, 2, 2, 3])),
        BAD + r": 'splits/train'.*(twice|more than once)",
    ),
    *_p(
        "train split overlaps test",
        put("splits/train", np.arange(20)),
        BAD + r": .*(share|overlap|disjoint)",
    ),
    *_p(
        "no 'train' split",
        drop("splits/train"),
        BAD + r": the 'train' split is missing or empty",
        verbs=("train", "reproduce"),
    ),
    *_p(
        "empty 'train' split",
        put("splits/train", np.array([], dtype=np.int64)),
        BAD + r": the 'train' split is missing or empty",
    ),
    *_p(
        "no 'test' split (reproduce)",
        drop("splits/test"),
        BAD + r": the 'test' split is missing or empty",
        verbs=("reproduce",),
    ),
    *_p("dt = NaN", attr("dt", np.nan), BAD + r": attribute 'dt' = nan", verbs=("train", "reproduce")),
    *_p("dt = 0", attr("dt", 0.0), BAD + r": attribute 'dt' = 0\.0"),
    *_p("dt < 0", attr("dt", -0.1), BAD + r": attribute 'dt' = -0\.1"),
    *_p("kappa < 0", attr("kappa", -1.0), BAD + r": attribute 'kappa' = -1\.0"),
    *_p("G = 0 (three-body)", attr("G", 0.0), BAD + r": attribute 'G' = 0\.0", src="tb", exp="three-body"),
    *_p(
        "dt = NaN (evaluate reference)",
        attr("dt", np.nan),
        BAD + r": attribute 'dt'",
        verbs=("evaluate-reference",),
    ),
    *_p(
        "dt = 0 (evaluate reference)",
        attr("dt", 0.0),
        BAD + r": attribute 'dt'",
        verbs=("evaluate-reference",),
    ),
    *_p(
        "dt = 'abc'",
        attr("dt", "abc"),
        BAD + r".*'dt'",
    ),
    *_p(
        "system attribute unknown",
        attr("system", "four-body"),
        BAD + r": the file's system is 'four-body' but 'five-spring' was requested",
    ),
    *_p("edges not 0/1", put("edges", lambda a: a * 2), BAD + r": 'edges' .* must contain only 0 and 1"),
    *_p(
        "edges asymmetric", put("edges", lambda a: np.triu(np.ones_like(a), 1)), BAD + r": 'edges' .* must be symmetric"
    ),
    *_p("edges with a self-loop", put("edges", lambda a: np.ones_like(a)), BAD + r": 'edges' .* zero diagonal"),
    *_p(
        "five-spring file to three-body",
        None,
        BAD + r": the file's system is 'five-spring' but 'three-body' was requested",
        exp="three-body",
        verbs=("train", "reproduce"),
    ),
    *_p(
        "three-body file to five-spring",
        None,
        BAD + r": the file's system is 'three-body' but 'five-spring' was requested",
        src="tb",
    ),
    *_p("advection file to five-spring", None, BAD + r": the file's system is 'advection'", src="adv"),
    *_p(
        "source_indices out of range",
        put("source_indices", lambda a: a * 0 + 999),
        BAD + r": 'source_indices' max 999 out of range",
        verbs=("evaluate-samples",),
    ),
    *_p(
        "source_indices of floats",
        put("source_indices", lambda a: a * 0.5),
        BAD + r": 'source_indices' .* must be non-negative integers",
        verbs=("evaluate-samples",),
    ),
    *_p(
        "samples x1e200",
        put("positions", lambda a: a * 1e200),
        BAD + r" was not generated from",
        verbs=("evaluate-samples",),
    ),
    *_p(
        "reference x1e200",
        both(put("positions", lambda a: a * 1e200), put("velocities", lambda a: a * 1e200)),
        r"was not generated from .*" + BAD,
        verbs=("evaluate-reference",),
    ),
    *_p(
        "reference of 3 frames",
        first(3, *PARTICLE_ARRAYS, axis=1),
        r"do not match the reference .*" + BAD,
        verbs=("evaluate-reference",),
    ),
]
# files that are no HDF5 (or no file)
for _name, _data in (("empty file", b""), ("text file", b"positions,velocities\n1,2\n"), ("truncated HDF5", None)):

    def _raw(ws, data=_data):
        return ws.write(data if data is not None else ws.inputs.fs.read_bytes()[:4000])

    CASES += [
        D(
            "particles",
            f"train: {_name}",
            lambda ws, r=_raw: ws.train("five-spring", r(ws)),
            BAD + r".*(HDF5|signature|truncated)",
        ),
        D(
            "particles",
            f"evaluate-reference: {_name}",
            lambda ws, r=_raw: ws.evaluate(str(ws.inputs.fs_samples), r(ws)),
            BAD + r": not a readable HDF5 file",
        ),
    ]
CASES += [
    D(
        "particles",
        "evaluate-samples: text file",
        lambda ws: ws.evaluate(ws.write(b"not hdf5"), str(ws.inputs.fs)),
        BAD + r".*(HDF5|signature)",
    ),
    D(
        "particles",
        "train: missing file",
        lambda ws: ws.train("five-spring", str(ws.inp / "bad.h5")),
        BAD + r": no such",
    ),
    D("particles", "train: a folder as --data", lambda ws: ws.train("five-spring", str(ws.inp)), r"in: no such"),
    D("particles", "evaluate: missing samples", lambda ws: ws.evaluate(str(ws.inp / "bad.h5"), str(ws.inputs.fs)), BAD),
    D(
        "particles",
        "evaluate: missing reference",
        lambda ws: ws.evaluate(str(ws.inputs.fs_samples), str(ws.inp / "bad.h5")),
        BAD + r": no such file",
    ),
    D(
        "particles",
        "evaluate: field reference for particle samples",
        lambda ws: ws.evaluate(str(ws.inputs.fs_samples), ws.copy(ws.inputs.adv)),
        r"samples_prediction\.h5: layout matches no supported format",
    ),
]


# ------------------------------------------------------------------------------------------- PDE
def _f(name: str, mutate, expect: str, *, src="adv", exp=None, defect=None, verbs=("train",)) -> list[Case]:
    exp = exp or ("darcy" if src == "darcy" else "advection")
    out = []
    for verb in verbs:
        if verb == "train":
            build = lambda ws: ws.train(exp, ws.copy(getattr(ws.inputs, src), mutate=mutate))  # noqa: E731
        elif verb == "reproduce":
            build = lambda ws: ws.reproduce(exp, ws.copy(getattr(ws.inputs, src), mutate=mutate))  # noqa: E731
        elif verb == "evaluate-reference":
            build = lambda ws: ws.evaluate(str(ws.inputs.adv_samples), ws.copy(getattr(ws.inputs, src), mutate=mutate))  # noqa: E731
        elif verb == "evaluate-samples":
            build = lambda ws: ws.evaluate(ws.copy(ws.inputs.adv_samples, mutate=mutate), str(ws.inputs.adv))  # noqa: E731
        out.append(D("pde", f"{verb} {exp}: {name}", build, expect, defect=defect))
    return out


def _grid(n: int) -> Callable[[h5py.File], None]:
    """Darcy on the first n x n points."""
    return both(
        put("tensor", lambda a: a[:, :, :n, :n]),
        put("nu", lambda a: a[:, :n, :n]),
        put("x-coordinate", lambda a: a[:n]),
        put("y-coordinate", lambda a: a[:n]),
    )


CASES += [
    *_f("missing 'tensor'", drop("tensor"), BAD + r": layout matches no supported format"),
    *_f(
        "missing 'tensor'",
        drop("tensor"),
        BAD + r": not a particle \(positions/velocities\) or field \(PDEBench layout\) HDF5 file",
        verbs=("evaluate-reference",),
    ),
    *_f("missing 'x-coordinate'", drop("x-coordinate"), BAD + r": 1-D layout needs dataset 'x-coordinate'"),
    *_f("missing 't-coordinate'", drop("t-coordinate"), BAD + r": 1-D layout needs dataset 't-coordinate'"),
    *_f("tensor rank 2", put("tensor", lambda a: a[:, 0]), BAD + r": layout matches no supported format"),
    *_f("tensor rank 4", put("tensor", lambda a: a[..., None]), BAD + r": layout matches no supported format"),
    *_f(
        "x-coordinate too short",
        put("x-coordinate", lambda a: a[:-1]),
        BAD + r": inconsistent grid sizes: 'x-coordinate'",
        verbs=("train", "evaluate-reference"),
    ),
    *_f(
        "t-coordinate too long",
        put("t-coordinate", lambda a: np.arange(len(a) + 3) * 0.1),
        BAD + r": inconsistent grid sizes: 't-coordinate'",
    ),
    *_f(
        "NaN in tensor",
        set_at("tensor", (0, 1, 2), np.nan),
        BAD + r": dataset 'tensor' .* NaN/inf",
        verbs=("train", "reproduce", "evaluate-reference", "evaluate-samples"),
    ),
    *_f("inf in x-coordinate", set_at("x-coordinate", (3,), np.inf), BAD + r": dataset 'x-coordinate' .* NaN/inf"),
    *_f(
        "complex tensor",
        put("tensor", lambda a: a.astype(np.complex128)),
        BAD + r": dataset 'tensor' .* complex.*real numbers",
        verbs=("train", "evaluate-reference", "evaluate-samples"),
    ),  # fixed
    *_f(
        "string tensor",
        put("tensor", lambda a: np.full(a.shape, b"u")),
        BAD + r": dataset 'tensor' .* expected real numbers",
    ),  # fixed
    *_f("boolean tensor", put("tensor", lambda a: a > 0), BAD + r": dataset 'tensor' .* bool"),  # fixed
    *_f(
        "string x-coordinate",
        put("x-coordinate", lambda a: np.full(a.shape, b"x")),
        BAD + r": dataset 'x-coordinate' .* expected real numbers",
    ),  # fixed
    *_f(
        "N = 0",
        both(first(0, "tensor"), drop("splits")),
        BAD + r": dataset 'tensor' \[N, T, X\] is empty",
        verbs=("train", "evaluate-reference"),
    ),
    *_f("N = 1", both(first(1, "tensor"), drop("splits")), BAD + r": the 'test' split is missing or empty"),
    *_f(
        "T = 1",
        both(first(1, "tensor", axis=1), put("t-coordinate", lambda a: a[:2])),
        BAD + r": the loaded data have 1 frame",
    ),  # fixed
    *_f(
        "X = 1",
        both(first(1, "tensor", axis=2), put("x-coordinate", lambda a: a[:1])),
        BAD + r": the loaded grid has 1 point",
    ),  # fixed
    *_f(
        "X = 2",
        both(first(2, "tensor", axis=2), put("x-coordinate", lambda a: a[:2])),
        BAD + r": the loaded grid has 2 point",
    ),  # fixed
    *_f(
        "huge values (x1e200)",
        put("tensor", lambda a: a * 1e200),
        BAD + r": the training split's fields give a non-finite normalisation",
        verbs=("train", "reproduce"),
    ),
    *_f(
        "beta = NaN",
        attr("beta", np.nan),
        BAD + r": attribute 'beta' is not finite",
        verbs=("train", "evaluate-reference"),
    ),
    *_f("beta a string", attr("beta", "fast"), BAD + r": parameter 'beta' must be a single number"),
    *_f("beta missing", attr("beta", delete=True), BAD + r": advection speed not found"),
    *_f(
        "split index out of range",
        put("splits/train", np.array([4, 5, 999])),
        BAD + r": 'splits/train' holds index 999, out of range",
        verbs=("train", "reproduce"),
    ),  # fixed
    *_f(
        "split index < 0",
        put("splits/train", np.array([4, -1])),
        BAD + r": 'splits/train' must hold non-negative integer",
    ),
    *_f(
        "split of floats",
        put("splits/train", np.array([4.5, 5.5])),
        BAD + r": 'splits/train' must hold non-negative integer",
    ),
    *_f(
        "split 2-D", put("splits/train", np.array([[4, 5], [6, 7]])), BAD + r": 'splits/train' must be a 1-D array"
    ),  # fixed
    *_f(
        "split lists a sample twice",
        put("splits/train", np.array([4, 4, 4, 5])),
        BAD + r": 'splits/train' lists sample 4 more than once",
    ),  # fixed
    *_f(
        "train split overlaps test",
        put("splits/train", np.arange(20)),
        BAD + r": 'splits/train' and 'splits/val' share",
        verbs=("train", "reproduce"),
    ),  # fixed
    *_f("no 'train' split", drop("splits/train"), BAD + r": missing split dataset 'splits/train'"),
    *_f(
        "empty 'train' split",
        put("splits/train", np.array([], dtype=np.int64)),
        BAD + r": the 'train' split is missing or empty",
    ),
    *_f("system attribute darcy", attr("system", "darcy"), BAD + r": attribute 'system' = 'darcy' contradicts"),
    *_f(
        "system attribute burgers",
        attr("system", "burgers"),
        BAD + r": asked for system 'advection' but the file holds 'burgers'",
    ),
    *_f(
        "x-coordinate not uniform",
        put("x-coordinate", lambda a: a**2),
        BAD + r": coordinate 'x-coordinate' is not a uniform",
    ),
    *_f(
        "x-coordinate decreasing",
        put("x-coordinate", lambda a: a[::-1].copy()),
        BAD + r": coordinate 'x-coordinate' is not a uniform increasing",
    ),
    *_f(
        "t-coordinate constant",
        put("t-coordinate", lambda a: np.zeros_like(a)),
        BAD + r": coordinate 't-coordinate' is not a uniform",
    ),
    *_f(
        "darcy file to advection",
        None,
        BAD + r": asked for system 'advection' but the file holds 'darcy'",
        src="darcy",
        exp="advection",
        verbs=("train", "reproduce"),
    ),
    *_f(
        "advection file to darcy", None, BAD + r": asked for system 'darcy' but the file holds 'advection'", exp="darcy"
    ),
    *_f("particle file to advection", None, BAD + r": layout matches no supported format", src="fs"),
    *_f(
        "darcy reference for advection samples",
        None,
        BAD + r": asked for system 'advection' but the file holds 'darcy'",
        src="darcy",
        exp="advection",
        verbs=("evaluate-reference",),
    ),
    *_f("missing 'nu'", drop("nu"), BAD + r": layout matches no supported format", src="darcy"),
    *_f(
        "nu < 0",
        set_at("nu", (0, 1, 2), -1.0),
        BAD + r": permeability 'nu' .* must be > 0, min is -1 at sample 0, point \(1, 2\)",
        src="darcy",
        verbs=("train", "reproduce"),
    ),
    *_f("nu = 0", set_at("nu", (3, 0, 0), 0.0), BAD + r": permeability 'nu' .* must be > 0", src="darcy"),
    *_f("NaN in nu", set_at("nu", (0, 1, 2), np.nan), BAD + r": dataset 'nu' .* NaN/inf", src="darcy"),
    *_f("NaN in tensor", set_at("tensor", (0, 0, 1, 2), np.nan), BAD + r": dataset 'tensor' .* NaN/inf", src="darcy"),
    *_f("nu shape", put("nu", lambda a: a[:, :-1]), BAD + r": inconsistent grid sizes: 'nu' has shape", src="darcy"),
    *_f(
        "tensor with 2 channels",
        put("tensor", lambda a: np.concatenate([a, a], axis=1)),
        BAD + r": Darcy 'tensor' must have shape \[N, 1, X, Y\]",
        src="darcy",
    ),
    *_f(
        "complex nu", put("nu", lambda a: a.astype(np.complex128)), BAD + r": dataset 'nu' .* complex", src="darcy"
    ),  # fixed
    *_f(
        "huge values (x1e200)",
        put("tensor", lambda a: a * 1e200),
        BAD + r": the training split's fields give a non-finite normalisation",
        src="darcy",
    ),
    *_f("f = NaN", attr("f", np.nan), BAD + r": Darcy source f from attribute 'f' is not finite", src="darcy"),
    *_f("f a string", attr("f", "one"), BAD + r": parameter 'f' must be a single number", src="darcy"),
    *_f(
        "N = 0",
        both(first(0, "tensor", "nu"), drop("splits")),
        BAD + r": Darcy 'tensor' \[N, 1, X, Y\] is empty",
        src="darcy",
    ),
    *_f("1 x 1 grid", _grid(1), BAD + r": the loaded grid has 1 point", src="darcy"),  # fixed
    *_f(
        "3 x 3 grid",
        _grid(3),
        BAD + r".*3",
        src="darcy",
    ),
    *_f(
        "system attribute advection",
        attr("system", "advection"),
        BAD + r": attribute 'system' = 'advection' contradicts the file's darcy layout",
        src="darcy",
    ),
]
for _name, _data in (("empty file", b""), ("text file", b"tensor\n1 2 3\n"), ("truncated HDF5", None)):

    def _raw_pde(ws, data=_data):
        return ws.write(data if data is not None else ws.inputs.adv.read_bytes()[:3000])

    CASES += [
        D(
            "pde",
            f"train advection: {_name}",
            lambda ws, r=_raw_pde: ws.train("advection", r(ws)),
            BAD + r": not a readable HDF5 file",
        ),
        D(
            "pde",
            f"train darcy: {_name}",
            lambda ws, r=_raw_pde: ws.train("darcy", r(ws)),
            BAD + r": not a readable HDF5 file",
        ),
        D(
            "pde",
            f"evaluate-reference: {_name}",
            lambda ws, r=_raw_pde: ws.evaluate(str(ws.inputs.adv_samples), r(ws)),
            BAD + r": not a readable HDF5 file",
        ),
    ]
CASES += [
    D(
        "pde",
        "evaluate-samples: text file",
        lambda ws: ws.evaluate(ws.write(b"no"), str(ws.inputs.adv)),
        BAD + r": not a readable HDF5 file",
    ),
    D(
        "pde",
        "evaluate: --task bogus",
        lambda ws: ws.evaluate(str(ws.inputs.adv_samples), str(ws.inputs.adv), "--task", "bogus"),
        r"argument --task: invalid choice",
        usage=True,
    ),
    D(
        "pde",
        "evaluate: particle reference for field samples",
        lambda ws: ws.evaluate(str(ws.inputs.adv_samples), ws.copy(ws.inputs.fs)),
        r"samples_prediction\.h5: the file's system is 'advection'",
    ),
]


# ----------------------------------------------------------------------------------------- paths
#: the defect shared by every refusal of `physdiff train` into a run folder


def _run_with(path: str, text: str | bytes | None) -> Callable[[Workspace], list[str]]:
    """``sample RUN`` on a copy of the trained run whose file ``path`` is replaced (``None``: removed)."""

    def build(ws: Workspace) -> list[str]:
        run = Path(ws.copy_run(ws.inputs.fs_run))
        if text is None:
            (run / path).unlink()
        elif callable(text):
            (run / path).write_text(text((run / path).read_text()))
        else:
            (run / path).write_bytes(text if isinstance(text, bytes) else text.encode())
        return ws.sample(str(run), "--force", "--out", str(ws.work / "s.h5"))

    return build


CASES += [
    D(
        "paths",
        "train --run-dir is a file",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "--run-dir", ws.write(b"x", "f")),
        r"--run-dir .*: .*in/f is a file, not a folder",
    ),
    D(
        "paths",
        "train --run-dir under a file",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "--run-dir", ws.write(b"x", "f") + "/run"),
        r"--run-dir .*f/run: .*f is a file, not a folder",
    ),
    D(
        "paths",
        "reproduce --out is a file",
        lambda ws: ws.reproduce("five-spring", str(ws.inputs.fs), "--out", ws.write(b"x", "f")),
        r"--out .*f is a file, not a folder",
    ),
    D(
        "paths",
        "reproduce --out under a file",
        lambda ws: ws.reproduce("five-spring", str(ws.inputs.fs), "--out", ws.write(b"x", "f") + "/o"),
        r"--out .*f/o: .*f is a file, not a folder",
    ),
    D(
        "paths",
        "simulate --out is a folder",
        lambda ws: ["simulate", "three-body", "--n", "3", "--out", str(ws.inp)],
        r"--out .*in is a folder; give a file name",
    ),
    D(
        "paths",
        "simulate --out under a file",
        lambda ws: ["simulate", "three-body", "--n", "3", "--out", ws.write(b"x", "f") + "/x.h5"],
        r"--out .*f/x\.h5: .*f is a file",
    ),
    D(
        "paths",
        "sample --out is a folder",
        lambda ws: ws.sample(ws.copy_run(ws.inputs.fs_run), "--out", str(ws.inp), "--force"),
        r"--out .*in is a folder",
    ),
    D(
        "paths",
        "sample --out under a file",
        lambda ws: ws.sample(ws.copy_run(ws.inputs.fs_run), "--out", ws.write(b"x", "f") + "/s.h5", "--force"),
        r"--out .*f/s\.h5: .*f is a file",
    ),
    D(
        "paths",
        "evaluate --json is a folder",
        lambda ws: ws.evaluate(str(ws.inputs.fs_samples), str(ws.inputs.fs), "--json", str(ws.inp)),
        r"--json .*in is a folder",
    ),
    D(
        "paths",
        "evaluate --json under a file",
        lambda ws: ws.evaluate(str(ws.inputs.fs_samples), str(ws.inputs.fs), "--json", ws.write(b"x", "f") + "/m.json"),
        r"--json .*f/m\.json: .*f is a file",
    ),
    D(
        "paths",
        "--cache-dir is a file",
        lambda ws: [
            "reproduce",
            "five-spring",
            "--out",
            str(ws.out),
            "--cache-dir",
            ws.write(b"x", "f"),
            "--device",
            "cpu",
            *PARTICLE_TINY,
            "data.n=10",
            "data.settings.n_frames=4",
        ],
        r"--cache-dir .*f.* (is a file|not a folder)",
    ),
    D(
        "paths",
        "sample: config.yaml invalid YAML",
        _run_with("config.yaml", "model: [unclosed\n"),
        r"config file .*run/config\.yaml is not valid YAML",
    ),
    D(
        "paths",
        "sample: config.yaml a list",
        _run_with("config.yaml", "- a\n- b\n"),
        r"config\.yaml must hold a mapping of keys, got list",
    ),
    D(
        "paths",
        "sample: config.yaml not UTF-8",
        _run_with("config.yaml", b"\xff\xfe\x00garbage"),
        r"config\.yaml is not valid YAML",
    ),
    D(
        "paths",
        "sample: config.yaml bad value",
        _run_with("config.yaml", lambda t: t.replace("hidden: 16", "hidden: -16")),
        r"'model\.hidden' must be >= 1, got -16",
    ),
    D(
        "paths",
        "sample: config.yaml unknown key",
        _run_with("config.yaml", lambda t: t.replace("hidden: 16", "hiden: 16")),
        r"unknown config key.*hiden.*did you mean 'hidden'",
    ),
    D(
        "paths",
        "sample: config.yaml empty",
        _run_with("config.yaml", ""),
        r"config\.yaml",
    ),
    D(
        "paths",
        "sample: config.yaml does not match the checkpoint",
        _run_with("config.yaml", lambda t: t.replace("hidden: 16", "hidden: 32")),
        r"checkpoint.*(another configuration|does not match)",
    ),
    D(
        "paths",
        "sample: override that changes the model",
        lambda ws: ws.sample(
            ws.copy_run(ws.inputs.fs_run), "--force", "--out", str(ws.work / "s.h5"), "model.hidden=32"
        ),
        r"model\.hidden",
    ),
    D(
        "paths",
        "sample: config.yaml missing",
        _run_with("config.yaml", None),
        r"run: not a trained run folder \(no config\.yaml\)",
    ),
    D(
        "paths",
        "sample: checkpoint junk",
        _run_with("checkpoint.pt", b"junk"),
        r"checkpoint .*checkpoint\.pt is corrupt",
    ),
    D(
        "paths",
        "sample: checkpoint missing",
        _run_with("checkpoint.pt", None),
        r"not a trained run folder \(no checkpoint\.pt\)",
    ),
    D(
        "paths",
        "sample: scaling.json not JSON",
        _run_with("scaling.json", "{bad json"),
        r"scaling\.json",
    ),
    D(
        "paths",
        "sample: scaling.json negative scale",
        _run_with("scaling.json", '{"positions": -1.0, "velocities": 1.0}'),
        r"scaling\.json",
    ),
    D(
        "paths",
        "sample: scaling.json missing a key",
        _run_with("scaling.json", '{"positions": 1.0}'),
        r"scaling\.json",
    ),
    D("paths", "sample: not a run folder", lambda ws: ws.sample(str(ws.inp)), r"in: not a trained run folder"),
    D(
        "paths",
        "sample: samples file exists",
        lambda ws: ws.sample(ws.copy_run(ws.inputs.fs_run)),
        r"samples_prediction\.h5 exists; pass --force",
    ),
    D(
        "paths",
        "sample: unknown constraint prior",
        lambda ws: ws.sample(ws.copy_run(ws.inputs.fs_run), "--constraint", "bogus", "--force"),
        r"unknown prior 'bogus'",
    ),
    D(
        "paths",
        "sample: --n beyond the split",
        lambda ws: ws.sample(ws.copy_run(ws.inputs.fs_run), "--n", "1000", "--force", "--out", str(ws.work / "s.h5")),
        r"n must lie in \[1, 2\]",
    ),
    D(
        "paths",
        "train: finished run without --resume",
        lambda ws: ws.train("five-spring", str(ws.inputs.fs), "--run-dir", ws.copy_run(ws.inputs.fs_run)),
        r"run holds a trained run \(checkpoint\.pt\); pass --resume .* or --force",
    ),
    D(
        "paths",
        "train: --resume with another model",
        lambda ws: ws.train(
            "five-spring", str(ws.inputs.fs), "--run-dir", ws.copy_run(ws.inputs.fs_run), "--resume", "model.hidden=32"
        ),
        r"was made with another configuration: model\.hidden: checkpoint 16 vs now 32",
    ),
    D(
        "paths",
        "train: --resume on a junk checkpoint",
        lambda ws: (
            ws.copy_run(ws.inputs.fs_run),
            (ws.run / "checkpoint.pt").write_bytes(b"x"),
            ws.train("five-spring", str(ws.inputs.fs), "--resume"),
        )[-1],
        r"checkpoint .* is corrupt",
    ),
    D("paths", "plot: not a results folder", lambda ws: ["plot", str(ws.inp)], r"in: not a results folder"),
]

CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), [i for i in CASE_IDS if CASE_IDS.count(i) > 1]


def params(cases: list[Case]) -> list:
    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.defect)] if c.defect else [])
        for c in cases
    ]


# ====================================================================================== the tests
@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Inputs:
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input_ends_in_one_clean_line(case: Case, inputs: Inputs, tmp_path: Path) -> None:
    got = run_case(case, tmp_path, inputs)
    kind, detail = verdict(case, got)
    assert kind == "clean", f"{case.id}: {kind}: {detail}"


#: cases also run in a subprocess: the real stderr of the real command
SUBPROCESS_CASES = (
    "config/train.stepz=3",
    "particles/train: NaN in positions",
    "paths/sample: config.yaml invalid YAML",
)


def run_subprocess(case: Case, root: Path, inputs: Inputs) -> Outcome:
    ws = Workspace(root, inputs)
    argv = case.build(ws)
    before = snapshot(ws.root, (ws.tmp,))
    env = {**ENV, "TMPDIR": str(ws.tmp), "PYTHONPATH": SRC + os.pathsep + ENV.get("PYTHONPATH", "")}
    p = subprocess.run(
        [sys.executable, "-m", "physdiff.cli.main", *argv], capture_output=True, text=True, env=env, timeout=300
    )
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    return Outcome(p.returncode, lines, [], changes(before, snapshot(ws.root, (ws.tmp,))))


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_real_stderr_of_a_subprocess_is_one_line(name: str, inputs: Inputs, tmp_path: Path) -> None:
    (case,) = [c for c in CASES if c.id == name]
    got = run_subprocess(case, tmp_path, inputs)
    kind, detail = verdict(case, got)
    assert kind == "clean", f"{case.id}: {kind}: {detail}"


def test_argparse_errors_are_one_line_too(inputs: Inputs, tmp_path: Path) -> None:
    (case,) = [c for c in CASES if c.id == "config/sample --steps 0"]
    got = run_case(case, tmp_path, inputs)
    assert got.code == 2 and len(got.stderr) == 1, got.stderr


# ------------------------------------------------------------------------------ hypothesis: configs
def _hint_kind(tp) -> tuple[str, bool]:
    """('int' | 'float', is_list) of a config field's type hint."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple):
        return _hint_kind(args[0])[0], True
    if args:  # Optional[...]
        tp = next(a for a in args if a is not type(None))
    return ("float" if tp is float else "int"), False


def config_keys(cfg, prefix: str = ""):
    """(key, kind, range, is_list) of every declared numeric config key, and every key name (for typos)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v, key = getattr(cfg, f.name), prefix + f.name
        if dataclasses.is_dataclass(v):
            yield from config_keys(v, key + ".")
        elif isinstance(v, list) and v and dataclasses.is_dataclass(v[0]):
            yield from config_keys(v[0], f"{key}.0.")
        else:
            kind, is_list = _hint_kind(hints[f.name])
            yield (
                key,
                kind if "range" in f.metadata else None,
                f.metadata.get("range", {}),
                is_list,
                isinstance(v, dict),
            )


def _preset(exp: str):
    from physdiff.experiments.config import preset_config

    return preset_config(exp)


NUMERIC = [
    (exp, k, kind, rng, lst)
    for exp in ("five-spring", "advection")
    for k, kind, rng, lst, _ in config_keys(_preset(exp))
    if kind
]
ALL_KEYS = {
    exp: [k for k, *_r, is_dict in config_keys(_preset(exp)) if not is_dict] for exp in ("five-spring", "advection")
}
JUNK = ["abc", "ten", "1..2", "1,5", "[]", "{}", "true", "0x", "--", "1e", "_"]  # (null: valid for optional keys)


@st.composite
def bad_numeric(draw):
    """(experiment, key, text) with a value the key must refuse: below/above its range, NaN, ±inf, beyond
    float32/int64, a non-integral float for an int, or not a number at all."""
    exp, key, kind, rng, is_list = draw(st.sampled_from(NUMERIC))
    options = ["nan", "inf", "huge", "junk"] + (["fraction"] if kind == "int" else [])
    options += [op for op in ("ge", "gt", "le", "lt") if op in rng]
    how = draw(st.sampled_from(options))
    big = 2**63 if kind == "int" else 3.5e38
    if how == "nan":
        text = draw(st.sampled_from([".nan", "nan", "NaN"]))
    elif how == "inf":
        text = draw(st.sampled_from([".inf", "-.inf", "inf", "-inf", "1e999"]))
    elif how == "huge":
        if kind == "int":
            v = draw(st.integers(min_value=big + 1, max_value=2**200)) * draw(st.sampled_from([1, -1]))
        else:
            v = draw(st.floats(min_value=big, max_value=1e308)) * draw(st.sampled_from([1.0, -1.0]))
        text = repr(v)
    elif how == "junk":
        text = draw(st.sampled_from(JUNK))
    elif how == "fraction":
        text = repr(draw(st.integers(-1000, 1000)) + draw(st.sampled_from([0.5, 0.25, 0.1])))
    else:
        b = rng[how]
        if how in ("ge", "gt"):  # below the lower bound
            if kind == "int":
                v = draw(st.integers(min_value=-(10**6), max_value=math.ceil(b) - 1 if how == "ge" else math.floor(b)))
            else:
                v = draw(st.floats(min_value=-1e6, max_value=b).filter(lambda x: x < b if how == "ge" else x <= b))
        else:  # above the upper bound
            if kind == "int":
                v = draw(st.integers(min_value=math.floor(b) + 1 if how == "le" else math.ceil(b), max_value=10**6))
            else:
                v = draw(st.floats(min_value=b, max_value=1e6).filter(lambda x: x > b if how == "le" else x >= b))
        text = repr(v)
    return exp, key, f"[{text}]" if is_list else text


def _in_tmp(inputs: Inputs, build: Callable[[Workspace], list[str]], expect: str, name: str) -> tuple[str, str]:
    case = Case("hypothesis", name, build, expect)
    with tempfile.TemporaryDirectory() as d:
        return verdict(case, run_case(case, Path(d), inputs))


#: benchmarks/reliability.py sets its own number of examples per family (generated only: no shrinking)
_BENCH_EXAMPLES = os.environ.get("PHYSDIFF_RELIABILITY_EXAMPLES")
HSETTINGS = settings(
    max_examples=int(_BENCH_EXAMPLES or 25),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    **({"phases": [Phase.generate]} if _BENCH_EXAMPLES else {}),
)


@HSETTINGS
@given(bad=bad_numeric())
def test_random_bad_numeric_values_are_refused_by_key(bad, inputs: Inputs) -> None:
    exp, key, text = bad
    data = str(inputs.fs if exp == "five-spring" else inputs.adv)
    kind, detail = _in_tmp(
        inputs, lambda ws: ws.train(exp, data, f"{key}={text}", keep_constraints=True), "'" + re.escape(key), key
    )
    assert kind == "clean", f"{exp} {key}={text}: {kind}: {detail}"


@st.composite
def typo(draw):
    """(experiment, valid key, the key with its last name edited once into no valid name)."""
    exp = draw(st.sampled_from(sorted(ALL_KEYS)))
    keys = ALL_KEYS[exp]
    key = draw(st.sampled_from([k for k in keys if len(k.rsplit(".", 1)[-1]) >= 3]))
    head, _, last = key.rpartition(".")
    siblings = {k.rsplit(".", 1)[-1] for k in keys if k.rpartition(".")[0] == head}
    i = draw(st.integers(0, len(last) - 1))
    c = draw(st.sampled_from(string.ascii_lowercase))
    op = draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
    if op == "replace":
        new = last[:i] + c + last[i + 1 :]
    elif op == "insert":
        new = last[:i] + c + last[i:]
    elif op == "delete":
        new = last[:i] + last[i + 1 :]
    else:  # two neighbours swapped
        i = min(i, len(last) - 2)
        new = last[:i] + last[i + 1] + last[i] + last[i + 2 :]
    assume(bool(new) and new not in siblings and not new.isdigit())
    return exp, key, (head + "." if head else "") + new


@HSETTINGS
@given(t=typo())
def test_unknown_keys_are_refused_with_the_closest_key_suggested(t, inputs: Inputs) -> None:
    exp, key, wrong = t
    data = str(inputs.fs if exp == "five-spring" else inputs.adv)
    last = key.rsplit(".", 1)[-1]
    expect = rf"unknown config key.*{re.escape(wrong)}.*did you mean [^)]*'{re.escape(last)}'"
    kind, detail = _in_tmp(inputs, lambda ws: ws.train(exp, data, f"{wrong}=1", keep_constraints=True), expect, wrong)
    assert kind == "clean", f"{exp} {wrong} (for {key}): {kind}: {detail}"


NAME_KEYS = {
    "sample.sampler": ("ddim", "ddpm", "dpmpp2m", "euler", "heun"),
    "sample.dtype": ("float32", "float64"),
    "diffusion.schedule": ("linear", "cosine"),
    "diffusion.process": ("vp", "flow"),
    "diffusion.prediction": ("eps", "x0", "v"),
    "train.objective": ("eps", "x0", "v"),
    "priors.0.time_weight": ("one", "alpha2", "low_noise"),
    "priors.0.variant": ("tweedie", "aux_head"),
    "sample.constraints.0.mode": ("projection", "guidance"),
    "model.kind": ("egnn", "transformer", "unet"),
}


@HSETTINGS
@given(
    key=st.sampled_from(sorted(NAME_KEYS)),
    name=st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12),
)
def test_random_names_of_samplers_schedules_processes_predictions_are_refused(key, name, inputs: Inputs) -> None:
    assume(name not in NAME_KEYS[key])
    kind, detail = _in_tmp(
        inputs,
        lambda ws: ws.train("five-spring", str(inputs.fs), f"{key}={name}", keep_constraints=True),
        re.escape(repr(key)),
        key,
    )
    assert kind == "clean", f"{key}={name}: {kind}: {detail}"


# ---------------------------------------------------------------------------- hypothesis: data files
PARTICLE_VERBS = ("train", "reproduce", "evaluate-reference")


def _particle_build(verb: str, mutate) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        bad = ws.copy(ws.inputs.fs, mutate=mutate)
        if verb == "evaluate-reference":
            return ws.evaluate(str(ws.inputs.fs_samples), bad)
        return getattr(ws, verb)("five-spring", bad)

    return build


def _flat_set(key: str, flat: int, value: float) -> Callable[[h5py.File], None]:
    def change(a):
        a = np.array(a, dtype=np.float64)
        a.reshape(-1)[flat % a.size] = value
        return a

    return put(key, change)


@HSETTINGS
@given(
    key=st.sampled_from(["positions", "velocities", "masses"]),
    flat=st.integers(0, 10**6),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    verb=st.sampled_from(PARTICLE_VERBS),
)
def test_random_nonfinite_entries_of_particle_files(key, flat, value, verb, inputs: Inputs) -> None:
    expect = rf"bad\.h5: '{key}' .* NaN/inf"
    kind, detail = _in_tmp(inputs, _particle_build(verb, _flat_set(key, flat, value)), expect, key)
    assert kind == "clean", f"{verb} {key}[{flat}]={value}: {kind}: {detail}"


@HSETTINGS
@given(
    flat=st.integers(0, 10**6),
    value=st.floats(min_value=-1e300, max_value=0.0),
    verb=st.sampled_from(PARTICLE_VERBS),
)
def test_random_nonpositive_masses(flat, value, verb, inputs: Inputs) -> None:
    kind, detail = _in_tmp(
        inputs, _particle_build(verb, _flat_set("masses", flat, value)), r"bad\.h5: 'masses' .* must be > 0", "m"
    )
    assert kind == "clean", f"{verb} masses[{flat}]={value}: {kind}: {detail}"


@HSETTINGS
@given(
    scale=st.floats(min_value=1e160, max_value=1e300),
    key=st.sampled_from(["positions", "velocities"]),
    verb=st.sampled_from(["train", "reproduce"]),
)
def test_random_huge_particle_values(scale, key, verb, inputs: Inputs) -> None:
    expect = rf"bad\.h5: the training split's {key} have standard deviation (inf|nan)"
    kind, detail = _in_tmp(inputs, _particle_build(verb, put(key, lambda a: a * scale)), expect, key)
    assert kind == "clean", f"{verb} {key} x{scale}: {kind}: {detail}"


FIELD_CASES = [("advection", "adv", "tensor"), ("darcy", "darcy", "tensor"), ("darcy", "darcy", "nu")]


@HSETTINGS
@given(
    which=st.sampled_from(FIELD_CASES),
    flat=st.integers(0, 10**6),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    verb=st.sampled_from(["train", "reproduce"]),
)
def test_random_nonfinite_entries_of_pde_files(which, flat, value, verb, inputs: Inputs) -> None:
    exp, src, key = which

    def build(ws: Workspace) -> list[str]:
        return getattr(ws, verb)(exp, ws.copy(getattr(ws.inputs, src), mutate=_flat_set(key, flat, value)))

    kind, detail = _in_tmp(inputs, build, rf"bad\.h5: dataset '{key}' .* NaN/inf", key)
    assert kind == "clean", f"{verb} {exp} {key}[{flat}]={value}: {kind}: {detail}"


@HSETTINGS
@given(flat=st.integers(0, 10**6), value=st.floats(min_value=-1e300, max_value=0.0))
def test_random_nonpositive_permeability(flat, value, inputs: Inputs) -> None:
    def build(ws: Workspace) -> list[str]:
        return ws.train("darcy", ws.copy(ws.inputs.darcy, mutate=_flat_set("nu", flat, value)))

    kind, detail = _in_tmp(inputs, build, r"bad\.h5: permeability 'nu' .* must be > 0", "nu")
    assert kind == "clean", f"nu[{flat}]={value}: {kind}: {detail}"


# ---------------------------------------------------------------------------------- run folders
def test_force_clears_a_finished_run_and_trains_it_afresh(inputs: Inputs, tmp_path: Path) -> None:
    """``train`` into a finished run: refused without --resume/--force (the case table), cleared with --force:
    the folder then holds exactly what a fresh run into an empty folder holds, and the same weights."""
    import torch

    from physdiff.training.checkpoint import load_checkpoint

    run, fresh = tmp_path / "run", tmp_path / "fresh"
    shutil.copytree(inputs.fs_run, run)
    (run / "stale.txt").write_text("a user's file stays")
    argv = ["train", "five-spring", "--data", str(inputs.fs), "--device", "cpu", *PARTICLE_TINY, "train.steps=6"]
    before = snapshot(run, ())
    refused = run_cli([*argv, "--run-dir", str(run)])  # without --resume or --force: refused, nothing touched
    assert refused.code == 2 and "Traceback" not in "\n".join(refused.stderr), refused.stderr
    assert re.match(rf"physdiff train: error: {re.escape(str(run))} holds a trained run", refused.stderr[-1])
    assert changes(before, snapshot(run, ())) == []
    assert run_cli([*argv, "--run-dir", str(run), "--force"]).code == 0
    assert run_cli([*argv, "--run-dir", str(fresh)]).code == 0
    assert sorted(p.name for p in run.iterdir()) == sorted([*(p.name for p in fresh.iterdir()), "stale.txt"])
    a, b = (load_checkpoint(r / "checkpoint.pt") for r in (run, fresh))
    assert a["step"] == b["step"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k

    def no_time(path: Path) -> list[str]:
        return [line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]

    assert no_time(run / "metrics.csv") == no_time(fresh / "metrics.csv")
    assert (run / "validation.csv").read_text() == (fresh / "validation.csv").read_text()


HOLDER = "physdiff-test-holder"


def test_two_writers_into_one_run_folder_through_the_cli(inputs: Inputs, tmp_path: Path) -> None:
    """A second ``physdiff train`` into a folder a first one is training in fails at once, naming the folder
    and the holder's pid, and changes nothing there (the first is stopped with SIGSTOP meanwhile, so that the
    folder stands still); the first then finishes normally."""
    run = tmp_path / "run"
    argv = ["train", "five-spring", "--data", str(inputs.fs), "--run-dir", str(run), "--device", "cpu"]
    argv += [*PARTICLE_TINY, "train.steps=100000", "train.checkpoint_every=5", "train.log_every=5"]
    env = {**ENV, "PYTHONPATH": SRC + os.pathsep + ENV.get("PYTHONPATH", "")}
    first_ = subprocess.Popen(
        [sys.executable, "-m", "physdiff.cli.main", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 600
        while not ((run / "run.lock").exists() and (run / "checkpoint.pt").exists()):
            assert first_.poll() is None, first_.stderr.read()
            assert time.monotonic() < deadline, "the first training did not start"
            time.sleep(0.05)
        os.kill(first_.pid, signal.SIGSTOP)
        time.sleep(0.2)
        before = snapshot(run, ())
        got = run_cli([*argv, "--resume"])
        got.changed = changes(before, snapshot(run, ()))
        text = "\n".join(got.stderr)
        assert got.code == 2 and "Traceback" not in text and not got.warnings, (got.code, text, got.warnings)
        holder = rf"physdiff train: error: run folder {re.escape(str(run))} is locked .*pid {first_.pid}"
        assert re.match(holder, got.stderr[-1]), got.stderr
        assert len(got.stderr) == 1, got.stderr  # the error line alone
        assert got.changed == [], got.changed
        # at once: it returned while the holder is stopped (SIGSTOP), so it cannot have waited for the lock
    finally:
        os.kill(first_.pid, signal.SIGCONT)
        first_.send_signal(signal.SIGINT)  # the first stops at its next step with a consistent checkpoint
        try:
            first_.wait(timeout=600)
        finally:
            if first_.poll() is None:
                first_.kill()
    assert first_.returncode == 130, first_.stderr.read()[-2000:]
