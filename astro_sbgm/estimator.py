"""`GalaxyDiffusion`: a diffusion model of galaxy images with a scikit-learn-like API.

The estimator takes and returns astropy objects; the network, the diffusion
and the device stay inside it::

    from astro_sbgm import GalaxyDiffusion
    from astro_sbgm.datasets import make_mock_legacy_survey

    train = make_mock_legacy_survey(200, size=32, seed=1)
    model = GalaxyDiffusion(image_size=32, bands="grz", dim=16)
    model.fit(train, steps=500)
    fakes = model.sample(16, seed=0)           # list of CCDData in nanomaggies
    model.save("run/model")                    # safetensors + JSON, never a pickle
    model = GalaxyDiffusion.load("run/model")
"""

import inspect
import json
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
import astropy.units as u
from safetensors.torch import load_file

from ._astroddpm import astroddpm_parts, released_sampler_options
from ._validation import check_positions, check_positive_int
from ._version import __version__
from .bands import LEGACY_SURVEY_PIXEL_SCALE, parse_bands
from ._conditions import ConditionStats, check_condition_names, measure_conditions, read_conditions
from .diffusion import (DiffusionSchedule, Denoiser, OBJECTIVES, GRIDS, get_sampler,
                        make_grid)
from .io import (AstroSBGMInputWarning, make_image, make_tan_wcs, provenance_cards, read_images,
                 select_bands, to_model_grid)
from .diffusion.guidance import ClassifierFreeGuidance
from .exceptions import AstroSBGMConditionWarning
from .diffusion.engine import batches, generate
from .diffusion.noise import PerSampleNoise, new_seed
from .nn import UNet
from .preprocessing import FluxScaler
from .training_data import (SCALER_IMAGES, StreamingData, default_num_workers,
                            fit_flux_scaler, open_training_set)
from . import distributed as _dist
from .training import (AstroSBGMTrainingWarning, Trainer, TrainingInterrupted,
                       autocast_forward, checkpoint_run_config, latest_checkpoint,
                       refuse_foreign_checkpoint_dir,
                       tf32 as _allow_tf32)
from ._serialization import (POPULATION_KEY, bundle_weights, check_model_files, split_weights,
                             write_model_files)

__all__ = ["GalaxyDiffusion", "NotFittedError", "PRESETS", "QUICKSTART"]

MODEL_FORMAT = "astro_sbgm model"
#: Default pixel scale of a model (arcsec per pixel, a float for the JSON config): the
#: Legacy Surveys'.
_DEFAULT_PIXEL_SCALE = float(LEGACY_SURVEY_PIXEL_SCALE.to_value(u.arcsec))

#: Named hyper-parameter sets.  ``"paper"`` is the method of Smith, Geach et
#: al. (2022): the paper's U-Net at width 64 with attention at every level,
#: noise prediction with the L2 loss of eq. 11, a cosine schedule of 1000
#: steps (as the released models), clip to [0, A] with A from k-means and a
#: linear map (eq. 13), batch 56.
PRESETS = {
    "paper": dict(dim=64, dim_mults=(1, 2, 4, 8), attention_levels=None, schedule="cosine",
                  timesteps=1000, objective="eps", loss="l2", min_snr_gamma=None,
                  scaling="linear", flux_lower=0.0, flux_upper="kmeans", flux_softening=0.05,
                  batch_size=56, continuous_time=False),
    # the small model of ``astro-sbgm quickstart --train``: about 8 minutes on 2 CPU cores
    "quickstart": dict(image_size=32, dim=32, dim_mults=(1, 2, 2),
                       attention_levels=(False, False, True), objective="v", batch_size=32,
                       learning_rate=1e-3, lr_warmup=100, ema_halflife=10_000, ema_rampup=0.1),
}

#: The settings of ``astro-sbgm quickstart`` (`astro_sbgm.cli.run_quickstart`):
#: ``n_samples`` galaxies drawn with ``sample_steps`` sampler steps from the
#: bundled model; with ``--train``, the ``"quickstart"`` preset trained on
#: ``n_train`` mock galaxies of ``size`` pixels for at most ``steps`` steps or
#: ``minutes`` minutes.
QUICKSTART = dict(n_train=2000, size=32, steps=3000, minutes=8.0, n_samples=64,
                  sample_steps=10, model=PRESETS["quickstart"])


class NotFittedError(ValueError, AttributeError):
    """The model was used before `GalaxyDiffusion.fit` or `GalaxyDiffusion.load`."""


