"""Embeddings of scalars (diffusion time, frame index) shared by the denoiser networks.

* :func:`sinusoidal_embedding` — transformer-style features of any scalar tensor
  (Vaswani et al. 2017; the DDPM time embedding of Ho et al. 2020).
* :class:`FourierFeatures` — random Fourier features with a fixed Gaussian frequency matrix
  (Tancik et al. 2020; the ``GaussianFourierProjection`` of score-SDE, Song et al. 2021).
* :class:`TimeEmbedding` — diffusion time t ∈ [0, 1] → features → 2-layer MLP → ``dim``.

No diffusion maths here: the embedding sees t as a plain number.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["sinusoidal_embedding", "FourierFeatures", "TimeEmbedding"]


def sinusoidal_embedding(x: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of ``x`` (any shape) → ``[*x.shape, dim]``.

    e(x) = [cos(x ω_0), …, cos(x ω_{h−1}), sin(x ω_0), …, sin(x ω_{h−1})], ω_k = max_period^(−k/h),
    h = ⌊dim/2⌋; an odd ``dim`` is padded with one zero. Integer inputs (frame indices) are embedded in
    float32, floating inputs in their own dtype.
    """
    dtype = x.dtype if x.is_floating_point() else torch.float32
    half = dim // 2
    k = torch.arange(half, device=x.device, dtype=dtype)
    freqs = torch.exp(-math.log(max_period) * k / max(half, 1))
    args = x.to(dtype)[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class FourierFeatures(nn.Module):
    """Random Fourier features e(t) = [cos(2π t w), sin(2π t w)], w ~ N(0, scale²) fixed (a buffer)."""

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"FourierFeatures needs an even dim, got {dim}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(dim // 2, generator=gen) * scale)

    def forward(self, t: Tensor) -> Tensor:
        args = 2.0 * math.pi * t[..., None].to(self.w.dtype) * self.w
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    """Diffusion-time embedding: t ``[B]`` → ``[B, dim]``.

    features(t) → Linear → SiLU → Linear, where features are sinusoidal of ``t_scale · t`` (default
    1000·t, so that t ∈ [0, 1] spans the usual DDPM range of integer steps) or random Fourier features.
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: str = "sinusoidal",
        features: int | None = None,
        t_scale: float = 1000.0,
        fourier_scale: float = 16.0,
    ) -> None:
        super().__init__()
        features = features or dim
        if kind == "sinusoidal":
            self.features: nn.Module | None = None
        elif kind == "fourier":
            self.features = FourierFeatures(features + features % 2, scale=fourier_scale)
        else:
            raise ValueError(f"unknown time embedding kind {kind!r}; use 'sinusoidal' or 'fourier'")
        self.kind, self.n_features, self.t_scale = kind, features + features % 2, t_scale
        self.mlp = nn.Sequential(nn.Linear(self.n_features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        t = t.to(self.mlp[0].weight.dtype)
        if self.features is None:
            feats = sinusoidal_embedding(self.t_scale * t, self.n_features)
        else:
            feats = self.features(t)
        return self.mlp(feats)
