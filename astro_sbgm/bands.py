"""Photometric bands and the real filters behind them.

Band letters
------------
A model's bands are short names (``"g"``, ``"r"``, ``"z"``, ...).  A band set
may be given as a string of single-letter names (``"grz"``), a comma-separated
string (``"g,r,W1"``) or a sequence (``["g", "r", "z"]``); `parse_bands` turns
any of these into a tuple.  Bare letters mean the bands of the DESI Legacy
Imaging Surveys: DECam ``u g r i z Y`` and WISE ``W1 W2``
(`LEGACY_SURVEY_FILTERS`), so existing models and files keep their meaning.
`BAND_WAVELENGTHS` holds their pivot wavelengths rounded to 1 nm; it is used to
map images from other surveys or RGB cartoons onto a model's bands.

Filters
-------
`get_filter` returns a `Filter`: a measured transmission curve (the curves
bundled with `speclite <https://speclite.readthedocs.io>`_, nothing is
downloaded) as a `specutils.Spectrum` (``Filter.response``), with its
``name`` (``"hsc:i"``), ``survey``, ``band`` and the pivot and effective
wavelengths computed from the curve.  Names are ``survey:band``:

==========  ======================  ===========================================
survey      speclite group          bands
==========  ======================  ===========================================
decam       decam2014               u g r i z Y (airmass 1.3; the bare letters)
des         decamDR1                g r i z Y (DES DR1 standard bandpasses)
bass        BASS                    g r (Legacy Surveys north, Bok)
mzls        MzLS                    z (Legacy Surveys north, Mayall)
sdss        sdss2010                u g r i z (Doi et al. 2010, airmass 1.3)
hsc         hsc2017                 g r r2 i i2 z y
lsst        lsst2023                u g r i z y (``lsst2016`` for the older)
wise        wise2010                W1 W2 W3 W4
ps1         panstarrs               g r i z y w
megacam     cfht_megacam            u ustar g r i z
euclid      Euclid                  VIS Y J H
2mass       twomass                 J H Ks
galex       galex                   fuv nuv
gaia        gaiadr3                 G BP RP
bessell     bessell                 U B V R I
==========  ======================  ===========================================

Any other speclite group name works as a survey too (``"sdss2010noatm:r"``,
``"suprime:IB427"``).  ``"hsc:grizy"`` is shorthand for five filters.
`parse_filters` turns any band specification into a tuple of `Filter`;
`register_filter` adds your own curve (a `specutils.Spectrum`, a two-column
table or a ``(wavelength, throughput)`` pair).

Synthetic photometry
--------------------
`ab_magnitude` and `synthetic_flux` integrate a spectrum (a
`specutils.Spectrum`, a `galsim.SED` or a ``(wavelength, flux)`` pair of
quantities) through any filter, for a photon-counting detector:

.. math::

    m_{AB} = -2.5 \\log_{10} \\frac{\\int f_\\nu(\\lambda) R(\\lambda)\\, d\\lambda/\\lambda}
                                   {\\int 3631\\,\\mathrm{Jy}\\; R(\\lambda)\\, d\\lambda/\\lambda}

`fit_colour_terms` fits, on a library of galaxy templates (the Coleman, Wu &
Weedman templates shipped with GalSim, redshifted to 0-0.4 and reddened with
the Calzetti et al. 2000 law), low-order polynomials that carry magnitudes
from one filter set to another, and reports their scatter.  `flux_mapping`
gives the linear flux weights that best turn images in one filter set into
another (what a cross-survey transfer needs).
"""

import functools
import numbers
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
import astropy.units as u

__all__ = ["BAND_WAVELENGTHS", "LEGACY_SURVEY_PIXEL_SCALE", "LEGACY_SURVEY_FILTERS",
           "SURVEY_FILTER_GROUPS", "TEMPLATE_NAMES", "AB_ZERO_POINT",
           "Filter", "ColourTerm", "ColourTerms",
           "parse_bands", "parse_filters", "effective_wavelength", "get_filter",
           "register_filter", "unregister_filter", "available_filters", "band_letter",
           "filter_cards", "filters_from_meta", "interpolation_weights",
           "ab_magnitude", "synthetic_flux", "galaxy_template", "template_flux_ratios",
           "fit_colour_terms",
           "flux_mapping"]

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

#: The filter each bare band letter stands for (the Legacy Surveys' DECam and WISE).
LEGACY_SURVEY_FILTERS = {
    "u": "decam:u", "g": "decam:g", "r": "decam:r", "i": "decam:i", "z": "decam:z",
    "y": "decam:Y", "W1": "wise:W1", "W2": "wise:W2",
}

#: Survey prefixes of filter names and the speclite filter group each one loads.
SURVEY_FILTER_GROUPS = {
    "decam": "decam2014", "des": "decamDR1", "bass": "BASS", "mzls": "MzLS",
    "sdss": "sdss2010", "hsc": "hsc2017", "lsst": "lsst2023", "wise": "wise2010",
    "ps1": "panstarrs", "megacam": "cfht_megacam", "euclid": "Euclid", "2mass": "twomass",
    "galex": "galex", "gaia": "gaiadr3", "bessell": "bessell",
}

#: The galaxy templates of `galaxy_template` (GalSim's ``CWW_<name>_ext.sed``).
TEMPLATE_NAMES = ("E", "Sbc", "Scd", "Im")

#: Flux density of AB magnitude 0.
AB_ZERO_POINT = 3631.0 * u.Jy

_AB_JY = 3631.0

#: Largest part of a filter (of its integral of R dlambda / lambda) that may lie
#: outside a spectrum's wavelength range; that part is left out of the integral.
_COVERAGE_TOLERANCE = 1e-3

#: Calzetti et al. (2000) total-to-selective extinction of the stellar continuum.
_CALZETTI_RV = 4.05

#: Default template grid of `fit_colour_terms` and `flux_mapping`.
_DEFAULT_REDSHIFTS = tuple(np.round(np.linspace(0.0, 0.4, 9), 3))
_DEFAULT_EBV = (0.0, 0.1, 0.2, 0.3)

_NAME_FORBIDDEN = re.compile(r"[\s,]")


# --------------------------------------------------------------------------
# band letters (the model's band names)
# --------------------------------------------------------------------------

def parse_bands(bands):
    """Turn a band specification into a tuple of band names.

    Parameters
    ----------
    bands : str or sequence of str
        ``"grz"`` (one letter per band) or ``["g", "r", "z"]``.  A
        comma-separated string (``"g,r,W1"``) is accepted too, and so are full
        filter names of the bands the letters stand for (``"decam:g,decam:r"``
        gives ``('g', 'r')``; see `LEGACY_SURVEY_FILTERS`).

    Returns
    -------
    tuple of str

    Raises
    ------
    ValueError
        If the specification is empty, repeats a band, or names a band that
        is not in `BAND_WAVELENGTHS` (a filter of another survey, such as
        ``"hsc:g"``, is refused here: `parse_filters` takes any filter).

    Examples
    --------
    >>> parse_bands("grz")
    ('g', 'r', 'z')
    >>> parse_bands("decam:g,decam:r,decam:z")
    ('g', 'r', 'z')
    """
    if isinstance(bands, str):
        if "," in bands:
            names = tuple(b.strip() for b in bands.split(",") if b.strip())
        elif bands in BAND_WAVELENGTHS or ":" in bands:
            names = (bands.strip(),)
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
    names = tuple(_legacy_letter_of_name(b) for b in names)
    unknown = [b for b in names if b not in BAND_WAVELENGTHS]
    if unknown:
        raise ValueError(f"unknown band name(s) {unknown}; known bands are "
                         f"{sorted(BAND_WAVELENGTHS)} (the Legacy Surveys' filters "
                         f"{LEGACY_SURVEY_FILTERS}); filters of other surveys are "
                         "parsed by astro_sbgm.bands.parse_filters")
    if len(set(names)) != len(names):
        raise ValueError(f"bands {names} name a band more than once")
    return names


