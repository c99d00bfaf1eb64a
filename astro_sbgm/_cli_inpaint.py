"""The ``astro-sbgm inpaint`` and ``astro-sbgm transfer`` subcommands.

``astro_sbgm.cli`` adds them with `add_inpaint_parser` and
`add_transfer_parser`; each parser sets ``func`` to its command, which takes
the parsed arguments and returns the exit status::

    astro-sbgm inpaint IN.fits [--mask MASK.fits [--mask-bits BRIGHT,SATUR_G]] -o OUT.fits
                       --model DIR [--save-draws]
    astro-sbgm transfer IN.png|IN.fits -o OUT.fits --model DIR [--strength 0.6] [--ode]
"""

from pathlib import Path

from ._cli_common import (add_deprecated, add_input_bands, add_model_source, add_progress,
                          add_sampler_options, add_seed, load_model)

__all__ = ["add_inpaint_parser", "add_transfer_parser", "inpaint_command", "transfer_command",
           "write_result", "parse_mask_bits"]


def write_result(result, path, overwrite=False, draws=None):
    """Write an inpainting or transfer result to FITS.

    `astro_sbgm.io.write_image` writes the data (nanomaggy, float32), the
    WCS, the header cards and the ``MASK``/``UNCERT`` extensions; the map of
    generated pixels (``result.flags``, 1 = generated) follows as a
    ``FLAGS`` extension (uint8) when present, then one ``DRAW`` extension
    per draw when ``draws`` are given (``EXTNAME = 'DRAW'``, ``EXTVER`` =
    1, 2, ..., nanomaggy float32, ``DRAWIDX`` the draw's 0-based index):
    the galaxies to measure, where the primary HDU holds their mean.  The
    file is assembled under a temporary name and renamed, so an existing
    file is replaced whole or not at all (one `~astro_sbgm.io.write_image`
    call writes every extension).

    Parameters
    ----------
    result : `~astropy.nddata.CCDData`
        From `astro_sbgm.inpainting.inpaint` or `astro_sbgm.transfer.transfer`.
    path : str or path
        Output file.
    overwrite : bool
        Replace an existing file.
    draws : list of `~astropy.nddata.CCDData`, optional
        The draws (``return_draws=True``), in any flux unit.

    Returns
    -------
    `pathlib.Path`

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (nothing is written).
    """
    from .io import write_image

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True (--overwrite) to "
                              "replace it")
    return write_image(result, path, overwrite=True, draws=draws)


def _common(p):
    p.add_argument("-o", "--output", required=True, help="output FITS file")
    add_model_source(p)
    p.add_argument("--n-draws", type=int, default=1,
                   help="independent draws; the output is their mean, with their standard "
                        "deviation as UNCERT extension when > 1 (default 1); the mean is a "
                        "summary, measure the draws (--save-draws)")
    p.add_argument("--save-draws", action="store_true",
                   help="also write every draw as a DRAW extension (EXTVER 1..N): the "
                        "galaxies to measure, with their sky noise")
    add_sampler_options(p)
    add_seed(p, "the draws", default=None)
    add_input_bands(p)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_progress(p)
    add_deprecated(p, "--progress", "progress_flag", "progress bars are shown by default "
                   "now: drop --progress (--quiet hides them)", flag=True)


def add_inpaint_parser(subparsers):
    """Add ``inpaint`` to an argparse subparsers object; returns the parser."""
    p = subparsers.add_parser(
        "inpaint", help="fill masked pixels (satellite trails, stars) with a model",
        description="Fill the masked pixels of a FITS image with a trained model.  The "
                    "mask is --mask (a FITS image, non-zero = fill; with --mask-bits a "
                    "bit mask such as a Legacy Survey maskbits file), else the file's MASK "
                    "extension; NaN pixels are always filled.  Known pixels are kept; a "
                    "FLAGS extension marks the generated ones.")
    p.add_argument("input", help="input FITS image")
    p.add_argument("--mask", default=None, help="FITS mask, non-zero = pixel to fill")
    p.add_argument("--mask-bits", default=None, metavar="BITS",
                   help="fill only the pixels of --mask (a bit mask, e.g. a Legacy Survey "
                        "maskbits file) with one of these bits set: comma-separated names "
                        "(BRIGHT,SATUR_G,...; a per-band bit fills its own band) or integer "
                        "values (0x2)")
    p.add_argument("--method", choices=("measured", "fast", "paper", "repaint"),
                   default="measured",
                   help="measured (default: known pixels as noisy measurements, a gradient "
                        "step through the network, 30 steps = 60 evaluations), fast (50 "
                        "evaluations), paper (every step from t=950) or repaint (RePaint "
                        "resampling, about 900 evaluations)")
    p.add_argument("--t-start", type=float, default=None,
                   help="first timestep (default 0.95 T)")
    p.add_argument("--jump-length", type=int, default=None,
                   help="RePaint jump length (default: the method's)")
    p.add_argument("--n-resample", type=int, default=None, help="RePaint passes")
    p.add_argument("--hdu", default=None, help="HDU index or name of the image")
    _common(p)
    p.set_defaults(func=inpaint_command)
    return p


