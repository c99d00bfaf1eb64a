"""Tests of astro_sbgm.preprocessing: the paper's eq. 13, the asinh stretch, k-means A."""

import json

import numpy as np
import pytest
from astropy.nddata import NDData

from astro_sbgm.preprocessing import FluxScaler, kmeans_truncation_point


# --------------------------------------------------------------------------- eq. 13
def test_eq13_on_chosen_values():
    s = FluxScaler(upper=5.5)
    x = np.array([-3.0, -1e-6, 0.0, 1.1, 2.75, 4.4, 5.5, 5.5 + 1e-6, 80.0])
    out = s.transform(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, [-1, -1, -1, -0.6, 0.0, 0.6, 1, 1, 1], atol=1e-7)


@pytest.mark.parametrize("upper", [5.5, 5.0, 0.8])
def test_eq13_on_random_values(upper):
    x = np.random.default_rng(1).uniform(-2 * upper, 3 * upper, (2, 3, 17, 17))
    expected = 2.0 * np.maximum(0.0, np.minimum(x, upper)) / upper - 1.0
    out = FluxScaler(upper=upper).transform(x)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, expected, atol=2e-7)
    assert out.min() == -1.0 and out.max() == 1.0     # both clips are hit


@pytest.mark.parametrize("kwargs", [
    dict(upper=5.5),
    dict(upper=3.0, lower=-0.2),
    dict(upper=100.0, lower=-0.05, stretch="asinh", softening=0.05),
    dict(upper=5.5, lower=0.0, stretch="asinh", softening=1.0),
])
def test_inverse_round_trip_inside_the_interval(kwargs):
    s = FluxScaler(**kwargs)
    lo, hi = s.lower, s.upper_
    x = np.concatenate([np.linspace(lo, hi, 1001),
                        np.random.default_rng(2).uniform(lo, hi, 500)])
    y = s.transform(x)
    assert y.min() >= -1 and y.max() <= 1
    back = s.inverse_transform(y)
    assert back.dtype == np.float32
    # float32 precision of y, propagated through the stretch
    np.testing.assert_allclose(back, x, rtol=2e-6, atol=1e-6 * max(hi - lo, 1.0))
    # the ends map exactly onto -1 and 1
    np.testing.assert_allclose(s.transform([lo, hi]), [-1.0, 1.0], atol=1e-7)


def test_inverse_clips_outside():
    s = FluxScaler(upper=2.0, lower=-0.5)
    np.testing.assert_allclose(s.inverse_transform([-3.0, -1.0, 1.0, 7.0]),
                               [-0.5, -0.5, 2.0, 2.0])
    x = np.array([-9.0, 0.3, 9.0])
    np.testing.assert_allclose(s.inverse_transform(s.transform(x)), np.clip(x, -0.5, 2.0),
                               rtol=1e-6)


def test_asinh_stretch_formula_and_monotonic():
    b, lo, hi = 0.05, -0.05, 100.0
    s = FluxScaler(upper=hi, lower=lo, stretch="asinh", softening=b)
    x = np.array([-1.0, lo, 0.0, 0.05, 1.0, 10.0, hi, 1e4])
    f = np.arcsinh(np.clip(x, lo, hi) / b)
    expected = 2 * (f - np.arcsinh(lo / b)) / (np.arcsinh(hi / b) - np.arcsinh(lo / b)) - 1
    np.testing.assert_allclose(s.transform(x), expected, atol=2e-7)
    grid = np.linspace(lo, hi, 2000)
    assert np.all(np.diff(s.transform(grid)) >= 0)
    # asinh keeps more of the range for faint fluxes than the linear map
    lin = FluxScaler(upper=hi, lower=lo)
    assert s.transform([1.0])[0] > lin.transform([1.0])[0] + 0.5


