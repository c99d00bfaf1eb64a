"""The training loop: augmentation, EMA, checkpoints, resume and data parallelism.

`Trainer` owns everything that changes while a model learns (the network,
its exponential moving average, the optimizer, the step counter, the data
order and the random state) and can write all of it to a checkpoint and read
it back, so that a run that is interrupted and resumed ends with exactly the
weights of a run that was not.

Checkpoints are a ``.safetensors`` file (tensors: weights, EMA, optimizer
moments, random state, data order) and a ``.json`` file (everything else)
per saved step, in a directory marked by a ``astro_sbgm-checkpoints.json``
file.  Each file is written under a temporary name, flushed to disk and
renamed, and the JSON record is written last, so a checkpoint either exists
whole or not at all; a write that fails (a full disk) leaves the earlier
checkpoints as they were.  The record stores the size and SHA-256 of its
tensors file: resuming checks the newest checkpoint, skips a damaged one with
a warning (the file is left where it is) and continues from the newest intact
one.  One process at a time writes into a checkpoint directory: the run holds
an OS lock on a file in it (`astro_sbgm._locking`).  No pickle is ever
written or read.

Under ``torchrun`` (a process group of ``W`` > 1 processes, see
`astro_sbgm.distributed`) the network is wrapped in
`~torch.nn.parallel.DistributedDataParallel`.  ``batch_size`` stays the
*global* batch: every rank draws the same global batch order, augmentation,
timesteps and noise from the shared generator and trains on its own slice of
``batch_size / W`` images, so a run on ``W`` processes sees exactly the
batches of a one-process run and a checkpoint of either can be resumed with
any number of processes.  The EMA and every checkpoint write happen on rank 0.
"""

import contextlib
import copy
import functools
import json
import os
import signal
import threading
import time
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tqdm.auto import tqdm

from . import distributed as _dist
from . import _locking
from ._locking import FolderLockedError
from ._validation import check_positive_int
from ._version import __version__
from ._serialization import (atomic_save_tensors, atomic_write_text, bundle_weights,
                             default_file_mode, file_digest, fsync, share_like_other_files,
                             split_weights)
from .diffusion import draw_training_noise, training_loss
from .exceptions import AstroSBGMTrainingWarning

__all__ = ["EMA", "Trainer", "augment", "atomic_write_text", "CHECKPOINT_MARKER",
           "latest_checkpoint", "PRECISIONS", "AstroSBGMTrainingWarning", "autocast_forward",
           "tf32", "TrainingInterrupted", "STOP_SIGNALS", "AstroSBGMCheckpointWarning",
           "verify_checkpoint", "FolderLockedError", "prune_checkpoints"]

#: Signals after which training stops cleanly at the end of the current step:
#: Ctrl-C, what SLURM and torchrun send at a time limit or preemption, and
#: SLURM's advance warning (``#SBATCH --signal=USR1@120``).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1")
                     if hasattr(signal, name))


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at the end of a step after a signal (or Ctrl-C).

    Attributes
    ----------
    step : int
        The optimizer steps taken.
    signum : int
        The signal received (``signal.SIGINT`` for Ctrl-C).
    checkpoint : `pathlib.Path` or None
        The checkpoint record written at that step (None without a
        checkpoint directory).
    exit_code : int
        The conventional exit status of a process ended by that signal
        (128 + signal number: 130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, step, signum, checkpoint=None):
        self.step = int(step)
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.exit_code = 128 + self.signum
        where = (f"checkpoint saved in {checkpoint.parent}; continue with --resume"
                 if checkpoint is not None else "no checkpoint_dir, nothing was written")
        super().__init__(f"interrupted at step {self.step} ({signal.Signals(self.signum).name}); "
                         f"{where}")


@contextlib.contextmanager
def _stop_on_signals():
    """Within the block, `STOP_SIGNALS` set a flag instead of ending the process.

    Yields a one-element list holding the signal number received (or None).
    Outside the main thread (where handlers cannot be installed) nothing
    changes.  A second Ctrl-C while the step finishes interrupts at once.
    """
    got = [None]
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum, frame):
        if got[0] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        got[0] = signum

    old = {}
    for sig in STOP_SIGNALS:
        try:
            old[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):   # not settable here
            pass
    try:
        yield got
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


#: Precisions of the network's forward pass (``"bf16"``: autocast on CUDA).
PRECISIONS = ("fp32", "bf16")

CHECKPOINT_MARKER = "astro_sbgm-checkpoints.json"


