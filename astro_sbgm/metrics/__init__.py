"""Metrics that say how realistic generated galaxies are.

* `measure_galaxies`: a photometric catalogue (aperture fluxes, AB
  magnitudes, colours, half-light radii, optional morphology) of a batch of
  cutouts, vectorised over the batch.
* `wasserstein_1`, `cohens_d`, `synthetic_galaxy_distance`, `baseline_sgd`:
  distances between two catalogues (the paper's SGD and its real-vs-real
  yardstick).
* `frechet_distance`, `fid`, `kid`, `property_frechet_distance`: Fréchet
  and kernel distances on Inception features or on measured properties.
* `nearest_neighbours`, `memorisation_check`: does a model copy its
  training set?
* `plot_nearest_neighbours`, `plot_property_histograms`: figures
  (matplotlib `Figure` objects).

Colour composites and montages (`~astro_sbgm.visualization.linear_rgb`, the
composite FID uses, `~astro_sbgm.visualization.rgb_composite`,
`~astro_sbgm.visualization.plot_montage`,
`~astro_sbgm.visualization.plot_comparison`) are in
`astro_sbgm.visualization`.
"""

from .distances import (SGD_COLUMNS, SGDResult, baseline_sgd, cohens_d, read_catalogue,
                        synthetic_galaxy_distance, wasserstein_1)
from ._inpainting import (InpaintingAccuracy, inpainting_accuracy, inpainting_calibration,
                          plot_inpainting_accuracy)
from .fid import (FID_WEIGHTS_URL, FIDInceptionV3, fid, frechet_distance, inception_features,
                  kid, load_fid_inception, property_frechet_distance)
from .neighbours import MemorisationResult, memorisation_check, nearest_neighbours
from .photometry import (ZERO_POINT, MeasurementFlag, PhotometryWarning, ab_magnitude,
                         measure_galaxies)
from .plots import plot_nearest_neighbours, plot_property_histograms

__all__ = [
    "measure_galaxies", "ab_magnitude", "MeasurementFlag", "PhotometryWarning", "ZERO_POINT",
    "wasserstein_1", "cohens_d", "synthetic_galaxy_distance", "baseline_sgd", "SGDResult",
    "SGD_COLUMNS", "read_catalogue",
    "frechet_distance", "fid", "kid", "property_frechet_distance", "FIDInceptionV3",
    "load_fid_inception", "inception_features", "FID_WEIGHTS_URL",
    "nearest_neighbours", "memorisation_check", "MemorisationResult",
    "plot_nearest_neighbours", "plot_property_histograms",
    "inpainting_accuracy", "InpaintingAccuracy", "plot_inpainting_accuracy",
    "inpainting_calibration",
]
