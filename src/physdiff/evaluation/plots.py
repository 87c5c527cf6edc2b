"""Figures of particle results (trajectories, conservation over time, an animation) and of training curves.

Every figure is drawn on its own :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot, no global
backend switch) in a constrained layout, and saved as PNG (``dpi`` ≥ 200) and PDF by :func:`save_figure`.
The builders (:func:`trajectory_figure`, :func:`conservation_figure`, :func:`training_figure`) return the
figure, so tests and notebooks can inspect it; the ``plot_*`` functions write the files and return their
paths. Nothing here reads files except :func:`read_training_logs` (the ``metrics.csv`` of run folders).

Inputs:

* ``generated``: ``{arm: (positions, velocities)}`` (one seed), each ``[N, L, K, D]`` row-aligned with the
  reference (the evaluation split);
* ``per_seed``: ``{arm: {seed: samples}}``, ``constraints``: ``{"<arm> + <mode>:<priors>": {seed: samples}}``
  — a sample set is a ``(positions, velocities)`` tuple, a mapping with ``positions``/``velocities`` (a
  task's ``Samples``), a ``ParticleData``, or ``{subtask: one of those}`` (the first sub-task is taken);
* ``training_logs``: ``{arm: {seed: {column: array}}}`` — the columns of ``metrics.csv`` (``step``,
  ``loss``, ``loss_score``, prior terms, ``grad_norm``, ``lr``, ``elapsed_s``).
"""

from __future__ import annotations

import csv
import importlib.util
import math
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from physdiff.data.particles_h5 import ParticleData
from physdiff.evaluation.statistics import arm_label
from physdiff.outputs import atomic_open

__all__ = [
    "STYLE",
    "new_figure",
    "save_figure",
    "arm_colours",
    "arm_widths",
    "fit_label",
    "seed_band",
    "set_title",
    "figure_legend",
    "trajectory_figure",
    "conservation_figure",
    "conservation_curves",
    "training_figure",
    "animate_trajectory",
    "plot_particle_results",
    "plot_training_curves",
    "read_training_logs",
]

#: matplotlib settings of every figure (sizes for a two-column paper)
STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # TrueType in PDFs (editable text, accepted by publishers)
    "savefig.bbox": "standard",
}
DEFAULT_FORMATS = ("png", "pdf")
BANDS = ("minmax", "std")
RV = tuple[np.ndarray, np.ndarray]


