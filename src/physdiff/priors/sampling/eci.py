r"""``eci``: Extrapolation–Correction–Interpolation (Cheng, Han, Maddix, Ansari, Stuart, Mahoney & Wang,
"Gradient-Free Generation for Hard-Constrained Systems", ICLR 2025), on our flow-matching models.

Paper time τ = 1 − t (noise at τ = 0); x_τ = τ x_1 + (1 − τ) ε. Per step t → s of the sampler's grid (the last
target s = 0, the data end) and for each of the ``iterations`` = M mixing iterations m = 1..M:

* (resampling) every ``resample_every``-th mixing iteration, counted over the whole trajectory, the noise ε is
  drawn afresh (``resample_every = 0``: never; ε stays the initial noise);
* extrapolation: x̂1 = x_t − t v̂ = x̂0(x_t, t);
* correction: x̂1 ← C(x̂1), the exact projection onto h = 0 (:class:`~physdiff.priors.sampling.projection.
  Projector`; the paper's C for linear constraints is this orthogonal projection; up to 10 Gauss–Newton
  steps, stopping at ``tol``, for a nonlinear law);
* interpolation: x_t ← (1 − t) x̂1 + t ε for m < M (mixing at the same time), x_s = (1 − s) x̂1 + s ε for m = M.

The last step lands on the corrected endpoint, which is the sample (exact to solver precision for an affine
law). M denoiser evaluations per step; no gradients. Deviations: the correction is masked (known entries are
never moved) and Gauss–Newton for a nonlinear law; resampled noise is the sampler's Gaussian draw projected on
the data subspace. Defined on the flow-matching path only (a VP model is refused).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from physdiff.priors.sampling.base import SamplingMethod, targets
from physdiff.priors.sampling.projection import PROJECTION_METHODS, make_projector

if TYPE_CHECKING:
    from physdiff.diffusion.samplers import Sampler

__all__ = ["ECIMethod"]

#: most Gauss–Newton steps of the correction (one is exact, and taken alone, for an affine law; stops at tol)
NEWTON_STEPS = 10


class ECIMethod(SamplingMethod):
    """ECI (module docstring)."""

    name = "eci"
    reference = "Cheng et al., Gradient-Free Generation for Hard-Constrained Systems, ICLR 2025 (arXiv:2412.01786)"
    processes = ("flow",)
    process_note = (
        "ECI extrapolates and re-interpolates along the flow-matching path (1 − t) x̂0 + t ε; the paper defines it "
        "for flow matching only (train with diffusion.process=flow)"
    )

    def check_options(self) -> None:
        o = self.options
        if o.method not in PROJECTION_METHODS:
            raise ValueError(f"eci: unknown projection method {o.method!r}; choose one of {PROJECTION_METHODS}")
        if o.t_start != 1.0:
            raise ValueError("eci: t_start applies to projection, guidance, diffusionpde and dps only; leave it at 1")
        if o.resample_every < 0:
            raise ValueError(f"eci: resample_every must be >= 0, got {o.resample_every}")
        self.projector = make_projector(self.law, o)

    def loop(self, sampler: Sampler, x: Tensor, ts: Tensor) -> Tensor:
        o = self.options
        eps = x / sampler.schedule.start_std()  # the initial noise
        count = 0
        x1 = x
        for t, s in zip(ts[:-1], targets(ts), strict=True):
            for m in range(o.iterations):
                count += 1
                if o.resample_every and count % o.resample_every == 0:
                    eps = sampler.noise(x)
                x0, _ = sampler.denoise(x, t)  # extrapolation
                x1 = self.projector(x0, self.law.free(x0), NEWTON_STEPS, o.tol)
                x = (1 - t) * x1 + t * eps if m < o.iterations - 1 else (1 - s) * x1 + s * eps
        return x1
