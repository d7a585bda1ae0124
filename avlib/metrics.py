"""Evaluation metrics of the five papers, batched, NaN-free, with their trivial baselines.

Every function takes batched tensors (numpy arrays are accepted too; tensors are detached and evaluated on the CPU,
which keeps float64 available on every backend) and returns either plain Python floats (summary scores) or per-item
CPU tensors (where scores must be pooled over several batches before summarising). Definitions follow
the project's metric reference, each tied to the paper that reports it:

* audio-visual correspondence (AVC) accuracy — L3-Net, Objects that Sound;
* cIoU with the multi-annotator consensus map, cIoU@0.5 and the success-rate AUC (the Flickr-SoundNet protocol of
  Senocak et al., as used by DMC and CAVL), plus the centred-box and whole-image baselines;
* DSOL single-source IoU/AUC, class-aware CIoU and NSA (DSOL, Eq. 9);
* nDCG@k with ontology relevance and its random-ranking baseline (Objects that Sound, Appendix A.2);
* NMI of k-means clusters and its random-assignment baseline (L3-Net, Table 4);
* SDR / SIR / SAR, BSS Eval v3 as in ``mir_eval.separation.bss_eval_sources`` (CAVL, Sec. 6.4);
* Poisson counting accuracy and MAE, with the chance baseline (CAVL, Table 2).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "avc_accuracy",
    "boxes_to_masks",
    "consensus_map",
    "binarize_maps",
    "ciou_from_masks",
    "ciou",
    "success_rate",
    "success_auc",
    "summarize_ciou",
    "localization_scores",
    "ciou_at",
    "ciou_auc",
    "center_box_map",
    "whole_image_map",
    "center_box_baseline",
    "whole_image_baseline",
    "random_map",
    "random_map_baseline",
    "dsol_iou",
    "dsol_iou_auc",
    "dsol_threshold",
    "class_aware_ciou",
    "class_aware_ciou_relative",
    "nsa",
    "class_aware_scores",
    "label_relevance",
    "ndcg_per_query",
    "ndcg_at_k",
    "random_ndcg_at_k",
    "normalized_mutual_info",
    "kmeans_nmi",
    "random_assignment_nmi",
    "bss_eval_sources",
    "bss_eval",
    "poisson_count_predict",
    "poisson_count_accuracy",
    "poisson_count_mae",
    "count_chance",
]

SUCCESS_THRESHOLDS = tuple(0.05 * i for i in range(21))  # 0, 0.05, ..., 1: the thresholds of the success-rate AUC


def _tensor(x: Tensor | np.ndarray, name: str) -> Tensor:
    t = torch.as_tensor(x).detach().cpu()
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return t


def _check_ndim(t: Tensor, ndims: tuple[int, ...], name: str, shape_doc: str) -> None:
    if t.ndim not in ndims:
        raise ValueError(f"{name} must have shape {shape_doc}; got {tuple(t.shape)}")


# ----------------------------------------------------------------------------------------------------------------------
# Audio-visual correspondence
# ----------------------------------------------------------------------------------------------------------------------


def avc_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Accuracy of the audio-visual correspondence decision.

    Args:
        logits: ``(B,)`` or ``(B, 1)`` scores where ``> 0`` means "the pair corresponds", or ``(B, C)`` class scores
            (``C = 2`` for L3-Net's softmax: class 1 = corresponds) decided by argmax.
        labels: ``(B,)`` integer targets (1 = corresponding pair, 0 = mismatched for the binary case).

    Returns:
        The fraction of correct decisions, a float in [0, 1].
    """
    logits = _tensor(logits, "logits")
    labels = _tensor(labels, "labels").long()
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    _check_ndim(logits, (1, 2), "logits", "(B,), (B, 1) or (B, C)")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0] or labels.numel() == 0:
        raise ValueError(f"labels must have shape ({logits.shape[0]},) matching logits; got {tuple(labels.shape)}")
    pred = (logits > 0).long() if logits.ndim == 1 else logits.argmax(dim=1)
    return float((pred == labels).double().mean())


# ----------------------------------------------------------------------------------------------------------------------
# Single-source localization: cIoU (Senocak et al. protocol), AUC, baselines
# ----------------------------------------------------------------------------------------------------------------------


