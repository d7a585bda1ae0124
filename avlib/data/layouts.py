"""From a dataset script's clip directory to the layout a method trains on.

The dataset scripts (``data_scripts/``) write one clip directory per dataset, every clip's role in its manifest row
(``split``, ``kind``, ``half``, ``n_sources``, ``level``). Some methods read several clip directories, one per role:

- CAVL's curriculum (and the counting net) read ``DATA/c1`` ... ``DATA/c4``, each with ``train`` and ``test`` clips:
  :func:`curriculum_levels` makes them from ``audioset.py --subset curriculum`` (rows of split ``c<l>``, or rows with a
  ``level``), holding out a stable share of each level (by a hash of the clip id, so adding clips never moves one).
- DSOL reads ``DATA/solo`` (stage one), ``DATA/mosaic`` and / or ``DATA/duet`` (stage two): :func:`dsol_layout` makes
  them from ``music.py --scheme dsol`` (or ``audioset.py --subset dsol``). Solo training clips of the first half
  (``half`` 1, or without a half) go to ``solo``; the second half's (``half`` 2) are tiled into MUSIC-Synthetic's
  2x2 mosaics (:func:`write_mosaics`: four solo clips of four categories, two of them sounding, the quadrants as
  boxes), which the paper's authors only published pre-built; multi-source clips (``kind`` duet, or ``n_sources``
  >= 2) go to ``duet``. Test mosaics are tiled from the solo test clips.
- The separation net mixes **solo** clips: :func:`solo_clips` keeps those of ``music.py --scheme cavl``'s output.

Media files are hard-linked into the new directory (copied where the file system cannot link), so a layout costs
no disk space and every manifest path stays inside its own directory, as :func:`avlib.data.read_manifest` requires.
``avlib layout {levels,dsol,solo} SRC OUT`` runs these from the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from avlib.data.clips import MANIFEST, ClipFormatError, read_manifest

__all__ = ["curriculum_levels", "dsol_layout", "held_out_share", "link_clips", "solo_clips", "write_mosaics"]


def held_out_share(clip_id: str) -> float:
    """A number in ``[0, 1)`` fixed by the clip id alone (SHA-1), for splits that never move when clips are added."""
    return int(hashlib.sha1(clip_id.encode()).hexdigest()[:12], 16) / 16**12


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copy2(src, dst)


def _fresh(out: Path) -> None:
    if (out / MANIFEST).exists():
        raise FileExistsError(f"{out} already holds a clip directory ({MANIFEST}); choose another directory")
    out.mkdir(parents=True, exist_ok=True)


def _write_manifest(out: Path, rows: list[dict]) -> Path:
    tmp = out / f".{MANIFEST}.partial"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, out / MANIFEST)
    return out / MANIFEST


def link_clips(src: str | os.PathLike, out: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write ``rows`` (manifest rows of the clip directory ``src``, changed as wanted) as the clip directory ``out``,
    each row's audio and frames hard-linked at the same relative paths. Returns the manifest path."""
    src, out = Path(src), Path(out)
    rows = list(rows)
    if not rows:
        raise ClipFormatError(f"no clips of {src} for {out}")
    _fresh(out)
    for row in rows:
        for rel in [row["audio"], *row["frames"]]:
            _link(src / rel, out / rel)
    return _write_manifest(out, rows)


def _level(row: dict) -> int | None:
    if row.get("level") is not None:
        return int(row["level"])
    split = str(row["split"])
    return int(split[1:]) if split[:1] == "c" and split[1:].isdigit() else None


def _hold_out(rows: list[dict], test_share: float) -> list[dict]:
    """Rows with split ``test`` for a ``test_share`` of them (by :func:`held_out_share`; at least one, and at least
    one left to train, when there are two or more), ``train`` for the rest."""
    shares = [held_out_share(r["id"]) for r in rows]
    test = {i for i, s in enumerate(shares) if s < test_share}
    if len(rows) >= 2 and not test:
        test = {int(np.argmin(shares))}
    if len(rows) >= 2 and len(test) == len(rows):
        test.discard(int(np.argmax(shares)))
    return [{**r, "split": "test" if i in test else "train"} for i, r in enumerate(rows)]


