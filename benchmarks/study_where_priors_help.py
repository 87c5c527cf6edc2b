"""Where does a physical prior pay off? The with/without-prior ratio against training budget and data size
(issue 15.5).

Not a test; hours on a CPU. Example (what docs/results.md reports):

    python benchmarks/study_where_priors_help.py five-spring --steps 300,600,2000 --sizes 0.5,1,2 \\
        --seeds 0,1,2 --out results/study-five-spring

For each training budget (``train.steps``, at the preset's data size) and each data size (``data.n`` times the
preset's, at the preset's budget) it runs ``physdiff reproduce EXPERIMENT --split val`` with both arms
(``no_prior`` and the preset's prior arm; no sampling-time constraint rows) into ``OUT/<point>``, resuming
finished runs. Per point and metric it reports the no-prior model's value (mean over seeds) and the ratio
prior / no-prior as the mean over seeds of the per-seed ratio with its 95 % Student-t interval (the arms
share data and seeds, so the ratio is paired). Writes ``study.json``, ``study.md`` and ``study.png`` (one
panel per metric and axis: ratio with its interval against budget and against size, 1 dashed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from physdiff.config import apply_overrides
from physdiff.evaluation.statistics import student_t_interval
from physdiff.experiments.config import preset_config
from physdiff.experiments.harness import reproduce


def paired_ratio(prior: list[float], base: list[float]) -> dict:
    r = np.asarray(prior, dtype=np.float64) / np.asarray(base, dtype=np.float64)
    return {
        "mean": float(r.mean()),
        "ci95": student_t_interval(r),
        "per_seed": r.tolist(),
        "better": int((r < 1).sum()),
    }


def run_point(exp: str, out: Path, overrides: list[str], seeds: list[int], cache: Path, arm: str) -> dict:
    res = reproduce(
        exp,
        "quick",
        out,
        arms=["no_prior", arm],
        overrides=[*overrides, "sample.constraints=[]"],
        seeds=seeds,
        split="val",
        resume=True,
        cache_dir=cache,
        device="cpu",
        progress=False,
    )
    arms = list(res["arms"])
    base, prior = res["arms"]["no_prior"], res["arms"][arms[1]]
    return {
        "overrides": overrides,
        "arm": arms[1],
        "no_prior": {k: v["mean"] for k, v in base.items()},
        "ratio": {k: paired_ratio(prior[k]["per_seed"], base[k]["per_seed"]) for k in base},
    }


def plot(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = study["metrics"]
    axes_def = [("steps", "training steps"), ("size", "training-set size (× quick preset)")]
    fig, axes = plt.subplots(2, len(keys), figsize=(3.6 * len(keys), 6.0), squeeze=False)
    for row, (axis, label) in enumerate(axes_def):
        pts = study[axis]
        x = [p["x"] for p in pts]
        for col, k in enumerate(keys):
            ax = axes[row][col]
            m = np.array([p["ratio"][k]["mean"] for p in pts])
            lo = np.array([(p["ratio"][k]["ci95"] or [np.nan, np.nan])[0] for p in pts])
            hi = np.array([(p["ratio"][k]["ci95"] or [np.nan, np.nan])[1] for p in pts])
            ax.errorbar(x, m, yerr=[m - lo, hi - m], marker="o", capsize=3, color="C1")
            ax.axhline(1.0, ls="--", color="grey", lw=1)
            ax.set_xscale("log")
            ax.set_xticks(x, [f"{v:g}" for v in x])
            ax.set_xticks([], minor=True)  # the log axis' minor labels would overprint the points' labels
            ax.set_xlabel(label)
            ax.set_ylabel(f"{k}: prior / no prior")
            if row == 0:
                ax.set_title(k)
    fig.suptitle(
        f"{study['experiment']}: {study['arm']} against no_prior\n(val split, seeds {study['seeds']}; "
        "mean of per-seed ratios, 95 % t-interval)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=200)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)


def markdown(study: dict) -> str:
    keys = study["metrics"]
    lines = [
        f"### {study['experiment']}: {study['arm']} / no_prior against budget and data size (val, seeds "
        f"{study['seeds']})",
        "",
        "| point | " + " | ".join(f"{k} no_prior | ratio [95 % CI] (better seeds)" for k in keys) + " |",
        "|---|" + "---|---|" * len(keys),
    ]
    for axis in ("steps", "size"):
        for p in study[axis]:
            cells = []
            for k in keys:
                r = p["ratio"][k]
                ci = "—" if r["ci95"] is None else f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
                cells += [f"{p['no_prior'][k]:.4g}", f"{r['mean']:.3f} {ci} ({r['better']}/{len(r['per_seed'])})"]
            name = f"{p['x']:g} steps" if axis == "steps" else f"{p['x']:g}× data"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*", help="config overrides key=value applied to every point")
    p.add_argument("--steps", default="300,600,2000")
    p.add_argument("--sizes", default="0.5,1,2")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arm", default=None, help="the with-prior arm (default: the preset's first)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--replot", action="store_true", help="redraw OUT/study.{md,png,pdf} from OUT/study.json")
    a = p.parse_intermixed_args()  # overrides may follow the options
    cfg = apply_overrides(preset_config(a.experiment, "quick"), a.overrides)
    out = a.out or Path(f"results/study-{a.experiment}")
    if a.replot:
        study = json.loads((out / "study.json").read_text())
        (out / "study.md").write_text(markdown(study))
        plot(study, out / "study.png")
        print(f"redrew {out / 'study.png'}")
        return
    cache = out / "data"
    seeds = [int(s) for s in a.seeds.split(",")]
    arm = a.arm or list(cfg.arms())[1]  # the preset's first with-prior arm
    study = {"experiment": a.experiment, "seeds": seeds, "metrics": list(cfg.metrics), "steps": [], "size": []}
    for steps in (int(s) for s in a.steps.split(",")):
        point = run_point(
            a.experiment, out / f"steps-{steps}", [*a.overrides, f"train.steps={steps}"], seeds, cache, arm
        )
        study["steps"].append({"x": steps, **point})
        print(f"steps {steps}: " + ", ".join(f"{k} ×{v['mean']:.3f}" for k, v in point["ratio"].items()), flush=True)
    for size in (float(s) for s in a.sizes.split(",")):
        n = max(int(round(size * cfg.data.n)), 20)
        # the preset's size at the preset's budget is the budget axis's point of that budget: the same runs
        folder = out / (f"steps-{cfg.train.steps}" if n == cfg.data.n else f"size-{size:g}")
        extra = [f"train.steps={cfg.train.steps}"] if n == cfg.data.n else [f"data.n={n}"]
        point = run_point(a.experiment, folder, [*a.overrides, *extra], seeds, cache, arm)
        study["size"].append({"x": size, "n": n, **point})
        print(f"size {size}: " + ", ".join(f"{k} ×{v['mean']:.3f}" for k, v in point["ratio"].items()), flush=True)
    study["arm"] = study["steps"][0]["arm"] if study["steps"] else study["size"][0]["arm"]
    study["metrics"] = [k for k in study["metrics"] if k in (study["steps"] or study["size"])[0]["ratio"]]
    (out / "study.json").write_text(json.dumps(study, indent=2))
    (out / "study.md").write_text(markdown(study))
    plot(study, out / "study.png")
    print(markdown(study))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
