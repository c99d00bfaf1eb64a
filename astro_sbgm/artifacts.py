"""Simulated image artefacts: satellite trails, bright-star masks, bad columns.

`add_satellite_trails` defaces an image with one or more bright linear
strips (random direction, brightness, width and, for some, a dashed pattern
as left by a tumbling satellite or a blinking aircraft) and returns the exact
mask of the pixels it changed, so that inpainting can be scored against the
untouched image (`astro_sbgm.metrics.inpainting_accuracy`).  `star_mask` and
`bad_column_mask` build the two other common masks: a disc around a bright
star and a (partial) detector column.

Trail model
-----------
A trail is a straight line through a random point of the image at a random
angle.  Across the line its profile is a Gaussian of full width at half
maximum ``width`` pixels, truncated at ``|d| <= width`` (where it has fallen
to 6% of its peak), so the mask (``|d| <= width``, measured from pixel
centres) is exactly the set of pixels that receive flux.  A dashed trail is
switched on for a fraction ``duty_cycle`` of every ``period`` pixels along
the line.  The peak brightness is drawn log-uniformly in ``brightness`` (in
the image's units, nanomaggy for Legacy Survey cutouts) and multiplied in
every band by ``exp(N(0, color_scatter))``.
"""

import numpy as np
import astropy.units as u
from astropy.nddata import CCDData, NDData
from astropy.table import QTable
from astropy.utils.decorators import deprecated_renamed_argument

from .exceptions import AstroSBGMDeprecationWarning
from .io import as_batch, read_image

__all__ = ["add_satellite_trails", "star_mask", "bad_column_mask"]

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _range(value, name, positive=True):
    """A (low, high) pair from a number or a pair; checks order and sign."""
    lo, hi = (value, value) if np.isscalar(value) else tuple(value)
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ValueError(f"{name} must be a number or a (low, high) pair with low <= high, "
                         f"got {value!r}")
    if positive and not lo > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return lo, hi