class AstroSBGMCheckpointWarning(AstroSBGMTrainingWarning):
    """A damaged checkpoint was skipped on resume (it is left on disk, untouched)."""


# atomic writes live in astro_sbgm._serialization; the old names stay importable from here
_fsync = fsync
_default_file_mode = default_file_mode
_share_like_other_files = share_like_other_files
_file_digest = file_digest


def _atomic_save_tensors(tensors, path, metadata=None):
    """`astro_sbgm._serialization.atomic_save_tensors` (the name checkpoints use)."""
    return atomic_save_tensors(tensors, path, metadata)


def augment(x, generator):
    """Random element of the dihedral group (flips and 90-degree rotations) per image.

    Parameters
    ----------
    x : `torch.Tensor`
        Images ``(n, band, y, x)`` (square).
    generator : `torch.Generator`
        CPU generator.

    Returns
    -------
    `torch.Tensor`
    """
    return _apply_dihedral(x, _dihedral_codes(x.shape[0], generator))


def _dihedral_codes(n, generator):
    return torch.randint(0, 8, (n,), generator=generator).tolist()


def _apply_dihedral(x, codes):
    out = []
    for img, code in zip(x, codes):
        if code & 4:
            img = img.flip(-1)
        out.append(torch.rot90(img, code & 3, dims=(-2, -1)))
    return torch.stack(out)


class autocast_forward:
    """Call a network under `torch.autocast` and return its output in float32.

    Only the network runs in reduced precision; the loss, the schedule and
    the sampler arithmetic around it stay in float32.

    Parameters
    ----------
    net : callable
        ``net(x, t)``.
    device_type : str
        ``"cuda"`` or ``"cpu"``.
    dtype : `torch.dtype`
        Autocast dtype (`torch.bfloat16`).
    """

    def __init__(self, net, device_type, dtype=torch.bfloat16):
        self.net = net
        self.device_type = device_type
        self.dtype = dtype

    def __call__(self, x, t, **kwargs):
        """``net(x, t, **kwargs)`` under autocast, cast back to float32."""
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.net(x, t, **kwargs)
        return out.float()


@contextlib.contextmanager
def tf32(enabled):
    """Allow TensorFloat-32 matrix products and convolutions on CUDA inside the block.

    The previous settings are restored on exit.  Without CUDA this does nothing.

    Parameters
    ----------
    enabled : bool
        Allow TF32 (Ampere and later GPUs; about 10 bits of mantissa in the
        products, float32 accumulation).
    """
    if not enabled or not torch.cuda.is_available():
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class EMA:
    """Exponential moving average of a network's weights, with a half-life in images.

    After each optimizer step the average moves towards the weights with
    ``decay = 0.5 ** (batch / h)``, where the half-life ``h`` is
    ``min(halflife, rampup * images_seen)``: early in a run the average only
    remembers the recent past, so a short run never samples from an average
    dominated by the random initial weights (Karras et al. 2022).

    Parameters
    ----------
    net : `torch.nn.Module`
        The network to follow (copied).
    halflife : float
        Half-life in training images.
    rampup : float or None
        Fraction of the images seen so far that bounds the half-life;
        None for a fixed half-life.
    """

    def __init__(self, net, halflife=50_000, rampup=0.1):
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.halflife = float(halflife)
        self.rampup = rampup

    def decay(self, images_seen, batch):
        """The decay used for an update after ``images_seen`` images."""
        h = self.halflife
        if self.rampup is not None:
            h = min(h, self.rampup * images_seen)
        return 0.5 ** (batch / max(h, 1e-8))

    @torch.no_grad()
    def update(self, net, images_seen, batch):
        """Move the average towards ``net``."""
        d = self.decay(images_seen, batch)
        for pe, p in zip(self.net.parameters(), net.parameters()):
            pe.lerp_(p.detach(), 1.0 - d)
        for be, b in zip(self.net.buffers(), net.buffers()):
            be.copy_(b)


def _read_record(record_path):
    """The JSON record of a checkpoint, or ValueError naming the file."""
    record_path = Path(record_path)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint record {str(record_path)!r} cannot be read "
                         f"({type(err).__name__}: {err})") from None
    if not isinstance(record, dict) or record.get("format") != "astro_sbgm checkpoint":
        raise ValueError(f"{str(record_path)!r} is not an astro_sbgm checkpoint record")
    return record


