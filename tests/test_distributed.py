"""Tests of data-parallel training and sharded sampling (2 gloo processes on loopback).

One group of two processes is started once for the module (``torch.multiprocessing``
with the environment ``torchrun`` would set: RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR=127.0.0.1, a free port, gloo bound to the loopback interface); it
runs every distributed scenario and writes its results to files that the
tests below compare with single-process runs.
"""

import json
import os
import socket
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table
from safetensors.torch import load_file, save_file

from astro_sbgm import GalaxyDiffusion, cli, distributed
from astro_sbgm.datasets import make_trivial_dataset
from astro_sbgm.diffusion import Denoiser, DiffusionSchedule, draw_training_noise, training_loss
from astro_sbgm.nn import UNet
from astro_sbgm.preprocessing import FluxScaler
from astro_sbgm.training_data import write_cutout_store
from astro_sbgm.training import AstroSBGMTrainingWarning, Trainer, autocast_forward

WORLD = 2
TIMEOUT_S = 120
TOL = 1e-5
#: Adam divides each gradient component by its own running magnitude, so a component
#: whose gradient is near zero turns float rounding (the two processes add up the
#: gradient in another order) into a step of up to the learning rate.  Weights after a
#: few steps therefore agree to a small fraction of the distance they moved, not to
#: TOL per element (measured: 3e-4 of it; a run on other batches differs by order 1).
#: The gradients themselves are compared per element at TOL.
WEIGHT_REL_TOL = 1e-3


def _tiny_model(**kwargs):
    # width 16, not 8: with 8 channels and 8 GroupNorm groups a convolution bias in
    # front of a GroupNorm has an exactly zero gradient, which Adam turns into
    # rounding-noise steps of +-lr that no tolerance can compare
    params = dict(image_size=16, bands="grz", dim=16, dim_mults=(1, 2),
                  attention_levels=(False, False), batch_size=4, timesteps=100, device="cpu",
                  lr_warmup=1, learning_rate=1e-3)
    params.update(kwargs)
    return GalaxyDiffusion(**params)


def _data():
    return make_trivial_dataset(10, size=16, seed=3)   # 10 images, batch 4: epochs mid-run


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save_state(model, path):
    tensors = {f"model.{k}": v for k, v in model.net_.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in model.ema_net_.state_dict().items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps({"history": model.history_,
                                                     "steps": model.n_steps_}))


def _grad_trainer(data=None):
    torch.manual_seed(0)
    net = UNet(in_channels=3, dim=16, dim_mults=(1, 2), attention_levels=(False, False))
    den = Denoiser(net, DiffusionSchedule.from_name("cosine", 100), "v")
    if data is None:
        data = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    return Trainer(den, data, batch_size=4, seed=1, lr_warmup=1, grad_clip=1.0)


_STORE_SCALER = FluxScaler(upper=5.0, lower=-0.05)


def _first_step_gradients():
    tr = _grad_trainer()
    loss = tr.train_step()
    grads = {k: p.grad.detach().clone() for k, p in tr.net.named_parameters()}
    return grads, loss, tr.distributed


def _streamed_slices(store, steps=6):
    """This rank's part of ``steps`` global batches, read by a streaming trainer."""
    from astro_sbgm.training_data import StreamingData, open_training_set
    source, _ = open_training_set(store, list("grz"), 16, 0.262)
    data = StreamingData(source.scaled(_STORE_SCALER), (len(source), 3, 16, 16), num_workers=1)
    tr = _grad_trainer(data)
    out = []
    for _ in range(steps):
        idx = tr._next_indices()
        out.append(tr._gather(idx[tr._local_slice()] if tr.distributed else idx))
    data.close()
    return torch.cat(out)


