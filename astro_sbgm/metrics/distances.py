"""Distances between two galaxy catalogues: W1, Cohen's d and the Synthetic Galaxy Distance.

The Synthetic Galaxy Distance (SGD) of Smith, Geach et al. (2022) compares two
sets of galaxies through six measured properties: the AB magnitudes in g, r
and z, the half-light radius ``R_e`` and the colours g-r and r-z.  It is the
sum of the six one-dimensional Wasserstein-1 distances between the two
catalogues' distributions of those properties::

    SGD = W1(g) + W1(r) + W1(z) + W1(R_e) + W1(g-r) + W1(r-z)

with magnitudes and colours in mag and ``R_e`` in arcsec, summed as plain
numbers.  Because the sum mixes units, the half-light radius must be an angle:
a radius column in pixels is converted with ``pixel_scale=`` (arcsec per
pixel) or refused, and a radius column without a unit is refused (a radius
in pixels summed as if in arcsec weighs 1/0.262 = 3.8 times too much).  Rows
where any of the properties is masked or not finite (for example a
non-positive flux, whose magnitude is undefined) are dropped, and the numbers
used and dropped are reported.  A *baseline* SGD between two disjoint random
samples of one real catalogue (`baseline_sgd`) is the yardstick against which
a model's SGD is read: the paper quotes 0.127 for its model against 0.060
real-vs-real on SDSS.  W1 between samples of N galaxies is biased upward,
roughly as 1/sqrt(N), so compare SGDs only at equal N: give `baseline_sgd`
the model's sample size with ``n=``.

Cohen's d uses the pooled standard deviation
``d = |mean_u - mean_v| / sqrt((s_u^2 + s_v^2) / 2)`` with sample standard
deviations (``ddof=1``).
"""

import os
from dataclasses import dataclass, field

import numpy as np
import astropy.units as u
from astropy.table import MaskedColumn, QTable, Table
from astropy.utils.masked import Masked
from scipy import stats

__all__ = ["wasserstein_1", "cohens_d", "synthetic_galaxy_distance", "baseline_sgd",
           "SGDResult", "SGD_COLUMNS", "read_catalogue"]

#: The six SGD properties: label -> column name of `measure_galaxies` catalogues.
SGD_COLUMNS = {"g": "mag_g", "r": "mag_r", "z": "mag_z", "R_e": "r_half",
               "g-r": "g_r", "r-z": "r_z"}


def _as_values(x):
    """A 1-D float array of the finite, unmasked values of ``x`` and its unit."""
    unit = None
    if isinstance(x, Masked):
        mask = np.asarray(x.mask)
        x = x.unmasked
    elif isinstance(x, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(x)
        x = x.data
    else:
        mask = None
    if isinstance(x, u.Quantity):
        unit = x.unit
        x = x.value
    arr = np.asarray(x, dtype=float).ravel()
    keep = np.isfinite(arr)
    if mask is not None:
        keep &= ~np.asarray(mask, bool).ravel()
    return arr[keep], unit, int(arr.size - keep.sum())


def _pair(u_values, v_values):
    a, ua, _ = _as_values(u_values)
    b, ub, _ = _as_values(v_values)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"both samples need at least one finite value; got {a.size} and "
                         f"{b.size} after dropping NaN and masked entries")
    unit = ua or ub
    if ua is not None and ub is not None and ua != ub:
        try:
            b = (b * ub).to_value(ua)
        except u.UnitConversionError:
            raise u.UnitConversionError(
                f"the two samples have units {ua} and {ub}, which do not convert; "
                "convert one of them first") from None
    elif (ua is None) != (ub is None) and unit != u.dimensionless_unscaled:
        raise u.UnitsError(f"one sample has unit {unit} and the other none; give both "
                           "the same unit")
    return a, b, unit


