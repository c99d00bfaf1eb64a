"""Mock galaxy cutouts in any filter set: components with spectra, real filters.

The galaxies are those of `make_mock_legacy_survey` (bulge, disk, spiral arms
and star-forming knots, drawn by the same code from the same random streams),
but each component has a spectrum instead of two colours: a mix of two
Coleman, Wu & Weedman templates (GalSim's ``CWW_*_ext``), reddened with the
Calzetti et al. (2000) law and moved to the galaxy's redshift.  The flux of a
component in a filter is its DECam r flux times the ratio of synthetic fluxes
(`astro_sbgm.bands.synthetic_flux`) through the two filters, so one galaxy
has consistent colours in every filter set: ``make_mock_survey(5, "decals",
seed=1)`` and ``make_mock_survey(5, "hsc", seed=1)`` are the same five
galaxies seen by DECam and by Hyper Suprime-Cam.
"""

import zlib
from dataclasses import dataclass

import numpy as np
import astropy.units as u

from .. import bands as _bands
from . import _mock

__all__ = ["make_mock_survey", "SURVEY_PRESETS", "SurveyPreset"]

#: The filter whose flux `make_mock_legacy_survey`'s r magnitude sets.
_REF_FILTER = "decam:r"


@dataclass(frozen=True)
class SurveyPreset:
    """Observing set-up of a survey for `make_mock_survey`.

    Attributes
    ----------
    name : str
        Short description.
    filters : tuple of str
        Default filters.
    pixel_scale : float
        Arcsec per pixel of the images a user works with.
    psf_fwhm : dict
        Median FWHM (arcsec) per band letter; bands not listed scale from the
        ``reference`` band as lambda^-0.2.
    reference : str
        The band letter the seeing is scaled from.
    depth : dict
        5-sigma depth (AB mag) per band letter.
    depth_kind : str
        What the depth is for: ``"galaxy"`` (round exponential of half-light
        radius 0.45 arcsec in the PSF, the Legacy Surveys' "galdepth"),
        ``"psf"`` (point source, optimal weighting) or ``"aperture"``
        (flux in a circular aperture of ``aperture`` arcsec diameter).
    aperture : float
        Aperture diameter (arcsec) of an ``"aperture"`` depth.
    sources : str
        Where the numbers come from.
    """

    name: str
    filters: tuple
    pixel_scale: float
    psf_fwhm: dict
    reference: str
    depth: dict
    depth_kind: str
    aperture: float = 2.0
    sources: str = ""


