"""Runs made of stages (``run_stages``): one sub-directory per stage, each started from the previous one's final
weights, resumed inside the stage a killed run died in, and never retrained once complete.

This file is also the worker script of the kill test: ``python tests/test_engine_stages.py kill OUT_DIR``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from avlib.engine import RunDirError, Stage, StageParts, TrainResult, load_checkpoint, run_stages
from avlib.engine.stages import stage_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import (  # noqa: E402
    assert_same_weights,
    assert_trained,
    names,
    run_script,
    snapshot,
    tiny_config,
    tiny_model,
    tiny_stages,
)

HERE = Path(__file__).resolve()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted two-stage run: ``(out_dir, final model, results, weights seen at each stage's first step)``."""
    out = tmp_path_factory.mktemp("straight")
    calls, seen = {}, {}
    model, results = run_stages(tiny_stages(calls, seen), out)
    assert calls == {"first": 10, "second": 12}
    return out, model, results, seen


def test_each_stage_in_its_own_directory_the_second_from_the_first(straight):
    out, model, results, seen = straight
    assert sorted(p.name for p in out.iterdir()) == [".lock", "1_first", "2_second"]
    assert names(out / "1_first") == ["step_00000008.pt", "step_00000010.pt"]
    assert names(out / "2_second") == ["step_00000008.pt", "step_00000012.pt"]
    assert (out / "1_first" / "metrics.jsonl").is_file() and (out / "2_second" / "metrics.jsonl").is_file()
    assert [type(r) for r in results] == [TrainResult, TrainResult] and [r.step for r in results] == [10, 12]
    assert results[1].checkpoint == out / "2_second" / "step_00000012.pt"
    first_final = load_checkpoint(out / "1_first")["model"]
    assert_trained(first_final)
    assert_same_weights(seen["second"], first_final)  # stage 2 started from stage 1's final weights ...
    own_init = tiny_model(seed=8).state_dict()
    assert not torch.equal(seen["second"]["0.weight"], own_init["0.weight"])  # ... not from its own initialisation
    assert_same_weights(model.state_dict(), load_checkpoint(out / "2_second")["model"])
    assert not torch.equal(model.state_dict()["0.weight"], first_final["0.weight"])  # and stage 2 trained


def test_stage_dir_and_a_single_stage_in_the_run_dir_itself(tmp_path):
    assert stage_dir(tmp_path, 1, "train", 1) == tmp_path
    assert stage_dir(tmp_path, 3, "c3", 4) == tmp_path / "3_c3"
    first = tiny_stages()[0]
    model, (result,) = run_stages([Stage("only", first.make)], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "metrics.jsonl", "step_00000008.pt",
                                                          "step_00000010.pt"]
    assert result.step == 10 and result.checkpoint == tmp_path / "step_00000010.pt"
    assert_same_weights(model.state_dict(), load_checkpoint(tmp_path)["model"])
    with pytest.raises(ValueError, match="at least one stage"):
        run_stages([], tmp_path)


def test_killed_inside_stage_two_resumes_inside_stage_two(tmp_path, straight):
    killed = run_script(HERE, "kill", str(tmp_path))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert names(tmp_path / "1_first") == ["step_00000008.pt", "step_00000010.pt"]  # stage 1 complete ...
    assert names(tmp_path / "2_second") == ["step_00000004.pt", "step_00000008.pt"]  # ... stage 2 killed at step 10
    first_files = snapshot(tmp_path / "1_first")
    first_times = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "1_first").iterdir()}
    calls = {}
    with pytest.warns(UserWarning, match="taking over the lock left by pid"):  # the killed process's locks
        model, results = run_stages(tiny_stages(calls), tmp_path, resume=True)
    assert calls == {"second": 4}  # stage 1 not retrained; stage 2 continued at step 9
    assert results[0].loaded and not results[1].loaded and results[1].step == 12 and results[1].history[0]["step"] == 1
    assert snapshot(tmp_path / "1_first") == first_files  # byte-identical ...
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "1_first").iterdir()} == first_times  # ... untouched
    out = straight[0]
    assert_same_weights(load_checkpoint(tmp_path / "2_second")["model"], load_checkpoint(out / "2_second")["model"])
    assert_same_weights(model.state_dict(), straight[1].state_dict())


def test_no_other_run_can_claim_the_directory_between_or_during_stages(tmp_path):
    refused = []

    def meddle(stage, n):
        if n == 1:  # at the first step of each stage, another run tries to replace this one
            with pytest.raises(RunDirError) as err:
                run_stages(tiny_stages(), tmp_path, overwrite=True)
            refused.append((stage, str(err.value)))

    run_stages(tiny_stages(on_step=meddle), tmp_path)
    assert [stage for stage, _ in refused] == ["first", "second"]
    assert all(f"in use by a running trainer (pid {os.getpid()} on " in message for _, message in refused)
    assert names(tmp_path / "1_first") == ["step_00000008.pt", "step_00000010.pt"]
    assert names(tmp_path / "2_second") == ["step_00000008.pt", "step_00000012.pt"]


def test_an_existing_run_of_stages_is_refused_without_resume(straight):
    out = straight[0]
    before = snapshot(out)
    with pytest.raises(RunDirError, match="already holds a run: pass --resume to continue it or --overwrite"):
        run_stages(tiny_stages(), out)
    assert snapshot(out) == before


def test_a_completed_run_rerun_with_resume_trains_nothing(straight):
    out, model, _, _ = straight
    before = snapshot(out)
    calls = {}
    again, results = run_stages(tiny_stages(calls), out, resume=True)
    assert calls == {} and [r.loaded for r in results] == [True, True] and [r.seconds for r in results] == [0.0, 0.0]
    assert [r.step for r in results] == [r.history[-1]["step"] for r in results]  # history read back
    assert snapshot(out) == before
    assert_same_weights(again.state_dict(), model.state_dict())  # the final stage's weights, loaded


def test_a_stage_with_its_own_init(tmp_path):
    """``Stage.init`` decides what the next stage takes from the previous one (here: the first layer only)."""
    first, second = tiny_stages()
    taken = []

    def first_layer_only(model, state, path):
        taken.append(path)
        model[0].load_state_dict({k[2:]: v for k, v in state["model"].items() if k.startswith("0.")})

    def frozen_second() -> StageParts:
        parts = second.make()
        parts.train_config = tiny_config(None, steps=1, seed=5)
        parts.optimizer = torch.optim.SGD(parts.model.parameters(), lr=0.0)
        return parts

    model, _ = run_stages([first, Stage("second", frozen_second, init=first_layer_only)], tmp_path)
    first_final = load_checkpoint(tmp_path / "1_first")["model"]
    assert taken == [tmp_path / "1_first" / "step_00000010.pt"]
    assert torch.equal(model[0].weight, first_final["0.weight"])  # taken from stage 1
    assert torch.equal(model[3].weight, tiny_model(seed=8)[3].weight)  # its own initialisation (lr 0)


# ----------------------------------------------------------------------------------------------- worker entry point


def _worker(mode: str, out: Path) -> None:
    if mode != "kill":
        raise SystemExit(f"unknown mode {mode!r}")

    def die(stage, n):
        if stage == "second" and n == 10:  # after stage 2's checkpoint of step 8
            os.kill(os.getpid(), signal.SIGKILL)

    torch.set_num_threads(1)
    run_stages(tiny_stages(on_step=die), out)


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
