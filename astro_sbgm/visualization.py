"""Colour composites and figures of multi-band galaxy images.

Images are ``(band, y, x)`` arrays in nanomaggy (or `~astropy.nddata.CCDData`
/ `~astropy.nddata.NDData` carrying their band names in ``meta['BANDS']`` or
``BAND0``, ``BAND1``, ...), batches ``(N, band, y, x)`` arrays, torch
tensors or lists of images.  There are two composites, for two purposes:

`linear_rgb`
    The composite of Smith et al. (2022), Fig. 2: each image is clipped at 0
    below and at the 99.5th percentile of its pixels above (one level for
    all three channels, so colours are kept) and scaled linearly to [0, 1].
    It works on batches, and it is what `astro_sbgm.metrics.fid` and
    `astro_sbgm.metrics.kid` feed to Inception-v3 (there with one clip level
    for both image sets).  `plot_montage` and `plot_comparison` show it by
    default (``method="linear"``).
`rgb_composite`
    An asinh composite (Lupton et al. 2004, through
    `astropy.visualization.make_lupton_rgb`) of one image, with the Legacy
    Survey viewer's colour balance and a fixed stretch in nanomaggy, so that
    brightness can be compared between panels (``method="lupton"``).

Both map bands to channels the same way: the planes are ordered by effective
wavelength (`astro_sbgm.bands.BAND_WAVELENGTHS`) and the reddest goes to red,
the bluest to blue, so a Legacy Survey ``grz`` cutout is shown as z -> R,
r -> G, g -> B.  Two bands give green = their mean, one band a grey image,
more than three are averaged in three groups ordered by wavelength.  Without
band names the planes are taken to run from blue to red.  Pixels that are
not finite are shown as 0.

All figures are built on `matplotlib.figure.Figure` directly: no pyplot, no
GUI backend, nothing shown; the caller saves or displays the figure.
"""

import inspect

import astropy.units as u
import numpy as np
from astropy.nddata import NDData
from astropy.visualization import ManualInterval, make_lupton_rgb

from .bands import BAND_WAVELENGTHS
from .io import as_batch

__all__ = ["rgb_composite", "linear_rgb", "plot_montage", "plot_comparison",
           "LEGACY_SURVEY_RGB_SCALES"]

#: Relative weights applied to each band before the composite (r = 1).  They
#: follow the ratios of the Legacy Survey viewer's grz colour scales
#: (g 6.0, r 3.4, z 2.2), so that galaxies take their familiar colours:
#: red ellipticals, blue star-forming disks.  Bands not listed get 1.
LEGACY_SURVEY_RGB_SCALES = {"u": 6.0 / 3.4, "g": 6.0 / 3.4, "r": 1.0, "i": 0.8,
                            "z": 2.2 / 3.4, "y": 2.2 / 3.4}

_DEFAULT_STRETCH = 0.1
_DEFAULT_Q = 8.0
_DEFAULT_PERCENTILE = 99.5


# ---------------------------------------------------------------- input forms

