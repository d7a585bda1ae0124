"""Guards for data that comes from elsewhere: manifest paths, downloads, archives, ids and external tools.

Everything here turns a hostile or broken input into one line that names the file, member or argument, and writes
nothing it has not checked first:

- :func:`check_contained` / :func:`contained_path`: a relative path that must stay inside a root directory (symlinks
  resolved). Clip manifests (:func:`avlib.data.clips.read_manifest`), :func:`fetch_all` and :func:`safe_extract` all
  check paths with it.
- :func:`sha256_file` / :func:`verify_checksum`: SHA-256 of a file, and the check against the value a host publishes.
- :func:`fetch_all`: a download loop over :class:`Download` items in which one failure (an error, a checksum
  mismatch) stops that file only; files already present are kept, never overwritten.
- :func:`safe_extract`: tar (any compression) and zip archives, every member checked before anything is written.
- :func:`valid_youtube_id`: the 11-character ``[A-Za-z0-9_-]`` video id.
- :func:`run_tool`: an external program (e.g. ``yt-dlp``) called with an argument list, never through a shell.

These helpers live in the library (not in ``data_scripts/``) so that the dataset scripts and the tests share one
tested copy.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class UnsafePathError(ValueError):
    """A path (in a manifest, a download list or an archive) is absolute or leaves the directory it must stay in."""


class ChecksumError(ValueError):
    """A file's SHA-256 differs from the expected one."""


class ArchiveError(ValueError):
    """An archive is unreadable, truncated, or neither tar nor zip."""


class ToolError(RuntimeError):
    """An external program is missing, failed, or ran out of time."""


# ------------------------------------------------------------------------------------------------ contained paths
def check_contained(root: str | os.PathLike, rel: object, where: str, name: str = "the clip directory",
                    dirs: dict | None = None) -> None:
    """Check that ``rel`` is a relative ``/``-separated path that stays inside ``root``; raise one line if not.

    The check is lexical (no absolute path, no ``..`` above ``root``) and real: the folders on the way and the target
    itself, when they are symlinks, are resolved, and the result must lie inside the resolved ``root``. A target that
    does not exist yet passes when its existing ancestors do.

    Args:
        root: the directory ``rel`` must stay in.
        rel: the path to check (anything that is not a non-empty string is refused).
        where: how the error names the place the path came from, e.g. ``"data/manifest.jsonl line 3: audio"``.
        name: how the error names ``root``.
        dirs: a cache (start with ``{}``) shared between calls with the same ``root``: each folder is resolved and
            listed once, so checking a whole manifest costs one ``scandir`` per folder rather than a few system calls
            per path.

    Raises:
        UnsafePathError: one line, e.g. ``data/manifest.jsonl line 3: audio path '../x.wav' leaves the clip
            directory``.
    """
    if not isinstance(rel, str) or not rel:
        raise UnsafePathError(f"{where} path must be a non-empty string, got {rel!r}")
    if "\0" in rel:
        raise UnsafePathError(f"{where} path {rel!r} contains a NUL character")
    if rel[0] == "/" or (os.sep == "\\" and (os.path.isabs(rel) or os.path.splitdrive(rel)[0])):
        raise UnsafePathError(f"{where} path {rel!r} is absolute; it must be relative to {name}")
    if os.sep == "\\" and "\\" in rel:
        raise UnsafePathError(f"{where} path {rel!r} has a backslash; write it with / between folders")
    if ".." in rel and posixpath.normpath(rel).split("/")[0] == "..":
        raise UnsafePathError(f"{where} path {rel!r} leaves {name}")
    dirs = {} if dirs is None else dirs
    if "" not in dirs:
        real_root = os.path.realpath(root)
        dirs[""] = (real_root, True, _symlinks(real_root))
    parent, _, base = rel.rpartition("/")
    real_parent, inside, links = dirs.get(parent) or _folder(root, parent, dirs)
    if inside and base not in links and base not in ("", ".", ".."):
        return
    target = os.path.realpath(os.path.join(real_parent, base))
    if not _within(target, dirs[""][0]):
        raise UnsafePathError(f"{where} path {rel!r} leaves {name} (it resolves to {target})")


