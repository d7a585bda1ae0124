"""The scale switch, device choice and the plotly renderer that the book relies on."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

import avlib
from avlib.runtime import current_scale, select_device


def test_scale_comes_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AVLIB_SCALE", raising=False)
    assert current_scale() == "quick"
    monkeypatch.setenv("AVLIB_SCALE", " Colab ")
    assert current_scale() == "colab"
    assert current_scale("full") == "full"


def test_bad_scale_names_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVLIB_SCALE", "huge")
    with pytest.raises(ValueError, match="AVLIB_SCALE.*'huge'"):
        current_scale()
    with pytest.raises(ValueError, match="scale argument"):
        current_scale("tiny")


def test_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AVLIB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    device = select_device()
    if expected:
        assert device.type == expected
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("AVLIB_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device()


def test_book_renderer_gives_json_and_a_self_contained_html_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AVLIB_PLOTLY_RENDERER", "COLAB_RELEASE_TAG", "COLAB_GPU"):
        monkeypatch.delenv(name, raising=False)
    avlib.setup_plotly()
    assert pio.renderers.default == "avlib"
    bundle = pio.renderers["avlib"].to_mimebundle(go.Figure(go.Scatter(x=[0, 1], y=[1, 0])).to_dict())
    assert set(bundle) == {"application/vnd.plotly.v1+json", "text/html"}
    html = bundle["text/html"]
    assert "Plotly.newPlot" in html
    assert "cdn.plot.ly" not in html and "MathJax" not in html, "the page must not load plotly.js or MathJax again"
