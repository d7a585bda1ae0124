"""Preflight: every bad file of a clip directory in one error, a cache that makes the second scan free."""

from __future__ import annotations

import importlib
import json
import os
import threading

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from avlib.data import ClipDataset, ClipFormatError, SynthOrchestra, write_clips
from avlib.data.preflight import PreflightError, preflight, preflight_cache_path

preflight_module = importlib.import_module("avlib.data.preflight")  # the module, not a function of that name

FRAMES = [0, 5, 10]


@pytest.fixture(scope="module")
def world():
    return SynthOrchestra(size=8, duration=0.6, image_size=16, seed=5)


@pytest.fixture()
def root(tmp_path, world):
    write_clips(world, tmp_path, range(6), frames=FRAMES)
    write_clips(world, tmp_path, [6, 7], frames=FRAMES, split="test", append=True)
    return tmp_path


@pytest.fixture()
def calls(monkeypatch):
    """Count the decoder calls preflight makes (the decoders themselves still run)."""
    counts, lock = {"audio": 0, "image": 0}, threading.Lock()
    for kind in counts:
        real = getattr(preflight_module, f"{kind}_facts")

        def counted(path, real=real, kind=kind):
            with lock:  # the decoders run in a thread pool
                counts[kind] += 1
            return real(path)

        monkeypatch.setattr(preflight_module, f"{kind}_facts", counted)
    return counts


def test_clean_data_passes_and_a_second_scan_decodes_nothing(root, calls):
    report = preflight(root, progress=False, workers=2)
    assert (report.clips, report.files, report.decoded, report.cached) == (8, 32, 32, 0)
    assert calls == {"audio": 8, "image": 24}
    assert report.audio_seconds == pytest.approx(8 * 0.6) and "8 clips, 32 files OK" in str(report)
    assert preflight_cache_path(root).is_file()

    again = preflight(root, progress=False)
    assert (again.decoded, again.cached) == (0, 32) and calls == {"audio": 8, "image": 24}

    # a changed file (new size or mtime) is decoded again, and only it
    frame = root / "clips" / "synth000002" / "frames" / "000005.png"
    Image.open(frame).save(frame)
    os.utime(frame, ns=(1, 1))
    third = preflight(root, split="train", progress=False)
    assert (third.clips, third.decoded, third.cached) == (6, 1, 23) and calls["image"] == 25
    # the other split's entries stayed in the cache
    assert preflight(root, split="test", progress=False).decoded == 0


