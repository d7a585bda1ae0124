"""data_scripts/prepare_clips.py on small real videos: unique ids, idempotent --append, truncated files, labels."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import av
import numpy as np
import pytest

from avlib.data import ClipDataset

ROOT = Path(__file__).resolve().parents[1]
FPS, SR, SIZE = 25, 16000, 32


@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("prepare_clips", ROOT / "data_scripts" / "prepare_clips.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def encode(path: Path, level: int = 128, seconds: float = 1.0, tone: float = 440.0) -> Path:
    """A tiny video: ``seconds`` of flat grey frames of brightness ``level`` at 25 fps, and a sine tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vcodec, acodec = ("mpeg4", "mp3") if path.suffix == ".avi" else ("libx264", "aac")
    with av.open(str(path), "w") as container:
        video = container.add_stream(vcodec, rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        audio = container.add_stream(acodec, rate=SR)
        audio.layout = "mono"
        for _ in range(int(seconds * FPS)):
            image = np.full((SIZE, SIZE, 3), level, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        t = np.arange(int(seconds * SR)) / SR
        chunk = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * tone * t)).astype(np.float32)[None],
                                           format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = SR, 0
        for packet in [*audio.encode(chunk), *audio.encode(None)]:
            container.mux(packet)
    return path


def truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def run(prepare, capsys, *args) -> tuple[int, str]:
    status = prepare.main([str(a) for a in args])
    return status, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------- clip ids
def test_same_stem_different_extension_or_folder_get_their_own_clips(tmp_path, prepare, capsys):
    videos = tmp_path / "videos"
    encode(videos / "ok.mp4", level=40)
    encode(videos / "ok.avi", level=120)
    encode(videos / "violin" / "ok.mp4", level=200)
    out = tmp_path / "out"
    status, log = run(prepare, capsys, videos, out, "--size", "0")
    assert status == 0, log
    clips = ClipDataset(out)
    by_id = {row["id"]: j for j, row in enumerate(clips.rows)}
    assert set(by_id) == {"ok.mp4", "ok.avi", "violin_ok.mp4"}
    for cid, level in (("ok.mp4", 40), ("ok.avi", 120), ("violin_ok.mp4", 200)):
        row = clips.rows[by_id[cid]]
        assert Path(row["source"]).name == cid.split("_")[-1] and row["audio"] == f"clips/{cid}/audio.wav"
        # each clip holds its own video's frames: nothing was overwritten by a namesake
        assert abs(clips[by_id[cid]]["frames"].mean().item() * 255 - level) < 6, cid


def test_ids_that_still_collide_are_refused_by_name(tmp_path, prepare, capsys):
    videos = tmp_path / "videos"
    encode(videos / "a b.mp4")
    encode(videos / "a_b.mp4")
    encode(videos / "c.mp4")
    out = tmp_path / "out"
    status, log = run(prepare, capsys, videos, out)
    assert status == 1
    skips = [line for line in log.splitlines() if line.startswith("[prepare_clips] SKIP")]
    assert len(skips) == 2 and all("'a_b.mp4'" in line and "rename one" in line for line in skips)
    assert "a b.mp4" in skips[0] + skips[1] and "2 skipped for errors" in log
    assert [row["id"] for row in ClipDataset(out).rows] == ["c.mp4"]
    assert not (out / "clips" / "a_b.mp4").exists()


# ---------------------------------------------------------------------------------------------------- --append
def test_append_is_idempotent_and_adds_only_new_videos(tmp_path, prepare, capsys):
    videos = tmp_path / "videos"
    encode(videos / "cello" / "a.mp4")
    encode(videos / "violin" / "b.mkv", seconds=2.0)
    out = tmp_path / "out"
    common = [videos, out, "--clip-seconds", "1", "--labels-from-dirs"]
    assert run(prepare, capsys, *common)[0] == 0
    manifest = (out / "manifest.jsonl").read_text()
    before = snapshot(out)
    assert len(manifest.splitlines()) == 3  # a: one 1 s clip, b: two

    status, log = run(prepare, capsys, *common)
    assert status == 1 and "ERROR" in log and "pass --append" in log

    status, log = run(prepare, capsys, *common, "--append")
    assert status == 0
    assert log.count(": already in the manifest (clip") == 2  # one line per video, not per clip
    assert "clip 'cello_a.mp4_0000'" in log and "0 video(s) → 0 clip(s)" in log
    assert snapshot(out) == before  # no row duplicated, no file rewritten

    # a new folder keeps the old numbering: violin stays 1, flute is numbered after it
    encode(videos / "flute" / "c.mp4")
    status, log = run(prepare, capsys, *common, "--append")
    assert status == 0 and "1 video(s) → 1 clip(s)" in log
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows][:3] == [json.loads(line)["id"] for line in manifest.splitlines()]
    assert {r["label_name"]: r["label"] for r in rows} == {"cello": 0, "violin": 1, "flute": 2}
    assert len(ClipDataset(out)) == 4


