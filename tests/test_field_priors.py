"""PDE-residual priors in model coordinates: layout round trips, floors, sign bugs, gradients, symmetry."""

import dataclasses

import numpy as np
import pytest
import torch

from physdiff.experiments.config import preset_config
from physdiff.experiments.field_task import FieldLayout, FieldScaling, FieldTask, condition_dropout
from physdiff.priors.fields import make_field_prior, noise_gain
from physdiff.systems.pde_registry import get_pde_system, spacing_from_coords

SMALL = {
    "advection": {"nx": 32, "nt": 16},
    "burgers": {"nx": 32, "nt": 16},
    "darcy": {"n_grid": 16},
    "shallow-water": {"nx": 16, "ny": 16, "nt": 8},
}


def _data(system, n=6):
    from physdiff.data.pdebench import FieldData

    sim = get_pde_system(system).simulate(n, 0, **SMALL[system])
    return FieldData(system, sim.fields, sim.coords, sim.parameters, sim.coefficient)


def _setup(system, time_as_channels=True, prior_name="residual"):
    data = _data(system)
    cfg = preset_config(system)
    cfg.model.time_as_channels = time_as_channels
    cfg.priors[0].name = prior_name
    task = FieldTask(cfg)
    scaling = task.fit_scaling(data)
    prior = task.build_priors(cfg.priors, data, scaling)[0]
    tensors = task.to_tensors(data, scaling, "generation", dtype=torch.float64)
    ctx = {"cond": tensors["cond"]} if "cond" in tensors else {}
    return data, task.layout(scaling), prior, tensors, ctx


@pytest.mark.parametrize("system", list(SMALL))
@pytest.mark.parametrize("time_as_channels", [True, False])
def test_layout_round_trip(system, time_as_channels):
    data = _data(system, n=3)
    layout = FieldLayout(get_pde_system(system), FieldScaling.fit(data), time_as_channels)
    u = torch.from_numpy(data.fields)
    x = layout.to_model(u)
    expected = {"shallow-water": 4 if time_as_channels else 5}.get(system, u.dim() + 1)
    assert x.dim() == expected
    torch.testing.assert_close(layout.to_physical(x), u, rtol=0, atol=1e-12)
    # normalised per physical channel
    assert abs(float(x.mean())) < 1e-8 or system == "shallow-water"
    if data.coefficient is not None:
        a = torch.from_numpy(data.coefficient)
        torch.testing.assert_close(layout.cond_to_physical(layout.cond_to_model(a)), a)


@pytest.mark.parametrize("system", list(SMALL))
def test_prior_at_floor_on_ground_truth_and_large_on_perturbed(system):
    data, layout, prior, t, ctx = _setup(system)
    prior.check_ground_truth(t["x0"], **ctx)  # does not raise
    # the prior in model coordinates is the physical residual divided by the normaliser
    phys = get_pde_system(system).residual(data) / prior.normaliser
    torch.testing.assert_close(prior.residual(t["x0"], **ctx), phys.to(torch.float64))
    clean = float(prior.penalty(t["x0"], **ctx).mean())
    g = torch.Generator().manual_seed(1)
    noisy = float(
        prior.penalty(t["x0"] + 0.1 * torch.randn(t["x0"].shape, generator=g, dtype=torch.float64), **ctx).mean()
    )
    # normalised by the white-noise gain, 10 % noise adds ≈ 0.1² on top of the floor (exactly so in
    # expectation for a linear residual: E‖R(x0 + δ)‖² = ‖R(x0)‖² + E‖R(δ)‖²). Monte-Carlo error of a mean
    # over n residual points whose stencil couples ~5 neighbours (the gain is one such estimate too):
    # relative std sqrt(2·5/n) each; allow 4 of the combined, plus the O(0.1) curvature of a multilinear R
    n = prior.residual(t["x0"], **ctx).numel()
    tol = 4 * (2 * 2 * 5 / n) ** 0.5 + (0.1 if prior.case == "multilinear" else 0.0)
    assert noisy - clean == pytest.approx(0.01, rel=tol)


def test_sign_and_spacing_bugs_are_refused():
    data, layout, prior, t, _ = _setup("advection")
    wrong_sign = make_field_prior(
        "residual",
        "advection",
        spacing=spacing_from_coords(data.coords),
        parameters={**data.parameters, "beta": -float(data.parameters["beta"])},
        to_physical=layout.to_physical,
        normaliser=prior.normaliser,
        term_scale=prior.term_scale,
    )
    with pytest.raises(ValueError, match="not ≈ its floor"):
        wrong_sign.check_ground_truth(t["x0"])
    spacing = spacing_from_coords(data.coords)
    no_dx = dataclasses.replace(prior, spacing={**spacing, "dx": 1.0})
    with pytest.raises(ValueError, match="grid spacing"):
        no_dx.check_ground_truth(t["x0"])


