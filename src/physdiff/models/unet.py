"""EDM-style U-Net denoiser for fields on 1D, 2D and 3D grids (space-time images included).

The network maps ``(x_t, noise, known, mask, cond)`` to a tensor shaped like ``x_t``, where ``noise`` is the
noise level c_noise = log(σ_t/α_t) ``[B]``; it contains no diffusion or schedule maths (the parametrisation
wrapper computes c_noise and interprets the output as eps, x0 or v).

Layout (see ``docs/architecture.md``): fields are channel-first, ``[B, C, *spatial]``. The network input
is the channel concatenation ``[x_t, known, mask, cond]``.

Symmetry (method.md §2): every convolution pads circularly along periodic axes and with zeros along the
others; downsampling is a 2x average pool, upsampling nearest-neighbour followed by a convolution,
normalisation is GroupNorm over all positions, and the optional attention has no positional encoding. The
network is therefore exactly equivariant to periodic shifts (``torch.roll``) along periodic axes by any
multiple of the total downsampling factor ``2 ** (len(channel_mults) - 1)``. Zero padding makes it
deliberately *not* shift-equivariant along non-periodic axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from physdiff.models.embedding import NoiseEmbedding

__all__ = ["UNet", "PaddedConv", "ResBlock", "Downsample", "Upsample", "AttentionBlock"]


def _num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """Largest number of GroupNorm groups <= ``max_groups`` that divides ``channels`` and leaves at least
    ``min_channels_per_group`` channels in every group (falls back to 1)."""
    limit = max(1, min(max_groups, channels // min_channels_per_group))
    for groups in range(limit, 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_num_groups(channels), channels, eps=1e-6)


def _zero_(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` in place (EDM-style zero-initialised last layers)."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def pad_per_axis(x: Tensor, pad: Sequence[int], periodic: Sequence[bool]) -> Tensor:
    """Pad each spatial axis of ``x`` (``[B, C, *S]``) by ``pad[i]`` on both sides: circularly where
    ``periodic[i]``, with zeros elsewhere."""
    spatial_dims = x.dim() - 2
    for axis in range(spatial_dims):
        p = pad[axis]
        if p == 0:
            continue
        dim = 2 + axis
        if periodic[axis]:
            size = x.shape[dim]
            if p > size:
                raise ValueError(f"circular padding {p} exceeds the size {size} of spatial axis {axis}")
            x = torch.cat([x.narrow(dim, size - p, p), x, x.narrow(dim, 0, p)], dim=dim)
        else:
            # F.pad lists (left, right) pairs starting from the last dimension.
            widths = [0, 0] * spatial_dims
            k = spatial_dims - 1 - axis
            widths[2 * k] = widths[2 * k + 1] = p
            x = F.pad(x, widths, mode="constant", value=0.0)
    return x


class PaddedConv(nn.Module):
    """Convolution with per-axis padding: circular on periodic axes, zeros elsewhere; the output has the
    input's size (odd ``kernel_size``). Equivalent to ``pad_per_axis`` followed by a 'valid' convolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        spatial_dims: int,
        periodic: Sequence[bool],
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if len(periodic) != spatial_dims:
            raise ValueError(f"periodic needs {spatial_dims} flags, got {len(periodic)}")
        self.spatial_dims = spatial_dims
        self.periodic = tuple(bool(p) for p in periodic)
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *([kernel_size] * spatial_dims)))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same default as torch.nn.ConvNd.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        p = self.kernel_size // 2
        if p == 0:
            return _CONV[self.spatial_dims](x, self.weight, self.bias)
        # Circular padding of each periodic axis as one concatenation [x[-p:], x, x[:p]] (the values of
        # F.pad(mode="circular"), whose implementation fills a new tensor slice by slice: 2-3× the copies
        # forward and slice-assignment backward; ≈ 10 % of a quick U-Net training step in the profile).
        # The zero padding of the non-periodic axes is left to the convolution itself, which is the same as
        # F.pad(mode="constant") followed by a 'valid' convolution but saves a copy of the tensor.
        for axis, periodic in enumerate(self.periodic):
            if periodic:
                dim = axis + 2
                size = x.shape[dim]
                if p > size:
                    raise ValueError(f"circular padding {p} exceeds the size {size} of spatial axis {axis}")
                x = torch.cat([x.narrow(dim, size - p, p), x, x.narrow(dim, 0, p)], dim=dim)
        zero_pad = tuple(0 if periodic else p for periodic in self.periodic)
        return _CONV[self.spatial_dims](x, self.weight, self.bias, padding=zero_pad)

    def extra_repr(self) -> str:
        out_ch, in_ch = self.weight.shape[:2]
        return f"{in_ch}, {out_ch}, kernel_size={self.kernel_size}, periodic={self.periodic}"


