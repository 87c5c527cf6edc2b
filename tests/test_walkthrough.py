"""The README's walkthrough (simulate → train both arms → sample → evaluate → plot → report), run as written.

The commands are read from the README block after ``<!-- walkthrough -->``; only tiny sizes are added (fewer
trajectories and frames, a small model, a few training steps), so a README edit that breaks a command
breaks this test.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from html.parser import HTMLParser
from pathlib import Path

import h5py
import pytest

from physdiff.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"
TINY_TRAIN = [
    "model.hidden=16",
    "model.layers=1",
    "model.vector_channels=4",
    "train.steps=20",
    "train.batch_size=8",
    "train.log_every=10",
    "train.checkpoint_every=10",
    "sample.n_test=4",
    "sample.batch_size=4",
]


def walkthrough_commands() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no walkthrough block"
    lines = [ln.split("#", 1)[0].strip() for ln in block.group(1).splitlines()]
    return [shlex.split(ln) for ln in lines if ln]


def tiny(argv: list[str]) -> list[str]:
    """The README's command with tiny sizes: 30 trajectories of 8 frames, a small model, 20 training steps."""
    assert argv[0] == "physdiff", argv
    argv = list(argv[1:])
    if argv[0] == "simulate":
        argv[argv.index("--n") + 1] = "30"
        argv += ["--frames", "8"]
    if argv[0] == "train":
        argv += TINY_TRAIN
    return argv


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self.tables += tag == "table"


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    commands = walkthrough_commands()
    verbs = [c[1] for c in commands]
    assert verbs == ["simulate", "train", "train", "sample", "sample", "evaluate", "plot"], verbs
    for argv in commands:
        assert main(tiny(argv)) == 0, shlex.join(argv)
    capsys.readouterr()

    # the runs read the simulated file and record what it holds
    base, prior = Path("runs/tb-base"), Path("runs/tb-energy")
    for run in (base, prior):
        assert (run / "run.log").is_file() and (run / "metrics.csv").is_file()
        text = (run / "config.yaml").read_text()
        assert str(Path("data/three_body.h5").resolve()) in text and "n: 30" in text
        with h5py.File(run / "samples_prediction.h5") as f:
            assert f["positions"].shape[:3] == (3, 8, 3)  # the 3 test trajectories (10 % of 30), 8 frames, 3 bodies
            assert f.attrs["reference_split"] == "test"
    metrics = json.loads(Path("runs/tb-energy.json").read_text())
    assert {"traj_error", "vel_error", "energy_error"} <= set(metrics["metrics"])

    # plot compares the two run folders: a results folder with the table, figures and report
    res = json.loads(Path("runs/compare/results.json").read_text())
    assert set(res["arms"]) == {"no_prior", "prior:energy"} and res["seeds"] == [0] and res["split"] == "test"
    for arm, m in res["arms"].items():  # the same numbers as `evaluate` gives for the prior arm
        if arm == "prior:energy":
            for k in ("traj_error", "vel_error", "energy_error"):
                assert m[k]["mean"] == pytest.approx(metrics["metrics"][k]["mean"], rel=1e-6)
    assert res["runs"]["prior:energy"]["0"] == "../tb-energy"
    assert "prior:energy" in Path("runs/compare/table.md").read_text()
    html = Path("runs/compare/report.html").read_text()
    parser = _Images()
    parser.feed(html)
    assert parser.tables >= 1 and parser.srcs
    for src in parser.srcs:  # every figure is embedded and decodes as a PNG
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(Path("runs/compare/plots").glob("*.pdf"))

    # `physdiff plot` redraws the comparison from any working directory
    monkeypatch.chdir(tmp_path / "runs")
    Path("compare/report.html").unlink()
    assert main(["plot", str(tmp_path / "runs" / "compare")]) == 0
    assert Path("compare/report.html").is_file()


def test_plot_compare_refuses_runs_of_different_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for seed, run in ((0, "a"), (1, "b")):
        sim = ["simulate", "three-body", "--n", "30", "--frames", "8", "--seed", str(seed), "--out", f"{run}.h5"]
        assert main(sim) == 0
        assert main(["train", "three-body", "--data", f"{run}.h5", "--run-dir", run, *TINY_TRAIN]) == 0
    capsys.readouterr()
    assert main(["plot", "a", "b"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["plot", "a", "b", "--out", "cmp"]) == 2
    err = capsys.readouterr().err
    assert "one data file" in err and "a.h5" in err and "b.h5" in err
