"""Figures of the metrics: property histograms, nearest neighbours, RGB montages.

Every function returns a `matplotlib.figure.Figure` built without pyplot (no
global state, nothing is shown); save it with ``fig.savefig(...)``.

RGB composites (`rgb_composite`) map the reddest band to red, the middle band
to green and the bluest to blue (z, r, g for grz), clip each image at the
99.5th percentile of its pixels over all three bands (one level per image, so
colours are kept) and at zero below, and scale linearly to [0, 1] — the
montage of the paper's Fig. 2.  The same composite is what `fid` feeds to
Inception-v3.
"""

import numpy as np
from astropy.nddata import NDData
from matplotlib.figure import Figure

from ..bands import BAND_WAVELENGTHS, parse_bands
from .distances import SGD_COLUMNS, _cohens_d_values, _split, read_catalogue

__all__ = ["rgb_composite", "plot_property_histograms", "plot_nearest_neighbours",
           "plot_montage"]


def _images_and_bands(images, bands):
    """(n, band, y, x) float array and band names from arrays, tensors or CCDData."""
    if isinstance(images, NDData):
        images = [images]
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("no images were given (the list is empty)")
        if bands is None and isinstance(images[0], NDData) and "BANDS" in images[0].meta:
            bands = images[0].meta["BANDS"]
        arrays = [np.asarray(im.data if isinstance(im, NDData) else im, float)
                  for im in images]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"the images have different shapes {sorted(shapes)}")
        data = np.stack(arrays)
    else:
        data = np.asarray(images, float)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"images must be (n, band, y, x) or (band, y, x), got shape "
                         f"{data.shape}")
    if bands is None:
        if data.shape[1] != 3:
            raise ValueError(f"give bands= for images with {data.shape[1]} bands")
        bands = "grz"
    names = parse_bands(bands)
    if len(names) != data.shape[1]:
        raise ValueError(f"bands {names} do not match the {data.shape[1]} image planes")
    return data, names


