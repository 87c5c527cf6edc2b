"""Samplers as small classes: ancestral DDPM, DDIM(η), Euler and Heun on the probability-flow ODE, and
the multistep DPM-Solver++(2M).

A :class:`Sampler` holds the denoiser, the number of steps, the time spacing and the ``x0_hook``. It
starts from x_{t_max} ~ N(0, s² I) (s = ``schedule.start_std()``: 1 for VP, t_max for flow; projected
onto the data subspace), applies :meth:`Sampler.step` from t_i to t_{i+1} along the decreasing grid
:meth:`Sampler.timesteps` (t_0 = t_max > … > t_N = t_eps), and ends with a Tweedie denoise
x̂0(x_{t_eps}, t_eps). Conditioning and sampling-time priors are applied in one place, the base class:
:meth:`Sampler.denoise` (known entries, mask = 1, are exact in every x̂0, hence in the output; then
``x0_hook(x̂0, t)``, e.g. guidance or a projection onto linear constraints, with ε̂ recomputed from the
hooked x̂0) and :meth:`Sampler.noise` (every Gaussian draw projected by ``denoiser.project``). A subclass
only writes the update ``step(x_t, t, s)`` (and :meth:`Sampler.reset` if it keeps state across steps).

Every sampler works for both process families (``denoiser.schedule``: a VP schedule or the flow
interpolant, :mod:`physdiff.diffusion.schedule`): the updates are written in (α_t, σ_t) of a general
Gaussian process x_t = α_t x_0 + σ_t ε and never use α² + σ² = 1. For the flow process, ``euler`` and
``heun`` are Euler and Heun on the flow ODE dx/dt = v̂(x_t, t) in (x, t) (see
:meth:`~physdiff.diffusion.schedule.DiffusionProcess.ode_variables`); ``ddim`` at η = 0 coincides with
``euler`` for every process.

A new sampler is one subclass (``name``, ``default_steps``, ``default_spacing``, ``step``, and
``evaluations`` if it is not one evaluation per step) and one line in :data:`SAMPLERS`.

References: Ho et al. 2020 (DDPM), Song et al. 2021 (DDIM), Karras et al. 2022 (EDM, Heun), Lu et al.
2022 (DPM-Solver++), Lipman et al. 2023 (flow matching); the class layout follows ``azula.sample``
(github.com/probabilists/azula).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from physdiff.diffusion.parametrisation import Denoiser, eps_from_x0
from physdiff.diffusion.schedule import DiffusionProcess
from physdiff.progress import progress_bar

__all__ = [
    "SAMPLERS",
    "SPACINGS",
    "DDIM",
    "DDPM",
    "DPMSolverPP2M",
    "Euler",
    "Heun",
    "Sampler",
    "ddim_step",
    "ddpm_step",
    "edm_sigma_grid",
    "make_sampler",
    "sample",
    "sampling_times",
    "time_grid",
]

SPACINGS = ("uniform", "edm", "logsnr")
X0Hook = Callable[[Tensor, Tensor], Tensor]
Loop = Callable[["Sampler", Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------- time grids
def time_grid(steps: int, t_eps: float, t_max: float = 1.0, **kw) -> Tensor:
    """Uniform grid t_0 = t_max > … > t_steps = t_eps."""
    return torch.linspace(t_max, t_eps, steps + 1, **kw)


def edm_sigma_grid(steps: int, s_max: float, s_min: float, rho: float = 7.0, **kw) -> Tensor:
    """EDM discretisation σ̃_i = (σ̃_max^{1/ρ} + i/N (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ, i = 0…N
    (Karras et al. 2022, eq. 5)."""
    i = torch.arange(steps + 1, **kw) / steps
    return (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho


def sampling_times(schedule: DiffusionProcess, steps: int, spacing: str = "edm", rho: float = 7.0) -> Tensor:
    """Decreasing diffusion times t_0 = t_max > … > t_steps = t_eps (float64), for any process.

    ``uniform`` spaces t evenly (the DDPM reference, and the usual flow-matching grid); ``edm`` spaces the
    EDM noise level σ̃ = σ/α with Karras et al.'s ρ = 7 rule, which concentrates steps at low noise and
    makes few-step DDIM, Heun and DPM-Solver++ accurate; ``logsnr`` spaces the log-SNR λ evenly (the
    "logSNR" grid of Lu et al. 2022; it is the ``edm`` grid in the limit ρ → ∞).
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown time spacing {spacing!r}; choose one of {SPACINGS}")
    if spacing == "uniform":
        return time_grid(steps, schedule.t_eps, schedule.t_max, dtype=torch.float64)
    t_hi = torch.tensor(schedule.t_max, dtype=torch.float64)
    t_lo = torch.tensor(schedule.t_eps, dtype=torch.float64)
    if spacing == "logsnr":
        lam = torch.linspace(
            float(schedule.log_snr(t_hi)), float(schedule.log_snr(t_lo)), steps + 1, dtype=torch.float64
        )
        ts = schedule.t_from_log_snr(lam)
    else:
        grid = edm_sigma_grid(
            steps, float(schedule.edm_sigma(t_hi)), float(schedule.edm_sigma(t_lo)), rho, dtype=torch.float64
        )
        ts = schedule.t_from_edm_sigma(grid)
    ts[0], ts[-1] = t_hi, t_lo
    return ts


# ------------------------------------------------------------------------------------ pure updates
def ddim_step(x_t: Tensor, x0: Tensor, eps: Tensor, a_t, s_t, a_s, s_s, eta: float, noise: Tensor) -> Tensor:
    """DDIM update t → s < t (Song et al. 2021, eq. 12 with √ᾱ = α, √(1 − ᾱ) = σ), for any Gaussian process
    x_t = α_t x_0 + σ_t ε whose SNR α/σ decreases (VP or flow; α² + σ² = 1 is not used):

    x_s = α_s x̂0 + sqrt(σ_s² − c²) ε̂ + c z,  c = η σ_s · sqrt(1 − α_t²σ_s²/(α_s²σ_t²)).

    c² at η = 1 is the variance σ²_{t|s} σ_s²/σ_t² of the Gaussian posterior q(x_s | x_t, x̂0) of the Markov
    process with these marginals, so η = 1 is the ancestral DDPM step (:func:`ddpm_step`, same mean and
    noise); η = 0 is the deterministic probability-flow discretisation x_s = α_s x̂0 + σ_s ε̂ (for the flow
    process exactly the Euler step x_t + (s − t) v̂).
    """
    ratio = (a_t * s_s) / (a_s * s_t)
    c = eta * s_s * torch.sqrt(torch.clamp(1.0 - ratio**2, min=0.0))
    return a_s * x0 + torch.sqrt(torch.clamp(s_s**2 - c**2, min=0.0)) * eps + c * noise


def ddpm_step(x_t: Tensor, x0: Tensor, a_t, s_t, a_s, s_s, noise: Tensor) -> Tensor:
    """Ancestral step: a draw of q(x_s | x_t, x0 = x̂0) = N(μ, σ²_{t|s} σ_s²/σ_t² I) with
    α_{t|s} = α_t/α_s, σ²_{t|s} = σ_t² − α²_{t|s} σ_s² and
    μ = α_{t|s} σ_s²/σ_t² x_t + α_s σ²_{t|s}/σ_t² x̂0 (Kingma et al. 2021, eq. 32; Ho et al. 2020, eq. 7),
    for any Gaussian process with decreasing SNR (the Markov process with marginals (α_t, σ_t); VP or flow).

    The :class:`DDPM` sampler uses the equal :func:`ddim_step` at η = 1; this form is kept as the
    independent reference it is tested against.
    """
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    mean = (a_ts * s_s**2 / s_t**2) * x_t + (a_s * var_ts / s_t**2) * x0
    std = torch.sqrt(torch.clamp(var_ts * s_s**2 / s_t**2, min=0.0))
    return mean + std * noise


# ---------------------------------------------------------------------------------------- samplers
@dataclass(frozen=True)
class _Conditioning:
    """What one call of a sampler conditions on; the default (no call running) conditions on nothing."""

    known: Tensor | None = None
    mask: Tensor | None = None
    generator: torch.Generator | None = None
    context: Mapping[str, Tensor] = field(default_factory=dict)


def _check_steps(steps: object) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"the number of sampling steps must be a positive integer, got {steps!r}")
    return steps


def _check_eta(eta: float) -> float:
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    return float(eta)


def _check_spacing(spacing: str) -> str:
    if spacing not in SPACINGS:
        raise ValueError(f"unknown time spacing {spacing!r}; choose one of {SPACINGS}")
    return spacing


class Sampler(ABC):
    """Reverse-diffusion sampler: ``sampler(shape, ...) -> x0``.

    Args:
        denoiser: the :class:`~physdiff.diffusion.parametrisation.Denoiser` (network + process: a VP schedule or
            the flow interpolant).
        steps: number of steps N (default :attr:`default_steps`); :meth:`evaluations` gives the number of
            denoiser evaluations per sample.
        spacing: the time grid, ``"uniform"`` in t, ``"edm"`` (ρ-spacing of σ/α, Karras et al. 2022) or
            ``"logsnr"`` (uniform in λ); default :attr:`default_spacing`, or the entry of
            :attr:`spacing_by_process` for the denoiser's process family where there is one.
        x0_hook: optional ``f(x̂0, t) -> x̂0`` applied after every denoiser evaluation (t ``[B]``).
        rho: the ρ of the ``edm`` spacing.

    Subclasses set ``name``, ``default_steps``, ``default_spacing`` and implement :meth:`step`; a sampler
    that keeps state across steps (multistep methods) clears it in :meth:`reset`.
    """

    name: ClassVar[str]
    default_steps: ClassVar[int]
    default_spacing: ClassVar[str] = "uniform"
    #: per-process-family defaults that replace :attr:`default_spacing` (e.g. ``{"flow": "uniform"}``)
    spacing_by_process: ClassVar[Mapping[str, str]] = {}
    #: whether the sampler takes a stochasticity η (``make_sampler`` passes ``eta`` only then)
    has_eta: ClassVar[bool] = False

    def __init__(
        self,
        denoiser: Denoiser,
        steps: int | None = None,
        *,
        spacing: str | None = None,
        x0_hook: X0Hook | None = None,
        rho: float = 7.0,
    ) -> None:
        self.denoiser = denoiser
        self.steps = _check_steps(self.default_steps if steps is None else steps)
        self.spacing = _check_spacing(spacing or self.default_spacing_for(denoiser.schedule.kind))
        self.x0_hook = x0_hook
        self.rho = rho
        self._cond = _Conditioning()

    @property
    def schedule(self) -> DiffusionProcess:
        """The denoiser's noising process (VP schedule or flow interpolant)."""
        return self.denoiser.schedule

    def reset(self) -> None:  # noqa: B027 (a hook: single-step samplers keep no state)
        """Clear state kept across steps; called at the start and the end of every sampling call."""

    @classmethod
    def default_spacing_for(cls, process: str) -> str:
        """The default time grid for a process family (``"vp"``/``"flow"``)."""
        return cls.spacing_by_process.get(process, cls.default_spacing)

    @classmethod
    def evaluations(cls, steps: int | None = None) -> int:
        """Denoiser evaluations per sample with ``steps`` steps (default :attr:`default_steps`): one per
        step plus the final Tweedie denoise."""
        return _check_steps(cls.default_steps if steps is None else steps) + 1

    def timesteps(self) -> Tensor:
        """The decreasing grid t_0 = t_max > … > t_N = t_eps, float64 (:func:`sampling_times`)."""
        return sampling_times(self.schedule, self.steps, self.spacing, self.rho)

    # -- the one place where conditioning, hook and projection are applied ---------------------------
    def denoise(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(x̂0, ε̂) at (x, t) for the current call: known entries exact (by the denoiser), then
        ``x0_hook(x̂0, t)`` and ε̂ = (x − α_t x̂0)/σ_t recomputed from the hooked x̂0."""
        c = self._cond
        tb = t.reshape(1).expand(x.shape[0]).to(dtype=x.dtype, device=x.device)
        out = self.denoiser(x, tb, c.known, c.mask, **c.context)
        x0, eps = out.x0, out.eps
        if self.x0_hook is not None:
            x0 = self.x0_hook(x0, tb)
            eps = eps_from_x0(x, x0, out.alpha, out.sigma)
        return x0, eps

    def project(self, x: Tensor) -> Tensor:
        """``x`` projected onto the data subspace with the current call's context (e.g. zero centre of mass)."""
        return self.denoiser.project(x, **self._cond.context)

    def noise(self, like: Tensor) -> Tensor:
        """z ~ N(0, I) shaped like ``like`` from the call's generator, projected onto the data subspace."""
        c = self._cond
        z = torch.randn(like.shape, generator=c.generator, dtype=like.dtype, device=like.device)
        return self.denoiser.project(z, **c.context)

    @abstractmethod
    def step(self, x_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """One update x_t → x_s from time t to s < t (scalar tensors in x's dtype)."""

    @torch.no_grad()
    def __call__(
        self,
        shape: Sequence[int],
        *,
        known: Tensor | None = None,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        progress: bool = False,
        loop: Loop | None = None,
        **context: Tensor,
    ) -> Tensor:
        """Draw samples of shape ``shape``; ``known``/``mask`` condition (known entries stay exact),
        ``generator`` seeds every draw, ``context`` goes to the denoiser (e.g. ``masses``, ``edges``).

        ``loop``: a sampling-time method that drives the loop itself (:mod:`physdiff.priors.sampling`), called
        as ``loop(sampler, x_start, ts)`` with the conditioning of this call set, in place of the steps and the
        final denoise; it returns the samples."""
        dtype = dtype or torch.get_default_dtype()
        if mask is not None:
            if known is None:
                raise ValueError("a conditioning mask was given without the known values")
            known = known.to(device=device, dtype=dtype)
            mask = mask.to(device=device, dtype=dtype)
        self._cond = _Conditioning(known, mask, generator, context)
        self.reset()
        try:
            x = self.noise(torch.empty(tuple(shape), dtype=dtype, device=device))
            start_std = self.schedule.start_std()
            if start_std != 1.0:
                x = start_std * x
            ts = self.timesteps().to(dtype=dtype, device=device)
            if loop is not None:
                return loop(self, x, ts)
            bar = progress_bar(self.steps, desc=f"sampling ({self.name})", enabled=progress, leave=False, tty_only=True)
            for i in range(self.steps):
                x = self.step(x, ts[i], ts[i + 1])
                bar.update(1)
            bar.close()
            x0, _ = self.denoise(x, ts[-1])
        finally:
            self._cond = _Conditioning()
            self.reset()
        return x0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, spacing={self.spacing!r})"


class DDIM(Sampler):
    """DDIM(η) (Song et al. 2021, eq. 12) in the process's (α_t, σ_t) (:func:`ddim_step`; VP or flow):

    x_s = α_s x̂0 + sqrt(σ_s² − c²) ε̂ + c z,  c = η σ_s sqrt(1 − (α_t σ_s / (α_s σ_t))²),  z ~ N(0, I).

    η = 0 (the default) is the deterministic first-order discretisation of the probability-flow ODE;
    η = 1 is ancestral sampling (:class:`DDPM`). One denoiser evaluation per step.
    """

    name = "ddim"
    default_steps = 50
    has_eta = True

    def __init__(
        self,
        denoiser: Denoiser,
        steps: int | None = None,
        *,
        eta: float = 0.0,
        spacing: str | None = None,
        x0_hook: X0Hook | None = None,
        rho: float = 7.0,
    ) -> None:
        super().__init__(denoiser, steps, spacing=spacing, x0_hook=x0_hook, rho=rho)
        self.eta = _check_eta(eta)

    def step(self, x_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
        x0, eps = self.denoise(x_t, t)
        sched = self.schedule
        z = self.noise(x_t) if self.eta > 0 else torch.zeros_like(x_t)
        return ddim_step(x_t, x0, eps, sched.alpha(t), sched.sigma(t), sched.alpha(s), sched.sigma(s), self.eta, z)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, spacing={self.spacing!r}, eta={self.eta})"


class DDPM(DDIM):
    """Ancestral DDPM sampling (Ho et al. 2020): each step draws x_s ~ q(x_s | x_t, x0 = x̂0), the Gaussian
    posterior of the forward process. It is DDIM with η = 1 (same mean and variance; see
    :func:`ddim_step` and the reference form :func:`ddpm_step`). Default 1000 uniform steps.
    """

    name = "ddpm"
    default_steps = 1000
    has_eta = False

    def __init__(
        self,
        denoiser: Denoiser,
        steps: int | None = None,
        *,
        spacing: str | None = None,
        x0_hook: X0Hook | None = None,
        rho: float = 7.0,
    ) -> None:
        super().__init__(denoiser, steps, eta=1.0, spacing=spacing, x0_hook=x0_hook, rho=rho)


def _ode_step(sampler: Sampler, x_t: Tensor, t: Tensor, s: Tensor, second_order: bool) -> Tensor:
    """Euler (``second_order=False``) or Heun step t → s on dy/dτ = (y − x̂0)/τ, y = x/s_t, in the process's
    ODE variables (s_t, τ_t) = ``schedule.ode_variables(t)`` (VP: (α, σ/α); flow: (1, t))."""
    sc_t, tau_t = sampler.schedule.ode_variables(t)
    sc_s, tau_s = sampler.schedule.ode_variables(s)
    y = x_t / sc_t
    x0, _ = sampler.denoise(x_t, t)
    d = (y - x0) / tau_t
    y_euler = y + (tau_s - tau_t) * d
    if not second_order:
        return y_euler * sc_s
    x0_s, _ = sampler.denoise(y_euler * sc_s, s)
    d_s = (y_euler - x0_s) / tau_s
    return (y + (tau_s - tau_t) * 0.5 * (d + d_s)) * sc_s


class Euler(Sampler):
    """Euler's method on the probability-flow ODE dy/dτ = (y − x̂0)/τ in the process's ODE variables
    (y = x/s_t, τ_t; :meth:`~physdiff.diffusion.schedule.DiffusionProcess.ode_variables`):

        y_s = y_t + (τ_s − τ_t) (y_t − x̂0(t))/τ_t.

    For the flow process (s = 1, τ = t) this is the flow-matching sampler x_s = x_t + (s − t) v̂(x_t, t)
    with v̂ = (x_t − x̂0)/t = ε̂ − x̂0 (Lipman et al. 2023); for VP it is Euler in the EDM variables y = x/α,
    σ̃ = σ/α (Karras et al. 2022, Algorithm 1 without the correction). For both families it equals DDIM at
    η = 0 (x_s = α_s x̂0 + σ_s ε̂) algebraically. First order; one denoiser evaluation per step; default 50
    steps on the uniform grid in t (the usual flow-matching grid).
    """

    name = "euler"
    default_steps = 50

    def step(self, x_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return _ode_step(self, x_t, t, s, second_order=False)


class Heun(Sampler):
    """Heun's second-order method on the probability-flow ODE dy/dτ = (y − x̂0)/τ in the process's ODE
    variables (y = x/s_t, τ_t; :meth:`~physdiff.diffusion.schedule.DiffusionProcess.ode_variables`):

        d = (y_t − x̂0(t))/τ_t,  ŷ = y_t + (τ_s − τ_t) d,  d' = (ŷ − x̂0(ŷ s_s, s))/τ_s,
        y_s = y_t + (τ_s − τ_t) (d + d')/2.

    VP: the EDM variables y = x/α, τ = σ̃ = σ/α (Karras et al. 2022, Algorithm 1). Flow: y = x, τ = t, i.e.
    Heun on dx/dt = v̂(x_t, t) = (x_t − x̂0)/t. Two denoiser evaluations per step; default 25 steps, on the
    EDM (ρ = 7) grid for VP and on the uniform grid in t for flow (flow trajectories are nearly straight in
    (x, t): on the Gaussian benchmark the uniform grid is ~30× more accurate there than the EDM one at
    25 steps, ``benchmarks/bench_core.py``).
    """

    name = "heun"
    default_steps = 25
    default_spacing = "edm"
    spacing_by_process = {"flow": "uniform"}

    @classmethod
    def evaluations(cls, steps: int | None = None) -> int:
        """Two evaluations per step plus the final Tweedie denoise: 2·steps + 1."""
        return 2 * _check_steps(cls.default_steps if steps is None else steps) + 1

    def step(self, x_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return _ode_step(self, x_t, t, s, second_order=True)


class DPMSolverPP2M(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
    Probabilistic Models", Algorithm 2): the multistep second-order solver of the probability-flow ODE in
    its data-prediction form, exact in the linear part. With λ = log(α/σ) (half the log-SNR) the ODE's
    solution from t to s is x_s = (σ_s/σ_t) x_t + σ_s ∫_{λ_t}^{λ_s} e^{λ} x̂0(λ) dλ (their exact solution with
    the data-prediction model; it follows from the EDM ODE dy/dσ̃ = (y − x̂0)/σ̃, y = x/α, σ̃ = e^{−λ}, so it
    holds for any (α, σ), VP or flow); with h_i = λ_{t_i} − λ_{t_{i−1}} and x̂0 linear in λ through the last two
    evaluations:

        D_i = (1 + 1/(2 r_i)) x̂0(t_{i−1}) − 1/(2 r_i) x̂0(t_{i−2}),   r_i = h_{i−1}/h_i,
        x_{t_i} = (σ_{t_i}/σ_{t_{i−1}}) x_{t_{i−1}} − α_{t_i} (e^{−h_i} − 1) D_i,

    and the first step is first order (D_1 = x̂0(t_0): the DDIM step). Every step but the first reuses the
    previous step's evaluation, so one denoiser evaluation per step plus the final Tweedie denoise at
    t_eps. The x̂0 entering D is the hooked, masked one of :meth:`Sampler.denoise`, so known entries stay
    exact (D equals them there too).

    Default 25 steps, uniform in λ (the ``logsnr`` grid; Lu et al.'s "logSNR" step schedule), not the EDM
    ρ = 7 grid: the solver expands x̂0 linearly in λ, so its local error is O(h³ x̂0''(λ)) per step and
    equal steps h spread it evenly where x̂0 varies smoothly in λ; the step ratio r = 1 also keeps the
    multistep weights at (3/2, −1/2). Measured
    on the analytic Gaussian (``benchmarks/bench_core.py``, exact output law), uniform-in-λ is 2.4–5× more
    accurate than the EDM grid at 10–50 steps on the linear and cosine VP schedules and on the flow process
    (at 25 steps max |Σ_N − Σ| = 0.017–0.034 against 0.047–0.14); ``spacing="edm"`` remains available.
    """

    name = "dpmpp2m"
    default_steps = 25
    default_spacing = "logsnr"

    def __init__(
        self,
        denoiser: Denoiser,
        steps: int | None = None,
        *,
        spacing: str | None = None,
        x0_hook: X0Hook | None = None,
        rho: float = 7.0,
    ) -> None:
        super().__init__(denoiser, steps, spacing=spacing, x0_hook=x0_hook, rho=rho)
        self._previous: tuple[Tensor, Tensor] | None = None  # (x̂0(t_{i−1}), h_{i−1}) of the last step

    def reset(self) -> None:
        """Forget the previous step (the next step is a first-order one)."""
        self._previous = None

    def step(self, x_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
        sched = self.schedule
        x0, _ = self.denoise(x_t, t)
        h = 0.5 * (sched.log_snr(s) - sched.log_snr(t))
        if self._previous is None:
            d = x0
        else:
            x0_prev, h_prev = self._previous
            half_over_r = 0.5 * h / h_prev  # 1/(2 r) with r = h_prev/h
            d = (1.0 + half_over_r) * x0 - half_over_r * x0_prev
        self._previous = (x0, h)
        return (sched.sigma(s) / sched.sigma(t)) * x_t - sched.alpha(s) * torch.expm1(-h) * d


#: name → sampler class; a new sampler is one class and one line here.
SAMPLERS: dict[str, type[Sampler]] = {
    DDPM.name: DDPM,
    DDIM.name: DDIM,
    Heun.name: Heun,
    Euler.name: Euler,
    DPMSolverPP2M.name: DPMSolverPP2M,
}


def make_sampler(
    name: str,
    denoiser: Denoiser,
    *,
    steps: int | None = None,
    eta: float | None = None,
    spacing: str | None = None,
    x0_hook: X0Hook | None = None,
) -> Sampler:
    """Build the sampler ``name`` (a key of :data:`SAMPLERS`).

    ``steps`` and ``spacing`` default per sampler; ``eta`` must lie in [0, 1] and is used by samplers that
    have one (``ddim``; its default there is 0) and ignored by the others (``ddpm`` is η = 1; ``euler``,
    ``heun`` and ``dpmpp2m`` are deterministic). Raises ``ValueError`` naming the valid choices for an unknown
    sampler or spacing, a non-positive or non-integer step count, or η outside [0, 1].
    """
    try:
        cls = SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(map(repr, SAMPLERS))}") from None
    if steps is not None:
        _check_steps(steps)
    if eta is not None:
        _check_eta(eta)
    options = {"eta": eta} if cls.has_eta and eta is not None else {}
    return cls(denoiser, steps, spacing=spacing, x0_hook=x0_hook, **options)


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
    loop: Loop | None = None,
    **context: Tensor,
) -> Tensor:
    """Draw samples of shape ``shape`` from the model: ``make_sampler(sampler, ...)(shape, ...)``.

    Args:
        sampler: ``"ddpm"`` (ancestral, default 1000 steps), ``"ddim"`` (with ``eta``, default 50 steps),
            ``"euler"`` (default 50 steps), ``"heun"`` (default 25 steps) or ``"dpmpp2m"`` (DPM-Solver++(2M),
            default 25 steps); any key of :data:`SAMPLERS`. All work for the VP and the flow process (the
            denoiser's ``schedule``); for flow, ``euler``/``heun`` integrate dx/dt = v̂ in (x, t).
        spacing: time grid, ``"uniform"`` in t, ``"edm"`` (ρ = 7 in σ/α) or ``"logsnr"``; default per sampler.
        steps: number of steps (denoiser evaluations: ``SAMPLERS[sampler].evaluations(steps)``, i.e.
            ddpm/ddim/euler/dpmpp2m steps + 1, heun 2·steps + 1).
        eta: DDIM stochasticity in [0, 1] (default 1 here, the ancestral limit); ignored by the others.
        generator: a seeded ``torch.Generator`` for reproducible draws.
        known, mask: conditioning; known entries are kept fixed.
        x0_hook: optional ``f(x̂0, t) -> x̂0`` applied after every denoiser evaluation.
        loop: optional method that drives the sampling loop (:meth:`Sampler.__call__`).
    """
    smp = make_sampler(sampler, denoiser, steps=steps, eta=eta, spacing=spacing, x0_hook=x0_hook)
    return smp(
        shape,
        known=known,
        mask=mask,
        generator=generator,
        dtype=dtype,
        device=device,
        progress=progress,
        loop=loop,
        **context,
    )
