"""Hand-computed cases and autograd checks for physdiff.physics.particles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physdiff.physics import particles as P


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _random_graph(gen: torch.Generator, shape: tuple[int, ...], K: int) -> torch.Tensor:
    upper = torch.triu((torch.rand(*shape, K, K, generator=gen) < 0.5).double(), diagonal=1)
    return upper + upper.transpose(-1, -2)


def test_kinetic_energy_and_momenta_hand_computed() -> None:
    V = torch.tensor([[1.0, 0.0], [0.0, -2.0], [3.0, 1.0]])
    m = torch.tensor([1.0, 2.0, 0.5])
    # T = ½(1·1 + 2·4 + 0.5·10) = 7
    assert P.kinetic_energy(V, m).item() == pytest.approx(7.0)
    assert torch.allclose(P.linear_momentum(V, m), torch.tensor([2.5, -3.5]))
    R = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # L_z = Σ m (x v_y − y v_x) = 1·(0) + 2·(0 − 0) + 0.5·(−1·1 − 0) = −0.5
    assert P.angular_momentum(R, V, m).item() == pytest.approx(-0.5)
    R3 = torch.tensor([[1.0, 0.0, 0.0]])
    V3 = torch.tensor([[0.0, 2.0, 0.0]])
    assert torch.allclose(P.angular_momentum(R3, V3, torch.tensor([3.0])), torch.tensor([0.0, 0.0, 6.0]))
    # scalar masses
    assert P.kinetic_energy(V, 2.0).item() == pytest.approx(15.0)


def test_gravity_potential_hand_computed() -> None:
    # equilateral triangle of side 1: U = −G (m1 m2 + m1 m3 + m2 m3) = −2 · 11
    R = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, math.sqrt(3) / 2, 0.0]])
    m = torch.tensor([1.0, 2.0, 3.0])
    assert P.gravity_potential(R, m, G=2.0).item() == pytest.approx(-22.0)
    r = P.pairwise_distances(R)
    assert torch.allclose(r, 1.0 - torch.eye(3))
    assert torch.allclose(P.inverse_distances(R), 1.0 - torch.eye(3))
    # two bodies at distance 2: F_1 = +G m1 m2 / 4 towards body 2
    R2 = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    F = P.gravity_forces(R2, torch.tensor([1.0, 3.0]))
    assert torch.allclose(F, torch.tensor([[0.75, 0.0], [-0.75, 0.0]]))


def test_spring_potential_and_forces_hand_computed() -> None:
    R = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    e = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # springs 0–1 (r² = 4) and 1–2 (r² = 5): U = ½ κ (4 + 5)
    assert P.spring_potential(R, e, kappa=0.1).item() == pytest.approx(0.45)
    F = P.spring_forces(R, e, kappa=0.1)
    expected = -0.1 * torch.tensor([[-2.0, 0.0], [2.0 + 2.0, -1.0], [-2.0, 1.0]])
    assert torch.allclose(F, expected)
    assert torch.allclose(F.sum(0), torch.zeros(2))  # Newton's third law


@pytest.mark.parametrize("D", [2, 3])
def test_forces_are_minus_gradient_of_potential(D: int) -> None:
    gen = torch.Generator().manual_seed(0)
    R = torch.randn(2, 4, 5, D, generator=gen, requires_grad=True)
    m = torch.rand(2, 1, 5, generator=gen) + 0.5
    U = P.gravity_potential(R, m, G=1.3).sum()
    (grad,) = torch.autograd.grad(U, R)
    assert torch.allclose(P.gravity_forces(R, m, G=1.3), -grad, atol=1e-10)

    e = _random_graph(gen, (2, 1), 5)
    U = P.spring_potential(R, e, kappa=0.7).sum()
    (grad,) = torch.autograd.grad(U, R)
    assert torch.allclose(P.spring_forces(R, e, kappa=0.7), -grad, atol=1e-12)


def test_distance_gradients_are_finite() -> None:
    R = torch.randn(3, 4, 3, requires_grad=True)
    (P.pairwise_distances(R).sum() + P.inverse_distances(R).sum()).backward()
    assert torch.isfinite(R.grad).all()
    assert (torch.diagonal(P.inverse_distances(R), dim1=-2, dim2=-1) == 0).all()


def test_numpy_in_numpy_out_and_mixed_stays_torch() -> None:
    rng = np.random.default_rng(0)
    R, V, m = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2)), np.ones(3)
    out = P.kinetic_energy(V, m)
    assert isinstance(out, np.ndarray) and out.shape == (4,)
    np.testing.assert_allclose(out, P.kinetic_energy(torch.from_numpy(V), torch.from_numpy(m)).numpy())
    assert isinstance(P.gravity_forces(torch.from_numpy(R), m), torch.Tensor)
    assert P.linear_momentum(V, m).shape == (4, 2)
    assert P.angular_momentum(R, V, m).shape == (4,)
    res = P.newton_residual(rng.normal(size=(2, 6, 3, 2)), m, 0.1, lambda X: P.gravity_forces(X, m))
    assert isinstance(res, np.ndarray) and res.shape == (2, 4, 3, 2)


def _kepler_circular(dt: float, L: int = 40, a: float = 1.5, G: float = 1.0) -> torch.Tensor:
    """Two unit masses on a circular orbit of separation a: ω² = G (m₁ + m₂)/a³."""
    omega = math.sqrt(2.0 * G / a**3)
    t = torch.arange(L) * dt
    ring = torch.stack([torch.cos(omega * t), torch.sin(omega * t)], -1)  # [L, 2]
    return torch.stack([-0.5 * a * ring, 0.5 * a * ring], dim=-2)  # [L, 2, 2]


def _harmonic_pair(dt: float, L: int = 40, kappa: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit masses on one spring: the separation oscillates with ω² = 2κ."""
    omega = math.sqrt(2.0 * kappa)
    t = torch.arange(L) * dt
    s = torch.stack([torch.cos(omega * t), 0.5 * torch.sin(omega * t)], -1)  # separation [L, 2]
    e = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    return torch.stack([-0.5 * s, 0.5 * s], dim=-2), e


