"""Inpainting: fill masked pixels (satellite trails, stars, bad columns) with a diffusion model.

`inpaint` takes an image in any form `astro_sbgm.io.read_image` accepts and a
mask (True = pixel to fill; or a bit mask such as a Legacy Survey ``maskbits``
file with the bits to fill named by ``mask_bits=``, as `astro_sbgm.io.read_mask`
reads them) and returns a `~astropy.nddata.CCDData` in which only the masked
pixels are generated; every other pixel comes back exactly as given (bit for
bit, in the input's own unit and dtype).

How the fill is made
--------------------
All methods run the package's one reverse-process loop
(`astro_sbgm.diffusion.reverse_process`) with a *guidance* hook that, after
every step to time ``t``, puts the known pixels back (Smith, Geach et al.
2022, section 4.2; Lugmayr et al. 2022).  In the network's [-1, 1] space,
with ``x0`` the known image:

* after a stochastic step (``ddpm``, ``ddim`` with ``eta > 0``) the known
  pixels are a fresh draw of the forward process,
  ``x_t = alpha_t x0 + sigma_t z`` (the paper's rule);
* after a deterministic step (``ddim``, ``dpmpp-2m``, ``euler``, ``heun``)
  they are ``alpha_t x0 + sigma_t eps_hat``, with ``eps_hat`` the noise the
  model inferred at the point the step started from, which keeps the
  deterministic trajectory consistent (fresh noise every step would fight
  the ODE solver).  The known pixels are *set* to this value, so it holds
  exactly after every step of every sampler: the second-order updates of
  ``dpmpp-2m`` and ``heun`` carry extra terms in the change of the
  denoiser's output between evaluations, which an additive correction
  of the solver's output would leave in the known pixels;
* after the last step they are ``x0`` itself.

Methods (`INPAINT_METHODS`):

``"measured"`` (default)
    The known pixels are read as noisy measurements: ancestral steps with
    the posterior variance on 30 Karras grid points, the known pixels put
    back after every step as above, and at every step the network's
    prediction is pulled toward the known pixels by a gradient step taken
    through the network and weighed by each pixel's inverse variance
    (`KnownPixelGradient`, PiGDM-style; ``data_weight=4`` scales it, 0
    turns it off).  A forward and a backward pass per step: 60 network
    evaluations per image and box.  Chosen by the protocol of
    ``benchmarks/bench_inpainting.py`` (docs/inpainting.rst).
``"fast"``
    A short RePaint schedule on deterministic DDIM (``eta = 0``): 20
    uniform grid points from ``t_start``, jumps of 5 points, 3 passes: 50
    network evaluations per image and box.
``"paper"``
    The paper's method: ancestral (``ddpm``, ``sigma_t^2 = beta_t``) steps
    on every integer timestep from ``t_start = 950`` down to 0 (951
    evaluations for T = 1000).  For a model read from the paper's released
    checkpoints the steps use the released code's posterior variance
    instead (``meta['DDPMVAR']`` says which).
``"repaint"``
    RePaint resampling (Lugmayr et al. 2022): ancestral steps with the
    posterior variance on a grid of ``steps`` points; at every
    ``jump_length``-th point the image is re-noised ``jump_length`` points
    back up with the forward process and the stretch is walked again,
    ``n_resample - 1`` extra times.  The defaults (100 points, jumps of 10,
    10 passes) cost about 900 evaluations.

Every method starts at ``t_start`` (0.95 T by default) from the forward
process applied to the known image, whose masked pixels are first given a
smooth interpolation of their surroundings.

Draws and their summary
-----------------------
``n_draws`` fills are drawn independently.  Each draw is a galaxy: its
filled pixels carry the sky noise the model learnt.  Their mean is not: its
sky noise is ``sqrt(n_draws)`` too low.  `inpaint` returns the mean with the
spread of the draws as uncertainty (a summary, for pictures and per-pixel
estimates) and, with ``return_draws=True``, the draws themselves, which are
what photometry should be measured on.

Images of other sizes and pixel scales
--------------------------------------
The model works on ``image_size`` pixels at its ``pixel_scale``.  An image
at the model's pixel scale (or without a WCS) is processed in one
model-size box centred on the image when every masked pixel falls inside
it (the galaxy of a cutout is at its centre, as in the training set);
otherwise in model-size boxes placed over the masked regions: each connected masked region that
fits in the central part of a box gets one box centred on it (nearby
regions share a box), a longer one (a trail across a large image) is cut
into pieces, each inpainted in its own box with a margin of
``image_size / 8`` pixels of context.  Boxes that do not overlap run
together in one batch (a wave); pixels filled by an earlier wave are known
pixels for the later ones, so the pieces join up, and a later box re-draws
the last ``seam_overlap`` pixels of an earlier piece it touches, so that
each junction is drawn with context on both sides.  In an image larger than
the model, a box whose known pixels show no source is filled with drawn sky
noise instead of the network (``sky_shortcut``).  A smaller image is
padded with unknown pixels, which are generated and thrown away.  An image
at another pixel scale is reprojected (`reproject.reproject_adaptive`, flux
conserving, Hann kernel) onto a grid at the model's scale, inpainted there, and the
result is reprojected back; only the masked pixels take values from it.
"""

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch
import astropy.units as u
from astropy.nddata import NDData, StdDevUncertainty
from scipy import ndimage

from . import io as _io
from .bands import LEGACY_SURVEY_FILTERS, parse_bands
from .filter_mapping import filter_mapping
from .diffusion import ClassifierFreeGuidance, get_sampler, make_grid
from .diffusion.engine import DenoiserWrapper, generate
from .diffusion.noise import PerSampleNoise, new_seed
from ._validation import check_positive_int
from .diffusion.noise import randn_like
from .io import AstroSBGMInputWarning, make_tan_wcs, pixel_scale_of, read_image

__all__ = ["inpaint", "INPAINT_METHODS", "repaint_times", "known_pixel_guidance",
           "inpainting_grid", "KnownPixelGradient", "inpainting_plan", "InpaintingPlan"]

#: Default settings of each method: sampler and its options, number of grid
#: points (None: every integer timestep from ``t_start``), grid, RePaint jump
#: length and passes (1: no resampling).
INPAINT_METHODS = {
    "fast": {"sampler": "ddim", "options": {}, "steps": 20, "grid": "uniform",
             "jump_length": 5, "n_resample": 3},
    "paper": {"sampler": "ddpm", "options": {}, "steps": None, "grid": "uniform",
              "jump_length": 10, "n_resample": 1},
    "repaint": {"sampler": "ddpm", "options": {"variance": "posterior"}, "steps": 100,
                "grid": "uniform", "jump_length": 10, "n_resample": 10},
    "measured": {"sampler": "ddpm", "options": {"variance": "posterior"}, "steps": 30,
                 "grid": "karras", "jump_length": 5, "n_resample": 1, "data_weight": 4.0},
}

#: Fraction of T at which the reverse process starts (the paper: 950 of 1000).
DEFAULT_T_START = 0.95


