"""Catalogue properties as conditions of a generative model: names, units, standardisation.

A conditional `~astro_sbgm.GalaxyDiffusion` is conditioned on columns of
`astro_sbgm.metrics.measure_galaxies` (so requests live in the measurement
system that checks the draws).  This module knows which columns qualify and
their units, reads a request (QTable, Table, dict of Quantities) into an
array in those units, measures the properties of training images, and keeps
the standardisation (mean, standard deviation, range) that is stored in the
model's JSON, and the population of training values the model draws its
conditions from when it is given none.
"""

import warnings

import numpy as np
import astropy.units as u

from .exceptions import AstroSBGMConditionWarning

__all__ = ["condition_units", "check_condition_names", "read_conditions",
           "measure_conditions", "ConditionStats"]

#: Most rows of a condition population a model stores (a random subset of a larger
#: training set: 65,536 rows of 4 properties are 1 MB in float32).
POPULATION_MAX_ROWS = 65536
#: Tag of the per-galaxy random streams that pick population rows (apart from the noise).
_POPULATION_STREAM = 0x706F70

#: Morphology columns of `measure_galaxies` (``morphology=True``), dimensionless.
MORPHOLOGY_COLUMNS = ("concentration", "asymmetry", "gini", "ellipticity")


def condition_units(bands):
    """The columns a model with these bands can be conditioned on, and their units.

    Parameters
    ----------
    bands : sequence of str
        The model's bands, in order.

    Returns
    -------
    dict
        Column name -> `~astropy.units.Unit`: ``mag_<b>`` and colours
        ``<b1>_<b2>`` of consecutive bands in mag, ``flux_<b>`` in nanomaggy,
        ``r_half`` in arcsec, and the dimensionless morphology columns.
    """
    out = {}
    for b in bands:
        out[f"mag_{b}"] = u.mag
    for b1, b2 in zip(bands[:-1], bands[1:]):
        out[f"{b1}_{b2}"] = u.mag
    for b in bands:
        out[f"flux_{b}"] = u.nanomaggy
    out["r_half"] = u.arcsec
    for name in MORPHOLOGY_COLUMNS:
        out[name] = u.dimensionless_unscaled
    return out


def check_condition_names(names, bands):
    """Check a ``conditions=`` list; return it as a tuple of str (None -> ()).

    Raises
    ------
    ValueError
        For a name that is not a column of `measure_galaxies` for these
        bands (the known names are listed), a repeated name, or a bare
        string (give a list).
    """
    if names is None:
        return ()
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = tuple(str(n) for n in names)
    known = condition_units(bands)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}: conditions are columns of "
                         f"astro_sbgm.metrics.measure_galaxies, one of {sorted(known)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"condition(s) {repeated} given more than once")
    return names


def _column(table, name):
    if hasattr(table, "colnames"):
        return table[name]
    return table[name]


