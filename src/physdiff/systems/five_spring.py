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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from physdiff.physics import particles as phys
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
        if progress:
            from tqdm.auto import tqdm

            frames = tqdm(frames, desc=self.name, unit="frame")
        state = S[:, 0].copy()  # contiguous: a batched matmul on strided views is several times slower
        for frame in frames:
            state = P @ state
            state[:, :K] -= (w * state[:, :K]).sum(-2, keepdims=True)
            state[:, K:] -= (w * state[:, K:]).sum(-2, keepdims=True)
            S[:, frame] = state
        t = self.dt * np.arange(self.n_frames)[None, :, None, None]
        Rs = S[:, :, :K] + (Rc[:, None] + t * Vc[:, None])
        Vs = S[:, :, K:] + Vc[:, None]
        Rs[:, 0], Vs[:, 0] = R, V  # frame 0 is the initial condition, bit for bit
        return {"positions": Rs, "velocities": Vs, "masses": m, "edges": edges}
