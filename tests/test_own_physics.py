"""Issue 20: your own physics through every verb. The worked examples of docs/priors.md run as written: a
tethered, damped particle file (an external force: momentum not conserved) with a user Newton-type law whose
constants come from the file, and a 1-D heat-equation file in PDEBench's layout with a user field law."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from physdiff.cli.main import main

DOCS = Path(__file__).resolve().parents[1] / "docs" / "priors.md"
PARTICLE_TINY = [
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
    "seeds=[0]",
]
FIELD_TINY = [
    "model.base_channels=8",
    "model.channel_mults=[1,2]",
    "train.steps=3",
    "train.batch_size=8",
    "train.warmup=1",
    "train.log_every=1",
    "train.checkpoint_every=3",
    "sample.steps=3",
    "sample.n_test=4",
    "sample.batch_size=4",
    "seeds=[0]",
]


def _docs_files(folder: Path) -> dict[str, Path]:
    """Every ``<!-- file: NAME -->`` code block of docs/priors.md, written as NAME into ``folder``."""
    blocks = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    out = {}
    for name, code in blocks:
        (folder / name).write_text(code)
        out[name] = folder / name
    return out


@pytest.fixture
def docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    files = _docs_files(tmp_path)
    assert {"make_tethered.py", "tethered_priors.py", "make_heat.py", "heat_priors.py"} <= set(files)
    for script in ("make_tethered.py", "make_heat.py"):
        subprocess.run([sys.executable, script], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_tethered_file_trains_no_prior_and_the_user_law_with_file_constants(docs: Path) -> None:
    from physdiff.experiments.config import preset_config
    from physdiff.experiments.harness import configure, prepare

    # the no-prior arm trains (the old code refused the whole file: "no training trajectory obeys ...")
    assert (
        main(["train", "generic", "--data", "tethered.h5", "--arm", "no_prior", "--run-dir", "runs/a", *PARTICLE_TINY])
        == 0
    )
    assert (docs / "runs/a/checkpoint.pt").is_file()
    from physdiff.priors.base import PriorNotApplicable

    cfg = configure(preset_config("generic"), ["data.path=tethered.h5"]).with_arms(
        ["prior:tethered_priors:DampedTether"]
    )
    prep = prepare(cfg, docs / "cache", progress=False)
    assert not prep.scaling.centred  # the centre of mass is tethered: absolute positions
    (prior,) = prep.task.build_priors(cfg.arms()["prior:tethered_priors:DampedTether"], prep.train, prep.scaling)
    assert (prior.k, prior.gamma, prior.dt) == (1.0, 0.2, 0.1)  # the file's attributes, by field name
    with pytest.raises(PriorNotApplicable, match=r"'momentum'.*of its scale.*priors\.0\.tol"):
        prep.task.build_priors(cfg.arms()["prior:momentum"], prep.train, prep.scaling)
    # a wrong constant is refused relative to the law's scale, and the tolerance is settable per prior
    bad = configure(cfg, ["priors.1.options={k: 2.0}"])
    with pytest.raises(PriorNotApplicable, match=r"'tethered_priors:DampedTether'.*> tol = 1\.0e-02, priors\.1\.tol"):
        prep.task.build_priors(bad.arms()["prior:tethered_priors:DampedTether"], prep.train, prep.scaling)
    loose = configure(bad, ["priors.1.tol=10"])
    prep.task.build_priors(loose.arms()["prior:tethered_priors:DampedTether"], prep.train, prep.scaling)


def test_reproduce_generic_reports_the_user_law_with_and_without_a_projection(docs: Path) -> None:
    law = "law:tethered_priors:DampedTether"
    args = ["reproduce", "generic", "--data", "tethered.h5", "--out", "res", *PARTICLE_TINY]
    args += ["sample.constraints=[{priors: ['tethered_priors:DampedTether'], mode: projection}]"]
    args += ["priors=[{name: momentum}, {name: 'tethered_priors:DampedTether'}]"]
    assert main(args) == 0
    res = json.loads((docs / "res/results.json").read_text())
    # the momentum arm alone is refused, in one line naming the law and its measured drift
    assert set(res["arms"]) == {"no_prior", "prior:tethered_priors:DampedTether"}
    assert "momentum" in res["refused"]["prior:momentum"] and "of its scale" in res["refused"]["prior:momentum"]
    floor = res["floor"][law]
    assert 0 < floor < 1e-2 * 1.0  # the second difference's error, far below m a ~ k r ~ 1
    for row in [*res["arms"].values(), *res["sampling_constraints"].values()]:
        assert law in row and np.isfinite(row[law]["mean"])
    # the projection enforces the law: its residual on the samples is at round-off, far below the arm's own
    for arm, metrics in res["arms"].items():
        projected = res["sampling_constraints"][f"{arm} + projection:tethered_priors:DampedTether"][law]["mean"]
        assert projected < 1e-6 * metrics[law]["mean"]
    header = (docs / "res/arms/prior_tethered_priors_DampedTether/seed0/metrics.csv").read_text().splitlines()[0]
    assert "DampedTether" in header.split(",") and "tethered_priors" not in header  # the training log's label
    table = (docs / "res/table.md").read_text()  # the column is labelled by the law's class, as arms are
    assert "law:DampedTether" in table and "tethered_priors" not in table.split("\n\n")[1]
    # `evaluate --prior` on any samples file, the system read from the samples file (no --system)
    samples = docs / "res/arms/no_prior/seed0/samples_prediction.h5"
    args = ["evaluate", str(samples), "--reference", "tethered.h5", "--prior", "tethered_priors:DampedTether"]
    assert main([*args, "--json", "eval.json"]) == 0
    got = json.loads((docs / "eval.json").read_text())
    assert got["metrics"][law]["mean"] == pytest.approx(res["arms"]["no_prior"][law]["mean"], rel=1e-9)
    assert got["floor"][law] == pytest.approx(floor, rel=1e-9)


def test_heat_file_in_pdebench_layout_runs_with_a_user_field_law(docs: Path) -> None:
    law = "law:heat_priors:Heat"
    args = ["reproduce", "generic", "--data", "heat.h5", "--out", "heat", "--arms", "no_prior,prior:heat_priors:Heat"]
    assert main([*args, *FIELD_TINY]) == 0
    res = json.loads((docs / "heat/results.json").read_text())
    assert set(res["arms"]) == {"no_prior", "prior:heat_priors:Heat"}
    for metrics in res["arms"].values():
        assert {"rmse", law} <= set(metrics) and np.isfinite(metrics[law]["mean"])
    # the floor: the heat residual of the data, a discretisation error well below u_t (RMS ~ 0.4)
    assert 0 < res["floor"][law] < 0.05
    assert "law:Heat" in (docs / "heat/table.md").read_text()  # the column is labelled by the law's class
    # the run samples again (`sample`), and `evaluate --prior` measures the law on that file: the same samples
    # (same seed), the same value; the reference is recognised as a generic field file
    run = docs / "heat/arms/prior_heat_priors_Heat/seed0"
    assert main(["sample", str(run), "--out", "s.h5"]) == 0
    args = ["evaluate", "s.h5", "--reference", "heat.h5", "--prior", "heat_priors:Heat", "--json", "e.json"]
    assert main(args) == 0
    got = json.loads((docs / "e.json").read_text())
    assert got["metrics"]["rmse"]["mean"] == pytest.approx(res["arms"]["prior:heat_priors:Heat"]["rmse"]["mean"])
    assert got["metrics"][law]["mean"] == pytest.approx(res["arms"]["prior:heat_priors:Heat"][law]["mean"])
    assert got["floor"][law] == pytest.approx(res["floor"][law], rel=1e-12)


def test_heat_law_check_is_relative_and_names_its_tolerance(docs: Path) -> None:
    from physdiff.experiments.config import preset_config
    from physdiff.experiments.harness import configure, prepare

    cfg = configure(preset_config("generic"), ["data.path=heat.h5"]).with_arms(["prior:heat_priors:Heat"])
    assert cfg.task == "generic-fields"
    from physdiff.priors.base import PriorNotApplicable

    prep = prepare(cfg, docs / "cache", progress=False)
    (prior,) = prep.task.build_priors(cfg.arms()["prior:heat_priors:Heat"], prep.train, prep.scaling)
    assert prior.kappa == 0.01 and prior.periodic == ("x",) and prior.spacing["dx"] == pytest.approx(1 / 32)
    wrong = configure(cfg, ["priors.0.options={kappa: -0.01}"])  # a sign error: R ≈ 2 κ u_xx ≈ 2 u_t
    with pytest.raises(PriorNotApplicable, match=r"'heat_priors:Heat'.*> tol = 5\.0e-01, priors\.0\.tol"):
        prep.task.build_priors(wrong.arms()["prior:heat_priors:Heat"], prep.train, prep.scaling)
    # `train generic --data heat.h5` with the user law by import path (the CLI's own configuration path)
    args = ["train", "generic", "--data", "heat.h5", "--arm", "prior:heat_priors:Heat", "--run-dir", "runs/h"]
    assert main([*args, *FIELD_TINY]) == 0
    assert "Heat" in (docs / "runs/h/metrics.csv").read_text().splitlines()[0].split(",")  # its term, by class


def test_generic_takes_real_valued_edges_as_edge_attributes(tmp_path: Path) -> None:
    """EGNN's and GeoTDM's charged files store edges as charge products q_i q_j = ±1 (diagonal q_i² = 1):
    a generic file keeps them as edge attributes instead of refusing anything but 0/1."""
    import h5py

    from physdiff.data.particles_h5 import load_particles

    rng = np.random.default_rng(0)
    q = rng.choice([-1.0, 1.0], size=(4, 5))
    with h5py.File(tmp_path / "egnn.h5", "w") as f:
        f["positions"], f["velocities"] = rng.normal(size=(2, 4, 6, 5, 3))
        f["masses"], f["edges"] = np.ones((4, 5)), q[:, :, None] * q[:, None, :]
    data = load_particles(tmp_path / "egnn.h5", system="generic")
    np.testing.assert_array_equal(data.edges, q[:, :, None] * q[:, None, :])


@pytest.mark.parametrize("with_charges", [False, True])
def test_nbody_charged_reads_edges_as_charge_products(tmp_path: Path, with_charges: bool) -> None:
    """EGNN's/GeoTDM's charged file: `edges` = q_i q_j (±1, diagonal 1), `charges` maybe absent. The charges are
    recovered up to one global sign per trajectory (the Coulomb energy and forces see products only), or the
    stored charges are used and the edges checked against them; a non-product graph is refused."""
    import h5py

    from physdiff.data.particles_h5 import load_particles
    from physdiff.physics import particles as phys
    from physdiff.systems.registry import get_system

    sim = get_system("charged", n_frames=4).simulate(3, seed=1)
    q = sim["charges"]
    with h5py.File(tmp_path / "egnn.h5", "w") as f:
        for key in ("positions", "velocities", "masses"):
            f[key] = sim[key]
        f["edges"] = q[:, :, None] * q[:, None, :]
        if with_charges:
            f["charges"] = q
        f.attrs["dt"], f.attrs["k"] = 0.1, 1.0
    data = load_particles(tmp_path / "egnn.h5", system="charged")
    assert data.edges is None and "charge products" in data.attrs["edges_note"]
    sign = q[:, :1] if not with_charges else np.ones_like(q[:, :1])  # recovered: q_0 = +1
    np.testing.assert_array_equal(data.charges, q * sign)
    # the Coulomb energy is the same with the recovered charges (products only)
    e_true = phys.coulomb_potential(sim["positions"], q[:, None], 1.0)
    e_read = phys.coulomb_potential(data.positions, data.charges[:, None], 1.0)
    np.testing.assert_allclose(e_read, e_true, rtol=1e-14, atol=1e-14)
    with h5py.File(tmp_path / "egnn.h5", "a") as f:
        e = f["edges"][()]
        e[0, 0, 1] = e[0, 1, 0] = 0.0  # not a product of ±1 charges
        f["edges"][...] = e
    with pytest.raises(ValueError, match="must be the charge products"):
        load_particles(tmp_path / "egnn.h5", system="charged")


def test_generic_2d_multichannel_non_periodic_field_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-D file in PDEBench's group layout with C = 2 channels, no attributes at all (no coefficient, no
    periodic axis): `reproduce generic` runs the no-prior arm and writes its samples in the file's layout."""
    import h5py

    rng = np.random.default_rng(0)
    x, y, t = np.linspace(0, 1, 8), np.linspace(0, 1, 8), np.linspace(0, 1, 4)
    with h5py.File(tmp_path / "two.h5", "w") as f:
        for i in range(20):
            f[f"{i:04d}/data"] = rng.normal(size=(4, 8, 8, 2))
            for key, c in (("x", x), ("y", y), ("t", t)):
                f[f"{i:04d}/grid/{key}"] = c
    monkeypatch.chdir(tmp_path)
    args = ["reproduce", "generic", "--data", "two.h5", "--out", "res", "--arms", "no_prior", *FIELD_TINY]
    assert main(args) == 0
    res = json.loads((tmp_path / "res/results.json").read_text())
    assert set(res["arms"]) == {"no_prior"} and np.isfinite(res["arms"]["no_prior"]["rmse"]["mean"])
    assert (tmp_path / "res/report.html").is_file()  # the figures need no residual
    from physdiff.data.pdebench.generic import load_generic_fields

    path = tmp_path / "res/arms/no_prior/seed0/samples_prediction.h5"
    samples, system = load_generic_fields(path)
    with h5py.File(path) as f:
        idx = f["source_indices"][()]
    assert samples.fields.shape == (len(idx), 4, 2, 8, 8) and len(idx) == 2  # the test split: 10 % of 20
    assert system.periodic == () and system.channels == ("c0", "c1")
    reference, _ = load_generic_fields(tmp_path / "two.h5")
    np.testing.assert_allclose(samples.fields[:, 0], reference.fields[idx, 0], rtol=1e-6, atol=1e-6)  # given frame


