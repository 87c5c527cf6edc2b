"""Cost of each physical prior per training step, relative to the plain denoising objective.

Not a test. Examples:

    python benchmarks/bench_prior_overhead.py --device cpu --threads 1
    python benchmarks/bench_prior_overhead.py --device cuda --batch 32 --rounds 20

Setting: the quick preset of ``physdiff reproduce`` (SpaceTimeEGNN hidden 48, 2 layers, 6 vector channels,
4 heads; ε objective; three-body 20 frames, five-spring 25 frames) on a small simulated data set, with
the priors built as the experiments build them (``make_prior`` in the model's scaled coordinates, the
experiments' λ and w(t): energy λ = 0.01 with the ``low_noise`` weight, the linear/multilinear priors
λ = 1 with w = α_t²).

A training step is what ``physdiff.training.trainer.train`` does per step, without EMA and logging:
``diffusion_loss`` forward (+ ``total_prior_loss`` on the same x̂0), backward, gradient clipping and an
AdamW step. For each prior, blocks of ``--block`` steps are timed alternately without and with the prior
(plain, prior, prior, plain, ... : the order within a pair alternates; each arm trains its own copy of
the same initial network, cycling through the same fixed batches and seeded diffusion times and noise),
so that drift of a shared machine hits both arms alike. An A/A row (plain against a second plain arm;
``--no-aa`` drops it) shows what a prior that costs nothing measures as, i.e. the noise floor of the
overhead column. Reported:

* median ms/step of the plain and of the with-prior blocks;
* overhead = median over rounds of (with-prior block / the plain block paired with it − 1), with the
  inter-quartile range of those paired ratios as a noise indicator;
* the prior term alone: ``total_prior_loss`` forward + backward to x̂0 (a leaf tensor holding a real
  Tweedie estimate of the network), which is what the prior adds before the shared network backward;
* the issue's targets: ≤ 15 % for the (reduced) energy prior, ≤ 5 % for momentum.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from physdiff.config import apply_overrides
from physdiff.data.particles_h5 import ParticleData
from physdiff.diffusion import Denoiser, diffusion_loss
from physdiff.experiments.config import PriorConfig, preset_config
from physdiff.experiments.particle_task import ParticleTask
from physdiff.priors import Prior, total_prior_loss
from physdiff.systems.registry import get_system


@dataclass(frozen=True)
class PriorSpec:
    name: str  # a built-in particle prior name
    weight: float
    time_weight: str  # experiments.task.time_weight_fn name
    target_pct: float | None  # the target overhead, if any


SYSTEMS: dict[str, tuple[int, list[PriorSpec]]] = {
    # system: (frames, priors); frames as in the quick preset
    "three-body": (
        20,
        [
            PriorSpec("energy", 0.01, "low_noise", 15.0),
            PriorSpec("momentum", 1.0, "alpha2", 5.0),
            PriorSpec("angular-momentum", 1.0, "alpha2", None),
        ],
    ),
    "five-spring": (
        25,
        [
            PriorSpec("momentum", 1.0, "alpha2", 5.0),
            PriorSpec("energy", 0.01, "low_noise", 15.0),
            PriorSpec("newton", 1.0, "alpha2", None),
        ],
    ),
}
AA = "none (A/A)"
CONTEXT_KEYS = ("masses", "edges")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(kind: str) -> Callable[[], float]:
    return time.perf_counter if kind == "wall" else time.process_time


def simulate(system_name: str, n: int, frames: int, seed: int) -> ParticleData:
    system = get_system(system_name, n_frames=frames)
    arrays = system.simulate(n, seed)
    return ParticleData(
        positions=arrays["positions"],
        velocities=arrays["velocities"],
        masses=arrays["masses"],
        edges=arrays.get("edges"),
        system=system_name,
        constants=dict(system.constants),
    )


class Arm:
    """One training configuration (a network copy, its optimiser and priors) stepping over fixed batches."""

    def __init__(self, den: Denoiser, priors: list[Prior], batches: list[dict], args: argparse.Namespace) -> None:
        self.den = copy.deepcopy(den)
        self.priors = priors
        self.batches = batches
        self.args = args
        self.opt = torch.optim.AdamW(self.den.net.parameters(), lr=1e-3)
        self.i = 0

    def step(self) -> None:
        b = self.batches[self.i % len(self.batches)]
        g = torch.Generator(device=b["x0"].device).manual_seed(self.i)  # same t and ε in every arm
        self.i += 1
        ctx = {k: b[k] for k in CONTEXT_KEYS if k in b}
        out = diffusion_loss(self.den, b["x0"], objective=self.args.objective, mask=b["mask"], generator=g, **ctx)
        loss = out.loss
        if self.priors:
            extra, _ = total_prior_loss(self.priors, out, ctx)
            loss = loss + extra
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.den.net.parameters(), 1.0)
        self.opt.step()


def time_block(fn: Callable[[], None], n: int, device: torch.device, clock: Callable[[], float]) -> float:
    """Milliseconds per call of ``fn`` over ``n`` calls."""
    _sync(device)
    start = clock()
    for _ in range(n):
        fn()
    _sync(device)
    return 1e3 * (clock() - start) / n


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def bench_system(system_name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    frames, specs = SYSTEMS[system_name]
    if args.priors:
        specs = [s for s in specs if s.name in args.priors]
    t0 = time.perf_counter()
    data = simulate(system_name, args.n, frames, seed=0)
    sim_s = time.perf_counter() - t0
    dim = data.positions.shape[-1]
    # the quick preset's network, ε prediction as in this benchmark's original setting
    task = ParticleTask(apply_overrides(preset_config(system_name), ["diffusion.prediction=eps", "priors=[]"]))
    scaling = task.fit_scaling(data)
    tensors = task.to_tensors(data, scaling, "prediction")
    torch.manual_seed(0)
    den = task.build_denoiser(scaling, tensors).to(device)
    n_params = sum(p.numel() for p in den.net.parameters())
    print(
        f"\n### {system_name}: {args.n} trajectories × {frames} frames × {data.positions.shape[2]} particles "
        f"(D = {dim}, simulated in {sim_s:.1f} s), EGNN {n_params:,} parameters, batch {args.batch}"
    )

    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(args.n_batches):
        idx = torch.randperm(tensors["x0"].shape[0], generator=g)[: args.batch]
        batches.append({k: v[idx].to(device) for k, v in tensors.items()})

    priors: dict[str, Prior] = {}
    for s in specs:  # built and checked on the ground truth as the experiments build them
        spec = PriorConfig(s.name, s.weight, s.time_weight)
        try:
            (priors[s.name],) = task.build_priors([spec], data, scaling)
        except ValueError as err:  # the sanity check (sign/scale bugs); timing does not depend on it
            print(f"note: {err}")
            priors[s.name] = task.make_prior(spec, data, scaling, tensors)

    clock = _clock(args.clock)
    plain = Arm(den, [], batches, args)
    arms = {name: Arm(den, [prior], batches, args) for name, prior in priors.items()}
    if args.aa:  # a second plain arm: what a prior that costs nothing measures as (the noise floor)
        arms[AA] = Arm(den, [], batches, args)

    # the prior term alone: penalty forward + backward to x̂0 (a leaf holding a real Tweedie estimate)
    b0 = batches[0]
    ctx0 = {k: b0[k] for k in CONTEXT_KEYS if k in b0}
    with torch.no_grad():
        g0 = torch.Generator(device=device).manual_seed(2)
        ref = diffusion_loss(den, b0["x0"], objective=args.objective, mask=b0["mask"], generator=g0, **ctx0)
    x0_hat = ref.pred.x0.detach().clone().requires_grad_(True)
    fake = SimpleNamespace(pred=SimpleNamespace(x0=x0_hat), x0=ref.x0, t=ref.t)

    def term_only(prior: Prior) -> Callable[[], None]:
        def fn() -> None:
            x0_hat.grad = None
            total, _ = total_prior_loss([prior], fake, ctx0)
            total.backward()

        return fn

    for arm in [plain, *arms.values()]:
        for _ in range(args.warmup):
            arm.step()
    for prior in priors.values():
        for _ in range(args.warmup):
            term_only(prior)()

    plain_ms: dict[str, list[float]] = {name: [] for name in arms}
    prior_ms: dict[str, list[float]] = {name: [] for name in arms}
    term_ms: dict[str, list[float]] = {name: [] for name in priors}
    for r in range(args.rounds):
        for name, arm in arms.items():
            # ABBA: alternate which of the pair runs first, so that order effects cancel
            if r % 2 == 0:
                plain_ms[name].append(time_block(plain.step, args.block, device, clock))
                prior_ms[name].append(time_block(arm.step, args.block, device, clock))
            else:
                prior_ms[name].append(time_block(arm.step, args.block, device, clock))
                plain_ms[name].append(time_block(plain.step, args.block, device, clock))
            if name in priors:
                term_ms[name].append(time_block(term_only(priors[name]), 4 * args.block, device, clock))

    rows = []
    by_name = {s.name: s for s in specs}
    for name in arms:
        ratios = [100.0 * (w / p - 1.0) for w, p in zip(prior_ms[name], plain_ms[name], strict=True)]
        q1, med, q3 = quartiles(ratios)
        plain_med = statistics.median(plain_ms[name])
        term_med = statistics.median(term_ms[name]) if name in priors else None
        spec = by_name.get(name)
        rows.append(
            dict(
                system=system_name,
                label=(
                    f"{name} ({type(priors[name]).__name__}, {priors[name].case}, {spec.time_weight})"
                    if spec
                    else f"{name}: plain vs a second plain arm"
                ),
                plain_ms=plain_med,
                prior_ms=statistics.median(prior_ms[name]),
                overhead=med,
                iqr=(q1, q3),
                term_ms=term_med,
                term_pct=None if term_med is None else 100.0 * term_med / plain_med,
                target=spec.target_pct if spec else None,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    p.add_argument("--priors", nargs="+", default=None, help="only these prior names (default: all listed)")
    p.add_argument("--n", type=int, default=64, help="simulated trajectories per system")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n-batches", type=int, default=8, help="distinct batches cycled through")
    p.add_argument("--objective", default="eps", choices=["eps", "x0", "v"], help="quick preset: eps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per arm")
    p.add_argument("--rounds", type=int, default=7, help="plain/prior block pairs per prior")
    p.add_argument("--block", type=int, default=3, help="training steps per timed block")
    p.add_argument("--no-aa", dest="aa", action="store_false", help="skip the A/A (plain vs plain) noise row")
    p.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="wall: perf_counter; process: CPU time of this process (less sensitive to other jobs on a CPU)",
    )
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "process" and device.type == "cuda":
        p.error("--clock process measures CPU time only; use --clock wall on CUDA")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}, "
        f"clock {args.clock}, {args.rounds} rounds × {args.block} steps per block, warm-up {args.warmup}"
        + (f", load average {load[0]:.2f}" if load else "")
    )
    rows = [r for system in args.systems for r in bench_system(system, args, device)]

    print(
        "\n| system | prior (class, case, w(t)) | plain ms/step | with prior ms/step | overhead % (IQR) "
        "| prior term alone ms (% of plain step) | target | meets |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        target = f"≤ {r['target']:g} %" if r["target"] is not None else "—"
        meets = "—" if r["target"] is None else ("yes" if r["overhead"] <= r["target"] else "no")
        print(
            f"| {r['system']} | {r['label']} | {r['plain_ms']:.1f} | "
            f"{r['prior_ms']:.1f} | {r['overhead']:+.1f} ({r['iqr'][0]:+.1f} … {r['iqr'][1]:+.1f}) | "
            + (f"{r['term_ms']:.2f} ({r['term_pct']:.1f} %)" if r["term_ms"] is not None else "—")
            + f" | {target} | {meets} |"
        )
    if load:
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
