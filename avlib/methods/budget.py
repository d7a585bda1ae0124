"""How long a training run will take, said before it starts: one step measured on this device, and an estimate for
a Colab T4 from the step's FLOPs.

:func:`expected_time` builds the method's model, counts the FLOPs of one whole optimisation step (forward and
backward, ``torch.utils.flop_counter``) and times a few steps here, for each of the run's training stages (a
curriculum's levels differ in cost); the run's time is the sum over stages of step time times steps. For the
``colab`` scale on a machine without a GPU it adds an estimate for a Tesla T4 (65 TFLOP/s of fp16 tensor-core peak;
:data:`T4_SUSTAINED` of it sustained, an assumption, labelled as one). Nothing it does changes the random state the
run will start from.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from avlib.engine import StepModule, autocast, resolve_precision, to_device, train_step
from avlib.methods.base import MethodConfig, get_method
from avlib.runtime import select_device

__all__ = ["T4_PEAK", "T4_SUSTAINED", "expected_time", "step_cost", "step_profile"]

T4_PEAK = 65e12  # fp16 tensor-core FLOP/s of a Tesla T4 (NVIDIA's data sheet)
T4_SUSTAINED = 0.3  # the fraction of it small convolutional nets sustain: an assumption, not a measurement


def step_cost(cfg: MethodConfig, timed_steps: int = 2) -> tuple[float, float]:
    """``(seconds, flops)`` of one optimisation step of ``cfg`` on this device, at its global batch (the per-device
    batch measured, times the accumulation steps that make up the global one)."""
    method, device = get_method(cfg.method), select_device()
    batch_size = cfg.micro_batch or cfg.batch_size
    accum = max(cfg.batch_size // batch_size, 1)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = method.model(cfg).to(device)
        precision = resolve_precision("auto", device)
        step = StepModule(model, method.step(cfg))
        optimizer = method.make_optimizer(cfg, model)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        batch = to_device(method.example_batch(cfg, batch_size), device, cfg.channels_last)
        amp = lambda: autocast(device, precision)  # noqa: E731 - the engine takes a context factory
        with FlopCounterMode(display=False) as counter:
            train_step(step, [batch], optimizer, scaler, amp)
        times = []
        for _ in range(timed_steps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            train_step(step, [batch], optimizer, scaler, amp)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return min(times) * accum, float(counter.get_total_flops() * accum)


def step_profile(cfg: MethodConfig, batch_size: int, device: str | torch.device = "cpu",
                 precision: str = "auto") -> dict[str, float]:
    """What one optimisation step of ``cfg``'s model costs at ``batch_size`` items, counted rather than timed: one
    step (forward, backward, optimiser) on a random batch of that size.

    Returns ``flops`` (``torch.utils.flop_counter``: matrix products and convolutions, forward and backward; FFTs and
    element-wise work are not counted), ``saved_bytes`` (the tensors autograd keeps for the backward pass, each
    storage once, the parameters themselves excluded: the activation memory at this batch and precision) and
    ``parameters``. A step that builds state before its first call (``prepare``: DSOL's dictionary, from the stage-1
    set of the method's last ``train_data``) builds it before the count. Only the random state of a fork is used, so
    the caller's stays as it was.
    """
    method, device = get_method(cfg.method), torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = method.model(cfg).to(device)
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        precision = resolve_precision(precision, device)
        step_fn = method.step(cfg)
        if callable(getattr(step_fn, "prepare", None)):
            step_fn.prepare(model)
        step = StepModule(model, step_fn)
        optimizer = method.make_optimizer(cfg, model)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        batch = to_device(method.example_batch(cfg, batch_size), device, cfg.channels_last)
        amp = lambda: autocast(device, precision)  # noqa: E731 - the engine takes a context factory
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            train_step(step, [batch], optimizer, scaler, amp)
    return {"flops": float(counter.get_total_flops()), "saved_bytes": float(sum(saved.values())),
            "parameters": float(sum(p.numel() for p in model.parameters()))}


def expected_time(cfg: MethodConfig, timed_steps: int = 2) -> dict[str, float | str]:
    """Measure one optimisation step of each of ``cfg``'s training stages (at its per-device batch) and extrapolate
    to the stages' steps.

    Returns ``seconds_per_step`` and ``flops_per_step`` (means over the run's steps), ``minutes`` (measured here),
    ``t4_minutes`` (the estimate) and ``line``, a sentence for a chapter to print.
    """
    plans = get_method(cfg.method).stages(cfg)
    costs = [step_cost(p.cfg, timed_steps) for p in plans]
    steps = sum(p.cfg.steps for p in plans)
    seconds = sum(c[0] * p.cfg.steps for c, p in zip(costs, plans, strict=True))
    flops = sum(c[1] * p.cfg.steps for c, p in zip(costs, plans, strict=True))
    minutes, t4_minutes = seconds / 60, flops / (T4_PEAK * T4_SUSTAINED) / 60
    staged = f" in {len(plans)} stages ({', '.join(p.name for p in plans)})" if len(plans) > 1 else ""
    line = (f"{cfg.method} at the {cfg.scale} scale: {steps} steps{staged} of {flops / steps / 1e9:.1f} GFLOP; "
            f"about {minutes:.1f} min here ({seconds / steps * 1000:.0f} ms a step, measured on "
            f"{select_device().type})")
    if cfg.scale == "colab" and select_device().type != "cuda":
        line += f"; on a Colab T4 about {t4_minutes:.1f} min (an estimate, at {T4_SUSTAINED:.0%} of its fp16 peak)"
    return {"seconds_per_step": seconds / steps, "minutes": minutes, "flops_per_step": flops / steps,
            "t4_minutes": t4_minutes, "line": line}
