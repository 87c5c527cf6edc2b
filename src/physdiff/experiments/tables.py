"""What every ``physdiff reproduce`` table shares: its arms, the arms × seeds loop, the aggregation over
seeds, the ``results.json`` schema and the markdown table in the poster's form.

``results.json``::

    {"experiment", "split", "preset", "seeds",
     "arms": {arm: {metric: {"mean", "std", "per_seed", "nonfinite"}}},   # "no_prior", "prior:<name>"
     "paired": {arm: {metric: {"mean_diff", "ci95": [lo, hi], "better_seeds", "n"}}},  # vs no_prior
     "floor": {metric: value}, "data", "wall_time_s", ...}     # + experiment-specific entries

``std`` is the sample standard deviation over seeds (ddof = 1); ``paired`` compares each with-prior arm
with ``no_prior`` seed by seed (mean difference, its 95 % Student-t interval, seeds where the prior arm is
better; lower is better for every metric).

Tables add ``"sampling_constraints": {"<arm> + <mode>:<priors>": {metric: {...}}}``: the arms' models
sampled with a sampling-time constraint (beyond the paper), kept out of ``"arms"``, and
``"sampling_constraints_paired"``: each such row against the same model sampled without the constraint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from physdiff.evaluation.statistics import aggregate_seeds, paired_difference
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


#: metrics shown after the table's own when present (PDEBench's, on prediction samples)
EXTRA_KEYS = ("nrmse", "crmse", "brmse", "frmse_low", "frmse_mid", "frmse_high")


def table_keys(results: Mapping[str, Any]) -> list[str]:
    """The table's columns: its metrics (``metric_tasks``, in order), then PDEBench's when every arm has them."""
    keys = list(results.get("metric_tasks") or next(iter(results["arms"].values()), {}))
    arms = results["arms"].values()
    return keys + [k for k in EXTRA_KEYS if k not in keys and arms and all(k in m for m in arms)]


def _cell(m: Mapping[str, Any]) -> str:
    cell = f"{m['mean']:.4g} ± {m['std']:.2g}"
    return cell + (f" ({m['nonfinite']} non-finite)" if m.get("nonfinite") else "")


def _paired_cell(p: Mapping[str, Any] | None) -> str:
    """``Δ [lo, hi] (k/n)``: mean paired difference, its 95 % interval, seeds where the arm is better."""
    if p is None:
        return "—"
    ci = p.get("ci95")
    interval = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""
    return f"{p['mean_diff']:+.3g}{interval} ({p['better_seeds']}/{p['n']})"


def markdown_table(
    results: Mapping[str, Any], keys: Sequence[str], labels: Mapping[str, str] | None = None, note: str = ""
) -> str:
    """The poster's table: one row per arm (mean ± std over seeds), the ground-truth floor, the ratio of
    each with-prior arm to ``no_prior`` and its paired difference with the 95 % interval over seeds."""
    arms = results["arms"]
    keys = [k for k in keys if all(k in m for m in arms.values())]
    tasks = dict(results.get("metric_tasks") or {})
    tasks |= {k: "prediction" for k in EXTRA_KEYS if k in keys and k not in tasks}
    labels = labels or {k: f"{k} ({t})" for k, t in tasks.items()}
    header = ["| method | " + " | ".join(labels.get(k, k) for k in keys) + " |", "|---|" + "---|" * len(keys)]
    lines = [
        f"### {results['experiment']} ({results['preset']} preset, seeds {results['seeds']}, "
        f"{results.get('split', 'test')} split)",
        "",
        *header,
    ]
    for arm, metrics in arms.items():
        lines.append(f"| {arm} | " + " | ".join(_cell(metrics[k]) for k in keys) + " |")
    floor = results.get("floor", {})
    lines.append("| ground-truth floor | " + " | ".join(f"{floor[k]:.4g}" if k in floor else "—" for k in keys) + " |")
    pairs = results.get("paired") or paired(arms)
    if "no_prior" in arms:
        for arm in arms:
            if arm == "no_prior":
                continue
            base = [arms["no_prior"][k]["mean"] for k in keys]
            cells = [f"{arms[arm][k]['mean'] / b:.3f}" if b else "—" for k, b in zip(keys, base, strict=True)]
            lines.append(f"| ratio {arm} : no_prior | " + " | ".join(cells) + " |")
            cells = [_paired_cell(pairs.get(arm, {}).get(k)) for k in keys]
            lines.append(f"| paired Δ {arm} − no_prior [95 % CI] (better seeds) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "std: sample std (ddof = 1) over seeds when there are several, else over evaluation samples. Paired Δ: "
        "mean over seeds of the per-seed difference, its 95 % Student-t interval and the seeds in which the "
        "arm is better (lower); a gain is beyond the seed spread only when the interval excludes 0. " + note,
    ]
    extra = results.get("sampling_constraints") or {}
    if extra:
        extra_pairs = results.get("sampling_constraints_paired") or paired_constraints(extra, arms)
        lines += [
            "",
            "Beyond the paper: each model sampled again with a sampling-time constraint on x̂0 "
            "(`sample.constraints`; not the poster's method, whose priors act on training only). A projection "
            "zeroes the metric of the law it enforces by construction; read it for the other metrics, and "
            "credit it only with the paired Δ against the same model sampled without it.",
            "",
            *header,
        ]
        for row, metrics in extra.items():
            lines.append(f"| {row} | " + " | ".join(_cell(metrics[k]) for k in keys) + " |")
        for row, metrics in extra.items():
            arm = row.split(" + ", 1)[0]
            if arm not in arms:
                continue
            base = [arms[arm][k]["mean"] for k in keys]
            cells = [f"{metrics[k]['mean'] / b:.3g}" if b else "—" for k, b in zip(keys, base, strict=True)]
            lines.append(f"| ratio {row} : {arm} | " + " | ".join(cells) + " |")
            cells = [_paired_cell(extra_pairs.get(row, {}).get(k)) for k in keys]
            lines.append(f"| paired Δ {row} − {arm} [95 % CI] | " + " | ".join(cells) + " |")
    return "\n".join(lines).rstrip() + "\n"


def write_results(out: Path, results: Mapping[str, Any], table: str) -> None:
    """``results.json`` and ``table.md`` in ``out``."""
    write_json(out / "results.json", results)  # serialised first, then replaced atomically: never truncated
    write_text(out / "table.md", table)
