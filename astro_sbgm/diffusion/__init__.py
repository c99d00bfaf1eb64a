"""The diffusion process: schedules, parametrisations, training loss, samplers and the engine."""

from .schedule import DiffusionSchedule, linear_betas, cosine_betas
from .objectives import (OBJECTIVES, Denoiser, draw_training_noise,
                         training_loss)
from .samplers import SAMPLERS, GRIDS, Sampler, get_sampler, make_grid, reverse_process
from .guidance import ClassifierFreeGuidance
from .noise import PerSampleNoise, randn_like
from .parametrisation import PARAMETRISATIONS, Parametrisation, get_parametrisation
from .engine import Batch, DenoiserWrapper, generate, sampling_times

__all__ = ["DiffusionSchedule", "linear_betas", "cosine_betas", "OBJECTIVES", "Denoiser",
           "training_loss", "draw_training_noise", "SAMPLERS", "GRIDS", "Sampler",
           "get_sampler", "make_grid", "reverse_process", "ClassifierFreeGuidance",
           "PerSampleNoise", "randn_like", "PARAMETRISATIONS", "Parametrisation",
           "get_parametrisation", "Batch", "DenoiserWrapper", "generate", "sampling_times"]
