"""DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) against closed forms on Gaussian data, for both process
families (VP schedules and the flow interpolant)."""

import math

import pytest
import torch

from physdiff.diffusion import SAMPLERS, Denoiser, DPMSolverPP2M, make_process, make_sampler, sample
from physdiff.diffusion.gaussian import GaussianDenoiserNet

MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
PROCESSES = {"linear": ("vp", "linear"), "cosine": ("vp", "cosine"), "flow": ("flow", "linear")}


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _denoiser(process="linear"):
    kind, schedule = PROCESSES[process]
    proc = make_process(kind, schedule=schedule)
    return Denoiser(GaussianDenoiserNet(MU, COV, proc), proc, prediction="x0")


def _assert_gaussian_moments(x):
    """Mean and covariance of x match N(μ, Σ) within 4 standard errors of the Monte-Carlo estimate."""
    n = x.shape[0]
    mean, cov = x.mean(0), torch.cov(x.T)
    se_mean = torch.sqrt(torch.diag(COV) / n)
    se_cov = torch.sqrt((torch.outer(torch.diag(COV), torch.diag(COV)) + COV**2) / n)
    assert ((mean - MU).abs() <= 4 * se_mean).all(), mean
    assert ((cov - COV).abs() <= 4 * se_cov).all(), cov


def _exact_law(sampler):
    """(mean, covariance) of a deterministic sampler's output, without Monte-Carlo error: on Gaussian data
    the denoiser is affine in x, so the sample is an affine map A z + b of the start draw z ~ N(0, I);
    b is the output for z = 0 and the columns of A the outputs for z = e_i minus b."""
    z = torch.cat([torch.zeros(1, 2), torch.eye(2)])
    sampler.noise = lambda like: z.clone()
    out = sampler((3, 2))
    a = (out[1:] - out[0]).T
    return out[0], a @ a.T


def test_registry_line_defaults_and_evaluations():
    assert SAMPLERS["dpmpp2m"] is DPMSolverPP2M and DPMSolverPP2M.name == "dpmpp2m"
    assert (DPMSolverPP2M.default_steps, DPMSolverPP2M.default_spacing) == (25, "logsnr")
    # one evaluation per step (each step but the first reuses the previous one) + the final Tweedie denoise
    assert [DPMSolverPP2M.evaluations(s) for s in (1, 10, 25)] == [2, 11, 26]
    assert DPMSolverPP2M.evaluations() == 26


@pytest.mark.parametrize("process", ["linear", "cosine", "flow"])
def test_moments_at_25_steps(process):
    """Default sampler (25 steps, uniform in λ): mean and Σ within 4 standard errors at n = 8000. The
    discretisation bias at 25 steps, from the exact law (test below), is ≤ 0.034 on Σ_00 (band 0.063) and
    ≤ 0.017 on Σ_11 (band 0.032)."""
    x = sample(_denoiser(process), (8000, 2), sampler="dpmpp2m", generator=torch.Generator().manual_seed(11))
    _assert_gaussian_moments(x)


@pytest.mark.parametrize("process", ["linear", "flow"])
def test_converges_at_second_order_against_a_400_step_reference(process):
    """Shared noise, so the error of Σ̂ against the 400-step solution shows the order. Steps 20/40/80: at
    10 steps the λ-steps are h ≈ 1 (λ = log(α/σ) spans ≈ 10–14), outside the asymptotic regime h ≪ 1 where
    the O(h²) global error dominates."""
    d = _denoiser(process)
    draw = lambda steps: sample(
        d, (4000, 2), sampler="dpmpp2m", steps=steps, generator=torch.Generator().manual_seed(7)
    )
    ref = torch.cov(draw(400).T)
    errs = [float((torch.cov(draw(steps).T) - ref).abs().max()) for steps in (20, 40, 80)]
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) > 2 - 0.35, (errs, rates)


