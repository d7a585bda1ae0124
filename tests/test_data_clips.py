"""The clip format: disk round trip, real-video preparation with PyAV, and every kind of bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from avlib.data import AVCPairs, ClipDataset, ClipFormatError, SynthClips, SynthOrchestra, write_clips

ROOT = Path(__file__).resolve().parents[1]


def _load_prepare_clips():
    spec = importlib.util.spec_from_file_location("prepare_clips", ROOT / "data_scripts" / "prepare_clips.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def world():
    return SynthOrchestra(size=6, family=["solo", "duet", "mosaic"], duration=1.2, image_size=32, seed=1)


@pytest.fixture()
def written(tmp_path, world):
    write_clips(world, tmp_path, range(4), frames=[0, 10, 20, 29])
    write_clips(world, tmp_path, [4, 5], frames=[0, 10, 20, 29], split="test", append=True)
    return tmp_path


def test_disk_round_trip_gives_identical_tensors(written, world):
    disk = ClipDataset(written, split="train")
    memory = SynthClips(world, range(4), frames=[0, 10, 20, 29])
    assert len(disk) == len(memory) == 4
    for j in range(4):
        a, b = disk[j], memory[j]
        assert a.keys() == b.keys()
        for key, value in b.items():
            if torch.is_tensor(value):
                assert a[key].dtype == value.dtype and torch.equal(a[key], value), key
            else:
                assert a[key] == value, key
    assert len(ClipDataset(written, split="test")) == 2 and len(ClipDataset(written)) == 6
    with pytest.raises(FileExistsError, match="already exists"):
        write_clips(world, written, [0])
    with pytest.raises(FileExistsError, match="prefix"):
        write_clips(world, written, [0], append=True)
    write_clips(SynthOrchestra(size=2, seed=9, duration=0.5), written, [0], append=True, prefix="other")
    assert ClipDataset(written)[6]["id"] == "other000000"


def test_frame_selection_middle_and_none(written, world):
    full = ClipDataset(written)[2]
    middle = ClipDataset(written, frames="middle")[2]
    assert middle["frame_indices"].tolist() == [20] and torch.equal(middle["frames"][0], full["frames"][2])
    assert torch.equal(middle["boxes"][0], full["boxes"][2])
    audio_only = ClipDataset(written, frames="none")[2]
    assert "frames" not in audio_only and torch.equal(audio_only["audio"], full["audio"])
    with pytest.raises(ValueError, match="frames must be"):
        ClipDataset(written, frames="first")


def test_avc_pairs_read_the_same_from_disk_and_memory(written, world):
    disk = AVCPairs(ClipDataset(written, split="train"), 0.6, negative_mode="frame_aligned", seed=2)
    batch = disk.batch(range(8))
    assert batch["audio"].shape == (8, 9600) and batch["image"].shape == (8, 3, 32, 32)
    assert (batch["audio_center"] % 640 == 0).all()
    # the positive's audio is exactly the window of the in-memory scene
    i = 0
    v, k = int(batch["video_index"][i]), int(batch["frame_index"][i])
    assert torch.equal(batch["audio"][i], world.get_audio(v)[k * 640 - 4800 : k * 640 + 4800])


def _write_mp4(path: Path, scene) -> None:
    frames = (scene.frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=int(scene.fps))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"crf": "12"}
        audio = container.add_stream("aac", rate=scene.sample_rate)
        audio.layout = "mono"
        for img in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        chunk = av.AudioFrame.from_ndarray(scene.audio.numpy()[None], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = scene.sample_rate, 0
        for packet in [*audio.encode(chunk), *audio.encode(None)]:
            container.mux(packet)


def test_prepare_clips_on_a_real_mp4(tmp_path, capsys):
    scene = SynthOrchestra(size=1, duration=2.0, image_size=64, seed=3)[0]
    videos = tmp_path / "videos" / "violin"
    videos.mkdir(parents=True)
    _write_mp4(videos / "take1.mp4", scene)
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "clips"
    prepare = _load_prepare_clips()
    status = prepare.main([str(tmp_path / "videos"), str(out), "--size", "0", "--labels-from-dirs"])
    log = capsys.readouterr().err
    assert status == 1  # the unreadable file is skipped, and the exit status says so
    assert "SKIP" in log and "broken.mp4" in log and "1 skipped for errors" in log
    clips = ClipDataset(out)
    assert len(clips) == 1
    item = clips[0]
    assert item["frames"].shape == (50, 3, 64, 64) and item["sample_rate"] == 16000 and item["fps"] == 25.0
    assert item["label"] == 0 and clips.rows[0]["label_name"] == "violin"
    # decoded frames and audio match what was encoded (lossy codecs: PSNR and correlation)
    mse = ((item["frames"] - scene.frames) ** 2).mean((1, 2, 3))
    assert (10 * torch.log10(1 / mse)).min() > 25
    n = scene.audio.numel()
    assert item["audio"].numel() >= n
    assert np.corrcoef(item["audio"][:n].numpy(), scene.audio.numpy())[0, 1] > 0.99

    # one-second clips, as DSOL cuts its videos
    out1 = tmp_path / "clips1"
    (videos / "broken.mp4").unlink()
    assert prepare.main([str(tmp_path / "videos"), str(out1), "--size", "32", "--clip-seconds", "1"]) == 0
    cut = ClipDataset(out1)
    assert len(cut) == 2 and cut[1]["frames"].shape == (25, 3, 32, 32) and cut[1]["audio"].shape == (16000,)
    assert cut[1]["frame_indices"].tolist() == list(range(25))


def test_prepare_clips_reports_failure_when_nothing_is_readable(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"junk")
    assert _load_prepare_clips().main([str(tmp_path / "in"), str(tmp_path / "out")]) == 1
    assert "SKIP" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ bad input
def test_missing_manifest_and_empty_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        ClipDataset(tmp_path)
    (tmp_path / "manifest.jsonl").write_text("\n")
    with pytest.raises(ClipFormatError, match="has no clips"):
        ClipDataset(tmp_path)


def test_malformed_rows_are_all_reported_at_once(written):
    manifest = written / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["audio"]
    lines[1] = json.dumps(broken)
    lines[2] = "{not json"
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ClipFormatError, match="2 bad manifest row") as err:
        ClipDataset(written)
    assert "manifest.jsonl line 2: clip" in str(err.value) and "lacks audio" in str(err.value)
    assert "manifest.jsonl line 3: not valid JSON" in str(err.value)


def test_missing_files_are_all_listed(written):
    (written / "clips" / "synth000001" / "audio.wav").unlink()
    (written / "clips" / "synth000002" / "frames" / "000010.png").unlink()
    with pytest.raises(ClipFormatError, match="2 missing file") as err:
        ClipDataset(written)
    assert "synth000001/audio.wav" in str(err.value) and "synth000002/frames/000010.png" in str(err.value)


def test_corrupt_files_name_the_file_and_scan_reports_all(written):
    (written / "clips" / "synth000000" / "audio.wav").write_bytes(b"RIFF....garbage")
    (written / "clips" / "synth000003" / "frames" / "000020.png").write_bytes(b"\x89PNG broken")
    clips = ClipDataset(written)
    with pytest.raises(ClipFormatError, match=r"cannot read audio file .*synth000000/audio.wav"):
        clips[0]
    with pytest.raises(ClipFormatError, match=r"cannot read image file .*synth000003/frames/000020.png"):
        clips[3]
    with pytest.raises(ClipFormatError, match=r"2 problem\(s\) in 6 clip\(s\)") as err:
        clips.scan()
    assert "synth000000/audio.wav (clip 'synth000000'): cannot decode" in str(err.value)
    assert "synth000003/frames/000020.png (clip 'synth000003'): cannot decode" in str(err.value)


def test_stereo_and_other_rates_are_downmixed_and_resampled(written):
    path = written / "clips" / "synth000000" / "audio.wav"
    mono, sr = sf.read(path, dtype="float32")
    sf.write(path, np.stack([mono, 0.5 * mono], 1), sr, subtype="FLOAT")
    clips = ClipDataset(written)
    torch.testing.assert_close(clips[0]["audio"], torch.from_numpy(0.75 * mono))
    at_48k = ClipDataset(written, sample_rate=48000)
    assert at_48k[1]["audio"].shape[0] == at_48k.clip_samples(1) == 3 * mono.shape[0]


def test_clip_too_short_for_the_window_is_named(written):
    pairs = AVCPairs(ClipDataset(written), window_seconds=1.5)
    with pytest.raises(ValueError, match=r"clip 'synth0000\d\d' of .*: 1.200 s of audio .* too short"):
        pairs[0]


def test_silent_clip_flows_through_frontends_without_nan(tmp_path):
    world = SynthOrchestra(size=2, duration=1.0, seed=4)
    write_clips(world, tmp_path, [0, 1])
    sf.write(tmp_path / "clips" / "synth000000" / "audio.wav", np.zeros(16000, dtype=np.float32), 16000)
    from avlib.audio import DSOLLogMel, VGGishLogMel

    audio = ClipDataset(tmp_path)[0]["audio"][None]
    for frontend in (VGGishLogMel(), DSOLLogMel()):
        assert torch.isfinite(frontend(audio)).all()
