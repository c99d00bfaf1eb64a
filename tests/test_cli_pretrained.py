"""The command line with the bundled model: quickstart, sample and inpaint --pretrained."""

import json

import numpy as np
import pytest
from astropy.io import fits

from astro_sbgm import pretrained
from astro_sbgm.cli import main, run_quickstart


def test_quickstart_uses_the_bundled_model(tmp_path):
    summary = run_quickstart(tmp_path / "qs", n=4, progress=False, echo=lambda *a: None)
    assert "bundled model" in summary["model"] and summary["train_steps"] > 0
    assert len(list((tmp_path / "qs" / "samples").glob("*.fits"))) == 4
    for key in ("montage", "comparison", "catalogue"):
        assert (tmp_path / "qs").joinpath(summary[key].split("/")[-1]).exists()
    assert summary["trail"]["n_filled"] > 0
    assert (tmp_path / "qs" / "trail.png").exists()
    saved = json.loads((tmp_path / "qs" / "summary.json").read_text())
    assert saved["sgd_real_vs_real"] > 0 and np.isfinite(saved["sgd"])
    # the catalogue is the measured one, one row per galaxy, with units
    from astropy.table import QTable
    cat = QTable.read(tmp_path / "qs" / "samples.ecsv")
    assert len(cat) == 4 and str(cat["mag_r"].unit) == "mag"


def test_sample_and_inpaint_take_pretrained(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", "--pretrained", "-n", "2", "--steps", "3", "-o", str(out),
                 "--quiet"]) == 0
    files = sorted(out.glob("sample_*.fits"))
    assert len(files) == 2
    assert main(["sample", "--pretrained", "no-such-model", "-n", "1", "-o",
                 str(tmp_path / "t")]) == 2
    assert "no-such-model" in capsys.readouterr().err
    trail = tmp_path / "trail.fits"
    data = fits.getdata(files[0]).astype(np.float32)
    mask = np.zeros(data.shape, np.uint8)
    mask[:, 30:33, :] = 1
    fits.writeto(trail, data)
    fits.writeto(tmp_path / "mask.fits", mask)
    assert main(["inpaint", str(trail), "--mask", str(tmp_path / "mask.fits"),
                 "--pretrained", pretrained.DEFAULT_MODEL, "--steps", "4", "--bands", "grz",
                 "-o", str(tmp_path / "fixed.fits")]) == 0
    assert (tmp_path / "fixed.fits").exists()
    with pytest.raises(SystemExit):     # --model and --pretrained are one or the other
        main(["sample", "--pretrained", "--model", "x", "-o", str(tmp_path / "u")])
