"""Kinetics-Sounds (L3-Net, Appendix A: 34 Kinetics classes) in avlib's clip format.

Usage::

    python data_scripts/kinetics_sounds.py --out DIR                        # fetch the Kinetics-400 CSVs, then videos
    python data_scripts/kinetics_sounds.py --out DIR --csv train.csv validate.csv test.csv

The lists are the Kinetics CSVs (``label,youtube_id,time_start,time_end,split[,is_cc]``; fetched as DeepMind's
``kinetics400.tar.gz`` and extracted safely unless ``--csv`` names them). Rows of L3's 34 classes are kept
(:data:`avlib.data.splits.KINETICS_SOUNDS` maps its names to those of the release; a class the CSVs lack is named
on a ``NOTE`` line) with the CSV's own split (``validate`` becomes ``val``): L3's 15k / 1.9k / 1.9k split was not
published. Each clip is the row's 10 s segment, id ``YTID_<start>_<end>`` (seconds, six digits), ``label`` its
class's place in L3's list and ``label_name`` L3's name. Exit status as for the other dataset scripts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from avlib.data.pipeline import Planned, add_common_args, get_lists, run_videos, say
from avlib.data.safety import ArchiveError, UnsafePathError, safe_extract
from avlib.data.splits import KINETICS_SOUNDS, ListError, kinetics_sounds, read_kinetics

NAME = "kinetics_sounds"
LISTS = {"kinetics400.tar.gz": "https://storage.googleapis.com/deepmind-media/Datasets/kinetics400.tar.gz"}
SPLITS = {"validate": "val", "valid": "val"}


def csv_files(args: argparse.Namespace) -> list[Path] | None:
    if args.csv:
        return list(args.csv)
    files = get_lists(NAME, args, LISTS)
    if files is None:
        return None
    folder = files["kinetics400.tar.gz"].with_suffix("").with_suffix("")
    try:
        safe_extract(files["kinetics400.tar.gz"], folder)
    except (ArchiveError, UnsafePathError) as e:
        say(NAME, f"ERROR {e}")
        return None
    return sorted(folder.rglob("*.csv"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--csv", type=Path, nargs="+", help="the Kinetics CSVs to read (default: fetch them)")
    args = parser.parse_args(argv)
    paths = csv_files(args)
    if paths is None:
        return 1
    try:
        rows = [r for p in paths for r in read_kinetics(p)]
    except ListError as e:
        say(NAME, f"ERROR {e}")
        return 1
    kept, missing = kinetics_sounds(rows)
    if missing:
        say(NAME, f"NOTE {len(missing)} of L3's 34 classes are not in these CSVs: {', '.join(missing)}")
    order = {name: k for k, name in enumerate(KINETICS_SOUNDS)}
    planned = [Planned(r.youtube_id, f"{r.youtube_id}_{int(r.start):06d}_{int(r.end):06d}",
                       {"split": SPLITS.get(r.split, r.split), "label": order[l3], "label_name": l3,
                        "kinetics_label": r.label}, r.start, r.end)
               for r, l3 in kept]
    return run_videos(NAME, args, planned, paper_total=len({p.video_id for p in planned}))


if __name__ == "__main__":
    sys.exit(main())
