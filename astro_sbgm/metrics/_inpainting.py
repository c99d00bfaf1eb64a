"""How well inpainting recovers occluded pixels (Smith, Geach et al. 2022, Fig. 6).

For every occluded pixel the fractional error of the fill is
``(filled - truth) / truth``.  Faint pixels, where the truth is close to the
sky level, have meaningless fractional errors, so the headline number is
taken over the occluded pixels whose true flux is above ``threshold`` times
the background RMS (3 sigma, as in the paper): the fraction of them whose
fill is within ``tolerance`` (10%) of the truth.  The paper's claim is that
"virtually all" such pixels are.
"""

from dataclasses import dataclass, field

import numpy as np
import astropy.units as u
from astropy.nddata import NDData
from astropy.table import QTable
from matplotlib.figure import Figure
from scipy import special

from ..bands import parse_bands

__all__ = ["inpainting_accuracy", "InpaintingAccuracy", "plot_inpainting_accuracy"]


def _stack(images, name):
    """(n, band, y, x) float64 array and band names (or None) from the accepted forms."""
    bands = None
    if isinstance(images, NDData):
        images = [images]
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"{name} is empty")
        first = images[0]
        if isinstance(first, NDData) and first.meta and "BANDS" in first.meta:
            bands = parse_bands(first.meta["BANDS"])
        arrays = [np.asarray(im.data if isinstance(im, NDData) else im, np.float64)
                  for im in images]
        arrays = [a if a.ndim == 3 else a[None] for a in arrays]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"{name} holds images of different shapes {sorted(shapes)}")
        arr = np.stack(arrays)
    else:
        arr = np.asarray(images.value if isinstance(images, u.Quantity) else images,
                         np.float64)
        if arr.ndim == 2:
            arr = arr[None, None]
        elif arr.ndim == 3:
            arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must be (y, x), (band, y, x), (n, band, y, x) or a list of "
                         f"images, got shape {arr.shape}")
    return arr, bands


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
        over all occluded pixels), ``noise_ceiling`` (the ``frac_within``
        expected of a perfect fill, one that equals the noiseless image: the
        sky noise in the truth alone puts a pixel of flux ``f`` outside the
        tolerance with probability ``1 - erf(tolerance f / (sqrt(2)
        background_rms))``; the mean of ``erf(...)`` over the bright pixels,
        with ``f`` the observed flux).
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

    @property
    def fraction_within(self):
        """Fraction of bright occluded pixels within the tolerance (all bands)."""
        return float(self.table["frac_within"][-1])

    def __float__(self):
        return self.fraction_within

    def plot(self, **kwargs):
        """`plot_inpainting_accuracy` of this result."""
        return plot_inpainting_accuracy(self, **kwargs)


def inpainting_accuracy(truth, filled, mask, background_rms, threshold=3.0, tolerance=0.1,
                        bands=None):
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
    tv, fv, rv = t[m], f[m], rms[m]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(tv > 0, (fv - tv) / tv, np.nan)
    bright = tv > float(threshold) * rv
    good = np.abs(frac) < float(tolerance)
    sig = (fv - tv) / rv
    ceiling = special.erf(float(tolerance) * np.abs(tv) / (np.sqrt(2.0) * rv))

    def row(sel, name):
        b = sel & bright
        pos = sel & (tv > 0)
        return (name, int(sel.sum()), int(b.sum()),
                float(good[b].mean()) if b.any() else np.nan,
                float(good[pos].mean()) if pos.any() else np.nan,
                float(np.median(frac[b])) if b.any() else np.nan,
                float(np.median(np.abs(frac[b]))) if b.any() else np.nan,
                float(np.sqrt(np.mean(sig[sel] ** 2))) if sel.any() else np.nan,
                float(ceiling[b].mean()) if b.any() else np.nan)

    rows = [row(band_idx == i, names[i]) for i in range(nb)]
    rows.append(row(np.ones_like(bright), "all"))
    table = QTable(rows=rows, names=("band", "n_occluded", "n_bright", "frac_within",
                                     "frac_within_all", "median_frac_error",
                                     "median_abs_frac_error", "rms_error_sigma",
                                     "noise_ceiling"))
    table.meta["threshold"] = float(threshold)
    table.meta["tolerance"] = float(tolerance)
    table.meta["n_images"] = int(t.shape[0])
    return InpaintingAccuracy(table=table, fractional_error=frac, bright=bright,
                              band=band_idx, bands=names, threshold=float(threshold),
                              tolerance=float(tolerance), n_images=int(t.shape[0]))


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
