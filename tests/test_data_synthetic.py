"""SynthOrchestra: determinism, ground truth consistency, scene families, the frame artifact, and difficulty."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from avlib.data import FAMILIES, SynthOrchestra, boxes_to_mask
from avlib.data.synthetic import default_categories


def test_scene_fields_shapes_and_ranges():
    w = SynthOrchestra(family="duet", n_silent=1, image_size=48, duration=1.0, seed=3)
    s = w[5]
    t, n = w.num_frames, 3
    assert s.frames.shape == (t, 3, 48, 48) and s.frames.dtype == torch.float32
    assert 0.0 <= s.frames.min() and s.frames.max() <= 1.0
    assert s.audio.shape == (16000,) and s.audio.dtype == torch.float32
    assert s.boxes.shape == (t, n, 4) and s.categories.shape == (n,) and s.sounding.shape == (n,)
    assert s.sounding.sum() == 2 and s.sources.shape == (2, 16000)
    assert s.categories.dtype == torch.int64 and s.sounding.dtype == torch.bool
    torch.testing.assert_close(s.source_categories, s.categories[s.sounding])
    torch.testing.assert_close(s.sources.sum(0), s.audio, atol=1e-5, rtol=0)
    assert (s.source_objects == torch.nonzero(s.sounding)[:, 0]).all()
    assert s.family == "duet" and s.index == 5 and s.fps == 25.0 and s.sample_rate == 16000


def test_deterministic_by_seed_and_index():
    a, b = SynthOrchestra(seed=1)[7], SynthOrchestra(seed=1)[7]
    assert torch.equal(a.frames, b.frames) and torch.equal(a.audio, b.audio) and torch.equal(a.boxes, b.boxes)
    c = SynthOrchestra(seed=2)[7]
    assert not torch.equal(a.audio, c.audio)
    assert not torch.equal(a.audio, SynthOrchestra(seed=1)[8].audio)


def test_selected_frames_equal_full_render():
    w = SynthOrchestra(family="c3", seed=4)
    full = w[2]
    part = w.scene(2, frames=[0, 17, 49])
    for row, k in enumerate([0, 17, 49]):
        assert torch.equal(part.frames[row], full.frames[k])
        assert torch.equal(part.boxes[row], full.boxes[k])
        assert torch.equal(part.frame(k), full.frame(k))
    assert torch.equal(part.audio, full.audio)
    with pytest.raises(IndexError, match="not rendered"):
        part.frame(5)
    audio_only = w.scene(2, frames=[])
    assert audio_only.frames.shape == (0, 3, 64, 64) and torch.equal(audio_only.audio, full.audio)


def test_boxes_are_tight_around_visible_pixels():
    s = SynthOrchestra(family="c4", seed=5, image_size=64)[1]
    for t in (0, 30):
        for j in range(s.categories.numel()):
            m = s.masks[t, j]
            ys, xs = torch.nonzero(m, as_tuple=True)
            expected = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            assert torch.equal(s.boxes[t, j], expected)
    # sounding_mask is the union of the sounding objects' boxes
    ref = torch.zeros(64, 64, dtype=torch.bool)
    for j in torch.nonzero(s.sounding)[:, 0].tolist():
        x0, y0, x1, y1 = s.boxes[0, j].int().tolist()
        ref[y0:y1, x0:x1] = True
    assert torch.equal(s.sounding_mask(0), ref)
    assert torch.equal(boxes_to_mask(s.boxes[0], 64, 64).any(0) & ref, ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_families_have_their_numbers_of_objects_and_sources(family):
    counts = {"solo": (1, 1), "duet": (2, 2), "mosaic": (4, 2), "c1": (1, 1), "c2": (2, 2), "c3": (3, 3), "c4": (4, 4)}
    w = SynthOrchestra(family=family, seed=6, duration=0.5)
    for i in range(3):
        s = w.scene(i, frames=[0])
        assert (s.categories.numel(), int(s.sounding.sum())) == counts[family]
        assert s.sources.shape[0] == counts[family][1]
        assert s.categories.unique().numel() == s.categories.numel()  # distinct categories in a scene


def test_mosaic_puts_one_object_in_each_quadrant():
    s = SynthOrchestra(family="mosaic", seed=7, image_size=64)[0]
    centres = (s.boxes[0, :, :2] + s.boxes[0, :, 2:]) / 2
    quadrant = (centres[:, 1] >= 32).long() * 2 + (centres[:, 0] >= 32).long()
    assert sorted(quadrant.tolist()) == [0, 1, 2, 3]


def test_offscreen_and_empty_frames():
    w = SynthOrchestra(offscreen_prob=1.0, seed=8)
    s = w[0]
    assert s.sources.shape[0] == 2 and s.source_objects.tolist()[-1] == -1
    empty = SynthOrchestra(empty_frame_prob=1.0, seed=8)[0]
    assert empty.categories.numel() == 0 and empty.boxes.shape[1] == 0
    assert empty.sources.shape[0] == 1 and (empty.source_objects == -1).all()
    assert empty.audio.abs().max() > 0.1  # music plays over a frame without any instrument
    assert not empty.sounding_mask(0).any()


def test_48khz_and_other_rates_work():
    s = SynthOrchestra(sample_rate=48000, duration=1.0, seed=9, family="c2")[0]
    assert s.audio.shape == (48000,) and torch.isfinite(s.audio).all()
    power = torch.fft.rfft(s.audio.double()).abs() ** 2  # 1 Hz bins
    assert power[20000:].sum() < 1e-4 * power.sum()  # partials stop below 0.45 x rate: nothing folds back near Nyquist


def test_frame_artifact_is_a_click_at_every_frame_boundary_and_off_by_default():
    plain = SynthOrchestra(seed=10, duration=1.0)[0]
    marked = SynthOrchestra(seed=10, duration=1.0, frame_artifact=0.01)[0]
    diff = (marked.audio - plain.audio).numpy()
    nz = np.flatnonzero(np.abs(diff) > 1e-7)
    period = 16000 // 25
    assert set(nz % period) == {0, 1, 2}  # a 3-sample click starting at each multiple of the frame period
    assert len(np.unique(nz // period)) == 25
    np.testing.assert_allclose(diff[0:3], [0.01, -0.01, 0.005], atol=1e-6)


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="family"):
        SynthOrchestra(family="trio")
    with pytest.raises(ValueError, match="offscreen_prob"):
        SynthOrchestra(offscreen_prob=2.0)
    with pytest.raises(ValueError, match="mosaic"):
        SynthOrchestra(family="mosaic", n_categories=3)
    with pytest.raises(IndexError, match="outside"):
        SynthOrchestra(size=5)[5]


def test_categories_extend_beyond_the_named_ones_with_ontology_paths():
    cats = default_categories(15)
    assert len({c.name for c in cats}) == 15
    w = SynthOrchestra(n_categories=15, seed=0)
    assert w.ontology.num_categories == 15 and w.ontology.tree_distance(0, 12) == 2  # violin vs its variant


def _features(n: int):
    w = SynthOrchestra(size=n, seed=11, duration=1.0)
    spec, colour, labels = [], [], []
    for i in range(n):
        s = w.scene(i, frames=[0])
        frames = s.audio.numpy().reshape(-1, 400) * np.hanning(400)
        spec.append(np.log(np.abs(np.fft.rfft(frames, n=512)).mean(0) + 1e-4))
        colour.append(s.frames[0][:, s.masks[0, 0]].mean(1).numpy())
        labels.append(int(s.categories[0]))
    return np.array(spec), np.array(colour), np.array(labels)


def _best_single_feature_accuracy(x: np.ndarray, y: np.ndarray, n_train: int) -> float:
    """Best held-out accuracy of a nearest-class-mean classifier on one feature at a time."""
    best = 0.0
    for j in range(x.shape[1]):
        means = np.array([x[:n_train][y[:n_train] == k, j].mean() for k in range(8)])
        pred = np.abs(x[n_train:, j, None] - means[None]).argmin(1)
        best = max(best, float((pred == y[n_train:]).mean()))
    return best


def test_no_single_frequency_bin_or_colour_names_a_category_but_the_whole_is_learnable():
    spec, colour, y = _features(320)
    n_train = 240
    assert len(np.unique(y)) == 8
    # chance is 1/8: one frequency bin or one colour channel stays far from identifying the instrument ...
    assert _best_single_feature_accuracy(spec, y, n_train) < 0.5
    assert _best_single_feature_accuracy(colour, y, n_train) < 0.5
    # ... while a linear model on the whole (time-averaged) spectrum already does much better
    clf = LogisticRegression(max_iter=3000).fit(spec[:n_train], y[:n_train])
    assert clf.score(spec[n_train:], y[n_train:]) > 0.6