def _legacy_letter_of_name(name):
    """``"decam:g"`` (or any name of a Legacy Survey filter) -> ``"g"``; others unchanged."""
    if ":" not in name:
        return name
    try:
        canonical = get_filter(name).name
    except ValueError:
        return name
    for letter, full in LEGACY_SURVEY_FILTERS.items():
        if full == canonical:
            return letter
    return name


def effective_wavelength(band):
    """Wavelength of one band as a `~astropy.units.Quantity`.

    A band letter (or the full name of a Legacy Survey filter) gives its value
    in `BAND_WAVELENGTHS`: the pivot wavelength of its filter rounded to 1 nm,
    as before.  Any other filter (a name or a `Filter`) gives the pivot
    wavelength computed from its curve (`Filter.pivot_wavelength`).

    Raises
    ------
    ValueError
        For an unknown band (see `get_filter`).
    """
    if isinstance(band, Filter):
        return band.pivot_wavelength
    try:
        (name,) = parse_bands([band])
    except ValueError:
        return get_filter(band).pivot_wavelength
    return BAND_WAVELENGTHS[name]


def interpolation_weights(pos_out, pos_in):
    """Weights of linear interpolation between positions, clamped at the ends.

    Used to spread bands (or picture channels) over others in
    ``log(wavelength)``: row ``i`` holds the weights of the two inputs that
    bracket ``pos_out[i]`` (or 1 for the nearest input outside their range).

    Parameters
    ----------
    pos_out, pos_in : array-like of float
        Positions (e.g. log wavelengths) of the outputs and of the inputs.

    Returns
    -------
    `numpy.ndarray`
        ``(len(pos_out), len(pos_in))``; each row sums to 1.

    Examples
    --------
    >>> interpolation_weights([0.25], [0.0, 1.0]).tolist()
    [[0.75, 0.25]]
    """
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


# --------------------------------------------------------------------------
# the Filter class
# --------------------------------------------------------------------------

def _spectrum_class():
    """`specutils.Spectrum` (``Spectrum1D`` on specutils < 2)."""
    try:
        from specutils import Spectrum
    except ImportError:  # pragma: no cover - older specutils
        from specutils import Spectrum1D as Spectrum
    return Spectrum


def _trapz(y, x, axis=-1):
    return np.trapezoid(y, x, axis=axis)


class Filter:
    """A filter: a photon-counting transmission curve with a name.

    Build one with `get_filter` (speclite's measured curves) or
    `register_filter` (your own curve); the constructor is for curves you
    hold as arrays.

    Parameters
    ----------
    name : str
        Full name, ``"survey:band"`` by convention (``"hsc:i"``).
    wavelength : `~astropy.units.Quantity`
        Wavelengths (any spectral unit: length, frequency or energy), at
        least 3 distinct values; they are sorted.
    throughput : array-like
        Dimensionless response per photon at each wavelength, >= 0, not all
        zero (a `~astropy.units.Quantity` in percent is converted).
    survey, band : str, optional
        The two halves of the name (taken from ``name`` when it has a colon).
    meta : dict, optional
        Provenance (speclite's ``url``, ``description``, ``airmass``, ...).

    Attributes
    ----------
    name, survey, band : str
    meta : dict

    Raises
    ------
    ValueError
        If the curve is not 1-D, has fewer than 3 distinct wavelengths,
        non-finite or negative values, or no positive throughput.
    `~astropy.units.UnitsError`
        If ``wavelength`` has no spectral unit.

    Notes
    -----
    Two wavelengths summarise the curve ``R(lambda)`` (both computed here,
    from the curve, by trapezoidal integration):

    * `pivot_wavelength`: ``sqrt(int R lambda dlambda / int R dlambda / lambda)``
      (Koornneef et al. 1986; Tokunaga & Vacca 2005), the wavelength that
      converts the band-averaged f_nu into the band-averaged f_lambda exactly
      (``<f_lambda> = c <f_nu> / lambda_p^2``).
    * `effective_wavelength`: ``exp(int R ln(lambda) dlambda / lambda / int R
      dlambda / lambda)`` (Schneider, Gunn & Hoessel 1983), the definition
      Fukugita et al. (1996) use for the SDSS filters.

    Examples
    --------
    >>> from astro_sbgm.bands import get_filter
    >>> g = get_filter("decam:g")
    >>> g.name, g.survey, g.band
    ('decam:g', 'decam', 'g')
    >>> print(f"{g.pivot_wavelength:.1f}")
    482.0 nm
    """

    def __init__(self, name, wavelength, throughput, *, survey=None, band=None, meta=None):
        name = str(name).strip()
        if not name or _NAME_FORBIDDEN.search(name):
            raise ValueError(f"a filter name must be non-empty with no comma or space, "
                             f"got {name!r}")
        if not isinstance(wavelength, u.Quantity):
            raise u.UnitsError(f"the wavelengths of filter {name!r} have no unit: give a "
                               "Quantity (e.g. numbers * astropy.units.Angstrom)")
        lam = wavelength.to_value(u.AA, equivalencies=u.spectral())
        if isinstance(throughput, u.Quantity):
            try:
                thr = throughput.to_value(u.dimensionless_unscaled)
            except u.UnitConversionError:
                raise u.UnitsError(f"the throughput of filter {name!r} must be "
                                   f"dimensionless, got unit {throughput.unit}") from None
        else:
            thr = np.asarray(throughput, dtype=float)
        lam = np.asarray(lam, dtype=float)
        thr = np.asarray(thr, dtype=float)
        if lam.ndim != 1 or thr.shape != lam.shape:
            raise ValueError(f"filter {name!r}: wavelength and throughput must be 1-D of "
                             f"the same length, got shapes {lam.shape} and {thr.shape}")
        if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(thr))):
            raise ValueError(f"filter {name!r}: the curve holds NaN or infinite values")
        if np.any(thr < 0):
            raise ValueError(f"filter {name!r}: the throughput is negative at "
                             f"{int(np.sum(thr < 0))} wavelength(s) (min {thr.min():.3g}); "
                             "a throughput is >= 0")
        order = np.argsort(lam, kind="stable")
        lam, thr = lam[order], thr[order]
        if np.any(np.diff(lam) <= 0) or np.any(lam <= 0):
            raise ValueError(f"filter {name!r}: wavelengths must be positive and distinct")
        if lam.size < 3:
            raise ValueError(f"filter {name!r}: a curve needs at least 3 points, got {lam.size}")
        if not np.any(thr > 0):
            raise ValueError(f"filter {name!r}: the throughput is zero everywhere")
        if ":" in name:
            s, b = name.split(":", 1)
            survey = s if survey is None else survey
            band = b if band is None else band
        self.name = name
        self.survey = "" if survey is None else str(survey)
        self.band = name if band is None else str(band)
        self.meta = dict(meta or {})
        lam.flags.writeable = False
        thr.flags.writeable = False
        self._lam = lam
        self._thr = thr

    # -- the curve ---------------------------------------------------------

    @property
    def wavelength(self):
        """Wavelengths of the curve (`~astropy.units.Quantity`, Angstrom)."""
        return self._lam * u.AA

    @property
    def throughput(self):
        """Dimensionless response per photon at `wavelength` (read-only array)."""
        return self._thr

    @functools.cached_property
    def response(self):
        """The curve as a `specutils.Spectrum` (dimensionless flux, wavelength axis in nm)."""
        spectrum = _spectrum_class()
        return spectrum(flux=self._thr * u.dimensionless_unscaled,
                        spectral_axis=(self._lam * u.AA).to(u.nm),
                        meta={"name": self.name, **self.meta})

    @functools.cached_property
    def pivot_wavelength(self):
        """Pivot wavelength ``sqrt(int R lambda dlambda / int R dlambda / lambda)``."""
        lam, thr = self._lam, self._thr
        return (np.sqrt(_trapz(thr * lam, lam) / _trapz(thr / lam, lam)) * u.AA).to(u.nm)

    @functools.cached_property
    def effective_wavelength(self):
        """Effective wavelength ``exp(int R ln(lambda) dlambda/lambda / int R dlambda/lambda)``."""
        lam, thr = self._lam, self._thr
        w = thr / lam
        return (np.exp(_trapz(w * np.log(lam), lam) / _trapz(w, lam)) * u.AA).to(u.nm)

    @property
    def wavelength_range(self):
        """First and last wavelengths where the throughput is above zero (Quantity, nm)."""
        pos = np.flatnonzero(self._thr > 0)
        lo = self._lam[max(pos[0] - 1, 0)]
        hi = self._lam[min(pos[-1] + 1, self._lam.size - 1)]
        return (np.array([lo, hi]) * u.AA).to(u.nm)

    def to_galsim(self):
        """The curve as a `galsim.Bandpass` with the AB zero point (for chromatic drawing)."""
        import galsim
        table = galsim.LookupTable(self._lam / 10.0, self._thr, interpolant="linear")
        return galsim.Bandpass(table, wave_type="nm").withZeropoint("AB")

    def __repr__(self):
        lo, hi = self.wavelength_range.to_value(u.nm)
        return (f"<Filter {self.name}: pivot {self.pivot_wavelength.to_value(u.nm):.1f} nm, "
                f"effective {self.effective_wavelength.to_value(u.nm):.1f} nm, "
                f"{lo:.0f}-{hi:.0f} nm>")

    def __eq__(self, other):
        if not isinstance(other, Filter):
            return NotImplemented
        return (self.name == other.name and np.array_equal(self._lam, other._lam)
                and np.array_equal(self._thr, other._thr))

    def __hash__(self):
        return hash((self.name, self._lam.size, float(self._thr.sum())))


