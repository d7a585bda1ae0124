"""CAVL: full-scale shapes and one optimisation step, Eq. 4 and Eq. 5 against naive loops, Eq. 7 localization."""

import pytest
import torch

from avlib.audio import first_example, make_frontend
from avlib.losses import alignment_score, alignment_score_matrix, cavl_contrastive_loss, sample_negatives
from avlib.methods import get_method
from avlib.nets.cavl import CAVLNet

CAVL = get_method("cavl")


def test_full_config_is_the_paper():
    cfg = CAVL.config("full")
    assert (cfg.visual_cfg, cfg.audio_cfg, cfg.embed_dim, cfg.image_size) == (None, None, 512, 256)
    assert (cfg.audio["seconds"], cfg.audio["n_fft"], cfg.audio["hop_length"]) == (10.0, 1022, 256)
    assert (cfg.audio["freq_bins"], cfg.audio["frames"]) == (512, 432)
    assert (cfg.optimizer, cfg.lr, cfg.level_lr_decay, cfg.levels) == ("adam", 1e-4, 0.1, (1, 2, 3, 4))
    assert not cfg.batch_norm and not cfg.scene_level and cfg.data is None


def test_cavl_full_scale_shapes_and_one_step():
    torch.manual_seed(0)
    cfg = CAVL.config("full")
    model = CAVL.model(cfg)
    assert model.k_visual == model.k_audio + 1 == 2
    batch = CAVL.example_batch(cfg, 2)
    assert batch["image"].shape == (2, 3, 256, 256) and batch["audio"].shape == (2, 110_250)  # 10 s at 11.025 kHz
    spec = first_example(make_frontend(cfg.audio), batch["audio"])
    assert spec.shape == (2, 1, 512, 432)
    with torch.no_grad():
        fa = model.audio(spec)
        fv = model.visual(batch["image"])
    assert fa.shape == (2, 512, 64, 54) and fa.shape[2] * fa.shape[3] == 3456
    assert fv.shape == (2, 512, 16, 16) and fv.shape[2] * fv.shape[3] == 256
    assert model.fc_v.weight.shape == (512, 512) and model.fc_a.weight.shape == (512, 512)
    opt = CAVL.make_optimizer(cfg, model)
    before = [p.detach().clone() for p in model.parameters()]
    res = CAVL.step(cfg)(model, batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(res["loss"])
    res["loss"].backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        out = model(batch["image"], spec)
    assert out["centers_a"].shape == (2, 1, 512) and out["centers_v"].shape == (2, 2, 512)
    assert out["assign_a"].shape == (2, 3456, 1) and out["assign_v"].shape == (2, 256, 2)
    assert out["visual_map"].shape == (2, 2, 16, 16) and out["audio_map"].shape == (2, 1, 64, 54)


def naive_score(ca, cv):
    total = 0.0
    for i in range(ca.shape[0]):
        total += min(float(torch.linalg.vector_norm(ca[i] - cv[j])) for j in range(cv.shape[0]))
    return total


def test_alignment_score_matches_loop():
    g = torch.Generator().manual_seed(0)
    ca, cv = torch.randn(4, 2, 5, generator=g), torch.randn(3, 3, 5, generator=g)
    mat = alignment_score_matrix(ca, cv)
    assert mat.shape == (4, 3)
    for a in range(4):
        for v in range(3):
            assert abs(float(mat[a, v]) - naive_score(ca[a], cv[v])) < 1e-5
    diag = alignment_score(ca[:3], cv)
    assert torch.allclose(diag, torch.diagonal(alignment_score_matrix(ca[:3], cv)))


def test_contrastive_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    n, margin = 4, 1.5
    s = torch.rand(n, n, generator=g) * 3
    eye = torch.eye(n)
    naive = 0.0
    for i in range(n):
        for j in range(n):
            naive += float(s[i, j]) ** 2 if i == j else max(margin - float(s[i, j]), 0.0) ** 2
    naive /= 2 * n
    assert abs(float(cavl_contrastive_loss(s, eye, margin)) - naive) < 1e-6
    # perfect alignment: positives at 0, negatives beyond the margin -> zero loss
    perfect = torch.where(eye.bool(), torch.zeros(n, n), torch.full((n, n), 2.0))
    assert float(cavl_contrastive_loss(perfect, eye, margin)) == 0.0


def test_localize_eq7_nearest_visual_center():
    cv = torch.tensor([[[0.0, 0.0], [5.0, 5.0]], [[1.0, 1.0], [-3.0, 0.0]]])
    ca = torch.tensor([[[4.0, 4.0]], [[0.9, 1.2]]])
    vmap = torch.rand(2, 2, 4, 4)
    loc = CAVL.localize(CAVL.config("quick"), {"centers_a": ca, "centers_v": cv, "visual_map": vmap})
    assert loc["related_index"].tolist() == [1, 0]
    assert torch.equal(loc["related"][0], vmap[0, 1]) and torch.equal(loc["unrelated"][1], vmap[1, 1])


def test_quick_config_step():
    cfg = CAVL.config("quick")
    model = CAVL.model(cfg)
    batch = CAVL.example_batch(cfg, 3)
    out = CAVL.step(cfg)(model, batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_step_is_eq5_on_the_true_pair_and_the_drawn_negative():
    """The method's step against Eq. 4 (naive loop) and Eq. 5 written out, with the negatives the generator draws."""
    cfg = CAVL.config("quick")
    torch.manual_seed(0)
    model = CAVL.model(cfg).eval()
    batch = CAVL.example_batch(cfg, 4)
    with torch.no_grad():
        res = CAVL.step(cfg)(model, batch, generator=torch.Generator().manual_seed(2))
        out = model(batch["image"], make_frontend(cfg.audio)(batch["audio"])[:, :1])
    neg = sample_negatives(4, generator=torch.Generator().manual_seed(2))
    ca, cv = out["centers_a"], out["centers_v"]
    want = 0.0
    for i in range(4):
        pos, other = naive_score(ca[i], cv[i]), naive_score(ca[neg[i]], cv[i])
        want += pos**2 + max(cfg.margin - other, 0.0) ** 2
    assert float(res["loss"]) == pytest.approx(want / (2 * 4), rel=1e-4)  # n = 4 pairs of (true, negative)


def test_localize_contrast_matches_loop():
    g = torch.Generator().manual_seed(4)
    b, kv, d = 4, 2, 5
    out = {"centers_a": torch.randn(b, 1, d, generator=g), "centers_v": torch.randn(b, kv, d, generator=g),
           "visual_map": torch.rand(b, kv, 3, 3, generator=g)}
    loc = CAVL.localize(CAVL.config("quick"), out, mode="contrast")
    for i in range(b):
        scores = []
        for j in range(kv):
            pos = float((out["centers_a"][i, 0] - out["centers_v"][i, j]).norm())
            others = [float((out["centers_a"][a, 0] - out["centers_v"][i, j]).norm()) for a in range(b) if a != i]
            scores.append(sum(others) / len(others) - pos)
        assert int(loc["related_index"][i]) == max(range(kv), key=scores.__getitem__)
        assert abs(float(loc["score"][i].max()) - max(scores)) < 1e-5


def test_model_step_and_example_batch():
    for scale in ("quick", "colab"):
        cfg = CAVL.config(scale)
        model, step = CAVL.model(cfg), CAVL.step(cfg)
        out = step(model, CAVL.example_batch(cfg, 2))
        out["loss"].backward()
        assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="k_audio"):
        CAVLNet(k_audio=0)
