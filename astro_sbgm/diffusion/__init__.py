"""The diffusion process: schedules, parametrisations, training loss and samplers."""

from .schedule import DiffusionSchedule, linear_betas, cosine_betas
from .objectives import (OBJECTIVES, Denoiser, draw_training_noise,
                         training_loss)
from .samplers import SAMPLERS, GRIDS, Sampler, get_sampler, make_grid, reverse_process
from .guidance import ClassifierFreeGuidance

__all__ = ["DiffusionSchedule", "linear_betas", "cosine_betas", "OBJECTIVES", "Denoiser",
           "training_loss", "draw_training_noise", "SAMPLERS", "GRIDS", "Sampler",
           "get_sampler", "make_grid", "reverse_process", "ClassifierFreeGuidance"]