def wasserstein_1(u_values, v_values):
    """1-D Wasserstein-1 (earth mover's) distance between two samples.

    Parameters
    ----------
    u_values, v_values : array-like or `~astropy.units.Quantity`
        The two samples.  NaN and masked entries are dropped.  Quantities
        are converted to the unit of ``u_values``.

    Returns
    -------
    float or `~astropy.units.Quantity`
        `scipy.stats.wasserstein_distance` of the two empirical distributions,
        in the samples' unit when they have one.

    Raises
    ------
    ValueError
        If either sample is empty after dropping NaN and masked entries.
    astropy.units.UnitConversionError
        If the samples' units do not convert to each other.

    Examples
    --------
    >>> from astro_sbgm.metrics import wasserstein_1
    >>> float(wasserstein_1([0.0, 1.0], [1.0, 2.0]))
    1.0
    """
    a, b, unit = _pair(u_values, v_values)
    w = float(stats.wasserstein_distance(a, b))
    return w * unit if unit is not None else w


def _cohens_d_values(a, b):
    if a.size < 2 or b.size < 2:
        return np.nan
    pooled = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2.0)
    diff = abs(np.mean(a) - np.mean(b))
    if pooled == 0:
        return 0.0 if diff == 0 else np.inf
    return float(diff / pooled)


def cohens_d(u_values, v_values):
    """Cohen's d effect size with the pooled standard deviation.

    ``d = |mean(u) - mean(v)| / sqrt((s_u^2 + s_v^2) / 2)`` with the sample
    standard deviations ``s`` (``ddof=1``).  This is the form the paper
    intends (its printed eq. 16 is garbled).

    Parameters
    ----------
    u_values, v_values : array-like or `~astropy.units.Quantity`
        The two samples (at least two finite values each); NaN and masked
        entries are dropped.

    Returns
    -------
    float
        Dimensionless; 0 for identical constant samples and ``inf`` for
        different constant samples; NaN if a sample has fewer than 2 values.

    Raises
    ------
    ValueError
        If either sample is empty after dropping NaN and masked entries.
    astropy.units.UnitConversionError
        If the samples' units do not convert to each other.

    Examples
    --------
    >>> from astro_sbgm.metrics import cohens_d
    >>> cohens_d([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    1.0
    """
    a, b, _ = _pair(u_values, v_values)
    return _cohens_d_values(a, b)


# --------------------------------------------------------------------------- catalogues
def read_catalogue(catalogue):
    """Read a catalogue from a path (ECSV, FITS, anything `QTable.read` reads).

    Parameters
    ----------
    catalogue : str, path-like, `~astropy.table.Table` or `~astropy.table.QTable`
        A table, or a file name.

    Returns
    -------
    `~astropy.table.QTable`

    Raises
    ------
    TypeError
        If ``catalogue`` is neither a table nor a path.
    FileNotFoundError
        If the path does not exist.
    """
    if isinstance(catalogue, QTable):
        return catalogue
    if isinstance(catalogue, Table):
        return QTable(catalogue)
    if isinstance(catalogue, (str, bytes)) or hasattr(catalogue, "__fspath__"):
        path = os.fspath(catalogue)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such catalogue file: {path!r}")
        return QTable.read(path)
    raise TypeError(f"a catalogue must be an astropy Table/QTable or a file name, got "
                    f"{type(catalogue).__name__}")


def _normalise_columns(columns):
    if columns is None:
        return dict(SGD_COLUMNS)
    if isinstance(columns, dict):
        if not columns:
            raise ValueError("columns is empty: give at least one property column")
        return {str(k): str(v) for k, v in columns.items()}
    if isinstance(columns, str):
        columns = [columns]
    cols = list(columns)
    if not cols:
        raise ValueError("columns is empty: give at least one property column")
    return {str(c): str(c) for c in cols}


def _column(table, name, side):
    if name not in table.colnames:
        raise KeyError(f"catalogue {side} has no column {name!r}; it has {table.colnames}. "
                       "Name the property columns with columns={label: column_name}")
    return table[name]


def _magnitude_like(unit):
    return unit is not None and (unit == u.mag or isinstance(unit, u.MagUnit))


#: Labels of `SGD_COLUMNS`-style properties that are radii (must be angles).
_RADIUS_LABELS = ("R_e",)
#: Column names that hold radii, whatever their label.
_RADIUS_COLUMNS = ("r_half",)


