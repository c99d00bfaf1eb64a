"""Colour composites and figures of multi-band galaxy images.

Images are ``(band, y, x)`` arrays in nanomaggy (or `~astropy.nddata.CCDData`
/ `~astropy.nddata.NDData` carrying their band names in ``meta['BANDS']``).
Composites use the asinh scheme of Lupton et al. (2004) through
`astropy.visualization.make_lupton_rgb`.  The reddest band goes to red, the
bluest to blue (by `astro_sbgm.bands.BAND_WAVELENGTHS`), so a Legacy Survey
``grz`` cutout is shown as z -> R, r -> G, g -> B.

All figures are built on `matplotlib.figure.Figure` directly: no pyplot, no
GUI backend, nothing shown; the caller saves or displays the figure.
"""

import numpy as np
from astropy.nddata import NDData
from astropy.visualization import ManualInterval, make_lupton_rgb

from .bands import BAND_WAVELENGTHS, parse_bands

__all__ = ["rgb_composite", "plot_montage", "plot_comparison", "LEGACY_SURVEY_RGB_SCALES"]

#: Relative weights applied to each band before the composite (r = 1).  They
#: follow the ratios of the Legacy Survey viewer's grz colour scales
#: (g 6.0, r 3.4, z 2.2), so that galaxies take their familiar colours:
#: red ellipticals, blue star-forming disks.  Bands not listed get 1.
LEGACY_SURVEY_RGB_SCALES = {"u": 6.0 / 3.4, "g": 6.0 / 3.4, "r": 1.0, "i": 0.8,
                            "z": 2.2 / 3.4, "y": 2.2 / 3.4}

_DEFAULT_STRETCH = 0.1
_DEFAULT_Q = 8.0


def _split_image(image, bands):
    """Return (array (band, y, x), band names or None) from any accepted form."""
    meta_bands = None
    if isinstance(image, NDData):
        meta = image.meta or {}
        if "BANDS" in meta:
            meta_bands = meta["BANDS"]
        elif "BAND0" in meta:
            meta_bands = [meta[f"BAND{i}"] for i in range(len(image.data))
                          if f"BAND{i}" in meta]
        data = np.asarray(image.data, dtype=float)
    else:
        data = np.asarray(image, dtype=float)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"image must have shape (band, y, x) or (y, x), got shape "
                         f"{data.shape}")
    if bands is None:
        bands = meta_bands
    if bands is not None:
        bands = parse_bands(bands)
        if len(bands) != data.shape[0]:
            raise ValueError(f"bands {bands} name {len(bands)} band(s) but the image has "
                             f"{data.shape[0]} plane(s)")
    return data, bands


def _channel_planes(data, bands):
    """Red, green, blue planes (each (y, x)) from a (band, y, x) array."""
    nb = data.shape[0]
    if bands is not None:
        order = np.argsort([BAND_WAVELENGTHS[b].to_value("nm") for b in bands])
    else:
        # without names, assume the planes run from blue to red (e.g. g, r, z)
        order = np.arange(nb)
    planes = data[order]  # blue ... red
    if nb == 1:
        return planes[0], planes[0], planes[0]
    if nb == 2:
        return planes[1], 0.5 * (planes[0] + planes[1]), planes[0]
    groups = np.array_split(np.arange(nb), 3)  # blue, green, red groups
    blue, green, red = (planes[g].mean(axis=0) for g in groups)
    return red, green, blue


