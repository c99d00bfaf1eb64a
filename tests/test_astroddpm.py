"""Tests of astro_sbgm._astroddpm: reading the paper's released checkpoint format."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from astro_sbgm._astroddpm import AstroddpmCheckpoint, load_astroddpm_checkpoint
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
