"""Benchmark: training and sampling throughput of the U-Net configurations.

Usage::

    nice python benchmarks/bench_throughput.py [--device cpu] [--threads 2] [--iters 5]
        [--warmup 1] [--configs default,attn-low,paper] [--batch 16] [--size 64]
        [--compile] [--clock wall|cpu] [--output table.ecsv]

For each configuration, at ``size`` x ``size`` pixels, batch ``batch``, grz, the
table has the columns:

* ``params_M``: parameters of the U-Net, in millions;
* ``GFLOP_img``: forward FLOPs per image (`torch.utils.flop_counter.FlopCounterMode`,
  which counts convolutions and matrix products, 2 FLOPs per multiply-add);
* ``train_img_s``: images per second of a training step (the package's
  `~astro_sbgm.diffusion.Denoiser` and `~astro_sbgm.diffusion.training_loss`,
  backward, `torch.optim.Adam` step), best of ``iters`` steps
  (``train_img_s_med``: the median);
* ``eval_img_s``: image-evaluations of the network per second under
  `torch.inference_mode` (one call on a batch of 16 counts 16), best of
  ``iters`` calls (``eval_img_s_med``: the median); ``sampler_pct`` is the
  extra time per evaluation that a ``"dpmpp-2m"`` run of
  `~astro_sbgm.diffusion.reverse_process` spends over the bare network call;
* ``train_util`` and ``eval_util``: achieved FLOP/s divided by the ceiling
  measured in the same process (``conv_train_GF_s``, ``conv_fwd_GF_s``): a
  3x3 convolution (``batch`` x 64 x 64 x 64 -> 64 channels, padding 1),
  forward under `torch.inference_mode` for sampling and forward + backward
  (input and weight gradients) for training, its FLOPs counted by the same
  counter;
* ``peak_MiB``: peak memory of the training steps: on CPU the growth of the
  resident set's high-water mark (``resource.getrusage`` ``ru_maxrss``) from
  just before the first step, in a fresh subprocess per configuration (so one
  configuration's peak cannot hide another's); ``RSS_MiB`` is the process's
  whole high-water mark (imports and weights included); on CUDA both come
  from ``torch.cuda.max_memory_allocated``;
* with ``--compile``: ``compile_s`` (wall seconds to compile the inference
  and the training graphs), ``train_img_s_comp`` and ``eval_img_s_comp``.

With ``--clock cpu`` every rate is per CPU-second instead of per second.

Configurations: ``default`` is `astro_sbgm.GalaxyDiffusion`'s default
network (read from its defaults), ``attn-low`` the same with attention only
at the two lowest resolutions, ``paper`` the ``"paper"`` preset
(`astro_sbgm.estimator.PRESETS`).

``--compile`` also runs `torch.compile` on the network (each configuration
compiles separately: minutes on a small CPU) and reports the compile time and
the compiled rates next to the eager ones.  The timings are wall-clock by
default; ``--clock cpu`` uses the process's CPU time instead (rates per
CPU-second), which a shared, busy machine disturbs much less.  On a shared
machine run it under ``nice`` and read the medians as well as the best
values.  This is a script that prints a table, not a test.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from astropy.table import Table
from torch.utils.flop_counter import FlopCounterMode

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.diffusion import (Denoiser, DiffusionSchedule, make_grid, reverse_process,
                                  training_loss)
from astro_sbgm.estimator import PRESETS
from astro_sbgm.nn import UNet, count_parameters

__all__ = []

_NETWORK_KEYS = ("dim", "dim_mults", "attention_levels", "objective", "schedule", "timesteps")


def _configs():
    """name -> network and objective settings (from the estimator's defaults and presets)."""
    defaults = GalaxyDiffusion().get_params()
    default = {k: defaults[k] for k in _NETWORK_KEYS}
    levels = len(tuple(default["dim_mults"]))
    low = dict(default, attention_levels=tuple(i >= levels - 2 for i in range(levels)))
    paper = dict(default, **{k: v for k, v in PRESETS["paper"].items() if k in _NETWORK_KEYS})
    return {"default": default, "attn-low": low, "paper": paper}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(fn, device, iters, warmup, clock="wall"):
    """Seconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones.

    ``clock="wall"`` is wall-clock time; ``"cpu"`` is the CPU time of the whole process (all
    threads), which a busy machine inflates much less (threads waiting for a core do not
    count), so rates per CPU-second compare fairly between runs on a shared machine.
    """
    timer = _CLOCK[clock]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = timer()
        fn()
        _sync(device)
        times.append(timer() - t0)
    return np.array(times)


def _flops(fn):
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def conv_ceiling(device, batch=16, iters=5, warmup=1, clock="wall"):
    """FLOP/s of a large 3x3 convolution, forward (inference) and forward + backward.

    Returns
    -------
    dict
        ``fwd_flops``, ``train_flops`` (per call), best and median ``fwd_s`` /
        ``train_s`` (seconds), ``fwd_gflops`` and ``train_gflops`` (best rates).
    """
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device)
    x = torch.randn(batch, 64, 64, 64, device=device)
    xg = x.clone().requires_grad_(True)

    def forward():
        with torch.inference_mode():
            conv(x)

    def train():
        conv.zero_grad(set_to_none=True)
        xg.grad = None
        conv(xg).sum().backward()

    fwd_flops, train_flops = _flops(forward), _flops(train)
    t_fwd = _timed(forward, device, iters, warmup, clock)
    t_train = _timed(train, device, iters, warmup, clock)
    return {"fwd_flops": fwd_flops, "train_flops": train_flops,
            "fwd_s": float(t_fwd.min()), "fwd_s_median": float(np.median(t_fwd)),
            "train_s": float(t_train.min()), "train_s_median": float(np.median(t_train)),
            "fwd_gflops": fwd_flops / t_fwd.min() / 1e9,
            "train_gflops": train_flops / t_train.min() / 1e9}


