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

import numpy as np
from astropy.nddata import NDData

from ._flux_statistics import (evenly_spaced as _evenly_spaced,
                               image_percentiles as _percentiles, planes as _planes,
                               sky_from_spreads as _sky_from_spreads, sky_spread as _sky_spread,
                               truncation_from_percentiles as _truncation_from_percentiles)

__all__ = ["FluxScaler", "kmeans_truncation_point", "sky_sigma"]


def _finite_float(value, name):
    """``value`` as a finite Python float, or a ValueError naming ``name``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number of nanomaggies, got {value!r}") from None
    if isinstance(value, bool) or not np.isfinite(out):
        raise ValueError(f"{name} must be a finite number of nanomaggies, got {value!r}")
    return out


def _per_band(value, name):
    """A number, ``"auto"`` or a tuple of per-band numbers (all finite)."""
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"{name} must be a number of nanomaggies, one per band, or 'auto', "
                             f"got {value!r}")
        return value
    if np.ndim(value) == 0:
        return _finite_float(value, name)
    values = tuple(_finite_float(v, name) for v in np.asarray(value, dtype=object).ravel())
    if not values:
        raise ValueError(f"{name} must hold one number per band, got an empty sequence")
    return values


def _as_param(value):
    return value if np.ndim(value) == 0 else np.asarray(value, dtype=np.float64)


def _stack_fluxes(images):
    """``(n, band, y, x)`` float64 with masked pixels as NaN, from an array or a list."""
    if isinstance(images, (list, tuple)):
        return [_planes(im) for im in images]
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim != 4:
        raise ValueError(f"images must have shape (n, band, y, x), got {arr.shape}; give a "
                         "4-D array or a list of (band, y, x) images")
    return arr


def sky_sigma(images, border=4, max_images=2000):
    """Per-band sky noise of a set of cutouts, robust to the galaxies in them.

    For every image and band the pixels of the outer ``border``-pixel frame
    are taken (galaxies sit at the centre of a cutout); the noise is the
    distance from their median to their 15.87th percentile, the lower,
    source-free side of the distribution (sources and neighbours only add
    flux, so the upper side is contaminated; a censored sky has MAD = 0 but
    still a lower side when the clip is below the median).  The result is
    the median over images, so a few shallow or deep cutouts do not move it.

    Parameters
    ----------
    images : array-like or list
        Fluxes in nanomaggies, ``(n, band, y, x)`` or a list of ``(band, y,
        x)`` arrays or `~astropy.nddata.NDData` (masked pixels left out).
    border : int
        Width of the frame in pixels.
    max_images : int
        Use at most this many images (evenly spaced through the set), so the
        estimate reads a documented subsample in one pass.

    Returns
    -------
    `numpy.ndarray`
        float64 sigma per band, nanomaggies.

    Raises
    ------
    ValueError
        If the images have no noise to measure (a noiseless set: give
        ``lower=`` and ``softening=`` as numbers instead of ``"auto"``).
    """
    stack = _stack_fluxes(images)
    n = len(stack)
    if n == 0:
        raise ValueError("need at least one image to estimate the sky noise")
    pick = _evenly_spaced(n, max_images)
    return _sky_from_spreads([_sky_spread(stack[i], border) for i in pick])


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
    return _truncation_from_percentiles(per)


class FluxScaler:
    """Invertible map between fluxes (nanomaggies) and the network's [-1, 1].

    Parameters
    ----------
    upper : float or "kmeans"
        Truncation point ``A`` in nanomaggies, or ``"kmeans"`` to estimate it
        in `fit` the paper's way (see `kmeans_truncation_point`).  The
        paper's values are 5.5 (PROBES) and 5.0 (SDSS).
    lower : float, sequence of float or "auto"
        Lower clip in nanomaggies (0 in the paper): one number for all bands,
        one per band, or ``"auto"``: ``-lower_sigma`` times each band's sky
        sigma, estimated in `fit` (see `sky_sigma`).  A negative value keeps
        the negative half of the sky noise.
    stretch : {"linear", "asinh"}
        ``"linear"`` is eq. 13 of the paper.  ``"asinh"`` maps
        ``asinh(x / softening)`` linearly instead, which keeps the shape of
        bright cores at a given ``upper``.
    softening : float, sequence of float or "auto"
        The ``b`` of the asinh stretch in nanomaggies (ignored for linear):
        one number, one per band, or ``"auto"``: ``softening_sigma`` times
        each band's sky sigma, estimated in `fit`.
    lower_sigma, softening_sigma : float
        The multiples of the sky sigma used by ``"auto"``.  The default lower
        clip, 6 sigma below zero, touches about one sky pixel in 10^9 even
        where a cutout is 0.25 mag shallower than the typical one.

    Attributes
    ----------
    upper_ : float
        The truncation point in use (after `fit` when ``upper="kmeans"``).
    lower_, softening_ : float or `numpy.ndarray`
        The clip and softening in use: a float, or one value per band (the
        band axis is the third from last of every array transformed).
    sky_sigma_ : `numpy.ndarray` or None
        Per-band sky sigma (nanomaggies) estimated in `fit` for ``"auto"``.

    Examples
    --------
    >>> import numpy as np
    >>> s = FluxScaler(upper=5.5)
    >>> s.transform(np.array([-1.0, 0.0, 2.75, 5.5, 9.0]))
    array([-1., -1.,  0.,  1.,  1.], dtype=float32)
    """

    def __init__(self, upper=5.5, lower=0.0, stretch="linear", softening=0.05,
                 lower_sigma=6.0, softening_sigma=2.0):
        if stretch not in ("linear", "asinh"):
            raise ValueError(f"stretch must be 'linear' or 'asinh', got {stretch!r}")
        if isinstance(upper, str):
            if upper != "kmeans":
                raise ValueError(f"upper must be a number of nanomaggies or 'kmeans', got "
                                 f"{upper!r}")
        else:
            upper = _finite_float(upper, "upper")
        lower = _per_band(lower, "lower")
        softening = _per_band(softening, "softening")
        if stretch == "asinh" and not isinstance(softening, str) and not np.all(
                np.asarray(softening) > 0):
            raise ValueError(f"softening must be > 0 nanomaggies, got {softening!r}")
        self.lower_sigma = _finite_float(lower_sigma, "lower_sigma")
        self.softening_sigma = _finite_float(softening_sigma, "softening_sigma")
        if not self.softening_sigma > 0:
            raise ValueError(f"softening_sigma must be > 0, got {softening_sigma!r}")
        self.upper = upper
        self.lower = lower
        self.stretch = stretch
        self.softening = softening
        self.upper_ = None if upper == "kmeans" else upper
        self.lower_ = None if isinstance(lower, str) else _as_param(lower)
        self.softening_ = None if isinstance(softening, str) else _as_param(softening)
        self.sky_sigma_ = None
        self._check()

    def _check(self):
        if self.upper_ is not None and self.lower_ is not None and not np.all(
                self.upper_ > np.asarray(self.lower_)):
            raise ValueError(f"upper ({self.upper_}) must be larger than lower ({self.lower_})")

    @property
    def fitted(self):
        """Whether every parameter of the map is known."""
        return (self.upper_ is not None and self.lower_ is not None
                and self.softening_ is not None)

    def fit(self, images):
        """Estimate what was left to the data: ``A`` (``"kmeans"``) and the sky (``"auto"``).

        Parameters
        ----------
        images : array-like or list
            Fluxes in nanomaggies, ``(n, band, y, x)`` or a list of ``(band,
            y, x)`` images (see `kmeans_truncation_point`); ignored when every
            parameter is given as a number.

        Returns
        -------
        self
        """
        upper = kmeans_truncation_point(images) if self.upper == "kmeans" else None
        sky = sky_sigma(images) if self._needs_sky else None
        return self._fit_stats(upper, sky)

    @property
    def _needs_sky(self):
        return isinstance(self.lower, str) or isinstance(self.softening, str)

    def _fit_stats(self, upper, sky):
        """Set what `fit` estimates from ``A`` (or None) and the sky sigma (or None)."""
        if self.upper == "kmeans":
            self.upper_ = upper
        if self._needs_sky:
            self.sky_sigma_ = sky
            if isinstance(self.lower, str):
                self.lower_ = -self.lower_sigma * self.sky_sigma_
            if isinstance(self.softening, str):
                self.softening_ = self.softening_sigma * self.sky_sigma_
        self._check()
        return self

    def _band_param(self, value, x):
        """``value`` shaped to broadcast over the band axis (third from last) of ``x``."""
        if np.ndim(value) == 0:
            return value
        value = np.asarray(value, dtype=np.float64)
        if x.ndim < 3 or x.shape[-3] != len(value):
            raise ValueError(f"this scaler has per-band parameters for {len(value)} bands; give "
                             f"arrays (..., band, y, x) with {len(value)} bands, got shape "
                             f"{x.shape}")
        return value[:, None, None]

    def _f(self, x, soft):
        return np.arcsinh(x / soft) if self.stretch == "asinh" else x

    def _finv(self, y, soft):
        return np.sinh(y) * soft if self.stretch == "asinh" else y

    def _require_fit(self):
        if not self.fitted:
            raise RuntimeError("the FluxScaler has parameters left to the data (upper='kmeans' "
                               "or lower/softening='auto') and was never fitted; call "
                               "fit(images) first or give them as numbers")

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
        x = np.asarray(flux, dtype=np.float64)
        lower, soft = self._band_param(self.lower_, x), self._band_param(self.softening_, x)
        x = np.clip(x, lower, self.upper_)
        lo, hi = self._f(lower, soft), self._f(self.upper_, soft)
        return (2.0 * (self._f(x, soft) - lo) / (hi - lo) - 1.0).astype(np.float32)

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
        lower, soft = self._band_param(self.lower_, y), self._band_param(self.softening_, y)
        lo, hi = self._f(lower, soft), self._f(self.upper_, soft)
        return self._finv((y + 1.0) / 2.0 * (hi - lo) + lo, soft).astype(np.float32)

    def log_abs_det_jacobian(self, flux):
        """Per-pixel ``log |d transform / d flux|`` inside the clip interval.

        The density of an image in the network's space becomes a density in
        nanomaggies by adding these terms over its pixels.  Clipped pixels
        (below ``lower`` or above ``upper``) have no density in nanomaggies:
        they come back as NaN.

        Parameters
        ----------
        flux : array-like
            Fluxes in nanomaggies (per-band parameters need ``(..., band, y,
            x)``).

        Returns
        -------
        `numpy.ndarray`
            float64, same shape; NaN where the flux is clipped.
        """
        self._require_fit()
        x = np.asarray(flux, dtype=np.float64)
        lower, soft = self._band_param(self.lower_, x), self._band_param(self.softening_, x)
        lo, hi = self._f(lower, soft), self._f(self.upper_, soft)
        deriv = 1.0 / np.sqrt(x ** 2 + soft ** 2) if self.stretch == "asinh" else 1.0
        out = np.log(2.0 * np.broadcast_to(deriv, x.shape) / (hi - lo))
        return np.where((x >= lower) & (x <= self.upper_), out, np.nan)

    def to_dict(self):
        """The scaler's parameters (given and fitted) as a JSON-safe dict."""
        def js(v):
            return v.tolist() if isinstance(v, np.ndarray) else v
        return {"upper": self.upper, "lower": js(self.lower), "stretch": self.stretch,
                "softening": js(self.softening), "lower_sigma": self.lower_sigma,
                "softening_sigma": self.softening_sigma, "upper_": self.upper_,
                "lower_": js(self.lower_), "softening_": js(self.softening_),
                "sky_sigma_": js(self.sky_sigma_)}

    @classmethod
    def from_dict(cls, d):
        """Rebuild a scaler from `to_dict` output (also that of earlier versions).

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
                  softening=d["softening"], lower_sigma=d.get("lower_sigma", 6.0),
                  softening_sigma=d.get("softening_sigma", 2.0))
        if d.get("upper_") is not None:
            obj.upper_ = _finite_float(d["upper_"], "upper_")
        for key in ("lower_", "softening_", "sky_sigma_"):
            if d.get(key) is not None:
                setattr(obj, key, _as_param(_per_band(d[key], key)))
        obj._check()
        return obj

    def __repr__(self):
        return f"FluxScaler({json.dumps(self.to_dict())[1:-1]})"
