"""Atomic file writes without torch (private): temporary file, flush, rename.

Every file this package writes goes through `atomic_write`: a temporary file
in the same folder, flushed to disk and renamed into place, so a file holds
either its old content or all of its new one, even after a crash or a full
disk.  Torch-free, so that `astro_sbgm.io` can use it; the weight files of
`astro_sbgm._serialization` build on it.
"""

import hashlib
import os
from pathlib import Path

__all__ = ["fsync", "default_file_mode", "share_like_other_files", "file_digest",
           "atomic_write", "atomic_write_text", "temporary_name"]


def fsync(path):
    """Flush ``path`` (a file or a directory) to the disk, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def default_file_mode():
    """The mode a new file gets under this process's umask (0o644 under umask 022)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def share_like_other_files(path):
    """Give a file safetensors wrote (always 0o600) the mode of the other files written."""
    try:
        os.chmod(path, default_file_mode())
    except OSError:
        pass


def file_digest(path):
    """``(sha256 hex digest, size in bytes)`` of a file."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def temporary_name(path):
    """The temporary file beside ``path`` that `atomic_write` writes first."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path, write):
    """Write ``path`` through ``write(tmp_path)``, a flush and a rename.

    Parameters
    ----------
    path : str or path
        The file to write.
    write : callable
        ``write(tmp_path)`` writes the whole new content to ``tmp_path``.

    Returns
    -------
    object
        What ``write`` returned.

    Raises
    ------
    OSError
        If the write fails (``path`` is then left as it was, and no temporary
        file remains).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        out = write(tmp)
        fsync(tmp)
        os.replace(tmp, path)
        fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename.

    The temporary file is flushed to disk before the rename, so ``path``
    holds either its old content or all of ``text``, even after a crash or a
    failed write (which removes the temporary file and raises).

    Parameters
    ----------
    path : str or path
        The file to write.
    text : str
        Its new content.

    Raises
    ------
    OSError
        If the write fails (``path`` is then left as it was).
    """
    atomic_write(path, lambda tmp: tmp.write_text(text))
