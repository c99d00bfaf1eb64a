"""Nearest neighbours in pixel space, and a memorisation check.

A generative model that copies its training set would score perfectly on
every population statistic (SGD, FID).  The check here compares how close
generated galaxies lie to their nearest *training* galaxy with how close
*held-out* real galaxies lie to theirs (Smith, Geach et al. 2022, Fig. 3):
a model that generalises produces samples no closer to the training set than
unseen real galaxies are; a model that memorises produces near-copies.

Distances are root-mean-square pixel differences between images (Euclidean
distance divided by the square root of the number of values), so they do not
depend on the image size.  They are computed on the images as given, or on
``normalize(images)``: pass the model's flux scaling (for example
``FluxScaler.transform``) or a number ``A`` for the paper's map
``2 clip(x, 0, A) / A - 1``, so that bright cores do not dominate.
"""

from dataclasses import dataclass

import numpy as np
import torch
from astropy.nddata import NDData
from astropy.utils.decorators import deprecated_renamed_argument
from scipy import stats

from ..exceptions import AstroSBGMDeprecationWarning
from ..io import as_batch

__all__ = ["nearest_neighbours", "memorisation_check", "MemorisationResult"]


def _as_batch(images, name):
    """A float32 torch tensor (n, ...) from an array, tensor, NDData or a list of them."""
    if isinstance(images, torch.Tensor):
        out = images.detach().to(torch.float32).cpu()
    elif isinstance(images, (NDData, list, tuple)):
        if isinstance(images, (list, tuple)) and len(images) == 0:
            raise ValueError(f"{name} is empty")
        out = torch.as_tensor(as_batch(images, dtype=np.float32, name=name)[0])
    else:
        out = torch.as_tensor(np.asarray(images, np.float32))
    if out.ndim < 2 or out.shape[0] == 0:
        raise ValueError(f"{name} must be a batch of images (n, ...) with n >= 1, got shape "
                         f"{tuple(out.shape)}")
    return out


def _prepared(images, name, normalize):
    """The batch, normalised, flattened to (n, values)."""
    x = _as_batch(images, name)
    if callable(normalize):
        x = _as_batch(normalize(x), f"normalize({name})")
    elif normalize is not None:
        try:
            scale = float(normalize)
        except (TypeError, ValueError):
            scale = np.nan
        if not scale > 0:
            raise ValueError(f"normalize must be a callable or a positive clip level A, "
                             f"got {normalize!r}")
        x = 2.0 * torch.clamp(x, 0.0, scale) / scale - 1.0
    return x.reshape(x.shape[0], -1)


@deprecated_renamed_argument("normalise", "normalize", "0.1",
                             warning_type=AstroSBGMDeprecationWarning)
def nearest_neighbours(query, reference, k=1, *, normalize=None, batch_size=256,
                       exclude_self=False):
    """The ``k`` nearest reference images of every query image, in pixel space.

    Parameters
    ----------
    query, reference : array-like, `torch.Tensor`, `~astropy.nddata.NDData` or list
        Batches of images of one shape, ``(n, band, y, x)`` (any trailing
        shape works); lists of `CCDData` are stacked.
    k : int, optional
        Number of neighbours (at most the size of ``reference``).
    normalize : callable or float, optional
        Applied to both batches before the distances: a callable, or a clip
        level ``A`` for ``2 clip(x, 0, A) / A - 1``.  Default: none.  The old
        spelling ``normalise=`` works until the next release, with an
        `~astro_sbgm.exceptions.AstroSBGMDeprecationWarning`.
    batch_size : int, optional
        Query images per distance block (bounds the memory used).
    exclude_self : bool, optional
        When ``query`` is ``reference``, skip each image's match with itself.

    Returns
    -------
    indices : numpy.ndarray of int, shape (n_query, k)
        Indices into ``reference``, nearest first.
    distances : numpy.ndarray of float, shape (n_query, k)
        Root-mean-square pixel differences.

    Raises
    ------
    ValueError
        For empty inputs, images of different shapes, or ``k`` out of range.
    """
    q = _prepared(query, "query", normalize)
    r = _prepared(reference, "reference", normalize)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query images have {q.shape[1]} values each but reference images "
                         f"{r.shape[1]}; they must have the same shape")
    k = int(k)
    n_ref = r.shape[0] - (1 if exclude_self else 0)
    if not 1 <= k <= n_ref:
        raise ValueError(f"k must be between 1 and {n_ref} (the reference size), got {k}")
    if exclude_self and q.shape[0] != r.shape[0]:
        raise ValueError("exclude_self=True needs query and reference to be the same batch")
    npix = q.shape[1]
    r64 = r.to(torch.float64)
    r_sq = (r64 ** 2).sum(dim=1)
    idx_out, dist_out = [], []
    for start in range(0, q.shape[0], max(int(batch_size), 1)):
        qb = q[start:start + batch_size].to(torch.float64)
        d2 = (qb ** 2).sum(dim=1, keepdim=True) + r_sq[None, :] - 2.0 * qb @ r64.T
        d2 = torch.clamp(d2, min=0.0)
        if exclude_self:
            rows = torch.arange(qb.shape[0])
            d2[rows, rows + start] = float("inf")
        vals, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        idx_out.append(idx.numpy())
        dist_out.append(torch.sqrt(vals / npix).numpy())
    return np.concatenate(idx_out), np.concatenate(dist_out)


