"""Read the checkpoints released with Smith, Geach et al. (2022) into astro_sbgm.

`load_astroddpm_checkpoint` gives the bare network (`astro_sbgm.nn.UNet`) and the schedule
buffers; `astroddpm_parts` gives the parts of a ready `astro_sbgm.GalaxyDiffusion`
(`astro_sbgm.GalaxyDiffusion.from_astroddpm` assembles them) that samples, inpaints and saves
like a model trained with this package.

The released files (Zenodo, DOI 10.5281/zenodo.5653517) are ``torch.save`` dicts
``{'step': int, 'model': state_dict, 'ema': state_dict}`` whose keys carry the ``module.``
prefix of `torch.nn.DataParallel`. ``module.denoise_fn.*`` is the U-Net (its names, once the
prefix is stripped, are those of `astro_sbgm.nn.UNet`); the other ``module.*`` entries are
the diffusion schedule buffers (``betas``, ``alphas_cumprod``, ...). They hold only tensors
and ints, so they are read with ``torch.load(..., weights_only=True)`` and in no other way.
"""

import copy
import hashlib
import os
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from .bands import LEGACY_SURVEY_PIXEL_SCALE
from .diffusion.schedule import DiffusionSchedule
from .exceptions import AstroddpmWarning
from .nn.unet import UNet
from .preprocessing import FluxScaler

__all__ = ["AstroddpmCheckpoint", "AstroddpmWarning", "load_astroddpm_checkpoint",
           "astroddpm_parts", "released_sampler_options", "RELEASED_IMAGE_SIZE",
           "RELEASED_FLUX_UPPER", "RELEASED_DDPM_VARIANCE", "ZENODO_DOI"]

#: Side in pixels of the cutouts the released PROBES and SDSS models were trained on.
RELEASED_IMAGE_SIZE = 256
#: Upper clip in nanomaggies of the released training code (for both data sets).
RELEASED_FLUX_UPPER = 5.5
#: Variance of the released code's ancestral step: the posterior variance (beta-tilde,
#: with the log clipped at t = 0, where no noise is added), not the paper's beta_t.
RELEASED_DDPM_VARIANCE = "posterior"
#: DOI of the Zenodo record holding the released models.
ZENODO_DOI = "10.5281/zenodo.5653517"
_REFERENCE = "Smith, Geach et al. 2022, MNRAS 511, 1808 (arXiv:2111.01713)"

_UNET_PREFIX = "denoise_fn."
_PARALLEL_PREFIX = "module."
_ATTENTION_HEADS = 4  # the released code: 4 heads of 32 channels (not recoverable from shapes)
_RELEASED_BANDS = "grz"
_RELEASED_PIXEL_SCALE = float(LEGACY_SURVEY_PIXEL_SCALE.to_value("arcsec"))  # the Legacy Surveys
_EXPECTED = ("a torch.save file of a dict {'step': int, 'model': state_dict, "
             "'ema': state_dict} as released with Smith, Geach et al. (2022)")


@dataclass
class AstroddpmCheckpoint:
    """A released checkpoint of the paper, loaded.

    Attributes
    ----------
    unet : astro_sbgm.nn.UNet
        The noise-prediction network with the chosen weights, in eval mode.
    buffers : dict of str to torch.Tensor
        The schedule buffers stored beside the network (``betas``, ``alphas_cumprod``, ...),
        keyed without the ``module.`` prefix.
    step : int
        Training step stored in the file (-1 if the file does not say).
    config : dict
        ``unet.to_config()``: JSON-serialisable constructor arguments of the network.
    weights : str
        Which weights were loaded, ``"ema"`` or ``"model"``.
    """

    unet: UNet
    buffers: dict
    step: int
    config: dict
    weights: str = field(default="ema")


def _mode(values):
    """Most common value (first seen wins ties), or None when there is none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return Counter(values).most_common(1)[0][0]


def _dim_of(state, key, axis, divisor=1):
    """``state[key].shape[axis] // divisor`` or None when absent or malformed."""
    tensor = state.get(key)
    if tensor is None or tensor.ndim <= axis or tensor.shape[axis] % divisor:
        return None
    return tensor.shape[axis] // divisor


