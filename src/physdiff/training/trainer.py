"""A thin training loop: AdamW, warm-up, gradient clipping, EMA, CSV logs, atomic checkpoints, resume.

Randomness is a pure function of (seed, step): the batch indices, the diffusion times and the noise
of step k are drawn from a generator seeded with (seed, k) for the *global* batch, and each DDP rank
takes its slice. Hence ``--resume`` continues bit-for-bit, and N ranks see exactly the global batch
one process would see.

Interrupts keep that property. ``completed`` counts the updates that have finished (optimiser step and
EMA update, done with Ctrl-C deferred, so they happen together or not at all); a checkpoint labelled k
holds the model, EMA and optimiser after exactly k updates. On Ctrl-C the state at ``completed`` is saved
(unless it is already on disk) and ``KeyboardInterrupt`` is re-raised; checkpoint writes defer Ctrl-C
until their atomic rename, so a second Ctrl-C cannot cut one in half. After SIGKILL, the newest complete
checkpoint is resumed and stale temporary files and the log rows after it are discarded.

The run folder is locked for the whole training (:class:`~physdiff.training.lock.RunLock`, rank 0 only).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from physdiff.config import bounded, one_of
from physdiff.diffusion.objective import OBJECTIVES, LossOutput, diffusion_loss, sample_time
from physdiff.diffusion.parametrisation import Denoiser
from physdiff.outputs import record_outputs
from physdiff.training.acceleration import PRECISIONS, accelerated
from physdiff.training.checkpoint import (
    RECORDED_DATA_KEYS,
    CheckpointError,
    check_config_matches,
    load_checkpoint,
    load_latest_checkpoint,
    previous_path,
    promote_previous,
    remove_stale_temp_files,
    save_checkpoint,
)
from physdiff.training.distributed import DistInfo, all_ranks_agree, all_reduce_mean
from physdiff.training.ema import EMA
from physdiff.training.errors import RunLockedError
from physdiff.training.interrupts import defer_sigint
from physdiff.training.lock import RunLock
from physdiff.training.metrics_log import MetricsLog

__all__ = ["TrainConfig", "train", "TrainState", "load_ema_weights"]

# extra loss terms: f(loss_output, batch) -> (scalar tensor, {name: float})
ExtraLoss = Callable[[LossOutput, dict[str, Tensor]], tuple[Tensor, dict[str, float]]]
Augment = Callable[[dict[str, Tensor], torch.Generator], dict[str, Tensor]]


@dataclass
class TrainConfig:
    """Training settings; each numeric field declares its valid range (checked when a config is read)."""

    steps: int = field(default=1000, metadata=bounded(ge=1))
    batch_size: int = field(default=64, metadata=bounded(ge=1))
    lr: float = field(default=1e-3, metadata=bounded(gt=0, le=1))  # Adam: a step of ~lr per coordinate
    weight_decay: float = field(default=0.0, metadata=bounded(ge=0))
    warmup: int = field(default=100, metadata=bounded(ge=0))
    grad_clip: float = field(default=1.0, metadata=bounded(gt=0))
    ema_decay: float = field(default=0.999, metadata=bounded(ge=0, lt=1))
    objective: str = field(default="eps", metadata=one_of(OBJECTIVES))
    log_every: int = field(default=25, metadata=bounded(ge=1))
    checkpoint_every: int = field(default=500, metadata=bounded(ge=1))
    seed: int = field(default=0, metadata=bounded(ge=0))
    tensorboard: bool = False
    # torch.compile of the denoiser network for the training forward/backward (off by default: on a CPU the
    # compilation takes tens of seconds; docs/benchmarks.md has the break-even steps)
    compile: bool = False
    # the network's forward in fp32 or under bf16 autocast; EMA, loss reduction and priors stay in fp32
    precision: str = field(default="fp32", metadata=one_of(PRECISIONS))


@dataclass
class TrainState:
    step: int
    losses: list[float]


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed((seed * 1_000_003 + step) % (2**63 - 1))
    return g


def _batch_indices(n: int, batch: int, seed: int, step: int) -> Tensor:
    """Sampling without replacement within epochs: a seeded permutation per epoch."""
    per_epoch = max(n // batch, 1)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=step_generator(seed + 7919, epoch, torch.device("cpu")))
    if n >= batch:
        return perm[pos * batch : (pos + 1) * batch]
    return perm[torch.arange(batch) % n]


@dataclass
class _Job:
    """What a run trains and how; nothing here changes during training."""

    denoiser: Denoiser
    net: Denoiser  # the same network, wrapped in DistributedDataParallel under DDP
    data: dict[str, Tensor]
    cfg: TrainConfig
    extra_loss: ExtraLoss | None
    augment: Augment | None
    return_hidden: bool
    device: torch.device
    dist_info: DistInfo


@dataclass
class _Run:
    """What training changes. ``completed``: updates finished; ``saved``: the step of the newest checkpoint
    of this run on disk (None before the first save of a fresh run)."""

    model: nn.Module
    opt: torch.optim.Optimizer
    ema: EMA
    completed: int = 0
    saved: int | None = None


def train(
    denoiser: Denoiser,
    data: dict[str, Tensor],
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    config_dict: dict | None = None,
    extra_loss: ExtraLoss | None = None,
    augment: Augment | None = None,
    return_hidden: bool = False,
    resume: bool = False,
    device: torch.device = torch.device("cpu"),
    dist_info: DistInfo = DistInfo(),
    progress: bool = True,
    checkpoint_name: str = "checkpoint.pt",
    val_data: dict[str, Tensor] | None = None,
) -> TrainState:
    """Train ``denoiser`` on in-memory ``data`` (``x0`` [N, ...], optional ``mask``, context tensors).

    Writes ``run_dir/metrics.csv`` and ``run_dir/checkpoint.pt`` (model, EMA, optimiser, step, config; the
    one before it as ``checkpoint.prev.pt``), holding the folder's lock. Raises ``RunLockedError`` when
    another process trains in ``run_dir``; re-raises ``KeyboardInterrupt`` after saving the state.
    ``val_data`` (same layout): the EMA model's denoising loss on it, at fixed diffusion times and noise, is
    logged to ``validation.csv`` (and TensorBoard) at every checkpoint.
    """
    _check_inputs(data, cfg, dist_info)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / checkpoint_name
    with _writer_lock(run_dir, dist_info, device):
        if dist_info.is_main:
            remove_stale_temp_files(run_dir, (ckpt.name, previous_path(ckpt).name, "metrics.csv"))
            # the run folder's manifest: what --force may remove later (physdiff.outputs)
            record_outputs(run_dir, [ckpt.name, previous_path(ckpt).name, "metrics.csv", "validation.csv"])
        run = _build_run(denoiser, cfg, device)
        if resume:
            _resume(run, ckpt, config_dict, device, dist_info.is_main)
        net = accelerated(_wrap_ddp(denoiser, dist_info, device), compile=cfg.compile, precision=cfg.precision)
        job = _Job(denoiser, net, data, cfg, extra_loss, augment, return_hidden, device, dist_info)
        log = MetricsLog(
            run_dir / "metrics.csv",
            start=run.completed,
            total=cfg.steps,
            enabled=dist_info.is_main,
            progress=progress,
            tensorboard=cfg.tensorboard,
        )
        losses: list[float] = []
        try:
            while run.completed < cfg.steps:
                losses.append(_train_step(run, job, log))
                if run.completed % cfg.checkpoint_every == 0:
                    with defer_sigint():  # a checkpoint and its validation row are written together
                        _validate(run, job, log, val_data)
                        _save(run, ckpt, config_dict, dist_info)
            with defer_sigint():
                if run.saved != run.completed:
                    _validate(run, job, log, val_data)
                _save(run, ckpt, config_dict, dist_info)
        except KeyboardInterrupt:
            _save_on_interrupt(run, ckpt, config_dict, dist_info)
            raise
        finally:
            log.close()
    return TrainState(step=run.completed, losses=losses)


def load_ema_weights(denoiser: Denoiser, path: str | Path, device: torch.device | str = "cpu") -> int:
    """Load the EMA weights of a checkpoint into ``denoiser.net``; returns the checkpoint's step."""
    state = load_checkpoint(path, map_location=device)
    try:
        denoiser.net.load_state_dict(state["ema"]["model"])
    except (RuntimeError, KeyError) as e:
        hint = (
            "it was trained with the U-Net's earlier noise embedding (70·c, physdiff before 4100f66); train it again"
            if any(k.endswith("time_embed.reference_time") for k in denoiser.net.state_dict())
            and not any(k.endswith("time_embed.reference_time") for k in state["ema"]["model"])
            else "its parameters differ from this model's (config.yaml and the checkpoint disagree)"
        )
        raise CheckpointError(f"cannot load {path}: {hint} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return int(state["step"])


# ------------------------------------------------------------------------------------------- set-up
def _check_inputs(data: dict[str, Tensor], cfg: TrainConfig, dist_info: DistInfo) -> None:
    """Refuse a configuration or data the loop cannot train on, before anything is written."""
    if cfg.steps <= 0 or cfg.batch_size <= 0:
        raise ValueError(f"steps and batch_size must be positive, got {cfg.steps} and {cfg.batch_size}")
    if cfg.log_every <= 0 or cfg.checkpoint_every <= 0:
        raise ValueError(
            f"log_every and checkpoint_every must be positive, got {cfg.log_every}, {cfg.checkpoint_every}"
        )
    if cfg.batch_size % dist_info.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the world size {dist_info.world_size}")
    if "x0" not in data:
        raise ValueError("training data needs an 'x0' entry")
    for k, v in data.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"training data entry {k!r} contains NaN or inf values")


