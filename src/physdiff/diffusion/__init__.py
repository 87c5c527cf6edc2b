"""Diffusion core: noising processes (VP schedules, flow interpolant), parametrisation (Tweedie estimate),
objectives and samplers."""

from physdiff.diffusion.objective import OBJECTIVES, LossOutput, diffusion_loss
from physdiff.diffusion.parametrisation import PREDICTIONS, Denoiser, DenoiserOutput
from physdiff.diffusion.samplers import (
    DDIM,
    DDPM,
    SAMPLERS,
    DPMSolverPP2M,
    Euler,
    Heun,
    Sampler,
    make_sampler,
    sample,
)
from physdiff.diffusion.schedule import (
    PROCESSES,
    CosineSchedule,
    DiffusionProcess,
    FlowProcess,
    LinearSchedule,
    VPSchedule,
    make_process,
    make_schedule,
)

__all__ = [
    "DDIM",
    "DDPM",
    "OBJECTIVES",
    "PREDICTIONS",
    "PROCESSES",
    "SAMPLERS",
    "CosineSchedule",
    "DPMSolverPP2M",
    "Denoiser",
    "DenoiserOutput",
    "DiffusionProcess",
    "Euler",
    "FlowProcess",
    "Heun",
    "LinearSchedule",
    "LossOutput",
    "Sampler",
    "VPSchedule",
    "diffusion_loss",
    "make_process",
    "make_sampler",
    "make_schedule",
    "sample",
]
