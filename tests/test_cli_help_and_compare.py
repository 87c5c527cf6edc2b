"""``physdiff --help`` and ``physdiff VERB --help`` (defaults of every option, an example per verb, the thread
note once), and ``plot --out`` over runs of different seeds (one results folder, each arm with its own seeds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from physdiff.cli.main import build_parser, main

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


def _verbs() -> dict[str, argparse.ArgumentParser]:
    return build_parser().verbs  # type: ignore[attr-defined]


@pytest.mark.parametrize("verb", sorted(_verbs()))
def test_every_option_shows_its_default_and_the_verb_an_example(verb):
    parser = _verbs()[verb]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        text = formatter._expand_help(action) if action.help else ""
        assert "default" in text, f"physdiff {verb} {'/'.join(action.option_strings)}: no default in {text!r}"
    text = parser.format_help()
    assert "example:" in text and f"physdiff {verb}" in text.split("example:", 1)[1]
    assert "1.4-1.5x faster" not in text  # the threads note lives in the main help only


def test_main_help_has_the_thread_note_once(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.count("1.4-1.5x faster") == 1 and "examples:" in out


def test_plot_compares_runs_of_different_seeds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sim = ["simulate", "three-body", "--n", "30", "--frames", "8", "--out", "d.h5"]
    assert main(["--quiet", *sim]) == 0
    for arm, seed, run in (("no_prior", 0, "a"), ("prior:energy", 1, "b")):
        argv = ["train", "three-body", "--data", "d.h5", "--arm", arm, "--seed", str(seed), "--run-dir", run]
        assert main(["--quiet", *argv, "--device", "cpu", *TINY_TRAIN]) == 0
        assert main(["--quiet", "sample", run, "--device", "cpu"]) == 0
    capsys.readouterr()
    assert "device cpu, world size 1" in Path("a/run.log").read_text()  # where it ran, in the run's log
    assert main(["--quiet", "plot", "a", "b", "--out", "cmp"]) == 0, capsys.readouterr().err
    res = json.loads(Path("cmp/results.json").read_text())
    assert res["arm_seeds"] == {"no_prior": [0], "prior:energy": [1]} and res["paired"] == {}
    assert res["wall_time_s"] and res["wall_time_s"] > 0  # the runs' training time, not 0.0
    assert not Path(res["data"]).is_absolute() and (Path("cmp") / res["data"]).resolve() == Path("d.h5").resolve()
    html = Path("cmp/report.html").read_text()
    assert "no_prior: 0; prior:energy: 1" in html and "wall time: 0.0 s" not in html
    assert (Path("cmp/plots") / "conservation.png").is_file()
    # the folder is redrawn from its results.json (its relative data path) from another working directory
    monkeypatch.chdir(tmp_path / "a")
    assert main(["--quiet", "plot", str(tmp_path / "cmp")]) == 0


def test_quiet_silences_the_simulators_progress(tmp_path, capsys):
    for argv in (["simulate", "three-body", "-q"], ["--quiet", "simulate", "three-body"]):
        out = tmp_path / f"{len(argv[0])}.h5"
        assert main([*argv, "--n", "4", "--frames", "4", "--out", str(out)]) == 0
        assert capsys.readouterr().err == ""