@pytest.mark.parametrize("process", ["linear", "cosine", "flow"])
def test_exact_law_converges_to_the_data_at_second_order(process):
    """The sampler's exact output law (no Monte-Carlo error) approaches N(μ, Σ) at second order; the floor
    (the α_{t_max} x0 part dropped from the start draw, ≤ 1e-4 on Σ) is far below the errors at ≤ 80 steps.
    At the default 25 steps the bias lies inside the 4-standard-error resolution of an n = 8000 test."""
    d = _denoiser(process)
    errs = []
    for steps in (20, 40, 80):
        _, cov = _exact_law(make_sampler("dpmpp2m", d, steps=steps))
        errs.append(float((cov - COV).abs().max()))
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) > 2 - 0.35, (errs, rates)
    _, cov25 = _exact_law(make_sampler("dpmpp2m", d))
    se_cov = torch.sqrt((torch.outer(torch.diag(COV), torch.diag(COV)) + COV**2) / 8000)
    assert ((cov25 - COV).abs() <= 4 * se_cov).all(), (cov25 - COV, se_cov)


@pytest.mark.parametrize("process", ["linear", "flow"])
def test_first_step_is_ddim(process):
    """One step: the first-order DPM-Solver++ step x_s = (σ_s/σ_t) x_t − α_s (e^{−h} − 1) x̂0 is the DDIM step
    α_s x̂0 + σ_s ε̂, so with one step the two samplers agree to round-off."""
    d = _denoiser(process)
    kw = dict(steps=1, spacing="uniform", generator=torch.Generator().manual_seed(0))
    a = sample(d, (64, 2), sampler="dpmpp2m", **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    b = sample(d, (64, 2), sampler="ddim", eta=0.0, **kw)
    assert torch.allclose(a, b, rtol=0, atol=1e-12), (a - b).abs().max()


def _reference_dpmpp2m(den, z, ts):
    """An independent form of Algorithm 2, in the EDM variables (y = x/α, σ̃ = σ/α = e^{−λ}), from start z."""
    sched = den.schedule
    x, prev = z, None
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        x0 = den(x, t.expand(x.shape[0])).x0
        st, ss = float(sched.edm_sigma(t)), float(sched.edm_sigma(s))
        h = math.log(st / ss)
        if prev is None:
            d = x0
        else:
            r = prev[1] / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev[0]
        y = (ss / st) * (x / sched.alpha(t)) - math.expm1(-h) * d
        x, prev = y * sched.alpha(s), (x0, h)
    return den(x, ts[-1].expand(x.shape[0])).x0


@pytest.mark.parametrize("process", ["cosine", "flow"])
@pytest.mark.parametrize("spacing", ["logsnr", "edm"])
def test_matches_an_independent_form_of_algorithm_2(process, spacing):
    """Written in (α, σ, λ = log α/σ) in the sampler and in (y, σ̃) here: the same iterates to round-off."""
    d = _denoiser(process)
    smp = make_sampler("dpmpp2m", d, steps=12, spacing=spacing)
    z = torch.randn(32, 2, generator=torch.Generator().manual_seed(3))
    smp.noise = lambda like: z.clone()
    got = smp((32, 2))
    want = _reference_dpmpp2m(d, z * d.schedule.start_std(), smp.timesteps())
    assert torch.allclose(got, want, rtol=0, atol=1e-9), (got - want).abs().max()


def test_state_is_cleared_between_calls():
    """The multistep history belongs to one call: the same seed gives the same samples twice."""
    smp = make_sampler("dpmpp2m", _denoiser(), steps=8)
    a = smp((16, 2), generator=torch.Generator().manual_seed(5))
    assert smp._previous is None
    b = smp((16, 2), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("process", ["linear", "flow"])
def test_known_entries_and_hook(process):
    """Known entries are exact in every x̂0, hence in D and in the output; the hook acts on the x̂0 used."""
    d = _denoiser(process)
    g = torch.Generator().manual_seed(2)
    known, mask = torch.randn(32, 2, generator=g) * 3.0, torch.zeros(32, 2)
    mask[:, 0] = 1.0
    x = sample(d, (32, 2), sampler="dpmpp2m", steps=10, known=known, mask=mask, generator=g)
    assert torch.equal(x[:, 0], known[:, 0]) and torch.isfinite(x).all()
    hooked = sample(
        d, (16, 2), sampler="dpmpp2m", steps=10, generator=g, x0_hook=lambda x0, t: x0 - x0.mean(-1, keepdim=True)
    )
    assert torch.allclose(hooked.sum(-1), torch.zeros(16), atol=1e-10)
