"""Provenance of generated samples: which reference rows they were generated against, and the check that
an evaluation uses the same reference.

A samples file records ``reference_path`` (the data file, absolute), ``reference_split`` and
``reference_sha256``, a fingerprint of the reference rows it was generated against (``source_indices``
into the file, read as the run read them). The fingerprint hashes the float32-rounded values, so a float32
copy of the same data matches. :func:`check_reference` refuses an evaluation whose reference is not the
samples' reference: the conditioned entries (first frames, coefficient fields) must equal the samples'
conditioning, and a recorded fingerprint must match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["PROVENANCE_ATTRS", "fingerprint", "check_reference"]

PROVENANCE_ATTRS = ("reference_path", "reference_split", "reference_sha256")


def fingerprint(*arrays: np.ndarray | None) -> str:
    """sha256 over the shapes and float32-rounded values of ``arrays`` (``None`` entries are skipped)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            continue
        with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 hash as inf, silently
            a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_reference(
    samples: str,
    reference: str,
    conditioned: Mapping[str, tuple[np.ndarray, np.ndarray]],
    recorded: str | None,
    actual: str,
    rtol: float = 1e-5,
) -> None:
    """Raise ``ValueError`` naming both files unless ``reference`` is the samples' reference.

    Args:
        samples, reference: the two file names (for the message).
        conditioned: ``{name: (in the samples, in the reference rows)}`` of every conditioned entry; they
            must agree to float32 round-off (``rtol`` relative to the entry's largest magnitude).
        recorded: the samples' ``reference_sha256`` attribute (``None`` for files without provenance).
        actual: :func:`fingerprint` of the reference rows as read now.
    """
    for name, (got, want) in conditioned.items():
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            raise ValueError(
                f"{samples} was not generated from {reference}: its conditioning {name!r} has shape "
                f"{got.shape}, the reference rows {want.shape}"
            )
        scale = max(float(np.abs(want).max(initial=0.0)), 1e-12)
        dev = float(np.abs(got - want).max(initial=0.0))
        if not dev <= rtol * scale:
            raise ValueError(
                f"{samples} was not generated from {reference}: the conditioned entries {name!r} differ from the "
                f"reference rows (max |difference| {dev:.3g} against a scale {scale:.3g}); pass the data file the "
                f"samples were generated from (recorded: {_recorded_path(samples)})"
            )
    if recorded is not None and recorded != actual:
        raise ValueError(
            f"{samples} was not generated from {reference}: the reference rows differ from those recorded in the "
            f"samples file (reference_sha256 mismatch); pass the data file the samples were generated from "
            f"(recorded: {_recorded_path(samples)})"
        )


def _recorded_path(samples: str) -> Any:
    import h5py

    try:
        with h5py.File(samples, "r") as f:
            value = f.attrs.get("reference_path", "not recorded")
    except OSError:
        return "not recorded"
    return value.decode() if isinstance(value, bytes) else value
