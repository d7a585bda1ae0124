"""AVE-Net and AVOL-Net (avlib.nets.ave, avlib.methods.ave / avol): full-scale shapes (Objects that Sound Fig. 2c,
Fig. 4), one optimisation step at batch 2 on the CPU through each method's step, the fc3 sign initialisation of
Appendix B, and the maps against naive references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avlib.audio import make_frontend
from avlib.methods import get_method
from avlib.nets.ave import AVENet, AVOLNet

SMALL = (4, 4, 8, 8)


def _full(name: str) -> tuple:
    """The method, its full config, its freshly built model and its example batch of 2 with the spectrogram."""
    method = get_method(name)
    cfg = method.config("full")
    torch.manual_seed(0)
    batch = method.example_batch(cfg, 2)
    spec = make_frontend(cfg.audio)(batch["audio"])
    assert batch["image"].shape == (2, 3, 224, 224) and spec.shape == (2, 1, 257, 199)
    return method, cfg, method.model(cfg), batch, spec


def _one_step(method, cfg, net: torch.nn.Module, batch: dict) -> None:
    """One optimisation step through the method's own step and optimiser: every parameter gets a finite gradient and
    moves."""
    opt = method.make_optimizer(cfg, net)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt.zero_grad()
    loss = method.step(cfg)(net, batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    opt.step()
    assert all(not torch.equal(before[n], p.detach()) for n, p in net.named_parameters())


def test_ave_full_scale_shapes_and_one_step_on_cpu():
    method, cfg, net, batch, spec = _full("ave")
    image = batch["image"]
    assert isinstance(net, AVENet)
    assert net.vision.forward_maps(image).shape == (2, 512, 14, 14)
    assert net.audio.forward_maps(spec).shape == (2, 512, 16, 12)
    assert net.vision._modules["features"][0][0].stride == (2, 2)  # stride-2 conv1_1
    for head in (net.vision_fc, net.audio_fc):  # fc1 512x128 + ReLU, fc2 128x128
        assert head[0].weight.shape == (128, 512) and isinstance(head[1], torch.nn.ReLU)
        assert head[2].weight.shape == (128, 128)
    assert net.fc3.weight.shape == (2, 1)
    v, a = net.embed_image(image), net.embed_audio(spec)
    assert v.shape == a.shape == (2, 128)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2))
    assert net(image, spec).shape == (2, 2)
    _one_step(method, cfg, net, batch)


def test_ave_logits_depend_only_on_the_distance():
    torch.manual_seed(1)
    net = AVENet(SMALL, embed_dim=16).eval()
    image, spec = torch.rand(5, 3, 32, 32), torch.randn(5, 1, 33, 40)
    v, a = net.embed_image(image), net.embed_audio(spec)
    d = torch.tensor(
        [
            math.sqrt(sum((x - y) ** 2 for x, y in zip(vi, ai, strict=True)))
            for vi, ai in zip(v.tolist(), a.tolist(), strict=True)
        ]
    )
    torch.testing.assert_close(net.distance(v, a), d.float(), atol=1e-5, rtol=1e-5)
    expected = d.float()[:, None] * net.fc3.weight[:, 0] + net.fc3.bias
    torch.testing.assert_close(net(image, spec), expected, atol=1e-5, rtol=1e-5)


def test_fc3_sign_initialisation_makes_small_distance_mean_correspond():
    net = AVENet(SMALL, embed_dim=16)
    w = net.fc3.weight[:, 0]
    assert w[1] < 0 < w[0]  # "corresponds" (class 1) falls with the distance, "does not" rises
    d = torch.tensor([[0.0], [math.sqrt(2.0)], [2.0]])
    logits = net.fc3(d)
    p_corr = torch.softmax(logits, dim=1)[:, 1]
    assert p_corr[0] > 0.5 and p_corr[2] < 0.5
    assert p_corr[1].item() == pytest.approx(0.5, abs=1e-6)  # undecided at the distance of unrelated unit vectors
    # the sign is an initialisation, not a constraint: fc3 stays trainable
    assert net.fc3.weight.requires_grad and net.fc3.bias.requires_grad


def test_fc3_sign_init_survives_identical_and_opposite_embeddings():
    net = AVENet(SMALL, embed_dim=16)
    e = F.normalize(torch.randn(3, 16), dim=1)
    close = net.fc3(net.distance(e, e)[:, None])
    far = net.fc3(net.distance(e, -e)[:, None])
    assert (close[:, 1] > close[:, 0]).all() and (far[:, 1] < far[:, 0]).all()


def test_ave_distance_has_finite_gradient_at_zero():
    e = torch.randn(2, 8, requires_grad=True)
    AVENet.distance(e, e.detach()).sum().backward()
    assert torch.isfinite(e.grad).all()


def test_avol_full_scale_shapes_and_one_step_on_cpu():
    method, cfg, net, batch, spec = _full("avol")
    image = batch["image"]
    assert isinstance(net, AVOLNet)
    assert [m.kernel_size for m in net.vision_conv if isinstance(m, torch.nn.Conv2d)] == [(1, 1), (1, 1)]
    assert net.vision_conv[0].weight.shape == (128, 512, 1, 1) and net.vision_conv[2].weight.shape == (128, 128, 1, 1)
    assert net.calibration.weight.shape == (1, 1, 1, 1) and net.calibration.weight.item() > 0
    assert net.embed_image_map(image).shape == (2, 128, 14, 14)
    assert net.embed_audio(spec).shape == (2, 128)
    maps = net.localize(image, spec)
    assert maps.shape == (2, 14, 14) and ((maps > 0) & (maps < 1)).all()
    assert net.correspondence_logit(image, spec).shape == (2,)
    _one_step(method, cfg, net, batch)


@torch.no_grad()
def test_avol_map_is_calibrated_scalar_product_and_score_its_max():
    torch.manual_seed(2)
    net = AVOLNet(SMALL, embed_dim=6, calibration_init=(0.7, -0.2)).eval()
    image, spec = torch.rand(3, 3, 48, 48), torch.randn(3, 1, 33, 40)
    v, a = net.embed_image_map(image), net.embed_audio(spec)
    b, _, h, w = v.shape
    expected = torch.empty(b, h, w)
    for i in range(b):  # naive reference: one scalar product per location
        for y in range(h):
            for x in range(w):
                expected[i, y, x] = 0.7 * torch.dot(v[i, :, y, x], a[i]) - 0.2
    torch.testing.assert_close(net(image, spec), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net.localize(image, spec), torch.sigmoid(expected), atol=1e-5, rtol=1e-5)
    # max pooling over locations of the sigmoid map = sigmoid of the max logit (sigmoid is monotone)
    torch.testing.assert_close(
        torch.sigmoid(net.correspondence_logit(image, spec)), net.localize(image, spec).amax(dim=(1, 2))
    )
    # no normalisation: the visual descriptors are not unit vectors
    assert not torch.allclose(v.norm(dim=1), torch.ones_like(v.norm(dim=1)))


@torch.no_grad()
def test_avol_map_depends_on_the_sound():
    torch.manual_seed(3)
    net = AVOLNet(SMALL, embed_dim=8).eval()
    image = torch.rand(1, 3, 48, 48).expand(2, -1, -1, -1)
    maps = net(image, torch.randn(2, 1, 33, 40))
    assert not torch.allclose(maps[0], maps[1])


def test_avol_from_avenet_reproduces_the_ave_head_at_every_location():
    torch.manual_seed(4)
    ave = AVENet(SMALL, embed_dim=8).eval()
    avol = AVOLNet.from_avenet(ave).eval()
    image, spec = torch.rand(2, 3, 48, 48), torch.randn(2, 1, 33, 40)
    with torch.no_grad():
        maps = ave.vision.forward_maps(image)  # (2, 8, h, w)
        per_location = ave.vision_fc(maps.permute(0, 2, 3, 1))  # fc1/fc2 applied to each position's vector
        torch.testing.assert_close(avol.embed_image_map(image), per_location.permute(0, 3, 1, 2))
        torch.testing.assert_close(avol.embed_audio(spec), ave.audio_fc(ave.audio(spec)))


def test_avol_calibration_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    torch.manual_seed(5)
    net = AVOLNet(SMALL, embed_dim=8)  # train mode: batch statistics make the untrained net's scores vary
    image, spec = torch.rand(64, 3, 32, 32), torch.randn(64, 1, 33, 40)
    with torch.no_grad():
        s = torch.einsum("bchw,bc->bhw", net.embed_image_map(image), net.embed_audio(spec)).amax(dim=(1, 2))
    label = (s + s.std() * torch.randn(64) > s.median()).long()  # noisy labels: a finite maximum-likelihood fit exists
    net.calibrate_(image, spec, label)
    ref = LogisticRegression(C=1e8, tol=1e-10, max_iter=10_000).fit(s[:, None].double().numpy(), label.numpy())
    assert net.calibration.weight.item() == pytest.approx(float(ref.coef_[0, 0]), rel=1e-3)
    assert net.calibration.bias.item() == pytest.approx(float(ref.intercept_[0]), rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("dense", [1, 2, 3])
def test_avol_dense_map_holds_the_coarse_map_on_its_lattice(dense):
    """À trous: the same weights with the last pools at stride 1 and dilated layers give a map 2**dense times finer
    that equals the coarse map at every 2**dense-th position (a fixed offset from the pools' padding sides)."""
    torch.manual_seed(6)
    coarse = AVOLNet(SMALL, embed_dim=8).eval()
    for m in coarse.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    fine = AVOLNet(SMALL, embed_dim=8, dense=dense).eval()
    fine.load_state_dict(coarse.state_dict())
    image, spec = torch.rand(2, 3, 64, 64), torch.randn(2, 1, 33, 40)
    with torch.no_grad():
        a, b = coarse(image, spec), fine(image, spec)
    s = 2**dense
    assert b.shape == (2, 4 * s, 4 * s) and a.shape == (2, 4, 4)
    offset = {1: 0, 2: 1, 3: 3}[dense]
    torch.testing.assert_close(b[:, offset::s, offset::s], a)
    assert not torch.allclose(b[:, offset + 1 :: s, offset::s], a)  # in between: other pooling windows


def test_avol_dense_is_rejected_beyond_the_trunks_pools():
    with pytest.raises(ValueError, match="dense must be 0, 1, 2 or 3"):
        AVOLNet(SMALL, dense=4)


@torch.no_grad()
def test_avol_map_logits_with_one_embedding_for_every_image():
    """map_logits(image, a) with a shared embedding is forward() with that embedding for every pair; the mean
    training embedding gives an audio-free map (the image alone)."""
    torch.manual_seed(7)
    net = AVOLNet(SMALL, embed_dim=8, calibration_init=(0.5, 0.1)).eval()
    image, spec = torch.rand(3, 3, 48, 48), torch.randn(3, 1, 33, 40)
    a = net.embed_audio(spec)
    torch.testing.assert_close(net.map_logits(image, a), net(image, spec))
    shared = net.map_logits(image, a.mean(0))
    v = net.embed_image_map(image)
    ref = 0.5 * torch.einsum("bchw,c->bhw", v, a.mean(0)) + 0.1
    torch.testing.assert_close(shared, ref)


def test_avol_calibration_keeps_a_positive_weight_when_scores_do_not_predict():
    """Labels unrelated to the scores: the fitted weight would be about 0 (or negative); calibrate_ standardises the
    scores instead, so a larger scalar product still means "corresponds" (the AVOL analogue of Appendix B)."""
    torch.manual_seed(8)
    net = AVOLNet(SMALL, embed_dim=8)
    image, spec = torch.rand(64, 3, 32, 32), torch.randn(64, 1, 33, 40)
    with torch.no_grad():
        s = torch.einsum("bchw,bc->bhw", net.embed_image_map(image), net.embed_audio(spec)).amax(dim=(1, 2))
    label = (s.argsort().argsort() % 2).long()  # alternate along the scores' order: no relation to them
    net.calibrate_(image, spec, label)
    w, b = net.calibration.weight.item(), net.calibration.bias.item()
    assert w == pytest.approx(1.0 / s.double().std().item(), rel=1e-4)
    assert b == pytest.approx(-s.double().mean().item() / s.double().std().item(), rel=1e-4, abs=1e-6)
