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
