"""One route from a method's config to a trained, evaluated model, for the chapters, the command and the benchmarks.

:func:`train` seeds, builds the model (so a run is a function of its seed), builds the data, runs the method's stages
through the engine (:func:`avlib.engine.fit` / :func:`avlib.engine.run_stages`) and evaluates; each checkpoint's
``meta`` holds the resolved config, the data directory and the seed. :func:`load` and :func:`evaluate_checkpoint`
rebuild a model from a checkpoint's own config, whatever the presets say today.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from avlib.data.clips import MANIFEST
from avlib.data.preflight import preflight
from avlib.engine import (
    CheckpointError,
    Stage,
    StageParts,
    TrainConfig,
    TrainResult,
    fit,
    latest_checkpoint,
    load_checkpoint,
    node_leader_first,
    run_stages,
)
from avlib.engine.checkpoint import load_weights, seed_everything
from avlib.engine.loop import as_plain
from avlib.engine.rundir import claim_run_dir
from avlib.engine.stages import stage_dir
from avlib.methods.base import MethodConfig, StagePlan, get_method
from avlib.runtime import select_device

__all__ = ["Run", "evaluate_checkpoint", "evaluate_loaded", "load", "train"]

# what a resumed run may change: the schedule's length and base lr, and how each device executes the same optimisation
MAY_CHANGE_ON_RESUME = ("lr", "steps", "micro_batch", "channels_last")


@dataclass
class Run:
    """A trained method: its (last stage's) config and model, each stage's engine result (``loaded`` for a stage that
    was already complete and was read back), the run directory and the held-out scores."""

    cfg: MethodConfig
    model: nn.Module
    results: list[TrainResult]
    out: Path | None = None
    scores: dict[str, Any] | None = None
    loaded: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def result(self) -> TrainResult:
        """The last stage's engine result."""
        return self.results[-1]


def _meta(cfg: MethodConfig, data: Path | None, seed: int, stage: str) -> dict[str, Any]:
    return {"method": cfg.method, "scale": cfg.scale, "config": cfg.to_dict(), "data": None if data is None else
            str(data), "seed": seed, "stage": stage}


def _resumable_step(where: Path, meta: dict[str, Any], plan: StagePlan) -> int | None:
    """The step a stage's checkpoint in ``where`` holds (``None`` without one), after refusing, in one line, to
    resume a run trained with another config, data or seed (lr, steps, micro-batch and memory format may change);
    says in one line whether the stage is complete (loaded, not trained) or resumed. Reads the checkpoint once."""
    found = latest_checkpoint(where)
    if found is None:
        return None
    path, state = found
    saved = state.get("meta", {})
    old, new = dict(saved.get("config", {})), dict(meta["config"])
    for key in MAY_CHANGE_ON_RESUME:
        old.pop(key, None), new.pop(key, None)
    pairs = [("method", saved.get("method"), meta["method"]), ("data", saved.get("data"), meta["data"]),
             ("seed", saved.get("seed"), meta["seed"])]
    pairs += [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))]
    for key, a, b in pairs:
        if as_plain(a) != as_plain(b):
            raise CheckpointError(f"cannot resume {path}: it was trained with {key} = {a!r}, this run asks for {b!r}; "
                                  "resume with the run's own settings, or start a new run in another directory")
    step = state["step"]
    what = "complete: loading it instead of training" if step >= plan.cfg.steps else f"resuming from step {step}"
    print(f"avlib: {plan.cfg.method} stage {plan.name!r} in {where} is {what}", file=sys.stderr)
    return step


