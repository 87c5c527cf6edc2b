"""The published constraint comparisons (``docs/results/*-constraints-quick/``, written by ``physdiff
compare-constraints``) are traceable: the statistics in ``results.json`` follow from its per-seed values, the
paired rows pair each row with its process's ``no_prior`` row seed by seed, ``table.md`` is what the current code
renders from ``results.json``, ``docs/results.md`` quotes the table, and no machine path is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

from physdiff.experiments.compare_constraints import markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"
FOLDERS = sorted((DOCS / "results").glob("*-constraints-quick"))


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


@pytest.fixture(params=FOLDERS, ids=[p.name for p in FOLDERS])
def published(request):
    folder = request.param
    for name in ("results.json", "table.md", "config.yaml"):
        assert (folder / name).is_file(), f"{folder / name} is missing"
    return folder, json.loads((folder / "results.json").read_text())


def test_statistics_and_pairs_follow_from_the_per_seed_values(published):
    folder, res = published
    n = len(res["seeds"])
    for row, metrics in res["rows"].items():
        for key, m in metrics.items():
            x = np.asarray(m["per_seed"], dtype=np.float64)
            assert x.size == n, f"{folder.name} {row} {key}: {x.size} values for {n} seeds"
            assert m["mean"] == pytest.approx(x.mean(), rel=1e-12)
            if n > 1:
                assert m["std"] == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert res["paired"], f"{folder.name}: no paired rows"
    for row, metrics in res["paired"].items():
        for key, p in metrics.items():
            base = res["rows"][p["against"]][key]["per_seed"]
            assert p["against"] == row.split(": ")[0] + ": no_prior"
            d = np.asarray(res["rows"][row][key]["per_seed"]) - np.asarray(base)
            assert p["n"] == n and p["better_seeds"] == int((d < 0).sum())
            assert p["mean_diff"] == pytest.approx(d.mean(), rel=1e-9, abs=1e-15)
            if n > 1:
                half = student_t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
                assert p["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], rel=1e-9, abs=1e-15)


def test_table_is_rendered_from_results_json_and_quoted_in_results_md(published):
    folder, res = published
    table = (folder / "table.md").read_text()
    assert table == markdown(res)
    text = (DOCS / "results.md").read_text()
    missing = [line for line in table.splitlines() if line.startswith("| ") and line not in text]
    assert not missing, f"docs/results.md lacks these rows of {folder.name}/table.md: {missing[:3]}"


def test_no_machine_path_is_recorded(published):
    folder, res = published
    bad = [s for s in _strings(res) for tok in s.split() if tok.startswith(("/", "~")) or "/work/" in tok]
    assert not bad, f"{folder.name}/results.json records machine paths: {bad[:2]}"


def test_cost_figure_labels_of_near_points_do_not_overlap(tmp_path, monkeypatch):
    """Two methods at almost the same cost and residual (DiffusionPDE and DPS on advection) get labels that
    do not overprint each other (matplotlib's text extents, in display pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from physdiff.evaluation import plots
    from physdiff.experiments.compare_constraints import cost_figure

    def point(seconds, law):
        return {"seconds": {"mean": seconds}, "law:residual": {"mean": law}}

    results = {
        "experiment": "toy",
        "keys": ["law:residual"],
        "floor": {"law:residual": 0.01},
        "rows": {
            "vp: no_prior": point(0.07, 0.62),
            "vp: diffusionpde": point(0.1196, 0.4545),
            "vp: dps": point(0.1185, 0.4031),
            "vp: dflow": point(0.18, 0.49),
        },
    }
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: figures.append(fig) or [])
    cost_figure(results, tmp_path)
    (fig,) = figures
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.axes[0].texts if t.get_text().startswith("vp: ")]
    assert len(texts) == 4
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
    plt.close(fig)
