"""Learning-rate schedules: a multiplier of the base learning rate per optimisation step."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

__all__ = ["SCHEDULES", "lr_multiplier", "make_scheduler"]

SCHEDULES = ("constant", "cosine", "linear", "step", "inverse")


def lr_multiplier(step: int, steps: int, schedule: str = "constant", warmup_steps: int = 0, min_lr_ratio: float = 0.0,
                  milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """The factor applied to the base learning rate at optimisation step ``step`` (0-based) of ``steps``.

    A linear warm-up over ``warmup_steps`` comes first; then ``constant``; ``cosine`` or ``linear`` down to
    ``min_lr_ratio`` at the last step; ``step``: times ``gamma`` at each of ``milestones``; ``inverse``:
    ``1 / (1 + gamma * e)`` after ``e`` of ``milestones`` (with one milestone per epoch: CAVL's counting network,
    ``lr / (1 + 0.5 * epoch)``).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(steps - warmup_steps, 1), 1.0)
    if schedule == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)
    if schedule == "step":
        return gamma ** sum(step >= m for m in milestones)
    if schedule == "inverse":
        return 1.0 / (1.0 + gamma * sum(step >= m for m in milestones))
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, **schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following :func:`lr_multiplier` with ``schedule``'s keywords (its state is the step: it resumes
    exactly)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_multiplier, **schedule))
