"""Domain transfer (SDEdit): make other images look like the survey a model learnt.

`transfer` noises an input image with the forward process up to ``t =
strength * T`` and runs the reverse process back to a clean image (Meng et
al. 2022, "SDEdit"; Smith, Geach et al. 2022, section 4.3, used ``T = 600``
of 1000, i.e. ``strength = 0.6``).  Small strengths keep the input's
layout and change its texture; ``strength = 1`` forgets the input.

The reverse process is stochastic by default, as in the paper (ancestral
DDPM steps) and in SDEdit (a reverse SDE): fresh noise enters at every step,
so the result carries the survey's own noise and texture rather than a
smoothed version of the input's.  The default sampler,
``"dpmpp-2m-sde"`` (`DEFAULT_TRANSFER_SAMPLER`), is a second-order solver of
that reverse SDE in 20 steps; ``sampler="ddpm"`` is the paper's ancestral
sampler on every integer timestep (600 evaluations at ``strength = 0.6``);
``sampler="dpmpp-2m"`` (the default before) runs the deterministic
probability-flow ODE instead, which keeps more of the input and less of the
survey's texture (``benchmarks/bench_transfer.py`` measures the trade).

Inputs
------
* Anything `astro_sbgm.io.read_image` accepts (FITS files, HDUs, CCDData,
  ...), in calibrated flux units.  Images on another pixel grid are
  reprojected onto the model's grid first (`astro_sbgm.io.to_model_grid`,
  flux-conserving).  When the image does not hold every band of the model,
  its bands are mapped onto the model's bands by effective wavelength
  (`band_weights`): each model band is interpolated linearly in
  ``log(wavelength)`` between the two input bands that bracket it, or takes
  the nearest input band outside their range (a warning lists the
  mapping).  At least one model band must lie within a factor 1.3 in
  wavelength of an input band.
* Pictures (PNG, JPEG, TIFF, BMP; a path or a `PIL.Image.Image`), read with
  Pillow.  Row 0 of a picture is its top, so pictures are flipped to put it
  at the top of the image (FITS convention: row 0 at the bottom).  A
  transparent pixel counts as black.  The three colour channels map onto
  the model's bands with `rgb_to_bands`:

  ``mapping="display"`` (default)
      The inverse of the colour composites of `astro_sbgm.visualization`:
      the model's bands sorted by wavelength are spread evenly from blue to
      red, and each takes the channel at its place (linear between
      channels).  For grz: g <- B, r <- G, z <- R, so a cartoon drawn to look
      like a Legacy Survey colour picture keeps its colours.
  ``mapping="wavelength"``
      Channels at the sRGB primaries' dominant wavelengths
      (`RGB_WAVELENGTHS`: B 465 nm, G 532 nm, R 630 nm) and each band
      interpolated in ``log(wavelength)`` (clamped at the ends: z <- R).

  Intensities (0 to 1) are then put on the model's flux scale: by default
  linearly onto the network's [-1, 1] range, so 0 is the model's lower
  flux limit and 1 its upper one through the model's own stretch (linear
  or asinh); with ``flux_range=(lo, hi)`` linearly onto ``lo .. hi``
  nanomaggies.  A picture that is not square is centre-cropped to a
  square and resampled (Pillow, box filter when shrinking, bicubic when
  enlarging) to the model's size; it gets a placeholder TAN WCS at the
  model's pixel scale (RA = Dec = 0).
"""

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from ._version import __version__
from .bands import BAND_WAVELENGTHS, parse_bands
from .diffusion import get_sampler, make_grid, reverse_process
from .diffusion.samplers import randn_like
from .estimator import _sample_generators
from ._astroddpm import released_sampler_options
from .io import AstroSBGMInputWarning, make_tan_wcs, read_image, to_model_grid
from ._validation import check_positive_int

__all__ = ["transfer", "read_picture", "rgb_to_bands", "band_weights", "RGB_WAVELENGTHS",
           "PICTURE_SUFFIXES", "DEFAULT_TRANSFER_SAMPLER"]

#: Dominant wavelengths given to the channels of a picture (``mapping="wavelength"``).
RGB_WAVELENGTHS = {"B": 465.0 * u.nm, "G": 532.0 * u.nm, "R": 630.0 * u.nm}

#: File name endings read as pictures rather than FITS.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_MAX_BAND_RATIO = 1.3

#: Default sampler of `transfer`: stochastic, as the paper's ancestral reverse process.
DEFAULT_TRANSFER_SAMPLER = "dpmpp-2m-sde"


