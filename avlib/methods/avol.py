"""AVOL-Net (Arandjelović & Zisserman, *Objects that Sound*, ECCV 2018, Sec. 4) as a method: network, presets, its
localization maps and its start from a trained AVE-Net.

It trains on scenes with a silent second instrument (what it must learn to ignore). At quick scale a few hundred steps
of multiple-instance learning from scratch do not get off the ground on a CPU, so the quick AVOL-Net starts from the
quick AVE-Net (``init_from="ave"``: same trunks, fc1/fc2 as 1x1 convolutions, calibration fitted on one batch) and
trains 200 steps; its 64-pixel frames would leave a 4x4 map, so it runs the trunk's last two pools densely
(``dense=2``: a 16x16 map from the same weights, :class:`~avlib.nets.ave.AVOLNet`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from avlib.audio import first_example, make_frontend
from avlib.eval.avc import audio_window, middle_frame, model_device
from avlib.methods import ave
from avlib.methods.avc import AVCMethod
from avlib.methods.base import register
from avlib.nets.ave import AVENet, AVOLNet
from avlib.vision import resize_short_side

__all__ = ["AVOL", "AVOLConfig"]


@dataclass(frozen=True)
class AVOLConfig(ave.AVEConfig):
    """AVE-Net's config plus ``dense``: how many of the vision trunk's last pools run at stride 1 with dilated layers
    after them (:class:`~avlib.nets.ave.AVOLNet`; 0 in the paper, whose 224-pixel frames give a 14×14 map)."""

    method = "avol"
    dense: int = 0


def _with_silent(data: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if data is None else {**data, "n_silent": 1}


FULL = AVOLConfig(**vars(ave.FULL))
COLAB = AVOLConfig(**vars(ave.COLAB)).replace(data=_with_silent(ave.COLAB.data))
QUICK = AVOLConfig(**vars(ave.QUICK)).replace(data=_with_silent(ave.QUICK.data), init_from="ave", steps=200,
                                             dense=2)

class AVOL(AVCMethod):
    name = "avol"
    presets = {"full": FULL, "colab": COLAB, "quick": QUICK}

    def model(self, cfg: AVOLConfig) -> AVOLNet:
        return AVOLNet(widths=cfg.widths, embed_dim=cfg.embed_dim, first_stride=cfg.first_stride, dense=cfg.dense)

    def init(self, cfg: AVOLConfig, model: nn.Module, source: nn.Module, train: Dataset) -> AVOLNet:
        """AVOL-Net from a trained AVE-Net (Objects that Sound): trunks and fc layers copied (the fcs become 1x1
        convolutions), the calibration fitted on one batch of the training pairs."""
        if not isinstance(source, AVENet):
            raise TypeError(f"avol starts from a trained AVE-Net; got a {type(source).__name__}")
        avol = AVOLNet.from_avenet(source, dense=cfg.dense)  # copies weights only: the source keeps its mode
        batch = train.batch(range(min(256, len(train))))
        with torch.no_grad():
            spec = first_example(make_frontend(cfg.audio), batch["audio"])
        avol.eval().calibrate_(batch["image"], spec, batch["label"])
        return avol.train()

    def eval_images(self, cfg: AVOLConfig, images: Tensor) -> Tensor:
        """Whole frames ``(B, 3, H, W)`` at the scale the net trained at: L3's pipeline resizes the short side to
        ``image_size * 256 / 224`` before it crops, so the full frame is resized the same way (no crop; the map then
        covers the whole frame, and box coordinates keep their meaning)."""
        return resize_short_side(images, round(cfg.image_size * 256 / 224))

    @staticmethod
    @torch.no_grad()
    def mean_audio_embedding(model: AVOLNet, frontend: nn.Module, source: Any, clips: Sequence[int],
                             batch_size: int = 128) -> Tensor:
        """The mean audio embedding ``(embed_dim,)`` of the middle second of ``clips`` (the training clips)."""
        window = int(round(source.sample_rate))
        wins = [audio_window(source, int(c), middle_frame(source, int(c))[1], window) for c in clips]
        was_training = model.training
        model.eval()
        dev = model_device(model)
        try:
            embs = [model.embed_audio(first_example(frontend, torch.stack(wins[i : i + batch_size]).to(dev)))
                    for i in range(0, len(wins), batch_size)]
        finally:
            model.train(was_training)
        return torch.cat(embs).float().mean(0)

    @classmethod
    def audio_free_maps(cls, model: AVOLNet, frontend: nn.Module, source: Any, clips: Sequence[int]):
        """``maps_fn`` of an *audio-free* map: AVOL-Net's own map with every clip's audio embedding replaced by the
        mean embedding of the training sounds (:meth:`mean_audio_embedding`). Same visual descriptors, same
        calibration; only what the clip's sound says is gone, so it shows what the image alone makes the net point
        at."""
        a_bar = cls.mean_audio_embedding(model, frontend, source, clips)

        def maps(net: AVOLNet, chunk: dict[str, Tensor]) -> dict[str, Tensor]:
            return {"avol": torch.sigmoid(net.map_logits(chunk["image"], a_bar.to(chunk["image"].device)))}

        return maps

    @staticmethod
    def localization_maps(frontend: nn.Module):
        """``maps_fn(model, chunk)`` for :func:`avlib.eval.localization.localization_report`: the per-location
        correspondence map ``(B, h, w)`` of each image with its audio (``chunk``: ``image``, ``audio``)."""

        def maps(model: AVOLNet, chunk: dict[str, Tensor]) -> dict[str, Tensor]:
            return {"avol": model.localize(chunk["image"], first_example(frontend, chunk["audio"]))}

        return maps


register(AVOL())
