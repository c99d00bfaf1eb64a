"""Aperture photometry, colours and half-light radii of galaxy cutouts.

`measure_galaxies` turns a batch of multi-band cutouts into a catalogue (an
astropy `~astropy.table.QTable`, one row per galaxy, units on every column).
It is built for many same-shape cutouts: the exact-overlap aperture weights
(`photutils.aperture.CircularAperture`, ``method="exact"``) and the
curve-of-growth annulus weights are built once per cutout shape and centre and
applied to the whole batch as matrix products, so the numbers equal those of a
per-image `photutils.aperture.aperture_photometry` loop while costing a small
fraction of its time.

How each quantity is measured
-----------------------------
Background
    Per galaxy and band, the sigma-clipped median (`astropy.stats.sigma_clip`,
    3 sigma, 5 iterations, median centre: the numbers of
    `astropy.stats.sigma_clipped_stats`, vectorised over the batch) of the
    *outermost* pixels of the cutout: a frame ``background_width`` pixels wide
    along the four edges.  The source is masked first: frame pixels whose
    3x3 box mean lies more than 3 times its own noise (``sigma / 3``, so one
    pixel sigma) above a first robust estimate (median and MAD-based sigma of
    the frame) are left out, which removes the wings of the galaxy and of
    neighbours that reach the edge.  If fewer than 20 % of the frame pixels
    survive, the unmasked frame is used and the row is flagged
    ``BACKGROUND_FALLBACK``.  On 64x64 cutouts the frame lies 28 px (7.3")
    from the centre; a background taken closer in (an annulus inside the
    galaxy) biases half-light radii low.
Censored sky
    Generated pixels lie inside the scaler's range, so their sky is censored
    at its lower bound (``max(0, sky + noise)``): pixels pile up at the clip,
    and with half of them there the frame's median is the clip and its MAD
    zero (a MAD-based mask would then cover the whole frame).  A frame whose
    lowest 5 % of pixels span less than 4 % of ``q84 - q50`` (Gaussian
    noise spans 1.45 sigma there), or whose MAD is zero, takes its sigma from
    the uncensored side, ``q84 - q50``, which is sigma for Gaussian noise
    censored at or below its median; that sigma sets both the source mask
    and the 3-sigma clip (the pixels' standard deviation, shrunk by the
    censoring, would clip the upper side only and pull the median into the
    pile).  The background stays the clipped median: censoring below the
    median leaves it in place, so it is the sky level under the noise (0 for
    ``max(0, N(0, sigma))``, ``s`` for ``max(0, s + N(0, sigma))`` with
    ``s >= 0``), not the mean pixel value (``sigma / sqrt(2 pi)`` higher at
    ``s = 0``), the same definition as for uncensored images.
Aperture flux
    Exact-overlap sum of the background-subtracted image in a circle of
    ``aperture_diameter`` pixels (12 by default) centred on the measurement
    centre.  The default centre is the geometric centre of the cutout,
    ``((nx - 1) / 2, (ny - 1) / 2)`` in 0-based pixel coordinates.  An
    angular diameter (``3 * u.arcsec``) is turned into pixels with each
    image's pixel scale (its WCS, else ``pixel_scale=``), so images at
    different scales are measured in the same circle on the sky.
Sky position
    For images with a celestial WCS, ``sky_centroid`` (photutils' name) is
    the measurement centre through the image's WCS (`astropy.wcs.WCS.all_pix2world`,
    distortions included), a `~astropy.coordinates.SkyCoord` column in the
    frame of the first image's WCS.
AB magnitude
    ``22.5 - 2.5 log10(flux / nanomaggy)``, masked where the flux is not
    positive or not finite.  Colours are differences of the magnitudes of
    consecutive bands (``g_r``, ``r_z`` for grz).
Half-light radius
    From the curve of growth of the background-subtracted image of one band
    (``hlr_band``, r by default): cumulative exact-overlap flux in circles of
    radius ``growth_step`` pixels apart, out to ``r_max``, the largest circle
    about the centre that fits inside the cutout (32 px for 64x64).  The
    total flux is the flux inside ``r_max``; ``r_half`` is the radius where
    the curve first reaches half of it, linearly interpolated between grid
    radii, converted to arcsec with the pixel scale.
Measurement errors
    When every image carries an uncertainty (``CCDData.uncertainty``, e.g.
    from a Legacy Survey inverse-variance map or an ``UNCERT`` extension),
    ``flux_err_<b>`` is the error of the aperture sum as
    `photutils.aperture.aperture_photometry` computes it with ``error=``:
    ``sqrt(sum_i w_i sigma_i**2)`` over the exact-overlap weights ``w_i`` of
    the aperture.  With ``errors="sky"`` the pixel sigma is the frame's
    clipped standard deviation instead (the quadrature sum of the sky sigma
    over the aperture, ``sigma_sky sqrt(sum_i w_i)``), for images without an
    uncertainty.  The error of the background level itself (the frame
    median, about ``1.25 sigma_sky / sqrt(N_frame)`` per pixel, times the
    aperture area) and the galaxy's own shot noise (absent from the Legacy
    Survey inverse variances) are not included.  ``mag_err_<b>`` is
    ``2.5 / ln(10) flux_err / flux`` and the colour errors
    ``<b1>_<b2>_err`` the quadrature sum of the two magnitude errors (the
    bands' noise taken independent).
"""

import enum
import functools
import warnings

import numpy as np
import astropy.units as u
from astropy.nddata import CCDData
from astropy.stats import sigma_clip
from astropy.table import QTable
from astropy.utils.decorators import deprecated_renamed_argument
from astropy.utils.exceptions import AstropyUserWarning
from astropy.utils.masked import Masked
from photutils.aperture import CircularAperture
from photutils.centroids import centroid_2dg, centroid_com
from photutils.geometry import circular_overlap_grid
from scipy import sparse

from ..bands import LEGACY_SURVEY_PIXEL_SCALE, parse_bands
from ..exceptions import AstroSBGMDeprecationWarning, PhotometryWarning
from ..io import is_canonical, pixel_scale_of, read_images
from . import _morphology

__all__ = ["measure_galaxies", "ab_magnitude", "MeasurementFlag", "PhotometryWarning",
           "ZERO_POINT"]

#: AB zero point of the nanomaggy: ``m = ZERO_POINT - 2.5 log10(f / nanomaggy)``.
ZERO_POINT = 22.5

