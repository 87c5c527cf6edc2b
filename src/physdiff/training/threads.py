"""How many intra-op threads torch uses on the CPU (``physdiff --threads``).

The quick models are small (10⁵ parameters, kernels of a few thousand elements): their intra-op parallelism
gains little and, when another process computes on the same cores, threads that wait for each other at
every kernel make training collapse (measured in ``docs/benchmarks.md``, "Threads"). The policy:

* ``--threads N``: N intra-op threads.
* ``--threads auto`` (the default): ``OMP_NUM_THREADS`` when the user set it; else :data:`AUTO_THREADS`
  threads, never more than the CPUs this process may use (divided among the ranks of a torchrun job).
"""

from __future__ import annotations

import os

import torch

__all__ = ["AUTO_THREADS", "available_cpus", "choose_threads", "configure_threads"]

#: intra-op threads of ``--threads auto``. From the measurements in docs/benchmarks.md ("Threads", 2-core
#: machine, quick models): 2 threads train 1.4-1.5x faster than 1 on an idle machine, but beside one other
#: run they slow down 4.5-5.5x while 1 thread loses 0-15 %; 1 is the choice whose worst case is mild.
#: On a machine known to be idle, ``--threads N`` buys the speed-up.
AUTO_THREADS = 1


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_threads(threads: str | int = "auto", *, local_world_size: int = 1) -> int | None:
    """The intra-op thread count for ``threads`` (``"auto"`` or a positive count); ``None``: leave torch's
    setting alone (``auto`` with ``OMP_NUM_THREADS`` set by the user)."""
    if str(threads) == "auto":
        if os.environ.get("OMP_NUM_THREADS"):
            return None
        return max(1, min(AUTO_THREADS, available_cpus() // max(local_world_size, 1)))
    try:
        n = int(threads)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--threads must be a positive integer or 'auto', got {threads!r}")
    return n


def configure_threads(threads: str | int = "auto", *, local_world_size: int = 1) -> int:
    """Apply :func:`choose_threads`; returns torch's intra-op thread count afterwards."""
    n = choose_threads(threads, local_world_size=local_world_size)
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()