# --------------------------------------------------------------------------- time grids
def repaint_times(grid, jump_length=10, n_resample=10):
    """The RePaint time sequence: a decreasing grid with jumps back up.

    Walking down ``grid``, at every point whose index is a positive multiple
    of ``jump_length`` the sequence jumps back ``jump_length`` points (a
    forward-process re-noising in `astro_sbgm.diffusion.reverse_process`)
    and walks down again; each such point does this ``n_resample - 1``
    times (Lugmayr et al. 2022, re-implemented from the paper's description).

    Parameters
    ----------
    grid : sequence of float
        Strictly decreasing timesteps (e.g. from
        `astro_sbgm.diffusion.make_grid`).
    jump_length : int
        Points jumped back at a time.
    n_resample : int
        Passes over each stretch (1: no resampling, ``grid`` unchanged).

    Returns
    -------
    `numpy.ndarray`
        The timesteps to visit, in order.

    Raises
    ------
    ValueError
        If ``jump_length`` or ``n_resample`` is below 1.
    """
    grid = [float(t) for t in grid]
    jump_length, n_resample = int(jump_length), int(n_resample)
    if jump_length < 1:
        raise ValueError(f"jump_length must be >= 1 grid point, got {jump_length}")
    if n_resample < 1:
        raise ValueError(f"n_resample must be >= 1 (1 = no resampling), got {n_resample}")
    n = len(grid)
    if n_resample == 1 or n <= jump_length:
        return np.asarray(grid)
    left = {i: n_resample - 1 for i in range(jump_length, n, jump_length)}
    out, i = [grid[0]], 0
    while i < n - 1:
        i += 1
        out.append(grid[i])
        if left.get(i, 0) > 0:
            left[i] -= 1
            i -= jump_length
            out.append(grid[i])
    return np.asarray(out)


def inpainting_grid(schedule, method="fast", t_start=None, steps=None, grid=None,
                    jump_length=None, n_resample=None):
    """The timesteps an inpainting method visits.

    Parameters
    ----------
    schedule : `~astro_sbgm.diffusion.DiffusionSchedule`
        The model's schedule.
    method : {"fast", "paper", "repaint"}
        See `INPAINT_METHODS`.
    t_start : float, optional
        First timestep; ``0.95 T`` (rounded down) by default.
    steps, grid : optional
        Override the method's number of grid points and grid kind.
    jump_length, n_resample : int, optional
        RePaint resampling (default: the method's).

    Returns
    -------
    `numpy.ndarray`
        The timesteps, with jumps up where resampling is on.

    Raises
    ------
    ValueError
        For an unknown method or a bad ``t_start``, ``steps`` or grid.
    """
    if method not in INPAINT_METHODS:
        raise ValueError(f"unknown inpainting method {method!r}; known methods: "
                         f"{sorted(INPAINT_METHODS)}")
    cfg = INPAINT_METHODS[method]
    T = schedule.T
    t_start = math.floor(DEFAULT_T_START * T) if t_start is None else float(t_start)
    if not 0 < t_start <= T - 1:
        raise ValueError(f"t_start must lie in (0, {T - 1}] (the model has T = {T} "
                         f"timesteps), got {t_start}")
    steps = cfg["steps"] if steps is None else int(steps)
    if steps is None:
        # every integer timestep from t_start down to 0 (the paper)
        t0 = math.floor(t_start)
        base = np.arange(t0, -1, -1, dtype=np.float64)
    else:
        base = make_grid(schedule, steps, grid or cfg["grid"], t_start=t_start)
    n_resample = cfg["n_resample"] if n_resample is None else int(n_resample)
    jump_length = cfg["jump_length"] if jump_length is None else int(jump_length)
    return repaint_times(base, jump_length, n_resample)


# --------------------------------------------------------------------------- guidance
def known_pixel_guidance(schedule, x0_known, unknown, generator=None, rule="noise"):
    """A guidance hook that puts the known pixels back after every step.

    Parameters
    ----------
    schedule : `~astro_sbgm.diffusion.DiffusionSchedule`
        The model's schedule.
    x0_known : `torch.Tensor`
        ``(n, band, y, x)`` clean image in the network's [-1, 1] space (its
        values at unknown pixels are not used).
    unknown : `torch.Tensor` of bool
        True where pixels are generated; broadcastable to ``x0_known``.
    generator : `torch.Generator` or list of them, optional
        Noise for ``rule="noise"`` (one per sample, see
        `astro_sbgm.diffusion.noise.randn_like`).
    rule : {"noise", "consistent"}
        ``"noise"``: known pixels drawn afresh from ``q(x_t | x0)`` (for
        stochastic samplers, the paper's rule).  ``"consistent"``: known
        pixels ``alpha_t x0 + sigma_t eps_hat``, with ``eps_hat`` the noise
        the model inferred at the point the step started from (for
        deterministic samplers).  The rule sets the known pixels to that
        value whatever the sampler's update was, so it holds exactly after
        every step of every sampler, the multistep (``dpmpp-2m``) and
        second-order (``heun``) ones included, whose updates carry terms
        in the change of the denoiser's output between evaluations.

    Returns
    -------
    callable
        ``guidance(x_next, t_next, x0_hat, eps_hat=None) -> x_next`` for
        `astro_sbgm.diffusion.reverse_process` (which passes ``eps_hat``).

    Raises
    ------
    ValueError
        For an unknown ``rule``; at call time, for ``rule="consistent"``
        without ``eps_hat`` before the last step.
    """
    if rule not in ("noise", "consistent"):
        raise ValueError(f"rule must be 'noise' (fresh forward-process noise, for stochastic "
                         f"samplers) or 'consistent' (the model's own noise, for "
                         f"deterministic ones), got {rule!r}")

    def guidance(x_next, t_next, x0_hat, eps_hat=None):
        if t_next is None:
            return torch.where(unknown, x_next, x0_known)
        a, s = (float(v) for v in schedule.alpha_sigma(torch.tensor(float(t_next))))
        if rule == "noise":
            known = a * x0_known + s * randn_like(x_next, generator)
        else:
            if eps_hat is None:
                raise ValueError("the 'consistent' known-pixel rule needs the model's noise "
                                 "estimate: call guidance(x_next, t_next, x0_hat, "
                                 "eps_hat=...) as astro_sbgm.diffusion.reverse_process does")
            known = a * x0_known + s * eps_hat
        return torch.where(unknown, x_next, known)

    return guidance


