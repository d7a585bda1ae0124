"""Build the book — the one run of every chapter in ``make test`` — and look at every page in a real browser.

The build is the book's own (``_config.yml``: ``execute_notebooks: force``, ``allow_errors: false``, ``show_tb``),
run with ``-W -n --keep-going`` as ``make book`` does, at ``AVLIB_SCALE`` (``quick`` under ``make test``). A chapter's
failing cell (its own ``assert``) is a build warning: ``test_the_book_builds_and_every_chapter_runs_once`` fails and
names the chapter, the cell's source and the traceback. The pages then carry the outputs of that one run, and every
page of the table of contents is opened in headless Chromium with the network blocked (every request to a host other
than the local test server is aborted and recorded; none may be attempted): no page errors, every plotly figure
drawn, every heatmap visibly varying, math typeset by the book's own MathJax, audio players loadable. A full-page
screenshot of every page lands in ``_build/render/`` (the build itself in ``_build/render/_build/html``, its log in
``_build/render/build.log``).
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml
from PIL import Image
from playwright.sync_api import Browser, Page, Route, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "render"
HTML = OUT / "_build" / "html"
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
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
BUILD_TIMEOUT_S = 2700
# A heatmap is "visibly varying" when the spread of its pixels' luminance (5th to 95th percentile, 0-255, with the
# image it is drawn over hidden) reaches this: a map shown with a fixed zmin/zmax over a narrow band of values paints
# one flat tint, well below it (REFERENCE.md §4).
HEATMAP_MIN_CONTRAST = 24.0
# Pages whose chapter lets the reader listen (the players must be there, and load, on the static page).
PAGES_WITH_AUDIO = {"book/05_separation"}

# The whole build runs inside the first test that needs it.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 600)


def _toc_docnames() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                names.append(entry["file"])
            for key in ("chapters", "sections", "parts"):
                walk(entry.get(key, []))

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return [str(Path(name).with_suffix("")) for name in names]


TOC_PAGES = _toc_docnames()
NOTEBOOK_PAGES = [name for name in TOC_PAGES if "\nkernelspec:" in (ROOT / f"{name}.md").read_text()]


# --------------------------------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FRAME = re.compile(r'^\s+File "([^"]+)"')
# The chapter's kernel logs an exception raised inside its own ZMQ message handling ("Uncaught exception in ZMQStream
# callback": a race in ipykernel's sockets, seen once in CI at kernel shutdown). Such a traceback is the kernel
# transport's, not the chapter's, when every frame of it lies in these packages or the standard library.
_KERNEL_TRANSPORT = ("/zmq/", "/tornado/", "/ipykernel/", "/jupyter_client/")


def _traceback_after(lines: list[str], i: int) -> int:
    """The index of the last line of the traceback(s) that start at ``lines[i + 1]`` (``i`` when none does)."""
    end = i
    k = i + 1
    while k < len(lines) and lines[k].startswith("Traceback (most recent call last)"):
        k += 1
        while k < len(lines) and lines[k].startswith((" ", "\t")):
            k += 1
        if k < len(lines):  # the exception's own line
            end = k
            k += 1
        while k < len(lines) and (not lines[k].strip() or lines[k].startswith(("During handling", "The above"))):
            k += 1
    return end


def _is_kernel_transport(block: list[str]) -> bool:
    if "zmqstream callback" not in block[0].lower():
        return False
    frames = [m.group(1) for line in block if (m := _FRAME.match(line))]
    stdlib = os.path.dirname(os.__file__)
    return bool(frames) and all(
        any(part in path for part in _KERNEL_TRANSPORT) or (path.startswith(stdlib) and "site-packages" not in path)
        for path in frames
    )


class Build:
    def __init__(self, returncode: int, log: str) -> None:
        self.returncode = returncode
        self.log = log
        self.problems, self.kernel_transport = self._read()

    def executions(self, docname: str) -> int:
        return self.log.count(f"{ROOT / docname}.md: Executing notebook")

    def _read(self) -> tuple[list[str], list[str]]:
        """The build's warnings and errors (a chapter's failed execution with its cell and traceback; a logged error
        with the traceback after it), and apart from them the kernel-transport tracebacks (``_KERNEL_TRANSPORT``)."""
        problems, transport = [], []
        lines = self.log.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if "Executing notebook failed" in line:
                block = [line]
                while i + 1 < len(lines) and "[mystnb.exec]" not in block[-1]:
                    i += 1
                    block.append(lines[i])
                # nbclient's own stack says nothing about the chapter: keep from "the following cell" on.
                start = next((k for k, text in enumerate(block) if "CellExecutionError:" in text), None)
                if start is not None and start > 1:
                    block = [block[0], *block[start:]]
                if len(block) > 80:  # the cell's source comes first, the error last: keep both
                    block = block[:45] + ["    [...]"] + block[-30:]
                problems.append("\n".join(block))
            elif re.search(r"\b(WARNING|ERROR|CRITICAL)\b:", line) or "Traceback (most recent call last)" in line:
                end = _traceback_after(lines, i - 1 if line.startswith("Traceback") else i)
                block = lines[i : max(end, i) + 1]
                (transport if _is_kernel_transport(block) else problems).append("\n".join(block))
                i = max(end, i)
            i += 1
        return problems, transport


@pytest.fixture(scope="module")
def build() -> Build:
    """``jupyter-book build`` of the repository with the book's own config: executes every chapter once."""
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(OUT / "_build", ignore_errors=True)  # no page of an earlier build may pass for this one
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(ROOT), "--path-output", str(OUT), "-W", "-n", "--keep-going"]
    env = {**os.environ, "AVLIB_SCALE": os.environ.get("AVLIB_SCALE", "quick")}
    # Its own process group, so that a timeout also ends the chapter's kernel, not only jupyter-book.
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = proc.communicate(timeout=BUILD_TIMEOUT_S)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        returncode, log = -1, f"{log}\nTIMEOUT: the build ran past {BUILD_TIMEOUT_S} s and was stopped"
    log = _ANSI.sub("", log)
    (OUT / "build.log").write_text(log)
    return Build(returncode, log)


