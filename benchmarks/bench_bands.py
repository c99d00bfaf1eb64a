"""Figures and tables of the "Bands and surveys" page.

Usage::

    python benchmarks/bench_bands.py [--out docs/_static]

Writes ``filter_curves.png`` (the measured curves of the registry, one panel
per survey) and ``colour_terms_sdss_decam.png`` (SDSS-to-DECam colour terms
fitted on the template library, with their residuals), and prints:

* pivot and effective wavelengths of the filters drawn;
* the SDSS -> DECam terms (degree 2, default colours) with their scatter,
  and the held-out scatter (each of Sbc and Scd left out of the fit);
* linear SDSS -> DES terms in the colours of the published stellar
  transformations (DES DR2 against SDSS Stripe 82 stars: g with g-i; r, i, z
  with r-i), next to the published slopes.

Seconds on one core; nothing is downloaded.
"""

import argparse
import os
import warnings

import numpy as np
import astropy.units as u

from astro_sbgm import bands as B

__all__ = []

PANELS = [
    ("DECam (decam:, the bare letters)", "decam:u,decam:g,decam:r,decam:i,decam:z,decam:Y"),
    ("Legacy Surveys north (bass:, mzls:)", "bass:g,bass:r,mzls:z"),
    ("SDSS (sdss:)", "sdss:u,sdss:g,sdss:r,sdss:i,sdss:z"),
    ("HSC (hsc:)", "hsc:g,hsc:r,hsc:i,hsc:z,hsc:y"),
    ("LSST (lsst:)", "lsst:u,lsst:g,lsst:r,lsst:i,lsst:z,lsst:y"),
]

#: Published linear SDSS -> DES transformations for stars (DES DR2 WAVG_PSF_MAG
#: against SDSS DR13 Stripe 82 PSF magnitudes; DES Collaboration, DR2
#: transformations page): target, SDSS band, colour, slope, intercept, rms.
DES_DR2_STARS = [
    ("des:g", "sdss:g", ("sdss:g", "sdss:i"), -0.061, 0.008, 0.017),
    ("des:r", "sdss:r", ("sdss:r", "sdss:i"), -0.155, -0.007, 0.014),
    ("des:i", "sdss:i", ("sdss:r", "sdss:i"), -0.166, 0.032, 0.018),
    ("des:z", "sdss:z", ("sdss:r", "sdss:i"), -0.056, 0.027, 0.018),
]

#: DES science verification colour terms (slope only; DES-SDSS colour terms page of
#: the DES SV wiki): synthetic photometry of the Pickles (1998) stellar library
#: and observed standard stars, g and r in g-r (0 < g-r < 1), i and z in i-z
#: (0 < i-z < 1): target -> (colour, synthetic slope, observed slope).
DES_SV = {"des:g": (("sdss:g", "sdss:r"), -0.084, -0.103),
          "des:r": (("sdss:g", "sdss:r"), -0.087, -0.080),
          "des:i": (("sdss:i", "sdss:z"), -0.324, -0.298),
          "des:z": (("sdss:i", "sdss:z"), -0.080, -0.086)}


