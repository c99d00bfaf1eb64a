"""What the network predicts, and the training loss that teaches it.

Three parametrisations of the same variance-preserving diffusion
``x_t = alpha_t x_0 + sigma_t eps`` are supported:

``"eps"``
    The network predicts the noise (Ho et al. 2020; the paper, eq. 11).
``"v"``
    The network predicts ``v = alpha_t eps - sigma_t x_0`` (Salimans & Ho 2022).
``"edm"``
    EDM preconditioning (Karras et al. 2022) in the scaled variable
    ``x / alpha_t``, whose noise level is ``s = sigma_t / alpha_t``: the
    network sees ``c_in x`` and its output ``F`` gives the denoised image
    ``D = c_skip x + c_out F`` with ``c_skip = d^2 / (s^2 + d^2)``,
    ``c_out = s d / sqrt(s^2 + d^2)``, ``c_in = 1 / sqrt(s^2 + d^2)``
    (``d`` = ``sigma_data``); training draws ``ln s`` from a normal
    distribution.

Whatever the parametrisation, `Denoiser` returns the same two things to the
samplers: the denoised image ``x0_hat`` and the implied noise ``eps_hat``.
The formulas live once, in `astro_sbgm.diffusion.parametrisation`.
"""

import copy

import torch
import torch.nn.functional as F

from .noise import randn_like
from .parametrisation import PARAMETRISATIONS, get_parametrisation

__all__ = ["OBJECTIVES", "Denoiser", "training_loss", "draw_training_noise"]

OBJECTIVES = tuple(PARAMETRISATIONS)


class Denoiser:
    """A network plus a schedule and a parametrisation: ``(x_t, t) -> (x0_hat, eps_hat)``.

    Parameters
    ----------
    net : `torch.nn.Module`
        Called as ``net(x, t)`` with ``t`` the (fractional) timestep.
    schedule : `~astro_sbgm.diffusion.DiffusionSchedule`
        The noise schedule.
    objective : {"eps", "v", "edm"}
        What the network predicts.
    clip_x0 : bool
        Clip ``x0_hat`` to [-1, 1] (the data range) before it is used.
    sigma_data : float
        Standard deviation of the data for the EDM preconditioning.
    """

    def __init__(self, net, schedule, objective="eps", clip_x0=True, sigma_data=0.5):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; known: {OBJECTIVES}")
        self.net = net
        self.schedule = schedule
        self.objective = objective
        self.clip_x0 = clip_x0
        self.sigma_data = float(sigma_data)
        self.nfe = 0

    @property
    def parametrisation(self):
        """The `~astro_sbgm.diffusion.parametrisation.Parametrisation` of ``objective``."""
        return get_parametrisation(self.objective, self.sigma_data)

    @property
    def device(self):
        """The device of the network's parameters (the CPU for a network without any)."""
        net = self.net
        while not isinstance(net, torch.nn.Module) and hasattr(net, "net"):
            net = net.net     # a wrapper such as autocast_forward
        try:
            return next(net.parameters()).device
        except (AttributeError, StopIteration, TypeError):
            return torch.device("cpu")

    def with_clipping(self, clip_x0):
        """A copy of this denoiser that clips ``x0_hat`` (True) or not (False, the model's
        own score, as likelihoods need); ``self`` when it already does so."""
        if bool(clip_x0) == bool(self.clip_x0):
            return self
        out = copy.copy(self)
        out.clip_x0 = bool(clip_x0)
        return out

    def _coefs(self, t, x):
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        alpha, sigma = self.schedule.alpha_sigma(t)
        shape = (-1,) + (1,) * (x.ndim - 1)
        return (t.to(torch.float32).to(x.device),
                alpha.to(x.dtype).to(x.device).reshape(shape),
                sigma.to(x.dtype).to(x.device).reshape(shape))

    def raw(self, x, t):
        """The network output and the preconditioned pieces, for training."""
        t32, alpha, sigma = self._coefs(t, x)
        out = self.net(self.parametrisation.net_input(x, alpha, sigma), t32)
        return out, alpha, sigma

    def __call__(self, x, t):
        """Return ``(x0_hat, eps_hat)`` for noisy images ``x`` at timesteps ``t``."""
        self.nfe += 1
        out, alpha, sigma = self.raw(x, t)
        out = out.to(x.dtype)
        x0 = self.parametrisation.to_x0(x, out, alpha, sigma)
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        eps = (x - alpha * x0) / sigma
        return x0, eps


