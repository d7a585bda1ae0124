"""The order in which a run sees its data: resumable at any step, the same under DDP as in one process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from avlib.engine.distributed import BatchPlan

__all__ = ["StepBatches"]


class StepBatches:
    """The micro-batches of every optimisation step of a map-style dataset.

    Each epoch's order comes from a DistributedSampler seeded with ``(seed, epoch)``, so process ``r`` of ``W`` takes
    every ``W``-th item of one permutation and the union over processes of a step's items is the same set as one
    process with the global batch would take. A step always holds the full global batch (an incomplete last one is
    dropped). A resumed run starts at the saved step's position. The DataLoader gets its own generator, so building it
    does not consume the global RNG.

    Args:
        data: a map-style Dataset, or a DataLoader over one (its ``collate_fn`` is used).
        plan: the batch plan (global batch, world, micro-batch, accumulation).
        rank: this process.
        seed: the run's seed.
        shuffle: shuffle every epoch.
        num_workers, pin_memory: passed to the DataLoader.
    """

    def __init__(self, data: Dataset | DataLoader, plan: BatchPlan, rank: int, seed: int, shuffle: bool = True,
                 num_workers: int = 0, pin_memory: bool = False) -> None:
        self.collate_fn = None
        if isinstance(data, DataLoader):
            self.collate_fn, data = data.collate_fn, data.dataset
        if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
            raise TypeError(f"fit: data must be a map-style Dataset or a DataLoader over one; got "
                            f"{type(data).__name__}")
        self.dataset, self.plan, self.seed = data, plan, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.sampler = DistributedSampler(data, num_replicas=plan.world, rank=rank, shuffle=shuffle, seed=seed)
        self.steps_per_epoch = len(self.sampler) // plan.per_process
        if self.steps_per_epoch == 0:
            raise ValueError(f"fit: the dataset has {len(data)} items, fewer than one global batch of "
                             f"{plan.global_batch}; lower batch_size or use more data")

    def steps(self, start_step: int) -> Iterator[tuple[list[int], list[Any]]]:
        """Yield ``(dataset indices of this process, [accum micro-batches])`` per step, from ``start_step`` on."""
        epoch, offset = divmod(start_step, self.steps_per_epoch)
        per, micro = self.plan.per_process, self.plan.micro
        while True:
            self.sampler.set_epoch(epoch)
            if hasattr(self.dataset, "set_epoch"):  # datasets that redraw their items per epoch (e.g. AVCPairs)
                self.dataset.set_epoch(epoch)
            indices = list(self.sampler)[offset * per : self.steps_per_epoch * per]
            loader = DataLoader(self.dataset, batch_size=micro, sampler=indices, collate_fn=self.collate_fn,
                                num_workers=self.num_workers, pin_memory=self.pin_memory, drop_last=True,
                                generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            it = iter(loader)
            for s in range(len(indices) // per):
                yield indices[s * per : (s + 1) * per], [next(it) for _ in range(self.plan.accum)]
            epoch, offset = epoch + 1, 0
