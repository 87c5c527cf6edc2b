"""2-D shallow-water equations (flat bottom) in conservative variables ``q = (h, hu, hv)``:

    h_t  + (hu)_x                + (hv)_y                = 0
    (hu)_t + (hu^2/h + g h^2/2)_x + (hu hv/h)_y           = 0
    (hv)_t + (hu hv/h)_x          + (hv^2/h + g h^2/2)_y  = 0,     g = 1.0.

Domain ``[-2.5, 2.5]^2`` with ``nx x ny`` cells (centres ``-2.5 + (i + 1/2) dx``), reflective walls.
Initial data: a radial dam break (PDEBench-like) with ``h = h_in`` inside a circle of radius ``r``
about the origin and ``h_out`` outside, fluid at rest; ``r ~ U(radius_range)``,
``h_in ~ U(h_in_range)``, ``h_out ~ U(h_out_range)``.

Scheme: finite volume with the Rusanov (local Lax-Friedrichs) flux
``F = (F_L + F_R)/2 - s/2 (q_R - q_L)``, ``s = max(|u_n| + sqrt(g h))`` over the two sides.
``order=2`` (default) reconstructs face values with minmod-limited linear slopes (MUSCL) and steps
with SSP-RK2 (Heun); ``order=1`` uses piecewise-constant states and forward Euler.
Walls: two ghost layers mirror ``h`` and the tangential momentum and negate the normal momentum, so
the wall mass flux is exactly zero and total mass is conserved to round-off; a lake at rest stays at
rest exactly. Time step (per sample, vectorised): ``dt = CFL / (max(|u|+c)/dx + max(|v|+c)/dy)`` with
``CFL = 0.4``, shortened to land exactly on the output times ``t_n = n t_final/(nt-1)``.

Bad settings raise ``ValueError`` naming the setting: ``cfl`` outside ``(0, CFL_MAX]`` (``CFL_MAX = 0.5``:
the limit of the minmod-MUSCL/SSP-RK2 scheme under this unsplit step rule; forward Euler with
piecewise-constant states would allow 1), ``g <= 0``, ``length <= 0``, fewer than 3 cells, depths
``<= 0`` in ``h_in_range``/``h_out_range`` or an initial state, a negative ``radius_range``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DEFAULTS", "CFL_MAX", "ShallowWater2D", "dam_break", "simulate", "total_mass"]

#: Largest admissible CFL number of the time-step rule (both orders).
CFL_MAX: float = 0.5

DEFAULTS: dict[str, Any] = {
    "nx": 32,
    "ny": 32,
    "nt": 16,
    "t_final": 1.0,
    "g": 1.0,
    "cfl": 0.4,
    "order": 2,
    "radius_range": (0.3, 0.7),
    "h_in_range": (1.6, 2.4),
    "h_out_range": (0.8, 1.2),
    "length": 5.0,
}


def _minmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``minmod(a, b)``: the smaller-magnitude argument when signs agree, else 0 (odd-symmetric)."""
    return np.where(a * b > 0.0, np.where(np.abs(a) < np.abs(b), a, b), 0.0)


