"""Tests of `GalaxyDiffusion`: inputs, sampling, persistence, parameters, and that it learns."""

import inspect
import json
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.wcs.utils import proj_plane_pixel_scales

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.datasets import make_trivial_dataset
from astro_sbgm.diffusion import SAMPLERS
from astro_sbgm.estimator import PRESETS, NotFittedError
from astro_sbgm.io import AstroSBGMInputWarning, write_image

TINY = dict(image_size=16, bands="grz", dim=8, dim_mults=(1, 2),
            attention_levels=(False, False), batch_size=4, timesteps=100, device="cpu")


def _tiny(**kwargs):
    return GalaxyDiffusion(**{**TINY, **kwargs})


@pytest.fixture(scope="module")
def train_set():
    return make_trivial_dataset(6, size=16, seed=2)


@pytest.fixture(scope="module")
def fitted(train_set):
    return _tiny().fit(train_set, steps=3, progress=False)


def _stack(ccds):
    return np.stack([c.data for c in ccds])


# --------------------------------------------------------------------------- sample
def test_sample_returns_calibrated_ccddata(fitted):
    out = fitted.sample(3, seed=11, progress=False)
    assert isinstance(out, list) and len(out) == 3
    for i, ccd in enumerate(out):
        assert isinstance(ccd, CCDData)
        assert ccd.unit == u.nanomaggy
        assert ccd.shape == (3, 16, 16)
        assert ccd.data.dtype == np.float32
        assert np.all(np.isfinite(ccd.data))
        lo, hi = np.asarray(fitted.scaler_.lower_), fitted.scaler_.upper_   # per band
        assert lo.shape == (3,) and np.all(lo < 0)
        assert np.all(ccd.data.min(axis=(1, 2)) >= lo * (1 + 1e-6))
        assert ccd.data.max() <= hi * (1 + 1e-6)
        assert ccd.wcs.has_celestial
        assert list(ccd.wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
        np.testing.assert_allclose(proj_plane_pixel_scales(ccd.wcs) * 3600, [0.262, 0.262],
                                   rtol=1e-9)
        assert ccd.meta["BANDS"] == "g,r,z"
        assert [ccd.meta[f"BAND{j}"] for j in range(3)] == ["g", "r", "z"]
        assert ccd.meta["SAMPLER"] == "dpmpp-2m"
        assert ccd.meta["NFE"] == 20
        assert ccd.meta["SEED"] == 11
        assert ccd.meta["WEIGHTS"] == "ema"
        assert ccd.meta["SAMPLEID"] == i
        assert ccd.meta["TRSTEPS"] == 3
    heun = fitted.sample(1, sampler="heun", steps=5, seed=0, weights="model", progress=False)[0]
    assert heun.meta["SAMPLER"] == "heun" and heun.meta["WEIGHTS"] == "model"
    assert heun.meta["NFE"] == 9  # 2 per step, 1 for the last
    # the raw and the averaged weights differ, and the output says which was used
    ema = fitted.sample(1, sampler="heun", steps=5, seed=0, progress=False)[0]
    assert not np.array_equal(heun.data, ema.data)


def test_sample_meta_survives_fits(fitted, tmp_path):
    ccd = fitted.sample(1, sampler="ddim", steps=4, seed=5, progress=False)[0]
    path = write_image(ccd, tmp_path / "fake.fits")
    header = fits.getheader(path)
    assert header["NFE"] == 4 and header["SEED"] == 5 and header["SAMPLER"] == "ddim"
    assert header["WEIGHTS"] == "ema"


def test_sample_pixel_scale_follows_the_model(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 3, 16, 16)).astype(np.float32)   # no WCS: taken as-is
    model = _tiny(pixel_scale=0.5).fit(x, bands="grz", steps=1, progress=False)
    ccd = model.sample(1, seed=0, steps=3, progress=False)[0]
    np.testing.assert_allclose(proj_plane_pixel_scales(ccd.wcs) * 3600, [0.5, 0.5], rtol=1e-9)


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp-2m"])
def test_sample_i_does_not_depend_on_n_or_batch_size(fitted, sampler):
    kw = dict(sampler=sampler, steps=10, progress=False)
    a = _stack(fitted.sample(5, seed=7, batch_size=2, **kw))
    b = _stack(fitted.sample(3, seed=7, batch_size=64, **kw))
    c = _stack(fitted.sample(1, seed=7, batch_size=1, **kw))
    np.testing.assert_array_equal(a[:3], b)
    np.testing.assert_array_equal(a[:1], c)
    d = _stack(fitted.sample(3, seed=7, **kw))   # batch_size=None: the device's default
    np.testing.assert_array_equal(d, b)
    other = _stack(fitted.sample(3, seed=8, **kw))
    assert not np.array_equal(other, b)
    assert not np.array_equal(a[0], a[1])


