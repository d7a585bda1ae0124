"""The training objective on held-out data: the step's loss and logged numbers, without updating anything."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from avlib.eval.avc import model_device

__all__ = ["held_out_step"]


@torch.no_grad()
def held_out_step(model: nn.Module, step_fn: Callable[..., Mapping[str, Any]], data: dict[str, Tensor],
                  batch_size: int, seed: int, keys: tuple[str, ...] = ("image", "audio")) -> dict[str, float]:
    """``step_fn(model, chunk, generator=...)`` over ``data`` in chunks of ``batch_size`` (eval mode), averaged with
    the chunks' sizes as weights, as ``held_out_<name>``. Negatives are drawn from a CPU generator seeded with
    ``seed``; chunks of one item (no other item to draw a negative from) are skipped."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    n_used, totals = 0, {}
    try:
        for i in range(0, data[keys[0]].shape[0], batch_size):
            chunk = {k: data[k][i : i + batch_size].to(device) for k in keys}
            b = chunk[keys[0]].shape[0]
            if b < 2:
                continue
            n_used += b
            for key, value in step_fn(model, chunk, generator=gen).items():
                totals[key] = totals.get(key, 0.0) + float(value) * b
    finally:
        model.train(was_training)
    return {f"held_out_{k}": v / max(n_used, 1) for k, v in totals.items()}
