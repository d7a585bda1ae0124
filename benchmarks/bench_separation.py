"""Chapter 5's claims about visually guided separation, measured over several seeds.

For each seed k, the chapter's runs at its config (the scale's separation preset): the CAVL guide (the scale's
CAVL preset, trained for ``GUIDE_STEPS`` steps as in the chapter) and four separators trained with seed k on the
world with seed k — audio-only (a constant vector), Center, Mask (ratio target, Eq. 8) and Mask with the binary
target —, all scored by BSS Eval on the same mixtures of two test scenes of different categories (the world with
seed k + 1), beside the mixture as the estimate (lower bound) and the ideal ratio and binary masks (upper bounds).
Also the chapter's failure case (the Mask separator on mixtures of two scenes of the same category), the ideal
ratio mask without its clip at 1, and a linear probe of the two visual vectors for the instrument.

It checks the claims the chapter asserts, with the chapter's margins, prints one JSON line per seed and a summary;
the exit status is 1 if a claim fails on some seed. ``Mask - Center`` (the paper's Table 4 order) is reported, not
checked: the chapter prints it, because at this scale it does not hold on every seed.

    AVLIB_SCALE=quick .venv/bin/python benchmarks/bench_separation.py --seeds 0 1 2 [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from avlib.audio import first_example
from avlib.eval.representation import linear_probe
from avlib.eval.separation import bss_scores
from avlib.methods import get_method, train
from avlib.nets.unet import CAVLGuide
from avlib.runtime import choose_scale

GUIDE_STEPS = 100  # the chapter's CAVL guide (the quick CAVL preset trains 250)
VARIANTS = {"audio-only": {"visual": "constant"}, "Center": {"visual": "center"}, "Mask": {"visual": "mask"},
            "Mask, binary target": {"visual": "mask", "mask_target": "binary"}}
# margins the chapter asserts (SDR, dB)
IRM_OVER_MASK = 5.0  # the ideal ratio mask over the Mask separator
GUIDED_OVER_AUDIO_ONLY = 1.0  # Center and Mask each over the audio-only separator (section 5.5)
BINARY_OVER_AUDIO_ONLY = 1.5  # the Mask separator with the binary target over the audio-only one
AUDIO_ONLY_NEAR_MIXTURE = 1.0  # |audio-only - mixture|: without the picture, no better than doing nothing
CLIPPED_OVER_UNCLIPPED = 0.5  # the ideal ratio mask clipped to [0, 1] over the unclipped one (section 5.8)
SAME_CATEGORY_DROP = 1.0  # the Mask separator on different-category mixtures over same-category ones (section 5.7)


def same_category_pairs(labels: torch.Tensor) -> torch.Tensor:
    """Disjoint pairs of items of the same category, in order within each category (as the chapter builds them)."""
    same = []
    for k in labels.unique().tolist():
        idx = (labels == k).nonzero().flatten().tolist()
        same += [idx[i:i + 2] for i in range(0, len(idx) - 1, 2)]
    return torch.tensor(same)


def run_seed(seed: int, scale: str | None, out: str | None) -> dict:
    t0 = time.time()
    method = get_method("separation")
    scale = choose_scale(scale or "auto")
    cfg = method.config(scale)
    runs = Path(out or tempfile.mkdtemp()) / f"seed{seed}"
    quiet = {"progress": False, "live_plot": False}
    cavl = train(cfg.cavl.replace(steps=GUIDE_STEPS), seed=seed, out=runs / "cavl", resume=True, **quiet)
    scores, seconds = {}, {}
    for name, change in VARIANTS.items():
        c = method.config(scale, **change)
        run = train(c, seed=seed, out=runs / name.replace(", ", "_").replace(" ", "_"), resume=True,
                    init_from=None if c.init_from is None else cavl.model, **quiet)
        scores[name], seconds[name] = run.scores, round(run.result.seconds, 1)
        if name == "Mask":
            mask_run = run
    bounds = scores["Mask"]
    sdr = {"mixture": bounds["mixture"]["sdr"], **{n: s["model"]["sdr"] for n, s in scores.items()},
           "ideal binary": bounds["ideal_binary"]["sdr"], "ideal ratio": bounds["ideal_ratio"]["sdr"]}
    table = {"mixture": bounds["mixture"], **{n: s["model"] for n, s in scores.items()},
             "ideal binary": bounds["ideal_binary"], "ideal ratio": bounds["ideal_ratio"]}

    held = method.held_out(cfg, None, seed)
    stft, _ = method.frontends(cfg)
    same = same_category_pairs(held["label"])
    same_held = {**held, "pairs": same, "ref": stft.prepare(held["audio"])[same]}
    same_sdr = bss_scores(method.separate(mask_run.cfg, mask_run.model, same_held)["estimate"],
                          same_held["ref"])["sdr"]

    # the ideal ratio mask without the clip at 1 (no sigmoid could output it), applied as every other mask
    x = stft.stft(held["ref"].sum(1))
    own = stft.to_log_frequency(stft.stft(held["ref"].flatten(0, 1)).abs()).unflatten(0, tuple(held["ref"].shape[:2]))
    ratio = own / (stft.to_log_frequency(x.abs())[:, None] + stft.eps)
    unclipped = stft.apply_mask(ratio.flatten(0, 1), x.repeat_interleave(2, dim=0), held["ref"].shape[-1])
    unclipped_sdr = bss_scores(unclipped.unflatten(0, tuple(held["ref"].shape[:2])), held["ref"])["sdr"]

    # how much each visual vector says about the instrument: a linear probe, trained on another world's scenes
    probe_train = method.held_out(cfg.replace(eval_size=256), None, seed + 1)  # the world with seed k + 2
    _, fe = method.frontends(cfg)
    probe = {}
    for rep in ("center", "mask"):
        guide = CAVLGuide(cavl.model, rep)
        vec = {k: guide(d["image"], first_example(fe, d["audio"]))["visual"]
               for k, d in (("train", probe_train), ("test", held))}
        probe[rep] = round(linear_probe(vec["train"], probe_train["label"], vec["test"], held["label"]), 3)

    checks = {
        "IRM over Mask": sdr["ideal ratio"] >= sdr["Mask"] + IRM_OVER_MASK,
        "Center over audio-only": sdr["Center"] >= sdr["audio-only"] + GUIDED_OVER_AUDIO_ONLY,
        "Mask over audio-only": sdr["Mask"] >= sdr["audio-only"] + GUIDED_OVER_AUDIO_ONLY,
        "binary target over audio-only": sdr["Mask, binary target"] >= sdr["audio-only"] + BINARY_OVER_AUDIO_ONLY,
        "audio-only near the mixture": abs(sdr["audio-only"] - sdr["mixture"]) <= AUDIO_ONLY_NEAR_MIXTURE,
        "same category below different": sdr["Mask"] >= same_sdr + SAME_CATEGORY_DROP,
        "clipped IRM over unclipped": sdr["ideal ratio"] >= unclipped_sdr + CLIPPED_OVER_UNCLIPPED,
    }
    return {"seed": seed, "seconds": round(time.time() - t0, 1), "train_seconds": seconds,
            "cavl_ciou50": round(cavl.scores["related_paper_ciou50"], 3),
            "guide_on_object": round(bounds["guide_on_object"], 3),
            "table": {n: {k: round(v, 2) for k, v in s.items()} for n, s in table.items()},
            "sdr": {n: round(v, 2) for n, v in sdr.items()}, "same_category_sdr": round(same_sdr, 2),
            "unclipped_irm_sdr": round(unclipped_sdr, 2),
            "mask_minus_center": round(sdr["Mask"] - sdr["Center"], 2),  # printed by the chapter, not asserted
            "binary_minus_ratio": round(sdr["Mask, binary target"] - sdr["Mask"], 2), "vector_probe": probe,
            "checks": checks, "holds": all(checks.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scale", default=None, help="quick | colab | full (default: AVLIB_SCALE, else quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="keep each seed's runs in DIR/seed<k> (and resume them)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for seed in args.seeds:
        res = run_seed(seed, args.scale, args.out)
        results.append(res)
        print(json.dumps(res), flush=True)
    summary = {"seeds": args.seeds, "threads": torch.get_num_threads(),
               "sdr": {k: [r["sdr"][k] for r in results] for k in results[0]["sdr"]},
               "same_category_sdr": [r["same_category_sdr"] for r in results],
               "mask_minus_center": [r["mask_minus_center"] for r in results],
               "failed": {r["seed"]: [k for k, ok in r["checks"].items() if not ok] for r in results},
               "all_hold": all(r["holds"] for r in results)}
    print(json.dumps(summary), flush=True)
    return 0 if summary["all_hold"] else 1


if __name__ == "__main__":
    sys.exit(main())
