"""How well inpainting recovers occluded pixels (Smith, Geach et al. 2022, Fig. 6).

For every occluded pixel the fractional error of the fill is
``(filled - truth) / truth``.  Faint pixels, where the truth is close to the
sky level, have meaningless fractional errors, so the headline number is
taken over the occluded pixels whose true flux is above ``threshold`` times
the background RMS (3 sigma, as in the paper): the fraction of them whose
fill is within ``tolerance`` (10%) of the truth.  The paper's claim is that
"virtually all" such pixels are.

No fill can beat the sky noise of the truth, so the fraction is read against
a *noise ceiling*, the fraction a perfect fill would reach.  What is perfect
depends on what is scored: a posterior mean (a noiseless fill) differs from
the truth by the truth's own sky noise (``sigma``); a single draw carries its
own sky noise as well, so a perfect draw differs from the truth by noise of
``sqrt(2) sigma``.  `inpainting_accuracy` reports both ceilings and scores the
fill against the one named by ``fill_noise``.  `inpainting_calibration`
checks the spread of several draws against the truth (z-scores and
coverage of the intervals).
"""

from dataclasses import dataclass, field

import numpy as np
import astropy.units as u
from astropy.nddata import NDData
from astropy.table import QTable
from matplotlib.figure import Figure
from scipy import special

from ..bands import parse_bands
from ..io import as_batch

__all__ = ["inpainting_accuracy", "InpaintingAccuracy", "plot_inpainting_accuracy",
           "inpainting_calibration", "noise_ceiling"]


def _stack(images, name):
    """(n, band, y, x) float64 array and band names (or None) from the accepted forms."""
    return as_batch(images, name=name)


def _broadcast_mask(mask, shape):
    if isinstance(mask, (list, tuple)):
        mask = np.stack([np.asarray(m.data if isinstance(m, NDData) else m) for m in mask])
    m = np.asarray(mask.data if isinstance(mask, NDData) else mask) != 0
    n, nb, ny, nx = shape
    candidates = {(ny, nx): m[None, None], (nb, ny, nx): m[None], (n, ny, nx): m[:, None],
                  (n, 1, ny, nx): m, shape: m}
    if m.shape not in candidates:
        raise ValueError(f"the mask has shape {m.shape}, which does not match images of shape "
                         f"{shape} (n, band, y, x); give (y, x), (band, y, x), (n, y, x) or "
                         "(n, band, y, x)")
    return np.broadcast_to(candidates[m.shape], shape)


def _broadcast_rms(rms, shape):
    if isinstance(rms, u.Quantity):
        rms = rms.to_value(u.nanomaggy) if rms.unit.physical_type != "dimensionless" \
            else rms.value
    r = np.asarray(rms, np.float64)
    n, nb, ny, nx = shape
    if r.ndim == 0:
        r = r.reshape(1, 1, 1, 1)
    elif r.shape == (nb,):
        r = r.reshape(1, nb, 1, 1)
    elif r.shape == (n, nb):
        r = r.reshape(n, nb, 1, 1)
    elif r.shape == (n,) and n != nb:
        r = r.reshape(n, 1, 1, 1)
    try:
        r = np.broadcast_to(r, shape)
    except ValueError:
        raise ValueError(f"background_rms has shape {np.shape(rms)}; give a number, one "
                         f"value per band ({nb},), per image and band ({n}, {nb}) or per "
                         "pixel") from None
    if not np.all(np.isfinite(r) & (r > 0)):
        raise ValueError("background_rms must be finite and > 0")
    return r


