"""The network of Discriminative Sounding Objects Localization (DSOL; Hu et al., NeurIPS 2020), §3 and appendix 8.1.

Two ResNet-18-S5 trunks (:class:`~avlib.nets.backbones.ResNet18S5`): the visual one gives ``f(v)``, 512x14x14 on a
224x224 image; the audio one (1-channel first convolution) runs on the 1x201x64 log-mel and is max-pooled over time
and frequency to ``g(a)``, 512 (appendix 8.1: GMP "for suppressing no-sounding area"). On top (Table 3):

- localization heads: visual 1x1 conv 512->128, ReLU, 1x1 conv 128->128; audio fc 512->128, ReLU, fc 128->128; both
  L2-normalised; the cosine map, a 1x1 convolution of one channel without bias (one scalar, initialised to 5 as in
  the authors' code; the paper gives no value) and a sigmoid give the sounding map ``l`` (Eq. 1 before its GMP);
- classifiers: fc 512->K on ``GAP f(v)`` and on ``g(a)``, trained on the k-means pseudo-labels of stage 1;
- the object dictionary ``D`` (K x 512, a buffer: made by k-means, never by gradients) and the class maps of stage 2,
  ``m^k = d^k . f(v)`` (Eq. 4), filtered by the sounding map ``s^k = m^k o l`` (Eq. 5). ``class_map_affine`` adds the
  authors' learned scale and bias on the class maps (their ``Conv3d(1, 1, 1)``); the paper has the plain product.

The net holds no steps and no data: :mod:`avlib.methods.dsol` builds the dictionary and trains the stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avlib.nets.backbones import RESNET18_WIDTHS, ResNet18S5

__all__ = ["DSOLNet"]


class DSOLNet(nn.Module):
    """DSOL's two-stream network.

    Args:
        n_keys: K, the dictionary size and the classifiers' outputs (11 for MUSIC).
        widths, blocks: the trunks' stage widths and depths (ResNet-18 by default).
        embed_dim: width of the localization heads (128).
        loc_init: initial value of the scalar on the cosine map (5).
        class_map_affine: the authors' learned affine on the class maps (off: the paper's Eq. 4).
        visual_stem, visual_strides: the visual trunk's stem and stage strides (:class:`ResNet18S5`; the defaults
            are ResNet-18-S5's, a quick scale may shrink the receptive field); the audio trunk keeps the defaults.
    """

    def __init__(self, n_keys: int = 11, widths: Sequence[int] = RESNET18_WIDTHS, blocks: Sequence[int] = (2, 2, 2, 2),
                 embed_dim: int = 128, loc_init: float = 5.0, class_map_affine: bool = False,
                 visual_stem: str = "resnet", visual_strides: Sequence[int] = (1, 2, 2, 1)) -> None:
        super().__init__()
        if n_keys < 2:
            raise ValueError(f"DSOLNet: n_keys (K) must be >= 2; got {n_keys}")
        self.visual = ResNet18S5(3, widths, blocks, visual_stem, visual_strides)
        self.audio = ResNet18S5(1, widths, blocks)
        c = self.visual.out_channels
        self.visual_head = nn.Sequential(nn.Conv2d(c, embed_dim, 1), nn.ReLU(inplace=True),
                                         nn.Conv2d(embed_dim, embed_dim, 1))
        self.audio_head = nn.Sequential(nn.Linear(c, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, embed_dim))
        self.loc_weight = nn.Parameter(torch.tensor(float(loc_init)))
        self.visual_classifier = nn.Linear(c, n_keys)
        self.audio_classifier = nn.Linear(c, n_keys)
        self.class_map_affine = class_map_affine
        if class_map_affine:
            self.class_map_scale = nn.Parameter(torch.ones(()))
            self.class_map_bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("dictionary", torch.zeros(n_keys, c))
        self.register_buffer("dictionary_round", torch.zeros((), dtype=torch.long))  # 0: no dictionary yet
        self.n_keys, self.channels = n_keys, c

    def visual_features(self, image: Tensor) -> Tensor:
        """``f(v)``: ``(B, 3, H, W)`` -> ``(B, C, h, w)``."""
        return self.visual(image)

    def audio_features(self, spec: Tensor) -> Tensor:
        """``g(a)``: the audio trunk max-pooled over the map, ``(B, 1, T, F)`` -> ``(B, C)``."""
        return self.audio(spec).amax(dim=(-2, -1))

    def embed_visual(self, fv: Tensor) -> Tensor:
        """The visual localization embedding, L2-normalised per location: ``(B, C, h, w)`` -> ``(B, E, h, w)``."""
        return F.normalize(self.visual_head(fv), dim=1)

    def embed_audio(self, ga: Tensor) -> Tensor:
        """The audio localization embedding, L2-normalised: ``(B, C)`` -> ``(B, E)``."""
        return F.normalize(self.audio_head(ga), dim=1)

    def localization_map(self, ev: Tensor, ea: Tensor) -> Tensor:
        """The sounding map ``l = sigmoid(w cos(ev, ea))`` of each image with the sound at the same index (Eq. 1,
        before the GMP): ``ev (B, E, h, w)``, ``ea (B, E)`` -> ``(B, h, w)`` in (0, 1)."""
        return torch.sigmoid(self.loc_weight * torch.einsum("behw,be->bhw", ev, ea))

    def object_features(self, fv: Tensor, loc: Tensor, threshold: float = 0.05, dilation: int = 0) -> Tensor:
        """Object representations ``o = GAP(f(v) o m)`` with the mask ``m = [l > threshold]`` (Eq. 2), L2-normalised
        (as before the k-means of Eq. 3). ``dilation`` grows the mask by that many cells (the authors' code: 1).

        Args:
            fv: ``(B, C, h, w)`` visual features.
            loc: ``(B, h, w)`` sounding maps.

        Returns:
            ``(B, C)``; an empty mask gives the zero vector.
        """
        mask = (loc > threshold).to(fv.dtype)[:, None]
        if dilation > 0:
            mask = F.max_pool2d(mask, 2 * dilation + 1, stride=1, padding=dilation)
        return F.normalize((fv * mask).mean(dim=(-2, -1)), dim=1)  # Eq. 2

    def classify(self, fv: Tensor, ga: Tensor) -> tuple[Tensor, Tensor]:
        """Pseudo-label logits ``(B, K)`` of the image (on ``GAP f(v)``) and of the sound (on ``g(a)``)."""
        return self.visual_classifier(fv.mean(dim=(-2, -1))), self.audio_classifier(ga)

    def class_maps(self, fv: Tensor) -> Tensor:
        """``m^k = d^k . f(v)`` at every location (Eq. 4): ``(B, C, h, w)`` -> ``(B, K, h, w)``."""
        m = torch.einsum("kc,bchw->bkhw", self.dictionary.to(fv.dtype), fv)
        return m * self.class_map_scale + self.class_map_bias if self.class_map_affine else m

    def forward(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """Every output on matched pairs (image i with sound i).

        Args:
            image: ``(B, 3, H, W)``.
            spec: ``(B, 1, T, F)`` log-mel.

        Returns:
            dict with ``loc_map`` ``(B, h, w)`` (``l``), ``class_maps`` ``(B, K, h, w)`` (``m``, Eq. 4),
            ``sounding_maps`` ``(B, K, h, w)`` (``s = m o l``, Eq. 5), ``visual_logits`` and ``audio_logits``
            ``(B, K)``, ``visual_features`` ``(B, C, h, w)`` and ``audio_features`` ``(B, C)``.
        """
        fv, ga = self.visual_features(image), self.audio_features(spec)
        loc = self.localization_map(self.embed_visual(fv), self.embed_audio(ga))
        m = self.class_maps(fv)
        v_logits, a_logits = self.classify(fv, ga)
        return {"loc_map": loc, "class_maps": m, "sounding_maps": m * loc[:, None], "visual_logits": v_logits,
                "audio_logits": a_logits, "visual_features": fv, "audio_features": ga}
