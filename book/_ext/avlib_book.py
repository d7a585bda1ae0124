"""Sphinx glue for the avlib book: serve plotly.js from the book itself.

avlib's plotly renderer (avlib.runtime) writes each figure as a ``text/html`` output that calls ``Plotly.newPlot``
and expects plotly.js to be on the page already. This extension copies the plotly.js that ships inside the installed
plotly package into the build's ``_static`` folder and loads it early in every page's head — before require.js,
which ipywidgets pages load and which would otherwise capture plotly.js as an AMD module. Pages then draw offline
and with the exact plotly.js version the figures were written with.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx

PLOTLY_JS = "plotly.min.js"


def _copy_plotly_js(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    target = Path(app.outdir) / "_static" / PLOTLY_JS
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def setup(app: Sphinx) -> dict:
    app.add_js_file(PLOTLY_JS, priority=100)
    app.connect("build-finished", _copy_plotly_js)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
