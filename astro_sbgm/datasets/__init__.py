"""Data sets: mock DESI Legacy Survey cutouts made with GalSim (no download).

`make_mock_legacy_survey` draws realistic bulge + disk + knots galaxies with
DR9-like PSF and noise; `make_trivial_dataset` draws round Gaussian blobs for
fast tests.  Both return lists of `~astropy.nddata.CCDData` of shape
``(band, y, x)`` in nanomaggy with a celestial WCS.
"""

from ._mock import make_mock_legacy_survey, make_trivial_dataset
from ._sed_mock import SURVEY_PRESETS, SurveyPreset, make_mock_survey

__all__ = ["make_mock_legacy_survey", "make_trivial_dataset", "make_mock_survey",
           "SURVEY_PRESETS", "SurveyPreset"]
