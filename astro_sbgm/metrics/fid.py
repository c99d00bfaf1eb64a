"""Fréchet and kernel distances: FID, KID, and a galaxy-property Fréchet distance.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to
the 2048-d pool features of Inception-v3 for two image sets.  The network here
is the "FID Inception" of pytorch-fid (TensorFlow's 2015-12-05 graph, with its
pooling quirks), written out in `FIDInceptionV3`; its ``state_dict`` keys are
those of the standard weights file ``pt_inception-2015-12-05-6726825d.pth``,
which `load_fid_inception` reads from a local path or fetches once into the
astropy download cache.

How galaxies reach the network
    grz is mapped to RGB by `astro_sbgm.visualization.linear_rgb`, the
    linear composite of the paper's Fig. 2 and the one the montages show
    (`~astro_sbgm.visualization.plot_montage` and
    `~astro_sbgm.visualization.plot_comparison` with their default
    ``method="linear"``): z -> red, r -> green, g -> blue, clipped at 0
    below and at one level above, scaled linearly to [0, 1].  (The asinh
    `~astro_sbgm.visualization.rgb_composite` is for display only.)  For FID
    and KID the upper level is the same for both sets, the 99.5th percentile
    of the *real* set's pixels (``clip=`` overrides it), so that a model that
    makes galaxies too bright or too faint is seen.  Images are resized to 299x299
    (bilinear) and mapped to [-1, 1] as pytorch-fid does.

Small samples
    FID is biased upwards at small N (the bias falls roughly as 1/N), so
    compare FIDs only at equal N, and prefer KID (Bińkowski et al. 2018),
    the unbiased squared MMD with the cubic polynomial kernel
    ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets.

Offline alternative
    `property_frechet_distance` needs no pretrained weights: the Fréchet
    distance between Gaussians fitted to vectors of measured properties
    (magnitudes, colours, half-light radius and the morphology columns of
    `measure_galaxies`), each standardised by the first catalogue's mean and
    standard deviation.
"""

import os

import numpy as np
import torch

from ..io import as_batch
from ..visualization import linear_rgb
from ._inception import FIDInceptionV3
from .distances import SGD_COLUMNS, _split, read_catalogue

__all__ = ["frechet_distance", "FIDInceptionV3", "load_fid_inception", "inception_features",
           "fid", "kid", "property_frechet_distance", "FID_WEIGHTS_URL"]

#: Where pytorch-fid publishes the FID Inception weights.
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")

_MORPHOLOGY_COLUMNS = ("concentration", "asymmetry", "gini", "ellipticity")


