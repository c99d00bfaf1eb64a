"""Write a trained run into the package as a bundled model, with its model card.

Usage (the bundled ``mock-legacy-grz-64`` was written with)::

    python benchmarks/export_pretrained.py --run ../pretrained-run \\
        --quality card-quality.json --name mock-legacy-grz-64

``--run`` is the folder of ``benchmarks/train_pretrained.py`` (``model/`` and
``run.json``), ``--quality`` the output of ``benchmarks/eval_pretrained.py``.
A run that continued a model (``train_pretrained.py --init-from``) needs
``--previous-card``, the card of the model it started from (copy it before the
export overwrites it): the new card then records the whole history, steps,
images and training seconds of both runs.
A model made by conditional fine-tunes of a bundled model
(``benchmarks/bench_conditional.py --base``) is exported with::

    python benchmarks/export_pretrained.py --model RUN/model --quality QUALITY.json \
        --previous-card CARD.json --fine-tune RUN1/results.json --fine-tune RUN/results.json

one ``--fine-tune`` per stage (the ``results.json`` of each training call of the
stage, comma-separated, in order); the card keeps the previous card's stages.
The weight average is stored as float16 safetensors with the model's JSON
config and ``card.json`` (`astro_sbgm.pretrained.info`).
"""

import argparse
import json
import os
import platform
import re
from pathlib import Path

import torch

from astro_sbgm import pretrained


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="train_pretrained.py run folder")
    p.add_argument("--quality", required=True)
    p.add_argument("--name", default=pretrained.DEFAULT_MODEL)
    p.add_argument("--previous-card", default=None,
                   help="card.json of the model a continued run started from")
    p.add_argument("--fine-tune", action="append", metavar="RESULTS[,RESULTS...]",
                   help="a conditional fine-tune stage (bench_conditional.py): the "
                   "results.json of each of its training calls, in order; repeat per stage "
                   "(each stage continued the previous one's model)")
    p.add_argument("--model", help="the saved model to export (default: RUN/model)")
    a = p.parse_args(argv)
    if a.fine_tune:
        if a.previous_card is None or a.model is None:
            p.error("--fine-tune needs --previous-card (the model the first stage started "
                    "from) and --model (the last stage's model)")
        card = _fine_tune_card(a, json.loads(Path(a.quality).read_text()))
        out = pretrained.export(a.model, a.name, card, overwrite=True)
        print(f"wrote {out}")
        return
    if a.run is None:
        p.error("give --run (a train_pretrained.py run) or --fine-tune stages")
    run = json.loads(Path(a.run, "run.json").read_text())
    quality = json.loads(Path(a.quality).read_text())
    command = ("python benchmarks/train_pretrained.py --out RUN --threads 1 "
               "--checkpoint-every 250 (resumed after SIGTERM, see calls)")
    stages = []
    if run["calls"] and run["calls"][0].get("init_from"):
        if a.previous_card is None:
            p.error(f"the run continued {run['calls'][0]['init_from']!r}: give its card with "
                    "--previous-card")
        before = json.loads(Path(a.previous_card).read_text())["training"]
        stages = before.get("stages") or [
            {"n_steps": before["n_steps"], "images_seen": before["images_seen"],
             "train_seconds": before["train_seconds"], "hardware": before["hardware"],
             "calls": before["calls"], "command": before.get("command")}]
        # each stage records its own steps: this one's are the total less all earlier ones
        stages = stages + [{
            "n_steps": run["n_steps"] - sum(s["n_steps"] for s in stages),
            "images_seen": run["images_seen"] - sum(s["images_seen"] for s in stages),
            "train_seconds": run["train_seconds"], "hardware": run["hardware"],
            "calls": run["calls"],
            "command": _continue_command(run["calls"][0]),
            "note": "continued from the weight average of the previous stage with "
                    "fit(warm_start=True): Adam, the learning-rate warm-up, the data order "
                    "and the weight average's ramp-up start afresh"}]
        run = dict(run, train_seconds=round(sum(s["train_seconds"] for s in stages), 1))
    card = {
        "description": (f"64x64 grz galaxies of the package's mock Legacy Survey "
                        f"({run['n_train']} training cutouts, {run['n_steps']} steps): "
                        "a model of the mock survey, not of the real sky"),
        "training": {
            "data": "astro_sbgm.datasets.make_mock_legacy_survey(n, size=64, seed=13)",
            "n_train": run["n_train"], "train_seed": run["train_seed"],
            "held_out_seeds": quality.get("held_out_seeds"),
            "configuration": run["params"], "n_steps": run["n_steps"],
            "images_seen": run["images_seen"], "train_seconds": run["train_seconds"],
            "hardware": run["hardware"], "calls": run["calls"],
            "command": command,
        },
        "quality": quality,
        "quality_command": "python benchmarks/eval_pretrained.py --model RUN/model --run RUN "
                           "--n 500",
        "caveats": [
            "A model of the mock survey (GalSim galaxies with DR9-like PSF and noise), not of "
            "the real sky; fine-tune it on real cutouts (fit(..., warm_start=True)) or use the "
            "paper's released models (GalaxyDiffusion.from_astroddpm) for real data.",
            f"Trained on 2 CPU cores for {run['train_seconds'] / 3600:.1f} hours: far from "
            "converged (see the curve of SGD against images seen).",
            "Only the weight average (EMA) is shipped, in float16; it also serves as the raw "
            "weights after loading.",
        ],
    }
    if stages:
        card["training"]["stages"] = stages
        card["training"]["command"] = " ; then ".join(s["command"] for s in stages)
    out = pretrained.export(Path(a.model or Path(a.run, "model")), a.name, card,
                            overwrite=True)
    print(f"wrote {out}")