def add_transfer_parser(subparsers):
    """Add ``transfer`` to an argparse subparsers object; returns the parser."""
    p = subparsers.add_parser(
        "transfer", help="make a picture or another survey's image look like the model's "
                         "survey (SDEdit)",
        description="Domain transfer (SDEdit): noise the input to t = strength * T and "
                    "run the reverse process.  Pictures (PNG, JPEG) map RGB onto the "
                    "model's bands; FITS images are reprojected onto the model's grid.")
    p.add_argument("input", help="input picture (PNG, JPEG) or FITS image")
    p.add_argument("--strength", type=float, default=0.6,
                   help="in (0, 1]; 0.6 is the paper's T = 600 of 1000 (default)")
    p.add_argument("--ode", action="store_true",
                   help="deterministic probability-flow ODE (dpmpp-2m) instead of the "
                        "default stochastic sampler (dpmpp-2m-sde); same as --sampler "
                        "dpmpp-2m")
    p.add_argument("--mapping", choices=("display", "wavelength"), default="display",
                   help="RGB to band mapping of pictures (default display)")
    p.add_argument("--flux-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="put picture intensities 0..1 on LO..HI nanomaggies")
    _common(p)
    p.set_defaults(func=transfer_command)
    return p


def _hdu(value):
    if value is None:
        return None
    return int(value) if str(value).lstrip("-").isdigit() else value


def _model_and_sampler(args):
    """The saved model of ``--model`` and the ``--sampler`` choice as keyword arguments."""
    model = load_model(args, device=args.device)
    return model, ({} if args.sampler is None else {"sampler": args.sampler})


def parse_mask_bits(text):
    """The bits of ``--mask-bits``: names and integer values, checked.

    Parameters
    ----------
    text : str or None
        Comma-separated bit names (``"BRIGHT,SATUR_G"``) or integer values
        (``"0x2"``, ``"2"``).

    Returns
    -------
    list or None
        The bits (str names, int values), None for None.

    Raises
    ------
    ValueError
        For an empty list or an unknown bit name (named, with the known ones),
        in the flag's words.
    """
    if text is None:
        return None
    from .io import check_mask_bits

    bits = []
    for token in (t.strip() for t in str(text).split(",")):
        if not token:
            continue
        try:
            bits.append(int(token, 0))
        except ValueError:
            bits.append(token)
    if not bits:
        raise ValueError("--mask-bits is empty; give bit names such as BRIGHT,SATUR_G, or "
                         "drop --mask-bits to fill every non-zero pixel of --mask")
    try:
        return check_mask_bits(bits)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--mask-bits {text}: {err}") from None


def inpaint_command(args):
    """Run ``astro-sbgm inpaint`` from parsed arguments; returns 0."""
    from .inpainting import inpaint

    mask_bits = parse_mask_bits(getattr(args, "mask_bits", None))
    if mask_bits is not None and args.mask is None:
        raise ValueError("--mask-bits selects bits of the bit mask given with --mask; give "
                         "--mask MASKBITS.fits (e.g. a Legacy Survey maskbits file)")
    model, kwargs = _model_and_sampler(args)
    result = inpaint(model, args.input, mask=args.mask, mask_bits=mask_bits,
                     method=args.method,
                     n_draws=args.n_draws, t_start=args.t_start, steps=args.steps,
                     jump_length=args.jump_length, n_resample=args.n_resample, seed=args.seed,
                     weights=args.weights, bands=args.input_bands, hdu=_hdu(args.hdu),
                     progress=not args.quiet, return_draws=args.save_draws, **kwargs)
    result, draws = result if args.save_draws else (result, None)
    write_result(result, args.output, overwrite=args.overwrite, draws=draws)
    print(f"{args.output}: {result.meta['NFILLED']} pixel(s) inpainted ({args.method}, "
          f"{result.meta['NFE']} network evaluations per draw, {args.n_draws} draw(s), "
          f"seed {result.meta['SEED']})")
    return 0


def transfer_command(args):
    """Run ``astro-sbgm transfer`` from parsed arguments; returns 0."""
    from .transfer import transfer

    if args.ode and args.sampler not in (None, "dpmpp-2m"):
        raise ValueError(f"--ode runs the dpmpp-2m ODE solver; drop --ode or "
                         f"--sampler {args.sampler}")
    model, kwargs = _model_and_sampler(args)
    if args.ode:
        kwargs = {"sampler": "dpmpp-2m"}
    result = transfer(model, args.input, strength=args.strength, n_draws=args.n_draws,
                      steps=args.steps, seed=args.seed, weights=args.weights,
                      bands=args.input_bands, mapping=args.mapping, flux_range=args.flux_range,
                      progress=not args.quiet, return_draws=args.save_draws, **kwargs)
    result, draws = result if args.save_draws else (result, None)
    write_result(result, args.output, overwrite=args.overwrite, draws=draws)
    print(f"{args.output}: SDEdit at strength {args.strength} ({result.meta['SAMPLER']}, "
          f"{result.meta['NFE']} network evaluations per draw, seed {result.meta['SEED']})")
    return 0
