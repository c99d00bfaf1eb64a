"""Tests of fault handling: signals during training (preemption, Ctrl-C), damaged
checkpoints and model folders, one writer per folder, failed writes, the CLI's
error policy."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from astro_sbgm import GalaxyDiffusion, _serialization
from astro_sbgm.datasets import make_trivial_dataset
from astro_sbgm.training import (AstroSBGMCheckpointWarning, TrainingInterrupted,
                                 latest_checkpoint, verify_checkpoint)

TINY = dict(image_size=16, bands="grz", dim=8, dim_mults=(1, 2),
            attention_levels=(False, False), batch_size=4, timesteps=100, device="cpu")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_signal_finishes_the_step_checkpoints_and_keeps_the_model_usable(
        tmp_path, monkeypatch, signum):
    from astro_sbgm import training

    orig = training.Trainer.train_step

    def step(self):
        out = orig(self)
        if self.step == 3:
            signal.raise_signal(signum)    # arrives in the middle of the run
        return out

    monkeypatch.setattr(training.Trainer, "train_step", step)
    before = {s: signal.getsignal(s) for s in training.STOP_SIGNALS}
    model = GalaxyDiffusion(**TINY)
    with pytest.raises(TrainingInterrupted) as info:
        model.fit(make_trivial_dataset(8, size=16, seed=1), steps=50,
                  checkpoint_dir=tmp_path / "ck", checkpoint_every=100, progress=False)
    stop = info.value
    assert isinstance(stop, KeyboardInterrupt)
    assert stop.step == 3 and model.n_steps_ == 3 and len(model.history_) == 3
    assert stop.exit_code == 128 + signum
    assert "interrupted at step 3" in str(stop) and "--resume" in str(stop)
    record = latest_checkpoint(tmp_path / "ck")
    assert record == stop.checkpoint and json.loads(record.read_text())["step"] == 3
    assert len(model.sample(2, steps=3, seed=0, progress=False)) == 2   # still usable
    # the handlers are restored after the run
    assert {s: signal.getsignal(s) for s in training.STOP_SIGNALS} == before


def test_sigterm_to_the_cli_saves_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "astro_sbgm.cli", "train", "--mock", "16", "--size", "16",
           "--dim", "8", "--dim-mults", "1,2", "--batch-size", "4", "--train-steps", "100000",
           "--checkpoint-every", "100000", "--device", "cpu", "-o", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    # wait until training runs (the checkpoint folder's marker is written before step 1)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "astro_sbgm-checkpoints.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted at step" in lines[0] and "--resume" in lines[0]
    assert "Traceback" not in stderr
    step = int(lines[0].split("interrupted at step ")[1].split(";")[0])
    assert step >= 1
    record = latest_checkpoint(out / "checkpoints")
    assert json.loads(record.read_text())["step"] == step
    saved = GalaxyDiffusion.load(out / "model", device="cpu")
    assert saved.n_steps_ == step
    # the folders' locks were released with a clean exit (lock files removed)
    assert not list(out.rglob(".astro_sbgm.lock"))
    # --resume continues from that step to the new total
    cmd2 = [c if c != "100000" else str(step + 2) for c in cmd[:cmd.index("--checkpoint-every")]]
    cmd2 += ["--checkpoint-every", "1000", "--device", "cpu", "-o", str(out), "--quiet",
             "--resume"]
    done = subprocess.run(cmd2, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert GalaxyDiffusion.load(out / "model", device="cpu").n_steps_ == step + 2


# --------------------------------------------------------------------------- damaged checkpoints
def _fit_with_checkpoints(folder, steps=4, every=2, **kwargs):
    model = GalaxyDiffusion(**TINY)
    model.fit(make_trivial_dataset(8, size=16, seed=1), steps=steps, checkpoint_dir=folder,
              checkpoint_every=every, progress=False, **kwargs)
    return model


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A checkpoint folder with steps 2 and 4 (copied per test)."""
    folder = tmp_path_factory.mktemp("ck") / "ck"
    _fit_with_checkpoints(folder)
    return folder


@pytest.fixture
def ckdir(checkpoints, tmp_path):
    dest = tmp_path / "ck"
    shutil.copytree(checkpoints, dest)
    return dest


