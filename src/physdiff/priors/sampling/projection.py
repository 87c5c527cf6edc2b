r"""``projection``: the exact projection of the Tweedie estimate onto the law (our method; the sampling-time
constraint of :mod:`physdiff.priors.sampling`, reported apart from the paper's arms).

At every sampler step whose time is ≤ ``t_start`` the estimate x̂0 is replaced by the masked Gauss–Newton
projection onto {x : R(x) = 0},

      x ← x − M Jᵀ (J M Jᵀ)⁻¹ R(x),   J = ∂R/∂x,  M = diag(free entries),

  repeated up to ``iterations`` times. For an affine R (momentum, Newton's law for springs, a linear PDE
  residual) one step is the exact orthogonal projection x − M Wᵀ(W M Wᵀ)⁻¹(Wx + b) onto the affine set
  within the unknown entries; for a nonlinear R (energy E_l − E_0, a multilinear PDE residual) it is
  Newton's method for the nearest feasible point. J M Jᵀ y = R is solved along one of three paths,
  chosen per state by :func:`choose_projection_method` (``method="auto"``):

  - ``dense`` (R has ≤ ``dense_max`` = 512 entries per sample: conservation laws): J formed by
    vectorised vector-Jacobian products, J M Jᵀ factorised in float64 (Cholesky; the pseudo-inverse where
    constraints are redundant; kept across sampler steps for an affine R). Exact.
  - ``sparse`` (R affine, ≤ ``sparse_max`` = 32,768 state entries per sample: linear PDE residuals):
    J is assembled once per hook (i.e. per constraint, batch and coefficient field) as a block-diagonal
    scipy sparse matrix by Jacobian-vector products on a colouring of the stencil (two probes per colour;
    the stencil's reach is measured from a few rows' vector-Jacobian products and the assembled J is
    checked against a random probe, which also checks that R is affine), then factorised once by SuperLU:
    J_F itself where the system is square (as many equations as free entries: Darcy), J M Jᵀ otherwise.
    Every later sampler step is one sparse solve (+ one step of iterative refinement). Exact.
  - ``matrix-free`` (larger or nonlinear residuals): conjugate gradients on J M Jᵀ with
    Jacobian-vector / vector-Jacobian products (both by reverse mode: J v as the VJP of w ↦ Jᵀw), batched
    over the samples, preconditioned by the diagonal of J M Jᵀ (probed by Jacobian-vector products on the
    same colouring), to a relative tolerance ``rtol`` or ``cg_iters`` iterations. Memory O(B·N), no matrix
    is formed.

  A linear system that the exact paths cannot meet — contradictory constraints — is refused at the
  first projection (its residual is not reduced); a singular sparse system likewise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from physdiff.priors.sampling.base import Law, SamplingMethod

__all__ = [
    "PROJECTION_METHODS",
    "ProjectionMethod",
    "Projector",
    "SingularSystemError",
    "batched_cg",
    "choose_projection_method",
    "gauss_newton_projection",
]

PROJECTION_METHODS: tuple[str, ...] = ("auto", "dense", "sparse", "matrix-free")
Residual = Callable[[Tensor], Tensor]

#: most colours of a stencil colouring for the sparse assembly / the Jacobi preconditioner
MAX_COLOURS = 1024
MAX_PRECOND_COLOURS = 256
#: elements of one chunk of vectorised vector-Jacobian products forming a dense J
PROBE_CHUNK = 1 << 22
#: most rows of one sparse factorisation (whole samples per chunk)
FACTOR_CHUNK = 1 << 18


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product, shaped to broadcast against ``a``."""
    return (a * b).flatten(1).sum(1).reshape((-1,) + (1,) * (a.dim() - 1))


def _pcg(
    A: Callable[[Tensor], Tensor],
    b: Tensor,
    max_iter: int,
    rtol: float,
    precond: Tensor | None = None,
) -> tuple[Tensor, int, float]:
    """Preconditioned CG per sample; returns (y, iterations, worst relative residual ‖b − Ay‖/‖b‖)."""
    tiny = torch.finfo(b.dtype).tiny
    y = torch.zeros_like(b)
    r = b.clone()
    z = r if precond is None else r * precond
    p = z.clone()
    rz = _dot(r, z)
    bb = _dot(b, b)
    rr = bb.clone()
    stop = max(rtol, 10 * torch.finfo(b.dtype).eps) ** 2 * bb
    it = 0
    for it in range(1, max_iter + 1):
        if bool((rr <= stop).all()):
            it -= 1
            break
        Ap = A(p)
        pAp = _dot(p, Ap)
        alpha = torch.where(pAp > 0, rz / pAp.clamp_min(tiny), torch.zeros_like(pAp))
        y = y + alpha * p
        r = r - alpha * Ap
        z = r if precond is None else r * precond
        rz_new = _dot(r, z)
        p = z + torch.where(rz > 0, rz_new / rz.clamp_min(tiny), torch.zeros_like(rz)) * p
        rz = rz_new
        rr = _dot(r, r)
    rel = float((rr / bb.clamp_min(tiny)).sqrt().max()) if bool((bb > 0).any()) else 0.0
    return y, it, rel


