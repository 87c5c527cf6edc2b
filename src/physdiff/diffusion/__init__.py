"""Diffusion core: noise schedule, parametrisation (Tweedie estimate), objectives and samplers."""

from physdiff.diffusion.objective import OBJECTIVES, LossOutput, diffusion_loss
from physdiff.diffusion.parametrisation import PREDICTIONS, Denoiser, DenoiserOutput
from physdiff.diffusion.samplers import DDIM, DDPM, SAMPLERS, Heun, Sampler, make_sampler, sample
from physdiff.diffusion.schedule import CosineSchedule, LinearSchedule, VPSchedule, make_schedule

__all__ = [
    "DDIM",
    "DDPM",
    "OBJECTIVES",
    "PREDICTIONS",
    "SAMPLERS",
    "CosineSchedule",
    "Denoiser",
    "DenoiserOutput",
    "Heun",
    "LinearSchedule",
    "LossOutput",
    "Sampler",
    "VPSchedule",
    "diffusion_loss",
    "make_sampler",
    "make_schedule",
    "sample",
]
