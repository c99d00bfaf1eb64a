"""Tests of nearest neighbours and the memorisation check."""

import numpy as np
import pytest
import torch

from astro_sbgm.metrics import memorisation_check, nearest_neighbours


def test_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(30, 3, 6, 6))
    query = rng.normal(size=(7, 3, 6, 6))
    idx, dist = nearest_neighbours(query, ref, k=3, batch_size=3)
    brute = np.sqrt(((query[:, None] - ref[None]) ** 2).reshape(7, 30, -1).mean(axis=2))
    order = np.argsort(brute, axis=1)[:, :3]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(dist, np.take_along_axis(brute, order, 1), rtol=1e-5)
    assert np.all(np.diff(dist, axis=1) >= 0)


def test_neighbours_exclude_self_and_normalise():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 3, size=(10, 3, 5, 5)).astype(np.float32)
    idx, dist = nearest_neighbours(ref, ref, k=1)
    assert idx[:, 0].tolist() == list(range(10)) and np.allclose(dist, 0, atol=1e-3)
    idx, _ = nearest_neighbours(ref, ref, k=1, exclude_self=True, batch_size=4)
    assert np.all(idx[:, 0] != np.arange(10))
    # the paper's clip map: values above A are equal after normalisation
    a = np.full((1, 1, 2, 2), 5.0)
    b = np.full((1, 1, 2, 2), 9.0)
    _, d = nearest_neighbours(a, b, normalize=2.0)
    assert d[0, 0] == 0.0
    _, d = nearest_neighbours(torch.as_tensor(a), b, normalize=lambda x: x / 4.0)
    assert d[0, 0] == pytest.approx(1.0)


def test_neighbours_bad_input():
    x = np.zeros((3, 1, 4, 4))
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(x, x, k=4)
    with pytest.raises(ValueError, match="same shape"):
        nearest_neighbours(x, np.zeros((3, 1, 5, 5)))
    with pytest.raises(ValueError, match="n >= 1"):
        nearest_neighbours(np.zeros((0, 1, 4, 4)), x)
    with pytest.raises(ValueError, match="clip level"):
        nearest_neighbours(x, x, normalize=-1)


def test_memorisation_check_catches_copies():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(60, 3, 8, 8))
    held_out = rng.normal(size=(40, 3, 8, 8))
    copies = train[rng.integers(0, 60, 40)] + rng.normal(0, 0.05, size=(40, 3, 8, 8))
    fresh = rng.normal(size=(40, 3, 8, 8))
    bad = memorisation_check(copies, train, held_out)
    good = memorisation_check(fresh, train, held_out)
    assert bad.memorised and bad.median_ratio < 0.2 and bad.copy_fraction == 1.0
    assert not good.memorised and 0.8 < good.median_ratio < 1.25
    assert "MEMORISED" in str(bad)


def test_old_spelling_normalise_works_and_warns():
    from astro_sbgm.exceptions import AstroSBGMDeprecationWarning

    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 3, (4, 2, 5, 5)), rng.uniform(0, 3, (6, 2, 5, 5))
    new = nearest_neighbours(a, b, k=2, normalize=2.0)
    with pytest.warns(AstroSBGMDeprecationWarning, match="normalise.*normalize"):
        old = nearest_neighbours(a, b, k=2, normalise=2.0)
    np.testing.assert_array_equal(new[0], old[0])
    np.testing.assert_array_equal(new[1], old[1])
    with pytest.warns(AstroSBGMDeprecationWarning, match="normalise"):
        check = memorisation_check(a, b, b[:3], normalise=2.0)
    assert check.median_ratio == memorisation_check(a, b, b[:3], normalize=2.0).median_ratio
