"""Bands as real filters: registry, synthetic photometry, colour terms, mocks."""

import warnings

import numpy as np
import pytest
import astropy.units as u
from astropy.table import QTable

from astro_sbgm import bands as B
from astro_sbgm.bands import (BAND_WAVELENGTHS, LEGACY_SURVEY_PIXEL_SCALE, ab_magnitude,
                              fit_colour_terms, get_filter, parse_bands, parse_filters,
                              register_filter, synthetic_flux, unregister_filter)


def _spectrum(**kw):
    return B._spectrum_class()(**kw)


@pytest.fixture
def clean_registry():
    saved = dict(B._USER_FILTERS)
    yield
    B._USER_FILTERS.clear()
    B._USER_FILTERS.update(saved)


# --------------------------------------------------------------------------
# the old names keep working
# --------------------------------------------------------------------------

def test_band_letters_unchanged():
    assert parse_bands("grz") == ("g", "r", "z")
    assert parse_bands(["g", "r", "z"]) == ("g", "r", "z")
    assert parse_bands("g,r,W1") == ("g", "r", "W1")
    assert parse_bands("W2") == ("W2",)
    assert BAND_WAVELENGTHS["g"] == 482.0 * u.nm and BAND_WAVELENGTHS["z"] == 917.0 * u.nm
    assert LEGACY_SURVEY_PIXEL_SCALE == 0.262 * u.arcsec
    assert B.effective_wavelength("r") == 642.0 * u.nm
    for bad in ("", "gg", "gq"):
        with pytest.raises(ValueError):
            parse_bands(bad)
    with pytest.raises(TypeError):
        parse_bands(3)


def test_parse_bands_takes_full_names_of_the_letters():
    assert parse_bands("decam:g,decam:r,decam:z") == ("g", "r", "z")
    assert parse_bands(["decam:Y", "wise:W1"]) == ("y", "W1")
    with pytest.raises(ValueError, match="parse_filters"):
        parse_bands("hsc:g,hsc:r")


def test_band_letters_are_the_legacy_survey_filters():
    assert [f.name for f in parse_filters("grz")] == ["decam:g", "decam:r", "decam:z"]
    assert get_filter("y").name == "decam:Y" and get_filter("W1").name == "wise:W1"
    # the rounded wavelengths of the letters are the pivots of those filters
    for letter in ("g", "r", "i", "z", "W1", "W2"):
        piv = get_filter(letter).pivot_wavelength
        assert abs(piv / BAND_WAVELENGTHS[letter] - 1) < 0.005, letter


# --------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name, group_band, survey", [
    ("decam:g", "decam2014-g", "decam"), ("bass:g", "BASS-g", "bass"),
    ("mzls:z", "MzLS-z", "mzls"), ("sdss:r", "sdss2010-r", "sdss"),
    ("hsc:i", "hsc2017-i", "hsc"), ("lsst:y", "lsst2023-y", "lsst"),
    ("lsst2016:y", "lsst2016-y", "lsst2016"), ("des:z", "decamDR1-z", "des"),
    ("decam:y", "decam2014-Y", "decam"), ("sdss2010-g", "sdss2010-g", "sdss")])
def test_get_filter_maps_names_to_speclite_curves(name, group_band, survey):
    import speclite.filters
    filt = get_filter(name)
    ref = speclite.filters.load_filter(group_band)
    assert filt.survey == survey and filt.meta["speclite_name"] == group_band
    assert isinstance(filt.response, B._spectrum_class())
    spec = filt.response
    np.testing.assert_allclose(spec.spectral_axis.to_value(u.AA), ref.wavelength)
    np.testing.assert_allclose(spec.flux.value, np.clip(ref.response, 0, None))
    assert spec.flux.unit == u.dimensionless_unscaled
    assert get_filter(name) is filt                      # loaded once


