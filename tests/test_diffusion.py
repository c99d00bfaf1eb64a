"""Schedules, parametrisations and samplers, checked against closed forms."""

import math

import numpy as np
import pytest
import torch

from astro_sbgm.diffusion import (SAMPLERS, DiffusionSchedule, Denoiser, cosine_betas,
                                  get_sampler, linear_betas, make_grid, reverse_process,
                                  training_loss)


def test_linear_schedule_alpha_bar_closed_form():
    T = 1000
    betas = linear_betas(T)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    sched = DiffusionSchedule(betas)
    expected = np.exp(np.cumsum(np.log1p(-np.linspace(1e-4, 0.02, T))))
    np.testing.assert_allclose(sched.alphas_cumprod, expected, rtol=1e-12)


def test_cosine_schedule_alpha_bar_closed_form():
    T, s = 1000, 0.008
    sched = DiffusionSchedule(cosine_betas(T, s))
    t = np.arange(1, T + 1) / T
    f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2 / np.cos(s / (1 + s) * np.pi / 2) ** 2
    # identical wherever the 0.999 clip on beta is not active
    np.testing.assert_allclose(sched.alphas_cumprod[:-1], f[:-1], rtol=1e-10)
    assert sched.betas.max() <= 0.999


def test_alpha_sigma_interpolates_and_inverts():
    sched = DiffusionSchedule.from_name("cosine")
    a, s = sched.alpha_sigma(torch.tensor([0.0, 10.0, 999.0]))
    np.testing.assert_allclose(a.numpy() ** 2, sched.alphas_cumprod[[0, 10, 999]], rtol=1e-10)
    np.testing.assert_allclose(a.numpy() ** 2 + s.numpy() ** 2, 1.0, rtol=1e-12)
    t = torch.tensor([0.0, 3.25, 500.5, 998.9])
    np.testing.assert_allclose(sched.t_from_log_snr(sched.log_snr(t)).numpy(), t.numpy(),
                               atol=1e-8)
    # monotone between integers
    lam = sched.log_snr(torch.linspace(0, 999, 5000))
    assert torch.all(lam[1:] < lam[:-1])


def test_from_alphas_cumprod_keeps_table():
    abar = DiffusionSchedule.from_name("cosine").alphas_cumprod
    sched = DiffusionSchedule.from_alphas_cumprod(abar)
    assert np.array_equal(sched.alphas_cumprod, abar)
    assert DiffusionSchedule.from_dict(sched.to_dict()).alphas_cumprod.tolist() == abar.tolist()


def test_bad_schedule_inputs():
    with pytest.raises(ValueError, match="unknown schedule"):
        DiffusionSchedule.from_name("quartic")
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        DiffusionSchedule([0.1, 1.5])


@pytest.mark.parametrize("kind", ["uniform", "quadratic", "karras"])
def test_grids_decrease_to_zero(kind):
    sched = DiffusionSchedule.from_name("cosine")
    g = make_grid(sched, 20, kind)
    assert len(g) == 20 and g[-1] == 0 and np.all(np.diff(g) < 0)
    assert g[0] <= 999
    assert make_grid(sched, 1000, "uniform").tolist() == list(range(999, -1, -1))


def test_grid_errors():
    sched = DiffusionSchedule.from_name("linear", timesteps=100)
    with pytest.raises(ValueError, match="schedule's length"):
        make_grid(sched, 101)
    with pytest.raises(ValueError, match="steps must lie"):
        make_grid(sched, 0)
    with pytest.raises(ValueError, match="unknown grid"):
        make_grid(sched, 10, "cubic")


def test_unknown_sampler_lists_known():
    with pytest.raises(ValueError, match="ddpm") as err:
        get_sampler("dpm-fast")
    for name in SAMPLERS:
        assert name in str(err.value)
    with pytest.raises(TypeError, match="option"):
        get_sampler("euler", eta=0.5)


class _GaussianDenoiser(Denoiser):
    """The exact posterior-mean denoiser for data x0 ~ N(mu, s^2) per pixel."""

    def __init__(self, schedule, mu, s):
        super().__init__(None, schedule, "eps", clip_x0=False)
        self.mu, self.s = mu, s

    def __call__(self, x, t):
        self.nfe += 1
        a, sg = self.schedule.alpha_sigma(torch.as_tensor(float(t)))
        a, sg = float(a), float(sg)
        gain = a * self.s ** 2 / (a ** 2 * self.s ** 2 + sg ** 2)
        x0 = self.mu + gain * (x - a * self.mu)
        return x0, (x - a * x0) / sg


@pytest.mark.parametrize("name,steps,grid,opts", [
    ("ddpm", 1000, "uniform", {}), ("ddim", 50, "quadratic", {}),
    ("ddim", 100, "quadratic", {"eta": 1.0}), ("dpmpp-2m", 20, "karras", {}),
    ("dpmpp-2m", 20, "quadratic", {}), ("euler", 100, "karras", {}), ("heun", 20, "karras", {})])
def test_samplers_reproduce_gaussian_data(name, steps, grid, opts):
    """With the exact denoiser of Gaussian data, samples follow that Gaussian."""
    sched = DiffusionSchedule.from_name("cosine")
    mu, s = 0.3, 0.2
    den = _GaussianDenoiser(sched, mu, s)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 64, 64, generator=g, dtype=torch.float64)
    out, nfe = reverse_process(den, x, make_grid(sched, steps, grid), name,
                               generator=g, **opts)
    expected_nfe = steps * SAMPLERS[name].evals_per_step - (
        SAMPLERS[name].evals_per_step - 1)
    assert nfe == expected_nfe
    assert float(out.mean()) == pytest.approx(mu, abs=4 * s / 64)
    assert float(out.std()) == pytest.approx(s, rel=0.08)


