"""A thin training loop: AdamW, warm-up, gradient clipping, EMA, CSV logs, atomic checkpoints, resume.

Randomness is a pure function of (seed, step): the batch indices, the diffusion times and the noise
of step k are drawn from a generator seeded with (seed, k) for the *global* batch, and each DDP rank
takes its slice. Hence ``--resume`` continues bit-for-bit, and N ranks see exactly the global batch
one process would see.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from physdiff.diffusion.objective import LossOutput, diffusion_loss, sample_time
from physdiff.diffusion.parametrisation import Denoiser
from physdiff.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from physdiff.training.distributed import DistInfo
from physdiff.training.ema import EMA

__all__ = ["TrainConfig", "train", "TrainState"]

# extra loss terms: f(loss_output, batch) -> (scalar tensor, {name: float})
ExtraLoss = Callable[[LossOutput, dict[str, Tensor]], tuple[Tensor, dict[str, float]]]


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    objective: str = "eps"
    log_every: int = 25
    checkpoint_every: int = 500
    seed: int = 0
    tensorboard: bool = False


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


def train(
    denoiser: Denoiser,
    data: dict[str, Tensor],
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    config_dict: dict | None = None,
    extra_loss: ExtraLoss | None = None,
    augment: Callable[[dict[str, Tensor], torch.Generator], dict[str, Tensor]] | None = None,
    return_hidden: bool = False,
    resume: bool = False,
    device: torch.device = torch.device("cpu"),
    dist_info: DistInfo = DistInfo(),
    progress: bool = True,
    checkpoint_name: str = "checkpoint.pt",
) -> TrainState:
    """Train ``denoiser`` on in-memory ``data`` (``x0`` [N, ...], optional ``mask``, context tensors).

    Writes ``run_dir/metrics.csv`` and ``run_dir/checkpoint.pt`` (model, EMA, optimiser, step, config).
    """
    if cfg.steps <= 0 or cfg.batch_size <= 0:
        raise ValueError(f"steps and batch_size must be positive, got {cfg.steps} and {cfg.batch_size}")
    if cfg.batch_size % dist_info.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the world size {dist_info.world_size}")
    if "x0" not in data:
        raise ValueError("training data needs an 'x0' entry")
    for k, v in data.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"training data entry {k!r} contains NaN or inf values")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / checkpoint_name
    denoiser.to(device)
    model = denoiser.net
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay)
    start = 0
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, map_location=device)
        if config_dict is not None and "config" in state:
            from physdiff.training.checkpoint import check_config_matches

            check_config_matches(ckpt_path, state["config"], config_dict, ("model", "data", "diffusion"))
        try:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            saved = sorted({k.split(".")[1] for k in state["model"] if k.startswith("aux_heads.")})
            have = sorted({k.split(".")[1] for k in model.state_dict() if k.startswith("aux_heads.")})
            hint = (
                f"the checkpoint has auxiliary prior heads {saved or 'none'}, this run {have or 'none'} "
                "(priors.N.variant differs: aux_head vs tweedie)"
                if saved != have
                else "its parameters differ from this model's"
            )
            raise CheckpointError(
                f"cannot resume from {ckpt_path}: {hint}; resume with the checkpoint's settings or use a new run "
                f"directory ({type(e).__name__}: {str(e).splitlines()[0]})"
            ) from None
        start = int(state["step"])
    net = model
    if dist_info.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ddp_denoiser = Denoiser(net, denoiser.schedule, denoiser.prediction, denoiser._project)

    n = data["x0"].shape[0]
    local = cfg.batch_size // dist_info.world_size
    lo, hi = dist_info.rank * local, (dist_info.rank + 1) * local
    is_main = dist_info.is_main
    log_file = run_dir / "metrics.csv"
    writer = None
    if is_main and cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"))
        except ImportError:
            writer = None
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc="training",
        disable=not (progress and is_main),
        dynamic_ncols=True,
    )
    losses: list[float] = []
    t0 = time.time()
    header_done = start > 0 and log_file.exists()
    if is_main and not header_done and log_file.exists():
        log_file.unlink()

    def save(step: int) -> None:
        if is_main:
            save_checkpoint(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step,
                    "config": config_dict or {},
                },
            )

    step = start
    try:
        for step in range(start, cfg.steps):
            g = step_generator(cfg.seed, step, device)
            idx = _batch_indices(n, cfg.batch_size, cfg.seed, step)
            batch = {k: v[idx] for k, v in data.items()}
            if augment is not None:
                batch = augment(batch, g)
            sched = denoiser.schedule
            x0_all = batch["x0"]
            t_all = sample_time(cfg.batch_size, sched.t_eps, sched.t_max, generator=g, dtype=x0_all.dtype)
            ctx_all = {k: v for k, v in batch.items() if k not in ("x0", "mask", "known")}
            eps_all = denoiser.project(torch.randn(x0_all.shape, generator=g, dtype=x0_all.dtype), **ctx_all)
            local_batch = {k: v[lo:hi].to(device) for k, v in batch.items()}
            x0 = local_batch.pop("x0")
            mask = local_batch.pop("mask", None)
            known = local_batch.pop("known", None)
            lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
            for group in opt.param_groups:
                group["lr"] = lr
            out = diffusion_loss(
                ddp_denoiser,
                x0,
                objective=cfg.objective,
                known=known,
                mask=mask,
                t=t_all[lo:hi].to(device),
                eps=eps_all[lo:hi].to(device),
                return_hidden=return_hidden,
                **local_batch,
            )
            loss = out.loss
            terms = {"loss_score": float(out.loss.detach())}
            if extra_loss is not None:
                extra, extra_terms = extra_loss(out, {"x0": x0, "mask": mask, **local_batch})
                loss = loss + extra
                terms.update(extra_terms)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {float(loss)} at step {step}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema.update(model)
            losses.append(float(loss.detach()))
            bar.update()
            if is_main and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
                row = {
                    "step": step + 1,
                    "loss": losses[-1],
                    **terms,
                    "grad_norm": float(gnorm),
                    "lr": lr,
                    "elapsed_s": round(time.time() - t0, 3),
                }
                with open(log_file, "a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(row))
                    if not header_done:
                        w.writeheader()
                        header_done = True
                    w.writerow(row)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if writer is not None:
                    for k, v in row.items():
                        if k != "step" and isinstance(v, float) and math.isfinite(v):
                            writer.add_scalar(k, v, step + 1)
            if (step + 1) % cfg.checkpoint_every == 0:
                save(step + 1)
        save(cfg.steps)
        step = cfg.steps
    except KeyboardInterrupt:
        save(step)
        bar.close()
        if is_main:
            print(f"\ninterrupted at step {step}; checkpoint saved to {ckpt_path} (resume with --resume)")
        raise
    bar.close()
    if writer is not None:
        writer.close()
    return TrainState(step=step, losses=losses)


def load_ema_weights(denoiser: Denoiser, path: str | Path, device: torch.device | str = "cpu") -> int:
    """Load the EMA weights of a checkpoint into ``denoiser.net``; returns the checkpoint's step."""
    state = load_checkpoint(path, map_location=device)
    denoiser.net.load_state_dict(state["ema"]["model"])
    return int(state["step"])
