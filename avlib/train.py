"""The training engine: one loop that every method in avlib trains through.

``fit(model, step_fn, data, optimizer, cfg)`` runs ``cfg.steps`` optimisation steps. The same call works in a notebook
on a laptop CPU, on one GPU, and under ``torchrun`` on many GPUs or nodes:

- device: :func:`avlib.runtime.select_device` (CUDA, then MPS, then CPU), or ``cfg.device``; under ``torchrun`` each
  process takes ``cuda:LOCAL_RANK``;
- precision (``cfg.precision``): ``"auto"`` picks bf16 autocast on GPUs that support it, fp16 autocast with a gradient
  scaler on older GPUs, bf16 autocast on CPUs with native bf16 arithmetic (AMX or AVX512-BF16), fp32 elsewhere;
- ``channels_last`` memory format and ``torch.compile`` on request, gradient clipping, a learning-rate schedule;
- DistributedDataParallel when the process was started by ``torchrun`` (``WORLD_SIZE`` > 1), with a distributed sampler
  and logging / checkpointing on rank 0 only;
- atomic checkpoints (temporary file, fsync, rename) every ``cfg.ckpt_every`` steps and exact resume: model, optimiser,
  scheduler, gradient scaler, Python / NumPy / torch RNG states, data position and step;
- a guard that stops on a non-finite loss, naming the step, without ever overwriting the last good checkpoint;
- a tqdm progress bar, per-step metrics appended to ``metrics.jsonl``, and a live plotly loss curve in notebooks.

``step_fn(model, batch) -> dict`` computes the loss of one batch (already on the device, under autocast) and returns it
as ``"loss"`` (a scalar tensor) together with any other numbers to log (floats or scalar tensors).

Metrics are read back from the device only every ``cfg.log_every`` steps (and before each checkpoint), in one transfer,
so the loop does not wait on the accelerator each step.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from avlib.runtime import select_device
from avlib.viz import history_figure

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SCHEDULES = ("constant", "cosine", "linear", "step")
CHECKPOINT_NAME = "last.pt"
METRICS_NAME = "metrics.jsonl"

StepFn = Callable[[nn.Module, Any], Mapping[str, Any]]


class NonFiniteLossError(RuntimeError):
    """Raised when the loss (or, at a checkpoint, a parameter) stops being finite."""


@dataclass
class TrainConfig:
    """Everything ``fit`` needs besides the model, the loss, the data and the optimiser.

    The optimiser carries the base learning rate; ``schedule`` multiplies it per step: ``constant``; ``cosine`` (down to
    ``min_lr_ratio`` at the last step); ``linear`` (down to ``min_lr_ratio``); ``step`` (times ``gamma`` at each of
    ``milestones``). A linear warm-up over ``warmup_steps`` comes first in every schedule.
    ``batch_size`` is per process (under DDP the global batch is ``batch_size * world_size``); it may be left ``None``
    when ``data`` is a DataLoader. ``ckpt_every = 0`` writes a checkpoint only at the end. ``resume`` continues from
    ``out_dir/last.pt`` when it exists and starts afresh otherwise. ``live_plot = None`` means: live loss curve when
    running inside a Jupyter kernel, none otherwise. ``compile``: ``True`` compiles the model with torch.compile's
    default backend (inductor), a string names another backend. ``meta`` is stored in each checkpoint as it is (the
    command line records the method, scale, data and seed there).
    """

    steps: int
    batch_size: int | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    precision: str = "auto"
    device: str | None = None
    out_dir: str | Path | None = None
    ckpt_every: int = 0
    resume: bool = False
    seed: int = 0
    log_every: int = 10
    clip_grad: float | None = None
    compile: bool | str = False
    channels_last: bool = False
    live_plot: bool | None = None
    progress: bool = True
    num_workers: int = 0
    shuffle: bool = True
    drop_last: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"TrainConfig.steps must be >= 1; got {self.steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be >= 1; got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.log_every < 1 or self.ckpt_every < 0 or self.warmup_steps < 0:
            raise ValueError("TrainConfig: log_every must be >= 1, ckpt_every and warmup_steps >= 0")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"TrainConfig.clip_grad must be positive or None; got {self.clip_grad}")


@dataclass
class TrainResult:
    """What ``fit`` returns: the logged history (one dict per step, ``step`` from 1), the final step, and the setup."""

    history: list[dict[str, float]]
    step: int
    checkpoint: Path | None
    device: str
    precision: str
    seconds: float
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def figure(self, keys: Sequence[str] = ("loss",)):
        """A plotly figure of the logged ``keys`` against the step (the final loss curve, for headless runs)."""
        return history_figure(self.history, keys)


# ----------------------------------------------------------------------------------------------------------- precision


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (Intel AMX-BF16 or AVX512-BF16, ARM BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    if flags & {"amx_bf16", "avx512_bf16", "bf16"}:
        return True
    return "AMX" in torch.backends.cpu.get_cpu_capability().upper()


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``"auto"`` into the concrete precision for ``device``: ``"bf16"``, ``"fp16"`` or ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context for a concrete precision (a no-op context for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------------------------------------ schedule


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """The factor applied to the base learning rate for optimisation step ``step`` (0-based)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "linear":
        return floor + (1 - floor) * (1 - progress)
    if cfg.schedule == "step":
        return cfg.gamma ** sum(step >= m for m in cfg.milestones)
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR that follows :func:`lr_multiplier` (its state is the step, so it checkpoints exactly)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_multiplier, cfg=cfg))