@pytest.fixture(scope="module")
def built_book(build: Build) -> Path:
    if not (HTML / "index.html").exists():
        pytest.fail("the build wrote no pages:\n" + "\n".join(build.problems[-20:] or [build.log[-4000:]]))
    return HTML


def test_the_book_builds_and_every_chapter_runs_once(build: Build) -> None:
    # pytest.fail, not assert: pytest shortens long assertion messages, and this one carries the failing cells.
    problems = build.problems
    if build.returncode != 0 or problems:
        report = "\n\n".join(problems) if problems else build.log[-4000:]
        pytest.fail(f"the book build failed (exit {build.returncode}; log: {OUT / 'build.log'}):\n\n{report}", False)
    runs = {name: build.executions(name) for name in NOTEBOOK_PAGES}
    assert all(n == 1 for n in runs.values()), f"every chapter must be executed exactly once by the build: {runs}"
    for block in build.kernel_transport:  # said, not hidden: the pages' own checks below still see every output
        warnings.warn(f"a kernel logged an error in its own messaging (not a chapter's):\n{block}", stacklevel=1)


def test_the_build_log_reader_keeps_whole_tracebacks_and_sets_only_the_kernels_own_apart() -> None:
    site = "/x/.venv/lib/python3.11/site-packages"
    log = "\n".join([
        "/x/book/04_curriculum.md: Executing notebook using local CWD [mystnb]",
        "ERROR:tornado.general:Uncaught exception in ZMQStream callback",
        "Traceback (most recent call last):",
        f'  File "{site}/zmq/eventloop/zmqstream.py", line 565, in _run_callback',
        "    f = callback(*args, **kwargs)",
        f'  File "{site}/ipykernel/iostream.py", line 370, in _really_send',
        "    self.socket.send_multipart(msg, *args, **kwargs)",
        "zmq.error.ZMQError: Socket operation on non-socket",
        "ERROR:tornado.general:Uncaught exception in ZMQStream callback",
        "Traceback (most recent call last):",
        f'  File "{site}/zmq/eventloop/zmqstream.py", line 565, in _run_callback',
        "    f = callback(*args, **kwargs)",
        '  File "/x/avlib/engine/harness.py", line 80, in _sample',
        "    raise RuntimeError('sampler')",
        "RuntimeError: sampler",
        "/x/book/04_curriculum.md:12: WARNING: a figure without a caption",
        "/x/book/04_curriculum.md: Executed notebook in 1.00 seconds [mystnb]",
    ])
    build = Build(0, log)
    assert len(build.kernel_transport) == 1 and build.kernel_transport[0].endswith("Socket operation on non-socket")
    assert len(build.problems) == 2
    assert "avlib/engine/harness.py" in build.problems[0] and build.problems[0].endswith("RuntimeError: sampler")
    assert build.problems[1].endswith("a figure without a caption")


