"""``avlib train`` under ``torchrun`` on the real-format clip directory (gloo on the CPU): the same command on one node
with two processes, and on two "nodes" of one process each joined by a c10d rendezvous, trains exactly as one process
on the whole global batch. The counting net at full scale (CAVL's curriculum levels, written by the dataset scripts
from MP4s): its loss is per clip and it has no batch norm, so the runs must agree to rounding (fp32).
tests/test_engine_batches.py holds the engine-level gloo tests on a tiny model."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avlib.engine import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_pipeline", ROOT / "benchmarks" / "bench_pipeline.py")
bench_pipeline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_pipeline)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TRAIN = ["-m", "avlib.cli", "train", "counting", "--scale", "full", "--precision", "fp32", "--batch-size", "4",
         "--no-eval", "--log-every", "1", "--ckpt-every", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(procs: list[subprocess.Popen], timeout: float = 400) -> None:
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def levels(tmp_path_factory) -> Path:
    return bench_pipeline.build_real_dirs(tmp_path_factory.mktemp("real"), which=("levels",))["levels"]


@pytest.fixture(scope="module")
def runs(levels, tmp_path_factory) -> Path:
    """The three launches at once: one process (global batch 4), torchrun with two processes on one node (2 x 2),
    and torchrun on two nodes of one process each, rendezvous over c10d, micro-batch 1 (1 x 2 accumulated x 2)."""
    out = tmp_path_factory.mktemp("runs")
    data = ["--data", str(levels)]
    single = subprocess.Popen([sys.executable, *TRAIN, *data, "--steps", "2", "--out", str(out / "one")], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = [sys.executable, "-m", "torch.distributed.run"]
    node = subprocess.Popen([*run, "--standalone", "--nproc_per_node=2", *TRAIN, *data, "--steps", "2", "--out",
                             str(out / "node")], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = free_port()
    nodes = [subprocess.Popen([*run, "--nnodes=2", f"--node_rank={k}", "--nproc_per_node=1", "--rdzv_backend=c10d",
                               f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=avlib-e2e", *TRAIN, *data, "--steps",
                               "1", "--micro-batch", "1", "--out", str(out / "nodes")], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    check([single, node, *nodes])
    return out


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"]
    for k, v in sa["model"].items():
        torch.testing.assert_close(sb["model"][k], v, rtol=0, atol=2e-6, msg=f"{k} differs")


def test_two_processes_on_one_node_match_one_process(runs):
    summary = json.loads((runs / "node" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 2
    assert summary["batch"].startswith("global batch 4 = 2 process(es) x 1 accumulation step(s) x micro-batch 2")
    for step in (1, 2):
        assert_same_weights(runs / "one" / f"step_{step:08d}.pt", runs / "node" / f"step_{step:08d}.pt")
    one = [json.loads(line)["loss"] for line in (runs / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(line)["loss"] for line in (runs / "node" / "metrics.jsonl").read_text().splitlines()]
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-5, atol=0)


def test_two_nodes_by_rendezvous_match_one_process(runs):
    summary = json.loads((runs / "nodes" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["batch"].startswith("global batch 4 = 2 process(es) x 2 accumulation step(s) x micro-batch 1")
    assert_same_weights(runs / "one" / "step_00000001.pt", runs / "nodes" / "step_00000001.pt")
