"""Finite-difference operators on batched torch tensors (the one set used by every PDE residual).

All operators are differentiable, work for any floating dtype (float32/float64) and act on one axis
``dim`` of a tensor with arbitrary leading (batch) dimensions. The grid spacing is always passed
explicitly; nothing assumes a unit grid.

Boundary handling along the differentiated axis (``boundary``):

* ``"periodic"`` -- the axis wraps around (``u[n] = u[0]``); the output has the input's shape.
* ``"interior"`` -- only points whose full central stencil lies inside the array; the output is two
  entries shorter along ``dim`` (points ``1 .. n-2``).
* ``"one_sided"`` -- central differences in the interior and second-order one-sided formulas at the
  two end points; the output has the input's shape.

All formulas are second-order accurate (error ``O(h^2)`` for smooth functions), which
``tests/test_finite_difference.py`` checks once by grid refinement.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Boundary = Literal["periodic", "interior", "one_sided"]
_BOUNDARIES = ("periodic", "interior", "one_sided")

__all__ = [
    "Boundary",
    "central_diff",
    "second_diff",
    "time_derivative",
    "velocities_from_positions",
    "interior",
    "gradient_2d",
    "divergence_2d",
]


def _check(u: Tensor, h: float, dim: int, boundary: str, min_points: int) -> int:
    if not isinstance(h, (int, float)) or not h > 0:
        raise ValueError(f"grid spacing must be a positive number, got {h!r}")
    if boundary not in _BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; expected one of {_BOUNDARIES}")
    n = u.shape[dim]
    if n < min_points:
        raise ValueError(f"need at least {min_points} points along dim {dim} for this stencil, got {n}")
    return dim % u.ndim


def interior(u: Tensor, dim: int, width: int = 1) -> Tensor:
    """Drop ``width`` entries at both ends of axis ``dim`` (the points where a central stencil applies)."""
    n = u.shape[dim]
    return u.narrow(dim, width, n - 2 * width)


def central_diff(u: Tensor, h: float, dim: int = -1, boundary: Boundary = "periodic") -> Tensor:
    """First derivative ``du/dx`` by central differences ``(u[i+1] - u[i-1]) / (2h)``.

    Args:
        u: tensor of any shape with grid values along ``dim``.
        h: grid spacing along ``dim`` (> 0).
        dim: the differentiated axis.
        boundary: ``"periodic"`` (same shape, wrap-around), ``"interior"`` (``n-2`` points along
            ``dim``) or ``"one_sided"`` (same shape; ends use ``(-3u0 + 4u1 - u2)/(2h)`` and its mirror).

    Returns:
        The derivative, second-order accurate.
    """
    dim = _check(u, h, dim, boundary, 3)
    if boundary == "periodic":
        return (torch.roll(u, -1, dim) - torch.roll(u, 1, dim)) / (2.0 * h)
    n = u.shape[dim]
    mid = (u.narrow(dim, 2, n - 2) - u.narrow(dim, 0, n - 2)) / (2.0 * h)
    if boundary == "interior":
        return mid
    first = (-3.0 * u.narrow(dim, 0, 1) + 4.0 * u.narrow(dim, 1, 1) - u.narrow(dim, 2, 1)) / (2.0 * h)
    last = (3.0 * u.narrow(dim, n - 1, 1) - 4.0 * u.narrow(dim, n - 2, 1) + u.narrow(dim, n - 3, 1)) / (2.0 * h)
    return torch.cat([first, mid, last], dim=dim)


def second_diff(u: Tensor, h: float, dim: int = -1, boundary: Boundary = "periodic") -> Tensor:
    """Second derivative ``d2u/dx2`` by ``(u[i+1] - 2u[i] + u[i-1]) / h^2``.

    Boundary options as in :func:`central_diff`; ``"one_sided"`` uses the second-order four-point
    formula ``(2u0 - 5u1 + 4u2 - u3)/h^2`` (and its mirror) at the end points.
    """
    dim = _check(u, h, dim, boundary, 4 if boundary == "one_sided" else 3)
    if boundary == "periodic":
        return (torch.roll(u, -1, dim) - 2.0 * u + torch.roll(u, 1, dim)) / (h * h)
    n = u.shape[dim]
    mid = (u.narrow(dim, 2, n - 2) - 2.0 * u.narrow(dim, 1, n - 2) + u.narrow(dim, 0, n - 2)) / (h * h)
    if boundary == "interior":
        return mid
    u0, u1, u2, u3 = (u.narrow(dim, i, 1) for i in range(4))
    first = (2.0 * u0 - 5.0 * u1 + 4.0 * u2 - u3) / (h * h)
    v0, v1, v2, v3 = (u.narrow(dim, n - 1 - i, 1) for i in range(4))
    last = (2.0 * v0 - 5.0 * v1 + 4.0 * v2 - v3) / (h * h)
    return torch.cat([first, mid, last], dim=dim)


def time_derivative(u: Tensor, dt: float, dim: int = 1) -> Tensor:
    """Central time derivative over frames, ``(u[n+1] - u[n-1]) / (2 dt)``, on interior frames only.

    The output is two frames shorter along ``dim`` (frames ``1 .. T-2``).
    """
    return central_diff(u, dt, dim=dim, boundary="interior")


def velocities_from_positions(r: Tensor, dt: float, dim: int = 1) -> Tensor:
    """Velocities of a trajectory from its positions alone, second order in ``dt`` on every frame.

    Interior frames: ``(R[l+1] - R[l-1]) / (2 dt)``; the two end frames: the second-order one-sided
    stencils ``(-3R[0] + 4R[1] - R[2]) / (2 dt)`` and ``(3R[L-1] - 4R[L-2] + R[L-3]) / (2 dt)``
    (:func:`central_diff` with ``boundary="one_sided"``). Linear in ``R`` and exact for uniform motion (so
    the momentum of a closed system, whose centre of mass moves uniformly, is differenced exactly).

    Args:
        r: positions with frames along ``dim`` (at least 3), e.g. ``[B, L, K, D]``.
        dt: the frame spacing (> 0).
        dim: the frame axis.
    """
    return central_diff(r, float(dt), dim=dim, boundary="one_sided")


def gradient_2d(
    u: Tensor, dx: float, dy: float, dims: tuple[int, int] = (-2, -1), boundary: Boundary = "periodic"
) -> tuple[Tensor, Tensor]:
    """Gradient ``(du/dx, du/dy)`` of a field on a 2-D grid whose axes are ``dims = (x_dim, y_dim)``.

    With ``boundary="interior"`` both components are cropped to the common interior
    ``[1:-1, 1:-1]`` so that they are aligned point by point.
    """
    xd, yd = dims
    ux = central_diff(u, dx, xd, boundary)
    uy = central_diff(u, dy, yd, boundary)
    if boundary == "interior":
        ux = interior(ux, yd)
        uy = interior(uy, xd)
    return ux, uy


def divergence_2d(
    fx: Tensor,
    fy: Tensor,
    dx: float,
    dy: float,
    dims: tuple[int, int] = (-2, -1),
    boundary: Boundary = "periodic",
) -> Tensor:
    """Divergence ``d(fx)/dx + d(fy)/dy`` by central differences (aligned on the interior if asked)."""
    gx, _ = gradient_2d(fx, dx, dy, dims, boundary)
    _, gy = gradient_2d(fy, dx, dy, dims, boundary)
    return gx + gy