_MORPHOLOGY = ("concentration", "asymmetry", "gini", "ellipticity")
_MIN_BACKGROUND_FRACTION = 0.2
_MIN_BACKGROUND_PIXELS = 10


class MeasurementFlag(enum.IntFlag):
    """Bits of the ``flags`` column of `measure_galaxies`.

    Test a row with ``catalogue["flags"] & MeasurementFlag.HLR_FAILED``.
    """

    #: The aperture flux is not positive in at least one band: that band's
    #: magnitude and the colours using it are masked.
    NONPOSITIVE_FLUX = 1
    #: The cutout has NaN, infinite or masked pixels somewhere.
    NAN_PIXELS = 2
    #: Bad pixels inside the aperture of at least one band: flux masked.
    NAN_IN_APERTURE = 4
    #: The half-light radius could not be measured (bad pixels inside
    #: ``r_max``, or total flux not positive): ``r_half`` masked.
    HLR_FAILED = 8
    #: Too few frame pixels were left after masking the source: the
    #: background comes from the unmasked frame.
    BACKGROUND_FALLBACK = 16
    #: The centroid failed or moved out of its search box: the geometric
    #: centre was used.
    CENTROID_FAILED = 32


def ab_magnitude(flux):
    """AB magnitude of a flux in nanomaggies, masked where it is not defined.

    Parameters
    ----------
    flux : `~astropy.units.Quantity` or array-like
        Flux; a bare number is taken to be in nanomaggies.

    Returns
    -------
    `~astropy.utils.masked.Masked` `~astropy.units.Quantity`
        ``22.5 - 2.5 log10(flux / nanomaggy)`` in ``u.mag``, masked (NaN
        underneath) where the flux is not positive or not finite.

    Raises
    ------
    astropy.units.UnitConversionError
        If ``flux`` has a unit that is not convertible to nanomaggy.
    """
    if isinstance(flux, Masked):
        bad = np.asarray(flux.mask)
        flux = flux.unmasked
    else:
        bad = False
    value = u.Quantity(flux, u.nanomaggy).to_value(u.nanomaggy)
    value = np.asarray(value, dtype=float)
    good = np.isfinite(value) & (value > 0) & ~np.asarray(bad, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(good, ZERO_POINT - 2.5 * np.log10(np.where(good, value, 1.0)), np.nan)
    return Masked(mag * u.mag, mask=~good)


# --------------------------------------------------------------------------- geometry
class _Geometry:
    """Weights for one cutout shape and one measurement centre (built once)."""

    def __init__(self, shape, cx, cy, aperture_radius, growth_step, dense=False):
        ny, nx = shape
        self.shape = shape
        self.cx, self.cy = float(cx), float(cy)
        self.r_max = min(cx + 0.5, cy + 0.5, nx - 0.5 - cx, ny - 0.5 - cy)
        if self.r_max <= 0:
            raise ValueError(f"the centre ({cx}, {cy}) lies outside the {nx}x{ny} cutout")
        if aperture_radius > self.r_max + 1e-9:
            raise ValueError(
                f"an aperture of diameter {2 * aperture_radius:g} px centred on "
                f"({cx:g}, {cy:g}) does not fit in the {nx}x{ny} cutout (largest "
                f"diameter {2 * self.r_max:g} px); give a smaller aperture_diameter")
        self.aperture = CircularAperture((cx, cy), r=aperture_radius).to_mask(
            method="exact").to_image(shape)
        self.aperture_support = self.aperture > 0
        nstep = max(int(np.ceil(self.r_max / growth_step - 1e-9)), 1)
        self.radii = self.r_max * np.arange(1, nstep + 1) / nstep
        # photutils' exact circle-pixel overlap, evaluated on the whole grid
        extent = (-cx - 0.5, nx - cx - 0.5, -cy - 0.5, ny - cy - 0.5)
        circles = np.stack([circular_overlap_grid(*extent, nx, ny, float(r), 1, 1).ravel()
                            for r in self.radii])
        # shared geometries keep sparse annuli (cheap to apply to big batches);
        # a per-galaxy one keeps the dense circles (cheap to build, used once)
        self.circles = circles if dense else None
        self.annuli = None if dense else sparse.csr_matrix(np.diff(circles, axis=0,
                                                                   prepend=0.0))
        self.growth_support = circles[-1] > 0
        yy, xx = np.mgrid[0:ny, 0:nx]
        self.distance = np.hypot(xx - cx, yy - cy)

    def cumulative(self, flat):
        """Enclosed sums (n, K) of ``flat`` (n, npix) inside every grid circle."""
        if self.circles is not None:
            return (self.circles @ flat.T).T
        return np.cumsum((self.annuli @ flat.T).T, axis=1)


@functools.lru_cache(maxsize=8)
def _cached_geometry(shape, cx, cy, aperture_radius, growth_step):
    return _Geometry(shape, cx, cy, aperture_radius, growth_step)


def _geometry(shape, cx, cy, aperture_radius, growth_step, cache=True):
    if cache:
        return _cached_geometry(tuple(shape), float(cx), float(cy), float(aperture_radius),
                                float(growth_step))
    return _Geometry(tuple(shape), cx, cy, aperture_radius, growth_step, dense=True)


@functools.lru_cache(maxsize=8)
def _frame(shape, width):
    """Flat indices of the outer frame and of its 3x3 boxes in an integral image."""
    ny, nx = shape
    if not 1 <= width < min(ny, nx) / 2:
        raise ValueError(f"background_width must be between 1 and {min(ny, nx) / 2:g} px "
                         f"for a {nx}x{ny} cutout, got {width}")
    yy, xx = np.mgrid[0:ny, 0:nx]
    edge = np.minimum(np.minimum(yy, ny - 1 - yy), np.minimum(xx, nx - 1 - xx))
    index = np.flatnonzero(edge.ravel() < width)
    y, x = yy.ravel()[index], xx.ravel()[index]
    y0, y1 = np.maximum(y - 1, 0), np.minimum(y + 2, ny)
    x0, x1 = np.maximum(x - 1, 0), np.minimum(x + 2, nx)
    w = nx + 1  # integral image is (ny + 1, nx + 1)
    corners = (y1 * w + x1, y0 * w + x1, y1 * w + x0, y0 * w + x0)
    return index, corners


# --------------------------------------------------------------------------- background
def _clipped_median_std(values):
    """Sigma-clipped median and standard deviation over the last axis, NaN ignored.

    The same numbers as ``astropy.stats.sigma_clipped_stats(values, sigma=3,
    maxiters=5, axis=-1)[1:]`` (median centre, ``std`` with ``ddof=0``): the
    clipping is astropy's `~astropy.stats.sigma_clip`, the final median and
    standard deviation are taken here with vectorised reductions.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        clipped = sigma_clip(values, sigma=3.0, maxiters=5, axis=-1, masked=False,
                             cenfunc="median", stdfunc="std")
        std = np.nanstd(clipped, axis=-1)
    return _nanmedian_last(clipped), std


def _nanmedian_last(a):
    """Median over the last axis ignoring NaN (NaN for all-NaN rows), vectorised."""
    if np.isfinite(a).all():
        return np.median(a, axis=-1)
    ordered = np.sort(a, axis=-1)  # NaN sort last
    count = np.isfinite(a).sum(axis=-1)
    lo = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(ordered, np.maximum(count // 2, 0)[..., None], -1)[..., 0]
    return np.where(count > 0, 0.5 * (lo + hi), np.nan)


def _nanquantile_last(a, q):
    """Quantiles ``q`` (sequence) over the last axis ignoring NaN, vectorised.

    Linear interpolation between order statistics (numpy's default method);
    NaN for all-NaN rows.  Returns an array of shape ``(len(q),) + a.shape[:-1]``.
    """
    ordered = np.sort(a, axis=-1)  # NaN sort last
    count = np.isfinite(a).sum(axis=-1)
    last = np.maximum(count - 1, 0)
    out = []
    for level in q:
        pos = level * last
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, last)
        frac = pos - lo
        v_lo = np.take_along_axis(ordered, lo[..., None], -1)[..., 0]
        v_hi = np.take_along_axis(ordered, hi[..., None], -1)[..., 0]
        out.append(np.where(count > 0, v_lo + frac * (v_hi - v_lo), np.nan))
    return np.stack(out)


#: Gaussian quantile at +1 sigma.
_Q84 = 0.8413447460685429
#: A frame whose lowest 5 % of pixels span less than this fraction of
#: ``q84 - q50`` is censored (Gaussian noise: about 1.45).
_CENSORED_SPAN = 0.04


def _frame_noise(values, median):
    """Robust pixel noise of frame pixels (..., npix), censored skies included.

    The MAD-based sigma ``1.4826 MAD`` of an uncensored frame.  A sky
    censored at a clip (generated pixels lie inside the scaler's range:
    ``max(0, sky + noise)``) piles pixels up at the clip: with half of them
    there the median is the clip and the MAD is zero, and with fewer the MAD
    still underestimates sigma.  A frame is taken as censored when its
    lowest 5 % of pixels span less than 4 % of ``q84 - q50`` (Gaussian noise
    spans 1.45 sigma there, a censored sky nothing or the faint wing of a
    galaxy under the clip), or when its MAD is zero; its noise then comes
    from the uncensored side, ``q84 - q50``, which is sigma for Gaussian
    noise censored at or below its median.
    """
    mad = 1.4826 * _nanmedian_last(np.abs(values - median[..., None]))
    q0, q05, q50, q84 = _nanquantile_last(values, (0.0, 0.05, 0.5, _Q84))
    upper = q84 - q50
    censored = (q05 - q0 < _CENSORED_SPAN * upper) | (mad == 0)
    return np.where(censored, upper, mad), censored


def _censored_clipped_median_std(values, noise):
    """Median and std over the last axis after clipping at ``3 noise`` about the median.

    The clip of `_clipped_median_std` for censored frames: astropy's
    `~astropy.stats.sigma_clip` measures the spread with the standard
    deviation of the pixels, which censoring shrinks, so it clips the
    uncensored (upper) side only, and ever deeper, pulling the median down
    into the pile at the clip (by 0.12 sigma for a sky 0.2 sigma above it).
    Here the bound is ``median +- 3 noise`` with ``noise`` the uncensored
    sigma of `_frame_noise` (5 iterations at most, NaN ignored).
    """
    values = np.array(values, dtype=float)
    bound = 3.0 * np.asarray(noise)[..., None]
    for _ in range(5):
        median = _nanmedian_last(values)
        with np.errstate(invalid="ignore"):
            out = np.abs(values - median[..., None]) > bound
        if not out.any():
            break
        values[out] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(values, axis=-1)
    return _nanmedian_last(values), std


def _frame_background(x, width):
    """Sigma-clipped median and std of the outer frame, source masked.

    ``x`` is (n, band, y, x) float64 with NaN for bad pixels.  Returns
    (median, std, fallback) each of shape (n, band).
    """
    n, nb, ny, nx = x.shape
    index, (a, b, c, d) = _frame((ny, nx), int(width))
    flat = x.reshape(n, nb, ny * nx)
    values = flat[..., index]
    finite = np.isfinite(x)
    med0 = _nanmedian_last(values)
    noise, censored = _frame_noise(values, med0)
    # 3x3 box mean at the frame pixels, from integral images
    integral = np.zeros((n, nb, ny + 1, nx + 1))
    integral[..., 1:, 1:] = np.cumsum(np.cumsum(np.where(finite, x, 0.0), axis=2), axis=3)
    integral = integral.reshape(n, nb, -1)
    box_sum = integral[..., a] - integral[..., b] - integral[..., c] + integral[..., d]
    if finite.all():  # one pixel count per box, shared by all images
        count = np.zeros((ny + 1, nx + 1))
        count[1:, 1:] = np.cumsum(np.cumsum(np.ones((ny, nx)), axis=0), axis=1)
        count = count.ravel()
    else:
        count = np.zeros((n, nb, ny + 1, nx + 1))
        count[..., 1:, 1:] = np.cumsum(np.cumsum(finite, axis=2), axis=3)
        count = count.reshape(n, nb, -1)
    box_count = count[..., a] - count[..., b] - count[..., c] + count[..., d]
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = box_sum / box_count
    source = smooth > (med0 + noise)[..., None]  # 3 sigma of a 3x3 mean = sigma
    masked = np.where(source, np.nan, values)
    left = np.isfinite(masked).sum(axis=-1)
    usable = np.isfinite(values).sum(axis=-1)
    fallback = (left < np.maximum(_MIN_BACKGROUND_PIXELS,
                                  _MIN_BACKGROUND_FRACTION * usable)) & (usable > 0)
    masked = np.where(fallback[..., None], values, masked)
    median, std = _clipped_median_std(masked)
    if censored.any():
        c_median, c_std = _censored_clipped_median_std(masked[censored], noise[censored])
        median[censored] = c_median
        std[censored] = c_std
    none = usable == 0
    median[none] = np.nan
    std[none] = np.nan
    return median, std, fallback


# --------------------------------------------------------------------------- curve of growth
def _radius_at_fraction(cum, radii, fraction):
    """Radius where a curve of growth first reaches ``fraction`` of its last value.

    ``cum`` (n, K) cumulative flux at ``radii`` (K,).  Linear interpolation
    between grid radii (and from (0, 0) below the first).  NaN where the
    total is not positive or not finite.
    """
    total = cum[:, -1]
    ok = np.isfinite(total) & (total > 0)
    target = fraction * np.where(ok, total, 1.0)
    above = cum >= target[:, None]
    k = np.argmax(above, axis=1)
    rows = np.arange(cum.shape[0])
    c_hi = cum[rows, k]
    c_lo = np.where(k > 0, cum[rows, np.maximum(k - 1, 0)], 0.0)
    r_hi = radii[k]
    r_lo = np.where(k > 0, radii[np.maximum(k - 1, 0)], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = r_lo + (target - c_lo) / (c_hi - c_lo) * (r_hi - r_lo)
    return np.where(ok & above.any(axis=1), r, np.nan)


# --------------------------------------------------------------------------- centres
def _centroids(detection, aperture_radius, method):
    """Per-image centroids of background-subtracted images (n, y, x).

    The centroid is searched in a box of the aperture's size about the cutout
    centre; a failed or escaping centroid falls back to the cutout centre.
    """
    n, ny, nx = detection.shape
    cx0, cy0 = (nx - 1) / 2.0, (ny - 1) / 2.0
    half = max(int(np.ceil(aperture_radius)), 2)
    x0, x1 = max(int(np.floor(cx0)) - half + 1, 0), min(int(np.ceil(cx0)) + half, nx)
    y0, y1 = max(int(np.floor(cy0)) - half + 1, 0), min(int(np.ceil(cy0)) + half, ny)
    func = {"com": centroid_com, "2dg": centroid_2dg}[method]
    centres = np.empty((n, 2))
    failed = np.zeros(n, bool)
    for i in range(n):
        box = detection[i, y0:y1, x0:x1]
        bad = ~np.isfinite(box)
        box = np.where(bad, 0.0, box)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if method == "com":
                    xc, yc = func(np.clip(box, 0.0, None), mask=bad)
                else:
                    xc, yc = func(box, mask=bad)
        except (ValueError, RuntimeError):
            xc = yc = np.nan
        xc, yc = xc + x0, yc + y0
        if (not np.isfinite(xc) or not np.isfinite(yc) or not x0 <= xc <= x1 - 1
                or not y0 <= yc <= y1 - 1):
            failed[i] = True
            xc, yc = cx0, cy0
        centres[i] = xc, yc
    return centres, failed


# --------------------------------------------------------------------------- one chunk
def _measure_chunk(x, bands, hlr_index, det_index, centre, aperture_radius, background,
                   background_width, growth_step, morphology, centroid_method,
                   errors=None, var=None):
    """Measure one chunk (n, band, y, x) float64 with NaN for bad pixels.

    ``errors`` is None, ``"uncertainty"`` (``var`` (n, band, y, x) the pixel
    variances) or ``"sky"`` (the frame's clipped standard deviation).
    """
    n, nb, ny, nx = x.shape
    out = {}
    finite = np.isfinite(x)
    flags = np.zeros(n, dtype=np.int64)
    flags[~finite.reshape(n, -1).all(axis=1)] |= MeasurementFlag.NAN_PIXELS

    if isinstance(background, str):
        bkg, bkg_std, fallback = _frame_background(x, background_width)
        flags[fallback.any(axis=1)] |= MeasurementFlag.BACKGROUND_FALLBACK
    else:
        bkg = np.broadcast_to(background, (n, nb)).astype(float)
        bkg_std = np.full((n, nb), np.nan)
        if errors == "sky":
            bkg_std = _frame_background(x, background_width)[1]
    xs = x - bkg[..., None, None]
    out["background"] = bkg

    cx0, cy0 = (nx - 1) / 2.0, (ny - 1) / 2.0
    if isinstance(centre, str) and centre == "centroid":
        centres, failed = _centroids(xs[:, det_index], aperture_radius, centroid_method)
        flags[failed] |= MeasurementFlag.CENTROID_FAILED
    elif isinstance(centre, str):
        centres = np.tile([cx0, cy0], (n, 1))
    else:
        centres = np.asarray(centre, dtype=float)
    out["centre"] = centres

    flux = np.empty((n, nb))
    flux_var = np.full((n, nb), np.nan)
    r_half = np.full(n, np.nan)
    hlr_failed = np.zeros(n, bool)
    morph = {k: np.full(n, np.nan) for k in _MORPHOLOGY}
    unique, inverse = np.unique(centres, axis=0, return_inverse=True)
    inverse = np.ravel(inverse)
    for j, (cx, cy) in enumerate(unique):
        rows = np.flatnonzero(inverse == j)
        geom = _geometry((ny, nx), cx, cy, aperture_radius, growth_step,
                         cache=unique.shape[0] == 1)
        sub = xs[rows]
        good = np.isfinite(sub)
        filled = np.where(good, sub, 0.0)
        # an elementwise product summed per image (not a BLAS product, whose blocking
        # depends on the batch): each galaxy's sum is the same in any chunk
        flux[rows] = (filled * geom.aperture).sum(axis=(2, 3))
        bad_in_ap = np.tensordot(~good, geom.aperture_support, axes=([2, 3], [0, 1])) > 0
        flux[rows] = np.where(bad_in_ap | ~np.isfinite(bkg[rows]), np.nan, flux[rows])
        if errors == "uncertainty":
            # photutils' aperture_sum_err: sqrt(sum(error**2 * weights))
            v = np.where(good, var[rows], 0.0)
            flux_var[rows] = (v * geom.aperture).sum(axis=(2, 3))
        elif errors == "sky":
            flux_var[rows] = bkg_std[rows] ** 2 * geom.aperture.sum()

        hb = filled[:, hlr_index].reshape(rows.size, -1)
        bad_hb = (~good[:, hlr_index].reshape(rows.size, -1) & geom.growth_support).any(axis=1)
        cum = geom.cumulative(hb)
        cum[bad_hb] = np.nan
        rh = _radius_at_fraction(cum, geom.radii, 0.5)
        r_half[rows] = rh
        hlr_failed[rows] = ~np.isfinite(rh)
        if morphology:
            r20 = _radius_at_fraction(cum, geom.radii, 0.2)
            r80 = _radius_at_fraction(cum, geom.radii, 0.8)
            with np.errstate(invalid="ignore", divide="ignore"):
                morph["concentration"][rows] = 5.0 * np.log10(r80 / r20)
            img = np.where(bad_hb[:, None, None], np.nan, sub[:, hlr_index])
            rad2 = np.minimum(2.0 * rh, geom.r_max)
            rad4 = np.minimum(4.0 * rh, geom.r_max)
            morph["asymmetry"][rows] = _morphology.asymmetry(img, geom, rad2,
                                                             bkg_std[rows, hlr_index])
            morph["gini"][rows] = _morphology.gini(img, geom, rad2)
            morph["ellipticity"][rows] = _morphology.ellipticity(img, geom, rad4)
    out["flux"] = flux
    if errors is not None:
        out["flux_var"] = np.where(np.isfinite(flux), flux_var, np.nan)
    out["r_half_pix"] = r_half
    if morphology:
        out.update(morph)

    bad_ap = ~np.isfinite(flux)
    flags[bad_ap.any(axis=1)] |= MeasurementFlag.NAN_IN_APERTURE
    with np.errstate(invalid="ignore"):
        flags[(flux <= 0).any(axis=1)] |= MeasurementFlag.NONPOSITIVE_FLUX
    flags[hlr_failed] |= MeasurementFlag.HLR_FAILED
    out["flags"] = flags
    return out


# --------------------------------------------------------------------------- input
class _Group:
    """Same-shape images: row indices in the catalogue and chunk readers.

    ``read_var`` reads the pixel variances (nanomaggy**2) of a chunk, for
    images that carry an uncertainty.
    """

    def __init__(self, rows, shape, read, read_var=None):
        self.rows = rows
        self.shape = shape
        self.read = read
        self.read_var = read_var


def _celestial_wcs(image):
    """The celestial part of an image's WCS, or None."""
    wcs = getattr(image, "wcs", None)
    if wcs is not None and getattr(wcs, "has_celestial", False):
        return wcs.celestial
    return None


def _pixel_scale_of(image, default):
    wcs = _celestial_wcs(image)
    return default if wcs is None else pixel_scale_of(wcs).to_value(u.arcsec)


def _canonical_list(images, bands):
    """The list itself if it already holds canonical cutouts, else None.

    Canonical: `CCDData` of shape (band, y, x) in nanomaggy with
    ``meta['BANDS']`` (what `astro_sbgm.io.read_images` returns and the
    package's generators make), and bands agreeing with ``bands=``.  Such lists
    skip the (per-image) re-reading of the io layer.
    """
    if isinstance(images, CCDData):
        images = [images]
    if not isinstance(images, (list, tuple)) or not images:
        return None
    wanted = None if bands is None else parse_bands(bands)
    for im in images:
        if not is_canonical(im):
            return None
        if wanted is not None and tuple(str(im.meta["BANDS"]).split(",")) != wanted:
            return None
    return list(images)


def _parse_input(images, bands, pixel_scale, errors="auto"):
    """Return (band names, pixel scales in arcsec, list of _Group, error source, WCSs).

    The error source is None, ``"uncertainty"`` (every image carries one and
    the groups read variances) or ``"sky"``.  The WCSs are the celestial WCS
    of each image (None for an image without one), or None for a bare array.
    """
    default_scale = u.Quantity(LEGACY_SURVEY_PIXEL_SCALE if pixel_scale is None
                               else pixel_scale, u.arcsec).to_value(u.arcsec)
    if not np.isscalar(default_scale) and np.ndim(default_scale) != 0:
        raise ValueError(f"pixel_scale must be one number (arcsec per pixel), got {pixel_scale!r}")
    if default_scale <= 0:
        raise ValueError(f"pixel_scale must be positive, got {pixel_scale!r}")
    if hasattr(images, "detach") and hasattr(images, "cpu"):  # torch tensor
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray) and not isinstance(images, u.Quantity) and (
            images.ndim in (3, 4)):
        if bands is None:
            raise ValueError("a bare array carries no band names: give bands=, e.g. "
                             "bands='grz' for an array of shape (n, 3, y, x)")
        names = parse_bands(bands)
        arr = images[None] if images.ndim == 3 else images
        if arr.shape[1] != len(names):
            raise ValueError(f"the array has {arr.shape[1]} bands (axis 1 of shape "
                             f"{arr.shape}) but bands={names!r} names {len(names)}")
        if arr.shape[0] == 0:
            raise ValueError("the array holds no images (its first axis has length 0)")
        if errors == "uncertainty":
            raise ValueError("errors='uncertainty' needs images that carry an uncertainty "
                             "(CCDData with .uncertainty, FITS files with an UNCERT "
                             "extension); a bare array carries none: use errors='sky' for "
                             "errors from the sky noise, or give CCDData")
        group = _Group(np.arange(arr.shape[0]), arr.shape[2:],
                       lambda idx: np.asarray(arr[idx], dtype=float))
        source = "sky" if errors == "sky" else None
        return names, np.full(arr.shape[0], default_scale), [group], source, None

    ccds = _canonical_list(images, bands)
    if ccds is None:
        ccds = read_images(images, bands=bands)
    if len(ccds) == 0:
        raise ValueError("no images were given (the input is empty)")
    names = None
    for i, ccd in enumerate(ccds):
        these = parse_bands(str(ccd.meta.get("BANDS", "")) or bands)
        if names is None:
            names = these
        elif these != names:
            raise ValueError(f"image {i} has bands {these} but image 0 has {names}; "
                             "measure images with the same bands together (or give bands=)")
    wcss = [_celestial_wcs(c) for c in ccds]
    scales = np.array([_pixel_scale_of(c, default_scale) for c in ccds])
    by_shape = {}
    for i, ccd in enumerate(ccds):
        by_shape.setdefault(tuple(ccd.data.shape[1:]), []).append(i)
    if len(by_shape) > 1:
        warnings.warn(f"the images have {len(by_shape)} different shapes "
                      f"{sorted(by_shape)}: each shape is measured with its own geometry, "
                      "so half-light radii are limited by different cutout sizes",
                      PhotometryWarning)

    missing = [i for i, c in enumerate(ccds) if getattr(c, "uncertainty", None) is None]
    if errors == "uncertainty" and missing:
        raise ValueError(f"errors='uncertainty' needs an uncertainty on every image, but "
                         f"{len(missing)} of {len(ccds)} have none (image {missing[0]} is the "
                         "first); use errors='sky' for errors from the sky noise, or "
                         "errors=None")
    source = errors
    if errors == "auto":
        source = "uncertainty" if not missing else None

    def reader(members):
        def read(idx):
            stack = []
            for k in np.atleast_1d(idx):
                ccd = ccds[members[k]]
                data = np.asarray(ccd.data, dtype=float)
                if ccd.mask is not None:
                    data = np.where(np.asarray(ccd.mask, bool), np.nan, data)
                stack.append(data)
            return np.stack(stack)
        return read

    def var_reader(members):
        def read(idx):
            return np.stack([_variance(ccds[members[k]]) for k in np.atleast_1d(idx)])
        return read

    groups = [_Group(np.asarray(members), shape, reader(members),
                     var_reader(members) if source == "uncertainty" else None)
              for shape, members in by_shape.items()]
    return names, scales, groups, source, wcss


def _variance(ccd):
    """Pixel variances (nanomaggy**2) of an image's uncertainty, as float64."""
    from astropy.nddata import StdDevUncertainty

    std = ccd.uncertainty.represent_as(StdDevUncertainty)
    unit = std.unit if std.unit is not None else ccd.unit
    sigma = u.Quantity(np.asarray(std.array, dtype=float), unit).to_value(u.nanomaggy)
    return np.broadcast_to(sigma, np.shape(ccd.data)) ** 2


def _aperture_diameters(aperture_diameter, scales):
    """Aperture diameters in pixels, one per image, and the angular one in arcsec or None.

    A number (or a Quantity in pixels) is the same for every image; an angle
    is divided by each image's pixel scale (``scales``, arcsec per pixel).
    """
    if isinstance(aperture_diameter, u.Quantity) and (
            aperture_diameter.unit.physical_type == "angle"):
        if not aperture_diameter.isscalar:
            raise ValueError(f"aperture_diameter must be one angle, got {aperture_diameter!r}")
        arcsec = float(aperture_diameter.to_value(u.arcsec))
        if not arcsec > 0:
            raise ValueError(f"aperture_diameter must be positive, got {aperture_diameter}")
        return arcsec / np.asarray(scales, dtype=float), arcsec
    try:
        pixels = float(u.Quantity(aperture_diameter, u.pix).to_value(u.pix))
    except (TypeError, ValueError, u.UnitsError):
        raise ValueError(f"aperture_diameter must be a number of pixels or an angle "
                         f"(e.g. 3 * u.arcsec), got {aperture_diameter!r}") from None
    if not pixels > 0:
        raise ValueError(f"aperture_diameter must be positive, got {pixels}")
    return np.full(len(scales), pixels), None


def _sky_centroids(centres, wcss):
    """SkyCoord of pixel positions (n, 2) through each image's WCS, or None.

    NaN for images without a celestial WCS; the frame is the first image's,
    the positions of images in another frame are transformed into it.
    """
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import wcs_to_celestial_frame

    if wcss is None:
        return None
    n = len(wcss)
    lon, lat = np.full(n, np.nan), np.full(n, np.nan)
    frames, which = [], np.full(n, -1)
    for i, w in enumerate(wcss):
        if w is None:
            continue
        try:
            frame = wcs_to_celestial_frame(w)
        except ValueError:      # a celestial WCS astropy has no frame for
            continue
        k = next((j for j, f in enumerate(frames) if f.is_equivalent_frame(frame)), None)
        if k is None:
            frames.append(frame)
            k = len(frames) - 1
        world = w.all_pix2world(np.asarray(centres[i], dtype=float)[None], 0)[0]
        lon[i], lat[i], which[i] = world[w.wcs.lng], world[w.wcs.lat], k
    if not frames:
        return None
    for k in range(1, len(frames)):
        sel = which == k
        c = SkyCoord(lon[sel] * u.deg, lat[sel] * u.deg, frame=frames[k]).transform_to(
            frames[0])
        lon[sel], lat[sel] = c.spherical.lon.deg, c.spherical.lat.deg
    return SkyCoord(lon * u.deg, lat * u.deg, frame=frames[0])


def _check_options(names, centre, hlr_band, detection_band,
                   centroid_method, background, growth_step, n):
    if hlr_band is None:
        hlr_band = "r" if "r" in names else names[len(names) // 2]
    if hlr_band not in names:
        raise ValueError(f"hlr_band={hlr_band!r} is not one of the image bands {names}")
    if detection_band is None:
        detection_band = hlr_band
    if detection_band not in names:
        raise ValueError(f"detection_band={detection_band!r} is not one of the image "
                         f"bands {names}")
    if centroid_method not in ("com", "2dg"):
        raise ValueError(f"centroid_method must be 'com' or '2dg', got {centroid_method!r}")
    if isinstance(centre, str):
        if centre == "center":
            centre = "centre"
        if centre not in ("centre", "centroid"):
            raise ValueError(f"center must be 'center', 'centroid', an (x, y) pair or an "
                             f"(n, 2) array of pixel positions, got {centre!r}")
    else:
        arr = np.asarray(centre, dtype=float)
        if arr.shape == (2,):
            arr = np.tile(arr, (n, 1))
        if arr.shape != (n, 2) or not np.isfinite(arr).all():
            raise ValueError(f"center must be an (x, y) pair or an ({n}, 2) array of finite "
                             f"pixel positions, got shape {arr.shape}")
        centre = arr
    if isinstance(background, str):
        if background != "frame":
            raise ValueError(f"background must be 'frame' or a level in nanomaggies, got "
                             f"{background!r}")
    else:
        background = np.asarray(u.Quantity(background, u.nanomaggy).to_value(u.nanomaggy),
                                dtype=float)
        try:
            background = np.broadcast_to(background, (n, len(names)))
        except ValueError:
            raise ValueError(f"background must broadcast to (n_images, n_bands) = "
                             f"({n}, {len(names)}), got shape {background.shape}") from None
    if not growth_step > 0:
        raise ValueError(f"growth_step must be a positive number of pixels, got {growth_step}")
    return centre, hlr_band, detection_band, background


@deprecated_renamed_argument("centre", "center", "0.1",
                             warning_type=AstroSBGMDeprecationWarning)
def measure_galaxies(images, bands=None, *, aperture_diameter=12, center="center",
                     hlr_band=None, detection_band=None, centroid_method="com",
                     background="frame", background_width=4, growth_step=0.25,
                     morphology=False, pixel_scale=None, chunk_size=512, errors="auto"):
    """Measure fluxes, magnitudes, colours and half-light radii of galaxy cutouts.

    Parameters
    ----------
    images : object
        Anything `astro_sbgm.io.read_images` accepts: a FITS path, a
        directory or glob of FITS files, an HDU/HDUList, a `CCDData` or
        `NDData` ``(band, y, x)``, a list of those; or an array of shape
        ``(n, band, y, x)`` (or one ``(band, y, x)`` image) in nanomaggies with
        ``bands=`` given (arrays are measured directly, without building
        `CCDData`).  Masked and non-finite pixels are treated as bad.
    bands : str or sequence of str, optional
        Band names (``"grz"``); required for bare arrays, checked against
        ``meta['BANDS']`` otherwise.
    aperture_diameter : float or `~astropy.units.Quantity`, optional
        Aperture diameter in pixels (default 12, the paper's choice), or an
        angle (``3 * u.arcsec``), converted to pixels with each image's pixel
        scale: its WCS, else ``pixel_scale`` (default 0.262 arcsec per
        pixel).  Images whose scales differ get different pixel apertures.
    center : {'center', 'centroid'}, (x, y) or array of shape (n, 2), optional
        Where the aperture and the curve of growth are centred, in 0-based
        pixel coordinates (the old spelling ``centre=``, and the value
        ``'centre'``, work until the next release; the keyword with an
        `~astro_sbgm.exceptions.AstroSBGMDeprecationWarning`).  ``'center'``
        (default) is the cutout centre
        ``((nx - 1) / 2, (ny - 1) / 2)``; ``'centroid'`` uses
        `photutils.centroids.centroid_com` (or ``centroid_2dg``, see
        ``centroid_method``) of the background-subtracted ``detection_band``
        inside a box of the aperture's size about the cutout centre.  With
        per-galaxy centres the weights are built per galaxy (slower).
    hlr_band : str, optional
        Band of the half-light radius (and morphology); ``'r'`` when present,
        else the middle band.
    detection_band : str, optional
        Band of the centroid; default ``hlr_band``.
    centroid_method : {'com', '2dg'}, optional
        Centre of mass (of the positive pixels) or 2-D Gaussian fit.
    background : 'frame' or float, `~astropy.units.Quantity` or array, optional
        ``'frame'`` (default): sigma-clipped median of the outermost
        ``background_width`` pixels with the source masked (see the module
        docstring; frames whose sky is censored at a clip take the noise of
        the source mask and of the clip from their uncensored side).  A number (nanomaggy),
        or an array broadcastable to ``(n, band)``, is subtracted as given
        (use 0 for sky-subtracted, noise-free images).
    background_width : int, optional
        Width in pixels of the outer frame used for the background.
    growth_step : float, optional
        Radius step of the curve of growth, in pixels.
    morphology : bool, optional
        Also measure, on ``hlr_band``: ``concentration`` ``5 log10(r80/r20)``
        (radii holding 20 and 80 % of the flux inside ``r_max``),
        ``asymmetry`` (180-degree rotation about the centre, noise-corrected,
        inside ``2 r_half``), ``gini`` (of ``|I|`` inside ``2 r_half``, the
        `photutils.morphology.gini` estimator) and ``ellipticity``
        (``1 - b/a`` of the second moments inside ``4 r_half``).
    pixel_scale : float or `~astropy.units.Quantity`, optional
        Pixel scale in arcsec per pixel for images without a celestial WCS
        (default 0.262, the Legacy Survey's), for ``r_half`` and an angular
        ``aperture_diameter``.  A WCS, when present, wins.
    chunk_size : int, optional
        Images processed at once (bounds the memory used).
    errors : {'auto', 'uncertainty', 'sky', None}, optional
        Measurement errors (see the module docstring).  ``'auto'``
        (default): from the images' uncertainties when every image carries
        one, otherwise none (the table is then exactly as without this
        option).  ``'uncertainty'``: from the uncertainties, refused when an
        image has none.  ``'sky'``: from the sky sigma of the outer frame
        (works for bare arrays too).  ``None``: no error columns.

    Returns
    -------
    `~astropy.table.QTable`
        One row per image, in input order, with columns ``x_centre``,
        ``y_centre`` [pix]; ``sky_centroid`` (`~astropy.coordinates.SkyCoord`,
        the same centre on the sky) when at least one image carries a
        celestial WCS (NaN for those that do not; no column for bare arrays
        or images without WCS); per band ``flux_<b>`` [nmgy], ``mag_<b>`` [mag, AB],
        ``background_<b>`` [nmgy]; colours ``<b1>_<b2>`` [mag] of consecutive
        bands; ``r_half`` [arcsec]; the morphology columns when asked; and
        ``flags`` (`MeasurementFlag` bits).  Magnitudes, colours and
        ``r_half`` are masked (NaN underneath) where they cannot be measured.
        With errors, after these: per band ``flux_err_<b>`` [nmgy] and
        ``mag_err_<b>`` [mag], and per colour ``<b1>_<b2>_err`` [mag],
        masked where the flux or its error is not finite (or the flux not
        positive, for magnitudes).
        ``meta`` records the settings under FITS-safe keys: ``BANDS``,
        ``APERDIAM`` (pixels; ``"varies"`` for an angular aperture on
        images of different pixel scales), ``CENTRE``, ``HLRBAND``, ``BKG``,
        ``ZEROPT``, ``PIXSCALE`` (arcsec/pixel) and ``FLAGBITS`` (and
        ``APERARC``, the diameter in arcsec, when it was given as an angle;
        ``ERRORS``, the error source, when there are errors).

    Raises
    ------
    ValueError
        For a bare array without ``bands``, band counts that disagree, images
        with different bands, an aperture that does not fit in the cutout
        (or is neither a number of pixels nor an angle), an unknown
        ``center``, ``background``, ``hlr_band``, ``centroid_method`` or
        ``errors``, or ``errors='uncertainty'`` for images without one.
    TypeError, FileNotFoundError, astropy.units.UnitConversionError
        From `astro_sbgm.io.read_images` for inputs it cannot read.

    Warns
    -----
    PhotometryWarning
        When images of different shapes are measured together.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_sbgm.metrics import measure_galaxies
    >>> cat = measure_galaxies(np.ones((2, 3, 32, 32)), bands="grz", background=0)
    >>> cat["flux_g"]  # pi 6^2 pixels of 1 nanomaggy  # doctest: +FLOAT_CMP
    <MaskedQuantity [113.09733553, 113.09733553] nmgy>
    """
    if errors is False:
        errors = None
    if errors not in ("auto", "uncertainty", "sky", None):
        raise ValueError(f"errors must be 'auto', 'uncertainty', 'sky' or None, got {errors!r}")
    names, scales, groups, error_source, wcss = _parse_input(
        images, bands, pixel_scale, errors)
    n = int(sum(g.rows.size for g in groups))
    diameters, aperture_arcsec = _aperture_diameters(aperture_diameter, scales)
    centre, hlr_band, detection_band, background = _check_options(
        names, center, hlr_band, detection_band, centroid_method, background, growth_step, n)
    chunk_size = max(int(chunk_size), 1)
    nb = len(names)
    hlr_index = names.index(hlr_band)
    det_index = names.index(detection_band)

    res = {"background": np.full((n, nb), np.nan), "flux": np.full((n, nb), np.nan),
           "centre": np.full((n, 2), np.nan), "r_half_pix": np.full(n, np.nan),
           "flags": np.zeros(n, np.int64)}
    if error_source is not None:
        res["flux_var"] = np.full((n, nb), np.nan)
    if morphology:
        for key in _MORPHOLOGY:
            res[key] = np.full(n, np.nan)
    for group in groups:
        # one aperture per group of images of one shape and one aperture in pixels
        # (an angular aperture differs between images of different pixel scales)
        group_diameters = diameters[group.rows]
        for diameter in np.unique(group_diameters):
            members = np.flatnonzero(group_diameters == diameter)
            for start in range(0, members.size, chunk_size):
                local = members[start:start + chunk_size]
                rows = group.rows[local]
                chunk = group.read(local)
                chunk_centre = centre if isinstance(centre, str) else centre[rows]
                chunk_bkg = background if isinstance(background, str) else background[rows]
                chunk_var = (group.read_var(local) if error_source == "uncertainty"
                             else None)
                out = _measure_chunk(chunk, names, hlr_index, det_index, chunk_centre,
                                     diameter / 2.0, chunk_bkg, background_width,
                                     growth_step, morphology, centroid_method,
                                     errors=error_source, var=chunk_var)
                for key, value in out.items():
                    res[key][rows] = value

    table = QTable()
    table["x_centre"] = res["centre"][:, 0] * u.pix
    table["y_centre"] = res["centre"][:, 1] * u.pix
    sky = _sky_centroids(res["centre"], wcss)
    if sky is not None:
        table["sky_centroid"] = sky
    mags = {}
    for i, b in enumerate(names):
        flux = res["flux"][:, i]
        table[f"flux_{b}"] = Masked(flux * u.nanomaggy, mask=~np.isfinite(flux))
        mags[b] = ab_magnitude(flux * u.nanomaggy)
        table[f"mag_{b}"] = mags[b]
    for b1, b2 in zip(names[:-1], names[1:]):
        table[f"{b1}_{b2}"] = mags[b1] - mags[b2]
    for i, b in enumerate(names):
        table[f"background_{b}"] = res["background"][:, i] * u.nanomaggy
    r_half = res["r_half_pix"] * scales
    table["r_half"] = Masked(r_half * u.arcsec, mask=~np.isfinite(r_half))
    if morphology:
        for key in _MORPHOLOGY:
            table[key] = Masked(res[key] * u.dimensionless_unscaled,
                                mask=~np.isfinite(res[key]))
    table["flags"] = res["flags"]
    if error_source is not None:
        _add_error_columns(table, names, res["flux"], res["flux_var"])
    # FITS-safe keys (<= 8 characters, scalar values) so that .fits output keeps them
    table.meta.update({
        "BANDS": ",".join(names),
        "APERDIAM": (float(diameters[0]) if np.all(diameters == diameters[0])
                     else "varies"),
        "CENTRE": centre if isinstance(centre, str) else "given",
        "HLRBAND": hlr_band,
        "BKG": (f"sigma-clipped median of the outer {background_width}-px frame, source "
                "masked" if isinstance(background, str) else "given"),
        "ZEROPT": ZERO_POINT,
        "PIXSCALE": float(scales[0]) if np.all(scales == scales[0]) else "varies",
        "FLAGBITS": ",".join(f"{f.name}={int(f.value)}" for f in MeasurementFlag),
    })
    if aperture_arcsec is not None:
        table.meta["APERARC"] = aperture_arcsec
    if error_source is not None:
        table.meta["ERRORS"] = ("image uncertainty, sqrt(sum w sigma^2) over the aperture"
                                if error_source == "uncertainty" else
                                "frame sky sigma, sigma_sky sqrt(sum w) over the aperture")
    return table


#: 2.5 / ln(10): d(mag) = _MAG_PER_LN * d(flux) / flux.
_MAG_PER_LN = 2.5 / np.log(10.0)


def _add_error_columns(table, names, flux, flux_var):
    """Append ``flux_err_<b>``, ``mag_err_<b>`` and ``<b1>_<b2>_err`` columns."""
    err = np.sqrt(flux_var)
    ok = np.isfinite(err) & np.isfinite(flux)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag_err = np.where(ok & (flux > 0), _MAG_PER_LN * err / np.where(flux > 0, flux, 1.0),
                           np.nan)
    for i, b in enumerate(names):
        table[f"flux_err_{b}"] = Masked(np.where(ok[:, i], err[:, i], np.nan) * u.nanomaggy,
                                        mask=~ok[:, i])
    for i, b in enumerate(names):
        table[f"mag_err_{b}"] = Masked(mag_err[:, i] * u.mag, mask=~np.isfinite(mag_err[:, i]))
    for i, (b1, b2) in enumerate(zip(names[:-1], names[1:])):
        colour_err = np.hypot(mag_err[:, i], mag_err[:, i + 1])
        table[f"{b1}_{b2}_err"] = Masked(colour_err * u.mag, mask=~np.isfinite(colour_err))
