"""MUSIC (Zhao et al. 2018, "The Sound of Pixels") in avlib's clip format, with DSOL's or CAVL's split.

Usage::

    python data_scripts/music.py --out DIR --scheme dsol          # 1 s clips; test: first 5 solo / 2 duet per class
    python data_scripts/music.py --out DIR --scheme cavl          # 10 s clips; val / test: 1st / 2nd solo per class
    python data_scripts/music.py --out DIR --scheme dsol --mirror /shared/MUSIC   # a folder of <id>.mp4, no YouTube

The lists are MUSIC_dataset's ``MUSIC_solo_videos.json`` and ``MUSIC_duet_videos.json`` (``{"videos": {"violin":
[ids...]}}``; duet keys name two instruments). Splits (:func:`avlib.data.splits.music_splits`): "first" is by the
published list, so a split never depends on what vanished. Clip rows carry ``split``, ``label`` / ``label_name``
(solo: the instrument, numbered in sorted order), ``kind`` (solo / duet), ``instruments``, ``n_sources`` and, for
DSOL's solo training videos, ``half`` (1: stage one, 2: the synthetic mosaics of stage two).

Downloads are resumable and parallel; vanished and failed videos are listed in ``VIDEOS/failures.tsv`` and the
summary says how many of the 685 listed videos were found. Exit status 0 when everything was found or vanished, 1
when a video failed or could not be cut (``SKIP`` lines), or a list could not be had.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from avlib.data.pipeline import Planned, add_common_args, get_lists, run_videos, say
from avlib.data.splits import ListError, music_splits, read_music_list

NAME = "music"
BASE = "https://raw.githubusercontent.com/roudimit/MUSIC_dataset/master/"
LISTS = {"MUSIC_solo_videos.json": BASE + "MUSIC_solo_videos.json",
         "MUSIC_duet_videos.json": BASE + "MUSIC_duet_videos.json"}


def plan(solo: dict, duet: dict | None, scheme: str) -> tuple[list[Planned], list[str]]:
    """The videos of ``scheme``'s split as :class:`Planned` clips, and notes on ids listed twice."""
    videos, notes = music_splits(solo, duet, scheme)
    labels = {name: k for k, name in enumerate(sorted(solo))}
    planned = []
    for v in videos:
        instruments = v.category.split()
        row = {"split": v.split, "kind": v.kind, "instruments": instruments, "n_sources": len(instruments),
               "label": labels.get(v.category) if v.kind == "solo" else None,
               "label_name": v.category if v.kind == "solo" else None, **v.extra}
        planned.append(Planned(v.id, v.id, row))
    return planned, notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, clip_seconds=-1)
    parser.add_argument("--scheme", choices=("dsol", "cavl"), required=True, help="whose split and clip length")
    parser.add_argument("--no-duet", action="store_true", help="solo videos only")
    args = parser.parse_args(argv)
    if args.clip_seconds < 0:
        args.clip_seconds = 1.0 if args.scheme == "dsol" else 10.0
    files = get_lists(NAME, args, LISTS if not args.no_duet else {k: LISTS[k] for k in list(LISTS)[:1]})
    if files is None:
        return 1
    try:
        solo = read_music_list(files["MUSIC_solo_videos.json"])
        duet = None if args.no_duet else read_music_list(files["MUSIC_duet_videos.json"])
    except ListError as e:
        say(NAME, f"ERROR {e}")
        return 1
    planned, notes = plan(solo, duet, args.scheme)
    for note in notes:
        say(NAME, f"NOTE {note}")
    return run_videos(NAME, args, planned, paper_total=len(planned))


if __name__ == "__main__":
    sys.exit(main())
