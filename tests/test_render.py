"""Build the book and look at it in a real browser: plotly figures must actually draw.

Plotly 6 and newer draw blank pages in Jupyter Book 1 unless plotly.js reaches the page (REFERENCE.md §4); this test
builds the book with the chapters' training left out (nbval runs them), opens the intro page in headless Chromium
and checks that the figure's traces were drawn. The screenshot lands in ``_build/render/``.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "render"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _render_config() -> Path:
    """The book's own config, executing only the pages that do not train (chapters are run by nbval)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["exclude_patterns"] = ["book/0*"]
    config["sphinx"]["local_extensions"] = {
        name: str((ROOT / path).resolve()) for name, path in config["sphinx"]["local_extensions"].items()
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "_config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def built_book() -> Path:
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(ROOT), "--config", str(_render_config()), "--path-output", str(OUT), "-n"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = OUT / "_build" / "html"
    assert (html / "index.html").exists()
    return html


@pytest.fixture(scope="module")
def server(built_book: Path):
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        pass


def test_colab_button_opens_the_paired_notebook(built_book: Path) -> None:
    page = (built_book / "book" / "intro.html").read_text()
    assert "colab.research.google.com/github/" in page
    assert "/blob/main/book/intro.ipynb" in page, "the Colab launch button must open the paired .ipynb"


def test_intro_plotly_figure_draws_in_chromium(server: str) -> None:
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs Debian's chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server}/book/intro.html", wait_until="load", timeout=60_000)
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
        figure = page.locator(".js-plotly-plot").first
        figure.scroll_into_view_if_needed()
        traces = page.evaluate("document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length")
        box = figure.bounding_box()
        drawn_points = page.evaluate(
            "Array.from(document.querySelectorAll('.js-plotly-plot .scatterlayer path.js-line'))"
            ".map(p => (p.getAttribute('d') || '').length).reduce((a, b) => a + b, 0)"
        )
        page.screenshot(path=str(OUT / "intro.png"))
        browser.close()
    assert traces == 3, f"expected the intro figure's 3 traces, found {traces}"
    assert box is not None and box["width"] > 300 and box["height"] > 200
    assert drawn_points > 200, "the lines of the figure have no path data: plotly did not draw"
    assert not [e for e in errors if "plotly" in e.lower()], errors
