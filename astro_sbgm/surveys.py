"""Real survey files in: Legacy Survey bricks, mask bits, catalogue to cutouts.

`read_legacy_brick` reads the coadds of one DESI Legacy Imaging Surveys
brick (DR9 or DR10: an image and an inverse-variance file per band plus the
``maskbits`` file) into one canonical `~astropy.nddata.CCDData` ``(band, y,
x)`` in nanomaggies with a standard-deviation uncertainty and a mask.
`make_cutouts` cuts cutouts about the positions of a catalogue out of such
bricks (or any canonical images) with `astropy.nddata.Cutout2D`, and returns
them with an index table in which sources off the images, cut by an image
edge or on masked pixels are flagged, never dropped.  `legacy_survey_cutout_url`
spells the address of the Legacy Survey cutout service for one position.

The file layout and the bit definitions are those of the Legacy Surveys
documentation (https://www.legacysurvey.org/dr10/files/ and
https://www.legacysurvey.org/dr10/bitmasks/):

``coadd/<AAA>/<brick>/legacysurvey-<brick>-image-<filter>.fits.fz``
    The inverse-variance weighted coadd in nanomaggies per pixel, 3600 x 3600
    pixels of 0.262" on a TAN projection (0.25 x 0.25 deg), Lanczos-3
    resampled.  ``<AAA>`` is the first three characters of the brick name.
``coadd/<AAA>/<brick>/legacysurvey-<brick>-invvar-<filter>.fits.fz``
    Its inverse variance, in 1 / nanomaggy**2 per pixel (0 where no image
    contributes).
``coadd/<AAA>/<brick>/legacysurvey-<brick>-maskbits.fits.fz``
    HDU 1 the optical ``MASKBITS`` (`LEGACY_SURVEY_MASKBITS`), HDU 2 and 3
    the WISE W1 and W2 masks (`LEGACY_SURVEY_WISEMASK`).

The ``.fits.fz`` files are tile-compressed: the image is in HDU 1, the
primary HDU is empty.  Uncompressed copies (``.fits``, ``.fits.gz``) are
read too.
"""

import enum
import re
import warnings
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import CCDData, Cutout2D, StdDevUncertainty
from astropy.table import QTable, Table
from astropy.utils.decorators import deprecated_renamed_argument

from ._atomic import atomic_write
from .bands import LEGACY_SURVEY_PIXEL_SCALE, parse_bands
from .exceptions import AstroSBGMDeprecationWarning, AstroSBGMInputWarning
from .io import (as_nanomaggy, celestial_wcs, header_cards, make_image, parse_unit,
                 read_images, read_mask, wcs_from_header, write_image)

__all__ = ["LEGACY_SURVEY_MASKBITS", "LEGACY_SURVEY_WISEMASK", "DEFAULT_BRICK_MASKBITS",
           "CutoutFlag", "read_legacy_brick", "make_cutouts", "legacy_survey_cutout_url"]

from ._maskbits import LEGACY_SURVEY_MASKBITS  # noqa: E402  (defined below io, used by both)

#: The WISE masks of HDU 2 (W1) and HDU 3 (W2) of the maskbits files
#: (``WISEMASK_W1`` / ``WISEMASK_W2`` of https://www.legacysurvey.org/dr10/bitmasks/).
LEGACY_SURVEY_WISEMASK = {
    "BRIGHT": 2 ** 0, "SPIKE": 2 ** 1, "GHOST": 2 ** 2, "LATENT": 2 ** 3,
    "LATENT2": 2 ** 4, "HALO": 2 ** 5, "SATUR": 2 ** 6, "SPIKE2": 2 ** 7,
}

