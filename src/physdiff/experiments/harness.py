"""The one harness: train an arm, sample and evaluate it, reproduce a table — for any task.

``physdiff reproduce EXPERIMENT`` runs, for each seed and arm (``no_prior``, ``prior:<name>``): train a
denoiser (:func:`train_arm`), sample the evaluation split's conditions for every sub-task and evaluate
(:func:`sample_and_evaluate`), and writes a results folder::

    results.json  table.md  config.yaml  data/  plots/
    arms/<arm>/seed<k>/{config.yaml, scaling.json, checkpoint.pt, metrics.csv, samples_<subtask>.h5}

Everything task-specific is asked of the :class:`~physdiff.experiments.task.Task`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physdiff.config import apply_overrides, save_yaml, to_dict
from physdiff.data.hdf5 import content_sha256
from physdiff.diffusion import Denoiser, sample
from physdiff.evaluation.geotdm import draw_seed, group_draws
from physdiff.experiments import tables
from physdiff.experiments.config import ConstraintConfig, ExperimentConfig, SampleConfig, preset_config
from physdiff.experiments.task import Samples, Task, make_task
from physdiff.outputs import AppendHandler, record_outputs, remove_recorded, write_json
from physdiff.priors.aux_head import AuxHeadPrior, attach_aux_heads
from physdiff.priors.base import Prior, PriorNotApplicable, law_rms, total_prior_loss
from physdiff.priors.sampling import make_method
from physdiff.training.acceleration import accelerated
from physdiff.training.checkpoint import RECORDED_DATA_KEYS
from physdiff.training.distributed import DistInfo, all_gather_objects, barrier, main_first, resolve_device
from physdiff.training.lock import RunLock
from physdiff.training.metrics_log import log_figures, log_hparams, require_tensorboard, tensorboard_writer
from physdiff.training.trainer import TrainConfig, load_ema_weights, train

__all__ = [
    "Prepared",
    "RunFolderError",
    "check_run_folder",
    "clear_run_folder",
    "locked_run_folder",
    "record_run_outputs",
    "configure",
    "prepare",
    "train_arm",
    "load_arm",
    "sample_tensors",
    "sample_and_evaluate",
    "law_metrics",
    "evaluate_laws",
    "law_floor",
    "samples_name",
    "split_draws",
    "stack_draws",
    "draw_figures_and_report",
    "draw_run_figures",
    "compare_runs",
    "reproduce",
]

log = logging.getLogger("physdiff")
SPLITS = ("val", "test")
Constrained = tuple[ConstraintConfig, list[Prior]]


@dataclass
class Prepared:
    """A task with its data: the whole set, the training split, the evaluation split and its indices, the
    scaling (fit on the training split, or a run's stored one)."""

    task: Task
    data: Any
    train: Any
    evaluation: Any
    indices: np.ndarray
    scaling: Any
    split: str
    #: the sha256 of the data's arrays (:func:`physdiff.data.hdf5.content_sha256`), computed once at load
    digest: str = ""

    @property
    def cfg(self) -> ExperimentConfig:
        return self.task.cfg

    @property
    def data_path(self) -> str:
        return str(Path(self.data.path).resolve()) if getattr(self.data, "path", None) else ""


def configure(
    cfg: ExperimentConfig, overrides: Sequence[str] = (), seeds: Sequence[int] | None = None
) -> ExperimentConfig:
    """Apply ``key=value`` overrides and a seed list to a config (validated, nothing written). The ``generic``
    experiment takes the preset of the file's kind (:func:`generic_kind`)."""
    cfg = apply_overrides(generic_kind(cfg, overrides), list(overrides))
    keys = [o.split("=", 1)[0].strip() for o in overrides]
    if any(k.startswith("data.") and k not in RECORDED_DATA_KEYS for k in keys) and not any(
        k in RECORDED_DATA_KEYS for k in keys
    ):  # other data than the recorded: its recorded size and content do not describe it
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, file_bytes=None, content_sha256=None))
    if seeds is not None:
        cfg = apply_overrides(cfg, [f"seeds={list(seeds)}"])
    if cfg.train.tensorboard:
        require_tensorboard()
    return cfg


