r"""``guidance``: normalised gradient steps on ½‖R(x̂0)‖² applied to the Tweedie estimate (our method).

x̂0 ← x̂0 − α M Jᵀ R(x̂0), ``iterations`` times per denoiser evaluation at t ≤ ``t_start``, with α = ``scale``
times the exact line step of the linearised residual (:func:`gradient_guidance`: free of the residual's units
and gain); the sampler then recomputes ε̂ from x_t and the corrected x̂0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from physdiff.priors.sampling.base import SamplingMethod

__all__ = ["GuidanceMethod", "gradient_guidance"]

Residual = Callable[[Tensor], Tensor]


def gradient_guidance(
    residual: Residual, x: Tensor, free: Tensor, scale: float, iterations: int = 1, normalise: bool = True
) -> Tensor:
    r"""``iterations`` gradient steps on ½‖R(x)‖² over the free entries, x ← x − α g with g = M Jᵀ R.

    ``normalise=True`` (the default): α = ``scale`` · ‖g‖² / ‖J g‖² per sample, ``scale`` times the exact line
    minimiser along −g of an affine residual (the Gauss–Newton curvature along the step). The step is then
    free of the residual's units and of the operator's gain — the same ``scale`` ∈ (0, 1] means the same
    thing for a conservation law in physical units and a PDE residual on a 128² grid: ``scale = 1`` removes
    the residual's component along the gradient, smaller values a fraction of it. ``normalise=False``: the
    raw step α = ``scale``, whose size depends on the residual's units. J g is the vector-Jacobian product
    of w ↦ Jᵀw (reverse mode twice; no forward-mode support needed).
    """
    for _ in range(iterations):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            r = residual(xg)
            if not normalise:
                (g,) = torch.autograd.grad(0.5 * r.square().sum(), xg)
                x = (x - scale * g * free).detach()
                continue
            w = torch.zeros_like(r, requires_grad=True)
            (jt_w,) = torch.autograd.grad(r, xg, w, create_graph=True)  # Jᵀ w, linear in w
            g = (torch.autograd.grad(r, xg, r.detach(), retain_graph=True)[0] * free).detach()  # M Jᵀ R
            (jg,) = torch.autograd.grad(jt_w, w, g)  # J g
        dims = tuple(range(1, x.ndim))
        gg = g.square().sum(dims)
        jgjg = jg.detach().flatten(1).square().sum(1)
        alpha = torch.where(jgjg > 0, gg / jgjg.clamp_min(torch.finfo(gg.dtype).tiny), torch.zeros_like(gg))
        x = (x - scale * alpha.reshape(-1, *([1] * (x.ndim - 1))) * g).detach()
    return x


class GuidanceMethod(SamplingMethod):
    """``guidance``: :func:`gradient_guidance` on x̂0 after every denoiser evaluation at t ≤ ``t_start``."""

    name = "guidance"
    reference = "this library (docs/benchmarks.md, 'Normalised guidance')"

    def check_options(self) -> None:
        if not self.options.scale > 0:
            raise ValueError(f"sampling-time guidance: scale must be > 0, got {self.options.scale}")

    def x0_hook(self) -> Callable[[Tensor, Tensor], Tensor]:
        law, o = self.law, self.options

        def hook(x0: Tensor, t: Tensor) -> Tensor:
            if float(t.reshape(-1)[0]) > o.t_start:
                return x0
            return gradient_guidance(law.residual, x0, law.free(x0), o.scale, o.iterations)

        hook.projector = None  # type: ignore[attr-defined]
        return hook
