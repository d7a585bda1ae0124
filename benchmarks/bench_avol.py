"""AVOL-Net's localization claims of chapter 3 (Objects that Sound, Sec. 4), measured over several seeds.

For each seed, exactly as the chapter does it: AVE-Net trained through ``avlib.methods.train`` (the AVE config of the
scale), AVOL-Net started from it and trained by multiple-instance learning on scenes with one sounding and one silent
instrument (the AVOL config), then, on the held-out scenes (``avlib.eval.localization.localization_set``), with every
frame at the training scale (:meth:`avlib.methods.avol.AVOL.eval_images`):

- pointing (Objects that Sound Sec. 4.1): is the map's mode inside the sounding instrument's box? Beside a uniformly
  random pixel (100 seeded draws per scene), the audio-free map (:meth:`~avlib.methods.avol.AVOL.audio_free_maps`:
  the mean training sound's embedding instead of the clip's) and the silent instrument's box;
- cIoU@0.5 and its success-rate AUC under both binarisations (:data:`avlib.eval.localization.PROTOCOLS`) beside the
  random map, the centred box, the whole image and the audio-free map (the claims compare AUCs: with boxes of a tenth
  of the frame, cIoU@0.5 is out of reach of the median cut and of the half-image box by construction);
- "same image, two sounds": the share of scenes whose map weighs the sounding instrument above the silent one
  (:func:`~avlib.eval.localization.sounding_vs_silent`) with the scene's own sound, with the silent instrument's sound,
  and for the audio-free map.

It checks the chapter's asserts with the chapter's margins (``MARGINS``) for every seed and prints one JSON line per
seed plus a summary with each quantity's range over the seeds.

    AVLIB_SCALE=quick .venv/bin/python benchmarks/bench_avol.py --seeds 0 1 2 [--threads 2] [--runs DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from avlib.audio import make_frontend
from avlib.data import AVCPairs
from avlib.data.views import cached_world
from avlib.eval.avc import avc_accuracy_on
from avlib.eval.localization import (
    PROTOCOLS,
    compute_maps,
    localization_set,
    pointing_hits,
    score_maps,
    sounding_vs_silent,
    upsample_maps,
)
from avlib.methods import get_method, train
from avlib.metrics import boxes_to_masks

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seeds  # noqa: E402

# the margins chapter 3 asserts (section 4); a claim holds for a seed when its left side exceeds the right by them.
# Pointing against the audio-free map and against a random point is reported, not claimed: on seed 2 of the quick
# scale the audio-free map pointed as well as AVOL-Net (0.25 vs 0.23; seeds 0 and 1: 0.32 vs 0.46, 0.11 vs 0.27),
# and seed 0 pointed at 0.465 with one thread but 0.129 with two (random point 0.104).
MARGINS = {
    "pointing > silent box": 0.0,
    "prefers sounding > audio-free": 0.05,
    "own sound > swapped sound": 0.15,
    "AUC > random map (both protocols)": 0.03,
    "AUC > audio-free map (both protocols)": 0.0,
}
QUIET = {"progress": False, "live_plot": False, "evaluate": False}


def random_point_hits(boxes: torch.Tensor, size: tuple[int, int], draws: int = 100, seed: int = 0) -> float:
    """Fraction of uniformly random pixels (``draws`` per item, seeded) that fall inside each item's box."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(draws, boxes.shape[0], 2, generator=g) * torch.tensor([size[1], size[0]])
    b = boxes.float()
    inside = (pts[..., 0] >= b[:, 0]) & (pts[..., 0] < b[:, 2]) & (pts[..., 1] >= b[:, 1]) & (pts[..., 1] < b[:, 3])
    return float(inside.double().mean())


def localization_claims(avol, method, cfg, frontend, duo, train_clips, test_clips, seed: int) -> dict:
    """Every number of the chapter's AVOL-Net section, for one trained model."""
    loc = localization_set(duo, test_clips)
    size = tuple(loc["image"].shape[-2:])
    images = method.eval_images(cfg, loc["image"])
    maps_fn = method.localization_maps(frontend)
    free_fn = method.audio_free_maps(avol, frontend, duo, train_clips)
    maps = compute_maps(avol, maps_fn, {"image": images, "audio": loc["audio"]})["avol"]
    free = compute_maps(avol, free_fn, {"image": images, "audio": loc["audio"]})["avol"]
    ok = loc["swap_ok"]
    swapped = compute_maps(avol, maps_fn, {"image": images[ok], "audio": loc["swap_audio"][ok]})["avol"]
    snd_mask, sil_mask = loc["sounding_mask"], boxes_to_masks(loc["silent_box"], *size)
    out = {
        "scenes": len(loc["clips"]), "map": list(maps.shape[1:]),
        "pointing": float(pointing_hits(maps, loc["sounding_box"], size).double().mean()),
        "pointing_silent": float(pointing_hits(maps, loc["silent_box"], size).double().mean()),
        "pointing_audio_free": float(pointing_hits(free, loc["sounding_box"], size).double().mean()),
        "pointing_random": random_point_hits(loc["sounding_box"], size, seed=seed),
    }
    up = {"AVOL-Net": upsample_maps(maps, size), "audio-free map": upsample_maps(free, size)}
    for name, th in PROTOCOLS.items():
        rows = score_maps(up, snd_mask, threshold=th)
        out[f"ciou50 ({name})"] = {row: r["ciou50"] for row, r in rows.items()}
        out[f"auc ({name})"] = {row: r["auc"] for row, r in rows.items()}
    out["prefers_own"] = sounding_vs_silent(up["AVOL-Net"], snd_mask, sil_mask)["prefers_sounding"]
    out["prefers_audio_free"] = sounding_vs_silent(up["audio-free map"], snd_mask, sil_mask)["prefers_sounding"]
    out["prefers_swapped"] = sounding_vs_silent(upsample_maps(swapped, size), snd_mask[ok],
                                                sil_mask[ok])["prefers_sounding"]
    return out


