"""Tests of W1, Cohen's d and the Synthetic Galaxy Distance."""

import numpy as np
import pytest
import astropy.units as u
from astropy.table import QTable, Table
from astropy.utils.masked import Masked

from astro_sbgm.metrics import (SGD_COLUMNS, baseline_sgd, cohens_d, synthetic_galaxy_distance,
                                wasserstein_1)
from astro_sbgm.metrics import distances


def catalogue(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    mags = {b: rng.normal(18 + i + shift, 1.0, n) for i, b in enumerate("grz")}
    t = QTable()
    for b in "grz":
        t[f"mag_{b}"] = Masked(mags[b] * u.mag, mask=np.zeros(n, bool))
    t["g_r"] = t["mag_g"] - t["mag_r"]
    t["r_z"] = t["mag_r"] - t["mag_z"]
    t["r_half"] = rng.lognormal(0, 0.3, n) * u.arcsec
    return t


def test_wasserstein_hand_values():
    assert wasserstein_1([0.0, 1.0, 3.0], [5.0, 6.0, 8.0]) == pytest.approx(5.0)
    # CDFs differ by 1/3 on [0, 1]
    assert wasserstein_1([0.0, 0.0, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(1 / 3)
    # NaN and masked entries are dropped
    assert wasserstein_1(np.ma.array([0.0, 9.0], mask=[False, True]),
                         [1.0, np.nan]) == pytest.approx(1.0)


def test_wasserstein_units():
    w = wasserstein_1([60.0, 120.0] * u.arcsec, [1.0, 2.0] * u.arcmin)
    assert w.unit == u.arcsec and w.value == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(u.UnitConversionError, match="do not convert"):
        wasserstein_1([1.0] * u.arcsec, [1.0] * u.pix)
    with pytest.raises(ValueError, match="finite"):
        wasserstein_1([np.nan], [1.0])


def test_cohens_d_hand_value():
    a, b = [1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]
    # both sample variances are 5/3
    assert cohens_d(a, b) == pytest.approx(2.0 / np.sqrt(5.0 / 3.0))
    # pooled sd is the root mean of the two variances, not of the combined sample
    c = [0.0, 2.0, 4.0, 6.0]  # variance 20/3
    assert cohens_d(a, c) == pytest.approx(0.5 / np.sqrt((5.0 / 3.0 + 20.0 / 3.0) / 2.0))
    assert cohens_d([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert cohens_d([1.0, 1.0], [2.0, 2.0]) == np.inf


def test_sgd_self_is_zero_and_symmetric():
    a, b = catalogue(300, 0), catalogue(250, 1, shift=0.3)
    same = synthetic_galaxy_distance(a, a)
    assert same.total == 0.0
    assert all(float(u.Quantity(t).value) == 0.0 for t in same.terms.values())
    ab = synthetic_galaxy_distance(a, b)
    ba = synthetic_galaxy_distance(b, a)
    assert ab.total == pytest.approx(ba.total, rel=1e-12)
    assert ab.total > 0.5  # the 0.3 mag shift in three bands
    # the total is the sum of the six W1 terms
    expected = sum(float(u.Quantity(wasserstein_1(a[c], b[c])).value)
                   for c in SGD_COLUMNS.values())
    assert ab.total == pytest.approx(expected, rel=1e-12)
    assert ab.terms["R_e"].unit == u.arcsec
    assert ab.terms["g"].unit == u.mag
    assert ab.cohens_d["g"] == pytest.approx(cohens_d(a["mag_g"], b["mag_g"]))
    assert (ab.n_used_a, ab.n_used_b, ab.n_dropped_a, ab.n_dropped_b) == (300, 250, 0, 0)


def test_sgd_drops_masked_rows():
    a, b = catalogue(100, 0), catalogue(100, 1)
    a["mag_g"].mask[:7] = True
    b["r_half"][:3] = np.nan * u.arcsec
    res = synthetic_galaxy_distance(a, b)
    assert (res.n_used_a, res.n_dropped_a, res.n_used_b, res.n_dropped_b) == (93, 7, 97, 3)
    ref = synthetic_galaxy_distance(a[7:], b[3:])
    assert res.total == pytest.approx(ref.total, rel=1e-12)


def test_sgd_bootstrap_and_table():
    a, b = catalogue(120, 0), catalogue(120, 1, shift=0.2)
    res = synthetic_galaxy_distance(a, b, bootstrap=20, seed=3)
    again = synthetic_galaxy_distance(a, b, bootstrap=20, seed=3)
    assert res.bootstrap_std > 0
    assert res.bootstrap_std == again.bootstrap_std
    assert res.bootstrap_totals.shape == (20,)
    table = res.to_table()
    assert list(table["property"]) == list(SGD_COLUMNS) + ["SGD"]
    assert table["W1"][-1] == pytest.approx(res.total)
    text = str(res)
    for label in ("g-r", "R_e", "SGD", "bootstrap", "dropped"):
        assert label in text


def test_baseline_sgd_uses_all_rows():
    a = catalogue(101, 5)
    res = baseline_sgd(a, seed=1)
    assert res.n_used_a + res.n_used_b == 101
    assert res.total > 0
    assert baseline_sgd(a, seed=1).total == res.total
    with pytest.raises(ValueError, match="at least 2 rows"):
        baseline_sgd(a[:1])


def test_baseline_sgd_n_draws_disjoint_samples_of_that_size(monkeypatch):
    a = catalogue(101, 5)
    a["id"] = np.arange(101)
    a["mag_g"].mask[:6] = True  # unusable rows are never drawn
    seen = []
    real = distances.synthetic_galaxy_distance

    def spy(cat_a, cat_b, **kwargs):
        seen.append((list(cat_a["id"]), list(cat_b["id"])))
        return real(cat_a, cat_b, **kwargs)

    monkeypatch.setattr(distances, "synthetic_galaxy_distance", spy)
    for n in (1, 10, 47):  # 95 usable rows: at most 47 per side
        res = baseline_sgd(a, seed=n, n=n)
        ids_a, ids_b = seen[-1]
        assert len(ids_a) == len(ids_b) == n
        assert not set(ids_a) & set(ids_b)  # never the same galaxy on both sides
        assert min(ids_a + ids_b) >= 6
        assert (res.n_used_a, res.n_used_b, res.n_dropped_a, res.n_dropped_b) == (n, n, 0, 0)
    assert baseline_sgd(a, seed=3, n=20).total == baseline_sgd(a, seed=3, n=20).total


def test_baseline_sgd_n_matches_independent_samples_of_that_size():
    # the halves of a big catalogue (500 vs 500) understate the W1 floor of a
    # model scored at 50 vs 50; the baseline at n=50 has the mean of the SGD
    # of two independent 50-galaxy samples of the same population
    big = catalogue(1000, 8)
    halves = np.mean([baseline_sgd(big, seed=s).total for s in range(10)])
    at_n = np.mean([baseline_sgd(big, seed=s, n=50).total for s in range(40)])
    pairs = np.mean([synthetic_galaxy_distance(catalogue(50, 100 + s),
                                               catalogue(50, 200 + s)).total
                     for s in range(40)])
    assert at_n > 2 * halves
    assert at_n == pytest.approx(pairs, rel=0.15)


@pytest.mark.parametrize("n, match", [(51, r"n <= 50"), (0, "positive integer"),
                                      (2.5, "positive integer"), (True, "positive integer")])
def test_baseline_sgd_refuses_an_n_the_data_cannot_give(n, match):
    with pytest.raises(ValueError, match=match):
        baseline_sgd(catalogue(101, 5), n=n)


def test_baseline_sgd_n_counts_usable_rows():
    a = catalogue(20, 5)
    a["r_half"][:4] = np.nan * u.arcsec
    assert baseline_sgd(a, seed=0, n=8).n_used_a == 8
    with pytest.raises(ValueError, match=r"n=9\).*16 usable.*4 of its 20 rows.*n <= 8"):
        baseline_sgd(a, n=9)


def test_sgd_refuses_radius_in_pixels_without_pixel_scale():
    a, b = catalogue(40, 0), catalogue(40, 1)
    scale = 0.262
    a_pix, b_pix = a.copy(), b.copy()
    a_pix["r_half"] = a["r_half"].value / scale * u.pix
    b_pix["r_half"] = b["r_half"].value / scale * u.pix
    # both sides in pixels used to be summed with magnitudes silently
    with pytest.raises(u.UnitsError, match=r"'r_half' of A is in pixels.*pixel_scale="):
        synthetic_galaxy_distance(a_pix, b_pix)
    ref = synthetic_galaxy_distance(a, b)
    for kwargs in (dict(pixel_scale=scale), dict(pixel_scale=scale * u.arcsec / u.pix)):
        got = synthetic_galaxy_distance(a_pix, b_pix, **kwargs)
        assert got.total == pytest.approx(ref.total, rel=1e-12)
        assert got.terms["R_e"].unit == u.arcsec
    # one side in pixels, the other in arcsec: converted too
    mixed = synthetic_galaxy_distance(a, b_pix, pixel_scale=scale)
    assert mixed.total == pytest.approx(ref.total, rel=1e-12)
    with pytest.raises(u.UnitsError, match="'r_half' of B is in pixels"):
        synthetic_galaxy_distance(a, b_pix)
    # the baseline passes it on
    assert baseline_sgd(a_pix, seed=0, pixel_scale=scale).total == pytest.approx(
        baseline_sgd(a, seed=0).total, rel=1e-12)


def test_sgd_refuses_radius_without_unit():
    a, b = catalogue(40, 0), catalogue(40, 1)
    a_none, b_none = Table(a), Table(b)
    a_none["r_half"] = a["r_half"].value
    b_none["r_half"] = b["r_half"].value
    with pytest.raises(u.UnitsError, match=r"radius column 'r_half' of A has no unit.*"
                                           r"unit = 'arcsec'.*pixel_scale="):
        synthetic_galaxy_distance(a_none, b_none)
    # a pixel scale does not guess that unit-less numbers are pixels
    with pytest.raises(u.UnitsError, match="has no unit"):
        synthetic_galaxy_distance(a_none, b_none, pixel_scale=0.262)
    # a radius under another label is found by its column name, and an
    # R_e-labelled column by its label
    with pytest.raises(u.UnitsError, match="'r_half'"):
        synthetic_galaxy_distance(a_none, b_none, columns={"size": "r_half"})
    with pytest.raises(u.UnitsError, match="'mag_g'"):
        synthetic_galaxy_distance(a_none, b_none, columns={"R_e": "mag_g"})
    # a radius must be an angle, not just any unit
    a_kpc, b_kpc = a.copy(), b.copy()
    a_kpc["r_half"] = a["r_half"].value * u.kpc
    b_kpc["r_half"] = b["r_half"].value * u.kpc
    with pytest.raises(u.UnitsError, match="unit kpc"):
        synthetic_galaxy_distance(a_kpc, b_kpc)
    # other unit-less properties are summed as before
    assert synthetic_galaxy_distance(a_none, b_none, columns=["g_r"]).total > 0


@pytest.mark.parametrize("scale", [0, -0.2, [0.2, 0.3], "big", 1 * u.kg])
def test_sgd_bad_pixel_scale(scale):
    a = catalogue(10, 0)
    with pytest.raises(ValueError, match="pixel_scale"):
        synthetic_galaxy_distance(a, a, pixel_scale=scale)


def test_sgd_from_files_with_other_column_names(tmp_path):
    a, b = catalogue(50, 0), catalogue(60, 1)
    plain = Table()
    for label, col in SGD_COLUMNS.items():
        plain[f"my_{label}"] = np.asarray(b[col].unmasked.value if hasattr(b[col], "unmasked")
                                          else b[col].value)
        plain[f"my_{label}"].unit = b[col].unit
    a.write(tmp_path / "a.ecsv")
    plain.write(tmp_path / "b.fits")
    res = synthetic_galaxy_distance(tmp_path / "a.ecsv", str(tmp_path / "b.fits"),
                                    columns_b={k: f"my_{k}" for k in SGD_COLUMNS})
    assert res.total == pytest.approx(synthetic_galaxy_distance(a, b).total, rel=1e-12)


def test_sgd_custom_columns():
    a = QTable({"x": [1.0, 2.0, 3.0], "y": [0.0, 0.0, 0.0]})
    b = QTable({"x": [2.0, 3.0, 4.0], "y": [1.0, 1.0, 1.0]})
    res = synthetic_galaxy_distance(a, b, columns={"X": "x", "Y": "y"})
    assert res.total == pytest.approx(2.0)
    assert res.terms == {"X": 1.0, "Y": 1.0}


def test_sgd_bad_input():
    a, b = catalogue(20, 0), catalogue(20, 1)
    with pytest.raises(KeyError, match="mag_z"):
        synthetic_galaxy_distance(a, b[[c for c in b.colnames if c != "mag_z"]])
    with pytest.raises(ValueError, match="empty"):
        synthetic_galaxy_distance(a, b[:0])
    b_pix = b.copy()
    b_pix["r_half"] = b["r_half"].value * u.pix
    with pytest.raises(u.UnitConversionError, match="pixel scale"):
        synthetic_galaxy_distance(a, b_pix)
    b_none = Table(b)
    b_none["r_half"] = b["r_half"].value
    with pytest.raises(u.UnitsError, match="unit"):
        synthetic_galaxy_distance(a, b_none)
    all_bad = b.copy()
    all_bad["mag_g"].mask[:] = True
    with pytest.raises(ValueError, match="no usable row"):
        synthetic_galaxy_distance(a, all_bad)
    with pytest.raises(FileNotFoundError):
        synthetic_galaxy_distance("no/such/file.ecsv", b)
    with pytest.raises(ValueError, match="bootstrap"):
        synthetic_galaxy_distance(a, b, bootstrap=-1)
    # arcmin converts to arcsec silently and correctly
    b_arcmin = b.copy()
    b_arcmin["r_half"] = b["r_half"].to(u.arcmin)
    assert synthetic_galaxy_distance(a, b_arcmin).total == pytest.approx(
        synthetic_galaxy_distance(a, b).total, rel=1e-12)
