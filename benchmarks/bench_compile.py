"""Eager vs ``torch.compile`` (``train.compile: true``) for the EGNN and the U-Net at the presets' sizes.

    python benchmarks/bench_compile.py --sizes quick --steps 5             # a few steps (slow to compile on a CPU)
    python benchmarks/bench_compile.py --device cuda --sizes quick paper --steps 50

A training step is the trainer's: ``diffusion_loss`` (x0 objective) + backward + AdamW, on random data of the
preset's shape and batch size (the network and the batch shape set the cost, not the values). Per model and
size it prints eager steps/s, the compile time (first compiled step minus an eager step; it includes the
backward graph), compiled steps/s and the break-even number of steps, compile time / (eager − compiled
seconds a step): a run shorter than that is faster eager. (That compiled steps equal eager ones to float
tolerance is tested in tests/test_acceleration.py.)

Sizes (from the presets): EGNN three-body quick (B 32, L 20, K 3, hidden 48 × 2 layers, 6 vector channels)
and paper (B 128, L 30, K 3, hidden 128 × 6, 16 channels); U-Net advection quick (B 16, 1 × 32 × 64, base 16,
mults 1-2-2) and paper (B 64, 1 × 96 × 256: the paper's 101 × 256 grid rounded to a multiple of 8, base 64,
mults 1-2-2-4, 2 res blocks).
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from physdiff.diffusion import Denoiser, make_schedule
from physdiff.diffusion.objective import diffusion_loss
from physdiff.models.egnn import SpaceTimeEGNN
from physdiff.models.unet import UNet
from physdiff.training.acceleration import accelerated


@dataclass(frozen=True)
class Case:
    model: str
    size: str
    batch: tuple[int, ...]
    build: Callable[[], nn.Module]


CASES = [
    Case("egnn", "quick", (32, 20, 3, 6), lambda: SpaceTimeEGNN(3, hidden=48, layers=2, vector_channels=6, heads=4)),
    Case("egnn", "paper", (128, 30, 3, 6), lambda: SpaceTimeEGNN(3, hidden=128, layers=6, vector_channels=16, heads=8)),
    Case(
        "unet",
        "quick",
        (16, 1, 32, 64),
        lambda: UNet(2, 1, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, periodic=(False, True)),
    ),
    Case(
        "unet",
        "paper",
        (64, 1, 96, 256),
        lambda: UNet(2, 1, base_channels=64, channel_mults=(1, 2, 2, 4), num_res_blocks=2, periodic=(False, True)),
    ),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(
    den: Denoiser, opt: torch.optim.Optimizer, x0: torch.Tensor, steps: int, device: torch.device
) -> tuple[float, list[float]]:
    """``steps`` training steps; returns the seconds and the losses (drawn from a fixed generator)."""
    g = torch.Generator().manual_seed(0)
    losses = []
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        t = torch.rand(x0.shape[0], generator=g).to(device) * 0.98 + 0.01
        eps = torch.randn(x0.shape, generator=g).to(device)
        loss = diffusion_loss(den, x0, objective="x0", t=t, eps=eps).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    _sync(device)
    return time.perf_counter() - start, losses


def bench(case: Case, steps: int, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    net = case.build().to(device)
    schedule = make_schedule("linear")
    x0 = torch.randn(case.batch, generator=torch.Generator().manual_seed(1)).to(device)
    eager_net = copy.deepcopy(net)
    eager = Denoiser(eager_net, schedule, prediction="x0")
    opt_e = torch.optim.AdamW(eager_net.parameters(), lr=1e-4)
    run_steps(eager, opt_e, x0, 1, device)  # warm-up
    t_eager, _ = run_steps(eager, opt_e, x0, steps, device)
    compiled = accelerated(Denoiser(net, schedule, prediction="x0"), compile=True)
    opt_c = torch.optim.AdamW(net.parameters(), lr=1e-4)
    t_first, _ = run_steps(compiled, opt_c, x0, 1, device)
    t_comp, _ = run_steps(compiled, opt_c, x0, steps, device)
    per_e, per_c = t_eager / steps, t_comp / steps
    compile_s = max(t_first - per_c, 0.0)
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "eager_steps_per_s": 1 / per_e,
        "compiled_steps_per_s": 1 / per_c,
        "compile_s": compile_s,
        "break_even_steps": compile_s / (per_e - per_c) if per_e > per_c else float("inf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--models", nargs="+", default=["egnn", "unet"], choices=("egnn", "unet"))
    parser.add_argument("--sizes", nargs="+", default=["quick"], choices=("quick", "paper"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode (after a warm-up step)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, device {device}, threads {args.threads}, {args.steps} timed steps, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        "\n| model | size | batch | params | eager steps/s | compiled steps/s | speed-up | compile s "
        "| break-even steps |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for case in CASES:
        if case.model not in args.models or case.size not in args.sizes:
            continue
        r = bench(case, args.steps, device)
        print(
            f"| {case.model} | {case.size} | {'×'.join(map(str, case.batch))} | {r['params']:,} "
            f"| {r['eager_steps_per_s']:.2f} | {r['compiled_steps_per_s']:.2f} "
            f"| ×{r['compiled_steps_per_s'] / r['eager_steps_per_s']:.2f} | {r['compile_s']:.0f} "
            f"| {r['break_even_steps']:.0f} |",
            flush=True,
        )
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
