"""Training and sampling throughput of field diffusion (U-Net denoiser) per field size; peak memory.

Not a test. Examples:

    python benchmarks/bench_field_diffusion.py --device cpu --threads 1
    python benchmarks/bench_field_diffusion.py --device cuda --full --sizes st1d-40x64 2d-32x32 2d-64x64 st2d-16x32x32

Per field size it measures

* training steps/s: ``diffusion_loss`` (data-matching objective ``x0`` by default) + backward + AdamW step
  on a batch of ``--batch`` random fields (the throughput does not depend on the data);
* sampling samples/s: DDIM (η = 0) at 10, 20 and 50 steps at a batch of ``--sample-batch``, and DDPM
  at 1000 steps at a batch of ``--ddpm-batch``. DDPM-1000 runs by default only for the smallest selected
  size (fewest values) because a CPU is slow; ``--full`` runs it for every size, otherwise the table
  says "skipped (use --full)";
* the issue's target: seconds per 64x64 sample at 50 steps (DDIM), both as throughput at the sample
  batch and as the latency of a single sample (batch 1); target < 1 s on one GPU;
* peak memory above the baseline after building the model and data, for sampling and for training.
  CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at the start of the phase. CPU: growth
  of the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over its value
  after building the model and data; every size runs in a fresh spawned process so that earlier sizes do
  not hide it, and sampling is measured before training (the peak only ever grows, so the training
  figure is the larger of the two phases).

Layouts (docs/architecture.md: channel-first fields; space-time images have time as the first spatial axis):

* ``st1d-40x64``: 1D space-time [B, 1, 40, 64], periodic in space, the first frame known (mask);
* ``2d-32x32`` / ``2d-64x64``: Darcy-like 2D field [B, 1, H, W] with one conditioning channel (the
  coefficient field), no known entries;
* ``st2d-16x32x32``: 2D space-time, shallow-water-like [B, 3, 16, 32, 32] (h, hu, hv; reflective walls,
  so no periodic axis), the first frame known. Not in the default set (slow on a CPU).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from physdiff.diffusion import Denoiser, diffusion_loss, make_schedule, sample
from physdiff.models.unet import UNet


@dataclass(frozen=True)
class FieldSize:
    label: str
    spatial_dims: int
    channels: int
    cond_channels: int
    shape: tuple[int, ...]
    periodic: tuple[bool, ...]
    first_frame_known: bool


SIZES = {
    "2d-32x32": FieldSize("2D 32×32, cond 1", 2, 1, 1, (32, 32), (False, False), False),
    "st1d-40x64": FieldSize("1D space-time 40×64", 2, 1, 0, (40, 64), (False, True), True),
    "2d-64x64": FieldSize("2D 64×64, cond 1", 2, 1, 1, (64, 64), (False, False), False),
    "st2d-16x32x32": FieldSize("2D space-time 16×32×32, 3 ch", 3, 3, 0, (16, 32, 32), (False,) * 3, True),
}
DEFAULT_SIZES = ["2d-32x32", "st1d-40x64", "2d-64x64"]
DDIM_STEPS = (10, 20, 50)
DDPM_STEPS = 1000
TARGET_SIZE, TARGET_STEPS, TARGET_SECONDS = "2d-64x64", 50, 1.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


class PeakMemory:
    """Peak memory (MiB) of a phase above a baseline: CUDA max_memory_allocated, or CPU ru_maxrss growth."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = self._cpu_maxrss() if device.type == "cpu" else 0

    @staticmethod
    def _cpu_maxrss() -> int:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return rss if sys.platform == "darwin" else rss * 1024

    def start_phase(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        return (self._cpu_maxrss() - self.base) / 2**20


def _fields(s: FieldSize, batch: int, device: torch.device, seed: int) -> dict[str, torch.Tensor | None]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    x0 = torch.randn(batch, s.channels, *s.shape, generator=g)
    mask = None
    if s.first_frame_known:
        mask = torch.zeros_like(x0)
        mask[:, :, 0] = 1.0
    cond = torch.randn(batch, s.cond_channels, *s.shape, generator=g) if s.cond_channels else None
    out = {"x0": x0, "mask": mask, "known": None if mask is None else x0 * mask, "cond": cond}
    return {k: None if v is None else v.to(device) for k, v in out.items()}


def bench(key: str, args: argparse.Namespace) -> dict:
    """All figures of one field size (runs in a fresh process on CPU)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    s = SIZES[key]
    torch.manual_seed(0)
    net = UNet(
        s.spatial_dims,
        s.channels,
        cond_channels=s.cond_channels,
        base_channels=args.base_channels,
        channel_mults=tuple(args.channel_mults),
        num_res_blocks=args.num_res_blocks,
        periodic=s.periodic,
    ).to(device)
    # the output convolution is zero-initialised; perturb it so sampling runs on a non-trivial network
    with torch.no_grad():
        net.out_conv.weight.normal_(0.0, 1e-3)
    den = Denoiser(net, make_schedule(args.schedule), prediction=args.prediction)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    train_data = _fields(s, args.batch, device, seed=1)
    sample_data = _fields(s, args.sample_batch, device, seed=2)
    one_data = _fields(s, 1, device, seed=3)
    ddpm_data = _fields(s, max(args.ddpm_batch, 1), device, seed=4)
    mem = PeakMemory(device)
    res: dict = {"key": key, "label": s.label, "params": sum(p.numel() for p in net.parameters())}

    def draw(data: dict, sampler: str, steps: int) -> Callable[[], object]:
        x = data["x0"]
        ctx = {"cond": data["cond"]} if data["cond"] is not None else {}
        return lambda: sample(
            den,
            x.shape,
            sampler=sampler,
            steps=steps,
            eta=0.0 if sampler == "ddim" else 1.0,
            generator=torch.Generator(device=device).manual_seed(0),
            known=data["known"],
            mask=data["mask"],
            dtype=x.dtype,
            device=device,
            **ctx,
        )

    # ---------------------------------------------------------------- sampling (no grad; first)
    net.eval()
    mem.start_phase()
    draw(sample_data, "ddim", 2)()  # warm-up (allocator, cuDNN heuristics)
    for steps in DDIM_STEPS:
        res[f"ddim{steps}"] = args.sample_batch / _timed(draw(sample_data, "ddim", steps), device)
    if args.ddpm_batch > 0 and (args.full or key == args.smallest):
        res[f"ddpm{DDPM_STEPS}"] = args.ddpm_batch / _timed(draw(ddpm_data, "ddpm", DDPM_STEPS), device)
    if key == TARGET_SIZE or args.latency_all:
        draw(one_data, "ddim", 2)()
        res["latency"] = _timed(draw(one_data, "ddim", TARGET_STEPS), device)
    res["sample_peak_mib"] = mem.peak_mib()

    # ---------------------------------------------------------------- training
    net.train()
    mem.start_phase()
    ctx = {"cond": train_data["cond"]} if train_data["cond"] is not None else {}
    g = torch.Generator(device=device).manual_seed(0)

    def train_step() -> None:
        out = diffusion_loss(
            den,
            train_data["x0"],
            objective=args.objective,
            known=train_data["known"],
            mask=train_data["mask"],
            generator=g,
            **ctx,
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    for _ in range(args.warmup):
        train_step()
    res["train_steps_s"] = args.iters / _timed(lambda: [train_step() for _ in range(args.iters)], device)
    res["train_peak_mib"] = mem.peak_mib()
    return res


def bench_isolated(key: str, args: argparse.Namespace) -> dict:
    """:func:`bench` in a fresh spawned process (clean peak-RSS baseline)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(bench, key, args).result()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=DEFAULT_SIZES)
    p.add_argument("--batch", type=int, default=8, help="training batch")
    p.add_argument("--sample-batch", type=int, default=4, help="samples drawn at once (DDIM)")
    p.add_argument("--ddpm-batch", type=int, default=1, help=f"samples drawn at once (DDPM-{DDPM_STEPS}; 0 skips it)")
    p.add_argument("--iters", type=int, default=5, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--channel-mults", type=int, nargs="+", default=[1, 2, 2])
    p.add_argument("--num-res-blocks", type=int, default=1)
    p.add_argument("--schedule", default="linear")
    p.add_argument("--prediction", default="x0", choices=["eps", "x0", "v"])
    p.add_argument("--objective", default="x0", choices=["eps", "x0", "v"])
    p.add_argument("--full", action="store_true", help=f"DDPM-{DDPM_STEPS} for every size (slow on a CPU)")
    p.add_argument("--latency-all", action="store_true", help="batch-1 latency at 50 steps for every size")
    p.add_argument(
        "--no-isolate", action="store_true", help="CPU: run all sizes in this process (peak RSS then only grows)"
    )
    args = p.parse_args(argv)
    args.smallest = min(args.sizes, key=lambda k: SIZES[k].channels * math.prod(SIZES[k].shape))
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}, "
        f"U-Net base {args.base_channels} mults {tuple(args.channel_mults)} res blocks {args.num_res_blocks}, "
        f"train batch {args.batch} ({args.objective} objective, {args.prediction} prediction, AdamW), "
        f"sample batch {args.sample_batch} (DDIM η = 0), {args.ddpm_batch} (DDPM-{DDPM_STEPS})"
    )
    mem_how = (
        "CUDA max_memory_allocated above the phase start"
        if device.type == "cuda"
        else "growth of ru_maxrss (peak RSS) above the process baseline, fresh process per size"
    )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"peak memory: {mem_how}" + (f"; load average {load[0]:.2f}" if load else "") + "\n")
    isolate = device.type == "cpu" and not args.no_isolate
    results = [(bench_isolated if isolate else bench)(key, args) for key in args.sizes]

    cols = [f"DDIM-{n} samples/s" for n in DDIM_STEPS] + [f"DDPM-{DDPM_STEPS} samples/s"]
    print("| field | shape | params | train steps/s | " + " | ".join(cols) + " | peak MiB sample / train |")
    print("|---" * (5 + len(cols)) + "|")
    for r in results:
        s = SIZES[r["key"]]
        shape = f"[B, {s.channels}, {', '.join(map(str, s.shape))}]" + (" + cond" if s.cond_channels else "")
        ddpm = r.get(f"ddpm{DDPM_STEPS}")
        vals = [f"{r[f'ddim{n}']:.2f}" for n in DDIM_STEPS] + [
            f"{ddpm:.3f}"
            if ddpm is not None
            else ("skipped (--ddpm-batch 0)" if args.ddpm_batch <= 0 else "skipped (use --full)")
        ]
        print(
            f"| {r['label']} | {shape} | {r['params']:,} | {r['train_steps_s']:.2f} | "
            + " | ".join(vals)
            + f" | {r['sample_peak_mib']:.0f} / {r['train_peak_mib']:.0f} |"
        )
    for r in results:
        if r["key"] == TARGET_SIZE:
            thr = 1.0 / r[f"ddim{TARGET_STEPS}"]
            lat = r.get("latency")
            verdict = "meets" if lat is not None and lat < TARGET_SECONDS else "misses"
            print(
                f"\n64×64 sample at {TARGET_STEPS} steps (DDIM): {thr:.2f} s/sample at batch {args.sample_batch}, "
                f"{lat:.2f} s latency at batch 1 on {device.type} — {verdict} the < {TARGET_SECONDS:g} s target"
                + (" (the target is for one GPU)" if device.type == "cpu" else "")
            )
    if load:
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
