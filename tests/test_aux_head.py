"""The auxiliary-head variant of nonlinear priors (method.md §3.3): symmetries of the hidden states and of
the head, gradient flow into the shared trunk, a tiny training run with checkpoint/resume, and refusals."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from physdiff.config import apply_overrides
from physdiff.data.augment import (
    permute_edges,
    permute_particles,
    random_orthogonal,
    rotate_particle_state,
    translate_positions,
)
from physdiff.diffusion import Denoiser, make_schedule
from physdiff.diffusion.objective import diffusion_loss
from physdiff.experiments.config import (
    DataConfig,
    EGNNConfig,
    ExperimentConfig,
    PriorConfig,
    SampleConfig,
    preset_config,
)
from physdiff.experiments.harness import Prepared, prepare, train_arm
from physdiff.experiments.particle_task import ParticleTask, zero_com_projection
from physdiff.models.egnn import SpaceTimeEGNN
from physdiff.models.feature_head import FeatureHead
from physdiff.priors import (
    AuxHeadPrior,
    attach_aux_heads,
    make_aux_head_prior,
    make_prior,
    total_prior_loss,
)
from physdiff.training.checkpoint import CheckpointError, load_checkpoint
from physdiff.training.trainer import TrainConfig, load_ema_weights

F64 = torch.float64


def _inputs(b=2, length=5, k=4, d=3, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, k, 2 * d, generator=g, dtype=dtype)
    mask = torch.zeros_like(x)
    mask[:, 0] = 1.0
    e = torch.triu((torch.rand(b, k, k, generator=g) < 0.5).to(dtype), diagonal=1)
    return dict(
        x_t=x,
        noise=torch.randn(b, generator=g, dtype=dtype),
        known=x * mask,
        mask=mask,
        edges=e + e.transpose(1, 2),
        masses=torch.rand(b, k, generator=g, dtype=dtype) + 0.5,
    )


def _transform(inp, seed=1):
    """A per-sample orthogonal Q (one rotation, one reflection), a translation and a permutation."""
    g = torch.Generator().manual_seed(seed)
    b, _, k, two_d = inp["x_t"].shape
    d = two_d // 2
    q = random_orthogonal(b, d, g, dtype=F64)
    q[0, :, 0] *= torch.linalg.det(q[0]).sign()
    q[1, :, 0] *= -torch.linalg.det(q[1]).sign()
    c = 3.0 * torch.randn(b, 1, 1, d, generator=g, dtype=F64)
    perm = torch.stack([torch.randperm(k, generator=g) for _ in range(b)])
    out = dict(
        x_t=permute_particles(translate_positions(rotate_particle_state(inp["x_t"], q), c), perm),
        noise=inp["noise"],
        known=permute_particles(translate_positions(rotate_particle_state(inp["known"], q), c, inp["mask"]), perm),
        mask=permute_particles(inp["mask"], perm),
        edges=permute_edges(inp["edges"], perm),
        masses=permute_particles(inp["masses"], perm, axis=-1),
    )
    return out, perm


def _pairs_to_matrix(p: torch.Tensor, k: int) -> torch.Tensor:
    """Pair predictions [B, L, K(K-1)/2] (i < j) → a symmetric [B, L, K, K] matrix (0 on the diagonal)."""
    i, j = torch.triu_indices(k, k, offset=1)
    m = p.new_zeros(*p.shape[:-1], k, k)
    m[..., i, j] = p
    m[..., j, i] = p
    return m


def _small_egnn(d=3, hidden=16):
    torch.manual_seed(0)
    return SpaceTimeEGNN(d, hidden=hidden, layers=2, vector_channels=4).to(F64)


# ------------------------------------------------------------------------------------ (a) hidden states
def test_egnn_hidden_states_invariant_and_permutation_equivariant():
    net = _small_egnn()
    inp = _inputs(b=2, k=5)
    inp2, perm = _transform(inp)
    out, hid = net(**inp, return_hidden=True)
    out2, hid2 = net(**inp2, return_hidden=True)
    assert hid.shape == (2, 5, 5, 16)
    assert torch.equal(out, net(**inp))  # return_hidden does not change the output
    assert (hid2 - permute_particles(hid, perm)).abs().max() <= 1e-9
    # the test is not vacuous: hidden states differ between particles and depend on the input
    assert hid.std(dim=2).min() > 1e-3
    assert (net(**{**inp, "x_t": inp["x_t"] * 1.5}, return_hidden=True)[1] - hid).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------- (b) the head
@pytest.mark.parametrize("with_edges", [False, True])
def test_head_predictions_invariant_and_permutation_equivariant(with_edges):
    k = 5
    net = _small_egnn()
    torch.manual_seed(1)
    head = FeatureHead(16, {"potential": "pair", "kinetic": "node", "total": "frame"}).to(F64)
    inp = _inputs(b=2, k=k)
    inp2, perm = _transform(inp)
    e1, e2 = (inp["edges"], inp2["edges"]) if with_edges else (None, None)
    z1 = head(net(**inp, return_hidden=True)[1], e1)
    z2 = head(net(**inp2, return_hidden=True)[1], e2)
    assert z1["kinetic"].shape == (2, 5, k) and z1["potential"].shape == (2, 5, k * (k - 1) // 2)
    assert z1["total"].shape == (2, 5)
    assert (z2["kinetic"] - permute_particles(z1["kinetic"], perm, axis=-1)).abs().max() <= 1e-9
    m1, m2 = _pairs_to_matrix(z1["potential"], k), _pairs_to_matrix(z2["potential"], k)
    assert (m2 - permute_edges(m1, perm)).abs().max() <= 1e-9
    assert (z2["total"] - z1["total"]).abs().max() <= 1e-9
    if with_edges:  # the spring graph enters the pair prediction
        assert (head(net(**inp, return_hidden=True)[1], None)["potential"] - z1["potential"]).abs().max() > 1e-6


def test_aux_penalty_is_invariant_for_the_energy_prior():
    """penalty(g·x) = penalty(x): targets |V|², 1/R_ij and the head's predictions are invariant."""
    net = _small_egnn()
    torch.manual_seed(2)
    prior = make_aux_head_prior(make_prior("energy", "three-body", kinetic_per_component=False), 16)
    prior.head.to(F64)
    inp = _inputs(b=2, k=3)
    inp2, _ = _transform(inp)
    pens = []
    for i in (inp, inp2):
        hid = net(**i, return_hidden=True)[1]
        x0 = i["x_t"]
        x0 = torch.cat([x0[..., :3] - x0[..., :3].mean(-2, keepdim=True), x0[..., 3:]], -1)  # targets are CoM-free
        pens.append(prior.penalty(x0, x0, hidden=hid, masses=i["masses"]))
    assert pens[0].shape == (2,)
    assert torch.allclose(pens[0], pens[1], atol=1e-9, rtol=0)


