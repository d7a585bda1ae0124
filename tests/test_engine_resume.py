"""Runs you can trust: signals stop a run cleanly and resumably, a resumed run keeps its settings (the lr may change),
the non-finite guard says where to continue from, and a seed gives the same weights in any fresh process.

This file is also the worker script of the subprocess tests: ``python tests/test_engine_resume.py signal SIGNUM OUT``
(exits ``128 + SIGNUM`` on :class:`TrainingInterrupted`, as the command does) and ``... fresh SEED OUT``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from avlib.engine import NonFiniteLossError, TrainingInterrupted, load_checkpoint
from avlib.engine.checkpoint import seed_everything
from avlib.engine.schedule import lr_multiplier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import (  # noqa: E402
    ENV,
    STEPS,
    NamedClips,
    assert_same_weights,
    assert_trained,
    logged_steps,
    names,
    noisy_step,
    plain_step,
    reference,
    run_script,
    run_tiny,
    snapshot,
    tiny_config,
    tiny_model,
)

HERE = Path(__file__).resolve()
__all__ = ["reference"]  # the fixture, shared with test_train


def signal_at(call: int, signum: int, step_fn=noisy_step):
    """``step_fn`` that sends ``signum`` to its own process during its ``call``-th call (a real signal, delivered to
    the main thread while the step runs)."""
    calls = {"n": 0}

    def step(model, batch):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signum)
        return step_fn(model, batch)

    step.calls = calls
    return step


def poisoned_at(call: int, step_fn=plain_step, record: list | None = None):
    """``step_fn`` whose ``call``-th loss is NaN (its batch kept in ``record``)."""
    calls = {"n": 0}

    def step(model, batch):
        calls["n"] += 1
        out = step_fn(model, batch)
        if calls["n"] == call:
            if record is not None:
                record.append(batch)
            out["loss"] = out["loss"] * float("nan")
        return out

    return step


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, repr(message)
    return message


# --------------------------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_finishes_the_step_checkpoints_and_resumes_bit_identically(tmp_path, reference, signum):
    stopped = run_script(HERE, "signal", str(int(signum)), str(tmp_path))
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    info = json.loads(stopped.stdout.strip().splitlines()[-1])
    assert info["step"] == 17 and info["calls"] == 17  # the step the signal arrived in was finished, no more
    assert info["checkpoint"] == str(tmp_path / "step_00000017.pt")
    assert info["message"] == (f"{signal.Signals(signum).name} at step 17: stopped after the step; checkpoint "
                               f"{tmp_path / 'step_00000017.pt'}")
    assert names(tmp_path) == ["step_00000014.pt", "step_00000017.pt"]
    assert load_checkpoint(tmp_path)["step"] == 17 and logged_steps(tmp_path) == list(range(1, 18))
    assert (tmp_path / ".lock").read_text() == ""  # the lock was released on the way out
    model, result = run_tiny(tmp_path, resume=True)
    assert result.step == STEPS and logged_steps(tmp_path) == list(range(1, STEPS + 1))
    assert_same_weights(model.state_dict(), reference)


def test_a_signal_at_a_checkpoint_step_writes_no_second_checkpoint_and_without_out_dir_none(tmp_path):
    with pytest.raises(TrainingInterrupted) as stop:
        run_tiny(tmp_path, step_fn=signal_at(14, signal.SIGINT))
    assert (stop.value.step, stop.value.signum, stop.value.checkpoint) == (14, signal.SIGINT,
                                                                          tmp_path / "step_00000014.pt")
    assert isinstance(stop.value, KeyboardInterrupt) and names(tmp_path) == ["step_00000007.pt", "step_00000014.pt"]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(TrainingInterrupted) as stop:
        run_tiny(None, step_fn=signal_at(3, signal.SIGTERM))
    assert stop.value.step == 3 and stop.value.checkpoint is None
    assert str(stop.value) == "SIGTERM at step 3: stopped after the step; no checkpoint (no out_dir)"
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the handlers are given back


# ---------------------------------------------------------------------------------------------------------- resume


@pytest.fixture
def stopped_at_12(tmp_path) -> Path:
    """A run interrupted (SIGINT) after step 12: checkpoints step_7 and step_12."""
    with pytest.raises(TrainingInterrupted):
        run_tiny(tmp_path, step_fn=signal_at(12, signal.SIGINT))
    assert names(tmp_path) == ["step_00000007.pt", "step_00000012.pt"]
    return tmp_path


def test_resume_with_a_different_lr_applies_it_and_says_so(stopped_at_12, capsys):
    out = stopped_at_12
    capsys.readouterr()
    model, result = run_tiny(out, lr=0.01, resume=True)
    assert "avlib: lr 0.02 -> 0.01 from step 12 (resumed with a new base lr)" in capsys.readouterr().err.splitlines()
    kw = tiny_config(None).schedule_kwargs()
    for row in result.history:  # the lr each step ran with: the old base up to step 12, the new one after
        base = 0.02 if row["step"] <= 12 else 0.01
        assert row["lr"] == pytest.approx(base * lr_multiplier(row["step"] - 1, **kw), rel=1e-12), row["step"]
    group = result.optimizer.param_groups[0]
    assert group["initial_lr"] == 0.01
    assert load_checkpoint(out)["scheduler"]["base_lrs"] == [0.01]
    # Resumed again with the same (new) lr: nothing to report.
    run_tiny(out, lr=0.01, resume=True, steps=STEPS + 2)
    assert "avlib: lr" not in capsys.readouterr().err


@pytest.mark.parametrize(("key", "value"), [("batch_size", 12), ("seed", 12), ("schedule", "linear"),
                                            ("warmup_steps", 5), ("clip_grad", 1.0)])
def test_resume_with_a_changed_setting_is_refused_in_one_line(stopped_at_12, key, value):
    out = stopped_at_12
    before = snapshot(out)
    old = tiny_config(None).plain()[key]
    with pytest.raises(ValueError) as err:
        run_tiny(out, resume=True, **{key: value})
    assert one_line(err) == (f"cannot resume from {out / 'step_00000012.pt'} with a different {key} ({old!r} there, "
                             f"{value!r} now); resume with the run's own settings, or start a new run")
    assert snapshot(out) == before


def test_resume_with_more_steps_continues(stopped_at_12):
    _, result = run_tiny(stopped_at_12, resume=True, schedule="cosine", steps=STEPS + 6)
    assert result.step == STEPS + 6 and [h["step"] for h in result.history] == list(range(1, STEPS + 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda_restores_every_rng_and_is_bit_identical(tmp_path):
    """On a GPU the checkpoint is loaded onto the device; its RNG states (dropout draws on the CUDA generator) must
    still restore."""
    cuda = dict(step_fn=plain_step, device="cuda", precision="bf16")
    straight, _ = run_tiny(tmp_path / "straight", **cuda)
    with pytest.raises(TrainingInterrupted):
        run_tiny(tmp_path / "resumed", **{**cuda, "step_fn": signal_at(12, signal.SIGINT, plain_step)})
    assert "cuda" in load_checkpoint(tmp_path / "resumed")["rng"][0]
    resumed, result = run_tiny(tmp_path / "resumed", resume=True, **cuda)
    assert result.device.startswith("cuda") and result.step == STEPS
    assert_same_weights(resumed.state_dict(), straight.state_dict())


# ------------------------------------------------------------------------------------------------ non-finite guard


def test_the_nan_guard_names_the_batch_items_and_the_last_verified_checkpoint(tmp_path):
    record = []
    with pytest.raises(NonFiniteLossError) as err:
        run_tiny(tmp_path, step_fn=poisoned_at(13, record=record), data=NamedClips(), batch_size=12, steps=20)
    (batch,) = record
    items = [f"clip_{i:04d}.mp4" for i in batch[2].tolist()]
    assert len(items) == 12
    assert one_line(err) == (f"non-finite loss (nan) at step 13 on items {', '.join(items[:8])} and 4 more; training "
                             f"stopped; the last verified checkpoint is {tmp_path / 'step_00000007.pt'} (step 7)")


def test_the_nan_guard_without_an_earlier_checkpoint_says_so(tmp_path):
    for out, where in [(tmp_path, "no checkpoint had been written yet"), (None, "no checkpoint was written (no "
                                                                               "out_dir)")]:
        with pytest.raises(NonFiniteLossError) as err:
            run_tiny(out, step_fn=poisoned_at(3), data=NamedClips())
        message = one_line(err)
        assert message.startswith("non-finite loss (nan) at step 3 on items clip_")
        assert message.endswith(f"training stopped; {where}") and "None" not in message
    assert names(tmp_path) == []


@pytest.mark.parametrize("call", [5, 9])
def test_a_parameter_that_stops_being_finite_is_not_checkpointed(tmp_path, call):
    model = tiny_model()
    model.register_parameter("unused", nn.Parameter(torch.zeros(3)))  # no gradient: only the checkpoint sees it

    def step(m, batch):
        if step.n == call:
            with torch.no_grad():
                m.unused[1] = float("inf")
        step.n += 1
        return plain_step(m, batch)

    step.n = 1
    with pytest.raises(NonFiniteLossError) as err:
        run_tiny(tmp_path, step_fn=step, model=model)
    message = one_line(err)
    if call == 5:
        assert message == "parameter unused is not finite at step 7; checkpoint not written; no checkpoint had been " \
                          "written yet"
        assert names(tmp_path) == []
    else:
        assert message == (f"parameter unused is not finite at step 14; checkpoint not written; the last verified "
                           f"checkpoint is {tmp_path / 'step_00000007.pt'} (step 7)")
        assert names(tmp_path) == ["step_00000007.pt"]


# ----------------------------------------------------------------------------------------------------- determinism


def test_the_same_seed_gives_bit_identical_weights_in_fresh_processes(tmp_path):
    runs = []
    for i, hash_seed in enumerate(["1", "2"]):
        out = tmp_path / f"run{i}"
        done = run_script(HERE, "fresh", "5", str(out), env={**ENV, "PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(load_checkpoint(out)["model"])
    assert_same_weights(runs[0], runs[1])
    assert_trained(runs[0])
    assert_same_weights(train_fresh(5, None).state_dict(), runs[0])  # and in this process too
    other = train_fresh(6, None).state_dict()
    assert not torch.equal(other["0.weight"], runs[0]["0.weight"])  # the seed matters


def test_fit_seeds_after_the_model_is_built():
    def scrambled_then_fit(scramble: int):
        model = tiny_model()
        random.seed(scramble), np.random.seed(scramble), torch.manual_seed(scramble)  # noqa: NPY002
        return run_tiny(None, model=model, steps=10)[0].state_dict()

    assert_same_weights(scrambled_then_fit(1), scrambled_then_fit(2))


def train_fresh(seed: int, out: Path | None) -> nn.Module:
    """As :mod:`avlib.methods.run` does: seed, build the model from the global RNG, then fit with the seed."""
    torch.set_num_threads(1)
    seed_everything(seed)
    model = tiny_model(seed=None)
    return run_tiny(out, model=model, seed=seed, steps=12)[0]


# ----------------------------------------------------------------------------------------------- worker entry point


def _worker(mode: str, arg: str, out: Path) -> None:
    if mode == "signal":
        step = signal_at(17, int(arg))
        try:
            run_tiny(out, step_fn=step)
        except TrainingInterrupted as stop:
            print(json.dumps({"step": stop.step, "signum": stop.signum, "checkpoint": str(stop.checkpoint),
                              "message": str(stop), "calls": step.calls["n"]}))
            sys.exit(128 + stop.signum)
        raise SystemExit("the run was not interrupted")
    elif mode == "fresh":
        train_fresh(int(arg), out)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
