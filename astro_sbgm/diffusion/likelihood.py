"""Log-likelihoods of images under a diffusion model: the variational bound and the ODE.

Both work in the model's own space, the images ``x`` in [-1, 1] after the flux
scaling, and use the denoiser with its ``x0`` clipping off (the model's own
score).  The schedule is written in the log signal-to-noise ratio
``lam = log(alpha^2 / sigma^2)``, from ``lam_T`` at the last (noisiest)
timestep to ``lam_0`` at timestep 0, where ``sigma_0`` is small but not zero
(about 0.006 for the cosine schedule of 1000 steps).

`elbo_log_likelihood` (method ``"elbo"``)
    The variational lower bound of Kingma et al. (2021) in continuous time,
    in nats::

        -log p(x) <= KL(q(x_T | x) || N(0, I))                      prior term, t = T
                     + 1/2 int_{lam_T}^{lam_0} E ||eps - eps_hat(x_lam)||^2 dlam
                     + E[-log N(x; x_0 / alpha_0, (sigma_0 / alpha_0)^2 I)]  decoder, t = 0

    The integral is a midpoint rule over ``n_levels`` equal steps in ``lam``
    with one noise draw per level; every term is also returned per pixel,
    the anomaly map (where an image is unusual).  One network evaluation per
    level, no gradients.
`ode_log_likelihood` (method ``"ode"``)
    The probability-flow ODE (Song et al. 2021), in ``lam``::

        dx/dlam = 1/2 sigma^2 x - 1/2 sigma eps_hat(x, lam),

    integrated from the image (``x_0 = alpha_0 x``) to ``lam_T``, with the
    change of the log-density ``d log p / dlam = -div(dx/dlam)`` accumulated
    on the way (the divergence of ``eps_hat`` by Hutchinson's estimator with
    ``n_probes`` Rademacher probes, or exactly for small images), and the
    standard normal prior at ``lam_T``.  Fixed-step Heun or an adaptive
    Runge-Kutta solver (`scipy.integrate.solve_ivp`).  Each evaluation is a
    forward and a backward pass.

Both give ``log p(x)`` of the continuous density of the model at ``t = 0``
(data smoothed by ``sigma_0``), so the bound lies below the ODE value up to
the ODE's estimator noise and discretisation.  Bits per dimension are
``-log p(x) / (D ln 2)`` with ``D`` the number of pixel values; being a
density of continuous values, they can be negative.
"""

import math

import numpy as np
import torch

from .engine import with_clipping

__all__ = ["elbo_log_likelihood", "ode_log_likelihood", "ODE_SOLVERS"]

#: Solvers of `ode_log_likelihood`.
ODE_SOLVERS = ("heun", "rk45")


def _no_clip(denoiser):
    """The same denoiser with the x0 clipping off (the model's own score)."""
    return with_clipping(denoiser, False)


def _ends(schedule):
    """``(lam_0, lam_T)``: log-SNR at timestep 0 and at the last timestep (float)."""
    return float(schedule.log_snr(0.0)), float(schedule.log_snr(schedule.T - 1.0))


def _randn(shape, generators, dtype=torch.float32):
    """One standard-normal draw per sample, from that sample's own generator."""
    if generators is None:
        return torch.randn(shape, dtype=dtype)
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype) for g in generators])


def _rademacher(shape, generators):
    if generators is None:
        return torch.randint(0, 2, shape).float() * 2 - 1
    return torch.stack([torch.randint(0, 2, shape[1:], generator=g).float() * 2 - 1
                        for g in generators])


def _prior_term(x, alpha_t, sigma_t):
    """Per-pixel KL(N(alpha x, sigma^2) || N(0, 1)) in nats."""
    return 0.5 * (alpha_t ** 2 * x ** 2 + sigma_t ** 2 - 1.0 - math.log(sigma_t ** 2))


def _decoder_term(alpha_0, sigma_0):
    """Per-pixel E[-log N(x; x_0 / alpha_0, (sigma_0 / alpha_0)^2)] in nats."""
    return 0.5 * math.log(2 * math.pi * (sigma_0 / alpha_0) ** 2) + 0.5


