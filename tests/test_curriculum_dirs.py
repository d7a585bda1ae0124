"""CAVL's curriculum on real data: a clip directory with one sub-directory per level (``c1`` ... ``c4``) trains and
evaluates each level on its own clips, and ``--set`` changes any field of a config from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from avlib.cli import main
from avlib.data import read_manifest


def test_a_curriculum_directory_trains_and_scores_each_level_on_its_own_clips(tmp_path: Path, capsys) -> None:
    data = tmp_path / "curriculum"
    assert main(["synth", str(data / "c1"), "--method", "cavl", "--clips", "4", "--test-clips", "3"]) == 0
    capsys.readouterr()
    code = main(["train", "cavl", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--batch-size", "2", "--set", "levels=(1,)"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["stages"] == ["c1"]
    n_test = sum(r["split"] == "test" for r in read_manifest(data / "c1"))
    assert summary["eval"]["clips"] == n_test == 3  # scored on c1's test split, not on a top-level one


def test_set_changes_a_config_field_and_refuses_unknown_ones(tmp_path: Path, capsys) -> None:
    code = main(["train", "cavl", "--out", str(tmp_path / "a"), "--steps", "1", "--no-eval", "--set", "levels=(1, 2)"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["stages"] == ["c1", "c2"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir()) == ["1_c1", "2_c2"]
    code = main(["train", "cavl", "--out", str(tmp_path / "b"), "--steps", "1", "--set", "bogus=3"])
    err = capsys.readouterr().err
    assert code == 2 and "bogus" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
