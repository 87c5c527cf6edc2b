r"""The auxiliary-head variant of nonlinear priors (method.md §3.3).

A nonlinear prior R = g(h(x0)) matches features h instead of driving R to zero,

    J_R(θ) = E_{t,x0,ε} w(t) ‖h̃_θ(x_t, t) − h(x0)‖²,

and method.md offers two choices of h̃_θ:

* ``"tweedie"`` (:meth:`physdiff.priors.base.FeaturePrior.penalty`): h̃_θ = h(x̂0), the features of the
  Tweedie estimate x̂0 = E_θ[x0 | x_t];
* ``"aux_head"`` (this module): h̃_θ is an extra output head that reads the denoiser's hidden node
  states H_θ(x_t, t) ``[B, L, K, H]`` — the same states the score output is computed from — and
  predicts h(x0) directly. Its minimiser is the posterior mean E[h(x0) | x_t], which exists at every
  noise level (there is no Jensen gap to avoid), and the penalty's gradient shapes the shared trunk.

The head (:class:`physdiff.models.feature_head.FeatureHead`) respects the symmetries of the features.
Each feature group has a *kind* (its layout over particles):

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

from physdiff.models.feature_head import FEATURE_KINDS, FeatureHead
from physdiff.priors.base import FeaturePrior, Prior
from physdiff.priors.particles import GravityEnergyPrior, SpringEnergyPrior

__all__ = [
    "AUX_HEADS_ATTR",
    "PRIOR_VARIANTS",
    "AuxHeadPrior",
    "attach_aux_heads",
    "feature_layout",
    "ignore_aux_head_weights",
    "make_aux_head_prior",
]

PRIOR_VARIANTS: tuple[str, ...] = ("tweedie", "aux_head")
AUX_HEADS_ATTR = "aux_heads"
_TENSOR_GROUP = "features"  # the group name used when features() returns a single tensor


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


# -------------------------------------------------------------------------------------- the prior
@dataclass
class AuxHeadPrior(FeaturePrior):
    """A nonlinear prior in its auxiliary-head variant: penalty = Σ_g c_g mean‖z̃_g(H_θ) − z_g(x0)‖².

    Built with :func:`make_aux_head_prior`. ``base`` is the nonlinear prior (its ``features`` give the
    targets h(x0), its group weights c_g); ``head`` the :class:`~physdiff.models.feature_head.FeatureHead`.
    The penalty reads the denoiser's hidden states from the context (``hidden``), which
    :func:`~physdiff.priors.base.total_prior_loss` passes when the loss ran with ``return_hidden=True``.
    """

    base: FeaturePrior | None = None
    head: FeatureHead | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.base, FeaturePrior) or self.head is None:
            raise ValueError(
                f"aux-head prior {self.name!r} needs a nonlinear (feature) base prior and a head: the auxiliary-head "
                "variant applies to nonlinear priors only (it predicts their features h(x0)); use variant 'tweedie'"
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

    def penalty(self, x0_hat: Tensor, x0: Tensor | None = None, t: Tensor | None = None, **context: Any) -> Tensor:
        """Per-sample Σ_g c_g mean‖z̃_g − z_g‖² ``[B]`` (before λ and w(t)) from ``context["hidden"]``; ``x0_hat``
        is not used."""
        assert self.head is not None
        hidden = context.pop("hidden", None)
        if hidden is None:
            raise ValueError(
                f"aux-head prior {self.name!r} needs the denoiser's hidden states: run the loss with "
                "return_hidden=True (total_prior_loss passes them as context 'hidden')"
            )
        if x0 is None:
            raise ValueError(f"aux-head prior {self.name!r} needs the clean batch x0 for its targets")
        target = self.targets(x0, **context)
        z = self.head(hidden, context.get("edges"))
        self.head.check_shapes(z, target)
        return self.feature_penalty(z, target)

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
    if not isinstance(prior, FeaturePrior):
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
