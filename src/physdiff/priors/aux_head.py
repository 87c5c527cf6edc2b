r"""The auxiliary-head variant of nonlinear priors (method.md §3.3).

A nonlinear prior R = g(h(x0)) matches features h instead of driving R to zero,

    J_R(θ) = E_{t,x0,ε} w(t) ‖h̃_θ(x_t, t) − h(x0)‖²,

and method.md offers two choices of h̃_θ:

* ``"tweedie"`` (:meth:`physdiff.priors.base.Prior.penalty`): h̃_θ = h(x̂0), the features of the
  Tweedie estimate x̂0 = E_θ[x0 | x_t];
* ``"aux_head"`` (this module): h̃_θ is an extra output head that reads the denoiser's hidden node
  states H_θ(x_t, t) ``[B, L, K, H]`` — the same states the score output is computed from — and
  predicts h(x0) directly. Its minimiser is the posterior mean E[h(x0) | x_t], which exists at every
  noise level (there is no Jensen gap to avoid), and the penalty's gradient shapes the shared trunk.

The head (:class:`FeatureHead`) respects the symmetries of the features. Each feature group has a
*kind* (its layout over particles):

=========  ======================  =============================================================
kind       shape                   prediction from the hidden node states h_k (per frame l)
=========  ======================  =============================================================
``node``   ``[B, L, K]``           h̃_{l,k} = φ(h_{l,k})                       (e.g. |V_{l,k}|²)
``pair``   ``[B, L, K(K−1)/2]``    h̃_{l,ij} = φ(h_i + h_j, h_i ⊙ h_j, e_ij), i < j  (e.g. 1/R_ij)
``frame``  ``[B, L]``              h̃_l = φ(mean_k h_{l,k})                    (e.g. a total energy)
=========  ======================  =============================================================

Pairs are ordered like ``torch.triu_indices(K, K, 1)`` (as the built-in energy priors order them);
e_ij is the spring adjacency from the context (0 without one). The pair input is symmetric in (i, j),
so with E(n)-invariant, permutation-equivariant hidden states (:class:`physdiff.models.egnn.SpaceTimeEGNN`)
every prediction is rotation/translation invariant and permutes with the particles.

**Normalisation.** Feature groups differ in scale (1/R_ij, |V|², e_ij R_ij², in physical units), so the
head predicts *standardised* targets z_g = (h_g(x0) − μ_g) / s_g with one scalar mean μ_g and standard
deviation s_g per group (scalars keep the symmetries), fitted once on the training data
(:meth:`AuxHeadPrior.fit_normalisation`) and stored as buffers of the head (hence checkpointed). The
penalty is Σ_g c_g mean‖z̃_g − z_g‖² (c_g the prior's group weights), i.e. ≈ Σ_g c_g (≈ 1 per group)
for a head that predicts the mean, so λ is *not* on the scale of the Tweedie variant's λ.

**Training and checkpoints.** :func:`attach_aux_heads` registers the heads as ``denoiser.net.aux_heads``
(an ``nn.ModuleDict`` keyed by prior name): the trainer builds its optimiser, gradient clipping, EMA and
checkpoint from ``denoiser.net``, so the heads are trained, averaged, saved and resumed with the network.
Sampling never calls a head; :func:`ignore_aux_head_weights` lets a network built without heads (for
sampling) load such a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from physdiff.priors.base import Prior, per_sample_mean
from physdiff.priors.particles import GravityEnergyPrior, SpringEnergyPrior

__all__ = [
    "AUX_HEADS_ATTR",
    "FEATURE_KINDS",
    "PRIOR_VARIANTS",
    "AuxHeadPrior",
    "FeatureHead",
    "attach_aux_heads",
    "feature_layout",
    "feature_matching_penalty",
    "ignore_aux_head_weights",
    "make_aux_head_prior",
    "pair_inputs",
    "total_prior_loss_with_heads",
]

FEATURE_KINDS: tuple[str, ...] = ("node", "pair", "frame")
PRIOR_VARIANTS: tuple[str, ...] = ("tweedie", "aux_head")
AUX_HEADS_ATTR = "aux_heads"
_TENSOR_GROUP = "features"  # the group name used when features() returns a single tensor


# ------------------------------------------------------------------------------------ pure functions
def feature_matching_penalty(
    pred: Mapping[str, Tensor], target: Mapping[str, Tensor], weights: Mapping[str, float] | None = None
) -> Tensor:
    """The integrand of J_R = E w(t)‖h̃_θ(x_t,t) − h(x0)‖² (method.md §3.3), per sample.

    Returns Σ_g c_g · mean over the entries of group g of (h̃_g − h_g)², shape ``[B]``; c_g =
    ``weights[g]`` (missing groups weigh 1), the same per-group form as the Tweedie variant's penalty.
    """
    weights = weights or {}
    total: Tensor | None = None
    for key, value in pred.items():
        if key not in target:
            raise ValueError(f"feature group {key!r} has a prediction but no target")
        if value.shape != target[key].shape:
            raise ValueError(
                f"feature group {key!r}: prediction shape {tuple(value.shape)} != target {tuple(target[key].shape)}"
            )
        term = weights.get(key, 1.0) * per_sample_mean((value - target[key]).square())
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no feature groups to match")
    return total


def pair_inputs(h: Tensor, edges: Tensor | None = None) -> Tensor:
    """Symmetric pair inputs [h_i + h_j, h_i ⊙ h_j, e_ij] for i < j: ``[B, L, K, H]`` → ``[B, L, P, 2H+1]``.

    P = K(K−1)/2 in ``triu_indices(K, K, 1)`` order; ``edges`` ``[B, K, K]`` (or ``[B, L, K, K]``) or
    ``None`` (e_ij = 0). Swapping i and j leaves the input unchanged, so a permutation of the particles
    only reorders the pairs.
    """
    k = h.shape[-2]
    i, j = torch.triu_indices(k, k, offset=1, device=h.device)
    hi, hj = h[..., i, :], h[..., j, :]
    if edges is None:
        e = h.new_zeros(*hi.shape[:-1], 1)
    else:
        e = torch.as_tensor(edges, dtype=h.dtype, device=h.device)
        if e.dim() == 3:
            e = e[:, None]
        e = e[..., i, j].expand(*hi.shape[:-1])[..., None]
    return torch.cat([hi + hj, hi * hj, e], dim=-1)


def feature_layout(prior: Prior, layout: Mapping[str, str] | None = None) -> dict[str, str]:
    """The kind (``node`` / ``pair`` / ``frame``) of each feature group of a nonlinear prior.

    ``layout`` overrides; otherwise a prior may define an ``aux_layout`` mapping; the built-in energy
    priors have ``{"potential": "pair", "kinetic": "node"}``. A prior whose ``features`` returns a single
    tensor uses the group name ``"features"``.

    Raises:
        ValueError: the layout is unknown or not rotation invariant (per-component kinetic features).
    """
    if layout is None:
        layout = getattr(prior, "aux_layout", None)
    if layout is None and isinstance(prior, GravityEnergyPrior | SpringEnergyPrior):
        if prior.kinetic_per_component:
            raise ValueError(
                f"prior {prior.name!r}: the auxiliary head predicts rotation-invariant features only; "
                "per-component kinetic terms V²_{l,k,d} (the default) are not: set the prior's option "
                "kinetic_per_component=False (per-particle |V|², e.g. priors.0.options={kinetic_per_component: false})"
            )
        layout = {"potential": "pair", "kinetic": "node"}
    if layout is None:
        raise ValueError(
            f"prior {prior.name!r} ({type(prior).__name__}): unknown feature layout for the auxiliary head; "
            f"pass layout={{group: kind}} with kinds {FEATURE_KINDS} (or define an aux_layout attribute)"
        )
    out = dict(layout)
    bad = {g: k for g, k in out.items() if k not in FEATURE_KINDS}
    if bad or not out:
        raise ValueError(f"prior {prior.name!r}: invalid feature layout {out}; kinds must be in {FEATURE_KINDS}")
    return out


def _as_groups(h: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {_TENSOR_GROUP: h} if isinstance(h, Tensor) else dict(h)


# ------------------------------------------------------------------------------------------- the head
def _mlp(n_in: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))


class FeatureHead(nn.Module):
    """Predicts the standardised feature groups z_g = (h_g(x0) − μ_g)/s_g from hidden node states.

    Args:
        hidden: the size H of the hidden node states ``[B, L, K, H]``.
        layout: ``{group: kind}`` with kinds ``node``, ``pair``, ``frame`` (see the module docstring).
        width: the MLPs' width (default H).

    Buffers ``loc`` and ``scale`` ``[G]`` (μ_g, s_g in layout order) are set by :meth:`fit_normalisation`.
    """

    def __init__(self, hidden: int, layout: Mapping[str, str], width: int | None = None) -> None:
        super().__init__()
        self.layout = dict(layout)
        for g, kind in self.layout.items():
            if kind not in FEATURE_KINDS:
                raise ValueError(f"feature group {g!r}: unknown kind {kind!r}; choose one of {FEATURE_KINDS}")
        width = width or hidden
        self.norm = nn.LayerNorm(hidden)
        n_in = {"node": hidden, "frame": hidden, "pair": 2 * hidden + 1}
        self.mlps = nn.ModuleList(_mlp(n_in[kind], width) for kind in self.layout.values())
        self.register_buffer("loc", torch.zeros(len(self.layout)))
        self.register_buffer("scale", torch.ones(len(self.layout)))

    @property
    def groups(self) -> list[str]:
        return list(self.layout)

    def forward(self, hidden: Tensor, edges: Tensor | None = None) -> dict[str, Tensor]:
        """Standardised predictions per group (``node`` ``[B,L,K]``, ``pair`` ``[B,L,P]``, ``frame`` ``[B,L]``)."""
        h = self.norm(hidden)
        out: dict[str, Tensor] = {}
        pairs = None
        for (g, kind), mlp in zip(self.layout.items(), self.mlps, strict=True):
            if kind == "node":
                inp = h
            elif kind == "frame":
                inp = h.mean(-2)
            else:
                if pairs is None:
                    pairs = pair_inputs(h, edges)
                inp = pairs
            out[g] = mlp(inp).squeeze(-1)
        return out

    def standardise(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """z_g = (h_g − μ_g) / s_g for each group of the layout."""
        missing = [g for g in self.layout if g not in features]
        if missing:
            raise ValueError(f"the prior's features lack the group(s) {missing} of the head's layout {self.layout}")
        loc, scale = self.loc.to(self._dtype(features)), self.scale.to(self._dtype(features))
        return {g: (features[g] - loc[n]) / scale[n] for n, g in enumerate(self.layout)}

    def unstandardise(self, z: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """h_g = μ_g + s_g z_g: predictions in the feature units."""
        loc, scale = self.loc.to(self._dtype(z)), self.scale.to(self._dtype(z))
        return {g: loc[n] + scale[n] * z[g] for n, g in enumerate(self.layout)}

    @torch.no_grad()
    def fit_normalisation(self, features: Mapping[str, Tensor], min_scale: float = 1e-6) -> None:
        """Set μ_g, s_g to the mean and standard deviation of each group over all its entries."""
        for n, g in enumerate(self.layout):
            f = features[g].detach().double()
            if not bool(torch.isfinite(f).all()):
                raise ValueError(f"feature group {g!r} is not finite on the data")
            self.loc[n] = f.mean().to(self.loc.dtype)
            self.scale[n] = f.std(unbiased=False).clamp_min(min_scale).to(self.scale.dtype)

    @staticmethod
    def _dtype(d: Mapping[str, Tensor]) -> torch.dtype:
        return next(iter(d.values())).dtype

    def check_shapes(self, z: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> None:
        for g, kind in self.layout.items():
            if z[g].shape != target[g].shape:
                raise ValueError(
                    f"feature group {g!r} declared {kind!r}: the head predicts {tuple(z[g].shape)} but the prior's "
                    f"features have shape {tuple(target[g].shape)}; fix the layout"
                )


# -------------------------------------------------------------------------------------- the prior
@dataclass
class AuxHeadPrior(Prior):
    """A nonlinear prior in its auxiliary-head variant: penalty = Σ_g c_g mean‖z̃_g(H_θ) − z_g(x0)‖².

    Built with :func:`make_aux_head_prior`. ``base`` is the nonlinear prior (its ``features`` give the
    targets h(x0), its group weights c_g); ``head`` the :class:`FeatureHead`. The penalty needs the
    denoiser's hidden states: use :func:`total_prior_loss_with_heads` (train with ``return_hidden=True``).
    """

    base: Prior | None = None
    head: FeatureHead | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base is None or self.head is None:
            raise ValueError(f"aux-head prior {self.name!r} needs a base prior and a head")
        if self.base.case != "nonlinear":
            raise ValueError(
                f"prior {self.base.name!r} is {self.base.case!r}: the auxiliary-head variant applies to nonlinear "
                "priors only (it predicts their features h(x0)); use variant 'tweedie'"
            )

    def features(self, x: Tensor, **context: Any) -> Tensor | Mapping[str, Tensor]:
        assert self.base is not None
        return self.base.features(x, **context)

    def group_weights(self) -> Mapping[str, float]:
        assert self.base is not None
        return self.base.group_weights()

    def targets(self, x0: Tensor, **context: Any) -> dict[str, Tensor]:
        """Standardised targets z_g = (h_g(x0) − μ_g)/s_g, without gradient."""
        assert self.head is not None
        with torch.no_grad():
            return self.head.standardise(_as_groups(self.features(x0, **context)))

    def fit_normalisation(self, x0: Tensor, batch_size: int = 1024, **context: Any) -> None:
        """Fit the head's μ_g, s_g on clean data ``x0`` (context tensors sliced along the batch with it)."""
        assert self.head is not None
        chunks: dict[str, list[Tensor]] = {}
        with torch.no_grad():
            for s in range(0, x0.shape[0], batch_size):
                ctx = {k: v[s : s + batch_size] if isinstance(v, Tensor) else v for k, v in context.items()}
                for g, f in _as_groups(self.features(x0[s : s + batch_size], **ctx)).items():
                    chunks.setdefault(g, []).append(f)
        self.head.fit_normalisation({g: torch.cat(v) for g, v in chunks.items()})

    def penalty(
        self,
        x0_hat: Tensor,
        x0: Tensor | None = None,
        t: Tensor | None = None,
        *,
        hidden: Tensor | None = None,
        **context: Any,
    ) -> Tensor:
        """Per-sample Σ_g c_g mean‖z̃_g − z_g‖² ``[B]`` (before λ and w(t)); ``x0_hat`` is not used."""
        assert self.head is not None
        if hidden is None:
            raise ValueError(
                f"aux-head prior {self.name!r} needs the denoiser's hidden states: call the loss with "
                "return_hidden=True and use total_prior_loss_with_heads"
            )
        if x0 is None:
            raise ValueError(f"aux-head prior {self.name!r} needs the clean batch x0 for its targets")
        target = self.targets(x0, **context)
        z = self.head(hidden, context.get("edges"))
        self.head.check_shapes(z, target)
        return feature_matching_penalty(z, target, self.group_weights())

    def check_ground_truth(self, x0: Tensor, *, tol: float = 1e-6, **context: Any) -> None:
        assert self.base is not None
        self.base.check_ground_truth(x0, tol=tol, **context)


