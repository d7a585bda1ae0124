"""ESC-50 (Piczak 2015) in avlib's clip format, for the audio linear probes: 2000 clips of 5 s, 50 classes, five
folds.

Usage::

    python data_scripts/esc50.py --out DIR [--sample-rate 48000]         # fetch ESC-50's archive, convert
    python data_scripts/esc50.py --out DIR --source ESC-50-master         # an already extracted copy

The archive is the ESC-50 repository's (``master.zip``), extracted safely; its ``meta/esc50.csv``
(``filename,fold,target,category,esc10,src_file,take``) gives each ``audio/<filename>`` its fold and class.
Each clip is audio only (no frames), resampled with PyAV to ``--sample-rate`` (48 kHz for L3-Net's and Objects that
Sound's audio net, 16 kHz for VGGish-style ones), id the file's stem, ``split`` ``fold1`` ... ``fold5`` (a probe
trains on four folds and tests on the fifth: :func:`avlib.data.splits.esc50_folds`), ``label`` the target,
``label_name`` the category, ``esc10``. Idempotent: clips already in the manifest are kept. Exit status 0 when
every clip was written or present, 1 otherwise (a list, a checksum or a file that failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from avlib.data.pipeline import add_common_args, get_lists, say
from avlib.data.safety import ArchiveError, UnsafePathError, safe_extract
from avlib.data.splits import ListError, read_esc50
from avlib.data.video import MANIFEST, UnusableVideo, decode_audio, manifest_ids, write_audio_clip

NAME = "esc50"
LISTS = {"ESC-50-master.zip": "https://github.com/karoldvl/ESC-50/archive/master.zip"}


def source_folder(args: argparse.Namespace) -> Path | None:
    if args.source:
        return args.source
    files = get_lists(NAME, args, LISTS)
    if files is None:
        return None
    folder = files["ESC-50-master.zip"].parent / "ESC-50"
    try:
        safe_extract(files["ESC-50-master.zip"], folder)
    except (ArchiveError, UnsafePathError) as e:
        say(NAME, f"ERROR {e}")
        return None
    metas = sorted(folder.rglob("meta/esc50.csv"))
    if not metas:
        say(NAME, f"ERROR no meta/esc50.csv in {files['ESC-50-master.zip']}")
        return None
    return metas[0].parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, sample_rate=48000)
    parser.add_argument("--source", type=Path, help="an extracted ESC-50 (with meta/ and audio/); default: fetch")
    args = parser.parse_args(argv)
    source = source_folder(args)
    if source is None:
        return 1
    try:
        rows = read_esc50(source / "meta" / "esc50.csv")
        known = manifest_ids(args.out)
    except (ListError, ValueError) as e:
        say(NAME, f"ERROR {e}")
        return 1
    rows = rows[: args.limit] if args.limit else rows
    written, failed = 0, []
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / MANIFEST, "a") as f:
        for r in rows:
            cid = Path(r.filename).stem
            if cid in known:
                continue
            try:
                audio = decode_audio(source / "audio" / r.filename, args.sample_rate)
                row = write_audio_clip(audio, args.out, cid, args.sample_rate,
                                       {"split": r.split, "label": r.target, "label_name": r.category,
                                        "esc10": r.esc10, "source": r.filename})
            except Exception as e:  # one bad file must not stop the others
                failed.append(cid)
                reason = str(e) if isinstance(e, UnusableVideo) else f"{type(e).__name__}: {e}"
                say(NAME, f"SKIP {r.filename}: {' '.join(reason.split())}")
                continue
            f.write(json.dumps(row) + "\n")
            f.flush()
            written += 1
    say(NAME, f"clips: {written} written, {len(rows) - written - len(failed)} already in the manifest, "
              f"{len(failed)} skipped; {len(rows)} listed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
