"""Preflight: decode every file of a clip directory once, before training, and report all bad data in one error.

:func:`preflight` reads the manifest (:func:`avlib.data.clips.read_manifest`, which already refuses malformed rows
and paths that leave the directory), then decodes each WAV and, unless ``images=False``, each frame image of the
chosen split, in a thread pool behind a tqdm bar. It checks, per clip:

- every file exists and decodes (audio without NaN or inf, with at least one sample);
- the audio is not shorter than ``num_samples`` at ``sample_rate`` promise (what :class:`ClipDataset` needs to cut
  its windows) and lasts the manifest's ``duration`` within ``tolerance`` (default one video frame, ``1 / fps``), and
  ``num_samples / sample_rate`` agrees with ``duration`` in the manifest itself;
- ``frame_indices`` are non-negative integers in increasing order, each frame time ``k / fps`` inside the clip, and
  all stored images of a clip have one size.

All problems found are raised together as one :class:`PreflightError` (one line per bad file or row, each naming
the file and what is wrong), so a run learns about bad data before step 1.

What decoding finds out about a file (its sample count and rate, its image size) is cached by path, size and
modification time in avlib's cache directory (:func:`cache_dir`: ``$AVLIB_CACHE``, else ``$XDG_CACHE_HOME/avlib``,
else ``~/.cache/avlib``), one file per clip directory, so avlib never writes inside a dataset (which may be shared or
read-only): a second scan of unchanged data decodes nothing. Files that fail to decode are not cached, so they are
tried again next time. When the cache cannot be written the scan still runs, without a cache (and warns once).
Under ``torchrun``, run it on one process (the cache then serves the others).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from avlib.data.clips import MANIFEST, ClipFormatError, read_manifest

CACHE_VERSION = 1
BATCH = 1024  # files handed to the thread pool at a time
FACTS = {"audio": ("samples", "sample_rate", "channels", "finite"), "image": ("width", "height", "mode")}


class PreflightError(ClipFormatError):
    """Bad files or rows found by :func:`preflight`; ``problems`` holds one line per bad file or row."""

    def __init__(self, header: str, problems: list[str]) -> None:
        super().__init__(header + "\n" + "\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PreflightReport:
    """What a successful :func:`preflight` scanned: clips, distinct files, how many were decoded now and how many
    came from the cache, the total audio in seconds, and the wall time of the scan."""

    root: Path
    split: str | None
    clips: int
    files: int
    decoded: int
    cached: int
    audio_seconds: float
    seconds: float

    def __str__(self) -> str:
        split = "" if self.split is None else f" [{self.split}]"
        return (f"preflight {self.root}{split}: {self.clips} clips, {self.files} files OK ({self.decoded} decoded, "
                f"{self.cached} cached), {self.audio_seconds / 3600:.2f} h of audio, {self.seconds:.1f} s")


def audio_facts(path: str | os.PathLike) -> dict:
    """Decode a whole audio file: ``{"samples", "sample_rate", "channels", "finite"}`` (read in blocks)."""
    samples, finite = 0, True
    with sf.SoundFile(path) as f:
        for block in f.blocks(blocksize=1 << 18, dtype="float32", always_2d=True):
            samples += block.shape[0]
            finite = finite and bool(np.isfinite(block).all())
        return {"samples": samples, "sample_rate": f.samplerate, "channels": f.channels, "finite": finite}


def image_facts(path: str | os.PathLike) -> dict:
    """Decode a whole image file: ``{"width", "height", "mode"}``."""
    with Image.open(path) as im:
        im.load()
        return {"width": im.width, "height": im.height, "mode": im.mode}


def _decode(kind: str, path: Path) -> tuple[dict | None, str | None]:
    """``(facts, None)`` or ``(None, why it failed)``; looks the decoders up at call time (tests replace them)."""
    try:
        return (audio_facts(path) if kind == "audio" else image_facts(path)), None
    except Exception as e:  # soundfile and PIL raise many types for corrupt files: each becomes one line
        return None, f"cannot decode ({type(e).__name__}: {' '.join(str(e).split())})"


def cache_dir() -> Path:
    """avlib's cache directory: ``$AVLIB_CACHE``, else ``$XDG_CACHE_HOME/avlib``, else ``~/.cache/avlib``."""
    if os.environ.get("AVLIB_CACHE"):
        return Path(os.environ["AVLIB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "avlib"


def preflight_cache_path(root: str | os.PathLike) -> Path:
    """The cache file of one clip directory: ``cache_dir()/preflight/<sha256 of its resolved path>.json``."""
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "preflight" / f"{key}.json"


def _load_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # no cache yet, or a damaged one: start afresh
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def _save_cache(path: Path, files: dict[str, dict]) -> None:
    """Write the cache atomically (a temporary file renamed over the old one); warn once if the folder is read-only."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".preflight-", suffix=".tmp",
                                         delete=False) as f:
            tmp = f.name
            json.dump({"version": CACHE_VERSION, "files": files}, f)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        warnings.warn(f"preflight: cannot write its cache {path} ({e}); the next scan will decode again",
                      stacklevel=3)


def preflight(root: str | os.PathLike, split: str | None = None, workers: int | None = None, progress: bool = True,
              images: bool = True, tolerance: float | None = None) -> PreflightReport:
    """Decode every file of ``split`` (``None``: all clips) under ``root`` once and check it against the manifest.

    Args:
        root: the clip directory.
        split: which rows to scan (``None``: all).
        workers: decoding threads (default: Python's thread-pool default, ``min(32, cpus + 4)``).
        progress: show a tqdm bar while decoding (nothing is shown when everything comes from the cache).
        images: decode the frame images too (``False`` for audio-only runs).
        tolerance: how far, in seconds, the decoded audio may differ from the manifest's ``duration``, and a frame
            time may lie past it (default one video frame, ``1 / fps`` of each clip).

    Returns:
        a :class:`PreflightReport` when everything is fine.

    Raises:
        PreflightError: one error listing every bad file or row (also when only some are bad).
        ClipFormatError: from :func:`read_manifest`, for a malformed manifest or a split with no clips.
    """
    start = time.perf_counter()
    if workers is not None and workers < 1:
        raise ValueError(f"preflight: workers must be at least 1, got {workers}")
    if tolerance is not None and tolerance < 0:
        raise ValueError(f"preflight: tolerance must be non-negative, got {tolerance}")
    root = Path(root)
    all_rows = read_manifest(root)
    rows = all_rows if split is None else [r for r in all_rows if r["split"] == split]
    if not rows:
        raise ClipFormatError(f"clip manifest {root / MANIFEST} has no clips of split {split!r}")

    wanted: dict[str, str] = {}  # rel path -> "audio" / "image", in manifest order
    for row in rows:
        wanted.setdefault(row["audio"], "audio")
        for rel in row["frames"] if images else []:
            wanted.setdefault(rel, "image")
    cache_path = preflight_cache_path(root)
    cache = _load_cache(cache_path)
    facts: dict[str, dict] = {}
    errors: dict[str, str] = {}
    stamps: dict[str, tuple[int, int]] = {}
    todo: list[str] = []
    for rel, kind in wanted.items():
        try:
            st = os.stat(root / rel)
        except FileNotFoundError:
            errors[rel] = "missing"
            continue
        except OSError as e:
            errors[rel] = f"cannot stat ({e.strerror})"
            continue
        stamps[rel] = (st.st_size, st.st_mtime_ns)
        entry = cache.get(rel)
        if (isinstance(entry, dict) and entry.get("kind") == kind and entry.get("size") == st.st_size
                and entry.get("mtime_ns") == st.st_mtime_ns and isinstance(entry.get("facts"), dict)
                and all(k in entry["facts"] for k in FACTS[kind])):
            facts[rel] = entry["facts"]
        else:
            todo.append(rel)
    n_cached = len(facts)

    if todo:
        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
                total=len(todo), desc=f"preflight {root.name}", unit="file", disable=not progress) as bar:
            for i in range(0, len(todo), BATCH):  # in batches, so that millions of files never queue at once
                batch = todo[i: i + BATCH]
                for rel, (found, why) in zip(batch, pool.map(_decode, [wanted[r] for r in batch],
                                                             [root / r for r in batch]), strict=True):
                    if found is None:
                        errors[rel] = why
                    else:
                        facts[rel] = found
                    bar.update()
        keep = {p for r in all_rows for p in [r["audio"], *r["frames"]]}
        files = {rel: e for rel, e in cache.items() if rel in keep and rel not in wanted}
        files.update({rel: {"kind": wanted[rel], "size": stamps[rel][0], "mtime_ns": stamps[rel][1], "facts": f}
                      for rel, f in facts.items()})
        _save_cache(cache_path, files)

    problems = []
    for row in rows:
        problems.extend(_row_problems(root, row, facts, errors, images, tolerance))
    if problems:
        where = f"{root}" + ("" if split is None else f" (split {split!r})")
        raise PreflightError(f"preflight of {where}: {len(problems)} problem(s) in {len(rows)} clip(s); "
                             f"fix or remove them before training:", problems)
    audio_seconds = sum(facts[r["audio"]]["samples"] / facts[r["audio"]]["sample_rate"] for r in rows)
    return PreflightReport(root=root, split=split, clips=len(rows), files=len(wanted), decoded=len(todo),
                           cached=n_cached, audio_seconds=audio_seconds, seconds=time.perf_counter() - start)


def _row_problems(root: Path, row: dict, facts: dict[str, dict], errors: dict[str, str], images: bool,
                  tolerance: float | None) -> list[str]:
    """The problems of one manifest row, one line each, given what decoding found about its files."""
    cid, problems = row["id"], []
    try:
        fps, rate, n_promised, duration = (float(row["fps"]), int(row["sample_rate"]), int(row["num_samples"]),
                                           float(row["duration"]))
    except (TypeError, ValueError):
        return [f"clip {cid!r} in {root / MANIFEST}: fps, sample_rate, num_samples and duration must be numbers"]
    if fps <= 0 or rate <= 0:
        return [f"clip {cid!r} in {root / MANIFEST}: fps and sample_rate must be positive"]
    tol = 1.0 / fps if tolerance is None else tolerance
    if abs(n_promised / rate - duration) > tol:
        problems.append(f"clip {cid!r} in {root / MANIFEST}: num_samples / sample_rate is {n_promised / rate:.3f} s "
                        f"but duration is {duration:.3f} s")

    audio = row["audio"]
    if audio in errors:
        problems.append(f"{root / audio} (clip {cid!r}): {errors[audio]}")
    else:
        a = facts[audio]
        wrong = []
        if a["samples"] == 0:
            wrong.append("has no samples")
        if not a["finite"]:
            wrong.append("contains NaN or inf")
        seconds = a["samples"] / a["sample_rate"]
        if a["samples"] * rate < n_promised * a["sample_rate"]:
            wrong.append(f"is shorter than the manifest says: {seconds:.3f} s ({a['samples']} samples at "
                         f"{a['sample_rate']} Hz) for num_samples {n_promised} at {rate} Hz")
        elif abs(seconds - duration) > tol:
            wrong.append(f"lasts {seconds:.3f} s but the manifest's duration is {duration:.3f} s")
        if wrong:
            problems.append(f"{root / audio} (clip {cid!r}): " + "; ".join(wrong))

    indices = row["frame_indices"]
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in indices):
        problems.append(f"clip {cid!r} in {root / MANIFEST}: frame_indices must be non-negative integers")
    elif any(b <= a for a, b in zip(indices, indices[1:], strict=False)):
        problems.append(f"clip {cid!r} in {root / MANIFEST}: frame_indices must increase ({indices[:8]}...)")
    elif indices and indices[-1] / fps > duration + tol:
        problems.append(f"clip {cid!r} in {root / MANIFEST}: frame {indices[-1]} (at {indices[-1] / fps:.3f} s) "
                        f"lies past the clip's {duration:.3f} s")

    if images:
        size, first = None, None
        for rel in row["frames"]:
            if rel in errors:
                problems.append(f"{root / rel} (clip {cid!r}): {errors[rel]}")
                continue
            wh = (facts[rel]["width"], facts[rel]["height"])
            if size is None:
                size, first = wh, rel
            elif wh != size:
                problems.append(f"{root / rel} (clip {cid!r}): {wh[0]}x{wh[1]} pixels, but {first} is "
                                f"{size[0]}x{size[1]} (a clip's frames must share one size)")
    return problems
