"""Clips in WebDataset-style tar shards, for datasets that outgrow a directory of files (AudioSet scale, many nodes
reading), with the same Dataset API as a clip directory.

A shard is a plain (uncompressed) tar file; the files of one clip share a key, the member name up to its first dot,
as WebDataset groups them: ``000000042.json`` (the clip's manifest row, its paths renamed to the members),
``000000042.wav`` and ``000000042.f000012.png`` (video frame 12). Keys are the clip's position in the written order
(zero-padded), so clip ids may hold dots. The tar files are written with the standard library's ``tarfile``, so
``webdataset`` is not needed to write or to read them, and ``webdataset.WebDataset(urls)`` streams them as they are.

- :func:`write_shards`: a clip directory (``manifest.jsonl`` + files) to ``shard-000000.tar``, ... of at most
  ``max_count`` clips / ``max_bytes`` bytes each, written to a ``.partial`` name and renamed when complete.
- :class:`ShardClips`: reads shards with random access (an index of member offsets built from the tar headers) and
  returns exactly the items :class:`~avlib.data.clips.ClipDataset` returns for the same clips.
- :func:`open_clips`: a clip directory or shards, whichever ``path`` holds, behind the same API.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from avlib.data.clips import MANIFEST, ClipDataset, ClipFormatError, read_manifest

__all__ = ["ShardClips", "open_clips", "write_shards"]


def write_shards(root: str | os.PathLike, out: str | os.PathLike, split: str | None = None, max_count: int = 1000,
                 max_bytes: int = 1 << 30, prefix: str = "shard") -> list[Path]:
    """Write the clips of the clip directory ``root`` (only ``split``'s when given) into tar shards in ``out``.

    Returns the shard paths. Existing shards of the same names are refused, never overwritten.
    """
    root, out = Path(root), Path(out)
    rows = read_manifest(root)
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise ClipFormatError(f"{root / MANIFEST} has no clips of split {split!r}")
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    tar: tarfile.TarFile | None = None
    count = size = 0

    def close() -> None:
        if tar is not None:
            tar.close()
            os.rename(paths[-1].with_name(paths[-1].name + ".partial"), paths[-1])

    try:
        for n, row in enumerate(rows):
            files = [row["audio"], *row["frames"]]
            need = sum((root / p).stat().st_size for p in files)
            if tar is None or count >= max_count or (count and size + need > max_bytes):
                close()
                paths.append(out / f"{prefix}-{len(paths):06d}.tar")
                if paths[-1].exists():
                    raise FileExistsError(f"{paths[-1]} exists; write the shards to an empty folder")
                tar = tarfile.open(paths[-1].with_name(paths[-1].name + ".partial"), "w", format=tarfile.PAX_FORMAT)
                count = size = 0
            key = f"{n:09d}"
            members = {row["audio"]: f"{key}.wav"}
            members.update({p: f"{key}.f{k:06d}{PurePosixPath(p).suffix}"
                            for p, k in zip(row["frames"], row["frame_indices"], strict=True)})
            meta = {**row, "audio": members[row["audio"]], "frames": [members[p] for p in row["frames"]]}
            blob = json.dumps(meta).encode()
            info = tarfile.TarInfo(f"{key}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            for rel, name in members.items():
                tar.add(root / rel, arcname=name, recursive=False)
            count, size = count + 1, size + need + len(blob)
        close()
        tar = None
    except BaseException:
        if tar is not None:
            tar.close()
            paths[-1].with_name(paths[-1].name + ".partial").unlink(missing_ok=True)
        raise
    return paths


class _Member(io.BytesIO):
    """The bytes of one tar member, named ``shard.tar:member`` in messages."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


class _ShardRoot:
    """Stands where :class:`ClipDataset` keeps its root folder: ``root / member`` gives the member's bytes, read at
    its offset in its shard, so the reading and checking code of :class:`ClipDataset` serves shards unchanged."""

    def __init__(self, index: dict[str, tuple[Path, int, int]]) -> None:
        self.index = index

    def __truediv__(self, name: str) -> _Member:
        try:
            shard, offset, size = self.index[name]
        except KeyError:
            raise ClipFormatError(f"no member {name!r} in the shards") from None
        with open(shard, "rb") as f:
            f.seek(offset)
            return _Member(f.read(size), f"{shard}:{name}")

    def __str__(self) -> str:
        shards = sorted({str(s) for s, _, _ in self.index.values()})
        return shards[0] + (f" (and {len(shards) - 1} more shards)" if len(shards) > 1 else "")


class ShardClips(ClipDataset):
    """The clips of tar shards written by :func:`write_shards`, as :class:`ClipDataset` items.

    Args:
        shards: a folder of ``*.tar`` shards, one shard, or a list of shards.
        split, sample_rate, frames: as for :class:`ClipDataset`.

    Member names become the rows' ``audio`` / ``frames`` paths; each clip keeps its own ``id``. The index holds
    each member's shard, offset and size, read from the tar headers once at construction (no extraction).
    """

    def __init__(self, shards: str | os.PathLike | Sequence[str | os.PathLike], split: str | None = None,
                 sample_rate: int | None = None, frames: str = "all") -> None:
        if frames not in ("all", "middle", "none"):
            raise ValueError(f"ShardClips: frames must be 'all', 'middle' or 'none'; got {frames!r}")
        if isinstance(shards, str | os.PathLike) and Path(shards).is_dir():
            paths = sorted(Path(shards).glob("*.tar"))
        elif isinstance(shards, str | os.PathLike):
            paths = [Path(shards)]
        else:
            paths = [Path(p) for p in shards]
        if not paths:
            raise ClipFormatError(f"no *.tar shards in {shards}")
        index: dict[str, tuple[Path, int, int]] = {}
        rows = []
        for shard in paths:
            try:
                with tarfile.open(shard) as tar:
                    for m in tar.getmembers():
                        if not m.isfile():
                            continue
                        index[m.name] = (shard, m.offset_data, m.size)
                        if m.name.endswith(".json"):
                            rows.append(json.loads(tar.extractfile(m).read()))
            except (tarfile.TarError, OSError, json.JSONDecodeError) as e:
                raise ClipFormatError(f"{shard}: not a readable clip shard ({type(e).__name__}: {e})") from None
        if split is not None:
            rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise ClipFormatError(f"no clips{f' of split {split!r}' if split else ''} in {paths[0]} ...")
        self.shards = paths
        self.root = _ShardRoot(index)
        self.rows = rows
        self.split = split
        self.sample_rate = int(sample_rate or rows[0]["sample_rate"])
        self.frames = frames

    def scan(self, workers: int | None = None, progress: bool = False):
        """Decode every clip once; raise one :class:`ClipFormatError` naming every clip that fails."""
        problems = []
        for j in range(len(self)):
            try:
                self[j]
            except ClipFormatError as e:
                problems.append(str(e))
        if problems:
            raise ClipFormatError(f"{len(problems)} bad clip(s) in the shards:\n" + "\n".join(problems))
        return len(self)


def open_clips(path: str | os.PathLike | Sequence[str | os.PathLike], **kwargs) -> ClipDataset:
    """A :class:`ClipDataset` for a clip directory (``path/manifest.jsonl``), else :class:`ShardClips` for shards
    (a folder of ``*.tar``, a ``.tar`` file, or a list of them); ``kwargs`` go to the class."""
    if isinstance(path, str | os.PathLike) and (Path(path) / MANIFEST).is_file():
        return ClipDataset(path, **kwargs)
    return ShardClips(path, **kwargs)
