"""Tests of the training loop: augmentation, EMA, clipping, checkpoints and resume."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from astro_sbgm import GalaxyDiffusion, _serialization, training
from astro_sbgm.datasets import make_trivial_dataset
from astro_sbgm.diffusion import Denoiser, DiffusionSchedule
from astro_sbgm.training import (CHECKPOINT_MARKER, EMA, Trainer, augment,
                                 latest_checkpoint, prune_checkpoints)


class _Toy(torch.nn.Module):
    """A one-convolution 'denoiser' network: ``net(x, t)``."""

    def __init__(self, channels=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x)


def _toy_trainer(n=8, size=8, seed=0, **kwargs):
    torch.manual_seed(seed)
    net = _Toy()
    den = Denoiser(net, DiffusionSchedule.from_name("cosine", 50), "eps")
    data = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("lr_warmup", 1)
    return Trainer(den, data, seed=seed, **kwargs)


def _dihedral(img):
    """The 8 flips/rotations of ``img`` (band, y, x), in augment's code order."""
    return [torch.rot90(img.flip(-1) if code & 4 else img, code & 3, dims=(-2, -1))
            for code in range(8)]


def _tiny_model(**kwargs):
    params = dict(image_size=16, bands="grz", dim=8, dim_mults=(1, 2),
                  attention_levels=(False, False), batch_size=4, timesteps=100, device="cpu")
    params.update(kwargs)
    return GalaxyDiffusion(**params)


def _tmp_files(directory):
    return [p for p in os.listdir(directory) if ".tmp" in p]


# --------------------------------------------------------------------------- augmentation
def test_augment_applies_the_eight_dihedral_transforms():
    img = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(1))
    variants = _dihedral(img)
    # an asymmetric image: the 8 transforms are all different
    for i in range(8):
        for j in range(i):
            assert not torch.equal(variants[i], variants[j])
    x = img.expand(400, -1, -1, -1).clone()
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    seen = []
    for o in out:
        # every image is one transform of its original, the same one in every band
        matches = [k for k, v in enumerate(variants) if torch.equal(o, v)]
        assert len(matches) == 1
        seen.append(matches[0])
    counts = np.bincount(seen, minlength=8)
    assert np.all(counts > 0), counts
    # roughly uniform: 50 expected per transform out of 400
    assert counts.min() > 20 and counts.max() < 90, counts
    # reproducible from the generator
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(0)))


def test_trainer_batches_are_transforms_of_training_images():
    tr = _toy_trainer(n=6, size=6)
    originals = [_dihedral(img) for img in tr.data]
    for _ in range(5):
        batch = tr._next_batch()
        for img in batch:
            assert any(torch.equal(img, v) for vs in originals for v in vs)
    tr_plain = _toy_trainer(n=6, size=6, augment_data=False)
    batch = tr_plain._next_batch()
    for img in batch:
        assert any(torch.equal(img, d) for d in tr_plain.data)


# --------------------------------------------------------------------------- EMA
def test_ema_decay_is_a_half_life_in_images():
    ema = EMA(_Toy(), halflife=1000, rampup=None)
    assert ema.decay(10, 10) == pytest.approx(0.5 ** (10 / 1000), rel=1e-12)
    # after `halflife` images the old weights count for one half
    assert ema.decay(10 ** 6, 10) ** 100 == pytest.approx(0.5, rel=1e-12)
    ramped = EMA(_Toy(), halflife=1000, rampup=0.1)
    # early: half-life = 0.1 * images seen = 20 images
    assert ramped.decay(200, 10) == pytest.approx(0.5 ** (10 / 20), rel=1e-12)
    # late: the half-life itself
    assert ramped.decay(10 ** 6, 10) == pytest.approx(0.5 ** (10 / 1000), rel=1e-12)


