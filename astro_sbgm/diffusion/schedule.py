"""Noise schedules of the variance-preserving diffusion.

A schedule is a table of ``alphas_cumprod`` (``alpha_bar``) over the discrete
timesteps ``0 .. T-1``: the noisy image at step ``t`` is

.. math:: x_t = \\sqrt{\\bar\\alpha_t}\\, x_0 + \\sqrt{1 - \\bar\\alpha_t}\\, \\epsilon .

Samplers also need fractional timesteps (few-step grids that fall between
the integers): `DiffusionSchedule.alpha_sigma` interpolates the log
signal-to-noise ratio linearly between integer steps, which is exact at the
integers and monotone in between.
"""

import math

import numpy as np
import torch

__all__ = ["DiffusionSchedule", "linear_betas", "cosine_betas"]


def linear_betas(timesteps=1000, beta_start=1e-4, beta_end=0.02):
    """The linear schedule of Ho et al. (2020), scaled to ``timesteps``.

    Returns
    -------
    `numpy.ndarray`
        ``betas`` (float64) of length ``timesteps``.
    """
    scale = 1000.0 / timesteps
    return np.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=np.float64)


def cosine_betas(timesteps=1000, s=0.008, max_beta=0.999):
    """The cosine schedule of Nichol & Dhariwal (2021).

    ``alpha_bar(t) = f(t) / f(0)`` with ``f(t) = cos^2(pi/2 (t/T + s) / (1 + s))``,
    ``beta_t = 1 - alpha_bar(t+1) / alpha_bar(t)`` clipped at ``max_beta``.

    Returns
    -------
    `numpy.ndarray`
        ``betas`` (float64) of length ``timesteps``.
    """
    t = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return np.clip(1.0 - abar[1:] / abar[:-1], 0.0, max_beta)


class DiffusionSchedule:
    """A discrete variance-preserving noise schedule.

    Parameters
    ----------
    betas : array-like
        Per-step variances ``beta_t``, ``0 < beta_t < 1``.

    Attributes
    ----------
    betas, alphas_cumprod : `numpy.ndarray`
        float64 tables of length `T`.
    T : int
        Number of timesteps.
    """

    def __init__(self, betas):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(f"betas must be a 1-D array of at least 2 values, got {betas.shape}")
        if not np.all((betas > 0) & (betas < 1)):
            raise ValueError("every beta must lie in (0, 1)")
        self.betas = betas
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.T = len(betas)
        self._log_snr = torch.from_numpy(np.log(self.alphas_cumprod)
                                         - np.log1p(-self.alphas_cumprod))

    @classmethod
    def from_name(cls, name="cosine", timesteps=1000, **kwargs):
        """Build a named schedule: ``"linear"`` or ``"cosine"``."""
        makers = {"linear": linear_betas, "cosine": cosine_betas}
        if name not in makers:
            raise ValueError(f"unknown schedule {name!r}; known: {sorted(makers)}")
        return cls(makers[name](timesteps, **kwargs))

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod):
        """Build a schedule from a stored ``alphas_cumprod`` table."""
        abar = np.asarray(alphas_cumprod, dtype=np.float64)
        prev = np.concatenate([[1.0], abar[:-1]])
        obj = cls(1.0 - abar / prev)
        obj.alphas_cumprod = abar.copy()  # keep the stored table bit for bit
        obj._log_snr = torch.from_numpy(np.log(abar) - np.log1p(-abar))
        return obj

    def log_snr(self, t):
        """``log(alpha^2 / sigma^2)`` at (fractional) timesteps ``t``, float64 tensor."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.T - 1)
        lo = t.floor().long().clamp(max=self.T - 2)
        w = t - lo
        table = self._log_snr
        return table[lo] * (1 - w) + table[lo + 1] * w

    def alpha_sigma(self, t):
        """``(alpha, sigma) = (sqrt(alpha_bar), sqrt(1 - alpha_bar))`` at ``t`` (float64)."""
        lam = self.log_snr(t)
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()

    def t_from_log_snr(self, lam):
        """Inverse of `log_snr`: the fractional timestep with log-SNR ``lam``."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        table = -self._log_snr  # increasing in t
        x = (-lam).clamp(table[0], table[-1])
        hi = torch.searchsorted(table, x.reshape(-1)).clamp(1, self.T - 1).reshape(x.shape)
        lo = hi - 1
        w = (x - table[lo]) / (table[hi] - table[lo])
        return lo.to(torch.float64) + w

    def q_sample(self, x0, t, noise):
        """Draw ``x_t`` from ``q(x_t | x_0)`` for per-sample timesteps ``t``."""
        alpha, sigma = self.alpha_sigma(t)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        alpha = alpha.to(x0.dtype).to(x0.device).reshape(shape)
        sigma = sigma.to(x0.dtype).to(x0.device).reshape(shape)
        return alpha * x0 + sigma * noise

    def to_dict(self):
        """JSON-safe description (the full table, so nothing is recomputed)."""
        return {"alphas_cumprod": self.alphas_cumprod.tolist()}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from `to_dict` output."""
        return cls.from_alphas_cumprod(d["alphas_cumprod"])
