"""Tests of astro_sbgm.calibration: the paper's flux offset correction."""

import json

import astropy.units as u
import numpy as np
import pytest
from astropy.nddata import CCDData, StdDevUncertainty

from astro_sbgm.calibration import PAPER_SLOPES, FluxCalibration, FluxCalibrationWarning
from astro_sbgm.io import make_tan_wcs

K = np.array([1.18, 1.16, 1.23])  # per-band g, r, z


def _galaxies(n, seed, size=8):
    """Positive images whose median varies from image to image (a spread of galaxy levels)."""
    rng = np.random.default_rng(seed)
    level = rng.lognormal(mean=-1.0, sigma=0.6, size=(n, 3, 1, 1)) * [[[[1.0]], [[1.5]], [[2.0]]]]
    return level * rng.lognormal(mean=0.0, sigma=0.3, size=(n, 3, size, size))


def _ccd(data, bands="grz"):
    ccd = CCDData(np.asarray(data, np.float32), unit=u.nanomaggy,
                  wcs=make_tan_wcs(data.shape[-2:], 0.262 * u.arcsec, 10.0, 20.0))
    ccd.meta["BANDS"] = ",".join(bands)
    for i, b in enumerate(bands):
        ccd.meta[f"BAND{i}"] = b
    return ccd


def _paper_fit(fake, real):
    """The paper's recipe written out directly, for equal numbers of images."""
    fake_med = np.sort(np.median(fake.reshape(len(fake), -1), axis=1))
    real_med = np.sort(np.median(real.reshape(len(real), -1), axis=1))
    return np.polyfit(fake_med, real_med, 1)


def test_recovers_exact_slopes():
    reals = _galaxies(40, seed=1)
    fakes = reals / K[None, :, None, None]
    cal = FluxCalibration().fit(fakes, reals, bands="grz")
    assert cal.bands == ("g", "r", "z") and cal.source == "fit"
    np.testing.assert_allclose([cal.slopes[b] for b in "grz"], K, rtol=1e-9)
    np.testing.assert_allclose([cal.intercepts[b] for b in "grz"], 0, atol=1e-9)
    assert cal.n_pairs == {"g": 40, "r": 40, "z": 40}


def test_independent_draws_follow_the_paper_recipe():
    # fakes and reals are different galaxies from the same population; the fakes are too faint
    reals = _galaxies(600, seed=2)
    fakes = _galaxies(600, seed=3) / K[None, :, None, None]
    cal = FluxCalibration().fit(fakes, reals, bands="grz")
    for j, band in enumerate("grz"):
        slope, intercept = _paper_fit(fakes[:, j], reals[:, j])
        assert cal.slopes[band] == pytest.approx(slope, rel=1e-12)
        assert cal.intercepts[band] == pytest.approx(intercept, rel=1e-9, abs=1e-12)
        # the sampling error of the recipe is large (see the next test); the truth is within it
        assert abs(cal.slopes[band] - K[j]) < 3 * cal.slope_errors[band]
        assert 0.02 * K[j] < cal.slope_errors[band] < 0.3 * K[j]


def test_bootstrap_error_matches_the_scatter_between_samples():
    slopes, errors = [], []
    for seed in range(20):
        reals = _galaxies(200, seed=100 + seed)
        fakes = _galaxies(200, seed=200 + seed) / K[None, :, None, None]
        cal = FluxCalibration().fit(fakes, reals, bands="grz", n_bootstrap=50, seed=seed)
        slopes.append(cal.slopes["r"])
        errors.append(cal.slope_errors["r"])
    ratio = np.mean(errors) / np.std(slopes, ddof=1)
    assert 0.67 < ratio < 1.5
    none = FluxCalibration().fit(fakes, reals, bands="grz", n_bootstrap=0)
    assert none.slope_errors == {} and none.slopes == cal.slopes


