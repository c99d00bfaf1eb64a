"""Random streams: one CPU generator per sample, so a draw never depends on its batch.

Every random number of generation (the start noise, the noise of stochastic
sampler steps, the forward-process noise of inpainting's known pixels, the
likelihoods' probes) is drawn on the CPU from the generator of the sample it
belongs to.  Sample ``i`` of a seed therefore gets the same numbers whatever
the number of samples, the batch size, the device or the number of
processes.  `PerSampleNoise` makes those generators; `randn_like` draws from
them.
"""

import numpy as np
import torch

__all__ = ["PerSampleNoise", "randn_like", "new_seed"]


def new_seed():
    """A fresh seed from the operating system's entropy (to be recorded with the output)."""
    return int(np.random.SeedSequence().generate_state(1)[0])


def randn_like(x, generator):
    """Standard normal noise shaped like ``x``, drawn on the CPU.

    ``generator`` may be one `torch.Generator` or a list with one generator
    per sample of the batch; with a list, sample ``i`` gets the same noise
    whatever else is in its batch, so results do not depend on batching.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != x.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
        noise = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=torch.float32)
                             for g in generator])
    else:
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    return noise.to(x.device, x.dtype)


class PerSampleNoise:
    """The random streams of one seeded run: sample ``i`` draws from its own generator.

    The generator of sample ``i`` is seeded from ``(seed, *key, start + i)``
    through `numpy.random.SeedSequence`, so it depends on nothing else.

    Parameters
    ----------
    seed : int, optional
        The run's seed; None draws one (`new_seed`), readable as `seed`.
    start : int
        Index of the first sample (draws samples ``start, start + 1, ...``;
        a shard of a larger run starts at its offset).
    key : tuple of int
        Extra words between the seed and the index, for independent streams
        of one seed (inpainting: one per box).

    Attributes
    ----------
    seed : int
        The seed (the drawn one when None was given).
    """

    def __init__(self, seed=None, start=0, key=()):
        self.seed = new_seed() if seed is None else int(seed)
        self.start = int(start)
        self.key = tuple(int(k) for k in key)

    def generators(self, lo, n):
        """CPU generators of the samples from ``lo`` to ``lo + n - 1`` (offset by ``start``)."""
        gens = []
        for i in range(self.start + int(lo), self.start + int(lo) + int(n)):
            state = np.random.SeedSequence([self.seed, *self.key, i]).generate_state(
                2, dtype=np.uint32)
            gens.append(torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1])))
        return gens

    def __repr__(self):
        key = f", key={self.key}" if self.key else ""
        return f"PerSampleNoise(seed={self.seed}, start={self.start}{key})"
