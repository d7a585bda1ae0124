"""benchmarks/bench_cavl.py: its helper (AUROC of S_av) and the claim checks, on hand-made cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "bench_cavl", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cavl.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_auroc_separated_overlapping_and_tied():
    assert bench.auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 1.0
    assert bench.auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert bench.auroc(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0])) == 0.75  # 3 of the 4 pairs in order
    assert bench.auroc(torch.ones(3), torch.ones(2)) == 0.5  # ties count half


def test_s_av_is_the_distance_to_the_nearest_visual_center():
    out = {"centers_a": torch.tensor([[[0.0, 0.0]]]), "centers_v": torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])}
    assert bench.s_av(out).tolist() == [1.0]


def _result(aligned=0.8, unaligned=0.0, centred=0.3, whole=0.05, audio_free=0.78, kv3=(0.7, 0.45), aurocs=0.8):
    fixed = {"aligned": {"ciou50": aligned}, "unaligned": {"ciou50": unaligned},
             "audio-free": {"ciou50": audio_free}, "centred box (half the image)": {"ciou50": centred},
             "whole image": {"ciou50": whole}}
    return {"localization": {"fixed cut 0.5": fixed},
            "silent": {"k_v=3": {"audio": {"prefers_sounding": kv3[0]}, "image": {"prefers_sounding": kv3[1]}}},
            "negative": {k: {"auroc": aurocs} for k in ("silence", "noise", "off-screen")}}


def test_checks_pass_and_fail_at_the_chapter_margins():
    assert all(bench.checks(_result()).values())
    assert not bench.checks(_result(unaligned=0.6))["over_unaligned"]
    assert not bench.checks(_result(centred=0.7))["over_centred_box"]
    assert not bench.checks(_result(audio_free=0.6))["audio_free_as_good"]  # the sound would matter here
    assert not bench.checks(_result(kv3=(0.55, 0.5)))["silent_kv3_prefers_sounding"]
    assert not bench.checks(_result(aurocs=0.55))["negative_s_av_higher"]
