"""GeoTDM's protocol: min-ADE / min-FDE closed forms, the task's K-draw hook and its settings, and multi-frame
conditioning (the first k frames given: masked, kept exact in the samples, the metrics after them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from physdiff.config import ConfigError, apply_overrides
from physdiff.evaluation.geotdm import ade_fde, ave_ade_fde, draw_metrics, draw_seed, min_ade_fde
from physdiff.evaluation.particle_metrics import per_sample_metrics
from physdiff.experiments.config import preset_config
from physdiff.experiments.particle_task import ParticleTask, draws, evaluate_geotdm, known_frames

RNG = np.random.default_rng(0)
N, L, P, D = 4, 12, 5, 3
TRUTH = RNG.standard_normal((N, L, P, D))


# ----------------------------------------------------------------------------------------- closed forms
def test_one_exact_draw_gives_zero() -> None:
    samples = np.stack([TRUTH + RNG.standard_normal(TRUTH.shape) for _ in range(4)] + [TRUTH])  # [5, N, L, P, D]
    out = min_ade_fde(samples, TRUTH, start=3)
    assert set(out) == {"min_ade", "min_fde"} and out["min_ade"].shape == (N,)
    np.testing.assert_array_equal(out["min_ade"], 0.0)
    np.testing.assert_array_equal(out["min_fde"], 0.0)


def test_shift_by_a_known_offset_gives_that_offset() -> None:
    # draw j is the truth shifted by c_j (every particle, every frame): ADE = FDE = |c_j|; min over j = min |c_j|
    offsets = np.array([[3.0, 0.0, 4.0], [0.0, 1.2, 0.0], [-2.0, 2.0, 1.0]])  # norms 5, 1.2, 3
    samples = np.stack([TRUTH + c for c in offsets])
    per = ade_fde(samples, TRUTH, start=10)
    np.testing.assert_allclose(per["ade"], np.linalg.norm(offsets, axis=1)[:, None] * np.ones((1, N)), rtol=1e-12)
    np.testing.assert_allclose(per["fde"], per["ade"], rtol=1e-12)
    out = min_ade_fde(samples, TRUTH, start=10)
    np.testing.assert_allclose(out["min_ade"], 1.2, rtol=1e-12)
    np.testing.assert_allclose(out["min_fde"], 1.2, rtol=1e-12)
    # GeoTDM's published statistic: the mean over the draws (here (5 + 1.2 + 3) / 3)
    ave = ave_ade_fde(samples, TRUTH, start=10)
    np.testing.assert_allclose(ave["ave_ade"], 9.2 / 3, rtol=1e-12)
    np.testing.assert_allclose(ave["ave_fde"], 9.2 / 3, rtol=1e-12)
    assert draw_metrics(samples, TRUTH, 10).keys() == {"min_ade", "min_fde", "ave_ade", "ave_fde"}


def test_given_frames_are_not_scored_and_fde_is_the_last_frame() -> None:
    start, c = 4, np.array([0.0, 0.0, 2.0])
    given = TRUTH.copy()
    given[:, :start] += 100.0  # errors on the given frames do not count
    np.testing.assert_array_equal(min_ade_fde(given, TRUTH, start)["min_ade"], 0.0)
    last = TRUTH.copy()
    last[:, -1] += c  # only the final frame is off by |c| = 2
    out = min_ade_fde(last, TRUTH, start)
    np.testing.assert_allclose(out["min_fde"], 2.0, rtol=1e-12)
    np.testing.assert_allclose(out["min_ade"], 2.0 / (L - start), rtol=1e-12)
    one = TRUTH.copy()
    one[:, start:, 0] += c  # one particle of P off by |c|: the mean over particles is |c| / P
    np.testing.assert_allclose(min_ade_fde(one, TRUTH, start)["min_ade"], 2.0 / P, rtol=1e-12)


def test_ade_and_fde_are_minimised_separately() -> None:
    a, b = TRUTH.copy(), TRUTH.copy()
    a[:, 5:-1] += [1.0, 0, 0]  # draw a: off on the middle frames only (FDE 0, ADE > 0)
    b[:, 5:] += [0, 0.1, 0]  # draw b: off by 0.1 everywhere (ADE 0.1, FDE 0.1)
    per = ade_fde(np.stack([a, b]), TRUTH, start=5)
    out = min_ade_fde(np.stack([a, b]), TRUTH, start=5)
    assert (per["ade"][0] > per["ade"][1]).all() and (per["fde"][0] < per["fde"][1]).all()
    np.testing.assert_allclose(out["min_ade"], 0.1, rtol=1e-12)  # from b
    np.testing.assert_array_equal(out["min_fde"], 0.0)  # from a


def test_shapes_and_seeds() -> None:
    np.testing.assert_array_equal(min_ade_fde(TRUTH, TRUTH, 1)["min_ade"], 0.0)  # one draw [N, L, P, D]
    with pytest.raises(ValueError, match=r"\[K, N, L, P, D\]"):
        min_ade_fde(TRUTH[None, :2], TRUTH, 1)
    with pytest.raises(ValueError, match="start"):
        min_ade_fde(TRUTH, TRUTH, L)
    assert draw_seed(7, 0) == 7 and len({draw_seed(s, j) for s in range(3) for j in range(5)}) == 15


# ---------------------------------------------------------------------------------------- task settings
def test_settings_and_the_draw_hook() -> None:
    cfg = preset_config("nbody-charged", "quick")
    assert known_frames(cfg) == 10 and draws(cfg) == 5
    task = ParticleTask(cfg)
    assert task.draws_per_condition("prediction") == 5 and task.draws_per_condition("generation") == 1
    plain = preset_config("five-spring", "quick")
    assert known_frames(plain) == 1 and ParticleTask(plain).draws_per_condition("prediction") == 1
    with pytest.raises(ConfigError, match="known_frames"):
        apply_overrides(cfg, ["known_frames=0"])
    with pytest.raises(ConfigError, match="sample.draws"):
        ParticleTask(apply_overrides(cfg, ["sample.draws=1"])).draws_per_condition("prediction")


def test_evaluate_with_draws_adds_min_metrics() -> None:
    from physdiff.data.particles_h5 import ParticleData
    from physdiff.systems.registry import get_system

    sim = get_system("five-spring", n_frames=L, n_dims=D).simulate(N, seed=1)
    ref = ParticleData(sim["positions"], sim["velocities"], sim["masses"], sim["edges"], "five-spring", {"dt": 0.1})
    task = ParticleTask(apply_overrides(preset_config("nbody-spring", "quick"), ["data.settings.n_frames=12"]))
    shifted = [{"positions": ref.positions + c, "velocities": ref.velocities} for c in (0.5, 0.2, 0.3)]
    got = task.evaluate(shifted[0], ref, "prediction", draws=shifted[1:])
    np.testing.assert_allclose(got["min_ade"], 0.2 * np.sqrt(D), rtol=1e-12)
    np.testing.assert_allclose(got["min_fde"], 0.2 * np.sqrt(D), rtol=1e-12)
    np.testing.assert_allclose(got["ave_ade"], (0.5 + 0.2 + 0.3) / 3 * np.sqrt(D), rtol=1e-12)
    # the other metrics are the first draw's, on the frames after the 10 given ones
    np.testing.assert_allclose(got["traj_error"], 0.5, rtol=1e-12)
    stacked = {"positions": np.stack([s["positions"] for s in shifted]), "velocities": np.stack([ref.velocities] * 3)}
    np.testing.assert_allclose(task.evaluate(stacked, ref, "prediction")["min_ade"], got["min_ade"], rtol=1e-12)


# ----------------------------------------------------------------------------------- multi-frame condition
TINY = [
    "data.n=40",
    "data.settings.n_frames=14",
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
]


def test_multi_frame_conditioning_keeps_the_given_frames_exact(tmp_path: Path) -> None:
    from physdiff.experiments.harness import configure, prepare, sample_and_evaluate, train_arm

    # the velocity-given variant: its given frames' velocities are kept too (the preset's positions-only
    # state differences them: tests/test_positions_state.py)
    cfg = configure(preset_config("nbody-spring", "quick"), [*TINY, "model.state=positions+velocities"])
    prep = prepare(cfg, tmp_path / "data", progress=False)
    task = prep.task
    assert task.known_frames == 10 and "known_frames" not in prep.data.attrs  # never passed to the simulator
    t = task.to_tensors(prep.evaluation, prep.scaling, "prediction")
    assert bool((t["mask"][:, :10] == 1).all()) and not bool(t["mask"][:, 10:].any())
    assert not bool(task.to_tensors(prep.evaluation, prep.scaling, "generation")["mask"].any())
    # the centre of mass is continued from frame 9: the true centred state maps back to the truth exactly
    exact = task.from_tensors(task.to_tensors(prep.evaluation, prep.scaling, "prediction", torch.float64)["x0"],
                              prep.evaluation, prep.scaling)  # fmt: skip
    np.testing.assert_allclose(exact["positions"], prep.evaluation.positions, rtol=0, atol=1e-12)

    den = train_arm(prep, "no_prior", 0, tmp_path / "run", progress=False)
    samples, metrics = sample_and_evaluate(prep, den, 0, tmp_path / "run")
    out, ref = samples["prediction"], prep.evaluation
    scale = np.abs(ref.positions).max()
    np.testing.assert_allclose(out["positions"][:, :10], ref.positions[:, :10], rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(out["velocities"][:, :10], ref.velocities[:, :10], rtol=0, atol=1e-6 * scale)
    assert not np.allclose(out["positions"][:, 10:], ref.positions[:, 10:], atol=1e-3)  # generated, not copied
    # the metrics start after the given frames
    want = np.sqrt(np.square(out["positions"][:, 10:] - ref.positions[:, 10:]).mean((1, 2, 3)))
    np.testing.assert_allclose(metrics["traj_error"], want, rtol=1e-12)
    np.testing.assert_allclose(
        per_sample_metrics(out["positions"], out["velocities"], ref, start=10)["momentum_error"],
        metrics["momentum_error"],
        rtol=1e-12,
    )
    # K draws through the harness's sampler: draw 0 is the ordinary sample of the seed
    got = evaluate_geotdm(task, den, prep, k=3, seed=0)
    np.testing.assert_allclose(got["traj_error"], metrics["traj_error"], rtol=1e-12)
    assert got["min_ade"].shape == (4,) and (got["min_ade"] <= got["traj_error"] * np.sqrt(3) + 1e-12).all()
    assert (got["min_ade"] <= got["ave_ade"]).all() and (got["min_fde"] <= got["ave_fde"]).all()
    # the samples file records its given frames; evaluate_files starts after them and checks them
    from physdiff.evaluation.particle_metrics import evaluate_files

    res = evaluate_files(tmp_path / "run" / "samples_prediction.h5", prep.data.path)
    assert res["metrics"]["traj_error"]["mean"] == pytest.approx(float(np.mean(metrics["traj_error"])), rel=1e-9)
    # K samples files of the same conditions (other seeds) give the draw metrics (`physdiff evaluate --draws`)
    other, _ = sample_and_evaluate(prep, den, 1, tmp_path / "run1")
    res = evaluate_files(
        tmp_path / "run" / "samples_prediction.h5", prep.data.path, draws=[tmp_path / "run1" / "samples_prediction.h5"]
    )
    import h5py

    files = [tmp_path / d / "samples_prediction.h5" for d in ("run", "run1")]
    stacked = []
    for path in files:  # each file holds the preset's 5 draws per condition, draw after draw
        with h5py.File(path) as f:
            stacked.append(f["positions"][()].reshape(5, *ref.positions.shape))
    stacked = np.concatenate(stacked)  # [10, N, L, P, D]
    np.testing.assert_allclose(stacked[5], other["prediction"]["positions"], rtol=0, atol=1e-6 * scale)
    want = float(np.mean(min_ade_fde(stacked, ref.positions, 10)["min_ade"]))
    assert res["metrics"]["min_ade"]["mean"] == pytest.approx(want, rel=1e-6)
    assert res["metrics"]["ave_fde"]["mean"] >= res["metrics"]["min_fde"]["mean"]


# ------------------------------------------------------------------------------------------ the commands
def test_geotdm_protocol_through_the_cli(tmp_path: Path, capsys) -> None:
    """`reproduce nbody-spring` writes K draws per condition; `sample` draws K; `evaluate --protocol geotdm --k 5`
    scores them; `plot A B --out` compares runs of K-draw files."""
    import json

    import h5py

    from physdiff.cli.main import main

    tiny = ["data.n=40", "model.hidden=8", "model.layers=1", "model.vector_channels=2", "train.steps=4"]
    tiny += ["train.batch_size=8", "train.warmup=1", "train.checkpoint_every=4", "sample.steps=2", "sample.n_test=4"]
    tiny += ["sample.batch_size=4", "train.log_every=2"]
    out = tmp_path / "res"
    assert main(["reproduce", "nbody-spring", "--out", str(out), "--seeds", "0", "--device", "cpu", *tiny]) == 0
    res = json.loads((out / "results.json").read_text())
    for arm in ("no_prior", "prior:momentum"):
        m = res["arms"][arm]
        assert {"min_ade", "min_fde", "ave_ade", "ave_fde"} <= set(m)
        assert m["min_ade"]["mean"] <= m["ave_ade"]["mean"] and m["min_fde"]["mean"] <= m["ave_fde"]["mean"]
    run = out / "arms" / "no_prior" / "seed0"
    with h5py.File(run / "samples_prediction.h5") as f:  # 5 draws of the 4 conditions, draw after draw
        idx = f["source_indices"][()]
        assert f["positions"].shape[:2] == (20, 30) and f.attrs["known_frames"] == 10
        np.testing.assert_array_equal(idx, np.tile(idx[:4], 5))
    js = tmp_path / "geotdm.json"
    argv = [
        "evaluate",
        str(run / "samples_prediction.h5"),
        "--reference",
        str(out / res["data"]),
        "--protocol",
        "geotdm",
    ]
    assert main([*argv, "--k", "5", "--json", str(js)]) == 0
    got = json.loads(js.read_text())["metrics"]
    base = res["arms"]["no_prior"]
    for key in ("min_ade", "min_fde", "ave_ade", "ave_fde"):  # the same numbers as the table's
        assert got[key]["mean"] == pytest.approx(base[key]["mean"], rel=1e-6)
    capsys.readouterr()
    assert main([*argv, "--k", "3"]) == 2
    assert "5 draw(s) per condition, not 3" in capsys.readouterr().err
    # `sample --draws 3` writes 3 draws per condition; without --draws the run's config gives 5
    s3 = tmp_path / "s3.h5"
    assert main(["sample", str(run), "--draws", "3", "--out", str(s3), "--n", "2"]) == 0
    with h5py.File(s3) as f:
        assert f["positions"].shape[0] == 6
    assert main(["evaluate", str(s3), "--reference", str(out / res["data"]), "--protocol", "geotdm", "--k", "3"]) == 0
    assert "min_ade" in capsys.readouterr().out
    # the protocol refuses one draw per condition, and samples given another number of frames than GeoTDM's 10
    assert main(["sample", str(run), "--draws", "1", "--out", str(tmp_path / "s1.h5"), "--n", "2"]) == 0
    capsys.readouterr()
    assert (
        main(["evaluate", str(tmp_path / "s1.h5"), "--reference", str(out / res["data"]), "--protocol", "geotdm"]) == 2
    )
    assert "1 draw(s) per condition, not 5" in capsys.readouterr().err
    with h5py.File(s3, "r+") as f:
        f.attrs["known_frames"] = 1
    assert main(["evaluate", str(s3), "--reference", str(out / res["data"]), "--protocol", "geotdm", "--k", "3"]) == 2
    assert "first 10 frames" in capsys.readouterr().err
    # comparing the two arms' run folders reads the draws back
    cmp = tmp_path / "cmp"
    runs = [str(out / "arms" / a / "seed0") for a in ("no_prior", "prior_momentum")]
    assert main(["plot", *runs, "--out", str(cmp)]) == 0
    got = json.loads((cmp / "results.json").read_text())["arms"]
    assert got["no_prior"]["min_ade"]["mean"] == pytest.approx(res["arms"]["no_prior"]["min_ade"]["mean"], rel=1e-6)
