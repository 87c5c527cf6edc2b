"""Per-sample metrics for PDE fields (method spec, section 5).

* :func:`rmse` -- prediction RMSE against ground truth, over the *unknown* entries only when a mask
  of known (conditioned) entries is given.
* :func:`constraint_rmse` -- RMSE of a finite-difference residual over all points where its stencil
  applies (the residual functions of :mod:`physdiff.physics.pde_residuals` return exactly those
  points). Reported next to the same quantity on ground truth (the floor).
* :func:`summarize` -- mean and standard deviation over samples.

All functions accept numpy arrays or torch tensors with the sample axis first and return float64
numpy arrays of shape ``[N]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["rmse", "constraint_rmse", "summarize"]

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


def summarize(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{key: {"mean", "std"}}`` over the per-sample values of each metric (NaNs ignored;
    population std, ``ddof = 0``)."""
    out: dict[str, dict[str, float]] = {}
    for key, val in metrics.items():
        v = _np(val).ravel()
        v = v[np.isfinite(v)]
        out[key] = {
            "mean": float(v.mean()) if v.size else float("nan"),
            "std": float(v.std()) if v.size else float("nan"),
        }
    return out
