# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The warnings that astro_sbgm issues, in one place.

Every warning of astro_sbgm is an `AstroSBGMWarning`, itself an
`~astropy.utils.exceptions.AstropyUserWarning`, so one filter silences all
of them, or turns all of them into errors, without touching other packages'
warnings.  Each class is also importable from the module that issues it
(``astro_sbgm.io.AstroSBGMInputWarning``, ``astro_sbgm.training.AstroSBGMTrainingWarning``,
...), where it was defined before.

Examples
--------
>>> import warnings
>>> from astro_sbgm.exceptions import AstroSBGMWarning
>>> from astro_sbgm.io import AstroSBGMInputWarning
>>> issubclass(AstroSBGMInputWarning, AstroSBGMWarning)
True
>>> with warnings.catch_warnings():
...     warnings.simplefilter("error", AstroSBGMWarning)
...     try:
...         warnings.warn("BUNIT missing, nanomaggy assumed", AstroSBGMInputWarning)
...     except AstroSBGMWarning as err:
...         print(f"{type(err).__name__}: {err}")
AstroSBGMInputWarning: BUNIT missing, nanomaggy assumed
"""

from astropy.utils.exceptions import AstropyDeprecationWarning, AstropyUserWarning

__all__ = ["AstroSBGMWarning", "AstroSBGMInputWarning", "AstroSBGMTrainingWarning",
           "PhotometryWarning", "FluxCalibrationWarning", "AstroddpmWarning",
           "AstroSBGMLockWarning", "AstroSBGMConditionWarning",
           "AstroSBGMDeprecationWarning"]


class AstroSBGMWarning(AstropyUserWarning):
    """The base class of every warning that astro_sbgm issues."""


class AstroSBGMInputWarning(AstroSBGMWarning):
    """An input was accepted, but something about it was assumed or changed."""


class AstroSBGMTrainingWarning(AstroSBGMWarning):
    """A training option that cannot be honoured here (and what is done instead)."""


class PhotometryWarning(AstroSBGMWarning):
    """A measurement was made, but on an assumption the user should know of."""


class FluxCalibrationWarning(AstroSBGMWarning):
    """A flux calibration was fitted on questionable input or applied twice."""


class AstroddpmWarning(AstroSBGMWarning):
    """Something about a released checkpoint that the user should know."""


class AstroSBGMLockWarning(AstroSBGMWarning):
    """A folder could not be locked (the file system does not support it)."""


class AstroSBGMConditionWarning(AstroSBGMWarning):
    """Conditional generation: a request outside the training range, or unmeasured rows."""


class AstroSBGMDeprecationWarning(AstroSBGMWarning, AstropyDeprecationWarning):
    """A deprecated name (argument, function, command-line option), kept for one release.

    The message names the replacement.
    """
