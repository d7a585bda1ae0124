"""Real video files to avlib's clip format with PyAV: decode, cut, resample, write; and SynthOrchestra scenes to MP4.

PyAV (``pip install av``, part of the ``data`` extra) carries its own FFmpeg libraries, so nothing here needs a
system-wide ``ffmpeg``. The module imports without PyAV; the functions that need it say so in one line.

- :func:`decode_video`: the first video and audio streams of a file in one pass, frames sampled at ``fps`` and
  scaled to a short side, audio down-mixed and resampled to a mono waveform, optionally only the segment
  ``[start, end)`` (AudioSet's and Kinetics' 10 s segments of a longer video). Truncated files are refused.
- :func:`clip_spans` / :func:`write_clip_folders`: cut a decoded video into clips and write each clip's folder
  (``clips/<id>/audio.wav`` and ``frames/NNNNNN.png``) atomically, returning the manifest rows.
- :func:`videos_to_clips`: the loop the dataset scripts share: many videos, each cut into clips with its split
  and labels, appended to ``manifest.jsonl``; idempotent (clips already in the manifest are skipped), and one
  unusable video never stops the run.
- :func:`encode_mp4` / :func:`scene_to_mp4`: write frames and a waveform as an MP4 (H.264 video, AAC audio), e.g. a
  SynthOrchestra scene, for tests that need real video files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

MANIFEST = "manifest.jsonl"
CLIPS = "clips"


class UnusableVideo(Exception):
    """A video that cannot become clips; the message says why, on one line."""


def _av():
    try:
        import av
    except ImportError:  # the data extra is optional
        raise ImportError("PyAV is needed to decode and encode video: pip install av (or pip install 'avlib[data]')"
                          ) from None
    return av


def _resize(image: Image.Image, size: int) -> Image.Image:
    if size <= 0:
        return image
    w, h = image.size
    scale = size / min(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)


def truncation(container: Any, streams: Sequence[Any], ends: Sequence[float | None], max_missing: float) -> str | None:
    """Why the decoded ``streams`` (which ended at times ``ends``, in s; ``None``: no timestamps) look truncated, or
    ``None``.

    Each stream with a stated duration must reach its own stated end; when no stream states one, the longer stream
    must reach the container's stated end. Nothing is checked where a duration or a decoded end is unknown.
    """
    av = _av()
    for name, s, end in zip(("video", "audio"), streams, ends, strict=True):
        if s.duration is not None and s.time_base is not None and end is not None:
            want = float(((s.start_time or 0) + s.duration) * s.time_base)
            if want - end > max_missing:
                return f"the {name} stream ends at {end:.2f} s but the file says {want:.2f} s"
    known = [end for end in ends if end is not None]
    if all(s.duration is None for s in streams) and container.duration is not None and known:
        want = ((container.start_time or 0) + container.duration) / av.time_base
        if want - max(known) > max_missing:
            return f"the streams end at {max(known):.2f} s but the file says {want:.2f} s"
    return None


def decode_video(path: str | os.PathLike, fps: float, size: int, sample_rate: int, max_missing: float = 0.5,
                 start: float = 0.0, end: float | None = None) -> tuple[np.ndarray, dict[int, Image.Image]]:
    """Decode the first video and audio streams of ``path`` in one pass: ``audio (N,)`` float32 mono at
    ``sample_rate``, and ``frames`` ``{k: image}``.

    Times count from the first decoded video frame. Frames are sampled at ``fps``: frame ``k`` is the first decoded
    frame whose time is ``>= start + k / fps``, resized to short side ``size`` (0 keeps the size). Audio is
    down-mixed to mono, resampled to ``sample_rate`` and cut to the same ``[start, end)``.

    Without ``end`` the whole file is read and must reach the end its container states, within ``max_missing``
    seconds (a truncated MKV or MP4 is refused rather than turned into a shorter clip). With ``end`` decoding stops
    once both streams passed it, and the streams must reach ``end`` (within ``max_missing``).

    Raises:
        UnusableVideo: a stream is missing or empty, the file is truncated, or the segment lies beyond its end.
    """
    av = _av()
    if end is not None and not end > start >= 0:
        raise ValueError(f"decode_video: need 0 <= start < end; got start={start}, end={end}")
    frames: dict[int, Image.Image] = {}
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise UnusableVideo("no video stream")
        if not container.streams.audio:
            raise UnusableVideo("no audio stream")
        vstream, astream = container.streams.video[0], container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        origin = audio_origin = None
        video_end = audio_end = None
        frame_period = 1.0 / float(vstream.average_rate) if vstream.average_rate else 0.0
        for packet in container.demux(vstream, astream):
            for frame in packet.decode():
                if isinstance(frame, av.AudioFrame):
                    if frame.time is not None:
                        audio_origin = frame.time if audio_origin is None else audio_origin
                        audio_end = frame.time + frame.samples / frame.sample_rate
                    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
                    continue
                if frame.time is None:
                    continue
                video_end = frame.time + frame_period
                origin = frame.time if origin is None else origin
                k = int(np.ceil((frame.time - origin - start) * fps - 1e-6))
                # this decoded frame is the first at or after time start + k / fps for every k not yet filled
                first = max(frames) + 1 if frames else 0
                if k < first or (end is not None and frame.time - origin >= end):
                    continue
                image = _resize(frame.to_image(), size)
                for j in range(first, k + 1):
                    frames[j] = image
            if end is not None and None not in (video_end, audio_end, origin) and \
                    min(video_end, audio_end) - origin >= end:
                break
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))  # flush its buffer
        if not frames:
            raise UnusableVideo("the video stream decodes to no frames" if end is None else
                                f"no video frame in the segment [{start:g}, {end:g}) s")
        if not chunks:
            raise UnusableVideo("the audio stream decodes to no samples")
        if end is None:
            why = truncation(container, [vstream, astream], [video_end, audio_end], max_missing)
        else:
            reached = min(x - origin for x in (video_end, audio_end) if x is not None)
            why = None if end - reached <= max_missing else \
                f"the streams end at {reached:.2f} s, before the segment's end {end:g} s"
    if why:
        raise UnusableVideo(f"truncated? {why} (more than {max_missing:g} s missing)")
    audio = np.concatenate(chunks).astype(np.float32)
    shift = (audio_origin or 0.0) - (origin or 0.0)  # audio that starts later than the video is padded in front
    s0 = int(round((start - shift) * sample_rate))
    if s0 < 0:
        audio, s0 = np.concatenate([np.zeros(-s0, np.float32), audio]), 0
    s1 = audio.size if end is None else min(audio.size, int(round((end - shift) * sample_rate)))
    return audio[s0:s1], frames


def clip_spans(duration: float, clip_seconds: float) -> list[tuple[float, float]]:
    """The ``(start, end)`` times (s) of the non-overlapping ``clip_seconds`` clips of ``duration`` seconds of
    video (one clip of the whole when ``clip_seconds`` is 0)."""
    if clip_seconds <= 0:
        return [(0.0, duration)]
    n_clips = int(duration // clip_seconds + 1e-9)
    if n_clips == 0:
        raise UnusableVideo(f"{duration:.2f} s is shorter than a clip ({clip_seconds:g} s)")
    return [(c * clip_seconds, (c + 1) * clip_seconds) for c in range(n_clips)]


def write_clip_folders(audio: np.ndarray, frames: dict[int, Image.Image], out: str | os.PathLike,
                       ids: Sequence[str], spans: Sequence[tuple[float, float]], fps: float, sample_rate: int,
                       image_format: str = "png", row: dict | None = None) -> list[dict]:
    """Write the clip folders of one decoded video and return their manifest rows (``row``'s fields added to each).

    Clip ``ids[c]`` gets the audio and frames of ``spans[c]``. Each folder is built in ``clips/.partial-ID`` and
    renamed into place, never over an existing folder (:class:`UnusableVideo` names it); on any error, Ctrl-C
    included, no half-written folder is left behind.
    """
    out = Path(out)
    n_frames = max(frames) + 1
    for cid in ids:
        if (out / CLIPS / cid).exists():
            raise UnusableVideo(f"{out / CLIPS / cid} exists but is not in the manifest (left by an interrupted "
                                f"run?); remove it to prepare this video again")
    rows, partials = [], [out / CLIPS / f".partial-{cid}" for cid in ids]
    try:
        for cid, partial, (t0, t1) in zip(ids, partials, spans, strict=True):
            if partial.exists():  # our own leftover from an interrupted run
                shutil.rmtree(partial)
            (partial / "frames").mkdir(parents=True)
            s0, s1 = int(round(t0 * sample_rate)), min(audio.size, int(round(t1 * sample_rate)))
            sf.write(partial / "audio.wav", audio[s0:s1], sample_rate, subtype="PCM_16")
            k0 = int(round(t0 * fps))
            ks = [k for k in range(k0, n_frames) if k / fps < t1 - 1e-9]
            names = [f"{k - k0:06d}.{image_format}" for k in ks]
            for k, name in zip(ks, names, strict=True):
                frames[k].convert("RGB").save(partial / "frames" / name)
            rel = Path(CLIPS) / cid
            rows.append({
                "id": cid, "audio": (rel / "audio.wav").as_posix(),
                "frames": [(rel / "frames" / name).as_posix() for name in names],
                "frame_indices": [k - k0 for k in ks], "fps": fps, "sample_rate": sample_rate,
                "num_samples": s1 - s0, "duration": (s1 - s0) / sample_rate, **(row or {}), "start": t0,
            })
        for cid, partial in zip(ids, partials, strict=True):
            os.rename(partial, out / CLIPS / cid)
    except BaseException:
        for partial in partials:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    return rows


# ------------------------------------------------------------------------------------------- many videos to clips
@dataclass(frozen=True)
class ClipJob:
    """One video to cut into clips: ``base_id`` names its clips (``base_id`` alone, or ``base_id_0000``, ... when
    cut), ``row`` holds the fields every clip row gets (``split``, ``label``, ...), and ``[start, end)`` the segment
    of the file to use (``end=None``: to its end)."""

    path: Path
    base_id: str
    row: dict = field(default_factory=dict)
    start: float = 0.0
    end: float | None = None


@dataclass
class ClipReport:
    """What :func:`videos_to_clips` did: videos written now, already in the manifest, and skipped (id → reason)."""

    written: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    clips: int = 0

    def summary(self) -> str:
        line = (f"{len(self.written)} video(s) → {self.clips} clip(s) written, {len(self.present)} already in the "
                f"manifest, {len(self.skipped)} skipped")
        if self.skipped:
            names = list(self.skipped)
            line += ": " + ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return line


def manifest_ids(out: str | os.PathLike) -> set[str]:
    """The clip ids of ``out/manifest.jsonl`` (empty when there is none); a line that is not a clip row is refused
    with its number."""
    path = Path(out) / MANIFEST
    ids: set[str] = set()
    if not path.exists():
        return ids
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {n}: not valid JSON ({e.msg}); fix or remove that line") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise ValueError(f"{path} line {n}: not a clip row (a JSON object with an id)")
        ids.add(row["id"])
    return ids


def videos_to_clips(jobs: Iterable[ClipJob], out: str | os.PathLike, fps: float = 25.0, sample_rate: int = 16000,
                    size: int = 256, clip_seconds: float = 0.0, image_format: str = "png",
                    max_missing: float = 0.5, log: Callable[[str], None] = print) -> ClipReport:
    """Cut every job's video into clips under ``out`` and append their rows to ``out/manifest.jsonl``.

    Idempotent: a job whose clips are in the manifest already (``base_id`` or ``base_id_0000``) is left alone, so a
    rerun after an interruption finishes the job without duplicate rows. A video that cannot be used (missing,
    truncated, too short, no audio...) gets one ``SKIP`` line through ``log`` and the others go on. Each video's rows
    are appended and flushed as soon as its folders are in place.
    """
    out = Path(out)
    (out / CLIPS).mkdir(parents=True, exist_ok=True)
    known = manifest_ids(out)
    report = ClipReport()
    manifest = out / MANIFEST
    needs_newline = manifest.exists() and manifest.stat().st_size > 0 and not manifest.read_bytes().endswith(b"\n")
    with open(manifest, "a") as f:
        if needs_newline:
            f.write("\n")
        for job in jobs:
            if job.base_id in known or f"{job.base_id}_0000" in known:
                report.present.append(job.base_id)
                continue
            try:
                if not Path(job.path).is_file():
                    raise UnusableVideo(f"no such file {job.path}")
                audio, frames = decode_video(job.path, fps, size, sample_rate, max_missing, job.start, job.end)
                duration = min(audio.size / sample_rate, (max(frames) + 1) / fps)
                spans = clip_spans(duration, clip_seconds)
                ids = [job.base_id] if clip_seconds <= 0 else [f"{job.base_id}_{c:04d}" for c in range(len(spans))]
                rows = write_clip_folders(audio, frames, out, ids, spans, fps, sample_rate, image_format,
                                          {"split": "train", **job.row, "source": str(job.path),
                                           "source_start": job.start})
            except Exception as e:  # one unusable video must not stop the run
                reason = " ".join(str(e).split()) or type(e).__name__
                reason = reason if isinstance(e, UnusableVideo) else f"{type(e).__name__}: {reason}"
                report.skipped[job.base_id] = reason
                log(f"SKIP {job.base_id} ({job.path}): {reason}")
                continue
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.flush()
            known.update(ids)
            report.written.append(job.base_id)
            report.clips += len(rows)
    return report


def write_audio_clip(audio: np.ndarray, out: str | os.PathLike, clip_id: str, sample_rate: int,
                     row: dict | None = None) -> dict:
    """Write an audio-only clip (``clips/<id>/audio.wav``, no frames) and return its manifest row; the folder is
    written to ``clips/.partial-ID`` and renamed into place."""
    out = Path(out)
    final, partial = out / CLIPS / clip_id, out / CLIPS / f".partial-{clip_id}"
    if final.exists():
        raise UnusableVideo(f"{final} exists but is not in the manifest; remove it to write this clip again")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        sf.write(partial / "audio.wav", audio, sample_rate, subtype="PCM_16")
        os.rename(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {"id": clip_id, "audio": f"{CLIPS}/{clip_id}/audio.wav", "frames": [], "frame_indices": [],
            "fps": 0.0, "sample_rate": sample_rate, "num_samples": int(audio.size),
            "duration": audio.size / sample_rate, "split": "train", **(row or {})}


def decode_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """The first audio stream of ``path`` (WAV, OGG, MP3, a video...) as mono float32 at ``sample_rate``, with
    PyAV's resampler. Raises :class:`UnusableVideo` when it has no audio."""
    av = _av()
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise UnusableVideo("no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in container.decode(container.streams.audio[0]):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    if not chunks:
        raise UnusableVideo("the audio stream decodes to no samples")
    return np.concatenate(chunks).astype(np.float32)


# -------------------------------------------------------------------------------------------------- encoding MP4
def encode_mp4(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int) -> Path:
    """Write ``frames (T, H, W, 3)`` uint8 and a mono ``audio (N,)`` waveform in [-1, 1] as an MP4 with H.264 video
    (yuv420p, so ``H`` and ``W`` must be even) and AAC audio. Returns the path."""
    av = _av()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"encode_mp4: frames must be (T, H, W, 3) with even H and W; got {frames.shape}")
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=int(round(fps)))
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"
        for image in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        chunk = av.AudioFrame.from_ndarray(np.clip(audio, -1, 1).astype(np.float32)[None], format="fltp",
                                           layout="mono")
        chunk.sample_rate, chunk.pts = sample_rate, 0
        for packet in [*sound.encode(chunk), *sound.encode(None)]:
            container.mux(packet)
    return path


def scene_to_mp4(scene: Any, path: str | os.PathLike) -> Path:
    """Write a SynthOrchestra :class:`~avlib.data.synthetic.Scene` (all its frames and its mixture) as an MP4."""
    frames = (scene.frames.clamp(0, 1) * 255).round().to("cpu").byte().permute(0, 2, 3, 1).numpy()
    peak = float(scene.audio.abs().max()) or 1.0
    audio = scene.audio.cpu().numpy() / max(peak, 1.0)
    return encode_mp4(path, frames, audio, scene.fps, scene.sample_rate)
