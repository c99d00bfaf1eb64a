"""Log-likelihoods: the ODE against the exact density of Gaussian data, the bound below it."""

import math

import numpy as np
import pytest
import torch

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.datasets import make_trivial_dataset
from astro_sbgm.diffusion import DiffusionSchedule, Denoiser
from astro_sbgm.diffusion.likelihood import elbo_log_likelihood, ode_log_likelihood


class _GaussianDenoiser(Denoiser):
    """The exact denoiser (differentiable) for data x0 ~ N(0, Q diag(v) Q^T), pixels flattened."""

    def __init__(self, schedule, q, v):
        super().__init__(None, schedule, "eps", clip_x0=True)
        self.q, self.v = q, v

    def __call__(self, x, t):
        self.nfe += 1
        a, sg = (float(v) for v in self.schedule.alpha_sigma(torch.as_tensor(float(t))))
        flat = x.reshape(x.shape[0], -1)
        gain = a * self.v / (a ** 2 * self.v + sg ** 2)
        x0 = ((flat @ self.q) * gain) @ self.q.T
        x0 = x0.reshape(x.shape)
        return x0, (x - a * x0) / sg


def _exact(x, sched, q, v):
    """log p(x) of the model's t = 0 density: N(0, Q diag(v) Q^T + (sigma_0 / alpha_0)^2 I)."""
    a0, s0 = (float(u) for u in sched.alpha_sigma(torch.tensor(0.0)))
    var = (v + (s0 / a0) ** 2).double()
    y = x.double().reshape(x.shape[0], -1) @ q.double()
    return (-0.5 * y ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum(1)


@pytest.fixture
def toy():
    sched = DiffusionSchedule.from_name("cosine", 1000)
    # correlated pixels (a rotated covariance), so Hutchinson's estimate has a spread
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=g))
    v = torch.linspace(0.1, 0.8, 32) ** 2
    x = ((torch.randn(4, 32, generator=g) * v.sqrt()) @ q.T).reshape(4, 2, 4, 4)
    return sched, (q, v), x


def _gens(n, seed=0):
    return [torch.Generator().manual_seed(seed * 100 + i) for i in range(n)]


def test_ode_matches_the_exact_density(toy):
    sched, s, x = toy
    exact = _exact(x, sched, *s)
    ll, info = ode_log_likelihood(_GaussianDenoiser(sched, *s), x, steps=200,
                                  exact_divergence=True)
    np.testing.assert_allclose(ll.numpy(), exact.numpy(), atol=0.05)
    assert info["nfe"] == 201


def test_ode_with_probes_is_unbiased_and_seeded(toy):
    sched, s, x = toy
    exact = _exact(x, sched, *s)
    den = _GaussianDenoiser(sched, *s)
    runs = torch.stack([ode_log_likelihood(den, x, steps=200, n_probes=2,
                                           generators=_gens(4, k))[0] for k in range(8)])
    # Hutchinson's estimate scatters around the exact value, within its own spread
    spread = runs.std(0) / math.sqrt(len(runs))
    assert torch.all(runs.std(0) > 0)
    assert torch.all((runs.mean(0) - exact).abs() < 4 * spread + 0.05)
    again = ode_log_likelihood(den, x, steps=200, n_probes=2, generators=_gens(4, 0))[0]
    assert torch.equal(again, runs[0])


def test_adaptive_solver_agrees(toy):
    sched, s, x = toy
    exact = _exact(x, sched, *s)
    ll, info = ode_log_likelihood(_GaussianDenoiser(sched, *s), x[:2], solver="rk45",
                                  exact_divergence=True, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ll.numpy(), exact[:2].numpy(), atol=0.05)


def test_elbo_lies_below_the_exact_density(toy):
    sched, s, x = toy
    exact = _exact(x, sched, *s)
    den = _GaussianDenoiser(sched, *s)
    bounds = torch.stack([elbo_log_likelihood(den, x, n_levels=200,
                                              generators=_gens(4, k))[0] for k in range(8)])
    mean = bounds.mean(0)
    spread = bounds.std(0) / math.sqrt(len(bounds))
    assert torch.all(mean <= exact + 3 * spread)
    # and is a tight bound for the exact denoiser (the gap is the discretisation)
    assert torch.all(exact - mean < 0.05 * exact.abs() + 3 * spread + 1.0)
    ll, nll_map, terms = elbo_log_likelihood(den, x, n_levels=50, generators=_gens(4))
    torch.testing.assert_close(nll_map.double().sum((1, 2, 3)), -ll, rtol=1e-5, atol=1e-3)
    assert set(terms) == {"prior", "diffusion", "decoder"}


