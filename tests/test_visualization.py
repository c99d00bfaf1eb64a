"""Tests of the colour composites (asinh and linear) and the montages."""

import io

import numpy as np
import pytest
import torch
import astropy.units as u
from astropy.nddata import CCDData, NDData
from matplotlib.figure import Figure

from astro_sbgm.visualization import linear_rgb, plot_comparison, plot_montage, rgb_composite


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
    # both composites share one mapping of bands to channels
    amps = [0.0, 0.0, 0.0]
    amps[bright] = 2.0
    image = _ccd(_blob(amps), bands)
    for centre in (rgb_composite(image)[8, 8], linear_rgb(image)[0, 8, 8],
                   linear_rgb([image, image])[1, 8, 8]):
        assert centre[channel] > 0.3
        others = [c for c in range(3) if c != channel]
        assert np.all(centre[others] == 0)


def test_more_than_three_bands_are_grouped():
    # "griz": blue = mean(g, r), green = i, red = z, in both composites
    image = _ccd(_blob([2.0, 0.0, 0.0, 0.0]), "griz")
    lin = linear_rgb(image, clip=2.0)[0, 8, 8]
    np.testing.assert_allclose(lin, [0.0, 0.0, 0.5])
    lup = rgb_composite(image, scales=None)[8, 8]
    assert lup[2] > 0 and lup[0] == 0 and lup[1] == 0
    lin = linear_rgb(_ccd(_blob([0.0, 0.0, 0.0, 2.0]), "gizr"), clip=2.0)[0, 8, 8]
    np.testing.assert_allclose(lin, [0.0, 0.0, 0.5])       # r is among the two bluest


def test_bands_argument_overrides_and_default_order():
    data = _blob([0.0, 0.0, 2.0])
    # no names: planes run blue to red, so the last plane is red
    assert np.argmax(rgb_composite(data)[8, 8]) == 0
    # names given: the last plane is g, so blue
    assert np.argmax(rgb_composite(data, bands="zrg")[8, 8]) == 2
    with pytest.raises(ValueError, match="plane"):
        rgb_composite(data, bands="gr")
    # the same rules in the linear composite, and BAND0, BAND1, ... metadata
    assert np.argmax(linear_rgb(data)[0, 8, 8]) == 0
    assert np.argmax(linear_rgb(data, bands="zrg")[0, 8, 8]) == 2
    meta = NDData(data, meta={"BAND0": "z", "BAND1": "r", "BAND2": "g"})
    assert np.argmax(linear_rgb(meta)[0, 8, 8]) == 2
    assert np.argmax(rgb_composite(meta)[8, 8]) == 2
    with pytest.raises(ValueError, match="bands"):
        linear_rgb(data[None], bands="gr")


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


def test_linear_rgb_channel_order_and_clip():
    img = np.zeros((1, 3, 10, 10))
    img[0, 2] = np.linspace(0, 1, 100).reshape(10, 10)  # z only
    rgb = linear_rgb(img, "grz", clip=0.5)
    assert rgb.shape == (1, 10, 10, 3)
    assert rgb[..., 0].max() == 1.0 and rgb[..., 1:].max() == 0.0  # z -> red, clipped at 1
    assert rgb[0, 0, 3, 0] == pytest.approx((3 / 99) / 0.5)
    # per-image percentile clip: the 99.5th percentile maps to 1
    rng = np.random.default_rng(0)
    imgs = rng.gamma(2.0, 1.0, size=(2, 3, 20, 20))
    imgs[1] *= 10
    rgb = linear_rgb(imgs, "grz", percentile=99.5)
    for i in range(2):
        level = np.percentile(imgs[i], 99.5)
        np.testing.assert_allclose(rgb[i, ..., 2], np.clip(imgs[i, 0] / level, 0, 1))
    # default percentile is 99.5; a tensor and a list of arrays give the same
    np.testing.assert_array_equal(linear_rgb(imgs), rgb)
    np.testing.assert_array_equal(linear_rgb(torch.as_tensor(imgs)), rgb)
    np.testing.assert_array_equal(linear_rgb(list(imgs)), rgb)
    # one clip level per image; negative pixels are black
    rgb = linear_rgb(np.stack([-imgs[0], imgs[1]]), clip=[1.0, 40.0])
    assert rgb[0].max() == 0.0
    np.testing.assert_allclose(rgb[1, ..., 1], np.clip(imgs[1, 1] / 40.0, 0, 1))
    # a CCDData's bands are read from its meta; NaN shows as black; two bands
    ccd = CCDData(np.ones((2, 4, 4)), unit=u.nanomaggy, meta={"BANDS": "g,r"})
    ccd.data[0, 0, 0] = np.nan
    rgb = linear_rgb(ccd, clip=1.0)
    assert rgb.shape == (1, 4, 4, 3)
    assert rgb[0, 0, 0].tolist() == [1.0, 0.5, 0.0]
    # two unnamed planes run from blue to red, as in rgb_composite
    two = np.zeros((1, 2, 4, 4))
    two[0, 1] = 1.0
    assert linear_rgb(two, clip=1.0)[0, 0, 0].tolist() == [1.0, 0.5, 0.0]


