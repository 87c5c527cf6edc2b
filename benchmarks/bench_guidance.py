"""Normalised gradient guidance at sampling time (beyond the paper; issue 14.5): which ``scale`` to default to.

Not a test. Example:

    python benchmarks/bench_guidance.py results/three-body-quick --split val --n 20 --scales 0.1,0.3,1
    python benchmarks/bench_guidance.py results/darcy-quick --priors residual

Every arm × seed checkpoint of the results folder is sampled on the first ``--n`` conditions of ``--split``
with the preset's sampler, once plainly and once with gradient guidance on x̂0 at each ``--scales`` value
(``mode: guidance``, 1 step per sampler step; the step is ``scale`` times the exact line step of the
linearised residual, so the same value means the same for every system — :func:`physdiff.priors.sampling.
gradient_guidance`). Priors: ``--priors``, else those of the preset's first sampling-time constraint, else
the with-prior arm's. It prints and writes (``guidance.json``, ``guidance.md`` in ``--out``) the ratio of every
table metric to the same model sampled without guidance (mean over seeds of the per-seed ratio, with the
number of seeds where it is < 1), and flags the scales under which the constraint metric improves and no
other metric worsens by more than 5 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from bench_sampling_accuracy import load_results
from physdiff.experiments import tables
from physdiff.experiments.config import ConstraintConfig
from physdiff.experiments.harness import load_arm, sample_tensors

#: the metric each kind of law is read on (the others must not worsen by more than MAX_WORSE)
CONSTRAINT_METRIC = {"energy": "energy_error", "momentum": "momentum_error", "newton": "dynamic_error"}
MAX_WORSE = 0.05


def run_model(prep, den, cfg, seed, constraint, device) -> dict[str, float]:
    task = prep.task
    sample_cfg = dataclasses.replace(cfg.sample, constraints=[])
    metrics: dict[str, np.ndarray] = {}
    for subtask in cfg.subtasks:
        tensors = task.to_tensors(prep.evaluation, prep.scaling, subtask)
        x = sample_tensors(den, tensors, sample_cfg, seed, device=device, constraint=constraint)
        out = task.from_tensors(x, prep.evaluation, prep.scaling)
        metrics |= task.evaluate(out, prep.evaluation, subtask)
    return {k: float(np.mean(v)) for k, v in metrics.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path)
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--scales", default="0.1,0.3,1")
    p.add_argument("--priors", default=None, help="comma-separated prior names (default: see the module)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    info, cfg, prep = load_results(a.results, a.split, a.n)
    if a.priors:
        names = a.priors.split(",")
    elif cfg.sample.constraints:
        names = list(cfg.sample.constraints[0].priors)
    else:
        names = [pr.name for pr in cfg.priors]
    keys = list(cfg.metrics)
    target = "constraint_rmse" if "constraint_rmse" in keys else CONSTRAINT_METRIC.get(names[-1], keys[-1])
    scales = [float(s) for s in a.scales.split(",")]
    arms, seeds = list(info["arms"]), list(info["seeds"])
    ratios: dict[float, dict[str, dict[str, list[float]]]] = {s: {arm: {} for arm in arms} for s in scales}
    for arm in arms:
        for seed in seeds:
            den = load_arm(prep, tables.run_dir(a.results, arm, seed), device)
            base = run_model(prep, den, cfg, seed, None, device)
            for scale in scales:
                c = ConstraintConfig(priors=names, mode="guidance", scale=scale, iterations=1)
                priors = [prep.task.make_constraint_prior(n, prep.train, prep.scaling) for n in c.priors]
                got = run_model(prep, den, cfg, seed, (c, priors), device)
                for k in keys:
                    ratios[scale][arm].setdefault(k, []).append(got[k] / base[k])
                print(
                    f"{arm} seed {seed} scale {scale}: " + ", ".join(f"{k} ×{got[k] / base[k]:.3f}" for k in keys),
                    flush=True,
                )
    rows = []
    for scale in scales:
        row = {"scale": scale, "arms": {}}
        ok = True
        for arm in arms:
            r = {
                k: {"mean": float(np.mean(v)), "better_seeds": int(np.sum(np.asarray(v) < 1)), "n": len(v)}
                for k, v in ratios[scale][arm].items()
            }
            row["arms"][arm] = r
            ok &= r[target]["mean"] < 1 and all(r[k]["mean"] <= 1 + MAX_WORSE for k in keys if k != target)
        row["eligible"] = bool(ok)
        rows.append(row)
    res = {
        "experiment": info["experiment"],
        "split": a.split,
        "n": len(prep.indices),
        "seeds": seeds,
        "priors": names,
        "target": target,
        "metrics": keys,
        "rows": rows,
    }
    head = ["scale"] + [f"{k} ({arm})" for arm in arms for k in keys] + ["eligible"]
    lines = [
        f"### {info['experiment']}: guidance on {'+'.join(names)} ({a.split}, {res['n']} conditions, "
        f"seeds {seeds}); ratio to the same model without guidance (seeds where < 1)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        cells = [f"{row['scale']:g}"]
        cells += [
            f"×{row['arms'][arm][k]['mean']:.3f} ({row['arms'][arm][k]['better_seeds']}/{row['arms'][arm][k]['n']})"
            for arm in arms
            for k in keys
        ]
        cells.append("✓" if row["eligible"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"✓: {target} improves in every arm and no other metric worsens by more than {MAX_WORSE:.0%}."]
    md = "\n".join(lines) + "\n"
    out = a.out or a.results / f"guidance_{a.split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "guidance.json").write_text(json.dumps(res, indent=2))
    (out / "guidance.md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