def _worker(rank, port, tmp):
    """One of the two processes: the environment torchrun would give it, then every scenario."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "LOCAL_WORLD_SIZE": str(WORLD), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"})
    torch.set_num_threads(1)
    from pathlib import Path
    tmp = Path(tmp)
    results = {}
    try:
        # what fit() does by itself; a lost rank fails a collective after 60 s, not 30 min
        assert distributed.init_distributed("cpu", timeout=60) is True
        data = _data()
        # 0. the gradient of one global batch, averaged over the ranks
        grads, loss, used_ddp = _first_step_gradients()
        save_file(grads, str(tmp / f"grads_rank{rank}.safetensors"))
        results["first_loss"], results["used_ddp"] = loss, used_ddp
        # 1. training from scratch, checkpoints at steps 2 and 4
        model = _tiny_model().fit(data, steps=4, checkpoint_dir=tmp / "ddp_ck",
                                  checkpoint_every=2, progress=False)
        results["rank"] = distributed.get_rank()
        results["world"] = distributed.get_world_size()
        _save_state(model, tmp / f"train_rank{rank}.safetensors")
        # 2. resume a one-process checkpoint (step 2) on two processes, to step 4
        resumed = _tiny_model().fit(data, steps=4, checkpoint_dir=tmp / "w1_ck", resume=True,
                                    progress=False)
        _save_state(resumed, tmp / f"resume_rank{rank}.safetensors")
        # 3. sharded sampling from a saved model
        saved = GalaxyDiffusion.load(tmp / "model", device="cpu")
        x, info = saved.sample_scaled(5, steps=3, seed=3, batch_size=2, progress=False,
                                      shard=True)
        save_file({"x": x.contiguous()}, str(tmp / f"shard_rank{rank}.safetensors"))
        results["shard_start"] = info["start"]
        ccds = saved.sample(5, steps=3, seed=3, batch_size=2, progress=False, shard=True)
        results["shard_ids"] = [int(c.meta["SAMPLEID"]) for c in ccds]
        # 4. a global batch the world size does not divide
        try:
            _tiny_model(batch_size=3).fit(data, steps=1, progress=False)
            results["indivisible"] = None
        except ValueError as err:
            results["indivisible"] = str(err)
        # 6. streamed from a cutout store: each rank reads its slice of every global batch
        # DataLoader workers start as under torchrun (fork), not as these test processes (spawn)
        torch.multiprocessing.set_start_method("fork", force=True)
        streamed = _tiny_model().fit(tmp / "store", steps=4, progress=False, num_workers=1)
        _save_state(streamed, tmp / f"stream_rank{rank}.safetensors")
        save_file({"x": _streamed_slices(tmp / "store")},
                  str(tmp / f"stream_slices_rank{rank}.safetensors"))
        # 5. an error of rank 0 (a foreign checkpoint folder) reaches every rank
        try:
            _tiny_model().fit(data, steps=1, progress=False, checkpoint_dir=tmp / "foreign")
            results["foreign"] = None
        except FileExistsError as err:
            results["foreign"] = str(err)
    except Exception:
        results["error"] = traceback.format_exc()
    (tmp / f"results_rank{rank}.json").write_text(json.dumps(results))
    distributed.cleanup()


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """Run the two-process scenarios once; returns (folder, per-rank results, seconds)."""
    tmp = tmp_path_factory.mktemp("ddp")
    first = _tiny_model().fit(_data(), steps=2, checkpoint_dir=tmp / "w1_ck",
                              checkpoint_every=2, progress=False)
    first.save(tmp / "model")
    (tmp / "foreign").mkdir()
    write_cutout_store(_data(), tmp / "store", shard_size=3)
    (tmp / "foreign" / "notes.txt").write_text("mine")
    t0 = time.perf_counter()
    ctx = torch.multiprocessing.start_processes(_worker, args=(_free_port(), str(tmp)),
                                                nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the two-process run did not finish within {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    seconds = time.perf_counter() - t0
    results = [json.loads((tmp / f"results_rank{r}.json").read_text()) for r in range(WORLD)]
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    return tmp, results, seconds


def _load_state(path):
    return load_file(str(path)), json.loads(path.with_suffix(".json").read_text())


def _state_of(model):
    out = {f"model.{k}": v for k, v in model.net_.state_dict().items()}
    out.update({f"ema.{k}": v for k, v in model.ema_net_.state_dict().items()})
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The one-process run of the same 4 steps."""
    tmp = tmp_path_factory.mktemp("ref")
    return _tiny_model().fit(_data(), steps=4, checkpoint_dir=tmp / "ck", checkpoint_every=2,
                             progress=False)


def _initial_state(seed=0):
    init = _tiny_model(seed=seed)
    init._build()
    return {f"model.{k}": v for k, v in init.net_.state_dict().items()}


