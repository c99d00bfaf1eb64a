"""Parametrisations: what the network sees and predicts (eps, v, EDM), as small classes.

The diffusion is variance preserving, ``x_t = alpha_t x_0 + sigma_t eps``.  A
parametrisation says three things, used by both the sampler side
(`~astro_sbgm.diffusion.Denoiser`) and the training side
(`~astro_sbgm.diffusion.training_loss`), so each formula is written once:

``net_input(x, alpha, sigma)``
    what the network is fed;
``to_x0(x, out, alpha, sigma)``
    the denoised image from the network output ``out``;
``target(x0, noise, x_t, alpha, sigma)``
    what the network output is trained towards;
``min_snr_weight(snr, gamma)``
    the Min-SNR-gamma loss weight (Hang et al. 2023), or None when the
    parametrisation has its own weighting.

``alpha`` and ``sigma`` are tensors broadcastable against the images.
"""

import torch

__all__ = ["Parametrisation", "EpsParametrisation", "VParametrisation", "EDMParametrisation",
           "PARAMETRISATIONS", "get_parametrisation"]


class Parametrisation:
    """Base class: the network sees ``x`` as it is (``eps`` and ``v``)."""

    name = "base"

    def net_input(self, x, alpha, sigma):
        """The network's input for noisy images ``x``."""
        return x

    def to_x0(self, x, out, alpha, sigma):  # pragma: no cover - abstract
        """The denoised image from the network output ``out``."""
        raise NotImplementedError

    def target(self, x0, noise, x_t, alpha, sigma):  # pragma: no cover - abstract
        """The training target of the network output."""
        raise NotImplementedError

    def min_snr_weight(self, snr, gamma):
        """Per-sample Min-SNR-gamma weight, or None (no such weighting)."""
        return None

    def to_dict(self):
        """JSON-safe description."""
        return {"name": self.name}

    def __repr__(self):
        return f"{type(self).__name__}()"


class EpsParametrisation(Parametrisation):
    """The network predicts the noise (Ho et al. 2020; the paper, eq. 11)."""

    name = "eps"

    def to_x0(self, x, out, alpha, sigma):
        return (x - sigma * out) / alpha

    def target(self, x0, noise, x_t, alpha, sigma):
        return noise

    def min_snr_weight(self, snr, gamma):
        return torch.clamp(snr, max=float(gamma)) / snr


class VParametrisation(Parametrisation):
    """The network predicts ``v = alpha eps - sigma x_0`` (Salimans & Ho 2022)."""

    name = "v"

    def to_x0(self, x, out, alpha, sigma):
        return alpha * x - sigma * out

    def target(self, x0, noise, x_t, alpha, sigma):
        return alpha * noise - sigma * x0

    def min_snr_weight(self, snr, gamma):
        return torch.clamp(snr, max=float(gamma)) / (snr + 1)


class EDMParametrisation(Parametrisation):
    """EDM preconditioning (Karras et al. 2022) in the scaled variable ``x / alpha``.

    With ``s = sigma / alpha`` and ``d`` = ``sigma_data``: the network sees
    ``c_in x / alpha`` and its output ``F`` gives ``D = c_skip x / alpha +
    c_out F``, ``c_skip = d^2 / (s^2 + d^2)``, ``c_out = s d / sqrt(s^2 +
    d^2)``, ``c_in = 1 / sqrt(s^2 + d^2)``.

    Parameters
    ----------
    sigma_data : float
        Standard deviation of the data.
    """

    name = "edm"

    def __init__(self, sigma_data=0.5):
        self.sigma_data = float(sigma_data)

    def coefficients(self, alpha, sigma):
        """``(c_skip, c_out, c_in)`` at ``(alpha, sigma)``."""
        s = sigma / alpha
        d = self.sigma_data
        c_skip = d ** 2 / (s ** 2 + d ** 2)
        c_out = s * d / torch.sqrt(s ** 2 + d ** 2)
        c_in = 1.0 / torch.sqrt(s ** 2 + d ** 2)
        return c_skip, c_out, c_in

    def net_input(self, x, alpha, sigma):
        return x / alpha * self.coefficients(alpha, sigma)[2]

    def to_x0(self, x, out, alpha, sigma):
        c_skip, c_out, _ = self.coefficients(alpha, sigma)
        return c_skip * (x / alpha) + c_out * out

    def target(self, x0, noise, x_t, alpha, sigma):
        c_skip, c_out, _ = self.coefficients(alpha, sigma)
        return (x0 - c_skip * (x_t / alpha)) / c_out

    def to_dict(self):
        return {"name": self.name, "sigma_data": self.sigma_data}

    def __repr__(self):
        return f"EDMParametrisation(sigma_data={self.sigma_data})"


#: Parametrisation classes by objective name.
PARAMETRISATIONS = {cls.name: cls for cls in
                    (EpsParametrisation, VParametrisation, EDMParametrisation)}


def get_parametrisation(objective, sigma_data=0.5):
    """The parametrisation of an objective name (an instance is returned as it is).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    """
    if isinstance(objective, Parametrisation):
        return objective
    if objective not in PARAMETRISATIONS:
        raise ValueError(f"unknown objective {objective!r}; known: {tuple(PARAMETRISATIONS)}")
    if objective == "edm":
        return EDMParametrisation(sigma_data)
    return PARAMETRISATIONS[objective]()
