"""Self-contained HTML reports (``report.html``) of a results folder and of a sweep folder.

A report opens in a browser from the file system: no server, no JavaScript, no external files. PNG figures
are embedded as ``data:image/png;base64`` URIs; other figure files (PDF, SVG, GIF) are linked by their path
relative to the report. Every text from the inputs is escaped (:func:`html.escape`).

:func:`write_report` renders ``results.json`` (schema: :mod:`physdiff.experiments.tables`): the arms'
mean ± std over seeds with the ground-truth floor and the ratios to ``no_prior``; the paired differences
with their 95 % intervals and better-seed counts; the per-seed values; the sampling-constraint rows in their
own tables; the figures; the run (command line, seeds, split, data, wall time, versions) and its config.
:func:`write_sweep_report` renders ``sweep.json`` (:mod:`physdiff.experiments.sweep`).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from physdiff.evaluation.statistics import arm_label, format_number, metric_label, metric_order
from physdiff.outputs import write_text

__all__ = [
    "collect_versions",
    "git_commit",
    "render_report",
    "write_report",
    "render_sweep_report",
    "write_sweep_report",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.label, th.label { text-align: left; }
tr.floor td { background: #f7f7f7; font-style: italic; } tr.ratio td { color: #555; }
td.good { background: #e6f4ea; } td.bad { background: #fce8e6; } tr.best td { font-weight: bold; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } p.note { font-size: 0.85em; color: #555; }
"""


