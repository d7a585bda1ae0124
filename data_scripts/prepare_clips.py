"""Convert a folder of real video files into avlib's clip format (manifest.jsonl + mono WAV + PNG/JPEG frames).

Usage::

    python data_scripts/prepare_clips.py VIDEOS_DIR OUT_DIR [--fps 25] [--sample-rate 16000] [--size 256]
        [--clip-seconds 1] [--split train] [--labels-from-dirs] [--image-format png] [--append]

Every video under ``VIDEOS_DIR`` (recursively: mp4, mkv, webm, avi, mov, m4v, flv) is decoded with PyAV: frames are
sampled at ``--fps`` (frame number ``k`` is the first decoded frame at or after ``k / fps``, the sampling the papers'
25 fps data uses), scaled so the short side is ``--size`` (0 keeps the size), and the first audio stream is down-mixed
and resampled to a mono WAV at ``--sample-rate``. ``--clip-seconds L`` cuts each video into non-overlapping ``L``-second
clips (DSOL's one-second clips); without it each video is one clip. With ``--labels-from-dirs`` a video's label is its
parent folder (the labels are numbered in sorted order).

A file that cannot be read (no audio or video stream, a decoding error, too short) is logged on its own line, starting
with ``SKIP``, and the run goes on; the exit status is 1 only when no clip at all could be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv"}
MANIFEST = "manifest.jsonl"  # the name avlib.data.clips reads (kept here so the script runs without avlib)


def log(message: str) -> None:
    print(f"[prepare_clips] {message}", file=sys.stderr, flush=True)


def decode_audio(path: Path, sample_rate: int) -> np.ndarray:
    """The first audio stream of ``path`` as mono float32 at ``sample_rate``."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks = []
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):  # flush the resampler's buffer
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        raise ValueError("the audio stream decodes to no samples")
    return np.concatenate(chunks).astype(np.float32)


def decode_frames(path: Path, fps: float, size: int) -> dict[int, Image.Image]:
    """Frames sampled at ``fps``: ``{k: image}`` with frame ``k`` the first decoded frame whose time is ``>= k / fps``
    (times relative to the first frame), resized to short side ``size`` (0 keeps the size)."""
    frames: dict[int, Image.Image] = {}
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        start = None
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            start = frame.time if start is None else start
            t = frame.time - start
            k = int(np.ceil(t * fps - 1e-6))
            # this decoded frame is the first at or after time k / fps for every k not yet filled up to here
            first = max(frames) + 1 if frames else 0
            if k < first:
                continue
            image = frame.to_image()
            if size > 0:
                w, h = image.size
                scale = size / min(w, h)
                image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
            for j in range(first, k + 1):
                frames[j] = image
    if not frames:
        raise ValueError("the video stream decodes to no frames")
    return frames


def prepare_video(path: Path, out: Path, clip_id: str, args: argparse.Namespace, label: int | None,
                  label_name: str | None) -> list[dict]:
    """Decode one video and write its clip(s); returns the manifest rows."""
    audio = decode_audio(path, args.sample_rate)
    frames = decode_frames(path, args.fps, args.size)
    n_frames = max(frames) + 1
    duration = min(audio.size / args.sample_rate, n_frames / args.fps)
    if args.clip_seconds > 0:
        n_clips = int(duration // args.clip_seconds)
        if n_clips == 0:
            raise ValueError(f"{duration:.2f} s is shorter than --clip-seconds {args.clip_seconds}")
        spans = [(c * args.clip_seconds, (c + 1) * args.clip_seconds) for c in range(n_clips)]
    else:
        spans = [(0.0, audio.size / args.sample_rate)]
    rows = []
    for c, (t0, t1) in enumerate(spans):
        cid = clip_id if len(spans) == 1 and args.clip_seconds <= 0 else f"{clip_id}_{c:04d}"
        rel = Path("clips") / cid
        (out / rel / "frames").mkdir(parents=True, exist_ok=True)
        s0, s1 = int(round(t0 * args.sample_rate)), min(audio.size, int(round(t1 * args.sample_rate)))
        sf.write(out / rel / "audio.wav", audio[s0:s1], args.sample_rate, subtype="PCM_16")
        k0 = int(round(t0 * args.fps))
        ks = [k for k in range(k0, n_frames) if k / args.fps < t1 - 1e-9]
        paths = []
        for k in ks:
            p = rel / "frames" / f"{k - k0:06d}.{args.image_format}"
            frames[k].convert("RGB").save(out / p)
            paths.append(p.as_posix())
        rows.append({
            "id": cid, "audio": (rel / "audio.wav").as_posix(), "frames": paths,
            "frame_indices": [k - k0 for k in ks], "fps": args.fps, "sample_rate": args.sample_rate,
            "num_samples": s1 - s0, "duration": (s1 - s0) / args.sample_rate, "split": args.split,
            "label": label, "label_name": label_name, "source": str(path), "start": t0,
        })
    return rows


def find_videos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", type=Path, help="folder of video files (searched recursively)")
    parser.add_argument("out", type=Path, help="output clip directory")
    parser.add_argument("--fps", type=float, default=25.0, help="frame sampling rate (default 25)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="audio sample rate in Hz (default 16000)")
    parser.add_argument("--size", type=int, default=256, help="short side of saved frames in pixels (0: keep)")
    parser.add_argument("--clip-seconds", type=float, default=0.0, help="cut videos into clips of this length")
    parser.add_argument("--split", default="train", help="split name written to the manifest (default train)")
    parser.add_argument("--labels-from-dirs", action="store_true", help="label each video by its parent folder")
    parser.add_argument("--image-format", choices=("png", "jpg"), default="png")
    parser.add_argument("--append", action="store_true", help="add to an existing manifest")
    args = parser.parse_args(argv)

    if not args.videos.is_dir():
        log(f"ERROR input folder not found: {args.videos}")
        return 1
    if args.fps <= 0 or args.sample_rate <= 0:
        log(f"ERROR --fps and --sample-rate must be positive (got {args.fps}, {args.sample_rate})")
        return 1
    manifest = args.out / MANIFEST
    if manifest.exists() and not args.append:
        log(f"ERROR {manifest} exists; pass --append to add clips to it")
        return 1
    videos = find_videos(args.videos)
    if not videos:
        log(f"ERROR no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) under {args.videos}")
        return 1
    names = sorted({v.parent.relative_to(args.videos).as_posix() for v in videos})
    args.out.mkdir(parents=True, exist_ok=True)
    n_ok, n_bad, n_clips = 0, 0, 0
    with open(manifest, "a" if args.append else "w") as f:
        for video in videos:
            rel = video.relative_to(args.videos)
            clip_id = "_".join(rel.with_suffix("").parts).replace(" ", "_")
            name = rel.parent.as_posix() if args.labels_from_dirs else None
            try:
                rows = prepare_video(video, args.out, clip_id, args, names.index(name) if name else None, name)
            except Exception as e:  # one unreadable video must not stop the run: log it and go on
                n_bad += 1
                log(f"SKIP {video}: {type(e).__name__}: {e}")
                continue
            for row in rows:
                f.write(json.dumps(row) + "\n")
            n_ok, n_clips = n_ok + 1, n_clips + len(rows)
    log(f"done: {n_ok} video(s) → {n_clips} clip(s) in {args.out}; {n_bad} skipped")
    return 0 if n_clips else 1


if __name__ == "__main__":
    sys.exit(main())