@dataclass
class InpaintingAccuracy:
    """The outcome of `inpainting_accuracy`.

    Attributes
    ----------
    table : `~astropy.table.QTable`
        One row per band and a last row ``"all"``: ``n_occluded``,
        ``n_bright`` (true flux > threshold x background RMS),
        ``frac_within`` (fraction of bright occluded pixels with
        ``|fractional error| < tolerance``), ``frac_within_all`` (the same
        over every occluded pixel with a positive true flux),
        ``median_frac_error`` and ``median_abs_frac_error`` (bright pixels),
        ``rms_error_sigma`` (RMS of ``(filled - truth) / background_rms``
        over all occluded pixels), ``chi2_per_pixel`` (its square: about 1
        for a perfect posterior mean, about 2 for a perfect draw),
        ``noise_ceiling`` (the ``frac_within`` expected of a perfect
        noiseless fill, the posterior mean: the sky noise in the truth
        alone puts a pixel of flux ``f`` outside the tolerance with
        probability ``1 - erf(tolerance f / (sqrt(2) background_rms))``;
        the mean of ``erf(...)`` over the bright pixels, with ``f`` the
        observed flux), ``draw_ceiling`` (the same for a perfect draw,
        which carries its own sky noise: noise ``sqrt(2) background_rms``),
        ``ceiling`` (the ceiling for a fill carrying ``fill_noise`` times
        the sky noise, see `noise_ceiling`) and ``frac_of_ceiling``
        (``frac_within / ceiling``: the share of the possible).
    fractional_error : `numpy.ndarray`
        ``(filled - truth) / truth`` of every occluded pixel (NaN where the
        truth is <= 0).
    bright : `numpy.ndarray` of bool
        Whether each occluded pixel is above the threshold.
    band : `numpy.ndarray` of int
        Band index of each occluded pixel.
    bands : tuple of str
        Band names (``"0"``, ``"1"``, ... when unknown).
    threshold, tolerance : float
        As given.
    """

    table: QTable
    fractional_error: np.ndarray
    bright: np.ndarray
    band: np.ndarray
    bands: tuple
    threshold: float
    tolerance: float
    n_images: int = 0
    extra: dict = field(default_factory=dict)
    """Per occluded pixel: ``image`` (index of its image), ``within`` (fill
    within the tolerance), ``ceiling`` (a perfect fill's probability of it,
    for the ``fill_noise`` given), ``sigma_error`` ((filled - truth) /
    background_rms); for bootstrap intervals over images."""

    @property
    def fraction_within(self):
        """Fraction of bright occluded pixels within the tolerance (all bands)."""
        return float(self.table["frac_within"][-1])

    def __float__(self):
        return self.fraction_within

    def plot(self, **kwargs):
        """`plot_inpainting_accuracy` of this result."""
        return plot_inpainting_accuracy(self, **kwargs)


def noise_ceiling(truth, background_rms, threshold=3.0, tolerance=0.1, fill_noise=0.0):
    """Per-pixel probability that a perfect fill lands within the tolerance.

    A perfect fill differs from the observed ``truth`` by the truth's sky
    noise and by the noise the fill carries itself, ``fill_noise`` times
    the sky noise (0: a noiseless fill, the posterior mean; 1: a draw,
    which has the sky noise of a real image; ``sqrt(1 / K)``: the mean of
    ``K`` perfect draws).  With ``f`` the truth, the probability is
    ``erf(tolerance |f| / (sqrt(2) background_rms sqrt(1 + fill_noise**2)))``.

    Parameters
    ----------
    truth, background_rms : array-like
        Observed flux and sky sigma per pixel (broadcastable).
    threshold : float
        Unused in the value; kept so that callers can pass the same
        settings as to `inpainting_accuracy` (pixels below it are not
        scored there).
    tolerance : float
        Fractional tolerance (0.1).
    fill_noise : float
        Noise of the fill in units of the sky noise (>= 0).

    Returns
    -------
    `numpy.ndarray`
        The probability per pixel; average it over the scored pixels.

    Raises
    ------
    ValueError
        For a negative ``fill_noise`` or a tolerance <= 0.
    """
    if not float(fill_noise) >= 0:
        raise ValueError(f"fill_noise must be >= 0 (0: noiseless fill, 1: a draw), got "
                         f"{fill_noise!r}")
    if not float(tolerance) > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    scale = np.sqrt(2.0 * (1.0 + float(fill_noise) ** 2)) * np.asarray(background_rms, float)
    return special.erf(float(tolerance) * np.abs(np.asarray(truth, float)) / scale)


