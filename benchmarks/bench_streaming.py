"""Benchmark: streamed training from disk against in-memory training.

Usage::

    nice python benchmarks/bench_streaming.py [--n 20000] [--n-memory 2000] [--steps 40]
        [--warmup 5] [--threads 1] [--workers 1] [--batch 16] [--workdir DIR] [--json out.json]

What it does:

1. writes ``n`` mock 64x64 grz cutouts to disk as a cutout store
   (`astro_sbgm.training_data.write_cutout_store`, from a generator: the
   writer holds one shard), the first ``n_memory`` of them as a second store
   and, for the ``*-fits`` modes, as a folder of FITS files
   (`astro_sbgm.io.write_image`).  The mocks are ``--unique`` galaxies of
   `make_mock_legacy_survey` (default 500), repeated with a different
   rotation or flip per repeat (the galaxies' content does not matter for
   reading; generating 20,000 GalSim mocks would take longer than the rest
   of the benchmark).
2. trains `GalaxyDiffusion`'s default network at width ``--dim`` (16 by
   default: about the 50 ms per image on one core that the streaming issue
   plans with, so reading is tested against a cheap step; the bundled model
   has width 32) with batch ``--batch`` for ``--steps`` steps, each run in a
   fresh process (so each peak memory is its own), in the order of
   ``--modes`` (by default ``memory,stream,stream-small,memory``: the
   reference is the mean of the two ``memory`` runs, so a drift of the
   machine's load cancels):

   * ``memory``: the store of ``n_memory`` with ``stream=False`` (the
     in-memory path: every image read, then held as fluxes and as the scaled
     tensor);
   * ``stream``: the store of ``n``, streamed (``--workers`` DataLoader
     workers);
   * ``stream-small``: the store of ``n_memory``, streamed (against
     ``stream``: the memory does not grow with the set);
   * ``memory-fits`` and ``stream-fits`` (not run by default): the FITS
     folder of ``n_memory``, in memory (which also holds the list of
     CCDData while reading: more than ``memory``) or streamed (one FITS read
     per image per use).

   For each: the peak resident memory of the training process
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its growth from just
   before ``fit`` (imports, network and optimizer excluded), the largest
   DataLoader worker's peak (``RUSAGE_CHILDREN``, the largest child), the
   seconds before the first step (reading the images in memory, or the flux
   scaler's subsample when streaming), and the training rate in images per
   second over the steps after ``--warmup`` (wall clock) and the training
   process's CPU milliseconds per image over the same steps, each with its
   ratio to the ``memory`` runs of the same invocation (above 1: streaming
   is as fast).  The training process uses ``--threads`` threads; the
   workers run beside it.
3. times single-image reads (store and FITS, 64x64 and 256x256, 100 images
   each, after one read of each file so the OS cache holds them, as it does
   after the first epoch) and prints what a paper-scale run (300,000 grz
   256x256 cutouts, the ``"paper"`` network) needs per GPU: disk, memory,
   read rate.  The network's FLOPs per image are counted with
   `torch.utils.flop_counter.FlopCounterMode` on one 256x256 image; a GPU's
   training rate is that divided into an assumed sustained rate (the printed
   assumption, not a measurement).

On a shared machine, run it under ``nice`` and read the ratios (measured in
one invocation, minutes apart) rather than the absolute rates.  This is a
script that prints figures, not a test.
"""

import argparse
import functools
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = ("memory", "stream", "stream-small", "memory-fits", "stream-fits")
PAPER_N, PAPER_SIZE, PAPER_BANDS = 300_000, 256, 3


def _maxrss_mib(who):
    return resource.getrusage(who).ru_maxrss / 1024.0   # Linux: KiB