# --------------------------------------------------------------------------------------- (c) gradients
def test_aux_penalty_gradients_reach_the_head_and_the_shared_trunk():
    torch.manual_seed(0)
    net = SpaceTimeEGNN(3, hidden=16, layers=1, vector_channels=4)
    den = Denoiser(net, make_schedule("linear"), project=zero_com_projection(3))
    prior = make_aux_head_prior(make_prior("energy", "three-body", kinetic_per_component=False), 16)
    heads = attach_aux_heads(den, [prior])
    assert den.net.aux_heads is heads and heads["energy"] is prior.head
    assert any(k.startswith("aux_heads.energy.") for k in den.net.state_dict())
    assert {id(p) for p in prior.head.parameters()} <= {id(p) for p in den.net.parameters()}  # optimiser, EMA

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 6, 3, 6, generator=g)
    x0 = zero_com_projection(3)(x0)
    out = diffusion_loss(den, x0, generator=g, return_hidden=True)
    assert out.pred.hidden is not None and out.pred.hidden.shape == (4, 6, 3, 16)
    total, terms = total_prior_loss([prior], out)  # passes the hidden states as context
    assert set(terms) == {"energy"} and abs(terms["energy"] - float(total.detach())) < 1e-6
    total.backward()  # the prior term only: no score loss
    for name, p in prior.head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    trunk = den.net
    for mod in (trunk.embed_inv, trunk.egnn[0].phi_h, trunk.temporal[0].mlp, trunk.embed_time):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())
    # the score output head is not on the aux path
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in trunk.head.parameters())

    # an aux-head prior on a loss that did not return hidden states is refused clearly
    plain = diffusion_loss(den, x0, generator=g)
    with pytest.raises(ValueError, match="hidden states"):
        total_prior_loss([prior], plain)


