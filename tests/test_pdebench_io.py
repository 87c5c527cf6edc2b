"""PDEBench-layout HDF5 I/O: real-layout files written here load unchanged; our round trip; errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from physdiff.data.pdebench import PDEBenchFormatError, load_pde, simulate_to_file, write_pde
from physdiff.systems import darcy
from physdiff.systems.pde_registry import get_pde_system


def _pdebench_1d(path: Path, n: int = 10, t: int = 21, x: int = 64, attrs: dict | None = None) -> np.ndarray:
    rng = np.random.default_rng(0)
    u = rng.standard_normal((n, t, x)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=u)
        f.create_dataset("x-coordinate", data=((np.arange(x) + 0.5) / x).astype(np.float32))
        f.create_dataset("t-coordinate", data=(np.arange(t + 1) * 0.01).astype(np.float32))  # T + 1
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return u


def test_pdebench_advection_layout_loads(tmp_path: Path) -> None:
    path = tmp_path / "1D_Advection_Sols_beta0.4.hdf5"
    u = _pdebench_1d(path)
    data = load_pde(path)
    assert data.system == "advection" and data.origin == "pdebench"
    assert data.fields.shape == (10, 21, 64) and data.fields.dtype == np.float64
    np.testing.assert_allclose(data.fields, u)
    assert data.parameters["beta"] == pytest.approx(0.4)
    assert len(data.coords["t"]) == 21
    assert data.dt == pytest.approx(0.01) and data.dx == pytest.approx(1 / 64)
    assert data.split_source == "pdebench-convention"
    np.testing.assert_array_equal(data.splits["test"], [0])
    assert len(data.splits["train"]) + len(data.splits["val"]) + len(data.splits["test"]) == 10
    small = load_pde(path, downsample_x=2, downsample_t=4, max_samples=3)
    assert small.fields.shape == (3, 6, 32)
    np.testing.assert_allclose(small.fields, u[:3, ::4, ::2])
    assert small.dt == pytest.approx(0.04) and small.dx == pytest.approx(2 / 64)


def test_pdebench_burgers_layout_attr_and_name(tmp_path: Path) -> None:
    path = tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5"
    _pdebench_1d(path, t=11, attrs={"Nu": 0.01})
    data = load_pde(path, system="burgers")
    assert data.system == "burgers" and data.parameters["nu"] == pytest.approx(0.01)
    assert data.fields.shape == (10, 11, 64)
    path2 = tmp_path / "1D_Burgers_Sols_Nu1e-3.hdf5"  # parameter from the name only, T frames in t
    _pdebench_1d(path2, t=11)
    with h5py.File(path2, "a") as f:
        del f["t-coordinate"]
        f.create_dataset("t-coordinate", data=np.arange(11) * 0.1)
    data2 = load_pde(path2)
    assert data2.parameters["nu"] == pytest.approx(1e-3) and data2.dt == pytest.approx(0.1)


def test_pdebench_darcy_layout_loads(tmp_path: Path) -> None:
    sim = darcy.simulate(6, seed=0, n_grid=16)
    path = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("nu", data=sim["a"].astype(np.float32))
        f.create_dataset("tensor", data=sim["u"][:, None].astype(np.float32))
        f.create_dataset("x-coordinate", data=sim["coords"]["x"].astype(np.float32))
        f.create_dataset("y-coordinate", data=sim["coords"]["y"].astype(np.float32))
    data = load_pde(path)
    assert data.system == "darcy" and data.parameters["f"] == pytest.approx(1.0)
    assert data.fields.shape == (6, 16, 16) and data.coefficient is not None
    assert data.coefficient.shape == (6, 16, 16)
    assert data.dx == pytest.approx(1 / 16, rel=1e-6)
    floor = get_pde_system("darcy").residual_rmse(data)
    assert floor.max() < 1e-3  # float32 storage round-off only


def test_pdebench_shallow_water_h_only(tmp_path: Path) -> None:
    path = tmp_path / "2D_rdb_NA_NA.h5"
    t, x = 5, 8
    with h5py.File(path, "w") as f:
        for i in range(4):
            g = f.create_group(f"{i:04d}")
            g.create_dataset("data", data=np.full((t, x, x, 1), 1.0 + i, dtype=np.float32))
            g.create_dataset("grid/x", data=np.linspace(-2.5, 2.5, x))
            g.create_dataset("grid/y", data=np.linspace(-2.5, 2.5, x))
            g.create_dataset("grid/t", data=np.linspace(0, 1, t))
        f["0000"].attrs["config"] = "sim: {}"
    with pytest.warns(UserWarning, match="h only"):
        data = load_pde(path)
    assert data.system == "shallow-water" and data.fields.shape == (4, t, 1, x, x)
    assert data.channels == ("h",) and not data.priors_available
    assert any("unavailable" in m for m in data.messages)
    np.testing.assert_allclose(data.fields[2], 3.0)


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("advection", {"nx": 32, "nt": 8, "beta": 0.4}),
        ("burgers", {"nx": 32, "nt": 8, "nu": 0.2}),
        ("darcy", {"n_grid": 12}),
        ("shallow-water", {"nx": 12, "ny": 10, "nt": 5}),
    ],
)
def test_round_trip(tmp_path: Path, name: str, settings: dict) -> None:
    system = get_pde_system(name)
    path = simulate_to_file(name, tmp_path / f"{name}.h5", n=10, seed=4, **settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.h5"]  # no temp file left
    sim = system.simulate(10, seed=4, **settings)
    data = load_pde(path)
    assert data.system == name and data.origin == "physdiff" and data.priors_available
    np.testing.assert_array_equal(data.fields, sim.fields)
    if name == "darcy":
        np.testing.assert_array_equal(data.coefficient, sim.coefficient)
    for key, c in sim.coords.items():
        np.testing.assert_allclose(data.coords[key], c)
    for key in ("beta", "nu", "f", "g"):
        if key in sim.parameters:
            assert data.parameters[key] == pytest.approx(sim.parameters[key])
    assert data.split_source == "file"
    assert sorted(np.concatenate(list(data.splits.values())).tolist()) == list(range(10))
    np.testing.assert_allclose(system.residual_rmse(data), system.residual_rmse(sim), rtol=1e-12)
    if name == "shallow-water":
        np.testing.assert_allclose(data.parameters["radius"], sim.parameters["radius"])
        assert data.channels == ("h", "hu", "hv")
    if name == "burgers":
        with h5py.File(path) as f:
            assert f.attrs["Nu"] == pytest.approx(0.2)
            assert len(f["t-coordinate"]) == 9  # PDEBench convention T + 1


def test_write_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="x has"):
        write_pde(
            tmp_path / "bad.h5",
            "advection",
            {"u": np.zeros((2, 4, 8))},
            {"x": np.zeros(7), "t": np.arange(4)},
        )
    assert list(tmp_path.iterdir()) == []


def test_errors(tmp_path: Path) -> None:
    p = tmp_path / "weird.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("foo", data=np.zeros((2, 3)))
    with pytest.raises(PDEBenchFormatError, match=r"weird\.h5.*matches no supported format.*foo \(2, 3\)"):
        load_pde(p)

    p = tmp_path / "1D_Advection_Sols_beta1.0.hdf5"
    _pdebench_1d(p, n=3, t=5, x=16)
    with h5py.File(p, "a") as f:
        del f["x-coordinate"]
        f.create_dataset("x-coordinate", data=np.arange(15) / 15)
    with pytest.raises(PDEBenchFormatError, match=r"inconsistent grid sizes: 'x-coordinate' has shape \(15,\)"):
        load_pde(p)

    p = tmp_path / "1D_Advection_Sols_beta2.0.hdf5"
    _pdebench_1d(p, n=3, t=5, x=16)
    with h5py.File(p, "a") as f:
        del f["t-coordinate"]
        f.create_dataset("t-coordinate", data=np.arange(9) * 0.1)
    with pytest.raises(PDEBenchFormatError, match="'t-coordinate' has 9 entries"):
        load_pde(p)

    p = tmp_path / "1D_Advection_Sols_beta0.1.hdf5"
    _pdebench_1d(p, n=3, t=5, x=16)
    with h5py.File(p, "a") as f:
        f["tensor"][1, 2, 3] = np.nan
    with pytest.raises(PDEBenchFormatError, match=r"'tensor' \(shape \(3, 5, 16\)\) contains 1 NaN"):
        load_pde(p)
    with pytest.raises(PDEBenchFormatError, match="asked for system 'burgers'"):
        load_pde(p, system="burgers")

    p = tmp_path / "1D_Burgers_Sols_Nu0.0.hdf5"
    _pdebench_1d(p, n=3, t=5, x=16)
    with pytest.raises(PDEBenchFormatError, match="viscosity 'Nu' must be > 0"):
        load_pde(p)

    p = tmp_path / "mystery.hdf5"
    _pdebench_1d(p, n=3, t=5, x=16)
    with pytest.raises(PDEBenchFormatError, match="pass system="):
        load_pde(p)

    p = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    a = np.ones((2, 8, 8))
    a[1, 2, 2] = -0.1
    with h5py.File(p, "w") as f:
        f.create_dataset("nu", data=a)
        f.create_dataset("tensor", data=np.zeros((2, 1, 8, 8)))
    with pytest.raises(PDEBenchFormatError, match=r"permeability 'nu' \(shape \(2, 8, 8\)\) must be > 0"):
        load_pde(p)
    with h5py.File(p, "a") as f:
        del f["nu"]
        f.create_dataset("nu", data=np.ones((2, 8, 7)))
    with pytest.raises(PDEBenchFormatError, match="inconsistent grid sizes: 'nu' has shape"):
        load_pde(p)

    with pytest.raises(FileNotFoundError):
        load_pde(tmp_path / "missing.h5")
