"""Tests of inpainting (astro_sbgm.inpainting) on a tiny model trained on round blobs."""

import argparse
import hashlib
import warnings

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS
import torch

from astro_sbgm import GalaxyDiffusion, NotFittedError
from astro_sbgm._cli_inpaint import add_inpaint_parser, write_result
from astro_sbgm.artifacts import add_satellite_trails
from astro_sbgm.inpainting import (INPAINT_METHODS, _plan_boxes, _plan_writes, _waves, inpaint,
                                   inpainting_grid, inpainting_plan,
                                   known_pixel_guidance, repaint_times)
from astro_sbgm.io import AstroSBGMInputWarning, read_image, write_image

SIZE = 16


def _strip(width=4, start=6):
    mask = np.zeros((SIZE, SIZE), bool)
    mask[start:start + width, :] = True
    return mask


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ----------------------------------------------------------------------------- time grids
def test_repaint_times_structure():
    grid = np.arange(20, -1, -1.0)
    times = repaint_times(grid, jump_length=5, n_resample=3)
    d = np.diff(times)
    ups = d[d > 0]
    # jump points at indices 5, 10, 15, 20: two extra passes each, 5 grid points up
    assert len(ups) == 4 * 2 and np.all(ups == 5)
    assert times[0] == 20 and times[-1] == 0
    assert np.all(np.isin(times, grid))
    # down-steps: 20 once, plus 5 per jump
    assert np.sum(d < 0) == 20 + 8 * 5
    assert np.array_equal(repaint_times(grid, 5, 1), grid)
    with pytest.raises(ValueError, match="n_resample"):
        repaint_times(grid, 5, 0)


def test_method_grids(model):
    paper = inpainting_grid(model.schedule_, "paper")
    assert paper[0] == 950 and paper[-1] == 0 and len(paper) == 951
    assert np.all(np.diff(paper) == -1)
    fast = inpainting_grid(model.schedule_, "fast")
    assert fast[0] == 950 and fast[-1] == 0
    assert np.sum(np.diff(fast) < 0) + 1 <= 100                  # network evaluations
    assert len(np.unique(fast)) == INPAINT_METHODS["fast"]["steps"]
    rep = inpainting_grid(model.schedule_, "repaint")
    assert np.any(np.diff(rep) > 0)
    with pytest.raises(ValueError, match="t_start"):
        inpainting_grid(model.schedule_, "fast", t_start=1000)
    with pytest.raises(ValueError, match="unknown inpainting method"):
        inpainting_grid(model.schedule_, "magic")


def test_boxes_cover_every_target_pixel_once():
    rng = np.random.default_rng(1)
    target = np.zeros((70, 90), bool)
    target[30:33, :] = True                      # a trail across the whole image
    target[5:9, 5:9] = True                      # a star
    target[60:64, 70:75] = True                  # another star
    target |= rng.uniform(size=target.shape) > 0.995
    boxes = _plan_boxes(target, 32)
    count = np.zeros(target.shape, int)
    for y0, x0, assigned in boxes:
        assert 0 <= y0 <= 70 - 32 and 0 <= x0 <= 90 - 32
        assert assigned.shape == (32, 32)        # in the box's frame, not the image's
        count[y0:y0 + 32, x0:x0 + 32] += assigned
    assert np.array_equal(count, target.astype(int))
    # waves: every box once, no two boxes of a wave overlap
    waves = _waves(boxes, 32)
    assert sorted(i for w in waves for i in w) == list(range(len(boxes)))
    assert 1 < len(waves) < len(boxes)
    for w in waves:
        for i in w:
            for j in w:
                if i < j:
                    (yi, xi, _), (yj, xj, _) = boxes[i], boxes[j]
                    assert abs(yi - yj) >= 32 or abs(xi - xj) >= 32
    # small image: one padded box
    (y0, x0, assigned), = _plan_boxes(np.ones((10, 12), bool), 16)
    assert (y0, x0) == (-3, -2)
    assert assigned[3:13, 2:14].all() and assigned.sum() == 120


def test_seam_overlap_redraws_junctions_in_the_later_box():
    target = np.zeros((40, 150), bool)
    target[18:21, :] = True                      # a trail split between several boxes
    boxes, waves, writes, owner = _plan_writes(target, 32, overlap=0)
    plan = np.full(target.shape, -1)
    for i, (y0, x0, assigned) in enumerate(boxes):
        plan[y0:y0 + 32, x0:x0 + 32][assigned] = i
        assert np.array_equal(writes[i], assigned)
    assert np.array_equal(owner, plan) and (owner[target] >= 0).all()
    wave_of = {i: w for w, members in enumerate(waves) for i in members}
    _, _, writes3, owner3 = _plan_writes(target, 32, overlap=3)
    assert np.array_equal(owner3 >= 0, target)   # every target pixel, nothing else
    moved = target & (owner3 != plan)
    assert moved.any()
    ys, xs = np.nonzero(moved)
    for y, x in zip(ys, xs):
        now, before = owner3[y, x], plan[y, x]
        assert wave_of[now] > wave_of[before]    # only a later box re-draws a pixel
        # ... within 3 pixels of its own piece
        near = (plan == now)[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4]
        assert near.any()
    # a later box's own pixels are never taken back by an earlier one
    for i in range(len(boxes)):
        assert np.array_equal(writes3[i] & boxes[i][2], boxes[i][2])