#: Survey presets (see the "Bands and surveys" page for the sources).
SURVEY_PRESETS = {
    "decals": SurveyPreset(
        name="DECaLS / DESI Legacy Surveys DR9 south (DECam)",
        filters=("decam:g", "decam:r", "decam:z"), pixel_scale=0.262,
        psf_fwhm={"g": 1.19, "r": 1.12, "z": 1.05}, reference="r",
        depth={"g": 24.0, "r": 23.4, "z": 22.5}, depth_kind="galaxy",
        sources="depths: legacysurvey.org/decamls (5 sigma for an exponential galaxy of "
                "half-light radius 0.45 arcsec); seeing and pixels as "
                "make_mock_legacy_survey"),
    "bass-mzls": SurveyPreset(
        name="BASS + MzLS / DESI Legacy Surveys DR9 north (Bok 90Prime g, r; Mayall "
             "Mosaic-3 z)",
        filters=("bass:g", "bass:r", "mzls:z"), pixel_scale=0.262,
        psf_fwhm={"g": 1.6, "r": 1.5, "z": 1.1}, reference="r",
        depth={"g": 24.0, "r": 23.4, "z": 23.0}, depth_kind="psf",
        sources="BASS 5 sigma point-source depths g 24.0, r 23.4 (Zou et al. 2017, PASP "
                "129, 064101); MzLS z 23.0 (NOIRLab Data Lab MzLS page); BASS typical "
                "seeing 1.5 arcsec at Kitt Peak, native pixel 0.454 arcsec (BASS site); "
                "coadds resampled to 0.262 arcsec; MzLS seeing assumed"),
    "sdss": SurveyPreset(
        name="SDSS imaging (2.5 m, drift scan)",
        filters=("sdss:u", "sdss:g", "sdss:r", "sdss:i", "sdss:z"), pixel_scale=0.396,
        psf_fwhm={"r": 1.43}, reference="r",
        depth={"u": 22.0, "g": 22.2, "r": 22.2, "i": 21.3, "z": 20.5}, depth_kind="psf",
        sources="pixel 0.39598 arcsec (SDSSConstants, SkyServer); median r PSF width 1.43 "
                "arcsec (SDSS DR7/DR9 image quality page); 95% completeness limits for "
                "point sources (SDSS DR7, Abazajian et al. 2009) used as 5 sigma depths"),
    "hsc": SurveyPreset(
        name="HSC-SSP Wide (Subaru Hyper Suprime-Cam)",
        filters=("hsc:g", "hsc:r", "hsc:i", "hsc:z", "hsc:y"), pixel_scale=0.168,
        psf_fwhm={"g": 0.77, "r": 0.76, "i": 0.60, "z": 0.68, "y": 0.68}, reference="i",
        depth={"g": 26.5, "r": 26.1, "i": 25.9, "z": 25.1, "y": 24.4},
        depth_kind="aperture", aperture=2.0,
        sources="pixel 0.168 arcsec, median i seeing 0.6 arcsec, depths are 5 sigma in 2 "
                "arcsec apertures (HSC-SSP survey page); Wide depths g 26.5 r 26.1 i 25.9 "
                "z 25.1 y 24.4 (Aihara et al. 2018, PASJ 70, S4); seeing in g r z y "
                "(Aihara et al. 2019, PDR2)"),
}

#: Dark-sky surface brightness (AB mag / arcsec^2) per band letter, used only to
#: turn the sky noise into a gain for the galaxy's own shot noise.
_SKY_SB = dict(_mock._SKY_SB)

_MOFFAT_BETA = _mock._MOFFAT_BETA
_LS_GALDEPTH_HLR = 0.45


# --------------------------------------------------------------------------
# noise from a depth
# --------------------------------------------------------------------------

def _nea_arcsec2(fwhm, pixel_scale, hlr):
    """Noise-equivalent area (arcsec^2) of a source drawn in the PSF: 1 / sum(p^2)."""
    import galsim
    prof = galsim.Moffat(beta=_MOFFAT_BETA, fwhm=fwhm)
    if hlr > 0:
        prof = galsim.Convolve(prof, galsim.Exponential(half_light_radius=hlr))
    n = int(np.ceil(8 * max(fwhm, hlr * 3) / pixel_scale)) | 1
    img = prof.drawImage(nx=n, ny=n, scale=pixel_scale).array
    img = img / img.sum()
    return float(pixel_scale ** 2 / np.sum(img ** 2))


def _sky_sigma(depth, kind, fwhm, pixel_scale, aperture):
    """Per-pixel sky sigma (nanomaggy) that gives a 5-sigma ``depth``."""
    f5 = 10 ** ((22.5 - depth) / 2.5)
    if kind == "aperture":
        npix = np.pi * (aperture / 2.0) ** 2 / pixel_scale ** 2
        return f5 / 5.0 / np.sqrt(npix)
    hlr = _LS_GALDEPTH_HLR if kind == "galaxy" else 0.0
    nea = _nea_arcsec2(fwhm, pixel_scale, hlr) / pixel_scale ** 2
    return f5 / 5.0 / np.sqrt(nea)


# --------------------------------------------------------------------------
# spectra of the components
# --------------------------------------------------------------------------