def _within(path: str, real_root: str) -> bool:
    return path == real_root or path.startswith(real_root.rstrip(os.sep) + os.sep)


def _symlinks(folder: str) -> frozenset[str]:
    """Names of the symlinks in ``folder`` (empty when it is missing or not a folder: reported elsewhere)."""
    try:
        with os.scandir(folder) as it:
            return frozenset(e.name for e in it if e.is_symlink())
    except OSError:
        return frozenset()


def _folder(root: str | os.PathLike, folder: str, dirs: dict) -> tuple[str, bool, frozenset[str]]:
    """``(real path, inside root, names of the symlinks in it)`` of ``root/folder``, resolved one component at a time
    on top of its cached parent (``dirs[""]``, the root's entry, must be there)."""
    entry = dirs.get(folder)
    if entry is None:
        head, _, tail = folder.rpartition("/")
        if tail in ("", ".", ".."):
            real = os.path.realpath(os.path.join(root, folder))
        else:
            real_head, _, head_links = _folder(root, head, dirs)
            real = os.path.join(real_head, tail)
            if tail in head_links:
                real = os.path.realpath(real)
        entry = dirs[folder] = (real, _within(real, dirs[""][0]), _symlinks(real))
    return entry


def contained_path(root: str | os.PathLike, rel: object, where: str, name: str = "the clip directory",
                   dirs: dict | None = None) -> Path:
    """``root / rel``, after :func:`check_contained` (same arguments; raises :class:`UnsafePathError`)."""
    check_contained(root, rel, where, name, dirs)
    return Path(root) / rel


# ------------------------------------------------------------------------------------------------------ checksums
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, as 64 lowercase hex digits (read in ``chunk``-byte pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: str | os.PathLike, sha256: str) -> None:
    """Check that ``path`` has the SHA-256 ``sha256`` (64 hex digits, any case).

    Raises:
        ValueError: ``sha256`` is not 64 hex digits.
        FileNotFoundError: the file is missing.
        ChecksumError: one line naming the file and both digests.
    """
    if not isinstance(sha256, str) or not SHA256_HEX.fullmatch(sha256):
        raise ValueError(f"expected sha256 of {path} must be 64 hex digits, got {sha256!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cannot verify {path}: no such file")
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise ChecksumError(f"{path}: sha256 is {actual}, expected {sha256.lower()}")


# ------------------------------------------------------------------------------------------------------ downloads
@dataclass(frozen=True)
class Download:
    """One file to fetch: from ``url`` to ``path`` (relative to the destination folder), with its SHA-256 if known."""

    url: str
    path: str
    sha256: str | None = None


