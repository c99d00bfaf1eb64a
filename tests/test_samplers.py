"""Tests of the update rules in astro_sbgm.diffusion.samplers that test_diffusion does not cover."""

import math

import numpy as np
import pytest
import torch

from astro_sbgm.diffusion import DiffusionSchedule, SAMPLERS, get_sampler, make_grid
from astro_sbgm.diffusion.samplers import reverse_process


class _GaussianDenoiser:
    """Exact posterior mean for data x0 ~ N(mu, s^2) per pixel."""

    def __init__(self, schedule, mu, s):
        self.schedule, self.mu, self.s, self.nfe = schedule, mu, s, 0

    def __call__(self, x, t):
        self.nfe += 1
        a, sg = (float(v) for v in self.schedule.alpha_sigma(torch.tensor(float(t))))
        x0 = self.mu + a * self.s ** 2 / (a ** 2 * self.s ** 2 + sg ** 2) * (x - a * self.mu)
        return x0, (x - a * x0) / sg


@pytest.mark.parametrize("steps, grid", [(50, "karras"), (200, "uniform")])
def test_dpmpp_2m_sde_reproduces_gaussian_data(steps, grid):
    sched = DiffusionSchedule.from_name("cosine")
    mu, s = 0.3, 0.2
    den = _GaussianDenoiser(sched, mu, s)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 64, 64, generator=g, dtype=torch.float64)
    out, nfe = reverse_process(den, x, make_grid(sched, steps, grid), "dpmpp-2m-sde",
                               generator=g)
    assert nfe == steps and SAMPLERS["dpmpp-2m-sde"].stochastic
    assert float(out.mean()) == pytest.approx(mu, abs=4 * s / 64)
    assert float(out.std()) == pytest.approx(s, rel=0.08)


def test_dpmpp_2m_sde_first_step_is_the_ancestral_posterior_step():
    sched = DiffusionSchedule.from_name("cosine")
    den = _GaussianDenoiser(sched, 0.1, 0.5)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sde, ddpm = get_sampler("dpmpp-2m-sde"), get_sampler("ddpm", variance="posterior")
    a, b = (rule.step(den, x, 600.0, 450.0, torch.Generator().manual_seed(2))[0]
            for rule in (sde, ddpm))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_dpmpp_2m_sde_second_step_uses_the_midpoint_correction():
    sched = DiffusionSchedule.from_name("cosine")
    den = _GaussianDenoiser(sched, 0.1, 0.5)
    rule = get_sampler("dpmpp-2m-sde")
    rule.reset()
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x1, x0_a, _ = rule.step(den, x, 800.0, 600.0, torch.Generator().manual_seed(2))
    x2, x0_b, _ = rule.step(den, x1, 600.0, 300.0, torch.Generator().manual_seed(3))
    lam = [float(sched.log_snr(torch.tensor(t))) / 2 for t in (800.0, 600.0, 300.0)]
    h_prev, h = lam[1] - lam[0], lam[2] - lam[1]
    (a, s), (an, sn) = [tuple(float(v) for v in sched.alpha_sigma(torch.tensor(t)))
                        for t in (600.0, 300.0)]
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    d = x0_b + 0.5 * h / h_prev * (x0_b - x0_a)
    expected = (sn / s * math.exp(-h) * x1 + an * (1 - math.exp(-2 * h)) * d
                + sn * math.sqrt(1 - math.exp(-2 * h)) * z.to(torch.float64))
    torch.testing.assert_close(x2, expected, rtol=1e-10, atol=1e-10)


def test_ddpm_variance_error_names_both_choices():
    with pytest.raises(ValueError, match="'beta'.*'posterior'.*got 'clipped'"):
        get_sampler("ddpm", variance="clipped")


def test_guidance_receives_the_noise_estimate_when_it_asks():
    sched = DiffusionSchedule.from_name("cosine")
    den = _GaussianDenoiser(sched, 0.0, 0.5)
    seen = []

    def hook(x_next, t_next, x0_hat, eps_hat):
        seen.append(eps_hat)
        return x_next

    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    reverse_process(den, x, make_grid(sched, 5), "heun", guidance=hook)
    assert len(seen) == 5 and all(isinstance(e, torch.Tensor) for e in seen)
    a, s = (float(v) for v in sched.alpha_sigma(torch.tensor(999.0)))
    x0, eps = den(x, 999.0)
    torch.testing.assert_close(seen[0], eps)
    np.testing.assert_allclose(seen[0].numpy(), ((x - a * x0) / s).numpy())
