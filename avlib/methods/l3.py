"""L3-Net (Arandjelović & Zisserman, *Look, Listen and Learn*, ICCV 2017) as a method: network, presets.

Full: lr 1e-4, global batch 256 (16 GPUs x 16: each device takes the paper's 16 at a time, so batch norm sees what it
saw there), 60M pairs seen; L3's own sampling: random negatives ("naive") with positives misaligned by up to 1 s
(shortcut-proof as well, since positives leave the frame grid too).
"""

from __future__ import annotations

from dataclasses import dataclass

from avlib.methods.avc import COLAB_DATA, QUICK_AUDIO, QUICK_DATA, WIDTHS, AVCConfig, AVCMethod, PairsConfig
from avlib.methods.base import register
from avlib.nets.l3 import L3Net

__all__ = ["L3", "L3Config"]


@dataclass(frozen=True)
class L3Config(AVCConfig):
    method = "l3"
    fusion_hidden: int = 128


FULL = L3Config(batch_size=256, micro_batch=16, steps=60_000_000 // 256, lr=1e-4, eval_size=10_000,
                pairs=PairsConfig(negative_mode="naive", misalign=True))
COLAB = FULL.replace(scale="colab", widths=WIDTHS["colab"], image_size=128, batch_size=128, micro_batch=None,
                     steps=4000, lr=3e-4, data=dict(COLAB_DATA), train_clips=5000, eval_size=1000)
QUICK = FULL.replace(scale="quick", widths=WIDTHS["quick"], fusion_hidden=32, image_size=64, audio=dict(QUICK_AUDIO),
                     batch_size=64, micro_batch=None, steps=150, lr=1e-3, data=dict(QUICK_DATA), train_clips=512,
                     eval_size=256)


class L3(AVCMethod):
    name = "l3"
    presets = {"full": FULL, "colab": COLAB, "quick": QUICK}

    def model(self, cfg: L3Config) -> L3Net:
        return L3Net(widths=cfg.widths, fusion_hidden=cfg.fusion_hidden, first_stride=cfg.first_stride)


register(L3())