class ResBlock(nn.Module):
    """Pre-activation residual block: GroupNorm-SiLU-conv, FiLM (scale-shift) from the noise embedding,
    GroupNorm-SiLU-dropout-conv (zero-initialised), plus a (1x1-projected) skip."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        spatial_dims: int,
        periodic: Sequence[bool],
        dropout: float = 0.0,
        skip_scale: float = 2**-0.5,
    ) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = PaddedConv(in_channels, out_channels, 3, spatial_dims, periodic)
        self.film = nn.Linear(emb_channels, 2 * out_channels)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero_(PaddedConv(out_channels, out_channels, 3, spatial_dims, periodic))
        self.skip = (
            PaddedConv(in_channels, out_channels, 1, spatial_dims, periodic)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.skip_scale = skip_scale

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb)).chunk(2, dim=1)
        shape = (*scale.shape, *([1] * (h.dim() - 2)))
        h = self.norm2(h) * (1.0 + scale.reshape(shape)) + shift.reshape(shape)
        h = self.conv2(self.dropout(F.silu(h)))
        return (self.skip(x) + h) * self.skip_scale


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all grid positions (no positional encoding, so it commutes with
    any permutation of positions, periodic shifts included); zero-initialised output projection."""

    def __init__(self, channels: int, num_heads: int = 1, skip_scale: float = 2**-0.5) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero_(nn.Linear(channels, channels))
        self.skip_scale = skip_scale

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, N, C]
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        heads = lambda z: z.reshape(b, -1, self.num_heads, c // self.num_heads).transpose(1, 2)
        h = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))  # [B, heads, N, C/heads]
        h = self.proj(h.transpose(1, 2).reshape(b, -1, c))
        return (x + h.transpose(1, 2).reshape(x.shape)) * self.skip_scale


