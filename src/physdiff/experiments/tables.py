"""What every ``physdiff reproduce`` table shares: its arms, the arms × seeds loop, the aggregation over
seeds, the ``results.json`` schema and the markdown table in the poster's form.

``results.json``::

    {"experiment", "split", "preset", "seeds",
     "arms": {arm: {metric: {"mean", "std", "per_seed", "nonfinite"}}},   # "no_prior", "prior:<name>"
     "paired": {arm: {metric: {"mean_diff", "ci95": [lo, hi], "better_seeds", "n"}}},  # vs no_prior
     "floor": {metric: value}, "data", "wall_time_s", ...}     # + experiment-specific entries

Every law an arm trains with or a constraint row enforces is a metric ``law:<name>`` (the RMS of its residual on
the generated samples, per sample, then over seeds), with its ground-truth floor in ``"floor"``; arms whose prior
the data do not obey are left out and listed in ``"refused": {arm: message}``.

``std`` is the sample standard deviation over seeds (ddof = 1); ``paired`` compares each with-prior arm
with ``no_prior`` seed by seed (mean difference, its 95 % Student-t interval, seeds where the prior arm is
better; lower is better for every metric).

Tables add ``"sampling_constraints": {"<arm> + <mode>:<priors>": {metric: {...}}}``: the arms' models
sampled with a sampling-time constraint (beyond the paper), kept out of ``"arms"``, and
``"sampling_constraints_paired"``: each such row against the same model sampled without the constraint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from physdiff.evaluation.statistics import (
    aggregate_seeds,
    arm_label,
    format_number,
    metric_label,
    metric_order,
    paired_difference,
)
from physdiff.outputs import write_json, write_text

__all__ = [
    "select_arms",
    "run_dir",
    "table_keys",
    "aggregate",
    "paired",
    "paired_constraints",
    "run_arms",
    "markdown_table",
    "relative_paths",
    "ordered_metrics",
    "write_results",
]

PerSample = dict[str, np.ndarray]


def select_arms(specs: Mapping[str, list[Any]], arms: Sequence[str] | None) -> dict[str, list[Any]]:
    """The requested subset of ``specs`` (all when ``arms`` is empty); unknown names raise ``ValueError``."""
    if not arms:
        return dict(specs)
    unknown = sorted(set(arms) - set(specs))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; this experiment has {sorted(specs)}")
    return {a: specs[a] for a in arms}


def aggregate(per_seed: Mapping[int, PerSample]) -> dict[str, dict[str, Any]]:
    """Per metric: mean and sample std (ddof = 1) over seeds of the per-seed means, the per-seed values and
    the count of non-finite per-sample values (:func:`physdiff.evaluation.statistics.aggregate_seeds`)."""
    return aggregate_seeds(per_seed)


def paired(arms: Mapping[str, Mapping[str, Any]], base: str = "no_prior") -> dict[str, dict[str, Any]]:
    """``{arm: {metric: {"mean_diff", "ci95", "better_seeds", "n"}}}``: every arm but ``base`` against
    ``base``, seed by seed (the arms share data and seeds; :func:`physdiff.evaluation.statistics.paired_difference`)."""
    if base not in arms:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for arm, metrics in arms.items():
        if arm == base:
            continue
        out[arm] = {
            k: paired_difference(m["per_seed"], arms[base][k]["per_seed"])
            for k, m in metrics.items()
            if k in arms[base]
        }
    return out


def paired_constraints(
    rows: Mapping[str, Mapping[str, Any]], arms: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Each sampling-constraint row ``"<arm> + <mode>:<priors>"`` against the same arm's model sampled
    without the constraint: what the constraint adds, seed by seed (``"against"`` names that arm)."""
    out: dict[str, dict[str, Any]] = {}
    for row, metrics in rows.items():
        arm = row.split(" + ", 1)[0]
        if arm not in arms:
            continue
        out[row] = {
            k: {**paired_difference(m["per_seed"], arms[arm][k]["per_seed"]), "against": arm}
            for k, m in metrics.items()
            if k in arms[arm]
        }
    return out


