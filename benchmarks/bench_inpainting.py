"""Benchmark: how well does inpainting recover occluded pixels and photometry?

The protocol (issue 14)
-----------------------
* Held-out mock Legacy Survey galaxies of a seed the model never saw
  (``--seed 1001``; the bundled model was trained on seed 13), at the
  model's size and bands.  The same galaxies without sky noise
  (``sky_noise=1e-6``, same seed) give the noiseless truth for the
  yardsticks.
* Three mask kinds, every galaxy masked once per kind
  (`astro_sbgm.artifacts`):

  - ``trail``: 1-3 satellite trails (`add_satellite_trails`, FWHM 1-4 px,
    so 2-8 px wide masks, 30% dashed); in every other image the first
    trail is redrawn until it passes within the half-light radius of the
    centre (through the galaxy), the others lie anywhere;
  - ``star``: 1-2 saturated-star discs (`star_mask`, radius 3-8 px), the
    first within 2 half-light radii of the centre;
  - ``column``: a bad column (`bad_column_mask`, 1-3 columns wide, within
    12 px of the centre, full height or a partial stretch).

* Every method fills every (galaxy, mask) with ``--n-draws`` draws
  (``return_draws=True``); the fills are kept in ``--work`` so that the
  scores can be recomputed without the network (``--score-only``).
* Scores per method and mask kind (bootstrap 68% intervals over galaxies):

  - fraction of occluded pixels above 3 sigma of the sky whose fill is
    within 10% of the truth (the paper's Fig. 6 number), for one draw
    (draw 0), with the *draw ceiling* (a perfect draw carries its own sky
    noise: it differs from the truth by sqrt(2) sigma) and the share of it
    reached; split by where the pixel lies (``core``: within the galaxy's
    half-light radius of the centre; ``beside``: outside);
  - chi^2 per occluded pixel in sigma units (about 2 for a perfect draw);
  - photometry of the repaired galaxy (draw 0) against the untouched one
    (`astro_sbgm.metrics.measure_galaxies`: 12 px aperture magnitudes in
    g, r, z, r-band half-light radius): median and 90th percentile of
    ``|dmag|`` (all bands pooled) and ``|dR_e| / R_e``; with ``K > 1`` draws
    also of the mean of the draws (in the JSON rows, ``mean_dmag_*``);
  - calibration of the draws (`astro_sbgm.metrics.inpainting_calibration`:
    z-score spread against Student's t, 68/95% coverage);
  - network evaluations per image (all draws) and wall time per image.

* Yardsticks, scored the same way: ``interpolate`` (a model-free
  normalised Gaussian interpolation, the start the diffusion methods are
  noised from), ``perfect-draw`` (the noiseless galaxy plus fresh sky noise
  in the occluded pixels: what a perfect draw gives; its photometry row is
  "the untouched image with fresh sky noise") and ``perfect-mean`` (the
  noiseless galaxy).

Usage::

    python benchmarks/bench_inpainting.py [--model mock-legacy-grz-64] [--n 100] \\
        [--seed 1001] [--kinds trail star column] [--methods interpolate fast ...] \\
        [--n-for paper=20 repaint=20] [--n-draws 4] [--draws-for paper=1] \\
        [--spec NAME=METHOD,key=value,...] [--work DIR] [--json out.json] [--rst out.rst]

``--model`` is a bundled model name or a directory written by
``GalaxyDiffusion.save``.  ``--spec fast20=fast,sampler=dpmpp-2m,steps=20``
adds a variant (keys: sampler, steps, grid, t_start, jump_length, n_resample,
eta, variance).  ``--n-for METHOD=N`` runs a method on the first N galaxies
only (the ~1000-evaluation methods: ``paper``, ``repaint``); the
yardsticks are then scored on the same galaxies for that row.
"""

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.artifacts import add_satellite_trails, bad_column_mask, star_mask
from astro_sbgm.datasets import make_mock_legacy_survey, make_trivial_dataset
from astro_sbgm.inpainting import _smooth_fill, inpaint
from astro_sbgm.metrics import measure_galaxies
from astro_sbgm.metrics._inpainting import inpainting_accuracy, inpainting_calibration

