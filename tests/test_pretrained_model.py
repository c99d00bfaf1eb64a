"""The bundled model is competent: its galaxies look like the mock survey's, it repairs trails."""

import warnings

import numpy as np
import pytest
from scipy import ndimage

from astro_sbgm import GalaxyDiffusion, pretrained
from astro_sbgm.artifacts import add_satellite_trails
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.metrics import measure_galaxies


@pytest.fixture(scope="module")
def bundled():
    return GalaxyDiffusion.pretrained(pretrained.DEFAULT_MODEL, device="cpu")


def test_card_describes_the_model(bundled):
    card = pretrained.info(pretrained.DEFAULT_MODEL)
    assert card["training"]["n_steps"] == bundled.n_steps_ > 0
    assert "mock" in card["description"].lower()


def test_samples_look_like_the_mock_population(bundled):
    fakes = bundled.sample(8, steps=10, seed=0, progress=False)
    real = make_mock_legacy_survey(200, size=bundled.image_size, seed=4242)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cf, cr = measure_galaxies(fakes), measure_galaxies(real)
    for col in ("mag_r", "r_half"):
        lo, hi = np.nanpercentile(np.asarray(cr[col].value), [16, 84])
        med = np.nanmedian(np.asarray(cf[col].value))
        assert lo <= med <= hi, (col, med, lo, hi)


def _interpolate(data, mask, sigma=2.0):
    """Model-free fill: normalised Gaussian interpolation of the known pixels, per band."""
    known = (~mask).astype(float)
    out = data.copy()
    for b in range(data.shape[0]):
        num = ndimage.gaussian_filter(data[b] * known[b], sigma)
        den = ndimage.gaussian_filter(known[b], sigma)
        out[b][mask[b]] = (num / np.maximum(den, 1e-9))[mask[b]]
    return out


def test_trails_come_back_better_than_interpolation(bundled):
    galaxies = make_mock_legacy_survey(4, size=bundled.image_size, seed=5151)
    err_model, err_interp = [], []
    for i, gal in enumerate(galaxies):
        centre = slice(28, 36)
        for attempt in range(200):          # a 3-4 px trail across the galaxy's core
            defaced, mask = add_satellite_trails(gal, brightness=(5.0, 10.0), width=(3.0, 4.0),
                                                 dashed=0.0, seed=100 * i + attempt)
            if mask[..., centre, centre].any():
                break
        mask = np.broadcast_to(mask, gal.shape)
        fixed = bundled.inpaint(defaced, mask=mask, seed=i)
        truth = np.asarray(gal.data, float)
        err_model.append(np.asarray(fixed.data, float)[mask] - truth[mask])
        err_interp.append(_interpolate(np.asarray(defaced.data, float), mask)[mask]
                          - truth[mask])
    rms_model = np.sqrt(np.mean(np.concatenate(err_model) ** 2))
    rms_interp = np.sqrt(np.mean(np.concatenate(err_interp) ** 2))
    assert rms_model < rms_interp, (rms_model, rms_interp)
