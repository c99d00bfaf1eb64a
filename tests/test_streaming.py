"""Tests of streamed training: sets on disk read through a DataLoader while training.

The promise under test: streaming changes where the images come from, never
which ones a step sees.  A streamed run draws the batches of an in-memory run
bit for bit (so it ends with bit-identical weights), resumes mid-epoch exactly,
and refuses bad sets with an error that names the problem.  The two-process
(gloo) version of the batch equality is in ``test_distributed.py``.
"""

import json
import os

import numpy as np
import pytest
import torch
from astropy.table import Table

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.datasets import make_trivial_dataset
from astro_sbgm.diffusion import Denoiser, DiffusionSchedule
from astro_sbgm.io import write_image
from astro_sbgm.nn import UNet
from astro_sbgm.preprocessing import FluxScaler
from astro_sbgm.training import Trainer
from astro_sbgm.training_data import (STORE_MARKER, CutoutStore, StreamingData,
                                      fit_flux_scaler, open_training_set, write_cutout_store)

N, SIZE, BATCH = 10, 16, 4   # 10 images in batches of 4: epochs end mid-batch
TINY = dict(image_size=SIZE, bands="grz", dim=16, dim_mults=(1, 2),
            attention_levels=(False, False), batch_size=BATCH, timesteps=100, device="cpu",
            lr_warmup=1, learning_rate=1e-3)


def _tiny(**kwargs):
    return GalaxyDiffusion(**{**TINY, **kwargs})


def _state(model):
    out = {f"model.{k}": v for k, v in model.net_.state_dict().items()}
    out.update({f"ema.{k}": v for k, v in model.ema_net_.state_dict().items()})
    return out


def _assert_same_model(a, b, what):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{what}: {k} differs"
    assert a.history_ == b.history_, what
    assert a.scaler_.to_dict() == b.scaler_.to_dict(), what
    assert a.n_train_ == b.n_train_ == N


@pytest.fixture(scope="module")
def images():
    return make_trivial_dataset(N, size=SIZE, seed=3)


@pytest.fixture(scope="module")
def on_disk(images, tmp_path_factory):
    """The same images as a FITS folder, an index table and a store (3 shards)."""
    tmp = tmp_path_factory.mktemp("sets")
    folder = tmp / "fits"
    names = []
    for i, ccd in enumerate(images):
        names.append(f"cutout_{i:06d}.fits")
        write_image(ccd, folder / names[-1])
    index = Table({"row": np.arange(N + 1), "file": names[:5] + [""] + names[5:]})
    index.write(folder / "index.ecsv", format="ascii.ecsv")   # one source without a cutout
    store = write_cutout_store(images, tmp / "store", shard_size=4)
    return {"folder": folder, "index": folder / "index.ecsv", "store": store.path}


@pytest.fixture(scope="module")
def in_memory(images):
    return _tiny().fit(images, steps=6, progress=False)


# --------------------------------------------------------------------------- batches
def _trainer(data, seed=1):
    torch.manual_seed(0)
    net = UNet(in_channels=3, dim=16, dim_mults=(1, 2), attention_levels=(False, False))
    den = Denoiser(net, DiffusionSchedule.from_name("cosine", 100), "v")
    return Trainer(den, data, batch_size=BATCH, seed=seed)


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_batches_are_the_in_memory_batches_bit_for_bit(images, on_disk, workers):
    model = _tiny()
    model._validate()
    source, streamed = open_training_set(on_disk["store"], model.bands_, SIZE, 0.262)
    assert streamed   # a store streams by default
    fluxes = source.load_all()
    scaler = FluxScaler(upper=100.0, lower="auto", stretch="asinh", softening="auto")
    scaler.fit(fluxes)
    memory = _trainer(torch.from_numpy(scaler.transform(fluxes)))
    stream = StreamingData(source.scaled(scaler), (N, 3, SIZE, SIZE), num_workers=workers)
    disk = _trainer(stream)
    steps = 12    # almost 5 epochs, with batches across epoch boundaries
    for step in range(steps):
        a, b = memory._next_batch(), disk._next_batch()
        assert torch.equal(a, b), f"step {step}"
        assert memory._batch_idx == disk._batch_idx
    # batches come from the reading plan, not only from direct reads
    assert stream.direct_reads < steps
    stream.close()


