"""Paper figures (particles, fields, training curves) and the self-contained HTML reports."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import LogNorm

from physdiff.data.particles_h5 import ParticleData
from physdiff.data.pdebench import FieldData
from physdiff.evaluation.field_plots import field_curves_figure, field_figure, plot_field_results
from physdiff.evaluation.plots import (
    conservation_figure,
    plot_particle_results,
    read_training_logs,
    training_figure,
    trajectory_figure,
)
from physdiff.evaluation.report import PNG_SIGNATURE, write_report, write_sweep_report
from physdiff.systems.pde_registry import get_pde_system
from physdiff.systems.registry import get_system

Image = pytest.importorskip("PIL.Image")

ARMS = ("no_prior", "prior:energy")


# ---------------------------------------------------------------------------------------------- fixtures
def _noisy(a: np.ndarray, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = a + scale * (np.abs(a).mean() + 1e-3) * rng.standard_normal(a.shape)
    out[:, 0] = a[:, 0]  # the conditioned first frame is kept
    return out


@pytest.fixture(scope="module")
def particles() -> ParticleData:
    system = get_system("three-body").with_settings(n_frames=6)
    d = system.simulate(4, seed=0)
    return ParticleData(d["positions"], d["velocities"], d["masses"], None, "three-body", dict(system.constants))


def _particle_samples(ref: ParticleData, scale: float, seed: int) -> dict[str, np.ndarray]:
    return {"positions": _noisy(ref.positions, scale, seed), "velocities": _noisy(ref.velocities, scale, seed + 1)}


def _logs(steps: int = 40) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    step = np.arange(1, steps + 1) * 5.0
    return {
        arm: {
            seed: {
                "step": step,
                "loss": np.exp(-step / 80) + 0.1 * (i + 1) + 0.01 * seed,
                "loss_score": np.exp(-step / 80),
            }
            for seed in (0, 1)
        }
        for i, arm in enumerate(ARMS)
    }


@pytest.fixture(scope="module")
def particle_files(particles, tmp_path_factory) -> tuple[Path, list[Path]]:
    per_seed = {
        arm: {s: _particle_samples(particles, 0.05 * (i + 1), 10 * s + i) for s in (0, 1)} for i, arm in enumerate(ARMS)
    }
    constraints = {
        "no_prior + projection:momentum+energy": {s: _particle_samples(particles, 0.02, 50 + s) for s in (0, 1)}
    }
    generated = {arm: (seeds[0]["positions"], seeds[0]["velocities"]) for arm, seeds in per_seed.items()}
    out = tmp_path_factory.mktemp("particle_plots")
    files = plot_particle_results(
        out, particles, generated, per_seed=per_seed, constraints=constraints, training_logs=_logs()
    )
    return out, files


@pytest.fixture(scope="module")
def advection() -> FieldData:
    sim = get_pde_system("advection").simulate(3, 0, nx=16, nt=8)
    return FieldData("advection", sim.fields, sim.coords, sim.parameters)


def _field_generated(data: FieldData, tasks=("prediction", "generation")) -> dict[str, dict[str, np.ndarray]]:
    return {
        arm: {t: _noisy(data.fields, 0.05 * (i + 1), i) for t in tasks}
        for i, arm in enumerate(("no_prior", "prior:residual"))
    }


@pytest.fixture(scope="module")
def field_files(advection, tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("field_plots")
    generated = _field_generated(advection, ("prediction",))
    per_seed = {arm: {0: per, 1: {t: u + 0.01 for t, u in per.items()}} for arm, per in generated.items()}
    constraints = {"no_prior + projection:residual": {0: generated["prior:residual"]}}
    return out, plot_field_results(out, advection, generated, per_seed=per_seed, constraints=constraints)


# ------------------------------------------------------------------------------------------------ checks
def _check_png(path: Path, min_dpi: float = 200.0) -> None:
    assert path.read_bytes().startswith(PNG_SIGNATURE), path
    with Image.open(path) as im:
        dpi = im.info.get("dpi")
        assert dpi is not None and min(dpi) >= min_dpi - 0.5, (path, dpi)  # the pHYs chunk
        assert min(im.size) >= 2 * min_dpi  # pixels = inches × dpi, every figure at least 2 in high and wide


def _check_pdf(path: Path) -> None:
    assert path.is_file() and path.read_bytes().startswith(b"%PDF"), path


def _overlaps(fig) -> list[str]:
    """Pairs of texts of different axes (titles, axis and tick labels, legends, suptitle) whose boxes
    intersect, and texts that leave the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):  # the tick labels drawn: ticks inside the view
            lo, hi = sorted(axis.get_view_interval())
            locs, labels = axis.get_majorticklocs(), axis.get_majorticklabels()
            texts += [
                t
                for loc, t in zip(locs, labels, strict=False)
                if lo - 1e-9 * abs(hi - lo) <= loc <= hi + 1e-9 * abs(hi - lo)
            ]
        boxes += [(i, t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text()]
    if fig._suptitle is not None:
        boxes.append((-1, "suptitle", fig._suptitle.get_window_extent(renderer)))
    boxes += [(-2 - j, "legend", leg.get_window_extent(renderer)) for j, leg in enumerate(fig.legends)]
    frame = fig.bbox
    bad = [
        f"outside: {txt!r}"
        for _, txt, b in boxes
        if b.x0 < frame.x0 - 1 or b.x1 > frame.x1 + 1 or b.y0 < frame.y0 - 1 or b.y1 > frame.y1 + 1
    ]
    for (i, a, ba), (j, b, bb) in itertools.combinations(boxes, 2):
        if i != j and ba.overlaps(bb) and ba.intersection(ba, bb).width > 1 and ba.intersection(ba, bb).height > 1:
            bad.append(f"{a!r} (axes {i}) overlaps {b!r} (axes {j})")
    return bad


# ------------------------------------------------------------------------------------------------- tests
def test_particle_figures_are_written_at_paper_resolution(particle_files):
    out, files = particle_files
    names = {p.name for p in files}
    for stem in ("trajectories", "conservation", "training_loss"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
        _check_png(out / f"{stem}.png")
        _check_pdf(out / f"{stem}.pdf")
    gif = out / "trajectories.gif"
    assert gif in files
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 6  # one frame per trajectory frame


def test_particle_figures_read_well(particles):
    generated = {arm: _particle_samples(particles, 0.05, i) for i, arm in enumerate(ARMS)}
    fig = trajectory_figure(particles, generated, samples=(0, 1, 2))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3 * 3  # three test samples × (ground truth + two arms)
    assert all(ax.get_xlabel() == "x" for ax in axes) and axes[0].get_ylabel() == "test sample 0\ny"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"particle 1", "particle 2", "particle 3", "conditioned frame 0"} <= set(legend)
    assert _overlaps(fig) == []

    per_seed = {
        arm: {s: _particle_samples(particles, 0.05 * (i + 1), s) for s in (0, 1, 2)} for i, arm in enumerate(ARMS)
    }
    rows = {"no_prior + projection:energy": {s: _particle_samples(particles, 0.01, s) for s in (0, 1)}}
    fig = conservation_figure(particles, per_seed, rows)
    ax = fig.axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_label() for line in dashed] == ["no_prior + projection:energy"]
    assert len(ax.collections) >= 3  # a seed band per arm and row, and the ground-truth floor band
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(ARMS) <= set(legend) and "ground-truth floor (simulator)" in legend
    assert _overlaps(fig) == []


