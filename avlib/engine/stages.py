"""Training in stages: each stage in its own sub-directory of the run, started from the previous stage's result.

CAVL's curriculum trains one stage per level (C1 ... C4); DSOL alternates localization and classification rounds and
then matches categories; the counting and separation heads start from a trained CAVL. :func:`run_stages` runs a list
of :class:`Stage` in order: stage ``i`` lives in ``RUN/<i>_<name>/`` (a run of one stage: in ``RUN`` itself) with
its own checkpoints and metrics, is
initialised from the final checkpoint of stage ``i - 1`` (``Stage.init``), and has its own steps, learning rate and
data. A finished stage (its final checkpoint holds its last step) is not trained again; a run killed inside stage 3
resumes inside stage 3 with ``resume=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from avlib.engine.checkpoint import latest_checkpoint, load_weights
from avlib.engine.loop import METRICS_NAME, StepFn, TrainConfig, TrainResult, fit
from avlib.engine.monitor import read_jsonl
from avlib.engine.rundir import RunLock, claim_run_dir

__all__ = ["Stage", "StageParts", "run_stages", "stage_dir"]


@dataclass
class StageParts:
    """What :func:`fit` needs for one stage (``train_config`` without ``out_dir`` / ``resume``: the runner sets
    them)."""

    model: nn.Module
    step_fn: StepFn
    data: Dataset
    optimizer: torch.optim.Optimizer
    train_config: TrainConfig


@dataclass
class Stage:
    """One stage: ``make()`` builds its parts (called only when the stage trains or its model is needed), ``init``
    loads the previous stage's final state into the new model (default: all weights, which must match)."""

    name: str
    make: Callable[[], StageParts]
    init: Callable[[nn.Module, dict[str, Any], Path], None] | None = None


def stage_dir(out_dir: str | Path, index: int, name: str, n_stages: int) -> Path:
    """Where stage ``index`` (from 1) of ``n_stages`` lives: ``out_dir`` itself for a single stage, else
    ``out_dir/<index>_<name>``."""
    return Path(out_dir) if n_stages == 1 else Path(out_dir) / f"{index}_{name}"


def _final(where: Path, steps: int) -> tuple[Path, dict[str, Any]] | None:
    found = latest_checkpoint(where)
    return found if found is not None and found[1]["step"] >= steps else None


def run_stages(stages: Sequence[Stage], out_dir: str | Path, resume: bool = False,
               overwrite: bool = False) -> tuple[nn.Module, list[TrainResult]]:
    """Train ``stages`` in order under ``out_dir``; returns the last stage's model and each stage's result (for a stage
    that was already complete, read back from its directory with ``loaded=True``)."""
    if not stages:
        raise ValueError("run_stages needs at least one stage")
    out_dir = Path(out_dir)
    if not _main_process():  # under torchrun only rank 0 owns the directory (as in fit)
        return _run(stages, out_dir, resume)
    if len(stages) == 1:  # the stage is the run directory itself: fit holds its lock while it trains
        with RunLock(out_dir):
            claim_run_dir(out_dir, resume, overwrite)
        return _run(stages, out_dir, resume)
    with RunLock(out_dir):  # held for the whole run, so no other run can claim (or overwrite) it between stages
        claim_run_dir(out_dir, resume, overwrite)
        return _run(stages, out_dir, resume)


def _main_process() -> bool:
    """Rank 0, or a run without torchrun (the process group may not exist yet: fit creates it)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _run(stages: Sequence[Stage], out_dir: Path, resume: bool) -> tuple[nn.Module, list[TrainResult]]:
    results: list[TrainResult] = []
    previous: tuple[Path, dict[str, Any]] | None = None
    model: nn.Module | None = None
    for i, stage in enumerate(stages, start=1):
        where = stage_dir(out_dir, i, stage.name, len(stages))
        parts = stage.make()
        model = parts.model
        done = _final(where, parts.train_config.steps) if resume else None
        if done is not None:
            load_weights(model, done[1], done[0])
            previous = done
            state = done[1]
            device = str(next(model.parameters()).device)
            results.append(TrainResult(read_jsonl(where / METRICS_NAME), state["step"], done[0], device,
                                       state["precision"], 0.0, state["world_size"], loaded=True))
            continue
        started = resume and latest_checkpoint(where) is not None
        if previous is not None and not started:
            (stage.init or load_weights)(model, previous[1], previous[0])  # in place: the optimiser keeps its params
        cfg = replace(parts.train_config, out_dir=where, resume=resume, overwrite=False)
        result = fit(model, parts.step_fn, parts.data, parts.optimizer, cfg)
        results.append(result)
        previous = latest_checkpoint(where)
    return model, results
