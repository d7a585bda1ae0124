"""Sound localization with the clustering nets (DMC, CAVL): their inputs from scenes or clips, and their scores.

Both nets see one image per clip (the middle frame) and the first example of the clip's spectrogram, and localize
with the assignment map of one visual center (``DMCNet.localize`` / ``CAVLNet.localize``). This module builds those
inputs, in one place for chapters 1-2, the method registry (``avlib.methods``) and the ``avlib`` command:

- :func:`scene_tensors` (a SynthOrchestra world, in memory) and :func:`clip_tensors` (a clip directory) give a dict of
  batched tensors with the sounding-object box masks as ground truth where the data has boxes;
- :class:`ClipPairs` reads a clip directory lazily, item by item, for training on data too large for memory;
- :func:`score_maps` scores heatmaps with the consensus-IoU protocol (cIoU@0.5, AUC) beside the centred-box and
  whole-image baselines; :func:`evaluate_localization` runs a trained net over held-out tensors and reports it all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from avlib import metrics
from avlib.audio import make_frontend
from avlib.data import ClipDataset, SynthOrchestra, boxes_to_mask
from avlib.train import StepFn
from avlib.vision import CAVLImageTransform, DMCImageTransform

__all__ = ["ClipPairs", "clip_tensors", "evaluate_localization", "image_transform", "score_maps", "scene_tensors"]

# the papers' image pipelines: DMC scales pixels to [-1, 1], CAVL keeps [0, 1]
_IMAGE_TRANSFORMS: dict[str, type[nn.Module]] = {"dmc": DMCImageTransform, "cavl": CAVLImageTransform}

NO_BOXES = "not scored: localization needs sounding-object boxes ('boxes' and 'sounding' in the clip manifest)"


def contrast_score(agreement: Tensor) -> Tensor:
    """How much more each center agrees with its own sound than with the batch's other sounds.

    Args:
        agreement: ``(B_audio, B_visual, k)`` agreement of every sound's center j with every image's center j
            (a similarity, or minus a distance); the diagonal pairs each image with its own sound.

    Returns:
        ``(B, k)``: ``agreement[b, b, j] - mean_{a != b} agreement[a, b, j]``.
    """
    b = agreement.shape[0]
    if b < 2:
        raise ValueError("contrast_score needs a batch of at least 2 scenes (mode='contrast')")
    own = torch.diagonal(agreement, dim1=0, dim2=1).T  # (B, k)
    return own - (agreement.sum(0) - own) / (b - 1)


def pick_center_maps(maps: Tensor, score: Tensor, size: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """The assignment maps of each item's best- and worst-scoring center.

    Args:
        maps: ``(B, k, h, w)`` soft-assignment maps of the k visual centers.
        score: ``(B, k)`` per-center scores (higher = more related to the sound).
        size: optional ``(H, W)`` to upsample the maps to (bilinear).

    Returns:
        dict with ``related`` and ``unrelated`` maps ``(B, h, w)`` (or ``(B, H, W)``), ``related_index`` ``(B,)``
        and ``score``.
    """
    rel, unrel = score.argmax(dim=1), score.argmin(dim=1)
    if size is not None:
        maps = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)
    idx = torch.arange(maps.shape[0], device=maps.device)
    return {"related": maps[idx, rel], "unrelated": maps[idx, unrel], "related_index": rel, "score": score}


def image_transform(cfg: dict[str, Any]) -> nn.Module:
    """The image transform of the method a config belongs to (``cfg["method"]``: ``dmc`` or ``cavl``)."""
    if cfg["method"] not in _IMAGE_TRANSFORMS:
        raise ValueError(f"image_transform: no localization pipeline for method {cfg['method']!r}; "
                         f"known: {', '.join(sorted(_IMAGE_TRANSFORMS))}")
    return _IMAGE_TRANSFORMS[cfg["method"]](cfg["image_size"])


def _stack(images: Sequence[Tensor], size: int, mode: str) -> Tensor:
    """Stack ``(C, H, W)`` images; if their sizes differ, resize every one to ``size x size`` first."""
    if len({tuple(t.shape) for t in images}) == 1:
        return torch.stack(list(images))
    return torch.cat([F.interpolate(t[None].float(), size=(size, size), mode=mode) for t in images])


def _fit_length(wave: Tensor, n: int) -> Tensor:
    """``(N,)`` -> ``(n,)``: the first ``n`` samples, zero-padded at the end if the clip is shorter."""
    return F.pad(wave[:n], (0, max(n - wave.shape[-1], 0)))


def _clip_samples(cfg: dict[str, Any], sample_rate: int, audio: Sequence[Tensor]) -> int:
    """Samples per clip: the config's ``audio["seconds"]`` where it fixes the input length (CAVL: 10 s), else the
    shortest clip (the VGGish-style frontends cut fixed-size examples, the first of which the nets see)."""
    seconds = cfg["audio"].get("seconds")
    return round(seconds * sample_rate) if seconds is not None else min(a.shape[-1] for a in audio)


def _tensors(cfg: dict[str, Any], frames: Sequence[Tensor], audio: Sequence[Tensor], sample_rate: int,
             boxes: Sequence[Tensor] | None) -> dict[str, Tensor]:
    """Batched net inputs from per-clip middle frames ``(3, H, W)``, waveforms ``(N,)`` and box masks ``(H, W)``."""
    size = int(cfg["image_size"])
    frontend = make_frontend(cfg["audio"], input_sample_rate=sample_rate)
    n = _clip_samples(cfg, sample_rate, audio)
    with torch.no_grad():
        spec = frontend(torch.stack([_fit_length(a, n) for a in audio]))[:, :1]  # (B, 1, T, F) or (B, 1, F, T)
    frames_t = _stack(frames, size, "bilinear")
    out = {"image": image_transform(cfg)(frames_t), "spec": spec, "frames": frames_t}
    if boxes is not None:
        out["box"] = _stack([b[None].float() for b in boxes], size, "nearest")[:, 0] > 0.5
    return out


def scene_tensors(cfg: dict[str, Any], world: SynthOrchestra, n: int | None = None) -> dict[str, Tensor]:
    """Inputs and ground truth for scenes ``0..n-1`` of ``world`` (default: all of them).

    Returns:
        dict with ``image`` ``(n, 3, S, S)`` (the method's transform of the middle frame), ``spec`` (the first
        spectrogram example, ``(n, 1, T, F)`` or ``(n, 1, F, T)``), ``box`` ``(n, H, W)`` bool (the union of the
        sounding objects' boxes in the middle frame) and ``frames`` ``(n, 3, H, W)`` (the middle frames, for display).
    """
    mid = world.num_frames // 2
    scenes = [world.scene(i, frames=[mid]) for i in range(len(world) if n is None else n)]
    return _tensors(cfg, [s.frames[0] for s in scenes], [s.audio for s in scenes], world.sample_rate,
                    [s.sounding_mask(mid) for s in scenes])


def _clip_box(item: dict) -> Tensor | None:
    """``(H, W)`` bool union of the sounding objects' boxes in a clip item's only frame, or None without boxes."""
    if "boxes" not in item or "sounding" not in item or item["boxes"].shape[0] == 0:
        return None
    h, w = item["frames"].shape[-2:]
    return boxes_to_mask(item["boxes"][0][item["sounding"]], h, w).any(0)


def clip_tensors(cfg: dict[str, Any], clips: ClipDataset) -> dict[str, Tensor]:
    """:func:`scene_tensors` for a clip directory read with ``frames="middle"``; ``box`` only if every clip has boxes.

    Frames (and box masks) of different sizes are resized to the config's image size before stacking.
    """
    if clips.frames != "middle":
        raise ValueError(f"clip_tensors: read the clips with frames='middle' (got frames={clips.frames!r})")
    items = [clips[j] for j in range(len(clips))]
    boxes = [_clip_box(item) for item in items]
    return _tensors(cfg, [item["frames"][0] for item in items], [item["audio"] for item in items], clips.sample_rate,
                    None if any(b is None for b in boxes) else boxes)


class ClipPairs(Dataset):
    """Training items ``{"image": (3, S, S), "spec": (1, T, F) or (1, F, T)}`` read lazily from a clip directory.

    Where the config fixes the audio length (``audio["seconds"]``), every clip is cut or zero-padded to it, so that
    clips of different lengths batch together.

    Args:
        cfg: the method's config (image size and audio frontend).
        clips: clips read with ``frames="middle"`` at the config's sample rate.
    """

    def __init__(self, cfg: dict[str, Any], clips: ClipDataset) -> None:
        if clips.frames != "middle":
            raise ValueError(f"ClipPairs: read the clips with frames='middle' (got frames={clips.frames!r})")
        self.clips, self.cfg = clips, cfg
        self.to_image = image_transform(cfg)
        self.frontend = make_frontend(cfg["audio"], input_sample_rate=clips.sample_rate)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = self.clips[i]
        wave = _fit_length(item["audio"], _clip_samples(self.cfg, self.clips.sample_rate, [item["audio"]]))
        with torch.no_grad():
            return {"image": self.to_image(item["frames"][0]), "spec": self.frontend(wave)[0, :1]}


def score_maps(maps: dict[str, Tensor], gt: Tensor, threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """cIoU@0.5, AUC and mean cIoU of each named heatmap batch ``(B, H, W)`` against the box masks ``gt`` ``(B, H, W)``.

    Maps are min-max normalised and binarised at ``threshold`` (:func:`avlib.metrics.localization_scores`). The rows
    ``"centred box (half the image)"`` and ``"whole image"`` (the trivial predictions) follow the named ones.
    """
    gt = gt.float()
    rows = {name: metrics.localization_scores(m.float().cpu(), gt, threshold=threshold) for name, m in maps.items()}
    rows["centred box (half the image)"] = metrics.center_box_baseline(gt)
    rows["whole image"] = metrics.whole_image_baseline(gt)
    return rows


@torch.no_grad()
def _forward(model: nn.Module, data: dict[str, Tensor], batch_size: int) -> dict[str, Tensor]:
    """The net's outputs on ``data`` in chunks of ``batch_size``, concatenated on the CPU (eval mode)."""
    device = next(model.parameters()).device
    chunks = [model(data["image"][i : i + batch_size].to(device), data["spec"][i : i + batch_size].to(device))
              for i in range(0, data["image"].shape[0], batch_size)]
    return {key: torch.cat([c[key].float().cpu() for c in chunks]) for key in chunks[0]}


@torch.no_grad()
def _held_out_step(model: nn.Module, step_fn: StepFn, data: dict[str, Tensor], batch_size: int,
                   seed: int) -> dict[str, float]:
    """The training step's loss and logged similarities on held-out data, averaged over chunks (weighted by size)."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the negatives are drawn there and moved to the device
    n_used, totals = 0, {}
    for i in range(0, data["image"].shape[0], batch_size):
        chunk = {k: data[k][i : i + batch_size].to(device) for k in ("image", "spec")}
        b = chunk["image"].shape[0]
        if b < 2:  # a negative needs another item of the chunk
            continue
        n_used += b
        for key, value in step_fn(model, chunk, generator=gen).items():
            totals[key] = totals.get(key, 0.0) + float(value) * b
    return {f"held_out_{k}": v / n_used for k, v in totals.items()}


def evaluate_localization(model: nn.Module, localize: Callable[..., dict[str, Tensor]], step_fn: StepFn,
                          data: dict[str, Tensor], batch_size: int = 64, seed: int = 0) -> dict[str, Any]:
    """Score a trained DMC / CAVL net on held-out inputs (from :func:`scene_tensors` or :func:`clip_tensors`).

    Reports the number of clips, the training loss and similarities on the held-out pairs (negatives drawn with
    ``seed``) and, where ``data`` has ``box`` masks, cIoU@0.5 / AUC / mean cIoU of the related and unrelated centers'
    maps under the paper's rule and the contrast rule (``localize(out, size=..., mode=...)``), and of the two trivial
    baselines, as flat ``"<row>_<score>"`` keys; without boxes, ``"localization"`` says why nothing was scored.
    """
    was_training = model.training
    model.eval()
    try:
        report: dict[str, Any] = {"clips": int(data["image"].shape[0]),
                                  **_held_out_step(model, step_fn, data, batch_size, seed)}
        if "box" not in data:
            return {**report, "localization": NO_BOXES}
        out = _forward(model, data, batch_size)
        size = tuple(data["box"].shape[-2:])
        maps = {}
        for rule in ("paper", "contrast") if report["clips"] >= 2 else ("paper",):
            loc = localize(out, size=size, mode=rule)
            maps[f"related_{rule}"], maps[f"unrelated_{rule}"] = loc["related"], loc["unrelated"]
        rows = score_maps(maps, data["box"])
        names = {"centred box (half the image)": "center_box", "whole image": "whole_image"}
        return {**report, **{f"{names.get(row, row)}_{k}": v for row, r in rows.items() for k, v in r.items()}}
    finally:
        model.train(was_training)