def _to_numpy(x):
    """A numpy array from an array-like or a torch tensor (on any device)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _finite(data):
    """Float copy of ``data`` with non-finite pixels set to 0."""
    data = np.asarray(data, dtype=float)
    return np.where(np.isfinite(data), data, 0.0)


def _image_planes(image, bands):
    """One image as ((band, y, x) float array, band names or None)."""
    data, names = as_batch([image if isinstance(image, NDData) else _to_numpy(image)], bands,
                           name="image")
    return _finite(data[0]), names


def _image_list(images):
    """The images as a non-empty list of single images (arrays or NDData)."""
    if isinstance(images, NDData):
        items = [images]
    elif isinstance(images, np.ndarray) or hasattr(images, "detach"):
        arr = _to_numpy(images)
        if arr.ndim in (2, 3):
            items = [arr]
        elif arr.ndim == 4:
            items = list(arr)
        else:
            raise ValueError(f"an array of images must have shape (N, band, y, x), got "
                             f"{arr.shape}")
    else:
        items = list(images)
    if not items:
        raise ValueError("images is empty: give at least one image")
    return items


def _as_batch(images, bands):
    """Images as ((N, band, y, x) float array, band names or None)."""
    data, names = as_batch(images, bands)
    return _finite(data), names


# ------------------------------------------------------------ bands -> colours

def _rgb_planes(data, names):
    """Red, green, blue planes ``(..., 3, y, x)`` from ``(..., band, y, x)``."""
    nb = data.shape[-3]
    if names is None:
        order = np.arange(nb)  # without names, the planes run from blue to red
    else:
        order = np.argsort([BAND_WAVELENGTHS[b].to_value(u.nm) for b in names], kind="stable")
    planes = data[..., order, :, :]  # blue ... red
    if nb == 1:
        blue = green = red = planes[..., 0, :, :]
    elif nb == 2:
        blue, red = planes[..., 0, :, :], planes[..., 1, :, :]
        green = 0.5 * (blue + red)
    else:
        blue, green, red = (planes[..., g, :, :].mean(axis=-3)
                            for g in np.array_split(np.arange(nb), 3))
    return np.stack([red, green, blue], axis=-3)


def _check_percentile(percentile):
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")


# ----------------------------------------------------------------- composites

def rgb_composite(image, bands=None, stretch=_DEFAULT_STRETCH, Q=_DEFAULT_Q, minimum=0.0,
                  percentile=None, scales="legacy"):
    """Asinh (Lupton) colour composite of one multi-band image, for display.

    The stretch is fixed in nanomaggy, so panels made with the same values
    can be compared by brightness.  For the paper's linear composite (and the
    one FID uses) see `linear_rgb`.

    Parameters
    ----------
    image : `~astropy.nddata.NDData`, `~astropy.nddata.CCDData`, array-like or tensor
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
        before the composite.
    scales : "legacy", None, dict or sequence of float, optional
        Weights applied to each band first.  ``"legacy"`` uses
        `LEGACY_SURVEY_RGB_SCALES` (the Legacy Survey viewer's colour
        balance); None means no weighting; a dict maps band names to weights;
        a sequence gives one weight per plane.

    Returns
    -------
    rgb : `numpy.ndarray`
        Float array of shape ``(y, x, 3)`` with values in [0, 1].  Bands map
        to channels as described in the module docstring (reddest -> red).

    Raises
    ------
    ValueError
        If the image is not 2-D or 3-D, the band names do not match the
        number of planes, ``percentile`` is outside (0, 100], or ``stretch``
        or ``Q`` is not positive.

    See Also
    --------
    linear_rgb : the linear, percentile-clipped composite of a batch.
    """
    if not stretch > 0:
        raise ValueError(f"stretch must be positive, got {stretch!r}")
    if not Q > 0:
        raise ValueError(f"Q must be positive, got {Q!r}")
    data, names = _image_planes(image, bands)
    if percentile is not None:
        _check_percentile(percentile)
        top = np.percentile(data.reshape(data.shape[0], -1), percentile, axis=1)
        data = np.minimum(data, top[:, None, None])
    data = data * _band_scales(scales, names, data.shape[0])[:, None, None]
    red, green, blue = _rgb_planes(data, names)
    rgb = make_lupton_rgb(red, green, blue, interval=ManualInterval(vmin=minimum),
                          stretch=stretch, Q=Q, output_dtype=np.float64)
    return np.clip(rgb, 0.0, 1.0)


def _band_scales(scales, names, nbands):
    """One weight per plane from the ``scales`` argument of `rgb_composite`."""
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


def linear_rgb(images, bands=None, *, percentile=_DEFAULT_PERCENTILE, clip=None):
    """Linear, percentile-clipped colour composites of a batch (the paper's Fig. 2).

    This is the composite that `astro_sbgm.metrics.fid` and
    `astro_sbgm.metrics.kid` give to Inception-v3, and the default of
    `plot_montage` and `plot_comparison`.

    Parameters
    ----------
    images : array-like, tensor, `~astropy.nddata.NDData` or list of images
        ``(N, band, y, x)``, one ``(band, y, x)`` image, or a list of images
        of one shape (`~astropy.nddata.CCDData` with their band names in
        ``meta``, arrays, tensors).
    bands : str or sequence of str, optional
        Names of the planes, e.g. ``"grz"``; by default from the images'
        metadata, else the planes are taken to run from blue to red.
    percentile : float, optional
        Each image is clipped at this percentile of the pixels of its three
        channels together (one level per image, so colours are kept).
        Ignored when ``clip`` is given.
    clip : float or array-like, optional
        Clip level(s) in the images' unit, one for all images or one per
        image, instead of the percentile.  Levels that are not positive
        are replaced by 1.

    Returns
    -------
    numpy.ndarray
        ``(N, y, x, 3)`` floats in [0, 1]: ``max(x, 0) / level`` clipped at
        1.  Bands map to channels as described in the module docstring
        (reddest -> red); non-finite pixels are 0.

    Raises
    ------
    ValueError
        For arrays of the wrong shape, images of different shapes or bands,
        band names that do not match the planes, ``percentile`` outside
        (0, 100], or a number of clip levels that is neither 1 nor N.

    See Also
    --------
    rgb_composite : the asinh composite of one image, with a fixed stretch.
    """
    data, names = _as_batch(images, bands)
    chans = _rgb_planes(data, names)  # (N, 3, y, x)
    n = chans.shape[0]
    if clip is None:
        _check_percentile(percentile)
        level = np.percentile(chans.reshape(n, -1), percentile, axis=1)
    else:
        level = np.asarray(clip, dtype=float).ravel()
        if level.size not in (1, n):
            raise ValueError(f"clip has {level.size} level(s) for {n} image(s): give one "
                             f"level, or one per image")
        level = np.broadcast_to(level, (n,))
    level = np.where(level > 0, level, 1.0)[:, None, None, None]
    rgb = np.clip(np.clip(chans, 0.0, None) / level, 0.0, 1.0)
    return rgb.transpose(0, 2, 3, 1)


_COMPOSITES = {"linear": linear_rgb, "lupton": rgb_composite}


def _composites(images, method, bands, rgb_kw):
    """A list of ``(y, x, 3)`` composites made by the named method."""
    if method not in _COMPOSITES:
        raise ValueError(f"method must be one of {sorted(_COMPOSITES)}, got {method!r}")
    func = _COMPOSITES[method]
    options = set(inspect.signature(func).parameters) - {"image", "images", "bands"}
    unknown = sorted(set(rgb_kw) - options)
    if unknown:
        raise TypeError(f"{unknown} are not options of the {method!r} composite "
                        f"({func.__name__}); it takes {sorted(options)}")
    items = _image_list(images)
    if method == "linear":
        return list(linear_rgb(items, bands, **rgb_kw))
    return [rgb_composite(item, bands, **rgb_kw) for item in items]


# -------------------------------------------------------------------- figures

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


def plot_montage(images, ncols=8, titles=None, *, method="linear", bands=None,
                 panel_size=1.2, fig=None, **rgb_kw):
    """Grid of colour composites (the paper's Fig. 2 by default).

    Parameters
    ----------
    images : sequence of image, or array of shape ``(N, band, y, x)``
        Images in any form the composites accept (CCDData, NDData, arrays,
        torch tensors).
    ncols : int, optional
        Panels per row (fewer if there are fewer images).
    titles : sequence of str, optional
        One title per panel.
    method : {"linear", "lupton"}, optional
        ``"linear"``: `linear_rgb`, each image clipped at the 99.5th
        percentile of its pixels (Smith et al. 2022, Fig. 2; what FID sees);
        the images must share one shape.  ``"lupton"``: `rgb_composite`, an
        asinh stretch fixed in nanomaggy, so brightness is comparable.
    bands : str or sequence of str, optional
        Band names, see the composites.
    panel_size : float, optional
        Side of one panel in inches.
    fig : `matplotlib.figure.Figure`, optional
        Figure to draw into (it is cleared); a new one by default.
    **rgb_kw
        Options of the composite, the same for every panel: ``percentile``
        and ``clip`` for ``"linear"``; ``stretch``, ``Q``, ``minimum``,
        ``percentile`` and ``scales`` for ``"lupton"``.

    Returns
    -------
    `matplotlib.figure.Figure`
        One axes per image (no ticks), unused grid cells removed.

    Raises
    ------
    ValueError
        If there are no images, ``ncols < 1``, the number of titles does not
        match the number of images, or ``method`` is unknown.
    TypeError
        If ``rgb_kw`` holds an option the chosen composite does not take.
    """
    if int(ncols) < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols!r}")
    rgbs = _composites(images, method, bands, rgb_kw)
    if titles is not None and len(titles) != len(rgbs):
        raise ValueError(f"got {len(titles)} titles for {len(rgbs)} images")
    ncols = min(int(ncols), len(rgbs))
    nrows = -(-len(rgbs) // ncols)
    fig, axes = _new_figure(nrows, ncols, panel_size, fig)
    for k, ax in enumerate(axes.flat):
        if k >= len(rgbs):
            fig.delaxes(ax)
            continue
        ax.imshow(rgbs[k], origin="lower", interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=7, pad=2)
    top = 0.92 if titles is not None else 0.99
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.03,
                        hspace=0.12 if titles is not None else 0.03)
    return fig


def plot_comparison(real, generated, n=8, labels=("real", "generated"), panel_size=1.2,
                    fig=None, *, method="linear", bands=None, **rgb_kw):
    """Two rows of colour composites: real galaxies above, generated below.

    Parameters
    ----------
    real, generated : sequence of image, or array ``(N, band, y, x)``
        Images in any form the composites accept.  The first ``n`` of each
        are shown.
    n : int, optional
        Panels per row.
    labels : (str, str), optional
        Row labels.
    panel_size : float, optional
        Side of one panel in inches.
    fig : `matplotlib.figure.Figure`, optional
        Figure to draw into (it is cleared).
    method : {"linear", "lupton"}, optional
        The composite, see `plot_montage`.  With ``"lupton"`` (or
        ``"linear"`` and a fixed ``clip``) both rows share one brightness
        scale, so a model that makes galaxies too bright or too faint shows.
    bands : str or sequence of str, optional
        Band names, see the composites.
    **rgb_kw
        Options of the composite (see `plot_montage`); the same for every
        panel.

    Returns
    -------
    `matplotlib.figure.Figure`
        ``2 * n`` axes (``n`` reduced to the shorter of the two sets).

    Raises
    ------
    ValueError
        If either set is empty, ``n < 1``, ``labels`` does not hold two
        strings, or ``method`` is unknown.
    TypeError
        If ``rgb_kw`` holds an option the chosen composite does not take.
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if isinstance(labels, str) or len(labels) != 2:
        raise ValueError(f"labels must be two strings, got {labels!r}")
    real, generated = _image_list(real), _image_list(generated)
    n = min(int(n), len(real), len(generated))
    rows = [_composites(imgs[:n], method, bands, rgb_kw) for imgs in (real, generated)]
    fig, axes = _new_figure(2, n, panel_size, fig)
    for row, (rgbs, label) in enumerate(zip(rows, labels)):
        for k in range(n):
            axes[row, k].imshow(rgbs[k], origin="lower", interpolation="nearest")
        axes[row, 0].set_ylabel(str(label), fontsize=9)
    left = min(0.3, 0.3 / (n * panel_size))  # room for the row labels
    fig.subplots_adjust(left=left, right=0.99, bottom=0.01, top=0.99, wspace=0.03,
                        hspace=0.03)
    return fig
