"""Checkpoints that cannot run code, cannot be half-written and cannot be silently corrupt (avlib.engine.checkpoint).
"""

from __future__ import annotations

import builtins
import hashlib
import io
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import avlib.engine.checkpoint as ck
from avlib.engine import CheckpointError, NonFiniteLossError, RunDirError, latest_checkpoint, load_checkpoint
from avlib.engine.checkpoint import MAGIC, find_checkpoints, read_checkpoint, rng_state, save_checkpoint, set_rng_state

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import (  # noqa: E402
    STEPS,
    assert_same_weights,
    logged_steps,
    names,
    plain_step,
    run_tiny,
    snapshot,
    tiny_model,
)

AVLIB = Path(__file__).resolve().parents[1] / "avlib"
HEAD = len(MAGIC) + 65  # magic, 64 hex digits of SHA-256, newline


@pytest.fixture(scope="module")
def constant_reference():
    """Final weights of an uninterrupted 30-step run with a constant schedule (so that a shorter run is its
    prefix)."""
    model, _ = run_tiny(None, schedule="constant")
    return model.state_dict()


def partial_run(out: Path) -> None:
    """The first 21 steps of the constant-schedule run: checkpoints step_14 and step_21 remain."""
    run_tiny(out, schedule="constant", steps=21)
    assert names(out) == ["step_00000014.pt", "step_00000021.pt"]


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "\x1b" not in message, repr(message)
    return message


