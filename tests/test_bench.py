"""The benchmark harness: FLOP counting against a hand count, its derived numbers, memory sampling, JSON output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from avlib.configs import get_config
from avlib.methods import get_method

_spec = importlib.util.spec_from_file_location(
    "harness", Path(__file__).resolve().parents[1] / "benchmarks" / "harness.py"
)
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


def mse_step(model: nn.Module, batch) -> dict:
    x, y = batch
    return {"loss": (model(x) - y).pow(2).mean()}


def test_flops_match_hand_count_and_derived_numbers_agree():
    torch.set_num_threads(1)
    b, d_in, d_hid, d_out = 16, 64, 32, 8
    model = nn.Sequential(nn.Linear(d_in, d_hid, bias=False), nn.ReLU(), nn.Linear(d_hid, d_out, bias=False))
    batch = (torch.randn(b, d_in), torch.randn(b, d_out))
    r = harness.benchmark_model(model, mse_step, batch, b, precision="fp32", steps=3, warmup=1, matmul_n=128)
    # forward 2·b·i·o per layer; backward: weight gradient for both layers, input gradient only for the second
    # (the data needs none): 2 + 3 matrix products of 2·b·i·o FLOPs.
    assert r["flops_per_step"] == 2 * (2 * b * d_in * d_hid) + 3 * (2 * b * d_hid * d_out)
    assert r["step_seconds"] == sorted(r["step_seconds_all"])[1]  # the median of three
    assert r["samples_per_s"] == pytest.approx(b / r["step_seconds"])
    assert r["achieved_flops"] == pytest.approx(r["flops_per_step"] / r["step_seconds"])
    assert r["fraction_of_peak"] == pytest.approx(r["achieved_flops"] / r["peak_matmul_flops"]["fp32"])
    assert set(r["peak_matmul_flops"]) == {"fp32", "bf16"} and all(v > 0 for v in r["peak_matmul_flops"].values())
    json.dumps(r)


def test_matmul_peak_counts_two_n_cubed(monkeypatch):
    clock = iter([0.0, 0.5, 1.0, 1.25, 2.0, 3.0])  # three timed products: 0.5 s, 0.25 s, 1 s
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(clock))
    assert harness.matmul_peak(torch.device("cpu"), torch.float32, 64, repeats=3) == 2 * 64**3 / 0.25


def test_peak_rss_sees_a_short_lived_allocation():
    with harness._PeakRSS() as rss:
        x = torch.ones(16 * 2**20)  # 64 MiB, written so the pages are resident
        del x
    assert rss.peak - rss.start >= 48 * 2**20


def test_registered_method_cli_writes_json(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "bench.json"
    argv = ["l3", "--scale", "quick", "--batch-size", "2", "--steps", "1", "--warmup", "1", "--matmul-n", "128"]
    assert harness.main([*argv, "--precision", "fp32", "--out", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert r["method"] == "l3" and r["scale"] == "quick" and r["batch_size"] == 2 and r["precision"] == "fp32"
    model, _ = get_method("l3").model(get_config("l3", "quick"))
    assert r["flops_per_step"] > 0 and r["parameters"] == sum(p.numel() for p in model.parameters())
