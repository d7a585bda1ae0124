"""Views of clip sources shaped for training and evaluation.

- :class:`InMemoryClips`: a caching view of a world (waveforms, rendered frames, labels), so that the many AVC pairs
  of a run cost array slicing instead of re-synthesis; :func:`cached_world` shares one view per world and seed within
  a process.
- :func:`scene_tensors` / :func:`clip_tensors`: one middle frame and the matching audio per clip, batched, with the
  sounding-object box masks as ground truth (the inputs of the clustering nets DMC and CAVL, and of localization).
- :class:`ClipPairs`: the same items read lazily from a clip directory, for data larger than memory.

Audio leaves these views as **waveforms** cut to what the network input needs; spectrograms are computed in batches
on the training device by the method's step (:func:`avlib.audio.first_example`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from avlib.data.clips import ClipDataset
from avlib.data.synthetic import SynthOrchestra, boxes_to_mask

__all__ = ["ClipPairs", "InMemoryClips", "cached_world", "clip_tensors", "fit_length", "scene_tensors"]


class InMemoryClips:
    """A caching view of a clip source (e.g. ``SynthOrchestra``) with the interface :class:`AVCPairs` needs.

    Waveforms and labels of ``preload`` clips are computed up front; frames are rendered on first request and then
    kept. Everything else (``clip_frame_indices``, ``clip_fps``, ``clip_samples``, ``ontology``, ``scene``, ...) is
    read from ``world``.
    """

    def __init__(self, world: Any, preload: Sequence[int] = ()) -> None:
        self.world = world
        self.sample_rate = int(world.sample_rate)
        self._audio: dict[int, Tensor] = {}
        self._frames: dict[tuple[int, int], Tensor] = {}
        self._labels: dict[int, int] = {}
        for i in preload:
            self.get_audio(int(i))
            self.clip_label(int(i))

    def __len__(self) -> int:
        return len(self.world)

    def __getattr__(self, name: str) -> Any:  # everything not cached is the world's own
        if name == "world":
            raise AttributeError(name)
        return getattr(self.world, name)

    def clip_label(self, index: int) -> int:
        """The clip's category (cached)."""
        index = int(index)
        if index not in self._labels:
            self._labels[index] = int(self.world.clip_label(index))
        return self._labels[index]

    def get_audio(self, index: int) -> Tensor:
        """``(N,)`` waveform of clip ``index`` (cached)."""
        index = int(index)
        if index not in self._audio:
            self._audio[index] = self.world.get_audio(index)
        return self._audio[index]

    def get_frame(self, index: int, frame: int) -> Tensor:
        """``(3, H, W)`` frame ``frame`` of clip ``index`` (cached)."""
        key = (int(index), int(frame))
        if key not in self._frames:
            self._frames[key] = self.world.get_frame(*key)
        return self._frames[key]


@functools.lru_cache(maxsize=8)
def _cached_world(spec: str, seed: int) -> InMemoryClips:
    return InMemoryClips(SynthOrchestra(**json.loads(spec), seed=seed))


def cached_world(world_kwargs: dict[str, Any], seed: int) -> InMemoryClips:
    """One :class:`InMemoryClips` over ``SynthOrchestra(**world_kwargs, seed=seed)`` per process and arguments."""
    return _cached_world(json.dumps(world_kwargs, sort_keys=True), int(seed))


def fit_length(wave: Tensor, n: int) -> Tensor:
    """``(..., N)`` → ``(..., n)``: the first ``n`` samples, zero-padded at the end where the clip is shorter."""
    return F.pad(wave[..., :n], (0, max(n - wave.shape[-1], 0)))


def _stack(images: Sequence[Tensor], size: int, mode: str) -> Tensor:
    """Stack ``(C, H, W)`` images; if their sizes differ, resize every one to ``size x size`` first."""
    if len({tuple(t.shape) for t in images}) == 1:
        return torch.stack(list(images))
    return torch.cat([F.interpolate(t[None].float(), size=(size, size), mode=mode) for t in images])