def test_pivot_and_effective_wavelength_definitions():
    # a box filter a..b: pivot^2 = (b^2 - a^2) / 2 / ln(b / a); log-mean = sqrt(a b)
    a, b = 500.0, 600.0
    lam = np.linspace(a, b, 20001) * u.nm
    box = B.Filter("box:x", lam, np.ones(lam.size))
    assert box.pivot_wavelength.to_value(u.nm) == pytest.approx(
        np.sqrt((b ** 2 - a ** 2) / 2 / np.log(b / a)), rel=1e-7)
    assert box.effective_wavelength.to_value(u.nm) == pytest.approx(np.sqrt(a * b), rel=1e-7)


# Published values, other definitions of the same curves' family:
#  * pivot wavelengths of CTIO/DECam g, r, z in the SVO Filter Profile Service
#    (the DES DR1 standard bandpasses): 4808.49, 6417.65, 9168.85 Angstrom;
#  * effective wavelengths exp(int R ln(l) dl/l / int R dl/l) (Schneider, Gunn &
#    Hoessel 1983; Fukugita et al. 1996) of DECam g, r, z in sedpy's filter table:
#    477.1, 639.2, 914.9 nm;
#  * SDSS g, r, z effective wavelengths 4686, 6166, 8932 Angstrom (J. Gunn's 2001
#    response files, same definition).
@pytest.mark.parametrize("name, pivot_nm, eff_nm", [
    ("decam:g", 480.849, 477.1), ("decam:r", 641.765, 639.2), ("decam:z", 916.885, 914.9),
    ("sdss:g", None, 468.6), ("sdss:r", None, 616.6), ("sdss:z", None, 893.2)])
def test_wavelengths_match_published_values(name, pivot_nm, eff_nm):
    filt = get_filter(name)
    if pivot_nm is not None:
        assert abs(filt.pivot_wavelength.to_value(u.nm) / pivot_nm - 1) < 0.01
    assert abs(filt.effective_wavelength.to_value(u.nm) / eff_nm - 1) < 0.01


def test_parse_filters_forms():
    names = lambda fs: [f.name for f in fs]                       # noqa: E731
    assert names(parse_filters("decam:g,decam:r")) == ["decam:g", "decam:r"]
    assert names(parse_filters("hsc:grizy")) == ["hsc:g", "hsc:r", "hsc:i", "hsc:z", "hsc:y"]
    assert names(parse_filters("bass:g, bass:r, mzls:z")) == ["bass:g", "bass:r", "mzls:z"]
    assert names(parse_filters(["g", get_filter("hsc:r2")])) == ["decam:g", "hsc:r2"]
    assert names(parse_filters("hsc:r2")) == ["hsc:r2"]
    assert B.band_letter("hsc:r2") == "r" and B.band_letter("lsst:y") == "y"
    assert B.band_letter("euclid:VIS") is None
    with pytest.raises(ValueError, match="more than once"):
        parse_filters("g,decam:g")
    with pytest.raises(ValueError, match="empty"):
        parse_filters([])


def test_registry_errors_are_refused_by_name(clean_registry):
    with pytest.raises(ValueError, match="unknown survey 'nosuch'.*'hsc'"):
        get_filter("nosuch:g")
    with pytest.raises(ValueError, match=r"survey 'hsc'.*no band 'q'.*'r2'"):
        get_filter("hsc:q")
    with pytest.raises(ValueError, match="unknown filter 'q'"):
        get_filter("q")
    with pytest.raises(ValueError, match="unknown filter 'q'"):
        parse_filters("gq")
    with pytest.raises(TypeError, match="string"):
        get_filter(3)
    lam = np.linspace(400, 500, 11) * u.nm
    with pytest.raises(ValueError, match="'decam:g' is a built-in"):
        register_filter("decam:g", (lam, np.ones(11)))
    with pytest.raises(ValueError, match="'g' is a built-in"):
        register_filter("g", (lam, np.ones(11)))
    with pytest.raises(ValueError, match="comma or space"):
        register_filter("my cam:g", (lam, np.ones(11)))
    with pytest.raises(ValueError, match="'mine:n'.*negative"):
        register_filter("mine:n", (lam, np.linspace(-1, 1, 11)))
    with pytest.raises(ValueError, match="'mine:z'.*zero everywhere"):
        register_filter("mine:z", (lam, np.zeros(11)))
    with pytest.raises(u.UnitsError, match="'mine:u'.*no unit"):
        register_filter("mine:u", (lam.value, np.ones(11)))
    table = QTable({"wavelength": lam.value, "response": np.ones(11)})
    with pytest.raises(u.UnitsError, match="'mine:t'.*wavelength column 'wavelength'"):
        register_filter("mine:t", table)
    with pytest.raises(TypeError, match="'mine:s'"):
        register_filter("mine:s", "curve.txt")
    register_filter("mine:a", (lam, np.ones(11)))
    with pytest.raises(ValueError, match="'mine:a' is already registered"):
        register_filter("mine:a", (lam, np.ones(11)))
    with pytest.raises(ValueError, match="no filter 'mine:b' was registered"):
        unregister_filter("mine:b")
    with pytest.raises(ValueError, match="'mine:a'"):       # listed as a known name
        get_filter("nosuch:x")


