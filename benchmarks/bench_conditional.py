"""Galaxies to order: how well a conditional model draws the properties it is asked for.

Fine-tunes a conditional model from the bundled model (``mock-legacy-grz-64``) on its own
training data (``make_mock_legacy_survey(n, size=64, seed=13)``; the first ``--n-train``
galaxies), conditioned on properties measured with `measure_galaxies` (default
``mag_r,r_half,g_r,r_z``; the new condition embedding starts at zero, so the fine-tune
starts from the unconditional model).  Then, on a held-out catalogue (the mock with seed
1001, measured the same way), draws one galaxy per row with `sample_like` at several
guidance scales and reports, per property, the bias and RMS of measured minus requested
(mag for magnitudes and colours, per cent for ``r_half``), against the floor: the same
numbers between two measurements of the same held-out galaxy under fresh sky noise.  It
also reports the SGD of the ``sample_like`` draws against the real catalogue galaxies,
beside the SGD of the bundled (unconditional) model's draws, at equal N, and draws the
requested-vs-measured figure.

Run (the numbers of docs/conditional.rst)::

    nice python benchmarks/bench_conditional.py --out RUN \\
        --n-train 20000 --minutes 85 --condition-lr-scale 10 --dropout 0.3 \\
        --n-eval 100 --sample-steps 10 --threads 2 \\
        --figure docs/_static/conditional_requested_vs_measured.png \\
        --rst docs/conditional_table.txt

A call on a ``RUN`` whose fine-tune was stopped (``--minutes`` reached, a signal)
continues it from its newest checkpoint (``fit(resume=True)``), so a long fine-tune can run
as several calls; ``--skip-train`` re-measures a model already in ``RUN/model`` (keeping
the fine-tune's record, ``fit``, of an earlier ``RUN/results.json``);
``--candidates K`` adds rows drawn with ``sample_like(candidates=K)`` (the nearest as
measured of K draws per row) at the ``--candidate-guidance`` scales;
``--tiny`` is a smoke test (a few steps, 8 galaxies) for development.
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from astropy.table import QTable

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.exceptions import AstroSBGMConditionWarning
from astro_sbgm.metrics import measure_galaxies, synthetic_galaxy_distance
from astro_sbgm.training import latest_checkpoint

TRAIN_SEED = 13
HELD_OUT_SEED = 1001
SIZE = 64


def _values(cat, name):
    col = cat[name]
    if hasattr(col, "filled"):
        col = col.filled(np.nan)
    return np.asarray(getattr(col, "value", col), dtype=float)


def _errors(requested, measured, names):
    """Per property: bias, RMS and NMAD of measured - requested (r_half relative)."""
    out = {}
    for name in names:
        req, got = _values(requested, name), _values(measured, name)
        diff = got - req
        if name == "r_half":
            diff = diff / req
        ok = np.isfinite(diff)
        d = diff[ok]
        med = np.median(d) if d.size else np.nan
        out[name] = {"bias": float(np.mean(d)) if d.size else np.nan,
                     "rms": float(np.sqrt(np.mean(d ** 2))) if d.size else np.nan,
                     "nmad": float(1.4826 * np.median(np.abs(d - med))) if d.size else np.nan,
                     "n": int(ok.sum()), "n_dropped": int((~ok).sum()),
                     "unit": ("fraction" if name == "r_half" else
                              "mag" if name.startswith("mag") or "_" in name else "")}
    return out


def _sgd(reference, other, seed=0):
    res = synthetic_galaxy_distance(reference, other, bootstrap=100, seed=seed)
    return {"total": float(getattr(res.total, "value", res.total)),
            "bootstrap_std": float(getattr(res.bootstrap_std, "value", res.bootstrap_std)),
            "terms": {k: float(getattr(v, "value", v)) for k, v in res.terms.items()}}


def _floor(n, names, seed):
    """Two measurements of the same held-out galaxies under fresh sky noise."""
    # the same galaxies with a negligible sky (1e-4 of DR9's), then two fresh DR9 skies
    # (the galaxies' own shot noise is left out of the floor)
    clean = make_mock_legacy_survey(n, size=SIZE, seed=seed, sky_noise=1e-4)
    noisy = make_mock_legacy_survey(1, size=SIZE, seed=seed)[0]
    sigma = np.asarray(noisy.uncertainty.array).reshape(len(noisy.data), -1)[:, 0]
    rng = np.random.default_rng(12345)
    data = np.stack([c.data for c in clean]).astype(np.float64)
    cats = []
    for _ in range(2):
        draw = data + rng.normal(size=data.shape) * sigma[None, :, None, None]
        cats.append(measure_galaxies(draw.astype(np.float32), bands="grz", morphology=True))
    return _errors(cats[0], cats[1], names), sigma


def _label(scale, candidates=1):
    """A row's name: the guidance scale, and the candidates kept from when above 1."""
    text = f"{scale:g}" + (" (unconditional)" if scale == 0 else "")
    return text + (f", nearest of {candidates}" if candidates > 1 else "")