def _is_picture(image):
    if isinstance(image, (str, Path)) or hasattr(image, "__fspath__"):
        return str(image).lower().endswith(PICTURE_SUFFIXES)
    return type(image).__module__.startswith("PIL.")


def read_picture(picture):
    """Read a PNG/JPEG/TIFF picture as RGB intensities in [0, 1].

    Parameters
    ----------
    picture : str, path or `PIL.Image.Image`
        The picture.  Grey-scale pictures give three equal channels; 16-bit
        pictures are divided by 65535; an alpha channel multiplies the
        colours (transparent = black).

    Returns
    -------
    `numpy.ndarray`
        ``(y, x, 3)`` float32, flipped so that row 0 is the bottom of the
        picture (the FITS convention).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    OSError
        If Pillow cannot read it.
    """
    from PIL import Image

    if isinstance(picture, (str, Path)) or hasattr(picture, "__fspath__"):
        if not Path(picture).exists():
            raise FileNotFoundError(f"no such picture: {str(picture)!r}")
        try:
            with Image.open(picture) as img:
                img.load()
                return read_picture(img)
        except OSError as err:
            raise OSError(f"cannot read {str(picture)!r} as a picture ({err})") from None
    img = picture
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, np.float64) / 65535.0
        rgb = np.repeat(arr[..., None], 3, axis=-1)
    elif img.mode == "F":
        arr = np.asarray(img, np.float64)
        rgb = np.repeat(arr[..., None], 3, axis=-1)
    else:
        rgba = np.asarray(img.convert("RGBA"), np.float64) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:4]
    return np.clip(rgb[::-1], 0.0, 1.0).astype(np.float32)


def _interp_weights(pos_out, pos_in):
    """Weights (n_out, n_in) of linear interpolation in ``pos``, clamped at the ends."""
    pos_in = np.asarray(pos_in, float)
    order = np.argsort(pos_in)
    q = pos_in[order]
    w = np.zeros((len(pos_out), len(pos_in)))
    for i, p in enumerate(np.asarray(pos_out, float)):
        if p <= q[0]:
            w[i, order[0]] = 1.0
        elif p >= q[-1]:
            w[i, order[-1]] = 1.0
        else:
            k = int(np.searchsorted(q, p, side="right")) - 1
            f = (p - q[k]) / (q[k + 1] - q[k])
            w[i, order[k]] = 1.0 - f
            w[i, order[k + 1]] += f
    return w


def rgb_to_bands(rgb, bands, mapping="display"):
    """Map RGB intensities onto photometric bands.

    Parameters
    ----------
    rgb : array-like
        ``(y, x, 3)`` intensities, channels in R, G, B order.
    bands : str or sequence of str
        The bands wanted (e.g. a model's ``"grz"``).
    mapping : {"display", "wavelength"}
        See the module docstring.

    Returns
    -------
    `numpy.ndarray`
        ``(band, y, x)`` float32 intensities.

    Raises
    ------
    ValueError
        For an unknown mapping or an array that is not ``(y, x, 3)``.
    """
    rgb = np.asarray(rgb, np.float64)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (y, x, 3), got {rgb.shape}")
    names = parse_bands(bands)
    lam = np.array([BAND_WAVELENGTHS[b].to_value(u.nm) for b in names])
    if mapping == "display":
        rank = np.argsort(np.argsort(lam))
        pos = rank / (len(names) - 1) if len(names) > 1 else np.full(1, 0.5)
        w = _interp_weights(pos, [1.0, 0.5, 0.0])            # R, G, B
    elif mapping == "wavelength":
        chans = [RGB_WAVELENGTHS[c].to_value(u.nm) for c in "RGB"]
        w = _interp_weights(np.log(lam), np.log(chans))
    else:
        raise ValueError(f"mapping must be 'display' or 'wavelength', got {mapping!r}")
    return np.einsum("bc,yxc->byx", w, rgb).astype(np.float32)


def band_weights(from_bands, to_bands):
    """Weights that map images in ``from_bands`` onto ``to_bands`` by wavelength.

    Each target band is a linear interpolation in ``log(wavelength)``
    between the two source bands that bracket it, or the nearest source band
    outside their range; a band present in both maps onto itself.

    Parameters
    ----------
    from_bands, to_bands : str or sequence of str
        Source and target bands.

    Returns
    -------
    `numpy.ndarray`
        ``(len(to_bands), len(from_bands))``: ``target = weights @ source``.

    Raises
    ------
    ValueError
        If every target band is further than a factor 1.3 in wavelength
        from every source band (no overlap: e.g. WISE W1, W2 onto grz).
    """
    src, dst = parse_bands(from_bands), parse_bands(to_bands)
    ls = np.log([BAND_WAVELENGTHS[b].to_value(u.nm) for b in src])
    ld = np.log([BAND_WAVELENGTHS[b].to_value(u.nm) for b in dst])
    near = [b for b, lam in zip(dst, ld) if np.min(np.abs(ls - lam)) <= np.log(_MAX_BAND_RATIO)]
    if not near:
        raise ValueError(f"the image's bands {list(src)} do not overlap the model's bands "
                         f"{list(dst)}: every band of the model lies more than a factor "
                         f"{_MAX_BAND_RATIO} in wavelength from every band of the image; "
                         "give an image in (or near) the model's bands")
    return _interp_weights(ld, ls)


