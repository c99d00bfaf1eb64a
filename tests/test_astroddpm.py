"""Tests of astro_sbgm._astroddpm: reading the paper's released checkpoint format."""

import hashlib
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import torch

from astro_sbgm import GalaxyDiffusion
from astro_sbgm._astroddpm import (AstroddpmCheckpoint, AstroddpmWarning,
                                   load_astroddpm_checkpoint)
from astro_sbgm.diffusion import cosine_betas
from astro_sbgm.nn import UNet

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
CHECKPOINT = FIXTURES / "astroddpm_dim8_32px.pt"
IO = FIXTURES / "astroddpm_dim8_32px_io.npz"
PREFIX = "module.denoise_fn."

pytestmark = pytest.mark.skipif(
    not (CHECKPOINT.is_file() and IO.is_file()),
    reason=f"checkpoint fixtures not found in {FIXTURES} (expected the shared/ folder "
           f"beside the repository clone)")


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(IO))


@pytest.fixture(scope="module")
def raw():
    return torch.load(CHECKPOINT, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("weights", ["ema", "model"])
def test_reproduces_released_network(weights, reference):
    before = _sha256(CHECKPOINT)
    loaded = load_astroddpm_checkpoint(CHECKPOINT, weights=weights)
    assert _sha256(CHECKPOINT) == before
    assert isinstance(loaded, AstroddpmCheckpoint) and isinstance(loaded.unet, UNet)
    assert loaded.weights == weights
    assert loaded.step == 1234
    assert loaded.config["dim"] == 8 and loaded.config["dim_mults"] == [1, 2, 4, 8]
    assert loaded.config["in_channels"] == 3 and loaded.config["out_channels"] == 3
    assert not loaded.unet.training
    with torch.inference_mode():
        out = loaded.unet(torch.from_numpy(reference["x"]), torch.from_numpy(reference["t"]))
    expected = reference[f"eps_{weights}"]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5 * scale)
    # the two weight sets differ, so the comparison above could have failed
    other = reference["eps_model" if weights == "ema" else "eps_ema"]
    assert np.abs(out.numpy() - other).max() > 1e-3 * scale


def test_buffers_and_config_round_trip(reference):
    loaded = load_astroddpm_checkpoint(str(CHECKPOINT))
    assert loaded.weights == "ema"
    assert not any(k.startswith(("module.", "denoise_fn.")) for k in loaded.buffers)
    assert {"betas", "alphas_cumprod", "posterior_variance"} <= set(loaded.buffers)
    np.testing.assert_array_equal(loaded.buffers["alphas_cumprod"].numpy(),
                                  reference["alphas_cumprod"])
    rebuilt = UNet.from_config(loaded.config)
    rebuilt.load_state_dict(loaded.unet.state_dict())


def test_bad_weights_name():
    with pytest.raises(ValueError, match=r"'ema'.*'model'.*got 'best'"):
        load_astroddpm_checkpoint(CHECKPOINT, weights="best")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_astroddpm_checkpoint(tmp_path / "nope.pt")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint\x00\x01" * 20)
    with pytest.raises(ValueError, match=r"torch.load\(weights_only=True\).*expected a "
                                         r"torch.save file"):
        load_astroddpm_checkpoint(path)


def test_not_a_checkpoint_dict(tmp_path, raw):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(ValueError, match="holds a list"):
        load_astroddpm_checkpoint(path)
    path = tmp_path / "model_only.pt"
    torch.save({"step": 1, "model": raw["model"]}, path)
    with pytest.raises(ValueError, match=r"not the 'ema' weights"):
        load_astroddpm_checkpoint(path)
    assert load_astroddpm_checkpoint(path, weights="model").step == 1


@pytest.mark.parametrize("key, shape", [
    ("ups.1.0.block2.block.0.weight", (16, 16, 3, 3)),
    ("mlp.0.weight", (32, 8)),  # a key used to infer the architecture
    ("downs.3.2.fn.g", (1,)),
])
def test_missing_key_named_with_shape(tmp_path, raw, key, shape):
    state = dict(raw["ema"])
    del state[PREFIX + key]
    path = tmp_path / "missing.pt"
    torch.save({"step": 7, "model": raw["model"], "ema": state}, path)
    with pytest.raises(ValueError) as info:
        load_astroddpm_checkpoint(path)
    assert f"lacks '{PREFIX}{key}' (expected shape {shape})" in str(info.value)