def test_inpainting_plan_is_the_plan_inpaint_runs():
    target = np.zeros((40, 150), bool)
    target[18:21, :] = True
    plan = inpainting_plan(np.stack([target, np.zeros_like(target)]), 32)   # any band
    boxes, waves, _, owner = _plan_writes(target, 32, overlap=2)   # 32 // 16
    assert np.array_equal(plan.owner, owner) and plan.waves == waves
    assert plan.corners.shape == (len(boxes), 2)
    assert [tuple(c) for c in plan.corners] == [(y0, x0) for y0, x0, _ in boxes]
    assert sorted(i for w in plan.waves for i in w) == list(range(len(boxes)))
    assert np.array_equal(inpainting_plan(target, 32, seam_overlap=0).owner,
                          _plan_writes(target, 32, overlap=0)[3])
    with pytest.raises(ValueError, match="seam_overlap must be between 0 and 4"):
        inpainting_plan(target, 32, seam_overlap=5)
    with pytest.raises(ValueError, match="mask must be"):
        inpainting_plan(target[0], 32)
    with pytest.raises(ValueError, match="image_size must be an integer"):
        inpainting_plan(target, 0)


# ----------------------------------------------------------------------------- recovery
def test_fast_method_recovers_a_masked_strip(model, held_out):
    truth = held_out[0]
    mask = _strip()
    out = inpaint(model, truth, mask, n_draws=4, seed=0, method="fast")
    err = out.data[:, mask] - truth.data[:, mask]
    rms_err = np.sqrt(np.mean(err ** 2))
    rms_zero_fill = np.sqrt(np.mean(truth.data[:, mask] ** 2))
    assert rms_err < 0.35 * rms_zero_fill
    # the peak in the masked strip (the blob's centre) is recovered within 25%
    peak_true = truth.data[1, 7:9, 7:9].mean()
    assert abs(out.data[1, 7:9, 7:9].mean() / peak_true - 1) < 0.25
    assert out.meta["NFE"] == 50 and out.meta["INPAINT"] == "fast"


@pytest.mark.parametrize("method, kw", [("repaint", dict(steps=20, jump_length=5,
                                                         n_resample=3)),
                                        ("paper", dict(t_start=150))])
def test_stochastic_methods_recover_a_masked_strip(model, held_out, method, kw):
    truth = held_out[1]
    mask = _strip(width=3, start=7)
    out = inpaint(model, truth, mask, method=method, n_draws=2, seed=1, **kw)
    err = out.data[:, mask] - truth.data[:, mask]
    assert np.sqrt(np.mean(err ** 2)) < 0.35 * np.sqrt(np.mean(truth.data[:, mask] ** 2))
    times = inpainting_grid(model.schedule_, method, **kw)
    assert out.meta["NFE"] == np.sum(np.diff(times) < 0) + 1
    assert out.meta["INPSAMP"] == "ddpm"
    # a model trained with this package: the paper's sigma_t^2 = beta_t (repaint: posterior)
    assert out.meta["DDPMVAR"] == {"paper": "beta", "repaint": "posterior"}[method]


def test_satellite_trail_is_removed(model, held_out):
    truth = held_out[2]
    defaced, mask = add_satellite_trails(truth, n_trails=1, seed=4, brightness=(20, 20),
                                         width=(1.5, 1.5), dashed=0.0)
    out = inpaint(model, defaced, mask, seed=3)
    assert np.array_equal(out.flags.astype(bool), mask)
    assert np.array_equal(out.data[~mask], defaced.data[~mask])
    # the trail (20 nanomaggy at its peak) is gone: the fill is close to the truth
    assert np.abs(out.data[mask] - truth.data[mask]).max() < 0.5
    assert np.abs(defaced.data[mask] - truth.data[mask]).max() > 10


# ----------------------------------------------------------------------------- exactness
def test_known_pixels_bit_for_bit_in_original_unit_and_dtype(model, held_out):
    rng = np.random.default_rng(5)
    data = held_out[0].data.astype(np.float64) * 1e-9 + rng.normal(0, 1e-13, (3, SIZE, SIZE))
    ccd = CCDData(data, unit=u.maggy, wcs=held_out[0].wcs, meta={"BANDS": "g,r,z"})
    mask = _strip()
    out = inpaint(model, ccd, mask, seed=0)
    assert out.unit == u.maggy and out.data.dtype == np.float64
    assert np.array_equal(out.data[:, ~mask], data[:, ~mask])
    assert not np.array_equal(out.data[:, mask], data[:, mask])
    # the fill is in maggies too (the blob peaks near 1e-9 maggy)
    assert 1e-10 < out.data[1, 7, 7] < 3e-9
    assert np.array_equal(ccd.data, data)


def test_hdu_in_ccddata_out_with_equal_wcs_and_cards(model, legacy_factory):
    hdu = legacy_factory(n=SIZE, seed=2)
    before = hdu.data.copy()
    out = inpaint(model, hdu, _strip(), seed=0)
    assert isinstance(out, CCDData)
    ref = WCS(hdu.header, naxis=2)
    assert out.wcs.wcs.compare(ref.wcs)
    assert out.meta["SURVEY"] == "LegacySurvey" and out.meta["BANDS"] == "g,r,z"
    assert out.data.dtype == np.float32
    assert np.array_equal(out.data[:, ~_strip()], before[:, ~_strip()])
    assert np.array_equal(hdu.data, before)


