"""``physdiff sweep``: choose a prior's λ and w(t) (or any setting) on the validation split.

Runs the ``no_prior`` arm once and the with-prior arm(s) once per point of a grid of ``key=value``
overrides (e.g. ``priors.0.weight=0.1,1,10`` × ``priors.0.time_weight=one,alpha2``), all on the same
cached data and seeds, then writes ``sweep.json`` and ``sweep.md``: per point and arm the metric means and
their ratios to ``no_prior``, and the best point — the smallest geometric mean of the ratios over the
experiment's table metrics, among the points that make no metric worse by more than ``max_worse`` (5 %)
and do not go below the ground truth's floor (a generated field with a smaller finite-difference
residual than the simulator's own fields is smoother than the data, not more physical). Tuning reads
the ``val`` split by default; the test split stays held out.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from physdiff.evaluation.report import write_sweep_report
from physdiff.outputs import write_json, write_text

__all__ = ["parse_grid", "run_sweep", "best_points", "sweep_markdown"]

log = logging.getLogger("physdiff")


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["a.b=1,2", "c=x,y"]`` → ``{"a.b": ["1", "2"], "c": ["x", "y"]}`` (values stay strings; the
    config parses them)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"grid entry {item!r} is not of the form key=v1,v2,...")
        key, raw = item.split("=", 1)
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not values:
            raise ValueError(f"grid entry {item!r} has no values")
        grid[key.strip()] = values
    return grid


def _point_dir(point: list[str]) -> str:
    """A folder name per grid point, from its settings (so a resumed sweep reuses only identical runs)."""
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "-", p.replace("=", "-")) for p in point)


def _plan(
    experiment: str,
    preset: str,
    overrides: list[str],
    grid: dict[str, list[str]],
    cache: Path,
    split: str,
    config: Any = None,
) -> tuple[list[str], list[str], dict[str, str]]:
    """(table metrics, with-prior arms, refused arms) of the configured experiment. Every grid point is validated
    before any training: its config, and its priors and sampling-time constraints on the data (which are cached);
    an arm whose law the data do not obey (:class:`~physdiff.priors.base.PriorNotApplicable`) is refused alone,
    with its one-line reason, as ``reproduce`` does."""
    from physdiff.config import apply_overrides
    from physdiff.experiments.config import preset_config
    from physdiff.experiments.harness import prepare
    from physdiff.priors.base import PriorNotApplicable

    cfg = apply_overrides(config or preset_config(experiment, preset), overrides)
    keys = list(grid)
    # every point's config first (no data needed), then priors and constraints on the data
    points = [
        apply_overrides(cfg, [f"{k}={v}" for k, v in zip(keys, values, strict=True)])
        for values in itertools.product(*(grid[k] for k in keys))
    ]
    from physdiff.config import to_dict

    preps: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for point in points:  # each point's data (a data.* grid key: each file) loaded and checked before training
        key = json.dumps(to_dict(point.data), sort_keys=True, default=str)
        if key not in preps:
            preps[key] = prepare(point, cache, split=split, progress=False)
        prep = preps[key]
        task = type(prep.task)(point)
        for arm, specs in point.arms().items():
            try:
                task.build_priors(specs, prep.train, prep.scaling)
            except PriorNotApplicable as e:
                refused.setdefault(arm, str(e))
        task.build_constraints(prep.train, prep.scaling)
    return list(cfg.metrics), list(cfg.arms())[1:], refused


def run_sweep(
    experiment: str,
    grid: dict[str, list[str]],
    *,
    preset: str = "quick",
    out: str | Path | None = None,
    overrides: list[str] = (),
    config: Any = None,
    seeds: list[int] | None = None,
    arms: list[str] | None = None,
    split: str = "val",
    device: str = "auto",
    cache_dir: str | Path | None = None,
    max_worse: float = 0.05,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the grid; returns the ``sweep.json`` content. Runs resume from their checkpoints, so running
    the same sweep again continues where it stopped. ``config``: an experiment config to start from instead
    of the preset (the CLI's ``--config`` merged onto it)."""
    from physdiff.experiments.harness import reproduce as run

    if not grid:
        raise ValueError("empty sweep grid: give at least one --grid key=v1,v2,...")
    out = Path(out or f"results/sweep-{experiment}-{preset}")
    cache = Path(cache_dir) if cache_dir else out / "data"
    metrics, prior_arms, refused = _plan(experiment, preset, list(overrides), grid, cache, split, config)
    arms = list(arms) if arms else prior_arms
    if "no_prior" in arms:
        raise ValueError("the no_prior arm runs once as the baseline; list with-prior arms only in --arms")
    refused = {a: why for a, why in refused.items() if a in arms}
    for arm, why in refused.items():  # the data do not obey its law: this arm alone is left out
        log.warning("%s left out of the sweep: %s", arm, why)
    arms = [a for a in arms if a not in refused]
    if not arms:
        raise ValueError(f"no arm left to sweep: {'; '.join(refused.values())}")
    common = dict(
        preset=preset,
        config=config,
        seeds=seeds,
        cache_dir=cache,
        device=device,
        progress=progress,
        split=split,
        resume=True,
    )
    baselines: dict[tuple[str, ...], tuple[dict[str, float], dict[str, float], dict[str, Any]]] = {}

    def baseline_of(point: list[str]) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
        """The no_prior arm with the point's own non-prior settings (sampler, steps, training, data, ...),
        run once per distinct setting: a point is compared only with a baseline sampled and trained alike."""
        shared = tuple(p for p in point if not _prior_only(p.split("=", 1)[0]))
        if shared not in baselines:
            folder = out / "no_prior" if not shared else out / f"no_prior__{_point_dir(list(shared))}"
            res = run(experiment, out=folder, overrides=list(overrides) + list(shared), arms=["no_prior"], **common)
            means = {k: res["arms"]["no_prior"][k]["mean"] for k in metrics if k in res["arms"]["no_prior"]}
            # a residual below the ground truth's own floor overfits the discrete law; a distance between
            # distributions (mmd*) below its held-out floor is sampling noise, not a defect: no floor for it
            fl = {k: v for k, v in res.get("floor", {}).items() if k in means and v > 0 and not k.startswith("mmd")}
            baselines[shared] = (means, fl, res)
        return baselines[shared]

    baseline, floor, base = baseline_of([])
    keys = list(grid)
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
        point_baseline, point_floor, _ = baseline_of(point)
        res = run(experiment, out=out / _point_dir(point), overrides=list(overrides) + point, arms=arms, **common)
        entry: dict[str, Any] = {"overrides": point, "arms": {}}
        shared = [p for p in point if not _prior_only(p.split("=", 1)[0])]
        if shared:  # this point's own baseline (its non-prior settings)
            entry["baseline_overrides"] = shared
            entry["baseline"] = point_baseline
        for arm, m in res["arms"].items():
            if arm == "no_prior":
                continue
            means = {k: m[k]["mean"] for k in point_baseline}
            ratios = {k: means[k] / point_baseline[k] if point_baseline[k] else float("nan") for k in point_baseline}
            score = math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
            below = [k for k in means if k in point_floor and means[k] < point_floor[k]]
            worse = [k for k in ratios if ratios[k] > 1.0 + max_worse]
            entry["arms"][arm] = {"mean": means, "ratio": ratios, "score": score, "below_floor": below, "worse": worse}
        points.append(entry)
    best = best_points(points)
    result = {
        "experiment": experiment,
        "preset": preset,
        "split": split,
        "seeds": base["seeds"],
        "grid": grid,
        "fixed_overrides": list(overrides),
        "max_worse": max_worse,
        "refused": refused,
        "metrics": list(baseline),
        "baseline": baseline,
        "floor": floor,
        "points": points,
        "best": best,
    }
    write_json(out / "sweep.json", result)
    md = sweep_markdown(result)
    write_text(out / "sweep.md", md)
    write_sweep_report(out, result, sweep_md=md, command=command)
    return result


