"""The ``avlib`` command end to end on a tiny SynthOrchestra clip dataset, and its handling of bad arguments."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avlib.cli import main
from avlib.data import ClipDataset, read_manifest
from avlib.train import load_checkpoint


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips") / "synth"
    assert main(["synth", str(root), "--clips", "6", "--test-clips", "3", "--seed", "5"]) == 0
    return root


def test_synth_writes_train_and_test_splits(clips):
    rows = read_manifest(clips)
    assert [r["split"] for r in rows] == ["train"] * 6 + ["test"] * 3
    test = ClipDataset(clips, split="test")
    item = test[0]
    assert item["frames"].shape[1:] == (3, 64, 64) and item["audio"].shape == (round(1.2 * 16000),)  # l3 quick world


def test_train_resume_and_eval(tmp_path, capsys, clips):
    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    common = ["train", "l3", "--data", clips, "--out", run_dir, "--batch-size", "4", "--ckpt-every", "2"]
    code, first, err = run(capsys, *common, "--steps", "3", "--log-every", "1", "--precision", "fp32")
    assert code == 0, err
    assert first["step"] == 3 and first["precision"] == "fp32" and 0 <= first["eval"]["avc_accuracy"] <= 1
    state = load_checkpoint(run_dir / "last.pt")
    assert state["step"] == 3 and state["config"]["meta"] == {
        "method": "l3",
        "scale": "quick",
        "data": str(clips),
        "seed": 0,
    }
    code, second, err = run(capsys, *common, "--steps", "5", "--resume", "--no-eval", "--precision", "fp32")
    assert code == 0, err
    assert second["step"] == 5 and "eval" not in second
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5]  # resumed at 3, not restarted
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 5

    code, scores, err = run(capsys, "eval", "l3", "--ckpt", run_dir, "--data", clips)
    assert code == 0, err
    assert scores["step"] == 5 and scores["chance"] == 0.5
    # the command scores exactly the held-out pairs that avlib.methods builds, with the checkpoint's weights
    from avlib.methods import build

    built = build("l3", "quick", clips)
    built.model.load_state_dict(load_checkpoint(run_dir / "last.pt")["model"])
    assert scores["avc_accuracy"] == built.eval_fn(built.model)["avc_accuracy"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "required: COMMAND"),
        (["fly"], "invalid choice: 'fly'"),
        (["train", "nope", "--out", "x"], "invalid choice: 'nope'"),
        (["train", "l3"], "required: --out"),
        (["train", "l3", "--out", "x", "--steps", "0"], "--steps: expected a positive integer, got '0'"),
        (["train", "l3", "--out", "x", "--scale", "huge"], "--scale: invalid choice: 'huge'"),
        (["train", "l3", "--out", "x", "--data", "/no/such/dir"], "--data /no/such/dir: not a clip directory"),
        (["train", "l3", "--out", "x", "--scale", "full"], "trains on real data: pass --data"),
        (["eval", "l3", "--ckpt", "/no/such.pt"], "--ckpt /no/such.pt: no such checkpoint file"),
        (["train", "dmc", "--out", "x", "--scale", "full"], "dmc at scale 'full' trains on real data: pass --data"),
        (["train", "cavl", "--out", "x", "--batch-size", "-1"], "--batch-size: expected a positive integer, got '-1'"),
        (["synth", "x", "--method", "cavl", "--scale", "full"], "method 'cavl' at scale 'full' has no SynthOrchestra"),
        (["synth", "x", "--method", "dsol"], "--method: invalid choice: 'dsol'"),
        (["eval", "cavl", "--ckpt", "/no/such/run"], "--ckpt /no/such/run: no such checkpoint file"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_synth_refuses_to_overwrite(capsys, clips):
    code, _, err = run(capsys, "synth", clips)
    assert code == 2 and "already holds a clip dataset" in err


def test_eval_refuses_other_methods_checkpoint(tmp_path, capsys, clips):
    from avlib.train import save_checkpoint

    save_checkpoint({"model": {}, "step": 1, "config": {"meta": {"method": "ave"}}}, tmp_path / "last.pt")
    code, _, err = run(capsys, "eval", "l3", "--ckpt", tmp_path / "last.pt", "--data", clips)
    assert code == 2 and "holds a 'ave' model" in err


def test_avol_quick_starts_from_a_trained_ave_run(tmp_path, capsys, clips):
    torch.set_num_threads(1)
    code, _, err = run(capsys, "train", "avol", "--data", clips, "--out", tmp_path / "avol0", "--steps", "1")
    assert code == 2 and "starts from a trained ave model" in err and "--init-from" in err
    code, _, err = run(capsys, "train", "l3", "--data", clips, "--out", tmp_path / "l3", "--init-from", tmp_path)
    assert code == 2 and "starts from scratch" in err

    fast = ["--data", clips, "--batch-size", "4", "--steps", "2", "--precision", "fp32", "--no-eval"]
    code, _, err = run(capsys, "train", "ave", "--out", tmp_path / "ave", *fast)
    assert code == 0, err
    ave_state = load_checkpoint(tmp_path / "ave")["model"]
    code, summary, err = run(capsys, "train", "avol", "--out", tmp_path / "avol", "--init-from", tmp_path / "ave",
                             "--data", clips, "--batch-size", "4", "--steps", "1", "--precision", "fp32")
    assert code == 0, err
    assert summary["step"] == 1 and 0 <= summary["eval"]["avc_accuracy"] <= 1
    # the checkpoint's AVE-Net went in: a vision trunk weight that one step of training barely moves
    key = next(k for k in ave_state if k.startswith("vision.") and k.endswith("weight"))
    avol_state = load_checkpoint(tmp_path / "avol")["model"]
    assert torch.allclose(avol_state[key], ave_state[key], atol=1e-2)
    assert not torch.allclose(avol_state[key], torch.zeros_like(ave_state[key]))


def test_console_entry_point_help():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "avlib.cli", "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0
    for command in ("synth", "train", "eval"):
        assert command in proc.stdout


# ------------------------------------------------------------------------ clustering nets: dmc and cavl, localization


@pytest.fixture(scope="module", params=["dmc", "cavl"])
def clustering_clips(request, tmp_path_factory) -> tuple[str, Path]:
    """A tiny clip directory from the method's own world (dmc: solo scenes; cavl: curriculum level C1)."""
    root = tmp_path_factory.mktemp(request.param) / "synth"
    argv = ["synth", str(root), "--method", request.param, "--clips", "6", "--test-clips", "3", "--seed", "2"]
    assert main(argv) == 0
    return request.param, root


