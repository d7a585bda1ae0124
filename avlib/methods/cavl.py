"""Curriculum Audiovisual Learning (Hu et al., 2020) as a method: config, network, step (Eq. 4-5), localization (Eq. 7)
and the curriculum as stages.

Full (§3.1, §4.2, supplement §6.2): VGGish without its last pool on a 512x432 log-frequency spectrogram (10 s; STFT
window 1022, hop 256) -> 64x54x512 -> 3456 vectors; VGG16 without its last pool on 256x256 -> 16x16x512 -> 256
vectors; fc 512->512; k_a sounds and k_v = k_a + 1 visual centers; Adam, lr 1e-4 for the first curriculum level and
x0.1 for each next one (C1 ... C4, k_a = level: 1e-4, 1e-5, 1e-6, 1e-7), each level starting from the previous
level's weights (§3.2.1). Level 0 is the paper's CAVL-C0 (Table 2): scene-level alignment, without clustering, on
the C1 clips. beta, the EM iterations, the margin, the batch size and the steps per level are not given in the paper:
ours. Quick / colab: a visual net with a small receptive field (as for DMC), beta = 10 (about 10x the critical
stiffness of the features in training, see chapter 2: the centers split, the assignments stay soft enough to be
learned) and a wide margin (5, as in a public DMC port), so that mismatched sounds are pushed away from every visual
center until the sounding object's center wins Eq. 7.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from avlib.audio import first_example
from avlib.data.clips import MANIFEST
from avlib.eval.localization import contrast_score
from avlib.losses import alignment_score, cavl_contrastive_loss, sample_negatives
from avlib.methods.base import MethodConfig, StagePlan, register
from avlib.methods.clustering import ClusteringMethod, vggish_audio
from avlib.nets.cavl import CAVLNet
from avlib.vision import CAVLImageTransform

__all__ = ["CAVL", "CAVLConfig", "cavl_step"]

Layers = tuple[int | str, ...] | None


@dataclass(frozen=True)
class CAVLConfig(MethodConfig):
    """CAVL: the two VGG streams (``None`` = VGG16 / VGGish, last pools dropped), the fc width, the soft k-means
    stiffness beta and iterations, the contrastive margin, and the curriculum: ``levels`` trained in order (level l
    has k_a = l sounding sources; level 0 is CAVL-C0, ``scene_level`` alignment on the C1 data), the lr times
    ``level_lr_decay`` from one level to the next. ``k_audio`` and ``scene_level`` are set per stage by
    :meth:`CAVL.stages`."""

    method = "cavl"
    visual_cfg: Layers = None
    audio_cfg: Layers = None
    embed_dim: int = 512
    k_audio: int = 1
    scene_level: bool = False
    beta: float = 1.0
    iters: int = 5
    batch_norm: bool = False
    margin: float = 1.0
    levels: tuple[int, ...] = (1, 2, 3, 4)
    level_lr_decay: float = 0.1
    image_size: int = 256
    audio: dict[str, Any] = field(default_factory=lambda: {
        "frontend": "cavl_logfreq", "sample_rate": 11025, "seconds": 10.0, "n_fft": 1022, "hop_length": 256,
        "freq_bins": 512, "frames": 432})


FULL = CAVLConfig(batch_size=32, steps=20_000, lr=1e-4)  # AudioSet graded into C1..C4; see data_scripts/
COLAB = FULL.replace(scale="colab", visual_cfg=(32, 32, "M", 64, 64, "M", 128, 128, "M"),
                     audio_cfg=(32, "M", 64, "M", 128, 128, "M", 128, "M"), embed_dim=128, beta=10.0,
                     batch_norm=True, margin=5.0, levels=(1,), image_size=128, audio=vggish_audio(192, 64),
                     batch_size=64, steps=3000, lr=3e-4,
                     data={"family": "c1", "n_categories": 12, "size": 8000, "image_size": 128, "duration": 2.0})
QUICK = FULL.replace(scale="quick", visual_cfg=(32, "M", 64, "M", 64, "M"),
                     audio_cfg=(16, "M", 32, "M", 64, "M", 64, "M"),
                     embed_dim=32, beta=10.0, batch_norm=True, margin=5.0, levels=(1,), image_size=64,
                     audio=vggish_audio(96, 32), batch_size=32, steps=250, lr=3e-4, eval_size=128,
                     data={"family": "c1", "n_categories": 8, "size": 512, "image_size": 64, "duration": 1.0})


def cavl_step(model: CAVLNet, batch: dict[str, Tensor], frontend: torch.nn.Module, margin: float = 1.0,
              generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """One CAVL training step's loss: Eq. 5 on each true pair and one sampled negative pair per item.

    Args:
        model: the network.
        batch: ``image (B, 3, H, W)`` and waveforms ``audio (B, N)`` (the spectrogram is computed here, on the
            batch's device).
        frontend: the audio frontend.
        margin: the contrastive margin.

    Returns:
        the scalar ``loss`` and the mean positive / negative alignment scores (detached).
    """
    out = model(batch["image"], first_example(frontend, batch["audio"]))
    ca, cv = out["centers_a"], out["centers_v"]
    neg = sample_negatives(ca.shape[0], generator=generator, device=ca.device)
    scores = torch.stack([alignment_score(ca, cv), alignment_score(ca[neg], cv)], dim=1)  # (B, 2): Eq. 4, S_ii, S_neg
    labels = torch.tensor([1.0, 0.0], device=scores.device).expand_as(scores)
    loss = cavl_contrastive_loss(scores, labels, margin=margin)  # Eq. 5
    return {"loss": loss, "s_pos": scores[:, 0].detach().mean(), "s_neg": scores[:, 1].detach().mean()}


class CAVL(ClusteringMethod):
    name = "cavl"
    presets = {"full": FULL, "colab": COLAB, "quick": QUICK}
    loss_step = staticmethod(cavl_step)

    def model(self, cfg: CAVLConfig) -> CAVLNet:
        return CAVLNet(visual_cfg=cfg.visual_cfg, audio_cfg=cfg.audio_cfg, embed_dim=cfg.embed_dim,
                       k_audio=cfg.k_audio, beta=cfg.beta, iters=cfg.iters, batch_norm=cfg.batch_norm,
                       scene_level=cfg.scene_level)

    def image_transform(self, cfg: CAVLConfig) -> CAVLImageTransform:
        return CAVLImageTransform(cfg.image_size)

    def stages(self, cfg: CAVLConfig) -> list[StagePlan]:
        """One stage per curriculum level, in the order of ``cfg.levels``, each started from the previous one's
        weights (:func:`avlib.methods.run.train`): level l >= 1 has k_a = l (k_v = l + 1) and the world's family
        ``c<l>``; level 0 (CAVL-C0) aligns whole scenes of family ``c1`` without clustering. The i-th level's lr is
        ``lr * level_lr_decay**i`` (§4.2: 1e-4, 1e-5, 1e-6, ...)."""
        plans = []
        for i, level in enumerate(cfg.levels):
            if level < 0:
                raise ValueError(f"cavl: curriculum levels are 0 (scene level, C0) or numbers of sources >= 1; "
                                 f"got {cfg.levels}")
            family = f"c{max(level, 1)}"
            data = None if cfg.data is None else {**cfg.data, "family": family}
            plans.append(StagePlan(f"c{level}", cfg.replace(k_audio=max(level, 1), scene_level=level == 0, data=data,
                                                            lr=cfg.lr * cfg.level_lr_decay**i)))
        return plans

    @staticmethod
    def level_data(cfg: CAVLConfig, data: Path | None) -> Path | None:
        """The clip directory of the config's curriculum level: ``DATA/c<k_a>`` where ``DATA`` holds one sub-directory
        per level (CAVL-C0 trains on ``DATA/c1``), else ``DATA`` itself."""
        level_dir = None if data is None else data / f"c{cfg.k_audio}"
        return level_dir if level_dir is not None and (level_dir / MANIFEST).is_file() else data

    def train_data(self, cfg: CAVLConfig, data: Path | None, seed: int) -> Dataset:
        """As every clustering method, on the level's clip directory (:meth:`level_data`)."""
        return super().train_data(cfg, self.level_data(cfg, data), seed)

    def held_out(self, cfg: CAVLConfig, data: Path | None, seed: int) -> dict[str, Tensor]:
        """As every clustering method, on the level's clip directory (:meth:`level_data`)."""
        return super().held_out(cfg, self.level_data(cfg, data), seed)

    def center_scores(self, cfg: CAVLConfig, out: dict[str, Tensor], mode: str, source: int = 0) -> Tensor:
        """Which visual center made sound ``source``, ``(B, k_v)``: ``paper`` is Eq. 7 (minus the distance to the
        audio center); ``contrast`` (our addition) how much nearer it is to this sound than to the batch's others."""
        ca, cv = out["centers_a"][:, source], out["centers_v"]  # (B, D), (B, k_v, D)
        if mode == "paper":
            return -(ca[:, None] - cv).pow(2).sum(-1).sqrt()  # Eq. 7
        return contrast_score(-(ca[:, None, None] - cv[None]).pow(2).sum(-1).sqrt())  # (B_audio, B_visual, k_v)


register(CAVL())