def _measure(name, cfg, args):
    """Everything about one configuration (run in its own process)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = UNet(in_channels=3, dim=cfg["dim"], dim_mults=tuple(cfg["dim_mults"]),
               attention_levels=cfg["attention_levels"]).to(device)
    schedule = DiffusionSchedule.from_name(cfg["schedule"], int(cfg["timesteps"]))
    x0 = (torch.rand(args.batch, 3, args.size, args.size) * 2 - 1).to(device)
    gen = torch.Generator().manual_seed(0)
    out = {"config": name, "params": count_parameters(net),
           "attention_levels": list(net.config["attention_levels"])}

    def make_train_step(module):
        den = Denoiser(module, schedule, cfg["objective"])
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def step():
            loss = training_loss(den, x0, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def make_eval(module):
        module.eval()

        def call():
            with torch.inference_mode():
                module(x0, 500.0)
        return call

    # memory first, before anything else has grown the high-water mark
    step = make_train_step(net)
    clock = args.clock
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    net.train()
    t_train = _timed(step, device, args.iters, args.warmup, clock)
    if device.type == "cuda":
        out["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
        out["rss_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        out["peak_mb"] = (peak - base) / 1024
        out["rss_mb"] = peak / 1024
    out["train_s"] = float(t_train.min())
    out["train_s_median"] = float(np.median(t_train))
    net.train()
    out["train_flops"] = _flops(make_train_step(net))

    evaluate = make_eval(net)
    out["fwd_flops"] = _flops(evaluate)
    t_eval = _timed(evaluate, device, args.iters, args.warmup, clock)
    out["eval_s"] = float(t_eval.min())
    out["eval_s_median"] = float(np.median(t_eval))

    # the whole sampler loop: per-evaluation cost including the update rule
    den = Denoiser(net.eval(), schedule, cfg["objective"])
    times = make_grid(schedule, max(args.iters, 2), "karras")
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)).to(device)
    _sync(device)
    t0 = _CLOCK[clock]()
    _, nfe = reverse_process(den, noise, times, "dpmpp-2m")
    _sync(device)
    out["sampler_s_per_eval"] = (_CLOCK[clock]() - t0) / nfe
    # the ceiling, measured in this process next to the network's own timings
    out["ceiling"] = conv_ceiling(device, args.batch, args.iters, args.warmup, clock)

    if args.compile:
        t0 = time.perf_counter()
        compiled = torch.compile(net)
        evaluate_c = make_eval(compiled)
        evaluate_c()
        _sync(device)
        out["compile_eval_s"] = time.perf_counter() - t0
        t_c = _timed(evaluate_c, device, args.iters, args.warmup, clock)
        out["eval_s_compiled"] = float(t_c.min())
        compiled.train()
        step_c = make_train_step(compiled)
        t0 = time.perf_counter()
        step_c()
        _sync(device)
        out["compile_train_s"] = time.perf_counter() - t0
        t_c = _timed(step_c, device, args.iters, args.warmup, clock)
        out["train_s_compiled"] = float(t_c.min())
    return out


def _child_args(args, name):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name,
           "--device", args.device, "--threads", str(args.threads), "--iters", str(args.iters),
           "--warmup", str(args.warmup), "--batch", str(args.batch), "--size", str(args.size),
           "--clock", args.clock]
    if args.compile:
        cmd.append("--compile")
    return cmd


def _table(results, batch):
    rows = []
    for r in results:
        ceiling = r["ceiling"]
        train_rate = r["train_flops"] / r["train_s"]
        eval_rate = r["fwd_flops"] / r["eval_s"]
        row = {
            "config": r["config"],
            "params_M": r["params"] / 1e6,
            "GFLOP_img": r["fwd_flops"] / batch / 1e9,
            "train_img_s": batch / r["train_s"],
            "train_img_s_med": batch / r["train_s_median"],
            "train_util": train_rate / 1e9 / ceiling["train_gflops"],
            "eval_img_s": batch / r["eval_s"],
            "eval_img_s_med": batch / r["eval_s_median"],
            "eval_util": eval_rate / 1e9 / ceiling["fwd_gflops"],
            "sampler_pct": 100 * (r["sampler_s_per_eval"] / r["eval_s"] - 1),
            "peak_MiB": r["peak_mb"],
            "RSS_MiB": r["rss_mb"],
            "conv_fwd_GF_s": ceiling["fwd_gflops"],
            "conv_train_GF_s": ceiling["train_gflops"],
        }
        if "eval_s_compiled" in r:
            row.update({"compile_s": r["compile_eval_s"] + r["compile_train_s"],
                        "train_img_s_comp": batch / r["train_s_compiled"],
                        "eval_img_s_comp": batch / r["eval_s_compiled"]})
        rows.append(row)
    table = Table(rows=rows)
    for col in table.colnames[1:]:
        table[col].info.format = ".2f" if col.endswith(("util", "params_M", "GFLOP_img")) \
            else ".1f"
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--iters", type=int, default=5, help="timed repetitions")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--configs", default="default,attn-low,paper",
                        help="comma-separated subset of default, attn-low, paper")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile'd networks (slow to compile)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time, or process CPU time (rates per CPU-second: "
                             "steadier on a shared machine); default wall")
    parser.add_argument("--output", help="also write the table here (ECSV)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = _configs()

    if args.child:
        print(json.dumps(_measure(args.child, configs[args.child], args)))
        return

    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in configs]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; known: {sorted(configs)}")
    device = torch.device(args.device)
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"torch {torch.__version__}, device {device}, {args.threads} thread(s), "
          f"batch {args.batch}, {args.size}x{args.size} grz, {args.iters} timed + "
          f"{args.warmup} warm-up repetitions, {started}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.clock} clock: rates are per {'second' if args.clock == 'wall' else 'CPU-second'}"
          f"; utilisation against a 3x3 conv ({args.batch}x64x64x64 -> 64) timed in the same "
          "process (conv_*_GF_s)")
    results = []
    for name in names:
        done = subprocess.run(_child_args(args, name), capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"configuration {name!r} failed (exit {done.returncode})")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {name}: done", flush=True)
    table = _table(results, args.batch)
    table.meta.update({"torch": str(torch.__version__), "device": str(device),
                       "threads": args.threads, "date": started, "clock": args.clock,
                       "iters": args.iters, "batch": args.batch, "size": args.size,
                       "loadavg_end": list(os.getloadavg())})
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n".join(table.pformat(max_lines=-1, max_width=-1)))
    if args.output:
        table.write(args.output, format="ascii.ecsv", overwrite=True)


if __name__ == "__main__":
    main()
