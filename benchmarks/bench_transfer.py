"""Domain transfer: realism against faithfulness, per sampler and strength.

Usage::

    nice python benchmarks/bench_transfer.py --model MODEL_DIR --n 200 --out transfer_bench

For a saved model (``GalaxyDiffusion.save``) this transfers ``--n`` inputs
that do not look like the survey -- by default programmatic Sersic
"cartoons" drawn with GalSim without PSF and without noise; with ``--inputs
other-grid`` mock galaxies drawn at another pixel scale and depth (0.168
arcsec/pixel, which `astro_sbgm.io.to_model_grid` reprojects) -- at each
strength of ``--strengths`` with each sampler of ``--samplers`` (the
deterministic ODE ``dpmpp-2m`` and the stochastic default ``dpmpp-2m-sde``;
``ddpm`` is the paper's ancestral sampler on every integer timestep, slow),
and measures

realism
    the Synthetic Galaxy Distance (`astro_sbgm.metrics`) of the transferred
    images against ``--n`` held-out mock survey galaxies
    (`astro_sbgm.datasets.make_mock_legacy_survey`, ``--held-out-seed``,
    1001 by default: a seed never used for training); lower is more
    realistic.  Two yardsticks: the inputs themselves (strength 0) and a
    second mock set of the same size (``--held-out-seed + 1``) against the
    held-out one (the real-vs-real floor at this N).
faithfulness
    the RMS pixel distance between each result and its input on the model's
    grid, in the network's [-1, 1] units (the model's own flux stretch),
    averaged over inputs; and the median absolute change of the r-band
    aperture magnitude (12 px diameter).  Lower is more faithful.

Each input ``i`` is transferred with its own generator (seed ``--seed + i``),
so it does not depend on the batch.  Prints a table and writes
``transfer.ecsv`` and ``transfer.png`` (realism against faithfulness, one
curve per sampler, points labelled by strength) to ``--out``.

A tiny model checks that the script runs end to end in a minute or two::

    nice python benchmarks/bench_transfer.py --model /tmp/tiny --n 16 \\
        --strengths 0.3,0.8 --bootstrap 0 --out /tmp/transfer-smoke
"""

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import astropy.units as u
from astropy.nddata import CCDData
from astropy.table import QTable

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.diffusion import get_sampler
from astro_sbgm.diffusion.engine import generate
from astro_sbgm.diffusion.noise import PerSampleNoise
from astro_sbgm.io import make_tan_wcs
from astro_sbgm.metrics import measure_galaxies, synthetic_galaxy_distance
from astro_sbgm.transfer import _prepare, _sdedit_times


class _SeedPerImage(PerSampleNoise):
    """Image ``i`` draws from the first stream of seed ``seed + i`` (this benchmark's layout)."""

    def generators(self, lo, n):
        return [PerSampleNoise(self.seed + i).generators(0, 1)[0] for i in range(lo, lo + n)]


#: g - r and r - z colours (mag) of the cartoons' bulges and disks.
_COLOURS = {"bulge": (0.9, 0.55), "disk": (0.45, 0.3)}


def _band_offsets(bands, gr, rz):
    """Magnitude relative to r of each band, from g - r and r - z (u, i, y by proximity)."""
    table = {"u": gr + 1.0, "g": gr, "r": 0.0, "i": -0.5 * rz, "z": -rz, "y": -1.2 * rz}
    return np.array([table[b] for b in bands])


def make_cartoons(n, size, bands, pixel_scale, seed):
    """Sersic bulge + exponential disk "cartoons": no PSF, no noise, nanomaggies.

    r-band magnitudes uniform in 15 to 18, half-light radii log-uniform in 0.7
    to 3 arcsec, axis ratios 0.3 to 1, bulge fraction uniform in 0 to 1
    (bulge n = 4 at half the radius, redder than the disk).  Galaxy ``i``
    depends on ``(seed, i)`` only.
    """
    import galsim

    out = []
    wcs = make_tan_wcs((size, size), pixel_scale * u.arcsec, 0.0, 0.0)
    gsp = galsim.GSParams(maximum_fft_size=16384)
    for child in np.random.SeedSequence(seed).spawn(n):
        rng = np.random.default_rng(child)
        mag_r = rng.uniform(15.0, 18.0)
        hlr = math.exp(rng.uniform(math.log(0.7), math.log(3.0)))
        q, beta = rng.uniform(0.3, 1.0), rng.uniform(0.0, 180.0)
        bf = rng.uniform(0.0, 1.0)
        flux_r = 10 ** (-0.4 * (mag_r - 22.5))
        planes = []
        for off_b, off_d in zip(_band_offsets(bands, *_COLOURS["bulge"]),
                                _band_offsets(bands, *_COLOURS["disk"])):
            parts = []
            if bf > 0.02:
                parts.append(galsim.Sersic(4.0, half_light_radius=0.5 * hlr,
                                           flux=bf * flux_r * 10 ** (-0.4 * off_b),
                                           gsparams=gsp))
            if bf < 0.98:
                parts.append(galsim.Exponential(half_light_radius=hlr,
                                                flux=(1 - bf) * flux_r * 10 ** (-0.4 * off_d),
                                                gsparams=gsp))
            gal = galsim.Add(parts).shear(q=q, beta=beta * galsim.degrees)
            img = gal.drawImage(nx=size, ny=size, scale=pixel_scale, method="real_space")
            planes.append(img.array.astype(np.float32))
        meta = {"BANDS": ",".join(bands), "BUNIT": "nanomaggy", "MAG_R": mag_r, "HLR": hlr}
        out.append(CCDData(np.stack(planes), unit=u.nanomaggy, wcs=wcs, meta=meta))
    return out


