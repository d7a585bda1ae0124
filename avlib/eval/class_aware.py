"""Class-aware sounding-object localization (DSOL, Hu et al. 2020, §4.4 and Eq. 9), for any model that gives one map
per category.

- :func:`class_aware_targets`: per-category ground truth of a scene: the union of the boxes of that category's
  sounding objects, and ``delta_k`` (is category k sounding?);
- :func:`match_keys`: which category each dictionary key stands for (Hungarian assignment on held-out solo clips; the
  keys are learned without labels, so this is for evaluation only, appendix 8.2), and :func:`category_maps`, the
  key maps summed per category;
- :func:`class_aware_report`: CIoU@0.3, AUC and NSA under the two named protocols, :data:`PROTOCOLS`;
- :func:`class_aware_baselines`: the centred box, the whole image and a random map for every category.
"""

from __future__ import annotations

from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from avlib import metrics
from avlib.eval.localization import upsample_maps

__all__ = ["PROTOCOLS", "category_maps", "class_aware_baselines", "class_aware_report", "class_aware_targets",
           "key_accuracy", "match_keys"]

PROTOCOLS = {
    "paper": "tau = 10% of the maximum over all predicted maps, for CIoU and NSA (DSOL appendix 8.2)",
    "released_code": "CIoU: each map cut strictly above 0.2 x its own maximum; NSA: below the absolute 0.2",
}
"""The two threshold protocols by name: the paper's and the authors' released evaluation (REFERENCE.md §3)."""


def class_aware_targets(boxes: Tensor, categories: Tensor, sounding: Tensor, n_categories: int, height: int,
                        width: int) -> tuple[Tensor, Tensor]:
    """Per-category ground truth of one frame.

    Args:
        boxes: ``(n_obj, 4)`` xyxy pixel boxes of the visible objects.
        categories: ``(n_obj,)`` their categories.
        sounding: ``(n_obj,)`` bool, whether each object is heard.
        n_categories: C.
        height, width: the frame's size.

    Returns:
        ``masks (C, H, W)`` bool (the union of the boxes of category c's sounding objects) and ``delta (C,)`` bool.
    """
    masks = torch.zeros(n_categories, height, width, dtype=torch.bool)
    delta = torch.zeros(n_categories, dtype=torch.bool)
    if boxes.numel():
        drawn = metrics.boxes_to_masks(boxes.float(), height, width) > 0  # (n_obj, H, W)
        for j in torch.nonzero(sounding.bool()).flatten().tolist():
            masks[int(categories[j])] |= drawn[j]
            delta[int(categories[j])] = True
    return masks, delta


def match_keys(keys: Tensor, labels: Tensor, n_keys: int, n_categories: int) -> Tensor:
    """The category of each dictionary key, from items whose key and true category are known.

    A Hungarian assignment (``scipy.optimize.linear_sum_assignment``) maximises the number of items whose key maps to
    their category, one key per category; with more keys than categories, each remaining key takes the category most
    of its items have (the paper's "adaptively aggregate multiple clusters to one category", appendix 8.3).

    Args:
        keys: ``(N,)`` the key of each item (its nearest dictionary entry).
        labels: ``(N,)`` its true category.

    Returns:
        ``(n_keys,)`` int64 category per key (-1 for a key no item uses when there are more keys than categories).
    """
    counts = torch.zeros(n_keys, n_categories, dtype=torch.float64)
    counts.index_put_((keys.long().cpu(), labels.long().cpu()), torch.ones(keys.numel(), dtype=torch.float64),
                      accumulate=True)
    rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)
    out = torch.full((n_keys,), -1, dtype=torch.int64)
    out[torch.from_numpy(rows)] = torch.from_numpy(cols).long()
    rest = (out < 0) & (counts.sum(1) > 0)
    out[rest] = counts[rest].argmax(1)
    return out


def category_maps(key_maps: Tensor, key_to_category: Tensor, n_categories: int) -> Tensor:
    """Per-category maps ``(B, C, h, w)``: the sum of the maps ``(B, K, h, w)`` of the keys assigned to each category
    (probabilities of merged keys add; a category without a key gets a zero map)."""
    keep = key_to_category >= 0
    out = key_maps.new_zeros(key_maps.shape[0], n_categories, *key_maps.shape[2:])
    return out.index_add_(1, key_to_category[keep].to(key_maps.device), key_maps[:, keep])


def _summary(values: Tensor, nsa: Tensor, tau: float | None) -> dict[str, float]:
    v = values.double()
    out = {"ciou30": float(metrics.success_rate(v, (0.3,))[0]), "auc": metrics.success_auc(v),
           "mean_ciou": float(v.mean()), "nsa": float(nsa.double().mean())}
    return {**out, "tau": tau} if tau is not None else out


def class_aware_report(maps: Tensor, gt_masks: Tensor, sounding: Tensor, code_fraction: float = 0.2
                       ) -> dict[str, dict[str, float]]:
    """CIoU@0.3, AUC, mean CIoU and NSA (Eq. 9) of class-aware maps under both :data:`PROTOCOLS`.

    Args:
        maps: ``(B, C, h, w)`` non-negative maps, one per category (resized bilinearly to the masks' size).
        gt_masks: ``(B, C, H, W)`` bool, from :func:`class_aware_targets`.
        sounding: ``(B, C)`` bool, ``delta``; every item needs a sounding and a non-sounding category.
        code_fraction: the released code's relative CIoU cut (0.2 per the project's reference; the stored
            ``music-exp/eval.py`` of the authors' repository cuts at 0.5 x the map's maximum).

    Returns:
        ``{"paper": {...}, "released_code": {...}}``, each with ``ciou30``, ``auc``, ``mean_ciou``, ``nsa`` (and
        the paper's ``tau``).
    """
    maps = upsample_maps(maps.float().cpu(), tuple(gt_masks.shape[-2:]))
    paper = metrics.class_aware_scores(maps, gt_masks, sounding)
    released = _summary(metrics.class_aware_ciou_relative(maps, gt_masks, sounding, code_fraction),
                        metrics.nsa(maps, sounding, 0.2), None)
    return {"paper": paper, "released_code": released}


def class_aware_baselines(gt_masks: Tensor, sounding: Tensor, seed: int = 0) -> dict[str, Any]:
    """:func:`class_aware_report` of maps that know nothing about the sound: the centred box (half the image) and the
    whole image for every category, and a random map per category (:func:`avlib.metrics.random_map`)."""
    b, c, h, w = gt_masks.shape
    box = metrics.center_box_map(1, h, w)[0]
    rand = metrics.random_map(b * c, h, w, seed=seed).reshape(b, c, h, w)
    rows = {"centred box (half the image)": box.expand(b, c, h, w), "whole image": torch.ones(b, c, h, w),
            "random map": rand}
    return {name: class_aware_report(m, gt_masks, sounding) for name, m in rows.items()}


def key_accuracy(keys: Tensor, labels: Tensor, key_to_category: Tensor) -> float:
    """Fraction of items whose key's category is their own."""
    return float((key_to_category[keys.long()] == labels.long()).double().mean())
