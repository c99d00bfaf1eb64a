"""Tests of the ``astro-sbgm`` command line as a whole: one meaning per option, old
spellings kept for one release, one progress switch, presets, file numbering, dispatch."""

import argparse
import warnings

import numpy as np
import pytest

from astro_sbgm import PRESETS, cli
from astro_sbgm._cli_common import DeprecatedOption, numbered_name
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.exceptions import AstroSBGMDeprecationWarning, AstroSBGMWarning
from astro_sbgm.io import write_image

#: Sub-commands that run for long enough to show progress bars.
LONG_COMMANDS = ("quickstart", "train", "sample", "measure", "score", "inpaint", "transfer")

#: Enough positional arguments and required options to parse each sub-command.
MINIMAL = {
    "quickstart": [],
    "train": ["--mock", "4", "-o", "out"],
    "sample": ["--pretrained", "-o", "out"],
    "measure": ["a.fits", "-o", "cat.ecsv"],
    "sgd": ["a.ecsv", "b.ecsv"],
    "score": ["a.fits", "--pretrained", "-o", "s.ecsv"],
    "inpaint": ["a.fits", "--pretrained", "-o", "b.fits"],
    "transfer": ["a.png", "--pretrained", "-o", "b.fits"],
}


def _subparsers(parser):
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return actions[0].choices