# --------------------------------------------------------------------------------------------------------------------
# Static checks of the built HTML
# --------------------------------------------------------------------------------------------------------------------


class _Assets(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            if a.get("src"):
                self.scripts.append(a["src"] or "")
            else:
                self._in_script = True
        elif tag == "link" and "stylesheet" in (a.get("rel") or "") and a.get("href"):
            self.styles.append(a["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def _is_remote(url: str) -> bool:
    return bool(urlsplit(url).scheme in ("http", "https") or url.startswith("//"))


def test_every_page_loads_only_local_scripts(built_book: Path) -> None:
    remote = []
    pages = sorted(built_book.rglob("*.html"))
    assert len(pages) >= len(TOC_PAGES)
    for path in pages:
        assets = _Assets()
        assets.feed(path.read_text(errors="replace"))
        name = path.relative_to(built_book)
        remote += [f"{name}: <script src={src}>" for src in assets.scripts if _is_remote(src)]
        remote += [f"{name}: <link rel=stylesheet href={href}>" for href in assets.styles if _is_remote(href)]
        # A script loader's address in an inline script (thebe's THEBE_JS_URL, a CDN require.js path, ...).
        for body in assets.inline:
            remote += [f"{name}: inline script names {m}" for m in re.findall(r"https?://[^\s\"'<>]+?\.js\b", body)]
    assert not remote, "pages must load nothing from the network:\n" + "\n".join(remote[:40])
    intro = (built_book / f"{TOC_PAGES[0]}.html").read_text()
    assert "_static/mathjax/tex-mml-chtml.js" in intro, "MathJax must come from the book's _static"
    assert (built_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_colab_button_opens_the_paired_notebook(built_book: Path) -> None:
    page = (built_book / "book" / "intro.html").read_text()
    assert "colab.research.google.com/github/" in page
    assert "/blob/main/book/intro.ipynb" in page, "the Colab launch button must open the paired .ipynb"


# --------------------------------------------------------------------------------------------------------------------
# Every page in Chromium, offline
# --------------------------------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture(scope="module")
def server(built_book: Path):
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs Debian's chromium (`make browser`)"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


# For each plotly figure: its visible traces by type, and what was drawn for them.
_FIGURES_JS = """
() => Array.from(document.querySelectorAll('.plotly-graph-div')).map((gd, index) => {
  const visible = {};
  for (const t of (gd._fullData || [])) if (t.visible === true) visible[t.type] = (visible[t.type] || 0) + 1;
  const len = (el, attr) => ((el.getAttribute(attr) || el.getAttribute('xlink:href') || '').length);
  const drawnScatter = Array.from(gd.querySelectorAll('.scatterlayer g.trace')).filter(g =>
    Array.from(g.querySelectorAll('path.js-line')).some(p => len(p, 'd') > 10) ||
    g.querySelectorAll('path.point').length > 0 || g.querySelectorAll('g.textpoint text').length > 0).length;
  const drawnBars = Array.from(gd.querySelectorAll('.barlayer g.trace')).filter(g =>
    Array.from(g.querySelectorAll('path')).some(p => len(p, 'd') > 5)).length;
  const drawnBoxes = Array.from(gd.querySelectorAll('.boxlayer g.trace')).filter(g =>
    Array.from(g.querySelectorAll('path')).some(p => len(p, 'd') > 5)).length;
  const images = sel => Array.from(gd.querySelectorAll(sel)).filter(im => len(im, 'href') > 100).length;
  const box = gd.getBoundingClientRect();
  return {
    index, id: gd.id, visible, width: box.width, height: box.height,
    svg: !!gd.querySelector('.main-svg'),
    drawn: {
      scatter: drawnScatter, bar: drawnBars, histogram: drawnBars, box: drawnBoxes,
      heatmap: images('.heatmaplayer image'), image: images('.imagelayer image'),
      table: gd.querySelectorAll('.table .cell-text').length > 0 ? (visible.table || 0) : 0,
    },
  };
})
"""

# Math: Sphinx's math nodes, how many MathJax typeset, its errors, and any TeX left as text outside code.
_MATH_JS = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const article = document.querySelector('article') || document.body;
  const nodes = Array.from(article.querySelectorAll('.math'));
  const clone = article.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight, .plotly-graph-div')
       .forEach(el => el.remove());
  return {
    mathjax: !!(window.MathJax && MathJax.version), version: window.MathJax && MathJax.version,
    nodes: nodes.length, typeset: nodes.filter(n => n.querySelector('mjx-container')).length,
    containers: article.querySelectorAll('mjx-container').length,
    errors: Array.from(article.querySelectorAll('mjx-merror')).map(e => e.textContent).slice(0, 5),
    text: clone.textContent,
  };
}
"""

_AUDIO_JS = """
async () => Promise.all(Array.from(document.querySelectorAll('audio')).map(async (a, index) => {
  await new Promise(done => {
    if (a.readyState >= 1 || a.error) return done();
    a.addEventListener('loadedmetadata', done, {once: true});
    a.addEventListener('error', done, {once: true});
    a.querySelectorAll('source').forEach(s => s.addEventListener('error', done, {once: true}));
    setTimeout(done, 20000);
    a.preload = 'auto';
    a.load();
  });
  const src = a.currentSrc || a.src || (a.querySelector('source') || {}).src || '';
  let bytes = -1;
  try { const r = await fetch(src); bytes = r.ok ? (await r.arrayBuffer()).byteLength : -r.status; } catch (e) {}
  return {index, src: src.slice(0, 48), readyState: a.readyState, duration: a.duration,
          error: a.error ? a.error.code : null, bytes};
}))
"""

# Fit: code and output blocks whose text runs past their right edge (a reader cannot see the end of the line), figures
# wider than the page's column, and text inside a figure (titles, subplot titles, axis titles, slider labels) that
# overlaps other text or leaves the figure.
_FIT_JS = """
() => {
  const article = document.querySelector('article') || document.body;
  const column = article.getBoundingClientRect();
  const cut = Array.from(article.querySelectorAll('pre')).filter(p => p.scrollWidth > p.clientWidth + 2)
    .map(p => p.textContent.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '').slice(0, 80));
  const wide = [], clash = [], outside = [];
  Array.from(document.querySelectorAll('.plotly-graph-div')).forEach((gd, index) => {
    const g = gd.getBoundingClientRect();
    if (g.width > column.width + 2) wide.push({index, width: g.width, column: column.width});
    const texts = Array.from(gd.querySelectorAll(
      '.gtitle, .annotation-text, .xtitle, .ytitle, .slider-label, .slider-group .step-label, .legendtext'))
      .filter(t => t.textContent.trim() && t.getBoundingClientRect().width > 0)
      .map(t => ({text: t.textContent.trim().slice(0, 40), r: t.getBoundingClientRect()}));
    for (const t of texts)
      if (t.r.left < g.left - 1 || t.r.right > g.right + 1 || t.r.top < g.top - 1 || t.r.bottom > g.bottom + 1)
        outside.push({index, text: t.text});
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
      const a = texts[i].r, b = texts[j].r;
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 2 && h > 2) clash.push({index, a: texts[i].text, b: texts[j].text});
    }
  });
  return {cut, wide, clash, outside};
}
"""

_RAW_TEX = [
    (re.compile(r"\$\$"), "$$"),
    (re.compile(r"\\[(\[]"), "\\( or \\["),
    (re.compile(r"\\begin\{"), "\\begin{"),
    (re.compile(r"\$[^$\n]{0,80}\\[A-Za-z]{2,}"), "$...\\command"),
]


_HEATMAP_BOX_JS = """
([f, h]) => {
  const gd = document.querySelectorAll('.plotly-graph-div')[f];
  const image = gd.querySelectorAll('.heatmaplayer image')[h];
  image.scrollIntoView({block: 'center', inline: 'center'});
  const r = image.getBoundingClientRect(), p = gd.getBoundingClientRect();
  const x0 = Math.max(r.left, p.left, 0), y0 = Math.max(r.top, p.top, 0);
  const x1 = Math.min(r.right, p.right, window.innerWidth), y1 = Math.min(r.bottom, p.bottom, window.innerHeight);
  return {x: x0, y: y0, width: Math.max(0, x1 - x0), height: Math.max(0, y1 - y0)};
}
"""


def _heatmap_contrasts(page: Page) -> list[tuple[str, float]]:
    """Luminance spread (p95 - p5) of every drawn heatmap, from a screenshot, with the images under it hidden."""
    out = []
    counts = page.evaluate(
        "() => Array.from(document.querySelectorAll('.plotly-graph-div'))"
        ".map(gd => gd.querySelectorAll('.heatmaplayer image').length)"
    )
    hide = "f => document.querySelectorAll('.plotly-graph-div')[f].querySelectorAll('.imagelayer')"
    for f, n in enumerate(counts):
        if not n:
            continue
        page.evaluate(f"{hide}.forEach(l => l.style.visibility = 'hidden')", f)
        try:
            for h in range(n):
                where = f"figure {f + 1}, heatmap {h + 1}"
                box = page.evaluate(_HEATMAP_BOX_JS, [f, h])
                if box["width"] < 4 or box["height"] < 4:
                    out.append((f"{where} (not visible on the page)", 0.0))
                    continue
                png = page.screenshot(clip=box, animations="disabled")
                gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
                inner = gray[2:-2, 2:-2] if min(gray.shape) > 8 else gray
                p5, p95 = np.percentile(inner, [5, 95])
                out.append((where, float(p95 - p5)))
        finally:
            page.evaluate(f"{hide}.forEach(l => l.style.visibility = '')", f)
    return out


@pytest.mark.parametrize("docname", TOC_PAGES)
def test_page_renders_offline_in_chromium(docname: str, browser: Browser, server: str, built_book: Path) -> None:
    source = (built_book / f"{docname}.html").read_text()
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, service_workers="block")
    remote: list[str] = []

    def only_local(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in LOCAL_HOSTS:
            route.continue_()
        else:
            remote.append(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", only_local)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    try:
        page.goto(f"{server}/{docname}.html", wait_until="load", timeout=60_000)
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.plotly-graph-div'))"
            ".every(gd => gd._fullLayout && gd.querySelector('.main-svg'))",
            timeout=60_000,
        )
        math = page.evaluate(_MATH_JS)
        figures = page.evaluate(_FIGURES_JS)
        audio = page.evaluate(_AUDIO_JS)
        fit = page.evaluate(_FIT_JS)
        page.wait_for_timeout(300)
        page.screenshot(path=str(OUT / f"{Path(docname).name}.png"), full_page=True, animations="disabled")
        contrasts = _heatmap_contrasts(page)
    finally:
        context.close()

    problems: list[str] = []
    problems += [f"request to a remote host: {url}" for url in remote]
    problems += list(dict.fromkeys(errors))

    # Plotly: every figure drew every visible trace.
    for fig in figures:
        where = f"figure {fig['index'] + 1} ({fig['id']})"
        if not fig["svg"] or fig["width"] < 100 or fig["height"] < 100:
            problems.append(f"{where}: not drawn (svg={fig['svg']}, {fig['width']:.0f}x{fig['height']:.0f} px)")
        if not fig["visible"]:
            problems.append(f"{where}: no visible trace")
        for kind, n in fig["visible"].items():
            if kind not in fig["drawn"]:
                problems.append(f"{where}: trace type {kind!r} is not checked by this test; add it to _FIGURES_JS")
            elif fig["drawn"][kind] < n:
                problems.append(f"{where}: {fig['drawn'][kind]} of {n} visible {kind} traces drawn with data")
    if docname in NOTEBOOK_PAGES and "cell_output" not in source:
        problems.append("an executed chapter with no cell outputs on its page")

    # Heatmaps: visibly varying.
    drawn_heatmaps = sum(fig["drawn"]["heatmap"] for fig in figures)
    if len(contrasts) != drawn_heatmaps:
        problems.append(f"{drawn_heatmaps} heatmaps drawn but {len(contrasts)} measured")
    problems += [
        f"{where}: heatmap looks flat (luminance spread {c:.1f} < {HEATMAP_MIN_CONTRAST})"
        for where, c in contrasts
        if c < HEATMAP_MIN_CONTRAST
    ]

    # Fit: nothing cut off at the page's right edge, no text of a figure on top of other text or outside it.
    problems += [f"code or output line cut off at the right edge: {line!r}" for line in fit["cut"]]
    problems += [f"figure {w['index'] + 1} is {w['width']:.0f} px wide, the page column {w['column']:.0f} px"
                 for w in fit["wide"]]
    problems += [f"figure {c['index'] + 1}: text {c['a']!r} overlaps {c['b']!r}" for c in fit["clash"]]
    problems += [f"figure {o['index'] + 1}: text {o['text']!r} lies outside the figure" for o in fit["outside"]]

    # Math: typeset by MathJax where the page has any, no raw TeX left.
    if math["nodes"]:
        if not math["mathjax"]:
            problems.append("the page has math but MathJax did not load")
        if math["typeset"] < math["nodes"]:
            problems.append(f"MathJax typeset {math['typeset']} of {math['nodes']} math elements")
    problems += [f"MathJax error: {e}" for e in math["errors"]]
    for pattern, label in _RAW_TEX:
        for m in pattern.finditer(math["text"]):
            snippet = " ".join(math["text"][max(0, m.start() - 60) : m.end() + 60].split())
            problems.append(f"raw TeX ({label}) left in the text: ...{snippet}...")
            break

    # Audio: every player has loadable media; a page that plays its results has players at all.
    for a in audio:
        ok = a["readyState"] >= 1 and a["error"] is None and a["bytes"] > 44 and (a["duration"] or 0) > 0
        if not ok:
            problems.append(f"audio {a['index'] + 1} not loadable: {a}")
    if docname in PAGES_WITH_AUDIO and not audio:
        problems.append("no audio player on the page (its chapter plays the mixture and the separated sounds)")

    print(
        f"\n{docname}: {len(figures)} figures, heatmap contrast "
        f"{[round(c, 1) for _, c in contrasts]}, {math['typeset']}/{math['nodes']} math "
        f"({math['containers']} mjx-container, MathJax {math['version']}), {len(audio)} audio"
    )
    if problems:
        pytest.fail(f"{docname}.html:\n  " + "\n  ".join(problems), False)
