"""Measure a trained model for its model card: SGD, Cohen's d, morphology, samplers, memorisation.

Usage (the bundled model's card was made with)::

    python benchmarks/eval_pretrained.py --model ../pretrained-run/model \\
        --run ../pretrained-run --n 500 --out docs/_static --json card-quality.json

What it measures, every comparison at equal N and on held-out mock galaxies
the model never saw (``make_mock_legacy_survey`` seeds 1001 and 1002; the
bundled model trained on seed 13):

* the SGD of ``n`` generated galaxies against ``n`` raw held-out galaxies
  (what a simulation user gets) and against the same galaxies round-tripped
  through the model's flux scaling (the model's own error), with bootstrap
  spreads; the real-vs-real baseline (two independent held-out sets of
  ``n``); the normalisation floor (held-out vs its round trip);
* Cohen's d of every SGD property; the blue fraction (g - r < 0.7) and the
  blue galaxies' median r - z in bins of r magnitude, with bootstrap
  intervals; ellipticity and concentration
  (``measure_galaxies(morphology=True)``) and the fraction at e > 0.5;
* the per-sampler table (dpmpp-2m and heun at about 10, 20, 50 network
  evaluations) on ``--n-samplers`` galaxies against as many held-out ones,
  with each row's fraction of thin discs (e > 0.5);
* the SGD and the thin-disc fraction against images seen, from the run's
  checkpoints (``--run``);
* a nearest-neighbour memorisation check against the training set;
* the time to draw 64 galaxies with the default sampler.

For a conditional model, ``--like CATALOGUE`` draws the ``n`` galaxies with
``sample_like`` from ``n`` rows picked at random from a catalogue of the
*training* galaxies' measured properties (e.g. the ``train_20000.ecsv`` that
``bench_conditional.py`` caches): the unconditional distribution as the
conditional model times the training set's distribution of the conditions
(``--like-guidance``, default 1), scored against the same held-out sets.
Without ``--like``, a conditional model that stores a population of
conditions (``model.population_``) draws from it, as ``model.sample`` does
(rows picked per galaxy, with replacement); the JSON records its size.

Figures (8x8 montages, property histograms, nearest neighbours, the training
curve) go to ``--out``; the numbers to ``--json``.
"""

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.metrics import (baseline_sgd, measure_galaxies, memorisation_check,
                                plot_nearest_neighbours, plot_property_histograms,
                                synthetic_galaxy_distance)
from astro_sbgm.visualization import plot_montage

HELD_OUT_SEEDS = (1001, 1002)
TRAIN_SEED = 13


