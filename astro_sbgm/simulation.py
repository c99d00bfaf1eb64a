"""Generated galaxies in image simulations: injection into frames and GalSim profiles.

Three steps take a galaxy from the model into a simulation::

    from astropy.coordinates import SkyCoord
    from astro_sbgm import GalaxyDiffusion, inject, to_galsim

    model = GalaxyDiffusion.pretrained()
    where = SkyCoord([150.01, 150.02], [2.20, 2.21], unit="deg")
    galaxies = model.sample(2, seed=0, positions=where)   # cutouts with real WCS
    frame, truth = inject(galaxies, frame)                 # into a larger image
    profile = to_galsim(galaxies[0], band="r")              # a GalSim surface brightness

`inject` adds cutouts (generated or real, `~astropy.nddata.CCDData` in
nanomaggies with a celestial WCS) into a larger image, conserving flux; it
returns a new image and a truth table.  `cutouts` cuts stamps back out of the
frame for `astro_sbgm.metrics.measure_galaxies`.  `to_galsim` turns one band of
a cutout into a `galsim.InterpolatedImage` with its pixel scale and flux.

Noise
-----
A generated cutout is a survey image: it already holds the survey's PSF and a
realisation of its sky noise (and any sky level the model learnt).  Adding it
to a real frame therefore adds the cutout's sky noise to the frame's own: over
the stamp the noise variance is the sum of the two, e.g. ``sqrt(2)`` times
the frame's noise for a frame as deep as the training survey, and the stamp's
footprint can show as a square of higher noise.  The galaxy's own flux is
unaffected.  ``background='border'`` removes the cutout's sky *level* (a
sigma-clipped median of its outer pixels) but cannot remove its noise; to
inject a noise-free galaxy, use a noiseless model of it (a GalSim profile
drawn without noise, or a denoised image) instead.
"""

import warnings

import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.stats import sigma_clipped_stats
from astropy.table import QTable
from astropy.wcs import WCS

from ._validation import check_positions
from .bands import parse_bands
from .io import celestial_wcs, image_bands, read_image, read_images

__all__ = ["inject", "cutouts", "to_galsim", "GRID_TOLERANCE"]

#: A cutout "lies on the frame's grid" when, shifted so that its centre pixel
#: falls where the frame puts it, none of its corners is off its place on the
#: frame by more than this many pixels (for a 64-pixel cutout: pixel scales
#: within about 0.15 %, orientations within about 0.1 degree).  Two north-up
#: TAN grids at different positions differ by the convergence of the meridians
#: (a rotation of about dRA sin(Dec)), which this absorbs for ordinary frames.
GRID_TOLERANCE = 0.05

_NMGY_ZP = 22.5  # AB magnitude of 1 nanomaggy


# --------------------------------------------------------------------------- helpers
_sample_positions = check_positions   # the old name (now in astro_sbgm._validation)


def _centre(shape):
    """0-based pixel coordinates ``(x, y)`` of an image's centre."""
    ny, nx = shape[-2:]
    return (nx - 1) / 2.0, (ny - 1) / 2.0


def _local_tan_wcs(wcs, shape, position):
    """A TAN WCS with ``wcs``'s local pixel grid about the centre, centred on ``position``.

    The linear part (scale, rotation, flip) of ``wcs`` at the cutout centre is
    measured with finite differences in ICRS standard coordinates and kept;
    the centre pixel is put at ``position`` (north stays where it was).
    """
    cx, cy = _centre(shape)
    c0 = wcs.pixel_to_world(cx, cy).icrs
    cd = np.empty((2, 2))
    for j, (dx, dy) in enumerate(((0.5, 0.0), (0.0, 0.5))):
        hi = wcs.pixel_to_world(cx + dx, cy + dy).icrs
        lo = wcs.pixel_to_world(cx - dx, cy - dy).icrs
        ehi, nhi = c0.spherical_offsets_to(hi)
        elo, nlo = c0.spherical_offsets_to(lo)
        cd[0, j] = (ehi - elo).to_value(u.deg)   # east offset per pixel (+RA)
        cd[1, j] = (nhi - nlo).to_value(u.deg)   # north offset per pixel
    position = position.icrs
    out = WCS(naxis=2)
    out.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    out.wcs.cunit = ["deg", "deg"]
    out.wcs.crval = [float(position.ra.deg), float(position.dec.deg)]
    out.wcs.crpix = [cx + 1.0, cy + 1.0]
    out.wcs.cd = cd
    out.pixel_shape = (shape[-1], shape[-2])
    return out


