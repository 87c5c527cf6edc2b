"""PDEBench's evaluation metrics as per-sample pure functions.

Reference: Takamoto et al., "PDEBench: An Extensive Benchmark for Scientific Machine Learning",
NeurIPS 2022 Datasets & Benchmarks, metrics section/appendix, and its reference implementation
``metric_func`` in ``pdebench/models/metrics.py`` of github.com/pdebench/PDEBench (read at commit
``9754b4c0``; line numbers below are of that file). This is an independent implementation written from
those definitions; no PDEBench code is copied.

Notation and axes
-----------------
Every input is brought to the layout ``[N, C, T, *S]``: ``N`` samples, ``C`` channels (1 when
``channel_axis is None``), ``T`` time steps (1 when ``time_axis is None``) and ``d = spatial_dims``
spatial axes ``S`` (the remaining axes, in their original order), with ``|S| = prod(S)`` grid points.
``e = pred - true`` and ``u = true``. Every metric is first computed on each *slice* ``(n, c, t)``,
a whole spatial field, and then **averaged with equal weight over the channels and time steps of the
sample**, exactly the ``(c, t)`` averaging of PDEBench (``torch.mean(..., dim=[0, -1])`` over
``[nc, nt]``, l.297-305). What PDEBench does in addition is a reduction over the batch (see
*Deviations*); here every function returns the per-sample values, a float64 array ``[N]``.

Per-slice definitions (``mean_S``, ``sum_S``, ``max_S`` run over the spatial points of one slice):

* ``rmse``      = ``sqrt(mean_S e^2)``                                       (l.189-195)
* ``nrmse``     = ``sqrt(mean_S e^2) / sqrt(mean_S u^2) = ||e||_2 / ||u||_2`` (l.196-197)
* ``crmse``     = ``|sum_S pred - sum_S true| / |S| = |mean_S e|``: error of the conserved quantity,
  the spatial sum per slice, divided by the number of grid points (l.199-217). A perturbation that
  preserves the spatial mean of every slice gives 0; a constant shift ``delta`` gives ``|delta|``.
* ``max_error`` = ``max_S |e|``                                              (l.218-225)
* ``brmse``     = RMSE over the boundary points, ``sqrt(B / n_B)`` (l.227-240): for every spatial axis
  ``a`` the two faces ``index 0`` and ``index -1`` along ``a`` contribute the sum of ``e^2`` over their
  points, and ``n_B = sum_a 2 |S| / S_a`` counts those points. 1-D: ``sqrt((e_0^2 + e_{-1}^2) / 2)``;
  2-D (``nx x ny``): the four edges with ``n_B = 2 nx + 2 ny``, so each corner is counted twice, once
  per edge, in numerator and denominator alike (as PDEBench does). A constant error ``delta`` on all
  boundary points gives ``|delta|``.
* ``frmse_low``, ``frmse_mid``, ``frmse_high`` (l.257-295): ``E = FFT(e)`` (unnormalised, numpy/torch
  convention ``E_k = sum_x e_x exp(-2 pi i k x / n)``; the FFT is linear, so this is
  ``FFT(pred) - FFT(true)`` as in PDEBench). Per slice a binned error spectrum ``b_k`` is formed:

  - 1-D (``nx`` points, l.257-263): ``b_k = |E_k| / nx * Lx`` for the ``rfft`` bins ``k = 0 .. nx // 2``
    (``nx // 2 + 1`` bins, the Nyquist bin included).
  - 2-D (``nx x ny``, l.264-276): only the quadrant ``0 <= i < nx // 2``, ``0 <= j < ny // 2`` of the
    full ``fftn`` is used; ``|E_ij|^2`` is summed into the shell ``k = floor(sqrt(i^2 + j^2))``, shells
    ``k >= min(nx // 2, ny // 2)`` are dropped, and ``b_k = sqrt(shell_k) / (nx ny) * Lx Ly`` for
    ``k = 0 .. min(nx, ny) // 2 - 1``.

  The bands are the half-open bin ranges ``low = [0, iLow)``, ``mid = [iLow, iHigh)``,
  ``high = [iHigh, K)`` with PDEBench's defaults ``iLow = 4``, ``iHigh = 12`` (``metric_func``
  signature, l.165; bands at l.292-295), i.e. low = bins 0-3, mid = bins 4-11, high = bins 12 and up;
  the band value is the **mean of b_k over the bins of the band** (not an RMS over the band). ``Lx``,
  ``Ly`` are the domain lengths (``domain_lengths``; 1.0 as in every PDEBench training script).
  A band without bins (e.g. ``high`` for ``nx < 24`` in 1-D or ``min(nx, ny) < 26`` in 2-D) is NaN,
  as PDEBench's ``torch.mean`` of an empty slice is.

  Closed form: one real mode ``e = A cos(2 pi (k0 . x) / n)`` with ``0 < k0 < n / 2`` (in 2-D both
  components in ``[0, n / 2)`` and not both 0) puts ``|E| = A |S| / 2`` into one bin of the counted
  quadrant, so ``b = A / 2 * L`` there and the band containing that bin gets ``A / (2 * n_bins_band)``
  (for ``L = 1``); a constant ``delta`` gives ``b_0 = |delta| * L`` and ``frmse_low = |delta| / iLow``.
  Caveat inherited from PDEBench: in 2-D the quadrant ``(i >= 0, j < 0)`` is not counted, so a mode
  ``cos(2 pi (kx x / nx - ky y / ny))`` with ``kx, ky > 0`` contributes nothing; the conjugate-symmetric
  half of a real field is redundant, but this quadrant is not.

Mask (known entries)
--------------------
``mask`` is broadcast to the shape of ``pred`` (numpy rules); a nonzero entry marks a *known*
(conditioned) value. The metrics are functionals of whole spatial fields (spatial sums, boundary,
FFT), so the mask acts on slices: a slice ``(n, c, t)`` whose spatial points are all known is dropped
from the ``(c, t)`` average of sample ``n``; a partially known slice is scored in full (known points
included). A given first frame (``mask[:, 0] = 1``) thus drops time step 0 from every metric, which is
PDEBench's ``initial_step`` slicing ``pred[..., initial_step:, :]`` (l.173-175). A sample with no
unknown slice gets NaN for every metric.

Deviations from PDEBench (deliberate)
-------------------------------------
* **Per-sample values instead of batch aggregates**, so that means and standard deviations over
  samples and seeds can be taken. For ``rmse``, ``nrmse`` and ``brmse`` PDEBench averages the
  per-slice values over the batch (l.195, l.197, l.230/240), so the mean of our ``[N]`` values over the
  samples of a batch equals PDEBench's number exactly. For ``crmse`` and ``frmse_*`` PDEBench takes a
  root-mean-square over the batch *inside* each ``(c, t)`` slice (resp. each frequency bin) before
  averaging (``sqrt(mean_batch(...^2))``, l.199-208, l.262, l.276), and ``max_error`` is the maximum
  over the batch per ``(c, t)`` (l.219-225). Our per-sample value is that same formula with a batch of
  one sample; the batch-level PDEBench number is recovered from ours only when ``C = T = 1``
  (``crmse``: RMS over samples; ``max_error``: max over samples) or ``N = 1`` (all metrics). Because
  PDEBench's aggregate of these three depends on how the test set is split into batches, the per-sample
  definition is also the better-defined one.
* PDEBench's ``metrics`` loop divides the sum of its per-batch numbers by the last ``enumerate`` index,
  i.e. by ``n_batches - 1`` (l.329/398 and l.460-465); nothing here depends on batching.
* Only ``spatial_dims`` 1 and 2 are supported (the layouts of this project; PDEBench's 3-D ``bRMSE``
  branch, l.241-255, sums the faces of all channels together).
* Known entries are given as a mask rather than a number of initial time steps (see *Mask*).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "I_LOW",
    "I_HIGH",
    "METRIC_KEYS",
    "FRMSE_KEYS",
    "rmse",
    "nrmse",
    "crmse",
    "max_error",
    "brmse",
    "frmse",
    "pdebench_metrics",
]

ArrayLike = np.ndarray | torch.Tensor

#: PDEBench's default band limits (``metric_func(..., iLow=4, iHigh=12)``): low = bins ``[0, 4)``,
#: mid = ``[4, 12)``, high = ``[12, K)``.
I_LOW = 4
I_HIGH = 12

#: Keys of :func:`frmse`.
FRMSE_KEYS = ("frmse_low", "frmse_mid", "frmse_high")
#: Keys of :func:`pdebench_metrics` (the public contract).
METRIC_KEYS = ("rmse", "nrmse", "crmse", "max_error", "brmse", *FRMSE_KEYS)


# --------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------


def _as_float64(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise ValueError(f"{name} must be real, got a complex tensor of shape {tuple(x.shape)}")
        return x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x)
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real, got a complex array of shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _check_axis(axis: int | None, ndim: int, label: str, shape: tuple[int, ...]) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise ValueError(f"{label} must be an int or None, got {axis!r}")
    a = int(axis) + ndim if axis < 0 else int(axis)
    if not 1 <= a < ndim:
        raise ValueError(f"{label}={axis} is not a valid non-sample axis for shape {shape} (axis 0 is the sample axis)")
    return a


def _permutation(
    shape: tuple[int, ...], spatial_dims: int, channel_axis: int | None, time_axis: int | None
) -> tuple[tuple[int, ...], bool, bool]:
    """Axis order that takes an input of ``shape`` to ``[N, (C), (T), *S]``."""
    if isinstance(spatial_dims, bool) or spatial_dims not in (1, 2):
        raise ValueError(f"spatial_dims must be 1 or 2, got {spatial_dims!r}")
    ndim = len(shape)
    expected = 1 + spatial_dims + (channel_axis is not None) + (time_axis is not None)
    if ndim != expected:
        raise ValueError(
            f"input of shape {shape} has rank {ndim}, but spatial_dims={spatial_dims}, "
            f"channel_axis={channel_axis}, time_axis={time_axis} require rank {expected} "
            "(sample axis + channel axis + time axis + spatial axes)"
        )
    c = _check_axis(channel_axis, ndim, "channel_axis", shape)
    t = _check_axis(time_axis, ndim, "time_axis", shape)
    if c is not None and c == t:
        raise ValueError(f"channel_axis={channel_axis} and time_axis={time_axis} name the same axis of {shape}")
    spatial = [a for a in range(1, ndim) if a not in (c, t)]
    perm = (0, *(() if c is None else (c,)), *(() if t is None else (t,)), *spatial)
    return perm, c is not None, t is not None


def _canonical(x: np.ndarray, perm: tuple[int, ...], has_c: bool, has_t: bool) -> np.ndarray:
    y = np.transpose(x, perm)
    if not has_c:
        y = y[:, None]
    if not has_t:
        y = y[:, :, None]
    return y


def _domain_lengths(domain_lengths: float | Sequence[float], spatial_dims: int) -> tuple[float, ...]:
    if np.ndim(domain_lengths) == 0:
        lengths = (float(domain_lengths),) * spatial_dims  # type: ignore[arg-type]
    else:
        lengths = tuple(float(v) for v in domain_lengths)  # type: ignore[union-attr]
    if len(lengths) != spatial_dims or not all(math.isfinite(v) and v > 0 for v in lengths):
        raise ValueError(
            f"domain_lengths must be one positive length or {spatial_dims} of them, got {domain_lengths!r}"
        )
    return lengths


def _check_bands(i_low: int, i_high: int) -> None:
    ok = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (i_low, i_high))
    if not ok or not 0 <= i_low <= i_high:
        raise ValueError(f"band limits must be integers with 0 <= i_low <= i_high, got i_low={i_low}, i_high={i_high}")


# --------------------------------------------------------------------------------------------------
# per-slice metrics: e, u of shape [C, T, *S] (one sample) -> [C, T]
# --------------------------------------------------------------------------------------------------


def _boundary_rms(e: np.ndarray, d: int) -> np.ndarray:
    sizes = e.shape[-d:]
    total = np.zeros(e.shape[:-d])
    n_points = 0
    for k in range(d):
        axis = e.ndim - d + k
        face_axes = tuple(range(e.ndim - d, e.ndim - 1))  # spatial axes left after taking a face
        for index in (0, -1):
            total = total + np.sum(np.take(e, index, axis=axis) ** 2, axis=face_axes)
        n_points += 2 * math.prod(sizes) // sizes[k]
    return np.sqrt(total / n_points)


def _shell_matrix(hx: int, hy: int, n_bins: int) -> np.ndarray:
    """``[hx * hy, n_bins]`` 0/1 matrix: quadrant mode ``(i, j)`` belongs to shell ``floor(sqrt(i^2 + j^2))``."""
    i, j = np.meshgrid(np.arange(hx), np.arange(hy), indexing="ij")
    shell = np.floor(np.sqrt(i**2 + j**2)).astype(np.int64).ravel()
    mat = np.zeros((hx * hy, n_bins))
    keep = shell < n_bins
    mat[np.flatnonzero(keep), shell[keep]] = 1.0
    return mat


def _error_spectrum(e: np.ndarray, d: int, lengths: tuple[float, ...]) -> np.ndarray:
    """Binned spectrum ``b_k`` of the error, ``[C, T, K]`` (see module docstring)."""
    if d == 1:
        nx = e.shape[-1]
        return np.abs(np.fft.rfft(e, axis=-1)) / nx * lengths[0]
    nx, ny = e.shape[-2:]
    hx, hy = nx // 2, ny // 2
    n_bins = min(hx, hy)
    power = np.abs(np.fft.fftn(e, axes=(-2, -1))[..., :hx, :hy]) ** 2
    shells = power.reshape(*power.shape[:-2], hx * hy) @ _shell_matrix(hx, hy, n_bins)
    return np.sqrt(shells) / (nx * ny) * (lengths[0] * lengths[1])


def _band_means(spec: np.ndarray, i_low: int, i_high: int) -> dict[str, np.ndarray]:
    out = {}
    for key, (lo, hi) in zip(FRMSE_KEYS, ((0, i_low), (i_low, i_high), (i_high, None)), strict=True):
        band = spec[..., lo:hi]
        out[key] = band.mean(axis=-1) if band.shape[-1] else np.full(spec.shape[:-1], np.nan)
    return out


def _slice_metrics(
    e: np.ndarray, u: np.ndarray, keys: tuple[str, ...], d: int, i_low: int, i_high: int, lengths: tuple[float, ...]
) -> dict[str, np.ndarray]:
    space = tuple(range(2, 2 + d))
    out: dict[str, np.ndarray] = {}
    if "rmse" in keys or "nrmse" in keys:
        err = np.sqrt(np.mean(e**2, axis=space))
        out["rmse"] = err
        with np.errstate(divide="ignore", invalid="ignore"):
            out["nrmse"] = err / np.sqrt(np.mean(u**2, axis=space))
    if "crmse" in keys:
        out["crmse"] = np.abs(np.mean(e, axis=space))
    if "max_error" in keys:
        out["max_error"] = np.max(np.abs(e), axis=space)
    if "brmse" in keys:
        out["brmse"] = _boundary_rms(e, d)
    if any(k in keys for k in FRMSE_KEYS):
        out.update(_band_means(_error_spectrum(e, d, lengths), i_low, i_high))
    return {k: out[k] for k in keys}


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------


def _compute(
    pred: ArrayLike,
    true: ArrayLike,
    keys: tuple[str, ...],
    *,
    spatial_dims: int,
    channel_axis: int | None,
    time_axis: int | None,
    mask: ArrayLike | None,
    i_low: int = I_LOW,
    i_high: int = I_HIGH,
    domain_lengths: float | Sequence[float] = 1.0,
) -> dict[str, np.ndarray]:
    p, u = _as_float64(pred, "pred"), _as_float64(true, "true")
    if p.shape != u.shape:
        raise ValueError(f"pred and true shapes differ: {p.shape} vs {u.shape}")
    shape = p.shape
    perm, has_c, has_t = _permutation(shape, spatial_dims, channel_axis, time_axis)
    _check_bands(i_low, i_high)
    lengths = _domain_lengths(domain_lengths, spatial_dims)
    p, u = _canonical(p, perm, has_c, has_t), _canonical(u, perm, has_c, has_t)
    n = p.shape[0]
    if mask is None:
        scored = np.ones(p.shape[:3], dtype=bool)
    else:
        m = _as_float64(mask, "mask")
        try:
            known = np.broadcast_to(m != 0, shape)
        except ValueError:
            raise ValueError(f"mask of shape {m.shape} does not broadcast to the input shape {shape}") from None
        known = _canonical(known, perm, has_c, has_t)
        # a slice (n, c, t) is dropped when all its spatial points are known
        scored = ~known.all(axis=tuple(range(3, 3 + spatial_dims)))
    out = {k: np.empty(n) for k in keys}
    for i in range(n):
        per_slice = _slice_metrics(p[i] - u[i], u[i], keys, spatial_dims, i_low, i_high, lengths)
        w = scored[i]
        count = int(w.sum())
        for k in keys:
            out[k][i] = np.where(w, per_slice[k], 0.0).sum() / count if count else np.nan
    return out


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------

_ARGS_DOC = """
    Args:
        pred, true: equal shapes, sample axis first; numpy arrays or torch tensors (cast to float64).
            Layouts used in this project: ``[N, T, X]`` (``time_axis=1, channel_axis=None,
            spatial_dims=1``), Darcy ``[N, X, Y]`` (``time_axis=None, channel_axis=None,
            spatial_dims=2``), shallow water ``[N, T, C, X, Y]`` (``time_axis=1, channel_axis=2,
            spatial_dims=2``). The spatial axes are the axes left after the sample, channel and time
            axes, in their order.
        spatial_dims: 1 or 2.
        channel_axis, time_axis: axis indices (negative allowed, never 0) or ``None`` when absent.
        mask: optional, broadcastable to ``pred``; nonzero marks known entries. Slices ``(n, c, t)``
            whose spatial points are all known are left out of the average (see the module docstring).

    Returns:
        float64 ``[N]``: the per-slice value averaged over the scored channels and time steps of each
        sample; NaN for a sample without scored slices.

    Raises:
        ValueError: shapes differ, the rank does not match the given axes, an axis is invalid, or the
            mask does not broadcast.
