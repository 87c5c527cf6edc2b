"""Steady 2-D Darcy flow ``-div(a grad u) = f`` on ``(0, 1)^2`` with ``u = 0`` on the boundary.

Grid: ``n x n`` cells of width ``h = 1/n``, cell centres ``x_i = (i + 1/2) h`` (axis order ``[X, Y]``).

Discretisation (cell-centred finite volume, 5-point stencil, second order): the flux through the face
between cells ``P`` and ``Q`` is ``T_PQ (u_P - u_Q) / h`` with the harmonic-mean coefficient
``T_PQ = 2 a_P a_Q / (a_P + a_Q)``; at a wall the ghost value ``-u_P`` (so ``u = 0`` on the wall, half a
cell away) gives the flux ``2 a_P u_P / h``. Multiplying by ``h^2`` the linear system per sample is
``A u = h^2 f`` with ``A`` symmetric positive definite. The same operator is
:func:`physdiff.physics.pde_residuals.darcy_flux_divergence`, so the residual of solver output is at
round-off level.

Batching: the ``N`` per-sample matrices are assembled with vectorised numpy index arithmetic into one
block-diagonal ``scipy.sparse`` matrix and solved by one sparse direct solve (SuperLU); the blocks are
decoupled, so the factorisation's fill stays inside each block and the cost is that of ``N``
independent factorisations without a Python loop over samples. Batches larger than
``chunk_unknowns`` unknowns are split into chunks to bound memory.

Coefficient field (PDEBench-like values): ``a = 1`` where a Gaussian random field is ``>= 0`` and
``a = 0.1`` elsewhere. The field has spectral density ``(4 pi^2 |k|^2 + tau^2)^(-alpha)``
(``alpha = 2``, ``tau = 3``, as in FNO's Darcy data), sampled by FFT on a periodic ``[0, 2)^2`` box of
``2n x 2n`` points and cropped to the unit square (so it is not periodic on the unit square).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = [
    "DEFAULTS",
    "gaussian_random_field",
    "sample_permeability",
    "assemble_darcy_matrix",
    "solve_darcy",
    "simulate",
    "grid_2d",
]

DEFAULTS: dict[str, Any] = {"n_grid": 32, "f": 1.0, "a_high": 1.0, "a_low": 0.1, "alpha": 2.0, "tau": 3.0}


def grid_2d(n_grid: int) -> np.ndarray:
    """Cell centres ``(i + 1/2)/n`` on ``(0, 1)``."""
    return (np.arange(n_grid, dtype=np.float64) + 0.5) / n_grid


def gaussian_random_field(
    rng: np.random.Generator, n: int, n_grid: int, alpha: float = 2.0, tau: float = 3.0
) -> np.ndarray:
    """``n`` zero-mean GRF samples ``[n, n_grid, n_grid]`` with spectrum ``(4 pi^2 |k|^2 + tau^2)^-alpha``.

    Sampled on the periodic box ``[0, 2)^2`` with ``2 n_grid`` points per side and cropped to
    ``[0, 1)^2``; the constant mode is removed.
    """
    m = 2 * n_grid
    k = np.fft.fftfreq(m, d=2.0 / m)  # physical wavenumbers on a box of length 2
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    amp = (4.0 * np.pi**2 * k2 + tau**2) ** (-alpha / 2.0)
    amp[0, 0] = 0.0
    noise = rng.standard_normal((n, m, m)) + 1j * rng.standard_normal((n, m, m))
    field = np.fft.ifft2(noise * amp, axes=(-2, -1)).real * m * m
    return field[:, :n_grid, :n_grid]


def sample_permeability(
    rng: np.random.Generator,
    n: int,
    n_grid: int,
    a_high: float = 1.0,
    a_low: float = 0.1,
    alpha: float = 2.0,
    tau: float = 3.0,
) -> np.ndarray:
    """Piecewise-constant permeability ``[n, n_grid, n_grid]``.

    ``a_high`` where the GRF is ``>= 0``, else ``a_low``."""
    for name, val in (("a_high", a_high), ("a_low", a_low)):
        if not (np.isfinite(val) and val > 0):
            raise ValueError(f"Darcy permeability setting {name} must be finite and > 0, got {name}={val}")
    for name, val in (("alpha", alpha), ("tau", tau)):
        if not np.isfinite(val):
            raise ValueError(f"Darcy random-field setting {name} must be finite, got {name}={val}")
    g = gaussian_random_field(rng, n, n_grid, alpha, tau)
    return np.where(g >= 0.0, a_high, a_low).astype(np.float64)


def _check_a(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"permeability must have shape [N, n, n], got {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"permeability a (shape {a.shape}) contains {bad} NaN or inf values")
    if np.any(a <= 0):
        pos = tuple(int(i) for i in np.unravel_index(int(np.argmin(a)), a.shape))
        raise ValueError(f"permeability a must be > 0 everywhere (min {a.min():.3g} at [sample, i, j] = {list(pos)})")
    return a


def assemble_darcy_matrix(a: np.ndarray) -> sp.csr_matrix:
    """Block-diagonal matrix ``A`` (``h^2 x`` the operator ``-div(a grad .)``) for ``a [N, n, n]``.

    Unknown ``(s, i, j)`` has index ``s n^2 + i n + j``. Returns a CSR matrix of size ``N n^2``.
    """
    a = _check_a(a)
    N, n, _ = a.shape
    idx = np.arange(N * n * n).reshape(N, n, n)
    tx = 2.0 * a[:, 1:, :] * a[:, :-1, :] / (a[:, 1:, :] + a[:, :-1, :])  # faces between i and i+1
    ty = 2.0 * a[:, :, 1:] * a[:, :, :-1] / (a[:, :, 1:] + a[:, :, :-1])
    diag = np.zeros_like(a)
    diag[:, 1:, :] += tx
    diag[:, :-1, :] += tx
    diag[:, :, 1:] += ty
    diag[:, :, :-1] += ty
    diag[:, 0, :] += 2.0 * a[:, 0, :]
    diag[:, -1, :] += 2.0 * a[:, -1, :]
    diag[:, :, 0] += 2.0 * a[:, :, 0]
    diag[:, :, -1] += 2.0 * a[:, :, -1]
    p_x, q_x = idx[:, :-1, :].ravel(), idx[:, 1:, :].ravel()
    p_y, q_y = idx[:, :, :-1].ravel(), idx[:, :, 1:].ravel()
    rows = np.concatenate([idx.ravel(), p_x, q_x, p_y, q_y])
    cols = np.concatenate([idx.ravel(), q_x, p_x, q_y, p_y])
    vals = np.concatenate([diag.ravel(), -tx.ravel(), -tx.ravel(), -ty.ravel(), -ty.ravel()])
    size = N * n * n
    return sp.csr_matrix((vals, (rows, cols)), shape=(size, size))


def solve_darcy(a: np.ndarray, f: float | np.ndarray = 1.0, chunk_unknowns: int = 1 << 18) -> np.ndarray:
    """Solve ``-div(a grad u) = f``, ``u = 0`` on the boundary, for ``a [N, n, n]``.

    Args:
        a: positive permeability ``[N, n, n]``.
        f: source, scalar or broadcastable to ``[N, n, n]``.
        chunk_unknowns: at most this many unknowns per block-diagonal direct solve.

    Returns:
        ``u`` ``[N, n, n]`` float64.
    """
    a = _check_a(a)
    N, n, _ = a.shape
    h = 1.0 / n
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), a.shape) * h * h
    if not np.all(np.isfinite(rhs)):
        raise ValueError("source f contains NaN or inf")
    per = max(1, chunk_unknowns // (n * n))
    u = np.empty_like(a)
    for s in range(0, N, per):
        A = assemble_darcy_matrix(a[s : s + per]).tocsc()
        u[s : s + per] = spla.spsolve(A, rhs[s : s + per].ravel()).reshape(-1, n, n)
    return u


def simulate(
    n: int,
    seed: int,
    n_grid: int = 32,
    f: float = 1.0,
    a_high: float = 1.0,
    a_low: float = 0.1,
    alpha: float = 2.0,
    tau: float = 3.0,
) -> dict[str, Any]:
    """Sample ``n`` permeability fields and solve for the pressure.

    Returns:
        dict with ``u`` ``[n, n_grid, n_grid]``, ``a`` ``[n, n_grid, n_grid]`` (float64),
        ``coords`` ``{"x", "y"}`` and ``parameters`` ``{"f", ...}``.
    """
    if n < 1 or n_grid < 3:
        raise ValueError(f"need n >= 1 and n_grid >= 3, got n={n}, n_grid={n_grid}")
    if not np.all(np.isfinite(np.asarray(f, dtype=np.float64))):
        raise ValueError(f"Darcy source setting f must be finite, got f={f}")
    rng = np.random.default_rng(seed)
    a = sample_permeability(rng, n, n_grid, a_high, a_low, alpha, tau)
    u = solve_darcy(a, f)
    x = grid_2d(n_grid)
    return {
        "u": u,
        "a": a,
        "coords": {"x": x, "y": x.copy()},
        "parameters": {
            "f": float(f),
            "a_high": float(a_high),
            "a_low": float(a_low),
            "alpha": float(alpha),
            "tau": float(tau),
            "seed": int(seed),
        },
    }
