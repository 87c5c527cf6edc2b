"""Physical-feasibility priors acting on the Tweedie estimate x̂0 (method.md §3; see docs/priors.md)."""

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
    "PARTICLE_PRIORS",
    "AngularMomentumPrior",
    "GravityEnergyPrior",
    "MomentumPrior",
    "NewtonSpringPrior",
    "ParticlePrior",
    "Prior",
    "SpringEnergyPrior",
    "make_prior",
    "per_sample_mean",
    "total_prior_loss",
]
