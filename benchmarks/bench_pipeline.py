"""End-to-end training throughput from a clip directory, against the step-only throughput of the same model.

For each method at full scale this measures

- ``pipeline``: samples/s of the engine's own loop (:func:`avlib.methods.train`) reading a real-format clip directory
  (written by the dataset scripts from MP4s): decoding on DataLoader workers, pinned memory on a GPU, spectrograms
  computed in batches on the device by the method's step;
- ``step_only``: samples/s of the same model's optimisation step on a batch already on the device
  (:func:`harness.benchmark_method`);

and reports their ratio (aim: >= 0.9, i.e. the data pipeline hides behind the step): ``ratio`` of the medians, and
``ratio_fastest`` of the least disturbed steps (on a shared machine the load changes between the two measurements;
the load average is reported beside them). On a CPU the decoding workers and the step share the same cores: give the
step ``--threads`` and the workers the rest.

    python benchmarks/bench_pipeline.py                        # every method, on a directory built here
    python benchmarks/bench_pipeline.py l3 cavl --batch-size 16 --workers 8 --steps 20 --data ROOT

``ROOT`` (built by :func:`build_real_dirs` when not given) holds one clip directory per dataset, laid out as each
method reads it (``avlib layout``): ``ks`` (Kinetics-Sounds: l3, ave, avol, dmc), ``levels`` (AudioSet's curriculum
levels c1..c4: cavl, counting), ``solo`` (MUSIC solo clips, CAVL's split: separation), ``dsol`` (MUSIC, DSOL's split:
``solo``, ``mosaic``, ``duet``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# which clip directory of build_real_dirs each method trains on, and the settings that keep its stages short
DATA_OF = {"l3": "ks", "ave": "ks", "avol": "ks", "dmc": "ks", "cavl": "levels", "counting": "levels",
           "separation": "solo", "dsol": "dsol"}


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"data_script_{name}", ROOT / "data_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _harness():
    spec = importlib.util.spec_from_file_location("harness", HERE / "harness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------- real-format clip directories
ONTOLOGY = [  # a corner of AudioSet's ontology (ids and names as in the real one): four third-level sources
    {"id": "/m/04rlf", "name": "Music", "child_ids": ["/m/04szw"]},
    {"id": "/m/04szw", "name": "Musical instrument", "child_ids": ["/m/0fx80y", "/m/07y_7", "/m/05r5c"]},
    {"id": "/m/0fx80y", "name": "Plucked string instrument", "child_ids": ["/m/042v_gx"]},
    {"id": "/m/042v_gx", "name": "Acoustic guitar", "child_ids": []},
    {"id": "/m/07y_7", "name": "Violin, fiddle", "child_ids": []},
    {"id": "/m/05r5c", "name": "Piano", "child_ids": []},
    {"id": "/m/0jbk", "name": "Animal", "child_ids": ["/m/068hy"]},
    {"id": "/m/068hy", "name": "Domestic animals, pets", "child_ids": ["/m/0bt9lr"]},
    {"id": "/m/0bt9lr", "name": "Dog", "child_ids": []},
]
SOURCES = ["/m/042v_gx", "/m/07y_7", "/m/05r5c", "/m/0bt9lr"]  # one third-level source each (guitar -> plucked)
INSTRUMENTS = ["accordion", "cello", "flute", "violin"]
KS_CLASSES = ["playing violin", "playing drums", "playing piano", "singing"]


def _ytid(tag: str, k: int) -> str:
    return f"{tag}{k:09d}"[-11:]


def _scenes(family: str, n: int, seconds: float, size: int, rate: int, seed: int, by_category: int = 0):
    """``n`` scenes of a family (``by_category``: the first scene of each of that many categories, for lists by
    instrument)."""
    from avlib.data import SynthOrchestra

    world = SynthOrchestra(n_categories=max(by_category, 4), family=family, size=10_000, image_size=size,
                           sample_rate=rate, duration=seconds, fps=10, seed=seed)
    if not by_category:
        return [world.scene(i) for i in range(n)]
    found: dict[int, list] = {}
    i = 0
    while min((len(found.get(c, [])) for c in range(by_category)), default=0) < n:
        label = world.clip_label(i)
        if label < by_category and len(found.setdefault(label, [])) < n:
            found[label].append(world.scene(i))
        i += 1
    return found


def _mp4(scene, path: Path) -> Path:
    from avlib.data.video import scene_to_mp4

    return scene_to_mp4(scene, path)


def _quiet(fn, argv: list[str]) -> int:
    with contextlib.redirect_stderr(io.StringIO()) as err:
        status = fn(argv)
    if status != 0:
        raise RuntimeError(f"data script {argv[:2]} exited with {status}:\n{err.getvalue()[-2000:]}")
    return status


def build_real_dirs(root: str | os.PathLike, size: int = 64, stored: int = 64, fps: float = 5.0,
                    long_seconds: float = 10.0, seed: int = 0, which: Sequence[str] = ("ks", "levels", "solo", "dsol")
                    ) -> dict[str, Path]:
    """Real-format clip directories for every method under ``root``: SynthOrchestra scenes encoded as MP4s (H.264 /
    AAC, ``size`` pixels), served by a local mirror to the dataset scripts (``kinetics_sounds.py``, ``audioset.py
    --subset curriculum``, ``music.py --scheme cavl`` and ``--scheme dsol``) with hand-made lists in the real files'
    formats, frames stored at a short side of ``stored`` and ``fps``, then laid out per method (``avlib.data.layouts``).
    Returns ``{name: directory}`` for the ``which`` of ``ks``, ``levels``, ``solo``, ``dsol``."""
    root = Path(root)
    mirror = root / "mirror"
    common = ["--mirror", str(mirror), "--no-progress", "--size", str(stored), "--fps", str(fps), "--retries", "0",
              "--backoff", "0", "--workers", "2"]
    out: dict[str, Path] = {}

    (root / "lists").mkdir(parents=True, exist_ok=True)
    if "ks" in which:
        out["ks"] = _kinetics(root, mirror, common, size, seed)
    if "levels" in which:
        out["levels"] = _curriculum(root, mirror, common, size, long_seconds, seed)
    if "solo" in which:
        out["solo"] = _music_cavl(root, mirror, common, size, long_seconds, seed)
    if "dsol" in which:
        out["dsol"] = _music_dsol(root, mirror, common, size, seed)
    return out


def _kinetics(root: Path, mirror: Path, common: list[str], size: int, seed: int) -> Path:
    """Kinetics-Sounds (L3-Net): 5 s solo videos at 48 kHz, two per class, the CSV's split."""
    rows = ["label,youtube_id,time_start,time_end,split,is_cc"]
    scenes = _scenes("solo", 2, 5.0, size, 48000, seed, by_category=len(KS_CLASSES))
    for c, name in enumerate(KS_CLASSES):
        for k, scene in enumerate(scenes[c]):
            vid = _ytid(f"k{c}", k)
            _mp4(scene, mirror / f"{vid}.mp4")
            rows.append(f"{name},{vid},0,5,{'train' if k == 0 else 'test'},0")
    (root / "lists" / "ks.csv").write_text("\n".join(rows) + "\n")
    _quiet(_script("kinetics_sounds").main, ["--out", str(root / "ks"), "--csv", str(root / "lists" / "ks.csv"),
                                             "--sample-rate", "48000", *common])
    return root / "ks"


