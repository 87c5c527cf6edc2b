"""Conservation, reversibility, convergence order and determinism of the particle simulators."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from physdiff.physics import particles as P
from physdiff.systems.charged import Charged
from physdiff.systems.five_spring import FiveSpring, leapfrog_kdk_step
from physdiff.systems.registry import PARTICLE_SYSTEMS, SIMULATED_SYSTEMS, get_system
from physdiff.systems.three_body import PairwiseGravity, ThreeBody, yoshida4_step

# Small, fast three-body settings (fewer frames, small batches); the physics is the default one.
FAST_3B = {"n_frames": 12, "batch_size": 64}


@pytest.fixture(scope="module")
def three_body_data() -> dict[str, np.ndarray]:
    return get_system("three-body", **FAST_3B).simulate(24, seed=3)


@pytest.fixture(scope="module")
def spring_data() -> dict[str, np.ndarray]:
    return get_system("five-spring").simulate(64, seed=5)


def _rel_drift(system, d) -> np.ndarray:
    m = d["masses"][:, None]
    e = d["edges"][:, None] if "edges" in d else None
    E = system.total_energy(d["positions"], d["velocities"], m, e)
    return np.abs(E - E[:, :1]).max(1) / np.abs(E[:, 0])


def test_registry() -> None:
    assert PARTICLE_SYSTEMS == ("three-body", "five-spring", "charged", "generic")
    assert SIMULATED_SYSTEMS == ("three-body", "five-spring", "charged")  # generic reads a user's file
    assert isinstance(get_system("three-body"), ThreeBody)
    assert isinstance(get_system("five-spring"), FiveSpring)
    assert isinstance(get_system("charged"), Charged)
    with pytest.raises(ValueError, match="three-body, five-spring, charged, generic"):
        get_system("four-body")
    with pytest.raises(ValueError, match="unknown constant"):
        get_system("three-body", constants={"kappa": 1.0})
    with pytest.raises(ValueError, match="unknown setting"):
        get_system("five-spring").with_settings(walls=True)


# ------------------------------------------------------------------------------------------- five-spring
def test_spring_shapes_and_initial_conditions(spring_data) -> None:
    d = spring_data
    assert d["positions"].shape == d["velocities"].shape == (64, 49, 5, 2)
    assert d["positions"].dtype == np.float64
    assert d["masses"].shape == (64, 5) and (d["masses"] == 1).all()
    e = d["edges"]
    assert e.shape == (64, 5, 5)
    assert (e == e.transpose(0, 2, 1)).all() and not np.diagonal(e, axis1=1, axis2=2).any()
    assert 0.35 < e[:, np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]].mean() < 0.65
    np.testing.assert_allclose(np.linalg.norm(d["velocities"][:, 0], axis=-1), 0.5)  # NRI: |v_k| = 0.5


def test_spring_energy_and_momentum_conserved(spring_data) -> None:
    system = get_system("five-spring")
    assert _rel_drift(system, spring_data).max() < 1e-6
    Pm = system.momentum(spring_data["velocities"], spring_data["masses"][:, None])
    assert np.abs(Pm - Pm[:, :1]).max() < 1e-13  # exact up to round-off: no walls, no clipping


def test_spring_frames_are_synchronous_and_start_at_zero(spring_data) -> None:
    """The saved V is dR/dt at the same instant: compare with a centred difference of R."""
    d = spring_data
    dt = 0.1
    v_fd = (d["positions"][:, 2:] - d["positions"][:, :-2]) / (2 * dt)
    assert np.abs(v_fd - d["velocities"][:, 1:-1]).max() < 5e-3  # O(dt²) ≈ 1e-3 (|v'''| small)
    again = get_system("five-spring", n_frames=3).simulate(64, seed=5)
    np.testing.assert_array_equal(again["positions"][:, 0], d["positions"][:, 0])


def test_simulators_are_deterministic(spring_data, three_body_data) -> None:
    d2 = get_system("five-spring").simulate(64, seed=5)
    for k in spring_data:
        assert spring_data[k].tobytes() == d2[k].tobytes()
    d3 = get_system("three-body", **FAST_3B).simulate(24, seed=3)
    for k in three_body_data:
        assert three_body_data[k].tobytes() == d3[k].tobytes()
    other = get_system("five-spring").simulate(64, seed=6)
    assert not np.array_equal(other["positions"], spring_data["positions"])


# -------------------------------------------------------------------------------------------- three-body
def test_three_body_invariants(three_body_data) -> None:
    system = ThreeBody(**FAST_3B)
    d = three_body_data
    assert d["positions"].shape == (24, 12, 3, 3)
    m = d["masses"][:, None]
    drift = _rel_drift(system, d)
    assert drift.max() < system.max_energy_drift
    assert drift.max() < 1e-6  # the kept trajectories sit far below the threshold
    E = system.total_energy(d["positions"], d["velocities"], m)
    assert (E < 0).all()
    assert np.abs(system.momentum(d["velocities"], m)).max() < 1e-13
    com = (m[..., None] * d["positions"]).sum(2) / m.sum(-1)[..., None]
    assert np.abs(com).max() < 1e-13
    r = P.pairwise_distances(d["positions"])
    assert np.where(np.eye(3, dtype=bool), np.inf, r).min() >= system.min_distance
    assert np.linalg.norm(d["positions"], axis=-1).max() <= system.max_radius
    # the bodies visibly move over the trajectory
    assert np.linalg.norm(d["positions"][:, -1] - d["positions"][:, 0], axis=-1).mean() > 0.1


def test_three_body_two_dimensions_and_prefix() -> None:
    system = get_system("three-body", n_dims=2, n_frames=6, batch_size=32)
    d = system.simulate(5, seed=0)
    assert d["positions"].shape == (5, 6, 3, 2)
    more = system.simulate(9, seed=0)
    np.testing.assert_array_equal(more["positions"][:5], d["positions"])


def test_three_body_rejects_invalid() -> None:
    system = ThreeBody(**FAST_3B)
    R = np.zeros((2, 3, 3, 3))
    R[:, :, 0, 0], R[:, :, 1, 0], R[:, :, 2, 1] = -1.0, 1.0, 1.0
    V = np.zeros_like(R)
    m = np.ones((2, 3))
    R[1, 2, 1] = R[1, 2, 0] + 0.01  # close encounter in trajectory 1
    assert system.validity(R, V, m).tolist() == [True, False]
    V[0, 1:] = 0.1  # energy jump in trajectory 0
    assert not system.validity(R, V, m)[0]


# ------------------------------------------------------------------------------------------ integrators
def _spring_setup(n: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    fs = FiveSpring()
    edges, R, V, m = fs.initial_conditions(rng, n)
    lap = 0.1 * (edges.sum(-1)[..., None] * np.eye(5) - edges)
    return R, V, lambda X: -(lap @ X)


def _run_leapfrog(R, V, accel, h, steps):
    R, V = R.copy(), V.copy()
    A = accel(R)
    for _ in range(steps):
        A = leapfrog_kdk_step(R, V, A, h, accel)
    return R, V


def _gravity_setup():
    system = ThreeBody(batch_size=8)
    R, V, m = system.initial_conditions(np.random.default_rng(1), 8)
    return R, V, m


def _run_yoshida(R, V, accel, h, steps):
    R, V = R.copy(), V.copy()
    for _ in range(steps):
        yoshida4_step(R, V, h, accel)
    return R, V


def test_leapfrog_and_yoshida_time_reversible() -> None:
    R0, V0, accel = _spring_setup()
    R1, V1 = _run_leapfrog(R0, V0, accel, 1e-2, 300)
    R2, V2 = _run_leapfrog(R1, -V1, accel, 1e-2, 300)
    np.testing.assert_allclose(R2, R0, atol=1e-12)
    np.testing.assert_allclose(-V2, V0, atol=1e-12)

    R0, V0, m = _gravity_setup()
    accel = PairwiseGravity(m, 1.0)
    R1, V1 = _run_yoshida(R0, V0, accel, 1e-2, 50)
    R2, V2 = _run_yoshida(R1, -V1, accel, 1e-2, 50)
    np.testing.assert_allclose(R2, R0, atol=1e-10)
    np.testing.assert_allclose(-V2, V0, atol=1e-10)


def test_leapfrog_second_order() -> None:
    R0, V0, accel = _spring_setup()
    T = 2.0
    ref, _ = _run_leapfrog(R0, V0, accel, T / 4000, 4000)
    errs = [np.abs(_run_leapfrog(R0, V0, accel, T / s, s)[0] - ref).max() for s in (20, 40)]
    assert errs[0] / errs[1] == pytest.approx(4.0, rel=0.05)


def test_yoshida_fourth_order_against_dop853() -> None:
    R0, V0, m = _gravity_setup()
    R0, V0, m = R0[1:2], V0[1:2], m[1:2]  # a candidate without close encounter before T (r_min ≈ 0.8)
    accel = PairwiseGravity(m, 1.0)
    T = 0.5

    def rhs(_t, y):
        R = y[:9].reshape(1, 3, 3)
        V = y[9:].reshape(1, 3, 3)
        return np.concatenate([V.ravel(), accel(R).ravel()])

    sol = solve_ivp(rhs, (0, T), np.concatenate([R0.ravel(), V0.ravel()]), "DOP853", rtol=1e-13, atol=1e-13)
    ref = sol.y[:9, -1].reshape(1, 3, 3)
    errs = [np.abs(_run_yoshida(R0, V0, accel, T / s, s)[0] - ref).max() for s in (10, 20)]
    assert errs[0] / errs[1] == pytest.approx(16.0, rel=0.15)


def test_three_body_grouped_batches_equal_batch_by_batch() -> None:
    """Batches integrated together (after the first) give the same bits as one batch at a time: a data set
    is a prefix of a larger one even when the larger one needed several batches."""
    system = get_system("three-body", n_frames=6, batch_size=16)
    small = system.simulate(3, seed=4)  # one batch
    big = system.simulate(30, seed=4)  # several batches, integrated together after the first
    for key in small:
        assert small[key].tobytes() == big[key][:3].tobytes()
    # the second batch alone, simulated the old way (its own batch), is found in `big` in draw order
    rng = np.random.default_rng(4)
    draws = [system.initial_conditions(rng, 16) for _ in range(2)]
    R, _, valid = system._simulate_batch(*draws[1])
    first = system._simulate_batch(*draws[0])[2].sum()
    second = R[valid]
    n2 = min(len(second), 30 - first)
    np.testing.assert_array_equal(big["positions"][first : first + n2], second[:n2])


def test_five_spring_propagator_equals_stepping() -> None:
    """The frame-to-frame propagator (leapfrog's own matrix to the power `substeps`) equals 100 calls of the
    leapfrog step to round-off, and the simulated frames equal a step-by-step integration."""
    from physdiff.systems.five_spring import leapfrog_propagator

    fs = FiveSpring(n_frames=4)
    d = fs.simulate(8, seed=2)
    R, V = d["positions"][:, 0].copy(), d["velocities"][:, 0].copy()
    e = d["edges"]
    lap = 0.1 * (e.sum(-1)[..., None] * np.eye(5) - e)

    def accel(X):
        return -(lap @ X)

    A = accel(R)
    for frame in range(1, 4):
        for _ in range(fs.substeps):
            A = leapfrog_kdk_step(R, V, A, fs.dt / fs.substeps, accel)
        np.testing.assert_allclose(d["positions"][:, frame], R, rtol=0, atol=1e-12)
        np.testing.assert_allclose(d["velocities"][:, frame], V, rtol=0, atol=1e-12)
    P = leapfrog_propagator(lap, 1e-3, 7)  # an odd power: every branch of the binary powering
    S = np.concatenate([d["positions"][:, 0], d["velocities"][:, 0]], -2)
    R, V = d["positions"][:, 0].copy(), d["velocities"][:, 0].copy()
    A = accel(R)
    for _ in range(7):
        A = leapfrog_kdk_step(R, V, A, 1e-3, accel)
    np.testing.assert_allclose(P @ S, np.concatenate([R, V], -2), rtol=0, atol=1e-14)


def test_five_spring_floors_and_drift_equal_the_generic_code() -> None:
    """The plane-by-plane floors and drift of FiveSpring equal the generic ParticleSystem definitions to
    round-off, on perturbed trajectories (floors far above round-off), with non-unit masses and a
    non-symmetric adjacency (the energy uses (e + eᵀ)/2, the forces e itself)."""
    from physdiff.systems.particle_system import ParticleSystem

    fs = FiveSpring(n_frames=9, constants={"kappa": 0.3})
    d = fs.simulate(40, seed=4)
    rng = np.random.default_rng(0)
    R = d["positions"] + 1e-3 * rng.standard_normal(d["positions"].shape)
    V = d["velocities"] + 1e-3 * rng.standard_normal(d["velocities"].shape)
    m = rng.uniform(0.5, 2.0, d["masses"].shape)
    e = (rng.random(d["edges"].shape) < 0.5) * rng.uniform(0.5, 1.5, d["edges"].shape)
    e[:, np.arange(5), np.arange(5)] = 0.0
    fast = fs.conservation_errors(R, V, m, e)
    ref = ParticleSystem.conservation_errors(fs, R, V, m, e)
    assert fast.keys() == ref.keys()
    for key in ref:
        assert ref[key].shape == (40,) and ref[key].min() > 1e-6  # perturbed: floors well above round-off
        np.testing.assert_allclose(fast[key], ref[key], rtol=1e-9, atol=0, err_msg=key)
    E = fs.total_energy(R, V, m[:, None], e[:, None])
    drift = fs.relative_energy_drift({"positions": R, "velocities": V, "masses": m, "edges": e})
    np.testing.assert_allclose(drift, np.abs(E - E[:, :1]).max(1) / np.abs(E[:, 0]), rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="edges"):
        fs.conservation_errors(R, V, m, None)
    with pytest.raises(ValueError, match="unknown per-trajectory"):
        fs.conservation_errors(R, V, m, e, charges=m)
