"""The training loop: augmentation, EMA, checkpoints and resume.

`Trainer` owns everything that changes while a model learns (the network,
its exponential moving average, the optimizer, the step counter, the data
order and the random state) and can write all of it to a checkpoint and read
it back, so that a run that is interrupted and resumed ends with exactly the
weights of a run that was not.

Checkpoints are a ``.safetensors`` file (tensors: weights, EMA, optimizer
moments, random state, data order) and a ``.json`` file (everything else)
per saved step, in a directory marked by a ``astro_sbgm-checkpoints.json``
file.  Each file is written under a temporary name and renamed, and the JSON
record is written last, so a checkpoint either exists whole or not at all.
No pickle is ever written or read.
"""

import copy
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ._version import __version__
from .diffusion import training_loss

__all__ = ["EMA", "Trainer", "augment", "atomic_write_text", "CHECKPOINT_MARKER",
           "latest_checkpoint"]

CHECKPOINT_MARKER = "astro_sbgm-checkpoints.json"


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_save_tensors(tensors, path, metadata=None):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    k = torch.randint(0, 8, (x.shape[0],), generator=generator).tolist()
    out = []
    for img, code in zip(x, k):
        if code & 4:
            img = img.flip(-1)
        out.append(torch.rot90(img, code & 3, dims=(-2, -1)))
    return torch.stack(out)


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


def latest_checkpoint(directory):
    """The JSON record of the newest complete checkpoint in ``directory``, or None."""
    directory = Path(directory)
    records = sorted(directory.glob("checkpoint-*.json"))
    for rec in reversed(records):
        if rec.with_suffix(".safetensors").exists():
            return rec
    return None


def _check_checkpoint_dir(directory, config):
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
    directory.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        atomic_write_text(marker, json.dumps({"format": "astro_sbgm checkpoints",
                                              "version": __version__, "config": config},
                                             indent=1))
    return directory


class Trainer:
    """Train a `~astro_sbgm.diffusion.Denoiser` on a tensor of scaled images.

    Parameters
    ----------
    denoiser : `~astro_sbgm.diffusion.Denoiser`
        Network, schedule and objective.
    data : `torch.Tensor`
        Training images in [-1, 1], ``(n, band, y, x)``, kept on the CPU.
    batch_size : int
        Images per optimizer step.
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
    device : `torch.device`
        Where the network runs.
    """

    def __init__(self, denoiser, data, batch_size=16, lr=2e-4, seed=0, loss="l2",
                 min_snr_gamma=None, grad_clip=1.0, ema_halflife=50_000, ema_rampup=0.1,
                 lr_warmup=100, augment_data=True, device="cpu"):
        if data.shape[0] == 0:
            raise ValueError("the training set is empty")
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
        self.device = torch.device(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.ema = EMA(self.net, ema_halflife, ema_rampup)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.step = 0
        self.losses = []
        self._perm = torch.randperm(data.shape[0], generator=self.generator)
        self._pos = 0

    # ------------------------------------------------------------------ data
    def _next_batch(self):
        idx = []
        while len(idx) < self.batch_size:
            if self._pos >= len(self._perm):
                self._perm = torch.randperm(self.data.shape[0], generator=self.generator)
                self._pos = 0
            take = min(self.batch_size - len(idx), len(self._perm) - self._pos)
            idx.extend(self._perm[self._pos:self._pos + take].tolist())
            self._pos += take
        x = self.data[idx]
        if self.augment_data:
            x = augment(x, self.generator)
        return x.to(self.device, non_blocking=True)

    # ------------------------------------------------------------------ loop
    def train_step(self):
        """One optimizer step; returns the loss."""
        self.net.train()
        x0 = self._next_batch()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * min(1.0, (self.step + 1) / max(self.lr_warmup, 1))
        loss = training_loss(self.denoiser, x0, self.generator, loss=self.loss,
                             min_snr_gamma=self.min_snr_gamma)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss.item()} at step {self.step + 1}; lower the "
                f"learning rate (now {self.lr:g}) or check the training images for extreme "
                "values. The last checkpoint on disk (if any) is intact.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.ema.update(self.net, self.step * self.batch_size, self.batch_size)
        value = float(loss.detach())
        self.losses.append(value)
        return value

    def run(self, steps, checkpoint_dir=None, checkpoint_every=1000, progress=True,
            config=None):
        """Train until ``self.step == steps``, writing checkpoints on the way.

        Parameters
        ----------
        steps : int
            Total number of optimizer steps (a resumed run continues to it).
        checkpoint_dir : str or path, optional
            Where to write checkpoints.
        checkpoint_every : int
            Steps between checkpoints (the last step is always written).
        progress : bool
            Show a tqdm bar with the running loss.
        config : dict, optional
            JSON-safe description of the model, stored with the checkpoints.
        """
        if checkpoint_dir is not None:
            checkpoint_dir = _check_checkpoint_dir(checkpoint_dir, config)
        bar = tqdm(total=steps, initial=self.step, disable=not progress, desc="training",
                   unit="step", dynamic_ncols=True)
        running = None
        try:
            while self.step < steps:
                value = self.train_step()
                running = value if running is None else 0.98 * running + 0.02 * value
                bar.update(1)
                if self.step % 10 == 0:
                    bar.set_postfix(loss=f"{running:.4f}")
                if checkpoint_dir is not None and (self.step % checkpoint_every == 0
                                                   or self.step == steps):
                    self.save_checkpoint(checkpoint_dir, config)
        finally:
            bar.close()

    # ------------------------------------------------------------------ checkpoints
    def state_tensors(self):
        """Every tensor of the training state, flat, for safetensors."""
        out = {}
        for k, v in self.net.state_dict().items():
            out[f"model.{k}"] = v
        for k, v in self.ema.net.state_dict().items():
            out[f"ema.{k}"] = v
        opt = self.optimizer.state_dict()
        for idx, st in opt["state"].items():
            for name, val in st.items():
                out[f"optim.{idx}.{name}"] = torch.as_tensor(val)
        out["rng.train"] = self.generator.get_state()
        out["data.perm"] = self._perm
        return out

    def save_checkpoint(self, directory, config=None):
        """Write the full training state for the current step (atomically)."""
        directory = Path(directory)
        stem = directory / f"checkpoint-{self.step:09d}"
        _atomic_save_tensors(self.state_tensors(), stem.with_suffix(".safetensors"))
        opt = self.optimizer.state_dict()
        record = {"format": "astro_sbgm checkpoint", "version": __version__,
                  "step": self.step, "data_pos": self._pos, "n_train": int(self.data.shape[0]),
                  "param_groups": opt["param_groups"], "losses": self.losses,
                  "config": config}
        atomic_write_text(stem.with_suffix(".json"), json.dumps(record))
        return stem.with_suffix(".json")

    def load_checkpoint(self, record_path):
        """Restore the state written by `save_checkpoint`."""
        record_path = Path(record_path)
        record = json.loads(record_path.read_text())
        if record.get("format") != "astro_sbgm checkpoint":
            raise ValueError(f"{str(record_path)!r} is not an astro_sbgm checkpoint record")
        if record["n_train"] != self.data.shape[0]:
            raise ValueError(f"the checkpoint was trained on {record['n_train']} images but "
                             f"{self.data.shape[0]} are given; resume with the same data")
        tensors = load_file(str(record_path.with_suffix(".safetensors")))
        self.net.load_state_dict({k[6:]: v for k, v in tensors.items()
                                  if k.startswith("model.")})
        self.ema.net.load_state_dict({k[4:]: v for k, v in tensors.items()
                                      if k.startswith("ema.")})
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
