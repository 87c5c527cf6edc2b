"""Throughput of the particle simulators at paper-scale settings (trajectories per second).

    python benchmarks/bench_particle_simulators.py                       # both systems, defaults
    python benchmarks/bench_particle_simulators.py --system five-spring --n-spring 10000

Five-spring: 10,000 trajectories × 49 frames (leapfrog Δt = 1e-3, 4,800 steps); target < 30 s on 2 cores.
Three-body: a few thousand accepted trajectories × 30 frames (Yoshida-4, rejection sampling).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from physdiff.systems.registry import PARTICLE_SYSTEMS, get_system


def bench(name: str, n: int, seed: int, progress: bool) -> dict[str, float]:
    """Simulate ``n`` trajectories of system ``name`` and return timing figures."""
    system = get_system(name)
    start = time.perf_counter()
    data = system.simulate(n, seed, progress=progress)
    seconds = time.perf_counter() - start
    m = data["masses"][:, None]
    edges = data["edges"][:, None] if "edges" in data else None
    E = np.asarray(system.total_energy(data["positions"], data["velocities"], m, edges))
    drift = float((np.abs(E - E[:, :1]) / np.abs(E[:, :1])).max())
    return {
        "n": n,
        "frames": data["positions"].shape[1],
        "seconds": seconds,
        "per_second": n / seconds,
        "max_rel_energy_drift": drift,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=(*PARTICLE_SYSTEMS, "all"), default="all")
    parser.add_argument("--n-spring", type=int, default=10_000, help="five-spring trajectories")
    parser.add_argument("--n-three-body", type=int, default=2_000, help="three-body trajectories")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    sizes = {"five-spring": args.n_spring, "three-body": args.n_three_body}
    names = PARTICLE_SYSTEMS if args.system == "all" else (args.system,)
    for name in names:
        r = bench(name, sizes[name], args.seed, args.progress)
        print(
            f"{name:12s} n={r['n']:6d} L={r['frames']:3d}  {r['seconds']:7.2f} s  "
            f"{r['per_second']:9.1f} traj/s  max |ΔE|/|E0| = {r['max_rel_energy_drift']:.2e}"
        )


if __name__ == "__main__":
    main()
