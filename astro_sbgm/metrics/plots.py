"""Figures of the metrics: property histograms and nearest neighbours.

Every function returns a `matplotlib.figure.Figure` built without pyplot (no
global state, nothing is shown); save it with ``fig.savefig(...)``.

Images are shown with `astro_sbgm.visualization.linear_rgb`, the composite of
the paper's Fig. 2 and the one `fid` feeds to Inception-v3.  Colour
composites and montages (`~astro_sbgm.visualization.plot_montage`,
`~astro_sbgm.visualization.plot_comparison`) live in
`astro_sbgm.visualization`.
"""

import numpy as np
from matplotlib.figure import Figure

from ..visualization import linear_rgb
from .distances import SGD_COLUMNS, _cohens_d_values, _split, read_catalogue

__all__ = ["plot_property_histograms", "plot_nearest_neighbours"]


def _figure(fig, size):
    """A new figure of ``size`` inches, or ``fig`` cleared and resized."""
    if fig is None:
        return Figure(figsize=size)
    fig.clear()
    fig.set_size_inches(size)
    return fig


def plot_nearest_neighbours(query, reference, indices, distances=None, *, bands=None,
                            max_rows=8, percentile=99.5, panel_size=1.2, fig=None):
    """Each query image beside its nearest reference images (the paper's Fig. 3).

    Parameters
    ----------
    query, reference : array-like, `torch.Tensor` or list of `CCDData`
        Query and reference images, in any form
        `~astro_sbgm.visualization.linear_rgb` accepts.
    indices : array-like of int, shape (n_query, k)
        Neighbour indices into ``reference``, from `nearest_neighbours`.
    distances : array-like, shape (n_query, k), optional
        Distances, written above the neighbours.
    bands : str or sequence of str, optional
        See `~astro_sbgm.visualization.linear_rgb`.
    max_rows : int, optional
        At most this many query images are shown.
    percentile : float, optional
        Per-image clip percentile of `~astro_sbgm.visualization.linear_rgb`.
    panel_size : float, optional
        Panel size in inches.
    fig : `matplotlib.figure.Figure`, optional
        Draw into this figure (cleared and resized first), for example one
        made with ``matplotlib.pyplot.figure()`` to show it; default a new
        figure without pyplot.

    Returns
    -------
    `matplotlib.figure.Figure`

    Raises
    ------
    ValueError
        If ``indices`` does not have one row per query image.
    """
    q_rgb = linear_rgb(query, bands, percentile=percentile)
    r_rgb = linear_rgb(reference, bands, percentile=percentile)
    indices = np.atleast_2d(np.asarray(indices, int))
    if indices.shape[0] != q_rgb.shape[0]:
        raise ValueError(f"indices has {indices.shape[0]} rows but there are "
                         f"{q_rgb.shape[0]} query images")
    nrows = min(q_rgb.shape[0], int(max_rows))
    k = indices.shape[1]
    fig = _figure(fig, (panel_size * (k + 1), panel_size * nrows * 1.15))
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
                             panel_size=2.6, fig=None):
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
    fig : `matplotlib.figure.Figure`, optional
        Draw into this figure (cleared and resized first), for example one
        made with ``matplotlib.pyplot.figure()`` to show it; default a new
        figure without pyplot.

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
    fig = _figure(fig, (panel_size * ncols, panel_size * nrows * 0.85))
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
