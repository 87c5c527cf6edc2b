"""Tests for the field U-Net denoiser (physdiff.models.unet)."""

from __future__ import annotations

import pytest
import torch

from physdiff.models.unet import PaddedConv, UNet, pad_per_axis


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The tensors here are tiny: one intra-op thread is faster and immune to oversubscription on a
    busy machine. Restored afterwards so other test modules are unaffected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1)


def _inputs(shape, cond_channels=0, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    mask = (torch.rand(shape, generator=g) < 0.3).to(dtype)
    known = torch.randn(shape, generator=g, dtype=dtype) * mask
    noise = torch.rand(shape[0], generator=g, dtype=dtype)
    cond = None
    if cond_channels:
        cond = torch.randn((shape[0], cond_channels, *shape[2:]), generator=g, dtype=dtype)
    return x, noise, known, mask, cond


def _randomise(net: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Overwrite every parameter with random values, so zero-initialised layers do not hide anything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return net


CASES = [
    # (name, spatial_dims, shape [B, C, *S], periodic)
    ("1d", 1, (2, 2, 16), (True,)),
    ("2d", 2, (2, 1, 16, 12), (False, False)),
    ("space-time", 2, (2, 1, 8, 16), (False, True)),
    ("3d space-time", 3, (1, 3, 4, 8, 8), (False, True, True)),
]


@pytest.mark.parametrize("cond_channels", [0, 2])
@pytest.mark.parametrize(("name", "dims", "shape", "periodic"), CASES, ids=[c[0] for c in CASES])
def test_output_shape(name, dims, shape, periodic, cond_channels):
    net = UNet(dims, shape[1], cond_channels=cond_channels, periodic=periodic, **SMALL)
    x, noise, known, mask, cond = _inputs(shape, cond_channels)
    out = net(x, noise, known, mask, cond)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    # EDM-style zero-initialised output layer.
    assert torch.count_nonzero(out) == 0
    out, hidden = net(x, noise, known, mask, cond, return_hidden=True)
    assert out.shape == x.shape
    assert hidden.shape == (shape[0], net.hidden_channels, *shape[2:])


def test_attention_and_more_blocks_shape():
    net = UNet(
        2,
        2,
        base_channels=8,
        channel_mults=(1, 2),
        num_res_blocks=2,
        periodic=(False, True),
        attention=True,
        attention_heads=2,
        dropout=0.1,
    )
    x, noise, known, mask, _ = _inputs((3, 2, 8, 8))
    assert net(x, noise, known, mask).shape == x.shape


def test_pad_per_axis():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    y = pad_per_axis(x, [1, 1], [False, True])
    assert y.shape == (1, 1, 5, 6)
    assert torch.equal(y[0, 0, 0], torch.zeros(6))  # zero padding along axis 0
    assert torch.equal(y[0, 0, 1], torch.tensor([3.0, 0, 1, 2, 3, 0]))  # circular along axis 1


def test_padded_conv_matches_torch_circular():
    torch.manual_seed(0)
    conv = PaddedConv(2, 3, 3, 2, (True, True)).double()
    ref = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular").double()
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(conv(x), ref(x), rtol=0, atol=1e-12)


EQUI_CASES = [
    ("1d", 1, (2, 2, 16), (True,), [(4,), (8,), (-12,)]),
    ("space-time", 2, (2, 1, 8, 16), (False, True), [(0, 4), (0, -8)]),
    ("2d periodic", 2, (1, 2, 8, 12), (True, True), [(4, 0), (4, 8)]),
    ("3d", 3, (1, 1, 4, 8, 8), (False, True, True), [(0, 4, 0), (0, 4, -4)]),
]


@pytest.mark.parametrize("randomised", [False, True], ids=["init", "random-weights"])
@pytest.mark.parametrize(("name", "dims", "shape", "periodic", "shifts"), EQUI_CASES, ids=[c[0] for c in EQUI_CASES])
def test_periodic_shift_equivariance(name, dims, shape, periodic, shifts, randomised):
    torch.manual_seed(1)
    net = UNet(dims, shape[1], cond_channels=1, periodic=periodic, attention=True, **SMALL).double()
    if randomised:
        _randomise(net)
    net.eval()
    x, noise, known, mask, cond = _inputs(shape, cond_channels=1, dtype=torch.float64)
    axes = tuple(range(2, 2 + dims))
    out, hid = net(x, noise, known, mask, cond, return_hidden=True)
    if randomised:
        assert out.abs().max() > 1e-3  # the check is not vacuous
    for shift in shifts:
        roll = lambda z, s=shift: torch.roll(z, s, dims=axes)
        out_s, hid_s = net(roll(x), noise, roll(known), roll(mask), roll(cond), return_hidden=True)
        assert (out_s - roll(out)).abs().max() <= 1e-10
        assert (hid_s - roll(hid)).abs().max() <= 1e-10


def test_shift_along_non_periodic_axis_is_not_equivariant():
    net = _randomise(UNet(2, 1, periodic=(False, True), **SMALL).double()).eval()
    x, noise, known, mask, _ = _inputs((1, 1, 8, 16), dtype=torch.float64)
    out = net(x, noise, known, mask)
    rolled = net(torch.roll(x, 4, 2), noise, torch.roll(known, 4, 2), torch.roll(mask, 4, 2))
    assert (rolled - torch.roll(out, 4, 2)).abs().max() > 1e-3
    # Control for the control: the periodic axis of the same network is equivariant.
    rolled = net(torch.roll(x, 4, 3), noise, torch.roll(known, 4, 3), torch.roll(mask, 4, 3))
    assert (rolled - torch.roll(out, 4, 3)).abs().max() <= 1e-10


def test_output_depends_on_noise_level_known_mask_and_cond():
    net = _randomise(UNet(1, 1, cond_channels=1, periodic=(True,), **SMALL).double()).eval()
    x, noise, known, mask, cond = _inputs((2, 1, 16), cond_channels=1, dtype=torch.float64)
    out = net(x, noise, known, mask, cond)
    assert not torch.allclose(out, net(x, noise + 0.1, known, mask, cond))
    assert not torch.allclose(out, net(x, noise, known + 1.0, mask, cond))
    assert not torch.allclose(out, net(x, noise, known, 1.0 - mask, cond))
    assert not torch.allclose(out, net(x, noise, known, mask, cond + 1.0))


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 1, 8, 10), "axis 1 has size 10.*multiple of 4"),
        ((1, 1, 6, 8), "axis 0 has size 6.*multiple of 4"),
    ],
)
def test_wrong_spatial_size_raises(shape, match):
    net = UNet(2, 1, periodic=(False, True), **SMALL)
    x, noise, known, mask, _ = _inputs(shape)
    with pytest.raises(ValueError, match=match):
        net(x, noise, known, mask)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="spatial_dims"):
        UNet(4, 1)
    with pytest.raises(ValueError, match="periodic"):
        UNet(2, 1, periodic=(True,))
    net = UNet(1, 1, cond_channels=1, **SMALL)
    x, noise, known, mask, cond = _inputs((2, 1, 8), cond_channels=1)
    with pytest.raises(ValueError, match="cond"):
        net(x, noise, known, mask)
    with pytest.raises(ValueError, match="x_t"):
        net(x[:, :, None], noise, known, mask, cond)
    with pytest.raises(ValueError, match="mask"):
        net(x, noise, known, mask[:1], cond)
    with pytest.raises(ValueError, match="noise must"):
        net(x, noise[:1], known, mask, cond)
    with pytest.raises(ValueError, match="cond_channels=0"):
        UNet(1, 1, **SMALL)(x, noise, known, mask, cond)


