r"""``dps``: Diffusion Posterior Sampling (Chung, Kim, Mccann, Klasky & Ye, ICLR 2023, arXiv:2209.14687),
Algorithm 1, with the law as the measurement: y = 0, A(x) = R(x).

Per step t → s: x̂0 = x̂0(x_t, t) (Tweedie), the ancestral step x'_s ~ q(x_s | x_t, x̂0) (DDIM at η = 1, i.e.
DDPM), then

    x_s = x'_s − ζ M ∇_{x_t} ‖R(x̂0(x_t))‖,   ζ = ``scale``,  applied at t ≤ ``t_start``,

the gradient of the residual's norm (not squared, as in the authors' code) taken through the denoiser with
respect to x_t. One evaluation (and one backward pass) per step; the last step (to s = 0) lands on x̂0 and
is guided too.

Deviations: the norm is per sample (the authors' code takes one norm over the batch, which couples the samples'
step sizes; identical for a batch of one); the ancestral step is written for any Gaussian process (VP, and the
flow interpolant, where the Tweedie estimate is defined the same way); known entries are never moved (M).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from physdiff.diffusion.samplers import ddim_step
from physdiff.priors.sampling.base import SamplingMethod, coefficients, targets

if TYPE_CHECKING:
    from physdiff.diffusion.samplers import Sampler

__all__ = ["DPSMethod"]


class DPSMethod(SamplingMethod):
    """DPS (module docstring)."""

    name = "dps"
    reference = "Chung et al., Diffusion Posterior Sampling for General Noisy Inverse Problems, ICLR 2023"

    def check_options(self) -> None:
        if not self.options.scale >= 0:
            raise ValueError(f"dps: scale (the step size ζ) must be >= 0, got {self.options.scale}")

    def loop(self, sampler: Sampler, x: Tensor, ts: Tensor) -> Tensor:
        o, law = self.options, self.law
        for t, s in zip(ts[:-1], targets(ts), strict=True):
            guided = float(t) <= o.t_start and o.scale > 0
            with torch.enable_grad():
                xg = x.detach().requires_grad_(guided)
                x0, eps = sampler.denoise(xg, t)
                if guided:
                    norm = law.residual(x0).flatten(1).square().sum(1).clamp_min(torch.finfo(x.dtype).tiny).sqrt()
                    (grad,) = torch.autograd.grad(norm.sum(), xg)
            a_t, s_t = coefficients(sampler, t)
            a_s, s_s = coefficients(sampler, s)
            z = sampler.noise(x) if float(s) > 0 else torch.zeros_like(x)
            x = ddim_step(x, x0.detach(), eps.detach(), a_t, s_t, a_s, s_s, 1.0, z)
            if guided:
                x = x - o.scale * law.free(x) * grad
        return x.detach()