#: The bits `read_legacy_brick` masks by default: bright-star cores and the
#: pixels saturated or bad in every exposure of a band (the per-band bits mask
#: only their own band).  ``MEDIUM`` (large halos of G < 16 stars),
#: ``GALAXY`` (large galaxies, often the targets), ``CLUSTER``, ``NPRIMARY``
#: (the brick overlap) and ``BAILOUT`` are left to the user.
DEFAULT_BRICK_MASKBITS = ("BRIGHT", "SATUR_G", "SATUR_R", "SATUR_I", "SATUR_Z",
                          "ALLMASK_G", "ALLMASK_R", "ALLMASK_I", "ALLMASK_Z")

_BRICK_FILE = re.compile(r"^legacysurvey-(?P<brick>[0-9]{4}[pm][0-9]{3})-(?P<kind>image|invvar)"
                         r"-(?P<band>[a-zA-Z0-9]+)\.fits(\.fz|\.gz)?$")
_SUFFIXES = (".fits.fz", ".fits", ".fits.gz")


class CutoutFlag(enum.IntFlag):
    """Bits of the ``flags`` column of the `make_cutouts` index table."""

    #: No image holds the position (or it is not finite): no cutout.
    OFF_IMAGE = 1
    #: Part of the cutout lies beyond the image edge: those pixels are 0 and masked.
    PARTIAL = 2
    #: A masked pixel lies within ``center_radius`` of the source, in some band.
    MASKED_CENTRE = 4
    #: Some pixel of the cutout is masked (in some band).
    MASKED_PIXELS = 8


# --------------------------------------------------------------------------- bricks
def _brick_dir(path, brick):
    """The directory holding a brick's files: ``path`` or ``path/<AAA>/<brick>``."""
    path = Path(path)
    if brick is not None:
        nested = path / brick[:3] / brick
        if not any(path.glob(f"legacysurvey-{brick}-*")) and nested.is_dir():
            return nested
    return path


def _find(directory, stem):
    for suffix in _SUFFIXES:
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _brick_files(path, brick, bands):
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no such directory: {str(path)!r}; give the directory of a "
                                "Legacy Survey brick (coadd/<AAA>/<brick>) or the coadd "
                                "directory with brick=")
    if brick is not None:
        brick = str(brick).strip().lower()
        if not re.fullmatch(r"[0-9]{4}[pm][0-9]{3}", brick):
            raise ValueError(f"brick={brick!r} is not a Legacy Survey brick name (like "
                             "'1500p022': RA*10 in 4 digits, p/m, |Dec|*10 in 3 digits)")
    directory = _brick_dir(path, brick)
    if brick is None:
        found = sorted({m.group("brick") for f in directory.iterdir()
                        if (m := _BRICK_FILE.match(f.name))})
        if not found:
            raise ValueError(f"no Legacy Survey brick image (legacysurvey-<brick>-image-"
                             f"<band>.fits.fz) in {str(directory)!r}; give the brick's "
                             "directory, or the coadd directory with brick=")
        if len(found) > 1:
            raise ValueError(f"{str(directory)!r} holds several bricks {found}; choose one "
                             "with brick=")
        brick = found[0]
    files = {"brick": brick, "image": {}, "invvar": {}, "dir": directory}
    for band in bands:
        for kind in ("image", "invvar"):
            stem = f"legacysurvey-{brick}-{kind}-{band}"
            found = _find(directory, stem)
            if found is None:
                what = "image" if kind == "image" else "inverse variance"
                raise FileNotFoundError(
                    f"the {band}-band {what} of brick {brick} ({stem}.fits.fz) is not in "
                    f"{str(directory)!r}; download it, or drop band {band!r} from bands=")
            files[kind][band] = found
    files["maskbits"] = _find(directory, f"legacysurvey-{brick}-maskbits")
    return files


def _read_plane(path, what):
    """Data and header of the first image HDU with data of a (compressed) FITS file."""
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as err:
        raise OSError(f"cannot read the {what} {str(path)!r} as a FITS file ({err})") from None
    with hdul:
        hdu = next((h for h in hdul if getattr(h, "is_image", True) and h.data is not None),
                   None)
        if hdu is None:
            raise ValueError(f"the {what} {str(path)!r} holds no image data")
        data = np.array(hdu.data)
        header = hdu.header.copy()
    if data.ndim != 2:
        raise ValueError(f"the {what} {str(path)!r} is not a 2-D image (shape {data.shape})")
    return data, header


