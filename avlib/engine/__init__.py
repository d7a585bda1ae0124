"""The training engine: one loop (``fit``) that every method trains through, and what it stands on.

- :mod:`~avlib.engine.loop`: :class:`TrainConfig`, :func:`fit`, :func:`train_step`;
- :mod:`~avlib.engine.stages`: :func:`run_stages`, a run made of stages in sub-directories;
- :mod:`~avlib.engine.distributed`: the global batch split into processes, micro-batches and accumulation;
- :mod:`~avlib.engine.checkpoint`: verified, safe-to-load checkpoints and RNG states;
- :mod:`~avlib.engine.precision`, :mod:`~avlib.engine.schedule`, :mod:`~avlib.engine.batches`,
  :mod:`~avlib.engine.rundir`, :mod:`~avlib.engine.monitor`.
"""

from avlib.engine.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from avlib.engine.distributed import BatchPlan, node_leader_first, plan_batches
from avlib.engine.loop import (
    NonFiniteLossError,
    StepFn,
    StepModule,
    TrainConfig,
    TrainingInterrupted,
    TrainResult,
    fit,
    to_device,
    train_step,
    unwrap,
)
from avlib.engine.precision import autocast, resolve_precision
from avlib.engine.rundir import RunDirError
from avlib.engine.stages import Stage, StageParts, run_stages

__all__ = [
    "BatchPlan",
    "CheckpointError",
    "NonFiniteLossError",
    "RunDirError",
    "Stage",
    "StageParts",
    "StepFn",
    "StepModule",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "autocast",
    "fit",
    "latest_checkpoint",
    "load_checkpoint",
    "node_leader_first",
    "plan_batches",
    "resolve_precision",
    "run_stages",
    "save_checkpoint",
    "to_device",
    "train_step",
    "unwrap",
]
