r"""Physics of interacting particles: energies, momenta, forces and the Newton residual.

Pure, differentiable functions written in torch (the priors backpropagate through them). Every
function also accepts numpy arrays: when any array argument is a numpy array, the arguments are
converted with :func:`torch.from_numpy` and the results are returned as numpy arrays.

Layouts (any number of leading batch dimensions ``...``, e.g. ``[N, L]`` for N trajectories of L frames):

* positions ``R`` and velocities ``V``: ``[..., K, D]`` (K particles, D spatial dimensions);
* masses ``m``: ``[..., K]``, broadcast **right-aligned** against ``R.shape[:-1]``. Masses stored per
  trajectory as ``[N, K]`` must therefore be given as ``m[:, None, :]`` (shape ``[N, 1, K]``) when ``R``
  is ``[N, L, K, D]``; a plain ``[K]`` vector or a Python float broadcasts everywhere;
* spring adjacency ``edges``: ``[..., K, K]``, symmetric, 0/1, zero diagonal, broadcast right-aligned
  against ``R.shape[:-2] + (K, K)`` (so ``[N, 1, K, K]`` for ``R`` of shape ``[N, L, K, D]``).

Equations (r_ij = |R_i − R_j|):

* kinetic energy        T = ½ Σ_{k,d} m_k V_{k,d}²
* gravity potential     U_G = −Σ_{i<j} G m_i m_j / r_ij                (each pair once)
* gravity forces        F_i = −∂U_G/∂R_i = −Σ_{j≠i} G m_i m_j (R_i − R_j) / r_ij³
* spring potential      U_S = ¼ κ Σ_{i≠j} e_ij r_ij²  (= ½ κ Σ_{i<j} e_ij r_ij², rest length 0)
* spring forces         F_i = −∂U_S/∂R_i = −κ Σ_j e_ij (R_i − R_j)
* Coulomb potential     U_C = Σ_{i<j} k q_i q_j / r_ij                 (charges ``q`` laid out like masses)
* Coulomb forces        F_i = −∂U_C/∂R_i = Σ_{j≠i} k q_i q_j (R_i − R_j) / r_ij³   (like charges repel)
* linear momentum       P = Σ_k m_k V_k
* angular momentum      L = Σ_k m_k R_k × V_k   (D = 2: the z-component x v_y − y v_x)
* Newton residual       m_k a_{l,k} − F_k(R_l),  a_l = (R_{l+1} − 2R_l + R_{l−1}) / Δt²  on interior frames.
* centre of mass        C = Σ_k m_k R_k / Σ_k m_k
* zero-CoM projection   P R = R_k − m_k (Σ_j m_j R_j) / Σ_j m_j²: the orthogonal projection onto the
                        subspace Σ_k m_k R_k = 0 where centred positions live (method.md §2)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "angular_momentum",
    "coincident",
    "coulomb_forces",
    "coulomb_potential",
    "centre_of_mass",
    "zero_com_projection",
    "gravity_forces",
    "gravity_potential",
    "inverse_distances",
    "kinetic_energy",
    "linear_momentum",
    "newton_residual",
    "pairwise_distances",
    "pairwise_differences",
    "spring_forces",
    "spring_potential",
]

ArrayLike = Tensor | np.ndarray
F = TypeVar("F", bound=Callable[..., Any])


def _numpy_compatible(fn: F) -> F:
    """Let a torch function take numpy arrays: convert them in, and convert the result back out.

    Array arguments (positional or keyword) that are :class:`numpy.ndarray` are converted with
    :func:`torch.from_numpy`. The result is returned as numpy only when some argument was a numpy array
    and none was a torch tensor; with torch inputs (or a mix) the result stays a tensor and keeps the
    autograd graph.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = (*args, *kwargs.values())
        if not any(isinstance(a, np.ndarray) for a in values):
            return fn(*args, **kwargs)
        return_numpy = not any(isinstance(a, Tensor) for a in values)

        def convert(a: Any) -> Any:
            return torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a

        out = fn(*(convert(a) for a in args), **{k: convert(v) for k, v in kwargs.items()})
        if return_numpy and isinstance(out, Tensor):
            return out.detach().numpy()
        return out

    return wrapper  # type: ignore[return-value]