# ----------------------------------------------------------------------------------------------- shared
def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` × ``height`` inches with a constrained layout and an Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_dir: str | Path, stem: str, *, dpi: int = 200, formats=DEFAULT_FORMATS) -> list[Path]:
    """Save ``fig`` as ``out_dir/stem.<format>`` for each format (PNG at ``dpi``, ≥ 200); returns the paths."""
    if dpi < 200:
        raise ValueError(f"figures are saved at 200 dpi or more, got dpi={dpi}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        with atomic_open(path, "wb") as f:  # physdiff.outputs: atomic, links refused, the user's umask
            fig.savefig(f, dpi=dpi, format=fmt, metadata=_metadata(fmt))
        paths.append(path)
        if fig.get_layout_engine() is not None:  # laid out once: keep those positions for the other formats
            fig.set_layout_engine("none")
    return paths


def _metadata(fmt: str) -> dict[str, str] | None:
    if fmt == "png":
        return {"Software": "physdiff (matplotlib)"}
    if fmt == "pdf":
        return {"Creator": "physdiff (matplotlib)"}
    return None


def arm_colours(names: Sequence[str]) -> dict[str, Any]:
    """A colour per arm (``no_prior`` first, tab10 order); ``"<arm> + <constraint>"`` rows take their arm's."""
    palette = matplotlib.colormaps["tab10"].colors
    arms = [n for n in names if " + " not in n]
    arms += [n.split(" + ", 1)[0] for n in names if " + " in n and n.split(" + ", 1)[0] not in arms]
    out = {a: palette[i % len(palette)] for i, a in enumerate(arms)}
    for n in names:
        if n not in out:
            out[n] = out[n.split(" + ", 1)[0]]
    return out


def arm_widths(names: Sequence[str], thin: float = 1.0, step: float = 1.0) -> dict[str, float]:
    """A line width per row, the first widest and each later one ``step`` narrower (drawn on top, so equal
    curves stay visible as a coloured core inside a wider line of another colour)."""
    n = len(names)
    return {name: thin + step * (n - 1 - i) for i, name in enumerate(names)}


def fit_label(text: str, width_in: float, fontsize: float, max_lines: int = 2) -> str:
    """``text`` wrapped to ``width_in`` inches at ``fontsize`` (at most ``max_lines`` lines; the rest
    abbreviated with "…"), breaking after ``:``, ``_``, ``+`` and spaces, inside long words only where needed."""
    chars = max(6, int(width_in * 72.0 / (0.62 * fontsize)))
    spaced = text.replace(":", ": ").replace("_", "_ ").replace("+", "+ ")
    lines = [ln.replace(": ", ":").replace("_ ", "_").replace("+ ", "+") for ln in textwrap.wrap(spaced, chars)]
    lines = [ln for ln in lines if ln] or [text]
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [lines[max_lines - 1][: chars - 1] + "…"]
    return "\n".join(lines)


def seed_band(curves: Sequence[np.ndarray], band: str = "minmax") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over seeds of per-seed curves ``[S, T]``: ``minmax`` (the seeds' range) or ``std``
    (± 1 sample std, ddof = 1; no band for one seed)."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    c = np.asarray(curves, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(c, axis=0)
        if band == "minmax":
            return mean, np.nanmin(c, axis=0), np.nanmax(c, axis=0)
        std = np.nanstd(c, axis=0, ddof=1) if len(c) > 1 else np.zeros_like(mean)
    return mean, mean - std, mean + std


def _band_label(band: str, n_seeds: int) -> str:
    if n_seeds < 2:
        return "one seed"
    return f"band: {'min–max' if band == 'minmax' else '± 1 std'} over {n_seeds} seeds"


def set_title(fig: Figure, title: str, note: str = "") -> None:
    """A figure title, and under it a smaller note; both wrapped to the figure's width."""
    width = fig.get_figwidth() * 72.0
    lines = textwrap.wrap(title, max(20, int(width / (0.55 * STYLE["figure.titlesize"]))))
    if note:
        lines += textwrap.wrap(note, max(20, int(width / (0.55 * STYLE["font.size"]))))
    fig.suptitle("\n".join(lines), fontsize=STYLE["figure.titlesize"] if not note else STYLE["font.size"])


def figure_legend(fig: Figure, handles: Sequence[Any]) -> None:
    """A legend below the axes with as many columns as fit the figure's width."""
    if not handles:
        return
    for h in handles:  # a label longer than the figure is wide: wrapped
        h.set_label(fit_label(h.get_label(), fig.get_figwidth() - 0.7, STYLE["legend.fontsize"], max_lines=3))
    longest = max(len(line) for h in handles for line in h.get_label().split("\n"))
    entry = (longest * 0.55 * STYLE["legend.fontsize"] + 36) / 72  # inches: text + handle + padding
    ncol = max(1, min(len(handles), int(fig.get_figwidth() * 0.95 // entry)))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False)


def _unit(axis: str, units: Mapping[str, str] | None) -> str:
    u = (units or {}).get(axis)
    return f"{axis} [{u}]" if u else axis


def _positive_floor(values: Sequence[np.ndarray], decades: float = 10.0) -> float | None:
    """A lower y-limit for a log axis: the smallest positive value, no more than ``decades`` below the largest."""
    flat = np.concatenate([np.ravel(v) for v in values]) if values else np.zeros(0)
    flat = flat[np.isfinite(flat) & (flat > 0)]
    if not flat.size:
        return None
    return max(float(flat.min()), float(flat.max()) * 10.0**-decades) / 2.0


# ------------------------------------------------------------------------------------ particle inputs
def _as_rv(samples: Any) -> RV:
    """(positions, velocities) of a sample set in any accepted form (module docstring)."""
    if isinstance(samples, ParticleData) or hasattr(samples, "velocities"):
        return np.asarray(samples.positions), np.asarray(samples.velocities)
    if isinstance(samples, Mapping):
        if "positions" in samples:
            return np.asarray(samples["positions"]), np.asarray(samples["velocities"])
        if samples:  # {subtask: samples}
            return _as_rv(next(iter(samples.values())))
    if isinstance(samples, Sequence) and len(samples) == 2:
        return np.asarray(samples[0]), np.asarray(samples[1])
    raise TypeError(f"cannot read particle samples from {type(samples).__name__}")


def _per_seed(
    generated: Mapping[str, Any] | None, per_seed: Mapping[str, Mapping[int, Any]] | None
) -> dict[str, dict[int, RV]]:
    if per_seed:
        return {arm: {int(s): _as_rv(v) for s, v in seeds.items()} for arm, seeds in per_seed.items() if seeds}
    return {arm: {0: _as_rv(v)} for arm, v in (generated or {}).items()}


# ---------------------------------------------------------------------------------------- trajectories
def trajectory_figure(
    ref: ParticleData,
    generated: Mapping[str, Any],
    samples: Sequence[int] = (0, 1, 2),
    *,
    units: Mapping[str, str] | None = None,
    max_arms: int = 4,
) -> Figure:
    """Rows: test samples; columns: ground truth and each arm. x–y paths of every particle (a colour per
    particle), the conditioned frame 0 marked by a star, the ground truth drawn faintly under each arm."""
    arms = {a: _as_rv(v) for a, v in list(generated.items())[:max_arms]}
    samples = [s for s in samples if 0 <= s < ref.n] or [0]
    cols = [("ground truth", ref.positions)] + [(a, rv[0]) for a, rv in arms.items()]
    n_particles, dim = ref.positions.shape[2], ref.positions.shape[3]
    colours = matplotlib.colormaps["tab10"].colors
    panel = 2.3
    with matplotlib.rc_context(STYLE):
        fig = new_figure(panel * len(cols) + 0.3, panel * len(samples) + 0.9)
        axes = fig.subplots(len(samples), len(cols), squeeze=False)
        titles = {name: fit_label(arm_label(name), panel - 0.2, STYLE["axes.titlesize"]) for name, _ in cols}
        for r, s in enumerate(samples):
            lim = _square_limits([pos[s, :, :, :2] for _, pos in cols], ref.positions[s, :, :, :2])
            for c, (name, pos) in enumerate(cols):
                ax = axes[r, c]
                if c > 0:
                    for k in range(n_particles):
                        ax.plot(*ref.positions[s, :, k, :2].T, color="0.55", lw=0.8, ls=":", zorder=1)
                for k in range(n_particles):
                    col = colours[k % len(colours)]
                    ax.plot(*pos[s, :, k, :2].T, color=col, lw=1.1, marker="o", ms=1.6, zorder=2)
                    ax.plot(*pos[s, 0, k, :2], ls="none", marker="*", ms=9, mfc=col, mec="black", mew=0.6, zorder=3)
                ax.set(xlim=lim[0], ylim=lim[1], aspect="equal")
                if r == 0:
                    ax.set_title(titles[name])
                ax.set_xlabel(_unit("x", units))
                ax.set_ylabel(f"test sample {s}\n{_unit('y', units)}" if c == 0 else "")
                if c > 0:
                    ax.tick_params(labelleft=False)
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4))
                ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4))
        handles = [
            Line2D([], [], color=colours[k % len(colours)], lw=1.1, label=f"particle {k + 1}")
            for k in range(n_particles)
        ]
        handles += [
            Line2D([], [], ls="none", marker="*", ms=9, mfc="white", mec="black", label="conditioned frame 0"),
            Line2D([], [], color="0.55", lw=0.8, ls=":", label="ground truth (under each arm)"),
        ]
        handles += [  # a column title that had to be shortened: its full label
            Line2D([], [], ls="none", label=f"{arm_label(name)} = {name}")
            for name, _ in cols[1:]
            if arm_label(name) != name or "…" in titles[name]
        ]
        figure_legend(fig, handles)
        proj = " (x–y projection)" if dim > 2 else ""
        set_title(fig, f"{ref.system}: generated trajectories given frame 0{proj}")
    return fig


def _square_limits(paths: Sequence[np.ndarray], truth: np.ndarray, cap: float = 3.0) -> tuple[tuple, tuple]:
    """Equal-span x/y limits covering every panel's points, at most ``cap`` times the ground truth's span."""
    pts = np.concatenate([p.reshape(-1, 2) for p in paths])
    pts = pts[np.isfinite(pts).all(1)]
    t = truth.reshape(-1, 2)
    centre = (t.min(0) + t.max(0)) / 2
    span_t = float((t.max(0) - t.min(0)).max()) or 1.0
    span = float(np.abs(pts - centre).max()) * 2 if len(pts) else span_t
    half = min(span, cap * span_t) / 2 * 1.08
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


# ---------------------------------------------------------------------------------------- conservation
def _constraint_style(row: str, rows: Mapping[str, Any]) -> Any:
    """A line style per sampling constraint (the part after ``" + "``), the same for every arm: dashed,
    dotted, dash-dotted, then custom dashes."""
    labels = sorted({r.split(" + ", 1)[-1] for r in rows})
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2))]
    return styles[labels.index(row.split(" + ", 1)[-1]) % len(styles)]


def conservation_curves(ref: ParticleData, positions: np.ndarray, velocities: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame errors of trajectories ``[N, L, K, D]`` row-aligned with ``ref``, each ``[N, L]``: ``energy``,
    ``momentum`` and ``newton`` (:func:`physdiff.evaluation.particle_metrics.conservation_curves`; charges
    enter the physics of charged particles, a system without forces has NaN energy and Newton curves)."""
    from physdiff.evaluation import particle_metrics

    return particle_metrics.conservation_curves(ref, positions, velocities)


_CONSERVATION_PANELS = (
    ("energy", "energy error |E_l − E_0|"),
    ("momentum", "momentum error ‖P_l − P_0‖"),
    ("newton", "Newton residual ‖m a_l − F_l‖"),
)


def conservation_figure(
    ref: ParticleData,
    per_seed: Mapping[str, Mapping[int, Any]],
    constraints: Mapping[str, Mapping[int, Any]] | None = None,
    *,
    band: str = "minmax",
) -> Figure:
    """Energy, momentum and Newton-residual error against frame: per arm the mean over seeds of the mean over
    test samples (solid) with a seed band; sampling-constraint rows dashed in their arm's colour; the ground
    truth's own per-frame error as a grey floor band."""
    arms = {a: {s: _as_rv(v) for s, v in seeds.items()} for a, seeds in per_seed.items() if seeds}
    extra = {a: {s: _as_rv(v) for s, v in seeds.items()} for a, seeds in (constraints or {}).items() if seeds}
    colours = arm_colours(list(arms) + list(extra))
    widths = arm_widths(list(arms))
    truth = conservation_curves(ref, ref.positions, ref.velocities)
    curves_of = {
        name: [conservation_curves(ref, r, v) for _, (r, v) in sorted(seeds.items())]
        for rows in (arms, extra)
        for name, seeds in rows.items()
    }
    # a law the data's system cannot evaluate (generic particles: no energy, no forces) gets no panel
    panels = [
        (key, title)
        for key, title in _CONSERVATION_PANELS
        if np.isfinite(truth[key]).any() or any(np.isfinite(c[key]).any() for cs in curves_of.values() for c in cs)
    ]
    frames = np.arange(ref.positions.shape[1])
    n_seeds = max((len(s) for s in arms.values()), default=1)
    simulated = getattr(ref.get_system(), "has_forces", True)
    with matplotlib.rc_context(STYLE):
        fig = new_figure(max(2.4 * len(panels) + 0.6, 4.8), 3.2)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        handles: list[Any] = []
        for i, (key, title) in enumerate(panels):
            ax = axes[i]
            plotted = [truth[key].mean(0)[1:]]
            for rows, dashed in ((arms, False), (extra, True)):
                for name in rows:
                    curves = [c[key].mean(0) for c in curves_of[name]]
                    mean, lo, hi = seed_band(curves, band)
                    ls = _constraint_style(name, extra) if dashed else "-"
                    lw = 1.3 if dashed else widths[name]
                    (line,) = ax.plot(frames[1:], mean[1:], ls=ls, color=colours[name], lw=lw, label=arm_label(name))
                    if len(curves) > 1:
                        ax.fill_between(
                            frames[1:], lo[1:], hi[1:], color=colours[name], alpha=0.15 if not dashed else 0.08, lw=0
                        )
                    plotted += [mean[1:], lo[1:], hi[1:]]
                    if i == 0:
                        handles.append(line)
            bottom = _positive_floor(plotted)
            gt = truth[key].mean(0)
            if bottom is not None:
                ax.set_yscale("log", nonpositive="mask")
                ax.fill_between(frames[1:], bottom, np.maximum(gt[1:], bottom), color="0.6", alpha=0.35, lw=0, zorder=0)
                ax.plot(frames[1:], gt[1:], color="0.35", lw=0.9, zorder=1)
                ax.set_ylim(bottom=bottom)
                if not np.nanmax(gt[1:], initial=0.0) > bottom:  # conserved to round-off: say so
                    ax.text(0.03, 0.04, f"ground truth < {bottom:.0e}", transform=ax.transAxes, color="0.3", fontsize=7)
            ax.set_title(fit_label(title, 2.2, STYLE["axes.titlesize"]))
            ax.set_xlabel(fit_label(f"frame l (t = l·Δt, Δt = {ref.get_system().dt:g})", 2.2, STYLE["axes.labelsize"]))
            ax.xaxis.get_major_locator().set_params(integer=True)
        axes[0].set_ylabel("mean over test samples")
        floor = "ground-truth floor (simulator)" if simulated else "ground-truth floor (the data's own error)"
        handles.append(Patch(color="0.6", alpha=0.35, label=floor))
        figure_legend(fig, handles)
        drawn = [k for k, _ in panels]
        laws = ", ".join({"energy": "energy", "momentum": "momentum", "newton": "Newton residual"}[k] for k in drawn)
        dashed_note = "; dashed: the same model sampled with a sampling-time constraint" if extra else ""
        newton_note = " Newton residual: RMS over particles and dimensions." if "newton" in drawn else ""
        set_title(
            fig,
            f"{ref.system}: conservation against time ({laws})",
            f"Lines: mean over seeds of the mean over {ref.n} test samples ({_band_label(band, n_seeds)})"
            f"{dashed_note}; grey: the ground truth's own error.{newton_note}",
        )
    return fig


# ----------------------------------------------------------------------------------------------- animation
def animate_trajectory(
    path: str | Path,
    ref: ParticleData,
    generated: Mapping[str, Any],
    sample: int = 0,
    *,
    fps: int = 6,
    dpi: int = 100,
    units: Mapping[str, str] | None = None,
    max_arms: int = 3,
) -> Path | None:
    """A GIF of one test sample: the ground truth and each arm's trajectory drawn frame by frame (trails and
    the particles' current positions). Needs Pillow; without it a warning says so and ``None`` is returned."""
    if importlib.util.find_spec("PIL") is None:
        warnings.warn("Pillow is not installed: no trajectory animation (pip install pillow)", stacklevel=2)
        return None
    from matplotlib.animation import FuncAnimation, PillowWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arms = {a: _as_rv(v)[0] for a, v in list(generated.items())[:max_arms]}
    cols = [("ground truth", ref.positions[sample])] + [(a, pos[sample]) for a, pos in arms.items()]
    n_frames, n_particles = ref.positions.shape[1], ref.positions.shape[2]
    colours = matplotlib.colormaps["tab10"].colors
    lim = _square_limits([p[..., :2] for _, p in cols], ref.positions[sample, ..., :2])
    with matplotlib.rc_context(STYLE):
        fig = new_figure(2.4 * len(cols), 2.7)
        axes = fig.subplots(1, len(cols), squeeze=False)[0]
        artists = []
        for ax, (name, pos) in zip(axes, cols, strict=True):
            ax.set(xlim=lim[0], ylim=lim[1], aspect="equal", title=name)
            ax.set_xlabel(_unit("x", units))
            ax.set_ylabel(_unit("y", units))
            trails, heads = [], []
            for k in range(n_particles):
                col = colours[k % len(colours)]
                ax.plot(*pos[0, k, :2], ls="none", marker="*", ms=8, mfc=col, mec="black", mew=0.5)
                trails.append(ax.plot([], [], color=col, lw=1.0)[0])
                heads.append(ax.plot([], [], ls="none", marker="o", ms=5, color=col)[0])
            artists.append((pos, trails, heads))
        label = fig.suptitle("")

        def update(frame: int) -> list[Any]:
            out = []
            for pos, trails, heads in artists:
                for k in range(n_particles):
                    trails[k].set_data(pos[: frame + 1, k, 0], pos[: frame + 1, k, 1])
                    heads[k].set_data([pos[frame, k, 0]], [pos[frame, k, 1]])
                    out += [trails[k], heads[k]]
            label.set_text(f"{ref.system}, test sample {sample}: frame {frame} of {n_frames - 1} (★ = given frame 0)")
            return out

        anim = FuncAnimation(fig, update, frames=n_frames, blit=False)
        anim.save(path, writer=PillowWriter(fps=fps), dpi=dpi)
    return path


# ------------------------------------------------------------------------------------------- training logs
def read_training_logs(
    results_dir: str | Path,
    arms: Sequence[str],
    seeds: Sequence[int],
    run_dir: Callable[[Path, str, int], Path] | None = None,
) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """``{arm: {seed: {column: array}}}`` from each run's ``metrics.csv`` (and its ``validation.csv`` as
    ``val_step``, ``val_loss``); ``run_dir(results_dir, arm, seed)`` names the run folder (default
    ``arms/<arm with ':' as '_'>/seed<k>``); missing files are skipped."""
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for arm in arms:
        for seed in seeds:
            folder = (
                run_dir(Path(results_dir), arm, seed)
                if run_dir
                else Path(results_dir) / "arms" / arm.replace(":", "_") / f"seed{seed}"
            )
            path = folder / "metrics.csv"
            if path.is_file():
                log = _read_csv(path)
                val = _read_csv(folder / "validation.csv") if (folder / "validation.csv").is_file() else {}
                if "step" in val and "val_loss" in val:  # its own steps: val_step, val_loss
                    log |= {"val_step": val["step"], "val_loss": val["val_loss"]}
                if log:
                    out.setdefault(arm, {})[int(seed)] = log
    return out


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    cols: dict[str, np.ndarray] = {}
    for key in rows[0]:
        if key is None:
            continue
        vals = []
        for row in rows:
            try:
                vals.append(float(row.get(key) or "nan"))
            except ValueError:
                vals.append(math.nan)
        cols[key] = np.asarray(vals)
    return cols


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or y.size < window:
        return y
    kernel = np.ones(window) / window
    pad = np.pad(y, (window // 2, window - 1 - window // 2), mode="edge")
    return np.convolve(pad, kernel, mode="valid")


def _steps_mean(runs: Sequence[Mapping[str, np.ndarray]], step_key: str, col: str) -> tuple[np.ndarray, list]:
    """The steps every run logged ``col`` at, and each run's values there."""
    runs = [r for r in runs if col in r and step_key in r]
    if not runs:
        return np.zeros(0), []
    steps = runs[0][step_key]
    for log in runs[1:]:
        steps = np.intersect1d(steps, log[step_key])
    return steps, [np.interp(steps, log[step_key], log[col]) for log in runs]


_TRAINING_TITLES = {
    "loss_mean": "total training loss (mean per logging interval)",
    "loss": "total training loss (one batch per point)",
    "loss_score": "denoising (score) loss (one batch per point)",
}


def training_figure(
    training_logs: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
    *,
    columns: Sequence[str] = ("loss", "loss_score"),
    band: str = "minmax",
    smooth: int | None = None,
    title: str = "",
) -> Figure | None:
    """Training loss against step: per arm the mean over seeds (on the steps all seeds logged) with a seed band;
    one panel per column present (``loss``: the total objective, priors included, drawn as ``loss_mean``, the
    mean over each logging interval, where the log has it, with the validation loss dashed; ``loss_score``:
    the denoising term alone, comparable across arms). ``smooth``: moving-average window in logged points for
    one-batch columns (default: about 2 % of the log). A log of a few rows (``train.steps < train.log_every``
    logs one) is drawn with markers. ``None`` when no log has any of ``columns``."""
    logs = {a: s for a, s in training_logs.items() if s}
    has = lambda c: any(c in log for seeds in logs.values() for log in seeds.values())  # noqa: E731
    cols = [("loss_mean" if c == "loss" and has("loss_mean") else c) for c in columns if has(c)]
    if not cols:
        return None
    colours = arm_colours(list(logs))
    widths = arm_widths(list(logs), thin=1.0, step=0.8)
    n_seeds = max(len(s) for s in logs.values())
    with matplotlib.rc_context(STYLE):
        fig = new_figure(3.4 * len(cols) + 0.4, 2.9)
        axes = fig.subplots(1, len(cols), squeeze=False)[0]
        handles: list[Any] = []
        used_window, has_val = 1, False
        for ax, col in zip(axes, cols, strict=True):
            positive = True
            for arm, seeds in logs.items():
                runs = [log for _, log in sorted(seeds.items())]
                steps, values = _steps_mean(runs, "step", col)
                if not steps.size:
                    continue
                window = 1 if col == "loss_mean" else smooth if smooth is not None else max(1, steps.size // 50)
                used_window = max(used_window, window)
                mean, lo, hi = seed_band([_smooth(v, window) for v in values], band)
                marker = "o" if steps.size <= 20 else None
                (line,) = ax.plot(
                    steps, mean, color=colours[arm], lw=widths[arm], marker=marker, ms=3, label=arm_label(arm)
                )
                if len(values) > 1:
                    ax.fill_between(steps, lo, hi, color=colours[arm], alpha=0.18, lw=0)
                positive &= bool(np.nanmin(lo) > 0)
                if ax is axes[0]:
                    handles.append(line)
                if col in ("loss_mean", "loss"):  # the validation loss of the same objective, dashed
                    vsteps, vals = _steps_mean(runs, "val_step", "val_loss")
                    if vsteps.size:
                        vmean, _, _ = seed_band(vals, band)
                        ax.plot(vsteps, vmean, color=colours[arm], lw=1.0, ls="--", marker="s", ms=3)
                        positive &= bool(np.nanmin(vmean) > 0)
                        has_val = True
            drawn = [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), dtype=float)]
            if positive and drawn and np.nanmax(drawn) > 10 * np.nanmin(drawn):  # log only over a decade or more
                ax.set_yscale("log")
            ax.set_xlabel("training step")
            ax.set_ylabel({"loss_mean": "loss"}.get(col, col))
            ax.set_title(fit_label(_TRAINING_TITLES.get(col, col), 3.0, STYLE["axes.titlesize"]))
        if has_val:
            handles.append(Line2D([], [], color="0.3", lw=1.0, ls="--", marker="s", ms=3, label="validation loss"))
        figure_legend(fig, handles)
        smooth_note = f"; one-batch curves: moving average over {used_window} logged points" if used_window > 1 else ""
        head = f"{title}: " if title else ""
        set_title(
            fig, f"{head}training loss against step", f"Mean over seeds ({_band_label(band, n_seeds)}{smooth_note})."
        )
    return fig


def plot_training_curves(
    out_dir: str | Path,
    training_logs: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
    *,
    stem: str = "training_loss",
    band: str = "minmax",
    smooth: int | None = None,
    title: str = "",
    dpi: int = 200,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> list[Path]:
    """``training_loss.{png,pdf}`` (:func:`training_figure`); ``[]`` when the logs hold no loss."""
    fig = training_figure(training_logs, band=band, smooth=smooth, title=title)
    if fig is None:
        return []
    return save_figure(fig, out_dir, stem, dpi=dpi, formats=formats)


# ------------------------------------------------------------------------------------------------- entry
def plot_particle_results(
    folder: str | Path,
    ref: ParticleData,
    generated: Mapping[str, Any],
    sample: int = 0,
    *,
    samples: Sequence[int] | None = None,
    per_seed: Mapping[str, Mapping[int, Any]] | None = None,
    constraints: Mapping[str, Mapping[int, Any]] | None = None,
    training_logs: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]] | None = None,
    band: str = "minmax",
    animate: bool = True,
    dpi: int = 200,
    formats: Sequence[str] = DEFAULT_FORMATS,
    units: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write the particle figures into ``folder``; returns the written files.

    * ``trajectories.{png,pdf}`` — :func:`trajectory_figure` of test samples ``samples`` (default: three
      from ``sample``), ground truth and each arm of ``generated`` side by side;
    * ``conservation.{png,pdf}`` — :func:`conservation_figure` over ``per_seed`` (default: ``generated`` as
      one seed) with the ``constraints`` rows dashed;
    * ``trajectories.gif`` — :func:`animate_trajectory` of test sample ``sample`` (``animate``);
    * ``training_loss.{png,pdf}`` — :func:`training_figure`, when ``training_logs`` are given.

    ``generated``: ``{arm: (positions, velocities)}`` or ``{arm: samples}`` (module docstring).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shown = list(samples) if samples is not None else list(range(sample, min(sample + 3, ref.n)))
    written = save_figure(
        trajectory_figure(ref, generated, shown, units=units), folder, "trajectories", dpi=dpi, formats=formats
    )
    seeds = _per_seed(generated, per_seed)
    written += save_figure(
        conservation_figure(ref, seeds, constraints, band=band), folder, "conservation", dpi=dpi, formats=formats
    )
    if animate:
        gif = animate_trajectory(folder / "trajectories.gif", ref, generated, sample, units=units)
        if gif is not None:
            written.append(gif)
    if training_logs:
        written += plot_training_curves(folder, training_logs, band=band, title=ref.system, dpi=dpi, formats=formats)
    return written
