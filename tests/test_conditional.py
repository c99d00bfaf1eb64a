"""Galaxies to order: models conditioned on catalogue properties (issue 16).

The competent model here is a 16x16 model of round blobs whose brightness varies by a
factor 9, conditioned on its measured r magnitude (about 30 s of CPU, once); the rest use
models trained for a step or two, which is enough to check the plumbing.
"""

import copy
import json
import warnings

import numpy as np
import pytest
import torch
import astropy.units as u
from astropy.io import fits
from astropy.table import QTable, Table
from scipy.stats import spearmanr

from astro_sbgm import GalaxyDiffusion, _conditions
from astro_sbgm.diffusion import ClassifierFreeGuidance, Denoiser, DiffusionSchedule
from astro_sbgm.exceptions import AstroSBGMConditionWarning
from astro_sbgm.metrics import measure_galaxies
from astro_sbgm.nn import UNet


def _blobs(n, size=16, seed=0):
    """Round Gaussian blobs (sigma 1.6 px) with peak 0.2..1.8 nanomaggy in r, sky 0.01."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    amp = rng.uniform(0.2, 1.8, n)
    prof = np.exp(-(xx ** 2 + yy ** 2) / (2 * 1.6 ** 2))
    img = (amp[:, None, None, None] * prof[None, None]
           * np.array([0.6, 1.0, 1.3])[None, :, None, None])
    return (img + rng.normal(0, 0.01, img.shape)).astype(np.float32)


def _tiny(**kw):
    params = dict(image_size=16, dim=8, dim_mults=(1, 2), attention_levels=(False, False),
                  batch_size=4, lr_warmup=1, augment=False, device="cpu", seed=0,
                  scaling="linear", flux_lower=0.0, flux_upper=2.5)
    params.update(kw)
    return GalaxyDiffusion(**params)


@pytest.fixture(scope="module")
def blob_model():
    """Conditioned on mag_r (measured at fit), trained 300 steps."""
    m = GalaxyDiffusion(image_size=16, dim=16, dim_mults=(1, 2),
                        attention_levels=(False, False), objective="v", learning_rate=3e-3,
                        scaling="linear", flux_lower=0.0, flux_upper=2.5, batch_size=16,
                        ema_halflife=100, ema_rampup=None, lr_warmup=20, augment=False,
                        device="cpu", seed=0, conditions=["mag_r"], condition_dropout=0.1)
    return m.fit(_blobs(128), bands="grz", steps=300, progress=False)


@pytest.fixture(scope="module")
def two_conditions():
    """Conditioned on mag_r and r_half, one training step (plumbing only)."""
    model = _tiny(conditions=["mag_r", "r_half"])
    return model.fit(_blobs(16), bands="grz", steps=1, progress=False)


def test_requested_brighter_gives_measured_brighter(blob_model):
    stats = blob_model.conditions_
    assert stats.names == ("mag_r",) and stats.units == ("mag",)
    wanted = np.linspace(stats.low[0] + 0.1, stats.high[0] - 0.1, 24)
    got = {}
    for scale in (0.0, 1.0, 2.0):
        out = blob_model.sample(24, conditions={"mag_r": wanted * u.mag}, steps=10, seed=1,
                                guidance_scale=scale, progress=False)
        got[scale] = np.asarray(measure_galaxies(out)["mag_r"].filled(np.nan))
        assert np.isfinite(got[scale]).all()
    # guided draws follow the request in rank (0.95 here at s = 2, 0.85 at s = 1)
    assert spearmanr(wanted, got[2.0]).correlation > 0.8
    assert spearmanr(wanted, got[1.0]).correlation > 0.7
    # the unconditional draws of the same seeds do not follow it
    assert abs(spearmanr(wanted, got[0.0]).correlation) < 0.5
    assert np.mean(np.abs(got[1.0] - wanted)) < np.mean(np.abs(got[0.0] - wanted))


def test_candidates_keep_the_nearest_as_measured(blob_model):
    stats = blob_model.conditions_
    wanted = np.linspace(stats.low[0] + 0.1, stats.high[0] - 0.1, 6)
    request = {"mag_r": wanted * u.mag}
    # batches of two throughout: a batch of one is run as two, and kernels chosen for
    # other batch sizes round differently (1e-5 relative)
    kw = dict(steps=4, seed=5, progress=False, batch_size=2)
    kept = blob_model.sample(6, conditions=request, candidates=3, **kw)
    single = blob_model.sample(6, conditions=request, **kw)
    # each candidate separately: stream j of the same seed, measured independently here
    z = stats.standardise(wanted[:, None])
    cands, dist = [], []
    for j in range(3):
        x, info = blob_model.sample_scaled(6, steps=4, seed=5, progress=False,
                                           batch_size=2, conditions=z, stream=j)
        f = blob_model.scaler_.inverse_transform(x.numpy())
        cands.append(f)
        got = np.asarray(measure_galaxies(f, bands="grz")["mag_r"].filled(np.nan))
        dist.append(np.abs(got - wanted) / stats.std[0])
    dist = np.array(dist)
    np.testing.assert_array_equal(cands[0], np.stack([g.data for g in single]))
    assert not np.allclose(cands[1], cands[0])   # the streams are independent
    for i, g in enumerate(kept):
        j = g.meta["CANDIDX"]
        assert j == int(np.argmin(dist[:, i])) and g.meta["CANDS"] == 3
        assert g.meta["CANDDIST"] == pytest.approx(dist[j, i], rel=1e-4, abs=1e-6)
        np.testing.assert_array_equal(g.data, cands[j][i])
        assert g.meta["NFE"] == 3 * single[i].meta["NFE"]
    assert len({g.meta["CANDIDX"] for g in kept}) > 1
    # a galaxy depends on its seed and index only, not on the rows drawn with it
    alone = blob_model.sample(1, conditions={"mag_r": wanted[4:5] * u.mag}, candidates=3,
                              start=4, **kw)[0]
    np.testing.assert_array_equal(alone.data, kept[4].data)
    assert alone.meta["CANDIDX"] == kept[4].meta["CANDIDX"]
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="candidates must be an integer >= 1"):
            blob_model.sample(6, conditions=request, candidates=bad, **kw)
    # a population draw selects on the row drawn; an unconditional one has nothing to
    drawn = blob_model.sample(2, candidates=2, **kw)
    assert drawn[0].meta["CONDSRC"] == "population" and drawn[0].meta["CANDS"] == 2
    with pytest.raises(ValueError, match="nothing to select on"):
        blob_model.sample(2, candidates=2, guidance_scale=0.0, **kw)


def test_guidance_combines_two_predictions_in_one_call():
    torch.manual_seed(0)
    net = UNet(dim=8, dim_mults=(1, 2), attention_levels=(False, False), cond_dim=2)
    torch.nn.init.normal_(net.cond_mlp[2].weight)   # a trained-looking embedding
    den = Denoiser(net.eval(), DiffusionSchedule.from_name("cosine", 1000), "v")
    x = torch.randn(3, 3, 16, 16)
    t = torch.tensor([100.0, 500.0, 900.0])
    cond = torch.randn(3, 2)
    with torch.no_grad():
        x0_u, eps_u = den(x, t)                    # no condition at all
        plain = Denoiser(net, den.schedule, "v", clip_x0=False)
        _, e_u = plain(x, t)
        _, e_c = Denoiser(lambda a, b: net(a, b, cond=cond), den.schedule, "v",
                          clip_x0=False)(x, t)
        # s = 0 is exactly the unconditional prediction, in one evaluation
        g0 = ClassifierFreeGuidance(den, cond, 0.0)
        a, b = g0(x, t)
        assert torch.equal(a, x0_u) and torch.equal(b, eps_u) and g0.nfe == 1
        g1 = ClassifierFreeGuidance(plain, cond, 1.0)
        assert torch.allclose(g1(x, t)[1], e_c, atol=1e-5)
        g2 = ClassifierFreeGuidance(plain, cond, 2.5)
        _, eps = g2(x, t)
        assert torch.allclose(eps, e_u + 2.5 * (e_c - e_u), atol=1e-4)
        assert g2.nfe == 2
        # a NaN row is unconditional
        nan_rows = cond.clone()
        nan_rows[1] = float("nan")
        _, e_mix = ClassifierFreeGuidance(plain, nan_rows, 1.0)(x, t)
        assert torch.allclose(e_mix[1], e_u[1], atol=1e-5)
        assert torch.allclose(e_mix[0], e_c[0], atol=1e-5)
    with pytest.raises(ValueError, match="select"):
        ClassifierFreeGuidance(den, cond[:2], 2.0)(x, t)
    assert ClassifierFreeGuidance(den, cond, 2.0).select(slice(0, 2)).cond.shape == (2, 2)


def test_unknown_and_missing_columns_refused(two_conditions):
    with pytest.raises(ValueError, match="mag_q"):
        _tiny(conditions=["mag_q"]).fit(_blobs(4), bands="grz", steps=1, progress=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['r_half'\]"):
        two_conditions.sample(2, conditions={"mag_r": [20, 21] * u.mag}, steps=2,
                              progress=False)
    with pytest.raises(ValueError, match=r"\['g_r'\]"):
        two_conditions.sample(2, conditions={"mag_r": [20, 21] * u.mag,
                                             "r_half": [1, 1] * u.arcsec,
                                             "g_r": [0.5, 0.5] * u.mag},
                              steps=2, progress=False)
    with pytest.raises(ValueError, match="3 rows for 2 galaxies"):
        two_conditions.sample(2, conditions={"mag_r": [20, 21, 22] * u.mag,
                                             "r_half": 1 * u.arcsec}, steps=2, progress=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['r_half'\]"):
        two_conditions.sample_like(QTable({"mag_r": [20, 21] * u.mag}), steps=2,
                                   progress=False)


def test_units_converted(two_conditions):
    m = two_conditions
    scale = float(m.pixel_scale)
    kw = dict(steps=2, seed=3, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstroSBGMConditionWarning)
        a = m.sample(2, conditions={"mag_r": [20.0, 21.0] * u.mag,
                                    "r_half": [4.0, 6.0] * u.pix}, **kw)
        b = m.sample(2, conditions=QTable({"mag_r": [20.0, 21.0] * u.ABmag,
                                           "r_half": [4.0 * scale, 6.0 * scale] * u.arcsec}),
                     **kw)
        c = m.sample(2, conditions=Table({"mag_r": [20.0, 21.0],
                                          "r_half": [4.0 * scale / 60, 6.0 * scale / 60]},
                                         units={"mag_r": u.mag, "r_half": u.arcmin}), **kw)
    for x, y, z in zip(a, b, c):
        np.testing.assert_allclose(x.data, y.data, atol=1e-6)
        np.testing.assert_allclose(x.data, z.data, atol=1e-6)
    assert a[1].meta["CONDN1"] == "r_half" and a[1].meta["CONDU1"] == "arcsec"
    assert a[1].meta["CONDV1"] == pytest.approx(6.0 * scale)
    assert a[1].meta["CONDV0"] == 21.0 and a[1].meta["GUIDANCE"] == 1.0
    with pytest.raises(u.UnitConversionError, match="r_half.*no unit"):
        m.sample(2, conditions={"mag_r": [20, 21] * u.mag, "r_half": [4.0, 6.0]}, **kw)
    with pytest.raises(u.UnitConversionError, match="r_half.*kg"):
        m.sample(2, conditions={"mag_r": [20, 21] * u.mag, "r_half": [4.0, 6.0] * u.kg}, **kw)


def test_out_of_range_request_warns_with_the_range(two_conditions):
    stats = two_conditions.conditions_
    with pytest.warns(AstroSBGMConditionWarning, match=r"mag_r.*training range \["):
        two_conditions.sample(1, conditions={"mag_r": (stats.high[0] + 3) * u.mag,
                                             "r_half": stats.mean[1] * u.arcsec},
                              steps=2, progress=False)


def test_unconditional_model_refuses_conditions():
    m = _tiny().fit(_blobs(4), bands="grz", steps=1, progress=False)
    with pytest.raises(ValueError, match="trained without conditions"):
        m.sample(2, conditions={"mag_r": [20, 21] * u.mag}, steps=2, progress=False)
    with pytest.raises(ValueError, match="trained without conditions"):
        m.sample_like(QTable({"mag_r": [20, 21] * u.mag}), steps=2, progress=False)
    with pytest.raises(ValueError, match="guidance_scale"):
        m.sample(2, guidance_scale=2.0, steps=2, progress=False)
    with pytest.raises(ValueError, match="conditional model"):
        _tiny().fit(_blobs(4), bands="grz", steps=1, progress=False,
                    conditions={"mag_r": [20, 21, 22, 23] * u.mag})
    # an unconditional model saves the parameters it saved before conditions existed
    assert "conditions" not in m._json_params()
    assert m.net_.cond_dim == 0 and "cond_dim" not in m.net_.to_config()


def test_save_load_keeps_condition_statistics(two_conditions, tmp_path):
    m = two_conditions
    m.save(tmp_path / "m")
    back = GalaxyDiffusion.load(tmp_path / "m")
    assert back.conditions_.to_dict() == m.conditions_.to_dict()
    assert back.conditions == ["mag_r", "r_half"] and back.net_.cond_dim == 2
    assert back.conditions_.units == ("mag", "arcsec")
    req = QTable({"mag_r": [20.0, 20.5] * u.mag, "r_half": [1.0, 1.2] * u.arcsec})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstroSBGMConditionWarning)
        a = m.sample_like(req, steps=2, seed=0, progress=False, guidance_scale=2.0)
        b = back.sample_like(req, steps=2, seed=0, progress=False, guidance_scale=2.0)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.data, y.data)
    assert a[0].meta["NFE"] == 4   # two guided steps, two evaluations each
    # the requested values reach the FITS file
    path = tmp_path / "g.fits"
    a[1].write(path)
    header = fits.getheader(path)
    assert header["CONDN0"] == "mag_r" and header["CONDV0"] == 20.5
    assert header["GUIDANCE"] == 2.0


def test_user_table_and_unmeasured_rows():
    X = _blobs(8)
    table = QTable({"mag_r": np.linspace(19, 21, 8) * u.mag, "id": np.arange(8)})
    table["mag_r"][2] = np.nan
    m = _tiny(conditions=["mag_r"])
    with pytest.warns(AstroSBGMConditionWarning, match="1 of 8 training images"):
        m.fit(X, bands="grz", steps=1, progress=False, conditions=table)
    assert m.conditions_.n_unmeasured == 1
    assert np.isnan(m.population_["mag_r"][2])   # drawn unconditionally, as it trained
    assert m.conditions_.low[0] == 19 and m.conditions_.high[0] == 21
    assert "table" in m.conditions_.source
    with pytest.raises(ValueError, match="rows for 8"):
        _tiny(conditions=["mag_r"]).fit(X, bands="grz", steps=1, progress=False,
                                        conditions={"mag_r": [20, 21] * u.mag})


def test_warm_start_from_unconditional_model():
    X = _blobs(8)
    base = _tiny().fit(X, bands="grz", steps=2, progress=False)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = base.ema_net_(x, 400.0)
    base.set_params(conditions=["mag_r"])
    base.fit(X, bands="grz", steps=0, progress=False, warm_start=True)
    assert base.ema_net_.cond_dim == 1 and base.net_.cond_dim == 1
    with torch.no_grad():   # the new embedding starts at zero: same outputs, with a condition
        after = base.ema_net_(x, 400.0, cond=torch.tensor([[1.0], [-1.0]]))
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    base.fit(X, bands="grz", steps=2, progress=False, warm_start=True)
    assert base.n_steps_ == 4
    assert base.sample(1, conditions={"mag_r": 20.5 * u.mag}, steps=2, progress=False)
    with pytest.raises(ValueError, match="keeps the conditions"):
        base.set_params(conditions=["mag_g"])
        base.fit(X, bands="grz", steps=1, progress=False, warm_start=True)


def test_cli_train_conditions_and_sample_like(tmp_path, capsys):
    from astro_sbgm import cli

    out = tmp_path / "run"
    assert cli.main(["train", "--mock", "6", "--size", "32", "--dim", "8", "--dim-mults",
                     "1,2", "--train-steps", "2", "--batch-size", "2", "--conditions",
                     "mag_r,r_half", "--checkpoint-every", "1", "--keep-checkpoints", "1",
                     "-o", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-000000002.json", "checkpoint-000000002.safetensors"]
    model = GalaxyDiffusion.load(out / "model")
    assert model.conditions_.names == ("mag_r", "r_half")
    cat = tmp_path / "cat.ecsv"
    QTable({"id": [1, 2], "mag_r": [model.conditions_.mean[0]] * 2 * u.mag,
            "r_half": [4.0, 5.0] * u.pix}).write(cat)
    samples = tmp_path / "s"
    assert cli.main(["sample", "--model", str(out / "model"), "--like", str(cat), "-o",
                     str(samples), "--steps", "2", "--guidance", "2", "--quiet"]) == 0
    header = fits.getheader(samples / "sample_000001.fits")
    assert header["CONDV1"] == pytest.approx(5.0 * 0.262) and header["GUIDANCE"] == 2.0
    assert not (samples / "sample_000002.fits").exists()
    # --candidates K: the nearest of K draws per row, K times the evaluations
    assert cli.main(["sample", "--model", str(out / "model"), "--like", str(cat), "-o",
                     str(tmp_path / "s3"), "--steps", "2", "--guidance", "2",
                     "--candidates", "3", "--quiet"]) == 0
    best = fits.getheader(tmp_path / "s3" / "sample_000001.fits")
    assert best["CANDS"] == 3 and 0 <= best["CANDIDX"] < 3
    assert best["NFE"] == 3 * header["NFE"]
    # without --like: the properties drawn from the training set's, or none at --guidance 0
    assert cli.main(["sample", "--model", str(out / "model"), "-n", "2", "--steps", "2",
                     "--candidates", "2", "-o", str(tmp_path / "s4"), "--quiet"]) == 0
    drawn = fits.getheader(tmp_path / "s4" / "sample_000001.fits")
    assert drawn["CONDSRC"] == "population" and drawn["CANDS"] == 2
    assert 0 <= drawn["POPROW"] < 6
    # the index lists what each galaxy was drawn with
    index = QTable.read(tmp_path / "s4" / "index.ecsv")
    assert index["requested_mag_r"].unit == u.mag and index["population_row"][1] == \
        drawn["POPROW"]
    assert index["requested_r_half"][1].to_value(u.arcsec) == pytest.approx(drawn["CONDV1"])
    assert cli.main(["sample", "--model", str(out / "model"), "-n", "1", "--steps", "2",
                     "--guidance", "0", "-o", str(tmp_path / "s5"), "--quiet"]) == 0
    assert "CONDV0" not in fits.getheader(tmp_path / "s5" / "sample_000000.fits")
    # an unconditional model refuses --like in one line
    plain = tmp_path / "plain"
    assert cli.main(["train", "--mock", "2", "--size", "32", "--dim", "8", "--dim-mults",
                     "1,2", "--train-steps", "1", "--batch-size", "2", "-o", str(plain),
                     "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["sample", "--model", str(plain / "model"), "--like", str(cat), "-o",
                     str(tmp_path / "s2"), "--steps", "2", "--quiet"]) != 0
    assert "conditional model" in capsys.readouterr().err
    assert cli.main(["sample", "--model", str(plain / "model"), "-n", "2", "--candidates",
                     "2", "-o", str(tmp_path / "s6"), "--quiet"]) != 0
    assert "stores none" in capsys.readouterr().err


def test_inpaint_and_transfer_accept_conditions(two_conditions):
    m = two_conditions
    image = _blobs(1, seed=5)[0]
    mask = np.zeros((16, 16), bool)
    mask[6:10, :] = True
    request = {"mag_r": 19.5 * u.mag, "r_half": 0.6 * u.arcsec}
    kw = dict(bands="grz", seed=2, n_draws=2, steps=3, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstroSBGMConditionWarning)
        plain = m.inpaint(image, mask=mask, **kw)
        free = m.inpaint(image, mask=mask, conditions=request, guidance_scale=0.0, **kw)
        guided = m.inpaint(image, mask=mask, conditions=request, guidance_scale=3.0, **kw)
        moved = m.transfer(image, strength=0.5, conditions=request, guidance_scale=3.0, **kw)
    np.testing.assert_array_equal(free.data, plain.data)   # s = 0: the unconditional model
    assert guided.meta["CONDN1"] == "r_half" and guided.meta["CONDV1"] == 0.6
    assert guided.meta["GUIDANCE"] == 3.0 and guided.meta["NFE"] == 2 * plain.meta["NFE"]
    assert moved.meta["CONDV0"] == 19.5 and moved.meta["GUIDANCE"] == 3.0
    with pytest.raises(ValueError, match="lacks column"):
        m.transfer(image, conditions={"mag_r": 19.5 * u.mag}, **kw)


def test_condition_lr_scale_speeds_up_only_the_new_embedding():
    X = _blobs(8)
    base = _tiny(learning_rate=1e-3).fit(X, bands="grz", steps=2, progress=False)
    state = {k: v.clone() for k, v in base.net_.state_dict().items()}
    moved = {}
    for scale in (1.0, 10.0):
        model = _tiny(learning_rate=1e-3).fit(X, bands="grz", steps=2, progress=False)
        model.set_params(conditions=["mag_r"], condition_lr_scale=scale)
        model.fit(X, bands="grz", steps=1, progress=False, warm_start=True)
        after = model.net_.state_dict()
        # the embedding's last layer starts at zero: its change is Adam's first step
        moved[scale] = float(after["cond_mlp.2.weight"].abs().max())
        rest = {k: v for k, v in after.items() if not k.startswith("cond_mlp")}
        if scale == 1.0:
            rest_1 = rest
    # Adam's first step moves each weight by about the learning rate, whatever the gradient
    assert moved[1.0] == pytest.approx(1e-3, rel=1e-2)
    assert moved[10.0] == pytest.approx(10 * moved[1.0], rel=1e-3)
    for k, v in rest.items():   # the rest of the network trains exactly as before
        torch.testing.assert_close(v, rest_1[k], rtol=0, atol=0)
    assert any(not torch.equal(v, state[k]) for k, v in rest.items())   # and it did train
    with pytest.raises(ValueError, match="condition_lr_scale must be > 0"):
        model.set_params(condition_lr_scale=0)
        model.fit(X, bands="grz", steps=1, progress=False, warm_start=True)


def test_population_draws_follow_their_rows(blob_model):
    # without conditions a conditional model draws each galaxy's mag_r from its training
    # population, then the galaxy under it: the measured magnitudes follow the rows drawn
    pop = blob_model.population_
    assert len(pop) == 128 and pop["mag_r"].unit == u.mag
    train = measure_galaxies(_blobs(128), bands="grz")["mag_r"]
    np.testing.assert_allclose(pop["mag_r"].value, train.value, rtol=1e-6)
    out = blob_model.sample(32, steps=10, seed=3, progress=False)
    rows = np.array([c.meta["POPROW"] for c in out])
    assert all(c.meta["CONDSRC"] == "population" and c.meta["GUIDANCE"] == 1.0 for c in out)
    wanted = np.array([c.meta["CONDV0"] for c in out])
    np.testing.assert_allclose(wanted, pop["mag_r"].value[rows], rtol=1e-6)
    assert len(np.unique(rows)) > 16   # rows drawn with replacement, uniformly
    got = np.asarray(measure_galaxies(out)["mag_r"].filled(np.nan))
    assert spearmanr(wanted, got).correlation > 0.7


def test_population_draw_is_a_draw_to_order_of_its_rows(two_conditions):
    m = two_conditions
    kw = dict(steps=2, seed=4, progress=False)
    drawn = m.sample(3, **kw)
    rows = [c.meta["POPROW"] for c in drawn]
    # galaxy i's row depends on the seed and i only
    assert [c.meta["POPROW"] for c in m.sample(5, **kw)][:3] == rows
    assert m.sample(1, start=2, **kw)[0].meta["POPROW"] == rows[2]
    assert [c.meta["POPROW"] for c in m.sample(3, **{**kw, "seed": 5})] != rows
    # ... and the galaxy is the draw to order of that row (same seed, same batch)
    ordered = m.sample(3, conditions=m.population_[rows], **kw)
    for a, b in zip(drawn, ordered):
        np.testing.assert_array_equal(a.data, b.data)
    # guidance_scale=0 is the unconditional model, whatever the rows
    free = m.sample(3, guidance_scale=0.0, **kw)
    assert "CONDSRC" not in free[0].meta and "CONDV0" not in free[0].meta
    for a, b in zip(free, m.sample(3, conditions=m.population_[rows], guidance_scale=0.0,
                                   **kw)):
        np.testing.assert_array_equal(a.data, b.data)
    # a guided population draw evaluates the network twice per step
    assert m.sample(2, guidance_scale=2.0, **kw)[0].meta["NFE"] == 4


def test_population_saved_replaced_and_thinned(two_conditions, tmp_path, monkeypatch):
    m = copy.deepcopy(two_conditions)
    m.save(tmp_path / "m")
    back = GalaxyDiffusion.load(tmp_path / "m")
    np.testing.assert_array_equal(back.conditions_.population, m.conditions_.population)
    assert back.conditions_.to_dict()["population_rows"] == 16
    # a survey's catalogue as the population: every draw comes from its rows
    survey = QTable({"mag_r": [19.5, 20.0, 20.5] * u.mag, "r_half": [2.0, 2.5, 3.0] * u.pix,
                     "id": [7, 8, 9]})
    with pytest.warns(AstroSBGMConditionWarning, match="r_half.*outside the training range"):
        assert back.set_population(survey) is back
    drawn = back.sample(6, steps=2, seed=0, progress=False)
    assert {c.meta["CONDV0"] for c in drawn} <= {19.5, 20.0, 20.5}
    np.testing.assert_allclose(back.population_["r_half"].to_value(u.arcsec),
                               np.array([2.0, 2.5, 3.0]) * back.pixel_scale, rtol=1e-6)
    back.save(tmp_path / "m2")
    again = GalaxyDiffusion.load(tmp_path / "m2")
    assert len(again.population_) == 3
    # the weights file must hold the population its config describes
    config = json.loads((tmp_path / "m2" / "config.json").read_text())
    config["conditions"]["population_rows"] = 4
    (tmp_path / "m2" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="population of conditions"):
        GalaxyDiffusion.load(tmp_path / "m2")
    # a model saved without a population (before it existed) draws unconditionally
    m.conditions_.population = None
    assert m.population_ is None
    plain = m.sample(2, steps=2, seed=1, progress=False)
    assert "CONDV0" not in plain[0].meta
    with pytest.raises(ValueError, match="takes 0 .unconditional. or 1"):
        m.sample(2, steps=2, guidance_scale=2.0, progress=False)
    # bad populations are refused, with the missing column named
    with pytest.raises(ValueError, match="r_half"):
        back.set_population(QTable({"mag_r": [20.0] * u.mag}))
    with pytest.raises(ValueError, match="no rows"):
        back.set_population(QTable({"mag_r": [] * u.mag, "r_half": [] * u.arcsec}))
    with pytest.raises(ValueError, match="needs a conditional model"):
        _tiny().fit(_blobs(4), bands="grz", steps=1, progress=False).set_population(survey)
    # a larger population is thinned to a random subset of its rows
    monkeypatch.setattr(_conditions, "POPULATION_MAX_ROWS", 5)
    rows = np.column_stack([np.arange(12.0), np.arange(12.0) + 100])
    m.conditions_.set_population(rows)
    kept = m.conditions_.population
    assert kept.shape == (5, 2) and len(np.unique(kept[:, 0])) == 5
    np.testing.assert_array_equal(kept[:, 1], kept[:, 0] + 100)   # whole rows kept


def test_population_rows_are_drawn_uniformly(two_conditions):
    _, index = two_conditions.conditions_.draw_population(seed=0, start=0, n=1600)
    counts = np.bincount(index, minlength=16)
    assert len(counts) == 16
    # 100 expected per row; a chi-square of 15 degrees of freedom exceeds 37.7 once in 1000
    assert np.sum((counts - 100.0) ** 2 / 100.0) < 37.7


def test_fine_tune_adds_conditions_after_the_models_own(tmp_path):
    import copy

    X = _blobs(16)
    base = _tiny(conditions=["mag_r"]).fit(X, bands="grz", steps=2, progress=False)
    start = copy.deepcopy(base)
    x = torch.randn(2, 3, 16, 16)
    cond = torch.tensor([[1.0], [-1.0]])
    with torch.no_grad():
        before = base.ema_net_(x, 400.0, cond=cond)
    base.set_params(conditions=["mag_r", "r_half"])
    base.fit(X, bands="grz", steps=0, progress=False, warm_start=True)
    assert base.ema_net_.cond_dim == 2 and base.net_.cond_dim == 2
    with torch.no_grad():   # zero weights for the new entry: the old outputs, whatever it holds
        after = base.ema_net_(x, 400.0, cond=torch.cat([cond, torch.tensor([[3.0], [-2.0]])], 1))
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    old, new = start.conditions_, base.conditions_
    assert new.names == ("mag_r", "r_half")
    # the old condition keeps its standardisation, the new one is standardised by the data
    assert new.mean[0] == old.mean[0] and new.std[0] == old.std[0]
    r_half = measure_galaxies(X, bands="grz")["r_half"].to_value(u.arcsec)
    assert new.mean[1] == pytest.approx(np.mean(r_half), rel=1e-6)
    assert base.population_["r_half"].to_value(u.arcsec) == pytest.approx(r_half, rel=1e-6)
    base.fit(X, bands="grz", steps=2, progress=False, warm_start=True)
    assert base.net_.cond_mlp[0].weight[:, 1].abs().max() > 0   # it learns the new one
    assert base.sample(1, conditions={"mag_r": 20.5 * u.mag, "r_half": 0.49 * u.arcsec},
                       steps=2, progress=False)

    # a run of the extended fine-tune resumes from the model it started from
    run = copy.deepcopy(start).set_params(conditions=["mag_r", "r_half"])
    run.fit(X, bands="grz", steps=3, progress=False, warm_start=True,
            checkpoint_dir=tmp_path / "ck", checkpoint_every=1)
    again = copy.deepcopy(start).set_params(conditions=["mag_r", "r_half"])
    again.fit(X, bands="grz", steps=3, progress=False, warm_start=True,
              checkpoint_dir=tmp_path / "ck", resume=True)
    assert again.n_steps_ == run.n_steps_ == 5
    for k, v in again.ema_net_.state_dict().items():
        torch.testing.assert_close(v, run.ema_net_.state_dict()[k], rtol=0, atol=0)

    # other orders and fewer conditions are refused, the model unchanged
    for names in (["r_half", "mag_r"], ["r_half"]):
        model = copy.deepcopy(start).set_params(conditions=names)
        with pytest.raises(ValueError, match="may add new ones after them"):
            model.fit(X, bands="grz", steps=1, progress=False, warm_start=True)


def test_unet_condition_embedding_extension_checks():
    with pytest.raises(ValueError, match="no condition embedding to extend"):
        UNet(dim=8, dim_mults=(1, 2)).extend_condition_embedding(2)
    net = UNet(dim=8, dim_mults=(1, 2), cond_dim=2)
    with pytest.raises(ValueError, match="larger than the present 2"):
        net.extend_condition_embedding(2)
    net.extend_condition_embedding(3)
    assert net.cond_dim == 3 and UNet.from_config(net.to_config()).cond_dim == 3
