"""CAVL's complexity estimation (Hu et al., 2020, §3.2.2, §4.3.3, supplement §6.3) as a method: how many sources
sound in a clip, by Poisson regression on its audio.

Full (supplement §6.3): :class:`~avlib.nets.counting.CountingNet` on CAVL's 10 s, 512x432 log-frequency spectrogram;
the Poisson regression loss (Eq. 6, without ``ln y!``); SGD with momentum 0.9, lr 1e-2 decayed as
``1e-2 / (1 + 0.5 * epoch)``; the prediction is the count ``y in 1..5`` of highest Poisson probability; scored by its
accuracy and mean absolute error (Table 2) beside the uniform guess. Trained from scratch ("w/o Pre-train") or with
its trunk copied from a trained CAVL audio stream (``init_from="cavl"``: the "CAVL-C0/C1/C2" rows, by which levels
that CAVL run trained). Batch size, epochs and the epoch length are not in the paper: ours (AudioSet-Balanced-Train,
the 19,443 clips of §4.1, at batch 32 is 608 steps an epoch).

Quick / colab: SynthOrchestra scenes of the curriculum families ``c1`` ... ``c4`` (each scene draws one; label = its
number of sound sources) and the same small audio stream as CAVL's preset of that scale, so that a trained quick CAVL
can start the counting net. From a clip directory, ``n_sources`` in the manifest is the label; a directory of
per-level clip directories (``DATA/c1`` ... ``DATA/c4``) trains and evaluates on all of them together.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset, StackDataset

from avlib.audio import example_samples, first_example, make_frontend
from avlib.data import ClipDataset, ClipFormatError, SynthOrchestra
from avlib.data.clips import MANIFEST
from avlib.data.views import fit_length
from avlib.eval.avc import model_device
from avlib.losses import poisson_regression_loss
from avlib.methods.base import Method, MethodConfig, StagePlan, register
from avlib.methods.cavl import COLAB as CAVL_COLAB
from avlib.methods.cavl import FULL as CAVL_FULL
from avlib.methods.cavl import QUICK as CAVL_QUICK
from avlib.metrics import count_chance, poisson_count_accuracy, poisson_count_mae, poisson_count_predict
from avlib.nets.cavl import CAVLNet
from avlib.nets.counting import CountingNet

__all__ = ["Counting", "CountingConfig", "counting_step"]

Layers = tuple[int | str, ...] | None


@dataclass(frozen=True)
class CountingConfig(MethodConfig):
    """The counting network: its VGGish trunk (``None`` = VGGish, last pool dropped) and head width, the counts
    predicted (``min_count`` ... ``max_count``), and ``epoch_steps``, the optimisation steps of one epoch: the lr
    is ``lr / (1 + gamma * epoch)`` (the ``inverse`` schedule, one milestone per epoch)."""

    method = "counting"
    audio_cfg: Layers = None
    hidden: int = 512
    batch_norm: bool = False
    min_count: int = 1
    max_count: int = 5
    epoch_steps: int = 608
    optimizer: str = "sgd"
    lr: float = 1e-2
    momentum: float = 0.9
    schedule: str = "inverse"
    gamma: float = 0.5
    audio: dict[str, Any] = field(default_factory=lambda: dict(CAVL_FULL.audio))


CURRICULUM = ["c1", "c2", "c3", "c4"]  # a list, not a tuple: the config round-trips through JSON unchanged
FULL = CountingConfig(batch_size=32, steps=30 * 608)  # AudioSet-Balanced-Train counts (data_scripts/), 30 epochs
COLAB = FULL.replace(scale="colab", audio_cfg=CAVL_COLAB.audio_cfg, hidden=128, batch_norm=True,
                     audio=dict(CAVL_COLAB.audio), batch_size=64, epoch_steps=125, steps=1000,
                     data={"family": CURRICULUM, "n_categories": 12, "size": 8000, "duration": 2.0})
QUICK = FULL.replace(scale="quick", audio_cfg=CAVL_QUICK.audio_cfg, hidden=64, batch_norm=True,
                     audio=dict(CAVL_QUICK.audio), batch_size=32, epoch_steps=32, steps=160, eval_size=256,
                     data={"family": CURRICULUM, "n_categories": 8, "size": 1024, "duration": 1.0})


def counting_step(model: CountingNet, batch: dict[str, Tensor], frontend: nn.Module,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """One training step's loss: Eq. 6 on the batch.

    Args:
        model: the counting network.
        batch: waveforms ``audio (B, N)`` (the spectrogram is computed here, on the batch's device) and the true
            counts ``count (B,)``.
        frontend: the audio frontend.
        generator: unused (the step draws nothing); accepted as every method's step accepts it.

    Returns:
        the scalar ``loss`` and the mean predicted rate ``rate`` (detached).
    """
    out = model(first_example(frontend, batch["audio"]))
    loss = poisson_regression_loss(out["log_rate"].float(), batch["count"])  # Eq. 6
    return {"loss": loss, "rate": out["rate"].detach().float().mean()}


class CountClips(Dataset):
    """Items ``{"audio": (samples,), "count": ()}`` of a clip directory's split, the count read from the manifest's
    ``n_sources`` (a clip without it is refused in one line naming the clip and the manifest)."""

    def __init__(self, root: Path, split: str, sample_rate: int, samples: int) -> None:
        self.clips = ClipDataset(root, split, sample_rate=sample_rate, frames="none")
        self.samples = int(samples)
        for row in self.clips.rows:
            if row.get("n_sources") is None:
                raise ClipFormatError(f"clip {row['id']!r} in {root / MANIFEST} has no n_sources: counting needs the "
                                      "number of sound sources of every clip")
        self.counts = torch.tensor([int(r["n_sources"]) for r in self.clips.rows])

    def __len__(self) -> int:
        return len(self.clips)

    def item_name(self, i: int) -> str:
        """The clip id of item ``i`` (for error messages)."""
        return self.clips.clip_name(i)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"audio": fit_length(self.clips.get_audio(i), self.samples), "count": self.counts[i]}


def clip_dirs(data: Path) -> list[Path]:
    """``data`` if it is a clip directory, else its per-level clip directories (``DATA/c1`` ...), in order."""
    if (data / MANIFEST).is_file():
        return [data]
    levels = sorted(p.parent for p in data.glob(f"*/{MANIFEST}"))
    if not levels:
        raise ClipFormatError(f"{data} holds no {MANIFEST}, nor sub-directories with one")
    return levels


def _named_concat(parts: list[CountClips]) -> Dataset:
    """One dataset over several clip directories' items (item names kept for error messages)."""
    if len(parts) == 1:
        return parts[0]
    joined = ConcatDataset(parts)

    def item_name(i: int) -> str:
        for part, end in zip(parts, joined.cumulative_sizes, strict=True):
            if i < end:
                return part.item_name(i - (end - len(part)))
        raise IndexError(i)

    joined.item_name = item_name
    return joined


class Counting(Method):
    name = "counting"
    presets = {"full": FULL, "colab": COLAB, "quick": QUICK}

    def model(self, cfg: CountingConfig) -> CountingNet:
        return CountingNet(audio_cfg=cfg.audio_cfg, hidden=cfg.hidden, batch_norm=cfg.batch_norm)

    def step(self, cfg: CountingConfig) -> Callable[..., dict[str, Tensor]]:
        """:func:`counting_step` with the config's frontend: ``step(model, batch, generator=None)``."""
        return functools.partial(counting_step, frontend=make_frontend(cfg.audio))

    def samples(self, cfg: CountingConfig) -> int:
        """Audio samples per clip that the network input needs."""
        return example_samples(make_frontend(cfg.audio), cfg.audio)

    def example_batch(self, cfg: CountingConfig, n: int) -> dict[str, Tensor]:
        return {"audio": 0.1 * torch.randn(n, self.samples(cfg)),
                "count": torch.randint(cfg.min_count, cfg.max_count + 1, (n,))}

    def stages(self, cfg: CountingConfig) -> list[StagePlan]:
        """One stage whose lr is ``lr / (1 + gamma * epoch)``: a milestone at every ``epoch_steps``."""
        return [StagePlan("train", cfg.replace(milestones=tuple(range(cfg.epoch_steps, cfg.steps, cfg.epoch_steps))))]

    def scenes(self, cfg: CountingConfig, seed: int, size: int | None = None) -> dict[str, Tensor]:
        """``audio (n, samples)`` and ``count (n,)`` (each scene's number of sound sources) of the config's world
        with ``seed`` (``size`` scenes); frames are never rendered."""
        world = SynthOrchestra(**{**cfg.data, **({"size": size} if size else {})}, seed=seed)
        n = self.samples(cfg)
        return {"audio": torch.stack([fit_length(world.get_audio(i), n) for i in range(len(world))]),
                "count": torch.tensor([world.layout(i)["source_categories"].size for i in range(len(world))])}

    def _clips(self, cfg: CountingConfig, data: Path, split: str) -> Dataset:
        return _named_concat([CountClips(d, split, int(cfg.audio["sample_rate"]), self.samples(cfg))
                              for d in clip_dirs(data)])

    def train_data(self, cfg: CountingConfig, data: Path | None, seed: int) -> Dataset:
        if data is None:
            scenes = self.scenes(cfg, seed)
            return StackDataset(audio=scenes["audio"], count=scenes["count"])
        return self._clips(cfg, data, "train")

    def held_out(self, cfg: CountingConfig, data: Path | None, seed: int) -> dict[str, Tensor]:
        """``eval_size`` scenes of the world with ``seed + 1``, or every ``test`` clip (of every level)."""
        if data is None:
            return self.scenes(cfg, seed + 1, cfg.eval_size)
        clips = self._clips(cfg, data, "test")
        items = [clips[i] for i in range(len(clips))]
        return {key: torch.stack([it[key] for it in items]) for key in ("audio", "count")}

    @torch.no_grad()
    def rates(self, cfg: CountingConfig, model: CountingNet, audio: Tensor, batch_size: int = 64) -> Tensor:
        """Predicted Poisson rates ``(n,)`` of waveforms ``audio (n, N)``, in chunks, on the CPU (eval mode)."""
        was_training = model.training
        model.eval()
        device, frontend = model_device(model), make_frontend(cfg.audio)
        try:
            out = [model(first_example(frontend, audio[i : i + batch_size].to(device)))["rate"].float().cpu()
                   for i in range(0, audio.shape[0], batch_size)]
        finally:
            model.train(was_training)
        return torch.cat(out)

    def evaluate(self, cfg: CountingConfig, model: nn.Module, data: Path | None, seed: int) -> dict[str, Any]:
        """Accuracy and MAE of the most probable count (Table 2) on held-out clips, beside the uniform guess over
        ``min_count..max_count`` (the paper's "Random" row) and the best single count for every clip (an oracle
        constant: the held-out labels choose it)."""
        inputs = self.held_out(cfg, data, seed)
        y, lam = inputs["count"], self.rates(cfg, model, inputs["audio"], cfg.batch_size)
        span = (cfg.max_count, cfg.min_count)
        counts = range(cfg.min_count, cfg.max_count + 1)
        constant = {c: float((y - c).abs().double().mean()) for c in counts}
        best = min(constant, key=constant.__getitem__)
        pred = poisson_count_predict(lam, *span)
        return {"clips": int(y.numel()),
                "held_out_loss": float(poisson_regression_loss(lam.clamp_min(1e-30).log(), y)),
                "accuracy": poisson_count_accuracy(lam, y, *span), "mae": poisson_count_mae(lam, y, *span),
                "chance": count_chance(y, *span),
                "best_constant": {"count": best, "accuracy": float((y == best).double().mean()),
                                  "mae": constant[best]},
                "true_counts": {str(c): int((y == c).sum()) for c in counts},
                "predicted_counts": {str(c): int((pred == c).sum()) for c in counts}}

    def init(self, cfg: CountingConfig, model: CountingNet, source: nn.Module, train: Dataset) -> CountingNet:
        """The trunk copied from a trained CAVL network's audio stream (the paper's "pre-train" rows); the head
        keeps its fresh initialisation."""
        if not isinstance(source, CAVLNet):
            raise TypeError(f"counting starts from a trained CAVL network; got a {type(source).__name__}")
        try:
            model.audio.load_state_dict(source.audio.state_dict())
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1].strip()
            raise ValueError(f"the CAVL audio stream does not fit counting at scale {cfg.scale!r} "
                             f"(audio_cfg {cfg.audio_cfg}, batch_norm {cfg.batch_norm}): {first}") from None
        return model


register(Counting())
