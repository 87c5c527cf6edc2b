"""What every ``physdiff reproduce`` table shares: its arms, the arms × seeds loop, the aggregation over
seeds, the ``results.json`` schema and the markdown table in the poster's form.

``results.json``::

    {"experiment", "split", "preset", "seeds",
     "arms": {arm: {metric: {"mean", "std", "per_seed"}}},   # arms "no_prior", "prior:<name>"
     "floor": {metric: value}, "data", "wall_time_s", ...}     # + experiment-specific entries

Particle tables add ``"sampling_constraints": {"<arm> + <mode>:<priors>": {metric: {...}}}``: the arms'
models sampled with a sampling-time constraint (beyond the paper), kept out of ``"arms"``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "configure_run",
    "arms_of",
    "select_arms",
    "check_constraints",
    "aggregate",
    "run_arms",
    "markdown_table",
    "write_results",
]

PerSample = dict[str, np.ndarray]


def configure_run(cfg: Any, overrides: Sequence[str], seeds: Sequence[int] | None, out: Path) -> Any:
    """Apply ``key=value`` overrides and a seed list to a preset config, create ``out`` and save the
    effective config there as ``config.yaml``; returns the config."""
    from physdiff.config import apply_overrides, save_yaml

    cfg = apply_overrides(cfg, list(overrides))
    if seeds is not None:
        cfg.seeds = list(seeds)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    return cfg


def arms_of(priors: Iterable[Any]) -> dict[str, list[Any]]:
    """``{"no_prior": [], "prior:<name>": [prior config], ...}``: one with-prior arm per configured prior."""
    arms: dict[str, list[Any]] = {"no_prior": []}
    for p in priors:
        arms[f"prior:{p.name}"] = [p]
    return arms


def select_arms(specs: Mapping[str, list[Any]], arms: Sequence[str] | None) -> dict[str, list[Any]]:
    """The requested subset of ``specs`` (all when ``arms`` is empty); unknown names raise ``ValueError``."""
    if not arms:
        return dict(specs)
    unknown = sorted(set(arms) - set(specs))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; this experiment has {sorted(specs)}")
    return {a: specs[a] for a in arms}


def check_constraints(constraints: Sequence[Any]) -> None:
    """Refuse ``sample.constraints`` entries with an unknown mode, no prior, or a label listed twice."""
    from physdiff.priors.sampling import CONSTRAINT_MODES

    labels = set()
    for c in constraints:
        if c.mode not in CONSTRAINT_MODES:
            raise ValueError(
                f"sample.constraints: unknown mode {c.mode!r} ({c.label}); choose one of {CONSTRAINT_MODES}"
            )
        if not c.priors:
            raise ValueError("sample.constraints: a constraint names no prior (priors=[...])")
        if c.label in labels:
            raise ValueError(f"sample.constraints: {c.label!r} is listed twice")
        labels.add(c.label)


def aggregate(per_seed: Mapping[int, PerSample]) -> dict[str, dict[str, Any]]:
    """Per metric: mean and std over seeds of the per-seed means, plus the per-seed values. With one seed
    the spread over evaluation samples stands in for the spread over seeds."""
    seeds = sorted(per_seed)
    out = {}
    for k in per_seed[seeds[0]]:
        vals = [float(np.mean(per_seed[s][k])) for s in seeds]
        std = np.std(vals) if len(vals) > 1 else np.std(per_seed[seeds[0]][k])
        out[k] = {"mean": float(np.mean(vals)), "std": float(std), "per_seed": vals}
    return out


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
            metrics, samples = run_one(arm, seed, out / "arms" / arm.replace(":", "_") / f"seed{seed}")
            per_arm[arm][seed] = metrics
            generated.setdefault(arm, samples)
    return {a: aggregate(m) for a, m in per_arm.items()}, generated, round(time.time() - t_start, 1)


def _cell(m: Mapping[str, float]) -> str:
    return f"{m['mean']:.4g} ± {m['std']:.2g}"


def markdown_table(
    results: Mapping[str, Any], keys: Sequence[str], labels: Mapping[str, str] | None = None, note: str = ""
) -> str:
    """The poster's table: one row per arm (mean ± std), the ground-truth floor, and the ratio of each
    with-prior arm to ``no_prior`` per metric."""
    arms = results["arms"]
    keys = [k for k in keys if all(k in m for m in arms.values())]
    labels = labels or {}
    lines = [
        f"### {results['experiment']} ({results['preset']} preset, seeds {results['seeds']}, "
        f"{results.get('split', 'test')} split)",
        "",
        "| method | " + " | ".join(labels.get(k, k) for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for arm, metrics in arms.items():
        lines.append(f"| {arm} | " + " | ".join(_cell(metrics[k]) for k in keys) + " |")
    floor = results.get("floor", {})
    lines.append("| ground-truth floor | " + " | ".join(f"{floor[k]:.4g}" if k in floor else "—" for k in keys) + " |")
    if "no_prior" in arms:
        for arm in arms:
            if arm == "no_prior":
                continue
            base = [arms["no_prior"][k]["mean"] for k in keys]
            cells = [f"{arms[arm][k]['mean'] / b:.3f}" if b else "—" for k, b in zip(keys, base, strict=True)]
            lines.append(f"| ratio {arm} : no_prior | " + " | ".join(cells) + " |")
            if len(results["seeds"]) > 1:  # arms share data and seeds: compare them seed by seed
                wins = [
                    sum(p < q for p, q in zip(arms[arm][k]["per_seed"], arms["no_prior"][k]["per_seed"], strict=True))
                    for k in keys
                ]
                n = len(results["seeds"])
                lines.append(f"| seeds where {arm} is better | " + " | ".join(f"{w}/{n}" for w in wins) + " |")
    lines += ["", "std: over seeds when there are several, else over evaluation samples. " + note]
    extra = results.get("sampling_constraints") or {}
    if extra and "no_prior" in arms:
        lines += [
            "",
            "Beyond the paper: each model sampled again with a sampling-time constraint on x̂0 "
            "(`sample.constraints`; not the poster's method, whose priors act on training only). A projection "
            "zeroes the metric of the law it enforces by construction; read it for the other metrics.",
            "",
            "| method | " + " | ".join(labels.get(k, k) for k in keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        base = [arms["no_prior"][k]["mean"] for k in keys]
        for row, metrics in extra.items():
            lines.append(f"| {row} | " + " | ".join(_cell(metrics[k]) for k in keys) + " |")
        for row, metrics in extra.items():
            cells = [f"{metrics[k]['mean'] / b:.3g}" if b else "—" for k, b in zip(keys, base, strict=True)]
            lines.append(f"| ratio {row} : no_prior | " + " | ".join(cells) + " |")
    return "\n".join(lines).rstrip() + "\n"


def write_results(out: Path, results: Mapping[str, Any], table: str) -> None:
    """``results.json`` and ``table.md`` in ``out``."""
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "table.md").write_text(table)
