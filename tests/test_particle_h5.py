"""HDF5 storage of particle data: round trip, determinism, atomic writes and every validation error."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from physdiff.data.particles_h5 import (
    ParticleData,
    load_particles,
    make_splits,
    simulate_to_file,
    write_particles,
)
from physdiff.evaluation.particle_metrics import floor_metrics
from physdiff.systems.registry import get_system


@pytest.fixture(scope="module")
def spring_file(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("h5") / "springs.h5"
    summary = simulate_to_file("five-spring", path, 20, seed=1, n_frames=8)
    return path, summary


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("positions", "velocities", "masses", "edges") if k in f}


def _rewrite(src: Path, dst: Path, drop: str | None = None, attrs_drop: str | None = None, **replace) -> Path:
    """Copy a valid file with one dataset dropped/replaced or one attribute dropped (bypassing checks)."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        for key in ("positions", "velocities", "masses", "edges"):
            if key in f and key != drop:
                g[key] = replace.get(key, f[key][()])
        for key, value in f.attrs.items():
            if key != attrs_drop:
                g.attrs[key] = value
    return dst


def test_round_trip_and_summary(spring_file) -> None:
    path, summary = spring_file
    data = load_particles(path)
    assert isinstance(data, ParticleData)
    assert data.shape == (20, 8, 5, 2) and data.edges.shape == (20, 5, 5)
    assert data.system == "five-spring"
    assert data.constants == {"kappa": 0.1, "dt": 0.1}
    assert data.attrs["seed"] == 1 and data.attrs["substeps"] == 100
    assert data.attrs["integrator_step"] == pytest.approx(1e-3)
    assert summary["shape"] == [20, 8, 5, 2] and summary["max_relative_energy_drift"] < 1e-6
    # splits: a seeded partition of range(N)
    assert sorted(data.splits) == ["test", "train", "val"]
    assert [len(data.splits[k]) for k in ("train", "val", "test")] == [16, 2, 2]
    assert np.array_equal(np.sort(np.concatenate(list(data.splits.values()))), np.arange(20))
    assert data.split("test").n == 2
    # floors stored as attributes, computed as the metrics with prediction = reference
    floor = floor_metrics(data)
    for key, value in floor.items():
        assert data.attrs[f"floor_{key}"] == pytest.approx(value)
        assert summary["floor"][key] == pytest.approx(value)
    # write → load round trip of a ParticleData, bit-exact
    out = path.parent / "copy.h5"
    write_particles(out, data.arrays(), data.attrs, splits=data.splits)
    again = load_particles(out)
    for key, value in data.arrays().items():
        assert again.arrays()[key].tobytes() == value.tobytes()
    assert again.splits["train"].tolist() == data.splits["train"].tolist()


def test_simulate_to_file_is_deterministic(tmp_path) -> None:
    for name, settings in (
        ("five-spring", {"n_frames": 5}),
        ("three-body", {"n_frames": 5, "batch_size": 32}),
    ):
        a = tmp_path / f"{name}-a.h5"
        b = tmp_path / f"{name}-b.h5"
        simulate_to_file(name, a, 6, seed=7, **settings)
        simulate_to_file(name, b, 6, seed=7, **settings)
        arrays_a, arrays_b = _arrays(a), _arrays(b)
        assert arrays_a.keys() == arrays_b.keys()
        for key in arrays_a:
            assert arrays_a[key].tobytes() == arrays_b[key].tobytes()
        assert load_particles(a).splits["val"].tolist() == load_particles(b).splits["val"].tolist()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # atomic writes leave no temp file


