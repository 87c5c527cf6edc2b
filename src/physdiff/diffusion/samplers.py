"""Samplers: ancestral DDPM (reverse SDE), DDIM(η) and a second-order Heun probability-flow ODE.

All samplers start from x_1 ~ N(0, I) (projected onto the data subspace), take ``steps`` steps down
to t_eps, and end with a Tweedie denoise x̂0(x_{t_eps}, t_eps). Known entries (mask = 1) are exact in
every x̂0, hence in the output. A ``x0_hook(x0_hat, t)`` may modify the Tweedie estimate at every step
(sampling-time priors: guidance, projection onto linear constraints).

References: Ho et al. 2020 (DDPM), Song et al. 2021 (DDIM), Karras et al. 2022 (EDM, Heun).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from physdiff.diffusion.parametrisation import Denoiser, eps_from_x0
from physdiff.diffusion.schedule import VPSchedule

__all__ = [
    "SAMPLERS",
    "DEFAULT_STEPS",
    "SPACINGS",
    "sample",
    "ddpm_step",
    "ddim_step",
    "time_grid",
    "edm_sigma_grid",
    "sampling_times",
]

SAMPLERS = ("ddpm", "ddim", "heun")
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "heun": 25}
DEFAULT_SPACING = {"ddpm": "uniform", "ddim": "uniform", "heun": "edm"}
SPACINGS = ("uniform", "edm")
X0Hook = Callable[[Tensor, Tensor], Tensor]


def time_grid(steps: int, t_eps: float, t_max: float = 1.0, **kw) -> Tensor:
    """Uniform grid t_0 = t_max > … > t_steps = t_eps."""
    return torch.linspace(t_max, t_eps, steps + 1, **kw)


def edm_sigma_grid(steps: int, s_max: float, s_min: float, rho: float = 7.0, **kw) -> Tensor:
    """EDM discretisation σ̃_i = (σ̃_max^{1/ρ} + i/N (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ, i = 0…N."""
    i = torch.arange(steps + 1, **kw) / steps
    return (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho


def sampling_times(schedule: VPSchedule, steps: int, spacing: str = "edm", rho: float = 7.0) -> Tensor:
    """Decreasing diffusion times t_0 = t_max > … > t_steps = t_eps (float64).

    ``uniform`` spaces t evenly (the DDPM reference); ``edm`` spaces the EDM noise level σ̃ = σ/α
    with Karras et al.'s ρ = 7 rule, which concentrates steps at low noise and makes few-step DDIM and
    Heun accurate.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown time spacing {spacing!r}; choose one of {SPACINGS}")
    if spacing == "uniform":
        return time_grid(steps, schedule.t_eps, schedule.t_max, dtype=torch.float64)
    t_hi = torch.tensor(schedule.t_max, dtype=torch.float64)
    t_lo = torch.tensor(schedule.t_eps, dtype=torch.float64)
    grid = edm_sigma_grid(
        steps, float(schedule.edm_sigma(t_hi)), float(schedule.edm_sigma(t_lo)), rho, dtype=torch.float64
    )
    ts = schedule.t_from_edm_sigma(grid)
    ts[0], ts[-1] = t_hi, t_lo
    return ts


def ddim_step(x_t: Tensor, x0: Tensor, eps: Tensor, a_t, s_t, a_s, s_s, eta: float, noise: Tensor) -> Tensor:
    """DDIM update t → s < t (Song et al. 2021, eq. 12), written with VP coefficients:

    x_s = α_s x̂0 + sqrt(σ_s² − c²) ε̂ + c z,  c = η σ_s · sqrt(1 − α_t²σ_s²/(α_s²σ_t²))
                                                    = η (σ_s/σ_t) · sqrt(1 − α_t²/α_s²).

    c² at η = 1 is the variance σ²_{t|s} σ_s²/σ_t² of the Gaussian posterior q(x_s | x_t, x̂0), so η = 1
    is the ancestral DDPM step (:func:`ddpm_step`, same mean and noise); η = 0 is the deterministic
    probability-flow discretisation.
    """
    ratio = (a_t * s_s) / (a_s * s_t)
    c = eta * s_s * torch.sqrt(torch.clamp(1.0 - ratio**2, min=0.0))
    return a_s * x0 + torch.sqrt(torch.clamp(s_s**2 - c**2, min=0.0)) * eps + c * noise


def ddpm_step(x_t: Tensor, x0: Tensor, a_t, s_t, a_s, s_s, noise: Tensor) -> Tensor:
    """Ancestral step: a draw of q(x_s | x_t, x0 = x̂0) = N(μ, σ²_{t|s} σ_s²/σ_t² I) with
    α_{t|s} = α_t/α_s, σ²_{t|s} = σ_t² − α²_{t|s} σ_s² and
    μ = α_{t|s} σ_s²/σ_t² x_t + α_s σ²_{t|s}/σ_t² x̂0 (Kingma et al. 2021, eq. 32)."""
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    mean = (a_ts * s_s**2 / s_t**2) * x_t + (a_s * var_ts / s_t**2) * x0
    std = torch.sqrt(torch.clamp(var_ts * s_s**2 / s_t**2, min=0.0))
    return mean + std * noise


def _check(sampler: str, steps: int | None) -> int:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    steps = DEFAULT_STEPS[sampler] if steps is None else steps
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"the number of sampling steps must be a positive integer, got {steps!r}")
    return steps


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    shape: Sequence[int],
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    eta: float = 1.0,
    spacing: str | None = None,
    generator: torch.Generator | None = None,
    known: Tensor | None = None,
    mask: Tensor | None = None,
    x0_hook: X0Hook | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    **context: Tensor,
) -> Tensor:
    """Draw samples of shape ``shape`` from the model.

    Args:
        sampler: ``"ddpm"`` (ancestral, default 1000 steps), ``"ddim"`` (with ``eta``) or ``"heun"``.
        spacing: time grid, ``"uniform"`` in t or ``"edm"`` (ρ = 7 in σ/α); default per sampler.
        steps: number of steps (denoiser evaluations: ddpm/ddim steps + 1, heun 2·steps + 1).
        generator: a seeded ``torch.Generator`` for reproducible draws.
        known, mask: conditioning; known entries are kept fixed.
        x0_hook: optional ``f(x̂0, t) -> x̂0`` applied after every denoiser evaluation.
    """
    steps = _check(sampler, steps)
    dtype = dtype or torch.get_default_dtype()
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    if mask is not None:
        if known is None:
            raise ValueError("a conditioning mask was given without the known values")
        known = known.to(device=device, dtype=dtype)
        mask = mask.to(device=device, dtype=dtype)
    sched = denoiser.schedule
    b = shape[0]
    kw = dict(dtype=dtype, device=device)

    def randn() -> Tensor:
        return denoiser.project(torch.randn(tuple(shape), generator=generator, **kw), **context)

    def denoise(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        tb = t.reshape(1).expand(b).to(**kw)
        out = denoiser(x, tb, known, mask, **context)
        x0, eps = out.x0, out.eps
        if x0_hook is not None:
            x0 = x0_hook(x0, tb)
            eps = eps_from_x0(x, x0, out.alpha, out.sigma)
        return x0, eps

    def coef(t: Tensor) -> tuple[Tensor, Tensor]:
        return sched.alpha(t), sched.sigma(t)

    x = randn()
    bar = tqdm(total=steps, desc=f"sampling ({sampler})", disable=not progress, leave=False)
    ts = sampling_times(sched, steps, spacing or DEFAULT_SPACING[sampler])
    if sampler in ("ddpm", "ddim"):
        ts = ts.to(**kw)
        for i in range(steps):
            t, s = ts[i], ts[i + 1]
            x0, eps = denoise(x, t)
            (a_t, s_t), (a_s, s_s) = coef(t), coef(s)
            if sampler == "ddpm":
                x = ddpm_step(x, x0, a_t, s_t, a_s, s_s, randn())
            else:
                noise = randn() if eta > 0 else torch.zeros_like(x)
                x = ddim_step(x, x0, eps, a_t, s_t, a_s, s_s, eta, noise)
            bar.update()
        t_last = ts[-1]
    else:  # Heun on the PF-ODE of y = x/α in the EDM noise level σ̃ = σ/α: dy/dσ̃ = (y − x̂0)/σ̃
        grid, ts = sched.edm_sigma(ts).to(**kw), ts.to(**kw)
        y = x / sched.alpha(ts[0])
        for i in range(steps):
            s_cur, s_next = grid[i], grid[i + 1]
            x0, _ = denoise(y * sched.alpha(ts[i]), ts[i])
            d = (y - x0) / s_cur
            y_next = y + (s_next - s_cur) * d
            x0_next, _ = denoise(y_next * sched.alpha(ts[i + 1]), ts[i + 1])
            d_next = (y_next - x0_next) / s_next
            y = y + (s_next - s_cur) * 0.5 * (d + d_next)
            bar.update()
        x = y * sched.alpha(ts[-1])
        t_last = ts[-1]
    bar.close()
    x0, _ = denoise(x, t_last)
    return x0