def _galaxy_wcs(galaxy, index):
    wcs = celestial_wcs(galaxy.wcs)
    if wcs is None:
        raise ValueError(f"galaxy {index} has no celestial WCS, so its pixel scale and "
                         "orientation are unknown; attach one, e.g. astro_sbgm.io.make_tan_wcs"
                         "(shape, pixel_scale) (GalaxyDiffusion.sample always does)")
    return wcs


def _background(planes, background, border_width, index):
    """Per-band sky level (nanomaggy) to subtract from ``planes`` (band, y, x)."""
    nb = planes.shape[0]
    if background is None:
        return np.zeros(nb)
    if isinstance(background, str):
        if background != "border":
            raise ValueError(f"background must be None, 'border' or a number (nanomaggy) per "
                             f"band, got {background!r}")
        w = int(border_width)
        ny, nx = planes.shape[-2:]
        if w < 1 or 2 * w >= min(ny, nx):
            raise ValueError(f"border_width={border_width} does not fit galaxy {index} of "
                             f"{ny}x{nx} pixels; give 1 <= border_width < {min(ny, nx) // 2}")
        frame = np.ones((ny, nx), bool)
        frame[w:ny - w, w:nx - w] = False
        out = np.empty(nb)
        for b in range(nb):
            vals = planes[b][frame]
            vals = vals[np.isfinite(vals)]
            out[b] = sigma_clipped_stats(vals, sigma=3.0)[1] if vals.size else 0.0
        return out
    level = np.asarray(u.Quantity(background, u.nanomaggy).value, float)
    if level.ndim == 0:
        return np.full(nb, float(level))
    if level.shape != (nb,):
        raise ValueError(f"background has shape {level.shape}; give one number or one per "
                         f"band ({nb})")
    return level


def _image_bands(image, nplanes, bands):
    """Band names of the image's planes and the bands to inject into."""
    named = image_bands(image.meta, nplanes)
    want = None if bands is None else parse_bands(bands)
    if named is None:
        if want is None or len(want) != nplanes:
            raise ValueError(f"the image's {nplanes} plane(s) carry no band names (meta "
                             "'BANDS', 'BAND0', ... or 'BAND'/'FILTER' for a 2-D image); give "
                             f"bands= with one name per plane, e.g. bands='r' for one plane, "
                             "or set image.meta['BANDS']")
        return want, want
    if len(named) != nplanes:
        raise ValueError(f"the image's meta names bands {named} but it has {nplanes} plane(s); "
                         "fix meta['BANDS']")
    if want is None:
        return named, named
    missing = [b for b in want if b not in named]
    if missing:
        raise ValueError(f"band(s) {missing} are not in the image, which has bands {named}; "
                         f"give bands= among {named}")
    return named, want


