"""What the flux scaling alone costs: SGD of the training set round-tripped through a scaler.

Usage::

    python benchmarks/bench_scaling.py [--n 1000] [--size 64]

Every configuration maps the mock Legacy Survey galaxies to [-1, 1] and back,
and the SGD between the round-tripped set and the untouched set is compared
with the real-vs-real noise floor (two independent mock sets of the same
size).  Everything is measured twice: on the default mock survey and on one
whose z band is three times noisier (``sky_noise=(1, 1, 3)``), where one
lower clip for all bands would cut into the z sky.  A scaling whose cost is not
well under that floor flattens the photometry before any network is involved
(DESIGN.md, "Measured pitfalls").
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

    default = GalaxyDiffusion()
    paper = PRESETS["paper"]
    configs = {
        "default (asinh, per-band auto)": lambda: FluxScaler(
            upper=default.flux_upper, lower=default.flux_lower, stretch=default.scaling,
            softening=default.flux_softening),
        "one clip (asinh, -0.05 / 0.05)": lambda: FluxScaler(
            upper=100.0, lower=-0.05, stretch="asinh", softening=0.05),
        "paper (linear, k-means A)": lambda: FluxScaler(
            upper=paper["flux_upper"], lower=paper["flux_lower"], stretch="linear"),
        "released code (linear, A=5.5)": lambda: FluxScaler(upper=5.5, lower=0.0,
                                                            stretch="linear"),
    }
    for label, noise in (("default mock", 1.0), ("z sky noise x3", (1.0, 1.0, 3.0))):
        images = make_mock_legacy_survey(args.n, size=args.size, seed=11, sky_noise=noise)
        other = make_mock_legacy_survey(args.n, size=args.size, seed=12, sky_noise=noise)
        flux = np.stack([im.data for im in images])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cat = measure_galaxies(flux, bands="grz")
            floor = synthetic_galaxy_distance(cat, measure_galaxies(other)).total
            print(f"\n{args.n} mock {args.size}x{args.size} grz galaxies, {label}")
            print(f"{'scaling':34s} {'A [nmgy]':>9s} {'lower g,r,z [nmgy]':>24s} "
                  f"{'SGD(round trip, original)':>26s}")
            for name, make in configs.items():
                scaler = make().fit(flux)
                back = scaler.inverse_transform(scaler.transform(flux))
                sgd = synthetic_galaxy_distance(measure_galaxies(back, bands="grz"), cat).total
                lower = ",".join(f"{v:.3f}" for v in np.broadcast_to(scaler.lower_, (3,)))
                print(f"{name:34s} {scaler.upper_:9.3g} {lower:>24s} {sgd:26.4f}")
            print(f"{'real vs real (noise floor)':34s} {'':9s} {'':24s} {floor:26.4f}")


if __name__ == "__main__":
    main()
