"""The diffusion core tested against closed forms (Gaussian data, schedule identities)."""

import math

import pytest
import torch

from physdiff.diffusion import (
    DDIM,
    DDPM,
    SAMPLERS,
    Denoiser,
    DPMSolverPP2M,
    Euler,
    Heun,
    Sampler,
    diffusion_loss,
    make_sampler,
    make_schedule,
    sample,
)
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


def _gaussian_denoiser(schedule="linear", **kw):
    return Denoiser(GaussianDenoiserNet(MU, COV), make_schedule(schedule), prediction="x0", **kw)


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

        def forward(self, x_t, noise, known, mask):
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


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "heun", "euler", "dpmpp2m"])
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
        (dict(sampler="rk45"), "unknown sampler 'rk45'"),
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


# --------------------------------------------------------------------------- sampler classes, registry


def _assert_gaussian_moments(x):
    """Mean and covariance of x match N(μ, Σ) within 4 standard errors of the Monte-Carlo estimate."""
    n = x.shape[0]
    mean, cov = x.mean(0), torch.cov(x.T)
    se_mean = torch.sqrt(torch.diag(COV) / n)
    se_cov = torch.sqrt((torch.outer(torch.diag(COV), torch.diag(COV)) + COV**2) / n)
    assert ((mean - MU).abs() <= 4 * se_mean).all(), mean
    assert ((cov - COV).abs() <= 4 * se_cov).all(), cov


def test_registry_names_classes_defaults_and_evaluations():
    assert list(SAMPLERS) == ["ddpm", "ddim", "heun", "euler", "dpmpp2m"]
    assert "ddim" in SAMPLERS and "rk45" not in SAMPLERS
    assert SAMPLERS == {"ddpm": DDPM, "ddim": DDIM, "heun": Heun, "euler": Euler, "dpmpp2m": DPMSolverPP2M}
    for name, cls in SAMPLERS.items():
        assert issubclass(cls, Sampler) and cls.name == name
    assert {n: c.default_steps for n, c in SAMPLERS.items()} == {
        "ddpm": 1000,
        "ddim": 50,
        "heun": 25,
        "euler": 50,
        "dpmpp2m": 25,
    }
    assert {n: c.default_spacing for n, c in SAMPLERS.items()} == {
        "ddpm": "uniform",
        "ddim": "uniform",
        "heun": "edm",
        "euler": "uniform",
        "dpmpp2m": "logsnr",
    }
    # denoiser evaluations per sample: one per step (two for Heun) plus the final Tweedie denoise
    assert [c.evaluations(10) for c in (DDPM, DDIM, Heun, Euler, DPMSolverPP2M)] == [11, 11, 21, 11, 11]
    assert [c.evaluations() for c in (DDPM, DDIM, Heun, Euler, DPMSolverPP2M)] == [1001, 51, 51, 51, 26]


def test_make_sampler_builds_the_named_class():
    d = _gaussian_denoiser()
    ddim = make_sampler("ddim", d, steps=7, eta=0.3)
    assert type(ddim) is DDIM and (ddim.steps, ddim.eta, ddim.spacing) == (7, 0.3, "uniform")
    assert make_sampler("ddim", d).eta == 0.0  # DDIM proper is deterministic
    assert make_sampler("ddpm", d, eta=0.3).eta == 1.0  # η is DDIM's; ddpm is η = 1 whatever is passed
    heun = make_sampler("heun", d, spacing="uniform")
    assert type(heun) is Heun and (heun.steps, heun.spacing) == (25, "uniform")
    assert make_sampler("ddpm", d).steps == 1000


def test_unknown_sampler_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown sampler 'rk45'") as err:
        make_sampler("rk45", _gaussian_denoiser())
    assert all(repr(name) in str(err.value) for name in SAMPLERS)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(steps=0), "positive integer"),
        (dict(steps=-2), "positive integer"),
        (dict(steps=2.5), "positive integer"),
        (dict(steps=True), "positive integer"),
        (dict(eta=-0.1), "eta"),
        (dict(eta=1.5), "eta"),
        (dict(spacing="log"), "unknown time spacing 'log'.*uniform.*edm"),
    ],
)
@pytest.mark.parametrize("name", ["ddpm", "ddim", "heun", "euler", "dpmpp2m"])
def test_make_sampler_refuses_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_sampler(name, _gaussian_denoiser(), **kwargs)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["uniform", "edm", "logsnr"])
@pytest.mark.parametrize("cls", [DDPM, DDIM, Heun, Euler, DPMSolverPP2M])
def test_timesteps_decrease_from_t_max_to_t_eps(cls, spacing, schedule):
    d = _gaussian_denoiser(schedule)
    for steps in (1, 7, 50):
        ts = cls(d, steps, spacing=spacing).timesteps()
        assert ts.dtype == torch.float64 and ts.shape == (steps + 1,)
        assert float(ts[0]) == d.schedule.t_max and float(ts[-1]) == d.schedule.t_eps
        assert (ts[1:] < ts[:-1]).all(), ts