def test_reports_first_missing_key(tmp_path, raw):
    state = dict(raw["ema"])
    del state[PREFIX + "final_conv.1.bias"]
    del state[PREFIX + "downs.1.1.block2.block.1.weight"]
    path = tmp_path / "two_missing.pt"
    torch.save({"step": 7, "ema": state}, path)
    with pytest.raises(ValueError, match=r"lacks 'module.denoise_fn.downs.1.1.block2"):
        load_astroddpm_checkpoint(path)


@pytest.mark.parametrize("key, bad, shape", [
    ("downs.2.2.fn.fn.to_out.weight", (32, 64, 1, 1), "(32, 128, 1, 1)"),
    ("ups.0.3.conv.weight", (32, 32, 3, 3), "(32, 32, 4, 4)"),
    ("mlp.2.weight", (16, 32), "(8, 32)"),
])
def test_misshaped_key_named_with_shape(tmp_path, raw, key, bad, shape):
    state = dict(raw["ema"])
    state[PREFIX + key] = torch.zeros(bad)
    path = tmp_path / "misshaped.pt"
    torch.save({"step": 7, "ema": state}, path)
    with pytest.raises(ValueError) as info:
        load_astroddpm_checkpoint(path)
    message = str(info.value)
    assert f"'{PREFIX}{key}'" in message
    assert f"has shape {bad}" in message and f"expected {shape}" in message


