r"""Sampling-time constraints: the prior objects applied to the Tweedie estimate while sampling.

This goes **beyond the paper** (method.md §3, last item), whose priors act on training only; results
obtained with it are reported in their own rows, never as the paper's with-prior arm.

At every sampler step whose time is ≤ ``t_start`` the estimate x̂0 is replaced by a corrected one (the
sampler then recomputes ε̂ from x_t and the new x̂0, so the correction carries into x_{t−Δt}):

* ``projection``: the masked Gauss–Newton projection onto {x : R(x) = 0},

      x ← x − M Jᵀ (J M Jᵀ)⁻¹ R(x),   J = ∂R/∂x,  M = diag(free entries),

  repeated ``iterations`` times. For an affine R (momentum, Newton's law for springs, a linear PDE
  residual) one iteration is the exact orthogonal projection x − Wᵀ(WWᵀ)⁻¹(Wx + b) restricted to the
  unknown entries; for a nonlinear R (energy E_l − E_0) it is Newton's method for the nearest feasible
  point. (J M Jᵀ) y = R is solved per sample: directly (J formed by vectorised vector-Jacobian products)
  when R has few entries per sample, as for conservation laws, and by conjugate gradients with
  Jacobian-vector products, without forming J, when it is large (PDE residuals).
* ``guidance``: ``iterations`` gradient steps x ← x − s M ∇_x ½‖R(x)‖² with step size ``scale``.

Known entries (the conditioning mask) are never moved. The residual of several priors is their
concatenation, so a projection meets all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from physdiff.priors.base import Constraint, Prior

__all__ = ["CONSTRAINT_MODES", "batched_cg", "constraint_hook", "gradient_guidance", "gauss_newton_projection"]

CONSTRAINT_MODES: tuple[str, ...] = ("projection", "guidance")
Residual = Callable[[Tensor], Tensor]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product, shaped to broadcast against ``a``."""
    return (a * b).flatten(1).sum(1).reshape((-1,) + (1,) * (a.dim() - 1))


def batched_cg(A: Callable[[Tensor], Tensor], b: Tensor, max_iter: int = 50, rtol: float = 1e-10) -> Tensor:
    """Solve A y = b for a symmetric positive (semi-)definite, per-sample block-diagonal A by conjugate
    gradients, independently for every sample of the batch (Hestenes & Stiefel 1952).

    Stops when every sample's residual norm is below max(rtol, 10·eps of the dtype) times its ‖b‖."""
    y = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = _dot(r, r)
    stop = max(rtol, 10 * torch.finfo(b.dtype).eps) ** 2 * rs
    for _ in range(max_iter):
        if bool((rs <= stop).all()):
            break
        Ap = A(p)
        pAp = _dot(p, Ap)
        alpha = torch.where(pAp > 0, rs / pAp.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(pAp))
        y = y + alpha * p
        r = r - alpha * Ap
        rs_new = _dot(r, r)
        p = r + torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs)) * p
        rs = rs_new
    return y


def _solve_psd(gram: Tensor, rhs: Tensor) -> Tensor:
    """Solve gram · y = rhs per sample: Cholesky where gram is positive definite, the pseudo-inverse
    (least-norm solution) for the samples whose constraints are redundant."""
    chol, info = torch.linalg.cholesky_ex(gram)
    y = torch.cholesky_solve(rhs, chol)
    bad = (info != 0) | ~torch.isfinite(y).flatten(1).all(1)
    if bool(bad.any()):
        y[bad] = torch.linalg.pinv(gram[bad], hermitian=True) @ rhs[bad]
    return y


def gauss_newton_projection(
    residual: Residual,
    x: Tensor,
    free: Tensor,
    iterations: int = 1,
    cg_iters: int = 50,
    dense_max: int = 512,
    tol: float = 0.0,
) -> Tensor:
    """Up to ``iterations`` steps of x ← x − M Jᵀ (J M Jᵀ)⁻¹ R(x) (exact for affine R in one step),
    stopping early once max |R(x)| ≤ ``tol`` for every sample.

    With at most ``dense_max`` residual entries per sample, J is formed row by row (one vectorised
    vector-Jacobian product) and J M Jᵀ y = R is solved in float64 (Cholesky; the pseudo-inverse where
    constraints are redundant); larger residuals (PDE fields) are solved matrix-free by conjugate gradients.
    """
    for _ in range(iterations):
        x, converged = _gauss_newton_step(residual, x, free, cg_iters, dense_max, tol)
        if converged:
            break
    return x