def make_aux_head_prior(
    prior: Prior, hidden: int, *, layout: Mapping[str, str] | None = None, width: int | None = None
) -> AuxHeadPrior:
    """The auxiliary-head variant of a nonlinear ``prior``, for hidden node states of size ``hidden``.

    Keeps the prior's name, λ and w(t). Raises ``ValueError`` for a prior that is not nonlinear or whose
    feature layout is unknown (see :func:`feature_layout`).
    """
    if prior.case != "nonlinear":
        raise ValueError(
            f"prior {prior.name!r} is {prior.case!r}: the auxiliary-head variant applies to nonlinear priors "
            "only (it predicts their features h(x0)); use variant 'tweedie'"
        )
    head = FeatureHead(hidden, feature_layout(prior, layout), width)
    return AuxHeadPrior(
        name=prior.name, case="nonlinear", weight=prior.weight, time_weight=prior.time_weight, base=prior, head=head
    )


# --------------------------------------------------------------------------- wiring into a denoiser
def attach_aux_heads(denoiser: nn.Module, priors: Iterable[Prior]) -> nn.ModuleDict:
    """Register the heads of the aux-head priors as ``denoiser.net.aux_heads[prior.name]``.

    The trainer optimises, clips, averages (EMA) and checkpoints ``denoiser.net``, so the heads must live
    there (not on the :class:`~physdiff.diffusion.parametrisation.Denoiser` wrapper). Call before training
    (the EMA copy is taken when training starts) and move the denoiser to its device afterwards.
    """
    net = getattr(denoiser, "net", denoiser)
    heads = getattr(net, AUX_HEADS_ATTR, None)
    if heads is None:
        heads = nn.ModuleDict()
        setattr(net, AUX_HEADS_ATTR, heads)
    for p in priors:
        if isinstance(p, AuxHeadPrior):
            assert p.head is not None
            heads[p.name] = p.head
    return heads


