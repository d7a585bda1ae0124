"""Mixed precision: which one a device gets, and the autocast context for it."""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "autocast", "cpu_has_native_bf16", "resolve_precision"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (Intel AMX-BF16 or AVX512-BF16, ARM BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    if flags & {"amx_bf16", "avx512_bf16", "bf16"}:
        return True
    return "AMX" in torch.backends.cpu.get_cpu_capability().upper()


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``"auto"`` into the concrete precision for ``device``: ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    ``auto``: bf16 on GPUs that support it, fp16 (with a gradient scaler) on older GPUs, bf16 on CPUs with native bf16
    arithmetic, fp32 elsewhere.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context for a concrete precision (a no-op context for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