@contextmanager
def _writer_lock(run_dir: Path, dist_info: DistInfo, device: torch.device) -> Iterator[None]:
    """Hold ``run_dir``'s lock (rank 0) for the block; every rank fails at once if rank 0 cannot take it."""
    lock = RunLock(run_dir) if dist_info.is_main else None
    error = None
    if lock is not None:
        try:
            lock.acquire()
        except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
            error = e
    if not all_ranks_agree(dist_info, error is None, device):
        raise error or RunLockedError(
            f"run folder {run_dir} is locked by another training process (rank 0 could not lock it)",
            run_dir=str(run_dir),
        )
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _build_run(denoiser: Denoiser, cfg: TrainConfig, device: torch.device) -> _Run:
    """Move the network to ``device`` and build its optimiser (AdamW) and EMA."""
    denoiser.to(device)
    model = denoiser.net
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _Run(model, opt, EMA(model, cfg.ema_decay))


def _resume(run: _Run, path: Path, config_dict: dict | None, device: torch.device, is_main: bool) -> None:
    """Load the newest good checkpoint into ``run`` (the previous one if the newest is damaged); without one,
    say so and start from step 0."""
    if not path.is_file() and not previous_path(path).is_file():
        if is_main:
            warnings.warn(f"resume: no checkpoint {path} found; starting from step 0", stacklevel=3)
        return
    state, used = load_latest_checkpoint(path, map_location=device)
    if config_dict is not None and "config" in state:
        keys = ("model", "data", "diffusion")
        check_config_matches(used, state["config"], config_dict, keys, optional=RECORDED_DATA_KEYS)
    _load_states(run, state, used)
    run.completed = run.saved = int(state["step"])
    if used != path and is_main:
        aside = promote_previous(path)
        if aside is not None:
            warnings.warn(f"resume: moved the damaged checkpoint aside to {aside}", stacklevel=3)