def _curriculum(root: Path, mirror: Path, common: list[str], size: int, long_seconds: float, seed: int) -> Path:
    """AudioSet's curriculum (CAVL): three 10 s videos per level c1..c4, labels giving 1..4 third-level sources."""
    from avlib.data.layouts import curriculum_levels

    lists = root / "lists" / "audioset"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "ontology.json").write_text(json.dumps(ONTOLOGY))
    lines = ["# Segments csv created Sun Mar  5 10:54:31 2017", "# num_ytids=12, num_segs=12, num_unique_labels=4",
             "# YTID, start_seconds, end_seconds, positive_labels"]
    for level in range(1, 5):
        for k, scene in enumerate(_scenes(f"c{level}", 3, long_seconds, size, 11025, seed + level)):
            vid = _ytid(f"c{level}", k)
            _mp4(scene, mirror / f"{vid}.mp4")
            lines.append(f'{vid}, 0.000, {long_seconds:.3f}, "{",".join(SOURCES[:level])}"')
    (lists / "balanced_train_segments.csv").write_text("\n".join(lines) + "\n")
    _quiet(_script("audioset").main, ["--out", str(root / "audioset"), "--lists", str(lists), "--subset",
                                      "curriculum", "--sample-rate", "11025", *common])
    curriculum_levels(root / "audioset", root / "levels", test_share=0.34)
    return root / "levels"


def _music_cavl(root: Path, mirror: Path, common: list[str], size: int, long_seconds: float, seed: int) -> Path:
    """MUSIC with CAVL's split (10 s clips): three solo videos per instrument (val, test, train), no duets."""
    from avlib.data.layouts import solo_clips

    solo = _scenes("solo", 3, long_seconds, size, 11025, seed + 7, by_category=len(INSTRUMENTS))
    listed = {}
    for c, name in enumerate(INSTRUMENTS):
        listed[name] = [_ytid(f"m{c}", k) for k in range(3)]
        for vid, scene in zip(listed[name], solo[c], strict=True):
            _mp4(scene, mirror / f"{vid}.mp4")
    music = root / "lists" / "music_cavl"
    music.mkdir(parents=True, exist_ok=True)
    (music / "MUSIC_solo_videos.json").write_text(json.dumps({"videos": listed}))
    _quiet(_script("music").main, ["--out", str(root / "music_cavl"), "--lists", str(music), "--scheme", "cavl",
                                   "--no-duet", "--sample-rate", "11025", *common])
    solo_clips(root / "music_cavl", root / "solo")
    return root / "solo"


