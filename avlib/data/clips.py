"""The on-disk clip format, the Dataset that reads it, and its in-memory twin for SynthOrchestra.

A clip directory holds ``manifest.jsonl`` (one JSON object per line, one line per clip) and plain media files::

    root/manifest.jsonl
    root/clips/<id>/audio.wav             mono WAV (float32 for SynthOrchestra, PCM from real videos)
    root/clips/<id>/frames/000012.png     video frame number 12, i.e. time 12 / fps

Manifest fields (paths are relative to ``root`` and must stay inside it, symlinks resolved: :func:`read_manifest`
refuses absolute paths and ``..`` or symlink escapes, naming the manifest line):

- required: ``id`` (str, unique), ``audio`` (path), ``frames`` (list of paths), ``frame_indices`` (list of int: the
  video frame number of each image), ``fps``, ``sample_rate``, ``num_samples``, ``duration`` (s), ``split``;
- optional: ``label`` (int), ``label_name``, ``categories`` (list of int, one per visible object), ``sounding`` (list of
  bool), ``n_sources`` (int), ``source_categories``, ``boxes`` (per stored frame, per object: ``[x0, y0, x1, y1]`` in
  pixels), ``source`` (the original video file).

:func:`write_clips` writes a SynthOrchestra world in this format; ``data_scripts/prepare_clips.py`` writes it from
real videos. :class:`ClipDataset` reads it; :class:`SynthClips` yields the very same items straight from a world
(frames quantised to 8 bits exactly as the PNG files are), so quick runs skip the disk. Before a long run,
:func:`avlib.data.preflight.preflight` (or :meth:`ClipDataset.scan`) decodes every file once and lists all bad ones.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import torch
import torchaudio
from PIL import Image
from torch.utils.data import Dataset

from avlib.data.safety import UnsafePathError, check_contained
from avlib.data.synthetic import Scene, SynthOrchestra

if TYPE_CHECKING:
    from avlib.data.preflight import PreflightReport

MANIFEST = "manifest.jsonl"
REQUIRED = ("id", "audio", "frames", "frame_indices", "fps", "sample_rate", "num_samples", "duration", "split")


class ClipFormatError(ValueError):
    """A manifest or a clip's files are missing, malformed or unreadable (the message lists every problem found)."""


