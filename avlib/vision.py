"""Image transforms per paper, batched on tensors: ``(3, H, W)`` or ``(B, 3, H, W)`` float images in [0, 1].

Every transform is an ``nn.Module`` whose random choices are drawn per image from an optional ``torch.Generator``
(on the CPU), so a seeded pipeline is reproducible, and whose pixel work is batched on the images' device (resizing with
antialiasing, crops by gathering, flips and colour jitter by broadcasting).

| class | paper | train | eval | output range |
| --- | --- | --- | --- | --- |
| :class:`L3ImageTransform` | L3, OtS | short side 256, random 224 crop, flip, colour jitter | centre crop | [0, 1] |
| :class:`DMCImageTransform` | DMC | resize 256×256 | same | [−1, 1] |
| :class:`CAVLImageTransform` | CAVL | resize 256×256 | same | [0, 1] |
| :class:`DSOLImageTransform` | DSOL | resize 256×256, random 224 crop | centre 224 crop | ImageNet-normalised |
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CAVLImageTransform",
    "DMCImageTransform",
    "DSOLImageTransform",
    "L3ImageTransform",
    "adjust_brightness",
    "adjust_saturation",
    "batched_crop",
    "resize",
    "resize_short_side",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_batch(images: Tensor, name: str) -> tuple[Tensor, bool]:
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise TypeError(f"{name}: expected a float image tensor in [0, 1]; got "
                        f"{images.dtype if torch.is_tensor(images) else type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
        single = True
    elif images.ndim == 4:
        single = False
    else:
        raise ValueError(f"{name}: images must be (3, H, W) or (B, 3, H, W); got {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"{name}: images must have 3 colour channels; got shape {tuple(images.shape)}")
    return images, single


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, 3, H, W)`` → ``(B, 3, h, w)`` bilinear with antialiasing (the usual PIL-like resize)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return nn.functional.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def resize_short_side(images: Tensor, short: int) -> Tensor:
    """Scale ``(B, 3, H, W)`` uniformly so that ``min(H, W) == short``."""
    h, w = images.shape[-2:]
    scale = short / min(h, w)
    return resize(images, (max(short, round(h * scale)), max(short, round(w * scale))))


def batched_crop(images: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """Crop a ``size × size`` window at its own ``(top, left)`` per image: ``(B, C, H, W)`` → ``(B, C, size, size)``."""
    b, c = images.shape[:2]
    rows = (top.to(images.device)[:, None] + torch.arange(size, device=images.device))  # (B, size)
    cols = (left.to(images.device)[:, None] + torch.arange(size, device=images.device))
    bi = torch.arange(b, device=images.device)[:, None, None, None]
    ci = torch.arange(c, device=images.device)[None, :, None, None]
    return images[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Multiply each image by its own ``factor`` (B,), clamped to [0, 1]."""
    return (images * factor.to(images)[:, None, None, None]).clamp(0.0, 1.0)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its grey version: ``grey + factor · (image − grey)``, clamped to [0, 1]."""
    grey = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2])[:, None]
    return (grey + factor.to(images)[:, None, None, None] * (images - grey)).clamp(0.0, 1.0)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


class L3ImageTransform(nn.Module):
    """L3-Net's image pipeline (Arandjelović & Zisserman 2017, Sec. 2.2; also Objects that Sound).

    Train: scale so the short side is ``resize`` (256), random ``size × size`` crop (224), horizontal flip with
    probability 0.5, brightness and saturation each scaled by a factor in ``[1 − jitter, 1 + jitter]``.
    Eval: short side ``resize``, centre crop. Input/output in [0, 1]; ``(B, 3, H, W)`` → ``(B, 3, size, size)``.
    """

    def __init__(self, train: bool = True, size: int = 224, resize: int = 256, jitter: float = 0.3) -> None:
        super().__init__()
        if size > resize:
            raise ValueError(f"L3ImageTransform: crop size {size} is larger than the resized short side {resize}")
        self.train_mode, self.size, self.resize, self.jitter = bool(train), int(size), int(resize), float(jitter)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x, single = _as_batch(images, "L3ImageTransform")
        x = resize_short_side(x, self.resize)
        b, (h, w) = x.shape[0], x.shape[-2:]
        if self.train_mode:
            top = torch.randint(0, h - self.size + 1, (b,), generator=generator)
            left = torch.randint(0, w - self.size + 1, (b,), generator=generator)
            x = batched_crop(x, top, left, self.size)
            flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = adjust_brightness(x, _uniform(b, 1 - self.jitter, 1 + self.jitter, generator))
            x = adjust_saturation(x, _uniform(b, 1 - self.jitter, 1 + self.jitter, generator))
        else:
            top, left = (h - self.size) // 2, (w - self.size) // 2
            x = x[..., top : top + self.size, left : left + self.size]
        return x[0] if single else x


class DMCImageTransform(nn.Module):
    """DMC (Hu, Nie & Li 2019): resize to ``size × size`` (256) and scale pixels from [0, 1] to [−1, 1]."""

    def __init__(self, size: int = 256) -> None:
        super().__init__()
        self.size = int(size)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x, single = _as_batch(images, "DMCImageTransform")
        x = resize(x, (self.size, self.size)) * 2.0 - 1.0
        return x[0] if single else x


class CAVLImageTransform(nn.Module):
    """CAVL (Hu et al. 2020): resize to ``size × size`` (256), pixels kept in [0, 1]."""

    def __init__(self, size: int = 256) -> None:
        super().__init__()
        self.size = int(size)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x, single = _as_batch(images, "CAVLImageTransform")
        x = resize(x, (self.size, self.size))
        return x[0] if single else x


class DSOLImageTransform(nn.Module):
    """DSOL (Hu et al. 2020, Sec. 4.2): resize to ``resize × resize`` (256), random ``size`` crop (224) when training,
    centre crop otherwise, then ImageNet mean/std normalisation (its ResNet-18 starts from ImageNet weights)."""

    def __init__(self, train: bool = True, size: int = 224, resize: int = 256, normalize: bool = True) -> None:
        super().__init__()
        if size > resize:
            raise ValueError(f"DSOLImageTransform: crop size {size} is larger than the resize {resize}")
        self.train_mode, self.size, self.resize, self.normalize = bool(train), int(size), int(resize), bool(normalize)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[None, :, None, None])
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[None, :, None, None])

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x, single = _as_batch(images, "DSOLImageTransform")
        x = resize(x, (self.resize, self.resize))
        b, span = x.shape[0], self.resize - self.size
        if self.train_mode:
            top = torch.randint(0, span + 1, (b,), generator=generator)
            left = torch.randint(0, span + 1, (b,), generator=generator)
            x = batched_crop(x, top, left, self.size)
        else:
            x = x[..., span // 2 : span // 2 + self.size, span // 2 : span // 2 + self.size]
        if self.normalize:
            x = (x - self.mean.to(x)) / self.std.to(x)
        return x[0] if single else x
