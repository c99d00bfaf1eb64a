"""Sampler sweep on an already trained model: SGD against held-out galaxies per sampler and steps.

Usage::

    astro-sbgm quickstart
    python benchmarks/bench_samplers.py astro-sbgm-quickstart/model --n 200 \\
        --samplers ddim,dpmpp-2m,heun --steps 10,20,50 --reference-steps 1000

The training set is the quickstart's (mock galaxies, seed 1); the held-out set
uses another seed.  Each row uses `bench_quality._evaluate`, so the numbers are
those of the full protocol in ``bench_quality.py``, without its training legs.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

from astropy.table import QTable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import _evaluate  # noqa: E402

from astro_sbgm import GalaxyDiffusion  # noqa: E402
from astro_sbgm.datasets import make_mock_legacy_survey  # noqa: E402
from astro_sbgm.metrics import measure_galaxies, synthetic_galaxy_distance  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--n-train", type=int, default=2000,
                        help="size of the mock set the model was trained on (seed 1)")
    parser.add_argument("--samplers", default="ddim,dpmpp-2m,heun")
    parser.add_argument("--steps", default="10,20,50")
    parser.add_argument("--reference-steps", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=50)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", help="write the table as ECSV here")
    args = parser.parse_args()

    model = GalaxyDiffusion.load(args.model)
    size = model.image_size
    warnings.simplefilter("ignore")
    train = make_mock_legacy_survey(args.n_train, size=size, seed=1)[:args.n]
    held = make_mock_legacy_survey(args.n, size=size, seed=777)
    held_cat = measure_galaxies(held)
    held_rt_cat = measure_galaxies(model.round_trip(held))   # like for like with the fakes
    floor = synthetic_galaxy_distance(held_rt_cat, held_cat).total
    base = synthetic_galaxy_distance(measure_galaxies(train), held_cat,
                                     bootstrap=args.bootstrap, seed=args.seed)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  model {args.model} ({model.n_steps_} steps); "
          f"baseline SGD {base.total:.3f} +/- {base.bootstrap_std:.3f} ({args.n} each); "
          f"normalisation floor {floor:.4f}", flush=True)
    runs = [(s, int(k)) for s in args.samplers.split(",") for k in args.steps.split(",")]
    if args.reference_steps:
        runs.append(("ddpm", args.reference_steps))
    rows = [_evaluate(model, held_cat, base.total, args.n, s, k, args.seed, 64, args.bootstrap,
                      held_rt_cat) for s, k in runs]
    table = QTable(rows=rows)
    table.meta["baseline_sgd"] = base.total
    table.meta["norm_floor"] = floor
    if args.out:
        table.write(args.out, format="ascii.ecsv", overwrite=True)
    ref = [r["sgd"] for r in rows if r["sampler"] == "ddpm"]
    if ref:
        for r in rows:
            print(f"{r['sampler']:9s} {r['steps']:5d} steps: SGD / ddpm-{args.reference_steps} "
                  f"= {r['sgd'] / ref[0]:.2f}")


if __name__ == "__main__":
    main()
