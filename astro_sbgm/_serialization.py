"""Persistence: atomic writes and the weight bundles of models and checkpoints (private).

Every file this package writes goes through a temporary file in the same
folder, flushed to disk and renamed into place (`atomic_write`), so a file
holds either its old content or all of its new one, even after a crash or a
full disk.  A model's and a checkpoint's weights are one safetensors file
holding the raw network under `RAW_PREFIX` and the weight average under
`EMA_PREFIX` (`bundle_weights`, `split_weights`); a conditional model's
population of conditions rides along under `POPULATION_KEY`.
"""

import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from ._atomic import (atomic_write, atomic_write_text, default_file_mode,  # noqa: F401
                      file_digest, fsync, share_like_other_files, temporary_name)

__all__ = ["RAW_PREFIX", "EMA_PREFIX", "POPULATION_KEY", "fsync", "share_like_other_files",
           "file_digest", "atomic_write", "atomic_write_text", "atomic_save_tensors",
           "bundle_weights", "split_weights", "write_model_files", "check_model_files"]

#: Key prefix of the raw network's tensors in a weight bundle.
RAW_PREFIX = "model."
#: Key prefix of the weight average's tensors in a weight bundle.
EMA_PREFIX = "ema."
#: Key of a conditional model's population of conditions ``(rows, properties)``.
POPULATION_KEY = "conditions.population"


def _save_tensors(tensors, path, metadata):
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path),
              metadata=metadata)
    share_like_other_files(path)


def atomic_save_tensors(tensors, path, metadata=None):
    """Write ``tensors`` to the safetensors file ``path`` atomically.

    Returns
    -------
    dict
        ``{"sha256": hex digest, "size": bytes}`` of the file written.

    Raises
    ------
    OSError
        If the write fails (``path`` is then left as it was, and no temporary
        file remains).
    """
    def write(tmp):
        _save_tensors(tensors, tmp, metadata)
        return file_digest(tmp)

    sha256, size = atomic_write(path, write)
    return {"sha256": sha256, "size": size}


def bundle_weights(raw=None, ema=None):
    """One flat tensor dict from the raw and averaged state dicts (either may be None)."""
    out = {}
    for prefix, state in ((RAW_PREFIX, raw), (EMA_PREFIX, ema)):
        if state is not None:
            out.update({f"{prefix}{k}": v for k, v in state.items()})
    return out


def split_weights(tensors, convert=None):
    """``(raw, ema)`` state dicts of a bundle (empty dicts where absent).

    ``convert`` is applied to every tensor (e.g. float16 to float32).
    """
    convert = convert or (lambda v: v)
    raw = {k[len(RAW_PREFIX):]: convert(v) for k, v in tensors.items()
           if k.startswith(RAW_PREFIX)}
    ema = {k[len(EMA_PREFIX):]: convert(v) for k, v in tensors.items()
           if k.startswith(EMA_PREFIX)}
    return raw, ema


def write_model_files(path, tensors, metadata, config_text):
    """Write the ``model.safetensors`` and ``config.json`` of a saved model.

    Both go to temporary files, flushed to disk, before either is renamed
    into place; a failed write removes the temporary files and leaves the
    folder as it was.
    """
    path = Path(path)
    w_tmp = path / f".model.safetensors.tmp{os.getpid()}"
    c_tmp = path / f".config.json.tmp{os.getpid()}"
    try:
        _save_tensors(tensors, w_tmp, metadata)
        fsync(w_tmp)
        c_tmp.write_text(config_text)
        fsync(c_tmp)
        os.replace(w_tmp, path / "model.safetensors")
        os.replace(c_tmp, path / "config.json")
        fsync(path)
    finally:
        for tmp in (w_tmp, c_tmp):
            if tmp.exists():
                tmp.unlink()


def check_model_files(w_path, cfg_path, config, expected_shapes):
    """Check a model folder from the safetensors header alone (no tensor is read).

    Raises ValueError, naming the file and the first disagreeing tensor, for a
    truncated or unreadable file, a pair of files from different saves, and a
    tensor missing, unexpected or of a shape other than the one the network
    of ``config`` has.  Models may hold `EMA_PREFIX` tensors only (the
    bundled float16 models); `RAW_PREFIX` tensors, when present, are checked
    too.

    Parameters
    ----------
    w_path, cfg_path : path
        ``model.safetensors`` and ``config.json``.
    config : dict
        The parsed ``config.json``.
    expected_shapes : callable
        ``expected_shapes()`` -> ``{name: shape}`` of the network's state
        dict; raises ValueError when the config describes no network.
    """
    try:
        with safe_open(str(w_path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            metadata = f.metadata() or {}
    except Exception as err:  # SafetensorError (truncated, bad header), OSError
        raise ValueError(f"{str(w_path)!r} is damaged or truncated: it is not a readable "
                         f"safetensors file ({err}); save the model again or restore the "
                         "file from a copy") from None
    if (config.get("save_id") and metadata.get("save_id")
            and config["save_id"] != metadata["save_id"]):
        raise ValueError(f"{str(w_path)!r} and {str(cfg_path)!r} come from different saves "
                         "(a save that was interrupted between the two?); save the model "
                         "again")
    expected = expected_shapes()
    prefixes = [EMA_PREFIX] + ([RAW_PREFIX] if any(k.startswith(RAW_PREFIX) for k in shapes)
                               else [])
    for prefix in prefixes:
        for key, shape in expected.items():
            name = prefix + key
            if name not in shapes:
                raise ValueError(f"{str(w_path)!r} lacks tensor {name!r} (shape {shape}) of "
                                 f"the network in {str(cfg_path)!r}; the two files do not "
                                 "belong together")
            if shapes[name] != shape:
                raise ValueError(f"tensor {name!r} in {str(w_path)!r} has shape "
                                 f"{shapes[name]} but the network in {str(cfg_path)!r} has "
                                 f"{shape}; the two files do not belong together")
    conditions = config.get("conditions") or {}
    rows = int(conditions.get("population_rows", 0))
    if rows:
        want = (rows, len(conditions.get("names", ())))
        if shapes.get(POPULATION_KEY) != want:
            raise ValueError(f"{str(w_path)!r} should hold the population of conditions "
                             f"{POPULATION_KEY!r} of shape {want} that {str(cfg_path)!r} "
                             f"describes, but has {shapes.get(POPULATION_KEY)}; the two files "
                             "do not belong together")
    extra = [k for k in shapes if not any(k.startswith(p) and k[len(p):] in expected
                                          for p in prefixes)
             and not (rows and k == POPULATION_KEY)]
    if extra:
        raise ValueError(f"{str(w_path)!r} holds tensor {extra[0]!r} that the network in "
                         f"{str(cfg_path)!r} does not have ({len(extra)} in all); the two "
                         "files do not belong together")
