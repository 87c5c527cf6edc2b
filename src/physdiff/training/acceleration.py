"""Speed options for the denoiser network: ``torch.compile`` and bf16 autocast (``train.compile``,
``train.precision``, ``sample.compile``).

Both wrap only the *network* inside a :class:`~physdiff.diffusion.parametrisation.Denoiser`: the schedule
maths, the projection, the loss reduction, the priors' residuals, the optimiser and the EMA stay in the
parameters' dtype (fp32). The wrapped network shares its parameters with the original, so checkpoints,
the EMA and the optimiser see the plain module (no ``_orig_mod.`` prefixes).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from physdiff.diffusion.parametrisation import Denoiser

__all__ = ["PRECISIONS", "AutocastNet", "accelerated", "autocast_dtype"]

#: ``train.precision``: the network's forward in fp32 or under bf16 autocast
PRECISIONS = ("fp32", "bf16")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (``None`` for fp32); an unknown name is refused."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return torch.bfloat16 if precision == "bf16" else None


def _cast(out: Any, dtype: torch.dtype) -> Any:
    """Floating tensors of a network output (a tensor, or tuples / lists / dicts of them) cast to ``dtype``."""
    if isinstance(out, Tensor):
        return out.to(dtype) if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_cast(o, dtype) for o in out)
    if isinstance(out, dict):
        return {k: _cast(v, dtype) for k, v in out.items()}
    return out


class AutocastNet(nn.Module):
    """``net`` run under :func:`torch.autocast` with ``dtype``; its floating outputs are cast back to the dtype
    of the first input (x_t), so everything after the network (Tweedie estimate, loss, priors) is fp32.

    Matmuls and convolutions run in ``dtype``; autocast keeps reductions such as norms and softmax in fp32.
    """

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = self.net(x, *args, **kwargs)
        return _cast(out, x.dtype)


def accelerated(
    denoiser: Denoiser, *, compile: bool = False, precision: str = "fp32", compile_options: dict | None = None
) -> Denoiser:
    """``denoiser`` with its network under bf16 autocast (``precision="bf16"``) and/or ``torch.compile``d.

    Returns ``denoiser`` itself when neither is asked for; otherwise a new :class:`Denoiser` over the wrapped
    network, with the same schedule, prediction and projection (and the same parameters).
    ``compile_options``: keyword arguments of :func:`torch.compile` (``backend``, ``mode``, ``dynamic``).
    """
    dtype = autocast_dtype(precision)
    net: nn.Module = denoiser.net
    if dtype is not None:
        net = AutocastNet(net, dtype)
    if compile:
        net = torch.compile(net, **(compile_options or {}))  # type: ignore[assignment]
    if net is denoiser.net:
        return denoiser
    return Denoiser(net, denoiser.schedule, denoiser.prediction, denoiser._project)
