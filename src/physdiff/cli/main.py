"""The ``physdiff`` command line: simulate | train | sample | evaluate | reproduce | sweep | plot."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from physdiff.config import ConfigError
from physdiff.training.errors import CheckpointError

PARTICLE = ("three-body", "five-spring")
PDE = ("advection", "burgers", "darcy", "shallow-water")


def _cmd_simulate(a: argparse.Namespace) -> int:
    out = Path(a.out or f"data/{a.system.replace('-', '_')}.h5")
    if a.system in PARTICLE:
        from physdiff.data.particles_h5 import simulate_to_file

        settings = {"n_frames": a.frames} if a.frames else {}
        s = simulate_to_file(a.system, out, a.n, a.seed, progress=True, **settings)
        print(f"wrote {s['n']} {a.system} trajectories {tuple(s['shape'])} to {out} in {s['seconds']:.1f} s")
        print("ground-truth floor: " + ", ".join(f"{k} = {v:.3g}" for k, v in s["floor"].items()))
        print(f"max relative energy drift: {s['max_relative_energy_drift']:.2e}")
    elif a.system in PDE:
        from physdiff.data.pdebench import simulate_to_file as simulate_pde

        s = simulate_pde(a.system, out, a.n, a.seed)
        print(f"wrote {a.n} {a.system} samples to {out}")
        if isinstance(s, dict):
            print(json.dumps({k: v for k, v in s.items() if isinstance(v, (int, float, str))}, indent=1))
    else:
        raise SystemExit(f"unknown system {a.system!r}; valid: {', '.join(PARTICLE + PDE)}")
    return 0


def _experiment_cfg(a: argparse.Namespace):
    from physdiff.config import apply_overrides, load_yaml
    from physdiff.experiments.fields import FieldExperimentConfig
    from physdiff.experiments.particles import ParticleExperimentConfig
    from physdiff.experiments.reproduce import preset_config
    from physdiff.experiments.reproduce_fields import field_preset_config

    if a.experiment in PDE:
        cfg = load_yaml(FieldExperimentConfig, a.config) if a.config else field_preset_config(a.experiment, a.preset)
    else:
        cfg = load_yaml(ParticleExperimentConfig, a.config) if a.config else preset_config(a.experiment, a.preset)
    return apply_overrides(cfg, a.overrides)


def _cmd_train(a: argparse.Namespace) -> int:
    from physdiff.experiments.reproduce import load_experiment, train_arm
    from physdiff.experiments.reproduce_fields import load_field_experiment, train_field_arm
    from physdiff.training.distributed import cleanup, init_distributed, resolve_device

    cfg = _experiment_cfg(a)
    run = Path(a.run_dir)
    dev = resolve_device(a.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(dev)
    cache = Path(a.cache_dir or run / "data")
    try:
        if a.experiment in PDE:
            _, _, train_data, _, _, layout = load_field_experiment(cfg, cache, info.is_main)
            train_field_arm(cfg, a.arm, a.seed, run, train_data, layout, dev, a.resume, info.is_main, info)
        else:
            _, _, train_data, _, _, scaling = load_experiment(cfg, cache, info.is_main)
            train_arm(cfg, a.arm, a.seed, run, train_data, scaling, dev, a.resume, info.is_main, info)
    finally:
        cleanup(info)
    if info.is_main:
        print(f"checkpoint: {run / 'checkpoint.pt'}")
    return 0


def _cmd_sample(a: argparse.Namespace) -> int:
    import yaml

    from physdiff.config import apply_overrides, load_yaml
    from physdiff.experiments.fields import FieldExperimentConfig, build_field_denoiser, prepare_field_tensors
    from physdiff.experiments.particles import ParticleExperimentConfig, ParticleScaling, build_denoiser
    from physdiff.experiments.reproduce import load_experiment, sample_and_evaluate
    from physdiff.experiments.reproduce_fields import evaluate_field_arm, load_field_experiment
    from physdiff.training.distributed import resolve_device
    from physdiff.training.trainer import load_ema_weights

    run = Path(a.run_dir)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run / 'config.yaml'}: not a run folder of 'physdiff train' or 'reproduce'")
    is_field = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("experiment") in PDE
    cls = FieldExperimentConfig if is_field else ParticleExperimentConfig
    cfg = apply_overrides(load_yaml(cls, run / "config.yaml"), a.overrides)
    if a.sampler:
        cfg.sample.sampler = a.sampler
    if a.steps:
        cfg.sample.steps = a.steps
    dev = resolve_device(a.device)
    stored = json.loads((run / "scaling.json").read_text())
    cache = Path(a.cache_dir or run / "data")
    if is_field:
        _, _, _, test_data, test_idx, layout = load_field_experiment(cfg, cache, scaling=stored)
        example = prepare_field_tensors(test_data, layout, "generation")
        den = build_field_denoiser(cfg.model, cfg.diffusion, layout, example)
        load_ema_weights(den, run / "checkpoint.pt", device=dev)
        m, _ = evaluate_field_arm(den.to(dev).eval(), cfg, a.seed, run, test_data, test_idx, layout, dev)
        print(f"wrote {', '.join(str(run / f'samples_{t}.h5') for t in cfg.tasks)}")
    else:
        scaling = ParticleScaling(**stored)
        _, data, _, test_data, test_idx, _ = load_experiment(cfg, cache)
        den = build_denoiser(cfg.model, cfg.diffusion, data.positions.shape[-1])
        load_ema_weights(den, run / "checkpoint.pt", device=dev)
        den.to(dev).eval()
        _, _, m = sample_and_evaluate(den, cfg, a.seed, run, test_data, test_idx, scaling, dev, progress=True)
        print(f"wrote {run / 'samples.h5'}")
    for k, v in m.items():
        print(f"  {k}: {v.mean():.4g} ± {v.std():.2g}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from physdiff.evaluation.field_metrics import evaluate_field_files, is_field_file
    from physdiff.evaluation.particle_metrics import evaluate_files

    if is_field_file(a.reference):
        res = evaluate_field_files(a.samples, a.reference, system=a.system, task=a.task)
    else:
        res = evaluate_files(a.samples, a.reference, system=a.system)
    for k, v in res["metrics"].items():
        fl = res["floor"].get(k)
        print(f"{k:>15}: {v['mean']:.5g} ± {v['std']:.3g}" + (f"   (floor {fl:.3g})" if fl is not None else ""))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {a.json}")
    return 0


def _seeds(a: argparse.Namespace) -> list[int] | None:
    """``--seeds 0,1,2`` → ``[0, 1, 2]`` (``None``: the preset's)."""
    return [int(s) for s in a.seeds.split(",")] if a.seeds else None


def _arms(a: argparse.Namespace) -> list[str] | None:
    """``--arms no_prior,prior:energy`` → a list (``None``: all arms)."""
    return a.arms.split(",") if a.arms else None


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from physdiff.experiments.reproduce import reproduce_particles
    from physdiff.experiments.reproduce_fields import reproduce_fields

    exps = list(PARTICLE + PDE) if a.experiment == "all" else [a.experiment]
    for exp in exps:
        out = Path(a.out) / exp if a.out and len(exps) > 1 else Path(a.out or f"results/{exp}-{a.preset}")
        run = reproduce_fields if exp in PDE else reproduce_particles
        run(
            exp,
            a.preset,
            out,
            overrides=a.overrides,
            seeds=_seeds(a),
            arms=_arms(a),
            cache_dir=a.cache_dir,
            device=a.device,
            resume=a.resume,
            split=a.split,
        )
        print()
        print((out / "table.md").read_text())
        print(f"results folder: {out.resolve()}")
    return 0


def _cmd_sweep(a: argparse.Namespace) -> int:
    from physdiff.experiments.sweep import parse_grid, run_sweep

    out = Path(a.out or f"results/sweep-{a.experiment}-{a.preset}")
    run_sweep(
        a.experiment,
        parse_grid(a.grid),
        preset=a.preset,
        out=out,
        overrides=a.overrides,
        seeds=_seeds(a),
        arms=_arms(a),
        split=a.split,
        device=a.device,
        cache_dir=a.cache_dir,
        max_worse=a.max_worse,
    )
    print()
    print((out / "sweep.md").read_text())
    print(f"sweep folder: {out.resolve()}")
    return 0


def _cmd_plot(a: argparse.Namespace) -> int:
    from physdiff.data.particles_h5 import load_particles
    from physdiff.evaluation.plots import plot_particle_results

    res = Path(a.results)
    info = json.loads((res / "results.json").read_text())
    if info["experiment"] in PDE:
        import numpy as np

        from physdiff.data.pdebench import load_pde
        from physdiff.evaluation.field_plots import plot_field_results

        seed = info["seeds"][0]
        fields: dict[str, dict] = {}
        for arm in info["arms"]:
            for f in sorted((res / "arms" / arm.replace(":", "_") / f"seed{seed}").glob("samples_*.h5")):
                s = load_pde(f, info["experiment"])
                fields.setdefault(arm, {})[f.stem.removeprefix("samples_")] = s.fields
                idx = np.asarray(s.parameters["source_indices"], dtype=np.int64)
        # the reference as the run read it (down-sampling and sample cap from its saved config)
        from physdiff.config import load_yaml
        from physdiff.experiments.fields import FieldExperimentConfig

        dcfg = load_yaml(FieldExperimentConfig, res / "config.yaml").data
        full = load_pde(info["data"], info["experiment"], dcfg.downsample_x, dcfg.downsample_t, dcfg.max_samples)
        for p in plot_field_results(res / "plots", full.subset(idx), fields):
            print(f"wrote {p}")
        return 0
    ref = load_particles(info["data"])
    generated = {}
    for arm in info["arms"]:
        seed = info["seeds"][0]
        s = load_particles(res / "arms" / arm.replace(":", "_") / f"seed{seed}" / "samples.h5")
        generated[arm] = (s.positions, s.velocities)
    ref = ref.subset(s.source_indices)
    for p in plot_particle_results(res / "plots", ref, generated):
        print(f"wrote {p}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="physdiff",
        description="Generate physical dynamics with diffusion models under priors (ICLR 2025, arXiv 2409.00730).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="simulate a data set and write it as HDF5")
    s.add_argument("system", help=f"one of {', '.join(PARTICLE + PDE)}")
    s.add_argument("--n", type=int, default=1000, help="number of trajectories / samples")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--frames", type=int, default=None, help="frames per trajectory (particles)")
    s.add_argument("--out", default=None, help="output .h5 file")
    s.set_defaults(fn=_cmd_simulate)

    def add_common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
        q.add_argument("--cache-dir", default=None, help="where simulated data are cached")
        q.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. train.steps=2000)")

    t = sub.add_parser("train", help="train one arm of an experiment (runs under torchrun too)")
    t.add_argument("experiment", choices=PARTICLE + PDE)
    t.add_argument("--preset", default="quick", choices=("quick", "paper"))
    t.add_argument("--config", default=None, help="a config.yaml instead of the preset")
    t.add_argument("--arm", default="no_prior", help="no_prior or prior:<name> (PDE: prior:residual)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--run-dir", required=True)
    t.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint.pt")
    add_common(t)
    t.set_defaults(fn=_cmd_train)

    sm = sub.add_parser("sample", help="sample the test split from a trained run and evaluate it")
    sm.add_argument("run_dir")
    sm.add_argument("--sampler", choices=("ddpm", "ddim", "heun"), default=None)
    sm.add_argument("--steps", type=int, default=None)
    sm.add_argument("--seed", type=int, default=0)
    add_common(sm)
    sm.set_defaults(fn=_cmd_sample)

    e = sub.add_parser("evaluate", help="metrics of a samples file against reference data")
    e.add_argument("samples")
    e.add_argument("--reference", required=True)
    e.add_argument("--system", default=None, help="system name for files without a 'system' attribute")
    e.add_argument("--json", default=None, help="write the metrics to this JSON file")
    e.add_argument(
        "--task",
        default=None,
        choices=("prediction", "generation"),
        help="PDE samples: prediction (rmse vs the reference too) or generation; default: the file's 'task' attribute",
    )
    e.set_defaults(fn=_cmd_evaluate)

    r = sub.add_parser("reproduce", help="reproduce a table of the paper (without vs with prior)")
    r.add_argument("experiment", choices=PARTICLE + PDE + ("all",))
    r.add_argument("--preset", default="quick", choices=("quick", "paper"))
    r.add_argument("--out", default=None, help="results folder")
    r.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    r.add_argument("--arms", default=None, help="comma-separated arms, e.g. no_prior,prior:energy")
    r.add_argument("--resume", action="store_true")
    r.add_argument(
        "--split",
        default="test",
        choices=("val", "test"),
        help="evaluate on the validation split (for sweeps) or the held-out test split",
    )
    add_common(r)
    r.set_defaults(fn=_cmd_reproduce)

    sw = sub.add_parser("sweep", help="choose prior settings (λ, w(t), ...) on the validation split")
    sw.add_argument("experiment", choices=PARTICLE + PDE)
    sw.add_argument(
        "--grid",
        action="append",
        required=True,
        help="key=v1,v2,... (repeatable; the grid is the product), e.g. --grid priors.0.weight=0.1,1,10",
    )
    sw.add_argument("--preset", default="quick", choices=("quick", "paper"))
    sw.add_argument("--out", default=None, help="sweep folder")
    sw.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    sw.add_argument("--arms", default=None, help="with-prior arms to run at each point (default: all)")
    sw.add_argument("--split", default="val", choices=("val", "test"), help="tune on val; test stays held out")
    sw.add_argument(
        "--max-worse",
        type=float,
        default=0.05,
        help="a point that makes any metric worse than no_prior by more than this fraction is not eligible",
    )
    add_common(sw)
    sw.set_defaults(fn=_cmd_sweep)

    pl = sub.add_parser("plot", help="(re)draw the plots of a results folder")
    pl.add_argument("results")
    pl.set_defaults(fn=_cmd_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"'{args.command}' takes no key=value overrides: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        return args.fn(args)
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError, KeyError) as e:
        print(f"physdiff {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
