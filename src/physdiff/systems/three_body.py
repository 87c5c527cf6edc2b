r"""Three-body gravity: bound, encounter-free trajectories from a 4th-order symplectic integrator.

Equations (G = 1, unit masses by default):

    dR_k/dt = V_k,   m_k dV_k/dt = F_k = −Σ_{j≠k} G m_k m_j (R_k − R_j)/r_kj³,
    E = ½ Σ_k m_k |V_k|² − Σ_{i<j} G m_i m_j / r_ij   (conserved),   P = Σ_k m_k V_k = 0.

Initial conditions (vectorised over a batch, numpy ``Generator``; masses m_k = 1):

* positions uniform in the ball of radius ``init_radius`` = 1, shifted to zero centre of mass;
* velocities: a mix V = ρ V_rot/rms(V_rot) + (1 − ρ) V_rand/rms(V_rand) of a rigid rotation
  V_rot = n × R (random axis n; (−y, x) in 2D) and Gaussian noise, with ``rotation`` ρ = 0.5, shifted to
  zero total momentum and rescaled so that the virial ratio Q = T/|U| is uniform in
  [``virial_min``, ``virial_max``] = [0.3, 0.7]. Q < 1 makes every system bound (E = U(1 − Q) < 0);
  Q ≳ 0.3 and the rotation avoid head-on free fall (about 1/3 of the candidates are kept).

Integrator: Yoshida's 4th-order symplectic composition of drift–kick–drift leapfrog
(w₁ = 1/(2 − 2^{1/3}), w₀ = −2^{1/3}/(2 − 2^{1/3})), 3 force evaluations per step, fixed step
h = dt / ``substeps`` = 0.1/50 = 2e-3, written in numpy (faster than torch on these small arrays and
deterministic whatever the thread count). Positions and velocities are saved at the same instants;
frame 0 is the initial condition at t = 0.

Rejection (each simulated batch is checked and only valid trajectories kept, until ``n`` are found):

* close encounters: the minimum pairwise distance over every force evaluation of the trajectory must be
  ≥ ``min_distance`` = 0.2 (the integrator stays accurate and the motion far from chaotic collisions);
* escapes: every body must stay within ``max_radius`` = 4 of the centre of mass at every saved frame;
* energy: E₀ < 0 and the ground-truth relative drift max_l |E_l − E₀|/|E₀| at the saved frames must be
  below ``max_energy_drift`` = 1e-4 (with these settings kept trajectories drift by ≲ 2e-7).

Defaults: L = 30 frames at ``dt`` = 0.1 (duration 2.9). With |U| ≈ 2–4 and Q ≈ 0.5 the speeds are
≈ 0.5–1, so a body moves ≈ 1.3 (median) over a trajectory, comparable to the system size — a sizable
fraction of an orbital period (a circular binary at separation 1 has period 2π/√2 ≈ 4.4) — while short
enough not to be chaotic. Candidates are drawn in batches of ``batch_size`` = 2048 (fixed, so a data set of
n trajectories is a prefix of a larger one with the same seed and settings); after the first batch, the
batches the acceptance rate calls for are integrated together, in a ``[K, D, B]`` layout whose arithmetic is
elementwise over the batch (the same bits as batch by batch), and candidates that certainly fail the
rejection test are dropped as soon as they do (2,000 trajectories: a few seconds of CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from physdiff.physics import particles as phys
from physdiff.progress import progress_bar
from physdiff.systems.particle_system import Array, ParticleSystem

__all__ = ["PairwiseGravity", "PairwiseGravitySoA", "ThreeBody", "yoshida4_step"]

# Yoshida (1990) 4th-order triple-jump coefficients.
_W1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W0 = -(2.0 ** (1.0 / 3.0)) / (2.0 - 2.0 ** (1.0 / 3.0))
_DRIFT = (0.5 * _W1, 0.5 * (_W0 + _W1), 0.5 * (_W0 + _W1), 0.5 * _W1)
_KICK = (_W1, _W0, _W1)
#: at most this many candidates are integrated together (bounds the memory of a large data set)
_GROUP_CANDIDATES = 16384


class PairwiseGravity:
    """Accelerations a_i = F_i/m_i = −Σ_{j≠i} G m_j (R_i − R_j)/r_ij³ over the pair list i < j (numpy).

    Used inside the integrator loop, where numpy on small arrays is several times faster than torch and
    deterministic regardless of thread count. Also tracks the minimum pair distance of every evaluation.
    """

    def __init__(self, m: np.ndarray, G: float) -> None:
        K = m.shape[-1]
        self.i, self.j = np.triu_indices(K, k=1)
        P = self.i.size
        self.inc_i = np.zeros((K, P))
        self.inc_j = np.zeros((K, P))
        self.inc_i[self.i, np.arange(P)] = 1.0
        self.inc_j[self.j, np.arange(P)] = 1.0
        self.G_mj = (G * m[:, self.j])[..., None]  # [B, P, 1]
        self.G_mi = (G * m[:, self.i])[..., None]
        self.min_r2 = np.full(m.shape[0], np.inf)

    def __call__(self, R: np.ndarray) -> np.ndarray:
        d = R[:, self.i] - R[:, self.j]  # [B, P, D]
        r2 = np.einsum("bpd,bpd->bp", d, d)
        np.minimum(self.min_r2, r2.min(-1), out=self.min_r2)
        f = d * (r2**-1.5)[..., None]  # (R_i − R_j)/r_ij³
        return self.inc_j @ (self.G_mi * f) - self.inc_i @ (self.G_mj * f)


class PairwiseGravitySoA:
    """:class:`PairwiseGravity` for states laid out ``[K, D, B]`` (batch last, contiguous): the simulator's hot path.

    The same accelerations, computed pair by pair with elementwise operations on length-B rows (no
    fancy indexing, no batched tiny matmuls, 1/r³ as 1/(r² √r²) rather than a power): ~5× less CPU time
    than the ``[B, K, D]`` layout at B = 2048. Every operation is elementwise over the batch, so a
    trajectory's bits do not depend on which other trajectories share its batch. Tracks the minimum
    pair distance² of every evaluation in ``min_r2`` ``[B]``.
    """

    def __init__(self, m: np.ndarray, G: float) -> None:
        K = m.shape[-1]
        self.pairs = [(i, j) for i in range(K) for j in range(i + 1, K)]
        self.Gm = G * np.ascontiguousarray(m.T)[:, None, :]  # [K, 1, B]
        self.min_r2 = np.full(m.shape[0], np.inf)

    def keep(self, idx: np.ndarray) -> None:
        """Restrict the batch to the trajectories ``idx``."""
        self.Gm = np.ascontiguousarray(self.Gm[..., idx])
        self.min_r2 = self.min_r2[idx]

    def __call__(self, R: np.ndarray) -> np.ndarray:
        A = np.zeros_like(R)
        for i, j in self.pairs:
            d = R[i] - R[j]  # [D, B]
            r2 = d[0] * d[0]
            for k in range(1, d.shape[0]):
                r2 += d[k] * d[k]
            np.minimum(self.min_r2, r2, out=self.min_r2)
            d *= 1.0 / (r2 * np.sqrt(r2))  # (R_i − R_j)/r_ij³
            A[i] -= self.Gm[j] * d
            A[j] += self.Gm[i] * d
        return A


def yoshida4_step(R: np.ndarray, V: np.ndarray, h: float, accel_fn: Callable[[np.ndarray], np.ndarray]) -> None:
    """One 4th-order Yoshida step in place (drift–kick ×3, drift).

    Sequence: drift c₁, kick d₁, drift c₂, kick d₂, drift c₃, kick d₃, drift c₄ with
    c₁ = c₄ = w₁/2, c₂ = c₃ = (w₀ + w₁)/2, d₁ = d₃ = w₁, d₂ = w₀; 3 force evaluations per step,
    R and V synchronous at the end of the step. Error O(h⁴), symplectic and time-reversible.
    """
    for i in range(3):
        R += (_DRIFT[i] * h) * V
        V += (_KICK[i] * h) * accel_fn(R)
    R += (_DRIFT[3] * h) * V


@dataclass
class ThreeBody(ParticleSystem):
    """Three gravitating bodies (see the module docstring for equations, integrator and thresholds)."""

    name: ClassVar[str] = "three-body"
    DEFAULT_CONSTANTS: ClassVar[dict[str, float]] = {"G": 1.0, "dt": 0.1}
    CONSTANT_DOCS: ClassVar[dict[str, str]] = {
        "G": "gravitational constant",
        "dt": "time between saved frames",
    }
    has_edges: ClassVar[bool] = False

    constants: dict[str, float] = field(default_factory=dict)
    n_particles: int = 3
    n_dims: int = 3
    n_frames: int = 30
    substeps: int = 50
    init_radius: float = 1.0
    virial_min: float = 0.3
    virial_max: float = 0.7
    rotation: float = 0.5
    min_distance: float = 0.2
    max_radius: float = 4.0
    max_energy_drift: float = 1e-4
    batch_size: int = 2048
    max_batches: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.virial_min <= self.virial_max < 1.0:
            raise ValueError(f"need 0 <= virial_min <= virial_max < 1, got {self.virial_min}, {self.virial_max}")
        if not 0.0 <= self.rotation <= 1.0:
            raise ValueError(f"rotation must lie in [0, 1], got {self.rotation}")
        if self.substeps < 1 or self.batch_size < 1:
            raise ValueError("substeps and batch_size must be >= 1")

    # ---------------------------------------------------------------------------------------- physics
    def potential_energy(self, R: Array, m: Array | float, edges: Array | None = None) -> Array:
        """U = −Σ_{i<j} G m_i m_j / r_ij."""
        return phys.gravity_potential(R, m, self.constants["G"])

    def forces(self, R: Array, m: Array | float, edges: Array | None = None) -> Array:
        """F_i = −Σ_{j≠i} G m_i m_j (R_i − R_j)/r_ij³."""
        return phys.gravity_forces(R, m, self.constants["G"])

    # -------------------------------------------------------------------------------------- simulator
    def initial_conditions(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
        """Draw ``batch`` bound initial conditions (module docstring).

        Returns R₀, V₀ ``[batch, K, D]`` and masses ``[batch, K]``.
        """
        K, D = self.n_particles, self.n_dims
        m = np.ones((batch, K))
        direction = rng.standard_normal((batch, K, D))
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
        radius = self.init_radius * rng.random((batch, K, 1)) ** (1.0 / D)
        R = direction * radius
        V = rng.standard_normal((batch, K, D))
        if D == 2:
            V_rot = np.stack([-R[..., 1], R[..., 0]], axis=-1)
        else:
            axis = rng.standard_normal((batch, 1, D))
            V_rot = np.cross(np.broadcast_to(axis / np.linalg.norm(axis, axis=-1, keepdims=True), R.shape), R)
        rms = lambda X: np.sqrt(np.square(X).mean((1, 2), keepdims=True))
        V = self.rotation * V_rot / rms(V_rot) + (1.0 - self.rotation) * V / rms(V)
        q = rng.uniform(self.virial_min, self.virial_max, size=batch)
        M = m.sum(-1)[:, None, None]
        R -= (m[..., None] * R).sum(1, keepdims=True) / M
        V -= (m[..., None] * V).sum(1, keepdims=True) / M
        T = phys.kinetic_energy(V, m)
        U = phys.gravity_potential(R, m, self.constants["G"])
        V *= np.sqrt(q * np.abs(U) / T)[:, None, None]
        return R, V, m

    def _simulate_batch(
        self, R0: np.ndarray, V0: np.ndarray, m: np.ndarray, pbar: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integrate a batch; returns positions, velocities ``[B, L, K, D]`` and the validity mask ``[B]``.

        Integrated in the ``[K, D, B]`` layout (:class:`PairwiseGravitySoA`). A candidate that certainly
        fails :meth:`validity` (a close encounter in any force evaluation, non-finite, or, at a saved frame,
        an escape or an energy drift above the thresholds with a 1e-9 relative margin) is dropped from the
        batch at the next frame and not integrated further: about 2/3 of the candidates are rejected,
        most early. The kept ones are then checked by :meth:`validity` itself, so the rule is unchanged;
        a dropped candidate's remaining frames are NaN and it is marked invalid.
        """
        B, K, D = R0.shape
        h = self.dt / self.substeps
        accel = PairwiseGravitySoA(m, self.constants["G"])
        R = np.ascontiguousarray(R0.transpose(1, 2, 0))  # [K, D, B]
        V = np.ascontiguousarray(V0.transpose(1, 2, 0))
        w = np.ascontiguousarray((m / m.sum(-1, keepdims=True)).T)[:, None, :]  # [K, 1, B]
        Rs = np.full((B, self.n_frames, K, D), np.nan)
        Vs = np.full_like(Rs, np.nan)
        Rs[:, 0], Vs[:, 0] = R0, V0
        E0 = np.asarray(self.total_energy(R0, V0, m))
        alive = np.arange(B)
        margin = 1.0 + 1e-9
        with np.errstate(all="ignore"):  # diverging rejected candidates may overflow
            for frame in range(1, self.n_frames):
                for _ in range(self.substeps):
                    yoshida4_step(R, V, h, accel)
                Rt, Vt = R.transpose(2, 0, 1), V.transpose(2, 0, 1)  # [b, K, D] views
                Rs[alive, frame], Vs[alive, frame] = Rt, Vt
                if pbar is not None:
                    pbar.update(1)
                # certain rejections: encounter, non-finite, escape, drift (validity() decides for the rest)
                E = np.asarray(self.total_energy(Rt, Vt, m[alive]))
                radius = np.sqrt(np.square(R - (w * R).sum(0, keepdims=True)).sum(1)).max(0)
                ok = (
                    (np.sqrt(accel.min_r2) >= self.min_distance)
                    & (radius <= self.max_radius * margin)
                    & (np.abs(E - E0[alive]) <= self.max_energy_drift * margin * np.abs(E0[alive]))
                )
                if not ok.all() and frame < self.n_frames - 1:
                    keep = np.flatnonzero(ok)
                    alive, R, V, w = alive[keep], R[..., keep], V[..., keep], w[..., keep]
                    R, V = np.ascontiguousarray(R), np.ascontiguousarray(V)
                    accel.keep(keep)
        min_dist = np.zeros(B)  # a dropped candidate: invalid (its frames are NaN besides)
        min_dist[alive] = np.sqrt(accel.min_r2)
        valid = np.zeros(B, dtype=bool)
        valid[alive] = self.validity(Rs[alive], Vs[alive], m[alive], min_dist[alive])
        return Rs, Vs, valid

    def validity(self, R: np.ndarray, V: np.ndarray, m: np.ndarray, min_dist: np.ndarray | None = None) -> np.ndarray:
        """Rejection test for trajectories ``[B, L, K, D]``: finite, bound (E₀ < 0), no close encounter,
        no escape, relative energy drift below ``max_energy_drift``. Returns a boolean mask ``[B]``."""
        mm = m[:, None, :]
        finite = np.isfinite(R).all((1, 2, 3)) & np.isfinite(V).all((1, 2, 3))
        with np.errstate(all="ignore"):
            E = self.total_energy(R, V, mm)  # [B, L]
            drift = np.abs(E - E[:, :1]).max(1) / np.abs(E[:, 0])
            r = phys.pairwise_distances(R)  # [B, L, K, K]
            K = self.n_particles
            r_min_frames = np.where(np.eye(K, dtype=bool), np.inf, r).min((1, 2, 3))
            com = (mm[..., None] * R).sum(2, keepdims=True) / mm.sum(-1)[..., None, None]
            radius = np.linalg.norm(R - com, axis=-1).max((1, 2))
        if min_dist is not None:
            r_min_frames = np.minimum(r_min_frames, min_dist)
        return (
            finite
            & (E[:, 0] < 0)
            & (r_min_frames >= self.min_distance)
            & (radius <= self.max_radius)
            & (drift < self.max_energy_drift)
        )

    def simulate(self, n: int, seed: int, *, progress: bool = False, **settings: Any) -> dict[str, np.ndarray]:
        """Rejection-sample ``n`` valid trajectories (see the module docstring).

        Batches of ``batch_size`` candidates are drawn and integrated until ``n`` valid ones are found;
        the first ``n`` valid trajectories in draw order are returned (``positions``, ``velocities``
        ``[n, L, K, D]``, ``masses`` ``[n, K]``).
        """
        if settings:
            return self.with_settings(**settings).simulate(n, seed, progress=progress)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(seed)
        kept: dict[str, list[np.ndarray]] = {"positions": [], "velocities": [], "masses": []}
        count = 0
        pbar = None
        if progress:
            pbar = progress_bar(self.n_frames - 1, desc=self.name)
        # After the first batch, the batches the observed acceptance says are still needed are drawn in
        # order and integrated together (larger arrays, less per-call overhead). Each trajectory's
        # arithmetic is elementwise over the batch, so the result is the same as batch after batch.
        drawn = 0
        try:
            while drawn < self.max_batches:
                todo = 1
                if drawn:
                    rate = max(count, 1) / (drawn * self.batch_size)
                    needed = -(-(n - count) // max(1, int(rate * self.batch_size)))
                    todo = min(self.max_batches - drawn, needed, max(1, _GROUP_CANDIDATES // self.batch_size))
                draws = [self.initial_conditions(rng, self.batch_size) for _ in range(todo)]
                R0, V0, m = (np.concatenate(parts) for parts in zip(*draws, strict=True))
                drawn += todo
                if pbar is not None:
                    pbar.reset()
                    pbar.set_description(f"{self.name} batches {drawn - todo + 1}-{drawn} ({count}/{n} kept)")
                R, V, valid = self._simulate_batch(R0, V0, m, pbar)
                idx = np.flatnonzero(valid)[: n - count]
                kept["positions"].append(R[idx])
                kept["velocities"].append(V[idx])
                kept["masses"].append(m[idx])
                count += idx.size
                if count >= n:
                    break
            else:
                raise RuntimeError(
                    f"{self.name}: only {count}/{n} valid trajectories after {self.max_batches} batches "
                    f"of {self.batch_size}; relax the rejection thresholds"
                )
        finally:
            if pbar is not None:
                pbar.close()
        return {k: np.ascontiguousarray(np.concatenate(v)) for k, v in kept.items()}
