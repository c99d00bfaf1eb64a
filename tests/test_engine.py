"""Tests of the generation engine, the per-sample streams, sampler objects and parametrisations."""

import json

import numpy as np
import pytest
import torch
from astropy.io import fits

from astro_sbgm.diffusion import (Denoiser, DiffusionSchedule, PerSampleNoise, get_sampler,
                                  generate, sampling_times, training_loss)
from astro_sbgm.diffusion.engine import DenoiserWrapper
from astro_sbgm.diffusion.parametrisation import get_parametrisation
from astro_sbgm.diffusion.samplers import DDIMSampler


class _Net(torch.nn.Module):
    """A small deterministic network (x, t) -> noise guess."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=0.1, generator=torch.Generator().manual_seed(0))

    def forward(self, x, t):
        return self.conv(x) + 0.001 * t.reshape(-1, 1, 1, 1)


@pytest.fixture(scope="module")
def den():
    return Denoiser(_Net().eval(), DiffusionSchedule.from_name("cosine", 50), "v")


def test_image_i_does_not_depend_on_n_batch_size_or_start(den):
    times = sampling_times(den.schedule, get_sampler("ddpm"), steps=6)
    full, nfe = generate(den, (5, 2, 8, 8), times, "ddpm", PerSampleNoise(3), 2,
                         pad_single=True)
    part, _ = generate(den, (2, 2, 8, 8), times, "ddpm", PerSampleNoise(3, start=3), 4,
                       pad_single=True)
    assert nfe == 6
    assert torch.equal(full[3:], part)
    other, _ = generate(den, (5, 2, 8, 8), times, "ddpm", PerSampleNoise(4), 2)
    assert not torch.equal(full, other)


def test_streams_depend_on_seed_key_and_index_only():
    a = PerSampleNoise(1, key=(2,)).generators(3, 2)
    b = PerSampleNoise(1, start=3, key=(2,)).generators(0, 2)
    draw = [torch.randn(4, generator=g) for g in a]
    assert all(torch.equal(x, torch.randn(4, generator=g)) for x, g in zip(draw, b))
    assert PerSampleNoise(None).seed != PerSampleNoise(None).seed


def test_guidance_and_wrapper_hooks_see_their_batch(den):
    seen, called = [], []

    class Half(DenoiserWrapper):
        def __call__(self, x, t):
            called.append(x.shape[0])
            x0, eps = self.denoiser(x, t)
            return 0.5 * x0, eps

    def guidance(batch):
        seen.append((batch.index, len(batch.generators), tuple(batch.x_start.shape)))

        def hook(x_next, t_next, x0_hat):
            return torch.zeros_like(x_next) if t_next is None else x_next
        return hook

    start = torch.zeros(3, 2, 8, 8)
    out, nfe = generate(den, start, [20.0, 10.0, 0.0], "ddim", 0, 2, guidance=guidance,
                        wrap=lambda d, b: Half(d))
    assert torch.equal(out, torch.zeros_like(out))       # the hook's last word
    assert seen == [(slice(0, 2), 2, (2, 2, 8, 8)), (slice(2, 3), 1, (1, 2, 8, 8))]
    assert called == [2, 2, 2, 1, 1, 1] and nfe == 3


def test_grad_path_lets_a_wrapper_differentiate_through_the_network(den):
    grads = []

    class Pull(DenoiserWrapper):
        def __call__(self, x, t):
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                x0, eps = self.denoiser(xg, t)
                g, = torch.autograd.grad(x0.square().sum(), xg)
            grads.append(float(g.abs().sum()))
            return x0.detach(), eps.detach()

    times = [30.0, 15.0, 0.0]
    out, _ = generate(den, (2, 2, 8, 8), times, "ddim", 5, grad=True, wrap=lambda d, b: Pull(d))
    plain, _ = generate(den, (2, 2, 8, 8), times, "ddim", 5)
    assert len(grads) == 3 and all(g > 0 for g in grads)
    assert torch.equal(out, plain)                     # same numbers with the grad path
    with pytest.raises(RuntimeError):
        generate(den, (2, 2, 8, 8), times, "ddim", 5, wrap=lambda d, b: Pull(d))


def test_clip_x0_off_gives_the_models_own_prediction(den):
    x = 3.0 * torch.ones(1, 2, 8, 8)
    assert den(x, 1.0)[0].max() <= 1.0
    free = den.with_clipping(False)
    assert free(x, 1.0)[0].max() > 1.0 and den.clip_x0 and free is not den
    assert den.with_clipping(True) is den


def test_sampler_objects_carry_their_defaults():
    ddpm, ddim = get_sampler("ddpm", variance="posterior"), get_sampler("ddim", eta=0.3)
    assert (ddpm.default_grid, ddpm.default_steps(1000), ddpm.every_timestep) == \
        ("uniform", 1000, True)
    assert (ddim.default_grid, ddim.default_steps(1000)) == ("karras", 20)
    assert ddpm.to_dict() == {"name": "ddpm", "variance": "posterior"}
    assert ddim.to_dict() == {"name": "ddim", "eta": 0.3}
    assert get_sampler(**ddim.to_dict()).to_dict() == ddim.to_dict()
    json.dumps(get_sampler("heun").to_dict())
    sched = DiffusionSchedule.from_name("cosine", 50)
    assert np.array_equal(sampling_times(sched, ddpm, t_start=20.5), np.arange(20.0, -1, -1))
    assert len(sampling_times(sched, ddim, t_start=20.5)) == 20


@pytest.mark.parametrize("objective", ["eps", "v", "edm"])
def test_parametrisation_target_gives_back_the_clean_image(objective):
    param = get_parametrisation(objective)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 2, 3, 3, generator=g) * 2 - 1, torch.randn(4, 2, 3, 3, generator=g)
    alpha = torch.rand(4, 1, 1, 1, generator=g) * 0.8 + 0.1
    sigma = (1 - alpha ** 2).sqrt()
    x_t = alpha * x0 + sigma * noise
    out = param.target(x0, noise, x_t, alpha, sigma)      # the perfect network output
    assert torch.allclose(param.to_x0(x_t, out, alpha, sigma), x0, atol=1e-5)
    with pytest.raises(ValueError, match="known"):
        get_parametrisation("x0")


def test_training_loss_is_zero_for_the_perfect_network():
    sched = DiffusionSchedule.from_name("cosine", 20)

    class Oracle(torch.nn.Module):
        def forward(self, x, t):
            return self.out

    oracle = Oracle()
    den = Denoiser(oracle, sched, "v")
    x0 = torch.zeros(2, 1, 4, 4)
    noise, t = torch.randn(2, 1, 4, 4), torch.tensor([3.0, 11.0], dtype=torch.float64)
    alpha, sigma = (v.float().reshape(-1, 1, 1, 1) for v in sched.alpha_sigma(t))
    oracle.out = alpha * noise - sigma * x0
    assert float(training_loss(den, x0, noise=noise, t=t)) < 1e-10


def test_a_sampler_instance_is_recorded_by_name_in_the_fits_header(tmp_path):
    from astro_sbgm import GalaxyDiffusion
    from astro_sbgm.datasets import make_trivial_dataset

    model = GalaxyDiffusion(image_size=16, dim=8, dim_mults=(1, 2), timesteps=20,
                            attention_levels=(False, False), device="cpu", augment=False)
    model.fit(make_trivial_dataset(4, size=16, seed=0), steps=1, progress=False)
    ccd = model.sample(1, sampler=DDIMSampler(eta=0.5), steps=3, seed=0, progress=False)[0]
    assert ccd.meta["SAMPLER"] == "ddim"
    ccd.write(tmp_path / "one.fits")
    assert fits.getheader(tmp_path / "one.fits")["SAMPLER"] == "ddim"
    den = model.denoiser("model", clip_x0=False)
    assert not den.clip_x0 and den.net is model.net_ and den.device == torch.device("cpu")
