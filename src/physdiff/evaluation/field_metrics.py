"""Per-sample metrics for PDE fields (method spec, section 5).

* :func:`rmse` -- prediction RMSE against ground truth, over the *unknown* entries only when a mask
  of known (conditioned) entries is given.
* :func:`constraint_rmse` -- RMSE of a finite-difference residual over all points where its stencil
  applies (the residual functions of :mod:`physdiff.physics.pde_residuals` return exactly those
  points). Reported next to the same quantity on ground truth (the floor).
* :func:`summarize` -- mean, sample standard deviation and the count of non-finite values over samples.

All functions accept numpy arrays or torch tensors with the sample axis first and return float64
numpy arrays of shape ``[N]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from physdiff.evaluation.statistics import summarize_samples

__all__ = ["rmse", "constraint_rmse", "summarize", "is_field_file", "evaluate_field_files"]

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def rmse(pred: ArrayLike, ref: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """Per-sample RMSE ``sqrt(mean((pred - ref)^2))``.

    Args:
        pred, ref: ``[N, ...]`` of equal shape.
        mask: optional, broadcastable to ``pred``; 1 (True) marks *known* entries, which are excluded:
            the mean runs over the unknown entries (``mask == 0``) of each sample only.

    Returns:
        ``[N]`` float64. A sample without unknown entries gives NaN.
    """
    p, r = _np(pred), _np(ref)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref shapes differ: {p.shape} vs {r.shape}")
    err2 = (p - r) ** 2
    if mask is None:
        return np.sqrt(err2.reshape(err2.shape[0], -1).mean(axis=1))
    unknown = 1.0 - np.broadcast_to(_np(mask), p.shape)
    num = (err2 * unknown).reshape(p.shape[0], -1).sum(axis=1)
    den = unknown.reshape(p.shape[0], -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(num / den)


def constraint_rmse(residual: ArrayLike) -> np.ndarray:
    """Per-sample RMSE of a residual ``[N, ...]`` over all its points, ``[N]``."""
    r = _np(residual)
    return np.sqrt((r**2).reshape(r.shape[0], -1).mean(axis=1))


def summarize(metrics: Mapping[str, Any]) -> dict[str, dict[str, float | int]]:
    """``{key: {"mean", "std", "n", "nonfinite"}}`` over the per-sample values of each metric: sample std
    (ddof = 1); a NaN/inf value (a diverged sample) is counted in ``nonfinite`` and makes the mean NaN,
    never a silently better number (:func:`physdiff.evaluation.statistics.summarize_samples`)."""
    return summarize_samples({k: _np(v) for k, v in metrics.items()})


def is_field_file(path: str | os.PathLike[str]) -> bool:
    """Whether an HDF5 file holds PDE fields (PDEBench layout) rather than particle trajectories."""
    import h5py

    with h5py.File(path, "r") as f:
        return "tensor" in f or any(k.isdigit() for k in f.keys())


def check_field_reference(
    samples_name: str,
    reference_name: str,
    fields: np.ndarray,
    coefficient: np.ndarray | None,
    ref: Any,
    system: Any,
    task: str,
    recorded: str | None = None,
) -> None:
    """Refuse reference rows ``ref`` (a FieldData, row-aligned) that are not those the generated ``fields``
    were generated from: the shapes, the coefficient field and (time-dependent ``prediction``) the given first
    frame must agree, and a ``recorded`` fingerprint must match (:func:`physdiff.data.provenance.check_reference`).
    ``physdiff evaluate`` and :meth:`physdiff.Run.evaluate` refuse with this one check and message."""
    from physdiff.data.provenance import check_reference, fingerprint

    fields = np.asarray(fields)
    if fields.shape != ref.fields.shape:
        raise ValueError(f"{samples_name}: fields {fields.shape} do not match the reference {ref.fields.shape}")
    conditioned = {}
    if ref.coefficient is not None and coefficient is not None:
        conditioned["a (coefficient)"] = (coefficient, ref.coefficient)
    mask = system.prediction_mask(ref.fields.shape) if task == "prediction" else None
    if mask is not None:  # time-dependent prediction: the given first frame
        conditioned["u(t=0)"] = (fields[:, 0], ref.fields[:, 0])
    actual = fingerprint(ref.fields, ref.coefficient) if recorded is not None else ""
    check_reference(samples_name, reference_name, conditioned, recorded, actual)


def evaluate_field_files(
    samples: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    system: str | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """Metrics of a file of generated fields against the reference data set.

    The samples file (as written by ``physdiff reproduce``/``sample``) carries ``source_indices`` into
    the reference, its ``task`` and the ``downsample_x``/``downsample_t`` the reference is read with.
    ``constraint_rmse`` (the system's residual) is always computed, on the
    samples and on the matching reference samples (the floor); ``rmse`` only for ``prediction`` samples,
    over the entries that were not given (all but the first frame of time-dependent systems).

    Returns:
        ``{"metrics": {key: {"mean", "std"}}, "floor": {"constraint_rmse": float}, "per_sample": {...}}``.
    """
    from physdiff.data.pdebench import load_pde
    from physdiff.systems.pde_registry import get_pde_system

    gen = load_pde(samples, system)
    # read the reference as the run did: samples written by physdiff record its down-sampling
    ds_x, ds_t = (int(gen.parameters.get(k, 1)) for k in ("downsample_x", "downsample_t"))
    ref = load_pde(reference, system or gen.system, ds_x, ds_t)
    if gen.system != ref.system:
        raise ValueError(f"{samples} holds {gen.system!r} fields but {reference} holds {ref.system!r}")
    idx = gen.parameters.get("source_indices")
    if idx is None:
        if gen.n_samples != ref.n_samples:
            raise ValueError(
                f"{samples}: no 'source_indices' and {gen.n_samples} samples vs {ref.n_samples} in {reference}"
            )
        idx = np.arange(ref.n_samples)
    idx = np.asarray(idx, dtype=np.int64)
    if idx.max(initial=-1) >= ref.n_samples:
        raise ValueError(f"{samples}: source_indices point past the {ref.n_samples} samples of {reference}")
    ref = ref.subset(idx)
    task = task or str(gen.parameters.get("task", "generation"))
    sys_ = get_pde_system(ref.system)
    recorded = gen.parameters.get("reference_sha256")
    check_field_reference(str(samples), str(reference), gen.fields, gen.coefficient, ref, sys_, task, recorded)
    mask = sys_.prediction_mask(ref.fields.shape) if task == "prediction" else None
    per_sample: dict[str, np.ndarray] = {}
    floor: dict[str, float] = {}
    if task == "prediction":
        per_sample["rmse"] = rmse(gen.fields, ref.fields, mask)
    if ref.priors_available:
        per_sample["constraint_rmse"] = sys_.residual_rmse(ref, gen.fields)
        floor["constraint_rmse"] = float(np.mean(sys_.residual_rmse(ref)))
    return {
        "metrics": summarize(per_sample),
        "floor": floor,
        "per_sample": {k: v.tolist() for k, v in per_sample.items()},
    }