def _portable(command):
    """A benchmark command with this machine's folders replaced by placeholders."""
    command = re.sub(r"--out \S+", "--out RUN", command)
    command = re.sub(r"--base \S+", "--base PREVIOUS_RUN/model", command)
    return re.sub(r" --(figure|rst) \S+", "", command)


def _fine_tune_card(a, quality):
    """The card of a model made by conditional fine-tunes (bench_conditional.py) of the
    model whose card is ``--previous-card``: its stages, then one per ``--fine-tune``."""
    previous = json.loads(Path(a.previous_card).read_text())
    before = previous["training"]
    stages = list(before.get("stages") or [])
    config = json.loads(Path(a.model, "config.json").read_text())
    hardware = {"machine": platform.machine(), "processor": platform.processor(),
                "cpu_count": os.cpu_count(), "device": "cpu", "torch": torch.__version__}
    for group in a.fine_tune:
        calls, done = [], 0
        for path in group.split(","):
            r = json.loads(Path(path).read_text())
            fit = r["fit"]
            calls.append({"resumed": bool(fit["resumed"]),
                          "train_seconds": float(fit["seconds"]),
                          "data_seconds": float(r.get("data_seconds", 0.0)),
                          "steps_after": int(fit["base_model_steps"]) + int(fit["steps"]),
                          "threads": int(r["threads"]),
                          "command": _portable(r.get("fit_command", r["command"]))})
            done = int(fit["steps"])
            conditions = fit["conditions"]["names"]
        stages.append({
            "n_steps": done, "images_seen": done * int(config["params"]["batch_size"]),
            "train_seconds": round(sum(c["train_seconds"] for c in calls), 1),
            "hardware": dict(hardware, torch_threads=calls[-1]["threads"]),
            "calls": calls, "command": calls[0]["command"],
            "note": f"conditional fine-tune on {', '.join(conditions)} (classifier-free "
                    "guidance; the condition embedding's new entries start at zero, so it "
                    "starts from the previous stage's model)"})
    n_steps = sum(s["n_steps"] for s in stages)
    names = config["params"]["conditions"]
    train_seconds = round(sum(s["train_seconds"] for s in stages), 1)
    return {
        "description": (f"64x64 grz galaxies of the package's mock Legacy Survey "
                        f"({before['n_train']} training cutouts, {n_steps} steps), drawn "
                        f"from its training population of {', '.join(names)}: a model of "
                        "the mock survey, not of the real sky"),
        "training": {
            "data": before["data"], "n_train": before["n_train"],
            "train_seed": before["train_seed"],
            "held_out_seeds": quality.get("held_out_seeds"),
            "configuration": config["params"], "n_steps": n_steps,
            "images_seen": sum(s["images_seen"] for s in stages),
            "train_seconds": train_seconds, "hardware": stages[-1]["hardware"],
            "calls": stages[-1]["calls"], "stages": stages,
            "command": " ; then ".join(s["command"] for s in stages)},
        "quality": quality,
        "quality_command": "python benchmarks/eval_pretrained.py --model RUN/model --n 500 "
                           "--curve-from PREVIOUS_CARD",
        "caveats": previous["caveats"][:1] + [
            f"Trained on 2 CPU cores for {train_seconds / 3600:.1f} hours: far from "
            "converged (see the curve of SGD against images seen).",
            "Only the weight average (EMA) is shipped, in float16; it also serves as the raw "
            "weights after loading.",
            f"A conditional model: sample(n) draws each galaxy's {', '.join(names)} from "
            "the training set's (the stored population), then the galaxy; "
            "sample(n, guidance_scale=0) draws from its unconditional network, "
            "sample_like(catalogue) to order."]}


def _continue_command(call):
    """The train_pretrained.py command of a continued stage, from its first call's record
    (runs recorded before ``checkpoint_every`` was saved used 250, and no ``--minutes``)."""
    command = (f"python benchmarks/train_pretrained.py --out RUN --init-from {call['init_from']} "
               f"--threads {call.get('threads', 1)} "
               f"--checkpoint-every {call.get('checkpoint_every', 250)}")
    if "minutes" in call:
        command += f" --minutes {call['minutes']:g}"
    return command


if __name__ == "__main__":
    main()