def test_uncertainty_is_the_spread_of_the_draws(model, held_out):
    mask = _strip()
    img = held_out[0]
    out = inpaint(model, img, mask, n_draws=3, seed=7)
    unc = out.uncertainty.array
    assert unc.shape == out.data.shape
    # known pixels keep the input's uncertainty (the sky sigma), bit for bit: never 0
    assert np.array_equal(unc[:, ~mask], img.uncertainty.array[:, ~mask])
    assert np.all(unc[:, mask] >= 0) and unc[:, mask].mean() > 0
    one = inpaint(model, img, mask, n_draws=1, seed=7)
    # one draw: the filled pixels' spread is unknown (NaN), the known pixels' is the input's
    assert np.all(np.isnan(one.uncertainty.array[:, mask]))
    assert np.array_equal(one.uncertainty.array[:, ~mask], img.uncertainty.array[:, ~mask])
    assert out.meta["NDRAWS"] == 3 and out.meta["DRAWMEAN"] and not one.meta["DRAWMEAN"]


def test_uncertainty_of_an_input_without_one(model, held_out):
    mask = _strip()
    bare = CCDData(held_out[0].data, unit=u.nanomaggy, wcs=held_out[0].wcs,
                   meta=held_out[0].meta)
    out = inpaint(model, bare, mask, n_draws=2, seed=7)
    # nothing is known about the known pixels: NaN, not a pretended sigma = 0
    assert np.all(np.isnan(out.uncertainty.array[:, ~mask]))
    assert np.all(np.isfinite(out.uncertainty.array[:, mask]))
    assert inpaint(model, bare, mask, n_draws=1, seed=7).uncertainty is None


