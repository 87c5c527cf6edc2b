"""The registered ``charged`` system end to end: ``physdiff simulate charged`` through the file layer (charges,
floors and the force clip's statistics stored; None settings round-trip), the Coulomb physics in the metrics
and floors, the Coulomb energy prior on the ground truth (the clipped trajectories are the data's floor, not a
bug), charges in the model context, and the GeoTDM preset through the harness."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from physdiff.cli.main import main
from physdiff.data.particles_h5 import load_particles, simulate_to_file, write_particles
from physdiff.evaluation.particle_metrics import CONSERVATION_KEYS, floor_metrics, per_sample_metrics
from physdiff.experiments.config import preset_config
from physdiff.experiments.particle_task import ParticleScaling, ParticleTask
from physdiff.physics import particles as P
from physdiff.priors.particles import CoulombEnergyPrior, MomentumPrior, make_prior
from physdiff.systems.charged import Charged

N_SIM, FRAMES = 48, 12


@pytest.fixture(scope="module")
def charged_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("charged") / "charged.h5"
    assert (
        main(["simulate", "charged", "--n", str(N_SIM), "--seed", "3", "--frames", str(FRAMES), "--out", str(path)])
        == 0
    )
    return path


def test_simulate_charged_through_the_file_layer(charged_file: Path, capsys) -> None:
    data = load_particles(charged_file)
    sim = Charged(n_frames=FRAMES).simulate(N_SIM, seed=3, diagnostics=True)
    assert data.system == "charged" and data.shape == (N_SIM, FRAMES, 5, 3)
    assert data.constants == {"dt": 0.1, "k": 1.0}
    for key in ("positions", "velocities", "masses", "charges", "clip_steps"):  # bit-exact round trip
        assert getattr(data, key).tobytes() == np.asarray(sim[key], dtype=getattr(data, key).dtype).tobytes()
    assert set(np.unique(data.charges)) == {-1.0, 1.0} and data.clip_steps.dtype == np.int64
    clipped = data.clip_steps > 0
    assert 0 < clipped.sum() < N_SIM  # EGNN's clip touches some trajectories at these settings, not all
    a = data.attrs
    assert a["clip_force"] == 100.0 and a["substeps"] == 100
    assert a["clip_fraction"] == pytest.approx(clipped.mean()) and a["clipped_trajectories"] == clipped.sum()
    assert a["clipped_steps_mean"] == pytest.approx(data.clip_steps.mean())
    # the floors: the data set's own conservation errors, over all, the unclipped and the clipped trajectories
    floor = floor_metrics(data)
    errors = data.get_system().conservation_errors(data.positions, data.velocities, data.masses, charges=data.charges)
    for key in CONSERVATION_KEYS:
        assert a[f"floor_{key}"] == pytest.approx(floor[key])
        assert a[f"floor_{key}_unclipped"] == pytest.approx(errors[key][~clipped].mean())
        assert a[f"floor_{key}_clipped"] == pytest.approx(errors[key][clipped].mean())
    assert a["floor_momentum_error_unclipped"] < 1e-12 < 1e-6 < a["floor_momentum_error_clipped"]
    # subsets carry the charges and the clip counts
    sub = data.subset([3, 1])
    assert (
        sub.charges.tolist() == data.charges[[3, 1]].tolist()
        and sub.clip_steps.tolist() == data.clip_steps[[3, 1]].tolist()
    )
    assert set(sub.arrays()) == {"positions", "velocities", "masses", "charges", "clip_steps"}
    # the CLI reported the clip statistics
    main(["simulate", "charged", "--n", "4", "--frames", "3", "--out", str(charged_file.parent / "small.h5")])
    assert "clip:" in capsys.readouterr().out


def test_coulomb_energy_is_conserved_on_unclipped_trajectories(charged_file: Path) -> None:
    data = load_particles(charged_file)
    ok = data.clip_steps == 0
    R, V, m, q = data.positions[ok], data.velocities[ok], data.masses[ok], data.charges[ok]
    # independent numpy formula: E = ½ Σ m v² + Σ_{i<j} k q_i q_j / r_ij
    i, j = np.triu_indices(5, k=1)
    r = np.linalg.norm(R[:, :, i] - R[:, :, j], axis=-1)
    E = 0.5 * (m[:, None, :] * np.square(V).sum(-1)).sum(-1) + (q[:, None, i] * q[:, None, j] / r).sum(-1)
    scale = 0.5 * (m * np.square(V[:, 0]).sum(-1)).sum(-1) + (np.abs(q[:, i] * q[:, j]) / r[:, 0]).sum(-1)
    drift = np.abs(E - E[:, :1]).max(1) / scale  # leapfrog at h = 1e-3: bounded, ≲ 1e-3 away from encounters
    assert drift.max() < 1e-3
    np.testing.assert_allclose(E, np.asarray(data.get_system().total_energy(R, V, m[:, None], charges=q[:, None])))
    P_ = (m[:, None, :, None] * V).sum(2)
    assert np.abs(P_ - P_[:, :1]).max() < 1e-12  # pairwise antisymmetric unclipped forces: exact momentum


def test_none_settings_round_trip_and_charge_validation(tmp_path: Path) -> None:
    path = tmp_path / "noclip.h5"
    summary = simulate_to_file("charged", path, 6, seed=0, n_frames=4, clip_force=None)
    data = load_particles(path)
    assert data.attrs["clip_force"] is None and summary["settings"]["clip_force"] is None
    assert data.attrs["clip_fraction"] == 0.0 and summary["clip"]["clip_fraction"] == 0.0
    copy = write_particles(tmp_path / "copy.h5", data.arrays(), data.attrs, splits=data.splits)
    assert load_particles(copy).attrs["clip_force"] is None
    arrays = data.arrays()
    for bad, match in ((0.5, r"'charges'.*one of \[-1.0, 1.0\]"), (np.nan, "'charges'.*NaN/inf")):
        q = arrays["charges"].copy()
        q[1, 2] = bad
        with pytest.raises(ValueError, match=match):
            write_particles(tmp_path / "bad.h5", {**arrays, "charges": q}, {"system": "charged"})
    with pytest.raises(KeyError, match="'charges'"):
        write_particles(tmp_path / "bad.h5", {k: v for k, v in arrays.items() if k != "charges"}, {"system": "charged"})
    with h5py.File(path, "a") as f:  # a file whose charges are not ±1 is refused on read, naming it
        f["charges"][0, 0] = 2.0
    with pytest.raises(ValueError, match=r"noclip\.h5.*'charges'"):
        load_particles(path)


def test_metrics_use_the_charges(charged_file: Path) -> None:
    ref = load_particles(charged_file).subset(np.arange(6))
    per = per_sample_metrics(ref.positions, ref.velocities, ref)
    np.testing.assert_allclose(per["energy_error"], ref.get_system().conservation_errors(
        ref.positions, ref.velocities, ref.masses, charges=ref.charges)["energy_error"])  # fmt: skip
    # a rigid shift of the generated frames keeps the Coulomb energy and the momentum, moves the trajectory
    shifted = ref.positions.copy()
    shifted[:, 1:] += [0.3, 0.0, 0.0]
    moved = per_sample_metrics(shifted, ref.velocities, ref)
    np.testing.assert_allclose(moved["energy_error"], per["energy_error"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(moved["traj_error"], 0.3 / np.sqrt(3), rtol=1e-12)
    with pytest.raises(ValueError, match="charges"):
        per_sample_metrics(
            ref.positions, ref.velocities, {k: v for k, v in ref.arrays().items() if k != "charges"}, "charged"
        )


def test_coulomb_energy_prior_on_the_ground_truth(charged_file: Path) -> None:
    from physdiff.experiments.harness import configure

    data = load_particles(charged_file)
    # the velocity-given variant (the preset's state is positions only: tests/test_positions_state.py)
    task = ParticleTask(configure(preset_config("nbody-charged", "quick"), ["model.state=positions+velocities"]))
    scaling = task.fit_scaling(data)
    t = task.to_tensors(data, scaling, "prediction", dtype=torch.float64)
    ctx = task.context(t)
    assert torch.equal(ctx["charges"], torch.from_numpy(data.charges))
    prior = make_prior("energy", "charged", constants=data.constants, scale=(scaling.positions, scaling.velocities))
    assert isinstance(prior, CoulombEnergyPrior) and prior.k == 1.0
    ok = torch.from_numpy(data.clip_steps == 0)
    res = prior.residual(t["x0"], **ctx)  # E_l − E_0 in physical units
    assert res[ok].abs().max() < 1e-2  # conserved where the clip did not act (leapfrog error only)
    E = P.kinetic_energy(torch.from_numpy(data.velocities), torch.from_numpy(data.masses)[:, None])
    E = E + P.coulomb_potential(torch.from_numpy(data.positions), torch.from_numpy(data.charges)[:, None])
    torch.testing.assert_close(res, E[:, 1:] - E[:, :1])
    assert res[~ok].abs().max() > 1e-2  # the clip floor: the clipped trajectories do not conserve energy
    prior.check_ground_truth(t["x0"], **ctx)  # features finite on all of them
    feats = prior.features(t["x0"], **ctx)["potential"]  # q_i q_j / r_ij over pairs i < j
    r01 = np.linalg.norm(data.positions[:, :, 0] - data.positions[:, :, 1], axis=-1)
    np.testing.assert_allclose(feats[..., 0].numpy(), data.charges[:, None, 0] * data.charges[:, None, 1] / r01)
    with pytest.raises(ValueError, match="charges"):
        prior.features(t["x0"], masses=ctx["masses"])
    # the task checks priors and sampling constraints on the unclipped trajectories: valid data are not refused
    built = task.build_priors(task.cfg.arms()["prior:momentum"], data, scaling)
    assert isinstance(built[0], MomentumPrior)
    task.build_priors([type(task.cfg.priors[0])(name="energy", weight=0.01)], data, scaling)
    from physdiff.experiments.config import ConstraintConfig

    task.cfg.sample.constraints = [ConstraintConfig(priors=["momentum", "energy"], iterations=3)]
    assert len(task.build_constraints(data, scaling)) == 1
    with pytest.raises(ValueError, match="does not apply"):
        make_prior("newton", "charged")


def test_charges_reach_the_network() -> None:
    task = ParticleTask(preset_config("nbody-charged", "quick"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 6, generator=g)
    den = task.build_denoiser(ParticleScaling(1.0, 1.0), {"x0": x})
    from physdiff.models.egnn import SpaceTimeEGNN

    plain = SpaceTimeEGNN(3, hidden=32, layers=2, vector_channels=4, heads=4)
    assert isinstance(den.net, SpaceTimeEGNN) and set(den.net.state_dict()) == set(plain.state_dict())
    q = torch.tensor([[1.0, -1, 1, 1, -1], [-1.0, -1, 1, -1, 1]])
    args = (x, torch.zeros(2), torch.zeros_like(x), torch.zeros_like(x))
    with torch.no_grad():
        a, b, none = den.net(*args, charges=q), den.net(*args, charges=-q), den.net(*args)
        qq = q[:, :, None] * q[:, None, :] * (1 - torch.eye(5))
        torch.testing.assert_close(den.net(*args, charges=q), den.net(*args, edges=qq))  # the edge feature q_i q_j
    torch.testing.assert_close(a, b)  # only products q_i q_j matter: flipping every charge changes nothing
    assert not torch.allclose(a, none)


def test_nbody_charged_preset_runs_through_the_harness(tmp_path: Path) -> None:
    from physdiff.experiments.harness import configure, prepare, sample_and_evaluate, train_arm
    from physdiff.experiments.particle_task import evaluate_geotdm

    tiny = ["data.n=40", "data.settings.n_frames=13", "model.hidden=8", "model.layers=1", "model.vector_channels=2"]
    tiny += ["train.steps=2", "train.batch_size=8", "train.warmup=1", "train.checkpoint_every=2", "sample.steps=2"]
    cfg = configure(preset_config("nbody-charged", "quick"), [*tiny, "sample.n_test=4", "sample.batch_size=4"])
    prep = prepare(cfg, tmp_path / "data", progress=False)
    assert prep.data.charges is not None and prep.task.known_frames == 10
    floor = prep.task.floor(prep.evaluation)
    assert {"energy_error", "momentum_error", "dynamic_error", "clip_fraction"} <= set(floor)
    den = train_arm(prep, "prior:momentum", 0, tmp_path / "run", progress=False)
    samples, metrics = sample_and_evaluate(prep, den, 0, tmp_path / "run")
    # the harness draws sample.draws = 5 per condition for the draw metrics: min over draws <= their mean
    assert {"min_ade", "min_fde", "ave_ade", "ave_fde"} <= set(metrics)
    assert (metrics["min_ade"] <= metrics["ave_ade"] + 1e-12).all() and (metrics["min_fde"] <= metrics["ave_fde"]).all()
    np.testing.assert_allclose(samples["prediction"]["positions"][:, :10], prep.evaluation.positions[:, :10], atol=1e-5)
    got = evaluate_geotdm(prep.task, den, prep, k=2, seed=0)
    assert {"min_ade", "min_fde", "ave_ade", "ave_fde", "traj_error", "energy_error"} <= set(got)
    assert all(np.isfinite(v).all() for v in got.values())
    with h5py.File(tmp_path / "run" / "samples_prediction.h5") as f:
        assert f.attrs["known_frames"] == 10 and "charges" in f and 0 <= f.attrs["reference_clip_fraction"] <= 1