def read_legacy_brick(path, brick=None, bands="grz", mask_bits=DEFAULT_BRICK_MASKBITS):
    """Read one Legacy Survey DR9/DR10 coadd brick into one canonical `CCDData`.

    Parameters
    ----------
    path : str or path-like
        The brick's directory (``.../coadd/150/1500p022``) or a directory
        above it (``.../coadd``, with ``brick=``), holding
        ``legacysurvey-<brick>-image-<band>.fits.fz``,
        ``legacysurvey-<brick>-invvar-<band>.fits.fz`` for every band and
        ``legacysurvey-<brick>-maskbits.fits.fz``.
    brick : str, optional
        The brick name (``"1500p022"``); needed when the directory holds
        several bricks or is the coadd directory.
    bands : str or sequence of str, optional
        The bands to read, in this order (default ``"grz"``; DR10 south also
        has ``i``).
    mask_bits : sequence of str or int, or None, optional
        The ``MASKBITS`` that mask a pixel (names of `LEGACY_SURVEY_MASKBITS`
        or integer values; a per-band bit such as ``SATUR_G`` masks only its
        own band), default `DEFAULT_BRICK_MASKBITS`.  ``None``: the maskbits
        file is not read (it may then be absent).  Pixels of zero inverse
        variance and non-finite pixels are masked in any case.

    Returns
    -------
    `~astropy.nddata.CCDData`
        Shape ``(band, y, x)``, float32 nanomaggies per pixel, the brick's
        celestial WCS, a `~astropy.nddata.StdDevUncertainty` ``1 /
        sqrt(invvar)`` (infinite where the inverse variance is 0), the mask,
        the raw maskbits in ``.flags`` (broadcast to every band, 0 when
        ``mask_bits`` is None), and ``meta`` with ``BANDS``, ``BAND0``...,
        ``BUNIT``, ``BRICKNAM``, ``MASKSEL`` (the bits used) and the image
        header's other cards.

    Raises
    ------
    FileNotFoundError
        If the directory, or the image or inverse variance of one of the
        bands (named), or the maskbits file (when ``mask_bits`` is not None)
        is missing.
    ValueError
        For a bad brick name, several bricks and no ``brick=``, files of
        different shapes or WCS, an image unit that is not a flux, negative
        inverse variances, or an unknown mask bit (named).
    """
    names = parse_bands(bands)
    files = _brick_files(path, brick, names)
    brick = files["brick"]
    if mask_bits is not None and files["maskbits"] is None:
        raise FileNotFoundError(
            f"the maskbits file of brick {brick} (legacysurvey-{brick}-maskbits.fits.fz) is "
            f"not in {str(files['dir'])!r}; download it, or pass mask_bits=None to read the "
            "brick without it")
    planes, sigmas, headers = [], [], []
    shape = wcs = None
    for band in names:
        data, header = _read_plane(files["image"][band], f"{band}-band image")
        ivar, _ = _read_plane(files["invvar"][band], f"{band}-band inverse variance")
        if shape is None:
            shape, wcs = data.shape, wcs_from_header(header)
            if wcs is None:
                raise ValueError(f"the {band}-band image {str(files['image'][band])!r} has no "
                                 "celestial WCS")
        for arr, what in ((data, "image"), (ivar, "inverse variance")):
            if arr.shape != shape:
                raise ValueError(f"the {band}-band {what} of brick {brick} is {arr.shape} "
                                 f"but the {names[0]}-band image is {shape}; the files are "
                                 "not of one brick")
        other = wcs_from_header(header)
        if other is None or not np.allclose(other.wcs.crval, wcs.wcs.crval, atol=1e-7) \
                or not np.allclose(other.wcs.crpix, wcs.wcs.crpix, atol=1e-3):
            raise ValueError(f"the {band}-band image of brick {brick} is not on the WCS of the "
                             f"{names[0]}-band image; the files are not of one brick")
        bunit = str(header.get("BUNIT", "")).strip()
        # the coadds are documented in nanomaggies per pixel; a BUNIT, when there, must agree
        planes.append(as_nanomaggy(data, parse_unit(bunit) if bunit else u.nanomaggy))
        if np.any(ivar < 0):
            raise ValueError(f"the {band}-band inverse variance of brick {brick} has "
                             "negative values; the file is damaged")
        with np.errstate(divide="ignore"):
            sigmas.append(np.where(ivar > 0, 1.0 / np.sqrt(ivar), np.inf).astype(np.float32))
        headers.append(header)
    data = np.stack(planes)
    sigma = np.stack(sigmas)
    mask = ~np.isfinite(data) | ~np.isfinite(sigma) | ~(sigma > 0)
    maskbits = np.zeros(shape, np.int32)
    if mask_bits is not None:
        raw, _ = _read_plane(files["maskbits"], "maskbits file")
        if raw.shape != shape:
            raise ValueError(f"the maskbits of brick {brick} are {raw.shape} but its images "
                             f"{shape}; the files are not of one brick")
        maskbits = raw.astype(np.int32)
        if len(mask_bits):
            mask |= read_mask(maskbits, bits=list(mask_bits), bands=names)
    data = np.where(np.isfinite(data), data, np.float32(0)).astype(np.float32)
    meta = header_cards(headers[0])
    for key in ("BAND", "FILTER"):
        meta.pop(key, None)
    masksel = "none" if mask_bits is None else ",".join(str(b) for b in mask_bits) or "none"
    return make_image(data, names, wcs=celestial_wcs(wcs), mask=mask,
                      uncertainty=StdDevUncertainty(sigma),
                      flags=np.broadcast_to(maskbits, data.shape), meta=meta,
                      cards={"BRICKNAM": brick, "MASKSEL": masksel})


