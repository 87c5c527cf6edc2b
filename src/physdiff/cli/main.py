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

#: physdiff.priors.sampling.CONSTRAINT_MODES without importing torch for the parser (tests/test_constraint_methods.py)
CONSTRAINT_MODE_CHOICES = ("projection", "guidance", "pcfm", "eci", "diffusionpde", "dps", "dflow")

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


def default_simulate_out(system: str) -> str:
    """``physdiff simulate``'s default ``--out``: ``data/<system>.h5`` (``-`` as ``_``)."""
    return f"data/{system.replace('-', '_')}.h5"


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


def simulate_defaults(system: str) -> tuple[int, int, dict]:
    """(n, seed, settings) of ``physdiff simulate SYSTEM``: those of the quick preset that simulates it (the
    experiment of the same name first), so that a file simulated with the defaults is the preset's data and
    its runs' samples evaluate against it; (1000, 0, {}) for a system no preset simulates."""
    from physdiff.experiments.config import preset_config

    for exp in sorted(_experiments(), key=lambda e: e != system):
        cfg = preset_config(exp, "quick")
        if cfg.data.system == system and not cfg.data.path:
            return cfg.data.n, cfg.data.seed, dict(cfg.data.settings)
    return 1000, 0, {}


def _simulate_settings(items: list[str]) -> dict:
    """``nx=32 nt=16`` → ``{"nx": 32, "nt": 16}`` (values read as YAML scalars)."""
    import yaml

    out = {}
    for item in items:
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ValueError(f"simulate: setting {item!r} is not of the form key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError(f"simulate: setting {item!r}: the value is not valid YAML") from None
    return out


def _cmd_simulate(a: argparse.Namespace) -> int:
    from physdiff.experiments.task import task_for_system

    task = task_for_system(a.system)
    from physdiff.outputs import check_new_output

    out = check_output_file(Path(a.out or default_simulate_out(a.system)), "--out")
    check_new_output(out, "--out", force=a.force)  # an existing file only with --force, and only a regular one
    n, seed, settings = simulate_defaults(a.system)
    a.n = n if a.n is None else a.n
    a.seed = seed if a.seed is None else a.seed
    if a.frames is not None:
        if task.kind != "particles":
            raise ValueError(f"--frames is for particle systems; {a.system} takes grid settings, e.g. nt=16")
        settings["n_frames"] = a.frames
    settings |= _simulate_settings(a.overrides)
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


#: keys of a run's config.yaml that are not experiment settings (its arm and seed: ``--arm``, ``--seed``)
RUN_KEYS = ("arm", "seed")


def _config_file(a: argparse.Namespace, experiment: str) -> dict:
    """The mapping of ``--config FILE`` (partial or whole, e.g. a run's config.yaml; its arm and seed dropped),
    or ``{}``; a file of another experiment is refused."""
    from physdiff.config import load_yaml_dict

    if not getattr(a, "config", None):
        return {}
    data = {k: v for k, v in load_yaml_dict(a.config).items() if k not in RUN_KEYS}
    if "experiment" in data and data["experiment"] != experiment:
        raise ConfigError(f"--config {a.config} is a config of {data['experiment']!r}, not {experiment!r}")
    return data


def _base_config(a: argparse.Namespace, experiment: str | None = None):
    """The experiment's preset (``--preset``, else the ``--config`` file's ``preset``, else quick) with the
    ``--config`` file merged onto it key by key (the file's keys win; lists such as ``priors`` replace)."""
    from physdiff.config import merge_onto
    from physdiff.experiments.config import preset_config

    experiment = experiment or a.experiment
    data = _config_file(a, experiment)
    preset = getattr(a, "preset", None) or data.get("preset") or "quick"
    cfg = preset_config(experiment, preset)
    data = {k: v for k, v in data.items() if k != "preset"}
    return merge_onto(cfg, data, where=f"--config {a.config}") if data else cfg


def _data_overrides(a: argparse.Namespace) -> list[str]:
    """``--data FILE`` and ``--system NAME`` as overrides (``data.path``, ``data.system``)."""
    over = [f"data.path={Path(a.data).resolve()}"] if getattr(a, "data", None) else []
    return over + ([f"data.system={a.system}"] if getattr(a, "system", None) else [])


def _experiment_cfg(a: argparse.Namespace):
    """The preset, the ``--config`` file merged onto it, then the ``key=value`` overrides, ``--data`` and
    ``--system``."""
    from physdiff.experiments.harness import configure

    return configure(_base_config(a), [*a.overrides, *_data_overrides(a)])


def _cmd_config(a: argparse.Namespace) -> int:
    import yaml

    from physdiff.config import to_dict

    print(yaml.safe_dump(to_dict(_experiment_cfg(a)), sort_keys=False), end="")
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from physdiff.experiments.harness import has_checkpoint, prepare, train_arm
    from physdiff.training.distributed import cleanup, init_distributed, resolve_device

    run = check_output_folder(Path(a.run_dir), "--run-dir")
    cache = None
    if a.resume and has_checkpoint(run):  # the run's own settings; a changed one is refused before any write
        cfg, arm, seed, cache = _resumed_config(a, run)
    else:
        cfg, arm, seed = _experiment_cfg(a), a.arm or "no_prior", 0 if a.seed is None else a.seed
    cfg = cfg.with_arms([arm])
    dev = resolve_device(a.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(dev)
    try:
        prep = prepare(cfg, Path(a.cache_dir or cache or run / "data"), progress=info.is_main, dist_info=info)
        train_arm(
            prep, arm, seed, run, device=dev, resume=a.resume, force=a.force, progress=info.is_main, dist_info=info
        )
    finally:
        cleanup(info)
    if info.is_main:
        print(f"checkpoint: {run / 'checkpoint.pt'}")
    return 0


def _resumed_config(a: argparse.Namespace, run: Path):
    """``train --resume``: the (config, arm, seed, data cache folder or None) the run's checkpoint was trained
    with. What the command
    line asks on top (``--config``, ``key=value``, ``--data``, ``--system``, ``--arm``, ``--seed``,
    ``--preset``) must agree with it: a changed value is refused naming the recorded one and the asked one;
    ``train.steps`` alone may change (the same run, continued to another step count)."""
    import dataclasses

    from physdiff.config import from_dict, load_yaml_dict, merge_onto, to_dict
    from physdiff.experiments.config import ExperimentConfig
    from physdiff.experiments.harness import configure
    from physdiff.training.checkpoint import check_config_matches, load_latest_checkpoint

    state, used = load_latest_checkpoint(run / "checkpoint.pt")
    saved = state.get("config") or load_yaml_dict(run / "config.yaml")
    arm, seed = str(saved.get("arm", "no_prior")), int(saved.get("seed", 0))
    raw = {k: v for k, v in saved.items() if k not in RUN_KEYS}
    if raw.get("experiment", a.experiment) != a.experiment:
        raise ConfigError(f"--resume: {run} holds a run of {raw['experiment']!r}, not {a.experiment!r}")
    d, cache = raw.get("data") or {}, None
    path = Path(d.get("path") or "")
    if d.get("path") and path.name.startswith(f"{d.get('system')}_n{d.get('n')}_seed{d.get('seed')}"):
        # simulated data, recorded with the file it was cached in: simulated (from that cache) again
        raw["data"], cache = {**d, "path": None}, path.parent
    recorded = from_dict(ExperimentConfig, raw, where=str(used))
    asked = recorded
    data = {k: v for k, v in _config_file(a, a.experiment).items() if k != "preset"}
    if data:
        asked = merge_onto(asked, data, where=f"--config {a.config}")
    asked = configure(asked, [*a.overrides, *_data_overrides(a)])
    now = to_dict(asked) | {"arm": arm if a.arm is None else a.arm, "seed": seed if a.seed is None else a.seed}
    now["preset"] = a.preset or now["preset"]
    before = to_dict(recorded) | {"arm": arm, "seed": seed}
    if recorded.data.path:  # a file's size and settings are recorded as read from it, not as asked
        now["data"] = {**now["data"], "n": before["data"]["n"], "settings": before["data"]["settings"]}
    # the data's recorded size and content hash are facts of the file, checked against it when it is read
    now["data"] = {**now["data"], **{k: before["data"].get(k) for k in ("file_bytes", "content_sha256")}}
    if now["train"]["steps"] != before["train"]["steps"]:  # more (or fewer) steps: the same run, continued
        recorded = dataclasses.replace(recorded, train=dataclasses.replace(recorded.train, steps=asked.train.steps))
        now["train"] = {**now["train"], "steps": before["train"]["steps"]}
    try:
        check_config_matches(used, before, now, tuple(before))
    except CheckpointError as e:
        raise CheckpointError(
            f"{e}; --resume continues the run with its own settings: leave out what differs, or train into "
            "another --run-dir (--force starts this one over)"
        ) from None
    return recorded, arm, seed, cache


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
        # the file as written, scored as 'physdiff evaluate' scores it: the same metrics, printed in the same order
        recorded = _samples_attrs(path)
        ref_path = Path(str(recorded.get("reference_path") or "")) if recorded.get("reference_path") else None
        if ref_path is None or not ref_path.is_file():
            log.warning("%s records no readable reference file: not evaluated (see 'physdiff evaluate')", path)
            continue
        system = a.system if a.system is not None else _recorded_system(path, ref_path)
        frmse = getattr(r.config, "frmse_lengths", None)
        res = _evaluation(path, ref_path, system=system, frmse_lengths=frmse)
        _print_metrics(res, r.config.metrics, subtask)
    return 0


def _run_config(run: Path):
    """The experiment config a run folder was trained with (its own ``arm``/``seed`` keys dropped)."""
    from physdiff.config import from_dict, load_yaml_dict
    from physdiff.experiments.config import ExperimentConfig

    data = load_yaml_dict(run / "config.yaml")
    data = {k: v for k, v in data.items() if k not in ("arm", "seed")}
    return from_dict(ExperimentConfig, data, where=str(run / "config.yaml"))


def _recorded_system(samples: Path, reference: Path) -> str | None:
    """The system a particle samples file records, for a particle reference without a ``system`` attribute (a
    user's file): ``evaluate`` needs no ``--system`` then. ``None`` otherwise (the evaluator reads the files)."""
    import h5py

    try:
        with h5py.File(reference, "r") as ref, h5py.File(samples, "r") as gen:
            if "system" in ref.attrs or "positions" not in ref or "positions" not in gen:
                return None
            value = gen.attrs.get("system")
    except OSError:  # not HDF5: the evaluator names the file
        return None
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def _samples_attrs(samples: Path) -> dict:
    """The attributes of a samples file (``{}`` when it is not HDF5 or unreadable: the evaluator names it)."""
    import h5py

    try:
        with h5py.File(samples, "r") as f:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError:
        return {}


def _evaluation(samples: Path, reference: Path, *, system: str | None = None, priors=None, **options) -> dict:
    """``{"metrics", "floor"}`` of a samples file against its reference (the task that reads the reference; with
    ``priors``, ``law:<name>`` of each): what ``evaluate`` reports, and ``sample`` of the file it wrote."""
    from physdiff.experiments.task import task_for_file

    res = task_for_file(reference).evaluate_files(samples, reference, system=system, **options)
    if priors:
        from physdiff.experiments.harness import evaluate_laws

        laws = evaluate_laws(samples, reference, priors, system=system)
        res = {"metrics": res["metrics"] | laws["metrics"], "floor": res["floor"] | laws["floor"]}
    return res


def _experiment_metrics(samples: Path) -> dict[str, str]:
    """The experiment's table metrics for a samples file: the config of the run folder it lies in, else the quick
    preset of the system it records (``{}`` for neither: the evaluator's order)."""
    if (samples.parent / "config.yaml").is_file():
        try:
            return dict(_run_config(samples.parent).metrics)
        except (ConfigError, OSError, ValueError):
            pass
    system = str(_samples_attrs(samples).get("system") or "")
    if system in _experiments():
        from physdiff.experiments.config import preset_config

        return dict(preset_config(system).metrics)
    return {}


def _print_metrics(res: dict, metric_tasks: dict[str, str] | None, subtask: str | None) -> dict:
    """Print ``res``'s metrics (mean ± std, the floor where known) in the experiment's order
    (:func:`physdiff.evaluation.statistics.samples_metric_order`); ``res`` with its metrics in that order."""
    from physdiff.evaluation.statistics import format_number, samples_metric_order

    keys = samples_metric_order(list(res["metrics"]), metric_tasks, subtask)
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        v, fl = res["metrics"][key], res["floor"].get(key)
        floor = f"   (floor {format_number(fl, 3)})" if fl is not None else ""
        print(f"  {key:>{width}}: {format_number(v['mean'])} ± {format_number(v['std'], 2)}{floor}")
    return {**res, "metrics": {k: res["metrics"][k] for k in keys}}


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from physdiff.outputs import check_new_output, write_json

    if a.json:
        check_new_output(check_output_file(Path(a.json), "--json"), "--json", force=a.force)
    samples, reference = Path(a.samples), Path(a.reference)
    system = a.system if a.system is not None else _recorded_system(samples, reference)
    res = _evaluation(
        samples,
        reference,
        system=system,
        priors=a.prior,
        task=a.task,
        draws=[Path(d) for d in a.draws] if a.draws else None,
        protocol=a.protocol,
        k=a.k,
        frmse_lengths=a.frmse_lengths,
    )
    subtask = a.task or _samples_attrs(samples).get("task")
    res = _print_metrics(res, _experiment_metrics(samples), None if subtask is None else str(subtask))
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
        base = _base_config(a, exp)
        out = Path(a.out) / exp if a.out and len(exps) > 1 else Path(a.out or f"results/{exp}-{base.preset}")
        reproduce(
            exp,
            base.preset,
            out,
            config=base,
            command=a.command_line,
            overrides=[*a.overrides, *_data_overrides(a)],
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


def _cmd_compare_constraints(a: argparse.Namespace) -> int:
    """``physdiff compare-constraints EXP --methods ...`` (:mod:`physdiff.experiments.compare_constraints`)."""
    import yaml

    from physdiff.experiments.compare_constraints import compare_constraints

    options: dict[str, dict[str, object]] = {}
    for item in a.set or []:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not (sep and dot and method and name):
            raise ConfigError(f"--set: expected METHOD.KEY=VALUE (e.g. dps.scale=0.1), got {item!r}")
        options.setdefault(method, {})[name] = yaml.safe_load(value)
    if a.out:
        check_output_folder(Path(a.out), "--out")
    out = Path(a.out or f"results/{a.experiment}-constraints")
    over = list(a.overrides) + ([f"data.path={Path(a.data).resolve()}"] if a.data else [])
    compare_constraints(
        a.experiment,
        a.methods,
        a.preset,
        out,
        laws=a.law.split(",") if a.law else None,
        processes=[p.strip() for p in a.processes.split(",") if p.strip()],
        method_options=options,
        overrides=over,
        seeds=_seeds(a),
        cache_dir=a.cache_dir,
        device=a.device,
        resume=a.resume,
        force=a.force,
        split=a.split,
        command=a.command_line,
    )
    print((out / "table.md").read_text())
    print(f"results folder: {out.resolve()}")
    return 0


def _cmd_sweep(a: argparse.Namespace) -> int:
    from physdiff.experiments.sweep import parse_grid, run_sweep

    base = _base_config(a)
    out = Path(a.out or f"results/sweep-{a.experiment}-{base.preset}")
    run_sweep(
        a.experiment,
        parse_grid(a.grid),
        preset=base.preset,
        config=base,
        out=out,
        overrides=[*a.overrides, *_data_overrides(a)],
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
        data_path = (res / info["data"]).resolve() if info.get("data") else None  # relative to the folder
        cfg = configure(_run_config(res), [f"data.path={data_path}"] if data_path else [])
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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` with every option's default (``none`` where it is unset and the help does not say what that
    means) and the examples of the epilog kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        d = action.default
        shown = "none" if d is None else ("on" if d else "off") if isinstance(d, bool) else "%(default)s"
        return f"{text} (default: {shown})"


#: one example per verb, shown under its --help
EXAMPLES = {
    "simulate": "physdiff simulate three-body --n 600 --out data/three_body.h5",
    "config": "physdiff config three-body --preset quick train.steps=2000",
    "train": "physdiff train three-body --arm prior:energy --seed 0 --run-dir runs/energy0 train.steps=2000\n"
    "  torchrun --nproc_per_node 2 -m physdiff.cli.main train three-body --run-dir runs/ddp",
    "sample": "physdiff sample runs/energy0 --sampler ddim --steps 50 --split test",
    "evaluate": "physdiff evaluate runs/energy0/samples_prediction.h5 --reference data/three_body.h5 --json eval.json",
    "reproduce": "physdiff reproduce three-body --preset quick --seeds 0,1,2 --out results/three-body-quick",
    "sweep": "physdiff sweep three-body --grid priors.0.weight=0.1,1,10 --seeds 0,1",
    "plot": "physdiff plot results/three-body-quick\n  physdiff plot runs/no_prior0 runs/energy0 --out results/compare",
    "compare-constraints": "physdiff compare-constraints advection --methods penalty,guidance,projection,pcfm,eci,dps "
    "--seeds 0,1,2",
}


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
        formatter_class=_HelpFormatter,
        epilog="examples:\n  "
        + "\n  ".join(EXAMPLES[v].split("\n")[0] for v in ("simulate", "reproduce", "plot"))
        + "\n\n'physdiff VERB --help' shows a verb's options and an example.",
    )
    from physdiff._version import __version__

    p.add_argument("--version", action="version", version=f"physdiff {__version__}", help="print the version")
    p.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")
    p.add_argument("--verbose", "-v", action="store_true", help="debug messages")
    p.add_argument("--threads", default="auto", help=THREADS_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    exps = _experiments()

    s = sub.add_parser(
        "simulate",
        help="simulate a data set and write it as HDF5",
        description="Simulate a data set and write it as HDF5. The defaults (--n, --seed, frames, grid) are those of "
        "the system's quick preset, so the file holds the data that preset trains on.",
    )
    s.add_argument("system", help="a system name, e.g. three-body, five-spring, charged, advection, burgers, darcy")
    s.add_argument("--n", type=_positive_int, default=None, help="trajectories / samples (default: the quick preset's)")
    s.add_argument("--seed", type=_nonnegative_int, default=None, help="default: the quick preset's (0)")
    s.add_argument(
        "--frames", type=_positive_int, default=None, help="frames per trajectory, particles (default: the preset's)"
    )
    s.add_argument(
        "--out",
        default=None,
        help="output .h5 file (default: data/<system>.h5 with '-' as '_', e.g. data/three_body.h5)",
    )
    s.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="simulator settings over the preset's data.settings, e.g. nx=32 nt=16 (advection, burgers), "
        "nx=16 ny=16 nt=8 (shallow-water), n_grid=16 (darcy), n_frames=8 (particles)",
    )
    s.add_argument("--force", action="store_true", help="replace an existing --out file (a regular file only)")
    s.set_defaults(fn=_cmd_simulate)

    def add_common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available, else cpu"
        )
        q.add_argument(
            "--cache-dir",
            default=None,
            help="where simulated data are cached (default: the run or results folder's data/)",
        )
        q.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. train.steps=2000)")

    def add_experiment(q: argparse.ArgumentParser, extra: tuple[str, ...] = ()) -> None:
        q.add_argument("experiment", choices=exps + extra, help="the experiment (a preset file)")
        q.add_argument(
            "--preset",
            default=None,
            choices=PRESETS,
            help="quick (minutes on a CPU) or paper (the paper's sizes); default: the --config file's, else quick",
        )

    def add_config(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--config",
            default=None,
            help="a config YAML, whole or partial (e.g. a run's config.yaml, or just 'train: {steps: 500}'), merged "
            "onto the preset key by key; key=value overrides apply after it",
        )

    def add_data(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--data",
            default=None,
            help="a data file to use instead of simulating (= data.path=FILE; default: simulate)",
        )
        q.add_argument(
            "--system", default=None, help="the system of a data file without a 'system' attribute (= data.system)"
        )

    c = sub.add_parser("config", help="print the resolved config of an experiment (preset + overrides) as YAML")
    add_experiment(c)
    add_config(c)
    c.add_argument("overrides", nargs="*", help="config overrides key=value")
    c.set_defaults(fn=_cmd_config)

    t = sub.add_parser("train", help="train one arm of an experiment (runs under torchrun too)")
    add_experiment(t)
    add_config(t)
    t.add_argument(
        "--arm",
        default=None,
        help="no_prior (default) or prior:<name>: a prior of the config (prior:energy, prior:residual) or a user prior "
        "class by import path (prior:my_module:MyPrior, prior:path/to/file.py:MyPrior); with --resume: the run's",
    )
    t.add_argument("--seed", type=_nonnegative_int, default=None, help="training seed (default 0; --resume: the run's)")
    t.add_argument("--run-dir", required=True, help="the run folder: checkpoint.pt, metrics.csv, run.log, config.yaml")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from run-dir/checkpoint.pt with the run's own config, arm and seed (a changed one is refused)",
    )
    t.add_argument("--force", action="store_true", help="clear a run folder that holds a run and start over")
    add_data(t)
    add_common(t)
    t.set_defaults(fn=_cmd_train)

    sm = sub.add_parser("sample", help="sample the evaluation split from a trained run and evaluate it")
    sm.add_argument("run_dir", help="a run folder of 'physdiff train'")
    sm.add_argument(
        "--sampler", default=None, help="a sampler name (ddpm, ddim, heun, ...; default: the config's sample.sampler)"
    )
    sm.add_argument(
        "--steps", type=_positive_int, default=None, help="sampler steps (default: the config's sample.steps)"
    )
    sm.add_argument("--seed", type=_nonnegative_int, default=None, help="sampling seed (default: the run's)")
    sm.add_argument("--split", default="test", choices=("val", "test"), help="whose conditions to sample")
    sm.add_argument("--n", type=_positive_int, default=None, help="the first N conditions (default: sample.n_test)")
    sm.add_argument("--subtask", default=None, choices=("prediction", "generation"), help="default: the run's")
    sm.add_argument("--condition", default=None, help="a data file of the task's format whose conditions to use")
    sm.add_argument("--constraint", default=None, help="sampling-time constraint: comma-separated priors")
    sm.add_argument(
        "--constraint-mode",
        default="projection",
        choices=CONSTRAINT_MODE_CHOICES,
        help="the sampling-time method (docs/priors.md, 'Sampling-time methods')",
    )
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
    e.add_argument("samples", help="a samples file of 'physdiff sample'")
    e.add_argument("--reference", required=True, help="the data file the samples were drawn from")
    e.add_argument(
        "--system", default=None, help="system name when neither file has a 'system' attribute (default: the samples')"
    )
    e.add_argument(
        "--prior",
        action="append",
        default=None,
        metavar="SPEC",
        help="also report law:<SPEC>, the RMS of this prior's residual (built-in name or module:Class); repeatable",
    )
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
    e.add_argument(
        "--frmse-lengths",
        default=None,
        choices=("unit", "physical"),
        help="field samples: fRMSE's domain lengths, unit (Lx = Ly = 1, PDEBench's scripts; default) or physical",
    )
    e.set_defaults(fn=_cmd_evaluate)

    r = sub.add_parser("reproduce", help="reproduce a table of the paper (without vs with prior)")
    add_experiment(r, ("all",))
    add_config(r)
    r.add_argument("--out", default=None, help="results folder (default: results/<experiment>-<preset>)")
    r.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    r.add_argument("--arms", default=None, help="comma-separated arms, e.g. no_prior,prior:energy (default: all)")
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

    cc = sub.add_parser(
        "compare-constraints",
        help="constraint methods side by side: the training penalty and the sampling-time methods on the same models",
    )
    add_experiment(cc)
    cc.add_argument(
        "--methods",
        required=True,
        help="comma-separated: penalty (the training prior) and sampling-time modes ("
        + ",".join(CONSTRAINT_MODE_CHOICES)
        + ")",
    )
    cc.add_argument("--law", default=None, help="comma-separated priors to enforce and report (default: the preset's)")
    cc.add_argument("--processes", default="vp,flow", help="comma-separated process families to train (vp, flow)")
    cc.add_argument(
        "--set", action="append", metavar="METHOD.KEY=VALUE", help="a method's setting, e.g. dps.scale=0.1 (repeatable)"
    )
    cc.add_argument("--out", default=None, help="results folder (default results/<experiment>-constraints)")
    cc.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    cc.add_argument("--resume", action="store_true", help="continue the runs of an earlier call (same settings)")
    cc.add_argument("--force", action="store_true", help="clear the runs of an earlier call and start over")
    cc.add_argument("--data", default=None, help="a data file to use instead of simulating (= data.path=FILE)")
    cc.add_argument("--split", default="test", choices=("val", "test"), help="val to choose settings, test to report")
    add_common(cc)
    cc.set_defaults(fn=_cmd_compare_constraints)

    sw = sub.add_parser("sweep", help="choose prior settings (λ, w(t), ...) on the validation split")
    add_experiment(sw)
    sw.add_argument(
        "--grid",
        action="append",
        required=True,
        help="key=v1,v2,... (repeatable; the grid is the product), e.g. --grid priors.0.weight=0.1,1,10",
    )
    add_config(sw)
    sw.add_argument("--out", default=None, help="sweep folder (default: results/sweep-<experiment>-<preset>)")
    sw.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    sw.add_argument("--arms", default=None, help="with-prior arms to run at each point (default: all)")
    sw.add_argument("--split", default="val", choices=("val", "test"), help="tune on val; test stays held out")
    sw.add_argument(
        "--max-worse",
        type=_finite_float,
        default=0.05,
        help="a point that makes any metric worse than no_prior by more than this fraction is not eligible",
    )
    add_data(sw)
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
    for name, verb in sub.choices.items():  # also after the verb: `physdiff train ... --quiet --threads 2`
        verb.formatter_class = _HelpFormatter
        verb.epilog = f"example:\n  {EXAMPLES[name]}" if name in EXAMPLES else None
        verb.add_argument(
            "--threads",
            default=argparse.SUPPRESS,
            help="torch intra-op CPU threads: a count or auto (default: auto; see 'physdiff --help')",
        )
        verb.add_argument(
            "--quiet",
            "-q",
            action="store_true",
            default=argparse.SUPPRESS,
            help="only warnings and errors (default: off)",
        )
        verb.add_argument(
            "--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="debug messages (default: off)"
        )
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
        key = e.args[0]  # a sentence is the message; a bare key says nothing alone ("error: 1")
        text = str(key) if isinstance(key, str) and " " in key.strip() else f"missing key {key!r}"
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
