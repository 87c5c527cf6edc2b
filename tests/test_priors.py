"""Physical-feasibility priors: floors on simulated data, gradients, Jensen gap, symmetries, errors."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from physdiff.data.augment import permute_edges, permute_particles, random_orthogonal, rotate_particle_state
from physdiff.priors import (
    AngularMomentumPrior,
    GravityEnergyPrior,
    MomentumPrior,
    NewtonSpringPrior,
    Prior,
    ResidualPrior,
    SpringEnergyPrior,
    make_prior,
    total_prior_loss,
)
from physdiff.systems.registry import get_system

PS, VS = 2.0, 0.5  # the model sees positions / PS and velocities / VS

APPLICABLE = [
    ("three-body", "momentum"),
    ("three-body", "energy"),
    ("three-body", "angular-momentum"),
    ("five-spring", "momentum"),
    ("five-spring", "energy"),
    ("five-spring", "newton"),
    ("five-spring", "angular-momentum"),
]


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Ground truth from the library's simulators, in normalised model coordinates, float64."""
    out = {}
    for name in ("three-body", "five-spring"):
        sim = get_system(name).with_settings(n_frames=8).simulate(n=4, seed=0)
        x = torch.from_numpy(np.concatenate([sim["positions"] / PS, sim["velocities"] / VS], axis=-1))
        ctx = {k: torch.from_numpy(sim[k]) for k in ("masses", "edges") if k in sim}
        out[name] = (x, ctx)
    return out


def prior_for(system: str, name: str, **kw: object) -> Prior:
    return make_prior(name, system, scale=(PS, VS), **kw)


# ------------------------------------------------------------------------------------------ floors
@pytest.mark.parametrize(("system", "name"), APPLICABLE)
def test_prior_at_floor_on_ground_truth_and_positive_off_it(data, system, name):
    x, ctx = data[system]
    prior = prior_for(system, name)
    floor = prior.penalty(x, x, **ctx)
    assert floor.shape == (x.shape[0],)
    if prior.case == "nonlinear":
        assert torch.equal(floor, torch.zeros_like(floor))  # feature matching: exactly 0 when x̂0 = x0
    elif name == "newton":
        assert floor.max() < 1e-7  # central-difference truncation error O(Δt²) only
    else:
        assert floor.max() < 1e-20  # exact conservation laws of the integrators: float round-off
    prior.check_ground_truth(x, **ctx)

    g = torch.Generator().manual_seed(1)
    x_bad = x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    bad = prior.penalty(x_bad, x, **ctx)
    assert (bad > 1e3 * floor.max().clamp_min(1e-12)).all()
    assert (bad > 1e-5).all()


