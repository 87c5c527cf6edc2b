"""Charged-particle system (EGNN / GeoTDM data): Coulomb physics, determinism, conservation, an independent
re-integration and the floor that EGNN's force clip puts on the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from physdiff.physics import particles as P
from physdiff.systems.charged import Charged, PairwiseCoulomb

EPS = np.finfo(np.float64).eps
N_SIM = 64  # trajectories of the module fixtures (≈ 0.2 s each on one core)


@pytest.fixture(scope="module")
def clipped() -> dict[str, np.ndarray]:
    """Default settings (EGNN's clip at ±100)."""
    return Charged().simulate(N_SIM, seed=11, diagnostics=True)


@pytest.fixture(scope="module")
def unclipped() -> dict[str, np.ndarray]:
    """The same initial conditions without the clip."""
    return Charged(clip_force=None).simulate(N_SIM, seed=11, diagnostics=True)


# ------------------------------------------------------------------------------------------ physics
def test_coulomb_forces_are_minus_gradient_of_potential() -> None:
    gen = torch.Generator().manual_seed(0)
    R = torch.randn(2, 3, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.randn(2, 1, 5, generator=gen, dtype=torch.float64)  # any real charges, broadcast over frames
    U = P.coulomb_potential(R, q, k=0.7)
    assert U.shape == (2, 3)
    (grad,) = torch.autograd.grad(U.sum(), R)
    F = P.coulomb_forces(R, q, k=0.7)
    assert F.shape == R.shape
    # Both sides are sums of O(K) terms of size |k q q / r²|: float64 round-off ≲ K·ε relative.
    scale = F.abs().max()
    assert ((F + grad).abs().max() / scale).item() < 1e-10
    # Pairwise antisymmetric: Σ_i F_i = 0 up to round-off.
    assert (F.sum(-2).abs().max() / scale).item() < 1e-13


@pytest.mark.parametrize("qq", [1.0, -1.0])
def test_like_charges_repel_opposite_attract(qq: float) -> None:
    r, k = 0.8, 1.3
    R = np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0]])
    q = np.array([1.0, qq])
    F = P.coulomb_forces(R, q, k)  # numpy in, numpy out
    assert isinstance(F, np.ndarray)
    # Closed form: F_0 = k q_0 q_1 (R_0 − R_1)/r³ = −k q_0 q_1/r² x̂, F_1 = −F_0.
    np.testing.assert_allclose(F[0], [-k * qq / r**2, 0.0, 0.0], rtol=1e-14)
    np.testing.assert_allclose(F[1], -F[0], rtol=1e-14)
    assert np.sign(F[1, 0]) == qq  # like (qq = +1): particle 1 pushed away (+x); opposite: pulled in
    np.testing.assert_allclose(P.coulomb_potential(R, q, k), k * qq / r, rtol=1e-14)


def test_system_physics_needs_charges() -> None:
    system = Charged()
    R = np.random.default_rng(0).standard_normal((2, 4, 5, 3))
    q = np.array([[1.0, -1, 1, 1, -1], [-1.0, -1, 1, -1, 1]])
    m = np.ones((2, 1, 5))
    for call in (
        lambda: system.potential_energy(R, m),
        lambda: system.forces(R, m),
        lambda: system.total_energy(R, R, m),
        lambda: system.newton_residual(R, m),
    ):
        with pytest.raises(ValueError, match="charges"):
            call()
    np.testing.assert_array_equal(system.forces(R, m, charges=q[:, None]), P.coulomb_forces(R, q[:, None]))
    assert system.potential_energy(R, m, charges=q[:, None]).shape == (2, 4)
    assert system.newton_residual(R, m, charges=q[:, None]).shape == (2, 2, 5, 3)