def test_make_splits() -> None:
    s = make_splits(100, seed=0)
    assert [len(s[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    assert all(v.dtype == np.int64 for v in s.values())
    assert make_splits(100, seed=0)["test"].tolist() == s["test"].tolist()
    assert make_splits(100, seed=1)["test"].tolist() != s["test"].tolist()
    with pytest.raises(ValueError, match="fractions"):
        make_splits(10, fractions=(0.5, 0.5, 0.5))


def test_missing_key(spring_file, tmp_path) -> None:
    bad = _rewrite(spring_file[0], tmp_path / "bad.h5", drop="velocities")
    with pytest.raises(KeyError, match=r"bad\.h5.*'velocities'"):
        load_particles(bad)
    bad = _rewrite(spring_file[0], tmp_path / "noedges.h5", drop="edges")
    with pytest.raises(KeyError, match="'edges'"):
        load_particles(bad)


def test_wrong_shape_and_rank(spring_file, tmp_path) -> None:
    path = spring_file[0]
    V = _arrays(path)["velocities"]
    bad = _rewrite(path, tmp_path / "shape.h5", velocities=V[:, :-1])
    with pytest.raises(ValueError, match=r"shape\.h5.*'velocities' has shape \[20, 7, 5, 2\]"):
        load_particles(bad)
    bad = _rewrite(path, tmp_path / "rank.h5", positions=V[0])
    with pytest.raises(ValueError, match=r"'positions' has shape \[8, 5, 2\] \(rank 3\)"):
        load_particles(bad)
    bad = _rewrite(path, tmp_path / "masses.h5", masses=np.ones((20, 4)))
    with pytest.raises(ValueError, match=r"'masses' has shape \[20, 4\]"):
        load_particles(bad)


def test_nan_and_nonpositive_mass(spring_file, tmp_path) -> None:
    path = spring_file[0]
    arrays = _arrays(path)
    R = arrays["positions"].copy()
    R[3, 2, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"nan\.h5.*'positions'.*NaN/inf.*\(3, 2, 1, 0\)"):
        load_particles(_rewrite(path, tmp_path / "nan.h5", positions=R))
    m = arrays["masses"].copy()
    m[0, 0] = 0.0
    with pytest.raises(ValueError, match=r"mass\.h5.*'masses'.*> 0"):
        load_particles(_rewrite(path, tmp_path / "mass.h5", masses=m))
    e = arrays["edges"].copy()
    e[0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="zero diagonal"):
        load_particles(_rewrite(path, tmp_path / "edges.h5", edges=e))
    # write_particles validates too, and leaves no file behind
    with pytest.raises(ValueError, match="> 0"):
        write_particles(tmp_path / "never.h5", {**arrays, "masses": m}, {"system": "five-spring"})
    assert not (tmp_path / "never.h5").exists()


def test_system_attribute(spring_file, tmp_path) -> None:
    path = spring_file[0]
    bad = _rewrite(path, tmp_path / "nosys.h5", attrs_drop="system")
    with pytest.raises(ValueError, match="pass --system NAME"):
        load_particles(bad)
    assert load_particles(bad, system="five-spring").system == "five-spring"
    with pytest.raises(ValueError, match="requested"):
        load_particles(path, system="three-body")
    unknown = _rewrite(path, tmp_path / "unknown.h5")
    with h5py.File(unknown, "a") as f:
        f.attrs["system"] = "six-spring"
    with pytest.raises(ValueError, match=r"unknown\.h5.*'six-spring'.*three-body, five-spring"):
        load_particles(unknown)
    with pytest.raises(ValueError, match="unknown particle system"):
        write_particles(tmp_path / "x.h5", _arrays(path), {"system": "six-spring"})
    with pytest.raises(FileNotFoundError):
        load_particles(tmp_path / "missing.h5")


def test_missing_constant_warns_and_uses_default(spring_file, tmp_path) -> None:
    bad = _rewrite(spring_file[0], tmp_path / "nokappa.h5", attrs_drop="kappa")
    with pytest.warns(UserWarning, match=r"nokappa\.h5.*'kappa'.*default kappa = 0\.1"):
        data = load_particles(bad)
    assert data.constants["kappa"] == 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_particles(spring_file[0])  # a complete file loads without warnings


def test_three_body_file_has_no_edges(tmp_path) -> None:
    system = get_system("three-body", n_frames=4, batch_size=16)
    data = system.simulate(3, seed=0)
    path = write_particles(tmp_path / "tb.h5", data, {"system": "three-body", "G": 1.0, "dt": 0.1, "seed": 0})
    loaded = load_particles(path)
    assert loaded.edges is None and loaded.constants == {"G": 1.0, "dt": 0.1}
    with h5py.File(path, "r") as f:
        assert "edges" not in f and f["splits/train"].dtype == np.int64
        assert f["positions"].dtype == np.float64


def test_progress_bar_and_stale_floor(tmp_path, capsys) -> None:
    summary = simulate_to_file("three-body", tmp_path / "p.h5", 2, seed=0, n_frames=4, batch_size=8, progress=True)
    simulate_to_file("five-spring", tmp_path / "q.h5", 2, seed=0, n_frames=4, progress=True)
    assert summary["n"] == 2
    data = load_particles(tmp_path / "q.h5")
    attrs = dict(data.attrs, floor_energy_error=123.0)  # a stale floor copied from elsewhere is replaced
    write_particles(tmp_path / "r.h5", data.arrays(), attrs)
    assert load_particles(tmp_path / "r.h5").attrs["floor_energy_error"] == pytest.approx(
        data.attrs["floor_energy_error"]
    )


@pytest.mark.parametrize("system", ["three-body", "five-spring", "charged"])
def test_simulator_progress_off_a_terminal_is_lines_and_obeys_quiet(tmp_path, capsys, caplog, system) -> None:
    """Off a terminal the simulators report like the rest of physdiff (a line every 10 % through the logger,
    no carriage-return bar on stderr), and ``--quiet`` (set_quiet) silences them."""
    import logging

    from physdiff import progress

    with caplog.at_level(logging.INFO, logger="physdiff"):
        simulate_to_file(system, tmp_path / "a.h5", 2, seed=0, n_frames=12, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [r.getMessage() for r in caplog.records if "%" in r.getMessage() and "ETA" in r.getMessage()]
    assert lines and lines[-1].split(":")[0].startswith(system.split("-")[0])
    assert "100%" in lines[-1]
    caplog.clear()
    progress.set_quiet(True)
    try:
        with caplog.at_level(logging.INFO, logger="physdiff"):
            simulate_to_file(system, tmp_path / "b.h5", 2, seed=0, n_frames=12, progress=True)
    finally:
        progress.set_quiet(False)
    assert not [r for r in caplog.records if "ETA" in r.getMessage()]
    assert "\r" not in capsys.readouterr().err
