"""AVOL-Net (Arandjelović & Zisserman, *Objects that Sound*, ECCV 2018, Sec. 4) as a method: network, presets, its
localization maps and its start from a trained AVE-Net.

It trains on scenes with a silent second instrument (what it must learn to ignore). At quick scale 150 steps of
multiple-instance learning from scratch do not get off the ground on a CPU, so the quick AVOL-Net starts from the
quick AVE-Net (``init_from="ave"``: same trunks, fc1/fc2 as 1x1 convolutions, calibration fitted on one batch) and is
fine-tuned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from avlib.audio import first_example, make_frontend
from avlib.methods import ave
from avlib.methods.avc import AVCMethod
from avlib.methods.base import register
from avlib.nets.ave import AVENet, AVOLNet

__all__ = ["AVOL", "AVOLConfig"]


@dataclass(frozen=True)
class AVOLConfig(ave.AVEConfig):
    method = "avol"


def _with_silent(data: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if data is None else {**data, "n_silent": 1}


FULL = AVOLConfig(**vars(ave.FULL))
COLAB = AVOLConfig(**vars(ave.COLAB)).replace(data=_with_silent(ave.COLAB.data))
QUICK = AVOLConfig(**vars(ave.QUICK)).replace(data=_with_silent(ave.QUICK.data), init_from="ave", steps=60)

class AVOL(AVCMethod):
    name = "avol"
    presets = {"full": FULL, "colab": COLAB, "quick": QUICK}

    def model(self, cfg: AVOLConfig) -> AVOLNet:
        return AVOLNet(widths=cfg.widths, embed_dim=cfg.embed_dim, first_stride=cfg.first_stride)

    def init(self, cfg: AVOLConfig, model: nn.Module, source: nn.Module, train: Dataset) -> AVOLNet:
        """AVOL-Net from a trained AVE-Net (Objects that Sound): trunks and fc layers copied (the fcs become 1x1
        convolutions), the calibration fitted on one batch of the training pairs."""
        if not isinstance(source, AVENet):
            raise TypeError(f"avol starts from a trained AVE-Net; got a {type(source).__name__}")
        avol = AVOLNet.from_avenet(source)  # copies weights only: the source's own mode is left as it was
        batch = train.batch(range(min(256, len(train))))
        with torch.no_grad():
            spec = first_example(make_frontend(cfg.audio), batch["audio"])
        avol.eval().calibrate_(batch["image"], spec, batch["label"])
        return avol.train()

    @staticmethod
    def localization_maps(frontend: nn.Module):
        """``maps_fn(model, chunk)`` for :func:`avlib.eval.localization.localization_report`: the per-location
        correspondence map ``(B, h, w)`` of each image with its audio (``chunk``: ``image``, ``audio``)."""

        def maps(model: AVOLNet, chunk: dict[str, Tensor]) -> dict[str, Tensor]:
            return {"avol": model.localize(chunk["image"], first_example(frontend, chunk["audio"]))}

        return maps


register(AVOL())