def _resize(planes, size):
    """Centre-crop to a square and resample (band, y, x) planes to size x size."""
    from PIL import Image

    ny, nx = planes.shape[-2:]
    side = min(ny, nx)
    y0, x0 = (ny - side) // 2, (nx - side) // 2
    planes = planes[:, y0:y0 + side, x0:x0 + side]
    if side == size:
        return planes.astype(np.float32)
    resample = Image.Resampling.BOX if side > size else Image.Resampling.BICUBIC
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(p, np.float32)).resize(
        (size, size), resample=resample)) for p in planes]
    return np.stack(out).astype(np.float32)


def _prepare(model, image, bands, unit, hdu, mapping, flux_range):
    """(scaled (band, S, S) in [-1, 1], WCS, description of the source)."""
    size = int(model.image_size)
    scale = float(model.pixel_scale) * u.arcsec
    scaler = model.scaler_
    if _is_picture(image):
        rgb = read_picture(image)
        inten = _resize(rgb_to_bands(rgb, model.bands_, mapping), size)
        if flux_range is None:
            scaled = 2.0 * np.clip(inten, 0.0, 1.0) - 1.0
        else:
            lo, hi = (float(v) for v in flux_range)
            if not hi > lo:
                raise ValueError(f"flux_range must be (low, high) nanomaggies with low < high, "
                                 f"got {flux_range!r}")
            scaled = scaler.transform(lo + inten * (hi - lo))
        src = Path(image).name if isinstance(image, (str, Path)) else "picture"
        wcs = make_tan_wcs((size, size), scale, 0.0, 0.0)
        return scaled.astype(np.float32), wcs, f"{src} ({mapping} RGB mapping)"

    if flux_range is not None:
        raise ValueError("flux_range applies to pictures only; a FITS or astropy image is "
                         "used in its own calibrated units")
    ccd = read_image(image, bands=bands, unit=unit, hdu=hdu)
    have = parse_bands(ccd.meta["BANDS"])
    w = band_weights(have, model.bands_)
    if not all(b in have for b in model.bands_):
        desc = "; ".join(f"{t} <- " + " + ".join(f"{c:.2f} {s}" for c, s in zip(row, have) if c)
                         for t, row in zip(model.bands_, w))
        warnings.warn(f"the image has bands {list(have)}, the model {list(model.bands_)}: "
                      f"bands mapped by wavelength ({desc})", AstroSBGMInputWarning)
    data = np.einsum("tb,byx->tyx", w, np.asarray(ccd.data, np.float64)).astype(np.float32)
    mask = None
    if ccd.mask is not None:
        mask = np.einsum("tb,byx->tyx", (w > 0).astype(float), ccd.mask.astype(float)) > 0
    mapped = CCDData(data, unit=u.nanomaggy, wcs=ccd.wcs, mask=mask, meta=ccd.meta.copy())
    mapped.meta["BANDS"] = ",".join(model.bands_)
    grid = to_model_grid(mapped, size, scale)
    flux = np.asarray(grid.data, np.float32)
    wcs = grid.wcs if grid.wcs is not None else make_tan_wcs((size, size), scale, 0.0, 0.0)
    return scaler.transform(flux), wcs, "image"


def _sdedit_times(model, strength, rule, steps=None, grid=None):
    """The timesteps of an SDEdit run at ``strength`` (see `transfer`)."""
    T = model.schedule_.T
    t_start = min(round(strength * T, 6), T - 1.0)
    if steps is None and rule.name == "ddpm":
        return np.arange(math.floor(t_start), -1, -1, dtype=np.float64)
    steps = 20 if steps is None else int(steps)
    kind = grid or ("uniform" if rule.name == "ddpm" else "karras")
    return make_grid(model.schedule_, steps, kind, t_start=t_start)


