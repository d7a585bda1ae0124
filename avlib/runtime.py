"""Where and how big avlib runs: the device, the scale, where runs are kept, and the plotly renderer."""

from __future__ import annotations

import os
from pathlib import Path

import torch

SCALES = ("quick", "colab", "full")


def select_device(prefer: str | None = None) -> torch.device:
    """Pick the best available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the ``AVLIB_DEVICE`` environment variable) forces a device such as ``"cpu"`` or ``"cuda:1"``.
    """
    name = prefer or os.environ.get("AVLIB_DEVICE")
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"AVLIB_DEVICE/prefer asks for {name!r} but CUDA is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def current_scale(scale: str | None = None) -> str:
    """Return the run scale: ``scale`` if given, else ``AVLIB_SCALE``, else ``"quick"``.

    Raises ``ValueError`` naming the offending value when it is not one of ``quick``, ``colab``, ``full``.
    """
    source = "scale argument" if scale is not None else "AVLIB_SCALE"
    value = (scale if scale is not None else os.environ.get("AVLIB_SCALE", "quick")).strip().lower()
    if value not in SCALES:
        raise ValueError(f"{source} must be one of {', '.join(SCALES)}; got {value!r}")
    return value


def choose_scale(scale: str = "auto") -> str:
    """The scale a chapter runs at: an explicit ``scale`` wins, then ``AVLIB_SCALE``; ``"auto"`` is ``colab`` where a
    CUDA GPU is present and ``quick`` elsewhere. Prints what it chose and on which device."""
    if scale.strip().lower() != "auto":
        chosen, why = current_scale(scale), "asked for"
    elif os.environ.get("AVLIB_SCALE"):
        chosen, why = current_scale(), "from AVLIB_SCALE"
    else:
        chosen, why = ("colab", "a CUDA GPU is present") if torch.cuda.is_available() else ("quick", "no CUDA GPU")
    device = select_device()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type.upper()
    print(f"{chosen} scale ({why}) on {where}")
    return chosen


def run_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where a chapter keeps the run called ``name``: ``root`` if given, else ``AVLIB_RUNS``, else Google Drive's
    ``MyDrive/avlib-runs`` when Drive is mounted on Colab (so a run survives a disconnect), else ``./runs``."""
    if root is None:
        drive = Path("/content/drive/MyDrive")
        root = os.environ.get("AVLIB_RUNS") or (drive / "avlib-runs" if drive.is_dir() else Path("runs"))
    return Path(root) / name


def setup_plotly() -> None:
    """Register and select ``"avlib"``, a plotly renderer that draws in live notebooks and on the book's pages.

    Each figure becomes one output with two representations: plotly's own JSON mimetype, which JupyterLab, Notebook 7
    and VS Code draw with their plotly extension, and an HTML fragment that calls ``Plotly.newPlot`` on a page that
    already loaded plotly.js — as every page of the book does (book/_ext/avlib_book.py). The static pages thus draw
    offline and never load a second MathJax (plotly's own HTML renderers do, and clash with the book's math). On
    Colab the ``colab`` renderer is used; ``AVLIB_PLOTLY_RENDERER`` overrides either choice.
    """
    try:
        import plotly.io as pio
        from plotly.io.base_renderers import MimetypeRenderer, PlotlyRenderer
    except ImportError:  # plotly is a dependency, but keep `import avlib` working in minimal environments
        return

    class BookRenderer(MimetypeRenderer):
        def to_mimebundle(self, fig_dict: dict) -> dict:
            bundle = PlotlyRenderer().to_mimebundle(fig_dict)
            bundle["text/html"] = pio.to_html(
                fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False, validate=False
            )
            return bundle

    pio.renderers["avlib"] = BookRenderer()
    override = os.environ.get("AVLIB_PLOTLY_RENDERER")
    if override:
        pio.renderers.default = override
    elif "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ:
        pio.renderers.default = "colab"
    else:
        pio.renderers.default = "avlib"