class KnownPixelGradient(DenoiserWrapper):
    """A denoiser whose prediction is pulled toward the known pixels, weighed by their noise.

    The known pixels ``y`` are read as measurements of the clean image with
    noise ``sigma_y`` (per pixel, in the network's units).  Given ``x_t``,
    the model's prediction ``x0_hat`` is approximately Gaussian with variance
    ``sigma_t^2`` (Song et al. 2023, PiGDM), so ``log p(y | x_t)`` is
    approximately ``-sum w (y - x0_hat)^2 / 2`` over the known pixels with the
    inverse-variance weight ``w = 1 / (sigma_t^2 + sigma_y^2)``.  Its gradient,
    taken through the network (``J^T w (y - x0_hat)``, with ``J`` the Jacobian
    of ``x0_hat`` in ``x_t``), is added to the score, which moves the
    prediction to ``x0_hat + scale (sigma_t^2 / alpha_t) J^T w (y - x0_hat)``
    in every pixel, the unknown ones included: the known pixels speak to the
    unknown ones through the network, not only through its input.  The
    noise floor ``sigma_y`` bounds the weight at low noise levels, where
    ``1 / sigma_t^2`` alone would blow up.

    One call costs a forward and a backward pass; both are counted in
    ``nfe`` (2 per call of a plain denoiser).  Run it with ``grad=True``
    (`astro_sbgm.diffusion.engine.generate`).

    Parameters
    ----------
    denoiser : `~astro_sbgm.diffusion.Denoiser`
        The model (or another wrapper).
    known : `torch.Tensor`
        ``(n, band, y, x)`` known image in the network's units.
    weight_mask : `torch.Tensor`
        1 at known pixels, 0 at unknown ones, broadcastable to ``known``.
    sigma_y : `torch.Tensor` or float
        Noise of the known pixels in the network's units.
    scale : float
        Multiplier of the gradient step (1: the PiGDM step).
    """

    def __init__(self, denoiser, known, weight_mask, sigma_y, scale=1.0):
        super().__init__(denoiser)
        self.known = known
        self.weight_mask = weight_mask
        self.sigma_y = sigma_y
        self.scale = float(scale)

    def __call__(self, x, t):
        tt = torch.as_tensor(t, dtype=torch.float64)
        if tt.ndim == 0:
            tt = tt.expand(x.shape[0])
        a, s = self.denoiser.schedule.alpha_sigma(tt)
        a = a.to(x.dtype).reshape(-1, 1, 1, 1)
        s = s.to(x.dtype).reshape(-1, 1, 1, 1)
        before = self.denoiser.nfe
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0, _ = self.denoiser(xg, t)
            w = self.weight_mask / (s ** 2 + self.sigma_y ** 2)
            residual = (w * (self.known - x0)).detach()
            (g,) = torch.autograd.grad(x0, xg, grad_outputs=residual)
        # the backward pass costs what the forward did (twice with classifier-free guidance)
        self.denoiser.nfe += self.denoiser.nfe - before
        x0 = x0.detach() + self.scale * (s ** 2 / a) * g
        if getattr(self.denoiser, "clip_x0", True):
            x0 = x0.clamp(-1.0, 1.0)
        eps = (x - a * x0) / s
        return x0, eps


# --------------------------------------------------------------------------- helpers
def _box_slices(y0, x0, size, H, W):
    """The part of a box at ``(y0, x0)`` inside an ``(H, W)`` image.

    Returns ``(frame, box)``: the slices ``(ys, xs)`` of that part in image
    coordinates and in the box's own frame.
    """
    ys, xs = slice(max(y0, 0), min(y0 + size, H)), slice(max(x0, 0), min(x0 + size, W))
    return (ys, xs), (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))


def _take(arr, y0, x0, size, fill):
    """``arr[..., y0:y0+size, x0:x0+size]``, padded with ``fill`` outside the image."""
    out = np.full(arr.shape[:-2] + (size, size), fill, dtype=arr.dtype)
    frame, box = _box_slices(y0, x0, size, *arr.shape[-2:])
    out[(...,) + box] = arr[(...,) + frame]
    return out


def _origin(lo, hi, n, size):
    """Start of a box of ``size`` covering pixels lo..hi of an axis of length ``n``."""
    if n <= size:
        return (n - size) // 2
    start = (lo + hi + 1) // 2 - size // 2
    return int(min(max(start, 0), n - size))