def test_field_figures_are_written(field_files):
    out, files = field_files
    names = {p.name for p in files}
    for task in ("prediction",):
        for stem in (f"fields_{task}", f"fields_{task}_curves"):
            assert {f"{stem}.png", f"{stem}.pdf"} <= names
            _check_png(out / f"{stem}.png")
            _check_pdf(out / f"{stem}.pdf")


def test_field_panels_share_one_colour_scale_per_row(advection):
    generated = {arm: per["prediction"] for arm, per in _field_generated(advection, ("prediction",)).items()}
    ff = field_figure(advection, generated, "prediction")
    assert set(ff.groups.values()) == {"field", "error", "residual"}
    for key, images in ff.rows.items():
        shown = [im for im in images if im is not None]
        assert len(shown) >= 2
        assert all(im.norm is ff.norms[ff.groups[key]] for im in shown), key  # one norm object per row
        assert len({im.get_clim() for im in shown}) == 1, key
        assert ff.colorbars[key].mappable.norm is ff.norms[ff.groups[key]]  # the row's colour bar shows it
    assert ff.rows["error"][0] is None  # the reference has no error panel
    assert isinstance(ff.norms["residual"], LogNorm)
    # the field scale covers the ground truth and every arm
    lo, hi = ff.norms["field"].vmin, ff.norms["field"].vmax
    for u in [advection.fields, *generated.values()]:
        assert lo <= u[0].min() + 1e-12 and u[0].max() <= hi + 1e-12
    # physical axes from the coordinates: x across, t up, pixel edges halfway between the centres
    im = ff.rows["u#0"][0]
    x, t = advection.coords["x"], advection.coords["t"]
    dx, dt = x[1] - x[0], t[1] - t[0]
    assert np.allclose(im.get_extent(), [x[0] - dx / 2, x[-1] + dx / 2, t[0] - dt / 2, t[-1] + dt / 2])
    assert im.axes.get_xlabel() == "x" and im.axes.get_ylabel() == "t"
    assert _overlaps(ff.fig) == []

    # generation: two samples per column on one field scale, no error row
    generated = {arm: per["generation"] for arm, per in _field_generated(advection, ("generation",)).items()}
    ff = field_figure(advection, generated, "generation")
    assert [k for k, g in ff.groups.items() if g == "field"] == ["u#0", "u#1"] and "error" not in ff.rows
    assert all(im.norm is ff.norms["field"] for k in ("u#0", "u#1") for im in ff.rows[k])


