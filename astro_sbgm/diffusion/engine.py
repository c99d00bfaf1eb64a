"""The generation engine: the one batch loop that every generating feature runs.

`generate` draws ``n`` images in batches through
`~astro_sbgm.diffusion.reverse_process`, each image with its own random stream
(`~astro_sbgm.diffusion.noise.PerSampleNoise`), so image ``i`` of a seed is
the same whatever ``n``, the batch size, the device or the number of
processes.  A feature is only what it puts into the engine:

* a **start state**: pure noise at ``times[0]`` (unconditional sampling), or
  clean images noised to ``times[0]`` by the forward process with each
  image's own noise (SDEdit transfer, inpainting);
* a **guidance hook** per batch (``guidance=``), called after every step
  (inpainting puts the known pixels back);
* a **denoiser wrapper** per batch (``wrap=``), which replaces the model's
  prediction at every step (classifier-free guidance combines a conditional
  and an unconditional prediction; posterior-sampling guidance adds a
  gradient step);
* ``grad=True`` to run without `torch.inference_mode`, so a wrapper or hook
  may differentiate through the network inside ``torch.enable_grad()``;
* ``clip_x0=False`` for the model's own, unclipped prediction.

The times a sampler walks by default are `sampling_times`.
"""

import copy
from typing import NamedTuple

import numpy as np
import torch

from .noise import PerSampleNoise, randn_like
from .samplers import get_sampler, make_grid, reverse_process

__all__ = ["generate", "batches", "Batch", "DenoiserWrapper", "sampling_times",
           "with_clipping"]


class Batch(NamedTuple):
    """One batch of a `generate` run, as guidance and wrapper factories see it.

    Attributes
    ----------
    index : slice or list of int
        Rows of the run in this batch (index per-image inputs with it, e.g.
        ``cond[batch.index]``); a list when a batch of one is padded.
    generators : list of `torch.Generator`
        One CPU generator per row (the rows' own random streams).
    x_start : `torch.Tensor` or None
        This batch's clean start images on the device (None for pure noise).
    """

    index: object
    generators: list
    x_start: object


class DenoiserWrapper:
    """Base of a denoiser wrapper: ``(x_t, t) -> (x0_hat, eps_hat)`` built on another.

    Forwards ``schedule``, ``objective``, ``clip_x0``, ``net`` and the
    network-evaluation count ``nfe`` to the wrapped denoiser; a subclass
    writes ``__call__`` (and counts its evaluations through the wrapped one).
    """

    def __init__(self, denoiser):
        self.denoiser = denoiser

    def __getattr__(self, name):
        if name == "denoiser":
            raise AttributeError(name)
        return getattr(self.denoiser, name)

    def __call__(self, x, t):  # pragma: no cover - abstract
        raise NotImplementedError


def sampling_times(schedule, rule, steps=None, grid=None, t_start=None):
    """The timesteps a sampler walks from ``t_start`` (default ``T - 1``) to 0.

    Parameters
    ----------
    schedule : `~astro_sbgm.diffusion.DiffusionSchedule`
        The schedule.
    rule : `~astro_sbgm.diffusion.Sampler`
        The sampler (its ``every_timestep``, ``default_steps`` and
        ``default_grid`` give the defaults).
    steps : int, optional
        Grid points; default: every integer timestep from ``t_start`` for a
        rule that walks every timestep (``"ddpm"``), else
        ``rule.default_steps(T)``.
    grid : str, optional
        Grid kind (`~astro_sbgm.diffusion.make_grid`); default
        ``rule.default_grid``.
    t_start : float, optional
        First timestep.

    Returns
    -------
    `numpy.ndarray`
        float64 timesteps, decreasing to 0.
    """
    if steps is None and rule.every_timestep and t_start is not None:
        return np.arange(int(np.floor(t_start)), -1, -1, dtype=np.float64)
    steps = rule.default_steps(schedule.T) if steps is None else int(steps)
    return make_grid(schedule, steps, grid or rule.default_grid, t_start=t_start)


def with_clipping(denoiser, clip_x0):
    """``denoiser`` with its clipping of ``x0_hat`` on or off (a copy when it changes)."""
    if isinstance(denoiser, DenoiserWrapper):
        out = copy.copy(denoiser)
        out.denoiser = with_clipping(denoiser.denoiser, clip_x0)
        return out
    if hasattr(denoiser, "with_clipping"):
        return denoiser.with_clipping(clip_x0)
    if bool(getattr(denoiser, "clip_x0", None)) == bool(clip_x0):
        return denoiser
    out = copy.copy(denoiser)
    out.clip_x0 = bool(clip_x0)
    return out


def batches(n, batch_size, noise):
    """The batches of a run over ``n`` images: ``(rows, generators)`` for each.

    ``rows`` is a slice; ``generators`` are those rows' own streams from
    ``noise`` (a `~astro_sbgm.diffusion.noise.PerSampleNoise`), so what
    image ``i`` draws does not depend on ``batch_size``.  `generate` and the
    likelihoods of `~astro_sbgm.GalaxyDiffusion.score_samples` walk their
    images with it.
    """
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for lo in range(0, int(n), batch_size):
        m = min(batch_size, int(n) - lo)
        yield slice(lo, lo + m), noise.generators(lo, m)


