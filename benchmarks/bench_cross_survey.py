"""Cross-survey input: SDSS g, r, z cutouts into the DECam grz model.

The same mock galaxies are drawn through SDSS and DECam filters
(`astro_sbgm.datasets.make_mock_survey`: one seed, one structure, colours
from the templates; both at 0.262"/pixel with the same seeing and a low sky
noise, so that only the filters differ).  The SDSS cutouts are put into the
DECam filters two ways: by letter (SDSS g read as DECam g, what the package
did before filter names) and with `astro_sbgm.filter_mapping` (colour terms
per pixel), and their 12-pixel aperture magnitudes are compared with the
DECam cutouts' (the truth).  Then the bundled model transfers a few SDSS
cutouts (strength 0.3, 10 steps) with the mapping and without it (read as
DECam letters), and the outputs' magnitudes are compared with the DECam
truth and with the transfer of the DECam cutout itself (same seed).

Run::

    OMP_NUM_THREADS=1 python benchmarks/bench_cross_survey.py --n 200 --n-transfer 0
    OMP_NUM_THREADS=1 python benchmarks/bench_cross_survey.py --n 32 --n-transfer 32
"""

import argparse
import time
import warnings

import numpy as np
import torch

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.datasets import make_mock_survey
from astro_sbgm.filter_mapping import filter_mapping
from astro_sbgm.io import make_image
from astro_sbgm.metrics import measure_galaxies

SDSS = "sdss:g,sdss:r,sdss:z"


def _mags(images):
    cat = measure_galaxies(images)
    return np.stack([np.asarray(cat[f"mag_{b}"].filled(np.nan) if hasattr(cat[f"mag_{b}"], "filled")
                                else cat[f"mag_{b}"]) for b in "grz"], axis=1)


def _report(label, mags, truth):
    d = mags - truth
    ok = np.all(np.isfinite(d), axis=1)
    med = np.median(d[ok], axis=0)
    mad = 1.4826 * np.median(np.abs(d[ok] - med), axis=0)
    print(f"{label:34s} "
          + "  ".join(f"{b}: {m:+.3f} ({s:.3f})" for b, m, s in zip("grz", med, mad))
          + f"   [{ok.sum()} galaxies]")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-transfer", type=int, default=16)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    common = dict(size=64, pixel_scale=0.262, psf_fwhm=1.2, sky_noise=0.2, seed=args.seed)
    decam = make_mock_survey(args.n, "decals", **common)
    sdss = make_mock_survey(args.n, "decals", bands=SDSS, **common)
    truth = _mags(decam)
    by_letter = [make_image(s.data, "grz", wcs=s.wcs) for s in sdss]
    t0 = time.perf_counter()
    mapped = []
    for s in sdss:
        fm = filter_mapping(s.data, SDSS, "grz", uncertainty=s.uncertainty.array)
        mapped.append(make_image(fm.apply(s.data), "grz", wcs=s.wcs, cards=fm.cards))
    dt = (time.perf_counter() - t0) / len(sdss)
    print(f"{args.n} galaxies, 64x64, 0.262\"/pix, FWHM 1.2\", sky noise x0.2; "
          f"median (1.4826 MAD) of mag - DECam truth:")
    _report("SDSS read as DECam (by letter)", _mags(by_letter), truth)
    _report("SDSS mapped (colour terms)", _mags(mapped), truth)
    print(f"filter_mapping: {1e3 * dt:.1f} ms per cutout; e.g. {mapped[0].meta['FMAP0']}, "
          f"faint-pixel colour {mapped[0].meta['FMCOL0']:.3f}, own colour in "
          f"{100 * mapped[0].meta['FMFRC0']:.0f}% of the pixels")

    if args.n_transfer:
        model = GalaxyDiffusion.pretrained("mock-legacy-grz-64")
        k = args.n_transfer
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            with_map = [model.transfer(s, strength=0.3, steps=10, seed=i)
                        for i, s in enumerate(sdss[:k])]
            t1 = time.perf_counter()
            no_map = [model.transfer(b, strength=0.3, steps=10, seed=i)
                      for i, b in enumerate(by_letter[:k])]
            own = [model.transfer(d, strength=0.3, steps=10, seed=i)
                   for i, d in enumerate(decam[:k])]
        print(f"transfer, bundled model, strength 0.3, 10 steps, {k} galaxies "
              f"({(t1 - t0) / k:.1f} s each); against the DECam truth:")
        _report("  input read as DECam (by letter)", _mags(no_map), truth[:k])
        _report("  input mapped (colour terms)", _mags(with_map), truth[:k])
        _report("  the DECam cutouts themselves", _mags(own), truth[:k])
        ref = _mags(own)
        print("  against the transfer of the DECam cutout (same seed):")
        _report("  input read as DECam (by letter)", _mags(no_map), ref)
        _report("  input mapped (colour terms)", _mags(with_map), ref)
        print(f"  recorded: FMAP={with_map[0].meta['FMAP']!r} "
              f"FMAPFROM={with_map[0].meta['FMAPFROM']!r} FMAP2={with_map[0].meta['FMAP2']!r}")


if __name__ == "__main__":
    main()
