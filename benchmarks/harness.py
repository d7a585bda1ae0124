"""Training-throughput harness: samples/s, peak memory, and achieved FLOP/s against the device's own matmul peak.

For a registered method (``avlib.methods``) at a scale, or for any ``(model, step_fn, batch)``, the harness times the
engine's own optimisation step (:func:`avlib.engine.train_step` on one micro-batch, with the engine's precision and
memory-format choices) on a fixed random batch already on the device, so the numbers are the model's, not the data
pipeline's. A method's default batch is what one device takes at a time: the config's ``micro_batch`` where it sets
one (the global ``batch_size`` is then reached by gradient accumulation and more processes), else its ``batch_size``.
FLOPs per step come from ``torch.utils.flop_counter.FlopCounterMode`` over one whole step (forward and backward); the
peak is measured in the same run with large square matrix products in fp32 and bf16 (and fp16 when training in fp16).

    python benchmarks/harness.py l3 --scale full --batch-size 2 --steps 3 --out results.json

CPU peak memory is the process's resident set (sampled every millisecond) and its growth during the steps; on CUDA it
is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from avlib.engine import StepFn, StepModule, autocast, resolve_precision, to_device, train_step
from avlib.runtime import select_device

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 3) -> float:
    """Best FLOP/s of an ``n × n`` by ``n × n`` matrix product (``2 n³`` FLOPs) in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: library initialisation, kernel selection
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


class _PeakRSS:
    """Samples this process's resident set size in a thread; ``peak`` and ``start`` in bytes (Linux /proc)."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval, self.peak, self.start = interval, 0, 0
        self._stop, self._started = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._started.set()
            time.sleep(self.interval)

    def __enter__(self) -> _PeakRSS:
        self.start = self.peak = self.rss()
        self._thread.start()
        self._started.wait()  # the first sample is taken before the measured code runs (a busy machine delays it)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def device_name(device: torch.device) -> str:
    """A readable name of the accelerator, or of the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark_model(
    model: nn.Module,
    step_fn: StepFn,
    batch: Any,
    batch_size: int,
    *,
    precision: str = "auto",
    device: str | None = None,
    steps: int = 5,
    warmup: int = 2,
    matmul_n: int | None = None,
    channels_last: bool = False,
    compile: bool = False,
) -> dict[str, Any]:
    """Time ``steps`` engine steps of ``model`` on ``batch`` (after ``warmup``) and report throughput and efficiency.

    Returns a JSON-ready dict: ``samples_per_s`` and ``step_seconds`` (from the median step; ``step_seconds_min`` is
    the least disturbed one on a shared machine), ``flops_per_step``, ``achieved_flops``
    (FLOP/s), ``peak_matmul_flops`` per dtype, ``fraction_of_peak`` (against the peak of the training precision's
    dtype; fp32 for fp32), memory figures, and the setup.
    """
    dev = select_device(device)
    precision = resolve_precision(precision, dev)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    step = StepModule(model, step_fn)
    net = torch.compile(step) if compile else step
    batch = to_device(batch, dev, channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")

    def amp():
        return autocast(dev, precision)

    def one_step() -> None:
        train_step(net, [batch], optimizer, scaler, amp)  # one optimisation step of one micro-batch

    net.train()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with _PeakRSS() as rss:
        for _ in range(warmup):
            one_step()
        _sync(dev)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            one_step()
            _sync(dev)
            times.append(time.perf_counter() - t0)
    with FlopCounterMode(display=False) as counter:
        one_step()
    flops = counter.get_total_flops()

    n = matmul_n or (8192 if dev.type == "cuda" else 2048)
    peaks = {name: matmul_peak(dev, DTYPES[name], n) for name in ("fp32", "bf16")}
    if precision == "fp16":
        peaks["fp16"] = matmul_peak(dev, torch.float16, n)
    step_s = statistics.median(times)
    achieved = flops / step_s
    memory = (
        {"peak_allocated_bytes": torch.cuda.max_memory_allocated(dev)}
        if dev.type == "cuda"
        else {"peak_rss_bytes": rss.peak, "rss_growth_bytes": rss.peak - rss.start}
    )
    return {
        "device": str(dev),
        "device_name": device_name(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": precision,
        "channels_last": channels_last,
        "compile": compile,
        "batch_size": batch_size,
        "steps": steps,
        "step_seconds": step_s,
        "step_seconds_min": min(times),
        "step_seconds_all": times,
        "samples_per_s": batch_size / step_s,
        "flops_per_step": flops,
        "achieved_flops": achieved,
        "matmul_n": n,
        "peak_matmul_flops": peaks,
        "fraction_of_peak": achieved / peaks[precision],
        "parameters": sum(p.numel() for p in model.parameters()),
        **memory,
    }


def benchmark_method(method: str, scale: str | None = None, batch_size: int | None = None, **kwargs: Any) -> dict:
    """:func:`benchmark_model` for a registered method's model and step at ``scale``; the batch is one device's
    (``batch_size``, else the config's ``micro_batch``, else its global ``batch_size``)."""
    from avlib.methods import get_method

    spec = get_method(method)
    cfg = spec.config(scale)
    model, step_fn = spec.model(cfg), spec.step(cfg)
    n = batch_size or cfg.micro_batch or cfg.batch_size
    result = benchmark_model(model, step_fn, spec.example_batch(cfg, n), n, **kwargs)
    return {"method": method, "scale": cfg.scale, "global_batch": cfg.batch_size, "micro_batch": cfg.micro_batch,
            **result}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("methods", nargs="+", help="registered method names (avlib.methods)")
    p.add_argument("--scale", default=None, help="quick, colab or full (default: AVLIB_SCALE or quick)")
    p.add_argument("--batch-size", type=int, default=None, help="one device's batch (default: the config's "
                   "micro_batch, else its batch_size)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    p.add_argument("--device", default=None)
    p.add_argument("--matmul-n", type=int, default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="write the results (a JSON list) here")
    args = p.parse_args(argv)
    results = [
        benchmark_method(
            m,
            args.scale,
            args.batch_size,
            precision=args.precision,
            device=args.device,
            steps=args.steps,
            warmup=args.warmup,
            matmul_n=args.matmul_n,
            channels_last=args.channels_last,
            compile=args.compile,
        )
        for m in args.methods
    ]
    text = json.dumps(results, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
