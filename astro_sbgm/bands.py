"""Photometric bands known to the package.

Band names are single letters or short strings (``"g"``, ``"r"``, ``"z"``,
...).  A band set may be given as a string of single-letter names (``"grz"``)
or as a sequence of names (``["g", "r", "z"]``); `parse_bands` turns either into
a tuple.  Effective wavelengths are the pivot wavelengths of the DECam filters
used by the DESI Legacy Imaging Surveys (and of SDSS ugriz, WISE W1/W2 for the
rest), rounded to 1 nm; they are used to map images from other surveys or RGB
cartoons onto a model's bands.
"""

import astropy.units as u

__all__ = ["BAND_WAVELENGTHS", "LEGACY_SURVEY_PIXEL_SCALE", "parse_bands",
           "effective_wavelength"]

#: Effective (pivot) wavelengths of the known bands.
BAND_WAVELENGTHS = {
    "u": 356.0 * u.nm,
    "g": 482.0 * u.nm,
    "r": 642.0 * u.nm,
    "i": 784.0 * u.nm,
    "z": 917.0 * u.nm,
    "y": 1000.0 * u.nm,
    "W1": 3368.0 * u.nm,
    "W2": 4618.0 * u.nm,
}

#: Pixel scale of the DESI Legacy Imaging Surveys coadds.
LEGACY_SURVEY_PIXEL_SCALE = 0.262 * u.arcsec  # per pixel


def parse_bands(bands):
    """Turn a band specification into a tuple of band names.

    Parameters
    ----------
    bands : str or sequence of str
        ``"grz"`` (one letter per band) or ``["g", "r", "z"]``.  A
        comma-separated string (``"g,r,W1"``) is accepted too.

    Returns
    -------
    tuple of str

    Raises
    ------
    ValueError
        If the specification is empty, repeats a band, or names a band that
        is not in `BAND_WAVELENGTHS`.
    """
    if isinstance(bands, str):
        if "," in bands:
            names = tuple(b.strip() for b in bands.split(",") if b.strip())
        elif bands in BAND_WAVELENGTHS:
            names = (bands,)
        else:
            names = tuple(bands)
    else:
        try:
            names = tuple(str(b).strip() for b in bands)
        except TypeError:
            raise TypeError(f"bands must be a string such as 'grz' or a sequence "
                            f"of band names, got {bands!r}") from None
    if not names:
        raise ValueError("bands is empty: give at least one band, e.g. 'grz'")
    unknown = [b for b in names if b not in BAND_WAVELENGTHS]
    if unknown:
        raise ValueError(f"unknown band name(s) {unknown}; known bands are "
                         f"{sorted(BAND_WAVELENGTHS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"bands {names} name a band more than once")
    return names


def effective_wavelength(band):
    """Effective wavelength of one band as a `~astropy.units.Quantity`."""
    (name,) = parse_bands([band])
    return BAND_WAVELENGTHS[name]