def test_checkpoint_record_stores_size_and_sha256_of_its_tensors(ckdir):
    record = json.loads((ckdir / "checkpoint-000000004.json").read_text())
    tensors = ckdir / "checkpoint-000000004.safetensors"
    assert record["tensors"] == {"file": tensors.name,
                                 "sha256": hashlib.sha256(tensors.read_bytes()).hexdigest(),
                                 "size": tensors.stat().st_size}
    assert verify_checkpoint(ckdir / "checkpoint-000000004.json")["step"] == 4


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF          # inside the tensor data: the header still reads
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte], ids=["truncated", "bit-flip"])
def test_resume_skips_a_damaged_checkpoint_with_a_warning_and_keeps_it(ckdir, damage):
    newest = ckdir / "checkpoint-000000004.safetensors"
    damage(newest)
    before = _snapshot(ckdir)
    with pytest.warns(AstroSBGMCheckpointWarning, match=re.escape(str(newest))) as record:
        assert latest_checkpoint(ckdir).name == "checkpoint-000000002.json"
    assert issubclass(record[0].category, AstropyUserWarning)
    assert "damaged" in str(record[0].message)
    assert _snapshot(ckdir) == before            # nothing deleted or repaired
    with pytest.raises(ValueError, match=re.escape(str(newest))):
        verify_checkpoint(ckdir / "checkpoint-000000004.json")


def test_fit_resume_falls_back_to_the_newest_intact_checkpoint(ckdir):
    _truncate(ckdir / "checkpoint-000000004.safetensors")
    damaged = (ckdir / "checkpoint-000000004.safetensors").read_bytes()
    with pytest.warns(AstroSBGMCheckpointWarning, match="checkpoint-000000004"):
        model = _fit_with_checkpoints(ckdir, steps=6, every=2, resume=True)
    assert model.n_steps_ == 6
    # the run went on from step 2 and wrote steps 4 and 6 whole; the damaged files are kept
    assert json.loads((ckdir / "checkpoint-000000006.json").read_text())["step"] == 6
    assert verify_checkpoint(ckdir / "checkpoint-000000004.json")["step"] == 4
    assert (ckdir / "checkpoint-000000004.safetensors.damaged").read_bytes() == damaged
    assert (ckdir / "checkpoint-000000004.json.damaged").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(ckdir).name == "checkpoint-000000006.json"


def test_no_intact_checkpoint_is_one_error_naming_the_folder(ckdir):
    for p in ckdir.glob("*.safetensors"):
        _truncate(p)
    before = _snapshot(ckdir)
    with pytest.warns(AstroSBGMCheckpointWarning):
        with pytest.raises(ValueError, match=r"no intact checkpoint in .*ck.*damaged"):
            latest_checkpoint(ckdir)
    with pytest.warns(AstroSBGMCheckpointWarning):
        with pytest.raises(ValueError, match=re.escape(repr(str(ckdir)))):
            _fit_with_checkpoints(ckdir, steps=6, resume=True)
    assert _snapshot(ckdir) == before


def test_damaged_record_is_skipped(ckdir):
    (ckdir / "checkpoint-000000004.json").write_text('{"format": "astro_sbgm checkp')
    with pytest.warns(AstroSBGMCheckpointWarning, match="checkpoint-000000004.json"):
        assert latest_checkpoint(ckdir).name == "checkpoint-000000002.json"


def test_old_records_without_a_hash_still_load(ckdir):
    for rec in ckdir.glob("checkpoint-*.json"):
        record = json.loads(rec.read_text())
        del record["tensors"]            # as written by astro_sbgm before checksums
        rec.write_text(json.dumps(record))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(ckdir).name == "checkpoint-000000004.json"
    # a truncated file of an old record is still caught (its header does not cover it)
    _truncate(ckdir / "checkpoint-000000004.safetensors")
    with pytest.warns(AstroSBGMCheckpointWarning, match="not a readable safetensors"):
        assert latest_checkpoint(ckdir).name == "checkpoint-000000002.json"
    with pytest.warns(AstroSBGMCheckpointWarning):
        model = _fit_with_checkpoints(ckdir, steps=3, every=100, resume=True)
    assert model.n_steps_ == 3


# --------------------------------------------------------------------------- damaged model folders
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "model"
    model = GalaxyDiffusion(**TINY)
    model.fit(make_trivial_dataset(8, size=16, seed=1), steps=2, progress=False)
    model.save(folder)
    return folder


