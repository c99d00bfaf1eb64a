"""The denoising U-Net of Smith, Geach et al. (2022), re-implemented in PyTorch.

Layout (``L = len(dim_mults)`` levels, widths ``w[i] = dim * dim_mults[i]``)::

    t --sinusoidal(dim)--> mlp: Linear(dim, 4 dim), Mish, Linear(4 dim, dim) --> emb

    x (N, in_channels, H, W)
    downs.i  (i = 0 .. L-1), at resolution H / 2**i:
        0: residual(w[i-1] or in_channels -> w[i], emb)
        1: residual(w[i] -> w[i], emb)
        2: gated linear attention (or nothing when attention_levels[i] is False)
        3: 3x3 stride-2 conv (or nothing at the last level)
        the output of slot 2 is kept as skip i
    mid_block1 (residual), mid_attn (gated attention), mid_block2 (residual) at w[L-1]
    ups.j    (j = 0 .. L-2), mirrors encoder level i = L-1-j (same resolution):
        concatenate (h, skip i) on channels
        0: residual(2 w[i] -> w[i-1], emb)
        1: residual(w[i-1] -> w[i-1], emb)
        2: gated linear attention (or nothing when attention_levels[i] is False)
        3: 4x4 stride-2 transposed conv (doubles the resolution)
        (skip 0, at full resolution, is never used)
    final_conv: Block(dim, dim), 1x1 conv to out_channels -> predicted noise

"Block" is 3x3 conv, GroupNorm(groups), Mish.  A residual block is Block, plus a per-channel
bias from ``Linear(Mish(emb))``, Block, plus the input (through a 1x1 conv if the width
changes).  Gated attention is ``x + g * attention(x)`` with a scalar ``g`` that starts at 0;
the attention is "linear attention": softmax of the keys over positions, a per-head context
``sum_n k v^T`` and output ``context^T q``.

For speed on CPUs (same numbers to float round-off, same parameters): Mish is computed from
a single ``exp`` with a hand-written derivative (`_MishFunction`), the attention's products
are batched matrix products on the (N, C, positions) view with the gated residual folded into
the last one, and the residual blocks add in place into tensors no backward pass needs.

Parameter names are those of the released checkpoints of the paper once the
``module.denoise_fn.`` prefix is stripped, so their ``load_state_dict`` works unchanged (see
`astro_sbgm._astroddpm.load_astroddpm_checkpoint`).  Slots that hold nothing are
`torch.nn.Identity`, which keeps the numbering of the others.
"""

import math
import numbers

import torch
from torch import nn

from .._validation import check_positive_int

__all__ = ["UNet", "count_parameters"]


def count_parameters(module, trainable_only=False):
    """Count the parameters of a module.

    Parameters
    ----------
    module : torch.nn.Module
        Any module.
    trainable_only : bool, optional
        Count only the parameters with ``requires_grad=True``.

    Returns
    -------
    int
        Number of scalar parameters (each shared parameter counted once).

    Raises
    ------
    TypeError
        If ``module`` is not a `torch.nn.Module`.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"count_parameters expects a torch.nn.Module, got {type(module).__name__}")
    return sum(p.numel() for p in module.parameters()
               if p.requires_grad or not trainable_only)


def _sinusoidal_embedding(t, dim):
    """Sinusoidal timestep embedding: ``dim/2`` sines then ``dim/2`` cosines.

    Frequency ``i`` of ``half = dim // 2`` is ``exp(-ln(10000) * i / (half - 1))``.
    ``t`` is a float tensor of shape (N,); fractional timesteps are allowed.
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=t.dtype)
                      * (-math.log(10000.0) / (half - 1)))
    args = t[:, None] * freqs[None, :]
    return torch.cat((args.sin(), args.cos()), dim=-1)


