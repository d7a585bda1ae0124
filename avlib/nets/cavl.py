"""The audiovisual learning model of Curriculum Audiovisual Learning (Hu et al., 2020), §3.1 and supplement §6.2.

Full scale: VGGish without its classifier and last pool on a 512x432 log-frequency spectrogram -> 64x54x512 ->
3456 vectors; VGG16 without classifier and last pool on 256x256 images -> 16x16x512 -> 256 vectors; a 512->512
fully-connected layer per modality; soft k-means in each modality (k_a sounds, k_v = k_a + 1 visual centers, one
for the background); the alignment score of Eq. 4 trained with the contrastive loss of Eq. 5.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from avlib.cluster import soft_kmeans
from avlib.localization import contrast_score, pick_center_maps
from avlib.losses import alignment_score, cavl_contrastive_loss, sample_negatives
from avlib.nets.backbones import VGG16Features, VGGish

__all__ = ["CAVLNet", "cavl_example_batch", "cavl_from_config", "cavl_step", "cavl_step_fn"]


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
    """

    def __init__(self, visual_cfg: Sequence[int | str] | None = None, audio_cfg: Sequence[int | str] | None = None,
                 embed_dim: int = 512, k_audio: int = 1, beta: float = 1.0, iters: int = 5,
                 batch_norm: bool = False) -> None:
        super().__init__()
        if k_audio < 1:
            raise ValueError(f"CAVLNet: k_audio must be >= 1; got {k_audio}")
        self.visual = VGG16Features(visual_cfg, batch_norm=batch_norm, drop_last_pool=True)
        self.audio = VGGish(audio_cfg, batch_norm=batch_norm, drop_last_pool=True)
        self.fc_v = nn.Linear(self.visual.out_channels, embed_dim)
        self.fc_a = nn.Linear(self.audio.out_channels, embed_dim)
        self.k_audio, self.k_visual = k_audio, k_audio + 1  # footnote 2: one extra visual center for background
        self.beta, self.iters = beta, iters

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
        rv = soft_kmeans(xv, self.k_visual, self.beta, self.iters)
        ra = soft_kmeans(xa, self.k_audio, self.beta, self.iters)
        b = image.shape[0]
        return {
            "centers_a": ra.centers, "centers_v": rv.centers, "assign_a": ra.assign, "assign_v": rv.assign,
            "visual_map": rv.assign.transpose(1, 2).reshape(b, self.k_visual, *fv.shape[2:]),
            "audio_map": ra.assign.transpose(1, 2).reshape(b, self.k_audio, *fa.shape[2:]),
        }

    @staticmethod
    def localize(out: dict[str, Tensor], source: int = 0, size: tuple[int, int] | None = None,
                 mode: str = "paper") -> dict[str, Tensor]:
        """Sound localization for audio center ``source``.

        ``mode="paper"`` is Eq. 7: the visual center nearest to the audio center is the sound-maker. ``mode=
        "contrast"`` (our addition, needs a batch of several scenes) picks the visual center that is nearer to this
        sound than to the other sounds of the batch by the largest amount, ``mean_{a' != a} ||c^a' - c^v_j|| -
        ||c^a - c^v_j||``. The chosen center's assignment map is the localization.

        Returns:
            dict with ``related`` (its assignment map), ``unrelated`` (the lowest-scoring visual center's map), both
            ``(B, h, w)`` or upsampled to ``size``, ``related_index`` ``(B,)`` and the scores ``(B, k_v)``.
        """
        ca, cv = out["centers_a"][:, source], out["centers_v"]  # (B, D), (B, k_v, D)
        if mode == "paper":
            score = -(ca[:, None] - cv).pow(2).sum(-1).sqrt()  # Eq. 7: minus the distance
        elif mode == "contrast":
            score = contrast_score(-(ca[:, None, None] - cv[None]).pow(2).sum(-1).sqrt())  # (B_audio, B_visual, k_v)
        else:
            raise ValueError(f"CAVLNet.localize: mode must be 'paper' or 'contrast'; got {mode!r}")
        return pick_center_maps(out["visual_map"], score, size)


def cavl_step(model: CAVLNet, batch: dict[str, Tensor], margin: float = 1.0,
              generator: torch.Generator | None = None) -> dict[str, Tensor | float]:
    """One CAVL training step's loss: Eq. 5 on each true pair and one sampled negative pair per item.

    Args:
        model: the network.
        batch: dict with ``image`` ``(B, 3, H, W)`` and ``spec`` ``(B, 1, F, T)``.
        margin: the contrastive margin.

    Returns:
        dict with the scalar ``loss`` and the mean positive / negative alignment scores (detached scalars).
    """
    out = model(batch["image"], batch["spec"])
    ca, cv = out["centers_a"], out["centers_v"]
    neg = sample_negatives(ca.shape[0], generator=generator, device=ca.device)
    scores = torch.stack([alignment_score(ca, cv), alignment_score(ca[neg], cv)], dim=1)  # (B, 2): S_ii, S_neg
    labels = torch.tensor([1.0, 0.0], device=scores.device).expand_as(scores)
    loss = cavl_contrastive_loss(scores, labels, margin=margin)
    return {"loss": loss, "s_pos": scores[:, 0].detach().mean(), "s_neg": scores[:, 1].detach().mean()}


def cavl_from_config(cfg: dict) -> tuple[CAVLNet, functools.partial]:
    """The network and the engine's ``step_fn`` for a config of ``avlib.configs.get_config("cavl", scale)``."""
    return CAVLNet(**cfg["net"]), cavl_step_fn(cfg)


def cavl_step_fn(cfg: dict) -> functools.partial:
    """:func:`cavl_step` with the config's margin: the engine's ``step_fn(model, batch)``."""
    return functools.partial(cavl_step, margin=cfg["margin"])


def cavl_example_batch(cfg: dict, n: int) -> dict[str, Tensor]:
    """A random batch of ``n`` with the shapes :func:`cavl_step` expects at the config's scale (for benchmarks)."""
    size, audio = int(cfg["image_size"]), cfg["audio"]
    if audio["frontend"] == "cavl_logfreq":
        spec_shape = (audio["freq_bins"], audio["frames"])  # (512, 432) at full scale
    else:
        spec_shape = (audio["frames"], audio["n_mels"])
    return {"image": torch.rand(n, 3, size, size), "spec": torch.randn(n, 1, *spec_shape)}
