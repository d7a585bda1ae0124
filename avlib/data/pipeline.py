"""What the dataset scripts (``data_scripts/*.py``) share: their download arguments, list files, and the run from
published ids to clips.

A script turns its dataset's lists into :class:`Planned` videos (an id, the segment to use, the clip row fields);
:func:`run_videos` fetches them (:func:`avlib.data.download.download_videos`, yt-dlp or a ``--mirror`` folder), cuts
what was found into clips (:func:`avlib.data.video.videos_to_clips`), and prints one summary that says how many of the
paper's videos were found. :func:`get_lists` fetches the list files (or uses the ones already there), checked against
the ``SHA256SUMS`` recorded by the first fetch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from avlib.data.download import (
    MirrorFetcher,
    MissingDependency,
    VideoRequest,
    YtDlpFetcher,
    download_videos,
    fetch_files,
)
from avlib.data.safety import Download
from avlib.data.video import ClipJob, videos_to_clips

__all__ = ["Planned", "add_common_args", "get_lists", "run_videos", "say"]


def say(script: str, message: str) -> None:
    print(f"[{script}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Planned:
    """One video a paper uses: its YouTube id, the clips' ``base_id``, the segment and the clip row fields."""

    video_id: str
    base_id: str
    row: dict = field(default_factory=dict)
    start: float = 0.0
    end: float | None = None


def add_common_args(parser: argparse.ArgumentParser, fps: float = 25.0, sample_rate: int = 16000, size: int = 256,
                    clip_seconds: float = 0.0) -> None:
    """The arguments every dataset script takes (output, lists, download, clip format)."""
    parser.add_argument("--out", type=Path, required=True, help="output clip directory (manifest.jsonl, clips/)")
    parser.add_argument("--lists", type=Path, help="folder of the list files (default OUT/lists); files already "
                        "there are used, the others fetched")
    parser.add_argument("--list-base", help="fetch the list files from this URL prefix instead of their hosts "
                        "(a mirror; file:// works)")
    parser.add_argument("--videos", type=Path, help="folder of the downloaded videos (default OUT/videos)")
    parser.add_argument("--mirror", type=Path, help="fetch videos from this folder of <id>.mp4 instead of YouTube")
    parser.add_argument("--no-download", action="store_true", help="use only the videos already downloaded")
    parser.add_argument("--workers", type=int, default=4, help="downloads at once (default 4)")
    parser.add_argument("--retries", type=int, default=3, help="retries per video after a failure (default 3)")
    parser.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry, doubling")
    parser.add_argument("--limit", type=int, help="only the first N videos of the plan (a quick trial)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--fps", type=float, default=fps, help=f"frame rate of the stored frames (default {fps:g})")
    parser.add_argument("--sample-rate", type=int, default=sample_rate, help=f"audio rate (default {sample_rate})")
    parser.add_argument("--size", type=int, default=size, help=f"short side of stored frames (default {size}; 0 keeps)")
    parser.add_argument("--clip-seconds", type=float, default=clip_seconds,
                        help=f"cut videos into clips of this length (default {clip_seconds:g}; 0: one clip)")
    parser.add_argument("--image-format", choices=("png", "jpg"), default="jpg")


def get_lists(script: str, args: argparse.Namespace, files: dict[str, str]) -> dict[str, Path] | None:
    """The list files ``{name: url}`` in ``args.lists`` (fetched if missing, from ``--list-base`` if given), or
    ``None`` after printing why one could not be had (the script then stops: exit status 1)."""
    folder = args.lists or args.out / "lists"
    base = args.list_base.rstrip("/") + "/" if args.list_base else None
    items = [Download(base + name if base else url, name) for name, url in files.items()]
    try:
        report = fetch_files(items, folder, log=lambda m: say(script, m))
    except MissingDependency as e:
        say(script, f"ERROR {e}")
        return None
    if report.failed:
        say(script, f"ERROR {len(report.failed)} list file(s) could not be used ({', '.join(report.failed)}): see "
                    f"the FAIL lines above")
        return None
    return {name: folder / name for name in files}


def run_videos(script: str, args: argparse.Namespace, planned: Sequence[Planned], paper_total: int | None = None
               ) -> int:
    """Fetch the planned videos, cut the found ones into clips, print the summary; the exit status.

    The status is 0 when every video was found or vanished (the remote says it is gone: the papers lost videos
    too), and 1 when any failed otherwise (after its retries) or could not be cut; the reasons are in
    ``VIDEOS/failures.tsv`` and on the ``SKIP`` lines.
    """
    videos = args.videos or args.out / "videos"
    planned = list(planned)[: args.limit] if args.limit else list(planned)
    requests = [VideoRequest(p.video_id) for p in planned]
    if args.no_download:
        have = {p.video_id for p in planned if (videos / f"{p.video_id}.mp4").is_file()}
        line = f"found {len(have)} of {len({p.video_id for p in planned})} videos in {videos} (--no-download)"
        failed = 0
    else:
        fetcher = MirrorFetcher(args.mirror) if args.mirror else YtDlpFetcher()
        try:
            report = download_videos(requests, videos, fetcher, workers=args.workers, retries=args.retries,
                                     backoff=args.backoff, progress=not args.no_progress,
                                     log=lambda m: say(script, m))
        except MissingDependency as e:
            say(script, f"ERROR {e}")
            return 1
        have, line, failed = set(report.found), report.summary(), len(report.failed)
    jobs = [ClipJob(videos / f"{p.video_id}.mp4", p.base_id, p.row, p.start, p.end) for p in planned
            if p.video_id in have]
    clips = videos_to_clips(jobs, args.out, fps=args.fps, sample_rate=args.sample_rate, size=args.size,
                            clip_seconds=args.clip_seconds, image_format=args.image_format,
                            log=lambda m: say(script, m))
    say(script, f"videos: {line}")
    say(script, f"clips: {clips.summary()}")
    if paper_total is not None:
        say(script, f"the paper's list: {len(have)} of {paper_total} videos found")
    return 1 if failed or clips.skipped else 0
