"""Physical-feasibility priors acting on the Tweedie estimate x̂0 (method.md §3; see docs/priors.md)."""

from physdiff.priors.aux_head import (
    FEATURE_KINDS,
    PRIOR_VARIANTS,
    AuxHeadPrior,
    FeatureHead,
    attach_aux_heads,
    feature_layout,
    feature_matching_penalty,
    ignore_aux_head_weights,
    make_aux_head_prior,
    total_prior_loss_with_heads,
)
from physdiff.priors.base import CASES, Prior, per_sample_mean, total_prior_loss
from physdiff.priors.particles import (
    PARTICLE_PRIORS,
    AngularMomentumPrior,
    GravityEnergyPrior,
    MomentumPrior,
    NewtonSpringPrior,
    ParticlePrior,
    SpringEnergyPrior,
    make_prior,
)

__all__ = [
    "CASES",
    "FEATURE_KINDS",
    "PARTICLE_PRIORS",
    "PRIOR_VARIANTS",
    "AngularMomentumPrior",
    "AuxHeadPrior",
    "FeatureHead",
    "GravityEnergyPrior",
    "MomentumPrior",
    "NewtonSpringPrior",
    "ParticlePrior",
    "Prior",
    "SpringEnergyPrior",
    "attach_aux_heads",
    "feature_layout",
    "feature_matching_penalty",
    "ignore_aux_head_weights",
    "make_aux_head_prior",
    "make_prior",
    "per_sample_mean",
    "total_prior_loss",
    "total_prior_loss_with_heads",
]
