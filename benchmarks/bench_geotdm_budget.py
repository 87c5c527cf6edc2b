"""GeoTDM's own code beside ours at the same training budget (issue 21.4).

Not a test; minutes to hours on a CPU. Example (what docs/benchmarks.md reports):

    PYTHONPATH=src python benchmarks/bench_geotdm_budget.py --geotdm /path/to/GeoTDM --deps /path/to/geotdm-deps \\
        --steps 250 --seeds 0,1,2 --systems charged,spring --threads 1 --out geotdm_budget.json

``--geotdm PATH`` is a local checkout of github.com/hanjq17/GeoTDM (nothing of it is copied into physdiff: its
``models.EGTN`` and ``diffusion.GeoTDM`` are imported from PATH at run time). Its dependencies are
``torch_geometric`` and ``einops`` (``pip install --target DIR torch_geometric einops xxhash psutil --no-deps``;
``--deps DIR`` puts DIR on ``sys.path`` for this run only). ``torch_scatter`` has no wheel for every torch: when
it is absent, a shim module ``torch_scatter`` whose ``scatter`` is ``torch_geometric.utils.scatter`` (pure
torch, the same ``(src, index, dim, dim_size, reduce)`` call) is registered in ``sys.modules`` for the run.

Per system (``charged`` → the ``nbody-charged`` quick preset's data, ``spring`` → ``nbody-spring``'s) the
data are simulated by physdiff's own simulators (the preset's ``data`` settings; 5 particles in 3-D, 30
frames, the first 10 given) and split by the preset. Both models get the positions of the 10 given frames
and generate the 20 next; both are trained for ``--steps`` steps at the preset's batch size and learning
rate with gradient clipping at 1 (GeoTDM's loop: Adam, no warm-up, no EMA, ε-prediction, 1000-step linear
schedule; ours: the preset's loop, ``model.state: positions``), and scored on the same test cases with K
draws per case by :func:`physdiff.evaluation.geotdm.draw_metrics` (GeoTDM's ancestral sampler over its 1000
steps; ours the preset's sampler). The EGTN's width is chosen so that its parameter count is closest to our
network's (``--geotdm-hidden`` to fix it). Per system and metric the table gives mean ± std (ddof = 1) over
seeds of the per-seed means and the paired difference GeoTDM − physdiff with its 95 % Student-t interval.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physdiff.data.particles_h5 import ParticleData
from physdiff.evaluation.geotdm import GEOTDM_K, draw_metrics
from physdiff.evaluation.statistics import aggregate_seeds, format_number, paired_difference

#: ``--systems`` name → our preset (its data are GeoTDM's protocol's: 5 particles, 30 frames, 10 given)
SYSTEMS = {"charged": "nbody-charged", "spring": "nbody-spring"}
METRICS = ("min_ade", "min_fde", "ave_ade", "ave_fde")
MODELS = ("geotdm", "physdiff")
GEOTDM_FILES = ("models/EGTN.py", "models/layers.py", "diffusion/GeoTDM.py")
DEPS_HINT = "pip install --target DIR torch_geometric einops xxhash psutil --no-deps, then pass --deps DIR"


class SetupError(RuntimeError):
    """A GeoTDM checkout or dependency that is not there: the message is one line naming it."""


# --------------------------------------------------------------------------------------------- GeoTDM import
def check_geotdm_path(path: str | Path) -> Path:
    """``path`` as a GeoTDM checkout (it holds :data:`GEOTDM_FILES`), else :class:`SetupError`."""
    root = Path(path)
    if not root.is_dir():
        raise SetupError(f"--geotdm {path}: no such directory (a checkout of github.com/hanjq17/GeoTDM)")
    missing = [f for f in GEOTDM_FILES if not (root / f).is_file()]
    if missing:
        raise SetupError(
            f"--geotdm {path}: not a GeoTDM checkout (missing {', '.join(missing)}; clone github.com/hanjq17/GeoTDM)"
        )
    return root


def torch_scatter_shim() -> types.ModuleType:
    """A module ``torch_scatter`` whose ``scatter`` is ``torch_geometric.utils.scatter`` (pure torch)."""
    from torch_geometric.utils import scatter

    shim = types.ModuleType("torch_scatter")
    shim.scatter = scatter  # type: ignore[attr-defined]
    shim.__doc__ = "physdiff's stand-in for torch_scatter.scatter (torch_geometric.utils.scatter)"
    return shim


def import_geotdm(path: str | Path, deps: str | Path | None = None) -> tuple[type, Any]:
    """GeoTDM's ``EGTN`` class and its ``diffusion.GeoTDM`` module from the checkout ``path`` (``deps``: a folder
    put first on ``sys.path`` for its dependencies). :class:`SetupError` names what is missing."""
    root = check_geotdm_path(path)
    if deps is not None:
        if not Path(deps).is_dir():
            raise SetupError(f"--deps {deps}: no such directory")
        sys.path.insert(0, str(deps))
    missing = [m for m in ("torch_geometric", "einops") if importlib.util.find_spec(m) is None]
    if missing:
        raise SetupError(f"GeoTDM needs {' and '.join(missing)}, not importable: {DEPS_HINT}")
    sys.path.insert(0, str(root))
    try:
        if importlib.util.find_spec("torch_scatter") is None:
            sys.modules["torch_scatter"] = torch_scatter_shim()
        egtn = importlib.import_module("models.EGTN")
        diffusion = importlib.import_module("diffusion.GeoTDM")
    except ModuleNotFoundError as e:
        raise SetupError(f"GeoTDM at {root} imports {e.name!r}, which is missing: {DEPS_HINT}") from e
    return egtn.EGTN, diffusion


# --------------------------------------------------------------------------------------------- data layout
def to_geotdm_batch(
    positions: np.ndarray | torch.Tensor,
    system: str,
    charges: np.ndarray | torch.Tensor | None = None,
    edges: np.ndarray | torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Trajectories ``[B, L, P, D]`` as a mini-batch of GeoTDM's ``NBody`` dataset collated by torch_geometric.

    Per trajectory b, GeoTDM's ``NBody.__getitem__`` gives ``x`` ``[P, D, L]`` (``loc.permute(1, 2, 0)``),
    ``h`` ``[P, 1]`` (the charges; zeros for springs, as its SpringSim saves), the complete graph without
    self-loops in row-major order (i, j), i ≠ j, and ``edge_attr`` ``[P(P−1), 1]`` (charged: h_i h_j; spring:
    the spring adjacency at (i, j)); the collation concatenates the nodes, offsets ``edge_index`` by b·P and
    gives ``batch`` ``[B·P]``.

    Returns ``{"x": [B·P, D, L], "h": [B·P, 1], "edge_index": [2, B·P(P−1)], "edge_attr": [B·P(P−1), 1],
    "batch": [B·P]}`` (float32, int64).
    """
    x = torch.as_tensor(np.asarray(positions) if not torch.is_tensor(positions) else positions).float()
    if x.ndim != 4:
        raise ValueError(f"positions must be [B, L, P, D], got {list(x.shape)}")
    b, _, p, d = x.shape
    x = x.permute(0, 2, 3, 1).reshape(b * p, d, -1)
    i, j = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    keep = i != j
    row, col = i[keep], j[keep]  # row-major (0, 1), (0, 2), …, (1, 0), …
    offset = (torch.arange(b) * p).repeat_interleave(row.numel())
    edge_index = torch.stack([row.repeat(b) + offset, col.repeat(b) + offset])
    if system == "charged":
        if charges is None:
            raise ValueError("charged data need charges [B, P]")
        q = torch.as_tensor(np.asarray(charges)).float().reshape(b, p)
        h = q.reshape(b * p, 1)
        edge_attr = (q[:, row] * q[:, col]).reshape(-1, 1)
    elif system == "spring":
        if edges is None:
            raise ValueError("spring data need the spring adjacency edges [B, P, P]")
        a = torch.as_tensor(np.asarray(edges)).float().reshape(b, p, p)
        h = torch.zeros(b * p, 1)
        edge_attr = a[:, row, col].reshape(-1, 1)
    else:
        raise ValueError(f"system must be one of {sorted(SYSTEMS)}, got {system!r}")
    batch = torch.arange(b).repeat_interleave(p)
    return {"x": x, "h": h, "edge_index": edge_index, "edge_attr": edge_attr, "batch": batch}