def test_sample_without_seed_records_a_reproducible_one(fitted):
    first = fitted.sample(2, steps=3, progress=False)
    seed = first[0].meta["SEED"]
    again = fitted.sample(2, steps=3, seed=seed, progress=False)
    np.testing.assert_array_equal(_stack(first), _stack(again))


# --------------------------------------------------------------------------- usage errors
def test_sample_before_fit_raises_not_fitted():
    model = _tiny()
    with pytest.raises(NotFittedError, match=r"not been fitted.*fit\("):
        model.sample(1)
    with pytest.raises(NotFittedError):
        model.save("never-written")
    assert not os.path.exists("never-written")
    assert issubclass(NotFittedError, ValueError)


def test_unknown_sampler_lists_the_known_ones(fitted):
    with pytest.raises(ValueError, match="unknown sampler 'euler-a'") as err:
        fitted.sample(1, sampler="euler-a", progress=False)
    for name in SAMPLERS:
        assert name in str(err.value)


def test_steps_above_the_schedule_length(fitted):
    assert fitted.schedule_.T == 100
    with pytest.raises(ValueError, match=r"steps must lie in \[1, 100\].*got 101"):
        fitted.sample(1, sampler="ddpm", steps=101, progress=False)
    out = fitted.sample(1, sampler="ddpm", steps=100, seed=0, progress=False)
    assert out[0].meta["NFE"] == 100


def test_unknown_grid_and_bad_n(fitted):
    with pytest.raises(ValueError, match="unknown grid 'log'"):
        fitted.sample(1, grid="log", progress=False)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        fitted.sample(0, progress=False)