def _parse_pixel_scale(pixel_scale):
    """``pixel_scale`` in arcsec per pixel (a positive float), or None."""
    if pixel_scale is None:
        return None
    try:
        q = u.Quantity(pixel_scale)
        if q.unit == u.dimensionless_unscaled:
            value = q.value
        elif q.unit.is_equivalent(u.arcsec):
            value = q.to_value(u.arcsec)
        else:
            value = q.to_value(u.arcsec / u.pix)
    except (TypeError, ValueError, u.UnitsError):
        raise ValueError(f"pixel_scale must be a number of arcsec per pixel (e.g. 0.262) "
                         f"or a Quantity in arcsec / pix, got {pixel_scale!r}") from None
    if np.ndim(value) != 0 or not np.isfinite(value) or not value > 0:
        raise ValueError(f"pixel_scale must be one positive number of arcsec per pixel "
                         f"(e.g. 0.262), got {pixel_scale!r}")
    return float(value)


def _is_radius(label, column_a, column_b):
    return (label in _RADIUS_LABELS or column_a in _RADIUS_COLUMNS
            or column_b in _RADIUS_COLUMNS)


def _to_angle(values, unit, label, column, side, scale):
    """Convert a column in pixels to arcsec with ``scale``; refuse it without one."""
    if unit is None or unit != u.pix:
        return values, unit
    if scale is None:
        raise u.UnitConversionError(
            f"property {label!r}: column {column!r} of {side} is in pixels, which cannot "
            "be summed with magnitudes; give the pixel scale to convert it to arcsec, "
            "pixel_scale= in arcsec per pixel (0.262 for the Legacy Survey)")
    return values * scale, u.arcsec


def _prepare(cat_a, cat_b, columns, columns_b, pixel_scale=None):
    """Arrays (n_used, n_props) of both catalogues, their units, dropped counts."""
    scale = _parse_pixel_scale(pixel_scale)
    a_tab, b_tab = read_catalogue(cat_a), read_catalogue(cat_b)
    cols_a = _normalise_columns(columns)
    cols_b = cols_a if columns_b is None else _normalise_columns(columns_b)
    if list(cols_b) != list(cols_a):
        raise ValueError(f"columns_b must name the same properties as columns "
                         f"({list(cols_a)}), got {list(cols_b)}")
    for side, tab in (("A", a_tab), ("B", b_tab)):
        if len(tab) == 0:
            raise ValueError(f"catalogue {side} is empty (0 rows)")
    data_a, data_b, units = [], [], {}
    for label in cols_a:
        ca = _column(a_tab, cols_a[label], "A")
        cb = _column(b_tab, cols_b[label], "B")
        va, ua = _split(ca)
        vb, ub = _split(cb)
        va, ua = _to_angle(va, ua, label, cols_a[label], "A", scale)
        vb, ub = _to_angle(vb, ub, label, cols_b[label], "B", scale)
        if _is_radius(label, cols_a[label], cols_b[label]):
            for side, column, unit in (("A", cols_a[label], ua), ("B", cols_b[label], ub)):
                if unit is None or unit.physical_type != "angle":
                    raise u.UnitsError(
                        f"property {label!r}: the radius column {column!r} of {side} has "
                        f"{'no unit' if unit is None else f'unit {unit}'}, but the SGD "
                        "sums it with magnitudes and needs an angle: set its unit, e.g. "
                        f"table[{column!r}].unit = 'arcsec', or, if it is in pixels, "
                        f"table[{column!r}].unit = 'pix' and give pixel_scale= (arcsec "
                        "per pixel)")
        if ua != ub:
            if ua is not None and ub is not None and _magnitude_like(ua) and \
                    _magnitude_like(ub):
                pass  # mag and ABmag: same numbers
            elif ua is None or ub is None:
                raise u.UnitsError(
                    f"property {label!r}: column {cols_a[label]!r} of A has unit {ua} but "
                    f"column {cols_b[label]!r} of B has unit {ub}; set the missing unit, "
                    f"e.g. table[{cols_b[label]!r}].unit = '{ua or ub}'")
            else:
                try:
                    vb = (vb * ub).to_value(ua)
                except u.UnitConversionError:
                    raise u.UnitConversionError(
                        f"property {label!r}: A is in {ua} but B is in {ub}, which do not "
                        "convert (e.g. arcsec vs pixel: convert B with the pixel scale "
                        "first)") from None
        units[label] = ua
        data_a.append(va)
        data_b.append(vb)
    a = np.column_stack(data_a)
    b = np.column_stack(data_b)
    keep_a = np.isfinite(a).all(axis=1)
    keep_b = np.isfinite(b).all(axis=1)
    return a[keep_a], b[keep_b], cols_a, units, int((~keep_a).sum()), int((~keep_b).sum())


