"""The diffusion core tested against closed forms (Gaussian data, schedule identities)."""

import math

import pytest
import torch

from physdiff.diffusion import Denoiser, diffusion_loss, make_schedule, sample
from physdiff.diffusion.gaussian import GaussianDenoiserNet, gaussian_posterior_mean
from physdiff.diffusion.parametrisation import (
    eps_from_score,
    eps_from_v,
    eps_from_x0,
    score_from_eps,
    v_from_eps_x0,
    x0_from_eps,
    x0_from_v,
)

MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedule_identities(name):
    s = make_schedule(name)
    t = torch.linspace(s.t_eps, 1.0, 500)
    a, sg = s.alpha(t), s.sigma(t)
    assert torch.allclose(a**2 + sg**2, torch.ones_like(t), atol=1e-12)
    lam = s.log_snr(t)
    assert (lam[1:] < lam[:-1]).all(), "log-SNR must decrease strictly"
    assert torch.allclose(s.t_from_log_snr(lam), t, atol=1e-8)
    assert torch.allclose(s.t_from_edm_sigma(s.edm_sigma(t)), t, atol=1e-8)
    assert float(a[0]) > 0.99 and float(a[-1]) < 0.1


def test_linear_schedule_closed_form():
    s = make_schedule("linear")
    t = torch.tensor([0.5])
    expected = math.exp(-0.25 * 0.25 * 19.9 - 0.5 * 0.5 * 0.1)
    assert float(s.alpha(t)) == pytest.approx(expected, rel=1e-12)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule 'quadratic'"):
        make_schedule("quadratic")


def test_conversions_round_trip():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, generator=g)
    eps = torch.randn(16, 3, generator=g)
    s = make_schedule("linear")
    a, sg = s.coefficients(torch.rand(16, generator=g).clamp_min(1e-3), 2)
    x_t = a * x0 + sg * eps
    assert torch.allclose(x0_from_eps(x_t, eps, a, sg), x0, atol=1e-10)
    assert torch.allclose(eps_from_x0(x_t, x0, a, sg), eps, atol=1e-8)
    assert torch.allclose(eps_from_score(score_from_eps(eps, sg), sg), eps)
    v = v_from_eps_x0(eps, x0, a, sg)
    assert torch.allclose(x0_from_v(x_t, v, a, sg), x0, atol=1e-10)
    assert torch.allclose(eps_from_v(x_t, v, a, sg), eps, atol=1e-10)


def _gaussian_denoiser(schedule="linear"):
    s = make_schedule(schedule)
    return Denoiser(GaussianDenoiserNet(MU, COV, s), s, prediction="x0")


# (sampler, steps, eta). Every case must match N(μ, Σ) within the Monte-Carlo error of n samples: DDPM
# and DDIM(η) at 1000 steps (DDIM's first-order bias is O(1/steps), ~0.3 % of Σ here, far below the
# 4-standard-error band of ~6 %) and Heun (second order) at 50 steps. Few-step DDIM bias is measured
# against steps in test_ode_samplers_converge_at_their_order, not hidden in a tolerance.
SAMPLER_CASES = [
    ("ddpm", 1000, 1.0),
    ("ddim", 1000, 0.0),
    ("ddim", 1000, 0.5),
    ("ddim", 1000, 1.0),
    ("heun", 50, 0.0),
]


@pytest.mark.parametrize("sampler,steps,eta", SAMPLER_CASES)
def test_samplers_reproduce_gaussian_moments(sampler, steps, eta):
    n = 8000
    x = sample(
        _gaussian_denoiser(),
        (n, 2),
        sampler=sampler,
        steps=steps,
        eta=eta,
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64,
    )
    mean, cov = x.mean(0), torch.cov(x.T)
    # standard errors: mean sqrt(Σ_ii/n); covariance sqrt((Σ_ii Σ_jj + Σ_ij²)/n); allow 4 of each
    se_mean = torch.sqrt(torch.diag(COV) / n)
    se_cov = torch.sqrt((torch.outer(torch.diag(COV), torch.diag(COV)) + COV**2) / n)
    assert ((mean - MU).abs() <= 4 * se_mean).all(), mean
    assert ((cov - COV).abs() <= 4 * se_cov).all(), cov