def test_append_never_overwrites_a_folder_it_did_not_record(tmp_path, prepare, capsys):
    videos = tmp_path / "videos"
    encode(videos / "a.mp4")
    encode(videos / "b.mp4")
    out = tmp_path / "out"
    leftover = out / "clips" / "b.mp4"
    leftover.mkdir(parents=True)
    (leftover / "keep.txt").write_text("mine")
    status, log = run(prepare, capsys, videos, out)
    assert status == 1
    assert "SKIP" in log and "b.mp4 exists but is not in the manifest" in log
    assert (leftover / "keep.txt").read_text() == "mine" and sorted(p.name for p in leftover.iterdir()) == ["keep.txt"]
    assert [r["id"] for r in ClipDataset(out).rows] == ["a.mp4"]
    assert not any(p.name.startswith(".partial-") for p in (out / "clips").iterdir())


def test_append_refuses_a_broken_manifest_by_line(tmp_path, prepare, capsys):
    videos = tmp_path / "videos"
    encode(videos / "a.mp4")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").write_text('{"id": "x"}\n{"id": "y", "aud\n')
    status, log = run(prepare, capsys, videos, out, "--append")
    assert status == 1
    assert len(log.strip().splitlines()) == 1 and "manifest.jsonl line 2: not valid JSON" in log
    assert (out / "manifest.jsonl").read_text() == '{"id": "x"}\n{"id": "y", "aud\n'


# ------------------------------------------------------------------------------------------- truncated files
def test_truncated_videos_are_named_and_skipped_and_the_rest_go_on(tmp_path, prepare, capsys):
    videos = tmp_path / "videos"
    encode(videos / "good.mp4", seconds=2.0)
    truncate(encode(videos / "cut.mkv", seconds=2.0), 0.6)  # decodes without an error, to about 1.1 s
    truncate(encode(videos / "cut.mp4", seconds=2.0), 0.6)
    out = tmp_path / "out"
    status, log = run(prepare, capsys, videos, out)
    assert status == 1
    skipped = {Path(line.split("SKIP ")[1].split(":")[0]).name: line for line in log.splitlines()
               if line.startswith("[prepare_clips] SKIP")}
    assert set(skipped) == {"cut.mkv", "cut.mp4"}
    assert "truncated?" in skipped["cut.mkv"] and "but the file says 2.06 s" in skipped["cut.mkv"]
    assert "2 skipped for errors" in log.splitlines()[-1] and "1 video(s) → 1 clip(s)" in log.splitlines()[-1]
    clips = ClipDataset(out)
    assert [r["id"] for r in clips.rows] == ["good.mp4"] and clips.rows[0]["duration"] >= 2.0

    # it is the duration check that refused the MKV: with a looser limit it goes through, shorter
    status, log = run(prepare, capsys, videos, tmp_path / "loose", "--max-missing-seconds", "5")
    rows = {r["id"]: r for r in ClipDataset(tmp_path / "loose").rows}
    assert status == 1 and set(rows) == {"good.mp4", "cut.mkv"} and rows["cut.mkv"]["duration"] < 1.5


# ---------------------------------------------------------------------------------------- labels and arguments
def test_top_level_videos_get_no_label_with_labels_from_dirs(tmp_path, prepare, capsys):
    videos = tmp_path / "videos"
    encode(videos / "top.mp4")
    encode(videos / "violin" / "a.mp4")
    out = tmp_path / "out"
    status, log = run(prepare, capsys, videos, out, "--labels-from-dirs")
    assert status == 0
    assert "NOTE 1 video(s) at the top level" in log and "no label" in log
    clips = ClipDataset(out)
    rows = {r["id"]: r for r in clips.rows}
    assert rows["top.mp4"]["label"] is None and rows["top.mp4"]["label_name"] is None
    assert rows["violin_a.mp4"]["label"] == 0 and rows["violin_a.mp4"]["label_name"] == "violin"
    assert sorted(clips.clip_label(j) for j in range(2)) == [-1, 0]


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--fps", "0", "--fps must be positive"),
    ("--sample-rate", "-5", "--sample-rate must be positive"),
    ("--clip-seconds", "-1", "--clip-seconds must be zero or positive"),
    ("--size", "-2", "--size must be zero or positive"),
])
def test_bad_arguments_get_one_line(tmp_path, prepare, capsys, flag, value, says):
    (tmp_path / "videos").mkdir()
    status, log = run(prepare, capsys, tmp_path / "videos", tmp_path / "out", flag, value)
    lines = log.strip().splitlines()
    assert status == 1 and len(lines) == 1 and lines[0].startswith(f"[prepare_clips] ERROR {says}, got {value}")
    assert not (tmp_path / "out").exists()
    status, log = run(prepare, capsys, tmp_path / "nowhere", tmp_path / "out")
    assert status == 1 and "input folder not found" in log and "nowhere" in log
