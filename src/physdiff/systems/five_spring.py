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

The integration loop is written in numpy (fast on these small arrays and deterministic whatever the thread
count); 10,000 trajectories of 49 frames take a few seconds on 2 cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from physdiff.physics import particles as phys
from physdiff.systems.particle_system import Array, ParticleSystem

__all__ = ["FiveSpring", "leapfrog_kdk_step", "random_spring_graph"]


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

        def accel(X: np.ndarray) -> np.ndarray:
            return -(lap @ X)

        Rs = np.empty((n, self.n_frames, *R.shape[1:]))
        Vs = np.empty_like(Rs)
        Rs[:, 0], Vs[:, 0] = R, V
        A = accel(R)
        frames = range(1, self.n_frames)
        if progress:
            from tqdm.auto import tqdm

            frames = tqdm(frames, desc=self.name, unit="frame")
        for frame in frames:
            for _ in range(self.substeps):
                A = leapfrog_kdk_step(R, V, A, h, accel)
            Rs[:, frame], Vs[:, frame] = R, V
        return {"positions": Rs, "velocities": Vs, "masses": m, "edges": edges}
