"""Pieces of the ``astro-sbgm`` command shared by its sub-commands (no import of them)."""

__all__ = ["add_model_source", "load_model"]


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