def _split(col):
    """Values (NaN where masked) and unit (None if dimensionless) of one column."""
    mask = None
    if isinstance(col, Masked):
        mask = np.asarray(col.mask)
        col = col.unmasked
    elif isinstance(col, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(col)
        col = col.data
    if isinstance(col, u.Quantity):
        unit, vals = col.unit, col.value
    else:
        unit, vals = getattr(col, "unit", None), np.asarray(col)
    try:
        vals = np.array(vals, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"column {getattr(col, 'name', '')!r} is not numeric "
                         f"(dtype {np.asarray(vals).dtype})") from None
    if mask is not None:
        vals[np.asarray(mask, bool).ravel()] = np.nan
    if unit is not None and unit == u.dimensionless_unscaled:
        unit = None
    return vals, unit


@dataclass
class SGDResult:
    """The Synthetic Galaxy Distance between two catalogues, term by term.

    Attributes
    ----------
    total : float
        The SGD: the sum of the W1 terms as plain numbers (mag and arcsec).
    terms : dict
        Label -> W1 distance (`~astropy.units.Quantity` in the column's unit,
        or float for unit-less columns).
    cohens_d : dict
        Label -> Cohen's d of the property.
    columns : dict
        Label -> column name used.
    n_used_a, n_used_b, n_dropped_a, n_dropped_b : int
        Rows used and dropped (a masked or non-finite property) per side.
    n_bootstrap : int
        Bootstrap resamples drawn (0: no spread).
    bootstrap_std : float
        Standard deviation of the total over the resamples (NaN if none).
    bootstrap_term_std : dict
        Label -> standard deviation of the term over the resamples.
    bootstrap_totals : numpy.ndarray
        The resampled totals.
    """

    total: float
    terms: dict
    cohens_d: dict
    columns: dict
    n_used_a: int
    n_used_b: int
    n_dropped_a: int
    n_dropped_b: int
    n_bootstrap: int = 0
    bootstrap_std: float = np.nan
    bootstrap_term_std: dict = field(default_factory=dict)
    bootstrap_totals: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __float__(self):
        return float(self.total)

    def to_table(self):
        """The terms as a `~astropy.table.QTable`.

        Returns
        -------
        `~astropy.table.QTable`
            Columns ``property``, ``column``, ``W1`` (float), ``unit``,
            ``cohens_d`` and, with a bootstrap, ``W1_std``; a last row
            ``SGD`` holds the total (its ``cohens_d`` is masked).  ``meta`` holds the row counts.
        """
        labels = list(self.terms)
        w1 = [float(u.Quantity(self.terms[k]).value) for k in labels]
        table = QTable()
        table["property"] = labels + ["SGD"]
        table["column"] = [self.columns[k] for k in labels] + [""]
        table["W1"] = w1 + [self.total]
        table["unit"] = [str(getattr(self.terms[k], "unit", "")) for k in labels] + [""]
        table["cohens_d"] = MaskedColumn([self.cohens_d[k] for k in labels] + [np.nan],
                                         mask=[False] * len(labels) + [True])
        if self.n_bootstrap:
            table["W1_std"] = [self.bootstrap_term_std[k] for k in labels] + [
                self.bootstrap_std]
        table.meta.update({"n_used_a": self.n_used_a, "n_used_b": self.n_used_b,
                           "n_dropped_a": self.n_dropped_a, "n_dropped_b": self.n_dropped_b,
                           "n_bootstrap": self.n_bootstrap})
        return table

    def __str__(self):
        table = self.to_table()
        table["W1"].info.format = ".4f"
        table["cohens_d"].info.format = ".3f"
        if "W1_std" in table.colnames:
            table["W1_std"].info.format = ".4f"
        lines = table.pformat(max_lines=-1, max_width=-1)
        lines.append(f"galaxies used: A {self.n_used_a} (dropped {self.n_dropped_a}), "
                     f"B {self.n_used_b} (dropped {self.n_dropped_b})")
        if self.n_bootstrap:
            lines.append(f"bootstrap: SGD = {self.total:.4f} +/- {self.bootstrap_std:.4f} "
                         f"({self.n_bootstrap} resamples)")
        return "\n".join(lines)


def _terms(a, b):
    return np.array([stats.wasserstein_distance(a[:, j], b[:, j]) for j in range(a.shape[1])])


def synthetic_galaxy_distance(cat_a, cat_b, *, columns=None, columns_b=None, bootstrap=0,
                              seed=None, pixel_scale=None):
    """Synthetic Galaxy Distance between two catalogues.

    Parameters
    ----------
    cat_a, cat_b : `~astropy.table.QTable`, `~astropy.table.Table` or path
        Catalogues, e.g. from `measure_galaxies`, or ECSV/FITS tables written
        by anyone (see ``columns``).
    columns : dict or sequence of str, optional
        The properties: a dict ``{label: column_name}`` or a list of column
        names.  Default `SGD_COLUMNS`, the six of the paper
        (``mag_g, mag_r, mag_z, r_half, g_r, r_z``).
    columns_b : dict or sequence of str, optional
        Column names in ``cat_b`` when they differ from ``cat_a``'s, with the
        same labels.
    bootstrap : int, optional
        Number of bootstrap resamples (each catalogue resampled with
        replacement) for the spread of the total and of each term.
    seed : int or `numpy.random.Generator`, optional
        Seed of the bootstrap.
    pixel_scale : float or `~astropy.units.Quantity`, optional
        Arcsec per pixel (e.g. 0.262 for the Legacy Survey), used to convert
        any property column in pixels (``u.pix``) to arcsec, on either side.
        Without it a column in pixels is refused: the SGD sums the terms as
        plain numbers, so a radius must be an angle.

    Returns
    -------
    SGDResult
        The total, each term, Cohen's d per property, rows used and dropped
        per side, and the bootstrap spread.  ``str(result)`` is a table.

    Raises
    ------
    KeyError
        If a column is missing (the message lists the columns present).
    ValueError
        If a catalogue is empty, or has no row left after dropping rows with
        masked or non-finite properties, or ``pixel_scale`` is not one
        positive number.
    astropy.units.UnitsError
        If a property's units differ between the catalogues and do not
        convert, or only one side has a unit; if a column is in pixels and no
        ``pixel_scale`` is given (`~astropy.units.UnitConversionError`); if
        the radius property (label ``R_e``, or a column named ``r_half``) has
        no unit or a unit that is not an angle.

    Examples
    --------
    >>> from astropy.table import QTable
    >>> from astro_sbgm.metrics import synthetic_galaxy_distance
    >>> a = QTable({"x": [1.0, 2.0, 3.0]})
    >>> b = QTable({"x": [2.0, 3.0, 4.0]})
    >>> synthetic_galaxy_distance(a, b, columns=["x"]).total
    1.0
    """
    a, b, cols, units, drop_a, drop_b = _prepare(cat_a, cat_b, columns, columns_b,
                                                 pixel_scale)
    for side, arr, dropped in (("A", a, drop_a), ("B", b, drop_b)):
        if arr.shape[0] == 0:
            raise ValueError(f"catalogue {side} has no usable row: all {dropped} rows have a "
                             f"masked or non-finite value in {list(cols.values())}")
    w = _terms(a, b)
    labels = list(cols)
    terms = {k: (w[j] * units[k] if units[k] is not None else float(w[j]))
             for j, k in enumerate(labels)}
    dvals = {k: _cohens_d_values(a[:, j], b[:, j]) for j, k in enumerate(labels)}
    result = SGDResult(total=float(w.sum()), terms=terms, cohens_d=dvals, columns=cols,
                       n_used_a=a.shape[0], n_used_b=b.shape[0], n_dropped_a=drop_a,
                       n_dropped_b=drop_b)
    bootstrap = int(bootstrap)
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative number of resamples, got "
                         f"{bootstrap}")
    if bootstrap:
        rng = np.random.default_rng(seed)
        boot = np.empty((bootstrap, len(labels)))
        for i in range(bootstrap):
            ia = rng.integers(0, a.shape[0], a.shape[0])
            ib = rng.integers(0, b.shape[0], b.shape[0])
            boot[i] = _terms(a[ia], b[ib])
        totals = boot.sum(axis=1)
        ddof = 1 if bootstrap > 1 else 0
        result.n_bootstrap = bootstrap
        result.bootstrap_totals = totals
        result.bootstrap_std = float(np.std(totals, ddof=ddof))
        result.bootstrap_term_std = {k: float(np.std(boot[:, j], ddof=ddof))
                                     for j, k in enumerate(labels)}
    return result