# ------------------------------------------------------------------------------------------------- helpers
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 4, *, sign: bool = False) -> str:
    return format_number(x, digits, sign=sign)


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    table_id: str,
    row_classes: Sequence[str] | None = None,
    caption: str = "",
) -> str:
    """An HTML table; a cell is a string or ``(text, css_class)``; the first column is a label."""
    out = [f'<table id="{_e(table_id)}">']
    if caption:
        out.append(f"<caption>{_e(caption)}</caption>")
    heads = "".join(
        '<th class="label">' + _e(h) + "</th>" if i == 0 else f"<th>{_e(h)}</th>" for i, h in enumerate(header)
    )
    out.append(f"<thead><tr>{heads}</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes and i < len(row_classes) else ""
        cells = []
        for j, cell in enumerate(row):
            text, css = cell if isinstance(cell, tuple) else (cell, "")
            css = " ".join(c for c in ("label" if j == 0 else "", css) if c)
            cells.append(f'<td class="{css}">{_e(text)}</td>' if css else f"<td>{_e(text)}</td>")
        out.append(f'<tr class="{_e(cls)}">' + "".join(cells) + "</tr>" if cls else "<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _pre(text: str, pre_id: str) -> str:
    return f'<pre id="{_e(pre_id)}">{_e(text)}</pre>'


def collect_versions() -> dict[str, str]:
    """Versions of physdiff (the imported package's, with its git commit when it runs from a checkout),
    Python, the platform and the main packages (read from package metadata, no imports)."""
    from physdiff._version import __version__

    out = {"physdiff": __version__}
    commit = git_commit()
    if commit:
        out["physdiff commit"] = commit
    out |= {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "numpy", "scipy", "matplotlib", "h5py"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the checkout holding ``path`` (default: the imported physdiff), with ``+changes``
    when the work tree differs from it; ``None`` outside a checkout or without git."""
    import subprocess

    folder = Path(path) if path is not None else Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if not top or (
            path is None and folder not in (Path(top).resolve() / "src" / "physdiff", Path(top).resolve() / "physdiff")
        ):
            return None  # not a checkout, or a site-packages copy inside another project's repository
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+changes" if head and dirty else head or None


def _image_src(path: Path) -> str | None:
    """A ``data:image/png;base64`` URI of a PNG file, or ``None`` if it is not a readable PNG."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(PNG_SIGNATURE):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figures_section(out_dir: Path, figures: Sequence[str | Path]) -> str:
    """PNG figures embedded (with links to their PDF/SVG versions), other files linked."""
    paths = [Path(f) for f in figures]
    pngs = [p for p in paths if p.suffix.lower() == ".png"]
    others = [p for p in paths if p.suffix.lower() != ".png"]
    parts = []
    for p in pngs:
        src = _image_src(p)
        if src is None:
            parts.append(f'<p class="note">figure {_e(p.name)}: not a readable PNG file; skipped.</p>')
            continue
        siblings = [o for o in others if o.stem == p.stem and o.parent == p.parent]
        links = ", ".join(f'<a href="{_e(_rel(o, out_dir))}">{_e(o.suffix.lstrip(".").upper())}</a>' for o in siblings)
        caption = _e(p.stem.replace("_", " ")) + (f" (also as {links})" if links else "")
        parts.append(f'<figure><img src="{src}" alt="{_e(p.stem)}"><figcaption>{caption}</figcaption></figure>')
    rest = [o for o in others if not any(o.stem == p.stem and o.parent == p.parent for p in pngs)]
    if rest:
        items = "".join(f'<li><a href="{_e(_rel(o, out_dir))}">{_e(o.name)}</a></li>' for o in rest)
        parts.append(f'<p class="note">Other figure files (next to this report):</p><ul>{items}</ul>')
    return "\n".join(parts) if parts else '<p class="note">No figures.</p>'


def _rel(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return path.resolve().as_uri()


def _data_path(data: Any, out_dir: Path) -> str:
    """The data file relative to the report's folder (as results.json records it): a report names no folder
    of the machine that made it."""
    if not isinstance(data, str) or not data:
        return ""
    return _rel(Path(data), out_dir) if Path(data).is_absolute() else data


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _versions_table(versions: Mapping[str, Any] | None) -> str:
    versions = dict(versions) if versions is not None else collect_versions()
    return _table(["package", "version"], [[k, v] for k, v in versions.items()], table_id="versions")


# ------------------------------------------------------------------------------------------- results report
def _metric_keys(results: Mapping[str, Any]) -> list[str]:
    """Every metric shown, in ``table.md``'s order (:func:`physdiff.evaluation.statistics.metric_order`)."""
    main, extra = metric_order(results)
    return main + extra


def _label(results: Mapping[str, Any], key: str) -> str:
    return metric_label(results, key)


def _cell(m: Mapping[str, Any] | None) -> str:
    if not m:
        return "—"
    cell = f"{_num(m.get('mean'))} ± {_num(m.get('std'), 2)}"
    return cell + (f" ({m['nonfinite']} non-finite)" if m.get("nonfinite") else "")


def _ci(p: Mapping[str, Any]) -> str:
    ci = p.get("ci95")
    return f"[{_num(ci[0], 3)}, {_num(ci[1], 3)}]" if ci else "— (one seed)"


def _verdict(p: Mapping[str, Any]) -> tuple[str, str]:
    """Whether the 95 % interval excludes 0, and in which direction (lower is better)."""
    ci = p.get("ci95")
    if not ci:
        return "n/a", ""
    lo, hi = float(ci[0]), float(ci[1])
    if hi < 0:
        return "yes: better", "good"
    if lo > 0:
        return "yes: worse", "bad"
    return "no", ""


def _paired_rows(
    pairs: Mapping[str, Mapping[str, Any]], keys: Sequence[str], results: Mapping[str, Any], with_against: bool
):
    rows = []
    for row, metrics in pairs.items():
        for k in keys:
            p = metrics.get(k)
            if p is None:
                continue
            verdict, css = _verdict(p)
            cells = [row] + ([p.get("against", "")] if with_against else [])
            cells += [
                _label(results, k),
                _num(p.get("mean_diff"), 3, sign=True),
                (_ci(p), "ci"),
                (f"{p.get('better_seeds', '—')}/{p.get('n', '—')}", "better"),
                (verdict, css),
            ]
            rows.append(cells)
    return rows


def _ratio(a: Any, b: Any) -> str:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return "—"
    return format_number(a / b, 3, decimals=3) if b else "—"


def _results_table(results: Mapping[str, Any], keys: Sequence[str], table_id: str) -> str:
    """The arms (mean ± std), the floor and each with-prior arm's ratio to ``no_prior`` for ``keys``."""
    arms = results.get("arms") or {}
    rows: list[list[Any]] = [[arm_label(arm)] + [_cell(m.get(k)) for k in keys] for arm, m in arms.items()]
    classes = [""] * len(rows)
    floor = results.get("floor") or {}
    rows.append(["ground-truth floor"] + [_num(floor.get(k)) for k in keys])
    classes.append("floor")
    if "no_prior" in arms:
        for arm, m in arms.items():
            if arm != "no_prior":
                rows.append(
                    [f"ratio {arm_label(arm)} : no_prior"]
                    + [_ratio(m[k]["mean"], arms["no_prior"][k]["mean"]) for k in keys]
                )
                classes.append("ratio")
    header = ["method"] + [_label(results, k) for k in keys]
    return _table(header, rows, table_id=table_id, row_classes=classes)


def _seeds_text(results: Mapping[str, Any]) -> str:
    """The seeds; per arm when the arms ran different seeds (``arm_seeds``, a comparison of run folders)."""
    arm_seeds = results.get("arm_seeds") or {}
    if arm_seeds and len({tuple(v) for v in arm_seeds.values()}) > 1:
        return "; ".join(f"{arm_label(a)}: {', '.join(map(str, s))}" for a, s in arm_seeds.items())
    return ", ".join(map(str, results.get("seeds", [])))


def _wall_time(results: Mapping[str, Any]) -> str:
    """``results["wall_time_s"]`` in seconds, or why it is not known."""
    wall = results.get("wall_time_s")
    if wall is None:
        return "not recorded"
    note = results.get("wall_time_note")
    return f"{_num(wall, 4)} s" + (f" ({note})" if note else "")


def render_report(
    results: Mapping[str, Any],
    *,
    out_dir: str | Path = ".",
    table_md: str = "",
    config_yaml: str = "",
    figures: Sequence[str | Path] = (),
    command: str | None = None,
    versions: Mapping[str, Any] | None = None,
) -> str:
    """The HTML text of :func:`write_report` (figure links relative to ``out_dir``)."""
    out_dir = Path(out_dir)
    arms = results.get("arms") or {}
    main, extra_keys = metric_order(results)
    keys = main + extra_keys
    name = results.get("experiment", "experiment")
    title = f"physdiff: {name} ({results.get('preset', '?')} preset)"
    body = [f"<h1>{_e(title)}</h1>"]
    seeds = results.get("seeds", [])
    body.append(
        '<p class="note">'
        + _e(
            f"Split: {results.get('split', 'test')}; seeds: {_seeds_text(results)}; wall time: "
            f"{_wall_time(results)}; written {_dt.datetime.now().isoformat(timespec='seconds')}."
        )
        + "</p>"
    )

    # the table's metrics, then the others in a second table of the same rows (table.md's order)
    body.append("<h2>Results</h2>")
    body.append(_results_table(results, main, "results"))
    if extra_keys:
        body.append("<h3>More metrics (the same samples)</h3>")
        body.append(_results_table(results, extra_keys, "results-more"))
    body.append(
        '<p class="note">mean ± sample std (ddof = 1) over seeds (over evaluation samples with one seed); lower is '
        "better for every metric. Floor: the metric of the ground truth against itself.</p>"
    )

    pairs = results.get("paired") or {}
    if pairs:
        body.append("<h2>Paired comparison with no_prior</h2>")
        header = ["arm", "metric", "mean Δ (arm − no_prior)", "95 % CI", "better seeds", "interval excludes 0"]
        body.append(_table(header, _paired_rows(pairs, keys, results, False), table_id="paired"))
        body.append(
            '<p class="note">Δ: mean over seeds of the per-seed difference; 95 % Student-t interval over seeds; better '
            "seeds: seeds in which the arm is lower. A gain is beyond the seed spread only when the interval "
            "excludes 0.</p>"
        )

    if arms:
        body.append("<h2>Per-seed values</h2>")
        arm_seeds = results.get("arm_seeds") or {}
        n_cols = max([len(seeds)] + [len(m[k].get("per_seed", [])) for m in arms.values() for k in keys])
        labels = [f"seed {s}" for s in seeds] + [f"run {i + 1}" for i in range(len(seeds), n_cols)]
        if arm_seeds:  # a comparison of run folders: the arms may have other seeds
            labels = [f"run {i + 1}" for i in range(n_cols)]
        per_rows = []
        for arm, m in arms.items():
            own = arm_seeds.get(arm)
            for k in keys:
                vals = m[k].get("per_seed", [])
                cells = [_num(v) + (f" (seed {own[i]})" if own and i < len(own) else "") for i, v in enumerate(vals)]
                per_rows.append([arm_label(arm), _label(results, k)] + cells + ["—"] * (n_cols - len(vals)))
        header = ["arm", "metric", *labels]
        body.append(_table(header, per_rows, table_id="per-seed"))

    extra = results.get("sampling_constraints") or {}
    if extra:
        body.append("<h2>Sampling-time constraints (beyond the paper)</h2>")
        body.append(
            '<p class="note">Each model sampled again with a sampling-time constraint on x̂0 (not the paper\'s method, '
            "whose priors act on training only). A projection zeroes the metric of the law it enforces by "
            "construction; credit it only with the paired Δ against the same model sampled without it.</p>"
        )
        ekeys = [k for k in keys if all(k in m for m in extra.values())]
        rows = [[arm_label(row)] + [_cell(m.get(k)) for k in ekeys] for row, m in extra.items()]
        for row, m in extra.items():
            arm = row.split(" + ", 1)[0]
            if arm in arms:
                rows.append(
                    [f"ratio {arm_label(row)} : {arm_label(arm)}"]
                    + [_ratio(m[k]["mean"], arms[arm][k]["mean"]) if k in m else "—" for k in ekeys]
                )
        classes = [""] * len(extra) + ["ratio"] * (len(rows) - len(extra))
        body.append(
            _table(["method"] + [_label(results, k) for k in ekeys], rows, table_id="constraints", row_classes=classes)
        )
        extra_pairs = results.get("sampling_constraints_paired") or {}
        if extra_pairs:
            header = [
                "row",
                "against",
                "metric",
                "mean Δ (row − against)",
                "95 % CI",
                "better seeds",
                "interval excludes 0",
            ]
            body.append(_table(header, _paired_rows(extra_pairs, ekeys, results, True), table_id="constraints-paired"))

    body.append("<h2>Figures</h2>")
    body.append(_figures_section(out_dir, figures))

    body.append("<h2>Run</h2>")
    run_rows = [
        ["experiment", name],
        ["preset", results.get("preset", "")],
        ["split", results.get("split", "test")],
        ["seeds", _seeds_text(results)],
        ["wall time", _wall_time(results)],
        ["data", _data_path(results.get("data"), out_dir)],
        ["device", results.get("device") or "(not recorded)"],
        ["world size", str(results.get("world_size") or "(not recorded)")],
        ["command", command or "(not recorded)"],
    ]
    body.append(_table(["item", "value"], run_rows, table_id="run"))
    body.append("<h3>Versions</h3>")
    body.append(_versions_table(versions))
    body.append("<h3>Config</h3>")
    body.append(_pre(config_yaml or "(no config)", "config"))
    if table_md:
        body.append("<details><summary>table.md (Markdown)</summary>")
        body.append(_pre(table_md, "table-md"))
        body.append("</details>")
    return _page(title, body)


def write_report(
    out_dir: Path,
    results: dict,
    *,
    table_md: str,
    config_yaml: str,
    figures: list[Path],
    command: str | None,
    versions: dict | None = None,
    name: str = "report.html",
) -> Path:
    """Write ``out_dir/report.html`` (module docstring); returns its path. ``figures``: the written figure
    files (PNGs are embedded; PDF/SVG/GIF linked); ``versions``: default :func:`collect_versions`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = render_report(
        results,
        out_dir=out_dir,
        table_md=table_md,
        config_yaml=config_yaml,
        figures=figures,
        command=command,
        versions=versions,
    )
    return write_text(out_dir / name, text)


# --------------------------------------------------------------------------------------------- sweep report
def render_sweep_report(
    sweep: Mapping[str, Any],
    *,
    out_dir: str | Path = ".",
    sweep_md: str = "",
    config_yaml: str = "",
    figures: Sequence[str | Path] = (),
    command: str | None = None,
    versions: Mapping[str, Any] | None = None,
) -> str:
    """The HTML text of :func:`write_sweep_report`."""
    out_dir = Path(out_dir)
    keys = list(sweep.get("metrics") or [])
    title = f"physdiff sweep: {sweep.get('experiment', '?')} ({sweep.get('preset', '?')} preset)"
    body = [f"<h1>{_e(title)}</h1>"]
    seeds = sweep.get("seeds", [])
    max_worse = float(sweep.get("max_worse", 0.05))
    body.append(
        '<p class="note">'
        + _e(
            f"Split: {sweep.get('split', 'val')}; seeds: {', '.join(map(str, seeds))}; a point is eligible as best "
            f"when no metric is worse than no_prior by more than {100 * max_worse:.0f} % and no mean is below "
            "the ground truth's floor. Score: geometric mean of the ratios (lower is better)."
        )
        + "</p>"
    )
    body.append("<h2>Grid</h2>")
    grid_rows = [[k, ", ".join(map(str, v))] for k, v in (sweep.get("grid") or {}).items()]
    grid_rows += [["fixed overrides", " ".join(sweep.get("fixed_overrides") or []) or "—"]]
    body.append(_table(["setting", "values"], grid_rows, table_id="grid"))

    best = sweep.get("best") or {}
    body.append("<h2>Sweep table</h2>")
    header = ["arm", "setting"] + [f"{k} (ratio)" for k in keys] + ["score", "below floor", "worse", "eligible", "best"]
    baseline = sweep.get("baseline") or {}
    rows: list[list[Any]] = [
        ["no_prior", "—"] + [_num(baseline.get(k)) for k in keys] + ["1", "—", "—", "baseline", ""]
    ]
    classes = [""]
    floor = sweep.get("floor") or {}
    rows.append(
        ["ground-truth floor", "—"] + [_num(floor[k]) if k in floor else "—" for k in keys] + ["", "", "", "", ""]
    )
    classes.append("floor")
    for entry in sweep.get("points") or []:
        setting = " ".join(entry.get("overrides") or [])
        for arm, r in (entry.get("arms") or {}).items():
            below, worse = list(r.get("below_floor") or []), list(r.get("worse") or [])
            eligible = not below and not worse
            is_best = arm in best and list(best[arm].get("overrides") or []) == list(entry.get("overrides") or [])
            cells: list[Any] = [arm, setting]
            for k in keys:
                ratio = (r.get("ratio") or {}).get(k)
                css = (
                    "good"
                    if ratio is not None and ratio < 1
                    else "bad"
                    if ratio is not None and ratio > 1 + max_worse
                    else ""
                )
                cells.append((f"{_num((r.get('mean') or {}).get(k))} ({format_number(ratio, 3, decimals=3)})", css))
            cells += [
                format_number(r.get("score"), 3, decimals=3),
                ", ".join(below) or "—",
                ", ".join(worse) or "—",
                ("yes" if eligible else "no", "good" if eligible else "bad"),
                "★ best" if is_best else "",
            ]
            rows.append(cells)
            classes.append("best" if is_best else "")
    body.append(_table(header, rows, table_id="sweep", row_classes=classes))

    body.append("<h2>Best point per arm</h2>")
    if best:
        best_rows = [
            [arm, " ".join(b.get("overrides") or []), format_number(b.get("score"), 3, decimals=3)]
            + [format_number((b.get("ratio") or {}).get(k), 3, decimals=3) for k in keys]
            for arm, b in best.items()
        ]
        body.append(_table(["arm", "setting", "score"] + [f"{k} ratio" for k in keys], best_rows, table_id="best"))
    else:
        body.append('<p class="note">No eligible point: every point made a metric worse or fell below the floor.</p>')

    if figures:
        body.append("<h2>Figures</h2>")
        body.append(_figures_section(out_dir, figures))
    body.append("<h2>Run</h2>")
    body.append(_table(["item", "value"], [["command", command or "(not recorded)"]], table_id="run"))
    body.append("<h3>Versions</h3>")
    body.append(_versions_table(versions))
    if config_yaml:
        body.append("<h3>Config</h3>")
        body.append(_pre(config_yaml, "config"))
    if sweep_md:
        body.append("<details><summary>sweep.md (Markdown)</summary>")
        body.append(_pre(sweep_md, "sweep-md"))
        body.append("</details>")
    return _page(title, body)


def write_sweep_report(
    out_dir: Path,
    sweep: dict,
    *,
    sweep_md: str = "",
    config_yaml: str = "",
    figures: Sequence[Path] = (),
    command: str | None = None,
    versions: dict | None = None,
    name: str = "report.html",
) -> Path:
    """Write ``out_dir/report.html`` for a ``sweep.json`` (grid, the sweep table with means, ratios, score,
    eligibility flags and the best point per arm, the command and versions); returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = render_sweep_report(
        sweep,
        out_dir=out_dir,
        sweep_md=sweep_md,
        config_yaml=config_yaml,
        figures=figures,
        command=command,
        versions=versions,
    )
    return write_text(out_dir / name, text)
