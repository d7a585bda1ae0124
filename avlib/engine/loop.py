"""``fit``: the one training loop of avlib, and the configuration it takes.

``fit(model, step_fn, data, optimizer, cfg)`` runs ``cfg.steps`` optimisation steps. The same call works in a notebook
on a laptop CPU, on one GPU, and under ``torchrun`` on many GPUs or nodes. ``step_fn(model, batch) -> dict`` computes
the loss of one (micro-)batch, already on the device and under autocast, as ``"loss"`` (a scalar tensor) together with
any other numbers to log. What the loop does around it lives in the sibling modules: precision (``precision``), the
global batch split into processes and micro-batches (``distributed``), the resumable data order (``batches``),
verified checkpoints (``checkpoint``), the owned run directory (``rundir``) and what is shown and logged (``monitor``).

A run with ``out_dir``:

- refuses to start where a run already exists unless ``resume`` (continue it) or ``overwrite`` (replace it), and holds
  an exclusive lock on the directory while it trains;
- writes a verified checkpoint every ``ckpt_every`` steps and at the end, keeping the last ``keep_checkpoints``;
  ``resume`` continues exactly (model, optimiser, scheduler, scaler, RNG states, data position, step) from the newest
  checkpoint that verifies. A different learning rate on resume is applied from the resumed step and reported; a
  changed batch, schedule, seed or clipping is refused in one line (``steps`` may change);
- on SIGINT or SIGTERM finishes the current step, writes a checkpoint and raises :class:`TrainingInterrupted`;
- stops on a non-finite loss, naming the step, the batch's items and the last verified checkpoint.

Metrics are read back from the device only every ``log_every`` steps (and before each checkpoint), in one transfer.
"""

from __future__ import annotations

import functools
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from avlib.engine.batches import StepBatches
from avlib.engine.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from avlib.engine.distributed import init_distributed, plan_batches
from avlib.engine.monitor import LivePlot, in_notebook, read_jsonl, write_jsonl
from avlib.engine.precision import PRECISIONS, autocast, resolve_precision
from avlib.engine.rundir import RunLock, claim_run_dir
from avlib.engine.schedule import SCHEDULES, make_scheduler
from avlib.viz import history_figure

__all__ = ["NonFiniteLossError", "StepFn", "StepModule", "TrainConfig", "TrainResult", "TrainingInterrupted", "fit",
           "train_step"]

METRICS_NAME = "metrics.jsonl"
StepFn = Callable[[nn.Module, Any], Mapping[str, Any]]
# settings a resumed run must share with the run it continues (the lr may change; steps may grow or shrink)
_FIXED_ON_RESUME = ("batch_size", "schedule", "warmup_steps", "min_lr_ratio", "milestones", "gamma", "seed",
                    "clip_grad", "shuffle")