def naive_sounding_mask(boxes: list[list[float]], sounding: list[bool], h: int, w: int) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=torch.bool)
    for (x0, y0, x1, y1), on in zip(boxes, sounding, strict=True):
        for y in range(h):
            for x in range(w):
                mask[y, x] |= on and x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1
    return mask


def test_clustering_train_and_eval_score_localization(tmp_path, capsys, clustering_clips):
    from avlib import metrics

    torch.set_num_threads(1)
    method, clips = clustering_clips
    run_dir = tmp_path / "run"
    train = ["train", method, "--data", clips, "--out", run_dir, "--steps", "2", "--batch-size", "3"]
    code, summary, err = run(capsys, *train, "--precision", "fp32", "--log-every", "1")
    assert code == 0, err
    assert summary["step"] == 2 and summary["scale"] == "quick" and set(summary["final"]) >= {"loss", "step"}
    scores = summary["eval"]
    assert scores["clips"] == 3 and "localization" not in scores
    for row in ("related_paper", "unrelated_paper", "related_contrast", "unrelated_contrast"):
        assert 0 <= scores[f"{row}_ciou50"] <= 1 and 0 <= scores[f"{row}_auc"] <= 1
    # the baselines are scored against the sounding boxes of the test clips' middle frames
    rows = [r for r in read_manifest(clips) if r["split"] == "test"]
    gt = torch.stack([naive_sounding_mask(r["boxes"][len(r["frames"]) // 2], r["sounding"], 64, 64) for r in rows])
    assert gt.any() and scores["center_box_ciou50"] == metrics.center_box_baseline(gt.float())["ciou50"]
    assert scores["whole_image_auc"] == pytest.approx(metrics.whole_image_baseline(gt.float())["auc"])

    code, again, err = run(capsys, "eval", method, "--ckpt", run_dir, "--data", clips, "--device", "cpu")
    assert code == 0, err
    assert again["step"] == 2 and again["method"] == method
    assert {k: again[k] for k in scores} == pytest.approx(scores)  # the checkpoint reproduces the run's own eval

    code, _, err = run(capsys, "eval", "cavl" if method == "dmc" else "dmc", "--ckpt", run_dir, "--data", clips)
    assert code == 2 and f"holds a {method!r} model" in err


def test_clustering_eval_without_boxes_says_localization_needs_them(tmp_path, capsys, clustering_clips):
    import shutil

    torch.set_num_threads(1)
    method, clips = clustering_clips
    bare = tmp_path / "bare"
    shutil.copytree(clips, bare)
    rows = [{k: v for k, v in r.items() if k != "boxes"} for r in read_manifest(clips)]
    (bare / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, summary, err = run(capsys, "train", method, "--data", bare, "--out", tmp_path / "run", "--steps", "1",
                             "--batch-size", "3")
    assert code == 0, err
    scores = summary["eval"]
    assert "needs sounding-object boxes" in scores["localization"] and scores["clips"] == 3
    assert not any("ciou" in k for k in scores) and math.isfinite(scores["held_out_loss"])


def test_clustering_data_without_a_test_split_fails_naming_the_manifest(tmp_path, capsys):
    root = tmp_path / "train_only"
    assert main(["synth", str(root), "--method", "dmc", "--clips", "2", "--test-clips", "1"]) == 0
    rows = [r for r in read_manifest(root) if r["split"] == "train"]
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = run(capsys, "train", "dmc", "--data", root, "--out", tmp_path / "run", "--steps", "1")
    assert code == 1 and "no clips of split 'test'" in err and str(root / "manifest.jsonl") in err


@pytest.mark.parametrize("method", ["dmc", "cavl"])
def test_clustering_in_memory_world_trains_on_seed_and_evaluates_on_seed_plus_one(monkeypatch, method):
    """Without --data the config's world is generated in memory: scenes of seed S train, eval_size scenes of S+1."""
    import avlib.methods
    from avlib import metrics
    from avlib.configs import get_config
    from avlib.data import SynthOrchestra
    from avlib.localization import scene_tensors

    def small(name: str, scale: str | None = None) -> dict:
        cfg = get_config(name, scale)
        cfg["data"]["size"], cfg["eval_size"] = 6, 3
        return cfg

    monkeypatch.setattr(avlib.methods, "get_config", small)
    built = avlib.methods.build(method, "quick", seed=4)
    assert len(built.train_data) == 6
    expected = scene_tensors(built.cfg, SynthOrchestra(**built.cfg["data"], seed=4))
    assert torch.equal(built.train_data[5]["image"], expected["image"][5])
    assert torch.equal(built.train_data[5]["spec"], expected["spec"][5])
    scores = built.eval_fn(built.model)
    held_out = scene_tensors(built.cfg, SynthOrchestra(**{**built.cfg["data"], "size": 3}, seed=5))
    assert scores["clips"] == 3 and scores["whole_image_auc"] == metrics.whole_image_baseline(held_out["box"])["auc"]