@dataclass
class FetchReport:
    """What :func:`fetch_all` did: files fetched now, files already present, and failures (path → one line)."""

    fetched: list[Path] = field(default_factory=list)
    present: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: counts, and the failed paths (the first five)."""
        line = f"{len(self.fetched)} fetched, {len(self.present)} already present, {len(self.failed)} failed"
        if self.failed:
            names = list(self.failed)
            line += ": " + ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return line


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fetch_all(items: Iterable[Download], dest: str | os.PathLike, download: Callable[[str, Path], None],
              log: Callable[[str], None] = _stderr) -> FetchReport:
    """Fetch every item into ``dest``; one failure stops that file only, the others go on.

    For each item: its path must stay inside ``dest`` (:func:`contained_path`). A file already there is kept: it
    counts as present when it has no checksum or the right one, and as failed (untouched, "move it away to fetch it
    again") when its checksum differs. Otherwise ``download(url, part)`` writes ``NAME.part`` beside the target (a
    part file left by an interrupted run is still there, for a downloader that resumes); the part is verified and
    then renamed into place, so a target file is always complete. A part with the wrong checksum is removed. Each
    failure is logged as one ``FAIL`` line and recorded in the report; exceptions other than ``Exception``
    (e.g. ``KeyboardInterrupt``) stop the loop.

    Args:
        items: the files.
        dest: the destination folder (created if missing).
        download: ``download(url, path)`` writes the resource at ``url`` to ``path`` or raises (e.g. a wrapper
            around ``pooch``, ``urllib`` or :func:`run_tool`).
        log: where the ``FAIL`` lines go (default: standard error).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    report, dirs = FetchReport(), {}
    for item in items:
        try:
            target = contained_path(dest, item.path, f"download {item.url!r}", "the download directory", dirs)
            if item.sha256 is not None and not SHA256_HEX.fullmatch(item.sha256):
                raise ValueError(f"expected sha256 must be 64 hex digits, got {item.sha256!r}")
            if target.exists() or target.is_symlink():
                if not target.is_file():
                    raise FileExistsError(f"{target} exists and is not a file")
                if item.sha256 is not None:
                    try:
                        verify_checksum(target, item.sha256)
                    except ChecksumError as e:
                        raise ChecksumError(f"{e}; the file is kept: move it away to fetch it again") from None
                report.present.append(target)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            download(item.url, part)
            if not part.is_file():
                raise FileNotFoundError(f"the downloader wrote nothing at {part}")
            if item.sha256 is not None:
                try:
                    verify_checksum(part, item.sha256)
                except ChecksumError as e:
                    part.unlink()
                    raise ChecksumError(f"{e} (download of {item.url} removed)") from None
            os.replace(part, target)
            report.fetched.append(target)
        except Exception as e:  # one bad file must not stop the others: record it on one line and go on
            message = " ".join(str(e).split()) or type(e).__name__
            if not isinstance(e, UnsafePathError | ChecksumError):
                message = f"{item.url}: {type(e).__name__}: {message}"
            report.failed[str(item.path)] = message
            log(f"FAIL {item.path}: {message}")
    return report


# ------------------------------------------------------------------------------------------------------- archives
def _link_rule(name: str, kind: str, target: str, links: set[str]) -> str | None:
    """Why a member is unsafe with respect to the archive's own symlinks (``None`` if it is not).

    ``links`` holds the normalised names of the archive's symlinks. A member may not be written through one of them,
    and a link's target may neither leave the archive's root nor pass through another link; this is decided on the
    names alone, so it holds whatever order the members come in.
    """
    parts = [p for p in name.split("/") if p not in ("", ".")]
    stack: list[str] = []
    for part in parts:
        if stack and "/".join(stack) in links:
            return f"is written through the symlink {'/'.join(stack)!r}"
        if part == "..":
            stack = stack[:-1]
        else:
            stack.append(part)
    if kind not in ("symlink", "hardlink"):
        return None
    if posixpath.isabs(target) or os.path.isabs(target):
        return f"is a {kind} to the absolute path {target!r}"
    walk = stack[:-1] if kind == "symlink" else []  # a symlink is relative to its folder, a hard link to the root
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not walk:
                return f"is a {kind} to {target!r}, outside the archive"
            walk.pop()
        else:
            walk.append(part)
            if "/".join(walk) in links:
                return f"is a {kind} to {target!r}, through the symlink {'/'.join(walk)!r}"
    return None


def _check_members(archive: Path, dest: Path, members: list[tuple[str, str, str]]) -> None:
    """Raise one :class:`UnsafePathError` for the first unsafe ``(name, kind, link target)`` member (and a count)."""
    links = {posixpath.normpath(n) for n, k, _ in members if k == "symlink"}
    problems, dirs = [], {}
    for name, kind, target in members:
        try:
            if kind == "special":
                raise UnsafePathError(f"{archive}: member {name!r} is a device or FIFO")
            check_contained(dest, name, f"{archive}: member", f"the extraction folder {dest}", dirs)
            why = _link_rule(name, kind, target, links)
            if why:
                raise UnsafePathError(f"{archive}: member {name!r} {why}")
        except UnsafePathError as e:
            problems.append(str(e))
    if problems:
        more = f" ({len(problems)} unsafe members in all)" if len(problems) > 1 else ""
        raise UnsafePathError(f"{problems[0]}; nothing was extracted{more}")


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isdir():
        return "dir"
    return "file" if member.isreg() else "special"