def test_draws_carry_the_sky_noise_their_mean_does_not(model, gaussian_sky_model):
    # the paper's ancestral method with an exact denoiser of i.i.d. Gaussian "sky" pixels:
    # each draw's filled pixels follow N(mu, sky^2) exactly, so any loss of noise in what
    # is returned comes from the plumbing (averaging, adding sky, ...), not the sampler
    method = "paper"
    mu, sky = 0.8, 0.05
    fake = gaussian_sky_model(model, mu, sky)
    rng = np.random.default_rng(3)
    data = rng.normal(mu, sky, (3, SIZE, SIZE)).astype(np.float32)
    img = CCDData(data, unit=u.nanomaggy, meta={"BANDS": "g,r,z"},
                  uncertainty=StdDevUncertainty(np.full(data.shape, sky, np.float32)))
    mask = np.zeros((SIZE, SIZE), bool)
    mask[4:12, :] = True
    k = 8
    summary, draws = inpaint(fake, img, mask, method=method, n_draws=k, seed=2,
                             return_draws=True)
    assert len(draws) == k and all(isinstance(d, CCDData) for d in draws)
    assert [d.meta["DRAWIDX"] for d in draws] == list(range(k))
    stack = np.stack([d.data for d in draws])
    # every draw keeps the known pixels; the summary is the mean of the draws
    assert np.all(stack[:, :, ~mask] == data[:, ~mask])
    np.testing.assert_allclose(summary.data[:, mask], stack[:, :, mask].mean(axis=0),
                               rtol=0, atol=1e-6)
    sky_in = data[:, ~mask].std()
    sky_draws = np.sqrt(np.mean([d.data[:, mask].var() for d in draws]))
    sky_mean = summary.data[:, mask].std()
    # a draw is a galaxy: its filled sky is as noisy as the input's (within 10%) ...
    assert abs(sky_draws / sky_in - 1) < 0.1
    # ... the mean is not: its sky noise is sqrt(K) lower
    assert sky_mean < 0.5 * sky_in
    assert abs(sky_mean * np.sqrt(k) / sky_in - 1) < 0.25
    # one meaning of uncertainty: the input's at known pixels, the draws' spread at filled
    # ones (the sky, not the sky added once more)
    unc = summary.uncertainty.array
    assert np.array_equal(unc[:, ~mask], img.uncertainty.array[:, ~mask])
    assert abs(np.sqrt(np.mean(unc[:, mask] ** 2)) / sky - 1) < 0.1
    assert all(np.array_equal(d.uncertainty.array, unc) for d in draws)
    assert summary.meta["DRAWMEAN"] and not draws[0].meta["DRAWMEAN"]
    # draw k of a seed does not depend on how many are drawn
    first, = inpaint(fake, img, mask, method=method, n_draws=1, seed=2, return_draws=True)[1]
    np.testing.assert_allclose(first.data, draws[0].data, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- known pixels
class _DriftingDenoiser:
    """A fake denoiser whose clean-image estimate drifts with t (records every call)."""

    def __init__(self, schedule):
        self.schedule, self.nfe, self.calls = schedule, 0, []

    def __call__(self, x, t):
        self.nfe += 1
        a, s = (float(v) for v in self.schedule.alpha_sigma(torch.tensor(float(t))))
        x0 = (0.6 * torch.tanh(x) + 0.4 * float(t) / self.schedule.T - 0.2).clamp(-1, 1)
        eps = (x - a * x0) / s
        self.calls.append((x.clone(), float(t), eps.clone()))
        return x0, eps


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m", "euler", "heun"])
def test_consistent_known_pixels_are_exact_after_every_step(sampler):
    from astro_sbgm.diffusion import DiffusionSchedule, make_grid, reverse_process

    sched = DiffusionSchedule.from_name("cosine")
    den = _DriftingDenoiser(sched)
    gen = torch.Generator().manual_seed(0)
    x0_known = torch.rand(2, 3, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1
    unknown = torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    unknown[..., 2:5, :] = True
    guide = known_pixel_guidance(sched, x0_known, unknown, rule="consistent")
    outs = []

    def hook(x_next, t_next, x0_hat, eps_hat=None):
        out = guide(x_next, t_next, x0_hat, eps_hat=eps_hat)
        outs.append(out.clone())
        return out

    times = make_grid(sched, 8, "karras", t_start=900)
    x_start = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    reverse_process(den, x_start, times, sampler, guidance=hook)
    assert len(outs) == len(times)
    known = ~unknown.expand_as(x0_known)
    x_prev = x_start
    for n, out in enumerate(outs[:-1]):
        # the model's noise estimate at the point step n started from
        eps = next(e for x, t, e in den.calls if t == times[n] and torch.equal(x, x_prev))
        a, s = (float(v) for v in sched.alpha_sigma(torch.tensor(float(times[n + 1]))))
        np.testing.assert_allclose(out[known].numpy(), (a * x0_known + s * eps)[known].numpy(),
                                   rtol=1e-12, atol=1e-12)
        x_prev = out
    assert torch.equal(outs[-1][known], x0_known[known])


def test_consistent_rule_needs_the_noise_estimate():
    from astro_sbgm.diffusion import DiffusionSchedule

    sched = DiffusionSchedule.from_name("cosine")
    unknown = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    guide = known_pixel_guidance(sched, torch.zeros(1, 1, 2, 2), unknown, rule="consistent")
    with pytest.raises(ValueError, match="eps_hat"):
        guide(torch.zeros(1, 1, 2, 2), 10.0, torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="'noise'.*'consistent'.*got 'fresh'"):
        known_pixel_guidance(sched, torch.zeros(1), torch.zeros(1, dtype=bool), rule="fresh")


@pytest.mark.parametrize("sampler", ["dpmpp-2m", "heun"])
def test_multistep_samplers_inpaint_as_well_as_ddim(model, held_out, sampler):
    truth = held_out[1]
    mask = _strip()

    def rel_err(name):
        out = inpaint(model, truth, mask, sampler=name, steps=10, n_resample=1, seed=1)
        assert out.meta["INPSAMP"] == name
        assert np.array_equal(out.data[:, ~mask], truth.data[:, ~mask])
        err = out.data[:, mask] - truth.data[:, mask]
        return np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(truth.data[:, mask] ** 2))

    # same start, same grid: the second-order rules do no worse than first-order DDIM
    assert rel_err(sampler) < 1.1 * rel_err("ddim") < 0.5


# ----------------------------------------------------------------------------- mask sources
def test_mask_from_ccddata_mask(model, held_out):
    ccd = held_out[0].copy()
    mask = np.zeros(ccd.shape, bool)
    mask[:, 2:5, 3:9] = True
    ccd.mask = mask
    out = inpaint(model, ccd, seed=0)
    assert np.array_equal(out.flags.astype(bool), mask)
    assert out.meta["NFILLED"] == mask.sum()


def test_mask_from_nan_pixels(model, held_out):
    data = held_out[0].data.copy()
    data[1, 8, 2:12] = np.nan
    ccd = CCDData(data, unit=u.nanomaggy, wcs=held_out[0].wcs, meta=held_out[0].meta)
    out = inpaint(model, ccd, seed=0)
    bad = ~np.isfinite(data)
    assert np.array_equal(out.flags.astype(bool), bad)
    assert np.all(np.isfinite(out.data))
    assert np.array_equal(out.data[~bad], data[~bad])


def test_mask_from_fits_mask_extension_and_file_untouched(model, held_out, tmp_path):
    mask = np.zeros((3, SIZE, SIZE), bool)
    mask[:, 10:13, :] = True
    ccd = held_out[1].copy()
    ccd.mask = mask
    path = write_image(ccd, tmp_path / "in.fits")
    digest = _sha(path)
    out = inpaint(model, str(path), seed=0)
    assert np.array_equal(out.flags.astype(bool), mask)
    assert _sha(path) == digest
    # and from a separate mask file given as mask=
    mpath = tmp_path / "mask.fits"
    fits.PrimaryHDU(mask[0].astype(np.uint8)).writeto(mpath)
    clean = tmp_path / "clean.fits"
    write_image(held_out[1], clean)
    digests = (_sha(clean), _sha(mpath))
    out2 = inpaint(model, clean, mask=str(mpath), seed=0)
    assert np.array_equal(out2.flags.astype(bool), mask)
    assert (_sha(clean), _sha(mpath)) == digests
    # the result writes back to FITS and reads back identically
    res = write_result(out2, tmp_path / "out.fits")
    back = read_image(res)
    assert np.array_equal(back.data, out2.data)
    with fits.open(res) as hdul:
        assert np.array_equal(hdul["FLAGS"].data.astype(bool), mask)


def test_mask_from_nddata_and_region_like(model, held_out):
    mask = _strip(width=2, start=1)
    out = inpaint(model, held_out[0], NDData(mask.astype(np.uint8)), seed=0)
    assert np.array_equal(out.flags[0].astype(bool), mask)

    class Region:                         # the part of the regions API that is used
        def to_mask(self, mode="center"):
            class M:
                def to_image(self, shape):
                    img = np.zeros(shape)
                    img[3:6, 4:10] = 1
                    return img
            return M()

    out = inpaint(model, held_out[0], Region(), seed=0)
    assert out.flags[2].sum() == 18 and out.flags[2, 3:6, 4:10].all()


# ----------------------------------------------------------------------------- other grids
def test_larger_image_is_inpainted_in_boxes(model):
    rng = np.random.default_rng(3)
    big = np.abs(rng.normal(0.05, 0.01, (3, 20, 44))).astype(np.float32)
    mask = np.zeros((20, 44), bool)
    mask[9:11, :] = True                  # a trail across the whole image
    mask[2:4, 3:5] = True
    out = inpaint(model, big, mask, bands="grz", seed=0)
    assert out.shape == (3, 20, 44)
    assert np.array_equal(out.flags[0].astype(bool), mask)
    assert np.array_equal(out.data[:, ~mask], big[:, ~mask])
    filled = out.data[:, mask]
    assert np.all(np.isfinite(filled)) and np.all((filled >= 0) & (filled <= 2.0))
    # the fill of a faint sky continues the sky, not a galaxy
    assert np.abs(filled.mean() - big.mean()) < 0.1
    # pure sky: every box takes the sky shortcut (drawn sky noise, no network)
    assert out.meta["NBOXES"] > 1 and out.meta["SKYBOXES"] == out.meta["NBOXES"]
    assert out.meta["NFE"] == 0
    assert np.std(filled - big.mean()) == pytest.approx(0.01, rel=0.35)
    net = inpaint(model, big, mask, bands="grz", seed=0, sky_shortcut=False)
    assert net.meta["SKYBOXES"] == 0 and net.meta["NFE"] > 50       # more than one box
    assert np.array_equal(net.data[:, ~mask], big[:, ~mask])


def test_boxes_batched_in_waves_give_the_draws_of_one_by_one(model):
    """Draw k of box b comes from its own stream: batching boxes changes no draw."""
    rng = np.random.default_rng(4)
    big = np.abs(rng.normal(0.05, 0.01, (3, 20, 44))).astype(np.float32)
    big[:, 6:14, 16:26] += 1.0                     # a source: no sky shortcut near it
    mask = np.zeros((20, 44), bool)
    mask[9:11, :] = True
    kw = dict(bands="grz", seed=3, n_draws=2, sky_shortcut=False, steps=4, n_resample=1)
    a = inpaint(model, big, mask, batch_size=16, **kw)
    b = inpaint(model, big, mask, batch_size=1, **kw)
    assert a.meta["NBOXES"] > 1
    np.testing.assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-5)


