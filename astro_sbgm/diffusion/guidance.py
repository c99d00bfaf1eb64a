"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper.

A network trained with condition dropout predicts the noise both with a
condition (``eps_c``) and without one (``eps_u``).  Guidance with scale ``s``
samples with

    eps = eps_u + s (eps_c - eps_u)

``s = 0`` is the unconditional model, ``s = 1`` the conditional one, ``s > 1``
pushes the draws further towards the condition (sharper agreement, less
diversity).  `ClassifierFreeGuidance` has the interface of
`~astro_sbgm.diffusion.Denoiser` (called as ``(x_t, t) -> (x0_hat,
eps_hat)``, with ``schedule``, ``objective``, ``clip_x0`` and ``nfe``), so
every sampler, and inpainting or transfer built on the same reverse loop, uses
it without a loop of its own.

The two predictions come from one network call on a batch of ``2 B`` (the
images twice, the conditions and "no condition" side by side); ``nfe``
counts two evaluations per guided call, one when ``s`` is 0 or 1.  The
combination is made on the unclipped predictions (the noise, the denoised
image and ``v`` are all affine in the network output with the same
coefficients, so combining any of them is the same); the denoised image is
clipped afterwards, as `Denoiser` does.
"""

import copy
import functools

import torch

__all__ = ["ClassifierFreeGuidance"]


class ClassifierFreeGuidance:
    """A conditional denoiser guided by its own unconditional prediction.

    Parameters
    ----------
    denoiser : `~astro_sbgm.diffusion.Denoiser`
        The model; its network is called as ``net(x, t, cond=c)`` (a
        `~astro_sbgm.nn.UNet` with a condition embedding), where a row of
        ``c`` holding NaN is unconditional.
    cond : `torch.Tensor`
        Condition vectors (standardised), shape ``(B, k)``, one per image of
        the batch the wrapper is called on.  A row with a NaN asks for an
        unconditional draw of that image.
    scale : float, optional
        Guidance scale ``s`` (1: conditional, 0: unconditional).

    Attributes
    ----------
    nfe : int
        Network evaluations per image so far (2 per guided call).

    Raises
    ------
    ValueError
        If ``cond`` is not 2-D or ``scale`` is not a finite number.
    """

    def __init__(self, denoiser, cond, scale=1.0):
        cond = torch.as_tensor(cond, dtype=torch.float32)
        if cond.ndim != 2:
            raise ValueError(f"cond must have shape (batch, n_conditions), got "
                             f"{tuple(cond.shape)}")
        scale = float(scale)
        if not scale == scale or scale in (float("inf"), float("-inf")):
            raise ValueError(f"guidance scale must be a finite number, got {scale}")
        self.denoiser = denoiser
        self.cond = cond
        self.scale = scale
        self.schedule = denoiser.schedule
        self.objective = denoiser.objective
        self.clip_x0 = denoiser.clip_x0
        self.nfe = 0

    @property
    def net(self):
        """The wrapped denoiser's network."""
        return self.denoiser.net

    def select(self, rows):
        """The same guidance for a sub-batch: ``rows`` (slice or indices) of ``cond``."""
        return ClassifierFreeGuidance(self.denoiser, self.cond[rows], self.scale)

    def _predict(self, x, t, cond):
        """``(x0_hat, eps_hat)`` of the wrapped denoiser with ``cond``, unclipped."""
        inner = copy.copy(self.denoiser)
        inner.net = functools.partial(self.denoiser.net, cond=cond.to(x.device))
        inner.clip_x0 = False
        return inner(x, t)

    def __call__(self, x, t):
        """Return ``(x0_hat, eps_hat)`` of the guided prediction at ``(x, t)``."""
        n = x.shape[0]
        if self.cond.shape[0] != n:
            raise ValueError(f"{self.cond.shape[0]} condition rows for a batch of {n}; use "
                             "select() to take the rows of a sub-batch")
        s = self.scale
        if s == 0.0:
            self.nfe += 1
            return self.denoiser(x, t)
        if s == 1.0:
            self.nfe += 1
            x0, eps = self._predict(x, t, self.cond)
        else:
            self.nfe += 2
            tt = torch.as_tensor(t)
            if tt.ndim and tt.shape[0] == n:
                tt = torch.cat([tt, tt])
            else:
                tt = t
            none = torch.full_like(self.cond, float("nan"))
            x0_both, eps_both = self._predict(torch.cat([x, x]), tt,
                                              torch.cat([self.cond, none]))
            x0_c, x0_u = x0_both[:n], x0_both[n:]
            eps_c, eps_u = eps_both[:n], eps_both[n:]
            eps = eps_u + s * (eps_c - eps_u)
            x0 = x0_u + s * (x0_c - x0_u)
        if self.clip_x0:
            _, alpha, sigma = self.denoiser._coefs(t, x)
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - alpha * x0) / sigma
        return x0, eps