def _as_tensor(x: Tensor | float, like: Tensor) -> Tensor:
    """A tensor with ``like``'s dtype and device (Python floats and tensors of any float dtype)."""
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def _off_diagonal_mask(K: int, like: Tensor) -> Tensor:
    """``1 − I_K`` with ``like``'s dtype and device."""
    return 1.0 - torch.eye(K, dtype=like.dtype, device=like.device)


@_numpy_compatible
def pairwise_differences(R: Tensor) -> Tensor:
    """Δ_ij = R_i − R_j, shape ``[..., K, K, D]``."""
    return R.unsqueeze(-2) - R.unsqueeze(-3)


@_numpy_compatible
def pairwise_distances(R: Tensor) -> Tensor:
    """r_ij = |R_i − R_j|, shape ``[..., K, K]``, zero on the diagonal.

    The square root is taken of r_ij² + δ_ij so that the diagonal has finite (zero) gradients.
    """
    K = R.shape[-2]
    r2 = pairwise_differences(R).square().sum(-1)
    eye = torch.eye(K, dtype=R.dtype, device=R.device)
    return torch.sqrt(r2 + eye) * (1.0 - eye)


@_numpy_compatible
def inverse_distances(R: Tensor) -> Tensor:
    """1/r_ij off the diagonal, 0 on the diagonal, shape ``[..., K, K]``; gradients are finite everywhere
    except at coinciding distinct particles (a true singularity)."""
    K = R.shape[-2]
    r2 = pairwise_differences(R).square().sum(-1)
    eye = torch.eye(K, dtype=R.dtype, device=R.device)
    return torch.rsqrt(r2 + eye) * (1.0 - eye)


@_numpy_compatible
def coincident(R: Tensor) -> Tensor:
    """Whether two distinct particles share a position (r_ij = 0, i ≠ j: where 1/r potentials and their
    forces are singular), a boolean of shape ``R.shape[:-2]``."""
    K = R.shape[-2]
    r2 = pairwise_differences(R).square().sum(-1)
    eye = torch.eye(K, dtype=torch.bool, device=R.device)
    return ((r2 == 0) & ~eye).any(-1).any(-1)


@_numpy_compatible
def kinetic_energy(V: Tensor, m: Tensor | float) -> Tensor:
    """T = ½ Σ_{k,d} m_k V_{k,d}², shape ``[...]`` for ``V`` of shape ``[..., K, D]``."""
    m = _as_tensor(m, V)
    return 0.5 * (m * V.square().sum(-1)).sum(-1)


def _mass_products(m: Tensor | float, R: Tensor) -> Tensor:
    """m_i m_j, broadcastable to ``[..., K, K]``."""
    m = _as_tensor(m, R)
    if m.dim() == 0:
        return m * m
    return m.unsqueeze(-1) * m.unsqueeze(-2)


@_numpy_compatible
def gravity_potential(R: Tensor, m: Tensor | float, G: float = 1.0) -> Tensor:
    """U_G = −Σ_{i<j} G m_i m_j / r_ij (each pair counted once), shape ``[...]``."""
    pair = _mass_products(m, R) * inverse_distances(R)
    return -0.5 * G * pair.sum((-1, -2))


@_numpy_compatible
def gravity_forces(R: Tensor, m: Tensor | float, G: float = 1.0) -> Tensor:
    """F_i = −Σ_{j≠i} G m_i m_j (R_i − R_j) / r_ij³ = −∇_{R_i} U_G, shape ``[..., K, D]``."""
    inv_r = inverse_distances(R)
    coeff = G * _mass_products(m, R) * inv_r * inv_r * inv_r  # [..., K, K], zero diagonal
    return -(coeff.unsqueeze(-1) * pairwise_differences(R)).sum(-2)


