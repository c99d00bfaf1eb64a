"""Tests of astro_sbgm.io: input parsing, checks, FITS round trip, model grid."""

import hashlib
import warnings

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, InverseVariance, NDData, StdDevUncertainty
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from astro_sbgm import io
from astro_sbgm.io import AstroSBGMInputWarning


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_canonical(ccd, bands=("g", "r", "z"), shape=(3, 64, 64)):
    assert isinstance(ccd, CCDData)
    assert ccd.shape == shape
    assert ccd.data.dtype == np.float32
    assert ccd.unit == u.nanomaggy
    assert ccd.meta["BANDS"] == ",".join(bands)
    for i, b in enumerate(bands):
        assert ccd.meta[f"BAND{i}"] == b
    assert f"BAND{len(bands)}" not in ccd.meta


def _assert_same_wcs(w1, w2):
    assert list(w1.wcs.ctype) == list(w2.wcs.ctype)
    np.testing.assert_array_equal(w1.wcs.crval, w2.wcs.crval)
    np.testing.assert_array_equal(w1.wcs.crpix, w2.wcs.crpix)
    np.testing.assert_array_equal(w1.pixel_scale_matrix, w2.pixel_scale_matrix)
    assert w1.wcs.compare(w2.wcs)


# --------------------------------------------------------------------------- Legacy layout
@pytest.mark.parametrize("bunit", [None, "nanomaggy", "nanomaggies"])
@pytest.mark.parametrize("bands_card", [True, False])
def test_legacy_file_loads_from_path_alone(tmp_path, legacy_factory, bunit, bands_card):
    hdu = legacy_factory(bunit=bunit, bands_card=bands_card)
    path = tmp_path / "cutout.fits"
    hdu.writeto(path)
    assert fits.getheader(path)["NAXIS"] == 3
    before = _sha(path)
    ccd = io.read_image(path)
    assert _sha(path) == before          # the user's file is never modified
    _assert_canonical(ccd)
    np.testing.assert_array_equal(ccd.data, hdu.data)
    assert ccd.wcs.naxis == 2 and ccd.wcs.has_celestial
    np.testing.assert_allclose(ccd.wcs.wcs.crval, [150.1, 2.2])
    np.testing.assert_allclose(io.pixel_scale_of(ccd.wcs).to_value(u.arcsec), 0.262, rtol=1e-9)
    assert ccd.mask is None and ccd.uncertainty is None
    assert ccd.meta["VERSION"] == "DR9"
    # the centre of the cube is at the header's reference point
    sky = ccd.wcs.pixel_to_world(31.5, 31.5)
    assert abs(sky.ra.deg - 150.1) < 1e-9 and abs(sky.dec.deg - 2.2) < 1e-9


def test_read_images_leaves_files_untouched(tmp_path, legacy_factory):
    for i in range(3):
        legacy_factory(seed=i).writeto(tmp_path / f"c{i}.fits")
    hashes = {p: _sha(p) for p in tmp_path.iterdir()}
    out = io.read_images(tmp_path)
    out[0].data[:] = 99.0                # edits of the result never reach the file
    assert {p: _sha(p) for p in tmp_path.iterdir()} == hashes


# --------------------------------------------------------------------------- every input form
def _forms(hdu):
    data = np.asarray(hdu.data)
    header = hdu.header
    wcs = WCS(header, naxis=2)
    planes = {b: CCDData(data[i], unit="nanomaggy", wcs=wcs, meta={"BAND": b})
              for i, b in enumerate("grz")}
    return {
        "primary_hdu": (hdu, {}),
        "image_hdu": (fits.ImageHDU(data, header=header), {}),
        "hdulist": (fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=header)]), {}),
        "ccddata_3d": (CCDData(data, unit="nanomaggy", wcs=wcs, meta={"BANDS": "g,r,z"}), {}),
        "nddata_3d": (NDData(data, wcs=wcs), {"bands": "grz"}),
        "dict_of_planes": (planes, {}),
        "dict_of_arrays": ({"g": data[0], "r": data[1], "z": data[2]}, {"wcs": wcs}),
        "list_of_planes": (list(planes.values()), {}),
        "list_with_bands": ([CCDData(p, unit="nanomaggy", wcs=wcs) for p in data],
                            {"bands": "grz"}),
        "array_wcs": ((data, wcs), {"bands": ["g", "r", "z"]}),
        "array_header": ((data, header), {}),
        "ndarray": (data, {"bands": "grz", "wcs": wcs}),
    }