def _redshift(rng, mag_r):
    z = 0.1 * 10 ** (0.2 * (mag_r - 17.5)) * np.exp(rng.normal(0.0, 0.25))
    return float(np.clip(z, 0.005, 0.4))


def _draw_seds(rng, p):
    """Template mix, reddening and redshift of each component (fixed number of draws)."""
    z = _redshift(rng, p["mag_r"])
    early, bt, q = p["early"], p["bulge_frac"], p["q"]
    u01 = rng.random(12)
    seds = {}
    if early:
        seds["bulge"] = ("E", "Sbc", 0.85 + 0.15 * u01[0], 0.05 * u01[1])
        seds["disk"] = ("E", "Sbc", 0.3 + 0.5 * u01[2], 0.08 * u01[3])
    else:
        seds["bulge"] = ("E", "Sbc", 0.6 + 0.35 * u01[0], 0.05 * u01[1])
        w = float(np.clip(bt / 0.6 + 0.2 * (u01[2] - 0.5), 0.0, 1.0))
        seds["disk"] = ("Sbc", "Scd", w, 0.03 * u01[3] + 0.08 * (1.0 - q))
    seds["arm"] = ("Scd", "Im", 0.5 + 0.5 * u01[4], 0.7 * seds["disk"][3])
    seds["knot"] = ("Scd", "Im", 0.3 * u01[5], 0.08 * u01[6])
    k = int(u01[7] * 3.0)
    names = _bands.TEMPLATE_NAMES
    nb = (names[k], names[k + 1], float(u01[8]), 0.2 * u01[9],
          float(min(0.4, z + 0.3 * u01[10])))
    return z, seds, nb


def _filter_ratios(template, z, ebv, filters, ref):
    """Flux in each filter relative to the reference filter for one template."""
    return _bands.template_flux_ratios(template, z, ebv, filters, ref)


def _mix_ratios(spec, z, filters, ref):
    t1, t2, w, ebv = spec
    return (w * _filter_ratios(t1, z, ebv, filters, ref)
            + (1.0 - w) * _filter_ratios(t2, z, ebv, filters, ref))


# --------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------

def _per_band(value, nb, name, unit=None):
    if isinstance(value, u.Quantity):
        value = value.to_value(unit) if unit is not None else value.value
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(nb, float(arr))
    if arr.shape != (nb,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be one finite number or one per band ({nb}), "
                         f"got {value!r}")
    return arr


def _preset(survey):
    if isinstance(survey, SurveyPreset):
        return survey
    key = str(survey).strip().lower()
    if key not in SURVEY_PRESETS:
        raise ValueError(f"unknown survey preset {survey!r}; the presets are "
                         f"{sorted(SURVEY_PRESETS)} (or pass a SurveyPreset)")
    return SURVEY_PRESETS[key]


def _letters(filters):
    letters = []
    for f in filters:
        letter = _bands.band_letter(f)
        if letter is None or letter not in _SKY_SB:
            raise ValueError(f"the mock survey draws optical bands u g r i z y; filter "
                             f"{f.name!r} has no such band letter")
        letters.append(letter)
    if len(set(letters)) != len(letters):
        raise ValueError(f"filters {[f.name for f in filters]} share a band letter "
                         f"({letters}); the images record one BANDn letter per plane, so "
                         "draw them in separate calls")
    return letters


# --------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------

