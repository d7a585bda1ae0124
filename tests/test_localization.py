"""The clustering nets' inputs from scenes and clips (avlib.data.views), and localization scoring (avlib.eval)."""

from __future__ import annotations

import json

import pytest
import torch

from avlib import metrics
from avlib.audio import first_example, make_frontend
from avlib.data import ClipDataset, SynthOrchestra, write_clips
from avlib.data.views import ClipPairs, clip_tensors, fit_length, scene_tensors
from avlib.eval.localization import compute_maps, localization_report, off_screen_index, score_maps
from avlib.methods import get_method
from avlib.vision import CAVLImageTransform, DMCImageTransform

DMC = get_method("dmc")


def naive_box_mask(boxes: list[list[float]], h: int, w: int) -> torch.Tensor:
    """Pixel (y, x) is inside if its centre lies in any of the xyxy boxes; a literal loop."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    for y in range(h):
        for x in range(w):
            mask[y, x] = any(x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1 for x0, y0, x1, y1 in boxes)
    return mask


WORLD = {**DMC.config("quick").data, "size": 4, "n_silent": 1}


@pytest.fixture(scope="module")
def world() -> SynthOrchestra:
    return SynthOrchestra(**WORLD, seed=3)


def _views(method, cfg):
    """The arguments :func:`scene_tensors` / :func:`clip_tensors` take for a method's config."""
    return method.samples(cfg), cfg.image_size, method.image_transform(cfg)


@pytest.mark.parametrize(("name", "transform", "lo", "hi"),
                         [("dmc", DMCImageTransform, -1.0, 1.0), ("cavl", CAVLImageTransform, 0.0, 1.0)])
def test_scene_tensors_match_the_scenes(world, name, transform, lo, hi):
    method = get_method(name)
    cfg = method.config("quick")
    samples = method.samples(cfg)
    assert samples == 15_600  # one 96-frame VGGish example at 16 kHz
    t = scene_tensors(world, *_views(method, cfg))
    mid = world.num_frames // 2
    assert t["image"].shape == (4, 3, 64, 64) and t["audio"].shape == (4, samples)
    assert first_example(make_frontend(cfg.audio), t["audio"]).shape == (4, 1, 96, 32)
    for i in range(4):
        scene = world.scene(i)
        assert torch.equal(t["frames"][i], scene.frames[mid])
        assert torch.allclose(t["image"][i], transform(64)(scene.frames[mid]))
        assert torch.equal(t["audio"][i], scene.audio[:samples])  # the clip's first samples, as a waveform
        sounding = scene.boxes[mid][scene.sounding].tolist()
        assert len(sounding) == 1 and scene.boxes.shape[1] == 2  # one sounding, one silent instrument
        assert torch.equal(t["box"][i], naive_box_mask(sounding, 64, 64))
    assert float(t["image"].min()) >= lo and float(t["image"].max()) <= hi and float(t["image"].min()) < 0.5 * (lo + hi)
    assert scene_tensors(world, *_views(method, cfg), n=2)["image"].shape[0] == 2


