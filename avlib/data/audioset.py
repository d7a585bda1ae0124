"""The AudioSet curriculum of Curriculum Audiovisual Learning (Hu et al., 2020, §4.1 and supplement §6.1): how many
sources sound in a clip, read from its labels in the AudioSet ontology, and the levels C1 ... C4 that follow.

AudioSet labels a clip hierarchically: a barking dog is labelled Bark and also, often, Dog, "Domestic animals, pets"
and Animal. The paper keeps only **third-level** labels (Dog), which "generally relate to the common objects in our
surroundings": (1) every label below the third level is replaced by its third-level ancestor (Bark -> Dog); (2) every
first- or second-level label that is an ancestor of a third-level label of the clip is removed. The number of
third-level labels left is the number of sources; a clip with n sources belongs to curriculum level C_n.

Choices the paper leaves open, ours: a label's level is its depth counted from the top-level categories (level 1),
by the shortest path (a few AudioSet classes have two parents); a label deeper than the fourth level is reduced the
same way (to every third-level ancestor it has); step (1) runs before step (2), so a clip labelled Bark and Animal
without Dog counts one source; a clip that keeps a first- or second-level label that is no ancestor of any of its
third-level labels (e.g. only Music) cannot be counted and is left out with the reason (the paper keeps 19,443 "valid"
clips of the Balanced-Train set).

The files are AudioSet's own: ``ontology.json`` (a JSON list of objects with ``id``, ``name``, ``child_ids``, ...) and
the segment CSVs (lines starting with ``#`` are comments, then ``YTID, start_seconds, end_seconds, positive_labels``
with the labels quoted and comma-separated: ``--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"``). Bad input is
refused with one line naming the file and the line.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SOURCE_LEVEL", "AudioSetError", "AudioSetOntology", "GradedSegment", "Segment", "grade_segment",
           "grade_segments", "level_counts", "read_segments", "write_levels"]

SOURCE_LEVEL = 3  # the ontology level whose labels count as sources (supplement §6.1)


class AudioSetError(ValueError):
    """An AudioSet file that cannot be used: the message names the file and, where there is one, the line."""


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AudioSetError(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AudioSetError(f"{path}: cannot read the {what} file: {e}") from None


class AudioSetOntology:
    """The AudioSet ontology: names, children, parents and levels of its classes.

    Args:
        entries: the objects of ``ontology.json`` (each with ``id``, ``name`` and ``child_ids``).
        source: how errors name where the entries came from.
    """

    def __init__(self, entries: Sequence[dict], source: str = "the ontology") -> None:
        self.source = source
        self.names: dict[str, str] = {}
        self.children: dict[str, tuple[str, ...]] = {}
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or \
                    not isinstance(entry.get("child_ids", []), list):
                raise AudioSetError(f"{source}: entry {i} is not an object with a string 'id' and a list 'child_ids'")
            if entry["id"] in self.names:
                raise AudioSetError(f"{source}: entry {i} repeats the id {entry['id']!r}")
            self.names[entry["id"]] = str(entry.get("name", entry["id"]))
            self.children[entry["id"]] = tuple(entry.get("child_ids", []))
        parents: dict[str, list[str]] = {k: [] for k in self.names}
        for node, kids in self.children.items():
            for kid in kids:
                if kid not in self.names:
                    raise AudioSetError(f"{source}: {node!r} ({self.names[node]}) lists child {kid!r}, which is not in "
                                        "the ontology")
                parents[kid].append(node)
        self.parents = {k: tuple(v) for k, v in parents.items()}
        self.level = self._levels()

    @classmethod
    def load(cls, path: str | os.PathLike) -> AudioSetOntology:
        """Read ``ontology.json``."""
        path = Path(path)
        text = _read_text(path, "ontology")
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as e:
            raise AudioSetError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
        if not isinstance(entries, list):
            raise AudioSetError(f"{path}: the ontology must be a JSON list of classes; got a {type(entries).__name__}")
        return cls(entries, str(path))

    def _levels(self) -> dict[str, int]:
        """Level of every class: 1 for the top-level ones (no parent), else 1 + the smallest level of a parent."""
        level = {k: 1 for k, p in self.parents.items() if not p}
        frontier = list(level)
        while frontier:  # breadth first: each class gets the length of its shortest path from the top
            nxt = []
            for node in frontier:
                for kid in self.children[node]:
                    if kid not in level:
                        level[kid] = level[node] + 1
                        nxt.append(kid)
            frontier = nxt
        if len(level) != len(self.names):  # only a cycle keeps classes away from every top-level class
            stuck = sorted(set(self.names) - set(level))[0]
            raise AudioSetError(f"{self.source}: {stuck!r} ({self.names[stuck]}) cannot be reached from a top-level "
                                "class (the child_ids form a cycle)")
        return level

    def ancestors(self, label: str) -> set[str]:
        """Every class above ``label`` (through any parent)."""
        seen: set[str] = set()
        todo = list(self.parents[label])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(self.parents[node])
        return seen

    def source_classes(self, label: str) -> set[str]:
        """The third-level classes ``label`` stands for: itself at the third level, its third-level ancestors when it
        is deeper, none when it is above."""
        if self.level[label] <= SOURCE_LEVEL:
            return {label} if self.level[label] == SOURCE_LEVEL else set()
        return {a for a in self.ancestors(label) if self.level[a] == SOURCE_LEVEL}


@dataclass(frozen=True)
class Segment:
    """One row of a segment CSV: the clip ``ytid[start, end]`` and its positive labels; ``where`` is ``file:line``."""

    ytid: str
    start: float
    end: float
    labels: tuple[str, ...]
    where: str


def read_segments(path: str | os.PathLike) -> list[Segment]:
    """The rows of an AudioSet segment CSV (``#`` lines skipped); a malformed row is refused with its line."""
    path = Path(path)
    rows = []
    for lineno, raw in enumerate(_read_text(path, "segment CSV").splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        fields = next(csv.reader([raw], skipinitialspace=True))
        if len(fields) != 4:
            raise AudioSetError(f"{where}: expected 4 fields (YTID, start_seconds, end_seconds, positive_labels), "
                                f"got {len(fields)}: {raw.strip()[:80]!r}")
        ytid, start, end, labels = (f.strip() for f in fields)
        try:
            t0, t1 = float(start), float(end)
        except ValueError:
            raise AudioSetError(f"{where}: start_seconds and end_seconds must be numbers; got {start!r}, "
                                f"{end!r}") from None
        names = tuple(x.strip() for x in labels.split(",") if x.strip())
        if not ytid or not names or not t1 > t0 >= 0:
            raise AudioSetError(f"{where}: a row needs a YTID, 0 <= start < end and at least one label; got "
                                f"{raw.strip()[:80]!r}")
        rows.append(Segment(ytid, t0, t1, names, where))
    return rows


@dataclass(frozen=True)
class GradedSegment:
    """A segment with its sources (third-level classes, sorted), their number, its curriculum level (``None`` where it
    has none) and, without a level, why."""

    segment: Segment
    sources: tuple[str, ...]
    count: int | None
    level: int | None
    reason: str | None = None


def grade_segment(ontology: AudioSetOntology, segment: Segment, max_level: int = 4) -> GradedSegment:
    """Count the sources of one segment (the module docstring's two steps) and give its level C1 ... C_max_level."""
    unknown = [x for x in segment.labels if x not in ontology.names]
    if unknown:
        raise AudioSetError(f"{segment.where}: label {unknown[0]!r} is not in {ontology.source}")
    sources = set().union(*(ontology.source_classes(x) for x in segment.labels))  # step 1: reduce the deeper labels
    covered = set().union(*(ontology.ancestors(s) for s in sources)) if sources else set()
    orphans = [x for x in segment.labels if ontology.level[x] < SOURCE_LEVEL and x not in covered]  # step 2
    kept = tuple(sorted(sources))
    if orphans:
        x = orphans[0]
        return GradedSegment(segment, kept, None, None, f"label {x!r} ({ontology.names[x]}) is at level "
                             f"{ontology.level[x]} and above none of the clip's third-level labels")
    if len(kept) > max_level:
        return GradedSegment(segment, kept, len(kept), None, f"{len(kept)} sources: beyond C{max_level}")
    return GradedSegment(segment, kept, len(kept), len(kept))


def grade_segments(ontology: AudioSetOntology, segments: Iterable[Segment], max_level: int = 4
                   ) -> list[GradedSegment]:
    """:func:`grade_segment` of every segment."""
    return [grade_segment(ontology, s, max_level) for s in segments]


def level_counts(graded: Iterable[GradedSegment]) -> Counter:
    """How many segments each level holds (``None``: no level)."""
    return Counter(g.level for g in graded)


def write_levels(graded: Iterable[GradedSegment], out_dir: str | os.PathLike) -> dict[int, Path]:
    """One segment CSV per curriculum level, ``out_dir/c<level>.csv``, in AudioSet's own format (comment lines, then
    ``YTID, start_seconds, end_seconds, "labels"`` with the clip's original labels), so that the tools that fetch
    AudioSet clips take a level as they take a published list. Segments without a level are left out."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_level: dict[int, list[Segment]] = {}
    for g in graded:
        if g.level is not None:
            by_level.setdefault(g.level, []).append(g.segment)
    paths = {}
    for level, segments in sorted(by_level.items()):
        lines = [f"# CAVL curriculum level C{level}: clips with {level} third-level source(s)",
                 "# YTID, start_seconds, end_seconds, positive_labels"]
        lines += [f'{s.ytid}, {s.start:.3f}, {s.end:.3f}, "{",".join(s.labels)}"' for s in segments]
        paths[level] = out_dir / f"c{level}.csv"
        paths[level].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths
