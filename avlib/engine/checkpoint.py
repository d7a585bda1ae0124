"""Checkpoints that cannot run code, cannot be half-written and cannot be silently corrupt.

A checkpoint file is ``MAGIC``, the SHA-256 of the payload (64 hex digits and a newline), then the payload: a
``torch.save`` of plain containers, numbers, strings and tensors only, so that it loads with ``weights_only=True``
(no arbitrary unpickling; PyTorch's safe loader). It is written to a temporary file, fsynced and renamed into place,
so the hash and the payload appear together or not at all. A run directory keeps the last ``keep`` checkpoints,
``step_00001234.pt``; loading a run directory takes the newest one whose hash verifies and falls back, with a warning
naming both files, to an older one when the newest is corrupt.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "checkpoint_path",
    "find_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
]

MAGIC = b"AVLIB-CHECKPOINT-1\n"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, unsafe to load, or does not fit what was asked of it."""


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """``run_dir/step_00001234.pt``."""
    return Path(run_dir) / f"step_{step:08d}.pt"


def find_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoint files of a run directory, oldest step first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: Mapping[str, Any], path: str | Path, keep: int | None = None) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file beside it, fsync, rename), with its hash.

    A crash at any moment leaves either the previous complete file or the new complete file at ``path``. With
    ``keep``, only the newest ``keep`` checkpoints of the directory stay (older ``step_*.pt`` files are removed
    after the new one is in place).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    payload = buf.getbuffer()
    digest = hashlib.sha256(payload).hexdigest().encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + digest + b"\n")
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    if keep is not None:
        for old in find_checkpoints(path.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and verify one checkpoint file; every failure is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    head = len(MAGIC) + 65
    if not data.startswith(MAGIC):
        raise CheckpointError(
            f"{path} is not an avlib checkpoint of this version (no verified header): avlib loads only checkpoints "
            "it wrote itself, since other files may run code when unpickled")
    digest, payload = data[len(MAGIC) : head - 1].decode(errors="replace"), memoryview(data)[head:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path} is corrupt: its content does not match the hash written with it")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # the safe unpickler refuses anything but plain data and tensors
        raise CheckpointError(f"{path} refused: it holds objects that only an unsafe (code-running) load could "
                              f"read ({_refusal(err)})") from err
    except Exception as err:  # noqa: BLE001 - any other failure of a hash-verified payload: not written by avlib
        raise CheckpointError(f"{path} could not be read: {_first_line(err)}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint")
    return state


def _first_line(err: BaseException) -> str:
    """The first non-empty line of an error's message, without terminal escape codes."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(err)).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def _refusal(err: BaseException) -> str:
    """What the weights-only unpickler refused, in a few words (its own message is many lines of advice, including
    how to load the file unsafely)."""
    text = _ANSI.sub("", str(err))
    if m := re.search(r"Unsupported global: GLOBAL (\S+)", text):
        return f"it asks for {m.group(1)}, which a weights-only load does not allow"
    if m := re.search(r"WeightsUnpickler error:\s*([^\n]+)", text):
        return m.group(1).strip()
    return "the weights-only unpickler refused it"


def latest_checkpoint(run_dir: str | Path, map_location: Any = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``run_dir`` that verifies, and its state; ``None`` if the run has none.

    A newest file that fails to verify is skipped with a warning naming it and the one used instead; if none
    verifies, the error names them all.
    """
    paths = find_checkpoints(run_dir)
    failures: list[str] = []
    for path in reversed(paths):
        try:
            state = read_checkpoint(path, map_location)
        except CheckpointError as err:
            failures.append(str(err))
            continue
        if failures:
            warnings.warn(f"{'; '.join(failures)}; using the previous checkpoint {path} (step {state.get('step')})",
                          stacklevel=2)
        return path, state
    if failures:
        raise CheckpointError(f"no checkpoint of {run_dir} verifies: {'; '.join(failures)}")
    return None


def load_checkpoint(path: str | Path, model: nn.Module | None = None, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint file, or the newest verified checkpoint of a run directory; with ``model``, load its
    weights too (a mismatch names what the checkpoint holds)."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path, map_location)
        if found is None:
            raise CheckpointError(f"{path} holds no checkpoint (step_*.pt)")
        path, state = found
    else:
        state = read_checkpoint(path, map_location)
    if model is not None:
        load_weights(model, state, path)
    return state


def load_weights(model: nn.Module, state: Mapping[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state["model"])`` with a one-line error on a mismatch: which method and scale the
    checkpoint was trained as, and how many keys / shapes differ."""
    weights = state["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or unexpected or shapes:
        meta = state.get("meta", {})
        what = f"a {meta.get('method', '?')} model at scale {meta.get('scale', '?')}" if meta else "another model"
        first = (shapes or missing or unexpected)[0]
        raise CheckpointError(
            f"{path} holds {what} that does not fit this {type(model).__name__}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(shapes)} differently shaped tensors (first: {first})")
    model.load_state_dict(weights)


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if in use) CUDA random states, as plain data and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global state is what resumes
    state = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (its tensors may have been loaded onto any device: the generators
    take CPU byte tensors)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
