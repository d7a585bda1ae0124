"""Deep Multimodal Clustering (Hu, Nie & Li, CVPR 2019): two VGG streams, shared per-center projections, Eq. 8.

Full scale (paper, §3.1): VGG16 without classifier on 256x256 images scaled to [-1, 1] -> 8x8x512 -> 64 vectors;
VGGish on a 496x64 log-mel -> 31x4x512 -> 124 vectors. Both sets are clustered by :func:`avlib.cluster.
multimodal_cluster` with the same projections ``W_j``; training compares matching centers with cosine proximity.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avlib.cluster import multimodal_cluster
from avlib.localization import contrast_score, pick_center_maps
from avlib.losses import dmc_center_similarity, dmc_max_margin_loss, sample_negatives
from avlib.nets.backbones import VGG16Features, VGGish

__all__ = ["DMCNet", "dmc_example_batch", "dmc_from_config", "dmc_step", "dmc_step_fn"]


def _to_vectors(fmap: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C)``: one feature vector per map position (row-major)."""
    return fmap.flatten(2).transpose(1, 2)


class DMCNet(nn.Module):
    """The DMC network.

    Args:
        visual_cfg: VGG16 layer list (None = the paper's VGG16).
        audio_cfg: VGGish layer list (None = the paper's VGGish). Both must end with the same channel count n.
        k: number of centers per modality (the paper uses 2 for single-sound localization).
        center_dim: m, the dimension of each projected space (``W_j`` is m x n).
        iters: T, unrolled clustering iterations (the authors' code uses 3).
        batch_norm: BatchNorm in both backbones (not in the paper; used at quick scale to train fast).
        z: extra softmax magnitude (1 = the paper, where W_j carries the scale).
    """

    def __init__(self, visual_cfg: Sequence[int | str] | None = None, audio_cfg: Sequence[int | str] | None = None,
                 k: int = 2, center_dim: int = 128, iters: int = 3, batch_norm: bool = False, z: float = 1.0) -> None:
        super().__init__()
        if k < 2:
            raise ValueError(f"DMCNet: k must be >= 2 (sound-maker and the rest); got {k}")
        self.visual = VGG16Features(visual_cfg, batch_norm=batch_norm)
        self.audio = VGGish(audio_cfg, batch_norm=batch_norm)
        n = self.visual.out_channels
        if self.audio.out_channels != n:
            raise ValueError(f"DMCNet: the shared W_j need equal channel counts; visual {n} vs audio "
                             f"{self.audio.out_channels}")
        self.k, self.iters, self.z = k, iters, z
        self.proj = nn.Parameter(torch.randn(k, center_dim, n) / n**0.5)  # W_j, shared across modalities

    def forward(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """Cluster both modalities.

        Args:
            image: ``(B, 3, H, W)`` in [-1, 1].
            spec: ``(B, 1, T, F)`` log-mel.

        Returns:
            dict with ``centers_a``/``centers_v`` ``(B, k, m)``, ``assign_a`` ``(B, q, k)``, ``assign_v``
            ``(B, p, k)``, ``visual_map`` ``(B, k, h, w)`` (assignments on the feature grid), ``audio_map``
            ``(B, k, t, f)``.
        """
        fv, fa = self.visual(image), self.audio(spec)
        rv = multimodal_cluster(_to_vectors(fv), self.proj, self.iters, self.z)
        ra = multimodal_cluster(_to_vectors(fa), self.proj, self.iters, self.z)
        b = image.shape[0]
        return {
            "centers_a": ra.centers, "centers_v": rv.centers, "assign_a": ra.assign, "assign_v": rv.assign,
            "visual_map": rv.assign.transpose(1, 2).reshape(b, self.k, *fv.shape[2:]),
            "audio_map": ra.assign.transpose(1, 2).reshape(b, self.k, *fa.shape[2:]),
        }

    @staticmethod
    def localize(out: dict[str, Tensor], size: tuple[int, int] | None = None, mode: str = "paper") -> dict[str, Tensor]:
        """Sound localization with k visual centers.

        ``mode="paper"`` follows DMC §5.1: the audio centers are averaged into one vector and compared by cosine
        with every visual center; the most similar one is the sound-maker ("related"), the least similar one
        "unrelated". ``mode="contrast"`` (our addition, needs a batch of several scenes) scores each center j by how
        much more its visual center agrees with *this* sound than with the other sounds of the batch,
        ``s(c^a_j, c^v_j) - mean_{a' != a} s(c^a'_j, c^v_j)`` — the quantity Eq. 8 trains — and picks the largest.
        The chosen center's soft assignment over the feature grid is the heatmap.

        Args:
            out: the output of :meth:`forward`.
            size: optional ``(H, W)`` to upsample the heatmaps to (bilinear).
            mode: ``"paper"`` or ``"contrast"``.

        Returns:
            dict with ``related`` and ``unrelated`` heatmaps ``(B, h, w)`` (or ``(B, H, W)``), ``related_index``
            ``(B,)`` and the per-center scores ``(B, k)``.
        """
        ca, cv = out["centers_a"], out["centers_v"]
        if mode == "paper":
            score = dmc_center_similarity(ca.mean(dim=1, keepdim=True).expand_as(cv), cv)
        elif mode == "contrast":
            sim = torch.einsum("akm,vkm->avk", F.normalize(ca, dim=-1), F.normalize(cv, dim=-1))  # every sound, image
            score = contrast_score(sim)
        else:
            raise ValueError(f"DMCNet.localize: mode must be 'paper' or 'contrast'; got {mode!r}")
        return pick_center_maps(out["visual_map"], score, size)


def dmc_step(model: DMCNet, batch: dict[str, Tensor], margin: float = 1.0,
             generator: torch.Generator | None = None) -> dict[str, Tensor | float]:
    """One DMC training step's loss: Eq. 8 with each item's negative audio drawn from another item of the batch.

    Args:
        model: the network.
        batch: dict with ``image`` ``(B, 3, H, W)`` in [-1, 1] and ``spec`` ``(B, 1, T, F)``.
        margin: Delta of Eq. 8.

    Returns:
        dict with the scalar ``loss`` and the mean positive and negative center similarities (detached scalars).
    """
    out = model(batch["image"], batch["spec"])
    ca, cv = out["centers_a"], out["centers_v"]
    neg = sample_negatives(ca.shape[0], generator=generator, device=ca.device)
    loss = dmc_max_margin_loss(ca, cv, ca[neg], margin=margin)
    with torch.no_grad():
        pos_sim = dmc_center_similarity(ca, cv).mean()
        neg_sim = dmc_center_similarity(ca[neg], cv).mean()
    return {"loss": loss, "pos_sim": pos_sim, "neg_sim": neg_sim}


def dmc_from_config(cfg: dict) -> tuple[DMCNet, functools.partial]:
    """The network and the engine's ``step_fn`` for a config of ``avlib.configs.get_config("dmc", scale)``."""
    return DMCNet(**cfg["net"]), dmc_step_fn(cfg)


def dmc_step_fn(cfg: dict) -> functools.partial:
    """:func:`dmc_step` with the config's margin: the engine's ``step_fn(model, batch)``."""
    return functools.partial(dmc_step, margin=cfg["margin"])


def dmc_example_batch(cfg: dict, n: int) -> dict[str, Tensor]:
    """A random batch of ``n`` with the shapes :func:`dmc_step` expects at the config's scale (for benchmarks)."""
    size, audio = int(cfg["image_size"]), cfg["audio"]
    return {"image": torch.rand(n, 3, size, size) * 2 - 1, "spec": torch.randn(n, 1, audio["frames"], audio["n_mels"])}
