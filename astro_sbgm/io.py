"""Reading, checking and writing multi-band galaxy images.

Every public entry point of the package turns what the user gives it into one
canonical form, a `~astropy.nddata.CCDData` with

* data of shape ``(band, y, x)`` (float32), in nanomaggies per pixel;
* ``.wcs`` the 2-D celestial WCS of the ``(y, x)`` plane (or `None`);
* ``.meta['BANDS']`` the comma-separated band letters (``'g,r,z'``) and
  ``BAND0``, ``BAND1``, ... each band's letter, as the Legacy Survey cutout
  service writes them, and ``FILTER0``, ``FILTER1``, ... each plane's full
  filter name (``'decam:g'``; an image in other filters, ``'sdss:g'``, keeps
  the letter ``g`` in ``BAND0``);
* ``.mask`` (same shape, `True` = bad pixel) and ``.uncertainty`` carried
  through where the input has them.

This module is the package's one input parser: `read_image` does this for
one image, `read_images` for many (`holds_many` is the one-or-many rule),
`read_mask` reads masks and bit masks (and regions, on an image's grid),
`read_raw` the pixels exactly as stored (for bit-exact inpainting),
`as_batch` stacks images into one array for metrics and figures, and
`read_picture` reads PNG/JPEG pictures.  It is also the one image builder:
`make_image` builds every output image of the package (the ``BANDS``,
``BANDn``, ``FILTERn`` and ``BUNIT`` cards are written there only, with
`provenance_cards`), and `write_image` writes the same layout to FITS (a
data cube in the primary HDU, ``MASK``, ``UNCERT``, ``FLAGS`` and ``DRAW``
image extensions, all in one atomic write), so that a file written here
reads back identically.  `to_model_grid` brings an image onto a model's
pixel grid with `reproject` (flux-conserving).  Nothing here imports torch.

Flux units and zero points
--------------------------
A FITS image in counts (or with no ``BUNIT``) is put in nanomaggies with its
photometric zero point: ``MAGZERO``, ``MAGZP`` or ``PHOTZP`` (an AB
magnitude: ``m = ZP - 2.5 log10(value)``) or ``FLUXMAG0`` (the pixel value
of a 0-mag source, ``ZP = 2.5 log10(FLUXMAG0)``), or ``zero_point=``; a
nanomaggy is the flux of zero point 22.5, so ``f = value * 10**(-0.4 (ZP -
22.5))``.  A flux unit and a zero point that disagree (``BUNIT='nanomaggy'``
with ``MAGZERO=30``), or zero-point cards that disagree with each other,
are refused, naming both.  A FITS image with neither ``BUNIT`` nor a zero
point is taken to be in nanomaggies with an `AstroSBGMInputWarning`, unless
``unit=`` says so or the header names the Legacy Surveys (a ``SURVEY`` card
with "Legacy", "DECaLS", "MzLS" or "BASS" in it, as the viewer's cutout
service writes ``SURVEY = 'DECaLS'``, or legacypipe's ``LEGPIPEV`` card),
whose images are documented in nanomaggies per pixel.

Uncertainties and masks
-----------------------
An ``UNCERT`` extension is read by its ``UTYPE`` card:
``StdDevUncertainty`` (the default when the card is missing),
``VarianceUncertainty`` or ``InverseVariance`` (the names astropy's
`~astropy.nddata.CCDData` writes); another ``UTYPE`` is refused.  Inverse
variances of zero (no data) become an infinite standard deviation.  A file
without ``UNCERT`` whose next image HDU after the image is an inverse
variance, ``IMAGETYP = 'INVVAR'`` (or ``EXTNAME`` ``INVVAR``/``IVAR``), as
the Legacy Survey viewer's cutout service writes it when ``invvar`` is
requested, gives the uncertainty ``1 / sqrt(invvar)``, and its pixels of
zero inverse variance (no coverage) are masked.  `read_mask` reads a
boolean mask or a bit mask (the Legacy Survey ``maskbits`` files, bits
selected by name or value).
"""

import glob
import os
import warnings
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS, WCSHDO_P17, WCSHDO_all
from astropy.wcs.wcs import WCSHDO_SIP
from astropy.wcs.utils import proj_plane_pixel_scales

from ._atomic import atomic_write
from ._version import __version__
from .bands import (LEGACY_SURVEY_FILTERS, LEGACY_SURVEY_PIXEL_SCALE, band_letter, parse_bands,
                    parse_filters)
from .exceptions import AstroSBGMInputWarning

__all__ = ["read_image", "read_images", "read_mask", "check_mask_bits", "read_raw",
           "read_picture", "write_image", "make_image", "provenance_cards", "as_batch",
           "holds_many", "is_canonical", "image_bands", "image_filters", "is_picture",
           "rgb_to_bands", "to_model_grid", "select_bands",
           "celestial_wcs", "wcs_from_header", "header_cards", "parse_unit", "expand_paths",
           "pixel_scale_of", "make_tan_wcs", "as_nanomaggy", "ZERO_POINT_CARDS",
           "PICTURE_SUFFIXES", "RGB_WAVELENGTHS", "AstroSBGMInputWarning"]

_UNIT_ALIASES = {
    "nanomaggy": u.nanomaggy, "nanomaggies": u.nanomaggy, "nmgy": u.nanomaggy,
    "nanomaggy/pixel": u.nanomaggy, "nanomaggies/pixel": u.nanomaggy,
    "maggy": u.maggy, "maggies": u.maggy,
    "counts": u.count, "electrons": u.electron, "e-": u.electron, "adu": u.adu, "dn": u.DN,
    "adu/s": u.adu / u.s, "counts/s": u.count / u.s, "electrons/s": u.electron / u.s,
}
#: Header cards that hold a photometric zero point, and what each one means:
#: ``"mag"`` an AB magnitude ``ZP`` with ``m = ZP - 2.5 log10(value)``,
#: ``"flux"`` the pixel value of a 0-mag source (``ZP = 2.5 log10(FLUXMAG0)``).
ZERO_POINT_CARDS = {"MAGZERO": "mag", "MAGZP": "mag", "PHOTZP": "mag", "FLUXMAG0": "flux"}
#: AB zero point of the nanomaggy.
_NANOMAGGY_ZP = 22.5
#: Zero points closer than this (mag) agree.
_ZP_TOLERANCE = 5e-3
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")
# write every WCS extension (and SIP) with 17 significant digits: exact round trip
_WCS_WRITE_RELAX = WCSHDO_all | WCSHDO_P17 | WCSHDO_SIP


# --------------------------------------------------------------------------- units
def _parse_unit(unit):
    if unit is None or isinstance(unit, u.UnitBase):
        return unit
    key = str(unit).strip()
    if key.lower().replace(" ", "") in _UNIT_ALIASES:
        return _UNIT_ALIASES[key.lower().replace(" ", "")]
    try:
        return u.Unit(key)
    except ValueError:
        raise ValueError(f"cannot understand the unit {unit!r}; give an astropy unit "
                         "convertible to nanomaggy (e.g. 'nanomaggy', 'maggy', 'uJy')") from None


def as_nanomaggy(data, unit):
    """Convert an array in ``unit`` to nanomaggies.

    Maggies are converted with the AB zero point (1 maggy = 3631 Jy), so
    spectral flux densities (Jy, erg/s/cm2/Hz) are accepted too.  A per-pixel
    unit (``nanomaggy / pix``) is treated as a per-pixel flux.

    Parameters
    ----------
    data : array-like
        The values.
    unit : str or `~astropy.units.UnitBase`
        Their unit.

    Returns
    -------
    `numpy.ndarray`
        The values in nanomaggies (float32).

    Raises
    ------
    astropy.units.UnitConversionError
        If the unit cannot be converted to nanomaggies.
    """
    unit = _parse_unit(unit)
    if unit == u.nanomaggy:
        return np.asarray(data, dtype=np.float32)
    if u.pix in unit.bases:
        # a per-pixel unit (nanomaggy / pix): the values are fluxes in one pixel
        unit = unit * u.pix
    try:
        factor = (1 * unit).to_value(u.nanomaggy, u.zero_point_flux(3631 * u.Jy))
    except u.UnitConversionError:
        raise u.UnitConversionError(
            f"pixel values in {unit} cannot be converted to nanomaggy; give fluxes per "
            "pixel (nanomaggy, maggy, Jy, ...): calibrate the image first, pass unit= "
            "with its real flux unit, or give its photometric zero point (zero_point=, "
            "or a MAGZERO, MAGZP, PHOTZP or FLUXMAG0 header card)") from None
    return np.asarray(data, dtype=np.float32) * np.float32(factor)


def _header_get(header, key):
    """``header[key]`` for a FITS Header or a meta dict (any key case), else None."""
    if header is None:
        return None
    if isinstance(header, fits.Header):
        return header.get(key)
    for k, v in header.items():
        if isinstance(k, str) and k.upper() == key:
            return v
    return None


def _zero_point(header, zero_point):
    """The AB zero point of the pixel values and where it comes from, or (None, None).

    Reads the `ZERO_POINT_CARDS` of ``header`` and ``zero_point=``; refuses,
    naming them, cards that cannot be read or that disagree with each other or
    with ``zero_point=``.
    """
    found = []
    for card, kind in ZERO_POINT_CARDS.items():
        value = _header_get(header, card)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"the header card {card}={value!r} is not a number; fix or "
                             "remove it (or give zero_point=)") from None
        if kind == "flux":
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"the header card {card}={value!r} must be a positive flux "
                                 "(the pixel value of a 0-mag source); fix or remove it")
            zp = 2.5 * np.log10(value)
        else:
            if not np.isfinite(value):
                raise ValueError(f"the header card {card}={value!r} is not a finite "
                                 "magnitude; fix or remove it")
            zp = value
        found.append((zp, f"{card}={value:g}"))
    if zero_point is not None:
        try:
            given = float(u.Quantity(zero_point, u.mag).value)
        except (TypeError, ValueError, u.UnitsError):
            raise ValueError(f"zero_point must be an AB magnitude (a number), got "
                             f"{zero_point!r}") from None
        if not np.isfinite(given):
            raise ValueError(f"zero_point must be finite, got {zero_point!r}")
        for zp, src in found:
            if abs(zp - given) > _ZP_TOLERANCE:
                raise ValueError(f"zero_point={given:g} disagrees with the header's {src} "
                                 f"({zp:.3f} mag); drop zero_point= or fix the header")
        return given, f"zero_point={given:g}"
    if not found:
        return None, None
    for zp, src in found[1:]:
        if abs(zp - found[0][0]) > _ZP_TOLERANCE:
            raise ValueError(f"the header's zero points disagree: {found[0][1]} "
                             f"({found[0][0]:.3f} mag) but {src} ({zp:.3f} mag); remove the "
                             "wrong card or give zero_point=")
    return found[0]


