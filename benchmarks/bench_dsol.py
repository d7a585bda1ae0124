"""DSOL's claims (issue: chapter 6) at a scale's preset, measured over several seeds.

For each seed k, three runs of the scale's DSOL preset, each trained with seed k on the world with seed k and scored
on the held-out scenes of the world with seed k + 1 (:meth:`avlib.methods.dsol.DSOL.evaluate`):

- **DSOL**: stage 1 with its classification rounds (the dictionary rebuilt each round), then stage 2 (Eq. 8);
- **without the product** (Table 7's "Prod"): the same, stage 2 trained and tested on the class maps ``m`` instead of
  the sounding filter ``s = m o l`` (stage 1 is the same computation as DSOL's, with the same seed);
- **without the alternation** (Table 5): stage 1's localization steps in one stage, no classification rounds, one
  dictionary at the start of stage 2.

On held-out 2x2 mosaics with a sounding and a silent category it reports CIoU@0.3 / AUC / NSA under both protocols
(:data:`avlib.eval.class_aware.PROTOCOLS`) beside the centred box, the whole image, a random map and DSOL's own
audio-free class maps (the class maps without the sound), and on solo scenes the NMI of the object features. It
checks, under the paper's protocol:

1. DSOL's CIoU@0.3 on mosaics is above every baseline's (the trivial maps and the audio-free class maps);
2. NSA is higher with the product than without it;
3. CIoU@0.3 is higher with the alternation than without it.

One JSON line per seed and a summary; the exit status is 1 if a claim fails on some seed.

    AVLIB_SCALE=quick .venv/bin/python benchmarks/bench_dsol.py --seeds 0 1 2 [--threads N] [--runs DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from avlib.methods import get_method, train
from avlib.runtime import choose_scale

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seeds  # noqa: E402

VARIANTS = {"DSOL": {}, "without the product": {"product": False}, "without the alternation": {"alternate": False}}
AUDIO_FREE = "audio-free (class maps without the sound)"
BASELINES = ("centred box (half the image)", "whole image", "random map", AUDIO_FREE)


def _row(report: dict[str, Any], name: str) -> dict[str, dict[str, float]]:
    """One map's CIoU@0.3 / AUC / NSA under both protocols, rounded."""
    return {protocol: {k: round(report[name][protocol][k], 3) for k in ("ciou30", "auc", "nsa")}
            for protocol in ("paper", "released_code")}


def checks(result: dict[str, Any]) -> dict[str, bool]:
    """The three claims on one seed's result, under the paper's protocol."""
    dsol = result["mosaic"]["DSOL"]["paper"]
    return {
        "CIoU@0.3 above every baseline": all(dsol["ciou30"] > result["baselines"][b]["paper"]["ciou30"]
                                             for b in BASELINES),
        "NSA higher with the product": dsol["nsa"] > result["mosaic"]["without the product"]["paper"]["nsa"],
        "CIoU@0.3 higher with the alternation": dsol["ciou30"] > result["mosaic"]["without the alternation"][
            "paper"]["ciou30"],
    }


def run_seed(seed: int, scale: str | None, runs: Path | None) -> dict[str, Any]:
    method = get_method("dsol")
    cfg = method.config(choose_scale(scale or "auto"))
    root = runs or Path(tempfile.mkdtemp(prefix="bench_dsol_"))
    out: dict[str, Any] = {"seed": seed, "seconds": {}, "mosaic": {}, "nmi_kmeans": {}, "single_source_iou50": {}}
    for name, change in VARIANTS.items():
        t0 = time.time()
        run = train(cfg.replace(**change), seed=seed, out=root / f"seed{seed}" / name.replace(" ", "_"), resume=True)
        out["seconds"][name] = round(time.time() - t0, 1)
        mosaic = run.scores["mosaic"]
        out["mosaic"][name] = _row(mosaic, "dsol")
        out["nmi_kmeans"][name] = round(run.scores["nmi_kmeans"], 3)
        out["single_source_iou50"][name] = round(run.scores["single_source"]["dsol"]["iou50"], 3)
        if name == "DSOL":
            out["mosaic_scenes"] = mosaic["scenes"]
            out["baselines"] = {b: _row(mosaic, b) for b in BASELINES}
    out["checks"] = checks(out)
    out["holds"] = all(out["checks"].values())
    return out


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    def paper(row: dict[str, Any], key: str) -> float:
        return row["paper"][key]

    return {
        "ciou30": {n: [paper(r["mosaic"][n], "ciou30") for r in results] for n in VARIANTS}
        | {b: [paper(r["baselines"][b], "ciou30") for r in results] for b in BASELINES},
        "nsa": {n: [paper(r["mosaic"][n], "nsa") for r in results] for n in VARIANTS}
        | {AUDIO_FREE: [paper(r["baselines"][AUDIO_FREE], "nsa") for r in results]},
        "nmi_kmeans": {n: [r["nmi_kmeans"][n] for r in results] for n in VARIANTS},
        "failed": {str(r["seed"]): [c for c, ok in r["checks"].items() if not ok] for r in results},
        "all_hold": all(r["holds"] for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    args = seeds.parser(__doc__).parse_args(argv)
    return seeds.run(args, lambda seed: run_seed(seed, args.scale, args.runs), summarise)


if __name__ == "__main__":
    sys.exit(main())
