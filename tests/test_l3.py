"""L3-Net (avlib.nets.l3, avlib.methods.l3): full-scale shapes of L3 Fig. 2, one optimisation step at batch 2 on the
CPU through the method's step, the AVC step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avlib.audio import make_frontend
from avlib.methods import get_method
from avlib.methods.avc import avc_step
from avlib.nets.l3 import L3Net, VGGSubnet

L3 = get_method("l3")


def _convs(net: nn.Module) -> list[nn.Conv2d]:
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


def test_vgg_subnet_structure_matches_figure_2():
    net = VGGSubnet(3, (64, 128, 256, 512))
    convs = _convs(net)
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [c.stride for c in convs] == [(2, 2)] + [(1, 1)] * 7
    assert convs[0].in_channels == 3 and VGGSubnet(1)._modules["features"][0][0].in_channels == 1
    # every conv is followed by batch norm and ReLU; exactly three 2x2 stride-2 pools in between
    layers = list(net.features)
    units = [m for m in layers if isinstance(m, nn.Sequential)]
    assert len(units) == 8
    assert all(isinstance(u[1], nn.BatchNorm2d) and isinstance(u[2], nn.ReLU) for u in units)
    pools = [m for m in layers if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == 2 and p.stride == 2 and p.padding == 0 for p in pools)


@torch.no_grad()
def test_vgg_subnet_full_scale_maps():
    torch.manual_seed(0)
    vision, audio = VGGSubnet(3).eval(), VGGSubnet(1).eval()
    assert vision.forward_maps(torch.randn(1, 3, 224, 224)).shape == (1, 512, 14, 14)
    assert audio.forward_maps(torch.randn(1, 1, 257, 199)).shape == (1, 512, 16, 12)


@torch.no_grad()
def test_first_stride_one_variant_keeps_twice_the_resolution():
    # shapes do not depend on the widths: narrow nets keep this test cheap
    vision = VGGSubnet(3, (4, 4, 4, 8), first_stride=1).eval()
    audio = VGGSubnet(1, (4, 4, 4, 8), first_stride=1).eval()
    assert vision.forward_maps(torch.randn(1, 3, 224, 224)).shape == (1, 8, 28, 28)
    assert audio.forward_maps(torch.randn(1, 1, 257, 199)).shape == (1, 8, 32, 24)


@torch.no_grad()
def test_pool4_is_the_maximum_over_every_position():
    torch.manual_seed(1)
    net = VGGSubnet(1, (4, 4, 8, 8)).eval()
    x = torch.randn(3, 1, 70, 50)
    maps = net.forward_maps(x)
    expected = torch.full((3, 8), -float("inf"))
    for i in range(maps.shape[2]):  # naive reference: scan every position
        for j in range(maps.shape[3]):
            expected = torch.maximum(expected, maps[:, :, i, j])
    torch.testing.assert_close(net(x), expected)


def test_vgg_subnet_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        VGGSubnet(3)(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="four block widths"):
        VGGSubnet(3, (8, 16, 32))
    with pytest.raises(ValueError, match="first_stride"):
        VGGSubnet(3, first_stride=3)


def test_l3_full_scale_shapes_and_one_step_on_cpu():
    cfg = L3.config("full")
    torch.manual_seed(0)
    net = L3.model(cfg)
    fc1, fc2 = net.fusion[0], net.fusion[2]
    assert fc1.weight.shape == (128, 1024) and fc2.weight.shape == (2, 128)
    batch = L3.example_batch(cfg, 2)
    assert batch["audio"].shape == (2, 48_000) and batch["image"].shape == (2, 3, 224, 224)
    spec = make_frontend(cfg.audio)(batch["audio"])
    assert spec.shape == (2, 1, 257, 199)
    with torch.no_grad():
        assert net.embed_image(batch["image"]).shape == (2, 512) and net.embed_audio(spec).shape == (2, 512)
        assert net(batch["image"], spec).shape == (2, 2)

    opt = L3.make_optimizer(cfg, net)
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["weight_decay"] == 1e-5
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    out = L3.step(cfg)(net, batch)
    opt.zero_grad()
    out["loss"].backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    opt.step()
    assert torch.isfinite(out["loss"])
    changed = [n for n, p in net.named_parameters() if not torch.equal(before[n], p.detach())]
    assert len(changed) == len(before)


def test_correspondence_logit_is_the_two_way_softmax():
    torch.manual_seed(2)
    net = L3Net((4, 4, 8, 8), fusion_hidden=8)
    image, spec, label = torch.rand(4, 3, 32, 32), torch.randn(4, 1, 33, 40), torch.tensor([1, 0, 1, 0])
    logits = net(image, spec)
    ce = F.cross_entropy(logits, label)
    bce = F.binary_cross_entropy_with_logits(net.correspondence_logit(image, spec), label.float())
    torch.testing.assert_close(ce, bce)
    # and the gradients agree too (autograd through both formulations)
    g_ce = torch.autograd.grad(ce, net.fusion[2].weight)[0]
    g_bce = torch.autograd.grad(bce, net.fusion[2].weight)[0]
    torch.testing.assert_close(g_ce, g_bce)


def test_avc_step_fn_loss_and_accuracy():
    torch.manual_seed(3)
    net = L3Net((4, 4, 8, 8), fusion_hidden=8)
    frontend = make_frontend(L3.config("quick").audio)
    batch = {
        "image": torch.rand(6, 3, 32, 32),
        "audio": torch.randn(6, 16_000) * 0.1,
        "label": torch.tensor([1, 0, 1, 0, 1, 0]),
    }
    out = avc_step(frontend)(net, batch)
    logit = net.correspondence_logit(batch["image"], frontend(batch["audio"]))
    torch.testing.assert_close(out["loss"], F.binary_cross_entropy_with_logits(logit, batch["label"].float()))
    pairs = zip(logit.tolist(), batch["label"].tolist(), strict=True)
    expected_acc = sum(int((lg > 0) == bool(lb)) for lg, lb in pairs) / 6
    assert out["acc"].item() == pytest.approx(expected_acc)
