"""The ``avlib`` command: write a SynthOrchestra clip dataset, train a method through the engine, evaluate a checkpoint.

    avlib synth OUT [--method l3] [--scale quick] [--clips N] [--test-clips M] [--seed S]
    avlib train METHOD --out RUN [--scale S] [--data DIR] [--resume | --overwrite] [--steps N] ...
    avlib eval METHOD --ckpt RUN [--data DIR]
    avlib layout {levels,dsol,solo} SRC OUT [--test-share F] [--mosaics N] [--seed S]

Methods (``avlib.methods``): ``l3``, ``ave``, ``avol`` (evaluated by AVC accuracy on held-out pairs) and ``dmc``,
``cavl`` (evaluated by sound localization: cIoU@0.5 and AUC of the related and unrelated centers' maps against the
test clips' sounding-object boxes, beside the centred-box and whole-image baselines; on clips without boxes, the
held-out loss and a note that localization needs boxes). ``avlib synth --method M`` writes M's own world.
``avlib train`` runs unchanged under ``torchrun --nproc_per_node=K`` (one process per GPU; see ``avlib.engine``):
``--batch-size`` is the global batch at any K. ``avlib eval`` rebuilds the model from the checkpoint's own config
and scores it on the data it was trained on unless ``--data`` says otherwise. ``avlib layout`` turns a dataset script's
clip directory into the directories a method reads (:mod:`avlib.data.layouts`): ``levels`` (CAVL's curriculum and the
counting net: ``OUT/c1`` ... from ``audioset.py --subset curriculum``), ``dsol`` (``OUT/solo``, ``OUT/mosaic``,
``OUT/duet`` from ``music.py --scheme dsol``), ``solo`` (the separation net's solo clips of ``music.py --scheme cavl``).
Results are printed as one JSON object on stdout. Bad arguments (and a run directory that holds another run or is in
use, or a checkpoint of another method, scale or config than asked) print one line on stderr and exit with status 2;
failures while running print their message (no traceback unless ``AVLIB_DEBUG=1``) and exit with status 1; SIGINT /
SIGTERM finish the step, write a checkpoint, say how to resume and exit with status 130 / 143.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from avlib.runtime import SCALES

__all__ = ["main"]


class UsageError(Exception):
    """A bad argument: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of argparse's usage block
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _methods() -> list[str]:
    from avlib.methods import METHODS

    return sorted(METHODS)


def _parser() -> _Parser:
    p = _Parser(prog="avlib", description="Self-supervised audio-visual learning: data, training, evaluation.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    methods = _methods()

    s = sub.add_parser("synth", help="write a SynthOrchestra clip dataset (train and test splits)")
    s.add_argument("out", type=Path, help="directory to create (must not hold a manifest yet)")
    s.add_argument("--method", choices=methods, default="l3", help="take the world's options from this method's config")
    s.add_argument("--scale", choices=SCALES, default=None, help="config scale (default: AVLIB_SCALE or quick)")
    s.add_argument("--clips", type=_positive_int, help="training clips (default: the config's)")
    s.add_argument("--test-clips", type=_positive_int, help="test clips (default: the rest of the config's world)")
    s.add_argument("--seed", type=int, default=0, help="world seed")

    t = sub.add_parser("train", help="train a method with the avlib engine")
    t.add_argument("method", choices=methods)
    t.add_argument("--out", type=Path, required=True,
                   help="run directory: step_*.pt checkpoints, metrics.jsonl, summary.json (one sub-directory per "
                        "stage for methods trained in stages)")
    t.add_argument("--scale", choices=SCALES, default=None, help="config scale (default: AVLIB_SCALE or quick)")
    t.add_argument("--data", type=Path, help="clip directory (default: the config's SynthOrchestra world in memory)")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its newest verified checkpoint")
    again.add_argument("--overwrite", action="store_true", help="replace the run in --out (refused without it)")
    t.add_argument("--init-from", type=Path,
                   help="start from another method's trained run (configs with init_from: avol at quick scale)")
    t.add_argument("--steps", type=_positive_int, help="optimisation steps (default: the config's)")
    t.add_argument("--batch-size", type=_positive_int,
                   help="global batch of one step, over all processes (default: the config's, the paper's)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a field of the method's config, e.g. --set levels=(1,) --set beta=5.0 (repeatable)")
    t.add_argument("--micro-batch", type=_positive_int,
                   help="most items one device takes at a time; the rest is gradient accumulation")
    t.add_argument("--lr", type=float, help="base learning rate (default: the config's)")
    t.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto")
    t.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: best available)")
    t.add_argument("--ckpt-every", type=_positive_int, default=500, help="checkpoint interval in steps")
    t.add_argument("--log-every", type=_positive_int, default=10, help="metrics interval in steps")
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    t.add_argument("--clip-grad", type=float, help="clip the gradient norm at this value")
    t.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (CPU runs are bit-reproducible without it; some GPU kernels are not)")
    t.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")

    e = sub.add_parser("eval", help="score a checkpoint on held-out data")
    e.add_argument("method", choices=methods)
    e.add_argument("--ckpt", type=Path, required=True, help="checkpoint file (or run directory)")
    e.add_argument("--data", type=Path, help="clip directory (default: the data the checkpoint was trained on)")
    e.add_argument("--device", help="default: best available")
    e.add_argument("--seed", type=int, default=None, help="default: the training seed")

    lay = sub.add_parser("layout", help="lay a dataset script's clip directory out as a method reads it")
    lay.add_argument("kind", choices=("levels", "dsol", "solo"),
                     help="levels: OUT/c<l> (cavl, counting); dsol: OUT/solo, OUT/mosaic, OUT/duet; solo: solo clips "
                          "(separation)")
    lay.add_argument("src", type=Path, help="a dataset script's clip directory")
    lay.add_argument("out", type=Path, help="directory to create (media files are hard-linked)")
    lay.add_argument("--test-share", type=float, default=0.1,
                     help="levels: share of each level's clips held out as test (default 0.1)")
    lay.add_argument("--mosaics", type=_positive_int, help="dsol: 2x2 mosaics per split (default: half the clips)")
    lay.add_argument("--seed", type=int, default=0, help="dsol: seed of the mosaics")
    return p


