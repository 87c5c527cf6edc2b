"""Per-sample metrics for PDE fields (method spec, section 5).

* :func:`pdebench_field_metrics` -- PDEBench's metrics (:mod:`physdiff.evaluation.pdebench_metrics`) of a
  prediction against the reference fields, in the system's layout: the tables' ``rmse`` is PDEBench's
  ``err_RMSE`` (per slice (channel, frame) the spatial RMSE, averaged over the slices that were not given),
  and fRMSE takes PDEBench's domain lengths Lx = Ly = 1 (``lengths="unit"``, what its scripts pass) unless
  ``lengths="physical"``.
* :func:`rmse` -- the pooled RMSE ``sqrt(mean((pred - ref)^2))`` over the *unknown* entries (table key
  ``rmse_pooled``; before 2026-12-07 the tables' ``rmse``): one root over all the unknown entries of a
  sample, where PDEBench averages per-slice roots (they differ when the error varies across frames or
  channels: by 4.4 % on advection, 2.7 % on shallow water).
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

__all__ = [
    "FRMSE_LENGTHS",
    "constraint_rmse",
    "evaluate_field_files",
    "is_field_file",
    "pdebench_field_metrics",
    "rmse",
    "summarize",
]

#: fRMSE's domain lengths: ``unit`` (Lx = Ly = 1, PDEBench's scripts) or ``physical`` (the grid's extent)
FRMSE_LENGTHS: tuple[str, ...] = ("unit", "physical")

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


def pdebench_field_metrics(
    pred: ArrayLike, reference: Any, lengths: str = "unit", system: Any = None
) -> dict[str, np.ndarray]:
    """PDEBench's per-sample metrics (every key of :data:`physdiff.evaluation.pdebench_metrics.METRIC_KEYS`)
    of predicted fields against ``reference`` (a :class:`~physdiff.data.pdebench.FieldData` whose rows they
    predict), the given slices (the first frame of a time-dependent system) left out as PDEBench's
    ``initial_step`` does.

    Args:
        pred: ``[N, *field_axes]`` in the reference's layout.
        reference: the reference rows (its ``system`` names the layout, its ``coords`` the grid).
        lengths: fRMSE's domain lengths: ``"unit"`` (PDEBench's scripts, Lx = Ly = 1) or ``"physical"`` (the
            grid's extent, one spacing past its last point: the period of a periodic grid).
        system: the :class:`~physdiff.systems.pde_registry.PDESystem` of the layout (default: the registry's
            ``reference.system``).
    """
    from physdiff.evaluation.pdebench_metrics import pdebench_metrics
    from physdiff.systems.pde_registry import get_pde_system

    if lengths not in FRMSE_LENGTHS:
        raise ValueError(f"frmse_lengths must be one of {FRMSE_LENGTHS}, got {lengths!r}")
    system = system if system is not None else get_pde_system(reference.system)
    axes, fields = system.field_axes, reference.fields
    domain: float | list[float] = 1.0
    if lengths == "physical":
        domain = [
            float(np.ptp(reference.coords[a]) + (reference.coords[a][1] - reference.coords[a][0]))
            for a in system.spatial_axes
        ]
    known = system.prediction_mask(fields.shape)
    return pdebench_metrics(
        pred,
        fields,
        spatial_dims=len(system.spatial_axes),
        channel_axis=1 + axes.index("c") if "c" in axes else None,
        time_axis=1 + axes.index("t") if "t" in axes else None,
        mask=None if known is None else np.broadcast_to(known, fields.shape),
        domain_lengths=domain,
    )


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
    frmse_lengths: str = "unit",
) -> dict[str, Any]:
    """Metrics of a file of generated fields against the reference data set.

    The samples file (as written by ``physdiff reproduce``/``sample``) carries ``source_indices`` into
    the reference, its ``task`` and the ``downsample_x``/``downsample_t`` the reference is read with.
    ``constraint_rmse`` (the system's residual) is always computed, on the
    samples and on the matching reference samples (the floor); for ``prediction`` samples PDEBench's metrics
    (:func:`pdebench_field_metrics`: ``rmse``, ``nrmse``, ``crmse``, ``max_error``, ``brmse``,
    ``frmse_low|mid|high``, as ``sample`` and ``reproduce`` report them; fRMSE with ``frmse_lengths``) and
    ``rmse_pooled``, over the entries that were not given (all but the first frame of time-dependent systems).

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
        per_sample |= pdebench_field_metrics(gen.fields, ref, frmse_lengths)
        per_sample["rmse_pooled"] = rmse(gen.fields, ref.fields, mask)
    if ref.priors_available:
        per_sample["constraint_rmse"] = sys_.residual_rmse(ref, gen.fields)
        floor["constraint_rmse"] = float(np.mean(sys_.residual_rmse(ref)))
    return {
        "metrics": summarize(per_sample),
        "floor": floor,
        "per_sample": {k: v.tolist() for k, v in per_sample.items()},
    }
