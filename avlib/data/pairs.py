"""Audio-visual correspondence (AVC) pairs: positives, negatives, and the frame-alignment shortcut.

The AVC task of L3-Net (Arandjelović & Zisserman, 2017, Sec. 2.2) asks whether an image and an audio window come from
the same video. A *positive* takes a frame at time ``t = k / fps`` of one clip and the audio window around it; a
*negative* takes the frame from one clip and audio from another. Objects that Sound (2018, Sec. 3.3) noticed that if
negative audio may start at any sample while positive audio is always centred on a frame time (a multiple of 0.04 s at
25 fps), a network can tell them apart from low-level periodic artifacts instead of semantics. ``negative_mode`` makes
the choice explicit:

- ``"naive"``: negative audio windows are centred at any sample;
- ``"frame_aligned"``: every audio window is centred on a frame time (a multiple of the frame period).

``misalign=True`` is L3's augmentation: the positive audio window is any window that still overlaps the frame (its
centre moves up to half a window away); in ``frame_aligned`` mode the moved centre stays on frame times.

Item ``i`` is a positive when ``i`` is even and a negative when odd, so any batch of consecutive indices (or of
:class:`BalancedBatchSampler`) is balanced. Items are deterministic functions of ``(seed, epoch, i)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

NEGATIVE_MODES = ("naive", "frame_aligned")


class ClipSource(Protocol):
    """What AVC sampling needs from a collection of clips (SynthOrchestra and ClipDataset both provide it)."""

    sample_rate: int

    def __len__(self) -> int: ...

    def clip_frame_indices(self, index: int) -> np.ndarray: ...

    def clip_fps(self, index: int) -> float: ...

    def clip_samples(self, index: int) -> int: ...

    def clip_label(self, index: int) -> int: ...

    def get_frame(self, index: int, frame: int) -> torch.Tensor: ...

    def get_audio(self, index: int) -> torch.Tensor: ...

    # optional: ``clip_name(index) -> str`` names a clip in error messages


class AVCPairs(Dataset):
    """Balanced AVC pairs drawn from a :class:`ClipSource` (e.g. a ``SynthOrchestra`` world).

    Args:
        world: the clips (``SynthOrchestra``, ``ClipDataset`` or anything following :class:`ClipSource`).
        window_seconds: audio window length in seconds (1 s in L3-Net and its successors).
        negative_mode: ``"naive"`` or ``"frame_aligned"`` (see module docstring).
        misalign: L3-style misalignment of positive audio (any overlapping window).
        seed: sampling seed; items depend on ``(seed, epoch, i)`` only.
        length: number of items (default ``2 * len(clips)``).
        clips: restrict sampling to these clip indices (e.g. a train split); default all.
        volume_jitter: audio gain drawn uniformly from ``[1 - v, 1 + v]`` per item (L3 uses 0.1).
        negative_other_category: draw negative audio only from clips with a different label (``clip_label``).
        image_transform: callable on the ``(3, H, W)`` frame; it runs under a per-item torch seed, so random
            transforms (crops, flips, jitter) are reproducible too.
        cache_audio: keep each clip's waveform in memory after its first use (fast for small worlds).

    Items are dicts: ``image (3,H,W)`` float32, ``audio (n,)`` float32, ``label`` int64 (1 = corresponds),
    ``category`` (the image clip's label), ``audio_category``, ``video_index``, ``audio_index``, ``frame_index``,
    ``audio_center`` (sample index of the window's midpoint in the audio clip) and ``offset`` (audio centre minus the
    frame time, in samples; meaningful for positives).
    """

    def __init__(
        self,
        world: ClipSource,
        window_seconds: float = 1.0,
        negative_mode: str = "naive",
        misalign: bool = False,
        seed: int = 0,
        length: int | None = None,
        clips: Sequence[int] | None = None,
        volume_jitter: float = 0.0,
        negative_other_category: bool = False,
        image_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_audio: bool = False,
    ) -> None:
        if negative_mode not in NEGATIVE_MODES:
            raise ValueError(f"negative_mode must be one of {NEGATIVE_MODES}; got {negative_mode!r}")
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be positive; got {window_seconds!r}")
        if not 0.0 <= volume_jitter < 1.0:
            raise ValueError(f"volume_jitter must lie in [0, 1); got {volume_jitter!r}")
        self.world = world
        self.clips = np.arange(len(world)) if clips is None else np.asarray(clips, dtype=np.int64)
        if self.clips.size < 2:
            raise ValueError(f"AVCPairs needs at least 2 clips to draw negatives; got {self.clips.size}")
        if self.clips.min() < 0 or self.clips.max() >= len(world):
            raise IndexError(f"clips must be indices in 0..{len(world) - 1}")
        self.sample_rate = int(world.sample_rate)
        self.window = int(round(window_seconds * self.sample_rate))
        self.window_seconds = float(window_seconds)
        self.negative_mode = negative_mode
        self.misalign = bool(misalign)
        self.seed = int(seed)
        self.epoch = 0
        self.length = 2 * int(self.clips.size) if length is None else int(length)
        self.volume_jitter = float(volume_jitter)
        self.negative_other_category = bool(negative_other_category)
        self.image_transform = image_transform
        self._audio_cache: dict[int, torch.Tensor] | None = {} if cache_audio else None
        if self.negative_other_category:
            self._labels = np.array([world.clip_label(int(c)) for c in self.clips])
            if np.unique(self._labels).size < 2:
                raise ValueError("negative_other_category=True needs clips of at least two labels")

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of pairs (same seed, different epoch) for the next pass."""
        self.epoch = int(epoch)

    # -------------------------------------------------------------- timing
    def frame_centers(self, clip: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames of ``clip`` whose centred audio window fits in the clip: ``(frame numbers, centre samples)`` with
        centre ``round(k * sample_rate / fps)``. Raises ``ValueError`` naming the clip when none fits."""
        frames = np.asarray(self.world.clip_frame_indices(clip), dtype=np.int64)
        n_samples = self.world.clip_samples(clip)
        centers = np.round(frames * self.sample_rate / float(self.world.clip_fps(clip))).astype(np.int64)
        start = centers - self.window // 2
        ok = (start >= 0) & (start + self.window <= n_samples)
        if not ok.any():
            need = self.window / self.sample_rate
            name = self.world.clip_name(clip) if hasattr(self.world, "clip_name") else f"clip {clip}"
            raise ValueError(
                f"{name}: {n_samples / self.sample_rate:.3f} s of audio ({frames.size} frames) is too short for "
                f"a {need:.3f} s window centred on a frame (it needs {need:.3f} s of audio with a frame at the middle)"
            )
        return frames[ok], centers[ok]

    def _draw_center(self, rng: np.random.Generator, clip: int, around: int | None) -> int:
        """Audio window centre in ``clip``: on a frame time (frame_aligned) or any sample (naive), optionally within
        half a window of the sample ``around``."""
        half = self.window // 2
        if self.negative_mode == "frame_aligned":
            centers = self.frame_centers(clip)[1]
            if around is not None:
                centers = centers[np.abs(centers - around) <= half]
            return int(rng.choice(centers))
        lo, hi = half, self.world.clip_samples(clip) - self.window + half
        if around is not None:
            lo, hi = max(lo, around - half), min(hi, around + half)
        return int(rng.integers(lo, hi + 1))

    # -------------------------------------------------------------- items
    def _audio(self, clip: int) -> torch.Tensor:
        if self._audio_cache is None:
            return self.world.get_audio(clip)
        if clip not in self._audio_cache:
            self._audio_cache[clip] = self.world.get_audio(clip)
        return self._audio_cache[clip]

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < self.length:
            raise IndexError(f"AVCPairs index {i} is outside 0..{self.length - 1}")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, i]))
        positive = i % 2 == 0
        video = int(self.clips[rng.integers(self.clips.size)])
        frames_v, centers_v = self.frame_centers(video)
        pick = int(rng.integers(frames_v.size))
        k, frame_center = int(frames_v[pick]), int(centers_v[pick])
        if positive:
            audio_clip = video
            center = self._draw_center(rng, video, around=frame_center) if self.misalign else frame_center
        else:
            pool = self.clips[self.clips != video]
            if self.negative_other_category:
                pool = self.clips[self._labels != self.world.clip_label(video)]
            audio_clip = int(pool[rng.integers(pool.size)])
            center = self._draw_center(rng, audio_clip, around=None)
        start = center - self.window // 2
        audio = self._audio(audio_clip)[start : start + self.window]
        if self.volume_jitter > 0:
            audio = audio * float(rng.uniform(1 - self.volume_jitter, 1 + self.volume_jitter))
        image = self.world.get_frame(video, k)
        if self.image_transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**62)))
                image = self.image_transform(image)
        label = self.world.clip_label(video)
        return {
            "image": image,
            "audio": audio.contiguous(),
            "label": torch.tensor(1 if positive else 0, dtype=torch.int64),
            "category": torch.tensor(label, dtype=torch.int64),
            "audio_category": torch.tensor(label if positive else self.world.clip_label(audio_clip), dtype=torch.int64),
            "video_index": torch.tensor(video, dtype=torch.int64),
            "audio_index": torch.tensor(audio_clip, dtype=torch.int64),
            "frame_index": torch.tensor(k, dtype=torch.int64),
            "audio_center": torch.tensor(center, dtype=torch.int64),
            "offset": torch.tensor(center - frame_center, dtype=torch.int64),
        }

    def batch(self, indices: Sequence[int]) -> dict:
        """Collate the items ``indices`` into one batch dict (tensors stacked along a new first axis)."""
        return collate([self[int(i)] for i in indices])

    def batches(self, batch_size: int, shuffle: bool = True, drop_last: bool = True) -> Iterator[dict]:
        """Iterate over balanced batches of this epoch in-process (no DataLoader), e.g. for quick runs."""
        sampler = BalancedBatchSampler(self, batch_size, shuffle=shuffle, seed=self.seed + 7919 * self.epoch,
                                       drop_last=drop_last)
        for idx in sampler:
            yield self.batch(idx)


def collate(items: Sequence[dict]) -> dict:
    """Stack a list of item dicts into a batch dict (``torch.utils.data.default_collate``; use it as a DataLoader's
    ``collate_fn``)."""
    if len(items) == 0:
        raise ValueError("collate: got an empty list of items")
    return default_collate(list(items))


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches of AVCPairs indices with exactly half positives (even indices) and half negatives (odd indices).

    Args:
        dataset: the pairs (only its length is used).
        batch_size: an even number.
        shuffle: shuffle positives and negatives each time the sampler is iterated (seeded by ``seed`` and a counter).
        seed: shuffling seed.
        drop_last: drop a last incomplete batch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True) -> None:
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"batch_size must be an even number >= 2 for balanced batches; got {batch_size}")
        self.n = len(dataset)  # type: ignore[arg-type]
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self._round = 0

    def __len__(self) -> int:
        half = self.n // 2
        per = self.batch_size // 2
        return half // per if self.drop_last else -(-half // per)

    def __iter__(self) -> Iterator[list[int]]:
        half = self.n // 2
        pos, neg = 2 * np.arange(half), 2 * np.arange(half) + 1
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self._round])
            self._round += 1
            pos, neg = rng.permutation(pos), rng.permutation(neg)
        per = self.batch_size // 2
        for b in range(len(self)):
            idx = np.stack([pos[b * per : (b + 1) * per], neg[b * per : (b + 1) * per]], 1).reshape(-1)
            yield idx.tolist()
