"""Sound localization, scored the same way for every method's heatmaps (DMC, CAVL, AVOL-Net; later DSOL).

A method turns a batch into named heatmaps ``(B, h, w)`` (its ``localization_maps``); :func:`localization_report`
runs it over held-out inputs in chunks, upsamples every map with :func:`upsample_maps` to the ground truth's size and
scores it with :func:`score_maps` (consensus IoU: cIoU@0.5, AUC, mean cIoU; :mod:`avlib.metrics`) beside the trivial
baselines. Pointing (is the map's mode inside the box? Objects that Sound Sec. 4.1), box mass and the clustering
nets' center choice (:func:`pick_center_maps`, :func:`contrast_score`) are here too. One box rasteriser serves the
whole library: :func:`avlib.metrics.boxes_to_masks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avlib import metrics
from avlib.eval.avc import audio_window, middle_frame, model_device

__all__ = ["NO_BOXES", "PROTOCOLS", "box_mass", "center_hits", "contrast_score", "localization_report",
           "localization_set", "negative_audio", "off_screen_index", "pick_center_maps", "pointing_hits", "score_maps",
           "sounding_vs_silent", "upsample_maps"]

NO_BOXES = "not scored: localization needs sounding-object boxes ('boxes' and 'sounding' in the clip manifest)"
MapsFn = Callable[[nn.Module, dict[str, Tensor]], dict[str, Tensor]]


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
        maps = upsample_maps(maps.float(), size)
    idx = torch.arange(maps.shape[0], device=maps.device)
    return {"related": maps[idx, rel], "unrelated": maps[idx, unrel], "related_index": rel, "score": score}


def score_maps(maps: dict[str, Tensor], gt: Tensor, threshold: float | None = 0.5) -> dict[str, dict[str, float]]:
    """cIoU@0.5, AUC and mean cIoU of each named heatmap batch ``(B, H, W)`` against the box masks ``gt`` ``(B, H, W)``.

    Maps are min-max normalised and binarised (:func:`avlib.metrics.localization_scores`): at ``threshold`` (DMC's
    and Senocak et al.'s fixed cut, 0.5), or with ``threshold=None`` at each map's median (the public evaluators'
    rule: the top half of the pixels; :data:`PROTOCOLS` names both). The trivial predictions follow the named rows:
    ``"random map"`` (:func:`avlib.metrics.random_map`, binarised the same way), ``"centred box (half the image)"``
    and ``"whole image"``.
    """
    gt = gt.float()
    rows = {name: metrics.localization_scores(m.float().cpu(), gt, threshold=threshold) for name, m in maps.items()}
    rows["random map"] = metrics.random_map_baseline(gt, threshold=threshold)
    rows["centred box (half the image)"] = metrics.center_box_baseline(gt)
    rows["whole image"] = metrics.whole_image_baseline(gt)
    return rows


PROTOCOLS: dict[str, float | None] = {"fixed cut 0.5": 0.5, "median cut": None}
"""The book's two binarisations of a min-max normalised map, by name: the fixed cut at 0.5 (DMC, Senocak et al.)
and the public evaluators' median cut (REFERENCE.md §3), the ``threshold`` of :func:`score_maps`."""


def sounding_vs_silent(maps: Tensor, sounding: Tensor, silent: Tensor) -> dict[str, float]:
    """Does a map prefer the object that sounds to a visible one that does not?

    Args:
        maps: ``(B, H, W)`` heatmaps at the masks' size.
        sounding: ``(B, H, W)`` bool, the sounding object's box.
        silent: ``(B, H, W)`` bool, the silent object's box (items where either is empty are skipped).

    Returns:
        ``{"prefers_sounding": fraction of items whose mean map value is higher on the sounding box than on the
        silent one, "mass_sounding": mean share of the two boxes' map mass on the sounding box, "items": n}`` —
        0.5 for a map that cannot tell the objects apart.
    """
    snd, sil = sounding.float(), silent.float()
    keep = (snd.sum((1, 2)) > 0) & (sil.sum((1, 2)) > 0)
    if not bool(keep.any()):
        raise ValueError("sounding_vs_silent: no item has both a sounding and a silent box")
    m, snd, sil = maps.float()[keep], snd[keep], sil[keep]
    m = m - m.amin((1, 2), keepdim=True)  # mass relative to the map's own floor
    on_snd = (m * snd).sum((1, 2)) / snd.sum((1, 2))
    on_sil = (m * sil).sum((1, 2)) / sil.sum((1, 2))
    share = on_snd / (on_snd + on_sil).clamp_min(1e-12)
    return {"prefers_sounding": float((on_snd > on_sil).double().mean()), "mass_sounding": float(share.mean()),
            "items": int(keep.sum())}


def negative_audio(audio: Tensor, kind: str, seed: int = 0) -> Tensor:
    """Audio in which no visible object sounds, ``(B, N)`` like ``audio``.

    ``kind``: ``"silence"`` (zeros) or ``"noise"`` (white noise at each clip's own RMS level). For an off-screen
    sound, pass ``audio[off_screen_index(label)]`` instead.
    """
    if kind == "silence":
        return torch.zeros_like(audio)
    if kind == "noise":
        rms = audio.float().pow(2).mean(-1, keepdim=True).sqrt()
        noise = torch.randn(audio.shape, generator=torch.Generator().manual_seed(seed))
        return (noise * rms).to(audio.dtype)
    raise ValueError(f"negative_audio: kind must be 'silence' or 'noise'; got {kind!r}")


def off_screen_index(label: Tensor) -> Tensor:
    """For each scene, the next scene (cyclically) whose sounding category differs from its own, ``(B,)``.

    ``label``: ``(B,)`` category of each scene's sounding object; at least two categories must be present. The audio of
    scene ``off_screen_index(label)[i]`` is an *off-screen* sound for scene ``i``: its instrument is not in the picture.
    """
    n = label.shape[0]
    if n == 0 or bool((label == label[0]).all()):
        raise ValueError("off_screen_index: every scene has the same category; no sound is off-screen")
    later = (torch.arange(n)[:, None] + torch.arange(1, n)[None]) % n  # (B, B - 1): the other scenes, in turn
    return later[torch.arange(n), (label[later] != label[:, None]).float().argmax(1)]


def localization_set(source: Any, clips: Sequence[int], window_seconds: float = 1.0) -> dict[str, torch.Tensor]:
    """Test items for "where is the sound?" and "what would make this sound?" from scenes with one sounding and one
    silent instrument (``SynthOrchestra(..., n_silent=1)``).

    For each clip (those with exactly one sounding and one silent visible object): the middle frame ``image``, its own
    audio window ``audio``, the boxes ``sounding_box`` / ``silent_box`` (xyxy pixels) and the pixel mask
    ``sounding_mask``; and ``swap_audio``, the audio window of another clip in ``clips`` whose category is the silent
    object's (``swap_ok`` is False where no such clip exists). Returns a dict of stacked tensors plus ``clips``.
    """
    window = int(round(window_seconds * source.sample_rate))
    rows: dict[str, list] = {k: [] for k in ("clips", "image", "audio", "sounding_box", "silent_box", "sounding_mask",
                                             "silent_category")}
    for c in clips:
        k, center = middle_frame(source, int(c), window_seconds)
        scene = source.scene(int(c), frames=[k])
        if scene.categories.numel() != 2 or int(scene.sounding.sum()) != 1:
            continue
        snd = int(scene.sounding.long().argmax())
        rows["clips"].append(int(c))
        rows["image"].append(scene.frames[0])
        rows["audio"].append(audio_window(source, int(c), center, window))
        rows["sounding_box"].append(scene.boxes[0, snd])
        rows["silent_box"].append(scene.boxes[0, 1 - snd])
        rows["sounding_mask"].append(scene.sounding_mask(k))
        rows["silent_category"].append(int(scene.categories[1 - snd]))
    if not rows["clips"]:
        raise ValueError("localization_set: no clip has one sounding and one silent object (use n_silent=1 scenes)")
    out = {k: torch.stack(v) if torch.is_tensor(v[0]) else torch.tensor(v) for k, v in rows.items()}
    labels = torch.tensor([source.clip_label(int(c)) for c in clips])
    donors = labels[None, :] == out["silent_category"][:, None]  # (N, len(clips)): clips that sound like the silent one
    out["swap_ok"] = donors.any(1)
    pick = donors.float().argmax(1)
    out["swap_audio"] = torch.stack([
        audio_window(source, int(clips[j]), middle_frame(source, int(clips[j]), window_seconds)[1], window)
        for j in pick.tolist()
    ])
    return out


def _inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``points (B, 2)`` xy pixels inside xyxy ``boxes (B, 4)`` → ``(B,)`` bool."""
    x, y = points[:, 0], points[:, 1]
    return (x >= boxes[:, 0]) & (x < boxes[:, 2]) & (y >= boxes[:, 1]) & (y < boxes[:, 3])


def pointing_hits(maps: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Whether the mode of each map falls inside its box (Objects that Sound Sec. 4.1's localization measure).

    ``maps (B, h, w)`` on a grid covering the image of ``image_size = (H, W)`` pixels; the mode is the centre of the
    highest cell, in pixels. ``boxes (B, 4)`` xyxy pixels. Returns ``(B,)`` bool.
    """
    if maps.dim() != 3 or boxes.shape != (maps.shape[0], 4):
        raise ValueError(f"pointing_hits: maps must be (B, h, w) and boxes (B, 4); got {tuple(maps.shape)}, "
                         f"{tuple(boxes.shape)}")
    b, h, w = maps.shape
    flat = maps.reshape(b, -1).argmax(1)
    rows, cols = flat // w, flat % w
    pts = torch.stack([(cols + 0.5) * image_size[1] / w, (rows + 0.5) * image_size[0] / h], 1)
    return _inside(pts, boxes.float())


def center_hits(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The centred baseline of Objects that Sound Sec. 4.1: is the image centre inside each box? ``(B,)`` bool."""
    centre = torch.tensor([[image_size[1] / 2, image_size[0] / 2]]).expand(boxes.shape[0], 2)
    return _inside(centre, boxes.float())


def box_mass(maps: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Mean of each map inside its box, after bilinear upsampling to the image: ``maps (B, h, w)``, ``boxes (B, 4)``
    xyxy pixels → ``(B,)``. Comparing two boxes of the same image says which object the map prefers."""
    up = upsample_maps(maps, image_size)
    inside = metrics.boxes_to_masks(boxes, *image_size)  # (B, H, W)
    return (up * inside).sum((1, 2)) / inside.sum((1, 2)).clamp_min(1.0)


def upsample_maps(maps: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of ``(B, h, w)`` or ``(B, k, h, w)`` maps to ``(B, [k,] H, W)`` for display or cIoU."""
    squeeze = maps.dim() == 3
    up = F.interpolate(maps[:, None] if squeeze else maps, size=tuple(image_size), mode="bilinear",
                       align_corners=False)
    return up[:, 0] if squeeze else up


@torch.no_grad()
def compute_maps(model: nn.Module, maps_fn: MapsFn, inputs: dict[str, Tensor], batch_size: int = 64
                 ) -> dict[str, Tensor]:
    """``maps_fn(model, chunk)`` over ``inputs`` (a dict of batched tensors, e.g. ``image`` and ``audio``) in chunks
    of ``batch_size`` on the model's device (eval mode), concatenated on the CPU: ``{name: (B, h, w)}``."""
    was_training = model.training
    model.eval()
    dev = model_device(model)
    n = next(iter(inputs.values())).shape[0]
    try:
        chunks = [maps_fn(model, {k: v[i : i + batch_size].to(dev) for k, v in inputs.items()})
                  for i in range(0, n, batch_size)]
    finally:
        model.train(was_training)
    return {key: torch.cat([c[key].float().cpu() for c in chunks]) for key in chunks[0]}


def localization_report(maps: dict[str, Tensor], gt: Tensor) -> dict[str, float]:
    """Named heatmaps ``{name: (B, h, w)}`` (upsampled to the ground truth's size) scored against the box masks
    ``gt (B, H, W)`` beside the centred-box and whole-image baselines, as flat ``"<row>_<score>"`` keys
    (``related_paper_ciou@0.5``, ``center_box_auc``, ...)."""
    size = tuple(gt.shape[-2:])
    rows = score_maps({name: upsample_maps(m.float(), size) for name, m in maps.items()}, gt)
    names = {"centred box (half the image)": "center_box", "whole image": "whole_image", "random map": "random_map"}
    return {f"{names.get(row, row)}_{k}": v for row, r in rows.items() for k, v in r.items()}
