"""Non-parametric morphology (Gini, asymmetry, ellipticity), vectorised over a batch.

Private helpers of `astro_sbgm.metrics.photometry`.  Every function works on a
batch of background-subtracted images of one band that share one measurement
centre, and on the curve-of-growth geometry built for that centre (exact-overlap circle
weights on a radius grid, see ``photometry._Geometry``).  Circles of a
per-galaxy radius are read off the enclosed sums at the galaxy's own index
on the radius grid, so no per-galaxy aperture is ever built.
"""

import numpy as np
from scipy import ndimage

__all__ = []

_SQRT_PI = np.sqrt(np.pi)


def _radius_index(radii, radius):
    """Index on the radius grid of the grid radius nearest to each ``radius``.

    NaN radii give index -1.  Radii beyond the grid give the last index.
    """
    radius = np.asarray(radius, dtype=float)
    ok = np.isfinite(radius)
    idx = np.searchsorted(radii, np.where(ok, radius, 0.0))
    idx = np.clip(idx, 0, radii.size - 1)
    lower = np.clip(idx - 1, 0, radii.size - 1)
    closer_lower = np.abs(radii[lower] - radius) < np.abs(radii[idx] - radius)
    idx = np.where(ok & closer_lower, lower, idx)
    return np.where(ok, idx, -1)


def _enclosed(geom, flat, index):
    """Sum of ``flat`` (n, npix) inside the circle of grid index ``index`` (n,).

    Exact pixel-overlap weights.  Rows with index -1 give NaN.
    """
    cum = geom.cumulative(flat)
    rows = np.arange(flat.shape[0])
    out = cum[rows, np.maximum(index, 0)]
    return np.where(index >= 0, out, np.nan)


def _rotate_180(images, cx, cy):
    """Rotate each image (n, y, x) by 180 degrees about ``(cx, cy)``.

    Pixels whose rotated position falls outside the image are NaN.  When
    ``2 cx`` and ``2 cy`` are integers (the cutout centre, or a pixel centre)
    the rotation is an exact re-indexing; otherwise it is bilinear.
    """
    n, ny, nx = images.shape
    sx, sy = 2.0 * cx, 2.0 * cy
    if float(sx).is_integer() and float(sy).is_integer():
        sx, sy = int(sx), int(sy)
        out = np.full(images.shape, np.nan)
        # target pixel (y, x) takes source pixel (sy - y, sx - x)
        ys = np.arange(ny)
        xs = np.arange(nx)
        yok = (sy - ys >= 0) & (sy - ys < ny)
        xok = (sx - xs >= 0) & (sx - xs < nx)
        ty, tx = ys[yok], xs[xok]
        out[:, ty[:, None], tx[None, :]] = images[:, (sy - ty)[:, None], (sx - tx)[None, :]]
        return out
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    coords = np.array([sy - yy, sx - xx])
    return np.stack([ndimage.map_coordinates(im, coords, order=1, cval=np.nan)
                     for im in images])


def asymmetry(images, geom, radius, background_std):
    """Rotational asymmetry inside a circle of per-galaxy radius.

    ``A = (sum |I - I_180| - N_pix * 2 sigma / sqrt(pi)) / sum |I|`` over the
    circle (exact overlap weights), rotation about the measurement centre,
    where ``2 sigma / sqrt(pi)`` is the expected ``|I - I_180|`` of pure
    Gaussian noise of standard deviation ``sigma`` (the background term of
    Conselice 2003, computed analytically rather than from a sky patch).
    ``sigma`` NaN (unknown) means no noise correction.
    """
    n, ny, nx = images.shape
    rot = _rotate_180(images, geom.cx, geom.cy)
    valid = np.isfinite(rot) & np.isfinite(images)
    diff = np.where(valid, np.abs(images - rot), 0.0).reshape(n, -1)
    absi = np.where(valid, np.abs(images), 0.0).reshape(n, -1)
    area = valid.reshape(n, -1).astype(float)
    index = _radius_index(geom.radii, radius)
    s_diff = _enclosed(geom, diff, index)
    s_abs = _enclosed(geom, absi, index)
    s_area = _enclosed(geom, area, index)
    noise = np.where(np.isfinite(background_std), background_std, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (s_diff - s_area * 2.0 * noise / _SQRT_PI) / s_abs
    return np.where(s_abs > 0, out, np.nan)


def gini(images, geom, radius):
    """Gini coefficient of ``|I|`` over the pixels whose centres lie in a circle.

    The same estimator as `photutils.morphology.gini` (Lotz et al. 2004),
    ``G = sum_i (2 i - n - 1) |x_i| / (mean|x| n (n - 1))`` over the sorted
    values, evaluated for all galaxies at once.
    """
    n = images.shape[0]
    flat = np.abs(images.reshape(n, -1))
    inside = (geom.distance.ravel()[None, :] <= np.asarray(radius)[:, None]) & np.isfinite(flat)
    vals = np.sort(np.where(inside, flat, np.inf), axis=1)
    count = inside.sum(axis=1)
    rank = np.arange(1, flat.shape[1] + 1)[None, :]
    used = rank <= count[:, None]
    vals = np.where(used, vals, 0.0)
    kernel = (2.0 * rank - count[:, None] - 1.0) * vals
    total = vals.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = kernel.sum(axis=1) / (total * (count - 1.0))
    out = np.where(total == 0, 0.0, out)
    out = np.where(count == 1, 0.0, out)
    return np.where((count == 0) | ~np.isfinite(np.asarray(radius, float)), np.nan, out)


def ellipticity(images, geom, radius):
    """``1 - b/a`` from the unweighted second moments inside a circle.

    The moments are taken about the flux-weighted centroid inside the circle
    (exact overlap weights) of the background-subtracted image; ``b/a`` is the
    square root of the ratio of the eigenvalues of the moment matrix.  NaN
    when the enclosed flux is not positive or the matrix is not positive
    definite.
    """
    n, ny, nx = images.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    dx = (xx - geom.cx).ravel()[None, :]
    dy = (yy - geom.cy).ravel()[None, :]
    flat = np.where(np.isfinite(images), images, 0.0).reshape(n, -1)
    index = _radius_index(geom.radii, radius)
    s0 = _enclosed(geom, flat, index)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = _enclosed(geom, flat * dx, index) / s0
        my = _enclosed(geom, flat * dy, index) / s0
        cxx = _enclosed(geom, flat * dx * dx, index) / s0 - mx ** 2
        cyy = _enclosed(geom, flat * dy * dy, index) / s0 - my ** 2
        cxy = _enclosed(geom, flat * dx * dy, index) / s0 - mx * my
        half_trace = 0.5 * (cxx + cyy)
        root = np.sqrt(np.maximum(0.25 * (cxx - cyy) ** 2 + cxy ** 2, 0.0))
        lam1 = half_trace + root
        lam2 = half_trace - root
        out = 1.0 - np.sqrt(lam2 / lam1)
    ok = (s0 > 0) & (lam2 > 0) & np.isfinite(out)
    return np.where(ok, out, np.nan)
