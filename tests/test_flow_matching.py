"""Flow matching as a second process family: x_t = (1 − t) x0 + t ε, velocity v = ε − x0, tested against
closed forms on Gaussian data (exact posterior mean ⇒ exact velocity), plus conditioning and equivariance."""

import math

import pytest
import torch

from physdiff.diffusion import (
    PROCESSES,
    SAMPLERS,
    Denoiser,
    DiffusionProcess,
    FlowProcess,
    LinearSchedule,
    diffusion_loss,
    make_process,
    make_sampler,
    make_schedule,
    sample,
)
from physdiff.diffusion.gaussian import GaussianDenoiserNet, coefficients_from_noise_level, gaussian_posterior_mean
from physdiff.diffusion.parametrisation import (
    eps_from_x0,
    flow_eps_from_v,
    flow_v_from_eps_x0,
    flow_x0_from_v,
    velocity,
    x0_from_eps,
)

MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _flow_denoiser(prediction="x0", **kw):
    proc = make_process("flow")
    return Denoiser(GaussianDenoiserNet(MU, COV, proc), proc, prediction=prediction, **kw)


def _assert_gaussian_moments(x):
    """Mean and covariance of x match N(μ, Σ) within 4 standard errors of the Monte-Carlo estimate."""
    n = x.shape[0]
    mean, cov = x.mean(0), torch.cov(x.T)
    se_mean = torch.sqrt(torch.diag(COV) / n)
    se_cov = torch.sqrt((torch.outer(torch.diag(COV), torch.diag(COV)) + COV**2) / n)
    assert ((mean - MU).abs() <= 4 * se_mean).all(), mean
    assert ((cov - COV).abs() <= 4 * se_cov).all(), cov