def test_linear_rgb_errors():
    imgs = np.ones((2, 3, 4, 4))
    with pytest.raises(ValueError, match="bands"):
        linear_rgb(np.ones((1, 2, 4, 4)), "grz")
    with pytest.raises(ValueError, match="clip"):
        linear_rgb(imgs, clip=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="percentile"):
        linear_rgb(imgs, percentile=150)
    with pytest.raises(ValueError, match="different shapes"):
        linear_rgb([imgs[0], np.ones((3, 5, 5))])
    with pytest.raises(ValueError, match="different bands"):
        linear_rgb([_ccd(imgs[0], "grz"), _ccd(imgs[1], "zrg")])
    with pytest.raises(ValueError, match="empty"):
        linear_rgb([])
    with pytest.raises(ValueError, match="shape"):
        linear_rgb(np.ones((1, 1, 3, 4, 4)))


def test_montage_axes_and_titles():
    images = [_ccd(_blob([0.3, 0.6, 0.9 + 0.1 * k]), "grz") for k in range(5)]
    fig = plot_montage(images, ncols=3, titles=[f"#{k}" for k in range(5)])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes] == [f"#{k}" for k in range(5)]
    for ax in fig.axes:
        assert len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0
    np.testing.assert_allclose(fig.get_size_inches(), [3 * 1.2, 2 * 1.2])
    # by default every panel shows the linear composite (the paper's Fig. 2, what FID sees)
    shown = fig.axes[4].get_images()[0].get_array()
    np.testing.assert_allclose(shown, linear_rgb(images)[4])
    # with method="lupton", what rgb_composite gives with the same stretch
    fig = plot_montage(images, ncols=3, method="lupton", stretch=0.2)
    shown = fig.axes[4].get_images()[0].get_array()
    np.testing.assert_allclose(shown, rgb_composite(images[4], stretch=0.2))
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
    with pytest.raises(ValueError, match="ncols"):
        plot_montage(stack, ncols=0)
    with pytest.raises(ValueError, match="method"):
        plot_montage(stack, method="log")
    with pytest.raises(TypeError, match="stretch"):
        plot_montage(stack, stretch=0.2)                # not an option of "linear"


def test_montage_fig2_percentile():
    rng = np.random.default_rng(1)
    imgs = rng.gamma(2.0, 1.0, size=(5, 3, 16, 16))
    fig = plot_montage(imgs, ncols=3, titles=list("abcde"), percentile=90.0)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    np.testing.assert_allclose(fig.get_size_inches(), [3 * 1.2, 2 * 1.2])
    for k, ax in enumerate(fig.axes):
        np.testing.assert_allclose(ax.get_images()[0].get_array(),
                                   linear_rgb(imgs[k], percentile=90.0)[0])
    fig = plot_montage(torch.as_tensor(imgs), ncols=5)
    np.testing.assert_allclose(fig.axes[0].get_images()[0].get_array(), linear_rgb(imgs)[0])


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
    np.testing.assert_allclose(top, linear_rgb(real[0])[0])
    np.testing.assert_allclose(bottom, linear_rgb(fake[0], "grz")[0])
    # asinh composites on one stretch show the fakes brighter than the real galaxies
    fig = plot_comparison(real, 2 * fake, n=2, method="lupton", scales=None, stretch=5.0)
    assert len(fig.axes) == 4
    top = fig.axes[0].get_images()[0].get_array()
    bottom = fig.axes[2].get_images()[0].get_array()
    np.testing.assert_allclose(top, rgb_composite(real[0], scales=None, stretch=5.0))
    assert bottom[8, 8].sum() > top[8, 8].sum()
    with pytest.raises(ValueError, match="labels"):
        plot_comparison(real, fake, labels=("one",))
    with pytest.raises(ValueError, match="empty"):
        plot_comparison([], fake)
    with pytest.raises(TypeError, match="clip"):
        plot_comparison(real, fake, method="lupton", clip=1.0)