class _Ancestral(Sampler):
    """The ancestral step in its textbook form (:func:`ddpm_step`): a sampler written as one class."""

    name = "ancestral"
    default_steps = 1000

    def step(self, x_t, t, s):
        from physdiff.diffusion.samplers import ddpm_step

        x0, _ = self.denoise(x_t, t)
        sc = self.schedule
        return ddpm_step(x_t, x0, sc.alpha(t), sc.sigma(t), sc.alpha(s), sc.sigma(s), self.noise(x_t))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps,spacing", [(1000, "uniform"), (30, "edm")])
def test_ddpm_is_ddim_with_eta_one_end_to_end(monkeypatch, schedule, steps, spacing):
    """Same generator, hence same noise at every step → the same samples: DDPM ≡ DDIM(η = 1) exactly (one
    code path), and both equal the textbook ancestral sampler (ddpm_step) to float64 round-off: ε ≈ 2e-16
    per operation, amplified ≤ 1e2 by the cancellation in 1 − (α_tσ_s/α_sσ_t)² and summed over ≤ 1000
    steps, so ≤ 2e-11 ≪ 1e-10. The reference sampler is added as one class and one registry entry."""
    monkeypatch.setitem(SAMPLERS, _Ancestral.name, _Ancestral)
    d = _gaussian_denoiser(schedule)
    kw = dict(steps=steps, spacing=spacing, dtype=torch.float64)
    draw = lambda name, **extra: sample(
        d, (500, 2), sampler=name, generator=torch.Generator().manual_seed(4), **kw, **extra
    )
    ddpm = draw("ddpm")
    assert torch.equal(ddpm, draw("ddim", eta=1.0))
    assert (ddpm - draw("ancestral")).abs().max() <= 1e-10
    assert (ddpm - draw("ddim", eta=0.5)).abs().max() > 1e-2  # control: η matters


