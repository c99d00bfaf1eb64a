"""Benchmark: inpaint satellite trails across a full survey frame through the public API.

A ``--size`` x ``--size`` three-band frame (default 2048 x 2048, g r z at
0.262"/pix, nanomaggies) is built from noiseless mock Legacy Survey
galaxies (`astro_sbgm.datasets.make_mock_legacy_survey`, ``sky_noise=1e-6``)
placed at random, plus Gaussian sky noise of the mocks' per-band sigma.
``--trails`` long satellite trails (`astro_sbgm.artifacts.add_satellite_trails`,
solid, FWHM 1.5-3 px) deface it; `astro_sbgm.inpainting.inpaint` repairs it
with the default method (``--method``) in model-size boxes.  Printed:

* wall time of the ``inpaint`` call and the peak resident memory of the
  process (``ru_maxrss``, everything included: Python, torch, the model,
  the frame) before and after it;
* boxes, sky-only boxes (drawn sky noise, `inpaint`'s ``sky_shortcut``) and
  network evaluations;
* where the time goes (cProfile, cumulative seconds of the main pieces);
* seams: the residual ``(fill - truth) / sigma`` of filled pixels at a box
  border (a 4-neighbour filled by another box) against the rest, RMS and
  mean; sky pixels (noiseless truth below 0.5 sigma) and source pixels
  apart (a perfect draw gives RMS sqrt(2) = 1.41 on sky);
* with ``--compare-shortcut``, the same residuals for the frame repaired
  without the sky shortcut (the network in every box).

Usage::

    python benchmarks/bench_inpainting_frame.py [--size 2048] [--n-galaxies 400] \\
        [--trails 3] [--threads 2] [--method NAME] [--compare-shortcut] [--json out.json]
"""

import argparse
import cProfile
import json
import pstats
import resource
import time
import warnings

import numpy as np
import torch
import astropy.units as u
from astropy.nddata import CCDData, StdDevUncertainty

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.artifacts import add_satellite_trails
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.inpainting import _plan_boxes, inpaint
from astro_sbgm.io import make_tan_wcs


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_frame(size, n_galaxies, n_trails, seed, model):
    bands = "".join(model.bands_)
    stamp = int(model.image_size)
    mocks = make_mock_legacy_survey(n_galaxies, size=stamp, bands=bands, seed=seed,
                                    sky_noise=1e-6)
    # the cards hold the sky sigma of these (noiseless) mocks: undo the 1e-6
    sigma = np.array([float(mocks[0].meta[f"SKYSIG_{b.upper()}"]) for b in bands]) / 1e-6
    rng = np.random.default_rng(seed)
    clean = np.zeros((len(bands), size, size))
    for m in mocks:
        y, x = rng.integers(0, size - stamp, 2)
        clean[:, y:y + stamp, x:x + stamp] += m.data
    truth = clean + rng.normal(size=clean.shape) * sigma[:, None, None]
    wcs = make_tan_wcs((size, size), float(model.pixel_scale) * u.arcsec, 150.0, 2.2)
    ccd = CCDData(truth.astype(np.float32), unit=u.nanomaggy, wcs=wcs,
                  uncertainty=StdDevUncertainty(np.broadcast_to(
                      sigma[:, None, None], truth.shape).astype(np.float32)),
                  meta={"BANDS": ",".join(bands)})
    defaced, mask = add_satellite_trails(ccd, n_trails=n_trails, brightness=(5.0, 50.0),
                                         width=(1.5, 3.0), dashed=0.0, seed=seed + 1)
    return truth, clean, sigma, defaced, mask


