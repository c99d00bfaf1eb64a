"""Benchmark: sample quality against cost, for the default and the "paper" configuration.

The protocol (run outside CI; the full version takes hours)::

    nice python benchmarks/bench_quality.py --minutes 30 --out quality30
    nice python benchmarks/bench_quality.py --minutes 60 --out quality60

1. Draw ``n_train + n`` mock Legacy Survey grz cutouts
   (`astro_sbgm.datasets.make_mock_legacy_survey`, ``size`` x ``size``
   pixels); the first ``n_train`` are the training set, the last ``n`` the
   held-out set.  Measure both with `astro_sbgm.metrics.measure_galaxies`.
   The baseline is the SGD of ``n`` training galaxies against the held-out
   set: the distance between two real samples of the same size, the floor a
   model is read against.
2. For each configuration (``default``: `astro_sbgm.GalaxyDiffusion`'s
   defaults; ``paper``: the ``"paper"`` preset; optionally ``attn-low``: the
   defaults with attention only at the two lowest resolutions, and ``eps`` or
   ``edm``: the defaults with that training objective instead of ``"v"``),
   train on the training set for
   the same budget of ``minutes`` (wall-clock, or process CPU time with
   ``--clock cpu``), with the same number of threads.  Training is cut into
   stages (``--stages``, fractions of the budget); each stage resumes the
   previous one exactly from its checkpoint (weights, EMA, optimizer, data
   order), so stage ``f`` is the model a run of ``f x minutes`` would give.
   The number of steps of a stage is set from the training speed measured so
   far.
3. After every stage, draw ``n`` galaxies with ``--stage-sampler`` (default
   ``dpmpp-2m:20``); after the last stage, with every sampler of
   ``--samplers`` at every step count of ``--steps``, and with ``"ddpm"`` at
   ``--reference-steps`` (the paper's 1000-step ancestral sampler; drawn
   even when ``ddpm`` is not among ``--samplers``).  Each set
   is measured and compared with the held-out set: SGD (with a bootstrap
   spread), SGD / baseline, Cohen's d and W1 per property, network
   evaluations per image, and wall time; and the SGD against the held-out
   set round-tripped through the model's flux scaling (``sgd_rt``: the
   model's own error, since generated pixels always lie inside the clip),
   beside the normalisation floor (``norm_floor``: held-out vs its round
   trip).
4. Write everything to ``<out>/quality.ecsv`` (one row per model, stage,
   sampler and step count; ``meta`` holds the command, the date, the
   machine's load and the baseline) and a figure ``<out>/quality.png``: SGD
   against network evaluations per sampler, and SGD against training time
   per configuration.

Before the sweep the script prints an estimate of its sampling time (the
1000-step reference dominates: ``n`` x 1000 network evaluations per model).
Runs on the same data (same ``--size``, ``--n``, ``--n-train`` and
``--seed``) can be joined afterwards, e.g. a full sampler sweep of one
configuration and a single-sampler run of another::

    python benchmarks/bench_quality.py --merge q30-default/quality.ecsv \
        q30-paper/quality.ecsv --out quality30

A smoke test that runs end to end in a few minutes::

    nice python benchmarks/bench_quality.py --minutes 0.3 --n 16 --n-train 64 --size 32 \\
        --steps 10,20 --reference-steps 50 --stages 0.5,1 --out /tmp/quality-smoke
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from astropy.table import QTable

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.diffusion import SAMPLERS
from astro_sbgm.metrics import SGD_COLUMNS, measure_galaxies, synthetic_galaxy_distance

__all__ = []

_CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_PROPS = list(SGD_COLUMNS)
_FIRST_LEG = 3  # optimizer steps of the first leg of training, which measures the speed


_CONFIGS = ("default", "attn-low", "eps", "edm", "paper")


def _model(config, size, seed):
    """The estimator of a named configuration (see the module docstring)."""
    if config == "default":
        return GalaxyDiffusion(image_size=size, device="cpu", seed=seed)
    if config in ("eps", "edm"):  # the defaults with another training objective
        return GalaxyDiffusion(image_size=size, device="cpu", seed=seed, objective=config)
    if config == "attn-low":
        levels = len(tuple(GalaxyDiffusion().dim_mults))
        return GalaxyDiffusion(image_size=size, device="cpu", seed=seed,
                               attention_levels=tuple(i >= levels - 2 for i in range(levels)))
    if config == "paper":
        return GalaxyDiffusion.from_preset("paper", image_size=size, device="cpu", seed=seed)
    raise ValueError(f"unknown configuration {config!r}; known: {_CONFIGS}")


def _parse_sampler(text):
    name, _, steps = text.partition(":")
    return name, int(steps or 20)


def _prune_checkpoints(directory):
    """Keep only the newest checkpoint (pairs of .json/.safetensors) to save disk."""
    records = sorted(Path(directory).glob("checkpoint-*.json"))
    for rec in records[:-1]:
        for path in (rec, rec.with_suffix(".safetensors")):
            path.unlink(missing_ok=True)


def _evaluate(model, held_cat, baseline, n, sampler, steps, seed, batch_size, bootstrap,
              held_rt_cat=None):
    """Draw, measure and compare one set of galaxies; return a row (dict).

    ``held_rt_cat`` is the held-out set round-tripped through the model's flux
    scaling (`GalaxyDiffusion.round_trip`): the SGD against it (``sgd_rt``) is
    the model's own error, the SGD against the raw set (``sgd``) what a user
    of the galaxies gets.
    """
    t0 = time.perf_counter()
    fakes = model.sample(n, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size,
                         progress=False)
    wall = time.perf_counter() - t0
    nfe = int(fakes[0].meta["NFE"])
    cat = measure_galaxies(fakes)
    row = {"sampler": sampler, "steps": int(steps), "nfe": nfe, "sample_wall_s": wall,
           "sample_s_per_galaxy": wall / n}
    try:
        res = synthetic_galaxy_distance(cat, held_cat, bootstrap=bootstrap, seed=seed)
    except ValueError as err:  # no measurable galaxy at all (an untrained model)
        print(f"    {sampler}:{steps}: no SGD ({err})")
        row.update({"sgd": np.nan, "sgd_std": np.nan, "sgd_ratio": np.nan, "n_used": 0})
        row.update({f"d_{p}": np.nan for p in _PROPS})
        row.update({f"w1_{p}": np.nan for p in _PROPS})
        return row
    row.update({"sgd": res.total, "sgd_std": res.bootstrap_std,
                "sgd_ratio": res.total / baseline, "n_used": res.n_used_a})
    rt = synthetic_galaxy_distance(cat, held_rt_cat) if held_rt_cat is not None else None
    row["sgd_rt"] = np.nan if rt is None else rt.total
    row.update({f"d_{p}": float(res.cohens_d[p]) for p in _PROPS})
    row.update({f"w1_{p}": float(getattr(res.terms[p], "value", res.terms[p])) for p in _PROPS})
    print(f"    {sampler:9s} {steps:5d} steps  {nfe:5d} NFE  SGD {res.total:.3f} "
          f"+/- {res.bootstrap_std:.3f}  ({res.total / baseline:.2f} x baseline), against "
          f"round-tripped {row['sgd_rt']:.3f}  {wall:.1f} s", flush=True)
    return row


def plot_quality(table, baseline):
    """Two panels: SGD against NFE (last stage), SGD against training time (stage sampler).

    Colour marks the sampler, line style and marker the configuration; the SGD
    axis is logarithmic when some SGD exceeds five times the baseline.

    Parameters
    ----------
    table : `~astropy.table.QTable`
        The table written by this script.
    baseline : float
        Real-vs-real SGD (drawn as a horizontal line).

    Returns
    -------
    `matplotlib.figure.Figure`
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    colour = {s: f"C{i}" for i, s in enumerate(np.unique(table["sampler"]))}
    for ci, config in enumerate(np.unique(table["config"])):
        mine = table[table["config"] == config]
        last = mine[mine["stage"] == mine["stage"].max()]
        for sampler in np.unique(last["sampler"]):
            rows = last[last["sampler"] == sampler]
            rows = rows[np.argsort(rows["nfe"])]
            # colour: sampler; line style and marker: configuration (single points too)
            ax1.errorbar(rows["nfe"], rows["sgd"], yerr=rows["sgd_std"],
                         marker="os^D"[ci % 4], ms=4, mfc="none" if ci % 2 else None,
                         ls=styles[ci % len(styles)], color=colour[sampler],
                         label=f"{config} {sampler}")
        stage_rows = mine[mine["stage_sampler"]]
        stage_rows = stage_rows[np.argsort(stage_rows["train_s"])]
        ax2.errorbar(stage_rows["train_s"] / 60, stage_rows["sgd"], yerr=stage_rows["sgd_std"],
                     marker="o", ms=4, color=f"C{ci}", label=config)
    for ax in (ax1, ax2):
        ax.axhline(baseline, color="k", lw=0.8, ls=":", label="real vs real")
        ax.set_ylabel("SGD against held-out set")
        ax.legend(fontsize=7)
        if np.nanmax(table["sgd"]) > 5 * baseline:  # an undertrained model next to good ones
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax1.set_xscale("log")
    ax1.set_xlabel("network evaluations per galaxy")
    ax1.set_title("end of training")
    ax2.set_xlabel("training time [min]")
    ax2.set_title("during training (stage sampler)")
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training budget per configuration (default 30)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="what the budget counts: wall-clock or process CPU time")
    parser.add_argument("--configs", default="default,paper",
                        help="comma-separated subset of " + ", ".join(_CONFIGS))
    parser.add_argument("--n", type=int, default=500,
                        help="galaxies per drawn set, and in the held-out set (default 500)")
    parser.add_argument("--n-train", type=int, default=2000, help="training galaxies")
    parser.add_argument("--size", type=int, default=64, help="cutout side in pixels")
    parser.add_argument("--samplers", default="ddpm,ddim,dpmpp-2m,euler,heun")
    parser.add_argument("--steps", default="10,20,50,100", help="step counts of the sweep")
    parser.add_argument("--reference-steps", type=int, default=1000,
                        help="steps of the ddpm reference, drawn whether or not ddpm is in "
                             "--samplers (0: none)")
    parser.add_argument("--stages", default="0.333,1",
                        help="fractions of the budget at which the model is evaluated")
    parser.add_argument("--stage-sampler", default="dpmpp-2m:20",
                        help="sampler:steps used at every stage")
    parser.add_argument("--bootstrap", type=int, default=50, help="SGD bootstrap resamples")
    parser.add_argument("--batch-size", type=int, default=64, help="images per sampling call")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="quality", help="output directory")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep the training checkpoints (in <out>/checkpoints-<config>)")
    parser.add_argument("--merge", nargs="+", metavar="ECSV",
                        help="train nothing: join quality.ecsv files of earlier runs on the "
                             "same data into <out>/quality.ecsv and quality.png")
    args = parser.parse_args(argv)
    if args.merge:
        merge(args.merge, args.out)
        return
    torch.set_num_threads(args.threads)
    clock = _CLOCK[args.clock]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if set(configs) - set(_CONFIGS):
        parser.error(f"unknown configuration(s) {sorted(set(configs) - set(_CONFIGS))}; "
                     f"known: {_CONFIGS}")
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    step_list = [int(s) for s in args.steps.split(",") if s.strip()]
    stages = sorted(float(f) for f in args.stages.split(","))
    if not stages or stages[0] <= 0 or stages[-1] != 1.0:
        parser.error(f"--stages must be increasing fractions in (0, 1] ending at 1, got "
                     f"{args.stages!r}")
    stage_sampler, stage_steps = _parse_sampler(args.stage_sampler)
    bad = sorted(set(samplers + [stage_sampler]) - set(SAMPLERS))
    if bad:  # fail now, not after hours of training
        parser.error(f"unknown sampler(s) {bad}; known: {sorted(SAMPLERS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + list(
        sys.argv[1:] if argv is None else argv))
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"{started}  torch {torch.__version__}, {args.threads} thread(s), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    t0 = time.perf_counter()
    images = make_mock_legacy_survey(args.n_train + args.n, size=args.size, seed=args.seed)
    train, held = images[:args.n_train], images[args.n_train:]
    # the training set as one (n, band, y, x) array in nanomaggy: read once, not at every leg
    train = np.stack([np.asarray(im.data, np.float32) for im in train])
    held_cat = measure_galaxies(held)
    train_cat = measure_galaxies(train[:args.n], bands="grz")
    base = synthetic_galaxy_distance(train_cat, held_cat, bootstrap=args.bootstrap,
                                     seed=args.seed)
    baseline = base.total
    print(f"data: {args.n_train} training + {args.n} held-out {args.size}x{args.size} galaxies "
          f"({time.perf_counter() - t0:.0f} s); baseline SGD (train vs held-out, "
          f"{args.n} each) {baseline:.3f} +/- {base.bootstrap_std:.3f}")

    rows = []
    for config in configs:
        model = _model(config, args.size, args.seed)
        ckpt = out / f"checkpoints-{config}"
        if ckpt.exists():
            shutil.rmtree(ckpt)
        budget = args.minutes * 60.0
        spent, steps_done, rate = 0.0, 0, None
        print(f"{config}: {model!r}, budget {args.minutes:g} {args.clock} minutes")
        for fraction in stages:
            target = fraction * budget
            for _ in range(6):  # legs: the first measures the speed, the next ones fill up
                if spent >= 0.97 * target:
                    break
                want = (_FIRST_LEG if rate is None
                        else max(steps_done + 1, int(round(target * rate))))
                c0 = clock()
                model.fit(train, steps=want, bands="grz", checkpoint_dir=ckpt,
                          checkpoint_every=10 ** 9, resume=steps_done > 0, progress=False)
                spent += clock() - c0
                steps_done = model.n_steps_
                rate = steps_done / spent  # steps per budget second, overheads included
            _prune_checkpoints(ckpt)
            print(f"  stage {fraction:g}: {steps_done} steps, {spent / 60:.2f} {args.clock} "
                  f"min, {rate * model.batch_size:.1f} images/s", flush=True)
            runs = [(stage_sampler, stage_steps, True)]
            if fraction == 1.0:
                runs += [(s, k, False) for s in samplers for k in step_list
                         if (s, k) != (stage_sampler, stage_steps)]
                if args.reference_steps and ("ddpm", args.reference_steps) not in [
                        (s, k) for s, k, _ in runs]:
                    runs.append(("ddpm", args.reference_steps, False))
                n_eval = sum(k * (2 if s == "heun" else 1) for s, k, _ in runs) * args.n
                probe = time.perf_counter()
                model.sample(min(args.n, args.batch_size), sampler="ddim", steps=2,
                             seed=0, batch_size=args.batch_size, progress=False)
                per_eval = (time.perf_counter() - probe) / 2 / min(args.n, args.batch_size)
                print(f"  sweep: {len(runs)} sets, about {n_eval} image evaluations, about "
                      f"{n_eval * per_eval / 60:.0f} min", flush=True)
            # the held-out set as this model's scaling represents it, and what that costs
            held_rt_cat = measure_galaxies(model.round_trip(held))
            floor = synthetic_galaxy_distance(held_rt_cat, held_cat).total
            print(f"  normalisation floor (held-out vs its round trip): {floor:.4f}")
            for sampler, steps, is_stage in runs:
                row = {"config": config, "stage": fraction, "train_steps": steps_done,
                       "norm_floor": floor,
                       "images_seen": steps_done * int(model.batch_size), "train_s": spent,
                       "stage_sampler": is_stage}
                row.update(_evaluate(model, held_cat, baseline, args.n, sampler, steps,
                                     args.seed, args.batch_size, args.bootstrap,
                                     held_rt_cat))
                rows.append(row)
        if not args.keep_checkpoints:
            shutil.rmtree(ckpt, ignore_errors=True)

    table = QTable(rows=rows)
    table.meta.update({"command": command, "date": started, "torch": str(torch.__version__),
                       "threads": args.threads, "clock": args.clock, "minutes": args.minutes,
                       "n": args.n, "n_train": args.n_train, "size": args.size,
                       "baseline_sgd": baseline, "baseline_sgd_std": base.bootstrap_std,
                       "baseline_cohens_d": json.dumps({k: float(v)
                                                        for k, v in base.cohens_d.items()}),
                       "loadavg_end": list(os.getloadavg())})
    _write(table, out)


