r"""Physical-feasibility priors: the penalty J_R on the Tweedie estimate x̂0 (method.md §3).

Total loss J(θ) = J_score(θ) + Σ_i λ_i E_t[w_i(t) penalty_i], and the Jensen gap R(E[x0|x_t]) ≠
E[R(x0)|x_t] decides which penalty is sound, hence two kinds of prior:

* :class:`ResidualPrior` — cases ``linear`` / ``convex`` / ``multilinear``: penalty = mean ‖R(x̂0)‖².
  Linear R commutes with the posterior mean (no gap); for a convex inequality c(x) ≤ 0 write
  R = ReLU(c(x)); for a multilinear R (products of distinct coordinates) the gap is a posterior covariance
  that vanishes as σ_t → 0.
* :class:`FeaturePrior` — case ``nonlinear``, R = g(h(x0)): match the features instead,
  penalty = mean ‖h̃ − h(x0)‖², with h̃ = h(x̂0) here (or an auxiliary head,
  :class:`physdiff.priors.aux_head.AuxHeadPrior`). ``features`` may return a tensor or a dict of named
  groups (each averaged separately and weighted by :meth:`FeaturePrior.group_weights`).

A prior that states a law R(x) = 0 which sampling can enforce is a :class:`Constraint` (every residual
prior is one; a feature prior may be one too, e.g. energy: it trains on features and its conservation
residual E_l − E_0 is what a sampling-time projection acts on, :mod:`physdiff.priors.sampling`).

A user prior is one small class: subclass :class:`ResidualPrior` and implement ``residual(x, **context)``,
or :class:`FeaturePrior` and implement ``features(x, **context)`` (``docs/priors.md``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = [
    "CASES",
    "Prior",
    "PriorNotApplicable",
    "Constraint",
    "law_error",
    "law_rms",
    "prior_label",
    "ResidualPrior",
    "FeaturePrior",
    "per_sample_mean",
    "total_prior_loss",
]

CASES: tuple[str, ...] = ("linear", "convex", "multilinear", "nonlinear")


def per_sample_mean(sq: Tensor) -> Tensor:
    """Mean over every axis but the first (the batch); ``[B]``."""
    if sq.dim() == 1:
        return sq
    return sq.flatten(1).mean(1)


class PriorNotApplicable(ValueError):
    """A prior whose law the data do not obey (measured on the ground truth): the arm that trains with it, or the
    constraint row that enforces it, is refused; the other arms run."""


def prior_label(name: str) -> str:
    """A prior's label in tables, figures and the training log: a user prior named by its import path
    (``module:Class``, ``my_priors.py:Class``) is its class, ``Class``; a built-in name is itself."""
    return name.rsplit(":", 1)[1] if ":" in name else name


def law_rms(prior: Constraint, x: Tensor, **context: Any) -> Tensor:
    """Per-sample RMS of the law's residual R(x), ``[B]`` (the ``law:<name>`` metric)."""
    with torch.no_grad():
        return per_sample_mean(prior.residual(x, **context).square()).sqrt()


def law_error(prior: Constraint, x0: Tensor, **context: Any) -> tuple[float, float, float]:
    """``(rms, scale, relative)`` of a law on data: the RMS of R(x0) over the batch, the residual's own scale
    (:meth:`Constraint.law_scale`) and their ratio, the quantity the ground-truth check bounds."""
    with torch.no_grad():
        rms = float(per_sample_mean(prior.residual(x0, **context).square()).mean().sqrt())
        scale = float(prior.law_scale(x0, **context))
    tiny = torch.finfo(torch.float64).tiny
    return rms, scale, rms / max(scale, tiny) if rms > 0 else 0.0


