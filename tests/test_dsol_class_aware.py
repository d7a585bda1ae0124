"""DSOL's class-aware CIoU and NSA (Eq. 9) under both named protocols, against a naive per-item, per-class loop on
hand-made maps; the per-category targets of a scene; and the two protocols giving different numbers on one set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avlib.eval.class_aware import PROTOCOLS, class_aware_baselines, class_aware_report, class_aware_targets


def naive(maps: np.ndarray, gt: np.ndarray, sounding: np.ndarray, protocol: str, fraction: float = 0.2
          ) -> dict[str, float]:
    """Eq. 9 item by item, class by class, pixel by pixel-free numpy (no shared code with the library)."""
    tau = 0.1 * maps.max()
    cious, nsas = [], []
    for b in range(maps.shape[0]):
        per_class, quiet = [], []
        for k in range(maps.shape[1]):
            m = maps[b, k]
            if sounding[b, k]:
                on = m >= tau if protocol == "paper" else (m > fraction * m.max()) & (m.max() > 0)
                inter = np.logical_and(on, gt[b, k]).sum()
                union = np.logical_or(on, gt[b, k]).sum()
                per_class.append(inter / max(union, 1))
            else:
                quiet.append((m < (tau if protocol == "paper" else 0.2)).mean())
        cious.append(np.mean(per_class))
        nsas.append(np.mean(quiet))
    cious = np.array(cious)
    rates = [np.mean(cious >= 0.05 * i) for i in range(21)]
    return {"ciou30": float(np.mean(cious >= 0.3)), "auc": float(np.trapezoid(rates, dx=0.05)),
            "mean_ciou": float(cious.mean()), "nsa": float(np.mean(nsas))}


def hand_made(seed: int = 0):
    rng = np.random.default_rng(seed)
    b, k, h, w = 6, 4, 8, 8
    gt = np.zeros((b, k, h, w), dtype=bool)
    sounding = np.zeros((b, k), dtype=bool)
    maps = rng.uniform(0, 0.3, size=(b, k, h, w)).astype(np.float32)
    for i in range(b):
        for c in rng.choice(k, 2, replace=False):
            y, x = rng.integers(0, 4, 2)
            gt[i, c, y : y + 4, x : x + 4] = True
            sounding[i, c] = True
            maps[i, c, y : y + 4, x : x + 4] += rng.uniform(0.1, 1.0)  # a bump where the sounding class is
            maps[i, c, (y + 5) % h, (x + 5) % w] += rng.uniform(0, 0.5)  # and a stray one
    return torch.from_numpy(maps), torch.from_numpy(gt), torch.from_numpy(sounding)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_both_protocols_match_the_naive_loop(seed):
    maps, gt, sounding = hand_made(seed)
    report = class_aware_report(maps, gt, sounding)
    assert set(report) == set(PROTOCOLS)
    for protocol in PROTOCOLS:
        ref = naive(maps.numpy(), gt.numpy(), sounding.numpy(), protocol)
        for key, value in ref.items():
            assert report[protocol][key] == pytest.approx(value, abs=1e-6), (protocol, key)
    assert report["paper"]["tau"] == pytest.approx(0.1 * float(maps.max()))


def test_the_released_codes_relative_cut_is_a_parameter():
    maps, gt, sounding = hand_made(4)
    half = class_aware_report(maps, gt, sounding, code_fraction=0.5)["released_code"]
    ref = naive(maps.numpy(), gt.numpy(), sounding.numpy(), "released_code", fraction=0.5)
    assert half["mean_ciou"] == pytest.approx(ref["mean_ciou"], abs=1e-6) and half["nsa"] == pytest.approx(ref["nsa"])
    assert half["mean_ciou"] != pytest.approx(class_aware_report(maps, gt, sounding)["released_code"]["mean_ciou"])


def test_the_two_protocols_differ_on_the_same_maps():
    maps, gt, sounding = hand_made(0)
    report = class_aware_report(maps, gt, sounding)
    assert report["paper"]["nsa"] != pytest.approx(report["released_code"]["nsa"])
    assert report["paper"]["mean_ciou"] != pytest.approx(report["released_code"]["mean_ciou"])


def test_perfect_and_empty_maps():
    _, gt, sounding = hand_made(3)
    perfect = class_aware_report(gt.float(), gt, sounding)
    for protocol in PROTOCOLS:
        assert perfect[protocol]["ciou30"] == 1.0 and perfect[protocol]["mean_ciou"] == 1.0
        assert perfect[protocol]["nsa"] == 1.0
    base = class_aware_baselines(gt, sounding)
    assert base["whole image"]["paper"]["nsa"] == 0.0 and base["whole image"]["released_code"]["nsa"] == 0.0
    area = gt.float().mean((2, 3))[sounding]
    assert base["whole image"]["paper"]["mean_ciou"] == pytest.approx(float(area.reshape(6, 2).mean(1).mean()))


def test_targets_are_the_union_of_each_categorys_sounding_boxes():
    boxes = torch.tensor([[0.0, 0, 4, 4], [4, 4, 8, 8], [0, 4, 2, 8]])
    cats, snd = torch.tensor([2, 0, 2]), torch.tensor([True, False, True])
    masks, delta = class_aware_targets(boxes, cats, snd, 3, 8, 8)
    assert delta.tolist() == [False, False, True]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[0:4, 0:4] = True
    expected[4:8, 0:2] = True
    assert torch.equal(masks[2], expected) and not masks[0].any() and not masks[1].any()
