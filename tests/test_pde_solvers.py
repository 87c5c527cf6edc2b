"""PDE solvers against closed forms / manufactured solutions, and the residuals' floors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physdiff.physics import pde_residuals as R
from physdiff.systems import advection, burgers, darcy, shallow_water
from physdiff.systems.pde_registry import PDE_SYSTEMS, get_pde_system

# ---------------------------------------------------------------- advection


def test_advection_is_exact_shift() -> None:
    nx = 64
    out = advection.simulate(3, seed=1, nx=nx, nt=65, t_final=1.0, beta=1.0)
    u = out["u"]
    assert u.shape == (3, 65, nx)
    np.testing.assert_allclose(out["coords"]["x"], (np.arange(nx) + 0.5) / nx)
    # beta * t_n = n / 64: frame n is the initial condition shifted by exactly n cells.
    for n in (1, 7, 64):
        np.testing.assert_allclose(u[:, n], np.roll(u[:, 0], n, axis=-1), atol=1e-12)
    # closed form with another beta, drawn with the same generator calls
    rng = np.random.default_rng(5)
    k, amp, ph = advection.random_sinusoids(rng, 2, 2, 4)
    out = advection.simulate(2, seed=5, nx=32, nt=9, t_final=0.7, beta=0.4)
    x, t = out["coords"]["x"], out["coords"]["t"]
    ref = np.sum(
        amp[:, None, None, :]
        * np.sin(
            2 * np.pi * k[:, None, None, :] * (x[None, None, :, None] - 0.4 * t[None, :, None, None])
            + ph[:, None, None, :]
        ),
        axis=-1,
    )
    np.testing.assert_allclose(out["u"], ref, atol=1e-12)
    assert 1 <= k.min() and k.max() <= 4


# ---------------------------------------------------------------- Burgers


def _cole_hopf(a: float, nu: float, x: np.ndarray, t: np.ndarray, m: int = 2048) -> np.ndarray:
    """Exact solution for u0 = a sin(2 pi x) via u = -2 nu' (log theta)_x, theta_t = nu' theta_xx."""
    nup = nu / np.pi
    xf = np.arange(m) / m
    theta0 = np.exp(a * np.cos(2 * np.pi * xf) / (4 * np.pi * nup))
    th = np.fft.rfft(theta0)
    kk = 2 * np.pi * np.fft.rfftfreq(m, 1 / m)
    idx = np.rint(x * m).astype(int)
    assert np.allclose(xf[idx], x)
    out = []
    for tt in t:
        h = th * np.exp(-nup * kk**2 * tt)
        out.append((-2 * nup * np.fft.irfft(1j * kk * h, n=m) / np.fft.irfft(h, n=m))[idx])
    return np.array(out)


@pytest.mark.parametrize("upsample", [1, 3])
def test_burgers_matches_cole_hopf(upsample: int) -> None:
    nx, nu, a = 64, 0.1, 0.8
    x = (np.arange(nx) + 0.5) / nx
    t = np.linspace(0.0, 1.0, 21)
    ref = _cole_hopf(a, nu, x, t, m=64 * 3 * 32 if upsample == 3 else 2048)
    if upsample == 1:
        u = burgers.BurgersSpectral(nx, nu).solve(a * np.sin(2 * np.pi * x)[None], t)[0]
        assert np.abs(u - ref).max() < 5e-6
    else:
        xf = (np.arange(nx * 3) + 0.5) / (nx * 3)
        u = burgers.BurgersSpectral(nx * 3, nu).solve(a * np.sin(2 * np.pi * xf)[None], t)[0, :, 1::3]
        assert np.abs(u - ref).max() < 5e-8


def test_burgers_simulate_and_errors() -> None:
    out = burgers.simulate(4, seed=0, nx=64, nt=6, t_final=0.5, upsample=3)
    assert out["u"].shape == (4, 6, 64) and np.isfinite(out["u"]).all()
    coarse = burgers.simulate(4, seed=0, nx=64, nt=6, t_final=0.5, upsample=1)["u"]
    assert np.abs(coarse - out["u"]).max() < 1e-4  # refined-grid reference
    with pytest.raises(ValueError, match="nu must be > 0"):
        burgers.simulate(2, 0, nu=0.0)
    with pytest.raises(ValueError, match="CFL"):
        burgers.simulate(2, 0, nx=64, dt=0.05)
    with pytest.raises(ValueError, match="odd"):
        burgers.simulate(2, 0, upsample=2)


# ---------------------------------------------------------------- Darcy


def test_darcy_manufactured_poisson_second_order() -> None:
    errs = []
    for n in (16, 32, 64):
        x = darcy.grid_2d(n)
        X, Y = np.meshgrid(x, x, indexing="ij")
        exact = np.sin(np.pi * X) * np.sin(np.pi * Y)
        u = darcy.solve_darcy(np.full((1, n, n), 2.0), 2.0 * 2 * np.pi**2 * exact[None])
        errs.append(np.abs(u[0] - exact).max())
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(orders - 2.0) < 0.1), orders


def test_darcy_batched_equals_single_and_residual_exact() -> None:
    sim = darcy.simulate(5, seed=3, n_grid=16)
    a, u = sim["a"], sim["u"]
    assert set(np.unique(a)) <= {0.1, 1.0} and 0 < (a == 1.0).mean() < 1
    single = np.concatenate([darcy.solve_darcy(a[i : i + 1]) for i in range(5)])
    chunked = darcy.solve_darcy(a, chunk_unknowns=2 * 16 * 16)
    np.testing.assert_allclose(u, single, atol=1e-13)
    np.testing.assert_allclose(u, chunked, atol=1e-13)
    res = R.darcy_residual(torch.tensor(u), torch.tensor(a), 1 / 16, 1.0)
    assert res.shape == (5, 16, 16) and res.abs().max() < 1e-10
    bad = a.copy()
    bad[0, 3, 3] = 0.0
    with pytest.raises(ValueError, match="> 0"):
        darcy.solve_darcy(bad)


# ---------------------------------------------------------------- shallow water


@pytest.mark.parametrize("order", [1, 2])
def test_shallow_water_mass_conserved_with_walls(order: int) -> None:
    out = shallow_water.simulate(3, seed=2, nx=24, ny=20, nt=6, t_final=1.5, order=order)
    q = out["u"]
    assert q.shape == (3, 6, 3, 24, 20)
    dx = out["coords"]["x"][1] - out["coords"]["x"][0]
    dy = out["coords"]["y"][1] - out["coords"]["y"][0]
    m = shallow_water.total_mass(q, dx, dy)
    assert np.abs(m / m[:, :1] - 1).max() < 1e-13
    assert np.abs(q[:, -1, 1:]).max() > 1e-2  # something moved, and it reached the walls
    assert np.abs(q[:, -1, 0, 0, :] - q[:, 0, 0, 0, :]).max() > 1e-3


def test_lake_at_rest_stays_at_rest() -> None:
    solver = shallow_water.ShallowWater2D(12, 10)
    q0 = np.zeros((2, 3, 12, 10))
    q0[:, 0] = np.array([1.0, 1.7])[:, None, None]
    out = solver.solve(q0, np.linspace(0.0, 2.0, 4))
    assert np.abs(out - q0[:, None]).max() < 1e-14


# ---------------------------------------------------------------- residuals and registry


def test_registry_lookup() -> None:
    assert set(PDE_SYSTEMS) == {"advection", "burgers", "darcy", "shallow-water"}
    assert get_pde_system("shallow_water").name == "shallow-water"
    with pytest.raises(ValueError, match="advection, burgers, darcy, shallow-water"):
        get_pde_system("navier-stokes")
    with pytest.raises(ValueError, match="unknown settings"):
        get_pde_system("advection").simulate(2, 0, nxx=3)
    with pytest.raises(ValueError, match="unknown settings"):
        get_pde_system("advection").simulate(2, 0, dt=0.1)  # only Burgers takes a forced dt
    assert get_pde_system("burgers").simulate(1, 0, nx=16, nt=3, dt=1e-3).fields.shape == (1, 3, 16)


@pytest.mark.parametrize("name", list(PDE_SYSTEMS))
def test_residual_floor_is_below_a_perturbation(name: str) -> None:
    """On the simulator's own fields the residual is its floor; 5 % noise lifts every sample well above it."""
    system = get_pde_system(name)
    data = system.simulate(32, seed=0)
    floor = system.residual_rmse(data)
    assert floor.shape == (32,)
    rng = np.random.default_rng(0)
    scale = float(np.sqrt(np.mean(data.fields**2)))
    noisy = data.fields + 0.05 * scale * rng.standard_normal(data.fields.shape)
    perturbed = system.residual_rmse(data, noisy)
    assert np.all(perturbed > 2.0 * floor + 1e-6)