def _measure(images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return measure_galaxies(images, morphology=True)


def _sgd(a, b, bootstrap=0, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return synthetic_galaxy_distance(a, b, bootstrap=bootstrap, seed=seed)


def _summary(res):
    return {"total": round(float(res.total), 4),
            "bootstrap_std": None if res.n_bootstrap == 0 else round(float(res.bootstrap_std), 4),
            "terms": {k: round(float(getattr(v, "value", v)), 4) for k, v in res.terms.items()},
            "cohens_d": {k: round(float(v), 3) for k, v in res.cohens_d.items()},
            "n": [int(res.n_used_a), int(res.n_used_b)]}


def _column(cat, name):
    """A catalogue column as a float array (Quantity units dropped)."""
    return np.asarray(getattr(cat[name], "value", cat[name]), float)


def _fraction(cat, column, above):
    v = _column(cat, column)
    v = v[np.isfinite(v)]
    return float(np.mean(v > above)) if v.size else float("nan")


def _colour_by_magnitude(cat, edges, blue_below=0.7, n_boot=200, seed=0):
    """Per r-magnitude bin: galaxies, blue fraction (g - r < ``blue_below``) and the
    blue galaxies' median r - z, with bootstrap 68% intervals over galaxies."""
    mag, gr, rz = (_column(cat, name) for name in ("mag_r", "g_r", "r_z"))
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        idx = np.flatnonzero((mag >= lo) & (mag < hi) & np.isfinite(gr) & np.isfinite(rz))
        row = {"mag_r": [float(e) if np.isfinite(e) else None for e in (lo, hi)],
               "n": int(idx.size)}
        if idx.size:
            def stats(pick):
                blue = gr[pick] < blue_below
                return (blue.mean(), np.median(rz[pick][blue]) if blue.any() else np.nan)

            boots = np.array([stats(rng.choice(idx, idx.size)) for _ in range(n_boot)])
            frac, med = stats(idx)
            row.update({"blue_fraction": round(float(frac), 3),
                        "blue_fraction_68": np.round(np.nanpercentile(boots[:, 0], [16, 84]),
                                                     3).tolist(),
                        "blue_r_z": round(float(med), 3),
                        "blue_r_z_68": np.round(np.nanpercentile(boots[:, 1], [16, 84]),
                                                3).tolist()})
        rows.append(row)
    return rows


def _sampler_rows(text):
    rows = []
    for item in filter(None, text.split(",")):
        name, _, steps = item.partition(":")
        if not steps.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r} is not SAMPLER:STEPS (e.g. heun:6)")
        rows.append((name, int(steps)))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="saved model folder or bundled model name")
    p.add_argument("--run", help="the training run folder (checkpoints, cached training set)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--n-samplers", type=int, default=200)
    p.add_argument("--n-curve", type=int, default=200)
    p.add_argument("--curve-points", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="default sampler's steps")
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--skip", default="", help="comma list of parts to skip: samplers,curve,"
                   "memorisation")
    p.add_argument("--samplers", type=_sampler_rows,
                   default="dpmpp-2m:10,dpmpp-2m:20,dpmpp-2m:50,heun:6,heun:11,heun:26",
                   help="the samplers part's rows, comma-separated SAMPLER:STEPS")
    p.add_argument("--curve-from", help="JSON of curve points measured before (same n-curve, "
                   "held-out set and sampler; e.g. those of the model a continued run started "
                   "from): checkpoints at steps already measured are skipped")
    p.add_argument("--steps-before", type=int, default=None,
                   help="the steps of the model a fine-tune in --run started from (its "
                   "checkpoints count from 0; default: read from RUN/run.json)")
    p.add_argument("--like", metavar="CATALOGUE",
                   help="conditional model: draw with sample_like from random rows of this "
                   "catalogue of the training galaxies' properties")
    p.add_argument("--like-guidance", type=float, default=1.0)
    p.add_argument("--out", default="docs/_static")
    p.add_argument("--prefix", default="pretrained")
    p.add_argument("--json", default="card-quality.json")
    a = p.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    if a.like:   # the sampler table and the curve draw unconditionally
        skip |= {"samplers", "curve"}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    path = Path(a.model)
    model = (GalaxyDiffusion.load(path) if path.exists() else GalaxyDiffusion.pretrained(a.model))
    size = model.image_size
    res = {"model": str(a.model), "n_steps": int(model.n_steps_),
           "held_out_seeds": list(HELD_OUT_SEEDS), "n": a.n}
    if model.population_ is not None and not a.like:
        res["population_rows"] = len(model.population_)

    held = [make_mock_legacy_survey(a.n, size=size, seed=s) for s in HELD_OUT_SEEDS]
    cats = [_measure(h) for h in held]
    held_rt = model.round_trip(held[0])
    cat_rt = _measure(held_rt)

    if a.like:   # the conditional model under the training set's distribution of conditions
        from astropy.table import QTable

        train = QTable.read(a.like)
        finite = np.all([np.isfinite(_column(train, c)) for c in model.conditions_.names],
                        axis=0)
        rows = np.random.default_rng(0).choice(np.flatnonzero(finite), a.n, replace=False)
        res["like"] = {"catalogue": str(a.like), "rows": int(finite.sum()),
                       "guidance": a.like_guidance}

        def draw(n, seed):
            return model.sample_like(train[rows[:n]], guidance_scale=a.like_guidance,
                                     steps=a.steps, seed=seed, progress=False)
    else:
        def draw(n, seed):
            return model.sample(n, steps=a.steps, seed=seed, progress=False)
    t0 = time.perf_counter()
    draw(64, 123)
    res["seconds_64"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    fakes = draw(a.n, 0)
    res["seconds_n"] = round(time.perf_counter() - t0, 1)
    res["sampler"] = {"name": fakes[0].meta["SAMPLER"], "steps": int(fakes[0].meta["NSTEPS"]),
                      "nfe": int(fakes[0].meta["NFE"])}
    cat_fake = _measure(fakes)

    res["sgd_raw"] = _summary(_sgd(cat_fake, cats[0], a.bootstrap, 1))
    res["sgd_round_tripped"] = _summary(_sgd(cat_fake, cat_rt, a.bootstrap, 2))
    res["baseline"] = _summary(_sgd(cats[1], cats[0], a.bootstrap, 3))
    res["baseline_split"] = round(float(baseline_sgd(cats[0], seed=4, n=a.n // 2).total), 4)
    res["floor"] = _summary(_sgd(cat_rt, cats[0]))
    res["perfect_model_rt"] = _summary(_sgd(_measure(model.round_trip(held[1])), cat_rt))
    res["ratio_raw"] = round(res["sgd_raw"]["total"] / res["baseline"]["total"], 3)
    res["ratio_round_tripped"] = round(res["sgd_round_tripped"]["total"]
                                       / res["baseline"]["total"], 3)
    res["morphology"] = {
        name: {"e_gt_0.5": round(_fraction(c, "ellipticity", 0.5), 4),
               "median_ellipticity": round(float(np.nanmedian(c["ellipticity"])), 4),
               "median_concentration": round(float(np.nanmedian(c["concentration"])), 4)}
        for name, c in (("generated", cat_fake), ("held_out", cats[0]),
                        ("held_out_2", cats[1]), ("held_out_round_tripped", cat_rt))}
    print(json.dumps({k: res[k] for k in ("sgd_raw", "sgd_round_tripped", "baseline",
                                          "floor", "ratio_raw", "morphology")}, indent=1))
    # where the colours differ: blue fraction and blue r - z against r magnitude
    edges = [-np.inf, 17.5, 18.0, 18.5, 19.0, np.inf]
    res["colour_by_magnitude"] = {
        "blue": "g - r < 0.7", "edges": [None if not np.isfinite(e) else e for e in edges],
        **{name: _colour_by_magnitude(c, edges)
           for name, c in (("generated", cat_fake), ("held_out", cats[0]),
                           ("held_out_2", cats[1]))}}
    _write(a.json, res)   # after every part: a later part that fails loses only itself

    # figures: montages, histograms
    fig = plot_montage(fakes[:64], ncols=8, method="lupton")
    fig.savefig(out / f"{a.prefix}_generated.png", dpi=80)
    fig = plot_montage(held[0][:64], ncols=8, method="lupton")
    fig.savefig(out / f"{a.prefix}_real.png", dpi=80)
    cols = ["mag_g", "mag_r", "mag_z", "r_half", "g_r", "r_z", "ellipticity", "concentration"]
    fig = plot_property_histograms(cats[0], cat_fake, columns=cols,
                                   labels=("held-out mock", "generated"))
    fig.savefig(out / f"{a.prefix}_histograms.png", dpi=80)

    if "memorisation" not in skip:
        cache = (sorted(Path(a.run).glob(f"train-seed{TRAIN_SEED}-*.npy")) if a.run else [])
        train = (np.load(cache[0], mmap_mode="r")[:5000] if cache else
                 np.stack([im.data for im in make_mock_legacy_survey(5000, size=size,
                                                                     seed=TRAIN_SEED)]))
        norm = model.scaler_.transform
        mem = memorisation_check(np.stack([f.data for f in fakes[:200]]), np.asarray(train),
                                 np.stack([h.data for h in held[1][:200]]), normalize=norm)
        res["memorisation"] = {"n_train_searched": int(len(train)),
                               "median_ratio": round(mem.median_ratio, 3),
                               "copy_fraction": round(mem.copy_fraction, 4),
                               "p_value": round(mem.p_value, 4), "memorised": mem.memorised}
        fig = plot_nearest_neighbours(fakes[:6], np.asarray(train),
                                      mem.sample_indices[:6, None],
                                      mem.sample_distances[:6, None])
        fig.savefig(out / f"{a.prefix}_neighbours.png", dpi=80)
        print("memorisation", res["memorisation"])
        _write(a.json, res)

    if "samplers" not in skip:
        m = a.n_samplers
        base = _sgd(cats[1][:m], cats[0][:m])
        rows = [{"sampler": "real vs real", "steps": None, "nfe": 0,
                 "sgd": round(float(base.total), 4),
                 "e_gt_0.5": round(_fraction(cats[0][:m], "ellipticity", 0.5), 4)}]
        for sampler, steps in a.samplers:
            t0 = time.perf_counter()
            if (sampler, steps) == (res["sampler"]["name"], res["sampler"]["steps"]):
                # the same galaxies as the first m of the main set (per-galaxy streams)
                f, sec = fakes[:m], res["seconds_n"] * m / a.n
            else:
                f = model.sample(m, sampler=sampler, steps=steps, seed=0, progress=False)
                sec = time.perf_counter() - t0
            cat = _measure(f)
            r = _sgd(cat, cats[0][:m], 50, 5)
            rows.append({"sampler": sampler, "steps": steps, "nfe": int(f[0].meta["NFE"]),
                         "sgd": round(float(r.total), 4),
                         "e_gt_0.5": round(_fraction(cat, "ellipticity", 0.5), 4),
                         "bootstrap_std": round(float(r.bootstrap_std), 4),
                         "max_abs_d": round(max(abs(v) for v in r.cohens_d.values()), 3),
                         "cohens_d": {k: round(float(v), 3) for k, v in r.cohens_d.items()},
                         "seconds": round(sec, 1)})
            print(rows[-1])
        res["samplers"] = {"n": m, "rows": rows}
        _write(a.json, res)

    if "curve" not in skip and a.run:
        records = sorted(Path(a.run, "checkpoints").glob("checkpoint-*.json"))
        pick = [records[int(i)] for i in np.unique(np.linspace(
            0, len(records) - 1, min(a.curve_points, len(records))).round())]
        m = a.n_curve
        base = float(_sgd(cats[1][:m], cats[0][:m]).total)
        points = _curve_points(a.curve_from) if a.curve_from else []
        done = {q["step"] for q in points}
        # a run that continued another model (train_pretrained.py --init-from) counts its
        # checkpoints from 0: the model's steps are those before plus the checkpoint's
        run_info = Path(a.run, "run.json")
        calls = json.loads(run_info.read_text()).get("calls", []) if run_info.exists() else []
        offset = (a.steps_before if a.steps_before is not None else
                  int(calls[0].get("steps_before", 0)) if calls else 0)
        for rec in pick:
            info = json.loads(rec.read_text())
            info["step"] = offset + int(info["step"])
            if int(info["step"]) in done:
                continue
            if int(info["step"]) == res["n_steps"]:   # the model itself: its first m galaxies
                f = fakes[:m]
            else:
                tensors = load_file(str(rec.with_suffix(".safetensors")))
                model.ema_net_.load_state_dict({k[4:]: v for k, v in tensors.items()
                                                if k.startswith("ema.")})
                f = model.sample(m, steps=a.steps, seed=0, progress=False)
            cat = _measure(f)
            sgd = float(_sgd(cat, cats[0][:m]).total)
            points.append({"step": int(info["step"]),
                           "images_seen": int(info["step"]) * int(info["batch_size"]),
                           "sgd": round(sgd, 4),
                           "e_gt_0.5": round(_fraction(cat, "ellipticity", 0.5), 4)})
            print(points[-1])
        points.sort(key=lambda q: q["step"])
        res["curve"] = {"n": m, "baseline": round(base, 4), "points": points}
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([q["images_seen"] for q in points], [q["sgd"] for q in points], "o-",
                label=f"model ({m} vs {m})")
        ax.axhline(base, color="k", ls="--", label=f"real vs real ({m} vs {m})")
        ax.set_xlabel("training images seen")
        ax.set_ylabel("SGD against held-out")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{a.prefix}_curve.png", dpi=90)

    _write(a.json, res)
    print(f"wrote {a.json}")


def _curve_points(path):
    """Curve points of an earlier evaluation: its whole JSON or only its ``curve``."""
    saved = json.loads(Path(path).read_text())
    saved = saved.get("curve", saved)
    if "points" not in saved:
        raise SystemExit(f"--curve-from {path}: no curve points in it (a JSON written by "
                         "--json, or its 'curve' entry, is expected)")
    return list(saved["points"])


def _write(path, res):
    """Write the results JSON atomically."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