def test_gradients_flow():
    net = UNet(2, 1, cond_channels=1, periodic=(False, True), attention=True, **SMALL)
    x, noise, known, mask, cond = _inputs((2, 1, 8, 8), cond_channels=1)
    x.requires_grad_(True)
    # First step: with zero-initialised last layers only those layers receive gradient.
    loss = (net(x, noise, known, mask, cond) - known).square().mean()
    loss.backward()
    assert net.out_conv.weight.grad.abs().sum() > 0
    # With random (non-zero) weights every parameter and the input receive a gradient.
    x.grad = None
    net.zero_grad()
    _randomise(net)
    (net(x, noise, known, mask, cond) - known).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_float64_and_scalar_noise_level():
    net = UNet(1, 1, periodic=True, **SMALL).double()
    x, _, known, mask, _ = _inputs((3, 1, 8), dtype=torch.float64)
    out = net(x, torch.tensor(0.5, dtype=torch.float64), known, mask.bool())
    assert out.dtype == torch.float64 and out.shape == x.shape


@pytest.mark.parametrize("periodic", [(True, False, True), (False, True, False), (True, True, True)])
def test_padded_conv_equals_explicit_padding_then_valid_conv(periodic):
    torch.manual_seed(0)
    conv = PaddedConv(2, 3, 3, 3, periodic).double()
    x = torch.randn(2, 2, 4, 6, 5, dtype=torch.float64)
    ref = torch.nn.functional.conv3d(pad_per_axis(x, [1, 1, 1], periodic), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-12)


