"""Tests of the mock Legacy Survey generator and the trivial data set."""

import hashlib

import galsim
import numpy as np
import pytest
import astropy.units as u
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.table import QTable

from astro_sbgm.datasets import make_mock_legacy_survey, make_trivial_dataset
from astro_sbgm.datasets import _mock


def _model_and_params(seed, index, bands=("g", "r", "z"), size=48, pixel_scale=0.262):
    """Re-draw the parameters and the noiseless image of one mock galaxy."""
    rng = _mock._galaxy_rng(np.random.SeedSequence(seed), index)
    p = _mock._draw_galaxy(rng, bands, size, pixel_scale)
    return p, _mock._render(p, bands, size, pixel_scale)


#: sha256 of the float32 pixels (little-endian, C order) of galaxies 0, 1, 2 of
#: ``make_mock_legacy_survey(3, size=size, seed=7)``, computed from the code of
#: 2026-12 (commit 114f34b).  The mock is every comparison's yardstick: its
#: default output must not change.  A deliberate change of the mock comes
#: through new arguments or functions, not new hashes here.
MOCK_SHA256 = {
    32: ["e536c2f28b92948991aa3bf0225edac64a5aa8e5187034761809a4b11d6ac406",
         "7fd1627db0e55491ebd3e413eeda33e29b8fcd8cd6ed2d06dddbfce4337d14aa",
         "1693df75829bfa067e1ee2c9b5eb6b0e57331553b9d69e0808f41918de12c014"],
    64: ["b9241d95dfc20d3741faf87c2be452239b80d4a8e63e356579746d2c3b4f8a77",
         "a92b4b3205abbaa55ec4d676e065fc675cc287226d3b38f29f5f3d381118b0ac",
         "639d24bf757fcd1d7f459bd2394a4905c7f80293ae5ad7e1beb96d7166fdf1c2"],
}


@pytest.mark.parametrize("size", sorted(MOCK_SHA256))
def test_mock_default_output_is_pinned(size):
    """Regression pin: the default mock keeps giving bit-identical images."""
    images = make_mock_legacy_survey(3, size=size, seed=7)
    got = []
    for ccd in images:
        assert ccd.data.dtype == np.float32
        got.append(hashlib.sha256(np.ascontiguousarray(ccd.data, dtype="<f4").tobytes())
                   .hexdigest())
    assert got == MOCK_SHA256[size]


def test_container_form():
    size = 32
    images = make_mock_legacy_survey(3, size=size, seed=4)
    assert len(images) == 3
    for ccd in images:
        assert isinstance(ccd, CCDData)
        assert ccd.data.dtype == np.float32
        assert ccd.data.shape == (3, size, size)
        assert ccd.unit == u.nanomaggy
        assert ccd.meta["BANDS"] == "g,r,z"
        assert [ccd.meta[f"BAND{i}"] for i in range(3)] == ["g", "r", "z"]
        assert ccd.meta["BUNIT"] == "nanomaggy"
        assert ccd.meta["PIXSCALE"] == 0.262
        assert isinstance(ccd.uncertainty, StdDevUncertainty)
        unc = np.asarray(ccd.uncertainty.array)
        assert unc.shape == ccd.data.shape
        for ib, band in enumerate("grz"):
            assert np.all(unc[ib] == np.float32(ccd.meta[f"SKYSIG_{band.upper()}"]))
        # sky noise grows from g to z at DR9 depth
        assert unc[0, 0, 0] < unc[1, 0, 0] < unc[2, 0, 0]
        assert np.all(np.isfinite(ccd.data))


