"""Trained models bundled with the package: names, model cards and export.

A bundled model is a folder ``astro_sbgm/data/pretrained/NAME/`` holding the
model's ``config.json``, its weight average (EMA) as float16
``model.safetensors`` and a model card ``card.json`` (training data, recipe,
hardware, measured quality).  Load one with
`astro_sbgm.GalaxyDiffusion.pretrained`::

    from astro_sbgm import GalaxyDiffusion, pretrained

    pretrained.available()                      # {name: one-line description}
    model = GalaxyDiffusion.pretrained("mock-legacy-grz-64")
    galaxies = model.sample(16, seed=0)

The loaded model is an ordinary `~astro_sbgm.GalaxyDiffusion`: it samples,
inpaints, transfers, saves, and fine-tunes on your own cutouts with
``fit(images, steps=..., warm_start=True)``.  Its raw weights are the
weight average itself (only the average is shipped).

This module reads files only; it never imports the estimator, so it can be
used to list and describe models without torch doing any work.
"""

import json
from pathlib import Path

import numpy as np

from ._atomic import atomic_write, share_like_other_files

__all__ = ["available", "info", "path", "export", "PRETRAINED_DIR", "DEFAULT_MODEL"]

#: Where the bundled models live (inside the installed package).
PRETRAINED_DIR = Path(__file__).parent / "data" / "pretrained"

#: The model the quickstart and the tutorials use.
DEFAULT_MODEL = "mock-legacy-grz-64"

_CARD = "card.json"


def _names():
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir()
                  if (p / "config.json").exists() and (p / _CARD).exists())


def path(name):
    """The folder of the bundled model ``name``.

    Parameters
    ----------
    name : str
        One of the names `available` lists.

    Returns
    -------
    `pathlib.Path`

    Raises
    ------
    ValueError
        If no bundled model has that name (the message lists the known ones).
    """
    names = _names()
    if name not in names:
        known = ", ".join(names) if names else "none are installed"
        raise ValueError(f"no bundled model is called {name!r}; known models: {known} "
                         "(astro_sbgm.pretrained.available() describes them)")
    return PRETRAINED_DIR / name


def info(name):
    """The model card of a bundled model.

    Parameters
    ----------
    name : str
        One of the names `available` lists.

    Returns
    -------
    dict
        ``description``; ``training`` (data, seed, number of images,
        configuration, steps, images seen, hardware, wall time); ``quality``
        (SGD against raw and round-tripped held-out galaxies with bootstrap
        spreads, the equal-N real-vs-real baseline, Cohen's d per property,
        the per-sampler table, the commands that measured them); ``caveats``.

    Raises
    ------
    ValueError
        If no bundled model has that name.
    """
    return json.loads((path(name) / _CARD).read_text())


def available():
    """The bundled models and a one-line description of each.

    Returns
    -------
    dict
        ``{name: description}``, sorted by name.
    """
    return {name: info(name).get("description", "") for name in _names()}


def export(model_dir, name, card, destination=None, overwrite=False):
    """Write a saved model's weight average as a bundled model (float16).

    A conditional model's population of conditions goes along, in float32.

    Parameters
    ----------
    model_dir : str or path
        A folder written by `astro_sbgm.GalaxyDiffusion.save`.
    name : str
        The bundled model's name (a folder name: letters, digits, ``-``, ``_``).
    card : dict
        The model card (JSON-safe); must hold ``description``.
    destination : str or path, optional
        Parent folder; the package's `PRETRAINED_DIR` by default.
    overwrite : bool
        Replace a bundled model of that name.

    Returns
    -------
    `pathlib.Path`
        The new model's folder.

    Raises
    ------
    ValueError
        For a bad name, a card without description, or a folder that is not
        a saved model.
    FileExistsError
        If the model exists and ``overwrite`` is False.
    """
    from safetensors.numpy import load_file, save_file

    from ._serialization import EMA_PREFIX, POPULATION_KEY   # imports torch: only here

    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"name must be letters, digits, '-' and '_', got {name!r}")
    if not isinstance(card, dict) or not card.get("description"):
        raise ValueError("card must be a dict with a one-line 'description'")
    model_dir = Path(model_dir)
    cfg_path, w_path = model_dir / "config.json", model_dir / "model.safetensors"
    if not cfg_path.exists() or not w_path.exists():
        raise ValueError(f"{str(model_dir)!r} is not a saved astro_sbgm model (it needs "
                         "config.json and model.safetensors)")
    config = json.loads(cfg_path.read_text())
    tensors = load_file(str(w_path))
    ema = {k: (v.astype(np.float16) if v.dtype == np.float32 else v)
           for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    if not ema:
        raise ValueError(f"{str(w_path)!r} holds no weight average ('ema.' tensors)")
    if POPULATION_KEY in tensors:   # a conditional model's population, kept in float32
        ema[POPULATION_KEY] = tensors[POPULATION_KEY]
    config["weights"] = "ema-float16"
    dest = Path(destination) if destination is not None else PRETRAINED_DIR
    out = dest / name
    if out.exists() and not overwrite:
        raise FileExistsError(f"a bundled model {name!r} exists in {str(dest)!r}; pass "
                              "overwrite=True to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for fname, write in (("model.safetensors",
                          lambda p: save_file(ema, str(p), metadata={"format": config["format"],
                                                                     "weights": "ema-float16"})),
                         ("config.json", lambda p: p.write_text(json.dumps(config, indent=1))),
                         (_CARD, lambda p: p.write_text(json.dumps(card, indent=1)))):
        atomic_write(out / fname, write)
    share_like_other_files(out / "model.safetensors")    # safetensors writes 0o600
    return out
