"""The frame-alignment shortcut of Objects that Sound (Sec. 3.3), measured on a trained AVC model.

:func:`grid_offset_test` scores the same pairs with the audio window on the frame grid and moved off it by a fraction of
a frame; :func:`grid_phase_probe` asks whether a linear classifier reads "on the grid or not" from the audio embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from avlib.audio import first_example
from avlib.eval.avc import clip_inputs, correspondence_logits, model_device
from avlib.eval.representation import linear_probe

__all__ = ["grid_offset_test", "grid_phase_probe"]


@torch.no_grad()
def grid_offset_test(
    model: nn.Module,
    frontend: nn.Module,
    source: Any,
    clips: Sequence[int],
    shift_frames: float = 0.5,
    window_seconds: float = 1.0,
    image_transform: Any = None,
) -> dict[str, float]:
    """Score the same pairs with the audio window on the frame grid and moved ``shift_frames`` of a frame off it
    (frames through ``image_transform`` where given).

    Positives pair each clip's middle frame with its own audio; negatives pair it with the audio of the previous clip
    in ``clips`` (the audio batch rolled by one). Half a frame (20 ms at 25 fps) changes nothing a listener could
    hear, but a model that learnt "audio centred on a frame time = positive" (the shortcut of Objects that Sound
    Sec. 3.3) calls on-grid negatives positives. Returns the mean probability of "corresponds" for ``pos_on``,
    ``pos_off``, ``neg_on``, ``neg_off`` and the AVC accuracy of the on-grid and off-grid halves (``acc_on``,
    ``acc_off``).
    """
    was_training = model.training
    model.eval()
    shift = int(round(shift_frames * source.sample_rate / float(source.clip_fps(clips[0]))))
    image, on, _ = clip_inputs(source, clips, window_seconds, image_transform=image_transform)
    _, off, _ = clip_inputs(source, clips, window_seconds, shift=shift)
    out: dict[str, float] = {}
    correct = {"on": [], "off": []}
    for grid, audio in (("on", on), ("off", off)):
        for kind, aud in (("pos", audio), ("neg", audio.roll(1, dims=0))):
            p = torch.sigmoid(correspondence_logits(model, frontend, image, aud))
            out[f"{kind}_{grid}"] = float(p.mean())
            correct[grid].append((p > 0.5) if kind == "pos" else (p <= 0.5))
    model.train(was_training)
    for grid in ("on", "off"):
        out[f"acc_{grid}"] = float(torch.cat(correct[grid]).double().mean())
    return out


@torch.no_grad()
def grid_phase_probe(
    model: nn.Module,
    frontend: nn.Module,
    source: Any,
    train_clips: Sequence[int],
    test_clips: Sequence[int],
    shift_frames: float = 0.5,
    window_seconds: float = 1.0,
) -> float:
    """Accuracy of a linear probe that tells on-grid from off-grid audio windows using only the audio embedding.

    Each clip gives two windows of almost the same sound (centred on the middle frame, and ``shift_frames`` of a frame
    later); chance is 0.5. A high accuracy means the embedding carries the frame phase: the shortcut, learnt.
    """
    was_training = model.training
    model.eval()
    dev = model_device(model)
    shift = int(round(shift_frames * source.sample_rate / float(source.clip_fps(train_clips[0]))))

    def embed(clips: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        _, on, _ = clip_inputs(source, clips, window_seconds)
        _, off, _ = clip_inputs(source, clips, window_seconds, shift=shift)
        x = model.embed_audio(first_example(frontend, torch.cat([on, off]).to(dev))).float().cpu()
        return x, torch.cat([torch.ones(len(clips)), torch.zeros(len(clips))]).long()

    xtr, ytr = embed(train_clips)
    xte, yte = embed(test_clips)
    model.train(was_training)
    return linear_probe(xtr, ytr, xte, yte)