def test_curves_against_time_and_steps(advection):
    generated = _field_generated(advection, ("prediction",))
    per_seed = {arm: {s: per["prediction"] + 0.01 * s for s in (0, 1, 2)} for arm, per in generated.items()}
    rows = {"no_prior + projection:residual": {0: generated["prior:residual"]["prediction"]}}
    fig = field_curves_figure(advection, per_seed, "prediction", rows)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["RMSE against the ground truth", "PDE residual RMS"]
    assert all(ax.get_xlabel() == "t" for ax in fig.axes)
    assert [line.get_label() for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"] == list(rows)
    assert _overlaps(fig) == []
    assert field_curves_figure(advection, per_seed, "generation") is not None  # the residual alone

    fig = training_figure(_logs())
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes]  # a log without loss_mean: one batch per point
    assert titles == ["total training loss (one batch per point)", "denoising (score) loss (one batch per point)"]
    assert all(ax.get_xlabel() == "training step" for ax in fig.axes)
    line = fig.axes[0].get_lines()[0]
    assert line.get_label() == "no_prior" and np.allclose(line.get_xdata(), _logs()["no_prior"][0]["step"])
    assert len(fig.axes[0].collections) == 2  # a band over the two seeds per arm
    assert _overlaps(fig) == []
    assert training_figure({"no_prior": {0: {"step": np.arange(3.0)}}}) is None  # no loss column: no figure


def test_shallow_water_shows_h_at_several_frames():
    sim = get_pde_system("shallow-water").simulate(2, 0, nx=12, ny=12, nt=6)
    data = FieldData("shallow-water", sim.fields, sim.coords, sim.parameters, channels=("h", "hu", "hv"))
    ff = field_figure(data, {"no_prior": _noisy(data.fields, 0.02, 0)}, "prediction", units={"x": "m", "y": "m"})
    h_rows = [k for k, g in ff.groups.items() if g == "field"]
    assert len(h_rows) == 3 and all(k.startswith("h@") for k in h_rows)
    norm = ff.norms["field"]
    assert all(im.norm is norm for k in h_rows for im in ff.rows[k])  # one h scale for every frame shown
    assert ff.rows[h_rows[0]][0].axes.get_xlabel() == "x [m]"
    assert [cb.ax.get_ylabel() for cb in ff.colorbars.values()][:3] == ["h"] * 3


