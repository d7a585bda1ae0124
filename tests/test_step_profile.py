"""step_profile: a step's FLOPs, activation memory and parameters, counted (chapter 7's budget table)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from avlib.methods import get_method
from avlib.methods.budget import step_profile


def test_step_profile_counts_the_flops_and_grows_linearly_with_the_batch() -> None:
    method = get_method("dmc")
    cfg = method.config("quick")
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    two, three, four = (step_profile(cfg, b, precision="fp32") for b in (2, 3, 4))
    assert torch.equal(torch.rand(3), expected_next), "profiling must not change the caller's random state"
    model = method.model(cfg)
    with FlopCounterMode(display=False) as counter:  # forward and backward, counted here directly
        method.step(cfg)(model, method.example_batch(cfg, 2))["loss"].backward()
    assert abs(two["flops"] - counter.get_total_flops()) <= 0.01 * counter.get_total_flops()
    assert two["parameters"] == sum(p.numel() for p in model.parameters())
    item = three["saved_bytes"] - two["saved_bytes"]
    assert item > 0 and abs((four["saved_bytes"] - two["saved_bytes"]) - 2 * item) <= 0.05 * item
    assert abs((four["flops"] - two["flops"]) - 2 * (three["flops"] - two["flops"])) <= 0.01 * two["flops"]

