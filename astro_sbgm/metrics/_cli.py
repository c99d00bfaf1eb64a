"""The work behind ``astro-sbgm measure`` and ``astro-sbgm sgd`` (argparse lives in ``cli``)."""

import os
import warnings

from astropy.utils.exceptions import AstropyUserWarning

from .distances import synthetic_galaxy_distance
from .photometry import measure_galaxies

__all__ = ["measure_command", "sgd_command"]

_FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits", ".fits.gz": "fits"}


def _format_of(path):
    name = str(path).lower()
    for suffix, fmt in _FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"cannot tell the catalogue format of {str(path)!r}: end the name in "
                     f"{', '.join(_FORMATS)}")


def measure_command(paths, output, bands=None, aperture_diameter=12, overwrite=False,
                    progress=False, chunk=500):
    """Measure images and write the catalogue (``astro-sbgm measure``).

    Parameters
    ----------
    paths : str or sequence of str
        FITS files, directories or glob patterns.
    output : str
        Catalogue file; ``.ecsv`` or ``.fits`` decides the format.  In FITS
        the flux unit is written as ``nmgy``, which astropy reads back but
        other FITS readers may not know.
    bands : str, optional
        Band names, when the files do not carry them.
    aperture_diameter : float, optional
        Aperture diameter in pixels.
    overwrite : bool, optional
        Replace an existing ``output``.
    progress : bool, optional
        Show a progress bar (files measured); directories and globs are then
        expanded here and the files measured ``chunk`` at a time, with the
        same result.
    chunk : int, optional
        Files per step of the progress bar.

    Returns
    -------
    `~astropy.table.QTable`
        The catalogue written.

    Raises
    ------
    FileExistsError
        If ``output`` exists and ``overwrite`` is false.
    ValueError
        For an output name without a known extension, and everything
        `measure_galaxies` raises.
    """
    fmt = _format_of(output)
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"{output!r} exists; pass overwrite=True (--overwrite) to "
                              "replace it")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no image paths were given")
    if not progress:
        table = measure_galaxies(paths if len(paths) > 1 else paths[0], bands=bands,
                                 aperture_diameter=aperture_diameter)
    else:
        from astropy.table import vstack
        from tqdm.auto import tqdm

        from .._cli_common import expand_inputs

        paths = expand_inputs(paths)     # one bar step per file: directories and globs

        parts = []
        with tqdm(total=len(paths), desc="measuring", unit="file", dynamic_ncols=True) as bar:
            for i in range(0, len(paths), max(1, int(chunk))):
                block = paths[i:i + max(1, int(chunk))]
                parts.append(measure_galaxies(block if len(block) > 1 else block[0],
                                              bands=bands, aperture_diameter=aperture_diameter))
                bar.update(len(block))
        table = parts[0] if len(parts) == 1 else vstack(parts, metadata_conflicts="silent")
    with warnings.catch_warnings():
        # FITS has no 'nmgy' unit: astropy writes it anyway and reads it back, but
        # warns that other FITS readers will not know it
        warnings.filterwarnings("ignore", message=".*could not be saved in native FITS",
                                category=AstropyUserWarning)
        table.write(output, format=fmt, overwrite=overwrite)
    return table


def sgd_command(path_a, path_b, bootstrap=0, seed=0, pixel_scale=None):
    """Compute the SGD of two catalogue files (``astro-sbgm sgd``).

    Parameters
    ----------
    path_a, path_b : str
        Catalogues (ECSV, FITS) with the SGD columns of `measure_galaxies`.
    bootstrap : int, optional
        Bootstrap resamples for the spread.
    seed : int, optional
        Seed of the bootstrap.
    pixel_scale : float, optional
        Arcsec per pixel, to convert property columns in pixels (see
        `synthetic_galaxy_distance`).

    Returns
    -------
    str
        The table of terms, Cohen's d, rows used and dropped, and the total,
        ready to print.

    Raises
    ------
    FileNotFoundError, KeyError, ValueError, astropy.units.UnitsError
        See `synthetic_galaxy_distance`.
    """
    result = synthetic_galaxy_distance(path_a, path_b, bootstrap=bootstrap, seed=seed,
                                       pixel_scale=pixel_scale)
    return f"A: {path_a}\nB: {path_b}\n{result}"