# --------------------------------------------------------------------------- inject
def inject(galaxies, image, positions=None, *, bands=None, background=None, border_width=4,
           resample="auto"):
    """Add galaxy cutouts into a larger image, conserving their flux.

    Parameters
    ----------
    galaxies : `~astropy.nddata.CCDData` or list of them
        The cutouts, in anything `astro_sbgm.io.read_images` accepts (for
        example the output of `~astro_sbgm.GalaxyDiffusion.sample`):
        ``(band, y, x)`` in nanomaggies (or a convertible flux unit) with a
        celestial WCS that gives their pixel scale and orientation.  Masked
        pixels are added as they are stored.
    image : `~astropy.nddata.CCDData` or `~astropy.nddata.NDData`
        The frame: ``(band, y, x)`` or 2-D, with a celestial WCS and a flux
        unit (nanomaggy, maggy, Jy, ...; galaxies are converted to it).  Its
        band names come from ``meta`` (``BANDS``, ``BAND0``, ... or
        ``BAND``/``FILTER`` for one plane), or from ``bands``.
    positions : `~astropy.coordinates.SkyCoord`, optional
        Where each galaxy's centre goes: a scalar or one per galaxy.
        Default: each galaxy's own position, the world position of its
        cutout centre (for `~astro_sbgm.GalaxyDiffusion.sample`,
        ``positions=`` given there).
    bands : str or sequence of str, optional
        Bands to inject into (default: all of the image's).  Planes not
        listed are left unchanged.  For an image whose meta names no bands,
        ``bands`` names its planes, one per plane (``'r'`` for a 2-D frame).
    background : None, 'border', float or sequence, optional
        Sky level subtracted from each cutout before it is added.  None
        (default): nothing, the cutout is added as it is.  ``'border'``: per
        band, the sigma-clipped median of the outermost ``border_width``
        pixels of the cutout.  A number or one per galaxy band, in
        nanomaggies (or a `~astropy.units.Quantity`).  Only the level is
        removed, never the cutout's noise (see Notes).
    border_width : int, optional
        Width in pixels of the border used by ``background='border'``.
    resample : {'auto', 'always'}, optional
        ``'auto'``: a cutout whose pixel grid is the frame's (same pixel
        scale and orientation: no corner more than `GRID_TOLERANCE` pixel
        off) is added pixel by pixel at the nearest whole-pixel offset:
        no resampling, the flux is conserved exactly and the noise keeps its
        texture, and the centre moves by up to half a pixel from the asked
        position (the truth table records where it went).  Otherwise it is
        reprojected onto the frame with `reproject.reproject_adaptive`
        (``conserve_flux=True``; the total flux is kept to about a percent,
        the noise becomes correlated).  ``'always'``: always reproject, so
        the centre lands exactly on ``positions``.

    Returns
    -------
    new_image : `~astropy.nddata.CCDData`
        A copy of ``image`` (same shape, unit, WCS, meta) with the galaxies
        added; its mask and uncertainty are carried unchanged (the injected
        pixels' own noise is not added to the uncertainty).  ``meta['NINJECT']``
        counts the galaxies added.
    truth : `~astropy.table.QTable`
        One row per galaxy, in input order: ``index``; ``ra``, ``dec`` [deg]
        and ``x``, ``y`` [pix, 0-based in the frame] where the cutout centre
        landed; ``flux_<b>`` [nmgy] per injected band, the flux actually
        added to the frame (after ``background``); ``resampled`` (whether
        the cutout was reprojected) and ``clipped`` (part of the cutout fell
        off the frame and was not added).  The ``flux_<b>`` names and units
        are those of `astro_sbgm.metrics.measure_galaxies`, whose
        ``flux_<b>`` is an aperture flux: compare it with that of the
        cutouts themselves, or with these totals knowing the aperture
        holds only part of the flux.

    Raises
    ------
    ValueError
        If a galaxy's centre falls off the image (the message names the
        galaxy), the image or a galaxy has no celestial WCS, a band to inject
        is not in the image or not in the galaxies, ``positions`` has the
        wrong length, or ``background``, ``border_width`` or ``resample`` is
        invalid.
    TypeError
        If ``image`` is not a `CCDData`/`NDData` or ``positions`` not a
        `SkyCoord`.
    astropy.units.UnitConversionError
        If the image's unit is not a flux per pixel.

    Notes
    -----
    A generated cutout already holds the survey's PSF and a realisation of
    its sky noise.  Injected into a real frame, its noise adds to the
    frame's: the noise variance over the stamp is the sum of the two (for a
    frame as deep as the training survey, ``sqrt(2)`` times the frame's
    noise), so the stamp is noisier than the frame around it and its edges
    can be seen in a noise map.  ``background='border'`` subtracts the
    cutout's sky level, not its noise; for a noise-free injection use a
    noiseless image of the galaxy (a GalSim profile, see `to_galsim`).
    The truth flux includes the injected sky noise summed over the stamp.
    """
    if not isinstance(image, NDData):
        raise TypeError(f"image must be an astropy CCDData or NDData with a celestial WCS, got "
                        f"{type(image).__name__}; e.g. CCDData(data, unit='nanomaggy', wcs=wcs)")
    if resample not in ("auto", "always"):
        raise ValueError(f"resample must be 'auto' or 'always', got {resample!r}")
    data = np.asarray(image.data)
    if data.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D (y, x) or 3-D (band, y, x), got shape {data.shape}")
    frame_wcs = celestial_wcs(image.wcs)
    if frame_wcs is None:
        raise ValueError("the image has no celestial WCS, so sky positions cannot be placed on "
                         "it; attach one (image.wcs = WCS(header))")
    unit = image.unit
    if unit is None or u.Unit(unit) == u.dimensionless_unscaled:
        raise ValueError(f"the image has no flux unit (unit={unit}); set it, e.g. "
                         "CCDData(data, unit='nanomaggy', wcs=wcs)")
    try:
        # nanomaggy per image unit: galaxies (nanomaggy) are divided by this
        to_nmgy = (1 * u.Unit(unit)).to_value(u.nanomaggy, u.zero_point_flux(3631 * u.Jy))
    except u.UnitConversionError:
        raise u.UnitConversionError(
            f"the image is in {unit}, which is not a flux per pixel convertible to nanomaggy; "
            "calibrate it first or set its unit") from None
    planes = data[None] if data.ndim == 2 else data
    nplanes, fny, fnx = planes.shape
    frame_bands, inject_bands = _image_bands(image, nplanes, bands)

    gals = read_images(galaxies)
    n = len(gals)
    if positions is not None:
        if not isinstance(positions, SkyCoord):
            raise TypeError(f"positions must be an astropy SkyCoord (a scalar or one per "
                            f"galaxy), got {type(positions).__name__}")
        if positions.isscalar:
            positions = _sample_positions(positions, n)
        elif positions.size != n:
            raise ValueError(f"positions holds {positions.size} sky positions for {n} "
                             "galaxies; give one per galaxy or a scalar SkyCoord")
        else:
            positions = positions.ravel()

    # ---- check every galaxy before adding any
    plans = []
    for i, gal in enumerate(gals):
        gb = parse_bands(gal.meta["BANDS"])
        missing = [b for b in inject_bands if b not in gb]
        if missing:
            raise ValueError(f"galaxy {i} has bands {gb} but the image's band(s) {missing} "
                             f"are to be injected; give bands= among {gb}")
        gwcs = _galaxy_wcs(gal, i)
        gshape = gal.shape[-2:]
        cx, cy = _centre(gshape)
        if positions is None:
            pos = gwcs.pixel_to_world(cx, cy)
            arbitrary = bool(gal.meta.get("POSARBIT", False))
        else:
            pos, arbitrary = positions[i], False
        fx, fy = (float(v) for v in frame_wcs.world_to_pixel(pos))
        if not (np.isfinite(fx) and np.isfinite(fy)
                and -0.5 <= fx < fnx - 0.5 and -0.5 <= fy < fny - 0.5):
            radec = pos.icrs
            hint = (" (its RA = Dec = 0 is a placeholder: POSARBIT = T; draw it with "
                    "sample(..., positions=) or pass positions=)" if arbitrary
                    else "; give positions= inside the image")
            raise ValueError(f"galaxy {i} is at RA={radec.ra.deg:.6f}, Dec={radec.dec.deg:.6f} "
                             f"deg, which is pixel ({fx:.1f}, {fy:.1f}) of the {fnx}x{fny} "
                             f"image: off the image{hint}")
        swcs = _local_tan_wcs(gwcs, gshape, pos)
        level = _background(np.asarray(gal.data, np.float64), background, border_width, i)
        idx = [gb.index(b) for b in inject_bands]
        stamp = np.asarray(gal.data, np.float64)[idx] - level[idx][:, None, None]
        plans.append((i, swcs, gshape, (fx, fy), stamp))

    # ---- add them to a copy
    out = np.array(planes, dtype=np.result_type(planes.dtype, np.float32), copy=True)
    targets = [frame_bands.index(b) for b in inject_bands]
    rows = []
    for i, swcs, gshape, (fx, fy), stamp in plans:
        stamp = stamp / to_nmgy
        gny, gnx = gshape
        cx, cy = _centre(gshape)
        shift = _grid_shift(swcs, frame_wcs, gshape) if resample == "auto" else None
        if shift is not None:
            ox, oy = shift
            y0, x0 = max(oy, 0), max(ox, 0)
            y1, x1 = min(oy + gny, fny), min(ox + gnx, fnx)
            part = stamp[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
            for k, t in enumerate(targets):
                out[t, y0:y1, x0:x1] += part[k]
            added = part.sum(axis=(1, 2))
            clipped = (y1 - y0, x1 - x0) != (gny, gnx)
            x, y = cx + ox, cy + oy
        else:
            added, clipped = _add_reprojected(out, targets, stamp, swcs, frame_wcs)
            x, y = fx, fy
        world = frame_wcs.pixel_to_world(x, y).icrs
        row = {"index": i, "ra": world.ra.deg * u.deg, "dec": world.dec.deg * u.deg,
               "x": x * u.pix, "y": y * u.pix}
        for b, f in zip(inject_bands, added):
            row[f"flux_{b}"] = float(f) * to_nmgy * u.nanomaggy
        row["resampled"] = shift is None
        row["clipped"] = bool(clipped)
        rows.append(row)

    meta = image.meta.copy() if image.meta is not None else {}
    meta["NINJECT"] = len(plans) + int(meta.get("NINJECT", 0) or 0)
    mask = None if image.mask is None else np.array(image.mask, copy=True)
    unc = image.uncertainty
    if unc is not None:
        unc = unc.__class__(np.array(unc.array, copy=True), unit=unc.unit)
    new = CCDData(out[0] if data.ndim == 2 else out, unit=unit, wcs=image.wcs.deepcopy()
                  if hasattr(image.wcs, "deepcopy") else image.wcs,
                  mask=mask, uncertainty=unc, meta=meta)

    truth = QTable(rows=rows) if rows else QTable()
    truth.meta.update({"BANDS": ",".join(inject_bands),
                       "BKG": "none" if background is None else str(background)
                       if isinstance(background, str) else "given",
                       "RESAMPLE": resample,
                       "FLUXDEF": "total flux added to the frame, nanomaggy"})
    return new, truth


def _grid_shift(swcs, frame_wcs, shape):
    """Whole-pixel offset ``(ox, oy)`` if the cutout's grid is the frame's, else None."""
    ny, nx = shape
    px = np.array([0.0, nx - 1.0, 0.0, nx - 1.0, (nx - 1) / 2.0])
    py = np.array([0.0, 0.0, ny - 1.0, ny - 1.0, (ny - 1) / 2.0])
    fx, fy = frame_wcs.world_to_pixel(swcs.pixel_to_world(px, py))
    dx, dy = np.asarray(fx) - px, np.asarray(fy) - py
    if not (np.all(np.isfinite(dx)) and np.all(np.isfinite(dy))):
        return None
    if np.max(np.hypot(dx - dx[-1], dy - dy[-1])) > GRID_TOLERANCE:
        return None
    # the centre's offset, rounded; floor(v + 0.5) rounds halves up, consistently
    return int(np.floor(dx[-1] + 0.5)), int(np.floor(dy[-1] + 0.5))


def _add_reprojected(out, targets, stamp, swcs, frame_wcs):
    """Reproject ``stamp`` (band, y, x) onto the frame and add it; (added per band, clipped)."""
    from reproject import reproject_adaptive

    ny, nx = stamp.shape[-2:]
    fny, fnx = out.shape[-2:]
    # the cutout's footprint on the frame, with a margin for the resampling kernel
    px = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5])
    py = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    fx, fy = frame_wcs.world_to_pixel(swcs.pixel_to_world(px, py))
    margin = 3
    x0 = max(int(np.floor(np.min(fx))) - margin, 0)
    x1 = min(int(np.ceil(np.max(fx))) + margin + 1, fnx)
    y0 = max(int(np.floor(np.min(fy))) - margin, 0)
    y1 = min(int(np.ceil(np.max(fy))) + margin + 1, fny)
    clipped = (x0 == 0 and np.min(fx) < 0) or (y0 == 0 and np.min(fy) < 0) or \
        (x1 == fnx and np.max(fx) > fnx - 1) or (y1 == fny and np.max(fy) > fny - 1)
    sub = frame_wcs[y0:y1, x0:x1]
    added = np.zeros(len(targets))
    for k, t in enumerate(targets):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res, _ = reproject_adaptive((stamp[k], swcs), sub, shape_out=(y1 - y0, x1 - x0),
                                        conserve_flux=True, boundary_mode="constant",
                                        boundary_fill_value=0.0)
        res = np.nan_to_num(res)
        out[t, y0:y1, x0:x1] += res
        added[k] = res.sum()
    return added, bool(clipped)


