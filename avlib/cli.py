"""The ``avlib`` command: write a SynthOrchestra clip dataset, train a method through the engine, evaluate a checkpoint.

    avlib synth OUT [--method l3] [--scale quick] [--clips N] [--test-clips M] [--seed S]
    avlib train METHOD --out RUN [--scale S] [--data DIR] [--resume] [--steps N] ...
    avlib eval METHOD --ckpt RUN/last.pt [--data DIR] [--scale S]

Methods (``avlib.methods``): ``l3``, ``ave``, ``avol`` (evaluated by AVC accuracy on held-out pairs) and ``dmc``,
``cavl`` (evaluated by sound localization: cIoU@0.5 and AUC of the related and unrelated centers' maps against the
test clips' sounding-object boxes, beside the centred-box and whole-image baselines; on clips without boxes, the
held-out loss and a note that localization needs boxes). ``avlib synth --method M`` writes M's own world.
``avlib train`` runs unchanged under ``torchrun --nproc_per_node=K`` (one process per GPU; see ``avlib.train``).
Results are printed as one JSON object on stdout. Bad arguments print one line on stderr and exit with status 2;
failures while running print their message (no traceback unless ``AVLIB_DEBUG=1``) and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
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
    t.add_argument("--out", type=Path, required=True, help="run directory: last.pt, metrics.jsonl, summary.json")
    t.add_argument("--scale", choices=SCALES, default=None, help="config scale (default: AVLIB_SCALE or quick)")
    t.add_argument("--data", type=Path, help="clip directory (default: the config's SynthOrchestra world in memory)")
    t.add_argument("--resume", action="store_true", help="continue from RUN/last.pt if it exists")
    t.add_argument("--init-from", type=Path,
                   help="start from another method's trained run (configs with init_from: avol at quick scale)")
    t.add_argument("--steps", type=_positive_int, help="optimisation steps (default: the config's)")
    t.add_argument("--batch-size", type=_positive_int, help="batch size per process (default: the config's)")
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
    t.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")

    e = sub.add_parser("eval", help="score a checkpoint on held-out data")
    e.add_argument("method", choices=methods)
    e.add_argument("--ckpt", type=Path, required=True, help="checkpoint file (or run directory)")
    e.add_argument("--data", type=Path, help="clip directory (default: the config's SynthOrchestra world)")
    e.add_argument("--scale", choices=SCALES, default=None, help="default: the scale the checkpoint was trained at")
    e.add_argument("--device", help="default: best available")
    e.add_argument("--seed", type=int, default=None, help="default: the training seed")
    return p


def _build(method: str, scale: str | None, data: Path | None, seed: int):
    """``avlib.methods.build`` after checking the arguments it depends on."""
    from avlib.configs import get_config
    from avlib.methods import build

    if data is not None and not (data / "manifest.jsonl").is_file():
        raise UsageError(f"--data {data}: not a clip directory (no manifest.jsonl); write one with 'avlib synth'")
    cfg = get_config(method, scale)
    if data is None and cfg.get("data") is None:
        raise UsageError(f"{method} at scale {cfg['scale']!r} trains on real data: pass --data DIR")
    return build(method, scale, data, seed=seed)


def _synth(args: argparse.Namespace) -> dict[str, Any]:
    from avlib.configs import get_config
    from avlib.data import SynthOrchestra, write_clips

    if (args.out / "manifest.jsonl").exists():
        raise UsageError(f"{args.out} already holds a clip dataset (manifest.jsonl); choose another directory")
    cfg = get_config(args.method, args.scale)
    if cfg.get("data") is None:
        raise UsageError(
            f"method {args.method!r} at scale {cfg['scale']!r} has no SynthOrchestra world; use a smaller --scale"
        )
    n_train = args.clips or int(cfg.get("train_clips", cfg["data"]["size"] * 2 // 3))
    n_test = args.test_clips or max(cfg["data"]["size"] - n_train, 1)
    world = SynthOrchestra(**{**cfg["data"], "size": n_train + n_test}, seed=args.seed)
    write_clips(world, args.out, range(n_train), split="train")
    write_clips(world, args.out, range(n_train, n_train + n_test), split="test", append=True)
    return {"out": str(args.out), "train_clips": n_train, "test_clips": n_test, "world": repr(world)}


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from avlib.methods import get_method, make_optimizer, train_config
    from avlib.train import fit

    built = _build(args.method, args.scale, args.data, args.seed)
    init = built.cfg.get("init_from")
    if init is None and args.init_from is not None:
        raise UsageError(f"--init-from: {args.method} at scale {built.cfg['scale']!r} starts from scratch")
    if init is not None:
        if args.init_from is None:
            raise UsageError(
                f"{args.method} at scale {built.cfg['scale']!r} starts from a trained {init} model: run "
                f"`avlib train {init} --scale {built.cfg['scale']} --out RUN` first, then pass --init-from RUN"
            )
        built.model = get_method(args.method).init(built, args.init_from)
    if args.lr is not None:
        built.cfg["lr"] = args.lr
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "channels_last": args.channels_last or None}
    cfg = train_config(
        built.cfg,
        **{k: v for k, v in overrides.items() if v is not None},
        out_dir=args.out,
        resume=args.resume,
        precision=args.precision,
        device=args.device,
        ckpt_every=args.ckpt_every,
        log_every=args.log_every,
        num_workers=args.workers,
        seed=args.seed,
        compile=args.compile,
        clip_grad=args.clip_grad,
        live_plot=False,
    )
    cfg.meta.update(data=None if args.data is None else str(args.data), seed=args.seed)
    result = fit(built.model, built.step_fn, built.train_data, make_optimizer(built.model, built.cfg), cfg)
    summary = {
        "method": args.method,
        "scale": built.cfg["scale"],
        "step": result.step,
        "final": result.history[-1] if result.history else None,
        "checkpoint": str(result.checkpoint),
        "device": result.device,
        "precision": result.precision,
        "seconds": round(result.seconds, 3),
        "world_size": result.world_size,
    }
    if int(os.environ.get("RANK", "0")) == 0:
        if not args.no_eval:
            summary["eval"] = built.eval_fn(built.model)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _eval(args: argparse.Namespace) -> dict[str, Any]:
    from avlib.runtime import select_device
    from avlib.train import load_checkpoint

    ckpt = args.ckpt / "last.pt" if args.ckpt.is_dir() else args.ckpt
    if not ckpt.is_file():
        raise UsageError(f"--ckpt {args.ckpt}: no such checkpoint file")
    state = load_checkpoint(ckpt)
    meta = state.get("config", {}).get("meta", {})
    if meta.get("method", args.method) != args.method:
        raise UsageError(f"--ckpt {ckpt} holds a {meta['method']!r} model, not {args.method!r}")
    seed = args.seed if args.seed is not None else int(meta.get("seed", 0))
    built = _build(args.method, args.scale or meta.get("scale"), args.data, seed)
    built.model.load_state_dict(state["model"])
    built.model.to(select_device(args.device))
    return {"method": args.method, "checkpoint": str(ckpt), "step": state["step"], **built.eval_fn(built.model)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``avlib`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        result = {"synth": _synth, "train": _train, "eval": _eval}[args.command](args)
    except UsageError as err:
        print(err if str(err).startswith("avlib") else f"avlib: error: {err}", file=sys.stderr)
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
