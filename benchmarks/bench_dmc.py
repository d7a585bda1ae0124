"""Chapter 1's claims about DMC's sound localization (Hu, Nie & Li, CVPR 2019), measured over several seeds.

For each seed: DMC trained through ``avlib.methods.train`` at the selected scale (the world with that seed trains,
the world with ``seed + 1`` tests, as in the chapter), then, without retraining:

- solo scenes: cIoU@0.5 / AUC under the fixed cut at 0.5 and the median cut of the related and unrelated centers
  chosen by the contrast rule and by the paper's §5.1 rule, of the audio-free ``image`` rule, and of the trivial
  baselines (random map, centred box, whole image);
- scenes with one extra silent instrument (``n_silent=1``): does the chosen map prefer the sounding object to the
  silent one (``avlib.eval.localization.sounding_vs_silent``), for each rule;
- negative audio (silence, white noise, an off-screen sound: another scene's audio of a category not in the picture):
  how often the related center changes, and whether the model's agreement scores (the cosine of the related center,
  the contrast score against the true sounds) rank the real sounds above the negative ones (ROC AUC, 0.5 = chance).

With ``--k3`` it also trains k = 3 centers and runs the silent-object test on that model. It checks the chapter's
claims with the margins the chapter asserts (the constants below), prints one JSON line per seed and a summary, and
exits with 1 if a claim fails on some seed.

    AVLIB_SCALE=quick .venv/bin/python benchmarks/bench_dmc.py --seeds 0 1 2 [--k3] [--threads 2] [--runs DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from avlib.eval.localization import PROTOCOLS, negative_audio, off_screen_index, score_maps, sounding_vs_silent
from avlib.methods import get_method, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seeds  # noqa: E402

# margins the chapter asserts (chapter 1, sections 1.7 and 1.8), in cIoU@0.5 (fixed cut) unless named otherwise
RELATED_OVER_UNRELATED = 0.25  # contrast rule: related center vs unrelated center
RELATED_OVER_CENTRED = 0.15  # contrast rule vs the centred box
RELATED_OVER_WHOLE = 0.25  # contrast rule vs the whole image (and the random map)
PAPER_OVER_UNRELATED = 0.15  # the §5.1 rule: related vs unrelated
AUDIO_FREE_WITHIN = 0.15  # on solo scenes the audio-free rule is within this of the contrast rule (or above it)
SILENT_OVER_IMAGE = 0.05  # silent-object scenes: prefers_sounding(contrast rule) - prefers_sounding(audio-free)
NEGATIVE_AUC = 0.65  # real vs negative sounds: ROC AUC of the related center's cosine, for every negative


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """ROC AUC of scores ``pos`` (real) against ``neg`` (negative): P(real > negative) + P(tie) / 2."""
    diff = pos.double()[:, None] - neg.double()[None, :]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def measure(cfg, model, seed: int) -> dict:
    """Everything the chapter reports about a trained model, on the test world ``seed + 1``."""
    method = get_method("dmc")
    r = lambda x: round(float(x), 4)  # noqa: E731
    test = method.scenes(cfg, seed=seed + 1, size=cfg.eval_size)
    size = tuple(test["box"].shape[-2:])
    out = method.forward(cfg, model, test)
    loc = {rule: method.localize(cfg, out, rule, size) for rule in ("contrast", "paper", "image")}
    maps = {"contrast": loc["contrast"]["related"], "contrast_unrelated": loc["contrast"]["unrelated"],
            "paper": loc["paper"]["related"], "paper_unrelated": loc["paper"]["unrelated"],
            "image": loc["image"]["related"]}
    res: dict = {}
    for proto, thr in PROTOCOLS.items():
        rows = score_maps(maps, test["box"], threshold=thr)
        res[proto] = {name: {"ciou50": r(v["ciou50"]), "auc": r(v["auc"])} for name, v in rows.items()}
    res["rules_agree"] = {f"{a}_{b}": r((loc[a]["related_index"] == loc[b]["related_index"]).double().mean())
                          for a, b in (("contrast", "paper"), ("contrast", "image"), ("paper", "image"))}
    res["silent"] = silent_test(method, cfg, model, seed)
    # negative audio: the visual maps cannot change (they never see the sound); only the choice of center can
    real = method.agreement(out)
    real_cos = real["cosine"].gather(1, loc["contrast"]["related_index"][:, None])[:, 0]
    neg_sounds = {"silence": negative_audio(test["audio"], "silence"),
                  "noise": negative_audio(test["audio"], "noise", seed=seed),
                  "off-screen": test["audio"][off_screen_index(test["label"])]}
    res["negative"] = {}
    for kind, audio in neg_sounds.items():
        neg_out = method.forward(cfg, model, {**test, "audio": audio})
        neg = method.agreement(neg_out, reference=out)
        idx = neg["contrast"].argmax(1)
        neg_cos = neg["cosine"].gather(1, loc["contrast"]["related_index"][:, None])[:, 0]
        res["negative"][kind] = {
            "map_changed": r((idx != loc["contrast"]["related_index"]).double().mean()),
            "visual_map_same": bool(torch.allclose(neg_out["visual_map"], out["visual_map"])),
            "cosine_real": r(real_cos.mean()), "cosine_negative": r(neg_cos.mean()),
            "auc_cosine": r(auc(real_cos, neg_cos)),
            "auc_contrast": r(auc(real["contrast"].amax(1), neg["contrast"].amax(1))),
        }
    return res


def silent_test(method, cfg, model, seed: int) -> dict:
    """prefers_sounding / mass_sounding of each rule's map on scenes with one extra silent instrument."""
    scenes = method.scenes(cfg.replace(data={**cfg.data, "n_silent": 1}), seed=seed + 1, size=cfg.eval_size)
    out = method.forward(cfg, model, scenes)
    size = tuple(scenes["box"].shape[-2:])
    res = {}
    for rule in ("contrast", "paper", "image"):
        s = sounding_vs_silent(method.localize(cfg, out, rule, size)["related"], scenes["box"], scenes["silent"])
        res[rule] = {"prefers_sounding": round(s["prefers_sounding"], 4), "mass_sounding": round(s["mass_sounding"], 4)}
    return res


