"""``train.compile`` / ``sample.compile`` (torch.compile of the denoiser network) and ``train.precision``
(bf16 autocast of the network's forward; EMA, loss reduction and priors in fp32)."""

from __future__ import annotations

import pytest
import torch

from physdiff.config import apply_overrides, from_dict
from physdiff.diffusion import Denoiser, make_schedule
from physdiff.diffusion.objective import diffusion_loss
from physdiff.experiments.config import ExperimentConfig, SampleConfig
from physdiff.models.egnn import SpaceTimeEGNN
from physdiff.models.mlp import MLPDenoiser
from physdiff.models.unet import UNet
from physdiff.training.acceleration import AutocastNet, accelerated, autocast_dtype
from physdiff.training.checkpoint import load_checkpoint
from physdiff.training.trainer import TrainConfig, train


def _toy(n: int = 256) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"x0": torch.randn(n, 2, generator=g) * 0.7 + 1.0}


def _mlp_denoiser(seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(MLPDenoiser(2, hidden=32, layers=2), make_schedule("linear"), prediction="eps")


def test_config_keys_default_off_and_bad_values_refused() -> None:
    cfg = ExperimentConfig()
    assert cfg.train.compile is False and cfg.train.precision == "fp32" and cfg.sample.compile is False
    cfg = apply_overrides(cfg, ["train.precision=bf16", "train.compile=true", "sample.compile=true"])
    assert cfg.train.precision == "bf16" and cfg.train.compile and cfg.sample.compile
    with pytest.raises(ValueError, match="precision"):
        from_dict(TrainConfig, {"precision": "fp16"})
    with pytest.raises(ValueError, match="train.precision 'fp16'"):
        autocast_dtype("fp16")
    assert isinstance(from_dict(SampleConfig, {"compile": True}), SampleConfig)


def test_accelerated_is_the_identity_when_off() -> None:
    den = _mlp_denoiser()
    assert accelerated(den) is den


@pytest.mark.parametrize("model", ["mlp", "egnn", "unet"])
def test_bf16_forward_shapes_finite_fp32_outputs_and_really_bf16(model: str) -> None:
    """Under bf16 autocast the network's outputs come back in fp32, with the shapes of fp32, finite, and differ
    from fp32 by bf16 round-off (so autocast did act: not bit-equal, yet within a few 1e-2 relative)."""
    torch.manual_seed(0)
    if model == "mlp":
        net, x, ctx = MLPDenoiser(2, hidden=32, layers=2), torch.randn(8, 2), {}
    elif model == "egnn":
        net = SpaceTimeEGNN(3, hidden=16, layers=2, vector_channels=2, heads=2)
        x, ctx = torch.randn(4, 6, 3, 6), {}
    else:
        net = UNet(2, 1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1)
        x, ctx = torch.randn(2, 1, 16, 16), {}
    with torch.no_grad():  # zero-initialised output layers would make both outputs 0
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    den = Denoiser(net, make_schedule("linear"), prediction="eps")
    fast = accelerated(den, precision="bf16")
    assert isinstance(fast.net, AutocastNet) and fast.net.net is net  # the same parameters
    t = torch.full((x.shape[0],), 0.5)
    ref, out = den(x, t, **ctx), fast(x, t, **ctx)
    for a, b in ((ref.x0, out.x0), (ref.eps, out.eps), (ref.raw, out.raw)):
        assert b.dtype == torch.float32 and b.shape == a.shape and torch.isfinite(b).all()
    rel = (out.raw - ref.raw).norm() / ref.raw.norm()
    assert 0 < rel < 5e-2  # bf16 has 8 mantissa bits: ~4e-3 per operation


def test_bf16_training_keeps_fp32_state_and_loss(tmp_path) -> None:
    den = _mlp_denoiser()
    cfg = TrainConfig(steps=6, batch_size=32, log_every=2, checkpoint_every=6, precision="bf16")
    state = train(den, _toy(), cfg, tmp_path, progress=False)
    assert len(state.losses) == 6 and all(torch.isfinite(torch.tensor(state.losses)))
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    for group in ("model", "ema"):
        params = saved[group]["model"] if group == "ema" else saved[group]
        assert all(v.dtype == torch.float32 for v in params.values() if v.is_floating_point())
    # the loss of the wrapped denoiser is reduced in fp32
    x0 = _toy(16)["x0"]
    loss = diffusion_loss(accelerated(den, precision="bf16"), x0).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path) -> None:
    """A few steps with ``train.compile: true`` give the eager run's weights to float tolerance, and the
    checkpoint is the plain module's (loadable without torch.compile's prefixes)."""
    cfg = TrainConfig(steps=3, batch_size=32, log_every=1, checkpoint_every=3, warmup=1)
    eager, compiled = _mlp_denoiser(), _mlp_denoiser()
    a = train(eager, _toy(), cfg, tmp_path / "eager", progress=False)
    b = train(compiled, _toy(), TrainConfig(**{**cfg.__dict__, "compile": True}), tmp_path / "compiled", progress=False)
    torch.testing.assert_close(torch.tensor(b.losses), torch.tensor(a.losses), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(eager.net.named_parameters(), compiled.net.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    state = load_checkpoint(tmp_path / "compiled" / "checkpoint.pt")
    assert not any("_orig_mod" in k for k in state["model"])
    _mlp_denoiser(seed=1).net.load_state_dict(state["model"])


def test_compiled_sampling_matches_eager() -> None:
    """``sample.compile``: the compiled denoiser samples what the eager one does (DDIM, 4 steps). Traced by
    dynamo with the ``aot_eager`` backend (no C++ compilation, so it stays fast on a CI core; the inductor
    backend is exercised by the slow training test above)."""
    from physdiff.diffusion import sample

    den = _mlp_denoiser()
    fast = accelerated(den, compile=True, compile_options={"backend": "aot_eager"})
    assert fast is not den and fast.net is not den.net
    kw = {"sampler": "ddim", "steps": 4, "progress": False}
    a = sample(den, (16, 2), generator=torch.Generator().manual_seed(3), **kw)
    b = sample(fast, (16, 2), generator=torch.Generator().manual_seed(3), **kw)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
