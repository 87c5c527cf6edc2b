"""Cost of sampling-time constraints (beyond the paper): sampling throughput with and without them.

Not a test. Examples:

    python benchmarks/bench_sampling_constraints.py --threads 1
    python benchmarks/bench_sampling_constraints.py --device cuda --batch 250 --steps 50

Setting: the quick preset's network (SpaceTimeEGNN hidden 48, 2 layers), untrained or, with
``--checkpoint SYSTEM=PATH``, a trained ``checkpoint.pt`` of ``physdiff reproduce`` (an untrained network's
x̂0 is far from feasible, so the Newton iterations of the energy projection need more steps to converge),
DDIM with ``--steps`` steps, trajectories given their first frame, on simulated test data. For each
system it samples one batch plainly and with each of the preset's constraints (the projections of
``sample.constraints`` of the presets), and prints samples/s, ms per sampler step, the
slowdown against plain sampling, and the largest residual of the enforced laws in the output (physical
units; float32).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench_prior_overhead import simulate
from physdiff.config import apply_overrides
from physdiff.experiments.config import preset_config
from physdiff.experiments.harness import sample_tensors
from physdiff.experiments.particle_task import ParticleTask
from physdiff.training.trainer import load_ema_weights

FRAMES = {"three-body": 20, "five-spring": 25}


def run(system: str, batch: int, steps: int, device: torch.device, repeats: int, ckpt: str | None) -> None:
    data = simulate(system, batch, FRAMES[system], seed=0)
    cfg = apply_overrides(
        preset_config(system),
        ["sample.sampler=ddim", f"sample.steps={steps}", "sample.eta=0", f"sample.batch_size={batch}"],
    )
    task = ParticleTask(cfg)
    scaling = task.fit_scaling(data)
    tensors = task.to_tensors(data, scaling, "prediction")
    torch.manual_seed(0)
    den = task.build_denoiser(scaling, tensors)
    if ckpt:
        load_ema_weights(den, ckpt, device=device)
    den = den.to(device).eval()
    ctx = {k: tensors[k].to(device) for k in ("masses", "edges") if k in tensors}

    def timed(constraint) -> tuple[float, torch.Tensor]:
        best, out = float("inf"), None
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = sample_tensors(den, tensors, cfg.sample, seed=0, device=device, constraint=constraint)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best, out

    base, _ = timed(None)
    print(f"\n{system}: batch {batch}, DDIM {steps} steps, device {device}, network {ckpt or 'untrained'}")
    print(f"{'constraint':<34}{'samples/s':>10}{'ms/step':>10}{'slowdown':>10}   max |residual| of the output")
    print(f"{'none':<34}{batch / base:>10.1f}{1e3 * base / (steps + 1):>10.1f}{1.0:>10.2f}")
    for c, priors in task.build_constraints(data, scaling):
        sec, out = timed((c, priors))
        res = [f"{p.name} {float(p.residual(out.to(device), **ctx).abs().max()):.1e}" for p in priors]
        label = f"{c.label} (×{c.iterations})"
        print(f"{label:<34}{batch / sec:>10.1f}{1e3 * sec / (steps + 1):>10.1f}{sec / base:>10.2f}   " + ", ".join(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="SYSTEM=PATH")
    args = ap.parse_args()
    ckpts = dict(item.split("=", 1) for item in args.checkpoint)
    if args.threads:
        torch.set_num_threads(args.threads)
    for system in FRAMES:
        run(system, args.batch, args.steps, torch.device(args.device), args.repeats, ckpts.get(system))


if __name__ == "__main__":
    main()
