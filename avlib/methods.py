"""The method registry behind the ``avlib`` command and the benchmarks: a name, and all it takes to train and score it.

``build(method, scale, data=None, seed=0)`` reads ``avlib.configs.get_config(method, scale)`` and returns a
:class:`Built`: the model, the engine's ``step_fn``, the training Dataset and an ``eval_fn(model) -> dict`` of scores
on held-out data. ``data`` is a clip directory (avlib's on-disk format: ``split == "train"`` rows train,
``split == "test"`` rows evaluate); without it the method's SynthOrchestra world from the config is generated in
memory (quick and colab scales only). Benchmarks need no data: :func:`get_method` gives the model and step builder
and ``example_batch(cfg, n)``, a random batch of the shapes the step expects.

Registered now: the audio-visual correspondence nets ``l3`` (L3-Net), ``ave`` (AVE-Net) and ``avol`` (AVOL-Net),
scored by AVC accuracy, and the clustering nets ``dmc`` (Deep Multimodal Clustering) and ``cavl`` (Curriculum
Audiovisual Learning, level C1), scored by sound localization (:mod:`avlib.localization`). A new method registers
a :class:`Method` with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from avlib.configs import get_config
from avlib.train import StepFn, TrainConfig

__all__ = ["METHODS", "Built", "Method", "build", "get_method", "make_optimizer", "register", "train_config"]


EvalFn = Callable[[nn.Module], dict[str, Any]]  # scores (floats, counts, notes), JSON-ready


@dataclass(frozen=True)
class Method:
    """How a method is built from its config (a dict of ``avlib.configs``).

    ``model(cfg) -> (model, step_fn)``; ``example_batch(cfg, n)``: a random batch of ``n`` with the shapes the step
    expects; ``data(cfg, clip_dir_or_None, seed) -> (train Dataset, eval_fn)``; ``init(built, checkpoint) -> model``
    (optional): the starting model made from another method's trained checkpoint, for configs that name that
    method in ``init_from``.
    """

    model: Callable[[dict[str, Any]], tuple[nn.Module, StepFn]]
    example_batch: Callable[[dict[str, Any], int], Any]
    data: Callable[[dict[str, Any], Path | None, int], tuple[Dataset, EvalFn]]
    init: Callable[[Built, Path], nn.Module] | None = None


@dataclass
class Built:
    """A method ready to train: ``fit(model, step_fn, train_data, make_optimizer(model, cfg), train_config(cfg))``."""

    cfg: dict[str, Any]
    model: nn.Module
    step_fn: StepFn
    train_data: Dataset
    eval_fn: EvalFn


METHODS: dict[str, Method] = {}


def register(name: str, method: Method) -> None:
    """Make ``method`` available as ``name`` to :func:`build`, the ``avlib`` command and the benchmarks."""
    METHODS[name] = method


def get_method(name: str) -> Method:
    """The registered :class:`Method` called ``name``; the error lists the registered ones."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build(method: str, scale: str | None = None, data: str | Path | None = None, seed: int = 0) -> Built:
    """Build ``method`` at ``scale`` on the clip directory ``data`` (or its in-memory SynthOrchestra world)."""
    spec = get_method(method)
    cfg = get_config(method, scale)
    if data is None and cfg.get("data") is None:
        raise ValueError(f"method {method!r} at scale {cfg['scale']!r} trains on real data: give a clip directory")
    model, step_fn = spec.model(cfg)
    train, eval_fn = spec.data(cfg, None if data is None else Path(data), seed)
    return Built(cfg, model, step_fn, train, eval_fn)


def make_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimiser a config names (``adam`` or ``sgd``), with its ``lr``, ``weight_decay`` and ``momentum``."""
    name = cfg.get("optimizer", "adam")
    wd = cfg.get("weight_decay", 0.0)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg.get("momentum", 0.9), weight_decay=wd)
    raise ValueError(f"config names optimizer {name!r}; avlib knows 'adam' and 'sgd'")


def train_config(cfg: dict[str, Any], **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a method config (``steps``, ``batch_size``, the schedule, ``channels_last``)."""
    keys = ("steps", "batch_size", "schedule", "warmup_steps", "milestones", "gamma", "min_lr_ratio", "channels_last")
    kwargs = {k: cfg[k] for k in keys if k in cfg}
    kwargs["meta"] = {"method": cfg["method"], "scale": cfg["scale"]}
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