def total_mass(q: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``sum h dx dy`` per sample and frame for ``q [..., 3, X, Y]``."""
    return q[..., 0, :, :].sum(axis=(-2, -1)) * dx * dy


class ShallowWater2D:
    """Batched finite-volume solver on a rectangle with reflective walls; state ``q [N, 3, X, Y]``."""

    def __init__(self, nx: int, ny: int, length: float = 5.0, g: float = 1.0, cfl: float = 0.4, order: int = 2) -> None:
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        if not (np.isfinite(cfl) and 0 < cfl <= CFL_MAX):
            raise ValueError(
                f"shallow-water setting cfl={cfl} violates the stability bound 0 < cfl <= {CFL_MAX} "
                "(cfl must be in (0, 0.5] for this scheme)"
            )
        if not (np.isfinite(g) and g > 0):
            raise ValueError(f"shallow-water gravity setting g must be finite and > 0, got g={g}")
        if not (np.isfinite(length) and length > 0):
            raise ValueError(f"shallow-water domain setting length must be finite and > 0, got length={length}")
        if nx < 3 or ny < 3:
            raise ValueError(f"shallow-water grid settings nx, ny must be >= 3, got nx={nx}, ny={ny}")
        self.nx, self.ny, self.g, self.cfl, self.order = nx, ny, g, cfl, order
        self.dx = length / nx
        self.dy = length / ny
        self.x = -0.5 * length + (np.arange(nx) + 0.5) * self.dx
        self.y = -0.5 * length + (np.arange(ny) + 0.5) * self.dy

    # -- fluxes ---------------------------------------------------------------------------------
    def _flux(self, q: np.ndarray, normal: int) -> tuple[np.ndarray, np.ndarray]:
        """Physical flux along ``normal`` (0: x, 1: y) and the normal wave speed ``|u_n| + c``."""
        h, hu, hv = q[:, 0], q[:, 1], q[:, 2]
        un = (hu if normal == 0 else hv) / h
        p = 0.5 * self.g * h * h
        if normal == 0:
            f = np.stack([hu, hu * un + p, hv * un], axis=1)
        else:
            f = np.stack([hv, hu * un, hv * un + p], axis=1)
        return f, np.abs(un) + np.sqrt(self.g * h)

    def _rusanov(self, ql: np.ndarray, qr: np.ndarray, normal: int) -> np.ndarray:
        fl, sl = self._flux(ql, normal)
        fr, sr = self._flux(qr, normal)
        s = np.maximum(sl, sr)[:, None]
        return 0.5 * (fl + fr) - 0.5 * s * (qr - ql)

    @staticmethod
    def _sl(q: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
        """View ``q[..., start:stop, ...]`` along ``axis``."""
        idx: list[slice] = [slice(None)] * q.ndim
        idx[axis] = slice(start, stop)
        return q[tuple(idx)]

    def _pad(self, q: np.ndarray, axis: int, width: int) -> np.ndarray:
        """Mirror ghost layers along spatial ``axis`` (2: x, 3: y), normal momentum negated."""
        n = q.shape[axis]
        lo = np.flip(self._sl(q, axis, 0, width), axis=axis).copy()
        hi = np.flip(self._sl(q, axis, n - width, n), axis=axis).copy()
        comp = 1 if axis == 2 else 2
        lo[:, comp] *= -1.0
        hi[:, comp] *= -1.0
        return np.concatenate([lo, q, hi], axis=axis)

    def _faces(self, q: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Left/right states at the ``n+1`` faces along ``axis`` (walls included)."""
        n = q.shape[axis]
        sl = self._sl
        if self.order == 1:
            qp = self._pad(q, axis, 1)
            return sl(qp, axis, 0, n + 1), sl(qp, axis, 1, n + 2)
        qp = self._pad(q, axis, 2)  # n + 4 cells
        d = np.diff(qp, axis=axis)  # n + 3 differences
        slope = _minmod(sl(d, axis, 0, n + 2), sl(d, axis, 1, n + 3))
        cells = sl(qp, axis, 1, n + 3)  # cells -1 .. n (one ghost each side)
        ql = sl(cells, axis, 0, n + 1) + 0.5 * sl(slope, axis, 0, n + 1)  # upper face of the left cell
        qr = sl(cells, axis, 1, n + 2) - 0.5 * sl(slope, axis, 1, n + 2)  # lower face of the right cell
        return ql, qr

    def rhs(self, q: np.ndarray) -> np.ndarray:
        """``-(div F)`` per cell, ``[N, 3, X, Y]``."""
        ql, qr = self._faces(q, 2)
        fx = self._rusanov(ql, qr, 0)
        ql, qr = self._faces(q, 3)
        fy = self._rusanov(ql, qr, 1)
        return -(np.diff(fx, axis=2) / self.dx + np.diff(fy, axis=3) / self.dy)

    def max_dt(self, q: np.ndarray) -> np.ndarray:
        """CFL-limited step per sample, ``[N]``."""
        h = q[:, 0]
        c = np.sqrt(self.g * h)
        sx = np.max(np.abs(q[:, 1] / h) + c, axis=(1, 2))
        sy = np.max(np.abs(q[:, 2] / h) + c, axis=(1, 2))
        return self.cfl / (sx / self.dx + sy / self.dy)

    def step(self, q: np.ndarray, dt: np.ndarray) -> np.ndarray:
        """Advance every sample by its own ``dt [N]`` (0 leaves a sample unchanged)."""
        dtb = dt[:, None, None, None]
        if self.order == 1:
            return q + dtb * self.rhs(q)
        q1 = q + dtb * self.rhs(q)
        return 0.5 * (q + q1 + dtb * self.rhs(q1))

    def solve(self, q0: np.ndarray, t: np.ndarray, max_steps: int = 1_000_000) -> np.ndarray:
        """Integrate ``q0 [N, 3, X, Y]`` to the frame times ``t`` (``t[0]`` initial): ``[N, T, 3, X, Y]``."""
        q = np.array(q0, dtype=np.float64)
        if q.ndim != 4 or q.shape[1:] != (3, self.nx, self.ny):
            raise ValueError(f"initial state q0 must have shape [N, 3, {self.nx}, {self.ny}], got {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError("initial state q0 contains NaN or inf")
        if np.any(q[:, 0] <= 0):
            raise ValueError(f"water depth h must be > 0 everywhere (q0[:, 0] min is {q[:, 0].min():.3g})")
        t = np.asarray(t, dtype=np.float64)
        if t.ndim != 1 or len(t) < 1 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
            raise ValueError(f"output times t must be a finite, strictly increasing 1-D array, got {t}")
        out = np.empty((q.shape[0], len(t), *q.shape[1:]), dtype=np.float64)
        out[:, 0] = q
        now = np.full(q.shape[0], float(t[0]))
        steps = 0
        for i in range(1, len(t)):
            target = float(t[i])
            while True:
                remaining = target - now
                active = remaining > 1e-12 * max(1.0, abs(target))
                if not np.any(active):
                    break
                dt = np.where(active, np.minimum(self.max_dt(q), remaining), 0.0)
                q = self.step(q, dt)
                now = np.where(active, now + dt, now)
                steps += 1
                if steps > max_steps:
                    raise RuntimeError(f"shallow water: exceeded {max_steps} steps")
                if not np.all(np.isfinite(q)) or np.any(q[:, 0] <= 0):
                    raise ValueError(f"shallow water: non-finite state or dry cell before t={target:.3g}")
            now[:] = target
            out[:, i] = q
        return out


def dam_break(x: np.ndarray, y: np.ndarray, radius: np.ndarray, h_in: np.ndarray, h_out: np.ndarray) -> np.ndarray:
    """Radial dam-break states ``[N, 3, X, Y]`` (at rest) for per-sample ``radius``, ``h_in``, ``h_out``."""
    r = np.sqrt(x[:, None] ** 2 + y[None, :] ** 2)
    inside = r[None] < radius[:, None, None]
    h = np.where(inside, h_in[:, None, None], h_out[:, None, None])
    return np.stack([h, np.zeros_like(h), np.zeros_like(h)], axis=1)


def _check_range(name: str, rng: Any, positive: bool) -> None:
    """``(low, high)`` finite with ``low <= high`` and ``low > 0`` (depths) or ``low >= 0`` (radii)."""
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError):
        raise ValueError(f"shallow-water setting {name} must be a (low, high) pair, got {rng!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"shallow-water setting {name} must be finite with low <= high, got {rng!r}")
    if positive and not lo > 0:
        raise ValueError(f"shallow-water setting {name}: water depths must be > 0, got {rng!r}")
    if not positive and lo < 0:
        raise ValueError(f"shallow-water setting {name} must be >= 0, got {rng!r}")


def simulate(
    n: int,
    seed: int,
    nx: int = 32,
    ny: int = 32,
    nt: int = 16,
    t_final: float = 1.0,
    g: float = 1.0,
    cfl: float = 0.4,
    order: int = 2,
    radius_range: tuple[float, float] = (0.3, 0.7),
    h_in_range: tuple[float, float] = (1.6, 2.4),
    h_out_range: tuple[float, float] = (0.8, 1.2),
    length: float = 5.0,
) -> dict[str, Any]:
    """Simulate ``n`` radial dam breaks.

    Returns:
        dict with ``u`` ``[n, nt, 3, nx, ny]`` (channels ``h, hu, hv``; float64), ``coords``
        ``{"x", "y", "t"}``, ``parameters`` (``g``, ranges, per-sample ``radius``, ``h_in``, ``h_out``).
    """
    if n < 1 or nt < 2 or not (np.isfinite(t_final) and t_final > 0):
        raise ValueError(f"need n >= 1, nt >= 2, t_final > 0; got n={n}, nt={nt}, t_final={t_final}")
    _check_range("radius_range", radius_range, positive=False)
    _check_range("h_in_range", h_in_range, positive=True)
    _check_range("h_out_range", h_out_range, positive=True)
    solver = ShallowWater2D(nx, ny, length, g, cfl, order)  # validates the solver settings first
    rng = np.random.default_rng(seed)
    radius = rng.uniform(*radius_range, size=n)
    h_in = rng.uniform(*h_in_range, size=n)
    h_out = rng.uniform(*h_out_range, size=n)
    t = np.linspace(0.0, float(t_final), nt)
    q = solver.solve(dam_break(solver.x, solver.y, radius, h_in, h_out), t)
    return {
        "u": q,
        "coords": {"x": solver.x, "y": solver.y, "t": t},
        "parameters": {
            "g": float(g),
            "cfl": float(cfl),
            "order": int(order),
            "radius": radius,
            "h_in": h_in,
            "h_out": h_out,
            "seed": int(seed),
        },
    }
