"""Throughput of the PDE data generators (samples per second) at the quick and a larger size.

Usage::

    python benchmarks/bench_pde_solvers.py [--systems advection burgers darcy shallow-water]
                                           [--n-quick 64] [--n-large 8] [--skip-large]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from physdiff.systems.pde_registry import PDE_SYSTEMS, get_pde_system


def bench(name: str, n: int, settings: dict[str, Any], seed: int = 0) -> tuple[float, float]:
    """Return (seconds, samples/s) of one ``simulate`` call."""
    system = get_pde_system(name)
    t0 = time.perf_counter()
    system.simulate(n, seed, **settings)
    dt = time.perf_counter() - t0
    return dt, n / dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=list(PDE_SYSTEMS), choices=list(PDE_SYSTEMS))
    parser.add_argument("--n-quick", type=int, default=64, help="samples per call at the quick size")
    parser.add_argument("--n-large", type=int, default=8, help="samples per call at the large size")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    print(f"{'system':<14} {'size':<6} {'n':>5} {'seconds':>9} {'samples/s':>11}  settings")
    for name in args.systems:
        system = get_pde_system(name)
        sizes = [("quick", args.n_quick, {})]
        if not args.skip_large:
            sizes.append(("large", args.n_large, dict(system.large)))
        for label, n, settings in sizes:
            bench(name, min(n, 2), settings)  # warm-up
            secs, rate = bench(name, n, settings)
            shown = {k: v for k, v in (settings or system.defaults).items() if k in ("nx", "ny", "nt", "n_grid")}
            print(f"{name:<14} {label:<6} {n:>5} {secs:>9.3f} {rate:>11.1f}  {shown}")


if __name__ == "__main__":
    main()