@pytest.fixture
def model_dir(saved_model, tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(saved_model, dest)
    return dest


def _no_weights_read(monkeypatch):
    """Make reading the tensors (not the header) fail the test."""
    from astro_sbgm import estimator

    def forbidden(*args, **kwargs):
        raise AssertionError("the weights were read before the header was checked")

    monkeypatch.setattr(estimator, "load_file", forbidden)


def test_truncated_model_file_is_one_clean_error(model_dir, monkeypatch):
    _truncate(model_dir / "model.safetensors")
    _no_weights_read(monkeypatch)
    with pytest.raises(ValueError, match=r"model\.safetensors.* is damaged or truncated"):
        GalaxyDiffusion.load(model_dir, device="cpu")
    (model_dir / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="damaged or truncated"):
        GalaxyDiffusion.load(model_dir, device="cpu")


def test_model_config_that_disagrees_with_the_weights_names_the_tensor(model_dir, monkeypatch):
    config = json.loads((model_dir / "config.json").read_text())
    config["unet"]["dim"] = 16            # the weights are of dim 8
    config["params"]["dim"] = 16
    (model_dir / "config.json").write_text(json.dumps(config))
    _no_weights_read(monkeypatch)
    with pytest.raises(ValueError) as info:
        GalaxyDiffusion.load(model_dir, device="cpu")
    msg = str(info.value)
    assert "model.safetensors" in msg and "config.json" in msg
    first = re.search(r"tensor '([^']+)'", msg).group(1)
    assert first.startswith("ema.") and "has shape" in msg and "\n" not in msg


def test_missing_and_extra_tensors_are_named(model_dir):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(model_dir / "model.safetensors"))
    key = sorted(k for k in tensors if k.startswith("ema."))[3]
    save_file({k: v for k, v in tensors.items() if k != key}, str(model_dir / "model.safetensors"))
    with pytest.raises(ValueError, match=f"lacks tensor '{re.escape(key)}'"):
        GalaxyDiffusion.load(model_dir, device="cpu")
    save_file({**tensors, "ema.extra.weight": tensors[key].clone()},
              str(model_dir / "model.safetensors"))
    with pytest.raises(ValueError, match="holds tensor 'ema.extra.weight'"):
        GalaxyDiffusion.load(model_dir, device="cpu")


def test_model_with_only_ema_float16_tensors_loads(model_dir):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(model_dir / "model.safetensors"))
    save_file({k: v.half() for k, v in tensors.items() if k.startswith("ema.")},
              str(model_dir / "model.safetensors"))
    model = GalaxyDiffusion.load(model_dir, device="cpu")
    assert len(model.sample(1, steps=2, seed=0, progress=False)) == 1


def test_weights_and_config_of_different_saves_are_refused(model_dir, tmp_path):
    other = GalaxyDiffusion.load(model_dir, device="cpu").save(tmp_path / "other")
    shutil.copy(other / "model.safetensors", model_dir / "model.safetensors")
    with pytest.raises(ValueError, match="come from different saves"):
        GalaxyDiffusion.load(model_dir, device="cpu")


@pytest.fixture
def astroddpm_file():
    fixture = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / \
        "astroddpm_dim8_32px.pt"
    if not fixture.is_file():
        pytest.skip(f"{fixture} not found")
    return fixture


def test_truncated_astroddpm_file_is_a_clean_value_error(astroddpm_file, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(astroddpm_file.read_bytes()[:200_000])
    with pytest.raises(ValueError, match=r"model\.pt.*truncated"):
        GalaxyDiffusion.from_astroddpm(path, device="cpu")
    assert path.stat().st_size == 200_000


def test_corrupted_astroddpm_file_is_caught_by_its_zip_checksums(astroddpm_file, tmp_path):
    import zipfile

    path = tmp_path / "model.pt"
    data = bytearray(astroddpm_file.read_bytes())
    with zipfile.ZipFile(astroddpm_file) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)   # a tensor's storage
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.pt.*damaged.*checksum"):
        GalaxyDiffusion.from_astroddpm(path, device="cpu")