def test_clip_tensors_and_pairs_read_back_the_written_world(tmp_path, world):
    cfg = DMC.config("quick")
    write_clips(world, tmp_path, split="test")
    clips = ClipDataset(tmp_path, "test", sample_rate=cfg.audio["sample_rate"], frames="middle")
    from_disk, in_memory = clip_tensors(clips, *_views(DMC, cfg)), scene_tensors(world, *_views(DMC, cfg))
    assert torch.equal(from_disk["box"], in_memory["box"])
    assert (from_disk["image"] - in_memory["image"]).abs().max() <= 2 / 255 + 1e-6  # PNG's 8 bits, in [-1, 1]
    assert torch.equal(from_disk["audio"], in_memory["audio"])  # float32 WAV: exact
    pairs = ClipPairs(clips, DMC.samples(cfg), DMC.image_transform(cfg))
    assert len(pairs) == 4 and pairs.item_name(2) == clips.clip_name(2)
    pair = pairs[2]
    assert torch.allclose(pair["image"], from_disk["image"][2]) and torch.equal(pair["audio"], from_disk["audio"][2])
    with pytest.raises(ValueError, match="frames='middle'"):
        ClipPairs(ClipDataset(tmp_path, "test"), DMC.samples(cfg), DMC.image_transform(cfg))
    with pytest.raises(ValueError, match="frames='middle'"):
        clip_tensors(ClipDataset(tmp_path, "test"), *_views(DMC, cfg))
    # without boxes in the manifest there is no ground truth, and the method's evaluation says so
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps({**r, "boxes": None}) + "\n" for r in rows))
    bare = clip_tensors(ClipDataset(tmp_path, "test", frames="middle"), *_views(DMC, cfg))
    assert "box" not in bare and bare["image"].shape == from_disk["image"].shape
    torch.manual_seed(0)
    model = DMC.model(cfg)
    report = DMC.evaluate(cfg.replace(batch_size=2), model, tmp_path, seed=0)
    assert "needs sounding-object boxes" in report["localization"] and report["clips"] == 4
    assert not any("ciou" in key for key in report) and torch.isfinite(torch.tensor(report["held_out_loss"]))
    assert model.training  # the evaluation restores the training mode