@pytest.mark.parametrize("clip", [None, 2.0])
def test_numpy_integrator_forces_match_torch(clip: float | None) -> None:
    rng = np.random.default_rng(1)
    R = rng.standard_normal((8, 5, 3))
    q = np.where(rng.random((8, 5)) < 0.5, -1.0, 1.0)
    m = rng.uniform(0.5, 2.0, (8, 5))
    accel = PairwiseCoulomb(q, m, 1.5, clip)
    F = P.coulomb_forces(R, q, 1.5)
    expected = F if clip is None else np.clip(F, -clip, clip)
    a = accel(np.ascontiguousarray(R.transpose(1, 2, 0))).transpose(2, 0, 1)  # layout [K, D, B]
    np.testing.assert_allclose(a, expected / m[..., None], rtol=1e-12, atol=1e-12)
    clipped = (np.abs(F) > clip).any((1, 2)) if clip is not None else np.zeros(8, bool)
    np.testing.assert_array_equal(accel.clip_steps, clipped)
    assert clip is None or clipped.any()


# ---------------------------------------------------------------------------------------- simulator
def test_shapes_initial_conditions_and_determinism(clipped) -> None:
    d = clipped
    assert d["positions"].shape == d["velocities"].shape == (N_SIM, 49, 5, 3)
    assert d["masses"].shape == d["charges"].shape == (N_SIM, 5)
    for key in ("positions", "velocities", "masses", "charges", "min_distance"):
        assert d[key].dtype == np.float64
    assert (d["masses"] == 1).all()
    assert set(np.unique(d["charges"])) == {-1.0, 1.0}
    assert 0.35 < (d["charges"] > 0).mean() < 0.65
    np.testing.assert_allclose(np.linalg.norm(d["velocities"][:, 0], axis=-1), 0.5)  # |v_k| = vel_norm
    assert 0.85 < d["positions"][:, 0].std() < 1.15  # N(0, 1) per component, 960 samples
    again = Charged().simulate(N_SIM, seed=11, diagnostics=True)
    for key in d:
        assert d[key].tobytes() == again[key].tobytes(), key
    assert set(Charged().simulate(2, seed=11)) == {"positions", "velocities", "masses", "charges"}
    other = Charged(n_frames=3).simulate(N_SIM, seed=12)
    assert not np.array_equal(other["positions"][:, 0], d["positions"][:, 0])


def test_chunking_does_not_change_results(monkeypatch) -> None:
    """Trajectories are integrated in chunks; a trajectory's bits do not depend on its companions."""
    import physdiff.systems.charged as charged_module

    system = Charged(n_frames=4)
    whole = system.simulate(12, seed=2, diagnostics=True)
    monkeypatch.setattr(charged_module, "_CHUNK", 5)
    chunked = system.simulate(12, seed=2, diagnostics=True)
    for key in whole:
        assert whole[key].tobytes() == chunked[key].tobytes(), key


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="clip_force"):
        Charged(clip_force=0.0)
    with pytest.raises(ValueError, match="unknown constant"):
        Charged(constants={"G": 1.0})
    assert Charged().constants == {"dt": 0.1, "k": 1.0}
    assert Charged().with_settings(clip_force=None).clip_force is None