def make_inputs(kind, n, model, seed):
    """The images to transfer and a short description."""
    size, bands = int(model.image_size), tuple(model.bands_)
    scale = float(model.pixel_scale)
    if kind == "cartoons":
        return (make_cartoons(n, size, bands, scale, seed),
                "GalSim Sersic bulge+disk cartoons, no PSF, no noise")
    if kind == "other-grid":
        other = 0.168
        side = int(math.ceil(size * scale / other))
        side += side % 2
        imgs = make_mock_legacy_survey(n, size=max(side, 16), bands="".join(bands), seed=seed,
                                       pixel_scale=other)
        return imgs, f"mock galaxies at {other} arcsec/pixel (other grid and depth)"
    raise ValueError(f"--inputs must be 'cartoons' or 'other-grid', got {kind!r}")


def _sgd(cat, held, bootstrap, seed):
    try:
        res = synthetic_galaxy_distance(cat, held, bootstrap=bootstrap, seed=seed)
    except (ValueError, KeyError) as err:   # e.g. every galaxy dropped
        print(f"    SGD failed: {err}", flush=True)
        return math.nan, math.nan, 0
    return float(res.total), float(res.bootstrap_std), int(res.n_used_a)


def _mag_change(cat_out, cat_in, band="r"):
    a, b = cat_out[f"mag_{band}"], cat_in[f"mag_{band}"]
    a = np.asarray(getattr(a, "value", a), float)
    b = np.asarray(getattr(b, "value", b), float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.median(np.abs(a[ok] - b[ok]))) if ok.any() else math.nan


def run(args):
    model = GalaxyDiffusion.load(args.model, device=args.device)
    bands = tuple(model.bands_)
    scaler = model.scaler_
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  model {args.model}: {model.image_size} px, "
          f"{''.join(bands)}, {model.n_steps_} training steps; {args.n} inputs "
          f"({args.inputs}), held-out mocks seed {args.held_out_seed}", flush=True)

    inputs, described = make_inputs(args.inputs, args.n, model, args.input_seed)
    x0 = np.stack([_prepare(model, img, None, None, None, "display", None)[0]
                   for img in inputs])                    # (n, band, S, S) in [-1, 1]
    in_flux = scaler.inverse_transform(x0)                # the input on the model's grid
    held = make_mock_legacy_survey(args.n, size=model.image_size, bands="".join(bands),
                                   seed=args.held_out_seed)
    held_cat = measure_galaxies(held)
    in_cat = measure_galaxies(in_flux, bands=bands)
    floor = _sgd(measure_galaxies(make_mock_legacy_survey(
        args.n, size=model.image_size, bands="".join(bands), seed=args.held_out_seed + 1)),
        held_cat, args.bootstrap, args.seed)
    start = _sgd(in_cat, held_cat, args.bootstrap, args.seed)
    print(f"  yardsticks: inputs vs held-out SGD {start[0]:.3f} +/- {start[1]:.3f}; "
          f"mocks vs held-out (floor) {floor[0]:.3f} +/- {floor[1]:.3f}", flush=True)

    rows = [dict(sampler="inputs", strength=0.0, nfe=0, sgd=start[0], sgd_std=start[1],
                 n_used=start[2], rms=0.0, dmag_r=0.0, seconds=0.0)]
    den = model.denoiser(args.weights)
    for name in args.samplers.split(","):
        for strength in [float(s) for s in args.strengths.split(",")]:
            rule = get_sampler(name)
            times = _sdedit_times(model, strength, rule, None if name == "ddpm" else args.steps)
            t0 = time.perf_counter()
            out, nfe = generate(den, x0, times, rule, _SeedPerImage(args.seed),
                                args.batch_size)
            scaled = out.numpy()
            seconds = time.perf_counter() - t0
            flux = scaler.inverse_transform(scaled)
            cat = measure_galaxies(flux, bands=bands)
            sgd = _sgd(cat, held_cat, args.bootstrap, args.seed)
            rms = float(np.mean(np.sqrt(np.mean((scaled - x0) ** 2, axis=(1, 2, 3)))))
            row = dict(sampler=name, strength=strength, nfe=int(nfe), sgd=sgd[0],
                       sgd_std=sgd[1], n_used=sgd[2], rms=rms,
                       dmag_r=_mag_change(cat, in_cat), seconds=seconds)
            rows.append(row)
            print(f"  {name:13s} strength {strength:.2f}: SGD {row['sgd']:.3f} +/- "
                  f"{row['sgd_std']:.3f}  RMS {rms:.4f}  |dmag_r| {row['dmag_r']:.3f}  "
                  f"({nfe} NFE, {seconds:.0f} s)", flush=True)
    table = QTable(rows=rows)
    table.meta.update({"model": str(args.model), "n": args.n, "inputs": described,
                       "held_out_seed": args.held_out_seed, "input_seed": args.input_seed,
                       "floor_sgd": floor[0], "floor_sgd_std": floor[1],
                       "weights": args.weights, "steps": args.steps,
                       "date": time.strftime("%Y-%m-%d %H:%M")})
    return table