def write_raw_checkpoint(path: Path, payload: bytes) -> Path:
    """A file with a valid avlib header and the correct hash of ``payload``."""
    path.write_bytes(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    return path


# ------------------------------------------------------------------------------------------------------ corruption


def test_corrupt_newest_falls_back_to_the_previous_with_a_warning_naming_both(tmp_path, constant_reference):
    partial_run(tmp_path)
    newest, previous = tmp_path / "step_00000021.pt", tmp_path / "step_00000014.pt"
    data = bytearray(newest.read_bytes())
    assert len(data) > 3 * 4096
    middle = len(data) // 2 - 2048
    data[middle : middle + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    newest.write_bytes(bytes(data))

    with pytest.raises(CheckpointError) as err:
        read_checkpoint(newest)
    assert one_line(err) == f"{newest} is corrupt: its content does not match the hash written with it"
    with pytest.raises(CheckpointError, match=f"{newest} is corrupt"):
        load_checkpoint(newest)  # the corrupt file alone
    with pytest.warns(UserWarning) as warned:
        path, state = latest_checkpoint(tmp_path)
    assert path == previous and state["step"] == 14
    (message,) = [str(w.message) for w in warned]
    assert f"{newest} is corrupt" in message and f"using the previous checkpoint {previous} (step 14)" in message
    with pytest.warns(UserWarning, match="step_00000021.pt is corrupt.*step_00000014.pt"):
        assert load_checkpoint(tmp_path)["step"] == 14

    with pytest.warns(UserWarning, match="step_00000021.pt is corrupt.*step_00000014.pt"):
        model, result = run_tiny(tmp_path, schedule="constant", resume=True)
    assert result.step == STEPS and logged_steps(tmp_path) == list(range(1, STEPS + 1))
    assert_same_weights(model.state_dict(), constant_reference)  # resumed exactly from step 14
    assert names(tmp_path) == ["step_00000028.pt", "step_00000030.pt"]


def test_no_verified_checkpoint_is_an_error_naming_them_all(tmp_path):
    partial_run(tmp_path)
    for p in find_checkpoints(tmp_path):
        p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(CheckpointError) as err:
        latest_checkpoint(tmp_path)
    message = one_line(err)
    assert message.startswith(f"no checkpoint of {tmp_path} verifies: ")
    assert "step_00000021.pt is corrupt" in message and "step_00000014.pt is corrupt" in message
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint of .* verifies"):
        run_tiny(tmp_path, schedule="constant", resume=True)
    assert snapshot(tmp_path) == before


def test_bytes_that_decode_as_nan_are_refused_by_the_hash(tmp_path):
    partial_run(tmp_path)
    newest, previous = tmp_path / "step_00000021.pt", tmp_path / "step_00000014.pt"
    data = newest.read_bytes()
    weight = read_checkpoint(newest)["model"]["0.weight"]
    at = data.find(weight.numpy().tobytes())
    assert at > HEAD
    nan = torch.full_like(weight, float("nan")).numpy().tobytes()
    newest.write_bytes(data[:at] + nan + data[at + len(nan) :])
    # The payload still decodes, with NaN weights: only the hash tells it from a checkpoint of a diverged run.
    decoded = torch.load(io.BytesIO(newest.read_bytes()[HEAD:]), weights_only=True)
    assert decoded["step"] == 21 and torch.isnan(decoded["model"]["0.weight"]).all()
    with pytest.raises(CheckpointError, match=f"{newest} is corrupt"):
        read_checkpoint(newest)

    calls = {"n": 0}

    def nan_at_first_step(model, batch):
        calls["n"] += 1
        out = plain_step(model, batch)
        if calls["n"] == 1:
            out["loss"] = out["loss"] * float("nan")
        return out

    with pytest.warns(UserWarning, match="step_00000021.pt is corrupt.*previous checkpoint .*step_00000014.pt"):
        with pytest.raises(NonFiniteLossError) as err:
            run_tiny(tmp_path, step_fn=nan_at_first_step, schedule="constant", resume=True)
    message = one_line(err)
    assert "at step 15 on items" in message  # resumed at step 14 (the NaN file was never loaded)
    assert message.endswith(f"the last verified checkpoint is {previous} (step 14)")
    assert "step_00000021" not in message


# ---------------------------------------------------------------------------------------------------- safe loading


class _WritesMarker:
    """Unpickling this (with an unsafe loader) runs code: it writes ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.path)!r}, 'w').write('ran')",)


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    run_dir.mkdir()
    # The object really runs code when unpickled the ordinary way ...
    pickle.loads(pickle.dumps(_WritesMarker(marker)))
    assert marker.read_text() == "ran"
    marker.unlink()
    # ... and avlib refuses it, inside a file with a valid header and the correct hash, in both pickle containers.
    buf = io.BytesIO()
    torch.save({"model": _WritesMarker(marker), "step": 3}, buf)
    zipped = write_raw_checkpoint(run_dir / "step_00000003.pt", buf.getvalue())
    raw = write_raw_checkpoint(tmp_path / "raw.pt", pickle.dumps({"model": _WritesMarker(marker)}, protocol=2))
    for path in (zipped, raw):
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        message = one_line(err)
        assert message.startswith(f"{path} refused: it holds objects that only an unsafe (code-running) load could "
                                  "read (")
        assert "weights_only" not in message  # no advice to load it unsafely
        assert not marker.exists()
        if path == zipped:
            assert message.endswith("(it asks for exec, which a weights-only load does not allow)")
    with pytest.raises(CheckpointError, match="no checkpoint of .* verifies: .*step_00000003.pt refused"):
        load_checkpoint(run_dir)
    (run_dir / "metrics.jsonl").write_text("")
    with pytest.raises(CheckpointError, match="step_00000003.pt refused"):
        run_tiny(run_dir, step_fn=plain_step, resume=True)
    assert not marker.exists()


def test_a_plain_torch_save_file_is_refused(tmp_path):
    state = {"model": tiny_model().state_dict(), "step": 5}
    torch.save(state, tmp_path / "step_00000005.pt")
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "step_00000005.pt")
    assert one_line(err) == (f"{tmp_path / 'step_00000005.pt'} is not an avlib checkpoint of this version (no "
                             "verified header): avlib loads only checkpoints it wrote itself, since other files may "
                             "run code when unpickled")


def test_a_run_of_an_older_avlib_is_not_silently_restarted(tmp_path):
    torch.save({"model": tiny_model().state_dict(), "step": 5}, tmp_path / "last.pt")
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError) as err:
        run_tiny(tmp_path, step_fn=plain_step, resume=True)
    assert one_line(err).startswith(f"{tmp_path} holds last.pt, a checkpoint in the format of an older avlib")
    with pytest.raises(RunDirError, match="already holds a run"):
        run_tiny(tmp_path, step_fn=plain_step)
    assert snapshot(tmp_path) == before
    _, result = run_tiny(tmp_path, step_fn=plain_step, steps=2, overwrite=True)
    assert result.step == 2 and not (tmp_path / "last.pt").exists()


def test_avlib_never_loads_unsafely():
    found = subprocess.run(["grep", "-rn", "weights_only=False", str(AVLIB)], capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == "", found.stdout  # 1: no line matched (2 would be an error)
    loads = subprocess.run(["grep", "-rn", "--include=*.py", "torch.load(", str(AVLIB)], capture_output=True,
                           text=True).stdout.splitlines()
    assert loads and all("weights_only=True" in line for line in loads), loads


# ------------------------------------------------------------------------------------------- files and RNG states


def test_keep_the_newest_checkpoints_by_step(tmp_path):
    for step in (5, 100_000_000, 20, 7):  # a 9-digit step sorts after the 8-digit ones
        save_checkpoint({"step": step}, ck.checkpoint_path(tmp_path, step), keep=3)
    assert names(tmp_path) == ["step_00000007.pt", "step_00000020.pt", "step_100000000.pt"]
    (tmp_path / "step_12.pt").write_bytes(b"")  # not a checkpoint name
    (tmp_path / "notes.txt").write_text("")
    assert names(tmp_path) == ["step_00000007.pt", "step_00000020.pt", "step_100000000.pt"]
    assert latest_checkpoint(tmp_path)[1]["step"] == 100_000_000
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_rng_state_survives_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)  # noqa: NPY002
    random.random(), np.random.rand(), torch.rand(1)  # noqa: NPY002 - states that are not just a seed
    path = save_checkpoint({"rng": rng_state()}, tmp_path / "step_00000001.pt")

    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))  # noqa: NPY002

    expected = draw()
    draw()
    set_rng_state(read_checkpoint(path)["rng"])
    assert draw() == expected


def test_load_checkpoint_with_a_model_loads_its_weights(tmp_path):
    run_tiny(tmp_path, step_fn=plain_step, steps=3)
    fresh = tiny_model(seed=99)
    state = load_checkpoint(tmp_path, model=fresh)
    assert state["step"] == 3
    assert_same_weights(fresh.state_dict(), state["model"])
    assert state["train_config"]["steps"] == 3 and state["world_size"] == 1
