"""Chapter 4's claims about CAVL's curriculum and counting, measured over several seeds.

For each seed k, the chapter's runs at its config (the scale's CAVL preset with ``STEPS`` steps per level and the
learning rate x0.5 per level): the curriculum C1 -> C2 -> C3, C3 from random weights, the mixed set C1..C4 (k_a = 2),
CAVL-C0, C2 with scene-level alignment from C1, and the counting network from scratch and from the C0, C1 and C2
audio streams; all trained with seed k and scored on new scenes of the world with seed k + 1 (the probe trains on
the world with seed k + 2):

- held-out matching accuracy (share of (image, wrong sound) pairs where the image's own sound has the lower S_av)
  of C1, C3 and the mixed set, each on its own kind of scenes, and of C3 from random weights and from C2 on C3;
- single-source localization (cIoU@0.5, fixed cut) of CAVL-C1 and CAVL-C2 (run with k_a = 1, k_v = 2) against their
  unaligned center and the centred box;
- a linear probe of the audio features for the instrument category;
- counting accuracy and MAE against the uniform guess.

It checks the claims the chapter asserts, with the chapter's margins, prints one JSON line per seed and a summary;
the exit status is 1 if a claim fails on some seed.

    AVLIB_SCALE=quick .venv/bin/python benchmarks/bench_curriculum.py --seeds 0 1 2 [--threads N] [--runs DIR]
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

from avlib.audio import first_example, make_frontend
from avlib.engine import TrainConfig, fit
from avlib.eval.localization import score_maps
from avlib.eval.representation import linear_probe
from avlib.losses import alignment_score_matrix
from avlib.methods import get_method, train
from avlib.methods.run import load
from avlib.runtime import choose_scale

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seeds  # noqa: E402

STEPS = 100  # per level and per comparison run, as in the chapter
LEVEL_LR_DECAY = 0.5  # the chapter's factor per level (the paper: 0.1)
MIXED = ("c1", "c2", "c3", "c4")
# margins the chapter asserts
C1_OVER_C3 = 0.1  # matching accuracy, C1 over C3 from random weights (section 4.3)
C1_OVER_MIXED = 0.1  # ... and over the mixed set
CURRICULUM_OVER_RANDOM = 0.0  # C3 from C2 at least as good as C3 from random weights after the stage (section 4.4)
START_OVER_UNTRAINED = 0.03  # ... and ahead at step 0: the C2 model against an untrained network, on C3
LOSS_RATIO = 0.95  # mean training loss over the C3 stage, curriculum / random start, at most this
OVER_UNALIGNED = 0.25  # cIoU@0.5 of the aligned over the unaligned center (section 4.5)
OVER_CENTRED_BOX = 0.05  # ... and over the centred box (seed 2 led by 0.09)
PROBE_TIMES_CHANCE = 2.0  # probe accuracy of C1 and C2 at least this times chance (section 4.6)
COUNT_ACC_OVER_CHANCE = 0.15  # counting accuracy over the uniform guess (section 4.8)
COUNT_MAE_UNDER_CHANCE = 0.4  # counting MAE below the uniform guess's


def mean_loss(history: list[dict]) -> float:
    """Mean training loss over a run's steps: the area under its curve, to compare two runs of equal steps."""
    return sum(h["loss"] for h in history) / len(history)


def with_k(model: torch.nn.Module, k_audio: int) -> torch.nn.Module:
    other = copy.deepcopy(model)
    other.k_audio, other.k_visual = k_audio, k_audio + 1
    return other


