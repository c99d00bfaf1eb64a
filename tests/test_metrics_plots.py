"""Tests of the metrics figures (nearest neighbours, property histograms).

The composites and montages are tested in test_visualization.py.
"""

import numpy as np
import pytest
import astropy.units as u
from astropy.table import QTable
from matplotlib.figure import Figure

import astro_sbgm.metrics
from astro_sbgm.metrics import plot_nearest_neighbours, plot_property_histograms
from astro_sbgm.visualization import linear_rgb


def test_no_duplicate_composites():
    # composites and montages have one home, astro_sbgm.visualization
    for name in ("rgb_composite", "plot_montage", "plot_comparison", "linear_rgb"):
        assert name not in astro_sbgm.metrics.__all__
        assert name not in astro_sbgm.metrics.plots.__all__
    assert not hasattr(astro_sbgm.metrics.plots, "rgb_composite")
    assert not hasattr(astro_sbgm.metrics.plots, "plot_montage")
    assert astro_sbgm.metrics.plots.linear_rgb is linear_rgb


def test_nearest_neighbours_figure():
    rng = np.random.default_rng(1)
    imgs = rng.gamma(2.0, 1.0, size=(5, 3, 16, 16))
    fig = plot_nearest_neighbours(imgs[:2], imgs, np.array([[1, 2], [3, 4]]),
                                  distances=np.ones((2, 2)))
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert "d=1" in fig.axes[1].get_title()
    assert fig.axes[1].get_title().startswith("#1")
    # the panels show the linear composite of the query and of its neighbours
    np.testing.assert_allclose(fig.axes[0].get_images()[0].get_array(), linear_rgb(imgs)[0])
    np.testing.assert_allclose(fig.axes[5].get_images()[0].get_array(), linear_rgb(imgs)[4])
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


def test_figures_draw_into_a_given_figure():
    """fig= (e.g. a pyplot figure, to show it) is cleared, resized and drawn into."""
    rng = np.random.default_rng(3)
    imgs = rng.gamma(2.0, 1.0, size=(4, 3, 16, 16))
    given = Figure(figsize=(1, 1))
    given.add_subplot().plot([0, 1])
    fig = plot_nearest_neighbours(imgs[:2], imgs, np.array([[1], [2]]), fig=given)
    assert fig is given and len(fig.axes) == 4
    assert tuple(fig.get_size_inches()) == pytest.approx((2.4, 2 * 1.2 * 1.15))
    cat = QTable({"mag_r": rng.normal(18, 1, 50) * u.mag})
    fig = plot_property_histograms(cat, cat, fig=given)
    assert fig is given and len(fig.axes) == 1