def quantize_frames(frames: torch.Tensor) -> torch.Tensor:
    """Round ``[0, 1]`` frames to 8-bit levels (what a PNG stores), as float32."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).to(torch.float32) / 255


def scene_item(scene: Scene, clip_id: str, split: str = "train") -> dict:
    """The dataset item of a scene: the same keys and values :class:`ClipDataset` returns for its written clip."""
    label = int(scene.categories[scene.sounding][0]) if scene.sounding.any() else (
        int(scene.source_categories[0]) if scene.source_categories.numel() else -1)
    return {
        "id": clip_id,
        "frames": quantize_frames(scene.frames),
        "frame_indices": scene.frame_indices.clone(),
        "audio": scene.audio.clone(),
        "sample_rate": scene.sample_rate,
        "fps": scene.fps,
        "duration": scene.audio.shape[-1] / scene.sample_rate,
        "split": split,
        "label": label,
        "categories": scene.categories.clone(),
        "sounding": scene.sounding.clone(),
        "n_sources": int(scene.source_categories.numel()),
        "source_categories": scene.source_categories.clone(),
        "boxes": scene.boxes.clone(),
    }


class SynthClips(Dataset):
    """In-memory clip dataset over a SynthOrchestra world: item ``j`` is scene ``indices[j]`` in clip-item form.

    Args:
        world: the world.
        indices: scene indices (default all).
        frames: which video frame numbers to keep per clip (default all).
        split: split name put in each item.
        cache: keep generated items in memory (fast repeated epochs over a small world).
    """

    def __init__(self, world: SynthOrchestra, indices: Sequence[int] | None = None,
                 frames: Sequence[int] | None = None, split: str = "train", cache: bool = False) -> None:
        self.world = world
        self.indices = list(range(len(world))) if indices is None else [int(i) for i in indices]
        self.frames = None if frames is None else [int(k) for k in frames]
        self.split = split
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict:
        if self._cache is not None and j in self._cache:
            return self._cache[j]
        i = self.indices[j]
        item = scene_item(self.world.scene(i, frames=self.frames), clip_id=f"synth{i:06d}", split=self.split)
        if self._cache is not None:
            self._cache[j] = item
        return item


def write_clips(world: SynthOrchestra, root: str | os.PathLike, indices: Sequence[int] | None = None,
                frames: Sequence[int] | None = None, split: str = "train", append: bool = False,
                prefix: str = "synth") -> Path:
    """Write scenes of ``world`` as clips under ``root`` (audio as float32 WAV, frames as PNG, one manifest row each).

    Clip ``i`` gets the id ``f"{prefix}{i:06d}"``. ``append=True`` adds rows to an existing manifest (e.g. another
    split, or another world under another ``prefix``); an existing manifest without ``append``, or an id that is already
    in it, is an error. Returns the manifest path.
    """
    root = Path(root)
    manifest = root / MANIFEST
    if manifest.exists() and not append:
        raise FileExistsError(f"write_clips: {manifest} already exists (pass append=True to add clips)")
    indices = range(len(world)) if indices is None else indices
    ids = [f"{prefix}{int(i):06d}" for i in indices]
    if manifest.exists():
        taken = sorted({row["id"] for row in read_manifest(root)} & set(ids))
        if taken:
            raise FileExistsError(f"write_clips: {manifest} already has clips {taken[:3]}... "
                                  f"(write this world with another prefix=)")
    rows = []
    for i, clip_id in zip(indices, ids, strict=True):
        scene = world.scene(int(i), frames=frames)
        item = scene_item(scene, clip_id=clip_id, split=split)
        rel = Path("clips") / item["id"]
        (root / rel / "frames").mkdir(parents=True, exist_ok=True)
        sf.write(root / rel / "audio.wav", item["audio"].numpy(), scene.sample_rate, subtype="FLOAT")
        frame_paths = []
        pixels = (item["frames"] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for k, img in zip(item["frame_indices"].tolist(), pixels, strict=True):
            path = rel / "frames" / f"{k:06d}.png"
            Image.fromarray(img).save(root / path)
            frame_paths.append(path.as_posix())
        rows.append({
            "id": item["id"], "audio": (rel / "audio.wav").as_posix(), "frames": frame_paths,
            "frame_indices": item["frame_indices"].tolist(), "fps": scene.fps, "sample_rate": scene.sample_rate,
            "num_samples": int(scene.audio.shape[-1]), "duration": item["duration"], "split": split,
            "label": item["label"], "label_name": world.category_names[item["label"]] if item["label"] >= 0 else None,
            "categories": item["categories"].tolist(), "sounding": item["sounding"].tolist(),
            "n_sources": item["n_sources"], "source_categories": item["source_categories"].tolist(),
            "boxes": item["boxes"].tolist(), "family": scene.family,
        })
    root.mkdir(parents=True, exist_ok=True)
    with open(manifest, "a" if append else "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return manifest


def read_manifest(root: str | os.PathLike) -> list[dict]:
    """Parse ``root/manifest.jsonl``; raises :class:`ClipFormatError` listing every malformed row at once.

    Every ``audio`` and ``frames`` path must be relative and stay inside ``root`` once symlinks are resolved
    (:func:`avlib.data.safety.check_contained`); a row that breaks this is reported like any other malformed row, e.g.
    ``data/manifest.jsonl line 3: audio path '../x.wav' leaves the clip directory``.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"clip manifest not found: {path}")
    rows, problems, seen, dirs = [], [], set(), {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            at = f"{path} line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{at}: not valid JSON ({e.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"{at}: a row must be a JSON object")
                continue
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                problems.append(f"{at}: clip {row.get('id', '?')!r} lacks {', '.join(missing)}")
                continue
            if not isinstance(row["frames"], list) or not isinstance(row["frame_indices"], list):
                problems.append(f"{at}: clip {row['id']!r}: frames and frame_indices must be lists")
                continue
            if len(row["frames"]) != len(row["frame_indices"]):
                problems.append(f"{at}: clip {row['id']!r} has {len(row['frames'])} frames but "
                                f"{len(row['frame_indices'])} frame_indices")
            problems.extend(_unsafe_paths(root, row, at, dirs))
            if row["id"] in seen:
                problems.append(f"{at}: duplicate clip id {row['id']!r}")
            seen.add(row["id"])
            rows.append(row)
    if problems:
        raise ClipFormatError(f"{len(problems)} bad manifest row(s):\n" + "\n".join(problems))
    if not rows:
        raise ClipFormatError(f"clip manifest {path} has no clips")
    return rows


def _unsafe_paths(root: str | os.PathLike, row: dict, at: str, dirs: dict) -> list[str]:
    """One line for the audio path and one for the first bad frame path of ``row`` that leave ``root``."""
    problems = []
    try:
        check_contained(root, row["audio"], f"{at}: audio", dirs=dirs)
    except UnsafePathError as e:
        problems.append(str(e))
    bad = []
    for p, rel in enumerate(row["frames"]):
        try:
            check_contained(root, rel, f"{at}: frames[{p}]", dirs=dirs)
        except UnsafePathError as e:
            bad.append(str(e))
    if bad:
        problems.append(bad[0] + (f" (and {len(bad) - 1} more frame path(s) of this row)" if len(bad) > 1 else ""))
    return problems


def _expected_samples(row: dict, sample_rate: int) -> int:
    """Audio samples a manifest row promises at ``sample_rate`` (its ``num_samples`` at its own ``sample_rate``)."""
    return int(math.ceil(int(row["num_samples"]) * sample_rate / int(row["sample_rate"])))


class ClipDataset(Dataset):
    """Clips in avlib's on-disk format (see the module docstring), written by SynthOrchestra or from real videos.

    Args:
        root: the clip directory.
        split: keep only rows of this split (``None``: all).
        sample_rate: resample every clip's audio to this rate (default: the first clip's rate); stereo files are
            down-mixed to mono.
        frames: which stored frames each item loads: ``"all"``, ``"middle"`` (the middle stored frame, as DMC and
            DSOL sample one image per clip) or ``"none"`` (audio only).
        check_files: verify at construction that every referenced file exists (all problems reported at once).

    Items are dicts like :func:`scene_item`'s: ``frames (T,3,H,W)`` float32 in [0, 1], ``frame_indices (T,)``,
    ``audio (N,)`` float32, ``sample_rate``, ``fps``, ``duration``, ``split``, ``label`` (-1 when unknown), and when the
    manifest has them ``categories``, ``sounding``, ``n_sources``, ``source_categories``, ``boxes (T, n, 4)``.
    The class also follows ``avlib.data.pairs.ClipSource``, so ``AVCPairs(ClipDataset(root))`` works.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None, sample_rate: int | None = None,
                 frames: str = "all", check_files: bool = True) -> None:
        if frames not in ("all", "middle", "none"):
            raise ValueError(f"ClipDataset: frames must be 'all', 'middle' or 'none'; got {frames!r}")
        self.root = Path(root)
        rows = read_manifest(self.root)
        if split is not None:
            rows = [r for r in rows if r["split"] == split]
            if not rows:
                raise ClipFormatError(f"clip manifest {self.root / MANIFEST} has no clips of split {split!r}")
        self.rows = rows
        self.split = split
        self.sample_rate = int(sample_rate or rows[0]["sample_rate"])
        self.frames = frames
        if check_files:
            missing = [f"clip {r['id']!r}: missing file {self.root / p}" for r in rows
                       for p in [r["audio"], *(r["frames"] if frames != "none" else [])]
                       if not (self.root / p).is_file()]
            if missing:
                raise ClipFormatError(f"{len(missing)} missing file(s) under {self.root}:\n" + "\n".join(missing))

    def __len__(self) -> int:
        return len(self.rows)

    # -------------------------------------------------------------- decoding with clear errors
    def _read_audio(self, row: dict) -> torch.Tensor:
        path = self.root / row["audio"]
        try:
            data, sr = sf.read(path, dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises several types for missing / corrupt files
            raise ClipFormatError(f"clip {row['id']!r}: cannot read audio file {path}: {e}") from e
        if data.shape[0] == 0:
            raise ClipFormatError(f"clip {row['id']!r}: audio file {path} has no samples")
        wave = torch.from_numpy(data.mean(1) if data.shape[1] > 1 else data[:, 0].copy())
        if not torch.isfinite(wave).all():
            raise ClipFormatError(f"clip {row['id']!r}: audio file {path} contains NaN or inf")
        if sr != self.sample_rate:
            wave = torchaudio.functional.resample(wave, sr, self.sample_rate)
        need = _expected_samples(row, self.sample_rate)
        if wave.shape[0] < need:
            raise ClipFormatError(
                f"clip {row['id']!r}: audio file {path} is shorter than the manifest says: {data.shape[0] / sr:.3f} s "
                f"({data.shape[0]} samples at {sr} Hz) for num_samples {row['num_samples']} at {row['sample_rate']} Hz "
                f"({int(row['num_samples']) / int(row['sample_rate']):.3f} s)")
        return wave

    def _read_frame(self, row: dict, path_rel: str) -> torch.Tensor:
        path = self.root / path_rel
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception as e:  # PIL raises several types for missing / truncated / unknown files
            raise ClipFormatError(f"clip {row['id']!r}: cannot read image file {path}: {e}") from e
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255

    def __getitem__(self, j: int) -> dict:
        row = self.rows[j]
        keep = self._kept_frames(row)
        item: dict = {
            "id": row["id"],
            "frame_indices": torch.tensor([row["frame_indices"][p] for p in keep], dtype=torch.int64),
            "audio": self._read_audio(row),
            "sample_rate": self.sample_rate,
            "fps": float(row["fps"]),
            "duration": float(row["duration"]),
            "split": row["split"],
            "label": int(row["label"]) if row.get("label") is not None else -1,
        }
        if self.frames != "none":
            images = [self._read_frame(row, row["frames"][p]) for p in keep]
            for p, image in zip(keep, images, strict=True):
                if image.shape != images[0].shape:
                    raise ClipFormatError(
                        f"clip {row['id']!r}: image file {self.root / row['frames'][p]} is {image.shape[2]}x"
                        f"{image.shape[1]} pixels but {row['frames'][keep[0]]} is {images[0].shape[2]}x"
                        f"{images[0].shape[1]} (a clip's frames must share one size)")
            item["frames"] = torch.stack(images) if images else torch.zeros(0, 3, 0, 0)
        for key, dtype in (("categories", torch.int64), ("sounding", torch.bool), ("source_categories", torch.int64)):
            if row.get(key) is not None:
                item[key] = torch.tensor(row[key], dtype=dtype)
        if row.get("n_sources") is not None:
            item["n_sources"] = int(row["n_sources"])
        if row.get("boxes") is not None:
            n_obj = len(row.get("categories") or []) or (len(row["boxes"][0]) if row["boxes"] else 0)
            boxes = torch.tensor(row["boxes"], dtype=torch.float32).reshape(len(row["frames"]), n_obj, 4)
            item["boxes"] = boxes[keep]
        return item

    def _kept_frames(self, row: dict) -> list[int]:
        """Positions (in the row's frame list) of the frames an item carries."""
        n = len(row["frames"])
        if self.frames == "middle":
            return [n // 2] if n else []
        return list(range(n))

    def scan(self, workers: int | None = None, progress: bool = False) -> PreflightReport:
        """Decode every file of this dataset's split once and check it against the manifest: a shortcut for
        :func:`avlib.data.preflight.preflight` (which see), images skipped when ``frames="none"``.

        Raises one :class:`~avlib.data.preflight.PreflightError` (a :class:`ClipFormatError`) listing all bad files.
        """
        from avlib.data.preflight import preflight  # preflight imports this module

        return preflight(self.root, self.split, workers=workers, progress=progress, images=self.frames != "none")

    # -------------------------------------------------------------- ClipSource protocol (for AVCPairs)
    def clip_frame_indices(self, j: int) -> np.ndarray:
        """Video frame numbers stored for clip ``j``."""
        return np.asarray(self.rows[j]["frame_indices"], dtype=np.int64)

    def clip_name(self, j: int) -> str:
        """How errors name clip ``j``: its id and the dataset root."""
        return f"clip {self.rows[j]['id']!r} of {self.root}"

    def clip_fps(self, j: int) -> float:
        """Frame rate of clip ``j``'s frame numbering."""
        return float(self.rows[j]["fps"])

    def clip_samples(self, j: int) -> int:
        """Audio samples of clip ``j`` at the dataset's sample rate."""
        return _expected_samples(self.rows[j], self.sample_rate)

    def clip_label(self, j: int) -> int:
        """The clip's label, else its first sounding category, else -1."""
        row = self.rows[j]
        if row.get("label") is not None:
            return int(row["label"])
        cats, snd = row.get("categories") or [], row.get("sounding") or []
        sounding = [c for c, s in zip(cats, snd, strict=False) if s]
        return int(sounding[0]) if sounding else -1

    def get_frame(self, j: int, frame: int) -> torch.Tensor:
        """The ``(3, H, W)`` image of video frame number ``frame`` of clip ``j``."""
        row = self.rows[j]
        try:
            pos = row["frame_indices"].index(int(frame))
        except ValueError:
            raise IndexError(f"clip {row['id']!r}: frame {frame} is not stored "
                             f"(stored: {row['frame_indices'][:5]}...)") from None
        return self._read_frame(row, row["frames"][pos])

    def get_audio(self, j: int) -> torch.Tensor:
        """The ``(N,)`` mono waveform of clip ``j`` at the dataset's sample rate."""
        return self._read_audio(self.rows[j])
