"""Tests of domain transfer (SDEdit, astro_sbgm.transfer) on a tiny model of round blobs."""

import argparse
import hashlib

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.wcs import WCS
from PIL import Image

from astro_sbgm import GalaxyDiffusion, NotFittedError
from astro_sbgm._cli_inpaint import add_transfer_parser
from astro_sbgm.io import AstroSBGMInputWarning, pixel_scale_of, write_image
from astro_sbgm.diffusion import get_sampler
from astro_sbgm.transfer import (DEFAULT_TRANSFER_SAMPLER, band_weights, read_picture,
                                 rgb_to_bands, transfer)

SIZE = 16
#: g : r : z peak ratios of the training blobs (make_trivial_dataset)
COLOURS = np.array([0.6, 1.0, 1.3])


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _disc_picture(path, colour=(255, 255, 255), shape=(30, 40), radius=7, top=False):
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    cy = ny // 4 if top else ny // 2
    img = np.zeros((ny, nx, 3), np.uint8)
    img[(xx - nx // 2) ** 2 + (yy - cy) ** 2 <= radius ** 2] = colour
    Image.fromarray(img).save(path)
    return path


# ----------------------------------------------------------------------------- mappings
def test_rgb_mappings():
    rgb = np.zeros((2, 2, 3))
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 0.9, 0.5, 0.1          # R, G, B
    disp = rgb_to_bands(rgb, "grz")[:, 0, 0]
    np.testing.assert_allclose(disp, [0.1, 0.5, 0.9])              # g <- B, r <- G, z <- R
    np.testing.assert_allclose(rgb_to_bands(rgb, "zrg")[:, 0, 0], [0.9, 0.5, 0.1])
    wav = rgb_to_bands(rgb, "grz", mapping="wavelength")[:, 0, 0]
    # g (482 nm) lies between B (465) and G (532); r and z are redder than R (630)
    f = np.log(482 / 465) / np.log(532 / 465)
    np.testing.assert_allclose(wav, [0.1 + f * 0.4, 0.9, 0.9], rtol=1e-6)
    assert rgb_to_bands(rgb, "r")[0, 0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="mapping"):
        rgb_to_bands(rgb, "grz", mapping="hue")


def test_band_weights():
    np.testing.assert_allclose(band_weights("griz", "grz"),
                               [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    w = band_weights("gi", "grz")
    f = np.log(642 / 482) / np.log(784 / 482)
    np.testing.assert_allclose(w, [[1, 0], [1 - f, f], [0, 1]])
    with pytest.raises(ValueError, match="do not overlap"):
        band_weights(["W1", "W2"], "grz")


def test_read_picture_orientation_alpha_and_grey(tmp_path):
    img = np.zeros((6, 4, 4), np.uint8)
    img[0, :, :3] = 255                       # top row white, opaque
    img[..., 3] = 255
    img[5, :, :] = [255, 0, 0, 0]             # bottom row red but transparent
    Image.fromarray(img, "RGBA").save(tmp_path / "a.png")
    rgb = read_picture(tmp_path / "a.png")
    assert rgb.shape == (6, 4, 3) and rgb.dtype == np.float32
    assert np.all(rgb[-1] == 1.0)             # the top of the picture is the last row
    assert np.all(rgb[0] == 0.0)              # transparent counts as black
    Image.fromarray(np.full((3, 5), 128, np.uint8), "L").save(tmp_path / "g.jpg")
    grey = read_picture(tmp_path / "g.jpg")
    assert grey.shape == (3, 5, 3) and np.allclose(grey, grey[..., :1], atol=0.02)
    with pytest.raises(FileNotFoundError):
        read_picture(tmp_path / "missing.png")


# ----------------------------------------------------------------------------- SDEdit
def test_strength_controls_how_much_changes(model, held_out):
    img = held_out[0]
    small = transfer(model, img, strength=0.05, seed=0, sampler="dpmpp-2m")
    full = transfer(model, img, strength=1.0, seed=0, sampler="dpmpp-2m")
    d_small = np.abs(small.data - img.data).mean()
    d_full = np.abs(full.data - img.data).mean()
    assert d_small < 0.02 < d_full
    assert small.meta["TSTART"] == pytest.approx(50.0)
    # the Karras grid starts where sigma / alpha = 80 when that is below T - 1
    assert 950 < full.meta["TSTART"] <= 999.0


def test_default_is_stochastic_and_strength_still_controls_the_change(model, held_out):
    img = held_out[0]
    small = transfer(model, img, strength=0.05, seed=0)
    full = transfer(model, img, strength=1.0, seed=0)
    # the paper's transfer is an ancestral (stochastic) reverse process; so is the default
    assert small.meta["SAMPLER"] == DEFAULT_TRANSFER_SAMPLER == "dpmpp-2m-sde"
    assert get_sampler(small.meta["SAMPLER"]).stochastic
    assert small.meta["NFE"] == 20
    # a stochastic step redraws the sky noise (0.01 nanomaggy here) even at small strength
    # (about 0.02 of mean change, where the ODE changes < 0.02), but the galaxy stays:
    # the change is well below a full re-draw's
    d_small = np.abs(small.data - img.data).mean()
    d_full = np.abs(full.data - img.data).mean()
    assert d_small < 0.5 * d_full


def test_draws_are_returned_and_carry_the_noise_their_mean_lacks(model, gaussian_sky_model):
    mu, sky, k = 0.8, 0.05, 8
    fake = gaussian_sky_model(model, mu, sky)
    # a noiseless flat "cartoon": every bit of noise in the result comes from the model
    img = CCDData(np.full((3, SIZE, SIZE), mu, np.float32), unit=u.nanomaggy,
                  meta={"BANDS": "g,r,z"})
    summary, draws = transfer(fake, img, strength=0.9, n_draws=k, seed=4,
                              return_draws=True)
    assert len(draws) == k and [d.meta["DRAWIDX"] for d in draws] == list(range(k))
    stack = np.stack([d.data for d in draws])
    np.testing.assert_allclose(summary.data, stack.mean(axis=0), rtol=0, atol=1e-6)
    sky_draws = np.sqrt(np.mean([d.data.var() for d in draws]))
    assert abs(sky_draws / sky - 1) < 0.1                 # each draw: the survey's noise
    assert summary.data.std() < 0.5 * sky                  # the mean: sqrt(K) less
    np.testing.assert_allclose(summary.uncertainty.array, stack.std(axis=0, ddof=1),
                               rtol=1e-5)
    assert summary.meta["DRAWMEAN"] and not draws[0].meta["DRAWMEAN"]
    assert all(d.uncertainty is None for d in draws)
    one = transfer(fake, img, strength=0.9, n_draws=1, seed=4)
    np.testing.assert_allclose(one.data, draws[0].data, rtol=0, atol=1e-6)
    assert not one.meta["DRAWMEAN"]


def test_cartoon_becomes_a_survey_like_galaxy(model, tmp_path):
    path = _disc_picture(tmp_path / "white_disc.png")
    digest = _sha(path)
    out = transfer(model, str(path), strength=0.6, n_draws=4, seed=1)
    assert _sha(path) == digest
    assert out.shape == (3, SIZE, SIZE) and out.unit == u.nanomaggy
    assert out.meta["BANDS"] == "g,r,z" and out.meta["STRENGTH"] == 0.6
    assert out.wcs is not None and pixel_scale_of(out.wcs).to_value(u.arcsec) == \
        pytest.approx(0.262)
    # the white disc (equal fluxes in g, r, z) takes the training colours 0.6 : 1 : 1.3
    peaks = out.data[:, 6:10, 6:10].mean(axis=(1, 2))
    ratio = peaks / peaks[1]
    assert abs(ratio[0] - COLOURS[0]) < 0.5 * abs(1.0 - COLOURS[0])
    assert abs(ratio[2] - COLOURS[2]) < 0.5 * abs(1.0 - COLOURS[2])
    # and lies where the disc was, at the centre
    assert out.data[1, 6:10, 6:10].mean() > 5 * np.abs(out.data[1, :3, :3]).mean()
    unc = out.uncertainty.array
    assert unc.shape == out.shape and unc.mean() > 0 and out.meta["NDRAWS"] == 4


def test_fits_input_keeps_its_wcs_and_file(model, held_out, tmp_path):
    path = write_image(held_out[1], tmp_path / "in.fits")
    digest = _sha(path)
    out = transfer(model, str(path), strength=0.3, seed=0)
    assert _sha(path) == digest
    assert out.wcs.wcs.compare(held_out[1].wcs.wcs)
    assert out.uncertainty is None and out.meta["NFE"] == 20


def test_other_grid_and_bands_are_mapped(model, legacy_factory):
    hdu = legacy_factory(n=24, bands="gri", seed=1)
    scale = 0.2 / 3600
    hdu.header["CD1_1"], hdu.header["CD2_2"] = -scale, scale
    hdu.data = hdu.data / 6.0
    with pytest.warns(AstroSBGMInputWarning, match="mapped by wavelength"):
        out = transfer(model, hdu, strength=0.4, seed=0)
    assert out.shape == (3, SIZE, SIZE)
    assert pixel_scale_of(out.wcs).to_value(u.arcsec) == pytest.approx(0.262, rel=1e-6)
    centre = WCS(hdu.header, naxis=2).pixel_to_world(11.5, 11.5)
    assert out.wcs.pixel_to_world(7.5, 7.5).separation(centre).arcsec < 0.01


def test_ddpm_is_the_paper_sampler(model, held_out):
    out = transfer(model, held_out[0], strength=0.1, sampler="ddpm", seed=0)
    assert out.meta["NFE"] == 101 and out.meta["SAMPLER"] == "ddpm"


def test_reproducible_and_nearest_neighbours(model, held_out):
    img = held_out[2]
    reference = [CCDData(np.zeros_like(img.data), unit=img.unit, meta=img.meta), img,
                 CCDData(img.data * 3.0, unit=img.unit, meta=img.meta)]
    a = transfer(model, img, strength=0.1, seed=5, reference=reference, n_neighbours=2)
    b = transfer(model, held_out[2], strength=0.1, seed=5)
    c = transfer(model, held_out[2], strength=0.1, seed=6)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    assert a.meta["NNIDX1"] == 1 and a.meta["NNDIST1"] <= a.meta["NNDIST2"]
    assert "NNIDX3" not in a.meta
    assert "NNIDX1" not in b.meta


def test_picture_flux_range(model, tmp_path):
    path = _disc_picture(tmp_path / "d.png", colour=(255, 255, 255))
    low = transfer(model, path, strength=0.05, flux_range=(0.0, 0.5), seed=0)
    high = transfer(model, path, strength=0.05, flux_range=(0.0, 1.5), seed=0)
    default = transfer(model, path, strength=0.05, seed=0)    # white -> flux_upper = 2
    assert high.data[1, 7, 7] > 2 * low.data[1, 7, 7]
    assert default.data[1, 7, 7] > 1.5 > 0.8 > low.data[1, 7, 7]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("strength", [0.0, -0.2, 1.5, "strong", None])
def test_bad_strength(model, held_out, strength):
    with pytest.raises(ValueError, match="strength"):
        transfer(model, held_out[0], strength=strength)


def test_errors(model, held_out, tmp_path):
    with pytest.raises(NotFittedError):
        transfer(GalaxyDiffusion(image_size=SIZE), held_out[0])
    with pytest.raises(ValueError, match="do not overlap"):
        transfer(model, np.ones((2, SIZE, SIZE), np.float32), bands=["W1", "W2"])
    with pytest.raises(ValueError, match="n_draws"):
        transfer(model, held_out[0], n_draws=0)
    with pytest.raises(ValueError, match="flux_range"):
        transfer(model, held_out[0], flux_range=(0, 1))
    path = _disc_picture(tmp_path / "d.png")
    with pytest.raises(ValueError, match="flux_range"):
        transfer(model, path, flux_range=(1, 0))
    with pytest.raises(FileNotFoundError):
        transfer(model, tmp_path / "missing.png")


def test_cli_transfer(model, tmp_path):
    mdir = tmp_path / "model"
    model.save(mdir)
    src = _disc_picture(tmp_path / "cartoon.jpg")
    digest = _sha(src)
    parser = argparse.ArgumentParser(prog="astro-sbgm")
    add_transfer_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["transfer", str(src), "-o", str(tmp_path / "out.fits"),
                              "--model", str(mdir), "--strength", "0.5", "--seed", "3",
                              "--device", "cpu"])
    assert args.func(args) == 0
    assert _sha(src) == digest
    with fits.open(tmp_path / "out.fits") as hdul:
        assert hdul[0].data.shape == (3, SIZE, SIZE)
        assert hdul[0].header["TRANSFER"] == "SDEdit" and hdul[0].header["STRENGTH"] == 0.5
    ccd = CCDData.read(tmp_path / "out.fits", hdu=0, unit="nanomaggy")
    assert np.all(np.isfinite(ccd.data))


def test_cli_transfer_ode_and_draws(model, tmp_path):
    mdir = tmp_path / "model"
    model.save(mdir)
    src = _disc_picture(tmp_path / "cartoon.png")
    parser = argparse.ArgumentParser(prog="astro-sbgm")
    add_transfer_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "ode.fits"
    args = parser.parse_args(["transfer", str(src), "-o", str(out), "--model", str(mdir),
                              "--ode", "--n-draws", "2", "--save-draws", "--seed", "1",
                              "--device", "cpu"])
    assert args.func(args) == 0
    with fits.open(out) as hdul:
        assert hdul[0].header["SAMPLER"] == "dpmpp-2m"
        draws = np.stack([hdul["DRAW", k].data for k in (1, 2)])
        np.testing.assert_allclose(hdul[0].data, draws.mean(axis=0), rtol=0, atol=1e-6)
    args = parser.parse_args(["transfer", str(src), "-o", str(tmp_path / "x.fits"),
                              "--model", str(mdir), "--ode", "--sampler", "ddpm"])
    with pytest.raises(ValueError, match="--ode"):
        args.func(args)
    assert not (tmp_path / "x.fits").exists()