def verify_checkpoint(record_path):
    """Check that a checkpoint is whole: its record reads and its tensors match it.

    The tensors file must have the size and SHA-256 stored in the record.
    A record written before checksums were stored only needs a tensors file
    whose safetensors header reads and covers the whole file (which catches a
    truncated file).  Nothing is modified.

    Parameters
    ----------
    record_path : str or path
        The ``checkpoint-*.json`` record.

    Returns
    -------
    dict
        The record.

    Raises
    ------
    ValueError
        If the record or its tensors file is damaged, truncated or missing;
        the message names the file and what is wrong with it.
    """
    record_path = Path(record_path)
    record = _read_record(record_path)
    tensors = record_path.with_suffix(".safetensors")
    if not tensors.is_file():
        raise ValueError(f"checkpoint {str(record_path)!r} has no tensors file "
                         f"{tensors.name!r} beside it")
    stored = record.get("tensors") or {}
    size = tensors.stat().st_size
    if "size" in stored and size != int(stored["size"]):
        raise ValueError(f"checkpoint file {str(tensors)!r} is damaged: {size} bytes where "
                         f"{int(stored['size'])} were written (a truncated copy or a full "
                         "disk?)")
    if "sha256" in stored:
        sha256, _ = _file_digest(tensors)
        if sha256 != stored["sha256"]:
            raise ValueError(f"checkpoint file {str(tensors)!r} is damaged: its SHA-256 "
                             f"{sha256[:12]}... differs from the {stored['sha256'][:12]}... "
                             "written with it")
    else:   # a record of an older version: the header must read and cover the file
        try:
            with safe_open(str(tensors), framework="pt") as f:
                list(f.keys())
        except Exception as err:  # SafetensorError, OSError
            raise ValueError(f"checkpoint file {str(tensors)!r} is damaged: it is not a "
                             f"readable safetensors file ({err})") from None
    return record


def _keep_damaged(stem):
    """Rename a damaged checkpoint ``stem.{json,safetensors}`` to ``*.damaged`` (kept)."""
    record, tensors = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not record.exists() and not tensors.exists():
        return
    try:
        verify_checkpoint(record)
        return                      # intact: overwriting it with the same step is fine
    except ValueError:
        pass
    for path in (tensors, record):
        if path.exists():
            dest, n = path.with_name(path.name + ".damaged"), 1
            while dest.exists():
                n += 1
                dest = path.with_name(f"{path.name}.damaged{n}")
            os.replace(path, dest)


def checkpoint_run_config(record_path, params, checkpoint_dir):
    """The run configuration saved with a checkpoint, refused if made with other parameters.

    Resuming checks compatibility in two places only: here, the model's
    hyper-parameters (``params``, the estimator's JSON parameters) against
    those saved with the run; `Trainer.load_checkpoint`, the training state
    (the data, the global batch).

    Returns
    -------
    dict
        The saved ``config`` (``params`` and ``scaler``).

    Raises
    ------
    ValueError
        If the saved hyper-parameters differ (the differing names are listed).
    """
    saved = json.loads(Path(record_path).read_text()).get("config") or {}
    if saved.get("params") != params:
        diff = sorted(k for k in params if (saved.get("params") or {}).get(k) != params[k])
        raise ValueError(f"the checkpoint in {str(checkpoint_dir)!r} was made with "
                         f"other hyper-parameters (differing: {diff}); resume with "
                         "the same model or use a new checkpoint_dir")
    return saved


def _checkpoint_records(directory):
    """The ``checkpoint-STEP.json`` records of ``directory``, oldest first (the
    zero-padded step numbers sort in order)."""
    return sorted(Path(directory).glob("checkpoint-*.json"))


def prune_checkpoints(directory, keep):
    """Delete all but the newest ``keep`` checkpoints of ``directory``.

    A checkpoint is a ``checkpoint-STEP.json`` record with its tensors file;
    the record goes first, so a crash between the two deletions leaves a
    tensors file without a record, which `latest_checkpoint` never takes.
    Damaged checkpoints (``*.damaged``) and other files are left.

    Parameters
    ----------
    directory : str or path
        A checkpoint directory.
    keep : int
        How many of the newest records to keep (at least 1).

    Returns
    -------
    list of `pathlib.Path`
        The records deleted, oldest first.
    """
    keep = check_positive_int("keep", keep)
    gone = _checkpoint_records(directory)[:-keep]
    for record in gone:
        record.unlink(missing_ok=True)
        record.with_suffix(".safetensors").unlink(missing_ok=True)
    return gone


