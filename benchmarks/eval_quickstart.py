"""SGD of the quickstart model against held-out mock galaxies, with the real-vs-real baseline.

Usage::

    astro-sbgm quickstart
    python benchmarks/eval_quickstart.py [MODEL_DIR] [--n 300]

Draws ``n`` galaxies from the model, measures them and ``n`` held-out mock
galaxies (a seed the quickstart never trains on), and prints the SGD table; the
baseline is ``n`` of the quickstart's training galaxies against the same
held-out set.
"""

import argparse
import warnings

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.cli import QUICKSTART
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.metrics import measure_galaxies, synthetic_galaxy_distance


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="astro-sbgm-quickstart/model")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5, help="seed of the samples")
    args = parser.parse_args()

    model = GalaxyDiffusion.load(args.model)
    size = model.image_size
    fakes = model.sample(args.n, seed=args.seed, progress=False)
    train = make_mock_legacy_survey(QUICKSTART["n_train"], size=size, seed=1)[:args.n]
    held_out = make_mock_legacy_survey(args.n, size=size, seed=777)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat_fake, cat_train, cat_held = (measure_galaxies(x) for x in (fakes, train, held_out))
    print(f"model ({model.n_steps_} training steps, {fakes[0].meta['SAMPLER']}, "
          f"{fakes[0].meta['NFE']} evaluations) vs held-out")
    print(synthetic_galaxy_distance(cat_fake, cat_held))
    print("\ntraining galaxies vs held-out (baseline)")
    print(synthetic_galaxy_distance(cat_train, cat_held))


if __name__ == "__main__":
    main()
