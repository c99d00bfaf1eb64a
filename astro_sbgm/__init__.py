"""astro_sbgm: score-based generative models for galaxy images, through astropy."""

from ._version import __version__

__all__ = ["__version__"]
