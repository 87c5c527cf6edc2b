"""Particle denoisers: exact E(n)/permutation equivariance of SpaceTimeEGNN, the transformer control,
shapes, gradients, and the equivariance-testing helper itself."""

from __future__ import annotations

import pytest
import torch

from physdiff.data.augment import (
    permute_edges,
    permute_particles,
    random_orthogonal,
    random_rotate,
    rotate_particle_state,
    translate_positions,
)
from physdiff.models.egnn import SpaceTimeEGNN
from physdiff.models.embedding import NoiseEmbedding, sinusoidal_embedding
from physdiff.models.transformer import ParticleTransformer
from physdiff.testing.equivariance import assert_equivariant, equivariance_errors

F64 = torch.float64
KINDS = dict(
    x_t="particles",
    noise="invariant",
    known="known",
    mask="mask",
    edges="edges",
    masses="node_scalars",
    return_hidden="invariant",
)


def make_inputs(b=2, length=5, k=4, d=3, edges=True, dtype=F64, seed=0):
    """Noisy state, first frame known, random symmetric spring graph, random masses."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, k, 2 * d, generator=g, dtype=dtype)
    mask = torch.zeros_like(x)
    mask[:, 0] = 1.0
    known = torch.randn(b, length, k, 2 * d, generator=g, dtype=dtype) * mask
    e = torch.triu((torch.rand(b, k, k, generator=g) < 0.5).to(dtype), diagonal=1)
    return dict(
        x_t=x,
        noise=torch.rand(b, generator=g, dtype=dtype),
        known=known,
        mask=mask,
        edges=e + e.transpose(1, 2) if edges else None,
        masses=torch.rand(b, k, generator=g, dtype=dtype) + 0.5,
        return_hidden=True,
    )


def small_egnn(d, dtype=F64):
    torch.manual_seed(0)
    return SpaceTimeEGNN(d, hidden=32, layers=2, vector_channels=4).to(dtype)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("edges", [True, False])
def test_egnn_exactly_equivariant_float64(d, edges):
    model = small_egnn(d)
    errors = assert_equivariant(
        model, make_inputs(d=d, edges=edges), KINDS, out_kinds=("vectors", "node_features"), tol=1e-9
    )
    assert {"rotation", "reflection", "translation", "permutation", "combined"} <= set(errors)
    assert max(v for k, v in errors.items() if k != "scale") <= 1e-9


def test_egnn_equivariant_by_hand_with_per_sample_transforms():
    """Independent of the helper: per-sample Q ∈ O(3), translation and permutation applied manually."""
    model = small_egnn(3)
    inp = make_inputs(b=3, k=5)
    g = torch.Generator().manual_seed(1)
    q = random_orthogonal(3, 3, g, dtype=F64)
    q[0, :, 0] *= torch.linalg.det(q[0]).sign()  # sample 0 a rotation, sample 1 surely a reflection
    q[1, :, 0] *= -torch.linalg.det(q[1]).sign()
    c = 5.0 * torch.randn(3, 1, 1, 3, generator=g, dtype=F64)
    perm = torch.stack([torch.randperm(5, generator=g) for _ in range(3)])

    out, hid = model(**inp)
    x2 = permute_particles(translate_positions(rotate_particle_state(inp["x_t"], q), c), perm)
    known2 = permute_particles(translate_positions(rotate_particle_state(inp["known"], q), c, inp["mask"]), perm)
    out2, hid2 = model(
        x2,
        inp["noise"],
        known2,
        permute_particles(inp["mask"], perm),
        edges=permute_edges(inp["edges"], perm),
        masses=permute_particles(inp["masses"], perm, axis=-1),
        return_hidden=True,
    )
    assert (out2 - permute_particles(rotate_particle_state(out, q), perm)).abs().max() <= 1e-9
    assert (hid2 - permute_particles(hid, perm)).abs().max() <= 1e-9


def test_egnn_float32_within_default_tolerance():
    model = small_egnn(3, torch.float32)
    assert_equivariant(model, make_inputs(dtype=torch.float32), KINDS, out_kinds=("vectors", "node_features"))


@pytest.mark.parametrize(("b", "length", "k"), [(1, 1, 1), (2, 3, 2), (1, 7, 6)])
def test_egnn_shapes_any_k_and_l(b, length, k):
    model = small_egnn(2)
    inp = make_inputs(b=b, length=length, k=k, d=2)
    out, hid = model(**inp)
    assert out.shape == (b, length, k, 4) and hid.shape == (b, length, k, 32)
    assert torch.isfinite(out).all()
    assert model(inp["x_t"], inp["noise"], inp["known"], inp["mask"]).shape == out.shape


def test_egnn_uses_conditioning_edges_masses_and_noise_level():
    model = small_egnn(3)
    inp = make_inputs()
    base = model(**inp)[0]
    for key, new in [
        ("known", inp["known"] * 2.0),
        ("edges", 1.0 - inp["edges"] - torch.eye(4, dtype=F64)),
        ("masses", inp["masses"] * 3.0),
        ("noise", 1.0 - inp["noise"]),
    ]:
        assert (model(**{**inp, key: new})[0] - base).abs().max() > 1e-6, key


def test_transformer_is_not_rotation_equivariant():
    torch.manual_seed(0)
    model = ParticleTransformer(3, hidden=32, layers=2).to(F64)
    inp = make_inputs()
    errors = equivariance_errors(model, inp, KINDS, out_kinds=("vectors", "node_features"))
    assert errors["rotation"] > 1e-2 * errors["scale"]
    assert errors["reflection"] > 1e-2 * errors["scale"]
    with pytest.raises(AssertionError, match="rotation: max error"):
        assert_equivariant(model, inp, KINDS, out_kinds=("vectors", "node_features"))


@pytest.mark.parametrize("edges", [True, False])
def test_transformer_shapes(edges):
    torch.manual_seed(0)
    model = ParticleTransformer(2, hidden=32, layers=2)
    inp = make_inputs(d=2, edges=edges, dtype=torch.float32)
    out, hid = model(**inp)
    assert out.shape == inp["x_t"].shape and hid.shape == (2, 5, 4, 32)


@pytest.mark.parametrize("cls", [SpaceTimeEGNN, ParticleTransformer])
def test_gradients_flow_to_all_parameters(cls):
    torch.manual_seed(0)
    model = cls(3, hidden=32, layers=2)
    inp = make_inputs(dtype=torch.float32)
    out, hid = model(**inp)
    (out.square().mean() + hid.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    # the spring-edge attention bias of the transformer only gets gradient through edges: inputs have them
    assert not zero, zero


def test_parameter_counts_reasonable():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert 5e4 < count(SpaceTimeEGNN(3, hidden=64, layers=4)) < 2e6
    assert 5e4 < count(ParticleTransformer(3, hidden=64, layers=4)) < 2e6
    assert count(SpaceTimeEGNN(3, hidden=128, layers=6)) < 1e7


# --- helpers ---------------------------------------------------------------------------------------


def test_random_orthogonal_is_orthogonal_with_both_determinants():
    q = random_orthogonal(256, 3, torch.Generator().manual_seed(0), dtype=F64)
    eye = torch.eye(3, dtype=F64)
    assert (q @ q.transpose(1, 2) - eye).abs().max() < 1e-12
    det = torch.linalg.det(q)
    assert (det > 0).any() and (det < 0).any()
    so = random_orthogonal(64, 2, torch.Generator().manual_seed(0), reflections=False, dtype=F64)
    assert (torch.linalg.det(so) > 0).all()


def test_random_rotate_keeps_x_and_known_consistent():
    x = torch.randn(4, 3, 2, 6, dtype=F64)
    xr, xr2 = random_rotate(x, x.clone(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(xr, xr2)
    assert torch.allclose(xr.unflatten(-1, (2, 3)).norm(dim=-1), x.unflatten(-1, (2, 3)).norm(dim=-1))


def test_helper_catches_each_broken_symmetry():
    d, k = 3, 4
    x = torch.randn(2, 5, k, 2 * d, dtype=F64)
    w = torch.randn(k, k, dtype=F64)
    cases = {
        "translation": lambda x: x,  # positions pass through untouched: not translation-invariant
        "rotation": lambda x: x**3,
        "permutation": lambda x: torch.einsum("ij,bljc->blic", w, x - x.mean(2, keepdim=True)),
    }
    for broken, fn in cases.items():
        with pytest.raises(AssertionError, match=broken):
            assert_equivariant(fn, [x], ["particles"], out_kinds="vectors")

    # a correct function passes: centred positions and velocities
    def centred(x):
        return torch.cat([x[..., :d] - x[..., :d].mean(-2, keepdim=True), x[..., d:]], dim=-1)

    assert_equivariant(centred, [x], ["particles"], out_kinds="vectors")


def test_helper_point_outputs_and_reflection_only_failure():
    d = 2
    x = torch.randn(3, 4, 2 * d, dtype=F64)
    assert_equivariant(lambda x: x[..., :d], [x], ["particles"], out_kinds="points")

    def chiral(v):  # v (r × v): rotation-equivariant, but r × v is a pseudo-scalar under reflections
        cross = v[..., 0:1] * v[..., 3:4] - v[..., 1:2] * v[..., 2:3]
        return v[..., d:] * cross

    errors = equivariance_errors(chiral, [x], ["particles"], out_kinds="vectors", group=("rotation", "reflection"))
    assert errors["rotation"] < 1e-12 and errors["reflection"] > 1e-3


def test_noise_embedding_shapes():
    assert sinusoidal_embedding(torch.arange(7), 9).shape == (7, 9)
    assert NoiseEmbedding(16)(torch.rand(5)).shape == (5, 16)
    assert NoiseEmbedding(16, features=7)(torch.rand(5)).shape == (5, 16)  # odd feature count padded