def read_conditions(table, names, bands, pixel_scale, n=None, allow_extra=False,
                    keyword="conditions"):
    """Read requested properties into an ``(n, k)`` float array in the model's units.

    Parameters
    ----------
    table : `~astropy.table.QTable`, `~astropy.table.Table` or dict
        One column per condition (the model's names), each a
        `~astropy.units.Quantity` (or a column with a unit): magnitudes and
        colours in mag, ``r_half`` in an angle or in pixels (converted with
        ``pixel_scale``), fluxes in nanomaggies or any spectral flux density;
        morphology columns dimensionless.  A dict may hold scalars, which
        apply to every row.
    names : sequence of str
        The model's conditions, in order.
    bands : sequence of str
        The model's bands.
    pixel_scale : float
        Arcsec per pixel of the model grid.
    n : int, optional
        Number of rows wanted (scalars are broadcast to it; other lengths are
        refused).
    allow_extra : bool
        Ignore columns that are not conditions (a catalogue), instead of
        refusing them.
    keyword : str
        The argument name used in error messages.

    Returns
    -------
    `numpy.ndarray`
        ``(n, k)`` float64; masked entries are NaN.

    Raises
    ------
    ValueError
        For a missing column, an extra one (unless ``allow_extra``), rows
        of different lengths, or a length other than ``n``.
    astropy.units.UnitConversionError
        For a column whose unit cannot be converted (named in the message),
        or a dimensioned column given without a unit.
    """
    units = condition_units(bands)
    if hasattr(table, "colnames"):
        given = list(table.colnames)
    elif hasattr(table, "keys"):
        given = list(table.keys())
    else:
        raise TypeError(f"{keyword} must be a QTable, Table or dict of Quantities, got "
                        f"{type(table).__name__}")
    missing = [c for c in names if c not in given]
    if missing:
        raise ValueError(f"{keyword} lacks column(s) {missing}; this model is conditioned on "
                         f"{list(names)}")
    extra = [c for c in given if c not in names]
    if extra and not allow_extra:
        raise ValueError(f"{keyword} has column(s) {extra} that this model is not "
                         f"conditioned on; it takes exactly {list(names)}")
    cols = []
    scale = u.pixel_scale(float(pixel_scale) * u.arcsec / u.pix)
    for name in names:
        value = _column(table, name)
        target = units[name]
        mask = None
        if hasattr(value, "unmasked"):            # astropy Masked (MaskedQuantity)
            mask = np.asarray(value.mask)
            value = value.unmasked
        elif isinstance(value, np.ma.MaskedArray):  # MaskedColumn
            mask = np.ma.getmaskarray(value)
            unit = getattr(value, "unit", None)
            value = np.asarray(np.ma.getdata(value), dtype=np.float64)
            value = value if unit is None else value * u.Unit(unit)
        unit = getattr(value, "unit", None)
        data = np.array(getattr(value, "value", value), dtype=np.float64, copy=True)
        if mask is not None:
            data = np.where(mask, np.nan, data)
        if unit is None:
            if target != u.dimensionless_unscaled:
                raise u.UnitConversionError(
                    f"{keyword} column {name!r} has no unit; give it in {target}"
                    + (" or in pixels (u.pix)" if name == "r_half" else ""))
        else:
            unit = u.Unit(unit)
            if isinstance(unit, u.MagUnit):
                unit = u.mag  # an AB magnitude or colour is a number of magnitudes here
            try:
                data = (data * unit).to_value(target, equivalencies=scale)
            except u.UnitConversionError:
                hint = " or pixels" if name == "r_half" else ""
                raise u.UnitConversionError(
                    f"{keyword} column {name!r} is in {unit}, which cannot be converted to "
                    f"{target}{hint}") from None
        data = np.where(mask, np.nan, data)
        cols.append(np.atleast_1d(data))
    lengths = {len(c) for c in cols if len(c) != 1} or {1}
    if len(lengths) > 1:
        raise ValueError(f"{keyword} columns have different lengths {sorted(lengths)}")
    m = lengths.pop()
    if n is None:
        n = m
    if m not in (1, int(n)):
        raise ValueError(f"{keyword} has {m} rows for {n} galaxies: give one row per galaxy "
                         "(or scalars for all)")
    return np.stack([np.broadcast_to(c, (int(n),)) for c in cols], axis=1).astype(np.float64)


def measure_conditions(fluxes, names, bands, pixel_scale, chunk_size=512):
    """Measure the condition columns on images with `measure_galaxies`.

    Parameters
    ----------
    fluxes : `numpy.ndarray`
        ``(n, band, y, x)`` in nanomaggies, the model's bands.
    names, bands, pixel_scale
        As for `read_conditions`.

    Returns
    -------
    `numpy.ndarray`
        ``(n, k)`` float64 in the units of `condition_units`; NaN where a
        property could not be measured.
    """
    from .metrics import measure_galaxies

    morphology = any(name in MORPHOLOGY_COLUMNS for name in names)
    units = condition_units(bands)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cat = measure_galaxies(np.asarray(fluxes), bands="".join(bands) if all(
            len(b) == 1 for b in bands) else list(bands), pixel_scale=float(pixel_scale),
            morphology=morphology, chunk_size=chunk_size, errors=None)
    cols = []
    for name in names:
        col = cat[name]
        mask = np.ma.getmaskarray(getattr(col, "mask", np.zeros(len(col), bool)))
        value = getattr(col, "unmasked", col)
        value = u.Quantity(value).to_value(units[name]) if hasattr(value, "unit") else \
            np.asarray(value, float)
        cols.append(np.where(mask | ~np.isfinite(value), np.nan, value))
    return np.stack(cols, axis=1)