_NUMERIC = {"steps": int, "t_start": float, "jump_length": int, "n_resample": int,
            "data_weight": float,
            "eta": float}
YARDSTICKS = ("interpolate", "perfect-draw", "perfect-mean")
KINDS = ("trail", "star", "column")


def parse_spec(text):
    """``NAME=METHOD,key=value,...`` -> (name, method, kwargs)."""
    name, _, rest = text.partition("=")
    parts = rest.split(",")
    kwargs = {}
    for item in parts[1:]:
        key, _, value = item.partition("=")
        kwargs[key] = _NUMERIC.get(key, str)(value)
    return name, parts[0], kwargs


def interpolate(data, mask):
    """The model-free baseline: normalised Gaussian interpolation of the known pixels."""
    data = np.asarray(data, np.float32)[None]
    m = np.broadcast_to(mask, data.shape[1:])
    fill = _smooth_fill(data, m, 0.0)[0]
    return np.where(m, fill, data[0])


# --------------------------------------------------------------------------- masks
def _line_distance(params, cx, cy):
    val = {k: float(getattr(params[k], "value", params[k])) for k in ("angle", "x", "y")}
    th = np.deg2rad(val["angle"])
    return abs(-np.sin(th) * (cx - val["x"]) + np.cos(th) * (cy - val["y"]))