def _relative_distance(a, b, start, start_a=None):
    """How far training moved ``a`` from how it moved ``b``, relative to the latter.

    ``||(a - start_a) - (b - start)|| / ||b - start||`` over the raw weights.
    """
    start_a = start if start_a is None else start_a
    num = sum(float(((a[k] - start_a[k] - b[k] + start[k]) ** 2).sum()) for k in start)
    den = sum(float(((b[k] - start[k]) ** 2).sum()) for k in start)
    return (num / den) ** 0.5


# --------------------------------------------------------------------------- training
def test_gradients_of_two_ranks_equal_one_process(ddp):
    tmp, results, _ = ddp
    assert all(r["used_ddp"] for r in results)
    g0 = load_file(str(tmp / "grads_rank0.safetensors"))
    g1 = load_file(str(tmp / "grads_rank1.safetensors"))
    ref, ref_loss, used = _first_step_gradients()
    assert not used
    assert g0.keys() == g1.keys() == ref.keys()
    for k in g0:
        assert torch.equal(g0[k], g1[k]), k          # DDP: the same averaged gradient
        torch.testing.assert_close(g0[k], ref[k], rtol=0, atol=TOL, msg=k)
    assert max(float(g.abs().max()) for g in ref.values()) > 100 * TOL
    assert results[0]["first_loss"] == pytest.approx(ref_loss, rel=1e-6)


def test_two_ranks_end_with_the_weights_of_one_process(ddp, reference):
    tmp, results, seconds = ddp
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["world"] == 2 for r in results)
    s0, h0 = _load_state(tmp / "train_rank0.safetensors")
    s1, h1 = _load_state(tmp / "train_rank1.safetensors")
    # both ranks hold exactly the same weights and EMA
    for k in s0:
        assert torch.equal(s0[k], s1[k]), k
    assert h0 == h1 and h0["steps"] == 4
    # ... equal to a one-process run on the same global batches: the same losses step
    # after step, and the same weights (see WEIGHT_REL_TOL)
    np.testing.assert_allclose(h0["history"], reference.history_, rtol=TOL)
    ref, init = _state_of(reference), _initial_state()
    assert _relative_distance(s0, ref, init) < WEIGHT_REL_TOL
    # a run on other batches is far away: the comparison can fail
    other = _tiny_model(seed=1).fit(_data(), steps=4, progress=False)
    assert _relative_distance(_state_of(other), ref, init, _initial_state(1)) > 0.3
    # the checkpoints were written once, by rank 0, and record the two processes
    names = sorted(os.listdir(tmp / "ddp_ck"))
    assert names == ["astro_sbgm-checkpoints.json", "checkpoint-000000002.json",
                     "checkpoint-000000002.safetensors", "checkpoint-000000004.json",
                     "checkpoint-000000004.safetensors"]
    record = json.loads((tmp / "ddp_ck" / "checkpoint-000000004.json").read_text())
    assert record["world_size"] == 2 and record["batch_size"] == 4
    print(f"two-process scenarios took {seconds:.1f} s")


def test_streamed_training_on_two_ranks_is_in_memory_training_bit_for_bit(ddp):
    tmp, _, _ = ddp
    for rank in range(WORLD):
        memory, hm = _load_state(tmp / f"train_rank{rank}.safetensors")
        stream, hs = _load_state(tmp / f"stream_rank{rank}.safetensors")
        assert memory.keys() == stream.keys()
        for k in memory:
            assert torch.equal(memory[k], stream[k]), k
        assert hm == hs
    # each rank read its own slice; together they are the one-process batches
    slices = [load_file(str(tmp / f"stream_slices_rank{r}.safetensors"))["x"]
              for r in range(WORLD)]
    assert [len(s) for s in slices] == [12, 12]
    single = _streamed_slices(tmp / "store")
    joined = torch.cat([torch.cat([s[2 * k:2 * k + 2] for s in slices]) for k in range(6)])
    assert torch.equal(joined, single)
    assert not torch.equal(slices[0], slices[1])


