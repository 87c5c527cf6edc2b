"""Sampling-time projections onto PDE residuals: time and memory of the dense, sparse and matrix-free paths.

Not a test. Example (the table of docs/benchmarks.md):

    OMP_NUM_THREADS=1 python benchmarks/bench_projection.py --grids 64 128 256

Cases, on n×n fields, batch ``--batch`` (default 1), float64, the state drawn at random (far from feasible):

* ``darcy``: Darcy's residual −div(a ∇u) − f (linear; a random piecewise-constant permeability of contrast 10,
  every u unknown, one projection step: exact on the dense and sparse paths);
* ``burgers``: Burgers' residual in space-time (T = X = n, multilinear: u_i (u_{i+1} − u_{i−1}) terms, the
  first frame known): a simulated trajectory (ν = 0.1, t ≤ 0.5) plus noise of 1 % of its standard deviation,
  ``--gn-iters`` Gauss–Newton steps.

Paths (:mod:`physdiff.priors.sampling`): ``dense`` (J formed, J M Jᵀ by Cholesky), ``sparse`` (J assembled by
colour probing and factorised by SuperLU; affine residuals only) and ``matrix-free`` (Jacobi-preconditioned
conjugate gradients with Jacobian-vector products, at most ``--cg-iters`` iterations per step, relative
tolerance 1e-8). Each (case, grid, path) runs in a fresh process whose address space is capped at its size
after set-up plus ``--mem-cap-gib`` (so a path that does not fit fails with an allocation error instead of
pushing a shared machine into swap). Reported per run: the first call (for ``sparse`` it includes the
assembly and the factorisation); for Darcy a second call on the same state (what every later sampler step
costs: the sparse factor, a linear residual's dense J and Cholesky factor and the Jacobi preconditioner are
cached; a multilinear residual's Jacobian changes with x, so a later call costs the first's); the peak
memory — the growth of the process's peak resident set size (``ru_maxrss``) over its resident size just
before the first call, which covers torch's CPU allocator and SuperLU's C allocations alike (tracemalloc
sees neither; psutil is not needed); on CUDA, torch's ``max_memory_allocated`` — and max |R| before and
after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

CASES = ("darcy", "burgers")
PATHS = ("dense", "sparse", "matrix-free")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def one(case: str, n: int, path: str, batch: int, cg_iters: int, gn_iters: int, cap_gib: float, device: str) -> dict:
    """One measurement in this process."""
    import numpy as np
    import torch

    from physdiff.priors.fields import make_field_prior
    from physdiff.priors.sampling import Projector
    from physdiff.systems.darcy import sample_permeability
    from physdiff.systems.pde_registry import get_pde_system, spacing_from_coords

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    if case == "darcy":
        prior = make_field_prior(
            "residual",
            "darcy",
            spacing={"dx": 1.0 / n, "dy": 1.0 / n},
            parameters={"f": 1.0},
            to_physical=lambda x: x[:, 0],
            coefficient_to_physical=lambda c: c[:, 0],
        )
        a = torch.from_numpy(sample_permeability(np.random.default_rng(0), batch, n))[:, None].to(dev)
        x = torch.randn(batch, 1, n, n, generator=g, dtype=torch.float64).to(dev)
        free = torch.ones_like(x)
        ctx = {"cond": a}
        iterations = 1
    else:
        system = get_pde_system("burgers")
        sim = system.simulate(batch, 0, nx=n, nt=n, t_final=0.5)
        prior = make_field_prior(
            "residual",
            system,
            spacing=spacing_from_coords(sim.coords),
            parameters=sim.parameters,
            to_physical=lambda x: x[:, 0],
        )
        u = torch.from_numpy(sim.fields)[:, None]
        x = u + 0.01 * float(u.std()) * torch.randn(u.shape, generator=g, dtype=torch.float64)
        free = torch.ones_like(x)
        free[:, :, 0] = 0.0
        x = torch.where(free.bool(), x, u).to(dev)
        free = free.to(dev)
        ctx = {}
        iterations = gn_iters

    def residual(s):
        return prior.residual(s, **ctx).flatten(1)

    r_in = float(residual(x).abs().max())
    n_res, n_state = residual(x).shape[1], x[0].numel()
    row = {"case": case, "grid": f"{n}²", "path": path, "batch": batch, "R_in": r_in}
    if path == "sparse" and case == "burgers":
        return {**row, "status": "n/a (multilinear: not affine)"}
    proj = Projector(residual, method=path, dense_max=0, sparse_max=1 << 40, cg_iters=cg_iters, rtol=1e-8)
    if path == "dense":
        need = batch * n_res * n_state * 8
        row["dense_J_GiB"] = need / 2**30
    # warm up torch.func (one-time imports) on a tiny state, then cap the address space
    Projector(lambda s: s.flatten(1)[:, :3] - 1.0, method="matrix-free")(torch.zeros(1, 4, dtype=torch.float64))
    if dev.type == "cpu":
        limit = _vm_bytes() + int(cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    else:
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev)
    rss0 = _rss_bytes()
    times = []
    y = x
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(2 if case == "darcy" else 1):  # a later call reuses what an affine R caches
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                y = proj(x, free, iterations, 0.0)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                times.append(time.perf_counter() - t0)
    except (MemoryError, RuntimeError) as err:
        msg = str(err).splitlines()[0][:160]
        return {**row, "status": f"fails: {type(err).__name__}: {msg}"}
    if dev.type == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    else:
        peak = torch.cuda.max_memory_allocated(dev) - base_cuda
    info = proj.info
    return {
        **row,
        "status": "ok",
        "first_s": times[0],
        "later_s": times[1] if len(times) > 1 else None,
        "peak_MiB": peak / 2**20,
        "R_out": float(residual(y).abs().max()),
        "cg_iterations": info.get("cg_iterations"),
        "factor_nnz": info.get("factor_nnz"),
    }


def _fmt(r: dict) -> str:
    grid = r["grid"]
    if r["status"] != "ok":
        return f"| {r['case']} | {grid} | {r['path']} | — | — | — | {r['R_in']:.1e} → — | {r['status']} |"
    note = []
    if r.get("cg_iterations") is not None:
        note.append(f"{r['cg_iterations']} CG iterations")
    if r.get("factor_nnz"):
        note.append(f"factor {r['factor_nnz'] / 1e6:.1f} M nonzeros")
    if r.get("dense_J_GiB") is not None:
        note.append(f"J {r['dense_J_GiB']:.2f} GiB")
    return (
        f"| {r['case']} | {grid} | {r['path']} | {r['first_s']:.2f} | "
        f"{'—' if r['later_s'] is None else format(r['later_s'], '.3f')} | {r['peak_MiB']:.0f} | "
        f"{r['R_in']:.1e} → {r['R_out']:.1e} | {', '.join(note)} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--cg-iters", type=int, default=500)
    ap.add_argument("--gn-iters", type=int, default=3, help="Gauss–Newton steps of the multilinear case")
    ap.add_argument("--mem-cap-gib", type=float, default=8.0, help="address-space cap above set-up, per run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        case, n, path = json.loads(args.one)
        out = one(case, n, path, args.batch, args.cg_iters, args.gn_iters, args.mem_cap_gib, args.device)
        print("RESULT " + json.dumps(out))
        return

    import torch

    print(
        f"torch {torch.__version__}, device {args.device}, threads {os.environ.get('OMP_NUM_THREADS', 'default')}, "
        f"batch {args.batch}, float64, matrix-free ≤ {args.cg_iters} CG iterations (rtol 1e-8), "
        f"burgers {args.gn_iters} Gauss–Newton steps, cap {args.mem_cap_gib:g} GiB per run"
    )
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    print("\n| case | grid | path | first call s | later call s | peak MiB | max abs R in → out | note |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        for n in args.grids:
            for path in args.paths:
                cmd = [sys.executable, __file__, "--one", json.dumps([case, n, path])]
                cmd += ["--batch", str(args.batch), "--cg-iters", str(args.cg_iters), "--gn-iters", str(args.gn_iters)]
                cmd += ["--mem-cap-gib", str(args.mem_cap_gib), "--device", args.device]
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                    if lines:
                        r = json.loads(lines[-1][len("RESULT ") :])
                    else:
                        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
                        r = {"case": case, "grid": f"{n}²", "path": path, "R_in": float("nan")}
                        r["status"] = f"fails: exit {proc.returncode}: {tail}"
                except subprocess.TimeoutExpired:
                    r = {"case": case, "grid": f"{n}²", "path": path, "R_in": float("nan")}
                    r["status"] = f"fails: over {args.timeout:.0f} s"
                print(_fmt(r), flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