# --------------------------------------------------------------------------- cutouts
def _positions(catalogue, ra, dec):
    """SkyCoord of a catalogue (SkyCoord, Table-like) and its table (or None)."""
    if isinstance(catalogue, SkyCoord):
        coords = catalogue.reshape(-1) if catalogue.ndim else catalogue.reshape(1)
        return coords.icrs, None
    try:
        table = Table(catalogue)
    except Exception as err:
        raise TypeError(f"cannot read a catalogue from a {type(catalogue).__name__} ({err}); "
                        "give an astropy Table/QTable (or anything Table() takes) with RA "
                        "and Dec columns, or a SkyCoord") from None
    if len(table) == 0:
        raise ValueError("the catalogue is empty; give at least one position")

    def column(given, candidates, what):
        if given is not None:
            if given not in table.colnames:
                raise ValueError(f"{what}={given!r} is not a column of the catalogue, which "
                                 f"has {table.colnames}")
            return given
        lower = {c.lower(): c for c in table.colnames}
        for cand in candidates:
            if cand in lower:
                return lower[cand]
        raise ValueError(f"the catalogue has no {what.upper()} column (looked for "
                         f"{', '.join(candidates)}; it has {table.colnames}); name it with "
                         f"{what}=")

    ra_col = column(ra, ("ra", "raj2000", "ra_deg", "alpha_j2000"), "ra")
    dec_col = column(dec, ("dec", "dej2000", "dec_deg", "decj2000", "delta_j2000"), "dec")

    def degrees(name):
        col = table[name]
        unit = getattr(col, "unit", None) or u.deg
        try:
            return u.Quantity(np.asarray(col, dtype=float), unit).to(u.deg)
        except (u.UnitsError, TypeError, ValueError):
            raise ValueError(f"the catalogue column {name!r} must hold angles (degrees), "
                             f"got unit {unit}") from None

    return SkyCoord(degrees(ra_col), degrees(dec_col), frame="icrs"), table


