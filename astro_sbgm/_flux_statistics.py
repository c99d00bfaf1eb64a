"""Flux statistics of image sets, one image at a time: percentiles, sky spread, k-means (private).

`astro_sbgm.preprocessing` fits its scaler with them on a set in memory, and
`astro_sbgm.training_data` on a set streamed from disk, image by image, with
the same numbers.
"""

import warnings

import numpy as np
from astropy.nddata import NDData

__all__ = ["kmeans_1d", "planes", "image_percentiles", "evenly_spaced", "sky_spread",
           "sky_from_spreads", "truncation_from_percentiles"]


def kmeans_1d(values, n_iter=100):
    """Two-cluster k-means in one dimension; returns the sorted centres."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    c = np.array([v[0], v[-1]], dtype=np.float64)
    for _ in range(n_iter):
        boundary = 0.5 * (c[0] + c[1])
        lo, hi = v[v <= boundary], v[v > boundary]
        if len(lo) == 0 or len(hi) == 0:
            break
        new = np.array([lo.mean(), hi.mean()])
        if np.allclose(new, c):
            break
        c = new
    return c


def planes(image):
    """One image as float64 ``(band, y, x)`` (a copy), masked pixels as NaN."""
    if isinstance(image, NDData):
        data = np.array(image.data, dtype=np.float64)
        if image.mask is not None:
            data[np.broadcast_to(np.asarray(image.mask, bool), data.shape)] = np.nan
    else:
        data = np.array(image, dtype=np.float64)
    return data[None] if data.ndim == 2 else data


def image_percentiles(image, percentile):
    """The ``percentile`` of every plane of one ``(band, y, x)`` image (NaN ignored)."""
    data = planes(image)
    if data.ndim != 3:
        raise ValueError(f"each image must be (band, y, x), got shape {data.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN planes give NaN
        return np.nanpercentile(data.reshape(data.shape[0], -1), percentile, axis=1)


def evenly_spaced(n, most):
    """At most ``most`` indices of ``range(n)``, evenly spaced, first and last included."""
    return np.unique(np.linspace(0, n - 1, min(n, int(most))).round().astype(int))


def sky_spread(im, border=4):
    """Per band, median minus 15.87th percentile of an image's outer frame (float64)."""
    im = np.asarray(im, dtype=np.float64)
    b = int(border)
    frame = np.ones(im.shape[-2:], bool)
    if min(im.shape[-2:]) > 2 * b:
        frame[b:-b, b:-b] = False
    pix = im[:, frame]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q16, q50 = np.nanpercentile(pix, [15.865, 50.0], axis=1)
    return q50 - q16


def sky_from_spreads(per):
    """The sky sigma per band: the median over images of `sky_spread`."""
    sig = np.nanmedian(np.array(per), axis=0)
    if not np.all(np.isfinite(sig) & (sig > 0)):
        raise ValueError(f"could not measure a sky noise in every band (got {sig} nanomaggies): "
                         "the images look noiseless; give lower= and softening= as numbers "
                         "instead of 'auto'")
    return sig


def truncation_from_percentiles(per):
    """``A`` from the per-galaxy, per-band percentiles (the k-means boundary)."""
    per = np.asarray(per, dtype=np.float64).ravel()
    per = per[np.isfinite(per)]
    if per.size < 2 or np.ptp(per) == 0:
        raise ValueError("need at least two galaxy/band percentiles that differ to estimate "
                         "the truncation point; give more images or a fixed upper=")
    c = kmeans_1d(per)
    return float(0.5 * (c[0] + c[1]))