def test_momentum_and_energy_conserved_without_clip(unclipped) -> None:
    d, system = unclipped, Charged(clip_force=None)
    assert (d["clip_steps"] == 0).all()
    h = system.dt / system.substeps
    n_steps = (system.n_frames - 1) * system.substeps
    K, k = system.n_particles, system.constants["k"]
    r_min = d["min_distance"]
    # Momentum: the pair forces cancel exactly in exact arithmetic; each step rounds every velocity
    # component by ≲ ε (|V| + h|F|), |F| ≤ k (K−1)/r_min², so after n steps |ΔP| ≤ n ε K (Σ|V| + h|F|max).
    v_sum = np.abs(d["velocities"]).sum((-1, -2)).max(1)
    bound = n_steps * EPS * K * (v_sum + h * k * (K - 1) / r_min**2)
    dP = system.momentum_error(d)
    assert (dP <= bound).all()
    assert dP.max() < 1e-11
    # Energy: leapfrog's error is O((h/τ)²) relative to the energy scale of the fastest motion. A pair at
    # distance r has time scale τ = √(r³/(2k)) (relative acceleration 2k/r² for unit masses) and energy
    # k/r, so |E_l − E_0| ≤ C (h/τ_min)² k/r_min with C = 1 (measured max ≈ 0.4 over 200 trajectories),
    # valid where leapfrog is in its asymptotic regime, h/τ_min < 0.1 (r_min ≳ 0.06). Closer encounters
    # are not resolved by h = 1e-3 without the clip; they are what the clip exists for.
    tau = np.sqrt(r_min**3 / (2 * k))
    resolved = h / tau < 0.1
    assert resolved.sum() >= N_SIM // 2
    T0 = system.kinetic_energy(d["velocities"][:, 0], d["masses"])
    U_abs0 = P.coulomb_potential(d["positions"][:, 0], np.abs(d["charges"]), k)
    dE_abs = system.relative_energy_drift(d) * (T0 + U_abs0)
    assert (dE_abs[resolved] <= (h / tau[resolved]) ** 2 * k / r_min[resolved]).all()
    # Without any close encounter (r_min > 0.3: (h/τ)² < 7.4e-5) the relative drift is tiny.
    far = r_min > 0.3
    assert far.any() and system.relative_energy_drift(d)[far].max() < 1e-4


def test_independent_reintegration_second_order() -> None:
    """Re-integrate one encounter-free trajectory with DOP853 and check leapfrog's O(h²) global error."""
    system = Charged(clip_force=None, n_frames=31)  # GeoTDM uses 30 frames; t = 0 … 3.0 here
    d = system.simulate(16, seed=7, diagnostics=True)
    # An encounter-free trajectory: every pair stays farther than 0.3 (τ_min = √(0.3³/2) ≈ 0.12 ≫ h).
    b = int(np.flatnonzero(d["min_distance"] > 0.3)[0])
    R0, V0, q = d["positions"][b : b + 1, 0], d["velocities"][b : b + 1, 0], d["charges"][b : b + 1]
    K, D, L = 5, 3, system.n_frames

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        return np.concatenate([y[K * D :], P.coulomb_forces(y[: K * D].reshape(K, D), q[0]).ravel()])

    ts = np.arange(L) * system.dt
    y0 = np.concatenate([R0.ravel(), V0.ravel()])
    sol = solve_ivp(rhs, (0.0, ts[-1]), y0, method="DOP853", rtol=1e-10, atol=1e-12, t_eval=ts)
    assert sol.success
    ref = np.concatenate([sol.y[: K * D].T.reshape(L, K, D), sol.y[K * D :].T.reshape(L, K, D)], -1)

    def error(substeps: int) -> tuple[float, np.ndarray]:
        run = system.with_settings(substeps=substeps).integrate(R0, V0, q)
        X = np.concatenate([run["positions"][0], run["velocities"][0]], -1)
        return float(np.abs(X - ref).max()), X

    # The simulator's own frames (h = 1e-3) are the substeps = 100 run, positions and velocities both.
    e_h, X_h = error(100)
    assert np.array_equal(X_h, np.concatenate([d["positions"][b], d["velocities"][b]], -1))
    e_2h, _ = error(50)
    e_half, X_half = error(200)
    # Second order: halving h divides the global error by 4 (the reference error, ~1e-10, is negligible).
    assert 3.5 < e_2h / e_h < 4.5 and 3.5 < e_h / e_half < 4.5
    # Richardson: e_h ≈ C h², X_h − X_{h/2} ≈ ¾ C h², so e_h ≈ (4/3)|X_h − X_{h/2}|; allow 1.5×.
    assert e_h <= 1.5 * (4 / 3) * np.abs(X_h - X_half).max() + 1e-9
    assert e_h < 1e-6
    # The clip never acts at r > 0.3 (|F| ≤ 4/0.09 < 100): the default system gives the same frames.
    clipped_run = Charged(n_frames=31).integrate(R0, V0, q)
    assert clipped_run["clip_steps"][0] == 0
    np.testing.assert_array_equal(clipped_run["positions"][0], X_h[..., :D])


