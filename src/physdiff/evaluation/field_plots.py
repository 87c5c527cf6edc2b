"""Figures of PDE results on physical axes, with one colour scale per group of comparable panels.

:func:`field_figure` lays out one sub-task: columns = the ground truth and each arm; rows = quantities —

* the field (1-D systems: the space-time image u(x, t); Darcy: u(x, y); shallow water: h(x, y) at a few
  frames; generation: two samples), every field panel on **one** colour scale;
* ``|error|`` against the ground truth (prediction only; the ground-truth cell says it is the reference),
  one scale;
* ``|PDE residual|`` of the system's own residual (where the stored variables allow it), one scale (log by
  default), shown on the interior points where the stencil applies;

with a colour bar per row. It returns a :class:`FieldFigure` holding the figure and the images and colour
bars by row, so the shared scales can be checked. :func:`field_curves_figure` draws, for time-dependent
systems, the per-frame RMSE (prediction) and residual RMS against t with seed bands, the sampling-constraint
rows dashed and the ground truth's own residual as a floor band. :func:`plot_field_results` writes them.

Axes come from the data's coordinates (``coords["x"]``, ``["y"]``, ``["t"]``): pixel edges halfway between
the centres. Inputs: ``generated`` ``{arm: {subtask: fields}}``; ``per_seed`` ``{arm: {seed: {subtask:
fields}}}``; ``constraints`` ``{"<arm> + <mode>:<priors>": {seed: {subtask: fields}}}`` — fields in the data's
layout ``[N, *field_axes]``, row-aligned with the reference (a task's ``Samples`` ``{"u": …}`` is accepted too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from physdiff.data.pdebench import FieldData
from physdiff.evaluation.plots import (
    DEFAULT_FORMATS,
    STYLE,
    _band_label,
    _constraint_style,
    _positive_floor,
    _unit,
    arm_colours,
    arm_widths,
    figure_legend,
    fit_label,
    new_figure,
    plot_training_curves,
    save_figure,
    seed_band,
    set_title,
)
from physdiff.evaluation.statistics import arm_label
from physdiff.systems.pde_registry import get_pde_system

__all__ = ["FieldFigure", "field_figure", "field_curves_figure", "plot_field_results"]

NORM_GROUPS = ("field", "error", "residual")
_RESIDUAL_LABELS = {"shallow-water": "|mass residual|"}  # systems with several residuals: which one is shown


@dataclass
class FieldFigure:
    """A field figure and, per row, its images (``None`` for an empty cell), its norm group and colour bar.
    Rows of one group share one norm object (one colour scale)."""

    fig: Figure
    rows: dict[str, list[Any]] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    colorbars: dict[str, Any] = field(default_factory=dict)
    norms: dict[str, Normalize] = field(default_factory=dict)


@dataclass
class _Panel:
    image: np.ndarray | None  # [vertical, horizontal]; None: an empty cell with a note
    extent: tuple[float, float, float, float] | None = None
    note: str = ""


@dataclass
class _Row:
    key: str
    group: str
    label: str  # colour-bar label: the quantity
    title: str  # appended to each column's name
    panels: list[_Panel]


# ----------------------------------------------------------------------------------------------- geometry
def _as_fields(x: Any) -> np.ndarray:
    if isinstance(x, Mapping):
        return np.asarray(x["u"])
    return np.asarray(x)


def _coord(data: FieldData, axis: str, n: int) -> tuple[np.ndarray, bool]:
    """Coordinates of ``axis`` with ``n`` points (centred trimming for a residual's interior), and whether
    they are physical (else indices)."""
    c = data.coords.get(axis)
    if c is None or len(c) < n:
        return np.arange(n, dtype=np.float64), False
    c = np.asarray(c, dtype=np.float64)
    trim = (len(c) - n) // 2
    return c[trim : trim + n], True


def _edges(c: np.ndarray) -> tuple[float, float]:
    d = float(c[1] - c[0]) if len(c) > 1 else 1.0
    return float(c[0]) - d / 2, float(c[-1]) + d / 2


def _axes_of(system: str) -> tuple[str, str]:
    """(horizontal, vertical) axis names of the images of ``system``."""
    spatial = get_pde_system(system).spatial_axes
    if len(spatial) == 1:
        return spatial[0], "t"
    return spatial[0], spatial[1]


def _panel(data: FieldData, img: np.ndarray) -> _Panel:
    """An image ``[horizontal-axis, vertical-axis]`` → a panel drawn with vertical rows (imshow's layout)."""
    h, v = _axes_of(data.system)
    ch, _ = _coord(data, h, img.shape[0])
    cv, _ = _coord(data, v, img.shape[1])
    return _Panel(np.asarray(img).T, (*_edges(ch), *_edges(cv)))


def _slice(system: str, u: np.ndarray, frame: int | None) -> np.ndarray:
    """One sample's field as ``[horizontal, vertical]``: 1-D ``[T, X]`` → ``[X, T]``; Darcy ``[X, Y]``;
    shallow water h at ``frame`` ``[X, Y]``."""
    axes = get_pde_system(system).field_axes
    if axes == ("t", "x"):
        return u.T
    if "t" in axes:  # [T, C, X, Y]: the first channel (h)
        return u[frame, 0]
    return u


def _residual(data: FieldData, fields: np.ndarray, sample: int) -> np.ndarray:
    """|R| of one sample in the system's layout (interior points)."""
    system = get_pde_system(data.system)
    r = system.residual(data.subset([sample]), np.asarray(fields[sample : sample + 1], dtype=np.float64))
    return np.abs(r.detach().cpu().numpy()[0])


def _time_label(data: FieldData, frame: int, n_frames: int) -> str:
    t, physical = _coord(data, "t", n_frames)
    return f"t = {t[frame]:.3g}" if physical else f"frame {frame}"


# ------------------------------------------------------------------------------------------------- layout
def _rows(
    data: FieldData, generated: Mapping[str, np.ndarray], task: str, sample: int, frames: Sequence[int] | None
) -> list[_Row]:
    system = get_pde_system(data.system)
    name = system.channels[0]
    cols = [data.fields] + [_as_fields(v) for v in generated.values()]
    other = min(sample + 1, data.n_samples - 1)
    rows: list[_Row] = []
    two_d_time = system.time_dependent and len(system.spatial_axes) == 2
    n_t = data.fields.shape[1] if system.time_dependent else 0
    if two_d_time:
        if frames is None:
            frames = (
                sorted({max(1, n_t // 3), max(1, 2 * n_t // 3), n_t - 1})
                if task == "prediction"
                else sorted({0, n_t // 2, n_t - 1})
            )
        for f in frames:
            panels = [_panel(data, _slice(data.system, u[sample], f)) for u in cols]
            rows.append(_Row(f"{name}@{f}", "field", name, _time_label(data, f, n_t), panels))
        last = frames[-1]
        if task == "prediction":
            truth = _slice(data.system, data.fields[sample], last)
            panels = [_Panel(None, note="ground truth\n(the reference)")]
            panels += [_panel(data, np.abs(_slice(data.system, u[sample], last) - truth)) for u in cols[1:]]
            rows.append(_Row("error", "error", f"|{name} − {name}_true|", _time_label(data, last, n_t), panels))
    else:
        samples = [sample] if task == "prediction" or other == sample else [sample, other]
        for i, s in enumerate(samples):  # generation: a row per draw, the columns unpaired (the suptitle says so)
            title = f"#{i + 1}" if task != "prediction" else ""
            panels = [_panel(data, _slice(data.system, u[s], None)) for u in cols]
            rows.append(_Row(f"{name}#{s}", "field", name, title, panels))
        if task == "prediction":
            truth = _slice(data.system, data.fields[sample], None)
            panels = [_Panel(None, note="ground truth\n(the reference)")]
            panels += [_panel(data, np.abs(_slice(data.system, u[sample], None) - truth)) for u in cols[1:]]
            rows.append(_Row("error", "error", f"|{name} − {name}_true|", "", panels))
    if data.priors_available:
        panels, title = [], ""
        for u in cols:
            r = _residual(data, u, sample)
            if two_d_time:  # [T-2, X-2, Y-2]: the middle interior frame
                mid = r.shape[0] // 2
                title = _time_label(data, mid + (n_t - r.shape[0]) // 2, n_t)
                r = r[mid]
            elif system.time_dependent:  # [T', X] → [X, T']
                r = r.T
            panels.append(_panel(data, r))
        label = _RESIDUAL_LABELS.get(data.system, "|PDE residual|")
        rows.append(_Row("residual", "residual", label, title, panels))
    return rows


def _norm(group: str, images: list[np.ndarray], residual_scale: str) -> Normalize:
    vals = np.concatenate([np.ravel(i) for i in images]) if images else np.zeros(1)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return Normalize(0.0, 1.0)
    hi = float(vals.max())
    if group == "residual" and residual_scale == "log":
        pos = vals[vals > 0]
        if pos.size and hi > 0:
            lo = max(float(np.percentile(pos, 1.0)), hi * 1e-6)
            return LogNorm(vmin=min(lo, hi / 10), vmax=hi)
    if group in ("error", "residual"):
        return Normalize(0.0, hi if hi > 0 else 1.0)
    lo = float(vals.min())
    return Normalize(lo, hi if hi > lo else lo + 1.0)


def field_figure(
    reference: FieldData,
    generated: Mapping[str, Any],
    task: str,
    *,
    sample: int = 0,
    frames: Sequence[int] | None = None,
    units: Mapping[str, str] | None = None,
    residual_scale: str = "log",
) -> FieldFigure:
    """The panels of one sub-task (module docstring). ``generated``: ``{arm: fields}`` (``[N, *field_axes]``);
    ``frames``: the shallow-water frames shown (default: three spread over the trajectory);
    ``residual_scale``: ``log`` or ``linear``; ``units``: e.g. ``{"x": "m", "t": "s"}``."""
    if residual_scale not in ("log", "linear"):
        raise ValueError(f"residual_scale must be 'log' or 'linear', got {residual_scale!r}")
    sample = min(max(sample, 0), reference.n_samples - 1)
    rows = _rows(reference, generated, task, sample, frames)
    names = ["ground truth", *generated]
    groups = {g: [p.image for r in rows if r.group == g for p in r.panels if p.image is not None] for g in NORM_GROUPS}
    norms = {g: _norm(g, imgs, residual_scale) for g, imgs in groups.items() if imgs}
    cmaps = {"field": "viridis", "error": "magma", "residual": "magma"}
    h_axis, v_axis = _axes_of(reference.system)
    spatial = v_axis != "t"
    panel_w = 2.1 if spatial else 2.5
    panel_h = 2.0 if spatial else 1.8
    full = _panel(
        reference, _slice(reference.system, reference.fields[sample], 0 if frames is None else frames[0])
    ).extent
    with matplotlib.rc_context(STYLE):
        fig = new_figure(panel_w * len(names) + 1.0, panel_h * len(rows) + 0.7)
        fig.get_layout_engine().set(w_pad=4 / 72, wspace=0.04)
        axes = fig.subplots(len(rows), len(names), squeeze=False)
        out = FieldFigure(fig, norms=norms)
        for r, row in enumerate(rows):
            images = []
            for c, (name, panel) in enumerate(zip(names, row.panels, strict=True)):
                ax = axes[r, c]
                ax.set(xlim=full[:2], ylim=full[2:])
                ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
                ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
                if c == 0:
                    ax.set_ylabel(_unit(v_axis, units))
                else:
                    ax.tick_params(labelleft=False)
                ax.set_xlabel(_unit(h_axis, units))
                label = fit_label(arm_label(name), panel_w - 0.3, STYLE["axes.titlesize"])
                if panel.image is None:  # a framed empty cell that says why (keeps the grid's labels aligned)
                    ax.text(0.5, 0.5, panel.note, ha="center", va="center", transform=ax.transAxes, color="0.3")
                    ax.set_title(label)
                    if spatial:
                        ax.set_aspect("equal")
                    images.append(None)
                    continue
                image = panel.image
                norm = norms[row.group]
                if isinstance(norm, LogNorm):  # exact zeros (a solver's own residual) show as the lowest colour
                    image = np.where(image > 0, image, norm.vmin * 0.5)
                im = ax.imshow(
                    image,
                    origin="lower",
                    extent=panel.extent,
                    aspect="equal" if spatial else "auto",
                    cmap=cmaps[row.group],
                    norm=norm,
                    interpolation="nearest",
                )
                ax.set(xlim=full[:2], ylim=full[2:])
                images.append(im)
                ax.set_title(
                    fit_label(f"{arm_label(name)}, {row.title}", panel_w - 0.3, STYLE["axes.titlesize"])
                    if row.title
                    else label
                )
            mappable = next(im for im in images if im is not None)
            extend = "min" if isinstance(mappable.norm, LogNorm) else "neither"
            cb = fig.colorbar(mappable, ax=list(axes[r]), location="right", shrink=0.95, aspect=15, extend=extend)
            cb.set_label(row.label)
            out.rows[row.key] = images
            out.groups[row.key] = row.group
            out.colorbars[row.key] = cb
        axis_note = f"{h_axis}–{v_axis}"
        drawn = {row.group for row in rows}
        residual = _RESIDUAL_LABELS.get(reference.system, "|PDE residual|")
        quantities = ["field"] + (["|error|"] if "error" in drawn else [])
        quantities += [residual + (", log" if residual_scale == "log" else "")] if "residual" in drawn else []
        if task == "prediction":
            head = f"{reference.system}: prediction of test sample {sample} (every column given its frame 0)"
        else:
            head = (
                f"{reference.system}: generation — ground-truth samples beside each model's own samples "
                "(unconditioned: a row's panels are not the same sample)"
            )
        set_title(
            fig,
            head,
            f"Axes {axis_note} from the data's coordinates; one colour scale per quantity "
            f"({', '.join(quantities)}), shared by the ground truth and the arms.",
        )
    return out


# ------------------------------------------------------------------------------------------ curves in time
def _per_frame(data: FieldData, fields: np.ndarray) -> dict[str, np.ndarray]:
    """Per sample and frame: ``rmse`` against the ground truth ``[N, T]`` and the residual RMS ``[N, T']`` at
    the interior frames (``t_residual``)."""
    system = get_pde_system(data.system)
    u = np.asarray(fields, dtype=np.float64)
    axes = tuple(range(2, u.ndim))
    out = {"rmse": np.sqrt(np.square(u - data.fields).mean(axes))}
    if data.priors_available:
        r = system.residual(data, u).detach().cpu().numpy()
        out["residual"] = np.sqrt(np.square(r).reshape(r.shape[0], r.shape[1], -1).mean(-1))
    return out


def field_curves_figure(
    reference: FieldData,
    per_seed: Mapping[str, Mapping[int, Any]],
    task: str,
    constraints: Mapping[str, Mapping[int, Any]] | None = None,
    *,
    band: str = "minmax",
    units: Mapping[str, str] | None = None,
) -> Figure | None:
    """Per-frame error against t for a time-dependent system: RMSE vs the ground truth (prediction) and the
    PDE residual RMS (with the ground truth's own as a grey floor band); per arm the mean over seeds of the
    mean over test samples with a seed band, sampling-constraint rows dashed. ``per_seed``: ``{arm: {seed:
    fields}}`` of sub-task ``task``. ``None`` for a steady system or with nothing to draw."""
    system = get_pde_system(reference.system)
    if not system.time_dependent:
        return None
    arms = {a: {s: _as_fields(v) for s, v in seeds.items()} for a, seeds in per_seed.items() if seeds}
    extra = {a: {s: _as_fields(v) for s, v in seeds.items()} for a, seeds in (constraints or {}).items() if seeds}
    panels = (["rmse"] if task == "prediction" else []) + (["residual"] if reference.priors_available else [])
    if not arms or not panels:
        return None
    n_t = reference.fields.shape[1]
    t, _ = _coord(reference, "t", n_t)
    truth = _per_frame(reference, reference.fields)
    colours = arm_colours(list(arms) + list(extra))
    widths = arm_widths(list(arms))
    n_seeds = max(len(s) for s in arms.values())
    residual = _RESIDUAL_LABELS.get(reference.system, "|PDE residual|").strip("|")
    titles = {"rmse": "RMSE against the ground truth", "residual": f"{residual} RMS"}
    with matplotlib.rc_context(STYLE):
        fig = new_figure(max(3.4 * len(panels) + 0.4, 4.8), 2.9)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        handles: list[Any] = []
        for i, (ax, key) in enumerate(zip(axes, panels, strict=True)):
            plotted = []
            for rows, dashed in ((arms, False), (extra, True)):
                for name, seeds in rows.items():
                    curves = [_per_frame(reference, u)[key].mean(0) for _, u in sorted(seeds.items())]
                    mean, lo, hi = seed_band(curves, band)
                    tk = _coord(reference, "t", mean.size)[0]
                    sl = slice(1, None) if key == "rmse" else slice(None)  # frame 0 is given in prediction
                    (line,) = ax.plot(
                        tk[sl],
                        mean[sl],
                        ls=_constraint_style(name, extra) if dashed else "-",
                        color=colours[name],
                        lw=1.3 if dashed else widths[name],
                        label=arm_label(name),
                    )
                    if len(curves) > 1:
                        ax.fill_between(
                            tk[sl], lo[sl], hi[sl], color=colours[name], alpha=0.08 if dashed else 0.18, lw=0
                        )
                    plotted += [mean[sl], lo[sl], hi[sl]]
                    if i == 0:
                        handles.append(line)
            if key == "residual":
                gt = truth["residual"].mean(0)
                tk = _coord(reference, "t", gt.size)[0]
                bottom = _positive_floor(plotted + [gt])
                if bottom is not None:
                    ax.set_yscale("log", nonpositive="mask")
                    ax.fill_between(tk, bottom, np.maximum(gt, bottom), color="0.6", alpha=0.35, lw=0, zorder=0)
                    ax.plot(tk, gt, color="0.35", lw=0.9, zorder=1)
                    ax.set_ylim(bottom=bottom)
            ax.set_title(titles[key])
            ax.set_xlabel(_unit("t", units) if len(t) and reference.coords.get("t") is not None else "frame")
            ax.set_ylabel("mean over test samples" if i == 0 else "")
        if reference.priors_available:
            handles.append(Patch(color="0.6", alpha=0.35, label="ground-truth floor"))
        figure_legend(fig, handles)
        set_title(
            fig,
            f"{reference.system}: {task} error against time",
            f"Mean over seeds of the mean over {reference.n_samples} test samples ({_band_label(band, n_seeds)}).",
        )
    return fig


# ------------------------------------------------------------------------------------------------- entry
def _subtask_of(per_seed: Mapping[str, Mapping[int, Any]] | None, task: str) -> dict[str, dict[int, np.ndarray]]:
    out: dict[str, dict[int, np.ndarray]] = {}
    for arm, seeds in (per_seed or {}).items():
        for seed, per_task in seeds.items():
            if isinstance(per_task, Mapping) and task in per_task:
                out.setdefault(arm, {})[int(seed)] = _as_fields(per_task[task])
    return out


def plot_field_results(
    out_dir: str | Path,
    test: FieldData,
    generated: Mapping[str, Mapping[str, Any]],
    *,
    per_seed: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
    constraints: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
    training_logs: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]] | None = None,
    sample: int = 0,
    band: str = "minmax",
    dpi: int = 200,
    formats: Sequence[str] = DEFAULT_FORMATS,
    units: Mapping[str, str] | None = None,
    residual_scale: str = "log",
) -> list[Path]:
    """Write the field figures into ``out_dir``; returns the written files. Per sub-task:

    * ``fields_<task>.{png,pdf}`` — :func:`field_figure` of test sample ``sample``;
    * ``fields_<task>_curves.{png,pdf}`` — :func:`field_curves_figure` over ``per_seed`` (default:
      ``generated`` as one seed) and the ``constraints`` rows (time-dependent systems);

    and ``training_loss.{png,pdf}`` when ``training_logs`` are given.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = list(dict.fromkeys(t for per_task in generated.values() for t in per_task))
    written: list[Path] = []
    for task in tasks:
        arms = {arm: _as_fields(s[task]) for arm, s in generated.items() if task in s}
        ff = field_figure(test, arms, task, sample=sample, units=units, residual_scale=residual_scale)
        written += save_figure(ff.fig, out_dir, f"fields_{task}", dpi=dpi, formats=formats)
        seeds = _subtask_of(per_seed, task) or {arm: {0: u} for arm, u in arms.items()}
        fig = field_curves_figure(test, seeds, task, _subtask_of(constraints, task), band=band, units=units)
        if fig is not None:
            written += save_figure(fig, out_dir, f"fields_{task}_curves", dpi=dpi, formats=formats)
    if training_logs:
        written += plot_training_curves(out_dir, training_logs, band=band, title=test.system, dpi=dpi, formats=formats)
    return written
