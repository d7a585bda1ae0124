"""DMC: full-scale shapes and one optimisation step on the CPU, Eq. 8 against a naive loop, localization, configs."""

import math

import pytest
import torch

from avlib.audio import first_example, make_frontend
from avlib.losses import dmc_max_margin_loss, sample_negatives
from avlib.methods import get_method
from avlib.nets.backbones import VGG16Features, VGGish
from avlib.nets.dmc import DMCNet

DMC = get_method("dmc")


def test_backbone_full_shapes():
    vgg = VGG16Features()
    assert sum(isinstance(m, torch.nn.Conv2d) for m in vgg.modules()) == 13
    with torch.no_grad():
        assert vgg(torch.zeros(1, 3, 256, 256)).shape == (1, 512, 8, 8)
        assert VGGish()(torch.zeros(1, 1, 496, 64)).shape == (1, 512, 31, 4)
    with pytest.raises(ValueError, match="VGGish"):
        VGGish()(torch.zeros(1, 3, 96, 64))
    with pytest.raises(ValueError, match="cfg"):
        VGG16Features(cfg=[])


def test_vgg16_matches_torchvision_definition():
    import torchvision

    ours = VGG16Features()
    ref = torchvision.models.vgg16(weights=None).features
    assert [type(m) for m in ours.features] == [type(m) for m in ref]
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in ref.parameters()]