def _laplacian(e: Tensor) -> Tensor:
    """The graph Laplacian diag(Σ_j e_ij) − e, ``[..., K, K]`` (small: built once, applied to every frame)."""
    return torch.diag_embed(e.sum(-1)) - e


def _adjacency_product(e: Tensor, X: Tensor) -> Tensor:
    """Σ_j e_ij X_j, shape ``[..., K, D]``, for ``e`` ``[..., K, K]`` broadcast against ``X`` ``[..., K, D]``
    (``e`` an adjacency or a Laplacian).

    ``einsum`` rather than ``@``: with ``e`` broadcast over frames (``[N, 1, K, K]`` against ``[N, L, K, D]``)
    a matmul expands ``e`` and runs N·L tiny products, einsum folds the frames into one product per ``N``
    (2× faster at 10,000 × 47 frames)."""
    return torch.einsum("...ij,...jd->...id", e, X)


@_numpy_compatible
def spring_potential(R: Tensor, edges: Tensor, kappa: float = 0.1) -> Tensor:
    """U_S = ¼ κ Σ_{i≠j} e_ij |R_i − R_j|² (springs of rest length 0, each spring once), shape ``[...]``.

    Computed as the quadratic form ½ κ Σ_i X_i · (L X)_i with the Laplacian L = diag(deg) − ē of the
    symmetrised adjacency ē = (e + eᵀ)/2 and X = R − mean_k R_k (L annihilates translations, and centring
    avoids the cancellation of |R|² terms far from the origin): no ``[..., K, K, D]`` differences.
    """
    e = _as_tensor(edges, R)
    X = R - R.mean(-2, keepdim=True)
    LX = _adjacency_product(_laplacian(0.5 * (e + e.transpose(-1, -2))), X)
    return (0.5 * kappa) * (X * LX).flatten(-2).sum(-1)


@_numpy_compatible
def spring_forces(R: Tensor, edges: Tensor, kappa: float = 0.1) -> Tensor:
    """F_i = −κ Σ_j e_ij (R_i − R_j) = −κ (deg_i R_i − Σ_j e_ij R_j) = −∇_{R_i} U_S, shape ``[..., K, D]``."""
    return (-kappa) * _adjacency_product(_laplacian(_as_tensor(edges, R)), R)


@_numpy_compatible
def linear_momentum(V: Tensor, m: Tensor | float) -> Tensor:
    """P = Σ_k m_k V_k, shape ``[..., D]``."""
    m = _as_tensor(m, V)
    if m.dim() == 0:
        return m * V.sum(-2)
    return (m.unsqueeze(-1) * V).sum(-2)


@_numpy_compatible
def angular_momentum(R: Tensor, V: Tensor, m: Tensor | float) -> Tensor:
    """L = Σ_k m_k R_k × V_k about the origin.

    D = 2: the scalar z-component Σ_k m_k (x_k v_{y,k} − y_k v_{x,k}), shape ``[...]``;
    D = 3: the vector, shape ``[..., 3]``.
    """
    m = _as_tensor(m, R)
    D = R.shape[-1]
    if D == 2:
        lz = R[..., 0] * V[..., 1] - R[..., 1] * V[..., 0]
        return (m * lz).sum(-1)
    if D == 3:
        mm = m if m.dim() == 0 else m.unsqueeze(-1)
        return (mm * torch.linalg.cross(R, V, dim=-1)).sum(-2)
    raise ValueError(f"angular_momentum needs D = 2 or 3, got D = {D}")


