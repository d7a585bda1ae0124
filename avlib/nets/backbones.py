"""Convolutional backbones shared by the papers' networks: VGG16's convolutional part, VGGish and ResNet-18-S5.

Both are plain stacks of 3x3 convolutions (padding 1, ReLU) and 2x2 max-pools, written as a list ``cfg`` of
channel counts and ``"M"`` (pool), as in torchvision. The full-scale lists are the published ones; the quick-scale
configs pass narrower / shorter lists to the same classes. :class:`ResNet18S5` is torchvision's ResNet-18 (its
``BasicBlock``) with the last stage's stride removed and no pooling or classifier (DSOL); the quick scale narrows it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1
from torchvision.models.vgg import cfgs as _torchvision_cfgs
from torchvision.models.vgg import make_layers as _torchvision_make_layers

__all__ = ["RESNET18_WIDTHS", "VGG16_CFG", "VGGISH_CFG", "ResNet18S5", "VGG16Features", "VGGish", "make_vgg_layers"]

VGG16_CFG: list[int | str] = list(_torchvision_cfgs["D"])  # torchvision's VGG16 ("D"): 13 convs, 5 pools
VGGISH_CFG: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"]  # VGGish (Hershey et al. 2017)
RESNET18_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)  # torchvision's resnet18 stage widths


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


class ResNet18S5(nn.Module):
    """ResNet-18-S5 (DSOL, appendix 8.1): torchvision's ``resnet18`` with the first convolution of the last stage at
    stride 1 (stage strides 1, 2, 2, 1), without the global pooling and the classifier.

    Input ``(B, C_in, H, W)``; output ``(B, widths[-1], H/16, W/16)`` (rounded up at each stride): ``(B, 512, 14, 14)``
    on 224x224 images and ``(B, 512, 13, 4)`` on DSOL's 1x201x64 log-mel. With the default widths the parameter names
    and shapes are torchvision's (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so its ImageNet weights load as
    they are (``strict=False`` for the dropped ``fc``); the initialisation is torchvision's (Kaiming normal, fan-out).

    Args:
        in_channels: 3 for images, 1 for a spectrogram (DSOL's audio net).
        widths: channels of the four stages (the quick scale narrows them).
        blocks: BasicBlocks per stage (2, 2, 2, 2 in ResNet-18).
        stem: ``"resnet"`` (the 7x7 stride-2 convolution and the 3x3 stride-2 max-pool) or ``"small"`` (one 3x3
            convolution at stride 1, no pool): a quick-scale option for maps of local cells (small receptive field).
        strides: the four stages' strides ((1, 2, 2, 1) in ResNet-18-S5; the quick scale may change them).
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = RESNET18_WIDTHS,
                 blocks: Sequence[int] = (2, 2, 2, 2), stem: str = "resnet",
                 strides: Sequence[int] = (1, 2, 2, 1)) -> None:
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4 or min(*widths, *blocks) < 1:
            raise ValueError(f"ResNet18S5: widths and blocks need four positive entries; got {widths}, {blocks}")
        if stem not in ("resnet", "small") or len(strides) != 4 or min(strides) < 1:
            raise ValueError(f"ResNet18S5: stem is 'resnet' or 'small' and strides four positive ints; got {stem!r}, "
                             f"{strides}")
        if stem == "resnet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        channels = widths[0]
        for i, (width, n, stride) in enumerate(zip(widths, blocks, tuple(strides), strict=True), start=1):
            down = (nn.Sequential(conv1x1(channels, width, stride), nn.BatchNorm2d(width))
                    if stride != 1 or channels != width else None)
            layer = [BasicBlock(channels, width, stride, down)] + [BasicBlock(width, width) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layer))
            channels = width
        self.out_channels = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C, H/16, W/16)``."""
        if x.dim() != 4 or x.shape[1] != self.conv1.in_channels:
            raise ValueError(f"ResNet18S5: input must be (B, {self.conv1.in_channels}, H, W); got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