def _gauss_newton_step(
    residual: Residual, x: Tensor, free: Tensor, cg_iters: int, dense_max: int, tol: float
) -> tuple[Tensor, bool]:
    """One step from x, or x itself and ``True`` when max |R(x)| ≤ tol already (R is evaluated once)."""
    with torch.enable_grad():
        r, vjp_fn = torch.func.vjp(residual, x)
        r = r.detach()
        if tol > 0 and float(r.abs().max()) <= tol:
            return x, True
        n = r.shape[1]
        if n <= dense_max:  # J [n, B, ...]: row i is vjp(e_i)
            basis = torch.eye(n, dtype=r.dtype, device=r.device)[:, None, :].expand(n, r.shape[0], n)
            (jac,) = torch.func.vmap(vjp_fn)(basis)
            jac = jac.detach().flatten(2).transpose(0, 1).double()  # [B, n, N]
            mj = jac * free.flatten(1)[:, None, :].double()
            gram = mj @ jac.transpose(1, 2)  # J M Jᵀ, [B, n, n]
            y = _solve_psd(gram, r.double()[..., None])
            step = (mj.transpose(1, 2) @ y)[..., 0].reshape(x.shape).to(x.dtype)
            return (x - step).detach(), False

        def jt(y: Tensor) -> Tensor:  # M Jᵀ y
            return vjp_fn(y)[0] * free

        def jmjt(y: Tensor) -> Tensor:  # J M Jᵀ y
            return torch.func.jvp(residual, (x,), (jt(y),))[1]

        y = batched_cg(jmjt, r, cg_iters)
        return (x - jt(y)).detach(), False


def gradient_guidance(residual: Residual, x: Tensor, free: Tensor, scale: float, iterations: int = 1) -> Tensor:
    """``iterations`` steps of x ← x − scale · M ∇_x ½‖R(x)‖²."""
    for _ in range(iterations):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            loss = 0.5 * residual(xg).square().sum()
            (g,) = torch.autograd.grad(loss, xg)
        x = (x - scale * g * free).detach()
    return x


def constraint_hook(
    priors: Sequence[Prior],
    *,
    mode: str = "projection",
    mask: Tensor | None = None,
    context: Mapping[str, Any] | None = None,
    t_start: float = 1.0,
    iterations: int = 1,
    scale: float = 0.1,
    tol: float = 1e-6,
    cg_iters: int = 50,
) -> Callable[[Tensor, Tensor], Tensor]:
    """An ``x0_hook(x̂0, t)`` for :func:`physdiff.diffusion.samplers.sample` that enforces ``priors``.

    Args:
        priors: priors with a :meth:`~physdiff.priors.base.Prior.residual` (linear, multilinear, or a
            nonlinear one that defines its conservation residual, like the energy priors).
        mode: ``"projection"`` (Gauss–Newton, exact for affine residuals) or ``"guidance"`` (gradient steps).
        mask: the conditioning mask (1 = known entry, never moved); ``None`` moves every entry.
        context: keyword context of the priors (``masses``, ``edges``, ...).
        t_start: act only at diffusion times t ≤ t_start (1 = every step; small values = the last steps,
            where x̂0 is sharp enough for a nonlinear residual to be meaningful).
        iterations: guidance steps per sampler step; for a projection, the most Gauss–Newton steps.
        tol: a projection stops once max |R| ≤ tol (the residual's units) in every sample.
        cg_iters: conjugate-gradient iterations per projection step for large residuals (PDE fields).
        scale: the guidance step size.

    Raises:
        ValueError: an unknown mode, no priors, a bad setting, or a prior without a residual.
    """
    if mode not in CONSTRAINT_MODES:
        raise ValueError(f"unknown sampling-time constraint mode {mode!r}; choose one of {CONSTRAINT_MODES}")
    if not priors:
        raise ValueError("a sampling-time constraint needs at least one prior")
    if not iterations >= 1:
        raise ValueError(f"sampling-time constraint: iterations must be >= 1, got {iterations}")
    if not cg_iters >= 1:
        raise ValueError(f"sampling-time constraint: cg_iters must be >= 1, got {cg_iters}")
    if mode == "guidance" and not scale > 0:
        raise ValueError(f"sampling-time guidance: scale must be > 0, got {scale}")
    for p in priors:
        if not isinstance(p, Constraint):
            raise ValueError(
                f"prior {p.name!r} ({type(p).__name__}) states no law R(x) = 0; sampling-time constraints act on "
                "residuals (a ResidualPrior, or a prior that is also a Constraint, like the energy priors)"
            )
    ctx = dict(context or {})

    def residual(x: Tensor) -> Tensor:
        return torch.cat([p.residual(x, **ctx).flatten(1) for p in priors], dim=1)

    def hook(x0: Tensor, t: Tensor) -> Tensor:
        if float(t.reshape(-1)[0]) > t_start:
            return x0
        free = torch.ones_like(x0) if mask is None else 1.0 - mask.to(x0)
        if mode == "projection":
            return gauss_newton_projection(residual, x0, free, iterations, cg_iters=cg_iters, tol=tol)
        return gradient_guidance(residual, x0, free, scale, iterations)

    return hook