def test_seam_overlap_in_inpaint(model):
    rng = np.random.default_rng(4)
    big = np.abs(rng.normal(0.05, 0.01, (3, 20, 44))).astype(np.float32)
    big[:, 6:14, 16:26] += 1.0
    mask = np.zeros((20, 44), bool)
    mask[9:11, :] = True
    kw = dict(bands="grz", seed=3, sky_shortcut=False, steps=4, n_resample=1)
    plain = inpaint(model, big, mask, seam_overlap=0, **kw)
    over = inpaint(model, big, mask, seam_overlap=2, **kw)
    assert plain.meta["SEAMOVL"] == 0 and over.meta["SEAMOVL"] == 2
    assert inpaint(model, big, mask, **kw).meta["SEAMOVL"] == model.image_size // 16
    assert over.meta["NBOXES"] == plain.meta["NBOXES"] > 1
    assert np.array_equal(over.data[:, ~mask], big[:, ~mask])
    assert np.array_equal(over.flags[0].astype(bool), mask)
    assert np.all(np.isfinite(over.data))
    # the boxes of the first wave are unchanged; a later box re-draws a junction
    changed = np.any(over.data != plain.data, axis=0)
    assert changed.any() and not changed[mask].all() and not changed[~mask].any()
    with pytest.raises(ValueError, match="seam_overlap"):
        inpaint(model, big, mask, seam_overlap=model.image_size, **kw)


def test_smaller_image_and_missing_band(model, held_out):
    small = held_out[0].data[:2, 2:14, 2:14].copy()           # g, r only, 12x12
    mask = np.zeros((12, 12), bool)
    mask[5:7, 1:11] = True
    out = inpaint(model, small, mask, bands="gr", seed=0)
    assert out.shape == (2, 12, 12) and out.meta["BANDS"] == "g,r"
    assert np.array_equal(out.data[:, ~mask], small[:, ~mask])
    assert np.all(np.isfinite(out.data))


