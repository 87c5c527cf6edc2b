"""Convergence order of the finite-difference operators (once, for the one shared set)."""

from __future__ import annotations

import math

import pytest
import torch

from physdiff.physics.finite_difference import (
    central_diff,
    divergence_2d,
    gradient_2d,
    second_diff,
    time_derivative,
)

NS = (32, 64, 128)


def _order(errors: list[float]) -> float:
    return math.log2(errors[-2] / errors[-1])


def _periodic(n: int, length: float = 2.0) -> tuple[torch.Tensor, float]:
    h = length / n
    x = (torch.arange(n, dtype=torch.float64) + 0.5) * h
    return x, h


def _closed(n: int, a: float = 0.3, b: float = 1.7) -> tuple[torch.Tensor, float]:
    x = torch.linspace(a, b, n, dtype=torch.float64)
    return x, float(x[1] - x[0])


def test_central_diff_periodic_order_2_with_spacing() -> None:
    errs = []
    for n in NS:
        x, h = _periodic(n)  # domain of length 2: the spacing is not 1/n
        u = torch.sin(math.pi * x) + 0.5 * torch.cos(2 * math.pi * x)
        du = math.pi * torch.cos(math.pi * x) - math.pi * torch.sin(2 * math.pi * x)
        u2 = torch.stack([u, 2 * u])  # batch dimension in front
        got = central_diff(u2, h, dim=-1, boundary="periodic")
        assert got.shape == u2.shape
        errs.append(float((got[1] - 2 * du).abs().max()))
    assert _order(errs) == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("boundary", ["interior", "one_sided"])
def test_central_diff_non_periodic_order_2(boundary: str) -> None:
    errs = []
    for n in NS:
        x, h = _closed(n)
        u = torch.exp(x) * torch.sin(3 * x)
        du = torch.exp(x) * (torch.sin(3 * x) + 3 * torch.cos(3 * x))
        got = central_diff(u, h, dim=0, boundary=boundary)
        ref = du[1:-1] if boundary == "interior" else du
        assert got.shape == ref.shape
        errs.append(float((got - ref).abs().max()))
    assert _order(errs) == pytest.approx(2.0, abs=0.15)


@pytest.mark.parametrize("boundary", ["periodic", "interior", "one_sided"])
def test_second_diff_order_2(boundary: str) -> None:
    errs = []
    for n in NS:
        if boundary == "periodic":
            x, h = _periodic(n)
            u = torch.sin(math.pi * x)
            d2 = -(math.pi**2) * u
        else:
            x, h = _closed(n)
            u = torch.exp(x) * torch.sin(3 * x)
            d2 = torch.exp(x) * (-8 * torch.sin(3 * x) + 6 * torch.cos(3 * x))
        got = second_diff(u[None, :, None], h, dim=1, boundary=boundary)[0, :, 0]
        ref = d2[1:-1] if boundary == "interior" else d2
        errs.append(float((got - ref).abs().max()))
    assert _order(errs) == pytest.approx(2.0, abs=0.2)


def test_time_derivative_interior_frames() -> None:
    errs = []
    for n in NS:
        t, dt = _closed(n, 0.0, 1.0)
        x = torch.linspace(0, 1, 5, dtype=torch.float64)
        u = torch.sin(4 * t)[None, :, None] * (1 + x)[None, None, :]  # [B=1, T, X]
        got = time_derivative(u, dt, dim=1)
        assert got.shape == (1, n - 2, 5)
        ref = (4 * torch.cos(4 * t[1:-1]))[:, None] * (1 + x)[None, :]
        errs.append(float((got[0] - ref).abs().max()))
    assert _order(errs) == pytest.approx(2.0, abs=0.1)


def test_gradient_and_divergence_2d() -> None:
    errs = []
    for n in NS:
        x, dx = _closed(n, 0.0, 1.0)
        y, dy = _closed(n // 2, 0.0, 2.0)  # different spacing in y
        X, Y = torch.meshgrid(x, y, indexing="ij")
        fx, fy = torch.sin(X) * Y, torch.cos(Y) * X
        div = torch.cos(X) * Y - torch.sin(Y) * X
        got = divergence_2d(fx[None], fy[None], dx, dy, boundary="interior")[0]
        assert got.shape == (n - 2, n // 2 - 2)
        errs.append(float((got - div[1:-1, 1:-1]).abs().max()))
        gx, gy = gradient_2d(fx, dx, dy, dims=(0, 1), boundary="one_sided")
        assert gx.shape == gy.shape == fx.shape
        assert float((gx - torch.cos(X) * Y).abs().max()) < 10 * dx**2
    assert _order(errs) == pytest.approx(2.0, abs=0.2)


def test_float32_differentiable_and_errors() -> None:
    u = torch.randn(3, 16, dtype=torch.float32, requires_grad=True)
    out = central_diff(u, 0.1) + second_diff(u, 0.1)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert u.grad is not None
    with pytest.raises(ValueError, match="spacing"):
        central_diff(u, 0.0)
    with pytest.raises(ValueError, match="boundary"):
        central_diff(u, 0.1, boundary="wrap")  # type: ignore[arg-type]
