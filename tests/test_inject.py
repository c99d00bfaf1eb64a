"""Tests of `astro_sbgm.simulation`: positions of samples, injection into frames, GalSim."""

import numpy as np
import pytest
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData, StdDevUncertainty

from astro_sbgm import GalaxyDiffusion, cutouts, inject, to_galsim
from astro_sbgm.datasets import make_trivial_dataset
from astro_sbgm.io import make_tan_wcs
from astro_sbgm.metrics import measure_galaxies

TINY = dict(image_size=16, bands="grz", dim=8, dim_mults=(1, 2),
            attention_levels=(False, False), batch_size=4, timesteps=100, device="cpu")
SCALE = 0.262 * u.arcsec
RA0, DEC0 = 150.1, 2.2


@pytest.fixture(scope="module")
def tiny():
    train = make_trivial_dataset(8, size=16, seed=3)
    return GalaxyDiffusion(**TINY).fit(train, steps=2, progress=False)


def galaxy(size=16, scale=SCALE, sigma=1.5, ra=0.0, dec=0.0, amps=(1.0, 2.0, 3.0), bands="grz"):
    """A noise-free round Gaussian cutout, exactly centred, in nanomaggies."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    blob = np.exp(-0.5 * (x ** 2 + y ** 2) / sigma ** 2)
    data = np.stack([a * blob for a in amps]).astype(np.float32)
    ccd = CCDData(data, unit="nanomaggy", wcs=make_tan_wcs((size, size), scale, ra, dec))
    ccd.meta["BANDS"] = ",".join(bands)
    return ccd


def frame(ny=100, nx=120, bands="grz", noise=0.0, seed=0):
    """A blank (or noisy) frame with a mask and an uncertainty."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, noise, (len(bands), ny, nx)).astype(np.float32) if noise else \
        np.zeros((len(bands), ny, nx), np.float32)
    mask = np.zeros(data.shape, bool)
    mask[:, 5, 7] = True
    img = CCDData(data, unit="nanomaggy", wcs=make_tan_wcs((ny, nx), SCALE, RA0, DEC0),
                  mask=mask, uncertainty=StdDevUncertainty(np.full(data.shape, 0.01, np.float32)))
    img.meta["BANDS"] = ",".join(bands)
    return img


def at_pixel(img, x, y):
    return img.wcs.celestial.pixel_to_world(x, y)


# --------------------------------------------------------------------------- sample positions
def test_sample_positions_put_the_centre_on_the_sky(tiny):
    where = SkyCoord([10.0, 200.5, 359.9], [-30.0, 45.25, 89.0], unit="deg")
    gals = tiny.sample(3, steps=2, seed=0, progress=False, positions=where)
    plain = tiny.sample(3, steps=2, seed=0, progress=False)
    for g, p, q in zip(gals, where, plain):
        centre = g.wcs.pixel_to_world(7.5, 7.5)
        assert centre.separation(p).deg < 1e-6
        assert g.meta["POSARBIT"] is False
        np.testing.assert_array_equal(g.data, q.data)   # same galaxy, only the WCS moves
        assert q.meta["POSARBIT"] is True
        assert "placeholder" in q.meta.comments["POSARBIT"]
    # a scalar puts every galaxy there, any frame is accepted
    gal = SkyCoord(l=10.0, b=20.0, unit="deg", frame="galactic")
    for g in tiny.sample(2, steps=2, seed=0, progress=False, positions=gal):
        assert g.wcs.pixel_to_world(7.5, 7.5).separation(gal).deg < 1e-6


def test_sample_positions_refused(tiny):
    with pytest.raises(ValueError, match="2 sky positions but n=3"):
        tiny.sample(3, steps=2, progress=False, positions=SkyCoord([1, 2], [3, 4], unit="deg"))
    with pytest.raises(TypeError, match="SkyCoord"):
        tiny.sample(1, steps=2, progress=False, positions=(10.0, 20.0))


