"""Samplers: one reverse-process loop, many update rules.

Every sampler runs through `reverse_process`, which walks a grid of
(fractional) timesteps from noisy to clean.  A sampler is only an update rule
from one grid point to the next (`Sampler.step`); inpainting, domain transfer
and any other conditioning plug in through the ``guidance`` hook, which may
change ``x`` after every step.  A grid that goes *up* in time between two
points (RePaint-style resampling) is honoured by re-noising with the forward
process, so resampling schedules reuse the same loop too.

Notation: ``alpha = sqrt(alpha_bar_t)``, ``sigma = sqrt(1 - alpha_bar_t)``,
``lambda = log(alpha / sigma)``.  ``t_next = None`` means the clean image
(``alpha = 1``, ``sigma = 0``).

Samplers
--------
``"ddpm"``
    The paper's ancestral sampler (Ho et al. 2020, eq. 12 of the paper) with
    ``sigma_t^2 = beta_t`` (``variance="beta"``) or the posterior variance
    (``variance="posterior"``); on a sub-grid ``beta`` is the effective
    ``1 - alpha_bar_t / alpha_bar_s`` between the two grid points.
``"ddim"``
    Song et al. (2021); ``eta=0`` is deterministic.
``"dpmpp-2m"``
    DPM-Solver++(2M), Lu et al. (2022), data prediction, multistep: an ODE
    solver (deterministic given its start).
``"dpmpp-2m-sde"``
    The stochastic DPM-Solver++(2M) (Lu et al. 2022, the SDE variant):
    second-order multistep solver of the reverse SDE, fresh noise every
    step.  Its first-order step is the ancestral step with the posterior
    variance, so it is a few-step version of the paper's ancestral sampler.
``"euler"``, ``"heun"``
    First- and second-order (Karras et al. 2022) solvers of the
    probability-flow ODE in ``x / alpha`` against ``sigma / alpha``.
"""

import abc
import inspect
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from .noise import randn_like

__all__ = ["SAMPLERS", "Sampler", "get_sampler", "make_grid", "reverse_process", "GRIDS",
           "randn_like"]

GRIDS = ("uniform", "quadratic", "karras")