def test_newton_residual_small_and_second_order() -> None:
    m = torch.ones(2)
    rms = []
    for dt in (0.02, 0.01):
        R = _kepler_circular(dt)
        res = P.newton_residual(R, m, dt, lambda X: P.gravity_forces(X, m))
        assert res.shape == (38, 2, 2)  # circular orbit: |a| constant, so any window gives the ratio
        rms.append(res.square().mean().sqrt().item())
    assert rms[0] < 1e-4
    assert rms[0] / rms[1] == pytest.approx(4.0, rel=0.01)

    rms = []
    for dt in (0.1, 0.05):
        R, e = _harmonic_pair(dt, L=round(4.0 / dt) + 1)  # same time window [0, 4]
        res = P.newton_residual(R, m, dt, lambda X, e=e: P.spring_forces(X, e, 0.3))
        rms.append(res.square().mean().sqrt().item())
    assert rms[0] < 1e-3
    assert rms[0] / rms[1] == pytest.approx(4.0, rel=0.01)


def test_newton_residual_batched_and_needs_three_frames() -> None:
    R = torch.stack([_kepler_circular(0.01), _kepler_circular(0.01, a=2.0)])  # [2, L, K, D]
    m = torch.ones(2, 1, 2)
    res = P.newton_residual(R, m, 0.01, lambda X: P.gravity_forces(X, m))
    assert res.shape == (2, 38, 2, 2)
    assert res.abs().max() < 1e-4
    with pytest.raises(ValueError, match="at least 3 frames"):
        P.newton_residual(R[:, :2], m, 0.01, lambda X: P.gravity_forces(X, m))


def test_zero_com_projection_is_the_orthogonal_projection_onto_the_mass_weighted_subspace() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.tensor([1.0, 2.0, 0.5])
    x, y = torch.randn(2, 4, 3, 3, generator=g)  # [..., K, D]
    px, py = P.zero_com_projection(x, m), P.zero_com_projection(y, m)
    # range: Σ_k m_k (Px)_k = 0; idempotent; symmetric ⟨Px, y⟩ = ⟨x, Py⟩ (orthogonal)
    assert torch.allclose((m[:, None] * px).sum(-2), torch.zeros(4, 3), atol=1e-12)
    assert torch.allclose(P.zero_com_projection(px, m), px, atol=1e-12)
    assert torch.allclose((px * y).sum(), (x * py).sum(), atol=1e-12)
    # data centred with the mass-weighted centre of mass are fixed points
    centred = x - P.centre_of_mass(x, m)
    assert torch.allclose(P.zero_com_projection(centred, m), centred, atol=1e-12)
    # the plain-mean projection is wrong for unequal masses (the defect this replaces)
    assert not torch.allclose((m[:, None] * (x - x.mean(-2, keepdim=True))).sum(-2), torch.zeros(4, 3), atol=1e-3)
    # equal masses: subtract the mean; rotations and permutations commute with it
    assert torch.allclose(P.zero_com_projection(x, 2.0), x - x.mean(-2, keepdim=True), atol=1e-12)
    q = torch.linalg.qr(torch.randn(3, 3, generator=g))[0]
    assert torch.allclose(P.zero_com_projection(x @ q.T, m), px @ q.T, atol=1e-12)
    perm = torch.tensor([2, 0, 1])
    assert torch.allclose(P.zero_com_projection(x[..., perm, :], m[perm]), px[..., perm, :], atol=1e-12)
    # numpy in, numpy out
    assert np.allclose(P.zero_com_projection(x.numpy(), m.numpy()), px.numpy())
