"""The dataset scripts (data_scripts/) on local fixtures: hand-made lists in the real files' formats, real MP4s
(SynthOrchestra scenes) served by a local stand-in for YouTube, each paper's split rules, the Flickr-SoundNet
evaluation against a naive copy of the public protocol, and WebDataset-style shards."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from avlib.data import ClipDataset
from avlib.data.audioset import AudioSetOntology, Segment
from avlib.data.flickr import flickr_ciou, flickr_scores, read_flickr_boxes
from avlib.data.shards import ShardClips, open_clips, write_shards
from avlib.data.splits import (
    cavl_audioset,
    dsol_audioset,
    esc50_folds,
    kinetics_sounds,
    music_splits,
    ots_audioset,
    read_esc50,
    read_kinetics,
)
from avlib.data.synthetic import SynthOrchestra
from avlib.data.video import scene_to_mp4
from avlib.metrics import binarize_maps

ROOT = Path(__file__).resolve().parents[1]


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ytid(k: int, tag: str = "v") -> str:
    return f"{tag}{k:010d}"[-11:]


@pytest.fixture(scope="module")
def mp4s(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("scenes")
    world = SynthOrchestra(size=2, image_size=64, duration=2.0, seed=5)
    return [scene_to_mp4(world.scene(i), root / f"scene{i}.mp4") for i in range(2)]


def serve(mp4s: list[Path], folder: Path, ids) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, vid in enumerate(ids):
        shutil.copy(mp4s[k % len(mp4s)], folder / f"{vid}.mp4")
    return folder


def common(out: Path, lists: Path, mirror: Path | None = None) -> list[str]:
    args = ["--out", str(out), "--lists", str(lists), "--no-progress", "--size", "32", "--fps", "5",
            "--backoff", "0", "--retries", "0"]
    return args + (["--mirror", str(mirror)] if mirror else [])


# ------------------------------------------------------------------------------------------------------------ MUSIC
def music_lists(n_per: int = 7) -> tuple[dict, dict]:
    solo = {"violin": [ytid(k, "vi") for k in range(n_per)], "flute": [ytid(k, "fl") for k in range(n_per)]}
    duet = {"flute violin": [ytid(k, "du") for k in range(3)] + [solo["violin"][6]]}  # one id listed again
    return solo, duet


def test_music_split_rules_of_dsol_and_cavl():
    solo, duet = music_lists()
    dsol, notes = music_splits(solo, duet, "dsol")
    by = {v.id: v for v in dsol}
    assert [by[i].split for i in solo["violin"]] == ["test"] * 5 + ["train"] * 2  # first five solo: test
    assert [by[i].split for i in duet["flute violin"][:3]] == ["test", "test", "train"]  # first two duet: test
    assert [by[i].extra["half"] for i in solo["flute"][5:]] == [1, 2]  # training solo halves: stage 1 / synthetic
    assert len(notes) == 1 and solo["violin"][6] in notes[0] and by[solo["violin"][6]].kind == "solo"
    cavl, _ = music_splits(solo, duet, "cavl")
    by = {v.id: v for v in cavl}
    assert [by[i].split for i in solo["flute"]] == ["val", "test"] + ["train"] * 5  # first: val, second: test
    assert {by[i].split for i in duet["flute violin"][:3]} == {"train"}


def test_music_script_fetches_cuts_and_reports_what_vanished(mp4s, tmp_path):
    solo, duet = {"violin": [ytid(k, "vi") for k in range(6)]}, {"flute violin": [ytid(0, "du")]}
    lists = tmp_path / "lists"
    lists.mkdir()
    for name, videos in (("MUSIC_solo_videos.json", solo), ("MUSIC_duet_videos.json", duet)):
        (lists / name).write_text(json.dumps({"version": 1.0, "videos": videos}, indent=4))
    remote = serve(mp4s, tmp_path / "remote", solo["violin"][:5] + duet["flute violin"])  # the sixth vanished
    out = tmp_path / "music"
    music = script("music")
    assert music.main([*common(out, lists, remote), "--scheme", "dsol"]) == 0  # vanished only: still a success
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["id"][:-5] for r in rows} == set(solo["violin"][:5] + duet["flute violin"])
    assert {r["duration"] for r in rows} == {1.0} and len(rows) == 12  # 1 s clips of 2 s videos
    assert {r["split"] for r in rows} == {"test"}  # the first five solo and the first duet are DSOL's test set
    failures = (out / "videos" / "failures.tsv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith(f"{solo['violin'][5]}\tvanished")
    clips = ClipDataset(out, split="test")
    assert clips[0]["frames"].shape[-2:] == (32, 32) and clips[0]["audio"].shape == (16000,)
    before = (out / "manifest.jsonl").read_text()
    assert music.main([*common(out, lists, remote), "--scheme", "dsol"]) == 0  # a rerun adds nothing
    assert (out / "manifest.jsonl").read_text() == before


# ---------------------------------------------------------------------------------------------------------- AudioSet
ONTOLOGY = [  # a hand-made corner of AudioSet's ontology (ids and names as in the real one)
    {"id": "/m/04rlf", "name": "Music", "child_ids": ["/m/04szw"]},
    {"id": "/m/04szw", "name": "Musical instrument", "child_ids": ["/m/0fx80y", "/m/07y_7", "/m/05r5c"]},
    {"id": "/m/0fx80y", "name": "Plucked string instrument", "child_ids": ["/m/042v_gx"]},
    {"id": "/m/042v_gx", "name": "Acoustic guitar", "child_ids": []},
    {"id": "/m/07y_7", "name": "Violin, fiddle", "child_ids": []},
    {"id": "/m/05r5c", "name": "Piano", "child_ids": []},
    {"id": "/m/0dgw9r", "name": "Human sounds", "child_ids": ["/m/015lz1"]},
    {"id": "/m/015lz1", "name": "Singing", "child_ids": []},
    {"id": "/t/dd00077", "name": "Tools", "child_ids": []},
    {"id": "/m/0jbk", "name": "Animal", "child_ids": ["/m/068hy"]},
    {"id": "/m/068hy", "name": "Domestic animals, pets", "child_ids": ["/m/0bt9lr"]},
    {"id": "/m/0bt9lr", "name": "Dog", "child_ids": []},
]
FIFTEEN = ["Acoustic guitar", "Violin, fiddle", "Piano"]  # a small instrument list, passed as --classes


def segs(*rows) -> list[Segment]:
    return [Segment(ytid(k, "as"), 0.5, 1.5, tuple(labels), f"x:{k}") for k, labels in rows]


def test_audioset_subsets_of_objects_that_sound_dsol_and_cavl():
    onto = AudioSetOntology(ONTOLOGY)
    train = segs((0, ["/m/042v_gx"]), (1, ["/m/0bt9lr"]), (2, ["/m/015lz1", "/m/0bt9lr"]), (3, ["/t/dd00077"]))
    ots = ots_audioset(onto, train, segs((9, ["/m/07y_7"])))
    assert {s.segment.ytid for s in ots} == {ytid(k, "as") for k in (0, 2, 3, 9)}  # the dog alone is left out
    assert {s.split for s in ots if s.segment.ytid == ytid(9, "as")} == {"test"}
    assert ots[1].classes == ("/m/015lz1",)  # only the subset's classes are carried
    unbal = segs((0, ["/m/042v_gx", "/m/0fx80y"]), (1, ["/m/042v_gx", "/m/07y_7"]), (2, ["/m/0bt9lr"]))
    bal = segs(*[(k, ["/m/05r5c"]) for k in range(10, 30)])
    dsol = dsol_audioset(onto, unbal, bal, FIFTEEN)
    assert [(s.split, s.n_sources) for s in dsol[:2]] == [("train", 1), ("train", 2)]  # solo (stage 1), multi
    assert len(dsol) == 22 and {s.split for s in dsol[2:]} == {"test"}
    cavl = cavl_audioset(onto, unbal, bal, FIFTEEN)
    halves = [s.split for s in cavl[2:]]
    assert set(halves) == {"val", "test"} and cavl_audioset(onto, unbal, bal, FIFTEEN) == cavl  # stable halves


def write_audioset(folder: Path, segments: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ontology.json").write_text(json.dumps(ONTOLOGY))
    header = "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=2, num_segs=2, num_unique_labels=2\n" \
             "# YTID, start_seconds, end_seconds, positive_labels\n"
    (folder / "balanced_train_segments.csv").write_text(header + "".join(segments))
    (folder / "unbalanced_train_segments.csv").write_text(header + "".join(segments[:1]))
    return folder


def test_audioset_script_cuts_segments_and_writes_curriculum_levels(mp4s, tmp_path):
    ids = [ytid(k, "as") for k in range(3)]
    lists = write_audioset(tmp_path / "lists", [f'{ids[0]}, 0.500, 1.500, "/m/042v_gx"\n',
                                                f'{ids[1]}, 0.000, 1.000, "/m/042v_gx,/m/0bt9lr"\n',
                                                f'{ids[2]}, 1.000, 2.000, "/m/04rlf"\n'])
    audioset = script("audioset")
    out = tmp_path / "as"
    assert audioset.main([*common(out, lists), "--subset", "curriculum", "--lists-only"]) == 0
    c1, c2 = (out / "segments" / "curriculum" / f"c{k}.csv" for k in (1, 2))
    assert ids[0] in c1.read_text() and ids[1] in c2.read_text() and ids[2] not in c1.read_text() + c2.read_text()
    remote = serve(mp4s, tmp_path / "remote", ids)
    assert audioset.main([*common(out, lists, remote), "--subset", "dsol", "--classes", ";".join(FIFTEEN)]) == 0
    rows = {r["id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert set(rows) == {f"{ids[0]}_500", f"{ids[1]}_0"}  # YTID_<start ms>; the Music-only clip is no instrument
    assert rows[f"{ids[0]}_500"]["split"] == "train" and rows[f"{ids[1]}_0"]["split"] == "test"
    assert rows[f"{ids[0]}_500"]["duration"] == 1.0 and rows[f"{ids[0]}_500"]["source_start"] == 0.5
    assert len(rows[f"{ids[0]}_500"]["frames"]) == 5  # 1 s at 5 fps
    assert (out / "segments" / "dsol" / "test.csv").read_text().count(ids[1]) == 1


# --------------------------------------------------------------------------------------------------------- Kinetics
def test_kinetics_sounds_keeps_l3_classes_with_the_csv_split(mp4s, tmp_path):
    path = tmp_path / "train.csv"
    ids = [ytid(k, "ki") for k in range(4)]
    path.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                    f"playing violin,{ids[0]},0,1,train,0\n"
                    f"blowing out candles,{ids[1]},1,2,validate,0\n"
                    f"cooking egg,{ids[2]},0,1,train,0\n"
                    f'"playing bagpipes",{ids[3]},0,1,test,0\n')
    kept, missing = kinetics_sounds(read_kinetics(path))
    assert [(r.youtube_id, l3) for r, l3 in kept] == [(ids[0], "playing violin"), (ids[1], "blowing out"),
                                                      (ids[3], "playing bagpipes")]
    assert len(missing) == 31
    remote = serve(mp4s, tmp_path / "remote", ids[:2])  # the bagpipes video vanished
    out = tmp_path / "ks"
    assert script("kinetics_sounds").main([*common(out, tmp_path, remote), "--csv", str(path)]) == 0
    rows = {r["id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert rows[f"{ids[1]}_000001_000002"]["split"] == "val" and rows[f"{ids[0]}_000000_000001"]["label"] == 32


# ----------------------------------------------------------------------------------------------------------- ESC-50
def esc50_zip(path: Path, n: int = 10) -> Path:
    rows = [["filename", "fold", "target", "category", "esc10", "src_file", "take"]]
    with zipfile.ZipFile(path, "w") as zf:
        for k in range(n):
            name = f"{k % 5 + 1}-{1000 + k}-A-{k % 2}.wav"
            rows.append([name, str(k % 5 + 1), str(k % 2), ["dog", "rain"][k % 2], str(k % 2 == 0), str(1000 + k), "A"])
            wav = path.parent / name
            sf.write(wav, 0.1 * np.sin(np.arange(44100 // 10) * (k + 1) / 50), 44100)
            zf.write(wav, f"ESC-50-master/audio/{name}")
        lines = "\n".join(",".join(r) for r in rows) + "\n"
        zf.writestr("ESC-50-master/meta/esc50.csv", lines)
    return path


def test_esc50_script_writes_five_folds_and_refuses_a_changed_archive(tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    esc50_zip(host / "ESC-50-master.zip")
    out, lists = tmp_path / "esc", tmp_path / "lists"
    esc50 = script("esc50")
    args = ["--out", str(out), "--lists", str(lists), "--list-base", host.as_uri(), "--sample-rate", "16000"]
    assert esc50.main(args) == 0
    clips = ClipDataset(out, frames="none")
    assert len(clips) == 10 and {r["split"] for r in clips.rows} == {f"fold{k}" for k in range(1, 6)}
    assert clips[0]["audio"].shape == (1600,) and clips.rows[0]["label_name"] == "dog"
    meta = read_esc50(next(lists.rglob("esc50.csv")))
    folds = esc50_folds(meta)
    assert [len(test) for _, test in folds] == [2] * 5 and all(len(tr) == 8 for tr, _ in folds)
    # the archive here no longer matches the digest recorded at the first fetch: refused, nothing converted
    (lists / "ESC-50-master.zip").write_bytes(b"not the archive")
    assert esc50.main([*args[:2], "--lists", str(lists), "--sample-rate", "16000"]) == 1


# ------------------------------------------------------------------------------------------------- Flickr-SoundNet
def naive_public_ciou(heat: np.ndarray, boxes: list[list[tuple[int, int, int, int]]]) -> list[float]:
    """The public evaluator, step by step as its code does it: boxes scaled int(224 * v / 256), each box a map of
    ones added up, halved, clipped at 1; the map normalised as 1 - normalize(-map), cut at its sorted pixel
    number 224*224/2, pixels above the cut kept; cIoU against the consensus map."""
    out = []
    for item, item_boxes in zip(heat, boxes, strict=True):
        gt_map = np.zeros([224, 224])
        for box in item_boxes:
            x0, y0, x1, y1 = (int(224 * v / 256) for v in box)
            temp = np.zeros([224, 224])
            temp[y0:y1, x0:x1] = 1
            gt_map += temp
        gt_map /= 2
        gt_map[gt_map > 1] = 1
        neg = -item
        pred = 1 - (neg - neg.min()) / (neg.max() - neg.min())
        threshold = np.sort(pred.flatten())[int(pred.shape[0] * pred.shape[1] / 2)]
        pred[pred > threshold] = 1
        pred[pred < 1] = 0
        infer = (pred >= 0.5).astype(float)
        out.append(np.sum(infer * gt_map) / (np.sum(gt_map) + np.sum(infer * (gt_map == 0))))
    return out


def test_flickr_evaluation_matches_the_public_protocol_including_single_boxes():
    rng = np.random.default_rng(0)
    heat = rng.integers(0, 50, (4, 224, 224)).astype(np.float64)  # many ties at the cut
    heat[3] = rng.standard_normal((224, 224))  # distinct values
    boxes = [[(10, 20, 130, 140)],  # a single box: it counts 0.5 everywhere
             [(0, 0, 256, 256), (30, 30, 90, 200), (40, 35, 100, 210)],
             [(5, 6, 77, 255)],
             [(100, 100, 250, 180), (120, 90, 256, 190)]]
    ours = flickr_ciou(torch.from_numpy(heat), boxes).numpy()
    np.testing.assert_allclose(ours, naive_public_ciou(heat.copy(), boxes), rtol=1e-6)
    scores = flickr_scores(torch.from_numpy(heat), boxes)
    assert scores["mean_ciou"] == pytest.approx(float(np.mean(ours)))
    assert float(flickr_ciou(torch.zeros(1, 8, 8), boxes[:1])[0]) == 0.0  # a constant map keeps nothing
    assert int(binarize_maps(torch.from_numpy(heat[3:])).sum()) == 224 * 224 // 2 - 1  # distinct values: N/2 - 1


def flickr_source(folder: Path, items: dict[str, list[tuple[int, int, int, int]]]) -> Path:
    for sub in ("Annotations", "frames", "audio"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for k, (item, boxes) in enumerate(items.items()):
        xml = "".join(f"<bbox><annotator>{a}</annotator><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                      f"<ymax>{b[3]}</ymax></bbox>" for a, b in enumerate(boxes))
        (folder / "Annotations" / f"{item}.xml").write_text(
            f"<annotation><file>{item}.jpg</file><bboxes>{xml}</bboxes></annotation>")
        Image.fromarray(np.full((256, 256, 3), 40 * k, np.uint8)).save(folder / "frames" / f"{item}.jpg")
        sf.write(folder / "audio" / f"{item}.wav", np.zeros(22050, np.float32), 22050)
    return folder


def test_flickr_script_writes_pairs_with_their_annotator_boxes(tmp_path):
    items = {"10000130166": [(10, 20, 130, 140)], "10007936344": [(0, 0, 128, 128), (64, 64, 256, 256)]}
    source = flickr_source(tmp_path / "Test", items)
    (source / "audio" / "10007936344.wav").unlink()  # one pair lacks its sound
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "flickr_test.csv").write_text("10000130166,202\n10007936344,0\n")
    assert read_flickr_boxes(source / "Annotations" / "10007936344.xml") == items["10007936344"]
    out = tmp_path / "flickr"
    flickr = script("flickr_soundnet")
    assert flickr.main(["--out", str(out), "--lists", str(lists), "--source", str(source)]) == 1
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["10000130166"] and rows[0]["annotator_boxes"] == [[10, 20, 130, 140]]
    item = ClipDataset(out)[0]
    assert item["frames"].shape == (1, 3, 256, 256) and item["boxes"].shape == (1, 1, 4)
    flickr_source(tmp_path / "Test", items)  # the sound is back: the rerun adds it, keeps the first
    assert flickr.main(["--out", str(out), "--lists", str(lists), "--source", str(source)]) == 0
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2


# ----------------------------------------------------------------------------------------------------------- shards
def test_shards_give_the_same_items_as_the_clip_directory(tmp_path):
    from avlib.data import write_clips

    world = SynthOrchestra(size=5, image_size=16, duration=0.4, fps=5, seed=1)
    root = tmp_path / "clips"
    write_clips(world, root, prefix="a.b")  # ids with dots
    paths = write_shards(root, tmp_path / "shards", max_count=2)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    direct, sharded = ClipDataset(root), open_clips(tmp_path / "shards")
    assert isinstance(sharded, ShardClips) and isinstance(open_clips(root), ClipDataset) and len(sharded) == 5
    for j in range(5):
        a, b = direct[j], sharded[j]
        assert a.keys() == b.keys() and a["id"] == b["id"]
        for key, value in a.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(value, b[key])
            else:
                assert value == b[key]
    assert sharded.scan() == 5
    with pytest.raises(FileExistsError):
        write_shards(root, tmp_path / "shards", max_count=2)


def test_csv_of_esc50_rejects_a_bad_fold(tmp_path):
    path = tmp_path / "esc50.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["filename", "fold", "target", "category", "esc10", "src_file", "take"],
                                 ["1-1-A-0.wav", "6", "0", "dog", "True", "1", "A"]])
    with pytest.raises(ValueError, match=r"esc50.csv:2: fold must be 1-5"):
        read_esc50(path)