def test_ema_update_is_the_moving_average():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ema = EMA(net, halflife=40, rampup=None)
    assert ema.net is not net
    assert all(not p.requires_grad for p in ema.net.parameters())
    old = [p.detach().clone() for p in ema.net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    net.train()
    net(torch.randn(8, 4))  # changes the BatchNorm running statistics (buffers)
    ema.update(net, images_seen=10 ** 6, batch=20)
    d = 0.5 ** (20 / 40)
    for pe, po, pn in zip(ema.net.parameters(), old, net.parameters()):
        torch.testing.assert_close(pe, d * po + (1 - d) * pn.detach(), rtol=1e-6, atol=1e-7)
        assert not torch.equal(pe, pn)
    for be, bn in zip(ema.net.buffers(), net.buffers()):
        assert torch.equal(be, bn)


def _distance(a, b):
    return float(torch.sqrt(sum(((x.detach() - y.detach()) ** 2).sum() for x, y in zip(a, b))))


def test_ema_warm_up_follows_recent_weights():
    """With the ramp-up, a short run's average is near the trained weights, not the start."""
    distances = {}
    for rampup in (0.1, None):
        tr = _toy_trainer(lr=3e-2, ema_halflife=10 ** 6, ema_rampup=rampup)
        init = [p.detach().clone() for p in tr.net.parameters()]
        for _ in range(20):
            tr.train_step()
        moved = _distance(list(tr.net.parameters()), init)
        assert moved > 0.1
        distances[rampup] = (_distance(list(tr.ema.net.parameters()), init) / moved,
                             _distance(list(tr.ema.net.parameters()), list(tr.net.parameters()))
                             / moved)
    from_init, from_net = distances[0.1]
    assert from_init > 0.6 and from_net < 0.4, distances
    # without the ramp-up the 10**6-image half-life keeps the initial weights
    assert distances[None][0] < 0.01, distances


# --------------------------------------------------------------------------- clipping, NaN
def _grad_norm(net):
    return float(torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters())))


def test_gradient_clipping_bounds_the_norm():
    free = _toy_trainer(grad_clip=None)
    free.train_step()
    unclipped = _grad_norm(free.net)
    clip = unclipped / 10
    clipped = _toy_trainer(grad_clip=clip)
    clipped.train_step()
    assert _grad_norm(clipped.net) <= clip * (1 + 1e-5)
    assert _grad_norm(clipped.net) == pytest.approx(clip, rel=1e-4)
    # same direction: clipping only rescales
    for pc, pf in zip(clipped.net.parameters(), free.net.parameters()):
        torch.testing.assert_close(pc.grad * 10, pf.grad, rtol=1e-4, atol=1e-7)


def test_non_finite_loss_raises_and_keeps_the_last_checkpoint(tmp_path):
    tr = _toy_trainer()
    ckdir = tmp_path / "ck"
    tr.run(3, checkpoint_dir=ckdir, checkpoint_every=1, progress=False)
    before = {p.name: p.read_bytes() for p in ckdir.iterdir()}
    weights = {k: v.clone() for k, v in tr.net.state_dict().items()}
    tr.data = torch.full_like(tr.data, float("nan"))
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 4.*learning rate"):
        tr.run(6, checkpoint_dir=ckdir, checkpoint_every=1, progress=False)
    assert tr.step == 3
    after = {p.name: p.read_bytes() for p in ckdir.iterdir()}
    assert after == before
    assert latest_checkpoint(ckdir).name == "checkpoint-000000003.json"
    # the weights were not touched by the failed step
    for k, v in tr.net.state_dict().items():
        assert torch.equal(v, weights[k])