def test_resume_with_another_number_of_processes(ddp, reference, tmp_path):
    tmp, _, _ = ddp
    ref = _state_of(reference)
    # one process -> two processes
    s0, h0 = _load_state(tmp / "resume_rank0.safetensors")
    s1, _ = _load_state(tmp / "resume_rank1.safetensors")
    for k in s0:
        assert torch.equal(s0[k], s1[k]), k
    init = _initial_state()
    assert _relative_distance(s0, ref, init) < WEIGHT_REL_TOL
    np.testing.assert_allclose(h0["history"], reference.history_, rtol=TOL)
    # two processes -> one process: resume the two-process checkpoint of step 2
    ck = tmp_path / "ck"
    ck.mkdir()
    for name in ("astro_sbgm-checkpoints.json", "checkpoint-000000002.json",
                 "checkpoint-000000002.safetensors"):
        (ck / name).write_bytes((tmp / "ddp_ck" / name).read_bytes())
    resumed = _tiny_model().fit(_data(), steps=4, checkpoint_dir=ck, resume=True,
                                progress=False)
    assert resumed.n_steps_ == 4
    assert _relative_distance(_state_of(resumed), ref, init) < WEIGHT_REL_TOL
    np.testing.assert_allclose(resumed.history_, reference.history_, rtol=TOL)


def test_a_world_size_that_does_not_divide_the_batch_is_refused(ddp):
    _, results, _ = ddp
    for res in results:
        assert res["indivisible"] is not None
        assert "batch_size=3" in res["indivisible"]
        assert "not divisible by the number of processes, 2" in res["indivisible"]
    with pytest.raises(ValueError, match=r"batch_size=6 .* processes, 4.*e\.g\. 4 or 8"):
        distributed.check_batch_divisible(6, 4)
    assert distributed.check_batch_divisible(8, 4) == 2
    assert distributed.check_batch_divisible(5) == 5   # one process


def test_an_error_on_rank_0_is_raised_on_every_rank(ddp):
    tmp, results, _ = ddp
    for res in results:
        assert res["foreign"] is not None and "notes.txt" in res["foreign"]
    assert os.listdir(tmp / "foreign") == ["notes.txt"]


# --------------------------------------------------------------------------- sampling
def test_union_of_sample_shards_is_the_one_process_draw(ddp):
    tmp, results, _ = ddp
    shards = [load_file(str(tmp / f"shard_rank{r}.safetensors"))["x"] for r in range(WORLD)]
    assert [len(s) for s in shards] == [2, 3]
    assert [r["shard_start"] for r in results] == [0, 2]
    assert [r["shard_ids"] for r in results] == [[0, 1], [2, 3, 4]]
    model = GalaxyDiffusion.load(tmp / "model", device="cpu")
    single, _ = model.sample_scaled(5, steps=3, seed=3, batch_size=5, progress=False)
    torch.testing.assert_close(torch.cat(shards), single, rtol=0, atol=TOL)
    # the galaxies differ from one another (the comparison is not vacuous)
    assert float((single[0] - single[1]).abs().max()) > 0.1


