"""Sampling-time constraints (beyond the paper): projections and guidance on x̂0, tested as math."""

import json

import pytest
import torch

from physdiff.cli.main import main
from physdiff.data.augment import random_orthogonal, rotate_particle_state
from physdiff.diffusion import sample
from physdiff.experiments.config import EGNNConfig, ExperimentConfig
from physdiff.experiments.particle_task import ParticleScaling, ParticleTask
from physdiff.priors import FeaturePrior, make_prior
from physdiff.priors.sampling import batched_cg, constraint_hook, gauss_newton_projection
from test_reproduce_particles import TINY

B, L, K = 4, 6, 3


def _state(k: int = K, d: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, k, 2 * d, generator=g, dtype=torch.float64)
    x[..., :d] -= x[..., :d].mean(-2, keepdim=True)
    return x


def _first_frame_mask(x: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros_like(x)
    mask[:, 0] = 1.0
    return mask


def _springs(k: int = 5) -> torch.Tensor:
    e = torch.bernoulli(torch.full((B, k, k), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    e = torch.triu(e, 1)
    return e + e.transpose(1, 2)


def test_batched_cg_solves_each_sample_of_a_batch():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(B, 5, 5, generator=g, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 0.1 * torch.eye(5, dtype=torch.float64)
    b = torch.randn(B, 5, generator=g, dtype=torch.float64)
    y = batched_cg(lambda v: (spd @ v[..., None])[..., 0], b, max_iter=50)
    assert torch.allclose(y, torch.linalg.solve(spd, b), atol=1e-9)


def test_momentum_projection_is_the_closed_form_and_keeps_the_known_frame():
    """Linear R = Σ_k m_k V_lk − P_0: the min-norm correction of the free velocities is
    ΔV_lk = −m_k (P_l − P_0) / Σ_j m_j², reached in one step, and projecting twice changes nothing."""
    x = _state()
    mask = _first_frame_mask(x)
    m = torch.rand(B, K, dtype=torch.float64) + 0.5
    prior = make_prior("momentum", "three-body")
    y = constraint_hook([prior], mask=mask, context={"masses": m})(x, torch.full((B,), 0.5))
    P = (m[:, None, :, None] * x[..., 3:]).sum(2)  # [B, L, D]
    dv = m[:, None, :, None] * (P - P[:, :1])[:, :, None, :] / m.square().sum(1)[:, None, None, None]
    expected = x.clone()
    expected[..., 3:] -= dv
    assert torch.allclose(y, expected, atol=1e-12)
    assert torch.equal(y[:, 0], x[:, 0])
    assert prior.residual(y, masses=m).abs().max() < 1e-12
    z = constraint_hook([prior], mask=mask, context={"masses": m})(y, torch.full((B,), 0.5))
    assert torch.allclose(z, y, atol=1e-12)


def test_redundant_constraints_give_the_same_projection():
    """Listing a law twice makes J M Jᵀ singular; the least-norm solution is still the projection."""
    x = _state()
    mask = _first_frame_mask(x)
    momentum = make_prior("momentum", "three-body")
    once = constraint_hook([momentum], mask=mask)(x, torch.full((B,), 0.5))
    twice = constraint_hook([momentum, momentum], mask=mask)(x, torch.full((B,), 0.5))
    assert torch.allclose(once, twice, atol=1e-12)


@pytest.mark.parametrize("name", ["momentum", "newton"])
def test_linear_spring_projections_are_exact_in_one_step(name):
    x = _state(k=5, d=2)
    e = _springs()
    prior = make_prior(name, "five-spring")
    assert prior.residual(x, edges=e).abs().max() > 1e-1
    y = gauss_newton_projection(lambda s: prior.residual(s, edges=e).flatten(1), x, 1 - _first_frame_mask(x), 1, 400)
    assert prior.residual(y, edges=e).abs().max() < 1e-8 * prior.residual(x, edges=e).abs().max()
    assert torch.equal(y[:, 0], x[:, 0])


@pytest.mark.parametrize("system", ["three-body", "five-spring"])
def test_energy_projection_converges_quadratically_and_is_rotation_equivariant(system):
    """The nonlinear residual E_l − E_0 is met by Gauss–Newton steps; the projection commutes with
    rotations (the residual is invariant and the correction is a gradient)."""
    d = 3 if system == "three-body" else 2
    k = K if system == "three-body" else 5
    x = _state(k=k, d=d)
    mask = _first_frame_mask(x)
    ctx = {"edges": _springs(k)} if system == "five-spring" else {}
    prior = make_prior("energy", system)
    errs = []
    for it in (1, 3, 10):
        y = constraint_hook([prior], mask=mask, context=ctx, iterations=it, tol=0.0)(x, torch.full((B,), 0.1))
        errs.append(float(prior.residual(y, **ctx).abs().max()))
    assert errs[2] < 1e-9 and errs[1] < errs[0]
    early = constraint_hook([prior], mask=mask, context=ctx, iterations=10, tol=1e-6)(x, torch.full((B,), 0.1))
    assert prior.residual(early, **ctx).abs().max() <= 1e-6  # stops once within tol
    q = random_orthogonal(B, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    hook = constraint_hook([prior], mask=mask, context=ctx, iterations=10, tol=0.0)
    rotated_then_projected = hook(rotate_particle_state(x, q), torch.full((B,), 0.1))
    assert torch.allclose(rotated_then_projected, rotate_particle_state(y, q), atol=1e-9)


def test_guidance_descends_and_the_hook_waits_for_t_start():
    x = _state()
    prior = make_prior("energy", "three-body")
    r0 = prior.residual(x).square().sum()
    hook = constraint_hook([prior], mode="guidance", mask=_first_frame_mask(x), scale=1e-3, iterations=5, t_start=0.3)
    assert torch.equal(hook(x, torch.full((B,), 0.5)), x)  # t > t_start: untouched
    y = hook(x, torch.full((B,), 0.2))
    assert prior.residual(y).square().sum() < r0 and torch.equal(y[:, 0], x[:, 0])


def test_normalised_guidance_is_the_exact_line_step_and_free_of_units():
    """For an affine R(x) = A x − b the normalised step with scale 1 is the exact minimiser of ½‖R‖² along the
    gradient g = Aᵀ R (α = ‖g‖²/‖A g‖²), per sample; multiplying R by any constant leaves the step unchanged,
    while the raw step (normalise=False) scales with the square of that constant."""
    from physdiff.priors.sampling import gradient_guidance

    g_ = torch.Generator().manual_seed(0)
    A = torch.randn(5, 8, generator=g_, dtype=torch.float64)
    b = torch.randn(5, generator=g_, dtype=torch.float64)
    x = torch.randn(3, 8, generator=g_, dtype=torch.float64)
    free = torch.ones_like(x)
    free[:, 0] = 0.0  # a known entry: never moved
    g = ((x @ A.T - b) @ A) * free
    alpha = g.square().sum(1) / (g @ A.T).square().sum(1)
    want = x - alpha[:, None] * g
    for c in (1.0, 1e-4, 1e6):
        got = gradient_guidance(lambda y, c=c: c * (y @ A.T - b), x, free, scale=1.0)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        assert torch.equal(got[:, 0], x[:, 0])
    half = gradient_guidance(lambda y: y @ A.T - b, x, free, scale=0.5)
    torch.testing.assert_close(half, x - 0.5 * alpha[:, None] * g, rtol=1e-10, atol=1e-12)
    raw = [gradient_guidance(lambda y, c=c: c * (y @ A.T - b), x, free, 1e-3, normalise=False) - x for c in (1, 10)]
    torch.testing.assert_close(raw[1], 100 * raw[0], rtol=1e-10, atol=1e-12)


def test_bad_constraints_are_refused_with_their_name():
    class FeaturesOnly(FeaturePrior):
        def features(self, x, **context):
            return x.square()

    momentum = make_prior("momentum", "three-body")
    with pytest.raises(ValueError, match="mode"):
        constraint_hook([momentum], mode="teleport")
    with pytest.raises(ValueError, match="states no law"):
        constraint_hook([FeaturesOnly(name="feat")])
    with pytest.raises(ValueError, match="iterations"):
        constraint_hook([momentum], iterations=0)
    with pytest.raises(ValueError, match="at least one prior"):
        constraint_hook([])


def test_sampler_with_projection_conserves_momentum_exactly():
    """An untrained denoiser's samples violate momentum; with the projection hook they conserve it to
    float precision, and the known first frame is kept."""
    torch.manual_seed(0)
    cfg = ExperimentConfig(model=EGNNConfig(hidden=16, layers=1, vector_channels=4))
    den = ParticleTask(cfg).build_denoiser(ParticleScaling(1.0, 1.0), {"x0": torch.zeros(1, L, 5, 4)})
    x = _state(k=5, d=2).float()
    mask = _first_frame_mask(x)
    prior = make_prior("momentum", "five-spring")
    kw = dict(sampler="ddim", steps=4, eta=0.0, known=x, mask=mask, dtype=torch.float32)
    plain = sample(den, x.shape, generator=torch.Generator().manual_seed(0), **kw)
    hook = constraint_hook([prior], mask=mask)
    projected = sample(den, x.shape, generator=torch.Generator().manual_seed(0), x0_hook=hook, **kw)
    assert prior.residual(plain).abs().max() > 1e-2
    assert prior.residual(projected).abs().max() < 1e-5
    assert torch.allclose(projected[:, 0], x[:, 0])


def test_reproduce_reports_constrained_rows_apart_from_the_arms(tmp_path):
    out = tmp_path / "res"
    constraints = "sample.constraints=[{priors: [momentum]}, {priors: [momentum, energy], iterations: 5}]"
    assert (
        main(["reproduce", "five-spring", "--out", str(out), "--seeds", "0", "--arms", "no_prior", *TINY, constraints])
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert set(res["arms"]) == {"no_prior"}
    rows = res["sampling_constraints"]
    assert set(rows) == {"no_prior + projection:momentum", "no_prior + projection:momentum+energy"}
    assert rows["no_prior + projection:momentum"]["momentum_error"]["mean"] < 1e-4
    assert res["arms"]["no_prior"]["momentum_error"]["mean"] > 1e-3
    assert rows["no_prior + projection:momentum+energy"]["energy_error"]["mean"] < 1e-4
    assert "Beyond the paper" in (out / "table.md").read_text()
    assert (out / "arms" / "no_prior" / "seed0" / "samples_prediction_projection_momentum.h5").is_file()


def test_reproduce_refuses_a_bad_constraint(tmp_path, capsys):
    bad = "sample.constraints=[{priors: [momentum], mode: teleport}]"
    assert main(["reproduce", "five-spring", "--out", str(tmp_path), bad]) == 2
    assert "teleport" in capsys.readouterr().err
    dup = "sample.constraints=[{priors: [momentum]}, {priors: [momentum]}]"
    assert main(["reproduce", "five-spring", "--out", str(tmp_path), dup]) == 2
    assert "twice" in capsys.readouterr().err


def test_pde_projection_rows_for_a_linear_residual(tmp_path):
    """Advection: projecting x̂0 onto the discrete residual R = 0 (conjugate gradients, the first frame
    kept) brings the generated fields' constraint RMSE far below the unconstrained samples'."""
    from test_reproduce_fields import SIZES
    from test_reproduce_fields import TINY as FIELD_TINY

    out = tmp_path / "adv"
    argv = ["reproduce", "advection", "--out", str(out), "--seeds", "0", "--arms", "no_prior", *FIELD_TINY]
    argv += [*SIZES["advection"], "sample.constraints=[{priors: [residual], cg_iters: 300}]"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    row = res["sampling_constraints"]["no_prior + projection:residual"]
    plain = res["arms"]["no_prior"]
    assert row["constraint_rmse"]["mean"] < 1e-2 * plain["constraint_rmse"]["mean"]
    run = out / "arms" / "no_prior" / "seed0"
    assert sorted(p.name for p in run.glob("samples_*.h5")) == [
        "samples_generation.h5",
        "samples_generation_projection_residual.h5",
        "samples_prediction.h5",
        "samples_prediction_projection_residual.h5",
    ]
    assert (
        main(
            [
                "reproduce",
                "advection",
                "--out",
                str(tmp_path / "bad"),
                *FIELD_TINY,
                *SIZES["advection"],
                "sample.constraints=[{priors: [energy]}]",
            ]
        )
        == 2
    )


def test_a_constraint_that_the_ground_truth_breaks_is_refused(tmp_path):
    """A residual that is not ≈ 0 on clean data (here: the spring constant of the prior twice the data's, as
    with wrong constants or units) would pull every sample off the data's physics: refused, naming the prior."""
    from physdiff.config import apply_overrides
    from physdiff.experiments.config import preset_config
    from physdiff.experiments.harness import prepare

    cfg = apply_overrides(preset_config("five-spring"), ["data.n=40", "data.settings.n_frames=8"])
    cfg.sample.constraints = cfg.sample.constraints[1:2]  # momentum + energy
    prep = prepare(cfg, tmp_path, progress=False)
    assert len(prep.task.build_constraints(prep.train, prep.scaling)) == 1
    prep.train.constants["kappa"] *= 2.0
    with pytest.raises(ValueError, match=r"'energy': the data do not obey its law .* of its scale .* > tol"):
        prep.task.build_constraints(prep.train, prep.scaling)


def test_pde_projection_for_a_multilinear_residual(tmp_path):
    """Burgers (u_i (u_{i+1} − u_{i−1}) terms): Gauss–Newton steps with conjugate gradients drive the
    generated fields' residual to ≈ 0."""
    from test_reproduce_fields import TINY as FIELD_TINY

    out = tmp_path / "burgers"
    sizes = ["data.settings.nx=16", "data.settings.nt=8"]
    constraint = "sample.constraints=[{priors: [residual], iterations: 3, cg_iters: 200}]"
    argv = ["reproduce", "burgers", "--out", str(out), "--seeds", "0", "--arms", "no_prior", *FIELD_TINY, *sizes]
    assert main([*argv, constraint]) == 0
    res = json.loads((out / "results.json").read_text())
    row = res["sampling_constraints"]["no_prior + projection:residual"]
    assert row["constraint_rmse"]["mean"] < 1e-4 * res["arms"]["no_prior"]["constraint_rmse"]["mean"]