def _mish_numerator(x):
    """``e = exp(min(x, 20))`` and ``n = e (e + 2)``, so that ``tanh(softplus(x)) = n / (n + 2)``.

    ``(1 + e)^2 = n + 1``, so ``tanh(log(1 + e)) = ((1 + e)^2 - 1) / ((1 + e)^2 + 1)``.  Only
    ``exp`` and arithmetic are needed, which vectorise well on a CPU; above 20 the ratio is 1 in
    float32 and float64 alike, and the clamp keeps ``n`` finite.
    """
    e = x.clamp(max=20.0).exp_()
    n = e + 2.0
    return e, n.mul_(e)


def _mish_forward(x):
    e, n = _mish_numerator(x)
    return n.div_(torch.add(n, 2.0, out=e)).mul_(x)


class _MishFunction(torch.autograd.Function):
    """Mish ``x tanh(softplus(x))`` from one ``exp``, with its derivative written out.

    ``mish(x) = x n / d`` and ``mish'(x) = n / d + 4 x (n - e) / d^2`` with ``d = n + 2`` (see
    `_mish_numerator`).  Like `torch.nn.functional.mish` it keeps only ``x`` for the backward
    pass.  It gives the same numbers to float round-off (a few 1e-7) at about twice the speed
    of PyTorch's CPU kernel, whose ``tanh`` and ``log1p`` are not vectorised; the in-place
    steps keep the number of temporary feature maps at two.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _mish_forward(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        e, n = _mish_numerator(x)
        d = n + 2.0
        e = torch.sub(n, e, out=e)
        n.mul_(d).addcmul_(x, e, value=4.0)
        return n.div_(d.square_()).mul_(grad)


def _mish(x):
    """Mish; `_MishFunction` for float32/float64 CPU tensors, PyTorch's fused kernel elsewhere."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return torch.nn.functional.mish(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return _MishFunction.apply(x)
    return _mish_forward(x)


class _Mish(nn.Module):
    """``x tanh(softplus(x))`` (as `torch.nn.Mish`, faster on CPU; see `_MishFunction`)."""

    def forward(self, x):
        return _mish(x)


class _Block(nn.Module):
    """3x3 conv (padding 1), GroupNorm, Mish; parameters ``block.0.*`` and ``block.1.*``."""

    def __init__(self, in_channels, out_channels, groups):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.GroupNorm(groups, out_channels),
            _Mish(),
        )

    def forward(self, x):
        return self.block(x)


def _add_into(h, other):
    """``h + other``, written into ``h`` when that keeps the result's dtype.

    Only for an ``h`` that is a fresh tensor no backward pass needs (the output of a Mish).
    Under mixed precision (a bfloat16 ``h`` and a float32 ``other``) the sum is made out of
    place, so that it is promoted to float32 as before.
    """
    if torch.result_type(h, other) == h.dtype:
        return h.add_(other)
    return h + other


class _ResidualBlock(nn.Module):
    """Block, + embedding bias, Block, + (1x1-projected) input."""

    def __init__(self, in_channels, out_channels, emb_dim, groups):
        super().__init__()
        self.mlp = nn.Sequential(_Mish(), nn.Linear(emb_dim, out_channels))
        self.block1 = _Block(in_channels, out_channels, groups)
        self.block2 = _Block(out_channels, out_channels, groups)
        self.res_conv = (nn.Conv2d(in_channels, out_channels, 1)
                         if in_channels != out_channels else nn.Identity())

    def forward(self, x, emb):
        h = _add_into(self.block1(x), self.mlp(emb)[:, :, None, None])
        return _add_into(self.block2(h), self.res_conv(x))


