"""benchmarks/bench_dmc.py: its AUC against sklearn and the claims it checks."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

_spec = importlib.util.spec_from_file_location(
    "bench_dmc", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dmc.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_auc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randint(0, 5, (40,), generator=g).float(), torch.randint(0, 5, (30,), generator=g).float()
    labels = np.r_[np.ones(40), np.zeros(30)]
    assert abs(bench.auc(pos, neg) - roc_auc_score(labels, np.r_[pos.numpy(), neg.numpy()])) < 1e-12


def _measurements() -> dict:
    row = lambda c: {"ciou50": c, "auc": c}  # noqa: E731
    fixed = {"contrast": row(0.7), "contrast_unrelated": row(0.1), "paper": row(0.6), "paper_unrelated": row(0.2),
             "image": row(0.7), "random map": row(0.0), "centred box (half the image)": row(0.3),
             "whole image": row(0.07)}
    neg = {"auc_cosine": 0.8, "visual_map_same": True}
    return {"fixed cut 0.5": fixed, "silent": {"contrast": {"prefers_sounding": 0.7},
                                               "image": {"prefers_sounding": 0.55}},
            "negative": {"silence": dict(neg), "noise": dict(neg), "off-screen": dict(neg)}}


def test_claims_hold_and_fail_where_they_should():
    m = _measurements()
    assert all(bench.claims(m).values())
    worse = copy.deepcopy(m)
    worse["fixed cut 0.5"]["contrast_unrelated"]["ciou50"] = 0.5
    assert not bench.claims(worse)["related > unrelated"]
    worse = copy.deepcopy(m)
    worse["silent"]["image"]["prefers_sounding"] = 0.7
    assert not bench.claims(worse)["silent: audio helps"]
    worse = copy.deepcopy(m)
    worse["negative"]["noise"]["auc_cosine"] = 0.5
    assert not bench.claims(worse)["negative audio detected"]
    worse = copy.deepcopy(m)
    worse["negative"]["noise"]["visual_map_same"] = False
    assert not bench.claims(worse)["maps never see the sound"]
