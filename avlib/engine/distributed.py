"""Processes and batches: ``torchrun`` set-up, and how a config's global batch is split across processes and steps.

Configs state the **global batch** of the paper (L3-Net: 256 on 16 GPUs; AVE-Net: 2048 on 16 GPUs). Every optimisation
step consumes exactly that many items, whatever the world size: each of the ``W`` processes takes ``B / W`` of them
and, when that is more than one device holds (``micro_batch``, a per-device limit), splits them into ``A`` equal
micro-batches whose gradients are accumulated. The gradient of the step is the mean over all ``B`` items, as on one
device with batch ``B``, so the learning rate is the config's as it stands: **no lr scaling** is applied (the batch the
lr was tuned for is the batch that is used). Items that interact within a batch (in-batch negatives, batch norm)
interact within a micro-batch, as they do within each GPU's share under data parallelism.
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from avlib.runtime import select_device

__all__ = ["BatchPlan", "init_distributed", "node_leader_first", "plan_batches"]

LR_RULE = "lr unchanged: the global batch is the config's at any world size (no linear scaling)"


@dataclass(frozen=True)
class BatchPlan:
    """How one optimisation step's ``global_batch`` items are taken: ``world`` processes x ``accum`` micro-batches of
    ``micro`` items each."""

    global_batch: int
    world: int
    per_process: int
    micro: int
    accum: int

    def describe(self) -> str:
        return (f"global batch {self.global_batch} = {self.world} process(es) x {self.accum} accumulation step(s) x "
                f"micro-batch {self.micro}; {LR_RULE}")


def plan_batches(global_batch: int, world: int = 1, micro_batch: int | None = None) -> BatchPlan:
    """Split ``global_batch`` over ``world`` processes and micro-batches of at most ``micro_batch`` items.

    The fewest accumulation steps ``A`` with ``per_process / A <= micro_batch`` and ``A`` dividing ``per_process``
    are used. Refuses (ValueError) a global batch that the world size does not divide.
    """
    if global_batch < 1 or world < 1:
        raise ValueError(f"batch plan: global batch {global_batch} and world size {world} must be >= 1")
    if global_batch % world:
        raise ValueError(f"the global batch {global_batch} cannot be split evenly over {world} processes; use a world "
                         f"size that divides it, or change batch_size")
    per = global_batch // world
    limit = per if micro_batch is None else max(int(micro_batch), 1)
    accum = next(a for a in range(math.ceil(per / limit), per + 1) if per % a == 0)
    return BatchPlan(global_batch, world, per, per // accum, accum)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def init_distributed(device_name: str | None) -> tuple[int, int, torch.device, bool]:
    """``(rank, world size, device, whether this call created the process group)``; under ``torchrun`` each
    process takes ``cuda:LOCAL_RANK`` (NCCL), or the CPU with gloo. A group this creates lasts until the process
    exits."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return 0, 1, select_device(device_name), False
    created = False
    use_cuda = torch.cuda.is_available() and device_name in (None, "cuda")
    if not dist.is_initialized():
        # Created once per process and kept until it exits: the stages of a run (and any further fit) reuse it.
        # Destroying and re-creating the default group under torchrun races on the rendezvous store's keys (a rank
        # can read its peer's address from the previous group and fail to connect).
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        atexit.register(_destroy_process_group)
        created = True
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = select_device(device_name)
    return dist.get_rank(), dist.get_world_size(), device, created


T = TypeVar("T")


def node_leader_first(fn: Callable[[], T], device_name: str | None = None) -> T:
    """``fn()`` once per node first: under ``torchrun`` each node's local rank 0 calls it while that node's other
    processes wait at a barrier, then they call it too (a cache the first call filled serves them: a scan or a
    download of the same files is done once per node, not once per process). In one process, simply ``fn()``.
    A leader that fails makes torchrun stop the whole group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return fn()
    init_distributed(device_name)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        result = fn()
        dist.barrier()
        return result
    dist.barrier()
    return fn()
