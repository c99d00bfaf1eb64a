"""Tests of the metrics figures and the RGB composite."""

import numpy as np
import pytest
import astropy.units as u
from astropy.nddata import CCDData
from astropy.table import QTable
from matplotlib.figure import Figure

from astro_sbgm.metrics import (plot_montage, plot_nearest_neighbours, plot_property_histograms,
                                rgb_composite)


def test_rgb_composite_channel_order_and_clip():
    img = np.zeros((1, 3, 10, 10))
    img[0, 2] = np.linspace(0, 1, 100).reshape(10, 10)  # z only
    rgb = rgb_composite(img, "grz", clip=0.5)
    assert rgb.shape == (1, 10, 10, 3)
    assert rgb[..., 0].max() == 1.0 and rgb[..., 1:].max() == 0.0  # z -> red, clipped at 1
    assert rgb[0, 0, 3, 0] == pytest.approx((3 / 99) / 0.5)
    # per-image percentile clip: the 99.5th percentile maps to 1
    rng = np.random.default_rng(0)
    imgs = rng.gamma(2.0, 1.0, size=(2, 3, 20, 20))
    imgs[1] *= 10
    rgb = rgb_composite(imgs, "grz", percentile=99.5)
    for i in range(2):
        level = np.percentile(imgs[i], 99.5)
        np.testing.assert_allclose(rgb[i, ..., 2], np.clip(imgs[i, 0] / level, 0, 1))
    # a CCDData's bands are read from its meta; NaN shows as black
    ccd = CCDData(np.ones((2, 4, 4)), unit=u.nanomaggy, meta={"BANDS": "g,r"})
    ccd.data[0, 0, 0] = np.nan
    rgb = rgb_composite(ccd, clip=1.0)
    assert rgb[0, 0, 0].tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="bands"):
        rgb_composite(np.ones((1, 2, 4, 4)))


def test_figures_are_returned():
    rng = np.random.default_rng(1)
    imgs = rng.gamma(2.0, 1.0, size=(5, 3, 16, 16))
    fig = plot_montage(imgs, ncols=3, titles=list("abcde"))
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    fig = plot_nearest_neighbours(imgs[:2], imgs, np.array([[1, 2], [3, 4]]),
                                  distances=np.ones((2, 2)))
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert "d=1" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="rows"):
        plot_nearest_neighbours(imgs[:2], imgs, np.array([[1, 2]]))


def test_property_histograms_show_cohens_d():
    rng = np.random.default_rng(2)
    a = QTable({"mag_r": rng.normal(18, 1, 200) * u.mag,
                "r_half": rng.lognormal(0, 0.3, 200) * u.arcsec})
    b = QTable({"mag_r": rng.normal(19, 1, 200) * u.mag,
                "r_half": rng.lognormal(0, 0.3, 200) * u.arcsec})
    fig = plot_property_histograms(a, b, labels=("real", "model"))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    title = fig.axes[0].get_title()
    assert title.startswith("d = ") and 0.7 < float(title[4:]) < 1.3
    assert "arcsec" in fig.axes[1].get_xlabel()
    with pytest.raises(KeyError):
        plot_property_histograms(a, b, columns=["mag_g"])