def test_every_on_disk_form_trains_the_in_memory_weights(on_disk, images, in_memory):
    class Arrays(torch.utils.data.Dataset):
        def __len__(self):
            return N

        def __getitem__(self, i):
            return torch.from_numpy(images[i].data.copy())

    forms = {"store": (on_disk["store"], {"num_workers": 1}),
             "store object": (CutoutStore(on_disk["store"]), {"num_workers": 0}),
             "folder": (on_disk["folder"], {"stream": True, "num_workers": 1}),
             "index table": (on_disk["index"], {"stream": True, "num_workers": 0}),
             "dataset": (Arrays(), {"num_workers": 0}),
             "store read into memory": (on_disk["store"], {"stream": False})}
    for name, (X, kwargs) in forms.items():
        _assert_same_model(_tiny().fit(X, steps=6, progress=False, **kwargs), in_memory, name)


def test_kmeans_scaler_on_disk_equals_in_memory(on_disk, images):
    a = _tiny(flux_upper="kmeans", scaling="linear").fit(images, steps=2, progress=False)
    b = _tiny(flux_upper="kmeans", scaling="linear").fit(on_disk["store"], steps=2,
                                                         progress=False, num_workers=0)
    _assert_same_model(a, b, "kmeans")


def test_resume_mid_epoch_from_disk_equals_an_uninterrupted_run(on_disk, in_memory, tmp_path):
    first = _tiny().fit(on_disk["store"], steps=3, checkpoint_dir=tmp_path / "ck",
                        checkpoint_every=3, progress=False, num_workers=1)
    assert first.n_steps_ == 3      # 12 images drawn of 10: stopped in the second epoch
    resumed = _tiny().fit(on_disk["store"], steps=6, checkpoint_dir=tmp_path / "ck",
                          resume=True, progress=False, num_workers=1)
    _assert_same_model(resumed, in_memory, "resumed on disk")
    # a streamed checkpoint resumes as well from the images in memory
    again = _tiny().fit(on_disk["folder"], steps=6, checkpoint_dir=tmp_path / "ck",
                        resume=True, progress=False, stream=False)
    _assert_same_model(again, in_memory, "resumed in memory")


# --------------------------------------------------------------------------- scaler
@pytest.mark.parametrize("max_images", [3, 7, 100])
def test_scaler_subsample_is_documented_evenly_spaced_images(on_disk, max_images):
    model = _tiny()
    model._validate()
    source, _ = open_training_set(on_disk["store"], model.bands_, SIZE, 0.262)
    fluxes = source.load_all()
    pick = np.unique(np.linspace(0, N - 1, min(N, max_images)).round().astype(int))
    assert pick[0] == 0 and pick[-1] == N - 1
    for kwargs in ({"upper": "kmeans"}, {"upper": 100.0, "lower": "auto", "stretch": "asinh",
                                         "softening": "auto"}):
        streamed, n_read = fit_flux_scaler(FluxScaler(**kwargs), source, max_images=max_images)
        expected = FluxScaler(**kwargs).fit(fluxes[pick])
        assert n_read == len(pick)
        assert streamed.to_dict() == expected.to_dict(), kwargs
    if max_images < N:   # a real subsample: not the fit on every image
        whole = FluxScaler(upper="kmeans").fit(fluxes).upper_
        sub = fit_flux_scaler(FluxScaler(upper="kmeans"), source, max_images=max_images)[0]
        assert sub.upper_ != whole


# --------------------------------------------------------------------------- store
def test_store_round_trip_and_atomic_write(images, tmp_path):
    store = write_cutout_store(iter(images), tmp_path / "s", shard_size=3)   # a generator
    assert len(store) == N and store.shape == (N, 3, SIZE, SIZE) and store.bands == list("grz")
    assert abs(store.pixel_scale - 0.262) < 1e-6
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        STORE_MARKER] + [f"shard-{k:05d}.npy" for k in range(4)]
    for i in (0, 3, N - 1, -1):
        np.testing.assert_array_equal(store[i], images[i].data)

    def broken():
        yield from images[:4]
        raise OSError("disk unplugged")

    with pytest.raises(OSError, match="unplugged"):
        write_cutout_store(broken(), tmp_path / "s", shard_size=3, overwrite=True)
    with pytest.raises(OSError, match="unplugged"):
        write_cutout_store(broken(), tmp_path / "new", shard_size=3)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]    # no temporary left
    assert len(CutoutStore(tmp_path / "s")) == N                  # the old store is whole
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_cutout_store(images, tmp_path / "s")
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="not a cutout store"):
        write_cutout_store(images, tmp_path / "mine", overwrite=True)
    smaller = write_cutout_store(images[:2], tmp_path / "s", overwrite=True)
    assert len(smaller) == 2