def test_score_maps_rank_a_perfect_map_first_and_add_the_baselines():
    gt = torch.zeros(3, 16, 16, dtype=torch.bool)
    gt[0, 2:8, 3:9], gt[1, 8:16, 0:8], gt[2, 5:11, 5:11] = True, True, True
    rows = score_maps({"perfect": gt.float() * 0.7 + 0.1, "inverse": 1.0 - gt.float()}, gt)
    assert list(rows) == ["perfect", "inverse", "random map", "centred box (half the image)", "whole image"]
    assert rows["perfect"] == {"ciou50": 1.0, "auc": pytest.approx(1.0), "mean_ciou": 1.0}
    assert rows["inverse"]["ciou50"] == 0.0
    assert rows["whole image"] == metrics.whole_image_baseline(gt.float())
    # the flat report upsamples coarse maps to the ground truth and names the baselines' rows
    coarse = gt.float().reshape(3, 8, 2, 8, 2).mean((2, 4))  # (3, 8, 8)
    flat = localization_report({"coarse": coarse}, gt)
    assert flat["whole_image_auc"] == rows["whole image"]["auc"]
    assert flat["center_box_ciou50"] == rows["centred box (half the image)"]["ciou50"]
    assert flat["coarse_ciou50"] == score_maps({"c": torch.nn.functional.interpolate(
        coarse[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]}, gt)["c"]["ciou50"]


def test_evaluation_is_independent_of_the_chunk_size():
    """The method's evaluation on its in-memory world (seed S + 1) in chunks of 4 and of 3 + 1."""
    cfg = DMC.config("quick", data=WORLD, eval_size=4)
    torch.manual_seed(0)
    model = DMC.model(cfg)
    whole = DMC.evaluate(cfg.replace(batch_size=4), model, None, seed=2)
    chunked = DMC.evaluate(cfg.replace(batch_size=3), model, None, seed=2)  # chunks of 3 and 1
    keys = [k for k in whole if "ciou" in k or k.endswith("_auc")]
    assert len(keys) == 27 and all(whole[k] == pytest.approx(chunked[k]) for k in keys)
    # the held-out loss of the chunk of 3 alone (the chunk of 1 has no negative), with the same draw of negatives
    data = scene_tensors(SynthOrchestra(**WORLD, seed=3), *_views(DMC, cfg))
    gen = torch.Generator().manual_seed(2)
    model.eval()
    with torch.no_grad():
        ref = DMC.step(cfg)(model, {"image": data["image"][:3], "audio": data["audio"][:3]}, generator=gen)
    assert chunked["held_out_loss"] == pytest.approx(float(ref["loss"]))
    assert whole["whole_image_auc"] == metrics.whole_image_baseline(data["box"].float())["auc"]


def test_compute_maps_is_independent_of_the_chunk_size_and_restores_the_mode():
    avol = get_method("avol")
    cfg = avol.config("quick")
    torch.manual_seed(0)
    model = avol.model(cfg)
    inputs = avol.example_batch(cfg, 5)
    maps_fn = avol.localization_maps(make_frontend(cfg.audio))
    whole = compute_maps(model, maps_fn, {k: inputs[k] for k in ("image", "audio")}, batch_size=5)
    chunked = compute_maps(model, maps_fn, {k: inputs[k] for k in ("image", "audio")}, batch_size=2)
    # 64 px, stride-2 conv1, three pools: a 4 x 4 lattice, made 16 x 16 by the quick config's dense map
    assert model.training and whole["avol"].shape == (5, 16, 16)
    torch.testing.assert_close(whole["avol"], chunked["avol"])
    with torch.no_grad():
        direct = model.eval().localize(inputs["image"], make_frontend(cfg.audio)(inputs["audio"]))
    torch.testing.assert_close(whole["avol"], direct)


def test_clips_are_cut_or_padded_to_the_configs_seconds(tmp_path):
    """CAVL's full-scale frontend takes 10 s; here a CAVL config asking for 0.5 s of 1 s and of 2 s clips."""
    cavl = get_method("cavl")
    full = cavl.config("full")
    cfg = full.replace(image_size=32, audio={**full.audio, "seconds": 0.5})
    for seed, duration in ((0, 1.0), (1, 2.0)):
        world = SynthOrchestra(family="c1", size=1, image_size=32, duration=duration, sample_rate=11025, seed=seed)
        write_clips(world, tmp_path, split="train", append=seed > 0, prefix=f"w{seed}")
    clips = ClipDataset(tmp_path, "train", sample_rate=11025, frames="middle")
    samples = cavl.samples(cfg)
    assert samples == round(0.5 * 11025)
    pairs = ClipPairs(clips, samples, cavl.image_transform(cfg))
    assert pairs[0]["audio"].shape == pairs[1]["audio"].shape == (samples,)
    assert torch.equal(pairs[1]["audio"], clips[1]["audio"][:samples])
    frontend = make_frontend(cfg.audio)
    frames = 1 + -(-samples // 256)  # CAVL: 1 + ceil(N / hop) STFT frames
    spec = first_example(frontend, torch.stack([pairs[0]["audio"], pairs[1]["audio"]]))
    assert spec.shape == (2, 1, 512, frames)
    assert torch.equal(clip_tensors(clips, samples, 32, cavl.image_transform(cfg))["audio"][1], pairs[1]["audio"])
    longer = cavl.samples(full.replace(audio={**full.audio, "seconds": 1.5}))  # longer than the first clip: padded
    padded = ClipPairs(clips, longer, cavl.image_transform(cfg))[0]["audio"]
    n = clips[0]["audio"].shape[0]
    assert padded.shape == (longer,) and torch.equal(padded[:n], clips[0]["audio"]) and not padded[n:].any()
    assert torch.equal(fit_length(clips[0]["audio"], 7), clips[0]["audio"][:7])
    tail = first_example(frontend, padded[None])[..., -3:]
    assert float(tail.max()) == pytest.approx(float(torch.log(torch.tensor(1e-6))), abs=1e-3)  # silence


def test_off_screen_index_is_the_next_scene_of_another_category():
    label = torch.tensor([3, 3, 5, 3, 7])
    assert off_screen_index(label).tolist() == [2, 2, 3, 4, 0]  # by hand: cyclically, the first later other label
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (40,), generator=g)
    naive = [next(j % 40 for j in range(i + 1, i + 40) if label[j % 40] != label[i]) for i in range(40)]
    assert off_screen_index(label).tolist() == naive
    with pytest.raises(ValueError, match="same category"):
        off_screen_index(torch.full((4,), 2))
