"""The ``astro-sbgm`` command.

Sub-commands:

``quickstart``
    Make a mock Legacy Survey set, train a small model on it (or use a
    trained one with ``--model``), draw galaxies, and write FITS files, the
    model and a PNG montage (real beside generated) to an output folder.
``train``
    Train a model on FITS cutouts (files, directories or globs) or on mock
    data, with checkpoints and resume.
``sample``
    Draw galaxies from a saved model into FITS files, one per galaxy named by
    its index, with an index table; a rerun skips the galaxies already on
    disk, and under ``torchrun`` the processes share the work.
``measure``, ``sgd``
    Photometry catalogues and the Synthetic Galaxy Distance (`astro_sbgm.metrics`).
``score``
    Log-likelihood and anomaly score of images under a model.
``inpaint``, ``transfer``
    Fill masked pixels; make a picture or another survey's image look like the
    model's survey (`astro_sbgm._cli_inpaint` builds their parsers).

Run ``astro-sbgm COMMAND --help`` for the options of each; the docs' command-line
reference is generated from `build_parser`.  One spelling has one meaning in
every sub-command (`astro_sbgm._cli_common` adds the shared options): ``--seed``
seeds every random number the command draws, ``--steps`` counts sampler steps,
``-n`` galaxies to draw, ``--input-bands`` names the bands of input files,
``--quiet`` hides the progress bars, and files written one per galaxy are named
``STEM_NNNNNN.fits``.  Each sub-command's parser sets ``func``, which `main`
calls.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from ._cli_common import (add_count, add_deprecated, add_input_bands, add_model_source,
                          add_progress, add_sampler_options, add_seed, expand_inputs,
                          load_model, numbered_name)
from ._cli_inpaint import add_inpaint_parser, add_transfer_parser
from ._serialization import atomic_write, atomic_write_text
from .estimator import PRESETS, QUICKSTART

__all__ = ["main", "build_parser", "QUICKSTART", "in_cli_words", "KEYWORD_FLAGS",
           "MODEL_DEFAULTS"]

#: The model options of ``astro-sbgm train`` when neither the option nor
#: ``--preset`` sets them.  With ``--preset NAME`` the preset's values (see
#: `astro_sbgm.PRESETS`) replace these, and an option given on the command line
#: replaces the preset's value.
MODEL_DEFAULTS = dict(image_size=64, dim=32, dim_mults=(1, 2, 4, 8), objective="v",
                      batch_size=16, learning_rate=2e-4)


def _add_model_options(p):
    g = p.add_argument_group(
        "model", "Without --preset, the defaults below; with --preset NAME, the preset's "
        "values, and every option given here replaces the preset's value.")
    g.add_argument("--preset", choices=sorted(PRESETS),
                   help="start from a named hyper-parameter set (astro_sbgm.PRESETS)")
    g.add_argument("--size", type=int, default=None,
                   help=f"image size in pixels (default {MODEL_DEFAULTS['image_size']})")
    g.add_argument("--bands", default="grz",
                   help="the bands of the new model, in order (default grz); the bands of "
                   "input files that do not record them are --input-bands")
    g.add_argument("--dim", type=int, default=None,
                   help=f"U-Net base width (default {MODEL_DEFAULTS['dim']})")
    g.add_argument("--dim-mults", default=None,
                   help="per-level width multipliers (default "
                   f"{','.join(map(str, MODEL_DEFAULTS['dim_mults']))})")
    g.add_argument("--objective", default=None, choices=["eps", "v", "edm"],
                   help=f"training objective (default {MODEL_DEFAULTS['objective']})")
    g.add_argument("--batch-size", type=int, default=None,
                   help=f"training batch size (default {MODEL_DEFAULTS['batch_size']})")
    g.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default {MODEL_DEFAULTS['learning_rate']})")
    add_seed(g, "the model's initial weights, the data order, the noise of training and "
             "the --mock galaxies")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")


def _add_sample_options(p, n_default=16):
    g = p.add_argument_group("sampling")
    add_count(g, n_default)
    add_sampler_options(g, "dpmpp-2m", steps_default="20; the schedule's T, 1000, for ddpm")
    add_seed(g, "the galaxies: galaxy i of a seed is the same whatever --batch-size or "
             "the number of processes")
    add_deprecated(g, "--sample-seed", "seed", "use --seed", type=int)


def build_parser():
    """The argparse parser of ``astro-sbgm``, with every sub-command.

    Returns
    -------
    argparse.ArgumentParser
        The parser (the docs' command-line reference is generated from it).
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="astro-sbgm", description="Score-based generative models for galaxy images.")
    parser.add_argument("--version", action="version", version=f"astro_sbgm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    q = sub.add_parser("quickstart", help="draw galaxies from the bundled model and measure them",
                       description="Draw galaxies from the model bundled with the package "
                       "(or --model DIR, or --train: train a small model on mock data first, "
                       "about 8 minutes on 2 CPU cores), write FITS files, a montage, a "
                       "measured catalogue and the SGD against fresh mock galaxies, and "
                       "remove a simulated satellite trail from one held-out galaxy.")
    q.add_argument("-o", "--output", default="astro-sbgm-quickstart",
                   help="output folder (default %(default)s)")
    src = add_model_source(q, required=False)
    src.add_argument("--train", action="store_true",
                     help="train the small quickstart model (--preset quickstart) on mock "
                     "data first (minutes)")
    q.add_argument("--n-train", type=int, default=QUICKSTART["n_train"],
                   help="mock galaxies to train on with --train (default %(default)s)")
    q.add_argument("--train-steps", type=int, default=QUICKSTART["steps"],
                   help="most training steps (default %(default)s)")
    q.add_argument("--minutes", type=float, default=QUICKSTART["minutes"],
                   help="training time budget in minutes (default %(default)s); training "
                   "stops at whichever of --train-steps and --minutes comes first")
    add_count(q, QUICKSTART["n_samples"])
    add_seed(q, "the training and its mock galaxies with --train, the galaxies drawn, the "
             "fresh mock galaxies they are compared with and the satellite trail", default=1)
    q.add_argument("--overwrite", action="store_true", help="replace an earlier quickstart")
    add_progress(q)
    q.set_defaults(func=_cmd_quickstart)

    t = sub.add_parser("train", help="train a model on FITS cutouts or mock data")
    t.add_argument("inputs", nargs="*", help="FITS files, directories or globs, a "
                   "make_cutouts index.ecsv or a cutout store (one large folder, index or "
                   "store is streamed from disk)")
    t.add_argument("--mock", type=int, metavar="N", help="train on N mock galaxies instead")
    t.add_argument("-o", "--output", required=True, help="folder for the saved model")
    t.add_argument("--train-steps", type=int, default=10_000)
    t.add_argument("--minutes", type=float, help="stop training after this many minutes")
    t.add_argument("--checkpoint-dir", help="checkpoint folder (default OUTPUT/checkpoints)")
    t.add_argument("--checkpoint-every", type=int, default=1000)
    t.add_argument("--keep-checkpoints", type=int, default=None, metavar="K",
                   help="keep only the newest K checkpoints (default: all)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the model and checkpoints of an earlier run in OUTPUT")
    t.add_argument("--input-bands", dest="input_bands", metavar="BANDS", default=None,
                   help="band names of the input files, in order, for files that do not "
                   "record them (BANDS or BANDn cards)")
    t.add_argument("--conditions", metavar="COLUMNS", default=None,
                   help="train a conditional model on these measure_galaxies columns, "
                   "measured on the training images (e.g. mag_r,r_half,g_r,r_z); draw "
                   "to order with 'astro-sbgm sample --like CATALOGUE' (without --like, "
                   "sample draws the properties from the training set's)")
    t.add_argument("--condition-dropout", type=float, default=None, metavar="P",
                   help="fraction of conditions dropped in training (default 0.15)")
    add_progress(t)
    _add_model_options(t)
    t.set_defaults(func=_cmd_train)

    s = sub.add_parser(
        "sample", help="draw galaxies from a saved model into FITS files",
        description="Draw galaxies into OUTPUT/sample_NNNNNN.fits (NNNNNN = the galaxy's "
        "index; galaxy i of a seed is the same whatever the batch or the number of "
        "processes) and write OUTPUT/index.ecsv. Run again with the same settings to "
        "finish an interrupted run: galaxies already on disk are skipped. Under torchrun "
        "(torchrun --nproc_per_node=N -m astro_sbgm.cli sample ...) the processes split "
        "the indices.")
    add_model_source(s)
    s.add_argument("-o", "--output", required=True, help="folder for the FITS files")
    s.add_argument("--batch-size", type=int, default=None,
                   help="galaxies per network batch (default 16 on a CPU, 64 on a GPU); the "
                   "galaxies do not depend on it")
    s.add_argument("--device", default="auto",
                   help="auto (default), cpu, cuda; under torchrun each process takes "
                   "cuda:LOCAL_RANK")
    s.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: network under bfloat16 autocast on CUDA (default fp32)")
    s.add_argument("--overwrite", action="store_true",
                   help="draw every galaxy again, replacing files of an earlier run")
    s.add_argument("--like", metavar="CATALOGUE", default=None,
                   help="draw one galaxy per row of this catalogue (.ecsv, .fits; e.g. "
                   "from 'astro-sbgm measure'), with the properties of a conditional "
                   "model's conditions; replaces --n. Without it a conditional model draws "
                   "each galaxy's properties from the population it stores (its training "
                   "set's)")
    s.add_argument("--guidance", type=float, default=1.0, metavar="S",
                   help="classifier-free guidance scale of a conditional model (1: "
                   "conditional, 0: unconditional; default 1)")
    s.add_argument("--candidates", type=int, default=1, metavar="K",
                   help="conditional model: draw K galaxies per row (of --like, or of "
                   "the population) and keep the one whose measured properties lie "
                   "nearest the row's (K times the network evaluations; default 1)")
    add_progress(s)
    _add_sample_options(s)
    s.set_defaults(func=_cmd_sample)

    m = sub.add_parser("measure", help="photometry catalogue of FITS cutouts")
    m.add_argument("inputs", nargs="+", help="FITS files, directories or globs")
    m.add_argument("-o", "--output", required=True, help="catalogue (.ecsv or .fits)")
    add_input_bands(m)
    m.add_argument("--aperture", type=float, default=12.0,
                   help="aperture diameter in pixels (default %(default)s)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing catalogue")
    add_progress(m)
    m.set_defaults(func=_cmd_measure)

    d = sub.add_parser("sgd", help="Synthetic Galaxy Distance between two catalogues")
    d.add_argument("a", help="first catalogue")
    d.add_argument("b", help="second catalogue")
    d.add_argument("--bootstrap", type=int, default=0,
                   help="bootstrap resamples for the spread (default 0: none)")
    add_seed(d, "the bootstrap resamples")
    d.add_argument("--pixel-scale", type=float, default=None, metavar="ARCSEC",
                   help="arcsec per pixel, to convert radius columns given in pixels")
    d.set_defaults(func=_cmd_sgd)

    sc = sub.add_parser(
        "score", help="log-likelihood and anomaly score of images under a model",
        description="Write one row per input image (file name, log-likelihood, bits per "
        "dimension, complexity, anomaly score) to an ECSV table: how unusual each image "
        "is to the model (GalaxyDiffusion.anomaly_scores).")
    sc.add_argument("inputs", nargs="+", help="FITS files, directories or globs")
    add_model_source(sc)
    sc.add_argument("-o", "--output", required=True, help="table to write (.ecsv)")
    sc.add_argument("--method", choices=("elbo", "ode"), default="elbo",
                    help="elbo: variational bound (fast, default); ode: probability-flow ODE")
    sc.add_argument("--levels", type=int, default=32, help="noise levels of elbo (default 32)")
    sc.add_argument("--ode-steps", type=int, default=50, help="Heun steps of ode (default 50)")
    sc.add_argument("--probes", type=int, default=1, help="Hutchinson probes of ode")
    sc.add_argument("--reference", choices=("complexity", "none"), default="complexity",
                    help="correction of the score for image complexity (default complexity)")
    add_input_bands(sc)
    add_seed(sc, "the noise levels and probes of the likelihood")
    sc.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    sc.add_argument("--overwrite", action="store_true", help="replace an existing table")
    add_progress(sc)
    sc.set_defaults(func=_cmd_score)

    add_inpaint_parser(sub)
    add_transfer_parser(sub)
    return parser


