"""CAVL's counting network (§3.2.2, supplement §6.3): the Poisson regression loss against a naive loop, torch and
scipy; the most probable count against brute force; the full-scale network and one SGD step at batch 2; the paper's
lr decay; training through the one route on SynthOrchestra's curriculum scenes and on a clip directory; and the trunk
started from a trained CAVL audio stream."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import poisson

from avlib.audio import first_example, make_frontend
from avlib.data import ClipFormatError, SynthOrchestra, write_clips
from avlib.engine.schedule import lr_multiplier
from avlib.losses import poisson_regression_loss
from avlib.methods import get_method, train
from avlib.metrics import poisson_count_predict

COUNTING = get_method("counting")


def test_poisson_loss_is_the_nll_without_ln_y_factorial():
    g = torch.Generator().manual_seed(0)
    eta = torch.randn(7, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 2, 3, 4, 5, 1, 3], dtype=torch.float64)
    naive = sum(math.exp(float(e)) - float(t) * float(e) for e, t in zip(eta, y, strict=True)) / 7
    loss = poisson_regression_loss(eta, y)
    assert float(loss) == pytest.approx(naive, rel=1e-12)
    assert float(loss) == pytest.approx(float(F.poisson_nll_loss(eta, y, log_input=True, full=False)), rel=1e-12)
    nll = -poisson.logpmf(y.numpy(), np.exp(eta.numpy()))  # the full negative log-likelihood
    ln_fact = np.array([math.lgamma(float(t) + 1) for t in y])
    assert float(loss) == pytest.approx(float(np.mean(nll - ln_fact)), rel=1e-10)  # Eq. 6 less its constant
    eta.requires_grad_(True)
    poisson_regression_loss(eta, y).backward()
    assert torch.allclose(eta.grad, (eta.detach().exp() - y) / 7)  # d/d eta = (lambda - y) / n
    with pytest.raises(ValueError, match="same shape"):
        poisson_regression_loss(eta, y[:3])


def test_the_most_probable_count_is_floor_lambda_within_1_to_5():
    lam = np.concatenate([np.linspace(0.05, 7.5, 301), [0.999, 1.001, 4.999, 5.001, 12.0]])
    lam = lam[np.abs(lam - np.round(lam)) > 1e-6]  # integer rates tie two counts
    ys = np.arange(1, 6)
    brute = ys[np.argmax(poisson.pmf(ys[None, :], lam[:, None]), axis=1)]
    assert np.array_equal(brute, np.clip(np.floor(lam), 1, 5).astype(int))
    assert poisson_count_predict(torch.from_numpy(lam)).numpy().tolist() == brute.tolist()


def test_full_scale_network_is_supplement_6_3_and_takes_one_sgd_step_at_batch_2():
    torch.manual_seed(0)
    cfg = COUNTING.config("full")
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.schedule, cfg.gamma) == ("sgd", 1e-2, 0.9, "inverse", 0.5)
    assert cfg.audio == get_method("cavl").config("full").audio and cfg.data is None and cfg.init_from is None
    model = COUNTING.model(cfg)
    assert [type(m) for m in model.head] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert model.head[0].weight.shape == (512, 512) and model.head[2].weight.shape == (1, 512)  # fc 512-512-1
    assert model.audio.cfg == [64, "M", 128, "M", 256, 256, "M", 512, 512]  # VGGish convs, no fc
    batch = COUNTING.example_batch(cfg, 2)
    assert batch["audio"].shape == (2, 110_250) and batch["count"].shape == (2,)
    spec = first_example(make_frontend(cfg.audio), batch["audio"])
    assert spec.shape == (2, 1, 512, 432)
    with torch.no_grad():
        fmap = model.audio(spec)
        out = model(spec)
    assert fmap.shape == (2, 512, 64, 54)
    assert torch.equal(out["feature"], fmap.flatten(2).max(dim=2).values)  # global max pooling -> 512
    assert torch.allclose(out["rate"], out["log_rate"].exp()) and (out["rate"] > 0).all()
    opt = COUNTING.make_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    before = [p.detach().clone() for p in model.parameters()]
    res = COUNTING.step(cfg)(model, batch)
    want = float((out["rate"] - batch["count"] * out["log_rate"]).mean())
    assert float(res["loss"].detach()) == pytest.approx(want, rel=1e-5)
    res["loss"].backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_the_lr_decays_as_1e_2_over_1_plus_half_the_epoch():
    cfg = COUNTING.config("full")
    stage = COUNTING.stages(cfg)[0].cfg
    assert stage.milestones[:3] == (608, 1216, 1824) and stage.milestones[-1] < cfg.steps
    kw = {"steps": stage.steps, "schedule": stage.schedule, "milestones": stage.milestones, "gamma": stage.gamma}
    for step in (0, 607, 608, 1215, 1216, 5000, stage.steps - 1):
        epoch = step // 608
        assert stage.lr * lr_multiplier(step, **kw) == pytest.approx(0.01 / (1 + epoch * 0.5), rel=1e-12)


def small_quick(**changes):
    cfg = COUNTING.config("quick")
    return cfg.replace(**{"data": {**cfg.data, "size": 32}, "eval_size": 16, "batch_size": 8, "steps": 6,
                          "epoch_steps": 4, **changes})


def test_quick_training_through_the_route_on_the_curriculum_scenes():
    torch.set_num_threads(1)
    cfg = small_quick()
    data = COUNTING.train_data(cfg, None, 0)
    world = SynthOrchestra(**cfg.data, seed=0)
    counts = [world.scene(i, frames=[0]).source_categories.numel() for i in range(len(world))]
    assert [int(data[i]["count"]) for i in range(len(data))] == counts and set(counts) == {1, 2, 3, 4}
    run = train(cfg, seed=0, progress=False)
    assert [h["lr"] for h in run.history] == pytest.approx([0.01] * 4 + [0.01 / 1.5] * 2)
    s = run.scores
    assert s["clips"] == 16 and sum(s["true_counts"].values()) == sum(s["predicted_counts"].values()) == 16
    assert s["chance"]["accuracy"] == 0.2 and 0 <= s["accuracy"] <= 1 and math.isfinite(s["mae"])
    hist = {int(c): n for c, n in s["true_counts"].items()}
    by_hand = {g: sum(n * abs(g - c) for c, n in hist.items()) / 16 for g in range(1, 6)}
    assert s["best_constant"]["mae"] == pytest.approx(min(by_hand.values()))
    assert s["best_constant"]["accuracy"] == hist[s["best_constant"]["count"]] / 16


def test_the_trunk_starts_from_a_trained_cavl_audio_stream():
    cavl = get_method("cavl")
    torch.manual_seed(1)
    source = cavl.model(cavl.config("quick"))
    cfg = small_quick(init_from="cavl")
    model = COUNTING.init(cfg, COUNTING.model(cfg), source, None)
    src = source.audio.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in model.audio.state_dict().items())
    run = train(cfg.replace(steps=1), seed=0, init_from=source, progress=False, evaluate=False)
    assert run.result.step == 1
    with pytest.raises(TypeError, match="trained CAVL network"):
        COUNTING.init(cfg, COUNTING.model(cfg), COUNTING.model(cfg), None)
    wider = cavl.model(cavl.config("colab"))
    with pytest.raises(ValueError, match="does not fit counting at scale 'quick'") as info:
        COUNTING.init(cfg, COUNTING.model(cfg), wider, None)
    assert "\n" not in str(info.value)


def test_a_curriculum_clip_directory_trains_on_every_level(tmp_path: Path):
    torch.set_num_threads(1)
    cfg = small_quick(steps=1, batch_size=4)
    for level in (1, 3):
        world = SynthOrchestra(family=f"c{level}", size=5, duration=1.0, seed=level)
        write_clips(world, tmp_path / f"c{level}", indices=range(3), frames=[0])
        write_clips(world, tmp_path / f"c{level}", indices=range(3, 5), frames=[0], split="test", append=True)
    assert sorted(int(COUNTING.train_data(cfg, tmp_path, 0)[i]["count"]) for i in range(6)) == [1] * 3 + [3] * 3
    run = train(cfg, seed=0, data=tmp_path, progress=False)
    assert run.scores["true_counts"] == {"1": 2, "2": 0, "3": 2, "4": 0, "5": 0}
    manifest = tmp_path / "c1" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[0].pop("n_sources")
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ClipFormatError, match="has no n_sources") as info:
        COUNTING.train_data(cfg, tmp_path, 0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("scale", ["quick", "colab", "full"])
def test_configs_round_trip_through_a_checkpoints_plain_data(scale):
    cfg = COUNTING.config(scale)
    assert COUNTING.config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    if scale != "full":  # the trunk a trained CAVL of the same scale can hand over
        cavl = get_method("cavl").config(scale)
        assert (cfg.audio_cfg, cfg.batch_norm, cfg.audio) == (cavl.audio_cfg, cavl.batch_norm, cavl.audio)


@pytest.mark.parametrize(("scale", "width"), [("quick", 64), ("colab", 128)])
def test_small_scales_take_a_step(scale, width):
    cfg = COUNTING.config(scale)
    model = COUNTING.model(cfg)
    batch = COUNTING.example_batch(cfg, 2)
    out = model(first_example(make_frontend(cfg.audio), batch["audio"]))
    assert out["feature"].shape == (2, width) and out["log_rate"].shape == out["rate"].shape == (2,)
    res = COUNTING.step(cfg)(model, batch)
    res["loss"].backward()
    assert math.isfinite(float(res["loss"].detach())) and model.head[0].weight.grad.abs().sum() > 0
