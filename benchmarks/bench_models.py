"""Benchmark every registered method at one scale, in bf16 (or fp16) and fp32, and write one JSON file.

The methods are those of ``avlib.methods``: L3-Net, AVE-Net, AVOL-Net, DMC and CAVL (at full scale: VGG16 + VGGish
on 256x256 images and 496x64 log-mels for DMC, on 256x256 images and 512x432 log-frequency spectrograms for CAVL).

    python benchmarks/bench_models.py --scale full --batch-size 2        # CPU: a batch of 2 per full-scale model
    python benchmarks/bench_models.py --scale full                       # GPU: the papers' per-GPU batch sizes
    python benchmarks/bench_models.py --scale full --methods dmc cavl    # some of them

The default batch is what one device takes at a time under the config (``harness.benchmark_method``): its
``micro_batch`` (L3-Net 16, AVE-Net / AVOL-Net 128: the papers' per-GPU share of their global batches of 256 and
2048), else its global ``batch_size`` (DMC 64, CAVL 32, trained on one device).

Results go to ``benchmarks/results/<scale>-<device>.json`` (or ``--out``): one record per method and precision, as
produced by ``harness.benchmark_method``, plus the mixed-precision speed-up over fp32 per method.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import benchmark_method  # noqa: E402

from avlib.engine import resolve_precision  # noqa: E402
from avlib.methods import METHODS  # noqa: E402
from avlib.runtime import select_device  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="benchmark all registered methods")
    p.add_argument("--scale", default="full")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: each config's per-device batch (micro_batch, else batch_size)")
    p.add_argument("--methods", nargs="*", default=sorted(METHODS), choices=sorted(METHODS))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--matmul-n", type=int, default=None, help="size of the peak-FLOP/s matrix product")
    p.add_argument("--device", default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = select_device(args.device)
    mixed = resolve_precision("auto", device)
    precisions = [mixed, "fp32"] if mixed != "fp32" else ["fp32"]
    records, speedups = [], {}
    for method in args.methods:
        runs = {
            prec: benchmark_method(
                method,
                args.scale,
                args.batch_size,
                precision=prec,
                device=args.device,
                steps=args.steps,
                warmup=args.warmup,
                matmul_n=args.matmul_n,
                channels_last=args.channels_last,
            )
            for prec in precisions
        }
        records.extend(runs.values())
        if len(runs) == 2:
            speedups[method] = runs["fp32"]["step_seconds"] / runs[mixed]["step_seconds"]
        print(method, {k: round(v["samples_per_s"], 2) for k, v in runs.items()}, flush=True)
    out = args.out or Path(__file__).parent / "results" / f"{args.scale}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"records": records, f"speedup_{mixed}_over_fp32": speedups}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
