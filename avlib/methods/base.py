"""The contract every method follows, its typed configuration, and the registry.

A method is a unit (:class:`Method`): its config (a dataclass deriving from :class:`MethodConfig`, with one preset per
scale: ``full`` is the paper, ``colab`` and ``quick`` state only what differs), and the functions that make its model,
its training step, its data, its evaluation and its list of stages. :mod:`avlib.methods.run` trains any of them the
same way, for the chapters, the ``avlib`` command and the benchmarks.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn
from torch.utils.data import Dataset

from avlib.engine import StepFn
from avlib.runtime import current_scale

__all__ = ["METHODS", "Method", "MethodConfig", "StagePlan", "get_method", "register"]

C = TypeVar("C", bound="MethodConfig")


@dataclass(frozen=True)
class MethodConfig:
    """What every method's config holds: the optimisation (stated as the paper's **global** batch), the inputs' size
    and the SynthOrchestra world it trains on at the small scales.

    ``batch_size`` is the global batch of one optimisation step on any number of devices; ``micro_batch`` the most
    items one device takes at a time (memory), the rest being gradient accumulation (:mod:`avlib.engine.distributed`).
    ``data`` holds ``SynthOrchestra`` keyword arguments, or ``None`` where the method trains on real data only.
    ``init_from`` names the method whose trained model this one starts from (AVOL-Net at quick scale starts from
    AVE-Net). Derive with :meth:`replace`: ``cfg.replace(steps=100, pairs={"negative_mode": "naive"},
    data={**cfg.data, "size": 256})``.
    """

    method: ClassVar[str] = ""
    scale: str = "full"
    batch_size: int = 32
    micro_batch: int | None = None
    steps: int = 1000
    lr: float = 1e-4
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    channels_last: bool = False
    image_size: int = 224
    audio: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    eval_size: int = 256
    init_from: str | None = None

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes``; a dict given for a dataclass field (``pairs``) updates it, any other value
        (dicts such as ``audio`` and ``data`` included) replaces the field."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {unknown[0]!r}; its fields: "
                            f"{', '.join(sorted(known))}")
        merged = {}
        for name, value in changes.items():
            current = getattr(self, name)
            if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
                value = dataclasses.replace(current, **value)
            merged[name] = value
        return dataclasses.replace(self, **merged)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (nested dicts, lists, numbers, strings), with ``method``: what a checkpoint stores."""
        return {"method": self.method, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """The config :meth:`to_dict` wrote (nested dataclasses rebuilt, lists back to tuples where typed so)."""
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value, hint = data[f.name], hints[f.name]
            if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
                value = hint.from_dict(value) if hasattr(hint, "from_dict") else hint(**value)
            elif isinstance(value, list) and "tuple" in str(hint):
                value = tuple(value)
            kwargs[f.name] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class StagePlan:
    """One stage of a method's training: its name and its config (steps, lr, data and net settings of that stage)."""

    name: str
    cfg: MethodConfig


class Method:
    """The contract. A subclass sets ``name``, ``presets`` (``{"full": ..., "colab": ..., "quick": ...}``) and
    implements the methods below; the defaults cover the common case of one stage and no warm start."""

    name: ClassVar[str]
    presets: ClassVar[dict[str, MethodConfig]]

    def config(self, scale: str | None = None, **changes: Any) -> MethodConfig:
        """The preset of ``scale`` (default: ``AVLIB_SCALE``, else ``quick``) with ``changes`` applied; a copy, so that
        editing its dicts (``data``, ``audio``) never changes the preset."""
        scale = current_scale(scale)
        if scale not in self.presets:
            raise ValueError(f"method {self.name!r} has no {scale!r} config (scales: {', '.join(self.presets)})")
        cfg = copy.deepcopy(self.presets[scale])
        return cfg.replace(**changes) if changes else cfg

    def config_from_dict(self, data: Mapping[str, Any]) -> MethodConfig:
        """Rebuild a config a checkpoint stored."""
        return type(self.presets["full"]).from_dict(data)

    def model(self, cfg: MethodConfig) -> nn.Module:
        """The network, freshly initialised from the global torch RNG."""
        raise NotImplementedError

    def step(self, cfg: MethodConfig) -> StepFn:
        """The engine's ``step_fn(model, batch) -> {"loss": ..., ...}`` (spectrograms computed inside, on the
        device)."""
        raise NotImplementedError

    def example_batch(self, cfg: MethodConfig, n: int) -> Any:
        """A random batch of ``n`` with the shapes the step expects (for benchmarks and shape tests)."""
        raise NotImplementedError

    def train_data(self, cfg: MethodConfig, data: Path | None, seed: int) -> Dataset:
        """The training set: the clip directory's ``train`` split, or the config's in-memory world built with
        ``seed``."""
        raise NotImplementedError

    def evaluate(self, cfg: MethodConfig, model: nn.Module, data: Path | None, seed: int) -> dict[str, Any]:
        """Scores on held-out data (the ``test`` split, or the in-memory world's held-out part), JSON-ready."""
        raise NotImplementedError

    def stages(self, cfg: MethodConfig) -> list[StagePlan]:
        """The stages of a training run; one by default."""
        return [StagePlan("train", cfg)]

    def init(self, cfg: MethodConfig, model: nn.Module, source: nn.Module, train: Dataset) -> nn.Module:
        """The starting model made from ``source``, a trained model of ``cfg.init_from``."""
        raise NotImplementedError(f"{self.name} does not start from another method's model")

    def make_optimizer(self, cfg: MethodConfig, model: nn.Module) -> torch.optim.Optimizer:
        """The optimiser the config names (``adam`` or ``sgd``) with its lr, weight decay and momentum."""
        if cfg.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        raise ValueError(f"config names optimizer {cfg.optimizer!r}; avlib knows 'adam' and 'sgd'")


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make ``method`` available by its name to :mod:`avlib.methods.run`, the command and the benchmarks; a second
    method of the same name is refused."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered "
                         f"({type(METHODS[method.name]).__name__})")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name``; the error lists the registered ones."""
    key = name.strip().lower()
    if key not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    return METHODS[key]
