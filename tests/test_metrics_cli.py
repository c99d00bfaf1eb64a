"""Tests of the functions behind ``astro-sbgm measure`` and ``astro-sbgm sgd``."""

import galsim
import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.table import QTable
from astropy.wcs import WCS

from astro_sbgm.metrics import measure_galaxies
from astro_sbgm.metrics._cli import measure_command, sgd_command


def write_cutouts(directory, n, seed):
    """Legacy Survey cutout-service layout: one cube, BANDn cards, TAN WCS."""
    rng = np.random.default_rng(seed)
    directory.mkdir()
    for i in range(n):
        gal = galsim.Exponential(half_light_radius=rng.uniform(0.5, 1.0), flux=rng.uniform(3, 9))
        im = gal.drawImage(nx=32, ny=32, scale=0.262).array
        cube = np.stack([0.6 * im, im, 1.4 * im]) + rng.normal(0, 0.003, (3, 32, 32))
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [150.0, 2.0]
        w.wcs.crpix = [16.5, 16.5]
        w.wcs.cd = [[-0.262 / 3600, 0], [0, 0.262 / 3600]]
        hdu = fits.PrimaryHDU(cube.astype(np.float32), header=w.to_header())
        for b, name in enumerate("grz"):
            hdu.header[f"BAND{b}"] = name
        hdu.header["BUNIT"] = "nanomaggy"
        hdu.writeto(directory / f"gal{i:02d}.fits")
    return directory


def test_measure_and_sgd_commands(tmp_path):
    dir_a = write_cutouts(tmp_path / "a", 6, seed=0)
    write_cutouts(tmp_path / "b", 5, seed=1)
    out_a = tmp_path / "a.ecsv"
    cat = measure_command([str(dir_a)], str(out_a))
    assert len(cat) == 6 and out_a.exists()
    back = QTable.read(out_a)
    assert back["r_half"].unit == u.arcsec
    np.testing.assert_allclose(back["flux_r"].value, cat["flux_r"].value)
    # the files measure like the same pixels given as an array
    direct = measure_galaxies(str(dir_a / "gal00.fits"))
    assert direct["flux_g"][0].value == pytest.approx(cat["flux_g"][0].value)
    with pytest.raises(FileExistsError, match="overwrite"):
        measure_command(str(dir_a), str(out_a))
    measure_command(str(dir_a), str(out_a), aperture_diameter=8, overwrite=True)
    assert QTable.read(out_a).meta["APERDIAM"] == 8
    out_b = tmp_path / "b.fits"
    measure_command(str(tmp_path / "b" / "*.fits"), str(out_b))
    assert QTable.read(out_b).meta["HLRBAND"] == "r"
    with pytest.raises(ValueError, match="format"):
        measure_command(str(dir_a), str(tmp_path / "a.txt"))

    text = sgd_command(str(out_a), str(out_b), bootstrap=5, seed=1)
    for label in ("g-r", "r-z", "R_e", "SGD", "A 6", "B 5", "bootstrap"):
        assert label in text
    text_self = sgd_command(str(out_a), str(out_a))
    assert "0.0000" in text_self.splitlines()[-2]  # the SGD row


def test_sgd_command_radius_in_pixels(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        t = QTable()
        for col in ("mag_g", "mag_r", "mag_z", "g_r", "r_z"):
            t[col] = rng.normal(18, 1, 30) * u.mag
        t["r_half"] = rng.lognormal(1.5, 0.3, 30) * u.pix
        t.write(tmp_path / f"{name}.ecsv")
        paths.append(str(tmp_path / f"{name}.ecsv"))
    with pytest.raises(u.UnitsError, match="'r_half' of A is in pixels"):
        sgd_command(*paths)
    assert "R_e" in sgd_command(*paths, pixel_scale=0.262)
