"""Regression pin: seeded outputs of a tiny model, bit for bit.

Written before the consolidation of issue 15 (one generation engine, sampler
and parametrisation objects, one persistence module) with the code as it was,
so that the refactor provably changes no number: a 20-step training run's
weights, samples (the paper's ``ddpm`` on every timestep, the ``dpmpp-2m`` and
``heun`` ODE solvers, the batch-of-one path), inpainting (the default
``fast`` method, the paper's method and a multi-box image), domain transfer
(the stochastic default and ``ddpm``) and both likelihoods.  Each output is
pinned by the SHA-256 of its float32 bytes plus its network-evaluation count.

Run ``python tests/test_regression_pin.py`` to print the digests of the code
as it is now (only for a deliberate change of numbers, said in the commit).
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

#: (sha256 of the float32 bytes, first value) per output; nfe where the output has one,
#: per CPU capability (``torch.backends.cpu.get_cpu_capability()``), in
#: ``data/regression_pins.json``: the convolution and matrix kernels of AVX-512 and AVX2
#: machines round differently, so each kind of machine has its own digests.  The AVX-512
#: ones were written with the code before issue 15's consolidation; the AVX2 ones were
#: printed on an AVX2 machine by commit 0a22bf6, which passed the AVX-512 pins (and by the
#: commit that added them, identically).
PINNED_BY_CPU = json.loads((Path(__file__).parent / "data" / "regression_pins.json").read_text())
CPU = torch.backends.cpu.get_cpu_capability()
PINNED = PINNED_BY_CPU.get(CPU, PINNED_BY_CPU["AVX512"])


def _digest(arr):
    arr = np.ascontiguousarray(np.asarray(arr, dtype=np.float32))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:24], float(arr.ravel()[0])


def _build(objective="v", steps=20, **kwargs):
    from astro_sbgm import GalaxyDiffusion
    from astro_sbgm.datasets import make_trivial_dataset

    train = make_trivial_dataset(24, size=16, seed=3)
    params = dict(image_size=16, dim=8, dim_mults=(1, 2), attention_levels=(False, True),
                  timesteps=40, objective=objective, scaling="linear", flux_lower=0.0,
                  flux_upper=2.0, batch_size=8, learning_rate=2e-3, lr_warmup=5,
                  ema_halflife=50, ema_rampup=None, augment=True, device="cpu", seed=7)
    model = GalaxyDiffusion(**{**params, **kwargs})
    return model.fit(train, steps=steps, progress=False)


def _other_objectives():
    """EDM and eps (min-SNR weighted, integer timesteps) models: weights and one sample each."""
    out = {}
    for name, model in (("edm", _build("edm", steps=6)),
                        ("eps", _build("eps", steps=6, min_snr_gamma=5.0,
                                       continuous_time=False, scaling="asinh",
                                       flux_lower="auto", flux_softening="auto"))):
        weights = [v.detach().float().reshape(-1).numpy()
                   for net in (model.net_, model.ema_net_) for v in net.state_dict().values()]
        out[f"train_{name}"] = (np.concatenate(weights + [np.asarray(model.history_)]), None)
        ccds = model.sample(2, sampler="dpmpp-2m", steps=4, seed=1, progress=False)
        out[f"sample_{name}"] = (np.stack([np.asarray(c.data) for c in ccds]),
                                 int(ccds[0].meta["NFE"]))
    return out


def _outputs(model):
    """Every pinned output: name -> (array, nfe or None)."""
    from astro_sbgm.datasets import make_trivial_dataset

    out = {}
    weights = []
    for net in (model.net_, model.ema_net_):
        for k, v in net.state_dict().items():
            weights.append(v.detach().float().reshape(-1).numpy())
    out["train_weights"] = (np.concatenate(weights), None)
    out["train_history"] = (np.asarray(model.history_), None)

    def grab(ccds):
        return np.stack([np.asarray(c.data) for c in ccds]), int(ccds[0].meta["NFE"])

    out["sample_ddpm"] = grab(model.sample(3, sampler="ddpm", seed=1, batch_size=2,
                                           progress=False))
    out["sample_dpmpp2m"] = grab(model.sample(3, sampler="dpmpp-2m", steps=6, seed=2,
                                              batch_size=4, progress=False))
    out["sample_heun_one"] = grab(model.sample(1, sampler="heun", steps=5, seed=3, start=2,
                                               progress=False))
    out["sample_ddim_raw"] = grab(model.sample(2, sampler="ddim", steps=5, seed=4,
                                               weights="model", progress=False, eta=0.5))

    img = make_trivial_dataset(2, size=16, seed=11)
    mask = np.zeros((16, 16), bool)
    mask[5:9, 3:12] = True

    def grab_inp(res):
        summary, draws = res
        arr = np.concatenate([np.asarray(summary.data)[None]]
                             + [np.asarray(d.data)[None] for d in draws])
        return arr, int(summary.meta["NFE"])

    out["inpaint_fast"] = grab_inp(model.inpaint(img[0], mask=mask, method="fast", n_draws=3,
                                                 seed=5, batch_size=2, return_draws=True))
    out["inpaint_paper"] = grab_inp(model.inpaint(img[1], mask=mask, method="paper", n_draws=2,
                                                  seed=6, return_draws=True))
    big = np.concatenate([np.asarray(img[0].data), np.asarray(img[1].data)], axis=-1)
    bmask = np.zeros(big.shape[-2:], bool)
    bmask[2:4, 1:5] = True
    bmask[12:14, 26:31] = True
    out["inpaint_boxes"] = grab_inp(model.inpaint(big, mask=bmask, bands="grz", n_draws=2,
                                                  seed=7, return_draws=True, method="fast",
                                                  sky_shortcut=False))

    def grab_tr(res):
        summary, draws = res
        arr = np.concatenate([np.asarray(summary.data)[None]]
                             + [np.asarray(d.data)[None] for d in draws])
        return arr, int(summary.meta["NFE"])

    out["transfer_default"] = grab_tr(model.transfer(img[0], strength=0.5, n_draws=3, seed=8,
                                                     batch_size=2, steps=6, return_draws=True))
    out["transfer_ddpm"] = grab_tr(model.transfer(img[1], strength=0.3, n_draws=2, seed=9,
                                                  sampler="ddpm", return_draws=True))

    elbo, maps = model.score_samples(img, method="elbo", n_levels=4, seed=1, batch_size=1,
                                     progress=False, return_map=True)
    out["elbo"] = (np.concatenate([np.asarray(elbo["log_likelihood"], np.float64),
                                   maps.ravel()]), None)
    ode = model.score_samples(img, method="ode", steps=2, seed=2, progress=False)
    out["ode"] = (np.asarray(ode["log_likelihood"], np.float64), int(ode["nfe"][0]))
    return out


@pytest.fixture(scope="module")
def outputs():
    return {**_outputs(_build()), **_other_objectives()}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_outputs_are_unchanged(outputs, name):
    assert CPU in PINNED_BY_CPU, (
        f"no pins for CPU capability {CPU!r}: run `python tests/test_regression_pin.py` with "
        "a commit whose numbers are known to be right and add them to PINNED_BY_CPU")
    arr, nfe = outputs[name]
    digest, first = _digest(arr)
    want = PINNED[name]
    assert nfe == want["nfe"], f"{name}: {nfe} network evaluations, pinned {want['nfe']}"
    assert first == want["first"], f"{name}: first value {first!r}, pinned {want['first']!r}"
    assert digest == want["sha256"], (
        f"{name}: output changed (sha256 {digest}); a refactor must not change it. For a "
        "deliberate change of numbers, print the new digests with `python "
        "tests/test_regression_pin.py`, replace this entry only, and say why in the commit")


def test_every_output_is_pinned(outputs):
    assert sorted(outputs) == sorted(PINNED)


if __name__ == "__main__":
    outs = {**_outputs(_build()), **_other_objectives()}
    entries = {}
    for key, (arr, nfe) in sorted(outs.items()):
        digest, first = _digest(arr)
        entries[key] = {"sha256": digest, "first": first, "nfe": nfe}
    print(json.dumps({CPU: entries}, indent=1))
