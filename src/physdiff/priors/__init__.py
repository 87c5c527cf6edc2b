"""Physical-feasibility priors acting on the Tweedie estimate x̂0 (method.md §3; see docs/priors.md)."""

from physdiff.priors.aux_head import PRIOR_VARIANTS, AuxHeadPrior, attach_aux_heads, make_aux_head_prior
from physdiff.priors.base import (
    CASES,
    Constraint,
    FeaturePrior,
    Prior,
    ResidualPrior,
    per_sample_mean,
    total_prior_loss,
)
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
    "PRIOR_VARIANTS",
    "AngularMomentumPrior",
    "AuxHeadPrior",
    "Constraint",
    "FeaturePrior",
    "GravityEnergyPrior",
    "MomentumPrior",
    "NewtonSpringPrior",
    "ParticlePrior",
    "Prior",
    "ResidualPrior",
    "SpringEnergyPrior",
    "attach_aux_heads",
    "make_aux_head_prior",
    "make_prior",
    "per_sample_mean",
    "total_prior_loss",
]