def claims(m: dict) -> dict[str, bool]:
    """The chapter's assertions, on one seed's measurements."""
    fixed = m["fixed cut 0.5"]
    rel = fixed["contrast"]["ciou50"]
    sil = m["silent"]
    return {
        "related > unrelated": rel >= fixed["contrast_unrelated"]["ciou50"] + RELATED_OVER_UNRELATED,
        "related > centred box": rel >= fixed["centred box (half the image)"]["ciou50"] + RELATED_OVER_CENTRED,
        "related > whole image, random": rel >= max(fixed["whole image"]["ciou50"],
                                                     fixed["random map"]["ciou50"]) + RELATED_OVER_WHOLE,
        "paper rule: related > unrelated": fixed["paper"]["ciou50"]
        >= fixed["paper_unrelated"]["ciou50"] + PAPER_OVER_UNRELATED,
        "audio-free rule close on solo scenes": fixed["image"]["ciou50"] >= rel - AUDIO_FREE_WITHIN,
        "silent: audio helps": sil["contrast"]["prefers_sounding"]
        >= sil["image"]["prefers_sounding"] + SILENT_OVER_IMAGE,
        "negative audio detected": min(v["auc_cosine"] for v in m["negative"].values()) >= NEGATIVE_AUC,
        "maps never see the sound": all(v["visual_map_same"] for v in m["negative"].values()),
    }


def run_seed(seed: int, scale: str | None, k3: bool, out_dir: Path | None) -> dict:
    method = get_method("dmc")
    cfg = method.config(scale)
    res: dict = {"seed": seed}
    t0 = time.perf_counter()
    kw = {"out": out_dir / f"k2_seed{seed}", "resume": True} if out_dir else {}
    model = train(cfg, seed=seed, evaluate=False, progress=False, live_plot=False, **kw).model
    res["train_seconds"] = round(time.perf_counter() - t0, 1)
    res.update(measure(cfg, model, seed))
    res["claims"] = claims(res)
    res["holds"] = all(res["claims"].values())
    if k3:
        cfg3 = cfg.replace(k=3)
        kw = {"out": out_dir / f"k3_seed{seed}", "resume": True} if out_dir else {}
        model3 = train(cfg3, seed=seed, evaluate=False, progress=False, live_plot=False, **kw).model
        res["k3_silent"] = silent_test(method, cfg3, model3, seed)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def summarise(results: list[dict]) -> dict:
    """The per-seed numbers side by side, the failed claims, ``all_hold``."""
    ok = all(r["holds"] for r in results)
    fixed = [r["fixed cut 0.5"] for r in results]
    summary = {
        "related_minus_unrelated": [round(f["contrast"]["ciou50"] - f["contrast_unrelated"]["ciou50"], 4)
                                    for f in fixed],
        "related_minus_centred": [round(f["contrast"]["ciou50"] - f["centred box (half the image)"]["ciou50"], 4)
                                  for f in fixed],
        "paper_minus_unrelated": [round(f["paper"]["ciou50"] - f["paper_unrelated"]["ciou50"], 4) for f in fixed],
        "image_minus_contrast": [round(f["image"]["ciou50"] - f["contrast"]["ciou50"], 4) for f in fixed],
        "silent_prefers": [{k: v["prefers_sounding"] for k, v in r["silent"].items()} for r in results],
        "negative_auc_cosine": [{k: v["auc_cosine"] for k, v in r["negative"].items()} for r in results],
        "failed": {r["seed"]: [c for c, ok_ in r["claims"].items() if not ok_] for r in results},
        "all_hold": ok,
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    p = seeds.parser(__doc__)
    p.add_argument("--k3", action="store_true", help="also train k = 3 centers for the silent-object test")
    args = p.parse_args(argv)
    return seeds.run(args, lambda seed: run_seed(seed, args.scale, args.k3, args.runs), summarise)


if __name__ == "__main__":
    sys.exit(main())
