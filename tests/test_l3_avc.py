"""AVC helpers (avlib.avc): clip caching, quick configs end to end, probes, retrieval, grid tests, pointing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from avlib.avc import (
    InMemoryClips,
    avc_accuracy_on,
    build_avc,
    center_hits,
    clip_features,
    grid_offset_test,
    grid_phase_probe,
    linear_probe,
    middle_frame,
    pointing_hits,
    retrieval_ndcg,
    train_avc,
)
from avlib.configs import get_config
from avlib.data import AVCPairs, SynthOrchestra
from avlib.metrics import ndcg_at_k


@pytest.fixture(scope="module")
def world() -> SynthOrchestra:
    cfg = get_config("ave", "quick")
    return SynthOrchestra(**{**cfg["data"], "size": 24}, seed=5)


def test_in_memory_clips_match_the_world_and_cache(world):
    src = InMemoryClips(world, preload=range(4))
    assert len(src) == len(world) and src.sample_rate == world.sample_rate
    torch.testing.assert_close(src.get_audio(2), world.get_audio(2))
    torch.testing.assert_close(src.get_frame(3, 14), world.get_frame(3, 14))
    assert src.get_frame(3, 14) is src.get_frame(3, 14)  # cached, not re-rendered
    assert src.clip_label(5) == world.clip_label(5)
    assert src.clip_fps(0) == world.clip_fps(0) and src.ontology is world.ontology


def test_middle_frame_window_fits(world):
    k, center = middle_frame(world, 0, 1.0)
    assert center == round(k * world.sample_rate / world.clip_fps(0))
    assert center - world.sample_rate // 2 >= 0 and center + world.sample_rate // 2 <= world.clip_samples(0)
    with pytest.raises(ValueError, match="too short"):
        middle_frame(world, 0, 5.0)


@pytest.mark.parametrize("method", ["l3", "ave", "avol"])
def test_quick_config_trains_through_the_engine(world, method):
    cfg = get_config(method, "quick")
    cfg["batch_size"] = 8
    src = InMemoryClips(world)
    net, frontend, result = train_avc(cfg, src, range(16), seed=0, steps=2)
    assert result.step == 2 and all(np.isfinite(h["loss"]) for h in result.history)
    pairs = AVCPairs(src, clips=range(16, 24), length=8, window_seconds=1.0, negative_mode="frame_aligned")
    acc = avc_accuracy_on(net, frontend, pairs, batch_size=4)
    assert 0.0 <= acc <= 1.0
    if method != "avol":
        feats = clip_features(net, frontend, src, range(16, 24))
        width = cfg["net"].get("embed_dim", cfg["net"]["widths"][-1])
        assert feats["image"].shape == feats["audio"].shape == (8, width)


def test_build_avc_rejects_unknown_method():
    cfg = get_config("l3", "quick")
    cfg["method"] = "dmc"
    with pytest.raises(ValueError, match="l3"):
        build_avc(cfg)


def test_linear_probe_separable_and_random():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    x = torch.randn(200, 6, generator=gen) * 0.1
    x[torch.arange(200), y] += 3.0  # one informative coordinate per class
    assert linear_probe(x[:120], y[:120], x[120:], y[120:]) == 1.0
    noise = torch.randn(200, 6, generator=gen)
    assert linear_probe(noise[:120], y[:120], noise[120:], y[120:]) < 0.6


def test_retrieval_ndcg_matches_the_metric(world):
    gen = torch.Generator().manual_seed(1)
    labels = torch.tensor([world.clip_label(i) for i in range(24)])
    feats = {"image": torch.randn(24, 5, generator=gen), "audio": torch.randn(24, 5, generator=gen), "labels": labels}
    out = retrieval_ndcg(feats, world.ontology)
    rel = world.ontology.relevance(labels, labels)
    want = ndcg_at_k(feats["image"], feats["audio"], rel, k=30, l2_normalize=True)
    assert out["im-aud"]["ndcg"] == pytest.approx(want)
    assert out["im-im"]["ndcg"] == pytest.approx(
        ndcg_at_k(feats["image"], feats["image"], rel, k=30, exclude_self=True, l2_normalize=True)
    )
    # embeddings that one-hot code every level of the category's path rank in tree-distance order: perfect nDCG
    codes = []
    for level in range(3):
        names = [world.categories[int(c)].path[: level + 1] for c in labels]
        ids = {n: i for i, n in enumerate(sorted(set(names)))}
        codes.append(torch.nn.functional.one_hot(torch.tensor([ids[n] for n in names]), len(ids)).float())
    tree = torch.cat(codes, dim=1)
    perfect = retrieval_ndcg({"image": tree, "audio": tree, "labels": labels}, world.ontology)
    assert all(v["ndcg"] == pytest.approx(1.0) for v in perfect.values())
    assert all(v["random"] < 1.0 for v in perfect.values())


class _GridCheater(nn.Module):
    """Says "corresponds" exactly when the window's centre is on the frame grid — by measuring the click phase."""

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = period
        self.dummy = nn.Parameter(torch.zeros(()))

    def correspondence_logit(self, image: torch.Tensor, wave: torch.Tensor) -> torch.Tensor:
        n = wave.shape[-1]
        # energy of the first-difference at each phase of the frame period; the clicks sit at one phase
        energy = wave.diff(dim=-1)[:, : n - 1 - (n - 1) % self.period].abs()
        energy = energy.reshape(wave.shape[0], -1, self.period).sum(1)  # (B, period)
        phase = energy.argmax(1)
        # a window centred on a frame time starts half a window before it, so its clicks sit at phase (n // 2) % period
        on_grid = phase == (n // 2) % self.period
        return torch.where(on_grid, 5.0, -5.0) + 0 * self.dummy

    def embed_audio(self, wave: torch.Tensor) -> torch.Tensor:
        n = wave.shape[-1]
        energy = wave.diff(dim=-1)[:, : n - 1 - (n - 1) % self.period].abs()
        return energy.reshape(wave.shape[0], -1, self.period).sum(1)


def test_grid_offset_test_and_phase_probe_catch_a_grid_cheater():
    world = SynthOrchestra(**{**get_config("ave", "quick")["data"], "size": 40, "frame_artifact": 0.5}, seed=2)
    src = InMemoryClips(world)
    period = round(world.sample_rate / world.clip_fps(0))
    cheater, identity = _GridCheater(period), nn.Identity()
    res = grid_offset_test(cheater, identity, src, range(20))
    assert res["pos_on"] > 0.99 and res["neg_on"] > 0.99  # on the grid, everything "corresponds"
    assert res["pos_off"] < 0.01 and res["neg_off"] < 0.01
    assert res["acc_on"] == pytest.approx(0.5) and res["acc_off"] == pytest.approx(0.5)
    assert grid_phase_probe(cheater, identity, src, range(20), range(20, 40)) > 0.9


def test_pointing_hits_against_a_loop():
    gen = torch.Generator().manual_seed(3)
    maps = torch.rand(6, 4, 5, generator=gen)
    boxes = torch.tensor(
        [[0, 0, 32, 32], [10, 10, 40, 60], [30, 0, 40, 64], [0, 40, 64, 64], [5, 5, 9, 9], [0, 0, 40, 64]],
        dtype=torch.float32,
    )
    size = (64, 40)  # H, W
    got = pointing_hits(maps, boxes, size)
    for i in range(6):
        r, c = divmod(int(maps[i].argmax()), 5)
        x, y = (c + 0.5) * 40 / 5, (r + 0.5) * 64 / 4
        b = boxes[i].tolist()
        assert bool(got[i]) == (b[0] <= x < b[2] and b[1] <= y < b[3])
    assert center_hits(boxes, size).tolist() == [False, True, False, False, False, True]
    with pytest.raises(ValueError, match="pointing_hits"):
        pointing_hits(maps[0], boxes, size)


def test_box_mass_against_a_loop():
    from avlib.avc import box_mass, upsample_maps

    gen = torch.Generator().manual_seed(4)
    maps = torch.rand(3, 4, 4, generator=gen)
    boxes = torch.tensor([[0, 0, 16, 16], [10, 20, 40, 30], [0, 0, 32, 32]], dtype=torch.float32)
    got = box_mass(maps, boxes, (32, 32))
    up = upsample_maps(maps, (32, 32))
    for i in range(3):
        x0, y0, x1, y1 = (int(v) for v in boxes[i].tolist())
        assert got[i].item() == pytest.approx(up[i, y0:y1, x0:x1].mean().item(), rel=1e-5)