def test_extra_band_passes_through(model, held_out):
    data = np.concatenate([held_out[0].data, held_out[0].data[2:]])
    data[3, 5, 5] = np.nan
    mask = _strip()
    with pytest.warns(AstroSBGMInputWarning, match="not modelled"):
        out = inpaint(model, data, mask, bands="grzy", seed=0)
    assert np.array_equal(out.data[3], data[3], equal_nan=True)
    assert out.mask is not None and out.mask[3, 5, 5] and out.mask[3].sum() == mask.sum() + 1
    assert out.flags[3].sum() == 0 and out.flags[:3].sum() == 3 * mask.sum()


def _blob_at_scale(scale, n, amp=0.8):
    """A training-like blob (same angular size and total flux) drawn at another pixel scale."""
    from astro_sbgm.io import make_tan_wcs

    ratio = scale / 0.262
    sigma = SIZE / 10.0 / ratio
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    blob = np.exp(-0.5 * (xx ** 2 + yy ** 2) / sigma ** 2) * ratio ** 2
    data = np.stack([amp * c * blob for c in (0.6, 1.0, 1.3)]).astype(np.float32)
    return CCDData(data, unit=u.nanomaggy, wcs=make_tan_wcs((n, n), scale * u.arcsec, 30, 5),
                   meta={"BANDS": "g,r,z"})


def test_other_pixel_scale_is_reprojected(model):
    truth = _blob_at_scale(0.3, 14)                   # 4.2", like the model's 16 x 0.262"
    mask = np.zeros((14, 14), bool)
    mask[6:8, :] = True
    with pytest.warns(AstroSBGMInputWarning, match="reprojected"):
        out = inpaint(model, truth, mask, n_draws=2, seed=0)
    assert np.array_equal(out.data[:, ~mask], truth.data[:, ~mask])
    assert np.all(np.isfinite(out.data)) and out.flags.sum() == 3 * mask.sum()
    err = out.data[:, mask] - truth.data[:, mask]
    assert np.sqrt(np.mean(err ** 2)) < 0.35 * np.sqrt(np.mean(truth.data[:, mask] ** 2))


# ----------------------------------------------------------------------------- bad input
def test_errors(model, held_out):
    img = held_out[0]
    with pytest.raises(ValueError, match="mask has shape"):
        inpaint(model, img, np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="selects no pixel"):
        inpaint(model, img, np.zeros((SIZE, SIZE), bool))
    with pytest.raises(ValueError, match="covers every pixel"):
        inpaint(model, img, np.ones((SIZE, SIZE), bool))
    with pytest.raises(ValueError, match="no band in common"):
        inpaint(model, img.data[:2], _strip(), bands="iy")
    with pytest.raises(ValueError, match="unknown inpainting method"):
        inpaint(model, img, _strip(), method="magic")
    with pytest.raises(ValueError, match="n_draws"):
        inpaint(model, img, _strip(), n_draws=0)
    with pytest.raises(ValueError, match="t_start"):
        inpaint(model, img, _strip(), t_start=5000)
    with pytest.raises(NotFittedError, match="fit"):
        inpaint(GalaxyDiffusion(image_size=SIZE), img, _strip())
    with pytest.raises(FileNotFoundError):
        inpaint(model, "/nonexistent/file.fits", _strip())