def _infer_config(state, prefix):
    """Infer the UNet constructor arguments from tensor shapes.

    Each quantity is read from every key that carries it and the most common value wins, so a
    single missing or mis-shaped key is reported by the strict check rather than corrupting
    the inferred architecture.
    """
    levels = 1 + max((int(k.split(".")[1]) for k in state
                      if k.startswith("downs.") and k.split(".")[1].isdigit()), default=-1)
    if levels < 2:
        raise ValueError(f"no U-Net encoder found: expected keys "
                         f"'{prefix}downs.<level>.*' for at least 2 levels; the file should be "
                         f"{_EXPECTED}")
    res_blocks = ([f"downs.{i}.{j}." for i in range(levels) for j in (0, 1)]
                  + [f"ups.{i}.{j}." for i in range(levels - 1) for j in (0, 1)]
                  + ["mid_block1.", "mid_block2."])
    dim = _mode([_dim_of(state, "mlp.0.weight", 1), _dim_of(state, "mlp.0.weight", 0, 4),
                 _dim_of(state, "mlp.0.bias", 0, 4), _dim_of(state, "mlp.2.weight", 0),
                 _dim_of(state, "mlp.2.weight", 1, 4), _dim_of(state, "mlp.2.bias", 0),
                 _dim_of(state, "final_conv.0.block.0.weight", 0),
                 _dim_of(state, "final_conv.1.weight", 1)]
                + [_dim_of(state, b + "mlp.1.weight", 1) for b in res_blocks])
    if dim is None:
        raise ValueError(f"cannot infer the U-Net width: '{prefix}mlp.0.weight' (shape "
                         f"(4 dim, dim)) is missing; the file should be {_EXPECTED}")
    widths = []
    for i in range(levels):
        width = _mode([_dim_of(state, f"downs.{i}.{j}.{name}", 0)
                       for j in (0, 1) for name in ("block1.block.0.weight",
                                                    "block1.block.0.bias",
                                                    "block2.block.0.weight",
                                                    "block2.block.0.bias", "mlp.1.weight")])
        if width is None or width % dim:
            raise ValueError(f"cannot infer the width of encoder level {i}: "
                             f"'{prefix}downs.{i}.0.block1.block.0.weight' should have shape "
                             f"(dim * mult, in, 3, 3) with dim={dim}")
        widths.append(width)
    in_channels = _mode([_dim_of(state, "downs.0.0.block1.block.0.weight", 1),
                         _dim_of(state, "downs.0.0.res_conv.weight", 1)])
    if in_channels is None:
        raise ValueError(f"cannot infer the number of input channels: "
                         f"'{prefix}downs.0.0.block1.block.0.weight' is missing")
    out_channels = _mode([_dim_of(state, "final_conv.1.weight", 0),
                          _dim_of(state, "final_conv.1.bias", 0)]) or in_channels
    attention = [f"downs.{i}.2.fn.fn." for i in range(levels)] + [
        f"ups.{i}.2.fn.fn." for i in range(levels - 1)] + ["mid_attn.fn.fn."]
    hidden = _mode([_dim_of(state, a + "to_qkv.weight", 0, 3) for a in attention]
                   + [_dim_of(state, a + "to_out.weight", 1) for a in attention])
    if hidden is None or hidden % _ATTENTION_HEADS:
        raise ValueError(f"cannot infer the attention width from '{prefix}downs.0.2.fn.fn."
                         f"to_qkv.weight' (expected shape (3 * {_ATTENTION_HEADS} * head_dim, "
                         f"{widths[0]}, 1, 1))")
    return dict(in_channels=in_channels, out_channels=out_channels, dim=dim,
                dim_mults=[w // dim for w in widths], attention_levels=None,
                attention_heads=_ATTENTION_HEADS,
                attention_head_dim=hidden // _ATTENTION_HEADS, groups=8, mid_attention=True)


def _strip(key):
    return key[len(_PARALLEL_PREFIX):] if key.startswith(_PARALLEL_PREFIX) else key


def _check_weights(weights):
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' (exponential moving average, as sampled in "
                         f"the paper) or 'model' (raw training weights), got {weights!r}")


def _check_archive(path):
    """Refuse a truncated or corrupted ``torch.save`` zip archive (read-only).

    ``torch.load`` checks neither that the archive is whole nor the CRC-32
    of the stored tensors, so a damaged file could load with wrong weights;
    the zip's own checksums are tested here first.  Files of the older,
    non-zip ``torch.save`` format are left to ``torch.load``.
    """
    with open(path, "rb") as f:
        if f.read(2) != b"PK":
            return
    fix = (f"download it again and compare its SHA-256 with the record of the Zenodo "
           f"archive (DOI {ZENODO_DOI})")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{path!r} is truncated or damaged: its zip archive does not read "
                         f"({err}); {fix}") from None
    if bad is not None:
        raise ValueError(f"{path!r} is damaged: the checksum stored for {bad!r} does not "
                         f"match its data; {fix}")


