"""The ``physdiff`` command line: simulate | train | sample | evaluate | reproduce | sweep | plot | config.

Every verb dispatches through the registries (experiments from the preset files, tasks, systems); none
asks whether it handles particles or fields.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
from pathlib import Path

from physdiff.config import ConfigError
from physdiff.training.errors import CheckpointError, RunLockedError

log = logging.getLogger("physdiff")
PRESETS = ("quick", "paper")


def _experiments() -> tuple[str, ...]:
    from physdiff.presets import experiments

    return experiments()


def _simulated_experiments() -> list[str]:
    """``reproduce all``: every experiment that simulates its own data (not those that read a user's file:
    generic particles, The Well)."""
    from physdiff.experiments.config import preset_config

    out = []
    for name in _experiments():
        cfg = preset_config(name, "quick")
        if cfg.task != "the-well" and cfg.data.system != "generic":
            out.append(name)
    return out


def check_output_file(path: Path, option: str) -> Path:
    """Refuse, before any work, an output file path that is a folder or lies under a file."""
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name (e.g. {path / 'out.h5'})")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
    return path


def check_output_folder(path: Path, option: str) -> Path:
    """Refuse, before any work, an output folder path that is a file or lies under a file."""
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise ValueError(f"{option} {path}: {p} is a file, not a folder")
    return path


def _cmd_simulate(a: argparse.Namespace) -> int:
    from physdiff.experiments.task import task_for_system

    task = task_for_system(a.system)
    from physdiff.outputs import check_new_output

    out = check_output_file(Path(a.out or f"data/{a.system.replace('-', '_')}.h5"), "--out")
    check_new_output(out, "--out", force=a.force)  # an existing file only with --force, and only a regular one
    settings = {"n_frames": a.frames} if a.frames is not None else {}
    s = task.simulate_to_file(a.system, out, a.n, a.seed, **settings)
    print(f"wrote {a.n} {a.system} samples to {out}")
    for key, value in s.items():
        if key in ("path", "system", "n", "seed"):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.4g}"
        print(f"  {key}: {value}")
    return 0


def _experiment_cfg(a: argparse.Namespace):
    from physdiff.config import load_yaml
    from physdiff.experiments.config import ExperimentConfig, preset_config
    from physdiff.experiments.harness import configure

    if a.config:
        cfg = load_yaml(ExperimentConfig, a.config)
        if cfg.experiment != a.experiment:
            raise ConfigError(f"{a.config} is a config of {cfg.experiment!r}, not {a.experiment!r}")
    else:
        cfg = preset_config(a.experiment, a.preset)
    over = list(a.overrides)
    if getattr(a, "data", None):
        over.append(f"data.path={Path(a.data).resolve()}")
    if getattr(a, "system", None):
        over.append(f"data.system={a.system}")
    return configure(cfg, over)


def _cmd_config(a: argparse.Namespace) -> int:
    import yaml

    from physdiff.config import to_dict

    print(yaml.safe_dump(to_dict(_experiment_cfg(a)), sort_keys=False), end="")
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from physdiff.experiments.harness import prepare, train_arm
    from physdiff.training.distributed import cleanup, init_distributed, resolve_device

    cfg = _experiment_cfg(a).with_arms([a.arm])
    run = check_output_folder(Path(a.run_dir), "--run-dir")
    dev = resolve_device(a.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(dev)
    try:
        prep = prepare(cfg, Path(a.cache_dir or run / "data"), progress=info.is_main, dist_info=info)
        train_arm(
            prep, a.arm, a.seed, run, device=dev, resume=a.resume, force=a.force, progress=info.is_main, dist_info=info
        )
    finally:
        cleanup(info)
    if info.is_main:
        print(f"checkpoint: {run / 'checkpoint.pt'}")
    return 0


def _cmd_sample(a: argparse.Namespace) -> int:
    from physdiff.training.distributed import cleanup, init_distributed, resolve_device

    run_dir = Path(a.run_dir)
    info = init_distributed(resolve_device(a.device, int(os.environ.get("LOCAL_RANK", "0"))))
    try:
        return _sample_run(a, run_dir, info)
    finally:
        cleanup(info)


def _sample_run(a: argparse.Namespace, run_dir: Path, info) -> int:
    """``physdiff sample``; under torchrun (``info``) the ranks share the batches and rank 0 writes."""
    import numpy as np

    from physdiff.api import load_run
    from physdiff.evaluation.geotdm import draw_seed
    from physdiff.evaluation.statistics import summarize_samples
    from physdiff.experiments.config import ConstraintConfig
    from physdiff.experiments.harness import configure, prepare, samples_name, stack_draws
    from physdiff.outputs import check_new_output, record_outputs

    r = load_run(run_dir, device=a.device, split=a.split, cache_dir=a.cache_dir, overrides=a.overrides, dist_info=info)
    subtasks = [a.subtask] if a.subtask else r.config.subtasks
    if a.out and len(subtasks) > 1:
        raise ValueError(f"--out names one file but this run samples {subtasks}; choose one with --subtask")
    constraint = None
    if a.constraint:
        constraint = ConstraintConfig(priors=a.constraint.split(","), mode=a.constraint_mode)
        r._constraints([constraint])  # validated before anything is sampled or written
    source, split = None, a.split
    if a.condition:  # the conditions of a user's file of the task's format
        over = [f"data.path={Path(a.condition).resolve()}"] + ([f"data.system={a.system}"] if a.system else [])
        cfg = configure(r.config, over)
        source, split = prepare(cfg, run_dir / "data", split=a.split, progress=False, dist_info=info).data, "file"
    paths = {}
    for subtask in subtasks:
        path = check_output_file(Path(a.out) if a.out else run_dir / samples_name(subtask, constraint), "--out")
        paths[subtask] = check_new_output(path, "--out", force=a.force)  # --force replaces only a regular file
    for subtask, path in paths.items():
        k = a.draws if a.draws is not None else r.task.draws_per_condition(subtask)
        draws = []
        for j in range(k):  # draw 0 is the seed's own sample; draw j > 0 is seeded apart (GeoTDM's K draws)
            seed = draw_seed(r.seed if a.seed is None else a.seed, j)
            draws.append(
                r.sample(
                    data=source,
                    n=a.n,
                    subtask=subtask,
                    sampler=a.sampler,
                    steps=a.steps,
                    seed=seed,
                    constraints=[constraint] if constraint else None,
                )
            )
        idx = draws[0]["source_indices"]
        out = stack_draws([{key: v for key, v in d.items() if key != "source_indices"} for d in draws])
        rows = np.tile(np.arange(len(idx)), k)
        if source is not None:
            reference = source.subset(np.tile(idx, k))
        else:
            reference = r.prepared.evaluation.subset(rows)
        idx = np.tile(idx, k)
        if not info.is_main:
            continue
        if path.resolve().parent == run_dir.resolve():  # the run folder's manifest: what --force may remove
            record_outputs(run_dir, [path.name])
        r.task.write_samples(path, out, reference, idx, split, subtask)
        print(f"wrote {path}")
        n = len(draws[0]["source_indices"])
        first = {key: v[:n] if np.ndim(v) and len(v) == n * k else v for key, v in out.items()}
        more = [{key: v[j * n : (j + 1) * n] for key, v in out.items() if np.ndim(v)} for j in range(1, k)]
        kw = {"draws": more} if more else {}
        for key, v in summarize_samples(r.task.evaluate(first, reference.subset(np.arange(n)), subtask, **kw)).items():
            print(f"  {key}: {v['mean']:.4g} ± {v['std']:.2g}")
    return 0


def _run_config(run: Path):
    """The experiment config a run folder was trained with (its own ``arm``/``seed`` keys dropped)."""
    from physdiff.config import from_dict, load_yaml_dict
    from physdiff.experiments.config import ExperimentConfig

    data = load_yaml_dict(run / "config.yaml")
    data = {k: v for k, v in data.items() if k not in ("arm", "seed")}
    return from_dict(ExperimentConfig, data, where=str(run / "config.yaml"))


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from physdiff.experiments.task import task_for_file
    from physdiff.outputs import check_new_output, write_json

    if a.json:
        check_new_output(check_output_file(Path(a.json), "--json"), "--json", force=a.force)
    draws = [Path(d) for d in a.draws] if a.draws else None
    res = task_for_file(a.reference).evaluate_files(
        Path(a.samples), Path(a.reference), system=a.system, task=a.task, draws=draws, protocol=a.protocol, k=a.k
    )
    for k, v in res["metrics"].items():
        fl = res["floor"].get(k)
        print(f"{k:>15}: {v['mean']:.5g} ± {v['std']:.3g}" + (f"   (floor {fl:.3g})" if fl is not None else ""))
    if a.json:
        write_json(a.json, res)
        print(f"wrote {a.json}")
    return 0


def _seeds(a: argparse.Namespace) -> list[int] | None:
    """``--seeds 0,1,2`` → ``[0, 1, 2]`` (``None``: the preset's)."""
    if a.seeds is None:
        return None
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {a.seeds!r}") from None
    if not seeds:
        raise ConfigError("--seeds names no seed")
    return seeds


def _arms(a: argparse.Namespace) -> list[str] | None:
    """``--arms no_prior,prior:energy`` → a list (``None``: all arms)."""
    return [s for s in a.arms.split(",") if s] if a.arms else None


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from physdiff.experiments.harness import reproduce
    from physdiff.training.distributed import cleanup, init_distributed, resolve_device

    exps = _simulated_experiments() if a.experiment == "all" else [a.experiment]
    if a.out:
        check_output_folder(Path(a.out), "--out")
    info = init_distributed(resolve_device(a.device, int(os.environ.get("LOCAL_RANK", "0"))))
    try:
        return _reproduce_all(a, exps, info, reproduce)
    finally:
        cleanup(info)


def _reproduce_all(a: argparse.Namespace, exps: list[str], info, reproduce) -> int:
    for exp in exps:
        out = Path(a.out) / exp if a.out and len(exps) > 1 else Path(a.out or f"results/{exp}-{a.preset}")
        over = list(a.overrides)
        over += [f"data.path={Path(a.data).resolve()}"] if a.data else []
        over += [f"data.system={a.system}"] if a.system else []
        reproduce(
            exp,
            a.preset,
            out,
            command=a.command_line,
            overrides=over,
            seeds=_seeds(a),
            arms=_arms(a),
            cache_dir=a.cache_dir,
            device=a.device,
            resume=a.resume,
            force=a.force,
            split=a.split,
            dist_info=info,
        )
        if info.is_main:
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
        command=a.command_line,
    )
    print()
    print((out / "sweep.md").read_text())
    print(f"sweep folder: {out.resolve()}")
    return 0


