"""Visually guided separation of CAVL (Hu et al., 2020, §3.3.2, supplement §6.4), after Sound of Pixels.

- :class:`SeparationUNet`: the U-Net of supplement §6.4 that turns a mixture's log-frequency magnitude spectrogram
  and one visual vector into a spectrogram mask (the vector goes through fc + batch norm + LeakyReLU, is tiled to
  the bottleneck's size and concatenated there).
- The visual representation of the sounding object from a trained CAVL net (§3.3.1-3.3.2): the visual center Eq. 7
  aligns with the sound (:func:`sound_maker_index`), either that center itself (``center``) or the visual feature
  map max-pooled under that center's assignment (``mask``, :func:`masked_max_pool`; Table 4 finds it better).
  :class:`CAVLGuide` wraps a frozen CAVL net that gives either one.
- :class:`VisuallyGuidedSeparator`: the two together; without a guide, the U-Net gets a constant vector (the
  audio-only baseline).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avlib.nets.cavl import CAVLNet

__all__ = ["REPRESENTATIONS", "CAVLGuide", "SeparationUNet", "VisuallyGuidedSeparator", "masked_max_pool",
           "sound_maker_index", "tile_concat"]

REPRESENTATIONS = ("center", "mask")


def tile_concat(audio: Tensor, visual: Tensor) -> Tensor:
    """Replicate a visual vector over every position of an audio feature map and concatenate it (§3.3.2, §6.4).

    Args:
        audio: ``(B, C, H, W)`` feature map.
        visual: ``(B, D)`` vectors.

    Returns:
        ``(B, C + D, H, W)``: the audio channels first, then ``visual[b]`` at every ``(h, w)``.
    """
    if audio.ndim != 4 or visual.ndim != 2 or visual.shape[0] != audio.shape[0]:
        raise ValueError(f"tile_concat: audio must be (B, C, H, W) and visual (B, D) with the same B; got "
                         f"{tuple(audio.shape)} and {tuple(visual.shape)}")
    tiled = visual[:, :, None, None].expand(-1, -1, *audio.shape[2:])
    return torch.cat([audio, tiled.to(audio.dtype)], dim=1)


class SeparationUNet(nn.Module):
    """The separation U-Net of CAVL's supplement §6.4.

    Encoder: ``len(encoder_channels)`` convolutions with 4x4 filters, stride 2, padding 1, each followed by batch
    norm and LeakyReLU (slope 0.2); 16-32-64-128-256-512 channels in the paper. Visual path: fc
    ``visual_dim -> visual_channels`` (512 -> 512), batch norm, LeakyReLU 0.2; the vector is tiled to the bottleneck
    (the last encoder output) and concatenated to it. Decoder: as many 4x4 up-convolutions (stride 2, padding 1) with
    ``decoder_channels`` outputs (512-256-128-64-32-16), each followed by batch norm and ReLU; up-convolution ``j``
    after the first takes its predecessor's output concatenated with the encoder output of the same resolution (the
    skip connections between mirrored layers). Output: a mask through a sigmoid.

    Where the paper is silent, our choices: the first encoder layer has batch norm too (the text gives every
    encoder layer batch norm; pix2pix-style U-Nets drop it there); the text's sentence on the decoder is garbled
    ("followed by a BatchNormalization and a ... sigmoid function"): we read batch norm + ReLU after every
    up-convolution and a sigmoid at the output; the last up-convolution has 16 channels, so a 1x1 convolution maps
    them to ``out_channels`` (1: one mask for the one source the visual vector asks for); convolutions before batch
    norm have no bias. A spectrogram whose sides are not multiples of ``2 ** depth`` (CAVL's 512 x 432) is padded at
    the high-frequency / late end by repeating its last row / column, and the mask is cropped back to the input's
    size.

    Args:
        in_channels: channels of the input spectrogram (1).
        encoder_channels: output channels of each encoder layer; their number is the depth.
        decoder_channels: output channels of each up-convolution (default: ``encoder_channels`` reversed).
        visual_dim: size of the visual vector given to :meth:`forward`.
        visual_channels: width of the fc layer on the visual vector, i.e. the channels tiled at the bottleneck.
        out_channels: mask channels.
    """

    def __init__(self, in_channels: int = 1, encoder_channels: Sequence[int] = (16, 32, 64, 128, 256, 512),
                 decoder_channels: Sequence[int] | None = None, visual_dim: int = 512, visual_channels: int = 512,
                 out_channels: int = 1) -> None:
        super().__init__()
        enc = [int(c) for c in encoder_channels]
        dec = [int(c) for c in (decoder_channels if decoder_channels is not None else enc[::-1])]
        if not enc or min(enc) < 1:
            raise ValueError(f"SeparationUNet: encoder_channels must be positive widths; got {encoder_channels!r}")
        if len(dec) != len(enc) or min(dec) < 1:
            raise ValueError(f"SeparationUNet: decoder_channels must be {len(enc)} positive widths (one per encoder "
                             f"layer); got {decoder_channels!r}")
        for name, value in (("in_channels", in_channels), ("visual_dim", visual_dim),
                            ("visual_channels", visual_channels), ("out_channels", out_channels)):
            if value < 1:
                raise ValueError(f"SeparationUNet: {name} must be >= 1; got {value}")
        self.in_channels, self.visual_dim, self.depth = int(in_channels), int(visual_dim), len(enc)
        self.encoder = nn.ModuleList()
        for c_in, c_out in zip([in_channels, *enc[:-1]], enc, strict=True):
            self.encoder.append(nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                                              nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)))
        self.visual_fc = nn.Sequential(nn.Linear(visual_dim, visual_channels), nn.BatchNorm1d(visual_channels),
                                       nn.LeakyReLU(0.2))
        skips = enc[-2::-1]  # encoder outputs met on the way up, deepest first
        ins = [enc[-1] + visual_channels] + [d + s for d, s in zip(dec[:-1], skips, strict=True)]
        self.decoder = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(c_out), nn.ReLU())
            for c_in, c_out in zip(ins, dec, strict=True))
        self.head = nn.Conv2d(dec[-1], out_channels, 1)

    def logits(self, spec: Tensor, visual: Tensor) -> Tensor:
        """The mask before its sigmoid.

        Args:
            spec: ``(B, in_channels, F, T)`` mixture spectrogram (CAVL: log-frequency magnitude, 512 x 432).
            visual: ``(B, visual_dim)`` representation of the object whose sound is asked for.

        Returns:
            ``(B, out_channels, F, T)``.
        """
        if spec.ndim != 4 or spec.shape[1] != self.in_channels:
            raise ValueError(f"SeparationUNet: spec must be (B, {self.in_channels}, F, T); got {tuple(spec.shape)}")
        if visual.ndim != 2 or visual.shape != (spec.shape[0], self.visual_dim):
            raise ValueError(f"SeparationUNet: visual must be (B, visual_dim) = ({spec.shape[0]}, {self.visual_dim}); "
                             f"got {tuple(visual.shape)}")
        f, t = spec.shape[-2:]
        m = 2**self.depth
        x = F.pad(spec, (0, -t % m, 0, -f % m), mode="replicate")
        skips = []
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        x = tile_concat(x, self.visual_fc(visual))  # §6.4: the visual vector tiled to the bottleneck's size
        for j, layer in enumerate(self.decoder):
            x = layer(x if j == 0 else torch.cat([x, skips[-1 - j]], dim=1))
        return self.head(x)[..., :f, :t]

    def forward(self, spec: Tensor, visual: Tensor) -> Tensor:
        """The mask ``sigmoid(logits)``, ``(B, out_channels, F, T)`` in (0, 1); shapes as :meth:`logits`."""
        return torch.sigmoid(self.logits(spec, visual))


def sound_maker_index(centers_a: Tensor, centers_v: Tensor, source: int = 0) -> Tensor:
    """Eq. 7: the visual center nearest (Euclidean) to audio center ``source``.

    Args:
        centers_a: ``(B, k_a, D)`` audio centers.
        centers_v: ``(B, k_v, D)`` visual centers.
        source: which audio center (0 for a solo scene, k_a = 1).

    Returns:
        ``(B,)`` long index into the visual centers.
    """
    if centers_a.ndim != 3 or centers_v.ndim != 3 or centers_a.shape[::2] != centers_v.shape[::2]:
        raise ValueError(f"sound_maker_index: centers_a (B, k_a, D) and centers_v (B, k_v, D) must share B and D; "
                         f"got {tuple(centers_a.shape)} and {tuple(centers_v.shape)}")
    if not 0 <= source < centers_a.shape[1]:
        raise ValueError(f"sound_maker_index: source must be in 0 ... {centers_a.shape[1] - 1}; got {source}")
    return (centers_a[:, source, None] - centers_v).norm(dim=-1).argmin(dim=1)  # Eq. 7


def masked_max_pool(features: Tensor, mask: Tensor) -> Tensor:
    """The sound-maker-aware max pooling of §3.3.2: ``max_{h, w} mask[b, h, w] · features[b, :, h, w]``.

    The features are those of a ReLU network (non-negative), so positions the mask leaves out (weights near 0)
    cannot win the max: each channel reports its strongest response on the object.

    Args:
        features: ``(B, C, H, W)`` visual feature map.
        mask: ``(B, H, W)`` weights in [0, 1] (the sound-maker center's assignment).

    Returns:
        ``(B, C)``.
    """
    if features.ndim != 4 or mask.shape != (features.shape[0], *features.shape[2:]):
        raise ValueError(f"masked_max_pool: features must be (B, C, H, W) and mask (B, H, W) with the same B, H, W; "
                         f"got {tuple(features.shape)} and {tuple(mask.shape)}")
    return (features * mask[:, None]).flatten(2).amax(dim=2)


class CAVLGuide(nn.Module):
    """A frozen, trained CAVL net that tells the separator which object to listen for (§3.3.2, supplement §6.4).

    Given a solo scene's image and its own sound, CAVL clusters the visual features (k_v = 2: object and
    background) and Eq. 7 picks the center aligned with the sound. ``representation``:

    - ``center``: that visual center, ``(B, embed_dim)``;
    - ``mask``: the visual feature map (the trunk's output, before CAVL's fc; post-ReLU) max-pooled under that
      center's assignment (:func:`masked_max_pool`), ``(B, trunk channels)``.

    The net's parameters are frozen and it stays in eval mode (its batch norms keep their trained statistics)
    whatever ``train()`` is called with.

    Args:
        cavl: the trained CAVL net (its ``k_audio`` should be 1: solo scenes).
        representation: ``center`` or ``mask``.
    """

    def __init__(self, cavl: CAVLNet, representation: str = "mask") -> None:
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(f"CAVLGuide: representation must be one of {REPRESENTATIONS}; got {representation!r}")
        self.cavl, self.representation = cavl, representation
        self.out_dim = cavl.fc_v.out_features if representation == "center" else cavl.visual.out_channels
        self.cavl.requires_grad_(False)
        self.cavl.eval()

    def train(self, mode: bool = True) -> CAVLGuide:
        super().train(mode)
        self.cavl.eval()
        return self

    @torch.no_grad()
    def forward(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """The sound-maker's representation.

        Args:
            image: ``(B, 3, H, W)`` the scene's frame, as the CAVL net takes it.
            spec: ``(B, 1, F, T)`` the scene's own sound through the CAVL net's frontend.

        Returns:
            ``visual`` ``(B, out_dim)``, ``index`` ``(B,)`` (the Eq. 7 center) and ``mask`` ``(B, h, w)`` (its
            assignment map).
        """
        trunk = []
        hook = self.cavl.visual.register_forward_hook(lambda module, args, out: trunk.append(out))
        try:
            out = self.cavl(image, spec)
        finally:
            hook.remove()
        index = sound_maker_index(out["centers_a"], out["centers_v"])
        batch = torch.arange(index.shape[0], device=index.device)
        mask = out["visual_map"][batch, index]  # (B, h, w)
        if self.representation == "center":
            visual = out["centers_v"][batch, index]
        else:
            visual = masked_max_pool(trunk[0], mask)
        return {"visual": visual.float(), "index": index, "mask": mask}


class VisuallyGuidedSeparator(nn.Module):
    """The separation network of CAVL (Fig. 3): a :class:`SeparationUNet` asked for the sound of the object a
    :class:`CAVLGuide` finds in the frame; with ``guide=None`` the U-Net gets a constant vector of ones (an
    audio-only U-Net with the same layers, the baseline that shows what vision adds).

    Args:
        unet: the U-Net; its ``visual_dim`` must equal the guide's ``out_dim``.
        guide: the frozen CAVL guide, or ``None``.
    """

    def __init__(self, unet: SeparationUNet, guide: CAVLGuide | None = None) -> None:
        super().__init__()
        if guide is not None and guide.out_dim != unet.visual_dim:
            raise ValueError(f"VisuallyGuidedSeparator: the guide gives {guide.out_dim}-d vectors, the unet takes "
                             f"visual_dim = {unet.visual_dim}")
        self.unet, self.guide = unet, guide

    def forward(self, spec: Tensor, image: Tensor | None = None, guide_spec: Tensor | None = None,
                visual: Tensor | None = None) -> dict[str, Tensor]:
        """Mask logits for the object in ``image``.

        Args:
            spec: ``(B, 1, F, T)`` the mixture's log-frequency magnitude.
            image: ``(B, 3, H, W)`` the frame of the source asked for (needed with a guide).
            guide_spec: ``(B, 1, F', T')`` that source's own sound through the guide's CAVL frontend (needed with
                a guide).
            visual: ``(B, visual_dim)`` the guide's vectors computed earlier for these sources (the guide is frozen,
                so they do not change during training); given, the guide is not run and ``image`` and
                ``guide_spec`` are not needed.

        Returns:
            ``logits`` ``(B, 1, F, T)`` (the mask is their sigmoid), ``visual`` ``(B, visual_dim)`` and, with a guide
            that ran, ``guide_index`` ``(B,)`` and ``guide_mask`` ``(B, h, w)`` (the Eq. 7 center and its assignment
            map).
        """
        if visual is not None:
            extra = {}
        elif self.guide is None:
            visual, extra = spec.new_ones(spec.shape[0], self.unet.visual_dim), {}
        elif image is None or guide_spec is None:
            raise ValueError("VisuallyGuidedSeparator: a guided separator needs image and guide_spec")
        else:
            found = self.guide(image, guide_spec)
            visual, extra = found["visual"], {"guide_index": found["index"], "guide_mask": found["mask"]}
        return {"logits": self.unet.logits(spec, visual), "visual": visual, **extra}