def _cutout_images(images):
    if isinstance(images, CCDData) and images.ndim == 3 and "BANDS" in images.meta:
        images = [images]
    elif not (isinstance(images, (list, tuple)) and images and all(
            isinstance(i, CCDData) and i.ndim == 3 and "BANDS" in i.meta for i in images)):
        images = read_images(images)
    bands = None
    for k, im in enumerate(images):
        if im.wcs is None:
            raise ValueError(f"image {k} has no celestial WCS; cutouts about sky positions "
                             "need one")
        these = parse_bands(str(im.meta["BANDS"]))
        if bands is None:
            bands = these
        elif these != bands:
            raise ValueError(f"image {k} has bands {these} but image 0 has {bands}; cut "
                             "images with the same bands together")
    return list(images)


def _check_size(size):
    if isinstance(size, u.Quantity):
        if size.unit.physical_type != "angle" and size.unit != u.pix:
            raise ValueError(f"size must be pixels or an angle, got {size}")
        if np.any(size.value <= 0):
            raise ValueError(f"size must be positive, got {size}")
        return size
    arr = np.atleast_1d(np.asarray(size))
    if arr.size not in (1, 2) or not np.issubdtype(arr.dtype, np.integer) or np.any(arr < 1):
        raise ValueError(f"size must be a positive number of pixels (or (ny, nx), or an "
                         f"angle), got {size!r}")
    return (int(arr[0]), int(arr[-1]))


def _std_array(image):
    """The standard deviations of an image's uncertainty (no copy when already one)."""
    if image.uncertainty is None:
        return None
    if isinstance(image.uncertainty, StdDevUncertainty):
        return image.uncertainty.array
    return image.uncertainty.represent_as(StdDevUncertainty).array