def load(path: str | Path, device: str | None = None) -> tuple[MethodConfig, nn.Module, dict[str, Any]]:
    """``(config, model, checkpoint state)`` from a checkpoint file or run directory, built from the config the
    checkpoint stores (not from today's presets)."""
    path = Path(path)
    if path.is_dir() and latest_checkpoint(path) is None:  # a multi-stage run: its last stage that has a checkpoint
        stages = sorted((p for p in path.iterdir() if p.is_dir() and latest_checkpoint(p) is not None),
                        key=lambda p: int(p.name.split("_", 1)[0]) if p.name.split("_", 1)[0].isdigit() else -1)
        if not stages:
            raise CheckpointError(f"{path} holds no checkpoint")
        path = stages[-1]
    state = load_checkpoint(path)
    meta = state.get("meta") or {}
    if "config" not in meta:
        raise CheckpointError(f"{path}: the checkpoint does not say which method and config it was trained with")
    method = get_method(meta["method"])
    cfg = method.config_from_dict(meta["config"])
    model = method.model(cfg)
    load_weights(model, state, path)
    return cfg, model.to(select_device(device)), state


def _source_model(init_from: str | Path | nn.Module, cfg: MethodConfig) -> tuple[nn.Module, str]:
    """The trained model ``cfg`` starts from, and what it is in words; a checkpoint of another method or scale is
    refused in one line naming what it holds and what was asked."""
    if isinstance(init_from, nn.Module):
        return init_from, f"the given {type(init_from).__name__}"
    src_cfg, model, _ = load(init_from)
    held = f"a {src_cfg.method} model at scale {src_cfg.scale!r}"
    if (src_cfg.method, src_cfg.scale) != (cfg.init_from, cfg.scale):
        raise CheckpointError(f"{init_from} holds {held}; {cfg.method} at scale {cfg.scale!r} starts from a trained "
                              f"{cfg.init_from} model at scale {cfg.scale!r}")
    return model, f"{init_from} ({held})"


def _check_fits(started: nn.Module, fresh: nn.Module, source: str, cfg: MethodConfig) -> None:
    """Refuse a starting model whose tensors are not shaped as the config's own model."""
    own = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in started.state_dict().items()}
    bad = sorted(k for k in own.keys() | got.keys() if own.get(k) != got.get(k))
    if bad:
        raise CheckpointError(f"{source} does not fit {cfg.method} at scale {cfg.scale!r}: {len(bad)} tensors differ "
                              f"(first: {bad[0]}, {got.get(bad[0])} there, {own.get(bad[0])} here)")