# --------------------------------------------------------------------------- cutouts
def cutouts(image, positions, size):
    """Cut square stamps out of an image, pixel-exactly, about sky positions.

    Each stamp is the ``size x size`` block of frame pixels whose centre is
    nearest to the position (with an even ``size`` the centre is a pixel
    corner), so that a galaxy injected by `inject` without resampling sits at
    the stamp's centre exactly, where `astro_sbgm.metrics.measure_galaxies`
    centres its aperture.  Pixels off the image are 0 and masked.

    Parameters
    ----------
    image : `~astropy.nddata.CCDData` or `~astropy.nddata.NDData`
        ``(band, y, x)`` or 2-D with a celestial WCS (for example the image
        `inject` returns).
    positions : `~astropy.coordinates.SkyCoord`
        Centres: a scalar or an array (``SkyCoord(truth['ra'], truth['dec'])``
        for `inject`'s truth table).
    size : int
        Stamp size in pixels.

    Returns
    -------
    list of `~astropy.nddata.CCDData`
        One per position, ``(band, size, size)`` (or 2-D for a 2-D image)
        with the image's unit, meta, a shifted WCS and the mask and
        uncertainty cut alike.

    Raises
    ------
    ValueError
        For a non-positive ``size``, an image without a celestial WCS, or a
        position off the image.
    TypeError
        If ``positions`` is not a `SkyCoord`.
    """
    if not isinstance(positions, SkyCoord):
        raise TypeError(f"positions must be an astropy SkyCoord, got {type(positions).__name__}")
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    wcs = celestial_wcs(image.wcs)
    if wcs is None:
        raise ValueError("the image has no celestial WCS; attach one to cut stamps at sky "
                         "positions")
    data = np.asarray(image.data)
    fny, fnx = data.shape[-2:]
    positions = positions.reshape(1) if positions.isscalar else positions.ravel()
    fx, fy = (np.atleast_1d(v) for v in wcs.world_to_pixel(positions))
    out = []
    for i, (x, y) in enumerate(zip(fx, fy)):
        if not (np.isfinite(x) and np.isfinite(y)
                and -0.5 <= x < fnx - 0.5 and -0.5 <= y < fny - 0.5):
            raise ValueError(f"position {i} is pixel ({x:.1f}, {y:.1f}) of the {fnx}x{fny} "
                             "image: off the image")
        x0 = int(np.floor(x - (size - 1) / 2.0 + 0.5))
        y0 = int(np.floor(y - (size - 1) / 2.0 + 0.5))
        out.append(_cut(image, data, wcs, x0, y0, size))
    return out


