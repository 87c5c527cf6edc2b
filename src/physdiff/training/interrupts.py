"""Deferring Ctrl-C (SIGINT) over sections that must not be cut in half.

Inside ``with defer_sigint():`` a SIGINT is only recorded; when the block ends the previous handler is
restored and the signal is delivered to it once (for Python's default handler: ``KeyboardInterrupt`` is
raised at the end of the block). The trainer wraps the optimiser + EMA update and every checkpoint write
in it, so an interrupt never leaves a half-updated model or a half-written file, and a second Ctrl-C
during the save that follows a first one cannot abort that save.

Signals are handled by the main thread only: elsewhere, or when the current handler was not installed
from Python, the context manager does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["defer_sigint"]

_depth = 0  # nesting depth of active deferrals (in the main thread)


@contextmanager
def defer_sigint() -> Iterator[None]:
    """Record SIGINTs during the block; deliver one to the previous handler when the block ends."""
    global _depth
    previous = signal.getsignal(signal.SIGINT)
    if _depth or threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    pending: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        signal.signal(signal.SIGINT, previous)
        if pending:
            _deliver(previous, pending[0])


def _deliver(handler, signum: int) -> None:
    if callable(handler):  # Python's default handler raises KeyboardInterrupt here
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)
    # SIG_IGN: the signal was to be ignored anyway
