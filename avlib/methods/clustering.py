"""What the clustering nets DMC (Hu, Nie & Li 2019) and CAVL (Hu et al. 2020) share as methods: one image (the middle
frame) and one spectrogram example per clip, trained on in-batch negatives and scored by sound localization.

In memory, the scenes of ``SynthOrchestra(**cfg.data, seed=seed)`` train and ``eval_size`` scenes of the world with
``seed + 1`` evaluate; from a clip directory, ``train`` clips are read lazily (:class:`avlib.data.views.ClipPairs`) and
``test`` clips are loaded once. The evaluation reports the held-out loss and, where the data has boxes, cIoU@0.5 / AUC
of the related and unrelated centers' maps under the paper's rule, the contrast rule and the audio-free ``image`` rule,
beside the trivial baselines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, StackDataset

from avlib.audio import example_samples, first_example, make_frontend
from avlib.data import ClipDataset, SynthOrchestra
from avlib.data.views import ClipPairs, clip_tensors, scene_tensors
from avlib.eval.avc import model_device
from avlib.eval.localization import NO_BOXES, localization_report, pick_center_maps
from avlib.eval.objective import held_out_step
from avlib.methods.base import Method, MethodConfig

__all__ = ["ClusteringMethod", "vggish_audio"]

RULES = ("paper", "contrast", "image")


def vggish_audio(frames: int, n_mels: int) -> dict[str, Any]:
    """The small scales' audio input of both nets: a VGGish-style log-mel example of ``frames`` x ``n_mels`` at
    16 kHz (25 ms windows every 10 ms, FFT 512)."""
    return {"frontend": "vggish_logmel", "sample_rate": 16000, "frames": frames, "n_mels": n_mels, "n_fft": 512,
            "win_length": 400, "hop_length": 160}


class ClusteringMethod(Method):
    """Data, step and evaluation of DMC and CAVL; a subclass gives the network, ``loss_step(model, batch, frontend,
    margin, generator)`` (its loss), the image transform and ``center_scores(cfg, out, mode) -> (B, k_v)`` (its rule
    for which visual center made the sound)."""

    loss_step: Callable[..., dict[str, Tensor]]

    def step(self, cfg: MethodConfig) -> Callable[..., dict[str, Tensor]]:
        """``loss_step`` with the config's frontend and margin: ``step(model, batch, generator=None)``."""
        return functools.partial(self.loss_step, frontend=make_frontend(cfg.audio), margin=cfg.margin)

    def example_batch(self, cfg: MethodConfig, n: int) -> dict[str, Tensor]:
        return {"image": self.image_transform(cfg)(torch.rand(n, 3, cfg.image_size, cfg.image_size)),
                "audio": 0.1 * torch.randn(n, self.samples(cfg))}

    def image_transform(self, cfg: MethodConfig) -> nn.Module:
        raise NotImplementedError

    def center_scores(self, cfg: MethodConfig, out: dict[str, Tensor], mode: str) -> Tensor:
        raise NotImplementedError

    def samples(self, cfg: MethodConfig) -> int:
        """Audio samples per clip that the network input needs."""
        return example_samples(make_frontend(cfg.audio), cfg.audio)

    def scenes(self, cfg: MethodConfig, seed: int, size: int | None = None) -> dict[str, Tensor]:
        """:func:`avlib.data.views.scene_tensors` of the config's world with ``seed`` (``size`` scenes)."""
        world = SynthOrchestra(**{**cfg.data, **({"size": size} if size else {})}, seed=seed)
        return scene_tensors(world, self.samples(cfg), cfg.image_size, self.image_transform(cfg))

    def train_data(self, cfg: MethodConfig, data: Path | None, seed: int) -> Dataset:
        if data is None:
            scenes = self.scenes(cfg, seed)
            return StackDataset(image=scenes["image"], audio=scenes["audio"])
        clips = ClipDataset(data, "train", sample_rate=int(cfg.audio["sample_rate"]), frames="middle")
        return ClipPairs(clips, self.samples(cfg), self.image_transform(cfg))

    def held_out(self, cfg: MethodConfig, data: Path | None, seed: int) -> dict[str, Tensor]:
        """Held-out inputs and boxes: ``eval_size`` scenes of the world with ``seed + 1``, or the ``test`` clips."""
        if data is None:
            return self.scenes(cfg, seed + 1, cfg.eval_size)
        clips = ClipDataset(data, "test", sample_rate=int(cfg.audio["sample_rate"]), frames="middle")
        return clip_tensors(clips, self.samples(cfg), cfg.image_size, self.image_transform(cfg))

    @torch.no_grad()
    def forward(self, cfg: MethodConfig, model: nn.Module, inputs: dict[str, Tensor], batch_size: int = 64
                ) -> dict[str, Tensor]:
        """The net's outputs on ``inputs`` (``image``, ``audio``) in chunks, concatenated on the CPU (eval mode)."""
        was_training = model.training
        model.eval()
        device, frontend = model_device(model), make_frontend(cfg.audio)
        try:
            chunks = [model(inputs["image"][i : i + batch_size].to(device),
                            first_example(frontend, inputs["audio"][i : i + batch_size].to(device)))
                      for i in range(0, inputs["image"].shape[0], batch_size)]
        finally:
            model.train(was_training)
        return {key: torch.cat([c[key].float().cpu() for c in chunks]) for key in chunks[0]}

    def localize(self, cfg: MethodConfig, out: dict[str, Tensor], mode: str = "paper",
                 size: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """Related / unrelated visual centers' maps under ``mode``: ``paper`` or ``contrast`` (the contrast rule
        compares each sound with the batch's other sounds, so ``out`` must hold several scenes), or ``image``, the
        audio-free baseline: the visual center that covers the fewest pixels is taken for the sound-maker (objects
        are smaller than their background), chosen from the image alone."""
        if mode not in RULES:
            raise ValueError(f"{self.name} localize: mode must be one of {RULES}; got {mode!r}")
        if mode == "image":
            return pick_center_maps(out["visual_map"], -out["visual_map"].flatten(2).sum(-1), size)
        return pick_center_maps(out["visual_map"], self.center_scores(cfg, out, mode), size)

    def evaluate(self, cfg: MethodConfig, model: nn.Module, data: Path | None, seed: int) -> dict[str, Any]:
        inputs = self.held_out(cfg, data, seed)
        report: dict[str, Any] = {"clips": int(inputs["image"].shape[0]),
                                  **held_out_step(model, self.step(cfg), inputs, cfg.batch_size, seed)}
        if "box" not in inputs:
            return {**report, "localization": NO_BOXES}
        out = self.forward(cfg, model, inputs, cfg.batch_size)
        maps = {}
        for rule in RULES if report["clips"] >= 2 else ("paper", "image"):
            loc = self.localize(cfg, out, rule)
            maps[f"related_{rule}"], maps[f"unrelated_{rule}"] = loc["related"], loc["unrelated"]
        return {**report, **localization_report(maps, inputs["box"])}