def _scale_of(label):
    """The guidance scale of a row's name (`_label`)."""
    return float(label.split()[0].rstrip(","))


def _figure(path, requested, measured, names, scales):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"mag_r": "r magnitude [mag]", "r_half": "R_e [arcsec]", "g_r": "g - r [mag]",
              "r_z": "r - z [mag]",
              "ellipticity": "ellipticity"}
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.7))
    colours = {(0.0, 1): "0.6", (1.0, 1): "tab:blue", (2.0, 1): "tab:orange",
               (4.0, 1): "tab:red"}
    for ax, name in zip(np.atleast_1d(axes), names):
        req = _values(requested, name)
        for key in scales:
            got = _values(measured[key], name)
            ax.scatter(req, got, s=7, alpha=0.7,
                       color=colours.get(key, "tab:green" if key[1] > 1 else None),
                       label="s = " + _label(*key))
        every = np.concatenate([req] + [_values(measured[key], name) for key in scales])
        lo, hi = np.nanpercentile(every, [1, 99])
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"requested {labels.get(name, name)}")
        ax.set_ylabel(f"measured {labels.get(name, name)}")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rst(results, names):
    """The results as an RST table (bias / RMS per property, per guidance scale)."""
    def cell(e, name):
        if name == "r_half":
            return f"{100 * e['bias']:+.1f} / {100 * e['rms']:.1f} %"
        return f"{e['bias']:+.3f} / {e['rms']:.3f}"

    head = ["guidance s", "NFE"] + [f"{n} bias / RMS" for n in names] + ["SGD vs catalogue"]
    rows = [["floor (same galaxy, fresh sky)", "-"]
            + [cell(results["floor"][n], n) for n in names] + ["-"]]
    for s, r in results["guidance"].items():
        sgd = r["sgd_vs_catalogue"]
        rows.append([s, str(r["nfe"])]
                    + [cell(r["errors"][n], n) for n in names]
                    + [f"{sgd['total']:.3f} +- {sgd['bootstrap_std']:.3f}"])
    b = results.get("bundled_unconditional_sgd")
    if b is not None:
        sgd = f"{b['total']:.3f} +- {b['bootstrap_std']:.3f}"
        rows.append(["bundled model, unconditional", "-"] + ["-"] * len(names) + [sgd])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = " ".join("=" * w for w in widths)
    fmt = lambda r: " ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line, fmt(head), line] + [fmt(r) for r in rows] + [line, ""])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="run folder (checkpoints, model, results)")
    p.add_argument("--conditions", default="mag_r,r_half,g_r,r_z")
    p.add_argument("--base", default=None,
                   help="saved model to fine-tune (default: the bundled model); a "
                        "conditional one is given the new conditions after its own")
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--steps", type=int, default=100_000, help="fine-tune steps (upper bound)")
    p.add_argument("--minutes", type=float, default=20.0, help="fine-tune wall-clock limit")
    p.add_argument("--lr-warmup", type=int, default=20)
    p.add_argument("--keep-checkpoints", type=int, default=2,
                   help="checkpoints kept (the newest; 120 MB each, one per 50 steps)")
    p.add_argument("--dropout", type=float, default=0.15)
    p.add_argument("--condition-lr-scale", type=float, default=1.0,
                   help="learning rate of the new condition embedding / the network's")
    p.add_argument("--n-eval", type=int, default=100)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--guidance", default="0,1,2,4")
    p.add_argument("--candidates", type=int, default=1,
                   help="also draw with sample_like(candidates=K): the nearest as measured "
                   "of K draws per row (rows 'S, nearest of K')")
    p.add_argument("--candidate-guidance", default="1",
                   help="guidance scales drawn with --candidates (default 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--figure", default=None)
    p.add_argument("--rst", default=None, help="write the results table (RST) here")
    p.add_argument("--prepare-only", action="store_true",
                   help="only make and measure the training set (cached in OUT)")
    p.add_argument("--tiny", action="store_true", help="smoke test")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [c.strip() for c in args.conditions.split(",") if c.strip()]
    scales = [float(s) for s in args.guidance.split(",")]
    if args.tiny:
        args.n_train, args.steps, args.n_eval, args.sample_steps = 16, 2, 8, 3
    results = {"command": "python benchmarks/bench_conditional.py " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:]),
        "conditions": names, "n_train": args.n_train, "n_eval": args.n_eval,
        "sample_steps": args.sample_steps, "threads": args.threads}

    # ------------------------------------------------------------------ fine-tune
    model_dir = out / "model"
    if not args.skip_train:
        t0 = time.time()
        cache = out / f"train_{args.n_train}.npz"
        table_file = out / f"train_{args.n_train}.ecsv"
        if cache.exists():
            with np.load(cache) as f:
                x = f["x"]
        else:
            x = np.stack([c.data for c in make_mock_legacy_survey(
                args.n_train, size=SIZE, seed=TRAIN_SEED)]).astype(np.float32)
            np.savez(cache, x=x)
        table = QTable.read(table_file) if table_file.exists() else None
        if table is None or not set(names) <= set(table.colnames):
            # what fit measures itself, once (morphology: ellipticity, ... can be conditions)
            table = measure_galaxies(x, bands="grz", morphology=True)[names]
            table.write(table_file, overwrite=True)
        results["data_seconds"] = round(time.time() - t0, 1)
        if args.prepare_only:
            print(f"training set of {len(x)} cached in {out} ({results['data_seconds']} s)")
            return
        model = (GalaxyDiffusion.pretrained(device="cpu") if args.base is None
                 else GalaxyDiffusion.load(args.base, device="cpu"))
        # a call after a stopped one continues its checkpoints (fit(resume=True)); the
        # fine-tune counts from the model its first call began with, which fit saved in
        # every checkpoint's run configuration
        record = latest_checkpoint(out / "checkpoints")
        resume = record is not None
        if resume:
            base_steps = int(json.loads(record.read_text())["config"]["steps_before"])
            print(f"resuming the fine-tune in {out / 'checkpoints'}")
        else:
            base_steps = int(model.n_steps_)
        model.set_params(conditions=names, condition_dropout=args.dropout,
                         lr_warmup=args.lr_warmup,
                         condition_lr_scale=args.condition_lr_scale)
        t0 = time.time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AstroSBGMConditionWarning)
            model.fit(x, bands="grz", steps=args.steps, warm_start=True, progress=False,
                      conditions=table, checkpoint_dir=out / "checkpoints",
                      checkpoint_every=50, time_limit=60.0 * args.minutes,
                      resume=resume, keep_checkpoints=args.keep_checkpoints)
        results["fit"] = {"seconds": round(time.time() - t0, 1), "resumed": resume,
                          "base_model_steps": base_steps,
                          "steps": int(model.n_steps_) - base_steps,
                          "images_seen": (int(model.n_steps_) - base_steps) * model.batch_size,
                          "final_loss_mean_last50": float(np.mean(model.history_[-50:])),
                          "warnings": [str(w.message) for w in caught],
                          "conditions": model.conditions_.to_dict()}
        model.save(model_dir, overwrite=True)
        print(json.dumps(results["fit"], indent=1))
    elif (out / "results.json").exists():
        # re-measuring: keep the fine-tune's record, and the rows not measured again
        earlier = json.loads((out / "results.json").read_text())
        for field in ("fit", "data_seconds"):
            if field in earlier:
                results[field] = earlier[field]
        results["fit_command"] = earlier.get("fit_command", earlier.get("command"))
        kept_rows = {_label(_scale_of(label), row.get("candidates", 1)):
                     {**row, "command": row.get("command", earlier.get("command"))}
                     for label, row in earlier.get("guidance", {}).items()}
    if not args.skip_train or not (out / "results.json").exists():
        kept_rows = {}
    model = GalaxyDiffusion.load(model_dir, device="cpu")
    base = GalaxyDiffusion.pretrained(device="cpu")

    # ------------------------------------------------------------------ held-out requests
    held = make_mock_legacy_survey(args.n_eval, size=SIZE, seed=HELD_OUT_SEED)
    requested = measure_galaxies(held, morphology=True)
    ok = np.all([np.isfinite(_values(requested, n)) for n in names], axis=0)
    requested_ok = requested[ok]
    results["n_requests"] = int(ok.sum())
    floor, sigma = _floor(args.n_eval, names, HELD_OUT_SEED)
    results["floor"] = floor
    print("floor", json.dumps(floor))

    measured, per_scale = {}, {}

    def report():
        """Write what is measured so far (a run cut short keeps its results)."""
        rows = {**kept_rows, **{_label(*key): per_scale[key] for key in per_scale}}
        results["guidance"] = dict(sorted(rows.items(), key=lambda item: (
            _scale_of(item[0]), item[1].get("candidates", 1))))
        plain = [key for key in per_scale if key[1] == 1 and key[0] != 0]
        best = min(plain, key=lambda key: per_scale[key]["errors"][names[0]]["rms"],
                   default=None)
        results["best_guidance"] = None if best is None else best[0]
        (out / "results.json").write_text(json.dumps(results, indent=1))
        if args.figure and measured:
            shown = [key for key in ((0.0, 1), (1.0, 1), best, selected) if key in measured]
            _figure(args.figure, requested_ok, measured, names, list(dict.fromkeys(shown)))
        if args.rst:
            Path(args.rst).write_text(_rst(results, names))

    # s = 1 first, then the bundled model's SGD, then the other scales, then the draws
    # that keep the nearest of K candidates
    order = ([(s, 1) for s in scales if s == 1.0] + ["bundled"]
             + [(s, 1) for s in scales if s != 1.0])
    if args.candidates > 1:
        order += [(float(s), args.candidates) for s in args.candidate_guidance.split(",")]
    selected = None
    for key in order:
        t0 = time.time()
        if key == "bundled":
            plain = base.sample(int(ok.sum()), seed=0, steps=args.sample_steps,
                                progress=False)
            results["bundled_unconditional_sgd"] = _sgd(
                requested_ok, measure_galaxies(plain, morphology=True))
            results["bundled_seconds"] = round(time.time() - t0, 1)
            print("bundled", json.dumps(results["bundled_unconditional_sgd"]), flush=True)
            report()
            continue
        s, k = key
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstroSBGMConditionWarning)
            fakes = model.sample_like(requested_ok, guidance_scale=s, seed=0,
                                      steps=args.sample_steps, progress=False, candidates=k)
        measured[key] = measure_galaxies(fakes, morphology=True)
        per_scale[key] = {"errors": _errors(requested_ok, measured[key], names),
                          "sgd_vs_catalogue": _sgd(requested_ok, measured[key]),
                          "seconds": round(time.time() - t0, 1),
                          "nfe": int(fakes[0].meta["NFE"]), "candidates": k}
        print(_label(*key), json.dumps(per_scale[key]), flush=True)
        if k > 1 and (selected is None or per_scale[key]["errors"][names[0]]["rms"]
                      < per_scale[selected]["errors"][names[0]]["rms"]):
            selected = key   # the figure shows the best of the candidate rows
        report()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