def test_egnn_scheme_equivalence() -> None:
    """The module docstring's account of EGNN's loop: full first kick, drift, save, kick. Its positions
    equal a synchronous leapfrog from (x₀, v₀ + ½h a(x₀)), one frame later, and its saved velocities are
    the half-step velocities V − ½h a(R)."""
    system = Charged(n_frames=11)  # 10 EGNN frames: steps 100 … 1000
    charges, R0, V0, m = system.initial_conditions(np.random.default_rng(3), 8)
    h, sample = system.dt / system.substeps, system.substeps
    kdb = lambda X: np.ascontiguousarray(X.transpose(1, 2, 0))  # [B, K, D] → PairwiseCoulomb's [K, D, B]
    bkd = lambda X: X.transpose(2, 0, 1)
    accel = PairwiseCoulomb(charges, m, system.constants["k"], system.clip_force)
    x, v = R0.copy(), V0 + h * bkd(accel(kdb(R0)))
    egnn_x, egnn_v = [], []
    for i in range(1, (system.n_frames - 1) * sample + 1):
        x = x + h * v
        if i % sample == 0:
            egnn_x.append(x.copy())
            egnn_v.append(v.copy())
        v = v + h * bkd(accel(kdb(x)))
    egnn_x, egnn_v = np.stack(egnn_x, 1), np.stack(egnn_v, 1)
    a0 = bkd(PairwiseCoulomb(charges, m, system.constants["k"], system.clip_force)(kdb(R0)))
    run = system.integrate(R0, V0 + 0.5 * h * a0, charges, m)
    ok = run["min_distance"] > 0.2  # where round-off is not amplified by a close encounter
    assert ok.sum() >= 3
    np.testing.assert_allclose(run["positions"][ok, 1:], egnn_x[ok], atol=1e-10)
    a = PairwiseCoulomb(charges, m, system.constants["k"], system.clip_force)
    a_frames = np.stack([bkd(a(kdb(run["positions"][:, l]))) for l in range(1, system.n_frames)], 1)
    np.testing.assert_allclose(run["velocities"][ok, 1:] - 0.5 * h * a_frames[ok], egnn_v[ok], atol=1e-10)


def test_clip_floor_is_reported(clipped, unclipped) -> None:
    system = Charged()
    report = system.clip_report(clipped)
    # EGNN's clip (|F_component| > 100, i.e. a pair closer than ≈ 0.1) is active in a large fraction of
    # trajectories (≈ 0.48 at n = 200, seed 0).
    assert report["n"] == N_SIM
    assert report["clipped_trajectories"] == (clipped["clip_steps"] > 0).sum() >= 5
    assert 0.05 < report["clip_fraction"] < 0.95
    hit = clipped["clip_steps"] > 0
    assert (clipped["min_distance"][hit] < 0.2).all()  # |F| > 100 needs r < √(K−1)/10 = 0.2
    # Where the clip acts, momentum is not conserved (far above the round-off floor of the unclipped run);
    # where it does not, the trajectory is exactly the unclipped one.
    dP_clip, dP_free = system.momentum_error(clipped), system.momentum_error(unclipped)
    assert dP_clip[hit].min() > 1e3 * dP_free.max()
    assert report["momentum_error_clipped"] > 1e-6 > 1e-11 > report["momentum_error_unclipped"]
    assert np.array_equal(clipped["positions"][~hit], unclipped["positions"][~hit])
    assert np.isfinite(report["energy_drift_clipped"]) and report["energy_drift_unclipped"] >= 0
    no_clip = Charged(clip_force=None).clip_report(unclipped)
    assert no_clip["clip_fraction"] == 0 and no_clip["momentum_error_unclipped"] < 1e-11
    with pytest.raises(KeyError, match="diagnostics"):
        system.clip_report(Charged().simulate(2, seed=0))