@pytest.mark.parametrize("form", ["primary_hdu", "image_hdu", "hdulist", "ccddata_3d",
                                  "nddata_3d", "dict_of_planes", "dict_of_arrays",
                                  "list_of_planes", "list_with_bands", "array_wcs",
                                  "array_header", "ndarray"])
def test_every_input_form_gives_the_canonical_image(legacy_cube, form):
    image, kwargs = _forms(legacy_cube)[form]
    ccd = io.read_image(image, **kwargs)
    _assert_canonical(ccd)
    np.testing.assert_array_equal(ccd.data, legacy_cube.data)
    assert ccd.wcs is not None
    _assert_same_wcs(ccd.wcs, WCS(legacy_cube.header, naxis=2))


def test_single_band_2d_inputs():
    data = np.arange(16.0).reshape(4, 4)
    ccd = io.read_image(CCDData(data, unit="nanomaggy", meta={"BAND": "r"}))
    _assert_canonical(ccd, bands=("r",), shape=(1, 4, 4))
    np.testing.assert_array_equal(ccd.data[0], data)
    assert ccd.wcs is None
    hdu = fits.ImageHDU(data)
    hdu.header["FILTER"] = "z"
    _assert_canonical(io.read_image(hdu), bands=("z",), shape=(1, 4, 4))
    _assert_canonical(io.read_image(data, bands="W1"), bands=("W1",), shape=(1, 4, 4))


def test_dict_with_bands_reorders_and_checks():
    planes = {"z": np.full((4, 4), 3.0), "g": np.full((4, 4), 1.0), "r": np.full((4, 4), 2.0)}
    ccd = io.read_image(planes, bands="grz")
    _assert_canonical(ccd, shape=(3, 4, 4))
    np.testing.assert_array_equal(ccd.data[:, 0, 0], [1.0, 2.0, 3.0])
    sub = io.read_image(planes, bands="rg")
    _assert_canonical(sub, bands=("r", "g"), shape=(2, 4, 4))
    with pytest.raises(ValueError, match=r"\['i'\].*drop them from bands="):
        io.read_image(planes, bands="gri")


def test_mask_and_uncertainty_are_carried_from_nddata():
    data = np.ones((2, 5, 5), np.float32)
    mask = np.zeros((2, 5, 5), bool)
    mask[1, 2, 3] = True
    ivar = np.full((2, 5, 5), 4.0)
    ccd = io.read_image(NDData(data, mask=mask, uncertainty=InverseVariance(ivar),
                               unit="nanomaggy"), bands="gr")
    np.testing.assert_array_equal(ccd.mask, mask)
    assert isinstance(ccd.uncertainty, StdDevUncertainty)
    np.testing.assert_allclose(ccd.uncertainty.array, 0.5)
    # a 2-D mask applies to every band
    ccd2 = io.read_image(NDData(data, unit="nanomaggy", mask=mask[1]), bands="gr")
    assert ccd2.mask[:, 2, 3].all() and ccd2.mask.sum() == 2


def test_inverse_variance_extension_of_an_hdulist():
    data = np.ones((1, 4, 4), np.float32)
    unc = fits.ImageHDU(np.full((1, 4, 4), 0.25, np.float32), name="UNCERT")
    unc.header["UTYPE"] = "InverseVariance"
    msk = fits.ImageHDU(np.eye(4, dtype=np.uint8)[None], name="MASK")
    hdul = fits.HDUList([fits.PrimaryHDU(data), msk, unc])
    ccd = io.read_image(hdul, bands="r")
    np.testing.assert_allclose(ccd.uncertainty.array, 2.0)
    np.testing.assert_array_equal(ccd.mask[0], np.eye(4, dtype=bool))


