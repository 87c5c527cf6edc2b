r"""``dflow``: D-Flow (Ben-Hamu, Puny, Gat, Karrer, Singer & Lipman, ICML 2024, arXiv:2402.14017): optimise the
initial noise by differentiating through the ODE solve.

    ε* = argmin_ε ‖R(Φ(ε))‖²  by L-BFGS (``iterations`` iterations, learning rate ``scale``),  sample = Φ(ε*),

Φ the deterministic solve from x_{t_max} = s ε (projected on the data subspace) over the sampler's grid with
the DDIM η = 0 / flow Euler step x_s = α_s x̂0 + σ_s ε̂ (the last step lands on x̂0), back-propagated through
every denoiser evaluation. It starts from the same initial noise as every other method. Cost: N evaluations
and one backward pass through all of them per L-BFGS function evaluation, memory O(N) activations — for small
tables.

Deviations: Φ is the sampler's own grid with the first-order step above (the paper's experiments solve the
ODE with a midpoint rule; any deterministic solver is allowed by the method); the start is the sampler's
noise (the paper's blended initialisation is for inverse problems with observations); no regulariser on ε
(the paper's optional χ² term on ‖ε‖; the PCFM/ECI benchmarks use none); torch's L-BFGS without line search
(as those benchmarks); the loss is summed over the batch (samples are independent, but L-BFGS's step and
curvature history are shared, so a sample's result depends on its batch); also run on VP models through
their probability-flow ODE, which the paper names as the diffusion case of the method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from physdiff.priors.sampling.base import SamplingMethod, coefficients, targets

if TYPE_CHECKING:
    from physdiff.diffusion.samplers import Sampler

__all__ = ["DFlowMethod"]


class DFlowMethod(SamplingMethod):
    """D-Flow (module docstring)."""

    name = "dflow"
    reference = "Ben-Hamu et al., D-Flow: Differentiating through Flows for Controlled Generation, ICML 2024"

    def check_options(self) -> None:
        if self.options.t_start != 1.0:
            raise ValueError("dflow: t_start applies to projection, guidance, diffusionpde and dps only; leave it at 1")
        if not self.options.scale > 0:
            raise ValueError(f"dflow: scale (the L-BFGS learning rate) must be > 0, got {self.options.scale}")

    @staticmethod
    def solve(sampler: Sampler, x: Tensor, ts: Tensor) -> Tensor:
        """Φ: the deterministic ODE solve from ``x`` (differentiable)."""
        x = sampler.project(x)
        for t, s in zip(ts[:-1], targets(ts), strict=True):
            x0, eps = sampler.denoise(x, t)
            a_s, s_s = coefficients(sampler, s)
            x = a_s * x0 + s_s * eps
        return x

    def loop(self, sampler: Sampler, x: Tensor, ts: Tensor) -> Tensor:
        o, law = self.options, self.law
        noise = x.detach().clone().requires_grad_(True)
        opt = torch.optim.LBFGS([noise], lr=o.scale, max_iter=o.iterations)

        def closure() -> Tensor:
            loss = law.loss(self.solve(sampler, noise, ts)).sum()
            (noise.grad,) = torch.autograd.grad(loss, noise)  # not into the network's parameters
            return loss.detach()

        with torch.enable_grad():
            opt.step(closure)
        with torch.no_grad():
            return self.solve(sampler, noise.detach(), ts)