@_numpy_compatible
def newton_residual(R: Tensor, m: Tensor | float, dt: float, forces_fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Residual of Newton's second law with central-difference accelerations.

    ρ_l = m a_l − F(R_l),  a_l = (R_{l+1} − 2 R_l + R_{l−1}) / Δt²,  l = 1 … L−2,

    for ``R`` of shape ``[..., L, K, D]`` (frames on axis −3). Returns ``[..., L−2, K, D]``.

    Args:
        R: positions; frames on axis −3.
        m: masses, broadcast right-aligned against ``[..., L−2, K]`` (e.g. ``[N, 1, K]`` or ``[K]``).
        dt: time between frames Δt.
        forces_fn: maps positions ``[..., L−2, K, D]`` (the interior frames) to forces of the same shape,
            e.g. ``lambda R: gravity_forces(R, m, G)``.
    """
    if R.shape[-3] < 3:
        raise ValueError(f"newton_residual needs at least 3 frames on axis -3, got shape {tuple(R.shape)}")
    m = _as_tensor(m, R)
    accel = (R[..., 2:, :, :] - 2.0 * R[..., 1:-1, :, :] + R[..., :-2, :, :]) / (dt * dt)
    mm = m if m.dim() == 0 else m.unsqueeze(-1)
    return mm * accel - forces_fn(R[..., 1:-1, :, :])


def _masses_like(m: Tensor | float | None, R: Tensor) -> Tensor:
    """Masses ``[..., K, 1]`` broadcasting against ``R`` ``[..., K, D]`` (unit masses for ``None``)."""
    if m is None:
        return R.new_ones(R.shape[:-1]).unsqueeze(-1)
    m = _as_tensor(m, R)
    if m.dim() == 0:
        return m.expand(R.shape[:-1]).unsqueeze(-1)
    return m.unsqueeze(-1)


@_numpy_compatible
def centre_of_mass(R: Tensor, m: Tensor | float | None = None) -> Tensor:
    """C = Σ_k m_k R_k / Σ_k m_k, shape ``[..., 1, D]`` (keeps the particle axis, to subtract from ``R``)."""
    w = _masses_like(m, R)
    return (w * R).sum(-2, keepdim=True) / w.sum(-2, keepdim=True)


@_numpy_compatible
def zero_com_projection(R: Tensor, m: Tensor | float | None = None) -> Tensor:
    """Orthogonal projection of ``R`` ``[..., K, D]`` onto the subspace Σ_k m_k R_k = 0 (per leading index):

        P R = R_k − m_k c,   c = Σ_j m_j R_j / Σ_j m_j².

    Centred positions (R − centre of mass) live in this subspace, so this is the projection a VP diffusion
    of centred positions needs for its noise and its outputs (translations are not homogeneous, method.md
    §2). It is symmetric and idempotent, commutes with rotations acting on D and with permutations of the
    particles (masses permuted alike), and reduces to subtracting the plain mean for equal masses. Unlike
    ``R − centre_of_mass(R, m)`` (an oblique projection onto the same subspace) it maps isotropic noise to
    isotropic noise within the subspace.
    """
    w = _masses_like(m, R)
    c = (w * R).sum(-2, keepdim=True) / w.square().sum(-2, keepdim=True)
    return R - w * c


# ------------------------------------------------------------------------------------------- Coulomb
@_numpy_compatible
def coulomb_potential(R: Tensor, q: Tensor | float, k: float = 1.0) -> Tensor:
    """U_C = Σ_{i<j} k q_i q_j / r_ij (each pair counted once; like charges give U > 0), shape ``[...]``.

    Charges ``q`` are laid out like masses: ``[..., K]`` broadcast right-aligned against ``R.shape[:-1]``
    (``q[:, None, :]`` for ``R`` of shape ``[N, L, K, D]``), or a Python float.
    """
    pair = _mass_products(q, R) * inverse_distances(R)
    return 0.5 * k * pair.sum((-1, -2))


@_numpy_compatible
def coulomb_forces(R: Tensor, q: Tensor | float, k: float = 1.0) -> Tensor:
    """F_i = Σ_{j≠i} k q_i q_j (R_i − R_j) / r_ij³ = −∇_{R_i} U_C (like charges repel), shape ``[..., K, D]``."""
    inv_r = inverse_distances(R)
    coeff = k * _mass_products(q, R) * inv_r * inv_r * inv_r  # [..., K, K], zero diagonal
    return (coeff.unsqueeze(-1) * pairwise_differences(R)).sum(-2)
