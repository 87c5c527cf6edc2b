"""Constraint methods side by side (``physdiff compare-constraints``): the training penalty (the poster's prior)
and every sampling-time method of :mod:`physdiff.priors.sampling`, on the same trained models with paired seeds.

Per process family (VP and flow matching) and seed, two arms are trained once: ``no_prior`` and ``penalty`` (the
preset's with-prior arm of the law; method.md §3). The ``no_prior`` model is then sampled plainly and with each
sampling-time method, from the same initial noise (the same seeded batches), and the ``penalty`` model plainly.
Every row reports:

* ``law:<name>``: the per-sample RMS of each enforced law's residual R(x) in physical units
  (:func:`law_residual_metrics`), on the law's sub-task (generation where the experiment has one);
* the experiment's own metrics (prediction RMSE where there is a prediction task, ``mmd`` on generation);
* ``evaluations``: network evaluations per sample (counted; D-Flow's backward passes are not counted) and
  ``seconds``: wall seconds per sample;

each paired over seeds against the same process's ``no_prior`` row (for a sampling method, the same model
sampled without it). A method that is not defined on a process (``pcfm``, ``eci`` on VP) is listed under
``refused`` with the reason, not run. Writes ``results.json``, ``table.md`` and ``report.html`` with one figure
(law residual against seconds per sample, a point per method and process).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physdiff.config import from_dict, save_yaml
from physdiff.diffusion import Denoiser
from physdiff.evaluation.statistics import paired_difference
from physdiff.experiments import tables
from physdiff.experiments.config import ConstraintConfig, ExperimentConfig, preset_config
from physdiff.experiments.harness import Prepared, configure, prepare, sample_tensors, train_arm
from physdiff.priors.base import Prior
from physdiff.priors.sampling import CONSTRAINT_MODES, make_method
from physdiff.training.distributed import resolve_device

__all__ = ["METHOD_CHOICES", "PROCESSES", "compare_constraints", "law_residual_metrics", "parse_methods"]

log = logging.getLogger("physdiff")

PENALTY = "penalty"
#: what ``--methods`` may list: the training penalty and every sampling-time mode
METHOD_CHOICES: tuple[str, ...] = (PENALTY, *CONSTRAINT_MODES)
PROCESSES: tuple[str, ...] = ("vp", "flow")
COST_KEYS: tuple[str, ...] = ("evaluations", "seconds")


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"penalty,guidance,..."`` → the list, refusing unknown names and repeats in one line."""
    names = [m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    if not names:
        raise ValueError(f"--methods: name at least one of {', '.join(METHOD_CHOICES)}")
    bad = [m for m in names if m not in METHOD_CHOICES]
    if bad:
        raise ValueError(f"--methods: unknown method(s) {bad}; choose from {', '.join(METHOD_CHOICES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--methods: a method is listed twice in {names}")
    return names


def law_residual_metrics(priors: Sequence[Prior], x: Tensor, context: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """``law:<name>``: per sample, the RMS over its entries of each law's residual R(x) (the constraint prior's
    physical units), for model tensors ``x`` ``[N, ...]`` with their ``context``."""
    out = {}
    with torch.no_grad():
        for p in priors:
            r = p.residual(x, **context).flatten(1)
            out[f"law:{p.name}"] = r.square().mean(1).sqrt().double().cpu().numpy()
    return out


def _process_config(base: ExperimentConfig, process: str) -> ExperimentConfig:
    """The experiment under ``process``: flow matching predicts v where the preset predicts ε, on the linear
    interpolant; no ``sample.constraints`` (the methods are sampled here)."""
    over = [f"diffusion.process={process}", "sample.constraints=[]"]
    if process == "flow":
        over += ["diffusion.schedule=linear"] + (
            ["diffusion.prediction=v"] if base.diffusion.prediction == "eps" else []
        )
    return configure(base, over)


def _penalty_arm(cfg: ExperimentConfig, laws: Sequence[str]) -> str:
    arms = [a for a in cfg.arms() if a != "no_prior"]
    for law in laws:
        if f"prior:{law}" in arms:
            return f"prior:{law}"
    if not arms:
        raise ValueError(f"{cfg.experiment}: the preset trains no with-prior arm, so there is no penalty to compare")
    return arms[0]


def _default_laws(cfg: ExperimentConfig) -> list[str]:
    """The priors of the preset's first sampling-time constraint, else those of its training priors."""
    if cfg.sample.constraints:
        return list(cfg.sample.constraints[0].priors)
    return [p.name for p in cfg.priors]


def _method_config(
    mode: str, laws: Sequence[str], base: ExperimentConfig, options: Mapping[str, Mapping[str, Any]]
) -> ConstraintConfig:
    """The settings of one method: the preset's constraint of that mode if it has one (its tuned values), then
    ``options[mode]``."""
    start: dict[str, Any] = {}
    for c in base.sample.constraints:
        if c.mode == mode:
            start = {k: getattr(c, k) for k in ConstraintConfig.__dataclass_fields__}
            break
    return from_dict(ConstraintConfig, {**start, **dict(options.get(mode, {})), "priors": list(laws), "mode": mode})


class _EvaluationCounter:
    """Counts the rows the network evaluates (a forward hook on ``den.net``)."""

    def __init__(self, den: Denoiser) -> None:
        self.rows = 0
        self.handle = den.net.register_forward_hook(self._hook)

    def _hook(self, module: Any, args: tuple, output: Any) -> None:
        self.rows += int(args[0].shape[0])


def _sample_row(
    prep: Prepared,
    den: Denoiser,
    seed: int,
    laws: list[Prior],
    law_subtask: str,
    device: torch.device,
    constraint: tuple[ConstraintConfig, list[Prior]] | None = None,
) -> dict[str, np.ndarray]:
    """Every sub-task sampled once (same seeded batches in every row), evaluated, with the law residuals and the
    cost per sample."""
    task, cfg = prep.task, prep.cfg
    dtype = getattr(torch, cfg.sample.dtype)
    den = den if next(den.parameters()).dtype == dtype else copy.deepcopy(den).to(dtype)
    counter = _EvaluationCounter(den)
    metrics: dict[str, np.ndarray] = {}
    rows, seconds = 0, 0.0
    try:
        for subtask in cfg.subtasks:
            tensors = task.to_tensors(prep.evaluation, prep.scaling, subtask, dtype=dtype)
            t0 = time.perf_counter()
            x = sample_tensors(den, tensors, cfg.sample, seed, device=device, constraint=constraint)
            seconds += time.perf_counter() - t0
            rows += x.shape[0]
            if subtask == law_subtask:
                metrics |= law_residual_metrics(laws, x, task.context(tensors))
            metrics |= task.evaluate(task.from_tensors(x, prep.evaluation, prep.scaling), prep.evaluation, subtask)
    finally:
        counter.handle.remove()
    metrics["evaluations"] = np.array([counter.rows / rows])
    metrics["seconds"] = np.array([seconds / rows])
    return metrics


def _law_floor(prep: Prepared, laws: list[Prior], subtask: str) -> dict[str, float]:
    tensors = prep.task.to_tensors(prep.evaluation, prep.scaling, subtask, dtype=torch.float64)
    res = law_residual_metrics(laws, tensors["x0"], prep.task.context(tensors))
    return {k: float(np.mean(v)) for k, v in res.items()}


def _paired_rows(rows: Mapping[str, Mapping[str, Any]], processes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every row against its process's ``no_prior`` row, seed by seed."""
    out: dict[str, dict[str, Any]] = {}
    for p in processes:
        base = rows.get(f"{p}: no_prior")
        if base is None:
            continue
        for row, metrics in rows.items():
            if row.startswith(f"{p}: ") and row != f"{p}: no_prior":
                out[row] = {
                    k: {**paired_difference(m["per_seed"], base[k]["per_seed"]), "against": f"{p}: no_prior"}
                    for k, m in metrics.items()
                    if k in base
                }
    return out


def markdown(results: Mapping[str, Any]) -> str:
    """One table per experiment: every row (mean ± std over seeds), the ground truth's floor, and every row's
    paired Δ against its process's no_prior row."""
    rows, keys, floor = results["rows"], results["keys"], results["floor"]
    keys = [k for k in keys if any(k in m for m in rows.values())]
    head = ["| row | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]

    def cell(m: Mapping[str, Any], k: str) -> str:
        return tables._cell(m[k]) if k in m else "—"

    lines = [
        f"### {results['experiment']}: constraint methods side by side ({results['preset']} preset, seeds "
        f"{results['seeds']}, {results['split']} split; laws {', '.join(results['laws'])})",
        "",
        *head,
        *(f"| {row} | " + " | ".join(cell(m, k) for k in keys) + " |" for row, m in rows.items()),
        "| ground-truth floor | " + " | ".join(f"{floor[k]:.4g}" if k in floor else "—" for k in keys) + " |",
        "",
        "Paired Δ against the same process's no_prior row (for a sampling method: the same model sampled "
        "without it) [95 % CI over seeds] (seeds in which the row is lower):",
        "",
        *head,
    ]
    for row, pairs in results["paired"].items():
        lines.append(f"| {row} | " + " | ".join(tables._paired_cell(pairs.get(k)) for k in keys) + " |")
    lines.append("")
    for row, why in results.get("refused", {}).items():
        lines.append(f"Not run: {row}: {why}")
    lines.append(
        "law:<name>: per-sample RMS of the law's residual (physical units); evaluations: network evaluations per "
        "sample (D-Flow's backward passes not counted); seconds: wall seconds per sample on this machine."
    )
    return "\n".join(lines).rstrip() + "\n"


def cost_figure(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Law residual against seconds per sample, one point per row (method × process), log-log."""
    from physdiff.evaluation.plots import new_figure, save_figure

    rows = results["rows"]
    laws = [k for k in results["keys"] if k.startswith("law:")]
    fig = new_figure(4.5 * max(1, len(laws)), 4.0)
    for i, law in enumerate(laws):
        ax = fig.add_subplot(1, len(laws), i + 1)
        placed: list[tuple[float, float]] = []  # (log10 x, log10 y) of the labels so far
        for process, marker in zip(PROCESSES, ("o", "s"), strict=True):
            for row, m in rows.items():
                if not row.startswith(f"{process}: ") or law not in m:
                    continue
                x, y = m["seconds"]["mean"], max(m[law]["mean"], 1e-300)
                ax.scatter([x], [y], marker=marker)
                # a label next to an earlier one (within 0.15 decade on both axes) goes one line lower
                at = (math.log10(max(x, 1e-300)), math.log10(y))
                near = sum(abs(at[0] - px) < 0.15 and abs(at[1] - py) < 0.15 for px, py in placed)
                placed.append(at)
                ax.annotate(row, (x, y), fontsize=7, xytext=(3, 3 - 10 * near), textcoords="offset points")
        if law in results["floor"] and results["floor"][law] > 0:
            ax.axhline(results["floor"][law], color="grey", linestyle="--", linewidth=0.8, label="ground truth")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("seconds per sample")
        ax.set_ylabel(f"{law} (RMS residual)")
    fig.suptitle(f"{results['experiment']}: law residual vs cost (o VP, □ flow)")
    return save_figure(fig, out_dir, f"compare_constraints_{results['experiment']}", formats=("png",))


def compare_constraints(
    experiment: str,
    methods: Sequence[str],
    preset: str | None = "quick",
    out: str | Path | None = None,
    *,
    laws: Sequence[str] | None = None,
    processes: Sequence[str] = PROCESSES,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    overrides: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    split: str = "test",
    command: str | None = None,
    train: Callable[..., Denoiser] = train_arm,
) -> dict[str, Any]:
    """Run the comparison (module docstring) and write ``out`` (default ``results/<experiment>-constraints``);
    returns ``results.json``'s content. ``preset``: ``None`` is the quick preset (the CLI's default). ``laws``:
    the priors the sampling methods enforce and whose residual is reported (default: the preset's first
    ``sample.constraints`` entry, else its training priors);
    ``method_options``: per method, settings of ``sample.constraints`` (e.g. ``{"dps": {"scale": 0.1}}``)."""
    methods = parse_methods(methods)
    bad = [p for p in processes if p not in PROCESSES]
    if bad or not processes:
        raise ValueError(f"--processes: choose from {PROCESSES}, got {list(processes)}")
    options = dict(method_options or {})
    unknown = [m for m in options if m not in methods]
    if unknown:
        raise ValueError(f"--set: options for {unknown}, which --methods does not list")
    base = configure(preset_config(experiment, preset or "quick"), overrides, seeds)
    laws = list(laws or _default_laws(base))
    if not laws:
        raise ValueError(f"{experiment}: no law to compare: name one with --law (a prior with a residual)")
    out = Path(out or f"results/{experiment}-constraints")
    dev = resolve_device(device)
    sampling = [m for m in methods if m != PENALTY]
    configs = {m: _method_config(m, laws, base, options) for m in sampling}

    # validate everything before training: configs, laws, methods on each process
    preps: dict[str, Prepared] = {}
    refused: dict[str, str] = {}
    for process in processes:
        cfg = _process_config(base, process)
        prep = prepare(cfg, Path(cache_dir or out / "data"), split=split, progress=progress)
        preps[process] = prep
        law_priors = [prep.task.make_constraint_prior(n, prep.train, prep.scaling) for n in laws]
        if PENALTY in methods:
            _penalty_arm(cfg, laws)
        for m in sampling:
            try:
                make_method(law_priors, **configs[m].hook_options()).check_process(process)
            except ValueError as e:
                if "does not apply" not in str(e):
                    raise
                refused[f"{process}: {m}"] = str(e)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(base, out / "config.yaml")

    per_row: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    floor: dict[str, float] = {}
    t_all = time.time()
    for process, prep in preps.items():
        cfg = prep.cfg
        law_priors = [prep.task.make_constraint_prior(n, prep.train, prep.scaling) for n in laws]
        law_subtask = "generation" if "generation" in cfg.subtasks else cfg.subtasks[0]
        floor |= _law_floor(prep, law_priors, law_subtask)
        floor |= prep.task.floor(prep.evaluation)
        arms = ["no_prior"] + ([_penalty_arm(cfg, laws)] if PENALTY in methods else [])
        for seed in cfg.seeds:
            for arm in arms:
                run_dir = tables.run_dir(out / process, arm, seed)
                den = train(prep, arm, seed, run_dir, device=dev, resume=resume, force=force, progress=progress)
                row = "no_prior" if arm == "no_prior" else PENALTY
                kw = {"laws": law_priors, "law_subtask": law_subtask, "device": dev}
                per_row.setdefault(f"{process}: {row}", {})[seed] = _sample_row(prep, den, seed, **kw)
                if arm != "no_prior":
                    continue
                for m in sampling:  # the same model and the same seeded noise, with each sampling-time method
                    if f"{process}: {m}" in refused:
                        continue
                    if progress:
                        log.info("[%s | seed %d] sampling with %s", process, seed, m)
                    c = (configs[m], law_priors)
                    per_row.setdefault(f"{process}: {m}", {})[seed] = _sample_row(prep, den, seed, constraint=c, **kw)
    rows = {row: tables.aggregate(m) for row, m in per_row.items()}
    law_keys = [f"law:{p}" for p in laws]
    metric_keys = [k for k in base.metrics if any(k in m for m in rows.values())]
    extra = [k for k in ("mmd", "mmd_invariant") if k not in metric_keys and any(k in m for m in rows.values())]
    results = {
        "experiment": base.experiment,
        "preset": base.preset,
        "split": split,
        "seeds": list(base.seeds),
        "laws": laws,
        "methods": methods,
        "processes": list(processes),
        "settings": {m: configs[m].hook_options() for m in sampling},
        "keys": law_keys + metric_keys + extra + list(COST_KEYS),
        "rows": rows,
        "paired": _paired_rows(rows, processes),
        "floor": floor,
        "refused": refused,
        "wall_time_s": round(time.time() - t_all, 1),
        "command": command,
    }
    table = markdown(results)
    tables.write_results(out, results, table)
    _report(out, results, table)
    return results


def _report(out: Path, results: Mapping[str, Any], table: str) -> None:
    """``report.html``: the table (in the report's layout: rows as arms, paired Δ against no_prior) and the figure."""
    from physdiff.evaluation.report import write_report

    try:
        figures = cost_figure(results, out / "plots")
    except Exception as e:  # noqa: BLE001 - a plotting failure must not lose the results
        log.warning("warning: the cost figure failed: %s: %s", type(e).__name__, e)
        figures = []
    view = {
        "experiment": f"{results['experiment']} (constraint methods)",
        "preset": results["preset"],
        "split": results["split"],
        "seeds": results["seeds"],
        "metric_tasks": {k: "" for k in results["keys"]},
        "arms": results["rows"],
        "floor": results["floor"],
        "sampling_constraints": {},
        "wall_time_s": results["wall_time_s"],
    }
    config_yaml = (out / "config.yaml").read_text() if (out / "config.yaml").is_file() else ""
    write_report(out, view, table_md=table, config_yaml=config_yaml, figures=figures, command=results.get("command"))