def test_store_onto_a_model_grid(images, tmp_path):
    store = write_cutout_store(images, tmp_path / "s", image_size=12)
    assert store.shape == (N, 3, 12, 12)
    np.testing.assert_array_equal(store[1], images[1].data[:, 2:14, 2:14])


# --------------------------------------------------------------------------- bad inputs
def test_bad_sets_give_clear_errors(images, on_disk, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no FITS files"):
        _tiny().fit(tmp_path / "empty", steps=1, progress=False, stream=True)
    with pytest.raises(ValueError, match="first image is 16x16.*image_size="):
        write_cutout_store([images[0], make_trivial_dataset(1, size=20)[0]], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    two = write_cutout_store(np.stack([c.data[:2] for c in images]), tmp_path / "gr", bands="gr")
    with pytest.raises(ValueError, match=r"holds the bands \['g', 'r'\].*missing \['z'\]"):
        _tiny().fit(two, steps=1, progress=False)
    with pytest.raises(ValueError, match="holds 16x16 images.*image_size=32"):
        _tiny(image_size=32).fit(on_disk["store"], steps=1, progress=False)
    folder = tmp_path / "gr_fits"
    write_image(images[0], folder / "a.fits")
    from astropy.nddata import CCDData
    ccd = images[1]
    write_image(CCDData(ccd.data[:2], unit=ccd.unit, wcs=ccd.wcs,
                        meta={"BANDS": "g,r", "BAND0": "g", "BAND1": "r"}), folder / "b.fits")
    with pytest.raises(ValueError, match=r"b\.fits.*\['z'\] are needed"):
        _tiny().fit(folder, steps=1, progress=False, stream=True, num_workers=0)
    with pytest.raises(ValueError, match="stream=True reads images from disk"):
        _tiny().fit(images, steps=1, progress=False, stream=True)
    with pytest.raises(ValueError, match="stream must be True, False or 'auto'"):
        _tiny().fit(on_disk["store"], steps=1, progress=False, stream="yes")
    with pytest.raises(ValueError, match="no 'file' column"):
        _tiny().fit(Table({"ra": [1.0]}), steps=1, progress=False)


def test_a_damaged_store_is_named(images, tmp_path):
    store = write_cutout_store(images, tmp_path / "s", shard_size=4)
    with open(store.path / "shard-00002.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match="shard-00002.npy' has 1000 bytes where 6272"):
        CutoutStore(tmp_path / "s")
    with open(store.path / "shard-00001.npy", "r+b") as f:
        f.truncate(64)
    with pytest.raises(ValueError, match="shard-00001.npy' is not a readable .npy"):
        CutoutStore(tmp_path / "s")
    (store.path / STORE_MARKER).write_text("{")
    with pytest.raises(ValueError, match="manifest.*cannot be read"):
        CutoutStore(tmp_path / "s")
    with pytest.raises(ValueError, match="not a cutout store"):
        CutoutStore(tmp_path)


def test_auto_streams_large_file_sets_only(on_disk, monkeypatch):
    from astro_sbgm import training_data
    model = _tiny()
    model._validate()
    assert open_training_set(on_disk["folder"], model.bands_, SIZE, 0.262)[1] is False
    monkeypatch.setattr(training_data, "STREAM_ABOVE_BYTES", N * 3 * SIZE * SIZE * 4 - 1)
    assert open_training_set(on_disk["folder"], model.bands_, SIZE, 0.262)[1] is True
    assert open_training_set(on_disk["index"], model.bands_, SIZE, 0.262)[0].paths[5].endswith(
        "cutout_000005.fits")
    assert open_training_set([1, 2], model.bands_, SIZE, 0.262) == (None, False)
    assert json.loads((on_disk["store"] / STORE_MARKER).read_text())["n"] == N
    assert os.path.isdir(on_disk["store"])
