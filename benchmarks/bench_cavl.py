"""Chapter 2's claims about CAVL at curriculum level C1, measured over several seeds.

For each seed: CAVL trained through ``avlib.methods.train`` at the chapter's config (the scale's preset, level C1,
``k_a = 1`` and ``k_v = 2``), then, on new scenes of the world with ``seed + 1``:

- single-source localization (cIoU@0.5 and AUC under both binarisations of ``PROTOCOLS``) of the aligned center
  (Eq. 7), the unaligned center, the audio-free ``image`` rule and the trivial baselines, and how often Eq. 7 and
  the audio-free rule choose the same center;
- scenes with a silent second instrument (``n_silent=1``): does the aligned center prefer the sounding instrument
  over the silent one (``sounding_vs_silent``), against the audio-free rule, with the trained ``k_v = 2`` and with
  ``k_v = 3`` centers (soft k-means on the same trained features; the clustering has no weights);
- negative audio (silence, white noise, an off-screen sound: another scene's audio of a category not in the picture):
  how often Eq. 7 still picks the same center, the alignment distance S_av of Eq. 4 against the true sound's (its
  AUROC and the share of negatives rejected at the distance that keeps 95 % of the true sounds), and cIoU@0.5 of the
  map chosen with the negative audio.

It checks the claims the chapter asserts, with the chapter's margins (below), for every seed, and prints one JSON line
per seed plus a summary; the exit status is 1 if a claim fails on some seed.

    AVLIB_SCALE=quick .venv/bin/python benchmarks/bench_cavl.py --seeds 0 1 2 [--threads 2] [--runs DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from avlib.audio import first_example, make_frontend
from avlib.cluster import soft_kmeans
from avlib.eval.localization import (
    PROTOCOLS,
    negative_audio,
    off_screen_index,
    pick_center_maps,
    score_maps,
    sounding_vs_silent,
    upsample_maps,
)
from avlib.methods import get_method, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seeds  # noqa: E402

# margins the chapter asserts (chapter 2, sections 2.5 and 2.6), on cIoU@0.5 at the fixed cut unless named
OVER_UNALIGNED = 0.25  # aligned center over the unaligned one
OVER_CENTRED_BOX = 0.15  # aligned center over the centred box
OVER_WHOLE_IMAGE = 0.25  # aligned center over the whole image
AUDIO_FREE_GAP = 0.1  # |aligned - audio-free rule|: on single-source scenes the sound adds (almost) nothing
SILENT_KV3_OVER_IMAGE = 0.1  # prefers_sounding with k_v = 3: Eq. 7 over the audio-free rule
NEGATIVE_AUROC = 0.6  # S_av separates each kind of negative audio from the true sound better than chance


def s_av(out: dict[str, Tensor]) -> Tensor:
    """Eq. 4 per scene with k_a = 1: the distance from the audio center to the nearest visual center."""
    return (out["centers_a"][:, :1] - out["centers_v"]).norm(dim=-1).amin(-1)


def silent_test(method, cfg, model, scenes: dict[str, Tensor], k_visual: int) -> dict:
    """Eq. 7 and the audio-free rule on scenes with a silent instrument, with ``k_visual`` visual centers."""
    frontend = make_frontend(cfg.audio)
    dev = next(model.parameters()).device
    with torch.no_grad():
        fv = model.visual(scenes["image"].to(dev))
        fa = model.audio(first_example(frontend, scenes["audio"].to(dev)))
        xv = model.fc_v(fv.flatten(2).transpose(1, 2)).cpu()
        xa = model.fc_a(fa.flatten(2).transpose(1, 2)).cpu()
    rv, ra = soft_kmeans(xv, k_visual, cfg.beta, cfg.iters), soft_kmeans(xa, 1, cfg.beta, cfg.iters)
    maps = rv.assign.transpose(1, 2).reshape(xv.shape[0], k_visual, *fv.shape[2:])
    maps = upsample_maps(maps, tuple(scenes["box"].shape[-2:]))
    audio = pick_center_maps(maps, -(ra.centers - rv.centers).norm(dim=-1))  # Eq. 7
    image = pick_center_maps(maps, -maps.flatten(2).sum(-1))  # the smallest center, without the sound
    snd, sil = scenes["box"].float(), scenes["silent"].float()
    on_snd = (maps * snd[:, None]).sum((2, 3)).argmax(1)  # the center that covers the sounding instrument
    on_sil = (maps * sil[:, None]).sum((2, 3)).argmax(1)
    return {"k_visual": k_visual, "split": float((on_snd != on_sil).float().mean()),
            "audio": sounding_vs_silent(audio["related"], scenes["box"], scenes["silent"]),
            "image": sounding_vs_silent(image["related"], scenes["box"], scenes["silent"])}


def auroc(real: Tensor, negative: Tensor) -> float:
    """Probability that a true pair's S_av is below a negative pair's (ties count half)."""
    lower = (real[:, None] < negative[None]).double().mean() + 0.5 * (real[:, None] == negative[None]).double().mean()
    return float(lower)


def run_seed(seed: int, scale: str | None, out_dir: str | None) -> dict:
    method = get_method("cavl")
    cfg = method.config(scale)
    t0 = time.perf_counter()
    run = train(cfg, seed=seed, out=None if out_dir is None else f"{out_dir}/seed{seed}", resume=out_dir is not None,
                evaluate=False, progress=False, live_plot=False)
    model = run.model.eval()
    res: dict = {"seed": seed, "train_seconds": time.perf_counter() - t0, "s_pos": run.history[-1]["s_pos"],
                 "s_neg": run.history[-1]["s_neg"]}
    test = method.scenes(cfg, seed=seed + 1, size=cfg.eval_size)
    size = tuple(test["box"].shape[-2:])
    out = method.forward(cfg, model, test)
    loc = {rule: method.localize(cfg, out, rule, size) for rule in ("paper", "image")}
    maps = {"aligned": loc["paper"]["related"], "unaligned": loc["paper"]["unrelated"],
            "audio-free": loc["image"]["related"]}
    res["localization"] = {
        name: {row: {"ciou50": r["ciou50"], "auc": r["auc"]} for row, r in score_maps(maps, test["box"], cut).items()}
        for name, cut in PROTOCOLS.items()}
    res["same_center_as_audio_free"] = float((loc["paper"]["related_index"] == loc["image"]["related_index"])
                                             .float().mean())
    silent = method.scenes(cfg.replace(data={**cfg.data, "n_silent": 1}), seed=seed + 1, size=cfg.eval_size)
    res["silent"] = {f"k_v={k}": silent_test(method, cfg, model, silent, k) for k in (2, 3)}
    real = s_av(out)
    keep95 = torch.quantile(real, 0.95)
    res["s_av_real"] = float(real.mean())
    res["negative"] = {}
    for kind, audio in (("silence", negative_audio(test["audio"], "silence")),
                        ("noise", negative_audio(test["audio"], "noise", seed=seed)),
                        ("off-screen", test["audio"][off_screen_index(test["label"])])):
        o = method.forward(cfg, model, {**test, "audio": audio})
        neg = s_av(o)
        chosen = method.localize(cfg, o, "paper", size)
        res["negative"][kind] = {
            "same_center": float((chosen["related_index"] == loc["paper"]["related_index"]).float().mean()),
            "s_av": float(neg.mean()), "auroc": auroc(real, neg),
            "rejected_at_95": float((neg > keep95).float().mean()),
            "ciou50": score_maps({"m": chosen["related"]}, test["box"])["m"]["ciou50"]}
    res["seconds"] = time.perf_counter() - t0
    res["checks"] = checks(res)
    res["holds"] = all(res["checks"].values())
    return res


def checks(res: dict) -> dict[str, bool]:
    """The chapter's assertions, on one seed's measurements."""
    fixed = res["localization"]["fixed cut 0.5"]
    rel = fixed["aligned"]["ciou50"]
    kv3 = res["silent"]["k_v=3"]
    return {
        "over_unaligned": rel >= fixed["unaligned"]["ciou50"] + OVER_UNALIGNED,
        "over_centred_box": rel >= fixed["centred box (half the image)"]["ciou50"] + OVER_CENTRED_BOX,
        "over_whole_image": rel >= fixed["whole image"]["ciou50"] + OVER_WHOLE_IMAGE,
        "audio_free_as_good": abs(rel - fixed["audio-free"]["ciou50"]) <= AUDIO_FREE_GAP,
        "silent_kv3_prefers_sounding": kv3["audio"]["prefers_sounding"]
        >= kv3["image"]["prefers_sounding"] + SILENT_KV3_OVER_IMAGE,
        "negative_s_av_higher": all(v["auroc"] >= NEGATIVE_AUROC for v in res["negative"].values()),
    }


def summarise(results: list[dict]) -> dict:
    """The per-seed numbers side by side, the failed claims, ``all_hold``."""
    fixed = [r["localization"]["fixed cut 0.5"] for r in results]
    summary = {
        "aligned_ciou50": [round(f["aligned"]["ciou50"], 3) for f in fixed],
        "unaligned_ciou50": [round(f["unaligned"]["ciou50"], 3) for f in fixed],
        "audio_free_ciou50": [round(f["audio-free"]["ciou50"], 3) for f in fixed],
        "silent_kv3_prefers": [(round(r["silent"]["k_v=3"]["audio"]["prefers_sounding"], 3),
                                round(r["silent"]["k_v=3"]["image"]["prefers_sounding"], 3)) for r in results],
        "failed": {r["seed"]: [k for k, ok in r["checks"].items() if not ok] for r in results},
        "all_hold": all(r["holds"] for r in results),
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    p = seeds.parser(__doc__)
    args = p.parse_args(argv)
    return seeds.run(args, lambda seed: run_seed(seed, args.scale, args.runs), summarise)


if __name__ == "__main__":
    sys.exit(main())