# --------------------------------------------------------------------------- one writer per folder
def _hold_like_another_process(folder, pid=4242):
    """Lock ``folder`` through a separate open file (flock conflicts within a process too)."""
    import fcntl

    from astro_sbgm._locking import LOCK_NAME

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"pid={pid}\nhost=elsewhere\ncommand=astro-sbgm train\n".encode())
    return fd


def test_lock_refuses_a_second_writer_and_is_reentrant(tmp_path):
    from astro_sbgm import _locking

    folder = tmp_path / "new" / "out"
    with _locking.folder_lock(folder, what="train into"):
        lock = folder / _locking.LOCK_NAME
        assert f"pid={os.getpid()}" in lock.read_text()
        with _locking.folder_lock(folder):        # the same process: re-entrant
            pass
        assert lock.exists()
        assert _locking.lock_holder(folder)["pid"] == os.getpid()
    assert not (tmp_path / "new").exists()         # created by the lock, left empty: removed

    fd = _hold_like_another_process(folder)
    try:
        with pytest.raises(_locking.FolderLockedError) as info:
            _locking.acquire(folder, what="train into")
        msg = str(info.value)
        assert msg.startswith(f"cannot train into {str(folder)!r}") and "pid 4242" in msg
        assert info.value.pid == 4242 and isinstance(info.value, OSError)
        with pytest.raises(_locking.FolderLockedError):
            _locking.check_free(folder)
    finally:
        os.close(fd)                                # the kernel drops the lock with the file
    _locking.check_free(folder)
    with _locking.folder_lock(folder):              # a stale note is simply overwritten
        assert _locking.lock_holder(folder)["pid"] == os.getpid()


def test_fit_refuses_a_checkpoint_folder_another_run_writes(tmp_path):
    from astro_sbgm._locking import FolderLockedError

    fd = _hold_like_another_process(tmp_path / "ck")
    model = GalaxyDiffusion(**TINY)
    try:
        with pytest.raises(FolderLockedError, match=r"pid 4242.*another folder"):
            model.fit(make_trivial_dataset(8, size=16, seed=1), steps=2, progress=False,
                      checkpoint_dir=tmp_path / "ck")
    finally:
        os.close(fd)
    assert not hasattr(model, "net_")              # refused before anything was built
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [".astro_sbgm.lock"]
    model.fit(make_trivial_dataset(8, size=16, seed=1), steps=2, progress=False,
              checkpoint_dir=tmp_path / "ck")
    assert latest_checkpoint(tmp_path / "ck").name == "checkpoint-000000002.json"
    assert not (tmp_path / "ck" / ".astro_sbgm.lock").exists()   # released after the run


def _train_command(out, steps=100000):
    return [sys.executable, "-m", "astro_sbgm.cli", "train", "--mock", "16", "--size", "16",
            "--dim", "8", "--dim-mults", "1,2", "--batch-size", "4", "--train-steps",
            str(steps), "--checkpoint-every", "100000", "--device", "cpu", "-o", str(out),
            "--quiet"]


