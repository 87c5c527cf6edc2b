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
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from physdiff.data.particles_h5 import ParticleData
from physdiff.outputs import atomic_open

__all__ = [
    "STYLE",
    "new_figure",
    "save_figure",
    "arm_colours",
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
    longest = max(len(h.get_label()) for h in handles)
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
    with matplotlib.rc_context(STYLE):
        fig = new_figure(2.3 * len(cols) + 0.3, 2.3 * len(samples) + 0.9)
        axes = fig.subplots(len(samples), len(cols), squeeze=False)
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
                ax.set_title(f"{name} — test sample {s}")
                ax.set_xlabel(_unit("x", units))
                ax.set_ylabel(_unit("y", units) if c == 0 else "")
                if c > 0:
                    ax.tick_params(labelleft=False)
        handles = [
            Line2D([], [], color=colours[k % len(colours)], lw=1.1, label=f"particle {k + 1}")
            for k in range(n_particles)
        ]
        handles += [
            Line2D([], [], ls="none", marker="*", ms=9, mfc="white", mec="black", label="conditioned frame 0"),
            Line2D([], [], color="0.55", lw=0.8, ls=":", label="ground truth (under each arm)"),
        ]
        figure_legend(fig, handles)
        proj = " (x–y projection)" if dim > 2 else ""
        fig.suptitle(f"{ref.system}: generated trajectories given frame 0{proj}")
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
    truth = conservation_curves(ref, ref.positions, ref.velocities)
    frames = np.arange(ref.positions.shape[1])
    n_seeds = max((len(s) for s in arms.values()), default=1)
    with matplotlib.rc_context(STYLE):
        fig = new_figure(7.2, 3.2)
        axes = fig.subplots(1, len(_CONSERVATION_PANELS))
        handles: list[Any] = []
        for i, (key, title) in enumerate(_CONSERVATION_PANELS):
            ax = axes[i]
            plotted = [truth[key].mean(0)[1:]]
            for rows, dashed in ((arms, False), (extra, True)):
                for name, seeds in rows.items():
                    curves = [conservation_curves(ref, r, v)[key].mean(0) for _, (r, v) in sorted(seeds.items())]
                    mean, lo, hi = seed_band(curves, band)
                    ls = _constraint_style(name, extra) if dashed else "-"
                    (line,) = ax.plot(frames[1:], mean[1:], ls=ls, color=colours[name], lw=1.3, label=name)
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
            ax.set_title(title)
            ax.set_xlabel(f"frame l (t = l·Δt, Δt = {ref.get_system().dt:g})")
            ax.xaxis.get_major_locator().set_params(integer=True)
        axes[0].set_ylabel("mean over test samples")
        handles.append(Patch(color="0.6", alpha=0.35, label="ground-truth floor (simulator)"))
        figure_legend(fig, handles)
        set_title(
            fig,
            f"{ref.system}: conservation laws against time",
            f"Lines: mean over seeds of the mean over {ref.n} test samples ({_band_label(band, n_seeds)}); "
            "dashed: the same model sampled with a sampling-time constraint; grey: the ground truth's own error. "
            "Newton residual: RMS over particles and dimensions.",
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
    """``{arm: {seed: {column: array}}}`` from each run's ``metrics.csv``; ``run_dir(results_dir, arm, seed)``
    names the run folder (default ``arms/<arm with ':' as '_'>/seed<k>``); missing files are skipped."""
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


def training_figure(
    training_logs: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
    *,
    columns: Sequence[str] = ("loss", "loss_score"),
    band: str = "minmax",
    smooth: int | None = None,
    title: str = "",
) -> Figure | None:
    """Training loss against step: per arm the mean over seeds (on the steps all seeds logged) with a seed band;
    one panel per column present (``loss``: the total objective, priors included; ``loss_score``: the
    denoising term alone, comparable across arms). ``smooth``: moving-average window in logged points
    (default: about 2 % of the log). ``None`` when no log has any of ``columns``."""
    logs = {a: s for a, s in training_logs.items() if s}
    cols = [c for c in columns if any(c in log for seeds in logs.values() for log in seeds.values())]
    if not cols:
        return None
    colours = arm_colours(list(logs))
    n_seeds = max(len(s) for s in logs.values())
    with matplotlib.rc_context(STYLE):
        fig = new_figure(3.4 * len(cols) + 0.4, 2.9)
        axes = fig.subplots(1, len(cols), squeeze=False)[0]
        handles = []
        used_window = 1
        for ax, col in zip(axes, cols, strict=True):
            positive = True
            for arm, seeds in logs.items():
                runs = [log for _, log in sorted(seeds.items()) if col in log and "step" in log]
                if not runs:
                    continue
                steps = runs[0]["step"]
                for log in runs[1:]:
                    steps = np.intersect1d(steps, log["step"])
                if not steps.size:
                    continue
                window = smooth if smooth is not None else max(1, steps.size // 50)
                used_window = max(used_window, window)
                curves = [_smooth(np.interp(steps, log["step"], log[col]), window) for log in runs]
                mean, lo, hi = seed_band(curves, band)
                (line,) = ax.plot(steps, mean, color=colours[arm], lw=1.2, label=arm)
                if len(curves) > 1:
                    ax.fill_between(steps, lo, hi, color=colours[arm], alpha=0.18, lw=0)
                positive &= bool(np.nanmin(lo) > 0)
                if ax is axes[0]:
                    handles.append(line)
            if positive:
                ax.set_yscale("log")
            ax.set_xlabel("training step")
            ax.set_ylabel(col)
            ax.set_title({"loss": "total training loss", "loss_score": "denoising (score) loss"}.get(col, col))
        figure_legend(fig, handles)
        smooth_note = f"; moving average over {used_window} logged points" if used_window > 1 else ""
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
