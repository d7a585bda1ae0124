"""A run directory is owned: an existing run is never replaced unless asked, and one trainer at a time works in it.

This file is also the worker script of the lock test: ``python tests/test_engine_rundir.py hold OUT_DIR`` trains
slowly in ``OUT_DIR`` (holding its lock) until it is killed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from avlib.engine import RunDirError, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import ENV, logged_steps, names, plain_step, run_tiny, snapshot  # noqa: E402

HERE = Path(__file__).resolve()


def test_an_existing_run_is_refused_and_left_byte_identical(tmp_path):
    run_tiny(tmp_path, step_fn=plain_step, steps=8, ckpt_every=3)
    assert names(tmp_path) == ["step_00000006.pt", "step_00000008.pt"]
    before = snapshot(tmp_path)
    assert set(before) == {".lock", "metrics.jsonl", "step_00000006.pt", "step_00000008.pt"}
    for changes in [{}, {"steps": 20, "seed": 3}, {"ckpt_every": 1}]:
        with pytest.raises(RunDirError) as err:
            run_tiny(tmp_path, step_fn=plain_step, **changes)
        message = str(err.value)
        assert message == (f"{tmp_path} already holds a run: pass --resume to continue it or --overwrite to replace "
                           "it (nothing was changed)")
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["checkpoint", "metrics", "config.json", "stage"])
def test_what_counts_as_a_run(tmp_path, kind):
    if kind == "checkpoint":
        run_tiny(tmp_path, step_fn=plain_step, steps=2)
        (tmp_path / "metrics.jsonl").unlink()
    elif kind == "metrics":
        (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    elif kind == "config.json":
        (tmp_path / "config.json").write_text("{}")
    else:  # a run of stages: its first stage's directory
        (tmp_path / "1_first").mkdir()
        (tmp_path / "1_first" / "metrics.jsonl").write_text("")
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError, match="already holds a run"):
        run_tiny(tmp_path, step_fn=plain_step, steps=2)
    assert snapshot(tmp_path) == before


def test_a_directory_without_a_run_is_used_and_its_files_kept(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    _, result = run_tiny(tmp_path, step_fn=plain_step, steps=2)
    assert result.step == 2 and (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "data").is_dir()


def test_overwrite_replaces_the_run(tmp_path):
    run_tiny(tmp_path, step_fn=plain_step, steps=8, ckpt_every=3)
    old = load_checkpoint(tmp_path)["model"]
    (tmp_path / "1_old_stage").mkdir()
    (tmp_path / "1_old_stage" / "metrics.jsonl").write_text("")
    model, result = run_tiny(tmp_path, step_fn=plain_step, steps=4, ckpt_every=0, seed=3, lr=0.05, overwrite=True)
    assert result.step == 4 and [h["step"] for h in result.history] == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "metrics.jsonl", "step_00000004.pt"]
    assert logged_steps(tmp_path) == [1, 2, 3, 4]
    new = load_checkpoint(tmp_path)
    assert new["step"] == 4 and new["train_config"]["seed"] == 3
    assert not torch.equal(new["model"]["0.weight"], old["0.weight"])
    assert all(torch.equal(new["model"][k], v) for k, v in model.state_dict().items())


def test_a_second_trainer_is_refused_while_the_first_holds_the_lock_and_a_dead_ones_lock_is_taken_over(tmp_path):
    marker = tmp_path / "started"
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, str(HERE), "hold", str(run_dir), str(marker)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert holder.poll() is None, holder.stderr.read()
            assert time.monotonic() < deadline, "the holder never started training"
            time.sleep(0.1)
        who = f"pid {holder.pid} on {socket.gethostname()}"
        assert (run_dir / ".lock").read_text().strip() == who  # the lock file names the holder
        before = snapshot(run_dir)
        for how in [{}, {"resume": True}, {"overwrite": True}]:
            with pytest.raises(RunDirError) as err:
                run_tiny(run_dir, step_fn=plain_step, steps=2, **how)
            assert str(err.value) == (f"{run_dir} is in use by a running trainer ({who}); wait for it or choose "
                                      "another --out")
        assert snapshot(run_dir) == before  # refused before anything was touched
        assert holder.poll() is None  # and the first trainer is still running
    finally:
        holder.kill()
        holder.wait(timeout=60)
        holder.stderr.close()
    assert (run_dir / ".lock").read_text().strip() == who  # the dead holder's name stays in the file ...
    with pytest.warns(UserWarning, match=f"taking over the lock left by {who}, which is no longer running"):
        _, result = run_tiny(run_dir, step_fn=plain_step, steps=2, resume=True)  # ... and its lock is taken over
    assert result.step == 2
    assert (run_dir / ".lock").read_text() == ""  # released at the end of the run
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a lock released normally is taken without a warning
        run_tiny(run_dir, step_fn=plain_step, steps=3, resume=True)


def test_the_lock_is_held_while_training_and_released_after_an_error(tmp_path):
    seen = []

    def step(model, batch):
        seen.append((tmp_path / ".lock").read_text().strip())
        if len(seen) == 2:
            raise RuntimeError("boom")
        return plain_step(model, batch)

    with pytest.raises(RuntimeError, match="boom"):
        run_tiny(tmp_path, step_fn=step, steps=4)
    assert seen == [f"pid {os.getpid()} on {socket.gethostname()}"] * 2
    assert (tmp_path / ".lock").read_text() == ""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_tiny(tmp_path, step_fn=plain_step, steps=2, overwrite=True)


# ----------------------------------------------------------------------------------------------- worker entry point


def _worker(mode: str, out: Path, marker: Path) -> None:
    if mode != "hold":
        raise SystemExit(f"unknown mode {mode!r}")

    def slow(model, batch):
        marker.touch()
        time.sleep(0.05)
        return plain_step(model, batch)

    run_tiny(out, step_fn=slow, steps=100_000, ckpt_every=0, log_every=100_000)


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
