"""Deep Multimodal Clustering (Hu, Nie & Li, CVPR 2019) as a method: config, network, step (Eq. 8), localization.

Full (§3.1, §4): VGG16 on 256x256 images scaled to [-1, 1] -> 8x8x512; VGGish on a 496x64 log-mel -> 31x4x512;
Adam 1e-4, batch 64, 25k iterations; k = 2 centers for single-sound localization (§5.1). T = 3 iterations and the
center dimension m are the authors' code / our choice (the paper states neither).
Quick / colab: a visual net with a receptive field of about a third of the image, so that each feature vector
describes its own region (with an image-wide field every region "sees" the instrument and the two clusters stop
separating object from background); z = 5 makes the assignments firm enough to read as masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from avlib.audio import first_example
from avlib.eval.localization import contrast_score
from avlib.losses import dmc_center_similarity, dmc_max_margin_loss, sample_negatives
from avlib.methods.base import MethodConfig, register
from avlib.methods.clustering import ClusteringMethod, vggish_audio
from avlib.nets.dmc import DMCNet
from avlib.vision import DMCImageTransform

__all__ = ["DMC", "DMCConfig", "dmc_step"]

Layers = tuple[int | str, ...] | None


@dataclass(frozen=True)
class DMCConfig(MethodConfig):
    """DMC: the two VGG streams (``None`` = the paper's VGG16 / VGGish), k centers of dimension m, T iterations,
    the softmax magnitude z and the margin Delta of Eq. 8."""

    method = "dmc"
    visual_cfg: Layers = None
    audio_cfg: Layers = None
    k: int = 2
    center_dim: int = 128
    iters: int = 3
    batch_norm: bool = False
    z: float = 1.0
    margin: float = 1.0
    image_size: int = 256
    audio: dict[str, Any] = field(default_factory=lambda: {
        "frontend": "dmc_logmel", "sample_rate": 16000, "frames": 496, "n_mels": 64, "n_fft": 512, "win_length": 400,
        "hop_length": 160})


FULL = DMCConfig(batch_size=64, steps=25_000, lr=1e-4)  # SoundNet-Flickr in the paper; see data_scripts/
COLAB = FULL.replace(scale="colab", visual_cfg=(32, 32, "M", 64, 64, "M", 128, 128, "M", 128, "M"),
                     audio_cfg=(32, "M", 64, "M", 128, 128, "M", 128, "M"), center_dim=64, batch_norm=True, z=5.0,
                     image_size=128, audio=vggish_audio(192, 64), steps=3000, lr=3e-4,
                     data={"family": "solo", "n_categories": 12, "size": 8000, "image_size": 128, "duration": 2.0})
QUICK = FULL.replace(scale="quick", visual_cfg=(32, "M", 64, "M", 64, "M"),  # 64x64 -> 8x8x64, receptive field 22 px
                     audio_cfg=(16, "M", 32, "M", 64, "M", 64),  # 96x32 log-mel -> 12x4x64
                     center_dim=32, batch_norm=True, z=5.0, image_size=64, audio=vggish_audio(96, 32), batch_size=32,
                     steps=300, lr=3e-4, eval_size=128,
                     data={"family": "solo", "n_categories": 8, "size": 512, "image_size": 64, "duration": 1.0})


def dmc_step(model: DMCNet, batch: dict[str, Tensor], frontend: torch.nn.Module, margin: float = 1.0,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """One DMC training step's loss: Eq. 8 with each item's negative audio drawn from another item of the batch.

    Args:
        model: the network.
        batch: ``image (B, 3, H, W)`` in [-1, 1] and waveforms ``audio (B, N)`` (the log-mel is computed here, on
            the batch's device).
        frontend: the audio frontend.
        margin: Delta of Eq. 8.

    Returns:
        the scalar ``loss`` and the mean positive and negative center similarities (detached).
    """
    out = model(batch["image"], first_example(frontend, batch["audio"]))
    ca, cv = out["centers_a"], out["centers_v"]
    neg = sample_negatives(ca.shape[0], generator=generator, device=ca.device)
    loss = dmc_max_margin_loss(ca, cv, ca[neg], margin=margin)  # Eq. 8
    with torch.no_grad():
        pos_sim, neg_sim = dmc_center_similarity(ca, cv).mean(), dmc_center_similarity(ca[neg], cv).mean()
    return {"loss": loss, "pos_sim": pos_sim, "neg_sim": neg_sim}


class DMC(ClusteringMethod):
    name = "dmc"
    presets = {"full": FULL, "colab": COLAB, "quick": QUICK}
    loss_step = staticmethod(dmc_step)

    def model(self, cfg: DMCConfig) -> DMCNet:
        return DMCNet(visual_cfg=cfg.visual_cfg, audio_cfg=cfg.audio_cfg, k=cfg.k, center_dim=cfg.center_dim,
                      iters=cfg.iters, batch_norm=cfg.batch_norm, z=cfg.z)

    def image_transform(self, cfg: DMCConfig) -> DMCImageTransform:
        return DMCImageTransform(cfg.image_size)

    def center_scores(self, cfg: DMCConfig, out: dict[str, Tensor], mode: str) -> Tensor:
        """Which visual center made the sound, ``(B, k)``.

        ``paper`` (DMC §5.1): the audio centers averaged into one vector, compared by cosine with every visual center.
        ``contrast`` (our addition): how much more center j's visual center agrees with *this* sound than with the
        batch's other sounds, ``s(c^a_j, c^v_j) - mean_{a' != a} s(c^a'_j, c^v_j)``: the quantity Eq. 8 trains.
        """
        ca, cv = out["centers_a"], out["centers_v"]
        if mode == "paper":
            return dmc_center_similarity(ca.mean(dim=1, keepdim=True).expand_as(cv), cv)
        sim = torch.einsum("akm,vkm->avk", F.normalize(ca, dim=-1), F.normalize(cv, dim=-1))  # every sound x image
        return contrast_score(sim)

    def agreement(self, out: dict[str, Tensor], reference: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """How much each image's centers agree with the sound it was paired with, per center ``(B, k)``.

        ``cosine``: ``s(c^a_j, c^v_j)``, what Eq. 8 pushes up for true pairs. ``contrast``: that cosine minus the
        mean cosine of the image's center j with the *other* sounds of ``reference`` (outputs on the same images
        with their true sounds; default ``out`` itself), i.e. the contrast rule's score. Passing outputs for
        negative audio (silence, noise, an off-screen sound) as ``out`` and the true pairs as ``reference`` asks
        whether the model can tell a real sound from a negative one.
        """
        ref = out if reference is None else reference
        cos = dmc_center_similarity(out["centers_a"], out["centers_v"])  # (B, k)
        sim = torch.einsum("akm,vkm->avk", F.normalize(ref["centers_a"], dim=-1),
                           F.normalize(out["centers_v"], dim=-1))  # reference sounds x images
        b = sim.shape[0]
        own = torch.diagonal(sim, dim1=0, dim2=1).T  # (B, k): each image with its reference sound
        return {"cosine": cos, "contrast": cos - (sim.sum(0) - own) / (b - 1)}


register(DMC())