# --------------------------------------------------------------------------- Fréchet distance
def _symmetric_sqrt(matrix):
    w, v = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Fréchet (2-Wasserstein) distance between two Gaussians.

    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``,
    evaluated with symmetric eigen-decompositions (no general matrix square
    root): ``S1^1/2`` from the eigenvectors of ``S1``, the trace term from the
    eigenvalues of the symmetric matrix ``S1^1/2 S2 S1^1/2``.  Round-off
    negative eigenvalues are set to zero, so singular covariances (fewer
    samples than dimensions) are handled.

    Parameters
    ----------
    mu1, mu2 : array-like, shape (d,)
        Means.
    sigma1, sigma2 : array-like, shape (d, d)
        Covariance matrices (symmetric, positive semi-definite).

    Returns
    -------
    float
        The squared distance (as in FID), never negative.

    Raises
    ------
    ValueError
        For shapes that do not match or non-finite entries.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_sbgm.metrics import frechet_distance
    >>> frechet_distance([0.0], [[1.0]], [1.0], [[4.0]])  # 1^2 + (2 - 1)^2
    2.0
    """
    mu1 = np.atleast_1d(np.asarray(mu1, float))
    mu2 = np.atleast_1d(np.asarray(mu2, float))
    s1 = np.atleast_2d(np.asarray(sigma1, float))
    s2 = np.atleast_2d(np.asarray(sigma2, float))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shapes do not match: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 "
                         f"{mu2.shape}, sigma2 {s2.shape}; expected (d,) and (d, d)")
    for name, arr in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} has non-finite entries")
    root1 = _symmetric_sqrt(s1)
    inner = root1 @ (0.5 * (s2 + s2.T)) @ root1
    eig = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return float(max(value, 0.0))


def _gaussian(features):
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors (n, d) to fit a Gaussian, got "
                         f"shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(
        features.shape[1], features.shape[1])


def _frechet_from_features(x, y):
    """Fréchet distance of Gaussians fitted to two feature sets (n, d).

    With fewer samples than dimensions (the usual case for 2048-d features and
    small test sets) the trace term is computed without any d x d matrix:
    writing ``S1 = A^T A`` and ``S2 = B^T B`` with ``A``, ``B`` the centred
    features over ``sqrt(n - 1)``, the eigenvalues of ``S1^1/2 S2 S1^1/2`` are
    the squared singular values of ``A B^T`` (n1 x n2), so the trace of its
    square root is the nuclear norm of ``A B^T``.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    for name, f in (("first", x), ("second", y)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"need at least 2 feature vectors (n, d) in the {name} set, got "
                             f"shape {f.shape}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} and {y.shape[1]}")
    if max(x.shape[0], y.shape[0]) >= x.shape[1]:
        mu1, s1 = _gaussian(x)
        mu2, s2 = _gaussian(y)
        return frechet_distance(mu1, s1, mu2, s2)
    a = (x - x.mean(axis=0)) / np.sqrt(x.shape[0] - 1)
    b = (y - y.mean(axis=0)) / np.sqrt(y.shape[0] - 1)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = x.mean(axis=0) - y.mean(axis=0)
    value = diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * nuclear
    return float(max(value, 0.0))


def load_fid_inception(weights=None, *, resize_input=True):
    """The FID Inception network with the standard pytorch-fid weights.

    Parameters
    ----------
    weights : str or path-like, optional
        Local copy of ``pt_inception-2015-12-05-6726825d.pth``.  When not
        given, the file is fetched from `FID_WEIGHTS_URL` with
        `astropy.utils.data.download_file` (``cache=True``: downloaded once,
        read from the astropy cache afterwards; offline, a cached copy is
        used).
    resize_input : bool, optional
        See `FIDInceptionV3`.

    Returns
    -------
    FIDInceptionV3
        In evaluation mode.

    Raises
    ------
    FileNotFoundError
        If ``weights`` does not exist.
    ValueError
        If the file's parameter names or shapes do not match the network.
    urllib.error.URLError
        If the weights must be downloaded and the network is unreachable.
    """
    if weights is None:
        from astropy.utils.data import download_file
        weights = download_file(FID_WEIGHTS_URL, cache=True)
    weights = os.fspath(weights)
    if not os.path.exists(weights):
        raise FileNotFoundError(f"no FID weights file at {weights!r}; download "
                                f"{FID_WEIGHTS_URL} or give weights=None to fetch it")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model = FIDInceptionV3(resize_input=resize_input)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{weights!r} is not a FID Inception state dict: missing "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    return model.eval()


def _is_features(x):
    return isinstance(x, np.ndarray) and x.ndim == 2


