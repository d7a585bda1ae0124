"""The whole chain on real files, at the full code path: SynthOrchestra scenes encoded as MP4s (H.264 / AAC) → the
dataset scripts (served by a local mirror, hand-made lists in the real files' formats) → clip directories laid out per
method (``avlib layout``) → ``avlib train METHOD --scale full --data DIR`` with the papers' networks and input
pipelines (one step per stage at batch 2 on this CPU) → ``avlib eval``. Every method of the book, the staged ones
included: CAVL's four curriculum levels, DSOL's stage-one rounds and its matching stage, the counting and separation
nets started from the CAVL run."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from avlib.audio import first_example, make_frontend
from avlib.cli import main as avlib_main
from avlib.engine import load_checkpoint
from avlib.methods import get_method

_spec = importlib.util.spec_from_file_location(
    "bench_pipeline", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pipeline.py")
bench_pipeline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_pipeline)

ONE_STEP = ["--scale", "full", "--steps", "1", "--batch-size", "2", "--log-every", "1"]
SHORT = {"l3": ["--set", "eval_size=8"], "ave": ["--set", "eval_size=8", "--workers", "1"],  # decoding on a worker
         "avol": ["--set", "eval_size=8"],
         "dsol": ["--set", "rounds=2", "--set", "round_steps=1", "--set", "cls_steps=1", "--set", "match_steps=1"]}


def avlib(*argv: str) -> dict:
    """``avlib ARGV`` in this process; its JSON report (the exit status must be 0)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = avlib_main([str(a) for a in argv])
    assert status == 0, err.getvalue()[-3000:]
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    return bench_pipeline.build_real_dirs(tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def train_and_eval(method: str, data: Path, run: Path, *extra: str) -> tuple[dict, dict]:
    trained = avlib("train", method, "--data", data, "--out", run, *ONE_STEP, *SHORT.get(method, []), "--no-eval",
                    *extra)
    assert trained["scale"] == "full" and trained["world_size"] == 1 and trained["batch"].startswith("global batch 2")
    assert math.isfinite(trained["final"]["loss"])
    scored = avlib("eval", method, "--ckpt", run)
    assert scored["method"] == method and scored["scale"] == "full" and scored["data"] == str(data.resolve())
    return trained, scored


def full_config_kept(run: Path, method: str, changed: set[str]) -> None:
    """The checkpoint's config is the full preset but for the fields the command changed."""
    state = load_checkpoint(run)
    saved = state["meta"]["config"]
    preset = get_method(method).config("full").to_dict()
    differ = {k for k in preset if json.dumps(preset[k], default=str) != json.dumps(saved.get(k), default=str)}
    assert differ <= changed, differ - changed


# ------------------------------------------------------------------------------------------------ the layouts
def rows(clip_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (clip_dir / "manifest.jsonl").read_text().splitlines()]


def test_layout_command_makes_what_each_method_reads(dirs, tmp_path):
    """``avlib layout`` from the scripts' own directories: the same layouts the chain above trained on; the levels'
    held-out clips follow the id hash; a second layout into the same directory is refused (status 2)."""
    root = dirs["dsol"].parent
    made = avlib("layout", "dsol", root / "music_dsol", tmp_path / "dsol", "--mosaics", "4")
    assert made["clips"] == {"solo": 32, "mosaic": 8, "duet": 9}
    for family in ("solo", "mosaic", "duet"):
        assert rows(tmp_path / "dsol" / family) == rows(dirs["dsol"] / family)
    solo = rows(dirs["dsol"] / "solo")
    assert {r["split"] for r in solo if r.get("half") is not None} == {"train"}
    assert {r["half"] for r in solo if r.get("half") is not None} == {1}  # the second half went into the mosaics
    made = avlib("layout", "levels", root / "audioset", tmp_path / "levels", "--test-share", "0.34")
    assert made["clips"] == {f"c{k}": 3 for k in range(1, 5)}
    for k in range(1, 5):
        level = rows(tmp_path / "levels" / f"c{k}")
        assert level == rows(dirs["levels"] / f"c{k}") and {r["n_sources"] for r in level} == {k}
        assert {r["split"] for r in level} == {"train", "test"}
    made = avlib("layout", "solo", root / "music_cavl", tmp_path / "solo")
    assert made["clips"] == {"solo": 12}
    refusals = {("layout", "solo", root / "music_cavl", tmp_path / "solo"): "not empty",
                ("train", "cavl", "--data", root / "audioset", "--out", tmp_path / "r1", "--scale", "full"):
                    "no clip of split 'train' (splits: c1, c2, c3, c4); lay a dataset script's directory out with "
                    f"'avlib layout levels SRC {root / 'audioset'}'",
                ("train", "dsol", "--data", root / "music_dsol", "--out", tmp_path / "r2", "--scale", "full"):
                    "'avlib layout dsol SRC"}
    for argv, message in refusals.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert avlib_main([str(a) for a in argv]) == 2
        assert message in err.getvalue()


def test_mosaics_are_their_four_solo_clips(dirs):
    """Each quadrant of a mosaic frame is its source clip's frame (centre square, halved), two quadrants sound and the
    audio is the sum of theirs; categories and boxes follow the quadrants."""
    src = dirs["dsol"].parent / "music_dsol"
    by_id = {r["id"]: r for r in rows(src)}
    for row in rows(dirs["dsol"] / "mosaic"):
        sources = [by_id[i] for i in row["sources"]]
        assert row["categories"] == [r["label"] for r in sources] and len(set(row["categories"])) == 4
        assert sum(row["sounding"]) == 2 and row["n_sources"] == 2
        assert row["source_categories"] == [c for c, s in zip(row["categories"], row["sounding"], strict=True) if s]
        with Image.open(dirs["dsol"] / "mosaic" / row["frames"][0]) as im:
            mosaic = np.asarray(im.convert("RGB"), dtype=np.float64)
        half = mosaic.shape[0] // 2
        for q, (r, box) in enumerate(zip(sources, row["boxes"][0], strict=True)):
            assert box == [(q % 2) * half, (q // 2) * half, (q % 2 + 1) * half, (q // 2 + 1) * half]
            with Image.open(src / r["frames"][0]) as im:
                frame = np.asarray(im.convert("RGB"), dtype=np.float64)
            tile = mosaic[box[1] : box[3], box[0] : box[2]]
            assert abs(tile.mean() - frame.mean()) < 3  # the same picture, resampled
        wave, _ = sf.read(dirs["dsol"] / "mosaic" / row["audio"], dtype="float32")
        own = [sf.read(src / r["audio"], dtype="float32")[0] for r, s in zip(sources, row["sounding"], strict=True)
               if s]
        mix = own[0] + own[1]
        mix = mix / max(1.0, float(np.abs(mix).max()))  # scaled down only where the sum would clip
        torch.testing.assert_close(torch.from_numpy(wave), torch.from_numpy(mix), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ the inputs reached
@pytest.mark.parametrize(("method", "image", "spec"), [
    ("l3", (3, 224, 224), (257, 199)), ("dmc", (3, 256, 256), (496, 64)), ("cavl", (3, 256, 256), (512, 432)),
    ("dsol", (3, 224, 224), (201, 64))])
def test_real_clips_become_the_papers_inputs(dirs, method, image, spec):
    """A clip of the real-format directory goes through the full config's pipeline to the paper's input sizes
    (frames stored at 64 pixels: the pipeline resizes and crops)."""
    m = get_method(method)
    cfg = m.config("full")
    data = dirs[bench_pipeline.DATA_OF[method]]
    items = m.train_data(cfg.replace(phase="loc") if method == "dsol" else cfg, data, 0)
    item = items[0]
    assert tuple(item["image"].shape) == image
    example = first_example(make_frontend(cfg.audio), item["audio"][None])
    assert tuple(example.shape[-2:]) == spec


# ------------------------------------------------------------------------------------------------ every method
@pytest.mark.parametrize("method", ["l3", "ave", "avol"])
def test_avc_methods_end_to_end(dirs, runs, method):
    trained, scored = train_and_eval(method, dirs["ks"], runs / method)
    assert 0 <= trained["final"]["acc"] <= 1
    assert scored["pairs"] == 8 and 0 <= scored["avc_accuracy"] <= 1 and scored["chance"] == 0.5
    full_config_kept(runs / method, method, {"steps", "batch_size", "eval_size"})


def test_dmc_end_to_end(dirs, runs):
    _, scored = train_and_eval("dmc", dirs["ks"], runs / "dmc")
    assert scored["clips"] == 4 and math.isfinite(scored["held_out_loss"])
    assert scored["localization"].startswith("not scored")  # real clips carry no boxes
    full_config_kept(runs / "dmc", "dmc", {"steps", "batch_size"})


@pytest.fixture(scope="module")
def cavl_run(dirs, runs) -> tuple[Path, dict, dict]:
    run = runs / "cavl"
    trained, scored = train_and_eval("cavl", dirs["levels"], run)
    return run, trained, scored


def test_cavl_curriculum_end_to_end(dirs, cavl_run):
    """The four levels C1..C4 are four stages, each on its own level's clips (``DATA/c<l>``), k_a = level, lr x0.1
    per level; the evaluation reads the last level's test clips."""
    run, trained, scored = cavl_run
    assert trained["stages"] == ["c1", "c2", "c3", "c4"]
    for level in range(1, 5):
        state = load_checkpoint(run / f"{level}_c{level}")
        cfg = state["meta"]["config"]
        assert state["step"] == 1 and cfg["k_audio"] == level
        assert cfg["lr"] == pytest.approx(1e-4 * 0.1 ** (level - 1))
    assert scored["clips"] == len([r for r in map(json.loads, (dirs["levels"] / "c4" / "manifest.jsonl").open())
                                   if r["split"] == "test"])
    full_config_kept(run / "4_c4", "cavl", {"steps", "batch_size", "k_audio", "lr"})


def test_counting_from_the_cavl_run_end_to_end(dirs, runs, cavl_run):
    trained, scored = train_and_eval("counting", dirs["levels"], runs / "counting", "--set", "init_from=cavl",
                                     "--init-from", cavl_run[0])
    assert scored["clips"] == 4 and sum(scored["true_counts"].values()) == 4  # one test clip per level, 1..4 sources
    assert set(scored["true_counts"].values()) == {0, 1}
    assert 0 <= scored["accuracy"] <= 1 and scored["mae"] >= 0


def test_separation_from_the_cavl_run_end_to_end(dirs, runs, cavl_run):
    _, scored = train_and_eval("separation", dirs["solo"], runs / "separation", "--init-from", cavl_run[0])
    assert scored["visual"] == get_method("separation").config("full").visual and scored["mixtures"] == 2
    assert all(math.isfinite(scored["model"][k]) for k in ("sdr", "sir", "sar"))


def test_dsol_both_stages_end_to_end(dirs, runs):
    trained, scored = train_and_eval("dsol", dirs["dsol"], runs / "dsol")
    assert trained["stages"] == ["loc1", "cls2", "loc2", "match"]
    assert scored["dictionary_round"] == 3 and len(scored["key_to_category"]) == 11
    assert scored["mosaic"]["scenes"] == 4  # the mosaics' quadrants are their boxes
    assert all(0 <= scored["mosaic"]["dsol"][p]["ciou30"] <= 1 for p in ("paper", "released_code"))
    assert scored["solo_clips"] == 20 and scored["single_source"].startswith("not scored")  # MUSIC has no boxes
    assert scored["duet"].startswith("not scored")
