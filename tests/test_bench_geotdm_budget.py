"""``benchmarks/bench_geotdm_budget.py`` without GeoTDM or torch_geometric: the checkout check, the in-memory
conversion to GeoTDM's ``NBody`` batch layout on a hand example, the paired statistics on known numbers, and
our side run tiny."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_geotdm_budget", ROOT / "benchmarks" / "bench_geotdm_budget.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _fake_checkout(root: Path, files) -> Path:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")
    return root


# ------------------------------------------------------------------------------------------- the PATH check
def test_path_check_names_the_missing_files(bench, tmp_path):
    with pytest.raises(bench.SetupError, match="no such directory"):
        bench.check_geotdm_path(tmp_path / "nope")
    _fake_checkout(tmp_path, ["models/EGTN.py"])
    with pytest.raises(bench.SetupError) as e:
        bench.check_geotdm_path(tmp_path)
    msg = str(e.value)
    assert "not a GeoTDM checkout" in msg and "diffusion/GeoTDM.py" in msg and "models/layers.py" in msg
    assert "models/EGTN.py" not in msg.split("missing", 1)[1]
    assert "\n" not in msg
    _fake_checkout(tmp_path, bench.GEOTDM_FILES)
    assert bench.check_geotdm_path(tmp_path) == tmp_path


def test_missing_dependencies_name_the_pip_command(bench, tmp_path, monkeypatch):
    _fake_checkout(tmp_path, bench.GEOTDM_FILES)
    present = {"einops": object()}  # einops there, torch_geometric missing: only it is named
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: present.get(name))
    with pytest.raises(bench.SetupError) as e:
        bench.import_geotdm(tmp_path)
    msg = str(e.value)
    assert msg.startswith("GeoTDM needs torch_geometric, not importable") and "pip install" in msg and "\n" not in msg
    present = {}
    with pytest.raises(bench.SetupError, match="needs torch_geometric and einops"):
        bench.import_geotdm(tmp_path)
    with pytest.raises(bench.SetupError, match="--deps"):
        bench.import_geotdm(tmp_path, tmp_path / "no-deps")


def test_main_reports_a_bad_path_in_one_line(bench, tmp_path, capsys):
    assert bench.main(["--geotdm", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --geotdm") and "not a GeoTDM checkout" in err and "\n" not in err


# ------------------------------------------------------------------------------------------- the layout
def _hand_example():
    b, length, p, d = 2, 4, 3, 3
    pos = np.arange(b * length * p * d, dtype=np.float64).reshape(b, length, p, d)
    return pos


def test_positions_in_geotdm_node_layout(bench):
    pos = _hand_example()
    q = np.array([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]])
    out = bench.to_geotdm_batch(pos, "charged", charges=q)
    x = out["x"]
    assert x.shape == (6, 3, 4)
    # node n = b·P + p holds particle p of trajectory b; x[n, d, l] = positions[b, l, p, d]
    assert x[0, 0, 0] == pos[0, 0, 0, 0] and x[0, 1, 0] == pos[0, 0, 0, 1]
    assert x[1, 0, 0] == pos[0, 0, 1, 0]  # the next node: the next particle, same frame
    assert x[0, 0, 1] == pos[0, 1, 0, 0]  # the last axis: time
    assert x[4, 2, 3] == pos[1, 3, 1, 2]
    for n in range(6):
        for dd in range(3):
            for ll in range(4):
                assert x[n, dd, ll] == pos[n // 3, ll, n % 3, dd]
    np.testing.assert_array_equal(bench.from_geotdm_positions(x, 2), pos)
    assert out["batch"].tolist() == [0, 0, 0, 1, 1, 1]


def test_graph_charged_and_spring(bench):
    pos = _hand_example()
    q = np.array([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]])
    out = bench.to_geotdm_batch(pos, "charged", charges=q)
    # GeoTDM's NBody: the complete graph without self-loops, row-major (i, j); the second graph offset by P = 3
    rows = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    cols = [1, 2, 0, 2, 0, 1, 4, 5, 3, 5, 3, 4]
    assert out["edge_index"].tolist() == [rows, cols]
    assert out["h"].flatten().tolist() == [1.0, -1.0, 1.0, -1.0, -1.0, 1.0]
    # charged: h_i h_j
    assert out["edge_attr"].flatten().tolist() == [-1, 1, -1, -1, 1, -1, 1, -1, 1, -1, -1, -1]
    # spring: the adjacency at (i, j) (asymmetric here so a transpose would show), h zero
    a = np.array([[[0, 1, 2], [3, 0, 4], [5, 6, 0]], [[0, 7, 8], [9, 0, 10], [11, 12, 0]]], dtype=np.float64)
    out = bench.to_geotdm_batch(pos, "spring", edges=a)
    assert out["edge_attr"].flatten().tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert out["h"].shape == (6, 1) and not out["h"].any()
    assert out["edge_index"].tolist() == [rows, cols]
    with pytest.raises(ValueError, match="charges"):
        bench.to_geotdm_batch(pos, "charged")
    with pytest.raises(ValueError, match="system"):
        bench.to_geotdm_batch(pos, "gravity", edges=a)


def test_condition_mask_covers_the_given_frames(bench):
    out = bench.to_geotdm_batch(_hand_example(), "spring", edges=np.zeros((2, 3, 3)))
    kw = bench.geotdm_kwargs(out, known=3)
    assert kw["cond_mask"].flatten().tolist() == [1, 1, 1, 0]
    assert kw["x_given"] is out["x"]


# ------------------------------------------------------------------------------------------- statistics
def test_paired_statistics_on_known_numbers(bench):
    # per-case values whose means per seed are GeoTDM 2, 4, 6 and physdiff 1, 2, 3: d = 1, 2, 3
    def seeds(means):
        return {s: {k: np.array([m - 0.5, m + 0.5]) for k in bench.METRICS} for s, m in enumerate(means)}

    res = bench.summarize({"geotdm": seeds([2.0, 4.0, 6.0]), "physdiff": seeds([1.0, 2.0, 3.0])})
    g = res["models"]["geotdm"]["ave_ade"]
    assert g["mean"] == pytest.approx(4.0) and g["std"] == pytest.approx(2.0)  # ddof = 1
    p = res["paired"]["ave_ade"]
    half = 4.302652729911275 / np.sqrt(3)  # t_{0.975, 2} · s / √n with s = 1
    assert p["mean_diff"] == pytest.approx(2.0)
    assert p["ci95"] == pytest.approx([2.0 - half, 2.0 + half])
    assert p["better_seeds"] == 0 and p["ratio"] == pytest.approx(2.0)
    table = bench.markdown_table({"spring": res})
    assert "| spring | geotdm | 3.5 ± 2 |" not in table
    assert "| spring | geotdm | 4 ± 2 | 4 ± 2 | 4 ± 2 | 4 ± 2 |" in table
    assert "+2 [-0.484, 4.48] ×2.00" in table
    with pytest.raises(ValueError, match="same seeds"):
        bench.summarize({"geotdm": seeds([2.0, 4.0]), "physdiff": seeds([1.0, 2.0, 3.0])})


# ------------------------------------------------------------------------------------------- our side
def test_our_side_runs_tiny(bench, tmp_path):
    torch.set_num_threads(1)
    prep = bench.physdiff_setup("nbody-spring", 2, 3, tmp_path / "data")
    assert prep.cfg.model.state == "positions" and prep.cfg.train.steps == 2
    r = bench.run_physdiff(prep, 0, 2, tmp_path / "run")
    m = r["metrics"]
    assert set(m) == set(bench.METRICS) and all(np.shape(v) == (3,) for v in m.values())
    assert np.all(m["min_ade"] <= m["ave_ade"] + 1e-12) and np.all(np.isfinite(m["ave_fde"]))
    assert r["params"] > 1000
