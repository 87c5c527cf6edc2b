"""Accuracy against cost of the samplers, on the trained models of a results folder (issue 14.1).

Not a test. Examples:

    python benchmarks/bench_sampling_accuracy.py results/three-body-quick --split val
    python benchmarks/bench_sampling_accuracy.py results/darcy-quick --split test --configs ddpm:1000
    python benchmarks/bench_sampling_accuracy.py results/burgers-quick --threads 1 --out bench/burgers

Every arm × seed checkpoint of the results folder (``arms/<arm>/seed<k>/checkpoint.pt``, EMA weights) is
sampled on the first ``sample.n_test`` conditions of ``--split`` with each sampler configuration
(``--configs``, default: DDPM-1000 as the reference, DDIM and Heun at 10/25/50/100 steps, DPM-Solver++(2M)
at 10/25/50; DDIM with the preset's η), without sampling-time constraints, seeded as ``reproduce`` seeds
them. For each configuration it reports the table metrics (mean ± std over seeds, ddof = 1), the
denoiser evaluations per sample (counted by a forward hook, not computed from the step count) and the
seconds per sample (wall time of the sampling alone; take them on a quiet machine), and the
with/without-prior ratio of every metric.

Decision rule (``--split val``): the cheapest configuration (fewest evaluations) whose every metric, in
every arm, lies within the seed spread of DDPM-1000's: ``|mean − mean_DDPM| ≤ std_DDPM`` (std over seeds,
ddof = 1).

Writes ``sampling_accuracy.json``, ``sampling_accuracy.md`` and ``sampling_accuracy.png`` in ``--out``
(default ``<results>/sampling_accuracy_<split>``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from physdiff.config import from_dict, load_yaml_dict
from physdiff.diffusion.samplers import SAMPLERS
from physdiff.evaluation.statistics import aggregate_seeds
from physdiff.experiments import tables
from physdiff.experiments.config import ExperimentConfig
from physdiff.experiments.harness import configure, load_arm, prepare, sample_tensors

DEFAULT_CONFIGS = (
    "ddpm:1000,ddim:10,ddim:25,ddim:50,ddim:100,heun:10,heun:25,heun:50,heun:100,dpmpp2m:10,dpmpp2m:25,dpmpp2m:50"
)


def parse_configs(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        name, _, steps = item.strip().partition(":")
        if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(f"--configs: {item!r} is not <sampler>:<steps> with a sampler of {sorted(SAMPLERS)}")
        out.append((name, int(steps)))
    return out


def load_results(folder: Path, split: str, n: int | None = None) -> tuple[dict, ExperimentConfig, object]:
    info = json.loads((folder / "results.json").read_text())
    raw = {k: v for k, v in load_yaml_dict(folder / "config.yaml").items() if k not in ("arm", "seed")}
    over = [f"data.path={(folder / info['data']).resolve()}"] + ([f"sample.n_test={n}"] if n else [])  # relative
    cfg = configure(from_dict(ExperimentConfig, raw, where=str(folder / "config.yaml")), over)
    first = tables.run_dir(folder, next(iter(info["arms"])), info["seeds"][0])
    scaling = json.loads((first / "scaling.json").read_text())
    prep = prepare(cfg, folder / "data", split=split, progress=False, scaling=scaling)
    return info, cfg, prep


def evaluate_config(prep, den, cfg: ExperimentConfig, seed: int, sampler: str, steps: int, device) -> dict:
    """Per-sample metrics of one model sampled with one configuration, its evaluations per sample and
    seconds per sample."""
    task = prep.task
    sample_cfg = dataclasses.replace(cfg.sample, sampler=sampler, steps=steps, constraints=[])
    calls = []
    hook = den.register_forward_hook(lambda *_: calls.append(1))
    metrics: dict[str, np.ndarray] = {}
    seconds, n_total, batches = 0.0, 0, 0
    try:
        for subtask in cfg.subtasks:
            tensors = task.to_tensors(prep.evaluation, prep.scaling, subtask)
            n = tensors["x0"].shape[0]
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            x = sample_tensors(den, tensors, sample_cfg, seed, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            n_total += n
            batches += math.ceil(n / sample_cfg.batch_size)
            out = task.from_tensors(x, prep.evaluation, prep.scaling)
            metrics |= task.evaluate(out, prep.evaluation, subtask)
    finally:
        hook.remove()
    return {"metrics": metrics, "nfe": len(calls) / max(batches, 1), "s_per_sample": seconds / max(n_total, 1)}


def within_spread(row: dict, ref: dict, arms: list[str], keys: list[str]) -> bool:
    for arm in arms:
        for k in keys:
            m, r = row["arms"][arm][k], ref["arms"][arm][k]
            if not (abs(m["mean"] - r["mean"]) <= r["std"]):
                return False
    return True


def markdown(res: dict) -> str:
    keys, arms = res["metrics"], res["arm_names"]
    head = ["sampler", "steps", "NFE", "s/sample"] + [f"{k} ({a})" for a in arms for k in keys]
    head += [f"ratio {k}" for k in keys] if len(arms) == 2 else []
    lines = [
        f"### {res['experiment']} ({res['preset']} preset, {res['split']} split, {res['n']} conditions, "
        f"seeds {res['seeds']})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in res["rows"]:
        cells = [row["sampler"], str(row["steps"]), f"{row['nfe']:.0f}", f"{row['s_per_sample']:.3g}"]
        cells += [f"{row['arms'][a][k]['mean']:.4g} ± {row['arms'][a][k]['std']:.2g}" for a in arms for k in keys]
        if len(arms) == 2:
            cells += [f"{row['ratio'][k]:.3f}" for k in keys]
        mark = " **(chosen)**" if res.get("chosen") == [row["sampler"], row["steps"]] else ""
        within = "" if row["within_ddpm_spread"] is None else (" ✓" if row["within_ddpm_spread"] else "")
        cells[0] += within + mark
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "✓: every metric of every arm within DDPM-1000's seed spread (|Δmean| ≤ std over seeds, ddof = 1). "
        "NFE: denoiser evaluations per sample (counted). s/sample: sampling wall time per sample "
        f"({res['threads']} intra-op threads, {res['device']}). Ratio: {arms[-1]} : {arms[0]}.",
    ]
    if "chosen" in res:
        lines.append(f"Decision rule: the cheapest ✓ configuration is {res['chosen'][0]}-{res['chosen'][1]}.")
    elif any(r["sampler"] == "ddpm" for r in res["rows"]):
        lines.append("Decision rule: no configuration is within DDPM-1000's seed spread; the preset keeps its sampler.")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    """One column per metric; top row against denoiser evaluations per sample, bottom row against seconds per
    sample (log x); the band is DDPM-1000's mean ± std over seeds per arm (solid: no prior, dashed: prior)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, ScalarFormatter

    keys, arms = res["metrics"], res["arm_names"]
    fig, axes = plt.subplots(2, len(keys), figsize=(max(3.6 * len(keys) + 2.2, 7.5), 6.0), squeeze=False)
    ref = next(r for r in res["rows"] if r["sampler"] == "ddpm")
    names = sorted({r["sampler"] for r in res["rows"] if r["sampler"] != "ddpm"})
    styles = ["-", "--", ":"]
    for row, (xkey, xlabel) in enumerate([("nfe", "denoiser evaluations per sample"), ("s_per_sample", "s / sample")]):
        for ax, k in zip(axes[row], keys, strict=True):
            for ai, arm in enumerate(arms):
                m, s = ref["arms"][arm][k]["mean"], ref["arms"][arm][k]["std"]
                ax.axhspan(m - s, m + s, color=f"C{ai + 5}", alpha=0.15, label=f"DDPM-1000 ± std ({arm})")
                for si, name in enumerate(names):
                    rows = sorted((r for r in res["rows"] if r["sampler"] == name), key=lambda r: r[xkey])
                    ax.errorbar(
                        [r[xkey] for r in rows],
                        [r["arms"][arm][k]["mean"] for r in rows],
                        yerr=[r["arms"][arm][k]["std"] for r in rows],
                        ls=styles[ai % len(styles)],
                        marker="o",
                        ms=3,
                        color=f"C{si}",
                        capsize=2,
                        label=f"{name} ({arm})",
                    )
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
            ax.set_xlabel(xlabel)
            ax.set_ylabel(k)
            if row == 0:
                ax.set_title(k)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(
        f"{res['experiment']}: accuracy against cost\n({res['split']} split, {res['n']} conditions, "
        f"mean ± std over seeds {res['seeds']})",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=200)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path, help="a results folder of 'physdiff reproduce' (--replot: an --out)")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated <sampler>:<steps>")
    p.add_argument("--n", type=int, default=None, help="conditions per seed (default: the preset's sample.n_test)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--replot", action="store_true", help="redraw RESULTS/sampling_accuracy.{md,png} from its .json")
    a = p.parse_args()
    if a.replot:
        res = json.loads((a.results / "sampling_accuracy.json").read_text())
        (a.results / "sampling_accuracy.md").write_text(markdown(res))
        plot(res, a.results / "sampling_accuracy.png")
        print(f"redrew {a.results / 'sampling_accuracy.png'}")
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    configs = parse_configs(a.configs)
    info, cfg, prep = load_results(a.results, a.split, a.n)
    if cfg.diffusion.process != "vp":
        raise SystemExit(f"{a.results}: a {cfg.diffusion.process!r} process; this benchmark compares VP samplers")
    arms, seeds, keys = list(info["arms"]), list(info["seeds"]), list(cfg.metrics)
    per: dict[tuple[str, int], dict[str, dict[int, dict]]] = {}
    cost: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for arm in arms:
        for seed in seeds:
            den = load_arm(prep, tables.run_dir(a.results, arm, seed), device)
            for sampler, steps in configs:
                r = evaluate_config(prep, den, cfg, seed, sampler, steps, device)
                per.setdefault((sampler, steps), {}).setdefault(arm, {})[seed] = r["metrics"]
                cost.setdefault((sampler, steps), []).append((r["nfe"], r["s_per_sample"]))
                print(
                    f"{arm} seed {seed} {sampler}-{steps}: NFE {r['nfe']:.0f}, {r['s_per_sample']:.3g} s/sample, "
                    + ", ".join(f"{k} {np.mean(r['metrics'][k]):.4g}" for k in keys),
                    flush=True,
                )
    rows = []
    for (sampler, steps), by_arm in per.items():
        agg = {arm: aggregate_seeds(m) for arm, m in by_arm.items()}
        nfe, sps = np.mean([c[0] for c in cost[(sampler, steps)]]), np.mean([c[1] for c in cost[(sampler, steps)]])
        row = {
            "sampler": sampler,
            "steps": steps,
            "nfe": float(nfe),
            "s_per_sample": float(sps),
            "arms": {arm: {k: agg[arm][k] for k in keys} for arm in arms},
        }
        if len(arms) == 2:
            row["ratio"] = {k: agg[arms[1]][k]["mean"] / agg[arms[0]][k]["mean"] for k in keys}
        rows.append(row)
    rows.sort(key=lambda r: (r["sampler"] != "ddpm", r["nfe"], r["sampler"]))
    ref = max((r for r in rows if r["sampler"] == "ddpm"), key=lambda r: r["steps"], default=None)  # DDPM-1000
    for row in rows:
        row["within_ddpm_spread"] = None if ref is None or row is ref else within_spread(row, ref, arms, keys)
    res = {
        "experiment": info["experiment"],
        "preset": info["preset"],
        "split": a.split,
        "seeds": seeds,
        "metrics": keys,
        "arm_names": arms,
        "rows": rows,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "results": str(a.results.resolve()),
        "n": len(prep.indices),
    }
    ok = [r for r in rows if r["within_ddpm_spread"]]
    if ok:
        best = min(ok, key=lambda r: r["nfe"])
        res["chosen"] = [best["sampler"], best["steps"]]
    out = a.out or a.results / f"sampling_accuracy_{a.split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampling_accuracy.json").write_text(json.dumps(res, indent=2))
    (out / "sampling_accuracy.md").write_text(markdown(res))
    if ref is not None and len(rows) > 1:
        plot(res, out / "sampling_accuracy.png")
    print()
    print(markdown(res))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
