r"""Physical-feasibility priors: the penalty J_R on the Tweedie estimate x̂0 (method.md §3).

Total loss J(θ) = J_score(θ) + Σ_i λ_i E_t[w_i(t) penalty_i(x̂0, x0)], with one of three forms chosen by
the prior's ``case`` (the Jensen gap R(E[x0|x_t]) ≠ E[R(x0)|x_t] decides which one is sound):

* ``"linear"`` / ``"convex"``: penalty = mean ‖R(x̂0)‖². Linear R commutes with the posterior mean, so
  there is no Jensen gap; for a convex inequality c(x) ≤ 0 write R = ReLU(c(x)).
* ``"multilinear"``: the same form; the gap is a posterior covariance that vanishes as σ_t → 0.
* ``"nonlinear"``: match features instead, penalty = mean ‖h(x̂0) − h(x0)‖² with h = :meth:`Prior.features`.
  ``features`` may return a tensor or a dict of named feature groups (each group averaged separately and
  weighted by :meth:`Prior.group_weights`).

A user prior subclasses :class:`Prior` and implements :meth:`Prior.residual` (or :meth:`Prior.features`
for the nonlinear case) as a torch function of a batched state; see ``docs/priors.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["CASES", "Prior", "per_sample_mean", "total_prior_loss"]

CASES: tuple[str, ...] = ("linear", "convex", "multilinear", "nonlinear")


def per_sample_mean(sq: Tensor) -> Tensor:
    """Mean over every axis but the first (the batch); ``[B]``."""
    if sq.dim() == 1:
        return sq
    return sq.flatten(1).mean(1)


@dataclass
class Prior:
    """A physical-feasibility prior acting on the Tweedie estimate x̂0.

    Attributes:
        name: a unique name, used as the log key.
        case: ``"linear"``, ``"convex"``, ``"multilinear"`` or ``"nonlinear"``.
        weight: λ ≥ 0.
        time_weight: w(t) mapping diffusion times ``[B]`` to weights ``[B]``; ``None`` means w ≡ 1.

    Subclasses implement :meth:`residual` (linear, convex, multilinear) or :meth:`features` (nonlinear).
    """

    name: str = "prior"
    case: str = "linear"
    weight: float = 1.0
    time_weight: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.case not in CASES:
            raise ValueError(f"prior {self.name!r}: unknown case {self.case!r}; choose one of {CASES}")
        if not float(self.weight) >= 0.0:  # also rejects NaN
            raise ValueError(f"prior {self.name!r}: weight λ must be >= 0, got {self.weight}")
        self.weight = float(self.weight)

    # --------------------------------------------------------------------------------- to implement
    def residual(self, x: Tensor, **context: Any) -> Tensor:
        """R(x) for a batched state ``x`` ``[B, ...]``; returns ``[B, ...]`` (zero on feasible data)."""
        raise TypeError(f"prior {self.name!r} ({self.case}) must implement residual(x, **context)")

    def features(self, x: Tensor, **context: Any) -> Tensor | Mapping[str, Tensor]:
        """h(x) for a nonlinear prior: ``[B, ...]`` or a dict of named groups ``[B, ...]``."""
        raise TypeError(f"prior {self.name!r} ({self.case}) must implement features(x, **context)")

    def group_weights(self) -> Mapping[str, float]:
        """Relative weights of named feature groups (missing groups weigh 1)."""
        return {}

    # ------------------------------------------------------------------------------------ evaluation
    def w(self, t: Tensor) -> Tensor:
        """The time weight w(t), ``[B]``."""
        if self.time_weight is None:
            return torch.ones_like(t)
        return self.time_weight(t)

    def _feature_penalty(self, h_hat: Tensor | Mapping[str, Tensor], h: Tensor | Mapping[str, Tensor]) -> Tensor:
        if isinstance(h_hat, Tensor):
            assert isinstance(h, Tensor)
            return per_sample_mean((h_hat - h).square())
        assert isinstance(h, Mapping)
        weights = self.group_weights()
        total: Tensor | None = None
        for key, value in h_hat.items():
            term = weights.get(key, 1.0) * per_sample_mean((value - h[key]).square())
            total = term if total is None else total + term
        if total is None:
            raise ValueError(f"prior {self.name!r}: features() returned no feature groups")
        return total

    def penalty(self, x0_hat: Tensor, x0: Tensor | None = None, t: Tensor | None = None, **context: Any) -> Tensor:
        """Per-sample penalty ``[B]`` (before λ and w(t)).

        linear / convex / multilinear: mean ‖R(x̂0)‖²; nonlinear: mean ‖h(x̂0) − h(x0)‖² (needs ``x0``).
        ``t`` is accepted for subclasses whose penalty depends on the diffusion time.
        """
        if self.case == "nonlinear":
            if x0 is None:
                raise ValueError(f"nonlinear prior {self.name!r} needs the clean batch x0 to match features")
            with torch.no_grad():
                target = self.features(x0, **context)
            return self._feature_penalty(self.features(x0_hat, **context), target)
        return per_sample_mean(self.residual(x0_hat, **context).square())

    def check_ground_truth(self, x0: Tensor, *, tol: float = 1e-6, **context: Any) -> None:
        """Raise ``ValueError`` unless the prior is at its floor on clean data.

        For residual priors every sample must have mean ‖R(x0)‖² ≤ ``tol`` (a larger value points at a
        sign, unit or scale bug); for nonlinear priors h(x0) must be finite.
        """
        with torch.no_grad():
            if self.case == "nonlinear":
                h = self.features(x0, **context)
                groups = h.values() if isinstance(h, Mapping) else [h]
                if not all(bool(torch.isfinite(g).all()) for g in groups):
                    raise ValueError(f"prior {self.name!r}: features h(x0) are not finite on the data")
                return
            res = per_sample_mean(self.residual(x0, **context).square())
            worst = float(res.max())
            if not worst <= tol:
                raise ValueError(
                    f"prior {self.name!r}: residual is not ≈ 0 on the ground-truth data "
                    f"(max per-sample mean ‖R(x0)‖² = {worst:.3e} > tol = {tol:.1e}); "
                    "check the sign, units/scale and constants of the prior"
                )


def total_prior_loss(
    priors: Iterable[Prior], loss_output: Any, context: Mapping[str, Any] | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Σ_i λ_i E_batch[w_i(t) penalty_i(x̂0, x0)] on one forward pass.

    Args:
        priors: the priors (unique names).
        loss_output: a :class:`physdiff.diffusion.objective.LossOutput` (uses ``pred.x0``, ``x0``, ``t``).
        context: keyword context for the priors (``masses``, ``edges``, ...).

    Returns:
        ``(total, terms)``: the scalar total (differentiable) and, per prior name, its contribution
        λ_i E[w_i(t) penalty_i] as a float (the terms sum to the total), for logging.
    """
    ctx = dict(context or {})
    x0_hat, x0, t = loss_output.pred.x0, loss_output.x0, loss_output.t
    total = x0_hat.new_zeros(())
    terms: dict[str, float] = {}
    for prior in priors:
        if prior.name in terms:
            raise ValueError(f"duplicate prior name {prior.name!r}; give each prior a unique name")
        pen = prior.penalty(x0_hat, x0, t, **ctx)
        term = prior.weight * (prior.w(t) * pen).mean()
        total = total + term
        terms[prior.name] = float(term.detach())
    return total, terms
