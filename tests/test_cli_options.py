"""The CLI options the README documents, each run as a user types it: logging and progress controls
(``--version``, ``--quiet``/``--verbose`` before or after the verb, ``TQDM_DISABLE``, ``run.log``), TensorBoard
(a clear error when it is missing; the validation loss and the sample metrics when present), ``--data`` files
without splits or with a missing split, and ``sample``'s ``--n``/``--split``/``--out``/``--force``/
``--condition``/``--constraint``."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from physdiff import __version__
from physdiff.cli.main import main
from test_walkthrough import TINY_TRAIN


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two small three-body files (seeds 0 and 1) and a tiny run trained on the first."""
    d = tmp_path_factory.mktemp("cli_options")
    for seed in (0, 1):
        argv = ["simulate", "three-body", "--n", "30", "--frames", "8", "--seed", str(seed)]
        assert main([*argv, "--out", str(d / f"tb{seed}.h5")]) == 0
    assert main(["train", "three-body", "--data", str(d / "tb0.h5"), "--run-dir", str(d / "run"), *TINY_TRAIN]) == 0
    return d


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"physdiff {__version__}"


def _train(files: Path, run: str, *extra: str) -> int:
    argv = ["train", "three-body", "--data", str(files / "tb0.h5"), "--run-dir", str(files / run)]
    return main([*argv, *TINY_TRAIN, *extra])


