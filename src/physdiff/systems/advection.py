"""1-D linear advection ``u_t + beta u_x = 0`` on ``[0, 1)`` with periodic boundaries.

Grid: cell centres ``x_j = (j + 1/2) / nx``, frames ``t_n = n * t_final / (nt - 1)``, ``n = 0..nt-1``.
Initial conditions (PDEBench-style): a sum of ``n_modes`` random sinusoids
``u0(x) = sum_i A_i sin(2 pi k_i x + phi_i)`` with integer wavenumbers ``k_i`` uniform in
``1..k_max``, amplitudes ``A_i ~ U(0, 1)`` and phases ``phi_i ~ U(0, 2 pi)``. The solution is exact:
``u(x, t) = u0(x - beta t)`` (periodic shift), so there is no time-step or stability condition; the
only error in the data is float64 round-off. (PDEBench's own data are not exactly periodic; ours are.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DEFAULTS", "random_sinusoids", "advection_exact", "simulate", "grid_1d"]

#: quick-preset settings
DEFAULTS: dict[str, Any] = {"nx": 64, "nt": 40, "t_final": 1.0, "beta": 1.0, "k_max": 4, "n_modes": 2}


def grid_1d(nx: int, nt: int, t_final: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centred ``x`` on ``[0, 1)`` (``nx`` points) and ``nt`` frame times from 0 to ``t_final``."""
    if nx < 4 or nt < 3:
        raise ValueError(f"need nx >= 4 and nt >= 3, got nx={nx}, nt={nt}")
    if not (np.isfinite(t_final) and t_final > 0):
        raise ValueError(f"t_final must be finite and > 0, got {t_final}")
    x = (np.arange(nx, dtype=np.float64) + 0.5) / nx
    t = np.linspace(0.0, float(t_final), nt, dtype=np.float64)
    return x, t


def random_sinusoids(
    rng: np.random.Generator, n: int, n_modes: int = 2, k_max: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw PDEBench-style sinusoid parameters: wavenumbers ``[n, n_modes]`` (ints in ``1..k_max``),
    amplitudes ``U(0, 1)`` and phases ``U(0, 2 pi)``."""
    if k_max < 1 or n_modes < 1:
        raise ValueError(f"need k_max >= 1 and n_modes >= 1, got {k_max}, {n_modes}")
    k = rng.integers(1, k_max + 1, size=(n, n_modes))
    amp = rng.uniform(0.0, 1.0, size=(n, n_modes))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(n, n_modes))
    return k, amp, phase


def eval_sinusoids(k: np.ndarray, amp: np.ndarray, phase: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_i A_i sin(2 pi k_i x + phi_i)`` for parameters ``[n, m]`` at points ``x`` (any shape,
    shared by all samples); returns ``[n, *x.shape]``."""
    sh = (k.shape[0],) + (1,) * x.ndim + (k.shape[1],)
    arg = 2.0 * np.pi * k.reshape(sh) * x[None, ..., None] + phase.reshape(sh)
    return np.sum(amp.reshape(sh) * np.sin(arg), axis=-1)


def advection_exact(
    k: np.ndarray, amp: np.ndarray, phase: np.ndarray, x: np.ndarray, t: np.ndarray, beta: float
) -> np.ndarray:
    """Exact solution ``u0(x - beta t)`` as ``[n, T, X]`` (float64)."""
    xs = (x[None, :] - beta * t[:, None]) % 1.0  # [T, X]
    return eval_sinusoids(k, amp, phase, xs)


def simulate(
    n: int,
    seed: int,
    nx: int = 64,
    nt: int = 40,
    t_final: float = 1.0,
    beta: float = 1.0,
    k_max: int = 4,
    n_modes: int = 2,
) -> dict[str, Any]:
    """Simulate ``n`` advection trajectories.

    Returns:
        dict with ``u`` ``[n, nt, nx]`` float64, ``coords`` ``{"x", "t"}``, ``parameters``
        ``{"beta", ...}``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not np.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    x, t = grid_1d(nx, nt, t_final)
    rng = np.random.default_rng(seed)
    k, amp, phase = random_sinusoids(rng, n, n_modes, k_max)
    u = advection_exact(k, amp, phase, x, t, beta)
    return {
        "u": u,
        "coords": {"x": x, "t": t},
        "parameters": {"beta": float(beta), "k_max": int(k_max), "n_modes": int(n_modes), "seed": int(seed)},
    }