def test_sample_command_under_torchrun_splits_the_indices_and_resumes(ddp, monkeypatch):
    tmp, _, _ = ddp
    out = tmp / "cli_out"
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "astro_sbgm.cli",
           "sample", "--model", str(tmp / "model"), "-o", str(out), "-n", "5", "--steps", "3",
           "--batch-size", "2", "--device", "cpu"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote 5 galaxies") == 1          # rank 0 reports
    assert "2 process(es)" in run.stdout
    names = [f"sample_{i:06d}.fits" for i in range(5)]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        names + ["index.ecsv", "astro_sbgm-samples.json"])
    index = Table.read(out / "index.ecsv")
    assert list(index["index"]) == [0, 1, 2, 3, 4]
    assert list(index["file"]) == names
    assert index.meta["n_missing"] == 0 and index.meta["seed"] == 0
    model = GalaxyDiffusion.load(tmp / "model", device="cpu")
    expected = model.sample(5, steps=3, seed=0, progress=False)
    data = []
    for i, name in enumerate(names):
        with fits.open(out / name) as hdul:
            assert hdul[0].header["SAMPLEID"] == i
            data.append(hdul[0].data.copy())
        np.testing.assert_allclose(data[i], expected[i].data, rtol=1e-4, atol=1e-5)
    # an interrupted run: two galaxies are missing; a rerun (one process) draws only those
    (out / names[1]).unlink()
    (out / names[3]).unlink()
    (out / "index.ecsv").unlink()
    kept = {n: os.stat(out / n).st_mtime_ns for n in names if (out / n).exists()}
    time.sleep(0.01)
    argv = ["sample", "--model", str(tmp / "model"), "-o", str(out), "--n", "5", "--steps",
            "3", "--batch-size", "2", "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    for n, mtime in kept.items():
        assert os.stat(out / n).st_mtime_ns == mtime, n
    for i in (1, 3):
        np.testing.assert_allclose(fits.getdata(out / names[i]), data[i], rtol=1e-4, atol=1e-5)
    assert len(Table.read(out / "index.ecsv")) == 5
    # other settings in the same folder are refused, naming what differs
    err = []
    monkeypatch.setattr("sys.stderr", type("E", (), {"write": err.append, "flush": id})())
    assert cli.main(argv + ["--sample-seed", "1"]) == 2
    assert "differing: ['seed']" in "".join(err)


# --------------------------------------------------------------------------- in-process units
def test_shard_range_partitions_the_indices():
    for n in range(8):
        for world in range(1, 5):
            blocks = [distributed.shard_range(n, r, world) for r in range(world)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(len(b) for b in blocks) - min(len(b) for b in blocks) <= 1
    assert distributed.shard_indices("abcde", 1, 2) == ["c", "d", "e"]
    with pytest.raises(ValueError, match="rank 2 is not in"):
        distributed.shard_range(4, 2, 2)


def test_not_launched_by_torchrun_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_distributed("cpu") is False
    assert not distributed.is_distributed()
    assert distributed.get_world_size() == 1 and distributed.is_main_process()
    distributed.barrier()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.run_on_main(lambda x: x + 1, 1) == 2
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="RANK, MASTER_ADDR, MASTER_PORT is not set.*torchrun"):
        distributed.init_distributed("cpu")
    assert not distributed.is_distributed()


def test_local_device_takes_the_local_rank_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.local_device("cuda") == torch.device("cuda", 3)
    assert distributed.local_device("cuda:1") == torch.device("cuda", 1)
    assert distributed.local_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.local_device("cuda") == torch.device("cuda")


@pytest.mark.parametrize("objective,gamma", [("eps", None), ("v", None), ("v", 5.0),
                                             ("edm", None)])
def test_sliced_loss_matches_training_loss(objective, gamma):
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    den = Denoiser(lambda x, t: net(x), DiffusionSchedule.from_name("cosine", 50), objective)
    x0 = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    full = training_loss(den, x0, torch.Generator().manual_seed(7), min_snr_gamma=gamma)
    noise, t = draw_training_noise(den, x0.shape, torch.Generator().manual_seed(7))
    mine = training_loss(den, x0, min_snr_gamma=gamma, noise=noise, t=t)
    assert torch.equal(mine, full)
    # the mean of the per-rank losses of equal slices is the loss of the global batch
    halves = [training_loss(den, x0[s], min_snr_gamma=gamma, noise=noise[s], t=t[s])
              for s in (slice(0, 3), slice(3, 6))]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, full, rtol=1e-6, atol=0)
    assert not torch.equal(halves[0], halves[1])


def test_autocast_forward_runs_the_network_in_bfloat16():
    seen = {}

    def net(x, t):
        seen["enabled"] = torch.is_autocast_enabled("cpu")
        return torch.nn.functional.linear(x, torch.eye(x.shape[-1]))

    x = torch.randn(2, 3, 4, 4)
    out = autocast_forward(net, "cpu", torch.bfloat16)(x, None)
    assert seen["enabled"] and out.dtype == torch.float32
    torch.testing.assert_close(out, x, rtol=1e-2, atol=1e-2)
    assert not torch.equal(out, x)   # rounded to bfloat16 inside


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x)


def test_trainer_gpu_options_are_off_on_the_cpu():
    den = Denoiser(_Toy(), DiffusionSchedule.from_name("cosine", 50), "eps")
    data = torch.zeros(4, 3, 8, 8)
    with pytest.warns(AstroSBGMTrainingWarning, match="CUDA devices only"):
        tr = Trainer(den, data, batch_size=4, precision="bf16")
    assert tr.precision == "fp32" and not tr.pin_memory and not tr.distributed
    assert tr.train_denoiser is den      # nothing wrapped: a plain run pays nothing
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        Trainer(den, data, precision="fp16")
    with pytest.raises(ValueError, match="distributed=True but no process group"):
        Trainer(den, data, distributed=True)


def test_contiguous_runs_of_indices():
    runs = list(cli._contiguous_runs([0, 1, 2, 3, 4, 7, 8, 10], 3))
    assert runs == [(0, 3), (3, 2), (7, 2), (10, 1)]
    assert list(cli._contiguous_runs([], 4)) == []