def test_estimator_diverging_learning_rate_raises(tmp_path):
    data = make_trivial_dataset(8, size=16, seed=0)
    model = _tiny_model(learning_rate=1e30, lr_warmup=1)
    with pytest.raises(FloatingPointError, match=r"learning rate \(now 1e\+30\)"):
        model.fit(data, steps=10, progress=False, checkpoint_dir=tmp_path / "ck")
    assert _tmp_files(tmp_path / "ck") == []


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_writes_tensors_then_json_and_leaves_no_temp_files(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append(os.path.basename(str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(training.os, "replace", spy)
    tr = _toy_trainer()
    ckdir = tmp_path / "ck"
    tr.run(4, checkpoint_dir=ckdir, checkpoint_every=2, progress=False)
    assert renames == [CHECKPOINT_MARKER,
                       "checkpoint-000000002.safetensors", "checkpoint-000000002.json",
                       "checkpoint-000000004.safetensors", "checkpoint-000000004.json"]
    assert sorted(os.listdir(ckdir)) == sorted(set(renames))
    record = json.loads((ckdir / "checkpoint-000000004.json").read_text())
    assert record["step"] == 4 and record["format"] == "astro_sbgm checkpoint"
    tensors = load_file(str(ckdir / "checkpoint-000000004.safetensors"))
    for k, v in tr.net.state_dict().items():
        assert torch.equal(tensors[f"model.{k}"], v)
    assert any(k.startswith("optim.") for k in tensors)


def test_interrupted_checkpoint_is_ignored(tmp_path, monkeypatch):
    tr = _toy_trainer()
    ckdir = tmp_path / "ck"
    tr.run(2, checkpoint_dir=ckdir, checkpoint_every=2, progress=False)
    good = latest_checkpoint(ckdir)

    # a crash after the tensors, before the JSON record
    def crash(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(training, "atomic_write_text", crash)
    with pytest.raises(OSError, match="disk full"):
        tr.run(4, checkpoint_dir=ckdir, checkpoint_every=2, progress=False)
    monkeypatch.undo()
    assert (ckdir / "checkpoint-000000004.safetensors").exists()
    assert latest_checkpoint(ckdir) == good
    assert _tmp_files(ckdir) == []

    # a crash while the tensors are written: the temporary file is removed
    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(_serialization, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        tr.run(6, checkpoint_dir=ckdir, checkpoint_every=2, progress=False)
    assert _tmp_files(ckdir) == []
    assert not (ckdir / "checkpoint-000000006.safetensors").exists()
    assert latest_checkpoint(ckdir) == good


def test_latest_checkpoint_skips_records_without_tensors(tmp_path):
    tr = _toy_trainer()
    ckdir = tmp_path / "ck"
    tr.run(4, checkpoint_dir=ckdir, checkpoint_every=2, progress=False)
    assert latest_checkpoint(ckdir).name == "checkpoint-000000004.json"
    (ckdir / "checkpoint-000000004.safetensors").unlink()
    assert latest_checkpoint(ckdir).name == "checkpoint-000000002.json"
    (ckdir / "checkpoint-000000002.safetensors").unlink()
    assert latest_checkpoint(ckdir) is None
    assert latest_checkpoint(tmp_path / "missing") is None


def test_keep_checkpoints_prunes_the_oldest_and_resumes(tmp_path):
    ckdir = tmp_path / "ck"
    tr = _toy_trainer()
    tr.run(3, checkpoint_dir=ckdir, checkpoint_every=1, progress=False)
    # a damaged checkpoint is evidence: pruning leaves it
    (ckdir / "checkpoint-000000001.json.damaged").write_text("{}")
    tr.run(6, checkpoint_dir=ckdir, checkpoint_every=1, progress=False, keep_checkpoints=2)
    names = sorted(p.name for p in ckdir.iterdir() if p.name.startswith("checkpoint-"))
    assert names == ["checkpoint-000000001.json.damaged",
                     "checkpoint-000000005.json", "checkpoint-000000005.safetensors",
                     "checkpoint-000000006.json", "checkpoint-000000006.safetensors"]
    # what is kept resumes: the same state as a run that never pruned
    again = _toy_trainer()
    again.load_checkpoint(latest_checkpoint(ckdir))
    assert again.step == 6
    for a, b in zip(again.net.parameters(), tr.net.parameters()):
        assert torch.equal(a, b)
    assert [p.name for p in prune_checkpoints(ckdir, 1)] == ["checkpoint-000000005.json"]
    assert not (ckdir / "checkpoint-000000005.safetensors").exists()
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="keep_checkpoints must be an integer >= 1"):
            _toy_trainer().run(1, checkpoint_dir=tmp_path / "other", progress=False,
                               keep_checkpoints=bad)


def test_foreign_checkpoint_dir_is_refused_untouched(tmp_path):
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("precious")
    tr = _toy_trainer()
    with pytest.raises(FileExistsError, match="chapter1.tex"):
        tr.run(2, checkpoint_dir=other, progress=False)
    assert os.listdir(other) == ["chapter1.tex"]
    assert (other / "chapter1.tex").read_text() == "precious"
    assert tr.step == 0
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="file.txt"):
        tr.run(2, checkpoint_dir=a_file, progress=False)
    assert a_file.read_text() == "x"


def test_estimator_refuses_foreign_checkpoint_dir(tmp_path):
    other = tmp_path / "results"
    other.mkdir()
    (other / "table.csv").write_text("a,b\n1,2\n")
    data = make_trivial_dataset(4, size=16, seed=0)
    with pytest.raises(FileExistsError, match="table.csv"):
        _tiny_model().fit(data, steps=2, progress=False, checkpoint_dir=other)
    assert os.listdir(other) == ["table.csv"]
    assert (other / "table.csv").read_text() == "a,b\n1,2\n"


def test_refused_checkpoint_dir_leaves_a_fitted_model_as_it_was(tmp_path):
    other = tmp_path / "results"
    other.mkdir()
    (other / "table.csv").write_text("a,b\n1,2\n")
    data = make_trivial_dataset(4, size=16, seed=0)
    model = _tiny_model().fit(data, steps=2, progress=False)
    before = {k: v.clone() for k, v in model.net_.state_dict().items()}
    with pytest.raises(FileExistsError, match="table.csv"):
        model.fit(data, steps=4, progress=False, checkpoint_dir=other)
    after = model.net_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------- resume
def _state(model):
    return model.net_.state_dict(), model.ema_net_.state_dict()


def test_resume_is_bit_for_bit(tmp_path):
    """2N steps in one go == N steps, a checkpoint, and a new model resumed for N more."""
    n = 5
    data = make_trivial_dataset(10, size=16, seed=3)   # 10 images, batch 4: epochs mid-run
    straight = _tiny_model().fit(data, steps=2 * n, progress=False,
                                 checkpoint_dir=tmp_path / "a", checkpoint_every=1000)
    first = _tiny_model().fit(data, steps=n, progress=False, checkpoint_dir=tmp_path / "b",
                              checkpoint_every=1000)
    first_weights = {k: v.clone() for k, v in first.net_.state_dict().items()}
    resumed = _tiny_model().fit(data, steps=2 * n, progress=False, resume=True,
                                checkpoint_dir=tmp_path / "b", checkpoint_every=1000)
    assert resumed.n_steps_ == straight.n_steps_ == 2 * n
    assert resumed.history_ == straight.history_
    assert resumed.history_[:n] == first.history_
    for a, b in zip(_state(straight), _state(resumed)):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    # the second half changed the weights, so the comparison above is not vacuous
    assert any(not torch.equal(first_weights[k], v)
               for k, v in straight.net_.state_dict().items())
    # the full training state on disk (weights, EMA, Adam moments, random state, data order)
    ta = load_file(str(tmp_path / "a" / "checkpoint-000000010.safetensors"))
    tb = load_file(str(tmp_path / "b" / "checkpoint-000000010.safetensors"))
    assert ta.keys() == tb.keys()
    assert any(k.startswith("optim.") and k.endswith("exp_avg_sq") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    ra = json.loads((tmp_path / "a" / "checkpoint-000000010.json").read_text())
    rb = json.loads((tmp_path / "b" / "checkpoint-000000010.json").read_text())
    assert ra == rb


def test_resume_with_other_hyper_parameters_is_refused(tmp_path):
    data = make_trivial_dataset(4, size=16, seed=0)
    _tiny_model().fit(data, steps=2, progress=False, checkpoint_dir=tmp_path / "ck")
    with pytest.raises(ValueError, match="learning_rate"):
        _tiny_model(learning_rate=1e-3).fit(data, steps=4, progress=False, resume=True,
                                            checkpoint_dir=tmp_path / "ck")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _tiny_model().fit(data, steps=4, progress=False, resume=True)


def test_time_limit_stops_early_and_checkpoints_the_step_reached(tmp_path):
    trainer = _toy_trainer()
    trainer.run(50, checkpoint_dir=tmp_path / "ck", checkpoint_every=1000, progress=False,
                time_limit=0.0)
    assert trainer.step == 1  # the first step already exceeds a zero budget
    assert training.latest_checkpoint(tmp_path / "ck").name == "checkpoint-000000001.json"
    trainer.run(3, progress=False)  # no limit: runs to the total
    assert trainer.step == 3