def boxes_to_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Rasterise ``xyxy`` pixel boxes into binary masks.

    A pixel ``(y, x)`` is inside a box when its centre ``(y + 0.5, x + 0.5)`` lies in ``[y1, y2) x [x1, x2)``; for
    integer coordinates this is the array slice ``mask[y1:y2, x1:x2]``. Degenerate boxes (``x2 <= x1`` or
    ``y2 <= y1``, e.g. zero padding for a missing annotator) give empty masks.

    Args:
        boxes: ``(..., 4)`` boxes ``(x1, y1, x2, y2)`` in pixels of the ``height x width`` evaluation grid.
        height: mask height ``H``.
        width: mask width ``W``.

    Returns:
        ``(..., H, W)`` float32 masks with values in {0, 1}.
    """
    boxes = _tensor(boxes, "boxes").to(torch.float32)
    if boxes.ndim == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4) in xyxy order; got {tuple(boxes.shape)}")
    ys = torch.arange(height, dtype=torch.float32, device=boxes.device) + 0.5
    xs = torch.arange(width, dtype=torch.float32, device=boxes.device) + 0.5
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    inside_y = (ys >= y1) & (ys < y2)  # (..., H)
    inside_x = (xs >= x1) & (xs < x2)  # (..., W)
    return (inside_y[..., :, None] & inside_x[..., None, :]).to(torch.float32)


def consensus_map(annotator_masks: Tensor) -> Tensor:
    """Multi-annotator ground truth: every annotator's box adds 1, the sum is halved and clipped at 1.

    A pixel thus counts fully where at least two annotators agree and half where only one marked it, also when an
    item has a single box (as the public Flickr-SoundNet evaluator does; REFERENCE.md §3). Pass a ``(B, H, W)`` mask
    instead of ``(B, 1, H, W)`` for binary ground truth (synthetic data). Empty channels (padding) add nothing.

    Args:
        annotator_masks: ``(B, A, H, W)`` binary masks, one channel per annotator box.

    Returns:
        ``(B, H, W)`` float32 ground-truth map with values in {0, 0.5, 1}.
    """
    masks = _tensor(annotator_masks, "annotator_masks").to(torch.float32)
    _check_ndim(masks, (4,), "annotator_masks", "(B, A, H, W)")
    return (masks.sum(1) / 2).clamp(max=1.0)


def _as_gt_map(gt: Tensor) -> Tensor:
    """``(B, H, W)`` map in [0, 1] as is, or ``(B, A, H, W)`` annotator masks turned into the consensus map."""
    gt = _tensor(gt, "gt").to(torch.float32)
    _check_ndim(gt, (3, 4), "gt", "(B, H, W) or (B, A, H, W)")
    if gt.ndim == 4:
        return consensus_map(gt)
    if gt.min() < 0 or gt.max() > 1:
        raise ValueError("gt map values must lie in [0, 1]")
    return gt


def _resize_like(pred: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``(B, [K,] h, w)`` maps to ``size`` (the evaluation resolution of the ground truth)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    lead = pred.shape[:-2]
    flat = pred.reshape(-1, 1, *pred.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)


def binarize_maps(pred: Tensor, top_fraction: float = 0.5, threshold: float | None = None) -> Tensor:
    """Min-max normalise each map and binarise it.

    With ``threshold=None`` about the top ``top_fraction`` of pixels are kept as the public evaluators do: the cut is
    the value at index ``int(N * (1 - top_fraction))`` of the map's ``N`` sorted pixels (for 0.5: index ``N // 2``,
    the upper median) and the pixels strictly above it are on (``N // 2 - 1`` of them for 0.5 when values are
    distinct; a binary map keeps its ones). With a ``threshold``, pixels
    whose normalised value is ``>= threshold`` are on. A constant map carries no localization evidence and predicts
    nothing (an all-off mask), so a collapsed model cannot earn the whole-image score by accident.

    Args:
        pred: ``(B, H, W)`` localization maps (any real values).
        top_fraction: fraction of pixels kept, in (0, 1]; ignored when ``threshold`` is given.
        threshold: absolute cut on the min-max normalised map, in [0, 1], or ``None``.

    Returns:
        ``(B, H, W)`` bool masks.
    """
    pred = _tensor(pred, "pred").to(torch.float32)
    _check_ndim(pred, (3,), "pred", "(B, H, W)")
    flat = pred.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    varies = hi > lo  # (B, 1)
    norm = torch.where(varies, (flat - lo) / (hi - lo).clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    if threshold is None:
        if not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"top_fraction must lie in (0, 1]; got {top_fraction}")
        if top_fraction == 1.0:
            return varies.expand_as(norm).reshape(pred.shape).clone()
        index = min(int(norm.shape[1] * (1.0 - top_fraction)), norm.shape[1] - 1)
        cut = norm.sort(1).values[:, index, None]
        return ((norm > cut) & varies).reshape(pred.shape)
    else:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(
                f"threshold must lie in [0, 1] (it applies to the min-max normalised map); got {threshold}"
            )
        cut = torch.full_like(lo, threshold)
    return ((norm >= cut) & varies).reshape(pred.shape)


def ciou_from_masks(pred_mask: Tensor, gt: Tensor) -> Tensor:
    """cIoU of binary predictions against a (consensus) ground-truth map.

    ``cIoU = sum(P * G) / (sum(G) + sum(P * [G == 0]))``: with a binary ``G`` this is the plain IoU; with the consensus
    map, pixels marked by a single annotator weigh 0.5 and predicting them is not penalised as a false positive.

    Args:
        pred_mask: ``(B, H, W)`` binary prediction (bool or {0, 1}).
        gt: ``(B, H, W)`` ground-truth map in [0, 1] or ``(B, A, H, W)`` annotator masks (see :func:`consensus_map`).

    Returns:
        ``(B,)`` float32 cIoU per item, in [0, 1].
    """
    g = _as_gt_map(gt)
    p = _tensor(pred_mask, "pred_mask").to(torch.float32)
    if p.shape != g.shape:
        raise ValueError(f"pred_mask shape {tuple(p.shape)} does not match the ground-truth map {tuple(g.shape)}")
    g_area = g.sum((-2, -1))
    if (g_area <= 0).any():
        bad = torch.nonzero(g_area <= 0).flatten().tolist()
        raise ValueError(f"gt has no annotated pixel for batch items {bad}: cIoU is undefined there")
    inter = (p * g).sum((-2, -1))
    false_pos = (p * (g == 0)).sum((-2, -1))
    return inter / (g_area + false_pos)


def ciou(pred: Tensor, gt: Tensor, top_fraction: float = 0.5, threshold: float | None = None) -> Tensor:
    """cIoU per item of continuous localization maps (normalised and binarised by :func:`binarize_maps`).

    Args:
        pred: ``(B, h, w)`` maps; resized bilinearly to the ground truth's ``(H, W)`` when sizes differ.
        gt: ``(B, H, W)`` map in [0, 1] or ``(B, A, H, W)`` annotator masks.
        top_fraction, threshold: binarisation, see :func:`binarize_maps`.

    Returns:
        ``(B,)`` float32 cIoU per item.
    """
    g = _as_gt_map(gt)
    pred = _tensor(pred, "pred").to(torch.float32)
    _check_ndim(pred, (3,), "pred", "(B, h, w)")
    mask = binarize_maps(_resize_like(pred, tuple(g.shape[-2:])), top_fraction=top_fraction, threshold=threshold)
    return ciou_from_masks(mask, g)


def success_rate(values: Tensor, thresholds: tuple[float, ...] = SUCCESS_THRESHOLDS) -> Tensor:
    """Fraction of items whose score is ``>=`` each threshold.

    Args:
        values: ``(N,)`` per-item scores (cIoU, IoU, CIoU).
        thresholds: the thresholds, 0, 0.05, ..., 1 by default.

    Returns:
        ``(T,)`` float64 success rates.
    """
    v = _tensor(values, "values").to(torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("values is empty: no item to score")
    t = torch.tensor(thresholds, dtype=torch.float64)
    return (v[None, :] >= t[:, None]).double().mean(1)


def success_auc(values: Tensor) -> float:
    """Area under the success-rate curve over thresholds 0, 0.05, ..., 1 (trapezoidal rule, as ``sklearn.auc``).

    Args:
        values: ``(N,)`` per-item scores.
    """
    rates = success_rate(values)
    return float(torch.trapezoid(rates, torch.tensor(SUCCESS_THRESHOLDS, dtype=torch.float64)))


def summarize_ciou(values: Tensor) -> dict[str, float]:
    """Summary of per-item cIoU values ``(N,)`` pooled over a test set.

    Returns:
        ``{"ciou50": fraction with cIoU >= 0.5, "auc": success-rate AUC, "mean_ciou": mean cIoU}``.
    """
    v = _tensor(values, "values").to(torch.float64).flatten()
    return {
        "ciou50": float(success_rate(v, (0.5,))[0]),
        "auc": success_auc(v),
        "mean_ciou": float(v.mean()),
    }


def localization_scores(
    pred: Tensor, gt: Tensor, top_fraction: float = 0.5, threshold: float | None = None
) -> dict[str, float]:
    """cIoU@0.5, AUC and mean cIoU of localization maps (all arguments as in :func:`ciou`)."""
    return summarize_ciou(ciou(pred, gt, top_fraction=top_fraction, threshold=threshold))


def ciou_at(
    pred: Tensor, gt: Tensor, at: float = 0.5, top_fraction: float = 0.5, threshold: float | None = None
) -> float:
    """Fraction of items with cIoU ``>= at`` (cIoU@0.5 by default); arguments as in :func:`ciou`."""
    return float(success_rate(ciou(pred, gt, top_fraction=top_fraction, threshold=threshold), (at,))[0])


def ciou_auc(pred: Tensor, gt: Tensor, top_fraction: float = 0.5, threshold: float | None = None) -> float:
    """Success-rate AUC of cIoU over thresholds 0, 0.05, ..., 1; arguments as in :func:`ciou`."""
    return success_auc(ciou(pred, gt, top_fraction=top_fraction, threshold=threshold))


def center_box_map(batch: int, height: int, width: int, area_fraction: float = 0.5) -> Tensor:
    """The centred-box prediction: a box with the image's aspect ratio covering ``area_fraction`` of the image.

    The default 0.5 matches the area kept by the default top-half binarisation, so a model beats this baseline only
    by putting its half of the pixels in better places than the image centre.

    Returns:
        ``(batch, height, width)`` float32 masks.
    """
    if not 0.0 < area_fraction <= 1.0:
        raise ValueError(f"area_fraction must lie in (0, 1]; got {area_fraction}")
    side = math.sqrt(area_fraction)
    half_w, half_h = side * width / 2, side * height / 2
    box = torch.tensor([width / 2 - half_w, height / 2 - half_h, width / 2 + half_w, height / 2 + half_h])
    return boxes_to_masks(box, height, width).expand(batch, height, width).clone()


def whole_image_map(batch: int, height: int, width: int) -> Tensor:
    """The whole-image prediction: every pixel on. Returns ``(batch, height, width)`` float32 ones."""
    return torch.ones(batch, height, width)


def center_box_baseline(gt: Tensor, area_fraction: float = 0.5) -> dict[str, float]:
    """cIoU@0.5, AUC and mean cIoU of the centred-box prediction against ``gt`` (``(B, H, W)`` or
    ``(B, A, H, W)``). The baseline is already a mask, so it is scored by the cIoU formula without binarisation."""
    g = _as_gt_map(gt)
    mask = center_box_map(g.shape[0], g.shape[1], g.shape[2], area_fraction)
    return summarize_ciou(ciou_from_masks(mask, g))


def whole_image_baseline(gt: Tensor) -> dict[str, float]:
    """cIoU@0.5, AUC and mean cIoU of predicting the whole image (every pixel on) against ``gt``."""
    g = _as_gt_map(gt)
    return summarize_ciou(ciou_from_masks(whole_image_map(*g.shape), g))


def random_map(batch: int, height: int, width: int, grid: int = 8, seed: int = 0) -> Tensor:
    """A map that knows nothing: uniform noise on a ``grid`` x ``grid`` lattice (the resolution of a network's
    feature map), bilinearly upsampled. Returns ``(batch, height, width)`` float32 in [0, 1], the same for a seed."""
    noise = torch.rand(batch, 1, grid, grid, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def random_map_baseline(gt: Tensor, top_fraction: float = 0.5, threshold: float | None = None, grid: int = 8,
                        seed: int = 0) -> dict[str, float]:
    """cIoU@0.5, AUC and mean cIoU of :func:`random_map` against ``gt``, binarised like a model's map
    (``top_fraction`` / ``threshold`` as in :func:`ciou`)."""
    g = _as_gt_map(gt)
    pred = random_map(g.shape[0], g.shape[1], g.shape[2], grid=grid, seed=seed)
    return localization_scores(pred, g, top_fraction=top_fraction, threshold=threshold)


# ----------------------------------------------------------------------------------------------------------------------
# DSOL: single-source IoU/AUC, class-aware CIoU and NSA (Eq. 9)
# ----------------------------------------------------------------------------------------------------------------------


def _binary_gt(gt: Tensor) -> Tensor:
    """``(B, H, W)`` binary mask, or the union of ``(B, A, H, W)`` box masks."""
    g = _tensor(gt, "gt").to(torch.float32)
    _check_ndim(g, (3, 4), "gt", "(B, H, W) or (B, A, H, W)")
    return (g.amax(1) if g.ndim == 4 else g) > 0


def dsol_iou(pred: Tensor, gt: Tensor, fraction: float = 0.1) -> Tensor:
    """DSOL single-source IoU per item: the map is binarised at ``fraction`` times its own maximum.

    Args:
        pred: ``(B, h, w)`` non-negative localization maps (resized bilinearly to the ground truth's size).
        gt: ``(B, H, W)`` binary box mask, or ``(B, A, H, W)`` box masks whose union is the ground truth.
        fraction: relative threshold (0.1 in DSOL). A map whose maximum is 0 predicts nothing.

    Returns:
        ``(B,)`` float32 IoU per item.
    """
    g = _binary_gt(gt)
    pred = _tensor(pred, "pred").to(torch.float32)
    _check_ndim(pred, (3,), "pred", "(B, h, w)")
    if (pred < 0).any():
        raise ValueError("pred must be non-negative (DSOL thresholds a fraction of the map's maximum)")
    pred = _resize_like(pred, tuple(g.shape[-2:]))
    peak = pred.flatten(1).amax(1)[:, None, None]
    mask = (pred >= fraction * peak) & (peak > 0)
    return ciou_from_masks(mask, g.float())


def dsol_iou_auc(pred: Tensor, gt: Tensor, fraction: float = 0.1) -> dict[str, float]:
    """DSOL single-source summary (Table 1): ``{"iou50", "auc", "mean_iou"}``; arguments as in :func:`dsol_iou`."""
    values = dsol_iou(pred, gt, fraction).double()
    return {
        "iou50": float(success_rate(values, (0.5,))[0]),
        "auc": success_auc(values),
        "mean_iou": float(values.mean()),
    }


def dsol_threshold(maps: Tensor, fraction: float = 0.1) -> float:
    """The threshold tau of DSOL's appendix: ``fraction`` (10%) of the maximum over all predicted maps given."""
    maps = _tensor(maps, "maps")
    if maps.numel() == 0:
        raise ValueError("maps is empty")
    return float(fraction * maps.max())


def _class_aware_inputs(maps: Tensor, sounding: Tensor) -> tuple[Tensor, Tensor]:
    maps = _tensor(maps, "maps").to(torch.float32)
    _check_ndim(maps, (4,), "maps", "(B, K, H, W)")
    sounding = _tensor(sounding, "sounding").bool()
    if sounding.shape != maps.shape[:2]:
        raise ValueError(f"sounding must have shape {tuple(maps.shape[:2])} (B, K); got {tuple(sounding.shape)}")
    return maps, sounding


def _class_aware_targets(maps: Tensor, gt_masks: Tensor, sounding: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Checked inputs of a class-aware IoU: the maps resized to the masks ``(B, K, H, W)``, the masks as bool, and
    ``sounding (B, K)``; every item needs a sounding class, each with a non-empty mask."""
    maps, sounding = _class_aware_inputs(maps, sounding)
    g = _tensor(gt_masks, "gt_masks").to(torch.float32) > 0
    if g.shape[:2] != maps.shape[:2] or g.ndim != 4:
        raise ValueError(f"gt_masks must have shape (B, K, H, W) with (B, K) = {tuple(maps.shape[:2])}")
    n_sounding = sounding.sum(1)
    if (n_sounding == 0).any():
        raise ValueError(f"items {torch.nonzero(n_sounding == 0).flatten().tolist()} have no sounding class")
    if ((g.flatten(2).sum(-1) == 0) & sounding).any():
        raise ValueError("a sounding class has an empty ground-truth mask: its IoU is undefined")
    return _resize_like(maps, tuple(g.shape[-2:])), g, sounding


def _mean_sounding_iou(on: Tensor, g: Tensor, sounding: Tensor) -> Tensor:
    """Eq. 9, left: sum_k delta_k IoU(on_k, G_k) / sum_k delta_k per item, from ``(B, K, H, W)`` bool masks."""
    inter = (on & g).flatten(2).sum(-1).float()
    union = (on | g).flatten(2).sum(-1).float().clamp_min(1.0)
    return ((inter / union) * sounding).sum(1) / sounding.sum(1)


def class_aware_ciou(maps: Tensor, gt_masks: Tensor, sounding: Tensor, tau: float) -> Tensor:
    """DSOL class-aware IoU per item (Eq. 9, left): the mean over sounding classes of IoU({s^k >= tau}, G_k).

    Args:
        maps: ``(B, K, h, w)`` class-aware localization maps ``s^k`` (resized bilinearly to ``(H, W)``).
        gt_masks: ``(B, K, H, W)`` binary masks of each class's boxes.
        sounding: ``(B, K)`` bool, ``delta_k``: class k is present and sounding.
        tau: the binarisation threshold (see :func:`dsol_threshold`).

    Returns:
        ``(B,)`` float32 CIoU per item. Every item needs at least one sounding class, each with a non-empty mask.
    """
    pred, g, sounding = _class_aware_targets(maps, gt_masks, sounding)
    return _mean_sounding_iou(pred >= tau, g, sounding)


def nsa(maps: Tensor, sounding: Tensor, tau: float) -> Tensor:
    """DSOL no-sounding-area per item (Eq. 9, right): the fraction of pixels below ``tau`` in the maps of classes
    that are silent or absent, pooled over those classes.

    Args:
        maps: ``(B, K, H, W)`` class-aware localization maps.
        sounding: ``(B, K)`` bool; every item needs at least one non-sounding class.
        tau: the threshold.

    Returns:
        ``(B,)`` float32 NSA per item, in [0, 1] (1 = silent classes fully suppressed).
    """
    maps, sounding = _class_aware_inputs(maps, sounding)
    silent = ~sounding
    n_silent = silent.sum(1)
    if (n_silent == 0).any():
        raise ValueError(f"items {torch.nonzero(n_silent == 0).flatten().tolist()} have no silent or absent class")
    below = (maps < tau).flatten(2).float().mean(-1)  # (B, K): sum(s^k < tau) / A
    return (below * silent).sum(1) / n_silent


def class_aware_scores(maps: Tensor, gt_masks: Tensor, sounding: Tensor, tau: float | None = None) -> dict[str, float]:
    """DSOL Table 2 summary: ``{"ciou30": fraction with CIoU >= 0.3, "auc", "mean_ciou", "nsa", "tau"}``.

    Shapes as in :func:`class_aware_ciou`; the maps are first resized to the masks' resolution, where both CIoU and
    NSA are measured. ``tau=None`` uses 10% of the maximum over all the given maps (DSOL's appendix; the released
    evaluation script instead cuts each map at half its own maximum for CIoU and at 0.2 for NSA).
    """
    maps, sounding = _class_aware_inputs(maps, sounding)
    maps = _resize_like(maps, tuple(torch.as_tensor(gt_masks).shape[-2:]))
    tau = dsol_threshold(maps) if tau is None else float(tau)
    values = class_aware_ciou(maps, gt_masks, sounding, tau).double()
    return {
        "ciou30": float(success_rate(values, (0.3,))[0]),
        "auc": success_auc(values),
        "mean_ciou": float(values.mean()),
        "nsa": float(nsa(maps, sounding, tau).double().mean()),
        "tau": tau,
    }


# ----------------------------------------------------------------------------------------------------------------------
# Retrieval: nDCG@k with ontology relevance (Objects that Sound, Appendix A.2)
# ----------------------------------------------------------------------------------------------------------------------


def _multi_hot(labels: Tensor, k: int, name: str) -> Tensor:
    """``(N,)`` class ids (``-1``: no label) or ``(N, K)`` bool labels -> ``(N, K)`` bool multi-hot."""
    labels = _tensor(labels, name)
    if labels.dtype == torch.bool:
        if labels.ndim != 2 or labels.shape[1] != k:
            raise ValueError(f"{name}: a bool label matrix must have shape (N, {k}); got {tuple(labels.shape)}")
        return labels
    if labels.ndim != 1:
        raise ValueError(f"{name}: integer class ids must be 1-D (N,); got shape {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < -1 or labels.max() >= k):
        raise ValueError(f"{name}: class ids must lie in 0..{k - 1} (or -1 for none); "
                         f"got {int(labels.min())}..{int(labels.max())}")
    labels = labels.long()
    # one extra column takes the unlabelled items (-1), then is dropped
    return F.one_hot(torch.where(labels < 0, k, labels), k + 1)[:, :k].bool()


def label_relevance(query_labels: Tensor, db_labels: Tensor, class_distance: Tensor, c: float = 20.0) -> Tensor:
    """Video relevance of Objects that Sound (App. A.2): the maximum over label pairs of ``c - d``, never below 0.

    Args:
        query_labels: ``(Q,)`` class ids (``-1``: unlabelled) or ``(Q, K)`` bool multi-hot labels.
        db_labels: ``(D,)`` or ``(D, K)``, same convention.
        class_distance: ``(K, K)`` tree distances between classes (shortest path in the ontology).
        c: the offset ``C`` (20 in the paper, the longest distance in the AudioSet ontology).

    Returns:
        ``(Q, D)`` float32 relevance; items without labels get 0.
    """
    dist = _tensor(class_distance, "class_distance").to(torch.float32)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"class_distance must be a square (K, K) matrix; got {tuple(dist.shape)}")
    k = dist.shape[0]
    q = _multi_hot(query_labels, k, "query_labels")
    d = _multi_hot(db_labels, k, "db_labels")
    score = (c - dist).clamp_min(0.0)  # class relevance r = C - d
    # best[q, l] = max over the query's classes of r(class, l); then max over the item's classes l. Items without a
    # label contribute the empty maximum, which becomes 0 (scores are >= 0, so the floor changes nothing else).
    best = torch.where(q[:, :, None], score[None], 0.0).amax(1)  # (Q, K)
    return torch.where(d[None, :, :], best[:, None, :], 0.0).amax(-1)


def _discounts(k: int) -> Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))  # DCG discount 1 / log2(rank + 1)


def _relevance_rows(relevance: Tensor | Callable[[Tensor], Tensor], rows: Tensor, n_db: int) -> Tensor:
    rel = relevance(rows) if callable(relevance) else relevance[rows]
    rel = _tensor(rel, "relevance").to(torch.float64)
    if rel.shape != (rows.numel(), n_db):
        raise ValueError(f"relevance rows must have shape ({rows.numel()}, {n_db}); got {tuple(rel.shape)}")
    if (rel < 0).any():
        raise ValueError("relevance must be non-negative (offset the tree distance by C)")
    return rel


def ndcg_per_query(
    query_emb: Tensor,
    db_emb: Tensor,
    relevance: Tensor | Callable[[Tensor], Tensor],
    k: int = 30,
    exclude_self: bool = False,
    l2_normalize: bool = False,
    chunk: int = 1024,
) -> Tensor:
    """nDCG@k of every query when the database is ranked by increasing Euclidean distance.

    ``DCG@k = sum_{i <= k} rel_i / log2(i + 1)`` (linear gain, as ``sklearn.metrics.ndcg_score``), divided by the DCG
    of the ideal top-k ordering of the same database; a query whose candidates all have relevance 0 scores 0. The
    paper does not print its DCG formula, so compare absolute numbers only beside :func:`random_ndcg_at_k`.

    Args:
        query_emb: ``(Q, E)`` query embeddings (either modality).
        db_emb: ``(D, E)`` database embeddings (the same or the other modality).
        relevance: ``(Q, D)`` non-negative relevance, or a function mapping query indices ``(q,)`` to ``(q, D)`` rows
            (e.g. built on :func:`label_relevance`), evaluated chunk by chunk.
        k: list length (30 in the paper); at most the number of candidates is used.
        exclude_self: the database is the query set itself (``Q == D``, same modality): query ``i`` never retrieves
            item ``i``, and the ideal list excludes it too.
        l2_normalize: L2-normalise both embeddings first (the paper does so for all baselines).
        chunk: queries per chunk (bounds memory to ``chunk x D``).

    Returns:
        ``(Q,)`` float64 nDCG@k per query, in [0, 1]. Distance ties are broken by database order.
    """
    q_emb = _tensor(query_emb, "query_emb").to(torch.float64)
    d_emb = _tensor(db_emb, "db_emb").to(torch.float64)
    if q_emb.ndim != 2 or d_emb.ndim != 2 or q_emb.shape[1] != d_emb.shape[1]:
        raise ValueError(f"embeddings must be (Q, E) and (D, E); got {tuple(q_emb.shape)} and {tuple(d_emb.shape)}")
    n_q, n_db = q_emb.shape[0], d_emb.shape[0]
    if exclude_self and n_q != n_db:
        raise ValueError("exclude_self needs the query set to be the database (Q == D)")
    if l2_normalize:
        q_emb, d_emb = F.normalize(q_emb, dim=1), F.normalize(d_emb, dim=1)
    k = min(k, n_db - int(exclude_self))
    if k < 1:
        raise ValueError("the database has no candidate to rank")
    if not callable(relevance):
        relevance = _tensor(relevance, "relevance")
    disc = _discounts(k)
    out = []
    for start in range(0, n_q, chunk):  # chunks of queries bound memory; the math inside is batched
        rows = torch.arange(start, min(start + chunk, n_q))
        rel = _relevance_rows(relevance, rows, n_db)
        dist = torch.cdist(q_emb[rows], d_emb)
        ideal_rel = rel
        if exclude_self:
            dist[torch.arange(rows.numel()), rows] = math.inf
            ideal_rel = rel.clone()
            ideal_rel[torch.arange(rows.numel()), rows] = -math.inf
        order = dist.sort(dim=1, stable=True).indices[:, :k]
        dcg = (rel.gather(1, order) * disc).sum(1)
        idcg = (ideal_rel.topk(k, dim=1).values * disc).sum(1)
        out.append(torch.where(idcg > 0, dcg / idcg.clamp_min(1e-300), 0.0))
    return torch.cat(out)


def ndcg_at_k(
    query_emb: Tensor,
    db_emb: Tensor,
    relevance: Tensor | Callable[[Tensor], Tensor],
    k: int = 30,
    exclude_self: bool = False,
    l2_normalize: bool = False,
) -> float:
    """Mean nDCG@k over queries (Objects that Sound, Table 1); arguments as in :func:`ndcg_per_query`."""
    return float(ndcg_per_query(query_emb, db_emb, relevance, k, exclude_self, l2_normalize).mean())


def random_ndcg_at_k(relevance: Tensor, k: int = 30, exclude_self: bool = False) -> float:
    """Expected nDCG@k of a uniformly random ranking, computed exactly (the paper's "random chance" row).

    Under a random permutation every rank holds a uniformly drawn candidate, so the expected DCG@k of a query is the
    mean relevance of its candidates times ``sum_{i <= k} 1 / log2(i + 1)``; divided by the (fixed) ideal DCG.

    Args:
        relevance: ``(Q, D)`` non-negative relevance.
        k: list length.
        exclude_self: as in :func:`ndcg_per_query` (``Q == D``; the diagonal is not a candidate).
    """
    rel = _tensor(relevance, "relevance").to(torch.float64)
    if rel.ndim != 2:
        raise ValueError(f"relevance must be (Q, D); got {tuple(rel.shape)}")
    if (rel < 0).any():
        raise ValueError("relevance must be non-negative")
    n_q, n_db = rel.shape
    if exclude_self and n_q != n_db:
        raise ValueError("exclude_self needs a square relevance matrix")
    k = min(k, n_db - int(exclude_self))
    if k < 1:
        raise ValueError("the database has no candidate to rank")
    disc = _discounts(k)
    if exclude_self:
        eye = torch.eye(n_q, dtype=torch.bool)
        mean_rel = rel.masked_fill(eye, 0.0).sum(1) / (n_db - 1)
        ideal = rel.masked_fill(eye, -math.inf).topk(k, dim=1).values
    else:
        mean_rel = rel.mean(1)
        ideal = rel.topk(k, dim=1).values
    idcg = (ideal * disc).sum(1)
    expected = torch.where(idcg > 0, mean_rel * disc.sum() / idcg.clamp_min(1e-300), 0.0)
    return float(expected.mean())


# ----------------------------------------------------------------------------------------------------------------------
# Clustering quality: NMI of k-means clusters (L3-Net, Table 4; DSOL, Table 6)
# ----------------------------------------------------------------------------------------------------------------------


def normalized_mutual_info(labels_true: Tensor, labels_pred: Tensor) -> float:
    """Normalized mutual information ``I(T; P) / ((H(T) + H(P)) / 2)`` (natural logs; sklearn's arithmetic mean).

    Two constant labelings count as a perfect match (1.0); zero mutual information gives 0.0.

    Args:
        labels_true: ``(N,)`` integer class labels.
        labels_pred: ``(N,)`` integer cluster ids.
    """
    a = _tensor(labels_true, "labels_true")
    b = _tensor(labels_pred, "labels_pred")
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"labels must be two 1-D tensors of equal length; got {tuple(a.shape)} and {tuple(b.shape)}")
    _, ia = torch.unique(a, return_inverse=True)
    _, ib = torch.unique(b, return_inverse=True)
    na, nb = int(ia.max()) + 1 if a.numel() else 0, int(ib.max()) + 1 if b.numel() else 0
    if na == nb and na <= 1:
        return 1.0
    joint = torch.bincount(ia * nb + ib, minlength=na * nb).reshape(na, nb).double() / a.numel()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * (joint[nz].log() - (pa[:, None] * pb[None, :])[nz].log())).sum().clamp_min(0.0))
    if mi == 0.0:
        return 0.0
    h_a = float(-(pa * pa.log()).sum())
    h_b = float(-(pb * pb.log()).sum())
    return mi / max((h_a + h_b) / 2, np.finfo(np.float64).eps)


def kmeans_nmi(features: Tensor, labels: Tensor, k: int, seed: int = 0, n_init: int = 10) -> float:
    """NMI between k-means clusters of ``features`` and the true classes (L3-Net: 64 clusters).

    Clustering uses ``sklearn.cluster.KMeans`` (k-means++, ``n_init`` restarts, fixed ``seed``).

    Args:
        features: ``(N, E)`` embeddings (any device; copied to the CPU).
        labels: ``(N,)`` integer classes.
        k: number of clusters.
    """
    from sklearn.cluster import KMeans

    x = _tensor(features, "features").detach().to("cpu", torch.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, E); got {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must lie in 1..N={x.shape[0]}; got {k}")
    clusters = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x.numpy())
    return normalized_mutual_info(torch.as_tensor(labels).cpu(), torch.from_numpy(clusters))


def random_assignment_nmi(labels: Tensor, k: int, seed: int = 0, trials: int = 10) -> float:
    """Mean NMI of assigning every item to one of ``k`` clusters uniformly at random (L3-Net's "random assignments"
    row), over ``trials`` deterministic draws from ``seed``."""
    labels = _tensor(labels, "labels").cpu()
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, k, (trials, labels.numel()), generator=gen)
    return float(np.mean([normalized_mutual_info(labels, d) for d in draws]))


# ----------------------------------------------------------------------------------------------------------------------
# Separation: BSS Eval v3 (mir_eval.separation.bss_eval_sources), batched
# ----------------------------------------------------------------------------------------------------------------------


def _safe_db(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den == 0, math.inf, 10 * torch.log10(num / den))


def bss_eval_sources(
    est: Tensor, ref: Tensor, compute_permutation: bool = True, filter_length: int = 512
) -> dict[str, Tensor]:
    """SDR, SIR and SAR of BSS Eval v3 for a batch of mixtures, as ``mir_eval.separation.bss_eval_sources``.

    Each estimate is decomposed by least-squares projections onto delayed copies (0 ... ``filter_length`` - 1 samples)
    of its reference source and of all reference sources: ``s_target = P_j est``, ``e_interf = P_all est - P_j est``,
    ``e_artif = est - P_all est``. Then ``SDR = 10 log10 |s_target|^2 / |e_interf + e_artif|^2``,
    ``SIR = 10 log10 |s_target|^2 / |e_interf|^2``, ``SAR = 10 log10 |s_target + e_interf|^2 / |e_artif|^2``.
    The Gram matrices of the delayed references are built from FFT cross-correlations, as in mir_eval.

    Args:
        est: ``(B, S, N)`` or ``(S, N)`` estimated sources.
        ref: same shape, reference sources; no source may be all zeros (the decomposition is undefined).
        compute_permutation: match estimates to references by the permutation with the best mean SIR.
        filter_length: distortion filter length (512 in BSS Eval v3).

    Returns:
        ``{"sdr", "sir", "sar"}``: ``(B, S)`` float64 in dB, ordered by reference source; ``"perm"``: ``(B, S)``
        index of the estimate matched to each reference. Unbatched input gives unbatched output.
    """
    e = _tensor(est, "est").to(torch.float64)
    r = _tensor(ref, "ref").to(torch.float64)
    if e.shape != r.shape or e.ndim not in (2, 3):
        raise ValueError(f"est and ref must share shape (B, S, N) or (S, N); got {tuple(e.shape)}, {tuple(r.shape)}")
    unbatched = e.ndim == 2
    if unbatched:
        e, r = e[None], r[None]
    for name, x in (("ref", r), ("est", e)):
        silent = (x == 0).all(-1)
        if silent.any():
            raise ValueError(f"{name} has all-zero sources at (batch, source) {torch.nonzero(silent).tolist()}")
    n_batch, n_src, n = e.shape
    flen = filter_length
    length = n + flen - 1
    n_fft = 2 ** math.ceil(math.log2(length))
    ref_f = torch.fft.rfft(r, n_fft)  # (B, S, F)
    est_f = torch.fft.rfft(e, n_fft)
    lags = torch.arange(flen)
    # Gram matrix of delayed references: G[(i, a), (j, b)] = sum_t r_i(t - a) r_j(t - b) = xcorr_ij[b - a]
    xcorr = torch.fft.irfft(ref_f[:, :, None] * ref_f[:, None].conj(), n_fft)  # (B, S, S, n_fft)
    lag_index = (lags[None, :] - lags[:, None]) % n_fft  # (a, b) -> b - a
    blocks = xcorr[..., lag_index]  # (B, S_i, S_j, flen_a, flen_b)
    gram_all = blocks.permute(0, 1, 3, 2, 4).reshape(n_batch, n_src * flen, n_src * flen)
    gram_own = blocks.diagonal(dim1=1, dim2=2).permute(0, 3, 1, 2)  # (B, S, flen, flen)
    # D[e][(i, a)] = sum_t r_i(t - a) est_e(t) = xcorr(r_i, est_e)[-a]
    xcorr_est = torch.fft.irfft(ref_f[:, :, None] * est_f[:, None].conj(), n_fft)  # (B, S_ref, S_est, n_fft)
    proj_in = xcorr_est[..., (-lags) % n_fft].permute(0, 2, 1, 3)  # (B, S_est, S_ref, flen)
    coef_all = _solve(gram_all[:, None], proj_in.reshape(n_batch, n_src, n_src * flen))
    coef_own = _solve(gram_own[:, None], proj_in)  # (B, S_est, S_ref, flen)
    coef_all_f = torch.fft.rfft(coef_all.reshape(n_batch, n_src, n_src, flen), n_fft)  # (B, S_est, S_ref, F)
    coef_own_f = torch.fft.rfft(coef_own, n_fft)
    proj_all = torch.fft.irfft((coef_all_f * ref_f[:, None]).sum(2), n_fft)[..., :length]  # (B, S_est, L)
    proj_own = torch.fft.irfft(coef_own_f * ref_f[:, None], n_fft)[..., :length]  # (B, S_est, S_ref, L)
    est_pad = F.pad(e, (0, flen - 1))
    e_interf = proj_all[:, :, None] - proj_own
    e_artif = (est_pad - proj_all)[:, :, None]
    target = proj_own.square().sum(-1)  # |s_target|^2 with s_target = s_true + e_spat = P_j est
    sdr = _safe_db(target, (e_interf + e_artif).square().sum(-1))  # (B, S_est, S_ref)
    sir = _safe_db(target, e_interf.square().sum(-1))
    sar = _safe_db((proj_own + e_interf).square().sum(-1), e_artif.square().sum(-1))
    refs = torch.arange(n_src)
    if compute_permutation:
        perms = torch.tensor(list(itertools.permutations(range(n_src))))  # (P, S), mir_eval's order
        mean_sir = sir[:, perms, refs].mean(-1)  # (B, P): estimate perm[j] matched to reference j
        perm = perms[mean_sir.argmax(1)]  # (B, S), first best as np.argmax
    else:
        perm = refs.expand(n_batch, n_src)
    batch = torch.arange(n_batch)[:, None]
    out = {name: m[batch, perm, refs] for name, m in (("sdr", sdr), ("sir", sir), ("sar", sar))}
    out["perm"] = perm.clone()
    return {key: v[0] for key, v in out.items()} if unbatched else out


def _solve(a: Tensor, b: Tensor) -> Tensor:
    """Solve ``a x = b`` for symmetric positive definite Gram matrices ``a`` and vectors ``b`` (``(..., M)``), batch
    shapes broadcast; where ``a`` is singular (a silent source), the least-norm solution.

    Cholesky rather than LU: the Gram matrices are positive (semi-)definite, and batched LU in torch's MKL build
    returns invalid pivots once ``torch.set_num_threads`` has been called (seen with torch 2.9, 2 threads)."""
    chol, info = torch.linalg.cholesky_ex(a)  # one factorisation per Gram matrix, shared by all estimates
    x = torch.cholesky_solve(b[..., None], chol)
    if (info != 0).any():
        x = torch.where((info != 0)[..., None, None], torch.linalg.pinv(a) @ b[..., None], x)
    return x[..., 0]


def bss_eval(est: Tensor, ref: Tensor, compute_permutation: bool = True) -> dict[str, float]:
    """Mean SDR, SIR and SAR in dB over all items and sources (see :func:`bss_eval_sources` for shapes)."""
    scores = bss_eval_sources(est, ref, compute_permutation=compute_permutation)
    return {name: float(scores[name].mean()) for name in ("sdr", "sir", "sar")}


# ----------------------------------------------------------------------------------------------------------------------
# Counting sound sources with a Poisson rate (CAVL, Eq. 6 and Table 2)
# ----------------------------------------------------------------------------------------------------------------------


def poisson_count_predict(lam: Tensor, max_count: int = 5, min_count: int = 1) -> Tensor:
    """Most probable count ``argmax_y P(y; lam) = lam^y e^-lam / y!`` over ``y = min_count ... max_count``.

    Args:
        lam: ``(B,)`` predicted Poisson rates, ``>= 0``.

    Returns:
        ``(B,)`` int64 counts. Where two counts are equally likely (integer ``lam``), the smaller is taken.
    """
    lam = _tensor(lam, "lam").to(torch.float64).flatten()
    if (lam < 0).any():
        raise ValueError("lam must be non-negative (a Poisson rate)")
    y = torch.arange(min_count, max_count + 1, dtype=torch.float64)
    log_p = y * torch.log(lam[:, None]) - lam[:, None] - torch.lgamma(y + 1)  # log P(y; lam), Eq. 6
    log_p = torch.nan_to_num(log_p, nan=0.0)  # lam = 0, y = 0: 0 * log 0 = 0, P(0; 0) = 1
    # snap values equal up to rounding (lam integer: P(lam - 1) = P(lam)) so ties go to the smaller count
    best = log_p.amax(1, keepdim=True)
    winner = (log_p >= best - 1e-12 * best.abs().clamp_min(1.0)).double().argmax(1)
    return winner + min_count


def _check_counts(y: Tensor, n: int, min_count: int, max_count: int) -> Tensor:
    y = _tensor(y, "y").long().flatten()
    if y.numel() != n or n == 0:
        raise ValueError(f"y must hold one true count per rate ({n}); got {y.numel()}")
    if (y < min_count).any() or (y > max_count).any():
        raise ValueError(f"true counts must lie in {min_count}..{max_count}")
    return y


def poisson_count_accuracy(lam: Tensor, y: Tensor, max_count: int = 5, min_count: int = 1) -> float:
    """Fraction of items whose most probable count equals the true count ``y`` (``(B,)`` ints in 1..5)."""
    pred = poisson_count_predict(lam, max_count, min_count)
    return float((pred == _check_counts(y, pred.numel(), min_count, max_count)).double().mean())


def poisson_count_mae(lam: Tensor, y: Tensor, max_count: int = 5, min_count: int = 1) -> float:
    """Mean absolute error between the most probable count and the true count."""
    pred = poisson_count_predict(lam, max_count, min_count)
    return float((pred - _check_counts(y, pred.numel(), min_count, max_count)).abs().double().mean())


def count_chance(y: Tensor, max_count: int = 5, min_count: int = 1) -> dict[str, float]:
    """Expected accuracy and MAE of guessing a count uniformly in ``min_count..max_count`` (CAVL's "Random" row).

    Args:
        y: ``(B,)`` true counts.

    Returns:
        ``{"accuracy": 1 / n_counts, "mae": mean over items of the mean |guess - y|}``, exact expectations.
    """
    y = _tensor(y, "y").long().flatten()
    y = _check_counts(y, y.numel(), min_count, max_count)
    guesses = torch.arange(min_count, max_count + 1)
    mae = (guesses[None, :] - y[:, None]).abs().double().mean()
    return {"accuracy": 1.0 / guesses.numel(), "mae": float(mae)}


def class_aware_ciou_relative(maps: Tensor, gt_masks: Tensor, sounding: Tensor, fraction: float = 0.2) -> Tensor:
    """DSOL class-aware IoU per item as the authors' released evaluation computes it: each sounding class's map is
    binarised strictly above ``fraction`` times **its own** maximum (not at one threshold for all maps, as
    :func:`class_aware_ciou`), then scored by the cIoU formula (the IoU for binary boxes) and averaged over the
    sounding classes (Eq. 9, left).

    Args:
        maps: ``(B, K, h, w)`` class-aware maps (resized bilinearly to ``(H, W)``).
        gt_masks: ``(B, K, H, W)`` binary masks of each class's boxes.
        sounding: ``(B, K)`` bool, ``delta_k``.
        fraction: the relative cut (0.2 per the project's reference; a map whose maximum is <= 0 predicts nothing).

    Returns:
        ``(B,)`` float32 CIoU per item.
    """
    pred, g, sounding = _class_aware_targets(maps, gt_masks, sounding)
    peak = pred.flatten(2).amax(-1)[..., None, None]  # (B, K, 1, 1)
    return _mean_sounding_iou((pred > fraction * peak) & (peak > 0), g, sounding)  # per-map cuts
