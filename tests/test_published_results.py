"""The published tables are traceable: each folder of ``docs/results/`` holds the ``results.json``, ``table.md``
and ``config.yaml`` of one ``physdiff reproduce`` run, the statistics in ``results.json`` follow from its
per-seed values (sample std with ddof = 1, paired differences with their Student-t intervals), ``table.md`` is
what the current code renders from ``results.json``, and ``docs/results.md`` quotes each main table verbatim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

from physdiff.config import load_yaml
from physdiff.experiments import tables
from physdiff.experiments.config import ExperimentConfig
from physdiff.experiments.task import make_task

DOCS = Path(__file__).resolve().parents[1] / "docs"
# the constraint comparisons (*-constraints-quick, another schema) are checked in test_compare_constraints_published
PUBLISHED = (
    sorted(p for p in (DOCS / "results").iterdir() if p.is_dir() and not p.name.endswith("-constraints-quick"))
    if (DOCS / "results").is_dir()
    else []
)


def test_there_are_published_tables():
    names = {p.name for p in PUBLISHED}
    assert {"three-body-quick", "five-spring-quick"} <= names


@pytest.fixture(params=PUBLISHED, ids=[p.name for p in PUBLISHED])
def published(request):
    folder = request.param
    for name in ("results.json", "table.md", "config.yaml"):
        assert (folder / name).is_file(), f"{folder / name} is missing"
    return folder, json.loads((folder / "results.json").read_text())


def test_statistics_follow_from_the_per_seed_values(published):
    folder, res = published
    n = len(res["seeds"])
    for arm, metrics in res["arms"].items():
        for key, m in metrics.items():
            x = np.asarray(m["per_seed"], dtype=np.float64)
            assert x.size == n, f"{folder.name} {arm} {key}: {x.size} values for {n} seeds"
            assert m["mean"] == pytest.approx(x.mean(), rel=1e-12)
            if n > 1:
                assert m["std"] == pytest.approx(x.std(ddof=1), rel=1e-12)
    for arm, metrics in res["paired"].items():
        for key, p in metrics.items():
            d = np.asarray(res["arms"][arm][key]["per_seed"]) - np.asarray(res["arms"]["no_prior"][key]["per_seed"])
            assert p["n"] == n and p["better_seeds"] == int((d < 0).sum())
            assert p["mean_diff"] == pytest.approx(d.mean(), rel=1e-9, abs=1e-15)
            if n > 1:
                half = student_t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
                assert p["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], rel=1e-9, abs=1e-15)


def test_table_md_is_what_the_code_renders_from_results_json(published):
    folder, res = published
    task = make_task(load_yaml(ExperimentConfig, folder / "config.yaml"))
    rendered = tables.markdown_table(res, tables.table_keys(res), note=task.table_note)
    assert (folder / "table.md").read_text() == rendered


def test_docs_results_md_quotes_each_main_table(published):
    """The rows of the paper's table (the first table of table.md: arms, floor, ratios, paired intervals)
    appear verbatim in docs/results.md, so the prose's numbers are the committed run's numbers."""
    folder, _ = published
    text = (DOCS / "results.md").read_text()
    lines = (folder / "table.md").read_text().splitlines()
    rows = []
    for line in lines[lines.index(next(x for x in lines if x.startswith("| method"))) :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    missing = [r for r in rows if r not in text]
    assert not missing, f"docs/results.md lacks these rows of {folder.name}/table.md: {missing[:3]}"