def run_dir(out: Path, arm: str, seed: int) -> Path:
    """The run folder of one arm and seed in a results folder: ``arms/<arm>/seed<k>`` (``:`` and ``/`` of
    user prior paths replaced)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in arm)
    return out / "arms" / safe / f"seed{seed}"


def run_arms(
    arms: Iterable[str], seeds: Sequence[int], out: Path, run_one: Callable[[str, int, Path], tuple[PerSample, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], float]:
    """Train and evaluate every arm × seed in ``out/arms/<arm>/seed<k>``.

    ``run_one(arm, seed, run_dir)`` returns the per-sample metrics and the generated samples. Returns the
    aggregated metrics per arm, the first seed's samples per arm (for plots) and the wall time in seconds.
    """
    per_arm: dict[str, dict[int, PerSample]] = {}
    generated: dict[str, Any] = {}
    t_start = time.time()
    for arm in arms:
        per_arm[arm] = {}
        for seed in seeds:
            metrics, samples = run_one(arm, seed, run_dir(out, arm, seed))
            per_arm[arm][seed] = metrics
            generated.setdefault(arm, samples)
    return {a: aggregate(m) for a, m in per_arm.items()}, generated, round(time.time() - t_start, 1)


def table_keys(results: Mapping[str, Any]) -> list[str]:
    """Every metric the tables show, in their one order: the table's own (``metric_tasks``), then the others
    every arm has (:func:`physdiff.evaluation.statistics.metric_order`; the console, ``table.md``,
    ``results.json`` and ``report.html`` share it)."""
    main, extra = metric_order(results)
    return main + extra


def _cell(m: Mapping[str, Any]) -> str:
    cell = f"{format_number(m['mean'])} ± {format_number(m['std'], 2)}"
    return cell + (f" ({m['nonfinite']} non-finite)" if m.get("nonfinite") else "")


def _ratio(a: Any, b: Any) -> str:
    """``a / b`` (:func:`format_number`, 3 decimals, e-notation below 1e-3); ``—`` when ``b`` is 0."""
    return format_number(float(a) / float(b), 3, decimals=3) if b else "—"


def _paired_cell(p: Mapping[str, Any] | None) -> str:
    """``Δ [lo, hi] (k/n)``: mean paired difference, its 95 % interval, seeds where the arm is better."""
    if p is None:
        return "—"
    ci = p.get("ci95")
    interval = f" [{format_number(ci[0], 3)}, {format_number(ci[1], 3)}]" if ci else ""
    return f"{format_number(p['mean_diff'], 3, sign=True)}{interval} ({p['better_seeds']}/{p['n']})"


def _block(results: Mapping[str, Any], keys: Sequence[str], labels: Mapping[str, str]) -> list[str]:
    """One table of ``keys``: the arms (mean ± std), the floor, each with-prior arm's ratio to ``no_prior``
    and its paired difference."""
    arms = results["arms"]
    lines = ["| method | " + " | ".join(labels.get(k, k) for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for arm, metrics in arms.items():
        lines.append(f"| {arm_label(arm)} | " + " | ".join(_cell(metrics[k]) for k in keys) + " |")
    floor = results.get("floor", {})
    lines.append("| ground-truth floor | " + " | ".join(format_number(floor.get(k)) for k in keys) + " |")
    pairs = results.get("paired") or paired(arms)
    if "no_prior" in arms:
        for arm in arms:
            if arm == "no_prior":
                continue
            cells = [_ratio(arms[arm][k]["mean"], arms["no_prior"][k]["mean"]) for k in keys]
            lines.append(f"| ratio {arm_label(arm)} : no_prior | " + " | ".join(cells) + " |")
            cells = [_paired_cell(pairs.get(arm, {}).get(k)) for k in keys]
            lines.append(
                f"| paired Δ {arm_label(arm)} − no_prior [95 % CI] (better seeds) | " + " | ".join(cells) + " |"
            )
    return lines


def markdown_table(
    results: Mapping[str, Any], keys: Sequence[str], labels: Mapping[str, str] | None = None, note: str = ""
) -> str:
    """The poster's table: one row per arm (mean ± std over seeds), the ground-truth floor, the ratio of
    each with-prior arm to ``no_prior`` and its paired difference with the 95 % interval over seeds; the
    table's own metrics first, the other metrics of ``keys`` in a second table of the same rows (the order of
    :func:`table_keys`, as in ``report.html``)."""
    arms = results["arms"]
    keys = [k for k in keys if all(k in m for m in arms.values())]
    main_order, _ = metric_order(results)
    main = [k for k in keys if k in main_order] or keys
    extra = [k for k in keys if k not in main]
    labels = {k: metric_label(results, k) for k in keys} | dict(labels or {})
    lines = [
        f"### {results['experiment']} ({results['preset']} preset, seeds {results['seeds']}, "
        f"{results.get('split', 'test')} split)",
        "",
        *_block(results, main, labels),
    ]
    if extra:
        lines += ["", "More metrics (the same samples):", "", *_block(results, extra, labels)]
    lines += [
        "",
        "std: sample std (ddof = 1) over seeds when there are several, else over evaluation samples. Paired Δ: "
        "mean over seeds of the per-seed difference, its 95 % Student-t interval and the seeds in which the "
        "arm is better (lower); a gain is beyond the seed spread only when the interval excludes 0. " + note,
    ]
    extra_rows = results.get("sampling_constraints") or {}
    if extra_rows:
        extra_pairs = results.get("sampling_constraints_paired") or paired_constraints(extra_rows, arms)
        ckeys = [k for k in keys if all(k in m for m in extra_rows.values())]
        lines += [
            "",
            "Beyond the paper: each model sampled again with a sampling-time constraint on x̂0 "
            "(`sample.constraints`; not the poster's method, whose priors act on training only). A projection "
            "zeroes the metric of the law it enforces by construction; read it for the other metrics, and "
            "credit it only with the paired Δ against the same model sampled without it.",
            "",
            "| method | " + " | ".join(labels.get(k, k) for k in ckeys) + " |",
            "|---|" + "---|" * len(ckeys),
        ]
        for row, metrics in extra_rows.items():
            lines.append(f"| {arm_label(row)} | " + " | ".join(_cell(metrics[k]) for k in ckeys) + " |")
        for row, metrics in extra_rows.items():
            arm = row.split(" + ", 1)[0]
            if arm not in arms:
                continue
            cells = [_ratio(metrics[k]["mean"], arms[arm][k]["mean"]) for k in ckeys]
            lines.append(f"| ratio {arm_label(row)} : {arm_label(arm)} | " + " | ".join(cells) + " |")
            cells = [_paired_cell(extra_pairs.get(row, {}).get(k)) for k in ckeys]
            lines.append(f"| paired Δ {arm_label(row)} − {arm_label(arm)} [95 % CI] | " + " | ".join(cells) + " |")
    return "\n".join(lines).rstrip() + "\n"


def relative_paths(out: Path, results: Mapping[str, Any]) -> dict[str, Any]:
    """``results`` with its ``data`` path relative to the results folder ``out`` (a committed results folder
    names no folder of the machine that made it); ``physdiff plot`` resolves it against the folder again."""
    res = dict(results)
    data = res.get("data")
    if isinstance(data, str) and data and Path(data).is_absolute():
        try:
            res["data"] = Path(os.path.relpath(data, Path(out).resolve())).as_posix()
        except ValueError:  # another drive (Windows): keep it
            pass
    return res


def ordered_metrics(results: Mapping[str, Any]) -> dict[str, Any]:
    """``results`` with every arm's and row's metrics in :func:`table_keys`' order (others after them)."""
    keys = table_keys(results)

    def order(metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {k: metrics[k] for k in keys if k in metrics} | {k: v for k, v in metrics.items() if k not in keys}

    res = dict(results)
    for section in ("arms", "paired", "sampling_constraints", "sampling_constraints_paired"):
        if isinstance(res.get(section), Mapping):
            res[section] = {name: order(m) for name, m in res[section].items()}
    return res


def write_results(out: Path, results: Mapping[str, Any], table: str) -> None:
    """``results.json`` (metrics in the tables' order, the data path relative to ``out``) and ``table.md``
    in ``out``."""
    results = ordered_metrics(relative_paths(out, results))
    write_json(out / "results.json", results)  # serialised first, then replaced atomically: never truncated
    write_text(out / "table.md", table)