# --------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------

_USER_FILTERS = {}


def _speclite_dir():
    import speclite.filters
    return speclite.filters.get_path_of_data_file("filters")


@functools.lru_cache(maxsize=1)
def _speclite_catalogue():
    """{group: {band: file name}} of every curve speclite ships (read from its folder)."""
    import speclite.filters
    groups = {}
    names = sorted(os.listdir(_speclite_dir()))
    for group in speclite.filters.filter_group_names:
        prefix = group + "-"
        bands = {}
        for fname in names:
            if fname.startswith(prefix) and fname.endswith(".ecsv"):
                bands[fname[len(prefix):-len(".ecsv")]] = fname[:-len(".ecsv")]
        groups[group] = bands
    return groups


def _preferred_survey(group):
    for alias, g in SURVEY_FILTER_GROUPS.items():
        if g == group:
            return alias
    return group


def _lookup_group(survey):
    """Speclite group of a survey prefix (alias or group name, any case) or None."""
    s = survey.strip()
    low = s.lower()
    if low in SURVEY_FILTER_GROUPS:
        return SURVEY_FILTER_GROUPS[low]
    for group in _speclite_catalogue():
        if group.lower() == low:
            return group
    return None


def _known_surveys():
    aliases = list(SURVEY_FILTER_GROUPS)
    others = [g for g in _speclite_catalogue() if g not in SURVEY_FILTER_GROUPS.values()]
    return aliases + others


@functools.lru_cache(maxsize=None)
def _load_builtin(group, band):
    import speclite.filters
    curve = speclite.filters.load_filter(f"{group}-{band}")
    meta = {k: v for k, v in dict(curve.meta).items()}
    meta["speclite_name"] = f"{group}-{band}"
    survey = _preferred_survey(group)
    return Filter(f"{survey}:{band}", np.asarray(curve.wavelength) * u.AA,
                  np.clip(np.asarray(curve.response, dtype=float), 0.0, None),
                  survey=survey, band=band, meta=meta)


def _resolve_band(group, band, survey, full):
    bands = _speclite_catalogue()[group]
    if band in bands:
        return band
    matches = [b for b in bands if b.lower() == band.lower()]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"survey {survey!r} (speclite group {group!r}) has no band {band!r} "
                     f"in filter name {full!r}; its bands are {sorted(bands)}")


def get_filter(name):
    """The `Filter` of a name.

    Parameters
    ----------
    name : str or `Filter`
        ``"survey:band"`` (see the table in `astro_sbgm.bands`; the band's case
        may differ when unambiguous: ``"decam:y"``), a speclite name
        (``"decam2014-g"``), a bare Legacy Survey band (``"g"``, ``"W1"``; see
        `LEGACY_SURVEY_FILTERS`) or a name given to `register_filter`.  A
        `Filter` is returned as it is.

    Returns
    -------
    `Filter`
        Built-in filters are loaded once and shared.

    Raises
    ------
    ValueError
        For an unknown survey, a band the survey does not have, or an unknown
        bare name; the message names the bad part and the known choices.
    TypeError
        If ``name`` is neither a string nor a `Filter`.

    Examples
    --------
    >>> get_filter("g").name
    'decam:g'
    >>> get_filter("hsc:i").survey
    'hsc'
    """
    if isinstance(name, Filter):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a filter is named by a string such as 'decam:g' or 'hsc:i', "
                        f"got {name!r}")
    full = name.strip()
    if full in _USER_FILTERS:
        return _USER_FILTERS[full]
    return _get_builtin(full)


def _get_builtin(full):
    """The built-in filter of a (stripped) name, ignoring registered ones."""
    registered = (f" and registered filters {sorted(_USER_FILTERS)}" if _USER_FILTERS else "")
    if full in LEGACY_SURVEY_FILTERS:
        return _get_builtin(LEGACY_SURVEY_FILTERS[full])
    if ":" in full:
        survey, band = (s.strip() for s in full.split(":", 1))
        group = _lookup_group(survey)
        if group is None:
            raise ValueError(f"unknown survey {survey!r} in filter name {full!r}; known "
                             f"surveys are {_known_surveys()}{registered}")
        return _load_builtin(group, _resolve_band(group, band, survey, full))
    if "-" in full:
        group_part, band = full.rsplit("-", 1)
        group = _lookup_group(group_part)
        if group is not None and group.lower() == group_part.lower():
            return _load_builtin(group, _resolve_band(group, band, group_part, full))
    ci = [b for b in LEGACY_SURVEY_FILTERS if b.lower() == full.lower()]
    if len(ci) == 1:
        return _get_builtin(LEGACY_SURVEY_FILTERS[ci[0]])
    raise ValueError(f"unknown filter {full!r}: give 'survey:band' (e.g. 'decam:g', "
                     f"'hsc:i') with survey one of {_known_surveys()}, a bare Legacy Survey "
                     f"band {sorted(LEGACY_SURVEY_FILTERS)}"
                     + (f", or a registered filter {sorted(_USER_FILTERS)}"
                        if _USER_FILTERS else ", or a name given to register_filter"))


def _is_builtin_name(name):
    try:
        _get_builtin(name)
    except ValueError:
        return False
    return True


