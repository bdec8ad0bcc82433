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
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_000_033 + position)


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