def test_register_own_curves(clean_registry):
    lam = np.linspace(500, 600, 101) * u.nm
    thr = np.exp(-0.5 * ((lam.value - 550) / 20) ** 2)
    from_spec = register_filter("lab:v", _spectrum(flux=thr * u.dimensionless_unscaled,
                                                   spectral_axis=lam))
    table = QTable({"wave": lam.to(u.AA), "transmission": 100 * thr * u.percent})
    from_table = register_filter("lab:v2", table)
    from_pair = register_filter("lab:v3", (lam.to(u.um), thr), survey="lab", band="V")
    for f in (from_spec, from_table, from_pair):
        assert f.pivot_wavelength.to_value(u.nm) == pytest.approx(549.4, abs=0.3)
    np.testing.assert_allclose(from_table.throughput, thr)
    assert from_pair.band == "V" and from_spec.band == "v"
    assert get_filter("lab:v") is from_spec
    assert [f.name for f in parse_filters("lab:v,decam:r")] == ["lab:v", "decam:r"]
    assert "lab:v2" in B.available_filters()
    # a registered filter works in photometry
    flat = (np.linspace(400, 700, 301) * u.nm, np.full(301, 3631e-9) * u.Jy)
    assert ab_magnitude(flat, "lab:v").to_value(u.mag) == pytest.approx(22.5, abs=1e-9)
    register_filter("lab:v", (lam, thr * 0.5), overwrite=True)
    assert get_filter("lab:v") is not from_spec
    unregister_filter("lab:v")
    with pytest.raises(ValueError):
        get_filter("lab:v")


def test_fits_cards_round_trip():
    cards = B.filter_cards("bass:g,bass:r,mzls:z")
    assert cards == {"FILTER0": "bass:g", "FILTER1": "bass:r", "FILTER2": "mzls:z"}
    meta = {"BANDS": "g,r,z", "BAND0": "g", "BAND1": "r", "BAND2": "z", **cards}
    assert [f.name for f in B.filters_from_meta(meta)] == ["bass:g", "bass:r", "mzls:z"]
    old = {"BAND0": "g", "BAND1": "r", "BAND2": "z"}            # files written before
    assert [f.name for f in B.filters_from_meta(old)] == ["decam:g", "decam:r", "decam:z"]
    with pytest.raises(ValueError, match="no filters"):
        B.filters_from_meta({})


# --------------------------------------------------------------------------
# synthetic photometry
# --------------------------------------------------------------------------

_MANY = "decam:u,decam:g,decam:r,decam:i,decam:z,decam:Y,bass:g,bass:r,mzls:z,sdss:ugriz," \
        "hsc:g,hsc:r,hsc:i,hsc:z,hsc:y,lsst:y,ps1:g"


def _many():
    out = []
    for item in _MANY.split(","):
        out.extend(parse_filters(item))
    return out


