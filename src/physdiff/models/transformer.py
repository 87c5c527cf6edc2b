"""Non-equivariant baseline denoiser: a transformer over (frame, particle) tokens.

Each node (frame l, particle k) is one token with input [x_t, known, mask, mass] (6D + 1 numbers; 3D + 1
for a positions-only state, ``velocities=False``), embedded linearly and summed with learned frame and
particle embeddings and the noise-level embedding; a pre-norm transformer encoder mixes all L·K tokens; a
linear head returns the state's 2D (or D) channels.
Spring adjacency, when given, enters as a learned per-head attention bias w_a · e_{k k'} between tokens
of particles k and k'. Nothing here respects rotations (the control for the equivariant
:class:`~physdiff.models.egnn.SpaceTimeEGNN`); train it with random rotation augmentation
(:func:`physdiff.data.augment.random_rotate`). Particle embeddings break permutation symmetry too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from physdiff.models.embedding import NoiseEmbedding

__all__ = ["ParticleTransformer"]


class ParticleTransformer(nn.Module):
    """Transformer denoiser with the particle signature of ``docs/architecture.md``:
    ``forward(x_t, noise, known, mask, edges=None, masses=None, return_hidden=False)``, with the noise
    level c_noise = log(σ_t/α_t) ``[B]`` embedded by :class:`~physdiff.models.embedding.NoiseEmbedding`.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        layers: int = 4,
        heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        max_frames: int = 512,
        max_particles: int = 64,
        velocities: bool = True,
    ) -> None:
        super().__init__()
        self.dim, self.hidden, self.heads = dim, hidden, heads
        self.width = (2 if velocities else 1) * dim  # state channels: (R, V) or R
        self.embed_in = nn.Linear(3 * self.width + 1, hidden)
        self.embed_frame = nn.Embedding(max_frames, hidden)
        self.embed_particle = nn.Embedding(max_particles, hidden)
        self.embed_time = NoiseEmbedding(hidden)
        self.edge_bias = nn.Parameter(torch.zeros(heads))
        layer = nn.TransformerEncoderLayer(
            hidden, heads, mlp_ratio * hidden, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, self.width)
        nn.init.normal_(self.embed_frame.weight, std=0.02)
        nn.init.normal_(self.embed_particle.weight, std=0.02)

    def attention_bias(self, edges: Tensor, length: int) -> Tensor:
        """Float attention mask ``[B·heads, L·K, L·K]``: w_a e_{k k'} for tokens (l, k), (l', k')."""
        b, k, _ = edges.shape
        bias = self.edge_bias[None, :, None, None] * edges.to(self.edge_bias.dtype)[:, None]  # [B,h,K,K]
        bias = bias[:, :, None, :, None, :].expand(b, self.heads, length, k, length, k)
        return bias.reshape(b * self.heads, length * k, length * k)

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
        if width != self.width:
            raise ValueError(f"expected last axis {self.width} (the state's channels), got {width}")
        if length > self.embed_frame.num_embeddings or k > self.embed_particle.num_embeddings:
            raise ValueError(
                f"L={length}, K={k} exceed max_frames={self.embed_frame.num_embeddings}, "
                f"max_particles={self.embed_particle.num_embeddings}"
            )
        mass = (
            x_t.new_ones(b, length, k, 1)
            if masses is None
            else masses[:, None, :, None].expand(b, length, k, 1).to(x_t.dtype)
        )
        tokens = self.embed_in(torch.cat([x_t, known, mask, mass], dim=-1))
        frames = self.embed_frame(torch.arange(length, device=x_t.device))[None, :, None]
        particles = self.embed_particle(torch.arange(k, device=x_t.device))[None, None]
        tokens = tokens + frames + particles + self.embed_time(noise)[:, None, None]
        bias = None if edges is None else self.attention_bias(edges, length)
        h = self.encoder(tokens.reshape(b, length * k, self.hidden), mask=bias)
        h = self.norm(h).view(b, length, k, self.hidden)
        out = self.head(h)
        return (out, h) if return_hidden else out
