"""DSOL (avlib.nets.dsol, avlib.methods.dsol): the full-scale shapes, one step of each stage at full scale, the losses
and the dictionary against independent references (naive loops, torch's kl_div, sklearn's KMeans and NMI, scipy's
Hungarian assignment), and the whole two-stage method trained and evaluated at a tiny scale."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from torch.utils.data import StackDataset

from avlib.audio import first_example, make_frontend
from avlib.eval.class_aware import category_maps, match_keys
from avlib.methods import get_method, train
from avlib.methods.dsol import (
    DSOLStep,
    dictionary_kmeans,
    kl_loss,
    localization_loss,
    nearest_keys,
)
from avlib.nets.backbones import ResNet18S5
from avlib.nets.dsol import DSOLNet

DSOL = get_method("dsol")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_resnet18_s5_is_torchvisions_resnet18_with_the_last_stride_removed():
    torch.manual_seed(0)
    ours = ResNet18S5().eval()
    ref = torchvision.models.resnet18().eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"fc.weight", "fc.bias"}  # ImageNet weights load as they are
    ref.layer4[0].conv1.stride = (1, 1)
    ref.layer4[0].downsample[0].stride = (1, 1)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
        got = ours(x)
    assert got.shape == (1, 512, 14, 14)
    torch.testing.assert_close(got, expected)


def test_full_scale_shapes_visual_512x14x14_audio_512():
    cfg = DSOL.config("full")
    assert (cfg.image_size, cfg.resize, cfg.n_keys, cfg.batch_size, cfg.lr, cfg.lam) == (224, 256, 11, 32, 1e-4, 0.5)
    net = DSOL.model(cfg)
    batch = DSOL.example_batch(cfg, 2)
    spec = first_example(make_frontend(cfg.audio), batch["audio"])
    assert batch["image"].shape == (2, 3, 224, 224) and spec.shape == (2, 1, 201, 64)
    with torch.no_grad():
        out = net(batch["image"], spec)
    assert out["visual_features"].shape == (2, 512, 14, 14) and out["audio_features"].shape == (2, 512)
    assert out["loc_map"].shape == (2, 14, 14) and out["class_maps"].shape == (2, 11, 14, 14)
    assert net.audio.conv1.in_channels == 1 and net.visual_head[0].out_channels == 128
    assert float(net.loc_weight.detach()) == 5.0 and net.dictionary.shape == (11, 512)


def test_the_small_stem_and_strides_shrink_the_visual_receptive_field_only():
    net = DSOLNet(n_keys=4, widths=(4, 8, 8, 16), blocks=(1, 1, 1, 1), visual_stem="small",
                  visual_strides=(2, 2, 2, 1)).eval()
    assert net.visual.conv1.kernel_size == (3, 3) and net.visual.conv1.stride == (1, 1)
    assert isinstance(net.visual.maxpool, torch.nn.Identity) and net.audio.conv1.kernel_size == (7, 7)
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = net.visual(image)
    assert out.shape == (1, 16, 8, 8)
    out[0, :, 0, 0].sum().backward()  # the top-left cell sees only the image's top-left corner
    seen = image.grad.abs().sum((0, 1)) > 0
    assert seen[:8, :8].all() and not seen[40:].any() and not seen[:, 40:].any()  # 39 px of 64
    with pytest.raises(ValueError, match="stem"):
        ResNet18S5(3, stem="tiny")


def _stage1(cfg, n):
    b = DSOL.example_batch(cfg, n)
    return StackDataset(**b)


@pytest.mark.parametrize("phase", ["loc", "cls", "match"])
def test_one_step_of_each_stage_at_full_scale_batch_2(phase):
    cfg = DSOL.config("full").replace(phase=phase, dictionary_round=0 if phase == "loc" else 2, kmeans_restarts=2)
    torch.manual_seed(0)
    net = DSOL.model(cfg.replace(n_keys=2))
    stage1 = _stage1(cfg.replace(n_keys=2), 2)
    step = DSOLStep(cfg.replace(n_keys=2), make_frontend(cfg.audio), stage1=lambda: stage1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    out = step(net, DSOL.example_batch(cfg.replace(n_keys=2), 2))
    out["loss"].backward()
    opt.step()
    assert math.isfinite(float(out["loss"]))
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    if phase == "match":
        assert "nmi" in out and int(net.dictionary_round) == 2 and net.dictionary.abs().sum() > 0
        assert not any(k.startswith("audio.") and "weight" in k for k in changed)  # the audio trunk is frozen
        assert "visual.conv1.weight" in changed and "audio_head.0.weight" in changed
    elif phase == "cls":
        assert {"visual_classifier.weight", "audio_classifier.weight", "audio.conv1.weight"} <= changed
    else:
        assert "loc_weight" in changed and "visual_classifier.weight" not in changed


def test_localization_loss_matches_a_naive_loop():
    torch.manual_seed(0)
    net = DSOLNet(n_keys=3, widths=(4, 4, 8, 8), blocks=(1, 1, 1, 1), embed_dim=5)
    fv, ga = torch.randn(3, 8, 4, 5).relu(), torch.randn(3, 8)
    for negatives in ("global", "quadrants"):
        loss, loc = localization_loss(net, fv, ga, negatives)
        terms = []
        for i in range(3):
            for j, target in ((i, 1.0), ((i - 1) % 3, 0.0)):  # own sound, the previous item's sound
                ev = net.visual_head(fv[i : i + 1])[0]
                ea = net.audio_head(ga[j])
                cos = torch.zeros(4, 5)
                for y, x in itertools.product(range(4), range(5)):
                    cos[y, x] = F.cosine_similarity(ev[:, y, x], ea, dim=0)
                lmap = torch.sigmoid(5.0 * cos)
                if target == 1.0:
                    torch.testing.assert_close(loc[i], lmap, atol=1e-5, rtol=1e-5)
                cells = [lmap.max()] if target == 1.0 or negatives == "global" else \
                    [lmap[:2, :3].max(), lmap[:2, 2:].max(), lmap[2:, :3].max(), lmap[2:, 2:].max()]
                terms += [-(target * torch.log(c) + (1 - target) * torch.log(1 - c)) for c in cells]
        torch.testing.assert_close(loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_kl_directions_against_torch_kl_div_and_a_loop():
    torch.manual_seed(1)
    log_pv, log_pa = F.log_softmax(torch.randn(4, 6), 1), F.log_softmax(torch.randn(4, 6), 1)
    code = F.kl_div(log_pv, log_pa.exp(), reduction="batchmean")  # the authors' call
    torch.testing.assert_close(kl_loss(log_pv, log_pa, "code"), code)
    naive = sum(sum(math.exp(log_pv[b, k]) * (log_pv[b, k] - log_pa[b, k]) for k in range(6)) for b in range(4)) / 4
    assert float(kl_loss(log_pv, log_pa, "paper")) == pytest.approx(float(naive), rel=1e-5)
    assert abs(float(kl_loss(log_pv, log_pa, "paper")) - float(code)) > 1e-3  # the two directions differ


def test_object_features_are_eq2_masked_average_pooling_l2_normalised():
    torch.manual_seed(2)
    net = DSOLNet(n_keys=2, widths=(4, 4, 8, 8), blocks=(1, 1, 1, 1))
    fv, loc = torch.rand(2, 8, 3, 4), torch.rand(2, 3, 4)
    for dilation in (0, 1):
        got = net.object_features(fv, loc, 0.6, dilation)
        for b in range(2):
            mask = torch.zeros(3, 4)
            for y, x in itertools.product(range(3), range(4)):
                near = [(y + dy, x + dx) for dy in range(-dilation, dilation + 1) for dx in range(-dilation,
                                                                                                  dilation + 1)]
                mask[y, x] = float(any(0 <= a < 3 and 0 <= c < 4 and loc[b, a, c] > 0.6 for a, c in near))
            pooled = (fv[b] * mask).sum((1, 2)) / 12
            torch.testing.assert_close(got[b], pooled / pooled.norm())


def test_dictionary_kmeans_reaches_sklearns_objective_and_recovers_blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16)) * 4
    truth = rng.integers(0, 5, 400)
    x = torch.from_numpy(centers[truth] + rng.normal(size=(400, 16))).float()
    keys = dictionary_kmeans(x, 5, restarts=4, iters=50, seed=0)
    labels = nearest_keys(x, keys)
    assert normalized_mutual_info_score(truth, labels.numpy()) == pytest.approx(1.0)
    ours = float(((x - keys[labels]) ** 2).sum())
    ref = KMeans(5, n_init=10, random_state=0).fit(x.numpy().astype(np.float64))
    assert ours <= ref.inertia_ * 1.001
    harder = torch.from_numpy(rng.normal(size=(300, 8))).float()  # no structure: compare objectives only
    k8 = dictionary_kmeans(harder, 8, restarts=8, iters=100, seed=1)
    inertia = float(((harder - k8[nearest_keys(harder, k8)]) ** 2).sum())
    assert inertia <= KMeans(8, n_init=10, random_state=0).fit(harder.numpy()).inertia_ * 1.03


def test_nearest_keys_matches_a_loop():
    torch.manual_seed(3)
    o, keys = torch.randn(20, 6), torch.randn(4, 6)
    naive = [min(range(4), key=lambda k, i=i: float(((o[i] - keys[k]) ** 2).sum())) for i in range(20)]
    assert nearest_keys(o, keys).tolist() == naive


def test_match_keys_is_the_hungarian_assignment_and_maps_sum_per_category():
    rng = np.random.default_rng(4)
    truth = torch.from_numpy(rng.integers(0, 4, 200))
    perm = torch.tensor([2, 0, 3, 1])  # key of each category
    keys = perm[truth].clone()
    noisy = rng.uniform(size=200) < 0.3
    keys[noisy] = torch.from_numpy(rng.integers(0, 4, int(noisy.sum())))
    got = match_keys(keys, truth, 4, 4)
    counts = np.zeros((4, 4))
    np.add.at(counts, (keys.numpy(), truth.numpy()), 1)
    rows, cols = linear_sum_assignment(-counts)
    assert got.tolist() == cols[np.argsort(rows)].tolist()
    best = max(itertools.permutations(range(4)), key=lambda p: sum(counts[k, p[k]] for k in range(4)))
    assert got.tolist() == list(best) and torch.equal(got[perm], torch.arange(4))
    extra = match_keys(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 0, 1, 1, 1, 0]), 3, 2)  # 3 keys, 2 classes
    assert extra.tolist() in ([0, -1, 1], [0, 1, 1])
    assert sorted(t for t in extra.tolist() if t >= 0)[:2] == [0, 1]
    maps = torch.rand(2, 3, 4, 4)
    summed = category_maps(maps, torch.tensor([1, 0, 1]), 3)
    torch.testing.assert_close(summed[:, 1], maps[:, 0] + maps[:, 2])
    torch.testing.assert_close(summed[:, 0], maps[:, 1])
    assert summed[:, 2].abs().sum() == 0


def test_stages_alternate_and_the_ablation_without_alternation():
    cfg = DSOL.config("full")
    plans = DSOL.stages(cfg)
    names = [p.name for p in plans]
    assert names[:4] == ["loc1", "cls2", "loc2", "cls3"] and names[-2:] == ["loc15", "match"] and len(names) == 30
    assert [p.cfg.dictionary_round for p in plans if p.cfg.phase != "loc"] == [*range(2, 16), 16]
    assert plans[1].cfg.steps == cfg.cls_steps and plans[-1].cfg.steps == cfg.match_steps
    flat = DSOL.stages(cfg.replace(alternate=False))
    assert [p.name for p in flat] == ["loc", "match"] and flat[0].cfg.steps == 15 * cfg.round_steps


def test_the_two_stage_method_trains_and_evaluates_at_a_tiny_scale():
    cfg = DSOL.config("quick")
    tiny = cfg.replace(widths=(4, 8, 8, 16), embed_dim=8, n_keys=4, rounds=2, round_steps=2, cls_steps=2,
                       match_steps=2, batch_size=4, image_size=32, resize=32, eval_size=8, kmeans_restarts=2,
                       data={"n_categories": 4, "size": 8, "image_size": 32, "duration": 1.0})
    run = train(tiny, seed=0, progress=False)
    assert [len(r.history) for r in run.results] == [2, 2, 2, 2]
    assert "nmi" in run.results[1].history[-1] and "acc_audio" in run.results[1].history[-1]
    assert int(run.model.dictionary_round) == 3  # the final dictionary, built at the start of stage 2
    s = run.scores
    assert set(s["single_source"]) >= {"dsol", "centred box (half the image)", "whole image", "random map",
                                        "audio-free (mean sound)"}
    assert sorted(t for t in s["key_to_category"]) == [0, 1, 2, 3]
    for family in ("mosaic", "duet"):
        rows = s[family]
        assert {"dsol", "audio-free (class maps without the sound)", "centred box (half the image)"} <= set(rows)
        assert set(rows["dsol"]) == {"paper", "released_code"} and 0 <= rows["dsol"]["paper"]["nsa"] <= 1


def test_trains_and_evaluates_from_clip_directories(tmp_path):
    from avlib.data import SynthOrchestra, write_clips

    for family in ("solo", "mosaic"):
        world = SynthOrchestra(n_categories=4, family=family, size=12, image_size=32, duration=1.0, seed=0)
        write_clips(world, tmp_path / family, range(8), split="train")
        write_clips(world, tmp_path / family, range(8, 12), split="test", append=True)
    cfg = DSOL.config("full").replace(widths=(4, 8, 8, 16), embed_dim=8, n_keys=4, n_categories=4, rounds=2,
                                      round_steps=2, cls_steps=2, match_steps=2, batch_size=4, image_size=32,
                                      resize=36, kmeans_restarts=2)
    run = train(cfg, seed=0, data=tmp_path, progress=False)
    assert run.scores["solo_clips"] == 4 and run.scores["mosaic"]["scenes"] == 4 and "duet" not in run.scores
    assert run.scores["mosaic"]["dsol"]["paper"]["nsa"] >= 0


def test_avlib_train_dsol_runs_its_stages_into_sub_directories(tmp_path, monkeypatch, capsys):
    from avlib.cli import main
    from avlib.methods import load

    cfg = DSOL.config("quick")
    tiny = cfg.replace(widths=(4, 8, 8, 16), embed_dim=8, n_keys=4, rounds=2, round_steps=1, cls_steps=1,
                       match_steps=1, batch_size=4, image_size=32, resize=32, eval_size=8, kmeans_restarts=2,
                       data={"n_categories": 4, "size": 8, "image_size": 32, "duration": 1.0})
    monkeypatch.setitem(DSOL.presets, "quick", tiny)
    assert main(["train", "dsol", "--out", str(tmp_path / "run"), "--no-eval"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == ["1_loc1", "2_cls2", "3_loc2",
                                                                                   "4_match"]
    loaded_cfg, model, state = load(tmp_path / "run", device="cpu")
    assert loaded_cfg.phase == "match" and int(model.dictionary_round) == 3 and model.dictionary.abs().sum() > 0
