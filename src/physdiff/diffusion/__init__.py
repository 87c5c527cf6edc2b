"""Diffusion core: noise schedule, parametrisation (Tweedie estimate), objectives and samplers."""

from physdiff.diffusion.objective import OBJECTIVES, LossOutput, diffusion_loss
from physdiff.diffusion.parametrisation import PREDICTIONS, Denoiser, DenoiserOutput
from physdiff.diffusion.samplers import SAMPLERS, sample
from physdiff.diffusion.schedule import CosineSchedule, LinearSchedule, VPSchedule, make_schedule

__all__ = [
    "OBJECTIVES",
    "PREDICTIONS",
    "SAMPLERS",
    "CosineSchedule",
    "Denoiser",
    "DenoiserOutput",
    "LinearSchedule",
    "LossOutput",
    "VPSchedule",
    "diffusion_loss",
    "make_schedule",
    "sample",
]
