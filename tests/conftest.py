"""Shared fixtures for the astro_sbgm tests (small, in memory, seeded)."""

import numpy as np
import pytest
import torch
from astropy.io import fits

# The test networks are tiny: one thread is faster than several for them, and it
# keeps the suite from fighting over the cores of a small CI machine.
torch.set_num_threads(1)

#: Legacy Survey pixel scale in degrees.
LEGACY_SCALE_DEG = 0.262 / 3600.0


def make_legacy_hdu(n=64, bands="grz", bunit=None, bands_card=True, seed=0):
    """A PrimaryHDU laid out like a Legacy Survey cutout-service file.

    One ``(band, y, x)`` float32 cube, a 2-axis celestial TAN WCS (CD
    matrix) in the 3-axis header, ``BAND0``, ``BAND1``, ... cards (and
    ``BANDS`` when ``bands_card``), ``BUNIT`` only when ``bunit`` is given.
    The data are a round galaxy of a few nanomaggies plus sky noise.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    blob = np.exp(-0.5 * (xx ** 2 + yy ** 2) / 4.0 ** 2)
    cube = np.stack([(1.0 + i) * 3.0 * blob + rng.normal(0.0, 0.01, (n, n))
                     for i in range(len(bands))]).astype(np.float32)
    header = fits.Header()
    header["CTYPE1"] = "RA---TAN"
    header["CTYPE2"] = "DEC--TAN"
    header["CRVAL1"] = 150.1
    header["CRVAL2"] = 2.2
    header["CRPIX1"] = n / 2.0 + 0.5
    header["CRPIX2"] = n / 2.0 + 0.5
    header["CD1_1"] = -LEGACY_SCALE_DEG
    header["CD1_2"] = 0.0
    header["CD2_1"] = 0.0
    header["CD2_2"] = LEGACY_SCALE_DEG
    header["SURVEY"] = "LegacySurvey"
    header["VERSION"] = "DR9"
    if bands_card:
        header["BANDS"] = bands
    for i, b in enumerate(bands):
        header[f"BAND{i}"] = b
    if bunit is not None:
        header["BUNIT"] = bunit
    return fits.PrimaryHDU(cube, header=header)


@pytest.fixture
def legacy_cube():
    """A Legacy-Survey-style 3x64x64 grz cube (PrimaryHDU) with a TAN WCS, no BUNIT."""
    return make_legacy_hdu()


@pytest.fixture
def legacy_factory():
    """The builder behind `legacy_cube`, for variants (size, bands, BUNIT, no BANDS card)."""
    return make_legacy_hdu


@pytest.fixture(scope="session")
def model():
    """A 16x16 grz model of round Gaussian blobs (make_trivial_dataset), about 20 s of CPU.

    Shared by the inpainting and transfer tests, which need a model that has learnt
    something but must stay fast.
    """
    from astro_sbgm import GalaxyDiffusion
    from astro_sbgm.datasets import make_trivial_dataset

    train = make_trivial_dataset(64, size=16, seed=0)
    m = GalaxyDiffusion(image_size=16, dim=16, dim_mults=(1, 2),
                        attention_levels=(False, True), objective="v", learning_rate=2e-3,
                        scaling="linear", flux_lower=0.0, flux_upper=2.0, batch_size=16,
                        ema_halflife=100, ema_rampup=None, lr_warmup=20, augment=False,
                        device="cpu", seed=0)
    return m.fit(train, steps=300, progress=False)


@pytest.fixture(scope="session")
def held_out():
    """Three blobs the blob model never saw."""
    from astro_sbgm.datasets import make_trivial_dataset

    return make_trivial_dataset(3, size=16, seed=99)


# --------------------------------------------------------------------------- test header
# pytest-astropy-header (in the "test" extra) prints the versions of the packages
# that decide the results above the test run, as astropy and its affiliated packages do.
try:
    from pytest_astropy_header.display import PYTEST_HEADER_MODULES, TESTED_VERSIONS
except ImportError:  # a plain pytest without the "test" extra: no header
    PYTEST_HEADER_MODULES, TESTED_VERSIONS = None, None


def pytest_configure(config):
    if PYTEST_HEADER_MODULES is None:
        return
    config.option.astropy_header = True
    for name in ("h5py", "Pandas"):
        PYTEST_HEADER_MODULES.pop(name, None)
    PYTEST_HEADER_MODULES.update({
        "astropy": "astropy", "torch": "torch", "photutils": "photutils",
        "reproject": "reproject", "specutils": "specutils", "GalSim": "galsim",
        "safetensors": "safetensors",
    })
    from astro_sbgm import __version__

    TESTED_VERSIONS["astro_sbgm"] = __version__


class _GaussianEps(torch.nn.Module):
    """The exact noise prediction for data whose pixels are i.i.d. N(mu, s^2) (scaled)."""

    def __init__(self, schedule, mu, s):
        super().__init__()
        self.schedule, self.mu, self.s = schedule, mu, s

    def forward(self, x, t):
        a, sg = self.schedule.alpha_sigma(t.to(torch.float64))
        a = a.to(x.dtype).reshape(-1, 1, 1, 1)
        sg = sg.to(x.dtype).reshape(-1, 1, 1, 1)
        return sg * (x - a * self.mu) / (a ** 2 * self.s ** 2 + sg ** 2)


@pytest.fixture(scope="session")
def gaussian_sky_model():
    """Builder of a model copy whose denoiser is exact for i.i.d. N(mu, s^2) pixels (nanomaggy)."""
    import copy

    def build(model, mu, s):
        fake = copy.deepcopy(model)
        # the scaled mean and sky sigma, through the model's own (linear) scaler
        flux = np.broadcast_to(np.array([mu, mu + s]).reshape(1, 1, 2), (3, 1, 2))
        lo, hi = fake.scaler_.transform(flux)[0, 0]
        net = _GaussianEps(fake.schedule_, float(lo), float(hi - lo))
        fake.net_, fake.ema_net_, fake.objective = net, net, "eps"
        return fake

    return build