class NonFiniteLossError(RuntimeError):
    """The loss (or, at a checkpoint, a parameter) stopped being finite."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM stopped the run after a step; ``checkpoint`` holds it (``None`` without ``out_dir``)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (no out_dir)"
        super().__init__(f"{signal.Signals(signum).name} at step {step}: stopped after the step; {where}")


@dataclass
class TrainConfig:
    """Everything ``fit`` needs besides the model, the loss, the data and the optimiser.

    ``batch_size`` is the **global** batch of one optimisation step, whatever the number of processes; each device
    takes at most ``micro_batch`` items at a time and accumulates gradients (see :mod:`avlib.engine.distributed`).
    It may be left ``None`` when ``data`` is a DataLoader (its batch size is then the global batch). The optimiser
    carries the base learning rate; ``schedule`` (``constant``, ``cosine``, ``linear``, ``step``) multiplies it per step
    after ``warmup_steps`` of linear warm-up (:func:`avlib.engine.schedule.lr_multiplier`). ``ckpt_every = 0`` writes a
    checkpoint only at the end. ``live_plot = None``: a live loss curve inside a Jupyter kernel, none elsewhere.
    ``compile``: ``True`` for torch.compile's default backend, a string names another. ``deterministic`` asks torch
    for deterministic kernels (on GPUs some are slower, and a few operations refuse). ``meta`` is stored in each
    checkpoint as it is: the method's resolved config, its data and seed, when run through :mod:`avlib.methods`.
    """

    steps: int
    batch_size: int | None = None
    micro_batch: int | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    precision: str = "auto"
    device: str | None = None
    out_dir: str | Path | None = None
    ckpt_every: int = 0
    keep_checkpoints: int = 2
    resume: bool = False
    overwrite: bool = False
    seed: int = 0
    log_every: int = 10
    clip_grad: float | None = None
    compile: bool | str = False
    channels_last: bool = False
    deterministic: bool = False
    live_plot: bool | None = None
    progress: bool = True
    num_workers: int = 0
    shuffle: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.milestones = tuple(self.milestones)
        if self.steps < 1:
            raise ValueError(f"TrainConfig.steps must be >= 1; got {self.steps}")
        for name in ("batch_size", "micro_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.log_every < 1 or self.ckpt_every < 0 or self.warmup_steps < 0 or self.keep_checkpoints < 1:
            raise ValueError("TrainConfig: log_every and keep_checkpoints must be >= 1, ckpt_every and warmup_steps "
                             ">= 0")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"TrainConfig.clip_grad must be positive or None; got {self.clip_grad}")

    def schedule_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`avlib.engine.schedule.lr_multiplier`."""
        return {"steps": self.steps, "schedule": self.schedule, "warmup_steps": self.warmup_steps,
                "min_lr_ratio": self.min_lr_ratio, "milestones": self.milestones, "gamma": self.gamma}

    def plain(self) -> dict[str, Any]:
        """The config as plain data (paths as strings), for checkpoints."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    """What ``fit`` returns: the logged history (one dict per step, ``step`` from 1), the final step, and the setup;
    ``loaded``: the run was already complete and was read back from its run directory (``seconds`` is then 0)."""

    history: list[dict[str, float]]
    step: int
    checkpoint: Path | None
    device: str
    precision: str
    seconds: float
    world_size: int = 1
    batch_plan: str = ""
    loaded: bool = False

    def figure(self, keys: Sequence[str] = ("loss",)):
        """A plotly figure of the logged ``keys`` against the step (the final loss curve, for headless runs)."""
        return history_figure(self.history, keys)


class StepModule(nn.Module):
    """``step_fn`` as a module: ``StepModule(model, step_fn)(batch) == step_fn(model, batch)``.

    The engine wraps this (not the bare model) in DistributedDataParallel and torch.compile, so that a step function
    may call any method of the model and still get DDP's gradient synchronisation and one compiled graph for the loss.
    """

    def __init__(self, model: nn.Module, step_fn: StepFn) -> None:
        super().__init__()
        self.model = model
        self.step_fn = step_fn

    def forward(self, batch: Any) -> Mapping[str, Any]:
        return self.step_fn(self.model, batch)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP, torch.compile and :class:`StepModule` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(model, StepModule):
            model = model.model
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of a (nested dict / list / tuple) batch to ``device``; 4-D float tensors go channels_last."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


def train_step(step: nn.Module, micro_batches: Sequence[Any], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, amp: Callable[[], AbstractContextManager], clip_grad: float | None = None,
               ddp: nn.parallel.DistributedDataParallel | None = None) -> dict[str, Any]:
    """One optimisation step over ``micro_batches`` (gradients accumulated, each loss weighted ``1 / A``): forward
    under ``amp()``, (scaled) backward, optional clipping, optimiser and scaler step. Under DDP (``ddp``) gradients are
    synchronised once, on the last micro-batch.

    Returns the step function's outputs averaged over the micro-batches, detached (still on the device);
    ``grad_norm`` is added when clipping.
    """
    optimizer.zero_grad(set_to_none=True)
    n, outs = len(micro_batches), []
    for i, batch in enumerate(micro_batches):
        with ddp.no_sync() if ddp is not None and i < n - 1 else nullcontext():
            with amp():
                out = dict(step(batch))
            loss = out.get("loss")
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(f"step_fn must return a dict whose 'loss' is a scalar tensor; got "
                                 f"{type(loss).__name__} {getattr(loss, 'shape', '')}")
            scaler.scale(loss.reshape(()) / n).backward()
        outs.append({k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in out.items()})
    mean = outs[0] if n == 1 else {k: sum(o[k] for o in outs) / n for k in outs[0]}
    if clip_grad is not None:
        scaler.unscale_(optimizer)
        mean["grad_norm"] = nn.utils.clip_grad_norm_(step.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return mean


@contextmanager
def _signals_stop_after_step() -> Iterator[dict[str, int | None]]:
    """While inside, SIGINT / SIGTERM only set ``flag["signum"]`` (main thread only; elsewhere nothing changes)."""
    flag: dict[str, int | None] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag["signum"] = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _item_names(dataset: Any, indices: Sequence[int], most: int = 8) -> str:
    """The first items of a batch by name (``dataset.item_name(i)`` where the dataset has it) or index."""
    name = getattr(dataset, "item_name", None)
    shown = [name(i) if name else str(i) for i in indices[:most]]
    more = f" and {len(indices) - most} more" if len(indices) > most else ""
    return ", ".join(shown) + more


class _Run:
    """The state of one call of :func:`fit`: set up by the constructor, advanced by :meth:`train`."""

    def __init__(self, model: nn.Module, step_fn: StepFn, data: Dataset | DataLoader,
                 optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
        self.rank, self.world, self.device, self.created_group = init_distributed(cfg.device)
        self.is_main = self.rank == 0
        self.cfg, self.model, self.step_fn, self.optimizer = cfg, model, step_fn, optimizer
        self.precision = resolve_precision(cfg.precision, self.device)
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
        self.metrics = self.out_dir / METRICS_NAME if self.out_dir is not None else None
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        global_batch = cfg.batch_size or (data.batch_size if isinstance(data, DataLoader) else None)
        if global_batch is None:
            raise ValueError("fit: TrainConfig.batch_size (the global batch) is required when data is a Dataset")
        self.plan = plan_batches(global_batch, self.world, cfg.micro_batch)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if optimizer.state:  # moving a model keeps parameter identity, but existing optimiser state must follow it
            optimizer.load_state_dict(optimizer.state_dict())
        self.scheduler = make_scheduler(optimizer, **cfg.schedule_kwargs())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.batches = StepBatches(data, self.plan, self.rank, cfg.seed, cfg.shuffle, cfg.num_workers,
                                   pin_memory=self.device.type == "cuda")
        self.step, self.history = 0, []
        self.last_good: tuple[Path | None, int] = (None, 0)
        self.pending: list[tuple[int, float, dict[str, Any], list[int]]] = []

    # ----------------------------------------------------------------------------------------------- resume
    def resume_or_seed(self) -> None:
        found = latest_checkpoint(self.out_dir, self.device) if self.cfg.resume and self.out_dir else None
        if found is None:
            seed_everything(self.cfg.seed + self.rank)
            return
        path, state = found
        saved = state["train_config"]
        now = self.cfg.plain()
        # the settings first: a changed batch_size also changes the steps per epoch, and should be named as itself
        changed = [k for k in _FIXED_ON_RESUME if as_plain(saved.get(k)) != as_plain(now[k])]
        if changed:
            k = changed[0]
            raise ValueError(f"cannot resume from {path} with a different {k} ({saved.get(k)!r} there, {now[k]!r} "
                             "now); resume with the run's own settings, or start a new run")
        if state["world_size"] != self.world or state["steps_per_epoch"] != self.batches.steps_per_epoch:
            raise ValueError(f"cannot resume from {path}: it was written with {state['world_size']} process(es) and "
                             f"{state['steps_per_epoch']} steps per epoch, this run has {self.world} and "
                             f"{self.batches.steps_per_epoch}")
        base_lrs = [g.get("initial_lr", g["lr"]) for g in self.optimizer.param_groups]
        load_weights(unwrap(self.model), state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][self.rank])
        self.step = state["step"]
        self._apply_new_lr(base_lrs)
        self.history = [h for h in read_jsonl(self.metrics) if h["step"] <= self.step] if self.is_main else []
        self.last_good = (path, self.step)

    def _apply_new_lr(self, base_lrs: list[float]) -> None:
        """Where the optimiser handed to ``fit`` has another base lr than the checkpoint's, use it from now on."""
        saved = list(self.scheduler.base_lrs)
        if all(math.isclose(a, b) for a, b in zip(saved, base_lrs, strict=True)):
            return
        self.scheduler.base_lrs = list(base_lrs)
        for group, lr in zip(self.optimizer.param_groups, base_lrs, strict=True):
            group["initial_lr"] = lr
            group["lr"] = lr * self.scheduler.lr_lambdas[0](self.step)
        self.say(f"lr {saved[0]:g} -> {base_lrs[0]:g} from step {self.step} (resumed with a new base lr)")

    def say(self, line: str) -> None:
        if self.is_main:
            print(f"avlib: {line}", file=sys.stderr)

    def last_good_text(self) -> str:
        """Where training can continue from, for the non-finite guard's message."""
        path, good = self.last_good
        if path is not None:
            return f"the last verified checkpoint is {path} (step {good})"
        if self.out_dir is None:
            return "no checkpoint was written (no out_dir)"
        return "no checkpoint had been written yet"

    # ----------------------------------------------------------------------------------------- logging
    def flush(self) -> None:
        """Bring the pending steps' numbers to the host in one transfer, check them, and log them."""
        if not self.pending:
            return
        keys = list(self.pending[0][2])
        values = torch.stack([torch.stack([torch.as_tensor(out[k], device=self.device).float().reshape(())
                                           for k in keys]) for _, _, out, _ in self.pending])
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        rows, pending = values.cpu().tolist(), self.pending
        self.pending = []
        for (step, lr, _, items), row in zip(pending, rows, strict=True):
            entry = {"step": step, **dict(zip(keys, row, strict=True)), "lr": lr}
            if not math.isfinite(entry["loss"]):
                raise NonFiniteLossError(f"non-finite loss ({entry['loss']}) at step {step} on items "
                                         f"{_item_names(self.batches.dataset, items)}; training stopped; "
                                         f"{self.last_good_text()}")
            self.history.append(entry)
            if self.is_main and self.metrics is not None:
                with open(self.metrics, "a") as f:
                    f.write(json.dumps(entry) + "\n")
        self.bar.set_postfix(loss=f"{self.history[-1]['loss']:.4g}" if self.history else "")
        if self.live is not None:
            self.live.update(self.history)

    # ------------------------------------------------------------------------------------- checkpoints
    def checkpoint(self) -> None:
        self.flush()
        named = list(unwrap(self.model).named_parameters())
        finite = torch.stack([torch.isfinite(p).all() for _, p in named]).tolist()  # one device sync
        bad = [name for (name, _), ok in zip(named, finite, strict=True) if not ok]
        if bad:
            raise NonFiniteLossError(f"parameter {bad[0]} is not finite at step {self.step}; checkpoint not written; "
                                     f"{self.last_good_text()}")
        rngs: list[Any] = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        path = checkpoint_path(self.out_dir, self.step)
        if self.is_main:
            save_checkpoint({
                "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rngs,
                "step": self.step, "steps_per_epoch": self.batches.steps_per_epoch, "world_size": self.world,
                "precision": self.precision, "train_config": self.cfg.plain(), "meta": self.cfg.meta,
            }, path, keep=self.cfg.keep_checkpoints)
        if self.world > 1:
            dist.barrier()
        self.last_good = (path, self.step)

    def agreed_signal(self, signum: int | None) -> int | None:
        """The stop signal, agreed by every process (under DDP one tiny all-reduce per step, so that all ranks stop
        after the same step and write one checkpoint together)."""
        if self.world == 1:
            return signum
        t = torch.tensor([signum or 0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item()) or None

    # -------------------------------------------------------------------------------------------- loop
    def train(self) -> TrainResult:
        cfg = self.cfg
        if self.is_main and self.out_dir is not None:
            for stale in self.out_dir.glob(".step_*.tmp"):  # left by a process killed while writing
                stale.unlink(missing_ok=True)
            write_jsonl(self.metrics, self.history)
        net: nn.Module = StepModule(self.model, self.step_fn)
        ddp = None
        if self.world > 1:
            ddp = net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net, backend=cfg.compile if isinstance(cfg.compile, str) else "inductor")
        amp = functools.partial(autocast, self.device, self.precision)
        self.live = LivePlot() if self.is_main and (in_notebook() if cfg.live_plot is None else cfg.live_plot) else None
        from tqdm.auto import tqdm

        self.bar = tqdm(total=cfg.steps, initial=self.step, disable=not (self.is_main and cfg.progress), desc="train",
                        unit="step")
        t0 = time.perf_counter()
        try:
            with _signals_stop_after_step() as flag:
                net.train()
                stream = self.batches.steps(self.step)
                while self.step < cfg.steps:
                    items, micro = next(stream)
                    lr = self.optimizer.param_groups[0]["lr"]
                    micro = [to_device(b, self.device, cfg.channels_last) for b in micro]
                    out = train_step(net, micro, self.optimizer, self.scaler, amp, cfg.clip_grad, ddp)
                    self.scheduler.step()
                    self.step += 1
                    self.pending.append((self.step, lr, out, items))
                    self.bar.update(1)
                    last = self.step == cfg.steps
                    if self.out_dir is not None and (last or (cfg.ckpt_every and self.step % cfg.ckpt_every == 0)):
                        self.checkpoint()
                    elif self.step % cfg.log_every == 0 or last:
                        self.flush()
                    signum = self.agreed_signal(flag["signum"])
                    if signum is not None and not last:
                        if self.out_dir is not None and self.last_good[1] != self.step:
                            self.checkpoint()
                        self.flush()
                        raise TrainingInterrupted(signum, self.step,
                                                  self.last_good[0] if self.out_dir is not None else None)
                self.flush()
        finally:
            self.bar.close()
            if self.live is not None and self.history:
                self.live.update(self.history, final=True)
        last_ckpt = self.last_good[0] if self.last_good[1] == self.step else None
        return TrainResult(self.history, self.step, last_ckpt, str(self.device), self.precision,
                           time.perf_counter() - t0, self.world, self.plan.describe())


def as_plain(value: Any) -> Any:
    """Tuples and lists compare alike (a config read back from a checkpoint holds lists)."""
    if isinstance(value, (list, tuple)):
        return [as_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    return value


def fit(model: nn.Module, step_fn: StepFn, data: Dataset | DataLoader, optimizer: torch.optim.Optimizer,
        cfg: TrainConfig) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` optimisation steps of ``step_fn`` over ``data`` with ``optimizer``.

    ``data`` is a map-style Dataset (items collated with the default collate) or a DataLoader over one (its
    ``collate_fn`` is used; the engine makes its own sampler so that the order is resumable and distributed).
    ``model`` is moved to the device; build the optimiser on its parameters before calling (moving keeps the
    parameter objects). See the module docstring for checkpoints, resume, signals and the non-finite guard.
    """
    run = _Run(model, step_fn, data, optimizer, cfg)
    if run.out_dir is None or not run.is_main:
        run.resume_or_seed()
        return run.train()
    with RunLock(run.out_dir):
        claim_run_dir(run.out_dir, cfg.resume, cfg.overwrite)
        run.resume_or_seed()
        return run.train()
