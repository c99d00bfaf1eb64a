"""Images from one survey's filters into another's, with fitted colour terms per pixel.

A model learns one survey's filters (the bundled one DECam g, r, z).  An
image taken through other filters (SDSS g, r, z; HSC g, r, z; the Legacy
Surveys' northern BASS g, r and MzLS z) is put into the model's filters
before `astro_sbgm.transfer.transfer` or `astro_sbgm.inpainting.inpaint`
uses it, with the colour transformations of `astro_sbgm.bands.fit_colour_terms`
(fitted on the template library: the CWW galaxy templates at redshift 0-0.4
with Calzetti reddening):

.. math::

    m_T = m_S + P(m_A - m_B) \\quad\\Longrightarrow\\quad
    f_T = f_S \\; 10^{-0.4 P(c)}

for each target filter ``T``: ``S`` is the source filter nearest in pivot
wavelength, ``A - B`` the source colour that brackets ``T`` and ``P`` a
quadratic.  In flux the mapping is a per-pixel factor on one source plane,
so it is linear in the pixel values: sky noise and negative pixels pass
through, scaled, and an inpainted pixel maps back exactly.

Per-pixel colours are noise where the signal is low and undefined where the
flux is negative, so the colour ``c`` of each pixel is regularised:

* the two planes of the colour are smoothed with a Gaussian of
  ``smoothing`` pixels (2 by default; masked pixels take no part:
  normalised convolution) and the colour of the smoothed image is used
  where both smoothed planes are above ``snr`` (5) times their own noise
  (from the image's uncertainty, else from the median absolute deviation
  of the unmasked pixels);
* every other pixel (sky, faint outskirts, masked pixels) takes the
  galaxy's integrated colour: the colour of the summed flux of the pixels
  above that threshold (the middle of the templates' colour range when no
  pixel is);
* colours are clipped to the range of the template library the terms were
  fitted on, so the polynomial is never extrapolated.

A mapping is refused (`ValueError`, naming the filters) when a target
filter's pivot wavelength lies outside the wavelengths the source filters
cover (where a source filter transmits at least `COVERAGE_FRACTION` of its
peak): SDSS g, r cannot make DECam z.  What was done is returned in a
`FilterMapping`, whose `FilterMapping.cards` are recorded in the output
images (``FMAP``, ``FMAPFROM``, ``FMAPn``, ``FMRMSn``, ``FMCOLn``,
``FMFRCn``).
"""

import functools
from dataclasses import dataclass, field

import numpy as np
import astropy.units as u
from scipy import ndimage

from .bands import fit_colour_terms, parse_filters

__all__ = ["FilterMapping", "filter_mapping", "check_coverage", "COVERAGE_FRACTION"]

#: A filter covers the wavelengths where it transmits at least this fraction of its peak.
COVERAGE_FRACTION = 0.05
_MAD_TO_SIGMA = 1.4826