@torch.no_grad()
def elbo_log_likelihood(denoiser, x, n_levels=32, generators=None):
    """The variational lower bound of ``log p(x)`` and its per-pixel terms.

    Parameters
    ----------
    denoiser : `~astro_sbgm.diffusion.Denoiser`
        The model (its clipping of ``x0`` is turned off here).
    x : `torch.Tensor`
        Images ``(n, band, y, x)`` in the model's [-1, 1] space.
    n_levels : int
        Noise levels of the midpoint rule in log-SNR (network evaluations per
        image).
    generators : list of `torch.Generator`, optional
        One per image (the noise of image ``i`` comes from ``generators[i]``,
        so a result does not depend on the batch).

    Returns
    -------
    log_likelihood : `torch.Tensor`
        float64 ``(n,)``, nats: the bound, ``<= log p(x)`` in expectation.
    nll_map : `torch.Tensor`
        float32 ``(n, band, y, x)``: minus the bound per pixel (prior,
        diffusion and decoder terms), summing to ``-log_likelihood``.
    terms : dict
        ``"prior"``, ``"diffusion"``, ``"decoder"``: float64 ``(n,)`` in nats.

    Raises
    ------
    ValueError
        For ``n_levels`` < 1.
    """
    n_levels = int(n_levels)
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    den = _no_clip(denoiser)
    sched = den.schedule
    device = x.device
    lam0, lamT = _ends(sched)
    edges = torch.linspace(lamT, lam0, n_levels + 1, dtype=torch.float64)
    mids = 0.5 * (edges[:-1] + edges[1:])
    dlam = float(edges[1] - edges[0])
    times = sched.t_from_log_snr(mids)
    x = x.to(dtype=torch.float32)
    diff = torch.zeros_like(x)
    for t in times:
        eps = _randn(tuple(x.shape), generators).to(device)
        alpha, sigma = (float(v) for v in sched.alpha_sigma(t))
        _, eps_hat = den(alpha * x + sigma * eps, float(t))
        diff += 0.5 * (eps - eps_hat) ** 2 * dlam
    aT, sT = (float(v) for v in sched.alpha_sigma(torch.tensor(sched.T - 1.0)))
    a0, s0 = (float(v) for v in sched.alpha_sigma(torch.tensor(0.0)))
    prior = _prior_term(x, aT, sT)
    decoder = torch.full_like(x, _decoder_term(a0, s0))
    nll_map = prior + diff + decoder
    dims = tuple(range(1, x.ndim))
    terms = {"prior": prior.double().sum(dims).cpu(), "diffusion": diff.double().sum(dims).cpu(),
             "decoder": decoder.double().sum(dims).cpu()}
    return -(terms["prior"] + terms["diffusion"] + terms["decoder"]), nll_map.cpu(), terms


def _divergence(eps_hat, x, probes, exact):
    """``div_x eps_hat`` per image: Hutchinson over ``probes``, or exact (small images)."""
    if exact:
        flat = eps_hat.reshape(eps_hat.shape[0], -1)
        div = torch.zeros(eps_hat.shape[0], dtype=torch.float64, device=x.device)
        for j in range(flat.shape[1]):
            g, = torch.autograd.grad(flat[:, j].sum(), x, retain_graph=True)
            div += g.reshape(g.shape[0], -1)[:, j].double()
        return div
    total = 0.0
    for k, z in enumerate(probes):
        g, = torch.autograd.grad((eps_hat * z).sum(), x, retain_graph=k < len(probes) - 1)
        total = total + (g * z).double().sum(dim=tuple(range(1, x.ndim)))
    return total / len(probes)