def _music_dsol(root: Path, mirror: Path, common: list[str], size: int, seed: int) -> Path:
    """MUSIC with DSOL's split (1 s clips): seven solo videos per instrument (five of 1 s for the test, one of 3 s for
    stage one, one of 3 s for the mosaics) and three duets of 3 s (two test)."""
    from avlib.data.layouts import dsol_layout

    solo = _scenes("solo", 2, 3.0, size, 16000, seed + 11, by_category=len(INSTRUMENTS))
    short = _scenes("solo", 1, 1.0, size, 16000, seed + 12, by_category=len(INSTRUMENTS))
    listed = {}
    for c, name in enumerate(INSTRUMENTS):
        listed[name] = [_ytid(f"d{c}", k) for k in range(7)]
        for k, vid in enumerate(listed[name]):
            _mp4(short[c][0] if k < 5 else solo[c][k - 5], mirror / f"{vid}.mp4")  # five test videos: one, again
    duets = [_ytid("du", k) for k in range(3)]
    for vid, scene in zip(duets, _scenes("duet", 3, 3.0, size, 16000, seed + 13), strict=True):
        _mp4(scene, mirror / f"{vid}.mp4")
    music = root / "lists" / "music_dsol"
    music.mkdir(parents=True, exist_ok=True)
    (music / "MUSIC_solo_videos.json").write_text(json.dumps({"videos": listed}))
    (music / "MUSIC_duet_videos.json").write_text(json.dumps({"videos": {"cello violin": duets}}))
    _quiet(_script("music").main, ["--out", str(root / "music_dsol"), "--lists", str(music), "--scheme", "dsol",
                                   "--sample-rate", "16000", *common])
    dsol_layout(root / "music_dsol", root / "dsol", mosaics=4, seed=seed)
    return root / "dsol"


# ------------------------------------------------------------------------------------------------------ the benchmark
def bench_config(method: str, batch_size: int):
    """The full config of ``method`` as benchmarked: one stage (CAVL's first level, DSOL's localization, the
    counting net from scratch), the given per-step batch, the lr x 1e-3 (the speed does not depend on it, and a few
    steps at batch 2 may diverge, e.g. the counting net's SGD at 1e-2, which would stop the loop)."""
    from avlib.methods import get_method

    base = get_method(method).config("full")
    cfg = base.replace(batch_size=batch_size, micro_batch=None, lr=base.lr * 1e-3)
    if method == "cavl":
        cfg = cfg.replace(levels=(1,))
    if method == "dsol":
        cfg = cfg.replace(phase="loc")
    return get_method(method).stages(cfg)[0].cfg


class Repeated:
    """A map-style dataset seen ``length`` items long (item ``i`` is ``data[i % len(data)]``, decoded again each time),
    so that one epoch spans the measured steps as on a real dataset (thousands of steps per epoch; the engine starts
    one DataLoader per epoch, and its workers with it)."""

    def __init__(self, data: Any, length: int) -> None:
        self.data, self.length = data, max(int(length), len(data))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Any:
        return self.data[i % len(self.data)]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)