def test_jump_up_renoises_with_forward_marginal():
    """A grid that goes up in time re-noises with q(x_t' | x_t)."""
    sched = DiffusionSchedule.from_name("cosine")
    den = _GaussianDenoiser(sched, 0.0, 1.0)  # data N(0, 1): every marginal is N(0, 1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 128, 128, generator=g, dtype=torch.float64)
    out, nfe = reverse_process(den, x, [999, 500, 800, 300, 600, 0], "ddpm", generator=g)
    assert nfe == 4  # two of the five moves are jumps up, which cost nothing
    assert float(out.std()) == pytest.approx(1.0, rel=0.05)


def test_guidance_hook_sees_every_step():
    sched = DiffusionSchedule.from_name("cosine")
    den = _GaussianDenoiser(sched, 0.0, 0.5)
    seen = []

    def hook(x, t_next, x0):
        seen.append(t_next)
        return torch.zeros_like(x) if t_next is None else x

    out, _ = reverse_process(den, torch.randn(1, 1, 4, 4, dtype=torch.float64),
                             make_grid(sched, 10), "ddim", guidance=hook)
    assert seen[-1] is None and len(seen) == 10
    assert torch.all(out == 0)


def test_per_sample_generators_make_samples_batch_independent():
    sched = DiffusionSchedule.from_name("cosine")
    den = _GaussianDenoiser(sched, 0.0, 0.5)
    grid = make_grid(sched, 10)

    def gens(ids):
        return [torch.Generator().manual_seed(100 + i) for i in ids]

    x = torch.stack([torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(i),
                                 dtype=torch.float64) for i in range(3)])
    both, _ = reverse_process(den, x, grid, "ddpm", generator=gens([0, 1, 2]))
    single, _ = reverse_process(den, x[2:], grid, "ddpm", generator=gens([2]))
    assert torch.equal(both[2:], single)


class _Const(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, t):
        return torch.full_like(x, self.value)


class _Oracle(torch.nn.Module):
    """A network that returns the exact training target: it knows x0 and eps.

    The targets are written here from their definitions, independently of
    the package: eps -> the noise; v -> alpha eps - sigma x0; edm -> the
    preconditioned target (x0 - c_skip x_t / alpha) / c_out with
    s = sigma / alpha, c_skip = d^2 / (s^2 + d^2), c_out = s d / sqrt(s^2 + d^2).
    """

    def __init__(self, objective, schedule, x0, eps, t, sigma_data=0.5):
        super().__init__()
        self.objective, self.x0, self.eps, self.t = objective, x0, eps, t
        a, s = schedule.alpha_sigma(t)
        self.alpha = a.reshape(-1, 1, 1, 1)
        self.sigma = s.reshape(-1, 1, 1, 1)
        self.d = sigma_data

    def forward(self, x, t):
        torch.testing.assert_close(t.double(), self.t, rtol=1e-6, atol=0)  # asked at t
        a, s = self.alpha, self.sigma
        if self.objective == "eps":
            return self.eps
        if self.objective == "v":
            return a * self.eps - s * self.x0
        x_t = a * self.x0 + s * self.eps
        ratio, d = s / a, self.d
        c_skip = d ** 2 / (ratio ** 2 + d ** 2)
        c_out = ratio * d / torch.sqrt(ratio ** 2 + d ** 2)
        return (self.x0 - c_skip * x_t / a) / c_out


@pytest.mark.parametrize("objective", ["eps", "v", "edm"])
def test_exact_target_recovers_x0(objective):
    """A network that predicts its training target exactly gives back the true x0 and eps."""
    sched = DiffusionSchedule.from_name("cosine")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(3, 2, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([5.0, 400.25, 990.0], dtype=torch.float64)
    a, s = sched.alpha_sigma(t)
    x_t = a.reshape(-1, 1, 1, 1) * x0 + s.reshape(-1, 1, 1, 1) * eps
    den = Denoiser(_Oracle(objective, sched, x0, eps, t), sched, objective, clip_x0=False)
    x0_hat, eps_hat = den(x_t, t)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-9)
    # and the training loss, which defines the target the network learns, is zero
    loss = training_loss(den, x0, noise=eps, t=t)
    assert float(loss) == pytest.approx(0.0, abs=1e-12)


def test_eps_loss_is_paper_eq11():
    """With noise prediction and L2, the loss is the mean of (z - z_theta)^2."""
    sched = DiffusionSchedule.from_name("linear")
    den = Denoiser(_Const(0.0), sched, "eps")
    x0 = torch.zeros(4096, 1, 1, 1)
    loss = training_loss(den, x0, torch.Generator().manual_seed(0))
    assert float(loss) == pytest.approx(1.0, abs=0.06)  # E[z^2] = 1
    l1 = training_loss(den, x0, torch.Generator().manual_seed(0), loss="l1")
    assert float(l1) == pytest.approx(math.sqrt(2 / math.pi), abs=0.03)
    with pytest.raises(ValueError, match="unknown loss"):
        training_loss(den, x0, loss="huber")