# --------------------------------------------------------------------------------------------------------------- steps


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


class StepModule(nn.Module):
    """``step_fn`` as a module: ``StepModule(model, step_fn)(batch) == step_fn(model, batch)``.

    The engine wraps this (not the bare model) in DistributedDataParallel and torch.compile, so that a step function
    may call any method of the model (``model.embed_audio``, ``model.correspondence_logit``, ...) and still get DDP's
    gradient synchronisation and a compiled graph for the whole loss.
    """

    def __init__(self, model: nn.Module, step_fn: StepFn) -> None:
        super().__init__()
        self.model = model
        self.step_fn = step_fn

    def forward(self, batch: Any) -> Mapping[str, Any]:
        return self.step_fn(self.model, batch)


def train_step(
    step: nn.Module,
    batch: Any,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp: Callable[[], AbstractContextManager],
    clip_grad: float | None = None,
) -> dict[str, Any]:
    """One optimisation step of ``step`` (a :class:`StepModule`, maybe wrapped in DDP / torch.compile): forward under
    ``amp()`` (an autocast factory), (scaled) backward, optional clipping, optimiser and scaler step.

    Returns the step function's outputs, detached (still on the device); ``grad_norm`` is added when clipping.
    """
    optimizer.zero_grad(set_to_none=True)
    with amp():
        out = dict(step(batch))
    if "loss" not in out:
        raise KeyError("step_fn must return a dict with a 'loss' entry")
    loss = out["loss"]
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(
            f"step_fn's 'loss' must be a scalar tensor; got {type(loss).__name__} {getattr(loss, 'shape', '')}"
        )
    scaler.scale(loss.reshape(())).backward()
    if clip_grad is not None:
        scaler.unscale_(optimizer)
        out["grad_norm"] = nn.utils.clip_grad_norm_(step.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in out.items()}


# --------------------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file beside it, fsync, then rename over ``path``.

    A crash at any moment leaves either the previous complete file or the new complete file at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | Path, model: nn.Module | None = None, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``fit`` (a file, or a run directory holding ``last.pt``); with ``model``, also load
    its weights. Errors name the file. Checkpoints carry pickled RNG states: load only files you trust."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise RuntimeError(f"checkpoint {path} is unreadable or corrupt: {err}") from err
    if model is not None:
        unwrap(model).load_state_dict(state["model"])
    return state


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


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if present) CUDA random states."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global state is what a resume must restore
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------- logging