def test_read_training_logs(tmp_path):
    run = tmp_path / "arms" / "prior_energy" / "seed3"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(
        "step,loss,loss_score,energy,grad_norm,lr,elapsed_s\n1,2.0,1.5,0.5,1,0.001,0.1\n2,1.0,0.8,0.2,1,0.001,0.2\n"
    )
    logs = read_training_logs(tmp_path, ["no_prior", "prior:energy"], [3])
    assert list(logs) == ["prior:energy"] and list(logs["prior:energy"]) == [3]
    assert np.array_equal(logs["prior:energy"][3]["loss"], [2.0, 1.0])


# ------------------------------------------------------------------------------------------------ report
class _Doc(HTMLParser):
    """Tables (by id: header cells and rows of cell texts), <img> sources and <pre> texts (by id)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list]] = {}
        self.imgs: list[str] = []
        self.pres: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._pre: str | None = None
        self._head = False
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = {"header": [], "rows": []}
        elif tag == "thead":
            self._head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "pre":
            self._pre = a.get("id", "")
            self.pres[self._pre] = ""
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            table = self.tables[self._table]
            if self._head:
                table["header"] = self._row
            else:
                table["rows"].append(self._row)
            self._row = None
        elif tag == "thead":
            self._head = False
        elif tag == "table":
            self._table = None
        elif tag == "pre":
            self._pre = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._pre is not None:
            self.pres[self._pre] += data


def _parse(path: Path) -> _Doc:
    doc = _Doc()
    doc.feed(path.read_text(encoding="utf-8"))
    return doc


def _results() -> dict:
    per = {"no_prior": [0.30, 0.32, 0.31], "prior:energy": [0.20, 0.22, 0.25]}
    arms = {
        arm: {
            "traj_error": {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "per_seed": v, "nonfinite": 0},
            "energy_error": {
                "mean": 0.1 * float(np.mean(v)),
                "std": 0.01,
                "per_seed": [0.1 * x for x in v],
                "nonfinite": 0,
            },
        }
        for arm, v in per.items()
    }
    pair = {"mean_diff": -0.0867, "ci95": [-0.1217, -0.0516], "better_seeds": 3, "n": 3}
    return {
        "experiment": "three-body",
        "split": "test",
        "preset": "quick",
        "seeds": [0, 1, 2],
        "metric_tasks": {"traj_error": "prediction", "energy_error": "prediction"},
        "arms": arms,
        "paired": {
            "prior:energy": {"traj_error": pair, "energy_error": {**pair, "ci95": [-0.02, 0.01], "better_seeds": 2}}
        },
        "floor": {"energy_error": 1e-9},
        "sampling_constraints": {"no_prior + projection:momentum+energy": arms["prior:energy"]},
        "sampling_constraints_paired": {
            "no_prior + projection:momentum+energy": {"traj_error": {**pair, "against": "no_prior"}}
        },
        "data": "/data/three-body <n=10>.h5",
        "wall_time_s": 12.3,
    }


def test_report_is_self_contained_html(tmp_path, field_files):
    out_figs, files = field_files
    config = "experiment: three-body\nnote: '<script>alert(1)</script> & more'\n"
    path = write_report(
        tmp_path,
        _results(),
        table_md="| method | traj_error |\n|---|---|\n",
        config_yaml=config,
        figures=files,
        command="physdiff reproduce three-body --seeds 0 1 2 <&>",
        versions={"python": "3.11", "torch": "2.x", "numpy": "1.x", "physdiff": "0.1"},
    )
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text  # every input text escaped
    doc = _parse(path)
    assert doc.scripts == 0
    results = doc.tables["results"]
    assert results["header"] == ["method", "traj_error (prediction)", "energy_error (prediction)"]
    labels = [r[0] for r in results["rows"]]
    assert labels[:2] == ["no_prior", "prior:energy"] and "ground-truth floor" in labels
    assert "ratio prior:energy : no_prior" in labels
    floor = results["rows"][labels.index("ground-truth floor")]
    assert floor[1] == "—" and floor[2] == "1e-09"
    paired = doc.tables["paired"]
    assert paired["header"][:5] == ["arm", "metric", "mean Δ (arm − no_prior)", "95 % CI", "better seeds"]
    row = paired["rows"][0]
    assert row[0] == "prior:energy" and row[3] == "[-0.122, -0.0516]" and row[4] == "3/3" and row[5] == "yes: better"
    assert paired["rows"][1][5] == "no"  # the interval [-0.02, 0.01] contains 0
    assert doc.tables["per-seed"]["header"] == ["arm", "metric", "seed 0", "seed 1", "seed 2"]
    assert [r[0] for r in doc.tables["constraints"]["rows"]][0] == "no_prior + projection:momentum+energy"
    assert doc.tables["constraints-paired"]["rows"][0][1] == "no_prior"
    versions = {r[0]: r[1] for r in doc.tables["versions"]["rows"]}
    assert set(versions) == {"python", "torch", "numpy", "physdiff"}
    run = {r[0]: r[1] for r in doc.tables["run"]["rows"]}
    assert run["command"] == "physdiff reproduce three-body --seeds 0 1 2 <&>" and run["seeds"] == "0, 1, 2"
    assert run["wall time"] == "12.3 s"
    assert doc.pres["config"] == config
    # every figure is embedded as a PNG data URI that decodes to the written file
    pngs = [p for p in files if p.suffix == ".png"]
    assert len(doc.imgs) == len(pngs) >= 2
    for src, png in zip(doc.imgs, pngs, strict=True):
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE) and data == png.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    assert 'href="' in text and ".pdf" in text  # the PDF versions are linked


def test_sweep_report(tmp_path):
    sweep = {
        "experiment": "three-body",
        "preset": "quick",
        "split": "val",
        "seeds": [0, 1],
        "grid": {"priors.0.weight": ["0.1", "1"]},
        "fixed_overrides": ["train.steps=10"],
        "max_worse": 0.05,
        "metrics": ["traj_error", "energy_error"],
        "baseline": {"traj_error": 0.3, "energy_error": 0.03},
        "floor": {"energy_error": 1e-9},
        "points": [
            {
                "overrides": ["priors.0.weight=0.1"],
                "arms": {
                    "prior:energy": {
                        "mean": {"traj_error": 0.28, "energy_error": 0.02},
                        "ratio": {"traj_error": 0.933, "energy_error": 0.667},
                        "score": 0.789,
                        "below_floor": [],
                        "worse": [],
                    }
                },
            },
            {
                "overrides": ["priors.0.weight=1"],
                "arms": {
                    "prior:energy": {
                        "mean": {"traj_error": 0.36, "energy_error": 0.01},
                        "ratio": {"traj_error": 1.2, "energy_error": 0.333},
                        "score": 0.632,
                        "below_floor": [],
                        "worse": ["traj_error"],
                    }
                },
            },
        ],
        "best": {
            "prior:energy": {"overrides": ["priors.0.weight=0.1"], "score": 0.789, "ratio": {"traj_error": 0.933}}
        },
    }
    path = write_sweep_report(tmp_path, sweep, command="physdiff sweep three-body", versions={"python": "3.11"})
    doc = _parse(path)
    table = doc.tables["sweep"]
    assert table["header"] == [
        "arm",
        "setting",
        "traj_error (ratio)",
        "energy_error (ratio)",
        "score",
        "below floor",
        "worse",
        "eligible",
        "best",
    ]
    rows = {r[1]: r for r in table["rows"] if r[0] == "prior:energy"}
    assert rows["priors.0.weight=0.1"][-2:] == ["yes", "★ best"] and rows["priors.0.weight=0.1"][2] == "0.28 (0.933)"
    assert rows["priors.0.weight=1"][-3:] == ["traj_error", "no", ""]
    assert [r[0] for r in table["rows"]][:2] == ["no_prior", "ground-truth floor"]
    assert doc.tables["best"]["rows"][0][:3] == ["prior:energy", "priors.0.weight=0.1", "0.789"]
    assert doc.tables["grid"]["rows"][0] == ["priors.0.weight", "0.1, 1"]


# ------------------------------------------------------- figures that fit: 1, 2 and 4 arms, a long user prior
LONG = "prior:my_priors.py:DampedSpringNewtonWithAVeryLongUserPriorClassName4"
ARM_SETS = {1: [LONG], 2: ["no_prior", LONG], 4: ["no_prior", "prior:energy", "prior:momentum", LONG]}


def _tick_overlaps(fig) -> list[str]:
    """Tick labels of one axis that overlap each other (the drawn ticks, after a canvas draw)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bad = []
    for i, ax in enumerate(fig.axes):
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [t.get_window_extent(renderer) for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            lo, hi = sorted(axis.get_view_interval())
            locs = axis.get_majorticklocs()
            boxes = [b for b, loc in zip(boxes, locs, strict=False) if lo <= loc <= hi]
            for a, b in itertools.combinations(boxes, 2):
                inter = a.intersection(a, b)
                if a.overlaps(b) and inter is not None and inter.width > 1 and inter.height > 1:
                    bad.append(f"axes {i}: tick labels overlap")
    return bad


def _empty_axes(fig) -> list[int]:
    """Visible axes that draw nothing (no line, image, collection, patch or text)."""
    return [
        i
        for i, ax in enumerate(fig.axes)
        if ax.get_visible() and not (ax.lines or ax.images or ax.collections or ax.patches or ax.texts)
    ]


def _check_fits(fig) -> None:
    assert _overlaps(fig) == []
    assert _tick_overlaps(fig) == []
    assert _empty_axes(fig) == []


@pytest.mark.parametrize("n_arms", [1, 2, 4])
def test_figures_fit_with_many_arms_and_a_long_prior_name(n_arms, particles, advection):
    arms = ARM_SETS[n_arms]
    generated = {arm: _particle_samples(particles, 0.05 * (i + 1), i) for i, arm in enumerate(arms)}
    fig = trajectory_figure(particles, generated, samples=(0, 1))
    _check_fits(fig)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert all(t.count("\n") <= 1 for t in titles)  # wrapped to two lines at most
    assert not any("my_priors.py" in t for t in titles)  # the class names the arm, not its import path
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(LONG in t.replace("\n", "") for t in legend)  # the full label is in the legend (wrapped)

    per_seed = {
        arm: {s: _particle_samples(particles, 0.05 * (i + 1), 10 * s + i) for s in (0, 1)} for i, arm in enumerate(arms)
    }
    fig = conservation_figure(particles, per_seed)
    _check_fits(fig)
    logs = {arm: {0: {"step": np.arange(1, 21) * 5.0, "loss": np.linspace(2, 1, 20) + i}} for i, arm in enumerate(arms)}
    _check_fits(training_figure(logs))

    fields = {arm: _noisy(advection.fields, 0.05 * (i + 1), i) for i, arm in enumerate(arms)}
    for task in ("prediction", "generation"):
        ff = field_figure(advection, fields, task)
        _check_fits(ff.fig)
        assert not any("my_priors.py" in ax.get_title() for ax in ff.fig.axes)
    _check_fits(field_curves_figure(advection, {arm: {0: u} for arm, u in fields.items()}, "prediction"))


def test_generic_particles_draw_only_what_exists(particles):
    generic = ParticleData(particles.positions, particles.velocities, particles.masses, None, "generic", {"dt": 0.1})
    per_seed = {arm: {0: _particle_samples(particles, 0.05, i)} for i, arm in enumerate(ARMS)}
    fig = conservation_figure(generic, per_seed)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 1 and titles[0].startswith("momentum")  # no empty energy or Newton panel
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any("simulator" in t for t in legend)
    assert "Newton" not in fig._suptitle.get_text() and "dashed" not in fig._suptitle.get_text()
    _check_fits(fig)


def test_identical_curves_stay_distinguishable(particles):
    same = _particle_samples(particles, 0.05, 0)
    fig = conservation_figure(particles, {"no_prior": {0: same}, "prior:energy": {0: same}})
    lines = {line.get_label(): line for line in fig.axes[0].get_lines() if line.get_label() in ARMS}
    a, b = lines["no_prior"], lines["prior:energy"]
    np.testing.assert_array_equal(a.get_ydata(), b.get_ydata())
    assert a.get_linewidth() > b.get_linewidth() and a.get_zorder() <= b.get_zorder()  # the later one drawn inside


def test_loss_plot_is_the_interval_mean_with_validation_and_never_empty():
    # train.steps < train.log_every: one row, at the last step
    one = {"no_prior": {0: {"step": np.array([7.0]), "loss": np.array([0.9]), "loss_mean": np.array([1.2])}}}
    fig = training_figure(one)
    _check_fits(fig)
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "no_prior"]
    assert line.get_marker() == "o" and list(line.get_ydata()) == [1.2]  # the interval mean, a visible point
    assert "mean per logging interval" in fig.axes[0].get_title().replace("\n", " ")
    logs = {
        "no_prior": {
            0: {
                "step": np.arange(1, 41) * 5.0,
                "loss": np.full(40, 3.0),
                "loss_mean": np.linspace(2, 1, 40),
                "val_step": np.array([100.0, 200.0]),
                "val_loss": np.array([1.5, 1.1]),
            }
        }
    }
    fig = training_figure(logs)
    ys = [list(ln.get_ydata()) for ln in fig.axes[0].get_lines()]
    assert [1.5, 1.1] in ys and not any(y == [3.0] * 40 for y in ys)
    assert "validation loss" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_metrics_log_writes_interval_means_and_namespaced_tensorboard_tags(tmp_path):
    from physdiff.training.metrics_log import MetricsLog, log_hparams

    calls: list[tuple] = []

    class Writer:  # the writer interface physdiff uses (tensorboard is optional)
        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def add_hparams(self, hparams, metrics, run_name=None):
            calls.append(("hparams", hparams, metrics))

        def close(self):
            pass

    log = MetricsLog(tmp_path / "metrics.csv", start=0, total=4, enabled=True, progress=False, tensorboard=False)
    log.tb = Writer()
    for loss in (4.0, 2.0, 3.0):
        log.advance(loss)
    log.write({"step": 3, "loss": 3.0, "loss_score": 2.5})
    log.write_validation(3, 1.25)
    log.close()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["loss_mean"]) == pytest.approx(3.0) and float(rows[0]["loss"]) == 3.0
    tags = {c[0] for c in calls}
    assert {"train/loss", "train/loss_mean", "train/loss_score", "val/loss"} <= tags
    assert not {"loss", "val_loss"} & tags
    log_hparams(Writer(), {"arm": "no_prior", "lr": 1e-3, "grid": [1, 2]}, {"traj_error": 0.5, "bad": float("nan")})
    hp = calls[-1]
    assert hp[1]["grid"] == "[1, 2]" and hp[2] == {"hparams/traj_error": 0.5}


