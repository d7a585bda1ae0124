"""The ``avlib`` command end to end on a tiny SynthOrchestra clip dataset, and its handling of bad arguments: every
refusal is one line on stderr with its exit status, and leaves an earlier run's files byte for byte as they were."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avlib.cli import main
from avlib.data import ClipDataset, SynthOrchestra, read_manifest
from avlib.data.views import scene_tensors
from avlib.engine.checkpoint import find_checkpoints, load_checkpoint, save_checkpoint
from avlib.eval.avc import avc_accuracy_on
from avlib.methods import get_method, load

ROOT = Path(__file__).resolve().parents[1]
FP32 = ("--precision", "fp32")


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def refused(capsys, status: int, *argv: str) -> str:
    """Run the command, expect ``status`` and one short line on stderr (no traceback, no key dump); return it."""
    code, _, err = run(capsys, *argv)
    assert code == status, err
    assert err.count("\n") == 1 and err.startswith("avlib") and "Traceback" not in err and len(err) < 600, err
    return err


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256 of its bytes)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def command(*argv: str, **kwargs) -> subprocess.Popen:
    """``python -m avlib.cli ARGV`` in a fresh process (one thread, this checkout first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "avlib.cli", *argv], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips") / "synth"
    assert main(["synth", str(root), "--clips", "6", "--test-clips", "3", "--seed", "5"]) == 0
    return root


