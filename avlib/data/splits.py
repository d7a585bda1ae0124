"""The public lists of the papers' datasets, read in their own formats, and the splits each paper uses.

Formats (each checked against the published files):

- MUSIC (Zhao et al., Sound of Pixels; ``MUSIC_solo_videos.json`` / ``MUSIC_duet_videos.json`` of the MUSIC_dataset
  repository): ``{"version": 1.0, "videos": {"<instrument>": ["<YouTube id>", ...]}}``; duet keys name two
  instruments separated by a space (``"acoustic_guitar violin"``).
- AudioSet segment CSVs and ``ontology.json``: read by :mod:`avlib.data.audioset` (``#`` comment lines, then
  ``YTID, start_seconds, end_seconds, "positive_labels"``).
- Kinetics (the CSVs of the Kinetics release): a header ``label,youtube_id,time_start,time_end,split`` (some
  releases add ``is_cc``), one row per 10 s clip.
- ESC-50 (``meta/esc50.csv`` of the ESC-50 repository): ``filename,fold,target,category,esc10,src_file,take``.

Splits:

- DSOL (Hu et al. 2020, §4.1): MUSIC, the first five solo / first two duet videos of each category for testing, the
  rest for training; the solo training videos split in two halves (stage one; synthetic 2x2 mosaics for stage two);
  1 s clips. AudioSet-instrument (15 instruments, after Gao et al. 2018): unbalanced for training, balanced for
  testing; clips with one of the 15 for stage one (``solo``), with several for stage two (``multi``).
- CAVL (Hu et al. 2020, §4.1 and supplement): MUSIC solo, the first video of each instrument for validation and the
  second for testing, the rest for training (duets: training only, for the "both" model); 10 s clips. Its AudioSet
  instruments: unbalanced for training, balanced halved into validation and testing. Its curriculum levels come
  from :func:`avlib.data.audioset.grade_segments` and :func:`~avlib.data.audioset.write_levels`.
- Objects that Sound (§2): AudioSet clips with a label under "Musical instrument", "Singing" or "Tools" (110
  classes, Appendix A.1); the public training CSVs split 90 / 10 into training and validation, the evaluation CSV
  for testing.
- L3-Net (Appendix A): Kinetics-Sounds, the 34 Kinetics classes of :data:`KINETICS_SOUNDS`, with the split column of
  the Kinetics CSVs (L3's own 15k / 1.9k / 1.9k split was not published).
- ESC-50 (L3-Net §3.3, DMC, CAVL Table 1): the five predefined folds; a probe trains on four and tests on the fifth.

"First" always means first in the published list, whatever has vanished since: a split never depends on which
videos one machine could still fetch. Random splits (90 / 10, the halves) hash the video id, so they are the same
on every machine and in every run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from avlib.data.audioset import AudioSetOntology, Segment

__all__ = ["DSOL_INSTRUMENTS", "ESC50Clip", "KINETICS_SOUNDS", "KineticsClip", "ListError", "ListedVideo",
           "OTS_CLASSES", "OTS_ROOTS", "SplitSegment", "dsol_audioset", "esc50_folds", "hashed_fraction",
           "kinetics_sounds", "music_splits", "ots_audioset", "ots_classes", "cavl_audioset", "read_esc50",
           "read_kinetics", "read_music_list", "write_segments"]


class ListError(ValueError):
    """A list file that cannot be used: the message names the file and, where there is one, the line or key."""


def hashed_fraction(key: str, salt: str = "avlib") -> float:
    """A number in [0, 1) fixed by ``key`` alone (SHA-256), for random splits that are the same everywhere."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


# --------------------------------------------------------------------------------------------------------- MUSIC
@dataclass(frozen=True)
class ListedVideo:
    """A video of a published list with the split a paper gives it, its category, and its place in the list."""

    id: str
    category: str
    split: str
    kind: str = "solo"
    position: int = 0
    extra: dict = field(default_factory=dict, hash=False, compare=False)