def _curve_from(curve, name):
    """(wavelength Quantity, throughput array, meta) of a curve in any accepted form."""
    if isinstance(curve, Filter):
        return curve.wavelength, curve.throughput, dict(curve.meta)
    if hasattr(curve, "spectral_axis") and hasattr(curve, "flux"):
        flux = curve.flux
        if np.ndim(flux) != 1:
            raise ValueError(f"filter {name!r}: the spectrum must be 1-D, got flux of shape "
                             f"{np.shape(flux)}")
        return u.Quantity(curve.spectral_axis), flux, dict(getattr(curve, "meta", {}) or {})
    if hasattr(curve, "colnames"):
        cols = list(curve.colnames)
        if len(cols) < 2:
            raise ValueError(f"filter {name!r}: the table needs two columns (wavelength, "
                             f"throughput), got {cols}")
        low = {c.lower(): c for c in cols}
        wcol = next((low[k] for k in ("wavelength", "wave", "lambda", "lam") if k in low), cols[0])
        tcol = next((low[k] for k in ("response", "throughput", "transmission", "trans")
                     if k in low), [c for c in cols if c != wcol][0])
        wav = curve[wcol]
        if not isinstance(wav, u.Quantity):
            if getattr(wav, "unit", None) is None:
                raise u.UnitsError(f"filter {name!r}: the wavelength column {wcol!r} has no "
                                   "unit; give it one (e.g. table[col].unit = 'Angstrom')")
            wav = u.Quantity(wav)
        thr = curve[tcol]
        if getattr(thr, "unit", None) is not None and not isinstance(thr, u.Quantity):
            thr = u.Quantity(thr)
        return wav, (thr if isinstance(thr, u.Quantity) else np.asarray(thr, float)), \
            dict(getattr(curve, "meta", {}) or {})
    if isinstance(curve, (tuple, list)) and len(curve) == 2:
        return curve[0], curve[1], {}
    raise TypeError(f"filter {name!r}: give the curve as a specutils Spectrum, a two-column "
                    f"table (wavelength with a unit, throughput) or a (wavelength, throughput) "
                    f"pair, got {type(curve).__name__}")


def register_filter(name, curve, *, survey=None, band=None, overwrite=False):
    """Make your own transmission curve known by name.

    Parameters
    ----------
    name : str
        The new name, ``"survey:band"`` by convention (``"mycam:g"``); no
        comma or space, not a built-in name.
    curve : `specutils.Spectrum`, table, ``(wavelength, throughput)`` or `Filter`
        The photon-counting response: a 1-D spectrum with a spectral axis and
        dimensionless flux; an `~astropy.table.Table` / `~astropy.table.QTable`
        whose wavelength column (``wavelength``, ``wave`` or ``lambda``, else
        the first) carries a unit and whose throughput column is
        ``response``, ``throughput`` or ``transmission`` (else the second); a
        pair of a wavelength `~astropy.units.Quantity` and an array.
    survey, band : str, optional
        Stored on the `Filter` (default: the halves of ``name``).
    overwrite : bool, optional
        Replace a filter registered earlier under ``name``.

    Returns
    -------
    `Filter`

    Raises
    ------
    ValueError
        If ``name`` is a built-in filter name or already registered (without
        ``overwrite``), or the curve is not a valid response (see `Filter`).
    `~astropy.units.UnitsError`
        If the wavelengths carry no unit.
    TypeError
        If ``curve`` is none of the accepted forms.

    Examples
    --------
    >>> import numpy as np, astropy.units as u
    >>> from astro_sbgm.bands import register_filter, unregister_filter
    >>> lam = np.linspace(500, 600, 11) * u.nm
    >>> f = register_filter("box:v", (lam, np.ones(11)))
    >>> print(f"{f.pivot_wavelength:.2f}")
    549.22 nm
    >>> unregister_filter("box:v")
    """
    if not isinstance(name, str):
        raise TypeError(f"a filter name is a string such as 'mycam:g', got {name!r}")
    name = name.strip()
    if not name or _NAME_FORBIDDEN.search(name):
        raise ValueError(f"a filter name must be non-empty with no comma or space, got {name!r}")
    if name in BAND_WAVELENGTHS or _is_builtin_name(name):
        raise ValueError(f"filter name {name!r} is a built-in filter; register your curve "
                         "under another name (e.g. 'mycam:g')")
    if name in _USER_FILTERS and not overwrite:
        raise ValueError(f"a filter {name!r} is already registered; pass overwrite=True to "
                         "replace it, or unregister_filter it first")
    wav, thr, meta = _curve_from(curve, name)
    filt = Filter(name, wav, thr, survey=survey, band=band, meta=meta)
    _USER_FILTERS[name] = filt
    return filt


def unregister_filter(name):
    """Forget a filter given to `register_filter`.

    Raises
    ------
    ValueError
        If no filter of that name was registered (built-in ones cannot be removed).
    """
    if name not in _USER_FILTERS:
        raise ValueError(f"no filter {name!r} was registered; registered filters are "
                         f"{sorted(_USER_FILTERS)}")
    del _USER_FILTERS[name]


def available_filters(survey=None):
    """Names of the known filters.

    Parameters
    ----------
    survey : str, optional
        Only this survey's filters (``"hsc"``, ``"sdss2010noatm"``, ...).

    Returns
    -------
    list of str
        Built-in filters as ``"survey:band"`` (each speclite group under its
        preferred survey name), then the registered ones.

    Raises
    ------
    ValueError
        For an unknown ``survey``.
    """
    groups = _speclite_catalogue()
    if survey is not None:
        group = _lookup_group(str(survey))
        user = [n for n, f in _USER_FILTERS.items() if f.survey.lower() == str(survey).lower()]
        if group is None:
            if user:
                return sorted(user)
            raise ValueError(f"unknown survey {survey!r}; known surveys are {_known_surveys()}")
        pref = _preferred_survey(group)
        return [f"{pref}:{b}" for b in sorted(groups[group])] + sorted(user)
    out = []
    for group, bands in groups.items():
        pref = _preferred_survey(group)
        out += [f"{pref}:{b}" for b in sorted(bands)]
    return out + sorted(_USER_FILTERS)


def _try_filter(name):
    try:
        return get_filter(name)
    except ValueError:
        return None


def _expand_survey_letters(item):
    """``"hsc:grizy"`` -> ['hsc:g', 'hsc:r', ...] when every letter is a band of the survey."""
    survey, letters = item.split(":", 1)
    group = _lookup_group(survey)
    if group is None or len(letters) < 2:
        return None
    bands = _speclite_catalogue()[group]
    out = []
    for ch in letters:
        match = [b for b in bands if b == ch] or [b for b in bands if b.lower() == ch.lower()]
        if len(match) != 1:
            return None
        out.append(f"{survey}:{match[0]}")
    return out


def parse_filters(bands):
    """Turn any band specification into a tuple of `Filter`.

    Parameters
    ----------
    bands : str, `Filter` or sequence of str / `Filter`
        Bare letters as in `parse_bands` (``"grz"`` is DECam g, r, z),
        full names separated by commas (``"decam:g,decam:r"``,
        ``"bass:g,bass:r,mzls:z"``), one survey and several one-letter bands
        (``"hsc:grizy"``), or a sequence of names and `Filter` objects.

    Returns
    -------
    tuple of `Filter`

    Raises
    ------
    ValueError
        If the specification is empty, names a filter twice, or names an
        unknown filter (see `get_filter`).
    TypeError
        If ``bands`` is not a string, a `Filter` or a sequence of them.

    Examples
    --------
    >>> [f.name for f in parse_filters("grz")]
    ['decam:g', 'decam:r', 'decam:z']
    >>> [f.name for f in parse_filters("hsc:gri")]
    ['hsc:g', 'hsc:r', 'hsc:i']
    """
    if isinstance(bands, Filter):
        return (bands,)
    if isinstance(bands, str):
        spec = bands.strip()
        if "," in spec:
            items = [b.strip() for b in spec.split(",") if b.strip()]
        else:
            single = _try_filter(spec) if spec else None
            if single is not None:
                return (single,)
            if ":" in spec:
                items = [spec]
            else:
                items = list(spec)
    else:
        try:
            items = list(bands)
        except TypeError:
            raise TypeError(f"bands must be a string such as 'grz' or 'hsc:g,hsc:r', a "
                            f"Filter or a sequence of them, got {bands!r}") from None
    out = []
    for item in items:
        if isinstance(item, Filter):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise TypeError(f"a band is named by a string or given as a Filter, got {item!r}")
        item = item.strip()
        found = _try_filter(item)
        if found is None and ":" in item:
            expanded = _expand_survey_letters(item)
            if expanded is not None:
                out.extend(get_filter(n) for n in expanded)
                continue
        out.append(found if found is not None else get_filter(item))
    if not out:
        raise ValueError("bands is empty: give at least one band, e.g. 'grz' or 'hsc:g,hsc:r'")
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        raise ValueError(f"bands {names} name a filter more than once")
    return tuple(out)


