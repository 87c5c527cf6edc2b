"""Throughput and memory of the field U-Net (physdiff.models.unet.UNet).

Not a test. Example:

    python benchmarks/bench_unet.py --device cpu
    python benchmarks/bench_unet.py --device cuda --batch 64 --dtype bfloat16-autocast

For every configuration it prints the parameter count, forward throughput (samples/s, no grad),
training steps/s (forward + backward + Adam step on an MSE loss) and peak memory (CUDA: peak allocated
by torch; CPU: the process's peak resident set size so far, which only ever grows).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from contextlib import nullcontext

import torch

from physdiff.models.unet import UNet

CONFIGS = {
    # name: (spatial_dims, channels, cond_channels, spatial shape, periodic)
    "space-time 1D 32x64": (2, 1, 0, (32, 64), (False, True)),
    "2D 32x32": (2, 1, 1, (32, 32), (False, False)),
    "2D 64x64": (2, 1, 1, (64, 64), (False, False)),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Mean seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def bench(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    dims, channels, cond_channels, shape, periodic = CONFIGS[name]
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bfloat16-autocast" else nullcontext()
    torch.manual_seed(0)
    net = UNet(
        dims,
        channels,
        cond_channels=cond_channels,
        base_channels=args.base_channels,
        channel_mults=tuple(args.channel_mults),
        num_res_blocks=args.num_res_blocks,
        periodic=periodic,
        attention=args.attention,
    ).to(device=device, dtype=dtype)
    n_params = sum(p.numel() for p in net.parameters())

    b = args.batch
    x = torch.randn(b, channels, *shape, device=device, dtype=dtype)
    mask = torch.zeros_like(x)
    mask[:, :, 0] = 1.0  # e.g. the first frame is known
    known = x * mask
    t = torch.rand(b, device=device, dtype=dtype)
    cond = torch.randn(b, cond_channels, *shape, device=device, dtype=dtype) if cond_channels else None
    target = torch.randn_like(x)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    net.eval()

    def forward() -> None:
        with torch.no_grad(), autocast:
            net(x, t, known, mask, cond)

    fwd_s = _time(forward, device, args.warmup, args.iters)
    fwd_mem = _peak_memory_mib(device)

    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = (net(x, t, known, mask, cond).float() - target.float()).square().mean()
        loss.backward()
        opt.step()

    step_s = _time(train_step, device, args.warmup, args.iters)
    train_mem = _peak_memory_mib(device)
    return {
        "params": n_params,
        "fwd_samples_per_s": b / fwd_s,
        "train_steps_per_s": 1.0 / step_s,
        "fwd_peak_mib": fwd_mem,
        "train_peak_mib": train_mem,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "float64", "bfloat16-autocast"], default="float32")
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--channel-mults", type=int, nargs="+", default=[1, 2, 2])
    parser.add_argument("--num-res-blocks", type=int, default=1)
    parser.add_argument("--attention", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, device {device}, dtype {args.dtype}, batch {args.batch}, "
        f"base {args.base_channels}, mults {tuple(args.channel_mults)}, res blocks {args.num_res_blocks}, "
        f"attention {args.attention}, threads {torch.get_num_threads()}"
    )
    mem_label = "peak alloc MiB" if device.type == "cuda" else "max RSS MiB"
    header = f"{'config':<22}{'params':>10}{'fwd samples/s':>15}{'train steps/s':>15}{mem_label:>26}"
    print(header)
    print("-" * len(header))
    for name in args.configs:
        r = bench(name, args, device)
        mem = f"{r['fwd_peak_mib']:.0f} fwd / {r['train_peak_mib']:.0f} train"
        print(f"{name:<22}{r['params']:>10,}{r['fwd_samples_per_s']:>15.1f}{r['train_steps_per_s']:>15.2f}{mem:>26}")


if __name__ == "__main__":
    main()
