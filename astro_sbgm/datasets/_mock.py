"""Mock DESI Legacy Survey DR9-like galaxy cutouts (no download needed).

The galaxy model and the numbers behind it are described in ``docs/datasets.rst``.
GalSim supplies the profiles (`galsim.Sersic`, `galsim.Exponential`,
`galsim.Moffat`) through their Fourier transforms and the star-forming knots
(`galsim.RandomKnots`); the images are rendered here on a fixed periodic
Fourier grid a few times the cutout size.  GalSim's own ``drawImage`` sizes
its FFT from the folding radius of the largest component, which for a large
de Vaucouleurs bulge means a 512^2 FFT per band (0.6 s per galaxy); the
fixed grid gives the same image (agreement to ~1e-4 of the peak, see the
tests) in a few milliseconds.
"""

import functools
import numbers

import numpy as np
import astropy.units as u
from astropy.nddata import StdDevUncertainty
from astropy.table import QTable
from scipy import fft as sp_fft
from scipy.special import gammainc, gammaincinv

from ..bands import BAND_WAVELENGTHS, LEGACY_SURVEY_PIXEL_SCALE, parse_bands
from ..io import make_image, make_tan_wcs

#: The Legacy Surveys' pixel scale in arcsec (the mocks' default).
_LEGACY_SCALE = float(LEGACY_SURVEY_PIXEL_SCALE.to_value(u.arcsec))

__all__ = ["make_mock_legacy_survey", "make_trivial_dataset"]

#: Bands the mock knows a noise model for.
_MOCK_BANDS = "ugrizy"

#: 5-sigma depth (AB mag) for a round exponential galaxy of half-light radius
#: 0.45" (the Legacy Survey "galdepth"); g, r, z are the DR9 depth goals, the
#: others are assumed values of a comparable ground-based survey.
_GALDEPTH = {"u": 23.0, "g": 24.0, "r": 23.4, "i": 23.0, "z": 22.5, "y": 21.5}

#: Noise-equivalent area (arcsec^2) of that galdepth profile convolved with a
#: Moffat (beta=3.5, FWHM=1.2") PSF at 0.262"/pix: 114.4 pixels.  With
#: optimal weighting, sigma_flux = sigma_pix * sqrt(NEA_pix), so
#: sigma_pix = F_5sigma / 5 / sqrt(NEA_pix).
_GALDEPTH_NEA_ARCSEC2 = 114.4 * 0.262 ** 2

#: Dark-sky surface brightness (AB mag / arcsec^2) used only to turn the sky
#: noise into an effective gain for the source shot noise.
_SKY_SB = {"u": 22.6, "g": 22.0, "r": 21.0, "i": 20.1, "z": 19.0, "y": 18.0}

#: Range of the per-galaxy, per-band depth scatter (mag).
_DEPTH_SCATTER = 0.25

#: r-band magnitude range and the slope of the counts, dN/dm ~ 10^(slope m).
_MAG_RANGE = (14.5, 18.0)
_COUNT_SLOPE = 0.5

_REF_BAND = "r"
_MOFFAT_BETA = 3.5
_COLOUR_ANCHORS = ("g", "r", "z")

#: Gaussian sigma (arcsec) of the star-forming knots (at least one pixel).
_KNOT_SIGMA = 0.25

# ICRS position of the north Galactic pole (deg), for the footprint cut.
_NGP_RA, _NGP_DEC = 192.85948, 27.12825


# --------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------

def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_bands(bands):
    names = parse_bands(bands)
    bad = [b for b in names if b not in _MOCK_BANDS]
    if bad:
        raise ValueError(f"the mock survey has no noise model for band(s) {bad}; "
                         f"choose bands from {list(_MOCK_BANDS)}, e.g. 'grz'")
    return names


def _check_pixel_scale(pixel_scale):
    if isinstance(pixel_scale, u.Quantity):
        pixel_scale = pixel_scale.to_value(u.arcsec)
    pixel_scale = float(pixel_scale)
    if not np.isfinite(pixel_scale) or pixel_scale <= 0:
        raise ValueError(f"pixel_scale must be a positive number of arcsec per pixel, "
                         f"got {pixel_scale!r}")
    return pixel_scale


def _seed_sequence(seed):
    if seed is None or isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.SeedSequence(seed)
    if isinstance(seed, np.random.SeedSequence):
        return seed
    raise TypeError(f"seed must be None, a non-negative integer or a "
                    f"numpy.random.SeedSequence, got {seed!r}")


def _galaxy_rng(root, index):
    """Generator of galaxy ``index``: the ``index``-th child of ``root``.

    Built from the spawn key directly, so it does not depend on how many
    galaxies are drawn nor on earlier calls to ``root.spawn``.
    """
    child = np.random.SeedSequence(root.entropy, spawn_key=root.spawn_key + (index,),
                                   pool_size=root.pool_size)
    return np.random.default_rng(child)


def _progress(iterable, total, enabled, desc):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="gal")


# --------------------------------------------------------------------------
# noise, PSF, colours
# --------------------------------------------------------------------------

