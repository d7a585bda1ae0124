"""The audio-visual correspondence (AVC) task shared by L3-Net, AVE-Net and AVOL-Net (Arandjelović & Zisserman 2017,
2018): its config, its pairs, its step and its evaluation. :mod:`~avlib.methods.l3`, :mod:`~avlib.methods.ave` and
:mod:`~avlib.methods.avol` add each network and its presets.

Full scale (both papers): 224x224 frames (short side 256, random crop, flip, brightness / saturation jitter) and 1 s of
48 kHz audio as a 257x199 log-spectrogram (10 ms windows, half overlap, FFT 512) with ±10 % volume jitter; VGG trunks
of widths 64/128/256/512 with batch norm and a stride-2 first convolution; Adam with weight decay 1e-5.
Quick scale: the same classes with widths 8/16/32/64, 64x64 frames and 1 s of 16 kHz audio (10 ms windows, half
overlap, FFT 160: 81x199), on SynthOrchestra solo scenes of 1.2 s (five frame-centred 1 s windows each) carrying a
frame-boundary click of amplitude 0.02 (about 40 dB below the music), so that the shortcut of Objects that Sound
Sec. 3.3 exists to be found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avlib.audio import first_example, make_frontend
from avlib.data import AVCPairs, ClipDataset
from avlib.data.views import cached_world
from avlib.eval.avc import avc_accuracy_on
from avlib.methods.base import Method, MethodConfig
from avlib.vision import L3ImageTransform

__all__ = ["AVCConfig", "AVCMethod", "PairsConfig", "avc_step"]

FULL_AUDIO = {"frontend": "l3_logspec", "sample_rate": 48000, "seconds": 1.0, "n_fft": 512, "win_length": 480,
              "hop_length": 240}
QUICK_AUDIO = {"frontend": "l3_logspec", "sample_rate": 16000, "seconds": 1.0, "n_fft": 160, "win_length": 160,
               "hop_length": 80}
COLAB_DATA = {"family": "solo", "n_categories": 12, "size": 6000, "image_size": 128, "sample_rate": 48000,
              "duration": 2.0, "frame_artifact": 0.02}
QUICK_DATA = {"family": "solo", "n_categories": 8, "size": 768, "image_size": 64, "sample_rate": 16000,
              "duration": 1.2, "frame_artifact": 0.02}
WIDTHS = {"full": (64, 128, 256, 512), "colab": (32, 64, 128, 256), "quick": (8, 16, 32, 64)}


@dataclass(frozen=True)
class PairsConfig:
    """How AVC pairs are drawn (:class:`avlib.data.AVCPairs`): the audio window, where negatives' audio may be
    centred (``naive``: any sample; ``frame_aligned``: frame times only) and L3's misalignment of positives."""

    window_seconds: float = 1.0
    negative_mode: str = "frame_aligned"
    misalign: bool = True


@dataclass(frozen=True)
class AVCConfig(MethodConfig):
    """The AVC methods' common config: trunk widths, pair sampling, augmentation, train / held-out clip counts."""

    widths: tuple[int, ...] = WIDTHS["full"]
    first_stride: int = 2
    pairs: PairsConfig = field(default_factory=PairsConfig)
    volume_jitter: float = 0.1
    augment: bool = True
    train_clips: int | None = None
    image_size: int = 224
    audio: dict[str, Any] = field(default_factory=lambda: dict(FULL_AUDIO))
    weight_decay: float = 1e-5
    channels_last: bool = True  # about 1.5x faster for these nets on a CPU with bf16, and the usual choice on GPUs


def avc_step(frontend: nn.Module) -> Any:
    """The engine's ``step_fn(model, batch)`` for the AVC task: ``batch`` holds ``image (B, 3, H, W)``, waveforms
    ``audio (B, N)`` and ``label (B,)`` (1 = corresponds); the loss is binary cross-entropy on
    ``model.correspondence_logit`` (for L3 / AVE-Net the two-way softmax cross-entropy of the papers, for AVOL-Net the
    logistic loss of its max-pooled score). Returns ``{"loss", "acc"}``."""

    def step(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logit = model.correspondence_logit(batch["image"], first_example(frontend, batch["audio"])).float()
        target = batch["label"].to(logit.device).float()
        loss = F.binary_cross_entropy_with_logits(logit, target)
        return {"loss": loss, "acc": ((logit > 0).float() == target).float().mean().detach()}

    return step


class AVCMethod(Method):
    """What L3-Net, AVE-Net and AVOL-Net share: data, step, evaluation (their networks differ)."""

    def step(self, cfg: AVCConfig) -> Any:
        return avc_step(make_frontend(cfg.audio))

    def example_batch(self, cfg: AVCConfig, n: int) -> dict[str, Tensor]:
        samples = round(cfg.pairs.window_seconds * cfg.audio["sample_rate"])
        return {"image": torch.rand(n, 3, cfg.image_size, cfg.image_size), "audio": 0.1 * torch.randn(n, samples),
                "label": torch.arange(n) % 2}

    def image_transform(self, cfg: AVCConfig, train: bool) -> nn.Module:
        """L3's image pipeline at the config's size (short side ``size * 256 / 224``, then the crop)."""
        return L3ImageTransform(train=train and cfg.augment, size=cfg.image_size,
                                resize=round(cfg.image_size * 256 / 224))

    def _sources(self, cfg: AVCConfig, data: Path | None, seed: int) -> tuple[Any, list[int], Any, list[int]]:
        """``(train source, train clips, held-out source, held-out clips)``."""
        if data is None:
            world = cached_world(cfg.data, seed)
            n_train = int(cfg.train_clips or len(world) * 2 // 3)
            return world, list(range(n_train)), world, list(range(n_train, len(world)))
        rate = int(cfg.audio["sample_rate"])
        train, test = ClipDataset(data, "train", sample_rate=rate), ClipDataset(data, "test", sample_rate=rate)
        return train, list(range(len(train))), test, list(range(len(test)))

    def train_data(self, cfg: AVCConfig, data: Path | None, seed: int) -> AVCPairs:
        """Balanced pairs of the training clips with the config's sampling, L3's volume jitter and image
        augmentation."""
        source, clips, _, _ = self._sources(cfg, data, seed)
        return AVCPairs(source, window_seconds=cfg.pairs.window_seconds, negative_mode=cfg.pairs.negative_mode,
                        misalign=cfg.pairs.misalign, clips=clips, seed=seed, volume_jitter=cfg.volume_jitter,
                        image_transform=self.image_transform(cfg, train=True), cache_audio=True)

    def held_out_pairs(self, cfg: AVCConfig, data: Path | None, seed: int) -> AVCPairs:
        """``eval_size`` pairs of the held-out clips, with the config's negative mode, no misalignment and no
        augmentation (seed ``seed + 1``)."""
        _, _, source, clips = self._sources(cfg, data, seed)
        return AVCPairs(source, window_seconds=cfg.pairs.window_seconds, negative_mode=cfg.pairs.negative_mode,
                        clips=clips, seed=seed + 1, length=int(cfg.eval_size),
                        image_transform=self.image_transform(cfg, train=False), cache_audio=True)

    def evaluate(self, cfg: AVCConfig, model: nn.Module, data: Path | None, seed: int) -> dict[str, Any]:
        """AVC accuracy on held-out pairs (chance 0.5)."""
        pairs = self.held_out_pairs(cfg, data, seed)
        return {"avc_accuracy": avc_accuracy_on(model, make_frontend(cfg.audio), pairs), "chance": 0.5,
                "pairs": len(pairs)}