def band_letter(band):
    """The model band letter (a key of `BAND_WAVELENGTHS`) of a filter, or None.

    ``"decam:g"`` and ``"hsc:g"`` both give ``"g"``, ``"hsc:r2"`` gives
    ``"r"``, ``"decam:Y"`` and ``"lsst:y"`` give ``"y"``, ``"wise:W1"`` gives
    ``"W1"``; a filter with no such letter (``"euclid:VIS"``) gives None.

    Examples
    --------
    >>> band_letter("hsc:i2")
    'i'
    """
    filt = get_filter(band)
    for letter, full in LEGACY_SURVEY_FILTERS.items():
        if full == filt.name:
            return letter
    b = filt.band
    for key in BAND_WAVELENGTHS:
        if b == key or b.lower() == key.lower():
            return key
    m = re.fullmatch(r"([ugrizy])\d*", b.lower())
    return m.group(1) if m else None


def filter_cards(bands):
    """FITS cards naming each plane's filter: ``{"FILTER0": "decam:g", ...}``.

    Written beside the ``BANDn`` letters so that a file records which
    survey's filters its planes were taken through.

    Examples
    --------
    >>> filter_cards("grz")
    {'FILTER0': 'decam:g', 'FILTER1': 'decam:r', 'FILTER2': 'decam:z'}
    """
    return {f"FILTER{i}": f.name for i, f in enumerate(parse_filters(bands))}


def filters_from_meta(meta):
    """The filters of an image from its header or ``meta``.

    ``FILTER0``, ``FILTER1``, ... when every plane has one (as written with
    `filter_cards`), else the ``BANDS`` / ``BAND0``, ``BAND1``, ... letters
    (Legacy Survey filters).

    Raises
    ------
    ValueError
        If the header names neither, or names unknown filters.
    """
    nplanes = 0
    while f"BAND{nplanes}" in meta or f"FILTER{nplanes}" in meta:
        nplanes += 1
    names = [str(meta.get(f"FILTER{i}", "")).strip() for i in range(nplanes)]
    if nplanes and all(names):
        return parse_filters(names)
    if "BANDS" in meta and str(meta["BANDS"]).strip():
        return parse_filters(list(parse_bands(str(meta["BANDS"]))))
    letters = [str(meta.get(f"BAND{i}", "")).strip() for i in range(nplanes)]
    if nplanes and all(letters):
        return parse_filters(list(parse_bands(letters)))
    raise ValueError("the header names no filters: no FILTERn, BANDS or BANDn cards")


# --------------------------------------------------------------------------
# synthetic photometry
# --------------------------------------------------------------------------

def _interp_rows(x_new, x, y):
    """Linear interpolation of every row of ``y`` (..., n) from ``x`` to ``x_new``."""
    idx = np.clip(np.searchsorted(x, x_new, side="right") - 1, 0, x.size - 2)
    t = (x_new - x[idx]) / (x[idx + 1] - x[idx])
    return y[..., idx] * (1.0 - t) + y[..., idx + 1] * t


class _Sampled:
    """A spectrum as f_nu (Jy) on a sorted wavelength grid (Angstrom), rows (..., n)."""

    def __init__(self, lam, fnu, label):
        self.lam, self.fnu, self.label = lam, fnu, label
        self.lo, self.hi = lam[0], lam[-1]

    def nodes(self, lo, hi):
        return self.lam[(self.lam > lo) & (self.lam < hi)]

    def __call__(self, lam):
        return _interp_rows(lam, self.lam, self.fnu)

    @property
    def batch_shape(self):
        return self.fnu.shape[:-1]


class _GalSimSampled:
    """A `galsim.SED` evaluated on demand (photons / nm / cm^2 / s -> Jy)."""

    def __init__(self, sed):
        if getattr(sed, "dimensionless", False):
            raise ValueError("a dimensionless galsim.SED has no flux: give one with "
                             "flux_type 'flambda', 'fnu', 'fphotons' (or normalised with "
                             "withFlux / withMagnitude)")
        self.sed = sed
        self.lo = float(sed.blue_limit) * 10.0
        self.hi = float(sed.red_limit) * 10.0
        self.wave_list = np.asarray(sed.wave_list, dtype=float) * 10.0
        self.label = f"galsim.SED {sed!r}"[:80]

    def nodes(self, lo, hi):
        w = self.wave_list
        return w[(w > lo) & (w < hi)]

    def __call__(self, lam):
        photons = np.asarray(self.sed(lam / 10.0), dtype=float)
        q = photons * (u.photon / (u.s * u.cm ** 2 * u.nm))
        return q.to_value(u.Jy, u.spectral_density(lam * u.AA))

    batch_shape = ()


def _as_sampled(sed):
    """Wrap any accepted spectrum form."""
    mod = type(sed).__module__ or ""
    if mod.startswith("galsim") and hasattr(sed, "blue_limit"):
        return _GalSimSampled(sed)
    if hasattr(sed, "spectral_axis") and hasattr(sed, "flux"):
        axis, flux, label = u.Quantity(sed.spectral_axis), u.Quantity(sed.flux), "spectrum"
    elif isinstance(sed, (tuple, list)) and len(sed) == 2:
        axis, flux, label = sed[0], sed[1], "(wavelength, flux) pair"
        if not isinstance(axis, u.Quantity) or not isinstance(flux, u.Quantity):
            raise u.UnitsError("a (wavelength, flux) pair needs Quantities: wavelength in a "
                               "spectral unit, flux in a spectral flux density unit")
    else:
        raise TypeError(f"sed must be a specutils Spectrum, a galsim.SED or a (wavelength, "
                        f"flux) pair of Quantities, got {type(sed).__name__}")
    try:
        lam = axis.to_value(u.AA, equivalencies=u.spectral())
    except u.UnitConversionError:
        raise u.UnitsError(f"the {label}'s spectral axis has unit {axis.unit}, not a "
                           "wavelength, frequency or energy") from None
    lam = np.asarray(lam, dtype=float)
    if lam.ndim != 1 or lam.size < 2 or flux.shape[-1:] != lam.shape:
        raise ValueError(f"the {label} needs a 1-D spectral axis of >= 2 points matching the "
                         f"last axis of its flux; got {lam.shape} and {flux.shape}")
    try:
        fnu = flux.to_value(u.Jy, u.spectral_density(lam * u.AA))
    except u.UnitConversionError:
        raise u.UnitsError(f"the {label}'s flux unit {flux.unit} is not a spectral flux "
                           "density (f_nu, f_lambda or photon flux density)") from None
    order = np.argsort(lam, kind="stable")
    lam, fnu = lam[order], np.asarray(fnu, dtype=float)[..., order]
    if np.any(np.diff(lam) <= 0):
        raise ValueError(f"the {label}'s spectral axis repeats a wavelength")
    return _Sampled(lam, fnu, label)


