r"""``diffusionpde``: DiffusionPDE's physics guidance (Huang, Yang, Wang & Park, NeurIPS 2024, arXiv:2406.17763).

The loss of the law's residual on the extrapolated (denoised) sample, L = ‖R(x̂0)‖² (observations: our known
entries are exact in x̂0, so their loss term is 0), and a gradient step on the state after each ODE step:

    x_s = α_s x̂0 + σ_s ε̂    (the deterministic DDIM / flow Euler step, one evaluation),
    x_s ← x_s − η M ∇_{x_t} L,   η = ``scale``,  applied at t ≤ ``t_start``.

* flow models follow the flow-matching form of the method used by the PCFM and ECI benchmarks: the velocity is
  held fixed (detached), so x̂0 = x_t − t v̂ and ∇_{x_t} L = ∇_{x̂0} L, no gradient through the network;
* VP models follow the paper's EDM sampler: the gradient is taken through the denoiser, ∇_{x_t} L(x̂0(x_t)).

Deviations: one Euler/DDIM evaluation per step (the paper's EDM sampler is Heun's; the flow benchmark averages
v̂ at t and t + Δt); the paper weights observation and PDE losses by separate ζ's and applies the PDE term
only in the last 20 % of steps — here η weighs the law and ``t_start`` restricts the steps (t_start = 0.2 is
the paper's schedule); known entries are never moved (M).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from physdiff.priors.sampling.base import SamplingMethod, coefficients, targets

if TYPE_CHECKING:
    from physdiff.diffusion.samplers import Sampler

__all__ = ["DiffusionPDEMethod"]


class DiffusionPDEMethod(SamplingMethod):
    """DiffusionPDE guidance (module docstring)."""

    name = "diffusionpde"
    reference = "Huang et al., DiffusionPDE: Generative PDE-Solving under Partial Observation, NeurIPS 2024"

    def check_options(self) -> None:
        if not self.options.scale >= 0:
            raise ValueError(f"diffusionpde: scale (the step size η) must be >= 0, got {self.options.scale}")

    def loop(self, sampler: Sampler, x: Tensor, ts: Tensor) -> Tensor:
        o, law = self.options, self.law
        through_network = sampler.schedule.kind != "flow"
        for t, s in zip(ts[:-1], targets(ts), strict=True):
            guided = float(t) <= o.t_start and o.scale > 0
            with torch.enable_grad():
                xg = x.detach().requires_grad_(guided and through_network)
                x0, eps = sampler.denoise(xg, t)
                if guided:
                    if through_network:
                        (grad,) = torch.autograd.grad(law.loss(x0).sum(), xg)
                    else:  # v̂ held fixed: x̂0 = x_t − t v̂, so ∇_{x_t} = ∇_{x̂0}
                        x0g = x0.detach().requires_grad_(True)
                        (grad,) = torch.autograd.grad(law.loss(x0g).sum(), x0g)
            a_s, s_s = coefficients(sampler, s)
            x = (a_s * x0 + s_s * eps).detach()
            if guided:
                x = x - o.scale * law.free(x) * grad
        return x
