"""Tests of astro_sbgm.metrics.photometry against analytic GalSim profiles and photutils."""

import warnings

import galsim
import numpy as np
import pytest
import torch
import astropy.units as u
from astropy.nddata import CCDData
from astropy.stats import sigma_clipped_stats
from photutils.aperture import CircularAperture, aperture_photometry
from photutils.morphology import gini as photutils_gini
from scipy.optimize import brentq

from astro_sbgm.io import make_tan_wcs
from astro_sbgm.metrics import MeasurementFlag, PhotometryWarning, ab_magnitude, measure_galaxies
from astro_sbgm.metrics.photometry import _clipped_median_std, _frame_noise

SCALE = 0.262


def draw(profile, size=64, scale=SCALE, shift=None):
    image = galsim.ImageD(size, size, scale=scale)
    profile.drawImage(image=image, offset=shift)
    return image.array.copy()


def galaxy_batch(n, size=48, seed=0, sky=(0.05, 0.1, 0.2), noise=0.005):
    """Exponential galaxies of varied size/flux/offset with sky and noise, grz."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size))
    for i in range(n):
        gal = galsim.Exponential(half_light_radius=rng.uniform(0.4, 1.2),
                                 flux=rng.uniform(2, 20))
        gal = gal.shear(q=rng.uniform(0.5, 1), beta=rng.uniform(0, 3) * galsim.radians)
        base = draw(gal, size, shift=rng.uniform(-1.5, 1.5, 2))
        for b, (colour, level) in enumerate(zip((0.6, 1.0, 1.5), sky)):
            out[i, b] = colour * base + level + rng.normal(0, noise, (size, size))
    return out


def exponential_enclosed(r, hlr):
    """Analytic fraction of an exponential profile's flux inside radius r."""
    x50 = brentq(lambda x: 1 - (1 + x) * np.exp(-x) - 0.5, 0.1, 10)
    x = r / (hlr / x50)
    return 1 - (1 + x) * np.exp(-x)


def test_batch_fluxes_equal_photutils_per_image():
    data = galaxy_batch(6)
    cat = measure_galaxies(data, bands="grz")
    for i in range(data.shape[0]):
        for b, band in enumerate("grz"):
            aperture = CircularAperture((cat["x_centre"][i].value, cat["y_centre"][i].value),
                                        r=6.0)
            bkg = cat[f"background_{band}"][i].to_value(u.nanomaggy)
            ref = aperture_photometry(data[i, b] - bkg, aperture,
                                      method="exact")["aperture_sum"][0]
            got = cat[f"flux_{band}"][i].unmasked.to_value(u.nanomaggy)
            assert got == pytest.approx(float(ref), rel=1e-6)


def test_centroid_fluxes_equal_photutils_per_image():
    data = galaxy_batch(4, seed=3)
    cat = measure_galaxies(data, bands="grz", center="centroid", aperture_diameter=9)
    xc = cat["x_centre"].value
    assert not np.allclose(xc, (data.shape[-1] - 1) / 2)  # the centroids moved
    for i in range(data.shape[0]):
        aperture = CircularAperture((xc[i], cat["y_centre"][i].value), r=4.5)
        bkg = cat["background_z"][i].value
        ref = aperture_photometry(data[i, 2] - bkg, aperture, method="exact")["aperture_sum"][0]
        assert cat["flux_z"][i].unmasked.value == pytest.approx(float(ref), rel=1e-6)