# ---------------------------------------------------- one metric order and one number format: table.md = report
def _md_headers(table: str) -> list[list[str]]:
    """The metric columns of each markdown table (``| method | ... |`` header rows)."""
    return [
        [c.strip() for c in ln.strip("|").split("|")][1:] for ln in table.splitlines() if ln.startswith("| method |")
    ]


def test_table_md_and_report_list_the_same_metrics_in_the_same_order(tmp_path):
    from physdiff.experiments.tables import markdown_table, table_keys, write_results

    res = _results()
    res["metric_tasks"] = {"traj_error": "prediction", "energy_error": "prediction"}
    for i, arm in enumerate(res["arms"].values()):  # metrics beyond the table's, in a scrambled order
        for k in ("max_error", "frmse_high", "dynamic_error", "frmse_low", "nrmse"):
            v = [0.5 + i, 0.6 + i, 0.7 + i]
            arm[k] = {"mean": float(np.mean(v)), "std": 0.1, "per_seed": v, "nonfinite": 0}
    # a ratio of 1e-7: prior:energy's energy error far below no_prior's
    res["arms"]["prior:energy"]["energy_error"]["mean"] = 3.1e-8
    res["arms"]["no_prior"]["energy_error"]["mean"] = 0.31
    res["sampling_constraints"] = {}
    md = markdown_table(res, table_keys(res))
    write_results(tmp_path, res, md)
    headers = _md_headers(md)
    assert len(headers) == 2  # the table's metrics, then the others in a second table
    main, more = headers
    assert main == ["traj_error (prediction)", "energy_error (prediction)"]
    assert more == [
        "nrmse (prediction)",
        "frmse_low (prediction)",
        "frmse_high (prediction)",
        "max_error (prediction)",  # PDEBench's, on prediction samples
        "dynamic_error",
    ]
    path = write_report(tmp_path, res, table_md=md, config_yaml="", figures=[], command=None, versions={})
    doc = _parse(path)
    assert doc.tables["results"]["header"][1:] == main
    assert doc.tables["results-more"]["header"][1:] == more
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert [k for k in on_disk["arms"]["no_prior"]] == table_keys(res)  # results.json in the same order
    # no "0.000" for a nonzero ratio, in either file
    ratio_md = next(ln for ln in md.splitlines() if ln.startswith("| ratio prior:energy : no_prior"))
    cells = [c.strip() for c in ratio_md.strip("|").split("|")][1:]
    assert cells[1] == "1e-07"
    ratio_html = next(r for r in doc.tables["results"]["rows"] if r[0] == "ratio prior:energy : no_prior")
    assert ratio_html[2] == "1e-07"
    for text in (md, path.read_text()):
        assert "0.000 " not in text and "0.000<" not in text and "| 0.000 |" not in text