def _is_instrumental(unit):
    """Counts-like units (ADU, counts, electrons, photons, DN; per second or not), or none."""
    if unit is None or unit == u.dimensionless_unscaled:
        return True
    counting = {u.count, u.adu, u.electron, u.photon, u.DN}
    bases = set(unit.bases)
    return bool(bases & counting) and bases <= counting | {u.s, u.pix}


def _zero_point_factor(zp, zp_source, unit, unit_source):
    """Multiplier that puts values of zero point ``zp`` (in ``unit``) in nanomaggies."""
    if _is_instrumental(unit):
        return 10.0 ** (-0.4 * (zp - _NANOMAGGY_ZP))
    scale = unit * u.pix if u.pix in unit.bases else unit
    try:
        k = (1 * scale).to_value(u.nanomaggy, u.zero_point_flux(3631 * u.Jy))
    except u.UnitConversionError:
        raise u.UnitConversionError(
            f"pixel values in {unit} ({unit_source}) cannot be converted to nanomaggy with "
            f"the zero point {zp_source}: a zero point calibrates counts (ADU, electrons) "
            "or a flux unit; fix the unit") from None
    implied = _NANOMAGGY_ZP - 2.5 * np.log10(k)
    if abs(implied - zp) > _ZP_TOLERANCE:
        raise ValueError(
            f"{unit_source} and {zp_source} conflict: a pixel value of 1 {unit} is "
            f"{implied:.3f} AB mag, which is a zero point of {implied:.3f}, not {zp:.3f}; "
            "remove the wrong one (a flux unit needs no zero point, counts need one)")
    return k


#: ``SURVEY`` values (lower case, substrings) of the Legacy Surveys and their parts,
#: whose images are documented in nanomaggies per pixel; the viewer's cutout
#: service writes ``SURVEY = 'DECaLS'`` (``'MzLS'`` for MzLS layers).
_NANOMAGGY_SURVEYS = ("legacy", "decals", "mzls", "bass")


def _documented_nanomaggy(header):
    """Whether a header names the Legacy Surveys, documented in nanomaggies per pixel."""
    survey = _header_get(header, "SURVEY")
    if isinstance(survey, str) and any(s in survey.lower() for s in _NANOMAGGY_SURVEYS):
        return True
    return _header_get(header, "LEGPIPEV") is not None


# --------------------------------------------------------------------------- WCS helpers
def make_tan_wcs(shape, pixel_scale=LEGACY_SURVEY_PIXEL_SCALE, ra=180.0, dec=0.0, radesys=None):
    """A celestial TAN WCS centred on an image, north up and east left.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    pixel_scale : `~astropy.units.Quantity` or float
        Pixel scale (arcsec per pixel when a float).
    ra, dec : float
        Sky position of the image centre, degrees.
    radesys : str, optional
        The ``RADESYS`` card (e.g. ``"ICRS"``); default none (FITS then
        means ICRS).

    Returns
    -------
    `~astropy.wcs.WCS`
        ``CRPIX`` at the image centre, ``(n + 1) / 2`` (1-based).
    """
    scale = u.Quantity(pixel_scale, u.arcsec).to_value(u.arcsec) / 3600.0   # degrees
    ny, nx = shape[-2:]
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [float(ra), float(dec)]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    if radesys is not None:
        w.wcs.radesys = radesys
    w.pixel_shape = (nx, ny)
    return w


def pixel_scale_of(wcs):
    """Mean pixel scale of a celestial WCS, in arcsec per pixel."""
    scales = proj_plane_pixel_scales(wcs.celestial)
    return float(np.sqrt(scales[0] * scales[1])) * 3600.0 * u.arcsec


def _celestial(wcs):
    if wcs is None:
        return None
    if not isinstance(wcs, WCS):
        try:
            wcs = WCS(wcs)
        except Exception as err:  # a gwcs or APE14 object we cannot handle
            raise TypeError(f"cannot use a WCS of type {type(wcs).__name__} ({err}); "
                            "give an astropy.wcs.WCS") from None
    if not wcs.has_celestial:
        return None
    cel = wcs.celestial
    cel.pixel_shape = None if wcs.pixel_shape is None else wcs.pixel_shape[:2]
    return cel


def _wcs_from_header(header):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=fits.verify.VerifyWarning)
        try:
            w = WCS(header, naxis=2)
        except Exception:
            return None
    if not w.has_celestial:
        return None
    return w.celestial


def celestial_wcs(wcs):
    """The 2-D celestial part of a WCS (with its pixel shape), or None.

    Parameters
    ----------
    wcs : `~astropy.wcs.WCS`, header-like or None

    Returns
    -------
    `~astropy.wcs.WCS` or None
        None for no WCS or one without celestial axes.

    Raises
    ------
    TypeError
        For a WCS object that astropy cannot use (gwcs).
    """
    return _celestial(wcs)


def wcs_from_header(header):
    """The celestial WCS of a FITS header, or None when it has none (or a broken one)."""
    return _wcs_from_header(header)


# --------------------------------------------------------------------------- band bookkeeping
def image_bands(header, nbands=None):
    """The band letters recorded in a header or ``meta`` dict, or None.

    Read from ``BANDS`` (``"g,r,z"``), else ``BAND0``, ``BAND1``, ..., else
    ``FILTER0``, ``FILTER1``, ... (full filter names such as ``"sdss:g"``,
    given their band letters with `astro_sbgm.bands.band_letter`), else,
    for a one-plane image (``nbands == 1``), a ``BAND`` or ``FILTER`` card.

    Parameters
    ----------
    header : `~astropy.io.fits.Header`, dict or None
        The cards.
    nbands : int, optional
        Number of planes of the image (for the one-plane cards).

    Returns
    -------
    tuple of str or None

    Raises
    ------
    ValueError
        For band names that are not known (see `astro_sbgm.bands.parse_bands`).
    """
    return _bands_from_header(header, nbands)


def image_filters(image):
    """The full filter names of an image's planes (``FILTERn``, else the Legacy Survey's).

    Parameters
    ----------
    image : `~astropy.nddata.NDData`, `~astropy.io.fits.Header` or dict
        A canonical image (or its ``meta``) with ``BANDS``/``BANDn`` cards.

    Returns
    -------
    tuple of str
        ``("decam:g", "decam:r", "decam:z")`` for a Legacy Survey cutout,
        ``("sdss:g", ...)`` for an image with such ``FILTERn`` cards.

    Raises
    ------
    ValueError
        If the image records no band names, or ``FILTERn`` cards that
        contradict them.
    """
    meta = getattr(image, "meta", image)
    letters = _bands_from_header(meta, None)
    if letters is None:
        raise ValueError("the image records no band names (BANDS, BANDn or FILTERn cards); "
                         "read it with astro_sbgm.io.read_image(..., bands=...) first")
    return _header_filters(meta, letters)


def _filter_cards_of(header):
    """``FILTER0``, ``FILTER1``, ... of a header (full filter names), or None."""
    if header is None:
        return None
    names = []
    while f"FILTER{len(names)}" in header and str(header[f"FILTER{len(names)}"]).strip():
        names.append(str(header[f"FILTER{len(names)}"]).strip())
    return names or None


def _letters_of_filters(filters, what):
    """Band letters of full filter names; refuses filters with no model band letter."""
    letters = []
    for f in filters:
        letter = band_letter(f)
        if letter is None:
            raise ValueError(f"the filter {f.name if hasattr(f, 'name') else f!r} ({what}) "
                             "has no band letter (one of u, g, r, i, z, y, W1, W2) to record "
                             "in BANDn; give images in filters with such a letter")
        letters.append(letter)
    return tuple(letters)


def _parse_band_spec(bands):
    """``bands=`` as (band letters, full filter names or None for the Legacy Survey ones)."""
    try:
        return parse_bands(bands), None
    except ValueError as err:
        try:
            filters = parse_filters(bands)
        except (ValueError, TypeError):
            raise err from None
    names = tuple(f.name for f in filters)
    return _letters_of_filters(names, "bands="), names


def _bands_from_header(header, nbands):
    """Band names recorded in a header or meta dict (any number), or None."""
    if header is None:
        return None
    if "BANDS" in header and str(header["BANDS"]).strip():
        return parse_bands(str(header["BANDS"]).strip())
    names = []
    while f"BAND{len(names)}" in header:
        names.append(str(header[f"BAND{len(names)}"]).strip())
    if names:
        return parse_bands(names)
    filters = _filter_cards_of(header)
    if filters:
        try:
            return _letters_of_filters(filters, "a FILTERn card")
        except ValueError:     # not filters astro_sbgm knows: as if there were none
            pass
    if nbands == 1:
        for key in ("BAND", "FILTER"):
            if key in header and str(header[key]).strip():
                try:
                    return parse_bands([str(header[key]).strip()])
                except ValueError:
                    pass
    return None


def _header_filters(header, letters):
    """The full filter names of an image's planes: its ``FILTERn`` cards, else Legacy Survey.

    Raises ValueError when the ``FILTERn`` cards name filters whose band letters
    are not ``letters``; warns (and takes the Legacy Survey filters) when they
    are not known filters or name another number of planes.
    """
    cards = _filter_cards_of(header)
    legacy = tuple(LEGACY_SURVEY_FILTERS[b] for b in letters)
    if not cards:
        return legacy
    try:
        filters = tuple(f.name for f in parse_filters(cards))
    except (ValueError, TypeError) as err:
        warnings.warn(f"the FILTERn cards {cards} are not filters astro_sbgm knows ({err}); "
                      f"the bands {list(letters)} are taken as the Legacy Survey's {list(legacy)}",
                      AstroSBGMInputWarning)
        return legacy
    if len(filters) != len(letters):
        warnings.warn(f"the input records {len(letters)} band(s) {list(letters)} but "
                      f"{len(filters)} FILTERn card(s) {list(filters)}; the FILTERn cards are "
                      f"ignored and the bands taken as the Legacy Survey's {list(legacy)}",
                      AstroSBGMInputWarning)
        return legacy
    found = _letters_of_filters(filters, "a FILTERn card")
    if found != tuple(letters):
        raise ValueError(f"the FILTERn cards {list(filters)} disagree with the band letters "
                         f"{list(letters)} (BANDS/BANDn); fix or remove the FILTERn cards")
    return filters