def latest_checkpoint(directory):
    """The JSON record of the newest intact checkpoint in ``directory``, or None.

    Checkpoints are tried newest first with `verify_checkpoint`; a damaged
    one is skipped with a warning that names it, and left on disk as it is.
    A record whose tensors file is gone is not a checkpoint (skipped quietly).

    Parameters
    ----------
    directory : str or path
        A checkpoint directory (it need not exist).

    Returns
    -------
    `pathlib.Path` or None
        The ``checkpoint-*.json`` record, or None when there is no checkpoint.

    Raises
    ------
    ValueError
        If there are checkpoints but every one is damaged (the message names
        the directory).

    Warns
    -----
    AstroSBGMCheckpointWarning
        For each damaged checkpoint newer than the one returned.
    """
    directory = Path(directory)
    records = _checkpoint_records(directory)
    damaged = []
    for rec in reversed(records):
        if not rec.with_suffix(".safetensors").exists():
            continue
        try:
            verify_checkpoint(rec)
        except ValueError as err:
            damaged.append(rec.name)
            warnings.warn(f"{err}; skipped, trying the checkpoint before it (the damaged "
                          f"files are kept: renamed to {rec.stem}.*.damaged if training "
                          "writes that step again)", AstroSBGMCheckpointWarning)
            continue
        return rec
    if damaged:
        raise ValueError(f"no intact checkpoint in {str(directory)!r}: all {len(damaged)} "
                         f"are damaged (newest {damaged[0]}), and were left as they are; "
                         "train from the start with a new checkpoint_dir, or with "
                         "resume=False")
    return None


def refuse_foreign_checkpoint_dir(directory):
    """Raise unless ``directory`` is new, empty, or an astro_sbgm checkpoint directory.

    Changes nothing on disk.

    Raises
    ------
    NotADirectoryError
        If ``directory`` is a file.
    FileExistsError
        If it holds files that are not astro_sbgm checkpoints.
    FolderLockedError
        If another process is writing checkpoints there.
    """
    directory = Path(directory)
    marker = directory / CHECKPOINT_MARKER
    if directory.exists():
        if not directory.is_dir():
            raise NotADirectoryError(f"checkpoint_dir {str(directory)!r} is a file; give a "
                                     "directory")
        others = [p.name for p in directory.iterdir() if not p.name.startswith(".")]
        if others and not marker.exists():
            raise FileExistsError(
                f"checkpoint_dir {str(directory)!r} already holds files that are not "
                f"astro_sbgm checkpoints ({', '.join(sorted(others)[:3])}...); give an empty "
                "or new directory so nothing of yours is overwritten")
        _locking.check_free(directory, what="write checkpoints to")
    return directory


def _check_checkpoint_dir(directory, config):
    """Refuse a foreign directory, take its writer's lock, mark it (rank 0)."""
    directory = refuse_foreign_checkpoint_dir(directory)
    marker = directory / CHECKPOINT_MARKER
    _locking.acquire(directory, what="write checkpoints to")
    try:
        if not marker.exists():
            atomic_write_text(marker, json.dumps({"format": "astro_sbgm checkpoints",
                                                  "version": __version__, "config": config},
                                                 indent=1))
    except BaseException:
        _locking.release(directory)
        raise
    return directory


def _param_groups(net, condition_lr_scale):
    """Adam's parameter groups: one, or the condition embedding apart at its scale."""
    scale = float(condition_lr_scale)
    if not scale > 0:
        raise ValueError(f"condition_lr_scale must be > 0, got {condition_lr_scale}")
    cond = getattr(net, "cond_mlp", None)
    if cond is None or scale == 1.0:
        return [{"params": list(net.parameters()), "lr_scale": 1.0}]
    own = {id(p) for p in cond.parameters()}
    rest = [p for p in net.parameters() if id(p) not in own]
    return [{"params": rest, "lr_scale": 1.0},
            {"params": list(cond.parameters()), "lr_scale": scale}]