def in_notebook() -> bool:
    """True inside a Jupyter kernel (including Colab), False in scripts and plain IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")


class _LivePlot:
    """A loss curve that grows while training, in a notebook.

    A plotly FigureWidget is updated in place where it can be built (plotly >= 6 needs ``anywidget`` for it);
    otherwise a plain figure is redrawn at most every few seconds. At the end the output is replaced by a static
    figure, so an executed notebook (and the book page built from it) keeps the final curve.
    """

    def __init__(self) -> None:
        self.handle: Any = None
        self.widget: Any = None
        self.last_draw = 0.0

    def update(self, history: Sequence[Mapping[str, float]], final: bool = False) -> None:
        from IPython.display import display

        fig = history_figure(history, title="training loss")
        # A plotly figure displays itself through its own _ipython_display_, which ignores display ids: hand IPython
        # the rendered bundle instead, so every redraw replaces the one output rather than appending another.
        bundle = fig._repr_mimebundle_()
        if self.handle is None:
            try:
                import plotly.graph_objects as go

                self.widget = go.FigureWidget(fig)
                self.handle = display(self.widget, display_id=True)
            except ImportError:
                self.handle = display(bundle, raw=True, display_id=True)
        elif final:
            self.handle.update(bundle, raw=True)
        elif self.widget is not None:
            with self.widget.batch_update():
                self.widget.data[0].x = [h["step"] for h in history]
                self.widget.data[0].y = [h["loss"] for h in history]
        elif time.monotonic() - self.last_draw > 3.0:
            self.handle.update(bundle, raw=True)
        self.last_draw = time.monotonic()


# ----------------------------------------------------------------------------------------------------- distributed


def _init_distributed(device_name: str | None) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether this call created the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return 0, 1, select_device(device_name), False
    created = False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device_name in (None, "cuda") else "gloo"
        dist.init_process_group(backend=backend)
        created = True
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available() and device_name in (None, "cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = select_device(device_name)
    return rank, world, device, created


# -------------------------------------------------------------------------------------------------------------- data


class _Data:
    """The epoch order of a map-style dataset, resumable at any batch, identical under DDP and one process.

    Every epoch's order comes from a DistributedSampler seeded with (seed, epoch); a resumed run starts at the saved
    batch of the saved epoch. The DataLoader gets its own generator so building it does not consume the global RNG.
    """

    def __init__(self, data: Dataset | DataLoader, cfg: TrainConfig, rank: int, world: int, pin: bool) -> None:
        collate_fn = None
        batch_size = cfg.batch_size
        if isinstance(data, DataLoader):
            collate_fn = data.collate_fn
            batch_size = batch_size or data.batch_size
            data = data.dataset
        if batch_size is None:
            raise ValueError("fit: TrainConfig.batch_size is required when data is a Dataset")
        if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
            raise TypeError(
                f"fit: data must be a map-style Dataset or a DataLoader over one; got {type(data).__name__}"
            )
        self.dataset, self.batch_size, self.collate_fn = data, batch_size, collate_fn
        self.cfg, self.pin = cfg, pin
        self.sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=cfg.shuffle, seed=cfg.seed)
        per_rank = len(self.sampler)
        self.batches_per_epoch = per_rank // batch_size if cfg.drop_last else math.ceil(per_rank / batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"fit: the dataset has {len(data)} items, fewer than one batch of {batch_size} per process "
                f"({world} process(es)); lower batch_size or use more data"
            )

    def batches(self, start_step: int) -> Iterator[Any]:
        """Yield batches forever, starting at the position of optimisation step ``start_step``."""
        epoch, offset = divmod(start_step, self.batches_per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            if hasattr(self.dataset, "set_epoch"):  # datasets that redraw their items per epoch (e.g. AVCPairs)
                self.dataset.set_epoch(epoch)
            indices = list(self.sampler)[offset * self.batch_size : self.batches_per_epoch * self.batch_size]
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=indices,
                collate_fn=self.collate_fn,
                num_workers=self.cfg.num_workers,
                pin_memory=self.pin,
                drop_last=self.cfg.drop_last,
                generator=torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch),
                persistent_workers=False,
            )
            yield from loader
            epoch, offset = epoch + 1, 0


# ---------------------------------------------------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    step_fn: StepFn,
    data: Dataset | DataLoader,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` optimisation steps of ``step_fn`` over ``data`` with ``optimizer``.

    ``data`` is a map-style Dataset (items collated with the default collate) or a DataLoader over one (its
    ``collate_fn`` and ``batch_size`` are used; the engine makes its own sampler so that the order is resumable and
    distributed). ``model`` is moved to the device; build the optimiser on its parameters before calling (moving keeps
    the parameter objects). Returns the logged history; see the module docstring for everything else.
    """
    rank, world, device, created_group = _init_distributed(cfg.device)
    is_main = rank == 0
    precision = resolve_precision(cfg.precision, device)
    out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
    ckpt_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    metrics_path = out_dir / METRICS_NAME if out_dir is not None else None

    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if optimizer.state:  # moving a model keeps parameter identity, but existing optimiser state must follow it
        optimizer.load_state_dict(optimizer.state_dict())
    scheduler = make_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    batches = _Data(data, cfg, rank, world, pin=device.type == "cuda")

    start, history = 0, []
    state = (
        load_checkpoint(ckpt_path, map_location=device) if cfg.resume and ckpt_path and ckpt_path.is_file() else None
    )
    if state is not None:
        if state["batches_per_epoch"] != batches.batches_per_epoch or state["world_size"] != world:
            raise ValueError(
                f"cannot resume from {ckpt_path}: it was written with {state['world_size']} process(es) and "
                f"{state['batches_per_epoch']} batches per epoch, this run has {world} and {batches.batches_per_epoch}"
            )
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][rank])
        start = state["step"]
        history = [h for h in _read_jsonl(metrics_path) if h["step"] <= start] if is_main else []
    else:
        seed_everything(cfg.seed + rank)
    last_good = (ckpt_path, start) if state is not None else (None, 0)
    if is_main and out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # left by a process killed while writing
            stale.unlink(missing_ok=True)
        _write_jsonl(metrics_path, history)

    net: nn.Module = StepModule(model, step_fn)
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net, backend=cfg.compile if isinstance(cfg.compile, str) else "inductor")
    amp = functools.partial(autocast, device, precision)

    live = _LivePlot() if is_main and (in_notebook() if cfg.live_plot is None else cfg.live_plot) else None
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, initial=start, disable=not (is_main and cfg.progress), desc="train", unit="step")
    pending: list[tuple[int, float, dict[str, Any]]] = []

    def flush() -> None:
        """Bring the pending steps' numbers to the host in one transfer, check them, and log them."""
        if not pending:
            return
        keys = list(pending[0][2])
        values = torch.stack(
            [
                torch.stack([torch.as_tensor(out[k], device=device).float().reshape(()) for k in keys])
                for _, _, out in pending
            ]
        )
        if world > 1:
            dist.all_reduce(values)
            values /= world
        rows = values.cpu().tolist()
        for (step, lr, _), row in zip(pending, rows, strict=True):
            entry = {"step": step, **dict(zip(keys, row, strict=True)), "lr": lr}
            if not math.isfinite(entry["loss"]):
                pending.clear()
                where = (
                    f"the last good checkpoint is {last_good[0]} (step {last_good[1]})"
                    if last_good[0] is not None
                    else "no checkpoint had been written yet"
                )
                raise NonFiniteLossError(f"non-finite loss ({entry['loss']}) at step {step}; training stopped; {where}")
            history.append(entry)
            if is_main and metrics_path is not None:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")
        pending.clear()
        bar.set_postfix(loss=f"{history[-1]['loss']:.4g}" if history else "")
        if live is not None:
            live.update(history)

    def checkpoint(step: int) -> None:
        nonlocal last_good
        flush()
        named = list(unwrap(model).named_parameters())
        finite = torch.stack([torch.isfinite(p).all() for _, p in named]).tolist()  # one device sync
        bad = [name for (name, _), ok in zip(named, finite, strict=True) if not ok]
        if bad:
            raise NonFiniteLossError(
                f"parameter {bad[0]} is not finite at step {step}; checkpoint not written; "
                f"the last good checkpoint is {last_good[0]} (step {last_good[1]})"
            )
        rngs = [None] * world
        if world > 1:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if is_main:
            save_checkpoint(
                {
                    "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rngs,
                    "step": step,
                    "epoch": step // batches.batches_per_epoch,
                    "batch_in_epoch": step % batches.batches_per_epoch,
                    "batches_per_epoch": batches.batches_per_epoch,
                    "world_size": world,
                    "precision": precision,
                    "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                },
                ckpt_path,
            )
        if world > 1:
            dist.barrier()
        last_good = (ckpt_path, step)

    t0 = time.perf_counter()
    try:
        net.train()
        step, stream = start, batches.batches(start)
        while step < cfg.steps:
            batch = next(stream)
            lr = optimizer.param_groups[0]["lr"]
            out = train_step(net, to_device(batch, device, cfg.channels_last), optimizer, scaler, amp, cfg.clip_grad)
            scheduler.step()
            step += 1
            pending.append((step, lr, out))
            bar.update(1)
            if ckpt_path is not None and (step == cfg.steps or (cfg.ckpt_every and step % cfg.ckpt_every == 0)):
                checkpoint(step)
            elif step % cfg.log_every == 0 or step == cfg.steps:
                flush()
        flush()
    finally:
        bar.close()
        if live is not None and history:
            live.update(history, final=True)
        if created_group:
            dist.destroy_process_group()
    return TrainResult(
        history=history,
        step=step,
        checkpoint=ckpt_path if ckpt_path is not None and ckpt_path.is_file() else None,
        device=str(device),
        precision=precision,
        seconds=time.perf_counter() - t0,
        world_size=world,
    )


def _read_jsonl(path: Path | None) -> list[dict[str, float]]:
    if path is None or not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return rows


def _write_jsonl(path: Path | None, rows: Sequence[Mapping[str, float]]) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