def _load_states(run: _Run, state: dict, path: Path) -> None:
    """Model, EMA and optimiser from ``state``, or a CheckpointError saying why they do not fit."""
    try:
        run.model.load_state_dict(state["model"])
        run.ema.load_state_dict(state["ema"])
        run.opt.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        saved = sorted({k.split(".")[1] for k in state["model"] if k.startswith("aux_heads.")})
        have = sorted({k.split(".")[1] for k in run.model.state_dict() if k.startswith("aux_heads.")})
        hint = (
            f"the checkpoint has auxiliary prior heads {saved or 'none'}, this run {have or 'none'} "
            "(priors.N.variant differs: aux_head vs tweedie)"
            if saved != have
            else "its parameters differ from this model's"
        )
        raise CheckpointError(
            f"cannot resume from {path}: {hint}; resume with the checkpoint's settings or use a new run "
            f"directory ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None


def _wrap_ddp(denoiser: Denoiser, dist_info: DistInfo, device: torch.device) -> Denoiser:
    """The denoiser whose network is wrapped in DistributedDataParallel under DDP (itself otherwise)."""
    if not dist_info.enabled:
        return denoiser
    net = DistributedDataParallel(denoiser.net, device_ids=[device.index] if device.type == "cuda" else None)
    return Denoiser(net, denoiser.schedule, denoiser.prediction, denoiser._project)


# ----------------------------------------------------------------------------------------------- a step
def _train_step(run: _Run, job: _Job, log: MetricsLog) -> float:
    """One step: gradients, then the update and its log row, whole or not at all (Ctrl-C deferred over
    them); returns the global loss."""
    terms, grad_norm = _gradients(run, job)
    with defer_sigint():
        lr = _apply_update(run, job.cfg)
        _log_step(log, run.completed, terms, grad_norm, lr, job.cfg)
    return terms["loss"]


def _gradients(run: _Run, job: _Job) -> tuple[dict[str, float], float]:
    """Gradients of the loss on the global batch of step ``run.completed``, clipped; returns the loss terms
    averaged over the ranks and the gradient norm. Changes nothing that a checkpoint holds."""
    step = run.completed
    batch, t, eps = _draw_batch(job, step)
    loss, terms = _local_loss(job, batch, t, eps)
    terms = _global_terms(job, loss, terms)
    if not math.isfinite(terms["loss"]):
        raise FloatingPointError(f"the loss became {terms['loss']} at step {step}; lower the learning rate")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    return terms, float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), job.cfg.grad_clip))


