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
  apart (a perfect draw gives RMS sqrt(2) = 1.41 on sky); for source
  pixels also border minus inside with the inside pixels weighted to the
  border pixels' brightness, with bootstrap intervals over junctions, and
  the border pixels split by the side of the junction: the box that ran in
  the earlier wave, or the later box (which saw the earlier fill as known);
* with ``--compare-shortcut``, the same residuals for the frame repaired
  without the sky shortcut (the network in every box).

Usage::

    python benchmarks/bench_inpainting_frame.py [--size 2048] [--n-galaxies 400] \\
        [--trails 3] [--seed 2001] [--threads 2] [--method NAME] [--seam-overlap K] \\
        [--compare-shortcut] [--json out.json]
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
from scipy import ndimage

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.artifacts import add_satellite_trails
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.inpainting import inpaint, inpainting_plan
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


def seam_residuals(out, truth, clean, sigma, mask, size, overlap=0, n_boot=1000, seed=0):
    """RMS and mean of (fill - truth)/sigma at box borders and inside, sky and sources.

    Source pixels are compared like with like as well: the residual of a pixel
    grows with its brightness, so ``inside_source_matched`` weighs the inside
    source pixels to the border pixels' distribution of ``clean / sigma``
    (bins of 0.25 dex).  ``border_minus_inside_source`` gives border minus
    matched inside (RMS and mean) with 68% and 95% bootstrap intervals over
    the junctions (connected groups of border pixels), since the pixels of one
    junction are not independent.
    """
    target = mask.any(axis=0)
    # the box whose values each filled pixel ends with, and the wave each box ran in: at a
    # junction, the box of the later wave saw the earlier box's fill as known pixels
    corners, waves, owner = inpainting_plan(target, size, overlap)
    wave_of = np.zeros(len(corners) + 1, int)
    for w, members in enumerate(waves):
        wave_of[members] = w
    wave_of[-1] = -1   # owner -1 (not a target pixel)
    border = np.zeros(target.shape, bool)
    earlier = np.zeros(target.shape, bool)
    for axis in (0, 1):
        for shift in (1, -1):
            nb = np.roll(owner, shift, axis=axis)
            here = target & (nb >= 0) & (nb != owner)
            border |= here
            earlier |= here & (wave_of[owner] < wave_of[nb])
    r = (np.asarray(out.data, float) - truth) / sigma[:, None, None]
    snr = clean / sigma[:, None, None]
    sky = snr < 0.5
    res = {}
    for where, sel in (("border", border), ("inside", target & ~border),
                       ("border_earlier_box", earlier), ("border_later_box", border & ~earlier)):
        for what, pix in (("sky", sky), ("source", ~sky)):
            m = mask & sel[None] & pix
            v = r[m]
            res[f"{where}_{what}"] = {"n": int(v.size),
                                      "rms": float(np.sqrt(np.mean(v ** 2))) if v.size else None,
                                      "mean": float(np.mean(v)) if v.size else None}
    # like with like: inside source pixels weighted to the border's brightness distribution
    mb, mi = mask & border[None] & ~sky, mask & (target & ~border)[None] & ~sky
    if not mb.any() or not mi.any():
        return res
    edges = np.arange(np.log10(0.5), np.log10(snr.max()) + 0.25, 0.25)
    bin_b = np.digitize(np.log10(snr[mb]), edges)
    bin_i = np.digitize(np.log10(snr[mi]), edges)
    n_b = np.bincount(bin_b, minlength=edges.size + 1).astype(float)
    n_i = np.bincount(bin_i, minlength=edges.size + 1).astype(float)
    w_i = np.where(n_i[bin_i] > 0, n_b[bin_i] / np.maximum(n_i[bin_i], 1), 0.0)
    v_i = r[mi]
    rms_i = float(np.sqrt(np.sum(w_i * v_i ** 2) / np.sum(w_i)))
    mean_i = float(np.sum(w_i * v_i) / np.sum(w_i))
    res["inside_source_matched"] = {"n": int(v_i.size), "rms": rms_i, "mean": mean_i,
                                    "border_pixels_unmatched": int((n_i[bin_b] == 0).sum())}
    # bootstrap over junctions: groups of border pixels within 3 px of each other
    groups, _ = ndimage.label(ndimage.binary_dilation(border, iterations=3))
    _, gid = np.unique(np.broadcast_to(groups, mask.shape)[mb], return_inverse=True)
    n_groups = int(gid.max()) + 1
    v_b = r[mb]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[gid]
        diffs.append((np.sqrt(np.sum(counts * v_b ** 2) / counts.sum()) - rms_i,
                      np.sum(counts * v_b) / counts.sum() - mean_i))
    diffs = np.array(diffs)
    b = res["border_source"]
    res["border_minus_inside_source"] = {
        "junctions": n_groups,
        "rms": b["rms"] - rms_i, "mean": b["mean"] - mean_i,
        "rms_68": np.percentile(diffs[:, 0], [16, 84]).tolist(),
        "rms_95": np.percentile(diffs[:, 0], [2.5, 97.5]).tolist(),
        "mean_68": np.percentile(diffs[:, 1], [16, 84]).tolist(),
        "mean_95": np.percentile(diffs[:, 1], [2.5, 97.5]).tolist()}
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
    p.add_argument("--seam-overlap", type=int, default=None,
                   help="inpaint's seam_overlap (default: inpaint's)")
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
        if args.seam_overlap is not None:
            kw["seam_overlap"] = args.seam_overlap
        out = inpaint(model, defaced, mask, seed=0, batch_size=args.batch_size, **kw)
        prof.disable()
    wall = time.perf_counter() - t0
    rss1 = peak_rss_mb()
    res = {"size": args.size, "method": out.meta["INPAINT"], "threads": args.threads,
           "wall_s": round(wall, 1), "peak_rss_mb_before": round(rss0),
           "peak_rss_mb_after": round(rss1), "boxes": int(out.meta["NBOXES"]),
           "sky_boxes": int(out.meta["SKYBOXES"]), "nfe_total": int(out.meta["NFE"]),
           "profile_s": profile_summary(prof),
           "seam_overlap": int(out.meta["SEAMOVL"]),
           "seams": seam_residuals(out, truth, clean, sigma, mask, int(model.image_size),
                                   int(out.meta["SEAMOVL"]))}
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
                                                      int(model.image_size),
                                                      int(full.meta["SEAMOVL"]))}
        print("without the sky shortcut:", json.dumps(res["no_shortcut"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
