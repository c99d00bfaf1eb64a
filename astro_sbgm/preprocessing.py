"""Mapping fluxes in nanomaggies to the network's [-1, 1] range and back.

The paper (Smith, Geach et al. 2022, eq. 13) clips every pixel to ``[0, A]``
nanomaggies and maps that interval linearly onto ``[-1, 1]``:

.. math:: x' = 2\\,\\max(0, \\min(x, A)) / A - 1,

with ``A`` = 5.5 (PROBES) or 5.0 (SDSS), found by a two-cluster k-means of
every galaxy's per-band 99.9th-percentile flux.  `FluxScaler` implements that
exactly (``stretch="linear"``, ``lower=0``) and, as an option, an invertible
``asinh`` stretch, ``f(x) = asinh(x / b)``, applied before the min-max map, so
bright cores are compressed rather than flattened.
"""

import json
import warnings

import numpy as np
from astropy.nddata import NDData

__all__ = ["FluxScaler", "kmeans_truncation_point"]


def _finite_float(value, name):
    """``value`` as a finite Python float, or a ValueError naming ``name``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number of nanomaggies, got {value!r}") from None
    if isinstance(value, bool) or not np.isfinite(out):
        raise ValueError(f"{name} must be a finite number of nanomaggies, got {value!r}")
    return out


def _kmeans_1d(values, n_iter=100):
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


def _percentiles(image, percentile):
    """The ``percentile`` of every plane of one ``(band, y, x)`` image (NaN ignored)."""
    if isinstance(image, NDData):
        data = np.array(image.data, dtype=np.float64)
        if image.mask is not None:
            data[np.broadcast_to(np.asarray(image.mask, bool), data.shape)] = np.nan
    else:
        data = np.array(image, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"each image must be (band, y, x), got shape {data.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN planes give NaN
        return np.nanpercentile(data.reshape(data.shape[0], -1), percentile, axis=1)


def kmeans_truncation_point(images, percentile=99.9):
    """Estimate the paper's truncation point ``A``.

    For every galaxy and band the ``percentile``-th percentile of the pixel
    values is taken; a two-cluster k-means separates these values into the
    bulk and the bright tail, and ``A`` is the boundary between the two
    clusters (the mid-point of their centres, the k-means decision boundary
    in one dimension).

    Parameters
    ----------
    images : array-like or list
        Fluxes in nanomaggies, shape ``(n, band, y, x)``, or a list of
        ``(band, y, x)`` arrays or `~astropy.nddata.NDData` (masked pixels
        are left out).
    percentile : float
        The per-galaxy, per-band percentile (99.9 in the paper).

    Returns
    -------
    float
        ``A`` in nanomaggies.

    Raises
    ------
    ValueError
        If fewer than two galaxies/bands are given or all values are equal.
    """
    if not 0 < float(percentile) <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    if isinstance(images, (list, tuple)) and any(
            isinstance(im, NDData) or np.ndim(im) == 3 for im in images):
        per = np.concatenate([_percentiles(im, percentile) for im in images])
    else:
        arr = np.asarray(images, dtype=np.float64)
        if arr.ndim != 4:
            raise ValueError(f"images must have shape (n, band, y, x), got {arr.shape}; give a "
                             "4-D array or a list of (band, y, x) images")
        per = _percentiles(arr.reshape(-1, *arr.shape[2:]), percentile)
    per = per[np.isfinite(per)]
    if per.size < 2 or np.ptp(per) == 0:
        raise ValueError("need at least two galaxy/band percentiles that differ to estimate "
                         "the truncation point; give more images or a fixed upper=")
    c = _kmeans_1d(per)
    return float(0.5 * (c[0] + c[1]))


class FluxScaler:
    """Invertible map between fluxes (nanomaggies) and the network's [-1, 1].

    Parameters
    ----------
    upper : float or "kmeans"
        Truncation point ``A`` in nanomaggies, or ``"kmeans"`` to estimate it
        in `fit` the paper's way (see `kmeans_truncation_point`).  The
        paper's values are 5.5 (PROBES) and 5.0 (SDSS).
    lower : float
        Lower clip in nanomaggies (0 in the paper).  A small negative value
        keeps the negative half of the sky noise.
    stretch : {"linear", "asinh"}
        ``"linear"`` is eq. 13 of the paper.  ``"asinh"`` maps
        ``asinh(x / softening)`` linearly instead, which keeps the shape of
        bright cores at a given ``upper``.
    softening : float
        The ``b`` of the asinh stretch, in nanomaggies (ignored for linear).

    Attributes
    ----------
    upper_ : float
        The truncation point in use (after `fit` when ``upper="kmeans"``).

    Examples
    --------
    >>> import numpy as np
    >>> s = FluxScaler(upper=5.5)
    >>> s.transform(np.array([-1.0, 0.0, 2.75, 5.5, 9.0]))
    array([-1., -1.,  0.,  1.,  1.], dtype=float32)
    """

    def __init__(self, upper=5.5, lower=0.0, stretch="linear", softening=0.05):
        if stretch not in ("linear", "asinh"):
            raise ValueError(f"stretch must be 'linear' or 'asinh', got {stretch!r}")
        if isinstance(upper, str):
            if upper != "kmeans":
                raise ValueError(f"upper must be a number of nanomaggies or 'kmeans', got "
                                 f"{upper!r}")
        else:
            upper = _finite_float(upper, "upper")
        lower = _finite_float(lower, "lower")
        softening = _finite_float(softening, "softening")
        if stretch == "asinh" and not softening > 0:
            raise ValueError(f"softening must be > 0 nanomaggies, got {softening!r}")
        self.upper = upper
        self.lower = lower
        self.stretch = stretch
        self.softening = softening
        self.upper_ = None if upper == "kmeans" else upper
        self._check()

    def _check(self):
        if self.upper_ is not None and not self.upper_ > self.lower:
            raise ValueError(f"upper ({self.upper_}) must be larger than lower ({self.lower})")

    @property
    def fitted(self):
        """Whether the truncation point is known."""
        return self.upper_ is not None

    def fit(self, images):
        """Estimate the truncation point when ``upper="kmeans"``.

        Parameters
        ----------
        images : array-like or list
            Fluxes in nanomaggies, ``(n, band, y, x)`` (see
            `kmeans_truncation_point`); ignored when ``upper`` is a number.

        Returns
        -------
        self
        """
        if self.upper == "kmeans":
            self.upper_ = kmeans_truncation_point(images)
            self._check()
        return self

    def _f(self, x):
        return np.arcsinh(x / self.softening) if self.stretch == "asinh" else x

    def _finv(self, y):
        return np.sinh(y) * self.softening if self.stretch == "asinh" else y

    def _require_fit(self):
        if self.upper_ is None:
            raise RuntimeError("the FluxScaler has upper='kmeans' and was never fitted; call "
                               "fit(images) first or give upper= as a number")

    def transform(self, flux):
        """Map fluxes in nanomaggies to [-1, 1].

        Values are clipped to ``[lower, upper_]`` first, so for
        ``stretch="linear"`` and ``lower=0`` this is the paper's eq. 13,
        ``x' = 2 max(0, min(x, A)) / A - 1``.

        Parameters
        ----------
        flux : array-like
            Fluxes in nanomaggies, any shape.  NaN stays NaN.

        Returns
        -------
        `numpy.ndarray`
            float32 values in [-1, 1], same shape.

        Raises
        ------
        RuntimeError
            If ``upper="kmeans"`` and the scaler was not fitted.
        """
        self._require_fit()
        x = np.clip(np.asarray(flux, dtype=np.float64), self.lower, self.upper_)
        lo, hi = self._f(self.lower), self._f(self.upper_)
        return (2.0 * (self._f(x) - lo) / (hi - lo) - 1.0).astype(np.float32)

    def inverse_transform(self, scaled):
        """Map [-1, 1] back to fluxes in nanomaggies.

        Values outside [-1, 1] are clipped first, so the result lies in
        ``[lower, upper_]``; inside that interval ``inverse_transform`` undoes
        `transform` (to float32 precision).

        Parameters
        ----------
        scaled : array-like
            Network-range values, any shape.

        Returns
        -------
        `numpy.ndarray`
            float32 fluxes in nanomaggies, same shape.

        Raises
        ------
        RuntimeError
            If ``upper="kmeans"`` and the scaler was not fitted.
        """
        self._require_fit()
        y = np.clip(np.asarray(scaled, dtype=np.float64), -1.0, 1.0)
        lo, hi = self._f(self.lower), self._f(self.upper_)
        return self._finv((y + 1.0) / 2.0 * (hi - lo) + lo).astype(np.float32)

    def to_dict(self):
        """The scaler's parameters as a JSON-safe dict."""
        return {"upper": self.upper, "lower": self.lower, "stretch": self.stretch,
                "softening": self.softening, "upper_": self.upper_}

    @classmethod
    def from_dict(cls, d):
        """Rebuild a scaler from `to_dict` output.

        Parameters
        ----------
        d : dict
            As returned by `to_dict`.

        Returns
        -------
        FluxScaler

        Raises
        ------
        ValueError
            If a key is missing or a value is invalid.
        """
        missing = [k for k in ("upper", "lower", "stretch", "softening") if k not in d]
        if missing:
            raise ValueError(f"the scaler description lacks {missing}; give the dict written "
                             "by FluxScaler.to_dict")
        obj = cls(upper=d["upper"], lower=d["lower"], stretch=d["stretch"],
                  softening=d["softening"])
        if d.get("upper_") is not None:
            obj.upper_ = _finite_float(d["upper_"], "upper_")
        obj._check()
        return obj

    def __repr__(self):
        return f"FluxScaler({json.dumps(self.to_dict())[1:-1]})"
