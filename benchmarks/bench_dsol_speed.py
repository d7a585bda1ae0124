"""DSOL at full scale: the stage-1 (localization) and stage-2 (matching) steps in fp32 and bf16 (samples/s, % of the
measured matrix-product peak, through ``harness.benchmark_model``), and one dictionary round (Eq. 2 features over the
stage-1 set + the k-means of Eq. 3) as a fraction of an epoch of stage-1 localization steps (and of a whole round,
classification steps included).

    python benchmarks/bench_dsol_speed.py                      # CPU: batch 8, a stage-1 set of round_steps x 32 items
    python benchmarks/bench_dsol_speed.py --batch-size 32      # GPU: the paper's batch

The stage-1 set is the full config's epoch, ``round_steps`` batches of 32 (19,200 items): the extraction is timed on
``--extract-items`` of them and scaled, the k-means runs on that many 512-d vectors. The load average is recorded
beside the numbers (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import StackDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import benchmark_model  # noqa: E402

from avlib.audio import make_frontend  # noqa: E402
from avlib.engine import autocast, resolve_precision  # noqa: E402
from avlib.methods import get_method  # noqa: E402
from avlib.methods.dsol import DSOLStep, dictionary_kmeans, object_features  # noqa: E402
from avlib.runtime import select_device  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=None, help="default: 8 on the CPU, the config's 32 elsewhere")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--extract-items", type=int, default=64, help="stage-1 items whose feature extraction is timed")
    p.add_argument("--device", default=None)
    p.add_argument("--contiguous", action="store_true", help="NCHW tensors (default: channels_last, 1.6x faster "
                   "in bf16 on this CPU)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = select_device(args.device)
    method = get_method("dsol")
    cfg = method.config("full")
    n = args.batch_size or (8 if device.type == "cpu" else cfg.batch_size)
    mixed = resolve_precision("auto", device)
    precisions = [mixed, "fp32"] if mixed != "fp32" else ["fp32"]
    stage1 = StackDataset(**method.example_batch(cfg, max(args.extract_items, cfg.n_keys)))
    records = {}
    for phase in ("loc", "match"):
        plan = cfg.replace(phase=phase, dictionary_round=0 if phase == "loc" else cfg.rounds + 1)
        for prec in precisions:
            torch.manual_seed(0)
            model = method.model(plan)
            step = DSOLStep(plan, make_frontend(plan.audio), stage1=lambda: stage1)
            records[f"{phase}_{prec}"] = benchmark_model(model, step, method.example_batch(plan, n), n,
                                                         precision=prec, device=args.device, steps=args.steps,
                                                         warmup=args.warmup, channels_last=not args.contiguous)
            r = records[f"{phase}_{prec}"]
            print(f"{phase} {prec}: {r['samples_per_s']:.2f} samples/s, {100 * r['fraction_of_peak']:.1f}% of the "
                  f"{prec} matmul peak", flush=True)

    # one dictionary round: Eq. 2 over the stage-1 set (timed on extract-items, scaled), then Eq. 3 on N vectors
    n_items = cfg.round_steps * cfg.batch_size
    model = method.model(cfg).to(device)
    if not args.contiguous:
        model.to(memory_format=torch.channels_last)
    frontend = make_frontend(cfg.audio)
    with autocast(device, mixed):
        object_features(model, stage1, frontend, batch_size=n)  # warm-up
        t0 = time.perf_counter()
        o, _ = object_features(model, stage1, frontend, batch_size=n)
        extract_per_item = (time.perf_counter() - t0) / len(stage1)
    feats = o[torch.randint(o.shape[0], (n_items,))] + 0.01 * torch.randn(n_items, o.shape[1], device=o.device)
    t0 = time.perf_counter()
    dictionary_kmeans(feats, cfg.n_keys, cfg.kmeans_restarts, cfg.kmeans_iters)
    kmeans_s = time.perf_counter() - t0
    step_s = cfg.batch_size / records[f"loc_{mixed}"]["samples_per_s"]  # a stage-1 step of the paper's batch
    epoch_s = cfg.round_steps * step_s
    round_s = extract_per_item * n_items + kmeans_s
    summary = {"stage1_items": n_items, "precision": mixed, "extract_seconds": extract_per_item * n_items,
               "kmeans_seconds": kmeans_s, "epoch_seconds": epoch_s, "dictionary_round_fraction": round_s / epoch_s,
               "fraction_of_a_round_with_classification": round_s / ((cfg.round_steps + cfg.cls_steps) * step_s),
               "load_average": os.getloadavg(), "threads": torch.get_num_threads()}
    print(json.dumps(summary, indent=2))
    out = args.out or Path(__file__).parent / "results" / f"dsol-full-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": records, "dictionary_round": summary}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