def _write(table, out):
    """Write ``quality.ecsv`` and ``quality.png`` into ``out`` and print the table."""
    baseline = table.meta["baseline_sgd"]
    table.write(out / "quality.ecsv", format="ascii.ecsv", overwrite=True)
    plot_quality(table, baseline).savefig(out / "quality.png", dpi=120)
    show = table["config", "stage", "train_steps", "sampler", "steps", "nfe", "sgd", "sgd_std",
                 "sgd_ratio", "sample_wall_s"]
    for col in ("sgd", "sgd_std", "sgd_ratio"):
        show[col].info.format = ".3f"
    show["sample_wall_s"].info.format = ".1f"
    print("\n".join(show.pformat(max_lines=-1, max_width=-1)))
    print(f"baseline SGD {baseline:.3f}; wrote {out / 'quality.ecsv'} and "
          f"{out / 'quality.png'}")


def merge(paths, out):
    """Join tables written by separate runs of the same data into one table and figure.

    Runs that share ``--size``, ``--n``, ``--n-train`` and ``--seed`` draw the same
    training and held-out sets, so their rows are comparable (e.g. one run per
    configuration, each with its own sampler sweep).

    Parameters
    ----------
    paths : list of path-like
        ``quality.ecsv`` files written by this script.
    out : path-like
        Directory for the joined ``quality.ecsv`` and ``quality.png``.

    Returns
    -------
    `~astropy.table.QTable`
    """
    from astropy.table import vstack

    tables = [QTable.read(p, format="ascii.ecsv") for p in paths]
    keys = ("size", "n", "n_train", "baseline_sgd")
    for path, tab in zip(paths[1:], tables[1:]):
        differ = [k for k in keys if tab.meta.get(k) != tables[0].meta.get(k)]
        if differ:
            raise ValueError(f"{path} was measured on other data than {paths[0]} "
                             f"(different {', '.join(differ)}); only runs with the same "
                             "--size, --n, --n-train and --seed can be joined")
    table = vstack(tables, metadata_conflicts="silent")
    table.meta = dict(tables[0].meta)
    table.meta["command"] = [t.meta.get("command") for t in tables]
    table.meta["date"] = [t.meta.get("date") for t in tables]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write(table, out)
    return table


if __name__ == "__main__":
    main()