"""


def _with_args_doc(fn):
    fn.__doc__ = (fn.__doc__ or "") + _ARGS_DOC
    return fn


@_with_args_doc
def rmse(
    pred: ArrayLike,
    true: ArrayLike,
    *,
    spatial_dims: int,
    channel_axis: int | None,
    time_axis: int | None,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Per-sample RMSE, ``mean_{c,t} sqrt(mean_S (pred - true)^2)`` (PDEBench ``err_RMSE``)."""
    return _compute(
        pred, true, ("rmse",), spatial_dims=spatial_dims, channel_axis=channel_axis, time_axis=time_axis, mask=mask
    )["rmse"]


@_with_args_doc
def nrmse(
    pred: ArrayLike,
    true: ArrayLike,
    *,
    spatial_dims: int,
    channel_axis: int | None,
    time_axis: int | None,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Per-sample normalised RMSE, ``mean_{c,t} ||pred - true||_S / ||true||_S`` (PDEBench ``err_nRMSE``).

    The norms run over the spatial points of each slice; a slice with ``||true|| = 0`` gives inf or NaN.
    """
    return _compute(
        pred, true, ("nrmse",), spatial_dims=spatial_dims, channel_axis=channel_axis, time_axis=time_axis, mask=mask
    )["nrmse"]


@_with_args_doc
def crmse(
    pred: ArrayLike,
    true: ArrayLike,
    *,
    spatial_dims: int,
    channel_axis: int | None,
    time_axis: int | None,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Per-sample conserved-quantity error, ``mean_{c,t} |sum_S pred - sum_S true| / |S|`` (PDEBench
    ``err_CSV`` for a batch of one sample).
    """
    return _compute(
        pred, true, ("crmse",), spatial_dims=spatial_dims, channel_axis=channel_axis, time_axis=time_axis, mask=mask
    )["crmse"]


@_with_args_doc
def max_error(
    pred: ArrayLike,
    true: ArrayLike,
    *,
    spatial_dims: int,
    channel_axis: int | None,
    time_axis: int | None,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Per-sample maximum error, ``mean_{c,t} max_S |pred - true|`` (PDEBench ``err_Max`` for a batch of
    one sample).
    """
    return _compute(
        pred, true, ("max_error",), spatial_dims=spatial_dims, channel_axis=channel_axis, time_axis=time_axis, mask=mask
    )["max_error"]


@_with_args_doc
def brmse(
    pred: ArrayLike,
    true: ArrayLike,
    *,
    spatial_dims: int,
    channel_axis: int | None,
    time_axis: int | None,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Per-sample boundary RMSE (PDEBench ``err_BD``): per slice the RMS of the error over the two end
    points (1-D) or the four edges, corners counted once per edge (2-D); then ``mean_{c,t}``.
    """
    return _compute(
        pred, true, ("brmse",), spatial_dims=spatial_dims, channel_axis=channel_axis, time_axis=time_axis, mask=mask
    )["brmse"]


@_with_args_doc
def frmse(
    pred: ArrayLike,
    true: ArrayLike,
    *,
    spatial_dims: int,
    channel_axis: int | None,
    time_axis: int | None,
    mask: ArrayLike | None = None,
    i_low: int = I_LOW,
    i_high: int = I_HIGH,
    domain_lengths: float | Sequence[float] = 1.0,
) -> dict[str, np.ndarray]:
    """Per-sample Fourier-space RMSE in three bands (PDEBench ``err_F``), ``{"frmse_low", "frmse_mid",
    "frmse_high"}``: per slice the mean of the binned error spectrum ``b_k`` over the bins
    ``[0, i_low)``, ``[i_low, i_high)``, ``[i_high, K)``, then ``mean_{c,t}``. An empty band is NaN.
    ``domain_lengths`` (one length for all spatial axes, or one per axis) multiplies ``b_k`` by
    ``Lx`` (1-D) or ``Lx * Ly`` (2-D).
    """
    return _compute(
        pred,
        true,
        FRMSE_KEYS,
        spatial_dims=spatial_dims,
        channel_axis=channel_axis,
        time_axis=time_axis,
        mask=mask,
        i_low=i_low,
        i_high=i_high,
        domain_lengths=domain_lengths,
    )


@_with_args_doc
def pdebench_metrics(
    pred: ArrayLike,
    true: ArrayLike,
    *,
    spatial_dims: int,
    channel_axis: int | None,
    time_axis: int | None,
    mask: ArrayLike | None = None,
    i_low: int = I_LOW,
    i_high: int = I_HIGH,
    domain_lengths: float | Sequence[float] = 1.0,
) -> dict[str, np.ndarray]:
    """All PDEBench metrics at once, ``{key: [N]}`` for every key of :data:`METRIC_KEYS`
    (``rmse, nrmse, crmse, max_error, brmse, frmse_low, frmse_mid, frmse_high``); same values as the
    single-metric functions. ``i_low``, ``i_high`` and ``domain_lengths`` as in :func:`frmse`.
    """
    return _compute(
        pred,
        true,
        METRIC_KEYS,
        spatial_dims=spatial_dims,
        channel_axis=channel_axis,
        time_axis=time_axis,
        mask=mask,
        i_low=i_low,
        i_high=i_high,
        domain_lengths=domain_lengths,
    )