def _mocks(n, unique, size, seed=1, arrays=False):
    """``n`` mock cutouts: ``unique`` galaxies, each repeat rotated or flipped anew.

    CCDData (with the WCS and cards of the mock), or with ``arrays`` float32
    ``(band, y, x)`` arrays in grz (faster to write into a store).
    """
    from astropy.nddata import CCDData
    base = _base(min(unique, n), size, seed)
    for i in range(n):
        ccd = base[i % len(base)]
        k = (i // len(base)) % 8
        data = np.rot90(ccd.data, k % 4, axes=(-2, -1))
        if k >= 4:
            data = data[..., ::-1]
        data = np.ascontiguousarray(data, dtype=np.float32)
        yield data if arrays else CCDData(data, unit=ccd.unit, wcs=ccd.wcs, meta=ccd.meta)


@functools.lru_cache(maxsize=4)
def _base(n, size, seed):
    from astro_sbgm.datasets import make_mock_legacy_survey
    return make_mock_legacy_survey(n=n, size=size, seed=seed)


def write_sets(workdir, n, n_memory, unique, fits=True):
    from astro_sbgm.io import write_image
    from astro_sbgm.training_data import write_cutout_store
    t0 = time.perf_counter()
    write_cutout_store(_mocks(n, unique, 64, arrays=True), workdir / "store", bands="grz",
                       overwrite=True)
    t_store = time.perf_counter() - t0
    write_cutout_store(_mocks(n_memory, unique, 64, arrays=True), workdir / "store_small",
                       bands="grz", overwrite=True)
    out = {"store_s": t_store, "store_bytes": _du(workdir / "store")}
    if fits:
        folder = workdir / "fits"
        folder.mkdir(exist_ok=True)
        for i, ccd in enumerate(_mocks(n_memory, unique, 64)):
            write_image(ccd, folder / f"cutout_{i:06d}.fits", overwrite=True)
        out["fits_bytes_per_image"] = _du(folder) / n_memory
    return out


def _du(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def child(args):
    """One training run in this process; prints a JSON record."""
    import torch
    torch.set_num_threads(args.threads)
    from astro_sbgm import GalaxyDiffusion
    from astro_sbgm.training import Trainer
    workdir = Path(args.workdir)
    X, kwargs = {"memory": (workdir / "store_small", {"stream": False}),
                 "memory-fits": (workdir / "fits", {"stream": False}),
                 "stream-fits": (workdir / "fits", {"stream": True}),
                 "stream-small": (workdir / "store_small", {"stream": True}),
                 "stream": (workdir / "store", {"stream": True})}[args.child]
    if args.child.startswith("stream"):
        kwargs["num_workers"] = args.workers
    stamps = []
    original = Trainer.train_step

    cpu = []

    def timed_step(self):
        out = original(self)
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())
        return out

    Trainer.train_step = timed_step
    model = GalaxyDiffusion(batch_size=args.batch, device="cpu", lr_warmup=10, dim=args.dim)
    model._validate()
    model._build()           # network and its weights are in the baseline
    torch.optim.Adam(model.net_.parameters())
    before = _maxrss_mib(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    model.fit(X, steps=args.steps, progress=False, **kwargs)
    w = args.warmup
    images = (args.steps - w) * args.batch
    rate = images / (stamps[-1] - stamps[w - 1])
    rec = {"mode": args.child, "n": model.n_train_, "peak_MiB": _maxrss_mib(resource.RUSAGE_SELF),
           "baseline_MiB": before, "worker_peak_MiB": _maxrss_mib(resource.RUSAGE_CHILDREN),
           "setup_s": stamps[0] - t0 - (stamps[1] - stamps[0]), "img_s": rate,
           "cpu_ms_img": 1000.0 * (cpu[-1] - cpu[w - 1]) / images}
    rec["growth_MiB"] = rec["peak_MiB"] - before
    print("RECORD " + json.dumps(rec), flush=True)


def read_rates(workdir, unique):
    """ms per image read (store, FITS) at 64 and 256 pixels, 100 images, cache warm."""
    from astro_sbgm.io import read_image, write_image
    from astro_sbgm.training_data import CutoutStore, write_cutout_store
    out = {}
    for size in (64, 256):
        store_path = workdir / f"read_store_{size}"
        folder = workdir / f"read_fits_{size}"
        folder.mkdir(exist_ok=True)
        imgs = list(_mocks(100, min(unique, 20), size, seed=7))
        write_cutout_store(imgs, store_path, overwrite=True)
        for i, ccd in enumerate(imgs):
            write_image(ccd, folder / f"c{i:03d}.fits", overwrite=True)
        store = CutoutStore(store_path)
        files = sorted(folder.iterdir())
        for name, fn in (("store", lambda i: store[i]), ("fits", lambda i: read_image(files[i]))):
            for i in range(100):        # warm the OS cache, as after a first epoch
                fn(i)
            t0 = time.perf_counter()
            for i in range(100):
                fn(i)
            out[f"{name}_{size}_ms"] = (time.perf_counter() - t0) * 10.0
        shutil.rmtree(store_path)
        shutil.rmtree(folder)
    return out


def paper_flops():
    """Forward GFLOP of the paper's network on one 256x256 grz image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from astro_sbgm.estimator import PRESETS
    from astro_sbgm.nn import UNet
    p = PRESETS["paper"]
    net = UNet(in_channels=3, dim=p["dim"], dim_mults=p["dim_mults"],
               attention_levels=p["attention_levels"])
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.zeros(1, 3, PAPER_SIZE, PAPER_SIZE), torch.zeros(1))
    return counter.get_total_flops() / 1e9, p["batch_size"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--n-memory", type=int, default=2000)
    parser.add_argument("--unique", type=int, default=500)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dim", type=int, default=16,
                        help="U-Net width (16: about the issue's 50 ms per image on one core)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--modes", default="memory,stream,stream-small,memory",
                        help="runs, in order (memory twice: before and after the others, "
                        "the reference is their mean)")
    parser.add_argument("--workdir", default=None, help="kept when given (else a temporary "
                        "folder, removed)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--assumed-tflops", default="30,100",
                        help="sustained training TFLOP/s per GPU for the paper-scale estimate")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if not 1 <= args.warmup < args.steps:
        parser.error("need 1 <= --warmup < --steps")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_streaming_"))
    workdir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    try:
        modes = args.modes.split(",")
        unknown = sorted(set(modes) - set(MODES))
        if unknown:
            parser.error(f"unknown mode(s) {unknown}; known: {MODES}")
        result = {"args": vars(args),
                  "sets": write_sets(workdir, args.n, args.n_memory, args.unique,
                                     fits=any(m.endswith("fits") for m in modes))}
        print(f"wrote {args.n} cutouts as a store in {result['sets']['store_s']:.1f} s "
              f"({result['sets']['store_bytes'] / 2**20:.0f} MiB), and {args.n_memory} as a "
              "store (and as FITS files for the *-fits modes)", flush=True)
        runs = []
        for mode in modes:
            cmd = [sys.executable, __file__, "--child", mode, "--workdir", str(workdir),
                   "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--batch", str(args.batch), "--threads", str(args.threads),
                   "--workers", str(args.workers), "--dim", str(args.dim)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RECORD ")]
            if done.returncode or not lines:
                sys.exit(f"the {mode} run failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(lines[-1][7:]))
            print(f"  {mode:<13s} done", flush=True)
        result["runs"] = runs
        result["reads"] = read_rates(workdir, args.unique)
        gflop, paper_batch = paper_flops()
        result["paper_fwd_GFLOP"] = gflop
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    result["seconds"] = time.perf_counter() - t_all
    report(result, args, paper_batch)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def report(result, args, paper_batch):
    runs = result["runs"]
    mem = [r for r in runs if r["mode"] == "memory"]
    ref = None
    if mem:   # the in-memory reference: the mean of its runs (before and after the others)
        ref = {"img_s": float(np.mean([r["img_s"] for r in mem])),
               "cpu_ms_img": float(np.mean([r["cpu_ms_img"] for r in mem]))}
    print(f"\nTraining runs: {args.steps} steps of batch {args.batch}, {args.threads} thread(s) "
          f"for training, {args.workers} DataLoader worker(s) when streaming; rate over the "
          f"steps after {args.warmup}")
    print(f"{'run':<13s} {'images':>7s} {'peak MiB':>9s} {'growth':>7s} {'worker':>7s} "
          f"{'setup s':>8s} {'img/s':>6s} {'ratio':>6s} {'CPU ms/img':>10s} {'ratio':>6s}")
    for r in runs:
        mode = r["mode"]
        ratio = f"{r['img_s'] / ref['img_s']:.2f}" if ref else "--"
        cratio = f"{ref['cpu_ms_img'] / r['cpu_ms_img']:.2f}" if ref else "--"
        print(f"{mode:<13s} {r['n']:>7d} {r['peak_MiB']:>9.0f} {r['growth_MiB']:>7.0f} "
              f"{r['worker_peak_MiB']:>7.0f} {r['setup_s']:>8.1f} {r['img_s']:>6.2f} "
              f"{ratio:>6s} {r['cpu_ms_img']:>10.1f} {cratio:>6s}")
    reads = result["reads"]
    print("\nOne image read (ms, OS cache warm, 100 images): " + ", ".join(
        f"{k[:-3].replace('_', ' ')}x{k.split('_')[1]}: {v:.2f}" for k, v in reads.items()))
    gflop = result["paper_fwd_GFLOP"]
    per_image = PAPER_BANDS * PAPER_SIZE ** 2 * 4
    print(f"\nPaper scale: {PAPER_N:,} grz {PAPER_SIZE}x{PAPER_SIZE} cutouts, the 'paper' "
          f"network ({gflop:.0f} GFLOP forward per image, about {3 * gflop:.0f} to train)")
    print(f"  disk: {PAPER_N * per_image / 1e9:.0f} GB as a float32 store "
          f"({per_image / 2**20:.2f} MiB per image); in memory the in-memory path would hold "
          f"{2 * PAPER_N * per_image / 1e9:.0f} GB per process (fluxes and scaled tensor)")
    stream = next((r for r in runs if r["mode"] == "stream"), None)
    if stream:
        prefetch = 2 * args.workers * paper_batch * per_image / 2**20
        print(f"  memory per process when streaming: the flat {stream['growth_MiB']:.0f} MiB "
              f"measured here above the network, plus read-ahead of "
              f"{args.workers} worker(s) x 2 batches x {paper_batch} images = {prefetch:.0f} "
              "MiB (less per rank under torchrun: each rank reads its slice)")
    ms = reads.get("store_256_ms")
    for tf in (float(v) for v in args.assumed_tflops.split(",")):
        rate = tf * 1e12 / (3 * gflop * 1e9)
        need = rate * per_image / 1e6
        workers = rate * ms / 1000.0 if ms else float("nan")
        print(f"  at an assumed {tf:.0f} TFLOP/s sustained per GPU: {rate:.0f} img/s per GPU, "
              f"{need:.0f} MB/s of reads per GPU, {workers:.2f} core(s) of store reads per GPU "
              f"(at the {ms:.2f} ms per 256x256 image measured here), an epoch every "
              f"{PAPER_N / rate / 60:.0f} GPU-minutes")
    print(f"\n(total {result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
