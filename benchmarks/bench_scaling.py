"""What the flux scaling alone costs: SGD of the training set round-tripped through a scaler.

Usage::

    python benchmarks/bench_scaling.py [--n 1000] [--size 64]

Every configuration maps the mock Legacy Survey galaxies to [-1, 1] and back,
and the SGD between the round-tripped set and the untouched set is compared
with the real-vs-real noise floor (two independent mock sets of the same
size).  A scaling whose cost is not well under that floor flattens the
photometry before any network is involved (DESIGN.md, "Measured pitfalls").
"""

import argparse
import warnings

import numpy as np

from astro_sbgm import GalaxyDiffusion, PRESETS
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.metrics import measure_galaxies, synthetic_galaxy_distance
from astro_sbgm.preprocessing import FluxScaler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    images = make_mock_legacy_survey(args.n, size=args.size, seed=11)
    other = make_mock_legacy_survey(args.n, size=args.size, seed=12)
    flux = np.stack([im.data for im in images])
    default = GalaxyDiffusion()
    paper = PRESETS["paper"]
    configs = {
        "default (asinh)": FluxScaler(upper=default.flux_upper, lower=default.flux_lower,
                                      stretch=default.scaling,
                                      softening=default.flux_softening),
        "paper (linear, k-means A)": FluxScaler(upper=paper["flux_upper"],
                                                lower=paper["flux_lower"], stretch="linear"),
        "released code (linear, A=5.5)": FluxScaler(upper=5.5, lower=0.0, stretch="linear"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat = measure_galaxies(flux, bands="grz")
        floor = synthetic_galaxy_distance(cat, measure_galaxies(other)).total
        print(f"{args.n} mock {args.size}x{args.size} grz galaxies")
        print(f"{'scaling':32s} {'A [nmgy]':>9s} {'SGD(round trip, original)':>26s}")
        for name, scaler in configs.items():
            scaler.fit(flux)
            back = scaler.inverse_transform(scaler.transform(flux))
            sgd = synthetic_galaxy_distance(measure_galaxies(back, bands="grz"), cat).total
            print(f"{name:32s} {scaler.upper_:9.3g} {sgd:26.4f}")
        print(f"{'real vs real (noise floor)':32s} {'':9s} {floor:26.4f}")


if __name__ == "__main__":
    main()
