"""Convolutional backbones shared by the papers' networks: VGG16's convolutional part and VGGish.

Both are plain stacks of 3x3 convolutions (padding 1, ReLU) and 2x2 max-pools, written as a list ``cfg`` of
channel counts and ``"M"`` (pool), as in torchvision. The full-scale lists are the published ones; the quick-scale
configs pass narrower / shorter lists to the same classes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.vgg import cfgs as _torchvision_cfgs
from torchvision.models.vgg import make_layers as _torchvision_make_layers

__all__ = ["VGG16_CFG", "VGGISH_CFG", "VGG16Features", "VGGish", "make_vgg_layers"]

VGG16_CFG: list[int | str] = list(_torchvision_cfgs["D"])  # torchvision's VGG16 ("D"): 13 convs, 5 pools
VGGISH_CFG: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"]  # VGGish (Hershey et al. 2017)


def _check_cfg(cfg: Sequence[int | str], name: str) -> None:
    if not cfg or any(not (v == "M" or (isinstance(v, int) and v > 0)) for v in cfg):
        raise ValueError(f"{name}: cfg must be a non-empty list of positive ints and 'M'; got {list(cfg)!r}")
    if not any(isinstance(v, int) for v in cfg):
        raise ValueError(f"{name}: cfg needs at least one convolution; got {list(cfg)!r}")


def make_vgg_layers(cfg: Sequence[int | str], in_channels: int, batch_norm: bool = False) -> nn.Sequential:
    """A VGG-style stack for any number of input channels (torchvision's ``make_layers`` assumes 3).

    Convolutions get torchvision's VGG initialisation (Kaiming normal, fan-out; zero bias).
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        conv = nn.Conv2d(channels, int(v), kernel_size=3, padding=1)
        layers += [conv, nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)] if batch_norm else [conv, nn.ReLU(inplace=True)]
        channels = int(v)
    stack = nn.Sequential(*layers)
    _vgg_init(stack)
    return stack


def _vgg_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _out_channels(cfg: Sequence[int | str]) -> int:
    return int([v for v in cfg if v != "M"][-1])


class VGG16Features(nn.Module):
    """VGG16 without its classifier (the ``features`` part of torchvision's ``vgg16``).

    Input ``(B, 3, H, W)``; output ``(B, C, H/2^P, W/2^P)`` with P pools: the full cfg gives ``(B, 512, 8, 8)`` on
    256x256 (DMC), and with ``drop_last_pool=True`` ``(B, 512, 16, 16)`` (CAVL).

    Args:
        cfg: layer list (default: torchvision's VGG16 "D"); quick scale passes a narrower list.
        batch_norm: add BatchNorm after each convolution (torchvision's ``vgg16_bn`` layout).
        drop_last_pool: remove a trailing max-pool.
    """

    def __init__(self, cfg: Sequence[int | str] | None = None, batch_norm: bool = False,
                 drop_last_pool: bool = False) -> None:
        super().__init__()
        cfg = list(VGG16_CFG if cfg is None else cfg)
        _check_cfg(cfg, "VGG16Features")
        if drop_last_pool and cfg[-1] == "M":
            cfg = cfg[:-1]
        self.cfg = cfg
        self.out_channels = _out_channels(cfg)
        self.n_pools = cfg.count("M")
        self.features = _torchvision_make_layers(cfg, batch_norm=batch_norm)  # torchvision's own VGG builder
        _vgg_init(self.features)

    def forward(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, H/2^P, W/2^P)``."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"VGG16Features: image must be (B, 3, H, W); got {tuple(image.shape)}")
        return self.features(image)


class VGGish(nn.Module):
    """VGGish's convolutional part (Hershey et al. 2017): conv64, pool, conv128, pool, 2x conv256, pool, 2x conv512,
    pool, on a one-channel log-mel or spectrogram map.

    Input ``(B, 1, T, F)``; the full cfg gives ``(B, 512, 31, 4)`` on DMC's 496x64 log-mel and, with
    ``drop_last_pool=True``, ``(B, 512, 64, 54)`` on CAVL's 512x432 spectrogram.

    Args:
        cfg: layer list (default :data:`VGGISH_CFG`).
        batch_norm: add BatchNorm after each convolution.
        drop_last_pool: remove a trailing max-pool.
    """

    def __init__(self, cfg: Sequence[int | str] | None = None, batch_norm: bool = False,
                 drop_last_pool: bool = False) -> None:
        super().__init__()
        cfg = list(VGGISH_CFG if cfg is None else cfg)
        _check_cfg(cfg, "VGGish")
        if drop_last_pool and cfg[-1] == "M":
            cfg = cfg[:-1]
        self.cfg = cfg
        self.out_channels = _out_channels(cfg)
        self.n_pools = cfg.count("M")
        self.features = make_vgg_layers(cfg, in_channels=1, batch_norm=batch_norm)

    def forward(self, spec: Tensor) -> Tensor:
        """``(B, 1, T, F)`` -> ``(B, C, T/2^P, F/2^P)``."""
        if spec.dim() != 4 or spec.shape[1] != 1:
            raise ValueError(f"VGGish: spec must be (B, 1, T, F); got {tuple(spec.shape)}")
        return self.features(spec)
