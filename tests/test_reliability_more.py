"""Issue 24, the remaining gaps: coincident particles, reading only the rows used, The Well's samples
written in one atomic write, a real full filesystem (tmpfs)."""

from __future__ import annotations

import numpy as np
import pytest

from physdiff.experiments.config import ExperimentConfig
from physdiff.experiments.task import make_task


# --------------------------------------------------------------------------- The Well: one atomic write
def _waves(path, n=12, frames=4, nx=6, ny=6):
    from physdiff.data.the_well import write_the_well

    t = np.linspace(0.0, 0.3, frames)
    x = np.arange(nx) / nx
    y = (np.arange(ny) + 0.5) / ny
    h = 1.0 + 0.1 * np.sin(
        2 * np.pi * (x[None, None, :, None] - t[None, :, None, None]) + np.arange(n)[:, None, None, None]
    )
    h = np.broadcast_to(h, (n, frames, nx, ny)).copy()
    write_the_well(path, {"h": h}, t=t, x=x, y=y, periodic=(True, False), dataset_name="waves")
    return path


def test_the_well_samples_are_written_in_one_atomic_write(tmp_path, monkeypatch):
    """The provenance and ``source_indices`` go into the temporary file before its rename: a failure while
    adding them leaves the previous file as it was and no half-written sample file (on the old code the file
    was renamed into place first and then amended with h5py mode 'a')."""
    import h5py

    import physdiff.experiments.well_task as wt

    data = _waves(tmp_path / "waves.hdf5")
    cfg = ExperimentConfig(task="the-well")
    cfg.data.path = str(data)
    task = make_task(cfg)
    ref = task.load(tmp_path, progress=False)
    samples = {"u": ref.fields[:3].copy()}
    out = tmp_path / "samples.h5"
    task.write_samples(out, samples, ref, np.arange(3), "test", "generation")
    with h5py.File(out, "r") as f:
        assert f.attrs["generated"] and list(f["source_indices"][()]) == [0, 1, 2]
        assert f.attrs["reference_split"] == "test"
    back = task.read_samples(out)
    np.testing.assert_array_equal(back["u"], samples["u"])

    before = out.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("fingerprint failed")

    monkeypatch.setattr(wt, "fingerprint", broken)
    with pytest.raises(RuntimeError, match="fingerprint failed"):
        task.write_samples(out, {"u": ref.fields[3:6].copy()}, ref, np.arange(3, 6), "test", "generation")
    assert out.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    fresh = tmp_path / "fresh.h5"
    with pytest.raises(RuntimeError):
        task.write_samples(fresh, samples, ref, np.arange(3), "test", "generation")
    assert not fresh.exists()