def test_hdu_selection_and_bad_hdu(tmp_path, legacy_cube):
    hdul = fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2), np.float32)),
                         fits.ImageHDU(legacy_cube.data, header=legacy_cube.header, name="SCI")])
    assert io.read_image(hdul, hdu="SCI").shape == (3, 64, 64)
    assert io.read_image(hdul, hdu=0, bands="g").shape == (1, 2, 2)
    with pytest.raises(ValueError, match=r"hdu='NOPE'.*\['PRIMARY', 'SCI'\]"):
        io.read_image(hdul, hdu="NOPE")
    empty = fits.HDUList([fits.PrimaryHDU()])
    with pytest.raises(ValueError, match="no image data"):
        io.read_image(empty)


# --------------------------------------------------------------------------- units
@pytest.mark.parametrize("unit, factor", [
    ("nanomaggy", 1.0),
    ("nanomaggy / pix", 1.0),
    (u.nanomaggy / u.pix, 1.0),
    ("nmgy", 1.0),
    ("maggy", 1e9),
    # AB: 1 nanomaggy = 3631e-9 Jy = 3.631 uJy
    ("uJy", 1.0 / 3.631),
    ("Jy", 1e9 / 3631.0),
])
def test_unit_conversions(unit, factor):
    vals = np.array([[[0.5, 2.0], [-1.0, 10.0]]])
    np.testing.assert_allclose(io.as_nanomaggy(vals, unit), vals * factor, rtol=1e-6)
    ccd = io.read_image(vals, bands="r", unit=unit)
    assert ccd.unit == u.nanomaggy and ccd.meta["BUNIT"] == "nanomaggy"
    np.testing.assert_allclose(ccd.data, vals * factor, rtol=1e-6)


def test_uJy_via_ab_zero_point():
    # 22.5 - 2.5 log10(f / nmgy) must equal the AB magnitude -2.5 log10(f / 3631 Jy)
    flux_ujy = 12.345
    nmgy = io.as_nanomaggy([flux_ujy], "uJy")[0]
    ab = -2.5 * np.log10(flux_ujy * 1e-6 / 3631.0)
    assert abs((22.5 - 2.5 * np.log10(nmgy)) - ab) < 1e-6


def test_unit_from_ccddata_and_bunit():
    vals = np.full((1, 3, 3), 2.0)
    assert io.read_image(CCDData(vals, unit="maggy", meta={"BANDS": "g"})).data[0, 0, 0] == 2e9
    hdu = fits.PrimaryHDU(vals)
    hdu.header["BUNIT"] = "nanomaggy / pix"
    assert io.read_image(hdu, bands="g").data[0, 0, 0] == 2.0


@pytest.mark.parametrize("unit", ["adu", "erg/s", "electron / s"])
def test_units_that_are_not_fluxes_are_refused(unit):
    with pytest.raises(u.UnitConversionError, match="cannot be converted to nanomaggy"):
        io.read_image(np.ones((1, 3, 3)), bands="g", unit=unit)
    hdu = fits.PrimaryHDU(np.ones((1, 3, 3)))
    hdu.header["BUNIT"] = unit
    with pytest.raises(u.UnitConversionError, match="calibrate the image first"):
        io.read_image(hdu, bands="g")


def test_unknown_unit_string_and_disagreeing_unit():
    with pytest.raises(ValueError, match="cannot understand the unit 'furlong_per_mag'"):
        io.read_image(np.ones((1, 3, 3)), bands="g", unit="furlong_per_mag")
    with pytest.raises(ValueError, match="disagrees with the input's unit"):
        io.read_image(CCDData(np.ones((3, 3)), unit="maggy", meta={"BAND": "g"}),
                      unit="nanomaggy")