def _usable_rows(table, columns):
    """Indices of the rows of ``table`` whose properties are all unmasked and finite."""
    cols = _normalise_columns(columns)
    keep = np.ones(len(table), bool)
    for label, name in cols.items():
        values, _ = _split(_column(table, name, "A"))
        keep &= np.isfinite(values)
    return np.flatnonzero(keep)


def baseline_sgd(catalogue, seed=None, *, n=None, **kwargs):
    """SGD between two disjoint random samples of one catalogue: the real-vs-real yardstick.

    W1 between two finite samples is biased upward, roughly as ``1/sqrt(N)``
    (two halves of 1000 mock galaxies, 500 vs 500, differ by SGD ~0.2; two
    sets of 1000 by ~0.14), so a baseline is only a yardstick for a model
    scored at the same sample size.  Give that size as ``n``.

    Parameters
    ----------
    catalogue : `~astropy.table.QTable`, `~astropy.table.Table` or path
        One catalogue (at least 2 rows, or ``2 n`` usable rows with ``n``).
    seed : int or `numpy.random.Generator`, optional
        Seed of the random draw (and of the bootstrap, if asked).
    n : int, optional
        Galaxies per side, to match the sample size the model is scored at
        (``n`` generated against ``n`` held-out galaxies).  Both sides are
        drawn without replacement from disjoint galaxies (no galaxy is on
        both sides) among the rows whose properties are all usable, so that
        ``n_used_a == n_used_b == n``; the catalogue must hold at least
        ``2 n`` such rows.  Default None: split all rows into two random
        halves (``N // 2`` and ``N - N // 2``; rows with an unusable property
        are then dropped by `synthetic_galaxy_distance` and counted as
        dropped).
    **kwargs
        Passed to `synthetic_galaxy_distance` (``columns``, ``bootstrap``,
        ``pixel_scale``).

    Returns
    -------
    SGDResult

    Raises
    ------
    ValueError
        If the catalogue has fewer than 2 rows; if ``n`` is not a positive
        integer or the catalogue has fewer than ``2 n`` usable rows.

    Examples
    --------
    A model scored with 20 generated against 20 held-out galaxies is read
    against a baseline of 20 against 20 real ones:

    >>> import numpy as np
    >>> from astropy.table import QTable
    >>> from astro_sbgm.metrics import baseline_sgd
    >>> real = QTable({"x": np.arange(100.0)})
    >>> res = baseline_sgd(real, n=20, seed=0, columns=["x"])
    >>> res.n_used_a, res.n_used_b
    (20, 20)
    """
    table = read_catalogue(catalogue)
    rng = np.random.default_rng(seed)
    if n is None:
        size = len(table)
        if size < 2:
            raise ValueError(f"baseline_sgd needs at least 2 rows to split, got {size}")
        order = rng.permutation(size)
        half = size // 2
        return synthetic_galaxy_distance(table[order[:half]], table[order[half:]], seed=rng,
                                         **kwargs)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (galaxies per side), got {n!r}")
    n = int(n)
    usable = _usable_rows(table, kwargs.get("columns"))
    if usable.size < 2 * n:
        dropped = len(table) - usable.size
        raise ValueError(
            f"baseline_sgd(n={n}) needs 2 x {n} = {2 * n} usable rows (two disjoint "
            f"samples) but the catalogue has {usable.size} usable rows"
            + (f" ({dropped} of its {len(table)} rows have a masked or non-finite "
               "property)" if dropped else "")
            + f"; give n <= {usable.size // 2} or a larger catalogue")
    pick = rng.choice(usable, size=2 * n, replace=False)
    return synthetic_galaxy_distance(table[np.sort(pick[:n])], table[np.sort(pick[n:])],
                                     seed=rng, **kwargs)