def _plan_boxes(target, size):
    """Model-size boxes covering the pixels to fill.

    Returns a list of ``(y0, x0, assigned)``: box origin (may be negative
    for an image smaller than the box) and the ``(size, size)`` boolean map
    of the pixels this box is responsible for, in the box's own frame.
    """
    H, W = target.shape
    y0, x0 = _origin(0, H - 1, H, size), _origin(0, W - 1, W, size)
    ys, xs = np.nonzero(target)
    if ys.min() >= y0 and ys.max() < y0 + size and xs.min() >= x0 and xs.max() < x0 + size:
        # everything fits in one box centred on the image (where a cutout's galaxy is)
        return [(y0, x0, _take(target, y0, x0, size, False))]
    margin = max(size // 8, 1)
    lim_y = H if H <= size else size - 2 * margin
    lim_x = W if W <= size else size - 2 * margin
    labels, _ = ndimage.label(target, structure=np.ones((3, 3), bool))
    pieces = []   # (y_lo, y_hi, x_lo, x_hi) inclusive, pixel coordinates
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        ys, xs = np.nonzero(labels[sl] == i)
        ys, xs = ys + sl[0].start, xs + sl[1].start
        ty = (ys - ys.min()) // lim_y
        tx = (xs - xs.min()) // lim_x
        for key in np.unique(ty * (W + 1) + tx):
            sel = (ty * (W + 1) + tx) == key
            pieces.append([ys[sel], xs[sel]])
    groups = []   # [y_lo, y_hi, x_lo, x_hi, [pieces]]
    for ys, xs in sorted(pieces, key=lambda p: (p[0].min(), p[1].min())):
        box = [ys.min(), ys.max(), xs.min(), xs.max()]
        for g in groups:
            y_lo, y_hi = min(g[0], box[0]), max(g[1], box[1])
            x_lo, x_hi = min(g[2], box[2]), max(g[3], box[3])
            if y_hi - y_lo < lim_y and x_hi - x_lo < lim_x:
                g[:4] = [y_lo, y_hi, x_lo, x_hi]
                g[4].append((ys, xs))
                break
        else:
            groups.append(box + [[(ys, xs)]])
    out = []
    for y_lo, y_hi, x_lo, x_hi, members in groups:
        by, bx = _origin(y_lo, y_hi, H, size), _origin(x_lo, x_hi, W, size)
        assigned = np.zeros((size, size), bool)
        for ys, xs in members:
            assigned[ys - by, xs - bx] = True
        out.append((by, bx, assigned))
    return out


def _waves(boxes, size):
    """Boxes in waves: no two boxes of a wave overlap (greedy colouring, in plan order).

    A box of a later wave sees the pixels filled by earlier waves as known,
    as when boxes ran one after another; boxes of one wave run in one batch.
    """
    waves, spans = [], []
    for i, (y0, x0, _) in enumerate(boxes):
        for wave, span in zip(waves, spans):
            if all(abs(y0 - oy) >= size or abs(x0 - ox) >= size for oy, ox in span):
                wave.append(i)
                span.append((y0, x0))
                break
        else:
            waves.append([i])
            spans.append([(y0, x0)])
    return waves


class InpaintingPlan(NamedTuple):
    """How `inpaint` tiles a mask larger than the model's images (`inpainting_plan`)."""

    #: ``(n_boxes, 2)`` int: the image pixel ``(y0, x0)`` of each box's lower corner
    #: (a box can reach past the image: those pixels are padding).
    corners: np.ndarray
    #: Box indices per wave, in the order the waves run.
    waves: list
    #: ``(ny, nx)`` int: the box whose values each filled pixel ends with; -1 where
    #: nothing is filled.
    owner: np.ndarray


def _check_seam_overlap(seam_overlap, image_size):
    """``seam_overlap`` (None: ``image_size // 16``) checked against the boxes' margin."""
    image_size = int(image_size)
    seam_overlap = image_size // 16 if seam_overlap is None else int(seam_overlap)
    max_overlap = max(image_size // 8, 1)   # the boxes' context margin
    if not 0 <= seam_overlap <= max_overlap:
        raise ValueError(f"seam_overlap must be between 0 and {max_overlap} pixels (an eighth "
                         f"of the model's image size), got {seam_overlap}")
    return seam_overlap


def inpainting_plan(mask, image_size, seam_overlap=None):
    """The boxes `inpaint` fills a large mask with, their waves, and who fills each pixel.

    Parameters
    ----------
    mask : array-like of bool
        ``(ny, nx)`` pixels to fill (``(band, ny, nx)``: any band).
    image_size : int
        The model's image size (the boxes' side).
    seam_overlap : int, optional
        As in `inpaint` (default ``image_size // 16``).

    Returns
    -------
    `InpaintingPlan`
        ``corners``, ``waves`` and ``owner``: the pixels where ``owner``
        changes are the junctions between pieces, and the box of the later
        wave at a junction drew it with the earlier box's fill as known
        pixels.

    Raises
    ------
    ValueError
        If ``mask`` is not 2-D or 3-D, or ``seam_overlap`` is out of range.
    """
    target = np.asarray(mask, bool)
    if target.ndim == 3:
        target = target.any(axis=0)
    if target.ndim != 2:
        raise ValueError(f"mask must be (ny, nx) or (band, ny, nx), got shape {target.shape}")
    size = check_positive_int("image_size", image_size)
    boxes, waves, _, owner = _plan_writes(target, size, _check_seam_overlap(seam_overlap, size))
    corners = np.array([(y0, x0) for y0, x0, _ in boxes], int).reshape(-1, 2)
    return InpaintingPlan(corners, [list(w) for w in waves], owner)


def _plan_writes(target, size, overlap=0):
    """The box plan, its waves, and the pixels each box writes.

    A box writes the pixels it is responsible for (`_plan_boxes`) and, with
    ``overlap`` > 0, re-draws the pixels within ``overlap`` pixels of them
    that a box of an earlier wave filled: the junction of two pieces moves
    into the earlier piece, and the later box draws both sides of it with the
    earlier box's fill beyond it as known pixels, so no filled pixel ends
    where its own box had no context.

    Returns
    -------
    boxes : list
        ``(y0, x0, assigned)`` as `_plan_boxes`.
    waves : list of list of int
        As `_waves`.
    writes : list of numpy.ndarray
        Per box, the ``(size, size)`` boolean map (box frame) of the pixels
        it writes: ``assigned`` and the re-drawn ones.
    owner : numpy.ndarray
        ``(H, W)`` index of the box whose values each pixel ends with (-1
        where none).
    """
    H, W = target.shape
    boxes = _plan_boxes(target, size)
    waves = _waves(boxes, size)
    owner = np.full((H, W), -1, int)
    writes = [None] * len(boxes)
    grow = np.ones((3, 3), bool)
    for members in waves:
        for i in members:
            y0, x0, assigned = boxes[i]
            frame, inner = _box_slices(y0, x0, size, H, W)
            write = assigned.copy()
            if overlap > 0:
                near = ndimage.binary_dilation(assigned, structure=grow, iterations=overlap)
                write[inner] |= near[inner] & target[frame] & (owner[frame] >= 0)
            owner[frame][write[inner]] = i
            writes[i] = write
    return boxes, waves, writes, owner


def _sky_sigma(plane, unknown):
    """Robust sky noise of a plane from its known pixels (neighbour differences)."""
    ok = ~unknown[:, 1:] & ~unknown[:, :-1]
    d = (plane[:, 1:] - plane[:, :-1])[ok]
    if d.size < 10:
        return np.nan
    return float(np.median(np.abs(d - np.median(d))) / 0.6745 / np.sqrt(2.0))


def _holds_source(raw, unknown, nsigma=5.0, smooth=2.0):
    """Whether the known pixels of a box ``(band, S, S)`` show a source in any band.

    Each band is smoothed with a Gaussian of ``smooth`` pixels, normalised
    by the smoothed map of known pixels (so the unknown ones do not count);
    a source is a smoothed pixel more than ``nsigma`` times the smoothed sky
    noise above the known pixels' median.  Boxes without one get drawn sky
    noise instead of the network (the measured shortcut of full frames).
    """
    for band in range(raw.shape[0]):
        known = ~unknown[band]
        if known.sum() < 0.25 * known.size:
            return True
        sig = _sky_sigma(raw[band], unknown[band])
        if not np.isfinite(sig) or sig <= 0:
            return True
        level = np.median(raw[band][known])
        num = ndimage.gaussian_filter(np.where(known, raw[band] - level, 0.0), smooth)
        den = ndimage.gaussian_filter(known.astype(float), smooth)
        ok = den > 0.3
        # noise of the smoothed map: sigma * sqrt(sum k^2) / sum k, sum k^2 = 1 / (4 pi s^2)
        sig_s = sig / (2.0 * np.sqrt(np.pi) * smooth)
        if (num[ok] / den[ok] > nsigma * sig_s / np.sqrt(den[ok])).any():
            return True
    return False


class _BoxNoise(PerSampleNoise):
    """Row ``r`` of a batch of boxes draws from the stream (seed, box_ids[r // K], r % K)."""

    def __init__(self, seed, box_ids, n_draws):
        super().__init__(seed)
        self.box_ids = [int(b) for b in box_ids]
        self.n_draws = int(n_draws)

    def generators(self, lo, n):
        gens = []
        for r in range(int(lo), int(lo) + int(n)):
            b, k = divmod(r, self.n_draws)
            gens += PerSampleNoise(self.seed, key=(self.box_ids[b],)).generators(k, 1)
        return gens


def _smooth_fill(scaled, unknown, fallback):
    """Initial guess of the unknown pixels: a normalised Gaussian interpolation.

    ``scaled`` is ``(n, band, y, x)``, ``unknown`` ``(band, y, x)``; bands
    with no known pixel get the mean guess of the other bands, or
    ``fallback`` (a number, or one per band) when the whole box is unknown.
    """
    out = scaled.copy()
    known = (~unknown).astype(np.float64)
    size = scaled.shape[-1]
    have = known.reshape(known.shape[0], -1).any(axis=1)
    for sigma in (max(size / 16.0, 1.0), max(size / 4.0, 2.0)):
        den = np.stack([ndimage.gaussian_filter(k, sigma, mode="nearest") for k in known])
        for n in range(scaled.shape[0]):
            for b in np.flatnonzero(have):
                num = ndimage.gaussian_filter(scaled[n, b] * known[b], sigma, mode="nearest")
                ok = unknown[b] & (den[b] > 1e-3)
                out[n, b][ok] = (num / np.maximum(den[b], 1e-12))[ok]
        if all((den[b] > 1e-3).all() for b in np.flatnonzero(have)):
            break
    for b in np.flatnonzero(have):
        hole = unknown[b] & ~(den[b] > 1e-3)
        out[:, b][:, hole] = np.mean(scaled[:, b][:, ~unknown[b]], axis=-1, keepdims=True)
    if not have.all():
        fallback = np.broadcast_to(np.asarray(fallback, np.float64), (scaled.shape[1],))
        for b in np.flatnonzero(~have):
            out[:, b] = out[:, have].mean(axis=1) if have.any() else fallback[b]
    return out.astype(np.float32)


def _input_uncertainty(image, ccd, shape, factor, dtype):
    """The input's standard deviation per pixel in its own unit, ``shape``, or None.

    Taken from the input object itself when it is an `NDData` with an
    uncertainty of the right shape (so known pixels keep it bit for bit),
    else from what `read_image` found (a FITS ``UNCERT`` extension, in
    nanomaggy), converted back to the input's unit.
    """
    if isinstance(image, NDData) and image.uncertainty is not None:
        try:
            arr = np.asarray(image.uncertainty.represent_as(StdDevUncertainty).array)
        except Exception:   # an uncertainty class that cannot become a standard deviation
            arr = None
        if arr is not None:
            arr = arr if arr.ndim == 3 else arr[None]
            if arr.shape == tuple(shape):
                return arr.astype(dtype, copy=True)
    if ccd.uncertainty is not None and ccd.uncertainty.array.shape == tuple(shape):
        return (np.asarray(ccd.uncertainty.array, np.float64) / factor).astype(dtype)
    return None


# --------------------------------------------------------------------------- the work
class _Runner:
    """Runs the reverse process over boxes and draws for one call of `inpaint`."""

    def __init__(self, model, times, sampler, options, seed, n_draws, batch_size, weights,
                 progress, cond=None, guidance_scale=1.0, data_weight=0.0,
                 sky_shortcut=True, seam_overlap=0):
        self.model = model
        self.data_weight = float(data_weight)
        self.sky_shortcut = bool(sky_shortcut)
        self.seam_overlap = int(seam_overlap)
        self.n_boxes = self.n_sky_boxes = 0
        self.den = model.denoiser(weights)
        self.wrap = None
        if cond is not None:   # every draw of the galaxy has its one row of conditions
            def wrap(den, batch):
                rows = cond.expand(len(batch.generators), -1).clone()
                return ClassifierFreeGuidance(den, rows, guidance_scale)
            self.wrap = wrap
        self.times = times
        self.rule = get_sampler(sampler, **options)
        self.seed = seed
        self.n_draws = n_draws
        self.batch_size = batch_size
        self.progress = progress
        self.nfe = 0

    def _sigma_known(self, raw, unknown):
        """Noise of the known pixels in the network's units, (K, band, S, S).

        The sky noise of each band is estimated from the known pixels
        themselves (median absolute difference of horizontal neighbours,
        robust to the galaxy) and carried through the flux scaling's local
        slope at each pixel.
        """
        scaler = self.model.scaler_
        nb = raw.shape[1]
        sig = np.array([_sky_sigma(raw[0, b], unknown[b]) for b in range(nb)])
        fallback = np.nanmedian(sig) if np.isfinite(sig).any() else 1e-3
        sig = np.where(np.isfinite(sig) & (sig > 0), sig, fallback)[None, :, None, None]
        up = scaler.transform(raw + sig)
        down = scaler.transform(raw - sig)
        return np.maximum(np.abs(up - down) / 2.0, 1e-4).astype(np.float32)

    def _boxes(self, x0_known, unknown, box_ids, raw):
        """Draws (B, K, band, S, S) in [-1, 1] for B boxes, in one batched run.

        ``x0_known`` and ``raw`` are (B, K, band, S, S) (network units and
        nanomaggies), ``unknown`` (B, band, S, S); draw ``k`` of box ``b``
        comes from the stream (seed, box_ids[b], k) whatever the batching.
        """
        model, den = self.model, self.den
        B, K, nb, S = x0_known.shape[:3] + (x0_known.shape[-1],)
        # zero flux in each band, through the scaler (whose parameters may be per band)
        fallback = model.scaler_.transform(np.zeros((nb, 1, 1))).reshape(nb)
        init = np.concatenate([_smooth_fill(x0_known[b], unknown[b], fallback)
                               for b in range(B)])
        rule = "noise" if self.rule.stochastic else "consistent"
        device = den.device
        known = torch.from_numpy(np.ascontiguousarray(
            x0_known.reshape((B * K,) + x0_known.shape[2:])))
        unk = torch.from_numpy(np.ascontiguousarray(np.repeat(unknown, K, axis=0)))

        def guidance(batch):   # put this batch's known pixels back after every step
            return known_pixel_guidance(den.schedule, known[batch.index].to(device),
                                        unk[batch.index].to(device), batch.generators, rule)

        wrap, grad = self.wrap, False
        if self.data_weight > 0:
            sigma_y = torch.from_numpy(np.concatenate(
                [self._sigma_known(raw[b], unknown[b]) for b in range(B)]))
            known_w = (~unk).to(torch.float32)

            def measured(den_, batch, inner=self.wrap):
                den_ = den_ if inner is None else inner(den_, batch)
                return KnownPixelGradient(den_, known[batch.index].to(device),
                                          known_w[batch.index].to(device),
                                          sigma_y[batch.index].to(device), self.data_weight)
            wrap, grad = measured, True

        # start: the smooth guess noised to times[0]
        out, nfe = generate(den, init, self.times, self.rule,
                            _BoxNoise(self.seed, box_ids, K), self.batch_size,
                            guidance=guidance, wrap=wrap, device=device, grad=grad,
                            progress=self.progress)
        self.nfe += nfe * B
        return out.numpy().reshape((B, K) + out.shape[1:])

    def _sky_draws(self, raw, unknown, box_ids):
        """Sky-only boxes: Gaussian sky noise around the known pixels' median, (B, K, ...)."""
        B, K, nb, S = raw.shape[:3] + (raw.shape[-1],)
        out = np.empty(raw.shape, np.float32)
        for b in range(B):
            gens = _BoxNoise(self.seed, [box_ids[b]], K).generators(0, K)
            z = torch.stack([torch.randn((nb, S, S), generator=g) for g in gens]).numpy()
            for band in range(nb):
                ok = ~unknown[b, band]
                level = float(np.median(raw[b, 0, band][ok])) if ok.any() else 0.0
                sig = _sky_sigma(raw[b, 0, band], unknown[b, band])
                out[b, :, band] = level + sig * z[:, band]
        return out

    def fill(self, data, unknown, target):
        """Draws ``(K, band, H, W)`` in nanomaggies: known pixels = ``data``.

        ``unknown`` (band, H, W): pixels with no usable value; ``target``
        (H, W): the pixels whose generated values are wanted.  Boxes that do
        not overlap run together (one batched reverse process per wave,
        `_waves`); a box whose known pixels hold no source
        (`_holds_source`) gets drawn sky noise when ``sky_shortcut`` is on.
        """
        size = int(self.model.image_size)
        scaler = self.model.scaler_
        work = np.repeat(np.where(unknown, 0.0, data)[None], self.n_draws, axis=0)
        work = work.astype(np.float32)
        unk = unknown.copy()
        H, W = target.shape
        boxes, waves, writes, _ = _plan_writes(target, size, self.seam_overlap)
        self.n_boxes, self.n_sky_boxes = len(boxes), 0
        shortcut = self.sky_shortcut and (H > size or W > size)
        for wave in waves:
            raws = np.stack([_take(work, boxes[i][0], boxes[i][1], size, 0.0) for i in wave])
            # pixels filled by an earlier wave that this box re-draws are unknown to it
            unks = np.stack([_take(unk, boxes[i][0], boxes[i][1], size, True)
                             | (writes[i] & _take(unknown, boxes[i][0], boxes[i][1], size, True))
                             for i in wave])
            sky = np.array([shortcut and not _holds_source(raws[j, 0], unks[j])
                            for j in range(len(wave))], bool)
            gen = np.empty(raws.shape, np.float32)
            if sky.any():
                ids = [wave[j] for j in np.flatnonzero(sky)]
                gen[sky] = self._sky_draws(raws[sky], unks[sky], ids)
                self.n_sky_boxes += len(ids)
            if (~sky).any():
                ids = [wave[j] for j in np.flatnonzero(~sky)]
                net = self._boxes(scaler.transform(raws[~sky]), unks[~sky], ids, raws[~sky])
                gen[~sky] = scaler.inverse_transform(net.reshape((-1,) + net.shape[2:])).reshape(
                    net.shape)
            for j, i in enumerate(wave):
                (ys, xs), box = _box_slices(boxes[i][0], boxes[i][1], size, H, W)
                local = gen[j][(...,) + box]
                mine = writes[i][box]
                put = unknown[:, ys, xs] & mine
                work[:, :, ys, xs] = np.where(put, local, work[:, :, ys, xs])
                unk[:, ys, xs] &= ~mine
        return work


def _regridded_fill(runner, data, unknown, target, wcs, model_scale):
    """Inpaint an image at another pixel scale through a grid at the model's scale."""
    from reproject import reproject_adaptive

    H, W = target.shape
    ratio = pixel_scale_of(wcs).to_value(u.arcsec) / model_scale
    Hm, Wm = int(math.ceil(H * ratio)) + 2, int(math.ceil(W * ratio)) + 2
    centre = wcs.pixel_to_world((W - 1) / 2.0, (H - 1) / 2.0).icrs
    grid_wcs = make_tan_wcs((Hm, Wm), model_scale * u.arcsec, centre.ra.deg, centre.dec.deg)

    def forward(arr, flux):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return reproject_adaptive((np.asarray(arr, np.float64), wcs), grid_wcs,
                                      shape_out=(Hm, Wm), conserve_flux=flux,
                                      kernel="hann", boundary_mode="strict")

    data_m, foot = forward(np.where(unknown, 0.0, data), True)
    outside = ~(foot > 0.99)
    if outside.ndim == 3:
        outside = outside.any(axis=0)
    unk_m = (np.nan_to_num(forward(unknown.astype(np.float64), False)[0], nan=1.0) > 0)
    unk_m |= outside[None] | ~np.isfinite(data_m)
    tgt_m = (np.nan_to_num(forward(target.astype(np.float64), False)[0], nan=0.0) > 0)
    tgt_m &= ~outside
    draws_m = runner.fill(np.nan_to_num(data_m).astype(np.float32), unk_m, tgt_m)
    back = np.empty((draws_m.shape[0],) + data.shape, np.float32)
    for k, d in enumerate(draws_m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            arr, _ = reproject_adaptive((d.astype(np.float64), grid_wcs), wcs, shape_out=(H, W),
                                        conserve_flux=True, kernel="hann",
                                        boundary_mode="nearest")
        back[k] = np.nan_to_num(arr)
    return back


def inpaint(model, image, mask=None, method="measured", n_draws=1, t_start=None, sampler=None,
            steps=None, grid=None, jump_length=None, n_resample=None, seed=None, weights="ema",
            batch_size=16, bands=None, unit=None, hdu=None, progress=False,
            return_draws=False, mask_bits=None, conditions=None, guidance_scale=1.0,
            data_weight=None, sky_shortcut=True, seam_overlap=None, **options):
    """Fill the masked pixels of an image with a trained diffusion model.

    Parameters
    ----------
    model : `~astro_sbgm.GalaxyDiffusion`
        A fitted (or loaded) model.
    image : object
        Anything `astro_sbgm.io.read_image` accepts: a FITS path, a
        `~astropy.io.fits.PrimaryHDU` / `~astropy.io.fits.ImageHDU`, an
        `~astropy.io.fits.HDUList`, a `~astropy.nddata.CCDData` or
        `~astropy.nddata.NDData` (2-D or ``(band, y, x)``), ``(array, WCS)``,
        an array with ``bands=``.  Any size; see the module docstring for
        images larger than the model or at another pixel scale.  The input
        (and a file on disk) is never modified.
    mask : optional
        True (or non-zero) = pixel to fill.  A boolean array ``(y, x)`` (all
        bands) or ``(band, y, x)``; a FITS file name, HDU or HDUList; a
        `CCDData`/`NDData` whose data is the mask; or a ``regions`` shape
        (pixel, or sky with an image WCS).  When None, the image's own mask
        is used: ``CCDData.mask``, the ``MASK`` extension of a FITS file
        (and, for a cutout-service file, the pixels of zero inverse
        variance).  Non-finite pixels are always filled.  A given ``mask``
        replaces the image's own mask.  With ``mask_bits``, ``mask`` is a bit
        mask instead, such as a Legacy Survey ``maskbits`` file.
    method : {"measured", "fast", "paper", "repaint"}
        See `INPAINT_METHODS` and the module docstring.
    n_draws : int
        Independent fills.  The result holds their mean, and with
        ``n_draws > 1`` their per-pixel standard deviation (``ddof=1``) as
        the uncertainty of the filled pixels.  The mean is a summary, not a
        galaxy: its sky noise is ``sqrt(n_draws)`` times too low in the
        filled pixels.  Measure photometry on the draws
        (``return_draws=True``), one catalogue row per draw.
    t_start : float, optional
        First timestep of the reverse process (default ``0.95 T``: 950 of
        1000 as in the paper).
    sampler : str, optional
        Override the method's sampler (`astro_sbgm.diffusion.SAMPLERS`).
    steps : int, optional
        Override the method's number of grid points.
    grid : {"uniform", "quadratic", "karras"}, optional
        Override the method's grid.
    jump_length, n_resample : int, optional
        RePaint resampling: grid points jumped back and passes per stretch
        (1: no resampling); default: the method's (`INPAINT_METHODS`).
    seed : int, optional
        Draw ``k`` of a seed is the same whatever ``n_draws`` and
        ``batch_size``.  None draws a seed (recorded in the output).
    weights : {"ema", "model"}
        The weight average (default) or the raw weights.
    batch_size : int
        Draws per network call.
    bands, unit, hdu
        Passed to `astro_sbgm.io.read_image` for inputs that do not carry
        their band names or unit, or to pick an HDU.
    progress : bool
        Show a progress bar per reverse process.
    return_draws : bool
        Also return every draw (see Returns).
    mask_bits : sequence of str or int, str or int, optional
        Fill only the pixels of ``mask`` (a bit-mask image: a Legacy Survey
        ``legacysurvey-<brick>-maskbits.fits.fz`` file, HDU, or integer
        array on the image's grid) that have one of these bits set, read as
        `astro_sbgm.io.read_mask` reads them: names of
        `astro_sbgm.surveys.LEGACY_SURVEY_MASKBITS` (case insensitive, e.g.
        ``("BRIGHT", "SATUR_G")``) or integer values.  A per-band bit
        (``SATUR_G``, ``ALLMASK_R``) fills its own band only, every other
        bit all bands.  Default None: every non-zero pixel of ``mask`` is
        filled.
    conditions : `~astropy.table.QTable`, `~astropy.table.Table` or dict, optional
        For a conditional model: the catalogue properties of the galaxy in
        the image (one row or scalars, with units; e.g. its catalogue
        magnitude under a trail), as `~astro_sbgm.GalaxyDiffusion.sample`
        takes them.  The reverse process then runs with classifier-free
        guidance.
    guidance_scale : float
        The guidance scale with ``conditions`` (see
        `~astro_sbgm.GalaxyDiffusion.sample`).
    data_weight : float, optional
        Scale of the known-pixel gradient step (`KnownPixelGradient`);
        default: the method's (4 for ``"measured"``, 0 for the others).
        Each step then costs a forward and a backward pass, both counted
        in ``NFE``.
    sky_shortcut : bool
        For an image larger than the model: a box whose known pixels hold
        no source (no smoothed pixel 5 sigma above the box's median in any
        band) is filled with Gaussian sky noise of the box's own level and
        noise (measured from its known pixels) instead of running the
        network.  ``meta['SKYBOXES']`` counts them.  Cutouts (one box) never
        take it.
    seam_overlap : int, optional
        For an image larger than the model, where a masked area is split
        between boxes: each box also re-draws the pixels within this many
        pixels of its own that a box of an earlier wave filled, so the
        junction moves into the earlier piece and is drawn by one box with
        context on both sides (``meta['SEAMOVL']``; no extra network
        evaluations).  Default: a sixteenth of the model's image size (4
        pixels at 64), half the boxes' context margin, chosen by the
        frame benchmark (:ref:`inpainting`); 0: each box draws only its own
        piece.  At most an eighth of the image size (the context margin).
    **options
        Passed to the sampler (``eta`` for ddim, ``variance`` for ddpm);
        they replace the method's own options (``variance="posterior"`` for
        ``"repaint"``) when the method's sampler is used.  For a model read
        from the paper's released checkpoints
        (`~astro_sbgm.GalaxyDiffusion.from_astroddpm`), the ``"ddpm"``
        sampler (``method="paper"``) defaults to the released code's
        posterior variance (`astro_sbgm._astroddpm.released_sampler_options`).

    Returns
    -------
    summary : `~astropy.nddata.CCDData`
        ``(band, y, x)`` in the input's bands, unit and (floating) dtype
        (integer inputs come back as float64), with the input's WCS and
        header cards.  Unmasked pixels are the input's values bit for bit;
        masked pixels in the model's bands hold the mean of the draws (in
        the model's flux range, ``[flux_lower, flux_upper]``).  Use it as
        a picture or a per-pixel estimate, not for photometry.

        * ``uncertainty``: `~astropy.nddata.StdDevUncertainty` with one
          meaning throughout: known pixels keep the input's uncertainty
          (bit for bit), filled pixels hold the spread of the draws
          (``ddof=1``), which already includes the sky noise the model
          draws (no sky is added on top).  Values nobody knows are NaN:
          known pixels of an input without uncertainty, filled pixels of a
          single draw.  None when nothing is known (an input without
          uncertainty and ``n_draws == 1``).
        * ``flags``: uint8 array, 1 where a pixel was generated.
        * ``mask``: pixels still bad (masked pixels of bands the model does
          not know, which are left as they were), or None.
        * ``meta``: ``INPAINT`` (method), ``INPSAMP`` (sampler),
          ``DDPMVAR`` (``beta`` or ``posterior``, for the ddpm sampler),
          ``INPSTEPS`` (grid points), ``TSTART``, ``NRESAMP``, ``JUMPLEN``, ``NFE``
          (network evaluations per draw, a backward pass counted as one),
          ``DATAWGT`` (known-pixel gradient scale), ``NBOXES`` and
          ``SKYBOXES`` (boxes, and boxes of sky only filled with sky noise),
          ``SEAMOVL`` (``seam_overlap``),
          ``NDRAWS``, ``SEED``, ``WEIGHTS``,
          ``NFILLED`` (pixels generated), ``TRSTEPS``, and ``DRAWMEAN``
          (True: the filled pixels are a mean of ``NDRAWS`` draws); with
          ``conditions``, ``GUIDANCE`` and ``CONDNj``/``CONDVj``/``CONDUj``
          as in `~astro_sbgm.GalaxyDiffusion.sample`; for an image in
          another survey's filters (``FILTERn`` cards such as ``'sdss:g'``;
          bands are matched by filter name), ``FMAP``, ``FMAPFROM``,
          ``FMAPn``, ... (`astro_sbgm.filter_mapping.FilterMapping.cards`):
          the image was put into the model's filters with the colour terms
          and each fill mapped back into the image's filter.
    draws : list of `~astropy.nddata.CCDData`
        Only with ``return_draws=True``, then the return value is
        ``(summary, draws)``: ``n_draws`` images laid out like
        ``summary`` (same unit, dtype, WCS, ``flags``, ``mask`` and
        ``uncertainty``), each with the input's known pixels and one draw's
        filled pixels, ``meta['DRAWIDX']`` its index (0-based, the same
        draw for the same seed whatever ``n_draws``) and
        ``meta['DRAWMEAN'] = False``.  These are galaxies with the right
        sky noise: measure them.

    Raises
    ------
    NotFittedError
        If the model was never fitted or loaded.
    ValueError
        For a mask of the wrong shape, a mask that selects no pixel or
        every pixel of the model's bands, an image sharing no band with the
        model, an unknown method, a bad ``t_start``/``steps``/``n_draws``,
        an unknown bit in ``mask_bits`` (named, with the known ones; before
        any work), ``mask_bits`` without ``mask`` or with a mask that is not
        an integer image; plus everything `astro_sbgm.io.read_image` and
        `astro_sbgm.io.read_mask` raise.

    Notes
    -----
    Write the result with `astro_sbgm.io.write_image` (data, ``MASK`` and
    ``UNCERT`` extensions; in nanomaggy float32).  The ``astro-sbgm
    inpaint`` command also writes ``flags`` as a ``FLAGS`` extension.
    """
    model.denoiser(weights)     # NotFittedError (and bad weights) before any work
    requested = cond = None
    if conditions is not None:  # one row: the galaxy being filled (a conditional model)
        requested, cond = model.read_conditions(conditions, 1)
        cond = torch.from_numpy(cond)
    elif guidance_scale != 1.0:
        raise ValueError("guidance_scale applies with conditions= (a conditional model)")
    if method not in INPAINT_METHODS:
        raise ValueError(f"unknown inpainting method {method!r}; known methods: "
                         f"{sorted(INPAINT_METHODS)}")
    n_draws = check_positive_int("n_draws", n_draws)
    batch_size = check_positive_int("batch_size", batch_size)
    if mask_bits is not None:
        if mask is None:
            raise ValueError("mask_bits selects bits of the bit-mask image given as mask, "
                             "but no mask was given; pass mask= (e.g. a Legacy Survey "
                             "maskbits file) or drop mask_bits")
        mask_bits = _io.check_mask_bits(mask_bits)
    cfg = INPAINT_METHODS[method]
    sampler = cfg["sampler"] if sampler is None else sampler
    if sampler == cfg["sampler"]:
        options = {**cfg["options"], **options}
    options = {**model.sampler_options(sampler), **options}
    get_sampler(sampler, **options)   # validate early
    times = inpainting_grid(model.schedule_, method, t_start, steps, grid, jump_length,
                            n_resample)
    if seed is None:
        seed = new_seed()

    ccd = read_image(image, bands=bands, unit=unit, hdu=hdu)
    raw, in_unit = _io.read_raw(image, hdu, unit)
    if raw is None or raw.shape != ccd.shape:
        raw, in_unit = np.asarray(ccd.data), u.nanomaggy
    in_bands = parse_bands(ccd.meta["BANDS"])
    # bands are matched by filter name: "sdss:g" is not the model's "decam:g"
    in_filters = _io.image_filters(ccd)
    model_bands = tuple(model.bands_)
    model_filters = tuple(LEGACY_SURVEY_FILTERS[b] for b in model_bands)
    common = [f for f in in_filters if f in model_filters]
    foreign = not set(in_filters) <= set(LEGACY_SURVEY_FILTERS.values())
    if not common and not foreign:
        raise ValueError(f"the image has bands {list(in_bands)} and the model "
                         f"{list(model_bands)}: no band in common, nothing can be inpainted; "
                         "give an image in the model's bands (or pass bands= if its band "
                         "names are not recorded)")

    shape = ccd.shape
    if mask is None:
        fill = (np.zeros(shape, bool) if ccd.mask is None
                else np.broadcast_to(np.asarray(ccd.mask, bool), shape).copy())
    else:
        fill = _io.read_mask(mask, bits=mask_bits, bands=in_bands, shape=shape, wcs=ccd.wcs)
    fill |= ~np.isfinite(raw)
    # (input plane, model band, flux factor model/input or None), one per model band used
    fmap = None
    if common:
        pairs = [(in_filters.index(f), model_filters.index(f), None) for f in common]
    else:   # another survey's filters: colour terms per pixel (astro_sbgm.filter_mapping)
        fmap = filter_mapping(ccd.data, in_filters, model_filters, mask=fill,
                              uncertainty=None if ccd.uncertainty is None
                              else ccd.uncertainty.array)
        warnings.warn(f"the image's filters {list(in_filters)} are mapped onto the model's "
                      f"{list(model_filters)} with colour terms and the fill mapped back "
                      f"({fmap.describe()})", AstroSBGMInputWarning)
        pairs = [(j, m, fmap.factor[m]) for m, j in enumerate(fmap.plane)]
    used = sorted({j for j, _, _ in pairs})
    extra = [in_bands[j] for j in range(len(in_bands)) if j not in used]
    in_idx = used
    fill_model = fill[in_idx]
    if not fill_model.any():
        raise ValueError("the mask selects no pixel in the model's bands "
                         f"{list(model_bands)}: nothing to inpaint; give a mask with True "
                         "where pixels are to be filled")
    if fill_model.all():
        raise ValueError("the mask covers every pixel of the image in the model's bands: "
                         "there is nothing to condition on; use model.sample() to draw new "
                         "galaxies, or mask fewer pixels")
    if extra:
        warnings.warn(f"band(s) {extra} are not modelled (the model has "
                      f"{list(model_bands)}); they are returned unchanged and their masked "
                      "pixels stay masked", AstroSBGMInputWarning)

    # the model's bands on the image grid (bands the image lacks: all unknown)
    nbm = len(model_bands)
    data_m = np.zeros((nbm,) + shape[1:], np.float32)
    unknown_m = np.ones((nbm,) + shape[1:], bool)
    for j, m, k in pairs:
        data_m[m] = ccd.data[j] if k is None else ccd.data[j] * k
        unknown_m[m] = fill[j]
    target = fill_model.any(axis=0)

    data_weight = cfg.get("data_weight", 0.0) if data_weight is None else float(data_weight)
    if not data_weight >= 0:
        raise ValueError(f"data_weight must be >= 0 (0: no gradient step), got {data_weight!r}")
    seam_overlap = _check_seam_overlap(seam_overlap, model.image_size)
    runner = _Runner(model, times, sampler, options, seed, n_draws, batch_size, weights,
                     progress, cond, guidance_scale, data_weight, sky_shortcut, seam_overlap)
    model_scale = float(model.pixel_scale)
    regrid = (ccd.wcs is not None and abs(pixel_scale_of(ccd.wcs).to_value(u.arcsec)
                                          / model_scale - 1) > 1e-3)
    if regrid:
        warnings.warn(f"the image is at {pixel_scale_of(ccd.wcs):.4g}/pix and the model at "
                      f"{model_scale:.4g} arcsec/pix: the masked area is inpainted on a "
                      "reprojected grid and reprojected back", AstroSBGMInputWarning)
        draws = _regridded_fill(runner, data_m, unknown_m, target, ccd.wcs, model_scale)
    else:
        draws = runner.fill(data_m, unknown_m, target)

    # compose the output from the original pixels
    if np.issubdtype(raw.dtype, np.floating):
        dtype = raw.dtype
    else:
        dtype = np.dtype(np.float64)
    factor = float(_io.as_nanomaggy(np.ones(1, np.float64), in_unit)[0])
    out = np.array(raw, dtype=dtype, copy=True)
    per_draw = np.repeat(out[None], n_draws, axis=0) if return_draws else None
    unc = np.full(shape, np.nan, dtype)
    given = _input_uncertainty(image, ccd, shape, factor, dtype)
    if given is not None:
        unc[...] = given
    flags = np.zeros(shape, np.uint8)
    done = set()
    for j, m, k in pairs:
        if j in done:      # one model band fills each input plane
            continue
        done.add(j)
        sel = fill[j]
        fills = draws[:, m][:, sel].astype(np.float64)          # (K, n_filled)
        if k is not None:
            fills = fills / k[sel]                               # back into the input's filter
        out[j][sel] = (fills.mean(axis=0) / factor).astype(dtype)
        flags[j][sel] = 1
        unc[j][sel] = ((fills.std(axis=0, ddof=1) / factor).astype(dtype) if n_draws > 1
                       else np.nan)
        if per_draw is not None:
            per_draw[:, j][:, sel] = (fills / factor).astype(dtype)
    still_bad = np.zeros(shape, bool)
    for b in extra:
        j = in_bands.index(b)
        still_bad[j] = fill[j]
    if np.isnan(unc).all():
        unc = None

    meta = ccd.meta.copy()
    meta["INPAINT"] = (method, "inpainting method (astro_sbgm)")
    meta["INPSAMP"] = (getattr(runner.rule, "name", str(sampler)), "inpainting sampler")
    if getattr(runner.rule, "variance", None) is not None:
        meta["DDPMVAR"] = (runner.rule.variance, "ddpm step variance: beta or posterior")
    meta["INPSTEPS"] = (int(len(np.unique(times))), "grid points")
    meta["TSTART"] = (float(times[0]), "first timestep of the reverse process")
    meta["NRESAMP"] = (int(cfg["n_resample"] if n_resample is None else n_resample),
                       "RePaint passes per stretch")
    meta["JUMPLEN"] = (int(cfg["jump_length"] if jump_length is None else jump_length),
                       "RePaint jump length, grid points")
    meta["NFE"] = (int(runner.nfe), "network evaluations per draw (backward = 1)")
    meta["DATAWGT"] = (data_weight, "known-pixel gradient step scale (0: none)")
    meta["NBOXES"] = (int(runner.n_boxes), "model-size boxes inpainted")
    meta["SKYBOXES"] = (int(runner.n_sky_boxes), "boxes of sky only, filled with sky noise")
    meta["SEAMOVL"] = (runner.seam_overlap, "[pix] pixels re-drawn across box junctions")
    meta["NDRAWS"] = (n_draws, "draws; the data hold their mean")
    meta["SEED"] = (int(seed), "seed of the draws")
    meta["WEIGHTS"] = (weights, "ema = weight average, model = raw")
    if requested is not None:
        meta.update(model.conditions_.request_cards(requested[0], guidance_scale))
    meta["NFILLED"] = (int(flags.sum()), "pixels generated (FLAGS = 1)")
    meta.update(_io.provenance_cards(None, getattr(model, "n_steps_", 0), origin=False))
    meta["DRAWMEAN"] = (n_draws > 1, "filled pixels: mean of NDRAWS draws, not a galaxy")
    if fmap is not None:
        meta.update(fmap.cards)

    def build(data, meta):
        return _io.make_image(data, in_bands, wcs=ccd.wcs,
                              mask=still_bad.copy() if still_bad.any() else None,
                              uncertainty=None if unc is None else unc.copy(),
                              flags=flags.copy(), unit=in_unit, meta=meta, filters=in_filters)

    result = build(out, meta)
    if not return_draws:
        return result
    draw_list = []
    for k in range(n_draws):
        meta_k = meta.copy()
        meta_k["DRAWMEAN"] = (False, "one draw: filled pixels are a sample")
        meta_k["DRAWIDX"] = (k, "index of this draw (0-based)")
        draw_list.append(build(per_draw[k], meta_k))
    return result, draw_list
