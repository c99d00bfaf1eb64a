"""Tests of astro_sbgm.nn.UNet (the paper's noise-prediction U-Net)."""

import json

import pytest
import torch

from astro_sbgm.nn import UNet, count_parameters


def _net(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("dim", 8)
    return UNet(**kwargs)


@pytest.mark.parametrize("kwargs, size", [
    (dict(), 32),
    (dict(), 48),
    (dict(in_channels=1), 32),
    (dict(in_channels=5, out_channels=2), 32),
    (dict(dim_mults=(1, 2)), 34),
    (dict(dim_mults=(1, 2, 2)), 36),
    (dict(dim=16, dim_mults=(1, 1, 2, 2), attention_heads=2, attention_head_dim=8), 64),
])
def test_output_shape(kwargs, size):
    net = _net(**kwargs)
    in_channels = kwargs.get("in_channels", 3)
    x = torch.randn(2, in_channels, size, size)
    with torch.inference_mode():
        out = net(x, torch.tensor([3, 900]))
    assert out.shape == (2, kwargs.get("out_channels", in_channels), size, size)
    assert torch.isfinite(out).all()


def test_rectangular_input():
    net = _net(dim_mults=(1, 2, 4))
    with torch.inference_mode():
        assert net(torch.randn(1, 3, 32, 48), 5).shape == (1, 3, 32, 48)


def test_bad_size_names_size_and_divisor():
    net = _net()
    with pytest.raises(ValueError, match=r"height 36 .*divisible by 8"):
        net(torch.randn(1, 3, 36, 36), 1)
    with pytest.raises(ValueError, match=r"width 20 .*divisible by 8"):
        net(torch.randn(1, 3, 32, 20), 1)


def test_bad_channels_and_t_shape():
    net = _net()
    with pytest.raises(ValueError, match="in_channels=3"):
        net(torch.randn(1, 4, 32, 32), 1)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        net(torch.randn(2, 3, 32, 32), torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError):
        net(torch.randn(2, 3, 32, 32), "10")


@pytest.mark.parametrize("kwargs, match", [
    (dict(dim=7), "even"),
    (dict(dim=12, groups=8), "divisible by groups=8"),
    (dict(dim_mults=(1,)), "at least 2"),
    (dict(attention_levels=(True, False)), "4 booleans"),
    (dict(dim_mults=(1, 0, 2)), "dim_mults"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_attention_levels_remove_parameters():
    full = _net()
    partial = _net(attention_levels=(False, False, True, True))
    no_mid = _net(mid_attention=False)
    assert count_parameters(partial) < count_parameters(full)
    assert count_parameters(no_mid) < count_parameters(full)
    names = set(partial.state_dict())
    # full-resolution encoder level, and the decoder level at the resolution of level 1
    assert not any(k.startswith(("downs.0.2.", "downs.1.2.", "ups.2.2.")) for k in names)
    assert {"downs.2.2.fn.g", "downs.3.2.fn.g", "ups.0.2.fn.g", "ups.1.2.fn.g",
            "mid_attn.fn.g"} <= names
    # exactly the attention parameters of the levels switched off are gone
    removed = set(full.state_dict()) - names
    assert removed and all(".2.fn." in k for k in removed)
    assert not names - set(full.state_dict())


def test_count_parameters_matches_manual_sum():
    net = _net()
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())
    net.final_conv.requires_grad_(False)
    frozen = sum(p.numel() for p in net.final_conv.parameters())
    assert count_parameters(net, trainable_only=True) == count_parameters(net) - frozen
    with pytest.raises(TypeError):
        count_parameters([1, 2])


def test_gates_start_at_zero():
    net = _net()
    gates = [p for name, p in net.named_parameters() if name.endswith("fn.g")]
    assert len(gates) == 4 + 3 + 1
    assert all(g.shape == (1,) and g.item() == 0.0 for g in gates)


def test_fractional_timesteps_interpolate():
    net = _net().eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        a, b, mid = (net(x, torch.tensor([t])) for t in (100.0, 101.0, 100.5))
        as_int = net(x, torch.tensor([100]))
        as_number = net(x, 100.5)
        as_scalar = net(x, torch.tensor(100.5))
    assert torch.allclose(a, as_int, atol=1e-6)
    assert torch.equal(as_number, mid) and torch.equal(as_scalar, mid)
    # a fractional step is a different input, close to both neighbours
    assert not torch.equal(mid, a) and not torch.equal(mid, b)
    assert (mid - a).abs().max() < 2 * (b - a).abs().max() + 1e-6


def test_scalar_t_broadcasts_over_batch():
    net = _net().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(net(x, 250), net(x, torch.full((3,), 250)), atol=1e-6)


def test_timestep_changes_output():
    net = _net().eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        assert not torch.allclose(net(x, 10), net(x, 700))


def test_config_round_trip():
    net = _net(in_channels=4, out_channels=2, dim=16, dim_mults=(1, 2, 2),
               attention_levels=(False, True, True), attention_heads=2, attention_head_dim=8,
               groups=4, mid_attention=False)
    config = json.loads(json.dumps(net.config))
    assert config == net.to_config()
    clone = UNet.from_config(config)
    assert clone.to_config() == config
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert {k: v.shape for k, v in clone.state_dict().items()} == shapes
    clone.load_state_dict(net.state_dict())
    x = torch.randn(1, 4, 16, 16)
    with torch.inference_mode():
        assert torch.equal(net.eval()(x, 3), clone.eval()(x, 3))


def test_from_config_rejects_unknown_key():
    with pytest.raises(ValueError, match="unknown UNet config key"):
        UNet.from_config({"dim": 8, "channels": 3})


def test_gradient_flows_to_every_parameter():
    net = _net(dim_mults=(1, 2, 4))
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    net(x, torch.tensor([5.0, 500.0])).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        if ".fn.fn." not in name:  # attention weights are gated by g = 0 at initialisation
            assert p.grad.abs().sum() > 0, name
    gates = [p.grad for name, p in net.named_parameters() if name.endswith("fn.g")]
    assert all(g.abs().sum() > 0 for g in gates)
    # with open gates the attention weights learn too
    net.zero_grad()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("fn.g"):
                p.fill_(0.5)
    net(x, torch.tensor([5.0, 500.0])).square().mean().backward()
    assert all(p.grad.abs().sum() > 0 for name, p in net.named_parameters() if ".fn.fn." in name)


@pytest.mark.parametrize("channels, size", [(8, 32), (64, 4), (16, 8)])
def test_attention_paths_agree(channels, size):
    from astro_sbgm.nn.unet import _LinearAttention

    torch.manual_seed(1)
    attention = _LinearAttention(channels, heads=4, head_dim=8)
    x = torch.randn(3, channels, size, size, requires_grad=True)
    direct = attention(x, reassociate=False)
    grads_direct = torch.autograd.grad(direct.square().sum(), [x, *attention.parameters()])
    fused = attention(x, reassociate=True)
    grads_fused = torch.autograd.grad(fused.square().sum(), [x, *attention.parameters()])
    scale = direct.abs().max()
    assert fused.shape == direct.shape == x.shape
    assert (fused - direct).abs().max() < 1e-5 * scale
    for a, b in zip(grads_direct, grads_fused):
        assert (a - b).abs().max() < 1e-4 * a.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mish_matches_pytorch(dtype):
    from astro_sbgm.nn.unet import _mish

    x = torch.cat([torch.linspace(-60, 60, 4001, dtype=dtype),
                   torch.tensor([0.0, 19.99, 20.0, 20.01, 1e4, -1e4], dtype=dtype)])
    ref_x = x.double().clone().requires_grad_(True)
    ref = torch.nn.functional.mish(ref_x)
    ref.backward(torch.linspace(-1, 1, x.numel(), dtype=torch.float64))
    ours_x = x.clone().requires_grad_(True)
    ours = _mish(ours_x)
    ours.backward(torch.linspace(-1, 1, x.numel(), dtype=dtype))
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    scale = ref.detach().abs().clamp(min=1.0)
    assert ours.dtype == dtype
    assert ((ours.double() - ref.detach()).abs() / scale).max() < tol
    assert (ours_x.grad.double() - ref_x.grad).abs().max() < 10 * tol
    with torch.inference_mode():
        assert torch.equal(_mish(x), ours.detach())
    assert torch.autograd.gradcheck(_mish, torch.randn(64, dtype=torch.float64,
                                                       requires_grad=True) * 4)


def test_mish_falls_back_for_low_precision():
    from astro_sbgm.nn.unet import _mish

    x = torch.linspace(-8, 8, 101).to(torch.bfloat16)
    assert torch.equal(_mish(x), torch.nn.functional.mish(x))


@pytest.mark.parametrize("reassociate", [False, True])
def test_gated_residual_attention(reassociate):
    from astro_sbgm.nn.unet import _gated_attention

    torch.manual_seed(2)
    block = _gated_attention(16, heads=2, head_dim=8)
    with torch.no_grad():
        block.fn.g.fill_(0.7)
    attention = block.fn.fn
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    fused = attention.gated_residual(x, block.fn.g, reassociate=reassociate)
    plain = x + block.fn.g * attention(x, reassociate=reassociate)
    params = [x, *block.parameters()]
    g_fused = torch.autograd.grad(fused.square().sum(), params)
    g_plain = torch.autograd.grad(plain.square().sum(), params)
    assert (fused - plain).abs().max() < 1e-5 * plain.abs().max()
    assert (fused - x).abs().max() > 0.1  # the attention term is really there
    for a, b in zip(g_fused, g_plain):
        assert (a - b).abs().max() < 1e-4 * b.abs().max()
    # the module itself takes the fused path and gives the same numbers
    assert torch.allclose(block(x), fused, rtol=0, atol=1e-6)


def test_network_matches_unfused_reference():
    """The fused network equals the same weights run through plain PyTorch layers."""
    from astro_sbgm.nn import unet as unet_module

    net = _net(dim_mults=(1, 2, 4)).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("fn.g"):
                p.fill_(0.5)
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        fast = net(x, torch.tensor([3.0, 400.0]))

    def plain_residual(self, x):
        return x + self.fn(x)

    patches = [(unet_module._Residual, "forward", plain_residual),
               (unet_module._Mish, "forward", lambda self, x: torch.nn.functional.mish(x))]
    saved = [(cls, name, getattr(cls, name)) for cls, name, _ in patches]
    try:
        for cls, name, fn in patches:
            setattr(cls, name, fn)
        with torch.inference_mode():
            slow = net(x, torch.tensor([3.0, 400.0]))
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)
    assert (fast - slow).abs().max() < 1e-5 * slow.abs().max()
    assert not torch.equal(fast, torch.zeros_like(fast))


def test_add_into_keeps_mixed_precision_sums_in_float32():
    from astro_sbgm.nn.unet import _add_into

    h = torch.ones(2, 3)
    assert _add_into(h, torch.ones(2, 3)) is h and h[0, 0] == 2
    low = torch.ones(2, 3, dtype=torch.bfloat16)
    out = _add_into(low, torch.full((2, 3), 1e-3))
    assert out is not low and out.dtype == torch.float32
    assert out[0, 0].item() == pytest.approx(1.001, rel=1e-6)


def test_autocast_uses_the_unfused_gated_residual(monkeypatch):
    from astro_sbgm.nn import unet as unet_module

    net = _net(dim_mults=(1, 2)).eval()
    x = torch.randn(2, 3, 16, 16)
    calls = []
    original = unet_module._LinearAttention.gated_residual

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(unet_module._LinearAttention, "gated_residual", spy)
    with torch.inference_mode():
        net(x, 5)
        fused_calls = len(calls)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, 5)
    assert fused_calls == 2 + 1 + 1  # two encoder levels, the bottleneck, one decoder level
    assert len(calls) == fused_calls and out.dtype == torch.bfloat16