@dataclass
class MemorisationResult:
    """Outcome of `memorisation_check`.

    Attributes
    ----------
    sample_distances, held_out_distances : numpy.ndarray
        Nearest-training-neighbour distance of every sample and of every
        held-out image.
    sample_indices : numpy.ndarray
        Index of each sample's nearest training image.
    median_ratio : float
        ``median(sample_distances) / median(held_out_distances)``: about 1 or
        more for a model that generalises, well below 1 for one that copies.
    copy_fraction : float
        Fraction of samples closer to the training set than the closest
        held-out image is.
    p_value : float
        One-sided Mann-Whitney U test that sample distances are smaller than
        held-out distances.
    memorised : bool
        ``p_value < alpha``: the samples are significantly closer to the
        training set than unseen real galaxies are.
    alpha : float
        The test level used.
    """

    sample_distances: np.ndarray
    held_out_distances: np.ndarray
    sample_indices: np.ndarray
    median_ratio: float
    copy_fraction: float
    p_value: float
    memorised: bool
    alpha: float

    def __str__(self):
        verdict = "MEMORISED" if self.memorised else "no sign of memorisation"
        return (f"median NN distance: samples {np.median(self.sample_distances):.4g}, "
                f"held-out {np.median(self.held_out_distances):.4g} "
                f"(ratio {self.median_ratio:.3f}); copy fraction {self.copy_fraction:.3f}; "
                f"p = {self.p_value:.3g}: {verdict}")


@deprecated_renamed_argument("normalise", "normalize", "0.1",
                             warning_type=AstroSBGMDeprecationWarning)
def memorisation_check(samples, train, held_out, *, normalize=None, alpha=0.01,
                       batch_size=256):
    """Compare sample-to-train with held-out-to-train nearest-neighbour distances.

    Parameters
    ----------
    samples : array-like, `torch.Tensor` or list of `CCDData`
        Generated images.
    train : array-like, `torch.Tensor` or list of `CCDData`
        The model's training images.
    held_out : array-like, `torch.Tensor` or list of `CCDData`
        Real images the model never saw, from the same population.
    normalize : callable or float, optional
        See `nearest_neighbours`.
    alpha : float, optional
        Level of the one-sided Mann-Whitney U test.
    batch_size : int, optional
        See `nearest_neighbours`.

    Returns
    -------
    MemorisationResult

    Raises
    ------
    ValueError
        For empty inputs or images of different shapes.
    """
    s_idx, s_dist = nearest_neighbours(samples, train, 1, normalize=normalize,
                                       batch_size=batch_size)
    _, h_dist = nearest_neighbours(held_out, train, 1, normalize=normalize,
                                   batch_size=batch_size)
    s_dist, h_dist = s_dist[:, 0], h_dist[:, 0]
    p_value = float(stats.mannwhitneyu(s_dist, h_dist, alternative="less").pvalue)
    h_med = float(np.median(h_dist))
    ratio = float(np.median(s_dist) / h_med) if h_med > 0 else np.inf
    return MemorisationResult(sample_distances=s_dist, held_out_distances=h_dist,
                              sample_indices=s_idx[:, 0], median_ratio=ratio,
                              copy_fraction=float(np.mean(s_dist < h_dist.min())),
                              p_value=p_value, memorised=bool(p_value < alpha), alpha=alpha)