@dataclass
class Prior(ABC):
    """A physical-feasibility prior acting on the Tweedie estimate x̂0.

    Attributes:
        name: a unique name, used as the log key.
        case: ``"linear"``, ``"convex"``, ``"multilinear"`` (:class:`ResidualPrior`) or ``"nonlinear"``
            (:class:`FeaturePrior`).
        weight: λ ≥ 0.
        time_weight: w(t) mapping diffusion times ``[B]`` to weights ``[B]``; ``None`` means w ≡ 1.
        tol: the ground-truth check's tolerance on the *relative* residual RMS(R(x0)) / scale (config key
            ``priors.N.tol``); ``None``: the class's ``DEFAULT_TOL``.
    """

    name: str = "prior"
    case: str = "linear"
    weight: float = 1.0
    time_weight: Callable[[Tensor], Tensor] | None = None
    tol: float | None = None

    #: the default tolerance of :meth:`check_ground_truth` (relative to the residual's own scale)
    DEFAULT_TOL: ClassVar[float] = 1e-6

    CASES_OF_KIND: ClassVar[tuple[str, ...]] = CASES

    def __post_init__(self) -> None:
        if self.case not in self.CASES_OF_KIND:
            raise ValueError(
                f"prior {self.name!r} ({type(self).__name__}): case {self.case!r} is not one of {self.CASES_OF_KIND}"
            )
        if not float(self.weight) >= 0.0:  # also rejects NaN
            raise ValueError(f"prior {self.name!r}: weight λ must be >= 0, got {self.weight}")
        self.weight = float(self.weight)
        if self.tol is not None and not float(self.tol) >= 0.0:
            raise ValueError(f"prior {self.name!r}: tol must be >= 0, got {self.tol}")

    def tolerance(self, tol: float | None = None) -> float:
        """The check's tolerance: ``tol`` if given, else the prior's ``tol``, else ``DEFAULT_TOL``."""
        if tol is not None:
            return float(tol)
        return float(self.tol) if self.tol is not None else float(self.DEFAULT_TOL)

    def w(self, t: Tensor) -> Tensor:
        """The time weight w(t), ``[B]``."""
        if self.time_weight is None:
            return torch.ones_like(t)
        return self.time_weight(t)

    @abstractmethod
    def penalty(self, x0_hat: Tensor, x0: Tensor | None = None, t: Tensor | None = None, **context: Any) -> Tensor:
        """Per-sample penalty ``[B]`` (before λ and w(t)); ``context`` holds ``masses``, ``edges``, ``cond``,
        and the denoiser's ``hidden`` states when it returned them."""

    @abstractmethod
    def check_ground_truth(self, x0: Tensor, *, tol: float | None = None, **context: Any) -> None:
        """Raise ``ValueError`` unless the prior is at its floor on clean data (a sign, unit or scale bug)."""


class Constraint(ABC):
    """A law R(x) = 0 that sampling-time constraints can enforce (projection, guidance), and that tables report
    as the metric ``law:<name>`` (the RMS of R on generated samples)."""

    @abstractmethod
    def residual(self, x: Tensor, **context: Any) -> Tensor:
        """R(x) for a batched state ``x`` ``[B, ...]``; returns ``[B, ...]`` (zero on feasible data)."""

    def law_scale(self, x: Tensor, **context: Any) -> Tensor:
        """The residual's own scale on data ``x``: the yardstick of the ground-truth check, RMS(R(x0)) / scale ≤
        tol. Override it with the RMS of one typical term of the law (e.g. m·a of Newton's law, u_t of a PDE);
        the default is the residual's RMS response to unit white noise in the prior's input coordinates (the
        model's, normalised to unit scale), which a high derivative dominates."""
        g = torch.Generator(device=x.device).manual_seed(0)
        xi = torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            d = self.residual(x + xi, **context) - self.residual(x, **context)
        return d.square().mean().sqrt()