def test_clipped_stats_equal_astropy():
    rng = np.random.default_rng(1)
    values = rng.standard_cauchy((7, 3, 200))
    values[values > 30] = np.nan
    median, std = _clipped_median_std(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, ref_median, ref_std = sigma_clipped_stats(values, sigma=3, maxiters=5, axis=-1)
    np.testing.assert_allclose(median, ref_median, rtol=1e-12)
    np.testing.assert_allclose(std, ref_std, rtol=1e-12)


def test_background_level_recovered_with_big_galaxy():
    rng = np.random.default_rng(2)
    gal = draw(galsim.Exponential(half_light_radius=2.0, flux=200.0))
    sky, sigma = 0.3, 0.01
    data = (gal + sky + rng.normal(0, sigma, (8, 3, 64, 64)))
    cat = measure_galaxies(data, bands="grz")
    bkg = cat["background_r"].to_value(u.nanomaggy)
    # the wings of this 2" galaxy reach the frame at ~1 sigma: still well inside the noise
    assert np.all(np.abs(bkg - sky) < 0.5 * sigma)
    # the source masking helps: an unmasked frame median is biased higher
    frame = np.ones((64, 64), bool)
    frame[4:-4, 4:-4] = False
    naive = np.median(data[:, 1][:, frame], axis=1)
    assert np.mean(bkg) < np.mean(naive)


@pytest.mark.parametrize("level", [0.0, 0.2])
def test_background_of_censored_sky_needs_no_fallback(level):
    # generated galaxies lie inside the scaler's range: their sky is censored
    # at the lower bound, galaxy + max(0, level + N(0, sigma)).  At level 0
    # half of the frame pixels sit at the clip, so the frame's median is the
    # clip and its MAD is zero: a MAD-based source mask used to cover the
    # whole frame (and the unmasked frame was used, flagged).
    rng = np.random.default_rng(5)
    sigma, n = 0.01, 12
    data = np.empty((n, 3, 64, 64))
    for i in range(n):
        gal = draw(galsim.Exponential(half_light_radius=rng.uniform(0.5, 2.0),
                                      flux=rng.uniform(2, 20)))
        for b, colour in enumerate((0.6, 1.0, 1.5)):
            sky = np.maximum(0.0, rng.normal(level * sigma, sigma, (64, 64)))
            data[i, b] = colour * gal + sky
    cat = measure_galaxies(data, bands="grz")
    assert not np.any(cat["flags"] & MeasurementFlag.BACKGROUND_FALLBACK)
    # Expectation of the background as defined (sigma-clipped median) for
    # X = max(0, level sigma + N(0, sigma)), level >= 0: P(X <= level sigma)
    # = P(N <= 0) = 1/2 and X has no mass in (0, level sigma) other than the
    # uncensored one, so median(X) = level sigma (at level 0, the atom at 0
    # holds exactly half); a symmetric 3-sigma clip removes as much above as
    # below, so the clipped median stays there.  (The mean of X at level 0,
    # sigma / sqrt(2 pi) = 0.40 sigma, is what a mean-based estimator gives.)
    expected = level * sigma
    bkg = np.stack([cat[f"background_{band}"].to_value(u.nanomaggy) for band in "grz"])
    if level == 0:  # the median sits in the atom at 0
        assert np.all(np.abs(bkg - expected) < 0.1 * sigma), bkg / sigma
    else:  # the median of 960 frame pixels scatters by 0.04 sigma
        assert abs(np.mean(bkg) - expected) < 0.03 * sigma, bkg / sigma
        assert np.all(np.abs(bkg - expected) < 0.2 * sigma), bkg / sigma
    if level == 0:
        mean_of_censored = sigma / np.sqrt(2 * np.pi)
        assert np.all(np.abs(cat["background_r"].to_value(u.nanomaggy)
                             - mean_of_censored) > 0.2 * sigma)


@pytest.mark.parametrize("level", [0.0, 0.3])
def test_frame_noise_of_censored_sky_is_sigma(level):
    # max(0, level + N(0, sigma)) with 0 <= level < sigma: censoring leaves the
    # median (level) and the +1 sigma quantile (level + sigma) in place, so
    # q84 - q50 = sigma, while the MAD is 0 at level 0 (half the pixels at 0)
    rng = np.random.default_rng(7)
    sigma = 0.01
    values = np.maximum(0.0, level * sigma + rng.normal(0, sigma, (50, 960)))
    noise, censored = _frame_noise(values, np.median(values, axis=1))
    assert censored.all()
    # unbiased (the mean of 50 frames: +-0.007 sigma of scatter) and never far
    # off in one frame of 960 pixels (scatter 0.05 sigma)
    assert abs(np.mean(noise) - sigma) < 0.025 * sigma
    assert np.all(np.abs(noise - sigma) < 0.25 * sigma)
    # an uncensored frame keeps the MAD-based sigma
    gauss = rng.normal(0, sigma, (50, 960))
    med = np.median(gauss, axis=1)
    mad = 1.4826 * np.median(np.abs(gauss - med[:, None]), axis=1)
    noise, censored = _frame_noise(gauss, med)
    assert not censored.any()
    np.testing.assert_array_equal(noise, mad)


def test_exponential_magnitude_and_radius():
    flux, hlr = 12.0, 1.0
    image = draw(galsim.Exponential(half_light_radius=hlr, flux=flux))
    data = np.stack([image, 2 * image, 3 * image])[None]
    cat = measure_galaxies(data, bands="grz", background=0.0)
    # 12 px aperture (6 px = 1.572" radius) against the analytic enclosed flux
    expected = flux * exponential_enclosed(6 * SCALE, hlr)
    assert cat["flux_g"][0].unmasked.value == pytest.approx(expected, rel=0.02)
    assert cat["mag_g"][0].unmasked.value == pytest.approx(22.5 - 2.5 * np.log10(expected),
                                                           abs=0.02)
    assert cat["g_r"][0].unmasked.value == pytest.approx(2.5 * np.log10(2), abs=1e-9)
    assert cat["r_half"][0].unmasked.to_value(u.arcsec) == pytest.approx(hlr, rel=0.02)
    # a big aperture holds all the flux
    total = measure_galaxies(data, bands="grz", background=0.0, aperture_diameter=60)
    assert total["mag_r"][0].unmasked.value == pytest.approx(
        22.5 - 2.5 * np.log10(2 * flux), abs=0.01)


@pytest.mark.parametrize("hlr, rel", [(0.5, 0.04), (1.0, 0.02), (1.5, 0.02)])
def test_de_vaucouleurs_radius(hlr, rel):
    # truncated at 8" so that all of the flux lies inside r_max = 32 px = 8.4";
    # GalSim's half_light_radius is then that of the truncated profile.  The
    # tolerance is wider for the smallest (1.9 px) radius: pixel convolution.
    profile = galsim.DeVaucouleurs(half_light_radius=hlr, flux=5.0, trunc=8.0)
    image = draw(profile)
    cat = measure_galaxies(np.stack([image] * 3)[None], bands="grz", background=0.0)
    assert cat["r_half"][0].unmasked.to_value(u.arcsec) == pytest.approx(hlr, rel=rel)


def test_gaussian_radius_with_psf():
    sigma_gal, sigma_psf = 0.6, 0.45
    profile = galsim.Convolve(galsim.Gaussian(sigma=sigma_gal, flux=3.0),
                              galsim.Gaussian(sigma=sigma_psf))
    image = draw(profile)
    cat = measure_galaxies(np.stack([image] * 3)[None], bands="grz", background=0.0)
    # Gaussian convolved with Gaussian (and a pixel of variance 1/12 px^2)
    sigma = np.sqrt(sigma_gal ** 2 + sigma_psf ** 2 + SCALE ** 2 / 12)
    assert cat["r_half"][0].unmasked.value == pytest.approx(sigma * np.sqrt(2 * np.log(2)),
                                                            rel=0.01)


def test_morphology_columns():
    q = 0.5
    ellip = draw(galsim.Gaussian(sigma=0.7, flux=5.0).shear(q=q, beta=0.4 * galsim.radians))
    expo = draw(galsim.Exponential(half_light_radius=0.8, flux=5.0))
    data = np.stack([np.stack([ellip] * 3), np.stack([expo] * 3)])
    cat = measure_galaxies(data, bands="grz", background=0.0, morphology=True)
    assert cat["ellipticity"][0].unmasked.value == pytest.approx(1 - q, abs=0.03)
    assert cat["ellipticity"][1].unmasked.value < 0.02
    # symmetric profiles about the centre have no asymmetry
    assert np.all(np.abs(cat["asymmetry"].unmasked.value) < 1e-6)
    # concentration of an exponential: 5 log10(r80 / r20), analytic
    x20 = brentq(lambda x: 1 - (1 + x) * np.exp(-x) - 0.2, 0.01, 20)
    x80 = brentq(lambda x: 1 - (1 + x) * np.exp(-x) - 0.8, 0.01, 20)
    assert cat["concentration"][1].unmasked.value == pytest.approx(
        5 * np.log10(x80 / x20), abs=0.1)
    # Gini equals photutils' estimator on the same pixels (centres within 2 r_half)
    r2 = 2 * cat["r_half"][1].unmasked.value / SCALE
    yy, xx = np.mgrid[0:64, 0:64]
    outside = np.hypot(xx - 31.5, yy - 31.5) > r2
    assert cat["gini"][1].unmasked.value == pytest.approx(photutils_gini(expo, mask=outside),
                                                          rel=1e-10)


def test_asymmetric_galaxy_has_asymmetry():
    image = draw(galsim.Exponential(half_light_radius=0.8, flux=5.0))
    blob = draw(galsim.Gaussian(sigma=0.3, flux=2.0), shift=(4, 3))
    cat = measure_galaxies(np.stack([image + blob] * 3)[None], bands="grz", background=0.0,
                           morphology=True)
    assert cat["asymmetry"][0].unmasked.value > 0.1


def test_flags_and_masks():
    image = draw(galsim.Exponential(half_light_radius=0.8, flux=5.0), size=48)
    good = np.stack([image] * 3)
    negative = good.copy()
    negative[0] *= -1  # no positive flux in g
    centre_nan = good.copy()
    centre_nan[1, 24, 24] = np.nan
    corner_nan = good.copy()
    corner_nan[2, 0, 0] = np.nan
    cat = measure_galaxies(np.stack([good, negative, centre_nan, corner_nan]), bands="grz",
                           background=0.0)
    flags = cat["flags"]
    assert flags[0] == 0
    assert flags[1] & MeasurementFlag.NONPOSITIVE_FLUX
    assert cat["mag_g"].mask.tolist() == [False, True, False, False]
    assert cat["g_r"].mask.tolist() == [False, True, True, False]
    assert cat["r_z"].mask.tolist() == [False, False, True, False]
    assert np.isnan(cat["mag_g"].unmasked[1])
    assert flags[2] & MeasurementFlag.NAN_IN_APERTURE
    assert flags[2] & MeasurementFlag.HLR_FAILED
    assert cat["flux_r"].mask[2] and cat["r_half"].mask[2]
    assert not cat["flux_g"].mask[2]
    assert flags[3] == MeasurementFlag.NAN_PIXELS
    assert not cat["flux_z"].mask[3] and not cat["r_half"].mask[3]


def test_units_and_columns():
    data = galaxy_batch(2, size=32)
    cat = measure_galaxies(data, bands=["g", "r", "z"])
    assert cat["flux_g"].unit == u.nanomaggy
    assert cat["mag_r"].unit == u.mag
    assert cat["r_z"].unit == u.mag
    assert cat["r_half"].unit == u.arcsec
    assert cat["background_z"].unit == u.nanomaggy
    assert cat["x_centre"].unit == u.pix
    assert cat.meta["HLRBAND"] == "r"
    assert f"HLR_FAILED={int(MeasurementFlag.HLR_FAILED)}" in cat.meta["FLAGBITS"]
    # the pixel scale sets the arcsec of r_half
    wide = measure_galaxies(data, bands="grz", pixel_scale=2 * SCALE)
    np.testing.assert_allclose(wide["r_half"].unmasked.value,
                               2 * cat["r_half"].unmasked.value)


def test_ccddata_input_uses_wcs_and_mask():
    image = draw(galsim.Exponential(half_light_radius=0.8, flux=5.0), size=40)
    data = np.stack([image] * 3).astype(np.float32)
    ccds = []
    for scale in (SCALE, 2 * SCALE):
        ccd = CCDData(data, unit=u.nanomaggy, wcs=make_tan_wcs((40, 40), scale * u.arcsec))
        ccd.meta["BANDS"] = "g,r,z"
        ccds.append(ccd)
    masked = CCDData(data, unit=u.nanomaggy, mask=np.zeros(data.shape, bool))
    masked.mask[1, 20, 20] = True
    masked.meta["BANDS"] = "g,r,z"
    cat = measure_galaxies(ccds + [masked], background=0.0)
    assert cat["r_half"][1].value == pytest.approx(2 * cat["r_half"][0].value, rel=1e-6)
    assert cat["flags"][2] & MeasurementFlag.NAN_IN_APERTURE
    assert cat["flux_r"].mask[2]


def test_mixed_shapes_are_measured_with_a_warning():
    small = draw(galsim.Exponential(half_light_radius=0.6, flux=5.0), size=32)
    big = draw(galsim.Exponential(half_light_radius=0.6, flux=5.0), size=48)
    ccds = []
    for im in (small, big, small):
        ccd = CCDData(np.stack([im] * 3), unit=u.nanomaggy)
        ccd.meta["BANDS"] = "g,r,z"
        ccds.append(ccd)
    with pytest.warns(PhotometryWarning, match="different shapes"):
        cat = measure_galaxies(ccds, background=0.0)
    assert len(cat) == 3
    assert cat["x_centre"].value.tolist() == [15.5, 23.5, 15.5]
    np.testing.assert_allclose(cat["flux_r"].value, cat["flux_r"].value[0], rtol=1e-3)


def test_torch_tensor_input():
    data = galaxy_batch(2, size=32)
    a = measure_galaxies(torch.as_tensor(data), bands="grz")
    b = measure_galaxies(data, bands="grz")
    np.testing.assert_allclose(a["flux_r"].value, b["flux_r"].value)


def test_ab_magnitude():
    mags = ab_magnitude([1.0, 10.0, 0.0, -1.0] * u.nanomaggy)
    assert mags.unmasked[:2].value.tolist() == [22.5, 20.0]
    assert mags.mask.tolist() == [False, False, True, True]
    assert ab_magnitude(1e-9 * u.maggy).unmasked[()].value == pytest.approx(22.5)
    with pytest.raises(u.UnitConversionError):
        ab_magnitude(1 * u.arcsec)


@pytest.mark.parametrize("kwargs, match", [
    (dict(bands=None), "bands="),
    (dict(bands="gr"), "bands"),
    (dict(bands="grz", aperture_diameter=40), "does not fit"),
    (dict(bands="grz", aperture_diameter=-1), "positive"),
    (dict(bands="grz", center="middle"), "center must be"),
    (dict(bands="grz", hlr_band="i"), "hlr_band"),
    (dict(bands="grz", background="annulus"), "background must be"),
    (dict(bands="grz", centroid_method="fit", center="centroid"), "centroid_method"),
])
def test_bad_input_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_galaxies(np.zeros((1, 3, 32, 32)), **kwargs)


def test_two_bands_and_mismatched_band_lists():
    image = draw(galsim.Exponential(half_light_radius=0.6, flux=5.0), size=32)
    cat = measure_galaxies(np.stack([image, 2 * image])[None], bands="gr", background=0.0)
    assert "g_r" in cat.colnames and "r_z" not in cat.colnames and "flux_z" not in cat.colnames
    assert cat.meta["HLRBAND"] == "r"
    a = CCDData(np.stack([image] * 3), unit=u.nanomaggy, meta={"BANDS": "g,r,z"})
    b = CCDData(np.stack([image] * 3), unit=u.nanomaggy, meta={"BANDS": "g,r,i"})
    with pytest.raises(ValueError, match="bands"):
        measure_galaxies([a, b])


def test_old_spelling_centre_works_and_warns():
    from astro_sbgm.datasets import make_mock_legacy_survey
    from astro_sbgm.exceptions import AstroSBGMDeprecationWarning

    data = make_mock_legacy_survey(3, size=32, seed=5)
    new = measure_galaxies(data, center="centroid")
    with pytest.warns(AstroSBGMDeprecationWarning, match="centre.*center"):
        old = measure_galaxies(data, centre="centroid")
    np.testing.assert_array_equal(np.asarray(new["x_centre"]), np.asarray(old["x_centre"]))
    np.testing.assert_array_equal(np.asarray(new["mag_r"]), np.asarray(old["mag_r"]))
    # the old value 'centre' is the default 'center'
    same = measure_galaxies(data, center="centre")
    np.testing.assert_array_equal(np.asarray(same["mag_r"]),
                                  np.asarray(measure_galaxies(data)["mag_r"]))
