"""Deep Multimodal Clustering (Hu, Nie & Li, CVPR 2019): two VGG streams, shared per-center projections, Eq. 8.

Full scale (paper, §3.1): VGG16 without classifier on 256x256 images scaled to [-1, 1] -> 8x8x512 -> 64 vectors;
VGGish on a 496x64 log-mel -> 31x4x512 -> 124 vectors. Both sets are clustered by :func:`avlib.cluster.
multimodal_cluster` with the same projections ``W_j``; training compares matching centers with cosine proximity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from avlib.cluster import multimodal_cluster
from avlib.nets.backbones import VGG16Features, VGGish

__all__ = ["DMCNet"]


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
