"""Symmetry transformations of particle states: random orthogonal maps, rotations, permutations.

Particle states use the layout ``[..., K, 2D]`` (usually ``[B, L, K, 2D]``): positions in the channels
``[..., :D]``, velocities in ``[..., D:]``. An orthogonal Q acts on both as column vectors, x ↦ Q x
(implemented on the row-vector layout as x Qᵀ). Used for the random-rotation augmentation of
non-equivariant baselines and by :mod:`physdiff.testing.equivariance`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "random_orthogonal",
    "random_permutation",
    "rotate_vectors",
    "rotate_particle_state",
    "translate_positions",
    "permute_particles",
    "permute_edges",
    "random_rotate",
]


def random_orthogonal(
    n: int,
    dim: int,
    generator: torch.Generator | None = None,
    reflections: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` Haar-distributed orthogonal matrices ``[n, dim, dim]``.

    QR of a standard Gaussian matrix, G = QR, with the sign fix Q ← Q diag(sign(diag R)), is Haar on
    O(dim) (Mezzadri 2007). With ``reflections=False`` the first column of every Q with det Q = −1 is
    negated, which gives the Haar measure on SO(dim). Drawn in float64 on the CPU (so a CPU
    ``generator`` works for any ``device``), then cast.
    """
    g = torch.randn(n, dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    if not reflections:
        flip = torch.linalg.det(q) < 0
        q[flip, :, 0] = -q[flip, :, 0]
    return q.to(dtype=dtype, device=device)


def random_permutation(
    n: int, k: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """``n`` uniform random permutations of ``range(k)``, ``[n, k]`` (long)."""
    return torch.argsort(torch.rand(n, k, generator=generator), dim=-1).to(device)


def rotate_vectors(v: Tensor, q: Tensor) -> Tensor:
    """Apply Q to every D-vector stacked in the last axis: ``v`` ``[B, ..., n·D]`` ↦ per-vector Q v.

    ``q`` is ``[D, D]`` (one for all) or ``[B, D, D]`` (one per batch element).
    """
    d = q.shape[-1]
    if v.shape[-1] % d:
        raise ValueError(f"last axis {v.shape[-1]} is not a multiple of D = {d}")
    vs = v.unflatten(-1, (v.shape[-1] // d, d))
    if q.dim() == 2:
        out = vs @ q.transpose(-1, -2)
    else:
        qt = q.transpose(-1, -2).reshape(q.shape[0], *([1] * (vs.dim() - 3)), d, d)
        out = vs @ qt
    return out.flatten(-2)


def rotate_particle_state(x: Tensor, q: Tensor) -> Tensor:
    """Rotate/reflect positions and velocities of a state ``[B, L, K, 2D]`` (or ``[..., 2D]``) by Q.

    ``q`` is ``[D, D]`` or ``[B, D, D]``. Positions rotate about the origin.
    """
    if x.shape[-1] != 2 * q.shape[-1]:
        raise ValueError(f"state has {x.shape[-1]} channels, expected 2·D = {2 * q.shape[-1]}")
    return rotate_vectors(x, q)


def translate_positions(x: Tensor, c: Tensor, mask: Tensor | None = None) -> Tensor:
    """Add ``c`` (``[D]`` or broadcastable to ``x[..., :D]``) to the position channels of a state.

    With ``mask`` (the conditioning mask, same shape as ``x``) only entries where mask = 1 move — the
    convention for ``known`` tensors, which are zero where unknown.
    """
    d = x.shape[-1] // 2
    shift = c.to(x.dtype) * (1.0 if mask is None else mask[..., :d])
    return torch.cat([x[..., :d] + shift, x[..., d:]], dim=-1)


def permute_particles(x: Tensor, perm: Tensor, axis: int = -2) -> Tensor:
    """Reorder the particle axis: ``out[..., i, ...] = x[..., perm[i], ...]``.

    ``perm`` is ``[K]`` (same for the whole batch) or ``[B, K]`` (per batch element, axis 0 = batch).
    The default ``axis=-2`` fits states ``[B, L, K, 2D]``; use ``axis=-1`` for ``masses`` ``[B, K]``.
    """
    axis = axis % x.dim()
    perm = perm.to(x.device)
    if perm.dim() == 1:
        return x.index_select(axis, perm)
    shape = [1] * x.dim()
    shape[0], shape[axis] = perm.shape[0], perm.shape[1]
    return torch.take_along_dim(x, perm.view(shape), dim=axis)


def permute_edges(edges: Tensor, perm: Tensor) -> Tensor:
    """Permute both particle axes of an adjacency ``[..., K, K]``: out_ij = edges_{perm_i, perm_j}."""
    return permute_particles(permute_particles(edges, perm, axis=-2), perm, axis=-1)


def random_rotate(
    *states: Tensor, generator: torch.Generator | None = None, reflections: bool = True
) -> tuple[Tensor, ...]:
    """Augmentation: rotate every state ``[B, L, K, 2D]`` by the same per-sample random Q ∈ O(D).

    Pass x0 and ``known`` together so that they stay consistent; masks are rotation-invariant.
    """
    b, d = states[0].shape[0], states[0].shape[-1] // 2
    q = random_orthogonal(b, d, generator, reflections, dtype=states[0].dtype, device=states[0].device)
    return tuple(rotate_particle_state(s, q) for s in states)