def inpainting_accuracy(truth, filled, mask, background_rms, threshold=3.0, tolerance=0.1,
                        bands=None, fill_noise=0.0):
    """Fractional error of inpainted pixels, overall and above a flux threshold.

    Parameters
    ----------
    truth, filled : array-like, `~astropy.nddata.NDData` or list of them
        The untouched and the inpainted images: ``(y, x)``, ``(band, y, x)``,
        ``(n, band, y, x)`` or a list of ``(band, y, x)`` images, same shape,
        same flux unit.
    mask : array-like or list
        True at the occluded (inpainted) pixels: ``(y, x)``, ``(band, y,
        x)``, ``(n, y, x)`` or ``(n, band, y, x)``.
    background_rms : float, array-like or `~astropy.units.Quantity`
        Sky noise: one number, one per band, one per image and band
        ``(n, band)``, or per pixel; in the images' unit (a Quantity is
        converted to nanomaggy).
    threshold : float
        Pixels whose true flux exceeds ``threshold * background_rms`` are
        "bright" (3 in the paper).
    tolerance : float
        A fill is good when ``|fractional error| < tolerance`` (0.1).
    bands : str or sequence of str, optional
        Band names for the table (taken from ``meta['BANDS']`` of CCDData).
    fill_noise : float
        The sky noise ``filled`` carries in its filled pixels, in units of
        the sky sigma, which sets the ``ceiling`` it is scored against:
        0 (default) for a posterior mean or any noiseless estimate, 1 for
        a single draw, ``sqrt(1 / K)`` for the mean of ``K`` draws.

    Returns
    -------
    InpaintingAccuracy

    Raises
    ------
    ValueError
        For images of different shapes, a mask or ``background_rms`` that
        does not fit them, a mask with no pixel, or bad threshold/tolerance.
    """
    t, names_t = _stack(truth, "truth")
    f, names_f = _stack(filled, "filled")
    if t.shape != f.shape:
        raise ValueError(f"truth has shape {t.shape} but filled {f.shape}; give images of "
                         "the same shape")
    if not float(threshold) >= 0 or not float(tolerance) > 0:
        raise ValueError(f"threshold must be >= 0 and tolerance > 0, got {threshold!r}, "
                         f"{tolerance!r}")
    m = _broadcast_mask(mask, t.shape)
    if not m.any():
        raise ValueError("the mask selects no pixel: nothing was inpainted")
    rms = _broadcast_rms(background_rms, t.shape)
    nb = t.shape[1]
    names = bands or names_t or names_f
    names = tuple(parse_bands(names)) if names is not None else tuple(str(i) for i in range(nb))
    if len(names) != nb:
        raise ValueError(f"bands {names} name {len(names)} band(s) but the images have {nb}")
    band_idx = np.broadcast_to(np.arange(nb)[None, :, None, None], t.shape)[m]
    image_idx = np.broadcast_to(np.arange(t.shape[0])[:, None, None, None], t.shape)[m]
    tv, fv, rv = t[m], f[m], rms[m]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(tv > 0, (fv - tv) / tv, np.nan)
    bright = tv > float(threshold) * rv
    good = np.abs(frac) < float(tolerance)
    sig = (fv - tv) / rv
    ceiling = noise_ceiling(tv, rv, tolerance=tolerance)
    ceiling_draw = noise_ceiling(tv, rv, tolerance=tolerance, fill_noise=1.0)
    ceiling_fill = noise_ceiling(tv, rv, tolerance=tolerance, fill_noise=fill_noise)

    def row(sel, name):
        b = sel & bright
        pos = sel & (tv > 0)
        within = float(good[b].mean()) if b.any() else np.nan
        ceil = float(ceiling_fill[b].mean()) if b.any() else np.nan
        chi2 = float(np.mean(sig[sel] ** 2)) if sel.any() else np.nan
        return (name, int(sel.sum()), int(b.sum()), within,
                float(good[pos].mean()) if pos.any() else np.nan,
                float(np.median(frac[b])) if b.any() else np.nan,
                float(np.median(np.abs(frac[b]))) if b.any() else np.nan,
                float(np.sqrt(chi2)), chi2,
                float(ceiling[b].mean()) if b.any() else np.nan,
                float(ceiling_draw[b].mean()) if b.any() else np.nan,
                ceil, within / ceil if b.any() and ceil > 0 else np.nan)

    rows = [row(band_idx == i, names[i]) for i in range(nb)]
    rows.append(row(np.ones_like(bright), "all"))
    table = QTable(rows=rows, names=("band", "n_occluded", "n_bright", "frac_within",
                                     "frac_within_all", "median_frac_error",
                                     "median_abs_frac_error", "rms_error_sigma",
                                     "chi2_per_pixel", "noise_ceiling", "draw_ceiling",
                                     "ceiling", "frac_of_ceiling"))
    table.meta["threshold"] = float(threshold)
    table.meta["fill_noise"] = float(fill_noise)
    table.meta["tolerance"] = float(tolerance)
    table.meta["n_images"] = int(t.shape[0])
    return InpaintingAccuracy(table=table, fractional_error=frac, bright=bright,
                              band=band_idx, bands=names, threshold=float(threshold),
                              tolerance=float(tolerance), n_images=int(t.shape[0]),
                              extra={"image": image_idx, "within": good,
                                     "ceiling": ceiling_fill, "sigma_error": sig})


