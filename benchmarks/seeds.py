"""The loop every claims benchmark shares: the same chapter runs once per seed, one JSON line each, then a summary.

A claims benchmark (``bench_dmc.py``, ``bench_cavl.py``, ...) defines ``run_seed`` (train and score one seed, return
a JSON-able dict) and ``summarise`` (the per-seed lists a reader wants side by side, and ``all_hold``). This module
parses the options they all take, runs the seeds and sets the exit status: 0 when every claim held on every seed.

Threads: without ``--threads`` torch keeps its default (one per core), which is what the book build uses on the same
machine. Trained models can depend on the thread count (the order of floating-point sums in a matrix product
changes), so a benchmark meant to predict the build's numbers should run with the default.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every claims benchmark takes; a script adds its own to the returned parser."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--scale", default=None, help="quick | colab | full (default: AVLIB_SCALE, else quick)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own, as in the book build)")
    p.add_argument("--runs", type=Path, default=None, help="keep each seed's runs here (a rerun loads them)")
    return p


def run(args: argparse.Namespace, run_seed: Callable[[int], dict],
        summarise: Callable[[list[dict]], dict]) -> int:
    """Run ``run_seed`` for each of ``args.seeds``, print each result and the summary; the exit status."""
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for seed in args.seeds:
        results.append(run_seed(seed))
        print(json.dumps(results[-1]), flush=True)
    summary = {"seeds": args.seeds, "threads": torch.get_num_threads(), **summarise(results)}
    print(json.dumps(summary), flush=True)
    return 0 if summary["all_hold"] else 1