def _config(method: str, scale: str | None, data: Path | None, settings: Sequence[str] = (), **changes: Any):
    """The method's config at ``scale`` with ``changes`` and the ``--set KEY=VALUE`` ``settings``, after checking the
    arguments it depends on."""
    from avlib.methods import get_method

    if data is not None and not (data / "manifest.jsonl").is_file() and not any(data.glob("*/manifest.jsonl")):
        raise UsageError(f"--data {data}: not a clip directory (no manifest.jsonl, nor sub-directories with one); "
                         "write one with 'avlib synth'")
    if data is not None:
        _check_layout(method, data)
    changes = {k: v for k, v in changes.items() if v is not None}
    for item in settings:
        key, _, text = item.partition("=")
        try:
            changes[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            changes[key.strip()] = text.strip()  # a plain word, e.g. --set optimizer=sgd
    try:
        cfg = get_method(method).config(scale, **changes)
    except TypeError as err:
        raise UsageError(f"--set: {err}") from None
    if data is None and cfg.data is None:
        raise UsageError(f"{method} at scale {cfg.scale!r} trains on real data: pass --data DIR")
    return cfg


LAYOUT_OF = {"dsol": "dsol", "cavl": "levels", "counting": "levels", "separation": "solo"}


def _check_layout(method: str, data: Path) -> None:
    """Refuse, naming the ``avlib layout`` command that makes it, a clip directory laid out otherwise than ``method``
    reads it: DSOL without ``DATA/solo``, or no ``train`` clip where the method reads ``DATA`` itself (CAVL reads
    ``DATA/c<l>`` where those exist)."""
    hint = f"lay a dataset script's directory out with 'avlib layout {LAYOUT_OF.get(method, 'solo')} SRC {data}'"
    if method == "dsol":
        if not (data / "solo" / "manifest.jsonl").is_file():
            raise UsageError(f"--data {data}: dsol reads {data / 'solo'} (and its stage-two clips beside it); {hint}")
        return
    if not (data / "manifest.jsonl").is_file() or (method == "cavl" and any(data.glob("c*/manifest.jsonl"))):
        return
    try:
        splits = {json.loads(line).get("split") for line in (data / "manifest.jsonl").open() if line.strip()}
    except (ValueError, AttributeError):  # a malformed manifest: the clip reader reports every bad row
        return
    if "train" not in splits:
        raise UsageError(f"--data {data}: no clip of split 'train' (splits: {', '.join(sorted(map(str, splits)))}); "
                         f"{hint}")


def _synth(args: argparse.Namespace) -> dict[str, Any]:
    from avlib.data import SynthOrchestra, write_clips
    from avlib.methods import get_method

    if (args.out / "manifest.jsonl").exists():
        raise UsageError(f"{args.out} already holds a clip dataset (manifest.jsonl); choose another directory")
    cfg = get_method(args.method).config(args.scale)
    if cfg.data is None:
        raise UsageError(f"method {args.method!r} at scale {cfg.scale!r} has no SynthOrchestra world; use a smaller "
                         "--scale")
    n_train = args.clips or int(getattr(cfg, "train_clips", None) or cfg.data["size"] * 2 // 3)
    n_test = args.test_clips or max(cfg.data["size"] - n_train, 1)
    world = SynthOrchestra(**{**cfg.data, "size": n_train + n_test}, seed=args.seed)
    write_clips(world, args.out, range(n_train), split="train")
    write_clips(world, args.out, range(n_train, n_train + n_test), split="test", append=True)
    return {"out": str(args.out), "train_clips": n_train, "test_clips": n_test, "world": repr(world)}


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from avlib.methods import get_method, train

    cfg = _config(args.method, args.scale, args.data, args.set, steps=args.steps, batch_size=args.batch_size,
                  lr=args.lr, micro_batch=args.micro_batch, channels_last=args.channels_last or None)
    if cfg.init_from is None and args.init_from is not None:
        raise UsageError(f"--init-from: {args.method} at scale {cfg.scale!r} starts from scratch")
    if cfg.init_from is not None and args.init_from is None:
        raise UsageError(f"{args.method} at scale {cfg.scale!r} starts from a trained {cfg.init_from} model: run "
                         f"`avlib train {cfg.init_from} --scale {cfg.scale} --out RUN` first, then pass "
                         "--init-from RUN")
    run = train(cfg, seed=args.seed, data=args.data, out=args.out, resume=args.resume, overwrite=args.overwrite,
                init_from=args.init_from, evaluate=False, precision=args.precision, device=args.device,
                ckpt_every=args.ckpt_every, log_every=args.log_every, num_workers=args.workers, compile=args.compile,
                clip_grad=args.clip_grad, deterministic=args.deterministic, live_plot=False)
    done = [r for r in run.results if r is not None]
    summary = {
        "method": args.method,
        "scale": cfg.scale,
        "stages": [p.name for p in get_method(args.method).stages(cfg)],
        "step": done[-1].step if done else None,
        "final": run.history[-1] if run.history else None,
        "already_complete": run.loaded,
        "device": done[-1].device if done else None,
        "precision": done[-1].precision if done else None,
        "batch": done[-1].batch_plan if done else None,
        "seconds": round(sum(r.seconds for r in done), 3),
        "world_size": done[-1].world_size if done else None,
    }
    if int(os.environ.get("RANK", "0")) == 0:
        if not args.no_eval:
            summary["eval"] = get_method(args.method).evaluate(run.cfg, run.model, args.data, args.seed)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _eval(args: argparse.Namespace) -> dict[str, Any]:
    from avlib.methods.run import evaluate_loaded, load

    if not args.ckpt.exists():
        raise UsageError(f"--ckpt {args.ckpt}: no such checkpoint file or run directory")
    if args.data is not None and not (args.data / "manifest.jsonl").is_file():
        raise UsageError(f"--data {args.data}: not a clip directory (no manifest.jsonl)")
    cfg, model, state = load(args.ckpt, args.device)
    if cfg.method != args.method:
        raise UsageError(f"--ckpt {args.ckpt} holds a {cfg.method!r} model (scale {cfg.scale!r}), not {args.method!r}")
    return {"checkpoint": str(args.ckpt), **evaluate_loaded(args.ckpt, cfg, model, state, args.data, args.seed)}


def _layout(args: argparse.Namespace) -> dict[str, Any]:
    from avlib.data import layouts

    if not (args.src / "manifest.jsonl").is_file():
        raise UsageError(f"{args.src}: not a clip directory (no manifest.jsonl)")
    if args.out.exists() and any(args.out.iterdir()):
        raise UsageError(f"{args.out} exists and is not empty; choose a new directory")
    if args.kind == "levels":
        if not 0 <= args.test_share < 1:
            raise UsageError(f"--test-share must be in [0, 1); got {args.test_share}")
        clips = layouts.curriculum_levels(args.src, args.out, args.test_share)
    elif args.kind == "dsol":
        clips = layouts.dsol_layout(args.src, args.out, mosaics=args.mosaics, seed=args.seed)
    else:
        clips = {"solo": layouts.solo_clips(args.src, args.out)}
    return {"layout": args.kind, "out": str(args.out), "clips": clips}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``avlib`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    from avlib.engine import CheckpointError, RunDirError, TrainingInterrupted

    try:
        args = _parser().parse_args(argv)
        result = {"synth": _synth, "train": _train, "eval": _eval, "layout": _layout}[args.command](args)
    except UsageError as err:
        print(err if str(err).startswith("avlib") else f"avlib: error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as err:
        again = [str(a) for a in (argv if argv is not None else sys.argv[1:]) if a != "--overwrite"]
        again += [] if "--resume" in again else ["--resume"]
        print(f"avlib: {err}; continue with: avlib {shlex.join(again)}", file=sys.stderr)
        return 128 + err.signum
    except (RunDirError, CheckpointError) as err:  # a run directory or checkpoint that does not fit what was asked
        print(f"avlib: error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - the command reports any failure in one message, not a traceback
        if os.environ.get("AVLIB_DEBUG"):
            raise
        print(f"avlib: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one report
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