def _wait_until_training(proc, out, timeout=120):
    deadline = time.time() + timeout
    while not (out / "checkpoints" / "astro_sbgm-checkpoints.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.2)


def test_two_concurrent_cli_writers_into_one_folder(tmp_path, capsys):
    from astro_sbgm import _locking
    from astro_sbgm.cli import main

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(_train_command(out), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_until_training(first, out)
        # a second `train` into the same folder, a real second process: refused in one line
        second = subprocess.run(_train_command(out) + ["--resume"], capture_output=True,
                                text=True, env=env, timeout=120)
        assert second.returncode == 2, second.stderr
        lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert repr(str(out)) in lines[0] and f"pid {first.pid}" in lines[0]
        # so is `sample` into it, before any model is loaded
        assert main(["sample", "--model", str(tmp_path / "nowhere"), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"pid {first.pid}" in err and "draw samples into" in err
        # and the Python path into its checkpoint folder
        with pytest.raises(_locking.FolderLockedError, match=f"pid {first.pid}"):
            GalaxyDiffusion(**TINY).fit(make_trivial_dataset(4, size=16), steps=1,
                                        checkpoint_dir=out / "checkpoints", progress=False)
        # readers are not blocked
        assert _locking.lock_holder(out)["pid"] == first.pid
        assert (out / "checkpoints" / "astro_sbgm-checkpoints.json").read_text()
    finally:
        first.kill()                 # SIGKILL: no clean-up runs (SIGTERM: see above)
        first.communicate()
    assert _locking.lock_holder(out)["pid"] == first.pid  # a stale note is left ...
    _locking.check_free(out)                              # ... but the kernel dropped the lock
    with _locking.folder_lock(out, what="train into"):
        assert _locking.lock_holder(out)["pid"] == os.getpid()


# --------------------------------------------------------------------------- the CLI's error policy
def test_in_cli_words_turns_keywords_into_flags():
    from astro_sbgm.cli import in_cli_words

    assert in_cli_words("'x' exists; pass overwrite=True to replace it") == \
        "'x' exists; pass --overwrite to replace it"
    assert in_cli_words("'x' exists; pass overwrite=True (--overwrite) to replace it") == \
        "'x' exists; pass --overwrite to replace it"
    assert in_cli_words("with a new checkpoint_dir, or resume=False") == \
        "with a new --checkpoint-dir, or without --resume"
    assert in_cli_words("but batch_size=8; resume\\nwith") == "but --batch-size 8; resume\\nwith"
    assert (in_cli_words("pass bands=, e.g. bands='grz'")
            == "pass --input-bands, e.g. --input-bands grz")
    assert in_cli_words("two\nlines") == "two lines"


def _one_error_line(err, code, expected_code=2):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == expected_code
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_cli_refused_overwrite_speaks_flags(tmp_path, capsys):
    from astro_sbgm.cli import main

    out = tmp_path / "cat.ecsv"
    out.write_text("keep me")
    code = main(["measure", str(tmp_path / "*.fits"), "-o", str(out)])
    line = _one_error_line(capsys.readouterr().err, code)
    assert line.startswith("astro-sbgm measure: error:") and str(out) in line
    assert "--overwrite" in line and "overwrite=True" not in line
    assert out.read_text() == "keep me"


def test_cli_sgd_missing_column_and_units_are_one_line(tmp_path, capsys):
    from astropy.table import QTable
    import astropy.units as u

    from astro_sbgm.cli import main

    a, b = tmp_path / "a.ecsv", tmp_path / "b.ecsv"
    QTable({"x": [1.0, 2.0]}).write(a)
    QTable({"x": [1.0, 2.0]}).write(b)
    code = main(["sgd", str(a), str(b)])
    line = _one_error_line(capsys.readouterr().err, code)
    assert line.startswith("astro-sbgm sgd: error:") and "no column 'mag_g'" in line
    assert not line.split("error: ")[1].startswith('"')     # the message, not a repr
    # radii in pixels: a UnitsError
    cols = {name: [20.0, 21.0, 22.0] * u.mag for name in ("mag_g", "mag_r", "mag_z")}
    cols["r_half"] = [2.0, 3.0, 4.0] * u.pix
    QTable(cols).write(a, overwrite=True)
    QTable(cols).write(b, overwrite=True)
    code = main(["sgd", str(a), str(b)])
    line = _one_error_line(capsys.readouterr().err, code)
    assert line.startswith("astro-sbgm sgd: error:") and "pix" in line


def test_cli_damaged_model_is_one_line_naming_the_file(model_dir, tmp_path, capsys):
    from astro_sbgm.cli import main

    _truncate(model_dir / "model.safetensors")
    code = main(["sample", "--model", str(model_dir), "-n", "1", "--steps", "2",
                 "--device", "cpu", "-o", str(tmp_path / "s"), "--quiet"])
    line = _one_error_line(capsys.readouterr().err, code)
    assert str(model_dir / "model.safetensors") in line and "truncated" in line
    assert not (tmp_path / "s").exists()           # nothing left behind, not even the folder


def test_cli_bug_keeps_its_traceback_and_asks_for_a_report(tmp_path, capsys, monkeypatch):
    from astro_sbgm import cli

    def broken(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(cli, "_cmd_sample", broken)
    code = cli.main(["sample", "--model", "m", "-o", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in err and "TypeError: unsupported" in err
    assert "this is a bug in astro_sbgm" in err.splitlines()[-1] and "report" in err


def test_cli_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    from astro_sbgm import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_sample", interrupted)
    code = cli.main(["sample", "--model", "m", "-o", str(tmp_path / "s")])
    line = _one_error_line(capsys.readouterr().err, code, expected_code=130)
    assert line.startswith("astro-sbgm sample: interrupted")


# --------------------------------------------------------------------------- failed writes
def _disk_full(write_part):
    """A writer that writes part of its file, then fails as a full disk does."""
    import errno

    def writer(*args, **kwargs):
        write_part(*args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    return writer


def _partial_safetensors(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")


def _partial_text(self, data, *args, **kwargs):
    with open(self, "w") as f:
        f.write(data[:10])


def _hidden_temporaries(folder):
    return [p.name for p in Path(folder).rglob(".*tmp*")]


@pytest.mark.parametrize("where", ["tensors", "record"])
def test_failed_checkpoint_write_keeps_the_earlier_checkpoints(ckdir, monkeypatch, where):
    model = GalaxyDiffusion(**TINY)
    before = _snapshot(ckdir)
    if where == "tensors":
        monkeypatch.setattr(_serialization, "save_file", _disk_full(_partial_safetensors))
    else:
        monkeypatch.setattr(Path, "write_text", _disk_full(_partial_text))
    with pytest.raises(OSError, match="No space left"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstroSBGMCheckpointWarning)
            model.fit(make_trivial_dataset(8, size=16, seed=1), steps=6, checkpoint_dir=ckdir,
                      checkpoint_every=2, progress=False, resume=True)
    monkeypatch.undo()
    after = _snapshot(ckdir)
    assert {k: after[k] for k in before} == before       # every earlier file as it was
    assert not (ckdir / "checkpoint-000000006.json").exists()
    assert _hidden_temporaries(ckdir) == []
    assert latest_checkpoint(ckdir).name == "checkpoint-000000004.json"


@pytest.mark.parametrize("where", ["weights", "config"])
def test_failed_model_save_keeps_the_saved_model(model_dir, monkeypatch, where):
    model = GalaxyDiffusion.load(model_dir, device="cpu")
    model.n_steps_ = 99                                   # a different model to save
    before = _snapshot(model_dir)
    if where == "weights":
        monkeypatch.setattr(_serialization, "save_file", _disk_full(_partial_safetensors))
    else:
        monkeypatch.setattr(Path, "write_text", _disk_full(_partial_text))
    with pytest.raises(OSError, match="No space left"):
        model.save(model_dir, overwrite=True)
    monkeypatch.undo()
    assert _snapshot(model_dir) == before                 # both files, byte for byte
    assert GalaxyDiffusion.load(model_dir, device="cpu").n_steps_ == 2


def test_failed_image_write_keeps_the_old_file(tmp_path, monkeypatch):
    from astropy.io import fits

    from astro_sbgm.io import read_image, write_image

    image = read_image(make_trivial_dataset(1, size=16, seed=1)[0])
    path = write_image(image, tmp_path / "galaxy.fits")
    before = path.read_bytes()

    def partial_fits(self, name, *args, **kwargs):
        with open(name, "wb") as f:
            f.write(b"SIMPLE  =                    T")

    monkeypatch.setattr(fits.HDUList, "writeto", _disk_full(partial_fits))
    with pytest.raises(OSError, match="No space left"):
        write_image(image, path, overwrite=True)
    with pytest.raises(OSError, match="No space left"):
        write_image(image, tmp_path / "new.fits")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["galaxy.fits"]


def test_written_tensor_files_follow_the_umask_like_the_json_beside_them(ckdir, model_dir):
    import stat

    for folder, tensors, record in ((ckdir, "checkpoint-000000004.safetensors",
                                     "checkpoint-000000004.json"),
                                    (model_dir, "model.safetensors", "config.json")):
        mode = stat.S_IMODE((folder / tensors).stat().st_mode)
        assert mode == stat.S_IMODE((folder / record).stat().st_mode), folder


# --------------------------------------------------------------------------- odd FITS files
# property-based (hypothesis is in the test extra)
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@st.composite
def _odd_fits(draw):
    """A small FITS file's recipe: odd shapes, types, scalings, WCS cards, units, compression."""
    kind = draw(st.sampled_from(["2d", "3d", "1d", "4d", "empty"]))
    ny, nx, nb = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    shape = {"2d": (ny, nx), "3d": (nb, ny, nx), "1d": (nx,), "4d": (1, nb, ny, nx),
             "empty": None}[kind]
    dtype = draw(st.sampled_from([">f4", ">f8", ">i2", ">i4", "u1", "uint16"]))
    data = None
    if shape is not None:
        if dtype[1] == "f":   # big-endian floats with NaN, inf and float32-range extremes
            elements = st.one_of(st.floats(-1e6, 1e6, width=32), st.just(np.nan),
                                 st.just(np.inf), st.just(-np.inf), st.just(3e38))
        else:
            info = np.iinfo(np.dtype(dtype))
            elements = st.integers(int(info.min), int(info.max))
        data = draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))
    scale = None
    if dtype in (">i2", ">i4", "u1"):   # BSCALE / BZERO integers (uint16 gets BZERO anyway)
        scale = draw(st.one_of(st.none(), st.tuples(
            st.sampled_from([0.5, 1.0, 2.0, 1e-3]), st.sampled_from([0.0, 10.0, -3.5]))))
    return dict(data=data, scale=scale,
                wcs=draw(st.sampled_from([None, "tan", "ctype-only", "NAN", "INF", "1E999"])),
                bunit=draw(st.sampled_from([None, "nanomaggy", "foo"])),
                band_cards=draw(st.booleans()),
                compressed=draw(st.booleans()) and kind in ("2d", "3d") and dtype != ">f8")


def _write_odd_fits(case, path):
    data, header = case["data"], fits.Header()
    if case["bunit"]:
        header["BUNIT"] = case["bunit"]
    if case["band_cards"] and data is not None and data.ndim == 3:
        for i in range(data.shape[0]):
            header[f"BAND{i}"] = "grz"[i]
    if case["wcs"] == "ctype-only":
        header["CTYPE1"] = "RA---TAN"
    elif case["wcs"] is not None:
        header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 180.0,
                       "CRVAL2": 0.0, "CRPIX1": 1.0, "CRPIX2": 1.0,
                       "CDELT1": -0.262 / 3600, "CDELT2": 0.262 / 3600})
    if case["compressed"]:   # a tile-compressed image in the first extension
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=header)])
    else:
        hdul = fits.HDUList([fits.PrimaryHDU(data, header=header)])
    if case["scale"] is not None:
        hdul[-1].header["BSCALE"], hdul[-1].header["BZERO"] = case["scale"]
    hdul.writeto(path)
    if case["wcs"] in ("NAN", "INF", "1E999") and not case["compressed"]:
        raw = bytearray(path.read_bytes())   # cards astropy refuses to write: patch the bytes
        at = raw.find(b"CDELT1  =")
        raw[at:at + 80] = f"CDELT1  = {case['wcs']:>20}".ljust(80).encode()
        path.write_bytes(bytes(raw))


def _property(max_examples):
    """``@given(_odd_fits())`` with few examples."""
    return lambda fn: settings(max_examples=max_examples, deadline=None, database=None,
                               suppress_health_check=list(HealthCheck))(
        given(_odd_fits())(fn))


@_property(max_examples=40)
def test_read_image_of_odd_fits_is_right_or_a_clean_value_error(case):
    from astro_sbgm.io import read_image

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "odd.fits"
        _write_odd_fits(case, path)
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        data = case["data"]
        nb = 1 if data is None or data.ndim < 3 else data.shape[-3]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = read_image(str(path), bands="grz"[:nb])
        except ValueError as err:          # includes astropy's UnitsError conversions
            out, message = None, str(err)
        finally:   # the file is never modified, and nothing is written beside it
            assert hashlib.sha256(path.read_bytes()).hexdigest() == before
            assert os.listdir(folder) == ["odd.fits"]
        if out is None:
            assert message and "\n" not in message.strip()
            return
        assert data is not None and data.ndim in (2, 3, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path) as hdul:   # astropy's own reading (BSCALE/BZERO applied)
                expected = np.array(hdul[-1].data, dtype=np.float64).reshape(out.shape)
        good = np.isfinite(expected) & (np.abs(expected) < 3.4e38)
        assert out.data.dtype == np.float32 and np.isfinite(out.data).all()
        np.testing.assert_allclose(out.data[good], expected[good].astype(np.float32),
                                   rtol=1e-6)
        if not good.all():
            assert out.mask is not None and out.mask[~good].all()