def _sky_sigma(band, pixel_scale):
    """Nominal per-pixel sky sigma (nanomaggy) of ``band`` at ``pixel_scale``."""
    f5 = 10 ** ((22.5 - _GALDEPTH[band]) / 2.5)
    return f5 / 5.0 * pixel_scale / np.sqrt(_GALDEPTH_NEA_ARCSEC2)


def _sky_per_pixel(band, pixel_scale):
    return 10 ** ((22.5 - _SKY_SB[band]) / 2.5) * pixel_scale ** 2


def _log_wavelength(band):
    return np.log10(BAND_WAVELENGTHS[band].to_value(u.nm))


def _band_mag_offsets(gr, rz, bands):
    """Magnitude minus r-band magnitude in each band for colours g-r, r-z.

    Piecewise linear in log wavelength through g, r, z; extrapolated
    linearly beyond them (u, y).
    """
    x = np.array([_log_wavelength(b) for b in _COLOUR_ANCHORS])
    y = np.array([gr, 0.0, -rz])
    out = []
    for band in bands:
        lw = _log_wavelength(band)
        if lw <= x[1]:
            out.append(y[0] + (y[1] - y[0]) * (lw - x[0]) / (x[1] - x[0]))
        else:
            out.append(y[1] + (y[2] - y[1]) * (lw - x[1]) / (x[2] - x[1]))
    return np.array(out)


def _band_weights(flux_r, gr, rz, bands):
    return flux_r * 10 ** (-0.4 * _band_mag_offsets(gr, rz, bands))


# --------------------------------------------------------------------------
# Fourier-space profiles
# --------------------------------------------------------------------------

_LOG_KAPPA = np.linspace(-3.0, 4.0, 701)


@functools.lru_cache(maxsize=None)
def _sersic_ktable(n):
    """k-space profile of a unit-flux Sersic of unit half-light radius."""
    import galsim
    prof = galsim.Sersic(n=n, half_light_radius=1.0)
    return np.array([prof.kValue(k, 0.0).real for k in 10 ** _LOG_KAPPA])


@functools.lru_cache(maxsize=None)
def _moffat_ktable(beta):
    """k-space profile of a unit-flux Moffat of unit FWHM."""
    import galsim
    prof = galsim.Moffat(beta=beta, fwhm=1.0)
    return np.array([prof.kValue(k, 0.0).real for k in 10 ** _LOG_KAPPA])


def _interp_profile(table, log_k, log_scale):
    """Evaluate a tabulated radial k-profile at log10(k) + log10(scale)."""
    return np.interp(log_k + log_scale, _LOG_KAPPA, table, left=1.0, right=0.0)


def _exp_kprofile(k, hlr):
    r0 = hlr / 1.6783469900166608
    return (1.0 + (k * r0) ** 2) ** -1.5


@functools.lru_cache(maxsize=16)
def _kgrid(nfft, pixel_scale):
    """Angular frequencies (rad / arcsec) of an rfft2 grid and the pixel response."""
    kx = 2 * np.pi * np.fft.rfftfreq(nfft, d=pixel_scale)[None, :]
    ky = 2 * np.pi * np.fft.fftfreq(nfft, d=pixel_scale)[:, None]
    kabs = np.hypot(kx, ky)
    with np.errstate(divide="ignore"):
        log_k = np.log10(kabs)
    log_k[0, 0] = -10.0
    pix = np.sinc(kx * pixel_scale / (2 * np.pi)) * np.sinc(ky * pixel_scale / (2 * np.pi))
    return kx, ky, log_k, pix


def _shear_matrix(q, beta_deg):
    """Area-preserving matrix taking face-on positions to the sky (GalSim convention)."""
    import galsim
    return galsim.Shear(q=q, beta=beta_deg * galsim.degrees).getMatrix()


def _sheared_logk(kx, ky, mat):
    """log10 |A^T k|: the face-on frequency seen by a profile sheared by A."""
    kxp = mat[0, 0] * kx + mat[1, 0] * ky
    kyp = mat[0, 1] * kx + mat[1, 1] * ky
    k2 = kxp ** 2 + kyp ** 2
    with np.errstate(divide="ignore"):
        return 0.5 * np.log10(k2), k2


def _knot_sigma(pixel_scale):
    """Gaussian sigma (arcsec) of a knot: 0.25" or one pixel, whichever is larger."""
    return max(_KNOT_SIGMA, pixel_scale)