def inpainting_calibration(truth, draws, mask, background_rms=None):
    """How well the spread of several inpainting draws describes their error.

    For every occluded pixel, with ``K`` draws of mean ``m`` and standard
    deviation ``s`` (``ddof=1``), ``z = (truth - m) / (s sqrt(1 + 1/K))``.
    If the truth were one more draw from the same distribution as the
    draws (a calibrated posterior, with the sky noise in both), ``z`` would
    follow Student's t with ``K - 1`` degrees of freedom: the table reports
    the standard deviation of ``z`` divided by that of the t distribution
    (``z_std``, 1 when calibrated; needs ``K >= 4``) and the coverage of the
    t intervals that should hold 68.27% and 95.45% of the truths (the
    Gaussian 1 and 2 sigma levels).  ``z_std`` above 1 and coverage below
    the nominal level mean the draws are too alike (over-confident).

    Parameters
    ----------
    truth : array-like or list of `~astropy.nddata.NDData`
        The untouched images, ``(n, band, y, x)`` (or a single image).
    draws : array-like
        ``(n, K, band, y, x)`` draws of every image (``K >= 2``); a list of
        ``n`` lists of ``K`` images is accepted too.
    mask : array-like
        Occluded pixels, as for `inpainting_accuracy`.
    background_rms : optional
        Unused by the z-scores; when given, the table also holds the
        median draw spread in units of it (``median_spread_sigma``).

    Returns
    -------
    `~astropy.table.QTable`
        One row per band and a last row ``"all"``: ``n_pixels``,
        ``n_draws``, ``z_std``, ``z_mad_std`` (1.4826 x MAD of ``z``
        divided by that of the t distribution; robust to a few wild pixels),
        ``coverage_68``, ``coverage_95``, ``median_spread_sigma``.

    Raises
    ------
    ValueError
        For fewer than 2 draws, shapes that do not match, or an empty mask.
    """
    from scipy import stats

    if isinstance(draws, (list, tuple)):
        draws = np.stack([_stack(d, "draws")[0] for d in draws])
    d = np.asarray(draws, np.float64)
    t, names = _stack(truth, "truth")
    if d.ndim == 4 and t.shape[0] == 1:
        d = d[None]
    if d.ndim != 5 or d.shape[0] != t.shape[0] or d.shape[2:] != t.shape[1:]:
        raise ValueError(f"draws have shape {d.shape}; give (n, K, band, y, x) with n, band, "
                         f"y, x those of the truth {t.shape}")
    K = d.shape[1]
    if K < 2:
        raise ValueError(f"calibration needs at least 2 draws per image, got {K}")
    m = _broadcast_mask(mask, t.shape)
    if not m.any():
        raise ValueError("the mask selects no pixel: nothing was inpainted")
    mean = d.mean(axis=1)[m]
    std = d.std(axis=1, ddof=1)[m]
    tv = t[m]
    nb = t.shape[1]
    band_idx = np.broadcast_to(np.arange(nb)[None, :, None, None], t.shape)[m]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (tv - mean) / (std * np.sqrt(1.0 + 1.0 / K))
    ok = np.isfinite(z)
    dist = stats.t(K - 1)
    t_std = float(dist.std()) if K > 3 else np.nan
    t_mad = float(dist.ppf(0.75)) * 1.4826
    q68, q95 = float(dist.ppf(0.5 + 0.6827 / 2)), float(dist.ppf(0.5 + 0.9545 / 2))
    spread = None
    if background_rms is not None:
        spread = std / _broadcast_rms(background_rms, t.shape)[m]
    names = tuple(parse_bands(names)) if names is not None else tuple(str(i) for i in range(nb))
    rows = []
    for name, sel in [(names[i], band_idx == i) for i in range(nb)] + [
            ("all", np.ones_like(ok))]:
        zz = z[sel & ok]
        if zz.size == 0:
            rows.append((name, 0, K, np.nan, np.nan, np.nan, np.nan, np.nan))
            continue
        mad = 1.4826 * np.median(np.abs(zz - np.median(zz)))
        rows.append((name, int(zz.size), K, float(np.std(zz) / t_std),
                     float(mad / t_mad), float(np.mean(np.abs(zz) <= q68)),
                     float(np.mean(np.abs(zz) <= q95)),
                     float(np.median(spread[sel])) if spread is not None else np.nan))
    return QTable(rows=rows, names=("band", "n_pixels", "n_draws", "z_std", "z_mad_std",
                                    "coverage_68", "coverage_95", "median_spread_sigma"))