def rgb_composite(image, bands=None, stretch=_DEFAULT_STRETCH, Q=_DEFAULT_Q, minimum=0.0,
                  percentile=None, scales="legacy"):
    """Asinh (Lupton) colour composite of a multi-band image.

    Parameters
    ----------
    image : `~astropy.nddata.NDData`, `~astropy.nddata.CCDData` or array-like
        Shape ``(band, y, x)`` (or ``(y, x)`` for one band), in nanomaggy for
        the default stretch.  Band names are read from ``meta['BANDS']`` (or
        ``BAND0``, ``BAND1``, ...) when ``bands`` is None.
    bands : str or sequence of str, optional
        Names of the planes, e.g. ``"grz"``.  If neither this nor the
        metadata gives names, the planes are taken to run from blue to red.
    stretch : float, optional
        Linear range of the asinh stretch (nanomaggy).  The default 0.1 with
        ``Q=8`` shows the sky noise of a DR9 cutout as a faint speckle, the
        outskirts of an r ~ 16-18 galaxy and its core without saturating it.
    Q : float, optional
        Asinh softening parameter.
    minimum : float, optional
        Value mapped to black (nanomaggy).
    percentile : float, optional
        If given (e.g. 99.5), clip each band at this percentile of its pixels
        before the composite, as in Smith et al. (2022) Fig. 2.
    scales : "legacy", None, dict or sequence of float, optional
        Weights applied to each band first.  ``"legacy"`` uses
        `LEGACY_SURVEY_RGB_SCALES` (the Legacy Survey viewer's colour
        balance); None means no weighting; a dict maps band names to weights;
        a sequence gives one weight per plane.

    Returns
    -------
    rgb : `numpy.ndarray`
        Float array of shape ``(y, x, 3)`` with values in [0, 1].  One band
        gives a grey image; two bands give red = redder band, blue = bluer
        band, green = their mean; more than three bands are averaged in three
        groups ordered by wavelength.

    Raises
    ------
    ValueError
        If the image is not 2-D or 3-D, the band names do not match the
        number of planes, ``percentile`` is outside (0, 100], or ``stretch``
        or ``Q`` is not positive.
    """
    if not stretch > 0:
        raise ValueError(f"stretch must be positive, got {stretch!r}")
    if not Q > 0:
        raise ValueError(f"Q must be positive, got {Q!r}")
    data, names = _split_image(image, bands)
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    if percentile is not None:
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
        top = np.percentile(data.reshape(data.shape[0], -1), percentile, axis=1)
        data = np.minimum(data, top[:, None, None])
    data = data * _band_scales(scales, names, data.shape[0])[:, None, None]
    red, green, blue = _channel_planes(data, names)
    rgb = make_lupton_rgb(red, green, blue, interval=ManualInterval(vmin=minimum),
                          stretch=stretch, Q=Q, output_dtype=np.float64)
    return np.clip(rgb, 0.0, 1.0)


def _band_scales(scales, names, nbands):
    if scales is None:
        return np.ones(nbands)
    if isinstance(scales, str):
        if scales != "legacy":
            raise ValueError(f"scales must be 'legacy', None, a dict or a sequence, "
                             f"got {scales!r}")
        if names is None:
            return np.ones(nbands)
        return np.array([LEGACY_SURVEY_RGB_SCALES.get(b, 1.0) for b in names])
    if isinstance(scales, dict):
        if names is None:
            raise ValueError("scales given as a dict need band names: pass bands=")
        return np.array([float(scales.get(b, 1.0)) for b in names])
    arr = np.asarray(scales, dtype=float).ravel()
    if arr.size != nbands:
        raise ValueError(f"scales has {arr.size} value(s) for {nbands} band(s)")
    return arr


def _as_image_list(images):
    if isinstance(images, NDData):
        return [images]
    if isinstance(images, np.ndarray) or hasattr(images, "detach"):
        arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
        if arr.ndim == 3:
            return [arr]
        if arr.ndim != 4:
            raise ValueError(f"an array of images must have shape (N, band, y, x), got "
                             f"{arr.shape}")
        return list(arr)
    return list(images)


