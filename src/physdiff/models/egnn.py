"""E(n)- and permutation-equivariant space-time denoiser for particle trajectories.

The network alternates two blocks (cf. geometric trajectory diffusion, Han et al. 2024):

* :class:`EGNNLayer` — EGNN message passing among the K particles *within* each frame
  (Satorras, Hoogeboom & Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021, in the style of
  their ``egnn_clean.py``), extended with vector channels;
* :class:`TemporalBlock` — attention *across* the L frames of each particle: invariant attention
  weights mix invariant features and, linearly, the vector channels.

Every node (frame l, particle k) carries invariant features h ∈ R^H, a coordinate x ∈ R^D and C vector
channels v ∈ R^{C×D}. All geometric inputs are made translation-invariant once, at the input, by
subtracting the per-frame centroid of the noisy positions; afterwards vectors are only rotated,
combined linearly with invariant coefficients, or built from differences x_i − x_j. Hence for any
orthogonal Q (rotations and reflections), translation c and permutation P of the particles the output
rotates with Q, ignores c and permutes with P; the hidden features are invariant.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from physdiff.models.embedding import NoiseEmbedding, sinusoidal_embedding

__all__ = ["EGNNLayer", "TemporalBlock", "SpaceTimeEGNN"]


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


def _small_init(layer: nn.Linear, gain: float = 1e-3) -> nn.Linear:
    """Near-zero init for layers producing vector updates (as ``egnn_clean``'s ``coord_mlp``)."""
    nn.init.xavier_uniform_(layer.weight, gain=gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class EGNNLayer(nn.Module):
    """One EGNN layer over the fully connected graph of the K particles of a frame.

    With r_ij = x_i − x_j, the normalised difference r̂_ij = r_ij / (|r_ij| + 1), an optional edge
    attribute a_ij (spring adjacency) and the mean over the K − 1 neighbours j ≠ i:

        m_ij = φ_e(h_i, h_j, a_ij, asinh(|r_ij|², r̂_ij·v_i, r̂_ij·v_j, v_i·v_j))   (edge message)
        x_i' = x_i + mean_j r̂_ij φ_x(m_ij)                                      (coordinate update)
        v_i' = (1 + φ_g(h_i)) ⊙ v_i + mean_j r̂_ij ⊗ φ_v(m_ij)                  (vector update)
        h_i' = h_i + φ_h(h_i, mean_j m_ij, asinh|v_i|²)                         (node update)

    Dot products are taken per vector channel; asinh (≈ identity near 0, logarithmic for large inputs)
    keeps the invariants bounded for unscaled data. Tensors are batched as ``[N, K, ...]`` (N = B·L).
    """

    def __init__(self, hidden: int, vector_channels: int, edge_dim: int = 1, eps: float = 1e-8) -> None:
        super().__init__()
        c = vector_channels
        self.eps = eps
        # φ_e's first linear layer acting on the concatenation, split by input so that the node terms
        # are computed once per node instead of once per edge (same function, fewer FLOPs)
        self.e_in_i = nn.Linear(hidden, hidden)
        self.e_in_j = nn.Linear(hidden, hidden, bias=False)
        self.e_in_geo = nn.Linear(1 + edge_dim + 3 * c, hidden, bias=False)
        self.phi_e = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.phi_x = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), _small_init(nn.Linear(hidden, 1)))
        self.phi_v = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), _small_init(nn.Linear(hidden, c)))
        self.phi_g = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), _small_init(nn.Linear(hidden, c)))
        self.phi_h = _mlp(2 * hidden + c, hidden, hidden)

    def edge_model(self, h: Tensor, d2: Tensor, r_hat: Tensor, v: Tensor, edge_attr: Tensor) -> Tensor:
        """m_ij = φ_e(h_i, h_j, a_ij, asinh(|r_ij|², r̂_ij·v_i, r̂_ij·v_j, v_i·v_j)) → ``[N, K, K, H]``."""
        rv_i = torch.einsum("nijd,nicd->nijc", r_hat, v)
        rv_j = torch.einsum("nijd,njcd->nijc", r_hat, v)
        vv = torch.einsum("nicd,njcd->nijc", v, v)
        geo = self.e_in_geo(torch.cat([torch.asinh(torch.cat([d2, rv_i, rv_j, vv], -1)), edge_attr], -1))
        return self.phi_e(self.e_in_i(h)[:, :, None] + self.e_in_j(h)[:, None, :] + geo)

    def coord_model(self, x: Tensor, r_hat: Tensor, m: Tensor, nbr: Tensor) -> Tensor:
        """x_i' = x_i + mean_j r̂_ij φ_x(m_ij)."""
        return x + (r_hat * self.phi_x(m) * nbr).sum(2) / max(x.shape[1] - 1, 1)

    def vector_model(self, h: Tensor, v: Tensor, r_hat: Tensor, m: Tensor, nbr: Tensor) -> Tensor:
        """v_i' = (1 + φ_g(h_i)) ⊙ v_i + mean_j r̂_ij ⊗ φ_v(m_ij)."""
        agg = torch.einsum("nijd,nijc->nicd", r_hat, self.phi_v(m) * nbr) / max(v.shape[1] - 1, 1)
        return (1.0 + self.phi_g(h))[..., None] * v + agg

    def node_model(self, h: Tensor, v: Tensor, m: Tensor, nbr: Tensor) -> Tensor:
        """h_i' = h_i + φ_h(h_i, mean_j m_ij, asinh|v_i|²)."""
        m_i = (m * nbr).sum(2) / max(h.shape[1] - 1, 1)
        return h + self.phi_h(torch.cat([h, m_i, torch.asinh((v * v).sum(-1))], dim=-1))

    def forward(self, h: Tensor, x: Tensor, v: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h ``[N,K,H]``, x ``[N,K,D]``, v ``[N,K,C,D]``, edge_attr ``[N,K,K,E]`` → (h', x', v')."""
        k = x.shape[1]
        r = x[:, :, None] - x[:, None, :]  # r_ij = x_i − x_j, [N, K, K, D]
        d2 = (r * r).sum(-1, keepdim=True)
        r_hat = r / (torch.sqrt(d2 + self.eps) + 1.0)
        nbr = (1.0 - torch.eye(k, dtype=x.dtype, device=x.device))[None, :, :, None]  # j ≠ i
        m = self.edge_model(h, d2, r_hat, v, edge_attr)
        return (
            self.node_model(h, v, m, nbr),
            self.coord_model(x, r_hat, m, nbr),
            self.vector_model(h, v, r_hat, m, nbr),
        )


class TemporalBlock(nn.Module):
    """Equivariant mixing across the L frames of each particle.

    Multi-head self-attention over frames with weights from the invariant features only,
        A^a = softmax(Q^a(LN h) K^a(LN h)ᵀ / √d)                       (invariant, per head a)
        h' = h + W_o [A^a W^a_v LN h]_a,      h'' = h' + MLP(LN h')
        v'_{l,c} = v_{l,c} + Σ_{a,c'} W^{vec}_{c,(a,c')} Σ_{l'} A^a_{l l'} v_{l',c'}
    The vector update is linear in v with invariant (data-dependent) scalar coefficients, hence
    O(D)-equivariant; nothing acts on the D axis. Tensors: h ``[B,L,K,H]``, v ``[B,L,K,C,D]``.
    """

    def __init__(self, hidden: int, vector_channels: int, heads: int = 4, mlp_ratio: int = 2) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden={hidden} must be divisible by heads={heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.mlp = _mlp(hidden, mlp_ratio * hidden, hidden)
        self.vec_mix = _small_init(nn.Linear(heads * vector_channels, vector_channels, bias=False), 1.0)

    def attention(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """A = softmax(q kᵀ/√d) ``[BK, heads, L, L]`` and the attended values ``[BK, L, H]``."""
        bk, length, hid = h.shape
        q, k, val = self.qkv(h).view(bk, length, 3, self.heads, hid // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hid // self.heads), dim=-1)
        return att, (att @ val).transpose(1, 2).reshape(bk, length, hid)

    def forward(self, h: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        b, length, k, hid = h.shape
        c, d = v.shape[-2:]
        h_seq = h.transpose(1, 2).reshape(b * k, length, hid)
        v_seq = v.transpose(1, 2).reshape(b * k, length, c * d)
        att, h_att = self.attention(self.norm1(h_seq))
        h_seq = h_seq + self.out(h_att)
        h_seq = h_seq + self.mlp(self.norm2(h_seq))
        v_att = (att @ v_seq[:, None]).view(b * k, self.heads, length, c, d)  # Σ_l' A_ll' v_l'
        v_att = v_att.permute(0, 2, 4, 1, 3).reshape(b * k, length, d, self.heads * c)
        v_seq = v_seq.view(b * k, length, c, d) + self.vec_mix(v_att).transpose(-1, -2)
        h = h_seq.view(b, k, length, hid).transpose(1, 2)
        v = v_seq.view(b, k, length, c, d).transpose(1, 2)
        return h, v


class SpaceTimeEGNN(nn.Module):
    """Space-time EGNN denoiser for particle states ``[B, L, K, 2D]`` (positions, then velocities), or with
    ``velocities=False`` for positions-only states ``[B, L, K, D]`` (``model.state: positions``: the inputs
    below without V, V_known and m_V; one output vector per node).

    Input encoding (the only place translations are removed):
      * coordinates x = R − R̄ (R̄ the per-frame centroid of the noisy positions over particles);
      * vector channels, lifted linearly (no bias) to ``vector_channels``: x, V, (R_known − m_R R̄) and
        V_known, where m_R (m_V) is the mean of the mask over the position (velocity) channels;
      * invariant node features: m_R, m_V, mass, asinh of the Gram matrix of the input vector
        channels, plus a sinusoidal embedding of the frame index.
    The noise level c_noise = log(σ_t/α_t) ``[B]`` is embedded once
    (:class:`~physdiff.models.embedding.NoiseEmbedding`, invariant) and added to h in every layer.
    Then ``layers`` × (noise conditioning, :class:`EGNNLayer` within frames, :class:`TemporalBlock`
    across frames). Output: per node, two vectors (position and velocity channels) as combinations of
    the final vector channels and the coordinate displacement x − x⁰, with coefficients from an MLP
    of the invariant features. The output is a vector-type, translation-invariant quantity that the
    diffusion wrapper interprets as ε̂ or x̂₀ (in the zero-centre-of-mass subspace).

    The mask is assumed constant across the D position channels and across the D velocity channels of a
    node (whole vectors are known or not); otherwise rotation equivariance is not defined.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        layers: int = 4,
        vector_channels: int = 8,
        heads: int = 4,
        velocities: bool = True,
    ) -> None:
        super().__init__()
        self.dim, self.hidden, self.vector_channels = dim, hidden, vector_channels
        self.groups = 2 if velocities else 1  # D-vectors per node in the state: (R, V) or R
        self.n_inputs_vec = c0 = 2 * self.groups  # x and R_known (and V, V_known)
        n_inv = 1 + self.groups + c0 * (c0 + 1) // 2  # m_R (m_V), mass, upper triangle of the Gram matrix
        self.embed_inv = _mlp(n_inv, hidden, hidden)
        self.embed_frame = nn.Linear(hidden, hidden)
        self.embed_time = NoiseEmbedding(hidden)
        self.lift = nn.Linear(c0, vector_channels, bias=False)
        self.time_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.egnn = nn.ModuleList(EGNNLayer(hidden, vector_channels, edge_dim=1) for _ in range(layers))
        self.temporal = nn.ModuleList(TemporalBlock(hidden, vector_channels, heads) for _ in range(layers))
        self.head = _mlp(hidden, hidden, self.groups * (vector_channels + 1))
        self.register_buffer("_triu", torch.triu_indices(c0, c0), persistent=False)

    def encode(self, x_t: Tensor, known: Tensor, mask: Tensor, masses: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Initial (h ``[B,L,K,H]``, x ``[B,L,K,D]``, v ``[B,L,K,C,D]``), translation-invariant."""
        b, length, k, _ = x_t.shape
        d = self.dim
        m_r = mask[..., :d].mean(-1, keepdim=True)
        centroid = x_t[..., :d].mean(2, keepdim=True)
        x = x_t[..., :d] - centroid
        vecs, flags = [x, known[..., :d] - m_r * centroid], [m_r]
        if self.groups == 2:
            vecs, flags = [x, x_t[..., d:], vecs[1], known[..., d:]], [m_r, mask[..., d:].mean(-1, keepdim=True)]
        u = torch.stack(vecs, dim=-2)
        gram = torch.einsum("blkcd,blked->blkce", u, u)[..., self._triu[0], self._triu[1]]
        mass = torch.ones_like(m_r) if masses is None else masses[:, None, :, None].expand(b, length, k, 1)
        inv = torch.cat([*flags, mass.to(x_t.dtype), torch.asinh(gram)], dim=-1)
        frames = sinusoidal_embedding(torch.arange(length, device=x_t.device, dtype=x_t.dtype), self.hidden)
        h = self.embed_inv(inv) + self.embed_frame(frames)[None, :, None]
        v = self.lift(u.transpose(-1, -2)).transpose(-1, -2)
        return h, x, v

    def forward(
        self,
        x_t: Tensor,
        noise: Tensor,
        known: Tensor,
        mask: Tensor,
        edges: Tensor | None = None,
        masses: Tensor | None = None,
        return_hidden: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        b, length, k, width = x_t.shape
        if width != self.groups * self.dim:
            state = "2*dim (positions, velocities)" if self.groups == 2 else "dim (positions only)"
            raise ValueError(f"expected last axis {state} = {self.groups * self.dim}, got {width}")
        h, x, v = self.encode(x_t, known, mask, masses)
        x0 = x
        temb = self.embed_time(noise)
        if edges is None:
            edge_attr = x_t.new_zeros(b * length, k, k, 1)
        else:
            edge_attr = edges.to(x_t.dtype)[:, None, :, :, None].expand(b, length, k, k, 1)
            edge_attr = edge_attr.reshape(b * length, k, k, 1)
        c = self.vector_channels
        for tproj, egnn, temporal in zip(self.time_proj, self.egnn, self.temporal, strict=True):
            h = h + tproj(temb)[:, None, None]
            hf, xf, vf = egnn(
                h.reshape(b * length, k, -1),
                x.reshape(b * length, k, -1),
                v.reshape(b * length, k, c, -1),
                edge_attr,
            )
            h, x, v = hf.view_as(h), xf.view_as(x), vf.view_as(v)
            h, v = temporal(h, v)
        basis = torch.cat([v, (x - x0)[..., None, :]], dim=-2)  # [B, L, K, C+1, D]
        coef = self.head(h).view(b, length, k, self.groups, c + 1)
        out = torch.einsum("blkoc,blkcd->blkod", coef, basis).reshape(b, length, k, width)
        return (out, h) if return_hidden else out
