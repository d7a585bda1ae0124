"""The install cell at the top of every chapter, written from one setting: ``python book/_ext/colab_cells.py``.

Every notebook of the book starts with a code cell tagged ``colab-install``. On Colab it installs the avlib release
the notebook was written for — the package version of ``pyproject.toml`` from the repository named in
``_config.yml`` (``repository.url``, the one setting a fork changes), at the git tag ``v<version>`` — so that a
notebook and the library never drift apart; anywhere else it does nothing. It installs only avlib: Colab's own torch,
torchvision and torchaudio satisfy avlib's loose requirements and are kept. ``AVLIB_INSTALL`` overrides what is
installed (a wheel, a fork's branch), for tests and for developers.

``make sync`` runs this script (then pairs the notebooks); ``--check`` only reports cells that differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TAG = "colab-install"
CELL = re.compile(r"(```\{code-cell\} ipython3\n:tags: \[" + TAG + r"\]\n\n)(.*?)(\n```)", re.S)

TEMPLATE = '''\
# On Colab only: install the avlib release this notebook was written for (Colab's own torch is kept).
import importlib
import importlib.metadata
import os
import subprocess
import sys

AVLIB_VERSION = "{version}"
AVLIB = os.environ.get("AVLIB_INSTALL", "avlib @ git+{url}@v{version}")
if "google.colab" in sys.modules:
    try:
        installed = importlib.metadata.version("avlib")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != AVLIB_VERSION:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", AVLIB], check=True)
        importlib.invalidate_caches()'''


def package_version(root: Path = ROOT) -> str:
    """``project.version`` of ``pyproject.toml``."""
    match = re.search(r'^version\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.M)
    if match is None:
        raise ValueError(f"{root / 'pyproject.toml'}: no project version")
    return match.group(1)


def install_source(root: Path = ROOT) -> str:
    """The install cell's code for this checkout (repository URL from ``_config.yml``, version from pyproject)."""
    url = yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    return TEMPLATE.format(url=url, version=package_version(root))


def sync(root: Path = ROOT, check: bool = False, paths: list[Path] | None = None) -> list[Path]:
    """Rewrite (or, with ``check``, only compare) the install cell of every notebook source ``book/*.md`` (or of
    ``paths``); returns the files whose cell differed. A notebook source without the tagged cell is an error."""
    want, changed = install_source(root), []
    for md in paths if paths is not None else sorted((root / "book").glob("*.md")):
        text = md.read_text()
        if "kernelspec:" not in text:
            continue
        cells = CELL.findall(text)
        if len(cells) != 1:
            raise ValueError(f"{md}: expected one code cell tagged {TAG}, found {len(cells)}")
        if cells[0][1] != want:
            changed.append(md)
            if not check:
                md.write_text(CELL.sub(lambda m: m.group(1) + want + m.group(3), text))
    return changed


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a).resolve() for a in argv if a != "--check"] or None
    changed = sync(check=check, paths=paths)
    for md in changed:
        print(f"{md.relative_to(ROOT)}: install cell {'differs' if check else 'rewritten'}")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