# --------------------------------------------------------------------------- inject
def test_inject_conserves_flux_on_the_same_grid():
    img = frame()
    before = img.data.copy(), img.mask.copy(), img.uncertainty.array.copy(), img.meta.copy()
    g1, g2 = galaxy(), galaxy(sigma=2.0, amps=(0.5, 0.7, 0.9))
    # centres of 16-pixel cutouts are pixel corners: x.5 keeps the shift whole
    where = SkyCoord([at_pixel(img, 30.5, 40.5), at_pixel(img, 80.5, 60.5)])
    new, truth = inject([g1, g2], img, positions=where)
    total = g1.data.sum(axis=(1, 2)) + g2.data.sum(axis=(1, 2))
    np.testing.assert_allclose(new.data.sum(axis=(1, 2)), total, rtol=1e-4)
    np.testing.assert_array_equal(new.data[:, 33:49, 23:39], g1.data)
    for b, k in zip("grz", range(3)):
        assert truth[f"flux_{b}"].unit == u.nanomaggy
        np.testing.assert_allclose(truth[f"flux_{b}"].value,
                                   [g1.data[k].sum(), g2.data[k].sum()], rtol=1e-5)
    np.testing.assert_allclose(truth["x"].value, [30.5, 80.5])
    np.testing.assert_allclose(truth["y"].value, [40.5, 60.5])
    assert SkyCoord(truth["ra"], truth["dec"]).separation(where).max().deg < 1e-9
    assert not truth["resampled"].any() and not truth["clipped"].any()
    assert list(truth["index"]) == [0, 1]
    # mask and uncertainty carried; the input untouched
    np.testing.assert_array_equal(new.mask, img.mask)
    np.testing.assert_array_equal(new.uncertainty.array, img.uncertainty.array)
    assert new.mask is not img.mask and new.wcs is not img.wcs
    np.testing.assert_array_equal(img.data, before[0])
    np.testing.assert_array_equal(img.mask, before[1])
    np.testing.assert_array_equal(img.uncertainty.array, before[2])
    assert dict(img.meta) == dict(before[3])
    assert new.meta["NINJECT"] == 2


def test_inject_reprojects_other_pixel_scales():
    img = frame()
    g = galaxy(size=32, scale=0.2 * u.arcsec, sigma=3.0)
    new, truth = inject(g, img, positions=at_pixel(img, 50.3, 40.8))
    np.testing.assert_allclose(new.data.sum(axis=(1, 2)), g.data.sum(axis=(1, 2)), rtol=0.01)
    np.testing.assert_allclose(truth["flux_r"].value, g.data[1].sum(), rtol=0.01)
    assert truth["resampled"][0]
    np.testing.assert_allclose([truth["x"][0].value, truth["y"][0].value], [50.3, 40.8],
                               atol=1e-6)
    # the light lands where it was asked: centroid of the injected r band
    yy, xx = np.mgrid[:100, :120]
    w = new.data[1]
    assert abs((w * xx).sum() / w.sum() - 50.3) < 0.05
    assert abs((w * yy).sum() / w.sum() - 40.8) < 0.05


def test_inject_subpixel_positions():
    img = frame()
    g = galaxy()
    asked = at_pixel(img, 40.2, 50.9)
    _, snapped = inject(g, img, positions=asked)
    assert (snapped["x"][0].value, snapped["y"][0].value) == (40.5, 50.5)   # nearest whole shift
    new, exact = inject(g, img, positions=asked, resample="always")
    assert exact["resampled"][0]
    assert SkyCoord(exact["ra"], exact["dec"])[0].separation(asked).deg < 1e-9
    np.testing.assert_allclose(new.data.sum(axis=(1, 2)), g.data.sum(axis=(1, 2)), rtol=0.01)


def test_inject_grid_detection():
    # north up at two places of a high-declination frame differ by a small rotation
    # (the meridians converge): still the frame's grid, no resampling
    img = CCDData(np.zeros((3, 256, 256), np.float32), unit="nanomaggy",
                  wcs=make_tan_wcs((256, 256), SCALE, 224.0, 67.0), meta={"BANDS": "g,r,z"})
    g = galaxy(size=64, sigma=4.0)
    _, truth = inject(g, img, positions=at_pixel(img, 30.5, 230.5))
    assert not truth["resampled"][0]
    # a frame rotated by 30 degrees is another grid: reprojected, flux kept
    wcs = img.wcs.deepcopy()
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    wcs.wcs.cd = wcs.wcs.cd @ np.array([[c, -s], [s, c]])
    img.wcs = wcs
    new, truth = inject(g, img, positions=at_pixel(img, 100.0, 120.0))
    assert truth["resampled"][0]
    np.testing.assert_allclose(new.data.sum(axis=(1, 2)), g.data.sum(axis=(1, 2)), rtol=0.01)


def test_inject_default_positions_are_the_galaxies_own():
    img = frame()
    g = galaxy(ra=RA0, dec=DEC0)             # centre on the frame centre (59.5, 49.5)
    _, truth = inject(g, img)
    assert (truth["x"][0].value, truth["y"][0].value) == (59.5, 49.5)


def test_inject_refuses_positions_off_the_image():
    img = frame()
    inside, outside = at_pixel(img, 30.5, 40.5), at_pixel(img, 130.0, 40.0)
    with pytest.raises(ValueError, match="galaxy 1 .* off the image"):
        inject([galaxy(), galaxy()], img, positions=SkyCoord([inside, outside]))
    with pytest.raises(ValueError, match="2 sky positions for 1 galaxies"):
        inject(galaxy(), img, positions=SkyCoord([inside, inside]))


