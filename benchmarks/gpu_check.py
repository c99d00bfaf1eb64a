"""Device check: training steps and a sampling run on a GPU, fp32 against bf16.

Usage (one GPU; about 2 to 4 minutes on a recent data-centre GPU)::

    python benchmarks/gpu_check.py [--size 64] [--dim 64] [--batch 56] [--steps 30]
                                   [--n 512] [--sample-steps 20] [--compile]

or on several GPUs of one node, where training is data-parallel and the
samples are split over the processes::

    torchrun --standalone --nproc_per_node=4 benchmarks/gpu_check.py

For each precision (``fp32`` with TF32 off, ``fp32`` with TF32 allowed,
``bf16`` autocast) it times ``--steps`` optimizer steps of
`astro_sbgm.training.Trainer` after ``--warmup`` untimed ones and a draw of
``--n`` galaxies with the DPM-Solver++(2M) sampler in ``--sample-steps``
steps, and prints training images per second (global batch x steps / time),
sampled galaxies per second, the peak GPU memory and checks (finite losses,
bf16 loss within a few per cent of fp32, finite samples in [-1, 1], bf16
samples close to fp32 ones).  The last line is one JSON record with the
date, the GPU, the versions and every figure, to paste into
``docs/distributed.rst``.  Exits with status 1 if a check fails, 2 without
CUDA.
"""

import argparse
import datetime
import json
import sys
import time

import numpy as np
import torch

__all__ = []


def _sync():
    torch.cuda.synchronize()


def _train_rate(est, data, args, precision, allow_tf32, device):
    from astro_sbgm.diffusion import Denoiser
    from astro_sbgm.nn import UNet
    from astro_sbgm.training import Trainer, tf32

    torch.manual_seed(0)
    net = UNet.from_config(est.net_.to_config()).to(device)
    net.load_state_dict(est.net_.state_dict())
    trainer = Trainer(Denoiser(net, est.schedule_, est.objective), data,
                      batch_size=args.batch, lr=1e-4, seed=0, device=device,
                      precision=precision, compile=args.compile, lr_warmup=1)
    torch.cuda.reset_peak_memory_stats(device)
    with tf32(allow_tf32):
        losses = [trainer.train_step() for _ in range(args.warmup)]
        _sync()
        t0 = time.perf_counter()
        losses += [trainer.train_step() for _ in range(args.steps)]
        _sync()
        dt = time.perf_counter() - t0
    return {"train_img_per_s": args.steps * args.batch / dt,
            "train_s_per_step": dt / args.steps,
            "train_peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30,
            "first_losses": losses[:3], "losses_finite": bool(np.all(np.isfinite(losses)))}


def _sample_rate(est, args, precision, allow_tf32):
    from astro_sbgm.training import tf32

    with tf32(allow_tf32):
        est.sample_scaled(min(args.sample_batch, args.n), steps=args.sample_steps, seed=1,
                          batch_size=args.sample_batch, progress=False, precision=precision,
                          shard=True)   # warm-up (kernel selection)
        _sync()
        t0 = time.perf_counter()
        x, info = est.sample_scaled(args.n, steps=args.sample_steps, seed=0,
                                    batch_size=args.sample_batch, progress=False,
                                    precision=precision, shard=True)
        _sync()
        dt = time.perf_counter() - t0
    return x, {"sample_img_per_s": args.n / dt, "sample_s": dt, "nfe": info["nfe"]}


def main(argv=None):
    """Run the check; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=56, help="global training batch")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed training steps")
    p.add_argument("--n", type=int, default=512, help="galaxies to sample")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--sample-batch", type=int, default=256)
    p.add_argument("--compile", action="store_true", help="also torch.compile the network")
    args = p.parse_args(argv)

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing measured", file=sys.stderr)
        return 2
    from astro_sbgm import GalaxyDiffusion, distributed
    from astro_sbgm.datasets import make_trivial_dataset

    device = distributed.local_device("cuda")
    distributed.init_distributed(device)
    main_rank = distributed.is_main_process()
    say = print if main_rank else (lambda *a, **k: None)
    world = distributed.get_world_size()

    est = GalaxyDiffusion(image_size=args.size, dim=args.dim, batch_size=args.batch,
                          device=str(device), seed=0)
    images = make_trivial_dataset(max(4 * args.batch, 64), size=args.size, seed=2)
    t0 = time.perf_counter()
    est.fit(images, steps=2, progress=False)   # builds everything; 2 real steps
    say(f"setup + 2 steps: {time.perf_counter() - t0:.1f} s")
    data = torch.from_numpy(est.scaler_.transform(est.prepare(images)))
    n_params = sum(p.numel() for p in est.net_.parameters())

    record = {"date": datetime.date.today().isoformat(),
              "gpu": torch.cuda.get_device_name(device), "world_size": world,
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "size": args.size, "dim": args.dim, "params_M": n_params / 1e6,
              "batch": args.batch, "sample_steps": args.sample_steps, "n": args.n,
              "compile": args.compile, "runs": {}}
    samples, ok = {}, True
    for name, precision, allow_tf32 in (("fp32", "fp32", False), ("fp32+tf32", "fp32", True),
                                        ("bf16", "bf16", True)):
        train = _train_rate(est, data, args, precision, allow_tf32, device)
        x, samp = _sample_rate(est, args, precision, allow_tf32)
        samples[name] = x
        finite = bool(torch.isfinite(x).all()) and float(x.abs().max()) <= 1.0 + 1e-6
        record["runs"][name] = {**train, **samp, "samples_finite_in_range": finite}
        ok &= train["losses_finite"] and finite
        say(f"{name:10s} train {train['train_img_per_s']:9.1f} img/s "
            f"({train['train_s_per_step'] * 1e3:7.1f} ms/step, "
            f"peak {train['train_peak_mem_gib']:.2f} GiB)   sample "
            f"{samp['sample_img_per_s']:8.1f} img/s ({samp['nfe']} NFE)")
    # bf16 only changes the network's rounding: the first loss (same weights, same batch)
    # and the samples (same noise) must stay close to fp32
    l32 = record["runs"]["fp32"]["first_losses"][0]
    l16 = record["runs"]["bf16"]["first_losses"][0]
    record["bf16_first_loss_rel_diff"] = abs(l16 - l32) / abs(l32)
    record["bf16_sample_max_abs_diff"] = float((samples["bf16"] - samples["fp32"]).abs().max())
    record["bf16_sample_mean_abs_diff"] = float((samples["bf16"] - samples["fp32"]).abs().mean())
    ok &= record["bf16_first_loss_rel_diff"] < 0.05
    ok &= record["bf16_sample_mean_abs_diff"] < 0.05
    record["checks_passed"] = bool(ok)
    say(f"bf16 vs fp32: first loss rel. diff {record['bf16_first_loss_rel_diff']:.4f}, "
        f"sample mean |diff| {record['bf16_sample_mean_abs_diff']:.4f} "
        f"(max {record['bf16_sample_max_abs_diff']:.3f})")
    say(json.dumps(record))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
