"""Train the bundled model (``astro_sbgm.pretrained``) from scratch, resumably.

The bundled ``mock-legacy-grz-64`` model was made with::

    nice python benchmarks/train_pretrained.py --out ../pretrained-run --minutes 120

20,000 mock Legacy Survey grz cutouts of 64x64 pixels (``make_mock_legacy_survey``,
seed 13; the model card's held-out sets use seeds 1001 and 1002), the package's
default configuration (`astro_sbgm.GalaxyDiffusion` with ``image_size=64``),
checkpoints every ``--checkpoint-every`` steps.  Run again with the same
``--out`` after an interruption and it continues from the newest checkpoint
(bit for bit, see `astro_sbgm.training.Trainer`); ``--minutes`` is the budget
of each call.  At the end the full model is saved in ``OUT/model`` and
``OUT/run.json`` records the data, the configuration, the steps, the images
seen, the wall time and the machine.  ``python -m astro_sbgm.pretrained
export OUT/model NAME`` then writes the float16 EMA weights into the package.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from astro_sbgm import GalaxyDiffusion
from astro_sbgm.datasets import make_mock_legacy_survey
from astro_sbgm.training import TrainingInterrupted

TRAIN_SEED = 13


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="run folder (checkpoints, model, run.json)")
    p.add_argument("--n-train", type=int, default=20_000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=1_000_000,
                   help="step ceiling; the time budget normally ends the run first")
    p.add_argument("--minutes", type=float, default=120.0, help="wall-clock budget of this call")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--init-from", default=None,
                   help="continue training a saved or bundled model (a folder written by "
                   "GalaxyDiffusion.save, or a name of astro_sbgm.pretrained.available()) "
                   "with fit(warm_start=True): its weights, weight average and flux scaling "
                   "are kept; Adam and the data order start afresh")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 on a machine shared with other work: two "
                   "threads that share their cores with another process run slower than one)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cache = out / f"train-seed{TRAIN_SEED}-n{a.n_train}-{a.size}px.npy"
    if cache.exists():      # the same images, bit for bit, without drawing them again
        train = np.load(cache, mmap_mode="r")
    else:
        images = make_mock_legacy_survey(a.n_train, size=a.size, seed=TRAIN_SEED, progress=True)
        train = np.stack([im.data for im in images])
        del images
        np.save(out / ".tmp.npy", train)
        os.replace(out / ".tmp.npy", cache)
    t_data = time.time() - t0
    if a.init_from is None:
        model = GalaxyDiffusion(image_size=a.size, device=a.device)
    elif Path(a.init_from).is_dir():
        model = GalaxyDiffusion.load(a.init_from, device=a.device)
    else:
        model = GalaxyDiffusion.pretrained(a.init_from, device=a.device)
    steps_before = int(getattr(model, "n_steps_", 0))
    ckpt = out / "checkpoints"
    resume = ckpt.exists() and any(ckpt.glob("checkpoint-*.json"))
    t1 = time.time()
    code = 0
    try:
        model.fit(train, steps=a.steps, checkpoint_dir=ckpt, bands="grz",
                  checkpoint_every=a.checkpoint_every, resume=resume,
                  time_limit=a.minutes * 60.0, warm_start=a.init_from is not None)
    except TrainingInterrupted as stop:     # checkpointed at this step; save what we have
        print(stop, file=sys.stderr)
        code = stop.exit_code
    t_train = time.time() - t1
    model.save(out / "model", overwrite=True)
    runs = []
    info_path = out / "run.json"
    if info_path.exists():
        runs = json.loads(info_path.read_text()).get("calls", [])
    if resume and runs:     # where the previous call stopped, not the model handed to this one
        steps_before = int(runs[-1]["steps_after"])
    runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0)),
                 "resumed": bool(resume), "init_from": a.init_from,
                 "steps_before": steps_before, "minutes": a.minutes,
                 "checkpoint_every": a.checkpoint_every, "train_seconds": round(t_train, 1),
                 "data_seconds": round(t_data, 1), "steps_after": int(model.n_steps_),
                 "threads": torch.get_num_threads(), "exit_code": code})
    info = {"n_train": a.n_train, "size": a.size, "train_seed": TRAIN_SEED,
            "params": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in model.get_params().items()}, "n_steps": int(model.n_steps_),
            "images_seen": int(model.n_steps_) * int(model.batch_size),
            "train_seconds": round(sum(r["train_seconds"] for r in runs), 1),
            "hardware": {"machine": platform.machine(), "processor": platform.processor(),
                         "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "device": str(model.device_), "torch": torch.__version__},
            "calls": runs}
    tmp = info_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, info_path)
    print(json.dumps({k: info[k] for k in ("n_steps", "images_seen", "train_seconds")}))
    return code


if __name__ == "__main__":
    sys.exit(main())