@pytest.mark.parametrize("t,s", [(0.1, 0.08), (0.5, 0.45), (0.95, 0.9), (0.01, 0.005)])
def test_ddim_with_eta_one_is_the_ddpm_step(t, s):
    """DDIM(η = 1) is the ancestral step: same mean and the posterior's standard deviation, so the same
    noise gives the same x_s (to float64 round-off)."""
    from physdiff.diffusion.samplers import ddim_step, ddpm_step

    sched = make_schedule("linear")
    g = torch.Generator().manual_seed(0)
    x_t, x0, z = (torch.randn(64, 3, generator=g) for _ in range(3))
    tt, ss = torch.tensor(t), torch.tensor(s)
    a_t, s_t, a_s, s_s = sched.alpha(tt), sched.sigma(tt), sched.alpha(ss), sched.sigma(ss)
    eps = eps_from_x0(x_t, x0, a_t, s_t)
    got = ddim_step(x_t, x0, eps, a_t, s_t, a_s, s_s, 1.0, z)
    want = ddpm_step(x_t, x0, a_t, s_t, a_s, s_s, z)
    assert torch.allclose(got, want, atol=1e-6, rtol=0), (got - want).abs().max()


@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("heun", 2)])
def test_ode_samplers_converge_at_their_order(sampler, order):
    """Deterministic samplers share noise, so the error of Σ against steps shows the method's order."""
    errs = []
    for steps in (10, 20, 40):
        x = sample(
            _gaussian_denoiser(),
            (4000, 2),
            sampler=sampler,
            steps=steps,
            eta=0.0,
            generator=torch.Generator().manual_seed(7),
        )
        ref = sample(
            _gaussian_denoiser(),
            (4000, 2),
            sampler=sampler,
            steps=400,
            eta=0.0,
            generator=torch.Generator().manual_seed(7),
        )
        errs.append(float((torch.cov(x.T) - torch.cov(ref.T)).abs().max()))
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) > order - 0.35, (errs, rates)


def test_heun_and_ddim_are_deterministic_flows():
    d = _gaussian_denoiser()
    a = sample(d, (8, 2), sampler="heun", steps=10, generator=torch.Generator().manual_seed(3))
    b = sample(d, (8, 2), sampler="heun", steps=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_objectives_have_known_minimisers(objective):
    """Fitting an affine network at a fixed t by minimising each objective recovers E[x0 | x_t]."""
    s = make_schedule("linear")
    t_fixed = 0.3

    class Affine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x_t, t, known, mask):
            return self.lin(x_t)

    den = Denoiser(Affine(), s, prediction=objective)
    chol = torch.linalg.cholesky(COV)
    x0 = MU + torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0)) @ chol.T
    t = torch.full((x0.shape[0],), t_fixed)
    opt = torch.optim.LBFGS(den.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = diffusion_loss(den, x0, objective=objective, t=t, generator=torch.Generator().manual_seed(1)).loss
        loss.backward()
        return loss

    opt.step(closure)
    tp = torch.full((64,), t_fixed)
    a, sg = s.coefficients(tp, 2)
    g = torch.Generator().manual_seed(2)
    probe = a * (MU + torch.randn(64, 2, generator=g) @ chol.T) + sg * torch.randn(64, 2, generator=g)
    expected = gaussian_posterior_mean(probe, a, sg, MU, COV)
    with torch.no_grad():
        got = den(probe, tp).x0
    assert torch.allclose(got, expected, atol=0.02), (got - expected).abs().max()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "heun"])
def test_masked_conditioning_keeps_known_entries_exact(sampler):
    d = _gaussian_denoiser()
    n = 32
    g = torch.Generator().manual_seed(5)
    known = torch.randn(n, 2, generator=g) * 3.0
    mask = torch.zeros(n, 2)
    mask[:, 0] = 1.0
    x = sample(d, (n, 2), sampler=sampler, steps=20, generator=g, known=known, mask=mask)
    assert torch.equal(x[:, 0], known[:, 0])
    assert torch.isfinite(x).all()


def test_masked_loss_ignores_known_entries():
    d = _gaussian_denoiser()
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(x0)
    mask[:, 1] = 1.0
    out = diffusion_loss(d, x0, objective="x0", mask=mask, generator=torch.Generator().manual_seed(0))
    # the known column is exact in x̂0 and must not contribute
    manual = ((out.pred.x0[:, 0] - x0[:, 0]) ** 2).mean()
    assert torch.allclose(out.loss, manual)


def test_x0_hook_is_applied():
    d = _gaussian_denoiser()
    x = sample(
        d,
        (16, 2),
        sampler="ddim",
        steps=10,
        generator=torch.Generator().manual_seed(0),
        x0_hook=lambda x0, t: x0 - x0.mean(dim=-1, keepdim=True),
    )
    assert torch.allclose(x.sum(-1), torch.zeros(16), atol=1e-10)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sampler="euler"), "unknown sampler 'euler'"),
        (dict(sampler="ddim", steps=0), "positive integer"),
        (dict(sampler="heun", steps=-3), "positive integer"),
        (dict(sampler="ddim", steps=10, eta=2.0), "eta"),
    ],
)
def test_bad_sampler_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(_gaussian_denoiser(), (4, 2), **kwargs)


def test_nan_batch_is_refused():
    x0 = torch.zeros(4, 2)
    x0[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        diffusion_loss(_gaussian_denoiser(), x0)