def test_darcy_prior_needs_permeability_and_rejects_bad_names():
    with pytest.raises(ValueError, match="permeability"):
        make_field_prior("residual", "darcy", spacing={"dx": 0.1})
    with pytest.raises(ValueError, match="does not apply"):
        make_field_prior("momentum", "advection")
    with pytest.raises(ValueError, match="λ"):
        make_field_prior("residual", "advection", weight=-1.0)


def test_cases_follow_the_residuals():
    assert make_field_prior("residual", "advection").case == "linear"
    assert make_field_prior("residual", "burgers").case == "multilinear"
    assert make_field_prior("residual", "shallow-water").case == "linear"
    assert make_field_prior("momentum", "shallow-water").case == "multilinear"


def test_shallow_water_momentum_prior_penalises_the_residual_of_x0_hat_at_its_floor():
    """The momentum prior is a multilinear residual: penalty ‖R(x̂0)‖² (no clean target needed), at its
    discretisation floor on the simulator's fields and far above it on perturbed fields."""
    _, _, prior, t, _ = _setup("shallow-water", prior_name="momentum")
    prior.check_ground_truth(t["x0"])  # relative floor below the tolerance
    clean = prior.penalty(t["x0"])  # no x0 target: the multilinear case
    torch.testing.assert_close(clean, prior.residual(t["x0"]).flatten(1).square().mean(1))
    g = torch.Generator().manual_seed(0)
    noisy = prior.penalty(t["x0"] + 0.1 * torch.randn(t["x0"].shape, generator=g, dtype=torch.float64))
    # normalised by its white-noise gain: 10 % noise adds ≈ 0.1² (the dam-break front keeps a floor of the
    # same order at this coarse grid); tolerance as in the test above (n points, stencil ~7, curvature)
    n = prior.residual(t["x0"]).numel()
    assert float((noisy - clean).mean()) == pytest.approx(0.01, rel=4 * (2 * 2 * 7 / n) ** 0.5 + 0.1)


def test_linear_prior_has_no_jensen_gap_on_fields():
    """E[R(x0)|x_t] = R(E[x0|x_t]) for linear R: the mean of residuals equals the residual of the mean."""
    data, layout, prior, t, _ = _setup("advection")
    g = torch.Generator().manual_seed(0)
    draws = t["x0"][:1] + 0.3 * torch.randn((64, *t["x0"].shape[1:]), generator=g, dtype=torch.float64)
    mean_of_r = prior.residual(draws).mean(0)
    r_of_mean = prior.residual(draws.mean(0, keepdim=True))[0]
    torch.testing.assert_close(mean_of_r, r_of_mean, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("system", ["advection", "burgers"])
def test_periodic_priors_are_shift_invariant(system):
    _, _, prior, t, _ = _setup(system)
    x = t["x0"]
    shifted = torch.roll(x, shifts=5, dims=-1)  # periodic x axis
    torch.testing.assert_close(prior.penalty(shifted), prior.penalty(x))


def test_gradients_flow_through_the_burgers_prior():
    _, _, prior, t, _ = _setup("burgers")
    x = t["x0"][:1, :, :5, :8].clone().requires_grad_(True)
    small = dataclasses.replace(prior, to_physical=lambda v: v[:, 0])
    assert torch.autograd.gradcheck(lambda v: small.penalty(v), (x,), eps=1e-6, atol=1e-5)


def test_noise_gain_is_the_operator_norm_for_linear_residuals():
    data, layout, prior, t, _ = _setup("advection")
    g = torch.Generator().manual_seed(3)
    gain = noise_gain(prior, t["x0"], generator=g)
    # same estimate, another noise draw: the RMS over n points (stencil ~5) has relative std ≈ sqrt(5/(2n))
    n = prior.residual(t["x0"]).numel()
    assert gain == pytest.approx(prior.normaliser, rel=4 * (2 * 5 / (2 * n)) ** 0.5)
    assert prior.normaliser > 1.0  # derivatives amplify white noise


def test_condition_dropout_drops_whole_samples():
    mask = torch.zeros(200, 1, 4, 8)
    mask[:, :, 0] = 1
    out = condition_dropout(0.5)({"x0": torch.zeros_like(mask), "mask": mask}, torch.Generator().manual_seed(0))
    per_sample = out["mask"].flatten(1).sum(1)
    assert set(per_sample.tolist()) <= {0.0, 8.0}
    assert 60 < int((per_sample == 0).sum()) < 140
    assert np.isclose(float(mask.sum()), 200 * 8)  # input untouched
