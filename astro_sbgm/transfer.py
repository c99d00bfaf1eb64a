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
  flux-conserving).  Bands are matched by filter name (``FILTERn`` cards;
  letters are the Legacy Survey's filters).  An image in another survey's
  filters (SDSS, HSC, BASS/MzLS, ...) is put into the model's filters with
  the fitted colour terms per pixel (`astro_sbgm.filter_mapping`: colours
  regularised at low S/N, a mapping that would extrapolate refused, the
  mapping recorded in ``FMAP*`` cards).  An image in the Legacy Survey's
  filters that does not hold every band of the model has its bands mapped
  onto the model's by effective wavelength (`band_weights`): each model
  band is interpolated linearly in ``log(wavelength)`` between the two
  input bands that bracket it, or takes the nearest input band outside
  their range (a warning lists the mapping).  At least one model band must
  lie within a factor 1.3 in wavelength of an input band.
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

import warnings
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.nddata import StdDevUncertainty

from .bands import (LEGACY_SURVEY_FILTERS, effective_wavelength, interpolation_weights,
                    parse_bands, parse_filters)
from .filter_mapping import filter_mapping
from .diffusion import ClassifierFreeGuidance, get_sampler
from .diffusion.engine import generate, sampling_times
from .diffusion.noise import PerSampleNoise
from .io import (PICTURE_SUFFIXES, RGB_WAVELENGTHS, AstroSBGMInputWarning, image_filters,
                 make_image, make_tan_wcs, provenance_cards, read_image, read_picture,
                 rgb_to_bands, to_model_grid)
from .io import is_picture as _is_picture
from ._validation import check_positive_int

__all__ = ["transfer", "read_picture", "rgb_to_bands", "band_weights", "RGB_WAVELENGTHS",
           "PICTURE_SUFFIXES", "DEFAULT_TRANSFER_SAMPLER"]

_MAX_BAND_RATIO = 1.3

#: Default sampler of `transfer`: stochastic, as the paper's ancestral reverse process.
DEFAULT_TRANSFER_SAMPLER = "dpmpp-2m-sde"


def _filter_names(bands):
    """(full filter names, wavelength keys): letters stand for the Legacy Survey's filters
    and keep their `BAND_WAVELENGTHS`; other filters their pivot wavelengths."""
    try:
        letters = parse_bands(bands)
    except ValueError:
        names = tuple(f.name for f in parse_filters(bands))
        return names, names
    return tuple(LEGACY_SURVEY_FILTERS[b] for b in letters), letters


def band_weights(from_bands, to_bands):
    """Weights that map images in ``from_bands`` onto ``to_bands`` by wavelength.

    Each target band is a linear interpolation in ``log(wavelength)``
    between the two source bands that bracket it, or the nearest source band
    outside their range; a filter present in both (the same filter name:
    SDSS *g* is not DECam *g*) maps onto itself.  Letters are the Legacy
    Survey's filters at their `~astro_sbgm.bands.BAND_WAVELENGTHS`; other
    filters sit at their pivot wavelengths.  For another survey's images,
    `astro_sbgm.filter_mapping` (colour terms) is what `transfer` uses.

    Parameters
    ----------
    from_bands, to_bands : str or sequence of str
        Source and target bands: letters (``"grz"``) or full filter names
        (``"sdss:g,sdss:r,sdss:z"``).

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
    src, src_keys = _filter_names(from_bands)
    dst, dst_keys = _filter_names(to_bands)
    ls = np.log([effective_wavelength(k).to_value(u.nm) for k in src_keys])
    ld = np.log([effective_wavelength(k).to_value(u.nm) for k in dst_keys])
    near = [b for b, lam in zip(dst, ld) if np.min(np.abs(ls - lam)) <= np.log(_MAX_BAND_RATIO)]
    if not near:
        raise ValueError(f"the image's bands {list(src)} do not overlap the model's bands "
                         f"{list(dst)}: every band of the model lies more than a factor "
                         f"{_MAX_BAND_RATIO} in wavelength from every band of the image; "
                         "give an image in (or near) the model's bands")
    return interpolation_weights(ld, ls)


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
        return scaled.astype(np.float32), wcs, f"{src} ({mapping} RGB mapping)", {}

    if flux_range is not None:
        raise ValueError("flux_range applies to pictures only; a FITS or astropy image is "
                         "used in its own calibrated units")
    ccd = read_image(image, bands=bands, unit=unit, hdu=hdu)
    have = image_filters(ccd)
    want = tuple(LEGACY_SURVEY_FILTERS[b] for b in model.bands_)
    cards = {}
    if not all(f in have for f in want) and not set(have) <= set(LEGACY_SURVEY_FILTERS.values()):
        # another survey's filters: colour terms per pixel (astro_sbgm.filter_mapping)
        fm = filter_mapping(ccd.data, have, want, mask=ccd.mask,
                            uncertainty=None if ccd.uncertainty is None
                            else ccd.uncertainty.array)
        warnings.warn(f"the image's filters {list(have)} are mapped onto the model's "
                      f"{list(want)} with colour terms ({fm.describe()})",
                      AstroSBGMInputWarning)
        data = fm.apply(np.asarray(ccd.data, np.float64)).astype(np.float32)
        mask = None if ccd.mask is None else np.asarray(ccd.mask, bool)[list(fm.plane)]
        cards = fm.cards
    else:
        legacy = set(have) <= set(LEGACY_SURVEY_FILTERS.values())
        w = band_weights(parse_bands(ccd.meta["BANDS"]) if legacy else have,
                         model.bands_ if legacy else want)
        if not all(f in have for f in want):
            desc = "; ".join(
                f"{t} <- " + " + ".join(f"{c:.2f} {s}" for c, s in zip(row, have) if c)
                for t, row in zip(model.bands_, w))
            warnings.warn(f"the image has bands {list(parse_bands(ccd.meta['BANDS']))}, the "
                          f"model {list(model.bands_)}: bands mapped by wavelength ({desc})",
                          AstroSBGMInputWarning)
        data = np.einsum("tb,byx->tyx", w, np.asarray(ccd.data, np.float64)).astype(np.float32)
        mask = None
        if ccd.mask is not None:
            mask = np.einsum("tb,byx->tyx", (w > 0).astype(float), ccd.mask.astype(float)) > 0
    mapped = make_image(data, model.bands_, wcs=ccd.wcs, mask=mask, meta=ccd.meta)
    grid = to_model_grid(mapped, size, scale)
    flux = np.asarray(grid.data, np.float32)
    wcs = grid.wcs if grid.wcs is not None else make_tan_wcs((size, size), scale, 0.0, 0.0)
    return scaler.transform(flux), wcs, "image", cards


def _sdedit_times(model, strength, rule, steps=None, grid=None):
    """The timesteps of an SDEdit run at ``strength`` (see `transfer`): every integer
    timestep for ``ddpm``, else 20 points, from ``strength * T``."""
    T = model.schedule_.T
    t_start = min(round(strength * T, 6), T - 1.0)
    return sampling_times(model.schedule_, rule, steps, grid, t_start=t_start)


def transfer(model, image, strength=0.6, n_draws=1, sampler=DEFAULT_TRANSFER_SAMPLER,
             steps=None, grid=None, seed=None, weights="ema", batch_size=16, bands=None,
             unit=None, hdu=None, mapping="display", flux_range=None, reference=None,
             n_neighbours=3, progress=False, return_draws=False, conditions=None,
             guidance_scale=1.0, **options):
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
    conditions : `~astropy.table.QTable`, `~astropy.table.Table` or dict, optional
        For a conditional model: the catalogue properties the result should
        have (one row or scalars, with units, as
        `~astro_sbgm.GalaxyDiffusion.sample` takes them); the reverse
        process runs with classifier-free guidance.  The cards ``GUIDANCE``
        and ``CONDNj``/``CONDVj``/``CONDUj`` record the request.
    guidance_scale : float
        The guidance scale with ``conditions``.
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
        first, for the mean), and for an input in another survey's filters
        the mapping's ``FMAP``, ``FMAPFROM``, ``FMAPn``, ...
        (`astro_sbgm.filter_mapping.FilterMapping.cards`).  With one draw
        this is that draw.
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
    den = model.denoiser(weights)     # NotFittedError before anything else
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"strength must be a number in (0, 1], got {strength!r}") from None
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must lie in (0, 1] (the fraction of the diffusion the "
                         f"input is noised to; the paper used 0.6), got {strength}")
    n_draws = check_positive_int("n_draws", n_draws)
    batch_size = check_positive_int("batch_size", batch_size)
    options = {**model.sampler_options(sampler), **options}
    rule = get_sampler(sampler, **options)
    times = _sdedit_times(model, strength, rule, steps, grid)
    noise = PerSampleNoise(seed)     # draw k from its own stream, whatever the batching
    seed = noise.seed

    x0, wcs, source, map_cards = _prepare(model, image, bands, unit, hdu, mapping, flux_range)
    # the input noised to times[0] by the forward process, then the reverse process
    requested = cond = None
    if conditions is not None:   # one row of conditions for every draw
        requested, cond = model.read_conditions(conditions, 1)
    elif guidance_scale != 1.0:
        raise ValueError("guidance_scale applies with conditions= (a conditional model)")

    def guided(den, batch):
        rows = np.repeat(cond, len(batch.generators), axis=0)
        return ClassifierFreeGuidance(den, rows, guidance_scale)
    out, nfe = generate(den, np.repeat(x0[None], n_draws, axis=0), times, rule, noise,
                        batch_size, progress=progress, wrap=None if cond is None else guided)
    flux = model.scaler_.inverse_transform(out.numpy()).astype(np.float64)
    mean = flux.mean(axis=0).astype(np.float32)
    unc = None
    if n_draws > 1:
        unc = StdDevUncertainty(flux.std(axis=0, ddof=1).astype(np.float32))

    cards = {"TRANSFER": ("SDEdit", "domain transfer method"),
             "STRENGTH": (strength, "input noised to t = STRENGTH * T"),
             "TSTART": (float(times[0]), "first timestep of the reverse process"),
             "SAMPLER": rule.name}
    if getattr(rule, "variance", None) is not None:
        cards["DDPMVAR"] = (rule.variance, "ddpm step variance: beta or posterior")
    cards.update({"NSTEPS": (len(times), "grid points"),
                  "NFE": (int(nfe), "network evaluations per draw"),
                  "NDRAWS": (n_draws, "draws; the data hold their mean"),
                  "DRAWMEAN": (n_draws > 1, "data: mean of NDRAWS draws, not a galaxy"),
                  "SEED": int(seed),
                  "WEIGHTS": (weights, "ema = weight average, model = raw"),
                  "SOURCE": source[:68]})
    if requested is not None:
        cards.update(model.conditions_.request_cards(requested[0], guidance_scale))
    cards.update(map_cards)
    result = make_image(mean, model.bands_, wcs=wcs, uncertainty=unc,
                        cards=provenance_cards(True, getattr(model, "n_steps_", 0), **cards))
    meta = result.meta
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
        draw = make_image(f.astype(np.float32), model.bands_, wcs=wcs, meta=meta)
        for key in [key for key in draw.meta if key.startswith(("NNIDX", "NNDIST"))]:
            del draw.meta[key]
        draw.meta["DRAWMEAN"] = (False, "one draw: a sample")
        draw.meta["DRAWIDX"] = (k, "index of this draw (0-based)")
        draws.append(draw)
    return result, draws
