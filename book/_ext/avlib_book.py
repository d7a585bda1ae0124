"""Sphinx glue for the avlib book: every script a page loads comes from the book itself.

- plotly.js. avlib's plotly renderer (avlib.runtime) writes each figure as a ``text/html`` output that calls
  ``Plotly.newPlot`` and expects plotly.js to be on the page already. This extension copies the plotly.js that ships
  inside the installed plotly package into the build's ``_static`` folder and loads it early in every page's head —
  before require.js, which ipywidgets pages load and which would otherwise capture plotly.js as an AMD module. Pages
  then draw offline and with the exact plotly.js version the figures were written with.
- MathJax. Jupyter Book 1 loads MathJax 3 from a CDN, so without a network a page shows raw LaTeX. The package
  ``sphinx-mathjax-offline`` (the ``book`` extra) ships MathJax 3.2.2; its files are copied to ``_static/mathjax``
  and ``mathjax_path`` points there. (Only its files are used, not its Sphinx extension.)
- thebe. sphinx-thebe (always on in Jupyter Book 1) adds an inline script declaring ``const THEBE_JS_URL`` — a CDN
  address — and ``sphinx-thebe.js``, which loads that address when live code is started. Sphinx 7 puts the inline
  script on every page twice (a ``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared`` page error).
  The book has no live-code button (``launch_buttons.thebe`` is not set), so both scripts are dropped from every
  page; with thebe enabled they stay, once each.
- page width. ``avlib.css`` (next to this file) wraps long code lines and outputs inside their blocks, so nothing is
  cut off at the right edge of the page.
- theme mode. Unless ``html_context`` names a ``default_mode``, pydata-sphinx-theme (under sphinx-book-theme) writes
  an empty one and every page logs the console error "Got invalid theme mode: ." on load; it is set to ``auto``
  (follow the reader's system), the mode the theme then falls back to anyway.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError

PLOTLY_JS = "plotly.min.js"
BOOK_CSS = "avlib.css"
MATHJAX_DIST = "sphinx-mathjax-offline"
MATHJAX_DIR = "mathjax"
MATHJAX_JS = f"{MATHJAX_DIR}/tex-mml-chtml.js"  # the component Jupyter Book's CDN address names


def _mathjax_source() -> Path:
    try:
        dist = importlib.metadata.distribution(MATHJAX_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ExtensionError(
            f"avlib_book: {MATHJAX_DIST} is not installed; install the book extra (pip install -e '.[book]')"
        ) from exc
    source = Path(str(dist.locate_file(f"{MATHJAX_DIST}/static/{MATHJAX_DIR}")))
    if not (source.parent / MATHJAX_JS).is_file():
        raise ExtensionError(f"avlib_book: {MATHJAX_DIST} has no {MATHJAX_JS} under {source.parent}")
    return source


def _use_local_mathjax(app: Sphinx, config: Config) -> None:
    _mathjax_source()  # fail at the start of a build, not at its end
    if "://" in (config.mathjax_path or "") or not config.mathjax_path:
        config.mathjax_path = MATHJAX_JS
    if not (config.html_context or {}).get("default_mode"):
        config.html_context = {**(config.html_context or {}), "default_mode": "auto"}


def _thebe_enabled(app: Sphinx) -> bool:
    options = app.config.html_theme_options or {}
    return bool((options.get("launch_buttons") or {}).get("thebe"))


def _local_scripts_only(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: object) -> None:
    """Drop sphinx-thebe's scripts (unless thebe is enabled) and any script Sphinx listed twice."""
    scripts = context.get("script_files")
    if not scripts:
        return
    keep_thebe = _thebe_enabled(app)
    seen: set[tuple] = set()
    kept = []
    for js in scripts:
        filename = str(getattr(js, "filename", js) or "")
        attributes = dict(getattr(js, "attributes", {}) or {})
        if not keep_thebe and ("sphinx-thebe" in filename or "THEBE_JS_URL" in attributes.get("body", "")):
            continue
        key = (filename, tuple(sorted(attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    context["script_files"] = kept


def _copy_assets(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    import plotly

    static = Path(app.outdir) / "_static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(plotly.__file__).parent / "package_data" / PLOTLY_JS, static / PLOTLY_JS)
    shutil.copytree(_mathjax_source(), static / MATHJAX_DIR, dirs_exist_ok=True)
    shutil.copyfile(Path(__file__).with_name(BOOK_CSS), static / BOOK_CSS)


def setup(app: Sphinx) -> dict:
    app.add_js_file(PLOTLY_JS, priority=100)
    app.add_css_file(BOOK_CSS)
    app.connect("config-inited", _use_local_mathjax)
    # After every other handler, so that scripts added per page are seen too.
    app.connect("html-page-context", _local_scripts_only, priority=900)
    app.connect("build-finished", _copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