def from_geotdm_positions(x: torch.Tensor, b: int) -> np.ndarray:
    """GeoTDM's node-major ``[B·P, D, L]`` back to ``[B, L, P, D]`` (float64)."""
    n, d, length = x.shape
    return x.detach().reshape(b, n // b, d, length).permute(0, 3, 1, 2).double().cpu().numpy()


def count_parameters(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


# --------------------------------------------------------------------------------------------- GeoTDM side
def geotdm_network(egtn: type, hidden: int, layers: int, future: int) -> torch.nn.Module:
    """GeoTDM's conditional EGTN as its ``configs/nbody_train_cond.yaml`` builds it, at width ``hidden`` and
    depth ``layers``."""
    return egtn(
        n_layers=layers,
        node_dim=1,
        edge_dim=1,
        hidden_dim=hidden,
        time_emb_dim=32,
        act_fn="silu",
        learn_ref_frame=True,
        n_layers_ref=2,
        num_w=future,
    )


def matching_hidden(egtn: type, target: int, layers: int, future: int) -> int:
    """The EGTN width (a multiple of 4, 8 … 256) whose parameter count is closest to ``target``."""
    return min(range(8, 257, 4), key=lambda h: abs(count_parameters(geotdm_network(egtn, h, layers, future)) - target))


def geotdm_kwargs(batch: dict[str, torch.Tensor], known: int) -> dict[str, torch.Tensor]:
    """GeoTDM's ``model_kwargs`` of a batch (``nbody_train.py``): graph, ``cond_mask`` over the first ``known``
    frames and ``x_given`` (the whole trajectory; the model reads only its masked frames)."""
    x = batch["x"]
    mask = torch.zeros(1, 1, x.shape[-1])
    mask[..., :known] = 1
    keys = ("h", "edge_index", "edge_attr", "batch")
    return {**{k: batch[k] for k in keys}, "cond_mask": mask, "x_given": x}


def run_geotdm(
    modules: tuple[type, Any],
    train: ParticleData,
    test: ParticleData,
    system: str,
    known: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    hidden: int,
    layers: int,
    timesteps: int,
    k: int,
    seed: int,
) -> dict[str, Any]:
    """Train GeoTDM (its ``nbody_train.py`` loop) for ``steps`` steps and draw ``k`` samples per test case."""
    egtn, diffusion = modules
    torch.manual_seed(seed)
    length = train.positions.shape[1]
    net = geotdm_network(egtn, hidden, layers, length - known)
    gd = diffusion.GeoTDM(
        denoise_network=net,
        beta_schedule_name="linear",
        num_timesteps=timesteps,
        model_mean_type=diffusion.ModelMeanType.EPSILON,
        model_var_type=diffusion.ModelVarType.FIXED_LARGE,
        loss_type=diffusion.LossType.MSE,
        device="cpu",
        rescale_timesteps=False,
    )
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    from torch_geometric.nn.pool import global_mean_pool

    rng = np.random.default_rng(seed)
    order: list[int] = []
    t0 = time.perf_counter()
    net.train()
    for _ in range(steps):  # shuffled epochs, the last batch of an epoch smaller (torch_geometric's DataLoader)
        if not order:
            order = rng.permutation(train.n).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        sub = train.subset(idx)
        batch = to_geotdm_batch(sub.positions, system, sub.charges, sub.edges)
        kw = geotdm_kwargs(batch, known)
        loss = gd.training_losses(x_start=batch["x"][..., known:], t=None, model_kwargs=kw)["loss"]
        loss = global_mean_pool(loss, batch["batch"]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    train_s = time.perf_counter() - t0
    net.eval()
    batch = to_geotdm_batch(test.positions, system, test.charges, test.edges)
    kw = geotdm_kwargs(batch, known)
    draws = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(k):
            out = gd.p_sample_loop(shape=batch["x"][..., known:].shape, model_kwargs=kw)
            full = torch.cat([batch["x"][..., :known], out], dim=-1)
            draws.append(from_geotdm_positions(full, test.n))
    metrics = draw_metrics(np.stack(draws), test.positions, known)
    sample_s = time.perf_counter() - t0
    return {"metrics": metrics, "params": count_parameters(net), "train_s": train_s, "sample_s": sample_s}


# --------------------------------------------------------------------------------------------- our side
def physdiff_setup(experiment: str, steps: int, n_test: int | None, cache: Path):
    """The quick preset of ``experiment`` at ``steps`` training steps, its data prepared (simulated into ``cache``)."""
    from physdiff.experiments.config import preset_config
    from physdiff.experiments.harness import configure, prepare

    overrides = [f"train.steps={steps}", f"train.checkpoint_every={steps}", "model.state=positions"]
    if n_test is not None:
        overrides.append(f"sample.n_test={n_test}")
    cfg = configure(preset_config(experiment, "quick"), overrides)
    return prepare(cfg, cache, split="test", progress=False)


def run_physdiff(prep, seed: int, k: int, run_dir: Path) -> dict[str, Any]:
    """Train our no-prior arm of ``prep`` with ``seed`` and score K draws per test case (GeoTDM's protocol)."""
    from physdiff.experiments.harness import train_arm
    from physdiff.experiments.particle_task import evaluate_geotdm

    t0 = time.perf_counter()
    den = train_arm(prep, "no_prior", seed, run_dir, progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = evaluate_geotdm(prep.task, den, prep, k=k, seed=seed)
    return {
        "metrics": {key: m[key] for key in METRICS},
        "params": count_parameters(den.net),
        "train_s": train_s,
        "sample_s": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------------------------- statistics
def summarize(per_seed: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per model and metric the mean ± std (ddof = 1) over seeds of the per-seed means
    (:func:`~physdiff.evaluation.statistics.aggregate_seeds`), and per metric the paired difference
    GeoTDM − physdiff over the seeds with its 95 % Student-t interval (``better_seeds``: seeds where GeoTDM is
    lower) and the ratio of the means GeoTDM / physdiff."""
    agg = {m: aggregate_seeds(per_seed[m]) for m in MODELS}
    seeds = sorted(per_seed["geotdm"])
    if sorted(per_seed["physdiff"]) != seeds:
        raise ValueError(f"paired comparison needs the same seeds: {seeds} vs {sorted(per_seed['physdiff'])}")
    paired = {}
    for key in METRICS:
        d = paired_difference(agg["geotdm"][key]["per_seed"], agg["physdiff"][key]["per_seed"])
        d["ratio"] = agg["geotdm"][key]["mean"] / agg["physdiff"][key]["mean"]
        paired[key] = d
    return {"seeds": seeds, "models": agg, "paired": paired}


def _mean_std(a: dict[str, Any]) -> str:
    return f"{format_number(a['mean'])} ± {format_number(a['std'], 2)}"


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One markdown table: per system, a row per model (mean ± std over seeds) and the paired difference row."""
    head = "| system | model | " + " | ".join(METRICS) + " |\n|---|---|" + "---|" * len(METRICS)
    lines = [head]
    for system, res in results.items():
        for model in MODELS:
            cells = [_mean_std(res["models"][model][k]) for k in METRICS]
            lines.append(f"| {system} | {model} | " + " | ".join(cells) + " |")
        cells = []
        for k in METRICS:
            p = res["paired"][k]
            ci = "—" if p["ci95"] is None else f"[{format_number(p['ci95'][0], 3)}, {format_number(p['ci95'][1], 3)}]"
            cells.append(f"{format_number(p['mean_diff'], 3, sign=True)} {ci} ×{p['ratio']:.2f}")
        lines.append(f"| {system} | GeoTDM − physdiff [95 % CI] ×ratio | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main
def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--geotdm", required=True, help="a local checkout of github.com/hanjq17/GeoTDM")
    ap.add_argument("--deps", default=None, help="a folder holding torch_geometric and einops (put on sys.path)")
    ap.add_argument("--steps", type=int, default=250, help="training steps of both models (quick preset: 250)")
    ap.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    ap.add_argument("--systems", default="charged,spring", help="comma list of: " + ", ".join(SYSTEMS))
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--k", type=int, default=GEOTDM_K, help="draws per test case (GeoTDM: 5)")
    ap.add_argument("--n-test", type=int, default=None, help="test cases (default: the preset's sample.n_test)")
    ap.add_argument("--geotdm-hidden", type=int, default=None, help="EGTN width (default: matched parameter count)")
    ap.add_argument("--geotdm-layers", type=int, default=None, help="EGTN layers (default: our model.layers)")
    ap.add_argument("--geotdm-timesteps", type=int, default=1000, help="GeoTDM's diffusion steps (its config: 1000)")
    ap.add_argument("--geotdm-lr", type=float, default=None, help="GeoTDM's Adam lr (default: our preset's train.lr)")
    ap.add_argument("--cache", default=None, help="folder for the simulated data and our runs (default: a temp dir)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems:
        ap.error(f"--systems: unknown {bad or systems}; choose from {', '.join(SYSTEMS)}")
    if args.steps < 1 or args.k < 2 or not args.seeds:
        ap.error("--steps must be >= 1, --k >= 2 and --seeds non-empty")
    try:
        modules = import_geotdm(args.geotdm, args.deps)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="geotdm_budget_"))
    results: dict[str, Any] = {}
    setup: dict[str, Any] = {}
    for system in systems:
        prep = physdiff_setup(SYSTEMS[system], args.steps, args.n_test, cache / "data")
        cfg = prep.cfg
        known, length = int(cfg.known_frames), prep.train.positions.shape[1]
        layers = args.geotdm_layers or int(cfg.model.layers)
        per_seed: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in MODELS}
        info: dict[str, Any] = {"experiment": SYSTEMS[system], "n_train": prep.train.n, "n_test": prep.evaluation.n}
        for seed in args.seeds:
            ours = run_physdiff(prep, seed, args.k, cache / "runs" / system / f"seed{seed}")
            hidden = args.geotdm_hidden or matching_hidden(modules[0], ours["params"], layers, length - known)
            theirs = run_geotdm(
                modules, prep.train, prep.evaluation, system, known, steps=args.steps,
                batch_size=int(cfg.train.batch_size), lr=args.geotdm_lr or float(cfg.train.lr), hidden=hidden,
                layers=layers, timesteps=args.geotdm_timesteps, k=args.k, seed=seed,
            )  # fmt: skip
            for name, r in (("physdiff", ours), ("geotdm", theirs)):
                per_seed[name][seed] = r["metrics"]
                means = {k: float(np.mean(r["metrics"][k])) for k in METRICS}
                info.setdefault("runs", []).append(
                    {"model": name, "seed": seed, "params": r["params"], "train_s": r["train_s"],
                     "sample_s": r["sample_s"], **means}
                )  # fmt: skip
                print(
                    f"{system} seed {seed} {name}: {r['params']} parameters, train {r['train_s']:.0f} s, "
                    f"sample {r['sample_s']:.0f} s, " + ", ".join(f"{k} {format_number(v)}" for k, v in means.items()),
                    flush=True,
                )
            info["geotdm_model"] = {"hidden": hidden, "layers": layers, "n_layers_ref": 2, "time_emb_dim": 32}
        info["budget"] = {
            "steps": args.steps, "batch_size": int(cfg.train.batch_size), "physdiff_lr": float(cfg.train.lr),
            "geotdm_lr": args.geotdm_lr or float(cfg.train.lr), "geotdm_timesteps": args.geotdm_timesteps,
            "physdiff_sampler": f"{cfg.sample.sampler} {cfg.sample.steps} steps", "k": args.k,
        }  # fmt: skip
        results[system] = summarize(per_seed)
        setup[system] = info
        if args.out:  # after every system, so that a long run keeps what it has finished
            out = {"command": " ".join(sys.argv), "threads": args.threads, "setup": setup, "results": results}
            Path(args.out).write_text(json.dumps(out, indent=2))
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