def curriculum_levels(src: str | os.PathLike, out: str | os.PathLike, test_share: float = 0.1) -> dict[str, int]:
    """CAVL's levels as ``out/c<l>`` clip directories with ``train`` / ``test`` splits, from a clip directory whose
    rows name their level (split ``c<l>``, as ``audioset.py --subset curriculum`` writes, or a ``level`` field).

    Rows whose split is already ``train``, ``val`` or ``test`` keep it; the others are split by
    :func:`held_out_share` (``test_share`` of each level held out). Rows without a level are left out. Returns the
    clips per level directory."""
    src, out = Path(src), Path(out)
    levels: dict[int, list[dict]] = {}
    for row in read_manifest(src):
        level = _level(row)
        if level is not None:
            levels.setdefault(level, []).append(row)
    if not levels:
        raise ClipFormatError(f"{src / MANIFEST}: no clip names a curriculum level (split c<l> or a level field)")
    counts = {}
    for level, rows in sorted(levels.items()):
        given = [r for r in rows if r["split"] in ("train", "val", "test")]
        split = given + _hold_out([r for r in rows if r["split"] not in ("train", "val", "test")], test_share)
        link_clips(src, out / f"c{level}", [{**r, "level": level} for r in split])
        counts[f"c{level}"] = len(split)
    return counts


def _is_multi(row: dict) -> bool:
    return row.get("kind") == "duet" or int(row.get("n_sources") or 1) >= 2


def solo_clips(src: str | os.PathLike, out: str | os.PathLike) -> int:
    """The solo clips of ``src`` (not ``kind`` duet, at most one source) as the clip directory ``out``, splits kept;
    their number."""
    rows = [r for r in read_manifest(src) if not _is_multi(r)]
    link_clips(src, out, rows)
    return len(rows)