# --------------------------------------------------------------------------- persistence
def test_save_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "astro_sbgm model" and config["n_steps"] == 3
    loaded = GalaxyDiffusion.load(path, device="cpu")
    for a, b in ((fitted.net_, loaded.net_), (fitted.ema_net_, loaded.ema_net_)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert loaded.scaler_.to_dict() == fitted.scaler_.to_dict()
    np.testing.assert_array_equal(loaded.schedule_.alphas_cumprod,
                                  fitted.schedule_.alphas_cumprod)
    for sampler in ("dpmpp-2m", "ddpm"):
        kw = dict(sampler=sampler, steps=8, seed=4, progress=False)
        np.testing.assert_array_equal(_stack(fitted.sample(3, **kw)),
                                      _stack(loaded.sample(3, **kw)))
    params = loaded.get_params()
    for key in ("image_size", "dim", "dim_mults", "attention_levels", "objective",
                "timesteps", "scaling", "flux_upper", "seed"):
        assert params[key] == fitted.get_params()[key], key
    assert loaded.n_steps_ == 3 and loaded.n_train_ == 6
    # the config.json path is accepted too
    again = GalaxyDiffusion.load(path / "config.json", device="cpu")
    assert torch.equal(next(again.net_.parameters()), next(loaded.net_.parameters()))


def test_save_never_overwrites_other_files(fitted, tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="readme.txt"):
        fitted.save(other)
    assert os.listdir(other) == ["readme.txt"]
    assert (other / "readme.txt").read_text() == "mine"
    a_file = tmp_path / "file.bin"
    a_file.write_bytes(b"\x00")
    with pytest.raises(FileExistsError, match="file.bin"):
        fitted.save(a_file)
    assert a_file.read_bytes() == b"\x00"
    path = fitted.save(tmp_path / "m")
    stamp = (path / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted.save(path)
    assert (path / "model.safetensors").read_bytes() == stamp
    fitted.save(path, overwrite=True)
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]


def test_load_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        GalaxyDiffusion.load(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="config.json and model.safetensors"):
        GalaxyDiffusion.load(empty)
    (empty / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="model.safetensors"):
        GalaxyDiffusion.load(empty)


class _Trap:
    """Unpickling this creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["ddpm.pt", "model.pkl"])
def test_load_never_unpickles_a_file(tmp_path, name):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(ValueError, match=r"from_astroddpm") as err:
        GalaxyDiffusion.load(path)
    assert "never unpickles" in str(err.value)
    assert not marker.exists()
    # the same file in a model directory is not read either
    d = tmp_path / "dir"
    d.mkdir()
    (d / name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="config.json"):
        GalaxyDiffusion.load(d)
    assert not marker.exists()


# --------------------------------------------------------------------------- parameters
def test_get_params_set_params_like_scikit_learn():
    model = GalaxyDiffusion(image_size=32, dim=16)
    params = model.get_params()
    names = [p for p in inspect.signature(GalaxyDiffusion.__init__).parameters if p != "self"]
    assert list(params) == names
    assert params["image_size"] == 32 and params["dim"] == 16
    assert model.get_params(deep=False) == params
    clone = GalaxyDiffusion(**params)
    assert clone.get_params() == params
    assert model.set_params(dim=24, objective="eps") is model
    assert model.dim == 24 and model.objective == "eps"
    with pytest.raises(ValueError, match="unknown parameter 'width'.*image_size"):
        model.set_params(width=3)
    assert "dim=24" in repr(model) and "image_size=32" in repr(model)
    assert "bands" not in repr(model)   # unchanged defaults are not shown


def test_from_preset_paper():
    model = GalaxyDiffusion.from_preset("paper")
    p = model.get_params()
    assert p["dim"] == 64 and tuple(p["dim_mults"]) == (1, 2, 4, 8)
    assert p["attention_levels"] is None
    assert p["timesteps"] == 1000 and p["objective"] == "eps" and p["loss"] == "l2"
    assert p["scaling"] == "linear" and p["flux_lower"] == 0.0 and p["flux_upper"] == "kmeans"
    assert p["batch_size"] == 56
    assert all(p[k] == v for k, v in PRESETS["paper"].items())
    small = GalaxyDiffusion.from_preset("paper", dim=16, image_size=32)
    assert small.dim == 16 and small.image_size == 32 and small.objective == "eps"
    with pytest.raises(ValueError, match="unknown preset 'huge'.*paper"):
        GalaxyDiffusion.from_preset("huge")


# --------------------------------------------------------------------------- input forms
class _TensorSet(torch.utils.data.Dataset):
    def __init__(self, array):
        self.array = array

    def __len__(self):
        return len(self.array)

    def __getitem__(self, i):
        return torch.from_numpy(self.array[i])


class _CCDSet(torch.utils.data.Dataset):
    def __init__(self, ccds):
        self.ccds = ccds

    def __len__(self):
        return len(self.ccds)

    def __getitem__(self, i):
        return self.ccds[i]


def test_fit_accepts_every_input_form(train_set, tmp_path):
    folder = tmp_path / "cutouts"
    for i, ccd in enumerate(train_set):
        write_image(ccd, folder / f"gal{i:02d}.fits")
    array = np.stack([c.data for c in train_set])
    model = _tiny()
    forms = {"list": (train_set, None), "directory": (str(folder), None),
             "glob": (str(folder / "*.fits"), None), "array": (array, "grz"),
             "tensor dataset": (_TensorSet(array), None),
             "ccd dataset": (_CCDSet(train_set), None)}
    for name, (X, bands) in forms.items():
        np.testing.assert_array_equal(model.prepare(X, bands=bands), array, err_msg=name)
    reference = None
    for name, (X, bands) in forms.items():
        fitted = _tiny().fit(X, bands=bands, steps=1, progress=False)
        assert fitted.n_train_ == len(train_set) and fitted.n_steps_ == 1, name
        if reference is None:
            reference = fitted.history_
        assert fitted.history_ == reference, name   # same data, same seed, same loss


def test_wrong_number_of_bands(train_set):
    two = CCDData(train_set[0].data[:2], unit=u.nanomaggy, wcs=train_set[0].wcs,
                  meta={"BANDS": "g,r", "BAND0": "g", "BAND1": "r"})
    with pytest.raises(ValueError, match=r"band\(s\) \['z'\] are needed"):
        _tiny().fit([two], steps=1, progress=False)
    with pytest.raises(ValueError, match=r"names 3 band\(s\) but the image has 2 plane"):
        _tiny().fit(np.zeros((2, 2, 16, 16), np.float32), bands="grz", steps=1,
                    progress=False)


def test_unknown_band_in_constructor(train_set):
    model = GalaxyDiffusion(image_size=16, bands="gqz")   # no work, no error in __init__
    with pytest.raises(ValueError, match=r"unknown band name\(s\) \['q'\]"):
        model.fit(train_set, steps=1, progress=False)


def test_non_finite_pixels_are_masked_with_a_warning(train_set):
    images = [c.copy() for c in train_set]
    images[1].data[0, 3, 4] = np.nan
    images[2].data[2, 5, 5] = np.inf
    model = _tiny()
    with pytest.warns(AstroSBGMInputWarning, match=r"2 masked or non-finite pixel"):
        flux = model.prepare(images)
    assert np.all(np.isfinite(flux))
    assert flux[1, 0, 3, 4] == 0 and flux[2, 2, 5, 5] == 0
    np.testing.assert_array_equal(flux[0], train_set[0].data)
    with pytest.warns(AstroSBGMInputWarning, match="non-finite"):
        model.fit(images, steps=2, progress=False)
    assert np.all(np.isfinite(model.history_))


def test_wrong_size_without_wcs():
    with pytest.raises(ValueError, match=r"20x20 pixels but the model works on 16x16.*WCS"):
        _tiny().fit(np.zeros((2, 3, 20, 20), np.float32), bands="grz", steps=1,
                    progress=False)


def test_unit_that_is_not_a_flux(train_set):
    bad = CCDData(train_set[0].data, unit=u.adu, wcs=train_set[0].wcs,
                  meta={"BANDS": "g,r,z", "BAND0": "g", "BAND1": "r", "BAND2": "z"})
    with pytest.raises(u.UnitConversionError, match=r"adu cannot be converted to nanomaggy"):
        _tiny().fit([bad], steps=1, progress=False)
    # a convertible unit is converted: 1 nanomaggy = 1e-9 maggy
    ok = CCDData(train_set[0].data * 1e-9, unit=u.maggy, wcs=train_set[0].wcs,
                 meta={"BANDS": "g,r,z", "BAND0": "g", "BAND1": "r", "BAND2": "z"})
    np.testing.assert_allclose(_tiny().prepare([ok])[0], train_set[0].data, rtol=1e-5)


def test_empty_training_set(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        _tiny().fit([], steps=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        _tiny().fit(_TensorSet(np.zeros((0, 3, 16, 16), np.float32)), steps=1,
                    progress=False)
    with pytest.raises(ValueError, match="no images"):
        _tiny().fit(np.zeros((0, 3, 16, 16), np.float32), bands="grz", steps=1,
                    progress=False)
    with pytest.raises(ValueError, match="holds no FITS files"):
        _tiny().fit(str(tmp_path), steps=1, progress=False)


def test_bad_steps_and_resume_arguments(train_set):
    with pytest.raises(ValueError, match="steps must be >= 0, got -1"):
        _tiny().fit(train_set, steps=-1, progress=False)
    with pytest.raises(ValueError, match="image_size=17 is not divisible by 2"):
        _tiny(image_size=17).fit(train_set, steps=1, progress=False)


# --------------------------------------------------------------------------- it learns
def _blobs(n, size=16, seed=0):
    """Noiseless round Gaussians (sigma 2 px), amplitude 1 to 2, band ratios 1 : 2 : 3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    blob = np.exp(-0.5 * (xx ** 2 + yy ** 2) / 2.0 ** 2)
    amp = rng.uniform(1.0, 2.0, n)
    ratio = np.array([1.0, 2.0, 3.0])
    return (amp[:, None, None, None] * ratio[None, :, None, None] * blob).astype(np.float32)


def _edges(x):
    return np.concatenate([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], axis=-1)


def test_a_tiny_model_learns_a_trivial_population():
    """Loss falls and samples have the training set's colours, shape and fluxes.

    Measured (1 thread, this machine): fit 600 steps ~ 35 s; training totals
    g, r, z = 38.6, 77.2, 115.8 nmgy; dpmpp-2m samples ~ 63, 92, 139 and ddpm
    ~ 59, 95, 140; correlation of the mean images 0.999; loss ratio 0.03.
    """
    train = _blobs(256)
    model = GalaxyDiffusion(image_size=16, bands="grz", dim=16, dim_mults=(1, 2),
                            attention_levels=(False, True), objective="v", scaling="linear",
                            flux_lower=0.0, flux_upper=6.5, learning_rate=2e-3, batch_size=16,
                            device="cpu", seed=0)
    model.fit(train, bands="grz", steps=600, progress=False)
    loss = np.asarray(model.history_)
    assert len(loss) == 600
    assert loss[-50:].mean() < 0.3 * loss[:20].mean()

    train_total = train.sum(axis=(2, 3)).mean(axis=0)
    mean_train = train.mean(axis=0)
    for kw in (dict(sampler="dpmpp-2m", steps=20, n=32), dict(sampler="ddpm", steps=200, n=24)):
        fakes = model.sample(kw.pop("n"), seed=0, progress=False, **kw)
        x = _stack(fakes)
        total = x.sum(axis=(2, 3))
        mean_total = total.mean(axis=0)
        # colours: g < r < z on average and for most galaxies
        assert mean_total[0] < mean_total[1] < mean_total[2], (kw, mean_total)
        ordered = (total[:, 0] < total[:, 1]) & (total[:, 1] < total[:, 2])
        assert ordered.mean() >= 2 / 3, (kw, ordered.mean())
        # empty sky at the edges, a bright centre
        peak = x.max(axis=(2, 3)).mean()
        assert np.abs(_edges(x)).mean() < 0.1 * peak, kw
        # the mean image looks like the mean training image
        r = np.corrcoef(x.mean(axis=0).ravel(), mean_train.ravel())[0, 1]
        assert r > 0.9, (kw, r)
        # fluxes within a factor 2 of the training set's, band by band
        ratio = mean_total / train_total
        assert np.all((ratio > 0.5) & (ratio < 2.0)), (kw, mean_total, train_total)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.sample(1, seed=0, steps=20, progress=False)[0].meta["TRSTEPS"] == 600


# --------------------------------------------------------------------------- recipe, fine-tuning
def _record_batches(monkeypatch):
    """Record the data indices and timesteps of every training batch."""
    from astro_sbgm import training

    seen = []
    orig_idx = training.Trainer._next_indices
    orig_draw = training.draw_training_noise

    def next_indices(self):
        idx = orig_idx(self)
        seen.append({"idx": list(idx)})
        return idx

    def draw(*args, **kwargs):
        noise, t = orig_draw(*args, **kwargs)
        seen[-1]["t"] = t.clone()
        return noise, t

    monkeypatch.setattr(training.Trainer, "_next_indices", next_indices)
    monkeypatch.setattr(training, "draw_training_noise", draw)
    monkeypatch.setattr("astro_sbgm.diffusion.objectives.draw_training_noise", draw)
    return seen


def test_default_recipe_trains_on_continuous_timesteps(train_set, monkeypatch):
    seen = _record_batches(monkeypatch)
    _tiny(batch_size=6).fit(train_set, steps=3, progress=False)
    t = torch.cat([s["t"] for s in seen])
    assert len(t) == 18 and torch.all((t >= 0) & (t <= 99))
    assert torch.any(t != t.round())              # between the integers
    seen.clear()
    _tiny(batch_size=6, continuous_time=False).fit(train_set, steps=3, progress=False)
    t = torch.cat([s["t"] for s in seen])
    assert torch.all(t == t.round())              # the paper: integers only
    assert PRESETS["paper"]["continuous_time"] is False


def test_default_scaler_is_per_band_and_saved(fitted, tmp_path):
    s = fitted.scaler_
    assert s.sky_sigma_.shape == (3,) and np.all(s.sky_sigma_ > 0)
    np.testing.assert_allclose(s.lower_, -6 * s.sky_sigma_)
    fitted.save(tmp_path / "m")
    back = GalaxyDiffusion.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(back.scaler_.lower_, s.lower_)
    np.testing.assert_array_equal(back.scaler_.softening_, s.softening_)


def test_warm_start_is_a_fresh_run_of_the_given_steps(train_set, monkeypatch):
    seen = _record_batches(monkeypatch)
    m = _tiny(batch_size=4).fit(train_set, steps=4, progress=False)
    first = seen[0]
    scaler = m.scaler_.to_dict()
    seen.clear()
    m.fit(train_set, steps=3, warm_start=True, progress=False)
    assert len(seen) == 3                          # the steps of this call, not the total
    assert m.n_steps_ == 7 and len(m.history_) == 7
    assert (seen[0]["idx"], seen[0]["t"].tolist()) != (first["idx"], first["t"].tolist())
    assert m.scaler_.to_dict() == scaler           # the scaling is kept, not refitted
    seen.clear()
    m.fit(train_set, steps=2, warm_start=True, progress=False)
    assert m.n_steps_ == 9 and len(seen) == 2


def test_resumed_fine_tune_counts_from_the_model_it_started_from(train_set, tmp_path):
    # the resuming call may be handed a later model than the one the run began
    # from (e.g. a bundled name whose weights were since replaced by this very
    # run's output): the checkpoint's weights win, and so must its step count
    base = _tiny(batch_size=4).fit(train_set, steps=4, progress=False)
    base.save(tmp_path / "base")
    ckpt = tmp_path / "ckpt"
    later = GalaxyDiffusion.load(tmp_path / "base", device="cpu")
    later.fit(train_set, steps=3, warm_start=True, progress=False, checkpoint_dir=ckpt,
              checkpoint_every=3)
    assert later.n_steps_ == 7
    later.fit(train_set, steps=5, warm_start=True, progress=False, checkpoint_dir=ckpt,
              resume=True)
    assert later.n_steps_ == 4 + 5
    straight = GalaxyDiffusion.load(tmp_path / "base", device="cpu").fit(
        train_set, steps=5, warm_start=True, progress=False)
    assert later.history_ == straight.history_


def test_warm_start_restarts_the_learning_rate_warm_up(train_set, monkeypatch):
    from astro_sbgm import training

    lrs = []
    orig = training.Trainer.train_step

    def step(self):
        out = orig(self)
        lrs.append(self.optimizer.param_groups[0]["lr"])
        return out

    monkeypatch.setattr(training.Trainer, "train_step", step)
    m = _tiny(lr_warmup=4).fit(train_set, steps=5, progress=False)
    lrs.clear()
    m.fit(train_set, steps=2, warm_start=True, progress=False)
    np.testing.assert_allclose(lrs, [m.learning_rate / 4, m.learning_rate / 2])


def test_round_trip_returns_what_it_was_given(fitted, train_set):
    one = fitted.round_trip(train_set[0])
    assert isinstance(one, CCDData) and one.shape == train_set[0].shape
    assert one.wcs.wcs.compare(train_set[0].wcs.wcs) and one.unit == train_set[0].unit
    many = fitted.round_trip(train_set[:2])
    assert isinstance(many, list) and len(many) == 2
    arr = np.stack([c.data for c in train_set[:2]])
    out = fitted.round_trip(arr)
    assert isinstance(out, np.ndarray) and out.shape == arr.shape
    np.testing.assert_array_equal(out, np.stack([c.data for c in many]))
    # exactly the scaler's transform then inverse: values outside [lower, upper] are clipped
    s = fitted.scaler_
    np.testing.assert_array_equal(out, s.inverse_transform(s.transform(arr)))
    lo = np.asarray(s.lower_, np.float32)[None, :, None, None]
    assert np.all(out >= lo)
    assert np.all(out[arr < lo] == np.broadcast_to(lo, arr.shape)[arr < lo])
    assert not np.shares_memory(one.data, train_set[0].data)


def test_round_trip_separates_the_clip_from_the_model():
    """A perfect model (round-tripped real galaxies) sits at the real-vs-real floor only
    against round-tripped galaxies; against raw ones it also pays the clip."""
    from astro_sbgm.datasets import make_mock_legacy_survey
    from astro_sbgm.metrics import measure_galaxies, synthetic_galaxy_distance

    a = make_mock_legacy_survey(120, size=32, seed=21)
    b = make_mock_legacy_survey(120, size=32, seed=22)
    # a linear clip to [0, 1] nanomaggies: flattens the bright cores of these galaxies
    model = GalaxyDiffusion(image_size=32, dim=8, dim_mults=(1, 2),
                            attention_levels=(False, False), scaling="linear", flux_lower=0.0,
                            flux_upper=1.0, device="cpu").fit(a[:8], steps=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat_a, cat_b = measure_galaxies(a), measure_galaxies(b)
        cat_a_rt = measure_galaxies(model.round_trip(a))
        cat_b_rt = measure_galaxies(model.round_trip(b))
        floor = synthetic_galaxy_distance(cat_b, cat_a, bootstrap=50, seed=1)
        perfect_rt = synthetic_galaxy_distance(cat_b_rt, cat_a_rt)
        perfect_raw = synthetic_galaxy_distance(cat_b_rt, cat_a)
        norm = synthetic_galaxy_distance(cat_a_rt, cat_a)
    assert abs(perfect_rt.total - floor.total) < 2 * floor.bootstrap_std
    assert perfect_raw.total > floor.total + 2 * floor.bootstrap_std   # the clip's cost shows
    assert norm.total > 0.5 * (perfect_raw.total - floor.total)
