"""The sampling-time methods of physdiff.priors.sampling on an analytic toy (Gaussian data, exact denoiser,
float64): exact methods reach an affine law to solver precision, guidance methods lower the residual
monotonically in their step size, D-Flow lowers it, known entries never move, PCFM and ECI equal
reference transcriptions of the papers' algorithms in the papers' own time convention, and every method
refuses what it cannot do in one line."""

from __future__ import annotations

import pytest
import torch

from physdiff.diffusion.gaussian import GaussianDenoiserNet
from physdiff.diffusion.parametrisation import Denoiser
from physdiff.diffusion.samplers import make_sampler, sample
from physdiff.diffusion.schedule import make_process
from physdiff.priors.base import Constraint
from physdiff.priors.sampling import CONSTRAINT_MODES, METHODS, constraint_hook, make_method

D, B = 6, 32
STEPS = 12


class AffineLaw(Constraint):
    """R(x) = A x − b (two rows), the data's mean off the law so that an unconstrained sample misses it."""

    name = "affine"
    case = "linear"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.A = torch.randn(2, D, generator=g, dtype=torch.float64)
        self.b = torch.tensor([1.5, -0.7], dtype=torch.float64)

    def residual(self, x, **context):
        return x @ self.A.T - self.b


def _denoiser(process: str) -> Denoiser:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(D, generator=g, dtype=torch.float64)
    L = 0.5 * torch.randn(D, D, generator=g, dtype=torch.float64)
    cov = L @ L.T + 0.1 * torch.eye(D, dtype=torch.float64)
    proc = make_process(process)
    return Denoiser(GaussianDenoiserNet(mu, cov, proc), proc, prediction="x0").double()


def _run(process: str, mode: str | None, law=None, mask=None, known=None, seed=0, sampler="euler", **options):
    den = _denoiser(process)
    law = law or AffineLaw()
    hook = loop = None
    if mode is not None:
        method = make_method([law], mode=mode, mask=mask, **options)
        method.check_process(process)
        hook, loop = method.x0_hook(), method.loop
    g = torch.Generator().manual_seed(seed)
    cond = {} if mask is None else {"known": known, "mask": mask}
    x = sample(
        den,
        (B, D),
        sampler=sampler,
        steps=STEPS,
        eta=0.0,
        generator=g,
        x0_hook=hook,
        loop=loop,
        dtype=torch.float64,
        **cond,
    )
    return x, law


def _residual(x, law) -> float:
    return float(law.residual(x).norm(dim=1).mean())


@pytest.mark.parametrize(
    ("process", "mode"), [("flow", "projection"), ("vp", "projection"), ("flow", "pcfm"), ("flow", "eci")]
)
def test_exact_methods_reach_an_affine_law_to_solver_precision(process, mode):
    x0, law = _run(process, None)
    x, _ = _run(process, mode)
    before, after = _residual(x0, law), _residual(x, law)
    assert before > 0.1  # the unconstrained model misses the law
    assert after <= 1e-12 * max(1.0, float(x.abs().max()))  # float64 solver precision
    assert torch.isfinite(x).all()


def test_pcfm_relaxed_penalty_and_eci_resampling_stay_exact():
    _, law = _run("flow", None)
    x, _ = _run("flow", "pcfm", penalty=1.0, penalty_steps=5)
    assert _residual(x, law) <= 1e-12  # the final projection
    x, _ = _run("flow", "eci", iterations=3, resample_every=2)
    assert _residual(x, law) <= 1e-12


@pytest.mark.parametrize(
    ("process", "mode", "scales"),
    [
        ("flow", "guidance", (0.1, 0.3, 1.0)),
        ("vp", "guidance", (0.1, 0.3, 1.0)),
        ("flow", "diffusionpde", (0.005, 0.02, 0.05)),
        ("vp", "diffusionpde", (0.005, 0.02, 0.05)),
        ("flow", "dps", (0.01, 0.03, 0.1)),
        ("vp", "dps", (0.03, 0.1, 0.3)),
    ],
)
def test_guidance_methods_lower_the_residual_monotonically_in_their_step(process, mode, scales):
    sampler = "ddpm" if mode == "dps" else "euler"  # dps is ancestral: compare with the same noise draws
    base, law = _run(process, None, sampler=sampler)
    res = [_residual(base, law)] + [_residual(_run(process, mode, scale=s, sampler=sampler)[0], law) for s in scales]
    assert all(b < a for a, b in zip(res, res[1:], strict=False)), res
    assert res[-1] < 0.5 * res[0], res


