"""Progress reporting that people can control.

:func:`progress_bar` is a tqdm bar (rate and ETA) on a terminal. When the output is not a terminal (a log
file, CI, a pipe) it prints one line every 10 % instead of carriage returns, and ``TQDM_DISABLE=1`` (or
``enabled=False``, e.g. ``physdiff --quiet``) turns it off. Lines go through the ``physdiff`` logger, so
they also reach a run's ``run.log``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "LineProgress", "progress_enabled", "set_quiet"]

log = logging.getLogger("physdiff")
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turn all progress off (``physdiff --quiet``), even where a run's ``run.log`` takes INFO messages (the
    simulators' tqdm bars too: their callers ask :func:`progress_enabled`)."""
    global _quiet
    _quiet = bool(quiet)


def progress_enabled(enabled: bool = True) -> bool:
    """Whether progress should be shown at all: ``enabled``, not ``--quiet`` (:func:`set_quiet`), not
    ``TQDM_DISABLE`` and the ``physdiff`` logger passes INFO messages."""
    env = os.environ.get("TQDM_DISABLE", "").strip().lower()
    return enabled and not _quiet and env in ("", "0", "false", "no") and log.isEnabledFor(logging.INFO)


class LineProgress:
    """A progress report of one line per ``every`` (fraction of ``total``): ``desc: 30% (180/600) 5.2 it/s,
    ETA 1:24``. It has the small part of tqdm's interface the library uses."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", every: float = 0.1) -> None:
        self.total, self.n, self.desc, self.every = max(int(total), 1), int(initial), desc, every
        self.start_n, self.t0 = self.n, time.time()
        self.next_mark = (int(self.n / self.total / every) + 1) * every
        self.postfix = ""

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n / self.total + 1e-12 >= self.next_mark or self.n >= self.total:
            elapsed = max(time.time() - self.t0, 1e-9)
            rate = (self.n - self.start_n) / elapsed
            eta = (self.total - self.n) / rate if rate > 0 else float("nan")
            eta_s = f"{int(eta // 60)}:{int(eta % 60):02d}" if eta == eta else "?"
            extra = f" {self.postfix}" if self.postfix else ""
            log.info(
                "%s: %3.0f%% (%d/%d) %.2f it/s, ETA %s%s",
                self.desc,
                100 * self.n / self.total,
                self.n,
                self.total,
                rate,
                eta_s,
                extra,
            )
            while self.next_mark <= self.n / self.total + 1e-12:
                self.next_mark += self.every

    def set_postfix(self, refresh: bool = False, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def reset(self) -> None:
        """Start over at 0 (a new round of the same work, e.g. the three-body simulator's next batches)."""
        self.n = self.start_n = 0
        self.t0, self.next_mark = time.time(), self.every

    def close(self) -> None:
        pass


class _Off:
    """No progress at all."""

    def update(self, k: int = 1) -> None:
        pass

    def set_postfix(self, refresh: bool = False, **kw: Any) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(
    total: int, *, desc: str, initial: int = 0, enabled: bool = True, leave: bool = True, tty_only: bool = False
) -> Any:
    """A tqdm bar on a terminal, a line every 10 % elsewhere, nothing when disabled (see the module).
    ``tty_only`` keeps an inner bar (one per sampled batch) off log files: there it prints nothing."""
    if not progress_enabled(enabled):
        return _Off()
    if not sys.stderr.isatty():
        return _Off() if tty_only else LineProgress(total, initial, desc)
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=leave)