def generic_kind(cfg: ExperimentConfig, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """``generic`` on a data file (``data.path``, or its override): the particle preset for a particle file, the
    generic-fields preset for a field file (same preset size); any other config as it is."""
    if cfg.experiment != "generic":
        return cfg
    path = next((o.split("=", 1)[1] for o in reversed(list(overrides)) if o.startswith("data.path=")), cfg.data.path)
    if not path or not Path(path).is_file():
        return cfg
    from physdiff.experiments.task import task_for_file

    try:
        kind = task_for_file(path).kind
    except ValueError:
        return cfg  # not a data file: the task's load names the problem
    want = kind if kind in ("particles", "the-well") else "generic-fields"
    if cfg.task == want:
        return cfg
    log.info("note: %s is a %s file: the generic experiment runs the %s task", path, kind, want)
    return preset_config({"particles": "generic", "the-well": "the-well"}.get(want, want), cfg.preset)


def evaluate_laws(
    samples: str | Path, reference: str | Path, priors: Sequence[str], system: str | None = None
) -> dict[str, Any]:
    """``physdiff evaluate --prior SPEC``: ``law:<name>`` of each prior (a built-in name or ``module:Class``) on
    a samples file, per sample summarised as ``{"metrics": {...}, "floor": {...}}``, the floor on the reference
    rows the samples came from. The reference is read as the ``generic`` experiment reads it, a particle file as
    the system ``system``, else its own ``system`` attribute, else the samples file's."""
    import tempfile

    import h5py

    from physdiff.evaluation.statistics import summarize_samples
    from physdiff.experiments.config import PriorConfig

    with h5py.File(samples, "r") as f:
        recorded = f.attrs.get("system")
        subtask = str(f.attrs.get("task", "prediction"))
    over = [f"data.path={Path(reference).resolve()}"]
    cfg = generic_kind(preset_config("generic"), over)
    if cfg.task == "particles":  # the system: --system, else the reference's attribute, else the samples'
        with h5py.File(reference, "r") as f:
            stored = f.attrs.get("system")
        name = next((str(v.decode() if isinstance(v, bytes) else v) for v in (system, stored, recorded) if v), None)
        over += [f"data.system={name}"] if name else []
    cfg = configure(cfg, over)
    cfg.priors = [PriorConfig(name=p) for p in priors]
    if subtask in cfg.SUBTASKS:
        cfg.metrics = {k: subtask for k in cfg.metrics}
    with tempfile.TemporaryDirectory() as tmp:
        prep = prepare(cfg, tmp, progress=False)
    task = prep.task
    laws = task.law_priors(prep.train, prep.scaling, names=list(priors))
    missing = sorted(set(priors) - {p.name for p in laws})
    if missing:
        raise ValueError(f"--prior {missing}: no law R = 0 the {task.kind} task can state for {reference}")
    gen = task.read_samples(Path(samples))
    rows = prep.data.subset(np.asarray(gen["source_indices"], dtype=np.int64))
    per = law_metrics(task, laws, gen, rows, prep.scaling, subtask)
    return {"metrics": summarize_samples(per), "floor": law_floor(task, laws, rows, prep.scaling)}


def prepare(
    cfg: ExperimentConfig,
    cache_dir: str | Path,
    *,
    split: str = "test",
    progress: bool = True,
    scaling: Mapping[str, Any] | None = None,
    dist_info: DistInfo = DistInfo(),
) -> Prepared:
    """Load (simulating if needed) the data of ``cfg`` and split it; ``scaling``: a run's stored one. Under
    DDP rank 0 loads (and caches a simulation) first, the other ranks after it."""
    if split not in SPLITS:
        raise ValueError(f"evaluation split must be one of {SPLITS}, got {split!r}")
    task = make_task(cfg)
    recorded = cfg.data.file_bytes
    if cfg.data.path and recorded is not None and os.path.getsize(cfg.data.path) != recorded:
        raise ValueError(
            f"data file {cfg.data.path} changed since the run recorded it: {os.path.getsize(cfg.data.path)} bytes, "
            f"the run's config.yaml records {recorded} (data.file_bytes); use the run's own file or train anew"
        )
    with main_first(dist_info):
        data = task.load(Path(cache_dir), progress and dist_info.is_main)
    digest = content_sha256(data)
    if cfg.data.content_sha256 and digest != cfg.data.content_sha256:
        raise ValueError(
            f"data {cfg.data.path or 'cache'} changed since the run recorded it: its arrays' sha256 is "
            f"{digest[:12]}…, the run's config.yaml records {cfg.data.content_sha256[:12]}… (data.content_sha256); "
            "use the run's own data or train anew"
        )
    where = getattr(data, "path", None) or "the data"
    for name in ("train", split):
        if name not in data.splits or len(data.splits[name]) == 0:
            found = {k: len(v) for k, v in data.splits.items()}
            raise ValueError(f"{where}: the {name!r} split is missing or empty (splits found: {found})")
    train_set = data.subset(data.splits["train"])
    idx = np.asarray(data.splits[split][: cfg.sample.n_test], dtype=np.int64)
    fitted = task.scaling_from_dict(scaling) if scaling else task.fit_scaling(train_set)
    return Prepared(task, data, train_set, data.subset(idx), idx, fitted, split, digest)


def _run_config(prep: Prepared, arm: str, seed: int) -> dict[str, Any]:
    """A run's ``config.yaml``: the experiment config with the data file it read, its arm and seed."""
    cfg = to_dict(prep.cfg)
    if prep.cfg.data.path:  # a user's file: record what it holds, not the preset's simulation settings
        cfg["data"] |= prep.task.describe(prep.data)
    cfg["data"]["path"] = prep.data_path or cfg["data"]["path"]
    # what the run was trained on: the file's size and the sha256 of the arrays used (checked on resume/sample)
    cfg["data"]["file_bytes"] = os.path.getsize(prep.data_path) if prep.data_path else None
    cfg["data"]["content_sha256"] = prep.digest or None
    return {**cfg, "arm": arm, "seed": seed}


RECORDED = RECORDED_DATA_KEYS  # what a run records about its data (training.checkpoint)


class RunFolderError(ValueError):
    """A run folder holds another run (or one of another configuration)."""


#: the files a run writes in its folder (recorded in its manifest, :data:`physdiff.outputs.MANIFEST`)
RUN_FILES = (
    "checkpoint.pt",
    "checkpoint.prev.pt",
    "metrics.csv",
    "validation.csv",
    "scaling.json",
    "config.yaml",
    "run.log",
    "checkpoint.pt.corrupt",
)
#: besides those, in a folder written before manifests: exact names and physdiff's own name patterns
LEGACY_PATTERNS = ("samples_*.h5", "tb/events.out.tfevents.*")


def clear_run_folder(run_dir: Path) -> list[Path]:
    """Remove a previous run's outputs from ``run_dir`` (``--force``; hold its lock): exactly the files its
    manifest records (in a folder without one, physdiff's own file names), nothing else — not the data
    cache ``data/``, not a user's ``checkpoints_archive/`` or notes, not other files in ``tb/``."""
    legacy = list(RUN_FILES) + [str(p.relative_to(run_dir)) for pat in LEGACY_PATTERNS for p in run_dir.glob(pat)]
    return remove_recorded(run_dir, legacy)


def record_run_outputs(run_dir: Path, names: Sequence[str | Path] = RUN_FILES) -> None:
    """Add ``names`` (files physdiff writes in ``run_dir``) to the run folder's manifest."""
    record_outputs(run_dir, names)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint (or the previous one kept beside it)."""
    from physdiff.training.checkpoint import previous_path

    ckpt = run_dir / "checkpoint.pt"
    return ckpt.is_file() or previous_path(ckpt).is_file()


def check_run_folder(run_dir: Path, config: Mapping[str, Any], *, resume: bool, force: bool) -> None:
    """Refuse, before anything is written, to train into a folder that holds a run unless resuming it
    (with the same model, data and diffusion settings) or ``force`` (which clears it)."""
    from physdiff.training.checkpoint import check_config_matches, load_latest_checkpoint

    ckpt = run_dir / "checkpoint.pt"
    if not has_checkpoint(run_dir):
        return
    if resume:
        state, used = load_latest_checkpoint(ckpt)
        saved = state.get("config", {})  # the arm and seed too: resuming another arm's run is refused
        check_config_matches(
            used,
            saved,
            dict(config),
            ("experiment", "model", "data", "diffusion", *(k for k in ("arm", "seed") if k in saved)),
            optional=RECORDED,
        )
        return
    if force:
        clear_run_folder(run_dir)
        return
    raise RunFolderError(
        f"{run_dir} holds a trained run ({ckpt.name}); pass --resume to continue it or --force to start over "
        "(which clears the folder)"
    )


@contextlib.contextmanager
def locked_run_folder(run_dir: Path, config: Mapping[str, Any], *, resume: bool, force: bool, enabled: bool = True):
    """Lock, then check, then clear: hold ``run_dir``'s lock for the block, and only under it check the
    folder (:func:`check_run_folder`) and, with ``force``, clear it. A live run's folder is refused
    (:class:`RunLockedError`) before anything in it is read for deletion or written."""
    with RunLock(run_dir) if enabled else contextlib.nullcontext():
        if enabled:
            check_run_folder(run_dir, config, resume=resume, force=force)
        yield


@contextlib.contextmanager
def log_to(path: Path, enabled: bool = True):
    """Copy the ``physdiff`` logger's messages (INFO and up) into ``path`` (a run's ``run.log``) for the block."""
    if not enabled:
        yield
        return
    handler = AppendHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    log.addHandler(handler)
    previous = log.level
    if previous == logging.NOTSET or previous > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(previous)


def validation_tensors(prep: Prepared, max_samples: int = 256) -> dict[str, Tensor] | None:
    """Model tensors of the first validation samples (the trainer's validation loss), or None without a split."""
    idx = prep.data.splits.get("val")
    if idx is None or len(idx) == 0:
        return None
    data = prep.data.subset(np.asarray(idx[:max_samples], dtype=np.int64))
    return prep.task.to_tensors(data, prep.scaling, prep.cfg.subtasks[0])


def train_arm(
    prep: Prepared,
    arm: str,
    seed: int,
    run_dir: Path,
    *,
    device: torch.device = torch.device("cpu"),
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    dist_info: DistInfo = DistInfo(),
) -> Denoiser:
    """Train one arm with one seed in ``run_dir``; returns the denoiser with its EMA weights loaded.

    A folder that holds a run is refused unless ``resume`` (same settings) or ``force`` (cleared first);
    nothing is written before the priors and the folder are checked."""
    task, cfg = prep.task, prep.cfg
    specs = cfg.arms()
    if arm not in specs:
        raise ValueError(f"unknown arm {arm!r}; this experiment has {sorted(specs)}")
    tensors = task.to_tensors(prep.train, prep.scaling, cfg.subtasks[0])
    # the network is initialised first, from the seed alone, so it is the same in every arm
    torch.manual_seed(seed)
    den = task.build_denoiser(prep.scaling, tensors)
    priors = task.build_priors(specs[arm], prep.train, prep.scaling)
    heads = [p for p in priors if isinstance(p, AuxHeadPrior)]
    if heads:  # the heads become part of den.net: trained, EMA-averaged and checkpointed with it
        attach_aux_heads(den, heads)
    extra = None
    if priors:

        def extra(loss_out, batch: dict[str, Tensor]):
            return total_prior_loss(priors, loss_out, task.context(batch))

    tcfg = TrainConfig(**{**to_dict(cfg.train), "seed": seed})
    run_config = _run_config(prep, arm, seed)
    # one writer per run folder: lock, then check (and clear with force), then write
    with locked_run_folder(run_dir, run_config, resume=resume, force=force, enabled=dist_info.is_main):
        if resume and not has_checkpoint(run_dir):  # a fresh point of a resumed table or sweep: nothing to warn
            if progress:
                log.info("[%s | seed %d] no checkpoint in %s yet: training from step 0", arm, seed, run_dir)
            resume = False
        if progress:  # after the folder and its lock are ours: no line before a refusal
            n = len(tensors["x0"])
            log.info("[%s | seed %d] training %d steps on %d samples → %s", arm, seed, tcfg.steps, n, run_dir)
        tb_before = _tb_files(run_dir)
        if dist_info.is_main:
            record_run_outputs(run_dir)
            write_json(run_dir / "scaling.json", prep.scaling.to_dict(), indent=None)
            save_yaml(run_config, run_dir / "config.yaml")
        with log_to(run_dir / "run.log", dist_info.is_main):
            if progress:  # console and run.log: where it runs, and whether torchrun shares it
                ddp = " (torchrun: DistributedDataParallel over the ranks)" if dist_info.enabled else ""
                log.info("[%s | seed %d] device %s, world size %d%s", arm, seed, device, dist_info.world_size, ddp)
            train(
                den,
                tensors,
                tcfg,
                run_dir,
                config_dict=run_config,
                extra_loss=extra,
                augment=task.augment(),
                return_hidden=bool(heads),
                resume=resume,
                device=device,
                progress=progress,
                dist_info=dist_info,
                val_data=validation_tensors(prep),
            )
        if dist_info.is_main and cfg.train.tensorboard:
            record_run_outputs(run_dir, sorted(_tb_files(run_dir) - tb_before))
    barrier(dist_info)  # rank 0 has written the final checkpoint
    load_ema_weights(den, run_dir / "checkpoint.pt", device=device)
    return den.eval()


def _tb_files(run_dir: Path) -> set[str]:
    """TensorBoard's event files in ``run_dir/tb`` (those a run adds are recorded in its manifest)."""
    return {str(p.relative_to(run_dir)) for p in run_dir.glob("tb/events.out.tfevents.*") if p.is_file()}


def load_arm(prep: Prepared, run_dir: Path, device: torch.device = torch.device("cpu")) -> Denoiser:
    """The EMA denoiser of a trained run folder (its network, without auxiliary heads)."""
    example = prep.task.to_tensors(prep.evaluation, prep.scaling, prep.cfg.subtasks[0])
    den = prep.task.build_denoiser(prep.scaling, example)
    load_ema_weights(den, Path(run_dir) / "checkpoint.pt", device=device)
    return den.to(device).eval()


@torch.no_grad()
def sample_tensors(
    den: Denoiser,
    tensors: Mapping[str, Tensor],
    cfg: SampleConfig,
    seed: int,
    *,
    device: torch.device = torch.device("cpu"),
    progress: bool = False,
    constraint: Constrained | None = None,
    dist_info: DistInfo = DistInfo(),
) -> Tensor:
    """Samples shaped like ``tensors['x0']``: the known entries (``mask``) and the context tensors condition
    them; ``constraint``: a sampling-time constraint and its priors applied to x̂0.

    Batches of ``cfg.batch_size`` are seeded by (``seed``, batch index), so the samples do not depend on how
    the batches are shared out: under DDP rank r samples batches r, r + W, … and every rank receives all of
    them, in order.
    """
    dtype = getattr(torch, cfg.dtype)  # sample.dtype: the state, the conditions and (a copy of) the network
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    if next(den.parameters()).dtype != dtype:
        den = copy.deepcopy(den).to(dtype)
    den = accelerated(den, compile=cfg.compile)  # sample.compile
    x0, mask_all = tensors["x0"], tensors["mask"]
    conditional = bool(mask_all.any())
    ctx_all = {k: v for k, v in tensors.items() if k not in ("x0", "mask")}
    starts = list(range(0, x0.shape[0], cfg.batch_size))
    mine = {}
    for b in range(dist_info.rank, len(starts), dist_info.world_size):
        sl = slice(starts[b], starts[b] + cfg.batch_size)
        g = torch.Generator(device=device).manual_seed((seed * 1_000_003 + b) % (2**63 - 1))
        ctx = {k: v[sl].to(device) for k, v in ctx_all.items()}
        known = x0[sl].to(device)
        cond = {"known": known, "mask": mask_all[sl].to(device)} if conditional else {}
        hook = loop = None
        if constraint is not None:  # a method correcting x̂0 (hook) or driving the loop (physdiff.priors.sampling)
            c, priors = constraint
            method = make_method(priors, mask=cond.get("mask"), context=ctx, **c.hook_options())
            method.check_process(den.schedule.kind)
            hook, loop = method.x0_hook(), method.loop
        mine[b] = sample(
            den,
            known.shape,
            sampler=cfg.sampler,
            steps=cfg.steps,
            eta=cfg.eta,
            generator=g,
            x0_hook=hook,
            loop=loop,
            progress=progress,
            dtype=known.dtype,
            device=device,
            **cond,
            **ctx,
        ).cpu()
    batches = {b: x for part in all_gather_objects(dist_info, mine) for b, x in part.items()}
    return torch.cat([batches[b] for b in range(len(starts))])


def samples_name(subtask: str, constraint: ConstraintConfig | None = None) -> str:
    """``samples_<subtask>.h5``, or ``samples_<subtask>_<mode>_<priors>.h5`` with a sampling-time constraint."""
    suffix = "" if constraint is None else "_" + constraint.label.replace(":", "_")
    return f"samples_{subtask}{suffix}.h5"


def sample_and_evaluate(
    prep: Prepared,
    den: Denoiser,
    seed: int,
    run_dir: Path | None,
    *,
    device: torch.device = torch.device("cpu"),
    progress: bool = False,
    constraint: Constrained | None = None,
    dist_info: DistInfo = DistInfo(),
    laws: Sequence[Prior] = (),
) -> tuple[dict[str, Samples], dict[str, np.ndarray]]:
    """Sample every sub-task on the evaluation split, write the samples to ``run_dir`` (unless ``None``; rank 0
    under DDP, where the ranks share the batches) and return them with the per-sample metrics, and ``law:<name>``
    of every prior in ``laws`` on the samples (:func:`law_metrics`)."""
    task, cfg = prep.task, prep.cfg
    samples: dict[str, Samples] = {}
    metrics: dict[str, np.ndarray] = {}
    for subtask in cfg.subtasks:  # in sample.dtype from the data on (float64 data are not rounded first)
        tensors = task.to_tensors(prep.evaluation, prep.scaling, subtask, dtype=getattr(torch, cfg.sample.dtype))
        if progress and dist_info.is_main:  # one line per sub-task; the per-batch bars are for terminals only
            log.info(
                "sampling (%s, %d steps): %d %s conditions%s",
                cfg.sample.sampler,
                cfg.sample.steps,
                len(prep.indices),
                subtask,
                "" if constraint is None else f", {constraint[0].label}",
            )
        x = sample_tensors(
            den, tensors, cfg.sample, seed, device=device, progress=progress, constraint=constraint, dist_info=dist_info
        )
        out = task.from_tensors(x, prep.evaluation, prep.scaling)
        samples[subtask] = out
        # metrics over several draws per condition (GeoTDM): draw j > 0 seeded apart from the seed's own
        draws = [
            task.from_tensors(
                sample_tensors(
                    den,
                    tensors,
                    cfg.sample,
                    draw_seed(seed, j),
                    device=device,
                    constraint=constraint,
                    dist_info=dist_info,
                ),
                prep.evaluation,
                prep.scaling,
            )
            for j in range(1, task.draws_per_condition(subtask))
        ]
        if run_dir is not None and dist_info.is_main:  # every draw, rows draw-major (source_indices repeat)
            name = samples_name(subtask, None if constraint is None else constraint[0])
            record_run_outputs(run_dir, [name])
            rows, k = np.arange(len(prep.indices)), 1 + len(draws)
            task.write_samples(
                run_dir / name,
                stack_draws([out, *draws]),
                prep.evaluation.subset(np.tile(rows, k)) if draws else prep.evaluation,
                np.tile(prep.indices, k),
                prep.split,
                subtask,
            )
        if draws:
            metrics |= task.evaluate(out, prep.evaluation, subtask, draws=draws)
        else:
            metrics |= task.evaluate(out, prep.evaluation, subtask)
        if subtask == cfg.subtasks[0]:
            metrics |= law_metrics(task, laws, out, prep.evaluation, prep.scaling, subtask)
    return samples, metrics


def law_metrics(
    task: Task, laws: Sequence[Prior], samples: Samples, reference: Any, scaling: Any, subtask: str
) -> dict[str, np.ndarray]:
    """``law:<name>``: the per-sample RMS of each law's residual R on ``samples`` (physical units, in float64),
    the conditions and constants of ``reference``; with ``samples=None``, on the reference itself (the floor)."""
    if not laws:
        return {}
    data = reference if samples is None else task.samples_as_data(samples, reference)
    t = task.to_tensors(data, task.law_scaling(scaling), subtask, dtype=torch.float64)
    ctx = task.context(t)
    return {f"law:{p.name}": law_rms(p, t["x0"], **ctx).cpu().numpy() for p in laws}  # type: ignore[arg-type]


def law_floor(task: Task, laws: Sequence[Prior], reference: Any, scaling: Any) -> dict[str, float]:
    """The ground-truth floor of every ``law:<name>``: the mean over the reference of its per-sample RMS."""
    per = law_metrics(task, laws, None, reference, scaling, task.cfg.subtasks[0])  # type: ignore[arg-type]
    return {k: float(np.mean(v)) for k, v in per.items()}


def stack_draws(draws: Sequence[Samples]) -> Samples:
    """Several draws of the same conditions as one set of samples: rows draw-major (draw 0's N rows first),
    the per-sample arrays concatenated."""
    if len(draws) == 1:
        return draws[0]
    n = len(next(iter(draws[0].values())))
    return {
        key: np.concatenate([d[key] for d in draws]) if np.ndim(value) and len(value) == n else value
        for key, value in draws[0].items()
    }


def split_draws(samples: Samples) -> tuple[list[Samples], np.ndarray]:
    """The inverse of :func:`stack_draws` for samples read back (``source_indices`` repeat once per draw):
    the draws and the conditions' ``source_indices`` (one draw: the samples themselves)."""
    idx = np.asarray(samples["source_indices"], dtype=np.int64)
    if np.unique(idx).size == idx.size:
        return [samples], idx
    order, conditions = group_draws(idx)
    draws = [
        {k: (np.asarray(v)[o] if np.ndim(v) and len(v) == idx.size else v) for k, v in samples.items()} for o in order
    ]
    return draws, conditions


def draw_figures_and_report(
    task: Task,
    out: Path,
    results: Mapping[str, Any],
    reference: Any,
    *,
    max_samples: int = 64,
    command: str | None = None,
) -> list[Path]:
    """Figures of a results folder (every seed's samples read back from the run folders, the first
    ``max_samples`` of each; the sampling-constraint rows; the training logs) and its ``report.html``;
    returns the written files. ``reference``: the data set the samples' ``source_indices`` point into."""
    from physdiff.evaluation.plots import read_training_logs
    from physdiff.evaluation.report import write_report

    arms, seeds = list(results["arms"]), list(results["seeds"])
    subtasks = list(dict.fromkeys(results.get("metric_tasks", {}).values())) or ["prediction"]
    labels = {row: row.split(" + ", 1) for row in results.get("sampling_constraints", {})}

    runs = results.get("runs", {})  # a comparison of run folders (compare_runs) records where they are

    def read(arm: str, seed: int, label: str | None = None) -> dict[str, Samples]:
        folder = (out / runs[arm][str(seed)]).resolve() if runs else tables.run_dir(out, arm, seed)
        got = {}
        for subtask in subtasks:
            suffix = "" if label is None else "_" + label.replace(":", "_")
            path = folder / f"samples_{subtask}{suffix}.h5"
            if path.is_file():
                got[subtask] = task.read_samples(path, max_samples)
        return got

    own = {arm: list(results.get("arm_seeds", {}).get(arm, seeds)) for arm in arms}  # compared runs: their seeds
    per_seed = {arm: {seed: read(arm, seed) for seed in own[arm]} for arm in arms}
    constrained = {row: {seed: read(arm, seed, label) for seed in own[arm]} for row, (arm, label) in labels.items()}
    first = {arm: per[own[arm][0]] for arm, per in per_seed.items()}
    sources = [s["source_indices"] for per in first.values() for s in per.values()]
    n = min((len(i) for i in sources), default=0)
    ref = reference.subset(np.asarray(sources[0][:n], dtype=np.int64)) if n else reference
    where = (lambda _, arm, seed: (out / runs[arm][str(seed)]).resolve()) if runs else tables.run_dir
    logs = {}
    for arm in arms:
        logs |= read_training_logs(out, [arm], own[arm], run_dir=where)
    figures = task.plot(out / "plots", ref, first, per_seed=per_seed, constraints=constrained, training_logs=logs)
    report = write_report(
        out,
        dict(results),
        table_md=(out / "table.md").read_text() if (out / "table.md").is_file() else "",
        config_yaml=(out / "config.yaml").read_text() if (out / "config.yaml").is_file() else "",
        figures=[f for f in figures if f.suffix == ".png"],
        command=command,
    )
    return [*figures, report]


def draw_run_figures(run_dir: Path, *, max_samples: int = 64) -> list[Path]:
    """Figures of one run folder (``physdiff train`` + ``sample``): its samples files against the data they
    were sampled from, and its training curves, in ``run_dir/plots``."""
    from physdiff.config import from_dict, load_yaml_dict
    from physdiff.evaluation.plots import read_training_logs

    raw = load_yaml_dict(run_dir / "config.yaml")
    arm, seed = str(raw.pop("arm", "no_prior")), int(raw.pop("seed", 0))
    cfg = from_dict(ExperimentConfig, raw, where=str(run_dir / "config.yaml"))
    task = make_task(cfg)
    data = task.load(run_dir / "data", progress=False)
    generated: dict[str, Samples] = {}
    for subtask in cfg.subtasks:
        path = run_dir / samples_name(subtask)
        if path.is_file():
            generated[subtask] = task.read_samples(path, max_samples)
    if not generated:
        raise FileNotFoundError(f"{run_dir}: no samples files to plot; run 'physdiff sample {run_dir}' first")
    idx = next(iter(generated.values()))["source_indices"]
    logs = read_training_logs(run_dir.parent, [arm], [seed], run_dir=lambda *_: run_dir)
    return task.plot(
        run_dir / "plots", data.subset(idx), {arm: generated}, per_seed={arm: {seed: generated}}, training_logs=logs
    )


def _read_run_config(run_dir: Path) -> tuple[ExperimentConfig, str, int]:
    """A run folder's experiment config, arm and seed (from its ``config.yaml``)."""
    from physdiff.config import from_dict, load_yaml_dict

    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder of 'physdiff train' (no config.yaml)")
    raw = load_yaml_dict(run_dir / "config.yaml")
    arm, seed = str(raw.pop("arm", "no_prior")), int(raw.pop("seed", 0))
    return from_dict(ExperimentConfig, raw, where=str(run_dir / "config.yaml")), arm, seed


def _recorded_split(path: Path) -> str | None:
    """The split a samples file was generated on (its ``reference_split`` attribute), if recorded."""
    import h5py

    with h5py.File(path, "r") as f:
        value = f.attrs.get("reference_split")
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def _training_time(run_dirs: Sequence[Path]) -> float | None:
    """The summed training seconds of run folders (the last ``elapsed_s`` of each ``metrics.csv``); ``None``
    when a run has none."""
    import csv

    total = 0.0
    for d in run_dirs:
        try:
            with open(Path(d) / "metrics.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            total += float(rows[-1]["elapsed_s"])
        except (OSError, IndexError, KeyError, TypeError, ValueError):
            return None
    return round(total, 1)


def compare_runs(
    run_dirs: Sequence[str | Path], out: str | Path, *, command: str | None = None, max_samples: int = 64
) -> dict[str, Any]:
    """A results folder built from run folders (``physdiff train`` + ``physdiff sample``): each run's samples
    files evaluated against the rows of the data they were sampled from, grouped by arm with the runs' seeds
    as seeds; ``results.json`` (with ``"runs"``: each run folder relative to ``out``), ``table.md`` with the
    paired intervals (when the arms share seeds and conditions), the figures and ``report.html``.

    The runs must be of one experiment on one data file, sampled on the same split."""
    out = Path(out)
    dirs = [Path(d).resolve() for d in run_dirs]
    if not dirs:
        raise ValueError("compare: give at least one run folder")
    configs = {d: _read_run_config(d) for d in dirs}
    cfg0 = configs[dirs[0]][0]
    grouped: dict[str, dict[int, Path]] = {}
    for d, (cfg, arm, seed) in configs.items():
        if cfg.experiment != cfg0.experiment or cfg.data.path != cfg0.data.path:
            raise ValueError(
                f"compare: {d} is a {cfg.experiment!r} run on {cfg.data.path or 'simulated data'} but {dirs[0]} is "
                f"a {cfg0.experiment!r} run on {cfg0.data.path or 'simulated data'}; compare runs of one "
                "experiment on one data file"
            )
        if seed in grouped.setdefault(arm, {}):
            raise ValueError(f"compare: {grouped[arm][seed]} and {d} are both arm {arm!r}, seed {seed}")
        grouped[arm][seed] = d
    task = make_task(cfg0)
    data = task.load(dirs[0] / "data", progress=False)
    per_arm: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    sources: dict[str, np.ndarray] = {}
    splits = set()
    for arm, by_seed in grouped.items():
        for seed, d in sorted(by_seed.items()):
            metrics: dict[str, np.ndarray] = {}
            for subtask in cfg0.subtasks:
                path = d / samples_name(subtask)
                if not path.is_file():
                    continue
                draws, idx = split_draws(task.read_samples(path))  # several draws per condition (GeoTDM)
                samples = draws[0]
                first = sources.setdefault(subtask, idx)
                if not np.array_equal(first, idx):
                    raise ValueError(
                        f"compare: {path} was sampled from other conditions than the first run's {subtask} samples "
                        f"(source_indices differ); sample every run with the same --split and --n"
                    )
                splits.add(_recorded_split(path))
                if len(draws) > 1:
                    metrics |= task.evaluate(samples, data.subset(idx), subtask, draws=draws[1:])
                else:
                    metrics |= task.evaluate(samples, data.subset(idx), subtask)
            if not metrics:
                raise FileNotFoundError(f"{d}: no samples files to compare; run 'physdiff sample {d}' first")
            per_arm.setdefault(arm, {})[seed] = metrics
    arm_metrics = {a: tables.aggregate(m) for a, m in per_arm.items()}
    seed_sets = {tuple(sorted(m)) for m in per_arm.values()}
    base = "no_prior" if "no_prior" in arm_metrics else next(iter(arm_metrics))
    results = {
        "experiment": cfg0.experiment,
        "split": "+".join(sorted(s for s in splits if s)) or "unknown",
        "preset": cfg0.preset,
        "seeds": sorted({s for m in per_arm.values() for s in m}),
        "metric_tasks": {k: v for k, v in cfg0.metrics.items() if any(k in m for m in arm_metrics.values())},
        "arms": arm_metrics,
        # paired over seeds only when every arm has the same seeds (the same conditions are checked above)
        "paired": tables.paired(arm_metrics, base) if len(seed_sets) == 1 else {},
        "floor": task.floor(data.subset(next(iter(sources.values())))),
        "sampling_constraints": {},
        "sampling_constraints_paired": {},
        "data": str(Path(data.path).resolve()) if getattr(data, "path", None) else "",
        "runs": {a: {str(s): os.path.relpath(d, out.resolve()) for s, d in m.items()} for a, m in grouped.items()},
        "arm_seeds": {a: sorted(m) for a, m in per_arm.items()},
        "wall_time_s": _training_time(dirs),
        "wall_time_note": "the compared runs' training time, from their metrics.csv",
        "command": command,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg0, out / "config.yaml")  # the first run's config: 'physdiff plot OUT' redraws from it
    tables.write_results(out, results, tables.markdown_table(results, tables.table_keys(results), note=task.table_note))
    draw_figures_and_report(task, out, results, data, max_samples=max_samples, command=command)
    return results


def reproduce(
    experiment: str,
    preset: str = "quick",
    out: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    arms: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    split: str = "test",
    config: ExperimentConfig | None = None,
    dist_info: DistInfo = DistInfo(),
    command: str | None = None,
) -> dict[str, Any]:
    """Run an experiment's table (arms × seeds) and write its results folder; returns ``results.json``'s
    content. ``config``: a config to start from instead of the preset. Everything is validated (config,
    priors, constraints, run folders) before anything is written; a folder holding runs is refused unless
    ``resume`` or ``force``. Under torchrun (``dist_info``) every arm trains with DDP and the ranks share the
    sampling; rank 0 writes."""
    cfg = configure(config or preset_config(experiment, preset), overrides, seeds).with_arms(arms)
    out = Path(out or f"results/{experiment}-{cfg.preset}")
    dev = resolve_device(device, dist_info.local_rank)
    main = dist_info.is_main
    progress = progress and main
    prep = prepare(cfg, Path(cache_dir or out / "data"), split=split, progress=progress, dist_info=dist_info)
    task = prep.task
    arm_specs = tables.select_arms(cfg.arms(), arms)
    if not task.supports_priors(prep.data):
        log.warning("note: %s cannot evaluate the %s priors; only the no_prior arm runs", prep.data_path, experiment)
        arm_specs = {"no_prior": []}
    refused: dict[str, str] = {}
    for arm, specs in list(arm_specs.items()):  # a bad prior (name, system, variant, sign/scale) fails before training
        try:
            task.build_priors(specs, prep.train, prep.scaling)
        except PriorNotApplicable as e:  # the data do not obey its law: this arm alone is left out
            log.warning("warning: arm %s is left out: %s", arm, e)
            refused[arm] = str(e)
            del arm_specs[arm]
    if not arm_specs:
        raise ValueError(f"no arm left to run: {'; '.join(refused.values())}")
    constraints = task.build_constraints(prep.train, prep.scaling)
    used = [p.name for specs in arm_specs.values() for p in specs] + [n for c, _ in constraints for n in c.priors]
    laws = task.law_priors(prep.train, prep.scaling, names=used)
    task.build_denoiser(prep.scaling, task.to_tensors(prep.evaluation, prep.scaling, cfg.subtasks[0]))  # model vs data
    if main:
        for arm in arm_specs:  # every run folder is checked before the first is trained
            for seed in cfg.seeds:
                run_dir = tables.run_dir(out, arm, seed)
                if run_dir.is_dir():  # lock, then check (and clear with force)
                    with locked_run_folder(run_dir, _run_config(prep, arm, seed), resume=resume, force=force):
                        pass
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
    barrier(dist_info)  # folders checked (and cleared with force) once, by rank 0
    constrained: dict[str, dict[int, dict[str, np.ndarray]]] = {}  # "<arm> + <mode>:<priors>" → seed → metrics

    def run_one(arm: str, seed: int, run_dir: Path):
        den = train_arm(
            prep, arm, seed, run_dir, device=dev, resume=resume, force=False, progress=progress, dist_info=dist_info
        )
        kw = {"device": dev, "progress": progress, "dist_info": dist_info, "laws": laws}
        samples, metrics = sample_and_evaluate(prep, den, seed, run_dir, **kw)
        if cfg.train.tensorboard and main:  # the sample metrics next to the training and validation losses
            before = _tb_files(run_dir)
            with contextlib.closing(tensorboard_writer(run_dir)) as tb:
                means = {k: float(np.mean(v)) for k, v in metrics.items()}
                for k, v in means.items():
                    tb.add_scalar(f"sample/{k}", v, cfg.train.steps)
                hparams = {"arm": arm, "seed": seed, "steps": cfg.train.steps, "lr": cfg.train.lr}
                log_hparams(tb, hparams | {"sampler": cfg.sample.sampler, "sample_steps": cfg.sample.steps}, means)
            record_run_outputs(run_dir, sorted(_tb_files(run_dir) - before))
        for c in constraints:  # beyond the paper: the same model, sampled with a sampling-time constraint
            _, m_c = sample_and_evaluate(prep, den, seed, run_dir, constraint=c, **kw)
            constrained.setdefault(f"{arm} + {c[0].label}", {})[seed] = m_c
        return metrics, samples

    arm_metrics, generated, wall = tables.run_arms(arm_specs, cfg.seeds, out, run_one)
    rows = {row: tables.aggregate(m) for row, m in constrained.items()}
    results = {
        "experiment": cfg.experiment,
        "split": split,
        "preset": cfg.preset,
        "seeds": list(cfg.seeds),
        "metric_tasks": dict(cfg.metrics),
        "arms": arm_metrics,
        "paired": tables.paired(arm_metrics),
        "floor": task.floor(prep.evaluation) | law_floor(task, laws, prep.evaluation, prep.scaling),
        "refused": refused,
        # beyond the paper, kept apart from the paper's arms: each arm's model sampled with a constraint
        "sampling_constraints": rows,
        "sampling_constraints_paired": tables.paired_constraints(rows, arm_metrics),
        "data": prep.data_path,
        "wall_time_s": wall,
        "device": str(dev),
        "world_size": dist_info.world_size,
        "command": command,
    }
    if not main:
        return results
    tables.write_results(out, results, tables.markdown_table(results, tables.table_keys(results), note=task.table_note))
    try:
        written = draw_figures_and_report(task, out, results, prep.data, command=command)
        if cfg.train.tensorboard:  # the figures beside the runs' logs (tensorboard --logdir <results folder>)
            with contextlib.closing(tensorboard_writer(out)) as tb:
                log_figures(tb, written, cfg.train.steps)
    except Exception as e:  # noqa: BLE001 - a plotting failure must not lose the results
        log.warning("warning: the figures or the report failed: %s: %s", type(e).__name__, e)
    return results