def pipeline_rate(method: str, data: Path, batch_size: int, steps: int, workers: int, device: str | None = None
                  ) -> dict[str, Any]:
    """Samples/s of the engine's loop on ``data`` (``workers`` DataLoader processes, pinned memory on a GPU): the
    median time between the starts of consecutive steps (data wait, transfer, step and optimiser), the first two
    steps (workers starting, warm-up) left out, all within one epoch (:class:`Repeated`)."""
    from avlib.engine import TrainConfig, fit
    from avlib.methods import get_method

    m = get_method(method)
    cfg = bench_config(method, batch_size)
    model = m.model(cfg)
    train = m.train_data(cfg, data, 0)
    if cfg.init_from is not None:  # the separation net's guide: a CAVL net (weights do not matter for speed)
        model = m.init(cfg, model, get_method("cavl").model(cfg.cavl.replace(k_audio=1)), train)
    step, starts = m.step(cfg), []

    def timed(net, batch):
        starts.append(time.perf_counter())
        return step(net, batch)

    tc = TrainConfig(steps=steps + 2, batch_size=batch_size, precision="auto", device=device, progress=False,
                     log_every=10**9, num_workers=workers, channels_last=cfg.channels_last, live_plot=False)
    fit(model, timed, Repeated(train, (steps + 2) * batch_size), m.make_optimizer(cfg, model), tc)
    gaps = sorted(b - a for a, b in zip(starts[2:], starts[3:], strict=False))
    if not gaps:  # two steps measured at least: steps >= 2
        raise ValueError("pipeline_rate: steps must be at least 2")
    median = gaps[len(gaps) // 2] if len(gaps) % 2 else sum(gaps[len(gaps) // 2 - 1 : len(gaps) // 2 + 1]) / 2
    return {"samples_per_s": batch_size / median, "step_seconds": median, "intervals": gaps, "workers": workers}


def step_rate(method: str, batch_size: int, steps: int, device: str | None = None) -> dict[str, Any]:
    """Samples/s of the same model's step on a batch already on the device (:func:`harness.benchmark_model`), its
    memory sampler every second instead of every millisecond: that thread alone slows a CPU step by 15-25 % (DSOL
    at batch 2, one thread: 1.17-1.45 s against 0.96-1.05 s), which the pipeline's loop does not pay."""
    from avlib.methods import get_method

    harness = _harness()
    harness._PeakRSS.__init__.__defaults__ = (1.0,)  # this module's copy of the harness only
    m = get_method(method)
    cfg = bench_config(method, batch_size)
    model = m.model(cfg)
    if cfg.init_from is not None:
        model = m.init(cfg, model, get_method("cavl").model(cfg.cavl.replace(k_audio=1)), None)
    result = harness.benchmark_model(model, m.step(cfg), m.example_batch(cfg, batch_size), batch_size,
                                        device=device, steps=steps, warmup=1, matmul_n=512,
                                        channels_last=cfg.channels_last)
    return {"samples_per_s": result["samples_per_s"], "step_seconds": result["step_seconds"],
            "intervals": result["step_seconds_all"], "precision": result["precision"]}


def bench(method: str, data_root: Path, batch_size: int, steps: int, workers: int, device: str | None = None
          ) -> dict[str, Any]:
    data = data_root / DATA_OF[method]
    pipe = pipeline_rate(method, data, batch_size, steps, workers, device)
    only = step_rate(method, batch_size, steps, device)
    return {"method": method, "scale": "full", "batch_size": batch_size, "workers": workers,
            "pipeline_samples_per_s": pipe["samples_per_s"], "step_only_samples_per_s": only["samples_per_s"],
            "ratio": pipe["samples_per_s"] / only["samples_per_s"],
            "ratio_fastest": min(only["intervals"]) / min(pipe["intervals"]), "pipeline_step_s": pipe["step_seconds"],
            "step_only_step_s": only["step_seconds"], "pipeline_intervals": pipe["intervals"],
            "step_only_intervals": only["intervals"], "precision": only["precision"], "data": str(data)}


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("methods", nargs="*", default=list(DATA_OF), help=f"default: {' '.join(DATA_OF)}")
    p.add_argument("--data", type=Path, help="root of the clip directories (default: build them in --work)")
    p.add_argument("--work", type=Path, default=Path("bench-pipeline-data"), help="where to build them")
    p.add_argument("--size", type=int, default=128, help="pixels of the MP4s built (default 128)")
    p.add_argument("--stored", type=int, default=256, help="short side of the stored frames (default 256)")
    p.add_argument("--batch-size", type=int, default=2, help="items per step (default 2: this CPU)")
    p.add_argument("--steps", type=int, default=3, help="steps measured (after two of warm-up; default 3)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the CPUs, at most 8)")
    p.add_argument("--threads", type=int, help="torch threads (default torch's)")
    p.add_argument("--device", help="default: the best available")
    p.add_argument("--out", type=Path, help="write the results as JSON lines here too")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = args.workers if args.workers is not None else min(os.cpu_count() or 1, 8)
    root = args.data
    if root is None:
        root = args.work
        if not (root / "dsol" / "solo" / "manifest.jsonl").is_file():
            shutil.rmtree(root, ignore_errors=True)
            build_real_dirs(root, size=args.size, stored=args.stored)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(json.dumps({"load_average": load, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                      "workers": workers}), flush=True)
    results = []
    for method in args.methods:
        try:
            r = bench(method, root, args.batch_size, args.steps, workers, args.device)
        except Exception as e:  # noqa: BLE001 - one method's failure is reported, the others still run
            r = {"method": method, "error": f"{type(e).__name__}: {e}", "ratio": float("nan")}
        r["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        results.append(r)
        print(json.dumps(r), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
    low = [r["method"] for r in results if not r["ratio"] >= 0.9]
    print(f"ratio >= 0.9 for {len(results) - len(low)} of {len(results)} methods" +
          (f"; below: {', '.join(low)}" if low else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