class Sampler(abc.ABC):
    """Base class of an update rule.

    `step` evaluates the model once at ``t``, returns the denoised image
    after the last step, and otherwise hands the pieces to the rule's
    `update`, which is all a subclass writes.

    Attributes
    ----------
    name : str
        Registry name.
    min_steps : int
        Smallest usable number of grid points.
    stochastic : bool
        Whether the rule draws fresh noise.
    evals_per_step : int
        Network evaluations per step (the last step may use fewer).
    default_grid : str
        Grid used when none is given (`make_grid` kinds).
    every_timestep : bool
        By default the rule steps through every integer timestep (the
        paper's ancestral sampler) rather than a short grid.
    """

    name = "base"
    min_steps = 1
    stochastic = False
    evals_per_step = 1
    default_grid = "karras"
    every_timestep = False

    def __init__(self, **options):
        if options:
            raise TypeError(f"sampler {self.name!r} takes no option(s) {sorted(options)}")

    def default_steps(self, T):
        """Grid points used when none are given: ``T`` (every timestep) or 20."""
        return int(T) if self.every_timestep else 20

    def options(self):
        """The constructor options this rule was made with (``get_sampler(name, **options)``)."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k, p in params.items()
                if k != "self" and p.kind == p.POSITIONAL_OR_KEYWORD and hasattr(self, k)}

    def to_dict(self):
        """JSON-safe description: ``{"name": ..., **options}``."""
        return {"name": self.name, **self.options()}

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    def reset(self):
        """Forget multistep history (called at the start and after a jump up)."""

    def step(self, denoiser, x, t, t_next, generator):
        """Advance ``x`` from ``t`` to ``t_next``.

        Returns
        -------
        x_next : `torch.Tensor`
            ``x`` at ``t_next`` (the denoised image when ``t_next`` is None).
        x0_hat, eps_hat : `torch.Tensor`
            The model's denoised image and noise at ``(x, t)``, the evaluation
            the step starts from (a second-order rule may evaluate more).
        """
        x0, eps = denoiser(x, t)
        if t_next is None:
            self.reset()
            return x0, x0, eps
        now, nxt = _as(denoiser.schedule, t), _as(denoiser.schedule, t_next)
        return self.update(denoiser, x, x0, eps, now, nxt, t_next, generator), x0, eps

    @abc.abstractmethod
    def update(self, denoiser, x, x0, eps, now, nxt, t_next, generator):
        """The rule: ``x`` at ``now = (alpha, sigma)`` to ``nxt = (alpha', sigma')``.

        ``x0`` and ``eps`` are the model's denoised image and noise at ``x``.
        """


def _as(schedule, t):
    """alpha, sigma at t as python floats."""
    a, s = schedule.alpha_sigma(torch.tensor(float(t)))
    return float(a), float(s)


class DDPMSampler(Sampler):
    """Ancestral sampling (the paper's reference sampler).

    From ``t`` to ``s < t`` (``abar`` = ``alpha_bar``, ``beta = 1 - abar_t / abar_s``)::

        x_s = c0 x0_hat + ct x_t + sqrt(var) z,
        c0 = sqrt(abar_s) beta / (1 - abar_t),
        ct = sqrt(abar_t / abar_s) (1 - abar_s) / (1 - abar_t)

    the mean of the posterior ``q(x_s | x_t, x0_hat)`` (on the integer grid,
    ``posterior_mean_coef1`` and ``posterior_mean_coef2`` of Ho et al.'s code).

    Parameters
    ----------
    variance : {"beta", "posterior"}
        ``"beta"``: ``var = beta``, the paper's ``sigma_t^2 = beta_t``
        (Smith, Geach et al. 2022, eq. 12).  ``"posterior"``: ``var = beta
        (1 - abar_s) / (1 - abar_t)``, the posterior variance (beta-tilde),
        which is what the code released with the paper samples with (its
        clipped log-variance table differs from this only at ``t = 0``,
        where no noise is added); `astro_sbgm._astroddpm` makes it the
        default for the released models.
    """

    name = "ddpm"
    stochastic = True
    default_grid = "uniform"
    every_timestep = True

    def __init__(self, variance="beta"):
        if variance not in ("beta", "posterior"):
            raise ValueError(f"variance must be 'beta' (the paper's sigma_t^2 = beta_t) or "
                             f"'posterior' (beta-tilde, the released code's), got "
                             f"{variance!r}")
        self.variance = variance

    def update(self, denoiser, x, x0, eps, now, nxt, t_next, generator):
        (a, _), (an, _) = now, nxt
        abar, abar_n = a * a, an * an
        beta = 1.0 - abar / abar_n
        # posterior mean of q(x_s | x_t, x_0)
        c0 = an * beta / (1.0 - abar)
        ct = math.sqrt(abar / abar_n) * (1.0 - abar_n) / (1.0 - abar)
        var = beta if self.variance == "beta" else beta * (1.0 - abar_n) / (1.0 - abar)
        return c0 * x0 + ct * x + math.sqrt(var) * randn_like(x, generator)


class DDIMSampler(Sampler):
    """DDIM; ``eta`` = 0 deterministic, 1 ancestral-like."""

    name = "ddim"

    def __init__(self, eta=0.0):
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
        self.eta = float(eta)
        self.stochastic = self.eta > 0

    def update(self, denoiser, x, x0, eps, now, nxt, t_next, generator):
        (a, s), (an, sn) = now, nxt
        c = self.eta * math.sqrt(max(sn ** 2 / s ** 2 * (1.0 - a ** 2 / an ** 2), 0.0))
        out = an * x0 + math.sqrt(max(sn ** 2 - c ** 2, 0.0)) * eps
        if c > 0:
            out = out + c * randn_like(x, generator)
        return out


class DPMSolverPP2M(Sampler):
    """DPM-Solver++(2M): second-order multistep in log-SNR, data prediction."""

    name = "dpmpp-2m"
    min_steps = 2

    def __init__(self):
        self.reset()

    def reset(self):
        self._prev = None  # (x0_hat, h) of the previous step

    def update(self, denoiser, x, x0, eps, now, nxt, t_next, generator):
        (a, s), (an, sn) = now, nxt
        h = math.log(an / sn) - math.log(a / s)
        d = x0
        if self._prev is not None:
            x0_prev, h_prev = self._prev
            r = h_prev / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        self._prev = (x0, h)
        return (sn / s) * x - an * math.expm1(-h) * d


class DPMSolverPP2MSDE(DPMSolverPP2M):
    """Stochastic DPM-Solver++(2M): second-order multistep solver of the reverse SDE.

    With ``h = lambda' - lambda`` (``lambda = log(alpha / sigma)``)::

        x' = (sigma' / sigma) e^-h x + alpha' (1 - e^-2h) D + sigma' sqrt(1 - e^-2h) z

    with ``D = x0_hat`` on the first step (then it is exactly the ancestral
    step with the posterior variance, `DDPMSampler` with
    ``variance="posterior"``) and ``D = x0_hat + (x0_hat - x0_prev) / (2 r)``,
    ``r = h_prev / h``, afterwards (Lu et al. 2022, the midpoint form).
    """

    name = "dpmpp-2m-sde"
    stochastic = True

    def update(self, denoiser, x, x0, eps, now, nxt, t_next, generator):
        (a, s), (an, sn) = now, nxt
        h = math.log(an / sn) - math.log(a / s)
        d = x0
        if self._prev is not None:
            x0_prev, h_prev = self._prev
            d = x0 + (0.5 * h / h_prev) * (x0 - x0_prev)
        self._prev = (x0, h)
        keep = -math.expm1(-2.0 * h)    # 1 - e^-2h
        return ((sn / s) * math.exp(-h) * x + an * keep * d
                + sn * math.sqrt(keep) * randn_like(x, generator))


class EulerSampler(Sampler):
    """Euler steps of the probability-flow ODE in ``x / alpha`` vs ``sigma / alpha``.

    In these variables an Euler step is the same update as DDIM with ``eta = 0``.
    """

    name = "euler"

    def update(self, denoiser, x, x0, eps, now, nxt, t_next, generator):
        (a, s), (an, sn) = now, nxt
        # d(x/alpha)/d(sigma/alpha) = eps
        return an * (x / a + (sn / an - s / a) * eps)


class HeunSampler(Sampler):
    """Heun's second-order method (Karras et al. 2022, Algorithm 1, deterministic)."""

    name = "heun"
    evals_per_step = 2

    def update(self, denoiser, x, x0, eps, now, nxt, t_next, generator):
        (a, s), (an, sn) = now, nxt
        ds = sn / an - s / a
        _, eps_n = denoiser(an * (x / a + ds * eps), t_next)
        return an * (x / a + ds * 0.5 * (eps + eps_n))


SAMPLERS = {cls.name: cls for cls in
            (DDPMSampler, DDIMSampler, DPMSolverPP2M, DPMSolverPP2MSDE, EulerSampler,
             HeunSampler)}


def get_sampler(name, **options):
    """Instantiate a sampler by name.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    """
    if isinstance(name, Sampler):
        return name
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known samplers: {sorted(SAMPLERS)}")
    return SAMPLERS[name](**options)


def make_grid(schedule, steps, kind="uniform", t_start=None, rho=7.0, sigma_max=80.0):
    """A decreasing grid of (fractional) timesteps for a sampler.

    Parameters
    ----------
    schedule : `~astro_sbgm.diffusion.DiffusionSchedule`
        The schedule (gives ``T`` and the noise levels).
    steps : int
        Number of grid points (network evaluations for first-order samplers).
    kind : {"uniform", "quadratic", "karras"}
        Uniform in ``t``; quadratic in ``t`` (denser near the data); or the
        Karras et al. (2022) grid, uniform in ``(sigma/alpha)^(1/rho)``.
    t_start : float, optional
        First (noisiest) timestep; ``T - 1`` by default.  Inpainting and
        domain transfer start lower.
    rho : float
        Exponent of the Karras grid.
    sigma_max : float
        Largest ``sigma / alpha`` of the Karras grid (80 as in Karras et
        al.); the grid starts at the timestep of that noise level when it is
        below ``t_start`` (at ``sigma/alpha = 80`` the image is 99.99% noise).

    Returns
    -------
    `numpy.ndarray`
        float64 timesteps, strictly decreasing, ending at 0.

    Raises
    ------
    ValueError
        For ``steps`` < 1 or more than the schedule's length, or an unknown kind.
    """
    T = schedule.T
    t_start = float(T - 1 if t_start is None else t_start)
    if not 0 <= t_start <= T - 1:
        raise ValueError(f"t_start must lie in [0, {T - 1}], got {t_start}")
    steps = int(steps)
    if steps < 1 or steps > T:
        raise ValueError(f"steps must lie in [1, {T}] (the schedule's length), got {steps}")
    if steps == 1:
        return np.array([t_start])
    u = np.linspace(1.0, 0.0, steps)
    if kind == "uniform":
        grid = np.linspace(t_start, 0.0, steps)
    elif kind == "quadratic":
        grid = t_start * u ** 2
    elif kind == "karras":
        lam = schedule.log_snr(torch.tensor([t_start, 0.0]))
        s_max, s_min = torch.exp(-0.5 * lam).tolist()
        s_max = min(s_max, float(sigma_max))
        s = (s_max ** (1 / rho) + (1 - u) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        grid = schedule.t_from_log_snr(-2.0 * torch.log(torch.from_numpy(s))).numpy()
        grid[-1] = 0.0
    else:
        raise ValueError(f"unknown grid {kind!r}; known: {GRIDS}")
    if np.any(np.diff(grid) >= 0):
        raise ValueError(f"{steps} grid points do not fit in {t_start:g} timesteps with the "
                         f"{kind!r} grid; use fewer steps")
    return grid


def _takes_eps(guidance):
    """Whether a guidance hook takes the model's noise estimate (an ``eps_hat`` parameter)."""
    try:
        params = inspect.signature(guidance).parameters
    except (TypeError, ValueError):
        return False
    return "eps_hat" in params


def reverse_process(denoiser, x, times, sampler="dpmpp-2m", generator=None, guidance=None,
                    progress=False, grad=False, **options):
    """Run the reverse process from noisy ``x`` at ``times[0]`` to a clean image.

    Parameters
    ----------
    denoiser : `~astro_sbgm.diffusion.Denoiser`
        The model.
    x : `torch.Tensor`
        The start, ``x`` at ``times[0]`` (pure noise for unconditional sampling).
    times : sequence of float
        Timesteps visited in order; the loop ends with a step to the clean
        image.  A point larger than its predecessor is a jump *up*, done by
        re-noising with the forward process (RePaint resampling).
    sampler : str or `Sampler`
        The update rule (see `SAMPLERS`); ``options`` go to its constructor.
    generator : `torch.Generator` or list of `torch.Generator`, optional
        CPU generator(s) for every random draw (one per sample makes each
        sample independent of the batch it is drawn in; see `randn_like`).
    guidance : callable, optional
        ``guidance(x_next, t_next, x0_hat) -> x_next``, called after every
        step (``t_next`` is None after the last step), or, when it has a
        parameter named ``eps_hat``, ``guidance(x_next, t_next, x0_hat,
        eps_hat=eps_hat)``.  ``x0_hat`` and ``eps_hat`` are the model's
        denoised image and noise at the point the step started from.
        Inpainting uses it to put the known pixels back.  It is not called
        after a jump up.
    progress : bool
        Show a tqdm progress bar.
    grad : bool
        Run under `torch.no_grad` instead of `torch.inference_mode`, so that a
        denoiser wrapper or a guidance hook may differentiate through the
        network inside ``torch.enable_grad()`` (posterior-sampling
        guidance); the results are the same.

    Returns
    -------
    x0 : `torch.Tensor`
        The clean sample.
    nfe : int
        Network evaluations used.
    """
    with (torch.no_grad() if grad else torch.inference_mode()):
        return _reverse(denoiser, x, times, sampler, generator, guidance, progress, options)


def _reverse(denoiser, x, times, sampler, generator, guidance, progress, options):
    """The loop of `reverse_process`."""
    rule = get_sampler(sampler, **options)
    rule.reset()
    times = [float(t) for t in times]
    if len(times) < rule.min_steps:
        raise ValueError(f"sampler {rule.name!r} needs at least {rule.min_steps} steps, "
                         f"got {len(times)}")
    start_nfe = denoiser.nfe
    wants_eps = guidance is not None and _takes_eps(guidance)
    nxt = times[1:] + [None]
    for t, t_next in tqdm(list(zip(times, nxt)), disable=not progress, desc=rule.name,
                          leave=False):
        if t_next is not None and t_next > t:
            # jump up: x_{t_next} ~ q(x_{t_next} | x_t)
            a, s = _as(denoiser.schedule, t)
            an, sn = _as(denoiser.schedule, t_next)
            r = an / a
            x = r * x + math.sqrt(max(sn ** 2 - (r * s) ** 2, 0.0)) * randn_like(x, generator)
            rule.reset()
            continue
        x, x0, eps = rule.step(denoiser, x, t, t_next, generator)
        if wants_eps:
            x = guidance(x, t_next, x0, eps_hat=eps)
        elif guidance is not None:
            x = guidance(x, t_next, x0)
    return x, denoiser.nfe - start_nfe
