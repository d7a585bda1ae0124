"""AVE-Net (Arandjelović & Zisserman, *Objects that Sound*, ECCV 2018, Sec. 3) as a method: network, presets.

Full: global batch 2048 (16 GPUs x 128; each device takes the paper's 128 at a time), lr 1e-4 (the paper's grid
search), x0.94 every 16 epochs (an epoch here is one pair per AudioSet-Instruments training clip, about 263k),
frame-aligned negatives plus L3's misalignment.
The quick and colab presets train on frame-aligned negatives without misalignment (chapter 3 studies both).
"""

from __future__ import annotations

from dataclasses import dataclass

from avlib.methods.avc import COLAB_DATA, QUICK_AUDIO, QUICK_DATA, WIDTHS, AVCConfig, AVCMethod, PairsConfig
from avlib.methods.base import register
from avlib.nets.ave import AVENet

__all__ = ["AVE", "AVEConfig", "FULL_EPOCH"]

FULL_EPOCH = 263_000 // 2048  # steps per epoch at the global batch of 2048
FULL_STEPS = 240 * FULL_EPOCH


@dataclass(frozen=True)
class AVEConfig(AVCConfig):
    method = "ave"
    embed_dim: int = 128


FULL = AVEConfig(batch_size=2048, micro_batch=128, steps=FULL_STEPS, lr=1e-4, schedule="step", gamma=0.94,
                 milestones=tuple(range(16 * FULL_EPOCH, FULL_STEPS, 16 * FULL_EPOCH)), eval_size=10_000,
                 pairs=PairsConfig(negative_mode="frame_aligned", misalign=True))
SMALL = {"micro_batch": None, "schedule": "constant", "milestones": (),
         "pairs": PairsConfig(negative_mode="frame_aligned", misalign=False)}
COLAB = FULL.replace(scale="colab", widths=WIDTHS["colab"], image_size=128, batch_size=128, steps=4000, lr=3e-4,
                     data=dict(COLAB_DATA), train_clips=5000, eval_size=1000, **SMALL)
QUICK = FULL.replace(scale="quick", widths=WIDTHS["quick"], embed_dim=32, image_size=64, audio=dict(QUICK_AUDIO),
                     batch_size=64, steps=150, lr=1e-3, data=dict(QUICK_DATA), train_clips=512, eval_size=256, **SMALL)


class AVE(AVCMethod):
    name = "ave"
    presets = {"full": FULL, "colab": COLAB, "quick": QUICK}

    def model(self, cfg: AVEConfig) -> AVENet:
        return AVENet(widths=cfg.widths, embed_dim=cfg.embed_dim, first_stride=cfg.first_stride)


register(AVE())
