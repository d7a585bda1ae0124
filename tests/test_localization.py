"""avlib.localization: the clustering nets' inputs from scenes and clips, and their localization scores."""

from __future__ import annotations

import json

import pytest
import torch

from avlib import metrics
from avlib.configs import get_config
from avlib.data import ClipDataset, SynthOrchestra, write_clips
from avlib.localization import ClipPairs, clip_tensors, evaluate_localization, scene_tensors, score_maps
from avlib.nets.dmc import DMCNet, dmc_from_config
from avlib.vision import CAVLImageTransform, DMCImageTransform


def naive_box_mask(boxes: list[list[float]], h: int, w: int) -> torch.Tensor:
    """Pixel (y, x) is inside if its centre lies in any of the xyxy boxes; a literal loop."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    for y in range(h):
        for x in range(w):
            mask[y, x] = any(x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1 for x0, y0, x1, y1 in boxes)
    return mask


@pytest.fixture(scope="module")
def world() -> SynthOrchestra:
    return SynthOrchestra(**{**get_config("dmc", "quick")["data"], "size": 4, "n_silent": 1}, seed=3)


@pytest.mark.parametrize(("method", "transform"), [("dmc", DMCImageTransform), ("cavl", CAVLImageTransform)])
def test_scene_tensors_match_the_scenes(world, method, transform):
    cfg = get_config(method, "quick")
    t = scene_tensors(cfg, world)
    mid = world.num_frames // 2
    assert t["image"].shape == (4, 3, 64, 64) and t["spec"].shape == (4, 1, 96, 32)
    for i in range(4):
        scene = world.scene(i)
        assert torch.equal(t["frames"][i], scene.frames[mid])
        assert torch.allclose(t["image"][i], transform(64)(scene.frames[mid]))
        sounding = scene.boxes[mid][scene.sounding].tolist()
        assert len(sounding) == 1 and scene.boxes.shape[1] == 2  # one sounding, one silent instrument
        assert torch.equal(t["box"][i], naive_box_mask(sounding, 64, 64))
    lo, hi = cfg["image_range"]
    assert float(t["image"].min()) >= lo and float(t["image"].max()) <= hi and float(t["image"].min()) < 0.5 * (lo + hi)


def test_clip_tensors_and_pairs_read_back_the_written_world(tmp_path, world):
    cfg = get_config("dmc", "quick")
    write_clips(world, tmp_path, split="test")
    clips = ClipDataset(tmp_path, "test", sample_rate=cfg["audio"]["sample_rate"], frames="middle")
    from_disk, in_memory = clip_tensors(cfg, clips), scene_tensors(cfg, world)
    assert torch.equal(from_disk["box"], in_memory["box"])
    assert (from_disk["image"] - in_memory["image"]).abs().max() <= 2 / 255 + 1e-6  # PNG's 8 bits, in [-1, 1]
    assert torch.allclose(from_disk["spec"], in_memory["spec"], atol=1e-4)
    pair = ClipPairs(cfg, clips)[2]
    assert torch.allclose(pair["image"], from_disk["image"][2]) and torch.allclose(pair["spec"], from_disk["spec"][2])
    with pytest.raises(ValueError, match="frames='middle'"):
        ClipPairs(cfg, ClipDataset(tmp_path, "test"))
    # without boxes in the manifest there is no ground truth, and the evaluation says so
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps({**r, "boxes": None}) + "\n" for r in rows))
    bare = clip_tensors(cfg, ClipDataset(tmp_path, "test", frames="middle"))
    assert "box" not in bare and bare["image"].shape == from_disk["image"].shape
    torch.manual_seed(0)
    model, step_fn = dmc_from_config(cfg)
    report = evaluate_localization(model, DMCNet.localize, step_fn, bare, batch_size=2)
    assert "needs sounding-object boxes" in report["localization"] and report["clips"] == 4
    assert not any("ciou" in key for key in report) and torch.isfinite(torch.tensor(report["held_out_loss"]))
    assert model.training  # the evaluation restores the training mode


def test_score_maps_rank_a_perfect_map_first_and_add_the_baselines():
    gt = torch.zeros(3, 16, 16, dtype=torch.bool)
    gt[0, 2:8, 3:9], gt[1, 8:16, 0:8], gt[2, 5:11, 5:11] = True, True, True
    rows = score_maps({"perfect": gt.float() * 0.7 + 0.1, "inverse": 1.0 - gt.float()}, gt)
    assert list(rows) == ["perfect", "inverse", "centred box (half the image)", "whole image"]
    assert rows["perfect"] == {"ciou50": 1.0, "auc": pytest.approx(1.0), "mean_ciou": 1.0}
    assert rows["inverse"]["ciou50"] == 0.0
    assert rows["whole image"] == metrics.whole_image_baseline(gt.float())


def test_evaluation_is_independent_of_the_chunk_size(world):
    cfg = get_config("dmc", "quick")
    data = scene_tensors(cfg, world)
    torch.manual_seed(0)
    model, step_fn = dmc_from_config(cfg)
    whole = evaluate_localization(model, DMCNet.localize, step_fn, data, batch_size=4)
    chunked = evaluate_localization(model, DMCNet.localize, step_fn, data, batch_size=3)  # chunks of 3 and 1
    keys = [k for k in whole if "ciou" in k or k.endswith("_auc")]
    assert len(keys) == 18 and all(whole[k] == pytest.approx(chunked[k]) for k in keys)
    # the held-out loss of the chunk of 3 alone (the chunk of 1 has no negative), with the same draw of negatives
    gen = torch.Generator().manual_seed(0)
    model.eval()
    with torch.no_grad():
        ref = step_fn(model, {"image": data["image"][:3], "spec": data["spec"][:3]}, generator=gen)
    assert chunked["held_out_loss"] == pytest.approx(float(ref["loss"]))


def test_clips_are_cut_or_padded_to_the_configs_seconds(tmp_path):
    """CAVL's full-scale frontend takes 10 s; here a CAVL config asking for 0.5 s of 1 s and of 2 s clips."""
    cfg = {**get_config("cavl", "full"), "image_size": 32}
    cfg["audio"] = {**cfg["audio"], "seconds": 0.5}
    for seed, duration in ((0, 1.0), (1, 2.0)):
        world = SynthOrchestra(family="c1", size=1, image_size=32, duration=duration, sample_rate=11025, seed=seed)
        write_clips(world, tmp_path, split="train", append=seed > 0, prefix=f"w{seed}")
    clips = ClipDataset(tmp_path, "train", sample_rate=11025, frames="middle")
    pairs = ClipPairs(cfg, clips)
    frames = 1 + -(-round(0.5 * 11025) // 256)  # CAVL: 1 + ceil(N / hop) STFT frames
    assert pairs[0]["spec"].shape == pairs[1]["spec"].shape == (1, 512, frames)
    assert torch.allclose(clip_tensors(cfg, clips)["spec"][1], pairs[1]["spec"])
    cfg["audio"]["seconds"] = 1.5  # longer than the first clip: zero-padded
    padded = ClipPairs(cfg, clips)[0]["spec"]
    assert padded.shape == (1, 512, 1 + -(-round(1.5 * 11025) // 256))
    assert float(padded[..., -3:].max()) == pytest.approx(float(torch.log(torch.tensor(1e-6))), abs=1e-3)  # silence