def _tensors(frames: Sequence[Tensor], audio: Sequence[Tensor], samples: int, size: int,
             transform: Callable[[Tensor], Tensor], boxes: Sequence[Tensor] | None,
             silent: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
    frames_t = _stack(frames, size, "bilinear")
    out = {"image": transform(frames_t), "audio": torch.stack([fit_length(a, samples) for a in audio]),
           "frames": frames_t}
    for key, masks in (("box", boxes), ("silent", silent)):
        if masks is not None:
            out[key] = _stack([b[None].float() for b in masks], size, "nearest")[:, 0] > 0.5
    return out


def scene_tensors(world: SynthOrchestra, samples: int, size: int, transform: Callable[[Tensor], Tensor],
                  n: int | None = None) -> dict[str, Tensor]:
    """Network inputs and ground truth for scenes ``0..n-1`` of ``world`` (default: all), at the middle frame.

    Args:
        world: the scenes.
        samples: audio samples per clip (cut or zero-padded), e.g. :func:`avlib.audio.example_samples`.
        size: image size the frames are resized to where they differ.
        transform: the method's image transform, ``(B, 3, H, W)`` → ``(B, 3, S, S)``.

    Returns:
        dict with ``image`` ``(n, 3, S, S)``, ``audio`` ``(n, samples)``, ``box`` ``(n, H, W)`` bool (the union of the
        sounding objects' boxes), ``label`` ``(n,)`` (the first sounding object's category, -1 if none),
        ``frames`` ``(n, 3, H, W)`` (the middle frames, for display) and, where some scene shows a silent object,
        ``silent`` ``(n, H, W)`` bool (the union of the visible silent objects' boxes).
    """
    mid = world.num_frames // 2
    scenes = [world.scene(i, frames=[mid]) for i in range(len(world) if n is None else n)]
    silent = [s.object_masks(mid)[~s.sounding].any(0) for s in scenes]
    out = _tensors([s.frames[0] for s in scenes], [s.audio for s in scenes], samples, size, transform,
                   [s.sounding_mask(mid) for s in scenes], silent if any(m.any() for m in silent) else None)
    out["label"] = torch.tensor([int(s.categories[s.sounding][0]) if s.sounding.any() else -1 for s in scenes])
    return out


def _clip_box(item: dict) -> Tensor | None:
    """``(H, W)`` bool union of the sounding objects' boxes in a clip item's only frame, or None without boxes."""
    if "boxes" not in item or "sounding" not in item or item["boxes"].shape[0] == 0:
        return None
    h, w = item["frames"].shape[-2:]
    return boxes_to_mask(item["boxes"][0][item["sounding"]], h, w).any(0)


def clip_tensors(clips: ClipDataset, samples: int, size: int, transform: Callable[[Tensor], Tensor]
                 ) -> dict[str, Tensor]:
    """:func:`scene_tensors` for a clip directory read with ``frames="middle"``; ``box`` only if every clip has
    boxes."""
    if clips.frames != "middle":
        raise ValueError(f"clip_tensors: read the clips with frames='middle' (got frames={clips.frames!r})")
    items = [clips[j] for j in range(len(clips))]
    boxes = [_clip_box(item) for item in items]
    return _tensors([item["frames"][0] for item in items], [item["audio"] for item in items], samples, size,
                    transform, None if any(b is None for b in boxes) else boxes)


class ClipPairs(Dataset):
    """Training items ``{"image": (3, S, S), "audio": (samples,)}`` read lazily from a clip directory.

    Args:
        clips: clips read with ``frames="middle"`` at the method's sample rate.
        samples: audio samples per item (cut or zero-padded), so that clips of any length batch together.
        transform: the method's image transform.
    """

    def __init__(self, clips: ClipDataset, samples: int, transform: nn.Module) -> None:
        if clips.frames != "middle":
            raise ValueError(f"ClipPairs: read the clips with frames='middle' (got frames={clips.frames!r})")
        self.clips, self.samples, self.transform = clips, int(samples), transform

    def __len__(self) -> int:
        return len(self.clips)

    def item_name(self, i: int) -> str:
        """The clip id of item ``i`` (for error messages)."""
        return self.clips.clip_name(i)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = self.clips[i]
        return {"image": self.transform(item["frames"][0]), "audio": fit_length(item["audio"], self.samples)}
