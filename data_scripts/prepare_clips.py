"""Convert a folder of real video files into avlib's clip format (manifest.jsonl + mono WAV + PNG/JPEG frames).

Usage::

    python data_scripts/prepare_clips.py VIDEOS_DIR OUT_DIR [--fps 25] [--sample-rate 16000] [--size 256]
        [--clip-seconds 1] [--split train] [--labels-from-dirs] [--image-format png] [--append]
        [--max-missing-seconds 0.5]

Every video under ``VIDEOS_DIR`` (recursively: mp4, mkv, webm, avi, mov, m4v, flv) is decoded with PyAV in one pass:
frames are sampled at ``--fps`` (frame number ``k`` is the first decoded frame at or after ``k / fps``, the sampling
the papers' 25 fps data uses), scaled so the short side is ``--size`` (0 keeps the size), and the first audio stream is
down-mixed and resampled to a mono WAV at ``--sample-rate``. ``--clip-seconds L`` cuts each video into non-overlapping
``L``-second clips (DSOL's one-second clips); without it each video is one clip.

Clip ids. A video's id is its path relative to ``VIDEOS_DIR``, extension included, with ``/`` and every character
other than letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``: ``violin/take 1.mp4`` becomes
``violin_take_1.mp4``, so ``ok.mp4`` and ``ok.avi`` get different ids. Cut clips add ``_0000``, ``_0001``, ... An id
depends on the video's own path only, so it is the same in every run. Two videos whose ids would still be equal (up
to case, for case-insensitive file systems; e.g. ``a b.mp4`` and ``a_b.mp4``) are both refused, with one line
naming the other: rename one.

Appending. ``--append`` adds to an existing manifest and is idempotent: a video whose clips are already in it (its
id, or its cut ids ``ID_0000``...) is reported on a ``SKIP ... already in the manifest`` line and left alone, so
rerunning the same command after an interruption finishes the job without duplicate rows. Files are never
overwritten: each clip is written to a hidden ``clips/.partial-ID`` folder and renamed into place, then its row is
appended and flushed; a ``clips/ID`` folder that exists without a manifest row (an interrupted rename) is reported and
left for you to remove.

Truncated files. The decoded streams must reach the end the container states (each stream's stated duration where the
container gives one, else the container's), within ``--max-missing-seconds`` (default 0.5 s); a video that ends
early (a truncated MKV or MP4) is skipped, named, rather than turned into a shorter clip. Files whose container
states no duration are not checked.

Labels. With ``--labels-from-dirs`` a video's label is its parent folder relative to ``VIDEOS_DIR`` (``a/b`` for
``VIDEOS_DIR/a/b/x.mp4``); labels are numbered in sorted order of the folder names. With ``--append``, a folder
the manifest already has keeps its number and new folders are numbered after the highest existing label. Videos at
the top level of ``VIDEOS_DIR`` have no folder: they get no label (``label`` null, read as -1), announced on one
``NOTE`` line.

Errors. A file that cannot be used (no audio or video stream, a decoding error, truncated, too short, an id
collision) is logged on its own line, starting with ``SKIP`` and naming the file, and the run goes on. The last line
is a summary. The exit status is 0 when every video was written or already in the manifest, and 1 when anything was
skipped for an error, or for bad arguments (one ``ERROR`` line naming the argument or file).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from avlib.data.video import UnusableVideo, decode_video, write_clip_folders
from avlib.data.video import clip_spans as cut_spans

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv"}
MANIFEST = "manifest.jsonl"  # the name avlib.data.clips reads
CLIPS = "clips"


Skip = UnusableVideo  # a video that cannot become clips; the message says why, on one line


def log(message: str) -> None:
    print(f"[prepare_clips] {message}", file=sys.stderr, flush=True)


def clip_id(rel: Path) -> str:
    """The id of the video at ``rel`` (relative to the input folder): the path with its extension, ``/`` and other
    characters outside ``[\\w.-]`` replaced by ``_``."""
    return re.sub(r"[^\w.-]", "_", rel.as_posix())


def clip_spans(n_samples: int, n_frames: int, args: argparse.Namespace) -> list[tuple[float, float]]:
    """The ``(start, end)`` times (s) of the clips of a decoded video."""
    if args.clip_seconds <= 0:
        return [(0.0, n_samples / args.sample_rate)]
    return cut_spans(min(n_samples / args.sample_rate, n_frames / args.fps), args.clip_seconds)


def write_video_clips(audio: np.ndarray, frames: dict[int, Image.Image], source: Path, out: Path, base_id: str,
                      args: argparse.Namespace, label: int | None, label_name: str | None) -> list[dict]:
    """Write the clip folders of one decoded video (each built in ``clips/.partial-ID``, then renamed into place,
    never over an existing folder); returns their manifest rows."""
    spans = clip_spans(audio.size, max(frames) + 1, args)
    ids = [base_id] if args.clip_seconds <= 0 else [f"{base_id}_{c:04d}" for c in range(len(spans))]
    return write_clip_folders(audio, frames, out, ids, spans, args.fps, args.sample_rate, args.image_format,
                              {"split": args.split, "label": label, "label_name": label_name, "source": str(source)})


def find_videos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def read_existing(manifest: Path) -> tuple[set[str], dict[str, int], bool]:
    """The ids and the ``label_name -> label`` map of an existing manifest, and whether its last line lacks its
    newline. Raises ``ValueError`` naming the first line that is not a JSON object with an ``id``."""
    ids: set[str] = set()
    labels: dict[str, int] = {}
    text = manifest.read_text()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{manifest} line {n}: not valid JSON ({e.msg}); fix or remove that line before "
                             f"--append") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise ValueError(f"{manifest} line {n}: not a clip row (a JSON object with an id); fix it before --append")
        ids.add(row["id"])
        if isinstance(row.get("label_name"), str) and isinstance(row.get("label"), int):
            labels.setdefault(row["label_name"], row["label"])
    return ids, labels, bool(text) and not text.endswith("\n")


def number_labels(folders: Sequence[str], existing: dict[str, int]) -> dict[str, int]:
    """Label numbers for ``folders``: the manifest's own where it has one, the others in sorted order after them."""
    labels = {name: existing[name] for name in folders if name in existing}
    nxt = max(existing.values(), default=-1) + 1
    for name in sorted(set(folders) - set(labels)):
        labels[name], nxt = nxt, nxt + 1
    return labels


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", type=Path, help="folder of video files (searched recursively)")
    parser.add_argument("out", type=Path, help="output clip directory")
    parser.add_argument("--fps", type=float, default=25.0, help="frame sampling rate (default 25)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="audio sample rate in Hz (default 16000)")
    parser.add_argument("--size", type=int, default=256, help="short side of saved frames in pixels (0: keep)")
    parser.add_argument("--clip-seconds", type=float, default=0.0, help="cut videos into clips of this length")
    parser.add_argument("--split", default="train", help="split name written to the manifest (default train)")
    parser.add_argument("--labels-from-dirs", action="store_true",
                        help="label each video by its parent folder (top-level videos get no label)")
    parser.add_argument("--image-format", choices=("png", "jpg"), default="png")
    parser.add_argument("--append", action="store_true",
                        help="add to an existing manifest; videos already in it are skipped")
    parser.add_argument("--max-missing-seconds", type=float, default=0.5,
                        help="skip a video whose streams end this much before its stated duration (default 0.5)")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str | None:
    """The first bad argument, as one line (``None`` when all are fine)."""
    if not args.videos.is_dir():
        return f"input folder not found: {args.videos}"
    for name in ("fps", "sample_rate"):
        if not getattr(args, name) > 0:
            return f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}"
    for name in ("size", "clip_seconds", "max_missing_seconds"):
        if not getattr(args, name) >= 0:
            return f"--{name.replace('_', '-')} must be zero or positive, got {getattr(args, name)}"
    if (args.out / MANIFEST).exists() and not args.append:
        return f"{args.out / MANIFEST} exists; pass --append to add clips to it"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        log(f"ERROR {problem}")
        return 1
    manifest = args.out / MANIFEST
    existing_ids: set[str] = set()
    existing_labels: dict[str, int] = {}
    needs_newline = False
    if manifest.exists():
        try:
            existing_ids, existing_labels, needs_newline = read_existing(manifest)
        except ValueError as e:
            log(f"ERROR {e}")
            return 1
    videos = find_videos(args.videos)
    if not videos:
        log(f"ERROR no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) under {args.videos}")
        return 1

    rels = {v: v.relative_to(args.videos) for v in videos}
    ids = {v: clip_id(rel) for v, rel in rels.items()}
    by_id: dict[str, list[Path]] = {}
    for v, cid in ids.items():
        by_id.setdefault(cid.casefold(), []).append(v)
    taken = {cid.casefold(): cid for cid in existing_ids}
    cut_of = {}  # base id -> the first of its cut ids in the manifest
    for known in sorted(existing_ids):
        if m := re.fullmatch(r"(.+)_\d{4}", known):
            cut_of.setdefault(m.group(1), known)
    folders = {v: rel.parent.as_posix() for v, rel in rels.items() if rel.parent != Path(".")}
    labels = number_labels(sorted(set(folders.values())), existing_labels) if args.labels_from_dirs else {}
    if args.labels_from_dirs and len(folders) < len(videos):
        log(f"NOTE {len(videos) - len(folders)} video(s) at the top level of {args.videos} have no label folder: "
            f"they get no label (--labels-from-dirs labels by parent folder)")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / CLIPS).mkdir(exist_ok=True)
    written, present, clips, failed = 0, 0, 0, []
    with open(manifest, "a") as f:
        if needs_newline:
            f.write("\n")
        for video in videos:
            cid = ids[video]
            known = cid if cid in existing_ids else cut_of.get(cid)
            if known is not None:
                present += 1
                log(f"SKIP {video}: already in the manifest (clip {known!r})")
                continue
            try:
                others = [o for o in by_id[cid.casefold()] if o != video]
                if others:
                    raise Skip(f"its clip id {cid!r} is also the id of {others[0]}; rename one of them")
                if cid.casefold() in taken:
                    raise Skip(f"its clip id {cid!r} differs only in case from the manifest's "
                               f"{taken[cid.casefold()]!r}")
                name = folders.get(video) if args.labels_from_dirs else None
                audio, frames = decode_video(video, args.fps, args.size, args.sample_rate, args.max_missing_seconds)
                rows = write_video_clips(audio, frames, video, args.out, cid, args,
                                         labels[name] if name is not None else None, name)
            except Exception as e:  # one unusable video must not stop the run: name it on one line and go on
                failed.append(video)
                reason = " ".join(str(e).split()) or type(e).__name__
                log(f"SKIP {video}: {reason if isinstance(e, Skip) else f'{type(e).__name__}: {reason}'}")
                continue
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
            written, clips = written + 1, clips + len(rows)
    summary = f"done: {written} video(s) → {clips} clip(s) written to {args.out}; {present} already in the manifest"
    if failed:
        names = ", ".join(str(v) for v in failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        summary += f"; {len(failed)} skipped for errors ({names}): see the SKIP lines above"
    log(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