def _points_kimage(pos, flux, nfft, pixel_scale, sigma):
    """rfft2 of Gaussian clumps (width ``sigma`` >= 1 pixel) at ``pos`` (arcsec).

    Each clump is spread onto the periodic pixel grid as a sampled Gaussian,
    so the sum costs one FFT whatever the number of points.  With a width of at
    least one pixel the samples sum to the flux within 1e-8 and the aliased
    power is below 1e-2 of the clump's own at the Nyquist frequency, where the
    PSF has already fallen below 1e-4.
    """
    u_pix = pos / pixel_scale
    sig = sigma / pixel_scale
    half = int(np.ceil(5 * sig))
    offs = np.arange(-half, half + 1)
    nodes = np.floor(u_pix + 0.5).astype(int)[:, :, None] + offs         # (P, 2, W)
    kern = np.exp(-0.5 * ((nodes - u_pix[:, :, None]) / sig) ** 2) / (np.sqrt(2 * np.pi) * sig)
    vals = flux[:, None, None] * kern[:, 1, :, None] * kern[:, 0, None, :]
    index = (nodes[:, 1, :, None] % nfft) * nfft + nodes[:, 0, None, :] % nfft
    grid = np.bincount(index.ravel(), weights=vals.ravel(), minlength=nfft * nfft)
    return sp_fft.rfft2(grid.reshape(nfft, nfft))


def _profile_kimage(kind, n, hlr, log_kp, k2):
    if kind == "exp" or n == 1:
        return _exp_kprofile(np.sqrt(k2), hlr)
    return _interp_profile(_sersic_ktable(n), log_kp, np.log10(hlr))


def _enclosed_radius(n, hlr, frac):
    """Radius holding ``frac`` of the light of a round Sersic profile."""
    b = gammaincinv(2 * n, 0.5)
    return hlr * (gammaincinv(2 * n, frac) / b) ** n


# --------------------------------------------------------------------------
# the galaxy population
# --------------------------------------------------------------------------

def _draw_magnitude(rng):
    lo, hi = _MAG_RANGE
    a = _COUNT_SLOPE
    v = 10 ** (a * lo) + rng.random() * (10 ** (a * hi) - 10 ** (a * lo))
    return np.log10(v) / a


def _draw_sky_position(rng):
    """A position in a DR9-like footprint: -65 < Dec < 80 deg, |b| > 20 deg."""
    lo, hi = np.sin(np.radians(-65.0)), np.sin(np.radians(80.0))
    while True:
        ra = rng.uniform(0.0, 360.0)
        dec = np.degrees(np.arcsin(rng.uniform(lo, hi)))
        sinb = (np.sin(np.radians(dec)) * np.sin(np.radians(_NGP_DEC))
                + np.cos(np.radians(dec)) * np.cos(np.radians(_NGP_DEC))
                * np.cos(np.radians(ra - _NGP_RA)))
        if abs(sinb) > np.sin(np.radians(20.0)):
            return ra, dec


def _spiral_points(rng, npts, r_scale, n_arms, pitch_deg, chirality, theta0):
    """Face-on positions scattered along logarithmic spiral arms."""
    r = rng.gamma(2.0, r_scale, size=npts) + 0.2 * r_scale
    arm = rng.integers(0, n_arms, size=npts)
    theta = (theta0 + 2 * np.pi * arm / n_arms
             + chirality * np.log(r / r_scale) / np.tan(np.radians(pitch_deg))
             + rng.normal(0.0, 0.10, size=npts))
    r = r * np.exp(rng.normal(0.0, 0.06, size=npts))
    return np.column_stack([r * np.cos(theta), r * np.sin(theta)])