def test_progress_is_a_line_every_10_percent_off_a_terminal_and_quiet_turns_it_off(files, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert _train(files, "loud") == 0
    err = capsys.readouterr().err
    assert "train" in err and "50%" in err and "ETA" in err and "\r" not in err
    log = (files / "loud" / "run.log").read_text()
    assert "50%" in log  # the run's log gets the progress lines too
    for quiet in (["--quiet"], ["-q"]):  # after the verb as well as before it
        assert _train(files, f"quiet{quiet[0]}", *quiet) == 0
        assert "%" not in capsys.readouterr().err
    assert (
        main(
            ["--quiet", "train", "three-body", "--data", str(files / "tb0.h5"), "--run-dir", str(files / "q2")]
            + TINY_TRAIN
        )
        == 0
    )
    assert "%" not in capsys.readouterr().err
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert _train(files, "tqdm_off") == 0
    assert "%" not in capsys.readouterr().err
    monkeypatch.delenv("TQDM_DISABLE")
    assert _train(files, "verbose", "--verbose") == 0
    assert "50%" in capsys.readouterr().err


def test_tensorboard_missing_is_a_clear_error(files, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    assert _train(files, "tb_missing", "train.tensorboard=true") == 2
    assert "pip install tensorboard" in capsys.readouterr().err
    assert not (files / "tb_missing" / "checkpoint.pt").exists()


def test_tensorboard_gets_validation_loss_and_sample_metrics(tmp_path, capsys, monkeypatch):
    scalars: list[str] = []

    class Writer:  # records what physdiff writes to TensorBoard
        def __init__(self, log_dir=None, **kw):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            assert np.isfinite(value)
            scalars.append(tag)

        def add_hparams(self, hparams, metrics, run_name=None):
            assert hparams["arm"] == "no_prior" and all(np.isfinite(v) for v in metrics.values())
            scalars.extend(metrics)

        def add_image(self, tag, image, step=None, dataformats="CHW"):
            assert image.ndim == 3 and image.shape[-1] == 3 and dataformats == "HWC"
            scalars.append(tag)

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    argv = ["reproduce", "three-body", "--out", str(tmp_path / "res"), "--seeds", "0", "--arms", "no_prior"]
    argv += ["--device", "cpu", "data.n=30", "data.settings.n_frames=8", "sample.constraints=[]", *TINY_TRAIN]
    assert main([*argv, "train.tensorboard=true"]) == 0
    capsys.readouterr()
    assert {"train/loss", "train/loss_mean", "train/loss_score", "val/loss"} <= set(scalars)  # namespaced tags
    assert not {"loss", "val_loss"} & set(scalars)
    assert {"sample/traj_error", "sample/vel_error", "sample/energy_error"} <= set(scalars)
    assert {"hparams/traj_error", "figures/trajectories", "figures/conservation"} <= set(scalars)


def test_a_file_without_splits_gets_the_default_split_with_a_note(files, tmp_path, capsys):
    path = tmp_path / "nosplits.h5"
    with h5py.File(files / "tb0.h5") as src, h5py.File(path, "w") as dst:
        for key in src:
            if key != "splits":
                src.copy(key, dst)
        dst.attrs.update(dict(src.attrs))
    argv = ["train", "three-body", "--data", str(path), "--run-dir", str(tmp_path / "run"), *TINY_TRAIN]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "no 'splits'" in err and "default" in err and str(path) in err
    assert "n: 30" in (tmp_path / "run" / "config.yaml").read_text()  # what the file holds


def test_a_missing_split_names_the_file_and_the_splits_it_found(files, tmp_path, capsys):
    path = tmp_path / "notest.h5"
    with h5py.File(files / "tb0.h5") as src, h5py.File(path, "w") as dst:
        for key in src:
            src.copy(key, dst)
        dst.attrs.update(dict(src.attrs))
        del dst["splits/test"]
    argv = ["train", "three-body", "--data", str(path), "--run-dir", str(tmp_path / "run"), *TINY_TRAIN]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "'test'" in err and "'train'" in err and "'val'" in err


def test_sample_options(files, capsys):
    run, out = files / "run", files / "val2.h5"
    assert main(["sample", str(run), "--n", "2", "--split", "val", "--out", str(out), "--steps", "3"]) == 0
    with h5py.File(out) as f:
        assert f["positions"].shape[:2] == (2, 8) and f.attrs["reference_split"] == "val"
        with h5py.File(files / "tb0.h5") as g:  # the first 2 validation trajectories, first frame given
            idx = g["splits/val"][:2]
            np.testing.assert_array_equal(f["source_indices"][()], idx)
            np.testing.assert_allclose(f["positions"][:, 0], g["positions"][()][idx, 0], rtol=0, atol=1e-4)
    capsys.readouterr()
    # never overwrites without --force
    mtime = out.stat().st_mtime_ns
    assert main(["sample", str(run), "--n", "2", "--out", str(out), "--steps", "3"]) == 2
    assert "--force" in capsys.readouterr().err and out.stat().st_mtime_ns == mtime
    assert main(["sample", str(run), "--n", "3", "--out", str(out), "--steps", "3", "--force"]) == 0
    with h5py.File(out) as f:
        assert f["positions"].shape[0] == 3 and f.attrs["reference_split"] == "test"
    # the conditions of another file: its first frames
    cond = files / "cond.h5"
    assert main(["sample", str(run), "--condition", str(files / "tb1.h5"), "--n", "2", "--out", str(cond)]) == 0
    with h5py.File(cond) as f, h5py.File(files / "tb1.h5") as g:
        np.testing.assert_allclose(f["positions"][:, 0], g["positions"][:2, 0], rtol=0, atol=1e-4)
    # a sampling-time constraint, written beside the plain samples under its own name
    capsys.readouterr()
    assert main(["sample", str(run), "--constraint", "momentum", "--steps", "3"]) == 0
    text = capsys.readouterr().out
    assert (run / "samples_prediction_projection_momentum.h5").is_file() and "momentum" in text
    assert main(["sample", str(run), "--constraint", "nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_thread_policy(monkeypatch, capsys):
    import torch

    from physdiff.training.threads import AUTO_THREADS, available_cpus, choose_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose_threads("auto") == min(AUTO_THREADS, available_cpus())
    assert choose_threads("auto", local_world_size=10 * available_cpus()) == 1  # never below one per rank
    assert choose_threads(3) == 3 and choose_threads("2") == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads("auto") is None  # the user's setting is kept
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match="--threads"):
            choose_threads(bad)
    before = torch.get_num_threads()
    try:
        assert main(["config", "three-body", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["config", "three-body", "--threads", "none"]) == 2
        assert "--threads" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
