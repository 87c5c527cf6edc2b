"""A small MLP denoiser for flat vectors (toy problems, tests)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from physdiff.models.embedding import NoiseEmbedding


class MLPDenoiser(nn.Module):
    """x_t [B, d] (+ known, mask) and the noise level c_noise [B] → raw output [B, d]."""

    def __init__(self, dim: int, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        self.embed = NoiseEmbedding(hidden)
        self.inp = nn.Linear(3 * dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(layers))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x_t: Tensor, noise: Tensor, known: Tensor, mask: Tensor, **_: Tensor) -> Tensor:
        h = self.inp(torch.cat([x_t, known, mask], dim=-1)) + self.embed(noise)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)