def _draw_galaxy(rng, bands, size, pixel_scale):
    """Draw the parameters of one mock galaxy (all lengths in arcsec)."""
    import galsim

    p = {}
    mag_r = _draw_magnitude(rng)
    p_early = 0.30 + 0.04 * (_MAG_RANGE[1] - mag_r)
    early = bool(rng.random() < p_early)
    log_r = 0.17 - 0.16 * (mag_r - 17.0) + rng.normal(0.0, 0.15) - (0.08 if early else 0.0)
    size_r = float(np.clip(10 ** log_r, 0.5, 6.0))
    if early:
        bt = rng.uniform(0.55, 0.95)
        n_bulge = float(rng.choice([3.0, 3.5, 4.0, 4.5]))
        hlr_bulge = size_r * rng.uniform(0.8, 1.0)
        hlr_disk = size_r * rng.uniform(1.2, 2.0)
        q = 0.4 + 0.6 * rng.beta(3.0, 1.8)
        f_knot, f_arm, n_arms = 0.0, 0.0, 0
    else:
        bt = 0.6 * rng.beta(1.2, 4.0)
        n_bulge = float(rng.choice([1.5, 2.0, 2.5, 3.0]))
        hlr_disk = size_r * rng.uniform(0.9, 1.15)
        hlr_bulge = hlr_disk * rng.uniform(0.15, 0.45)
        cosi = rng.random()
        q = np.sqrt((1 - 0.3 ** 2) * cosi ** 2 + 0.3 ** 2)
        f_knot = rng.uniform(0.04, 0.15)
        spiral = rng.random() < 0.7
        f_arm = rng.uniform(0.25, 0.45) if spiral else 0.0
        n_arms = (2 if rng.random() < 0.75 else 3) if spiral else 0
    beta = rng.uniform(0.0, 180.0)

    # colours: g-r and r-z per component, a shared offset per galaxy
    d_gr = rng.normal(0.0, 0.04)
    d_rz = 0.5 * d_gr + rng.normal(0.0, 0.03)
    col = {"bulge": (rng.normal(0.92, 0.05) + d_gr, rng.normal(0.64, 0.04) + d_rz)}
    if early:
        # S0-like disks: almost as red as the bulge
        col["disk"] = (col["bulge"][0] - rng.uniform(0.0, 0.12),
                       col["bulge"][1] - rng.uniform(0.0, 0.06))
    else:
        col["disk"] = (0.40 + 0.3 * bt + rng.normal(0.0, 0.06) + d_gr,
                       0.28 + 0.15 * bt + rng.normal(0.0, 0.04) + d_rz)
    col["arm"] = (col["disk"][0] - 0.12, col["disk"][1] - 0.05)
    col["knot"] = (rng.normal(0.15, 0.08) + d_gr, rng.normal(0.08, 0.06) + d_rz)

    flux_r = 10 ** ((22.5 - mag_r) / 2.5)
    r_flux = {"bulge": bt * flux_r, "disk": (1 - bt) * (1 - f_knot - f_arm) * flux_r,
              "arm": (1 - bt) * f_arm * flux_r, "knot": (1 - bt) * f_knot * flux_r}
    weights = {c: _band_weights(r_flux[c], *col[c], bands) for c in r_flux}

    # knots: GalSim RandomKnots tracing the disk, plus knots on the arms
    r_scale = hlr_disk / 1.6783469900166608
    knot_pos = np.zeros((0, 2))
    arm_pos = np.zeros((0, 2))
    n_on_arms = 0
    if f_knot > 0:
        n_knots = int(rng.integers(15, 41))
        n_on_arms = n_knots // 2 if n_arms else 0
        gs_rng = galsim.BaseDeviate(int(rng.integers(1, 2 ** 31 - 1)))
        knots = galsim.RandomKnots(n_knots - n_on_arms,
                                   profile=galsim.Exponential(half_light_radius=hlr_disk),
                                   rng=gs_rng)
        knot_pos = np.asarray(knots.points, dtype=float)
    if n_arms:
        pitch = rng.uniform(12.0, 30.0)
        chirality = 1.0 if rng.random() < 0.5 else -1.0
        theta0 = rng.uniform(0.0, 2 * np.pi)
        arm_pos = _spiral_points(rng, 120, r_scale, n_arms, pitch, chirality, theta0)
        if n_on_arms:
            on_arms = _spiral_points(rng, n_on_arms, r_scale, n_arms, pitch, chirality,
                                     theta0)
            knot_pos = np.vstack([knot_pos, on_arms])
    else:
        pitch = np.nan
    arm_sigma = max(0.2, 0.2 * r_scale)

    # PSF, depth, position in the cutout
    lam = np.array([BAND_WAVELENGTHS[b].to_value(u.nm) for b in bands])
    fwhm_r = rng.uniform(1.0, 1.25)
    fwhm = fwhm_r * (lam / BAND_WAVELENGTHS[_REF_BAND].to_value(u.nm)) ** -0.2
    fwhm = np.clip(fwhm * np.exp(rng.normal(0.0, 0.04, size=len(bands))), 0.8, 1.8)
    depth_shift = rng.uniform(-_DEPTH_SCATTER, _DEPTH_SCATTER, size=len(bands))
    sky_sigma = np.array([_sky_sigma(b, pixel_scale) for b in bands]) * 10 ** (0.4 * depth_shift)
    offset = rng.uniform(-0.4, 0.4, size=2)

    # an occasional faint neighbour
    neighbour = None
    if rng.random() < 0.3:
        nb_mag = rng.uniform(18.5, 21.5)
        nb = {
            "mag_r": nb_mag,
            "n": 1.0 if rng.random() < 0.7 else 4.0,
            "hlr": float(np.clip(10 ** rng.normal(-0.2, 0.15), 0.25, 1.5)),
            "q": rng.uniform(0.35, 1.0),
            "beta": rng.uniform(0.0, 180.0),
        }
        radius = rng.uniform(0.25, 0.65) * size * pixel_scale
        angle = rng.uniform(0.0, 2 * np.pi)
        nb["pos"] = np.array([radius * np.cos(angle), radius * np.sin(angle)])
        gr = rng.uniform(0.3, 1.2)
        rz = 0.2 + 0.5 * (gr - 0.3) + rng.normal(0.0, 0.05)   # red in g-r, red in r-z
        nb["weights"] = _band_weights(10 ** ((22.5 - nb_mag) / 2.5), gr, rz, bands)
        neighbour = nb

    ra, dec = _draw_sky_position(rng)
    noise_seed = int(rng.integers(0, 2 ** 63 - 1))

    p.update(mag_r=mag_r, early=early, bulge_frac=bt, n_bulge=n_bulge, hlr_bulge=hlr_bulge,
             hlr_disk=hlr_disk, q=q, beta=beta, knot_frac=f_knot, arm_frac=f_arm,
             n_arms=n_arms, pitch=pitch, arm_sigma=arm_sigma, knot_pos=knot_pos,
             arm_pos=arm_pos, weights=weights, colours=col, fwhm=fwhm, sky_sigma=sky_sigma,
             offset=offset, neighbour=neighbour, ra=ra, dec=dec, noise_seed=noise_seed)
    return p


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------