def _as_planes(image):
    """(array (band, y, x) float64 copy, how to rebuild the output)."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim not in (2, 3):
            raise ValueError(f"an image array must be 2-D (y, x) or 3-D (band, y, x), got "
                             f"shape {arr.shape}")
        return as_batch(arr, name="image")[0][0], ("array", arr.ndim, arr.dtype)
    if isinstance(image, NDData) and not isinstance(image, CCDData):
        image = CCDData(image.data, unit=image.unit or u.nanomaggy, wcs=image.wcs,
                        mask=image.mask, meta=image.meta,
                        uncertainty=image.uncertainty)
    if not isinstance(image, CCDData):
        image = read_image(image)
    return as_batch([np.asarray(image.data)], name="image")[0][0], ("ccd", image)


@deprecated_renamed_argument("colour_scatter", "color_scatter", "0.1",
                             warning_type=AstroSBGMDeprecationWarning)
def add_satellite_trails(image, n_trails=1, brightness=(1.0, 30.0), width=(1.0, 4.0),
                         dashed=0.3, period=(6.0, 20.0), duty_cycle=(0.3, 0.7),
                         color_scatter=0.2, all_bands=True, seed=None, return_params=False):
    """Add bright satellite trails to an image and return the exact mask.

    Parameters
    ----------
    image : `numpy.ndarray`, `~astropy.nddata.CCDData` or any `astro_sbgm.io.read_image` form
        ``(y, x)`` or ``(band, y, x)``.  Arrays come back as arrays, every
        other form as a `CCDData` (a copy; the input is never modified).
    n_trails : int
        Number of trails.
    brightness : float or (float, float)
        Peak brightness per pixel, in the image's units, drawn log-uniformly
        in this range (one value: fixed).
    width : float or (float, float)
        Full width at half maximum across the trail, pixels (uniform draw).
    dashed : float
        Probability that a trail is dashed.
    period : float or (float, float)
        Dash period along the trail, pixels (uniform draw).
    duty_cycle : float or (float, float)
        Fraction of each period that is lit (uniform draw, in (0, 1]).
    color_scatter : float
        Standard deviation of the natural log of the per-band brightness factor.
        (The old spelling ``colour_scatter=`` works until the next release,
        with an `~astro_sbgm.exceptions.AstroSBGMDeprecationWarning`.)
    all_bands : bool
        Put each trail in every band (a trail in a coadd of all bands), or in
        one random band only (a trail in one exposure).
    seed : int or `numpy.random.Generator`, optional
        Same seed, same trails.
    return_params : bool
        Also return a `~astropy.table.QTable` with one row per trail.

    Returns
    -------
    defaced : `numpy.ndarray` or `~astropy.nddata.CCDData`
        The image with the trails added (float64 for arrays; a CCDData keeps
        its unit, WCS and meta).
    mask : `numpy.ndarray` of bool
        Same shape as the data, True where a trail added flux.
    params : `~astropy.table.QTable`
        Only with ``return_params``: ``x``, ``y`` (a point on the trail,
        pixels), ``angle`` (deg, counter-clockwise from +x), ``width``
        (FWHM, pix), ``peak`` (per band), ``dashed``, ``period`` (pix),
        ``duty_cycle``, ``bands``.

    Raises
    ------
    ValueError
        For ``n_trails < 1`` or a bad range.
    """
    n_trails = int(n_trails)
    if n_trails < 1:
        raise ValueError(f"n_trails must be >= 1, got {n_trails}")
    b_lo, b_hi = _range(brightness, "brightness")
    w_lo, w_hi = _range(width, "width")
    p_lo, p_hi = _range(period, "period")
    d_lo, d_hi = _range(duty_cycle, "duty_cycle")
    if d_hi > 1.0:
        raise ValueError(f"duty_cycle must lie in (0, 1], got {duty_cycle!r}")
    if not 0.0 <= float(dashed) <= 1.0:
        raise ValueError(f"dashed is a probability in [0, 1], got {dashed!r}")
    if not float(color_scatter) >= 0:
        raise ValueError(f"color_scatter must be >= 0, got {color_scatter!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    data, how = _as_planes(image)
    nb, ny, nx = data.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    added = np.zeros_like(data)
    mask = np.zeros(data.shape, bool)
    rows = []
    for _ in range(n_trails):
        px, py = rng.uniform(-0.5, nx - 0.5), rng.uniform(-0.5, ny - 0.5)
        theta = rng.uniform(0.0, np.pi)
        fwhm = rng.uniform(w_lo, w_hi)
        peak = np.exp(rng.uniform(np.log(b_lo), np.log(b_hi)))
        colours = np.exp(rng.normal(0.0, float(color_scatter), nb))
        is_dashed = bool(rng.uniform() < float(dashed))
        per = rng.uniform(p_lo, p_hi)
        duty = rng.uniform(d_lo, d_hi)
        phase = rng.uniform(0.0, per)
        in_bands = np.ones(nb, bool) if all_bands else np.eye(nb, dtype=bool)[rng.integers(nb)]
        dist = -(xx - px) * np.sin(theta) + (yy - py) * np.cos(theta)
        along = (xx - px) * np.cos(theta) + (yy - py) * np.sin(theta)
        on = np.abs(dist) <= fwhm
        if is_dashed:
            on &= np.mod(along + phase, per) < duty * per
        profile = np.where(on, np.exp(-0.5 * (dist / (fwhm * _FWHM_TO_SIGMA)) ** 2), 0.0)
        for b in np.flatnonzero(in_bands):
            added[b] += peak * colours[b] * profile
            mask[b] |= on
        rows.append((px, py, np.degrees(theta), fwhm, peak * colours * in_bands, is_dashed,
                     per if is_dashed else np.nan, duty if is_dashed else np.nan,
                     int(in_bands.sum())))

    if how[0] == "array":
        out = data + added
        out = out[0] if how[1] == 2 else out
        mask_out = mask[0] if how[1] == 2 else mask
    else:
        ccd = how[1]
        arr = np.asarray(ccd.data)
        dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64
        new = (arr.reshape(data.shape) + added).astype(dtype).reshape(arr.shape)
        out = CCDData(new, unit=ccd.unit, wcs=ccd.wcs, meta=ccd.meta.copy(),
                      mask=None if ccd.mask is None else np.array(ccd.mask),
                      uncertainty=None if ccd.uncertainty is None else ccd.uncertainty)
        out.meta["NTRAILS"] = n_trails
        mask_out = mask.reshape(arr.shape)
    if not return_params:
        return out, mask_out
    params = QTable(rows=rows, names=("x", "y", "angle", "width", "peak", "dashed", "period",
                                      "duty_cycle", "n_bands"))
    params["x"].unit = params["y"].unit = u.pix
    params["width"].unit = params["period"].unit = u.pix
    params["angle"].unit = u.deg
    return out, mask_out, params


def _plane_shape(shape):
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be (y, x) or (band, y, x) with positive sizes, got "
                         f"{shape}")
    return shape


def star_mask(shape, center, radius):
    """A circular mask around a bright star.

    Parameters
    ----------
    shape : tuple of int
        ``(y, x)`` or ``(band, y, x)``; a 3-D shape gives the same disc in
        every band.
    center : (float, float)
        ``(x, y)`` of the star in pixels (0-based, pixel centres at integers).
    radius : float
        Radius in pixels; a pixel is masked when its centre lies within it.

    Returns
    -------
    `numpy.ndarray` of bool
        True inside the disc.

    Raises
    ------
    ValueError
        For a bad shape or a radius <= 0.
    """
    shape = _plane_shape(shape)
    if not float(radius) > 0:
        raise ValueError(f"radius must be > 0 pixels, got {radius!r}")
    cx, cy = (float(c) for c in center)
    yy, xx = np.mgrid[0:shape[-2], 0:shape[-1]]
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= float(radius) ** 2
    return np.broadcast_to(disc, shape).copy()


def bad_column_mask(shape, column, width=1, rows=None):
    """A mask of a bad detector column (or several adjacent ones).

    Parameters
    ----------
    shape : tuple of int
        ``(y, x)`` or ``(band, y, x)``.
    column : int
        First bad column (x index).
    width : int
        Number of adjacent bad columns.
    rows : (int, int), optional
        ``(start, stop)`` rows of a partial column (default: all rows).

    Returns
    -------
    `numpy.ndarray` of bool

    Raises
    ------
    ValueError
        If the column lies outside the image or ``width < 1``.
    """
    shape = _plane_shape(shape)
    column, width = int(column), int(width)
    if width < 1:
        raise ValueError(f"width must be >= 1 column, got {width}")
    if not 0 <= column < shape[-1]:
        raise ValueError(f"column {column} lies outside the image (x in 0..{shape[-1] - 1})")
    plane = np.zeros(shape[-2:], bool)
    start, stop = (0, shape[-2]) if rows is None else (int(rows[0]), int(rows[1]))
    plane[start:stop, column:column + width] = True
    return np.broadcast_to(plane, shape).copy()
