"""Throughput of the particle simulators, end to end as ``physdiff simulate`` runs them, with a breakdown.

    python benchmarks/bench_particle_simulators.py                          # both systems, median of 3 runs
    python benchmarks/bench_particle_simulators.py --system five-spring --vs-nri /path/to/NRI/data/synthetic_sim.py
    python benchmarks/bench_particle_simulators.py --profile                # cProfile of one end-to-end run

End to end = :func:`physdiff.data.particles_h5.simulate_to_file` (what ``physdiff simulate SYSTEM --n N`` does
after its imports): integration, the floors (``conservation_errors``), the HDF5 write and the drift check.
The breakdown times each part again on its own: ``integrate`` (``system.simulate``), ``floors``
(``system.conservation_errors``), ``write`` (``write_particles(..., floor=False)``: validation + HDF5) and
``drift`` (the energy drift of the summary). Every figure is the median of ``--repeats`` runs, as wall time
(``time.perf_counter``) and as this process's CPU time (``time.process_time``, less exposed to other jobs on
a shared machine). Sizes: five-spring 10,000 × 49 frames (NRI's settings: leapfrog Δt = 1e-3, 100 steps a
frame), three-body 2,000 × 30 frames (Yoshida-4, 50 substeps, rejection sampling).

``--vs-nri PATH`` loads NRI's ``data/synthetic_sim.py`` from a file you provide (github ethanfetaya/NRI; it
is not part of physdiff) and times its ``SpringSim.sample_trajectory(T=5000, sample_freq=100)`` (49 frames,
one trajectory a call, as NRI's ``generate_dataset.py`` does) in the same run, for the ratio of throughputs.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from physdiff.data.particles_h5 import simulate_to_file, write_particles
from physdiff.systems.registry import SIMULATED_SYSTEMS, get_system

PARTS = ("end_to_end", "integrate", "floors", "write", "drift")


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall time and its CPU time (this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _drift(system: Any, data: dict[str, np.ndarray]) -> float:
    """The summary's maximum relative energy drift (as ``simulate_to_file`` computes it)."""
    drift_fn = getattr(system, "relative_energy_drift", None)
    if drift_fn is not None:  # five-spring's plane-by-plane energy, charged's own scale
        return float(np.max(drift_fn(data)))
    m, e = data["masses"][:, None], data["edges"][:, None] if "edges" in data else None
    q = {k: data[k][:, None] for k in system.per_trajectory}
    E = np.asarray(system.total_energy(data["positions"], data["velocities"], m, e, **q))
    return float((np.abs(E - E[:, :1]) / np.abs(E[:, :1])).max())