def _fft_size(p, size, pixel_scale):
    """Periodic grid big enough that at most ~2% of any component's light wraps."""
    reach = max(_enclosed_radius(p["n_bulge"], p["hlr_bulge"], 0.98),
                _enclosed_radius(1.0, p["hlr_disk"], 0.98)) / np.sqrt(p["q"])
    need = size + 2 * int(np.ceil(reach / pixel_scale))
    return sp_fft.next_fast_len(max(2 * size, need), real=True)


def _render(p, bands, size, pixel_scale):
    """Noiseless (band, y, x) model image in nanomaggy per pixel."""
    nfft = _fft_size(p, size, pixel_scale)
    kx, ky, log_k, pix = _kgrid(nfft, pixel_scale)
    mat = _shear_matrix(p["q"], p["beta"])
    log_kp, k2 = _sheared_logk(kx, ky, mat)

    comps = {
        "bulge": _profile_kimage("sersic", p["n_bulge"], p["hlr_bulge"], log_kp, k2),
        "disk": _exp_kprofile(np.sqrt(k2), p["hlr_disk"]),
    }
    sigma0 = _knot_sigma(pixel_scale)
    for comp, key in (("arm", "arm_pos"), ("knot", "knot_pos")):
        pos = p[key]
        if len(pos):
            kimg = _points_kimage(pos @ mat.T, np.full(len(pos), 1.0 / len(pos)), nfft,
                                  pixel_scale, sigma0)
            if comp == "arm":
                # the arms are further smoothed along the disk (a face-on Gaussian)
                kimg = kimg * np.exp(-0.5 * p["arm_sigma"] ** 2 * k2)
            comps[comp] = kimg

    centre = ((size - 1) / 2.0 + p["offset"]) * pixel_scale
    phase = np.exp(-1j * (kx * centre[0])) * np.exp(-1j * (ky * centre[1]))

    nb = p["neighbour"]
    if nb is not None:
        nb_mat = _shear_matrix(nb["q"], nb["beta"])
        nb_logk, nb_k2 = _sheared_logk(kx, ky, nb_mat)
        nb_k = _profile_kimage("sersic", nb["n"], nb["hlr"], nb_logk, nb_k2)
        nb_centre = centre + nb["pos"]
        nb_k = nb_k * np.exp(-1j * (kx * nb_centre[0])) * np.exp(-1j * (ky * nb_centre[1]))

    out = np.empty((len(bands), size, size), dtype=np.float64)
    moffat = _moffat_ktable(_MOFFAT_BETA)
    for ib in range(len(bands)):
        gal = sum(p["weights"][c][ib] * comps[c] for c in comps) * phase
        if nb is not None:
            gal = gal + nb["weights"][ib] * nb_k
        psf = _interp_profile(moffat, log_k, np.log10(p["fwhm"][ib]))
        img = sp_fft.irfft2(gal * psf * pix, s=(nfft, nfft))
        out[ib] = img[:size, :size]
    return out


def _half_light_radii(p):
    """Circular-aperture half-light radius (arcsec) of the unconvolved galaxy, per band.

    The enclosed flux of each component is tabulated on a grid of radii; the
    bulge and disk exactly (a circle on the sky is an ellipse in the face-on
    frame, and the enclosed light of a round Sersic is a regularised incomplete
    gamma function, averaged over the face-on direction), the arm and knot
    light by counting their points (each arm point at its centre).  The radii
    of the points are on the grid, so the interpolation never crosses a step.
    """
    q = p["q"]
    mat = _shear_matrix(q, p["beta"])
    hmin = min(p["hlr_bulge"], p["hlr_disk"])
    hmax = max(p["hlr_bulge"], p["hlr_disk"])
    point_r = {key: np.sort(np.hypot(*(p[key] @ mat.T).T)) if len(p[key]) else None
               for key in ("arm_pos", "knot_pos")}
    radii = [np.geomspace(0.02 * hmin, 30.0 * hmax, 300)]
    for r in point_r.values():
        if r is not None:
            radii += [r, r * (1 - 1e-9)]
    radii = np.unique(np.concatenate(radii))
    # face-on radius of the on-sky circle in each face-on direction (area preserving);
    # the integrand is even and pi-periodic, so a midpoint rule on [0, pi/2] is enough
    phi = (np.arange(8) + 0.5) * (np.pi / 16)
    rho = radii[:, None] / np.sqrt(np.cos(phi) ** 2 / q + q * np.sin(phi) ** 2)
    enclosed, weights = [], []
    for comp, n, hlr in (("bulge", p["n_bulge"], p["hlr_bulge"]),
                         ("disk", 1.0, p["hlr_disk"])):
        b = gammaincinv(2 * n, 0.5)
        enclosed.append(gammainc(2 * n, b * (rho / hlr) ** (1 / n)).mean(axis=1))
        weights.append(p["weights"][comp])
    for comp, key in (("arm", "arm_pos"), ("knot", "knot_pos")):
        if point_r[key] is not None:
            r = point_r[key]
            enclosed.append(np.searchsorted(r, radii, side="right") / len(r))
            weights.append(p["weights"][comp])
    curves = np.array(weights).T @ np.array(enclosed)          # (band, radius)
    out = np.empty(len(curves))
    log_r = np.log(radii)
    for ib, curve in enumerate(curves):
        half = 0.5 * sum(p["weights"][c][ib] for c in p["weights"])
        i = int(np.searchsorted(curve, half))
        i = min(max(i, 1), len(radii) - 1)
        frac = (half - curve[i - 1]) / (curve[i] - curve[i - 1])
        out[ib] = np.exp(log_r[i - 1] + frac * (log_r[i] - log_r[i - 1]))
    return out


