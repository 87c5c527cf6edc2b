"""Embeddings of scalars (noise level, frame index) shared by the denoiser networks.

* :func:`sinusoidal_embedding` — transformer-style features of any scalar tensor
  (Vaswani et al. 2017; the DDPM time embedding of Ho et al. 2020).
* :class:`NoiseEmbedding` — the noise-level conditioning of every network: c_noise → sinusoidal
  features → 2-layer MLP → ``dim``.

No diffusion maths here: the embedding sees c_noise = log(σ_t/α_t) as a plain number. Networks are
conditioned on the noise level rather than on the diffusion time t, so a trained network does not
depend on the schedule t ↦ (α_t, σ_t) it was trained with (Karras et al. 2022, "c_noise").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["NOISE_SCALE", "NoiseEmbedding", "reference_time", "sinusoidal_embedding"]

# c_noise = log(σ/α) spans ≈ [−7, 7] (log-SNR ∈ [−15, 15]): a span of ≈ 14, and 14 · 70 ≈ 1000 radians
# at the highest frequency, like DDPM's 1000·t over t ∈ [0, 1]. See NoiseEmbedding.
NOISE_SCALE = 70.0

#: the reference schedule of :func:`reference_time`: DDPM's linear β from 0.1 to 20 (β_i = 1e-4 … 0.02 over
#: 1000 steps, Ho et al. 2020), the schedule every preset trains with
REFERENCE_BETA = (0.1, 20.0)


def reference_time(noise: Tensor) -> Tensor:
    """The diffusion time at which the reference linear-β VP schedule has noise level ``noise`` = c = log(σ/α):

    B(t) = β₀ t + ½(β₁ − β₀) t² = log(1 + σ²/α²) = softplus(2c)  ⇒  t = (√(β₀² + 2(β₁ − β₀) B) − β₀) / (β₁ − β₀),

    a fixed, increasing function of c alone (t = 0 at c = −∞, t = 1 at the reference schedule's end, above 1
    for noisier levels), so a network fed t_ref(c) still depends only on the noise level."""
    b0, b1 = REFERENCE_BETA
    big_b = torch.nn.functional.softplus(2.0 * noise)
    return (torch.sqrt(b0 * b0 + 2.0 * (b1 - b0) * big_b) - b0) / (b1 - b0)


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


class NoiseEmbedding(nn.Module):
    """Noise-level embedding: c_noise ``[B]`` → ``[B, dim]``.

    e = Linear(SiLU(Linear(sinusoidal(scale · c_noise)))), with ``features`` sinusoidal features
    (default ``dim``) at the log-spaced frequencies ω_k ∈ [1/max_period, 1] of
    :func:`sinusoidal_embedding`.

    Why ``scale = 70`` (:data:`NOISE_SCALE`): c_noise = log(σ_t/α_t) = −½ log-SNR lies in ≈ [−7, 7] for
    the usual schedules (cosine: log-SNR ∈ [−15, 15]; linear-β: c ∈ [−4.6, 5.0]). Over that span of 14,
    feature k completes 14 · scale · ω_k / 2π ≈ 156 ω_k periods: ≈ 156 at ω = 1 (resolving noise levels
    ≈ π/70 ≈ 0.05 apart), ≈ 1.6 at the geometric middle of the band, ω = 10⁻², and ≈ 0.02 at ω = 10⁻⁴,
    where (cos, sin) ≈ (1, scale·ω·c) are a bias and a feature linear in c. So the band is centred on
    "one period across the noise range" and no frequency is wasted on aliasing or on constants; the
    argument range at ω = 1, 14 · 70 ≈ 1000 rad, is that of the DDPM embedding of 1000·t over t ∈ [0, 1]
    (Ho et al. 2020), whose conditioning is known to train well. EDM's ¼ ln σ (Karras et al. 2022) is a scale
    280 times smaller, which leaves most of the band nearly constant.
    """

    def __init__(
        self,
        dim: int,
        *,
        features: int | None = None,
        scale: float = NOISE_SCALE,
        max_period: float = 10_000.0,
        argument: str = "log_sigma",
    ) -> None:
        super().__init__()
        if argument not in ("log_sigma", "reference_time"):
            raise ValueError(f"argument must be 'log_sigma' or 'reference_time', got {argument!r}")
        features = features or dim
        self.n_features = features + features % 2
        self.scale, self.max_period, self.argument = scale, max_period, argument
        self.mlp = nn.Sequential(nn.Linear(self.n_features, dim), nn.SiLU(), nn.Linear(dim, dim))
        if argument == "reference_time":
            # a marker in the state dict: a checkpoint trained with the other argument does not load
            self.register_buffer("reference_time", torch.ones(()))

    def angle(self, noise: Tensor) -> Tensor:
        """The sinusoids' argument: ``scale · c`` (``log_sigma``) or ``1000 · t_ref(c)`` (``reference_time``,
        :func:`reference_time`: DDPM's 1000·t for the linear schedule)."""
        if self.argument == "reference_time":
            return 1000.0 * reference_time(noise)
        return self.scale * noise

    def forward(self, noise: Tensor) -> Tensor:
        noise = noise.to(self.mlp[0].weight.dtype)
        return self.mlp(sinusoidal_embedding(self.angle(noise), self.n_features, self.max_period))

    def extra_repr(self) -> str:
        arg = "1000·t_ref(c)" if self.argument == "reference_time" else f"{self.scale}·c"
        return f"features={self.n_features}, argument={arg}, max_period={self.max_period}"