def test_wcs_is_celestial_tan_north_up_east_left():
    size = 40
    ccd = make_mock_legacy_survey(1, size=size, seed=2)[0]
    wcs = ccd.wcs
    assert wcs.naxis == 2
    assert list(wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    cd = wcs.wcs.cd
    assert cd[0, 0] < 0 and cd[1, 1] > 0
    assert cd[0, 1] == 0 and cd[1, 0] == 0
    assert np.allclose(np.abs(np.diag(cd)) * 3600, 0.262)
    assert np.allclose(wcs.wcs.crpix, (size + 1) / 2)
    sky = wcs.pixel_to_world((size - 1) / 2, (size - 1) / 2)
    assert np.isclose(sky.ra.deg, wcs.wcs.crval[0])
    assert np.isclose(sky.dec.deg, wcs.wcs.crval[1])
    # DR9-like footprint: away from the Galactic plane
    assert abs(sky.galactic.b.deg) > 20
    # one pixel to the right is west (smaller RA) near the centre
    right = wcs.pixel_to_world((size - 1) / 2 + 1, (size - 1) / 2)
    assert ((right.ra.deg - sky.ra.deg + 180) % 360 - 180) < 0
    hdu = ccd.to_hdu()[0]
    assert hdu.header["BAND2"] == "z"
    assert hdu.header["CTYPE1"] == "RA---TAN"


def test_deterministic_and_independent_of_n():
    a = make_mock_legacy_survey(4, size=32, seed=11)
    b = make_mock_legacy_survey(2, size=32, seed=11)
    c = make_mock_legacy_survey(4, size=32, seed=11)
    for x, y in zip(a[:2], b):
        np.testing.assert_array_equal(x.data, y.data)
        assert x.meta == y.meta
        assert x.wcs.wcs.crval.tolist() == y.wcs.wcs.crval.tolist()
    for x, y in zip(a, c):
        np.testing.assert_array_equal(x.data, y.data)
    other = make_mock_legacy_survey(1, size=32, seed=12)[0]
    assert not np.array_equal(other.data, a[0].data)
    # galaxies differ from one another
    assert not np.array_equal(a[0].data, a[1].data)


def test_seed_sequence_reuse_is_stable():
    ss = np.random.SeedSequence(5)
    ss.spawn(3)  # spawning must not change what the generator draws
    a = make_mock_legacy_survey(1, size=24, seed=ss)[0]
    b = make_mock_legacy_survey(1, size=24, seed=5)[0]
    np.testing.assert_array_equal(a.data, b.data)


def test_other_band_sets():
    ccd = make_mock_legacy_survey(1, size=24, bands="zrgi", seed=1)[0]
    assert ccd.shape == (4, 24, 24)
    assert ccd.meta["BANDS"] == "z,r,g,i"
    sig = np.asarray(ccd.uncertainty.array)[:, 0, 0]
    assert sig[0] > sig[1] > sig[2]          # z noisier than r, r than g
    one = make_mock_legacy_survey(1, size=24, bands=["r"], seed=1)[0]
    assert one.shape == (1, 24, 24) and one.meta["BANDS"] == "r"


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "n must be >= 1"),
    (dict(n=2, size=15), "size must be >= 16"),
    (dict(n=2, bands="g,r,W1"), "no noise model"),
    (dict(n=2, bands="gq"), "unknown band"),
    (dict(n=2, bands="gg"), "more than once"),
    (dict(n=2, pixel_scale=-0.2), "pixel_scale"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_mock_legacy_survey(**kwargs)


def test_bad_types():
    with pytest.raises(TypeError, match="n must be an integer"):
        make_mock_legacy_survey(2.5)
    with pytest.raises(TypeError, match="seed"):
        make_mock_legacy_survey(1, seed="abc")


def test_truth_table():
    n = 30
    images, truth = make_mock_legacy_survey(n, size=32, seed=3, return_truth=True)
    assert isinstance(truth, QTable) and len(truth) == n
    assert truth["flux_r"].unit == u.nanomaggy
    assert truth["mag_g"].unit == u.mag
    assert truth["half_light_radius"].unit == u.arcsec
    assert truth["position_angle"].unit == u.deg
    assert truth["psf_fwhm_z"].unit == u.arcsec
    mag = 22.5 - 2.5 * np.log10(truth["flux_r"].to_value(u.nanomaggy))
    np.testing.assert_allclose(truth["mag_r"].value, mag, rtol=0, atol=1e-9)
    assert np.all((truth["mag_r"].value >= 14.5) & (truth["mag_r"].value <= 18.0))
    hlr = truth["half_light_radius"].to_value(u.arcsec)
    assert np.all((hlr > 0.2) & (hlr < 8))
    np.testing.assert_array_equal(hlr, truth["hlr_r"].to_value(u.arcsec))
    q = truth["axis_ratio"]
    assert np.all((q >= 0.3) & (q <= 1.0))
    assert np.all((truth["bulge_frac"] >= 0) & (truth["bulge_frac"] <= 1))
    for band in "grz":
        fwhm = truth[f"psf_fwhm_{band}"].to_value(u.arcsec)
        assert np.all((fwhm > 0.8) & (fwhm < 1.6))
    assert np.all(np.abs(truth["x_offset"].value) < 0.5)
    gr = (truth["mag_g"] - truth["mag_r"]).value
    rz = (truth["mag_r"] - truth["mag_z"]).value
    assert np.all((gr > 0.0) & (gr < 1.3)) and np.all((rz > -0.1) & (rz < 0.9))
    early = np.asarray(truth["early_type"])
    assert early.any() and (~early).any()
    assert np.median(gr[early]) > np.median(gr[~early]) + 0.2
    # the truth cards in the headers agree with the table
    for ccd, row in zip(images, truth):
        assert ccd.meta["MAG_R"] == pytest.approx(row["mag_r"].value, abs=1e-4)
        assert ccd.meta["HLR"] == pytest.approx(row["half_light_radius"].value, abs=1e-4)


def test_flux_in_stamp_matches_truth():
    images, truth = make_mock_legacy_survey(6, size=96, seed=8, return_truth=True)
    checked = 0
    for ccd, row in zip(images, truth):
        if np.isfinite(row["neighbour_mag_r"].value) or row["half_light_radius"].value > 2.5:
            continue
        flux = row["flux_r"].to_value(u.nanomaggy)
        total = ccd.data[1].astype(float).sum()
        noise = 5 * np.sqrt(ccd.data[1].size) * ccd.uncertainty.array[1, 0, 0] + 0.02 * flux
        assert flux * 0.95 < total < flux + noise
        checked += 1
    assert checked >= 3


def test_noise_model_and_centre():
    """Residuals from the noiseless model have the documented noise."""
    seed, size = 21, 48
    images = make_mock_legacy_survey(4, size=size, seed=seed)
    for i, ccd in enumerate(images):
        p, model = _model_and_params(seed, i, size=size)
        resid = ccd.data - model
        sigma = p["sky_sigma"]
        gain = np.array([_mock._sky_per_pixel(b, 0.262) for b in "grz"]) / sigma ** 2
        var = sigma[:, None, None] ** 2 + np.clip(model, 0, None) / gain[:, None, None]
        pull = resid / np.sqrt(var)
        assert abs(pull.std() - 1) < 0.05
        assert abs(pull.mean()) < 0.05
        # the galaxy sits at the centre of the cutout
        r = model[1]
        peak = np.unravel_index(np.argmax(r), r.shape)
        assert abs(peak[0] - (size - 1) / 2) <= 2 and abs(peak[1] - (size - 1) / 2) <= 2


def test_sky_sigma_from_depth():
    """The per-pixel sky sigma follows from the 5-sigma galaxy depth."""
    prof = galsim.Convolve(galsim.Exponential(half_light_radius=0.45),
                           galsim.Moffat(beta=3.5, fwhm=1.2))
    img = prof.drawImage(nx=121, ny=121, scale=0.262).array
    nea = 1 / np.sum(img ** 2)  # optimal-weighting noise-equivalent area, pixels
    for band, depth in (("g", 24.0), ("r", 23.4), ("z", 22.5)):
        expected = 10 ** ((22.5 - depth) / 2.5) / 5 / np.sqrt(nea)
        assert _mock._sky_sigma(band, 0.262) == pytest.approx(expected, rel=0.01)
    # constant surface-brightness noise: sigma per pixel scales with the pixel size
    a = make_mock_legacy_survey(1, size=16, seed=1, pixel_scale=0.262)[0]
    b = make_mock_legacy_survey(1, size=16, seed=1, pixel_scale=0.524 * u.arcsec)[0]
    np.testing.assert_allclose(b.uncertainty.array[:, 0, 0] / a.uncertainty.array[:, 0, 0],
                               2.0, rtol=1e-6)
    assert b.meta["PIXSCALE"] == pytest.approx(0.524)


def test_render_matches_galsim_drawimage():
    """The fixed-grid Fourier render equals GalSim's own drawImage."""
    bands, size = ("g", "r", "z"), 48
    rng = np.random.default_rng(5)
    while True:  # a disk galaxy with arms and knots
        p = _mock._draw_galaxy(rng, bands, size, 0.262)
        if p["n_arms"] and p["hlr_disk"] < 1.5:
            break
    p["neighbour"] = None
    img = _mock._render(p, bands, size, 0.262)
    ib = 0
    w = p["weights"]
    shear = dict(q=p["q"], beta=p["beta"] * galsim.degrees)
    smooth = galsim.Sum([
        galsim.Sersic(n=p["n_bulge"], half_light_radius=p["hlr_bulge"], flux=w["bulge"][ib]),
        galsim.Exponential(half_light_radius=p["hlr_disk"], flux=w["disk"][ib]),
    ]).shear(**shear)
    sigma0 = _mock._knot_sigma(0.262)
    npt = len(p["arm_pos"])
    arms = galsim.Convolve(
        galsim.Sum([galsim.DeltaFunction(flux=w["arm"][ib] / npt).shift(x, y)
                    for x, y in p["arm_pos"]]),
        galsim.Gaussian(sigma=p["arm_sigma"])).shear(**shear)
    arms = galsim.Convolve(arms, galsim.Gaussian(sigma=sigma0))
    mat = _mock._shear_matrix(p["q"], p["beta"])
    kpos = p["knot_pos"] @ mat.T
    knots = galsim.Sum([galsim.Gaussian(sigma=sigma0, flux=w["knot"][ib] / len(kpos)).shift(x, y)
                        for x, y in kpos])
    gal = galsim.Convolve(galsim.Sum([smooth, arms, knots]),
                          galsim.Moffat(beta=3.5, fwhm=p["fwhm"][ib]))
    ref = gal.drawImage(nx=size, ny=size, scale=0.262, offset=tuple(p["offset"])).array
    assert np.abs(img[ib] - ref).max() < 1e-3 * ref.max()


def test_half_light_radius_matches_image():
    """Truth half-light radius against a curve of growth on a fine GalSim drawing."""
    rng = np.random.default_rng(7)
    p = _mock._draw_galaxy(rng, ("r",), 48, 0.262)
    w = {c: v[0] for c, v in p["weights"].items()}
    mat = _mock._shear_matrix(p["q"], p["beta"])
    parts = [galsim.Sum([
        galsim.Sersic(n=p["n_bulge"], half_light_radius=p["hlr_bulge"], flux=w["bulge"]),
        galsim.Exponential(half_light_radius=p["hlr_disk"], flux=w["disk"]),
    ]).shear(q=p["q"], beta=p["beta"] * galsim.degrees)]
    for comp, key in (("arm", "arm_pos"), ("knot", "knot_pos")):
        if len(p[key]):
            pos = p[key] @ mat.T
            parts += [galsim.Gaussian(sigma=0.01, flux=w[comp] / len(pos)).shift(x, y)
                      for x, y in pos]
    scale, npix = 0.02, 1000
    img = galsim.Sum(parts).drawImage(nx=npix, ny=npix, scale=scale, method="no_pixel").array
    yy, xx = np.indices(img.shape)
    r = np.hypot(xx - (npix - 1) / 2, yy - (npix - 1) / 2).ravel() * scale
    order = np.argsort(r)
    growth = np.cumsum(img.ravel()[order])
    total = sum(w.values())
    measured = r[order][np.searchsorted(growth, 0.5 * total)]
    assert _mock._half_light_radii(p)[0] == pytest.approx(measured, rel=0.015)


def test_progress_bar_runs(capsys):
    images = make_mock_legacy_survey(2, size=16, seed=0, progress=True)
    assert len(images) == 2
    assert "mock galaxies" in capsys.readouterr().err


def test_trivial_dataset():
    size = 32
    images = make_trivial_dataset(6, size=size, seed=1)
    again = make_trivial_dataset(3, size=size, seed=1)
    amps = []
    for ccd in images:
        assert ccd.data.shape == (3, size, size) and ccd.data.dtype == np.float32
        assert ccd.unit == u.nanomaggy and ccd.meta["BANDS"] == "g,r,z"
        assert list(ccd.wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
        r = ccd.data[1]
        c = (size - 1) / 2
        centre = r[int(c):int(c) + 2, int(c):int(c) + 2].mean()
        assert centre > 20 * np.abs(r[:3, :3]).mean()      # a blob at the centre
        # fixed colours: z brighter than r brighter than g
        peaks = ccd.data[:, int(c):int(c) + 2, int(c):int(c) + 2].mean(axis=(1, 2))
        assert peaks[0] < peaks[1] < peaks[2]
        amps.append(ccd.meta["AMP"])
    assert 0.5 <= min(amps) and max(amps) <= 1.0 and max(amps) > min(amps)
    for x, y in zip(images[:3], again):
        np.testing.assert_array_equal(x.data, y.data)
    with pytest.raises(ValueError, match="size"):
        make_trivial_dataset(2, size=8)