def test_evaluate_prior_measures_built_in_laws_on_any_samples_file(tmp_path: Path) -> None:
    """`evaluate --prior energy --prior newton` on samples of a named system (no training needed: the reference
    rows written as samples, then perturbed): law:<name> is the floor on the rows themselves and grows with a
    perturbation; the system comes from the files (no --system)."""
    from physdiff.data.particles_h5 import load_particles, simulate_to_file
    from physdiff.experiments.config import preset_config
    from physdiff.experiments.particle_task import ParticleTask

    ref = tmp_path / "springs.h5"
    simulate_to_file("five-spring", ref, 20, 0, n_frames=8)
    data = load_particles(ref)
    task = ParticleTask(preset_config("five-spring"))
    idx = np.arange(5)
    rows = data.subset(idx)
    wave = 0.05 * np.sin(np.arange(8))[None, :, None, None]
    moves = {"same.h5": 0.0, "com.h5": wave, "spread.h5": wave * np.arange(5)[None, None, :, None]}
    for name, move in moves.items():
        samples = {"positions": rows.positions + move, "velocities": rows.velocities}
        task.write_samples(tmp_path / name, samples, rows, idx, "test", "prediction")
    out = {}
    for name in moves:
        args = ["evaluate", str(tmp_path / name), "--reference", str(ref), "--prior", "energy", "--prior", "newton"]
        assert main([*args, "--json", str(tmp_path / f"{name}.json")]) == 0
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())
    same, com, spread = out["same.h5"]["metrics"], out["com.h5"]["metrics"], out["spread.h5"]["metrics"]
    floor = out["same.h5"]["floor"]
    for law in ("law:energy", "law:newton"):
        assert same[law]["mean"] == pytest.approx(floor[law], rel=1e-9)
        assert spread[law]["mean"] > 10 * floor[law]
    # a centre of mass that accelerates breaks Newton's law (measured on absolute positions), not the energy
    assert com["law:newton"]["mean"] > 10 * floor["law:newton"]
    assert com["law:energy"]["mean"] == pytest.approx(floor["law:energy"], rel=1e-9)


def test_sweep_on_an_open_system_refuses_the_momentum_arm_alone(docs: Path) -> None:
    """A sweep on data with an external force: the momentum arm is left out with its one-line reason (the law and
    its measured drift), the user law's arm is swept; before, the refusal stopped the whole sweep."""
    (docs / "two_laws.yaml").write_text("priors:\n  - {name: momentum}\n  - {name: 'tethered_priors:DampedTether'}\n")
    args = ["sweep", "generic", "--data", "tethered.h5", "--out", "sw", "--config", "two_laws.yaml"]
    args += ["--grid", "priors.1.weight=0.1,1", *PARTICLE_TINY]
    assert main(args) == 0
    res = json.loads((docs / "sw/sweep.json").read_text())
    assert set(res["refused"]) == {"prior:momentum"} and "of its scale" in res["refused"]["prior:momentum"]
    for point in res["points"]:
        assert set(point["arms"]) == {"prior:tethered_priors:DampedTether"}
    assert not (docs / "sw/priors.1.weight-0.1/arms/prior_momentum").exists()