#: grid keys that change only the with-prior arms (everything else changes the baseline too)
PRIOR_ONLY_PREFIXES = ("priors.", "priors=")


def _prior_only(key: str) -> bool:
    """Whether a grid key changes only the with-prior arms (``priors.0.weight``), not the no_prior baseline
    (``sample.sampler``, ``train.steps``, ``data.path``, ``model.*``, ...)."""
    return key == "priors" or key.startswith(PRIOR_ONLY_PREFIXES)


def best_points(points: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm, the eligible point with the smallest score (``points`` as in ``sweep.json``)."""
    best: dict[str, dict[str, Any]] = {}
    for entry in points:
        for arm, r in entry["arms"].items():
            if r.get("below_floor") or r.get("worse"):  # below the data's floor, or a metric made worse
                continue
            if arm not in best or r["score"] < best[arm]["score"]:
                best[arm] = {"overrides": entry["overrides"], "score": r["score"], "ratio": r["ratio"]}
    return best


def sweep_markdown(result: dict[str, Any]) -> str:
    keys = result["metrics"]
    lines = [
        f"### sweep: {result['experiment']} ({result['preset']} preset, {result['split']} split, "
        f"seeds {result['seeds']})",
        "",
        "| arm | setting | " + " | ".join(f"{k} (ratio)" for k in keys) + " | score |",
        "|---|---|" + "---|" * (len(keys) + 1),
        "| no_prior | — | " + " | ".join(f"{result['baseline'][k]:.4g}" for k in keys) + " | 1 |",
    ]
    for entry in result["points"]:
        if entry.get("baseline_overrides"):  # the point's own baseline: the same non-prior settings
            b = entry["baseline"]
            cells = " | ".join(f"{b[k]:.4g}" for k in keys)
            lines.append(f"| no_prior | {' '.join(entry['baseline_overrides'])} | {cells} | 1 |")
        for arm, r in entry["arms"].items():
            cells = [f"{r['mean'][k]:.4g} ({r['ratio'][k]:.3f})" for k in keys]
            flag = " (below floor)" if r.get("below_floor") else ""
            flag += f" ({', '.join(r['worse'])} worse)" if r.get("worse") else ""
            row = f"| {arm} | {' '.join(entry['overrides'])} | " + " | ".join(cells) + f" | {r['score']:.3f}{flag} |"
            lines.append(row)
    lines.append("")
    for arm, b in result["best"].items():
        lines.append(f"best {arm}: `{' '.join(b['overrides'])}` (score {b['score']:.3f})")
    lines.append("")
    lines.append(
        "score: geometric mean over the metrics of the ratio with/without prior (lower is better). Not eligible "
        f"as best: a point that makes any metric worse by more than {100 * result.get('max_worse', 0.05):.0f} %, "
        "or whose mean falls below the ground truth's own floor (it fits the discrete residual better than the "
        "simulator's data do: smoother than the data, not more physical)."
    )
    return "\n".join(lines) + "\n"
