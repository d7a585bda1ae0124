"""Image transforms: shapes, ranges, and crops / colour jitter checked against naive and PIL references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageEnhance

from avlib.vision import (
    CAVLImageTransform,
    DMCImageTransform,
    DSOLImageTransform,
    L3ImageTransform,
    adjust_brightness,
    adjust_saturation,
    resize_short_side,
)


def _images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_l3_train_output_is_a_window_of_the_resized_image_possibly_flipped():
    x = _images(3, 60, 80)
    out = L3ImageTransform(train=True, size=40, resize=48, jitter=0.0)(x, generator=torch.Generator().manual_seed(1))
    assert out.shape == (3, 3, 40, 40)
    big = resize_short_side(x, 48)
    assert big.shape[-2:] == (48, 64)
    for b in range(3):  # naive search over every window and both orientations
        found = any(
            torch.allclose(out[b], cand[:, i : i + 40, j : j + 40])
            for cand in (big[b], big[b].flip(-1))
            for i in range(48 - 40 + 1)
            for j in range(64 - 40 + 1)
        )
        assert found, f"item {b} is not a crop of the resized image"


def test_l3_eval_is_centre_crop_and_full_scale_shape():
    x = _images(2, 300, 400)
    out = L3ImageTransform(train=False)(x)
    assert out.shape == (2, 3, 224, 224)
    ref = TF.center_crop(TF.resize(x, [256], antialias=True), [224, 224])
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=0)


def test_l3_is_reproducible_with_a_generator_and_keeps_range():
    x = _images(4, 64, 64)
    t = L3ImageTransform()
    a = t(x, generator=torch.Generator().manual_seed(7))
    b = t(x, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    assert a.shape == (4, 3, 224, 224) and a.min() >= 0 and a.max() <= 1
    assert t(x[0], generator=torch.Generator().manual_seed(7)).shape == (3, 224, 224)


def test_saturation_and_brightness_match_pil():
    x = _images(1, 16, 16, seed=3)
    pil = Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    xq = torch.from_numpy(np.array(pil)).permute(2, 0, 1)[None].float() / 255
    for factor in (0.7, 1.3):
        ref_sat = np.asarray(ImageEnhance.Color(pil).enhance(factor)).astype(np.float32) / 255
        ours_sat = adjust_saturation(xq, torch.tensor([factor]))[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours_sat, ref_sat, atol=2.5 / 255)
        ref_bri = np.asarray(ImageEnhance.Brightness(pil).enhance(factor)).astype(np.float32) / 255
        ours_bri = adjust_brightness(xq, torch.tensor([factor]))[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours_bri, ref_bri, atol=1.5 / 255)


def test_dmc_scales_to_minus_one_one():
    x = torch.zeros(2, 3, 64, 64)
    x[1] = 1.0
    out = DMCImageTransform()(x)
    assert out.shape == (2, 3, 256, 256)
    assert torch.allclose(out[0], torch.full_like(out[0], -1.0)) and torch.allclose(out[1], torch.ones_like(out[1]))


def test_cavl_keeps_unit_range():
    out = CAVLImageTransform()(_images(2, 64, 64))
    assert out.shape == (2, 3, 256, 256) and out.min() >= 0 and out.max() <= 1


def test_dsol_eval_matches_torchvision_reference():
    x = _images(2, 64, 64)
    out = DSOLImageTransform(train=False)(x)
    ref = TF.normalize(TF.center_crop(TF.resize(x, [256, 256], antialias=True), [224, 224]),
                       [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=0)
    assert DSOLImageTransform(train=True)(x).shape == (2, 3, 224, 224)


@pytest.mark.parametrize("bad, err", [
    (torch.zeros(2, 1, 8, 8), ValueError),
    (torch.zeros(8, 8), ValueError),
    (torch.zeros(3, 8, 8, dtype=torch.uint8), TypeError),
])
def test_bad_images_raise(bad, err):
    with pytest.raises(err, match="DMCImageTransform"):
        DMCImageTransform()(bad)
