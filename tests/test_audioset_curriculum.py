"""The AudioSet curriculum (CAVL supplement §6.1) on files in AudioSet's own formats: a small ontology.json and a
segment CSV written here, the number of sources of every clip counted by hand, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avlib.data.audioset import (
    AudioSetError,
    AudioSetOntology,
    grade_segments,
    level_counts,
    read_segments,
    write_levels,
)

ANIMAL, PETS, WILD, DOG, CAT, BARK, HOWL, MEOW = ("/m/0jbk", "/m/068hy", "/m/01280g", "/m/0bt9lr", "/m/01yrx",
                                                  "/m/05tny_", "/m/07qf0zm", "/m/07qrkrw")
MUSIC, INSTRUMENT, PLUCKED, BOWED, GUITAR, EGUITAR, VIOLIN = ("/m/04rlf", "/m/04szw", "/m/0fx80y", "/m/0l14_3",
                                                              "/m/0342h", "/m/02sgy", "/m/07y_7")
HUMAN, VOICE, SPEECH = "/m/0dgw9r", "/m/09l8g", "/m/09x0r"
COWBELL = "/x/cowbell"  # under two third-level classes: level 4, two sources
FIDDLE = "/x/fiddle"  # under Musical instrument (level 3 by the short path) and under Violin (level 5)


def _entry(mid: str, name: str, children: list[str]) -> dict:
    """An ontology.json object with the fields the real file has."""
    return {"id": mid, "name": name, "description": f"{name}.", "citation_uri": "", "positive_examples": [],
            "child_ids": children, "restrictions": []}


ONTOLOGY = [
    _entry(ANIMAL, "Animal", [PETS, WILD]), _entry(PETS, "Domestic animals, pets", [DOG, CAT]),
    _entry(WILD, "Wild animals", []), _entry(DOG, "Dog", [BARK, HOWL]), _entry(CAT, "Cat", [MEOW]),
    _entry(BARK, "Bark", []), _entry(HOWL, "Howl", []), _entry(MEOW, "Meow", []),
    _entry(MUSIC, "Music", [INSTRUMENT]), _entry(INSTRUMENT, "Musical instrument", [PLUCKED, BOWED, FIDDLE]),
    _entry(PLUCKED, "Plucked string instrument", [GUITAR, COWBELL]), _entry(BOWED, "Bowed string instrument",
                                                                              [VIOLIN, COWBELL]),
    _entry(GUITAR, "Guitar", [EGUITAR]), _entry(EGUITAR, "Electric guitar", []), _entry(VIOLIN, "Violin", [FIDDLE]),
    _entry(COWBELL, "Cowbell", []), _entry(FIDDLE, "Fiddle", []),
    _entry(HUMAN, "Human sounds", [VOICE]), _entry(VOICE, "Human voice", [SPEECH]), _entry(SPEECH, "Speech", []),
]

# (ytid, labels, sources counted by hand, level)
ROWS = [
    ("a1", [ANIMAL, PETS, DOG, BARK], {DOG}, 1),  # the paper's example: Animal > Pets > Dog > Bark
    ("a2", [BARK, ANIMAL], {DOG}, 1),  # Bark reduced to Dog first, so Animal is its ancestor
    ("a3", [SPEECH, DOG, MEOW], {SPEECH, DOG, CAT}, 3),
    ("a4", [EGUITAR, VIOLIN, SPEECH, CAT, MUSIC], {PLUCKED, BOWED, SPEECH, CAT}, 4),  # a fifth-level label too
    ("a5", [MUSIC], None, None),  # nothing at the third level: not countable
    ("a6", [GUITAR, EGUITAR, INSTRUMENT], {PLUCKED}, 1),
    ("a7", [COWBELL], {PLUCKED, BOWED}, 2),
    ("a8", [SPEECH, DOG, CAT, GUITAR, VIOLIN], {SPEECH, DOG, CAT, PLUCKED, BOWED}, None),  # 5 sources: beyond C4
    ("a9", [ANIMAL, SPEECH], None, None),  # Animal is above no third-level label of the clip
    ("a10", [FIDDLE, VIOLIN], {FIDDLE, BOWED}, 2),
]


def write_csv(path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    lines = ["# Segments csv created Sun Mar  5 10:54:31 2017",
             f"# num_ytids={len(rows)}, num_segs={len(rows)}, num_unique_labels=20, num_positive_labels=30",
             "# YTID, start_seconds, end_seconds, positive_labels"]
    lines += [f'{ytid}, {10.0 * i:.3f}, {10.0 * i + 10:.3f}, "{",".join(labels)}"'
              for i, (ytid, labels) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    onto = tmp_path / "ontology.json"
    onto.write_text(json.dumps(ONTOLOGY, indent=1))
    return onto, write_csv(tmp_path / "balanced_train_segments.csv", [(r[0], r[1]) for r in ROWS])


def test_levels_follow_the_shortest_path_from_the_top(files):
    onto = AudioSetOntology.load(files[0])
    assert [onto.level[x] for x in (ANIMAL, PETS, DOG, BARK, EGUITAR, COWBELL, FIDDLE)] == [1, 2, 3, 4, 5, 4, 3]
    assert onto.names[PETS] == "Domestic animals, pets" and set(onto.parents[COWBELL]) == {PLUCKED, BOWED}


def test_reading_the_real_csv_format(files):
    segs = read_segments(files[1])
    assert [s.ytid for s in segs] == [r[0] for r in ROWS]
    assert segs[0].labels == (ANIMAL, PETS, DOG, BARK) and (segs[1].start, segs[1].end) == (10.0, 20.0)
    assert segs[0].where.endswith("balanced_train_segments.csv:4")  # three comment lines first


def test_every_clip_gets_the_hand_counted_sources_and_level(files):
    onto = AudioSetOntology.load(files[0])
    graded = grade_segments(onto, read_segments(files[1]))
    for g, (ytid, _, sources, level) in zip(graded, ROWS, strict=True):
        assert g.segment.ytid == ytid
        assert g.level == level, (ytid, g)
        if sources is None:
            assert g.count is None and "level" in g.reason
        else:
            assert set(g.sources) == sources and g.count == len(sources), ytid
    assert graded[7].count == 5 and "beyond C4" in graded[7].reason
    assert level_counts(graded) == {1: 3, 2: 2, 3: 1, 4: 1, None: 3}
    assert level_counts(grade_segments(onto, read_segments(files[1]), max_level=5))[5] == 1


def test_each_level_is_written_as_a_segment_csv_that_reads_back(files, tmp_path):
    graded = grade_segments(AudioSetOntology.load(files[0]), read_segments(files[1]))
    paths = write_levels(graded, tmp_path / "levels")
    assert sorted(paths) == [1, 2, 3, 4] and paths[2].name == "c2.csv"
    for level, path in paths.items():
        back = read_segments(path)
        assert [s.ytid for s in back] == [r[0] for r in ROWS if r[3] == level]
        assert [s.labels for s in back] == [tuple(r[1]) for r in ROWS if r[3] == level]
    assert read_segments(paths[1])[1].start == 10.0


def _one_line_error(match: str, fn, *args) -> str:
    with pytest.raises(AudioSetError, match=match) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_bad_input_is_refused_in_one_line_naming_the_file_and_line(files, tmp_path):
    onto_path, csv_path = files
    assert "nope.json" in _one_line_error("no such ontology file", AudioSetOntology.load, tmp_path / "nope.json")
    _one_line_error("no such segment CSV file", read_segments, tmp_path / "nope.csv")
    text = csv_path.read_text().splitlines()
    for line, bad, match in [(5, "b1, 0.000, 10.000", "expected 4 fields"),
                             (6, 'b2, zero, 10.000, "/m/09x0r"', "must be numbers"),
                             (7, 'b3, 20.000, 10.000, "/m/09x0r"', "start < end"),
                             (5, 'b4, 0.000, 10.000, ""', "at least one label")]:
        broken = tmp_path / f"broken{line}.csv"
        broken.write_text("\n".join(text[: line - 1] + [bad] + text[line - 1 :]) + "\n")
        assert f"broken{line}.csv:{line}:" in _one_line_error(match, read_segments, broken)
    unknown = write_csv(tmp_path / "unknown.csv", [("c1", [DOG]), ("c2", [DOG, "/m/unknown"])])
    onto = AudioSetOntology.load(onto_path)
    msg = _one_line_error("not in", grade_segments, onto, read_segments(unknown))
    assert "unknown.csv:5:" in msg and "/m/unknown" in msg
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[\n {"id": "/m/a", "child_ids": []},\n {"id": \n]')
    assert "bad.json:4:" in _one_line_error("not valid JSON", AudioSetOntology.load, bad_json)
    dangling = tmp_path / "dangling.json"
    dangling.write_text(json.dumps([_entry("/m/a", "A", ["/m/b"])]))
    _one_line_error("lists child '/m/b'", AudioSetOntology.load, dangling)
    cycle = tmp_path / "cycle.json"
    cycle.write_text(json.dumps([_entry("/m/r", "R", []), _entry("/m/a", "A", ["/m/b"]),
                                 _entry("/m/b", "B", ["/m/a"])]))
    _one_line_error("cycle", AudioSetOntology.load, cycle)
