"""Tests of W1, Cohen's d and the Synthetic Galaxy Distance."""

import numpy as np
import pytest
import astropy.units as u
from astropy.table import QTable, Table
from astropy.utils.masked import Masked

from astro_sbgm.metrics import (SGD_COLUMNS, baseline_sgd, cohens_d, synthetic_galaxy_distance,
                                wasserstein_1)


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
