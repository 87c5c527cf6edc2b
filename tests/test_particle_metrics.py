"""Particle metrics: zero where exact, known values on hand-perturbed predictions, floors, file evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from physdiff.data.particles_h5 import load_particles, simulate_to_file, write_particles
from physdiff.evaluation.particle_metrics import (
    CONSERVATION_KEYS,
    METRIC_KEYS,
    evaluate_files,
    floor_metrics,
    per_sample_metrics,
    summarize,
)
from physdiff.systems.registry import get_system


@pytest.fixture(scope="module")
def springs(tmp_path_factory):
    path = tmp_path_factory.mktemp("metrics") / "springs.h5"
    simulate_to_file("five-spring", path, 12, seed=2, n_frames=10)
    return path, load_particles(path)


def test_metric_keys_are_the_public_contract() -> None:
    assert METRIC_KEYS == ("traj_error", "vel_error", "energy_error", "momentum_error", "dynamic_error")
    assert CONSERVATION_KEYS == ("energy_error", "momentum_error", "dynamic_error")


def test_prediction_equal_to_reference(springs) -> None:
    _, ref = springs
    per = per_sample_metrics(ref.positions, ref.velocities, ref)
    assert set(per) == set(METRIC_KEYS)
    assert all(v.shape == (12,) for v in per.values())
    assert (per["traj_error"] == 0).all() and (per["vel_error"] == 0).all()
    floor = floor_metrics(ref)
    for key in CONSERVATION_KEYS:
        assert np.mean(per[key]) == pytest.approx(floor[key])
    assert floor["momentum_error"] < 1e-13
    assert floor["energy_error"] < 1e-7
    assert floor["dynamic_error"] < 1e-3


def test_hand_perturbed_values(springs) -> None:
    _, ref = springs
    N, L, K, D = ref.shape
    c = 0.3
    u = np.array([0.2, -0.1])
    pR = ref.positions.copy()
    pR[:, 1:, :, 0] += c  # rigid shift of the generated frames in x
    pV = ref.velocities.copy()
    pV[:, 1:] += u  # uniform velocity offset
    per = per_sample_metrics(pR, pV, ref)
    np.testing.assert_allclose(per["traj_error"], c / np.sqrt(D), rtol=1e-12)
    np.testing.assert_allclose(per["vel_error"], np.sqrt(np.square(u).mean()), rtol=1e-12)
    np.testing.assert_allclose(per["momentum_error"], K * np.linalg.norm(u), rtol=1e-10)

    # energy: independent numpy formula, E = ½ Σ m v² + ¼ κ Σ_{i≠j} e_ij r_ij² (a rigid shift keeps U)
    def energy(R, V, m, e):
        d = R[..., :, None, :] - R[..., None, :, :]
        return 0.5 * (m * (V**2).sum(-1)).sum(-1) + 0.25 * 0.1 * (e * (d**2).sum(-1)).sum((-1, -2))

    m, e = ref.masses, ref.edges
    E0 = energy(ref.positions[:, 0], ref.velocities[:, 0], m, e)
    E = energy(pR[:, 1:], pV[:, 1:], m[:, None], e[:, None])
    np.testing.assert_allclose(per["energy_error"], np.abs(E - E0[:, None]).mean(1), rtol=1e-10)

    # dynamic error of particles frozen at their initial positions: a = 0, residual = −F(R₀)
    frozen = np.repeat(ref.positions[:, :1], L, axis=1)
    per = per_sample_metrics(frozen, ref.velocities, ref)
    system = get_system("five-spring")
    F = system.forces(ref.positions[:, 0], m, e)
    np.testing.assert_allclose(per["dynamic_error"], np.sqrt((F**2).mean((1, 2))), rtol=1e-10)


def test_three_body_metrics_and_tuple_reference() -> None:
    system = get_system("three-body", n_frames=6, batch_size=32)
    d = system.simulate(4, seed=0)
    ref = (d["positions"], d["velocities"], d["masses"])
    per = per_sample_metrics(d["positions"], d["velocities"], ref, system)
    assert (per["traj_error"] == 0).all()
    assert (per["energy_error"] < 1e-6).all() and (per["momentum_error"] < 1e-13).all()
    # doubling all velocities of the generated frames: energy error = mean_l |T_l·3| (U unchanged)
    pV = d["velocities"].copy()
    pV[:, 1:] *= 2.0
    per = per_sample_metrics(d["positions"], pV, ref, "three-body")
    T = 0.5 * (d["velocities"][:, 1:] ** 2).sum((-1, -2))
    np.testing.assert_allclose(per["energy_error"], (3 * T).mean(1), rtol=1e-5)
    with pytest.raises(ValueError, match="differ"):
        per_sample_metrics(d["positions"][:, :-1], pV, ref, system)


def test_summarize() -> None:
    out = summarize({"traj_error": np.array([1.0, 3.0]), "vel_error": np.array([2.0, 2.0])})
    # sample std (ddof = 1): sqrt(((1-2)² + (3-2)²) / 1) = sqrt(2)
    assert out["traj_error"] == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2, "nonfinite": 0}
    assert out["vel_error"] == {"mean": 2.0, "std": 0.0, "n": 2, "nonfinite": 0}


def test_evaluate_files(springs, tmp_path) -> None:
    path, ref = springs
    result = evaluate_files(path, path)
    assert result["metrics"]["traj_error"] == {
        "mean": 0.0,
        "std": 0.0,
        "n": result["metrics"]["traj_error"]["n"],
        "nonfinite": 0,
    }
    for key in CONSERVATION_KEYS:
        assert result["floor"][key] == pytest.approx(ref.attrs[f"floor_{key}"])
        assert result["metrics"][key]["mean"] == pytest.approx(result["floor"][key])

    # a samples file for rows 3 and 7 of the reference, written in the data layout
    idx = np.array([3, 7], dtype=np.int64)
    sub = ref.subset(idx)
    pR = sub.positions.copy()
    pR[:, 1:] += 0.1
    samples = tmp_path / "samples.h5"
    write_particles(
        samples,
        {**sub.arrays(), "positions": pR, "source_indices": idx},
        {"system": "five-spring", **ref.constants},
        splits=None,
    )
    result = evaluate_files(samples, path)
    assert result["metrics"]["traj_error"]["mean"] == pytest.approx(0.1)
    assert result["floor"]["energy_error"] == pytest.approx(floor_metrics(sub)["energy_error"])

    # without source_indices the sizes must match
    write_particles(samples, sub.arrays() | {"positions": pR}, {"system": "five-spring", **ref.constants})
    with pytest.raises(ValueError, match="source_indices"):
        evaluate_files(samples, path)