def _cut(image, data, wcs, x0, y0, size):
    fny, fnx = data.shape[-2:]
    ys, xs = slice(max(y0, 0), min(y0 + size, fny)), slice(max(x0, 0), min(x0 + size, fnx))
    dst = (Ellipsis, slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    src = (Ellipsis, ys, xs)

    def take(arr, fill, dtype):
        buf = np.full(arr.shape[:-2] + (size, size), fill, dtype=dtype)
        buf[dst] = arr[src]
        return buf

    stamp = take(data, 0, np.result_type(data.dtype, np.float32))
    off = take(np.zeros(data.shape[-2:], bool), True, bool)
    mask = None
    if image.mask is not None or off.any():
        base = np.zeros(data.shape, bool) if image.mask is None else np.asarray(image.mask)
        mask = take(np.broadcast_to(base, data.shape), True, bool) | off
    unc = None
    if image.uncertainty is not None:
        unc = StdDevUncertainty(take(np.asarray(image.uncertainty.array), 0, np.float32)) \
            if isinstance(image.uncertainty, StdDevUncertainty) else None
    sub = wcs.deepcopy()
    sub.wcs.crpix = [sub.wcs.crpix[0] - x0, sub.wcs.crpix[1] - y0]
    sub.pixel_shape = (size, size)
    meta = image.meta.copy() if image.meta is not None else {}
    return CCDData(stamp, unit=image.unit, wcs=sub, mask=mask, uncertainty=unc, meta=meta)


# --------------------------------------------------------------------------- GalSim
def to_galsim(galaxy, band=None, *, zero_point=None, background=None, border_width=4,
              **kwargs):
    """One band of a galaxy cutout as a GalSim surface-brightness profile.

    Parameters
    ----------
    galaxy : `~astropy.nddata.CCDData`
        A cutout in anything `astro_sbgm.io.read_image` accepts (for example
        one galaxy of `~astro_sbgm.GalaxyDiffusion.sample`), with a celestial
        WCS; a cutout without one is refused.
    band : str, optional
        The band to use; may be omitted for a one-band cutout.
    zero_point : float, optional
        AB magnitude zero point of the flux unit wanted: the profile's flux
        is ``F * 10**(0.4 * (zero_point - 22.5))`` for a flux ``F`` in
        nanomaggies (counts such that ``mag = zero_point - 2.5 log10(flux)``).
        Default: the flux in nanomaggies (``zero_point = 22.5``).
    background : None, 'border' or float, optional
        Sky level subtracted first: None (default), the sigma-clipped median
        of the outermost ``border_width`` pixels, or a number in nanomaggies.
    border_width : int, optional
        Border width for ``background='border'``.
    **kwargs
        Passed to `galsim.InterpolatedImage` (``x_interpolant``,
        ``pad_factor``, ...).

    Returns
    -------
    `galsim.InterpolatedImage`
        The cutout as a profile in arcsec: the pixel scale and orientation
        of its WCS (GalSim's ``u`` axis points west, so a north-up, east-left
        cutout has a plain pixel scale), with its total flux (the pixel sum
        after ``background``) set as the profile's flux.  The PSF, the pixel
        response and the sky noise of the cutout are part of the profile:
        draw it with ``method='no_pixel'`` and do not convolve it with the
        survey's PSF again.

    Raises
    ------
    ValueError
        If ``band`` is missing for a multi-band cutout or not among its
        bands, the cutout has no celestial WCS, or a pixel is not finite.
    """
    import galsim

    gal = read_image(galaxy)
    gb = parse_bands(gal.meta["BANDS"])
    if band is None:
        if len(gb) != 1:
            raise ValueError(f"the galaxy has bands {gb}; give band= one of them, e.g. "
                             f"band={gb[len(gb) // 2]!r}")
        band = gb[0]
    band = parse_bands([band])[0]
    if band not in gb:
        raise ValueError(f"band {band!r} is not in the galaxy, which has bands {gb}; give "
                         f"band= one of them")
    wcs = _galaxy_wcs(gal, 0)
    plane = np.asarray(gal.data[gb.index(band)], np.float64)
    if not np.all(np.isfinite(plane)):
        raise ValueError(f"the galaxy's {band} band has {int((~np.isfinite(plane)).sum())} "
                         "non-finite pixel(s); fill them (e.g. GalaxyDiffusion.inpaint) first")
    level = _background(plane[None], background, border_width, 0)[0]
    plane = plane - level
    # local Jacobian in arcsec: (east, north) per pixel; GalSim's u points west
    cd = _local_tan_wcs(wcs, plane.shape, wcs.pixel_to_world(*_centre(plane.shape))).wcs.cd
    cd = cd * 3600.0
    jac = galsim.JacobianWCS(-cd[0, 0], -cd[0, 1], cd[1, 0], cd[1, 1])
    factor = 1.0 if zero_point is None else 10 ** (0.4 * (float(zero_point) - _NMGY_ZP))
    flux = float(plane.sum()) * factor
    img = galsim.Image(np.ascontiguousarray(plane * factor), wcs=jac)
    return galsim.InterpolatedImage(img, flux=flux, **kwargs)
