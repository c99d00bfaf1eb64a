"""Real survey files: units and zero points, UTYPEs, mask bits, Legacy Survey bricks,
catalogue to cutouts, and measurement errors.

Every file is written here, small, in the layout the surveys document (no network):
DR10 coadd bricks ``coadd/<AAA>/<brick>/legacysurvey-<brick>-{image,invvar}-<band>.fits.fz``
(tile-compressed, data in HDU 1) and ``legacysurvey-<brick>-maskbits.fits.fz`` (HDU 1
the optical MASKBITS, HDU 2/3 the WISE masks), https://www.legacysurvey.org/dr10/files/.
"""

import warnings

import numpy as np
import pytest
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import (CCDData, InverseVariance, StdDevUncertainty,
                            VarianceUncertainty)
from astropy.table import QTable, Table
from astropy.wcs import WCS
from photutils.aperture import CircularAperture, aperture_photometry

from astro_sbgm import io
from astro_sbgm.exceptions import AstroSBGMInputWarning
from astro_sbgm.metrics import measure_galaxies
from astro_sbgm.surveys import (DEFAULT_BRICK_MASKBITS, LEGACY_SURVEY_MASKBITS,
                                LEGACY_SURVEY_WISEMASK, CutoutFlag, legacy_survey_cutout_url,
                                make_cutouts, read_legacy_brick)

SCALE = 0.262 / 3600.0
N = 256
BANDS = "grz"
SIGMA = {"g": 0.004, "r": 0.006, "z": 0.015}          # nanomaggy per pixel
#: (x, y) of the mock galaxies in the brick (0-based pixels)
GALAXIES = [(128.0, 128.0), (60.0, 190.0), (200.0, 60.0), (250.0, 128.0)]
BRIGHT_CENTRE, BRIGHT_RADIUS = (200, 60), 10          # a BRIGHT disc on galaxy 2
SATUR_G = (slice(40, 50), slice(150, 160))            # y, x
ALLMASK_R_ROW = 170
NO_COVERAGE = (slice(0, 20), slice(0, 20))            # invvar 0 in every band


def brick_wcs(crval=(150.0, 2.2)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [(N + 1) / 2.0, (N + 1) / 2.0]
    w.wcs.cd = [[-SCALE, 0.0], [0.0, SCALE]]
    return w


def galaxy_image(band, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:N, 0:N]
    img = rng.normal(0.0, SIGMA[band], (N, N))
    for k, (x, y) in enumerate(GALAXIES):
        amp = (1.0 + "grz".index(band)) * (1.0 + 0.3 * k)
        img += amp * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 3.0 ** 2)
    return img.astype(np.float32)


def maskbits_pattern():
    yy, xx = np.mgrid[0:N, 0:N]
    bits = np.zeros((N, N), np.int32)
    bits[np.hypot(xx - BRIGHT_CENTRE[0], yy - BRIGHT_CENTRE[1]) <= BRIGHT_RADIUS] |= 0x2
    bits[SATUR_G] |= 0x4                                      # SATUR_G
    bits[ALLMASK_R_ROW, :] |= 0x40                            # ALLMASK_R
    bits[:, :8] |= 0x1                                        # NPRIMARY (overlap strip)
    bits[230:240, 20:30] |= 0x800                             # MEDIUM
    bits[5:9, 100:110] |= 2 ** 16                             # SUB_BLOB (needs int32)
    return bits


def write_brick(root, brick="1500p022", crval=(150.0, 2.2), bands=BANDS, header_extra=None,
                skip=()):
    """A DR10 coadd brick triplet per band + maskbits, tile-compressed, in coadd/<AAA>/<brick>."""
    d = root / brick[:3] / brick
    d.mkdir(parents=True, exist_ok=True)
    hdr = brick_wcs(crval).to_header()
    hdr["BRICKNAM"] = brick
    for card, value in (header_extra or {}).items():
        hdr[card] = value
    for i, b in enumerate(bands):
        img_hdr = hdr.copy()
        img_hdr["BAND"] = b
        ivar = np.full((N, N), 1.0 / SIGMA[b] ** 2, np.float32)
        ivar[NO_COVERAGE] = 0.0
        for kind, data in (("image", galaxy_image(b, seed=i)), ("invvar", ivar)):
            name = f"legacysurvey-{brick}-{kind}-{b}.fits.fz"
            if name in skip:
                continue
            comp = fits.CompImageHDU(data, header=img_hdr, compression_type="GZIP_2",
                                     quantize_level=0.0)
            fits.HDUList([fits.PrimaryHDU(), comp]).writeto(d / name)
    if "maskbits" not in skip:
        wise = np.zeros((N, N), np.uint8)
        wise[10:20, 200:210] = 0x4                            # GHOST in W1
        fits.HDUList([fits.PrimaryHDU(),
                      fits.CompImageHDU(maskbits_pattern(), header=hdr, name="MASKBITS"),
                      fits.CompImageHDU(wise, header=hdr, name="WISEM1"),
                      fits.CompImageHDU(np.zeros((N, N), np.uint8), header=hdr,
                                        name="WISEM2")]).writeto(
            d / f"legacysurvey-{brick}-maskbits.fits.fz")
    return d


@pytest.fixture
def coadd(tmp_path):
    root = tmp_path / "coadd"
    write_brick(root)
    return root


@pytest.fixture
def brick(coadd):
    return read_legacy_brick(coadd / "150" / "1500p022")


def val(column):
    """Plain float values of a (masked) quantity column or element."""
    column = getattr(column, "unmasked", column)
    return np.asarray(u.Quantity(column).value, dtype=float)


def cube_hdu(values=None, **cards):
    data = np.full((2, 8, 8), 100.0, np.float32) if values is None else values
    hdu = fits.PrimaryHDU(data)
    hdu.header["BAND0"] = "g"
    hdu.header["BAND1"] = "r"
    for k, v in cards.items():
        hdu.header[k] = v
    return hdu


