"""Every chapter is a pair: book/NAME.md (MyST, the source) and book/NAME.ipynb (for Colab), in sync and stripped.

The chapters themselves run once per ``make test``, in the book build of tests/test_render.py (``_config.yml``:
``execute_notebooks: force``, ``allow_errors: false``); their own ``assert`` cells are the checks. ``make notebooks``
still runs them under nbval, one by one if wished, but nothing in ``make test`` reads nbval's cell tags.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
NOTEBOOK_SOURCES = sorted(p for p in BOOK.glob("*.md") if "\nkernelspec:" in p.read_text())
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))


def _cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    return [
        (cell.cell_type, cell.source.strip(), sorted(cell.get("metadata", {}).get("tags", [])))
        for cell in notebook.cells
    ]


def test_the_book_has_notebook_chapters() -> None:
    assert any(p.name == "intro.md" for p in NOTEBOOK_SOURCES)


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.name)
def test_md_has_its_paired_ipynb_in_sync(source: Path) -> None:
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: run `make sync` (Colab opens the .ipynb)"
    from_md = _cells(jupytext.read(source))
    from_ipynb = _cells(nbformat.read(paired, as_version=4))
    assert from_md == from_ipynb, f"{source.name} and {paired.name} differ: run `make sync`"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_ipynb_is_paired_and_stripped(notebook: Path) -> None:
    assert notebook.with_suffix(".md").exists(), f"{notebook.name} has no MyST source {notebook.stem}.md"
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{notebook.name} carries outputs or execution counts in cells {dirty}: run `make sync`"


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.name)
def test_no_cell_relies_on_nbval(source: Path) -> None:
    """nbval tags (nbval-check-output, nbval-skip, ...) do nothing in the book build that runs the chapters."""
    tagged = [
        (i, tag)
        for i, cell in enumerate(jupytext.read(source).cells)
        for tag in cell.get("metadata", {}).get("tags", [])
        if tag.startswith("nbval")
    ]
    assert not tagged, (
        f"{source.name}: cells {tagged} carry nbval tags, which `make test` ignores (the chapters run in the book "
        "build): check outputs with `assert` in the cell; skip a cell with the `skip-execution` tag"
    )