# --------------------------------------------------------------------------- bad input
def test_wrong_number_of_bands(legacy_cube):
    with pytest.raises(ValueError, match=r"names 2 band\(s\) but the image has 3 plane"):
        io.read_image(legacy_cube.data, bands="gr")
    with pytest.raises(ValueError, match=r"records 3 band\(s\).*has 2 plane"):
        io.read_image(fits.PrimaryHDU(legacy_cube.data[:2], header=legacy_cube.header))
    with pytest.raises(ValueError, match=r"names 1 band\(s\) but 2 per-band image"):
        io.read_image([CCDData(np.ones((3, 3)), unit="nmgy")] * 2, bands="g")


def test_bands_needed_and_disagreeing(legacy_cube):
    with pytest.raises(ValueError, match="pass bands=, e.g. bands='grz'"):
        io.read_image(legacy_cube.data)
    with pytest.raises(ValueError, match="disagrees with the bands"):
        io.read_image(legacy_cube, bands="gri")
    with pytest.raises(ValueError, match="per-band images need band names"):
        io.read_image([CCDData(np.ones((3, 3)), unit="nmgy")] * 2)


def test_unknown_band_names():
    with pytest.raises(ValueError, match=r"unknown band name\(s\) \['q'\]; known bands"):
        io.read_image(np.ones((2, 4, 4)), bands="gq")
    hdu = fits.PrimaryHDU(np.ones((1, 4, 4)))
    hdu.header["BAND0"] = "Halpha"
    with pytest.raises(ValueError, match="unknown band name.*Halpha"):
        io.read_image(hdu)


def test_nonfinite_pixels_are_masked_and_zeroed_by_default():
    data = np.ones((2, 5, 5), np.float32)
    data[0, 1, 1] = np.nan
    data[1, 4, 0] = np.inf
    data[1, 0, 4] = -np.inf
    before = data.copy()
    ccd = io.read_image(data, bands="gr")
    np.testing.assert_array_equal(data, before)        # the input is not modified
    assert ccd.mask.sum() == 3
    assert ccd.mask[0, 1, 1] and ccd.mask[1, 4, 0] and ccd.mask[1, 0, 4]
    assert np.all(np.isfinite(ccd.data))
    assert ccd.data[0, 1, 1] == 0 and ccd.data[1, 4, 0] == 0
    assert ccd.data.sum() == 50 - 3
    # an existing mask is kept and extended
    nd = NDData(data, mask=np.pad(np.ones((1, 1), bool), ((2, 2), (2, 2))))
    m = io.read_image(nd, bands="gr").mask
    assert m[:, 2, 2].all() and m.sum() == 3 + 2


def test_nonfinite_raise_reports_the_count():
    data = np.ones((1, 6, 6))
    data[0, :2, 0] = np.nan
    with pytest.raises(ValueError, match=r"2 non-finite pixel\(s\) of 36.*nonfinite='mask'"):
        io.read_image(data, bands="g", nonfinite="raise")
    with pytest.raises(ValueError, match="nonfinite must be 'mask' or 'raise'"):
        io.read_image(data, bands="g", nonfinite="drop")


def test_shapes_and_types():
    with pytest.raises(ValueError, match=r"2-D .* or 3-D.*\(5,\)"):
        io.read_image(np.ones(5), bands="g")
    with pytest.raises(ValueError, match="goes to astro_sbgm.io.read_images"):
        io.read_image(np.ones((2, 3, 4, 4)), bands="grz")
    with pytest.raises(TypeError, match="cannot read an image from a int"):
        io.read_image(3)
    with pytest.raises(TypeError, match="real numbers"):
        io.read_image(np.ones((1, 2, 2), complex), bands="g")
    with pytest.raises(ValueError, match="different shapes"):
        io.read_image({"g": np.ones((3, 3)), "r": np.ones((4, 4))})
    with pytest.raises(ValueError, match="mask has shape"):
        io.read_image(NDData(np.ones((1, 4, 4)), mask=np.zeros((3, 3), bool)), bands="g")