@pytest.mark.parametrize("process", ["flow", "vp"])
def test_dflow_lowers_the_residual_by_optimising_the_noise(process):
    base, law = _run(process, None)
    x, _ = _run(process, "dflow", iterations=10, scale=0.5)
    assert _residual(x, law) < 0.1 * _residual(base, law)


@pytest.mark.parametrize("mode", CONSTRAINT_MODES)
def test_known_entries_are_never_moved(mode):
    process = "flow"
    mask = torch.zeros(B, D, dtype=torch.float64)
    mask[:, 0] = 1.0
    known = torch.full((B, D), 0.25, dtype=torch.float64)
    opts = {"iterations": 3, "scale": 0.5} if mode == "dflow" else {}
    x, _ = _run(process, mode, mask=mask, known=known, **opts)
    assert torch.equal(x[:, 0], known[:, 0])


def _reference_flow(mode: str, law: AffineLaw, n_mix: int = 1):
    """PCFM's Algorithm 1 / ECI's sampler transcribed in the papers' convention: τ = 1 − t from noise (τ = 0)
    to data (τ = 1), u_τ = τ u_1 + (1 − τ) u_0, v = du/dτ, u_1 extrapolated as u + (1 − τ) v, the dense
    projection u − Jᵀ (J Jᵀ)⁻¹ h(u), the interpolation from the initial noise u_0."""
    den = _denoiser("flow")
    smp = make_sampler("euler", den, steps=STEPS)
    taus = 1.0 - smp.timesteps()
    taus_next = torch.cat([taus[1:-1], torch.ones(1, dtype=torch.float64)])
    g = torch.Generator().manual_seed(0)
    u0 = torch.randn((B, D), generator=g, dtype=torch.float64)
    u = den.schedule.start_std() * u0

    def velocity(u, tau):  # the paper's v: −(ours) = x̂0 − ε̂ = (x̂0 − u)/(1 − τ)
        out = den(u, torch.full((B,), float(1.0 - tau), dtype=torch.float64))
        return (out.x0 - u) / (1.0 - tau)

    A = law.A

    def project(w):
        return w - (w @ A.T - law.b) @ torch.linalg.solve(A @ A.T, A)

    for tau, tau_next in zip(taus[:-1], taus_next, strict=True):
        for m in range(n_mix):
            u1 = project(u + (1.0 - tau) * velocity(u, tau))
            last = m == n_mix - 1
            u = (tau_next if last else tau) * u1 + (1.0 - (tau_next if last else tau)) * u0
    return project(u) if mode == "pcfm" else u


@pytest.mark.parametrize(("mode", "n_mix"), [("pcfm", 1), ("eci", 1), ("eci", 3)])
def test_pcfm_and_eci_equal_the_papers_algorithms_in_their_own_time_convention(mode, n_mix):
    law = AffineLaw()
    x, _ = _run("flow", mode, law=law, iterations=n_mix)
    torch.testing.assert_close(x, _reference_flow(mode, law, n_mix), rtol=1e-10, atol=1e-10)


def test_methods_refuse_what_they_cannot_do():
    law = AffineLaw()
    for mode in ("pcfm", "eci"):
        with pytest.raises(ValueError, match=rf"mode '{mode}' does not apply to diffusion.process='vp'.*flow"):
            make_method([law], mode=mode).check_process("vp")
        with pytest.raises(ValueError, match=f"{mode}: t_start"):
            make_method([law], mode=mode, t_start=0.5)
    with pytest.raises(ValueError, match="dflow: t_start"):
        make_method([law], mode="dflow", t_start=0.5)
    with pytest.raises(ValueError, match="unknown setting"):
        make_method([law], mode="pcfm", lam=1.0)
    with pytest.raises(ValueError, match="unknown sampling-time constraint mode 'teleport'"):
        make_method([law], mode="teleport")
    with pytest.raises(ValueError, match="'pcfm' drives the sampling loop"):
        constraint_hook([law], mode="pcfm")
    with pytest.raises(ValueError, match="dps: scale"):
        make_method([law], mode="dps", scale=-1.0)
    with pytest.raises(ValueError, match="pcfm: penalty"):
        make_method([law], mode="pcfm", penalty=-1.0)


def test_the_registry_is_the_cli_and_config_choice():
    from physdiff.cli.main import CONSTRAINT_MODE_CHOICES
    from physdiff.experiments.config import ConstraintConfig

    assert CONSTRAINT_MODE_CHOICES == CONSTRAINT_MODES == tuple(METHODS)
    for mode in CONSTRAINT_MODES:
        assert METHODS[mode].name == mode
        opts = ConstraintConfig(priors=["x"], mode=mode).hook_options()
        make_method([AffineLaw()], **opts)  # every config key is a method setting
