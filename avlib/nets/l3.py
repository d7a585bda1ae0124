"""L3-Net (Arandjelović & Zisserman, *Look, Listen and Learn*, ICCV 2017) and its VGG-style subnetworks.

The audio-visual correspondence (AVC) task: given one video frame and a short audio clip, decide whether they come from
the same moment of the same video. L3-Net answers with two VGG-style trunks (one per modality), each max-pooled over
all positions into one vector, a concatenation and a two-layer fusion MLP with a two-way output.

Shapes at full scale (L3 Fig. 2, Sec. 3.3; Objects that Sound Fig. 2a, 2b, 2d):

- vision: image ``(B, 3, 224, 224)`` → conv4_2 ``(B, 512, 14, 14)`` → pool4 ``(B, 512)``
- audio: log-spectrogram ``(B, 1, 257, 199)`` → conv4_2 ``(B, 512, 16, 12)`` → pool4 ``(B, 512)``
- fusion: concat ``(B, 1024)`` → fc1 ``1024×128`` + ReLU → fc2 ``128×2`` → logits ``(B, 2)``

A 16× reduction from 257×199 to 16×12 (the conv4_2 size stated in L3 Sec. 3.3) needs one stride-2 layer on top of the
three 2×2 pools: the first convolution has stride 2, as Objects that Sound says it does for both its nets and as its
Fig. 2d draws L3-Net. ``first_stride=1`` gives the variant without it (conv4_2 at 28×28 and 32×24).

Class index 1 of the two-way output means "corresponds"; :meth:`L3Net.correspondence_logit` returns the log-odds
``logit[1] - logit[0]``, so binary cross-entropy on it equals the paper's two-way softmax cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["L3Net", "VGGSubnet", "conv_bn_relu"]


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3×3 convolution (padding 1) → batch norm → ReLU, the unit every L3/AVE/AVOL conv layer is made of."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class VGGSubnet(nn.Module):
    """VGG-style trunk of L3-Net: four conv-conv blocks, 2×2 max pools after the first three, a global max pool last.

    Args:
        in_channels: 3 for RGB frames, 1 for log-spectrograms (L3 Sec. 2.1: the audio conv1_1 filters are 3× smaller).
        widths: channels of the four blocks; ``(64, 128, 256, 512)`` at full scale.
        first_stride: stride of conv1_1 (2 in Objects that Sound and for the pinned full-scale shapes).

    ``forward_maps(x)`` returns the conv4_2 maps ``(B, widths[-1], H', W')`` (after BN and ReLU);
    ``forward(x)`` returns pool4, their maximum over all positions, ``(B, widths[-1])``.
    """

    def __init__(self, in_channels: int, widths: Sequence[int] = (64, 128, 256, 512), first_stride: int = 2) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"VGGSubnet: widths must hold four block widths, got {tuple(widths)}")
        if first_stride not in (1, 2):
            raise ValueError(f"VGGSubnet: first_stride must be 1 or 2, got {first_stride}")
        self.in_channels = in_channels
        self.out_dim = int(widths[-1])
        layers: list[nn.Module] = []
        c_in = in_channels
        for block, width in enumerate(widths):
            layers.append(conv_bn_relu(c_in, width, stride=first_stride if block == 0 else 1))  # convN_1
            layers.append(conv_bn_relu(width, width))  # convN_2
            if block < 3:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))  # poolN, no padding
            c_in = width
        self.features = nn.Sequential(*layers)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, in_channels, H, W)`` → conv4_2 maps ``(B, C, H', W')``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"VGGSubnet expects input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, in_channels, H, W)`` → pool4 features ``(B, C)`` (max over all positions of conv4_2)."""
        return self.forward_maps(x).amax(dim=(2, 3))


class L3Net(nn.Module):
    """L3-Net: vision and audio VGG trunks, concatenation, fusion fc 1024→128→2 (L3 Fig. 2).

    Args:
        widths: block widths shared by both trunks; the fused vector has ``2 * widths[-1]`` entries.
        fusion_hidden: width of fc1 (128 in the paper).
        first_stride: stride of conv1_1 in both trunks (see the module docstring).

    ``forward(image (B,3,H,W), spec (B,1,F,T)) -> (B, 2)`` logits, index 1 = corresponds.
    """

    def __init__(
        self, widths: Sequence[int] = (64, 128, 256, 512), fusion_hidden: int = 128, first_stride: int = 2
    ) -> None:
        super().__init__()
        self.vision = VGGSubnet(3, widths, first_stride)
        self.audio = VGGSubnet(1, widths, first_stride)
        d = self.vision.out_dim
        self.fusion = nn.Sequential(nn.Linear(2 * d, fusion_hidden), nn.ReLU(inplace=True), nn.Linear(fusion_hidden, 2))

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        """Visual pool4 feature ``(B, C)`` of ``image (B, 3, H, W)``; not aligned with the audio feature."""
        return self.vision(image)

    def embed_audio(self, spec: torch.Tensor) -> torch.Tensor:
        """Audio pool4 feature ``(B, C)`` of a log-spectrogram ``spec (B, 1, F, T)``."""
        return self.audio(spec)

    def forward(self, image: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """Two-way AVC logits ``(B, 2)`` for ``image (B, 3, H, W)`` and ``spec (B, 1, F, T)``."""
        fused = torch.cat([self.vision(image), self.audio(spec)], dim=1)  # concat, (B, 1024) at full scale
        return self.fusion(fused)

    def correspondence_logit(self, image: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """Log-odds ``(B,)`` that the pair corresponds: ``logit[:, 1] - logit[:, 0]``."""
        logits = self(image, spec)
        return logits[:, 1] - logits[:, 0]

