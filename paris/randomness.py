"""Randomness that belongs to samples and steps, never to machines.

Every random draw of training step s is a pure function of (seed, s, position of the sample in the global
batch): which samples form the batch, their t, their noise, whether their caption is dropped. So
  - resuming from a checkpoint continues exactly as if the job had never stopped (no RNG state to save);
  - 1 GPU with gradient accumulation and 8 GPUs with DDP follow the same optimisation, sample for sample.
"""

from __future__ import annotations

from functools import lru_cache

import torch


def step_generator(seed: int, step: int, position: int = 0) -> torch.Generator:
    # modulo 2**64, the generator's own range: any seed a config takes works, and smaller ones seed as before
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1_000_033 + position) % 2**64)


class SampleRandom:
    """Draws for a set of global batch positions; position p's draws do not depend on the others."""

    def __init__(self, seed: int, step: int, positions: torch.Tensor):
        self.generators = [step_generator(seed, step, int(p)) for p in positions]

    def __len__(self) -> int:
        return len(self.generators)

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators])

    def uniform(self) -> torch.Tensor:
        return torch.stack([torch.rand((), generator=g) for g in self.generators])


class BatchRandom:
    """The same interface over one generator, for evaluation and tests where splitting does not matter."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(self.n, *shape, generator=self.generator)

    def uniform(self) -> torch.Tensor:
        return torch.rand(self.n, generator=self.generator)


class EpochBatches:
    """The sample indices of global batch `step`: every epoch is a fresh permutation of the samples."""

    def __init__(self, num_samples: int, batch_size: int, seed: int):
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed

    def __call__(self, step: int) -> torch.Tensor:
        positions = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = positions // self.num_samples, positions % self.num_samples
        return torch.stack([self._permutation(int(e))[int(o)] for e, o in zip(epochs, offsets)])

    @lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_samples, generator=step_generator(self.seed, epoch, -1))


class ShardWindowBatches:
    """The sample indices of global batch `step` over samples kept in shards, read in windows for locality.

    Every epoch the shards are put in a fresh order and cut into windows of `window` shards; the samples of
    one window are shuffled together and served before the next window's. A step thus reads a few shards,
    not hundreds, and only a window or two of them needs to be in memory. Sample i of shard s is index
    starts[s] + i. With `window` at least the number of shards this is a full shuffle of every epoch."""

    def __init__(self, counts: list[int], batch_size: int, seed: int, window: int):
        self.counts = torch.as_tensor(counts, dtype=torch.int64)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.num_samples, self.batch_size, self.seed, self.window = int(self.counts.sum()), batch_size, seed, window

    def __call__(self, step: int) -> torch.Tensor:
        positions = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = positions // self.num_samples, positions % self.num_samples
        index = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            here = epochs == epoch
            ends = self._window_ends(epoch)
            windows = torch.searchsorted(ends, offsets[here], right=True)
            inside = offsets[here] - torch.cat([ends.new_zeros(1), ends])[windows]  # offset inside its window
            picked = torch.empty_like(inside)
            for w in windows.unique().tolist():
                mine = windows == w
                picked[mine] = self._window(epoch, w)[inside[mine]]
            index[here] = picked
        return index

    def next_window(self, step: int) -> list[int]:
        """The shards of the window after the one this step ends in: what to read ahead, in the background."""
        epoch, offset = divmod((step + 1) * self.batch_size - 1, self.num_samples)
        w = int(torch.searchsorted(self._window_ends(epoch), offset, right=True)) + 1
        if w == len(self._window_ends(epoch)):
            epoch, w = epoch + 1, 0
        return self.shard_order(epoch)[w * self.window : (w + 1) * self.window].tolist()

    def shard_order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(len(self.counts), generator=step_generator(self.seed, epoch, -1))

    @lru_cache(maxsize=4)
    def _window_ends(self, epoch: int) -> torch.Tensor:
        sizes = torch.stack([s.sum() for s in self.counts[self.shard_order(epoch)].split(self.window)])
        return torch.cumsum(sizes, 0)

    @lru_cache(maxsize=4)
    def _window(self, epoch: int, w: int) -> torch.Tensor:
        """The store indices of window w of `epoch`, shuffled."""
        shards = self.shard_order(epoch)[w * self.window : (w + 1) * self.window]
        members = torch.cat([torch.arange(self.starts[s], self.starts[s] + self.counts[s]) for s in shards.tolist()])
        return members[torch.randperm(len(members), generator=step_generator(self.seed, epoch, w))]