@torch.no_grad()
def inception_features(images, model, *, bands=None, clip=None, percentile=99.5,
                       batch_size=32):
    """2048-d Inception pool features of galaxy images.

    Parameters
    ----------
    images : array-like, `torch.Tensor` or list of `CCDData`
        ``(n, band, y, x)`` images, mapped to RGB by
        `astro_sbgm.visualization.linear_rgb`.
    model : FIDInceptionV3
        The network (`load_fid_inception`, or any module mapping
        ``(n, 3, y, x)`` in [0, 1] to ``(n, d)``).
    bands : str or sequence of str, optional
        See `astro_sbgm.visualization.linear_rgb`.
    clip : float, optional
        Upper clip level of the composite (one for all images); default the
        ``percentile`` of the images' own pixels.
    percentile : float, optional
        Used when ``clip`` is not given.
    batch_size : int, optional
        Images per forward pass.

    Returns
    -------
    numpy.ndarray, shape (n, d)
    """
    rgb = _rgb(images, bands, clip, percentile)
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, rgb.shape[0], max(int(batch_size), 1)):
        x = torch.as_tensor(rgb[start:start + batch_size].transpose(0, 3, 1, 2),
                            dtype=torch.float32, device=device)
        out.append(model(x).double().cpu().numpy())
    return np.concatenate(out)


def _rgb(images, bands, clip, percentile):
    if clip is None:
        clip = _common_clip(images, bands, percentile)
    return linear_rgb(images, bands, clip=clip)


def _common_clip(images, bands, percentile):
    data, _ = as_batch(images, bands)
    data = np.where(np.isfinite(data), data, 0.0)  # non-finite pixels are 0, as in the composite
    level = np.percentile(data, percentile)
    return float(level) if level > 0 else 1.0


def _features_pair(real, fake, model, weights, bands, clip, percentile, batch_size):
    if _is_features(real) and _is_features(fake):
        return real, fake
    if model is None:
        model = load_fid_inception(weights)
    if clip is None and not _is_features(real):
        clip = _common_clip(real, bands, percentile)
    kw = dict(bands=bands, clip=clip, percentile=percentile, batch_size=batch_size)
    fr = real if _is_features(real) else inception_features(real, model, **kw)
    ff = fake if _is_features(fake) else inception_features(fake, model, **kw)
    return fr, ff


def fid(real, fake, *, weights=None, model=None, bands=None, clip=None, percentile=99.5,
        batch_size=32):
    """Fréchet Inception Distance between two sets of galaxy images.

    Parameters
    ----------
    real, fake : array-like, `torch.Tensor`, list of `CCDData`, or features
        Images ``(n, band, y, x)``, or precomputed features as 2-D arrays
        ``(n, d)``.
    weights : str or path-like, optional
        FID Inception weights file, see `load_fid_inception`.
    model : torch.nn.Module, optional
        A network to use instead of loading one (e.g. a randomly initialised
        `FIDInceptionV3` for tests).
    bands : str or sequence of str, optional
        See `astro_sbgm.visualization.linear_rgb`.
    clip : float, optional
        Composite clip level for both sets; default the ``percentile`` of
        the real set's pixels.
    percentile : float, optional
        See ``clip``.
    batch_size : int, optional
        Images per forward pass.

    Returns
    -------
    float
        Biased upwards at small N: compare values at equal N only; see `kid`.

    Raises
    ------
    ValueError
        If a set has fewer than 2 images.
    """
    fr, ff = _features_pair(real, fake, model, weights, bands, clip, percentile, batch_size)
    return _frechet_from_features(fr, ff)


def _polynomial_mmd2(x, y):
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m = x.shape[0]
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2.0 * kxy.mean())


