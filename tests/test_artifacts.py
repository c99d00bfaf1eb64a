"""Tests of the artefact simulators (satellite trails, star and column masks)."""

import numpy as np
import pytest
import astropy.units as u
from astropy.nddata import CCDData

from astro_sbgm.artifacts import add_satellite_trails, bad_column_mask, star_mask
from astro_sbgm.datasets import make_trivial_dataset


def _line_distance(params, shape):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    th = np.radians(params["angle"].to_value(u.deg))
    px, py = params["x"].to_value(u.pix), params["y"].to_value(u.pix)
    return np.abs(-(xx - px) * np.sin(th) + (yy - py) * np.cos(th))


def test_trail_lands_exactly_where_the_mask_says():
    image = np.random.default_rng(0).normal(0.0, 0.01, (3, 40, 50))
    defaced, mask, params = add_satellite_trails(image, n_trails=2, seed=3, dashed=0.0,
                                                 return_params=True)
    assert defaced.shape == image.shape and mask.shape == image.shape
    changed = defaced != image
    assert np.array_equal(changed, mask)
    assert mask.any() and not mask.all()
    # every masked pixel lies within one trail's half-width of its line; nothing else is
    near = np.zeros((40, 50), bool)
    for row in params:
        near |= _line_distance(row, (40, 50)) <= row["width"].to_value(u.pix)
    assert np.array_equal(mask[0], near)
    assert np.all(defaced[mask] > image[mask])
    assert np.array_equal(image, np.random.default_rng(0).normal(0.0, 0.01, (3, 40, 50)))


def test_trails_are_deterministic_for_a_seed_and_differ_between_seeds():
    image = np.zeros((2, 32, 32))
    a, ma = add_satellite_trails(image, n_trails=3, seed=11)
    b, mb = add_satellite_trails(image, n_trails=3, seed=11)
    c, mc = add_satellite_trails(image, n_trails=3, seed=12)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(ma, mc)


def test_old_spelling_colour_scatter_works_and_warns():
    from astro_sbgm.exceptions import AstroSBGMDeprecationWarning

    image = np.zeros((3, 32, 32))
    new = add_satellite_trails(image, n_trails=2, seed=5, color_scatter=0.5)
    with pytest.warns(AstroSBGMDeprecationWarning, match="colour_scatter.*color_scatter"):
        old = add_satellite_trails(image, n_trails=2, seed=5, colour_scatter=0.5)
    assert np.array_equal(new[0], old[0]) and np.array_equal(new[1], old[1])
    # the scatter is used: another value gives other band ratios
    other = add_satellite_trails(image, n_trails=2, seed=5, color_scatter=0.0)
    assert np.array_equal(other[1], new[1]) and not np.array_equal(other[0], new[0])


def test_dashed_trails_have_gaps_along_the_line():
    image = np.zeros((1, 64, 64))
    _, mask, params = add_satellite_trails(image, n_trails=1, seed=5, dashed=1.0,
                                           period=(12.0, 12.0), duty_cycle=(0.5, 0.5),
                                           width=2.0, return_params=True)
    row = params[0]
    assert row["dashed"]
    on_line = _line_distance(row, (64, 64)) <= 0.5
    assert on_line.sum() > 20
    # about half of the pixels along the centre line are lit
    assert 0.25 < mask[0][on_line].mean() < 0.75


def test_single_band_trails_and_brightness_range():
    image = np.zeros((3, 48, 48))
    out, mask, params = add_satellite_trails(image, n_trails=4, seed=2, all_bands=False,
                                             brightness=(5.0, 5.0), color_scatter=0.0,
                                             return_params=True)
    assert all(n == 1 for n in params["n_bands"])
    peaks = np.stack(params["peak"])
    assert np.allclose(np.sort(peaks, axis=1)[:, -1], 5.0) and np.all(np.sort(peaks)[:, :2] == 0)
    # each band holds exactly the trails drawn in it
    for b in range(3):
        assert mask[b].any() == bool(peaks[:, b].any())
    lit = out[mask]
    assert lit.min() > 0 and lit.max() <= 5.0 * 4


def test_ccddata_in_ccddata_out_and_input_untouched():
    ccd = make_trivial_dataset(1, size=24, seed=1)[0]
    before = ccd.data.copy()
    out, mask = add_satellite_trails(ccd, seed=0)
    assert isinstance(out, CCDData)
    assert out.unit == ccd.unit and out.wcs.wcs.compare(ccd.wcs.wcs)
    assert np.array_equal(ccd.data, before)
    assert np.array_equal(out.data != before, mask)
    assert out.meta["NTRAILS"] == 1


def test_two_dimensional_array_gives_two_dimensional_mask():
    out, mask = add_satellite_trails(np.zeros((20, 30)), seed=1)
    assert out.shape == (20, 30) and mask.shape == (20, 30) and mask.any()


@pytest.mark.parametrize("kw", [dict(n_trails=0), dict(brightness=(5, 1)),
                                dict(width=-1.0), dict(duty_cycle=(0.5, 1.5)),
                                dict(dashed=2.0)])
def test_trail_bad_arguments(kw):
    with pytest.raises(ValueError):
        add_satellite_trails(np.zeros((8, 8)), **kw)


def test_star_mask_is_a_disc():
    m = star_mask((3, 21, 31), center=(10.0, 12.0), radius=4.0)
    assert m.shape == (3, 21, 31)
    yy, xx = np.mgrid[0:21, 0:31]
    assert np.array_equal(m[1], (xx - 10) ** 2 + (yy - 12) ** 2 <= 16)
    assert m[0, 12, 10] and not m[0, 12, 15] and m[2, 12, 14]
    with pytest.raises(ValueError, match="radius"):
        star_mask((10, 10), (5, 5), 0)


def test_bad_column_mask():
    m = bad_column_mask((2, 10, 12), column=4, width=2, rows=(3, 8))
    assert m.shape == (2, 10, 12)
    assert m[:, 3:8, 4:6].all() and m.sum() == 2 * 5 * 2
    assert bad_column_mask((10, 12), column=0).sum() == 10
    with pytest.raises(ValueError, match="outside"):
        bad_column_mask((10, 12), column=12)