def test_elbo_does_not_depend_on_the_batch(toy):
    sched, s, x = toy
    den = _GaussianDenoiser(sched, *s)
    whole = elbo_log_likelihood(den, x, n_levels=10, generators=_gens(4))[0]
    part = elbo_log_likelihood(den, x[2:], n_levels=10, generators=_gens(4)[2:])[0]
    # the same draws for the same image (the toy's float32 matrix product rounds
    # differently for another batch size: ~1e-5 of the value)
    torch.testing.assert_close(whole[2:], part, rtol=1e-4, atol=0)
    other = elbo_log_likelihood(den, x[2:], n_levels=10, generators=_gens(4, 7)[2:])[0]
    assert torch.all((other - part).abs() > 1e-3)


def test_score_samples_on_a_model(tmp_path):
    data = make_trivial_dataset(8, size=16, seed=1)
    model = GalaxyDiffusion(image_size=16, dim=8, dim_mults=(1, 2),
                            attention_levels=(False, False), timesteps=100, device="cpu")
    model.fit(data, steps=2, progress=False)
    table, maps = model.score_samples(data[:3], n_levels=4, progress=False, return_map=True)
    assert len(table) == 3 and maps.shape == (3, 3, 16, 16)
    np.testing.assert_allclose(maps.reshape(3, -1).sum(1), -table["log_likelihood"], rtol=1e-4)
    np.testing.assert_allclose(table["bits_per_dim"],
                               -table["log_likelihood"] / (3 * 16 * 16 * math.log(2)))
    assert np.all(np.isfinite(table["log_likelihood_flux"]))
    again = model.score_samples(data[:3], n_levels=4, progress=False, batch_size=1)
    np.testing.assert_allclose(again["log_likelihood"], table["log_likelihood"], rtol=1e-5)
    ode = model.score_samples(data[:1], method="ode", steps=3, progress=False)
    assert np.isfinite(ode["log_likelihood"][0]) and ode.meta["method"] == "ode"
    with pytest.raises(ValueError, match="method"):
        model.score_samples(data[:1], method="flow")
    with pytest.raises(ValueError, match="return_map"):
        model.score_samples(data[:1], method="ode", return_map=True)


def test_anomaly_scores_and_the_score_command(tmp_path):
    from astro_sbgm.cli import main
    from astro_sbgm.io import write_image

    data = make_trivial_dataset(6, size=16, seed=1)
    model = GalaxyDiffusion(image_size=16, dim=8, dim_mults=(1, 2),
                            attention_levels=(False, False), timesteps=100, device="cpu")
    model.fit(data, steps=2, progress=False)
    table = model.anomaly_scores(data[:2], n_levels=3, progress=False)
    np.testing.assert_allclose(table["anomaly_score"],
                               table["bits_per_dim"] - table["complexity_bpd"])
    # a noisier image is harder to compress: its complexity is higher
    noisy = data[0].copy()
    noisy.data = noisy.data + np.random.default_rng(0).normal(0, 0.5, noisy.shape)
    t2 = model.anomaly_scores([data[0], noisy], n_levels=3, progress=False)
    assert t2["complexity_bpd"][1] > t2["complexity_bpd"][0]
    assert np.all(model.anomaly_scores(data[:2], reference="none", n_levels=3,
                                       progress=False)["anomaly_score"] == table["bits_per_dim"])
    model.save(tmp_path / "m")
    for i, img in enumerate(data[:3]):
        write_image(img, tmp_path / f"g{i}.fits")
    out = tmp_path / "scores.ecsv"
    assert main(["score", str(tmp_path / "g*.fits"), "--model", str(tmp_path / "m"),
                 "--levels", "3", "-o", str(out), "--quiet"]) == 0
    from astropy.table import QTable
    t = QTable.read(out)
    assert list(t["file"]) == ["g0.fits", "g1.fits", "g2.fits"]
    assert {"log_likelihood", "bits_per_dim", "anomaly_score"} <= set(t.colnames)
    assert main(["score", str(tmp_path / "g0.fits"), "--model", str(tmp_path / "m"),
                 "-o", str(out)]) == 2            # refuses to overwrite
