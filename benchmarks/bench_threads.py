"""Training throughput against intra-op threads, alone and beside a competing run (issue 14.6).

Not a test. Example (on an otherwise idle machine; the figures mean nothing under foreign load):

    python benchmarks/bench_threads.py                       # quick EGNN (three-body) and U-Net (advection)
    python benchmarks/bench_threads.py --threads 1,2,4 --steps 200

For each experiment and each intra-op thread count it runs ``physdiff train EXP --threads N`` as a user
would (a subprocess with the quick preset, ``train.steps=--steps``) twice: alone, and while a second
``physdiff train`` of the same experiment with the same ``--threads`` runs beside it (two runs side by side on
one machine). It prints steps/s from the run's own ``metrics.csv`` (``elapsed_s``; the first logged
interval, which holds start-up and warm-up, is left out) and the slowdown beside the competitor.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENTS = ("three-body", "advection")


def _train_cmd(exp: str, run_dir: Path, cache: Path, threads: int, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "physdiff.cli.main",
        "--quiet",
        "train",
        exp,
        "--run-dir",
        str(run_dir),
        "--cache-dir",
        str(cache),
        "--device",
        "cpu",
        "--threads",
        str(threads),
        f"train.steps={steps}",
        "train.log_every=10",
        f"train.checkpoint_every={steps}",
    ]


def steps_per_second(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv") as f:
        rows = [(int(r["step"]), float(r["elapsed_s"])) for r in csv.DictReader(f)]
    (s0, t0), (s1, t1) = rows[0], rows[-1]
    return (s1 - s0) / max(t1 - t0, 1e-9)


def run(exp: str, threads: int, steps: int, beside: bool, tmp: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["TQDM_DISABLE"] = "1"
    cache = tmp / "data"
    competitor = None
    if beside:
        cmd = _train_cmd(exp, tmp / f"competitor-{exp}-{threads}", cache, threads, steps * 20)
        competitor = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5.0)  # let it reach its training loop
    try:
        run_dir = tmp / f"{exp}-{threads}-{'beside' if beside else 'alone'}"
        subprocess.run(_train_cmd(exp, run_dir, cache, threads, steps), env=env, check=True)
        return steps_per_second(run_dir)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiments", default=",".join(EXPERIMENTS))
    p.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    p.add_argument("--steps", type=int, default=150)
    a = p.parse_args()
    print(f"machine: {os.cpu_count()} logical CPUs; steps/s of 'physdiff train EXP --threads N' (quick preset)")
    print(f"{'experiment':<12} {'threads':>7} {'alone':>10} {'beside one':>11} {'slowdown':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for exp in a.experiments.split(","):
            subprocess.run(  # simulate the data once, outside the timings
                _train_cmd(exp, tmp / f"warm-{exp}", tmp / "data", 1, 10), check=True, env={**os.environ}
            )
            for threads in (int(t) for t in a.threads.split(",")):
                alone = run(exp, threads, a.steps, False, tmp)
                beside = run(exp, threads, a.steps, True, tmp)
                print(f"{exp:<12} {threads:>7} {alone:>10.2f} {beside:>11.2f} {alone / beside:>8.1f}×", flush=True)


if __name__ == "__main__":
    main()