def run_seed(seed: int, scale: str | None, out: str | None) -> dict:
    t0 = time.time()
    method = get_method("cavl")
    scale = choose_scale(scale or "auto")
    cfg = method.config(scale)
    base = cfg.replace(steps=STEPS, level_lr_decay=LEVEL_LR_DECAY)
    runs = Path(out or tempfile.mkdtemp()) / f"seed{seed}"
    quiet = {"progress": False, "live_plot": False}
    cur = train(base.replace(levels=(1, 2, 3)), seed=seed, out=runs / "curriculum", resume=True, **quiet)
    stage = {n: load(runs / "curriculum" / f"{i}_{n}")[:2] for i, n in enumerate(("c1", "c2", "c3"), start=1)}
    c3 = train(base.replace(levels=(3,)), seed=seed, out=runs / "c3_scratch", resume=True, **quiet)

    def fit_plain(c, where, init=None):
        torch.manual_seed(seed)
        model = method.model(c)
        if init is not None:
            model.load_state_dict(init.state_dict())
        tc = TrainConfig(steps=c.steps, batch_size=c.batch_size, seed=seed, out_dir=where, resume=True, **quiet)
        fit(model, method.step(c), method.train_data(c, None, seed), method.make_optimizer(c, model), tc)
        return model

    mixed_cfg = base.replace(k_audio=2, data={**base.data, "family": MIXED})
    mixed = fit_plain(mixed_cfg, runs / "mixed")

    def matching(c, model, family, n=128):
        held = method.scenes(c.replace(data={**c.data, "family": family}), seed=seed + 1, size=n)
        o = method.forward(c, model, held)
        s = alignment_score_matrix(o["centers_a"], o["centers_v"])
        return float((s.diagonal()[None, :] < s)[~torch.eye(n, dtype=torch.bool)].float().mean())

    stage_loss = {"C3 from random": mean_loss(c3.history), "C3 from C2": mean_loss(cur.results[2].history)}
    torch.manual_seed(seed)
    untrained = method.model(c3.cfg)
    acc = {"C1": matching(*stage["c1"], "c1"), "C3": matching(c3.cfg, c3.model, "c3"),
           "mixed": matching(mixed_cfg, mixed, MIXED), "C3 from C2": matching(*stage["c3"], "c3"),
           "C2 at k_a=3": matching(stage["c2"][0].replace(k_audio=3), with_k(stage["c2"][1], 3), "c3"),
           "untrained": matching(c3.cfg, untrained, "c3")}

    test = method.scenes(cfg, seed=seed + 1, size=cfg.eval_size)
    size = tuple(test["box"].shape[-2:])
    named = {}
    for name, model in (("C1", stage["c1"][1]), ("C2", with_k(stage["c2"][1], 1)), ("C2 k_v=3", stage["c2"][1])):
        o = method.forward(cfg, model, test)
        loc = method.localize(cfg, o, "paper", size)
        named[f"{name} aligned"], named[f"{name} unaligned"] = loc["related"], loc["unrelated"]
        named[f"{name} audio-free"] = method.localize(cfg, o, "image", size)["related"]
    fixed = score_maps(named, test["box"], threshold=0.5)
    loc_rows = {k: round(v["ciou50"], 3) for k, v in fixed.items()}

    c0 = train(base.replace(levels=(0,)), seed=seed, out=runs / "c0", resume=True, **quiet)
    c2_scene = fit_plain(base.replace(k_audio=1, scene_level=True, lr=base.lr * LEVEL_LR_DECAY,
                                      data={**base.data, "family": "c2"}), runs / "c2_scene", init=stage["c1"][1])
    frontend = make_frontend(cfg.audio)
    probe_train = method.scenes(cfg, seed=seed + 2, size=384)

    @torch.no_grad()
    def feats(model, audio):
        model.eval()
        return torch.cat([model.audio(first_example(frontend, audio[i:i + 64])).amax((2, 3))
                          for i in range(0, len(audio), 64)])

    torch.manual_seed(seed)
    probe_models = {"untrained": method.model(cfg), "C1": stage["c1"][1], "C2 source": stage["c2"][1],
                    "C2 scene": c2_scene, "C0": c0.model}
    probe = {n: round(linear_probe(feats(m, probe_train["audio"]), probe_train["label"], feats(m, test["audio"]),
                                   test["label"]), 3) for n, m in probe_models.items()}
    chance_probe = 1.0 / cfg.data["n_categories"]

    counting = get_method("counting")
    ccfg = counting.config(scale).replace(steps=96)
    count = {"scratch": train(ccfg, seed=seed, out=runs / "count_scratch", resume=True, **quiet).scores}
    for name, source in (("C0", c0.model), ("C1", stage["c1"][1]), ("C2", stage["c2"][1])):
        count[name] = train(ccfg.replace(init_from="cavl"), seed=seed, out=runs / f"count_{name}", resume=True,
                            init_from=source, **quiet).scores
    chance = count["scratch"]["chance"]

    checks = {
        "C1 over C3": acc["C1"] >= acc["C3"] + C1_OVER_C3,
        "C1 over mixed": acc["C1"] >= acc["mixed"] + C1_OVER_MIXED,
        "C3 from C2 over C3 from random": acc["C3 from C2"] >= acc["C3"] + CURRICULUM_OVER_RANDOM,
        "C2 start over untrained": acc["C2 at k_a=3"] >= acc["untrained"] + START_OVER_UNTRAINED,
        "curriculum stage loss below random": stage_loss["C3 from C2"] <= LOSS_RATIO * stage_loss["C3 from random"],
        "probe above chance": min(probe["C1"], probe["C2 source"]) >= PROBE_TIMES_CHANCE * chance_probe,
    }
    for name in ("C1", "C2"):
        checks[f"{name} over unaligned"] = fixed[f"{name} aligned"]["ciou50"] >= \
            fixed[f"{name} unaligned"]["ciou50"] + OVER_UNALIGNED
        checks[f"{name} over centred box"] = fixed[f"{name} aligned"]["ciou50"] >= \
            fixed["centred box (half the image)"]["ciou50"] + OVER_CENTRED_BOX
    for name, s in count.items():
        checks[f"counting {name} above chance"] = (s["accuracy"] >= chance["accuracy"] + COUNT_ACC_OVER_CHANCE
                                                   and s["mae"] <= chance["mae"] - COUNT_MAE_UNDER_CHANCE)
    return {"seed": seed, "seconds": round(time.time() - t0, 1), "matching": {k: round(v, 3) for k, v in acc.items()},
            "stage_loss": {k: round(v, 4) for k, v in stage_loss.items()},
            "localization_ciou50_fixed": loc_rows, "probe": probe,
            "counting": {n: {"accuracy": round(s["accuracy"], 3), "mae": round(s["mae"], 3),
                             "predicted": s["predicted_counts"]} for n, s in count.items()},
            "stage_seconds": [round(r.seconds, 1) for r in cur.results],
            "checks": checks, "holds": all(checks.values())}


def summarise(results: list[dict]) -> dict:
    """The per-seed numbers side by side, the failed claims, ``all_hold``."""
    return {"matching": {k: [r["matching"][k] for r in results] for k in results[0]["matching"]},
            "stage_loss": {k: [r["stage_loss"][k] for r in results] for k in results[0]["stage_loss"]},
            "failed": {r["seed"]: [k for k, ok in r["checks"].items() if not ok] for r in results},
            "all_hold": all(r["holds"] for r in results)}


def main(argv: list[str] | None = None) -> int:
    p = seeds.parser(__doc__)
    args = p.parse_args(argv)
    return seeds.run(args, lambda seed: run_seed(seed, args.scale, args.runs), summarise)


if __name__ == "__main__":
    sys.exit(main())