def test_flat_fnu_has_the_same_ab_magnitude_in_every_band():
    import galsim
    filters = _many()
    lam = np.arange(290.0, 1200.0, 2.0) * u.nm
    fnu = 3631e-9 * u.Jy                                   # 22.5 mag
    flat = np.full(lam.shape, 1.0) * fnu
    flam = flat.to(u.erg / u.s / u.cm ** 2 / u.AA, u.spectral_density(lam))
    photons = flat.to(u.photon / u.s / u.cm ** 2 / u.AA, u.spectral_density(lam))
    gs_flat = galsim.SED(lambda w: 1.0, "nm", "fnu").withFluxDensity(
        (fnu.to(u.erg / u.s / u.cm ** 2 / u.Hz)
         .to(u.photon / u.s / u.cm ** 2 / u.nm, u.spectral_density(500 * u.nm))).value, 500.0)
    for sed in (_spectrum(flux=flam, spectral_axis=lam),
                _spectrum(flux=photons, spectral_axis=lam.to(u.Hz, u.spectral())),
                (lam, np.full(lam.shape, 1.0) * fnu), gs_flat):
        mags = ab_magnitude(sed, filters).to_value(u.mag)
        assert mags.shape == (len(filters),)
        np.testing.assert_allclose(mags, 22.5, atol=1e-3)
        assert np.ptp(mags) < 1e-3


def test_ab_magnitude_shapes_and_agreement_with_galsim():
    import galsim
    sed = B.galaxy_template("Sbc", redshift=0.2, ebv=0.1)
    lam = sed.spectral_axis.to_value(u.nm)
    flam = sed.flux.to_value(u.erg / u.s / u.cm ** 2 / u.nm)
    gs = galsim.SED(galsim.LookupTable(lam, flam, interpolant="linear"), "nm", "flambda")
    for name in ("decam:g", "hsc:i", "sdss:z", "lsst:y"):
        filt = get_filter(name)
        ours = ab_magnitude(sed, name).to_value(u.mag)
        assert np.ndim(ours) == 0
        assert ours == pytest.approx(gs.calculateMagnitude(filt.to_galsim()), abs=1e-3)
        assert ab_magnitude(gs, filt).to_value(u.mag) == pytest.approx(ours, abs=1e-3)
    assert ab_magnitude(sed, "decam:r").to_value(u.mag) == pytest.approx(22.5, abs=1e-9)
    # rows of a 2-D spectrum, several bands
    rows = _spectrum(flux=np.stack([sed.flux, 10 * sed.flux]), spectral_axis=sed.spectral_axis)
    mags = ab_magnitude(rows, "grz").to_value(u.mag)
    assert mags.shape == (2, 3)
    np.testing.assert_allclose(mags[0] - mags[1], 2.5, atol=1e-9)
    assert synthetic_flux(sed, "r").to_value(u.nanomaggy) == pytest.approx(1.0, rel=1e-9)


def test_photometry_refuses_what_it_cannot_integrate():
    import galsim
    lam = np.linspace(500, 900, 401) * u.nm
    part = (lam, np.ones(lam.size) * u.Jy)
    with pytest.raises(ValueError, match="'decam:g'.*uncovered"):
        ab_magnitude(part, "decam:g")
    assert np.isfinite(ab_magnitude(part, "hsc:i").value)
    with pytest.raises(u.UnitsError, match="spectral flux density"):
        ab_magnitude((lam, np.ones(lam.size) * u.m), "hsc:i")
    with pytest.raises(u.UnitsError):
        ab_magnitude((lam.value, np.ones(lam.size) * u.Jy), "hsc:i")
    with pytest.raises(TypeError, match="galsim.SED"):
        ab_magnitude(np.ones(5), "g")
    with pytest.raises(ValueError, match="dimensionless"):
        ab_magnitude(galsim.SED(lambda w: 1.0, "nm", "1"), "g")
    negative = (lam, -np.ones(lam.size) * u.Jy)
    assert np.isnan(ab_magnitude(negative, "hsc:i").value)


# --------------------------------------------------------------------------
# colour terms
# --------------------------------------------------------------------------

def _library_mags(templates, filters):
    lib = B._library(templates, B._DEFAULT_REDSHIFTS, B._DEFAULT_EBV)
    return -2.5 * np.log10(B._library_fluxes(lib, filters))


