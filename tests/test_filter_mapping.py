"""Tests of images in other surveys' filters: FILTERn cards, filter_mapping, cross-survey
transfer and inpainting (issue 18), and of io's one parser and one image builder (issue 15)."""

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData

from astro_sbgm import io
from astro_sbgm.bands import fit_colour_terms
from astro_sbgm.filter_mapping import check_coverage, filter_mapping
from astro_sbgm.inpainting import inpaint
from astro_sbgm.io import AstroSBGMInputWarning
from astro_sbgm.transfer import band_weights, transfer

SDSS = "sdss:g,sdss:r,sdss:z"
SIZE = 16


def _sdss_image(held_out, index=0):
    """A blob labelled as an SDSS g, r, z image (FILTERn cards), as a FITS HDU."""
    src = held_out[index]
    hdu = fits.PrimaryHDU(np.asarray(src.data, np.float32), header=src.wcs.to_header())
    hdu.header["BUNIT"] = "nanomaggy"
    for i, (letter, name) in enumerate(zip("grz", SDSS.split(","))):
        hdu.header[f"BAND{i}"] = letter
        hdu.header[f"FILTER{i}"] = name
    return hdu


# ----------------------------------------------------------------------------- FILTERn cards
def test_filter_cards_are_written_read_and_checked(tmp_path):
    data = np.ones((3, 4, 5), np.float32)
    img = io.read_image(data, bands=SDSS)
    assert img.meta["BANDS"] == "g,r,z"                        # letters stay in BANDn
    assert [img.meta[f"FILTER{i}"] for i in range(3)] == SDSS.split(",")
    path = io.write_image(img, tmp_path / "a.fits")
    with fits.open(path) as hdul:
        assert hdul[0].header["BAND1"] == "r" and hdul[0].header["FILTER1"] == "sdss:r"
    back = io.read_image(path)
    assert back.meta["FILTER2"] == "sdss:z" and back.meta["BANDS"] == "g,r,z"
    # a header with FILTERn cards only gives the letters
    hdu = fits.PrimaryHDU(data, header=fits.Header({"BUNIT": "nanomaggy", "FILTER0": "hsc:g",
                                                    "FILTER1": "hsc:r", "FILTER2": "hsc:z"}))
    assert io.read_image(hdu).meta["BANDS"] == "g,r,z"
    # plain letters record the Legacy Survey (DECam) filters
    assert io.read_image(data, bands="grz").meta["FILTER0"] == "decam:g"
    # selecting bands keeps each plane's filter
    assert io.select_bands(img, "zg").meta["FILTER0"] == "sdss:z"
    # FILTERn that contradict BANDn, or bands= that contradict FILTERn, are refused
    bad = fits.PrimaryHDU(data, header=fits.Header({"BUNIT": "nanomaggy", "BANDS": "g,r,z",
                                                    "FILTER0": "sdss:i", "FILTER1": "sdss:r",
                                                    "FILTER2": "sdss:z"}))
    with pytest.raises(ValueError, match="disagree"):
        io.read_image(bad)
    with pytest.raises(ValueError, match="FILTERn"):
        io.read_image(path, bands="hsc:g,hsc:r,hsc:z")
    with pytest.raises(ValueError, match="no band letter"):
        io.read_image(data[:1], bands="euclid:VIS")
    # FILTERn cards that are not known filters (an instrument's own names) are ignored
    odd = fits.PrimaryHDU(data, header=fits.Header({"BUNIT": "nanomaggy", "BANDS": "g,r,z",
                                                    "FILTER0": "Open", "FILTER1": "Open",
                                                    "FILTER2": "Open"}))
    with pytest.warns(AstroSBGMInputWarning, match="not filters astro_sbgm knows"):
        assert io.read_image(odd).meta["FILTER0"] == "decam:g"


