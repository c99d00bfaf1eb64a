"""astro_sbgm: score-based generative models (denoising diffusion) for galaxy images.

The public face is `GalaxyDiffusion`, a scikit-learn-like estimator that takes
and returns astropy objects (`~astropy.nddata.CCDData` in nanomaggies with a
WCS).  Subpackages: `astro_sbgm.io` (reading and writing images),
`astro_sbgm.preprocessing` (flux scaling), `astro_sbgm.nn` (the U-Net),
`astro_sbgm.diffusion` (schedules, objectives, samplers), `astro_sbgm.datasets`
(a built-in mock Legacy Survey), `astro_sbgm.metrics` (photometry and
distances) and `astro_sbgm.visualization`.
"""

from ._version import __version__
from .estimator import GalaxyDiffusion, NotFittedError, PRESETS
from .inpainting import inpaint
from .simulation import cutouts, inject, to_galsim

__all__ = ["__version__", "GalaxyDiffusion", "NotFittedError", "PRESETS", "inpaint", "inject",
           "cutouts", "to_galsim"]