def plot_curves(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PANELS), 1, figsize=(7.5, 9.5), sharex=True)
    cmap = plt.get_cmap("turbo")
    for ax, (title, spec) in zip(axes, PANELS):
        for f in B.parse_filters(spec):
            lam = f.response.spectral_axis.to_value(u.nm)
            thr = f.response.flux.value
            colour = cmap(np.clip((f.pivot_wavelength.to_value(u.nm) - 330) / 800, 0, 1))
            ax.plot(lam, thr, color=colour, lw=1.2)
            ax.fill_between(lam, thr, color=colour, alpha=0.15, lw=0)
            ax.text(f.pivot_wavelength.to_value(u.nm), thr.max() * 1.04, f.band,
                    ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylim(0, None)
        ax.set_ylabel("throughput", fontsize=8)
        ax.margins(y=0.2)
    axes[-1].set_xlim(300, 1100)
    axes[-1].set_xlabel("wavelength (nm)")
    fig.suptitle("Measured filter curves bundled with speclite (photon-counting throughput)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_terms(terms, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src = B.parse_filters("sdss:u,sdss:g,sdss:r,sdss:i,sdss:z")
    lib = B._library(B.TEMPLATE_NAMES, B._DEFAULT_REDSHIFTS, B._DEFAULT_EBV)
    targets = list(terms.terms.values())
    filters = list(src) + [B.get_filter(t.target) for t in targets]
    mags = -2.5 * np.log10(B._library_fluxes(lib, filters))
    col = {f.name: mags[:, i] for i, f in enumerate(filters)}
    kinds = np.array([label[0] for label, _ in lib])
    fig, axes = plt.subplots(2, len(targets), figsize=(3.0 * len(targets), 5.2),
                             sharex="col", gridspec_kw={"height_ratios": [2, 1]})
    markers = {"E": "o", "Sbc": "s", "Scd": "^", "Im": "D"}
    for k, t in enumerate(targets):
        x = col[t.colour[0]] - col[t.colour[1]]
        y = col[t.target] - col[t.source_band]
        grid = np.linspace(x.min(), x.max(), 100)
        for name, m in markers.items():
            sel = kinds == name
            axes[0, k].scatter(x[sel], y[sel], s=8, marker=m, label=name, alpha=0.7)
            axes[1, k].scatter(x[sel], y[sel] - t(x[sel]), s=8, marker=m, alpha=0.7)
        axes[0, k].plot(grid, t(grid), "k-", lw=1)
        axes[1, k].axhline(0, color="k", lw=0.8)
        a, b = (c.split(":")[1] for c in t.colour)
        axes[1, k].set_xlabel(f"SDSS {a}-{b}")
        axes[0, k].set_title(f"{t.target} - {t.source_band}\nrms {t.scatter:.3f} mag",
                             fontsize=9)
        axes[1, k].set_ylabel("residual (mag)" if k == 0 else "")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def held_out_rms(source, target):
    out = {}
    src, tgt = B.parse_filters(source), B.parse_filters(target)
    for held in ("Sbc", "Scd"):
        terms = B.fit_colour_terms(source, target,
                                   templates=[t for t in B.TEMPLATE_NAMES if t != held])
        lib = B._library([held], B._DEFAULT_REDSHIFTS, B._DEFAULT_EBV)
        ms = -2.5 * np.log10(B._library_fluxes(lib, src))
        mt = -2.5 * np.log10(B._library_fluxes(lib, tgt))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = terms.predict({f.name: ms[:, i] for i, f in enumerate(src)})
        for i, f in enumerate(tgt):
            rms = float(np.sqrt(np.mean((pred[f.name].value - mt[:, i]) ** 2)))
            out[f.name] = max(out.get(f.name, 0.0), rms)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("docs", "_static"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    print("filter            pivot (nm)  effective (nm)  speclite curve")
    for _, spec in PANELS:
        for f in B.parse_filters(spec):
            print(f"{f.name:<16} {f.pivot_wavelength.to_value(u.nm):10.1f} "
                  f"{f.effective_wavelength.to_value(u.nm):15.1f}  {f.meta['speclite_name']}")
    plot_curves(os.path.join(args.out, "filter_curves.png"))

    src = "sdss:u,sdss:g,sdss:r,sdss:i,sdss:z"
    tgt = "decam:g,decam:r,decam:i,decam:z"
    terms = B.fit_colour_terms(src, tgt)
    held = held_out_rms(src, tgt)
    print("\nSDSS -> DECam, degree 2, library of", terms[tgt.split(',')[0]].n_seds, "spectra")
    for t in terms.terms.values():
        print(f"  {t}   held-out rms {held[t.target]:.4f}")
    plot_terms(terms, os.path.join(args.out, "colour_terms_sdss_decam.png"))

    print("\nSDSS -> DES, linear, in the colours of DES DR2 (stars, Stripe 82)")
    print("  target  colour   ours: slope  icept   rms    DES DR2 stars: slope  icept   rms")
    for target, sband, colour, slope, icept, rms in DES_DR2_STARS:
        fit = B.fit_colour_terms("sdss:g,sdss:r,sdss:i,sdss:z", target, degree=1,
                                 colours={target: colour})[target]
        a, b = (c.split(":")[1] for c in colour)
        print(f"  {target:<7} {a}-{b:<6} {fit.coefficients[1]:+11.3f} {fit.coefficients[0]:+6.3f}"
              f" {fit.scatter:5.3f} {slope:+21.3f} {icept:+6.3f} {rms:5.3f}")
    print("\nSDSS -> DES, linear, in the colours of the DES SV colour terms (stars)")
    print("  target  colour   ours: slope   rms    Pickles synthetic   observed")
    for target, (colour, synth, observed) in DES_SV.items():
        fit = B.fit_colour_terms("sdss:g,sdss:r,sdss:i,sdss:z", target, degree=1,
                                 colours={target: colour})[target]
        a, b = (c.split(":")[1] for c in colour)
        print(f"  {target:<7} {a}-{b:<6} {fit.coefficients[1]:+11.3f} {fit.scatter:6.3f}"
              f" {synth:+17.3f} {observed:+11.3f}")
    print("\nwrote", os.path.join(args.out, "filter_curves.png"), "and",
          os.path.join(args.out, "colour_terms_sdss_decam.png"))


if __name__ == "__main__":
    main()
