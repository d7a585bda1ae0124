"""AVE-Net and AVOL-Net (Arandjelović & Zisserman, *Objects that Sound*, ECCV 2018).

Both are trained on the same audio-visual correspondence (AVC) task as L3-Net, but their heads force the two
modalities into one space.

AVE-Net (Fig. 2c): each trunk (:class:`~avlib.nets.l3.VGGSubnet`, stride-2 conv1_1) is max-pooled to 512-d, then
fc1 512→128 + ReLU, fc2 128→128 and L2 normalisation give a 128-d embedding per modality. The only thing the
classifier sees is the Euclidean distance between the two embeddings, one scalar, which the tiny fc3 (1→2) scales and
shifts into two logits. Appendix B: nothing in the loss says whether *small* distance should mean "corresponds", so
fc3 is initialised with the sign that does (weight of "corresponds" < weight of "does not"), and is left free.

AVOL-Net (Fig. 4): the vision trunk is not pooled; its 14×14 conv4_2 map goes through conv5/conv6, the 1×1
convolutional versions of fc1/fc2, with no normalisation (so background positions may respond weakly). Each position's
128-d vector is scored against the 128-d audio embedding by a scalar product, a 1×1 calibration conv (fc3 made
convolutional) and a sigmoid give a 14×14 map of per-location correspondence, and its maximum over positions is the
pair's correspondence score (multiple-instance learning). The map is the localization output.

A finer map from the same weights (``dense``, used at the quick scale, where 64×64 frames give only a 4×4 grid): the
last ``dense`` 2×2 pools of the vision trunk run at stride 1, and every layer after them is dilated by the factor
removed (the *à trous* trick of Chen et al., DeepLab). The dense map then holds the coarse map exactly at every
``2**dense``-th position and the shifted pooling windows in between: ``dense=2`` turns 4×4 into 16×16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from avlib.nets.l3 import VGGSubnet

__all__ = ["AVENet", "AVOLNet"]


def _embedding_head(in_dim: int, embed_dim: int) -> nn.Sequential:
    """fc1 ``in_dim×embed_dim`` + ReLU → fc2 ``embed_dim×embed_dim`` (Objects that Sound Fig. 2c)."""
    return nn.Sequential(nn.Linear(in_dim, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, embed_dim))


class AVENet(nn.Module):
    """Audio-Visual Embedding Network: aligned, L2-normalised 128-d embeddings compared by Euclidean distance.

    Args:
        widths: block widths of both VGG trunks (full scale ``(64, 128, 256, 512)``).
        embed_dim: embedding size (128).
        first_stride: stride of conv1_1 in both trunks (2 in the paper).
        fc3_threshold: distance at which the initial fc3 is undecided (√2, the distance of two random unit vectors).

    ``forward(image (B,3,H,W), spec (B,1,F,T)) -> (B, 2)`` logits, index 1 = corresponds.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512),
        embed_dim: int = 128,
        first_stride: int = 2,
        fc3_threshold: float = math.sqrt(2.0),
    ) -> None:
        super().__init__()
        self.widths, self.embed_dim, self.first_stride = tuple(widths), int(embed_dim), int(first_stride)
        self.vision = VGGSubnet(3, widths, first_stride)
        self.audio = VGGSubnet(1, widths, first_stride)
        self.vision_fc = _embedding_head(self.vision.out_dim, embed_dim)
        self.audio_fc = _embedding_head(self.audio.out_dim, embed_dim)
        self.fc3 = nn.Linear(1, 2)
        self.reset_fc3(fc3_threshold)

    @torch.no_grad()
    def reset_fc3(self, threshold: float = math.sqrt(2.0)) -> None:
        """Appendix B initialisation: logit[1] - logit[0] = -2·(d - threshold), so small distance means "corresponds".

        Only the signs matter to the paper; the unit magnitude and the threshold make the untrained net undecided at
        the distance typical of unrelated embeddings.
        """
        self.fc3.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        self.fc3.bias.copy_(torch.tensor([-threshold, threshold]))

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        """Unit-norm visual embedding ``(B, embed_dim)`` of ``image (B, 3, H, W)``."""
        return F.normalize(self.vision_fc(self.vision(image)), dim=1)

    def embed_audio(self, spec: torch.Tensor) -> torch.Tensor:
        """Unit-norm audio embedding ``(B, embed_dim)`` of a log-spectrogram ``spec (B, 1, F, T)``."""
        return F.normalize(self.audio_fc(self.audio(spec)), dim=1)

    @staticmethod
    def distance(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Euclidean distance ``(B,)`` between paired rows of ``v`` and ``a`` (both ``(B, D)``).

        A tiny floor inside the square root keeps the gradient finite when the two embeddings coincide.
        """
        return ((v - a).pow(2).sum(dim=1) + 1e-12).sqrt()

    def forward(self, image: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """Two-way AVC logits ``(B, 2)``: fc3 applied to the embedding distance."""
        d = self.distance(self.embed_image(image), self.embed_audio(spec))
        return self.fc3(d.unsqueeze(1))

    def correspondence_logit(self, image: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """Log-odds ``(B,)`` that the pair corresponds: ``logit[:, 1] - logit[:, 0]``."""
        logits = self(image, spec)
        return logits[:, 1] - logits[:, 0]


class AVOLNet(nn.Module):
    """Audio-Visual Object Localization Network (Objects that Sound Fig. 4).

    Args:
        widths: block widths of both VGG trunks.
        embed_dim: size of the audio embedding and of each position's visual descriptor (128).
        first_stride: stride of conv1_1 (2).
        calibration_init: initial (weight, bias) of the 1×1 calibration conv; the weight is positive so that a larger
            scalar product means "more likely to correspond" (the AVOL analogue of Appendix B's sign).
        dense: how many of the vision trunk's last 2×2 pools run at stride 1 with the later layers dilated (0 in the
            paper; each one doubles the map's resolution without changing a weight; see the module docstring).

    ``localize(image, spec) -> (B, H', W')`` probabilities (14×14 at full scale); ``forward`` returns the map's logits
    ``(B, H', W')``; ``correspondence_logit`` their maximum over positions ``(B,)``.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512),
        embed_dim: int = 128,
        first_stride: int = 2,
        calibration_init: tuple[float, float] = (1.0, 0.0),
        dense: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= int(dense) <= 3:
            raise ValueError(f"AVOLNet: dense must be 0, 1, 2 or 3 (the trunk has three 2x2 pools); got {dense}")
        self.dense = int(dense)
        self.vision = VGGSubnet(3, widths, first_stride)
        self.audio = VGGSubnet(1, widths, first_stride)
        c = self.vision.out_dim
        # conv5, conv6: vision fc1/fc2 as 1×1 convolutions; no normalisation afterwards.
        self.vision_conv = nn.Sequential(
            nn.Conv2d(c, embed_dim, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(embed_dim, embed_dim, kernel_size=1),
        )
        self.audio_fc = _embedding_head(self.audio.out_dim, embed_dim)
        self.calibration = nn.Conv2d(1, 1, kernel_size=1)  # conv7: fc3 made fully convolutional
        with torch.no_grad():
            self.calibration.weight.fill_(calibration_init[0])
            self.calibration.bias.fill_(calibration_init[1])

    @classmethod
    def from_avenet(cls, ave: AVENet, calibration_init: tuple[float, float] = (1.0, 0.0), dense: int = 0) -> AVOLNet:
        """An AVOL-Net that starts from a trained AVE-Net: the same trunks and audio head, and the vision head's fc1/fc2
        reshaped into the 1×1 convolutions conv5/conv6 (Fig. 4 builds AVOL-Net from AVE-Net exactly this way).

        Applied at every position, conv5/conv6 compute what fc1/fc2 computed on the pooled vector, so the map starts
        out as AVE-Net's embedding evaluated everywhere (before normalisation).
        """
        net = cls(ave.widths, ave.embed_dim, ave.first_stride, calibration_init, dense)
        net.vision.load_state_dict(ave.vision.state_dict())
        net.audio.load_state_dict(ave.audio.state_dict())
        net.audio_fc.load_state_dict(ave.audio_fc.state_dict())
        with torch.no_grad():
            for conv_idx in (0, 2):
                fc = ave.vision_fc[conv_idx]
                net.vision_conv[conv_idx].weight.copy_(fc.weight[:, :, None, None])
                net.vision_conv[conv_idx].bias.copy_(fc.bias)
        return net

    @torch.no_grad()
    def calibrate_(self, image: torch.Tensor, spec: torch.Tensor, label: torch.Tensor, iters: int = 30) -> None:
        """Data-dependent initialisation of the calibration conv7: fit ``label ~ sigmoid(w · s + b)``, where ``s (B,)``
        is the largest scalar product of each pair, by Newton's method on the (convex) logistic loss.

        Useful when the embeddings come from elsewhere (:meth:`from_avenet`): their scalar products have no natural
        scale, and a badly scaled conv7 makes the first steps of training undo what the embeddings know.

        The weight must come out positive (a larger scalar product means "corresponds", the AVOL analogue of
        Appendix B's sign). Where the scores barely predict the labels, the fit can give a weight near zero or of
        the wrong sign, which would stall training; then the scores are standardised instead
        (``w = 1 / std(s)``, ``b = -mean(s) / std(s)``).
        """
        sim = torch.einsum("bchw,bc->bhw", self.embed_image_map(image), self.embed_audio(spec)).amax(dim=(1, 2))
        x = torch.stack([sim.double(), torch.ones_like(sim, dtype=torch.float64)], dim=1)  # (B, 2)
        y = label.to(sim.device).double()
        theta = torch.zeros(2, dtype=torch.float64, device=sim.device)
        ridge = 1e-6 * torch.eye(2, dtype=torch.float64, device=sim.device)
        for _ in range(iters):
            p = torch.sigmoid(x @ theta)
            grad = x.T @ (p - y)
            hess = (x * (p * (1 - p))[:, None]).T @ x + ridge
            theta -= torch.linalg.solve(hess, grad)
        spread = float(sim.double().std().clamp_min(1e-6))
        if float(theta[0]) * spread < 0.1:  # the logit would move by less than 0.1 per std of the scores
            theta = torch.tensor([1.0 / spread, -float(sim.double().mean()) / spread], dtype=torch.float64)
        self.calibration.weight.fill_(float(theta[0]))
        self.calibration.bias.fill_(float(theta[1]))

    def vision_maps(self, image: torch.Tensor) -> torch.Tensor:
        """conv4_2 maps of the vision trunk ``(B, C, H', W')``; with ``dense`` > 0 the last pools run at stride 1
        and the layers after them are dilated, so ``H', W'`` are ``2**dense`` times larger."""
        if self.dense == 0:
            return self.vision.forward_maps(image)
        layers = list(self.vision.features)
        pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
        x, dilation = image, 1
        for i, layer in enumerate(layers):
            if i < pools[-self.dense]:
                x = layer(x)
            elif isinstance(layer, nn.MaxPool2d):  # the 2x2 window at every position, taps `dilation` apart
                # the last pool looks right/down (max(x[p], x[p + d])), the earlier ones left/up, so the map's
                # positions stay within half a cell of the pixel grid's cell centres
                pad = (0, dilation, 0, dilation) if i == pools[-1] else (dilation, 0, dilation, 0)
                x = F.pad(x, pad, value=float("-inf"))
                x = F.max_pool2d(x, kernel_size=2, stride=1, dilation=dilation)
                dilation *= 2
            else:  # conv_bn_relu: the same 3x3 weights, taps `dilation` apart
                conv, bn, relu = layer
                x = relu(bn(F.conv2d(x, conv.weight, conv.bias, padding=dilation, dilation=dilation)))
        return x

    def embed_image_map(self, image: torch.Tensor) -> torch.Tensor:
        """Per-position visual descriptors ``(B, embed_dim, H', W')`` of ``image (B, 3, H, W)``."""
        return self.vision_conv(self.vision_maps(image))

    def embed_audio(self, spec: torch.Tensor) -> torch.Tensor:
        """Audio embedding ``(B, embed_dim)`` (not normalised) of ``spec (B, 1, F, T)``."""
        return self.audio_fc(self.audio(spec))

    def forward(self, image: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """Calibrated similarity logits ``(B, H', W')`` between every visual position and the audio embedding."""
        return self.map_logits(image, self.embed_audio(spec))

    def map_logits(self, image: torch.Tensor, audio_embedding: torch.Tensor) -> torch.Tensor:
        """``calibration(v_ij · a)`` ``(B, H', W')`` for a given audio embedding ``(B, embed_dim)`` or ``(embed_dim,)``
        (one embedding for every image: e.g. the mean over many sounds, which gives a map of the image alone)."""
        v = self.embed_image_map(image)
        a = audio_embedding.to(v.dtype).expand(v.shape[0], -1)
        sim = torch.einsum("bchw,bc->bhw", v, a)  # scalar products, (B, H', W')
        return self.calibration(sim.unsqueeze(1)).squeeze(1)

    def localize(self, image: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """Localization map ``(B, H', W')``: per-position probability that this region makes the sound."""
        return torch.sigmoid(self(image, spec))

    def correspondence_logit(self, image: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """Logit ``(B,)`` of the pair score: max over positions (sigmoid is monotone, so max then sigmoid is equal)."""
        return self(image, spec).amax(dim=(1, 2))