# ============================================================================ 1. flux units
def test_fits_without_bunit_warns_unless_the_unit_is_known(tmp_path):
    with pytest.warns(AstroSBGMInputWarning, match="no BUNIT card.*nanomaggies.*unit="):
        img = io.read_image(cube_hdu())
    assert img.data[0, 0, 0] == 100.0
    path = tmp_path / "nobunit.fits"
    cube_hdu().writeto(path)
    with pytest.warns(AstroSBGMInputWarning, match="no BUNIT card"):
        io.read_image(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        io.read_image(path, unit="nanomaggy")                   # the user said so
        io.read_image(cube_hdu(BUNIT="nanomaggy"))
        io.read_image(cube_hdu(SURVEY="LegacySurvey"))         # cutout-service layout
        io.read_image(cube_hdu(LEGPIPEV="DR10.1.3"))           # a legacypipe product
        io.read_image(np.ones((2, 4, 4)), bands="gr")          # not a FITS header


ZP_CASES = [
    ({"MAGZERO": 30.0}, 30.0),                     # DECam CP / DES coadds
    ({"MAGZP": 26.3}, 26.3),                       # e.g. ZTF science images
    ({"PHOTZP": 28.1}, 28.1),                      # ESO science data products
    ({"FLUXMAG0": 10 ** (27.0 / 2.5)}, 27.0),      # HSC (flux of a 0-mag source)
    ({"MAGZERO": 30.0, "BUNIT": "adu"}, 30.0),
    ({"MAGZP": 25.0, "BUNIT": "electron/s"}, 25.0),
    ({"MAGZERO": 30.0, "FLUXMAG0": 10 ** 12.0}, 30.0),   # two cards that agree
]


@pytest.mark.parametrize("cards, zp", ZP_CASES)
def test_zero_point_cards_convert_counts_to_nanomaggies(cards, zp):
    counts = np.arange(128, dtype=np.float32).reshape(2, 8, 8) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")                         # a zero point: no warning
        img = io.read_image(cube_hdu(counts, **cards))
    expected = counts * 10 ** (-0.4 * (zp - 22.5))
    np.testing.assert_allclose(img.data, expected, rtol=1e-5)
    assert img.unit == u.nanomaggy and img.meta["ZPIN"] == pytest.approx(zp, abs=1e-9)
    # the same zero point given by hand, on a header without one
    np.testing.assert_allclose(io.read_image(counts, bands="gr", zero_point=zp).data,
                               expected, rtol=1e-5)
    # a source of magnitude m: sum(counts) = 10**(-0.4 (m - zp))
    mag = 22.5 - 2.5 * np.log10(img.data[0].sum())
    assert mag == pytest.approx(zp - 2.5 * np.log10(counts[0].sum()), abs=1e-5)


def test_zero_point_output_round_trips_without_the_card(tmp_path):
    img = io.read_image(cube_hdu(MAGZERO=30.0))
    assert "MAGZERO" not in img.meta
    path = io.write_image(img, tmp_path / "out.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = io.read_image(path)                               # no conflict, no warning
    np.testing.assert_array_equal(back.data, img.data)


def test_uncertainty_is_scaled_by_the_zero_point():
    hdul = fits.HDUList([cube_hdu(MAGZERO=25.0),
                         fits.ImageHDU(np.full((2, 8, 8), 10.0, np.float32), name="UNCERT")])
    img = io.read_image(hdul)
    np.testing.assert_allclose(img.uncertainty.array, 10.0 * 10 ** (-0.4 * 2.5), rtol=1e-6)


def test_consistent_unit_and_zero_point_are_accepted():
    # 1 uJy is 23.9 AB: a uJy image with PHOTZP=23.9 is converted once, by its unit
    img = io.read_image(cube_hdu(BUNIT="uJy", PHOTZP=23.9))
    np.testing.assert_allclose(img.data, 100.0 / 3.631, rtol=1e-5)
    img = io.read_image(cube_hdu(BUNIT="nanomaggy", MAGZERO=22.5))
    np.testing.assert_allclose(img.data, 100.0)


@pytest.mark.parametrize("cards, kwargs, match", [
    ({"BUNIT": "nanomaggy", "MAGZERO": 30.0}, {}, r"BUNIT='nanomaggy' and MAGZERO=30 conflict"),
    ({"MAGZERO": 30.0}, {"unit": "nanomaggy"}, r"unit='nmgy' and MAGZERO=30 conflict"),
    ({"BUNIT": "Jy", "FLUXMAG0": 1e10}, {}, r"BUNIT='Jy' and FLUXMAG0=1e\+10 conflict"),
    ({"MAGZERO": 30.0, "FLUXMAG0": 10 ** (27 / 2.5)}, {},
     r"zero points disagree: MAGZERO=30 \(30.000 mag\) but FLUXMAG0=.*27.000"),
    ({"MAGZERO": 30.0}, {"zero_point": 27.0}, r"zero_point=27 disagrees with the header's "
                                              r"MAGZERO=30"),
    ({"FLUXMAG0": -5.0}, {}, r"FLUXMAG0=-5.0 must be a positive flux"),
    ({"MAGZP": "bright"}, {}, r"MAGZP='bright' is not a number"),
])
def test_conflicting_units_and_zero_points_are_refused_by_name(cards, kwargs, match):
    with pytest.raises(ValueError, match=match):
        io.read_image(cube_hdu(**cards), **kwargs)


def test_counts_without_a_zero_point_are_refused():
    with pytest.raises(u.UnitConversionError, match=r"adu cannot be converted.*zero_point="):
        io.read_image(cube_hdu(BUNIT="ADU"))
    with pytest.raises(ValueError, match="zero_point must be an AB magnitude"):
        io.read_image(np.ones((1, 3, 3)), bands="g", zero_point="deep")


# ============================================================================ 2. uncertainties
@pytest.mark.parametrize("utype, stored", [
    ("StdDevUncertainty", 0.5), ("VarianceUncertainty", 0.25), ("InverseVariance", 4.0),
    (None, 0.5),                                     # no UTYPE: a standard deviation
    ("astropy.nddata.nduncertainty.VarianceUncertainty", 0.25),
])
def test_uncert_extension_is_read_by_its_utype(utype, stored):
    unc = fits.ImageHDU(np.full((2, 8, 8), stored, np.float32), name="UNCERT")
    if utype is not None:
        unc.header["UTYPE"] = utype
    img = io.read_image(fits.HDUList([cube_hdu(BUNIT="nanomaggy"), unc]))
    assert isinstance(img.uncertainty, StdDevUncertainty)
    np.testing.assert_allclose(img.uncertainty.array, 0.5, rtol=1e-6)


@pytest.mark.parametrize("cls, values", [(StdDevUncertainty, 0.5), (VarianceUncertainty, 0.25),
                                         (InverseVariance, 4.0)])
def test_ccddata_files_of_each_uncertainty_class(tmp_path, cls, values):
    """CCDData.write's own layout (UNCERT extension with UTYPE) reads back as a std."""
    ccd = CCDData(np.ones((2, 6, 6)), unit="nanomaggy", meta={"BANDS": "g,r"},
                  uncertainty=cls(np.full((2, 6, 6), values)))
    ccd.write(tmp_path / "c.fits")
    with fits.open(tmp_path / "c.fits") as hdul:
        assert hdul["UNCERT"].header["UTYPE"] == cls.__name__
    img = io.read_image(tmp_path / "c.fits")
    np.testing.assert_allclose(img.uncertainty.array, 0.5, rtol=1e-6)
    inv = fits.HDUList([cube_hdu(BUNIT="nanomaggy"),
                        fits.ImageHDU(np.zeros((2, 8, 8), np.float32), name="UNCERT")])
    inv["UNCERT"].header["UTYPE"] = "InverseVariance"
    assert np.isinf(io.read_image(inv).uncertainty.array).all()   # ivar 0: no data


def cutout_service_hdul(sigma=(0.5, 0.25, 1.0), size=8, no_data=(slice(0, 2), slice(0, 3))):
    """A cube as the viewer's fits-cutout writes it with ``&invvar``: HDU 0 the image
    (IMAGETYP='IMAGE'), HDU 1 the inverse variances under the same header
    (IMAGETYP='INVVAR', no EXTNAME), BANDS='grz' and BAND0..2, SURVEY='DECaLS',
    VERSION, a TAN WCS with IMAGEW/IMAGEH, no BUNIT; invvar 0 where nothing was observed."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [(size + 1) / 2.0, (size + 1) / 2.0]
    w.wcs.cd = [[-SCALE, 0.0], [0.0, SCALE]]
    hdr = w.to_header()
    hdr["SURVEY"] = "DECaLS"
    hdr["VERSION"] = "DR10"
    hdr["BANDS"] = "grz"
    for i, b in enumerate("grz"):
        hdr[f"BAND{i}"] = b
    hdr["IMAGEW"], hdr["IMAGEH"] = size, size
    image = np.stack([np.full((size, size), 1.0 + i, np.float32) for i in range(3)])
    ivar = np.stack([np.full((size, size), 1.0 / s ** 2, np.float32) for s in sigma])
    ivar[(slice(None),) + no_data] = 0.0
    image[(slice(None),) + no_data] = 0.0
    hdr["IMAGETYP"] = "IMAGE"
    primary = fits.PrimaryHDU(image, header=hdr.copy())
    hdr["IMAGETYP"] = "INVVAR"
    return fits.HDUList([primary, fits.ImageHDU(ivar, header=hdr)])


def test_cutout_service_file_with_invvar_gives_an_uncertainty(tmp_path):
    path = tmp_path / "cutout_150.1000_2.2000.fits"
    cutout_service_hdul().writeto(path)
    with open(path, "rb") as f:
        before = f.read()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # SURVEY='DECaLS': nanomaggies
        img = io.read_image(path)
    assert img.shape == (3, 8, 8) and img.meta["BANDS"] == "g,r,z"
    assert img.wcs is not None and img.unit == u.nanomaggy
    assert isinstance(img.uncertainty, StdDevUncertainty)
    covered = np.ones((8, 8), bool)
    covered[0:2, 0:3] = False
    for k, sigma in enumerate((0.5, 0.25, 1.0)):
        np.testing.assert_allclose(img.uncertainty.array[k][covered], sigma, rtol=1e-6)
        np.testing.assert_array_equal(img.data[k][covered], 1.0 + k)
    # invvar 0 (no coverage): infinite sigma and masked, as read_legacy_brick does
    assert np.isinf(img.uncertainty.array[:, ~covered]).all()
    np.testing.assert_array_equal(img.mask, np.broadcast_to(~covered, (3, 8, 8)))
    with open(path, "rb") as f:
        assert f.read() == before
    # the errors of measure_galaxies come from it
    cat = measure_galaxies(img, aperture_diameter=2, background=0.0)
    assert val(cat["flux_err_r"][0]) == pytest.approx(0.25 * np.sqrt(np.pi), rel=1e-6)
    # an HDUList in memory; one band (2-D planes); an explicit EXTNAME
    hdul = cutout_service_hdul()
    assert io.read_image(hdul).uncertainty.array[1, 5, 5] == pytest.approx(0.25)
    one = fits.HDUList([fits.PrimaryHDU(h.data[1], header=h.header) for h in hdul[:1]]
                       + [fits.ImageHDU(hdul[1].data[1], header=hdul[1].header)])
    for h in one:
        h.header["BANDS"] = "r"
        for key in ("BAND0", "BAND1", "BAND2"):
            del h.header[key]
    assert io.read_image(one).uncertainty.array[0, 5, 5] == pytest.approx(0.25)
    named = fits.HDUList([fits.PrimaryHDU(hdul[0].data, header=hdul[0].header),
                          fits.ImageHDU(hdul[1].data, name="IVAR")])
    del named[0].header["IMAGETYP"]
    assert io.read_image(named).uncertainty.array[2, 5, 5] == pytest.approx(1.0)
    # an UNCERT extension, the package's own layout, wins
    unc = fits.ImageHDU(np.full((3, 8, 8), 7.0, np.float32), name="UNCERT")
    assert io.read_image(fits.HDUList(list(hdul) + [unc])).uncertainty.array[0, 5, 5] == 7.0


def test_cutout_service_invvar_of_another_shape_or_negative_is_refused():
    hdul = cutout_service_hdul()
    bad = fits.HDUList([hdul[0], fits.ImageHDU(hdul[1].data[:2], header=hdul[1].header)])
    with pytest.raises(ValueError, match=r"inverse-variance HDU 1 has shape \(2, 8, 8\) but "
                                         r"the image \(3, 8, 8\)"):
        io.read_image(bad)
    neg = cutout_service_hdul()
    neg[1].data[0, 4, 4] = -1.0
    with pytest.raises(ValueError, match="inverse-variance HDU 1 holds negative values"):
        io.read_image(neg)


def test_unknown_utype_and_negative_variance_are_refused():
    unc = fits.ImageHDU(np.ones((2, 8, 8), np.float32), name="UNCERT")
    unc.header["UTYPE"] = "ConfidenceInterval"
    with pytest.raises(ValueError, match="UTYPE='ConfidenceInterval'.*VarianceUncertainty"):
        io.read_image(fits.HDUList([cube_hdu(BUNIT="nanomaggy"), unc]))
    unc = fits.ImageHDU(-np.ones((2, 8, 8), np.float32), name="UNCERT")
    unc.header["UTYPE"] = "VarianceUncertainty"
    with pytest.raises(ValueError, match="negative variance"):
        io.read_image(fits.HDUList([cube_hdu(BUNIT="nanomaggy"), unc]))


# ============================================================================ 3. mask bits
def test_maskbits_definitions_follow_the_dr10_documentation():
    expected = ["NPRIMARY", "BRIGHT", "SATUR_G", "SATUR_R", "SATUR_Z", "ALLMASK_G",
                "ALLMASK_R", "ALLMASK_Z", "WISEM1", "WISEM2", "BAILOUT", "MEDIUM", "GALAXY",
                "CLUSTER", "SATUR_I", "ALLMASK_I", "SUB_BLOB"]
    assert list(LEGACY_SURVEY_MASKBITS) == expected
    assert list(LEGACY_SURVEY_MASKBITS.values()) == [2 ** k for k in range(17)]
    assert LEGACY_SURVEY_WISEMASK["GHOST"] == 4 and LEGACY_SURVEY_WISEMASK["SPIKE2"] == 128
    assert set(DEFAULT_BRICK_MASKBITS) <= set(LEGACY_SURVEY_MASKBITS)


def test_read_mask_selects_bits_by_name_and_value(coadd):
    path = coadd / "150" / "1500p022" / "legacysurvey-1500p022-maskbits.fits.fz"
    bits = maskbits_pattern()
    yy, xx = np.mgrid[0:N, 0:N]
    disc = np.hypot(xx - BRIGHT_CENTRE[0], yy - BRIGHT_CENTRE[1]) <= BRIGHT_RADIUS
    np.testing.assert_array_equal(io.read_mask(path, bits=["BRIGHT"]), disc)
    np.testing.assert_array_equal(io.read_mask(path, bits=["bright"]), disc)   # any case
    np.testing.assert_array_equal(io.read_mask(path, bits=0x2), disc)          # by value
    both = io.read_mask(path, bits=["BRIGHT", 0x4])
    np.testing.assert_array_equal(both, disc | ((bits & 0x4) != 0))
    np.testing.assert_array_equal(io.read_mask(path, bits=["SUB_BLOB"]), (bits & 2 ** 16) != 0)
    np.testing.assert_array_equal(io.read_mask(path), bits != 0)               # any bit
    # per band: SATUR_G masks g only, ALLMASK_R r only, BRIGHT every band
    per = io.read_mask(path, bits=["BRIGHT", "SATUR_G", "ALLMASK_R"], bands="grz")
    assert per.shape == (3, N, N)
    assert per[0][SATUR_G].all() and not per[1][SATUR_G].any() and not per[2][SATUR_G].any()
    assert per[1][ALLMASK_R_ROW, 50] and not per[0][ALLMASK_R_ROW, 50]
    assert all(per[k][disc].all() for k in range(3))
    # the WISE masks in HDU 2, with their own names
    wise = io.read_mask(path, bits=["GHOST"], hdu=2, definitions=LEGACY_SURVEY_WISEMASK)
    assert wise.sum() == 100 and wise[15, 205]


def test_read_mask_refuses_unknown_bits_by_name(coadd):
    path = coadd / "150" / "1500p022" / "legacysurvey-1500p022-maskbits.fits.fz"
    with pytest.raises(ValueError, match=r"unknown mask bit 'BRIGTH'.*BRIGHT.*SATUR_G"):
        io.read_mask(path, bits=["BRIGHT", "BRIGTH"])
    with pytest.raises(ValueError, match="positive integer"):
        io.read_mask(path, bits=[-4])
    with pytest.raises(ValueError, match="hdu=7 is not in the mask file"):
        io.read_mask(path, hdu=7)
    with pytest.raises(ValueError, match="integer bit-mask image"):
        io.read_mask(np.ones((4, 4)), bits=["BRIGHT"])
    with pytest.raises(FileNotFoundError, match="no such mask file"):
        io.read_mask(path.with_name("nope.fits.fz"))


# ============================================================================ 4. bricks
def test_read_legacy_brick_builds_one_canonical_image(coadd, brick):
    assert brick.shape == (3, N, N) and brick.unit == u.nanomaggy
    assert brick.meta["BANDS"] == "g,r,z" and brick.meta["BRICKNAM"] == "1500p022"
    for i, b in enumerate(BANDS):
        np.testing.assert_allclose(brick.data[i], galaxy_image(b, seed=i), rtol=1e-6)
    # the WCS of the files: the brick centre at the reference pixel
    centre = brick.wcs.pixel_to_world((N - 1) / 2.0, (N - 1) / 2.0)
    assert centre.ra.deg == pytest.approx(150.0) and centre.dec.deg == pytest.approx(2.2)
    # uncertainty = 1 / sqrt(invvar), infinite (and masked) where the invvar is 0
    sigma = brick.uncertainty.array
    assert isinstance(brick.uncertainty, StdDevUncertainty)
    for i, b in enumerate(BANDS):
        np.testing.assert_allclose(sigma[i, 100:110, 100:110], SIGMA[b], rtol=1e-5)
    assert np.isinf(sigma[:, NO_COVERAGE[0], NO_COVERAGE[1]]).all()
    assert brick.mask[:, NO_COVERAGE[0], NO_COVERAGE[1]].all()
    # mask bits: BRIGHT in every band, SATUR_G in g only, ALLMASK_R in r only
    assert brick.mask[:, BRIGHT_CENTRE[1], BRIGHT_CENTRE[0]].all()
    assert brick.mask[0][SATUR_G].all() and not brick.mask[1:, 40:50, 150:160].any()
    assert brick.mask[1, ALLMASK_R_ROW, 128] and not brick.mask[[0, 2], ALLMASK_R_ROW, 128].any()
    # NPRIMARY, MEDIUM and SUB_BLOB are not masked by default, but kept in .flags
    assert not brick.mask[:, 128, 3].any() and not brick.mask[:, 235, 25].any()
    np.testing.assert_array_equal(brick.flags[1], maskbits_pattern())
    assert brick.meta["MASKSEL"] == ",".join(DEFAULT_BRICK_MASKBITS)


def test_read_legacy_brick_from_the_coadd_root_and_other_bits(coadd):
    again = read_legacy_brick(coadd, brick="1500p022", mask_bits=["NPRIMARY"], bands="zg")
    assert again.meta["BANDS"] == "z,g"
    assert again.mask[:, 128, 3].all() and not again.mask[:, BRIGHT_CENTRE[1],
                                                          BRIGHT_CENTRE[0]].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # documented unit: no warning
        read_legacy_brick(coadd / "150" / "1500p022")


def test_read_legacy_brick_refuses_missing_files_by_name(tmp_path):
    write_brick(tmp_path / "a", skip=("legacysurvey-1500p022-invvar-r.fits.fz",))
    with pytest.raises(FileNotFoundError, match=r"r-band inverse variance of brick 1500p022 "
                                                r"\(legacysurvey-1500p022-invvar-r.fits.fz\)"):
        read_legacy_brick(tmp_path / "a", brick="1500p022")
    assert read_legacy_brick(tmp_path / "a", brick="1500p022", bands="gz").shape == (2, N, N)
    write_brick(tmp_path / "b", skip=("maskbits",))
    with pytest.raises(FileNotFoundError, match="maskbits file of brick 1500p022.*mask_bits=None"):
        read_legacy_brick(tmp_path / "b" / "150" / "1500p022")
    img = read_legacy_brick(tmp_path / "b" / "150" / "1500p022", mask_bits=None)
    assert img.meta["MASKSEL"] == "none" and not img.flags.any()
    with pytest.raises(FileNotFoundError, match="i-band image of brick 1500p022"):
        read_legacy_brick(tmp_path / "b" / "150" / "1500p022", bands="gri", mask_bits=None)
    with pytest.raises(ValueError, match=r"unknown mask bit 'STAR'"):
        read_legacy_brick(tmp_path / "a" / "150" / "1500p022", bands="g", mask_bits=["STAR"])


def test_read_legacy_brick_refuses_ambiguous_or_bad_input(tmp_path):
    flat = tmp_path / "flat"
    for brick, crval in (("1500p022", (150.0, 2.2)), ("1502p022", (150.25, 2.2))):
        d = write_brick(tmp_path / "x", brick=brick, crval=crval)
        flat.mkdir(exist_ok=True)
        for f in d.iterdir():
            (flat / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ValueError, match=r"several bricks \['1500p022', '1502p022'\].*brick="):
        read_legacy_brick(flat)
    assert read_legacy_brick(flat, brick="1502p022").meta["BRICKNAM"] == "1502p022"
    with pytest.raises(ValueError, match="brick='150p22' is not a Legacy Survey brick name"):
        read_legacy_brick(flat, brick="150p22")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        read_legacy_brick(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no Legacy Survey brick image"):
        read_legacy_brick(tmp_path)


# ============================================================================ 5. cutouts
def catalogue():
    w = brick_wcs()
    cat = Table()
    pos = GALAXIES + [(N + 40.0, 10.0)]                      # the last one is off the brick
    sky = w.pixel_to_world([p[0] for p in pos], [p[1] for p in pos])
    cat["RA"] = sky.ra.deg
    cat["DEC"] = sky.dec.deg
    cat["objid"] = np.arange(len(pos)) + 100
    return cat


def test_make_cutouts_flags_every_source_and_drops_none(brick):
    cutouts, index = make_cutouts(catalogue(), brick, size=64, id_column="objid")
    assert len(index) == 5 and list(index["row"]) == [0, 1, 2, 3, 4]
    assert list(index["objid"]) == [100, 101, 102, 103, 104]
    assert len(cutouts) == 4 and list(index["cutout"]) == [0, 1, 2, 3, -1]
    flags = [CutoutFlag(int(f)) for f in index["flags"]]
    assert flags[0] == CutoutFlag(0)                                    # clean, centre
    assert CutoutFlag.MASKED_PIXELS in flags[1]                          # ALLMASK_R row
    assert CutoutFlag.MASKED_CENTRE not in flags[1]
    assert CutoutFlag.MASKED_CENTRE in flags[2]                          # on the BRIGHT disc
    assert index["maskbits"][2] & LEGACY_SURVEY_MASKBITS["BRIGHT"]
    assert CutoutFlag.PARTIAL in flags[3]                                # at the brick edge
    assert flags[4] == CutoutFlag.OFF_IMAGE and index["image"][4] == -1
    assert np.isnan(index["x_image"][4])
    for cut, row in zip(cutouts, index[:4]):
        assert cut.shape == (3, 64, 64) and cut.meta["BANDS"] == "g,r,z"
        assert cut.unit == u.nanomaggy and isinstance(cut.uncertainty, StdDevUncertainty)
        # the source sits at (x_cutout, y_cutout) of the cutout's own WCS
        x, y = cut.wcs.world_to_pixel(SkyCoord(row["ra"], row["dec"]))
        assert x == pytest.approx(row["x_cutout"].value, abs=1e-6)
        assert y == pytest.approx(row["y_cutout"].value, abs=1e-6)
        assert abs(x - 31.5) <= 0.5 and abs(y - 31.5) <= 0.5
        assert cut.meta["OBJID"] == row["objid"] and cut.meta["CUTFLAGS"] == row["flags"]
    # the pixels are the brick's: the first cutout is the brick's 96:160 square
    np.testing.assert_array_equal(cutouts[0].data, brick.data[:, 96:160, 96:160])
    np.testing.assert_array_equal(cutouts[0].uncertainty.array,
                                  brick.uncertainty.array[:, 96:160, 96:160])
    # the edge cutout: the part beyond the brick is 0, masked and of infinite sigma
    edge = cutouts[3]
    beyond = edge.mask.all(axis=(0, 1))
    assert beyond.sum() == 64 - (N - 218) and (edge.data[:, :, beyond] == 0).all()
    assert np.isinf(edge.uncertainty.array[:, :, beyond]).all()
    assert index["masked_fraction"][3] == pytest.approx(beyond.mean(), abs=0.02)


def test_make_cutouts_inputs_skycoord_units_and_refusals(brick):
    cat = catalogue()
    sky = SkyCoord(cat["RA"], cat["DEC"], unit="deg")
    cut_a, idx_a = make_cutouts(sky, [brick], size=32)
    cut_b, idx_b = make_cutouts(QTable({"ra": cat["RA"] * u.deg,
                                        "dec": (cat["DEC"] * u.deg).to(u.arcmin)}), brick,
                                size=32)
    np.testing.assert_array_equal(idx_a["flags"], idx_b["flags"])
    np.testing.assert_array_equal(cut_a[0].data, cut_b[0].data)
    assert cut_a[0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"no DEC column.*\['RA', 'objid'\].*dec="):
        make_cutouts(cat[["RA", "objid"]], brick)
    with pytest.raises(ValueError, match="ra='alpha' is not a column"):
        make_cutouts(cat, brick, ra="alpha")
    with pytest.raises(ValueError, match="size must be a positive number of pixels"):
        make_cutouts(cat, brick, size=0)
    with pytest.raises(ValueError, match="the catalogue is empty"):
        make_cutouts(cat[:0], brick)
    with pytest.raises(ValueError, match="id_column='name' is not a column"):
        make_cutouts(cat, brick, id_column="name")


def test_make_cutouts_chooses_the_brick_that_holds_the_source(tmp_path):
    write_brick(tmp_path, brick="1500p022")
    east = brick_wcs().pixel_to_world((N - 1) / 2.0 + 200, (N - 1) / 2.0)   # 200 px along x
    write_brick(tmp_path, brick="1502p022", crval=(east.ra.deg, east.dec.deg))
    a = read_legacy_brick(tmp_path, brick="1500p022")
    b = read_legacy_brick(tmp_path, brick="1502p022")
    # galaxy 3 sits at x=250 of brick a, near its edge, and at x=50 of brick b
    _, index = make_cutouts(catalogue()[3:4], [a, b], size=64)
    assert index["image"][0] == 1 and index["flags"][0] & CutoutFlag.PARTIAL == 0
    assert index["x_image"][0].value == pytest.approx(50.0, abs=0.05)


def test_make_cutouts_writes_files_and_refuses_to_overwrite(tmp_path, brick):
    out = tmp_path / "cutouts"
    cutouts, index = make_cutouts(catalogue(), brick, size=48, output=out)
    assert list(index["file"]) == [f"cutout_{i:06d}.fits" for i in range(4)] + [""]
    written = QTable.read(out / "index.ecsv")
    np.testing.assert_array_equal(written["flags"], index["flags"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = io.read_image(out / "cutout_000001.fits")
    np.testing.assert_array_equal(back.data, cutouts[1].data)
    np.testing.assert_array_equal(back.mask, cutouts[1].mask)
    np.testing.assert_allclose(back.uncertainty.array, cutouts[1].uncertainty.array)
    assert back.meta["CATROW"] == 1
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True.*nothing was written"):
        make_cutouts(catalogue(), brick, size=32, output=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    make_cutouts(catalogue(), brick, size=32, output=out, overwrite=True)
    assert io.read_image(out / "cutout_000000.fits").shape == (3, 32, 32)


def test_cutout_service_address():
    url = legacy_survey_cutout_url(150.123456789, -2.5, size=256, layer="ls-dr9", bands="gz")
    assert url == ("https://www.legacysurvey.org/viewer/fits-cutout?ra=150.123456789&dec=-2.5"
                   "&layer=ls-dr9&pixscale=0.262&size=256&bands=gz")
    with pytest.raises(ValueError, match=r"\|dec\| <= 90"):
        legacy_survey_cutout_url(10.0, 95.0)
    with pytest.raises(ValueError, match="size must be a positive"):
        legacy_survey_cutout_url(10.0, 5.0, size=0)


def test_make_cutouts_old_spelling_centre_radius_works_and_warns(brick):
    from astro_sbgm.exceptions import AstroSBGMDeprecationWarning

    _, new = make_cutouts(catalogue()[:3], brick, size=32, center_radius=20.0)
    with pytest.warns(AstroSBGMDeprecationWarning, match="centre_radius.*center_radius"):
        _, old = make_cutouts(catalogue()[:3], brick, size=32, centre_radius=20.0)
    assert old.meta["CENTRAD"] == new.meta["CENTRAD"] == 20.0
    assert list(old["flags"]) == list(new["flags"])


# ============================================================================ errors
def test_measure_galaxies_errors_from_the_uncertainty_match_photutils(brick):
    cutouts, index = make_cutouts(catalogue()[:2], brick, size=64)
    cat = measure_galaxies(cutouts)
    assert cat.meta["ERRORS"].startswith("image uncertainty")
    for col, unit in (("flux_err_g", u.nanomaggy), ("mag_err_r", u.mag), ("g_r_err", u.mag),
                      ("r_z_err", u.mag)):
        assert col in cat.colnames and cat[col].unit == unit
    # photutils' aperture_photometry with error= on the background-subtracted cutout
    for i, cut in enumerate(cutouts):
        for k, b in enumerate(BANDS):
            sub = cut.data[k] - cat[f"background_{b}"][i].value
            ap = CircularAperture((31.5, 31.5), r=6.0)
            ref = aperture_photometry(sub, ap, error=cut.uncertainty.array[k],
                                      method="exact")
            assert val(cat[f"flux_{b}"][i]) == pytest.approx(ref["aperture_sum"][0], rel=1e-6)
            ref_err = ref["aperture_sum_err"][0]
            assert val(cat[f"flux_err_{b}"][i]) == pytest.approx(ref_err, rel=1e-6)
    # sigma = sqrt(pi 6^2) sigma_pix for a flat sigma; mag and colour errors propagate
    area = np.pi * 36.0
    assert val(cat["flux_err_z"][0]) == pytest.approx(SIGMA["z"] * np.sqrt(area), rel=1e-4)
    mag_err = 2.5 / np.log(10) * val(cat["flux_err_g"]) / val(cat["flux_g"])
    np.testing.assert_allclose(val(cat["mag_err_g"]), mag_err, rtol=1e-9)
    np.testing.assert_allclose(val(cat["g_r_err"]),
                               np.hypot(val(cat["mag_err_g"]), val(cat["mag_err_r"])),
                               rtol=1e-9)


def test_error_columns_leave_the_other_columns_unchanged(brick):
    cutouts, _ = make_cutouts(catalogue()[:3], brick, size=64)
    bare = [CCDData(c.data, unit=c.unit, wcs=c.wcs, mask=c.mask, meta=c.meta)
            for c in cutouts]
    plain = measure_galaxies(bare)                       # no uncertainty: no error columns
    with_err = measure_galaxies(cutouts)
    assert not any("err" in c for c in plain.colnames) and "ERRORS" not in plain.meta
    assert with_err.colnames[:len(plain.colnames)] == plain.colnames
    for col in plain.colnames:
        np.testing.assert_array_equal(np.asarray(with_err[col]), np.asarray(plain[col]))
    none = measure_galaxies(cutouts, errors=None)
    assert none.colnames == plain.colnames
    # a masked centre (the BRIGHT disc): flux and its errors are masked together
    assert with_err["flux_g"].mask[2] and with_err["flux_err_g"].mask[2]
    assert with_err["g_r_err"].mask[2]


def test_sky_errors_for_arrays_and_refusals():
    rng = np.random.default_rng(3)
    arr = rng.normal(0.0, 0.01, (20, 3, 48, 48))
    arr[:, :, 20:28, 20:28] += 0.5
    cat = measure_galaxies(arr, bands="grz", errors="sky")
    assert cat.meta["ERRORS"].startswith("frame sky sigma")
    expected = 0.01 * np.sqrt(np.pi * 36)
    assert np.median(val(cat["flux_err_r"])) == pytest.approx(expected, rel=0.1)
    assert "flux_err_r" not in measure_galaxies(arr, bands="grz").colnames
    with pytest.raises(ValueError, match="errors='uncertainty' needs images that carry"):
        measure_galaxies(arr, bands="grz", errors="uncertainty")
    with pytest.raises(ValueError, match="errors must be 'auto', 'uncertainty', 'sky' or None"):
        measure_galaxies(arr, bands="grz", errors="poisson")
    ccd = [CCDData(a, unit="nanomaggy", meta={"BANDS": "g,r,z"}) for a in arr[:2]]
    with pytest.raises(ValueError, match=r"needs an uncertainty on every image, but 2 of 2"):
        measure_galaxies(ccd, errors="uncertainty")


# ============================================================================ inpainting by bits
def small_maskbits(size=16):
    """BRIGHT block, SATUR_G patch, ALLMASK_R row, NPRIMARY column (never asked for)."""
    bits = np.zeros((size, size), np.int32)
    bits[2:5, 3:9] |= LEGACY_SURVEY_MASKBITS["BRIGHT"]
    bits[10:12, 2:6] |= LEGACY_SURVEY_MASKBITS["SATUR_G"]
    bits[13, :] |= LEGACY_SURVEY_MASKBITS["ALLMASK_R"]
    bits[:, 0] |= LEGACY_SURVEY_MASKBITS["NPRIMARY"]
    return bits


def expected_fill(bits, names):
    """(band, y, x) pixels to fill for bits ``names`` of a grz image, per band."""
    fill = np.zeros((3,) + bits.shape, bool)
    for name in names:
        value = LEGACY_SURVEY_MASKBITS[name]
        band = name.rsplit("_", 1)[1].lower() if name.startswith(("SATUR_", "ALLMASK_")) \
            else None
        for k, b in enumerate("grz"):
            if band in (None, b):
                fill[k] |= (bits & value) != 0
    return fill


@pytest.fixture(scope="module")
def blob():
    from astro_sbgm.datasets import make_trivial_dataset
    return make_trivial_dataset(1, size=16, seed=7)[0]


def test_inpaint_fills_the_pixels_of_the_named_mask_bits(model, blob, tmp_path):
    bits = small_maskbits()
    want = expected_fill(bits, ["BRIGHT", "SATUR_G"])
    out = model.inpaint(blob, mask=bits, mask_bits=("BRIGHT", "SATUR_G"), seed=0)
    np.testing.assert_array_equal(out.flags.astype(bool), want)      # SATUR_G: g only
    np.testing.assert_array_equal(out.data[~want], blob.data[~want])
    assert out.meta["NFILLED"] == want.sum()
    # a maskbits file (tile-compressed, the MASKBITS plane in HDU 1), names in any case
    path = tmp_path / "legacysurvey-0001p000-maskbits.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(bits, name="MASKBITS")]).writeto(path)
    from_file = model.inpaint(blob, mask=path, mask_bits=["bright", "satur_g"], seed=0)
    np.testing.assert_array_equal(from_file.data, out.data)
    # integer values are bits too; per-band bits of bands the image lacks mask nothing
    by_value = model.inpaint(blob, mask=bits, mask_bits=[0x40, "SATUR_I"], seed=0)
    np.testing.assert_array_equal(by_value.flags.astype(bool),
                                  np.broadcast_to((bits & 0x40) != 0, (3, 16, 16)))
    # without mask_bits every non-zero pixel is filled, as before
    plain = model.inpaint(blob, mask=(bits & 0x2) != 0, seed=0)
    np.testing.assert_array_equal(plain.flags.astype(bool),
                                  np.broadcast_to((bits & 0x2) != 0, (3, 16, 16)))


def test_inpaint_refuses_unknown_mask_bits_by_name(model, blob):
    bits = small_maskbits()
    with pytest.raises(ValueError, match=r"unknown mask bit 'BRIGTH'.*BRIGHT, SATUR_G"):
        model.inpaint(blob, mask=bits, mask_bits=("BRIGTH", "SATUR_G"))
    with pytest.raises(ValueError, match="no mask was given"):
        model.inpaint(blob, mask_bits=["BRIGHT"])
    with pytest.raises(ValueError, match="mask_bits is empty"):
        model.inpaint(blob, mask=bits, mask_bits=[])
    with pytest.raises(ValueError, match="integer bit-mask image"):
        model.inpaint(blob, mask=bits.astype(float), mask_bits=["BRIGHT"])
    with pytest.raises(ValueError, match=r"the mask has shape \(8, 8\)"):
        model.inpaint(blob, mask=bits[:8, :8], mask_bits=["BRIGHT"])


def test_cli_inpaint_mask_bits(model, blob, tmp_path, capsys):
    from astro_sbgm.cli import main

    mdir = tmp_path / "model"
    model.save(mdir)
    src = io.write_image(blob, tmp_path / "in.fits")
    mpath = tmp_path / "maskbits.fits.fz"
    bits = small_maskbits()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(bits, name="MASKBITS")]).writeto(mpath)
    common = [str(src), "--mask", str(mpath), "--model", str(mdir), "--seed", "0",
              "--device", "cpu"]
    out = tmp_path / "out.fits"
    assert main(["inpaint", *common, "--mask-bits", "BRIGHT,satur_g", "-o", str(out)]) == 0
    with fits.open(out) as hdul:
        np.testing.assert_array_equal(hdul["FLAGS"].data.astype(bool),
                                      expected_fill(bits, ["BRIGHT", "SATUR_G"]))
    capsys.readouterr()
    bad = tmp_path / "bad.fits"
    assert main(["inpaint", *common, "--mask-bits", "BRIGHT,BRIGTH", "-o", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("astro-sbgm inpaint: error: --mask-bits BRIGHT,BRIGTH: unknown mask "
                          "bit 'BRIGTH'; the Legacy Survey MASKBITS bits are NPRIMARY, BRIGHT")
    assert not bad.exists()
    argv = ["inpaint", str(src), "--model", str(mdir), "--mask-bits", "BRIGHT", "-o", str(bad)]
    assert main(argv) == 2
    assert "--mask-bits selects bits of the bit mask given with --mask" in capsys.readouterr().err


# ============================================================================ sky positions
def test_measure_galaxies_reports_the_sky_centroid(brick):
    cutouts, index = make_cutouts(catalogue()[:3], brick, size=64)
    centres = np.column_stack([index["x_cutout"].value, index["y_cutout"].value])
    cat = measure_galaxies(cutouts, center=centres)
    sky = cat["sky_centroid"]
    assert isinstance(sky, SkyCoord) and cat.colnames[:3] == ["x_centre", "y_centre",
                                                              "sky_centroid"]
    # the sources' own positions, through each cutout's WCS
    source = SkyCoord(index["ra"], index["dec"])
    assert source.separation(sky).to_value(u.arcsec).max() < 1e-6
    for i, cut in enumerate(cutouts):
        x, y = val(cat["x_centre"][i]), val(cat["y_centre"][i])
        assert cut.wcs.pixel_to_world(x, y).separation(sky[i]).to_value(u.arcsec) < 1e-6
    # the other columns are those of the same images without a WCS
    bare = [CCDData(c.data, unit=c.unit, mask=c.mask, uncertainty=c.uncertainty, meta=c.meta)
            for c in cutouts]
    plain = measure_galaxies(bare, center=centres, pixel_scale=SCALE * 3600)
    assert "sky_centroid" not in plain.colnames
    assert [c for c in cat.colnames if c != "sky_centroid"] == plain.colnames
    for col in plain.colnames:
        np.testing.assert_allclose(val(cat[col]), val(plain[col]), rtol=1e-12, atol=0)
    # a centroid is reported where it was measured; a galactic WCS lands in the first frame
    moved = measure_galaxies(cutouts[:1], center="centroid")
    assert cutouts[0].wcs.pixel_to_world(val(moved["x_centre"][0]), val(
        moved["y_centre"][0])).separation(moved["sky_centroid"][0]).to_value(u.arcsec) < 1e-6
    gal = WCS(naxis=2)
    gal.wcs.ctype = ["GLON-TAN", "GLAT-TAN"]
    gal.wcs.crval = [120.0, 30.0]
    gal.wcs.crpix = [32.5, 32.5]
    gal.wcs.cd = [[-SCALE, 0.0], [0.0, SCALE]]
    other = CCDData(cutouts[0].data, unit=u.nanomaggy, wcs=gal, meta=cutouts[0].meta)
    nowcs = CCDData(cutouts[0].data, unit=u.nanomaggy, meta=cutouts[0].meta)
    mixed = measure_galaxies([cutouts[0], other, nowcs])
    assert mixed["sky_centroid"].frame.name == "icrs"
    assert gal.pixel_to_world(31.5, 31.5).separation(
        mixed["sky_centroid"][1]).to_value(u.arcsec) < 1e-6
    assert np.isnan(mixed["sky_centroid"][2].ra.deg)
    # bare arrays have no sky position; the column survives ECSV
    assert "sky_centroid" not in measure_galaxies(np.ones((1, 3, 32, 32)), bands="grz",
                                                  background=0).colnames


def test_measure_galaxies_sky_centroid_round_trips_through_ecsv(brick, tmp_path):
    cutouts, _ = make_cutouts(catalogue()[:2], brick, size=64)
    cat = measure_galaxies(cutouts)
    cat.write(tmp_path / "cat.ecsv")
    back = QTable.read(tmp_path / "cat.ecsv")
    assert back["sky_centroid"].separation(cat["sky_centroid"]).to_value(u.arcsec).max() < 1e-9


def test_measure_galaxies_angular_aperture():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:48, 0:48]
    arr = np.exp(-0.5 * ((xx - 23.5) ** 2 + (yy - 23.5) ** 2) / 4.0 ** 2)
    arr = np.stack([arr * (1 + k) for k in range(3)])[None] + rng.normal(0, 0.01, (2, 3, 48, 48))
    # bare arrays: pixel_scale= converts, 3 arcsec at 0.5"/px is 6 px
    ang = measure_galaxies(arr, bands="grz", aperture_diameter=3 * u.arcsec, pixel_scale=0.5)
    pix = measure_galaxies(arr, bands="grz", aperture_diameter=6, pixel_scale=0.5)
    for col in pix.colnames:
        np.testing.assert_array_equal(val(ang[col]), val(pix[col]))
    assert ang.meta["APERDIAM"] == 6.0 and ang.meta["APERARC"] == 3.0
    assert "APERARC" not in pix.meta and pix.meta["APERDIAM"] == 6.0
    # images with WCSs of two pixel scales: one circle on the sky, two in pixels
    ccds = [CCDData(a, unit=u.nanomaggy, meta={"BANDS": "g,r,z"},
                    wcs=io.make_tan_wcs((48, 48), scale * u.arcsec))
            for a, scale in zip(arr, (0.25, 0.5))]
    both = measure_galaxies(ccds, aperture_diameter=4 * u.arcsec)
    assert both.meta["APERDIAM"] == "varies" and both.meta["APERARC"] == 4.0
    for i, diameter in enumerate((16, 8)):
        alone = measure_galaxies(ccds[i], aperture_diameter=diameter)
        for b in BANDS:
            expected = val(alone[f"flux_{b}"][0])
            assert val(both[f"flux_{b}"][i]) == pytest.approx(expected, rel=1e-9)
    # photutils on the background-subtracted image, for the 0.5"/px one (8 px)
    sub = arr[1, 0] - val(both["background_g"][1])
    ref = aperture_photometry(sub, CircularAperture((23.5, 23.5), r=4.0), method="exact")
    assert val(both["flux_g"][1]) == pytest.approx(ref["aperture_sum"][0], rel=1e-9)
    # an angle in another unit, and refusals
    arcmin = measure_galaxies(arr, bands="grz", aperture_diameter=0.05 * u.arcmin,
                              pixel_scale=0.5)
    np.testing.assert_allclose(val(arcmin["flux_r"]), val(pix["flux_r"]), rtol=1e-9)
    with pytest.raises(ValueError, match="number of pixels or an angle"):
        measure_galaxies(arr, bands="grz", aperture_diameter=3 * u.m)
    with pytest.raises(ValueError, match="one angle"):
        measure_galaxies(arr, bands="grz", aperture_diameter=[2, 3] * u.arcsec)
    with pytest.raises(ValueError, match="positive"):
        measure_galaxies(arr, bands="grz", aperture_diameter=-2 * u.arcsec)
    with pytest.raises(ValueError, match="does not fit"):
        measure_galaxies(arr, bands="grz", aperture_diameter=60 * u.arcsec, pixel_scale=0.5)