def seam_residuals(out, truth, clean, sigma, mask, size):
    """RMS and mean of (fill - truth)/sigma at box borders and inside, sky and sources."""
    target = mask.any(axis=0)
    owner = np.full(target.shape, -1, int)
    for i, (y0, x0, assigned) in enumerate(_plan_boxes(target, size)):
        H, W = target.shape
        ys, xs = slice(max(y0, 0), min(y0 + size, H)), slice(max(x0, 0), min(x0 + size, W))
        loc = assigned[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        owner[ys, xs][loc] = i
    border = np.zeros(target.shape, bool)
    for axis in (0, 1):
        for shift in (1, -1):
            nb = np.roll(owner, shift, axis=axis)
            border |= target & (nb >= 0) & (nb != owner)
    r = (np.asarray(out.data, float) - truth) / sigma[:, None, None]
    sky = clean < 0.5 * sigma[:, None, None]
    res = {}
    for where, sel in (("border", border), ("inside", target & ~border)):
        for what, pix in (("sky", sky), ("source", ~sky)):
            m = mask & sel[None] & pix
            v = r[m]
            res[f"{where}_{what}"] = {"n": int(v.size),
                                      "rms": float(np.sqrt(np.mean(v ** 2))) if v.size else None,
                                      "mean": float(np.mean(v)) if v.size else None}
    return res


def profile_summary(prof):
    stats = pstats.Stats(prof)
    pieces = {"network (engine.generate)": "generate", "interpolated start (_smooth_fill)":
              "_smooth_fill", "box plan (_plan_boxes)": "_plan_boxes",
              "sky test (_holds_source)": "_holds_source", "sky draws (_sky_draws)":
              "_sky_draws", "read input (read_image)": "read_image",
              "one batched box run (_boxes)": "_boxes", "fill (all boxes)": "fill"}
    out = {}
    for label, fn in pieces.items():
        total = sum(v[3] for k, v in stats.stats.items() if k[2] == fn)
        out[label] = round(total, 2)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mock-legacy-grz-64")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--n-galaxies", type=int, default=400)
    p.add_argument("--trails", type=int, default=3)
    p.add_argument("--seed", type=int, default=2001)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--method", default=None, help="inpainting method (default: inpaint's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--compare-shortcut", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = GalaxyDiffusion.pretrained(args.model)
    t0 = time.perf_counter()
    truth, clean, sigma, defaced, mask = build_frame(args.size, args.n_galaxies, args.trails,
                                                     args.seed, model)
    print(f"{args.size}x{args.size} frame, {args.n_galaxies} galaxies, {args.trails} trails, "
          f"{int(mask[0].sum())} masked pixels per band (built in "
          f"{time.perf_counter() - t0:.0f} s); model {args.model}; {args.threads} threads",
          flush=True)
    rss0 = peak_rss_mb()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prof.enable()
        kw = {} if args.method is None else {"method": args.method}
        out = inpaint(model, defaced, mask, seed=0, batch_size=args.batch_size, **kw)
        prof.disable()
    wall = time.perf_counter() - t0
    rss1 = peak_rss_mb()
    res = {"size": args.size, "method": out.meta["INPAINT"], "threads": args.threads,
           "wall_s": round(wall, 1), "peak_rss_mb_before": round(rss0),
           "peak_rss_mb_after": round(rss1), "boxes": int(out.meta["NBOXES"]),
           "sky_boxes": int(out.meta["SKYBOXES"]), "nfe_total": int(out.meta["NFE"]),
           "profile_s": profile_summary(prof),
           "seams": seam_residuals(out, truth, clean, sigma, mask, int(model.image_size))}
    print(f"inpaint: {wall:.1f} s, peak RSS {rss0:.0f} MB before -> {rss1:.0f} MB after; "
          f"{res['boxes']} boxes, {res['sky_boxes']} of sky only, {res['nfe_total']} network "
          f"evaluations per draw in all", flush=True)
    print("time (cumulative s):", json.dumps(res["profile_s"]))
    print("residual / sigma:", json.dumps(res["seams"]))
    if args.compare_shortcut:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = inpaint(model, defaced, mask, seed=0, batch_size=args.batch_size,
                           sky_shortcut=False, **kw)
        res["no_shortcut"] = {"wall_s": round(time.perf_counter() - t0, 1),
                              "nfe_total": int(full.meta["NFE"]),
                              "seams": seam_residuals(full, truth, clean, sigma, mask,
                                                      int(model.image_size))}
        print("without the sky shortcut:", json.dumps(res["no_shortcut"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