def test_unet_noise_embedding_is_ddpm_time_for_the_linear_schedule():
    """The U-Net embeds 1000 · t_ref(c): the reference linear schedule's time at noise level c, a function
    of c alone. For the linear schedule it is the diffusion time itself (closed-form inverse, float64), it
    increases with c, and a checkpoint of the other argument (70 · c) does not load into it."""
    import pytest

    from physdiff.diffusion.schedule import make_schedule
    from physdiff.models.embedding import NoiseEmbedding, reference_time

    sched = make_schedule("linear")
    t = torch.linspace(1e-3, 1.0, 101, dtype=torch.float64)
    c = -0.5 * sched.log_snr(t)
    assert torch.allclose(reference_time(c), t, rtol=0, atol=1e-12)
    cs = torch.linspace(-12.0, 12.0, 1001, dtype=torch.float64)
    assert (reference_time(cs).diff() > 0).all()
    cos = make_schedule("cosine")  # another schedule: same noise level, same argument
    tc = torch.tensor([0.3], dtype=torch.float64)
    c_cos = -0.5 * cos.log_snr(tc)
    t_lin = reference_time(c_cos)
    assert torch.allclose(-0.5 * sched.log_snr(t_lin), c_cos, atol=1e-10)
    emb = NoiseEmbedding(8, argument="reference_time")
    assert torch.allclose(emb.angle(c.float()), 1000 * t.float(), atol=1e-3)
    with pytest.raises(RuntimeError, match="reference_time"):
        emb.load_state_dict(NoiseEmbedding(8).state_dict())
    with pytest.raises(ValueError, match="argument"):
        NoiseEmbedding(8, argument="t")


def test_a_checkpoint_of_the_earlier_embedding_is_refused_with_its_reason(monkeypatch):
    """A U-Net checkpoint from before the reference-time embedding (no ``time_embed.reference_time``) is
    refused by name, not loaded into a network that would read its weights with another argument."""
    from types import SimpleNamespace

    from physdiff.training import trainer
    from physdiff.training.errors import CheckpointError

    net = UNet(1, 1, periodic=(True,), **SMALL)
    old = {k: v for k, v in net.state_dict().items() if not k.endswith("time_embed.reference_time")}
    monkeypatch.setattr(trainer, "load_checkpoint", lambda path, map_location=None: {"ema": {"model": old}, "step": 1})
    with pytest.raises(CheckpointError, match="earlier noise embedding"):
        trainer.load_ema_weights(SimpleNamespace(net=net), "run/checkpoint.pt")
    monkeypatch.setattr(
        trainer, "load_checkpoint", lambda path, map_location=None: {"ema": {"model": net.state_dict()}, "step": 7}
    )
    assert trainer.load_ema_weights(SimpleNamespace(net=net), "run/checkpoint.pt") == 7


def _reference_padded_conv_forward(self, x):
    """PaddedConv's earlier formula: F.pad(mode='circular') on the periodic axes, zero padding in the conv."""
    p = self.kernel_size // 2
    widths: list[int] = []
    for periodic in reversed(self.periodic):
        widths += [p, p] if periodic else [0, 0]
    x = torch.nn.functional.pad(x, widths, mode="circular")
    zero_pad = tuple(0 if periodic else p for periodic in self.periodic)
    return [None, torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d][
        self.spatial_dims
    ](x, self.weight, self.bias, padding=zero_pad)


@pytest.mark.parametrize("periodic", [(False, True), (True, True)])
def test_padded_conv_gradients_and_training_steps_equal_the_f_pad_formula(periodic):
    """The concatenation padding gives the values and gradients of F.pad(mode='circular') (to float64
    round-off), and a few AdamW steps of a quick-size U-Net agree with the F.pad formula (float32)."""
    import types

    torch.manual_seed(0)
    conv = PaddedConv(2, 3, 3, 2, periodic).double()
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    g_out = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    grads = []
    for forward in (conv.forward, types.MethodType(_reference_padded_conv_forward, conv)):
        out = forward(x)
        grads.append((out, *torch.autograd.grad(out, (x, conv.weight, conv.bias), g_out)))
    for new, ref in zip(*grads, strict=True):
        torch.testing.assert_close(new, ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="exceeds the size"):
        PaddedConv(1, 1, 7, 2, periodic)(torch.zeros(1, 1, 8, 2))

    nets = []
    for reference in (False, True):
        torch.manual_seed(1)
        net = UNet(2, 1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, periodic=periodic)
        if reference:
            for module in net.modules():
                if isinstance(module, PaddedConv):
                    module.forward = types.MethodType(_reference_padded_conv_forward, module)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        for step in range(3):
            x, noise, known, mask, _ = _inputs((4, 1, 8, 16), seed=step)
            loss = net(x, noise, known, mask).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        nets.append(net)
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