def read_music_list(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{category: [YouTube ids, in the list's order]}`` from a MUSIC json file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ListError(f"{path}: no such MUSIC list") from None
    except json.JSONDecodeError as e:
        raise ListError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict) or not videos:
        raise ListError(f"{path}: a MUSIC list is an object with a non-empty 'videos' object of category -> ids")
    for category, ids in videos.items():
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ListError(f"{path}: videos[{category!r}] must be a list of video ids")
    return {category: list(ids) for category, ids in videos.items()}


def music_splits(solo: dict[str, list[str]], duet: dict[str, list[str]] | None = None, scheme: str = "dsol"
                 ) -> tuple[list[ListedVideo], list[str]]:
    """Each listed MUSIC video with its split under ``scheme`` (``"dsol"`` or ``"cavl"``, see the module docstring),
    and notes on ids listed more than once (the first listing wins; the others are dropped).

    DSOL's solo training videos carry ``extra["half"]`` 1 or 2: the first half (rounded up) of each instrument's
    remaining list trains stage one, the second half feeds the synthetic mosaics of stage two.
    """
    if scheme not in ("dsol", "cavl"):
        raise ValueError(f"music_splits: scheme must be 'dsol' or 'cavl'; got {scheme!r}")
    out: list[ListedVideo] = []
    seen: dict[str, ListedVideo] = {}
    notes: list[str] = []
    for kind, videos in (("solo", solo), ("duet", duet or {})):
        n_test = (5 if kind == "solo" else 2) if scheme == "dsol" else 0
        for category in videos:
            ids = videos[category]
            rest = len(ids) - n_test
            for pos, vid in enumerate(ids):
                extra: dict = {}
                if scheme == "dsol":
                    split = "test" if pos < n_test else "train"
                    if kind == "solo" and split == "train":
                        extra["half"] = 1 if pos - n_test < (rest + 1) // 2 else 2
                elif kind == "solo":
                    split = {0: "val", 1: "test"}.get(pos, "train")
                else:
                    split = "train"
                item = ListedVideo(vid, category, split, kind, pos, extra)
                if vid in seen:
                    first = seen[vid]
                    notes.append(f"{vid} is listed again as {kind} {category!r} #{pos}; kept its first listing "
                                 f"({first.kind} {first.category!r} #{first.position}, {first.split})")
                    continue
                seen[vid] = item
                out.append(item)
    return out, notes


# ------------------------------------------------------------------------------------------------------ AudioSet
OTS_ROOTS = ("Musical instrument", "Singing", "Tools")
OTS_CLASSES = (  # Objects that Sound, Appendix A.1: the 110 classes its filter yields
    "Accordion", "Acoustic guitar", "Alto saxophone", "Bagpipes", "Banjo", "Bass (instrument role)", "Bass drum",
    "Bass guitar", "Bassoon", "Bell", "Bicycle bell", "Bowed string instrument", "Brass instrument", "Bugle", "Cello",
    "Change ringing (campanology)", "Chant", "Child singing", "Chime", "Choir", "Church bell", "Clarinet", "Clavinet",
    "Cornet", "Cowbell", "Crash cymbal", "Cymbal", "Dental drill, dentist's drill", "Didgeridoo", "Double bass",
    "Drill", "Drum", "Drum kit", "Drum machine", "Drum roll", "Electric guitar", "Electric piano", "Electronic organ",
    "Female singing", "Filing (rasp)", "Flute", "French horn", "Glockenspiel", "Gong", "Guitar", "Hammer",
    "Hammond organ", "Harmonica", "Harp", "Harpsichord", "Hi-hat", "Jackhammer", "Jingle bell", "Keyboard (musical)",
    "Male singing", "Mallet percussion", "Mandolin", "Mantra", "Maraca", "Marimba, xylophone", "Mellotron",
    "Musical ensemble", "Musical instrument", "Oboe", "Orchestra", "Organ", "Percussion", "Piano", "Pizzicato",
    "Plucked string instrument", "Power tool", "Rapping", "Rattle (instrument)", "Rhodes piano", "Rimshot", "Sampler",
    "Sanding", "Sawing", "Saxophone", "Scratching (performance technique)", "Shofar", "Singing", "Singing bowl",
    "Sitar", "Snare drum", "Soprano saxophone", "Steel guitar, slide guitar", "Steelpan", "String section", "Strum",
    "Synthesizer", "Synthetic singing", "Tabla", "Tambourine", "Tapping (guitar technique)", "Theremin", "Timpani",
    "Tools", "Trombone", "Trumpet", "Tubular bells", "Tuning fork", "Ukulele", "Vibraphone", "Violin, fiddle",
    "Wind chime", "Wind instrument, woodwind instrument", "Wood block", "Yodeling", "Zither",
)
# DSOL's AudioSet-instrument (and CAVL's) follow Gao et al. 2018 ("15 musical instruments"). This list of the 15,
# in AudioSet's own class names, is as we recall it from that paper, not checked against a copy: pass your own to
# dsol_audioset / cavl_audioset (the scripts' --classes) if it differs.
DSOL_INSTRUMENTS = (
    "Accordion", "Acoustic guitar", "Banjo", "Cello", "Drum", "Electric guitar", "Flute", "French horn", "Harmonica",
    "Harp", "Marimba, xylophone", "Oboe", "Piano", "Saxophone", "Violin, fiddle",
)


@dataclass(frozen=True)
class SplitSegment:
    """An AudioSet segment with a paper's split, and the classes of the subset it carries (ids, sorted)."""

    segment: Segment
    split: str
    classes: tuple[str, ...]

    @property
    def n_sources(self) -> int:
        return len(self.classes)


def _ids_by_name(ontology: AudioSetOntology, names: Sequence[str]) -> dict[str, str]:
    by_name = {v.replace("\u2019", "'"): k for k, v in ontology.names.items()}
    missing = [n for n in names if n.replace("\u2019", "'") not in by_name]
    if missing:
        raise ListError(f"{ontology.source}: no class named {missing[0]!r} (and {len(missing) - 1} more missing)"
                        if len(missing) > 1 else f"{ontology.source}: no class named {missing[0]!r}")
    return {by_name[n.replace("\u2019", "'")]: n for n in names}


def ots_classes(ontology: AudioSetOntology) -> set[str]:
    """Objects that Sound's classes: "Musical instrument", "Singing", "Tools" and everything below them (ids)."""
    roots = _ids_by_name(ontology, OTS_ROOTS)
    below = {k for k in ontology.names if ontology.ancestors(k) & set(roots)}
    return set(roots) | below


def ots_audioset(ontology: AudioSetOntology, train: Iterable[Segment], evaluation: Iterable[Segment],
                 val_fraction: float = 0.1) -> list[SplitSegment]:
    """Objects that Sound's AudioSet-Instruments: segments with at least one of its classes; ``train`` (the
    balanced and unbalanced training CSVs) split into ``train`` / ``val`` by a hash of the YouTube id (a video's
    segments stay together), ``evaluation`` is ``test``."""
    keep = ots_classes(ontology)
    out = []
    for segments, is_train in ((train, True), (evaluation, False)):
        for s in segments:
            classes = tuple(sorted(set(s.labels) & keep))
            if classes:
                split = ("val" if hashed_fraction(s.ytid, "ots") < val_fraction else "train") if is_train else "test"
                out.append(SplitSegment(s, split, classes))
    return out


def _instrument_segments(ontology: AudioSetOntology, segments: Iterable[Segment], classes: Sequence[str]
                         ) -> list[tuple[Segment, tuple[str, ...]]]:
    ids = _ids_by_name(ontology, classes)
    return [(s, found) for s in segments if (found := tuple(sorted(set(s.labels) & set(ids))))]


def dsol_audioset(ontology: AudioSetOntology, unbalanced: Iterable[Segment], balanced: Iterable[Segment],
                  classes: Sequence[str] = DSOL_INSTRUMENTS) -> list[SplitSegment]:
    """DSOL's AudioSet-instrument: segments with one or more of ``classes``; unbalanced → ``train``, balanced →
    ``test``. ``n_sources`` (how many of the classes a segment has) picks stage one (1, ``solo``) or two (>= 2)."""
    out = [SplitSegment(s, "train", c) for s, c in _instrument_segments(ontology, unbalanced, classes)]
    return out + [SplitSegment(s, "test", c) for s, c in _instrument_segments(ontology, balanced, classes)]


def cavl_audioset(ontology: AudioSetOntology, unbalanced: Iterable[Segment], balanced: Iterable[Segment],
                  classes: Sequence[str] = DSOL_INSTRUMENTS) -> list[SplitSegment]:
    """CAVL's AudioSet-Instrument (supplement 6.1): the same 15 instruments; unbalanced → ``train``, balanced
    halved into ``val`` and ``test`` by a hash of the YouTube id."""
    out = [SplitSegment(s, "train", c) for s, c in _instrument_segments(ontology, unbalanced, classes)]
    return out + [SplitSegment(s, "val" if hashed_fraction(s.ytid, "cavl") < 0.5 else "test", c)
                  for s, c in _instrument_segments(ontology, balanced, classes)]


def write_segments(segments: Iterable[Segment], path: str | os.PathLike, title: str) -> Path:
    """Write segments as an AudioSet segment CSV (comment lines, then ``YTID, start, end, "labels"``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "# YTID, start_seconds, end_seconds, positive_labels"]
    lines += [f'{s.ytid}, {s.start:.3f}, {s.end:.3f}, "{",".join(s.labels)}"' for s in segments]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _csv_dicts(path: Path, what: str, need: Sequence[str]) -> csv.DictReader:
    """A ``DictReader`` over ``path`` whose header has every column of ``need`` (else one line naming the file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ListError(f"{path}: no such {what}") from None
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not set(need) <= set(reader.fieldnames):
        raise ListError(f"{path}:1: a {what} starts with a header holding {','.join(need)}; got {reader.fieldnames}")
    return reader


# ------------------------------------------------------------------------------------------------------ Kinetics
# L3-Net, Appendix A: its 34 classes, each with the Kinetics class names it may carry in a release (L3 used an
# early Kinetics whose names differ in places from Kinetics-400's); the first name found in the CSV is used.
KINETICS_SOUNDS: dict[str, tuple[str, ...]] = {
    "blowing nose": ("blowing nose",), "bowling": ("bowling",), "chopping wood": ("chopping wood",),
    "ripping paper": ("ripping paper",), "shuffling cards": ("shuffling cards",), "singing": ("singing",),
    "tapping pen": ("tapping pen",), "typing": ("typing",), "blowing out": ("blowing out candles", "blowing out"),
    "dribbling ball": ("dribbling basketball", "dribbling ball"), "laughing": ("laughing",),
    "mowing the lawn by pushing lawnmower": ("mowing lawn", "mowing the lawn by pushing lawnmower"),
    "shoveling snow": ("shoveling snow", "shovelling snow"), "stomping": ("stomping grapes", "stomping"),
    "tap dancing": ("tap dancing",), "tapping guitar": ("tapping guitar",), "tickling": ("tickling",),
    "fingerpicking": ("fingerpicking",), "patting": ("patting",), "playing accordion": ("playing accordion",),
    "playing bagpipes": ("playing bagpipes",), "playing bass guitar": ("playing bass guitar",),
    "playing clarinet": ("playing clarinet",), "playing drums": ("playing drums",),
    "playing guitar": ("playing guitar",), "playing harmonica": ("playing harmonica",),
    "playing keyboard": ("playing keyboard",), "playing organ": ("playing organ",),
    "playing piano": ("playing piano",), "playing saxophone": ("playing saxophone",),
    "playing trombone": ("playing trombone",), "playing trumpet": ("playing trumpet",),
    "playing violin": ("playing violin",), "playing xylophone": ("playing xylophone",),
}


@dataclass(frozen=True)
class KineticsClip:
    """One row of a Kinetics CSV; ``where`` is ``file:line``."""

    label: str
    youtube_id: str
    start: float
    end: float
    split: str
    where: str = ""


def read_kinetics(path: str | os.PathLike) -> list[KineticsClip]:
    """The rows of a Kinetics CSV (header ``label,youtube_id,time_start,time_end,split[,is_cc]``)."""
    path = Path(path)
    reader = _csv_dicts(path, "Kinetics CSV", ("label", "youtube_id", "time_start", "time_end", "split"))
    rows = []
    for lineno, row in enumerate(reader, start=2):
        try:
            t0, t1 = float(row["time_start"]), float(row["time_end"])
        except (TypeError, ValueError):
            raise ListError(f"{path}:{lineno}: time_start and time_end must be numbers; got {row}") from None
        if not row["youtube_id"] or not t1 > t0 >= 0:
            raise ListError(f"{path}:{lineno}: a row needs a youtube_id and 0 <= time_start < time_end")
        rows.append(KineticsClip(row["label"].strip(), row["youtube_id"].strip(), t0, t1, row["split"].strip(),
                                 f"{path}:{lineno}"))
    return rows


def kinetics_sounds(rows: Iterable[KineticsClip]) -> tuple[list[tuple[KineticsClip, str]], list[str]]:
    """The Kinetics-Sounds rows (each with its L3 class name) and the L3 classes the CSVs do not have."""
    rows = list(rows)
    present = {r.label for r in rows}
    mapping: dict[str, str] = {}
    missing = []
    for l3, names in KINETICS_SOUNDS.items():
        name = next((n for n in names if n in present), None)
        if name is None:
            missing.append(l3)
        else:
            mapping[name] = l3
    return [(r, mapping[r.label]) for r in rows if r.label in mapping], missing


# ------------------------------------------------------------------------------------------------------- ESC-50
@dataclass(frozen=True)
class ESC50Clip:
    """One row of ESC-50's ``meta/esc50.csv``."""

    filename: str
    fold: int
    target: int
    category: str
    esc10: bool

    @property
    def split(self) -> str:
        return f"fold{self.fold}"


def read_esc50(path: str | os.PathLike) -> list[ESC50Clip]:
    """The rows of ``meta/esc50.csv``; folds must be 1-5 and each target must keep one category name."""
    path = Path(path)
    reader = _csv_dicts(path, "ESC-50 metadata file", ("filename", "fold", "target", "category", "esc10"))
    rows, names = [], {}
    for lineno, row in enumerate(reader, start=2):
        try:
            clip = ESC50Clip(row["filename"], int(row["fold"]), int(row["target"]), row["category"],
                             row["esc10"].strip().lower() == "true")
        except (TypeError, ValueError):
            raise ListError(f"{path}:{lineno}: fold and target must be integers; got {row}") from None
        if clip.fold not in range(1, 6):
            raise ListError(f"{path}:{lineno}: fold must be 1-5; got {clip.fold}")
        if names.setdefault(clip.target, clip.category) != clip.category:
            raise ListError(f"{path}:{lineno}: target {clip.target} is {names[clip.target]!r} above, "
                            f"{clip.category!r} here")
        rows.append(clip)
    return rows


def esc50_folds(rows: Sequence[ESC50Clip]) -> list[tuple[list[int], list[int]]]:
    """The five leave-one-fold-out probes: ``(train indices, test indices)`` for test folds 1 ... 5."""
    return [([i for i, r in enumerate(rows) if r.fold != k], [i for i, r in enumerate(rows) if r.fold == k])
            for k in range(1, 6)]
