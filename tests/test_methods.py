"""The method registry and the one route (avlib.methods): configs per scale, their round trip through a checkpoint's
plain data, the papers' global batches, the contract every method keeps, and one trained model whichever way it is
trained (the chapters' ``train``, the ``avlib`` command in this process or in fresh ones)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avlib.cli import main
from avlib.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint, seed_everything
from avlib.engine.distributed import plan_batches
from avlib.methods import METHODS, Method, get_method, load, register, train
from avlib.methods.avc import PairsConfig
from avlib.runtime import SCALES

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("l3", "ave", "avol", "dmc", "cavl")  # the methods the papers name
NAMES = tuple(sorted(METHODS))  # every registered method, the papers' and their stages (counting, separation, ...)
EVERY_CONFIG = [(name, scale) for name in NAMES for scale in SCALES]


def test_the_papers_methods_are_registered_and_found_by_name():
    assert set(PAPERS) <= set(METHODS)
    assert get_method(" DMC ") is METHODS["dmc"] and get_method("cavl").name == "cavl"
    with pytest.raises(KeyError, match="registered methods: .*ave.*cavl.*dmc"):
        get_method("dsol_nope")
    for name in NAMES:
        assert set(get_method(name).presets) == set(SCALES)
        assert {get_method(name).config(s).scale for s in SCALES} == set(SCALES)


def test_registering_a_second_method_with_an_existing_name_is_refused():
    class Impostor(Method):
        name = "dmc"
        presets = {}

    before = dict(METHODS)
    with pytest.raises(ValueError, match="'dmc' is already registered.*DMC"):
        register(Impostor())
    assert METHODS == before and type(METHODS["dmc"]).__name__ == "DMC"

    class Fresh(Method):
        name = "fresh_for_the_test"
        presets = {}

    try:
        assert register(Fresh()) is METHODS["fresh_for_the_test"]
        with pytest.raises(ValueError, match="already registered"):
            register(Fresh())
    finally:
        METHODS.pop("fresh_for_the_test", None)


@pytest.mark.parametrize(("name", "scale"), EVERY_CONFIG)
def test_every_config_round_trips_through_a_checkpoints_plain_data(tmp_path, name, scale):
    method = get_method(name)
    cfg = method.config(scale)
    plain = cfg.to_dict()
    assert plain["method"] == name and plain["scale"] == scale
    assert json.loads(json.dumps(plain)) == json.loads(json.dumps(plain, sort_keys=True))  # JSON-ready
    assert method.config_from_dict(json.loads(json.dumps(plain))) == cfg  # lists back to tuples, pairs rebuilt
    save_checkpoint({"model": {}, "step": 0, "meta": {"config": plain}}, tmp_path / "step_00000000.pt")
    back = method.config_from_dict(read_checkpoint(tmp_path / "step_00000000.pt")["meta"]["config"])
    assert back == cfg and type(back) is type(cfg)
    if hasattr(cfg, "pairs"):
        assert isinstance(back.pairs, PairsConfig)


def test_replace_merges_dataclass_fields_and_replaces_dicts():
    cfg = get_method("ave").config("quick")
    naive = cfg.replace(pairs={"negative_mode": "naive"}, data={"size": 8})
    assert naive.pairs == dataclasses.replace(cfg.pairs, negative_mode="naive") and naive.pairs.misalign is False
    assert naive.data == {"size": 8} and cfg.data["size"] == 768 and cfg.pairs.negative_mode == "frame_aligned"
    with pytest.raises(TypeError, match="AVEConfig has no field 'step'; its fields: .*steps"):
        cfg.replace(step=1)  # a typo is named, with the fields there are
    with pytest.raises(TypeError, match="no field 'step'"):
        get_method("ave").config("quick", step=1)


@pytest.mark.parametrize(("name", "global_batch", "per_gpu", "gpus"),
                         [("l3", 256, 16, 16), ("ave", 2048, 128, 16), ("avol", 2048, 128, 16), ("dmc", 64, None, 1),
                          ("cavl", 32, None, 1)])
def test_full_configs_state_the_papers_global_batch(name, global_batch, per_gpu, gpus):
    cfg = get_method(name).config("full")
    assert cfg.batch_size == global_batch and cfg.micro_batch == per_gpu
    on_the_papers_gpus = plan_batches(cfg.batch_size, gpus, cfg.micro_batch)
    assert on_the_papers_gpus.micro == global_batch // gpus and on_the_papers_gpus.accum == 1
    one_device = plan_batches(cfg.batch_size, 1, cfg.micro_batch)  # the same optimisation step on one device
    assert one_device.micro * one_device.accum == global_batch and one_device.accum == gpus
    assert cfg.data is None  # the papers' data, not a synthetic world


def test_full_scale_learning_rates_and_schedules():
    l3, ave, dmc, cavl = (get_method(n).config("full") for n in ("l3", "ave", "dmc", "cavl"))
    assert (l3.lr, l3.weight_decay, l3.steps) == (1e-4, 1e-5, 60_000_000 // 256)
    assert ave.schedule == "step" and ave.gamma == 0.94
    assert ave.milestones[1] - ave.milestones[0] == 16 * (263_000 // 2048)  # x0.94 every 16 epochs
    assert (dmc.lr, dmc.steps, dmc.k) == (1e-4, 25_000, 2)
    assert [p.name for p in get_method("cavl").stages(cavl)] == ["c1", "c2", "c3", "c4"]
    plans = get_method("cavl").stages(cavl)
    assert [p.cfg.k_audio for p in plans] == [1, 2, 3, 4]
    assert [p.cfg.lr for p in plans] == pytest.approx([1e-4, 1e-5, 1e-6, 1e-7])
    quick = get_method("cavl").config("quick", levels=(1, 2))
    assert [p.cfg.data["family"] for p in get_method("cavl").stages(quick)] == ["c1", "c2"]
    assert [p.name for p in get_method("dmc").stages(dmc)] == ["train"]


@pytest.mark.parametrize("name", NAMES)
def test_every_method_keeps_the_contract_at_quick_scale(name):
    method = get_method(name)
    cfg = method.config("quick")
    seed_everything(1)
    a = method.model(cfg)
    seed_everything(1)
    b = method.model(cfg)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    out = method.step(cfg)(a, method.example_batch(cfg, 2))
    assert out["loss"].dim() == 0 and math.isfinite(float(out["loss"].detach()))
    out["loss"].backward()
    assert isinstance(method.make_optimizer(cfg, a), {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg.optimizer])
    assert isinstance(method.make_optimizer(cfg.replace(optimizer="adam"), a), torch.optim.Adam)
    assert isinstance(method.make_optimizer(cfg.replace(optimizer="sgd"), a), torch.optim.SGD)
    with pytest.raises(ValueError, match="'lbfgs'.*'adam' and 'sgd'"):
        method.make_optimizer(cfg.replace(optimizer="lbfgs"), a)


# ------------------------------------------------------------------------------------------------ one route


def small_dmc():
    cfg = get_method("dmc").config("quick")
    return cfg.replace(data={**cfg.data, "size": 16}, eval_size=4, batch_size=8, steps=3)


def _weights(state_dict: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state_dict.items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, first {different[0]}"


def test_train_and_the_command_give_the_same_weights(tmp_path, monkeypatch, capsys):
    """The chapters' ``train(cfg, seed=...)`` and ``avlib train`` (here in this process, with the quick preset made
    small) train bit-identical weights, and the checkpoint stores the config it was trained with."""
    torch.set_num_threads(1)
    cfg = small_dmc()
    monkeypatch.setitem(get_method("dmc").presets, "quick", cfg)
    torch.rand(7)  # whatever the global RNG held before, the run is a function of its seed
    run = train(get_method("dmc").config("quick"), seed=3, evaluate=False, progress=False)
    assert run.result.step == 3
    torch.rand(5)
    code = main(["train", "dmc", "--out", str(tmp_path / "run"), "--seed", "3", "--no-eval"])
    assert code == 0, capsys.readouterr().err
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 3 and state["meta"]["seed"] == 3
    assert_same_weights(_weights(run.model.state_dict()), state["model"])
    loaded_cfg, model, _ = load(tmp_path / "run", device="cpu")
    assert loaded_cfg == cfg
    assert_same_weights(_weights(model.state_dict()), state["model"])
    other = train(cfg, seed=4, evaluate=False, progress=False)  # the comparison is not vacuous: the seed matters
    assert any(not torch.equal(v, state["model"][k]) for k, v in _weights(other.model.state_dict()).items())


def _command(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "AVLIB_SCALE": "quick"}
    env.pop("AVLIB_DEVICE", None)
    return subprocess.run([sys.executable, "-m", "avlib.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def test_l3_command_in_fresh_processes_is_bit_identical_and_matches_train(tmp_path):
    """Two ``avlib train l3 --steps 1`` in fresh processes give bit-identical weights (the model is built after
    seeding), and the same as ``train`` in this process, whatever its RNG held."""
    for run in ("a", "b"):
        proc = _command("train", "l3", "--steps", "1", "--out", str(tmp_path / run), "--no-eval", "--device", "cpu")
        assert proc.returncode == 0, proc.stderr
    a, b = (load_checkpoint(tmp_path / run) for run in ("a", "b"))
    assert_same_weights(a["model"], b["model"])
    torch.set_num_threads(1)
    torch.randn(11)
    here = train(get_method("l3").config("quick", steps=1), seed=0, evaluate=False, progress=False, device="cpu")
    assert_same_weights(_weights(here.model.state_dict()), a["model"])