def holds(r: dict) -> dict[str, bool]:
    """The chapter's asserts on one seed's numbers."""
    m = MARGINS

    def auc_above(row: str, claim: str) -> bool:
        return all(r[f"auc ({p})"]["AVOL-Net"] > r[f"auc ({p})"][row] + m[claim] for p in PROTOCOLS)

    return {
        "pointing > silent box": r["pointing"] > r["pointing_silent"] + m["pointing > silent box"],
        "prefers sounding > audio-free": r["prefers_own"] > r["prefers_audio_free"]
        + m["prefers sounding > audio-free"],
        "own sound > swapped sound": r["prefers_own"] > r["prefers_swapped"] + m["own sound > swapped sound"],
        "AUC > random map (both protocols)": auc_above("random map", "AUC > random map (both protocols)"),
        "AUC > audio-free map (both protocols)": auc_above("audio-free map", "AUC > audio-free map (both protocols)"),
    }


def keep(runs: str | None, seed: int, cfg, name: str) -> dict:
    """Where the run is kept: ``runs/seed<seed>/03_avc/<scale>/<name>``, chapter 3's layout (run the chapter with
    ``AVLIB_RUNS=runs/seed<seed>`` to reuse it); in memory without ``--runs``."""
    if runs is None:
        return {}
    return {"out": Path(runs) / f"seed{seed}" / "03_avc" / cfg.scale / name, "resume": True}


def run_seed(seed: int, scale: str | None, runs: str | None = None) -> dict:
    ave_method, method = get_method("ave"), get_method("avol")
    ave_cfg, cfg = ave_method.config(scale), method.config(scale)
    t0 = time.perf_counter()
    ave = train(ave_cfg, seed=seed, **QUIET, **keep(runs, seed, ave_cfg, "ave")).model
    t1 = time.perf_counter()
    source = {"init_from": ave} if cfg.init_from else {}
    avol = train(cfg, seed=seed, **source, **QUIET, **keep(runs, seed, cfg, "avol")).model
    t2 = time.perf_counter()
    frontend = make_frontend(cfg.audio)
    duo = cached_world(cfg.data, seed)
    n_train = int(cfg.train_clips)
    train_clips, test_clips = list(range(n_train)), list(range(n_train, len(duo)))
    duo_test = AVCPairs(duo, clips=test_clips, length=512, negative_mode="frame_aligned", seed=10_000 + seed,
                        image_transform=method.image_transform(cfg, train=False))
    out = {"seed": seed, "avc_accuracy": avc_accuracy_on(avol, frontend, duo_test),
           **localization_claims(avol, method, cfg, frontend, duo, train_clips, test_clips, seed),
           "seconds_ave": t1 - t0, "seconds_avol": t2 - t1}
    out["holds"] = holds(out)
    return out


def summarise(results: list[dict]) -> dict:
    """The per-seed numbers side by side, the failed claims, ``all_hold``."""
    keys = ["pointing", "pointing_random", "pointing_audio_free", "pointing_silent", "prefers_own",
            "prefers_audio_free", "prefers_swapped", "avc_accuracy"]
    summary = {**{k: [round(r[k], 3) for r in results] for k in keys}}
    for p in PROTOCOLS:
        for score in ("ciou50", "auc"):
            summary[f"{score} ({p})"] = {row: [round(r[f"{score} ({p})"][row], 3) for r in results]
                                         for row in results[0][f"{score} ({p})"]}
    summary["claims"] = {c: [r["holds"][c] for r in results] for c in MARGINS}
    summary["all_hold"] = all(all(v) for v in summary["claims"].values())
    return summary


def main(argv: list[str] | None = None) -> int:
    p = seeds.parser(__doc__)
    args = p.parse_args(argv)
    return seeds.run(args, lambda seed: run_seed(seed, args.scale, args.runs), summarise)


if __name__ == "__main__":
    sys.exit(main())