def _exact_velocity(x, t):
    """E[ε − x0 | x_t] from the joint Gaussian of (x0, ε, x_t), independently of the library's conversions:
    with C = α²Σ + σ²I, E[x0 | x] = μ + αΣ C⁻¹(x − αμ) and E[ε | x] = σ C⁻¹(x − αμ)."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1).expand(x.shape[0])
    a, s, eye = (1.0 - t)[:, None, None], t[:, None, None], torch.eye(2)
    c = a**2 * COV + s**2 * eye  # [B, 2, 2]
    r = torch.linalg.solve(c, (x - a[:, 0] * MU)[..., None])
    return ((s * eye - a * COV) @ r)[..., 0] - MU


# ------------------------------------------------------------------------------------------- process


def test_process_registry_and_schedule_entry_point():
    assert set(PROCESSES) == {"vp", "flow"}
    flow = make_process("flow")
    assert isinstance(flow, FlowProcess) and isinstance(flow, DiffusionProcess) and flow.kind == "flow"
    assert (flow.t_eps, flow.t_max) == (1e-3, 0.999)
    assert make_schedule("linear", process="flow") == flow == make_schedule("flow", process="flow")
    assert make_schedule("cosine") == make_process("vp", schedule="cosine")
    assert isinstance(make_schedule("linear", process="vp"), LinearSchedule) and make_schedule().kind == "vp"
    with pytest.raises(ValueError, match="applies to process 'vp' only"):
        make_schedule("cosine", process="flow")
    with pytest.raises(ValueError, match="unknown process 've'"):
        make_process("ve")
    with pytest.raises(ValueError, match="unknown schedule 'quadratic'"):
        make_process("vp", schedule="quadratic")
    with pytest.raises(ValueError, match="t_max < 1"):
        FlowProcess(t_max=1.0)


def test_flow_process_identities():
    p = make_process("flow")
    t = torch.linspace(p.t_eps, p.t_max, 501)
    a, s = p.alpha(t), p.sigma(t)
    assert torch.equal(a, 1 - t) and torch.equal(s, t)
    assert torch.allclose(a + s, torch.ones_like(t), atol=0)
    lam = p.log_snr(t)
    assert torch.allclose(lam, torch.log(a**2 / s**2), atol=1e-12)
    assert (lam[1:] < lam[:-1]).all()
    assert torch.allclose(p.t_from_log_snr(lam), t, atol=1e-12)
    assert torch.allclose(p.edm_sigma(t), s / a, atol=0) and torch.allclose(p.t_from_edm_sigma(s / a), t, atol=1e-12)
    # the network's noise level c = log(σ/α) = log(t/(1 − t)) spans ±log 999 ≈ ±6.9, the VP range
    c = Denoiser(GaussianDenoiserNet(MU, COV, p), p).noise_level(t)
    assert torch.allclose(c, torch.log(t / (1 - t)), atol=1e-12)
    assert float(c[0]) == pytest.approx(-math.log(999), abs=1e-9) and float(c[-1]) == pytest.approx(math.log(999))
    # (α, σ) from c alone, by the family's constraint α + σ = 1
    a2, s2 = coefficients_from_noise_level(c, p)
    assert torch.allclose(a2, a, atol=1e-12) and torch.allclose(s2, s, atol=1e-12)
    assert p.start_std() == pytest.approx(0.999)
    assert torch.equal(p.ode_variables(t)[0], torch.ones_like(t)) and torch.equal(p.ode_variables(t)[1], t)


def test_flow_conversions_round_trip():
    p = make_process("flow")
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
    a, s = p.coefficients(p.t_eps + (p.t_max - p.t_eps) * torch.rand(16, generator=g), 2)
    x_t = a * x0 + s * eps
    v = flow_v_from_eps_x0(eps, x0, a, s)
    assert torch.equal(v, eps - x0)
    assert torch.allclose(flow_x0_from_v(x_t, v, a, s), x0, atol=1e-12)
    assert torch.allclose(flow_eps_from_v(x_t, v, a, s), eps, atol=1e-12)
    # v is the time derivative of the interpolant; x̂0 = x_t − t v; eps/x0 conversions are process-generic
    assert torch.allclose(x_t - s * v, x0, atol=1e-12)
    assert torch.allclose(x0_from_eps(x_t, eps, a, s), x0, atol=1e-10)
    assert torch.allclose(eps_from_x0(x_t, x0, a, s), eps, atol=1e-10)
    assert velocity(p) is velocity("flow") and velocity(make_schedule()) is velocity("vp")


def test_exact_posterior_mean_gives_the_exact_velocity():
    """The analytic x0-network under the flow process: Denoiser.v = (x − x̂0)/t equals E[ε − x0 | x_t] of the
    joint Gaussian, and a network returning that velocity (prediction v) gives back x̂0 = x_t − t v̂."""
    d = _flow_denoiser()
    g = torch.Generator().manual_seed(1)
    t = torch.tensor([0.001, 0.05, 0.3, 0.6, 0.9, 0.999]).repeat_interleave(8)
    x = 3.0 * torch.randn(t.shape[0], 2, generator=g)
    out = d(x, t)
    want = _exact_velocity(x, t)
    assert torch.allclose(out.v, want, rtol=1e-9, atol=1e-9), (out.v - want).abs().max()
    assert torch.allclose(out.v, (x - out.x0) / t[:, None], rtol=1e-9, atol=1e-9)

    class ExactVelocity(torch.nn.Module):
        def forward(self, x_t, noise, known, mask):
            return _exact_velocity(x_t, torch.sigmoid(noise))  # t = sigmoid(c) for flow

    dv = Denoiser(ExactVelocity(), d.schedule, prediction="v")
    assert torch.allclose(dv(x, t).x0, out.x0, rtol=1e-9, atol=1e-9)
    a, s = d.schedule.coefficients(t, 2)
    assert torch.allclose(out.x0, gaussian_posterior_mean(x, a, s, MU, COV), atol=1e-12)


# ------------------------------------------------------------------------------------------ objective


@pytest.mark.parametrize("objective", ["v", "x0", "eps"])
def test_flow_objectives_have_known_minimisers(objective):
    """Fitting an affine network at a fixed t by flow matching (v: ‖v̂ − (ε − x0)‖²), data matching or noise
    matching recovers E[x0 | x_t] (and the exact velocity). All three losses are (1/t², 1, α²/σ²) times
    ‖x̂0 − x0‖² with x̂0 affine in x, so each minimiser is the least-squares fit of x0 on (x_t, 1); the tolerance
    is 4 standard errors of that fit at the probes: residual covariance R = Cov[x0 | x_t], leverage
    (1 + Mahalanobis² of the probe)/n."""
    p = make_process("flow")
    t_fixed = 0.3

    class Affine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x_t, noise, known, mask):
            return self.lin(x_t)

    den = Denoiser(Affine(), p, prediction=objective)
    n = 200_000
    chol = torch.linalg.cholesky(COV)
    x0 = MU + torch.randn(n, 2, generator=torch.Generator().manual_seed(0)) @ chol.T
    t = torch.full((n,), t_fixed)
    opt = torch.optim.LBFGS(den.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = diffusion_loss(den, x0, objective=objective, t=t, generator=torch.Generator().manual_seed(1)).loss
        loss.backward()
        return loss

    opt.step(closure)
    tp = torch.full((64,), t_fixed)
    a, s = p.coefficients(tp, 2)
    g = torch.Generator().manual_seed(2)
    probe = a * (MU + torch.randn(64, 2, generator=g) @ chol.T) + s * torch.randn(64, 2, generator=g)
    expected = gaussian_posterior_mean(probe, a, s, MU, COV)
    with torch.no_grad():
        out = den(probe, tp)
    c = a[0] ** 2 * COV + s[0] ** 2 * torch.eye(2)  # Cov(x_t)
    resid = COV - a[0] ** 2 * COV @ torch.linalg.solve(c, COV)  # Cov(x0 | x_t)
    dev = probe - a[0] * MU
    leverage = (1 + (dev * torch.linalg.solve(c, dev.T).T).sum(-1).max()) / n
    tol = 4 * float(torch.sqrt(leverage * torch.linalg.eigvalsh(resid).max()))
    assert (out.x0 - expected).abs().max() <= tol, ((out.x0 - expected).abs().max(), tol)
    assert (out.v - _exact_velocity(probe, t_fixed)).abs().max() <= tol / t_fixed


def test_flow_matching_loss_is_the_velocity_error():
    """objective v under the flow process is ‖v̂ − (ε − x0)‖² (with v̂ = ε̂ − x̂0), not the VP velocity."""
    d = _flow_denoiser()
    g = torch.Generator().manual_seed(0)
    x0 = MU + torch.randn(64, 2, generator=g)
    out = diffusion_loss(d, x0, objective="v", generator=g)
    assert torch.allclose(out.x_t, (1 - out.t[:, None]) * x0 + out.t[:, None] * out.eps)
    v_hat = (out.x_t - out.pred.x0) / out.t[:, None]
    assert torch.allclose(out.per_sample, ((v_hat - (out.eps - x0)) ** 2).mean(-1), atol=1e-10)


# ------------------------------------------------------------------------------------------- samplers


# (sampler, steps): Euler (first order) at 1000 steps, exact bias 2.6e-3 on Σ_00, far below the 4-standard-error
# band (~0.06 at n = 8000); Heun (second order) at its default 25 steps (uniform in t for flow), bias 4e-4;
# DDPM/DDIM(η = 0.5) at 1000 steps: their updates are written for any Gaussian process (α_t, σ_t).
@pytest.mark.parametrize(
    "name,steps,eta", [("euler", 1000, None), ("heun", None, None), ("ddpm", 1000, None), ("ddim", 1000, 0.5)]
)
def test_flow_samplers_reproduce_gaussian_moments(name, steps, eta):
    smp = make_sampler(name, _flow_denoiser(), steps=steps, eta=eta)
    _assert_gaussian_moments(smp((8000, 2), generator=torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("sampler,order", [("euler", 1), ("heun", 2)])
def test_flow_ode_samplers_converge_at_their_order(sampler, order):
    """Shared noise, so the error of Σ̂ against the 400-step solution shows the order (default uniform grid)."""
    d = _flow_denoiser()
    draw = lambda steps: sample(d, (4000, 2), sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(7))
    ref = torch.cov(draw(400).T)
    errs = [float((torch.cov(draw(steps).T) - ref).abs().max()) for steps in (10, 20, 40)]
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) > order - 0.35, (errs, rates)


def _textbook_flow_ode(den, z, ts, heun):
    """Euler / Heun on dx/dt = v̂(x, t) from x_{t_max} = z to t_eps, then x̂0: the flow-matching sampler."""
    v = lambda x, t: den(x, t.expand(x.shape[0])).v
    x = z
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        d = v(x, t)
        if heun:
            x_pred = x + (s - t) * d
            x = x + (s - t) * 0.5 * (d + v(x_pred, s))
        else:
            x = x + (s - t) * d
    return den(x, ts[-1].expand(x.shape[0])).x0


@pytest.mark.parametrize("name", ["euler", "heun"])
@pytest.mark.parametrize("spacing", ["uniform", "edm"])
def test_flow_euler_and_heun_are_the_textbook_flow_ode_steps(name, spacing):
    d = _flow_denoiser()
    smp = make_sampler(name, d, steps=9, spacing=spacing)
    z = torch.randn(32, 2, generator=torch.Generator().manual_seed(4))
    smp.noise = lambda like: z.clone()
    got = smp((32, 2))
    want = _textbook_flow_ode(d, 0.999 * z, smp.timesteps(), heun=name == "heun")
    assert torch.allclose(got, want, rtol=0, atol=1e-10), (got - want).abs().max()


@pytest.mark.parametrize("process", ["flow", "vp"])
def test_euler_is_ddim_eta_zero(process):
    """x_s = x_t + (s − t) v̂ on the flow (Euler in the EDM variables on VP) is α_s x̂0 + σ_s ε̂ algebraically."""
    proc = make_process(process)
    d = Denoiser(GaussianDenoiserNet(MU, COV, proc), proc, prediction="x0")
    kw = dict(steps=15, spacing="uniform")
    a = sample(d, (64, 2), sampler="euler", generator=torch.Generator().manual_seed(0), **kw)
    b = sample(d, (64, 2), sampler="ddim", eta=0.0, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.allclose(a, b, rtol=0, atol=1e-10), (a - b).abs().max()


def test_flow_default_spacing_per_sampler():
    d = _flow_denoiser()
    spacing = {name: make_sampler(name, d).spacing for name in SAMPLERS}
    assert spacing == {"ddpm": "uniform", "ddim": "uniform", "heun": "uniform", "euler": "uniform", "dpmpp2m": "logsnr"}
    assert make_sampler("heun", _vp := Denoiser(GaussianDenoiserNet(MU, COV), make_schedule())).spacing == "edm"
    assert make_sampler("heun", d, spacing="edm").spacing == "edm" and _vp.schedule.kind == "vp"


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_flow_masked_conditioning_keeps_known_entries_exact(name):
    d = _flow_denoiser("v")
    n = 32
    g = torch.Generator().manual_seed(5)
    known = torch.randn(n, 2, generator=g) * 3.0
    mask = torch.zeros(n, 2)
    mask[:, 0] = 1.0
    x = sample(d, (n, 2), sampler=name, steps=20, eta=0.5, generator=g, known=known, mask=mask)
    assert torch.equal(x[:, 0], known[:, 0])
    assert torch.isfinite(x).all()


# ---------------------------------------------------------------------------------------- equivariance


def _random_weights(net):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp2m", "ddpm"])
def test_flow_samples_inherit_rotation_equivariance(name):
    """A rotation-equivariant denoiser (a space-time EGNN with random weights, velocity prediction, zero-CoM
    projection) gives rotation-equivariant flow samples: rotating the known first frame and every noise draw
    rotates the sample (float64; the network is equivariant to ~1e-12, and each sampler step is linear in
    (x, x̂0), so the error stays at round-off). Positions stay in the zero-centre-of-mass subspace."""
    from physdiff.data.augment import random_orthogonal, rotate_vectors
    from physdiff.models.egnn import SpaceTimeEGNN
    from physdiff.physics.particles import zero_com_projection

    dim, frames, k = 3, 3, 4
    torch.manual_seed(0)
    net = _random_weights(SpaceTimeEGNN(dim, hidden=16, layers=1, vector_channels=4)).eval()

    def project(x, masses=None, **_):
        return torch.cat([zero_com_projection(x[..., :dim], masses), x[..., dim:]], dim=-1)

    den = Denoiser(net, make_process("flow"), prediction="v", project=project)
    g = torch.Generator().manual_seed(1)
    shape = (4, frames, k, 2 * dim)
    known = project(torch.randn(shape, generator=g))
    mask = torch.zeros(shape)
    mask[:, 0] = 1.0
    q = random_orthogonal(1, dim, generator=g, reflections=False, dtype=torch.float64)[0]

    plain = make_sampler(name, den, steps=6)
    out = plain(shape, known=known, mask=mask, generator=torch.Generator().manual_seed(2))

    rotated = make_sampler(name, den, steps=6)
    draw = rotated.noise
    rotated.noise = lambda like: rotate_vectors(draw(like), q)
    out_rot = rotated(shape, known=rotate_vectors(known, q), mask=mask, generator=torch.Generator().manual_seed(2))

    scale = max(1.0, float(out.abs().max()))
    assert (out_rot - rotate_vectors(out, q)).abs().max() <= 1e-9 * scale
    free = out[:, 1:]  # the generated frames
    assert (free - rotate_vectors(free, q)).abs().max() > 1e-1  # control: the sample is not rotation invariant
    assert torch.equal(out[:, 0], known[:, 0])
    assert out[..., :dim].sum(dim=2).abs().max() <= 1e-10 * scale  # zero centre of mass, per frame