def test_format_number():
    from physdiff.evaluation.statistics import format_number

    assert format_number(1e-7, 3) == "1e-07" and format_number(1.234e-5) == "1.234e-05"
    assert format_number(0.000999) == "9.99e-04" and format_number(0.001) == "0.001"
    assert format_number(0.8661, 3) == "0.866" and format_number(0.0) == "0"
    assert format_number(0.97, 3, decimals=3) == "0.970" and format_number(2.5e-7, 3, decimals=3) == "2.5e-07"
    assert format_number(-0.0123, 3, sign=True) == "-0.0123" and format_number(0.5, 3, sign=True) == "+0.5"
    assert format_number(float("nan")) == "NaN" and format_number(None) == "—" and format_number(2e6) == "2e+06"
    # positional below 1e5 whatever the digits (".2g" writes 197 as 2e+02)
    assert format_number(197.3, 2) == "200" and format_number(12345.6) == "12350" and format_number(36.517) == "36.52"
    assert format_number(280.01) == "280" and format_number(-99.96, 3) == "-100" and format_number(1.5, 2) == "1.5"


def test_report_records_version_commit_device_and_world_size(tmp_path):
    from physdiff._version import __version__
    from physdiff.evaluation.report import collect_versions

    versions = collect_versions()
    assert versions["physdiff"] == __version__  # the imported package, not stale installed metadata
    data = tmp_path / "data" / "three-body.h5"  # the harness hands the report an absolute path
    res = _results() | {"device": "cuda:0", "world_size": 2, "data": str(data)}
    doc = _parse(write_report(tmp_path, res, table_md="", config_yaml="", figures=[], command=None))
    run = {r[0]: r[1] for r in doc.tables["run"]["rows"]}
    assert run["device"] == "cuda:0" and run["world size"] == "2"
    assert run["data"] == "data/three-body.h5" and str(tmp_path) not in (tmp_path / "report.html").read_text()
    assert {r[0]: r[1] for r in doc.tables["versions"]["rows"]}["physdiff"] == __version__