def ode_log_likelihood(denoiser, x, steps=50, solver="heun", n_probes=1, generators=None,
                       rtol=1e-3, atol=1e-3, exact_divergence=False):
    """``log p(x)`` from the probability-flow ODE, with Hutchinson's trace estimator.

    Parameters
    ----------
    denoiser : `~astro_sbgm.diffusion.Denoiser`
        The model (its clipping of ``x0`` is turned off here).
    x : `torch.Tensor`
        Images ``(n, band, y, x)`` in the model's [-1, 1] space.
    steps : int
        Steps of the fixed-step ``"heun"`` solver (uniform in log-SNR; two
        evaluations per step but the last).
    solver : {"heun", "rk45"}
        Fixed-step Heun, or the adaptive Runge-Kutta 4(5) of
        `scipy.integrate.solve_ivp` with ``rtol`` and ``atol``.
    n_probes : int
        Rademacher probes of the divergence estimate per evaluation (fixed
        along a trajectory); more probes, less spread.
    generators : list of `torch.Generator`, optional
        One per image: its probes come from it (seeded results).
    rtol, atol : float
        Tolerances of ``"rk45"``.
    exact_divergence : bool
        Compute the divergence exactly, one backward pass per pixel value
        (only for tiny images, e.g. tests).

    Returns
    -------
    log_likelihood : `torch.Tensor`
        float64 ``(n,)`` in nats.
    info : dict
        ``nfe`` (network evaluations per image, each with its backward
        passes), ``prior`` and ``delta`` (the log-prior at ``lam_T`` and the
        accumulated divergence, float64 ``(n,)``).

    Raises
    ------
    ValueError
        For an unknown solver, ``steps`` < 1 or ``n_probes`` < 1.
    """
    if solver not in ODE_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {ODE_SOLVERS}")
    if int(steps) < 1 or int(n_probes) < 1:
        raise ValueError(f"steps and n_probes must be >= 1, got {steps} and {n_probes}")
    den = _no_clip(denoiser)
    sched = den.schedule
    device = x.device
    x = x.to(dtype=torch.float32)
    n, dim = x.shape[0], x[0].numel()
    lam0, lamT = _ends(sched)
    probes = [_rademacher(tuple(x.shape), generators).to(device) for _ in range(int(n_probes))]
    nfe = [0]

    def field(xl, lam):
        """``(dx/dlam, div of it)`` at log-SNR ``lam``."""
        t = float(sched.t_from_log_snr(torch.tensor(lam, dtype=torch.float64)))
        alpha, sigma = (float(v) for v in sched.alpha_sigma(torch.tensor(t)))
        with torch.enable_grad():
            xg = xl.detach().requires_grad_(True)
            _, eps_hat = den(xg, t)
            div_eps = _divergence(eps_hat, xg, probes, exact_divergence)
        nfe[0] += 1
        v = 0.5 * sigma ** 2 * xl - 0.5 * sigma * eps_hat.detach()
        div = 0.5 * sigma ** 2 * dim - 0.5 * sigma * div_eps
        return v, div

    a0 = float(sched.alpha_sigma(torch.tensor(0.0))[0])
    state = a0 * x
    delta = torch.zeros(n, dtype=torch.float64, device=device)
    if solver == "heun":
        grid = np.linspace(lam0, lamT, int(steps) + 1)
        v, d = field(state, grid[0])
        for i in range(int(steps)):
            h = float(grid[i + 1] - grid[i])
            pred = state + h * v
            v2, d2 = field(pred, grid[i + 1])
            state = state + 0.5 * h * (v + v2)
            delta = delta + 0.5 * h * (d + d2)
            v, d = v2, d2
    else:
        from scipy.integrate import solve_ivp

        shape = tuple(x.shape)

        def rhs(lam, y):
            xl = torch.from_numpy(y[:-n].astype(np.float32)).reshape(shape).to(device)
            v, d = field(xl, lam)
            return np.concatenate([v.detach().cpu().numpy().ravel().astype(np.float64),
                                   d.cpu().numpy()])

        y0 = np.concatenate([state.cpu().numpy().ravel().astype(np.float64), np.zeros(n)])
        sol = solve_ivp(rhs, (lam0, lamT), y0, method="RK45", rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"the ODE solver failed: {sol.message}; loosen rtol/atol or use "
                               "solver='heun'")
        end = sol.y[:, -1]
        state = torch.from_numpy(end[:-n].astype(np.float32)).reshape(shape).to(device)
        delta = torch.from_numpy(end[-n:]).to(device)
    flat = state.double().reshape(n, -1)
    prior = -0.5 * (flat ** 2).sum(1) - 0.5 * dim * math.log(2 * math.pi)
    # density of x_0 = alpha_0 x, then the Jacobian of x -> alpha_0 x
    logp = prior + delta + dim * math.log(a0)
    return logp.cpu(), {"nfe": nfe[0], "prior": prior.cpu(), "delta": delta.cpu()}
