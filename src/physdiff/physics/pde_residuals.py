"""Finite-difference PDE residuals ``R(u)`` on batched torch tensors.

Each function returns the residual on the points where its stencil applies (documented per function);
``R = 0`` for an exact solution, and on simulated ground truth ``R`` equals the discretisation error
(the *floor*). They serve both as physical-feasibility priors (method spec, section 3) and as the
``constraint_rmse`` metric. The prior case of each residual (linear / multilinear / general nonlinear)
is stated in its docstring:

* advection ``u_t + beta u_x`` -- linear;
* Burgers ``u_t + u u_x - (nu/pi) u_xx`` -- multilinear (every product multiplies distinct grid points);
* Darcy ``-div(a grad u) - f`` -- linear in ``u`` given ``a``;
* shallow-water mass ``h_t + (hu)_x + (hv)_y`` -- linear in the conservative variables;
* shallow-water momentum -- multilinear when multiplied through by ``h²`` (the prior's form); the flux
  form (dividing by ``h``) is general nonlinear.

All derivatives come from :mod:`physdiff.physics.finite_difference`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from physdiff.physics.finite_difference import central_diff, interior, second_diff, time_derivative

__all__ = [
    "advection_residual",
    "burgers_residual",
    "darcy_residual",
    "darcy_flux_divergence",
    "shallow_water_mass_residual",
    "shallow_water_momentum_residual",
    "shallow_water_momentum_flux_residual",
]


def _need(u: Tensor, ndim: int, name: str, layout: str) -> None:
    if u.ndim != ndim:
        raise ValueError(f"{name} expects a tensor of layout {layout}, got shape {tuple(u.shape)}")


def advection_residual(u: Tensor, dt: float, dx: float, beta: float) -> Tensor:
    """Linear advection residual ``u_t + beta u_x``.

    Args:
        u: ``[B, T, X]`` space-time fields, ``X`` periodic.
        dt: time between frames; dx: grid spacing; beta: advection speed.

    Returns:
        ``[B, T-2, X]``: central time differences on interior frames ``1..T-2`` plus
        ``beta * (u[i+1] - u[i-1]) / (2 dx)`` (periodic) on those frames. Linear in ``u``.
    """
    _need(u, 3, "advection_residual", "[B, T, X]")
    u_t = time_derivative(u, dt, dim=1)
    u_x = central_diff(interior(u, 1), dx, dim=2, boundary="periodic")
    return u_t + beta * u_x


def burgers_residual(u: Tensor, dt: float, dx: float, nu: float) -> Tensor:
    """Viscous Burgers residual ``u_t + u u_x - (nu/pi) u_xx`` (PDEBench's viscosity convention).

    The convective term is discretised as ``u_i (u_{i+1} - u_{i-1}) / (2 dx)`` so that every product
    multiplies two *distinct* grid values: the residual is multilinear in the grid values (the
    multilinear prior case). Diffusion uses ``(u_{i+1} - 2u_i + u_{i-1}) / dx^2``; ``x`` is periodic.

    Args:
        u: ``[B, T, X]``; dt, dx: spacings; nu: viscosity parameter (the equation uses ``nu/pi``).

    Returns:
        ``[B, T-2, X]`` on interior frames.
    """
    _need(u, 3, "burgers_residual", "[B, T, X]")
    u_t = time_derivative(u, dt, dim=1)
    ui = interior(u, 1)
    conv = ui * central_diff(ui, dx, dim=2, boundary="periodic")
    diff = (nu / torch.pi) * second_diff(ui, dx, dim=2, boundary="periodic")
    return u_t + conv - diff


def darcy_flux_divergence(u: Tensor, a: Tensor, dx: float) -> Tensor:
    """Finite-volume ``-div(a grad u)`` on a cell-centred square grid with ``u = 0`` on the boundary.

    Cell ``(i, j)`` of width ``dx``; face coefficients are harmonic means
    ``a_{i+1/2,j} = 2 a_{i,j} a_{i+1,j} / (a_{i,j} + a_{i+1,j})``. The wall lies half a cell outside
    the outermost cell centres; the Dirichlet condition uses the ghost value ``u_ghost = -u_{i,j}``
    (so the linear interpolant vanishes on the wall) with the face coefficient ``a_{i,j}``, i.e. a
    boundary flux ``2 a_{i,j} u_{i,j} / dx``. This is exactly the operator
    :func:`physdiff.systems.darcy.assemble_darcy_matrix` assembles. Second-order accurate.

    Args:
        u: ``[B, X, Y]`` solution; a: ``[B, X, Y]`` (or broadcastable) positive coefficient; dx > 0.

    Returns:
        ``[B, X, Y]``: ``-div(a grad u)`` in every cell.
    """
    _need(u, 3, "darcy_flux_divergence", "[B, X, Y]")
    a = torch.as_tensor(a, dtype=u.dtype, device=u.device).expand_as(u)
    # Face coefficients (interior faces: harmonic mean; boundary faces: the cell's own a, doubled
    # through the ghost value -u).
    ax = 2.0 * a[:, 1:, :] * a[:, :-1, :] / (a[:, 1:, :] + a[:, :-1, :])  # [B, X-1, Y]
    ay = 2.0 * a[:, :, 1:] * a[:, :, :-1] / (a[:, :, 1:] + a[:, :, :-1])  # [B, X, Y-1]
    fx = ax * (u[:, 1:, :] - u[:, :-1, :]) / dx  # flux a u_x on interior x-faces
    fy = ay * (u[:, :, 1:] - u[:, :, :-1]) / dx
    fx_lo = a[:, :1, :] * (2.0 * u[:, :1, :]) / dx  # a (u_0 - u_ghost)/dx at the x=0 wall
    fx_hi = -a[:, -1:, :] * (2.0 * u[:, -1:, :]) / dx  # a (u_ghost - u_{n-1})/dx at x=1
    fy_lo = a[:, :, :1] * (2.0 * u[:, :, :1]) / dx
    fy_hi = -a[:, :, -1:] * (2.0 * u[:, :, -1:]) / dx
    flux_x = torch.cat([fx_lo, fx, fx_hi], dim=1)  # [B, X+1, Y] on faces
    flux_y = torch.cat([fy_lo, fy, fy_hi], dim=2)  # [B, X, Y+1]
    div = (flux_x[:, 1:, :] - flux_x[:, :-1, :]) / dx + (flux_y[:, :, 1:] - flux_y[:, :, :-1]) / dx
    return -div


def darcy_residual(u: Tensor, a: Tensor, dx: float, f: float | Tensor = 1.0) -> Tensor:
    """Darcy residual ``-div(a grad u) - f`` with the solver's finite-volume stencil.

    See :func:`darcy_flux_divergence` for the stencil (harmonic-mean faces, ``u = 0`` Dirichlet walls
    via ghost values). Linear (affine) in ``u`` given ``a``.

    Args:
        u: ``[B, X, Y]``; a: ``[B, X, Y]`` permeability (> 0); dx: cell width; f: source (scalar or
            broadcastable tensor).

    Returns:
        ``[B, X, Y]`` residual in every cell.
    """
    return darcy_flux_divergence(u, a, dx) - f


def _split_sw(q: Tensor, name: str) -> tuple[Tensor, Tensor, Tensor]:
    _need(q, 5, name, "[B, T, 3, X, Y] with channels (h, hu, hv)")
    if q.shape[2] != 3:
        raise ValueError(
            f"{name} needs the conservative variables (h, hu, hv) in channel dim 2, got shape "
            f"{tuple(q.shape)}; PDEBench's shallow-water files store h only, so mass/momentum "
            "residuals are unavailable for them"
        )
    return q[:, :, 0], q[:, :, 1], q[:, :, 2]


def shallow_water_mass_residual(q: Tensor, dt: float, dx: float, dy: float) -> Tensor:
    """Shallow-water mass residual ``h_t + (hu)_x + (hv)_y`` in conservative variables.

    Args:
        q: ``[B, T, 3, X, Y]`` with channels ``(h, hu, hv)`` (non-periodic walls).
        dt, dx, dy: spacings.

    Returns:
        ``[B, T-2, X-2, Y-2]``: central differences on interior frames and interior cells. Linear in q.
    """
    h, hu, hv = _split_sw(q, "shallow_water_mass_residual")
    h_t = interior(interior(time_derivative(h, dt, dim=1), 2), 3)
    hu_x = interior(central_diff(interior(hu, 1), dx, dim=2, boundary="interior"), 3)
    hv_y = interior(central_diff(interior(hv, 1), dy, dim=3, boundary="interior"), 2)
    return h_t + hu_x + hv_y


def shallow_water_momentum_flux_residual(
    q: Tensor, dt: float, dx: float, dy: float, g: float = 1.0, eps: float = 1e-6
) -> Tensor:
    """Shallow-water momentum residuals in flux form (flat bottom), general nonlinear (divides by ``h``):

    ``(hu)_t + (hu^2/h + g h^2/2)_x + (hu hv / h)_y`` and ``(hv)_t + (hu hv / h)_x + (hv^2/h + g h^2/2)_y``,
    central differences, ``h`` clamped below by ``eps``. The reference form; the prior uses the
    multilinear :func:`shallow_water_momentum_residual`.

    Returns:
        ``[B, T-2, 2, X-2, Y-2]`` (x- and y-momentum) on interior frames and cells.
    """
    h, hu, hv = _split_sw(q, "shallow_water_momentum_flux_residual")
    hs = h.clamp_min(eps)
    fxx = hu * hu / hs + 0.5 * g * h * h
    fxy = hu * hv / hs
    fyy = hv * hv / hs + 0.5 * g * h * h

    def dtt(v: Tensor) -> Tensor:
        return interior(interior(time_derivative(v, dt, dim=1), 2), 3)

    def ddx(v: Tensor) -> Tensor:
        return interior(central_diff(interior(v, 1), dx, dim=2, boundary="interior"), 3)

    def ddy(v: Tensor) -> Tensor:
        return interior(central_diff(interior(v, 1), dy, dim=3, boundary="interior"), 2)

    rx = dtt(hu) + ddx(fxx) + ddy(fxy)
    ry = dtt(hv) + ddx(fxy) + ddy(fyy)
    return torch.stack([rx, ry], dim=2)


def shallow_water_momentum_residual(q: Tensor, dt: float, dx: float, dy: float, g: float = 1.0) -> Tensor:
    r"""Shallow-water momentum residuals multiplied through by ``h²``: a **multilinear** residual.

    With m = hu, w = hv the flux form m_t + (m²/h + g h²/2)_x + (m w/h)_y = 0 times h² is the polynomial

        R_x = h² m_t + 2 h m m_x − m² h_x + h w m_y + h m w_y − m w h_y + g h³ h_x,
        R_y = h² w_t + h w m_x + h m w_x − m w h_x + 2 h w w_y − w² h_y + g h³ h_y,

    which vanishes exactly where the flux form does (h > 0) and has no division. It is discretised with
    central differences so that every product multiplies **distinct** grid values, each entering linearly
    (method.md §3.2): the squares take neighbours, h² m_t → h^{n+1} h^{n−1} (m^{n+1} − m^{n−1})/(2Δt),
    m² h_x → m_{j+1} m_{j−1} (h_{i+1} − h_{i−1})/(2Δx), g h³ h_x → g h h_{j+1} h_{j−1} (h_{i+1} − h_{i−1})/(2Δx)
    (and w² h_y, g h³ h_y with the x-neighbours). Each replacement is second-order accurate, so R equals
    h² × the flux residual up to O(Δt², Δx², Δy²). Multilinear, its Jensen gap is a sum of posterior
    covariances of distinct coordinates, which vanishes as σ_t → 0: the prior penalises ‖R(x̂0)‖².

    Args:
        q: ``[B, T, 3, X, Y]`` with channels ``(h, hu, hv)``; dt, dx, dy: spacings; g: gravity.

    Returns:
        ``[B, T-2, 2, X-2, Y-2]`` (x- and y-momentum) on interior frames and cells.
    """
    h, m, w = _split_sw(q, "shallow_water_momentum_residual")

    def c(f: Tensor) -> Tensor:
        return f[:, 1:-1, 1:-1, 1:-1]

    def t_nb(f: Tensor) -> tuple[Tensor, Tensor]:
        return f[:, 2:, 1:-1, 1:-1], f[:, :-2, 1:-1, 1:-1]

    def x_nb(f: Tensor) -> tuple[Tensor, Tensor]:
        return f[:, 1:-1, 2:, 1:-1], f[:, 1:-1, :-2, 1:-1]

    def y_nb(f: Tensor) -> tuple[Tensor, Tensor]:
        return f[:, 1:-1, 1:-1, 2:], f[:, 1:-1, 1:-1, :-2]

    def d(nb: tuple[Tensor, Tensor], step: float) -> Tensor:
        return (nb[0] - nb[1]) / (2.0 * step)

    hc, mc, wc = c(h), c(m), c(w)
    h_tp, h_tm = t_nb(h)
    h_xp, h_xm = x_nb(h)
    h_yp, h_ym = y_nb(h)
    m_x, m_y, w_x, w_y = d(x_nb(m), dx), d(y_nb(m), dy), d(x_nb(w), dx), d(y_nb(w), dy)
    h_x, h_y = d((h_xp, h_xm), dx), d((h_yp, h_ym), dy)
    m_yp, m_ym = y_nb(m)
    w_xp, w_xm = x_nb(w)
    rx = (
        h_tp * h_tm * d(t_nb(m), dt)
        + 2.0 * hc * mc * m_x
        - m_yp * m_ym * h_x
        + hc * wc * m_y
        + hc * mc * w_y
        - mc * wc * h_y
        + g * hc * h_yp * h_ym * h_x
    )
    ry = (
        h_tp * h_tm * d(t_nb(w), dt)
        + hc * wc * m_x
        + hc * mc * w_x
        - mc * wc * h_x
        + 2.0 * hc * wc * w_y
        - w_xp * w_xm * h_y
        + g * hc * h_xp * h_xm * h_y
    )
    return torch.stack([rx, ry], dim=2)
