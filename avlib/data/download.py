"""Fetching the papers' videos and list files: resumable, parallel, retried with back-off, every loss logged.

Videos (:func:`download_videos`). Each :class:`VideoRequest` becomes ``OUT/<id>.mp4`` through a pluggable *fetcher*,
``fetch(request, part)``, which writes (or extends: resuming) the file ``part``:

- :class:`YtDlpFetcher`: YouTube through yt-dlp's Python API (``pip install yt-dlp``, or ``avlib[data]``), imported
  only when a download starts, so a machine without it gets one clear line. It asks for a single file that holds
  both streams (merging separate ones would need a system ``ffmpeg``) and resumes its own partial downloads.
- :class:`MirrorFetcher`: a folder of ``<id>.mp4`` files as the remote (a cluster's shared copy), resuming from the
  part's size; the tests' stand-in for YouTube is a subclass that can make a video vanish, fail half-way or be slow.

The loop skips videos already there, resumes parts left by a killed run, retries failures with exponential back-off,
checks every finished file with :func:`probe_video` (a truncated file is removed and fetched again), runs
``workers`` downloads at once under a progress bar, and writes one TSV line (``id``, ``status``, ``attempts``,
``reason``) per video that vanished or failed, flushed as it happens. One missing video never stops a run; the
summary says how many of the requested videos were found (the papers lost some too: 43 of MUSIC's 685 by 2020).

Files (:func:`fetch_files`): the public lists, the ontology and ESC-50's archive, fetched with :func:`url_download`
(``pooch``'s HTTP downloader, or a copy for ``file://`` URLs) through :func:`avlib.data.safety.fetch_all`: checksums
verified where known, a part file renamed into place only once verified. The hosts publish no checksums, so the
first fetch records each file's SHA-256 in ``SHA256SUMS`` beside it and later fetches (another machine, a rerun)
are checked against it: a list that changed upstream is reported, not silently used.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from avlib.data.safety import SHA256_HEX, Download, FetchReport, fetch_all, sha256_file, valid_youtube_id

__all__ = ["DownloadReport", "FlakyMirror", "MirrorFetcher", "MissingDependency", "VideoRequest", "Vanished",
           "YtDlpFetcher", "download_videos", "fetch_files", "probe_video", "read_sums", "url_download"]

LOG_HEADER = "id\tstatus\tattempts\treason\n"
SUMS = "SHA256SUMS"


class Vanished(Exception):
    """The remote says the video is gone for good (removed, private, unavailable): not retried."""


class MissingDependency(ImportError):
    """An optional package a download needs is not installed; the message says how to install it."""


@dataclass(frozen=True)
class VideoRequest:
    """One video to fetch: its id (the file is ``<id>.mp4``) and, when it is not a YouTube id, its URL."""

    id: str
    url: str | None = None

    @property
    def source(self) -> str:
        return self.url or f"https://www.youtube.com/watch?v={self.id}"


Fetcher = Callable[[VideoRequest, Path], None]


@dataclass
class DownloadReport:
    """What :func:`download_videos` did, per id: present before, fetched now, vanished or failed (with reasons)."""

    requested: int = 0
    present: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    vanished: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    log_path: Path | None = None

    @property
    def found(self) -> list[str]:
        return self.present + self.fetched

    def summary(self) -> str:
        line = (f"found {len(self.found)} of {self.requested} videos ({len(self.present)} already here, "
                f"{len(self.fetched)} fetched now); {len(self.vanished)} vanished, {len(self.failed)} failed")
        if self.duplicates:
            line += f"; {len(self.duplicates)} id(s) listed more than once, fetched once"
        if (self.vanished or self.failed) and self.log_path is not None:
            line += f" (reasons in {self.log_path})"
        return line


# ------------------------------------------------------------------------------------------------------ probing
def probe_video(path: str | os.PathLike, max_missing: float = 0.5) -> str | None:
    """Why the video file at ``path`` is unusable (one line), or ``None``.

    Opens it with PyAV and reads every packet without decoding (fast): it must have a video and an audio stream,
    and the packets must reach the end the file states within ``max_missing`` seconds. A download cut short fails
    here (an MP4 whose index is at the end does not even open).
    """
    try:
        import av
    except ImportError:
        raise MissingDependency("PyAV is needed to check videos: pip install av (or pip install 'avlib[data]')"
                                ) from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video or not container.streams.audio:
                return "it lacks a video or an audio stream"
            streams = [container.streams.video[0], container.streams.audio[0]]
            ends = {s.index: 0.0 for s in streams}
            for packet in container.demux(*streams):
                if packet.pts is not None and packet.time_base is not None:
                    t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    ends[packet.stream.index] = max(ends[packet.stream.index], t)
            for s in streams:
                stated = float(s.duration * s.time_base) if s.duration and s.time_base else \
                    (container.duration / av.time_base if container.duration else None)
                if stated is not None and stated - ends[s.index] > max_missing:
                    return (f"truncated: its {s.type} stream ends at {ends[s.index]:.2f} s but the file says "
                            f"{stated:.2f} s")
    except Exception as e:  # PyAV raises several types for broken files
        return f"cannot be read ({type(e).__name__}: {' '.join(str(e).split())})"
    return None


# ----------------------------------------------------------------------------------------------------- fetchers
class MirrorFetcher:
    """Fetch ``<id>.mp4`` from a local folder (a shared copy), in chunks, resuming from the size of ``part``.

    A missing file means the video vanished (:class:`Vanished`). ``bytes_sent`` counts what each id was sent.
    """

    def __init__(self, root: str | os.PathLike, chunk: int = 1 << 16) -> None:
        self.root = Path(root)
        self.chunk = chunk
        self.bytes_sent: Counter = Counter()
        self._lock = threading.Lock()

    def source_bytes(self, request: VideoRequest) -> bytes:
        """The bytes the remote holds for ``request`` (raises :class:`Vanished` when it holds none)."""
        path = self.root / f"{request.id}.mp4"
        if not path.is_file():
            raise Vanished("Video unavailable")
        return path.read_bytes()

    def on_chunk(self, request: VideoRequest, sent: int, total: int) -> None:
        """Called after each chunk (``sent`` of ``total`` bytes in the file so far): a hook for subclasses."""

    def __call__(self, request: VideoRequest, part: Path) -> None:
        data = self.source_bytes(request)
        offset = part.stat().st_size if part.exists() else 0
        if offset > len(data):  # not a prefix of this file: start again
            part.unlink()
            offset = 0
        with open(part, "ab") as f:
            for pos in range(offset, len(data), self.chunk):
                piece = data[pos:pos + self.chunk]
                f.write(piece)
                f.flush()
                with self._lock:
                    self.bytes_sent[request.id] += len(piece)
                self.on_chunk(request, pos + len(piece), len(data))


class FlakyMirror(MirrorFetcher):
    """A :class:`MirrorFetcher` that misbehaves like a real remote, for tests and offline demonstrations.

    Args:
        root: the folder of ``<id>.mp4``.
        vanished: ids the remote says are gone (:class:`Vanished`), even where the folder has them.
        fail_halfway: ids whose first ``fail_times`` attempts break off (``ConnectionError``) after half the file.
        truncated: ids served cut to half their size, as if complete (a broken upload).
        delay: seconds of sleep after every chunk (a slow remote).
    """

    def __init__(self, root: str | os.PathLike, vanished: Iterable[str] = (), fail_halfway: Iterable[str] = (),
                 truncated: Iterable[str] = (), delay: float = 0.0, fail_times: int = 1, chunk: int = 1 << 14) -> None:
        super().__init__(root, chunk)
        self.vanished, self.fail_halfway, self.truncated = set(vanished), set(fail_halfway), set(truncated)
        self.delay, self.fail_times = delay, fail_times
        self.attempts: Counter = Counter()

    def source_bytes(self, request: VideoRequest) -> bytes:
        if request.id in self.vanished:
            raise Vanished("Video unavailable. This video has been removed by the uploader")
        data = super().source_bytes(request)
        return data[: len(data) // 2] if request.id in self.truncated else data

    def __call__(self, request: VideoRequest, part: Path) -> None:
        with self._lock:
            self.attempts[request.id] += 1
        super().__call__(request, part)

    def on_chunk(self, request: VideoRequest, sent: int, total: int) -> None:
        if self.delay:
            time.sleep(self.delay)
        if request.id in self.fail_halfway and self.attempts[request.id] <= self.fail_times and sent >= total // 2:
            raise ConnectionError(f"connection reset after {sent} of {total} bytes")


_GONE = ("video unavailable", "private video", "has been removed", "account associated with this video has been "
         "terminated", "this video is not available", "does not exist", "copyright", "members-only", "sign in to "
         "confirm your age", "no longer available")


class YtDlpFetcher:
    """Fetch YouTube videos with yt-dlp's Python API (imported on first use).

    ``format`` asks for one file holding both streams, MP4 first, so no merging (and no system ``ffmpeg``) is
    needed. yt-dlp resumes its own ``.part`` files. Errors whose message says the video is gone (unavailable,
    private, removed, ...) raise :class:`Vanished`; others propagate and are retried by the loop.
    """

    def __init__(self, format: str = "best[ext=mp4][vcodec!=none][acodec!=none]/best[vcodec!=none][acodec!=none]",
                 options: dict | None = None) -> None:
        self.format = format
        self.options = options or {}

    @staticmethod
    def module():
        try:
            import yt_dlp
        except ImportError:
            raise MissingDependency("yt-dlp is not installed: pip install yt-dlp (or pip install 'avlib[data]')"
                                    ) from None
        return yt_dlp

    def __call__(self, request: VideoRequest, part: Path) -> None:
        yt_dlp = self.module()
        opts = {"format": self.format, "outtmpl": str(part), "quiet": True, "no_warnings": True,
                "noprogress": True, "continuedl": True, "retries": 1, "overwrites": False, "noplaylist": True,
                **self.options}
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                ydl.download([request.source])
        except yt_dlp.utils.DownloadError as e:
            message = " ".join(str(e).split())
            if any(key in message.lower() for key in _GONE):
                raise Vanished(message) from None
            raise


# ----------------------------------------------------------------------------------------------------- the loop
def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, Vanished) else f"{type(e).__name__}: {text}"


def download_videos(requests: Iterable[VideoRequest], out: str | os.PathLike, fetch: Fetcher, workers: int = 4,
                    retries: int = 3, backoff: float = 2.0, verify: Callable[[Path], str | None] | None = probe_video,
                    log_name: str = "failures.tsv", progress: bool = True,
                    sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None
                    ) -> DownloadReport:
    """Fetch every requested video to ``out/<id>.mp4``; what is there already is kept.

    Args:
        requests: the videos; an id listed twice is fetched once (counted in ``report.duplicates``). Without a URL
            an id must be a valid YouTube id (11 characters of ``[A-Za-z0-9_-]``), else it fails unfetched.
        out: the folder (created if missing).
        fetch: the backend, ``fetch(request, part)`` (:class:`YtDlpFetcher`, :class:`MirrorFetcher`).
        workers: downloads at once (threads).
        retries: attempts per video beyond the first, after failures other than :class:`Vanished` and
            :class:`MissingDependency` (which stops the run: nothing can be fetched without it).
        backoff: the wait before retry ``n`` is ``backoff * 2 ** (n - 1)`` seconds.
        verify: ``verify(path)`` says why a finished file is unusable, or ``None`` (default :func:`probe_video`);
            a file that fails is removed and fetched again; a present file that fails is fetched again too.
        log_name: the TSV of this run's vanished and failed videos, in ``out`` (rewritten each run).
        progress: show a tqdm progress bar.
        sleep, log: injectable for tests (``log`` defaults to standard error).

    Returns:
        A :class:`DownloadReport`; ``report.summary()`` is the line to print.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    report = DownloadReport(log_path=out / log_name)
    unique: dict[str, VideoRequest] = {}
    counts: Counter = Counter()
    for request in requests:
        counts[request.id] += 1
        unique.setdefault(request.id, request)
    report.requested = len(unique)
    report.duplicates = {k: n for k, n in counts.items() if n > 1}
    for k, n in report.duplicates.items():
        say(f"NOTE {k} is listed {n} times; it is fetched once")
    lock = threading.Lock()
    logf = open(report.log_path, "w")
    logf.write(LOG_HEADER)
    logf.flush()

    def record(rid: str, status: str, attempts: int, reason: str) -> None:
        with lock:
            (report.vanished if status == "vanished" else report.failed)[rid] = reason
            logf.write(f"{rid}\t{status}\t{attempts}\t{reason.replace(chr(9), ' ')}\n")
            logf.flush()
        say(f"{status.upper()} {rid}: {reason}")

    def work(request: VideoRequest) -> None:
        target = out / f"{request.id}.mp4"
        if request.url is None and not valid_youtube_id(request.id):
            record(request.id, "failed", 0, f"not a YouTube id: {request.id!r}")
            return
        if target.is_file():
            problem = verify(target) if verify else None
            if problem is None:
                with lock:
                    report.present.append(request.id)
                return
            say(f"REFETCH {request.id}: the file here is unusable ({problem})")
            target.unlink()
        part = target.with_name(target.name + ".part")
        attempt, reason = 0, ""
        while attempt <= retries:
            attempt += 1
            try:
                fetch(request, part)
                if not part.is_file():
                    raise FileNotFoundError(f"the fetcher wrote nothing at {part}")
                problem = verify(part) if verify else None
                if problem:
                    part.unlink()  # resuming a broken file cannot mend it
                    raise OSError(f"the downloaded file is unusable: {problem}")
                os.replace(part, target)
                with lock:
                    report.fetched.append(request.id)
                return
            except Vanished as e:
                part.unlink(missing_ok=True)
                record(request.id, "vanished", attempt, _one_line(e))
                return
            except MissingDependency:
                raise
            except Exception as e:  # anything else may be transient: wait and try again, resuming the part
                reason = _one_line(e)
                if attempt <= retries:
                    say(f"RETRY {request.id} (attempt {attempt} of {retries + 1}): {reason}")
                    sleep(backoff * 2 ** (attempt - 1))
        record(request.id, "failed", attempt, reason)

    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(unique), desc="videos", unit="video", disable=not progress)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(work, r) for r in unique.values()]
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        bar.close()
    finally:
        logf.close()
    return report


