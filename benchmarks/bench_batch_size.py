"""Benchmark: sampling time against the batch size, and the 64-galaxy draw.

Usage::

    python benchmarks/bench_batch_size.py [--model mock-legacy-grz-64] [--threads 2]
        [--sizes 4,8,16,32,64] [--iters 3] [--n 64] [--steps 10]

Part 1: milliseconds per image of one network evaluation of the model's
weight average under `torch.inference_mode`, for each batch size, best of
``iters`` rounds; the sizes are interleaved round by round so that a change
of machine load hits every size alike.  ``ratio`` is the time per image over
that at the largest size measured in the same run.

Part 2: wall seconds of ``model.sample(n, steps=steps)`` (the default
``dpmpp-2m`` sampler, the whole call: noise, network, scaling back to
nanomaggies and the CCDData outputs) at the default batch size
(`~astro_sbgm.GalaxyDiffusion.default_batch_size`) and at the largest size,
best of ``iters`` calls each.  Measure on an idle machine.
"""

import argparse
import time

import numpy as np
import torch

from astro_sbgm import GalaxyDiffusion


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mock-legacy-grz-64", help="bundled name or folder")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--sizes", default="4,8,16,32,64")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = (GalaxyDiffusion.load(a.model, device="cpu") if "/" in a.model
             else GalaxyDiffusion.pretrained(a.model, device="cpu"))
    net = model.ema_net_.eval()
    sizes = [int(s) for s in a.sizes.split(",")]
    shape = (len(model.bands_), model.image_size, model.image_size)
    per_image = {b: [] for b in sizes}
    with torch.inference_mode():
        for b in sizes:   # warm-up
            net(torch.randn(b, *shape), torch.full((b,), 500.0))
        for _ in range(a.iters):
            for b in sizes:
                x, t = torch.randn(b, *shape), torch.full((b,), 500.0)
                calls = max(1, max(sizes) // b)   # the same images per round at every size
                t0 = time.perf_counter()
                for _ in range(calls):
                    net(x, t)
                per_image[b].append((time.perf_counter() - t0) / (calls * b))
    big = max(sizes)
    print(f"# {model.image_size}x{model.image_size}, {a.threads} thread(s), best of {a.iters}")
    print(f"{'batch':>6} {'ms/image':>9} {'ratio':>6}")
    for b in sizes:
        print(f"{b:6d} {1e3 * min(per_image[b]):9.1f} "
              f"{min(per_image[b]) / min(per_image[big]):6.2f}")
    walls = {}
    for b in dict.fromkeys([model.default_batch_size, big]):
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            model.sample(a.n, steps=a.steps, seed=0, batch_size=b, progress=False)
            times.append(time.perf_counter() - t0)
        walls[b] = times
        print(f"sample({a.n}, steps={a.steps}) at batch {b}: best {min(times):.1f} s, "
              f"median {np.median(times):.1f} s")


if __name__ == "__main__":
    main()