# --------------------------------------------------------------------------- k-means A
def _two_population_images(seed=0):
    """Images whose per-galaxy, per-band 99.9th percentiles form two clusters."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.0, 1.0, (24, 24))
    base /= np.percentile(base, 99.9)                # 99.9th percentile of base = 1
    faint = rng.lognormal(np.log(1.5), 0.2, (20, 2))
    bright = rng.lognormal(np.log(30.0), 0.15, (5, 2))
    levels = np.concatenate([faint, bright])[rng.permutation(25)]
    return levels[:, :, None, None] * base, levels


def test_kmeans_boundary_lies_between_the_clusters():
    images, levels = _two_population_images()
    per = np.percentile(images.reshape(50, -1), 99.9, axis=1)
    np.testing.assert_allclose(np.sort(per), np.sort(levels.ravel()), rtol=1e-9)
    a = kmeans_truncation_point(images)
    lo, hi = per[per < 10], per[per > 10]
    assert lo.size == 40 and hi.size == 10
    assert lo.max() < a < hi.min()
    # 1-D k-means as implemented: A is the mid-point of the two cluster means
    np.testing.assert_allclose(a, 0.5 * (lo.mean() + hi.mean()), rtol=1e-12)
    # the percentile is a parameter
    assert kmeans_truncation_point(images, percentile=50) < a


def test_kmeans_accepts_lists_and_ignores_masked_pixels():
    images, _ = _two_population_images(seed=4)
    a = kmeans_truncation_point(images)
    hot = [NDData(im.copy(), mask=np.zeros(im.shape, bool)) for im in images]
    for nd in hot[:10]:
        nd.data[:, :3, :3] = 1e6                     # hot pixels, masked
        nd.mask[:, :3, :3] = True
    # 9 hot pixels of 576 would move the 99.9th percentile if they were used
    assert kmeans_truncation_point([h.data for h in hot]) > 1e5
    with_nan = np.stack([np.where(h.mask, np.nan, h.data) for h in hot])
    a_masked = kmeans_truncation_point(hot)
    assert a_masked == kmeans_truncation_point(with_nan)
    np.testing.assert_allclose(a_masked, a, rtol=0.05)
    np.testing.assert_allclose(kmeans_truncation_point(list(images)), a, rtol=1e-12)


def test_kmeans_scaler_fit():
    images, _ = _two_population_images(seed=1)
    s = FluxScaler(upper="kmeans")
    assert not s.fitted
    with pytest.raises(RuntimeError, match="never fitted; call fit"):
        s.transform(images)
    with pytest.raises(RuntimeError, match="never fitted"):
        s.inverse_transform(np.zeros(3))
    assert s.fit(images) is s
    assert s.fitted and s.upper_ == kmeans_truncation_point(images)
    y = s.transform(images)
    assert y.min() >= -1.0 and y.max() == 1.0
    np.testing.assert_array_equal(y, FluxScaler(upper=s.upper_).transform(images))
    # a numeric upper ignores fit
    fixed = FluxScaler(upper=5.5).fit(images)
    assert fixed.upper_ == 5.5


def test_kmeans_errors():
    with pytest.raises(ValueError, match=r"shape \(n, band, y, x\)"):
        kmeans_truncation_point(np.ones((3, 8, 8)))
    with pytest.raises(ValueError, match="differ"):
        kmeans_truncation_point(np.ones((4, 3, 8, 8)))
    with pytest.raises(ValueError, match="at least two"):
        kmeans_truncation_point(np.ones((1, 1, 8, 8)))
    with pytest.raises(ValueError, match="percentile must be in"):
        kmeans_truncation_point(np.ones((4, 3, 8, 8)), percentile=0)
    with pytest.raises(ValueError, match="lower"):
        # every percentile below lower: A <= lower is refused
        FluxScaler(upper="kmeans", lower=10.0).fit(_two_population_images()[0] * 0.01)


# --------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("kwargs, fit", [
    (dict(upper=5.5), False),
    (dict(upper=np.float32(4.25), lower=-0.1, stretch="asinh", softening=0.2), False),
    (dict(upper="kmeans", lower=0.0), True),
])
def test_to_dict_from_dict_round_trip(kwargs, fit):
    s = FluxScaler(**kwargs)
    if fit:
        s.fit(_two_population_images()[0])
    d = json.loads(json.dumps(s.to_dict()))          # JSON-safe
    t = FluxScaler.from_dict(d)
    assert t.to_dict() == s.to_dict()
    assert (t.upper, t.lower, t.stretch, t.softening, t.upper_) == (
        s.upper, s.lower, s.stretch, s.softening, s.upper_)
    x = np.linspace(-1, 40, 301)
    np.testing.assert_array_equal(t.transform(x), s.transform(x))
    assert "FluxScaler(" in repr(t)


def test_from_dict_of_an_unfitted_kmeans_scaler_stays_unfitted():
    t = FluxScaler.from_dict(FluxScaler(upper="kmeans").to_dict())
    assert not t.fitted
    with pytest.raises(ValueError, match=r"lacks \['softening'\]"):
        FluxScaler.from_dict({"upper": 5.5, "lower": 0.0, "stretch": "linear"})


@pytest.mark.parametrize("kwargs, match", [
    (dict(stretch="log"), "stretch must be 'linear' or 'asinh'"),
    (dict(upper="auto"), "upper must be a number of nanomaggies or 'kmeans'"),
    (dict(upper=np.nan), "upper must be a finite number"),
    (dict(upper=[1.0, 2.0]), "upper must be a finite number"),
    (dict(upper=True), "upper must be a finite number"),
    (dict(upper=0.0), r"upper \(0.0\) must be larger than lower \(0.0\)"),
    (dict(upper=1.0, lower=2.0), "must be larger than lower"),
    (dict(lower=np.inf), "lower must be a finite number"),
    (dict(stretch="asinh", softening=0.0), "softening must be > 0"),
    (dict(stretch="asinh", softening=None), "softening must be a finite number"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FluxScaler(**kwargs)


# --------------------------------------------------------------------------- per-band sky
def _sky_images(sigmas, n=40, size=32, seed=3, censor=None):
    """Noise images (n, band, size, size) of known per-band sigma, with a bright centre."""
    rng = np.random.default_rng(seed)
    sig = np.asarray(sigmas, float)[None, :, None, None]
    x = rng.normal(0.0, 1.0, (n, len(sigmas), size, size)) * sig
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    x += 5.0 * np.exp(-(xx ** 2 + yy ** 2) / (2 * 3.0 ** 2))   # a galaxy: only adds flux
    return x


def test_sky_sigma_per_band_ignores_the_galaxy():
    from astro_sbgm.preprocessing import sky_sigma

    sig = sky_sigma(_sky_images([0.004, 0.008, 0.05]))
    np.testing.assert_allclose(sig, [0.004, 0.008, 0.05], rtol=0.05)


def test_sky_sigma_refuses_noiseless_images():
    from astro_sbgm.preprocessing import sky_sigma

    with pytest.raises(ValueError, match="noiseless"):
        sky_sigma(np.zeros((3, 3, 16, 16)))


def test_auto_bounds_follow_each_band():
    x = _sky_images([0.004, 0.008, 0.05])
    s = FluxScaler(upper=100.0, lower="auto", stretch="asinh", softening="auto").fit(x)
    assert not FluxScaler(upper=100.0, lower="auto", stretch="asinh").fitted
    np.testing.assert_allclose(s.lower_, -6.0 * s.sky_sigma_)
    np.testing.assert_allclose(s.softening_, 2.0 * s.sky_sigma_)
    # one clip for all bands, the old default, cuts into the noisy band's sky ...
    one = FluxScaler(upper=100.0, lower=-0.05, stretch="asinh", softening=0.05)
    clipped_one = np.mean(x[:, 2] < one.lower)
    # ... the per-band clip keeps (almost) every sky pixel of every band
    back = s.inverse_transform(s.transform(x))
    assert clipped_one > 0.1
    for b in range(3):
        changed = np.abs(back[:, b] - x[:, b]) > 1e-3 * s.sky_sigma_[b]
        assert np.mean(changed) < 1e-3
        assert np.mean(x[:, b] < s.lower_[b]) < 1e-4
    # every band maps its own clip onto -1
    low = s.transform(np.broadcast_to(s.lower_[:, None, None], (3, 4, 4)))
    np.testing.assert_allclose(low, -1.0, atol=1e-6)


def test_per_band_parameters_need_the_band_axis():
    s = FluxScaler(upper=10.0, lower=(-0.1, -0.2, -0.3), stretch="asinh",
                   softening=(0.1, 0.1, 0.2))
    y = s.transform(np.zeros((2, 3, 5, 5)))
    assert y.shape == (2, 3, 5, 5) and len(np.unique(y[:, 0])) == 1
    assert not np.allclose(y[:, 0], y[:, 2])
    with pytest.raises(ValueError, match="3 bands"):
        s.transform(np.zeros((2, 4, 5, 5)))
    with pytest.raises(ValueError, match="3 bands"):
        s.transform(np.zeros(5))


def test_per_band_scaler_json_round_trip_and_old_dicts():
    x = _sky_images([0.004, 0.008, 0.05], n=10)
    s = FluxScaler(upper=100.0, lower="auto", stretch="asinh", softening="auto").fit(x)
    t = FluxScaler.from_dict(json.loads(json.dumps(s.to_dict())))
    np.testing.assert_array_equal(t.transform(x), s.transform(x))
    np.testing.assert_array_equal(t.sky_sigma_, s.sky_sigma_)
    # a scaler saved by an earlier version (one number each) still loads unchanged
    old = {"upper": 100.0, "lower": -0.05, "stretch": "asinh", "softening": 0.05,
           "upper_": 100.0}
    o = FluxScaler.from_dict(old)
    assert o.fitted and o.lower_ == -0.05 and o.softening_ == 0.05
    np.testing.assert_allclose(o.transform([-0.05, 100.0]), [-1.0, 1.0], atol=1e-7)


def test_auto_without_fit_is_refused():
    with pytest.raises(RuntimeError, match="never fitted"):
        FluxScaler(upper=10.0, lower="auto").transform(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="'auto'"):
        FluxScaler(lower="automatic")