def test_empty_and_missing_inputs(tmp_path):
    with pytest.raises(ValueError, match="input is empty"):
        io.read_images([])
    with pytest.raises(ValueError, match="empty"):
        io.read_image([])
    with pytest.raises(ValueError, match="dict of per-band images is empty"):
        io.read_image({})
    with pytest.raises(ValueError, match="input is empty"):
        io.read_images(np.zeros((0, 3, 8, 8)), bands="grz")
    (tmp_path / "notes.txt").write_text("not a FITS file")
    with pytest.raises(ValueError, match="holds no FITS files"):
        io.read_images(tmp_path)
    with pytest.raises(ValueError, match=r"pattern .*\*\.fits' matches no file"):
        io.read_images(str(tmp_path / "*.fits"))
    missing = tmp_path / "nope.fits"
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        io.read_image(missing)
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        io.read_images([str(missing)])
    with pytest.raises(ValueError, match="is a directory; .*read_images"):
        io.read_image(tmp_path)
    with pytest.raises(OSError, match="cannot read .*notes.txt.* as a FITS file"):
        io.read_image(tmp_path / "notes.txt")


# --------------------------------------------------------------------------- many images
def test_directory_glob_and_list_reading(tmp_path, legacy_factory):
    for i in (2, 0, 1):
        legacy_factory(n=16, seed=i).writeto(tmp_path / f"gal{i}.fits")
    legacy_factory(n=16, seed=9).writeto(tmp_path / "other.fit")
    (tmp_path / "readme.txt").write_text("ignored")
    (tmp_path / "sub.fits").mkdir()                  # a directory named like a file
    by_dir = io.read_images(tmp_path)
    assert len(by_dir) == 4
    expected = [legacy_factory(n=16, seed=s).data for s in (0, 1, 2)]
    by_glob = io.read_images(str(tmp_path / "gal*.fits"))
    assert len(by_glob) == 3
    for ccd, ref in zip(by_glob, expected):          # sorted by name
        _assert_canonical(ccd, shape=(3, 16, 16))
        np.testing.assert_array_equal(ccd.data, ref)
    with fits.open(tmp_path / "other.fit") as hdul:
        mixed = io.read_images([tmp_path / "gal0.fits", str(tmp_path / "gal*.fits"), hdul])
    assert len(mixed) == 5
    np.testing.assert_array_equal(mixed[0].data, mixed[1].data)


def test_four_d_arrays_and_lists_of_arrays():
    rng = np.random.default_rng(3)
    stack = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
    out = io.read_images(stack, bands="grz")
    assert len(out) == 4
    for ccd, ref in zip(out, stack):
        _assert_canonical(ccd, shape=(3, 8, 8))
        np.testing.assert_array_equal(ccd.data, ref)
    with pytest.raises(ValueError, match="pass bands="):
        io.read_images(stack)
    assert len(io.read_images(list(stack), bands="grz")) == 4
    assert len(io.read_images(stack[0], bands="grz")) == 1


def test_list_of_2d_ccddata_planes_or_separate_images():
    g, r = (CCDData(np.full((4, 4), v), unit="nmgy", meta={"BAND": b})
            for v, b in ((1.0, "g"), (2.0, "r")))
    (one,) = io.read_images([g, r])                     # distinct bands: one image
    _assert_canonical(one, bands=("g", "r"), shape=(2, 4, 4))
    assert "BAND" not in one.meta
    r2 = CCDData(np.full((4, 4), 5.0), unit="nmgy", meta={"BAND": "r"})
    two = io.read_images([r, r2])                       # the same band: two images
    assert [c.shape for c in two] == [(1, 4, 4)] * 2
    assert [c.data[0, 0, 0] for c in two] == [2.0, 5.0]
    three = io.read_images([np.ones((4, 4))] * 3, bands="r")
    assert len(three) == 3