def _parse(argv):
    """Parse without letting a warning pass silently (the caller expects none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return cli.build_parser().parse_args(argv)


def test_every_command_is_covered_and_dispatches_through_func():
    commands = _subparsers(cli.build_parser())
    assert set(commands) >= set(MINIMAL)
    for name, argv in MINIMAL.items():
        args = _parse([name, *argv])
        assert callable(args.func), name
        assert args.func.__name__ != "_run"


def test_each_option_has_one_meaning_across_commands():
    """The same spelling stores into the same place with the same type everywhere."""
    seen = {}
    for name, sub in _subparsers(cli.build_parser()).items():
        for action in sub._actions:
            if isinstance(action, DeprecatedOption) or not action.option_strings:
                continue
            for flag in action.option_strings:
                key = (action.dest, action.type, action.nargs, type(action).__name__)
                seen.setdefault(flag, {}).setdefault(key, []).append(name)
    conflicts = {flag: uses for flag, uses in seen.items() if len(uses) > 1}
    assert not conflicts, conflicts
    # the options the old CLI gave several meanings
    assert set(seen["--seed"]) == {("seed", int, None, "_StoreAction")}
    assert set(seen["--steps"]) == {("steps", int, None, "_StoreAction")}
    assert set(seen["--quiet"]) == {("quiet", None, 0, "_StoreTrueAction")}
    assert set(seen["-n"]) == {("n", int, None, "_StoreAction")}


@pytest.mark.parametrize("command", LONG_COMMANDS)
def test_one_switch_silences_progress_everywhere(command):
    assert _parse([command, *MINIMAL[command]]).quiet is False     # bars on by default
    assert _parse([command, *MINIMAL[command], "--quiet"]).quiet is True
    assert _parse([command, *MINIMAL[command], "--no-progress"]).quiet is True


@pytest.mark.parametrize("command, old, new, dest, value", [
    ("sample", ["--sample-seed", "7"], ["--seed", "7"], "seed", 7),
    ("measure", ["--bands", "grz"], ["--input-bands", "grz"], "input_bands", "grz"),
    ("score", ["--bands", "gr"], ["--input-bands", "gr"], "input_bands", "gr"),
    ("inpaint", ["--bands", "grz"], ["--input-bands", "grz"], "input_bands", "grz"),
    ("transfer", ["--bands", "grz"], ["--input-bands", "grz"], "input_bands", "grz"),
])
def test_renamed_option_old_spelling_works_and_warns(command, old, new, dest, value):
    args = _parse([command, *MINIMAL[command], *new])
    assert getattr(args, dest) == value
    parser = cli.build_parser()
    with pytest.warns(AstroSBGMDeprecationWarning, match=f"{old[0]} is deprecated.*{new[0]}"):
        args_old = parser.parse_args([command, *MINIMAL[command], *old])
    assert getattr(args_old, dest) == value
    assert vars(args_old) == vars(args)
    assert issubclass(AstroSBGMDeprecationWarning, AstroSBGMWarning)


@pytest.mark.parametrize("command", ["inpaint", "transfer"])
def test_old_progress_flag_is_accepted_and_warns(command):
    parser = cli.build_parser()
    with pytest.warns(AstroSBGMDeprecationWarning, match="--progress is deprecated.*--quiet"):
        args = parser.parse_args([command, *MINIMAL[command], "--progress"])
    assert args.quiet is False


def test_old_spellings_are_hidden_from_help(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["sample", "--help"])
    text = capsys.readouterr().out
    assert "--seed" in text and "--sample-seed" not in text


def test_train_bands_is_the_model_and_input_bands_the_files():
    args = _parse(["train", *MINIMAL["train"], "--bands", "gr", "--input-bands", "grz"])
    assert args.bands == "gr" and args.input_bands == "grz"
    assert cli._model_params(args)["bands"] == "gr"


def test_preset_applies_the_options_given_and_keeps_the_rest():
    args = _parse(["train", *MINIMAL["train"], "--preset", "paper", "--dim", "16",
                   "--lr", "1e-3", "--batch-size", "8", "--objective", "v",
                   "--dim-mults", "1,2", "--size", "32"])
    params = cli._model_params(args)
    assert params["dim"] == 16 and params["learning_rate"] == 1e-3
    assert params["batch_size"] == 8 and params["objective"] == "v"
    assert params["dim_mults"] == (1, 2) and params["image_size"] == 32
    # what was not given comes from the preset, not from the command's defaults
    for key in ("schedule", "loss", "flux_upper", "attention_levels", "continuous_time"):
        assert params[key] == PRESETS["paper"][key]
    plain = cli._model_params(_parse(["train", *MINIMAL["train"], "--preset", "paper"]))
    assert plain["dim"] == PRESETS["paper"]["dim"] == 64
    assert plain["batch_size"] == 56 and plain["objective"] == "eps"
    # without a preset: the command's defaults
    none = cli._model_params(_parse(["train", *MINIMAL["train"]]))
    assert {k: none[k] for k in cli.MODEL_DEFAULTS} == cli.MODEL_DEFAULTS
    # the quickstart's model is a preset too, with its own image size unless --size
    quick = cli._model_params(_parse(["train", *MINIMAL["train"], "--preset", "quickstart"]))
    assert quick["image_size"] == 32 and quick["dim_mults"] == (1, 2, 2)
    assert cli.QUICKSTART["model"] is PRESETS["quickstart"]


def test_bad_dim_mults_is_one_line_in_cli_words(tmp_path, capsys):
    code = cli.main(["train", "--mock", "2", "-o", str(tmp_path / "m"), "--dim-mults", "1,x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("astro-sbgm train: error: --dim-mults 1,x")


def test_one_file_numbering_scheme(tmp_path):
    assert numbered_name("sample", 3) == "sample_000003.fits"
    assert cli._sample_name(123456) == "sample_123456.fits"
    images = make_mock_legacy_survey(2, size=16, seed=0)
    paths = cli._write_all(images, tmp_path / "real", "real")
    assert [p.name for p in paths] == ["real_000000.fits", "real_000001.fits"]


def test_main_prints_one_warning_line_for_an_old_spelling(tmp_path, capsys):
    """End to end: the old spelling runs the command, with one line on stderr."""
    images = make_mock_legacy_survey(3, size=32, seed=2)
    for i, img in enumerate(images):
        write_image(img, tmp_path / numbered_name("g", i))
    new, old = tmp_path / "new.ecsv", tmp_path / "old.ecsv"
    assert cli.main(["measure", str(tmp_path / "g_*.fits"), "-o", str(new),
                     "--input-bands", "grz", "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert cli.main(["measure", str(tmp_path / "g_*.fits"), "-o", str(old),
                     "--bands", "grz", "--quiet"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["astro-sbgm measure: warning: --bands is deprecated and goes in the next "
                   "release; use --input-bands (--bands names the bands of a new model, in "
                   "train only)"]
    from astropy.table import QTable
    a, b = QTable.read(new), QTable.read(old)
    assert len(a) == 3 and np.array_equal(np.asarray(a["mag_r"]), np.asarray(b["mag_r"]))


def test_measure_progress_gives_the_same_catalogue(tmp_path):
    from astro_sbgm.metrics._cli import measure_command

    images = make_mock_legacy_survey(5, size=32, seed=4)
    for i, img in enumerate(images):
        write_image(img, tmp_path / numbered_name("g", i))
    whole = measure_command(str(tmp_path), str(tmp_path / "a.ecsv"))
    chunked = measure_command(str(tmp_path / "g_*.fits"), str(tmp_path / "b.ecsv"),
                              progress=True, chunk=2)
    assert len(whole) == len(chunked) == 5
    for name in ("flux_g", "mag_r", "r_half", "g_r"):
        if name in whole.colnames:
            np.testing.assert_array_equal(np.asarray(whole[name]), np.asarray(chunked[name]))