# ------------------------------------------------------------------------------- (d) tiny training run
def _tiny_cfg(steps: int) -> ExperimentConfig:
    return ExperimentConfig(
        experiment="three-body",
        metrics={"traj_error": "prediction"},
        data=DataConfig(system="three-body", n=48, seed=0, settings={"n_frames": 8}),
        model=EGNNConfig(hidden=16, layers=1, vector_channels=4, heads=4),
        train=TrainConfig(
            steps=steps,
            batch_size=16,
            lr=1e-2,
            warmup=1,
            ema_decay=0.0,
            log_every=5,
            checkpoint_every=1000,
            objective="x0",
        ),
        sample=SampleConfig(n_test=4, batch_size=4, steps=3),
        priors=[PriorConfig("energy", 1.0, "one", "aux_head", {"kinetic_per_component": False})],
    )


def _with(prep: Prepared, cfg: ExperimentConfig) -> Prepared:
    """The same data and scaling under another config."""
    return Prepared(
        ParticleTask(cfg), prep.data, prep.train, prep.evaluation, prep.indices, prep.scaling, prep.split, prep.digest
    )


def _aux_penalty(den, prep: Prepared) -> float:
    """The aux penalty of the trained head on the training set at low noise, fixed times and noise."""
    (base_prior,) = prep.task.build_priors(_tiny_cfg(1).priors, prep.train, prep.scaling)
    prior = AuxHeadPrior(name="energy", case="nonlinear", base=base_prior.base, head=den.net.aux_heads["energy"])
    tt = prep.task.to_tensors(prep.train, prep.scaling, "prediction")
    x0, masses = tt["x0"], tt["masses"]
    t = torch.linspace(0.02, 0.2, x0.shape[0])
    with torch.no_grad():
        g = torch.Generator().manual_seed(123)
        out = diffusion_loss(den, x0, mask=tt["mask"], t=t, generator=g, return_hidden=True, masses=masses)
        return float(prior.penalty(out.pred.x0, x0, t, hidden=out.pred.hidden, masses=masses).mean())