# --------------------------------------------------------------------------- writing
def test_write_read_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(7)
    data = rng.normal(0, 1, (3, 20, 24)).astype(np.float32)
    mask = rng.random((3, 20, 24)) < 0.1
    unc = rng.uniform(0.01, 0.2, (3, 20, 24)).astype(np.float32)
    wcs = io.make_tan_wcs((20, 24), 0.262 * u.arcsec, ra=210.123456789012, dec=-5.98765432109)
    ccd = io.read_image(CCDData(data, unit="nanomaggy", wcs=wcs, mask=mask,
                                uncertainty=StdDevUncertainty(unc),
                                meta={"OBJECT": "NGC 1", "EXPTIME": 90.5}), bands="grz")
    path = io.write_image(ccd, tmp_path / "out" / "img.fits")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["img.fits"]
    back = io.read_image(path)
    np.testing.assert_array_equal(back.data, ccd.data)
    assert back.data.dtype == np.float32
    assert back.unit == ccd.unit == u.nanomaggy
    np.testing.assert_array_equal(back.mask, mask)
    assert isinstance(back.uncertainty, StdDevUncertainty)
    np.testing.assert_array_equal(back.uncertainty.array, unc)
    _assert_same_wcs(back.wcs, ccd.wcs)
    assert dict(back.meta) == dict(ccd.meta)
    assert back.meta["BANDS"] == "g,r,z" and back.meta["OBJECT"] == "NGC 1"
    # the written file is in the Legacy Survey layout
    with fits.open(path) as hdul:
        h = hdul[0].header
        assert hdul[0].data.shape == (3, 20, 24)
        assert (h["BAND0"], h["BAND1"], h["BAND2"], h["BUNIT"]) == ("g", "r", "z", "nanomaggy")
        assert [x.name for x in hdul] == ["PRIMARY", "MASK", "UNCERT"]
    # and a second round trip changes nothing
    io.write_image(back, tmp_path / "again.fits")
    again = io.read_image(tmp_path / "again.fits")
    np.testing.assert_array_equal(again.data, ccd.data)
    _assert_same_wcs(again.wcs, ccd.wcs)


