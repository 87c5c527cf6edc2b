r"""``pcfm``: Physics-Constrained Flow Matching (Utkarsh, Cai, Edelman, Gómez-Bombarelli & Rackauckas, NeurIPS
2025, arXiv:2506.04171), Algorithm 1, on our flow-matching models.

Paper time τ ∈ [0, 1] runs from noise (τ = 0) to data (τ = 1), x_τ = τ x_1 + (1 − τ) x_0 with x_0 the noise; ours
runs the other way, x_t = (1 − t) x̂0 + t ε, so τ = 1 − t and the paper's velocity is −v̂. Per step t → s of
the sampler's grid (the last target is s = 0, the data end, as the paper's grid ends at τ = 1):

1. shoot to the endpoint: x̂1 = x_τ + (1 − τ) v̂_paper = x_t − t v̂ = x̂0(x_t, t), the denoiser's Tweedie estimate;
2. Gauss–Newton projection onto h = 0: x̂1 ← x̂1 − M Jᵀ (J M Jᵀ)⁻¹ h(x̂1), ``iterations`` times (one is exact
   for an affine h);
3. re-interpolate along the OT path from the *initial* noise ε₀ (the draw the sample started from, kept for
   the whole trajectory): x̂_s = (1 − s) x̂1 + s ε₀;
4. optional relaxed penalty correction (``penalty`` = λ > 0): ``penalty_steps`` gradient steps of size
   ``penalty_step`` on ‖x − x̂_s‖² + λ ‖h(x − γ v̂)‖², γ = max(s, 10⁻³), with v̂ = (x_t − x̂0)/t the velocity
   at the current state, held fixed (detached), starting from x̂_s;

and after the last step a final Gauss–Newton projection of the endpoint. One denoiser evaluation per step.

Deviations: the projection is masked (M = the free entries: known/conditioned entries are never moved) and
solved by :class:`~physdiff.priors.sampling.projection.Projector` (Cholesky / sparse LU / CG) instead of the
authors' dense J Jᵀ + 10⁻⁶ I solve; the grid is the sampler's (uniform in t for flow by default) rather than
a fixed uniform one. Defined on the flow-matching path only (a VP model is refused).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from physdiff.priors.sampling.base import SamplingMethod, targets
from physdiff.priors.sampling.projection import PROJECTION_METHODS, make_projector

if TYPE_CHECKING:
    from physdiff.diffusion.samplers import Sampler

__all__ = ["PCFMMethod"]

GAMMA_MIN = 1e-3  # the authors' clamp of γ = 1 − τ' in the relaxed correction


class PCFMMethod(SamplingMethod):
    """PCFM (module docstring)."""

    name = "pcfm"
    reference = "Utkarsh, Cai et al., Physics-Constrained Flow Matching, NeurIPS 2025 (arXiv:2506.04171)"
    processes = ("flow",)
    process_note = (
        "PCFM shoots to the endpoint and re-interpolates along the flow-matching path (1 − t) x̂0 + t ε from the "
        "initial noise; the paper defines it for flow matching only (train with diffusion.process=flow)"
    )

    def check_options(self) -> None:
        o = self.options
        if o.method not in PROJECTION_METHODS:
            raise ValueError(f"pcfm: unknown projection method {o.method!r}; choose one of {PROJECTION_METHODS}")
        if o.t_start != 1.0:
            raise ValueError("pcfm: t_start applies to projection, guidance, diffusionpde and dps only; leave it at 1")
        if o.penalty < 0 or o.penalty_step <= 0 or o.penalty_steps < 1:
            raise ValueError(
                f"pcfm: penalty must be >= 0, penalty_step > 0 and penalty_steps >= 1, got {o.penalty}, "
                f"{o.penalty_step}, {o.penalty_steps}"
            )
        self.projector = make_projector(self.law, o)

    def relaxed_correction(self, x_hat: Tensor, v: Tensor, s: float, free: Tensor) -> Tensor:
        """Gradient steps on ‖x − x̂_s‖² + λ ‖h(x − γ v)‖² from x̂_s (v held fixed), free entries only."""
        o, h = self.options, self.law.residual
        gamma = max(s, GAMMA_MIN)
        x = x_hat.detach()
        for _ in range(o.penalty_steps):
            with torch.enable_grad():
                xg = x.requires_grad_(True)
                loss = (xg - x_hat).square().sum() + o.penalty * h(xg - gamma * v).square().sum()
                (g,) = torch.autograd.grad(loss, xg)
            x = (x - o.penalty_step * g * free).detach()
        return x

    def loop(self, sampler: Sampler, x: Tensor, ts: Tensor) -> Tensor:
        o = self.options
        eps0 = x / sampler.schedule.start_std()  # the initial noise, kept for every re-interpolation
        for t, s in zip(ts[:-1], targets(ts), strict=True):
            x0, _ = sampler.denoise(x, t)  # x̂1 = x_t − t v̂: the shot to the endpoint
            free = self.law.free(x0)
            x1 = self.projector(x0, free, o.iterations, o.tol)
            x_next = (1 - s) * x1 + s * eps0
            if o.penalty > 0:
                x_next = self.relaxed_correction(x_next, ((x - x0) / t).detach(), float(s), free)
            x = x_next
        return self.projector(x, self.law.free(x), o.iterations, o.tol)  # final projection of the endpoint