class ConditionStats:
    """Standardisation of the conditions: ``(value - mean) / std`` per property.

    Stored in the model JSON (`to_dict`, `from_dict`) with the units, the
    range of the training values (requests outside it are warned about) and
    how the training values were obtained.  ``population`` holds rows of
    property values, in these units, that the model draws its conditions
    from when a draw is given none (`set_population`, `draw_population`);
    it is stored beside the weights, not in the JSON.
    """

    def __init__(self, names, units, mean, std, low, high, n_rows, n_unmeasured, source,
                 population=None):
        self.names = tuple(names)
        self.units = tuple(str(x) for x in units)
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)
        self.low = np.asarray(low, np.float64)
        self.high = np.asarray(high, np.float64)
        self.n_rows = int(n_rows)
        self.n_unmeasured = int(n_unmeasured)
        self.source = str(source)
        self.population = None
        if population is not None:
            self.set_population(population)

    def set_population(self, values, seed=0):
        """Keep the rows ``values`` ``(m, k)`` as the population of conditions.

        Rows with a NaN are kept (a draw given such a row is unconditional,
        as its training image was).  More than `POPULATION_MAX_ROWS` rows
        are thinned to a random subset of that many (``seed``).

        Raises
        ------
        ValueError
            If ``values`` is not ``(m, k)`` with ``m >= 1`` for this model's
            ``k`` properties.
        """
        values = np.asarray(values, np.float64)
        k = len(self.names)
        if values.ndim != 2 or values.shape[1] != k or len(values) == 0:
            raise ValueError(f"a population of conditions has one row per galaxy and one "
                             f"column per property {list(self.names)}: shape (m, {k}) with "
                             f"m >= 1, got {values.shape}")
        if len(values) > POPULATION_MAX_ROWS:
            keep = np.sort(np.random.default_rng(seed).choice(
                len(values), POPULATION_MAX_ROWS, replace=False))
            values = values[keep]
        self.population = values.astype(np.float32)

    def draw_population(self, seed, start, n):
        """Population rows for galaxies ``start .. start + n - 1`` of ``seed``.

        Galaxy ``i``'s row is picked uniformly by its own random stream
        (``seed``, ``i``), apart from its noise: it depends on neither ``n``
        nor the batching.

        Returns
        -------
        values : `numpy.ndarray`
            ``(n, k)`` float64, in the units of `units`.
        index : `numpy.ndarray`
            ``(n,)`` row numbers in `population`.
        """
        if self.population is None:
            raise ValueError("this model stores no population of conditions")
        m = len(self.population)
        index = np.array([np.random.default_rng([int(seed), int(i), _POPULATION_STREAM])
                          .integers(m) for i in range(int(start), int(start) + int(n))],
                         dtype=np.int64)
        return self.population[index].astype(np.float64), index

    def population_table(self):
        """The population as a `~astropy.table.QTable` with units (None if absent)."""
        from astropy.table import QTable

        if self.population is None:
            return None
        return QTable({name: self.population[:, j].astype(np.float64) * u.Unit(unit)
                       for j, (name, unit) in enumerate(zip(self.names, self.units))})

    @classmethod
    def fit(cls, values, names, bands, source):
        """Statistics of training values ``(n, k)`` (rows with a NaN are left out).

        Raises
        ------
        ValueError
            If fewer than two rows are measured, or a property does not vary.
        """
        values = np.asarray(values, np.float64)
        ok = np.isfinite(values).all(axis=1)
        if ok.sum() < 2:
            raise ValueError(f"only {int(ok.sum())} of {len(values)} training images have every "
                             f"condition {list(names)} measured; conditional training needs "
                             "more")
        good = values[ok]
        std = good.std(axis=0)
        flat = [n for n, s in zip(names, std) if not s > 0]
        if flat:
            raise ValueError(f"condition(s) {flat} take a single value on the training set; "
                             "they cannot be conditioned on")
        units = condition_units(bands)
        return cls(names, [units[n] for n in names], good.mean(axis=0), std, good.min(axis=0),
                   good.max(axis=0), len(values), int((~ok).sum()), source)

    def extended(self, values, names, bands, source):
        """Statistics for more conditions: ``names`` starts with `names`.

        The conditions already known keep their standardisation (the
        network's embedding of them stays valid); the new ones are
        standardised by the training values ``(n, len(names))``.  The range
        is that of the new training values, widened to the old range.

        Raises
        ------
        ValueError
            As `fit`, or if ``names`` does not start with this model's names.
        """
        k = len(self.names)
        if tuple(names[:k]) != self.names or len(names) <= k:
            raise ValueError(f"the conditions {list(names)} do not extend {list(self.names)} "
                             "(the model's conditions first, then the new ones)")
        new = type(self).fit(values, names, bands, source)
        new.mean[:k], new.std[:k] = self.mean, self.std
        new.low[:k] = np.minimum(new.low[:k], self.low)
        new.high[:k] = np.maximum(new.high[:k], self.high)
        return new

    def standardise(self, values):
        """``(values - mean) / std`` as float32; NaN rows stay NaN (unconditional)."""
        return ((np.asarray(values, np.float64) - self.mean) / self.std).astype(np.float32)

    def warn_out_of_range(self, values, keyword="conditions"):
        """Warn for each property requested outside the training range."""
        values = np.asarray(values, np.float64)
        for j, name in enumerate(self.names):
            v = values[:, j]
            out = np.isfinite(v) & ((v < self.low[j]) | (v > self.high[j]))
            if out.any():
                warnings.warn(
                    f"{int(out.sum())} of {len(v)} requested {name} value(s) lie outside the "
                    f"training range [{self.low[j]:.4g}, {self.high[j]:.4g}] {self.units[j]} "
                    f"(requested {np.nanmin(v[out]):.4g} to {np.nanmax(v[out]):.4g}); the "
                    "model extrapolates there", AstroSBGMConditionWarning)

    def request_cards(self, values, guidance_scale):
        """FITS cards that record one request: ``GUIDANCE`` and, per property
        ``j``, ``CONDNj`` (name), ``CONDVj`` (requested value, absent when not
        requested) and ``CONDUj`` (unit)."""
        cards = {"GUIDANCE": (float(guidance_scale), "classifier-free guidance scale")}
        for j, (name, unit) in enumerate(zip(self.names, self.units)):
            cards[f"CONDN{j}"] = (name, "requested property (measure_galaxies column)")
            if np.isfinite(values[j]):
                cards[f"CONDV{j}"] = (float(values[j]), f"requested {name}")
            cards[f"CONDU{j}"] = (unit, f"unit of CONDV{j}")
        return cards

    def to_dict(self):
        """JSON-serialisable dict."""
        return {"names": list(self.names), "units": list(self.units),
                "mean": self.mean.tolist(), "std": self.std.tolist(),
                "min": self.low.tolist(), "max": self.high.tolist(),
                "n_rows": self.n_rows, "n_unmeasured": self.n_unmeasured,
                "source": self.source,
                "population_rows": 0 if self.population is None else len(self.population)}

    @classmethod
    def from_dict(cls, d):
        """Inverse of `to_dict` (the population, stored apart, is not in it)."""
        return cls(d["names"], d["units"], d["mean"], d["std"], d["min"], d["max"],
                   d.get("n_rows", 0), d.get("n_unmeasured", 0), d.get("source", ""))

    def __repr__(self):
        parts = ", ".join(f"{n}: {m:.3g} +- {s:.3g} {un}" for n, m, s, un in
                          zip(self.names, self.mean, self.std, self.units))
        return f"ConditionStats({parts})"