def batched_cg(
    A: Callable[[Tensor], Tensor],
    b: Tensor,
    max_iter: int = 50,
    rtol: float = 1e-10,
    precond: Tensor | None = None,
) -> Tensor:
    """Solve A y = b for a symmetric positive (semi-)definite, per-sample block-diagonal A by conjugate
    gradients, independently for every sample of the batch (Hestenes & Stiefel 1952).

    ``precond``: the inverse of a diagonal preconditioner (same shape as ``b``), or ``None``. Stops when every
    sample's residual norm is below max(rtol, 10·eps of the dtype) times its ‖b‖."""
    return _pcg(A, b, max_iter, rtol, precond)[0]


def _psd_factor(gram: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-sample factor of gram: Cholesky where positive definite, the pseudo-inverse (least-norm
    solution) for the samples whose constraints are redundant. Returns (cholesky, bad samples, pinv of those)."""
    chol, info = torch.linalg.cholesky_ex(gram)
    bad = (info != 0) | ~torch.isfinite(chol).flatten(1).all(1)
    pinv = torch.linalg.pinv(gram[bad], hermitian=True) if bool(bad.any()) else None
    return chol, bad, pinv


def _psd_solve(factor: tuple[Tensor, Tensor, Tensor | None], rhs: Tensor) -> Tensor:
    chol, bad, pinv = factor
    y = torch.cholesky_solve(rhs, chol)
    if pinv is not None:
        y[bad] = pinv @ rhs[bad]
    return y


def _solve_psd(gram: Tensor, rhs: Tensor) -> Tensor:
    """Solve gram · y = rhs per sample (Cholesky; the pseudo-inverse for singular samples)."""
    return _psd_solve(_psd_factor(gram), rhs)


def choose_projection_method(
    n_residual: int, n_state: int, *, linear: bool, dense_max: int = 512, sparse_max: int = 1 << 15
) -> str:
    """The path of ``method="auto"``: ``dense`` when R has ≤ ``dense_max`` entries per sample, else ``sparse``
    for an affine R on ≤ ``sparse_max`` state entries per sample, else ``matrix-free``."""
    if n_residual <= dense_max:
        return "dense"
    if linear and n_state <= sparse_max:
        return "sparse"
    return "matrix-free"


# --------------------------------------------------------------------------------------- stencil probing
class _LinOps:
    """R at x with w ↦ Jᵀw and v ↦ J v by reverse-mode autograd only: J v is the vector-Jacobian product of the
    linear map w ↦ Jᵀw (double backward). One graph, built once per state and replayed per product — ~10×
    cheaper per product than ``torch.func.jvp`` and without ``torch.func.linearize``'s seconds of tracing.
    Falls back to ``torch.func`` where R does not support double backward."""

    def __init__(self, residual: Residual, x: Tensor) -> None:
        self.x = x.detach().requires_grad_(True)
        self.g: Tensor | None = None
        with torch.enable_grad():
            self.r = residual(self.x)
            try:
                if not self.r.requires_grad:
                    raise RuntimeError("R does not depend on x")
                self.w = torch.zeros_like(self.r, requires_grad=True)
                (g,) = torch.autograd.grad(self.r, self.x, self.w, create_graph=True)
                if g.requires_grad:
                    self.g = g
            except RuntimeError:
                pass
        if self.g is None:
            self._residual = residual

    def jt(self, y: Tensor) -> Tensor:
        if not self.r.requires_grad:  # R does not depend on x
            return torch.zeros_like(self.x)
        (g,) = torch.autograd.grad(self.r, self.x, y, retain_graph=True, allow_unused=True)
        return torch.zeros_like(self.x) if g is None else g.detach()

    def jv(self, v: Tensor) -> Tensor:
        if self.g is None:
            return torch.func.jvp(self._residual, (self.x.detach(),), (v,))[1].detach()
        (out,) = torch.autograd.grad(self.g, self.w, v, retain_graph=True)
        return out.detach()


def _circular_extent(coords: np.ndarray, n: int) -> int:
    """Smallest arc (in index steps) of a cyclic axis of length n covering ``coords``."""
    u = np.unique(coords)
    if u.size <= 1:
        return 0
    gaps = np.diff(u)
    largest = max(int(gaps.max()), int(u[0] + n - u[-1]))
    return n - largest


def _stencil_extents(ops: _LinOps, rows: int = 24) -> list[int] | None:
    """Per state axis (after the batch), the widest reach of one residual row: the circular extent of the
    entries a few rows of sample 0 depend on (vector-Jacobian products of unit rows). ``None`` if R is empty."""
    r, x = ops.r, ops.x
    n = r.shape[1]
    if n == 0:
        return None
    gen = torch.Generator().manual_seed(0)
    picks = torch.cat([torch.linspace(0, n - 1, min(rows, n)).round().long(), torch.randint(n, (8,), generator=gen)])
    shape = tuple(x.shape[1:])
    ext = [0] * len(shape)
    for i in picks.unique().tolist():
        e = torch.zeros_like(r)
        e[0, i] = 1.0
        nz = ops.jt(e)[0].nonzero().cpu().numpy()
        if nz.size == 0:
            continue
        for d, size in enumerate(shape):
            ext[d] = max(ext[d], _circular_extent(nz[:, d], size))
    return ext


def _colouring(shape: Sequence[int], extents: Sequence[int]) -> tuple[Tensor, int]:
    """Colour of every state entry (``shape`` without the batch) such that two entries of one colour are
    more than ``extents[d]`` apart (cyclically) along some axis d: no row of a stencil that reaches at most
    ``extents`` depends on both (two entries of one colour are structurally orthogonal columns of J)."""
    per_axis, counts = [], []
    for size, e in zip(shape, extents, strict=True):
        p = e + 1
        i = torch.arange(size)
        if p >= size:
            c, k = i, size
        else:
            full = (size // p) * p  # indices past the last full period get colours of their own (wrap-safe)
            c, k = torch.where(i < full, i % p, p + (i - full)), p + size - full
        per_axis.append(c)
        counts.append(k)
    colour = torch.zeros((), dtype=torch.long)
    for c, k in zip(per_axis, counts, strict=True):
        colour = colour[..., None] * k + c
    return colour.reshape(tuple(shape)), math.prod(counts)


def _probe_diagonal(jv: Callable[[Tensor], Tensor], weight: Tensor, colour: Tensor, count: int) -> Tensor:
    """diag(J W Jᵀ) = Σ_c (J (√w ⊙ 1_c))² per residual entry, exact when the colouring is valid (each row
    meets at most one entry of each colour)."""
    sw = weight.sqrt()
    colour = colour.to(weight.device)
    diag = None
    for c in range(count):
        part = jv((colour == c).to(weight.dtype) * sw).square()
        diag = part if diag is None else diag + part
    assert diag is not None
    return diag.detach()


def _dense_jacobian(vjp_fn: Callable[[Tensor], tuple[Tensor]], r: Tensor, x: Tensor) -> Tensor:
    """J ``[B, n, N]`` (float64), row i = the vector-Jacobian product of e_i, by vectorised VJPs in chunks
    of rows written into one preallocated tensor (a J that does not fit fails at once)."""
    B, n = r.shape
    jac = torch.empty((B, n, x[0].numel()), dtype=torch.float64, device=x.device)
    step = max(1, PROBE_CHUNK // max(1, x.numel()))
    for i in range(0, n, step):
        k = min(n, i + step) - i
        basis = torch.zeros((k, B, n), dtype=r.dtype, device=r.device)
        basis[torch.arange(k), :, i + torch.arange(k)] = 1.0
        (g,) = torch.func.vmap(vjp_fn)(basis)
        jac[:, i : i + k] = g.detach().flatten(2).transpose(0, 1)
    return jac


# ----------------------------------------------------------------------------------------- sparse path
class SingularSystemError(ValueError):
    """The sparse factorisation met an exactly singular system."""


@dataclass
class _SparseSystem:
    """J restricted to the free entries (block-diagonal over the batch), factorised once."""

    J: sp.csr_matrix  # [B·n_active, B·n_free]
    active: np.ndarray  # residual rows (flat over the batch) that depend on some free entry
    free_idx: np.ndarray  # flat (over the batch) state indices of the free entries
    weight: np.ndarray  # M on the free entries
    square: bool
    solve: Callable[[np.ndarray], np.ndarray]  # rhs on the active rows -> δ on the free entries
    colours: int
    factor_nnz: int
    abs_J: sp.csr_matrix = field(repr=False, default=None)  # type: ignore[assignment]


def _assemble_sparse(ops: _LinOps, free: Tensor, extents: list[int]) -> tuple[sp.csr_matrix, int] | str:
    """J restricted to the free entries' columns, of an affine R at ``ops.x`` (float64), by colour probing: for
    each colour c, J 1_c gives every entry's value and J (1_c ⊙ index) / J 1_c its column; a reason string
    where the colouring does not separate the columns."""
    x64 = ops.x
    B = x64.shape[0]
    shape = tuple(x64.shape[1:])
    N = math.prod(shape)
    colour, count = _colouring(shape, extents)
    if count > MAX_COLOURS:
        return f"the stencil needs {count} colours (> {MAX_COLOURS})"
    colour = colour.to(x64.device)
    supp = (free > 0).to(torch.float64)
    index = torch.arange(N, dtype=torch.float64, device=x64.device).reshape(shape)
    flat_colour = colour.flatten()
    rows, cols, vals = [], [], []
    n = ops.r.shape[1]
    for c in range(count):
        tangent = (colour == c).to(torch.float64) * supp  # [B, *shape]
        jv, jw = ops.jv(tangent).flatten(1), ops.jv(tangent * index).flatten(1)  # [B, n]
        nz = jv != 0
        b_i, r_i = nz.nonzero(as_tuple=True)
        v = jv[nz]
        col = jw[nz] / v
        col_r = col.round()
        if bool(((col - col_r).abs() > 1e-3).any()) or bool(((col_r < 0) | (col_r >= N)).any()):
            return "the colouring does not separate the stencil's columns"
        col_l = col_r.long()
        if bool((flat_colour[col_l] != c).any()):
            return "the colouring does not separate the stencil's columns"
        rows.append((b_i * n + r_i).cpu().numpy())
        cols.append((b_i * N + col_l).cpu().numpy())
        vals.append(v.cpu().numpy())
    J = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(B * n, B * N), dtype=np.float64
    )
    return J, count


def _check_sparse(residual: Residual, ops: _LinOps, free: Tensor, J: sp.csr_matrix) -> str | None:
    """``None`` if J reproduces a random Jacobian-vector product and R(x + v) − R(x) (R affine); else why not."""
    x64 = ops.x.detach()
    gen = torch.Generator().manual_seed(12345)
    v = torch.randn(x64.shape, generator=gen, dtype=torch.float64).to(x64.device) * (free > 0)
    v = v * (x64.abs().max().clamp_min(1.0))
    jv = ops.jv(v)
    r0 = ops.r.detach()
    with torch.no_grad():
        diff = residual(x64 + v) - r0
    v_np = v.flatten().cpu().numpy()
    js = J @ v_np
    absJ = abs(J)
    scale = float(np.max(absJ @ np.abs(v_np), initial=0.0))
    if not float(np.max(np.abs(js - jv.flatten().cpu().numpy()), initial=0.0)) <= 1e-9 * scale + 1e-300:
        return "the assembled Jacobian does not reproduce a Jacobian-vector product (a non-local residual?)"
    x_np = x64.flatten().cpu().numpy()
    floor = scale + float(np.max(absJ @ np.abs(x_np), initial=0.0)) + float(r0.abs().max())
    if not float((diff - jv).abs().max()) <= 1e-8 * floor:
        return "the residual is not affine (R(x + v) − R(x) ≠ J v)"
    return None


def _factorise(J: sp.csr_matrix, free_idx: np.ndarray, weight: np.ndarray, B: int, label: str) -> tuple:
    """(active rows, J_F, square, solve, factor nnz) of J restricted to the free columns and to the rows that
    meet one. Factorised by SuperLU in chunks of whole samples (≤ ``FACTOR_CHUNK`` rows each; the system is
    block-diagonal over the samples): J_F itself where it is square (LU), J_F M J_Fᵀ otherwise (symmetric
    mode, minimum-degree ordering of AᵀA+A, no pivoting: it is positive definite unless singular)."""
    n, N = J.shape[0] // B, J.shape[1] // B
    JF = J[:, free_idx].tocsr()
    active = np.flatnonzero(np.diff(JF.indptr) > 0)
    JF = JF[active].tocsr()
    rows_per = np.bincount(active // n, minlength=B)
    cols_per = np.bincount(free_idx // N, minlength=B)
    square = bool(np.array_equal(rows_per, cols_per))
    row_end, col_end = np.cumsum(rows_per), np.cumsum(cols_per)
    per = max(1, FACTOR_CHUNK // max(1, int(rows_per.max())))
    blocks = []  # (row slice, col slice, solver)
    nnz = 0
    for s0 in range(0, B, per):
        s1 = min(B, s0 + per)
        r0, r1 = (row_end[s0 - 1] if s0 else 0), row_end[s1 - 1]
        c0, c1 = (col_end[s0 - 1] if s0 else 0), col_end[s1 - 1]
        if r1 == r0 and c1 == c0:  # samples with every entry known: nothing to solve
            continue
        Jb = JF[r0:r1, c0:c1]
        wb = weight[c0:c1]
        try:
            if square:
                lu = spla.splu(Jb.tocsc())
            else:
                A = (Jb.multiply(wb[None, :]).tocsr() @ Jb.T).tocsc()
                lu = spla.splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        except RuntimeError as err:  # SuperLU: "Factor is exactly singular"
            raise SingularSystemError(
                f"sampling-time projection onto {label}: the linear constraint system is singular ({err}): "
                "contradictory or redundant constraints (e.g. a prior listed twice); drop the duplicate prior, or "
                "use method='matrix-free' for redundant but consistent constraints"
            ) from None
        nnz += int(lu.L.nnz + lu.U.nnz)
        blocks.append((slice(r0, r1), slice(c0, c1), lu, Jb, wb, None if square else A))

    def solve(rhs: np.ndarray) -> np.ndarray:
        out = np.zeros(JF.shape[1])
        for rs, cs, lu, Jb, wb, A in blocks:
            b = rhs[rs]
            if A is None:  # square: δ = J_F⁻¹ R, one step of iterative refinement
                d = lu.solve(b)
                out[cs] = d + lu.solve(b - Jb @ d)
            else:  # δ = M J_Fᵀ (J_F M J_Fᵀ)⁻¹ R
                y = lu.solve(b)
                y = y + lu.solve(b - A @ y)
                out[cs] = wb * (Jb.T @ y)
        return out

    return active, JF, square, solve, nnz


# -------------------------------------------------------------------------------------------- projector
@dataclass
class _State:
    free: Tensor
    method: str
    n: int
    linear: bool
    sparse: _SparseSystem | None = None
    dense: tuple[Tensor, tuple, float] | None = None  # (M J [B, n, N], factor of J M Jᵀ, max |J||x|) if linear
    precond: Tensor | None = None  # 1 / diag(J M Jᵀ) (linear: reused)
    colouring: tuple[Tensor, int] | None = None
    linops: _LinOps | None = None  # v ↦ J v, w ↦ Jᵀ w of an affine R (constant)
    checked: bool = False


class Projector:
    """The masked Gauss–Newton projection x ← x − M Jᵀ (J M Jᵀ)⁻¹ R(x) of one constraint, with what can be
    reused across sampler steps (the sparse factorisation or dense J of an affine R, the preconditioner)
    cached per state shape and mask.

    Args:
        residual: x ``[B, ...]`` → R ``[B, n]``.
        linear: ``False`` treats R as nonlinear; ``True`` (its priors' case is ``linear``) or ``None``: R is
            treated as affine if a probe confirms it, R(x + v) − R(x) = J v for a random v (a prior that
            declares ``linear`` wrongly is then projected by Gauss–Newton steps); the sparse path checks it
            again on the assembled J.
        method: ``auto`` | ``dense`` | ``sparse`` | ``matrix-free`` (see :func:`choose_projection_method`).
        dense_max, sparse_max: the thresholds of ``auto``.
        cg_iters, rtol: the matrix-free path's conjugate-gradient iterations and relative tolerance.
        precondition: Jacobi-precondition the matrix-free path.
        label: the constraint in error messages (its priors).

    After a call, ``info`` holds the path taken, the residual before/after where evaluated, the CG iterations
    and relative residual (matrix-free), the number of colours and the factor's nonzeros (sparse).
    """

    def __init__(
        self,
        residual: Residual,
        *,
        linear: bool | None = None,
        method: str = "auto",
        dense_max: int = 512,
        sparse_max: int = 1 << 15,
        cg_iters: int = 50,
        rtol: float = 1e-8,
        precondition: bool = True,
        label: str = "the constraint",
    ) -> None:
        if method not in PROJECTION_METHODS:
            raise ValueError(f"{label}: unknown projection method {method!r}; choose one of {PROJECTION_METHODS}")
        if not cg_iters >= 1:
            raise ValueError(f"{label}: cg_iters must be >= 1, got {cg_iters}")
        if not (rtol > 0 and math.isfinite(rtol)):
            raise ValueError(f"{label}: rtol must be > 0, got {rtol}")
        if not (dense_max >= 0 and sparse_max >= 0):
            raise ValueError(f"{label}: dense_max and sparse_max must be >= 0, got {dense_max}, {sparse_max}")
        self.residual = residual
        self.linear = linear
        self.method = method
        self.dense_max = dense_max
        self.sparse_max = sparse_max
        self.cg_iters = cg_iters
        self.rtol = rtol
        self.precondition = precondition
        self.label = label
        self.info: dict[str, Any] = {}
        self._states: dict[tuple, _State] = {}

    # ---------------------------------------------------------------------------------- set-up
    def _is_affine(self, x: Tensor, free: Tensor) -> bool:
        """R(x + v) − R(x) = J v (float64, to 1e-8 of the terms) for one random v in the free entries."""
        x64 = x.detach().double()
        gen = torch.Generator().manual_seed(7)
        v = torch.randn(x64.shape, generator=gen, dtype=torch.float64).to(x64.device) * (free > 0)
        v = v * x64.abs().max().clamp_min(1.0)
        try:
            ops = _LinOps(self.residual, x64)
            jv = ops.jv(v)
            r0 = ops.r.detach()
            with torch.no_grad():
                d = self.residual(x64 + v) - r0
        except Exception:  # a residual autograd cannot differentiate twice nor in float64: not probed
            return False
        scale = float(jv.abs().max()) + float(r0.abs().max()) + 1e-300
        return float((d - jv).abs().max()) <= 1e-8 * scale

    def _state(self, x: Tensor, free: Tensor) -> _State:
        key = (tuple(x.shape), x.dtype, str(x.device))
        st = self._states.get(key)
        if st is not None and torch.equal(st.free, free):
            return st
        with torch.no_grad():
            r = self.residual(x)
        if r.dim() != 2 or r.shape[0] != x.shape[0]:
            raise ValueError(f"{self.label}: the residual must be [B, n] for a state [B, ...], got {tuple(r.shape)}")
        n = r.shape[1]
        if n == 0:
            raise ValueError(
                f"{self.label}: the residual has no entries for a state of shape {tuple(x.shape)} (e.g. fewer than "
                "three frames for a central time difference); nothing to project onto"
            )
        if not bool((free > 0).any()):
            raise ValueError(f"{self.label}: every entry is known (mask = 1): the projection has nothing to move")
        N = x[0].numel()
        # declared (a prior's case) or not, an affine R is verified once: R(x + v) − R(x) = J v
        linear = self.linear is not False and self._is_affine(x, free)
        method = self.method
        if method == "auto":
            method = choose_projection_method(n, N, linear=linear, dense_max=self.dense_max, sparse_max=self.sparse_max)
        elif method == "sparse" and not linear:
            raise ValueError(f"{self.label}: method='sparse' needs an affine residual; this one is not")
        st = _State(free=free.clone(), method=method, n=n, linear=linear)
        if method == "sparse":
            st.sparse = self._build_sparse(x, free)
            if st.sparse is None:
                st.method = "matrix-free"
        self._states = {key: st}  # one state per hook: a new shape or mask replaces it
        return st

    def _build_sparse(self, x: Tensor, free: Tensor) -> _SparseSystem | None:
        ops = _LinOps(self.residual, x.detach().double())
        ext = _stencil_extents(ops)
        reason = "no stencil"
        if ext is not None:
            for _ in range(2):  # the sampled rows may miss the widest ones: widen once
                got = _assemble_sparse(ops, free, ext)
                if isinstance(got, str):
                    reason = got
                else:
                    J, count = got
                    reason = _check_sparse(self.residual, ops, free, J) or ""
                    if not reason:
                        break
                    if "affine" in reason:
                        break
                ext = [2 * e + 1 for e in ext]
        if reason:
            if self.method == "sparse":
                raise ValueError(f"{self.label}: the sparse projection does not apply: {reason}")
            warnings.warn(
                f"{self.label}: the exact sparse projection does not apply ({reason}); using the matrix-free "
                "conjugate-gradient projection (not exact)",
                RuntimeWarning,
                stacklevel=4,
            )
            self.info["fallback"] = reason
            return None
        B = x.shape[0]
        free_flat = free.detach().double().flatten().cpu().numpy()
        free_idx = np.flatnonzero(free_flat > 0)
        weight = free_flat[free_idx]
        active, JF, square, solve, nnz = _factorise(J, free_idx, weight, B, self.label)
        return _SparseSystem(
            J=JF,
            active=active,
            free_idx=free_idx,
            weight=weight,
            square=square,
            solve=solve,
            colours=count,
            factor_nnz=nnz,
            abs_J=abs(JF),
        )

    # ---------------------------------------------------------------------------------- steps
    def _dense_step(self, st: _State, x: Tensor, free: Tensor, tol: float) -> tuple[Tensor, float, float | None]:
        """(x_new, max |R(x)|, scale of |J||x|) by the dense Gauss–Newton step (x itself when within tol)."""
        if st.linear and st.dense is not None:
            with torch.no_grad():
                r = self.residual(x).detach()
            mj, factor, scale = st.dense
            if tol > 0 and float(r.abs().max()) <= tol:
                return x, float(r.abs().max()), scale
        else:
            with torch.enable_grad():
                r, vjp_fn = torch.func.vjp(self.residual, x)
            r = r.detach()
            if tol > 0 and float(r.abs().max()) <= tol:
                return x, float(r.abs().max()), None
            jac = _dense_jacobian(vjp_fn, r, x)  # [B, n, N] float64
            xa = x.detach().double().abs().flatten(1)[..., None]
            scale = max(float((jac[:, i : i + 256].abs() @ xa).max()) for i in range(0, jac.shape[1], 256))
            w = free.flatten(1)[:, None, :].double()
            if bool(((free == 0) | (free == 1)).all()):  # M² = M: J M Jᵀ = (J M)(J M)ᵀ, masked in place
                mj = jac.mul_(w)
                gram = mj @ mj.transpose(1, 2)
            else:
                mj = jac * w
                gram = mj @ jac.transpose(1, 2)  # J M Jᵀ, [B, n, n]
            del jac
            factor = _psd_factor(gram)
            del gram
            if st.linear:  # J is constant: keep M J and the factor of J M Jᵀ for the next sampler steps
                st.dense = (mj, factor, scale)
        y = _psd_solve(factor, r.double()[..., None])
        step = (mj.transpose(1, 2) @ y)[..., 0].reshape(x.shape)
        return (x.double() - step).to(x.dtype).detach(), float(r.abs().max()), scale

    def _sparse_step(self, st: _State, x: Tensor, tol: float) -> tuple[Tensor, float, float | None]:
        s = st.sparse
        assert s is not None
        x64 = x.detach().double()
        with torch.no_grad():
            r = self.residual(x64).detach()
        r_max = float(r.abs().max())
        x_free = np.abs(x64.flatten().cpu().numpy()[s.free_idx])
        scale = float(np.max(s.abs_J @ x_free, initial=0.0))
        if tol > 0 and r_max <= tol:
            return x, r_max, scale
        rhs = r.flatten().cpu().numpy()[s.active]
        delta = np.zeros(x64.numel())
        delta[s.free_idx] = s.solve(rhs)
        if not np.all(np.isfinite(delta)):
            raise SingularSystemError(
                f"sampling-time projection onto {self.label}: the linear constraint system is singular (the sparse "
                "solve gave non-finite values): contradictory or redundant constraints"
            )
        x_new = x64 - torch.from_numpy(delta).to(x64.device).reshape(x64.shape)
        return x_new.to(x.dtype), r_max, scale

    def _matrix_free_step(
        self, st: _State, x: Tensor, free: Tensor, tol: float, first: bool
    ) -> tuple[Tensor, float, float | None]:
        if st.linear and st.linops is not None:  # an affine R's J does not depend on x
            ops = st.linops
            with torch.no_grad():
                r = self.residual(x).detach()
        else:
            ops = _LinOps(self.residual, x)
            r = ops.r.detach()
            if st.linear:
                st.linops = ops
        r_max = float(r.abs().max())
        if tol > 0 and r_max <= tol:
            return x, r_max, None

        def jt(y: Tensor) -> Tensor:  # M Jᵀ y
            return ops.jt(y) * free

        def jmjt(y: Tensor) -> Tensor:  # J M Jᵀ y
            return ops.jv(jt(y))

        precond = None
        if self.precondition:
            if st.linear and st.precond is not None:
                precond = st.precond
            elif first or st.precond is None:  # nonlinear R: once per call, at the first Gauss–Newton step
                precond = self._jacobi(st, x, free, ops)
                st.precond = precond
            else:
                precond = st.precond
        y, iters, rel = _pcg(jmjt, r, self.cg_iters, self.rtol, precond)
        self.info["cg_iterations"] = self.info.get("cg_iterations", 0) + iters
        self.info["cg_relative_residual"] = rel
        return (x - jt(y)).detach(), r_max, None

    def _jacobi(self, st: _State, x: Tensor, free: Tensor, ops: _LinOps) -> Tensor | None:
        if st.colouring is None:
            ext = _stencil_extents(ops)
            if ext is None:
                return None
            colour, count = _colouring(tuple(x.shape[1:]), ext)
            st.colouring = (colour, count)
        colour, count = st.colouring
        if count > MAX_PRECOND_COLOURS:
            return None
        d = _probe_diagonal(ops.jv, free, colour, count)
        # rows that meet no free entry: leave them unscaled (their equation cannot be changed)
        d = torch.where(d > 0, d, torch.ones_like(d))
        return 1.0 / d

    # ---------------------------------------------------------------------------------- call
    def __call__(self, x: Tensor, free: Tensor | None = None, iterations: int = 1, tol: float = 0.0) -> Tensor:
        """Up to ``iterations`` steps from ``x`` (entries with ``free`` = 0 kept), stopping early once
        max |R(x)| ≤ ``tol`` in every sample. Raises ``ValueError`` if an affine system's exact step does not
        reduce its residual (inconsistent constraints) on the first projection."""
        x = x.detach()
        free = torch.ones_like(x) if free is None else free.to(x).expand_as(x).contiguous()
        st = self._state(x, free)
        self.info = {"path": st.method, "linear": st.linear, "residual_entries": st.n, "state_entries": x[0].numel()}
        if st.sparse is not None:
            self.info.update(colours=st.sparse.colours, factor_nnz=st.sparse.factor_nnz, square=st.sparse.square)
        self.info["steps"] = 0
        for it in range(iterations):
            if st.method == "sparse":
                x_new, r_max, scale = self._sparse_step(st, x, tol)
            elif st.method == "dense":
                x_new, r_max, scale = self._dense_step(st, x, free, tol)
            else:
                x_new, r_max, scale = self._matrix_free_step(st, x, free, tol, first=it == 0)
            if it == 0:
                self.info["residual_in"] = r_max
            if x_new is x:  # within tol already
                break
            if not bool(torch.isfinite(x_new).all()) and bool(torch.isfinite(x).all()):
                raise ValueError(
                    f"sampling-time projection onto {self.label}: the {st.method} projection step produced non-finite "
                    "values: the constraint system is singular or too ill-conditioned for this state (e.g. a "
                    "time-stepping residual whose scheme is unstable at this CFL number, made square by first_step)"
                )
            x = x_new
            self.info["steps"] += 1
            if st.linear and not st.checked:
                self._check_reduced(st, x, r_max, scale)
            if st.linear and st.method != "matrix-free":
                break  # exact in one step (to the float precision of x: another step would not lower it)
        return x

    def _check_reduced(self, st: _State, x: Tensor, r_old: float, scale: float | None) -> None:
        """First projection of an affine system: the residual must fall to float precision (exact paths) or at
        least fall (matrix-free); otherwise the constraints contradict each other."""
        with torch.no_grad():
            r_new = float(self.residual(x).abs().max())
        self.info["residual_out"] = r_new
        st.checked = True
        eps = torch.finfo(x.dtype).eps
        if scale is not None:
            ok = r_new <= max(1e-6 * r_old, 1e3 * eps * (scale + r_old))
        else:
            ok = r_new <= 0.5 * r_old or self.info.get("cg_relative_residual", 0.0) <= max(self.rtol, 10 * eps)
            if ok and self.info.get("cg_relative_residual", 0.0) > max(self.rtol, 1e3 * eps):
                warnings.warn(
                    f"{self.label}: the matrix-free projection stopped after cg_iters={self.cg_iters} conjugate-"
                    f"gradient iterations with relative residual {self.info['cg_relative_residual']:.1e} (max |R| "
                    f"{r_old:.2e} → {r_new:.2e}); raise cg_iters or use method='sparse' for an exact projection",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if not ok:
            raise ValueError(
                f"sampling-time projection onto {self.label}: the linear constraint system is inconsistent or "
                f"numerically singular — the {st.method} projection step did not reduce the residual (max |R| "
                f"{r_old:.3e} → {r_new:.3e}): contradictory constraints, or an ill-conditioned system (e.g. a "
                "time-stepping residual whose scheme is unstable at this CFL number, made square by first_step)"
            )


def gauss_newton_projection(
    residual: Residual,
    x: Tensor,
    free: Tensor,
    iterations: int = 1,
    cg_iters: int = 50,
    dense_max: int = 512,
    tol: float = 0.0,
    *,
    linear: bool | None = None,
    method: str = "auto",
    sparse_max: int = 1 << 15,
    rtol: float = 1e-8,
    precondition: bool = True,
    label: str = "the constraint",
) -> Tensor:
    """Up to ``iterations`` steps of x ← x − M Jᵀ (J M Jᵀ)⁻¹ R(x) (exact for affine R in one step),
    stopping early once max |R(x)| ≤ ``tol`` for every sample (see :class:`Projector` for the paths)."""
    proj = Projector(
        residual,
        linear=linear,
        method=method,
        dense_max=dense_max,
        sparse_max=sparse_max,
        cg_iters=cg_iters,
        rtol=rtol,
        precondition=precondition,
        label=label,
    )
    return proj(x, free, iterations, tol)


def make_projector(law: Law, options: Any) -> Projector:
    """The :class:`Projector` onto ``law`` with a method's settings (used by ``projection``, ``pcfm``, ``eci``)."""
    return Projector(
        law.residual,
        linear=None if law.linear else False,
        method=options.method,
        dense_max=options.dense_max,
        sparse_max=options.sparse_max,
        cg_iters=options.cg_iters,
        rtol=options.rtol,
        label=law.label,
    )


class ProjectionMethod(SamplingMethod):
    r"""``projection``: x̂0 ← x̂0 − M Jᵀ (J M Jᵀ)⁻¹ R(x̂0) after every denoiser evaluation at t ≤ ``t_start``
    (module docstring); the sampler then recomputes ε̂ from x_t and the projected x̂0."""

    name = "projection"
    reference = "this library (docs/priors.md, 'Sampling-time constraints')"

    def check_options(self) -> None:
        o = self.options
        if o.method not in PROJECTION_METHODS:
            raise ValueError(
                f"sampling-time constraint: unknown projection method {o.method!r}; choose one of {PROJECTION_METHODS}"
            )
        self.projector = make_projector(self.law, o)

    def x0_hook(self) -> Callable[[Tensor, Tensor], Tensor]:
        law, o, projector = self.law, self.options, self.projector

        def hook(x0: Tensor, t: Tensor) -> Tensor:
            if float(t.reshape(-1)[0]) > o.t_start:
                return x0
            return projector(x0, law.free(x0), o.iterations, o.tol)

        hook.projector = projector  # type: ignore[attr-defined]
        return hook
