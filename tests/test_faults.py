"""Tests of fault handling: signals during training (preemption, Ctrl-C)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.datasets import make_trivial_dataset
from astro_sbgm.training import TrainingInterrupted, latest_checkpoint

TINY = dict(image_size=16, bands="grz", dim=8, dim_mults=(1, 2),
            attention_levels=(False, False), batch_size=4, timesteps=100, device="cpu")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_signal_finishes_the_step_checkpoints_and_keeps_the_model_usable(tmp_path, monkeypatch,
                                                                          signum):
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
    # --resume continues from that step to the new total
    cmd2 = [c if c != "100000" else str(step + 2) for c in cmd[:cmd.index("--checkpoint-every")]]
    cmd2 += ["--checkpoint-every", "1000", "--device", "cpu", "-o", str(out), "--quiet",
             "--resume"]
    done = subprocess.run(cmd2, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert GalaxyDiffusion.load(out / "model", device="cpu").n_steps_ == step + 2