# (sampler, steps) per class on the cosine schedule (the linear one is covered through `sample` above):
# DDPM and DDIM(η = 0) at 1000 steps (first-order bias ~0.3 % of Σ, far below the ~6 % band of 4
# standard errors at n = 8000) and Heun (second order) at 50 steps.
@pytest.mark.parametrize("name,steps", [("ddpm", 1000), ("ddim", 1000), ("heun", 50)])
def test_each_sampler_class_reproduces_gaussian_moments(name, steps):
    sampler = make_sampler(name, _gaussian_denoiser("cosine"), steps=steps)
    _assert_gaussian_moments(sampler((8000, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64))


class _Counting(torch.nn.Module):
    """Wraps a network: counts calls and records whether each got the sampler's mask and context."""

    def __init__(self, net, mask):
        super().__init__()
        self.net, self.mask, self.calls, self.saw_mask, self.saw_context = net, mask, 0, [], []

    def forward(self, x_t, noise, known, mask, **context):
        self.calls += 1
        self.saw_mask.append(mask is not None and torch.equal(mask, self.mask))
        self.saw_context.append(set(context) == {"tag"})
        return self.net(x_t, noise, known, mask, **context)


@pytest.mark.parametrize(
    "name,eta,draws_per_step",
    [
        ("ddpm", None, 1),
        ("ddim", 0.0, 0),
        ("ddim", 0.5, 1),
        ("heun", None, 0),
        ("euler", None, 0),
        ("dpmpp2m", None, 0),
    ],
)
def test_mask_hook_and_projection_are_applied_once_per_evaluation(name, eta, draws_per_step):
    """Per denoiser evaluation: the net sees the mask and context once, the hook runs once; every noise
    draw (the start, plus one per stochastic step) and every raw output is projected once."""
    n, steps = 16, 5
    g = torch.Generator().manual_seed(0)
    known, mask = torch.randn(n, 2, generator=g), torch.zeros(n, 2)
    mask[:, 1] = 1.0
    net = _Counting(GaussianDenoiserNet(MU, COV), mask)
    hook_times, projections = [], []

    def hook(x0, t):
        hook_times.append(t)
        return x0 + 0.1  # moves the known entries too: the hook acts after the mask

    def project(x, tag):
        projections.append(tag)
        return x

    d = Denoiser(net, make_schedule("linear"), prediction="x0", project=project)
    sampler = make_sampler(name, d, steps=steps, eta=eta, x0_hook=hook)
    x = sampler((n, 2), known=known, mask=mask, generator=g, tag=torch.tensor(1.0))
    evals = type(sampler).evaluations(steps)
    assert net.calls == len(hook_times) == evals
    assert all(net.saw_mask) and all(net.saw_context)
    assert all(t.shape == (n,) for t in hook_times)
    assert len(projections) == evals + 1 + draws_per_step * steps
    assert torch.equal(x[:, 1], known[:, 1] + 0.1)


def test_sampler_call_state_is_cleared():
    """Conditioning lives for one call only: a later unconditioned call does not see an earlier mask."""
    d = _gaussian_denoiser()
    sampler = make_sampler("ddim", d, steps=3)
    known, mask = torch.full((4, 2), 9.0), torch.ones(4, 2)
    assert torch.equal(sampler((4, 2), known=known, mask=mask), known)
    assert not torch.equal(sampler((4, 2), generator=torch.Generator().manual_seed(0)), known)


# ------------------------------------------------------------------------- noise-level conditioning


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_gaussian_net_needs_only_the_noise_level(schedule):
    """α, σ recovered from c = log(σ/α) alone give the exact posterior mean at every t (float64 round-off;
    the e^{±2c} of the conversion are ≤ e^{15}, so relative errors stay ≤ 1e-12)."""
    s = make_schedule(schedule)
    t = torch.linspace(s.t_eps, s.t_max, 11)
    x = torch.randn(11, 2, generator=torch.Generator().manual_seed(0)) * 3.0
    a, sg = s.coefficients(t, 2)
    got = GaussianDenoiserNet(MU, COV)(x, -0.5 * s.log_snr(t), None, None)
    assert torch.allclose(got, gaussian_posterior_mean(x, a, sg, MU, COV), rtol=1e-12, atol=1e-12)


def _randomised(net):
    """Random weights everywhere (the U-Net's zero-initialised output layer would make the test vacuous)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net


def _networks():
    from physdiff.models.egnn import SpaceTimeEGNN
    from physdiff.models.mlp import MLPDenoiser
    from physdiff.models.transformer import ParticleTransformer
    from physdiff.models.unet import UNet

    return {
        "gaussian": (lambda: GaussianDenoiserNet(MU, COV), (4, 2)),
        "mlp": (lambda: MLPDenoiser(2, hidden=32, layers=2), (4, 2)),
        "unet": (lambda: _randomised(UNet(1, 1, periodic=True, base_channels=8, channel_mults=(1, 2))), (4, 1, 8)),
        "egnn": (lambda: SpaceTimeEGNN(2, hidden=16, layers=1, vector_channels=4), (4, 3, 3, 4)),
        "transformer": (lambda: ParticleTransformer(2, hidden=16, layers=1), (4, 3, 3, 4)),
    }


@pytest.mark.parametrize("network", list(_networks()))
def test_network_output_depends_on_the_noise_level_not_the_schedule(network):
    """Linear and cosine schedules at times with the same σ/α give the network the same input, hence the
    same output and the same x̂0, although the times differ.

    Tolerances from float64 round-off: the cosine schedule's inverse t(λ) goes through arccos(α), whose
    error ε/σ (ε = 2.2e-16) becomes an error ≈ ε/σ² in c = log(σ/α); we allow 4ε/σ²_min. A network's
    Lipschitz constant in c is at most ≈ 70 (the embedding scale) × O(10) (weights), so outputs may differ
    by 1e3 times that. The control (same t under both schedules) must differ by far more.
    """
    make, shape = _networks()[network]
    torch.manual_seed(0)
    net = make().eval()
    lin, cos = make_schedule("linear"), make_schedule("cosine")
    t_lin = torch.tensor([0.002, 0.05, 0.3, 0.7])
    t_cos = cos.t_from_log_snr(lin.log_snr(t_lin))
    assert (t_cos - t_lin).abs().min() > 5e-3  # genuinely different times
    c_lin, c_cos = Denoiser(net, lin).noise_level(t_lin), Denoiser(net, cos).noise_level(t_cos)
    tol_c = 4 * torch.finfo(torch.float64).eps / float(lin.sigma(t_lin).min()) ** 2
    assert (c_lin - c_cos).abs().max() <= tol_c
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    known, mask = torch.zeros(shape), torch.zeros(shape)
    with torch.no_grad():
        out_lin = Denoiser(net, lin, "eps")(x, t_lin, known, mask)
        out_cos = Denoiser(net, cos, "eps")(x, t_cos, known, mask)
        control = Denoiser(net, cos, "eps")(x, t_lin, known, mask)
    assert (out_lin.raw - out_cos.raw).abs().max() <= 1e3 * tol_c
    assert (out_lin.x0 - out_cos.x0).abs().max() <= 1e3 * tol_c * float(out_lin.sigma.max() / out_lin.alpha.min())
    assert (out_lin.raw - control.raw).abs().max() > 1e-3


def test_sampler_progress_obeys_quiet_and_tqdm_disable(capsys, caplog, monkeypatch):
    """``reproduce`` hands ``progress=True`` to the sampler and relies on ``--quiet``'s global switch and
    ``TQDM_DISABLE``: the sampler's bar once ignored both and filled quiet runs' logs with one bar per batch.
    Off a terminal the inner bar prints nothing at all."""
    import sys

    from physdiff import progress
    from physdiff.diffusion.samplers import sample

    def run():
        sample(_gaussian_denoiser(), (2, 2), sampler="ddim", steps=4, eta=0.0, dtype=torch.float64, progress=True)
        return capsys.readouterr().err

    caplog.set_level("INFO", logger="physdiff")  # as the CLI sets it
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert "sampling (ddim)" in run()  # on a terminal: a bar
    progress.set_quiet(True)
    try:
        assert run() == ""
    finally:
        progress.set_quiet(False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert run() == ""
    monkeypatch.delenv("TQDM_DISABLE")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert run() == ""  # a log file gets no per-batch bars