def _sdedit(model, den, x0, times, rule, generators, progress=False):
    """Noise a batch ``x0`` (n, band, y, x) in [-1, 1] to ``times[0]`` and reverse it.

    One generator per image (noise of image ``i`` independent of the batch).  Returns
    the clean batch (numpy float32, [-1, 1]) and the network evaluations per image.
    """
    a, s = (float(v) for v in model.schedule_.alpha_sigma(torch.tensor(float(times[0]))))
    x0_t = torch.from_numpy(np.ascontiguousarray(x0, dtype=np.float32)).to(model.device_)
    x = a * x0_t + s * randn_like(x0_t, generators)
    out, nfe = reverse_process(den, x, times, rule, generator=generators, progress=progress)
    return out.float().cpu().numpy(), nfe


def transfer(model, image, strength=0.6, n_draws=1, sampler=DEFAULT_TRANSFER_SAMPLER,
             steps=None, grid=None, seed=None, weights="ema", batch_size=16, bands=None,
             unit=None, hdu=None, mapping="display", flux_range=None, reference=None,
             n_neighbours=3, progress=False, return_draws=False, **options):
    """Make an image look like the survey the model was trained on (SDEdit).

    Parameters
    ----------
    model : `~astro_sbgm.GalaxyDiffusion`
        A fitted (or loaded) model.
    image : object
        Anything `astro_sbgm.io.read_image` accepts, or a picture (PNG,
        JPEG, TIFF path or `PIL.Image.Image`); see the module docstring for
        band mapping, intensity scaling and regridding.  The input (and a
        file on disk) is never modified.
    strength : float
        In (0, 1]: the input is noised to ``t = strength * T`` (at most
        ``T - 1``).  0.6 is the paper's ``T = 600`` of 1000.
    n_draws : int
        Independent results; the output holds their mean and, with
        ``n_draws > 1``, their per-pixel standard deviation (``ddof=1``).
        The mean is a summary, not a galaxy (its noise is ``sqrt(n_draws)``
        too low): measure the draws (``return_draws=True``).
    sampler : str
        One of `astro_sbgm.diffusion.SAMPLERS`.  Default ``"dpmpp-2m-sde"``,
        a stochastic 20-step solver of the reverse SDE; ``"ddpm"`` with
        ``steps=None`` is the paper's ancestral sampler (every integer
        timestep; for a model read from the released checkpoints with the
        released code's posterior variance); ``"dpmpp-2m"`` the
        deterministic ODE.
    steps : int, optional
        Grid points; default every integer timestep for ``"ddpm"``, 20
        otherwise.
    grid : {"uniform", "quadratic", "karras"}, optional
        Default uniform for ``"ddpm"``, Karras et al.'s otherwise.
    seed : int, optional
        Draw ``k`` of a seed is the same whatever ``n_draws``; None draws one
        (recorded in the output).
    weights : {"ema", "model"}
        The weight average (default) or the raw weights.
    batch_size : int
        Draws per network call.
    bands, unit, hdu
        For `astro_sbgm.io.read_image` when the input does not record them.
    mapping : {"display", "wavelength"}
        RGB to band mapping of pictures (`rgb_to_bands`).
    flux_range : (float, float), optional
        Put picture intensities 0..1 linearly on this range in nanomaggies
        instead of on the model's range.
    reference : object, optional
        Images (anything `GalaxyDiffusion.prepare` accepts, e.g. the
        training set) in which to look up the result's nearest neighbours
        (the paper's Fig. 7, last column), compared in the network's
        [-1, 1] space with `astro_sbgm.metrics.nearest_neighbours`.
    n_neighbours : int
        Neighbours recorded when ``reference`` is given.
    progress : bool
        Show a progress bar.
    return_draws : bool
        Also return every draw (see Returns).
    **options
        Passed to the sampler (``eta`` for ddim, ``variance`` for ddpm).

    Returns
    -------
    summary : `~astropy.nddata.CCDData`
        ``(band, y, x)`` in the model's bands, nanomaggy, on the model's
        grid with the (reprojected) WCS of the input, or a placeholder WCS
        for pictures: the mean of the draws.  ``uncertainty``: the spread
        of the draws (``ddof=1``; they already carry the survey's noise,
        nothing is added), None for one draw.  ``meta``: ``TRANSFER``
        (``"SDEdit"``), ``STRENGTH``, ``TSTART``, ``SAMPLER``, ``DDPMVAR``
        (ddpm only), ``NSTEPS``, ``NFE``, ``NDRAWS``, ``DRAWMEAN`` (True
        when the data are a mean of several draws), ``SEED``, ``WEIGHTS``,
        ``SOURCE`` and, with ``reference``, ``NNIDX1``, ``NNDIST1``, ...
        (index into ``reference`` and RMS distance in [-1, 1] units, nearest
        first, for the mean).  With one draw this is that draw.
    draws : list of `~astropy.nddata.CCDData`
        Only with ``return_draws=True``, then the return value is
        ``(summary, draws)``: the ``n_draws`` results, laid out like
        ``summary`` with ``meta['DRAWIDX']`` (0-based; draw ``k`` of a seed
        is the same whatever ``n_draws``), ``meta['DRAWMEAN'] = False`` and
        no uncertainty.  Measure these.

    Raises
    ------
    NotFittedError
        If the model was never fitted or loaded.
    ValueError
        For ``strength`` outside (0, 1], an image whose bands do not overlap
        the model's, a bad ``n_draws``, sampler, grid or ``flux_range``;
        plus everything `astro_sbgm.io.read_image` raises.
    """
    model._check_fitted()
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"strength must be a number in (0, 1], got {strength!r}") from None
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must lie in (0, 1] (the fraction of the diffusion the "
                         f"input is noised to; the paper used 0.6), got {strength}")
    n_draws = check_positive_int("n_draws", n_draws)
    batch_size = check_positive_int("batch_size", batch_size)
    options = {**released_sampler_options(model, sampler), **options}
    rule = get_sampler(sampler, **options)
    times = _sdedit_times(model, strength, rule, steps, grid)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])

    x0, wcs, source = _prepare(model, image, bands, unit, hdu, mapping, flux_range)
    den = model._denoiser(weights)
    outs, nfe = [], 0
    for lo in range(0, n_draws, batch_size):
        m = min(batch_size, n_draws - lo)
        out, nfe = _sdedit(model, den, np.repeat(x0[None], m, axis=0), times, rule,
                           _sample_generators(seed, lo, m), progress)
        outs.append(out)
    flux = model.scaler_.inverse_transform(np.concatenate(outs)).astype(np.float64)
    mean = flux.mean(axis=0).astype(np.float32)
    unc = None
    if n_draws > 1:
        unc = StdDevUncertainty(flux.std(axis=0, ddof=1).astype(np.float32))

    result = CCDData(mean, unit=u.nanomaggy, wcs=wcs, uncertainty=unc, meta=fits.Header())
    meta = result.meta
    meta["BANDS"] = ",".join(model.bands_)
    for i, b in enumerate(model.bands_):
        meta[f"BAND{i}"] = b
    meta["BUNIT"] = "nanomaggy"
    meta["ORIGIN"] = f"astro_sbgm {__version__}"
    meta["SIMULATD"] = (True, "generated by a diffusion model")
    meta["TRANSFER"] = ("SDEdit", "domain transfer method")
    meta["STRENGTH"] = (strength, "input noised to t = STRENGTH * T")
    meta["TSTART"] = (float(times[0]), "first timestep of the reverse process")
    meta["SAMPLER"] = rule.name
    if getattr(rule, "variance", None) is not None:
        meta["DDPMVAR"] = (rule.variance, "ddpm step variance: beta or posterior")
    meta["NSTEPS"] = (len(times), "grid points")
    meta["NFE"] = (int(nfe), "network evaluations per draw")
    meta["NDRAWS"] = (n_draws, "draws; the data hold their mean")
    meta["DRAWMEAN"] = (n_draws > 1, "data: mean of NDRAWS draws, not a galaxy")
    meta["SEED"] = int(seed)
    meta["WEIGHTS"] = (weights, "ema = weight average, model = raw")
    meta["SOURCE"] = source[:68]
    meta["TRSTEPS"] = (int(getattr(model, "n_steps_", 0)), "training steps of the model")
    if reference is not None:
        from .metrics.neighbours import nearest_neighbours

        ref = model.prepare(reference)
        k = min(int(n_neighbours), len(ref))
        idx, dist = nearest_neighbours(model.scaler_.transform(mean)[None],
                                       model.scaler_.transform(ref), k=k)
        for j in range(k):
            meta[f"NNIDX{j + 1}"] = (int(idx[0, j]), "index of a nearest reference image")
            meta[f"NNDIST{j + 1}"] = (float(dist[0, j]), "RMS distance in [-1, 1] units")
    if not return_draws:
        return result
    draws = []
    for k, f in enumerate(flux):
        draw = CCDData(f.astype(np.float32), unit=u.nanomaggy, wcs=wcs, meta=meta.copy())
        for key in [key for key in draw.meta if key.startswith(("NNIDX", "NNDIST"))]:
            del draw.meta[key]
        draw.meta["DRAWMEAN"] = (False, "one draw: a sample")
        draw.meta["DRAWIDX"] = (k, "index of this draw (0-based)")
        draws.append(draw)
    return result, draws
