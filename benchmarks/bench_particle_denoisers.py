"""Throughput and memory of the particle denoisers (SpaceTimeEGNN, ParticleTransformer).

Prints, per model and size: parameter count, training steps/s (forward + backward + AdamW step on an
MSE loss), forward throughput (trajectories/s, no grad) and peak memory (CUDA: max_memory_allocated;
CPU: peak resident set size above the baseline after building the model and batch, sampled from /proc,
else ru_maxrss; each CPU configuration runs in a fresh process so that earlier runs do not hide it).
Peak memory covers the training steps (activations, gradients, optimiser state), not the weights.

    python benchmarks/bench_particle_denoisers.py --device cpu --sizes quick
    python benchmarks/bench_particle_denoisers.py --device cuda --sizes quick paper
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from physdiff.models.egnn import SpaceTimeEGNN
from physdiff.models.transformer import ParticleTransformer


@dataclass(frozen=True)
class Size:
    batch: int
    frames: int
    particles: int
    dim: int
    hidden: int
    layers: int


SIZES = {
    "quick": Size(batch=64, frames=30, particles=3, dim=3, hidden=64, layers=4),
    "paper": Size(batch=64, frames=49, particles=5, dim=3, hidden=128, layers=6),
}
MODELS: dict[str, Callable[[Size], torch.nn.Module]] = {
    "egnn": lambda s: SpaceTimeEGNN(s.dim, hidden=s.hidden, layers=s.layers),
    "transformer": lambda s: ParticleTransformer(s.dim, hidden=s.hidden, layers=s.layers),
}


class PeakRSS:
    """Peak resident memory (bytes) of this process while the context is open, above its start."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._proc = os.path.exists("/proc/self/statm")

    def rss(self) -> int:
        if self._proc:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss() - self.base)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.base = self.rss()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_batch(s: Size, device: torch.device, dtype: torch.dtype, edges: bool) -> dict:
    x = torch.randn(s.batch, s.frames, s.particles, 2 * s.dim, device=device, dtype=dtype)
    mask = torch.zeros_like(x)
    mask[:, 0] = 1.0
    e = torch.triu((torch.rand(s.batch, s.particles, s.particles, device=device) < 0.5).to(dtype), 1)
    return dict(
        x_t=x,
        noise=torch.randn(s.batch, device=device, dtype=dtype),  # the noise level log(σ/α)
        known=torch.randn_like(x) * mask,
        mask=mask,
        edges=e + e.transpose(1, 2) if edges else None,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], iters: int, warmup: int, device: torch.device) -> float:
    """Seconds per call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def bench(name: str, size: str, args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype, s = torch.device(args.device), getattr(torch, args.dtype), SIZES[size]
    torch.manual_seed(0)
    model = MODELS[name](s).to(device=device, dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = make_batch(s, device, dtype, edges=args.edges)
    target = torch.randn_like(batch["x_t"])

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = (model(**batch) - target).square().mean()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def forward() -> None:
        model(**batch)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        t_train = timed(train_step, args.iters, args.warmup, device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        with PeakRSS() as mem:
            t_train = timed(train_step, args.iters, args.warmup, device)
        peak = mem.peak
    t_fwd = timed(forward, args.iters, args.warmup, device)
    return dict(
        model=name,
        size=size,
        params=sum(p.numel() for p in model.parameters()),
        train_steps_s=1.0 / t_train,
        fwd_traj_s=s.batch / t_fwd,
        peak_mib=peak / 2**20,
    )


def bench_isolated(name: str, size: str, args: argparse.Namespace) -> dict:
    """Run :func:`bench` in a fresh spawned process (clean RSS baseline)."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(bench, (name, size, args))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    p.add_argument("--sizes", nargs="+", default=["quick", "paper"], choices=list(SIZES))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--edges", action="store_true", help="pass a random spring graph (five-spring setting)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--no-isolate", action="store_true", help="CPU: run all configurations in this process")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} torch={torch.__version__}")
    header = f"{'model':<12}{'size':<7}{'params':>10}{'train steps/s':>15}{'fwd traj/s':>12}{'peak MiB':>10}"
    print(header)
    for size in args.sizes:
        s = SIZES[size]
        print(f"# {size}: B={s.batch} L={s.frames} K={s.particles} D={s.dim} H={s.hidden} layers={s.layers}")
        for name in args.models:
            isolate = torch.device(args.device).type == "cpu" and not args.no_isolate
            r = (bench_isolated if isolate else bench)(name, size, args)
            print(
                f"{r['model']:<12}{r['size']:<7}{r['params']:>10,}{r['train_steps_s']:>15.2f}"
                f"{r['fwd_traj_s']:>12.0f}{r['peak_mib']:>10.1f}"
            )


if __name__ == "__main__":
    main()
