"""Evaluation of audio-visual correspondence models (L3-Net, AVE-Net, AVOL-Net; Arandjelović & Zisserman 2017, 2018).

Any model with ``correspondence_logit(image, spec)`` is scored by :func:`avc_accuracy_on`; the per-clip inputs that the
retrieval, probe and shortcut protocols share (one middle frame and the audio window centred on it) come from
:func:`clip_inputs`. Waveforms become spectrograms on the model's device, in batches
(:func:`avlib.audio.first_example`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from avlib.audio import first_example
from avlib.data.pairs import AVCPairs
from avlib.metrics import avc_accuracy

__all__ = ["avc_accuracy_on", "clip_features", "clip_inputs", "audio_window", "middle_frame", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters."""
    return next(model.parameters()).device


@torch.no_grad()
def correspondence_logits(model: nn.Module, frontend: nn.Module, image: torch.Tensor, audio: torch.Tensor
                          ) -> torch.Tensor:
    """``model.correspondence_logit`` of ``image (B, 3, H, W)`` and waveforms ``audio (B, N)`` → ``(B,)`` on the CPU."""
    dev = model_device(model)
    return model.correspondence_logit(image.to(dev), first_example(frontend, audio.to(dev))).float().cpu()


@torch.no_grad()
def avc_accuracy_on(model: nn.Module, frontend: nn.Module, pairs: AVCPairs, batch_size: int = 128) -> float:
    """AVC accuracy of ``model`` (in eval mode) over every item of ``pairs`` (half positives, half negatives)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for start in range(0, len(pairs), batch_size):
        batch = pairs.batch(range(start, min(start + batch_size, len(pairs))))
        logits.append(correspondence_logits(model, frontend, batch["image"], batch["audio"]))
        labels.append(batch["label"])
    model.train(was_training)
    return avc_accuracy(torch.cat(logits), torch.cat(labels))


def audio_window(source: Any, clip: int, center: int, window: int) -> torch.Tensor:
    start = int(center) - window // 2
    audio = source.get_audio(clip)
    if start < 0 or start + window > audio.shape[-1]:
        raise ValueError(f"clip {clip}: a {window}-sample window centred at sample {center} leaves the clip")
    return audio[start : start + window]


def middle_frame(source: Any, clip: int, window_seconds: float = 1.0) -> tuple[int, int]:
    """``(frame number, centre sample)`` of the middle one among the frames of ``clip`` whose centred
    ``window_seconds`` audio window fits in the clip."""
    sr = source.sample_rate
    window = int(round(window_seconds * sr))
    frames = np.asarray(source.clip_frame_indices(clip), dtype=np.int64)
    centers = np.round(frames * sr / float(source.clip_fps(clip))).astype(np.int64)
    ok = np.flatnonzero((centers - window // 2 >= 0) & (centers - window // 2 + window <= source.clip_samples(clip)))
    if ok.size == 0:
        raise ValueError(f"clip {clip} is too short for a {window_seconds} s window centred on a frame")
    mid = ok[ok.size // 2]
    return int(frames[mid]), int(centers[mid])


def clip_inputs(
    source: Any, clips: Sequence[int], window_seconds: float, shift: int = 0, image_transform: Any = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Middle frame ``(N,3,H,W)`` (through ``image_transform``, e.g. the method's evaluation transform, where given),
    the audio window centred on it plus ``shift`` samples ``(N,n)``, labels ``(N,)``."""
    window = int(round(window_seconds * source.sample_rate))
    frames, audio, labels = [], [], []
    for c in clips:
        k, center = middle_frame(source, int(c), window_seconds)
        frames.append(source.get_frame(int(c), k))
        audio.append(audio_window(source, int(c), center + shift, window))
        labels.append(source.clip_label(int(c)))
    image = torch.stack(frames)
    return (image if image_transform is None else image_transform(image)), torch.stack(audio), torch.tensor(
        labels, dtype=torch.int64)


@torch.no_grad()
def clip_features(
    model: nn.Module,
    frontend: nn.Module,
    source: Any,
    clips: Sequence[int],
    window_seconds: float = 1.0,
    batch_size: int = 128,
    image_transform: Any = None,
) -> dict[str, torch.Tensor]:
    """Embed one frame (through ``image_transform`` where given) and the audio window centred on it per clip (Objects
    that Sound Sec. 3.1's database).

    Uses ``model.embed_image`` / ``model.embed_audio`` (L3-Net: pool4 features; AVE-Net: unit-norm embeddings).
    Returns ``{"image": (N, D), "audio": (N, D), "labels": (N,)}`` on the CPU.
    """
    was_training = model.training
    model.eval()
    dev = model_device(model)
    image, audio, labels = clip_inputs(source, clips, window_seconds, image_transform=image_transform)
    v, a = [], []
    for s in range(0, len(clips), batch_size):
        v.append(model.embed_image(image[s : s + batch_size].to(dev)).float().cpu())
        a.append(model.embed_audio(first_example(frontend, audio[s : s + batch_size].to(dev))).float().cpu())
    model.train(was_training)
    return {"image": torch.cat(v), "audio": torch.cat(a), "labels": labels}
