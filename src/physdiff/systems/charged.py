r"""Charged particles (EGNN / GeoTDM N-body data): five ±1 charges under Coulomb forces, no walls.

Equations (k = 1, unit masses, charges q_k = ±1 stored per trajectory like the masses):

    dR_i/dt = V_i,   m_i dV_i/dt = F_i = Σ_{j≠i} k q_i q_j (R_i − R_j)/r_ij³   (like charges repel),
    E = ½ Σ_k m_k |V_k|² + Σ_{i<j} k q_i q_j / r_ij   (conserved by the exact dynamics),
    P = Σ_k m_k V_k   (conserved exactly by the unclipped forces, which are pairwise antisymmetric).

Initial conditions (as in EGNN's ``ChargedParticlesSim``): charges ±1 with probability ½ each; positions
R₀ ~ N(0, σ² I) per component with σ = ``loc_std``·(K/5)^{1/3} (EGNN's density-preserving scaling;
σ = ``loc_std`` = 1 for K = 5); velocities ~ N(0, I) rescaled per particle to norm ``vel_norm`` = 0.5.
The total momentum is not zero (the centre of mass drifts uniformly), as in EGNN.

Integrator: kick–drift–kick leapfrog (velocity Verlet) at h = dt/``substeps`` = 0.1/100 = 1e-3,

    V ← V + ½h a(R),  R ← R + h V,  V ← V + ½h a(R),   a = clip(F, ±``clip_force``)/m,

saving every 100 steps, so positions and velocities are saved at the same instants t = 0, 0.1, …, 4.8
(L = 49 frames, frame 0 the drawn initial condition). The loop is numpy, vectorised over trajectories
(pair list i < j, trajectory axis last, chunks of 2048 trajectories), deterministic whatever the
thread count; ≈ 500–1,000 trajectories per second on one core (10,000 in 10–20 s).

Force clip. EGNN clips every Cartesian component of the *summed* force on each particle to
±``_max_F`` = 0.1/Δt = 100 (``clip_force`` = 100 here; ``None`` disables it). A single pair reaches this
only when r ≲ √(k/100) = 0.1 (any pair only below √(K−1)/10 = 0.2), i.e. at close encounters of
opposite charges, which are common: the median minimum pair distance of a trajectory is ≈ 0.11. While
the clip is active the forces are neither conservative nor pairwise antisymmetric, so the data conserve
neither momentum nor energy there: this is a floor of the data set, not of the integrator. Measured at
n = 200 (seed 0): the clip acts in 48% of the trajectories (≈ 47 clipped steps per trajectory on
average); in those, max_l |P_l − P_0| reaches 1e-2 and the energy error max_l |E_l − E_0| reaches 17×
the scale T_0 + Σ_{i<j} k|q_i q_j|/r_ij (median over all trajectories 1e-4), while the unclipped ones
keep |ΔP| ≲ 3e-14. Switching the clip off does not help: h = 1e-3 does not resolve encounters closer than
≈ 0.06 (h/τ > 0.1 with τ = √(r³/2k)); momentum is then exact (|ΔP| ≲ 1e-12) but energy errors reach
1e3. ``simulate(..., diagnostics=True)`` returns per trajectory the number of clipped force evaluations
(``clip_steps``) and the minimum pair distance (``min_distance``), and :meth:`Charged.clip_report` turns
them into the fraction of trajectories with clip events and the momentum / energy errors with and
without them; ``simulate`` also logs the fraction at INFO level.

What EGNN's generator does (``n_body_system/dataset/synthetic_sim.py``, class ``ChargedParticlesSim``,
called by ``generate_dataset.py`` with its defaults n_balls = 5, vel_norm = 0.5, noise_var = 0,
``sample_trajectory(T=5000, sample_freq=100)``; GeoTDM's ``datasets/datagen/synthetic_sim.py`` holds the
same class, run by its ``gen_data.sh`` with seed 43 for 10,000/2,000/2,000 trajectories, and its configs
keep the first 30 frames, ``span: 30``, conditioning on 10 and generating 20):

* ``__init__``: Δt = ``_delta_T`` = 0.001, ``_max_F`` = 0.1/Δt, ``loc_std`` = 1·(n_balls/5)^{1/3},
  interaction strength 1, ``box_size`` = 5, dimension 3;
* ``sample_trajectory``: charges from {−1, 0, +1} with probabilities (½, 0, ½) (returned ``[K, 1]``);
  ``edges`` = q qᵀ; positions ``randn(3, K)``·loc_std; velocities ``randn(3, K)`` rescaled to norm 0.5;
* ``_clamp`` (walls at ``box_size`` = 5) is applied only to the initial state, reflecting a coordinate
  beyond ±5 (probability ≈ 15 × 5.7e-7 ≈ 1e-5 per trajectory); the clamp inside the loop is commented
  out, so there are no walls in the dynamics. We apply no walls at all;
* r_ij² is computed as |x_i|² + |x_j|² − 2 x_i·x_j (cancellation-prone); we use the differences;
* the force sum is clipped per component at ±100 and used as the acceleration (unit masses);
* the first kick is a *full* step, v ← v₀ + Δt F(x₀), although commented "half step leapfrog"; then for
  i = 1 … T−1: x ← x + Δt v; every 100th step (x, v) is saved; v ← v + Δt F(x). So the saved velocity is
  the half-step velocity v_{i−½}, half a step (5e-4) *behind* the saved positions, and the positions are
  those of a synchronous leapfrog started from (x₀, v₀ + ½Δt a(x₀)), an O(Δt) perturbation of the drawn
  velocity;
* the initial state is written to frame 0 but the save counter starts at 0, so it is overwritten at
  i = 100: the saved frames are steps 100, 200, …, 4900, i.e. t = 0.1, …, 4.9 (49 frames; step 5000 is
  never reached). The initial condition is not in EGNN's data;
* it uses the legacy global ``np.random`` state and one trajectory per call, so its arrays cannot be
  reproduced bit for bit; only the distribution is matched.

Deviations here, on purpose: positions and velocities at the same instants (kick–drift–kick), first
frame at t = 0 (the drawn initial condition, with the drawn velocity), no initial clamp, direct pair
differences. Otherwise the force law (including the clip), the step and the frame spacing are EGNN's.

Files (``physdiff simulate charged``, :mod:`physdiff.data.particles_h5`): the charges are the dataset
``charges`` ``[N, K]`` (``per_trajectory``: the physics methods take them as the keyword ``charges``, laid out
like the masses; only ±1 is accepted, ``allowed_charges``), the clip counts the dataset ``clip_steps`` ``[N]``,
and the attributes hold the settings (``clip_force = None`` round-trips), the floors over all trajectories
and, from ``clip_steps``, ``clip_fraction`` and the floors over the unclipped / clipped ones
(``floor_<metric>_unclipped`` ≈ round-off for momentum). The task checks priors against the ground truth on
the unclipped trajectories only, where the laws hold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from physdiff.physics import particles as phys
from physdiff.progress import progress_bar
from physdiff.systems.five_spring import leapfrog_kdk_step
from physdiff.systems.particle_system import Array, ParticleSystem

__all__ = ["Charged", "PairwiseCoulomb"]

logger = logging.getLogger(__name__)

# Trajectories integrated together: the arrays of a step then stay in cache (≈ 2× faster than 10,000 at
# once). The results do not depend on it (every trajectory's arithmetic is independent of the others).
_CHUNK = 2048


class PairwiseCoulomb:
    """Accelerations a = clip(F)/m with F_i = Σ_{j≠i} k q_i q_j (R_i − R_j)/r_ij³ over the pairs i < j (numpy).

    Works on the trajectory-last layout ``[K, D, B]`` (every elementwise operation then runs over the B
    trajectories contiguously, ≈ 4× faster than ``[B, K, D]``); the sums over D and over pairs are explicit
    additions in a fixed order (no BLAS, no einsum), so a trajectory's bits depend neither on the thread
    count nor on the other trajectories of the batch. ``clip`` clips every component of F to [−clip, clip]
    (EGNN's ``_max_F``) or is ``None``. Each call also records, per trajectory, the minimum squared pair
    distance (``min_r2``) and whether some component was clipped (``clip_steps`` counts such force
    evaluations).

    Args:
        q: charges ``[B, K]``.
        m: masses ``[B, K]``.
        k: interaction strength.
        clip: the per-component force clip, or ``None``.
    """

    def __init__(self, q: np.ndarray, m: np.ndarray, k: float, clip: float | None) -> None:
        B, K = q.shape
        self.i, self.j = np.triu_indices(K, k=1)
        self.pairs = [(int(i), int(j)) for i, j in zip(self.i, self.j, strict=True)]
        self.kqq = (k * q[:, self.i] * q[:, self.j]).T[:, None, :].copy()  # [P, 1, B]
        self.inv_m = (1.0 / m).T[:, None, :].copy()  # [K, 1, B]
        self.clip = None if clip is None else float(clip)
        self.min_r2 = np.full(B, np.inf)
        self.clip_steps = np.zeros(B, dtype=np.int64)

    def __call__(self, R: np.ndarray) -> np.ndarray:
        """Accelerations ``[K, D, B]`` at positions ``R`` ``[K, D, B]``."""
        d = R[self.i] - R[self.j]  # [P, D, B], R_i − R_j
        r2 = d[:, 0] * d[:, 0]  # explicit sum over D: the same bits whatever the batch size
        for c in range(1, d.shape[1]):
            r2 += d[:, c] * d[:, c]
        np.minimum(self.min_r2, r2.min(0), out=self.min_r2)
        d *= self.kqq / (r2 * np.sqrt(r2))[:, None, :]  # force of j on i
        F = np.zeros(R.shape)
        for p, (i, j) in enumerate(self.pairs):
            F[i] += d[p]
            F[j] -= d[p]
        if self.clip is not None:
            self.clip_steps += (np.abs(F) > self.clip).any((0, 1))
            np.clip(F, -self.clip, self.clip, out=F)
        F *= self.inv_m
        return F


@dataclass
class Charged(ParticleSystem):
    """K charged particles of charge ±1 (see the module docstring for equations, integrator and EGNN)."""

    name: ClassVar[str] = "charged"
    DEFAULT_CONSTANTS: ClassVar[dict[str, float]] = {"dt": 0.1, "k": 1.0}
    CONSTANT_DOCS: ClassVar[dict[str, str]] = {
        "dt": "time between saved frames (100 leapfrog steps of 1e-3)",
        "k": "interaction strength k (Coulomb constant)",
    }
    has_edges: ClassVar[bool] = False
    per_trajectory: ClassVar[tuple[str, ...]] = ("charges",)
    #: the charges a data file of this system may hold (EGNN's ±1; validated on read and write)
    allowed_charges: ClassVar[tuple[float, ...]] = (-1.0, 1.0)

    constants: dict[str, float] = field(default_factory=dict)
    n_particles: int = 5
    n_dims: int = 3
    n_frames: int = 49
    substeps: int = 100
    loc_std: float = 1.0
    vel_norm: float = 0.5
    clip_force: float | None = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {self.substeps}")
        if self.n_particles < 2:
            raise ValueError(f"n_particles must be >= 2, got {self.n_particles}")
        if self.clip_force is not None and not self.clip_force > 0:
            raise ValueError(f"clip_force must be > 0 or None, got {self.clip_force}")
        if not self.loc_std > 0 or not self.vel_norm >= 0:
            raise ValueError(f"need loc_std > 0 and vel_norm >= 0, got {self.loc_std}, {self.vel_norm}")

    # ---------------------------------------------------------------------------------------- physics
    @staticmethod
    def _charges(charges: Array | None) -> Array:
        if charges is None:
            raise ValueError(
                "charged: the particle charges `charges` [..., K] are required (keyword argument; laid out "
                "like the masses, e.g. charges[:, None, :] for R of shape [N, L, K, D])"
            )
        return charges

    def potential_energy(
        self, R: Array, m: Array | float, edges: Array | None = None, *, charges: Array | None = None
    ) -> Array:
        """U = Σ_{i<j} k q_i q_j / r_ij (``m`` and ``edges`` unused; ``charges`` required)."""
        return phys.coulomb_potential(R, self._charges(charges), self.constants["k"])

    def forces(self, R: Array, m: Array | float, edges: Array | None = None, *, charges: Array | None = None) -> Array:
        """F_i = Σ_{j≠i} k q_i q_j (R_i − R_j)/r_ij³, unclipped (``m``, ``edges`` unused; ``charges`` required)."""
        return phys.coulomb_forces(R, self._charges(charges), self.constants["k"])

    def total_energy(
        self, R: Array, V: Array, m: Array | float, edges: Array | None = None, *, charges: Array | None = None
    ) -> Array:
        """E = T(V) + U(R), shape ``[...]`` (``charges`` required)."""
        return self.kinetic_energy(V, m) + self.potential_energy(R, m, edges, charges=charges)

    def newton_residual(
        self,
        R: Array,
        m: Array | float,
        dt: float | None = None,
        edges: Array | None = None,
        *,
        charges: Array | None = None,
    ) -> Array:
        """m a_l − F(R_l) on interior frames (unclipped F; ``charges`` required, laid out like ``m``)."""
        q = self._charges(charges)
        step = self.dt if dt is None else float(dt)
        return phys.newton_residual(R, m, step, lambda X: self.forces(X, m, edges, charges=q))

    # -------------------------------------------------------------------------------------- simulator
    def initial_conditions(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        """EGNN initial conditions: charges ``[n, K]`` (±1), R₀, V₀ ``[n, K, D]``, masses ``[n, K]``."""
        K, D = self.n_particles, self.n_dims
        charges = np.where(rng.random((n, K)) < 0.5, -1.0, 1.0)
        R = (self.loc_std * (K / 5.0) ** (1.0 / 3.0)) * rng.standard_normal((n, K, D))
        V = rng.standard_normal((n, K, D))
        V *= self.vel_norm / np.linalg.norm(V, axis=-1, keepdims=True)
        return charges, R, V, np.ones((n, K))

    def integrate(
        self,
        R0: np.ndarray,
        V0: np.ndarray,
        charges: np.ndarray,
        masses: np.ndarray | None = None,
        *,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """Integrate given initial conditions R₀, V₀ ``[n, K, D]`` with charges (and masses) ``[n, K]``.

        Returns ``positions``, ``velocities`` ``[n, L, K, D]``, ``clip_steps`` ``[n]`` (int64: force
        evaluations at which some component was clipped; always 0 for ``clip_force=None``) and
        ``min_distance`` ``[n]`` (the minimum pair distance over every force evaluation).
        """
        R = np.array(R0, dtype=np.float64)
        V = np.array(V0, dtype=np.float64)
        q = np.asarray(charges, dtype=np.float64)
        m = np.ones(q.shape) if masses is None else np.asarray(masses, dtype=np.float64)
        if R.ndim != 3 or V.shape != R.shape or q.shape != R.shape[:2] or m.shape != q.shape:
            raise ValueError(
                f"need R0, V0 [n, K, D] and charges, masses [n, K]; got {R.shape}, {V.shape}, {q.shape}, {m.shape}"
            )
        n = R.shape[0]
        out = {
            "positions": np.empty((n, self.n_frames, *R.shape[1:])),
            "velocities": np.empty((n, self.n_frames, *R.shape[1:])),
            "clip_steps": np.zeros(n, dtype=np.int64),
            "min_distance": np.empty(n),
        }
        pbar = None
        if progress:
            pbar = progress_bar(-(-n // _CHUNK) * (self.n_frames - 1), desc=self.name)
        try:
            for start in range(0, n, _CHUNK):
                part = slice(start, min(start + _CHUNK, n))
                self._integrate_chunk(R[part], V[part], q[part], m[part], {k: v[part] for k, v in out.items()}, pbar)
        finally:
            if pbar is not None:
                pbar.close()
        return out

    def _integrate_chunk(
        self, R: np.ndarray, V: np.ndarray, q: np.ndarray, m: np.ndarray, out: dict[str, np.ndarray], pbar: Any
    ) -> None:
        """Integrate one chunk of trajectories into the views ``out`` (see :meth:`integrate`)."""
        h = self.dt / self.substeps
        accel = PairwiseCoulomb(q, m, self.constants["k"], self.clip_force)
        Rs, Vs = out["positions"], out["velocities"]
        Rs[:, 0], Vs[:, 0] = R, V
        R = np.ascontiguousarray(R.transpose(1, 2, 0))  # [K, D, n]: trajectories last (PairwiseCoulomb)
        V = np.ascontiguousarray(V.transpose(1, 2, 0))
        A = accel(R)
        for frame in range(1, self.n_frames):
            for _ in range(self.substeps):
                A = leapfrog_kdk_step(R, V, A, h, accel)
            Rs[:, frame], Vs[:, frame] = R.transpose(2, 0, 1), V.transpose(2, 0, 1)
            if pbar is not None:
                pbar.update(1)
        out["clip_steps"][:] = accel.clip_steps
        out["min_distance"][:] = np.sqrt(accel.min_r2)

    def simulate(
        self, n: int, seed: int, *, progress: bool = False, diagnostics: bool = False, **settings: Any
    ) -> dict[str, np.ndarray]:
        """Simulate ``n`` trajectories: ``positions``, ``velocities`` ``[n, L, K, D]``, ``masses`` ``[n, K]``
        (ones) and ``charges`` ``[n, K]`` (±1), float64, byte-identical for the same seed and settings.

        With ``diagnostics=True`` the dict also holds ``clip_steps`` ``[n]`` (int64) and ``min_distance``
        ``[n]`` (see :meth:`integrate` and :meth:`clip_report`). The fraction of trajectories with clip
        events is logged at INFO level either way.
        """
        if settings:
            return self.with_settings(**settings).simulate(n, seed, progress=progress, diagnostics=diagnostics)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(seed)
        charges, R, V, m = self.initial_conditions(rng, n)
        run = self.integrate(R, V, charges, m, progress=progress)
        clipped = int((run["clip_steps"] > 0).sum())
        logger.info(
            "%s: force clip (±%s) active in %d/%d trajectories: momentum and energy are inexact there",
            self.name,
            self.clip_force,
            clipped,
            n,
        )
        out = {"positions": run["positions"], "velocities": run["velocities"], "masses": m, "charges": charges}
        if diagnostics:
            out["clip_steps"] = run["clip_steps"]
            out["min_distance"] = run["min_distance"]
        return out

    # ------------------------------------------------------------------------------------ diagnostics
    def relative_energy_drift(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """max_l |E_l − E_0| / S_0 per trajectory ``[n]``, with the scale S_0 = T_0 + Σ_{i<j} k|q_i q_j|/r_ij
        at frame 0 (E itself can be close to zero for mixed charges, so it is no scale)."""
        R, V = data["positions"], data["velocities"]
        m, q = data["masses"][:, None], data["charges"][:, None]
        E = np.asarray(self.total_energy(R, V, m, charges=q))
        T0 = np.asarray(self.kinetic_energy(V[:, 0], data["masses"]))
        U_abs0 = np.asarray(phys.coulomb_potential(R[:, 0], np.abs(data["charges"]), self.constants["k"]))
        return np.abs(E - E[:, :1]).max(1) / (T0 + U_abs0)

    def momentum_error(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """max_l |P_l − P_0| (Euclidean norm) per trajectory ``[n]``."""
        P = np.asarray(self.momentum(data["velocities"], data["masses"][:, None]))
        return np.linalg.norm(P - P[:, :1], axis=-1).max(1)

    def clip_report(self, data: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The floor that the force clip puts on the data, from ``simulate(..., diagnostics=True)``.

        Returns ``n``, ``clipped_trajectories`` and ``clip_fraction`` (trajectories with at least one
        clipped force evaluation), ``clipped_steps_mean`` (clipped evaluations per trajectory), and the
        maxima of :meth:`momentum_error` and :meth:`relative_energy_drift` over the clipped and unclipped
        trajectories (``nan`` where there are none), plus ``min_distance``, the smallest pair distance.
        """
        if "clip_steps" not in data:
            raise KeyError("clip_report needs 'clip_steps': simulate with diagnostics=True")
        steps = np.asarray(data["clip_steps"])
        clipped = steps > 0
        dP = self.momentum_error(data)
        dE = self.relative_energy_drift(data)

        def worst(x: np.ndarray, mask: np.ndarray) -> float:
            return float(x[mask].max()) if mask.any() else float("nan")

        return {
            "n": float(steps.size),
            "clipped_trajectories": float(clipped.sum()),
            "clip_fraction": float(clipped.mean()),
            "clipped_steps_mean": float(steps.mean()),
            "momentum_error_clipped": worst(dP, clipped),
            "momentum_error_unclipped": worst(dP, ~clipped),
            "energy_drift_clipped": worst(dE, clipped),
            "energy_drift_unclipped": worst(dE, ~clipped),
            "min_distance": float(np.min(data["min_distance"])) if "min_distance" in data else float("nan"),
        }