def rgb_composite(images, bands=None, *, percentile=99.5, clip=None):
    """RGB composites of multi-band images, for display and for FID.

    Parameters
    ----------
    images : array-like, `torch.Tensor`, `CCDData` or list of `CCDData`
        ``(n, band, y, x)`` or one ``(band, y, x)`` image.
    bands : str or sequence of str, optional
        Band names; from ``meta['BANDS']`` of `CCDData`, else ``"grz"`` for
        three-band arrays.
    percentile : float, optional
        Each image is clipped at this percentile of its pixels (all bands
        together).  Ignored when ``clip`` is given.
    clip : float or array-like, optional
        Clip level(s) in the images' unit, one for all images or one per
        image, instead of the percentile.

    Returns
    -------
    numpy.ndarray
        ``(n, y, x, 3)`` floats in [0, 1].  Red, green, blue are the
        reddest, middle and bluest bands by effective wavelength; with two
        bands green is their mean, with one band the image is grey.

    Raises
    ------
    ValueError
        For arrays of the wrong shape or band names that do not match.
    """
    data, names = _images_and_bands(images, bands)
    order = np.argsort([BAND_WAVELENGTHS[b].value for b in names])[::-1]  # red first
    ordered = np.where(np.isfinite(data), data, 0.0)[:, order]
    if len(names) >= 3:
        chans = ordered[:, [0, len(names) // 2, len(names) - 1]]
    elif len(names) == 2:
        chans = np.stack([ordered[:, 0], ordered.mean(axis=1), ordered[:, 1]], axis=1)
    else:
        chans = np.repeat(ordered, 3, axis=1)
    if clip is None:
        level = np.percentile(chans.reshape(chans.shape[0], -1), percentile, axis=1)
    else:
        level = np.broadcast_to(np.asarray(clip, float), (chans.shape[0],))
    level = np.where(level > 0, level, 1.0)[:, None, None, None]
    rgb = np.clip(chans, 0.0, None) / level
    return np.clip(rgb, 0.0, 1.0).transpose(0, 2, 3, 1)


def plot_montage(images, bands=None, *, ncols=8, percentile=99.5, titles=None,
                 panel_size=1.2):
    """A grid of RGB composites (the paper's Fig. 2).

    Parameters
    ----------
    images : array-like, `torch.Tensor` or list of `CCDData`
        The images, see `rgb_composite`.
    bands : str or sequence of str, optional
        See `rgb_composite`.
    ncols : int, optional
        Panels per row.
    percentile : float, optional
        Per-image clip percentile.
    titles : sequence of str, optional
        One title per panel.
    panel_size : float, optional
        Panel size in inches.

    Returns
    -------
    `matplotlib.figure.Figure`
    """
    rgb = rgb_composite(images, bands, percentile=percentile)
    n = rgb.shape[0]
    ncols = max(1, min(int(ncols), n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i < n:
            ax.imshow(rgb[i], origin="lower", interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=7)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99 if titles is None
                        else 0.93, wspace=0.03, hspace=0.03 if titles is None else 0.25)
    return fig


def plot_nearest_neighbours(query, reference, indices, distances=None, *, bands=None,
                            max_rows=8, percentile=99.5, panel_size=1.2):
    """Each query image beside its nearest reference images (the paper's Fig. 3).

    Parameters
    ----------
    query, reference : array-like, `torch.Tensor` or list of `CCDData`
        Query and reference images, see `rgb_composite`.
    indices : array-like of int, shape (n_query, k)
        Neighbour indices into ``reference``, from `nearest_neighbours`.
    distances : array-like, shape (n_query, k), optional
        Distances, written above the neighbours.
    bands : str or sequence of str, optional
        See `rgb_composite`.
    max_rows : int, optional
        At most this many query images are shown.
    percentile : float, optional
        Per-image clip percentile.
    panel_size : float, optional
        Panel size in inches.

    Returns
    -------
    `matplotlib.figure.Figure`

    Raises
    ------
    ValueError
        If ``indices`` does not have one row per query image.
    """
    q_rgb = rgb_composite(query, bands, percentile=percentile)
    r_rgb = rgb_composite(reference, bands, percentile=percentile)
    indices = np.atleast_2d(np.asarray(indices, int))
    if indices.shape[0] != q_rgb.shape[0]:
        raise ValueError(f"indices has {indices.shape[0]} rows but there are "
                         f"{q_rgb.shape[0]} query images")
    nrows = min(q_rgb.shape[0], int(max_rows))
    k = indices.shape[1]
    fig = Figure(figsize=(panel_size * (k + 1), panel_size * nrows * 1.15))
    axes = fig.subplots(nrows, k + 1, squeeze=False)
    for row in range(nrows):
        axes[row, 0].imshow(q_rgb[row], origin="lower", interpolation="nearest")
        if row == 0:
            axes[row, 0].set_title("query", fontsize=7)
        for j in range(k):
            ax = axes[row, j + 1]
            ax.imshow(r_rgb[indices[row, j]], origin="lower", interpolation="nearest")
            label = f"#{indices[row, j]}"
            if distances is not None:
                label += f"  d={np.asarray(distances)[row, j]:.3g}"
            ax.set_title(label, fontsize=6)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92, wspace=0.05,
                        hspace=0.3)
    return fig


def plot_property_histograms(cat_a, cat_b, *, columns=None, labels=("A", "B"), bins=30,
                             panel_size=2.6):
    """Histograms of catalogue properties, with Cohen's d in each panel (paper Fig. 4).

    Parameters
    ----------
    cat_a, cat_b : `~astropy.table.QTable`, `~astropy.table.Table` or path
        The two catalogues.
    columns : dict or sequence of str, optional
        ``{label: column}`` or column names; default the SGD properties
        present in both catalogues.
    labels : tuple of str, optional
        Legend names of the two catalogues.
    bins : int, optional
        Number of bins (shared by both catalogues in each panel).
    panel_size : float, optional
        Panel size in inches.

    Returns
    -------
    `matplotlib.figure.Figure`

    Raises
    ------
    KeyError
        If a requested column is missing.
    ValueError
        If no property is left to plot.
    """
    a_tab, b_tab = read_catalogue(cat_a), read_catalogue(cat_b)
    if columns is None:
        cols = {k: v for k, v in SGD_COLUMNS.items()
                if v in a_tab.colnames and v in b_tab.colnames}
        if not cols:
            raise ValueError(f"none of the SGD columns {list(SGD_COLUMNS.values())} is in "
                             "both catalogues; give columns=")
    elif isinstance(columns, dict):
        cols = dict(columns)
    else:
        cols = {c: c for c in ([columns] if isinstance(columns, str) else columns)}
    for name in cols.values():
        for side, tab in (("A", a_tab), ("B", b_tab)):
            if name not in tab.colnames:
                raise KeyError(f"catalogue {side} has no column {name!r}; it has "
                               f"{tab.colnames}")
    n = len(cols)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows * 0.85))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (label, name) in zip(axes.ravel(), cols.items()):
        va, unit = _split(a_tab[name])
        vb, _ = _split(b_tab[name])
        va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
        both = np.concatenate([va, vb])
        if both.size == 0:
            ax.set_title(f"{label}: no data", fontsize=8)
            continue
        edges = np.histogram_bin_edges(both, bins=bins)
        ax.hist(va, bins=edges, histtype="step", density=True, label=labels[0])
        ax.hist(vb, bins=edges, histtype="step", density=True, label=labels[1])
        d = _cohens_d_values(va, vb)
        ax.set_xlabel(f"{label} [{unit}]" if unit is not None else label, fontsize=8)
        ax.set_title(f"d = {d:.3f}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
