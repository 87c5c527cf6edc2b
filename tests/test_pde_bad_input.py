"""Bad input to the PDE readers, writer and solvers fails with a message naming the file, key or setting.

The HDF5 files are tiny and use PDEBench's exact key layout: 1-D ``tensor [N, T, X]`` +
``x-coordinate [X]`` + ``t-coordinate [T + 1]``; Darcy ``nu [N, X, Y]`` + ``tensor [N, 1, X, Y]`` +
``x-coordinate``, ``y-coordinate``; 2-D groups ``NNNN/data [T, X, Y, C]`` + ``NNNN/grid/{x,y,t}``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from physdiff.data.pdebench import PDEBenchFormatError, load_pde, write_pde
from physdiff.systems import advection, burgers, darcy, shallow_water
from physdiff.systems.pde_registry import get_pde_system

# ------------------------------------------------------------------------------------ file builders


def _one_d(path: Path, n: int = 3, t: int = 4, x: int = 8, attrs: dict | None = None) -> Path:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=rng.standard_normal((n, t, x)).astype(np.float32))
        f.create_dataset("x-coordinate", data=(np.arange(x) + 0.5) / x)
        f.create_dataset("t-coordinate", data=np.arange(t + 1) * 0.1)  # PDEBench: T + 1
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return path


def _darcy(path: Path, n: int = 2, x: int = 8, y: int = 8, a: np.ndarray | None = None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("nu", data=np.ones((n, x, y)) if a is None else a)
        f.create_dataset("tensor", data=np.zeros((n, 1, x, y)))
        f.create_dataset("x-coordinate", data=(np.arange(x) + 0.5) / x)
        f.create_dataset("y-coordinate", data=(np.arange(y) + 0.5) / y)
    return path


def _sw(path: Path, n: int = 2, t: int = 3, x: int = 6, y: int = 5, c: int = 3) -> Path:
    with h5py.File(path, "w") as f:
        for i in range(n):
            data = np.zeros((t, x, y, c))
            data[..., 0] = 1.0 + i
            g = f.create_group(f"{i:04d}")
            g.create_dataset("data", data=data)
            g.create_dataset("grid/x", data=np.linspace(-2.5, 2.5, x))
            g.create_dataset("grid/y", data=np.linspace(-2.5, 2.5, y))
            g.create_dataset("grid/t", data=np.linspace(0.0, 1.0, t))
    return path


def _replace(path: Path, key: str, data: np.ndarray) -> None:
    with h5py.File(path, "a") as f:
        del f[key]
        f.create_dataset(key, data=data)


def _set(path: Path, key: str, index: tuple, value: float) -> None:
    with h5py.File(path, "a") as f:
        arr = f[key][()]
        arr[index] = value
        f[key][...] = arr


# ------------------------------------------------------------------------------------ reader: layout / keys


def test_load_layout_matching_no_format_lists_found(tmp_path: Path) -> None:
    p = tmp_path / "odd.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("fields", data=np.zeros((2, 3, 4)))
        f.create_dataset("meta/x", data=np.zeros(4))
    with pytest.raises(PDEBenchFormatError, match=r"odd\.h5.*matches no supported format.*fields \(2, 3, 4\).*meta/x"):
        load_pde(p)


def test_load_4d_tensor_without_nu_is_unknown_layout(tmp_path: Path) -> None:
    p = tmp_path / "2D_DarcyFlow_beta1.0.hdf5"
    with h5py.File(p, "w") as f:
        f.create_dataset("tensor", data=np.zeros((2, 1, 4, 4)))
    with pytest.raises(PDEBenchFormatError, match=r"matches no supported format.*tensor \(2, 1, 4, 4\)"):
        load_pde(p)


def test_load_not_hdf5(tmp_path: Path) -> None:
    p = tmp_path / "notes.h5"
    p.write_text("not hdf5")
    with pytest.raises(PDEBenchFormatError, match=r"notes\.h5: not a readable HDF5 file"):
        load_pde(p)


def test_load_unknown_system_argument(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "1D_Advection_Sols_beta0.4.hdf5")
    with pytest.raises(ValueError, match=r"argument 'system': unknown PDE system 'navier-stokes'; valid names"):
        load_pde(p, system="navier-stokes")


def test_load_unknown_system_attribute(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "data.h5", attrs={"system": "heat", "beta": 1.0})
    with pytest.raises(PDEBenchFormatError, match=r"data\.h5: attribute 'system' = 'heat' is not a supported system"):
        load_pde(p)


def test_load_system_attribute_contradicts_layout(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "data.h5", attrs={"system": "darcy"})
    with pytest.raises(PDEBenchFormatError, match=r"attribute 'system' = 'darcy' contradicts the file's 1d layout"):
        load_pde(p)


def test_load_missing_coordinate_key(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "1D_Advection_Sols_beta0.4.hdf5")
    with h5py.File(p, "a") as f:
        del f["t-coordinate"]
    with pytest.raises(PDEBenchFormatError, match=r"needs dataset 't-coordinate'; found: tensor"):
        load_pde(p)


def test_load_sw_missing_grid_key(tmp_path: Path) -> None:
    p = _sw(tmp_path / "2D_rdb_NA_NA.h5")
    with h5py.File(p, "a") as f:
        del f["0001/grid/t"]
    with pytest.raises(PDEBenchFormatError, match=r"missing dataset '0001/grid/t'"):
        load_pde(p)


def test_load_missing_split_key(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "1D_Advection_Sols_beta0.4.hdf5")
    with h5py.File(p, "a") as f:
        f.create_dataset("splits/train", data=np.arange(2))
        f.create_dataset("splits/test", data=np.arange(2, 3))
    with pytest.raises(PDEBenchFormatError, match=r"missing split dataset 'splits/val'"):
        load_pde(p)


def test_load_bad_downsample_setting(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "1D_Advection_Sols_beta0.4.hdf5")
    with pytest.raises(ValueError, match="downsample_x must be an integer >= 1, got 0"):
        load_pde(p, downsample_x=0)
    with pytest.raises(ValueError, match="downsample_t must be an integer >= 1, got -2"):
        load_pde(p, downsample_t=-2)


def test_load_empty_tensor(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "1D_Advection_Sols_beta0.4.hdf5", n=0)
    with pytest.raises(PDEBenchFormatError, match=r"'tensor' \[N, T, X\] is empty \(shape \(0, 4, 8\)\)"):
        load_pde(p)


# ------------------------------------------------------------------------------------ reader: grid sizes


def test_load_x_coordinate_length_mismatch(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "1D_Advection_Sols_beta0.4.hdf5")
    _replace(p, "x-coordinate", np.arange(7) / 7)
    with pytest.raises(
        PDEBenchFormatError, match=r"inconsistent grid sizes: 'x-coordinate' has shape \(7,\).* 8 points"
    ):
        load_pde(p)


def test_load_t_coordinate_neither_t_nor_t_plus_1(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "1D_Advection_Sols_beta0.4.hdf5")
    _replace(p, "t-coordinate", np.arange(7) * 0.1)
    with pytest.raises(PDEBenchFormatError, match=r"'t-coordinate' has 7 entries .*4 frames \(expected 4 or 5\)"):
        load_pde(p)


def test_load_darcy_nu_tensor_shape_mismatch(tmp_path: Path) -> None:
    p = _darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5")
    _replace(p, "tensor", np.zeros((2, 1, 8, 7)))
    with pytest.raises(PDEBenchFormatError, match=r"'nu' has shape \(2, 8, 8\), 'tensor' has \(2, 1, 8, 7\)"):
        load_pde(p)


def test_load_darcy_y_coordinate_mismatch(tmp_path: Path) -> None:
    p = _darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5")
    _replace(p, "y-coordinate", np.arange(9) / 9)
    with pytest.raises(PDEBenchFormatError, match=r"'y-coordinate' has shape \(9,\)"):
        load_pde(p)


def test_load_sw_grid_x_length_mismatch(tmp_path: Path) -> None:
    p = _sw(tmp_path / "2D_rdb_NA_NA.h5")
    _replace(p, "0000/grid/x", np.linspace(-2.5, 2.5, 7))
    with pytest.raises(PDEBenchFormatError, match=r"inconsistent grid sizes: '0000/grid/x' has shape \(7,\)"):
        load_pde(p)


def test_load_sw_later_group_grid_mismatch(tmp_path: Path) -> None:
    p = _sw(tmp_path / "2D_rdb_NA_NA.h5")
    _replace(p, "0001/grid/y", np.linspace(-2.5, 2.5, 4))
    with pytest.raises(PDEBenchFormatError, match=r"'0001/grid/y' has shape \(4,\) but the data have 5 points"):
        load_pde(p)


def test_load_sw_data_shape_differs_between_groups(tmp_path: Path) -> None:
    p = _sw(tmp_path / "2D_rdb_NA_NA.h5")
    _replace(p, "0001/data", np.ones((2, 6, 5, 3)))
    with pytest.raises(PDEBenchFormatError, match=r"'0001/data' has shape \(2, 6, 5, 3\), '0000/data' has"):
        load_pde(p)


# ------------------------------------------------------------------------------------ reader: NaN / inf


@pytest.mark.parametrize(
    ("kind", "key", "index", "value"),
    [
        ("1d", "tensor", (1, 2, 3), np.inf),
        ("1d", "x-coordinate", (0,), np.nan),
        ("1d", "t-coordinate", (4,), np.nan),
        ("darcy", "nu", (1, 2, 2), np.nan),
        ("darcy", "tensor", (0, 0, 1, 1), -np.inf),
        ("sw", "0001/data", (1, 2, 2, 1), np.nan),
        ("sw", "0000/grid/t", (0,), np.inf),
    ],
)
def test_load_nonfinite_names_key(tmp_path: Path, kind: str, key: str, index: tuple, value: float) -> None:
    if kind == "1d":
        p = _one_d(tmp_path / "1D_Advection_Sols_beta0.4.hdf5")
    elif kind == "darcy":
        p = _darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5")
    else:
        p = _sw(tmp_path / "2D_rdb_NA_NA.h5")
    _set(p, key, index, value)
    with pytest.raises(PDEBenchFormatError, match=rf"dataset {re.escape(repr(key))} .*contains 1 NaN/inf"):
        load_pde(p)


# ------------------------------------------------------------------------------------ reader: parameters


def test_load_burgers_viscosity_attribute_not_positive(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "1D_Burgers_Sols.hdf5", attrs={"Nu": -0.01})
    with pytest.raises(PDEBenchFormatError, match=r"viscosity 'Nu' must be > 0, got -0\.01 \(from attribute 'Nu'\)"):
        load_pde(p)


def test_load_burgers_viscosity_file_name_not_positive(tmp_path: Path) -> None:
    p = _one_d(tmp_path / "1D_Burgers_Sols_Nu0.0.hdf5")
    with pytest.raises(PDEBenchFormatError, match=r"'Nu' must be > 0, got 0\.0 \(from file name '1D_Burgers_Sols_Nu0"):
        load_pde(p)


def test_load_darcy_permeability_not_positive_skipped_by_downsampling(tmp_path: Path) -> None:
    a = np.ones((2, 8, 8))
    a[1, 3, 5] = 0.0  # an odd index: the strided read (every 2nd point) never loads it
    p = _darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", a=a)
    with pytest.raises(PDEBenchFormatError, match=r"permeability 'nu' .* must be > 0.*sample 1, point \(3, 5\)"):
        load_pde(p, downsample_x=2)


def test_load_darcy_source_not_finite(tmp_path: Path) -> None:
    p = _darcy(tmp_path / "darcy.h5")
    with h5py.File(p, "a") as f:
        f.attrs["f"] = np.inf
    with pytest.raises(PDEBenchFormatError, match=r"Darcy source f from attribute 'f' is not finite"):
        load_pde(p)


def test_load_sw_depth_not_positive(tmp_path: Path) -> None:
    p = _sw(tmp_path / "2D_rdb_NA_NA.h5")
    _set(p, "0001/data", (2, 1, 1, 0), -0.5)
    with pytest.raises(PDEBenchFormatError, match=r"water depth h \('0001/data' channel 0\) must be > 0"):
        load_pde(p)


def test_load_sw_gravity_not_positive(tmp_path: Path) -> None:
    p = _sw(tmp_path / "2D_rdb_NA_NA.h5")
    with h5py.File(p, "a") as f:
        f.attrs["g"] = 0.0
    with pytest.raises(PDEBenchFormatError, match=r"gravity attribute 'g' must be a finite number > 0"):
        load_pde(p)


# ------------------------------------------------------------------------------------ writer


def _write_args(system: str) -> tuple[dict, dict, dict]:
    if system == "darcy":
        return {"u": np.zeros((2, 4, 4)), "a": np.ones((2, 4, 4))}, {"x": np.arange(4.0), "y": np.arange(4.0)}, {}
    return {"u": np.zeros((2, 3, 4))}, {"x": np.arange(4.0), "t": np.arange(3.0)}, {"nu": 0.1}


@pytest.mark.parametrize(
    ("system", "where", "key"),
    [
        ("burgers", "arrays", "u"),
        ("darcy", "arrays", "a"),
        ("burgers", "coords", "t"),
        ("darcy", "coords", "y"),
        ("burgers", "attrs", "nu"),
    ],
)
def test_write_refuses_nonfinite_naming_key(tmp_path: Path, system: str, where: str, key: str) -> None:
    arrays, coords, attrs = _write_args(system)
    target = {"arrays": arrays, "coords": coords, "attrs": attrs}[where]
    val = np.array(target[key], dtype=np.float64)
    val.flat[0] = np.nan
    target[key] = val if where != "attrs" else float("nan")
    with pytest.raises(ValueError, match=rf"'{key}'.*NaN/inf"):
        write_pde(tmp_path / "bad.h5", system, arrays, coords, attrs)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_unknown_keys(tmp_path: Path) -> None:
    arrays, coords, attrs = _write_args("burgers")
    with pytest.raises(ValueError, match=r"burgers arrays must have the keys \['u'\]; unknown keys \['a'\]"):
        write_pde(tmp_path / "bad.h5", "burgers", {**arrays, "a": arrays["u"]}, coords, attrs)
    with pytest.raises(ValueError, match=r"coords .*unknown keys \['z'\], missing keys \['t'\]"):
        write_pde(tmp_path / "bad.h5", "burgers", arrays, {"x": coords["x"], "z": coords["t"]}, attrs)
    with pytest.raises(ValueError, match=r"unknown split keys \['valid'\]"):
        write_pde(tmp_path / "bad.h5", "burgers", arrays, coords, attrs, splits={"valid": [0]})
    with pytest.raises(ValueError, match=r"split 'test' must hold integer indices in \[0, 2\)"):
        write_pde(tmp_path / "bad.h5", "burgers", arrays, coords, attrs, splits={"test": [5]})
    with pytest.raises(ValueError, match="write_pde: unknown PDE system 'heat'"):
        write_pde(tmp_path / "bad.h5", "heat", arrays, coords, attrs)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_nonpositive_viscosity_and_permeability(tmp_path: Path) -> None:
    arrays, coords, _ = _write_args("burgers")
    with pytest.raises(ValueError, match=r"viscosity parameter 'nu' must be > 0, got 0"):
        write_pde(tmp_path / "bad.h5", "burgers", arrays, coords, {"nu": 0.0})
    arrays, coords, _ = _write_args("darcy")
    arrays["a"][1, 2, 3] = -1.0
    with pytest.raises(ValueError, match=r"permeability 'a' \(shape \(2, 4, 4\)\) must be > 0"):
        write_pde(tmp_path / "bad.h5", "darcy", arrays, coords)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ solvers


def test_unknown_setting_key() -> None:
    with pytest.raises(ValueError, match=r"burgers: unknown settings \['viscosity'\]"):
        get_pde_system("burgers").simulate(1, 0, viscosity=0.1)


@pytest.mark.parametrize("nu", [0.0, -0.1, math.nan])
def test_burgers_nonpositive_viscosity(nu: float) -> None:
    with pytest.raises(ValueError, match="viscosity nu must be > 0"):
        burgers.simulate(1, 0, nx=16, nt=3, nu=nu)
    with pytest.raises(ValueError, match="viscosity nu must be > 0"):
        burgers.BurgersSpectral(16, nu)


@pytest.mark.parametrize("cfl", [1.5, 0.0, -0.5, math.inf])
def test_burgers_cfl_violates_bound(cfl: float) -> None:
    msg = rf"setting cfl={re.escape(str(cfl))} violates the stability bound 0 < cfl <= 1\.35"
    with pytest.raises(ValueError, match=msg):
        burgers.simulate(1, 0, nx=16, nt=3, cfl=cfl)
    u0 = np.sin(2 * np.pi * np.arange(16) / 16)[None]
    with pytest.raises(ValueError, match=msg):
        burgers.BurgersSpectral(16, 0.1).solve(u0, np.linspace(0, 0.1, 3), cfl=cfl)


def test_burgers_cfl_at_bound_runs() -> None:
    out = burgers.simulate(1, 0, nx=16, nt=3, t_final=0.1, cfl=burgers.CFL_MAX)
    assert np.isfinite(out["u"]).all()


def test_burgers_forced_dt_above_cfl_limit() -> None:
    with pytest.raises(
        ValueError, match=r"forced setting dt=5\.000e-01 violates the advective CFL limit dt <= cfl\*dx/max\|u\|"
    ):
        burgers.simulate(1, 0, nx=16, nt=3, dt=0.5)


@pytest.mark.parametrize("dt", [0.0, -1e-3, math.nan])
def test_burgers_nonpositive_dt(dt: float) -> None:
    with pytest.raises(ValueError, match="setting dt must be a finite step > 0"):
        burgers.simulate(1, 0, nx=16, nt=3, dt=dt)


def test_burgers_bad_sizes_and_state() -> None:
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        burgers.simulate(0, 0, nx=16, nt=3)
    with pytest.raises(ValueError, match="need nx >= 4 and nt >= 3, got nx=-4"):
        burgers.simulate(1, 0, nx=-4, nt=3)
    with pytest.raises(ValueError, match="upsample must be an odd positive integer, got 0"):
        burgers.simulate(1, 0, nx=16, nt=3, upsample=0)
    with pytest.raises(ValueError, match="nx must be an integer >= 4, got 2"):
        burgers.BurgersSpectral(2, 0.1)
    solver = burgers.BurgersSpectral(8, 0.1)
    with pytest.raises(ValueError, match=r"u0 must have shape \[n, 8\], got \(1, 7\)"):
        solver.solve(np.zeros((1, 7)), np.linspace(0, 0.1, 3))
    with pytest.raises(ValueError, match="u0 contains NaN or inf"):
        solver.solve(np.full((1, 8), np.nan), np.linspace(0, 0.1, 3))
    with pytest.raises(ValueError, match="output times t must be a finite, strictly increasing"):
        solver.solve(np.zeros((1, 8)), np.array([0.0, 0.2, 0.1]))


def test_advection_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        advection.simulate(0, 0)
    with pytest.raises(ValueError, match="need nx >= 4 and nt >= 3, got nx=0, nt=40"):
        advection.simulate(1, 0, nx=0)
    with pytest.raises(ValueError, match="t_final must be finite and > 0, got nan"):
        advection.simulate(1, 0, t_final=math.nan)
    with pytest.raises(ValueError, match="need k_max >= 1 and n_modes >= 1"):
        advection.simulate(1, 0, k_max=0)
    with pytest.raises(ValueError, match="beta must be finite"):
        advection.simulate(1, 0, beta=math.inf)


@pytest.mark.parametrize(("name", "value"), [("a_low", 0.0), ("a_high", -1.0), ("a_low", math.nan)])
def test_darcy_nonpositive_permeability_setting(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"permeability setting {name} must be finite and > 0, got {name}={value}"):
        darcy.simulate(1, 0, n_grid=8, **{name: value})


def test_darcy_bad_field_sizes_and_source() -> None:
    with pytest.raises(ValueError, match="need n >= 1 and n_grid >= 3, got n=1, n_grid=2"):
        darcy.simulate(1, 0, n_grid=2)
    with pytest.raises(ValueError, match="need n >= 1 and n_grid >= 3, got n=0"):
        darcy.simulate(0, 0, n_grid=8)
    with pytest.raises(ValueError, match="source setting f must be finite"):
        darcy.simulate(1, 0, n_grid=8, f=math.inf)
    a = np.ones((2, 4, 4))
    a[1, 2, 3] = 0.0
    with pytest.raises(
        ValueError, match=r"permeability a must be > 0 everywhere \(min 0 at \[sample, i, j\] = \[1, 2, 3\]"
    ):
        darcy.solve_darcy(a)
    a[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"permeability a \(shape \(2, 4, 4\)\) contains 1 NaN or inf"):
        darcy.solve_darcy(a)
    with pytest.raises(ValueError, match=r"permeability must have shape \[N, n, n\]"):
        darcy.solve_darcy(np.ones((4, 4)))


@pytest.mark.parametrize("cfl", [0.6, 1.5, 0.0, math.nan])
def test_shallow_water_cfl_violates_bound(cfl: float) -> None:
    msg = rf"setting cfl={re.escape(str(cfl))} violates the stability bound 0 < cfl <= 0\.5"
    with pytest.raises(ValueError, match=msg):
        shallow_water.simulate(1, 0, nx=8, ny=8, nt=3, cfl=cfl)


@pytest.mark.parametrize("g", [0.0, -9.81, math.nan])
def test_shallow_water_nonpositive_gravity(g: float) -> None:
    with pytest.raises(ValueError, match=rf"gravity setting g must be finite and > 0, got g={g}"):
        shallow_water.ShallowWater2D(8, 8, g=g)


@pytest.mark.parametrize(
    ("setting", "value", "msg"),
    [
        ("h_in_range", (0.0, 1.0), "h_in_range: water depths must be > 0"),
        ("h_out_range", (-1.0, 1.0), "h_out_range: water depths must be > 0"),
        ("h_in_range", (2.0, 1.0), "h_in_range must be finite with low <= high"),
        ("h_out_range", (1.0, math.inf), "h_out_range must be finite with low <= high"),
        ("radius_range", (-0.1, 0.5), "radius_range must be >= 0"),
        ("radius_range", 0.5, r"radius_range must be a \(low, high\) pair"),
    ],
)
def test_shallow_water_bad_dam_break_settings(setting: str, value: object, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        shallow_water.simulate(1, 0, nx=8, ny=8, nt=3, **{setting: value})


def test_shallow_water_bad_sizes_and_state() -> None:
    with pytest.raises(ValueError, match="grid settings nx, ny must be >= 3, got nx=2, ny=8"):
        shallow_water.simulate(1, 0, nx=2, ny=8, nt=3)
    with pytest.raises(ValueError, match="need n >= 1, nt >= 2, t_final > 0; got n=0"):
        shallow_water.simulate(0, 0, nx=8, ny=8, nt=3)
    with pytest.raises(ValueError, match="t_final=-1.0"):
        shallow_water.simulate(1, 0, nx=8, ny=8, nt=3, t_final=-1.0)
    with pytest.raises(ValueError, match="domain setting length must be finite and > 0, got length=0"):
        shallow_water.ShallowWater2D(8, 8, length=0.0)
    solver = shallow_water.ShallowWater2D(4, 3)
    q0 = np.zeros((1, 3, 4, 3))
    q0[:, 0] = 1.0
    t = np.linspace(0.0, 0.1, 3)
    with pytest.raises(ValueError, match=r"q0 must have shape \[N, 3, 4, 3\], got \(1, 3, 3, 4\)"):
        solver.solve(np.zeros((1, 3, 3, 4)), t)
    bad = q0.copy()
    bad[0, 0, 1, 1] = 0.0
    with pytest.raises(ValueError, match=r"water depth h must be > 0 everywhere \(q0\[:, 0\] min is 0\)"):
        solver.solve(bad, t)
    bad[0, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="initial state q0 contains NaN or inf"):
        solver.solve(bad, t)
    with pytest.raises(ValueError, match="output times t must be a finite, strictly increasing"):
        solver.solve(q0, t[::-1])