def _floors(system: Any, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    extra = {k: data[k] for k in system.per_trajectory}
    return system.conservation_errors(data["positions"], data["velocities"], data["masses"], data.get("edges"), **extra)


def bench(name: str, n: int, seed: int, repeats: int, folder: Path) -> dict[str, Any]:
    """Median wall / CPU seconds of each part over ``repeats`` runs (plus the summary of the last)."""
    system = get_system(name)
    path = folder / f"{name}.h5"
    attrs = {"system": name, **system.constants, "seed": seed}
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in PARTS}
    summary: dict[str, Any] = {}
    for _ in range(repeats):
        summary, w, c = timed(partial(simulate_to_file, name, path, n, seed))
        runs["end_to_end"].append((w, c))
        data, w, c = timed(partial(system.simulate, n, seed))
        runs["integrate"].append((w, c))
        for part, fn in (
            ("floors", partial(_floors, system, data)),
            ("write", partial(write_particles, folder / "part.h5", data, attrs, floor=False)),
            ("drift", partial(_drift, system, data)),
        ):
            _, w, c = timed(fn)
            runs[part].append((w, c))
    out: dict[str, Any] = {"system": name, "n": n, "frames": summary["shape"][1], "summary": summary}
    for k, values in runs.items():
        out[k] = (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
    return out


def _nri_trajectories(sim: Any, n: int) -> None:
    for _ in range(n):
        sim.sample_trajectory(T=5000, sample_freq=100)


def bench_nri(path: str, n: int, repeats: int) -> dict[str, float]:
    """NRI's SpringSim at its settings (T = 5000, sample_freq = 100): median trajectories/s, wall and CPU."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"--vs-nri {path}: no such file (NRI's data/synthetic_sim.py)")
    sys.path.insert(0, str(file.parent))
    spec = importlib.util.spec_from_file_location("nri_synthetic_sim", file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--vs-nri {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "SpringSim"):
        raise SystemExit(f"--vs-nri {path}: no SpringSim class in it (NRI's data/synthetic_sim.py)")
    sim = module.SpringSim(noise_var=0.0, n_balls=5)
    np.random.seed(42)  # noqa: NPY002 - NRI draws from numpy's global generator, as its generate_dataset.py
    walls, cpus = [], []
    for _ in range(repeats):
        _, w, c = timed(partial(_nri_trajectories, sim, n))
        walls.append(n / w)
        cpus.append(n / c)
    return {"n": n, "wall_per_s": statistics.median(walls), "cpu_per_s": statistics.median(cpus)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=(*SIMULATED_SYSTEMS, "all"), default="all")
    parser.add_argument("--n-spring", type=int, default=10_000, help="five-spring trajectories")
    parser.add_argument("--n-three-body", type=int, default=2_000, help="three-body trajectories")
    parser.add_argument("--n-charged", type=int, default=1_000, help="charged trajectories")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is printed)")
    parser.add_argument("--vs-nri", metavar="PATH", help="NRI's data/synthetic_sim.py, timed in the same run")
    parser.add_argument("--nri-n", type=int, default=20, help="NRI trajectories per timed run")
    parser.add_argument("--profile", action="store_true", help="cProfile one end-to-end run per system")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    sizes = {"five-spring": args.n_spring, "three-body": args.n_three_body, "charged": args.n_charged}
    names = ("five-spring", "three-body") if args.system == "all" else (args.system,)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"OMP_NUM_THREADS={threads}, load average {os.getloadavg()[0]:.2f} at the start, median of {args.repeats}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        get_system("five-spring").simulate(8, 0)  # warm-up: first-call costs (torch ops, BLAS) out of the figures
        if args.profile:
            for name in names:
                prof = cProfile.Profile()
                prof.runcall(simulate_to_file, name, Path(tmp) / "prof.h5", sizes[name], args.seed)
                print(f"\n### cProfile: simulate_to_file({name!r}, n={sizes[name]})")
                pstats.Stats(prof).sort_stats("cumulative").print_stats(20)
        print("\n| system | n × frames | part | wall s | CPU s |\n|---|---|---|---|---|")
        for name in names:
            r = bench(name, sizes[name], args.seed, args.repeats, Path(tmp))
            results[name] = r
            for part in PARTS:
                print(f"| {name} | {r['n']:,} × {r['frames']} | {part} | {r[part][0]:.2f} | {r[part][1]:.2f} |")
    print()
    for name, r in results.items():
        wall, cpu = r["end_to_end"]
        print(
            f"{name}: end to end {wall:.2f} s wall ({r['n'] / wall:,.0f} traj/s), {cpu:.2f} s CPU; "
            f"max relative energy drift {r['summary']['max_relative_energy_drift']:.2e}; "
            f"floor {', '.join(f'{k} {v:.2e}' for k, v in r['summary']['floor'].items())}"
        )
    if args.vs_nri:
        nri = bench_nri(args.vs_nri, args.nri_n, args.repeats)
        print(
            f"NRI SpringSim (T=5000, sample_freq=100, {nri['n']} trajectories a run): "
            f"{nri['wall_per_s']:.2f} traj/s wall, {nri['cpu_per_s']:.2f} traj/s CPU"
        )
        if "five-spring" in results:
            r = results["five-spring"]
            ours_wall, ours_cpu = r["n"] / r["end_to_end"][0], r["n"] / r["end_to_end"][1]
            print(
                f"five-spring end to end vs NRI SpringSim, same run: ×{ours_wall / nri['wall_per_s']:,.0f} (wall), "
                f"×{ours_cpu / nri['cpu_per_s']:,.0f} (CPU)"
            )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
