"""The ``generic`` experiment: a particle file without a ``system`` attribute trains, samples and evaluates end
to end through the harness with the priors and metrics that need no physics; its default split is written
next to it (``<file>.splits.json``) and the file itself is left byte-identical."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from physdiff.data.particles_h5 import estimate_frame_spacing, load_particles, side_splits, side_splits_path
from physdiff.evaluation.particle_metrics import floor_metrics, per_sample_metrics
from physdiff.experiments.config import preset_config
from physdiff.priors.particles import make_prior
from physdiff.systems.registry import get_system

TINY = [
    "model.hidden=8",
    "model.layers=1",
    "model.vector_channels=2",
    "model.heads=2",
    "train.steps=3",
    "train.batch_size=8",
    "train.warmup=1",
    "train.log_every=1",
    "train.checkpoint_every=3",
    "sample.steps=3",
    "sample.n_test=4",
    "sample.batch_size=4",
    "seeds=[0,1]",
]


def _write_user_file(path: Path, n: int = 30, external: float = 0.0) -> Path:
    """Springs (with their graph) as a user would write them: no 'system', no 'dt', no splits."""
    d = get_system("five-spring", n_frames=8).simulate(n, seed=4)
    R, V = d["positions"], d["velocities"]
    if external:  # a uniform external force: momentum grows
        t = 0.1 * np.arange(R.shape[1])[None, :, None, None]
        R, V = R + 0.5 * external * t**2, V + external * t
    with h5py.File(path, "w") as f:
        for key, value in (("positions", R), ("velocities", V), ("masses", d["masses"]), ("edges", d["edges"])):
            f[key] = value
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generic_file_trains_and_evaluates_end_to_end(tmp_path: Path) -> None:
    from physdiff.experiments.harness import reproduce

    path = _write_user_file(tmp_path / "mine.h5")
    before, mtime = _sha(path), path.stat().st_mtime_ns
    out = tmp_path / "res"
    res = reproduce("generic", "quick", out, overrides=[f"data.path={path}", *TINY], progress=False)
    # the user's file is byte-identical; the split lies next to it, with a note
    assert _sha(path) == before and path.stat().st_mtime_ns == mtime
    side = side_splits_path(path)
    assert side == tmp_path / "mine.h5.splits.json" and side.is_file()
    stored = json.loads(side.read_text())
    assert stored["n"] == 30 and stored["sha256"] == before and "never modified" in stored["note"]
    assert sorted(stored["train"] + stored["val"] + stored["test"]) == list(range(30))
    # both arms ran with the metrics that need no physics and the momentum prior's law; the floor is the momentum's
    assert set(res["arms"]) == {"no_prior", "prior:momentum"}
    for arm in res["arms"].values():
        assert set(arm) == {"traj_error", "vel_error", "momentum_error", "law:momentum"}
        assert all(np.isfinite(m["mean"]) for m in arm.values())
    assert set(res["floor"]) == {"momentum_error", "law:momentum"} and res["floor"]["momentum_error"] < 1e-12
    assert res["floor"]["law:momentum"] < 1e-12 and res["refused"] == {}
    assert "| prior:momentum |" in (out / "table.md").read_text()
    samples = load_particles(out / "arms" / "no_prior" / "seed0" / "samples_prediction.h5")
    assert samples.system == "generic" and samples.edges is not None  # the graph went into the model's context
    assert samples.constants["dt"] == pytest.approx(0.1, rel=1e-9)  # estimated from the centre-of-mass motion
    # a second run reads the same split back
    again, status = side_splits(path, 30)
    assert status == "read" and again["test"].tolist() == stored["test"]


def test_generic_system_physics_and_priors(tmp_path: Path) -> None:
    path = _write_user_file(tmp_path / "mine.h5")
    data = load_particles(path, system="generic")
    assert data.system == "generic" and data.attrs["dt_estimated"] and data.attrs["dt_misfit"] < 1e-9
    assert data.constants["dt"] == pytest.approx(0.1, rel=1e-9) and data.edges is not None
    per = per_sample_metrics(data.positions, data.velocities, data)
    assert set(per) == {"traj_error", "vel_error", "momentum_error"}
    assert set(floor_metrics(data)) == {"momentum_error"}
    assert make_prior("momentum", "generic").name == "momentum"
    with pytest.raises(ValueError, match="'generic' has no energy.*momentum"):
        make_prior("energy", "generic")
    with pytest.raises(ValueError, match="no forces"):
        get_system("generic").forces(data.positions, 1.0)
    from physdiff.data.particles_h5 import simulate_to_file
    from physdiff.experiments.task import task_for_system

    with pytest.raises(ValueError, match="unknown system 'generic'"):  # `physdiff simulate generic`
        task_for_system("generic")
    with pytest.raises(ValueError, match="not a simulator"):
        simulate_to_file("generic", tmp_path / "x.h5", 2, 0)
    # a named-system file may be read as generic (its system kept as file_system); not the other way round
    named = tmp_path / "named.h5"
    with h5py.File(path) as f, h5py.File(named, "w") as g:
        for key in f:
            g[key] = f[key][()]
        g.attrs["system"], g.attrs["kappa"], g.attrs["dt"] = "five-spring", 0.1, 0.1
    assert load_particles(named, system="generic").attrs["file_system"] == "five-spring"
    with pytest.raises(ValueError, match="requested"):
        load_particles(named, system="three-body")


def test_external_forces_refuse_the_momentum_arm_alone(tmp_path: Path) -> None:
    from physdiff.experiments.harness import prepare
    from physdiff.priors.base import PriorNotApplicable

    path = _write_user_file(tmp_path / "pushed.h5", external=0.3)
    data = load_particles(path, system="generic")
    assert data.constants["dt"] == pytest.approx(0.1, rel=1e-6)  # the CoM still moves as its velocity says
    cfg = preset_config("generic", "quick")
    cfg.data.path = str(path)
    prep = prepare(cfg, tmp_path, progress=False)
    task = prep.task
    assert not task.closed(data) and not prep.scaling.centred  # absolute positions: no centring on the CoM
    assert task.build_priors([], prep.train, prep.scaling) == []  # the no_prior arm has nothing to refuse
    with pytest.raises(PriorNotApplicable, match=r"'momentum'.*not ≈ 0.*is \S+ of its scale.*priors\.0\.tol"):
        task.build_priors(cfg.arms()["prior:momentum"], prep.train, prep.scaling)
    dt, misfit = estimate_frame_spacing(data.positions, np.zeros_like(data.velocities) + 1.0, data.masses)
    assert misfit > 1e-3  # velocities that do not move the centre of mass are reported as a misfit


def test_generic_needs_a_file(tmp_path: Path) -> None:
    from physdiff.experiments.harness import prepare

    with pytest.raises(ValueError, match="--data FILE"):
        prepare(preset_config("generic", "quick"), tmp_path, progress=False)