def _band_ratio(sampled, filt):
    """Band-averaged f_nu / 3631 Jy of ``sampled`` through ``filt`` (photon counting)."""
    lam_f, thr = filt._lam, filt._thr
    w = thr / lam_f
    total = _trapz(w, lam_f)
    lo, hi = max(sampled.lo, lam_f[0]), min(sampled.hi, lam_f[-1])
    if hi <= lo:
        covered = 0.0
        grid = None
    else:
        grid = np.unique(np.concatenate([[lo, hi], lam_f[(lam_f > lo) & (lam_f < hi)],
                                         sampled.nodes(lo, hi)]))
        rg = np.interp(grid, lam_f, thr)
        covered = _trapz(rg / grid, grid)
    missing = 1.0 - covered / total
    if missing > _COVERAGE_TOLERANCE:
        raise ValueError(
            f"the spectrum covers {sampled.lo / 10:.1f}-{sampled.hi / 10:.1f} nm, which leaves "
            f"{100 * missing:.2f}% of filter {filt.name!r} "
            f"({filt.wavelength_range[0].value:.1f}-{filt.wavelength_range[1].value:.1f} nm) "
            f"uncovered (at most {100 * _COVERAGE_TOLERANCE:.1f}% may be); give a spectrum "
            "that spans the filter")
    fg = sampled(grid)
    num = _trapz(fg * (rg / grid), grid, axis=-1)
    return num / (_AB_JY * covered)


def _single_band(band):
    if isinstance(band, Filter):
        return True
    if isinstance(band, str) and "," not in band:
        return _try_filter(band.strip()) is not None
    return False


def synthetic_flux(sed, band):
    """Flux of a spectrum through a filter, in nanomaggies (AB: 1 nmgy = 22.5 mag).

    Parameters
    ----------
    sed : `specutils.Spectrum`, `galsim.SED` or ``(wavelength, flux)`` Quantities
        The spectrum, observed frame.  The flux may be any spectral flux
        density (f_nu, f_lambda, photons per unit wavelength); a spectrum
        whose flux has leading axes (``(..., n)``) gives one value per row.
        A dimensionless `galsim.SED` is refused.
    band : str, `Filter` or sequence
        One filter (``"decam:g"``, ``"g"``, a `Filter`) or several (anything
        `parse_filters` takes).

    Returns
    -------
    `~astropy.units.Quantity`
        In nanomaggy; shape ``sed``'s leading axes, plus one axis over the
        filters when several are given.  The photon-counting band average
        ``int f_nu R dlambda / lambda / int R dlambda / lambda`` over 3631 Jy,
        times 1e9.

    Raises
    ------
    ValueError
        If the spectrum leaves more than 0.1% of a filter (of its
        ``int R dlambda / lambda``) uncovered.
    `~astropy.units.UnitsError`
        If the spectral axis or the flux has the wrong kind of unit.
    TypeError
        If ``sed`` is none of the accepted forms.
    """
    sampled = _as_sampled(sed)
    if _single_band(band):
        return _band_ratio(sampled, get_filter(band)) * 1e9 * u.nanomaggy
    filters = parse_filters(band)
    vals = [_band_ratio(sampled, f) for f in filters]
    return np.stack(vals, axis=-1) * 1e9 * u.nanomaggy


def ab_magnitude(sed, band):
    """AB magnitude of a spectrum through one or several filters.

    ``m = -2.5 log10(<f_nu> / 3631 Jy)`` with ``<f_nu>`` the photon-counting
    band average ``int f_nu R dlambda / lambda / int R dlambda / lambda``
    (Fukugita et al. 1996; Bessell & Murphy 2012).  A source with constant
    f_nu has the same magnitude in every filter.

    Parameters
    ----------
    sed, band
        As in `synthetic_flux`.

    Returns
    -------
    `~astropy.units.Quantity`
        In mag, shaped as in `synthetic_flux`; NaN where the band-averaged
        flux is not positive.

    Raises
    ------
    ValueError, `~astropy.units.UnitsError`, TypeError
        As `synthetic_flux`.

    Examples
    --------
    >>> import numpy as np, astropy.units as u
    >>> lam = np.linspace(300, 1200, 901) * u.nm
    >>> flat = (lam, np.full(lam.shape, 3631e-9) * u.Jy)      # 22.5 mag everywhere
    >>> ab_magnitude(flat, "hsc:grizy").round(6)
    <Quantity [22.5, 22.5, 22.5, 22.5, 22.5] mag>
    """
    flux = synthetic_flux(sed, band).to_value(u.nanomaggy)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, 22.5 - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)
    return mag * u.mag


# --------------------------------------------------------------------------
# galaxy templates
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _template_rest(name):
    """Rest-frame (wavelength Angstrom, f_nu arbitrary) of a CWW template shipped with GalSim."""
    import galsim
    if name not in TEMPLATE_NAMES:
        raise ValueError(f"unknown galaxy template {name!r}; the templates are "
                         f"{list(TEMPLATE_NAMES)} (Coleman, Wu & Weedman 1980, as shipped "
                         "with GalSim)")
    path = os.path.join(galsim.meta_data.share_dir, "SEDs", f"CWW_{name}_ext.sed")
    data = np.loadtxt(path)
    lam, flam = data[:, 0], data[:, 1]
    fnu = flam * lam ** 2
    fnu = fnu / np.interp(5500.0, lam, fnu)
    lam.flags.writeable = False
    fnu.flags.writeable = False
    return lam, fnu


def _calzetti_k(lam_um):
    """Calzetti et al. (2000) k(lambda) = A(lambda) / E(B-V), lambda in micron."""
    x = 1.0 / np.asarray(lam_um, dtype=float)
    blue = 2.659 * (-2.156 + 1.509 * x - 0.198 * x ** 2 + 0.011 * x ** 3) + _CALZETTI_RV
    red = 2.659 * (-1.857 + 1.040 * x) + _CALZETTI_RV
    k = np.where(np.asarray(lam_um) < 0.63, blue, red)
    return np.clip(k, 0.0, None)


def _template_sampled(name, redshift, ebv):
    lam, fnu = _template_rest(name)
    if not (np.isfinite(redshift) and redshift >= 0):
        raise ValueError(f"redshift must be a finite number >= 0, got {redshift!r}")
    if not (np.isfinite(ebv) and ebv >= 0):
        raise ValueError(f"ebv (E(B-V), mag) must be a finite number >= 0, got {ebv!r}")
    att = 10 ** (-0.4 * _calzetti_k(lam / 1e4) * ebv)
    return _Sampled(lam * (1.0 + redshift), fnu * att, f"template {name}")


def template_flux_ratios(name, redshift, ebv, filters, reference="decam:r"):
    """Fluxes of a galaxy template through filters, relative to a reference filter.

    What `astro_sbgm.datasets.make_mock_survey` gives each galaxy component:
    the band-averaged f_nu of the template `galaxy_template` ``(name,
    redshift, ebv)`` through each filter, divided by that through
    ``reference`` (photon-counting, as `synthetic_flux`).

    Parameters
    ----------
    name : str
        One of `TEMPLATE_NAMES`.
    redshift, ebv : float
        Redshift (>= 0) and Calzetti E(B-V) (mag, >= 0).
    filters : str or sequence
        Anything `parse_filters` takes.
    reference : str or `Filter`
        The filter the fluxes are relative to.

    Returns
    -------
    `numpy.ndarray`
        One ratio per filter.

    Raises
    ------
    ValueError
        For an unknown template or filter, a negative redshift or E(B-V), or
        a filter the template's spectrum does not cover.

    Examples
    --------
    >>> float(template_flux_ratios("E", 0.1, 0.0, "decam:r")[0])
    1.0
    """
    sampled = _template_sampled(name, redshift, ebv)
    r_ref = _band_ratio(sampled, parse_filters(reference)[0])
    return np.array([_band_ratio(sampled, f) for f in parse_filters(filters)]) / r_ref


