"""The global batch: how it is split over processes and micro-batches (``plan_batches``), and that two gloo processes
with gradient accumulation train the same weights as one process with the whole batch.

This file is also the ``torchrun`` worker of the two-process tests: ``python tests/test_engine_batches.py OUT_DIR``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from avlib.engine import BatchPlan, load_checkpoint, plan_batches, run_stages
from avlib.engine.checkpoint import find_checkpoints

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import BATCH, ENV, STEPS, assert_trained, plain_step, run_tiny, tiny_stages  # noqa: E402

HERE = Path(__file__).resolve()
GLOBAL, MICRO = 2 * BATCH, 2  # two processes x 3 accumulation steps x micro-batch 2


# ---------------------------------------------------------------------------------------------------- plan_batches


def test_plan_batches_splits_the_global_batch():
    assert plan_batches(12) == BatchPlan(global_batch=12, world=1, per_process=12, micro=12, accum=1)
    assert plan_batches(12, 2, 2) == BatchPlan(12, 2, 6, 2, 3)
    assert plan_batches(12, 2, 6) == BatchPlan(12, 2, 6, 6, 1)
    assert plan_batches(12, 2, 100) == BatchPlan(12, 2, 6, 6, 1)  # a limit above the share: no accumulation
    assert plan_batches(12, 1, 5) == BatchPlan(12, 1, 12, 4, 3)  # 3 x 4, not 2 x 5 + 2: equal micro-batches
    assert plan_batches(14, 1, 5) == BatchPlan(14, 1, 14, 2, 7)  # 3..6 do not divide 14; 7 does
    assert plan_batches(13, 1, 4) == BatchPlan(13, 1, 13, 1, 13)  # a prime share: micro-batches of one
    plan = plan_batches(256, 16, 8)
    assert (plan.per_process, plan.micro, plan.accum) == (16, 8, 2)
    assert plan.describe().startswith("global batch 256 = 16 process(es) x 2 accumulation step(s) x micro-batch 8")
    assert "no linear scaling" in plan.describe()


def test_plan_batches_takes_the_fewest_accumulation_steps_that_divide_evenly():
    for global_batch, world, micro in itertools.product(range(1, 41), (1, 2, 3, 4), (None, 1, 2, 3, 5, 7, 64)):
        if global_batch % world:
            continue
        plan = plan_batches(global_batch, world, micro)
        per = global_batch // world
        limit = per if micro is None else micro
        fewest = min(a for a in range(1, per + 1) if per % a == 0 and per // a <= limit)  # brute force
        assert (plan.per_process, plan.accum, plan.micro) == (per, fewest, per // fewest), (global_batch, world, micro)
        assert plan.world * plan.accum * plan.micro == global_batch


def test_plan_batches_refuses_what_does_not_divide():
    with pytest.raises(ValueError, match="global batch 12 cannot be split evenly over 5 processes"):
        plan_batches(12, 5)
    with pytest.raises(ValueError, match="global batch 7 cannot be split evenly over 2 processes"):
        plan_batches(7, 2, 1)
    for bad in [(0, 1), (4, 0)]:
        with pytest.raises(ValueError, match="must be >= 1"):
            plan_batches(*bad)


def test_fit_uses_the_plan_micro_batches_and_accumulation(tmp_path):
    sizes = []

    def step(m, batch):
        sizes.append(len(batch[0]))
        return plain_step(m, batch)

    _, result = run_tiny(None, step_fn=step, dropout=0.0, batch_size=GLOBAL, micro_batch=5, steps=3)
    assert sizes == [4] * 9  # 12 = 3 x 4 per step, three steps
    assert result.batch_plan.startswith("global batch 12 = 1 process(es) x 3 accumulation step(s) x micro-batch 4")


def test_accumulation_in_one_process_matches_the_whole_batch():
    whole, _ = run_tiny(None, step_fn=plain_step, dropout=0.0, batch_size=GLOBAL, steps=12)
    accum, _ = run_tiny(None, step_fn=plain_step, dropout=0.0, batch_size=GLOBAL, micro_batch=MICRO, steps=12)
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(accum.state_dict()[k], v, rtol=0, atol=1e-5)
    assert_trained(whole.state_dict(), dropout=0.0)


# ---------------------------------------------------------------------------------------------- two gloo processes


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """One ``torchrun --nproc_per_node=2`` launch (gloo, CPU) of the worker below; its output directory."""
    out = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HERE), str(out)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """One process with the whole global batch, for comparison."""
    return run_tiny(tmp_path_factory.mktemp("one"), step_fn=plain_step, dropout=0.0, batch_size=GLOBAL)


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("run", ["ddp", "accum"])
def test_two_processes_match_one_process_on_the_global_batch(two_processes, one_process, run):
    """``ddp``: 2 processes x 6 items; ``accum``: 2 processes x 3 accumulated micro-batches of 2 (micro < B / 2)."""
    info = json.loads((two_processes / "info.json").read_text())
    state = load_checkpoint(two_processes / run)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["step"] == STEPS
    if run == "accum":
        assert info["accum"]["plan"].startswith("global batch 12 = 2 process(es) x 3 accumulation step(s) x "
                                                "micro-batch 2")
        assert info["accum"]["micro_sizes"] == [MICRO] * 3 * STEPS  # rank 0 really accumulated 3 micro-batches
    else:
        assert info["ddp"]["plan"].startswith("global batch 12 = 2 process(es) x 1 accumulation step(s) x "
                                              "micro-batch 6")
    single, result = one_process
    assert result.batch_plan.startswith("global batch 12 = 1 process(es) x 1 accumulation step(s) x micro-batch 12")
    # The logged loss is the mean over both ranks (and micro-batches): the same number as the whole batch's loss.
    np.testing.assert_allclose([h["loss"] for h in _history(two_processes / run)],
                               [h["loss"] for h in result.history], rtol=1e-5)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(state["model"][k], v, rtol=0, atol=1e-5)
    assert_trained(single.state_dict(), dropout=0.0)


def test_two_processes_run_stages(two_processes):
    """Under torchrun only rank 0 owns (locks, claims) the run directory, as in fit; each stage gets its directory."""
    stages = two_processes / "stages"
    assert sorted(p.name for p in stages.iterdir()) == [".lock", "1_first", "2_second"]
    for name, steps in [("1_first", 10), ("2_second", 12)]:
        state = load_checkpoint(stages / name)
        assert state["world_size"] == 2 and state["step"] == steps
        assert find_checkpoints(stages / name)[-1].name == f"step_{steps:08d}.pt"


# ----------------------------------------------------------------------------------------------- worker entry point


def _worker(out: Path) -> None:
    # A run of stages first, as ``avlib train`` does: the first fit creates the process group, every later fit (the
    # second stage, the runs below) reuses it.
    run_stages(tiny_stages(), out / "stages")
    assert dist.is_initialized() and dist.get_world_size() == 2
    info = {}
    _, result = run_tiny(out / "ddp", step_fn=plain_step, dropout=0.0, batch_size=GLOBAL)
    info["ddp"] = {"plan": result.batch_plan}
    sizes = []

    def counted(model, batch):
        sizes.append(len(batch[0]))
        return plain_step(model, batch)

    _, result = run_tiny(out / "accum", step_fn=counted, dropout=0.0, batch_size=GLOBAL, micro_batch=MICRO)
    info["accum"] = {"plan": result.batch_plan, "micro_sizes": sizes}
    if dist.get_rank() == 0:
        (out / "info.json").write_text(json.dumps(info))
    dist.barrier()
    # Skip interpreter teardown: with gloo it sometimes hangs after all work is done (pytorch/pytorch#190489).
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