def _set_band_cards(meta, bands, filters=None):
    """Write the band cards of an image: ``BANDS``, ``BAND0``..., ``FILTER0``...

    ``filters`` are the full filter names (default: the Legacy Survey filters
    of the letters).  The one place these cards are written.
    """
    if filters is None:
        filters = tuple(LEGACY_SURVEY_FILTERS[b] for b in bands)
    for key in [k for k in meta if str(k).upper().startswith(("BAND", "FILTER"))]:
        up = str(key).upper()
        rest = up[4:] if up.startswith("BAND") else up[6:]
        if rest.isdigit() or up in ("BAND", "FILTER"):
            del meta[key]
    meta["BANDS"] = ",".join(bands)
    for i, b in enumerate(bands):
        meta[f"BAND{i}"] = b
    for i, f in enumerate(filters):
        meta[f"FILTER{i}"] = f


def select_bands(image, bands):
    """Reorder (and subset) the bands of a canonical image.

    Parameters
    ----------
    image : `~astropy.nddata.CCDData`
        A canonical image (see the module docstring).
    bands : str or sequence of str
        The bands wanted, in order.

    Returns
    -------
    `~astropy.nddata.CCDData`
        A new image holding exactly ``bands``.

    Raises
    ------
    ValueError
        If one of ``bands`` is not in the image.
    """
    want = parse_bands(bands)
    if "BANDS" not in image.meta:
        raise ValueError("the image records no band names (meta['BANDS']); read it with "
                         "astro_sbgm.io.read_image(..., bands=...) first")
    have = parse_bands(image.meta["BANDS"])
    if want == have:
        return image
    missing = [b for b in want if b not in have]
    if missing:
        raise ValueError(f"the image has bands {have} but band(s) {missing} are needed; "
                         f"give an image with bands {want}")
    idx = [have.index(b) for b in want]
    filters = _header_filters(image.meta, have)
    out = CCDData(image.data[idx], unit=image.unit, wcs=image.wcs,
                  mask=None if image.mask is None else image.mask[idx],
                  uncertainty=None if image.uncertainty is None
                  else StdDevUncertainty(image.uncertainty.array[idx]),
                  meta=image.meta.copy())
    _set_band_cards(out.meta, want, [filters[i] for i in idx])
    return out


# --------------------------------------------------------------------------- reading
def _looks_like_path(obj):
    return isinstance(obj, (str, os.PathLike))


def _from_hdulist(hdul, hdu):
    if hdu is None:
        hdu = next((i for i, h in enumerate(hdul)
                    if getattr(h, "is_image", True) and h.name not in ("MASK", "UNCERT")
                    and h.data is not None), None)
        if hdu is None:
            raise ValueError("the FITS file holds no image data (every HDU is empty or a "
                             "table); give a file with an image HDU")
    try:
        main = hdul[hdu]
    except (KeyError, IndexError):
        names = [h.name for h in hdul]
        raise ValueError(f"hdu={hdu!r} is not in the file, which holds HDUs {names}; give "
                         "an index or one of these names") from None
    mask = uncert = None
    if "MASK" in hdul and hdul["MASK"] is not main:
        mask = np.asarray(hdul["MASK"].data) != 0
    if "UNCERT" in hdul and hdul["UNCERT"] is not main:
        uhdr = hdul["UNCERT"].header
        uncert = _as_std(np.asarray(hdul["UNCERT"].data, dtype=np.float32),
                         uhdr.get("UTYPE", "StdDevUncertainty"))
    else:
        ivar_hdu = _invvar_hdu(hdul, main)
        if ivar_hdu is not None:
            ivar = np.asarray(ivar_hdu.data, dtype=np.float32)
            shape = np.shape(main.data)
            if ivar.shape != shape:
                raise ValueError(f"the inverse-variance HDU {_hdu_label(hdul, ivar_hdu)} has "
                                 f"shape {ivar.shape} but the image {shape}; they are not of "
                                 "one cutout")
            if np.any(ivar < 0):
                raise ValueError(f"the inverse-variance HDU {_hdu_label(hdul, ivar_hdu)} "
                                 "holds negative values; the file is damaged")
            uncert = _as_std(ivar, "InverseVariance")
            no_data = ivar == 0
            if no_data.any():
                mask = no_data if mask is None else (mask | no_data)
    return main.data, main.header, mask, uncert


#: ``IMAGETYP`` (or ``EXTNAME``) values of an HDU holding the inverse variance of
#: the image beside it: the Legacy Survey viewer's cutout service writes its
#: ``invvar`` cube as HDU 1 with ``IMAGETYP = 'INVVAR'`` (and HDU 0 ``'IMAGE'``).
_INVVAR_NAMES = ("INVVAR", "IVAR")


def _invvar_hdu(hdul, main):
    """The first HDU after ``main`` that holds an inverse variance, or None.

    After, not anywhere: files of several images (the service's per-brick
    ``subimage`` layout) put each image's inverse variance right after it.
    """
    start = next(i for i, h in enumerate(hdul) if h is main) + 1
    for h in hdul[start:]:
        if not getattr(h, "is_image", True) or h.data is None:
            continue
        kind = str(h.header.get("IMAGETYP", "")).strip().upper()
        if kind in _INVVAR_NAMES or h.name.strip().upper() in _INVVAR_NAMES:
            return h
    return None


def _hdu_label(hdul, hdu):
    index = next(i for i, h in enumerate(hdul) if h is hdu)
    return f"{index} ({hdu.name})" if hdu.name and hdu.name != "PRIMARY" else str(index)


#: ``UTYPE`` values (lower case) of an UNCERT extension -> what the values are.
_UTYPES = {"stddevuncertainty": "std", "stddev": "std", "std": "std", "sigma": "std",
           "variance": "var", "varianceuncertainty": "var", "var": "var",
           "inversevariance": "ivar", "inversevarianceuncertainty": "ivar",
           "ivar": "ivar", "invvar": "ivar"}


def _as_std(values, utype):
    """Standard deviations from an UNCERT extension of type ``utype``.

    Negative variances are refused; inverse variances of zero (no data)
    become an infinite standard deviation.
    """
    key = str(utype).strip().lower()
    kind = _UTYPES.get(key, _UTYPES.get(key.split(".")[-1]))   # astropy.nddata.X too
    if kind is None:
        raise ValueError(f"the UNCERT extension has UTYPE={utype!r}, which is not one of "
                         "'StdDevUncertainty', 'VarianceUncertainty' or 'InverseVariance'; "
                         "fix its UTYPE card")
    if kind == "std":
        return values
    if np.any(values < 0):
        name = "variance" if kind == "var" else "inverse variance"
        raise ValueError(f"the UNCERT extension (UTYPE={utype!r}) holds negative {name} "
                         "values; fix the file")
    with np.errstate(divide="ignore"):
        if kind == "var":
            return np.sqrt(values).astype(np.float32)
        return np.where(values > 0, 1.0 / np.sqrt(values), np.inf).astype(np.float32)


_SKIP_PREFIXES = ("NAXIS", "CTYPE", "CRPIX", "CRVAL", "CDELT", "CROTA", "CD1_", "CD2_",
                  "CD3_", "PC1_", "PC2_", "PC3_", "CUNIT", "WCSAXES", "BITPIX", "SIMPLE",
                  "EXTEND", "BUNIT", "LONPOLE", "LATPOLE", "RADESYS", "EQUINOX", "MJDREF",
                  "DATEREF", "PCOUNT", "GCOUNT", "XTENSION", "EXTNAME", "BSCALE", "BZERO",
                  "CHECKSUM", "DATASUM") + tuple(ZERO_POINT_CARDS)


def _copy_meta(header):
    """The non-structural cards of a header or meta dict, as a new Header."""
    out = fits.Header()
    if header is None:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for k, v in header.items():
            if (isinstance(k, str) and k and k.upper() not in ("COMMENT", "HISTORY")
                    and not k.upper().startswith(_SKIP_PREFIXES)):
                try:
                    out[k] = v
                except (ValueError, TypeError, KeyError):
                    pass
    return out


def header_cards(header):
    """The non-structural cards of a header or ``meta`` dict, as a new Header.

    Drops what the writer makes anew (``NAXIS``, the WCS, ``BUNIT``,
    ``BSCALE``/``BZERO``, checksums, zero points, ``COMMENT``/``HISTORY``)
    and keeps the rest (observation cards, ``BANDn``, provenance).
    """
    return _copy_meta(header)


def parse_unit(unit):
    """An astropy unit from a ``BUNIT`` string or unit (``"nmgy"``, ``"nanomaggies"``...).

    Raises
    ------
    ValueError
        For a string astropy cannot read as a unit.
    """
    return _parse_unit(unit)


def _read_path(path, hdu):
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory; read the FITS files in it with "
                         "astro_sbgm.io.read_images")
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r}; check the path (a glob "
                                "pattern or a directory goes to read_images)")
    try:
        hdul = fits.open(path, memmap=False, mode="readonly")
    except OSError as err:
        raise OSError(f"cannot read {str(path)!r} as a FITS file ({err})") from None
    with hdul:
        data, header, mask, uncert = _from_hdulist(hdul, hdu)
        return np.array(data), header.copy(), mask, uncert


def _is_plane_list(obj):
    return (isinstance(obj, (list, tuple)) and len(obj) > 0
            and all(isinstance(p, NDData) and np.ndim(p.data) == 2 for p in obj))


def _plane_band(plane):
    meta = plane.meta or {}
    return meta.get("BAND") or meta.get("FILTER")


