"""physdiff: generating physical dynamics with diffusion models under priors.

Method: Zhou, Wang & Yu, "Generating Physical Dynamics under Priors", ICLR 2025 (arXiv 2409.00730).

The public run API (:mod:`physdiff.api`): ``physdiff.load_run(folder)`` returns a trained run that samples
and evaluates from Python.
"""

from __future__ import annotations

from typing import Any

from physdiff._version import __version__

__all__ = ["__version__", "load_run", "Run"]


def __getattr__(name: str) -> Any:  # the API loads torch: import it on first use, not with the package
    if name in ("load_run", "Run"):
        from physdiff import api

        return getattr(api, name)
    raise AttributeError(f"module 'physdiff' has no attribute {name!r}")