def test_inject_placeholder_position_says_so(tiny):
    g = tiny.sample(1, steps=2, seed=0, progress=False)
    with pytest.raises(ValueError, match="galaxy 0 .*POSARBIT"):
        inject(g, frame())


def test_inject_bands():
    img = frame(bands="gr")
    g = galaxy()
    new, truth = inject(g, img, positions=at_pixel(img, 30.5, 40.5), bands="r")
    assert new.data[0].sum() == 0 and truth.colnames.count("flux_r") == 1
    assert "flux_g" not in truth.colnames
    with pytest.raises(ValueError, match=r"\['z'\] are not in the image"):
        inject(g, img, positions=at_pixel(img, 30.5, 40.5), bands="rz")
    with pytest.raises(ValueError, match=r"galaxy 0 has bands .* \['i'\]"):
        inject(g, frame(bands="gi"), positions=at_pixel(img, 30.5, 40.5))
    # a 2-D frame named by bands=, and an image unit other than nanomaggy
    flat = CCDData(np.zeros((100, 120)), unit="maggy", wcs=img.wcs)
    with pytest.raises(ValueError, match="carry no band names"):
        inject(g, flat, positions=at_pixel(img, 30.5, 40.5))
    new, truth = inject(g, flat, positions=at_pixel(img, 30.5, 40.5), bands="z")
    assert new.shape == (100, 120) and new.unit == u.maggy
    np.testing.assert_allclose(new.data.sum() * 1e9, g.data[2].sum(), rtol=1e-5)
    np.testing.assert_allclose(truth["flux_z"].value, g.data[2].sum(), rtol=1e-5)


def test_inject_background_and_edges():
    img = frame()
    g = galaxy()
    g.data += np.float32(0.05)                 # a sky pedestal
    new, truth = inject(g, img, positions=at_pixel(img, 30.5, 40.5), background="border")
    clean = galaxy().data.sum(axis=(1, 2))
    np.testing.assert_allclose(new.data.sum(axis=(1, 2)), clean, rtol=1e-3)
    _, raw = inject(g, img, positions=at_pixel(img, 30.5, 40.5))
    np.testing.assert_allclose(raw["flux_g"].value - truth["flux_g"].value, 0.05 * 256, rtol=1e-3)
    # a cutout half off the edge adds what falls on the frame
    new, truth = inject(galaxy(), img, positions=at_pixel(img, 0.5, 40.5))
    assert truth["clipped"][0]
    np.testing.assert_allclose(truth["flux_r"].value, new.data[1].sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="background must be"):
        inject(g, img, positions=at_pixel(img, 30.5, 40.5), background="median")


def test_cutouts_measure_back():
    img = frame(noise=0.001)
    g = galaxy(size=32, sigma=2.0)
    where = at_pixel(img, 60.5, 50.5)
    new, truth = inject(g, img, positions=where)
    stamp, = cutouts(new, SkyCoord(truth["ra"], truth["dec"]), 32)
    assert stamp.shape == (3, 32, 32)
    assert stamp.wcs.pixel_to_world(15.5, 15.5).separation(where).deg < 1e-9
    ref = measure_galaxies([g], background=0)
    got = measure_galaxies([stamp], background=0)
    np.testing.assert_allclose(got["flux_r"].value, ref["flux_r"].value, rtol=0.01)
    assert got["flux_r"][0] < truth["flux_r"][0]            # an aperture flux


# --------------------------------------------------------------------------- GalSim
def test_to_galsim_round_trip():
    import galsim
    g = galaxy(size=32, sigma=2.0)
    prof = to_galsim(g, band="r")
    assert isinstance(prof, galsim.InterpolatedImage)
    np.testing.assert_allclose(prof.flux, g.data[1].sum(), rtol=1e-6)
    drawn = prof.drawImage(scale=0.262, method="no_pixel", nx=64, ny=64)
    np.testing.assert_allclose(drawn.array.sum(), g.data[1].sum(), rtol=0.01)
    np.testing.assert_allclose(drawn.array[16:48, 16:48], g.data[1], atol=1e-3 * g.data[1].max())
    counts = to_galsim(g, band="g", zero_point=30.0)
    np.testing.assert_allclose(counts.flux, g.data[0].sum() * 10 ** (0.4 * 7.5), rtol=1e-6)
    with pytest.raises(ValueError, match="give band="):
        to_galsim(g)
    with pytest.raises(ValueError, match="band 'i' is not in the galaxy"):
        to_galsim(g, band="i")