def read_image(image, bands=None, unit=None, wcs=None, hdu=None, nonfinite="mask",
               zero_point=None):
    """Turn one image, in any supported form, into the canonical `CCDData`.

    Parameters
    ----------
    image : str, path, HDU, HDUList, CCDData, NDData, dict, list, tuple or ndarray
        Accepted forms:

        * a path to a FITS file (the Legacy Survey cutout layout, one cube
          with ``BAND0``, ``BAND1``, ... cards, loads with nothing else);
        * a `~astropy.io.fits.PrimaryHDU` / `~astropy.io.fits.ImageHDU` or an
          `~astropy.io.fits.HDUList` (``MASK`` and ``UNCERT`` extensions are
          read when present, the ``UNCERT`` values by their ``UTYPE``:
          ``StdDevUncertainty``, ``VarianceUncertainty`` or
          ``InverseVariance``; without ``UNCERT``, an inverse-variance HDU
          after the image, ``IMAGETYP = 'INVVAR'`` as in the Legacy Survey
          cutout service's files with ``invvar``, is the uncertainty and
          its zeros are masked);
        * a `~astropy.nddata.CCDData` or `~astropy.nddata.NDData`, 2-D (one
          band) or 3-D ``(band, y, x)``;
        * a dict ``{band: 2-D image}`` (any 2-D form above), or a list of
          2-D `CCDData` with a band name in ``meta['BAND']`` (or ``bands=``
          given);
        * a tuple ``(array, WCS)`` or ``(array, Header)``;
        * a bare `numpy.ndarray` with ``bands=`` given.
    bands : str or sequence of str, optional
        Band names of the input planes, in order.  Needed when the input does
        not carry them; when it does, they must agree.  For a dict, the bands
        to take from it, in this order.
    unit : str or `~astropy.units.UnitBase`, optional
        Unit of the pixel values when the input does not carry one.  The
        default for unit-less inputs is nanomaggy (the Legacy Survey unit);
        a FITS image without ``BUNIT`` (nor zero point) taken so warns,
        unless its header names the Legacy Surveys.  Counts (``'adu'``,
        ``'electron/s'``, ...) need a zero point.
    wcs : `~astropy.wcs.WCS`, optional
        WCS to attach when the input has none.
    hdu : int or str, optional
        Which HDU of a FITS file or HDUList holds the image (default: the
        first with data).
    nonfinite : {'mask', 'raise'}
        What to do with NaN or infinite pixels: add them to the mask (and
        set them to zero) or refuse the image.
    zero_point : float, optional
        AB zero point of the pixel values, ``m = zero_point - 2.5
        log10(value)``, for images in counts whose header does not carry
        one (``MAGZERO``, ``MAGZP``, ``PHOTZP`` or ``FLUXMAG0``, read
        otherwise).  The values are multiplied by ``10**(-0.4 (zero_point -
        22.5))``.

    Returns
    -------
    `~astropy.nddata.CCDData`
        Shape ``(band, y, x)``, float32, unit nanomaggy, see the module
        docstring.  The input (and a file on disk) is never modified.

    Raises
    ------
    TypeError
        For an input of a type not listed above.
    ValueError
        For empty input, a wrong number of bands, unknown band names, band
        names that disagree with ``bands=``, non-finite pixels with
        ``nonfinite='raise'``, zero points that disagree with each other or
        with the unit (named in the message), an ``UNCERT`` extension of
        unknown ``UTYPE``, or an inverse-variance HDU of another shape than
        the image (or with negative values).
    astropy.units.UnitConversionError
        If the unit cannot be converted to nanomaggy (counts without a zero
        point, or a unit that is not a flux).
    FileNotFoundError
        For a path that does not exist.

    Warns
    -----
    AstroSBGMInputWarning
        For a FITS image with no ``BUNIT`` and no zero point, taken to be in
        nanomaggies (give ``unit=`` to say so and silence it).
    """
    if nonfinite not in ("mask", "raise"):
        raise ValueError(f"nonfinite must be 'mask' or 'raise', got {nonfinite!r}")
    header = None
    mask = uncert = None
    in_unit = unc_unit = None
    in_wcs = None
    data = None
    from_fits = True    # a FITS header (whose missing BUNIT deserves a warning)

    if _looks_like_path(image):
        data, header, mask, uncert = _read_path(image, hdu)
    elif isinstance(image, fits.HDUList):
        data, header, mask, uncert = _from_hdulist(image, hdu)
    elif isinstance(image, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        data, header = image.data, image.header
    elif isinstance(image, NDData):
        from_fits = False
        data = image.data
        in_unit = image.unit
        in_wcs = image.wcs
        header = dict(image.meta) if image.meta is not None else {}
        if image.mask is not None:
            mask = np.asarray(image.mask, dtype=bool)
        if image.uncertainty is not None:
            std = image.uncertainty.represent_as(StdDevUncertainty)
            uncert = np.asarray(std.array, dtype=np.float32)
            unc_unit = std.unit
    elif isinstance(image, dict):
        if not image:
            raise ValueError("the dict of per-band images is empty; give {band: image}")
        keys = [str(k) for k in image]
        names, _ = _parse_band_spec(keys)
        if bands is not None:
            want, _ = _parse_band_spec(bands)
            missing = [b for b in want if b not in names]
            if missing:
                raise ValueError(f"bands={want} asks for band(s) {missing} but the dict holds "
                                 f"{names}; add them or drop them from bands=")
            by_name = dict(zip(names, zip(keys, image.values())))
            return _stack_planes([by_name[b][1] for b in want], [by_name[b][0] for b in want],
                                 unit, wcs, nonfinite, zero_point)
        return _stack_planes(list(image.values()), keys, unit, wcs, nonfinite, zero_point)
    elif isinstance(image, (list, tuple)) and len(image) == 2 and isinstance(
            image[1], (WCS, fits.Header)):
        data = np.asarray(image[0])
        if isinstance(image[1], fits.Header):
            header = image[1]
        else:
            in_wcs = image[1]
            from_fits = False
    elif _is_plane_list(image):
        if bands is not None:
            names = parse_bands(bands)
            if len(names) != len(image):
                raise ValueError(f"bands={names} names {len(names)} band(s) but {len(image)} "
                                 "per-band image(s) were given; give one name per image")
        else:
            names = [_plane_band(p) for p in image]
        return _stack_planes(list(image), names, unit, wcs, nonfinite, zero_point)
    elif isinstance(image, (list, tuple)) and len(image) == 0:
        raise ValueError("no image was given (the input is an empty sequence)")
    elif isinstance(image, np.ndarray):
        data = image
        from_fits = False
    else:
        raise TypeError(
            f"cannot read an image from a {type(image).__name__}; give a FITS path, an HDU, "
            "an HDUList, a CCDData/NDData, a dict of per-band images, an (array, WCS) "
            "tuple or an ndarray with bands= (many images go to read_images)")

    if data is None:
        raise ValueError("the input holds no image data")
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
        if mask is not None and mask.ndim == 2:
            mask = mask[None]
        if uncert is not None and uncert.ndim == 2:
            uncert = uncert[None]
    if data.ndim != 3:
        hint = ("; a stack of images (n, band, y, x) goes to astro_sbgm.io.read_images"
                if data.ndim == 4 else "")
        raise ValueError(f"an image must be 2-D (one band) or 3-D (band, y, x); got shape "
                         f"{data.shape}{hint}")
    if data.size == 0:
        raise ValueError(f"the image is empty (shape {data.shape})")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise TypeError(f"image data must be real numbers, got dtype {data.dtype}")
    nb = data.shape[0]

    # bands (letters) and the filters behind them
    found = _bands_from_header(header, nb)
    given_filters = None
    if bands is not None:
        given, given_filters = _parse_band_spec(bands)
        if len(given) != nb:
            raise ValueError(f"bands={given} names {len(given)} band(s) but the image has "
                             f"{nb} plane(s) (shape {data.shape}); give one name per plane")
        if found is not None and found != given:
            raise ValueError(f"bands={given} disagrees with the bands {found} recorded in "
                             "the input; drop bands= or fix the input's BANDn cards")
        names = given
    elif found is not None:
        if len(found) != nb:
            raise ValueError(f"the input records {len(found)} band(s) {found} but has {nb} "
                             f"plane(s) (shape {data.shape}); fix its BANDS/BANDn cards or "
                             "pass bands= with one name per plane")
        names = found
    else:
        raise ValueError(f"the band names of this {nb}-plane image are not recorded in it "
                         f"(no BAND0..BAND{nb - 1} or BANDS keywords); pass bands=, "
                         f"e.g. bands={'grz'[:nb] if nb <= 3 else 'grizy'[:nb]!r}")
    filters = _header_filters(header, names)
    if given_filters is not None:
        if _filter_cards_of(header) and filters != given_filters:
            raise ValueError(f"bands={list(given_filters)} disagrees with the filters "
                             f"{list(filters)} recorded in the input (FILTERn cards); drop "
                             "bands= or fix the input's FILTERn cards")
        filters = given_filters

    # unit and zero point
    unit_source = None if in_unit is None else f"the input's unit {in_unit}"
    if in_unit is None and header is not None and "BUNIT" in header and str(
            header["BUNIT"]).strip():
        in_unit = _parse_unit(header["BUNIT"])
        unit_source = f"BUNIT={str(header['BUNIT']).strip()!r}"
    if unit is not None:
        unit = _parse_unit(unit)
        if in_unit is not None and in_unit != unit:
            raise ValueError(f"unit={unit} disagrees with the input's unit {in_unit}; drop "
                             "unit= (the input's unit is used) or fix the input's unit")
        in_unit = unit
        unit_source = unit_source or f"unit={str(unit)!r}"
    zp, zp_source = _zero_point(header, zero_point)
    if zp is not None:
        factor = np.float32(_zero_point_factor(zp, zp_source, in_unit, unit_source))
        conv = np.asarray(data, dtype=np.float32) * factor
        if uncert is not None:
            uncert = np.asarray(np.broadcast_to(uncert, data.shape), np.float32) * factor
    else:
        if in_unit is None:
            if from_fits and not _documented_nanomaggy(header):
                warnings.warn("the FITS header has no BUNIT card and no zero point (MAGZERO, "
                              "MAGZP, PHOTZP, FLUXMAG0): the pixel values are taken to be "
                              "nanomaggies per pixel; pass unit= (or zero_point=) to say "
                              "what they are", AstroSBGMInputWarning)
            in_unit = u.nanomaggy
        conv = as_nanomaggy(data, in_unit)
        if uncert is not None:
            uncert = as_nanomaggy(np.broadcast_to(uncert, data.shape),
                                  in_unit if unc_unit is None else unc_unit)

    # WCS
    if in_wcs is None and header is not None and not isinstance(header, dict):
        in_wcs = _wcs_from_header(header)
    elif in_wcs is None and isinstance(header, dict) and "CTYPE1" in header:
        in_wcs = _wcs_from_header(fits.Header(
            {k: v for k, v in header.items() if isinstance(k, str) and len(k) <= 8}))
    in_wcs = _celestial(in_wcs)
    if in_wcs is None and wcs is not None:
        in_wcs = _celestial(wcs)
        if in_wcs is None:
            raise ValueError("wcs= has no celestial axes; give a celestial WCS (RA/Dec)")

    # mask and non-finite pixels
    if mask is not None:
        try:
            mask = np.broadcast_to(np.asarray(mask, dtype=bool), data.shape).copy()
        except ValueError:
            raise ValueError(f"the mask has shape {np.shape(mask)} but the image "
                             f"{data.shape}; give a mask of the image's shape") from None
    bad = ~np.isfinite(conv)
    if bad.any():
        if nonfinite == "raise":
            raise ValueError(f"the image has {int(bad.sum())} non-finite pixel(s) of "
                             f"{bad.size}; mask them (nonfinite='mask') or replace them")
        mask = bad if mask is None else (mask | bad)
        conv = np.where(bad, np.float32(0), conv)

    out = CCDData(conv, unit=u.nanomaggy, wcs=in_wcs, mask=mask,
                  uncertainty=None if uncert is None else StdDevUncertainty(uncert),
                  meta=_copy_meta(header))
    _set_band_cards(out.meta, names, filters)
    out.meta["BUNIT"] = "nanomaggy"
    if zp is not None:
        out.meta["ZPIN"] = (float(zp), "AB zero point of the input, now in nanomaggy")
    return out


def _stack_planes(planes, names, unit, wcs, nonfinite, zero_point=None):
    if any(n is None for n in names):
        raise ValueError("per-band images need band names: give a dict {band: image}, set "
                         "meta['BAND'] on each, or pass bands=")
    names, filters = _parse_band_spec([str(n) for n in names])
    specs = names if filters is None else filters
    read = [read_image(p, bands=[b], unit=unit, wcs=wcs, nonfinite=nonfinite,
                       zero_point=zero_point) for p, b in zip(planes, specs)]
    shapes = {r.shape for r in read}
    if len(shapes) != 1:
        raise ValueError(f"per-band images have different shapes {sorted(shapes)}; "
                         "reproject them onto one grid first")
    data = np.concatenate([r.data for r in read])
    masks = [r.mask if r.mask is not None else np.zeros(r.shape, bool) for r in read]
    mask = np.concatenate(masks) if any(r.mask is not None for r in read) else None
    unc = None
    if all(r.uncertainty is not None for r in read):
        unc = StdDevUncertainty(np.concatenate([r.uncertainty.array for r in read]))
    first_wcs = next((r.wcs for r in read if r.wcs is not None), None)
    meta = read[0].meta.copy()
    for key in ("BAND", "FILTER"):
        meta.pop(key, None)
    out = CCDData(data, unit=u.nanomaggy, wcs=first_wcs, mask=mask, uncertainty=unc, meta=meta)
    _set_band_cards(out.meta, names, [_header_filters(r.meta, r.meta["BANDS"].split(","))[0]
                                      for r in read])
    return out


def expand_paths(spec):
    """The FITS files a path stands for: a directory's FITS files or a glob's matches, sorted.

    Raises
    ------
    ValueError
        For a directory without FITS files or a pattern that matches nothing.
    """
    return _expand_paths(spec)


def _expand_paths(spec):
    spec = str(spec)
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir()
                       if f.is_file() and f.name.lower().endswith(_FITS_SUFFIXES))
        if not files:
            raise ValueError(f"the directory {spec!r} holds no FITS files "
                             f"(looked for {', '.join(_FITS_SUFFIXES)})")
        return files
    if not p.exists() and any(c in spec for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(spec) if Path(f).is_file())
        if not files:
            raise ValueError(f"the pattern {spec!r} matches no file; check the directory "
                             "and the pattern")
        return files
    return [p]


