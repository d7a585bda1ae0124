"""avlib.data.download without the internet: real MP4 files (SynthOrchestra scenes, H.264 + AAC) served by a local
stand-in for YouTube that can make a video vanish, break off half-way, serve a truncated file or be slow."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from avlib.data.download import (
    FlakyMirror,
    MissingDependency,
    VideoRequest,
    YtDlpFetcher,
    download_videos,
    fetch_files,
    probe_video,
    read_sums,
)
from avlib.data.safety import Download, sha256_file
from avlib.data.synthetic import SynthOrchestra
from avlib.data.video import scene_to_mp4

IDS = ["aaaaaaaaaa1", "bbbbbbbbbb2", "-cccccccc_3", "ddddddddd-4"]  # YouTube ids; one starts with '-'


@pytest.fixture(scope="module")
def remote(tmp_path_factory) -> Path:
    """A folder of MP4s (2 s, 64x64) named by id, as the remote holds them."""
    root = tmp_path_factory.mktemp("remote")
    world = SynthOrchestra(size=len(IDS), image_size=64, duration=2.0, seed=3)
    for i, vid in enumerate(IDS):
        scene_to_mp4(world.scene(i), root / f"{vid}.mp4")
    return root


def quiet(lines: list[str]):
    return lines.append


def test_vanished_and_broken_videos_are_logged_and_the_others_fetched(remote, tmp_path):
    fetch = FlakyMirror(remote, vanished=[IDS[1]], truncated=[IDS[2]])
    waits, lines = [], []
    report = download_videos([VideoRequest(v) for v in IDS], tmp_path, fetch, workers=2, retries=2, backoff=0.5,
                             progress=False, sleep=waits.append, log=quiet(lines))
    assert sorted(report.fetched) == sorted([IDS[0], IDS[3]])
    assert set(report.vanished) == {IDS[1]} and set(report.failed) == {IDS[2]}
    assert "truncated" in report.failed[IDS[2]] or "cannot be read" in report.failed[IDS[2]]
    assert fetch.attempts[IDS[1]] == 1  # gone for good: not retried
    assert fetch.attempts[IDS[2]] == 3 and waits == [0.5, 1.0]  # retried with back-off: 0.5 s, then 1 s
    for vid in (IDS[0], IDS[3]):
        assert (tmp_path / f"{vid}.mp4").read_bytes() == (remote / f"{vid}.mp4").read_bytes()
    assert not (tmp_path / f"{IDS[2]}.mp4").exists() and not list(tmp_path.glob("*.part"))
    rows = [line.split("\t") for line in (tmp_path / "failures.tsv").read_text().splitlines()]
    assert rows[0] == ["id", "status", "attempts", "reason"]
    assert {(r[0], r[1], r[2]) for r in rows[1:]} == {(IDS[1], "vanished", "1"), (IDS[2], "failed", "3")}
    assert "removed by the uploader" in dict((r[0], r[3]) for r in rows[1:])[IDS[1]]
    assert report.summary().startswith("found 2 of 4 videos (0 already here, 2 fetched now); 1 vanished, 1 failed")


def test_a_download_that_breaks_half_way_resumes_where_it_stopped(remote, tmp_path):
    fetch = FlakyMirror(remote, fail_halfway=[IDS[0]])
    lines = []
    report = download_videos([VideoRequest(IDS[0])], tmp_path, fetch, retries=1, backoff=0, progress=False,
                             sleep=lambda s: None, log=quiet(lines))
    size = (remote / f"{IDS[0]}.mp4").stat().st_size
    assert report.fetched == [IDS[0]] and fetch.attempts[IDS[0]] == 2
    assert fetch.bytes_sent[IDS[0]] == size  # the retry sent only what the first attempt had not
    assert (tmp_path / f"{IDS[0]}.mp4").read_bytes() == (remote / f"{IDS[0]}.mp4").read_bytes()
    assert any(line.startswith(f"RETRY {IDS[0]}") and "connection reset" in line for line in lines)


def test_duplicates_are_fetched_once_and_present_files_are_kept(remote, tmp_path):
    shutil.copy(remote / f"{IDS[3]}.mp4", tmp_path / f"{IDS[3]}.mp4")
    before = (tmp_path / f"{IDS[3]}.mp4").stat().st_mtime_ns
    fetch, lines = FlakyMirror(remote), []
    requests = [VideoRequest(v) for v in (IDS[0], IDS[3], IDS[0], "not-an-id!")]
    report = download_videos(requests, tmp_path, fetch, progress=False, log=quiet(lines))
    assert report.requested == 3 and report.duplicates == {IDS[0]: 2}
    assert report.fetched == [IDS[0]] and report.present == [IDS[3]] and fetch.attempts[IDS[0]] == 1
    assert "not-an-id!" in report.failed and fetch.attempts["not-an-id!"] == 0  # refused unfetched
    assert (tmp_path / f"{IDS[3]}.mp4").stat().st_mtime_ns == before
    assert f"NOTE {IDS[0]} is listed 2 times; it is fetched once" in lines


def test_a_truncated_file_already_there_is_fetched_again(remote, tmp_path):
    data = (remote / f"{IDS[0]}.mp4").read_bytes()
    (tmp_path / f"{IDS[0]}.mp4").write_bytes(data[: len(data) // 2])
    assert probe_video(tmp_path / f"{IDS[0]}.mp4") is not None and probe_video(remote / f"{IDS[0]}.mp4") is None
    lines = []
    report = download_videos([VideoRequest(IDS[0])], tmp_path, FlakyMirror(remote), progress=False, log=quiet(lines))
    assert report.fetched == [IDS[0]] and (tmp_path / f"{IDS[0]}.mp4").read_bytes() == data
    assert any(line.startswith(f"REFETCH {IDS[0]}") for line in lines)


def _slow_download(remote: Path, out: Path) -> None:  # runs in a forked child that the test kills
    download_videos([VideoRequest(IDS[1])], out, FlakyMirror(remote, delay=0.05, chunk=2048), progress=False,
                    log=lambda m: None)


@pytest.mark.skipif(sys.platform == "win32", reason="fork and SIGKILL")
def test_resume_after_a_killed_download(remote, tmp_path):
    child = multiprocessing.get_context("fork").Process(target=_slow_download, args=(remote, tmp_path))
    child.start()
    part = tmp_path / f"{IDS[1]}.mp4.part"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (part.exists() and part.stat().st_size >= 4096):
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    size, total = part.stat().st_size, (remote / f"{IDS[1]}.mp4").stat().st_size
    assert 0 < size < total and not (tmp_path / f"{IDS[1]}.mp4").exists()
    fetch = FlakyMirror(remote)
    report = download_videos([VideoRequest(IDS[1])], tmp_path, fetch, progress=False, log=lambda m: None)
    assert report.fetched == [IDS[1]]
    assert fetch.bytes_sent[IDS[1]] == total - size  # resumed from the part, not from the start
    assert (tmp_path / f"{IDS[1]}.mp4").read_bytes() == (remote / f"{IDS[1]}.mp4").read_bytes()


def test_missing_yt_dlp_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # import yt_dlp now raises ImportError
    with pytest.raises(MissingDependency, match=r"yt-dlp is not installed: pip install yt-dlp"):
        download_videos([VideoRequest(IDS[0])], tmp_path, YtDlpFetcher(), progress=False, log=lambda m: None)


def test_list_files_are_checked_against_pinned_and_recorded_checksums(tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "a.csv").write_text("one\n")
    (host / "b.json").write_text("{}\n")
    dest, lines = tmp_path / "lists", []
    items = [Download((host / "a.csv").as_uri(), "a.csv"), Download((host / "b.json").as_uri(), "b.json", "0" * 64)]
    report = fetch_files(items, dest, log=lines.append)
    assert [p.name for p in report.fetched] == ["a.csv"] and list(report.failed) == ["b.json"]
    assert "sha256 is" in report.failed["b.json"] and not (dest / "b.json").exists()  # a pinned mismatch: not kept
    assert read_sums(dest) == {"a.csv": sha256_file(dest / "a.csv")}  # the first fetch records what it got
    # a later run, after the local copy changed: the recorded digest catches it and the file is left as it is
    (dest / "a.csv").write_text("two\n")
    report = fetch_files(items[:1], dest, log=lines.append)
    assert list(report.failed) == ["a.csv"] and "expected" in report.failed["a.csv"]
    assert (dest / "a.csv").read_text() == "two\n"
