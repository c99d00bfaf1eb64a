"""Tests of the colour composites and figures."""

import io

import numpy as np
import pytest
import astropy.units as u
from astropy.nddata import CCDData, NDData
from matplotlib.figure import Figure

from astro_sbgm.visualization import plot_comparison, plot_montage, rgb_composite


def _blob(amps, size=16):
    """(band, y, x) Gaussian blob with the given per-band amplitudes."""
    yy, xx = np.mgrid[0:size, 0:size]
    g = np.exp(-0.5 * ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / 2.0 ** 2)
    return np.array([a * g for a in amps])


def _ccd(data, bands):
    return CCDData(data.astype(np.float32), unit=u.nanomaggy, meta={"BANDS": ",".join(bands)})


def test_shape_range_dtype():
    rng = np.random.default_rng(0)
    data = _blob([0.5, 1.0, 1.5]) + 0.01 * rng.standard_normal((3, 16, 16))
    for image in (data, _ccd(data, "grz"), NDData(data, meta={"BANDS": "g,r,z"})):
        rgb = rgb_composite(image)
        assert rgb.shape == (16, 16, 3)
        assert rgb.dtype == np.float64
        assert rgb.min() >= 0.0 and rgb.max() <= 1.0
        assert rgb.max() > 0.5           # a 1.5 nanomaggy core is well exposed


@pytest.mark.parametrize("bands, bright, channel", [
    ("grz", 2, 0),      # only z: red
    ("grz", 0, 2),      # only g: blue
    ("grz", 1, 1),      # only r: green
    ("zrg", 0, 0),      # order from the band names, not the plane index
    ("zrg", 2, 2),
])
def test_channel_mapping(bands, bright, channel):
    amps = [0.0, 0.0, 0.0]
    amps[bright] = 2.0
    rgb = rgb_composite(_ccd(_blob(amps), bands))
    centre = rgb[8, 8]
    assert centre[channel] > 0.3
    others = [c for c in range(3) if c != channel]
    assert np.all(centre[others] == 0)


def test_bands_argument_overrides_and_default_order():
    data = _blob([0.0, 0.0, 2.0])
    # no names: planes run blue to red, so the last plane is red
    assert np.argmax(rgb_composite(data)[8, 8]) == 0
    # names given: the last plane is g, so blue
    assert np.argmax(rgb_composite(data, bands="zrg")[8, 8]) == 2
    with pytest.raises(ValueError, match="plane"):
        rgb_composite(data, bands="gr")


def test_one_and_two_bands():
    grey = rgb_composite(_blob([1.0])[0])
    assert np.allclose(grey[..., 0], grey[..., 1]) and np.allclose(grey[..., 1], grey[..., 2])
    assert grey.max() > 0.3
    two = rgb_composite(_ccd(_blob([0.0, 2.0]), "gz"), scales=None)[8, 8]
    assert two[0] > 0 and two[2] == 0
    assert two[1] == pytest.approx(0.5 * two[0])     # green is the mean of the two bands


def test_legacy_scales_balance_colours():
    # equal nanomaggies in g, r, z (a flat AB spectrum) come out blue-ish with the
    # Legacy Survey weights, and neutral without them
    data = _blob([1.0, 1.0, 1.0])
    neutral = rgb_composite(data, bands="grz", scales=None)[8, 8]
    assert neutral[0] == pytest.approx(neutral[2])
    legacy = rgb_composite(data, bands="grz")[8, 8]
    assert legacy[2] > legacy[1] > legacy[0]
    custom = rgb_composite(data, bands="grz", scales=[1.0, 1.0, 3.0])[8, 8]
    assert custom[0] > custom[2]
    with pytest.raises(ValueError, match="scales"):
        rgb_composite(data, bands="grz", scales=[1.0, 2.0])


def test_percentile_clips_each_band():
    data = _blob([0.2, 0.2, 0.2]) + 0.001
    data[:, 0, 0] = 1000.0                      # one hot pixel per band
    plain = rgb_composite(data, bands="grz", scales=None)
    clipped = rgb_composite(data, bands="grz", scales=None, percentile=99.0)
    top = np.percentile(data[0], 99.0)
    assert plain[0, 0, 0] == 1.0
    # after clipping, the hot pixel looks like any pixel at the percentile level
    assert clipped[0, 0, 0] == pytest.approx(rgb_composite(
        np.full((3, 1, 1), top), bands="grz", scales=None)[0, 0, 0])
    assert clipped[0, 0, 0] < plain[0, 0, 0]
    with pytest.raises(ValueError, match="percentile"):
        rgb_composite(data, percentile=0)


def test_stretch_and_minimum():
    data = _blob([0.3, 0.3, 0.3])
    soft = rgb_composite(data, bands="grz", stretch=1.0)
    hard = rgb_composite(data, bands="grz", stretch=0.05)
    assert hard[8, 8].sum() > soft[8, 8].sum()
    raised = rgb_composite(data, bands="grz", minimum=0.2)
    assert raised[0, 0].sum() == 0 and raised[8, 8].sum() > 0
    with pytest.raises(ValueError, match="stretch"):
        rgb_composite(data, stretch=0)


def test_deterministic():
    rng = np.random.default_rng(3)
    data = rng.normal(0.1, 0.05, (3, 12, 12))
    np.testing.assert_array_equal(rgb_composite(data, percentile=99.5),
                                  rgb_composite(data.copy(), percentile=99.5))


def test_montage_axes_and_titles():
    images = [_ccd(_blob([0.3, 0.6, 0.9 + 0.1 * k]), "grz") for k in range(5)]
    fig = plot_montage(images, ncols=3, titles=[f"#{k}" for k in range(5)])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes] == [f"#{k}" for k in range(5)]
    for ax in fig.axes:
        assert len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0
    np.testing.assert_allclose(fig.get_size_inches(), [3 * 1.2, 2 * 1.2])
    # every panel shows what rgb_composite gives with the same stretch
    shown = fig.axes[4].get_images()[0].get_array()
    np.testing.assert_allclose(shown, rgb_composite(images[4]))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_montage_array_input_and_fig_reuse():
    stack = np.stack([_blob([0.5, 0.5, 0.5]) for _ in range(3)])
    fig = plot_montage(stack, ncols=8)
    assert len(fig.axes) == 3
    np.testing.assert_allclose(fig.get_size_inches(), [3 * 1.2, 1.2])
    again = plot_montage(stack[:2], fig=fig)
    assert again is fig and len(fig.axes) == 2
    with pytest.raises(ValueError, match="titles"):
        plot_montage(stack, titles=["a"])
    with pytest.raises(ValueError, match="empty"):
        plot_montage([])


def test_comparison():
    real = [_ccd(_blob([0.2, 0.5, 0.9]), "grz") for _ in range(5)]
    fake = np.stack([_blob([0.9, 0.5, 0.2]) for _ in range(4)])
    fig = plot_comparison(real, fake, n=6, labels=("data", "model"), bands="grz")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 8                        # n reduced to the shorter set
    assert fig.axes[0].get_ylabel() == "data"
    assert fig.axes[4].get_ylabel() == "model"
    top = fig.axes[0].get_images()[0].get_array()
    bottom = fig.axes[4].get_images()[0].get_array()
    assert top[8, 8, 0] > top[8, 8, 2]                  # red real galaxies
    assert bottom[8, 8, 2] > bottom[8, 8, 0]            # blue fakes
    with pytest.raises(ValueError, match="labels"):
        plot_comparison(real, fake, labels=("one",))
