"""The annotated SoundNet-Flickr test set (Senocak et al. 2018; 250 image-sound pairs with annotator boxes) in
avlib's clip format, for the localization evaluation of DMC and CAVL.

Usage::

    python data_scripts/flickr_soundnet.py --source FLICKR_TEST --out DIR

``--source`` is the released test folder: ``Annotations/<id>.xml``, the image ``frames/<id>.jpg`` (or
``images/``), and the sound ``audio/<id>.wav`` (or ``.mp3``, any format PyAV reads). The dataset is shared by its
authors on request, so it is not fetched; the list of the 250 test ids (``flickr_test.csv`` of "Localizing Visual
Sounds the Hard Way") is, into ``--lists``. Each pair becomes one clip: the image as its single frame (kept at its
size), the sound resampled to ``--sample-rate``, ``annotator_boxes`` the XML's boxes (256-pixel coordinates, as
the evaluators read them) and ``boxes`` the same per stored frame, scaled to the stored image. Score maps with
:func:`avlib.data.flickr.flickr_scores` (the public protocol). A pair with a missing or broken file gets one
``SKIP`` line; the summary says how many of the listed pairs were written. Exit status 0 when all were, 1
otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from avlib.data.flickr import SOURCE_SIZE, FlickrError, read_flickr_boxes, read_flickr_test_list
from avlib.data.pipeline import add_common_args, get_lists, say
from avlib.data.video import MANIFEST, UnusableVideo, decode_audio, manifest_ids, write_clip_folders

NAME = "flickr_soundnet"
LISTS = {"flickr_test.csv":
         "https://raw.githubusercontent.com/hche11/Localizing-Visual-Sounds-the-Hard-Way/main/metadata/flickr_test.csv"}


def find(folder: Path, names: Sequence[str], stem: str, exts: Sequence[str]) -> Path:
    for name in names:
        for ext in exts:
            if (folder / name / f"{stem}{ext}").is_file():
                return folder / name / f"{stem}{ext}"
    raise UnusableVideo(f"no {'/'.join(names)}/{stem}{{{','.join(exts)}}} in {folder}")


def convert(source: Path, out: Path, item: str, sample_rate: int, image_format: str) -> dict:
    boxes = read_flickr_boxes(find(source, ["Annotations"], item, [".xml"]))
    with Image.open(find(source, ["frames", "images", "Data"], item, [".jpg", ".jpeg", ".png"])) as im:
        image = im.convert("RGB")
    audio = decode_audio(find(source, ["audio", "Data"], item, [".wav", ".mp3", ".flac", ".ogg", ".m4a"]),
                         sample_rate)
    sx, sy = image.size[0] / SOURCE_SIZE, image.size[1] / SOURCE_SIZE
    scaled = [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in boxes]
    rows = write_clip_folders(audio, {0: image}, out, [item], [(0.0, audio.size / sample_rate)], 1.0, sample_rate,
                              image_format, {"split": "test", "annotator_boxes": [list(b) for b in boxes],
                                             "boxes": [scaled], "n_boxes": len(boxes), "source": item})
    return rows[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--source", type=Path, required=True, help="the released test folder (Annotations/, ...)")
    args = parser.parse_args(argv)
    files = get_lists(NAME, args, LISTS)
    if files is None:
        return 1
    try:
        items = read_flickr_test_list(files["flickr_test.csv"])
        known = manifest_ids(args.out)
    except (FlickrError, ValueError) as e:
        say(NAME, f"ERROR {e}")
        return 1
    (args.out / "clips").mkdir(parents=True, exist_ok=True)
    written, failed = 0, []
    with open(args.out / MANIFEST, "a") as f:
        for item in items:
            if item in known:
                continue
            try:
                row = convert(args.source, args.out, item, args.sample_rate, args.image_format)
            except Exception as e:  # one bad pair must not stop the others
                failed.append(item)
                reason = str(e) if isinstance(e, UnusableVideo | FlickrError) else f"{type(e).__name__}: {e}"
                say(NAME, f"SKIP {item}: {' '.join(reason.split())}")
                continue
            f.write(json.dumps(row) + "\n")
            f.flush()
            known.add(item)
            written += 1
    done = len(manifest_ids(args.out) & set(items))
    say(NAME, f"pairs: {written} written now, {done} of the {len(items)} listed in {args.out}; {len(failed)} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