def _apply_update(run: _Run, cfg: TrainConfig) -> float:
    """The optimiser step (with the warm-up learning rate, returned), the EMA update and ``completed += 1``.
    Call with Ctrl-C deferred, so that they happen together."""
    lr = cfg.lr * min(1.0, (run.completed + 1) / max(cfg.warmup, 1))
    for group in run.opt.param_groups:
        group["lr"] = lr
    run.opt.step()
    run.ema.update(run.model)
    run.completed += 1
    return lr


def _draw_batch(job: _Job, step: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """The global batch of ``step``: data rows, diffusion times and noise, a pure function of (seed, step)."""
    cfg, sched = job.cfg, job.denoiser.schedule
    g = step_generator(cfg.seed, step, job.device)
    idx = _batch_indices(job.data["x0"].shape[0], cfg.batch_size, cfg.seed, step)
    batch = {k: v[idx] for k, v in job.data.items()}
    if job.augment is not None:
        batch = job.augment(batch, g)
    x0 = batch["x0"]
    t = sample_time(cfg.batch_size, sched.t_eps, sched.t_max, generator=g, dtype=x0.dtype)
    ctx = {k: v for k, v in batch.items() if k not in ("x0", "mask", "known")}
    eps = job.denoiser.project(torch.randn(x0.shape, generator=g, dtype=x0.dtype), **ctx)
    return batch, t, eps


def _local_loss(job: _Job, batch: dict[str, Tensor], t: Tensor, eps: Tensor) -> tuple[Tensor, dict[str, float]]:
    """This rank's slice of the batch through the network: the loss to differentiate and its named terms."""
    local = job.cfg.batch_size // job.dist_info.world_size
    lo, hi = job.dist_info.rank * local, (job.dist_info.rank + 1) * local
    part = {k: v[lo:hi].to(job.device) for k, v in batch.items()}
    x0, mask, known = part.pop("x0"), part.pop("mask", None), part.pop("known", None)
    out = diffusion_loss(
        job.net,
        x0,
        objective=job.cfg.objective,
        known=known,
        mask=mask,
        t=t[lo:hi].to(job.device),
        eps=eps[lo:hi].to(job.device),
        return_hidden=job.return_hidden,
        **part,
    )
    loss, terms = out.loss, {"loss_score": float(out.loss.detach())}
    if job.extra_loss is not None:
        extra, extra_terms = job.extra_loss(out, {"x0": x0, "mask": mask, **part})
        loss = loss + extra
        terms.update(extra_terms)
    return loss, terms


def _global_terms(job: _Job, loss: Tensor, terms: dict[str, float]) -> dict[str, float]:
    """``{"loss": …, **terms}`` averaged over the ranks, i.e. over the global batch (as one process sees it)."""
    named = {"loss": float(loss.detach()), **terms}
    return dict(zip(named, all_reduce_mean(job.dist_info, [float(v) for v in named.values()], job.device), strict=True))


# -------------------------------------------------------------------------------------- validation
@torch.no_grad()
def _validation_loss(run: _Run, job: _Job, data: dict[str, Tensor], max_samples: int = 256) -> float:
    """The EMA network's denoising loss on ``data`` at fixed, stratified diffusion times and seeded noise (a
    pure function of the weights: comparable across steps, and no random state of training is touched)."""
    sched = job.denoiser.schedule
    part = {k: v[:max_samples].to(job.device) for k, v in data.items()}
    x0, mask, known = part.pop("x0"), part.pop("mask", None), part.pop("known", None)
    g = torch.Generator().manual_seed(0)
    t = sched.t_eps + (sched.t_max - sched.t_eps) * (torch.arange(x0.shape[0], dtype=x0.dtype) + 0.5) / x0.shape[0]
    eps = job.denoiser.project(torch.randn(x0.shape, generator=g, dtype=x0.dtype), **part)
    ema_den = Denoiser(run.ema.model, sched, job.denoiser.prediction, job.denoiser._project)
    out = diffusion_loss(
        ema_den,
        x0,
        objective=job.cfg.objective,
        known=known,
        mask=mask,
        t=t.to(job.device),
        eps=eps.to(job.device),
        **part,
    )
    return float(out.loss)


def _validate(run: _Run, job: _Job, log: MetricsLog, data: dict[str, Tensor] | None) -> None:
    """Log the validation loss at ``run.completed`` (main rank; nothing without validation data)."""
    if data is None or not job.dist_info.is_main or run.saved == run.completed:
        return
    log.write_validation(run.completed, _validation_loss(run, job, data))


# -------------------------------------------------------------------------------------- logs and saves
def _log_step(log: MetricsLog, step: int, terms: dict[str, float], grad_norm: float, lr: float, cfg: TrainConfig):
    """Advance the progress bar; every ``log_every`` steps (and at the end) append a metrics row."""
    log.advance(terms["loss"])
    if step % cfg.log_every == 0 or step == cfg.steps:
        log.write({"step": step, **terms, "grad_norm": grad_norm, "lr": lr})


def _save(run: _Run, path: Path, config_dict: dict | None, dist_info: DistInfo) -> None:
    """Checkpoint the state after ``run.completed`` updates (rank 0), unless that step is already on disk."""
    if run.saved == run.completed:
        return
    with defer_sigint():  # the file and ``run.saved`` agree even when Ctrl-C lands here
        if dist_info.is_main:
            state = {
                "model": run.model.state_dict(),
                "ema": run.ema.state_dict(),
                "optimizer": run.opt.state_dict(),
                "step": run.completed,
                "config": config_dict or {},
            }
            save_checkpoint(path, state, keep_previous=run.saved is not None)
        run.saved = run.completed


def _save_on_interrupt(run: _Run, path: Path, config_dict: dict | None, dist_info: DistInfo) -> None:
    """After Ctrl-C: save the consistent state at ``run.completed`` (a further Ctrl-C waits for it)."""
    with defer_sigint():
        if run.completed:
            _save(run, path, config_dict, dist_info)
        if dist_info.is_main:
            where = f"checkpoint {path} holds step {run.saved}" if run.saved is not None else "nothing was saved"
            print(f"\ninterrupted after {run.completed} completed steps; {where} (continue with --resume)")