def test_burgers_floor_converges_at_second_order() -> None:
    """The FD residual of the (spectrally accurate) Burgers fields is the stencil's truncation error,
    O(Δt² + Δx²): it falls 4× per refinement of a resolved solution."""
    system = get_pde_system("burgers")
    floors = [
        float(system.residual_rmse(system.simulate(4, 0, nu=0.3, t_final=0.2, k_max=1, nx=nx, nt=nx + 1)).mean())
        for nx in (32, 64, 128)
    ]
    rates = [math.log2(floors[i] / floors[i + 1]) for i in range(2)]
    assert min(rates) > 1.9 and max(rates) < 2.1, (floors, rates)


def test_darcy_floor_is_the_solvers_round_off() -> None:
    """The Darcy residual uses the solver's own stencil: on its solutions only round-off remains, bounded by
    machine epsilon times the condition number (~ n² · a_max/a_min) times |f|."""
    system = get_pde_system("darcy")
    for n in (16, 32):
        data = system.simulate(4, 0, n_grid=n)
        cond = n**2 * float(data.coefficient.max() / data.coefficient.min())
        assert float(system.residual_rmse(data).max()) < 100 * np.finfo(np.float64).eps * cond * abs(
            data.parameters["f"]
        )


def test_shallow_water_floor_falls_with_refinement() -> None:
    """The dam-break front is a shock: the central-difference mass residual is O(1) in the cells it crosses,
    so its RMS falls only as the fraction of shock cells does (first order at best), but it must fall."""
    system = get_pde_system("shallow-water")
    floors = [
        float(system.residual_rmse(system.simulate(4, 0, nx=n, ny=n, nt=n // 2 + 1)).mean()) for n in (16, 32, 64)
    ]
    assert floors[0] > floors[1] > floors[2], floors


def test_residual_shapes_and_momentum() -> None:
    sw = get_pde_system("shallow-water")
    data = sw.simulate(2, seed=1)
    q = torch.tensor(data.fields)
    mom = R.shallow_water_momentum_residual(q, data.dt, data.dx, data.dy)
    mass = R.shallow_water_mass_residual(q, data.dt, data.dx, data.dy)
    t, x, y = q.shape[1] - 2, q.shape[3] - 2, q.shape[4] - 2
    assert mass.shape == (2, t, x, y) and mom.shape == (2, t, 2, x, y)
    noisy = q + 0.05 * torch.randn_like(q, generator=torch.Generator().manual_seed(0))
    noisy_mom = R.shallow_water_momentum_residual(noisy, data.dt, data.dx, data.dy)
    assert noisy_mom.pow(2).mean() > 4 * mom.pow(2).mean()
    with pytest.raises(ValueError, match="h only"):
        R.shallow_water_mass_residual(q[:, :, :1], data.dt, data.dx, data.dy)


def _second_difference_along_coordinates(fn, q: torch.Tensor, n: int, seed: int) -> float:
    """max over ``n`` random single coordinates k of |R(q + 2δe_k) − 2R(q + δe_k) + R(q)|: zero iff R is
    affine in each coordinate separately (multilinear), whatever δ."""
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    base = fn(q)
    for k in torch.randint(q.numel(), (n,), generator=g).tolist():
        e = torch.zeros(q.numel(), dtype=q.dtype)
        e[k] = 0.7
        e = e.reshape(q.shape)
        worst = max(worst, float((fn(q + 2 * e) - 2 * fn(q + e) + base).abs().max()))
    return worst


def test_shallow_water_momentum_residual_is_multilinear() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.rand(1, 5, 3, 6, 6, dtype=torch.float64, generator=g) + torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 3, 1, 1)
    mult = lambda v: R.shallow_water_momentum_residual(v, 0.1, 0.2, 0.3, g=1.5)
    flux = lambda v: R.shallow_water_momentum_flux_residual(v, 0.1, 0.2, 0.3, g=1.5)
    assert _second_difference_along_coordinates(mult, q, 60, 1) < 1e-10
    assert _second_difference_along_coordinates(flux, q, 60, 1) > 1e-3  # the flux form is not


def test_shallow_water_momentum_residual_is_h2_times_the_flux_form_to_second_order() -> None:
    """On smooth fields both discretisations approximate h² × (the continuous residual) to O(Δ²): their
    difference falls 4× when the grid (and Δt) is halved, and both vanish for a lake at rest."""
    errs = []
    for n in (16, 32, 64):
        s = torch.linspace(0, 1, n, dtype=torch.float64)
        t, x, y = torch.meshgrid(s, s, s, indexing="ij")
        h = 1.5 + 0.3 * torch.sin(2 * torch.pi * x) * torch.cos(torch.pi * y) * torch.cos(t)
        m = 0.2 * torch.cos(torch.pi * x + t) * torch.sin(torch.pi * y)
        w = 0.1 * torch.sin(torch.pi * x * y + 0.5 * t)
        q = torch.stack([h, m, w], dim=1)[None]  # [1, T, 3, X, Y]
        d = 1.0 / (n - 1)
        h_c = h[None, 1:-1, 1:-1, 1:-1][:, :, None]
        diff = R.shallow_water_momentum_residual(q, d, d, d) - h_c.square() * R.shallow_water_momentum_flux_residual(
            q, d, d, d
        )
        errs.append(float(diff.abs().max()))
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) > 1.8, (errs, rates)
    rest = torch.zeros(1, 4, 3, 5, 5, dtype=torch.float64)
    rest[:, :, 0] = 2.0
    assert float(R.shallow_water_momentum_residual(rest, 0.1, 0.1, 0.1).abs().max()) == 0.0


def test_residual_structure_linear_and_multilinear() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 5, 7, dtype=torch.float64, generator=g)
    v = torch.randn(2, 5, 7, dtype=torch.float64, generator=g)
    adv = lambda w: R.advection_residual(w, 0.1, 0.2, 1.3)
    torch.testing.assert_close(adv(u + 2 * v), adv(u) + 2 * adv(v))
    a = torch.rand(2, 6, 6, dtype=torch.float64, generator=g) + 0.1
    ud = torch.randn(2, 6, 6, dtype=torch.float64, generator=g)
    vd = torch.randn(2, 6, 6, dtype=torch.float64, generator=g)
    lin = lambda w: R.darcy_residual(w, a, 0.1, 0.0)
    torch.testing.assert_close(lin(ud + vd), lin(ud) + lin(vd))
    # Burgers: multilinear -> affine in every single grid value (zero Hessian diagonal).
    w = torch.randn(1, 4, 6, dtype=torch.float64, generator=g)
    weights = torch.randn(1, 2, 6, dtype=torch.float64, generator=g)
    hess = torch.autograd.functional.hessian(
        lambda z: (R.burgers_residual(z, 0.1, 0.2, 0.05) * weights).sum(), w
    ).reshape(w.numel(), w.numel())
    assert torch.diagonal(hess).abs().max() < 1e-12
    assert hess.abs().max() > 1e-3  # but it is not linear


