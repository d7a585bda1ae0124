"""The annotated SoundNet-Flickr test set (Senocak et al., CVPR 2018) and its evaluation, as the public evaluators
compute it.

The test set is 250 image-sound pairs (the list of later work, ``metadata/flickr_test.csv`` of "Localizing Visual
Sounds the Hard Way": one Flickr id per line, then a number), each with an XML file of annotator boxes in the
pixels of the 256 x 256 image. The public evaluators (that repository's ``test.py``, copied by its successors) walk
the XML as: every child of the root, every child of that child; where its tag is ``bbox``, its children after the
first are ``xmin, ymin, xmax, ymax``. :func:`read_flickr_boxes` reads the same.

The protocol (REFERENCE.md §3), matched here step by step:

1. every box is scaled to the 224 x 224 evaluation grid as ``int(224 * v / 256)`` (truncated) and rasterised as the
   array slice ``[ymin:ymax, xmin:xmax]`` (:func:`avlib.metrics.boxes_to_masks` on those integers);
2. the item's box masks are summed, halved and clipped at 1, also when the item has a single box, which then
   counts 0.5 everywhere (:func:`avlib.metrics.consensus_map`);
3. the prediction (resized bilinearly to 224 x 224 if it is not) is min-max normalised, the cut is the value at
   index ``224 * 224 // 2`` of its sorted pixels, and the pixels strictly above the cut are kept
   (:func:`avlib.metrics.binarize_maps`; a constant map keeps nothing);
4. cIoU = sum(P * G) / (sum(G) + sum(P * [G == 0])) (:func:`avlib.metrics.ciou_from_masks`), then cIoU@0.5 and the
   success-rate AUC over 0, 0.05, ..., 1 (:func:`avlib.metrics.summarize_ciou`).
"""

from __future__ import annotations

import csv
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from avlib.metrics import binarize_maps, boxes_to_masks, ciou_from_masks, consensus_map, summarize_ciou

__all__ = ["EVAL_SIZE", "SOURCE_SIZE", "FlickrError", "flickr_ciou", "flickr_gt_maps",
           "flickr_scores", "read_flickr_boxes", "read_flickr_test_list"]

EVAL_SIZE = 224  # the evaluation grid
SOURCE_SIZE = 256  # the annotated images' size, in whose pixels the XML boxes are given


class FlickrError(ValueError):
    """An annotation or list file that cannot be used; the message names the file."""


def read_flickr_boxes(path: str | os.PathLike) -> list[tuple[int, int, int, int]]:
    """The annotator boxes ``(xmin, ymin, xmax, ymax)`` of one item's XML file, in 256 x 256 image pixels."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise FlickrError(f"{path}: no such annotation file") from None
    except ET.ParseError as e:
        raise FlickrError(f"{path}: not valid XML ({e})") from None
    boxes = []
    for child in root:
        for element in child:
            if element.tag != "bbox":
                continue
            values = [c.text for c in list(element)[1:5]]
            try:
                box = tuple(int(v) for v in values)
            except (TypeError, ValueError):
                raise FlickrError(f"{path}: a bbox needs four integer coordinates after its first field; got "
                                  f"{values}") from None
            if len(box) != 4:
                raise FlickrError(f"{path}: a bbox needs four coordinates after its first field; got {values}")
            boxes.append(box)
    if not boxes:
        raise FlickrError(f"{path}: no bbox found (expected <bbox> elements two levels below the root)")
    return boxes


def read_flickr_test_list(path: str | os.PathLike) -> list[str]:
    """The ids of the test list (first column of ``flickr_test.csv``), in order."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except FileNotFoundError:
        raise FlickrError(f"{path}: no such test list") from None
    ids = [row[0].strip() for row in rows if row and row[0].strip()]
    if not ids:
        raise FlickrError(f"{path}: the test list is empty")
    return ids


def flickr_gt_maps(boxes: Sequence[Sequence[Sequence[int]]], size: int = EVAL_SIZE,
                   source_size: int = SOURCE_SIZE) -> Tensor:
    """``(B, size, size)`` consensus ground truth of each item's boxes (given in ``source_size`` pixels): each box
    scaled as ``int(size * v / source_size)``, rasterised, and the masks summed, halved and clipped at 1."""
    if not boxes or any(len(item) == 0 for item in boxes):
        raise FlickrError("flickr_gt_maps: every item needs at least one box")
    n_ann = max(len(item) for item in boxes)
    padded = torch.zeros(len(boxes), n_ann, 4)  # zero boxes are empty masks: they add nothing
    for b, item in enumerate(boxes):
        for a, box in enumerate(item):
            padded[b, a] = torch.tensor([int(size * int(v) / source_size) for v in box], dtype=torch.float32)
    return consensus_map(boxes_to_masks(padded, size, size))


def flickr_ciou(pred: Tensor, boxes: Sequence[Sequence[Sequence[int]]]) -> Tensor:
    """``(B,)`` cIoU of localization maps ``(B, h, w)`` against each item's annotator boxes (256-pixel
    coordinates), by the public protocol (module docstring); maps not at 224 x 224 are resized bilinearly."""
    pred = torch.as_tensor(pred, dtype=torch.float32)
    if pred.ndim != 3 or pred.shape[0] != len(boxes):
        raise ValueError(f"flickr_ciou: pred must be (B, h, w) with one map per item; got {tuple(pred.shape)} for "
                         f"{len(boxes)} items")
    if tuple(pred.shape[-2:]) != (EVAL_SIZE, EVAL_SIZE):
        pred = F.interpolate(pred[:, None], size=(EVAL_SIZE, EVAL_SIZE), mode="bilinear", align_corners=False)[:, 0]
    return ciou_from_masks(binarize_maps(pred), flickr_gt_maps(boxes))


def flickr_scores(pred: Tensor, boxes: Sequence[Sequence[Sequence[int]]]) -> dict[str, float]:
    """cIoU@0.5, AUC and mean cIoU over the items (:func:`flickr_ciou`, :func:`avlib.metrics.summarize_ciou`)."""
    return summarize_ciou(flickr_ciou(pred, boxes))
