"""Multi-process helpers: start-up from ``torchrun``, rank queries, sharding, barriers.

Everything here is a thin layer over `torch.distributed`; a process that was
not launched by ``torchrun`` (no ``WORLD_SIZE`` in the environment, or
``WORLD_SIZE=1``) never creates a process group and every helper is a cheap
no-op: rank 0 of a world of one.

``torchrun`` (or SLURM through ``torchrun``) describes each process with
environment variables: ``RANK`` (global rank), ``WORLD_SIZE`` (number of
processes), ``LOCAL_RANK`` (rank on this node, used to pick the GPU),
``MASTER_ADDR`` and ``MASTER_PORT`` (where rank 0 listens).  `init_distributed`
reads them and joins the group with the NCCL backend on CUDA devices and gloo
on the CPU.

Sharding is by contiguous blocks of a global index: `shard_range` gives
process ``r`` of ``W`` the indices ``[r n // W, (r + 1) n // W)``, so the
union over ranks is ``0 .. n - 1`` exactly once and the concatenation in rank
order is the single-process order.
"""

import atexit
import datetime
import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "is_distributed", "get_rank", "get_world_size",
           "get_local_rank", "is_main_process", "barrier", "broadcast_object",
           "all_reduce_mean", "run_on_main", "shard_range", "shard_indices",
           "check_batch_divisible", "local_device", "launched_by_torchrun", "cleanup"]

_REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_OWNED = {"group": False}


def launched_by_torchrun():
    """True when the environment describes a world of more than one process.

    Returns
    -------
    bool
        ``int(os.environ["WORLD_SIZE"]) > 1``; False when it is unset.
    """
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; "
                         "launch with torchrun or unset it") from None


def is_distributed():
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank():
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size():
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank():
    """Rank of this process on its node, from ``LOCAL_RANK`` (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process():
    """True on rank 0 (and in a non-distributed run)."""
    return get_rank() == 0


def local_device(device="auto"):
    """The device this process should use.

    Parameters
    ----------
    device : str or `torch.device`
        ``"auto"`` (CUDA when present, else CPU), ``"cuda"``, ``"cpu"``, ...
        A CUDA device without an index becomes ``cuda:LOCAL_RANK`` when the
        process was launched by ``torchrun``, so that each process of a node
        drives its own GPU.

    Returns
    -------
    `torch.device`
    """
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        device = torch.device("cuda", get_local_rank())
    return device


def init_distributed(device="cpu", backend=None, timeout=None):
    """Join the process group described by the ``torchrun`` environment.

    Does nothing (and returns False) when the process was not launched as
    part of a world of several processes; returns True when a group of more
    than one process is active after the call (also when it existed before).

    Parameters
    ----------
    device : str or `torch.device`
        The device this process trains or samples on; it picks the backend.
    backend : {None, "nccl", "gloo"}
        None: NCCL for CUDA devices, gloo otherwise.
    timeout : float, optional
        Seconds a collective may wait for the other ranks before the job
        fails (PyTorch's default, 10 to 30 minutes, when None).

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        If ``WORLD_SIZE`` > 1 but ``RANK``, ``MASTER_ADDR`` or
        ``MASTER_PORT`` is missing (the process was not started by
        ``torchrun``), or the backend is unknown.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if not launched_by_torchrun():
        return False
    if not dist.is_available():  # pragma: no cover - builds without distributed
        raise ValueError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    missing = [k for k in _REQUIRED_ENV if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} "
                         "is not set: launch the script with torchrun (which sets RANK, "
                         "LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT), or unset "
                         "WORLD_SIZE for a single process")
    device = torch.device(device)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"unknown backend {backend!r}; use 'nccl' (GPUs) or 'gloo' (CPU)")
    if device.type == "cuda":
        torch.cuda.set_device(device if device.index is not None
                              else torch.device("cuda", get_local_rank()))
    kwargs = {}
    if timeout is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=float(timeout))
    dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    if not _OWNED["group"]:
        atexit.register(cleanup)
    _OWNED["group"] = True
    return is_distributed()


def cleanup():
    """Leave the process group, if this module created it."""
    if _OWNED["group"] and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED["group"] = False


def barrier():
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_object(obj, src=0):
    """``obj`` of rank ``src`` on every rank (a picklable, small Python object).

    The object travels through `torch.distributed.broadcast_object_list`
    between processes of one job only; nothing is read from disk.
    """
    if not is_distributed():
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value):
    """Mean of a scalar tensor over the ranks (the value itself when not distributed)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / get_world_size()


class _RemoteError(RuntimeError):
    """An error of rank 0 whose type could not be rebuilt on another rank."""


def run_on_main(fn, *args, **kwargs):
    """Call ``fn`` on rank 0 only and give its result to every rank.

    If ``fn`` raises on rank 0, every rank raises an exception of the same
    type with the same message, so no rank is left waiting at the next
    collective.  The call is also a barrier.

    Returns
    -------
    object
        What ``fn`` returned on rank 0 (it must be picklable when distributed).
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    result, error, status = None, None, None
    if get_rank() == 0:
        try:
            result = fn(*args, **kwargs)
        except Exception as err:  # raised again below, on every rank
            error = err
        status = (result, None if error is None else (type(error), str(error)))
    result, remote = broadcast_object(status)
    if error is not None:
        raise error
    if remote is not None:
        cls, text = remote
        try:
            err = cls(text)
        except Exception:
            err = _RemoteError(f"on rank 0: {cls.__name__}: {text}")
        raise err
    return result


def shard_range(n, rank=None, world_size=None):
    """The contiguous block of ``range(n)`` that belongs to ``rank``.

    Parameters
    ----------
    n : int
        Number of items.
    rank, world_size : int, optional
        Default: this process's rank and the world size.

    Returns
    -------
    range
        ``range(rank * n // world_size, (rank + 1) * n // world_size)``;
        the blocks of all ranks are disjoint and cover ``range(n)``.
    """
    rank = get_rank() if rank is None else int(rank)
    world_size = get_world_size() if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return range(rank * n // world_size, (rank + 1) * n // world_size)


def shard_indices(items, rank=None, world_size=None):
    """This rank's contiguous share of a sequence (a list of files, of indices...).

    Parameters
    ----------
    items : sequence
        The full list, in the same order on every rank.
    rank, world_size : int, optional
        Default: this process's rank and the world size.

    Returns
    -------
    list
    """
    items = list(items)
    r = shard_range(len(items), rank, world_size)
    return items[r.start:r.stop]


def check_batch_divisible(batch_size, world_size=None):
    """The per-process batch, or a clear error when the world size does not divide it.

    Parameters
    ----------
    batch_size : int
        The global batch (images per optimizer step, all processes together).
    world_size : int, optional
        Default: the number of processes.

    Returns
    -------
    int
        ``batch_size // world_size``.

    Raises
    ------
    ValueError
        If ``batch_size`` is not a multiple of ``world_size``.
    """
    world_size = get_world_size() if world_size is None else int(world_size)
    batch_size = int(batch_size)
    if batch_size % world_size:
        lower = max(world_size, batch_size // world_size * world_size)
        raise ValueError(
            f"batch_size={batch_size} (the global batch, all processes together) is not "
            f"divisible by the number of processes, {world_size}; use a multiple of "
            f"{world_size} (e.g. {lower} or {lower + world_size}) or launch a number of "
            f"processes that divides {batch_size}")
    return batch_size // world_size