def _prepare_output(path, overwrite):
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{str(path)!r} is not empty; choose another folder or pass "
                              "--overwrite")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_all(images, folder, stem, overwrite=True):
    from .io import write_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        paths.append(write_image(img, folder / numbered_name(stem, i), overwrite=overwrite))
    return paths


def _quickstart_inpainting(est, galaxy, out, seed):
    """Deface one held-out galaxy with a satellite trail, repair it; before/after panels."""
    import numpy as np
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .artifacts import add_satellite_trails
    from .io import write_image
    from .visualization import rgb_composite

    size = galaxy.shape[-1]
    centre = slice(size // 2 - 4, size // 2 + 4)
    for attempt in range(100):   # a trail across the galaxy, as in the paper's Fig. 6
        defaced, mask = add_satellite_trails(galaxy, n_trails=1, brightness=(3.0, 10.0),
                                             width=(3.0, 4.0), dashed=0.0,
                                             seed=seed * 1000 + attempt)
        if mask[..., centre, centre].any():
            break
    repaired = est.inpaint(defaced, mask=mask, seed=seed)
    write_image(defaced, out / "trail_defaced.fits", overwrite=True)
    write_image(repaired, out / "trail_repaired.fits", overwrite=True)
    sky = np.asarray(galaxy.uncertainty.array) if galaxy.uncertainty is not None else None
    truth, fixed = np.asarray(galaxy.data), np.asarray(repaired.data)
    fig, axes = plt.subplots(1, 4, figsize=(8.4, 2.4))
    panels = [(galaxy, "truth"), (defaced, "with a trail"), (repaired, "repaired")]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(rgb_composite(img), origin="lower")
        ax.set_title(title, fontsize=9)
    resid = (fixed - truth)[1]
    if sky is not None:
        resid = resid / np.broadcast_to(sky, truth.shape)[1]
    im = axes[3].imshow(np.where(mask[1] if mask.ndim == 3 else mask, resid, 0.0),
                        origin="lower", cmap="RdBu_r", vmin=-4, vmax=4)
    axes[3].set_title("(repaired - truth) / sky, r" if sky is not None else "repaired - truth",
                      fontsize=9)
    fig.colorbar(im, ax=axes[3], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "trail.png", dpi=110)
    plt.close(fig)
    m = mask if mask.ndim == 3 else np.broadcast_to(mask, truth.shape)
    rms = float(np.sqrt(np.mean((fixed[m] - truth[m]) ** 2)))
    return {"png": str(out / "trail.png"), "fits": str(out / "trail_repaired.fits"),
            "n_filled": int(m.sum()), "rms_nanomaggy": round(rms, 5)}


def run_quickstart(output="astro-sbgm-quickstart", model=None, n_train=QUICKSTART["n_train"],
                   train_steps=QUICKSTART["steps"], n=QUICKSTART["n_samples"], seed=1,
                   minutes=QUICKSTART["minutes"], overwrite=False, progress=True, echo=print,
                   train=False, pretrained=None):
    """The work of ``astro-sbgm quickstart``; returns a dict of what was written.

    By default the model bundled with the package draws ``n`` galaxies (no
    training); ``model=`` uses a saved model and ``train=True`` trains the
    small quickstart model on mock data first (minutes).  Then: FITS files,
    a montage, a measured catalogue (ECSV), the SGD against fresh mock
    galaxies beside the real-vs-real SGD at the same N, and one held-out
    galaxy with a simulated satellite trail removed (before/after panels).
    """
    import warnings

    from . import GalaxyDiffusion
    from .datasets import make_mock_legacy_survey
    from .metrics import measure_galaxies, synthetic_galaxy_distance
    from .visualization import plot_comparison, plot_montage

    out = _prepare_output(output, overwrite)
    t0 = time.perf_counter()
    if train:
        size = QUICKSTART["size"]
        echo(f"making {n_train} mock Legacy Survey galaxies ({size}x{size} grz) ...")
        data = make_mock_legacy_survey(n_train, size=size, seed=seed, progress=progress)
        est = GalaxyDiffusion(**QUICKSTART["model"], seed=seed)
        echo(f"training {est!r} for {train_steps} steps ...")
        est.fit(data, steps=train_steps, progress=progress,
                time_limit=None if minutes is None else 60.0 * float(minutes))
        est.save(out / "model", overwrite=True)
        echo(f"trained {est.n_steps_} steps ({est.n_steps_ * est.batch_size} images)")
        source = str(out / "model")
        real_seed = seed + 1000          # never the training galaxies
    elif model is not None:
        est = GalaxyDiffusion.load(model)
        source = str(model)
        real_seed = seed + 1000
    else:
        from . import pretrained as _pretrained

        name = pretrained or _pretrained.DEFAULT_MODEL
        est = GalaxyDiffusion.pretrained(name)
        source = f"bundled model {name!r}"
        real_seed = seed + 1000          # the bundled model trained on seed 13
    echo(f"model: {source} ({est.n_steps_} training steps)")
    t_train = time.perf_counter() - t0
    size = est.image_size
    echo(f"drawing {n} galaxies ...")
    # 10 steps: on the bundled model they score like 20 (the model card's sampler table)
    fakes = est.sample(n, steps=QUICKSTART["sample_steps"], seed=seed, progress=progress)
    t_sample = time.perf_counter() - t0 - t_train
    real = make_mock_legacy_survey(2 * n, size=size, seed=real_seed)
    sample_paths = _write_all(fakes, out / "samples", "sample")
    _write_all(real[:n], out / "real", "real")
    fig = plot_montage(fakes[:64], ncols=8, method="lupton")
    fig.savefig(out / "montage.png", dpi=90)
    fig = plot_comparison(real[:n], fakes, n=min(n, 8), method="lupton")
    fig.savefig(out / "comparison.png", dpi=110)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat_fake = measure_galaxies(fakes)
        cat_real, cat_other = measure_galaxies(real[:n]), measure_galaxies(real[n:])
        sgd = synthetic_galaxy_distance(cat_fake, cat_real)
        floor = synthetic_galaxy_distance(cat_other, cat_real)
    cat_fake.write(out / "samples.ecsv", format="ascii.ecsv", overwrite=True)
    echo(f"SGD of {n} generated vs {n} fresh mock galaxies, beside two sets of {n} fresh mock "
         "galaxies (the floor):")
    echo(f"  {'term':8s} {'generated':>10s} {'real-real':>10s}")
    for label in sgd.terms:
        a, b = sgd.terms[label], floor.terms[label]
        echo(f"  {label:8s} {float(getattr(a, 'value', a)):10.3f} "
             f"{float(getattr(b, 'value', b)):10.3f}")
    echo(f"  {'SGD':8s} {sgd.total:10.3f} {floor.total:10.3f}")
    echo(f"  (at {n} vs {n} galaxies the SGD is mostly sampling noise: compare the two "
         "columns, not the numbers with other N)")
    trail = _quickstart_inpainting(est, real[n], out, seed)
    t_total = time.perf_counter() - t0
    summary = {
        "output": str(out), "model": source, "samples": str(out / "samples"),
        "real": str(out / "real"), "montage": str(out / "montage.png"),
        "comparison": str(out / "comparison.png"), "catalogue": str(out / "samples.ecsv"),
        "n_samples": len(sample_paths), "sgd": round(float(sgd.total), 4),
        "sgd_real_vs_real": round(float(floor.total), 4), "trail": trail,
        "seconds": {"model": round(t_train, 1), "sampling": round(t_sample, 1),
                    "total": round(t_total, 1)},
        "sampler": fakes[0].meta["SAMPLER"], "nfe": int(fakes[0].meta["NFE"]),
        "train_steps": int(getattr(est, "n_steps_", 0)), "weights": fakes[0].meta["WEIGHTS"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    echo(f"samples:  {summary['samples']}/ ({len(sample_paths)} FITS cubes, nanomaggy), "
         f"catalogue {summary['catalogue']}")
    echo(f"montage:  {summary['montage']} (and {summary['comparison']}: real above, generated "
         "below)")
    echo(f"trail:    {trail['png']} (a simulated satellite trail removed from a held-out "
         "galaxy)")
    echo(f"time:     model {t_train:.0f} s, sampling {t_sample:.0f} s, all {t_total:.0f} s")
    return summary


def _cmd_score(args):
    """``astro-sbgm score``: one row per input file."""
    import os

    import numpy as np

    from .io import read_image

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{str(out)!r} exists; choose another name or pass --overwrite")
    files = expand_inputs(args.inputs)
    images = [read_image(f, bands=args.input_bands) for f in files]
    est = load_model(args, device=args.device)
    table = est.anomaly_scores(images, reference=args.reference, method=args.method,
                               n_levels=args.levels, steps=args.ode_steps,
                               n_probes=args.probes, seed=args.seed, progress=not args.quiet)
    table.add_column([os.path.basename(f) for f in files], name="file", index=0)
    atomic_write(out, lambda tmp: table.write(tmp, format="ascii.ecsv", overwrite=True))
    print(f"scored {len(table)} image(s) -> {out} ({args.method}; highest anomaly score: "
          f"{table['file'][int(np.argmax(table['anomaly_score']))]})")
    return 0


def _model_params(args):
    """The model's keyword arguments: the options given, over the preset or `MODEL_DEFAULTS`."""
    given = dict(image_size=args.size, dim=args.dim, objective=args.objective,
                 batch_size=args.batch_size, learning_rate=args.lr)
    if args.dim_mults is not None:
        try:
            given["dim_mults"] = tuple(int(v) for v in args.dim_mults.split(","))
        except ValueError:
            raise ValueError(f"--dim-mults {args.dim_mults}: give comma-separated integers "
                             "such as 1,2,4,8") from None
    given = {k: v for k, v in given.items() if v is not None}
    base = dict(PRESETS[args.preset]) if args.preset else {}
    params = {**MODEL_DEFAULTS, **base, **given}
    params.update(bands=args.bands, seed=args.seed, device=args.device)
    if getattr(args, "conditions", None):
        params["conditions"] = [c.strip() for c in args.conditions.split(",") if c.strip()]
    if getattr(args, "condition_dropout", None) is not None:
        params["condition_dropout"] = args.condition_dropout
    return params


def _model_from_args(args):
    from . import GalaxyDiffusion

    return GalaxyDiffusion(**_model_params(args))


def _cmd_train(args):
    from .datasets import make_mock_legacy_survey

    if bool(args.inputs) == bool(args.mock):
        raise ValueError("give FITS inputs or --mock N (one of the two)")
    out = Path(args.output)
    if (out.exists() and any(not p.name.startswith(".") for p in out.iterdir())
            and not (args.overwrite or args.resume)):
        raise FileExistsError(f"{str(out)!r} is not empty; pass --resume to continue or "
                              "--overwrite")
    est = _model_from_args(args)
    data = (make_mock_legacy_survey(args.mock, size=est.image_size, bands=args.bands,
                                    seed=args.seed)
            if args.mock else args.inputs[0] if len(args.inputs) == 1  # a folder may stream
            else list(args.inputs))
    ckpt = args.checkpoint_dir or str(out / "checkpoints")
    from . import distributed
    from .training import TrainingInterrupted

    try:
        est.fit(data, steps=args.train_steps, checkpoint_dir=ckpt,
                checkpoint_every=args.checkpoint_every, resume=args.resume,
                keep_checkpoints=args.keep_checkpoints,
                progress=not args.quiet, bands=args.input_bands,
                time_limit=None if args.minutes is None else 60.0 * args.minutes)
    except TrainingInterrupted as stop:
        # preemption, a time limit or Ctrl-C: the step is checkpointed; save the model too
        if distributed.is_main_process():
            est.save(out / "model", overwrite=True)
            print(f"astro-sbgm train: interrupted at step {stop.step}; checkpoint saved in "
                  f"{ckpt}, model in {out / 'model'}; continue with --resume",
                  file=sys.stderr)
        return stop.exit_code
    if distributed.is_main_process():
        est.save(out / "model", overwrite=True)
        print(f"model saved in {out / 'model'} after {est.n_steps_} steps "
              f"(checkpoints in {ckpt})")
    return 0


#: Name of the record of the settings of a ``sample`` output folder.
SAMPLE_MANIFEST = "astro_sbgm-samples.json"
SAMPLE_INDEX = "index.ecsv"


def _sample_name(index):
    return numbered_name("sample", index)


def _model_digest(model):
    import hashlib

    path = Path(model)
    folder = path.parent if path.is_file() else path
    digest = hashlib.sha256()
    with open(folder / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _prepare_sample_output(out, n, settings, overwrite):
    """Rank 0: check or create the output folder; the indices still to draw."""
    from ._version import __version__

    out = Path(out)
    manifest = out / SAMPLE_MANIFEST
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{str(out)!r} is a file; give a folder for the samples")
    if manifest.exists() and not overwrite:
        old = json.loads(manifest.read_text()).get("settings", {})
        diff = sorted(k for k in settings if old.get(k) != settings[k])
        if diff:
            raise ValueError(f"{str(out)!r} holds galaxies drawn with other settings "
                             f"(differing: {diff}); choose another folder, or pass "
                             "--overwrite to draw them all again")
    else:
        if (out.exists() and any(not p.name.startswith(".") for p in out.iterdir())
                and not overwrite):
            raise FileExistsError(f"{str(out)!r} is not empty and holds no earlier samples; "
                                  "choose another folder or pass --overwrite")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest, json.dumps({"format": "astro_sbgm samples",
                                                "version": __version__,
                                                "settings": settings}, indent=1))
    existing = set() if overwrite else {p.name for p in out.iterdir()}
    return [i for i in range(n) if _sample_name(i) not in existing]


def _contiguous_runs(indices, size):
    """``(first, count)`` of runs of consecutive indices, at most ``size`` long."""
    run_start, count = None, 0
    for i in indices:
        if count and (i != run_start + count or count == size):
            yield run_start, count
            count = 0
        if count == 0:
            run_start = i
        count += 1
    if count:
        yield run_start, count


def _write_sample_index(out, n, settings):
    """Rank 0: the index table of the galaxies on disk, as ECSV (atomically)."""
    import numpy as np
    from astropy.io import fits
    from astropy.table import QTable

    out = Path(out)
    present = [i for i in range(n) if (out / _sample_name(i)).exists()]
    table = QTable()
    table["index"] = np.array(present, dtype=np.int64)
    table["file"] = [_sample_name(i) for i in present]
    table.meta.update(settings)
    table.meta["n_requested"] = n
    table.meta["n_missing"] = n - len(present)
    if present:
        header = fits.getheader(out / _sample_name(present[0]))
        table.meta["nfe"] = int(header.get("NFE", -1))
        table.meta["steps"] = int(header.get("NSTEPS", -1))
        names = []
        while f"CONDN{len(names)}" in header:
            names.append(header[f"CONDN{len(names)}"])
        if names:   # a conditional model's draws: the properties each was drawn with
            import astropy.units as u

            heads = [header] + [fits.getheader(out / _sample_name(i)) for i in present[1:]]
            for j, name in enumerate(names):
                table[f"requested_{name}"] = u.Quantity(
                    [h.get(f"CONDV{j}", np.nan) for h in heads], header.get(f"CONDU{j}", ""))
            if "POPROW" in header:
                table["population_row"] = np.array([h.get("POPROW", -1) for h in heads],
                                                   dtype=np.int64)
    atomic_write(out / SAMPLE_INDEX,
                 lambda tmp: table.write(tmp, format="ascii.ecsv", overwrite=True))
    return table


def _cmd_sample(args):
    from tqdm.auto import tqdm

    from . import distributed as dist, pretrained
    from .io import write_image

    est = load_model(args, device=str(dist.local_device(args.device)))
    model_dir = pretrained.path(args.pretrained) if args.pretrained else args.model
    dist.init_distributed(est.device_)
    like = None
    if args.like is not None:
        from astropy.table import QTable

        like = QTable.read(args.like)
        if getattr(est, "conditions_", None) is None:
            raise ValueError("--like needs a conditional model (astro-sbgm train "
                             "--conditions ...); this one was trained without conditions")
        missing = [c for c in est.conditions_.names if c not in like.colnames]
        if missing:
            raise ValueError(f"{args.like} lacks column(s) {missing}; the model is "
                             f"conditioned on {list(est.conditions_.names)}")
        args.n = len(like)
    elif (args.guidance != 1.0 or args.candidates != 1) and est.population_ is None and not (
            getattr(est, "conditions_", None) is not None and args.guidance == 0.0
            and args.candidates == 1):
        raise ValueError("--guidance and --candidates apply to a conditional model's draws "
                         "to order (--like CATALOGUE) or from the population of conditions "
                         "it stores, and this model stores none (--guidance 0 draws a "
                         "conditional model unconditionally)")
    if args.candidates < 1:
        raise ValueError(f"--candidates must be >= 1, got {args.candidates}")
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    steps = est.default_steps(args.sampler) if args.steps is None else args.steps
    if args.batch_size is None:
        args.batch_size = est.default_batch_size
    settings = {"seed": args.seed, "sampler": args.sampler, "steps": int(steps),
                "weights": args.weights, "precision": args.precision}
    if like is not None or args.guidance != 1.0:
        settings.update(like=None if like is None else str(args.like),
                        guidance=float(args.guidance))
    if args.candidates > 1:   # absent at 1: folders written before the option still match
        settings["candidates"] = int(args.candidates)
    out = Path(args.output)

    def prepare():
        settings["model_sha256"] = _model_digest(model_dir)
        return _prepare_sample_output(out, args.n, settings, args.overwrite)

    todo = dist.run_on_main(prepare)   # on rank 0, which also adds the model's digest
    mine = dist.shard_indices(todo)
    show = not args.quiet and dist.is_main_process()
    bar = tqdm(total=len(mine), disable=not show, desc="sampling", unit="galaxy",
               dynamic_ncols=True)
    try:
        for first, count in _contiguous_runs(mine, max(1, args.batch_size)):
            kw = dict(sampler=args.sampler, steps=steps, seed=args.seed,
                      batch_size=args.batch_size, weights=args.weights, progress=False,
                      start=first, precision=args.precision)
            if like is None:
                if args.guidance != 1.0 or args.candidates != 1:
                    kw.update(guidance_scale=args.guidance, candidates=args.candidates)
                fakes = est.sample(count, **kw)
            else:   # rows first .. first + count - 1 of the catalogue
                fakes = est.sample_like(like[first:first + count],
                                        guidance_scale=args.guidance,
                                        candidates=args.candidates, **kw)
            for img in fakes:
                write_image(img, out / _sample_name(int(img.meta["SAMPLEID"])), overwrite=True)
            bar.update(count)
    finally:
        bar.close()
    dist.barrier()
    table = dist.run_on_main(_write_sample_index, out, args.n, settings)
    if dist.is_main_process():
        print(f"wrote {len(todo)} galaxies to {out}/ ({args.n - len(todo)} were already there; "
              f"{dist.get_world_size()} process(es)); index in {out / SAMPLE_INDEX} "
              f"({args.sampler}, {table.meta.get('nfe')} network evaluations each)")
    return 0


#: Library keywords named in error messages, and the flags that set them on the
#: command line: ``main`` rewrites every expected error message with these, so
#: the library speaks Python and the command speaks flags.
KEYWORD_FLAGS = (
    (r"\boverwrite=True(?: \(--overwrite\))?", "--overwrite"),
    (r"\bresume=True\b", "--resume"),
    (r"\bresume=False\b", "without --resume"),
    (r"\bcheckpoint_dir\b=?", "--checkpoint-dir"),
    (r"\bcheckpoint_every\b=?", "--checkpoint-every"),
    (r"\bbatch_size=(\d+)", r"--batch-size \1"),
    (r"\bbatch_size\b=?", "--batch-size"),
    (r"\blearning_rate=([^\s;,)]+)", r"--lr \1"),
    (r"\blearning_rate\b=?", "--lr"),
    (r"\bimage_size=(\d+)", r"--size \1"),
    (r"\bimage_size\b=?", "--size"),
    (r"\bpixel_scale=", "--pixel-scale "),
    (r"\bbands=(['\"]?)(\w+)\1", r"--input-bands \2"),
    (r"\bbands=", "--input-bands"),
    (r"\bweights=(['\"]?)(ema|model)\1", r"--weights \2"),
)

#: Commands that write into their ``--output`` folder for a long time: they hold
#: the folder's lock (`astro_sbgm._locking`) while they run.
LOCKED_COMMANDS = {"train": "train into", "sample": "draw samples into"}

_REPORT = ("this is a bug in astro_sbgm {version}; please report it with the traceback "
           "above and the command you ran")


def in_cli_words(message):
    """An error message with library keywords replaced by command-line flags, on one line.

    Parameters
    ----------
    message : str
        The message of an exception raised by the library.

    Returns
    -------
    str
        The message with the keywords of `KEYWORD_FLAGS` (``overwrite=True``,
        ``checkpoint_dir``, ...) written as flags (``--overwrite``,
        ``--checkpoint-dir``, ...) and its lines joined.
    """
    import re

    for pattern, flag in KEYWORD_FLAGS:
        message = re.sub(pattern, flag, message)
    return " ".join(message.split())


def _expected_errors(command):
    """Exceptions that are a user's situation, not a bug: one line, no traceback."""
    from astropy.units import UnitsError

    expected = (ValueError, OSError, UnitsError)
    if command in ("sgd", "measure"):   # a catalogue without a column the metrics need
        expected += (KeyError,)
    return expected


def _cmd_quickstart(args):
    run_quickstart(args.output, args.model, args.n_train, args.train_steps, args.n,
                   args.seed, args.minutes, args.overwrite, progress=not args.quiet,
                   train=args.train, pretrained=args.pretrained)
    return 0


def _cmd_measure(args):
    from .metrics._cli import measure_command

    cat = measure_command(args.inputs, args.output, bands=args.input_bands,
                          aperture_diameter=args.aperture, overwrite=args.overwrite,
                          progress=not args.quiet)
    print(f"measured {len(cat)} galaxies -> {args.output}")
    return 0


def _cmd_sgd(args):
    from .metrics._cli import sgd_command

    print(sgd_command(args.a, args.b, bootstrap=args.bootstrap, seed=args.seed,
                      pixel_scale=args.pixel_scale))
    return 0


def _output_lock(args):
    """The writer's lock of the output folder of a long-writing command (rank 0 only)."""
    import contextlib
    import os

    from . import _locking

    what = LOCKED_COMMANDS.get(args.command)
    # under torchrun every process runs main(); the run holds the lock once, on rank 0
    if what is None or os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    return _locking.folder_lock(args.output, what=what)


def main(argv=None):
    """Entry point of the ``astro-sbgm`` console script; returns an exit code.

    One error policy for every sub-command: an expected failure (bad input, a
    missing, damaged or locked file or folder, a refused overwrite) prints one
    line, ``astro-sbgm COMMAND: error: ...``, in the words of the command line
    (flags such as ``--overwrite``, see `in_cli_words`) and returns 2; Ctrl-C
    or a stop signal returns 128 + the signal number (130 for Ctrl-C) after
    one line; anything else is a bug: its traceback is printed with a request
    to report it, and the exit code is 1.  ``train`` and ``sample`` hold the
    lock of their output folder while they run, so a second writer into the
    same folder is refused (readers are never blocked).  An old spelling of a
    renamed option still works for one release and prints one line,
    ``astro-sbgm COMMAND: warning: ... is deprecated ...``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code.
    """
    import traceback
    import warnings

    from ._version import __version__
    from .exceptions import AstroSBGMDeprecationWarning

    parser = build_parser()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstroSBGMDeprecationWarning)
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    prefix = f"astro-sbgm {args.command}"
    for w in caught:    # an old spelling of an option: one line, then carry on
        if issubclass(w.category, AstroSBGMDeprecationWarning):
            print(f"{prefix}: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    try:
        with _output_lock(args):
            return args.func(args)
    except KeyboardInterrupt as stop:   # Ctrl-C, or a stop signal during training
        text = in_cli_words(str(stop)) or "interrupted"
        print(f"{prefix}: {text}; files already written are complete, none is half-written",
              file=sys.stderr)
        return getattr(stop, "exit_code", 130)
    except _expected_errors(args.command) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"{prefix}: error: {in_cli_words(str(text))}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        print(f"{prefix}: {_REPORT.format(version=__version__)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