@pytest.mark.parametrize("source, target", [
    ("sdss:g,sdss:r,sdss:i,sdss:z", "decam:g,decam:r,decam:z"),
    ("decam:g,decam:r,decam:i,decam:z", "hsc:grizy"),
    ("decam:g,decam:r,decam:z", "bass:g,bass:r,mzls:z")])
@pytest.mark.parametrize("held_out", ["Sbc", "Scd"])
def test_colour_terms_reproduce_held_out_templates(source, target, held_out):
    train = [t for t in B.TEMPLATE_NAMES if t != held_out]
    terms = fit_colour_terms(source, target, templates=train)
    src, tgt = parse_filters(source), parse_filters(target)
    ms, mt = _library_mags([held_out], src), _library_mags([held_out], tgt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # a few held-out colours lie off the range
        pred = terms.predict({f.name: ms[:, i] * u.mag for i, f in enumerate(src)})
    for i, f in enumerate(tgt):
        rms = np.sqrt(np.mean((pred[f.name].to_value(u.mag) - mt[:, i]) ** 2))
        assert rms <= 0.02, (f.name, rms)
        # the scatter the fit reports is of the same size as the held-out error
        assert terms[f.name].scatter <= 0.03


def test_colour_terms_fit_report_and_errors():
    terms = fit_colour_terms("sdss:u,sdss:g,sdss:r,sdss:i,sdss:z", "decam:g,decam:z", degree=1)
    g = terms["decam:g"]
    assert g.source_band == "sdss:g" and g.colour == ("sdss:g", "sdss:r")
    assert terms["decam:z"].colour == ("sdss:i", "sdss:z")
    mags = _library_mags(B.TEMPLATE_NAMES, parse_filters("sdss:ugriz,decam:g"))
    resid = mags[:, 5] - mags[:, 1] - g(mags[:, 1] - mags[:, 2])
    assert g.scatter == pytest.approx(np.sqrt(np.mean(resid ** 2)), rel=1e-9)
    assert g.n_seds == 4 * 9 * 4
    table = terms.to_table()
    assert list(table["target"]) == ["decam:g", "decam:z"] and table["scatter"].unit == u.mag
    assert "decam:g = sdss:g" in str(terms)
    custom = fit_colour_terms("sdss:griz", "decam:r", colours={"decam:r": ("sdss:g", "sdss:r")},
                              templates=["E", "Sbc"], redshifts=[0.0, 0.2], ebv=[0.0], degree=1)
    assert custom["decam:r"].colour == ("sdss:g", "sdss:r")
    with pytest.raises(KeyError, match="sdss:r"):
        custom.predict({"sdss:g": [18.0]})
    with pytest.raises(ValueError, match="two filters"):
        fit_colour_terms("sdss:g", "decam:g")
    with pytest.raises(ValueError, match="degree"):
        fit_colour_terms("sdss:gr", "decam:g", degree=9)
    with pytest.raises(ValueError, match="not a source filter"):
        fit_colour_terms("sdss:gr", "decam:g", colours={"decam:g": ("sdss:g", "sdss:i")})
    with pytest.raises(ValueError, match="unknown galaxy template 'S0'"):
        fit_colour_terms("sdss:gr", "decam:g", templates=["S0"])


def test_flux_mapping_is_linear_and_accurate():
    w, scatter = B.flux_mapping("grz", "bass:g,bass:r,mzls:z", return_scatter=True)
    assert w.shape == (3, 3) and np.all(scatter < 0.02)
    assert np.allclose(B.flux_mapping("grz", "g,r"), [[1, 0, 0], [0, 1, 0]])
    # held-out spectrum (off the library's redshift grid)
    sed = B.galaxy_template("Scd", redshift=0.33, ebv=0.05)
    src = synthetic_flux(sed, "grz").value
    dst = synthetic_flux(sed, "bass:g,bass:r,mzls:z").value
    np.testing.assert_allclose(w @ src, dst, rtol=0.02)


# --------------------------------------------------------------------------
# mocks in any filter set
# --------------------------------------------------------------------------

def _mock_with_truth(n, survey, **kw):
    from astro_sbgm.datasets import make_mock_survey
    return make_mock_survey(n, survey, seed=5, return_truth=True, **kw)


def test_mock_survey_same_galaxies_in_two_filter_sets():
    dec, tdec = _mock_with_truth(4, "decals", size=40)
    hsc, thsc = _mock_with_truth(4, "hsc", size=48)
    assert dec[0].meta["BANDS"] == "g,r,z" and hsc[0].meta["BANDS"] == "g,r,i,z,y"
    filters = [hsc[0].meta[f"FILTER{i}"] for i in range(5)]
    assert filters == ["hsc:g", "hsc:r", "hsc:i", "hsc:z", "hsc:y"]
    assert hsc[0].meta["PIXSCALE"] == 0.168 and dec[0].meta["PIXSCALE"] == 0.262
    np.testing.assert_allclose(tdec["redshift"], thsc["redshift"])
    np.testing.assert_allclose(tdec["axis_ratio"], thsc["axis_ratio"])
    # colours consistent: HSC magnitudes predicted from DECam ones by the colour terms
    terms = fit_colour_terms("decam:g,decam:r,decam:z", "hsc:g,hsc:r,hsc:z")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = terms.predict({"decam:g": tdec["mag_g"], "decam:r": tdec["mag_r"],
                              "decam:z": tdec["mag_z"]})
    for b in "grz":
        np.testing.assert_allclose(pred[f"hsc:{b}"].value, thsc[f"mag_{b}"].value, atol=0.05)
    # HSC is deeper and sharper than DECaLS
    assert np.all(thsc["sky_sigma_r"] < tdec["sky_sigma_r"])
    assert np.all(thsc["psf_fwhm_i"] < 0.8 * u.arcsec)


def test_mock_survey_flux_and_options():
    from astro_sbgm.datasets import make_mock_survey
    ims, truth = make_mock_survey(2, "sdss", bands="sdss:g,sdss:r", size=96, pixel_scale=0.396,
                                  psf_fwhm=1.0, sky_noise=1e-7 * u.nanomaggy, seed=2,
                                  return_truth=True)
    assert ims[0].shape == (2, 96, 96)
    np.testing.assert_allclose(truth["psf_fwhm_g"].value, 1.0)
    alone = np.flatnonzero(np.isnan(truth["neighbour_mag_r"].value))
    assert alone.size                                  # seed 2: galaxies 0 and 1
    for k in alone:
        total = ims[k].data.sum(axis=(1, 2))
        flux = [truth[f"flux_{b}"][k].value for b in "gr"]
        np.testing.assert_allclose(total, flux, rtol=0.02)
    noisy = make_mock_survey(1, "sdss", bands="sdss:g", seed=2, sky_noise=3.0)
    base = make_mock_survey(1, "sdss", bands="sdss:g", seed=2)
    assert noisy[0].meta["SKYSIG_G"] == pytest.approx(3 * base[0].meta["SKYSIG_G"], rel=1e-6)
    again = make_mock_survey(1, "sdss", bands="sdss:g", seed=2)
    np.testing.assert_array_equal(again[0].data, base[0].data)


def test_mock_survey_refusals():
    from astro_sbgm.datasets import make_mock_survey
    with pytest.raises(ValueError, match="unknown survey preset 'kids'"):
        make_mock_survey(1, "kids")
    with pytest.raises(ValueError, match="'euclid:VIS'"):
        make_mock_survey(1, bands="euclid:VIS")
    with pytest.raises(ValueError, match="share a band letter"):
        make_mock_survey(1, "hsc", bands="hsc:r,hsc:r2")
    with pytest.raises(ValueError, match=r"no depth for band\(s\) \['i'\]"):
        make_mock_survey(1, "decals", bands="decam:g,hsc:i")
    ims = make_mock_survey(1, "decals", bands="decam:g,hsc:i", depth=[24.0, 23.0], size=16)
    assert ims[0].meta["BANDS"] == "g,i"
    with pytest.raises(ValueError, match="psf_fwhm"):
        make_mock_survey(1, psf_fwhm=[1.0, 1.0])
    with pytest.raises(ValueError, match="sky_noise"):
        make_mock_survey(1, sky_noise=0.0)
