"""The Well HDF5 format: round trip through our writer, hand-written files in the documented layout
(PolymathicAI/the_well docs/data_format.md), the attributes the format defines, and malformed files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from physdiff.data.the_well import TheWellFormatError, load_the_well, write_the_well

N, T, X, Y = 3, 5, 8, 6


def _coords() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # float32-representable values, so the float32 file round-trips exactly
    t = 0.25 * np.arange(T)
    x = (np.arange(X) + 0.5) / X
    y = np.arange(Y) / 8.0
    return t, x, y


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "h": rng.standard_normal((N, T, X, Y)).astype(np.float32),
        "velocity": rng.standard_normal((N, T, X, Y, 2)).astype(np.float32),
    }


def _write(path: Path, **kw) -> dict[str, np.ndarray]:
    arrays = kw.pop("fields", None) or _arrays()
    t, x, y = _coords()
    kw.setdefault("periodic", (True, False))
    kw.setdefault("scalars", {"g": 9.81, "nu": 0.01})
    write_the_well(path, arrays, t=t, x=x, y=y, dataset_name="tiny_swe", **kw)
    return arrays


def _mutate(path: Path, fn: Callable[[h5py.File], None]) -> None:
    with h5py.File(path, "a") as f:
        fn(f)


def _raises(path: Path, *keys: str, **kw) -> TheWellFormatError:
    with pytest.raises(TheWellFormatError) as ei:
        load_the_well(path, **kw)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for key in keys:
        assert key in msg, (key, msg)
    return ei.value


# ------------------------------------------------------------------------------------------------
# round trip
# ------------------------------------------------------------------------------------------------


def test_roundtrip_arrays_channels_coords_flags_parameters(tmp_path: Path) -> None:
    path = tmp_path / "tiny.hdf5"
    arrays = _write(path)
    data = load_the_well(path)
    t, x, y = _coords()
    assert data.fields.dtype == np.float64 and data.fields.shape == (N, T, 3, X, Y)
    assert data.channels == ("h", "velocity_x", "velocity_y")
    np.testing.assert_array_equal(data.fields[:, :, 0], arrays["h"])
    np.testing.assert_array_equal(data.fields[:, :, 1], arrays["velocity"][..., 0])
    np.testing.assert_array_equal(data.fields[:, :, 2], arrays["velocity"][..., 1])
    np.testing.assert_array_equal(data.coords["t"], t)
    np.testing.assert_array_equal(data.coords["x"], x)
    np.testing.assert_array_equal(data.coords["y"], y)
    assert set(data.coords) == {"t", "x", "y"}
    assert data.periodic == (True, False)
    assert data.boundary == (("PERIODIC", "PERIODIC"), ("WALL", "WALL"))
    assert data.parameters == {"g": 9.81, "nu": 0.01}  # scalars are written in float64
    assert data.name == "tiny_swe" and data.source == str(path)
    assert data.spatial_dims == ("x", "y") and data.grid_type == "cartesian"
    assert data.messages == []
    assert data.dt == pytest.approx(0.25) and data.dx == pytest.approx(1 / 8) and data.dy == pytest.approx(1 / 8)
    assert data.n_samples == N and data.n_frames == T and data.channel_index("velocity_y") == 2

    other = tmp_path / "open.hdf5"
    _write(other, periodic=(False, True), nonperiodic_bc="OPEN", scalars=None)
    d2 = load_the_well(other)
    assert d2.periodic == (False, True) and d2.boundary == (("OPEN", "OPEN"), ("PERIODIC", "PERIODIC"))
    assert d2.parameters == {}


def test_writer_uses_the_documented_names(tmp_path: Path) -> None:
    path = tmp_path / "tiny.hdf5"
    _write(path, scalars={"g": 9.81, "alpha": [1.0, 2.0, 3.0]})
    with h5py.File(path, "r") as f:
        assert f.attrs["dataset_name"] == "tiny_swe" and f.attrs["grid_type"] == "cartesian"
        assert f.attrs["n_spatial_dims"] == 2 and f.attrs["n_trajectories"] == N
        assert list(f.attrs["simulation_parameters"]) == ["g"] and f.attrs["g"] == pytest.approx(9.81)
        assert set(f.keys()) == {"dimensions", "boundary_conditions", "scalars", "t0_fields", "t1_fields", "t2_fields"}
        dims = f["dimensions"]
        assert list(dims.attrs["spatial_dims"]) == ["x", "y"]
        assert dims["time"].shape == (T,) and dims["x"].shape == (X,) and dims["y"].shape == (Y,)
        assert dims["time"].dtype == np.float32
        for key in ("time", "x", "y"):
            assert dims[key].attrs["sample_varying"] == np.False_
        assert dims["time"].attrs["time_varying"] and not dims["x"].attrs["time_varying"]
        bcs = f["boundary_conditions"]
        assert set(bcs.keys()) == {"x_periodic", "y_wall"}
        xb = bcs["x_periodic"]
        assert xb.attrs["bc_type"] == "PERIODIC" and list(xb.attrs["associated_dims"]) == ["x"]
        assert len(xb.attrs["associated_fields"]) == 0
        assert not xb.attrs["sample_varying"] and not xb.attrs["time_varying"]
        np.testing.assert_array_equal(xb["mask"][:], [True] + [False] * (X - 2) + [True])
        assert xb["values"].shape == (2,)
        assert bcs["y_wall"].attrs["bc_type"] == "WALL" and bcs["y_wall"]["mask"].shape == (Y,)
        sc = f["scalars"]
        assert list(sc.attrs["field_names"]) == ["g", "alpha"]
        assert sc["g"].shape == () and not sc["g"].attrs["sample_varying"] and not sc["g"].attrs["time_varying"]
        assert sc["alpha"].shape == (N,) and sc["alpha"].attrs["sample_varying"]
        assert list(f["t0_fields"].attrs["field_names"]) == ["h"]
        assert list(f["t1_fields"].attrs["field_names"]) == ["velocity"]
        assert len(f["t2_fields"].attrs["field_names"]) == 0
        h = f["t0_fields/h"]
        assert h.shape == (N, T, X, Y) and h.dtype == np.float32
        assert list(h.attrs["dim_varying"]) == [True, True]
        assert h.attrs["sample_varying"] and h.attrs["time_varying"]
        assert f["t1_fields/velocity"].shape == (N, T, X, Y, 2)
    data = load_the_well(path)
    np.testing.assert_array_equal(data.parameters["alpha"], [1.0, 2.0, 3.0])
    assert any("alpha" in m and "differs between trajectories" in m for m in data.messages)


def test_tensor_field_components(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = _arrays()
    sigma = rng.standard_normal((N, T, X, Y, 2, 2)).astype(np.float32)
    sigma = sigma + np.swapaxes(sigma, -1, -2)
    arrays["sigma"] = sigma
    path = tmp_path / "tensor.hdf5"
    _write(path, fields=arrays)
    with h5py.File(path, "r") as f:
        assert f["t2_fields/sigma"].shape == (N, T, X, Y, 2, 2)
        assert f["t2_fields/sigma"].attrs["symmetric"] and not f["t2_fields/sigma"].attrs["antisymmetric"]
    data = load_the_well(path)
    assert data.channels[3:] == ("sigma_xx", "sigma_xy", "sigma_yx", "sigma_yy")
    for k, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        np.testing.assert_array_equal(data.fields[:, :, 3 + k], sigma[..., a, b])


# ------------------------------------------------------------------------------------------------
# options
# ------------------------------------------------------------------------------------------------


def test_fields_selection(tmp_path: Path) -> None:
    path = tmp_path / "tiny.hdf5"
    arrays = _write(path)
    vel = load_the_well(path, fields=["velocity"])
    assert vel.channels == ("velocity_x", "velocity_y")
    np.testing.assert_array_equal(vel.fields, np.moveaxis(arrays["velocity"], -1, 2))
    # component names select single channels; the file's channel order is kept
    mixed = load_the_well(path, fields=["velocity_y", "h"])
    assert mixed.channels == ("h", "velocity_y")
    np.testing.assert_array_equal(mixed.fields[:, :, 1], arrays["velocity"][..., 1])
    err = _raises(path, "rho", "t0_fields/h", "t1_fields/velocity", "velocity_x", fields=["h", "rho"])
    assert "available" in str(err)
    with pytest.raises(ValueError, match="at least one"):
        load_the_well(path, fields=[])


def test_downsampling_and_max_samples(tmp_path: Path) -> None:
    path = tmp_path / "tiny.hdf5"
    arrays = _write(path)
    t, x, y = _coords()
    d = load_the_well(path, downsample_x=2, downsample_t=2, max_samples=2)
    assert d.fields.shape == (2, 3, 3, 4, 3)
    np.testing.assert_array_equal(d.fields[:, :, 0], arrays["h"][:2, ::2, ::2, ::2])
    np.testing.assert_array_equal(d.fields[:, :, 2], arrays["velocity"][:2, ::2, ::2, ::2, 1])
    np.testing.assert_array_equal(d.coords["t"], t[::2])
    np.testing.assert_array_equal(d.coords["x"], x[::2])
    np.testing.assert_array_equal(d.coords["y"], y[::2])
    assert d.dt == pytest.approx(0.5) and d.dx == pytest.approx(0.25)
    d3 = load_the_well(path, downsample_x=3)  # 8 -> 3 points, 6 -> 2 points
    assert d3.fields.shape == (N, T, 3, 3, 2)
    np.testing.assert_array_equal(d3.fields[:, :, 0], arrays["h"][:, :, ::3, ::3])
    many = load_the_well(path, max_samples=10)
    assert many.n_samples == N and any("max_samples=10" in m for m in many.messages)
    for kw in ({"max_samples": 0}, {"downsample_x": 0}, {"downsample_t": 1.5}):
        with pytest.raises(ValueError):
            load_the_well(path, **kw)


def test_not_time_varying_field_is_broadcast(tmp_path: Path) -> None:
    path = tmp_path / "const.hdf5"
    rho = np.random.default_rng(2).standard_normal((N, X, Y)).astype(np.float32)
    arrays = _write(path, constant_fields={"rho": rho})
    with h5py.File(path, "r") as f:
        assert f["t0_fields/rho"].shape == (N, X, Y) and not f["t0_fields/rho"].attrs["time_varying"]
    data = load_the_well(path)
    assert data.channels == ("h", "rho", "velocity_x", "velocity_y")
    np.testing.assert_array_equal(data.fields[:, :, 0], arrays["h"])
    for k in range(T):
        np.testing.assert_array_equal(data.fields[:, k, 1], rho)
    assert any("t0_fields/rho" in m and "not time-varying" in m for m in data.messages)
    small = load_the_well(path, fields=["rho"], downsample_t=2, downsample_x=2)
    assert small.fields.shape == (N, 3, 1, 4, 3)
    np.testing.assert_array_equal(small.fields[:, 2, 0], rho[:, ::2, ::2])


# ------------------------------------------------------------------------------------------------
# files written by hand in the documented layout (not by our writer)
# ------------------------------------------------------------------------------------------------


def _vlen(names: list[str]) -> np.ndarray:
    return np.array(names, dtype=h5py.string_dtype())


def test_hand_written_documented_layout(tmp_path: Path) -> None:
    """The example of docs/data_format.md: B x T x W x H, FieldA (all varying), FieldB (constant in
    time, [B, W, H]), FieldC (no y dependence, [B, T, W]), a field constant over trajectories and time
    ([W, H]), a vector field, an empty t2 group, constant and time-varying scalars."""
    B, Tn, W, H = 2, 4, 5, 3
    rng = np.random.default_rng(3)
    a = rng.standard_normal((B, Tn, W, H)).astype(np.float32)
    fb = rng.standard_normal((B, W, H)).astype(np.float32)
    fc = rng.standard_normal((B, Tn, W)).astype(np.float32)
    topo = rng.standard_normal((W, H)).astype(np.float32)
    va = rng.standard_normal((B, Tn, W, H, 2)).astype(np.float32)
    time = np.array([1.0, 1.5, 2.0, 2.5], dtype=np.float32)
    xs = np.linspace(0.0, 1.0, W, dtype=np.float32)
    ys = np.linspace(0.0, 2.0, H, dtype=np.float32)
    path = tmp_path / "example.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["simulation_parameters"] = ["ParamA", "ParamB"]
        f.attrs["ParamA"] = 1.0
        f.attrs["ParamB"] = 3.5  # only a root attribute, not in /scalars
        f.attrs["dataset_name"] = "ExampleDSet"
        f.attrs["grid_type"] = "cartesian"
        f.attrs["n_spatial_dims"] = 2
        f.attrs["n_trajectories"] = B
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x", "y"]
        ds = dims.create_dataset("time", data=time)
        ds.attrs["sample_varying"] = False
        for name, c in (("x", xs), ("y", ys)):
            ds = dims.create_dataset(name, data=c)
            ds.attrs["sample_varying"] = False
            ds.attrs["time_varying"] = False
        bcs = f.create_group("boundary_conditions")
        for gname, dim, bc_type, size in (("X_boundary", "x", "periodic", W), ("y_wall", "y", "WALL", H)):
            g = bcs.create_group(gname)
            g.attrs["associated_dims"] = [dim]
            g.attrs["associated_fields"] = _vlen([])
            g.attrs["bc_type"] = bc_type
            g.attrs["sample_varying"] = False
            g.attrs["time_varying"] = False
            mask = np.zeros(size, dtype=bool)
            mask[[0, -1]] = True
            g.create_dataset("mask", data=mask)
            g.create_dataset("values", data=np.zeros(2, dtype=np.float32))
        sc = f.create_group("scalars")
        sc.attrs["field_names"] = np.array([b"ParamA", b"OtherScalar"], dtype="S11")  # fixed-length bytes
        ds = sc.create_dataset("ParamA", data=np.array([1.0], dtype=np.float32))
        ds.attrs["sample_varying"] = False
        ds.attrs["time_varying"] = False
        ds = sc.create_dataset("OtherScalar", data=np.arange(Tn, dtype=np.float32))
        ds.attrs["sample_varying"] = False
        ds.attrs["time_varying"] = True
        t0 = f.create_group("t0_fields")
        t0.attrs["field_names"] = ["FieldA", "FieldB", "FieldC", "Topography"]
        for name, arr, dv, sv, tv in (
            ("FieldA", a, [True, True], True, True),
            ("FieldB", fb, [True, True], True, False),
            ("FieldC", fc, [True, False], True, True),
            ("Topography", topo, [True, True], False, False),
        ):
            ds = t0.create_dataset(name, data=arr)
            ds.attrs["dim_varying"] = np.array(dv)
            ds.attrs["sample_varying"] = sv
            ds.attrs["time_varying"] = tv
        t1 = f.create_group("t1_fields")
        t1.attrs["field_names"] = ["VFieldA"]
        ds = t1.create_dataset("VFieldA", data=va)
        ds.attrs["dim_varying"] = np.array([True, True])
        ds.attrs["sample_varying"] = True
        ds.attrs["time_varying"] = True
        t2 = f.create_group("t2_fields")
        t2.attrs["field_names"] = _vlen([])

    data = load_the_well(path)
    assert data.name == "ExampleDSet"
    assert data.channels == ("FieldA", "FieldB", "FieldC", "Topography", "VFieldA_x", "VFieldA_y")
    assert data.fields.shape == (B, Tn, 6, W, H)
    np.testing.assert_array_equal(data.fields[:, :, 0], a)
    np.testing.assert_array_equal(data.fields[:, :, 1], np.broadcast_to(fb[:, None], (B, Tn, W, H)))
    np.testing.assert_array_equal(data.fields[:, :, 2], np.broadcast_to(fc[..., None], (B, Tn, W, H)))
    np.testing.assert_array_equal(data.fields[:, :, 3], np.broadcast_to(topo, (B, Tn, W, H)))
    np.testing.assert_array_equal(data.fields[:, :, 4], va[..., 0])
    np.testing.assert_array_equal(data.fields[:, :, 5], va[..., 1])
    np.testing.assert_array_equal(data.coords["t"], time)
    np.testing.assert_array_equal(data.coords["x"], xs)
    np.testing.assert_array_equal(data.coords["y"], ys)
    assert data.periodic == (True, False)  # lower-case bc_type, group name not after the type
    assert data.boundary == (("PERIODIC", "PERIODIC"), ("WALL", "WALL"))
    assert data.parameters == {"ParamA": 1.0, "ParamB": 3.5}
    msgs = "\n".join(data.messages)
    assert "t0_fields/FieldB is not time-varying" in msgs
    assert "t0_fields/Topography is not sample-varying" in msgs and "t0_fields/Topography is not time-varying" in msgs
    assert "t0_fields/FieldC does not vary along spatial axis 1" in msgs
    assert "scalars/OtherScalar is time-varying" in msgs and "skipped" in msgs
    assert "ParamB" in msgs and "root attribute" in msgs

    sub = load_the_well(path, fields=["FieldC", "Topography"], max_samples=1, downsample_x=2, downsample_t=3)
    assert sub.fields.shape == (1, 2, 2, 3, 2)
    np.testing.assert_array_equal(sub.fields[0, :, 0], np.broadcast_to(fc[0, ::3, ::2, None], (2, 3, 2)))
    np.testing.assert_array_equal(sub.fields[0, 1, 1], topo[::2, ::2])


def test_hand_written_planetswe_like_layout(tmp_path: Path) -> None:
    """planetswe's conventions: spatial_dims ['theta', 'phi'], grid_type 'equiangular', boundary groups
    phi_periodic (PERIODIC) / theta_open (OPEN), no scalars, components named after the dims."""
    Tn, NT, NP = 3, 4, 6
    rng = np.random.default_rng(4)
    height = rng.standard_normal((1, Tn, NT, NP)).astype(np.float32)
    vel = rng.standard_normal((1, Tn, NT, NP, 2)).astype(np.float32)
    theta = np.linspace(0.1, 3.0, NT, dtype=np.float32)
    phi = np.linspace(0.0, 2 * np.pi, NP, endpoint=False).astype(np.float32)
    path = tmp_path / "planetswe_IC00_0.h5"
    with h5py.File(path, "w") as f:
        f.attrs["dataset_name"] = "planetswe"
        f.attrs["n_spatial_dims"] = 2
        f.attrs["simulation_parameters"] = _vlen([])
        f.attrs["grid_type"] = "equiangular"
        f.attrs["n_trajectories"] = 1
        for gname in ("t0_fields", "t1_fields", "t2_fields", "scalars"):
            f.create_group(gname).attrs["field_names"] = _vlen([])
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["theta", "phi"]
        dims.create_dataset("time", data=np.arange(Tn, dtype=np.float32)).attrs["sample_varying"] = False
        for name, c in (("phi", phi), ("theta", theta)):
            ds = dims.create_dataset(name, data=c)
            ds.attrs["time_varying"] = False
            ds.attrs["sample_varying"] = False
        f["t0_fields"].attrs["field_names"] = ["height"]
        ds = f["t0_fields"].create_dataset("height", data=height)
        ds.attrs.update({"time_varying": True, "sample_varying": True, "dim_varying": [True, True]})
        f["t1_fields"].attrs["field_names"] = ["velocity"]
        ds = f["t1_fields"].create_dataset("velocity", data=vel)
        ds.attrs.update({"time_varying": True, "sample_varying": True, "dim_varying": [True, True]})
        bcs = f.create_group("boundary_conditions")
        for gname, dim, bc_type, size in (("phi_periodic", "phi", "PERIODIC", NP), ("theta_open", "theta", "OPEN", NT)):
            g = bcs.create_group(gname)
            g.attrs.update({"associated_dims": [dim], "bc_type": bc_type, "sample_varying": False})
            g.attrs["associated_fields"] = _vlen([])
            g.attrs["time_varying"] = False
            mask = np.zeros(size, dtype=bool)
            mask[0] = mask[-1] = True
            g.create_dataset("mask", data=mask)
    data = load_the_well(path)
    assert data.spatial_dims == ("theta", "phi") and data.grid_type == "equiangular"
    assert data.channels == ("height", "velocity_theta", "velocity_phi")
    np.testing.assert_array_equal(data.coords["x"], theta)
    np.testing.assert_array_equal(data.coords["y"], phi)
    assert data.periodic == (False, True)
    assert data.boundary == (("OPEN", "OPEN"), ("PERIODIC", "PERIODIC"))
    assert data.parameters == {}
    np.testing.assert_array_equal(data.fields[0, :, 2], vel[0, ..., 1])
    msgs = "\n".join(data.messages)
    assert "equiangular" in msgs and "'theta'" in msgs


def test_sample_varying_time(tmp_path: Path) -> None:
    path = tmp_path / "tiny.hdf5"
    _write(path)
    t, _, _ = _coords()
    per_traj = np.stack([t + 10.0 * i for i in range(N)]).astype(np.float32)

    def set_time(times: np.ndarray) -> Callable[[h5py.File], None]:
        def fn(f: h5py.File) -> None:
            del f["dimensions/time"]
            ds = f["dimensions"].create_dataset("time", data=times)
            ds.attrs["sample_varying"] = True
            ds.attrs["time_varying"] = True

        return fn

    _mutate(path, set_time(per_traj))
    data = load_the_well(path, max_samples=2, downsample_t=2)
    np.testing.assert_array_equal(data.coords["t"], t[::2])
    np.testing.assert_array_equal(data.coords["t_per_trajectory"], per_traj[:2, ::2])
    assert any("sample-varying" in m and "different times" in m for m in data.messages)

    bad_step = per_traj.copy()
    bad_step[1] = 0.5 * np.arange(T)
    _mutate(path, set_time(bad_step))
    _raises(path, "dimensions/time", "trajectory 1")
    uneven = per_traj.copy()
    uneven[0, -1] += 0.1
    _mutate(path, set_time(uneven))
    _raises(path, "dimensions/time", "uniformly")
    _mutate(path, set_time(per_traj[:, None]))  # wrong rank
    _raises(path, "dimensions/time")


def test_sample_varying_space_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "tiny.hdf5"
    _write(path)
    _, x, _ = _coords()

    def set_x(xs: np.ndarray, sv: bool = True, tv: bool = False) -> Callable[[h5py.File], None]:
        def fn(f: h5py.File) -> None:
            del f["dimensions/x"]
            ds = f["dimensions"].create_dataset("x", data=xs)
            ds.attrs["sample_varying"] = sv
            ds.attrs["time_varying"] = tv

        return fn

    _mutate(path, set_x(np.tile(x, (N, 1))))
    data = load_the_well(path)
    np.testing.assert_array_equal(data.coords["x"], x)
    assert any("dimensions/x is sample-varying" in m for m in data.messages)
    _mutate(path, set_x(np.stack([x + i for i in range(N)])))
    _raises(path, "dimensions/x", "differ")
    _mutate(path, set_x(x, sv=False, tv=True))
    _raises(path, "dimensions/x", "time-varying")


def test_boundary_conditions_missing_or_partial(tmp_path: Path) -> None:
    path = tmp_path / "tiny.hdf5"
    _write(path, periodic=(True, True))

    def half_periodic(f: h5py.File) -> None:  # mask marks only the low edge of x
        m = f["boundary_conditions/x_periodic/mask"]
        m[-1] = False

    _mutate(path, half_periodic)
    d = load_the_well(path)
    assert d.periodic == (False, True) and d.boundary[0] == ("PERIODIC", "OPEN")
    assert any("'x' has a PERIODIC condition" in m for m in d.messages)
    _mutate(path, lambda f: f["boundary_conditions/y_periodic"].attrs.__setitem__("associated_dims", ["z"]))
    _raises(path, "boundary_conditions/y_periodic@associated_dims")
    _mutate(path, lambda f: f.__delitem__("boundary_conditions"))
    d = load_the_well(path)
    assert d.periodic == (False, False)
    assert any("no group 'boundary_conditions'" in m for m in d.messages)


# ------------------------------------------------------------------------------------------------
# malformed files
# ------------------------------------------------------------------------------------------------


def _replace(key: str, data: np.ndarray, attrs: dict | None = None) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        old = dict(f[key].attrs) if attrs is None else attrs
        del f[key]
        ds = f.create_dataset(key, data=data)
        ds.attrs.update(old)

    return fn


def _with_nan(f: h5py.File) -> None:
    f["t1_fields/velocity"][1, 2, 3, 4, 0] = np.nan


def _with_inf(f: h5py.File) -> None:
    f["t0_fields/h"][0, 0, 0, 0] = np.inf


MALFORMED: list[tuple[str, Callable[[h5py.File], None], tuple[str, ...]]] = [
    ("1-D", lambda f: f.attrs.__setitem__("n_spatial_dims", 1), ("n_spatial_dims", "2-D")),
    ("3-D", lambda f: f.attrs.__setitem__("n_spatial_dims", 3), ("n_spatial_dims", "3")),
    ("no n_spatial_dims", lambda f: f.attrs.__delitem__("n_spatial_dims"), ("n_spatial_dims", "missing")),
    ("no n_trajectories", lambda f: f.attrs.__delitem__("n_trajectories"), ("n_trajectories",)),
    ("no dimensions", lambda f: f.__delitem__("dimensions"), ("dimensions", "missing group")),
    ("no time", lambda f: f.__delitem__("dimensions/time"), ("dimensions/time", "missing dataset")),
    ("no spatial_dims", lambda f: f["dimensions"].attrs.__delitem__("spatial_dims"), ("dimensions@spatial_dims",)),
    ("no t0_fields", lambda f: f.__delitem__("t0_fields"), ("t0_fields", "missing group")),
    ("no field_names", lambda f: f["t1_fields"].attrs.__delitem__("field_names"), ("t1_fields@field_names",)),
    ("listed field absent", lambda f: f.__delitem__("t0_fields/h"), ("t0_fields/h", "missing dataset")),
    ("wrong Y", _replace("t0_fields/h", np.zeros((N, T, X, Y - 1), np.float32)), ("t0_fields/h", "shape")),
    ("wrong T", _replace("t0_fields/h", np.zeros((N, T + 1, X, Y), np.float32)), ("t0_fields/h", "n_steps")),
    ("wrong N", _replace("t0_fields/h", np.zeros((N - 1, T, X, Y), np.float32)), ("t0_fields/h", "n_trajectories")),
    ("vector without D", _replace("t1_fields/velocity", np.zeros((N, T, X, Y), np.float32)), ("t1_fields/velocity",)),
    ("vector D=3", _replace("t1_fields/velocity", np.zeros((N, T, X, Y, 3), np.float32)), ("t1_fields/velocity",)),
    ("NaN", _with_nan, ("t1_fields/velocity", "NaN")),
    ("inf", _with_inf, ("t0_fields/h", "NaN/inf")),
    ("NaN time", _replace("dimensions/time", np.array([0, 1, np.nan, 3, 4], np.float32)), ("dimensions/time",)),
    ("x length", _replace("dimensions/x", np.zeros(X + 1, np.float32)), ("t0_fields/h", "shape")),
    ("text field", _replace("t0_fields/h", np.full((N, T, X, Y), "a", dtype="S1")), ("t0_fields/h", "dtype")),
    ("NaN scalar", _replace("scalars/g", np.array(np.nan)), ("scalars/g", "NaN")),
    (
        "bad dim_varying",
        lambda f: f["t0_fields/h"].attrs.__setitem__("dim_varying", [True]),
        ("t0_fields/h@dim_varying",),
    ),
    ("no bc_type", lambda f: f["boundary_conditions/x_periodic"].attrs.__delitem__("bc_type"), ("x_periodic@bc_type",)),
    ("no mask", lambda f: f.__delitem__("boundary_conditions/y_wall/mask"), ("boundary_conditions/y_wall/mask",)),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_files_raise_naming_file_and_key(tmp_path: Path, case) -> None:
    _, mutate, keys = case
    path = tmp_path / "bad.hdf5"
    _write(path)
    _mutate(path, mutate)
    _raises(path, *keys)


def test_not_hdf5_and_truncated(tmp_path: Path) -> None:
    text = tmp_path / "notes.hdf5"
    text.write_text("this is not an HDF5 file\n")
    _raises(text, "not a readable HDF5 file")
    good = tmp_path / "good.hdf5"
    _write(good)
    raw = good.read_bytes()
    for frac in (0.3, 0.9):
        cut = tmp_path / f"cut{frac}.hdf5"
        cut.write_bytes(raw[: int(len(raw) * frac)])
        _raises(cut)
    with pytest.raises(FileNotFoundError):
        load_the_well(tmp_path / "missing.hdf5")


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    t, x, y = _coords()
    arrays = _arrays()
    path = tmp_path / "w.hdf5"
    bad_nan = dict(arrays, h=np.where(arrays["h"] > 2, np.nan, arrays["h"]))
    with pytest.raises(ValueError, match="NaN"):
        write_the_well(path, bad_nan, t=t, x=x, y=y)
    with pytest.raises(ValueError, match="shape"):
        write_the_well(path, {"h": arrays["h"][:, :, :-1]}, t=t, x=x, y=y)
    with pytest.raises(ValueError, match="trajectories"):
        write_the_well(path, {"h": arrays["h"], "v": arrays["velocity"][:2]}, t=t, x=x, y=y)
    with pytest.raises(ValueError, match="constant step"):
        write_the_well(path, arrays, t=t**2, x=x, y=y)
    with pytest.raises(ValueError, match="ambiguous"):
        write_the_well(path, {"u": arrays["velocity"], "u_x": arrays["h"]}, t=t, x=x, y=y)
    with pytest.raises(ValueError, match="nonperiodic_bc"):
        write_the_well(path, arrays, t=t, x=x, y=y, nonperiodic_bc="SLIP")
    assert not path.exists() and list(tmp_path.iterdir()) == []