class _LinearAttention(nn.Module):
    """Linear attention: softmax(k) over positions, context = k v^T, output = context^T q.

    Per head, with ``x`` the (channels, positions) input and ``W`` the 1x1 conv weights::

        k = softmax_n(W_k x),  context = k (W_v x)^T,  out = W_out (context^T W_q x) + b

    The direct form materialises q, k and v (3 * heads * head_dim channels at every position),
    which at high resolution costs more than the convolutions around it. Reassociating the
    same products, ``context = (k x^T) W_v^T`` and ``out = (W_out context^T W_q) x + b``, needs
    only k at every position plus one (channels x channels) map per image; it is used when it
    is the cheaper of the two (few channels, many positions). Both give the same numbers to
    float round-off.

    Every product is one batched matrix product on the (N, channels, positions) view of the
    input, with the weight broadcast over the batch (`torch.bmm` of an expanded weight avoids
    the transposed copies that `torch.matmul` of a matrix and a batch makes), and the gated
    residual ``x + g * attention(x)`` of `_gated_attention` is folded into the output product
    (`gated_residual`), so it costs no extra pass over the feature map.
    """

    def __init__(self, channels, heads, head_dim):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        hidden = heads * head_dim
        self.to_qkv = nn.Conv2d(channels, 3 * hidden, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, channels, 1)

    def _use_reassociated(self, channels, positions):
        hidden = self.heads * self.head_dim
        # multiply-adds per image, leading terms: 2 h c n + h c^2 + c^2 n  vs  4 h c n + 2 h d n
        return (channels * (hidden + positions)
                < 2 * hidden * positions + 2 * hidden * self.head_dim)

    def forward(self, x, reassociate=None):
        """``attention(x)``; ``reassociate`` forces one of the two forms (None: the cheaper)."""
        return self._attend(x, None, reassociate)

    def gated_residual(self, x, gate, reassociate=None):
        """``x + gate * attention(x)`` in one output product.

        Direct form: ``(x + g b) + (g W_out) a``; reassociated form: ``(I + g M) x + g b``
        with ``M`` the per-image (channels x channels) map.
        """
        return self._attend(x, gate, reassociate)

    def _attend(self, x, gate, reassociate):
        n, channels, height, width = x.shape
        positions = height * width
        heads, head_dim = self.heads, self.head_dim
        hidden = heads * head_dim
        flat = x.reshape(n, channels, positions)
        # to_qkv output channels are ordered (q/k/v, head, head channel)
        w_qkv = self.to_qkv.weight.reshape(3, hidden, channels)
        w_out = self.to_out.weight.reshape(channels, hidden)
        bias = self.to_out.bias
        if gate is not None:
            w_out = w_out * gate
            bias = bias * gate
        if reassociate is None:
            reassociate = self._use_reassociated(channels, positions)
        if not reassociate:
            qkv = torch.bmm(w_qkv.reshape(3 * hidden, channels).expand(n, -1, -1), flat)
            q, k, v = qkv.reshape(n, 3, heads, head_dim, positions).unbind(1)
            context = torch.matmul(k.softmax(dim=-1), v.transpose(-1, -2))  # (N, h, d_k, d_v)
            attended = torch.matmul(context.transpose(-1, -2), q)  # (N, h, d_v, positions)
            base = (bias[None, :, None].expand(n, -1, positions) if gate is None
                    else flat + bias[None, :, None])
            out = torch.baddbmm(base, w_out.expand(n, -1, -1),
                                attended.reshape(n, hidden, positions))
            return out.reshape(n, channels, height, width)
        w_q, w_k, w_v = (w.reshape(heads, head_dim, channels) for w in w_qkv.unbind(0))
        k = torch.bmm(w_qkv[1].expand(n, -1, -1), flat)  # (N, h * d_k, positions)
        k = k.reshape(n, heads, head_dim, positions).softmax(dim=-1)
        kx = torch.bmm(k.reshape(n, hidden, positions), flat.transpose(1, 2))  # (N, h d_k, C)
        context = torch.matmul(kx.reshape(n, heads, head_dim, channels),
                               w_v.transpose(-1, -2))  # (N, h, d_k, d_v)
        per_head = torch.matmul(context.transpose(-1, -2), w_q)  # (N, h, d_v, C)
        mixing = torch.matmul(w_out, per_head.reshape(n, hidden, channels))  # (N, C, C)
        if gate is not None:
            mixing = mixing + torch.eye(channels, dtype=mixing.dtype, device=mixing.device)
        out = torch.baddbmm(bias[None, :, None].expand(n, -1, positions), mixing, flat)
        return out.reshape(n, channels, height, width)


