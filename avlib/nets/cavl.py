"""The audiovisual learning model of Curriculum Audiovisual Learning (Hu et al., 2020), §3.1 and supplement §6.2.

Full scale: VGGish without its classifier and last pool on a 512x432 log-frequency spectrogram -> 64x54x512 ->
3456 vectors; VGG16 without classifier and last pool on 256x256 images -> 16x16x512 -> 256 vectors; a 512->512
fully-connected layer per modality; soft k-means in each modality (k_a sounds, k_v = k_a + 1 visual centers, one
for the background); the alignment score of Eq. 4 trained with the contrastive loss of Eq. 5. ``scene_level=True``
is the paper's scene-level alignment (CAVL-C0 of Table 2, the "scene-level" rows of Table 1): no clustering, one
vector per modality (the mean of its embedded feature vectors, which is what soft k-means with a single center
returns), so Eq. 4 becomes the distance between the two scene vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from avlib.cluster import ClusterResult, soft_kmeans
from avlib.nets.backbones import VGG16Features, VGGish

__all__ = ["CAVLNet"]


def _scene(x: Tensor) -> ClusterResult:
    """One "center" per item without clustering: ``(B, N, C)`` -> the mean ``(B, 1, C)``, every vector assigned to
    it (the soft k-means fixed point for k = 1)."""
    center = x.mean(dim=1, keepdim=True)
    return ClusterResult(centers=center, assign=x.new_ones(*x.shape[:2], 1),
                         distances=(x - center).pow(2).sum(-1, keepdim=True))


class CAVLNet(nn.Module):
    """The CAVL network.

    Args:
        visual_cfg: VGG16 layer list (None = VGG16); its last pool is dropped.
        audio_cfg: VGGish layer list (None = VGGish); its last pool is dropped.
        embed_dim: width of the fully-connected layer applied to every feature vector (512 in the paper).
        k_audio: k_a, the number of sounds (1 for curriculum C1); k_v = k_a + 1.
        beta: stiffness of the soft k-means (Eq. 2); not given in the paper.
        iters: unrolled EM iterations.
        batch_norm: BatchNorm in both backbones (not in the paper; used at quick scale).
        scene_level: no clustering: ``k_a = k_v = 1`` and each center is the mean of its modality's vectors.
    """

    def __init__(self, visual_cfg: Sequence[int | str] | None = None, audio_cfg: Sequence[int | str] | None = None,
                 embed_dim: int = 512, k_audio: int = 1, beta: float = 1.0, iters: int = 5,
                 batch_norm: bool = False, scene_level: bool = False) -> None:
        super().__init__()
        if k_audio < 1 or (scene_level and k_audio != 1):
            raise ValueError(f"CAVLNet: k_audio must be >= 1 (and 1 with scene_level); got {k_audio}")
        self.visual = VGG16Features(visual_cfg, batch_norm=batch_norm, drop_last_pool=True)
        self.audio = VGGish(audio_cfg, batch_norm=batch_norm, drop_last_pool=True)
        self.fc_v = nn.Linear(self.visual.out_channels, embed_dim)
        self.fc_a = nn.Linear(self.audio.out_channels, embed_dim)
        # footnote 2: one extra visual center for the background; none at scene level
        self.k_audio, self.k_visual = k_audio, 1 if scene_level else k_audio + 1
        self.beta, self.iters, self.scene_level = beta, iters, scene_level

    def forward(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """Embed and cluster both modalities.

        Args:
            image: ``(B, 3, H, W)``.
            spec: ``(B, 1, F, T)`` spectrogram map.

        Returns:
            dict with ``centers_a`` ``(B, k_a, D)``, ``centers_v`` ``(B, k_v, D)``, ``assign_a`` ``(B, q, k_a)``,
            ``assign_v`` ``(B, p, k_v)``, ``visual_map`` ``(B, k_v, h, w)``, ``audio_map`` ``(B, k_a, f, t)``.
        """
        fv, fa = self.visual(image), self.audio(spec)
        xv = self.fc_v(fv.flatten(2).transpose(1, 2))  # (B, p, D)
        xa = self.fc_a(fa.flatten(2).transpose(1, 2))  # (B, q, D)
        rv, ra = (_scene(x) if self.scene_level else soft_kmeans(x, k, self.beta, self.iters)
                  for x, k in ((xv, self.k_visual), (xa, self.k_audio)))
        b = image.shape[0]
        return {
            "centers_a": ra.centers, "centers_v": rv.centers, "assign_a": ra.assign, "assign_v": rv.assign,
            "visual_map": rv.assign.transpose(1, 2).reshape(b, self.k_visual, *fv.shape[2:]),
            "audio_map": ra.assign.transpose(1, 2).reshape(b, self.k_audio, *fa.shape[2:]),
        }