def _separate_planes(images, bands):
    """Whether a list of 2-D NDData is one per-band image (True) or many images."""
    if bands is not None:
        return len(parse_bands(bands)) == len(images)
    names = [_plane_band(p) for p in images]
    return len(images) > 1 and None not in names and len(set(map(str, names))) == len(names)


def read_images(images, bands=None, unit=None, nonfinite="mask", zero_point=None):
    """Read many images into a list of canonical `CCDData`.

    Parameters
    ----------
    images : object
        One image in any form `read_image` accepts, a list of them, a
        directory (every FITS file in it, sorted by name), a glob pattern
        (``"cutouts/*.fits"``), or a 4-D array ``(n, band, y, x)`` with
        ``bands=`` given.  A list of 2-D `CCDData` is one multi-band image
        when its band names (``bands=`` or each ``meta['BAND']``) are one per
        element and all different, otherwise a list of single-band images.
    bands, unit, nonfinite, zero_point
        As for `read_image`, applied to every image.

    Returns
    -------
    list of `~astropy.nddata.CCDData`

    Raises
    ------
    ValueError
        If no image is found (empty list, empty directory, a pattern that
        matches nothing), plus everything `read_image` raises.
    """
    def one(item):
        return read_image(item, bands=bands, unit=unit, nonfinite=nonfinite,
                          zero_point=zero_point)

    if isinstance(images, np.ndarray) and images.ndim == 4:
        out = [one(a) for a in images]
    elif _looks_like_path(images):
        out = [one(p) for p in _expand_paths(images)]
    elif isinstance(images, (list, tuple)) and holds_many(images, bands):
        out = []
        for item in images:
            if _looks_like_path(item):
                out.extend(one(p) for p in _expand_paths(item))
            else:
                out.append(one(item))
    else:
        out = [one(images)]
    if not out:
        raise ValueError("no images were given (the input is empty); give a FITS path, a "
                         "directory, a glob pattern, or a list of images")
    return out


