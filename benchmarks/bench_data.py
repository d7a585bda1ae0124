"""Data throughput on this machine: SynthOrchestra scenes/s, AVC pairs/s, the clustering methods' training items/s, and
the spectrograms/s of every registered method's frontend.

Usage::

    python benchmarks/bench_data.py [--seconds 2] [--threads 1] [--device cpu] [--scale full] [--json out.json]

Each measurement repeats its work for about ``--seconds`` seconds after one warm-up call and reports items per second.
Scenes are generated one at a time (as a Dataset does). Spectrograms are computed as each method's step computes them
(:func:`avlib.audio.first_example` on a batch of waveforms, on ``--device``), for the frontend of the method's config
at ``--scale``; DSOL's log-mel (no registered method yet) is measured by itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

import torch

from avlib.audio import DSOLLogMel, first_example, make_frontend
from avlib.data import AVCPairs, SynthOrchestra
from avlib.methods import METHODS, get_method


def rate(work: Callable[[int], int], seconds: float) -> float:
    """Items per second of ``work(i) -> items done``, called with i = 0, 1, … until ``seconds`` have passed."""
    work(0)  # warm-up
    done, calls, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 3:
        done += work(calls + 1)
        calls += 1
    return done / (time.perf_counter() - start)


def scene_benchmarks(seconds: float) -> list[dict]:
    cases = [
        ("solo 64px, 1 s @16 kHz, all 25 frames", {"family": "solo", "duration": 1.0}, None),
        ("solo 64px, 1 s @16 kHz, 1 frame", {"family": "solo", "duration": 1.0}, [12]),
        ("solo 64px, 2 s @16 kHz, all 50 frames", {"family": "solo", "duration": 2.0}, None),
        ("duet 128px, 2 s @16 kHz, 1 frame", {"family": "duet", "image_size": 128, "duration": 2.0}, [25]),
        ("mosaic 128px, 1 s @16 kHz, 1 frame", {"family": "mosaic", "image_size": 128, "duration": 1.0}, [12]),
        ("c4 128px, 2 s @16 kHz, all 50 frames", {"family": "c4", "image_size": 128, "duration": 2.0}, None),
        ("solo 128px, 1 s @48 kHz, 1 frame", {"family": "solo", "image_size": 128, "sample_rate": 48000,
                                              "duration": 1.0}, [12]),
    ]
    rows = []
    for name, kwargs, frames in cases:
        world = SynthOrchestra(size=100_000, seed=0, **kwargs)
        rows.append({"what": f"scene: {name}", "per_s": rate(lambda i, w=world, f=frames: (w.scene(i, f), 1)[1],
                                                           seconds)})
    world = SynthOrchestra(size=100_000, seed=0, duration=2.0)
    pairs = AVCPairs(world, 1.0, negative_mode="frame_aligned")
    rows.append({"what": "AVC pair: 64px, 1 s window of 2 s clips @16 kHz", "per_s": rate(lambda i: (pairs[i], 1)[1],
                                                                                         seconds)})
    small = SynthOrchestra(size=256, seed=0, duration=2.0)
    cached = AVCPairs(small, 1.0, negative_mode="frame_aligned", cache_audio=True, length=100_000)
    for i in range(0, 2 * len(small), 2):
        cached[i]  # fill the audio cache
    rows.append({"what": "AVC pair: same, 256 clips with cache_audio", "per_s": rate(lambda i: (cached[i], 1)[1],
                                                                                     seconds)})
    return rows


def clustering_benchmarks(seconds: float) -> list[dict]:
    """Training items of the clustering methods' in-memory worlds (middle frame through the method's transform, the
    waveform cut to the network's input), as ``train_data`` builds them."""
    rows = []
    for name in ("dmc", "cavl"):
        method = get_method(name)
        cfg = method.config("quick")
        cfg = cfg.replace(data={**cfg.data, "size": 16})

        def work(i: int, m=method, c=cfg) -> int:
            return len(m.train_data(c, None, i))

        rows.append({"what": f"{name} quick training items (scene, transform, waveform)", "per_s": rate(work, seconds)})
    return rows


def frontend_benchmarks(seconds: float, device: torch.device, batch: int, scale: str) -> list[dict]:
    cases = []
    for name in sorted(METHODS):
        method = get_method(name)
        cfg = method.config(scale)
        wave = method.example_batch(cfg, batch)["audio"]
        cases.append((f"{name} {scale} ({cfg.audio['frontend']}, {wave.shape[-1]} samples)", make_frontend(cfg.audio),
                      wave))
    cases.append(("DSOL log-mel 201x64 (1 s @16 kHz)", DSOLLogMel(), 0.1 * torch.randn(batch, 16000)))
    rows = []
    for name, module, wave in cases:
        wave = wave.to(device)

        def work(i: int, m: torch.nn.Module = module, x: torch.Tensor = wave) -> int:
            with torch.no_grad():
                spec = first_example(m, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return spec.shape[0]

        rows.append({"what": f"frontend: {name}, batch {batch}", "per_s": rate(work, seconds)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    parser.add_argument("--device", default="cpu", help="device for the frontends")
    parser.add_argument("--batch", type=int, default=32, help="frontend batch size")
    parser.add_argument("--scale", default="full", help="the methods' configs whose frontends are measured")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# avlib data benchmark — {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), frontends on {device}")
    rows = (scene_benchmarks(args.seconds) + clustering_benchmarks(args.seconds)
            + frontend_benchmarks(args.seconds, device, args.batch, args.scale))
    width = max(len(r["what"]) for r in rows)
    for r in rows:
        print(f"{r['what']:<{width}}  {r['per_s']:10.1f} /s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "device": str(device), "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