def _resolve_device(device):
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _png_bits_per_dim(scaled):
    """Bits per value of the lossless PNG of a ``(band, y, x)`` image in [-1, 1], 8 bits deep."""
    import io as _io

    from PIL import Image

    q = np.clip(np.round((np.asarray(scaled) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    total = 0
    for plane in q:
        buf = _io.BytesIO()
        Image.fromarray(plane, mode="L").save(buf, format="PNG", optimize=True)
        total += len(buf.getvalue())
    return 8.0 * total / q.size


def _float32(tensor):
    return tensor.float() if tensor.is_floating_point() else tensor


def _sample_generators(seed, start, n):
    """One CPU generator per sample (`astro_sbgm.diffusion.noise.PerSampleNoise`)."""
    return PerSampleNoise(seed, start).generators(0, n)


class GalaxyDiffusion:
    """A denoising diffusion model of multi-band galaxy images.

    All arguments are hyper-parameters; nothing is computed until `fit`.

    Parameters
    ----------
    image_size : int
        Side of the square cutouts the model works on, in pixels (16 to 512;
        a multiple of ``2 ** (len(dim_mults) - 1)``).
    bands : str or sequence of str
        The bands, in order (``"grz"``).
    pixel_scale : float
        Arcsec per pixel of the model grid (0.262 for the Legacy Surveys).
        Inputs on another grid are reprojected onto it.
    dim, dim_mults, attention_levels
        Width, per-level width multipliers and per-level attention of the
        U-Net (`astro_sbgm.nn.UNet`).
    schedule : {"cosine", "linear"}
        Noise schedule.
    timesteps : int
        Length ``T`` of the diffusion (1000 in the paper).
    objective : {"eps", "v", "edm"}
        What the network predicts (see `astro_sbgm.diffusion.objectives`).
    loss : {"l2", "l1"}
        Per-pixel training loss.
    min_snr_gamma : float or None
        Min-SNR loss weighting.
    scaling : {"asinh", "linear"}
        Flux stretch before the [-1, 1] map (`astro_sbgm.preprocessing.FluxScaler`).
    flux_lower : float, sequence of float or "auto"
        Lower clip in nanomaggies: one value, one per band, or ``"auto"`` (the
        default): 6 times each band's sky sigma below zero, the sigma
        measured on the training set at `fit`
        (`astro_sbgm.preprocessing.sky_sigma`), so every band keeps its
        negative sky noise whatever its depth.
    flux_upper : float or "kmeans"
        Upper clip in nanomaggies; ``"kmeans"`` estimates it the paper's way
        from the training set.
    flux_softening : float, sequence of float or "auto"
        Softening of the asinh stretch in nanomaggies; ``"auto"`` (the
        default) is twice each band's sky sigma, measured at `fit`.
    batch_size : int
        Training batch size.
    learning_rate : float
        Adam learning rate.
    lr_warmup : int
        Steps of linear learning-rate warm-up.
    grad_clip : float or None
        Gradient-norm clip.
    ema_halflife : float
        Half-life of the weight average in training images (see
        `astro_sbgm.training.EMA`).
    ema_rampup : float or None
        The half-life never exceeds this fraction of the images seen.
    augment : bool
        Random flips and 90-degree rotations during training.
    conditions : sequence of str, optional
        Catalogue properties the model is conditioned on (classifier-free
        guidance, Ho & Salimans 2022): columns of
        `astro_sbgm.metrics.measure_galaxies` (``"mag_r"``, ``"r_half"``,
        ``"g_r"``, ``"r_z"``, ``"flux_g"``, ``"ellipticity"``, ...).  `fit`
        measures them on the training images (or takes a row-aligned table,
        ``fit(X, conditions=table)``) and standardises them; `sample` and
        `sample_like` then draw galaxies to order.  None (the default): an
        unconditional model, as the paper's.
    condition_dropout : float
        Fraction of the training batches' condition rows dropped, so that one
        network learns both the conditional and the unconditional prediction
        that guidance combines.
    condition_lr_scale : float
        The condition embedding learns at ``condition_lr_scale`` times
        ``learning_rate`` (the rest of the network at ``learning_rate``).  A
        fine-tune that adds conditions to a trained unconditional model
        starts the embedding at zero; a larger rate lets it catch up with a
        network that is already trained (`benchmarks/bench_conditional.py`
        measures the effect).
    continuous_time : bool
        Train on timesteps drawn from the interval ``[0, T - 1]`` (default)
        rather than the integers (the paper): the few-step samplers evaluate
        the network between the integers.
    device : str
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ...
    seed : int
        Seed of the initial weights and of the training randomness.

    Attributes
    ----------
    net_ : `astro_sbgm.nn.UNet`
        The trained network (raw weights).
    ema_net_ : `astro_sbgm.nn.UNet`
        The weight average (used by default for sampling).
    scaler_ : `astro_sbgm.preprocessing.FluxScaler`
        The fitted flux scaling.
    schedule_ : `astro_sbgm.diffusion.DiffusionSchedule`
        The noise schedule.
    n_steps_ : int
        Optimizer steps taken.
    history_ : list of float
        Training loss per step.
    conditions_ : `astro_sbgm._conditions.ConditionStats` or None
        For a conditional model: the condition names, units, mean and
        standard deviation (the standardisation), range and origin of the
        training values; stored in the model's JSON.  None for an
        unconditional model.
    """

    def __init__(self, image_size=64, bands="grz", pixel_scale=_DEFAULT_PIXEL_SCALE, dim=32,
                 dim_mults=(1, 2, 4, 8), attention_levels=None, schedule="cosine",
                 timesteps=1000, objective="v", loss="l2", min_snr_gamma=None,
                 scaling="asinh", flux_lower="auto", flux_upper=100.0, flux_softening="auto",
                 batch_size=16, learning_rate=2e-4, lr_warmup=100, grad_clip=1.0,
                 ema_halflife=20_000, ema_rampup=0.1, augment=True, conditions=None,
                 condition_dropout=0.15, condition_lr_scale=1.0, continuous_time=True,
                 device="auto", seed=0):
        self.image_size = image_size
        self.bands = bands
        self.pixel_scale = pixel_scale
        self.dim = dim
        self.dim_mults = dim_mults
        self.attention_levels = attention_levels
        self.schedule = schedule
        self.timesteps = timesteps
        self.objective = objective
        self.loss = loss
        self.min_snr_gamma = min_snr_gamma
        self.scaling = scaling
        self.flux_lower = flux_lower
        self.flux_upper = flux_upper
        self.flux_softening = flux_softening
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lr_warmup = lr_warmup
        self.grad_clip = grad_clip
        self.ema_halflife = ema_halflife
        self.ema_rampup = ema_rampup
        self.augment = augment
        self.conditions = conditions
        self.condition_dropout = condition_dropout
        self.condition_lr_scale = condition_lr_scale
        self.continuous_time = continuous_time
        self.device = device
        self.seed = seed

    # ------------------------------------------------------------------ params
    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep=True):
        """The hyper-parameters, as in scikit-learn."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        """Set hyper-parameters, as in scikit-learn; returns ``self``."""
        names = self._param_names()
        for k, v in params.items():
            if k not in names:
                raise ValueError(f"unknown parameter {k!r} for GalaxyDiffusion; valid "
                                 f"parameters are {names}")
            setattr(self, k, v)
        return self

    @classmethod
    def from_astroddpm(cls, path, weights="ema", image_size=None, device="auto"):
        """A ready model from a checkpoint released with the paper (Zenodo 10.5281/zenodo.5653517).

        The file is read with ``torch.load(weights_only=True)`` only; see
        `astro_sbgm._astroddpm.astroddpm_parts` for what is set
        (schedule from the stored buffers, flux clip [0, 5.5] nanomaggies,
        bands g, r, z at 0.262"/pix).

        Parameters
        ----------
        path : str or path
            The released ``.pt`` file.
        weights : {"ema", "model"}
            Which stored weights sampling uses by default.
        image_size : int, optional
            Working size (256 for the released models, the default).
        device : str
            Where the network runs.

        Returns
        -------
        GalaxyDiffusion
        """
        return cls._from_parts(**astroddpm_parts(path, weights=weights, image_size=image_size),
                               device=device)

    @classmethod
    def pretrained(cls, name=None, device="auto"):
        """A trained model bundled with the package, ready to sample.

        Parameters
        ----------
        name : str, optional
            One of `astro_sbgm.pretrained.available`; default
            `astro_sbgm.pretrained.DEFAULT_MODEL`.  Its model card is
            `astro_sbgm.pretrained.info`.
        device : str
            Where the network runs.

        Returns
        -------
        GalaxyDiffusion
            An ordinary fitted model (sample, inpaint, transfer, save,
            ``fit(..., warm_start=True)`` to fine-tune).  Only the weight
            average is bundled; it also serves as the raw weights.

        Raises
        ------
        ValueError
            If no bundled model has that name (the known names are listed).
        """
        from . import pretrained

        return cls.load(pretrained.path(name or pretrained.DEFAULT_MODEL), device=device)

    @classmethod
    def from_preset(cls, name, **overrides):
        """A model with a named hyper-parameter set (`PRESETS`), plus overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def __repr__(self):
        defaults = {k: p.default for k, p in inspect.signature(type(self).__init__)
                    .parameters.items() if k != "self"}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k]]
        return f"{type(self).__name__}({', '.join(changed)})"

    def _json_params(self):
        out = {}
        for k, v in self.get_params().items():
            out[k] = list(v) if isinstance(v, tuple) else v
        out["bands"] = list(parse_bands(self.bands))
        if not self.conditions:
            # an unconditional model's parameters read as before conditions existed, so
            # its checkpoints and saved files compare equal to those of earlier versions
            del out["conditions"], out["condition_dropout"], out["condition_lr_scale"]
        else:
            out["conditions"] = list(check_condition_names(self.conditions, out["bands"]))
        return out

    def _validate(self):
        self.bands_ = parse_bands(self.bands)
        size = int(self.image_size)
        if not 16 <= size <= 512:
            raise ValueError(f"image_size must lie in [16, 512] pixels, got {self.image_size}")
        factor = 2 ** (len(tuple(self.dim_mults)) - 1)
        if size % factor:
            raise ValueError(f"image_size={size} is not divisible by {factor} = 2 ** "
                             f"(len(dim_mults) - 1); pick a multiple of {factor}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; known: {OBJECTIVES}")
        if not float(self.pixel_scale) > 0:
            raise ValueError(f"pixel_scale must be > 0 arcsec, got {self.pixel_scale}")
        self.condition_names_ = check_condition_names(self.conditions, self.bands_)
        if not 0.0 <= float(self.condition_dropout) < 1.0:
            raise ValueError(f"condition_dropout must lie in [0, 1), got "
                             f"{self.condition_dropout}")
        if not float(self.condition_lr_scale) > 0:
            raise ValueError(f"condition_lr_scale must be > 0, got {self.condition_lr_scale}")

    # ------------------------------------------------------------------ building blocks
    def _build(self):
        self._validate()
        torch.manual_seed(int(self.seed))
        self.net_ = UNet(in_channels=len(self.bands_), dim=int(self.dim),
                         dim_mults=tuple(self.dim_mults),
                         attention_levels=self.attention_levels,
                         cond_dim=len(self.condition_names_))
        self.schedule_ = DiffusionSchedule.from_name(self.schedule, int(self.timesteps))
        self.scaler_ = FluxScaler(upper=self.flux_upper, lower=self.flux_lower,
                                  stretch=self.scaling, softening=self.flux_softening)
        self.device_ = _resolve_device(self.device)
        self.net_.to(self.device_)

    def _to_local_device(self):
        """Under torchrun, move the networks to this process's GPU (``cuda:LOCAL_RANK``)."""
        device = _dist.local_device(self.device_)
        if device != self.device_:
            self.device_ = device
            for net in (getattr(self, "net_", None), getattr(self, "ema_net_", None)):
                if net is not None:
                    net.to(device)

    def _check_fitted(self):
        if not hasattr(self, "net_") or not hasattr(self, "ema_net_"):
            raise NotFittedError(f"this {type(self).__name__} has not been fitted; call "
                                 "fit(...) or GalaxyDiffusion.load(...) first")

    def prepare(self, images, bands=None):
        """Read, check and regrid images for this model, in nanomaggies.

        Parameters
        ----------
        images : object
            Anything `astro_sbgm.io.read_images` accepts, or a
            `torch.utils.data.Dataset` whose items are such images or arrays
            ``(band, y, x)`` in nanomaggies in the model's band order.
        bands : str, optional
            Band names of the inputs when they do not carry them.

        Returns
        -------
        `numpy.ndarray`
            ``(n, band, y, x)`` float32 fluxes on the model grid; masked
            pixels are set to 0.
        """
        self._validate()
        if isinstance(images, torch.utils.data.Dataset):
            items = [images[i] for i in range(len(images))]
            items = [it.numpy() if isinstance(it, torch.Tensor) else it for it in items]
            if items and all(isinstance(it, np.ndarray) for it in items):
                images = np.stack(items)
                bands = bands or self.bands_
            else:
                images = items
        if isinstance(images, (list, tuple)) and len(images) == 0:
            raise ValueError("the training set is empty: give at least one image")
        ccds = read_images(images, bands=bands)
        out = np.empty((len(ccds), len(self.bands_), self.image_size, self.image_size),
                       np.float32)
        n_masked = 0
        for i, ccd in enumerate(ccds):
            ccd = to_model_grid(select_bands(ccd, self.bands_), self.image_size,
                                float(self.pixel_scale) * u.arcsec)
            data = ccd.data
            if ccd.mask is not None and ccd.mask.any():
                n_masked += int(ccd.mask.sum())
                data = np.where(ccd.mask, 0.0, data)
            out[i] = data
        if n_masked:
            warnings.warn(f"{n_masked} masked or non-finite pixel(s) in the inputs were set to "
                          "0 nanomaggy", AstroSBGMInputWarning)
        return out

    # ------------------------------------------------------------------ fit
    def fit(self, X, steps=1000, checkpoint_dir=None, checkpoint_every=1000, resume=False,
            progress=True, bands=None, warm_start=False, precision="fp32", compile=False,
            allow_tf32=False, time_limit=None, stream="auto", num_workers=None,
            scaler_images=SCALER_IMAGES, conditions=None, keep_checkpoints=None):
        """Train the model on galaxy images.

        Launched by ``torchrun`` with several processes, the call trains with
        `~torch.nn.parallel.DistributedDataParallel` (NCCL on GPUs, gloo on
        the CPU) without any change to the calling code: ``batch_size`` is
        the global batch, split evenly over the processes, every process
        sees the batches a single process would see, rank 0 alone updates
        the EMA and writes checkpoints, and every process ends with the same
        weights.  See the "Training and sampling at scale" page of the docs.

        Parameters
        ----------
        X : object
            Training images: anything `astro_sbgm.io.read_images` accepts (a
            list of CCDData, FITS paths, a directory or glob of FITS files, a
            4-D array with ``bands=``), the ``index.ecsv`` table that
            `astro_sbgm.surveys.make_cutouts` writes (or a table with a
            ``file`` column), a cutout store
            (`astro_sbgm.training_data.write_cutout_store`: its folder or the
            `~astro_sbgm.training_data.CutoutStore`), or a
            `torch.utils.data.Dataset` of images or ``(band, y, x)`` arrays.
        steps : int
            Total optimizer steps.  With ``resume=True`` training continues
            from the last checkpoint up to this total.
        checkpoint_dir : str or path, optional
            Directory for checkpoints (created; must be new, empty or an
            earlier run's checkpoint directory).
        checkpoint_every : int
            Steps between checkpoints.
        keep_checkpoints : int, optional
            Keep only the newest this many checkpoints in ``checkpoint_dir``
            (each holds the weights, the weight average and the optimizer
            state: about 120 MB for the bundled model's network); None
            (default) keeps them all, as a curve of quality against training
            needs.
        resume : bool
            Continue from the newest checkpoint in ``checkpoint_dir``
            (weights, EMA, optimizer, step, data order and random state).
        progress : bool
            Show a tqdm progress bar.
        bands : str, optional
            Band names of the inputs when they do not carry them.
        warm_start : bool
            Fine-tune: continue from the current weights of a fitted model
            instead of starting afresh.  ``steps`` then counts the steps of
            this call (not the model's total); the data order, augmentation,
            timesteps and noise come from fresh random streams (derived from
            ``seed`` and the steps already taken, so a fine-tune never replays
            the first run); Adam starts anew with the learning-rate warm-up;
            the weight average restarts its ramp-up, so its horizon fits the
            new run; and the flux scaling of the fitted model is kept (not
            refitted to ``X``), so the model's [-1, 1] space does not move.
        precision : {"fp32", "bf16"}
            ``"bf16"``: the network runs under bfloat16 autocast on CUDA (the
            loss stays in float32); ignored with a warning on the CPU.
        compile : bool
            Run the network through `torch.compile` (the first steps are slow
            while it compiles).
        allow_tf32 : bool
            Allow TensorFloat-32 products on CUDA during training.
        time_limit : float, optional
            Wall-clock budget in seconds: training stops after the step that
            exceeds it, even if ``steps`` is not reached (`n_steps_` says how
            far it got).
        stream : bool or "auto"
            Read the images from disk while training (through a
            `torch.utils.data.DataLoader`) instead of holding them in memory.
            The batches, and so the trained weights, are the same bit for bit
            either way (see `astro_sbgm.training_data`).  ``"auto"`` streams
            a cutout store and a Dataset, and a directory, glob or index table
            whose images would take more than 1 GiB as float32 on the model
            grid; True requires one of those inputs.
        num_workers : int, optional
            DataLoader worker processes reading ahead when streaming (0: read
            in the training process); default
            `~astro_sbgm.training_data.default_num_workers` (this process's
            share of the cores, minus one).
        scaler_images : int
            When streaming, the flux scaler's statistics (k-means truncation
            point, sky sigma) are measured on at most this many images, evenly
            spaced through the set and read once (all of them for a smaller
            set, which gives the in-memory fit exactly).
        conditions : `~astropy.table.QTable`, `~astropy.table.Table` or dict, optional
            For a conditional model (``GalaxyDiffusion(conditions=[...])``):
            the properties of the training images, one row per image in
            their order, with units (magnitudes and colours in mag,
            ``r_half`` in an angle or in pixels, ...); other columns are
            ignored.  By default the properties are measured on the training
            images with `astro_sbgm.metrics.measure_galaxies` (default
            settings), so that requests live in the measurement system that
            checks the draws.  Rows with a property that is masked, NaN or
            cannot be measured train unconditionally (counted in an
            `~astro_sbgm.exceptions.AstroSBGMConditionWarning`).  The values
            are standardised (mean and standard deviation stored with the
            model); a fine-tune (``warm_start=True``) of a model with the same
            conditions keeps its standardisation, one of an unconditional
            model gets a new, zero-initialised condition embedding, and one
            given more conditions (the model's first, then new ones, e.g.
            ``set_params(conditions=[*model.conditions, 'ellipticity'])``)
            keeps the old ones' standardisation and learns the new ones from
            zero weights.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For an empty training set, images that cannot be brought onto the
            model grid, a checkpoint made with other hyper-parameters, a
            ``checkpoint_dir`` whose checkpoints are all damaged (with
            ``resume=True``; a damaged newest one is skipped with an
            `~astro_sbgm.training.AstroSBGMCheckpointWarning`), or a
            ``batch_size`` that the number of ``torchrun`` processes does not
            divide.
        FileExistsError
            If ``checkpoint_dir`` holds files that are not checkpoints.
        astro_sbgm.training.FolderLockedError
            If another process is writing into ``checkpoint_dir`` (the run
            holds an OS lock on the folder while it trains; the message names
            the other process).  Nothing is changed, in memory or on disk.
        FloatingPointError
            If the loss becomes non-finite.
        astro_sbgm.training.TrainingInterrupted
            After Ctrl-C, SIGTERM or SIGUSR1 (a scheduler's preemption or time
            limit): the current step is finished and checkpointed (with
            ``checkpoint_dir``), the model holds the weights of that step and
            stays usable (`n_steps_` says which), and the exception says how to
            continue.  It is a `KeyboardInterrupt`.
        """
        if int(steps) < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir= (where the checkpoints are)")
        if checkpoint_dir is not None:  # before anything of a fitted model is replaced
            refuse_foreign_checkpoint_dir(checkpoint_dir)
        self._validate()
        source, streamed = open_training_set(X, self.bands_, int(self.image_size),
                                             float(self.pixel_scale), input_bands=bands,
                                             stream=stream)
        workers = default_num_workers() if num_workers is None else int(num_workers)
        if source is None:
            fluxes = self.prepare(X, bands=bands)
        elif not streamed:
            fluxes = source.load_all()
        else:   # one image read now: bad files, bands or grids fail before the model changes
            fluxes = None
            source.flux(0)
        continuing = warm_start and hasattr(self, "ema_net_")
        steps_before = int(getattr(self, "n_steps_", 0)) if continuing else 0
        if not continuing:
            self._build()
        self._to_local_device()   # under torchrun: one GPU per process, then join the group
        distributed = _dist.init_distributed(self.device_)
        if distributed:
            _dist.check_batch_divisible(self.batch_size)
        history_before = len(getattr(self, "history_", [])) if continuing else 0
        # where a fine-tune began: a resumed run counts from the model it started from,
        # whatever model the resuming call was handed (its weights are replaced anyway)
        config = {"params": self._json_params(), "scaler": None,
                  "steps_before": steps_before, "history_before": history_before}
        record = _dist.run_on_main(latest_checkpoint, checkpoint_dir) if resume else None
        if record is not None:   # the Trainer checks the rest when it loads the checkpoint
            saved = checkpoint_run_config(record, config["params"], checkpoint_dir)
            self.scaler_ = FluxScaler.from_dict(saved["scaler"])
            if continuing and "steps_before" in saved:
                steps_before = int(saved["steps_before"])
                history_before = int(saved.get("history_before", history_before))
                self.history_ = list(getattr(self, "history_", []))[:history_before]
                config["steps_before"] = steps_before
                config["history_before"] = history_before
        elif not continuing and fluxes is None:   # a documented subsample, read once
            self.scaler_ = _dist.run_on_main(fit_flux_scaler, self.scaler_, source,
                                             int(scaler_images), workers)[0]
        elif not continuing:
            self.scaler_.fit(fluxes)
        if distributed:  # every rank scales with rank 0's fit
            self.scaler_ = FluxScaler.from_dict(_dist.broadcast_object(self.scaler_.to_dict()))
        config["scaler"] = self.scaler_.to_dict()
        cond_values = self._fit_conditions(
            fluxes, conditions, continuing, len(source) if fluxes is None else len(fluxes),
            saved.get("conditions") if record is not None else None)
        if cond_values is not None:
            config["conditions"] = self.conditions_.to_dict()
        if fluxes is None:
            data = StreamingData(source.scaled(self.scaler_),
                                 (len(source),) + tuple(source.grid.shape), num_workers=workers,
                                 pin_memory=self.device_.type == "cuda")
        else:
            data = torch.from_numpy(self.scaler_.transform(fluxes))
        denoiser = Denoiser(self.net_, self.schedule_, self.objective)
        seed = int(self.seed)
        if continuing:  # fresh streams for a fine-tune, never a replay of the first run
            seed = int(np.random.SeedSequence([seed, steps_before]).generate_state(1)[0])
        trainer = Trainer(denoiser, data, batch_size=int(self.batch_size),
                          lr=float(self.learning_rate), seed=seed, loss=self.loss,
                          min_snr_gamma=self.min_snr_gamma, grad_clip=self.grad_clip,
                          ema_halflife=float(self.ema_halflife), ema_rampup=self.ema_rampup,
                          lr_warmup=int(self.lr_warmup), augment_data=bool(self.augment),
                          device=self.device_, distributed=distributed, precision=precision,
                          compile=compile, continuous_time=bool(self.continuous_time),
                          conditions=cond_values,
                          condition_dropout=float(self.condition_dropout),
                          condition_lr_scale=float(self.condition_lr_scale))
        if continuing:
            trainer.ema.net.load_state_dict(self.ema_net_.state_dict())
        if record is not None:
            trainer.load_checkpoint(record)
        try:
            with _allow_tf32(allow_tf32 and self.device_.type == "cuda"):
                trainer.run(int(steps), checkpoint_dir=checkpoint_dir,
                            checkpoint_every=int(checkpoint_every), progress=progress,
                            config=config, time_limit=time_limit,
                            keep_checkpoints=keep_checkpoints)
        except TrainingInterrupted:
            # Ctrl-C or a scheduler's signal: the model keeps the step reached, usable
            self._adopt(trainer, continuing, steps_before, data)
            raise
        finally:
            if isinstance(data, StreamingData):   # stop the reading processes
                data.close()
        return self._adopt(trainer, continuing, steps_before, data)

    def _fit_conditions(self, fluxes, table, continuing, n, saved=None):
        """The standardised condition rows of the training set (None: unconditional).

        Measures (or reads from ``table``) the properties, warns about rows
        that train unconditionally, sets `conditions_` and, for a fine-tune of
        an unconditional network, adds the zero-initialised embedding.
        """
        names = self.condition_names_
        had = getattr(self, "conditions_", None) if continuing else None
        if not names:
            if table is not None:
                raise ValueError("fit(conditions=...) needs a conditional model: name the "
                                 "properties with GalaxyDiffusion(conditions=[...]) (or "
                                 "set_params(conditions=[...]))")
            if had is not None or (continuing and self.net_.cond_dim):
                raise ValueError(f"this model is conditioned on {list(had.names)}; a "
                                 "fine-tune keeps its conditions: set_params(conditions="
                                 f"{list(had.names)})")
            self.conditions_ = None
            return None
        extending = had is not None and tuple(had.names) != tuple(names)
        if extending and (tuple(names[:len(had.names)]) != tuple(had.names)
                          or len(names) <= len(had.names)):
            raise ValueError(f"this model is conditioned on {list(had.names)}, not "
                             f"{list(names)}; a fine-tune keeps the conditions of the model "
                             "and may add new ones after them (set_params(conditions="
                             f"{list(had.names) + ['...']})); train a new model for others")
        if continuing:
            if self.net_.cond_dim == 0:
                seed = int(self.seed)
                self.net_.add_condition_embedding(len(names), seed=seed)
                self.ema_net_.add_condition_embedding(len(names), seed=seed)
            elif self.net_.cond_dim < len(names):   # new conditions, zero weights
                self.net_.extend_condition_embedding(len(names))
                self.ema_net_.extend_condition_embedding(len(names))
        if table is not None:
            values = read_conditions(table, names, self.bands_, float(self.pixel_scale), n=n,
                                     allow_extra=True, keyword="fit(conditions=...)")
            if len(values) != n:
                raise ValueError(f"fit(conditions=...) has {len(values)} rows for {n} "
                                 "training images; give one row per image")
            source = "table given to fit(conditions=...)"
        elif fluxes is None:
            raise ValueError("the properties of a streamed training set are not measured "
                             "at fit: measure them once (astro_sbgm.metrics.measure_galaxies) "
                             "and give the table as fit(conditions=...), or stream=False")
        else:
            values = measure_conditions(fluxes, names, self.bands_, float(self.pixel_scale))
            source = ("measured on the training images by astro_sbgm.metrics.measure_galaxies "
                      "(default settings)")
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            per = ", ".join(f"{name}: {int((~np.isfinite(values[:, j])).sum())}"
                            for j, name in enumerate(names))
            warnings.warn(f"{int(bad.sum())} of {len(values)} training images have a "
                          f"property that is not measured ({per}); they train as "
                          "unconditional images", AstroSBGMConditionWarning)
        if saved is not None:
            stats = ConditionStats.from_dict(saved)
        elif extending:
            stats = had.extended(values, names, self.bands_, source)
        elif had is not None:
            stats = had
        else:
            stats = ConditionStats.fit(values, names, self.bands_, source)
        # what sample() draws conditions from when given none: this training set's rows
        stats.set_population(values, seed=int(self.seed))
        self.conditions_ = stats
        return torch.from_numpy(stats.standardise(values))

    def _adopt(self, trainer, continuing, steps_before, data):
        """Take the trained state from ``trainer``."""
        self.net_ = trainer.net
        self.ema_net_ = trainer.ema.net
        self.n_steps_ = steps_before + trainer.step
        self.history_ = (list(getattr(self, "history_", [])) if continuing else []) + list(
            trainer.losses)
        self.n_train_ = int(data.shape[0])
        return self

    def round_trip(self, images):
        """Images as the model can represent them: the flux scaling applied, then undone.

        Every generated pixel lies inside the scaler's clip interval, real
        pixels do not.  Measure real galaxies passed through `round_trip`
        beside the raw ones to tell the model's own error from what the
        clipping costs (the normalisation floor, SGD of ``x`` against
        ``round_trip(x)``).

        Parameters
        ----------
        images : object
            A ``(n, band, y, x)`` or ``(band, y, x)`` array in nanomaggies in
            the model's band order, one `~astropy.nddata.NDData` /
            `~astropy.nddata.CCDData`, or a list of them (anything
            `astro_sbgm.io.read_image` reads).

        Returns
        -------
        object
            The same kind of object: an array of the same shape, or
            `~astropy.nddata.CCDData` (one or a list) in the model's bands,
            with the data round-tripped and WCS, unit, mask, uncertainty and
            meta kept.

        Raises
        ------
        NotFittedError
            If the model was never fitted or loaded.
        ValueError
            If an image lacks one of the model's bands.
        """
        self._check_fitted()
        if isinstance(images, np.ndarray):
            return self.scaler_.inverse_transform(self.scaler_.transform(images))
        single = not isinstance(images, (list, tuple))
        out = []
        for ccd in read_images([images] if single else list(images)):
            ccd = select_bands(ccd, self.bands_).copy()
            ccd.data = self.scaler_.inverse_transform(self.scaler_.transform(ccd.data))
            out.append(ccd)
        return out[0] if single else out

    # ------------------------------------------------------------------ sample
    def denoiser(self, weights="ema", clip_x0=True):
        """The trained model as a denoiser, ``(x_t, t) -> (x0_hat, eps_hat)``, for the engine.

        Parameters
        ----------
        weights : {"ema", "model"}
            The weight average (default) or the raw weights.
        clip_x0 : bool
            Clip ``x0_hat`` to [-1, 1] (sampling); False gives the model's own
            score (likelihoods).

        Returns
        -------
        `~astro_sbgm.diffusion.Denoiser`
            On the model's device, the network in eval mode; feed it to
            `astro_sbgm.diffusion.engine.generate`.

        Raises
        ------
        NotFittedError
            If the model was never fitted or loaded.
        ValueError
            For unknown ``weights``.
        """
        self._check_fitted()
        if weights not in ("ema", "model"):
            raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
        net = self.ema_net_ if weights == "ema" else self.net_
        net.eval()
        return Denoiser(net, self.schedule_, self.objective, clip_x0=clip_x0)

    _denoiser = denoiser   # the old private name

    def sampler_options(self, sampler):
        """This model's default options for a sampler (merge as ``{**these, **yours}``).

        A model read from the paper's released checkpoints draws its ancestral
        (``"ddpm"``) steps with the released code's posterior variance
        (`astro_sbgm._astroddpm.released_sampler_options`); other models and
        samplers have none.
        """
        return released_sampler_options(self, sampler)

    @property
    def default_batch_size(self):
        """int: Images per network call of `sample` when ``batch_size=None``.

        16 on a CPU, where larger batches are slower per image (the bundled
        64x64 model, one thread: 33 ms per image and evaluation at 16, 44 ms
        at 64, ``benchmarks/bench_batch_size.py``); 64 on a GPU.  What a
        galaxy looks like does not depend on it.
        """
        self._check_fitted()
        return 16 if self.device_.type == "cpu" else 64

    def default_steps(self, sampler):
        """Number of steps used when ``steps=None``: ``T`` for ddpm, else 20."""
        return get_sampler(sampler).default_steps(self.schedule_.T)

    def sample_scaled(self, n, sampler="dpmpp-2m", steps=None, grid="auto", seed=None,
                      batch_size=None, weights="ema", progress=True, start=0,
                      precision="fp32", shard=False, conditions=None, guidance_scale=1.0,
                      stream=0, **options):
        """Draw samples as a tensor in the network's [-1, 1] space.

        Same arguments as `sample`, except ``conditions``: here the
        *standardised* condition rows, an array ``(n, k)`` (see
        `conditions_`), and ``stream``: the index of an independent family
        of per-sample random streams of the seed (0, the default, draws the
        galaxies of `sample`; ``sample(candidates=k)`` draws its candidate
        ``j`` from stream ``j``).  Returns ``(tensor, info)`` where ``info``
        holds the seed, the number of network evaluations per image, the
        sampler settings and ``start``, the index of the first sample
        returned.  ``start`` offsets the per-sample seeds, so samples
        ``start .. start + n - 1`` of a seed can be drawn separately; with
        ``shard=True`` this process draws only its block of them
        (`astro_sbgm.distributed.shard_range`).
        """
        self._check_fitted()
        n = int(n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {precision!r}; use 'fp32' or 'bf16'")
        start = int(start)
        first = start
        if conditions is not None:
            conditions = torch.as_tensor(np.asarray(conditions), dtype=torch.float32)
            if conditions.shape != (n, self.net_.cond_dim):
                raise ValueError(f"conditions must have shape ({n}, {self.net_.cond_dim}) "
                                 f"(standardised rows), got {tuple(conditions.shape)}")
        if shard:
            self._to_local_device()   # under torchrun: this process's GPU, then the group
            _dist.init_distributed(self.device_)
            block = _dist.shard_range(n)
            start, n = start + block.start, len(block)
        # a released model's ancestral sampler uses the released code's variance
        options = {**self.sampler_options(sampler), **options}
        rule = get_sampler(sampler, **options)  # validate name and options early
        steps = rule.default_steps(self.schedule_.T) if steps is None else int(steps)
        if grid == "auto":
            grid = rule.default_grid
        times = make_grid(self.schedule_, steps, grid)
        seed = self._resolve_seed(seed, shard)
        den = self.denoiser(weights)
        if precision == "bf16":
            if self.device_.type == "cuda":
                den.net = autocast_forward(den.net, "cuda", torch.bfloat16)
            else:
                warnings.warn(f"precision='bf16' is used on CUDA devices only; sampling on "
                              f"{self.device_} runs in float32", AstroSBGMTrainingWarning)
        shape = (len(self.bands_), self.image_size, self.image_size)
        rows = None if conditions is None else conditions[start - first:]

        def guided(den, batch):   # classifier-free guidance with this batch's conditions
            return ClassifierFreeGuidance(den, rows[batch.index], guidance_scale)
        wrap = None if conditions is None else guided
        # a batch of one is padded to two: sample i is the same whatever the batching
        if batch_size is None:
            batch_size = self.default_batch_size
        stream = int(stream)
        if stream < 0:
            raise ValueError(f"stream must be >= 0, got {stream}")
        noise = PerSampleNoise(seed, start, key=(stream,) if stream else ())
        x, nfe = generate(den, (n,) + shape, times, rule, noise,
                          int(batch_size), wrap=wrap, pad_single=True, device=self.device_,
                          progress=progress)
        info = {"seed": int(seed), "sampler": rule.name, "steps": steps, "grid": grid,
                "nfe": nfe, "weights": weights, "start": start,
                "options": options if isinstance(sampler, str) else rule.options()}
        if conditions is not None:
            info["guidance_scale"] = float(guidance_scale)
        return x, info

    def _resolve_seed(self, seed, shard):
        """``seed``, or a new one (under ``torchrun`` with ``shard``: rank 0's)."""
        if seed is not None:
            return int(seed)
        seed = new_seed()
        if shard:  # the shards of one draw share rank 0's seed
            self._to_local_device()
            _dist.init_distributed(self.device_)
            seed = _dist.broadcast_object(seed)
        return seed

    def sample(self, n, sampler="dpmpp-2m", steps=None, grid="auto", seed=None,
               batch_size=None, weights="ema", progress=True, start=0, precision="fp32",
               shard=False, positions=None, conditions=None, guidance_scale=1.0, candidates=1,
               **options):
        """Draw new galaxies, at random or to order (``conditions=``).

        A conditional model given no ``conditions`` draws galaxy ``i``'s
        properties from the population of conditions it stores (by default
        its training set's, see `set_population`), then the galaxy under
        them: a draw from the model of the whole population.

        Parameters
        ----------
        n : int
            Number of galaxies.
        sampler : str
            One of `astro_sbgm.diffusion.SAMPLERS`: ``"ddpm"`` (the paper's
            ancestral sampler), ``"ddim"``, ``"dpmpp-2m"``, ``"euler"``,
            ``"heun"``.
        steps : int, optional
            Grid points; default `default_steps`.
        grid : {"auto", "uniform", "quadratic", "karras"}
            Step grid; ``"auto"`` is uniform for ``"ddpm"`` (the paper) and
            Karras et al.'s grid for the others.
        seed : int, optional
            Galaxy ``i`` of a seed is the same whatever ``n`` and
            ``batch_size`` (its random stream depends on the seed and ``i``
            only; bit for bit at equal batch sizes, while the convolution
            kernels a CPU picks for other batch sizes can round differently,
            at the 1e-6 level); None draws a seed (recorded in the output).
        batch_size : int, optional
            Images per network call; None: `default_batch_size` (16 on a
            CPU, 64 on a GPU).
        weights : {"ema", "model"}
            Use the weight average (default) or the raw weights.
        progress : bool
            Show a progress bar.
        start : int
            Index of the first galaxy: draws galaxies ``start`` to
            ``start + n - 1`` of the seed.
        precision : {"fp32", "bf16"}
            ``"bf16"``: the network runs under bfloat16 autocast on CUDA (the
            sampler arithmetic stays in float32); ignored with a warning on
            the CPU.
        shard : bool
            Under ``torchrun``, draw only this process's contiguous block of
            the ``n`` galaxies; the blocks of all processes, in rank order,
            are exactly the galaxies of a single-process call.
        positions : `~astropy.coordinates.SkyCoord`, optional
            Sky positions of the galaxies: a scalar (every galaxy there) or
            one per galaxy (length ``n``; with ``shard=True`` still the
            ``n`` positions of the whole draw).  Galaxy ``i``'s WCS
            reference pixel, the cutout centre, is put at position ``i``
            (north up, east left, the model's pixel scale; any frame,
            stored as ICRS).  By default every galaxy sits at RA = Dec = 0,
            a placeholder: its header says so with ``POSARBIT = T``.
        conditions : `~astropy.table.QTable`, `~astropy.table.Table` or dict, optional
            For a conditional model: the properties wanted, exactly the
            model's `conditions` as columns (``n`` rows, or scalars for
            every galaxy), with units: magnitudes and colours in mag,
            ``r_half`` in an angle or in pixels (the model's pixel scale),
            fluxes in nanomaggies (or any f_nu unit), morphology
            dimensionless.  A row with a masked or NaN value is drawn
            unconditionally.  Requests outside the range of the training
            values are warned about (`~astro_sbgm.exceptions.AstroSBGMConditionWarning`).
            See also `sample_like`.  None (default) on a conditional model
            that stores a population of conditions (`population_`): galaxy
            ``i`` is drawn under a row of it picked by its own random stream
            (the seed and ``i``; so it depends on neither ``n`` nor the
            batching), and its header records the row as a request
            (``CONDVj``) with ``CONDSRC = 'population'`` and the row number
            (``POPROW``); ``guidance_scale=0`` instead draws from the
            unconditional model (the network's null condition), as does a
            conditional model without a population.
        guidance_scale : float
            Classifier-free guidance scale ``s``: the sampler uses the noise
            prediction ``eps_u + s (eps_c - eps_u)`` of the unconditional
            (``eps_u``) and conditional (``eps_c``) predictions of the one
            network.  ``s = 1`` (default) is the conditional model, ``s = 0``
            the unconditional one, ``s > 1`` trades diversity for agreement
            with the request (without ``conditions``: 0 for the unconditional
            model, or, for a model with a population, the scale its draws
            take).  A guided step (``s`` not 0 or 1) evaluates the
            network on a batch twice as large, and counts two evaluations in
            ``NFE``.
        candidates : int
            With ``conditions`` (or in a draw from the population, for its
            rows): draw this many galaxies per request and keep
            the one whose properties, measured as `fit` measured the
            training set (`~astro_sbgm.metrics.measure_galaxies`), lie
            nearest the request: the Euclidean distance of the standardised
            properties, each in units of its spread over the training set
            (``conditions_.std``).  A rejection step in the manner of
            approximate Bayesian computation: the kept galaxy is the model's
            draw for the request among those that measure closest to it.
            Costs ``candidates`` times the network evaluations (``NFE``
            counts them all).  Candidate 0 is the galaxy ``candidates=1``
            draws; candidate ``j`` comes from an independent random stream
            of the same seed, so the result still depends only on the seed
            and the galaxy's index.  Rows drawn unconditionally keep
            candidate 0.  Default 1 (no selection).
        **options
            Passed to the sampler (``eta`` for ddim, ``variance`` for ddpm).

        Returns
        -------
        list of `~astropy.nddata.CCDData`
            ``(band, y, x)`` in nanomaggies with a TAN WCS at the model's
            pixel scale centred on the cutout centre (at ``positions``, or
            at the arbitrary RA = Dec = 0 with ``POSARBIT = T``), the bands
            in ``meta`` and the sampler, steps, network evaluations, seed,
            index of the galaxy (``SAMPLEID``) and weights used; with
            ``conditions``, the guidance scale (``GUIDANCE``) and, per
            property ``j``, its name (``CONDNj``), the requested value in the
            model's unit (``CONDVj``, absent for an unconditional row) and
            the unit (``CONDUj``); with ``candidates > 1``, their number
            (``CANDS``), the one kept (``CANDIDX``) and its distance to the
            request (``CANDDIST``).

        Raises
        ------
        NotFittedError
            If the model was never fitted or loaded.
        ValueError
            For an unknown sampler or grid, a bad number of steps,
            ``positions`` whose length is not ``n``, ``conditions`` given to
            an unconditional model, ``conditions`` with a missing or an extra
            column (named), a number of rows other than ``n``, or
            ``candidates`` other than a positive integer (or above 1 in an
            unconditional draw).
        TypeError
            If ``positions`` is not a `~astropy.coordinates.SkyCoord`.
        astropy.units.UnitConversionError
            For a ``conditions`` column without a unit, or in a unit that
            cannot be converted (named).

        Notes
        -----
        The pixels do not depend on ``positions``: a galaxy drawn with a
        position is the same galaxy as without, only its WCS differs.  To put
        galaxies into a larger image, see `astro_sbgm.simulation.inject`.
        """
        if grid != "auto" and grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; known: ('auto',) + {GRIDS}")
        if positions is not None:
            positions = check_positions(positions, n)
        requested = standardised = rows = None
        conditional = getattr(self, "conditions_", None) is not None
        if conditions is not None:
            requested = self._read_request(conditions, n, allow_extra=False,
                                           keyword="conditions")
        elif conditional and self.conditions_.population is not None and guidance_scale != 0:
            # a draw of the whole population: each galaxy's properties from the population
            seed = self._resolve_seed(seed, shard)
            requested, rows = self.conditions_.draw_population(
                seed, start, check_positive_int("n", n))
        elif guidance_scale != 1.0 and not (conditional and guidance_scale == 0.0):
            raise ValueError("guidance_scale applies to draws to order: give conditions= "
                             "(or use sample_like)" + (
                                 "; without them a model that stores no population of "
                                 "conditions takes 0 (unconditional) or 1" if conditional
                                 else ""))
        if requested is not None:
            standardised = self.conditions_.standardise(requested)
        candidates = check_positive_int("candidates", candidates)
        if candidates > 1 and requested is None:
            raise ValueError("candidates applies to draws to order: give conditions= (or use "
                             "sample_like); without a request there is nothing to select on")

        def draw(stream, seed):
            x, info = self.sample_scaled(n, sampler, steps, grid, seed, batch_size, weights,
                                         progress, start=start, precision=precision,
                                         shard=shard, conditions=standardised,
                                         guidance_scale=guidance_scale, stream=stream,
                                         **options)
            return self.scaler_.inverse_transform(x.numpy()), info

        fluxes, info = draw(0, seed)
        if fluxes.shape[0] == 0:
            return []
        # with shard=True this process holds galaxies offset .. offset + len - 1 of the n
        offset = info["start"] - int(start)
        chosen = distance = None
        if candidates > 1:
            fluxes, chosen, distance = self._nearest_candidates(
                # every candidate from the seed the first draw used (drawn there if None)
                fluxes, lambda j: draw(j, info["seed"])[0],
                standardised[offset:offset + len(fluxes)], candidates)
            info = {**info, "nfe": info["nfe"] * candidates}
        out = [self._to_ccd(f, info, info["start"] + i,
                            None if positions is None else positions[offset + i],
                            None if requested is None else requested[offset + i])
               for i, f in enumerate(fluxes)]
        if rows is not None:
            for ccd, row in zip(out, rows[offset:offset + len(out)]):
                ccd.meta["CONDSRC"] = ("population", "requested values drawn from population_")
                ccd.meta["POPROW"] = (int(row), "row of population_ drawn")
        if chosen is not None:
            for ccd, j, d in zip(out, chosen, distance):
                ccd.meta["CANDS"] = (candidates, "candidates drawn; the nearest kept")
                ccd.meta["CANDIDX"] = (int(j), "index of the candidate kept")
                if np.isfinite(d):
                    ccd.meta["CANDDIST"] = (float(d), "standardised distance to the request")
        return out

    def _nearest_candidates(self, fluxes, draw, request, k):
        """Per request row, the nearest (as measured) of candidate 0 and ``draw(1 .. k-1)``.

        Returns the kept fluxes, the index of the kept candidate and its
        standardised distance (inf where no candidate could be measured or the
        row was drawn unconditionally: candidate 0 is kept).
        """
        stats = self.conditions_
        bands, scale = self.bands_, float(self.pixel_scale)

        def distance(f):
            measured = measure_conditions(f, stats.names, bands, scale)
            d = np.sqrt(np.sum((stats.standardise(measured) - request) ** 2, axis=1))
            return np.where(np.isfinite(d), d, np.inf)

        best, best_d = np.array(fluxes, copy=True), distance(fluxes)
        chosen = np.zeros(len(best), int)
        for j in range(1, k):
            cand = draw(j)
            d = distance(cand)
            better = d < best_d
            best[better], best_d[better], chosen[better] = cand[better], d[better], j
        return best, chosen, best_d

    def sample_like(self, catalogue, guidance_scale=1.0, **kwargs):
        """Draw one galaxy per row of a catalogue, with that row's properties.

        Parameters
        ----------
        catalogue : `~astropy.table.QTable`, `~astropy.table.Table` or dict
            Must hold the model's `conditions` as columns with units (see
            `sample`); other columns (identifiers, positions, ...) are
            ignored.  A catalogue written by
            `astro_sbgm.metrics.measure_galaxies` works as it is.
        guidance_scale : float
            See `sample`.
        **kwargs
            Passed to `sample` (``sampler``, ``steps``, ``seed``,
            ``positions``, ``candidates``, ...).  ``candidates=k`` keeps,
            per row, the nearest as measured of ``k`` draws (see `sample`).

        Returns
        -------
        list of `~astropy.nddata.CCDData`
            Galaxy ``i`` drawn for row ``i``; its requested properties are in
            its ``meta`` (see `sample`).

        Raises
        ------
        ValueError
            For an unconditional model, a catalogue without one of the
            model's conditions (named) or without rows.
        """
        n = len(self._read_catalogue(catalogue, "sample_like"))
        request = {c: catalogue[c] for c in self.conditions_.names}
        return self.sample(n, conditions=request, guidance_scale=guidance_scale, **kwargs)

    def _read_catalogue(self, catalogue, what):
        """The model's conditions in ``catalogue``: ``(n, k)`` in its units, ``n >= 1``."""
        self._check_fitted()
        self._require_conditional(what)
        # the columns checked (missing ones named, extra ones allowed) and units read
        values = read_conditions(catalogue, self.conditions_.names, self.bands_,
                                 float(self.pixel_scale), allow_extra=True, keyword="catalogue")
        if len(values) == 0:
            raise ValueError("the catalogue has no rows")
        return values

    @property
    def population_(self):
        """The population of conditions a draw without ``conditions`` uses.

        A `~astropy.table.QTable` of the model's `conditions` with units
        (rows with a NaN are drawn unconditionally), or None for an
        unconditional model and for a conditional model saved without one.
        `fit` stores its training set's rows (a random subset of 65,536 of a
        larger set); `set_population` replaces them.
        """
        stats = getattr(self, "conditions_", None)
        return None if stats is None else stats.population_table()

    def set_population(self, catalogue):
        """Replace the population of conditions the model draws from when given none.

        `sample` without ``conditions`` then draws each galaxy's properties
        from the rows of ``catalogue`` (uniformly, by the galaxy's own
        random stream), then the galaxy under them; `save` stores them.
        With a survey's catalogue this makes the model draw that survey's
        population.

        Parameters
        ----------
        catalogue : `~astropy.table.QTable`, `~astropy.table.Table` or dict
            The model's `conditions` as columns with units (as for
            `sample_like`; other columns are ignored).  Values outside the
            training range are warned about.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For an unconditional model, a catalogue without one of the
            model's conditions (named) or without rows.
        """
        values = self._read_catalogue(catalogue, "set_population")
        self.conditions_.warn_out_of_range(values, keyword="catalogue")
        self.conditions_.set_population(values, seed=int(self.seed))
        return self

    def _require_conditional(self, what):
        if getattr(self, "conditions_", None) is None:
            raise ValueError(
                f"{what} needs a conditional model, and this one was trained without "
                "conditions (GalaxyDiffusion(conditions=None)). Train one with "
                "GalaxyDiffusion(conditions=['mag_r', 'r_half', ...]).fit(X), or fine-tune "
                "this one: model.set_params(conditions=[...]).fit(X, warm_start=True)")

    def read_conditions(self, conditions, n=None, keyword="conditions"):
        """Requested properties as this model reads them: in its units, and standardised.

        What `sample`, `inpaint` and `transfer` do with their ``conditions=``.

        Parameters
        ----------
        conditions : `~astropy.table.QTable`, `~astropy.table.Table` or dict
            Exactly the model's `conditions` as columns, with units (see
            `sample`).
        n : int, optional
            Rows wanted (scalars are broadcast to it).
        keyword : str
            The argument name used in error messages.

        Returns
        -------
        values : `numpy.ndarray`
            ``(n, k)`` in the units of `conditions_` (``conditions_.units``).
        standardised : `numpy.ndarray`
            ``(n, k)`` float32, ``(values - mean) / std``: what the network sees.

        Raises
        ------
        ValueError, astropy.units.UnitConversionError
            As `sample` (unconditional model, missing or extra columns, units).

        Warns
        -----
        AstroSBGMConditionWarning
            For requests outside the range of the training values.
        """
        values = self._read_request(conditions, n, keyword=keyword)
        return values, self.conditions_.standardise(values)

    def _read_request(self, table, n, allow_extra=False, keyword="conditions"):
        """Requested properties ``(n, k)`` in the model's units; warns outside the range."""
        self._check_fitted()
        self._require_conditional(f"{keyword}=")
        values = read_conditions(table, self.conditions_.names, self.bands_,
                                 float(self.pixel_scale), n=n, allow_extra=allow_extra,
                                 keyword=keyword)
        self.conditions_.warn_out_of_range(values, keyword)
        return values

    def _to_ccd(self, flux, info, index, position=None, request=None):
        if position is None:
            ra = dec = 0.0
        else:
            ra, dec = float(position.ra.deg), float(position.dec.deg)
        # the reference pixel (CRPIX) is the cutout centre
        wcs = make_tan_wcs(flux.shape[-2:], float(self.pixel_scale) * u.arcsec, ra, dec)
        # io.make_image writes the band and unit cards; the rest are this sample's provenance
        posarbit = ((position is None), "T: RA = Dec = 0 is a placeholder"
                    if position is None else "F: centre placed at a given position")
        cards = provenance_cards(
            True, getattr(self, "n_steps_", 0), SAMPLER=info["sampler"],
            NSTEPS=info["steps"], NFE=(info["nfe"], "network evaluations per image"),
            SEED=info["seed"], SAMPLEID=(index, "index of this sample within the seed"),
            WEIGHTS=(info["weights"], "ema = weight average, model = raw"))
        ccd = make_image(np.asarray(flux, np.float32), self.bands_, wcs=wcs,
                         meta={"POSARBIT": posarbit}, cards=cards)
        if request is not None:
            ccd.meta.update(self.conditions_.request_cards(request, info["guidance_scale"]))
        return ccd

    # ------------------------------------------------------------------ applications
    def inpaint(self, image, mask=None, **kwargs):
        """Fill masked pixels (satellite trails, bad columns, stars) with the model.

        See `astro_sbgm.inpainting.inpaint` for the methods, the mask sources
        and what is returned; known pixels come back exactly as given.
        """
        from .inpainting import inpaint

        return inpaint(self, image, mask=mask, **kwargs)

    def transfer(self, image, strength=0.6, **kwargs):
        """Make an image look like the training survey (SDEdit domain transfer).

        See `astro_sbgm.transfer.transfer`; ``strength=0.6`` is the paper's
        600 of 1000 steps.
        """
        from .transfer import transfer

        return transfer(self, image, strength=strength, **kwargs)

    # ------------------------------------------------------------------ density
    def score_samples(self, X, method="elbo", *, n_levels=32, steps=50, solver="heun",
                      n_probes=1, seed=0, batch_size=16, weights="ema", bands=None,
                      progress=True, return_map=False):
        """Log-likelihood of each image under the model (scikit-learn's name for it).

        The density is that of the model's own space, the images after the
        flux scaling, in [-1, 1] (`astro_sbgm.diffusion.likelihood` explains
        the terms and the two methods); the denoiser's ``x0`` clipping is off.
        It becomes a density in nanomaggies through the scaler's Jacobian
        (``log_likelihood_flux``), defined only for images with no clipped
        pixel: a pixel below the scaler's lower clip or above its upper one
        has no density in nanomaggies, so such images get NaN there (their
        count is ``n_clipped``).

        Parameters
        ----------
        X : object
            Anything `astro_sbgm.io.read_images` accepts (images on another
            grid are brought onto the model's).
        method : {"elbo", "ode"}
            ``"elbo"``: the variational lower bound over ``n_levels`` noise
            levels (one network evaluation each; fast).  ``"ode"``: the
            probability-flow ODE with Hutchinson's trace estimator
            (``n_probes`` probes, ``solver`` ``"heun"`` with ``steps`` or
            ``"rk45"``; a forward and a backward pass per evaluation).
        n_levels, steps, solver, n_probes
            See ``method``.
        seed : int
            Seeds the noise (elbo) or the probes (ode); image ``i`` of a seed
            gets the same draws whatever the batch.
        batch_size : int
            Images per network call.
        weights : {"ema", "model"}
            Which weights.
        bands : str, optional
            Band names of inputs that do not carry them.
        progress : bool
            Show a progress bar.
        return_map : bool
            With ``"elbo"``, also return the per-pixel minus-bound maps
            ``(n, band, y, x)`` in nats: where an image is unusual.

        Returns
        -------
        table : `~astropy.table.QTable`
            One row per image: ``log_likelihood`` (nats, [-1, 1] space),
            ``bits_per_dim`` (``-log_likelihood / (D ln 2)``, D = pixels x
            bands), ``log_likelihood_flux`` (nats, density in nanomaggies),
            ``n_clipped``; for ``"elbo"`` also the ``prior``, ``diffusion``
            and ``decoder`` terms.  ``meta`` records the method and settings.
        maps : `numpy.ndarray`
            Only with ``return_map`` (and ``"elbo"``).

        Raises
        ------
        NotFittedError
            If the model was never fitted or loaded.
        ValueError
            For an unknown method or bad settings.
        """
        import math

        from astropy.table import QTable
        from tqdm.auto import tqdm

        from .diffusion.likelihood import elbo_log_likelihood, ode_log_likelihood

        self._check_fitted()
        if method not in ("elbo", "ode"):
            raise ValueError(f"method must be 'elbo' or 'ode', got {method!r}")
        if return_map and method != "elbo":
            raise ValueError("return_map=True needs method='elbo' (the per-pixel bound)")
        flux = self.prepare(X, bands=bands).astype(np.float64)
        scaled = torch.from_numpy(self.scaler_.transform(flux))
        jac = self.scaler_.log_abs_det_jacobian(flux)
        n_clipped = np.isnan(jac).reshape(len(flux), -1).sum(1)
        den = self.denoiser(weights, clip_x0=False)
        noise = PerSampleNoise(seed)
        dim = scaled[0].numel()
        rows, maps = [], []
        bar = tqdm(total=len(scaled), disable=not progress, desc=f"log-likelihood ({method})",
                   unit="image", dynamic_ncols=True)
        for rows_in, gens in batches(len(scaled), batch_size, noise):
            x = scaled[rows_in].to(self.device_)
            if method == "elbo":
                ll, m, terms = elbo_log_likelihood(den, x, n_levels=n_levels, generators=gens)
                maps.append(m.numpy())
                for i in range(len(x)):
                    rows.append({"log_likelihood": float(ll[i]),
                                 **{k: float(v[i]) for k, v in terms.items()}})
            else:
                ll, info = ode_log_likelihood(den, x, steps=steps, solver=solver,
                                              n_probes=n_probes, generators=gens)
                rows.extend({"log_likelihood": float(v), "nfe": info["nfe"]} for v in ll)
            bar.update(len(x))
        bar.close()
        table = QTable(rows=rows)
        table["bits_per_dim"] = -table["log_likelihood"] / (dim * math.log(2.0))
        with np.errstate(invalid="ignore"):
            table["log_likelihood_flux"] = table["log_likelihood"] + np.nansum(
                jac.reshape(len(flux), -1), axis=1) / np.where(n_clipped > 0, np.nan, 1.0)
        table["n_clipped"] = n_clipped
        table.meta.update({"method": method, "space": "model [-1, 1] space (flux scaling "
                           "applied); log_likelihood_flux: density in nanomaggies",
                           "n_levels": n_levels if method == "elbo" else None,
                           "solver": solver if method == "ode" else None,
                           "steps": steps if method == "ode" else None,
                           "n_probes": n_probes if method == "ode" else None,
                           "seed": seed, "weights": weights, "dims": dim})
        if return_map:
            return table, np.concatenate(maps)
        return table

    def anomaly_scores(self, X, reference="complexity", **kwargs):
        """How unusual each image is to the model: high = does not belong.

        A likelihood alone ranks images by how simple they are as much as by
        how typical: a smooth faint blob is "likely" under any image model.
        With ``reference="complexity"`` the score is the model's bits per
        dimension minus the image's complexity, the bits per dimension of its
        lossless PNG compression after quantising the model-space image to 8
        bits (Serrà et al. 2020, "Input complexity and out-of-distribution
        detection with likelihood-based generative models"): what the model
        finds surprising beyond what any compressor would.  ``"none"``
        scores with the bits per dimension alone.

        Parameters
        ----------
        X : object
            As for `score_samples`.
        reference : {"complexity", "none"}
            The correction for image complexity.
        **kwargs
            Passed to `score_samples` (``method``, ``n_levels``, ``seed``,
            ...).

        Returns
        -------
        `~astropy.table.QTable`
            The `score_samples` table plus ``complexity_bpd`` and
            ``anomaly_score``.

        Raises
        ------
        ValueError
            For an unknown ``reference``.
        """
        if reference not in ("complexity", "none"):
            raise ValueError(f"reference must be 'complexity' or 'none', got {reference!r}")
        table = self.score_samples(X, **kwargs)
        if reference == "none":
            table["anomaly_score"] = table["bits_per_dim"]
            return table
        flux = self.prepare(X, bands=kwargs.get("bands"))
        table["complexity_bpd"] = [_png_bits_per_dim(self.scaler_.transform(f)) for f in flux]
        table["anomaly_score"] = table["bits_per_dim"] - table["complexity_bpd"]
        table.meta["reference"] = reference
        return table

    # ------------------------------------------------------------------ persistence
    def save(self, path, overwrite=False):
        """Write the model to a directory: ``model.safetensors`` + ``config.json``.

        Parameters
        ----------
        path : str or path
            Directory (created).
        overwrite : bool
            Replace a model saved there before.  A directory that holds
            anything else is never written into.

        Raises
        ------
        FileExistsError
            If a model is there and ``overwrite`` is False, or the directory
            holds other files.
        OSError
            If a write fails (a full disk): a model saved there before is
            then left as it was, and no partial file remains.

        Notes
        -----
        Both files are written under temporary names and flushed to disk
        before either is renamed into place, so a failed write never mixes
        the new model with the old one; the two files carry the same
        ``save_id``, so a folder whose files come from different saves is
        refused by `load`.
        """
        self._check_fitted()
        path = Path(path)
        if path.exists():
            if not path.is_dir():
                raise FileExistsError(f"{str(path)!r} is a file; give a directory name")
            names = {p.name for p in path.iterdir() if not p.name.startswith(".")}
            if names - {"config.json", "model.safetensors"}:
                raise FileExistsError(f"{str(path)!r} holds other files "
                                      f"({', '.join(sorted(names)[:3])}); give a new directory")
            if names and not overwrite:
                raise FileExistsError(f"a model is saved in {str(path)!r}; pass overwrite=True "
                                      "to replace it")
        path.mkdir(parents=True, exist_ok=True)
        tensors = bundle_weights(self.net_.state_dict(), self.ema_net_.state_dict())
        population = getattr(getattr(self, "conditions_", None), "population", None)
        if population is not None:
            tensors[POPULATION_KEY] = torch.from_numpy(population)
        save_id = uuid.uuid4().hex   # pairs the two files: a mix of two saves is refused
        config = {"format": MODEL_FORMAT, "version": __version__,
                  "params": self._json_params(), "unet": self.net_.to_config(),
                  "scaler": self.scaler_.to_dict(),
                  "schedule": self.schedule_.to_dict(),
                  "n_steps": int(getattr(self, "n_steps_", 0)),
                  "n_train": int(getattr(self, "n_train_", 0)),
                  "extra": getattr(self, "extra_", {}),
                  "save_id": save_id}
        if getattr(self, "conditions_", None) is not None:
            config["conditions"] = self.conditions_.to_dict()
        write_model_files(path, tensors, {"format": MODEL_FORMAT, "save_id": save_id},
                          json.dumps(config, indent=1))
        return path

    @classmethod
    def _from_parts(cls, params, net, ema_net, scaler, schedule, device="auto", n_steps=0,
                    n_train=None, extra=None):
        """A fitted model from its parts: what `load` and `from_astroddpm` read.

        ``params`` are the constructor's arguments (``device`` replaced by
        ``device``); ``net`` (raw) and ``ema_net`` (the weight average, put in
        eval mode without gradients) are moved to the device.
        """
        model = cls(**{**params, "device": device})
        model._validate()
        model.device_ = _resolve_device(device)
        model.net_ = net.to(model.device_)
        model.ema_net_ = ema_net.to(model.device_).eval().requires_grad_(False)
        model.scaler_ = scaler
        model.schedule_ = schedule
        model.n_steps_ = int(n_steps)
        if n_train is not None:
            model.n_train_ = int(n_train)
        model.extra_ = extra if extra is not None else {}
        return model

    @classmethod
    def load(cls, path, device="auto"):
        """Read a model written by `save`.

        Parameters
        ----------
        path : str or path
            The directory (or its ``config.json``).
        device : str
            Where to put the network.

        Returns
        -------
        GalaxyDiffusion

        Raises
        ------
        ValueError
            If ``path`` is not a model saved by this package (a PyTorch
            pickle checkpoint is refused: it is never unpickled); if
            ``model.safetensors`` is truncated or damaged, or a tensor in it
            is missing, unexpected or of another shape than the network that
            ``config.json`` describes, or the two files come from different
            saves.  The message names the file and the first disagreeing
            tensor.  All of this is checked from the file's header, before
            the weights are read.
        FileNotFoundError
            If it does not exist.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no model at {str(path)!r}")
        if path.is_file():
            if path.name == "config.json":
                path = path.parent
            else:
                raise ValueError(
                    f"{str(path)!r} is a file, not a model directory: GalaxyDiffusion.load reads "
                    "a directory with config.json and model.safetensors written by save(). "
                    "It never unpickles a file; a checkpoint of the paper's released code is "
                    "read with GalaxyDiffusion.from_astroddpm().")
        cfg_path, w_path = path / "config.json", path / "model.safetensors"
        if not cfg_path.exists() or not w_path.exists():
            raise ValueError(f"{str(path)!r} is not a saved astro_sbgm model (it needs "
                             "config.json and model.safetensors)")
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{str(cfg_path)!r} is not valid JSON ({err})") from None
        if config.get("format") != MODEL_FORMAT:
            raise ValueError(f"{str(cfg_path)!r} is not an astro_sbgm model config")
        params = dict(config["params"])
        params["device"] = device
        for key in ("dim_mults", "attention_levels"):
            if isinstance(params.get(key), list):
                params[key] = tuple(params[key])
        cls(**params)._validate()     # the parameters and the files, before any memory is used
        check_model_files(w_path, cfg_path, config, lambda: _network_shapes(config, cfg_path))
        try:
            tensors = load_file(str(w_path))
        except Exception as err:  # SafetensorError: changed since the check
            raise ValueError(f"{str(w_path)!r} cannot be read ({err})") from None
        net, ema_net = UNet.from_config(config["unet"]), UNet.from_config(config["unet"])
        # a bundled model ships only its weight average, in float16: it serves as both
        raw, ema = split_weights(tensors, _float32)
        net.load_state_dict(raw or ema)
        ema_net.load_state_dict(ema)
        model = cls._from_parts(params, net, ema_net, FluxScaler.from_dict(config["scaler"]),
                                DiffusionSchedule.from_dict(config["schedule"]), device=device,
                                n_steps=config.get("n_steps", 0),
                                n_train=config.get("n_train", 0), extra=config.get("extra", {}))
        model.conditions_ = (ConditionStats.from_dict(config["conditions"])
                             if config.get("conditions") else None)
        if model.conditions_ is not None and POPULATION_KEY in tensors:
            model.conditions_.set_population(tensors[POPULATION_KEY].numpy())
        if model.net_.cond_dim and model.conditions_ is None:
            raise ValueError(f"{str(cfg_path)!r} describes a conditional network without its "
                             "condition statistics ('conditions'); the file is damaged")
        return model


def _network_shapes(config, cfg_path):
    """``{name: shape}`` of the network ``config["unet"]`` describes (no memory used)."""
    try:
        with torch.device("meta"):   # shapes only: no memory, no initialisation
            return {k: tuple(v.shape)
                    for k, v in UNet.from_config(config["unet"]).state_dict().items()}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{str(cfg_path)!r} does not describe a network this version "
                         f"builds ({type(err).__name__}: {err})") from None