def _new_figure(nrows, ncols, panel_size, fig):
    from matplotlib.figure import Figure
    if fig is None:
        fig = Figure(figsize=(ncols * panel_size, nrows * panel_size))
    else:
        fig.clear()
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def plot_montage(images, ncols=8, titles=None, percentile=None, stretch=_DEFAULT_STRETCH,
                 Q=_DEFAULT_Q, panel_size=1.2, fig=None, bands=None, scales="legacy"):
    """Grid of colour composites, all with the same stretch.

    Parameters
    ----------
    images : sequence of image, or array of shape ``(N, band, y, x)``
        Each image in any form `rgb_composite` accepts (CCDData, NDData,
        array); a torch tensor is converted with ``numpy``.
    ncols : int, optional
        Panels per row (fewer if there are fewer images).
    titles : sequence of str, optional
        One title per panel.
    percentile, stretch, Q, bands, scales : optional
        Passed to `rgb_composite`; the same values are used for every panel
        so brightness is comparable across the figure.
    panel_size : float, optional
        Side of one panel in inches.
    fig : `matplotlib.figure.Figure`, optional
        Figure to draw into (it is cleared); a new one by default.

    Returns
    -------
    `matplotlib.figure.Figure`
        One axes per image (no ticks), unused grid cells removed.

    Raises
    ------
    ValueError
        If there are no images, ``ncols < 1`` or the number of titles does
        not match the number of images.
    """
    images = _as_image_list(images)
    if not images:
        raise ValueError("images is empty: give at least one image")
    if int(ncols) < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols!r}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    ncols = min(int(ncols), len(images))
    nrows = -(-len(images) // ncols)
    fig, axes = _new_figure(nrows, ncols, panel_size, fig)
    for k, ax in enumerate(axes.flat):
        if k >= len(images):
            fig.delaxes(ax)
            continue
        rgb = rgb_composite(images[k], bands=bands, stretch=stretch, Q=Q,
                            percentile=percentile, scales=scales)
        ax.imshow(rgb, origin="lower", interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=7, pad=2)
    top = 0.92 if titles is not None else 0.99
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.03,
                        hspace=0.12 if titles is not None else 0.03)
    return fig


def plot_comparison(real, generated, n=8, labels=("real", "generated"), panel_size=1.2,
                    fig=None, **rgb_kw):
    """Two rows of colour composites: real galaxies above, generated below.

    Parameters
    ----------
    real, generated : sequence of image, or array ``(N, band, y, x)``
        Images in any form `rgb_composite` accepts.  The first ``n`` of each
        are shown.
    n : int, optional
        Panels per row.
    labels : (str, str), optional
        Row labels.
    panel_size : float, optional
        Side of one panel in inches.
    fig : `matplotlib.figure.Figure`, optional
        Figure to draw into (it is cleared).
    **rgb_kw
        Passed to `rgb_composite` (``stretch``, ``Q``, ``percentile``,
        ``bands``, ``scales``, ``minimum``); the same for every panel.

    Returns
    -------
    `matplotlib.figure.Figure`
        ``2 * n`` axes (``n`` reduced to the shorter of the two sets).

    Raises
    ------
    ValueError
        If either set is empty, ``n < 1`` or ``labels`` does not hold two
        strings.
    """
    real = _as_image_list(real)
    generated = _as_image_list(generated)
    if not real or not generated:
        raise ValueError("real and generated must each hold at least one image")
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if len(labels) != 2:
        raise ValueError(f"labels must be two strings, got {labels!r}")
    n = min(int(n), len(real), len(generated))
    fig, axes = _new_figure(2, n, panel_size, fig)
    for row, (imgs, label) in enumerate(zip((real, generated), labels)):
        for k in range(n):
            ax = axes[row, k]
            ax.imshow(rgb_composite(imgs[k], **rgb_kw), origin="lower",
                      interpolation="nearest")
        axes[row, 0].set_ylabel(str(label), fontsize=9)
    left = min(0.3, 0.3 / (n * panel_size))  # room for the row labels
    fig.subplots_adjust(left=left, right=0.99, bottom=0.01, top=0.99, wspace=0.03,
                        hspace=0.03)
    return fig