def test_every_bad_file_is_listed_in_one_error(root, calls):
    clips = root / "clips"
    wav = clips / "synth000000" / "audio.wav"
    wave, sr = sf.read(wav, dtype="float32")
    sf.write(wav, wave[: len(wave) // 2], sr, subtype="FLOAT")  # shorter than the manifest says
    (clips / "synth000001" / "frames" / "000005.png").write_bytes(b"\x89PNG broken")
    (clips / "synth000002" / "frames" / "000010.png").unlink()
    Image.new("RGB", (20, 16)).save(clips / "synth000003" / "frames" / "000010.png")
    sf.write(clips / "synth000004" / "audio.wav", np.full(len(wave), np.nan, np.float32), sr, subtype="FLOAT")
    sf.write(clips / "synth000005" / "audio.wav", np.concatenate([wave, wave]), sr, subtype="FLOAT")  # too long
    manifest = root / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[6]["frame_indices"] = [0, 10, 5]
    rows[7]["duration"] = 9.0
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    with pytest.raises(PreflightError) as err:
        preflight(root, progress=False)
    problems = err.value.problems
    text = str(err.value)
    assert text.startswith(f"preflight of {root}: {len(problems)} problem(s) in 8 clip(s)")
    expect = [
        ("synth000000/audio.wav (clip 'synth000000'): is shorter than the manifest says: 0.300 s"),
        ("synth000001/frames/000005.png (clip 'synth000001'): cannot decode"),
        ("synth000002/frames/000010.png (clip 'synth000002'): missing"),
        ("synth000003/frames/000010.png (clip 'synth000003'): 20x16 pixels, but clips/synth000003/frames/000000.png "
         "is 16x16"),
        ("synth000004/audio.wav (clip 'synth000004'): contains NaN or inf"),
        ("synth000005/audio.wav (clip 'synth000005'): lasts 1.200 s but the manifest's duration is 0.600 s"),
        ("clip 'synth000006' in "),
        ("clip 'synth000007' in "),
    ]
    for needle in expect:
        assert sum(needle in line for line in problems) >= 1, needle
    assert any("frame_indices must increase" in line for line in problems)
    assert any("num_samples / sample_rate is 0.600 s but duration is 9.000 s" in line for line in problems)
    assert len(problems) == 9  # clip 7 also has a WAV that is not 9 s long
    assert all(str(root) in line for line in problems)

    # the good files were cached, the bad ones were not: fixing one costs one decode
    calls.update(audio=0, image=0)
    write_clips(SynthOrchestra(size=8, duration=0.6, image_size=16, seed=5), root / "fresh", [1], frames=FRAMES)
    good = root / "fresh" / "clips" / "synth000001" / "frames" / "000005.png"
    (clips / "synth000001" / "frames" / "000005.png").write_bytes(good.read_bytes())
    with pytest.raises(PreflightError) as err:
        preflight(root, progress=False)
    assert len(err.value.problems) == 8 and calls == {"audio": 0, "image": 1}


def test_audio_only_scan_and_the_dataset_shortcut(root, calls):
    (root / "clips" / "synth000001" / "frames" / "000005.png").write_bytes(b"junk")
    report = ClipDataset(root, frames="none").scan()
    assert report.files == 8 and calls["image"] == 0
    with pytest.raises(ClipFormatError, match="000005.png"):
        ClipDataset(root, split="train").scan()


def test_a_damaged_or_unwritable_cache_never_stops_a_scan(root, calls, monkeypatch):
    cache = preflight_cache_path(root)
    cache.parent.mkdir()
    cache.write_text("{ not json")
    assert preflight(root, progress=False).decoded == 32
    assert json.loads(cache.read_text())["version"] == 1
    cache.write_text(json.dumps({"version": 1, "files": {"clips/synth000000/audio.wav": {"kind": "audio"}}}))
    assert preflight(root, progress=False).decoded == 32
    data = json.loads(cache.read_text())
    data["files"]["clips/synth000000/audio.wav"]["facts"] = {}  # right stamp, facts lost: decode that file again
    cache.write_text(json.dumps(data))
    assert preflight(root, progress=False).decoded == 1

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(preflight_module.os, "replace", refuse)
    cache.unlink()
    with pytest.warns(UserWarning, match="cannot write its cache"):
        assert preflight(root, progress=False).decoded == 32
    assert not cache.exists() and not list(cache.parent.iterdir())


def test_bad_arguments(root):
    with pytest.raises(ValueError, match="workers must be at least 1"):
        preflight(root, workers=0)
    with pytest.raises(ValueError, match="tolerance must be non-negative"):
        preflight(root, tolerance=-1)
    with pytest.raises(ClipFormatError, match="no clips of split 'val'"):
        preflight(root, split="val")


# ---------------------------------------------------------------------------------- what ClipDataset says itself
def test_dataset_names_a_wav_shorter_than_its_manifest(root):
    wav = root / "clips" / "synth000003" / "audio.wav"
    wave, sr = sf.read(wav, dtype="float32")
    sf.write(wav, wave[:-100], sr, subtype="FLOAT")
    clips = ClipDataset(root)
    with pytest.raises(ClipFormatError, match=r"clip 'synth000003': audio file .*synth000003/audio.wav is shorter "
                                              r"than the manifest says: 0.594 s \(9500 samples at 16000 Hz\) for "
                                              r"num_samples 9600"):
        clips[3]
    with pytest.raises(ClipFormatError, match="synth000003/audio.wav is shorter"):
        clips.get_audio(3)
    assert clips[2]["audio"].shape == (9600,)


def test_dataset_names_a_frame_of_another_size(root):
    Image.new("RGB", (16, 12)).save(root / "clips" / "synth000001" / "frames" / "000010.png")
    with pytest.raises(ClipFormatError, match=r"image file .*synth000001/frames/000010.png is 16x12 pixels but "
                                              r"clips/synth000001/frames/000000.png is 16x16"):
        ClipDataset(root)[1]