# --------------------------------------------------------------------------
# astropy containers
# --------------------------------------------------------------------------

def _celestial_wcs(ra, dec, size, pixel_scale):
    return make_tan_wcs((size, size), pixel_scale, ra, dec, radesys="ICRS")


def _make_ccd(data, sigma, bands, wcs, pixel_scale, extra_meta, filters=None):
    unc = np.broadcast_to(np.asarray(sigma, dtype=np.float32)[:, None, None],
                          data.shape).copy()
    return make_image(data.astype(np.float32), bands, wcs=wcs, filters=filters,
                      uncertainty=StdDevUncertainty(unc),
                      cards={"PIXSCALE": pixel_scale, **extra_meta})


# --------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------

def make_mock_legacy_survey(n, size=64, bands="grz", seed=None, pixel_scale=_LEGACY_SCALE,
                            return_truth=False, progress=False, sky_noise=1.0):
    """Mock DESI Legacy Survey DR9-like galaxy cutouts, made with GalSim.

    Each galaxy is a Sersic bulge plus an exponential disk with blue
    star-forming knots (`galsim.RandomKnots`) and, for most disk galaxies,
    two or three logarithmic spiral arms; r-band magnitudes 14.5 to 18 with
    counts rising to the faint end, half-light radii of 0.7 to 3 arcsec
    (median 1.3) that shrink with magnitude, axis ratios 0.3 to 1, bulges
    redder than disks.  The galaxy is convolved with a Moffat PSF (beta = 3.5, FWHM
    about 1.0 to 1.3 arcsec, per band and per galaxy), drawn at the centre
    of the cutout (random sub-pixel offset below 0.4 px), and Gaussian sky
    noise of DR9 depth is added (plus the galaxy's own shot noise).  About
    30% of the cutouts have a faint neighbour.  The full model and its
    numbers are in the "Mock Legacy Survey data" page of the documentation.

    Parameters
    ----------
    n : int
        Number of cutouts, at least 1.
    size : int, optional
        Side of the square cutouts in pixels, at least 16.
    bands : str or sequence of str, optional
        Any subset of ``"ugrizy"`` in any order, e.g. ``"grz"`` or
        ``["g", "r", "z"]``; the image planes follow this order.
    seed : int, `numpy.random.SeedSequence` or None, optional
        Seed.  Galaxy ``i`` is drawn from the ``i``-th child of the seed
        sequence, so it does not depend on ``n``:
        ``make_mock_legacy_survey(10, seed=1)[:5]`` equals
        ``make_mock_legacy_survey(5, seed=1)``.  None draws fresh entropy.
    pixel_scale : float or `~astropy.units.Quantity`, optional
        Pixel scale in arcsec per pixel (default 0.262, the Legacy Survey
        coadds).  The sky noise per pixel scales with it.
    return_truth : bool, optional
        Also return a `~astropy.table.QTable` of the true galaxy properties.
    progress : bool, optional
        Show a tqdm progress bar.
    sky_noise : float or sequence of float, optional
        Multiplier of the sky noise, one number or one per band (e.g.
        ``(1, 1, 3)`` for a z band three times noisier): a shallower (> 1) or
        deeper (< 1) survey, the source shot noise following the same
        exposure.  The galaxies and the random streams do not change, so the
        default 1 gives exactly the images of earlier versions.

    Returns
    -------
    images : list of `~astropy.nddata.CCDData`
        One per galaxy: float32 data of shape ``(nbands, size, size)`` in
        nanomaggy per pixel, a 2-D celestial TAN `~astropy.wcs.WCS` (north up,
        east left, ``CRPIX`` at the cutout centre), a
        `~astropy.nddata.StdDevUncertainty` holding the per-band sky sigma
        (the source shot noise is not included, as in the DR9 inverse-variance
        maps) and ``meta`` (a `~astropy.io.fits.Header`, built by
        `astro_sbgm.io.make_image`) with ``BANDS`` (``"g,r,z"``), ``BAND0``,
        ``BAND1``, ..., ``FILTER0``, ... (``"decam:g"``), ``BUNIT``,
        ``PIXSCALE`` and a few truth cards
        (``MAG_<band>``, ``HLR``, ``AXRATIO``, ``PA``, ``BULGEFR``,
        ``PSF_<band>``, ``SKYSIG_<band>``, ``GALID``).
    truth : `~astropy.table.QTable`
        Only when ``return_truth`` is true.  One row per galaxy:
        ``flux_<band>`` (nanomaggy, total model flux of the central galaxy
        before noise), ``mag_<band>`` (AB mag), ``hlr_<band>`` (arcsec,
        radius of the circle holding half the light of the unconvolved
        galaxy), ``half_light_radius`` (the r-band one, or the first band's
        when r is not drawn), ``axis_ratio``, ``position_angle`` (deg, of
        the major axis, east of north), ``bulge_frac`` (r band),
        ``sersic_n`` of the bulge, ``early_type``, ``knot_frac``,
        ``arm_frac`` and ``n_arms`` (r band, fractions of the disk light),
        ``psf_fwhm_<band>`` (arcsec), ``sky_sigma_<band>`` (nanomaggy),
        ``x_offset``/``y_offset`` (pixels from the cutout centre),
        ``ra``/``dec`` (deg) and ``neighbour_mag_r`` (NaN when there is none).

    Raises
    ------
    ValueError
        If ``n < 1``, ``size < 16``, a band is not one of ``ugrizy`` or
        ``pixel_scale`` is not positive.
    TypeError
        If ``n``, ``size`` or ``seed`` is not an integer (or None / SeedSequence
        for ``seed``).

    Examples
    --------
    >>> from astro_sbgm.datasets import make_mock_legacy_survey
    >>> images, truth = make_mock_legacy_survey(4, size=48, seed=1, return_truth=True)
    >>> images[0].shape
    (3, 48, 48)
    >>> images[0].meta["BANDS"]
    'g,r,z'
    """
    n = _check_int(n, "n", 1)
    size = _check_int(size, "size", 16)
    bands = _check_bands(bands)
    pixel_scale = _check_pixel_scale(pixel_scale)
    root = _seed_sequence(seed)
    noise_mult = np.broadcast_to(np.asarray(sky_noise, dtype=np.float64), (len(bands),)) \
        if np.ndim(sky_noise) == 0 or np.size(sky_noise) == len(bands) else None
    if noise_mult is None or not np.all(np.isfinite(noise_mult) & (noise_mult > 0)):
        raise ValueError(f"sky_noise must be a positive number or one per band ({len(bands)}), "
                         f"got {sky_noise!r}")

    images, rows = [], []
    for i in _progress(range(n), n, progress, "mock galaxies"):
        rng = _galaxy_rng(root, i)
        p = _draw_galaxy(rng, bands, size, pixel_scale)
        if np.any(noise_mult != 1.0):
            p["sky_sigma"] = p["sky_sigma"] * noise_mult
        model = _render(p, bands, size, pixel_scale)

        # noise: sky (white Gaussian, DR9 depth) plus the galaxy's own shot noise
        noise_rng = np.random.default_rng(p["noise_seed"])
        sigma = p["sky_sigma"]
        gain = np.array([_sky_per_pixel(b, pixel_scale) for b in bands]) / sigma ** 2
        var = sigma[:, None, None] ** 2 + np.clip(model, 0, None) / gain[:, None, None]
        data = model + np.sqrt(var) * noise_rng.standard_normal(model.shape)

        flux = np.array([sum(p["weights"][c][ib] for c in p["weights"])
                         for ib in range(len(bands))])
        hlr = _half_light_radii(p)
        ref = bands.index(_REF_BAND) if _REF_BAND in bands else 0
        pa = (p["beta"] - 90.0) % 180.0
        wcs = _celestial_wcs(p["ra"], p["dec"], size, pixel_scale)
        ra_gal, dec_gal = wcs.wcs_pix2world([[(size + 1) / 2.0 + p["offset"][0],
                                              (size + 1) / 2.0 + p["offset"][1]]], 1)[0]
        mags = 22.5 - 2.5 * np.log10(flux)
        meta = {"GALID": i}
        for ib, b in enumerate(bands):
            meta[f"MAG_{b.upper()}"] = round(float(mags[ib]), 4)
        meta.update(HLR=round(float(hlr[ref]), 4), AXRATIO=round(float(p["q"]), 4),
                    PA=round(float(pa), 3), BULGEFR=round(float(p["bulge_frac"]), 4))
        for ib, b in enumerate(bands):
            meta[f"PSF_{b.upper()}"] = round(float(p["fwhm"][ib]), 4)
            meta[f"SKYSIG_{b.upper()}"] = float(np.float32(sigma[ib]))
        images.append(_make_ccd(data, sigma, bands, wcs, pixel_scale, meta))

        if return_truth:
            nb = p["neighbour"]
            rows.append(dict(flux=flux, mag=mags, hlr=hlr, hlr_ref=hlr[ref],
                             q=p["q"], pa=pa, bt=p["bulge_frac"], n_bulge=p["n_bulge"],
                             early=p["early"], knot=p["knot_frac"], arm=p["arm_frac"],
                             n_arms=p["n_arms"], fwhm=p["fwhm"], sigma=sigma,
                             dx=p["offset"][0], dy=p["offset"][1], ra=ra_gal, dec=dec_gal,
                             nb_mag=np.nan if nb is None else nb["mag_r"]))
    if not return_truth:
        return images
    return images, _truth_table(rows, bands)


