"""The separation U-Net of CAVL's supplement §6.4 and the CAVL visual representations of §3.3.2 (avlib.nets.unet)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avlib.nets.cavl import CAVLNet
from avlib.nets.unet import (
    CAVLGuide,
    SeparationUNet,
    VisuallyGuidedSeparator,
    masked_max_pool,
    sound_maker_index,
    tile_concat,
)

SMALL_V = (8, "M", 16, "M", 16)  # 32x32 image -> 8x8x16
SMALL_A = (8, "M", 16)  # 16x16 spectrogram -> 8x8x16


def small_cavl() -> CAVLNet:
    torch.manual_seed(0)
    return CAVLNet(visual_cfg=SMALL_V, audio_cfg=SMALL_A, embed_dim=12, k_audio=1, beta=5.0, batch_norm=True)


def test_tile_concat_matches_a_loop():
    torch.manual_seed(0)
    audio, visual = torch.randn(3, 5, 4, 6), torch.randn(3, 7)
    out = tile_concat(audio, visual)
    want = torch.empty(3, 12, 4, 6)
    for b in range(3):
        for h in range(4):
            for w in range(6):
                want[b, :, h, w] = torch.cat([audio[b, :, h, w], visual[b]])
    assert torch.equal(out, want)
    with pytest.raises(ValueError, match="visual"):
        tile_concat(audio, visual[:2])


def test_full_unet_layers_and_shapes_at_the_paper_spectrogram():
    net = SeparationUNet()
    convs = [layer[0] for layer in net.encoder]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 256, 512]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert all(isinstance(layer[1], nn.BatchNorm2d) and isinstance(layer[2], nn.LeakyReLU)
               and layer[2].negative_slope == 0.2 for layer in net.encoder)
    ups = [layer[0] for layer in net.decoder]
    assert all(isinstance(u, nn.ConvTranspose2d) and u.kernel_size == (4, 4) and u.stride == (2, 2) for u in ups)
    assert [u.out_channels for u in ups] == [512, 256, 128, 64, 32, 16]
    # inputs: bottleneck + tiled visual, then each decoder output + the mirrored encoder output
    assert [u.in_channels for u in ups] == [512 + 512, 512 + 256, 256 + 128, 128 + 64, 64 + 32, 32 + 16]
    assert all(isinstance(layer[1], nn.BatchNorm2d) and isinstance(layer[2], nn.ReLU) for layer in net.decoder)
    fc, bn, act = net.visual_fc
    assert (fc.in_features, fc.out_features, bn.num_features, act.negative_slope) == (512, 512, 512, 0.2)
    seen = {}
    net.encoder[-1].register_forward_hook(lambda m, a, out: seen.__setitem__("bottleneck", out.shape))
    net.decoder[0].register_forward_hook(lambda m, a, out: seen.__setitem__("concat", a[0].shape))
    net.eval()
    with torch.no_grad():
        mask = net(torch.randn(1, 1, 512, 432), torch.randn(1, 512))
    assert mask.shape == (1, 1, 512, 432)  # 432 frames are padded to 448 and the mask cropped back
    assert seen["bottleneck"] == (1, 512, 8, 7) and seen["concat"] == (1, 1024, 8, 7)
    assert ((mask > 0) & (mask < 1)).all()


def test_odd_sizes_are_padded_and_cropped_and_skips_carry_detail():
    torch.manual_seed(0)
    net = SeparationUNet(encoder_channels=(4, 8, 8), visual_dim=3, visual_channels=5).eval()
    spec = torch.randn(2, 1, 37, 45)
    out = net(spec, torch.randn(2, 3))
    assert out.shape == (2, 1, 37, 45)
    # one input pixel changes the mask near it through the first skip connection, more than far away
    bumped = spec.clone()
    bumped[:, :, 30, 5] += 5.0
    diff = (net(bumped, torch.randn(2, 3)) - out).abs()[0, 0]
    assert diff[28:33, 3:8].mean() > 10 * diff[:10, 30:].mean()


def test_the_visual_vector_changes_the_mask():
    torch.manual_seed(0)
    net = SeparationUNet(encoder_channels=(4, 8), visual_dim=3, visual_channels=4).eval()
    spec = torch.randn(1, 1, 16, 16).expand(2, -1, -1, -1)
    out = net(spec, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_unet_errors_name_the_argument():
    net = SeparationUNet(encoder_channels=(4, 8), visual_dim=3, visual_channels=4)
    with pytest.raises(ValueError, match="spec"):
        net(torch.randn(2, 2, 16, 16), torch.randn(2, 3))
    with pytest.raises(ValueError, match="visual"):
        net(torch.randn(2, 1, 16, 16), torch.randn(2, 4))
    with pytest.raises(ValueError, match="decoder_channels"):
        SeparationUNet(encoder_channels=(4, 8), decoder_channels=(8,))
    with pytest.raises(ValueError, match="visual_dim"):
        SeparationUNet(visual_dim=0)


def test_sound_maker_index_is_eq7():
    ca = torch.tensor([[[0.0, 0.0]], [[5.0, 5.0]]])  # (B=2, k_a=1, D=2)
    cv = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [0.1, -0.2]], [[1.0, 1.0], [4.0, 6.0], [9.0, 9.0]]])
    assert sound_maker_index(ca, cv).tolist() == [2, 1]
    with pytest.raises(ValueError, match="source"):
        sound_maker_index(ca, cv, source=1)
    with pytest.raises(ValueError, match="centers_v"):
        sound_maker_index(ca, cv[..., :1])


def test_masked_max_pool_matches_a_loop_and_ignores_the_background():
    torch.manual_seed(0)
    feat, mask = torch.rand(2, 3, 4, 5), torch.rand(2, 4, 5)
    want = torch.tensor([[max(float(mask[b, h, w] * feat[b, c, h, w]) for h in range(4) for w in range(5))
                          for c in range(3)] for b in range(2)])
    assert torch.allclose(masked_max_pool(feat, mask), want)
    feat = torch.zeros(1, 2, 2, 2)
    feat[0, :, 0, 0] = torch.tensor([9.0, 9.0])  # strong, but on the background
    feat[0, :, 1, 1] = torch.tensor([1.0, 2.0])  # on the object
    on_object = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    assert masked_max_pool(feat, on_object).tolist() == [[1.0, 2.0]]
    with pytest.raises(ValueError, match="mask"):
        masked_max_pool(feat, on_object[:, :1])


@pytest.mark.parametrize("representation", ["center", "mask"])
def test_cavl_guide_matches_the_net_and_stays_frozen(representation):
    cavl = small_cavl()
    image, spec = torch.rand(4, 3, 32, 32), torch.randn(4, 1, 16, 16)
    guide = CAVLGuide(cavl, representation)
    guide.train()
    assert not cavl.training and not any(p.requires_grad for p in cavl.parameters())
    got = guide(image, spec)
    with torch.no_grad():
        out = cavl(image, spec)  # an independent route: the net's own outputs and its trunk called directly
        trunk = cavl.visual(image)
    dist = torch.cdist(out["centers_a"][:, :1], out["centers_v"])[:, 0]  # (B, k_v)
    index = dist.argmin(1)
    assert torch.equal(got["index"], index)
    maps = out["visual_map"][torch.arange(4), index]
    assert torch.allclose(got["mask"], maps)
    if representation == "center":
        want = out["centers_v"][torch.arange(4), index]
        assert guide.out_dim == 12
    else:
        want = (trunk * maps[:, None]).amax(dim=(2, 3))
        assert guide.out_dim == 16
    assert got["visual"].shape == (4, guide.out_dim) and torch.allclose(got["visual"], want, atol=1e-6)
    running = [m.running_mean.clone() for m in cavl.modules() if isinstance(m, nn.BatchNorm2d)]
    guide(image, spec)  # in eval mode: the batch norms' statistics do not move
    assert all(torch.equal(a, m.running_mean) for a, m in
               zip(running, [m for m in cavl.modules() if isinstance(m, nn.BatchNorm2d)], strict=True))


def test_separator_constant_and_guided():
    torch.manual_seed(0)
    unet = SeparationUNet(encoder_channels=(4, 8), visual_dim=12, visual_channels=4)
    spec = torch.randn(2, 1, 16, 16)
    out = VisuallyGuidedSeparator(unet)(spec)
    assert torch.equal(out["visual"], torch.ones(2, 12)) and out["logits"].shape == (2, 1, 16, 16)
    guided = VisuallyGuidedSeparator(unet, CAVLGuide(small_cavl(), "center"))
    out = guided(spec, torch.rand(2, 3, 32, 32), torch.randn(2, 1, 16, 16))
    assert out["guide_mask"].shape == (2, 8, 8) and out["guide_index"].shape == (2,)
    with pytest.raises(ValueError, match="image and guide_spec"):
        guided(spec)
    with pytest.raises(ValueError, match="visual_dim"):
        VisuallyGuidedSeparator(unet, CAVLGuide(small_cavl(), "mask"))