def plot(table, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for name in [s for s in dict.fromkeys(table["sampler"]) if s != "inputs"]:
        sel = table[table["sampler"] == name]
        ax.plot(sel["rms"], sel["sgd"], "o-", label=name)
        for r in sel:
            ax.annotate(f"{r['strength']:.1f}", (r["rms"], r["sgd"]), fontsize=8,
                        textcoords="offset points", xytext=(4, 3))
    inp = table[table["sampler"] == "inputs"]
    if len(inp):
        ax.axhline(inp["sgd"][0], color="0.4", ls=":", label="inputs (strength 0)")
    ax.axhline(table.meta["floor_sgd"], color="k", ls="--", label="mock vs held-out (floor)")
    ax.set_xlabel("faithfulness: RMS distance to the input ([-1, 1] units, lower = closer)")
    ax.set_ylabel("realism: SGD to held-out survey galaxies (lower = more real)")
    ax.set_title(f"SDEdit transfer, {table.meta['n']} inputs", fontsize=10)
    if np.nanmax(np.asarray(table["sgd"], float)) > 10 * max(table.meta["floor_sgd"], 1e-3):
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model directory written by GalaxyDiffusion.save")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for transfer.ecsv and transfer.png")
    parser.add_argument("--n", type=int, default=200,
                        help="inputs, and held-out galaxies (default 200)")
    parser.add_argument("--strengths", default="0.3,0.4,0.5,0.6,0.7,0.8")
    parser.add_argument("--samplers", default="dpmpp-2m,dpmpp-2m-sde",
                        help="comma-separated (default: the ODE and the stochastic default)")
    parser.add_argument("--steps", type=int, default=20,
                        help="grid points of the few-step samplers (ddpm: every timestep)")
    parser.add_argument("--inputs", choices=("cartoons", "other-grid"), default="cartoons")
    parser.add_argument("--held-out-seed", type=int, default=1001)
    parser.add_argument("--input-seed", type=int, default=2002)
    parser.add_argument("--seed", type=int, default=0, help="seed of the transfers")
    parser.add_argument("--bootstrap", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--weights", choices=("ema", "model"), default="ema")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error(f"--n must be at least 2 (an SGD needs galaxies on both sides), "
                     f"got {args.n}")
    if args.threads:
        torch.set_num_threads(args.threads)
    for s in args.strengths.split(","):
        if not 0.0 < float(s) <= 1.0:
            parser.error(f"--strengths must lie in (0, 1], got {s}")
    for name in args.samplers.split(","):
        try:
            get_sampler(name)
        except ValueError as err:
            parser.error(f"--samplers: {err}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    table = run(args)
    table.write(out / "transfer.ecsv", format="ascii.ecsv", overwrite=True)
    plot(table, out / "transfer.png")
    for col in ("sgd", "sgd_std", "rms", "dmag_r", "seconds"):
        table[col].info.format = ".3f" if col != "seconds" else ".0f"
    print()
    table.pprint(max_lines=-1, max_width=-1)
    print(f"floor (mocks vs held-out, N = {args.n}): {table.meta['floor_sgd']:.3f} +/- "
          f"{table.meta['floor_sgd_std']:.3f}")
    print(f"wrote {out / 'transfer.ecsv'} and {out / 'transfer.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