def galaxy_template(name, redshift=0.0, ebv=0.0, *, magnitude=22.5 * u.mag, band="decam:r"):
    """A galaxy spectrum from the Coleman, Wu & Weedman (1980) templates.

    The extended templates shipped with GalSim (``CWW_<name>_ext.sed``,
    91 nm to 2.2 micron rest frame) moved to ``redshift`` and reddened in the
    rest frame by ``ebv`` = E(B-V) of the Calzetti et al. (2000) law
    (R_V = 4.05).

    Parameters
    ----------
    name : {"E", "Sbc", "Scd", "Im"}
        Elliptical, early and late spiral, irregular.
    redshift : float, optional
        >= 0.
    ebv : float, optional
        E(B-V) of the stellar continuum (mag), >= 0.
    magnitude : `~astropy.units.Quantity` or float, optional
        AB magnitude the spectrum is scaled to in ``band``.
    band : str or `Filter`, optional
        Filter of the normalisation (default DECam r).

    Returns
    -------
    `specutils.Spectrum`
        f_lambda in erg / s / cm^2 / Angstrom on the template's wavelengths (nm).

    Raises
    ------
    ValueError
        For an unknown template, a negative redshift or reddening.

    Examples
    --------
    >>> sed = galaxy_template("E", redshift=0.1)
    >>> round(float(ab_magnitude(sed, "decam:r").value), 6)
    22.5
    """
    sampled = _template_sampled(name, float(redshift), float(ebv))
    mag = u.Quantity(magnitude, u.mag).value
    scale = 10 ** (-0.4 * mag) / _band_ratio(sampled, get_filter(band))
    lam = sampled.lam * u.AA
    fnu = sampled.fnu * scale * u.Jy
    flam = fnu.to(u.erg / u.s / u.cm ** 2 / u.AA, u.spectral_density(lam))
    spectrum = _spectrum_class()
    return spectrum(flux=flam, spectral_axis=lam.to(u.nm),
                    meta={"template": name, "redshift": float(redshift), "ebv": float(ebv)})


def _library(templates, redshifts, ebv):
    """[(label, sampled spectrum)] over the template grid (named templates) or as given."""
    out = []
    names = (templates,) if isinstance(templates, str) else tuple(templates)
    for t in names:
        if isinstance(t, str):
            for z in np.atleast_1d(redshifts):
                for e in np.atleast_1d(ebv):
                    sampled = _template_sampled(t, float(z), float(e))
                    out.append(((t, float(z), float(e)), sampled))
        else:
            out.append(((getattr(t, "meta", {}) or {}).get("template", "spectrum"),
                        _as_sampled(t)))
    if not out:
        raise ValueError("the template library is empty")
    return out


def _library_fluxes(library, filters):
    """(n_sed, n_filter) band ratios (flux / 3631 Jy)."""
    return np.array([[_band_ratio(s, f) for f in filters] for _, s in library])


# --------------------------------------------------------------------------
# colour terms
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ColourTerm:
    """One fitted transformation ``target = source_band + P(colour)``.

    Attributes
    ----------
    target, source_band : str
        Filter names.
    colour : tuple of str
        The two source filters of the colour ``colour[0] - colour[1]``.
    coefficients : tuple of float
        ``P(x) = c0 + c1 x + c2 x^2 + ...`` (lowest order first).
    scatter : float
        RMS residual (mag) over the template library.
    max_residual : float
        Largest absolute residual (mag).
    colour_range : tuple of float
        Smallest and largest colour of the library (the fit's validity range).
    n_seds : int
        Number of spectra fitted.
    """

    target: str
    source_band: str
    colour: tuple
    coefficients: tuple
    scatter: float
    max_residual: float
    colour_range: tuple
    n_seds: int

    def __call__(self, colour):
        """``P(colour)``: target minus source-band magnitude."""
        return np.polynomial.polynomial.polyval(np.asarray(colour, dtype=float),
                                                self.coefficients)

    def __str__(self):
        a, b = (c.split(":")[-1] for c in self.colour)
        x = f"({a}-{b})"
        terms = [f"{self.coefficients[0]:+.4f}"]
        for k, c in enumerate(self.coefficients[1:], start=1):
            terms.append(f"{c:+.4f} {x}" + (f"^{k}" if k > 1 else ""))
        return (f"{self.target} = {self.source_band} " + " ".join(terms)
                + f"   [rms {self.scatter:.4f}, max {self.max_residual:.4f} mag, "
                f"{self.colour_range[0]:.2f} < {a}-{b} < {self.colour_range[1]:.2f}]")


class ColourTerms:
    """Colour transformations from one filter set to another (`fit_colour_terms`).

    Attributes
    ----------
    source, target : tuple of str
        Filter names.
    terms : dict of str -> `ColourTerm`
        One per target filter.
    """

    def __init__(self, source, target, terms):
        self.source = tuple(source)
        self.target = tuple(target)
        self.terms = dict(terms)

    def __getitem__(self, target):
        return self.terms[get_filter(target).name]

    def __str__(self):
        return "\n".join(str(t) for t in self.terms.values())

    def __repr__(self):
        return f"<ColourTerms {','.join(self.source)} -> {','.join(self.target)}>\n{self}"

    def predict(self, magnitudes):
        """Magnitudes in the target filters from magnitudes in the source filters.

        Parameters
        ----------
        magnitudes : dict or `~astropy.table.Table`
            Magnitudes (numbers or `~astropy.units.Quantity` in mag) keyed by
            any name of each source filter (``"sdss:g"``, ``"sdss2010-g"``, or
            ``"g"`` when the source filters are the Legacy Survey ones).

        Returns
        -------
        dict of str -> `~astropy.units.Quantity`
            One entry per target filter, in mag.

        Raises
        ------
        KeyError
            If a source filter a term needs is missing.

        Warns
        -----
        `~astro_sbgm.exceptions.PhotometryWarning`
            When some colours lie outside the range the terms were fitted on.
        """
        from .exceptions import PhotometryWarning
        keys = magnitudes.colnames if hasattr(magnitudes, "colnames") else list(magnitudes)
        by_name = {}
        for k in keys:
            f = _try_filter(str(k))
            if f is not None:
                by_name[f.name] = u.Quantity(magnitudes[k], u.mag).value
        out = {}
        for target, term in self.terms.items():
            need = (term.source_band,) + tuple(term.colour)
            missing = [n for n in need if n not in by_name]
            if missing:
                raise KeyError(f"magnitudes lack source filter(s) {missing} needed for "
                               f"{target}; given {list(keys)}")
            colour = by_name[term.colour[0]] - by_name[term.colour[1]]
            lo, hi = term.colour_range
            outside = np.sum((colour < lo) | (colour > hi))
            if outside:
                warnings.warn(f"{int(outside)} colour(s) {term.colour[0]}-{term.colour[1]} lie "
                              f"outside the fitted range {lo:.2f} to {hi:.2f}; {target} is "
                              "extrapolated there", PhotometryWarning)
            out[target] = (by_name[term.source_band] + term(colour)) * u.mag
        return out

    def to_table(self):
        """The terms as a `~astropy.table.QTable` (one row per target filter)."""
        from astropy.table import QTable
        deg = max(len(t.coefficients) for t in self.terms.values())
        t = QTable()
        rows = list(self.terms.values())
        t["target"] = [r.target for r in rows]
        t["source_band"] = [r.source_band for r in rows]
        t["colour"] = [f"{r.colour[0]} - {r.colour[1]}" for r in rows]
        for k in range(deg):
            t[f"c{k}"] = [r.coefficients[k] if k < len(r.coefficients) else 0.0 for r in rows]
        t["scatter"] = [r.scatter for r in rows] * u.mag
        t["max_residual"] = [r.max_residual for r in rows] * u.mag
        t["colour_min"] = [r.colour_range[0] for r in rows] * u.mag
        t["colour_max"] = [r.colour_range[1] for r in rows] * u.mag
        t["n_seds"] = [r.n_seds for r in rows]
        return t


