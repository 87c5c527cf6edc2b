"""README.md runs top to bottom, as a new user types it.

Every fenced ``bash`` block is run in README order in one fresh folder, and the Python example (marked
``<!-- api-example -->``) after them, so every file a line reads must be written by an earlier line. Each
command runs as written, with tiny sizes appended where it simulates, trains, reproduces or sweeps (fewer
samples, frames and grid points, a small network, a few steps, one seed unless the line names its seeds);
a ``--resume`` line gets nothing appended (it continues the run with the run's own settings). ``physdiff``
lines run in this process; ``torchrun`` lines under torchrun (2 gloo processes on the CPU); every other line
(``echo``, here-documents, ``python -``) in bash with this Python as ``python``.

The set-up block (``<!-- setup -->``: ``make`` targets, activating ``.venv``) is the one block not run here
(it would install into and test the repository itself): each of its lines is checked instead, ``make`` targets
by ``make -n`` in the repository and the activation by the Makefile's venv.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from physdiff.cli.main import main
from physdiff.experiments.config import preset_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SRC = str(ROOT / "src")

TRAIN = ["train.steps=6", "train.batch_size=8", "train.warmup=2", "train.log_every=3", "train.checkpoint_every=3"]
SAMPLE = ["sample.steps=3", "sample.n_test=4", "sample.batch_size=4"]
MODEL = {
    "egnn": ["model.hidden=16", "model.layers=1", "model.vector_channels=4"],
    "transformer": ["model.hidden=16", "model.layers=1"],
    "unet": ["model.base_channels=8", "model.channel_mults=[1,2]"],
}
#: tiny simulations: samples and, per system, frames (particles: enough after GeoTDM's 10 given) or grid
PARTICLE_N, FIELD_N = 40, 40  # 40 particle trajectories: 4 in the test split (the API example samples 4)
FRAMES = {"charged": 14}
GRID = {
    "advection": {"nx": 16, "nt": 8},
    "burgers": {"nx": 32, "nt": 16},  # coarser: the Burgers residual prior is refused on the ground truth
    "darcy": {"n_grid": 16},
    "shallow-water": {"nx": 16, "ny": 16, "nt": 8},
}


def blocks(text: str) -> list[tuple[str, str, str]]:
    """``(language, marker, body)`` of every fenced block; ``marker``: the ``<!-- name -->`` just above it."""
    pattern = re.compile(r"(?:<!--\s*([\w-]+)\s*-->\s*\n)?```(\w*)\n(.*?)```", re.S)
    return [(m.group(2), m.group(1) or "", m.group(3)) for m in pattern.finditer(text)]


def commands(body: str) -> list[str]:
    """The commands of a bash block: one per line (``\\`` continuations joined), a here-document with its
    lines; blank and comment lines dropped."""
    out, lines = [], body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while line.endswith("\\") and i < len(lines):
            line, i = line[:-1] + lines[i], i + 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        here = re.search(r"<<-?\s*'?(\w+)'?", line)
        if here:
            end = lines.index(here.group(1), i)
            line, i = "\n".join([line, *lines[i : end + 1]]), end + 1
        out.append(line)
    return out


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def tiny(argv: list[str]) -> list[str]:
    """A README command (after ``physdiff``) with tiny sizes appended (see the module docstring)."""
    argv = list(argv)
    verb = argv[0]
    if verb == "simulate":
        system = argv[1]
        if system in GRID:
            return [*argv, "--n", str(FIELD_N), *(f"{k}={v}" for k, v in GRID[system].items())]
        return [*argv, "--n", str(PARTICLE_N), "--frames", str(FRAMES.get(system, 8))]
    if verb not in ("train", "reproduce", "sweep") or "--resume" in argv:
        return argv
    cfg = preset_config(argv[1], _option(argv, "--preset") or "quick")
    extra = [*MODEL[cfg.model.kind], *TRAIN, *SAMPLE]
    if verb != "train":
        extra.append("seeds=[0]")  # a line's own --seeds wins (applied after the overrides)
    if not (_option(argv, "--data") or any(a.startswith("data.path=") for a in argv)):  # a simulation
        system = cfg.data.system
        if system in GRID:
            extra += [f"data.n={FIELD_N}", *(f"data.settings.{k}={v}" for k, v in GRID[system].items())]
        else:
            frames = max(FRAMES.get(system, 8), cfg.known_frames + 4)
            extra += [f"data.n={PARTICLE_N}", f"data.settings.n_frames={frames}"]
    return [*argv, *extra]


def _env(tmp: Path) -> dict[str, str]:
    """This Python as ``python`` first on PATH, the source tree importable, one thread per process."""
    bin_dir = tmp / ".bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python"
    if not python.exists():  # a script, not a link: a virtual environment's python must be called by its path
        python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        python.chmod(0o755)
    path = os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])])
    extra = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": path}
    return {**os.environ, **extra, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def run_command(command: str, tmp: Path) -> None:
    words = shlex.split(command, comments=True) if "\n" not in command else []
    if words and words[0] == "physdiff":
        assert main(tiny(words[1:])) == 0, command
    elif words and words[0] == "torchrun":
        args = words[1:]
        module = args.index("-m")
        assert args[module + 1] == "physdiff.cli.main", command
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", *args[: module + 2]]
        got = subprocess.run(
            [*cmd, *tiny(args[module + 2 :])], cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=900
        )
        assert got.returncode == 0, (command, got.stderr[-3000:])
    else:
        got = subprocess.run(["bash", "-ec", command], cwd=tmp, env=_env(tmp), capture_output=True, text=True)
        assert got.returncode == 0, (command, got.stderr[-3000:])


def check_setup_block(body: str) -> None:
    """The set-up lines: ``make`` targets the Makefile has (``make -n``), and the venv it creates activated."""
    makefile = (ROOT / "Makefile").read_text()
    for command in commands(body):
        words = shlex.split(command, comments=True)
        if words[0] == "make":
            assert shutil.which("make"), "make is needed for the README's set-up"
            got = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
            assert got.returncode == 0, (command, got.stderr)
            if words[1:] == ["demo"]:
                assert ".venv/bin/physdiff reproduce" in got.stdout, got.stdout
        elif words[0] in (".", "source"):
            assert words[1:] == [".venv/bin/activate"], command
            assert re.search(r"^VENV \?= \.venv$", makefile, re.M) and "-m venv" in makefile
        else:
            raise AssertionError(f"the set-up block runs {command!r}; add it to this test's check")


@pytest.mark.slow
def test_readme_runs_top_to_bottom(tmp_path, monkeypatch, capsys):
    import torch

    found = blocks(README.read_text())
    shells = [b for b in found if b[0] == "bash"]
    assert [m for _, m, _ in shells][:2] == ["setup", "walkthrough"] and len(shells) >= 3, [m for _, m, _ in shells]
    api = [body for lang, marker, body in found if marker == "api-example"]
    assert len(api) == 1 and [lang for lang, m, _ in found if m == "api-example"] == ["python"]
    check_setup_block(shells[0][2])
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    ran: list[str] = []
    try:
        for lang, marker, body in found:
            if lang == "bash" and marker != "setup":
                for command in commands(body):
                    run_command(command, tmp_path)
                    ran.append(command.split()[0])
            elif marker == "api-example":
                exec(compile(body, "README.md", "exec"), {})
                ran.append("python example")
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    assert ran.count("physdiff") >= 20 and "torchrun" in ran and ran[-1] == "python example", ran


def test_tiny_keeps_what_the_line_says():
    """The sizes are appended: the line's own options stay (its seeds win over the tiny single seed)."""
    argv = tiny(["reproduce", "five-spring", "--seeds", "0,1,2"])
    assert argv[:4] == ["reproduce", "five-spring", "--seeds", "0,1,2"] and "seeds=[0]" in argv
    assert "data.settings.n_frames=8" in argv and "model.hidden=16" in argv
    assert tiny(["train", "three-body", "--run-dir", "r", "--resume"]) == [
        "train",
        "three-body",
        "--run-dir",
        "r",
        "--resume",
    ]
    assert "data.n=40" not in tiny(["reproduce", "darcy", "--data", "d.hdf5"])
    assert "data.settings.n_frames=14" in tiny(["reproduce", "nbody-charged"])
    cmds = commands("a\n# c\ncat > f <<'EOF'  # x\nline\nEOF\nb \\\n  c\n")
    assert cmds == ["a", "cat > f <<'EOF'  # x\nline\nEOF", "b   c"]