def _read_checkpoint(path):
    """``torch.load`` the file with ``weights_only=True``; return it (any type)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}; expected {_EXPECTED}")
    _check_archive(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, zip and weights_only errors all land here
        raise ValueError(f"{path!r} could not be read with torch.load(weights_only=True) "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                         f"); expected {_EXPECTED}") from err


def _unet_from_checkpoint(checkpoint, weights, path):
    """Build the U-Net of ``checkpoint[weights]``; return ``(unet, buffers)``."""
    if not isinstance(checkpoint, dict) or weights not in checkpoint:
        found = (f"a dict with keys {sorted(map(str, checkpoint))}"
                 if isinstance(checkpoint, dict) else f"a {type(checkpoint).__name__}")
        raise ValueError(f"{path!r} holds {found}, not the '{weights}' weights; expected "
                         f"{_EXPECTED}")
    state = checkpoint[weights]
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path!r}['{weights}'] is not a state dict (str -> tensor); "
                         f"expected {_EXPECTED}")

    unet_state, buffers = {}, {}
    for key, value in state.items():
        name = _strip(key)
        if name.startswith(_UNET_PREFIX):
            unet_state[name[len(_UNET_PREFIX):]] = value
        else:
            buffers[name] = value
    prefix = _PARALLEL_PREFIX + _UNET_PREFIX
    if not unet_state:
        raise ValueError(f"{path!r}['{weights}'] has no '{prefix}*' keys (the U-Net); "
                         f"expected {_EXPECTED}")

    config = _infer_config(unet_state, prefix)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        unet = UNet(**config)
    expected = unet.state_dict()
    for key, reference in expected.items():
        if key not in unet_state:
            raise ValueError(f"{path!r}['{weights}'] lacks '{prefix}{key}' (expected shape "
                             f"{tuple(reference.shape)}); the checkpoint is incomplete")
        if unet_state[key].shape != reference.shape:
            raise ValueError(f"{path!r}['{weights}']['{prefix}{key}'] has shape "
                             f"{tuple(unet_state[key].shape)}, expected "
                             f"{tuple(reference.shape)} for a U-Net with {config}")
    unexpected = [k for k in unet_state if k not in expected]
    if unexpected:
        raise ValueError(f"{path!r}['{weights}'] has U-Net key(s) this layout does not use, "
                         f"first '{prefix}{unexpected[0]}' ({len(unexpected)} in all)")
    unet.load_state_dict({k: v.to(torch.float32) for k, v in unet_state.items()},
                         strict=True, assign=True)
    unet.eval()
    return unet, buffers


def _step_of(checkpoint):
    step = checkpoint.get("step", -1)
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = step.item()
    return int(step) if isinstance(step, (int, float)) else -1


def load_astroddpm_checkpoint(path, weights="ema"):
    """Load a checkpoint released with Smith, Geach et al. (2022).

    The file is read only with ``torch.load(path, map_location="cpu", weights_only=True)``
    and never modified. The U-Net architecture (``dim``, ``dim_mults``, input and output
    channels, attention width) is inferred from the tensor shapes, with attention at every
    level, 4 attention heads and 8 GroupNorm groups as in the released code; the weights
    are then loaded with strict checking.

    Parameters
    ----------
    path : str or os.PathLike
        Path of the ``.pt`` checkpoint.
    weights : {"ema", "model"}, optional
        Load the exponential-moving-average weights (the ones the paper samples with) or the
        raw training weights.

    Returns
    -------
    AstroddpmCheckpoint
        The network (eval mode, float32, on the CPU), the schedule buffers, the training step
        and the network config.

    Raises
    ------
    ValueError
        If ``weights`` is not "ema" or "model"; if the file cannot be read by
        ``torch.load(weights_only=True)``, is truncated or fails the CRC-32 checksums of its
        zip archive, or is not a dict holding the requested state dict;
        if a U-Net key is missing, mis-shaped or unexpected (the message names the first such
        key and the expected shape).
    FileNotFoundError
        If ``path`` does not exist.

    See Also
    --------
    astro_sbgm.GalaxyDiffusion.from_astroddpm : the same file as a ready model.
    """
    _check_weights(weights)
    path = os.fspath(path)
    checkpoint = _read_checkpoint(path)
    unet, buffers = _unet_from_checkpoint(checkpoint, weights, path)
    return AstroddpmCheckpoint(unet=unet, buffers=buffers, step=_step_of(checkpoint),
                               config=unet.to_config(), weights=weights)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _schedule_from_buffers(buffers, path, weights):
    """The `DiffusionSchedule` of the stored ``alphas_cumprod`` table, checked."""
    table = buffers.get("alphas_cumprod")
    if table is None:
        raise ValueError(f"{path!r}['{weights}'] has no '{_PARALLEL_PREFIX}alphas_cumprod' "
                         f"buffer, so the noise schedule the network was trained with is "
                         f"unknown; expected {_EXPECTED}")
    abar = table.detach().cpu().to(torch.float64).numpy()
    if (abar.ndim != 1 or abar.size < 2 or not np.all(np.isfinite(abar))
            or not np.all((abar > 0) & (abar < 1)) or np.any(np.diff(abar) >= 0)):
        raise ValueError(f"{path!r}['{weights}']['{_PARALLEL_PREFIX}alphas_cumprod'] (shape "
                         f"{tuple(abar.shape)}) is not a strictly decreasing 1-D table of "
                         f"values in (0, 1); the checkpoint is damaged")
    return DiffusionSchedule.from_alphas_cumprod(_refine_table(abar, table, buffers))


def _refine_table(abar, table, buffers):
    """``alphas_cumprod`` in float64 precision that still rounds to the stored float32 table.

    The released buffers are float32 roundings of float64 computations. Near ``t = 0``,
    ``1 - alphas_cumprod`` (about 2e-5) keeps only two or three digits in the float32 table,
    so every noise level, posterior coefficient and variance derived from it there is off by
    up to 0.1-1% (the released code used its float64-derived ``posterior_*`` buffers instead).
    The ``betas`` buffer keeps full relative precision: ``cumprod(1 - betas)`` in float64 is
    the table the released code computed, to about 1e-7 relative in ``1 - alphas_cumprod``.
    It is clipped into the rounding interval of each stored float32 value, so the table
    still casts to the stored one bit for bit. The stored table alone is used when the
    buffer is float64 already, or when ``betas`` is missing or disagrees with it.
    """
    betas = buffers.get("betas")
    if table.dtype != torch.float32 or betas is None or tuple(betas.shape) != abar.shape:
        return abar
    b = betas.detach().cpu().to(torch.float64).numpy()
    if not np.all(np.isfinite(b) & (b > 0) & (b < 1)):
        return abar
    precise = np.cumprod(1.0 - b)
    stored = table.detach().cpu().numpy()
    below = np.nextafter(stored, np.float32(0)).astype(np.float64)
    above = np.nextafter(stored, np.float32(1)).astype(np.float64)
    lo = np.nextafter((abar + below) / 2.0, 1.0)   # strictly inside the rounding interval
    hi = np.nextafter((abar + above) / 2.0, 0.0)
    # the product drifts at the end, where 1 - beta (beta clipped at 0.999) keeps few
    # digits in float32; the clip below brings it back into the stored value's interval
    if np.any(np.abs(precise / abar - 1.0) > 1e-3):   # not the same schedule
        return abar
    refined = np.clip(precise, lo, hi)
    if np.any(np.diff(refined) >= 0) or np.any(refined.astype(np.float32) != stored):
        return abar
    return refined


def released_sampler_options(model, sampler):
    """The sampler options that reproduce the released code, for a released model.

    The code released with Smith, Geach et al. (2022) draws its ancestral steps with the
    posterior variance, ``exp(posterior_log_variance_clipped[t])`` (beta-tilde), where the
    paper's eq. 12 and this package's ``"ddpm"`` sampler use ``sigma_t^2 = beta_t``. For a
    model made by `~astro_sbgm.GalaxyDiffusion.from_astroddpm` (recognised by its
    ``extra_['astroddpm']``
    record, which is saved and loaded with the model) and the ``"ddpm"`` sampler this
    returns ``{"variance": "posterior"}`` (or the variance the record names under
    ``"ddpm_variance"``); for any other model or sampler an empty dict. Options the caller
    gives explicitly take precedence: merge as ``{**released_sampler_options(m, s),
    **options}``.

    Parameters
    ----------
    model : `~astro_sbgm.GalaxyDiffusion`
        Any model.
    sampler : str or `~astro_sbgm.diffusion.Sampler`
        The sampler's name (an instance is left alone: it already holds its options).

    Returns
    -------
    dict
        Keyword options for `astro_sbgm.diffusion.get_sampler`.
    """
    record = (getattr(model, "extra_", None) or {}).get("astroddpm")
    if not isinstance(record, dict) or not isinstance(sampler, str) or sampler != "ddpm":
        return {}
    return {"variance": record.get("ddpm_variance", RELEASED_DDPM_VARIANCE)}


def astroddpm_parts(path, weights="ema", image_size=None):
    """The parts of a `GalaxyDiffusion` from a checkpoint released with Smith, Geach et al. (2022).

    `~astro_sbgm.GalaxyDiffusion.from_astroddpm` assembles them (with
    ``GalaxyDiffusion._from_parts``) into a fitted `~astro_sbgm.GalaxyDiffusion`: it samples,
    inpaints, transfers
    and saves (safetensors + JSON, `~astro_sbgm.GalaxyDiffusion.save`) like a model trained
    with this package. Its settings are those of the released code:

    * bands ``"grz"`` at 0.262 arcsec per pixel (the Legacy Surveys), fluxes in nanomaggies;
    * the U-Net width ``dim`` and ``dim_mults`` inferred from the tensor shapes (see
      `load_astroddpm_checkpoint`);
    * the noise schedule of the stored ``alphas_cumprod`` buffer, bit for bit in float32
      (`~astro_sbgm.diffusion.DiffusionSchedule.from_alphas_cumprod`), with the float64
      precision that the ``betas`` buffer gives it near ``t = 0`` (where the float32 table
      keeps two or three digits of ``1 - alphas_cumprod``); noise prediction
      (``objective="eps"``);
    * the flux scaling of the released code, a clip to [0, 5.5] nanomaggies mapped linearly
      onto [-1, 1] (``FluxScaler(upper=5.5, lower=0.0, stretch="linear")``), for both the
      PROBES and the SDSS model;
    * ``loss="l1"``, the loss the released code trained with, which only matters if the
      model is trained further;
    * the released code's ancestral step, with the posterior variance (beta-tilde) rather
      than the paper's ``beta_t``: inpainting (``method="paper"``, or any method run with
      ``sampler="ddpm"``) and transfer with ``sampler="ddpm"`` use it unless told
      ``variance=``; see `released_sampler_options`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.pt`` file of the Zenodo record (DOI 10.5281/zenodo.5653517). It is read only
        with ``torch.load(weights_only=True)`` and never modified.
    weights : {"ema", "model"}, optional
        Which weights the model samples with by default. The chosen set goes into
        ``ema_net_`` (what `~astro_sbgm.GalaxyDiffusion.sample` uses unless told
        ``weights="model"``) and the file's raw training weights into ``net_``; with
        ``"model"`` both hold the raw weights. The paper samples with ``"ema"``.
    image_size : int, optional
        Side of the square images the model draws, in pixels. The U-Net is fully
        convolutional, so any multiple of ``2 ** (len(dim_mults) - 1)`` (8 for the released
        models) in [16, 512] works, but the network only learned galaxies at the size it was
        trained on. Default (None): `RELEASED_IMAGE_SIZE` = 256, the size of the released
        models.
    Returns
    -------
    dict
        ``params`` (the constructor's arguments), ``net`` (raw, eval mode),
        ``ema_net``, ``scaler``, ``schedule``, ``n_steps`` and ``extra``, for
        ``GalaxyDiffusion._from_parts``.  The model it makes is fitted: ``net_``,
        ``ema_net_`` (eval mode), ``scaler_``, ``schedule_``, ``device_``,
        ``bands_``, ``n_steps_`` (the training step stored in the file, 0 if none) and
        ``extra_['astroddpm']``, a record of the source file (absolute path, SHA-256), its
        step, the DOI, which weights went where and the variance of the released ancestral
        step (``"ddpm_variance"``). The record is saved with the model.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For everything `load_astroddpm_checkpoint` refuses; if the network does not take 3
        bands (g, r, z); if the schedule buffer ``alphas_cumprod`` is missing or damaged; if
        the raw and averaged weights describe different networks; if ``image_size`` is not
        usable (the message names the fix).

    Warns
    -----
    AstroddpmWarning
        If the file holds only the chosen weights: ``net_`` is then a copy of them.

    Examples
    --------
    .. code-block:: python

        from astro_sbgm import GalaxyDiffusion

        model = GalaxyDiffusion.from_astroddpm("probes_model.pt")   # the Zenodo file
        fakes = model.sample(4, sampler="dpmpp-2m", steps=20, seed=0)
        model.save("probes_astro_sbgm")                           # safetensors + JSON
    """
    _check_weights(weights)
    path = os.fspath(path)
    if image_size is None:
        image_size = RELEASED_IMAGE_SIZE
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be an integer number of pixels (the released "
                         f"models use {RELEASED_IMAGE_SIZE}), got {image_size!r}")
    checkpoint = _read_checkpoint(path)
    chosen, buffers = _unet_from_checkpoint(checkpoint, weights, path)
    config = chosen.to_config()
    if config["in_channels"] != len(_RELEASED_BANDS) or config["out_channels"] != len(
            _RELEASED_BANDS):
        raise ValueError(f"the network in {path!r} maps {config['in_channels']} to "
                         f"{config['out_channels']} channels; the released models take the "
                         f"{len(_RELEASED_BANDS)} bands {_RELEASED_BANDS!r}. Use "
                         f"load_astroddpm_checkpoint() for other networks")
    schedule = _schedule_from_buffers(buffers, path, weights)

    if weights == "model" or "model" not in checkpoint:
        if weights == "ema":
            warnings.warn(f"{path!r} holds no 'model' (raw) weights; net_ is a copy of the "
                          f"'ema' weights", AstroddpmWarning)
        raw = copy.deepcopy(chosen)
        raw_source = weights
    else:
        raw, _ = _unet_from_checkpoint(checkpoint, "model", path)
        raw_source = "model"
        if raw.to_config() != config:
            raise ValueError(f"the 'model' and 'ema' weights in {path!r} describe different "
                             f"networks ({raw.to_config()} and {config}); the file is damaged")

    params = dict(
        image_size=int(image_size), bands=_RELEASED_BANDS, pixel_scale=_RELEASED_PIXEL_SCALE,
        dim=config["dim"], dim_mults=tuple(config["dim_mults"]), attention_levels=None,
        schedule="cosine", timesteps=schedule.T, objective="eps", loss="l1",
        min_snr_gamma=None, scaling="linear", flux_lower=0.0, continuous_time=False,
        flux_upper=RELEASED_FLUX_UPPER)
    step = _step_of(checkpoint)
    extra = {"astroddpm": {
        "source": os.path.abspath(path), "sha256": _sha256(path),
        "step": step if step >= 0 else None, "weights": weights,
        "ema_net_weights": weights, "net_weights": raw_source,
        "doi": ZENODO_DOI, "reference": _REFERENCE,
        "ddpm_variance": RELEASED_DDPM_VARIANCE}}
    return {"params": params, "net": raw.eval(), "ema_net": chosen, "schedule": schedule,
            "scaler": FluxScaler(upper=RELEASED_FLUX_UPPER, lower=0.0, stretch="linear"),
            "n_steps": max(step, 0), "extra": extra}