@pytest.mark.parametrize("system", ["three-body", "five-spring"])
def test_energy_prior_features_determine_the_library_energy(data, system):
    """The multilinear reduction is exact: E = T + U is a linear function of the prior's features h(x)
    (kinetic V²_{l,k,d}, potential 1/R_ij or e_ij R_ij² per pair), so matching h(x̂0) = h(x0) pins the
    energy; and the prior's conservation residual E_l − E_0 is the library's energy difference."""
    x, ctx = data[system]
    sys_ = get_system(system)
    prior = prior_for(system, "energy")
    m = ctx["masses"]
    g = torch.Generator().manual_seed(4)
    for state in (x, x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)):
        h = prior.features(state, **ctx)
        kinetic = 0.5 * (m[:, None, :, None] * h["kinetic"]).sum((-1, -2))
        i, j = torch.triu_indices(m.shape[1], m.shape[1], 1)
        if system == "three-body":
            potential = -sys_.constants["G"] * (m[:, None, i] * m[:, None, j] * h["potential"]).sum(-1)
        else:
            potential = 0.5 * sys_.constants["kappa"] * h["potential"].sum(-1)
        D = x.shape[-1] // 2
        R, V = state[..., :D] * PS, state[..., D:] * VS
        E = sys_.total_energy(R, V, m[:, None], ctx["edges"][:, None] if "edges" in ctx else None)
        torch.testing.assert_close(kinetic + potential, E, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(prior.residual(state, **ctx), E[:, 1:] - E[:, :1], rtol=1e-12, atol=1e-12)
    # the simulators conserve it: the residual on ground truth is the integrators' drift
    assert prior.residual(x, **ctx).abs().max() < 1e-6


# --------------------------------------------------------------------------------------- gradients
def _tiny_state(K: int, D: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(2, 3, K, D, generator=g, dtype=torch.float64)
    pos = pos + 3.0 * torch.arange(K, dtype=torch.float64)[:, None]  # well separated (1/r is smooth)
    vel = torch.randn(2, 3, K, D, generator=g, dtype=torch.float64)
    return torch.cat([pos, vel], dim=-1)


@pytest.mark.parametrize(
    "cls", [MomentumPrior, AngularMomentumPrior, NewtonSpringPrior, GravityEnergyPrior, SpringEnergyPrior]
)
@pytest.mark.parametrize("D", [2, 3])
def test_gradients_flow_to_the_estimate(cls, D):
    K = 3
    x0 = _tiny_state(K, D, seed=0)
    x_hat = _tiny_state(K, D, seed=1).requires_grad_(True)
    edges = torch.tensor([[0.0, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=torch.float64).expand(2, K, K)
    ctx = {"masses": torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64).expand(2, K), "edges": edges}
    prior = cls(dim=D, scale=(PS, VS))
    assert torch.autograd.gradcheck(lambda z: prior.penalty(z, x0, **ctx), (x_hat,))
    prior.penalty(x_hat, x0, **ctx).sum().backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0


# -------------------------------------------------------------------------------------- Jensen gap
def test_linear_prior_has_no_jensen_gap_nonlinear_features_do(data):
    """Why the cases differ (method.md §3).

    The prior is applied to the Tweedie estimate x̂0 = E[x0 | x_t], while the data satisfy R(x0) = 0, so
    E[R(x0) | x_t] = 0. For Gaussian data x0 ~ N(x*, τ²I) the posterior given x_t = α x0 + σ ε is
    N(μ, c²I) with c² = (1/τ² + α²/σ²)⁻¹ (c → 0 as σ_t → 0). We compare, by Monte Carlo over posterior
    samples (frame 0 is conditioned, so exact), E[R(x0)|x_t] with R(E[x0|x_t]):

    * linear R (momentum): R commutes with the expectation, so the two agree exactly (up to round-off),
      whatever the posterior covariance: penalising ‖R(x̂0)‖² is unbiased at every t;
    * multilinear R (angular momentum, products of distinct coordinates): the gap is a posterior
      covariance — zero for an independent posterior, O(c²) for a correlated one, vanishing as σ_t → 0;
    * nonlinear h (1/r, squares): a gap ½ tr(∇²h C) even for an independent posterior, so R(x̂0) = 0 is
      the wrong target; matching h(x̂0) to h(x0) instead is what the nonlinear case does.
    """
    x, ctx = data["three-body"]
    x_star = x[:1]  # one trajectory as the posterior mean μ
    m = ctx["masses"][:1]
    g = torch.Generator().manual_seed(0)
    S = 20000

    def posterior_samples(c: float, corr: float = 0.0) -> torch.Tensor:
        z = torch.randn((S, *x_star.shape[1:]), generator=g, dtype=x.dtype)
        if corr:  # couple each velocity to the rotated position noise of the same particle (D = 3: x↔y)
            zp = z[..., :3]
            rot = torch.stack([-zp[..., 1], zp[..., 0], zp[..., 2]], dim=-1)
            z = torch.cat([zp, corr * rot + (1 - corr**2) ** 0.5 * z[..., 3:]], dim=-1)
        z[:, 0] = 0.0  # frame 0 is conditioned: known exactly
        return x_star + c * z

    ctx_s = {"masses": m.expand(S, -1)}
    lin = MomentumPrior(dim=3, scale=(PS, VS))
    for corr in (0.0, 0.8):
        xs = posterior_samples(0.3, corr)
        gap = lin.residual(xs, **ctx_s).mean(0) - lin.residual(xs.mean(0, keepdim=True), masses=m)[0]
        assert gap.abs().max() < 1e-10

    mult = AngularMomentumPrior(dim=3, scale=(PS, VS))
    gaps = {}
    for c in (0.3, 0.03):
        xs = posterior_samples(c, corr=0.8)
        samples = mult.residual(xs, **ctx_s)
        gaps[c] = (samples.mean(0) - mult.residual(xs.mean(0, keepdim=True), masses=m)[0]).abs().max()
    assert gaps[0.3] > 0.01 and gaps[0.03] < gaps[0.3] / 50  # O(c²)

    nonlin = GravityEnergyPrior(dim=3, scale=(PS, VS))
    xs = posterior_samples(0.3)  # independent posterior: still a gap
    gaps, stderrs = {}, {}
    for key in ("potential", "kinetic"):
        h = nonlin.features(xs)[key]
        h_of_mean = nonlin.features(xs.mean(0, keepdim=True))[key][0]
        gaps[key] = (h.mean(0) - h_of_mean)[1:]  # frame 0 is conditioned (no posterior spread, no gap)
        stderrs[key] = (h.std(0) / S**0.5)[1:]
    # 1/r: a clearly nonzero gap, E[h(x0)] ≠ h(E[x0])
    assert (gaps["potential"].abs() > 10 * stderrs["potential"]).all()
    # V²_{l,k,d} (the poster's per-component form): the gap is the posterior variance (c · VS)², exactly
    assert ((gaps["kinetic"] - (0.3 * VS) ** 2).abs() < 4 * stderrs["kinetic"]).all()


# -------------------------------------------------------------------------------------- symmetries
@pytest.mark.parametrize(("system", "name"), APPLICABLE)
def test_priors_invariant_under_rotation_reflection_and_permutation(data, system, name):
    """Every prior's penalty is invariant, the energy priors with per-particle kinetic features |V|² (the
    poster's per-component V²_d is invariant under axis permutations and reflections only: next test)."""
    x, ctx = data[system]
    prior = prior_for(system, name, **({"kinetic_per_component": False} if name == "energy" else {}))
    g = torch.Generator().manual_seed(2)
    x_hat = x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    ref = prior.penalty(x_hat, x, **ctx)

    D = x.shape[-1] // 2
    q = random_orthogonal(x.shape[0], D, g, reflections=True, dtype=x.dtype)
    rotated = prior.penalty(rotate_particle_state(x_hat, q), rotate_particle_state(x, q), **ctx)
    torch.testing.assert_close(rotated, ref, rtol=1e-9, atol=1e-14)

    K = x.shape[2]
    perm = torch.stack([torch.randperm(K, generator=g) for _ in range(x.shape[0])])
    ctx_p = {"masses": permute_particles(ctx["masses"], perm, axis=-1)}
    if "edges" in ctx:
        ctx_p["edges"] = permute_edges(ctx["edges"], perm)
    permuted = prior.penalty(permute_particles(x_hat, perm), permute_particles(x, perm), **ctx_p)
    torch.testing.assert_close(permuted, ref, rtol=1e-9, atol=1e-14)


# --------------------------------------------------------------------------------- total and users
@dataclass
class MeanVelocityX(ResidualPrior):
    """A user prior in a few lines: the mean x-velocity vanishes (linear)."""

    name: str = "mean-vx"
    case: str = "linear"

    def residual(self, x, **context):
        return x[..., 3].mean(-1)


def test_total_prior_loss_sums_weighted_terms_and_logs_each(data):
    x, ctx = data["three-body"]
    g = torch.Generator().manual_seed(3)
    x_hat = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)).requires_grad_(True)
    t = torch.linspace(0.1, 0.9, x.shape[0], dtype=x.dtype)
    out = SimpleNamespace(pred=SimpleNamespace(x0=x_hat), x0=x, t=t)
    priors = [
        prior_for("three-body", "momentum", weight=2.0, time_weight=lambda s: 1.0 - s),
        prior_for("three-body", "energy", weight=0.5),
        MeanVelocityX(weight=0.0),
    ]
    total, terms = total_prior_loss(priors, out, ctx)
    assert set(terms) == {"momentum", "energy", "mean-vx"}
    assert terms["mean-vx"] == 0.0
    expected = (
        2.0 * ((1 - t) * priors[0].penalty(x_hat, x, **ctx)).mean() + 0.5 * priors[1].penalty(x_hat, x, **ctx).mean()
    )
    torch.testing.assert_close(total, expected)
    assert total.item() == pytest.approx(sum(terms.values()))
    total.backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="duplicate prior name"):
        total_prior_loss([priors[0], priors[0]], out, ctx)