def test_residuals_vanish_on_smooth_exact_solutions_as_grid_refines() -> None:
    errs = []
    for nx in (32, 64, 128):
        out = advection.simulate(2, seed=0, nx=nx, nt=nx + 1, t_final=0.5, beta=0.7, k_max=2)
        x, t = out["coords"]["x"], out["coords"]["t"]
        r = R.advection_residual(torch.tensor(out["u"]), t[1] - t[0], x[1] - x[0], 0.7)
        errs.append(float(r.abs().max()))
    assert math.log2(errs[0] / errs[1]) == pytest.approx(2.0, abs=0.1)
    assert math.log2(errs[1] / errs[2]) == pytest.approx(2.0, abs=0.1)


def test_field_metrics() -> None:
    from physdiff.evaluation.field_metrics import constraint_rmse, rmse, summarize

    ref = np.zeros((2, 3, 4))
    pred = np.ones((2, 3, 4))
    pred[1] *= 2.0
    np.testing.assert_allclose(rmse(pred, ref), [1.0, 2.0])
    mask = np.zeros((2, 3, 4))
    mask[:, 0] = 1.0  # first frame known
    pred[:, 0] = 100.0  # ... and ignored
    np.testing.assert_allclose(rmse(torch.tensor(pred), ref, mask), [1.0, 2.0])
    res = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(constraint_rmse(res), [np.sqrt(12.5), 0.0])
    s = summarize({"rmse": [1.0, 2.0], "c": np.array([3.0])})
    assert s["rmse"] == {"mean": 1.5, "std": pytest.approx(0.5**0.5), "n": 2, "nonfinite": 0}
    assert s["c"] == {"mean": 3.0, "std": 0.0, "n": 1, "nonfinite": 0}
    # a diverged sample counts: the mean is NaN and the count says how many, never a better number
    s = summarize({"rmse": [1.0, float("nan"), float("inf")]})
    assert np.isnan(s["rmse"]["mean"]) and s["rmse"]["nonfinite"] == 2
    with pytest.raises(ValueError, match="shapes differ"):
        rmse(np.zeros((2, 3)), np.zeros((2, 4)))