def test_tiny_training_run_with_aux_head_energy_prior(tmp_path):
    n_steps = 40
    cfg = _tiny_cfg(n_steps)
    prep = prepare(cfg, tmp_path / "data", progress=False)
    pens = {}
    for steps in (1, n_steps):  # the same seed: after one step (≈ predicting the mean) and after training
        run = tmp_path / f"s{steps}"
        den = train_arm(_with(prep, _tiny_cfg(steps)), "prior:energy", 0, run, progress=False)
        pens[steps] = _aux_penalty(den, prep)
    assert pens[n_steps] < 0.85 * pens[1], pens

    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_steps // 5 and "energy" in rows[0] and "loss_score" in rows[0]
    assert all(np.isfinite(float(r["energy"])) and float(r["energy"]) > 0 for r in rows)

    state = load_checkpoint(run / "checkpoint.pt")
    head_keys = [k for k in state["model"] if k.startswith("aux_heads.energy.")]
    assert "aux_heads.energy.loc" in head_keys and "aux_heads.energy.scale" in head_keys
    assert any(k.startswith("aux_heads.energy.") for k in state["ema"]["model"])
    assert float(state["model"]["aux_heads.energy.scale"].min()) > 0  # the normalisation was fitted

    # resume: the heads load strictly from the checkpoint (nothing left to train)
    den2 = train_arm(prep, "prior:energy", 0, run, resume=True, progress=False)
    for k, v in den.net.state_dict().items():
        assert torch.equal(v, den2.net.state_dict()[k]), k
    # sampling: a network built without heads loads the checkpoint and skips the head weights
    fresh = prep.task.build_denoiser(prep.scaling, prep.task.to_tensors(prep.train, prep.scaling, "prediction"))
    assert load_ema_weights(fresh, run / "checkpoint.pt") == n_steps
    assert not hasattr(fresh.net, "aux_heads")
    for k, v in fresh.net.state_dict().items():
        assert torch.equal(v, den.net.state_dict()[k]), k
    # resuming that run with the Tweedie variant (no head) is refused with a message that says why
    tweedie = _tiny_cfg(n_steps + 5)
    tweedie.priors[0].variant = "tweedie"
    with pytest.raises(CheckpointError, match="auxiliary prior heads"):
        train_arm(_with(prep, tweedie), "prior:energy", 0, run, resume=True, progress=False)


def _priors(cfg: ExperimentConfig):
    """The priors of ``cfg`` on a tiny simulated set of its system."""
    from physdiff.data.particles_h5 import ParticleData
    from physdiff.systems.registry import get_system

    system = get_system(cfg.data.system).with_settings(n_frames=6)
    sim = system.simulate(6, seed=0)
    data = ParticleData(
        sim["positions"], sim["velocities"], sim["masses"], sim.get("edges"), system.name, dict(system.constants)
    )
    task = ParticleTask(cfg)
    return task.build_priors(cfg.priors, data, task.fit_scaling(data))


# ------------------------------------------------------------------------------------------ (e) refusals
def test_aux_head_variant_refused_for_linear_prior_and_unknown_variant():
    cfg = apply_overrides(preset_config("five-spring"), ["priors.0.variant=aux_head"])
    assert cfg.priors[0].name == "momentum"
    with pytest.raises(ValueError, match="'momentum'.*nonlinear"):
        _priors(cfg)
    with pytest.raises(ValueError, match="nonlinear"):
        make_aux_head_prior(make_prior("momentum", "three-body"), 16)
    with pytest.raises(ValueError, match="'priors.0.variant': 'head' is not one of"):
        apply_overrides(preset_config("three-body"), ["priors.0.variant=head"])
    with pytest.raises(ValueError, match="rotation-invariant"):  # the poster's per-component default
        make_aux_head_prior(make_prior("energy", "three-body"), 16)
    default = apply_overrides(preset_config("three-body"), ["priors.0.options={}"])
    with pytest.raises(ValueError, match="kinetic_per_component=False"):
        _priors(default)


def test_variant_from_config_builds_a_head_or_not():
    cfg = preset_config("three-body")
    assert PriorConfig().variant == "tweedie"  # the default of a user's prior config
    cfg = apply_overrides(cfg, ["priors.0.variant=tweedie"])
    (plain,) = _priors(cfg)
    assert not isinstance(plain, AuxHeadPrior)
    cfg = apply_overrides(cfg, ["priors.0.variant=aux_head"])
    (aux,) = _priors(cfg)
    assert isinstance(aux, AuxHeadPrior) and aux.name == "energy" and aux.weight == cfg.priors[0].weight
    assert aux.head.layout == {"potential": "pair", "kinetic": "node"}
    assert aux.head.norm.normalized_shape == (cfg.model.hidden,)