@pytest.fixture(scope="module")
def l3_run(tmp_path_factory, clips) -> Path:
    """A finished l3 run on the clips: 3 steps of 4, checkpoints at steps 2 and 3, evaluated."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("l3") / "run"
    argv = ["train", "l3", "--data", clips, "--out", run_dir, "--batch-size", "4", "--ckpt-every", "2", "--steps",
            "3", "--log-every", "1", *FP32]
    assert main([str(a) for a in argv]) == 0
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run"


def test_synth_writes_train_and_test_splits(clips):
    rows = read_manifest(clips)
    assert [r["split"] for r in rows] == ["train"] * 6 + ["test"] * 3
    test = ClipDataset(clips, split="test")
    item = test[0]
    assert item["frames"].shape[1:] == (3, 64, 64) and item["audio"].shape == (round(1.2 * 16000),)  # l3 quick world


def test_train_resume_and_eval(tmp_path, capsys, clips, l3_run):
    torch.set_num_threads(1)
    summary = json.loads((l3_run / "summary.json").read_text())
    assert summary["step"] == 3 and summary["precision"] == "fp32" and 0 <= summary["eval"]["avc_accuracy"] <= 1
    assert [p.name for p in find_checkpoints(l3_run)] == ["step_00000002.pt", "step_00000003.pt"]
    state = load_checkpoint(l3_run)
    cfg = get_method("l3").config("quick", steps=3, batch_size=4)
    assert state["step"] == 3 and state["meta"] == {"method": "l3", "scale": "quick", "config": cfg.to_dict(),
                                                    "data": str(clips), "seed": 0, "stage": "train"}
    run_dir = copy_run(l3_run, tmp_path)
    common = ["train", "l3", "--data", clips, "--out", run_dir, "--batch-size", "4", "--ckpt-every", "2"]
    code, second, err = run(capsys, *common, "--steps", "5", "--resume", "--no-eval", *FP32)
    assert code == 0, err
    assert second["step"] == 5 and "eval" not in second
    assert steps_logged(run_dir) == [1, 2, 3, 4, 5]  # resumed at 3, not restarted
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 5

    code, scores, err = run(capsys, "eval", "l3", "--ckpt", run_dir, "--data", clips)
    assert code == 0, err
    assert scores["step"] == 5 and scores["chance"] == 0.5 and scores["data"] == str(clips)
    # the command scores exactly the held-out pairs that the method builds, with the checkpoint's weights
    loaded_cfg, model, _ = load(run_dir, device="cpu")
    assert loaded_cfg == cfg.replace(steps=5)
    pairs = get_method("l3").held_out_pairs(loaded_cfg, clips, 0)
    from avlib.audio import make_frontend

    assert scores["avc_accuracy"] == avc_accuracy_on(model, make_frontend(loaded_cfg.audio), pairs)
    code, again, err = run(capsys, "eval", "l3", "--ckpt", run_dir)  # without --data: the data it was trained on
    assert code == 0, err
    assert again == scores


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
        (["train", "l3", "--out", "x", "--resume", "--overwrite"], "--overwrite: not allowed with argument --resume"),
        (["eval", "l3", "--ckpt", "/no/such.pt"], "--ckpt /no/such.pt: no such checkpoint file"),
        (["train", "dmc", "--out", "x", "--scale", "full"], "dmc at scale 'full' trains on real data: pass --data"),
        (["train", "cavl", "--out", "x", "--batch-size", "-1"], "--batch-size: expected a positive integer, got '-1'"),
        (["synth", "x", "--method", "cavl", "--scale", "full"], "method 'cavl' at scale 'full' has no SynthOrchestra"),
        (["synth", "x", "--method", "nope"], "--method: invalid choice: 'nope'"),
        (["eval", "cavl", "--ckpt", "/no/such/run"], "--ckpt /no/such/run: no such checkpoint file"),
        (["eval", "cavl", "--ckpt", ".", "--scale", "full"], "unrecognized arguments: --scale full"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(capsys, argv, needle):
    err = refused(capsys, 2, *argv)
    assert needle in err
    assert not Path("x").exists()


def test_synth_refuses_to_overwrite(capsys, clips):
    before = snapshot(clips)
    assert "already holds a clip dataset" in refused(capsys, 2, "synth", clips)
    assert snapshot(clips) == before


# ------------------------------------------------------------------------------------- an existing run is kept


def test_train_into_an_existing_run_without_resume_exits_2_and_changes_nothing(capsys, clips, l3_run):
    before = snapshot(l3_run)
    for steps in ("3", "7"):
        err = refused(capsys, 2, "train", "l3", "--data", clips, "--out", l3_run, "--batch-size", "4", "--steps", steps)
        assert "already holds a run: pass --resume to continue it or --overwrite to replace it" in err
    assert snapshot(l3_run) == before


def test_overwrite_replaces_the_run(tmp_path, capsys, clips, l3_run):
    run_dir = copy_run(l3_run, tmp_path)
    code, summary, err = run(capsys, "train", "l3", "--data", clips, "--out", run_dir, "--batch-size", "4", "--steps",
                             "2", "--log-every", "1", "--overwrite", "--no-eval", *FP32)
    assert code == 0, err
    assert summary["step"] == 2 and [p.name for p in find_checkpoints(run_dir)] == ["step_00000002.pt"]
    assert steps_logged(run_dir) == [1, 2] and json.loads((run_dir / "summary.json").read_text())["step"] == 2
    assert load_checkpoint(run_dir)["meta"]["config"]["steps"] == 2


def test_out_pointing_at_another_methods_run_is_refused(capsys, clips, l3_run):
    before = snapshot(l3_run)
    args = ("train", "ave", "--data", clips, "--out", l3_run, "--batch-size", "4", "--steps", "4")
    assert "already holds a run" in refused(capsys, 2, *args)
    err = refused(capsys, 2, *args, "--resume")
    assert "it was trained with method = 'l3', this run asks for 'ave'" in err and "step_00000003.pt" in err
    assert snapshot(l3_run) == before


def test_resume_with_another_config_is_refused_naming_the_setting(capsys, clips, l3_run):
    before = snapshot(l3_run)
    err = refused(capsys, 2, "train", "l3", "--data", clips, "--out", l3_run, "--batch-size", "8", "--steps", "4",
                  "--resume")
    assert "batch_size = 4, this run asks for 8" in err
    assert snapshot(l3_run) == before


def test_eval_with_another_methods_checkpoint_names_both(capsys, l3_run):
    err = refused(capsys, 2, "eval", "ave", "--ckpt", l3_run)
    assert "holds a 'l3' model (scale 'quick'), not 'ave'" in err


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_one_line(tmp_path, capsys, l3_run):
    """A checkpoint that says it holds an AVE-Net but carries L3-Net weights: one line with counts, no key dump."""
    state = load_checkpoint(l3_run)
    ave_cfg = get_method("ave").config("quick")
    meta = {**state["meta"], "method": "ave", "config": ave_cfg.to_dict()}
    save_checkpoint({**state, "meta": meta}, tmp_path / "step_00000003.pt")
    err = refused(capsys, 2, "eval", "ave", "--ckpt", tmp_path)
    assert "holds a ave model at scale quick that does not fit this AVENet" in err and "unexpected" in err


def _fake_run(where: Path, name: str, scale: str) -> Path:
    """A run directory holding an untrained ``name`` model of ``scale``, as the engine would write it."""
    method = get_method(name)
    cfg = method.config(scale)
    meta = {"method": name, "scale": scale, "config": cfg.to_dict(), "data": None, "seed": 0, "stage": "train"}
    save_checkpoint({"model": method.model(cfg).state_dict(), "step": 1, "meta": meta}, where / "step_00000001.pt")
    return where


def test_init_from_another_method_or_scale_names_what_it_holds(tmp_path, capsys, clips, l3_run):
    args = ("train", "avol", "--data", clips, "--batch-size", "4", "--steps", "1")
    err = refused(capsys, 2, *args, "--out", tmp_path / "a", "--init-from", l3_run)
    assert f"{l3_run} holds a l3 model at scale 'quick'; avol at scale 'quick' starts from a trained ave model" in err
    colab = _fake_run(tmp_path / "colab_ave", "ave", "colab")
    err = refused(capsys, 2, *args, "--out", tmp_path / "a", "--init-from", colab)
    assert "holds a ave model at scale 'colab'; avol at scale 'quick' starts from a trained ave model at scale" in err
    assert not (tmp_path / "a").exists()  # refused before the run directory was made
    # an existing run asked to be overwritten from a wrong source is not cleared first
    existing = _fake_run(tmp_path / "existing", "avol", "quick")
    (existing / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    before = snapshot(existing)
    refused(capsys, 2, *args, "--out", existing, "--init-from", colab, "--overwrite")
    assert snapshot(existing) == before


def test_lr_on_resume_is_applied_and_reported(tmp_path, capsys, clips, l3_run):
    run_dir = copy_run(l3_run, tmp_path)
    old_lr = get_method("l3").config("quick").lr
    code, summary, err = run(capsys, "train", "l3", "--data", clips, "--out", run_dir, "--batch-size", "4", "--steps",
                             "5", "--log-every", "1", "--resume", "--lr", "0.0005", "--no-eval", *FP32)
    assert code == 0, err
    assert f"avlib: lr {old_lr:g} -> 0.0005 from step 3" in err
    state = load_checkpoint(run_dir)
    assert state["step"] == 5 and [g["lr"] for g in state["optimizer"]["param_groups"]] == [0.0005]
    lrs = [json.loads(line)["lr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lrs == [old_lr] * 3 + [0.0005] * 2
    assert summary["final"]["lr"] == 0.0005


def test_resume_may_change_the_micro_batch(tmp_path, capsys, clips, l3_run):
    """The per-device limit is how a device executes the step, not the optimisation: a run may resume with another."""
    run_dir = copy_run(l3_run, tmp_path)
    code, summary, err = run(capsys, "train", "l3", "--data", clips, "--out", run_dir, "--batch-size", "4", "--steps",
                             "4", "--micro-batch", "2", "--resume", "--no-eval", *FP32)
    assert code == 0, err
    assert summary["step"] == 4 and "2 accumulation step(s) x micro-batch 2" in summary["batch"]
    assert steps_logged(run_dir) == [1, 2, 3, 4]


def test_a_relative_data_directory_is_found_again_from_elsewhere(tmp_path, capsys, monkeypatch, clips):
    """The checkpoint names the clip directory absolutely: ``avlib eval`` run from another directory without
    ``--data`` scores the data the run was trained on."""
    monkeypatch.chdir(clips.parent)
    code, summary, err = run(capsys, "train", "l3", "--data", clips.name, "--out", tmp_path / "run", "--batch-size",
                             "4", "--steps", "1", *FP32)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "run")["meta"]["data"] == str(clips)
    monkeypatch.chdir(tmp_path)
    code, scores, err = run(capsys, "eval", "l3", "--ckpt", "run")
    assert code == 0, err
    assert scores["data"] == str(clips) and scores["avc_accuracy"] == summary["eval"]["avc_accuracy"]


def test_avol_quick_starts_from_a_trained_ave_run(tmp_path, capsys, clips):
    torch.set_num_threads(1)
    err = refused(capsys, 2, "train", "avol", "--data", clips, "--out", tmp_path / "avol0", "--steps", "1")
    assert "starts from a trained ave model" in err and "--init-from" in err
    err = refused(capsys, 2, "train", "l3", "--data", clips, "--out", tmp_path / "l3", "--init-from", tmp_path)
    assert "starts from scratch" in err

    fast = ["--data", clips, "--batch-size", "4", "--steps", "2", *FP32, "--no-eval"]
    code, _, err = run(capsys, "train", "ave", "--out", tmp_path / "ave", *fast)
    assert code == 0, err
    ave_state = load_checkpoint(tmp_path / "ave")["model"]
    code, summary, err = run(capsys, "train", "avol", "--out", tmp_path / "avol", "--init-from", tmp_path / "ave",
                             "--data", clips, "--batch-size", "4", "--steps", "1", *FP32)
    assert code == 0, err
    assert summary["step"] == 1 and 0 <= summary["eval"]["avc_accuracy"] <= 1
    # the checkpoint's AVE-Net went in: a vision trunk weight that one step of training barely moves
    key = next(k for k in ave_state if k.startswith("vision.") and k.endswith("weight"))
    avol_state = load_checkpoint(tmp_path / "avol")["model"]
    assert torch.allclose(avol_state[key], ave_state[key], atol=1e-2)
    assert not torch.allclose(avol_state[key], torch.zeros_like(ave_state[key]))
    # a resume continues from its own checkpoint: the source run is not read again (here it is gone)
    shutil.rmtree(tmp_path / "ave")
    code, summary, err = run(capsys, "train", "avol", "--out", tmp_path / "avol", "--init-from", tmp_path / "ave",
                             "--data", clips, "--batch-size", "4", "--steps", "2", "--resume", "--no-eval", *FP32)
    assert code == 0, err
    assert summary["step"] == 2 and steps_logged(tmp_path / "avol") == [1, 2]


def test_console_entry_point_help():
    proc = command("--help")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    for name in ("synth", "train", "eval"):
        assert name in out


def test_sigint_stops_after_a_step_with_a_checkpoint_and_the_hint_resumes(tmp_path, clips):
    """SIGINT to a running ``avlib train``: exit status 130, a checkpoint of the step it stopped after, and a last
    stderr line with the command that continues; that command finishes the run."""
    run_dir = tmp_path / "run"
    argv = ["train", "l3", "--data", str(clips), "--out", str(run_dir), "--batch-size", "2", "--steps", "300",
            "--log-every", "1", "--ckpt-every", "1000", "--no-eval", "--device", "cpu", *FP32]
    proc = command(*argv)
    deadline = time.monotonic() + 240
    while not ((run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    state = load_checkpoint(run_dir)
    assert 1 <= state["step"] < 300 and steps_logged(run_dir) == list(range(1, state["step"] + 1))
    last = err.strip().splitlines()[-1]
    assert last.startswith("avlib: SIGINT at step ") and "continue with: avlib train l3" in last, err
    again = shlex.split(last.split("continue with: avlib ", 1)[1])
    assert again == [*argv, "--resume"]
    proc = command(*again)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out)["step"] == 300 and steps_logged(run_dir) == list(range(1, 301))
    assert f"resuming from step {state['step']}" in err


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


def test_clustering_train_and_eval_score_localization(tmp_path, capsys, monkeypatch, clustering_clips):
    from avlib import metrics

    torch.set_num_threads(1)
    name, clips = clustering_clips
    run_dir = tmp_path / "run"
    train = ["train", name, "--data", clips, "--out", run_dir, "--steps", "2", "--batch-size", "3"]
    code, summary, err = run(capsys, *train, *FP32, "--log-every", "1")
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

    code, again, err = run(capsys, "eval", name, "--ckpt", run_dir, "--data", clips, "--device", "cpu")
    assert code == 0, err
    assert again["step"] == 2 and again["method"] == name
    assert {k: again[k] for k in scores} == pytest.approx(scores)  # the checkpoint reproduces the run's own eval

    # eval rebuilds the net from the checkpoint's own config, not from today's preset, and defaults to its data
    method = get_method(name)
    preset = method.config("quick")
    narrow = preset.replace(visual_cfg=(8, "M", 16, "M", 16, "M"), audio_cfg=(8, "M", 16, "M", 16, "M", 16, "M"),
                            **{"center_dim" if name == "dmc" else "embed_dim": 8})
    monkeypatch.setitem(method.presets, "quick", narrow)
    assert sum(p.numel() for p in method.model(method.config("quick")).parameters()) < sum(
        p.numel() for p in method.model(preset).parameters()) / 4  # the preset really changed
    code, changed, err = run(capsys, "eval", name, "--ckpt", run_dir, "--device", "cpu")
    assert code == 0, err
    assert changed == again and changed["data"] == str(clips)

    err = refused(capsys, 2, "eval", "cavl" if name == "dmc" else "dmc", "--ckpt", run_dir, "--data", clips)
    assert f"holds a {name!r} model" in err


def test_clustering_eval_without_boxes_says_localization_needs_them(tmp_path, capsys, clustering_clips):
    torch.set_num_threads(1)
    name, clips = clustering_clips
    bare = tmp_path / "bare"
    shutil.copytree(clips, bare)
    rows = [{k: v for k, v in r.items() if k != "boxes"} for r in read_manifest(clips)]
    (bare / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, summary, err = run(capsys, "train", name, "--data", bare, "--out", tmp_path / "run", "--steps", "1",
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
    code, _, err = run(capsys, "train", "dmc", "--data", root, "--out", tmp_path / "run", "--steps", "1",
                       "--batch-size", "2")
    assert code == 1 and "no clips of split 'test'" in err and str(root / "manifest.jsonl") in err


@pytest.mark.parametrize("name", ["dmc", "cavl"])
def test_clustering_in_memory_world_trains_on_seed_and_evaluates_on_seed_plus_one(name):
    """Without a clip directory the config's world is generated in memory: scenes of seed S train, eval_size scenes
    of S+1 evaluate."""
    from avlib import metrics

    method = get_method(name)
    cfg = method.config("quick")
    cfg = cfg.replace(data={**cfg.data, "size": 6}, eval_size=3)
    data = method.train_data(cfg, None, 4)
    assert len(data) == 6
    views = (method.samples(cfg), cfg.image_size, method.image_transform(cfg))
    expected = scene_tensors(SynthOrchestra(**cfg.data, seed=4), *views)
    assert torch.equal(data[5]["image"], expected["image"][5]) and torch.equal(data[5]["audio"], expected["audio"][5])
    torch.manual_seed(0)
    scores = method.evaluate(cfg, method.model(cfg), None, 4)
    held_out = scene_tensors(SynthOrchestra(**{**cfg.data, "size": 3}, seed=5), *views)
    assert scores["clips"] == 3 and scores["whole_image_auc"] == metrics.whole_image_baseline(held_out["box"])["auc"]