class Trainer:
    """Train a `~astro_sbgm.diffusion.Denoiser` on a tensor of scaled images.

    Parameters
    ----------
    denoiser : `~astro_sbgm.diffusion.Denoiser`
        Network, schedule and objective.
    data : `torch.Tensor` or `~astro_sbgm.training_data.StreamingData`
        Training images in [-1, 1], ``(n, band, y, x)``, kept on the CPU, or
        a set read from disk batch by batch (the same rows in the same order).
    batch_size : int
        Images per optimizer step: the *global* batch, all processes
        together (each of ``W`` processes trains on ``batch_size / W``).
    lr : float
        Adam learning rate (after a linear warm-up of ``lr_warmup`` steps).
    seed : int
        Seeds the data order, augmentation, timesteps and noise.
    loss, min_snr_gamma
        Passed to `~astro_sbgm.diffusion.training_loss`.
    grad_clip : float or None
        Clip the gradient norm to this value.
    ema_halflife, ema_rampup
        See `EMA`.
    augment_data : bool
        Apply random flips and 90-degree rotations.
    continuous_time : bool
        Draw training timesteps from the interval ``[0, T - 1]`` rather than
        the integers (see `~astro_sbgm.diffusion.draw_training_noise`).
    device : `torch.device`
        Where the network runs.
    distributed : bool or None
        Data-parallel training over the active process group
        (`astro_sbgm.distributed`); None uses it when a group of more than
        one process is active.
    precision : {"fp32", "bf16"}
        ``"bf16"`` runs the network's forward pass under bfloat16 autocast on
        CUDA (the loss is computed in float32); ignored with a warning on the
        CPU, where it does not help.
    compile : bool
        Run the network through `torch.compile`.
    pin_memory : bool or None
        Copy batches to the GPU from page-locked memory without blocking;
        None: on for CUDA devices, off otherwise.
    conditions : `torch.Tensor`, optional
        Standardised condition vectors ``(n, k)``, row-aligned with ``data``,
        for a network with a condition embedding (``net(x, t, cond=c)``); a
        row with a NaN trains unconditionally.
    condition_dropout : float
        Probability that a row's condition is dropped (set to NaN) in a
        batch, so that one network learns the conditional and the
        unconditional prediction (classifier-free guidance).  The drops come
        from the run's generator, after the augmentation of the batch.
    condition_lr_scale : float
        The network's condition embedding (``net.cond_mlp``) learns at this
        multiple of ``lr``; 1 (the default) keeps a single parameter group.

    Raises
    ------
    ValueError
        For an empty training set, an unknown precision, or a batch size that
        the number of processes does not divide.
    """

    def __init__(self, denoiser, data, batch_size=16, lr=2e-4, seed=0, loss="l2",
                 min_snr_gamma=None, grad_clip=1.0, ema_halflife=50_000, ema_rampup=0.1,
                 lr_warmup=100, augment_data=True, device="cpu", distributed=None,
                 precision="fp32", compile=False, pin_memory=None, continuous_time=False,
                 conditions=None, condition_dropout=0.1, condition_lr_scale=1.0):
        if data.shape[0] == 0:
            raise ValueError("the training set is empty")
        if conditions is not None:
            conditions = torch.as_tensor(conditions, dtype=torch.float32)
            if conditions.ndim != 2 or conditions.shape[0] != data.shape[0]:
                raise ValueError(f"conditions must have shape ({data.shape[0]}, k), one row "
                                 f"per training image, got {tuple(conditions.shape)}")
        if not 0.0 <= float(condition_dropout) <= 1.0:
            raise ValueError(f"condition_dropout must lie in [0, 1], got {condition_dropout}")
        self.conditions = conditions
        self.condition_dropout = float(condition_dropout)
        self._batch_idx = None
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
        self.denoiser = denoiser
        self.net = denoiser.net
        self.data = data
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.lr_warmup = int(lr_warmup)
        self.loss = loss
        self.min_snr_gamma = min_snr_gamma
        self.grad_clip = grad_clip
        self.augment_data = augment_data
        self.continuous_time = bool(continuous_time)
        self.device = torch.device(device)
        if distributed is None:
            distributed = _dist.is_distributed()
        if distributed and not _dist.is_distributed():
            raise ValueError("distributed=True but no process group of more than one process "
                             "is active; launch with torchrun and call "
                             "astro_sbgm.distributed.init_distributed() first")
        self.distributed = bool(distributed)
        self.world_size = _dist.get_world_size() if self.distributed else 1
        self.rank = _dist.get_rank() if self.distributed else 0
        self.local_batch = _dist.check_batch_divisible(self.batch_size, self.world_size)
        self.optimizer = torch.optim.Adam(_param_groups(self.net, condition_lr_scale),
                                          lr=self.lr)
        self.ema = EMA(self.net, ema_halflife, ema_rampup)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.step = 0
        self.losses = []
        self._perm = torch.randperm(data.shape[0], generator=self.generator)
        self._pos = 0
        cuda = self.device.type == "cuda"
        if precision == "bf16" and not cuda:
            warnings.warn("precision='bf16' is used on CUDA devices only; training on "
                          f"{self.device} runs in float32", AstroSBGMTrainingWarning)
            precision = "fp32"
        self.precision = precision
        self.pin_memory = cuda if pin_memory is None else bool(pin_memory) and cuda
        self._pinned = None
        self.train_denoiser = self._wrap(denoiser, compile)

    def _wrap(self, denoiser, compile):
        """The denoiser used for training: DDP, compile and autocast around the network."""
        fwd = self.net
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            fwd = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if compile:
            fwd = torch.compile(fwd)
        if self.precision == "bf16":
            fwd = autocast_forward(fwd, self.device.type, torch.bfloat16)
        if fwd is self.net:
            return denoiser
        wrapped = copy.copy(denoiser)
        wrapped.net = fwd
        return wrapped

    # ------------------------------------------------------------------ data
    def _next_indices(self):
        idx = []
        while len(idx) < self.batch_size:
            if self._pos >= len(self._perm):
                self._perm = torch.randperm(self.data.shape[0], generator=self.generator)
                self._pos = 0
            take = min(self.batch_size - len(idx), len(self._perm) - self._pos)
            idx.extend(self._perm[self._pos:self._pos + take].tolist())
            self._pos += take
        return idx

    def _gather(self, idx):
        if not isinstance(self.data, torch.Tensor):   # astro_sbgm.training_data.StreamingData
            part = self._local_slice() if self.distributed else slice(None)
            x = self.data.take(idx, self._perm, self._pos, self.batch_size, part)
            return x.to(self.device, non_blocking=self.pin_memory)
        if not self.pin_memory:
            return self.data[idx].to(self.device, non_blocking=True)
        shape = (len(idx),) + tuple(self.data.shape[1:])
        if self._pinned is None or self._pinned.shape != shape:
            self._pinned = torch.empty(shape, dtype=self.data.dtype).pin_memory()
        # the buffer is reused: the previous copy has finished, since every step waits
        # for its loss value on the host
        torch.index_select(self.data, 0, torch.as_tensor(idx), out=self._pinned)
        return self._pinned.to(self.device, non_blocking=True)

    def _conditioned(self, denoiser, idx, rows=slice(None)):
        """``denoiser`` whose network gets the conditions of images ``idx`` (with dropout).

        The dropout is drawn for the whole (global) batch ``idx``; ``rows``
        selects this process's part.  Without conditions, ``denoiser`` itself.
        """
        if self.conditions is None:
            return denoiser
        cond = self.conditions[torch.as_tensor(idx)].clone()
        drop = torch.rand(len(idx), generator=self.generator) < self.condition_dropout
        cond[drop] = float("nan")
        wrapped = copy.copy(denoiser)
        wrapped.net = functools.partial(denoiser.net, cond=cond[rows].to(self.device))
        return wrapped

    def _next_batch(self):
        """The next global batch (on this process's device), augmented."""
        self._batch_idx = self._next_indices()
        x = self._gather(self._batch_idx)
        if self.augment_data:
            x = augment(x, self.generator)
        return x

    def _local_slice(self):
        lo = self.rank * self.local_batch
        return slice(lo, lo + self.local_batch)

    def _distributed_loss(self):
        """This rank's share of the loss of the global batch (same draws as one process)."""
        idx = self._next_indices()
        sl = self._local_slice()
        codes = _dihedral_codes(len(idx), self.generator) if self.augment_data else None
        x0 = self._gather(idx[sl])
        if codes is not None:
            x0 = _apply_dihedral(x0, codes[sl])
        den = self._conditioned(self.train_denoiser, idx, sl)
        noise, t = draw_training_noise(self.denoiser, (len(idx),) + tuple(self.data.shape[1:]),
                                       self.generator, continuous_time=self.continuous_time)
        return training_loss(den, x0, loss=self.loss,
                             min_snr_gamma=self.min_snr_gamma, noise=noise[sl], t=t[sl])

    # ------------------------------------------------------------------ loop
    def train_step(self):
        """One optimizer step; returns the loss of the global batch."""
        self.net.train()
        for group in self.optimizer.param_groups:
            group["lr"] = (self.lr * group.get("lr_scale", 1.0)
                           * min(1.0, (self.step + 1) / max(self.lr_warmup, 1)))
        if self.distributed:
            loss = self._distributed_loss()
            shown = _dist.all_reduce_mean(loss.detach())
        else:
            x0 = self._next_batch()
            den = self._conditioned(self.train_denoiser, self._batch_idx)
            loss = training_loss(den, x0, self.generator, loss=self.loss,
                                 min_snr_gamma=self.min_snr_gamma,
                                 continuous_time=self.continuous_time)
            shown = loss
        if not torch.isfinite(shown):
            raise FloatingPointError(
                f"the training loss became {shown.item()} at step {self.step + 1}; lower the "
                f"learning rate (now {self.lr:g}) or check the training images for extreme "
                "values. The last checkpoint on disk (if any) is intact.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.optimizer.step()
        self.step += 1
        if self.rank == 0:
            self.ema.update(self.net, self.step * self.batch_size, self.batch_size)
        value = float(shown.detach())
        self.losses.append(value)
        return value

    def sync_ema(self):
        """Copy rank 0's EMA to every rank (the EMA is only updated on rank 0)."""
        if not self.distributed:
            return
        for tensor in list(self.ema.net.parameters()) + list(self.ema.net.buffers()):
            torch.distributed.broadcast(tensor.data, src=0)

    def run(self, steps, checkpoint_dir=None, checkpoint_every=1000, progress=True,
            config=None, time_limit=None, keep_checkpoints=None):
        """Train until ``self.step == steps``, writing checkpoints on the way.

        In a distributed run only rank 0 shows progress and writes; a
        failure to write on rank 0 is raised on every rank.

        Parameters
        ----------
        steps : int
            Total number of optimizer steps (a resumed run continues to it).
        checkpoint_dir : str or path, optional
            Where to write checkpoints (on a file system every rank sees).
        checkpoint_every : int
            Steps between checkpoints (the last step is always written).
        progress : bool
            Show a tqdm bar with the running loss.
        config : dict, optional
            JSON-safe description of the model, stored with the checkpoints.
        time_limit : float, optional
            Stop early, after the step during which this many seconds of
            training have passed (rank 0's clock decides for every rank); the
            step reached is written as a checkpoint.
        keep_checkpoints : int, optional
            Keep only the newest this many checkpoints in ``checkpoint_dir``:
            after each checkpoint is written, older ones are deleted (record
            first, then tensors; damaged ones, renamed ``*.damaged``, are
            left).  None (default) keeps every checkpoint, as a training
            curve needs.

        Raises
        ------
        TrainingInterrupted
            After SIGINT (Ctrl-C), SIGTERM or SIGUSR1: the current step is
            finished, a checkpoint of it written (with ``checkpoint_dir``),
            and the trainer stays usable at that step.  Under ``torchrun``
            the ranks agree on the step (a signal on any rank stops all).
        FolderLockedError
            If another process is writing into ``checkpoint_dir`` (it holds
            the directory's lock; the message names its pid).  Nothing is
            written.
        """
        start = time.perf_counter()
        keep = (None if keep_checkpoints is None
                else check_positive_int("keep_checkpoints", keep_checkpoints))
        if checkpoint_dir is not None:   # rank 0 holds the directory's lock during the run
            checkpoint_dir = _dist.run_on_main(_check_checkpoint_dir, checkpoint_dir, config)
        try:
            bar = tqdm(total=steps, initial=self.step, disable=not progress or self.rank != 0,
                       desc="training", unit="step", dynamic_ncols=True)
            stop = None
            with _stop_on_signals() as got:
                try:
                    stop = self._loop(steps, checkpoint_dir, checkpoint_every, config,
                                      time_limit, start, bar, got, keep)
                finally:
                    bar.close()
        finally:
            if checkpoint_dir is not None:
                _locking.release(checkpoint_dir)
        self.sync_ema()
        if stop is not None:
            signum, record = stop
            raise TrainingInterrupted(self.step, signum, record)

    def _loop(self, steps, checkpoint_dir, checkpoint_every, config, time_limit, start, bar,
              got, keep=None):
        """The steps of `run`; returns ``(signal, checkpoint)`` after a signal, else None."""
        running = None
        while self.step < steps:
            value = self.train_step()
            running = value if running is None else 0.98 * running + 0.02 * value
            bar.update(1)
            if self.step % 10 == 0:
                bar.set_postfix(loss=f"{running:.4f}")
            out_of_time = (time_limit is not None
                           and time.perf_counter() - start > float(time_limit))
            if self.distributed and time_limit is not None:
                out_of_time = bool(_dist.broadcast_object(out_of_time))
            signum = got[0] or 0
            if self.distributed:   # a signal on any rank stops every rank at this step
                flag = torch.tensor(float(signum), device=self.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                signum = int(flag.item())
            if checkpoint_dir is not None and (self.step % checkpoint_every == 0
                                               or self.step == steps or out_of_time
                                               or signum):
                record = _dist.run_on_main(self.save_checkpoint, checkpoint_dir, config)
                if keep is not None:
                    _dist.run_on_main(prune_checkpoints, checkpoint_dir, keep)
            else:
                record = None
            if signum:
                return signum, record
            if out_of_time:
                break
        return None

    # ------------------------------------------------------------------ checkpoints
    def state_tensors(self):
        """Every tensor of the training state, flat, for safetensors."""
        out = bundle_weights(self.net.state_dict(), self.ema.net.state_dict())
        opt = self.optimizer.state_dict()
        for idx, st in opt["state"].items():
            for name, val in st.items():
                out[f"optim.{idx}.{name}"] = torch.as_tensor(val)
        out["rng.train"] = self.generator.get_state()
        out["data.perm"] = self._perm
        return out

    def save_checkpoint(self, directory, config=None):
        """Write the full training state for the current step (atomically).

        The tensors go to ``checkpoint-STEP.safetensors``, then the record
        (with the tensors file's size and SHA-256) to ``checkpoint-STEP.json``,
        each through a temporary file flushed to disk and renamed.  A damaged
        checkpoint of the same step (a run resumed from before it) is not
        overwritten but renamed to ``checkpoint-STEP.*.damaged``.  Call it on
        rank 0 only in a distributed run (`run` does).

        Parameters
        ----------
        directory : str or path
            The checkpoint directory (it must exist).
        config : dict, optional
            JSON-safe description of the model, stored in the record.

        Returns
        -------
        `pathlib.Path`
            The record.

        Raises
        ------
        OSError
            If a write fails (a full disk): the checkpoint is then absent, the
            earlier ones are as they were and no temporary file remains.
        """
        directory = Path(directory)
        stem = directory / f"checkpoint-{self.step:09d}"
        tensors = stem.with_suffix(".safetensors")
        _keep_damaged(stem)
        digest = _atomic_save_tensors(self.state_tensors(), tensors)
        opt = self.optimizer.state_dict()
        record = {"format": "astro_sbgm checkpoint", "version": __version__,
                  "step": self.step, "data_pos": self._pos, "n_train": int(self.data.shape[0]),
                  "batch_size": self.batch_size, "world_size": self.world_size,
                  "param_groups": opt["param_groups"], "losses": self.losses,
                  "config": config,
                  "tensors": {"file": tensors.name, **(digest or {})}}
        atomic_write_text(stem.with_suffix(".json"), json.dumps(record))
        return stem.with_suffix(".json")

    def load_checkpoint(self, record_path):
        """Restore the state written by `save_checkpoint`.

        Every rank reads the same files; the number of processes may differ
        from the run that wrote them, the global batch size may not.  The
        checkpoint is checked first (`verify_checkpoint`).

        Parameters
        ----------
        record_path : str or path
            The ``checkpoint-*.json`` record.

        Returns
        -------
        dict
            The record.

        Raises
        ------
        ValueError
            If the checkpoint is damaged (the message names the file), or was
            made with other data or another global batch size.
        """
        record_path = Path(record_path)
        record = verify_checkpoint(record_path)
        if record["n_train"] != self.data.shape[0]:
            raise ValueError(f"the checkpoint was trained on {record['n_train']} images but "
                             f"{self.data.shape[0]} are given; resume with the same data")
        if record.get("batch_size", self.batch_size) != self.batch_size:
            raise ValueError(f"the checkpoint was trained with a global batch of "
                             f"{record['batch_size']} but batch_size={self.batch_size}; resume "
                             "with the same global batch (any number of processes that "
                             "divides it)")
        try:
            tensors = load_file(str(record_path.with_suffix(".safetensors")))
        except Exception as err:  # SafetensorError: damaged after the check
            raise ValueError(f"checkpoint file {str(record_path.with_suffix('.safetensors'))!r}"
                             f" cannot be read ({err})") from None
        raw, ema = split_weights(tensors)
        self.net.load_state_dict(raw)
        self.ema.net.load_state_dict(ema)
        state = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        self.optimizer.load_state_dict({"state": state,
                                        "param_groups": record["param_groups"]})
        self.generator.set_state(tensors["rng.train"])
        self._perm = tensors["data.perm"]
        self._pos = int(record["data_pos"])
        self.step = int(record["step"])
        self.losses = list(record.get("losses", []))
        return record
