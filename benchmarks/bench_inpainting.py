"""Benchmark: how well does inpainting recover pixels under satellite trails?

Held-out mock galaxies (a seed the model was not trained on) are defaced with
simulated satellite trails (`astro_sbgm.artifacts.add_satellite_trails`);
each inpainting method fills the trail pixels; the fill is compared with the
untouched image (`astro_sbgm.metrics._inpainting.inpainting_accuracy`).  For
each method the script prints the fraction of occluded pixels above 3 sigma
of the background whose fill is within 10% of the truth (the paper's Fig. 6
claim: "virtually all"), the same over all occluded pixels with a positive
true flux, the noise ceiling (what a perfect fill would reach: the truth's
sky noise alone moves some faint pixels out of the 10%), the RMS error in
units of the sky sigma, the network evaluations per image and the wall
time.  A model-free baseline ("interpolate": a normalised Gaussian
interpolation of the surrounding pixels, the initial guess the diffusion
methods start from) gives the yardstick.

Usage::

    python benchmarks/bench_inpainting.py MODEL_DIR [--n 20] [--seed 2024]
        [--methods interpolate fast paper repaint] [--n-draws 1]
        [--spec NAME=METHOD,key=value,...] [--dataset mock|trivial] [--out table.ecsv]

``--spec fast20=fast,sampler=dpmpp-2m,steps=20`` adds a variant (keys:
sampler, steps, grid, t_start, jump_length, n_resample, eta).  On a CPU the
``paper`` and ``repaint`` methods cost about 1000 network evaluations per
image: use a small ``--n``.
"""

import argparse
import time
import warnings

import numpy as np
import torch
from astropy.table import QTable

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.artifacts import add_satellite_trails
from astro_sbgm.datasets import make_mock_legacy_survey, make_trivial_dataset
from astro_sbgm.inpainting import _smooth_fill, inpaint
from astro_sbgm.metrics._inpainting import inpainting_accuracy

_NUMERIC = {"steps": int, "t_start": float, "jump_length": int, "n_resample": int,
            "eta": float}


def parse_spec(text):
    """``NAME=METHOD,key=value,...`` -> (name, method, kwargs)."""
    name, _, rest = text.partition("=")
    parts = rest.split(",")
    kwargs = {}
    for item in parts[1:]:
        key, _, value = item.partition("=")
        kwargs[key] = _NUMERIC.get(key, str)(value)
    return name, parts[0], kwargs


def interpolate(image, mask):
    """The model-free baseline: normalised Gaussian interpolation of the known pixels."""
    data = np.asarray(image.data, np.float32)[None]
    m = np.broadcast_to(mask, data.shape[1:])
    fill = _smooth_fill(data, m, 0.0)[0]
    return np.where(m, fill, data[0])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model directory (GalaxyDiffusion.save)")
    p.add_argument("--n", type=int, default=20, help="held-out galaxies (default 20)")
    p.add_argument("--seed", type=int, default=2024, help="seed of the held-out set")
    p.add_argument("--dataset", choices=("mock", "trivial"), default="mock")
    p.add_argument("--methods", nargs="+", default=["interpolate", "fast", "paper", "repaint"])
    p.add_argument("--spec", action="append", default=[], help="extra variant, see above")
    p.add_argument("--n-draws", type=int, default=1)
    p.add_argument("--trails", type=int, default=1, help="trails per image")
    p.add_argument("--brightness", type=float, nargs=2, default=(2.0, 50.0))
    p.add_argument("--width", type=float, nargs=2, default=(1.0, 3.0))
    p.add_argument("--weights", choices=("ema", "model"), default="ema")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the table here (.ecsv)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = GalaxyDiffusion.load(args.model)
    size, bands = model.image_size, "".join(model.bands_)
    make = make_mock_legacy_survey if args.dataset == "mock" else make_trivial_dataset
    truths = make(args.n, size=size, bands=bands, seed=args.seed)
    defaced, masks = [], []
    for i, t in enumerate(truths):
        d, m = add_satellite_trails(t, n_trails=args.trails, seed=args.seed * 1000 + i,
                                    brightness=tuple(args.brightness),
                                    width=tuple(args.width))
        defaced.append(d)
        masks.append(m)
    rms = np.stack([t.uncertainty.array[:, 0, 0] for t in truths])   # (n, band) sky sigma
    truth_arr = np.stack([t.data for t in truths])

    runs = [(name, name, {}) for name in args.methods] + [parse_spec(s) for s in args.spec]
    rows = []
    print(f"{args.n} held-out {args.dataset} galaxies ({size}x{size}, {bands}), "
          f"{args.trails} trail(s) each, {int(np.sum(masks))} occluded pixel values; model "
          f"{args.model} ({model.n_steps_} training steps, {args.weights} weights)")
    ceiling = None
    for name, method, kw in runs:
        t0 = time.perf_counter()
        filled, nfe = [], 0
        for i, (d, m) in enumerate(zip(defaced, masks)):
            if method == "interpolate":
                filled.append(interpolate(d, m))
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = inpaint(model, d, m, method=method, n_draws=args.n_draws, seed=i,
                              weights=args.weights, **kw)
            filled.append(np.asarray(out.data))
            nfe = int(out.meta["NFE"]) * args.n_draws
        wall = time.perf_counter() - t0
        acc = inpainting_accuracy(truth_arr, np.stack(filled), np.stack(masks), rms,
                                  bands=bands)
        last = acc.table[-1]
        if ceiling is None:
            ceiling = float(last["noise_ceiling"])
            print(f"noise ceiling (a perfect, noiseless fill): {100 * ceiling:.1f}% of "
                  f"{int(last['n_bright'])} >3 sigma occluded pixel values within 10%")
        rows.append((name, method, float(last["frac_within"]), float(last["noise_ceiling"]),
                     float(last["frac_within_all"]),
                     float(last["median_abs_frac_error"]), float(last["rms_error_sigma"]),
                     int(last["n_bright"]), int(last["n_occluded"]), nfe,
                     wall / args.n))
        print(f"{name:>12s}: {100 * last['frac_within']:5.1f}% of >3 sigma occluded pixels "
              f"within 10% (all occluded: {100 * last['frac_within_all']:5.1f}%), median "
              f"|err| {last['median_abs_frac_error']:.3f}, RMS {last['rms_error_sigma']:.2f} "
              f"sigma, {nfe} NFE/image, {wall / args.n:.2f} s/image", flush=True)
    table = QTable(rows=rows, names=("name", "method", "frac_within_10pc_bright",
                                     "noise_ceiling", "frac_within_10pc_all",
                                     "median_abs_frac_error_bright",
                                     "rms_error_sigma", "n_bright", "n_occluded",
                                     "nfe_per_image", "seconds_per_image"))
    table.meta.update({"model": str(args.model), "n": args.n, "seed": args.seed,
                       "dataset": args.dataset, "n_draws": args.n_draws})
    if args.out:
        table.write(args.out, overwrite=True)
    return table


if __name__ == "__main__":
    main()