def train(cfg: MethodConfig, *, seed: int = 0, data: str | Path | None = None, out: str | Path | None = None,
          resume: bool = False, overwrite: bool = False, init_from: str | Path | nn.Module | None = None,
          evaluate: bool = True, **engine: Any) -> Run:
    """Train the method of ``cfg`` (all of its stages) and evaluate it.

    Args:
        cfg: the method's config (``get_method(name).config(scale, **changes)``).
        seed: seeds the initial weights, the data order and the in-memory world.
        data: a clip directory (its ``train`` split trains, ``test`` evaluates; every file of it, and of clip
            directories inside it, is decoded once before step 1 by :func:`avlib.data.preflight`); default: the
            config's world.
        out: run directory (checkpoints, metrics); ``None`` trains in memory.
        resume, overwrite: continue / replace the run in ``out`` (otherwise an existing run is refused).
        init_from: for configs with ``init_from``: the trained source model, or its checkpoint / run directory.
        evaluate: score the trained model on held-out data (``Run.scores``).
        **engine: further :class:`avlib.engine.TrainConfig` settings (``precision``, ``device``, ``ckpt_every``,
            ``progress``, ``live_plot``, ``num_workers``, ``compile``, ...).
    """
    method = get_method(cfg.method)
    data = None if data is None else Path(os.path.abspath(data))  # checkpoints name it wherever they are read from
    if data is None and cfg.data is None:
        raise ValueError(f"{cfg.method} at scale {cfg.scale!r} trains on real data: give a clip directory")
    if cfg.init_from is None and init_from is not None:
        raise ValueError(f"{cfg.method} at scale {cfg.scale!r} starts from scratch; init_from is not used")
    if cfg.init_from is not None and init_from is None:
        raise ValueError(f"{cfg.method} at scale {cfg.scale!r} starts from a trained {cfg.init_from} model: train "
                         f"{cfg.init_from} first and pass its run as init_from")
    plans = method.stages(cfg)
    # refusals first, before the data scan and before the run directory is touched (an overwrite clears it)
    out = None if out is None else Path(out)
    if out is not None and not resume and not overwrite:
        claim_run_dir(out, resume=False, overwrite=False)  # only checks: refuses a directory that holds a run
    found = [_resumable_step(stage_dir(out, i, p.name, len(plans)), _meta(p.cfg, data, seed, p.name), p)
             for i, p in enumerate(plans, start=1)] if out is not None and resume else [None]
    resumed = found[0] is not None  # a resumed run has its own weights: the source is not read again
    source = None if init_from is None or resumed else _source_model(init_from, cfg)
    if data is not None:  # every file decoded once before step 1 (once per node); all bad files named in one error
        def scan() -> None:
            for clip_dir in [data, *sorted(p.parent for p in data.glob(f"*/{MANIFEST}"))]:
                if (clip_dir / MANIFEST).is_file():
                    preflight(clip_dir, progress=engine.get("progress", True))

        node_leader_first(scan, engine.get("device"))

    def stage(i: int, plan_cfg: MethodConfig, name: str) -> Stage:
        def make() -> StageParts:
            seed_everything(seed)  # the initial weights are a function of the seed
            model = method.model(plan_cfg)
            train_data = method.train_data(plan_cfg, data, seed)
            if i == 0 and source is not None:
                start = method.init(plan_cfg, model, source[0], train_data)
                _check_fits(start, model, source[1], plan_cfg)
                model = start
            tc = TrainConfig(steps=plan_cfg.steps, batch_size=plan_cfg.batch_size, micro_batch=plan_cfg.micro_batch,
                             schedule=plan_cfg.schedule, warmup_steps=plan_cfg.warmup_steps,
                             milestones=plan_cfg.milestones, gamma=plan_cfg.gamma,
                             channels_last=plan_cfg.channels_last, seed=seed,
                             meta=_meta(plan_cfg, data, seed, name), **engine)
            return StageParts(model, method.step(plan_cfg), train_data, method.make_optimizer(plan_cfg, model), tc)

        return Stage(name, make)

    stages = [stage(i, p.cfg, p.name) for i, p in enumerate(plans)]
    if out is not None:
        model, results = run_stages(stages, out, resume=resume, overwrite=overwrite)
    else:
        model, results, previous = None, [], None
        for s in stages:
            parts = s.make()
            if previous is not None:
                load_weights(parts.model, {"model": previous.state_dict()}, "the previous stage")
            results.append(fit(parts.model, parts.step_fn, parts.data, parts.optimizer, parts.train_config))
            model = previous = parts.model
    final = plans[-1].cfg
    run = Run(final, model, results, out, loaded=all(r.loaded for r in results),
              history=[h for r in results for h in r.history])
    if evaluate:
        run.scores = method.evaluate(final, model, data, seed)
    return run


def evaluate_checkpoint(path: str | Path, data: str | Path | None = None, seed: int | None = None,
                        device: str | None = None) -> dict[str, Any]:
    """Scores of a checkpoint on held-out data, with the model built from the checkpoint's own config; ``data``
    and ``seed`` default to those it was trained with."""
    return evaluate_loaded(path, *load(path, device), data=data, seed=seed)


def evaluate_loaded(path: str | Path, cfg: MethodConfig, model: nn.Module, state: dict[str, Any],
                    data: str | Path | None = None, seed: int | None = None) -> dict[str, Any]:
    """:func:`evaluate_checkpoint` of what :func:`load` returned for ``path`` (the checkpoint is read once)."""
    meta = state["meta"]
    data = data if data is not None else meta.get("data")
    if data is None and cfg.data is None:
        raise ValueError(f"{path}: {cfg.method} at scale {cfg.scale!r} was trained on real data; give its clip "
                         "directory")
    scores = get_method(cfg.method).evaluate(cfg, model, None if data is None else Path(data),
                                             int(meta.get("seed", 0)) if seed is None else seed)
    return {"method": cfg.method, "scale": cfg.scale, "step": state["step"], "data": None if data is None else
            str(data), **scores}
