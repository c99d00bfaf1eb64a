"""Tests of the bundled-model registry (`astro_sbgm.pretrained`) and its loading."""

import json

import numpy as np
import pytest
import torch

from astro_sbgm import GalaxyDiffusion, pretrained
from astro_sbgm.datasets import make_trivial_dataset

TINY = dict(image_size=16, bands="grz", dim=8, dim_mults=(1, 2),
            attention_levels=(False, False), batch_size=4, timesteps=100, device="cpu")


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A tiny model exported into a private registry folder."""
    model = GalaxyDiffusion(**TINY).fit(make_trivial_dataset(8, size=16, seed=1), steps=3,
                                        progress=False)
    model.save(tmp_path / "saved")
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "registry")
    card = {"description": "a tiny test model", "training": {"n_train": 8}}
    pretrained.export(tmp_path / "saved", "tiny-test", card)
    return model, tmp_path


def test_export_writes_float16_ema_only(registry):
    from safetensors.numpy import load_file

    model, tmp = registry
    folder = tmp / "registry" / "tiny-test"
    tensors = load_file(str(folder / "model.safetensors"))
    assert tensors and all(k.startswith("ema.") for k in tensors)
    assert all(v.dtype == np.float16 for v in tensors.values() if v.dtype.kind == "f")
    assert json.loads((folder / "config.json").read_text())["weights"] == "ema-float16"


def test_available_info_and_unknown_names(registry):
    assert pretrained.available() == {"tiny-test": "a tiny test model"}
    assert pretrained.info("tiny-test")["training"] == {"n_train": 8}
    with pytest.raises(ValueError, match="tiny-test"):       # the message lists known names
        GalaxyDiffusion.pretrained("no-such-model")
    with pytest.raises(FileExistsError, match="overwrite"):
        pretrained.export(registry[1] / "saved", "tiny-test", {"description": "again"})
    with pytest.raises(ValueError, match="description"):
        pretrained.export(registry[1] / "saved", "other", {})


def test_loaded_model_is_an_ordinary_model(registry, tmp_path):
    model, _ = registry
    loaded = GalaxyDiffusion.pretrained("tiny-test", device="cpu")
    # the float16 weight average, as float32, serves as both weight sets
    for a, b in zip(loaded.ema_net_.parameters(), model.ema_net_.parameters()):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b.half().float(), rtol=0, atol=0)
    for a, b in zip(loaded.net_.parameters(), loaded.ema_net_.parameters()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(loaded.scaler_.lower_, model.scaler_.lower_)
    x = loaded.sample(2, steps=4, seed=3, progress=False)
    y = model.sample(2, steps=4, seed=3, progress=False)
    # float16 rounding of the weights moves the galaxies only slightly
    assert np.abs(x[0].data - y[0].data).max() < 0.05 * np.abs(y[0].data).max()
    loaded.fit(make_trivial_dataset(8, size=16, seed=2), steps=2, warm_start=True,
               progress=False)
    assert loaded.n_steps_ == model.n_steps_ + 2
    loaded.save(tmp_path / "fine-tuned")


def test_export_keeps_a_conditional_models_population(tmp_path, monkeypatch):
    model = GalaxyDiffusion(**TINY, conditions=["mag_r"]).fit(
        make_trivial_dataset(8, size=16, seed=1), steps=1, progress=False)
    model.save(tmp_path / "saved")
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "registry")
    pretrained.export(tmp_path / "saved", "tiny-cond", {"description": "conditional"})
    loaded = GalaxyDiffusion.pretrained("tiny-cond", device="cpu")
    # the population in float32, exactly; the weights in float16
    np.testing.assert_array_equal(loaded.conditions_.population, model.conditions_.population)
    assert loaded.population_["mag_r"].unit == "mag"
    drawn = loaded.sample(2, steps=2, seed=0, progress=False)
    assert drawn[1].meta["CONDSRC"] == "population"