def _truth_table(rows, bands):
    t = QTable()
    t["id"] = np.arange(len(rows))
    for ib, b in enumerate(bands):
        t[f"flux_{b}"] = [r["flux"][ib] for r in rows] * u.nanomaggy
    for ib, b in enumerate(bands):
        t[f"mag_{b}"] = [r["mag"][ib] for r in rows] * u.mag
    for ib, b in enumerate(bands):
        t[f"hlr_{b}"] = [r["hlr"][ib] for r in rows] * u.arcsec
    t["half_light_radius"] = [r["hlr_ref"] for r in rows] * u.arcsec
    t["axis_ratio"] = [r["q"] for r in rows]
    t["position_angle"] = [r["pa"] for r in rows] * u.deg
    t["bulge_frac"] = [r["bt"] for r in rows]
    t["sersic_n"] = [r["n_bulge"] for r in rows]
    t["early_type"] = [r["early"] for r in rows]
    t["knot_frac"] = [r["knot"] for r in rows]
    t["arm_frac"] = [r["arm"] for r in rows]
    t["n_arms"] = [r["n_arms"] for r in rows]
    for ib, b in enumerate(bands):
        t[f"psf_fwhm_{b}"] = [r["fwhm"][ib] for r in rows] * u.arcsec
    for ib, b in enumerate(bands):
        t[f"sky_sigma_{b}"] = [r["sigma"][ib] for r in rows] * u.nanomaggy
    t["x_offset"] = [r["dx"] for r in rows] * u.pix
    t["y_offset"] = [r["dy"] for r in rows] * u.pix
    t["ra"] = [r["ra"] for r in rows] * u.deg
    t["dec"] = [r["dec"] for r in rows] * u.deg
    t["neighbour_mag_r"] = [r["nb_mag"] for r in rows] * u.mag
    t.meta["bands"] = ",".join(bands)
    t.meta["comments"] = ["fluxes are total model fluxes of the central galaxy before noise",
                          "hlr: circular-aperture half-light radius of the unconvolved galaxy",
                          "position_angle: major axis, east of north"]
    return t