def test_ccd_lists_give_the_array_result():
    reals = _galaxies(12, seed=4)
    fakes = _galaxies(12, seed=5) * 0.8
    from_arrays = FluxCalibration().fit(fakes, reals, bands="grz")
    # the reals in another band order: matched by name
    real_ccds = [_ccd(r[::-1], bands="zrg") for r in reals]
    from_ccds = FluxCalibration().fit([_ccd(f) for f in fakes], real_ccds)
    for band in "grz":
        assert from_ccds.slopes[band] == pytest.approx(from_arrays.slopes[band], rel=1e-6)


def test_unequal_numbers_pair_by_quantile():
    reals = _galaxies(30, seed=6)
    # every fake twice: the larger set's quantiles at the smaller set's ranks are exact
    fakes = np.concatenate([reals, reals]) / K[None, :, None, None]
    cal = FluxCalibration().fit(fakes, reals, bands="grz")
    np.testing.assert_allclose([cal.slopes[b] for b in "grz"], K, rtol=1e-9)
    assert cal.n_pairs["r"] == 30
    fake, real = cal.pairs["r"]
    assert len(fake) == len(real) == 30 and np.all(np.diff(fake) >= 0)


def test_masked_pixels_are_ignored():
    reals = _galaxies(10, seed=7)
    fakes = reals / K[None, :, None, None]
    ccds = [_ccd(f) for f in fakes]
    for ccd in ccds:  # corrupt and mask a third of the pixels
        ccd.mask = np.zeros(ccd.shape, bool)
        ccd.mask[:, :3] = True
        ccd.data[:, :3] = 1e6
    cal = FluxCalibration().fit(ccds, [_ccd(r) for r in reals])
    fake_med = np.median(fakes[:, :, 3:].reshape(10, 3, -1), axis=2)
    real_med = np.median(reals.reshape(10, 3, -1), axis=2)
    for j, band in enumerate("grz"):
        slope, _ = np.polyfit(np.sort(fake_med[:, j].astype(np.float32).astype(float)),
                              np.sort(real_med[:, j].astype(np.float32).astype(float)), 1)
        assert cal.slopes[band] == pytest.approx(slope, rel=1e-5)


def test_apply_multiplies_exactly():
    cal = FluxCalibration({"g": 1.5, "r": 2.0, "z": 0.75})
    data = _galaxies(1, seed=8)[0].astype(np.float32)
    image = _ccd(data[::-1], bands="zrg")  # bands out of the calibration's order
    image.uncertainty = StdDevUncertainty(np.full(data.shape, 0.1, np.float32))
    image.mask = np.zeros(data.shape, bool)
    image.mask[0, 0, 0] = True
    before = image.data.copy()
    out = cal.apply(image)
    assert isinstance(out, CCDData)
    factors = np.array([0.75, 2.0, 1.5], np.float32)[:, None, None]
    np.testing.assert_array_equal(out.data, before * factors)
    np.testing.assert_array_equal(out.uncertainty.array, np.float32(0.1) * factors
                                  * np.ones(data.shape, np.float32))
    np.testing.assert_array_equal(out.mask, image.mask)
    np.testing.assert_array_equal(image.data, before)  # input untouched
    assert "FLXCAL" not in image.meta
    assert out.unit == u.nanomaggy
    assert out.wcs.wcs.crval[0] == pytest.approx(10.0)
    assert [out.meta[f"FLXCAL{i}"] for i in range(3)] == [0.75, 2.0, 1.5]
    assert out.meta["BANDS"] == "z,r,g"


def test_apply_to_a_list_and_arrays():
    cal = FluxCalibration.paper()
    data = _galaxies(3, seed=9).astype(np.float32)
    out = cal.apply([_ccd(d) for d in data])
    assert isinstance(out, list) and len(out) == 3
    expected = data * np.array([1.18, 1.16, 1.23], np.float32)[None, :, None, None]
    np.testing.assert_array_equal(np.stack([o.data for o in out]), expected)
    arrays = cal.apply(data, bands="grz")
    np.testing.assert_array_equal(np.stack([o.data for o in arrays]), expected)
    assert "Smith" in out[0].meta["FLXCAL"]


