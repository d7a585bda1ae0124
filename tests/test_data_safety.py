"""Data safety: manifest paths stay in the clip directory; checksums, downloads, archives, ids and tools."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from avlib.data import ClipDataset, ClipFormatError, SynthOrchestra, read_manifest, write_clips
from avlib.data.safety import (
    ArchiveError,
    ChecksumError,
    Download,
    ToolError,
    UnsafePathError,
    contained_path,
    fetch_all,
    run_tool,
    safe_extract,
    valid_youtube_id,
    verify_checksum,
)


# ------------------------------------------------------------------------------------------ manifest containment
@pytest.fixture()
def clips(tmp_path):
    root = tmp_path / "data"
    write_clips(SynthOrchestra(size=4, duration=0.3, image_size=16, seed=2), root, frames=[0, 5])
    return root


def _edit_rows(root: Path, edit) -> None:
    manifest = root / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    edit(rows)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_manifest_paths_that_leave_the_clip_directory_are_refused_by_line(clips, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.wav").write_bytes((clips / "clips" / "synth000000" / "audio.wav").read_bytes())
    (clips / "clips" / "synth000003" / "audio.wav").unlink()
    (clips / "clips" / "synth000003" / "audio.wav").symlink_to(outside / "x.wav")  # a symlink that escapes
    (clips / "clips" / "synth000002" / "frames").rename(outside / "frames")
    (clips / "clips" / "synth000002" / "frames").symlink_to(outside / "frames")  # a folder symlink that escapes

    def edit(rows):
        rows[0]["audio"] = "../outside/x.wav"
        rows[1]["audio"] = str(outside / "x.wav")

    _edit_rows(clips, edit)
    with pytest.raises(ClipFormatError, match="4 bad manifest row") as err:
        ClipDataset(clips)
    lines = str(err.value).splitlines()[1:]
    manifest = clips / "manifest.jsonl"
    assert lines[0] == f"{manifest} line 1: audio path '../outside/x.wav' leaves the clip directory"
    assert lines[1] == (f"{manifest} line 2: audio path '{outside / 'x.wav'}' is absolute; it must be relative to "
                        f"the clip directory")
    assert lines[2].startswith(f"{manifest} line 3: frames[0] path 'clips/synth000002/frames/000000.png' leaves the "
                               f"clip directory (it resolves to {outside.resolve()}")
    assert lines[2].endswith("(and 1 more frame path(s) of this row)")
    assert lines[3].startswith(f"{manifest} line 4: audio path 'clips/synth000003/audio.wav' leaves the clip directory")


def test_symlinks_that_stay_inside_and_odd_values(clips):
    inner = clips / "clips" / "synth000001" / "audio.wav"
    inner.unlink()
    inner.symlink_to(clips / "clips" / "synth000000" / "audio.wav")  # inside: fine
    assert len(read_manifest(clips)) == 4

    def edit(rows):
        rows[2]["frames"] = [3, "clips/x/../../../y.png"]
        rows[3]["audio"] = ""

    _edit_rows(clips, edit)
    with pytest.raises(ClipFormatError) as err:
        read_manifest(clips)
    text = str(err.value)
    assert "line 3: frames[0] path must be a non-empty string, got 3 (and 1 more" in text
    assert "line 4: audio path must be a non-empty string, got ''" in text


def test_contained_path_resolves_dotdot_after_a_symlink(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "here").symlink_to(root)  # lexically "here/.." is root; really it is root's parent
    assert contained_path(root, "sub/../sub/a.wav", "test") == root / "sub/../sub/a.wav"
    for rel in ("here/..", "here/../x.wav", "../root/../x"):
        with pytest.raises(UnsafePathError, match=f"test path {rel!r} leaves the clip directory"):
            contained_path(root, rel, "test")
    with pytest.raises(UnsafePathError, match="contains a NUL"):
        contained_path(root, "a\0b", "test")


# --------------------------------------------------------------------------------------------- checksums
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_verify_checksum(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    verify_checksum(path, _sha(b"hello").upper())
    with pytest.raises(ChecksumError) as err:
        verify_checksum(path, _sha(b"other"))
    assert str(err.value) == f"{path}: sha256 is {_sha(b'hello')}, expected {_sha(b'other')}"
    with pytest.raises(ValueError, match="must be 64 hex digits"):
        verify_checksum(path, "abc")
    with pytest.raises(FileNotFoundError, match="no such file"):
        verify_checksum(tmp_path / "missing", _sha(b""))


def test_fetch_all_keeps_going_past_one_bad_file(tmp_path):
    server = {"u/good": b"good", "u/corrupt": b"tampered", "u/plain": b"plain", "u/again": b"new"}
    asked = []

    def download(url: str, path: Path) -> None:  # a stand-in for the network
        asked.append(url)
        if url not in server:
            raise ConnectionError(f"404 for {url}\nfrom the server")
        path.write_bytes(server[url])

    dest = tmp_path / "dl"
    (dest / "sub").mkdir(parents=True)
    (dest / "sub" / "have.bin").write_bytes(b"have")
    (dest / "old.bin").write_bytes(b"mine")
    items = [
        Download("u/good", "sub/good.bin", _sha(b"good")),
        Download("u/corrupt", "corrupt.bin", _sha(b"expected")),
        Download("u/gone", "gone.bin"),
        Download("u/plain", "plain.bin"),
        Download("u/evil", "../evil.bin"),
        Download("u/have", "sub/have.bin", _sha(b"have")),
        Download("u/again", "old.bin", _sha(b"new")),
        Download("u/good", "bad-sum.bin", "xyz"),
    ]
    logged = []
    report = fetch_all(items, dest, download, log=logged.append)
    assert report.fetched == [dest / "sub" / "good.bin", dest / "plain.bin"]
    assert report.present == [dest / "sub" / "have.bin"]
    assert list(report.failed) == ["corrupt.bin", "gone.bin", "../evil.bin", "old.bin", "bad-sum.bin"]
    assert len(logged) == 5 and all(line.startswith("FAIL ") and "\n" not in line for line in logged)
    assert report.failed["corrupt.bin"].endswith("(download of u/corrupt removed)")
    assert "u/gone: ConnectionError: 404 for u/gone from the server" == report.failed["gone.bin"]
    assert "leaves the download directory" in report.failed["../evil.bin"]
    assert "the file is kept: move it away" in report.failed["old.bin"]
    assert "64 hex digits" in report.failed["bad-sum.bin"]
    assert report.summary().startswith("2 fetched, 1 already present, 5 failed: corrupt.bin, gone.bin")
    assert asked == ["u/good", "u/corrupt", "u/gone", "u/plain"]  # nothing present was fetched again
    assert (dest / "old.bin").read_bytes() == b"mine" and (dest / "sub" / "good.bin").read_bytes() == b"good"
    assert not (tmp_path / "evil.bin").exists() and not (dest / "corrupt.bin").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["old.bin", "plain.bin", "sub"]  # no .part left behind


# ------------------------------------------------------------------------------------------------ archives
def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def _files(folder: Path) -> list[Path]:
    """Every file or link under ``folder`` (not folders)."""
    return sorted(p for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())


@pytest.mark.parametrize(("members", "says"), [
    ([("ok.txt", b"1"), ("../evil.txt", b"x")], "member path '../evil.txt' leaves the extraction folder"),
    ([("/abs-evil.txt", b"x")], "member path '/abs-evil.txt' is absolute"),
    ([_link("link", "../../outside"), ("link/evil.txt", b"x")], "is a symlink to '../../outside', outside the"),
    ([_link("link", "/etc"), ("ok.txt", b"1")], "member 'link' is a symlink to the absolute path '/etc'"),
    ([_link("y", "."), _link("x", "y/.."), ("x/evil.txt", b"x")], "through the symlink 'y'"),
    ([("x/evil.txt", b"x"), _link("x", "sub")], "member 'x/evil.txt' is written through the symlink 'x'"),
    ([_link("hard", "../../etc/passwd", tarfile.LNKTYPE)], "is a hardlink to '../../etc/passwd', outside"),
])
def test_unsafe_tar_members_are_refused_and_nothing_is_written(tmp_path, members, says):
    archive = _tar(tmp_path / "bad.tar", members)
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(UnsafePathError, match="nothing was extracted") as err:
        safe_extract(archive, dest)
    assert says in str(err.value) and str(err.value).startswith(f"{archive}: member")
    assert list(dest.iterdir()) == [] and _files(tmp_path) == [archive]


def test_a_symlink_already_in_dest_cannot_carry_members_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="'data/evil.txt' leaves the extraction folder"):
        safe_extract(_tar(tmp_path / "t.tar", [("data/evil.txt", b"x")]), dest)
    assert list(outside.iterdir()) == []


def test_good_archives_extract_with_inner_links(tmp_path):
    tar = _tar(tmp_path / "good.tar.gz", [_dir("./"), ("data/a.txt", b"A"), _link("alias.txt", "data/a.txt"),
                                          _link("data/up.txt", "../alias2.txt")], mode="w:gz")
    dest = tmp_path / "t"
    paths = safe_extract(tar, dest)
    assert (dest / "alias.txt").read_text() == "A" and (dest / "alias.txt").is_symlink()
    assert dest / "data" / "a.txt" in paths and len(paths) == 4

    zpath = tmp_path / "good.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("dir/b.txt", "B")
        zf.writestr("c.txt", "C")
    assert safe_extract(zpath, tmp_path / "z") == [tmp_path / "z" / "dir" / "b.txt", tmp_path / "z" / "c.txt"]
    assert (tmp_path / "z" / "dir" / "b.txt").read_text() == "B"


@pytest.mark.parametrize(("name", "says"), [
    ("../evil.txt", "member path '../evil.txt' leaves the extraction folder"),
    ("/abs-evil.txt", "member path '/abs-evil.txt' is absolute"),
    ("a/../../evil.txt", "leaves the extraction folder"),
])
def test_unsafe_zip_members_are_refused(tmp_path, name, says):
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr(name, "x")
    dest = tmp_path / "dest"
    with pytest.raises(UnsafePathError, match="nothing was extracted") as err:
        safe_extract(zpath, dest)
    assert says in str(err.value) and list(dest.iterdir()) == [] and _files(tmp_path) == [zpath]


def test_zip_symlink_entries_that_escape_are_refused(tmp_path):
    zpath = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr(info, "../../etc")
    with pytest.raises(UnsafePathError, match="'link' is a symlink to '../../etc', outside the archive"):
        safe_extract(zpath, tmp_path / "dest")


def test_broken_archives_get_one_line(tmp_path):
    good = _tar(tmp_path / "big.tar.gz", [(f"f{i}.bin", os.urandom(4000)) for i in range(5)], mode="w:gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ArchiveError, match=r"cut.tar.gz: cannot extract \(.*\); is it corrupt or truncated\?"):
        safe_extract(cut, tmp_path / "d1")
    text = tmp_path / "notes.txt"
    text.write_text("just text")
    with pytest.raises(ArchiveError, match="notes.txt: neither a tar nor a zip archive"):
        safe_extract(text, tmp_path / "d2")
    with pytest.raises(FileNotFoundError, match="archive not found"):
        safe_extract(tmp_path / "none.zip", tmp_path / "d3")


# --------------------------------------------------------------------------------------------- ids and tools
def test_valid_youtube_id():
    for good in ("dQw4w9WgXcQ", "-abcdefghij", "A_b-C0d1E2f"):
        assert valid_youtube_id(good), good
    for bad in ("dQw4w9WgXc", "dQw4w9WgXcQQ", "dQw4w9WgXcQ\n", "dQw4w9 gXcQ", "dQw4w9WgXc/", "", None, 12345678901):
        assert not valid_youtube_id(bad), bad


def test_run_tool_takes_argument_lists_only(tmp_path):
    with pytest.raises(TypeError, match="list of string arguments"):
        run_tool("echo hi")
    with pytest.raises(TypeError):
        run_tool([sys.executable, 3])
    hostile = f"$(touch {tmp_path / 'pwned'}); `touch {tmp_path / 'pwned2'}` | rm -rf {tmp_path}"
    done = run_tool([sys.executable, "-c", "import sys; print(sys.argv[1])", hostile], cwd=tmp_path)
    assert done.stdout.strip() == hostile and sorted(os.listdir(tmp_path)) == []
    with pytest.raises(ToolError, match=r"exited with status 3: last words$"):
        run_tool([sys.executable, "-c", "import sys; sys.stderr.write('noise\\nlast words\\n\\n'); sys.exit(3)"])
    with pytest.raises(ToolError, match="no-such-tool-here: program not found"):
        run_tool(["no-such-tool-here", "--version"])
    with pytest.raises(ToolError, match="still running after 0.2 s"):
        run_tool([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)