def _log_pivot(f):
    return float(np.log(f.pivot_wavelength.to_value(u.nm)))


def _default_colour(target, source):
    """The two source filters that bracket the target's pivot (or the two nearest at an end)."""
    srt = sorted(source, key=_log_pivot)
    lt = _log_pivot(target)
    lp = [_log_pivot(f) for f in srt]
    if lt <= lp[0]:
        return srt[0], srt[1]
    if lt >= lp[-1]:
        return srt[-2], srt[-1]
    k = int(np.searchsorted(lp, lt, side="right")) - 1
    return srt[k], srt[k + 1]


def fit_colour_terms(source, target, *, colours=None, degree=2, templates=TEMPLATE_NAMES,
                     redshifts=_DEFAULT_REDSHIFTS, ebv=_DEFAULT_EBV):
    """Fit colour transformations between two filter sets on a template library.

    For each target filter ``T``: ``m_T - m_S = P(m_A - m_B)``, with ``S``
    the source filter nearest in pivot wavelength, ``A - B`` a colour of
    the source set (by default the two source filters that bracket ``T``'s
    pivot, or the two nearest at either end of the set), ``P`` a polynomial
    of degree ``degree`` fitted by least squares to synthetic magnitudes of
    every spectrum of the library.

    Parameters
    ----------
    source, target : str or sequence
        Filter sets (anything `parse_filters` takes); ``source`` needs at
        least two filters.
    colours : dict, optional
        ``{target: (A, B)}`` to choose the colour of some targets.
    degree : int, optional
        Polynomial degree, 0 to 5 (default 2).
    templates : sequence, optional
        Names from `TEMPLATE_NAMES` (each moved to every ``redshifts`` and
        reddened by every ``ebv``) and/or spectra (used as given).
    redshifts : sequence of float, optional
        Default 0, 0.05, ..., 0.4.
    ebv : sequence of float, optional
        E(B-V) of the Calzetti et al. (2000) law, default 0, 0.1, 0.2, 0.3.

    Returns
    -------
    `ColourTerms`
        With each term's RMS and largest residual over the library.

    Raises
    ------
    ValueError
        If ``source`` has fewer than two filters, ``degree`` is out of range,
        a colour names a filter outside ``source``, or the library has fewer
        spectra than ``degree + 2``.

    Examples
    --------
    >>> terms = fit_colour_terms("sdss:g,sdss:r,sdss:i,sdss:z", "decam:r", degree=1,
    ...                          templates=["E", "Sbc"], redshifts=[0, 0.2], ebv=[0])
    >>> terms["decam:r"].colour
    ('sdss:r', 'sdss:i')
    """
    src = parse_filters(source)
    tgt = parse_filters(target)
    if len(src) < 2:
        raise ValueError(f"source needs at least two filters to form a colour, got "
                         f"{[f.name for f in src]}")
    if isinstance(degree, bool) or not isinstance(degree, numbers.Integral) \
            or not 0 <= degree <= 5:
        raise ValueError(f"degree must be an integer from 0 to 5, got {degree!r}")
    chosen = {}
    for key, pair in (colours or {}).items():
        t = get_filter(key).name
        a, b = (get_filter(p) for p in pair)
        for f in (a, b):
            if f.name not in [s.name for s in src]:
                raise ValueError(f"colour {pair!r} for {t} uses {f.name}, which is not a "
                                 f"source filter {[s.name for s in src]}")
        chosen[t] = (a, b)
    library = _library(templates, redshifts, ebv)
    if len(library) < degree + 2:
        raise ValueError(f"the library has {len(library)} spectra; a degree-{degree} fit "
                         f"needs at least {degree + 2}")
    allf = list(src) + [f for f in tgt if f.name not in [s.name for s in src]]
    ratios = _library_fluxes(library, allf)
    mags = -2.5 * np.log10(ratios)
    col = {f.name: mags[:, i] for i, f in enumerate(allf)}
    terms = {}
    for t in tgt:
        s = min(src, key=lambda f: abs(_log_pivot(f) - _log_pivot(t)))
        a, b = chosen.get(t.name) or _default_colour(t, src)
        x = col[a.name] - col[b.name]
        y = col[t.name] - col[s.name]
        coef = np.polynomial.polynomial.polyfit(x, y, degree)
        resid = y - np.polynomial.polynomial.polyval(x, coef)
        terms[t.name] = ColourTerm(
            target=t.name, source_band=s.name, colour=(a.name, b.name),
            coefficients=tuple(float(c) for c in coef),
            scatter=float(np.sqrt(np.mean(resid ** 2))),
            max_residual=float(np.max(np.abs(resid))),
            colour_range=(float(x.min()), float(x.max())), n_seds=len(library))
    return ColourTerms([f.name for f in src], [f.name for f in tgt], terms)


def flux_mapping(from_bands, to_bands, *, templates=TEMPLATE_NAMES,
                 redshifts=_DEFAULT_REDSHIFTS, ebv=_DEFAULT_EBV, return_scatter=False):
    """Linear weights that turn fluxes (or images) in one filter set into another.

    Each target filter is a weighted sum of the two source filters that
    bracket its pivot wavelength (the nearest two at either end; the same
    filter maps onto itself with weight 1), the weights fitted on the
    template library to minimise the relative flux error.  Linear in flux,
    so it applies pixel by pixel: ``target_image = weights @ source_image``
    (the shape of `astro_sbgm.transfer.band_weights`, with real filters).

    Parameters
    ----------
    from_bands, to_bands : str or sequence
        Filter sets (anything `parse_filters` takes).
    templates, redshifts, ebv
        The library, as in `fit_colour_terms`.
    return_scatter : bool, optional
        Also return the RMS error of each target flux over the library (mag).

    Returns
    -------
    weights : `numpy.ndarray`
        ``(len(to_bands), len(from_bands))``.
    scatter : `numpy.ndarray`
        Only with ``return_scatter``: ``(len(to_bands),)`` in mag.

    Examples
    --------
    >>> w = flux_mapping("grz", "hsc:g,hsc:r,hsc:z", templates=["Sbc"], redshifts=[0.1],
    ...                  ebv=[0])
    >>> w.shape
    (3, 3)
    """
    src = parse_filters(from_bands)
    dst = parse_filters(to_bands)
    library = _library(templates, redshifts, ebv)
    allf = list(src) + [f for f in dst if f.name not in [s.name for s in src]]
    flux = _library_fluxes(library, allf)
    col = {f.name: flux[:, i] for i, f in enumerate(allf)}
    names = [f.name for f in src]
    weights = np.zeros((len(dst), len(src)))
    scatter = np.zeros(len(dst))
    for i, t in enumerate(dst):
        if t.name in names:
            weights[i, names.index(t.name)] = 1.0
            continue
        if len(src) == 1:
            pair = [src[0]]
        else:
            pair = list(_default_colour(t, src))
        a = np.stack([col[f.name] / col[t.name] for f in pair], axis=1)
        w, *_ = np.linalg.lstsq(a, np.ones(len(library)), rcond=None)
        for f, wk in zip(pair, w):
            weights[i, names.index(f.name)] = wk
        pred = a @ w
        scatter[i] = float(np.sqrt(np.mean((2.5 * np.log10(np.clip(pred, 1e-30, None))) ** 2)))
    if return_scatter:
        return weights, scatter
    return weights