@dataclass
class FilterMapping:
    """How an image's planes were put into other filters (`filter_mapping`).

    Attributes
    ----------
    source, target : tuple of str
        Full filter names of the input planes and of the planes made.
    plane : tuple of int
        For each target filter, the input plane it is scaled from.
    factor : `numpy.ndarray`
        ``(target, y, x)``: ``target = factor * input[plane]``.
    terms : dict
        ``{target: ColourTerm}`` of the filters made with a colour term
        (a target that is one of the source filters is copied: factor 1).
    galaxy_colour : dict
        ``{target: colour}``: the integrated colour used in faint pixels.
    own_colour : dict
        ``{target: fraction}`` of the pixels that use their own (smoothed)
        colour.
    smoothing, snr : float
        The regularisation used.
    """

    source: tuple
    target: tuple
    plane: tuple
    factor: np.ndarray
    terms: dict = field(default_factory=dict)
    galaxy_colour: dict = field(default_factory=dict)
    own_colour: dict = field(default_factory=dict)
    smoothing: float = 2.0
    snr: float = 5.0

    def apply(self, data):
        """The ``(target, y, x)`` planes made from ``(source, y, x)`` ``data``."""
        data = np.asarray(data)
        return (data[list(self.plane)] * self.factor).astype(np.result_type(data, np.float32))

    def invert(self, values, index):
        """Values of target plane ``index`` put back into its source filter."""
        return np.asarray(values) / self.factor[index]

    def describe(self):
        """One line per target filter: what it was made from."""
        lines = []
        for i, t in enumerate(self.target):
            term = self.terms.get(t)
            if term is None:
                lines.append(f"{t} = {self.source[self.plane[i]]}")
            else:
                a, b = term.colour
                lines.append(f"{t} = {term.source_band} + P({a} - {b}) [rms "
                             f"{term.scatter:.3f} mag; faint pixels: {a} - {b} = "
                             f"{self.galaxy_colour[t]:.3f}]")
        return "; ".join(lines)

    @property
    def cards(self):
        """FITS cards recording the mapping (``{key: value or (value, comment)}``).

        ``FMAP`` (``"colour terms"``), ``FMAPFROM`` (the input filters),
        ``FMSMOOTH``, ``FMSNR``, and per target plane ``n``: ``FMAPn``
        (``"decam:g=sdss:g+P(sdss:g-sdss:r)"``), ``FMRMSn`` (the term's rms
        over the templates, mag), ``FMCOLn`` (the colour used in faint
        pixels) and ``FMFRCn`` (the fraction of pixels with their own colour).
        """
        out = {"FMAP": ("colour terms", "input filters mapped to the model's"),
               "FMAPFROM": ",".join(self.source)[:68],
               "FMSMOOTH": (float(self.smoothing), "colour smoothing sigma, pixels"),
               "FMSNR": (float(self.snr), "S/N above which pixels keep their colour")}
        for i, t in enumerate(self.target):
            term = self.terms.get(t)
            if term is None:
                out[f"FMAP{i}"] = f"{t}={self.source[self.plane[i]]}"[:68]
                continue
            a, b = term.colour
            out[f"FMAP{i}"] = f"{t}={term.source_band}+P({a}-{b})"[:68]
            out[f"FMRMS{i}"] = (round(float(term.scatter), 5), "rms of the term, mag")
            out[f"FMCOL{i}"] = (round(float(self.galaxy_colour[t]), 5),
                                "colour used in faint pixels, mag")
            out[f"FMFRC{i}"] = (round(float(self.own_colour[t]), 5),
                                "fraction of pixels with their own colour")
        return out


def _coverage(f):
    """(low, high) wavelengths in nm where ``f`` transmits >= COVERAGE_FRACTION of its peak."""
    thr = np.asarray(f.throughput, float)
    lam = f.wavelength.to_value(u.nm)
    on = np.flatnonzero(thr >= COVERAGE_FRACTION * thr.max())
    return float(lam[on[0]]), float(lam[on[-1]])


def check_coverage(source, target):
    """Refuse target filters outside the source filters' wavelength coverage.

    Parameters
    ----------
    source, target : str or sequence
        Filter sets (anything `astro_sbgm.bands.parse_filters` takes).

    Raises
    ------
    ValueError
        Naming each target filter whose pivot wavelength lies outside the
        wavelengths the source filters cover (see `COVERAGE_FRACTION`), and
        the source filters.
    """
    src, dst = parse_filters(source), parse_filters(target)
    names = [f.name for f in src]
    spans = [_coverage(f) for f in src]
    lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
    outside = [f for f in dst if f.name not in names
               and not lo <= f.pivot_wavelength.to_value(u.nm) <= hi]
    if outside:
        which = ", ".join(f"{f.name} (pivot {f.pivot_wavelength.to_value(u.nm):.0f} nm)"
                          for f in outside)
        raise ValueError(f"mapping the filters {names} onto {[f.name for f in dst]} would "
                         f"extrapolate: {which} lies outside the {lo:.0f}-{hi:.0f} nm the "
                         f"image's filters cover; give an image with a band covering "
                         f"{', '.join(f.name for f in outside)}")


@functools.lru_cache(maxsize=32)
def _terms(source, target, degree):
    return fit_colour_terms(list(source), list(target), degree=degree)


