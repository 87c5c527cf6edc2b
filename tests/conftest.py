"""Suite-wide set-up.

A test suite started in the background of a non-interactive shell (``nohup pytest &``, a CI runner's job
without job control) inherits SIGINT *ignored* (POSIX), and so would every ``physdiff`` child process the
tests start: the tests that stop a training with SIGINT (Ctrl-C) would wait for a process that never stops.
Restore Python's own handler, so that children start with SIGINT's default disposition as in a terminal.
"""

from __future__ import annotations

import signal

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
