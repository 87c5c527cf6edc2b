r"""Five particles connected by random springs (NRI-style, without NRI's walls and force clipping).

Equations (κ = 0.1, unit masses, springs of rest length 0 on a random symmetric graph e):

    dR_i/dt = V_i,   m_i dV_i/dt = F_i = −κ Σ_j e_ij (R_i − R_j),
    E = ½ Σ_k m_k |V_k|² + ¼ κ Σ_{i≠j} e_ij |R_i − R_j|²   (conserved),
    P = Σ_k m_k V_k   (conserved exactly: the forces are pairwise antisymmetric and there are no walls).

Initial conditions (as in NRI's ``SpringSim``): each pair i < j is connected with probability
``edge_prob`` = ½ (symmetric, zero diagonal); positions R₀ ~ N(0, ``loc_std``² I) with ``loc_std`` = 0.5;
velocities ~ N(0, I) rescaled per particle to norm ``vel_norm`` = 0.5. The total momentum is therefore
not zero (the centre of mass drifts uniformly), as in NRI.

Integrator: kick–drift–kick leapfrog (velocity Verlet) at Δt = dt/``substeps`` = 0.1/100 = 1e-3,

    V ← V + ½Δt F(R)/m,  R ← R + Δt V,  V ← V + ½Δt F(R)/m,

saving every 100 steps, so positions and velocities are saved at the same instants t = 0, 0.1, …, 4.8
(L = 49 frames, frame 0 the initial condition). Differences from NRI's generator, on purpose: no box walls
and no force clipping (both break momentum and energy conservation), velocities not half a step off the
positions, first frame at t = 0. The system is linear, so leapfrog's relative energy error is
O((Δt ω)²) ≲ 1e-7 (ω² ≤ κ·K = 0.5) and bounded for all times.

Implementation: the system is linear, so one leapfrog step is a linear map of the state,
(R, V) ↦ M (R, V) with a per-trajectory 2K × 2K matrix M acting alike on every spatial axis. M is built by
applying :func:`leapfrog_kdk_step` itself to the 2K unit states, the ``substeps`` steps between two frames
are its power P = M^substeps (binary powering: 8 products of 10 × 10 matrices for 100 substeps), and each
saved frame is one product S ← P S. This is the same discrete map as stepping 100 times (the two differ by
round-off, ~1e-12 on positions of size ~1), for 48 batched 10 × 10 products instead of 4,800 steps: 10,000
trajectories of 49 frames take well under a second in numpy (deterministic whatever the thread count).

Floors and drift (:meth:`FiveSpring.conservation_errors`, :meth:`FiveSpring.relative_energy_drift`): the same
quantities as the generic :class:`~physdiff.systems.particle_system.ParticleSystem` code, computed from one
``[K, D, N, L]`` copy of the trajectories (every (particle, axis) a contiguous ``[N, L]`` plane) by a loop
over the K(K−1)/2 springs, whose differences R_i − R_j serve both the energy and the forces: elementwise
work on contiguous planes instead of batched 5 × 5 products broadcast over frames (×4 less CPU at
10,000 × 49; equal to the generic code to round-off, tested).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from physdiff.physics import particles as phys
from physdiff.progress import progress_bar
from physdiff.systems.particle_system import Array, ParticleSystem

__all__ = ["FiveSpring", "leapfrog_kdk_step", "leapfrog_propagator", "random_spring_graph"]


def random_spring_graph(rng: np.random.Generator, n: int, K: int, p: float = 0.5) -> np.ndarray:
    """``n`` random symmetric 0/1 adjacency matrices ``[n, K, K]`` with zero diagonal; P(e_ij = 1) = p."""
    upper = np.triu(rng.random((n, K, K)) < p, k=1)
    return (upper | upper.transpose(0, 2, 1)).astype(np.float64)


def leapfrog_kdk_step(
    R: np.ndarray, V: np.ndarray, A: np.ndarray, h: float, accel_fn: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """One kick–drift–kick leapfrog step in place; ``A`` = a(R) on entry, returns a(R) at the new R.

    Symplectic, time-reversible, 2nd order; R and V synchronous at the end of the step.
    """
    V += (0.5 * h) * A
    R += h * V
    A = accel_fn(R)
    V += (0.5 * h) * A
    return A


def leapfrog_propagator(lap: np.ndarray, h: float, steps: int) -> np.ndarray:
    """The map of ``steps`` kick–drift–kick steps of the linear system a = −``lap`` R, as matrices ``[n, 2K, 2K]``.

    For states S = (R; V) stacked ``[n, 2K, D]``, ``steps`` calls of :func:`leapfrog_kdk_step` with
    ``accel = lambda X: -(lap @ X)`` equal ``P @ S`` up to round-off. One step's matrix M is obtained by
    stepping the 2K unit states (so it is the integrator's own map, not a re-derivation); P = M^steps by
    binary powering (⌊log₂ steps⌋ squarings).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n, K, _ = lap.shape
    eye = np.broadcast_to(np.eye(K), (n, K, K))
    zero = np.zeros((n, K, K))
    R = np.concatenate([eye, zero], -1)  # column j: the unit state e_j of (R; V)
    V = np.concatenate([zero, eye], -1)

    def accel(X: np.ndarray) -> np.ndarray:
        return -(lap @ X)

    leapfrog_kdk_step(R, V, accel(R), h, accel)
    M = np.concatenate([R, V], -2)
    P: np.ndarray | None = None
    while True:
        if steps & 1:
            P = M if P is None else M @ P
        steps >>= 1
        if not steps:
            return P  # type: ignore[return-value]
        M = M @ M


def _planes(A: np.ndarray, block: int = 1024) -> np.ndarray:
    """``A`` ``[N, L, K, D]`` as a contiguous ``[K, D, N, L]`` copy, transposed in blocks of ``block`` rows of
    the ``[N·L, K·D]`` matrix (cache-sized: ×2.5 faster than one strided ``ascontiguousarray``)."""
    N, L, K, D = A.shape
    rows = np.ascontiguousarray(A).reshape(N * L, K * D)
    out = np.empty((K * D, N * L))
    for start in range(0, N * L, block):
        out[:, start : start + block] = rows[start : start + block].T
    return out.reshape(K, D, N, L)


@dataclass
class FiveSpring(ParticleSystem):
    """K particles on a random spring graph (see the module docstring for equations and settings)."""

    name: ClassVar[str] = "five-spring"
    DEFAULT_CONSTANTS: ClassVar[dict[str, float]] = {"kappa": 0.1, "dt": 0.1}
    CONSTANT_DOCS: ClassVar[dict[str, str]] = {
        "kappa": "spring constant κ",
        "dt": "time between saved frames",
    }
    has_edges: ClassVar[bool] = True

    constants: dict[str, float] = field(default_factory=dict)
    n_particles: int = 5
    n_dims: int = 2
    n_frames: int = 49
    substeps: int = 100
    edge_prob: float = 0.5
    loc_std: float = 0.5
    vel_norm: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {self.substeps}")

    @staticmethod
    def _edges(edges: Array | None) -> Array:
        if edges is None:
            raise ValueError("five-spring: the spring adjacency `edges` [..., K, K] is required")
        return edges

    def potential_energy(self, R: Array, m: Array | float, edges: Array | None = None) -> Array:
        """U = ¼ κ Σ_{i≠j} e_ij |R_i − R_j|² (``m`` unused)."""
        return phys.spring_potential(R, self._edges(edges), self.constants["kappa"])

    def forces(self, R: Array, m: Array | float, edges: Array | None = None) -> Array:
        """F_i = −κ Σ_j e_ij (R_i − R_j) (``m`` unused)."""
        return phys.spring_forces(R, self._edges(edges), self.constants["kappa"])

    def conservation_errors(
        self,
        R: np.ndarray,
        V: np.ndarray,
        m: np.ndarray,
        edges: np.ndarray | None = None,
        **per_trajectory: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """The floors of :meth:`ParticleSystem.conservation_errors` (same definitions, same ``[N]`` results to
        round-off), computed plane by plane (see the module docstring)."""
        self._frame_arrays(per_trajectory)  # refuses unknown names (this system takes none)
        X, W, m, e = self._planes(R, V, m, edges)
        L = X.shape[-1]
        E, F = self._energy_and_forces(X, W, m, e, forces=True)
        dt2 = self.dt * self.dt
        sq = np.zeros(X.shape[2])
        rho = np.empty(X.shape[2:3] + (L - 2,))
        for k in range(X.shape[0]):
            mk = m[:, k, None] / dt2
            for d in range(X.shape[1]):
                x = X[k, d]
                np.subtract(x[:, 2:], x[:, 1:-1], out=rho)
                rho -= x[:, 1:-1]
                rho += x[:, :-2]
                rho *= mk  # m a_l on the interior frames
                rho -= F[k, d][:, 1:-1]
                sq += np.einsum("nl,nl->n", rho, rho)
        P = np.einsum("nk,kdnl->dnl", m, W)  # momentum [D, N, L]
        P -= P[..., :1]
        return {
            "energy_error": np.abs(E[:, 1:] - E[:, :1]).mean(1),
            "momentum_error": np.sqrt(np.einsum("dnl,dnl->nl", P[..., 1:], P[..., 1:])).mean(1),
            "dynamic_error": np.sqrt(sq / ((L - 2) * X.shape[0] * X.shape[1])),
        }

    def relative_energy_drift(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per trajectory max_l |E_l − E_0| / |E_0| ``[N]`` (the drift ``simulate_to_file`` reports)."""
        X, W, m, e = self._planes(data["positions"], data["velocities"], data["masses"], data.get("edges"))
        E, _ = self._energy_and_forces(X, W, m, e, forces=False)
        return np.abs(E - E[:, :1]).max(1) / np.abs(E[:, 0])

    def _planes(
        self, R: np.ndarray, V: np.ndarray, m: np.ndarray, edges: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``R``, ``V`` ``[N, L, K, D]`` as contiguous float64 ``[K, D, N, L]``; masses ``[N, K]``, edges
        ``[N, K, K]``."""
        R, V = (np.asarray(a, dtype=np.float64) for a in (R, V))
        if R.ndim != 4 or V.shape != R.shape:
            raise ValueError(f"{self.name}: positions and velocities must be [N, L, K, D], got {R.shape}, {V.shape}")
        X, W = _planes(R), _planes(V)
        m = np.broadcast_to(np.asarray(m, dtype=np.float64), R.shape[:1] + R.shape[2:3])
        e = np.broadcast_to(np.asarray(self._edges(edges), dtype=np.float64), R.shape[:1] + 2 * R.shape[2:3])
        return X, W, m, e

    def _energy_and_forces(
        self, X: np.ndarray, W: np.ndarray, m: np.ndarray, e: np.ndarray, *, forces: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """E = T + U ``[N, L]`` and, if asked, F ``[K, D, N, L]`` from planes ``[K, D, N, L]``.

        U = ½ κ Σ_{i<j} ē_ij |R_i − R_j|² with ē = (e + eᵀ)/2 (= ¼ κ Σ_{i≠j} e_ij |R_i − R_j|²) and
        F_i = −κ Σ_j e_ij (R_i − R_j), one difference per spring and axis."""
        K, D = X.shape[:2]
        kappa = self.constants["kappa"]
        E = np.zeros(X.shape[2:])
        buf, sq = np.empty_like(E), np.empty_like(E)  # reused: no fresh [N, L] temporaries in the loops
        for k in range(K):
            for d in range(D):
                np.square(W[k, d], out=buf)
                buf *= m[:, k, None]
                E += buf
        E *= 0.5
        F = np.zeros_like(X) if forces else None
        for i in range(K):
            for j in range(i + 1, K):
                eij, eji = e[:, i, j, None], e[:, j, i, None]
                if not (eij.any() or eji.any()):
                    continue
                sq.fill(0.0)
                for d in range(D):
                    np.subtract(X[i, d], X[j, d], out=buf)
                    if F is not None:
                        F[i, d] -= (kappa * eij) * buf
                        F[j, d] += (kappa * eji) * buf
                    buf *= buf
                    sq += buf
                sq *= (0.25 * kappa) * (eij + eji)
                E += sq
        return E, F

    def initial_conditions(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        """NRI initial conditions: edges ``[n, K, K]``, R₀, V₀ ``[n, K, D]``, masses ``[n, K]``."""
        K, D = self.n_particles, self.n_dims
        edges = random_spring_graph(rng, n, K, self.edge_prob)
        R = self.loc_std * rng.standard_normal((n, K, D))
        V = rng.standard_normal((n, K, D))
        V *= self.vel_norm / np.linalg.norm(V, axis=-1, keepdims=True)
        return edges, R, V, np.ones((n, K))

    def simulate(self, n: int, seed: int, *, progress: bool = False, **settings: Any) -> dict[str, np.ndarray]:
        """Simulate ``n`` trajectories: ``positions``, ``velocities`` ``[n, L, K, D]``, ``masses`` ``[n, K]``,
        ``edges`` ``[n, K, K]`` (float64; byte-identical for the same seed and settings)."""
        if settings:
            return self.with_settings(**settings).simulate(n, seed, progress=progress)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(seed)
        edges, R, V, m = self.initial_conditions(rng, n)
        kappa = self.constants["kappa"]
        h = self.dt / self.substeps
        # a = F/m = −(κ/m) (deg R − e R) = −(κ/m) Lap R, with the graph Laplacian Lap = diag(deg) − e.
        lap = (kappa / m[..., None]) * (edges.sum(-1)[..., None] * np.eye(self.n_particles) - edges)

        P = leapfrog_propagator(lap, h, self.substeps)  # one frame: `substeps` leapfrog steps
        # The centre of mass moves uniformly (Σ m a = 0), exactly so under leapfrog: propagate the motion
        # relative to it and re-centre every frame, so that the momentum stays exact to round-off (~1e-16)
        # instead of collecting P's round-off frame after frame.
        K = self.n_particles
        w = (m / m.sum(-1, keepdims=True))[..., None]  # [n, K, 1]
        Rc, Vc = (w * R).sum(-2, keepdims=True), (w * V).sum(-2, keepdims=True)
        S = np.empty((n, self.n_frames, 2 * K, self.n_dims))  # (R − Rc; V − Vc) per frame
        S[:, 0, :K], S[:, 0, K:] = R - Rc, V - Vc
        frames = range(1, self.n_frames)
        pbar = progress_bar(self.n_frames - 1, desc=self.name, enabled=progress)
        state = S[:, 0].copy()  # contiguous: a batched matmul on strided views is several times slower
        for frame in frames:
            state = P @ state
            state[:, :K] -= (w * state[:, :K]).sum(-2, keepdims=True)
            state[:, K:] -= (w * state[:, K:]).sum(-2, keepdims=True)
            S[:, frame] = state
            pbar.update(1)
        pbar.close()
        t = self.dt * np.arange(self.n_frames)[None, :, None, None]
        Rs = S[:, :, :K] + (Rc[:, None] + t * Vc[:, None])
        Vs = S[:, :, K:] + Vc[:, None]
        Rs[:, 0], Vs[:, 0] = R, V  # frame 0 is the initial condition, bit for bit
        return {"positions": Rs, "velocities": Vs, "masses": m, "edges": edges}