def test_make_image_and_write_image_flags_and_draws(tmp_path):
    data = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    flags = np.zeros((2, 3, 3), np.uint8)
    flags[0, 1, 1] = 1
    img = io.make_image(data, "gr", wcs=io.make_tan_wcs((3, 3)), flags=flags,
                        cards=io.provenance_cards(True, 7, SEED=(3, "seed")))
    assert img.meta["BUNIT"] == "nanomaggy" and img.meta["TRSTEPS"] == 7
    assert img.meta["ORIGIN"].startswith("astro_sbgm") and img.meta["SIMULATD"] is True
    draw = io.make_image(data * 2, "gr", cards={"DRAWIDX": 0})
    path = io.write_image(img, tmp_path / "out.fits", draws=[draw])
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "FLAGS", "DRAW"]
        np.testing.assert_array_equal(hdul["FLAGS"].data, flags)
        np.testing.assert_array_equal(hdul["DRAW"].data, data * 2)
        assert hdul["DRAW"].header["DRAWIDX"] == 0
    with pytest.raises(ValueError, match="one name per plane"):
        io.make_image(data, "grz")


# ----------------------------------------------------------------------------- the parser
def test_as_batch_and_holds_many():
    a = np.ones((3, 4, 4))
    arr, names = io.as_batch([CCDData(a, unit="nanomaggy", meta={"BANDS": "g,r,z"}), a])
    assert arr.shape == (2, 3, 4, 4) and names == ("g", "r", "z")
    assert io.as_batch(a[0])[0].shape == (1, 1, 4, 4)
    assert io.as_batch(np.ones((5, 3, 4, 4)), "grz", dtype=np.float32)[0].dtype == np.float32
    with pytest.raises(ValueError, match="different shapes"):
        io.as_batch([a, np.ones((3, 5, 5))])
    with pytest.raises(ValueError, match="different bands"):
        io.as_batch([NDData(a, meta={"BANDS": "grz"}), NDData(a, meta={"BANDS": "zrg"})])
    with pytest.raises(ValueError, match="empty"):
        io.as_batch([])
    assert io.holds_many(np.ones((2, 3, 4, 4))) and not io.holds_many(a)
    planes = [CCDData(a[0], unit="nanomaggy", meta={"BAND": b}) for b in "grz"]
    assert not io.holds_many(planes)                      # one image given per band
    assert io.holds_many([a, a]) and not io.holds_many((a, io.make_tan_wcs((4, 4))))


def test_read_mask_on_a_grid_and_read_raw():
    m = np.zeros((4, 4), bool)
    m[1, 2] = True
    out = io.read_mask(m, shape=(3, 4, 4))
    assert out.shape == (3, 4, 4) and out[:, 1, 2].all() and out.sum() == 3
    with pytest.raises(ValueError, match="mask has shape"):
        io.read_mask(np.zeros((5, 5)), shape=(3, 4, 4))
    raw, unit = io.read_raw(np.arange(16, dtype=np.int16).reshape(4, 4))
    assert raw.dtype == np.int16 and raw.shape == (1, 4, 4) and unit == u.nanomaggy
    assert io.read_raw({"g": np.ones((2, 2))}) == (None, None)


# ----------------------------------------------------------------------------- filter_mapping
def test_filter_mapping_applies_the_colour_terms_per_pixel():
    terms = fit_colour_terms(SDSS, "grz")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] - 15.5
    blob = 5.0 * np.exp(-0.5 * (xx ** 2 + yy ** 2) / 4.0 ** 2)
    colour = np.array([1.0, 1.6, 2.0])                    # g : r : z flux ratios
    sigma = 0.2
    data = colour[:, None, None] * blob + rng.normal(0, sigma, (3, 32, 32))
    m = filter_mapping(data, SDSS, "grz", uncertainty=np.full(data.shape, sigma))
    assert m.target == ("decam:g", "decam:r", "decam:z") and m.plane == (0, 1, 2)
    mapped = m.apply(data)
    # the galaxy's centre keeps its own colour: the term applied to that colour exactly
    g_r = -2.5 * np.log10(colour[0] / colour[1])
    expect_g = data[0, 16, 16] * 10 ** (-0.4 * terms["decam:g"](g_r))
    assert mapped[0, 16, 16] == pytest.approx(expect_g, rel=5e-3)
    # a sky pixel far out takes the galaxy's integrated colour, not its own noisy one
    assert m.galaxy_colour["decam:g"] == pytest.approx(g_r, abs=0.02)
    corner = 10 ** (-0.4 * terms["decam:g"](g_r))
    assert m.factor[0, 0, 0] == pytest.approx(corner, rel=5e-3)
    assert 0.2 < m.own_colour["decam:g"] < 0.6
    # linear in flux: negative sky pixels map to negative values, and back exactly
    np.testing.assert_allclose(m.invert(mapped[2], 2), data[2], rtol=1e-12)
    assert m.cards["FMAP0"] == "decam:g=sdss:g+P(sdss:g-sdss:r)"
    # the same filters map onto themselves
    same = filter_mapping(data, "grz", "decam:g,decam:r,decam:z")
    np.testing.assert_array_equal(same.apply(data), data)