def make_trivial_dataset(n, size=32, bands="grz", seed=None):
    """An extremely simple population for fast training tests.

    Every cutout is a round Gaussian blob of fixed width (sigma = size / 10
    pixels) exactly at the centre, with a peak amplitude drawn uniformly in
    0.5 to 1.0 nanomaggy in r (a factor 2) and fixed colours (peak ratios
    0.6 : 1 : 1.3 in g : r : z, interpolated in log wavelength for other
    bands), plus white Gaussian noise of 0.01 nanomaggy in every band.

    Parameters
    ----------
    n : int
        Number of cutouts, at least 1.
    size : int, optional
        Side of the cutouts in pixels, at least 16.
    bands : str or sequence of str, optional
        Any subset of ``"ugrizy"``.
    seed : int, `numpy.random.SeedSequence` or None, optional
        Seed; galaxy ``i`` depends only on ``(seed, i)``.

    Returns
    -------
    list of `~astropy.nddata.CCDData`
        Same form as `make_mock_legacy_survey`: float32 ``(nbands, size,
        size)`` in nanomaggy, celestial TAN WCS, sky-sigma uncertainty,
        ``meta`` with ``BANDS``, ``BAND0``..., ``FILTER0``..., ``BUNIT``,
        ``PIXSCALE`` and ``AMP`` (the r-band peak amplitude).

    Raises
    ------
    ValueError
        If ``n < 1``, ``size < 16`` or a band is not one of ``ugrizy``.
    """
    n = _check_int(n, "n", 1)
    size = _check_int(size, "size", 16)
    bands = _check_bands(bands)
    root = _seed_sequence(seed)
    pixel_scale = LEGACY_SURVEY_PIXEL_SCALE.to_value(u.arcsec)
    # colour 0.6 : 1 : 1.3 (g : r : z) as magnitudes relative to r
    gr, rz = -2.5 * np.log10(0.6), 2.5 * np.log10(1.3)
    ratio = 10 ** (-0.4 * _band_mag_offsets(gr, rz, bands))
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2.0
    blob = np.exp(-0.5 * ((xx - c) ** 2 + (yy - c) ** 2) / (size / 10.0) ** 2)
    sigma = np.full(len(bands), 0.01)
    images = []
    for i in range(n):
        rng = _galaxy_rng(root, i)
        amp = rng.uniform(0.5, 1.0)
        ra, dec = _draw_sky_position(rng)
        data = amp * ratio[:, None, None] * blob[None]
        data = data + sigma[:, None, None] * rng.standard_normal(data.shape)
        wcs = _celestial_wcs(ra, dec, size, pixel_scale)
        images.append(_make_ccd(data, sigma, bands, wcs, pixel_scale,
                                {"GALID": i, "AMP": round(float(amp), 5)}))
    return images
