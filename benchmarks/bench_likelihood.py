"""Likelihoods and anomaly scores of a model: ODE against ELBO, and AUROC of the anomaly scores.

Usage::

    python benchmarks/bench_likelihood.py --model DIR_OR_BUNDLED_NAME --n 100 \\
        --n-ode 20 --out bench-likelihood

Clean held-out mock galaxies (``make_mock_legacy_survey`` seed 1001, never
trained on) are scored against, each one of:

* the same galaxies with a satellite trail (`astro_sbgm.artifacts`);
* the same galaxies with a saturated star added (a Moffat star of 2000 to
  20000 nanomaggies, its core flattened at 30 nanomaggies per pixel);
* the same galaxies with a second bright galaxy (another mock's, r < 17.5)
  added 4 to 10 pixels from the centre;
* out-of-distribution images: stars (a Moffat point source with the mock's
  sky noise), pure sky noise, and 64x64 crops of the Hubble Deep Field image
  shipped with scikit-image, made into grz with the display mapping.

The AUROC is P(score of the odd image > score of a clean one) (1 = perfect, 0.5
= chance), for the ELBO's bits per dimension alone (``none``) and with the
complexity correction (``complexity``), `GalaxyDiffusion.anomaly_scores`.  On
``--n-ode`` clean galaxies the ODE log-likelihood is compared with the ELBO
(the bound should lie below), with the spread of the ODE over three probe
seeds, and the training galaxies' bits per dimension with the held-out ones'
(memorisation shows as a gap).  Costs (network evaluations and seconds per
image) are printed and everything lands in ``OUT/likelihood.json``, with a
figure of the most and least likely held-out galaxies.
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.artifacts import add_satellite_trails
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.visualization import plot_montage


def auroc(odd, clean):
    """P(odd > clean) from the Mann-Whitney U statistic."""
    u = stats.mannwhitneyu(odd, clean, alternative="two-sided").statistic
    return float(u / (len(odd) * len(clean)))


def _moffat(size, x0, y0, fwhm, beta=3.5):
    yy, xx = np.mgrid[:size, :size]
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    prof = (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha ** 2) ** -beta
    return prof / prof.sum()


def _with(ccd, data):
    out = ccd.copy()
    out.data = np.asarray(data, np.float32)
    return out


def _sky(ccd):
    return np.asarray(ccd.uncertainty.array, float) if ccd.uncertainty is not None else 0.01


def make_sets(clean, size, rng):
    """The odd sets, each a list of CCDData."""
    trails, stars, pairs, ood_stars, noise = [], [], [], [], []
    others = make_mock_legacy_survey(4 * len(clean), size=size, seed=1003, return_truth=True)
    bright = [im for im, m in zip(others[0], others[1]["mag_r"].value) if m < 17.5]
    for i, gal in enumerate(clean):
        trails.append(add_satellite_trails(gal, brightness=(1.0, 10.0), width=(2.0, 5.0),
                                           seed=int(rng.integers(1 << 31)))[0])
        x0, y0 = rng.uniform(8, size - 8, 2)
        flux = 10 ** rng.uniform(np.log10(2000), np.log10(20000))
        star = np.stack([flux * _moffat(size, x0, y0, 1.2) for _ in range(3)])
        stars.append(_with(gal, np.minimum(gal.data + star, np.maximum(gal.data, 30.0))))
        other = bright[i % len(bright)].data
        other = other - np.median(other, axis=(1, 2), keepdims=True)
        r, ang = rng.uniform(4, 10), rng.uniform(0, 2 * np.pi)
        dy, dx = int(round(r * np.sin(ang))), int(round(r * np.cos(ang)))
        pairs.append(_with(gal, gal.data + np.roll(other, (dy, dx), axis=(1, 2))))
        sky = _sky(gal)
        flux = 10 ** rng.uniform(1, 3)
        pt = np.stack([flux * _moffat(size, size / 2 - 0.5, size / 2 - 0.5, 1.2)
                       for _ in range(3)])
        ood_stars.append(_with(gal, pt + sky * rng.standard_normal(gal.shape)))
        noise.append(_with(gal, sky * rng.standard_normal(gal.shape)))
    return {"trail": trails, "saturated star": stars, "second galaxy": pairs,
            "star (OOD)": ood_stars, "sky noise (OOD)": noise}


def hubble_crops(template, n, size, rng):
    """64x64 crops of scikit-image's Hubble Deep Field, as grz in nanomaggies."""
    try:
        from skimage import data
    except ImportError:
        return None
    from astro_sbgm.transfer import rgb_to_bands

    rgb = data.hubble_deep_field().astype(np.float64) / 255.0
    out = []
    for _ in range(n):
        y, x = rng.integers(0, rgb.shape[0] - size), rng.integers(0, rgb.shape[1] - size)
        bands = rgb_to_bands(rgb[y:y + size, x:x + size], "grz", "display")
        out.append(_with(template, 20.0 * bands))     # intensity 1 -> 20 nanomaggies
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--n-ode", type=int, default=20)
    p.add_argument("--levels", type=int, default=16)
    p.add_argument("--ode-steps", type=int, default=25)
    p.add_argument("--out", default="bench-likelihood")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = Path(a.model)
    model = GalaxyDiffusion.load(path) if path.exists() else GalaxyDiffusion.pretrained(a.model)
    size = model.image_size
    rng = np.random.default_rng(7)
    clean = make_mock_legacy_survey(a.n, size=size, seed=1001)
    sets = make_sets(clean, size, rng)
    hub = hubble_crops(clean[0], a.n, size, rng)
    if hub is not None:
        sets["Hubble Deep Field crop (OOD)"] = hub
    res = {"model": a.model, "n_steps": int(model.n_steps_), "n": a.n, "levels": a.levels}

    def score(images):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            t = model.anomaly_scores(images, n_levels=a.levels, progress=False)
        return t, (time.perf_counter() - t0) / len(images)

    clean_t, sec = score(clean)
    res["elbo_seconds_per_image"] = round(sec, 3)
    res["elbo_nfe_per_image"] = a.levels
    res["clean_bpd_median"] = round(float(np.median(clean_t["bits_per_dim"])), 4)
    rows = []
    for name, images in sets.items():
        t, _ = score(images)
        row = {"set": name,
               "auroc_bpd": round(auroc(t["bits_per_dim"], clean_t["bits_per_dim"]), 3),
               "auroc_complexity": round(auroc(t["anomaly_score"], clean_t["anomaly_score"]),
                                         3),
               "bpd_median": round(float(np.median(t["bits_per_dim"])), 4)}
        rows.append(row)
        print(row, flush=True)
    res["auroc"] = rows

    train = make_mock_legacy_survey(a.n, size=size, seed=13)     # the bundled model's set
    train_t, _ = score(train)
    res["train_bpd_median"] = round(float(np.median(train_t["bits_per_dim"])), 4)
    res["train_vs_held_out_auroc"] = round(auroc(-train_t["bits_per_dim"],
                                                 -clean_t["bits_per_dim"]), 3)

    m = a.n_ode
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ode = [model.score_samples(clean[:m], method="ode", steps=a.ode_steps, seed=s,
                                   progress=False) for s in range(3)]
    ode_sec = (time.perf_counter() - t0) / (3 * m)
    ll_ode = np.stack([np.asarray(t["log_likelihood"]) for t in ode])
    elbo = np.asarray(clean_t["log_likelihood"][:m])
    dim = 3 * size * size
    res["ode"] = {"n": m, "steps": a.ode_steps, "nfe_per_image": int(ode[0]["nfe"][0]),
                  "seconds_per_image": round(ode_sec, 2),
                  "bpd_median": round(float(np.median(-ll_ode.mean(0) / (dim * np.log(2)))), 4),
                  "elbo_bpd_median": round(float(np.median(-elbo / (dim * np.log(2)))), 4),
                  "fraction_elbo_below_ode": round(float(np.mean(elbo <= ll_ode.mean(0))), 3),
                  "mean_ode_minus_elbo_nats": round(float(np.mean(ll_ode.mean(0) - elbo)), 2),
                  "probe_spread_nats_median": round(float(np.median(ll_ode.std(0))), 2)}
    print(res["ode"], flush=True)

    order = np.argsort(np.asarray(clean_t["bits_per_dim"]))
    fig = plot_montage([clean[i] for i in list(order[:8]) + list(order[-8:])], ncols=8,
                       method="lupton",
                       titles=[f"{clean_t['bits_per_dim'][i]:.2f}" for i in
                               list(order[:8]) + list(order[-8:])])
    fig.savefig(out / "likelihood_extremes.png", dpi=80)
    (out / "likelihood.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