def _cmd_plot(a: argparse.Namespace) -> int:
    """Figures and report of a results folder (``results.json``), a sweep (``sweep.json``) or a run folder."""
    from physdiff.experiments.harness import configure, draw_figures_and_report, draw_run_figures

    folders = [Path(r).resolve() for r in a.results]
    if len(folders) > 1 or a.out:  # run folders side by side: a results folder of their samples
        from physdiff.experiments.harness import compare_runs

        if not a.out:
            raise ValueError("plot: several run folders are compared into one results folder; name it with --out DIR")
        out = check_output_folder(Path(a.out), "--out")
        res = compare_runs(folders, out, command=a.command_line)
        print((out / "table.md").read_text())
        print(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'plots'}, {out / 'report.html'}")
        return 0 if res else 1
    res = folders[0]
    if (res / "sweep.json").is_file():
        from physdiff.evaluation.report import write_sweep_report
        from physdiff.outputs import read_json

        info = read_json(res / "sweep.json")
        md = (res / "sweep.md").read_text() if (res / "sweep.md").is_file() else ""
        print(f"wrote {write_sweep_report(res, info, sweep_md=md)}")
        return 0
    if (res / "results.json").is_file():
        from physdiff.experiments.task import make_task
        from physdiff.outputs import read_json

        info = read_json(res / "results.json")
        cfg = configure(_run_config(res), [f"data.path={info['data']}"])
        task = make_task(cfg)
        data = task.load(res / "data", progress=False)
        for p in draw_figures_and_report(task, res, info, data, command=info.get("command")):
            print(f"wrote {p}")
        return 0
    if (res / "checkpoint.pt").is_file() and (res / "config.yaml").is_file():
        for p in draw_run_figures(res):
            print(f"wrote {p}")
        return 0
    raise FileNotFoundError(
        f"{res}: not a results folder (results.json), a sweep folder (sweep.json) or a run folder (config.yaml, "
        "checkpoint.pt)"
    )


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (``--steps 0`` is refused at parse time, not ignored)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