def draw_training_noise(denoiser, shape, generator=None, edm_p_mean=-1.2, edm_p_std=1.2,
                        continuous_time=False):
    """The random draws of one training batch: noise, then timesteps.

    Parameters
    ----------
    denoiser : `Denoiser`
        The model (its objective decides how timesteps are drawn: uniform
        over ``0 .. T-1``, or from a log-normal ``sigma/alpha`` for ``"edm"``).
    shape : tuple of int
        Batch shape ``(n, band, y, x)``.
    generator : `torch.Generator`, optional
        CPU generator.
    edm_p_mean, edm_p_std : float
        The log-normal distribution of ``sigma/alpha`` for ``"edm"``.
    continuous_time : bool
        Draw ``t`` uniformly from the interval ``[0, T - 1]`` (the noise level
        interpolated as `DiffusionSchedule.alpha_sigma` does for samplers)
        instead of from the integers ``0 .. T-1`` (the paper).  Few-step
        samplers evaluate the network between the integers; a network trained
        on continuous ``t`` has seen those inputs.  ``"edm"`` always draws
        continuous timesteps.

    Returns
    -------
    noise : `torch.Tensor`
        Standard normal, float32, on the CPU.
    t : `torch.Tensor`
        float64 timesteps, shape ``(n,)``.
    """
    noise = randn_like(torch.empty(shape), generator)
    n = shape[0]
    sched = denoiser.schedule
    if denoiser.objective == "edm":
        ln_s = torch.randn(n, generator=generator, dtype=torch.float64) * edm_p_std + edm_p_mean
        t = sched.t_from_log_snr(-2.0 * ln_s)
    elif continuous_time:
        t = torch.rand(n, generator=generator, dtype=torch.float64) * (sched.T - 1)
    else:
        t = torch.randint(0, sched.T, (n,), generator=generator).to(torch.float64)
    return noise, t


def training_loss(denoiser, x0, generator=None, loss="l2", min_snr_gamma=None,
                  edm_p_mean=-1.2, edm_p_std=1.2, noise=None, t=None, continuous_time=False):
    """One Monte-Carlo estimate of the training loss on a batch.

    Parameters
    ----------
    denoiser : `Denoiser`
        The model (its ``objective`` decides the target).
    x0 : `torch.Tensor`
        Clean images in [-1, 1], ``(n, band, y, x)``.
    generator : `torch.Generator`, optional
        Random numbers for the timesteps and the noise (drawn on the CPU, so a
        run is reproducible whatever the device).
    loss : {"l2", "l1"}
        The per-pixel loss; ``"l2"`` is eq. 11 of the paper.
    min_snr_gamma : float, optional
        Min-SNR-gamma weighting (Hang et al. 2023): each sample's loss is
        weighted by ``min(SNR, gamma) / SNR`` (eps), ``min(SNR, gamma) /
        (SNR + 1)`` (v).  Not used with ``"edm"``, which has its own weighting.
    edm_p_mean, edm_p_std : float
        The log-normal distribution of ``sigma/alpha`` for ``"edm"``.
    noise, t : `torch.Tensor`, optional
        Use these draws instead of drawing them with `draw_training_noise`
        (distributed training gives each process its slice of one global draw).
    continuous_time : bool
        Passed to `draw_training_noise`.

    Returns
    -------
    `torch.Tensor`
        The scalar loss.
    """
    if loss not in ("l2", "l1"):
        raise ValueError(f"unknown loss {loss!r}; use 'l2' or 'l1'")
    sched = denoiser.schedule
    if noise is None or t is None:
        noise, t = draw_training_noise(denoiser, tuple(x0.shape), generator, edm_p_mean,
                                       edm_p_std, continuous_time=continuous_time)
    noise = noise.to(x0.device, x0.dtype)
    x_t = sched.q_sample(x0, t, noise)
    out, alpha, sigma = denoiser.raw(x_t, t)
    param = denoiser.parametrisation
    target = param.target(x0, noise, x_t, alpha, sigma)
    if loss == "l2":
        per = F.mse_loss(out.float(), target.float(), reduction="none")
    else:
        per = F.l1_loss(out.float(), target.float(), reduction="none")
    per = per.mean(dim=tuple(range(1, per.ndim)))
    if min_snr_gamma is not None:
        w = param.min_snr_weight((alpha / sigma).reshape(-1).float() ** 2, min_snr_gamma)
        if w is not None:
            per = per * w
    return per.mean()
