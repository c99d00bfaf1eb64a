"""Read the checkpoints released with Smith, Geach et al. (2022) into `astro_sbgm.nn.UNet`.

The released files (Zenodo, DOI 10.5281/zenodo.5653517) are ``torch.save`` dicts
``{'step': int, 'model': state_dict, 'ema': state_dict}`` whose keys carry the ``module.``
prefix of `torch.nn.DataParallel`. ``module.denoise_fn.*`` is the U-Net (its names, once the
prefix is stripped, are those of `astro_sbgm.nn.UNet`); the other ``module.*`` entries are
the diffusion schedule buffers (``betas``, ``alphas_cumprod``, ...). They hold only tensors
and ints, so they are read with ``torch.load(..., weights_only=True)`` and in no other way.
"""

import os
from collections import Counter
from dataclasses import dataclass, field

import torch

from .nn.unet import UNet

__all__ = ["AstroddpmCheckpoint", "load_astroddpm_checkpoint"]

_UNET_PREFIX = "denoise_fn."
_PARALLEL_PREFIX = "module."
_ATTENTION_HEADS = 4  # the released code: 4 heads of 32 channels (not recoverable from shapes)
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
        ``torch.load(weights_only=True)`` or is not a dict holding the requested state dict;
        if a U-Net key is missing, mis-shaped or unexpected (the message names the first such
        key and the expected shape).
    FileNotFoundError
        If ``path`` does not exist.
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' (exponential moving average, as sampled in "
                         f"the paper) or 'model' (raw training weights), got {weights!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}; expected {_EXPECTED}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, zip and weights_only errors all land here
        raise ValueError(f"{path!r} could not be read with torch.load(weights_only=True) "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                         f"); expected {_EXPECTED}") from err
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

    step = checkpoint.get("step", -1)
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = step.item()
    step = int(step) if isinstance(step, (int, float)) else -1
    return AstroddpmCheckpoint(unet=unet, buffers=buffers, step=step,
                               config=unet.to_config(), weights=weights)