def make_mock_survey(n, survey="decals", *, bands=None, size=64, pixel_scale=None,
                     psf_fwhm=None, depth=None, sky_noise=1.0, seed=None,
                     return_truth=False, progress=False):
    """Mock galaxy cutouts of any survey, through real filters.

    The galaxies of `make_mock_legacy_survey` (same structure, same random
    streams) whose bulge, disk, arms and knots each have a spectrum: a mix
    of two Coleman, Wu & Weedman templates (bulge old and red, disk and
    arms bluer with more dust in edge-on disks, knots blue), reddened with
    the Calzetti et al. (2000) law and moved to a redshift that grows with
    magnitude (0.005-0.4).  Each component's flux in a filter follows from
    synthetic photometry (`astro_sbgm.bands.synthetic_flux`) relative to its
    DECam r flux, so the same seed gives the same galaxies, with consistent
    colours, in any filter set.  Moffat PSF (beta = 3.5) per band, white sky
    noise of the survey's depth and the galaxy's own shot noise.

    Parameters
    ----------
    n : int
        Number of cutouts, at least 1.
    survey : str or `SurveyPreset`, optional
        ``"decals"`` (default), ``"bass-mzls"``, ``"sdss"`` or ``"hsc"``
        (see `SURVEY_PRESETS`): filters, pixel scale, seeing and depth.
    bands : str or sequence, optional
        Filters (anything `astro_sbgm.bands.parse_filters` takes, e.g.
        ``"hsc:grizy"``); default the preset's.  Each must have a band letter
        among ``ugrizy`` (see `astro_sbgm.bands.band_letter`), at most one
        filter per letter.
    size : int, optional
        Side of the square cutouts in pixels, at least 16.
    pixel_scale : float or `~astropy.units.Quantity`, optional
        Arcsec per pixel; default the preset's.
    psf_fwhm : float, sequence or `~astropy.units.Quantity`, optional
        PSF FWHM (arcsec), one for all bands or one per band, the same for
        every galaxy.  Default: the preset's median seeing per band
        (bands it lacks scale from its reference band as lambda^-0.2) with
        a per-galaxy spread of 8% and 3% per band.
    depth : float or sequence, optional
        5-sigma depth (AB mag) per band, of the preset's kind; default the
        preset's (a band the preset has no depth for needs this).
    sky_noise : float, sequence or `~astropy.units.Quantity`, optional
        A number: multiplier of the sky noise, as in
        `make_mock_legacy_survey`.  A Quantity in nanomaggy: the per-pixel
        sky sigma itself (one or one per band).
    seed : int, `numpy.random.SeedSequence` or None, optional
        Galaxy ``i`` depends only on ``(seed, i)``, whatever the survey.
    return_truth : bool, optional
        Also return a `~astropy.table.QTable` of the true properties.
    progress : bool, optional
        Show a tqdm progress bar.

    Returns
    -------
    images : list of `~astropy.nddata.CCDData`
        As `make_mock_legacy_survey`: float32 ``(band, size, size)`` in
        nanomaggy, celestial TAN WCS, sky-sigma uncertainty; ``meta`` with
        ``BANDS`` and ``BANDn`` (band letters, so the files load as model
        bands), ``FILTERn`` (full filter names), ``SURVEY``, ``REDSHIFT``,
        ``MAG_<band>``, ``PSF_<band>``, ``SKYSIG_<band>``, ``HLR``, ...
    truth : `~astropy.table.QTable`
        Only with ``return_truth``: the columns of `make_mock_legacy_survey`
        (per band letter) plus ``redshift``, ``ebv_bulge``, ``ebv_disk``;
        ``meta['filters']`` lists the filters.

    Raises
    ------
    ValueError
        For an unknown preset or filter, a filter without a ``ugrizy``
        letter or two filters with one letter, ``n < 1``, ``size < 16``, a
        non-positive pixel scale, FWHM or sky noise, or a band without depth.
    TypeError
        If ``n``, ``size`` or ``seed`` has the wrong type.

    Notes
    -----
    The central galaxy (shape, spectra, redshift, DECam r magnitude) depends
    only on ``(seed, i)``; a faint neighbour is placed at a fraction of the
    cutout's angular size, so it moves when two surveys' cutouts cover
    different fields.  ``make_mock_legacy_survey`` is unchanged: its colours
    are set per band, not by spectra, so its images differ from
    ``make_mock_survey(..., "decals")``.

    Examples
    --------
    >>> from astro_sbgm.datasets import make_mock_survey
    >>> dec = make_mock_survey(2, "decals", size=32, seed=3)
    >>> hsc = make_mock_survey(2, "hsc", size=48, seed=3)
    >>> dec[0].meta["BANDS"], hsc[0].meta["BANDS"], hsc[0].meta["FILTER4"]
    ('g,r,z', 'g,r,i,z,y', 'hsc:y')
    >>> dec[0].meta["REDSHIFT"] == hsc[0].meta["REDSHIFT"]
    True
    """
    n = _mock._check_int(n, "n", 1)
    size = _mock._check_int(size, "size", 16)
    preset = _preset(survey)
    filters = _bands.parse_filters(preset.filters if bands is None else bands)
    letters = _letters(filters)
    nb = len(filters)
    ps = _mock._check_pixel_scale(preset.pixel_scale if pixel_scale is None else pixel_scale)
    root = _mock._seed_sequence(seed)
    ref = _bands.get_filter(_REF_FILTER)

    # seeing
    if psf_fwhm is None:
        lam_ref = _bands.get_filter(f"decam:{preset.reference}"
                                    if preset.reference != "y" else "decam:Y")
        base = []
        for f, letter in zip(filters, letters):
            if letter in preset.psf_fwhm:
                base.append(preset.psf_fwhm[letter])
            else:
                ratio = (f.pivot_wavelength / lam_ref.pivot_wavelength).decompose().value
                base.append(preset.psf_fwhm[preset.reference] * ratio ** -0.2)
        base_fwhm, jitter = np.array(base), True
    else:
        base_fwhm, jitter = _per_band(psf_fwhm, nb, "psf_fwhm", u.arcsec), False
    if np.any(base_fwhm <= 0):
        raise ValueError(f"psf_fwhm must be positive (arcsec), got {psf_fwhm!r}")

    # depth and sky noise
    absolute_sky = isinstance(sky_noise, u.Quantity) and sky_noise.unit != u.dimensionless_unscaled
    if absolute_sky:
        sigma0 = _per_band(sky_noise, nb, "sky_noise", u.nanomaggy)
        mult = np.ones(nb)
    else:
        mult = _per_band(sky_noise, nb, "sky_noise")
        if depth is None:
            missing = [letter for letter in letters if letter not in preset.depth]
            if missing:
                raise ValueError(f"the {preset.name} preset has no depth for band(s) "
                                 f"{missing}; pass depth= (5-sigma AB mag per band)")
            depths = np.array([preset.depth[letter] for letter in letters])
        else:
            depths = _per_band(depth, nb, "depth", u.mag)
        sigma0 = np.array([_sky_sigma(d, preset.depth_kind, fw, ps, preset.aperture)
                           for d, fw in zip(depths, base_fwhm)])
    if np.any(~(sigma0 > 0)) or np.any(~(mult > 0)):
        raise ValueError(f"sky_noise must be positive, got {sky_noise!r}")
    sky_pix = np.array([10 ** ((22.5 - _SKY_SB[letter]) / 2.5) * ps ** 2 for letter in letters])
    tag = zlib.crc32(",".join(f.name for f in filters).encode())

    images, rows = [], []
    for i in _mock._progress(range(n), n, progress, "mock galaxies"):
        rng = _mock._galaxy_rng(root, i)
        p = _mock._draw_galaxy(rng, ("g", "r", "z"), size, ps)
        z, seds, nb_sed = _draw_seds(rng, p)

        # fluxes: DECam r flux of each component times its filter ratios
        flux_r = 10 ** ((22.5 - p["mag_r"]) / 2.5)
        bt, fk, fa = p["bulge_frac"], p["knot_frac"], p["arm_frac"]
        r_flux = {"bulge": bt * flux_r, "disk": (1 - bt) * (1 - fk - fa) * flux_r,
                  "arm": (1 - bt) * fa * flux_r, "knot": (1 - bt) * fk * flux_r}
        p["weights"] = {c: r_flux[c] * _mix_ratios(seds[c], z, filters, ref)
                        if r_flux[c] > 0 else np.zeros(nb) for c in r_flux}
        if p["neighbour"] is not None:
            nbr = p["neighbour"]
            nb_flux = 10 ** ((22.5 - nbr["mag_r"]) / 2.5)
            nbr["weights"] = nb_flux * _mix_ratios(nb_sed[:4], nb_sed[4], filters, ref)

        # observing conditions of this survey (their own stream)
        obs = np.random.default_rng([p["noise_seed"], tag])
        if jitter:
            fwhm = base_fwhm * np.exp(obs.normal(0.0, 0.08)) \
                * np.exp(obs.normal(0.0, 0.03, size=nb))
            depth_shift = obs.uniform(-0.15, 0.15, size=nb)
        else:
            fwhm = base_fwhm.copy()
            depth_shift = np.zeros(nb)
        sigma = sigma0 * mult * 10 ** (0.4 * depth_shift)
        p["fwhm"], p["sky_sigma"] = fwhm, sigma
        model = _mock._render(p, letters, size, ps)
        gain = sky_pix / sigma ** 2
        var = sigma[:, None, None] ** 2 + np.clip(model, 0, None) / gain[:, None, None]
        data = model + np.sqrt(var) * obs.standard_normal(model.shape)

        flux = np.array([sum(p["weights"][c][ib] for c in p["weights"]) for ib in range(nb)])
        hlr = _mock._half_light_radii(p)
        refi = letters.index("r") if "r" in letters else 0
        pa = (p["beta"] - 90.0) % 180.0
        wcs = _mock._celestial_wcs(p["ra"], p["dec"], size, ps)
        ra_gal, dec_gal = wcs.wcs_pix2world([[(size + 1) / 2.0 + p["offset"][0],
                                              (size + 1) / 2.0 + p["offset"][1]]], 1)[0]
        mags = 22.5 - 2.5 * np.log10(flux)
        meta = {"GALID": i, "SURVEY": preset.name[:68], "REDSHIFT": round(z, 5)}
        for ib, b in enumerate(letters):
            meta[f"MAG_{b.upper()}"] = round(float(mags[ib]), 4)
        meta.update(HLR=round(float(hlr[refi]), 4), AXRATIO=round(float(p["q"]), 4),
                    PA=round(float(pa), 3), BULGEFR=round(float(bt), 4))
        for ib, b in enumerate(letters):
            meta[f"PSF_{b.upper()}"] = round(float(fwhm[ib]), 4)
            meta[f"SKYSIG_{b.upper()}"] = float(np.float32(sigma[ib]))
        ccd = _mock._make_ccd(data, sigma, letters, wcs, ps, meta,
                              filters=[f.name for f in filters])
        images.append(ccd)

        if return_truth:
            nbr = p["neighbour"]
            rows.append(dict(flux=flux, mag=mags, hlr=hlr, hlr_ref=hlr[refi], q=p["q"], pa=pa,
                             bt=bt, n_bulge=p["n_bulge"], early=p["early"], knot=fk, arm=fa,
                             n_arms=p["n_arms"], fwhm=fwhm, sigma=sigma,
                             dx=p["offset"][0], dy=p["offset"][1], ra=ra_gal, dec=dec_gal,
                             nb_mag=np.nan if nbr is None else nbr["mag_r"], z=z,
                             ebv_bulge=seds["bulge"][3], ebv_disk=seds["disk"][3]))
    if not return_truth:
        return images
    truth = _mock._truth_table(rows, letters)
    truth["redshift"] = [r["z"] for r in rows]
    truth["ebv_bulge"] = [r["ebv_bulge"] for r in rows] * u.mag
    truth["ebv_disk"] = [r["ebv_disk"] for r in rows] * u.mag
    truth.meta["filters"] = ",".join(f.name for f in filters)
    truth.meta["survey"] = preset.name
    return images, truth