def test_unexpected_unet_key(tmp_path, raw):
    state = dict(raw["ema"])
    state[PREFIX + "extra.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pt"
    torch.save({"ema": state}, path)
    with pytest.raises(ValueError, match=r"first 'module.denoise_fn.extra.weight'"):
        load_astroddpm_checkpoint(path)


def test_without_parallel_prefix(tmp_path, raw, reference):
    state = {k[len("module."):]: v for k, v in raw["ema"].items()}
    path = tmp_path / "plain.pt"
    torch.save({"step": 3, "ema": state}, path)
    loaded = load_astroddpm_checkpoint(path)
    assert loaded.step == 3
    with torch.inference_mode():
        out = loaded.unet(torch.from_numpy(reference["x"]), torch.from_numpy(reference["t"]))
    np.testing.assert_allclose(out.numpy(), reference["eps_ema"], rtol=0,
                               atol=1e-5 * np.abs(reference["eps_ema"]).max())


# --------------------------------------------------------------------------- the estimator
@pytest.fixture(scope="module")
def converted():
    return GalaxyDiffusion.from_astroddpm(CHECKPOINT, image_size=32, device="cpu")


def _net_out(net, reference):
    with torch.inference_mode():
        return net(torch.from_numpy(reference["x"]), torch.from_numpy(reference["t"])).numpy()


def test_estimator_matches_released_network(converted, reference):
    model = converted
    assert isinstance(model, GalaxyDiffusion)
    assert model.bands_ == ("g", "r", "z") and model.pixel_scale == 0.262
    assert model.image_size == 32 and model.dim == 8 and tuple(model.dim_mults) == (1, 2, 4, 8)
    assert model.objective == "eps" and model.n_steps_ == 1234
    assert model.device_ == torch.device("cpu")
    scale = np.abs(reference["eps_ema"]).max()
    np.testing.assert_allclose(_net_out(model.ema_net_, reference), reference["eps_ema"],
                               rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(_net_out(model.net_, reference), reference["eps_model"],
                               rtol=0, atol=1e-5 * scale)
    record = model.extra_["astroddpm"]
    assert Path(record["source"]).resolve() == CHECKPOINT.resolve()
    assert record["sha256"] == _sha256(CHECKPOINT)
    assert record["step"] == 1234 and record["weights"] == "ema"
    assert record["doi"] == "10.5281/zenodo.5653517"


def test_estimator_schedule_and_scaler(converted, reference):
    model = converted
    # the stored table, bit for bit
    np.testing.assert_array_equal(model.schedule_.alphas_cumprod.astype(np.float32),
                                  reference["alphas_cumprod"])
    assert model.schedule_.T == len(reference["alphas_cumprod"]) == model.timesteps
    # the released buffer is the cosine schedule of Nichol & Dhariwal to float32 round-off
    np.testing.assert_allclose(model.schedule_.alphas_cumprod,
                               np.cumprod(1 - cosine_betas(model.schedule_.T)),
                               rtol=1e-5, atol=1e-7)
    flux = np.array([-1.0, 0.0, 2.75, 5.5, 9.0])
    np.testing.assert_array_equal(model.scaler_.transform(flux), [-1, -1, 0, 1, 1])
    assert model.scaler_.to_dict()["upper_"] == 5.5 and model.scaler_.stretch == "linear"


def test_estimator_weights_model(reference):
    model = GalaxyDiffusion.from_astroddpm(CHECKPOINT, weights="model", image_size=32, device="cpu")
    scale = np.abs(reference["eps_model"]).max()
    for net in (model.ema_net_, model.net_):
        np.testing.assert_allclose(_net_out(net, reference), reference["eps_model"],
                                   rtol=0, atol=1e-5 * scale)
    assert model.ema_net_ is not model.net_
    assert model.extra_["astroddpm"]["weights"] == "model"


def test_estimator_sample_save_load_round_trip(converted, tmp_path):
    model = converted
    first = model.sample(2, sampler="ddim", steps=5, seed=3, progress=False)
    assert len(first) == 2 and first[0].data.shape == (3, 32, 32)
    assert first[0].unit == u.nanomaggy
    data = np.stack([c.data for c in first])
    assert np.all((data >= 0) & (data <= 5.5)) and np.ptp(data) > 0
    raw = model.sample(2, sampler="ddim", steps=5, seed=3, progress=False, weights="model")
    assert np.abs(np.stack([c.data for c in raw]) - data).max() > 1e-3

    model.save(tmp_path / "converted")
    loaded = GalaxyDiffusion.load(tmp_path / "converted", device="cpu")
    again = loaded.sample(2, sampler="ddim", steps=5, seed=3, progress=False)
    np.testing.assert_array_equal(np.stack([c.data for c in again]), data)
    assert loaded.extra_ == model.extra_
    assert loaded.n_steps_ == 1234 and loaded.loss == "l1"
    np.testing.assert_array_equal(loaded.schedule_.alphas_cumprod,
                                  model.schedule_.alphas_cumprod)


def test_estimator_default_image_size():
    model = GalaxyDiffusion.from_astroddpm(CHECKPOINT, device="cpu")
    assert model.image_size == 256


@pytest.mark.parametrize("size, match", [(30, "not divisible by 8"), (8, r"\[16, 512\]"),
                                         (32.0, "integer number of pixels")])
def test_estimator_bad_image_size(size, match):
    with pytest.raises(ValueError, match=match):
        GalaxyDiffusion.from_astroddpm(CHECKPOINT, image_size=size, device="cpu")


def test_estimator_bad_weights_name():
    with pytest.raises(ValueError, match=r"got 'best'"):
        GalaxyDiffusion.from_astroddpm(CHECKPOINT, weights="best")


def test_estimator_without_raw_weights(tmp_path, raw, reference):
    path = tmp_path / "ema_only.pt"
    torch.save({"step": 5, "ema": raw["ema"]}, path)
    with pytest.warns(AstroddpmWarning, match="no 'model'"):
        model = GalaxyDiffusion.from_astroddpm(path, image_size=32, device="cpu")
    np.testing.assert_allclose(_net_out(model.net_, reference), reference["eps_ema"], rtol=0,
                               atol=1e-5 * np.abs(reference["eps_ema"]).max())
    assert model.extra_["astroddpm"]["net_weights"] == "ema"
    assert model.n_steps_ == 5


def test_estimator_needs_schedule(tmp_path, raw):
    state = {k: v for k, v in raw["ema"].items() if not k.endswith("alphas_cumprod")}
    path = tmp_path / "no_schedule.pt"
    torch.save({"ema": state}, path)
    with pytest.raises(ValueError, match=r"no 'module.alphas_cumprod' buffer"):
        GalaxyDiffusion.from_astroddpm(path, image_size=32)
    state["module.alphas_cumprod"] = torch.linspace(0.1, 0.9, 1000)  # increasing: damaged
    torch.save({"ema": state}, path)
    with pytest.raises(ValueError, match="not a strictly decreasing"):
        GalaxyDiffusion.from_astroddpm(path, image_size=32)


def test_estimator_refuses_other_band_count(tmp_path, raw):
    state = dict(raw["ema"])
    for key in [k for k in state if k.startswith(PREFIX + "downs.0.0.")]:
        if key.endswith(("block1.block.0.weight", "res_conv.weight")):
            state[key] = state[key][:, :1].clone()
    path = tmp_path / "one_band.pt"
    torch.save({"ema": state}, path)
    assert load_astroddpm_checkpoint(path).config["in_channels"] == 1
    with pytest.raises(ValueError, match=r"maps 1 to 3 channels.*'grz'"):
        GalaxyDiffusion.from_astroddpm(path, image_size=32)


def test_classmethod_line_for_the_estimator():
    # the loader returns parts; the estimator assembles them (no import of the estimator)
    model = GalaxyDiffusion.from_astroddpm(CHECKPOINT, image_size=32, device="cpu")
    assert isinstance(model, GalaxyDiffusion) and model.extra_["astroddpm"]["step"] == 1234
    assert not model.ema_net_.training and not model.net_.training
    assert not any(p.requires_grad for p in model.ema_net_.parameters())


# ----------------------------------------------------------------------------- released sampler
def _released_buffers(raw):
    return {k[len("module."):]: v.to(torch.float64) for k, v in raw["ema"].items()
            if not k.startswith(PREFIX)}


@pytest.mark.parametrize("t", [1, 2, 10, 100, 500, 999])
def test_ddpm_step_is_the_released_ancestral_step(converted, raw, t):
    """One ancestral step equals coef1 x0 + coef2 x_t + exp(0.5 log_var) z of the buffers."""
    from astro_sbgm._astroddpm import released_sampler_options
    from astro_sbgm.diffusion import get_sampler

    buf = _released_buffers(raw)
    options = released_sampler_options(converted, "ddpm")
    assert options == {"variance": "posterior"}
    den = converted.denoiser()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rule = get_sampler("ddpm", **options)
    x_next, x0, _ = rule.step(den, x, float(t), float(t - 1), torch.Generator().manual_seed(t))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(t)).to(torch.float64)
    expected = (buf["posterior_mean_coef1"][t] * x0.to(torch.float64)
                + buf["posterior_mean_coef2"][t] * x.to(torch.float64)
                + torch.exp(0.5 * buf["posterior_log_variance_clipped"][t]) * z)
    # float32 round-off of the stored buffers and of the step's arithmetic
    torch.testing.assert_close(x_next.to(torch.float64), expected, rtol=0, atol=1e-6)


def test_schedule_keeps_float64_precision_near_t0(converted, raw, reference):
    buf = _released_buffers(raw)
    sched = converted.schedule_
    # still the stored table, bit for bit in float32 ...
    np.testing.assert_array_equal(sched.alphas_cumprod.astype(np.float32),
                                  reference["alphas_cumprod"])
    # ... with the noise levels of the released float64 computation where float32 loses them
    _, sigma = sched.alpha_sigma(torch.arange(10, dtype=torch.float64))
    np.testing.assert_allclose(sigma.numpy(), buf["sqrt_one_minus_alphas_cumprod"][:10].numpy(),
                               rtol=1e-6)


def test_released_variance_is_the_default_for_released_models_only(converted, tmp_path):
    from astro_sbgm._astroddpm import released_sampler_options
    from astro_sbgm.inpainting import inpaint
    from astro_sbgm.transfer import transfer

    assert released_sampler_options(converted, "ddim") == {}
    assert released_sampler_options(GalaxyDiffusion(image_size=32), "ddpm") == {}
    img = converted.sample(1, sampler="ddim", steps=3, seed=0, progress=False)[0]
    mask = np.zeros((32, 32), bool)
    mask[10:14, :] = True
    out = inpaint(converted, img, mask, method="paper", t_start=3, seed=0)
    assert out.meta["INPSAMP"] == "ddpm" and out.meta["DDPMVAR"] == "posterior"
    beta = inpaint(converted, img, mask, method="paper", t_start=3, seed=0, variance="beta")
    assert beta.meta["DDPMVAR"] == "beta"
    assert not np.array_equal(beta.data[:, mask], out.data[:, mask])
    tr = transfer(converted, img, strength=0.004, sampler="ddpm", seed=0)
    assert tr.meta["DDPMVAR"] == "posterior" and tr.meta["NFE"] == 5
    # the record travels with a saved model
    converted.save(tmp_path / "m")
    loaded = GalaxyDiffusion.load(tmp_path / "m", device="cpu")
    assert released_sampler_options(loaded, "ddpm") == {"variance": "posterior"}