def _square(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return image.convert("RGB").crop(box).resize((size, size), Image.BILINEAR)


def write_mosaics(src: str | os.PathLike, rows: list[dict], out: str | os.PathLike, split: str, count: int,
                  seed: int = 0, prefix: str = "mosaic") -> list[dict]:
    """Write ``count`` 2x2 mosaics (MUSIC-Synthetic, DSOL §4.1) of the labelled solo clips ``rows`` of ``src`` into
    ``out/clips`` and return their manifest rows (split ``split``).

    Each mosaic takes four clips of four different categories (drawn with ``seed``), centre-crops each stored frame
    to a square and tiles the four as quadrants of one frame of the smallest clip's short side (even); two quadrants,
    drawn at random, sound: the audio is the sum of their waveforms (scaled down only if it would clip). Rows carry
    ``categories`` (one per quadrant, in the order top-left, top-right, bottom-left, bottom-right), ``sounding``,
    ``boxes`` (the quadrants, per frame), ``n_sources`` 2, ``source_categories``, ``label`` (the first sounding
    category) and ``sources`` (the four clip ids)."""
    src, out = Path(src), Path(out)
    pool = [r for r in rows if r.get("label") is not None]
    by_label: dict[int, list[dict]] = {}
    for r in pool:
        by_label.setdefault(int(r["label"]), []).append(r)
    if len(by_label) < 4:
        raise ClipFormatError(f"2x2 mosaics need labelled solo clips of at least 4 categories; {src} has "
                              f"{len(by_label)} in split {split!r}")
    rates = {int(r["sample_rate"]) for r in pool}
    if len(rates) > 1:
        raise ClipFormatError(f"mosaics mix clips of one sample rate; {src} has {sorted(rates)}")
    rng = np.random.default_rng(seed)
    labels = sorted(by_label)
    made = []
    for n in range(count):
        cats = [labels[i] for i in rng.choice(len(labels), 4, replace=False)]
        clips = [by_label[c][int(rng.integers(len(by_label[c])))] for c in cats]
        sounding = [False] * 4
        for q in rng.choice(4, 2, replace=False):
            sounding[int(q)] = True
        n_frames = min(len(r["frames"]) for r in clips)
        with Image.open(src / clips[0]["frames"][0]) as im:
            short = min(im.size)
        for r in clips[1:]:
            with Image.open(src / r["frames"][0]) as im:
                short = min(short, *im.size)
        half = max(short // 2, 1)
        cid = f"{prefix}_{split}_{n:06d}"
        rel = Path("clips") / cid
        (out / rel / "frames").mkdir(parents=True, exist_ok=True)
        frame_paths = []
        for p in range(n_frames):
            canvas = Image.new("RGB", (2 * half, 2 * half))
            for q, r in enumerate(clips):
                with Image.open(src / r["frames"][p]) as im:
                    canvas.paste(_square(im, half), ((q % 2) * half, (q // 2) * half))
            path = rel / "frames" / f"{p:06d}.png"
            canvas.save(out / path)
            frame_paths.append(path.as_posix())
        waves = [sf.read(src / r["audio"], dtype="float32", always_2d=True)[0].mean(1) for r, s in
                 zip(clips, sounding, strict=True) if s]
        length = min(w.size for w in waves)
        mix = sum(w[:length] for w in waves)
        peak = float(np.abs(mix).max()) if length else 0.0
        mix = mix / peak if peak > 1 else mix
        rate = int(clips[0]["sample_rate"])
        sf.write(out / rel / "audio.wav", mix.astype(np.float32), rate, subtype="FLOAT")
        boxes = [[(q % 2) * half, (q // 2) * half, (q % 2 + 1) * half, (q // 2 + 1) * half] for q in range(4)]
        fps = float(clips[0]["fps"])
        made.append({
            "id": cid, "audio": (rel / "audio.wav").as_posix(), "frames": frame_paths,
            "frame_indices": list(clips[0]["frame_indices"][:n_frames]), "fps": fps, "sample_rate": rate,
            "num_samples": int(length), "duration": length / rate, "split": split,
            "label": next(c for c, s in zip(cats, sounding, strict=True) if s), "label_name": None,
            "categories": cats, "sounding": sounding, "n_sources": 2,
            "source_categories": [c for c, s in zip(cats, sounding, strict=True) if s],
            "boxes": [boxes] * n_frames, "kind": "mosaic", "sources": [r["id"] for r in clips],
        })
    return made


def dsol_layout(src: str | os.PathLike, out: str | os.PathLike, mosaics: int | None = None, seed: int = 0,
                families: Iterable[str] = ("solo", "mosaic", "duet")) -> dict[str, int]:
    """DSOL's clip directories ``out/solo``, ``out/mosaic``, ``out/duet`` (those of ``families`` that have clips) from
    a dataset script's clip directory (see the module docstring for which clip goes where).

    ``mosaics``: mosaics per split (default: half the solo clips they are tiled from, at least one). Returns the
    clips per directory."""
    src, out = Path(src), Path(out)
    rows = read_manifest(src)
    families = tuple(families)
    solo = [r for r in rows if not _is_multi(r)]
    halves = any(r.get("half") is not None for r in solo)
    stage1 = [r for r in solo if r["split"] != "train" or int(r.get("half") or 1) == 1]
    tiles = {"train": [r for r in solo if r["split"] == "train" and (not halves or r.get("half") == 2)],
             "test": [r for r in solo if r["split"] == "test"]}
    counts: dict[str, int] = {}
    if "solo" in families:
        link_clips(src, out / "solo", stage1)
        counts["solo"] = len(stage1)
    if "mosaic" in families:
        made: list[dict] = []
        _fresh(out / "mosaic")
        for k, (split, pool) in enumerate(tiles.items()):
            if pool:
                n = mosaics if mosaics is not None else max(len(pool) // 2, 1)
                made += write_mosaics(src, pool, out / "mosaic", split, n, seed=seed + k)
        if made:
            _write_manifest(out / "mosaic", made)
            counts["mosaic"] = len(made)
    multi = [r for r in rows if _is_multi(r)]
    if "duet" in families and multi:
        link_clips(src, out / "duet", multi)
        counts["duet"] = len(multi)
    return counts


LAYOUTS: dict[str, Callable[..., object]] = {"levels": curriculum_levels, "dsol": dsol_layout, "solo": solo_clips}
