"""The expected time a chapter prints before it trains: one step measured here, FLOPs counted independently."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from avlib.methods import get_method
from avlib.methods.budget import T4_PEAK, T4_SUSTAINED, expected_time


def test_expected_time_counts_the_steps_flops_and_leaves_the_rng_alone() -> None:
    cfg = get_method("dmc").config("quick")
    torch.manual_seed(3)
    expected_next = torch.rand(4)
    torch.manual_seed(3)
    got = expected_time(cfg)
    assert torch.equal(torch.rand(4), expected_next), "measuring must not change the run's random state"
    method = get_method("dmc")
    model = method.model(cfg)
    batch = method.example_batch(cfg, cfg.batch_size)
    with FlopCounterMode(display=False) as counter:  # forward and backward of the loss, counted here directly
        method.step(cfg)(model, batch)["loss"].backward()
    assert abs(got["flops_per_step"] - counter.get_total_flops()) <= 0.01 * counter.get_total_flops()
    assert got["minutes"] == got["seconds_per_step"] * cfg.steps / 60 and got["seconds_per_step"] > 0
    assert abs(got["t4_minutes"] - got["flops_per_step"] * cfg.steps / (T4_PEAK * T4_SUSTAINED) / 60) < 1e-9
    assert "estimate" not in got["line"] and f"{cfg.steps} steps" in got["line"]


def test_the_colab_scale_on_a_cpu_adds_a_labelled_t4_estimate() -> None:
    cfg = get_method("dmc").config("colab", steps=10)
    line = expected_time(cfg, timed_steps=1)["line"]
    assert "on a Colab T4 about" in line and "an estimate" in line


def test_a_staged_run_is_the_sum_of_its_stages() -> None:
    cfg = get_method("cavl").config("quick", levels=(1, 2), steps=5)
    plans = get_method("cavl").stages(cfg)
    one = [expected_time(p.cfg.replace(levels=(p.cfg.k_audio,)), timed_steps=1) for p in plans]
    got = expected_time(cfg, timed_steps=1)
    assert abs(got["flops_per_step"] * 10 - sum(o["flops_per_step"] * 5 for o in one)) <= 1e-6 * got["flops_per_step"]
    assert one[1]["flops_per_step"] != one[0]["flops_per_step"]  # k_a = 2 clusters more than k_a = 1
    assert "10 steps in 2 stages (c1, c2)" in got["line"]