class Downsample(nn.Module):
    """2x average pooling along every spatial axis (parameter-free, shift-equivariant for even shifts)."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims

    def forward(self, x: Tensor) -> Tensor:
        return _AVG_POOL[self.spatial_dims](x, kernel_size=2, stride=2)


class Upsample(nn.Module):
    """2x nearest-neighbour upsampling followed by a 3-wide padded convolution."""

    def __init__(self, channels: int, spatial_dims: int, periodic: Sequence[bool]) -> None:
        super().__init__()
        self.conv = PaddedConv(channels, channels, 3, spatial_dims, periodic)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """U-Net field denoiser for ``[B, C, *S]`` tensors with 1, 2 or 3 spatial axes.

    Args:
        spatial_dims: number of spatial axes (1, 2 or 3); a space-time image ``[B, C, T, X]`` has 2.
        channels: field channels ``C`` of ``x_t`` (and of the output).
        cond_channels: channels of the optional extra conditioning fields ``cond``.
        base_channels: width of the first level.
        channel_mults: width multiplier per level; there are ``len(channel_mults) - 1`` downsamplings,
            so every spatial size must be divisible by ``2 ** (len(channel_mults) - 1)``.
        num_res_blocks: residual blocks per level (encoder and decoder each).
        periodic: one flag per spatial axis; periodic axes use circular padding, the others zeros.
            ``None`` means no periodic axis; a single bool applies to all axes.
        dropout: dropout rate inside the residual blocks.
        attention: add a self-attention block in the bottleneck.
        attention_heads: number of heads of that block.

    The noise level is embedded by :class:`~physdiff.models.embedding.NoiseEmbedding` (``base_channels``
    sinusoidal features of 1000 · t_ref(c), the reference linear schedule's time at noise level c, →
    ``4 · base_channels``) and enters every residual block by FiLM.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        cond_channels: int = 0,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        periodic: Sequence[bool] | bool | None = None,
        dropout: float = 0.0,
        attention: bool = False,
        attention_heads: int = 1,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if channels < 1 or cond_channels < 0 or base_channels < 1 or num_res_blocks < 1:
            raise ValueError("channels, base_channels, num_res_blocks must be >= 1 and cond_channels >= 0")
        if len(channel_mults) < 1:
            raise ValueError("channel_mults must have at least one level")
        if periodic is None:
            periodic = (False,) * spatial_dims
        elif isinstance(periodic, bool):
            periodic = (periodic,) * spatial_dims
        periodic = tuple(bool(p) for p in periodic)
        if len(periodic) != spatial_dims:
            raise ValueError(f"periodic needs one flag per spatial axis ({spatial_dims}), got {periodic}")

        self.spatial_dims = spatial_dims
        self.channels = channels
        self.cond_channels = cond_channels
        self.periodic = periodic
        self.channel_mults = tuple(int(m) for m in channel_mults)
        self.num_levels = len(self.channel_mults)
        self.downsample_factor = 2 ** (self.num_levels - 1)

        emb_channels = 4 * base_channels
        conv = lambda cin, cout, k=3: PaddedConv(cin, cout, k, spatial_dims, periodic)
        block = lambda cin, cout: ResBlock(cin, cout, emb_channels, spatial_dims, periodic, dropout)

        # the argument of the sinusoids is 1000 · t_ref(c) (models/embedding.py, reference_time): with
        # 70 · c the quick advection U-Net, same data, seed and loss curve, predicted with val RMSE 0.131
        # instead of 0.044 (2026-12-01, docs/results.md); the EGNN keeps 70 · c (three-body and five-spring
        # tables within their seed spread of the t-conditioned ones)
        self.time_embed = NoiseEmbedding(emb_channels, features=base_channels, argument="reference_time")
        self.stem = conv(3 * channels + cond_channels, base_channels)

        # Encoder: each residual block output is kept as a skip.
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skip_channels: list[int] = []
        ch = base_channels
        for level, mult in enumerate(self.channel_mults):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(block(ch, base_channels * mult))
                ch = base_channels * mult
                skip_channels.append(ch)
            self.down_blocks.append(blocks)
            self.downsamples.append(Downsample(spatial_dims) if level < self.num_levels - 1 else nn.Identity())

        # Bottleneck.
        self.mid1 = block(ch, ch)
        self.mid_attn = AttentionBlock(ch, attention_heads) if attention else nn.Identity()
        self.mid2 = block(ch, ch)

        # Decoder: each residual block consumes one skip (concatenated along channels).
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            out_ch = base_channels * self.channel_mults[level]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(block(ch + skip_channels.pop(), out_ch))
                ch = out_ch
            self.up_blocks.append(blocks)
            self.upsamples.append(Upsample(ch, spatial_dims, periodic) if level > 0 else nn.Identity())

        self.hidden_channels = ch
        self.out_norm = _norm(ch)
        self.out_conv = _zero_(conv(ch, channels))

    def _check_inputs(
        self, x_t: Tensor, noise: Tensor, known: Tensor, mask: Tensor, cond: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        if x_t.dim() != 2 + self.spatial_dims or x_t.shape[1] != self.channels:
            raise ValueError(
                f"x_t must have shape [B, {self.channels}, <{self.spatial_dims} spatial axes>], got {tuple(x_t.shape)}"
            )
        for name, tensor in (("known", known), ("mask", mask)):
            if tensor.shape != x_t.shape:
                raise ValueError(f"{name} must have the shape of x_t {tuple(x_t.shape)}, got {tuple(tensor.shape)}")
        for axis, size in enumerate(x_t.shape[2:]):
            if size % self.downsample_factor:
                raise ValueError(
                    f"spatial axis {axis} has size {size}, which is not a multiple of "
                    f"{self.downsample_factor} (= 2**(levels-1) with {self.num_levels} levels)"
                )
        batch = x_t.shape[0]
        if noise.dim() == 0:
            noise = noise.expand(batch)
        if noise.shape != (batch,):
            raise ValueError(f"noise must have shape [B] = [{batch}], got {tuple(noise.shape)}")
        if self.cond_channels:
            expected = (batch, self.cond_channels, *x_t.shape[2:])
            if cond is None or cond.shape != expected:
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond must have shape {expected}, got {got}")
        elif cond is not None:
            raise ValueError("cond given but the network was built with cond_channels=0")
        return noise, known.to(x_t.dtype), mask.to(x_t.dtype)

    def forward(
        self,
        x_t: Tensor,
        noise: Tensor,
        known: Tensor,
        mask: Tensor,
        cond: Tensor | None = None,
        return_hidden: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Raw network output shaped like ``x_t``.

        Args:
            x_t: noisy sample ``[B, C, *S]``.
            noise: noise level c_noise = log(σ_t/α_t) ``[B]`` (a scalar is broadcast).
            known: clean values of the known entries (zero elsewhere), ``[B, C, *S]``.
            mask: 1 where known, 0 elsewhere, ``[B, C, *S]`` (bool accepted).
            cond: extra conditioning fields ``[B, cond_channels, *S]`` (required iff ``cond_channels``).
            return_hidden: also return the last decoder feature map ``[B, hidden_channels, *S]`` (full
                resolution, shift-equivariant like the output) for an auxiliary head.
        """
        noise, known, mask = self._check_inputs(x_t, noise, known, mask, cond)
        emb = self.time_embed(noise)
        inputs = [x_t, known, mask] + ([cond.to(x_t.dtype)] if cond is not None else [])
        h = self.stem(torch.cat(inputs, dim=1))

        skips: list[Tensor] = []
        for blocks, down in zip(self.down_blocks, self.downsamples, strict=True):
            for blk in blocks:
                h = blk(h, emb)
                skips.append(h)
            h = down(h)

        h = self.mid1(h, emb)
        h = self.mid_attn(h)
        h = self.mid2(h, emb)

        for blocks, up in zip(self.up_blocks, self.upsamples, strict=True):
            for blk in blocks:
                h = blk(torch.cat([h, skips.pop()], dim=1), emb)
            h = up(h)

        out = self.out_conv(F.silu(self.out_norm(h)))
        if return_hidden:
            return out, h
        return out
