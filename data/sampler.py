"""Data order and augmentation as a pure function of (seed, epoch, rank), so a killed run resumes exactly.

Lightning restarts the epoch's iterator when it resumes from a mid-epoch checkpoint; this sampler is told
how many batches of the epoch were already consumed (:meth:`skip_once`) and drops their indices without
loading them. It also shards across ranks itself (``torch.distributed``), so the trainer runs with
``use_distributed_sampler=False`` and nothing re-wraps it.

The sampler yields ``(epoch, index)`` keys; :class:`SeededItems` reseeds torch's RNG from the key around
each item, so random flips (and the cached-latent flip choice) are the same after a resume, in any worker.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ResumableSampler(Sampler[tuple[int, int]]):
    """Seeded per-epoch shuffle (or fixed order), padded and strided across ranks like DistributedSampler."""

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True):
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.epoch = 0
        self._skip = 0
        self._position = None

    def follow(self, position) -> None:
        """Take the epoch and the indices to skip from ``position()`` at each iteration's start, not ``set_epoch``.

        The data loader's place in the data is a function of the optimiser step alone (epoch = batches done // batches
        per epoch), as it is in a run never stopped. Lightning's own epoch bookkeeping after a resume is not: a run
        that stopped at ``max_steps`` saved its last checkpoint after its epoch-end hooks, so resumed with a larger
        ``max_steps`` Lightning counts one epoch too many, or replays a batch when the stop fell on an epoch's last
        batch. Following the step keeps the order of an uninterrupted run either way.
        """
        self._position = position

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at every epoch start
        self.epoch = int(epoch)

    def skip_once(self, num_indices: int) -> None:
        """Drop the first ``num_indices`` of the next iteration only (batches consumed before a resume)."""
        self._skip = max(0, int(num_indices))

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.length, generator=g).tolist()

    def __len__(self) -> int:
        _, world = _rank_world()
        return math.ceil(self.length / world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self._position is not None:
            self.epoch, self._skip = self._position()
        rank, world = _rank_world()
        order = self._order()
        per_rank = math.ceil(self.length / world)
        order += order[: per_rank * world - len(order)]  # pad so every rank gets the same count
        mine = order[rank::world]
        skip, self._skip = self._skip, 0
        return iter([(self.epoch, i) for i in mine[skip:]])


class SeededItems(Dataset):
    """Wraps a dataset so item (epoch, i) is produced under torch seed f(seed, epoch, i), RNG state restored after."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch * 7_919 + index) % (2**63))
            return self.dataset[index]