THREADS_HELP = (
    "torch intra-op CPU threads: a count, or auto (default: OMP_NUM_THREADS if set, else 1 per process: "
    "on 2 cores the quick models train 1.4-1.5x faster with 2 threads on an idle machine but 2.5-4x slower "
    "with 2 threads beside one other run, which 1 thread does not notice; docs/benchmarks.md, Threads)"
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``physdiff <verb>: error: <message> (physdiff <verb> --help)``, exit 2
    (the usage block stays in ``--help``)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _finite_float(text: str) -> float:
    """argparse type: a finite float >= 0 (NaN, inf and negative values refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="physdiff",
        description="Generate physical dynamics with diffusion models under priors (ICLR 2025, arXiv 2409.00730).",
    )
    from physdiff._version import __version__

    p.add_argument("--version", action="version", version=f"physdiff {__version__}")
    p.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")
    p.add_argument("--verbose", "-v", action="store_true", help="debug messages")
    p.add_argument("--threads", default="auto", help=THREADS_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    exps = _experiments()

    s = sub.add_parser("simulate", help="simulate a data set and write it as HDF5")
    s.add_argument("system", help="a system name, e.g. three-body, five-spring, advection, darcy")
    s.add_argument("--n", type=_positive_int, default=1000, help="number of trajectories / samples")
    s.add_argument("--seed", type=_nonnegative_int, default=0)
    s.add_argument("--frames", type=_positive_int, default=None, help="frames per trajectory (particles)")
    s.add_argument("--out", default=None, help="output .h5 file (default: data/<system>.h5, e.g. data/three_body.h5)")
    s.add_argument("--force", action="store_true", help="replace an existing --out file (a regular file only)")
    s.set_defaults(fn=_cmd_simulate)

    def add_common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
        q.add_argument("--cache-dir", default=None, help="where simulated data are cached")
        q.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. train.steps=2000)")

    def add_experiment(q: argparse.ArgumentParser, extra: tuple[str, ...] = ()) -> None:
        q.add_argument("experiment", choices=exps + extra)
        q.add_argument("--preset", default="quick", choices=PRESETS)

    def add_data(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data", default=None, help="a data file to use instead of simulating (= data.path=FILE)")
        q.add_argument(
            "--system", default=None, help="the system of a data file without a 'system' attribute (= data.system)"
        )

    c = sub.add_parser("config", help="print the resolved config of an experiment (preset + overrides) as YAML")
    add_experiment(c)
    c.add_argument("--config", default=None, help="a config.yaml instead of the preset")
    c.add_argument("overrides", nargs="*", help="config overrides key=value")
    c.set_defaults(fn=_cmd_config)

    t = sub.add_parser("train", help="train one arm of an experiment (runs under torchrun too)")
    add_experiment(t)
    t.add_argument("--config", default=None, help="a config.yaml instead of the preset")
    t.add_argument(
        "--arm",
        default="no_prior",
        help="no_prior or prior:<name>: a prior of the config (prior:energy, prior:residual) or a user prior class "
        "by import path (prior:my_module:MyPrior, prior:path/to/file.py:MyPrior)",
    )
    t.add_argument("--seed", type=_nonnegative_int, default=0)
    t.add_argument("--run-dir", required=True)
    t.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint.pt")
    t.add_argument("--force", action="store_true", help="clear a run folder that holds a run and start over")
    add_data(t)
    add_common(t)
    t.set_defaults(fn=_cmd_train)

    sm = sub.add_parser("sample", help="sample the evaluation split from a trained run and evaluate it")
    sm.add_argument("run_dir")
    sm.add_argument("--sampler", default=None, help="a sampler name (ddpm, ddim, heun, ...)")
    sm.add_argument("--steps", type=_positive_int, default=None, help="sampler steps")
    sm.add_argument("--seed", type=_nonnegative_int, default=None, help="sampling seed (default: the run's)")
    sm.add_argument("--split", default="test", choices=("val", "test"), help="whose conditions to sample")
    sm.add_argument("--n", type=_positive_int, default=None, help="the first N conditions (default: sample.n_test)")
    sm.add_argument("--subtask", default=None, choices=("prediction", "generation"), help="default: the run's")
    sm.add_argument("--condition", default=None, help="a data file of the task's format whose conditions to use")
    sm.add_argument("--constraint", default=None, help="sampling-time constraint: comma-separated priors")
    sm.add_argument("--constraint-mode", default="projection", choices=("projection", "guidance"))
    sm.add_argument("--out", default=None, help="the samples file (default: the run folder's samples_<subtask>.h5)")
    sm.add_argument("--force", action="store_true", help="overwrite an existing samples file")
    sm.add_argument(
        "--draws",
        type=_positive_int,
        default=None,
        help="samples per condition, written draw after draw (default: the config's sample.draws where its metrics "
        "need several, else 1); 'evaluate --protocol geotdm' scores them",
    )
    sm.add_argument("--system", default=None, help="the system of a --condition file without a 'system' attribute")
    add_common(sm)
    sm.set_defaults(fn=_cmd_sample)

    e = sub.add_parser("evaluate", help="metrics of a samples file against reference data")
    e.add_argument("samples")
    e.add_argument("--reference", required=True)
    e.add_argument("--system", default=None, help="system name for files without a 'system' attribute")
    e.add_argument("--json", default=None, help="write the metrics to this JSON file")
    e.add_argument("--force", action="store_true", help="replace an existing --json file (a regular file only)")
    e.add_argument(
        "--task",
        default=None,
        choices=("prediction", "generation"),
        help="field samples: prediction (rmse vs the reference too) or generation; default: the file's 'task'",
    )
    e.add_argument(
        "--draws",
        nargs="+",
        default=None,
        help="further samples files of the same conditions (other seeds): GeoTDM's min/ave ADE/FDE over all draws",
    )
    e.add_argument(
        "--protocol",
        default=None,
        choices=("geotdm",),
        help="geotdm: GeoTDM's N-body protocol (10 given frames, K draws per condition: min_ade, min_fde, ave_ade, "
        "ave_fde)",
    )
    e.add_argument("--k", type=_positive_int, default=None, help="draws per condition the protocol expects (default 5)")
    e.set_defaults(fn=_cmd_evaluate)

    r = sub.add_parser("reproduce", help="reproduce a table of the paper (without vs with prior)")
    add_experiment(r, ("all",))
    r.add_argument("--out", default=None, help="results folder")
    r.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    r.add_argument("--arms", default=None, help="comma-separated arms, e.g. no_prior,prior:energy")
    r.add_argument("--resume", action="store_true", help="continue the runs of an earlier call (same settings)")
    r.add_argument("--force", action="store_true", help="clear the runs of an earlier call and start over")
    add_data(r)
    r.add_argument(
        "--split",
        default="test",
        choices=("val", "test"),
        help="evaluate on the validation split (for sweeps) or the held-out test split",
    )
    add_common(r)
    r.set_defaults(fn=_cmd_reproduce)

    sw = sub.add_parser("sweep", help="choose prior settings (λ, w(t), ...) on the validation split")
    add_experiment(sw)
    sw.add_argument(
        "--grid",
        action="append",
        required=True,
        help="key=v1,v2,... (repeatable; the grid is the product), e.g. --grid priors.0.weight=0.1,1,10",
    )
    sw.add_argument("--out", default=None, help="sweep folder")
    sw.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    sw.add_argument("--arms", default=None, help="with-prior arms to run at each point (default: all)")
    sw.add_argument("--split", default="val", choices=("val", "test"), help="tune on val; test stays held out")
    sw.add_argument(
        "--max-worse",
        type=_finite_float,
        default=0.05,
        help="a point that makes any metric worse than no_prior by more than this fraction is not eligible",
    )
    add_common(sw)
    sw.set_defaults(fn=_cmd_sweep)

    pl = sub.add_parser(
        "plot",
        help="(re)draw the figures and report of a results, sweep or run folder; or compare run folders (--out)",
    )
    pl.add_argument("results", nargs="+", help="a results, sweep or run folder; or several run folders with --out")
    pl.add_argument(
        "--out",
        default=None,
        help="compare the run folders (their samples, per arm and seed) into this results folder: results.json, "
        "table.md with paired intervals, plots, report.html",
    )
    pl.set_defaults(fn=_cmd_plot)
    for verb in sub.choices.values():  # also after the verb: `physdiff train ... --quiet --threads 2`
        verb.add_argument("--threads", default=argparse.SUPPRESS, help=THREADS_HELP)
        verb.add_argument(
            "--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help="only warnings and errors"
        )
        verb.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="debug messages")
    p.verbs = dict(sub.choices)  # type: ignore[attr-defined]
    return p


def _configure_logging(a: argparse.Namespace) -> None:
    from physdiff.progress import set_quiet

    level = logging.WARNING if a.quiet else logging.DEBUG if a.verbose else logging.INFO
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(level)  # a run's run.log lowers the physdiff logger to INFO; the console stays at `level`
    logging.basicConfig(level=level, handlers=[console], force=True)
    set_quiet(a.quiet)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.command_line = shlex.join(["physdiff", *(sys.argv[1:] if argv is None else argv)])
    verb = parser.verbs[args.command]  # errors name the verb: "physdiff train: error: ..."
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad:
        verb.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        if not hasattr(args, "overrides"):
            verb.error(f"'{args.command}' takes no key=value overrides: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    _configure_logging(args)
    try:
        from physdiff.training.threads import configure_threads

        configure_threads(args.threads, local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if getattr(args, "cache_dir", None):  # refused before any simulation writes into it
            check_output_folder(Path(args.cache_dir), "--cache-dir")
        return args.fn(args)
    except EXPECTED as e:
        print(f"physdiff {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the trainer saved a consistent checkpoint and said so
        print(f"physdiff {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line here, the traceback in a log file
        where = _write_traceback(args)
        print(
            f"physdiff {args.command}: internal error: {type(e).__name__}: {_one_line(e)} "
            f"(full traceback in {where}; please report it)",
            file=sys.stderr,
        )
        return 1


#: errors of bad input: reported as one line, exit code 2 (OSError: unreadable, truncated or non-HDF5 files,
#: a directory where a file is expected, a path under a file, permissions)
EXPECTED = (ConfigError, CheckpointError, RunLockedError, ValueError, KeyError, OSError, FloatingPointError)


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, KeyError) and len(e.args) == 1:
        text = str(e.args[0])
    return " ".join(text.split())


def _write_traceback(args: argparse.Namespace) -> str:
    """Append the current traceback to the command's ``run.log`` (its run or results folder, if it exists),
    else to a file in the temporary folder; returns where."""
    import tempfile
    import traceback

    folder = getattr(args, "run_dir", None) or getattr(args, "out", None) or getattr(args, "results", None)
    if isinstance(folder, list):
        folder = folder[0]
    path = Path(folder) / "run.log" if folder and Path(folder).is_dir() else None
    if path is None:
        fd, name = tempfile.mkstemp(prefix="physdiff-error-", suffix=".log")
        os.close(fd)
        path = Path(name)
    from physdiff.outputs import open_append

    try:
        with open_append(path) as f:  # never through a link named run.log
            f.write(f"physdiff {' '.join(sys.argv[1:])}\n{traceback.format_exc()}\n")
    except OSError as e:  # a full disk or a read-only folder: say so instead of failing again
        return f"nowhere: {path} could not be written ({e.strerror or e})"
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