def _zip_kind(info: zipfile.ZipInfo) -> str:
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symlink"
    return "dir" if info.is_dir() else "file"


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a tar (plain, gz, bz2, xz) or zip archive into ``dest``, refusing it whole if any member is unsafe.

    Every member is checked before anything is written: no absolute names, nothing that leaves ``dest`` (also
    through a symlink already inside ``dest``), no symlink or hard link pointing outside, no member written through
    one of the archive's symlinks, no devices or FIFOs. Tar files are then extracted with Python's ``"data"`` filter
    where this Python has it (3.10.12+, 3.11.4+), which checks the same again as it writes. Zip symlink entries are
    checked like tar ones; ``zipfile`` writes them as small files holding the link's text.

    Returns the extracted paths (files, folders and links), in archive order.

    Raises:
        FileNotFoundError: no such archive.
        UnsafePathError: one line naming the archive and the first unsafe member.
        ArchiveError: not a tar or zip file, or corrupt / truncated (one line naming the archive).
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                kinds = [_zip_kind(i) for i in infos]
                _check_members(archive, dest, [(i.filename, k, zf.read(i).decode("utf-8", "replace")
                                                if k == "symlink" else "") for i, k in zip(infos, kinds, strict=True)])
                zf.extractall(dest, members=infos)
                return [dest / i.filename for i in infos]
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                _check_members(archive, dest, [(m.name, _tar_kind(m), m.linkname) for m in members])
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(dest, members=members, filter="data")
                else:  # older Pythons: the member check above is the whole guard
                    tar.extractall(dest, members=members)
                return [dest / m.name for m in members]
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        raise ArchiveError(f"{archive}: cannot extract ({type(e).__name__}: {' '.join(str(e).split())}); "
                           f"is it corrupt or truncated?") from e
    raise ArchiveError(f"{archive}: neither a tar nor a zip archive")


# --------------------------------------------------------------------------------------------- ids and tools
def valid_youtube_id(s: object) -> bool:
    """Whether ``s`` is a YouTube video id: exactly 11 characters of ``[A-Za-z0-9_-]``.

    An id may start with ``-``: on a command line, put ``--`` before it so that the tool does not read it as an
    option (``run_tool(["yt-dlp", ..., "--", video_id])``).
    """
    return isinstance(s, str) and YOUTUBE_ID.fullmatch(s) is not None


def run_tool(args: Sequence[str | os.PathLike], timeout: float | None = None,
             cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run an external program from an argument list (never a shell string) and return its completed process.

    Arguments are passed to the program as they are, so text from a download (a title, an id, a URL) can never
    become shell syntax. Standard output and error are captured as text.

    Raises:
        TypeError: ``args`` is a string or holds something other than strings and paths.
        ToolError: one line: the program is not installed, exited with a non-zero status (with the last line it
            wrote to standard error), or ran past ``timeout`` seconds.
    """
    if isinstance(args, str | bytes) or not all(isinstance(a, str | os.PathLike) for a in args) or not args:
        raise TypeError(f"run_tool takes a non-empty list of string arguments, not {args!r}")
    argv = [os.fspath(a) for a in args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)
    except FileNotFoundError:
        raise ToolError(f"{argv[0]}: program not found (is it installed and on PATH?)") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"{argv[0]}: still running after {timeout} s; stopped") from None
    if done.returncode != 0:
        last = next((line.strip() for line in reversed(done.stderr.splitlines()) if line.strip()), "no message")
        raise ToolError(f"{argv[0]} exited with status {done.returncode}: {last}")
    return done