def _drop_aux_head_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    if AUX_HEADS_ATTR in module._modules:
        return
    for key in [k for k in state_dict if k.startswith(prefix + AUX_HEADS_ATTR + ".")]:
        del state_dict[key]


def ignore_aux_head_weights(net: nn.Module) -> nn.Module:
    """Let ``net`` load a state dict that holds auxiliary-head weights while it has no heads itself.

    Sampling never uses the heads, so a network built for sampling skips them; a network with heads
    (resume) loads them strictly as usual. Returns ``net``.
    """
    net._register_load_state_dict_pre_hook(_drop_aux_head_keys, with_module=True)
    return net


def total_prior_loss_with_heads(
    priors: Iterable[Prior], loss_output: Any, context: Mapping[str, Any] | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Σ_i λ_i E_batch[w_i(t) penalty_i] like :func:`~physdiff.priors.base.total_prior_loss`, where
    aux-head priors read the hidden states ``loss_output.pred.hidden`` (J_R = E w(t)‖h̃_θ(x_t,t) − h(x0)‖²).

    Returns ``(total, terms)``: the differentiable scalar and, per prior name, its float contribution.
    """
    ctx = dict(context or {})
    x0_hat, x0, t = loss_output.pred.x0, loss_output.x0, loss_output.t
    hidden = getattr(loss_output.pred, "hidden", None)
    total = x0_hat.new_zeros(())
    terms: dict[str, float] = {}
    for prior in priors:
        if prior.name in terms:
            raise ValueError(f"duplicate prior name {prior.name!r}; give each prior a unique name")
        if isinstance(prior, AuxHeadPrior):
            pen = prior.penalty(x0_hat, x0, t, hidden=hidden, **ctx)
        else:
            pen = prior.penalty(x0_hat, x0, t, **ctx)
        term = prior.weight * (prior.w(t) * pen).mean()
        total = total + term
        terms[prior.name] = float(term.detach())
    return total, terms