def plot_inpainting_accuracy(result, bins=60, limit=1.0, panel_size=4.0):
    """Histograms of the fractional error: all occluded pixels and bright ones.

    Parameters
    ----------
    result : `InpaintingAccuracy`
        From `inpainting_accuracy`.
    bins : int
        Histogram bins.
    limit : float
        The x axis spans ``-limit .. limit``; errors outside are piled into
        the end bins.
    panel_size : float
        Panel height in inches.

    Returns
    -------
    `matplotlib.figure.Figure`
        Two panels (all occluded pixels with a positive true flux; pixels
        above the threshold), one step histogram per band, the tolerance
        marked and the fraction within it written in the legend.
    """
    if not isinstance(result, InpaintingAccuracy):
        raise TypeError(f"give the InpaintingAccuracy returned by inpainting_accuracy, got a "
                        f"{type(result).__name__}")
    fig = Figure(figsize=(2.2 * panel_size, panel_size))
    axes = fig.subplots(1, 2, sharex=True)
    edges = np.linspace(-limit, limit, int(bins) + 1)
    finite = np.isfinite(result.fractional_error)
    titles = ("all occluded pixels",
              f"occluded pixels > {result.threshold:g}$\\sigma$ of the background")
    for ax, sel, title, col in zip(axes, (finite, finite & result.bright), titles,
                                   ("frac_within_all", "frac_within")):
        for i, name in enumerate(result.bands):
            vals = np.clip(result.fractional_error[sel & (result.band == i)], -limit, limit)
            frac = result.table[col][i]
            ax.hist(vals, bins=edges, histtype="step",
                    label=f"{name}: {100 * frac:.0f}% within" if np.isfinite(frac) else name)
        for x in (-result.tolerance, result.tolerance):
            ax.axvline(x, color="0.5", ls="--", lw=1)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("(filled - truth) / truth")
        ax.legend(fontsize="small")
    axes[0].set_ylabel("pixels")
    fig.tight_layout()
    return fig
