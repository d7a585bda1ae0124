"""Tests of the shared plotly helpers in avlib.viz."""

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from plotly.subplots import make_subplots

from avlib.viz import heatmap_grid, history_figure, slider_figure, to_rgb


def test_to_rgb_range_and_layout():
    img = torch.zeros(3, 2, 4)
    img[0, 1, 3] = 1.0
    img[2, 0, 0] = 0.5
    out = to_rgb(img)
    assert out.shape == (2, 4, 3) and out.dtype == np.uint8
    assert out[1, 3, 0] == 255 and out[0, 0, 2] == 128 and out.sum() == 255 + 128
    assert to_rgb(torch.full((3, 1, 1), -1.0), value_range=(-1.0, 1.0)).max() == 0
    with pytest.raises(ValueError, match="3, H, W"):
        to_rgb(torch.zeros(2, 2))


def test_slider_toggles_exactly_one_group():
    steps = [[go.Scatter(y=[i]), go.Scatter(y=[i, i])] for i in range(3)]
    fig = slider_figure(steps, ["a", "b", "c"], prefix="x = ", active=1)
    assert len(fig.data) == 6
    assert [t.visible for t in fig.data] == [False, False, True, True, False, False]
    for s, step in enumerate(fig.layout.sliders[0].steps):
        vis = step.args[0]["visible"]
        assert vis == [k // 2 == s for k in range(6)] and step.label == "abc"[s]
    sub = slider_figure([[go.Scatter(y=[1])], [go.Scatter(y=[2])]], ["1", "2"], fig=make_subplots(rows=1, cols=2),
                        positions=[[(1, 2)], [(1, 2)]])
    assert all(t.xaxis == "x2" for t in sub.data)
    with pytest.raises(ValueError, match="label"):
        slider_figure(steps, ["a"])
    with pytest.raises(ValueError, match="same number"):
        slider_figure([[go.Scatter()], []], ["a", "b"])


def test_heatmap_grid_and_history():
    img = np.zeros((4, 4, 3), np.uint8)
    fig = heatmap_grid([img, img, img], [np.ones((4, 4)), None, np.zeros((4, 4))], ["a", "b", "c"], cols=2)
    assert [type(t).__name__ for t in fig.data] == ["Image", "Heatmap", "Image", "Image", "Heatmap"]
    with pytest.raises(ValueError, match="equal length"):
        heatmap_grid([img], [], ["a"])
    hist = [{"step": 1, "loss": 2.0, "acc": 0.1}, {"step": 2, "loss": 1.0}]
    fig = history_figure(hist, keys=("loss", "acc", "missing"))
    assert [t.name for t in fig.data] == ["loss", "acc"] and list(fig.data[0].y) == [2.0, 1.0]


def test_heatmaps_are_shown_on_their_own_range():
    """A map whose values span a narrow band must not be drawn as one tint on a fixed 0-1 scale."""
    from avlib.viz import display_range

    narrow = 0.3 + 0.05 * np.random.default_rng(0).random((6, 6))
    shown = display_range(narrow)
    assert shown.min() == 0.0 and shown.max() == 1.0
    np.testing.assert_allclose(shown, (narrow - narrow.min()) / (narrow.max() - narrow.min()))
    assert np.all(display_range(np.full((3, 3), 0.4)) == 0.0)
    img = np.zeros((6, 6, 3), dtype=np.uint8)
    fig = heatmap_grid([img], [narrow], ["a"])
    np.testing.assert_allclose(np.asarray(fig.data[1].z), shown)
    raw = heatmap_grid([img], [narrow], ["a"], normalize=False)
    np.testing.assert_allclose(np.asarray(raw.data[1].z), narrow)
