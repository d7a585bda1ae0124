"""Tests of avlib.metrics against independent references: sklearn, mir_eval, scipy, hand-computed cases and naive loops
written here."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import tempfile

import mir_eval
import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import torch
from sklearn.cluster import KMeans

from avlib import metrics as M

# ----------------------------------------------------------------------------------------------------------------------
# AVC accuracy
# ----------------------------------------------------------------------------------------------------------------------


def test_avc_accuracy_binary_and_two_class_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=gen)
    labels = torch.randint(0, 2, (50,), generator=gen)
    expected = sum(int((float(s) > 0) == bool(y)) for s, y in zip(logits, labels, strict=True)) / 50
    assert M.avc_accuracy(logits, labels) == pytest.approx(expected)
    assert M.avc_accuracy(logits[:, None], labels) == pytest.approx(expected)
    two = torch.randn(50, 2, generator=gen)
    expected2 = sum(int(int(row.argmax()) == int(y)) for row, y in zip(two, labels, strict=True)) / 50
    assert M.avc_accuracy(two, labels) == pytest.approx(expected2)
    with pytest.raises(ValueError, match="labels"):
        M.avc_accuracy(logits, labels[:10])


# ----------------------------------------------------------------------------------------------------------------------
# cIoU: hand-computed cases, consensus rule, a naive re-implementation of the public evaluator
# ----------------------------------------------------------------------------------------------------------------------


def test_boxes_to_masks_matches_slicing_and_pixel_centres():
    box = torch.tensor([1.0, 0.0, 3.0, 2.0])  # x1, y1, x2, y2
    expected = np.zeros((4, 5), np.float32)
    expected[0:2, 1:3] = 1
    np.testing.assert_array_equal(M.boxes_to_masks(box, 4, 5).numpy(), expected)
    # fractional box: pixel centres 1.5 and 2.5 lie in [1.2, 2.6), 0.5 and 3.5 do not
    frac = M.boxes_to_masks(torch.tensor([1.2, 1.2, 2.6, 2.6]), 4, 4)
    expected = np.zeros((4, 4), np.float32)
    expected[1:3, 1:3] = 1
    np.testing.assert_array_equal(frac.numpy(), expected)
    assert M.boxes_to_masks(torch.zeros(2, 3, 4), 4, 4).sum() == 0  # padding boxes are empty


def _hand_case():
    """Three items on a 4x4 grid; expected cIoU worked out by hand in the comments."""
    ann = torch.zeros(3, 3, 4)  # (B, A, 4) xyxy, zero boxes = missing annotators
    ann[0, 0] = torch.tensor([0, 0, 2, 2])  # rows 0-1, cols 0-1
    ann[0, 1] = torch.tensor([0, 0, 3, 2])  # rows 0-1, cols 0-2
    ann[1, 0] = torch.tensor([1, 1, 3, 4])  # a single annotator: rows 1-3, cols 1-2 (6 px), counting 0.5
    ann[2, 0] = torch.tensor([0, 0, 4, 4])  # whole image (one box: 0.5 everywhere)
    masks = M.boxes_to_masks(ann, 4, 4)  # (3, 3, 4, 4)
    ramp = (15 - torch.arange(16.0)).reshape(4, 4)  # sorted, index 8 is the value 7: P = 15..8, row 0 + row 1 cols 0-2
    pred = torch.stack([ramp, ramp, torch.full((4, 4), 7.0)])  # item 2: constant map, predicts nothing
    # item 0: G = 1 on rows 0-1 cols 0-1 (two annotators agree), 0.5 on rows 0-1 col 2; sum G = 5.
    #   P (7 px): sum P*G = 2.5 + 2.5 = 5, false positives (G = 0) = row 0 col 3 = 1 -> 5 / 6
    # item 1: G = 0.5 on its 6 px, sum G = 3; P*G = row 1 cols 1-2 = 2 * 0.5 = 1, false positives = 5 -> 1 / 8
    # item 2: empty prediction -> 0
    return pred, masks, torch.tensor([5 / 6, 1 / 8, 0.0])


def test_consensus_map_hand_case():
    _, masks, _ = _hand_case()
    g = M.consensus_map(masks)
    expected0 = torch.zeros(4, 4)
    expected0[0:2, 0:2] = 1.0
    expected0[0:2, 2] = 0.5
    torch.testing.assert_close(g[0], expected0)
    torch.testing.assert_close(g[1], 0.5 * masks[1, 0])  # one annotator counts half, as the public evaluator
    # three annotators on one pixel still count 1 (clipped); one of three counts 0.5
    three = torch.zeros(1, 3, 2, 2)
    three[0, :, 0, 0] = 1
    three[0, 0, 1, 1] = 1
    torch.testing.assert_close(M.consensus_map(three)[0], torch.tensor([[1.0, 0.0], [0.0, 0.5]]))


def test_ciou_hand_case_scores_and_auc():
    pred, masks, expected = _hand_case()
    values = M.ciou(pred, masks)
    torch.testing.assert_close(values, expected)
    assert torch.isfinite(values).all()
    scores = M.localization_scores(pred, masks)
    assert scores["ciou50"] == pytest.approx(1 / 3)
    # success rates: t = 0 -> 3/3; t = 0.05, 0.1 -> 2/3; t = 0.15..0.8 -> 1/3; t >= 0.85 -> 0.
    # trapezoids of width 0.05: (1 + 2/3)/2 + 2/3 + (2/3 + 1/3)/2 + 13 * 1/3 + (1/3 + 0)/2 = 39/6
    assert scores["auc"] == pytest.approx(0.05 * 39 / 6)
    assert scores["mean_ciou"] == pytest.approx(float(expected.mean()))
    rates = [float((expected >= 0.05 * i).double().mean()) for i in range(21)]
    assert scores["auc"] == pytest.approx(sklearn.metrics.auc([0.05 * i for i in range(21)], rates))
    assert M.ciou_at(pred, masks, 0.1) == pytest.approx(2 / 3)
    assert M.ciou_auc(pred, masks) == pytest.approx(scores["auc"])


def _naive_evaluator_ciou(heat: np.ndarray, boxes: list[list[tuple[int, int, int, int]]]) -> list[float]:
    """The public Flickr-SoundNet evaluator as REFERENCE.md §3 states it, item by item: box maps summed, halved and
    clipped (one box too); the normalised prediction kept strictly above its value at index H * W // 2 once sorted."""
    out = []
    for item, item_boxes in zip(heat, boxes, strict=True):
        gt = np.zeros(item.shape)
        for x1, y1, x2, y2 in item_boxes:
            gt[y1:y2, x1:x2] += 1
        gt = np.minimum(gt / 2, 1)
        p = (item - item.min()) / (item.max() - item.min())
        binary = (p > np.sort(p.ravel())[p.size // 2]).astype(np.float64)
        out.append(np.sum(binary * gt) / (np.sum(gt) + np.sum(binary * (gt == 0))))
    return out


def test_ciou_matches_naive_evaluator_on_random_maps():
    rng = np.random.default_rng(1)
    heat = rng.standard_normal((6, 224, 224)).astype(np.float32)
    n_ann = [3, 3, 1, 2, 3, 1]
    boxes, padded = [], torch.zeros(6, 3, 4)
    for b, n in enumerate(n_ann):
        item = []
        for a in range(n):
            x1, y1 = rng.integers(0, 150, 2)
            w, h = rng.integers(20, 74, 2)
            item.append((int(x1), int(y1), int(x1 + w), int(y1 + h)))
            padded[b, a] = torch.tensor(item[-1], dtype=torch.float32)
        boxes.append(item)
    ours = M.ciou(torch.from_numpy(heat), M.boxes_to_masks(padded, 224, 224))
    np.testing.assert_allclose(ours.numpy(), _naive_evaluator_ciou(heat, boxes), rtol=1e-6)


def test_binarize_keeps_top_fraction_and_threshold():
    gen = torch.Generator().manual_seed(2)
    pred = torch.randn(3, 10, 10, generator=gen)
    for frac, n_on in ((0.5, 49), (0.25, 24), (1.0, 100), (0.013, 1)):  # strictly above the value at int(100 (1 - f))
        mask = M.binarize_maps(pred, top_fraction=frac).numpy()
        for b in range(3):  # the n_on largest values of each map, found by a full sort
            expected = np.zeros(100, bool)
            expected[np.argsort(pred[b].numpy().ravel())[100 - n_on :]] = True
            np.testing.assert_array_equal(mask[b].ravel(), expected)
    norm = (pred - pred.amin((1, 2), keepdim=True)) / (
        pred.amax((1, 2), keepdim=True) - pred.amin((1, 2), keepdim=True)
    )
    torch.testing.assert_close(M.binarize_maps(pred, threshold=0.7), norm >= 0.7)
    assert not M.binarize_maps(torch.zeros(2, 5, 5)).any()  # constant: no evidence, empty prediction
    with pytest.raises(ValueError, match="top_fraction"):
        M.binarize_maps(pred, top_fraction=0.0)


def test_ciou_resizes_low_resolution_maps_and_rejects_bad_input():
    pred = torch.zeros(1, 2, 2)
    pred[0, 0, 0] = 1.0  # top-left cell hot
    gt = torch.zeros(1, 8, 8)
    gt[0, :4, :4] = 1
    # bilinear upsampling keeps the hot corner as the top half; the exact value is the naive evaluator's
    up = torch.nn.functional.interpolate(pred[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    expected = _naive_evaluator_ciou(up.numpy(), [[(0, 0, 4, 4)]])[0]
    assert float(M.ciou(pred, gt[:, None])[0]) == pytest.approx(expected)  # one annotator box, (B, A, H, W)
    with pytest.raises(ValueError, match="no annotated pixel"):
        M.ciou(pred, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        M.ciou(torch.full((1, 8, 8), float("nan")), gt)


def test_baselines_hand_case_and_area():
    _, masks, _ = _hand_case()
    center = M.center_box_map(1, 4, 4)  # side sqrt(0.5) * 4 = 2.83: pixel centres 1.5 and 2.5 inside
    expected = torch.zeros(1, 4, 4)
    expected[0, 1:3, 1:3] = 1
    torch.testing.assert_close(center, expected)
    # whole image: item 0: 5 / (5 + 10 pixels outside G) = 1/3; item 1: 3 / (3 + 10) ; item 2: 8 / 8
    whole = M.whole_image_baseline(masks)
    assert whole["mean_ciou"] == pytest.approx((1 / 3 + 3 / 13 + 1) / 3)
    assert whole["ciou50"] == pytest.approx(1 / 3)
    # centred box rows 1-2, cols 1-2: item 0: P*G = G(1,1) + G(1,2) = 1.5, false positives (2,1), (2,2) -> 1.5 / 7;
    # item 1: inside G -> 4 * 0.5 / 3; item 2: 2 / 8
    center_scores = M.center_box_baseline(masks)
    assert center_scores["mean_ciou"] == pytest.approx((1.5 / 7 + 2 / 3 + 2 / 8) / 3)
    assert float(M.center_box_map(1, 224, 224).mean()) == pytest.approx(0.5, abs=0.01)


# ----------------------------------------------------------------------------------------------------------------------
# DSOL: single-source IoU, class-aware CIoU and NSA
# ----------------------------------------------------------------------------------------------------------------------


def test_dsol_iou_hand_case():
    pred = torch.zeros(3, 4, 4)
    pred[0, 0, :] = torch.tensor([10.0, 5.0, 1.0, 0.5])  # >= 0.1 * 10 = 1: three pixels
    gt = torch.zeros(3, 4, 4)
    gt[0, 0:2, 0:2] = 1  # IoU = |{(0,0),(0,1)}| / |{(0,0),(0,1),(0,2),(1,0),(1,1)}| = 2 / 5
    pred[1] = pred[0] * 7  # scale invariant
    gt[1] = gt[0]
    gt[2, 1:3, 1:3] = 1  # item 2: all-zero map predicts nothing -> 0
    values = M.dsol_iou(pred, gt)
    torch.testing.assert_close(values, torch.tensor([0.4, 0.4, 0.0]))
    summary = M.dsol_iou_auc(pred, gt)
    assert summary["iou50"] == 0.0
    assert summary["mean_iou"] == pytest.approx(0.8 / 3)
    with pytest.raises(ValueError, match="non-negative"):
        M.dsol_iou(-pred, gt)


def _class_aware_hand_case():
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 0, 0:2, 0:2] = 0.9  # class 0 sounding, predicted on its box plus one extra pixel
    maps[0, 0, 3, 3] = 0.5
    maps[0, 1, 2:4, 0:2] = 0.8  # class 1 sounding, half of its box
    maps[0, 2, 0, :] = 0.6  # class 2 silent: 4 of 16 pixels above tau
    gt = torch.zeros(1, 3, 4, 4)
    gt[0, 0, 0:2, 0:2] = 1
    gt[0, 1, 2:4, 0:4] = 1
    sounding = torch.tensor([[True, True, False]])
    # tau = 0.3: IoU_0 = 4 / 5, IoU_1 = 4 / 8 -> CIoU = 0.65; NSA = 12 / 16 = 0.75
    return maps, gt, sounding


def test_class_aware_ciou_and_nsa_hand_case():
    maps, gt, sounding = _class_aware_hand_case()
    torch.testing.assert_close(M.class_aware_ciou(maps, gt, sounding, tau=0.3), torch.tensor([0.65]))
    torch.testing.assert_close(M.nsa(maps, sounding, tau=0.3), torch.tensor([0.75]))
    # default tau = 10% of the largest value over all maps = 0.09: same binarisation here
    scores = M.class_aware_scores(maps, gt, sounding)
    assert scores["tau"] == pytest.approx(0.09)
    assert scores["mean_ciou"] == pytest.approx(0.65)
    assert scores["nsa"] == pytest.approx(0.75)
    assert scores["ciou30"] == 1.0
    with pytest.raises(ValueError, match="no silent"):
        M.nsa(maps, torch.ones(1, 3, dtype=torch.bool), tau=0.3)
    with pytest.raises(ValueError, match="no sounding"):
        M.class_aware_ciou(maps, gt, torch.zeros(1, 3, dtype=torch.bool), tau=0.3)


def test_class_aware_matches_naive_loop():
    gen = torch.Generator().manual_seed(3)
    maps = torch.rand(5, 4, 6, 6, generator=gen)
    gt = (torch.rand(5, 4, 6, 6, generator=gen) > 0.6).float()
    sounding = torch.rand(5, 4, generator=gen) > 0.5
    sounding[:, 0], sounding[:, 3] = True, False
    tau = 0.4
    ciou_ref, nsa_ref = [], []
    for b in range(5):
        ious, silent = [], []
        for k in range(4):
            p = maps[b, k].numpy() >= tau
            g = gt[b, k].numpy() > 0
            if sounding[b, k]:
                ious.append((p & g).sum() / (p | g).sum())
            else:
                silent.append((maps[b, k].numpy() < tau).mean())
        ciou_ref.append(np.mean(ious))
        nsa_ref.append(np.mean(silent))
    np.testing.assert_allclose(M.class_aware_ciou(maps, gt, sounding, tau).numpy(), ciou_ref, rtol=1e-6)
    np.testing.assert_allclose(M.nsa(maps, sounding, tau).numpy(), nsa_ref, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# nDCG@k
# ----------------------------------------------------------------------------------------------------------------------


def _retrieval_case(q=12, d=40, seed=4):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(q, 8, generator=gen)
    db = torch.randn(d, 8, generator=gen)
    rel = torch.randint(0, 21, (q, d), generator=gen).double()
    return query, db, rel


@pytest.mark.parametrize("k", [1, 5, 30, 100])
def test_ndcg_matches_sklearn(k):
    query, db, rel = _retrieval_case()
    score = -torch.cdist(query.double(), db.double()).numpy()
    expected = sklearn.metrics.ndcg_score(rel.numpy(), score, k=k)
    assert M.ndcg_at_k(query, db, rel, k=k) == pytest.approx(expected, rel=1e-10)
    per_query = M.ndcg_per_query(query, db, rel, k=k).numpy()
    ref = [sklearn.metrics.ndcg_score(rel[i : i + 1].numpy(), score[i : i + 1], k=k) for i in range(len(query))]
    np.testing.assert_allclose(per_query, ref, rtol=1e-10)


def test_ndcg_exclude_self_callable_relevance_and_normalisation():
    _, db, rel = _retrieval_case(q=40)
    score = -torch.cdist(db.double(), db.double()).numpy()
    off = ~np.eye(40, dtype=bool)
    expected = sklearn.metrics.ndcg_score(rel.numpy()[off].reshape(40, 39), score[off].reshape(40, 39), k=10)
    assert M.ndcg_at_k(db, db, rel, k=10, exclude_self=True) == pytest.approx(expected, rel=1e-10)
    assert M.ndcg_at_k(db, db, lambda rows: rel[rows], k=10, exclude_self=True) == pytest.approx(expected, rel=1e-10)
    unit = torch.nn.functional.normalize(db.double(), dim=1)
    assert M.ndcg_at_k(db * 3.0, db, rel, l2_normalize=True) == pytest.approx(M.ndcg_at_k(unit, unit, rel))
    with pytest.raises(ValueError, match="non-negative"):
        M.ndcg_at_k(db, db, rel - 30)


def test_label_relevance_matches_naive_max_over_pairs():
    gen = torch.Generator().manual_seed(5)
    k = 6
    dist = torch.randint(0, 12, (k, k), generator=gen)
    dist = torch.minimum(dist, dist.T).fill_diagonal_(0)
    q_labels = torch.rand(7, k, generator=gen) > 0.6
    d_labels = torch.rand(9, k, generator=gen) > 0.6
    q_labels[0] = False  # no label at all: relevance 0
    rel = M.label_relevance(q_labels, d_labels, dist, c=20.0)
    for i in range(7):
        for j in range(9):
            pairs = [20.0 - float(dist[a, b]) for a in range(k) for b in range(k) if q_labels[i, a] and d_labels[j, b]]
            assert float(rel[i, j]) == (max(pairs) if pairs else 0.0)
    single = M.label_relevance(torch.tensor([0, 3]), torch.tensor([3, 5, 0]), dist)
    assert float(single[1, 0]) == 20.0 and float(single[0, 1]) == 20.0 - float(dist[0, 5])


def test_label_relevance_agrees_with_the_synthorchestra_ontology():
    from avlib.data import Ontology

    ont = Ontology(
        [
            ("strings", "bowed", "violin"),
            ("strings", "bowed", "cello"),
            ("strings", "plucked", "guitar"),
            ("percussion", "drum"),
        ]
    )
    labels = torch.tensor([0, 1, 2, 3, 0])
    # hand: violin-cello 2 edges, violin-guitar 4, violin-drum 5 (3 up to the root, 2 down)
    rel = M.label_relevance(labels, labels, ont.distance_matrix())
    assert rel[0].tolist() == [20.0, 18.0, 16.0, 15.0, 20.0]
    unlabelled = M.label_relevance(torch.tensor([-1, 3]), labels, ont.distance_matrix())
    assert unlabelled.tolist() == [[0.0] * 5, [15.0, 15.0, 15.0, 20.0, 15.0]]
    with pytest.raises(ValueError, match="query_labels"):
        M.label_relevance(torch.tensor([-2]), labels, ont.distance_matrix())


@pytest.mark.parametrize("exclude_self", [False, True])
def test_random_ndcg_is_the_exact_expectation_over_all_permutations(exclude_self):
    gen = torch.Generator().manual_seed(6)
    rel = torch.randint(0, 21, (6 if exclude_self else 3, 6), generator=gen).double()
    k = 3
    disc = [1 / math.log2(i + 2) for i in range(k)]
    per_query = []
    for q in range(rel.shape[0]):
        cands = [d for d in range(rel.shape[1]) if not (exclude_self and d == q)]
        ideal = sum(
            g * w for g, w in zip(sorted((float(rel[q, d]) for d in cands), reverse=True)[:k], disc, strict=True)
        )
        values = [
            sum(float(rel[q, d]) * w for d, w in zip(perm[:k], disc, strict=True)) / ideal
            for perm in itertools.permutations(cands)
        ]
        per_query.append(np.mean(values))
    assert M.random_ndcg_at_k(rel, k=k, exclude_self=exclude_self) == pytest.approx(np.mean(per_query), rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# NMI
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a,b",
    [
        ([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 2, 2]),  # a relabelling: 1
        ([0, 0, 0, 0], [0, 0, 0, 0]),  # both constant: 1 by convention
        ([0, 1, 2, 3], [0, 0, 0, 0]),  # one constant: 0
        ([5, 5, 7, 7, 9, 9, 9], [0, 1, 0, 1, 0, 1, 2]),
    ],
)
def test_nmi_small_cases_match_sklearn(a, b):
    expected = sklearn.metrics.normalized_mutual_info_score(a, b)
    assert M.normalized_mutual_info(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, abs=1e-12)


def test_nmi_random_labelings_match_sklearn():
    rng = np.random.default_rng(7)
    for n, ka, kb in ((100, 5, 8), (1000, 34, 64), (50, 2, 2)):
        a, b = rng.integers(0, ka, n), rng.integers(0, kb, n)
        expected = sklearn.metrics.normalized_mutual_info_score(a, b)
        assert M.normalized_mutual_info(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-10)


def test_kmeans_nmi_separated_blobs_and_random_baseline():
    rng = np.random.default_rng(8)
    labels = np.repeat(np.arange(4), 30)
    centers = rng.standard_normal((4, 16)) * 10
    feats = centers[labels] + 0.1 * rng.standard_normal((120, 16))
    assert M.kmeans_nmi(torch.from_numpy(feats), torch.from_numpy(labels), k=4) == pytest.approx(1.0)
    noisy = centers[labels] + 8 * rng.standard_normal((120, 16))
    clusters = KMeans(n_clusters=6, n_init=10, random_state=0).fit_predict(noisy)
    expected = sklearn.metrics.normalized_mutual_info_score(labels, clusters)
    assert M.kmeans_nmi(torch.from_numpy(noisy).float(), torch.from_numpy(labels), k=6) == pytest.approx(
        expected, abs=1e-6
    )
    # random assignments: close to the mean NMI of independent uniform draws scored by sklearn
    draws = [sklearn.metrics.normalized_mutual_info_score(labels, rng.integers(0, 6, 120)) for _ in range(200)]
    ours = M.random_assignment_nmi(torch.from_numpy(labels), k=6, trials=50)
    assert ours == pytest.approx(np.mean(draws), abs=0.02)
    assert ours == M.random_assignment_nmi(torch.from_numpy(labels), k=6, trials=50)  # deterministic


# ----------------------------------------------------------------------------------------------------------------------
# BSS Eval (mir_eval is the reference)
# ----------------------------------------------------------------------------------------------------------------------


def _separation_case(n_batch, n_src, n, seed):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((n_batch, n_src, n))
    ref[:, 0] += np.sin(np.arange(n) * 0.05)  # some tonal content
    mixing = np.eye(n_src) + 0.3 * rng.random((n_batch, n_src, n_src))
    est = np.einsum("bij,bjn->bin", mixing, ref) + 0.1 * rng.standard_normal((n_batch, n_src, n))
    est[:, :, 1:] += 0.4 * est[:, :, :-1]  # a short filter: distortion, not interference
    return ref, est[:, ::-1].copy()  # estimates in the wrong order: the permutation must be found


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("n_src,compute_permutation", [(2, True), (2, False), (3, True)])
def test_bss_eval_matches_mir_eval(n_src, compute_permutation):
    ref, est = _separation_case(2, n_src, 1200, seed=n_src)
    ours = M.bss_eval_sources(torch.from_numpy(est), torch.from_numpy(ref), compute_permutation=compute_permutation)
    for b in range(2):
        sdr, sir, sar, perm = mir_eval.separation.bss_eval_sources(ref[b], est[b], compute_permutation)
        np.testing.assert_allclose(ours["sdr"][b].numpy(), sdr, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(ours["sir"][b].numpy(), sir, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(ours["sar"][b].numpy(), sar, rtol=1e-7, atol=1e-7)
        np.testing.assert_array_equal(ours["perm"][b].numpy(), perm)
    if compute_permutation:
        assert (ours["perm"] == torch.arange(n_src).flip(0)).all()


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_bss_eval_unbatched_means_and_silent_source():
    ref, est = _separation_case(1, 2, 900, seed=9)
    single = M.bss_eval_sources(torch.from_numpy(est[0]).float(), torch.from_numpy(ref[0]).float())
    sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(ref[0].astype(np.float32), est[0].astype(np.float32))
    np.testing.assert_allclose(single["sdr"].numpy(), sdr, rtol=1e-6)
    means = M.bss_eval(torch.from_numpy(est), torch.from_numpy(ref))
    assert means["sir"] == pytest.approx(float(np.mean(sir)), rel=1e-5)
    assert means["sar"] == pytest.approx(float(np.mean(sar)), rel=1e-5)
    ref[0, 1] = 0
    with pytest.raises(ValueError, match="all-zero"):
        M.bss_eval(torch.from_numpy(est), torch.from_numpy(ref))


# ----------------------------------------------------------------------------------------------------------------------
# Poisson counting
# ----------------------------------------------------------------------------------------------------------------------


def test_poisson_count_predict_matches_scipy_argmax():
    rng = np.random.default_rng(10)
    lam = rng.uniform(0.05, 8.0, 200)
    ys = np.arange(1, 6)
    expected = ys[np.argmax(scipy.stats.poisson.pmf(ys[None, :], lam[:, None]), axis=1)]
    np.testing.assert_array_equal(M.poisson_count_predict(torch.from_numpy(lam)).numpy(), expected)
    # integer rates: P(lam - 1) = P(lam), the smaller count is taken; lam = 0 -> the smallest count
    assert M.poisson_count_predict(torch.tensor([2.0, 3.0, 0.0, 100.0])).tolist() == [1, 2, 1, 5]
    with pytest.raises(ValueError, match="non-negative"):
        M.poisson_count_predict(torch.tensor([-1.0]))


def test_poisson_accuracy_mae_and_chance():
    lam = torch.tensor([0.5, 1.7, 2.5, 3.2, 4.9, 9.0])  # modes in 1..5: 1, 1, 2, 3, 4, 5
    y = torch.tensor([1, 2, 2, 5, 4, 3])
    # predictions 1, 1, 2, 3, 4, 5 vs 1, 2, 2, 5, 4, 3: correct at 0, 2, 4 -> 3 / 6; errors 0, 1, 0, 2, 0, 2 -> 5 / 6
    assert M.poisson_count_accuracy(lam, y) == pytest.approx(3 / 6)
    assert M.poisson_count_mae(lam, y) == pytest.approx(5 / 6)
    chance = M.count_chance(torch.arange(1, 6))
    assert chance["accuracy"] == pytest.approx(0.2)
    assert chance["mae"] == pytest.approx(1.6)  # mean |i - j| over the 25 pairs in 1..5 = 40 / 25
    with pytest.raises(ValueError, match="1..5"):
        M.poisson_count_accuracy(lam, torch.tensor([0, 2, 2, 5, 4, 3]))


def test_singular_projection_falls_back_to_the_least_norm_solution():
    a = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 4.0]]], dtype=torch.float64)  # first is singular
    b = torch.tensor([[2.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    expected = [np.linalg.lstsq(a[i].numpy(), b[i].numpy(), rcond=None)[0] for i in range(2)]
    np.testing.assert_allclose(M._solve(a, b).numpy(), expected, rtol=1e-12)


def test_bss_eval_after_set_num_threads_matches_mir_eval():
    """Batched LU in torch's MKL build gives invalid pivots once torch.set_num_threads was called (a benchmark's
    ``--threads``); the projections must not depend on it. Run in a fresh process, as a benchmark would."""
    ref, est = _separation_case(4, 2, 4000, seed=5)  # 512-tap filters: Gram matrices of 1024 x 1024
    code = ("import sys, numpy as np, torch; torch.set_num_threads(max(2, torch.get_num_threads())); "
            "from avlib import metrics as M; d = np.load(sys.argv[1]); "
            "o = M.bss_eval_sources(torch.from_numpy(d['est']), torch.from_numpy(d['ref'])); "
            "np.save(sys.argv[2], torch.stack([o['sdr'], o['sir'], o['sar']]).numpy())")
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/case.npz", est=est, ref=ref)
        subprocess.run([sys.executable, "-c", code, f"{tmp}/case.npz", f"{tmp}/out.npy"], check=True)
        ours = np.load(f"{tmp}/out.npy")
    for b in range(len(ref)):
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(ref[b], est[b])
        np.testing.assert_allclose(ours[:, b], np.stack([sdr, sir, sar]), rtol=1e-7, atol=1e-7)
