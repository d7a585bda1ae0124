"""CAVL's visually guided sound separation (Hu et al., 2020, §3.3.2, §4.5, supplement §6.4) as a method, trained by
mix-and-separate (Sound of Pixels, Zhao et al. 2018).

Two solo clips are added; for each, the U-Net (:class:`~avlib.nets.unet.SeparationUNet`) sees the mixture's
log-frequency magnitude and a vector for that clip's sounding object, and predicts a mask on the log-frequency grid.
Training target (``mask_target``): ``ratio``, Eq. 8, the L1 distance to ``M = |A| / |A_mix|`` clipped to [0, 1]
(a sigmoid cannot output more; where phases cancel, ``M > 1``), or ``binary``, Sound of Pixels' ``1[|A| >= |A_other|]``
with binary cross-entropy. At test time the mask is warped back to the STFT's bins, applied to the mixture's STFT
and inverted with the mixture's phase (:class:`~avlib.audio.SeparationSTFT`).

The vector (``visual``): ``center`` or ``mask``, the two representations of §3.3.2 from a trained, frozen CAVL net
(:class:`~avlib.nets.unet.CAVLGuide`: the visual center Eq. 7 aligns with the clip's own sound, or the trunk's
feature map max-pooled under that center's assignment), or ``constant`` (a vector of ones: an audio-only U-Net).
As in supplement §6.4, the representation is taken on the solo scene, from its frame and its own sound. The guided
variants start from a trained CAVL model (``init_from="cavl"``; train CAVL once and pass its run's model or
directory to each of them); ``constant`` starts from scratch.

Full: supplement §6.4's U-Net (16-...-512 channels, fc 512 -> 512) on CAVL's 512 x 432 log-frequency spectrogram of
10 s at 11.025 kHz (STFT window 1022, hop 256), the CAVL net of :mod:`avlib.methods.cavl` (VGG16, 512-d centers); on
MUSIC solo clips (a clip directory, see data_scripts/). The paper gives no optimiser, batch or schedule for the
separation net: Adam, lr 1e-4 (CAVL's), batch 32 and 20k steps are ours. Quick / colab: the same layers narrower,
1 s clips with a 510-point STFT, the CAVL net of that scale's CAVL preset, on SynthOrchestra solo scenes generated at
the CAVL preset's audio rate (the separation spectrogram resamples them to 11.025 kHz on the device).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, StackDataset

from avlib.audio import SeparationSTFT, first_example, make_frontend
from avlib.data import ClipDataset, SynthOrchestra
from avlib.data.views import ClipPairs, clip_tensors, scene_tensors
from avlib.eval.avc import model_device
from avlib.eval.separation import binary_mask, bss_scores, ideal_estimates, mixture_pairs, ratio_mask
from avlib.methods.base import Method, MethodConfig, get_method, register
from avlib.methods.cavl import COLAB as CAVL_COLAB
from avlib.methods.cavl import FULL as CAVL_FULL
from avlib.methods.cavl import QUICK as CAVL_QUICK
from avlib.methods.cavl import CAVLConfig
from avlib.nets.cavl import CAVLNet
from avlib.nets.unet import CAVLGuide, SeparationUNet, VisuallyGuidedSeparator
from avlib.vision import CAVLImageTransform

__all__ = ["Separation", "SeparationConfig", "guide_vectors", "pair_partners", "separation_step"]

VISUALS = ("constant", "center", "mask")
TARGETS = ("ratio", "binary")


@dataclass(frozen=True)
class SeparationConfig(MethodConfig):
    """The separation U-Net (``encoder_channels``, decoder mirrored; ``visual_channels`` the width of its visual fc),
    the visual vector it gets (``visual``: ``constant``, ``center`` or ``mask``), the training target
    (``mask_target``: ``ratio`` or ``binary``), the spectrogram (``sample_rate``, ``n_fft``, ``hop_length``,
    ``freq_bins`` log-frequency bins, ``seconds`` per clip) and ``cavl``, the config of the CAVL net that gives the
    visual vector (its audio frontend and image size are the guide's inputs; clips are read at its audio rate)."""

    method = "separation"
    visual: str = "mask"
    mask_target: str = "ratio"
    encoder_channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    visual_channels: int = 512
    sample_rate: int = 11025
    n_fft: int = 1022
    hop_length: int = 256
    freq_bins: int = 512
    seconds: float = 10.0
    cavl: CAVLConfig = field(default_factory=lambda: CAVL_FULL)
    init_from: str | None = "cavl"

    def __post_init__(self) -> None:
        if self.visual not in VISUALS:
            raise ValueError(f"SeparationConfig: visual must be one of {VISUALS}; got {self.visual!r}")
        if self.mask_target not in TARGETS:
            raise ValueError(f"SeparationConfig: mask_target must be one of {TARGETS}; got {self.mask_target!r}")
        wanted = None if self.visual == "constant" else "cavl"
        if self.init_from != wanted:
            raise ValueError(f"SeparationConfig: visual={self.visual!r} needs init_from={wanted!r} (the guided "
                             f"variants start from a trained CAVL); got init_from={self.init_from!r}")


FULL = SeparationConfig(batch_size=32, steps=20_000, lr=1e-4, image_size=CAVL_FULL.image_size)  # MUSIC solo clips
COLAB = FULL.replace(scale="colab", encoder_channels=(16, 32, 64, 128, 256), visual_channels=128, seconds=2.0,
                     n_fft=510, hop_length=128, freq_bins=256, cavl=CAVL_COLAB, image_size=CAVL_COLAB.image_size,
                     batch_size=32, steps=2000, lr=1e-3, eval_size=128,
                     data={"family": "solo", "n_categories": 12, "size": 4000, "image_size": 128, "duration": 2.0})
QUICK = FULL.replace(scale="quick", encoder_channels=(16, 32, 64, 128), visual_channels=64, seconds=1.0,
                     n_fft=510, hop_length=256, freq_bins=64, cavl=CAVL_QUICK, image_size=CAVL_QUICK.image_size,
                     batch_size=32, steps=600, lr=3e-3, eval_size=96,
                     data={"family": "solo", "n_categories": 8, "size": 512, "image_size": 64, "duration": 1.0})


def pair_partners(n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
                  ) -> Tensor:
    """Random disjoint pairs of a batch's items for mix-and-separate: ``partner[i]`` is the item mixed with ``i``.

    A random permutation is cut into consecutive pairs (each item is then the other's partner); with ``n`` odd, the
    permutation's last item is mixed with its first (which keeps its own partner).

    Returns:
        ``(n,)`` long, ``partner[i] != i``.
    """
    if n < 2:
        raise ValueError(f"pair_partners: mix-and-separate needs at least 2 items; got {n}")
    perm = torch.randperm(n, generator=generator).to(device)
    partner = torch.empty(n, dtype=torch.long, device=perm.device)
    even = n - n % 2
    partner[perm[0:even:2]] = perm[1:even:2]
    partner[perm[1:even:2]] = perm[0:even:2]
    if n % 2:
        partner[perm[-1]] = perm[0]
    return partner


def guide_vectors(model: VisuallyGuidedSeparator, batch: dict[str, Tensor], guide_frontend: nn.Module,
                  cache: dict[int, Tensor] | None = None) -> Tensor:
    """The frozen guide's vectors ``(B, visual_dim)`` for a batch's items (their own frame and own sound).

    With a ``cache`` and the batch's ``index`` (each item's position in a dataset whose items never change, as a
    world's scenes), every item's vector is computed once and then read from the cache: the guide is frozen and in
    eval mode, so its vector for an item is the same at every step (up to float rounding of another batch size).
    """
    guide = model.guide
    index = batch.get("index")
    if cache is None or index is None:
        return guide(batch["image"], first_example(guide_frontend, batch["audio"]))["visual"]
    keys = [int(k) for k in index.tolist()]
    missing = [i for i, k in enumerate(keys) if k not in cache]
    if missing:
        sel = torch.tensor(missing, device=batch["audio"].device)
        found = guide(batch["image"][sel], first_example(guide_frontend, batch["audio"][sel]))["visual"]
        cache.update({keys[i]: v for i, v in zip(missing, found, strict=True)})
    return torch.stack([cache[k] for k in keys])


def separation_step(model: VisuallyGuidedSeparator, batch: dict[str, Tensor], stft: SeparationSTFT,
                    guide_frontend: nn.Module | None = None, target: str = "ratio",
                    generator: torch.Generator | None = None, guide_cache: dict[int, Tensor] | None = None
                    ) -> dict[str, Tensor]:
    """One mix-and-separate step's loss: every item's audio is added to its partner's (:func:`pair_partners`) and
    the net, given the item's own frame (and, for the guide, its own sound), predicts its mask.

    Args:
        model: the separator.
        batch: waveforms ``audio (B, N)`` at ``stft.input_sample_rate`` and, for a guided model, ``image
            (B, 3, H, W)`` (and optionally ``index (B,)``, see :func:`guide_vectors`); the spectrograms are
            computed here, on the batch's device, in float32.
        stft: the separation frontend.
        guide_frontend: the CAVL net's audio frontend (guided models only).
        target: ``ratio`` (Eq. 8: L1 to the ratio mask clipped to [0, 1]) or ``binary`` (BCE to the binary mask).
        guide_cache: the guide's vectors by item ``index``, filled as items are first seen (guided models only).

    Returns:
        the scalar ``loss`` and the mean predicted mask ``mask_mean`` (detached).
    """
    if target not in TARGETS:
        raise ValueError(f"separation_step: target must be one of {TARGETS}; got {target!r}")
    audio = batch["audio"]
    partner = pair_partners(audio.shape[0], generator, audio.device)
    stft.to(audio.device)
    with torch.autocast(device_type=audio.device.type, enabled=False):
        own = stft.prepare(audio)  # (B, N') at the separation rate
        mix_spec = stft.stft(own + own[partner])
        own_mag = stft.to_log_frequency(stft.stft(own).abs())  # (B, F, T) on the log-frequency grid
        mix_mag = stft.to_log_frequency(mix_spec.abs())
        spec = stft.log_input(mix_spec.abs())
    visual = None if model.guide is None else guide_vectors(model, batch, guide_frontend, guide_cache)
    logits = model(spec, visual=visual)["logits"][:, 0].float()
    if target == "ratio":
        loss = F.l1_loss(torch.sigmoid(logits), ratio_mask(own_mag, mix_mag, stft.eps))  # Eq. 8 (mean, not sum)
    else:
        loss = F.binary_cross_entropy_with_logits(logits, binary_mask(own_mag, own_mag[partner]))
    return {"loss": loss, "mask_mean": torch.sigmoid(logits).detach().mean()}


class Separation(Method):
    name = "separation"
    presets = {"full": FULL, "colab": COLAB, "quick": QUICK}

    def config(self, scale: str | None = None, **changes: Any) -> SeparationConfig:
        """As every method's, but choosing ``visual`` also sets ``init_from`` (``None`` for ``constant``, ``"cavl"``
        otherwise) unless it is given too."""
        if "visual" in changes and "init_from" not in changes:
            changes["init_from"] = None if changes["visual"] == "constant" else "cavl"
        return super().config(scale, **changes)

    @staticmethod
    def input_rate(cfg: SeparationConfig) -> int:
        """The rate clips are read or generated at: the CAVL net's audio rate."""
        return int(cfg.cavl.audio["sample_rate"])

    def samples(self, cfg: SeparationConfig) -> int:
        """Audio samples per clip at :meth:`input_rate`."""
        return round(cfg.seconds * self.input_rate(cfg))

    def frontends(self, cfg: SeparationConfig) -> tuple[SeparationSTFT, nn.Module | None]:
        """The separation frontend and the guide's CAVL frontend (``None`` for ``constant``), both taking waveforms
        at :meth:`input_rate`."""
        rate = self.input_rate(cfg)
        stft = SeparationSTFT(cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.freq_bins, input_sample_rate=rate)
        return stft, None if cfg.visual == "constant" else make_frontend(cfg.cavl.audio, input_sample_rate=rate)

    def cavl_model(self, cfg: SeparationConfig) -> CAVLNet:
        """A fresh CAVL net of ``cfg.cavl`` with one sound (solo scenes: k_a = 1, k_v = 2)."""
        return get_method("cavl").model(cfg.cavl.replace(k_audio=1))

    def model(self, cfg: SeparationConfig) -> VisuallyGuidedSeparator:
        guide = None if cfg.visual == "constant" else CAVLGuide(self.cavl_model(cfg), cfg.visual)
        visual_dim = cfg.cavl.embed_dim if guide is None else guide.out_dim
        unet = SeparationUNet(encoder_channels=cfg.encoder_channels, visual_dim=visual_dim,
                              visual_channels=cfg.visual_channels)
        return VisuallyGuidedSeparator(unet, guide)

    def init(self, cfg: SeparationConfig, model: VisuallyGuidedSeparator, source: nn.Module, train: Dataset
             ) -> VisuallyGuidedSeparator:
        """The guide's CAVL net loaded from a trained CAVL model (frozen); the U-Net keeps its fresh weights."""
        if not isinstance(source, CAVLNet):
            raise TypeError(f"separation starts from a trained CAVL network; got a {type(source).__name__}")
        try:
            model.guide.cavl.load_state_dict(source.state_dict())
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1].strip()
            raise ValueError(f"the CAVL network does not fit separation at scale {cfg.scale!r} (its config's cavl: "
                             f"visual_cfg {cfg.cavl.visual_cfg}, audio_cfg {cfg.cavl.audio_cfg}, embed_dim "
                             f"{cfg.cavl.embed_dim}): {first}") from None
        return model

    def step(self, cfg: SeparationConfig) -> Callable[..., dict[str, Tensor]]:
        """:func:`separation_step` with the config's frontends and target: ``step(model, batch, generator=None)``;
        a guided step keeps its own cache of the guide's vectors (one per training run: each call makes a new one)."""
        stft, guide_frontend = self.frontends(cfg)
        cache = None if guide_frontend is None else {}
        return functools.partial(separation_step, stft=stft, guide_frontend=guide_frontend, target=cfg.mask_target,
                                 guide_cache=cache)

    def image_transform(self, cfg: SeparationConfig) -> CAVLImageTransform:
        return CAVLImageTransform(cfg.cavl.image_size)

    def example_batch(self, cfg: SeparationConfig, n: int) -> dict[str, Tensor]:
        size = cfg.cavl.image_size
        return {"image": torch.rand(n, 3, size, size), "audio": 0.1 * torch.randn(n, self.samples(cfg))}

    def world(self, cfg: SeparationConfig, seed: int, size: int | None = None) -> SynthOrchestra:
        """The config's world of solo scenes at :meth:`input_rate`."""
        return SynthOrchestra(**{**cfg.data, "sample_rate": self.input_rate(cfg), **({"size": size} if size else {})},
                              seed=seed)

    def train_data(self, cfg: SeparationConfig, data: Path | None, seed: int) -> Dataset:
        """Solo items ``image``, ``audio``: the world's scenes (with their ``index``, so that the step computes the
        guide's vector of each once), or the clip directory's ``train`` clips; they are mixed in pairs by the
        step."""
        if data is None:
            scenes = scene_tensors(self.world(cfg, seed), self.samples(cfg), cfg.cavl.image_size,
                                   self.image_transform(cfg))
            return StackDataset(image=scenes["image"], audio=scenes["audio"], index=torch.arange(len(scenes["audio"])))
        clips = ClipDataset(data, "train", sample_rate=self.input_rate(cfg), frames="middle")
        return ClipPairs(clips, self.samples(cfg), self.image_transform(cfg))

    def held_out(self, cfg: SeparationConfig, data: Path | None, seed: int) -> dict[str, Tensor]:
        """Held-out solo items and their mixtures: ``eval_size`` scenes of the world with ``seed + 1`` (or every
        ``test`` clip) as ``image``, ``audio``, ``label`` and ``box`` where known, ``pairs (M, 2)`` of different
        categories (:func:`~avlib.eval.separation.mixture_pairs`) and ``ref (M, 2, N)``, each mixture's two sources
        at the separation rate."""
        if data is None:
            inputs = scene_tensors(self.world(cfg, seed + 1, cfg.eval_size), self.samples(cfg), cfg.cavl.image_size,
                                   self.image_transform(cfg))
        else:
            clips = ClipDataset(data, "test", sample_rate=self.input_rate(cfg), frames="middle")
            inputs = clip_tensors(clips, self.samples(cfg), cfg.cavl.image_size, self.image_transform(cfg))
            inputs["label"] = torch.tensor([clips.clip_label(j) for j in range(len(clips))])
        inputs["pairs"] = mixture_pairs(inputs["label"])
        stft, _ = self.frontends(cfg)
        inputs["ref"] = stft.prepare(inputs["audio"])[inputs["pairs"]]
        return inputs

    @torch.no_grad()
    def separate(self, cfg: SeparationConfig, model: VisuallyGuidedSeparator, inputs: dict[str, Tensor],
                 batch_size: int = 32) -> dict[str, Tensor]:
        """The model's estimates of every held-out mixture's two sources (eval mode), in chunks of ``batch_size``
        mixtures.

        Returns:
            ``estimate`` ``(M, 2, N)`` on the CPU and, for a guided model, ``guide_mask`` ``(M, 2, h, w)`` (the
            Eq. 7 center's assignment map for each source's frame).
        """
        was_training = model.training
        model.eval()
        device = model_device(model)
        stft, guide_frontend = self.frontends(cfg)
        stft.to(device)
        n = inputs["ref"].shape[-1]
        est, maps = [], []
        try:
            for i in range(0, inputs["pairs"].shape[0], batch_size):
                idx = inputs["pairs"][i : i + batch_size].flatten()  # (2m,): source 0 and 1 of each mixture
                audio = inputs["audio"][idx].to(device)
                own = stft.prepare(audio)
                mix_spec = stft.stft(own.unflatten(0, (-1, 2)).sum(1)).repeat_interleave(2, dim=0)
                spec = stft.log_input(mix_spec.abs())
                image = inputs["image"][idx].to(device)
                guide_spec = None if guide_frontend is None else first_example(guide_frontend, audio)
                out = model(spec, image, guide_spec)
                est.append(stft.apply_mask(torch.sigmoid(out["logits"][:, 0].float()), mix_spec, n)
                           .unflatten(0, (-1, 2)).cpu())
                if "guide_mask" in out:
                    maps.append(out["guide_mask"].float().unflatten(0, (-1, 2)).cpu())
        finally:
            model.train(was_training)
        return {"estimate": torch.cat(est), **({"guide_mask": torch.cat(maps)} if maps else {})}

    def evaluate(self, cfg: SeparationConfig, model: nn.Module, data: Path | None, seed: int) -> dict[str, Any]:
        """SDR / SIR / SAR (BSS Eval v3, mean over mixtures and sources) of the model's estimates on held-out
        mixtures of two solo clips of different categories, beside the mixture as the estimate (lower bound) and
        the ideal ratio / binary masks applied the same way (upper bounds). A guided model also reports
        ``guide_on_object``: the fraction of frames where the Eq. 7 center's map is larger on the sounding object's
        box than off it (where boxes are known)."""
        inputs = self.held_out(cfg, data, seed)
        out = self.separate(cfg, model, inputs, cfg.batch_size)
        key = json.dumps({"stft": {"sample_rate": cfg.sample_rate, "n_fft": cfg.n_fft, "hop_length": cfg.hop_length,
                                   "freq_bins": cfg.freq_bins}, "data": None if data is None else str(data),
                          "world": cfg.data, "seed": seed, "eval_size": cfg.eval_size,
                          "rate": self.input_rate(cfg), "seconds": cfg.seconds}, sort_keys=True)
        report: dict[str, Any] = {"mixtures": int(inputs["pairs"].shape[0]), "visual": cfg.visual,
                                  "mask_target": cfg.mask_target, "model": bss_scores(out["estimate"], inputs["ref"]),
                                  **_bounds(key, inputs)}
        if "guide_mask" in out and "box" in inputs:
            maps = out["guide_mask"].flatten(0, 1)
            box = F.interpolate(inputs["box"][inputs["pairs"].flatten()][:, None].float(), size=maps.shape[-2:],
                                mode="area")[:, 0] > 0.5
            on = (maps * box).flatten(1).sum(1) / box.flatten(1).sum(1).clamp_min(1)
            off = (maps * ~box).flatten(1).sum(1) / (~box).flatten(1).sum(1).clamp_min(1)
            report["guide_on_object"] = float((on > off).double().mean())
        return report


_BOUNDS: dict[str, dict[str, dict[str, float]]] = {}


def _bounds(key: str, inputs: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    """The bounds' scores of one held-out set (they do not depend on the model), computed once per process."""
    if key not in _BOUNDS:
        stft = SeparationSTFT(**json.loads(key)["stft"])
        _BOUNDS[key] = {name: bss_scores(est, inputs["ref"])
                        for name, est in ideal_estimates(stft, inputs["ref"]).items()}
    return _BOUNDS[key]


register(Separation())