# ----------------------------------------------------------------------------------- audio-visual correspondence


def _avc_model(cfg: dict[str, Any]) -> tuple[nn.Module, StepFn]:
    from avlib.avc import build_avc

    net, _, step_fn = build_avc(cfg)
    return net, step_fn


def _avc_example_batch(cfg: dict[str, Any], n: int) -> dict[str, torch.Tensor]:
    samples = round(cfg["pairs"]["window_seconds"] * cfg["audio"]["sample_rate"])
    size = int(cfg["image_size"])
    return {"image": torch.rand(n, 3, size, size), "audio": 0.1 * torch.randn(n, samples), "label": torch.arange(n) % 2}


def _avc_data(cfg: dict[str, Any], data: Path | None, seed: int) -> tuple[Dataset, EvalFn]:
    """AVC pairs for L3-Net / AVE-Net / AVOL-Net (Arandjelović & Zisserman 2017, 2018).

    Training pairs follow the config's sampling (``pairs``: window, negative mode, misalignment) with L3's volume
    jitter and image augmentation (:class:`avlib.vision.L3ImageTransform`, scaled to the config's image size);
    evaluation pairs are drawn from held-out clips without augmentation and scored by AVC accuracy (chance: 0.5).
    """
    from avlib.audio import make_frontend
    from avlib.avc import InMemoryClips, avc_accuracy_on
    from avlib.data import AVCPairs, ClipDataset, SynthOrchestra
    from avlib.vision import L3ImageTransform

    size = int(cfg["image_size"])
    resize = round(size * 256 / 224)  # L3: short side 256, crop 224; the same ratio at smaller scales
    if data is None:
        world = InMemoryClips(SynthOrchestra(**cfg["data"], seed=seed))
        n_train = int(cfg.get("train_clips", len(world) * 2 // 3))
        train_src, train_clips = world, range(n_train)
        eval_src, eval_clips = world, range(n_train, len(world))
    else:
        rate = int(cfg["audio"]["sample_rate"])
        train_src, eval_src = ClipDataset(data, "train", sample_rate=rate), ClipDataset(data, "test", sample_rate=rate)
        train_clips, eval_clips = range(len(train_src)), range(len(eval_src))
    train = AVCPairs(
        train_src,
        **cfg["pairs"],
        clips=list(train_clips),
        seed=seed,
        volume_jitter=cfg.get("volume_jitter", 0.0),
        image_transform=L3ImageTransform(train=True, size=size, resize=resize),
        cache_audio=True,
    )
    held_out = AVCPairs(
        eval_src,
        window_seconds=cfg["pairs"]["window_seconds"],
        negative_mode=cfg["pairs"]["negative_mode"],
        clips=list(eval_clips),
        seed=seed + 1,
        length=int(cfg.get("eval_size", 2 * len(eval_clips))),
        image_transform=L3ImageTransform(train=False, size=size, resize=resize),
        cache_audio=True,
    )
    frontend = make_frontend(cfg["audio"])

    def eval_fn(model: nn.Module) -> dict[str, float]:
        return {"avc_accuracy": avc_accuracy_on(model, frontend, held_out), "chance": 0.5, "pairs": len(held_out)}

    return train, eval_fn


def _avol_from_ave(built: Built, checkpoint: Path) -> nn.Module:
    """AVOL-Net started from a trained AVE-Net (Objects that Sound): trunks and fc layers copied (the fcs become 1x1
    convolutions), the calibration fitted on one batch of the training pairs."""
    from avlib.avc import build_avc
    from avlib.nets.ave import AVOLNet
    from avlib.train import load_checkpoint

    ave, _, _ = build_avc({**built.cfg, "method": "ave"})  # the same trunks and embedding sizes
    load_checkpoint(checkpoint, ave)
    avol = AVOLNet.from_avenet(ave.eval())
    _, frontend, _ = build_avc(built.cfg)
    batch = built.train_data.batch(range(min(256, len(built.train_data))))
    with torch.no_grad():
        spec = frontend(batch["audio"])
    avol.eval().calibrate_(batch["image"], spec, batch["label"])
    return avol.train()


for _name in ("l3", "ave"):
    register(_name, Method(_avc_model, _avc_example_batch, _avc_data))
register("avol", Method(_avc_model, _avc_example_batch, _avc_data, init=_avol_from_ave))


# ------------------------------------------------------------------------------- clustering nets: DMC and CAVL

EVAL_SIZE = 256  # held-out scenes of the in-memory world where a config names no ``eval_size``


def _clustering_data(cfg: dict[str, Any], data: Path | None, seed: int, localize: Callable[..., Any],
                     step_fn: StepFn) -> tuple[Dataset, EvalFn]:
    """Single-image / single-spectrogram pairs for DMC (Hu, Nie & Li 2019) and CAVL (Hu et al. 2020), as chapters 1-2.

    In memory: scenes of ``SynthOrchestra(**cfg["data"], seed=seed)`` train, ``eval_size`` scenes of the world with
    ``seed + 1`` evaluate. From a clip directory: ``train`` clips are read lazily (:class:`avlib.localization.
    ClipPairs`), ``test`` clips are loaded once. ``eval_fn`` reports cIoU@0.5 / AUC of the related and unrelated
    centers and the trivial baselines against the sounding-object boxes (:func:`avlib.localization.
    evaluate_localization`), or, for clips without boxes, the held-out loss and a note that localization needs boxes.
    """
    from torch.utils.data import StackDataset

    from avlib.data import ClipDataset, SynthOrchestra
    from avlib.localization import ClipPairs, clip_tensors, evaluate_localization, scene_tensors

    if data is None:
        scenes = scene_tensors(cfg, SynthOrchestra(**cfg["data"], seed=seed))
        train: Dataset = StackDataset(image=scenes["image"], spec=scenes["spec"])
        held_out = scene_tensors(cfg, SynthOrchestra(**{**cfg["data"], "size": cfg.get("eval_size", EVAL_SIZE)},
                                                     seed=seed + 1))
    else:
        rate = int(cfg["audio"]["sample_rate"])
        train = ClipPairs(cfg, ClipDataset(data, "train", sample_rate=rate, frames="middle"))
        held_out = clip_tensors(cfg, ClipDataset(data, "test", sample_rate=rate, frames="middle"))

    def eval_fn(model: nn.Module) -> dict[str, Any]:
        return evaluate_localization(model, localize, step_fn, held_out, batch_size=int(cfg["batch_size"]), seed=seed)

    return train, eval_fn


def _dmc_model(cfg: dict[str, Any]) -> tuple[nn.Module, StepFn]:
    from avlib.nets.dmc import dmc_from_config

    return dmc_from_config(cfg)


def _dmc_example_batch(cfg: dict[str, Any], n: int) -> dict[str, torch.Tensor]:
    from avlib.nets.dmc import dmc_example_batch

    return dmc_example_batch(cfg, n)


def _dmc_data(cfg: dict[str, Any], data: Path | None, seed: int) -> tuple[Dataset, EvalFn]:
    from avlib.nets.dmc import DMCNet, dmc_step_fn

    return _clustering_data(cfg, data, seed, DMCNet.localize, dmc_step_fn(cfg))


def _cavl_model(cfg: dict[str, Any]) -> tuple[nn.Module, StepFn]:
    from avlib.nets.cavl import cavl_from_config

    return cavl_from_config(cfg)


def _cavl_example_batch(cfg: dict[str, Any], n: int) -> dict[str, torch.Tensor]:
    from avlib.nets.cavl import cavl_example_batch

    return cavl_example_batch(cfg, n)


def _cavl_data(cfg: dict[str, Any], data: Path | None, seed: int) -> tuple[Dataset, EvalFn]:
    from avlib.nets.cavl import CAVLNet, cavl_step_fn

    return _clustering_data(cfg, data, seed, CAVLNet.localize, cavl_step_fn(cfg))


register("dmc", Method(_dmc_model, _dmc_example_batch, _dmc_data))
register("cavl", Method(_cavl_model, _cavl_example_batch, _cavl_data))
