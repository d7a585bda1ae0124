"""A run directory is owned: one trainer at a time, and an existing run is never replaced without being asked."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import warnings
from pathlib import Path

__all__ = ["RunDirError", "RunLock", "claim_run_dir"]

LOCK_NAME = ".lock"
RUN_FILES = ("metrics.jsonl", "summary.json", "config.json")
OLD_CHECKPOINT = "last.pt"  # what avlib wrote before verified step_*.pt checkpoints


class RunDirError(RuntimeError):
    """The run directory holds another run, or another process is training in it."""


def _holds_a_run(out_dir: Path) -> bool:
    return (any((out_dir / name).exists() for name in (*RUN_FILES, OLD_CHECKPOINT)) or any(out_dir.glob("step_*.pt"))
            or any(p.is_dir() and (p / "metrics.jsonl").exists() for p in out_dir.iterdir()))


def claim_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Check that a run may start in ``out_dir``: refuse (one line) where a run exists and neither ``resume`` nor
    ``overwrite`` was given; with ``overwrite``, clear the earlier run's files first."""
    if not out_dir.is_dir() or not _holds_a_run(out_dir):
        return
    if resume:
        if (out_dir / OLD_CHECKPOINT).is_file() and not any(out_dir.glob("step_*.pt")):
            raise RunDirError(f"{out_dir} holds {OLD_CHECKPOINT}, a checkpoint in the format of an older avlib, which "
                              "this version does not load (no verified header): pass --overwrite to train the run "
                              "again, or choose another --out (nothing was changed)")
        return
    if not overwrite:
        raise RunDirError(f"{out_dir} already holds a run: pass --resume to continue it or --overwrite to replace it "
                          "(nothing was changed)")
    for p in out_dir.iterdir():
        if p.name == LOCK_NAME:
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()


class RunLock:
    """An exclusive lock on ``out_dir/.lock`` (holder's pid and host written in it), held for the whole run.

    The operating system releases the lock of a process that died; its file then still names the dead holder, and
    the next run takes it over with a warning. A run refused inside the lock (:class:`RunDirError`) removes a lock
    file it created, so that a refused run leaves the directory as it found it.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self.created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise RunDirError(f"{self.path.parent} is in use by a running trainer ({holder}); wait for it or "
                                  "choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the file was removed (by a refused run, below) between the open and the lock: again
        old = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if old:
            warnings.warn(f"{self.path}: taking over the lock left by {old}, which is no longer running", stacklevel=2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self.fd is not None:
            if self.created and exc_type is not None and issubclass(exc_type, RunDirError):
                self.path.unlink(missing_ok=True)  # a refused run leaves the directory as it found it
            else:
                os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