def make_mask(kind, shape, r_e, rng):
    """One mask of ``kind`` for a (band, y, x) image; ``r_e`` half-light radius in px."""
    nb, ny, nx = shape
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    if kind == "trail":
        n_trails = int(rng.integers(1, 4))
        mask = np.zeros(shape, bool)
        for k in range(n_trails):
            through = k == 0 and rng.uniform() < 0.5
            for _ in range(200):
                _, m, par = add_satellite_trails(np.zeros(shape), n_trails=1,
                                                 width=(1.0, 4.0), brightness=(2.0, 50.0),
                                                 seed=int(rng.integers(2 ** 31)),
                                                 return_params=True)
                if not through or _line_distance(par[0], cx, cy) <= max(r_e, 2.0):
                    break
            mask |= m
        return mask
    if kind == "star":
        plane = np.zeros((ny, nx), bool)
        for k in range(int(rng.integers(1, 3))):
            radius = rng.uniform(3.0, 8.0)
            if k == 0:
                rr, ang = rng.uniform(0, 2 * max(r_e, 2.0)), rng.uniform(0, 2 * np.pi)
                centre = (cy + rr * np.sin(ang), cx + rr * np.cos(ang))
            else:
                centre = (rng.uniform(0, ny - 1), rng.uniform(0, nx - 1))
            plane |= star_mask((ny, nx), centre, radius)
        return np.broadcast_to(plane, shape).copy()
    if kind == "column":
        width = int(rng.integers(1, 4))
        column = int(np.clip(round(cx + rng.uniform(-12, 12)), 0, nx - width))
        rows = None
        if rng.uniform() < 0.5:
            start = int(rng.integers(0, ny // 2))
            rows = (start, int(rng.integers(start + ny // 4, ny + 1)))
        return np.broadcast_to(bad_column_mask((ny, nx), column, width, rows), shape).copy()
    raise ValueError(f"unknown mask kind {kind!r}; known: {KINDS}")


def build_set(model, n, seed, kinds, dataset="mock"):
    size, bands = model.image_size, "".join(model.bands_)
    if dataset == "mock":
        truths = make_mock_legacy_survey(n, size=size, bands=bands, seed=seed)
        clean = make_mock_legacy_survey(n, size=size, bands=bands, seed=seed, sky_noise=1e-6)
        r_e = np.array([float(t.meta["HLR"]) / float(t.meta["PIXSCALE"]) for t in truths])
    else:
        truths = make_trivial_dataset(n, size=size, bands=bands, seed=seed)
        clean = truths
        r_e = np.full(n, size / 8.0)
    rms = np.stack([t.uncertainty.array[:, 0, 0] for t in truths])   # (n, band)
    masks = {}
    for j, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, 7 + KINDS.index(kind)])
        masks[kind] = np.stack([make_mask(kind, t.shape, r_e[i], rng)
                                for i, t in enumerate(truths)])
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2.0
    dist = np.hypot(yy - c, xx - c)
    core = np.stack([dist <= max(r, 1.0) for r in r_e])             # (n, y, x)
    return truths, clean, rms, masks, core, r_e


# --------------------------------------------------------------------------- fills
def run_fills(model, name, method, kw, truths, clean, rms, masks, n, n_draws, weights, seed,
              partial=None):
    """(n, K, band, y, x) float32 fills, NFE per image, seconds per image.

    With ``partial`` (a path), the fills so far are saved after every image
    and a run that was stopped resumes from them.
    """
    m = masks[:n]
    if name == "interpolate":
        t0 = time.perf_counter()
        out = np.stack([interpolate(truths[i].data, m[i]) for i in range(n)])[:, None]
        return out.astype(np.float32), 0, (time.perf_counter() - t0) / n
    if name in ("perfect-draw", "perfect-mean"):
        rng = np.random.default_rng([seed, 99])
        out = []
        for i in range(n):
            fill = np.array(clean[i].data, np.float64)
            if name == "perfect-draw":
                fill = fill + rng.normal(size=fill.shape) * rms[i][:, None, None]
            out.append(np.where(m[i], fill, truths[i].data))
        return np.stack(out)[:, None].astype(np.float32), 0, 0.0
    out, nfe, spent = [], 0, 0.0
    if partial is not None and Path(partial).exists():
        z = np.load(partial)
        out, nfe, spent = list(z["fills"]), int(z["nfe"]), float(z["seconds"]) * len(z["fills"])
    t0 = time.perf_counter() - spent
    for i in range(len(out), n):
        defaced = truths[i].copy()
        defaced.data = np.where(m[i], 100.0, truths[i].data)     # saturated / trail: unused
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, draws = inpaint(model, defaced, m[i], method=method, n_draws=n_draws,
                               seed=seed * 100_000 + i, weights=weights,
                               batch_size=n_draws, return_draws=True, **kw)
        out.append(np.stack([np.asarray(d.data, np.float32) for d in draws]))
        nfe = int(draws[0].meta["NFE"]) * n_draws
        if partial is not None:
            tmp = Path(str(partial) + ".tmp.npz")
            np.savez(tmp, fills=np.stack(out), nfe=nfe,
                     seconds=(time.perf_counter() - t0) / len(out))
            os.replace(tmp, partial)
    return np.stack(out), nfe, (time.perf_counter() - t0) / n


# --------------------------------------------------------------------------- scores
def _ratio_ci(num, den, rng, n_boot=1000):
    """Bootstrap over images of sum(num) / sum(den): (value, lo68, hi68, lo95, hi95)."""
    value = num.sum() / den.sum() if den.sum() > 0 else np.nan
    idx = rng.integers(0, len(num), size=(n_boot, len(num)))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    lo68, hi68, lo95, hi95 = np.nanpercentile(boot, [16, 84, 2.5, 97.5])
    return float(value), float(lo68), float(hi68), float(lo95), float(hi95)


def _per_image(acc, n, sel=None):
    """Per image: bright pixels, bright pixels within, sum of ceilings (optionally a subset)."""
    img, within, ceil = acc.extra["image"], acc.extra["within"], acc.extra["ceiling"]
    b = acc.bright if sel is None else acc.bright & sel
    return (np.bincount(img[b], minlength=n).astype(float),
            np.bincount(img[b], weights=within[b].astype(float), minlength=n),
            np.bincount(img[b], weights=ceil[b], minlength=n))


def photometry(truths, images):
    """measure_galaxies of ``images`` (arrays laid out like ``truths``)."""
    ccds = []
    for t, d in zip(truths, images):
        c = t.copy()
        c.data = np.asarray(d, np.float64)
        ccds.append(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return measure_galaxies(ccds)


def photometry_errors(cat_true, cat, bands):
    dmag = np.concatenate([np.abs(np.asarray(cat[f"mag_{b}"], float)
                                  - np.asarray(cat_true[f"mag_{b}"], float)) for b in bands])
    r_t = np.asarray(getattr(cat_true["r_half"], "value", cat_true["r_half"]), float)
    r_f = np.asarray(getattr(cat["r_half"], "value", cat["r_half"]), float)
    dre = np.abs(r_f - r_t) / r_t
    dmag, dre = dmag[np.isfinite(dmag)], dre[np.isfinite(dre)]
    return (float(np.median(dmag)), float(np.percentile(dmag, 90)), float(np.median(dre)),
            float(np.percentile(dre, 90)))


def score(name, fills, truths, rms, mask, core, bands, cat_true, rng, ref=None, clean=None):
    """One row of the table (a dict) for fills (n, K, band, y, x) of one method and kind."""
    n, K = fills.shape[:2]
    t_arr = np.stack([t.data for t in truths[:n]])
    noise = 0.0 if name in ("interpolate", "perfect-mean") else 1.0
    acc = inpainting_accuracy(t_arr, fills[:, 0], mask[:n], rms[:n], bands=bands,
                              fill_noise=noise)
    last = acc.table[-1]
    row = {"method": name, "n_images": n, "n_draws": K,
           "n_occluded": int(last["n_occluded"]), "n_bright": int(last["n_bright"]),
           "chi2_per_pixel": float(last["chi2_per_pixel"]),
           "noise_ceiling": float(last["noise_ceiling"]),
           "draw_ceiling": float(last["draw_ceiling"]), "ceiling": float(last["ceiling"])}
    nb_, good, ceil = _per_image(acc, n)
    row["frac_within"] = _ratio_ci(good, nb_, rng)
    row["frac_of_ceiling"] = _ratio_ci(good, ceil, rng)
    core_pix = np.broadcast_to(core[:n, None], mask[:n].shape)[np.asarray(mask[:n], bool)]
    for part, sel in (("core", core_pix), ("beside", ~core_pix)):
        nb_p, good_p, ceil_p = _per_image(acc, n, sel)
        row[f"n_bright_{part}"] = int(nb_p.sum())
        row[f"frac_within_{part}"] = float(good_p.sum() / nb_p.sum()) if nb_p.sum() else None
        row[f"frac_of_ceiling_{part}"] = (float(good_p.sum() / ceil_p.sum())
                                          if nb_p.sum() else None)
    if ref is not None:   # paired difference with interpolation on the same images
        nb_r, good_r = ref
        idx = rng.integers(0, n, size=(1000, n))
        diff = good[idx].sum(1) / nb_[idx].sum(1) - good_r[:n][idx].sum(1) / nb_r[:n][idx].sum(1)
        row["minus_interpolate"] = (float(good.sum() / nb_.sum() - good_r[:n].sum()
                                          / nb_r[:n].sum()),
                                    *[float(v) for v in np.nanpercentile(diff, [16, 84, 2.5,
                                                                                97.5])])
    if K > 1:
        mean_acc = inpainting_accuracy(t_arr, fills.mean(axis=1), mask[:n], rms[:n],
                                       bands=bands, fill_noise=np.sqrt(1.0 / K))
        row["mean_frac_within"] = float(mean_acc.table[-1]["frac_within"])
        row["mean_ceiling"] = float(mean_acc.table[-1]["ceiling"])
        cal = inpainting_calibration(t_arr, fills, mask[:n], rms[:n])[-1]
        row.update({"z_std": float(cal["z_std"]), "z_mad_std": float(cal["z_mad_std"]),
                    "coverage_68": float(cal["coverage_68"]),
                    "coverage_95": float(cal["coverage_95"]),
                    "spread_sigma": float(cal["median_spread_sigma"])})
        # photometry of the mean of the K draws (what a catalogue would measure on the
        # posterior-mean image; its yardstick is the perfect mean's row)
        cat_m = photometry(truths[:n], fills.mean(axis=1))
        (row["mean_dmag_med"], row["mean_dmag_p90"], row["mean_dre_med"],
         row["mean_dre_p90"]) = photometry_errors(cat_true[:n], cat_m, bands)
    if clean is not None:   # sky noise the draws carry: (fill - clean) / sigma on faint pixels
        c_arr = np.stack([c.data for c in clean[:n]])
        m = np.asarray(mask[:n], bool) & (c_arr < rms[:n, :, None, None])
        r = ((fills[:, 0] - c_arr) / rms[:n, :, None, None])[m]
        row["sky_noise_ratio"] = float(np.std(r)) if r.size > 10 else None
    cat = photometry(truths[:n], fills[:, 0])
    ct = cat_true[:n]
    row["dmag_med"], row["dmag_p90"], row["dre_med"], row["dre_p90"] = photometry_errors(
        ct, cat, bands)
    return row, (nb_, good)


# --------------------------------------------------------------------------- figure
def figure(path, fills, truths, mask, rms, bands, method, n_show=4):
    """The paper's Fig. 6 for the first ``n_show`` images: truth, defaced, repaired (draw 0),
    residual / sigma (r band), uncertainty (std of the draws, r band, in sigma)."""
    from matplotlib.figure import Figure
    from astro_sbgm.visualization import rgb_composite

    n_show = min(n_show, fills.shape[0])
    K = fills.shape[1]
    cols = ["truth", "defaced (mask)", f"repaired ({method}, one draw)",
            "residual / sigma (r)", f"spread of {K} draws / sigma (r)" if K > 1 else "--"]
    fig = Figure(figsize=(2.3 * len(cols), 2.3 * n_show + 0.4))
    axes = fig.subplots(n_show, len(cols), squeeze=False)
    r = list(bands).index("r") if "r" in bands else 0
    for i in range(n_show):
        t = np.asarray(truths[i].data, float)
        m = np.asarray(mask[i], bool)
        defaced = np.where(m, np.nan, t)
        rgb_t = rgb_composite(t, bands=bands)
        rgb_d = rgb_composite(np.where(m, 0.0, t), bands=bands)
        rgb_d[m.any(axis=0)] = (1.0, 0.0, 1.0)
        rgb_f = rgb_composite(fills[i, 0].astype(float), bands=bands)
        res = (fills[i, 0, r] - t[r]) / rms[i, r]
        res = np.where(m[r], res, np.nan)
        panels = [(rgb_t, {}), (rgb_d, {}), (rgb_f, {}),
                  (res, {"cmap": "RdBu_r", "vmin": -5, "vmax": 5})]
        if K > 1:
            spread = np.where(m[r], fills[i, :, r].std(axis=0, ddof=1) / rms[i, r], np.nan)
            panels.append((spread, {"cmap": "viridis", "vmin": 0, "vmax": 5}))
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(panels):
                ax.axis("off")
                continue
            im = ax.imshow(panels[j][0], origin="lower", **panels[j][1])
            if i == 0:
                ax.set_title(cols[j], fontsize="small")
            if j >= 3 and i == n_show - 1:
                fig.colorbar(im, ax=axes[:, j].tolist(), orientation="horizontal",
                             fraction=0.03, pad=0.02)
        del defaced
    fig.savefig(path, dpi=110, bbox_inches="tight")


# --------------------------------------------------------------------------- output
def _pct(v):
    return "--" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def rst_table(rows, command):
    head = ("method", "mask", "n", "K", "NFE/draw", "s/draw", "within 10% (draw)",
            "% of ceiling", "core / beside (% of ceil.)", "vs interp.", "chi2/px",
            "abs dmag med / p90", "abs dRe/Re med / p90", "sky noise", "z MAD-std",
            "cover 68 / 95")
    lines = []
    for r in rows:
        fw, fc = r["frac_within"], r["frac_of_ceiling"]
        mi = r.get("minus_interpolate")
        lines.append((
            r["method"], r["kind"], str(r["n_images"]), str(r["n_draws"]),
            str(r.get("nfe_per_image", 0) // r["n_draws"]),
            f"{r.get('seconds_per_image', 0) / r['n_draws']:.1f}",
            f"{_pct(fw[0])} ({_pct(fw[1])}-{_pct(fw[2])})",
            f"{_pct(fc[0])} ({_pct(fc[1])}-{_pct(fc[2])})",
            f"{_pct(r['frac_of_ceiling_core'])} / {_pct(r['frac_of_ceiling_beside'])}",
            "--" if mi is None else f"{100 * mi[0]:+.1f} ({100 * mi[3]:+.1f}, {100 * mi[4]:+.1f})",
            f"{r['chi2_per_pixel']:.2f}",
            f"{r['dmag_med']:.3f} / {r['dmag_p90']:.3f}",
            f"{r['dre_med']:.3f} / {r['dre_p90']:.3f}",
            "--" if r.get("sky_noise_ratio") is None else f"{r['sky_noise_ratio']:.2f}",
            "--" if "z_std" not in r else f"{r['z_mad_std']:.2f}",
            "--" if "z_std" not in r else f"{_pct(r['coverage_68'])} / {_pct(r['coverage_95'])}"))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    sep = "  ".join("=" * w for w in widths)

    def fmt(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [f"::\n\n    {command}\n", sep, fmt(head), sep] + [fmt(line) for line in lines] + [sep]
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mock-legacy-grz-64",
                   help="bundled model name or model directory")
    p.add_argument("--n", type=int, default=100, help="held-out galaxies (default 100)")
    p.add_argument("--seed", type=int, default=1001, help="seed of the held-out set")
    p.add_argument("--dataset", choices=("mock", "trivial"), default="mock")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--methods", nargs="+", default=["interpolate", "perfect-draw",
                                                    "perfect-mean", "fast"])
    p.add_argument("--spec", action="append", default=[], help="extra variant, see above")
    p.add_argument("--n-for", nargs="*", default=[],
                   help="METHOD=N or METHOD:KIND=N: fewer galaxies")
    p.add_argument("--kinds-for", nargs="*", default=[],
                   help="METHOD=kind+kind: only these mask kinds for a method")
    p.add_argument("--draws-for", nargs="*", default=[],
                   help="METHOD=K or METHOD:KIND=K: draws per image")
    p.add_argument("--n-draws", type=int, default=4)
    p.add_argument("--weights", choices=("ema", "model"), default="ema")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="bench_inpainting_work",
                   help="directory for the fills (reused when present)")
    p.add_argument("--no-run", action="store_true",
                   help="only score the fills already in --work (a stopped run's partial "
                        "fills included, on the images it reached)")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--rst", default=None, help="write the RST table here")
    p.add_argument("--figure", default=None,
                   help="write the paper's Fig. 6 (first 4 trail images) here (.png)")
    p.add_argument("--figure-method", default="fast", help="method shown in --figure")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_inpainting.py " + " ".join(
        a if " " not in a else repr(a) for a in (argv if argv is not None else
                                                 __import__("sys").argv[1:]))

    if os.path.isdir(args.model):
        model = GalaxyDiffusion.load(args.model)
    else:
        model = GalaxyDiffusion.pretrained(args.model)
    bands = tuple(model.bands_)
    truths, clean, rms, masks, core, r_e = build_set(model, args.n, args.seed, args.kinds,
                                                     args.dataset)
    cat_true = photometry(truths, [t.data for t in truths])
    n_for = {k: int(v) for k, v in (s.split("=") for s in args.n_for)}
    draws_for = {k: int(v) for k, v in (s.split("=") for s in args.draws_for)}
    kinds_for = {k: v.split("+") for k, v in (s.split("=") for s in args.kinds_for)}
    runs = [(nm, nm, {}) for nm in args.methods] + [parse_spec(s) for s in args.spec]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{args.n} held-out {args.dataset} galaxies (seed {args.seed}, {model.image_size}px, "
          f"{''.join(bands)}); model {args.model} ({getattr(model, 'n_steps_', '?')} steps, "
          f"{args.weights} weights); mask kinds {args.kinds}", flush=True)
    rows = []
    for kind in args.kinds:
        ref = None
        for name, method, kw in runs:
            if kind not in kinds_for.get(name, [kind]):
                continue
            n = min(n_for.get(f"{name}:{kind}", n_for.get(name, args.n)), args.n)
            K = 1 if name in YARDSTICKS else draws_for.get(f"{name}:{kind}",
                                                           draws_for.get(name, args.n_draws))
            path = work / f"{name}_{kind}_n{n}_k{K}_s{args.seed}.npz"
            partial = path.with_suffix(".partial.npz")
            if path.exists() or (args.no_run and partial.exists() and name not in YARDSTICKS):
                z = np.load(path if path.exists() else partial)
                fills, nfe, sec = z["fills"], int(z["nfe"]), float(z["seconds"])
                n = len(fills)
            elif args.no_run and name not in YARDSTICKS:
                continue
            else:
                fills, nfe, sec = run_fills(model, name, method, kw, truths, clean, rms,
                                            masks[kind], n, K, args.weights, args.seed,
                                            partial=partial)
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, fills=fills, nfe=nfe, seconds=sec)
                os.replace(tmp, path)
            rng = np.random.default_rng(0)
            row, per = score(name, fills, truths, rms, masks[kind], core, bands, cat_true,
                             rng, ref=None if name == "interpolate" else ref, clean=clean)
            if name == "interpolate":
                ref = per
            row.update({"kind": kind, "nfe_per_image": nfe, "seconds_per_image": sec,
                        "options": {"method": method, **kw}})
            rows.append(row)
            if args.figure and kind == "trail" and name == args.figure_method:
                figure(args.figure, fills, truths, masks[kind], rms, bands, name)
            fw, fc = row["frac_within"], row["frac_of_ceiling"]
            print(f"{kind:>6s} {name:>14s} n={n:3d} K={K}: within10 {_pct(fw[0])}% "
                  f"({_pct(fw[1])}-{_pct(fw[2])}), {_pct(fc[0])}% of ceiling "
                  f"(core {_pct(row['frac_of_ceiling_core'])}, beside "
                  f"{_pct(row['frac_of_ceiling_beside'])}), chi2 {row['chi2_per_pixel']:.2f}, "
                  f"|dmag| {row['dmag_med']:.3f}/{row['dmag_p90']:.3f}, |dRe|/Re "
                  f"{row['dre_med']:.3f}/{row['dre_p90']:.3f}, z std "
                  f"{row.get('z_std', float('nan')):.2f}, sky noise "
                  f"{row.get('sky_noise_ratio') or float('nan'):.2f}, {nfe} NFE, {sec:.1f} s/img",
                  flush=True)
            if "mean_dmag_med" in row:
                print(f"{'':>21s} mean of the {K} draws: |dmag| {row['mean_dmag_med']:.4f}/"
                      f"{row['mean_dmag_p90']:.3f}, |dRe|/Re {row['mean_dre_med']:.3f}/"
                      f"{row['mean_dre_p90']:.3f}", flush=True)
    if args.json:
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps({"command": command, "rows": rows}, indent=1))
        os.replace(tmp, args.json)
    if args.rst:
        tmp = Path(args.rst + ".tmp")
        tmp.write_text(rst_table(rows, command))
        os.replace(tmp, args.rst)
    return rows


if __name__ == "__main__":
    main()