# --------------------------------------------------------------------------- raw pixels
def read_raw(image, hdu=None, unit=None):
    """The input's own pixel array and unit, before any conversion.

    What bit-exact inpainting needs: the pixels exactly as stored (dtype and
    unit kept), where `read_image` returns float32 nanomaggies.

    Parameters
    ----------
    image : object
        A FITS path, HDU, HDUList, `~astropy.nddata.NDData`, ``(array,
        WCS)`` / ``(array, Header)`` tuple or array.
    hdu : int or str, optional
        The HDU of a file or HDUList (as for `read_image`).
    unit : str or `~astropy.units.UnitBase`, optional
        The unit of the values (default: the input's own, ``BUNIT``, else
        nanomaggy).

    Returns
    -------
    data : `numpy.ndarray` or None
        ``(band, y, x)`` (a 2-D input gets a leading axis of 1), or None for
        an input whose raw pixels cannot be taken (a file that cannot be
        read, a dict of planes, non-numeric data): use `read_image` then.
    unit : `~astropy.units.UnitBase` or None
        The unit of ``data``.
    """
    data, header, in_unit = None, None, None
    if _looks_like_path(image):
        try:
            with fits.open(image, memmap=False, mode="readonly") as hdul:
                data, header = _from_hdulist(hdul, hdu)[:2]
                data, header = np.array(data), header.copy()
        except (OSError, ValueError):
            return None, None
    elif isinstance(image, fits.HDUList):
        data, header = _from_hdulist(image, hdu)[:2]
    elif isinstance(image, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        data, header = image.data, image.header
    elif isinstance(image, NDData):
        data, in_unit = image.data, image.unit
        header = image.meta or {}
    elif isinstance(image, tuple) and len(image) == 2:
        data = image[0]
        header = image[1] if isinstance(image[1], fits.Header) else None
    elif isinstance(image, np.ndarray):
        data = image
    if data is None:
        return None, None
    data = np.asarray(data)
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        return None, None
    if unit is not None:
        in_unit = _parse_unit(unit)
    if in_unit is None and header is not None and "BUNIT" in header and str(
            header["BUNIT"]).strip():
        in_unit = _parse_unit(header["BUNIT"])
    return (data if data.ndim == 3 else data[None]), (in_unit or u.nanomaggy)


# --------------------------------------------------------------------------- collections
def holds_many(images, bands=None):
    """Whether an input is a collection of images (else one image).

    The one-or-many rule of `read_images`: a 4-D array, a directory, a glob
    pattern and a list are many images; an ``(array, WCS)`` pair and a list
    of 2-D `~astropy.nddata.NDData` that is one per-band image (band names,
    from ``bands=`` or each ``meta['BAND']``, one per element and all
    different) are one.

    Parameters
    ----------
    images : object
        Anything `read_images` accepts.
    bands : str or sequence of str, optional
        As given to `read_images`.

    Returns
    -------
    bool
    """
    if isinstance(images, np.ndarray):
        return images.ndim == 4
    if _looks_like_path(images):
        return Path(images).is_dir() or (not Path(images).exists()
                                         and any(c in str(images) for c in "*?["))
    if isinstance(images, (list, tuple)):
        if len(images) == 2 and isinstance(images[1], (WCS, fits.Header)):
            return False
        return not (_is_plane_list(images) and _separate_planes(images, bands))
    return False


def _as_numpy(x):
    """A numpy array from an array-like, a Quantity or a torch tensor (duck-typed)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    if isinstance(x, u.Quantity):
        x = x.value
    return np.asarray(x)


def as_batch(images, bands=None, *, dtype=np.float64, name="images"):
    """Stack images into one ``(n, band, y, x)`` array with their band names.

    The one stacker of the package (metrics, figures, artefacts): no unit
    conversion, no regridding; the pixels are taken as they are.

    Parameters
    ----------
    images : array-like, tensor, `~astropy.nddata.NDData` or list of them
        A ``(n, band, y, x)`` array (or torch tensor, or Quantity); one
        image ``(band, y, x)`` or ``(y, x)``; an `NDData`; or a list of
        single images (arrays, tensors, `NDData`; 2-D or 3-D) of one shape.
    bands : str or sequence of str, optional
        Band names of the planes; default: those recorded in the images'
        ``meta`` (see `image_bands`), else None.
    dtype : numpy dtype
        Of the returned array (default float64).
    name : str
        What the images are called in error messages.

    Returns
    -------
    data : `numpy.ndarray`
        ``(n, band, y, x)`` of ``dtype`` (a new array).
    names : tuple of str or None
        The band names.

    Raises
    ------
    ValueError
        For an empty input, images of different shapes or band names, a
        shape that is not one of the above, or ``bands=`` naming another
        number of planes.
    """
    def planes(item):
        if isinstance(item, NDData):
            arr = np.asarray(item.data)
            found = _bands_from_header(item.meta or {}, arr.shape[0] if arr.ndim == 3 else 1)
        else:
            arr, found = _as_numpy(item), None
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"{name}: an image must have shape (band, y, x) or (y, x), got "
                             f"shape {arr.shape}")
        return arr, found

    if isinstance(images, NDData):
        items = [images]
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        arr = _as_numpy(images)
        if arr.ndim == 4:
            items = None
        elif arr.ndim in (2, 3):
            items = [arr]
        else:
            raise ValueError(f"{name} must be (y, x), (band, y, x), (n, band, y, x) or a list "
                             f"of images, got shape {arr.shape}")
    if items is None:
        data, found = arr, None
        if data.shape[0] == 0:
            raise ValueError(f"{name} is empty: give at least one image")
    else:
        if not items:
            raise ValueError(f"{name} is empty: give at least one image")
        got = [planes(item) for item in items]
        shapes = sorted({a.shape for a, _ in got})
        if len(shapes) != 1:
            raise ValueError(f"{name} holds images of different shapes {shapes}; bring them "
                             "onto one grid (cut them to one shape) first")
        named = sorted({n for _, n in got if n is not None}, key=str)
        if len(named) > 1 and bands is None:
            raise ValueError(f"{name}: the images name different bands {named}; pass bands= "
                             "to name the planes of all of them")
        found = named[0] if named else None
        data = np.stack([a for a, _ in got])
    names = found
    if bands is not None:
        names = parse_bands(bands)
        if len(names) != data.shape[1]:
            raise ValueError(f"bands {names} name {len(names)} band(s) but the images have "
                             f"{data.shape[1]} plane(s); pass bands= with one name per plane")
    return np.array(data, dtype=dtype), (None if names is None else tuple(names))


# --------------------------------------------------------------------------- pictures
#: Dominant wavelengths given to the channels of a picture (``mapping="wavelength"``).
RGB_WAVELENGTHS = {"B": 465.0 * u.nm, "G": 532.0 * u.nm, "R": 630.0 * u.nm}

#: File name endings read as pictures rather than FITS.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def is_picture(image):
    """Whether ``image`` is a picture: a path ending in `PICTURE_SUFFIXES` or a PIL image."""
    if _looks_like_path(image):
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

    if _looks_like_path(picture):
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


def rgb_to_bands(rgb, bands, mapping="display"):
    """Map RGB intensities onto photometric bands.

    Parameters
    ----------
    rgb : array-like
        ``(y, x, 3)`` intensities, channels in R, G, B order.
    bands : str or sequence of str
        The bands wanted (e.g. a model's ``"grz"``).
    mapping : {"display", "wavelength"}
        ``"display"``: the inverse of the colour composites of
        `astro_sbgm.visualization` (the bands sorted by wavelength are
        spread evenly from blue to red, each takes the channel at its place,
        linear between channels: for grz, g <- B, r <- G, z <- R).
        ``"wavelength"``: channels at `RGB_WAVELENGTHS` and each band
        interpolated in ``log(wavelength)``, clamped at the ends.

    Returns
    -------
    `numpy.ndarray`
        ``(band, y, x)`` float32 intensities.

    Raises
    ------
    ValueError
        For an unknown mapping or an array that is not ``(y, x, 3)``.
    """
    from .bands import BAND_WAVELENGTHS, interpolation_weights

    rgb = np.asarray(rgb, np.float64)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (y, x, 3), got {rgb.shape}")
    names = parse_bands(bands)
    lam = np.array([BAND_WAVELENGTHS[b].to_value(u.nm) for b in names])
    if mapping == "display":
        rank = np.argsort(np.argsort(lam))
        pos = rank / (len(names) - 1) if len(names) > 1 else np.full(1, 0.5)
        w = interpolation_weights(pos, [1.0, 0.5, 0.0])            # R, G, B
    elif mapping == "wavelength":
        chans = [RGB_WAVELENGTHS[c].to_value(u.nm) for c in "RGB"]
        w = interpolation_weights(np.log(lam), np.log(chans))
    else:
        raise ValueError(f"mapping must be 'display' or 'wavelength', got {mapping!r}")
    return np.einsum("bc,yxc->byx", w, rgb).astype(np.float32)


# --------------------------------------------------------------------------- masks
def _mask_values(mask, hdu):
    """The pixel values of a mask in any accepted form, as an array."""
    if _looks_like_path(mask):
        path = Path(mask)
        if not path.is_file():
            raise FileNotFoundError(f"no such mask file: {str(path)!r}; check the path")
        try:
            hdul = fits.open(path, memmap=False)
        except OSError as err:
            raise OSError(f"cannot read {str(path)!r} as a FITS file ({err})") from None
        with hdul:
            return np.array(_mask_hdu(hdul, hdu).data)
    if isinstance(mask, fits.HDUList):
        return np.asarray(_mask_hdu(mask, hdu).data)
    if isinstance(mask, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return np.asarray(mask.data)
    if isinstance(mask, NDData):
        return np.asarray(mask.data)
    if isinstance(mask, (np.ndarray, list, tuple)):
        return np.asarray(mask)
    raise TypeError(f"cannot read a mask from a {type(mask).__name__}; give a FITS path, an "
                    "HDU, an HDUList, an NDData or an array")


def _mask_hdu(hdul, hdu):
    if hdu is None:
        found = next((h for h in hdul if getattr(h, "is_image", True) and h.data is not None),
                     None)
        if found is None:
            raise ValueError("the mask file holds no image data; give a file with an image HDU")
        return found
    try:
        found = hdul[hdu]
    except (KeyError, IndexError):
        raise ValueError(f"hdu={hdu!r} is not in the mask file, which holds HDUs "
                         f"{[h.name for h in hdul]}; give an index or one of these names") from None
    if found.data is None:
        raise ValueError(f"hdu={hdu!r} of the mask file holds no data")
    return found


def _bit_value(bit, definitions, label):
    if isinstance(bit, (bool, np.bool_)):
        raise TypeError(f"a mask bit must be a name or an integer value, got {bit!r}")
    if isinstance(bit, (int, np.integer)):
        if bit <= 0:
            raise ValueError(f"a mask bit value must be a positive integer (2**bit, e.g. "
                             f"0x2), got {bit}")
        return None, int(bit)
    if isinstance(bit, str):
        key = bit.strip().upper()
        if key not in definitions:
            raise ValueError(f"unknown mask bit {bit!r}; the {label} bits are "
                             f"{', '.join(definitions)} (or give integer values)")
        return key, int(definitions[key])
    raise TypeError(f"a mask bit must be a name or an integer value, got {bit!r}")


def check_mask_bits(bits, definitions=None):
    """Check mask bits before any work: a list of names or values, each one known.

    Parameters
    ----------
    bits : sequence of str or int, str or int
        As `read_mask` takes them.
    definitions : dict, optional
        ``{name: value}``; default the Legacy Survey MASKBITS.

    Returns
    -------
    list
        The bits, as a list.

    Raises
    ------
    ValueError
        For no bits, an unknown bit name (named, with the known ones) or a
        value that is not a positive integer.
    TypeError
        For a bit that is neither a name nor an integer.
    """
    if definitions is None:
        from ._maskbits import LEGACY_SURVEY_MASKBITS as definitions
        label = "Legacy Survey MASKBITS"
    else:
        definitions = {str(k).upper(): int(v) for k, v in dict(definitions).items()}
        label = "given"
    bits = [bits] if isinstance(bits, (str, int, np.integer)) else list(bits)
    if not bits:
        raise ValueError("mask_bits is empty; give at least one bit (e.g. ('BRIGHT', "
                         "'SATUR_G')), or None to fill every non-zero pixel of the mask")
    for bit in bits:
        _bit_value(bit, definitions, label)
    return bits


def _band_of_bit(name):
    """The band a per-band bit (``SATUR_G``, ``ALLMASK_Z``) refers to, or None."""
    if name is None or "_" not in name:
        return None
    suffix = name.rsplit("_", 1)[1].lower()
    return suffix if len(suffix) == 1 and suffix in "ugrizy" else None


def read_mask(mask, bits=None, hdu=None, bands=None, definitions=None, shape=None, wcs=None):
    """Read a mask, or select bits of a bit-mask image, as a boolean array.

    Parameters
    ----------
    mask : str, path, HDU, HDUList, NDData, array or region
        A mask image (non-zero = bad) or a bit-mask image such as a Legacy
        Survey ``legacysurvey-<brick>-maskbits.fits.fz`` file.  For a file
        or an HDUList the first HDU with data is read (the optical
        ``MASKBITS`` plane, HDU 1, of a maskbits file) unless ``hdu`` says
        otherwise (HDU 2 and 3 hold the WISE masks).  With ``shape``, a
        ``regions`` shape too: a pixel region, or a sky region with
        ``wcs`` (pixels whose centre is inside are bad).
    bits : sequence of str or int, str or int, optional
        The bits that make a pixel bad: names from ``definitions`` (case
        insensitive, e.g. ``["BRIGHT", "SATUR_G", "ALLMASK_R"]``) or integer
        values (``0x2``, values may combine several bits).  Default: every
        non-zero pixel is bad.
    hdu : int or str, optional
        The HDU of a file or HDUList to read.
    bands : str or sequence of str, optional
        Return one plane per band, shape ``(band, y, x)``: a per-band bit
        (a name ending in ``_<band>``, like ``SATUR_G``) masks only its own
        band's plane; every other bit masks all planes.  Default: one 2-D
        mask for all bands.
    definitions : dict, optional
        ``{name: value}`` of the bit names; default
        `astro_sbgm.surveys.LEGACY_SURVEY_MASKBITS` (Legacy Survey DR10,
        which holds the DR9 bits).
    shape : tuple of int, optional
        ``(band, y, x)`` of the image the mask belongs to: the mask is
        checked against it and returned with this shape (a ``(y, x)`` mask
        applies to every band).
    wcs : `~astropy.wcs.WCS`, optional
        The image's celestial WCS, for a sky region.

    Returns
    -------
    `numpy.ndarray` of bool
        `True` where a pixel is bad; 2-D, or ``(band, y, x)`` with ``bands``
        (or ``shape``).

    Raises
    ------
    ValueError
        For an unknown bit name (named, with the known ones), a bit value
        that is not a positive integer, ``bits=`` on an image that is not
        integer (or on a region), an HDU that is not in the file, a mask
        whose shape does not fit ``shape``, or a sky region without ``wcs``.
    TypeError
        For an input of a type not listed above.
    FileNotFoundError
        For a path that does not exist.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_sbgm.io import read_mask
    >>> maskbits = np.array([[0, 0x2], [0x4, 0x2 | 0x20]])   # BRIGHT, SATUR_G, ALLMASK_G
    >>> read_mask(maskbits, bits=["BRIGHT"]).astype(int)
    array([[0, 1],
           [0, 1]])
    >>> read_mask(maskbits, bits=["SATUR_G"], bands="gr").astype(int)
    array([[[0, 0],
            [1, 0]],
    <BLANKLINE>
           [[0, 0],
            [0, 0]]])
    """
    if shape is not None:
        return _mask_on_grid(mask, tuple(shape), wcs, bits, hdu, bands, definitions)
    values = _mask_values(mask, hdu)
    if values.ndim not in (2, 3) or values.size == 0:
        raise ValueError(f"a mask must be a 2-D (or (band, y, x)) image, got shape "
                         f"{values.shape}")
    names = None if bands is None else parse_bands(bands)
    if bits is None:
        out = values != 0
        if names is not None and out.ndim == 2:
            out = np.broadcast_to(out, (len(names),) + out.shape).copy()
        return out
    if definitions is None:
        from ._maskbits import LEGACY_SURVEY_MASKBITS as definitions
        label = "Legacy Survey MASKBITS"
    else:
        definitions = {str(k).upper(): int(v) for k, v in dict(definitions).items()}
        label = "given"
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        raise ValueError(f"bits= selects bits of an integer bit-mask image, but the mask is "
                         f"{values.dtype}; drop bits= to use it as a plain mask")
    if isinstance(bits, (str, int, np.integer)):
        bits = [bits]
    chosen = [_bit_value(b, definitions, label) for b in bits]
    if not chosen:
        raise ValueError("bits= is empty; give at least one bit (or bits=None for every "
                         "non-zero pixel)")
    values = values.astype(np.int64)
    if names is None:
        combined = 0
        for _, value in chosen:
            combined |= value
        return (values & combined) != 0
    if values.ndim == 3 and values.shape[0] != len(names):
        raise ValueError(f"bands={names} names {len(names)} band(s) but the mask has "
                         f"{values.shape[0]} plane(s)")
    planes = []
    for i, band in enumerate(names):
        combined = 0
        for name, value in chosen:
            if _band_of_bit(name) in (None, band):
                combined |= value
        plane = values[i] if values.ndim == 3 else values
        planes.append((plane & combined) != 0)
    return np.stack(planes)


def _is_region(mask):
    return hasattr(mask, "to_pixel") or hasattr(mask, "to_mask")


def _mask_on_grid(mask, shape, wcs, bits, hdu, bands, definitions):
    """`read_mask` with ``shape=``: a ``shape`` boolean mask (regions accepted)."""
    nb, ny, nx = shape
    if bits is not None:
        if _is_region(mask):
            raise ValueError("mask_bits selects bits of a bit-mask image (a Legacy Survey "
                             "maskbits file or an integer array), not of a region; drop "
                             "mask_bits or give the maskbits image as mask")
        arr = read_mask(mask, bits=bits, hdu=hdu, bands=bands, definitions=definitions)
        if arr.shape[-2:] != (ny, nx):
            raise ValueError(f"the mask has shape {arr.shape[-2:]} but the image is "
                             f"{tuple(shape)} (band, y, x); give a ({ny}, {nx}) bit-mask "
                             "image on the image's grid")
        return np.array(np.broadcast_to(arr, shape) if arr.ndim == 2 else arr, dtype=bool)
    if hasattr(mask, "to_pixel") and not hasattr(mask, "to_mask"):
        if wcs is None:
            raise ValueError("a sky region needs an image with a celestial WCS; give a pixel "
                             "region or a boolean array instead")
        mask = mask.to_pixel(wcs)
    if hasattr(mask, "to_mask"):      # a regions PixelRegion
        img = mask.to_mask(mode="center").to_image((ny, nx))
        arr = np.zeros((ny, nx), bool) if img is None else np.asarray(img) > 0
    else:
        readable = (fits.HDUList, fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU, NDData)
        if not (_looks_like_path(mask) or isinstance(mask, readable)):
            mask = np.asarray(mask)
            if mask.dtype == object:
                raise TypeError(f"cannot use a {type(mask).__name__} as a mask; give a "
                                "boolean array, a FITS mask file or HDU, a CCDData or a "
                                "regions shape")
        arr = _mask_values(mask, hdu) != 0
    if arr.shape in ((ny, nx), (1, ny, nx)):
        arr = np.broadcast_to(arr, shape)
    if arr.shape != tuple(shape):
        raise ValueError(f"the mask has shape {arr.shape} but the image is {tuple(shape)} "
                         f"(band, y, x); give a ({ny}, {nx}) mask (all bands) or a "
                         f"{tuple(shape)} one")
    return np.array(arr, dtype=bool)


# --------------------------------------------------------------------------- building
def make_image(data, bands, wcs=None, mask=None, uncertainty=None, flags=None, cards=None,
               unit=u.nanomaggy, meta=None, filters=None):
    """Build an output image: the one place the band and unit cards are written.

    Every producer of the package (`read_image`, samples, inpainting,
    transfer, the mock surveys) builds its `~astropy.nddata.CCDData` here, so
    that ``BANDS``, ``BAND0``, ``BAND1``, ... (band letters), ``FILTER0``,
    ``FILTER1``, ... (full filter names, ``"decam:g"``) and ``BUNIT`` are
    written one way.

    Parameters
    ----------
    data : array-like
        ``(band, y, x)`` pixel values (kept as given: no copy of the dtype).
    bands : str or sequence of str
        Band letters, or full filter names (``"sdss:g,sdss:r,sdss:z"``).
    wcs : `~astropy.wcs.WCS`, optional
        The celestial WCS.
    mask : array-like of bool, optional
        `True` = bad pixel.
    uncertainty : array-like or `~astropy.nddata.NDUncertainty`, optional
        A standard deviation per pixel (arrays become
        `~astropy.nddata.StdDevUncertainty`).
    flags : array-like, optional
        Per-pixel integer flags (the package's outputs: uint8, 1 = pixel
        generated; survey images: their mask bits), written by `write_image`
        as a ``FLAGS`` extension.
    cards : dict, optional
        Further cards, ``{key: value}`` or ``{key: (value, comment)}``,
        added in order after the band and unit cards (see
        `provenance_cards`).
    unit : str or `~astropy.units.UnitBase`
        The unit of ``data`` (default nanomaggy).
    meta : `~astropy.io.fits.Header` or dict, optional
        Cards to start from (copied; their band cards are replaced).
    filters : sequence of str, optional
        Full filter names of the planes when ``bands`` holds letters
        (default: the Legacy Survey filters of the letters).

    Returns
    -------
    `~astropy.nddata.CCDData`
        With ``meta`` a `~astropy.io.fits.Header`.

    Raises
    ------
    ValueError
        If ``bands`` (or ``filters``) do not name one band per plane.
    """
    letters, named = _parse_band_spec(bands)
    if filters is not None:
        filters = tuple(getattr(f, "name", f) for f in filters)
        if filters != tuple(LEGACY_SURVEY_FILTERS[b] for b in letters):
            # only other surveys' filters need their curves (speclite) to be checked
            filters = tuple(f.name for f in parse_filters(list(filters)))
            if _letters_of_filters(filters, "filters=") != letters:
                raise ValueError(f"filters={list(filters)} do not match the bands "
                                 f"{list(letters)}")
    filters = named if filters is None else filters
    data = np.asarray(data)
    if data.ndim != 3 or data.shape[0] != len(letters):
        raise ValueError(f"bands {list(letters)} name {len(letters)} band(s) but the data have "
                         f"shape {data.shape}; give (band, y, x) data with one name per plane")
    unit = _parse_unit(unit) if unit is not None else u.nanomaggy
    if isinstance(meta, fits.Header):
        header = meta.copy()
    else:
        header = fits.Header()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            for k, v in (meta or {}).items():
                try:
                    header[k] = v
                except (ValueError, TypeError, KeyError):
                    pass
    _set_band_cards(header, letters, filters)
    header["BUNIT"] = "nanomaggy" if unit == u.nanomaggy else unit.to_string()
    for key, value in (cards or {}).items():
        header[key] = value
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
    if uncertainty is not None and not hasattr(uncertainty, "uncertainty_type"):
        uncertainty = StdDevUncertainty(np.asarray(uncertainty))
    out = CCDData(data, unit=unit, wcs=wcs, mask=mask, uncertainty=uncertainty, meta=header)
    if flags is not None:
        out.flags = np.asarray(flags)
    return out


def provenance_cards(simulated=True, training_steps=None, origin=True, **cards):
    """The provenance cards of the package's outputs, in one place.

    Parameters
    ----------
    simulated : bool or None
        ``SIMULATD``: True for images a model generated, False for data
        (partly) observed; None writes no ``SIMULATD`` card.
    training_steps : int, optional
        ``TRSTEPS``, the training steps of the model used.
    origin : bool
        Write ``ORIGIN`` (False keeps an input's own, for outputs that are
        the input with some pixels filled).
    **cards
        Further cards, ``KEY=value`` or ``KEY=(value, comment)``, after
        these.

    Returns
    -------
    dict
        ``ORIGIN`` (``"astro_sbgm <version>"``, with ``origin``), then ``SIMULATD`` and
        ``TRSTEPS`` when given, then ``cards``.
    """
    out = {"ORIGIN": f"astro_sbgm {__version__}"} if origin else {}
    if simulated is not None:
        out["SIMULATD"] = (bool(simulated), "generated by a diffusion model" if simulated
                           else "observed data (generated pixels are flagged)")
    if training_steps is not None:
        out["TRSTEPS"] = (int(training_steps), "training steps of the model")
    out.update(cards)
    return out


# --------------------------------------------------------------------------- writing
def write_image(image, path, overwrite=False, draws=None):
    """Write a canonical image to FITS in the Legacy Survey cutout layout.

    The primary HDU holds the ``(band, y, x)`` cube with ``BUNIT``,
    ``BAND0``, ``BAND1``, ..., ``FILTER0``, ``FILTER1``, ... and the
    celestial WCS; a ``MASK`` extension (uint8, 1 = bad), an ``UNCERT``
    extension (standard deviation), a ``FLAGS`` extension (``image.flags``:
    uint8, 1 = pixel generated by astro_sbgm; or a survey image's mask bits)
    and ``DRAW`` extensions
    (``draws``) follow when there are any.  Every extension is written to a
    temporary file at once and the file renamed, so an existing file is
    never left half-written.

    Parameters
    ----------
    image : object
        Anything `read_image` accepts (normally a canonical `CCDData`).
    path : str or path-like
        Output file name.
    overwrite : bool
        Replace an existing file.
    draws : sequence of `~astropy.nddata.CCDData`, optional
        Single draws (as `astro_sbgm.inpainting.inpaint` and
        `astro_sbgm.transfer.transfer` return them with
        ``return_draws=True``): written as ``DRAW`` extensions (``EXTVER``
        1, 2, ...) in nanomaggy, each with its ``DRAWIDX``.

    Returns
    -------
    `pathlib.Path`
        The file written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    flags = getattr(image, "flags", None)
    image = image if _is_canonical(image) else read_image(image)
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it")
    header = fits.Header()
    if image.wcs is not None:
        # 17 significant digits, so that the WCS reads back bit for bit
        header.update(image.wcs.to_header(relax=_WCS_WRITE_RELAX))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for k, v in _copy_meta(image.meta).items():
            if k not in header:
                header[k] = v
    header["BUNIT"] = ("nanomaggy", "flux per pixel")
    primary = fits.PrimaryHDU(np.asarray(image.data, dtype=np.float32), header=header)
    hdus = [primary]
    if image.mask is not None:
        hdus.append(fits.ImageHDU(np.asarray(image.mask, dtype=np.uint8), name="MASK"))
    if image.uncertainty is not None:
        uh = fits.ImageHDU(np.asarray(image.uncertainty.represent_as(StdDevUncertainty).array,
                                      dtype=np.float32), name="UNCERT")
        uh.header["UTYPE"] = "StdDevUncertainty"
        uh.header["BUNIT"] = "nanomaggy"
        hdus.append(uh)
    if flags is not None:
        arr = np.asarray(flags)
        fh = fits.ImageHDU(arr.astype(np.uint8) if arr.dtype == bool else arr, name="FLAGS")
        fh.header["COMMENT"] = ("per-pixel flags: 1 = pixel generated by astro_sbgm (or the "
                                "survey's mask bits)")
        hdus.append(fh)
    for i, draw in enumerate(draws or []):
        dh = fits.ImageHDU(as_nanomaggy(np.asarray(draw.data), draw.unit or u.nanomaggy),
                           name="DRAW", ver=i + 1)
        dh.header["BUNIT"] = ("nanomaggy", "flux per pixel")
        dh.header["DRAWIDX"] = (int(draw.meta.get("DRAWIDX", i)), "index of this draw (0-based)")
        dh.header["COMMENT"] = ("one draw: a galaxy with its sky noise; the primary HDU holds "
                                "the mean of the draws")
        hdus.append(dh)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fits.HDUList(hdus).writeto(tmp, overwrite=True))
    return path


def is_canonical(image):
    """Whether an image is already in the canonical form `read_image` returns.

    A `~astropy.nddata.CCDData` of shape ``(band, y, x)`` in nanomaggy with
    ``meta['BANDS']``; such images need no reading.
    """
    return (isinstance(image, CCDData) and image.ndim == 3 and image.unit == u.nanomaggy
            and "BANDS" in image.meta)


_is_canonical = is_canonical


# --------------------------------------------------------------------------- model grid
def to_model_grid(image, size, pixel_scale=LEGACY_SURVEY_PIXEL_SCALE, rtol=1e-3):
    """Bring a canonical image onto a model's ``size x size`` pixel grid.

    An image already ``size x size`` at ``pixel_scale`` (within ``rtol``, or
    with no WCS) is returned unchanged.  An image at ``pixel_scale`` but of
    another size is cut (or padded) about its centre pixel-exactly, with no
    resampling: its pixels keep their values and the WCS is shifted (when
    the size difference is odd, the centre moves by half a pixel).  Otherwise
    the image is reprojected with `reproject.reproject_adaptive`
    (``conserve_flux=True``, so per-pixel fluxes keep the total flux) onto a
    north-up TAN grid of ``size x size`` pixels at ``pixel_scale`` centred on
    the image centre; the mask is reprojected too (a model pixel is masked
    when any masked input pixel contributes to it).  Model pixels not covered
    by the input are masked (and set to 0) with an `AstroSBGMInputWarning`.

    Parameters
    ----------
    image : `~astropy.nddata.CCDData`
        A canonical image.
    size : int
        The model's image size in pixels.
    pixel_scale : `~astropy.units.Quantity`
        The model's pixel scale.
    rtol : float
        Relative tolerance on the pixel scale.

    Returns
    -------
    `~astropy.nddata.CCDData`

    Raises
    ------
    ValueError
        If the image has the wrong size and no celestial WCS to reproject with.
    """
    scale = u.Quantity(pixel_scale, u.arcsec)
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if not scale.value > 0:
        raise ValueError(f"pixel_scale must be > 0 arcsec, got {scale}")
    ny, nx = image.shape[-2:]
    if image.wcs is None:
        if (ny, nx) == (size, size):
            return image
        raise ValueError(f"the image is {ny}x{nx} pixels but the model works on {size}x{size} "
                         "and the image has no celestial WCS to reproject it with; attach a "
                         "WCS (wcs=...) or cut it to the model size")
    scales = proj_plane_pixel_scales(image.wcs.celestial) * 3600.0
    same_scale = bool(np.all(np.abs(scales / scale.to_value(u.arcsec) - 1) < rtol))
    if same_scale:
        return image if (ny, nx) == (size, size) else _cut_or_pad(image, size)
    from reproject import reproject_adaptive

    centre = image.wcs.pixel_to_world((nx - 1) / 2.0, (ny - 1) / 2.0)
    target = make_tan_wcs((size, size), scale, centre.icrs.ra.deg, centre.icrs.dec.deg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        data, footprint = reproject_adaptive((np.asarray(image.data, np.float64), image.wcs),
                                             target, shape_out=(size, size),
                                             conserve_flux=True, boundary_mode="strict")
    uncovered = ~(footprint > 0.99) | ~np.isfinite(data)
    out_mask = uncovered.copy()
    if image.mask is not None and image.mask.any():
        m, _ = reproject_adaptive((image.mask.astype(np.float64), image.wcs), target,
                                  shape_out=(size, size), boundary_mode="strict")
        out_mask |= np.nan_to_num(m, nan=1.0) > 0
    data = np.where(uncovered, 0.0, data).astype(np.float32)
    unc = None
    if image.uncertainty is not None:
        var, _ = reproject_adaptive((np.asarray(image.uncertainty.array, np.float64) ** 2,
                                     image.wcs), target, shape_out=(size, size),
                                    conserve_flux=True, boundary_mode="strict")
        unc = StdDevUncertainty(np.sqrt(np.nan_to_num(np.abs(var))).astype(np.float32))
    if uncovered.any():
        warnings.warn(f"{int(uncovered[0].sum())} pixel(s) per band of the {size}x{size} model "
                      "grid are not covered by the input image; they are set to 0 and masked",
                      AstroSBGMInputWarning)
    out = CCDData(data, unit=u.nanomaggy, wcs=target,
                  mask=np.broadcast_to(out_mask, data.shape).copy() if out_mask.any() else None,
                  uncertainty=unc, meta=image.meta.copy())
    return out


def _cut_or_pad(image, size):
    """Cut or zero-pad a same-scale image to ``size x size`` about its centre."""
    ny, nx = image.shape[-2:]
    oy, ox = (ny - size) // 2, (nx - size) // 2   # output pixel j <-> input pixel j + o
    ys, xs = slice(max(oy, 0), min(oy + size, ny)), slice(max(ox, 0), min(ox + size, nx))
    yd, xd = slice(ys.start - oy, ys.stop - oy), slice(xs.start - ox, xs.stop - ox)
    shape = (image.shape[0], size, size)

    def place(arr, fill, dtype):
        out = np.full(shape, fill, dtype=dtype)
        out[:, yd, xd] = arr[:, ys, xs]
        return out

    covered = place(np.zeros(image.shape, bool), True, bool)   # True = not covered
    mask = covered if image.mask is None else covered | place(image.mask, True, bool)
    data = place(image.data, 0.0, np.float32)
    unc = None
    if image.uncertainty is not None:
        unc = StdDevUncertainty(place(image.uncertainty.array, 0.0, np.float32))
    w = image.wcs.deepcopy()
    w.wcs.crpix = [w.wcs.crpix[0] - ox, w.wcs.crpix[1] - oy]
    w.pixel_shape = (size, size)
    if covered.any():
        warnings.warn(f"the image ({ny}x{nx}) is smaller than the model grid ({size}x{size}); "
                      f"{int(covered[0].sum())} pixel(s) per band are padded with 0 and "
                      "masked", AstroSBGMInputWarning)
    return CCDData(data, unit=image.unit, wcs=w, mask=mask if mask.any() else None,
                   uncertainty=unc, meta=image.meta.copy())
