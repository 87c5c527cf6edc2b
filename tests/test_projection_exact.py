"""Exact projections onto linear PDE residuals, the matrix-free path, the automatic path choice and bad input
(physdiff.priors.sampling; tested as math on random states, float64)."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from physdiff.priors import FeaturePrior, ResidualPrior
from physdiff.priors.fields import make_field_prior
from physdiff.priors.sampling import (
    FirstStepResidual,
    Projector,
    choose_projection_method,
    constraint_hook,
)
from physdiff.systems.darcy import sample_permeability
from physdiff.systems.pde_registry import get_pde_system, spacing_from_coords

B = 3
T_HALF = torch.full((B,), 0.5)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _advection(T: int = 20, X: int = 32):
    """Advection prior on the model layout [B, 1, T, X] (the identity scaling), first frame known."""
    prior = make_field_prior(
        "residual",
        "advection",
        spacing={"dt": 0.5 / (T - 1), "dx": 1.0 / X},
        parameters={"beta": 1.0},
        to_physical=lambda x: x[:, 0],
    )
    x = torch.randn(B, 1, T, X, generator=_gen(1), dtype=torch.float64)
    mask = torch.zeros_like(x)
    mask[:, :, 0] = 1.0
    return prior, x, mask, {}


def _darcy(n: int = 24):
    """Darcy with a random (piecewise-constant, contrast 10) permeability, every u unknown."""
    prior = make_field_prior(
        "residual",
        "darcy",
        spacing={"dx": 1.0 / n, "dy": 1.0 / n},
        parameters={"f": 1.0},
        to_physical=lambda x: 2.0 * x[:, 0] + 0.5,  # an affine scaling, as the model layout's
        coefficient_to_physical=lambda c: c[:, 0],
    )
    a = torch.from_numpy(sample_permeability(np.random.default_rng(0), B, n))[:, None]
    x = torch.randn(B, 1, n, n, generator=_gen(2), dtype=torch.float64)
    return prior, x, None, {"cond": a}


def _shallow_water_mass(T: int = 6, X: int = 14, Y: int = 14):
    """Shallow-water mass on the time-as-channels layout [B, T·3, X, Y] (h, hu, hv), first frame known."""
    prior = make_field_prior(
        "residual",
        "shallow-water",
        spacing={"dt": 0.02, "dx": 1.0 / X, "dy": 1.0 / Y},
        parameters={"g": 1.0},
        to_physical=lambda x: x.unflatten(1, (-1, 3)),
    )
    x = torch.randn(B, 3 * T, X, Y, generator=_gen(3), dtype=torch.float64)
    mask = torch.zeros_like(x)
    mask[:, :3] = 1.0
    return prior, x, mask, {}


CASES = {"advection": _advection, "darcy": _darcy, "shallow-water-mass": _shallow_water_mass}


def _max_r(prior, x, ctx) -> float:
    return float(prior.residual(x, **ctx).abs().max())


@pytest.mark.parametrize("case", list(CASES))
def test_linear_pde_projection_is_exact_in_one_step_and_keeps_known_entries(case):
    prior, x, mask, ctx = CASES[case]()
    hook = constraint_hook([prior], mask=mask, context=ctx, tol=0.0)
    y = hook(x, T_HALF)
    info = hook.projector.info
    assert info["path"] == "sparse" and info["linear"] and info["steps"] == 1
    r0 = _max_r(prior, x, ctx)
    assert r0 > 1.0
    assert _max_r(prior, y, ctx) <= 1e-8 * r0
    if mask is not None:
        assert torch.equal(y[mask.bool()], x[mask.bool()])
    if case == "darcy":  # square and invertible: the projection is the discrete Darcy solution itself
        assert info["square"]
        z = hook(torch.randn(x.shape, generator=_gen(9), dtype=torch.float64), T_HALF)
        assert torch.allclose(z, y, atol=1e-10)


@pytest.mark.parametrize("case", ["advection", "shallow-water-mass"])
def test_the_projection_is_the_orthogonal_projection(case):
    """Idempotent, and the correction x − P(x) is orthogonal to every feasible direction within the free
    entries (P(x') − P(x) for x' with the same known entries), hence P(x) is the nearest feasible point."""
    prior, x, mask, ctx = CASES[case]()
    hook = constraint_hook([prior], mask=mask, context=ctx, tol=0.0)
    y = hook(x, T_HALF)
    assert torch.allclose(hook(y, T_HALF), y, atol=1e-10)
    x2 = torch.where(mask.bool(), x, torch.randn(x.shape, generator=_gen(5), dtype=torch.float64))
    y2 = hook(x2, T_HALF)
    d, v = (x - y).flatten(1), (y2 - y).flatten(1)
    cos = (d * v).sum(1) / (d.norm(dim=1) * v.norm(dim=1))
    assert float(cos.abs().max()) < 1e-9
    assert bool(((x - y).flatten(1).norm(dim=1) <= (x - y2).flatten(1).norm(dim=1)).all())


def test_paths_agree_on_a_linear_residual():
    """Dense (J formed), sparse (assembled by colour probing, factorised) and matrix-free (preconditioned CG)
    solve the same system: the same projection."""
    prior, x, mask, ctx = _advection(T=12, X=16)
    out = {}
    for method in ("dense", "sparse", "matrix-free"):
        hook = constraint_hook([prior], mask=mask, method=method, cg_iters=2000, rtol=1e-12, tol=0.0)
        out[method] = hook(x, T_HALF)
        assert hook.projector.info["path"] == method
    assert torch.allclose(out["sparse"], out["dense"], atol=1e-10)
    assert torch.allclose(out["matrix-free"], out["dense"], atol=1e-7)


def test_paths_agree_on_a_multilinear_residual():
    """Burgers (u_i (u_{i+1} − u_{i−1}) terms) from a simulated trajectory plus noise: the same Gauss–Newton
    steps, dense or matrix-free, converge (quadratically) to the same feasible point."""
    system = get_pde_system("burgers")
    sim = system.simulate(B, 0, nx=16, nt=10, t_final=0.5)
    prior = make_field_prior(
        "residual",
        system,
        spacing=spacing_from_coords(sim.coords),
        parameters=sim.parameters,
        to_physical=lambda x: x[:, 0],
    )
    u = torch.from_numpy(sim.fields)[:, None]
    mask = torch.zeros_like(u)
    mask[:, :, 0] = 1.0
    x = torch.where(mask.bool(), u, u + 0.01 * torch.randn(u.shape, generator=_gen(4), dtype=torch.float64))
    out = {}
    for method in ("dense", "matrix-free"):
        hook = constraint_hook([prior], mask=mask, method=method, iterations=4, cg_iters=400, rtol=1e-11, tol=0.0)
        out[method] = hook(x, T_HALF)
        assert hook.projector.info["path"] == method and not hook.projector.info["linear"]
        assert _max_r(prior, out[method], {}) < 1e-10 * _max_r(prior, x, {})
    assert torch.allclose(out["matrix-free"], out["dense"], atol=1e-9)


def test_automatic_path_choice_at_the_thresholds():
    assert choose_projection_method(512, 10**6, linear=True) == "dense"
    assert choose_projection_method(513, 1 << 15, linear=True) == "sparse"
    assert choose_projection_method(513, (1 << 15) + 1, linear=True) == "matrix-free"
    assert choose_projection_method(513, 100, linear=False) == "matrix-free"
    prior, x, mask, ctx = _advection(T=12, X=16)  # n = 10·16 = 160 residual entries, N = 192 state entries
    for kw, path in (
        ({"dense_max": 160}, "dense"),
        ({"dense_max": 159}, "sparse"),
        ({"dense_max": 159, "sparse_max": 192}, "sparse"),
        ({"dense_max": 159, "sparse_max": 191}, "matrix-free"),
    ):
        hook = constraint_hook([prior], mask=mask, cg_iters=500, tol=0.0, **kw)
        y = hook(x, T_HALF)
        assert hook.projector.info["path"] == path, kw
        assert _max_r(prior, y, ctx) < 1e-7 * _max_r(prior, x, ctx)


def test_the_sparse_factorisation_is_reused_across_sampler_steps():
    prior, x, mask, ctx = _darcy()
    hook = constraint_hook([prior], context=ctx, tol=0.0)
    hook(x, T_HALF)
    state = next(iter(hook.projector._states.values()))
    y = hook(x + 1.0, T_HALF)
    assert next(iter(hook.projector._states.values())) is state
    assert _max_r(prior, y, ctx) <= 1e-8 * _max_r(prior, x + 1.0, ctx)


def test_matrix_free_projection_of_a_linear_residual_reaches_the_tolerance():
    prior, x, mask, ctx = _shallow_water_mass()
    hook = constraint_hook([prior], mask=mask, method="matrix-free", cg_iters=500, tol=0.0)
    y = hook(x, T_HALF)
    info = hook.projector.info
    assert info["cg_relative_residual"] <= 1e-8 and info["cg_iterations"] < 500
    assert _max_r(prior, y, ctx) <= 1e-7 * _max_r(prior, x, ctx)
    assert torch.equal(y[mask.bool()], x[mask.bool()])


def test_float32_states_are_projected_to_float_precision():
    prior, x, mask, ctx = _advection()
    y = constraint_hook([prior], mask=mask.float(), tol=0.0)(x.float(), T_HALF)
    assert y.dtype == torch.float32
    assert _max_r(prior, y, ctx) <= 1e-6 * _max_r(prior, x.float(), ctx)


def test_the_first_step_equation_closes_the_free_frame():
    """Central time differences leave one frame free (here: (T−2)·X equations, (T−1)·X unknowns); with the
    first-step (Crank–Nicolson) rows the system is square and the projection is the scheme's solution from
    the first frame, whatever the free entries held. On simulated data the new rows are at the floor."""
    prior, x, mask, ctx = _advection()
    plain = constraint_hook([prior], mask=mask, tol=0.0)
    plain(x, T_HALF)
    assert not plain.projector.info["square"]
    hook = constraint_hook([prior], mask=mask, first_step=True, tol=0.0)
    y = hook(x, T_HALF)
    assert hook.projector.info["square"]
    first = FirstStepResidual(prior)
    assert float(first.residual(y).abs().max()) <= 1e-10 * float(first.residual(x).abs().max())
    assert _max_r(prior, y, ctx) <= 1e-10 * _max_r(prior, x, ctx)
    x2 = torch.where(mask.bool(), x, torch.randn(x.shape, generator=_gen(8), dtype=torch.float64))
    assert torch.allclose(hook(x2, T_HALF), y, atol=1e-9)

    system = get_pde_system("advection")
    sim = system.simulate(4, 0, nx=64, nt=32, t_final=0.5)
    truth = make_field_prior("residual", system, spacing=spacing_from_coords(sim.coords), parameters=sim.parameters)
    u = torch.from_numpy(sim.fields)
    first_rms = float(FirstStepResidual(truth).residual(u).square().mean().sqrt())
    assert first_rms < 0.05 * system.term_scale(sim)  # second order: 0.03 of a PDE term (interior rows: 0.001)


@dataclass
class _Offset(ResidualPrior):
    """A linear residual that contradicts ``base`` (R_base + offset)."""

    base: Any = None
    offset: float = 1.0

    def residual(self, x, **context):
        return self.base.residual(x, **context) + self.offset


@dataclass
class _FirstEntry(ResidualPrior):
    value: float = 0.0

    def residual(self, x, **context):
        return x[:, :1, 0, 0] - self.value


@pytest.mark.parametrize("method", ["auto", "dense", "matrix-free"])
def test_contradictory_linear_constraints_are_refused_at_the_first_projection(method):
    prior, x, mask, ctx = _advection(T=12, X=16)
    hook = constraint_hook([prior, _Offset(name="shifted", base=prior)], mask=mask, method=method, cg_iters=300)
    with pytest.raises(ValueError, match=r"priors 'residual', 'shifted'.*(inconsistent|singular)"):
        hook(x, T_HALF)


def test_an_unstable_square_system_is_refused_not_returned():
    """Leapfrog at CFL 5 with the first-step rows: square and invertible, but its inverse grows ~10× per frame,
    so the float32 projection overflows; refused at the first projection instead of returning garbage (without
    the first-step rows the free frame absorbs the unstable modes and the projection is fine)."""
    T, X = 40, 32
    prior = make_field_prior(
        "residual",
        "advection",
        spacing={"dt": 5.0 / X, "dx": 1.0 / X},
        parameters={"beta": 1.0},
        to_physical=lambda x: x[:, 0],
    )
    x = torch.randn(B, 1, T, X, generator=_gen(7))
    mask = torch.zeros_like(x)
    mask[:, :, 0] = 1.0
    y = constraint_hook([prior], mask=mask, tol=0.0)(x, T_HALF)
    assert _max_r(prior, y, {}) < 1e-6 * _max_r(prior, x, {})
    with pytest.raises(ValueError, match="(\\(\\+ first step\\)).*(non-finite|ill-conditioned)"):
        constraint_hook([prior], mask=mask, first_step=True)(x, T_HALF)


def test_small_contradictory_constraints_are_refused_as_inconsistent():
    x = torch.randn(B, 1, 4, 4, generator=_gen(6), dtype=torch.float64)
    hook = constraint_hook([_FirstEntry(name="one", value=1.0), _FirstEntry(name="two", value=2.0)])
    with pytest.raises(ValueError, match=r"'one', 'two'.*inconsistent.*did not reduce"):
        hook(x, T_HALF)


def test_bad_requests_are_refused_before_sampling_with_their_name():
    class FeaturesOnly(FeaturePrior):
        def features(self, x, **context):
            return x.square()

    prior, x, mask, ctx = _advection()
    with pytest.raises(ValueError, match="'feat'.*states no law"):
        constraint_hook([FeaturesOnly(name="feat")])
    with pytest.raises(ValueError, match="projection method 'cholesky'"):
        constraint_hook([prior], method="cholesky")
    darcy, *_ = _darcy()
    with pytest.raises(ValueError, match="first_step: prior 'residual' is not a time-dependent"):
        constraint_hook([darcy], first_step=True)
    with pytest.raises(ValueError, match="rtol"):
        Projector(lambda s: s.flatten(1), rtol=0.0)
    with pytest.raises(ValueError, match="every entry is known"):
        constraint_hook([prior], mask=torch.ones_like(x))(x, T_HALF)
    empty = _FirstEntry(name="empty")
    empty.residual = lambda s, **c: s[:, :0, 0, 0]  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="no entries"):
        constraint_hook([empty])(x, T_HALF)
