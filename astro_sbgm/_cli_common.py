"""Pieces of the ``astro-sbgm`` command shared by its sub-commands (no import of them).

One spelling, one meaning: every sub-command adds its common options through
these helpers, so ``--seed``, ``--input-bands``, ``-n``, ``--steps``,
``--quiet`` and the output file names mean the same everywhere.
"""

import argparse
import warnings

from .exceptions import AstroSBGMDeprecationWarning

__all__ = ["add_model_source", "load_model", "DeprecatedOption", "add_deprecated",
           "add_progress", "add_seed", "add_input_bands", "add_count", "add_sampler_options",
           "numbered_name", "FILE_NUMBER_DIGITS", "expand_inputs"]

#: Files a command writes one per galaxy are named ``STEM_NNNNNN.fits``: the
#: galaxy's 0-based index in six digits (`numbered_name`), in every command.
FILE_NUMBER_DIGITS = 6


def numbered_name(stem, index, suffix=".fits"):
    """The name of file ``index`` (0-based) of a numbered series: ``stem_000042.fits``."""
    return f"{stem}_{int(index):0{FILE_NUMBER_DIGITS}d}{suffix}"


class DeprecatedOption(argparse.Action):
    """An old spelling of an option: it still works, with an `AstroSBGMDeprecationWarning`.

    Give ``replacement`` (what to write instead, in words); an option without
    a value takes ``nargs=0`` and stores ``const``.
    """

    def __init__(self, option_strings, dest, replacement, nargs=None, const=None,
                 default=argparse.SUPPRESS, **kwargs):
        self.replacement = replacement
        kwargs["help"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, nargs=nargs, const=const, default=default,
                         **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(f"{option_string} is deprecated and goes in the next release; "
                      f"{self.replacement}", AstroSBGMDeprecationWarning, stacklevel=2)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_deprecated(parser, old, dest, replacement, flag=False, const=True, **kwargs):
    """Accept the old spelling ``old`` of an option (hidden from ``--help``), with a warning."""
    if flag:
        kwargs.update(nargs=0, const=const)
    parser.add_argument(old, dest=dest, action=DeprecatedOption, replacement=replacement,
                        **kwargs)


def add_progress(parser):
    """``--quiet`` (also ``--no-progress``): no progress bars.  Bars are on by default."""
    parser.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                        help="no progress bars (every long command shows them by default)")


def add_seed(parser, what, default=0):
    """``--seed``: the seed of every random number the command draws (``what`` says which)."""
    shown = ("a fresh one, recorded in the output's SEED card" if default is None
             else default)
    parser.add_argument("--seed", type=int, default=default,
                        help=f"seed of every random number this command draws ({what}); "
                        f"the same seed gives the same result (default {shown})")


def add_input_bands(parser):
    """``--input-bands``: band names of input files that do not record them."""
    parser.add_argument("--input-bands", dest="input_bands", metavar="BANDS", default=None,
                        help="band names of the input files, in order (e.g. grz, or full "
                        "filter names such as sdss:g,sdss:r,sdss:z for another survey's "
                        "filters), for files that do not record them (BANDS, BANDn or "
                        "FILTERn cards)")
    add_deprecated(parser, "--bands", "input_bands", "use --input-bands (--bands names the "
                   "bands of a new model, in train only)")


def add_count(parser, default, what="galaxies to draw"):
    """``-n``/``--n``: how many galaxies the command draws."""
    # -n as well: under torchrun, whose own parser takes "--n" for an abbreviation of
    # its --nnodes/--nproc-per-node, write "-n 100000"
    parser.add_argument("-n", "--n", type=int, default=default,
                        help=f"number of {what} (default %(default)s; under torchrun "
                        "write -n N)")


def add_sampler_options(parser, sampler_default=None, steps_default="the method's"):
    """``--sampler``, ``--steps`` (sampler steps) and ``--weights``."""
    default = (f"default {sampler_default}" if sampler_default
               else "default: the command's own")
    parser.add_argument("--sampler", default=sampler_default,
                        help=f"sampler: ddpm, ddim, dpmpp-2m, dpmpp-2m-sde, euler, heun "
                        f"({default})")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps, i.e. network evaluations of the reverse "
                        f"process (default {steps_default}; training steps are "
                        "--train-steps)")
    parser.add_argument("--weights", choices=("ema", "model"), default="ema",
                        help="ema: the weight average (default); model: the raw weights")


def add_model_source(parser, required=True):
    """Add ``--model DIR`` / ``--pretrained NAME`` (one of the two) to a sub-command."""
    from .pretrained import DEFAULT_MODEL

    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--model", metavar="DIR",
                       help="folder of a model written by GalaxyDiffusion.save")
    group.add_argument("--pretrained", metavar="NAME", nargs="?", const=DEFAULT_MODEL,
                       help="a model bundled with the package (default "
                       f"{DEFAULT_MODEL}; astro_sbgm.pretrained.available() lists them)")
    return group


def load_model(args, device="auto"):
    """The model that ``--model`` or ``--pretrained`` names."""
    from .estimator import GalaxyDiffusion

    if getattr(args, "pretrained", None):
        return GalaxyDiffusion.pretrained(args.pretrained, device=device)
    return GalaxyDiffusion.load(args.model, device=device)


def expand_inputs(items):
    """The FITS files that command-line inputs name: files, directories (their FITS
    files, sorted) and glob patterns (sorted matches), in the order given.

    Raises
    ------
    ValueError
        If the inputs name no file.
    """
    import glob
    from pathlib import Path

    files = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += sorted(str(f) for f in p.iterdir() if f.is_file() and f.name.lower()
                            .endswith((".fits", ".fit", ".fts", ".fz", ".fits.gz", ".fit.gz")))
        elif not p.exists() and any(c in str(item) for c in "*?["):
            files += sorted(glob.glob(str(item)))
        else:
            files.append(str(item))
    if not files:
        raise ValueError(f"no FITS files found in {' '.join(map(str, items))}")
    return files
