"""Tests of the Fréchet distance, the FID Inception network, KID and the property FD."""

import numpy as np
import pytest
import torch
import astropy.units as u
from astropy.table import QTable

from astro_sbgm.metrics import (FIDInceptionV3, fid, frechet_distance, inception_features, kid,
                                load_fid_inception, property_frechet_distance)
from astro_sbgm.visualization import linear_rgb


def test_frechet_distance_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)


def test_frechet_distance_rotation_invariant_and_singular():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    s1, s2 = a @ a.T, np.diag([1.0, 2.0, 3.0, 4.0, 5.0])
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    rot, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    d = frechet_distance(mu1, s1, mu2, s2)
    d_rot = frechet_distance(rot @ mu1, rot @ s1 @ rot.T, rot @ mu2, rot @ s2 @ rot.T)
    assert d == pytest.approx(d_rot, rel=1e-9)
    # a rank-2 covariance (fewer samples than dimensions) still gives a finite answer,
    # and the distance of a Gaussian to itself is zero
    feats = rng.normal(size=(3, 5))
    cov = np.cov(feats, rowvar=False)
    assert frechet_distance(feats.mean(0), cov, feats.mean(0), cov) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu1, s1, mu2[:3], s2)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return FIDInceptionV3(resize_input=False).eval()


def test_inception_layout_matches_pytorch_fid_weights(net):
    state = net.state_dict()
    # torchvision Inception-v3 without the auxiliary head, 1008 classes
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert state["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in state)


def test_load_weights_file_and_features(tmp_path, net):
    path = tmp_path / "pt_inception.pth"
    torch.save({k: v for k, v in net.state_dict().items()
                if not k.endswith("num_batches_tracked")}, path)
    loaded = load_fid_inception(path, resize_input=False)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    x = torch.rand(2, 3, 75, 75)
    feats = loaded(x)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    torch.save({"weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a FID Inception"):
        load_fid_inception(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        load_fid_inception(tmp_path / "missing.pth")


def test_fid_with_random_network(net):
    rng = np.random.default_rng(0)
    real = rng.gamma(2.0, 0.05, size=(4, 3, 75, 75))
    fake = real[:, ::-1].copy() * 3  # colours swapped, brighter
    assert fid(real, real, model=net) == pytest.approx(0.0, abs=1e-6)
    assert fid(real, fake, model=net) > 0


class _ChannelMeans(torch.nn.Module):
    """A stand-in network: the mean of each RGB channel, to see what FID is fed."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x.mean(dim=(2, 3)) + 0 * self.dummy


def test_fid_sees_the_linear_composite_with_the_real_clip():
    rng = np.random.default_rng(5)
    real = rng.gamma(2.0, 0.05, size=(3, 3, 12, 12))
    fake = 2 * real[:, ::-1]
    net = _ChannelMeans()
    level = np.percentile(real, 99.5)
    for images in (real, fake):
        feats = inception_features(images, net, clip=level)
        expected = linear_rgb(images, clip=level).mean(axis=(1, 2))
        np.testing.assert_allclose(feats, expected, rtol=1e-6)
    # without clip=, fid uses the real set's 99.5th percentile for both sets
    fr = linear_rgb(real, clip=level).mean(axis=(1, 2))
    ff = linear_rgb(fake, clip=level).mean(axis=(1, 2))
    assert fid(real, fake, model=net) == pytest.approx(fid(fr, ff), rel=1e-5)
    assert fid(real, fake, model=net) != pytest.approx(
        fid(fr, linear_rgb(fake).mean(axis=(1, 2))), rel=1e-3)


def test_kid_same_distribution_near_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16))
    b = rng.normal(size=(300, 16))
    c = rng.normal(0.5, 1.0, size=(300, 16))
    same, same_std = kid(a, b, subset_size=100, n_subsets=20, seed=0)
    diff, _ = kid(a, c, subset_size=100, n_subsets=20, seed=0)
    assert abs(same) < 3 * same_std
    assert diff > 20 * abs(same) and diff > 5 * same_std
    with pytest.raises(ValueError, match="subset_size"):
        kid(a, b[:50], subset_size=100)
    with pytest.raises(ValueError, match="subset_size"):
        kid(a, b, subset_size=1)


def test_property_frechet_distance():
    rng = np.random.default_rng(3)

    def cat(shift):
        t = QTable()
        t["mag_r"] = rng.normal(18 + shift, 1, 400) * u.mag
        t["r_half"] = rng.lognormal(0, 0.3, 400) * u.arcsec
        t["gini"] = rng.uniform(0.3, 0.6, 400) * u.one
        return t

    a, b, c = cat(0.0), cat(0.0), cat(1.0)
    assert property_frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    near, far = property_frechet_distance(a, b), property_frechet_distance(a, c)
    assert far > 0.8 and near < 0.1
    with pytest.raises(KeyError):
        property_frechet_distance(a, b, columns=["mag_z"])


def test_small_sample_path_equals_covariance_path():
    from astro_sbgm.metrics.fid import _frechet_from_features, _gaussian
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 20)), rng.normal(0.3, 2.0, size=(9, 20))
    mu1, s1 = _gaussian(x)
    mu2, s2 = _gaussian(y)
    # the covariance path takes square roots of round-off eigenvalues of the
    # rank-deficient matrices: agreement to 1e-7, not to machine precision
    reference = frechet_distance(mu1, s1, mu2, s2)
    assert _frechet_from_features(x, y) == pytest.approx(reference, rel=1e-7)
    assert fid(x, y) == pytest.approx(reference, rel=1e-7)
