"""Denoising objectives: noise, data and v matching, from one denoiser evaluation.

With x_t = α_t x_0 + σ_t ε from the denoiser's process (``denoiser.schedule``, VP or flow) and
t ~ U[t_eps, t_max]:

J_noise(θ) = E_{t,x0,ε} w(t) ‖ε_θ(x_t, t) − ε‖²,   minimiser ε* = −σ_t ∇ log q_t(x_t)
J_data(θ)  = E_{t,x0,ε} w(t) ‖x_θ(x_t, t) − x_0‖², minimiser x* = E[x_0 | x_t]  (Tweedie)
J_v(θ)     = E_{t,x0,ε} w(t) ‖v_θ(x_t, t) − v‖²,   v the process's velocity
                                                   (parametrisation.velocity):
             VP:   v = α_t ε − σ_t x_0 (Salimans & Ho 2022);
             flow: v = ε − x_0, so J_v is the (conditional) flow-matching loss of Lipman et al. 2023
                   (eq. 23 with σ_min = 0) / rectified flow (Liu et al. 2023), minimiser
                   v* = E[ε − x_0 | x_t] = (x_t − E[x_0 | x_t]) / t.

Only unknown entries (mask = 0) enter the loss. The returned :class:`LossOutput` exposes the Tweedie
estimate x̂0 so physical priors can add their penalty J_R on the same forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from physdiff.diffusion.parametrisation import Denoiser, DenoiserOutput, velocity

__all__ = ["OBJECTIVES", "LossOutput", "diffusion_loss", "sample_time", "masked_mean"]

OBJECTIVES = ("eps", "x0", "v")


@dataclass
class LossOutput:
    """The score loss and everything a prior needs from the same forward pass."""

    loss: Tensor  # scalar, E w(t) ‖·‖² over the batch
    per_sample: Tensor  # [B], before the time weight
    t: Tensor  # [B]
    weight: Tensor  # [B], w(t)
    x0: Tensor  # clean data
    x_t: Tensor
    eps: Tensor
    pred: DenoiserOutput  # pred.x0 is the Tweedie estimate x̂0


def masked_mean(sq: Tensor, mask: Tensor | None) -> Tensor:
    """Per-sample mean of ``sq`` over the unknown entries (mask = 0); [B]."""
    dims = tuple(range(1, sq.ndim))
    if mask is None:
        return sq.mean(dim=dims)
    free = 1.0 - mask
    return (sq * free).sum(dim=dims) / free.sum(dim=dims).clamp_min(1.0)


def sample_time(
    n: int,
    t_eps: float,
    t_max: float = 1.0,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """t ~ U[t_eps, t_max], stratified over the batch (low-discrepancy, unbiased)."""
    u = (
        torch.arange(n, dtype=dtype, device=device) + torch.rand(n, generator=generator, dtype=dtype, device=device)
    ) / n
    u = u[torch.randperm(n, generator=generator, device=device)]
    return t_eps + (t_max - t_eps) * u


def diffusion_loss(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    objective: str = "eps",
    known: Tensor | None = None,
    mask: Tensor | None = None,
    weight: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    eps: Tensor | None = None,
    return_hidden: bool = False,
    **context: Tensor,
) -> LossOutput:
    """One Monte-Carlo estimate of the chosen denoising objective.

    Args:
        denoiser: the parametrised denoiser.
        x0: a batch of clean data (in the data subspace, e.g. zero centre of mass).
        objective: ``"eps"`` (noise matching), ``"x0"`` (data matching) or ``"v"`` (the process's velocity:
            flow matching for the flow process).
        known, mask: conditioning; known entries are excluded from the loss.
        weight: w(t), default 1.
        t: optional fixed diffusion times [B] (drawn stratified-uniform otherwise).
        eps: optional noise draw (in the data subspace); drawn with ``generator`` otherwise.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if not torch.isfinite(x0).all():
        raise ValueError("the training batch contains NaN or inf values")
    sched = denoiser.schedule
    b = x0.shape[0]
    if t is None:
        t = sample_time(b, sched.t_eps, sched.t_max, generator=generator, dtype=x0.dtype, device=x0.device)
    if mask is not None and known is None:
        known = x0 * mask
    if eps is None:
        eps = denoiser.noise_like(x0, generator, **context)
    alpha, sigma = sched.coefficients(t, x0.ndim)
    x_t = alpha * x0 + sigma * eps
    pred = denoiser(x_t, t, known, mask, return_hidden=return_hidden, **context)
    if objective == "eps":
        sq = (pred.eps - eps) ** 2
    elif objective == "x0":
        sq = (pred.x0 - x0) ** 2
    else:
        sq = (pred.v - velocity(sched).from_eps_x0(eps, x0, alpha, sigma)) ** 2
    per_sample = masked_mean(sq, mask)
    w = torch.ones_like(t) if weight is None else weight(t)
    loss = (w * per_sample).mean()
    return LossOutput(loss=loss, per_sample=per_sample, t=t, weight=w, x0=x0, x_t=x_t, eps=eps, pred=pred)
