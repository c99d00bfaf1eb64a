"""One writer per folder: an OS lock on a file inside the folder.

A process that writes into a folder for a long time (``astro-sbgm train``,
``astro-sbgm sample``, `GalaxyDiffusion.fit` with ``checkpoint_dir=``) holds
an exclusive `fcntl.flock` lock on ``FOLDER/.astro_sbgm.lock`` for as long as
it writes; the file holds the writer's pid, host and command.  A second
writer is refused at once with `FolderLockedError` (it never waits).  Readers
take no lock and are never blocked.

The kernel drops the lock when the process ends, however it ends (a crash,
``kill -9``, a node reboot), so a lock never has to be cleared by hand; a lock
file left behind by a killed process is a stale note that the next writer
overwrites.  A clean release removes the file (and the folder, when the lock
created it and nothing else was written there).

The lock is re-entrant within one process (``train`` locks its output folder
and, through ``fit``, its checkpoint folder, which may be the same one).
Where the file system does not support locks (some network file systems
without ``flock`` support), a warning says so and the run goes on unlocked.
"""

import contextlib
import errno
import os
import socket
import sys
import threading
import warnings
from pathlib import Path

from .exceptions import AstroSBGMLockWarning

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "FolderLockedError", "AstroSBGMLockWarning", "folder_lock",
           "acquire", "release", "check_free", "lock_holder"]

#: Name of the lock file inside a locked folder (a dot file: folder checks skip it).
LOCK_NAME = ".astro_sbgm.lock"


class FolderLockedError(OSError):
    """Another process is writing into the folder (it holds the folder's lock).

    Attributes
    ----------
    folder : `pathlib.Path`
        The folder.
    pid : int or None
        The holder's process id, as it wrote it in the lock file.
    """

    def __init__(self, message, folder=None, pid=None):
        super().__init__(message)
        self.folder = folder
        self.pid = pid

    def __str__(self):
        return str(self.args[0])


_held = {}          # resolved folder -> [fd or None, count, created dirs]
_guard = threading.Lock()


def _key(folder):
    return str(Path(os.path.abspath(folder)))


def lock_holder(folder):
    """What the lock file of ``folder`` says about its writer, or None.

    Parameters
    ----------
    folder : str or path

    Returns
    -------
    dict or None
        ``{"pid": int or None, "host": str, "command": str}`` read from the
        lock file (which may be a stale note of a process that ended), or None
        without a lock file.
    """
    try:
        text = (Path(folder) / LOCK_NAME).read_text()
    except OSError:
        return None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        pid = int(fields.get("pid", ""))
    except ValueError:
        pid = None
    return {"pid": pid, "host": fields.get("host", "?"), "command": fields.get("command", "")}


def _refusal(folder, what):
    info = lock_holder(folder) or {}
    pid = info.get("pid")
    host = info.get("host")
    who = "another astro_sbgm run" + (f" (pid {pid}" + (f" on {host})" if host not in (
        None, "?", socket.gethostname()) else ")") if pid is not None else "")
    stop = f"stop it (kill {pid})" if pid is not None else "stop it"
    return FolderLockedError(
        f"cannot {what} {str(folder)!r}: {who} is writing there; wait for it to end, "
        f"{stop}, or choose another folder", folder=Path(folder), pid=pid)


def _missing_parents(folder):
    """The folders that ``folder.mkdir(parents=True)`` would create, deepest first."""
    out = []
    p = Path(os.path.abspath(folder))
    while not p.exists():
        out.append(p)
        if p.parent == p:
            break
        p = p.parent
    return out


def acquire(folder, what="write to"):
    """Take the writer's lock of ``folder`` (created if needed) for this process.

    Parameters
    ----------
    folder : str or path
        The folder to write into.
    what : str
        The refused action, for the message: "cannot {what} {folder}: ...".

    Returns
    -------
    `pathlib.Path`
        The folder.

    Raises
    ------
    FolderLockedError
        If another process holds the lock (the message names the folder and
        the holder's pid).
    NotADirectoryError
        If ``folder`` is a file.
    """
    folder = Path(folder)
    key = _key(folder)
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return folder
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{str(folder)!r} is a file; give a folder")
        created = _missing_parents(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fd = None
        if fcntl is not None:
            try:
                fd = _lock_file(folder, what)
            except BaseException:
                _remove_empty(created)
                raise
        _held[key] = [fd, 1, created]
    return folder


def _lock_file(folder, what):
    path = folder / LOCK_NAME
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _refusal(folder, what) from None
            warnings.warn(f"cannot lock {str(folder)!r} ({err.strerror}): this file system "
                          "does not support locks, so nothing stops a second run from "
                          "writing there at the same time; make sure only one does",
                          AstroSBGMLockWarning)
            return None
        # the holder before us may have removed the file between our open and our lock
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        note = (f"pid={os.getpid()}\nhost={socket.gethostname()}\n"
                f"command={' '.join(sys.argv)[:500]}\n")
        os.ftruncate(fd, 0)
        os.write(fd, note.encode())
        return fd
    raise _refusal(folder, what)  # pragma: no cover - a storm of lock and unlock


def _remove_empty(created):
    for p in created:  # deepest first; stops at the first that is not empty
        try:
            p.rmdir()
        except OSError:
            break


def check_free(folder, what="write to"):
    """Raise `FolderLockedError` if another process holds the lock of ``folder``.

    A probe for an early, friendly refusal (the lock itself is taken by
    `acquire`): it creates nothing, and a folder this process locks is free.
    The probe takes a shared lock for an instant, so it never blocks anyone
    for longer than that.
    """
    if fcntl is None or _key(folder) in _held:
        return
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:   # no lock file: nobody has locked the folder
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise _refusal(folder, what) from None
    finally:
        os.close(fd)   # closing drops the probe's lock


def release(folder):
    """Give back one hold of the lock of ``folder`` taken by `acquire`.

    The last release removes the lock file, then the folders that `acquire`
    created if they are empty.  Releasing a folder this process does not
    lock does nothing.
    """
    key = _key(folder)
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        fd, _, created = entry
        if fd is not None:
            try:  # unlink while holding the lock: a waiting writer re-checks the inode
                os.unlink(Path(folder) / LOCK_NAME)
            except OSError:
                pass
            os.close(fd)
        _remove_empty(created)


@contextlib.contextmanager
def folder_lock(folder, what="write to"):
    """Hold the writer's lock of ``folder`` within the block (see `acquire`).

    ``folder=None`` locks nothing.
    """
    if folder is None:
        yield None
        return
    path = acquire(folder, what)
    try:
        yield path
    finally:
        release(folder)
