"""AudioSet subsets of the papers in avlib's clip format: Objects that Sound's instruments, DSOL's and CAVL's 15
instruments, and CAVL's curriculum levels.

Usage::

    python data_scripts/audioset.py --out DIR --subset ots          # Musical instrument / Singing / Tools (110 classes)
    python data_scripts/audioset.py --out DIR --subset dsol         # 15 instruments: unbalanced train, balanced test
    python data_scripts/audioset.py --out DIR --subset cavl         # 15 instruments: balanced halved into val / test
    python data_scripts/audioset.py --out DIR --subset curriculum   # CAVL's levels C1..C4 of the balanced set
    python data_scripts/audioset.py --out DIR --subset dsol --lists-only   # the split CSVs, no video

The lists are AudioSet's segment CSVs (``balanced_train_segments.csv``, ``unbalanced_train_segments.csv``,
``eval_segments.csv``: ``#`` comment lines, then ``YTID, start_seconds, end_seconds, "labels"``) and
``ontology.json``. The subsets and splits are :mod:`avlib.data.splits`'s; the curriculum is
:func:`avlib.data.audioset.grade_segments` (third-level label counting) with :func:`~avlib.data.audioset.write_levels`.
Each split (or level) is first written as a segment CSV in AudioSet's own format under ``OUT/segments/``; then each
segment's video is fetched and its 10 s cut into a clip with the id ``YTID_<start in ms>`` and the fields ``split``,
``labels`` (AudioSet ids), ``classes`` (those of the subset), ``n_sources`` and, for the curriculum, ``level``.
Exit status as for the other dataset scripts (0: all found or vanished).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from avlib.data.audioset import (
    AudioSetError,
    AudioSetOntology,
    grade_segments,
    level_counts,
    read_segments,
    write_levels,
)
from avlib.data.pipeline import Planned, add_common_args, get_lists, run_videos, say
from avlib.data.splits import (
    DSOL_INSTRUMENTS,
    ListError,
    SplitSegment,
    cavl_audioset,
    dsol_audioset,
    ots_audioset,
    write_segments,
)

NAME = "audioset"
CSV = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/"
LISTS = {"ontology.json": "https://raw.githubusercontent.com/audioset/ontology/master/ontology.json",
         "balanced_train_segments.csv": CSV + "balanced_train_segments.csv",
         "unbalanced_train_segments.csv": CSV + "unbalanced_train_segments.csv",
         "eval_segments.csv": CSV + "eval_segments.csv"}
NEEDS = {"ots": ("balanced_train_segments.csv", "unbalanced_train_segments.csv", "eval_segments.csv"),
         "dsol": ("balanced_train_segments.csv", "unbalanced_train_segments.csv"),
         "cavl": ("balanced_train_segments.csv", "unbalanced_train_segments.csv"),
         "curriculum": ("balanced_train_segments.csv",)}


def subset(name: str, ontology: AudioSetOntology, files: dict, classes: Sequence[str]) -> list[SplitSegment]:
    """The segments of subset ``name`` with their splits."""
    balanced = read_segments(files["balanced_train_segments.csv"])
    if name == "curriculum":
        return [SplitSegment(g.segment, f"c{g.level}", g.sources) for g in grade_segments(ontology, balanced)
                if g.level is not None]
    unbalanced = read_segments(files["unbalanced_train_segments.csv"])
    if name == "ots":
        return ots_audioset(ontology, balanced + unbalanced, read_segments(files["eval_segments.csv"]))
    return (dsol_audioset if name == "dsol" else cavl_audioset)(ontology, unbalanced, balanced, classes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--subset", choices=tuple(NEEDS), required=True)
    parser.add_argument("--classes", help="';'-separated AudioSet class names for dsol / cavl (default: the 15 of "
                        "avlib.data.splits.DSOL_INSTRUMENTS)")
    parser.add_argument("--splits", help="','-separated splits (or levels c1,...) to fetch (default all)")
    parser.add_argument("--lists-only", action="store_true", help="write the split CSVs, fetch no video")
    args = parser.parse_args(argv)
    files = get_lists(NAME, args, {k: LISTS[k] for k in ("ontology.json", *NEEDS[args.subset])})
    if files is None:
        return 1
    classes = [c.strip() for c in args.classes.split(";")] if args.classes else DSOL_INSTRUMENTS
    try:
        ontology = AudioSetOntology.load(files["ontology.json"])
        segments = subset(args.subset, ontology, files, classes)
    except (AudioSetError, ListError) as e:
        say(NAME, f"ERROR {e}")
        return 1
    out = args.out / "segments" / args.subset
    if args.subset == "curriculum":
        graded = grade_segments(ontology, read_segments(files["balanced_train_segments.csv"]))
        write_levels(graded, out)
        levels = level_counts(graded)
        say(NAME, "levels: " + ", ".join(f"C{k} {n}" for k, n in sorted((k, n) for k, n in levels.items() if k))
            + f"; {levels.get(None, 0)} segments without a level")
    else:
        for split in sorted({s.split for s in segments}):
            write_segments([s.segment for s in segments if s.split == split], out / f"{split}.csv",
                           f"{args.subset} AudioSet subset, split {split}")
    counts = Counter(s.split for s in segments)
    say(NAME, f"{args.subset}: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) +
        f" segments; CSVs in {out}")
    if args.lists_only:
        return 0
    wanted = set(args.splits.split(",")) if args.splits else None
    planned = [Planned(s.segment.ytid, f"{s.segment.ytid}_{int(round(s.segment.start * 1000))}",
                       {"split": s.split, "labels": list(s.segment.labels), "classes": list(s.classes),
                        "n_sources": s.n_sources, **({"level": int(s.split[1:])} if args.subset == "curriculum"
                                                     else {})},
                       s.segment.start, s.segment.end)
               for s in segments if wanted is None or s.split in wanted]
    return run_videos(NAME, args, planned, paper_total=len({p.video_id for p in planned}))


if __name__ == "__main__":
    sys.exit(main())