# ------------------------------------------------------------------------------------------ errors
def test_bad_inputs_raise(data):
    with pytest.raises(ValueError, match="'momentum'.*>= 0"):
        MomentumPrior(weight=-1.0)
    with pytest.raises(ValueError, match="'mean-vx'.*>= 0"):
        MeanVelocityX(weight=-0.1)
    with pytest.raises(ValueError, match="case 'quadratic' is not one of"):
        MeanVelocityX(name="p", case="quadratic")
    with pytest.raises(ValueError, match="case 'nonlinear' is not one of"):
        MeanVelocityX(name="p", case="nonlinear")  # a residual prior is linear, convex or multilinear
    with pytest.raises(TypeError):
        Prior(name="p")  # abstract: a prior is a ResidualPrior or a FeaturePrior
    with pytest.raises(ValueError, match="does not apply to system 'five-spring'"):
        make_prior("gravity-energy", "five-spring")
    with pytest.raises(ValueError, match="'three-body'.*edges"):
        make_prior("newton", "three-body")
    with pytest.raises(ValueError, match="does not apply to system 'three-body'"):
        make_prior("spring-energy", "three-body")
    with pytest.raises(ValueError, match="unknown prior"):
        make_prior("entropy", "three-body")
    with pytest.raises(ValueError, match="unknown particle system"):
        make_prior("momentum", "pendulum")

    x, ctx = data["five-spring"]
    for name in ("energy", "newton"):
        with pytest.raises(ValueError, match="needs the spring graph"):
            prior_for("five-spring", name).penalty(x, x, masses=ctx["masses"])
    with pytest.raises(ValueError, match="needs the clean batch"):
        prior_for("five-spring", "energy").penalty(x, None, **ctx)


def test_check_ground_truth_detects_sign_and_scale_bugs(data):
    x, ctx = data["five-spring"]

    @dataclass
    class SignBug(MomentumPrior):  # P_l + P_0 instead of P_l − P_0
        def residual(self, z, **context):
            _, V = self.split(z)
            P = (self.masses(z, context)[..., None] * V).sum(-2)
            return P[:, 1:] + P[:, :1]

    with pytest.raises(ValueError, match="'momentum': residual is not ≈ 0"):
        SignBug(dim=2, scale=(PS, VS)).check_ground_truth(x, **ctx)
    with pytest.raises(ValueError, match="'newton': residual is not ≈ 0"):  # wrong κ
        prior_for("five-spring", "newton", kappa=1.0).check_ground_truth(x, **ctx)
    with pytest.raises(ValueError, match="'newton': residual is not ≈ 0"):  # wrong time scale Δt
        prior_for("five-spring", "newton", dt=0.05).check_ground_truth(x, **ctx)
    x3, ctx3 = data["three-body"]
    bad3 = x3.clone()
    bad3[0, 0, 0, :3] = bad3[0, 0, 1, :3]
    with pytest.raises(ValueError, match="not finite"):
        prior_for("three-body", "energy").check_ground_truth(bad3, **ctx3)


@pytest.mark.parametrize("system", ["three-body", "five-spring"])
def test_per_component_kinetic_features_are_the_posters_and_invariant_under_signed_axis_permutations(data, system):
    """J_KE = Σ_{k,l,d} ((V̂)²_{l,k,d} − V²_{l,k,d})²: invariant under permutations and reflections of the axes
    (and of the particles), but not under a generic rotation, which mixes components."""
    x, ctx = data[system]
    prior = prior_for(system, "energy", potential_weight=0.0)  # the kinetic group alone
    assert prior.kinetic_per_component
    D = x.shape[-1] // 2
    _, V = prior.split(x)
    assert torch.allclose(prior.features(x, **ctx)["kinetic"], V.square())  # [B, L, K, D]
    g = torch.Generator().manual_seed(5)
    x_hat = x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    ref = prior.penalty(x_hat, x, **ctx)
    signed = torch.eye(D, dtype=x.dtype)[torch.randperm(D, generator=g)] * torch.tensor([-1.0] + [1.0] * (D - 1))
    q = signed.expand(x.shape[0], D, D)
    torch.testing.assert_close(prior.penalty(rotate_particle_state(x_hat, q), rotate_particle_state(x, q), **ctx), ref)
    q = random_orthogonal(x.shape[0], D, g, dtype=x.dtype)
    rotated = prior.penalty(rotate_particle_state(x_hat, q), rotate_particle_state(x, q), **ctx)
    assert not torch.allclose(rotated, ref, rtol=1e-3)