# ----------------------------------------------------------------------------- CLI
def test_cli_inpaint(model, held_out, tmp_path):
    mdir = tmp_path / "model"
    model.save(mdir)
    src = write_image(held_out[2], tmp_path / "in.fits")
    mpath = tmp_path / "mask.fits"
    fits.PrimaryHDU(_strip().astype(np.uint8)).writeto(mpath)
    digest = _sha(src)
    parser = argparse.ArgumentParser(prog="astro-sbgm")
    add_inpaint_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["inpaint", str(src), "--mask", str(mpath), "-o",
                              str(tmp_path / "out.fits"), "--model", str(mdir), "--seed", "0",
                              "--n-draws", "2", "--device", "cpu"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert args.func(args) == 0
    assert _sha(src) == digest
    with fits.open(tmp_path / "out.fits") as hdul:
        assert hdul["FLAGS"].data.sum() == 3 * _strip().sum()
        assert "UNCERT" in hdul and hdul[0].header["INPAINT"] == "measured"   # the default
        assert np.array_equal(hdul[0].data[:, ~_strip()], held_out[2].data[:, ~_strip()])
    with pytest.raises(SystemExit):
        parser.parse_args(["inpaint", str(src), "--model", str(mdir)])   # no -o


def test_cli_inpaint_writes_the_draws(model, held_out, tmp_path):
    mdir = tmp_path / "model"
    model.save(mdir)
    src = write_image(held_out[2], tmp_path / "in.fits")
    mpath = tmp_path / "mask.fits"
    fits.PrimaryHDU(_strip().astype(np.uint8)).writeto(mpath)
    parser = argparse.ArgumentParser(prog="astro-sbgm")
    add_inpaint_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "out.fits"
    argv = ["inpaint", str(src), "--mask", str(mpath), "-o", str(out), "--model", str(mdir),
            "--seed", "0", "--n-draws", "3", "--save-draws", "--device", "cpu"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    with fits.open(out) as hdul:
        draws = np.stack([hdul["DRAW", k].data for k in (1, 2, 3)])
        assert [hdul["DRAW", k].header["DRAWIDX"] for k in (1, 2, 3)] == [0, 1, 2]
        assert hdul["DRAW", 1].header["BUNIT"] == "nanomaggy"
        mean, unc = hdul[0].data, hdul["UNCERT"].data
        assert "FLAGS" in hdul and hdul[0].header["DRAWMEAN"]
    known = ~_strip()
    assert np.all(draws[:, :, known] == held_out[2].data[:, known])
    np.testing.assert_allclose(mean, draws.mean(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(unc[:, _strip()], draws.std(axis=0, ddof=1)[:, _strip()],
                               rtol=1e-4)
    # an existing output is refused and left as it was
    digest = _sha(out)
    with pytest.raises(FileExistsError, match="overwrite"):
        args.func(parser.parse_args(argv))
    assert _sha(out) == digest


# ----------------------------------------------------------------------------- measured method
def test_known_pixel_gradient_step_is_the_pigdm_step():
    """With a linear denoiser x0_hat = c x the step is x0 + (s^2/a) c w (y - x0) at known pixels."""
    from astro_sbgm.diffusion import DiffusionSchedule
    from astro_sbgm.inpainting import KnownPixelGradient

    schedule = DiffusionSchedule.from_name("linear", timesteps=100)

    class Linear:
        nfe, clip_x0 = 0, False

        def __init__(self):
            self.schedule = schedule

        def __call__(self, x, t):
            self.nfe += 1
            return 0.5 * x, x

    den = Linear()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    y = torch.rand(2, 3, 8, 8)
    known = torch.zeros(1, 3, 8, 8)
    known[..., :4] = 1.0
    wrapper = KnownPixelGradient(den, y, known, sigma_y=0.1, scale=1.0)
    x0, eps = wrapper(x, 40.0)
    a, s = (float(v) for v in schedule.alpha_sigma(torch.tensor(40.0, dtype=torch.float64)))
    w = 1.0 / (s ** 2 + 0.1 ** 2)
    expect = 0.5 * x + known * (s ** 2 / a) * 0.5 * w * (y - 0.5 * x)
    torch.testing.assert_close(x0, expect)
    torch.testing.assert_close(eps, (x - a * x0) / s)
    assert torch.equal(x0[..., 4:], 0.5 * x[..., 4:])        # diagonal Jacobian: no crosstalk
    assert den.nfe == 2                                      # forward + backward


def test_measured_method_runs_on_the_engine(model, held_out):
    truth = held_out[0]
    mask = _strip()
    out, draws = inpaint(model, truth, mask, method="measured", n_draws=2, seed=0, steps=6,
                         return_draws=True)
    assert out.meta["INPAINT"] == "measured" and out.meta["DATAWGT"] == 4.0
    assert out.meta["NFE"] == 2 * 6                          # a forward and a backward per step
    assert np.array_equal(out.data[:, ~mask], truth.data[:, ~mask])
    assert np.all(np.isfinite(out.data)) and len(draws) == 2
    plain = inpaint(model, truth, mask, method="measured", seed=0, steps=6, data_weight=0)
    assert plain.meta["NFE"] == 6 and not np.array_equal(plain.data, draws[0].data)
    with pytest.raises(ValueError, match="data_weight"):
        inpaint(model, truth, mask, method="measured", data_weight=-1)


# ----------------------------------------------------------------------------- accuracy metric
def test_inpainting_accuracy_counts_bright_pixels_within_tolerance():
    from matplotlib.figure import Figure
    from scipy.special import erf

    from astro_sbgm.metrics._inpainting import inpainting_accuracy, plot_inpainting_accuracy

    truth = np.zeros((2, 3, 8, 8))
    truth[:, :, 2:6, 2:6] = 1.0                      # bright square, sky 0 elsewhere
    truth[:, 2] *= 0.02                              # band z: 0.02 = 2 sigma, not bright
    mask = np.zeros((8, 8), bool)
    mask[3, :] = True                                # 4 bright + 4 sky pixels per band
    filled = truth.copy()
    filled[:, 0, 3, 2:4] *= 1.05                     # g: 2 pixels off by 5% (within)
    filled[:, 1, 3, 2:4] *= 1.25                     # r: 2 pixels off by 25% (outside)
    acc = inpainting_accuracy(truth, filled, mask, background_rms=[0.01, 0.01, 0.01],
                              bands="grz")
    t = acc.table
    assert list(t["band"]) == ["g", "r", "z", "all"]
    assert list(t["n_occluded"]) == [16, 16, 16, 48]
    assert list(t["n_bright"]) == [8, 8, 0, 16]
    assert t["frac_within"][0] == 1.0 and t["frac_within"][1] == 0.5
    assert np.isnan(t["frac_within"][2]) and acc.fraction_within == 0.75
    assert float(acc) == 0.75
    assert t["median_abs_frac_error"][1] == pytest.approx(0.125)
    assert t["noise_ceiling"][0] == pytest.approx(erf(0.1 * 1.0 / (np.sqrt(2) * 0.01)))
    # sky pixels (truth 0) have no fractional error
    assert np.isnan(acc.fractional_error).sum() == 2 * 3 * 4
    fig = plot_inpainting_accuracy(acc)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert isinstance(acc.plot(bins=10), Figure)


def test_draw_and_mean_ceilings_are_what_perfect_fills_reach():
    """A perfect draw (clean + fresh sky noise) scores its draw ceiling, a perfect mean its own."""
    from astro_sbgm.metrics._inpainting import inpainting_accuracy, noise_ceiling

    rng = np.random.default_rng(3)
    rms = 0.01
    clean = rng.uniform(0.02, 0.4, size=(40, 3, 16, 16))     # 2-40 sigma: mostly bright
    truth = clean + rng.normal(0, rms, clean.shape)
    draw = clean + rng.normal(0, rms, clean.shape)
    mask = np.zeros((16, 16), bool)
    mask[4:12] = True
    acc_d = inpainting_accuracy(truth, draw, mask, rms, fill_noise=1.0)
    acc_m = inpainting_accuracy(truth, clean, mask, rms)
    d, m = acc_d.table[-1], acc_m.table[-1]
    assert d["ceiling"] == d["draw_ceiling"] < d["noise_ceiling"] - 0.05
    assert m["ceiling"] == m["noise_ceiling"] == d["noise_ceiling"]
    # 3 bands x 40 images x 128 pixels: binomial error ~0.005
    assert d["frac_within"] == pytest.approx(d["draw_ceiling"], abs=0.02)
    assert m["frac_within"] == pytest.approx(m["noise_ceiling"], abs=0.02)
    assert d["frac_of_ceiling"] == pytest.approx(1.0, abs=0.03)
    # the draw scored against the mean ceiling would look 10% worse than possible
    assert d["frac_within"] / d["noise_ceiling"] < 0.93
    assert d["chi2_per_pixel"] == pytest.approx(2.0, rel=0.05)
    assert m["chi2_per_pixel"] == pytest.approx(1.0, rel=0.05)
    # per-pixel bookkeeping for bootstrap intervals over images
    assert set(acc_d.extra) >= {"image", "within", "ceiling"}
    assert acc_d.extra["image"].max() == 39
    assert noise_ceiling(0.3, 0.01, fill_noise=np.sqrt(1 / 4)) == pytest.approx(
        __import__("scipy").special.erf(0.1 * 0.3 / (np.sqrt(2 * 1.25) * 0.01)))
    with pytest.raises(ValueError, match="fill_noise"):
        noise_ceiling(0.3, 0.01, fill_noise=-1)


def test_calibration_of_draws_detects_over_confidence():
    from astro_sbgm.metrics import inpainting_calibration

    rng = np.random.default_rng(5)
    n, K = 30, 8
    centre = rng.uniform(0, 1, size=(n, 2, 12, 12))
    spread = rng.uniform(0.05, 0.2, size=(n, 2, 12, 12))
    truth = centre + spread * rng.normal(size=centre.shape)
    draws = centre[:, None] + spread[:, None] * rng.normal(size=(n, K) + centre.shape[1:])
    mask = np.zeros((12, 12), bool)
    mask[:, 3:9] = True
    good = inpainting_calibration(truth, draws, mask, background_rms=0.1)
    row = good[-1]
    assert row["n_pixels"] == n * 2 * 72 and row["n_draws"] == K
    assert row["z_std"] == pytest.approx(1.0, abs=0.07)
    assert row["z_mad_std"] == pytest.approx(1.0, abs=0.07)
    assert row["coverage_68"] == pytest.approx(0.6827, abs=0.03)
    assert row["coverage_95"] == pytest.approx(0.9545, abs=0.02)
    # draws half as spread as the truth's distribution: over-confident
    narrow = centre[:, None] + 0.5 * (draws - centre[:, None])
    bad = inpainting_calibration(truth, narrow, mask)[-1]
    assert bad["z_std"] > 1.5 and bad["coverage_68"] < 0.5
    with pytest.raises(ValueError, match="at least 2 draws"):
        inpainting_calibration(truth, draws[:, :1], mask)
    with pytest.raises(ValueError, match="draws have shape"):
        inpainting_calibration(truth, draws[:5], mask)


def test_inpainting_accuracy_input_forms_and_errors(held_out):
    from astro_sbgm.metrics._inpainting import inpainting_accuracy

    mask = _strip()
    acc = inpainting_accuracy(held_out, held_out, mask, 0.01 * u.nanomaggy)
    assert acc.table["frac_within"][-1] == 1.0 and acc.table["rms_error_sigma"][-1] == 0
    assert acc.bands == ("g", "r", "z") and acc.n_images == 3
    with pytest.raises(ValueError, match="same shape"):
        inpainting_accuracy(held_out[0].data, held_out[0].data[:2], mask, 0.01)
    with pytest.raises(ValueError, match="mask has shape"):
        inpainting_accuracy(held_out[0].data, held_out[0].data, np.ones((3, 3)), 0.01)
    with pytest.raises(ValueError, match="selects no pixel"):
        inpainting_accuracy(held_out[0].data, held_out[0].data, np.zeros((SIZE, SIZE)), 0.01)
    with pytest.raises(ValueError, match="background_rms"):
        inpainting_accuracy(held_out[0].data, held_out[0].data, mask, [0.01, 0.02])
    with pytest.raises(ValueError, match="background_rms"):
        inpainting_accuracy(held_out[0].data, held_out[0].data, mask, 0.0)
