"""A tiny seeded train → sample → evaluate run of both arms, through the CLI, in seconds."""

import json
from pathlib import Path

import h5py
import numpy as np

from physdiff.cli.main import main

TINY = [
    "data.n=60",
    "data.settings.n_frames=8",
    "model.hidden=16",
    "model.layers=1",
    "model.vector_channels=4",
    "train.steps=30",
    "train.batch_size=8",
    "train.log_every=10",
    "sample.steps=5",
    "sample.n_test=6",
    "sample.batch_size=6",
]


def test_reproduce_both_arms_and_evaluate_cli(tmp_path, capsys):
    out = tmp_path / "res"
    assert (
        main(
            [
                "reproduce",
                "five-spring",
                "--out",
                str(out),
                "--seeds",
                "0,1",
                "--arms",
                "no_prior,prior:momentum",
                "--device",
                "cpu",
                *TINY,
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert set(res["arms"]) == {"no_prior", "prior:momentum"} and res["seeds"] == [0, 1]
    for arm in res["arms"].values():
        for key in ("traj_error", "vel_error", "energy_error", "momentum_error", "dynamic_error"):
            assert np.isfinite(arm[key]["mean"]) and len(arm[key]["per_seed"]) == 2
    table = (out / "table.md").read_text()
    assert "| no_prior |" in table and "| prior:momentum |" in table and "ground-truth floor" in table
    assert (out / "plots" / "trajectories.png").is_file() and (out / "plots" / "conservation.png").is_file()

    samples = out / "arms" / "no_prior" / "seed0" / "samples_prediction.h5"
    with h5py.File(samples) as f:
        assert f["positions"].shape == (6, 8, 5, 2) and "source_indices" in f
        data = f.attrs["system"]
    assert data == "five-spring"
    assert res["data"] == "data/" + Path(res["data"]).name  # the cache inside the results folder, relative to it
    reference = str((out / res["data"]).resolve())
    js = tmp_path / "eval.json"
    assert main(["evaluate", str(samples), "--reference", reference, "--json", str(js)]) == 0
    ev = json.loads(js.read_text())
    assert set(ev) == {"metrics", "floor"} and "momentum_error" in ev["floor"]
    # the CLI's metrics are the pipeline's metrics of the same seed
    assert abs(ev["metrics"]["traj_error"]["mean"] - res["arms"]["no_prior"]["traj_error"]["per_seed"][0]) < 1e-9
    # the momentum prior's zero-residual check on the ground truth passed, and generated frames keep the
    # known first frame exactly
    with h5py.File(samples) as f, h5py.File(reference) as d:
        idx = f["source_indices"][:]
        assert np.allclose(f["positions"][:, 0], d["positions"][:][idx, 0], atol=1e-5)
        # floor_* holds the true floor (the reference rows'), not the samples' own metrics
        assert f.attrs["floor_momentum_error"] < 1e-10 and f.attrs["reference_split"] == "test"
        assert f.attrs["reference_path"] == reference

    # a reference that is not the samples' reference is refused, naming both files
    other = tmp_path / "other.h5"
    assert main(["simulate", "five-spring", "--n", "60", "--seed", "5", "--frames", "8", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(samples), "--reference", str(other)]) == 2
    err = capsys.readouterr().err
    assert "was not generated from" in err and str(samples) in err and str(other) in err


def test_untrained_is_worse_than_trained(tmp_path):
    """Training for a while must beat a model trained for one step (seeded, small)."""
    errs = {}
    for steps in (1, 150):
        out = tmp_path / f"s{steps}"
        over = [o for o in TINY if not o.startswith("train.steps")] + [
            f"train.steps={steps}",
            "train.warmup=10",
        ]
        main(
            [
                "reproduce",
                "five-spring",
                "--out",
                str(out),
                "--arms",
                "no_prior",
                "--seeds",
                "0",
                "--device",
                "cpu",
                "--cache-dir",
                str(tmp_path / "data"),
                *over,
            ]
        )
        errs[steps] = json.loads((out / "results.json").read_text())["arms"]["no_prior"]["vel_error"]["mean"]
    assert errs[150] < 0.8 * errs[1], errs


def test_cli_errors(tmp_path, capsys):
    assert main(["reproduce", "three-body", "--out", str(tmp_path), "train.nonsense=1"]) == 2
    assert "train.nonsense" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.h5"), "--reference", str(tmp_path / "nope.h5")]) == 2


def _task_and_train(overrides=()):
    """A particle task on a tiny simulated set, its training split and scaling."""
    from physdiff.config import apply_overrides
    from physdiff.experiments.config import preset_config
    from physdiff.experiments.particle_task import ParticleTask
    from physdiff.systems.registry import get_system

    cfg = apply_overrides(preset_config("three-body"), list(overrides))
    task = ParticleTask(cfg)
    sim = get_system("three-body").with_settings(n_frames=6).simulate(8, seed=0)
    from physdiff.data.particles_h5 import ParticleData

    data = ParticleData(sim["positions"], sim["velocities"], sim["masses"], None, "three-body", {"G": 1.0, "dt": 0.1})
    return task, data, task.fit_scaling(data)


def test_prior_time_weight_weight_and_options_reach_the_priors():
    import torch

    task, data, scaling = _task_and_train(["priors.0.weight=0.25", "priors.0.time_weight=low_noise"])
    (prior,) = task.build_priors(task.cfg.priors, data, scaling)
    assert prior.weight == 0.25 and not prior.base.kinetic_per_component  # the preset's option
    w = prior.w(torch.tensor([1e-3, 0.5, 1.0]))
    assert w[0] > 0.99 and w[2] < 1e-3 and torch.all(w[:-1] > w[1:])


def test_cli_reports_a_corrupt_checkpoint_without_a_traceback(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    argv = ["train", "five-spring", "--run-dir", str(run), "--resume", "--device", "cpu", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "corrupt" in err and "Traceback" not in err


def test_unequal_masses_keep_noise_outputs_and_restored_centre_of_mass_consistent():
    """Masses (1, 2, 0.5): noise draws and denoiser outputs live in Σ_k m_k R_k = 0, where the data are
    centred, and restored trajectories have the exact centre of mass CoM(0) + l·dt·P(0)/M."""
    import dataclasses

    import numpy as np
    import torch

    from physdiff.config import apply_overrides
    from physdiff.data.particles_h5 import ParticleData
    from physdiff.experiments.config import preset_config
    from physdiff.experiments.harness import sample_tensors
    from physdiff.experiments.particle_task import ParticleTask

    rng = np.random.default_rng(0)
    n, L, K, D = 6, 5, 3, 3
    masses = np.tile([1.0, 2.0, 0.5], (n, 1))
    data = ParticleData(
        positions=rng.normal(size=(n, L, K, D)),
        velocities=rng.normal(size=(n, L, K, D)),
        masses=masses,
        edges=None,
        system="three-body",
        constants={"G": 1.0, "dt": 0.1},
    )
    task = ParticleTask(apply_overrides(preset_config("three-body"), ["model.hidden=16", "model.layers=1"]))
    scaling = task.fit_scaling(data)
    tensors = task.to_tensors(data, scaling, "prediction", dtype=torch.float64)
    m = tensors["masses"]

    def mass_weighted_sum(x):
        return torch.einsum("bk,blkd->bld", m, x[..., :D]).abs().max()

    assert mass_weighted_sum(tensors["x0"]) < 1e-12
    torch.manual_seed(0)
    den = task.build_denoiser(scaling, tensors).double()
    eps = den.noise_like(tensors["x0"], torch.Generator().manual_seed(1), masses=m)
    assert mass_weighted_sum(eps) < 1e-12
    out = den(tensors["x0"], torch.full((n,), 0.5), masses=m)
    assert mass_weighted_sum(out.x0) < 1e-10
    x = sample_tensors(den, tensors, dataclasses.replace(task.cfg.sample, steps=3, batch_size=4), seed=0)
    r = task.from_tensors(x, data, scaling)["positions"]
    com = (masses[:, None, :, None] * r).sum(2) / masses.sum(1)[:, None, None]  # [n, L, D]
    p0 = (masses[:, :, None] * data.velocities[:, 0]).sum(1) / masses.sum(1)[:, None]
    c0 = (masses[:, :, None] * data.positions[:, 0]).sum(1) / masses.sum(1)[:, None]
    want = c0[:, None] + np.arange(L)[None, :, None] * 0.1 * p0[:, None]
    assert np.allclose(com, want, atol=1e-9)


def test_resume_of_a_fresh_table_trains_from_step_0_without_a_warning(tmp_path, recwarn, capsys):
    """``reproduce --resume`` (as sweeps and the study resume every point) on a folder with no checkpoint
    yet: an INFO line, not a 'resume: no checkpoint' warning per run; the second call resumes the trained
    run instead of training it again."""
    out = tmp_path / "res"
    argv = ["reproduce", "five-spring", "--out", str(out), "--seeds", "0", "--arms", "no_prior", "--resume"]
    argv += ["--device", "cpu", *TINY]
    assert main(argv) == 0
    assert not [w for w in recwarn if "no checkpoint" in str(w.message)]
    err = capsys.readouterr().err
    assert "no checkpoint in" in err and "training from step 0" in err
    ckpt = out / "arms" / "no_prior" / "seed0" / "checkpoint.pt"
    stamp = ckpt.stat().st_mtime_ns
    assert main(argv) == 0
    assert "no checkpoint in" not in capsys.readouterr().err and ckpt.stat().st_mtime_ns == stamp