def kid(real, fake, *, subset_size=1000, n_subsets=100, seed=None, weights=None, model=None,
        bands=None, clip=None, percentile=99.5, batch_size=32):
    """Kernel Inception Distance: unbiased squared MMD of Inception features.

    The cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, the unbiased
    MMD^2 estimate on ``n_subsets`` random subsets of ``subset_size`` from each
    set (drawn without replacement within a subset).  Its expectation is 0
    when both sets come from one distribution, whatever N.

    Parameters
    ----------
    real, fake : array-like, `torch.Tensor`, list of `CCDData`, or features
        As for `fid`.
    subset_size : int, optional
        Samples per subset: at least 2 and at most the smaller set's size.
    n_subsets : int, optional
        Number of subsets.
    seed : int or `numpy.random.Generator`, optional
        Seed of the subsets.
    weights, model, bands, clip, percentile, batch_size
        As for `fid`.

    Returns
    -------
    mean : float
        Mean MMD^2 over the subsets (can be slightly negative).
    std : float
        Its standard deviation over the subsets.

    Raises
    ------
    ValueError
        If ``subset_size`` is below 2 or above the size of either set, or
        ``n_subsets`` is below 1.
    """
    fr, ff = _features_pair(real, fake, model, weights, bands, clip, percentile, batch_size)
    fr, ff = np.asarray(fr, np.float64), np.asarray(ff, np.float64)
    n = min(fr.shape[0], ff.shape[0])
    subset_size = int(subset_size)
    if subset_size < 2 or subset_size > n:
        raise ValueError(f"subset_size must be between 2 and the smaller set's size {n}, "
                         f"got {subset_size}; use subset_size={n} or more images")
    if int(n_subsets) < 1:
        raise ValueError(f"n_subsets must be at least 1, got {n_subsets}")
    rng = np.random.default_rng(seed)
    values = np.array([
        _polynomial_mmd2(fr[rng.choice(fr.shape[0], subset_size, replace=False)],
                         ff[rng.choice(ff.shape[0], subset_size, replace=False)])
        for _ in range(int(n_subsets))])
    return float(values.mean()), float(values.std())


def property_frechet_distance(cat_a, cat_b, *, columns=None):
    """Fréchet distance between two catalogues' measured-property distributions.

    Each property is standardised by ``cat_a``'s mean and standard deviation
    (so the distance is in units of the reference set's spread), Gaussians
    are fitted to both sets of property vectors, and `frechet_distance` of
    the two is returned.  Needs no pretrained network.

    Parameters
    ----------
    cat_a, cat_b : `~astropy.table.QTable`, `~astropy.table.Table` or path
        Catalogues; ``cat_a`` is the reference (real) set.
    columns : sequence of str, optional
        Property columns; default the SGD columns and the morphology columns
        (``concentration, asymmetry, gini, ellipticity``) present in both.

    Returns
    -------
    float

    Raises
    ------
    KeyError
        If a requested column is missing.
    ValueError
        If fewer than 2 rows per catalogue have all properties finite, or a
        property is constant in ``cat_a``.
    """
    a_tab, b_tab = read_catalogue(cat_a), read_catalogue(cat_b)
    if columns is None:
        names = [c for c in list(SGD_COLUMNS.values()) + list(_MORPHOLOGY_COLUMNS)
                 if c in a_tab.colnames and c in b_tab.colnames]
        if not names:
            raise ValueError("the catalogues share none of the default property columns; "
                             "give columns=")
    else:
        names = [columns] if isinstance(columns, str) else list(columns)
    cols_a, cols_b = [], []
    for name in names:
        for side, tab in (("A", a_tab), ("B", b_tab)):
            if name not in tab.colnames:
                raise KeyError(f"catalogue {side} has no column {name!r}; it has "
                               f"{tab.colnames}")
        va, ua = _split(a_tab[name])
        vb, ub = _split(b_tab[name])
        if ua is not None and ub is not None and ua != ub:
            vb = (vb * ub).to_value(ua)
        cols_a.append(va)
        cols_b.append(vb)
    a = np.column_stack(cols_a)
    b = np.column_stack(cols_b)
    a = a[np.isfinite(a).all(axis=1)]
    b = b[np.isfinite(b).all(axis=1)]
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"need at least 2 rows with all of {names} finite per catalogue, "
                         f"got {a.shape[0]} and {b.shape[0]}")
    mean, std = a.mean(axis=0), a.std(axis=0, ddof=1)
    if not (std > 0).all():
        flat = [n for n, s in zip(names, std) if not s > 0]
        raise ValueError(f"properties {flat} are constant in catalogue A; leave them out")
    mu1, s1 = _gaussian((a - mean) / std)
    mu2, s2 = _gaussian((b - mean) / std)
    return frechet_distance(mu1, s1, mu2, s2)