def test_write_legacy_file_round_trip_and_overwrite(tmp_path, legacy_cube):
    src = tmp_path / "cutout.fits"
    legacy_cube.writeto(src)
    ccd = io.read_image(src)
    out = tmp_path / "copy.fits"
    io.write_image(ccd, out)
    back = io.read_image(out)
    np.testing.assert_array_equal(back.data, legacy_cube.data)
    _assert_same_wcs(back.wcs, ccd.wcs)
    assert back.mask is None and back.uncertainty is None
    with fits.open(out) as hdul:
        assert len(hdul) == 1
    before = _sha(out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        io.write_image(ccd, out)
    assert _sha(out) == before
    io.write_image(io.read_image(np.zeros((1, 4, 4)), bands="g"), out, overwrite=True)
    assert io.read_image(out).shape == (1, 4, 4)


def test_select_bands():
    ccd = io.read_image(np.arange(3.0)[:, None, None] * np.ones((3, 2, 2)), bands="grz",
                        wcs=io.make_tan_wcs((2, 2)))
    zg = io.select_bands(ccd, "zg")
    _assert_canonical(zg, bands=("z", "g"), shape=(2, 2, 2))
    np.testing.assert_array_equal(zg.data[:, 0, 0], [2.0, 0.0])
    assert io.select_bands(ccd, ["g", "r", "z"]) is ccd
    with pytest.raises(ValueError, match=r"band\(s\) \['i'\] are needed"):
        io.select_bands(ccd, "gi")


# --------------------------------------------------------------------------- model grid
def _gaussian_image(n, scale_arcsec, sigma_arcsec, flux):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    s = sigma_arcsec / scale_arcsec
    g = np.exp(-0.5 * (xx ** 2 + yy ** 2) / s ** 2)
    return g / g.sum() * flux


def test_to_model_grid_conserves_flux_and_keeps_the_mask():
    n = 100                                          # 20" at 0.2"/pix > 64 x 0.262" = 16.8"
    data = np.stack([_gaussian_image(n, 0.2, 1.2, 50.0),
                     _gaussian_image(n, 0.2, 2.0, 120.0)]).astype(np.float32)
    wcs = io.make_tan_wcs((n, n), 0.2 * u.arcsec, ra=30.0, dec=-20.0)
    mask = np.zeros(data.shape, bool)
    mask[:, 60, 35] = True
    ccd = io.read_image(NDData(data, wcs=wcs, mask=mask, unit="nanomaggy"), bands="gr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # fully covered: no warning
        out = io.to_model_grid(ccd, 64, 0.262 * u.arcsec)
    _assert_canonical(out, bands=("g", "r"), shape=(2, 64, 64))
    np.testing.assert_allclose(proj_plane_pixel_scales(out.wcs) * 3600, 0.262, rtol=1e-9)
    np.testing.assert_allclose(out.data.sum(axis=(1, 2)), [50.0, 120.0], rtol=0.01)
    # the masked pixel lands, masked, at the same sky position
    sky = wcs.pixel_to_world(35, 60)
    x, y = out.wcs.world_to_pixel(sky)
    assert out.mask[:, int(round(float(y))), int(round(float(x)))].all()
    assert out.mask.sum() <= 2 * 25                  # and the mask grows only locally
    assert not out.mask[:, 32, 32].any()
    # the centre of the image stays at the centre
    centre = wcs.pixel_to_world((n - 1) / 2, (n - 1) / 2)
    np.testing.assert_allclose(out.wcs.world_to_pixel(centre), [31.5, 31.5], atol=1e-6)


def test_to_model_grid_masks_and_warns_for_uncovered_pixels():
    n = 40
    data = _gaussian_image(n, 0.2, 1.0, 10.0)[None].astype(np.float32)
    ccd = io.read_image((data, io.make_tan_wcs((n, n), 0.2 * u.arcsec)), bands="r")
    with pytest.warns(AstroSBGMInputWarning, match="not covered by the input"):
        out = io.to_model_grid(ccd, 64)
    assert out.mask[0, 0, 0] and out.mask[0, -1, -1] and not out.mask[0, 32, 32]
    assert out.data[0, 0, 0] == 0
    np.testing.assert_allclose(out.data.sum(), 10.0, rtol=0.01)


def test_to_model_grid_same_scale_is_exact(legacy_cube):
    ccd = io.read_image(legacy_cube)
    assert io.to_model_grid(ccd, 64) is ccd
    cut = io.to_model_grid(ccd, 32)
    _assert_canonical(cut, shape=(3, 32, 32))
    np.testing.assert_array_equal(cut.data, ccd.data[:, 16:48, 16:48])   # no resampling
    assert cut.mask is None
    sky = ccd.wcs.pixel_to_world(20, 30)
    np.testing.assert_allclose(cut.wcs.world_to_pixel(sky), [4, 14], atol=1e-8)
    with pytest.warns(AstroSBGMInputWarning, match="padded with 0 and masked"):
        pad = io.to_model_grid(cut, 40)
    np.testing.assert_array_equal(pad.data[:, 4:36, 4:36], cut.data)
    assert pad.mask[:, :4].all() and not pad.mask[:, 4:36, 4:36].any()
    assert pad.data[:, :4].sum() == 0


def test_to_model_grid_without_wcs():
    ccd = io.read_image(np.ones((1, 64, 64)), bands="g")
    assert io.to_model_grid(ccd, 64) is ccd
    with pytest.raises(ValueError, match=r"48x48 pixels but the model works on 64x64.*WCS"):
        io.to_model_grid(io.read_image(np.ones((1, 48, 48)), bands="g"), 64)
    with pytest.raises(ValueError, match="size must be a positive"):
        io.to_model_grid(ccd, 0)


def test_make_tan_wcs_and_pixel_scale():
    w = io.make_tan_wcs((10, 20), 0.5, ra=10.0, dec=40.0)
    assert io.pixel_scale_of(w).unit == u.arcsec
    np.testing.assert_allclose(io.pixel_scale_of(w).value, 0.5)
    sky = w.pixel_to_world(9.5, 4.5)
    assert abs(sky.ra.deg - 10.0) < 1e-12 and abs(sky.dec.deg - 40.0) < 1e-12
    east = w.pixel_to_world(8.5, 4.5)                # east is left (ra grows to -x)
    assert east.ra.deg > 10.0