def _cut(image, sigma_full, coord, size):
    """One multi-band cutout (CCDData) of ``image`` about ``coord``, and its Cutout2D.

    ``sigma_full`` is ``_std_array(image)``, computed once per image.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstroSBGMInputWarning)
        # the geometry only (slices, WCS): no copy of the image plane is made
        cut = Cutout2D(np.asarray(image.data[0]), coord, size, wcs=image.wcs,
                       mode="partial", fill_value=0.0, copy=False)
    shape = (image.shape[0],) + cut.shape
    so, sc = (slice(None),) + cut.slices_original, (slice(None),) + cut.slices_cutout
    data = np.zeros(shape, np.float32)
    data[sc] = image.data[so]
    mask = np.ones(shape, bool)
    mask[sc] = False if image.mask is None else image.mask[so]
    unc = None
    if sigma_full is not None:
        sigma = np.full(shape, np.inf, np.float32)
        sigma[sc] = sigma_full[so]
        unc = StdDevUncertainty(sigma)
    flags = None
    if image.flags is not None:
        flags = np.zeros(shape, np.asarray(image.flags).dtype)
        flags[sc] = np.asarray(image.flags)[so]
    out = CCDData(data, unit=image.unit, wcs=cut.wcs, mask=mask, uncertainty=unc,
                  flags=flags, meta=image.meta.copy())
    partial = tuple(s.stop - s.start for s in cut.slices_cutout) != tuple(cut.shape)
    return out, cut, partial


@deprecated_renamed_argument("centre_radius", "center_radius", "0.1",
                             warning_type=AstroSBGMDeprecationWarning)
def make_cutouts(catalogue, images, size=64, *, ra=None, dec=None, id_column=None,
                 center_radius=3.0, output=None, overwrite=False):
    """Cut canonical cutouts about catalogue positions out of bricks or images.

    For every catalogue row the image that holds the position farthest from
    its edges is chosen, and a cutout of ``size`` pixels is cut about the
    position with `astropy.nddata.Cutout2D` (``mode="partial"``), every band
    at once, carrying the WCS, the mask, the uncertainty and the raw mask
    bits (``.flags``) of the image.  Nothing is dropped: a source off every
    image gets no cutout but a row with the `CutoutFlag.OFF_IMAGE` flag; a
    cutout that reaches beyond the image edge is padded with 0, masked and
    flagged `CutoutFlag.PARTIAL`; masked pixels near the source or anywhere
    in the cutout are flagged.

    Parameters
    ----------
    catalogue : `~astropy.table.Table`, `~astropy.coordinates.SkyCoord` or table-like
        The positions: a SkyCoord, or a table with RA and Dec columns
        (``ra``/``dec``, ``RA``/``DEC``, ``RAJ2000``/``DEJ2000``, ... in any
        case, or named with ``ra=`` and ``dec=``), in degrees unless the
        columns carry an angle unit.
    images : `~astropy.nddata.CCDData`, list of them, or `astro_sbgm.io.read_images` input
        The images, typically bricks from `read_legacy_brick`; each needs a
        celestial WCS, and all the same bands.
    size : int, (int, int) or `~astropy.units.Quantity`, optional
        Cutout size in pixels (``(ny, nx)``), or as an angle.  Default 64.
    ra, dec : str, optional
        Names of the RA and Dec columns.
    id_column : str, optional
        A catalogue column copied into the index table (and written in the
        cutouts' headers as ``OBJID``).
    center_radius : float, optional
        Radius in pixels about the source within which a masked pixel sets
        `CutoutFlag.MASKED_CENTRE` (and within which the raw mask bits are
        OR-ed into the ``maskbits`` column).  Default 3 px (0.8").
        (The old spelling ``centre_radius=`` works until the next release,
        with an `~astro_sbgm.exceptions.AstroSBGMDeprecationWarning`.)
    output : str or path-like, optional
        A directory to write the cutouts into (``cutout_<row>.fits``, the
        `astro_sbgm.io.write_image` layout) and the index table
        (``index.ecsv``).  Existing files are refused (nothing is written)
        unless ``overwrite``.
    overwrite : bool, optional
        Replace existing files in ``output``.

    Returns
    -------
    cutouts : list of `~astropy.nddata.CCDData`
        The cutouts made, in catalogue order (off-image sources have none).
    index : `~astropy.table.QTable`
        One row per catalogue row, in order: ``row`` (catalogue row),
        ``ra``, ``dec`` [deg], ``image`` (index of the image used, -1 for
        none), ``x_image``, ``y_image`` [pix] (position in that image),
        ``x_cutout``, ``y_cutout`` [pix] (position in the cutout, 0-based;
        give them to `astro_sbgm.metrics.measure_galaxies` as ``center=``
        to measure on the source), ``masked_fraction`` (of all the cutout's
        pixels and bands), ``maskbits`` (raw mask bits OR-ed within
        ``center_radius``), ``flags`` (`CutoutFlag`), ``cutout`` (position
        in ``cutouts``, -1 for none), ``file`` (when written), and
        ``id_column`` when given.

    Raises
    ------
    ValueError
        For an empty catalogue, missing RA/Dec columns (named), a bad size,
        images without WCS or with different bands.
    FileExistsError
        If an output file exists and ``overwrite`` is False (nothing is
        written then).
    TypeError
        For a catalogue or images of a type not listed above.
    """
    coords, table = _positions(catalogue, ra, dec)
    images = _cutout_images(images)
    size = _check_size(size)
    if not np.isfinite(center_radius) or center_radius < 0:
        raise ValueError(f"center_radius must be a non-negative number of pixels, got "
                         f"{center_radius!r}")
    if id_column is not None and (table is None or id_column not in table.colnames):
        have = [] if table is None else table.colnames
        raise ValueError(f"id_column={id_column!r} is not a column of the catalogue, which "
                         f"has {have}")
    n = len(coords)
    finite = np.isfinite(coords.ra.deg) & np.isfinite(coords.dec.deg)

    # the image holding each position farthest from its edges
    best = np.full(n, -1)
    depth = np.full(n, -np.inf)
    pix = np.full((n, 2), np.nan)
    for k, im in enumerate(images):
        ny, nx = im.shape[1:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x, y = im.wcs.world_to_pixel(coords[finite]) if finite.any() else ([], [])
        xx = np.full(n, np.nan)
        yy = np.full(n, np.nan)
        xx[finite], yy[finite] = x, y
        with np.errstate(invalid="ignore"):
            d = np.minimum(np.minimum(xx + 0.5, nx - 0.5 - xx), np.minimum(yy + 0.5, ny - 0.5 - yy))
        better = np.isfinite(d) & (d > 0) & (d > depth)
        best[better], depth[better] = k, d[better]
        pix[better] = np.column_stack([xx, yy])[better]

    sigmas = {}
    cutouts, rows = [], []
    for i in range(n):
        row = {"row": i, "image": int(best[i]), "x_image": pix[i, 0], "y_image": pix[i, 1],
               "x_cutout": np.nan, "y_cutout": np.nan, "masked_fraction": np.nan,
               "maskbits": 0, "flags": 0, "cutout": -1}
        if best[i] < 0:
            row["flags"] = int(CutoutFlag.OFF_IMAGE)
            rows.append(row)
            continue
        image = images[best[i]]
        if best[i] not in sigmas:
            sigmas[best[i]] = _std_array(image)
        cut, geom, partial = _cut(image, sigmas[best[i]], coords[i], size)
        xc, yc = geom.to_cutout_position((pix[i, 0], pix[i, 1]))
        yy, xx = np.mgrid[0:cut.shape[1], 0:cut.shape[2]]
        near = np.hypot(xx - xc, yy - yc) <= center_radius
        flags = CutoutFlag(0)
        if partial:
            flags |= CutoutFlag.PARTIAL
        if cut.mask[:, near].any():
            flags |= CutoutFlag.MASKED_CENTRE
        if cut.mask.any():
            flags |= CutoutFlag.MASKED_PIXELS
        if cut.flags is not None and near.any():
            row["maskbits"] = int(np.bitwise_or.reduce(np.asarray(cut.flags)[0][near]))
        row.update(x_cutout=float(xc), y_cutout=float(yc), flags=int(flags),
                   masked_fraction=float(cut.mask.mean()), cutout=len(cutouts))
        cut.meta["CATROW"] = (i, "row of the source in the catalogue")
        cut.meta["RA_SRC"] = (float(coords[i].ra.deg), "[deg] catalogue RA of the source")
        cut.meta["DEC_SRC"] = (float(coords[i].dec.deg), "[deg] catalogue Dec of the source")
        cut.meta["X_SRC"] = (float(xc), "[pix] 0-based x of the source in the cutout")
        cut.meta["Y_SRC"] = (float(yc), "[pix] 0-based y of the source in the cutout")
        cut.meta["CUTFLAGS"] = (int(flags), "astro_sbgm.surveys.CutoutFlag bits")
        if id_column is not None:
            value = table[id_column][i]
            cut.meta["OBJID"] = value.item() if hasattr(value, "item") else value
        cutouts.append(cut)
        rows.append(row)

    index = QTable()
    index["row"] = np.array([r["row"] for r in rows], dtype=np.int64)
    if id_column is not None:
        index[id_column] = table[id_column]
    index["ra"] = coords.ra.to(u.deg)
    index["dec"] = coords.dec.to(u.deg)
    for key, unit, dtype in (("image", None, np.int64), ("x_image", u.pix, float),
                             ("y_image", u.pix, float), ("x_cutout", u.pix, float),
                             ("y_cutout", u.pix, float), ("masked_fraction", None, float),
                             ("maskbits", None, np.int64), ("flags", None, np.int64),
                             ("cutout", None, np.int64)):
        values = np.array([r[key] for r in rows], dtype=dtype)
        index[key] = values if unit is None else values * unit
    index.meta["FLAGBITS"] = ",".join(f"{f.name}={int(f.value)}" for f in CutoutFlag)
    index.meta["CUTSIZE"] = str(size)
    index.meta["CENTRAD"] = float(center_radius)
    if output is not None:
        index["file"] = _write_cutouts(cutouts, index, output, overwrite)
    return cutouts, index


def _write_cutouts(cutouts, index, output, overwrite):
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output={str(out)!r} exists and is not a directory; give a "
                              "directory for the cutouts")
    names = [f"cutout_{int(r):06d}.fits" if c >= 0 else ""
             for r, c in zip(index["row"], index["cutout"])]
    targets = [out / n for n in names if n] + [out / "index.ecsv"]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) exist, e.g. {existing[0]!r}; "
                              "pass overwrite=True to replace them (nothing was written)")
    out.mkdir(parents=True, exist_ok=True)
    for name, c in zip(names, index["cutout"]):
        if c >= 0:
            write_image(cutouts[c], out / name, overwrite=True)
    column = np.array(names, dtype=str)
    table = index.copy()
    table["file"] = column
    atomic_write(out / "index.ecsv",
                 lambda tmp: table.write(tmp, format="ascii.ecsv", overwrite=True))
    return column


# --------------------------------------------------------------------------- cutout service
def legacy_survey_cutout_url(ra, dec, size=256, layer="ls-dr10", pixscale=None, bands="grz"):
    """The address of a FITS cutout from the Legacy Survey viewer's cutout service.

    The service (``https://www.legacysurvey.org/viewer/fits-cutout``) returns
    one FITS cube ``(band, y, x)`` in nanomaggies with ``BAND0``, ``BAND1``,
    ... cards and a TAN WCS, which `astro_sbgm.io.read_image` reads with
    nothing but its path.  Nothing is downloaded here: fetch the address with
    `astropy.utils.data.download_file` (see the "Real survey data" page).

    Parameters
    ----------
    ra, dec : float or `~astropy.units.Quantity`
        Centre, degrees (ICRS).
    size : int, optional
        Side in pixels (the service caps it; 256 by default).
    layer : str, optional
        The survey layer, e.g. ``"ls-dr10"`` or ``"ls-dr9"``.
    pixscale : float or `~astropy.units.Quantity`, optional
        Arcsec per pixel; default `astro_sbgm.bands.LEGACY_SURVEY_PIXEL_SCALE`
        (0.262, the coadds' own scale: no resampling).
    bands : str, optional
        Bands, e.g. ``"grz"``.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For a non-finite position, a Dec outside [-90, 90], a size below 1
        or a non-positive pixel scale.

    Examples
    --------
    >>> from astro_sbgm.surveys import legacy_survey_cutout_url
    >>> legacy_survey_cutout_url(150.1, 2.2, size=64)
    'https://www.legacysurvey.org/viewer/fits-cutout?ra=150.1&dec=2.2&layer=ls-dr10&pixscale=0.262&size=64&bands=grz'
    """
    ra = float(u.Quantity(ra, u.deg).value)
    dec = float(u.Quantity(dec, u.deg).value)
    if not (np.isfinite(ra) and np.isfinite(dec)) or abs(dec) > 90:
        raise ValueError(f"ra, dec must be finite degrees with |dec| <= 90, got {ra}, {dec}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    pixscale = u.Quantity(LEGACY_SURVEY_PIXEL_SCALE if pixscale is None else pixscale,
                          u.arcsec).to_value(u.arcsec)
    if not pixscale > 0:
        raise ValueError(f"pixscale must be positive (arcsec per pixel), got {pixscale!r}")
    bands = "".join(parse_bands(bands))
    query = urlencode({"ra": np.format_float_positional(ra, trim="-"),
                       "dec": np.format_float_positional(dec, trim="-"), "layer": layer,
                       "pixscale": f"{pixscale:g}", "size": int(size), "bands": bands})
    return f"https://www.legacysurvey.org/viewer/fits-cutout?{query}"
