"""Bad data is found before step 1: training on a clip directory decodes every file once first and names every bad
file in one error, so no run is started (and no step lost) on data that would fail later."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from avlib.cli import main
from avlib.data import read_manifest


@pytest.fixture()
def broken_clips(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "clips"
    assert main(["synth", str(root), "--method", "dmc", "--clips", "6", "--test-clips", "2", "--seed", "3"]) == 0
    rows = read_manifest(root)
    bad_wav = root / rows[4]["audio"]  # a training clip, drawn only at some later step
    bad_wav.write_bytes(bad_wav.read_bytes()[:44] + b"\x00garbage" * 8)  # header kept, data cut short
    bad_png = root / rows[7]["frames"][0]  # a test clip: evaluation would have failed after training
    bad_png.write_bytes(b"not a png")
    return root, [rows[4]["audio"], rows[7]["frames"][0]]


def test_training_refuses_bad_files_before_step_1_naming_all_of_them(tmp_path, capsys, broken_clips):
    root, bad = broken_clips
    out = tmp_path / "run"
    code = main(["train", "dmc", "--data", str(root), "--out", str(out), "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 1
    for rel in bad:
        assert rel in err, f"the error does not name {rel}: {err}"
    assert not any(out.glob("step_*.pt")) and not (out / "metrics.jsonl").exists(), "a run was started on bad data"


def test_a_second_scan_of_good_data_uses_the_cache(tmp_path, capsys, monkeypatch):
    root = tmp_path / "clips"
    assert main(["synth", str(root), "--method", "dmc", "--clips", "4", "--test-clips", "2", "--seed", "3"]) == 0
    capsys.readouterr()
    pf = importlib.import_module("avlib.data.preflight")  # the module (avlib.data.preflight is also the function)
    calls = []
    original = pf.audio_facts
    monkeypatch.setattr(pf, "audio_facts", lambda path: calls.append(path) or original(path))
    for i in range(2):
        run = tmp_path / f"run{i}"
        assert main(["train", "dmc", "--data", str(root), "--out", str(run), "--steps", "1", "--batch-size", "2",
                     "--no-eval"]) == 0
        assert json.loads(capsys.readouterr().out)["step"] == 1
    assert len(calls) == 6, f"the second run decoded again: {len(calls)} decodes for 6 clips"