def test_apply_twice_warns():
    cal = FluxCalibration.paper()
    once = cal.apply(_ccd(_galaxies(1, seed=10)[0]))
    with pytest.warns(FluxCalibrationWarning, match="calibrated before"):
        cal.apply(once)


def test_paper_preset():
    cal = FluxCalibration.paper()
    assert cal.slopes == {"g": 1.18, "r": 1.16, "z": 1.23} == PAPER_SLOPES
    assert cal.source == "paper" and cal.fitted
    table = cal.to_table()
    assert list(table["band"]) == ["g", "r", "z"]
    np.testing.assert_array_equal(table["slope"], [1.18, 1.16, 1.23])
    assert table["intercept"].unit == u.nanomaggy and np.all(np.isnan(table["intercept"]))


def test_dict_round_trip():
    reals = _galaxies(20, seed=11)
    cal = FluxCalibration().fit(_galaxies(20, seed=12), reals, bands="grz")
    back = FluxCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.slopes == cal.slopes and back.intercepts == cal.intercepts
    assert back.n_pairs == cal.n_pairs and back.source == "fit"
    assert back.slope_errors == cal.slope_errors and len(back.slope_errors) == 3
    paper = FluxCalibration.from_dict(FluxCalibration.paper().to_dict())
    assert paper.slopes == PAPER_SLOPES and paper.source == "paper"


def test_mismatched_bands():
    reals = [_ccd(r, bands="gri") for r in _galaxies(5, seed=13)]
    fakes = [_ccd(f) for f in _galaxies(5, seed=14)]
    with pytest.raises(ValueError, match=r"only in fakes: \['z'\], only in reals: \['i'\]"):
        FluxCalibration().fit(fakes, reals)


def test_mixed_bands_within_one_set():
    fakes = [_ccd(f) for f in _galaxies(4, seed=15)]
    fakes[2] = _ccd(_galaxies(1, seed=16)[0], bands="gri")
    with pytest.raises(ValueError, match="fakes image 2 has bands"):
        FluxCalibration().fit(fakes, [_ccd(r) for r in _galaxies(4, seed=17)])


def test_apply_uncalibrated_band():
    cal = FluxCalibration({"g": 1.1, "r": 1.2})
    with pytest.raises(ValueError, match=r"band\(s\) \['z'\] with no calibration factor"):
        cal.apply(_ccd(_galaxies(1, seed=18)[0]))


@pytest.mark.parametrize("fakes, reals, match", [
    (np.ones((4, 3, 8, 8)), np.ones((4, 3, 8, 8)), "same median"),
    (np.ones((1, 3, 8, 8)), np.ones((4, 3, 8, 8)), "at least 2"),
    (np.ones((4, 2, 8, 8)), np.ones((4, 3, 8, 8)), "names 3 band"),
])
def test_degenerate_fits(fakes, reals, match):
    with pytest.raises(ValueError, match=match):
        FluxCalibration().fit(fakes, reals, bands="grz")


def test_bare_array_needs_bands():
    with pytest.raises(ValueError, match="pass bands="):
        FluxCalibration().fit(_galaxies(3, seed=19), _galaxies(3, seed=20))


def test_not_fitted_and_bad_factors():
    with pytest.raises(ValueError, match="no factors yet"):
        FluxCalibration().apply(_ccd(_galaxies(1, seed=21)[0]))
    with pytest.raises(ValueError, match=r"band 'r' must be finite and > 0, got -1.0"):
        FluxCalibration({"g": 1.0, "r": -1.0})
    with pytest.raises(ValueError, match="unknown band"):
        FluxCalibration({"q": 1.0})
    with pytest.raises(ValueError, match="'slopes'"):
        FluxCalibration.from_dict({"intercepts": {}})