# ------------------------------------------------------------------------------------------------------- files
def url_download(url: str, path: Path) -> None:
    """Write the resource at ``url`` to ``path``: ``file://`` URLs are copied, others fetched with pooch's HTTP
    downloader (``pip install pooch``, or ``avlib[data]``)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        shutil.copyfile(urllib.parse.unquote(parsed.path), path)
        return
    try:
        import pooch
    except ImportError:
        raise MissingDependency("pooch is not installed: pip install pooch (or pip install 'avlib[data]')") from None
    pooch.HTTPDownloader(progressbar=False, timeout=60)(url, str(path), None)


def read_sums(folder: str | os.PathLike) -> dict[str, str]:
    """``path -> sha256`` from ``folder/SHA256SUMS`` (``sha256sum`` format: digest, two spaces, path)."""
    path = Path(folder) / SUMS
    sums: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if SHA256_HEX.fullmatch(digest) and name:
                sums[name] = digest.lower()
    return sums


def fetch_files(items: Sequence[Download], dest: str | os.PathLike,
                download: Callable[[str, Path], None] = url_download,
                log: Callable[[str], None] | None = None) -> FetchReport:
    """Fetch list files into ``dest`` with :func:`avlib.data.safety.fetch_all`, checked against ``SHA256SUMS``.

    An item's own ``sha256`` wins; else the digest recorded in ``dest/SHA256SUMS`` by an earlier fetch is used.
    Every file fetched now is recorded there, so the next run (or another machine given the same ``SHA256SUMS``)
    notices a file that changed. A mismatch fails that file only, with both digests, and nothing is renamed into
    place.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sums = read_sums(dest)
    checked = [Download(d.url, d.path, d.sha256 or sums.get(d.path)) for d in items]
    report = fetch_all(checked, dest, download, log=log or (lambda m: print(m, file=sys.stderr, flush=True)))
    for item in items:
        target = dest / item.path
        if item.path not in sums and target in report.fetched + report.present:
            sums[item.path] = sha256_file(target)
    (dest / SUMS).write_text("".join(f"{d}  {p}\n" for p, d in sorted(sums.items())))
    return report