def _smoothed(plane, ok, sigma_pix, smoothing):
    """Normalised-convolution smoothing of a plane and the noise of the result."""
    w = ndimage.gaussian_filter(ok.astype(np.float64), smoothing, mode="constant")
    num = ndimage.gaussian_filter(np.where(ok, plane, 0.0), smoothing, mode="constant")
    var = ndimage.gaussian_filter(np.where(ok, sigma_pix ** 2, 0.0), smoothing,
                                  mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        sm = np.where(w > 0.05, num / w, np.nan)
        # a Gaussian of sigma s pixels averages over 4 pi s^2 pixels
        noise = np.sqrt(np.where(w > 0.05, var / w, np.nan) / (4.0 * np.pi * smoothing ** 2))
    return sm, noise


def _pixel_sigma(plane, ok, unc):
    if unc is not None:
        s = np.asarray(unc, np.float64)
        good = ok & np.isfinite(s)
        fill = np.median(s[good]) if good.any() else 0.0
        return np.where(good, s, fill)
    vals = plane[ok]
    if vals.size == 0:
        return np.zeros_like(plane)
    mad = np.median(np.abs(vals - np.median(vals)))
    return np.full_like(plane, _MAD_TO_SIGMA * mad)


def filter_mapping(data, source, target, *, uncertainty=None, mask=None, smoothing=2.0,
                   snr=5.0, degree=2):
    """Work out how to put an image's planes into other filters (see the module docstring).

    Parameters
    ----------
    data : array-like
        ``(source, y, x)`` fluxes (any linear flux unit).
    source, target : str or sequence
        Full filter names of the planes and of the filters wanted
        (anything `astro_sbgm.bands.parse_filters` takes; ``"grz"`` is
        DECam).
    uncertainty : array-like, optional
        ``(source, y, x)`` standard deviations, for the colours' S/N.
    mask : array-like of bool, optional
        ``(source, y, x)`` or ``(y, x)``: pixels that carry no value.
    smoothing : float
        Gaussian sigma in pixels of the colour image (default 2).
    snr : float
        S/N of the smoothed planes above which a pixel keeps its own colour
        (default 5).
    degree : int
        Degree of the colour terms (default 2).

    Returns
    -------
    `FilterMapping`

    Raises
    ------
    ValueError
        When a target filter lies outside the source filters' coverage
        (`check_coverage`), when a target filter needs a colour and the
        image has one filter, or for ``smoothing``/``snr`` that are not
        positive.

    Examples
    --------
    >>> import numpy as np
    >>> m = filter_mapping(np.ones((3, 8, 8)), "sdss:g,sdss:r,sdss:z", "grz")
    >>> m.target
    ('decam:g', 'decam:r', 'decam:z')
    """
    src = tuple(f.name for f in parse_filters(source))
    dst = tuple(f.name for f in parse_filters(target))
    if not (np.isfinite(smoothing) and smoothing > 0 and np.isfinite(snr) and snr > 0):
        raise ValueError(f"smoothing and snr must be positive, got {smoothing!r}, {snr!r}")
    data = np.asarray(data, np.float64)
    if data.ndim != 3 or data.shape[0] != len(src):
        raise ValueError(f"data must be (band, y, x) with one plane per source filter "
                         f"{list(src)}, got shape {data.shape}")
    check_coverage(src, dst)
    need = tuple(t for t in dst if t not in src)
    if need and len(src) < 2:
        raise ValueError(f"the image has one filter {list(src)}: {list(need)} need a colour, "
                         "which takes two filters; give an image in two or more filters")
    ok = np.isfinite(data)
    if mask is not None:
        ok &= ~np.broadcast_to(np.asarray(mask, bool), data.shape)
    unc = None if uncertainty is None else np.broadcast_to(np.asarray(uncertainty, float),
                                                           data.shape)
    terms = _terms(src, need, int(degree)) if need else None
    cache = {}

    def smoothed(k):
        if k not in cache:
            sig = _pixel_sigma(data[k], ok[k], None if unc is None else unc[k])
            cache[k] = _smoothed(np.where(ok[k], data[k], 0.0), ok[k], sig, smoothing)
        return cache[k]

    plane, factor = [], []
    used, gal, own = {}, {}, {}
    for t in dst:
        if t in src:
            plane.append(src.index(t))
            factor.append(np.ones(data.shape[1:]))
            continue
        term = terms[t]
        used[t] = term
        ia, ib = src.index(term.colour[0]), src.index(term.colour[1])
        (sa, na), (sb, nb) = smoothed(ia), smoothed(ib)
        with np.errstate(invalid="ignore"):
            good = (sa > snr * na) & (sb > snr * nb)
        lo, hi = term.colour_range
        both = ok[ia] & ok[ib] & good
        fa, fb = data[ia][both].sum(), data[ib][both].sum()
        c_gal = -2.5 * np.log10(fa / fb) if (both.any() and fa > 0 and fb > 0) \
            else 0.5 * (lo + hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            c_pix = -2.5 * np.log10(sa / sb)
        colour = np.clip(np.where(good & np.isfinite(c_pix), c_pix, c_gal), lo, hi)
        gal[t] = float(np.clip(c_gal, lo, hi))
        own[t] = float(np.mean(good))
        plane.append(src.index(term.source_band))
        factor.append(10.0 ** (-0.4 * term(colour)))
    return FilterMapping(source=src, target=dst, plane=tuple(plane),
                         factor=np.stack(factor).astype(np.float64), terms=used,
                         galaxy_colour=gal, own_colour=own, smoothing=float(smoothing),
                         snr=float(snr))