def test_filter_mapping_refuses_to_extrapolate():
    with pytest.raises(ValueError, match=r"extrapolate: decam:z .* give an image with a band "
                                         r"covering decam:z"):
        check_coverage("sdss:g,sdss:r", "grz")
    check_coverage("bass:g,bass:r,mzls:z", "grz")            # north into south: covered
    check_coverage("hsc:g,hsc:r,hsc:z", "grz")
    with pytest.raises(ValueError, match="two filters"):
        filter_mapping(np.ones((1, 4, 4)), "sdss:r", "decam:r")


def test_band_weights_match_by_filter_name():
    # SDSS g is not DECam g: it is interpolated, not copied
    w = band_weights(SDSS, "grz")
    assert w[0, 0] < 1.0 and w[0, 1] > 0
    np.testing.assert_allclose(band_weights("decam:g,decam:r,decam:z", "grz"), np.eye(3))


# ----------------------------------------------------------------------------- applications
def test_transfer_from_an_sdss_image_records_the_mapping(model, held_out, tmp_path):
    hdu = _sdss_image(held_out)
    with pytest.warns(AstroSBGMInputWarning, match="colour terms"):
        out = transfer(model, hdu, strength=0.3, steps=4, seed=0)
    assert out.shape == (3, SIZE, SIZE) and np.all(np.isfinite(out.data))
    assert out.meta["FMAP"] == "colour terms" and out.meta["FMAPFROM"] == SDSS
    assert out.meta["FMAP2"] == "decam:z=sdss:z+P(sdss:r-sdss:z)"
    assert out.meta["FILTER0"] == "decam:g" and out.meta["FMRMS0"] < 0.05
    # the same image in the model's own filters is not mapped
    own = transfer(model, held_out[0], strength=0.3, steps=4, seed=0)
    assert "FMAP" not in own.meta
    # SDSS g, r cannot make DECam z
    hdu2 = _sdss_image(held_out)
    hdu2.data = hdu2.data[:2]
    del hdu2.header["BAND2"], hdu2.header["FILTER2"]
    with pytest.raises(ValueError, match="extrapolate: decam:z"):
        transfer(model, hdu2, strength=0.3, steps=4, seed=0)


def test_inpaint_an_sdss_image_maps_the_fill_back(model, held_out):
    hdu = _sdss_image(held_out, 1)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[7:9, :] = True
    with pytest.warns(AstroSBGMInputWarning, match="mapped back"):
        out = inpaint(model, hdu, mask, seed=0, steps=5)
    assert out.meta["FILTER0"] == "sdss:g" and out.meta["FMAP"] == "colour terms"
    assert np.array_equal(out.data[:, ~mask], hdu.data[:, ~mask])        # bit for bit
    assert out.flags.sum() == 3 * mask.sum() and np.all(np.isfinite(out.data))


def test_mocks_use_the_one_builder_and_tan_wcs():
    from astro_sbgm.datasets import make_mock_legacy_survey

    img = make_mock_legacy_survey(1, size=16, seed=1, pixel_scale=0.3)[0]
    assert isinstance(img.meta, fits.Header)
    assert [img.meta[f"FILTER{i}"] for i in range(3)] == ["decam:g", "decam:r", "decam:z"]
    w = img.wcs.wcs
    # the TAN WCS the mock always had: CRPIX at the centre, CD = scale / 3600 exactly, ICRS
    assert w.radesys == "ICRS" and list(w.crpix) == [8.5, 8.5]
    assert np.array_equal(w.cd, [[-0.3 / 3600.0, 0.0], [0.0, 0.3 / 3600.0]])
    assert io.make_tan_wcs((16, 16), 0.3, radesys="ICRS").wcs.radesys == "ICRS"