def test_dmc_full_scale_shapes_and_one_step():
    torch.manual_seed(0)
    cfg = DMC.config("full")
    model = DMC.model(cfg)
    batch = DMC.example_batch(cfg, 2)
    assert batch["image"].shape == (2, 3, 256, 256) and batch["audio"].shape == (2, 79_600)  # 4.975 s at 16 kHz
    spec = first_example(make_frontend(cfg.audio), batch["audio"])
    assert spec.shape == (2, 1, 496, 64)
    with torch.no_grad():
        out = model(batch["image"], spec)
    k, m = cfg.k, cfg.center_dim
    assert (k, m) == (2, 128)
    assert out["assign_v"].shape == (2, 64, k) and out["assign_a"].shape == (2, 124, k)
    assert out["centers_v"].shape == (2, k, m) and out["centers_a"].shape == (2, k, m)
    assert out["visual_map"].shape == (2, k, 8, 8) and out["audio_map"].shape == (2, k, 31, 4)
    opt = DMC.make_optimizer(cfg, model)
    before = [p.detach().clone() for p in model.parameters()]
    res = DMC.step(cfg)(model, batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(res["loss"])
    res["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)]
    assert all(changed)


def naive_max_margin(ca, cv, ca_neg, margin):
    total = 0.0
    for b in range(ca.shape[0]):
        for j in range(ca.shape[1]):
            pos = torch.dot(ca[b, j], cv[b, j]) / (ca[b, j].norm() * cv[b, j].norm())
            neg = torch.dot(ca_neg[b, j], cv[b, j]) / (ca_neg[b, j].norm() * cv[b, j].norm())
            total += max(0.0, float(neg - pos + margin))
    return total / ca.shape[0]


def test_max_margin_loss_matches_loop():
    g = torch.Generator().manual_seed(1)
    ca, cv = torch.randn(5, 3, 7, generator=g), torch.randn(5, 3, 7, generator=g)
    neg = sample_negatives(5, generator=g)
    for margin in (0.0, 0.3, 1.0):
        got = dmc_max_margin_loss(ca, cv, ca[neg], margin)
        assert abs(float(got) - naive_max_margin(ca, cv, ca[neg], margin)) < 1e-5


def test_step_is_eq8_with_the_drawn_negatives():
    """The method's step: the log-mel of the batch's waveforms through the net, Eq. 8 against the negatives that the
    same generator draws (checked with the naive loop)."""
    cfg = DMC.config("quick")
    torch.manual_seed(0)
    model = DMC.model(cfg).eval()
    batch = DMC.example_batch(cfg, 4)
    with torch.no_grad():
        res = DMC.step(cfg)(model, batch, generator=torch.Generator().manual_seed(5))
        out = model(batch["image"], make_frontend(cfg.audio)(batch["audio"])[:, :1])
    neg = sample_negatives(4, generator=torch.Generator().manual_seed(5))
    want = naive_max_margin(out["centers_a"], out["centers_v"], out["centers_a"][neg], cfg.margin)
    assert float(res["loss"]) == pytest.approx(want, abs=1e-5)


def test_sample_negatives_never_self():
    g = torch.Generator().manual_seed(0)
    for b in (2, 3, 17):
        idx = torch.stack([sample_negatives(b, generator=g) for _ in range(200)])
        assert (idx != torch.arange(b)).all() and idx.min() >= 0 and idx.max() < b
        assert len(torch.unique(idx)) == b  # every other item gets drawn
    with pytest.raises(ValueError, match="batch_size"):
        sample_negatives(1)


def test_localize_picks_the_center_most_like_the_sound():
    b, k, m = 3, 2, 4
    cv = torch.randn(b, k, m)
    rel = torch.tensor([1, 0, 1])
    ca = cv[torch.arange(b), rel][:, None].expand(b, k, m) + 0.01 * torch.randn(b, k, m)
    vmap = torch.rand(b, k, 8, 8)
    out = {"centers_a": ca, "centers_v": cv, "visual_map": vmap}
    cfg = DMC.config("quick")
    loc = DMC.localize(cfg, out)
    assert torch.equal(loc["related_index"], rel)
    assert torch.equal(loc["related"], vmap[torch.arange(b), rel])
    assert torch.equal(loc["unrelated"], vmap[torch.arange(b), 1 - rel])
    assert DMC.localize(cfg, out, size=(64, 64))["related"].shape == (b, 64, 64)


def test_quick_config_builds_and_trains_a_step():
    cfg = DMC.config("quick")
    model = DMC.model(cfg)
    batch = DMC.example_batch(cfg, 4)
    out = DMC.step(cfg)(model, batch)
    out["loss"].backward()
    spec = first_example(make_frontend(cfg.audio), batch["audio"])
    assert spec.shape == (4, 1, cfg.audio["frames"], cfg.audio["n_mels"])
    assert model(batch["image"], spec)["visual_map"].shape == (4, cfg.k, 8, 8)


def test_dmc_rejects_mismatched_widths():
    with pytest.raises(ValueError, match="channel"):
        DMCNet(visual_cfg=[8, "M", 16], audio_cfg=[8, "M", 32])


def test_config_errors_and_copies():
    with pytest.raises(KeyError, match="dmc"):
        get_method("nope")
    with pytest.raises(ValueError, match="AVLIB_SCALE|scale"):
        DMC.config("huge")
    a = DMC.config("quick", k=99)
    assert a.k == 99 and DMC.config("quick").k == 2
    with pytest.raises(AttributeError):
        a.k = 3  # frozen
    b = DMC.config("quick")
    b.data["size"], b.audio["frames"] = 1, 1  # a returned config's dicts are its own, not the preset's
    assert DMC.config("quick").data["size"] == 512 and DMC.config("quick").audio["frames"] == 96


def test_localize_contrast_matches_loop():
    g = torch.Generator().manual_seed(3)
    b, k, m = 5, 3, 6
    out = {"centers_a": torch.randn(b, k, m, generator=g), "centers_v": torch.randn(b, k, m, generator=g),
           "visual_map": torch.rand(b, k, 4, 4, generator=g)}
    cfg = DMC.config("quick")
    loc = DMC.localize(cfg, out, mode="contrast")
    cos = torch.nn.functional.cosine_similarity
    for i in range(b):
        scores = []
        for j in range(k):
            pos = float(cos(out["centers_a"][i, j], out["centers_v"][i, j], dim=0))
            others = [float(cos(out["centers_a"][a, j], out["centers_v"][i, j], dim=0)) for a in range(b) if a != i]
            scores.append(pos - sum(others) / len(others))
        assert abs(float(loc["score"][i].max()) - max(scores)) < 1e-5
        assert int(loc["related_index"][i]) == max(range(k), key=scores.__getitem__)
    with pytest.raises(ValueError, match="mode"):
        DMC.localize(cfg, out, mode="nope")
    with pytest.raises(ValueError, match="batch"):
        DMC.localize(cfg, {key: v[:1] for key, v in out.items()}, mode="contrast")


@pytest.mark.parametrize("scale", ["quick", "colab"])
def test_model_step_and_example_batch(scale):
    cfg = DMC.config(scale)
    model, step = DMC.model(cfg), DMC.step(cfg)
    out = step(model, DMC.example_batch(cfg, 2))
    out["loss"].backward()
    loss = float(out["loss"].detach())
    assert math.isfinite(loss) and 0.0 <= loss <= cfg.k * (2.0 + cfg.margin)  # cosines lie in [-1, 1]