@dataclass
class ResidualPrior(Prior, Constraint):
    """Linear / convex / multilinear prior: penalty = mean ‖R(x̂0)‖² (:meth:`residual` to implement)."""

    CASES_OF_KIND: ClassVar[tuple[str, ...]] = ("linear", "convex", "multilinear")

    def penalty(self, x0_hat: Tensor, x0: Tensor | None = None, t: Tensor | None = None, **context: Any) -> Tensor:
        return per_sample_mean(self.residual(x0_hat, **context).square())

    #: what a refusal suggests checking
    CHECK_HINT: ClassVar[str] = "check the sign, units/scale and constants of the prior"

    def check_ground_truth(self, x0: Tensor, *, tol: float | None = None, **context: Any) -> None:
        """The law must hold on clean data relative to its own scale: RMS(R(x0)) / :meth:`law_scale` ≤ ``tol``
        (default: the prior's ``tol``, else ``DEFAULT_TOL``); :class:`PriorNotApplicable` otherwise."""
        limit = self.tolerance(tol)
        rms, scale, rel = law_error(self, x0, **context)
        if not rel <= limit:
            raise PriorNotApplicable(
                f"prior {self.name!r}: residual is not ≈ 0 on the ground-truth data (RMS R = {rms:.3e} is "
                f"{rel:.3e} of its scale {scale:.3e} > tol = {limit:.1e}, priors.N.tol); {self.CHECK_HINT}"
            )


@dataclass
class FeaturePrior(Prior):
    """General nonlinear prior R = g(h(x0)): penalty = mean ‖h(x̂0) − h(x0)‖² (:meth:`features` to implement)."""

    case: str = "nonlinear"
    CASES_OF_KIND: ClassVar[tuple[str, ...]] = ("nonlinear",)

    @abstractmethod
    def features(self, x: Tensor, **context: Any) -> Tensor | Mapping[str, Tensor]:
        """h(x) for a batched state: ``[B, ...]`` or a dict of named groups ``[B, ...]``."""

    def group_weights(self) -> Mapping[str, float]:
        """Relative weights of named feature groups (missing groups weigh 1)."""
        return {}

    def feature_penalty(self, h_hat: Tensor | Mapping[str, Tensor], h: Tensor | Mapping[str, Tensor]) -> Tensor:
        """Σ_g c_g · mean over the entries of group g of (h̃_g − h_g)², per sample ``[B]``."""
        if isinstance(h_hat, Tensor):
            assert isinstance(h, Tensor)
            return per_sample_mean((h_hat - h).square())
        weights = self.group_weights()
        total: Tensor | None = None
        for key, value in h_hat.items():
            if key not in h:
                raise ValueError(f"prior {self.name!r}: feature group {key!r} has a prediction but no target")
            term = weights.get(key, 1.0) * per_sample_mean((value - h[key]).square())
            total = term if total is None else total + term
        if total is None:
            raise ValueError(f"prior {self.name!r}: features() returned no feature groups")
        return total

    def penalty(self, x0_hat: Tensor, x0: Tensor | None = None, t: Tensor | None = None, **context: Any) -> Tensor:
        if x0 is None:
            raise ValueError(f"nonlinear prior {self.name!r} needs the clean batch x0 to match features")
        with torch.no_grad():
            target = self.features(x0, **context)
        return self.feature_penalty(self.features(x0_hat, **context), target)

    def check_ground_truth(self, x0: Tensor, *, tol: float | None = None, **context: Any) -> None:
        """h(x0) must be finite (matching makes the penalty exactly 0 on clean data)."""
        with torch.no_grad():
            h = self.features(x0, **context)
        groups = h.values() if isinstance(h, Mapping) else [h]
        if not all(bool(torch.isfinite(g).all()) for g in groups):
            raise ValueError(f"prior {self.name!r}: features h(x0) are not finite on the data")


def total_prior_loss(
    priors: Iterable[Prior], loss_output: Any, context: Mapping[str, Any] | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Σ_i λ_i E_batch[w_i(t) penalty_i] on one forward pass.

    Args:
        priors: the priors (unique names).
        loss_output: a :class:`physdiff.diffusion.objective.LossOutput` (uses ``pred.x0``, ``x0``, ``t`` and,
            when the denoiser returned them, ``pred.hidden``, passed to the priors as context ``hidden``).
        context: keyword context for the priors (``masses``, ``edges``, ``cond``, ...).

    Returns:
        ``(total, terms)``: the scalar total (differentiable) and, per prior name, its contribution
        λ_i E[w_i(t) penalty_i] as a float (the terms sum to the total), for logging.
    """
    ctx = dict(context or {})
    hidden = getattr(loss_output.pred, "hidden", None)
    if hidden is not None:
        ctx["hidden"] = hidden
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
