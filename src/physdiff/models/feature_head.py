"""The auxiliary feature head: predicts features of the clean sample from a denoiser's hidden node states.

Used by the auxiliary-head variant of nonlinear priors (:mod:`physdiff.priors.aux_head`, method.md §3.3).
Each feature group has a *kind*, its layout over particles: ``node`` ``[B, L, K]`` (e.g. |V_{l,k}|²),
``pair`` ``[B, L, K(K−1)/2]`` (e.g. 1/R_ij, pairs in ``triu_indices(K, K, 1)`` order) or ``frame``
``[B, L]``. The pair input is symmetric in (i, j), so with invariant, permutation-equivariant hidden states
every prediction is invariant and permutes with the particles. The head predicts standardised features
z_g = (h_g − μ_g)/s_g with one scalar μ_g, s_g per group (buffers fitted on training data).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["FEATURE_KINDS", "FeatureHead", "pair_inputs"]

FEATURE_KINDS: tuple[str, ...] = ("node", "pair", "frame")


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