class _Gate(nn.Module):
    """``g * fn(x)`` with a learned scalar ``g`` that starts at zero (ReZero)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.g = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.fn(x) * self.g


class _Residual(nn.Module):
    """``x + fn(x)``; for a gated linear attention, `_LinearAttention.gated_residual` does it."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        fn = self.fn
        if (isinstance(fn, _Gate) and isinstance(fn.fn, _LinearAttention)
                and x.dtype in (torch.float32, torch.float64)
                and not torch.is_autocast_enabled(x.device.type)):
            # fused; not under autocast, where the folded residual would be rounded to 16 bits
            return fn.fn.gated_residual(x, fn.g)
        return x + fn(x)


def _gated_attention(channels, heads, head_dim):
    """Gated linear attention, named ``fn.g`` and ``fn.fn.to_qkv/to_out``."""
    return _Residual(_Gate(_LinearAttention(channels, heads, head_dim)))


class _Downsample(nn.Module):
    """3x3 stride-2 conv (padding 1), halving the resolution."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Upsample(nn.Module):
    """4x4 stride-2 transposed conv (padding 1), doubling the resolution."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class UNet(nn.Module):
    """Noise-prediction U-Net of Smith, Geach et al. (2022) with configurable width.

    The paper's models are ``UNet(in_channels=3, dim=64, dim_mults=(1, 2, 4, 8))`` at 256x256.
    The layout is described in the docstring of `astro_sbgm.nn.unet`.

    Parameters
    ----------
    in_channels : int, optional
        Number of input bands.
    out_channels : int or None, optional
        Number of output channels; ``None`` means ``in_channels``.
    dim : int, optional
        Base width (channels at the first level) and size of the timestep embedding.
        Must be even and at least 4.
    dim_mults : sequence of int, optional
        Width multiplier per level; the number of levels is ``len(dim_mults)`` (at least 2)
        and the image size must be divisible by ``2 ** (len(dim_mults) - 1)``.
    attention_levels : sequence of bool or None, optional
        Whether each encoder level (and the decoder level at the same resolution) has gated
        attention. ``None`` means attention at every level, as in the paper. A level without
        attention holds no attention or gate parameters.
    attention_heads : int, optional
        Number of attention heads.
    attention_head_dim : int, optional
        Channels per attention head.
    groups : int, optional
        Number of GroupNorm groups; every level width must be divisible by it.
    mid_attention : bool, optional
        Whether the bottleneck has gated attention between its two residual blocks.
    cond_dim : int, optional
        Length of a condition vector (standardised catalogue properties) whose
        embedding is added to the timestep embedding (classifier-free guidance,
        Ho & Salimans 2022): ``cond_mlp``, ``Linear(cond_dim, 4 dim), Mish,
        Linear(4 dim, dim)`` with the last layer zero-initialised, so a new
        embedding leaves the network's output unchanged.  0 (the default) builds
        no embedding: the network, its parameters and its `to_config` are those
        of an unconditional U-Net.  See `add_condition_embedding` to add one to
        a trained network.

    Raises
    ------
    ValueError
        If a width, multiplier or count is not a positive integer, if ``attention_levels``
        does not have one boolean per level, or if a level width is not divisible by
        ``groups``.

    Examples
    --------
    >>> import torch
    >>> net = UNet(dim=8)
    >>> net(torch.zeros(2, 3, 32, 32), torch.tensor([10, 700])).shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(self, in_channels=3, out_channels=None, dim=64, dim_mults=(1, 2, 4, 8),
                 attention_levels=None, attention_heads=4, attention_head_dim=32, groups=8,
                 mid_attention=True, cond_dim=0):
        super().__init__()
        in_channels = check_positive_int("in_channels", in_channels)
        out_channels = (in_channels if out_channels is None
                        else check_positive_int("out_channels", out_channels))
        dim = check_positive_int("dim", dim, minimum=4)
        if dim % 2:
            raise ValueError(f"dim must be even (sines and cosines of dim/2 frequencies), "
                             f"got {dim}")
        try:
            dim_mults = tuple(dim_mults)
        except TypeError:
            raise ValueError(f"dim_mults must be a sequence of integers, got {dim_mults!r}")
        if len(dim_mults) < 2:
            raise ValueError(f"dim_mults needs at least 2 levels, got {dim_mults!r}")
        dim_mults = tuple(check_positive_int("each of dim_mults", m) for m in dim_mults)
        levels = len(dim_mults)
        if attention_levels is None:
            attention_levels = (True,) * levels
        try:
            attention_levels = tuple(attention_levels)
        except TypeError:
            raise ValueError(f"attention_levels must be None or a sequence of {levels} "
                             f"booleans, got {attention_levels!r}")
        if len(attention_levels) != levels or not all(
                isinstance(a, (bool, int)) and a in (0, 1) for a in attention_levels):
            raise ValueError(f"attention_levels must be None or {levels} booleans (one per "
                             f"level of dim_mults={dim_mults}), got {attention_levels!r}")
        attention_levels = tuple(bool(a) for a in attention_levels)
        attention_heads = check_positive_int("attention_heads", attention_heads)
        attention_head_dim = check_positive_int("attention_head_dim", attention_head_dim)
        groups = check_positive_int("groups", groups)
        widths = [dim * m for m in dim_mults]
        bad = [w for w in widths if w % groups]
        if bad:
            raise ValueError(f"every level width dim * dim_mults = {widths} must be divisible "
                             f"by groups={groups}; {bad} are not: change dim or groups")

        self._config = dict(
            in_channels=in_channels, out_channels=out_channels, dim=dim,
            dim_mults=list(dim_mults), attention_levels=list(attention_levels),
            attention_heads=attention_heads, attention_head_dim=attention_head_dim,
            groups=groups, mid_attention=bool(mid_attention))
        self.dim = dim
        self.downsampling_factor = 2 ** (levels - 1)

        def attention(channels, wanted):
            if not wanted:
                return nn.Identity()
            return _gated_attention(channels, attention_heads, attention_head_dim)

        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), _Mish(), nn.Linear(4 * dim, dim))

        self.downs = nn.ModuleList()
        previous = in_channels
        for i, width in enumerate(widths):
            self.downs.append(nn.ModuleList([
                _ResidualBlock(previous, width, dim, groups),
                _ResidualBlock(width, width, dim, groups),
                attention(width, attention_levels[i]),
                _Downsample(width) if i < levels - 1 else nn.Identity(),
            ]))
            previous = width

        self.ups = nn.ModuleList()
        for i in range(levels - 1, 0, -1):
            width, target = widths[i], widths[i - 1]
            self.ups.append(nn.ModuleList([
                _ResidualBlock(2 * width, target, dim, groups),
                _ResidualBlock(target, target, dim, groups),
                attention(target, attention_levels[i]),
                _Upsample(target),
            ]))

        # defined after the decoder so that state_dict() lists keys in the checkpoint's order
        deepest = widths[-1]
        self.mid_block1 = _ResidualBlock(deepest, deepest, dim, groups)
        self.mid_attn = attention(deepest, mid_attention)
        self.mid_block2 = _ResidualBlock(deepest, deepest, dim, groups)

        self.final_conv = nn.Sequential(_Block(widths[0], dim, groups),
                                        nn.Conv2d(dim, out_channels, 1))
        cond_dim = int(cond_dim)
        if cond_dim < 0:
            raise ValueError(f"cond_dim must be >= 0 (0: no condition embedding), got {cond_dim}")
        if cond_dim:
            self.add_condition_embedding(cond_dim)

    def add_condition_embedding(self, cond_dim, seed=0):
        """Give the network a condition embedding (zero-initialised last layer).

        The embedding of a condition vector is added to the timestep embedding;
        its last layer starts at zero, so right after this call the network
        gives exactly the outputs it gave before, conditioned or not, and
        fine-tuning starts from the unconditional model.

        Parameters
        ----------
        cond_dim : int
            Length of the condition vector.
        seed : int, optional
            Seed of the first layer's initial weights (the global random state
            is left as it was).

        Raises
        ------
        ValueError
            If the network already has a condition embedding, or ``cond_dim``
            is not a positive integer.
        """
        cond_dim = check_positive_int("cond_dim", cond_dim)
        if getattr(self, "cond_mlp", None) is not None:
            raise ValueError(f"this UNet already has a condition embedding (cond_dim="
                             f"{self._config['cond_dim']})")
        dim = self.dim
        ref = self.mlp[0].weight
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            first = nn.Linear(cond_dim, 4 * dim)
        last = nn.Linear(4 * dim, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        cond_mlp = nn.Sequential(first, _Mish(), last)
        self.cond_mlp = cond_mlp.to(device=ref.device, dtype=ref.dtype)
        self._config["cond_dim"] = cond_dim

    def extend_condition_embedding(self, cond_dim):
        """Lengthen the condition vector of a conditional network (new entries at the end).

        The first layer of the embedding gets zero weights for the new
        entries, so right after this call the network gives exactly the
        outputs it gave before for the old entries, whatever the new ones
        hold (a row with a NaN anywhere stays unconditional); a fine-tune then
        teaches it the new properties without unlearning the old ones.

        Parameters
        ----------
        cond_dim : int
            The new length of the condition vector, larger than `cond_dim`.

        Raises
        ------
        ValueError
            If the network has no condition embedding (see
            `add_condition_embedding`), or ``cond_dim`` is not larger than
            the present length.
        """
        cond_dim = check_positive_int("cond_dim", cond_dim)
        if self.cond_dim == 0:
            raise ValueError("this UNet has no condition embedding to extend; give it one "
                             "with add_condition_embedding")
        if cond_dim <= self.cond_dim:
            raise ValueError(f"cond_dim must be larger than the present {self.cond_dim} to "
                             f"extend the condition embedding, got {cond_dim}")
        old = self.cond_mlp[0]
        first = nn.Linear(cond_dim, old.out_features)
        first = first.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            first.weight.zero_()
            first.weight[:, :old.in_features] = old.weight
            first.bias.copy_(old.bias)
        self.cond_mlp[0] = first
        self._config["cond_dim"] = cond_dim

    @property
    def cond_dim(self):
        """int: Length of the condition vector (0: an unconditional network)."""
        return int(self._config.get("cond_dim", 0))

    @property
    def config(self):
        """dict: The constructor keyword arguments, JSON-serialisable (lists, not tuples)."""
        return self.to_config()

    def to_config(self):
        """Return the constructor keyword arguments as a JSON-serialisable dict.

        Returns
        -------
        dict
            ``UNet.from_config(net.to_config())`` builds the same architecture.
        """
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @classmethod
    def from_config(cls, config):
        """Build a U-Net (with fresh weights) from `to_config` output.

        Parameters
        ----------
        config : dict
            Constructor keyword arguments; lists are accepted where tuples are expected.

        Returns
        -------
        UNet

        Raises
        ------
        TypeError
            If ``config`` is not a mapping.
        ValueError
            If ``config`` holds a key that is not a constructor argument, or a bad value.
        """
        if not hasattr(config, "keys"):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        known = set(_CONFIG_KEYS)
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown UNet config key(s) {unknown}; expected some of "
                             f"{sorted(known)}")
        return cls(**config)

    def _timesteps(self, t, n, device):
        """Turn ``t`` (number, 0-d tensor, or (N,) / (1,) tensor) into a float (N,) tensor."""
        dtype = self.mlp[0].weight.dtype
        if isinstance(t, numbers.Number) and not isinstance(t, bool):
            return torch.full((n,), float(t), dtype=dtype, device=device)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"t must be a number or a torch.Tensor of timesteps, "
                            f"got {type(t).__name__}")
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t must hold real timesteps, got dtype {t.dtype}")
        t = t.to(device=device, dtype=dtype)
        if t.ndim == 0 or t.shape == (1,):
            return t.reshape(1).expand(n)
        if t.shape != (n,):
            raise ValueError(f"t must be a scalar or have shape ({n},) to match the batch, "
                             f"got shape {tuple(t.shape)}")
        return t

    def forward(self, x, t, cond=None):
        """Predict the noise in ``x`` at diffusion time ``t``.

        Parameters
        ----------
        x : torch.Tensor
            Images of shape (N, in_channels, H, W); H and W must be divisible by
            ``2 ** (len(dim_mults) - 1)``.
        t : torch.Tensor or float or int
            Timesteps on the 0..999 scale, shape (N,) or a scalar (shared by the batch).
            Fractional values are allowed.
        cond : torch.Tensor, optional
            Condition vectors, shape (N, cond_dim), for a network with a condition
            embedding.  A row holding a NaN (and ``cond=None``, every row) is
            unconditional: its embedding is not added, so the output is that of
            the network without conditions (classifier-free guidance's
            unconditional prediction).

        Returns
        -------
        torch.Tensor
            Predicted noise, shape (N, out_channels, H, W).

        Raises
        ------
        ValueError
            If ``x`` does not have 4 dimensions, has the wrong number of channels, or a size
            that is not divisible by the down-sampling factor, or if ``t`` has a bad shape.
            If ``cond`` is given to a network without a condition embedding, or
            has another shape than (N, cond_dim).
        TypeError
            If ``t`` is neither a number nor a tensor.
        """
        if x.ndim != 4:
            raise ValueError(f"x must have shape (N, C, H, W), got shape {tuple(x.shape)}")
        n, channels, height, width = x.shape
        if channels != self._config["in_channels"]:
            raise ValueError(f"x has {channels} channels but this UNet expects "
                             f"in_channels={self._config['in_channels']}")
        factor = self.downsampling_factor
        for name, size in (("height", height), ("width", width)):
            if size % factor:
                raise ValueError(
                    f"image {name} {size} is not divisible by {factor} = 2 ** "
                    f"(len(dim_mults) - 1); pad or crop to a multiple of {factor}")
        emb = self.mlp(_sinusoidal_embedding(self._timesteps(t, n, x.device), self.dim))
        if cond is not None:
            emb = emb + self._condition_embedding(cond, n, emb)
        emb = emb.to(x.dtype)

        h = x
        skips = []
        for res1, res2, attn, down in self.downs:
            h = attn(res2(res1(h, emb), emb))
            skips.append(h)
            h = down(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(h, emb)), emb)

        for res1, res2, attn, up in self.ups:
            h = torch.cat((h, skips.pop()), dim=1)
            h = up(attn(res2(res1(h, emb), emb)))

        return self.final_conv(h)

    def _condition_embedding(self, cond, n, emb):
        """``cond_mlp(cond)`` for rows without NaN, 0 for the others."""
        if self.cond_dim == 0:
            raise ValueError("cond was given but this UNet has no condition embedding "
                             "(cond_dim=0); build it with cond_dim or call "
                             "add_condition_embedding")
        if not isinstance(cond, torch.Tensor) or cond.shape != (n, self.cond_dim):
            shape = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
            raise ValueError(f"cond must be a tensor of shape ({n}, {self.cond_dim}), "
                             f"got {shape}")
        cond = cond.to(device=emb.device, dtype=emb.dtype)
        keep = torch.isfinite(cond).all(dim=1, keepdim=True)
        out = self.cond_mlp(torch.where(keep, cond, torch.zeros_like(cond)))
        return out * keep.to(out.dtype)

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self._config.items())


_CONFIG_KEYS = ("in_channels", "out_channels", "dim", "dim_mults", "attention_levels",
                "attention_heads", "attention_head_dim", "groups", "mid_attention", "cond_dim")
