"""The AVC methods and their evaluation (avlib.methods.avc, avlib.eval, avlib.data.views): clip caching, quick configs
end to end, probes, retrieval, grid tests, pointing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from avlib.audio import make_frontend
from avlib.data import AVCPairs, SynthOrchestra
from avlib.data.views import InMemoryClips, cached_world
from avlib.eval.avc import avc_accuracy_on, clip_features, clip_inputs, middle_frame
from avlib.eval.localization import box_mass, center_hits, pointing_hits, upsample_maps
from avlib.eval.representation import linear_probe, retrieval_ndcg
from avlib.eval.shortcut import grid_offset_test, grid_phase_probe
from avlib.methods import get_method, train
from avlib.metrics import ndcg_at_k

QUICK_DATA = get_method("ave").config("quick").data


@pytest.fixture(scope="module")
def world() -> SynthOrchestra:
    return SynthOrchestra(**{**QUICK_DATA, "size": 24}, seed=5)


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


def test_cached_world_is_one_view_per_world_and_seed():
    a = cached_world({**QUICK_DATA, "size": 4}, 1)
    assert a is cached_world(dict(reversed(list({**QUICK_DATA, "size": 4}.items()))), 1)  # key order does not matter
    assert a is not cached_world({**QUICK_DATA, "size": 4}, 2) and len(a) == 4
    torch.testing.assert_close(a.get_audio(3), SynthOrchestra(**{**QUICK_DATA, "size": 4}, seed=1).get_audio(3))


def _small(name: str, **changes):
    """The method's quick config on a 24-clip world (16 train, 8 held out), 2 steps of 8."""
    cfg = get_method(name).config("quick")
    return cfg.replace(**{"batch_size": 8, "steps": 2, "data": {**cfg.data, "size": 24}, "train_clips": 16,
                          "eval_size": 8, **changes})


@pytest.mark.parametrize("method", ["l3", "ave", "avol"])
def test_quick_config_trains_through_the_engine(method):
    torch.set_num_threads(1)
    cfg = _small(method)
    source = train(_small("ave"), seed=0, evaluate=False, progress=False).model if method == "avol" else None
    run = train(cfg, seed=0, init_from=source, progress=False)
    assert source is None or source.training  # starting from it left the source model as it was
    assert run.result.step == 2 and len(run.history) == 2 and all(np.isfinite(h["loss"]) for h in run.history)
    frontend = make_frontend(cfg.audio)
    held_out = get_method(method).held_out_pairs(cfg, None, 0)
    assert run.scores["pairs"] == len(held_out) == 8 and run.scores["chance"] == 0.5
    assert run.scores["avc_accuracy"] == avc_accuracy_on(run.model, frontend, held_out, batch_size=4)
    src = cached_world(cfg.data, 0)
    pairs = AVCPairs(src, clips=range(16, 24), length=8, window_seconds=1.0, negative_mode="frame_aligned")
    acc = avc_accuracy_on(run.model, frontend, pairs, batch_size=4)
    assert 0.0 <= acc <= 1.0
    if method != "avol":
        feats = clip_features(run.model, frontend, src, range(16, 24))
        width = getattr(cfg, "embed_dim", cfg.widths[-1])
        assert feats["image"].shape == feats["audio"].shape == (8, width)


def test_train_refuses_a_missing_or_wrong_start():
    with pytest.raises(ValueError, match="starts from a trained ave model"):
        train(_small("avol"), seed=0)
    l3 = train(_small("l3", steps=1), seed=0, evaluate=False, progress=False)
    with pytest.raises(ValueError, match="starts from scratch"):
        train(_small("l3"), seed=0, init_from=l3.model)
    with pytest.raises(TypeError, match="AVE-Net; got a L3Net"):
        train(_small("avol"), seed=0, init_from=l3.model)


def test_clip_inputs_use_the_evaluation_transform(world):
    src = InMemoryClips(world)
    transform = get_method("ave").image_transform(get_method("ave").config("quick"), train=False)
    raw, audio, labels = clip_inputs(src, range(3), 1.0)
    image, audio2, _ = clip_inputs(src, range(3), 1.0, image_transform=transform)
    torch.testing.assert_close(image, transform(raw))
    assert torch.equal(audio, audio2) and labels.tolist() == [world.clip_label(i) for i in range(3)]
    k, center = middle_frame(world, 1, 1.0)
    torch.testing.assert_close(raw[1], world.get_frame(1, k))
    torch.testing.assert_close(audio[1], world.get_audio(1)[center - 8000 : center + 8000])


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


class _Waveform(nn.Module):
    """A frontend that hands the waveform itself to the model, as a ``(B, 1, N)`` "example"."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return wave[:, None]


class _GridCheater(nn.Module):
    """Says "corresponds" exactly when the window's centre is on the frame grid — by measuring the click phase."""

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = period
        self.dummy = nn.Parameter(torch.zeros(()))

    def correspondence_logit(self, image: torch.Tensor, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.flatten(1)
        n = wave.shape[-1]
        # energy of the first-difference at each phase of the frame period; the clicks sit at one phase
        energy = wave.diff(dim=-1)[:, : n - 1 - (n - 1) % self.period].abs()
        energy = energy.reshape(wave.shape[0], -1, self.period).sum(1)  # (B, period)
        phase = energy.argmax(1)
        # a window centred on a frame time starts half a window before it, so its clicks sit at phase (n // 2) % period
        on_grid = phase == (n // 2) % self.period
        return torch.where(on_grid, 5.0, -5.0) + 0 * self.dummy

    def embed_audio(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.flatten(1)
        n = wave.shape[-1]
        energy = wave.diff(dim=-1)[:, : n - 1 - (n - 1) % self.period].abs()
        return energy.reshape(wave.shape[0], -1, self.period).sum(1)


def test_grid_offset_test_and_phase_probe_catch_a_grid_cheater():
    world = SynthOrchestra(**{**QUICK_DATA, "size": 40, "frame_artifact": 0.5}, seed=2)
    src = InMemoryClips(world)
    period = round(world.sample_rate / world.clip_fps(0))
    cheater, identity = _GridCheater(period), _Waveform()
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
    gen = torch.Generator().manual_seed(4)
    maps = torch.rand(3, 4, 4, generator=gen)
    boxes = torch.tensor([[0, 0, 16, 16], [10, 20, 40, 30], [0, 0, 32, 32]], dtype=torch.float32)
    got = box_mass(maps, boxes, (32, 32))
    up = upsample_maps(maps, (32, 32))
    for i in range(3):
        x0, y0, x1, y1 = (int(v) for v in boxes[i].tolist())
        assert got[i].item() == pytest.approx(up[i, y0:y1, x0:x1].mean().item(), rel=1e-5)
