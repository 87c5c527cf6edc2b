"""Distributed data parallel set-up that works the same under ``torchrun`` and in one process.

Under ``torchrun --nproc_per_node=N`` the environment carries RANK/WORLD_SIZE/LOCAL_RANK; we use the
gloo backend on CPU and nccl on CUDA. In a plain process everything is a no-op.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu or cuda")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: torch.device) -> DistInfo:
    """Initialise the process group if launched by torchrun; return this process's rank info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(info: DistInfo, values: list[float], device: torch.device) -> list[float]:
    """The mean of ``values`` over the ranks (the values themselves in one process)."""
    if not (info.enabled and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()


def all_ranks_agree(info: DistInfo, ok: bool, device: torch.device) -> bool:
    """True when ``ok`` holds on every rank (collective: every rank must call it)."""
    if not (info.enabled and dist.is_initialized()):
        return ok
    t = torch.tensor([int(ok)], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def all_gather_objects(info: DistInfo, obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process); pickled, for small
    results such as sampled batches."""
    if not (info.enabled and dist.is_initialized()):
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


@contextmanager
def main_first(info: DistInfo):
    """Run the block on rank 0 first and on the other ranks after it (e.g. simulating and caching data
    once): a barrier after rank 0's block, and one after the others'."""
    if info.enabled and not info.is_main:
        barrier(info)
    yield
    if info.enabled and info.is_main:
        barrier(info)