def _device_of(denoiser):
    device = getattr(denoiser, "device", None)
    return torch.device("cpu") if device is None else torch.device(device)


def generate(denoiser, x_start, times, sampler="dpmpp-2m", noise=None, batch_size=16, *,
             guidance=None, wrap=None, grad=False, clip_x0=None, pad_single=False,
             device=None, progress=False, **options):
    """Generate images in batches with the reverse process, one random stream per image.

    Parameters
    ----------
    denoiser : `~astro_sbgm.diffusion.Denoiser`
        The model (or any object with its interface).
    x_start : tuple of int or array-like
        A shape ``(n, band, y, x)``: start from pure noise.  An array or
        tensor ``(n, band, y, x)`` of clean images in [-1, 1]: start from
        ``alpha x + sigma z`` at ``times[0]``, ``z`` drawn from each image's
        own stream.
    times : sequence of float
        Timesteps visited (`sampling_times`, `~astro_sbgm.diffusion.make_grid`,
        or a RePaint sequence with jumps up).
    sampler : str or `~astro_sbgm.diffusion.Sampler`
        The update rule; ``options`` go to its constructor.
    noise : `~astro_sbgm.diffusion.noise.PerSampleNoise`, int or None
        The random streams (an int is a seed; None draws a seed, readable
        afterwards only when a `PerSampleNoise` is passed).
    batch_size : int
        Images per network call.
    guidance : callable, optional
        ``guidance(batch) -> hook`` with ``batch`` a `Batch`: the guidance
        hook of `~astro_sbgm.diffusion.reverse_process` for that batch (or
        None).
    wrap : callable, optional
        ``wrap(denoiser, batch) -> denoiser``: the denoiser a batch runs with
        (e.g. classifier-free guidance with that batch's conditions).  It
        must keep ``schedule`` and count its network evaluations in ``nfe``
        (see `DenoiserWrapper`).
    grad : bool
        Run under `torch.no_grad` rather than `torch.inference_mode`, so a
        wrapper or hook may differentiate through the network (inside
        ``torch.enable_grad()``).  Same numbers either way.
    clip_x0 : bool, optional
        Override the denoiser's clipping of ``x0_hat`` to [-1, 1]; False is
        the model's own score.
    pad_single : bool
        Run a batch of one as a batch of two (the row twice), because a
        batch of one runs other kernels that round differently: with it,
        image ``i`` is the same bit for bit whatever the batching.
    device : str or `torch.device`, optional
        Where the images live; default the denoiser's device.
    progress : bool
        A progress bar per batch.

    Returns
    -------
    x : `torch.Tensor`
        ``(n, band, y, x)`` float32 on the CPU, the clean images in [-1, 1].
    nfe : int
        Network evaluations per image.
    """
    if not isinstance(noise, PerSampleNoise):
        noise = PerSampleNoise(noise)
    if clip_x0 is not None:
        denoiser = with_clipping(denoiser, clip_x0)
    device = _device_of(denoiser) if device is None else torch.device(device)
    times = [float(t) for t in times]
    rule = get_sampler(sampler, **options)
    if isinstance(x_start, (tuple, list, torch.Size)) and all(
            isinstance(v, (int, np.integer)) for v in x_start):
        shape, clean = tuple(int(v) for v in x_start), None
    else:
        if isinstance(x_start, np.ndarray):
            x_start = torch.from_numpy(np.ascontiguousarray(x_start, dtype=np.float32))
        clean = torch.as_tensor(x_start)
        shape = tuple(clean.shape)
    n = shape[0]
    if n == 0:
        return torch.empty(shape), 0
    if clean is not None:
        a, s = (float(v) for v in denoiser.schedule.alpha_sigma(torch.tensor(times[0],
                                                                             dtype=torch.float64)))
    chunks, nfe = [], 0
    for index, gens in batches(n, batch_size, noise):
        lo, m = index.start, index.stop - index.start
        if clean is None:
            x0 = None
            x = randn_like(torch.empty((m,) + shape[1:]), gens)
        else:
            x0 = clean[lo:lo + m].to(device)
            x = a * x0 + s * randn_like(x0, gens)
        if pad_single and m == 1:
            # a batch of one runs other kernels (matrix-vector products) that round
            # differently: pad it, so that image i is the same whatever the batching
            x = torch.cat([x, x])
            x0 = None if x0 is None else torch.cat([x0, x0])
            gens = gens + [torch.Generator().manual_seed(0)]
            index = [lo, lo]
        batch = Batch(index, gens, x0)
        den = denoiser if wrap is None else wrap(denoiser, batch)
        hook = None if guidance is None else guidance(batch)
        out, nfe = reverse_process(den, x.to(device), times, rule, generator=gens,
                                   guidance=hook, progress=progress, grad=grad)
        chunks.append(out[:m].float().cpu())
    return torch.cat(chunks), nfe
