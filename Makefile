# `make test` and `make book` each work on a fresh machine by themselves: they create .venv when it is missing and
# install exactly what is pinned in constraints.txt, then run. Re-running skips the install when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.avlib-installed
SCALE ?= quick
# Chapters keep their runs in AVLIB_RUNS and load a finished one instead of training again (for Colab readers). Builds
# and tests must train from the code as it is: they get a fresh, empty run directory every time.
FRESH_RUNS = runs=$$(mktemp -d) && trap 'rm -rf "$$runs"' EXIT && AVLIB_RUNS=$$runs
CHAPTERS_MD := $(shell grep -l '^kernelspec:' book/*.md)
NOTEBOOKS := $(CHAPTERS_MD:.md=.ipynb)

.PHONY: test book sync lint unit notebooks render browser clean help

help:
	@echo "make test      - install if needed, then lint, unit tests, and the book: built once (every chapter executed"
	@echo "                 once, at AVLIB_SCALE=$(SCALE)) and every page checked offline in Chromium (tests/test_render.py)"
	@echo "make book      - install if needed, then build the HTML book into _build/html (chapters run at AVLIB_SCALE=$(SCALE))"
	@echo "make unit      - the tests without the book build (no browser)"
	@echo "make render    - only the book build and the browser checks (screenshots in _build/render/)"
	@echo "make notebooks - the chapters under nbval, e.g. one alone: make notebooks NOTEBOOKS=book/data.ipynb"
	@echo "make sync      - regenerate book/*.ipynb from book/*.md (outputs stripped)"

# torch, torchvision and torchaudio first, as a pinned trio (see REFERENCE.md §4), then avlib with its extras.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch torchvision
	$(BIN)/pip install -q -c constraints.txt torch torchaudio
	$(BIN)/pip install -q -c constraints.txt -e '.[book,dev,data]'
	@touch $@

# Debian's Chromium for the rendering check (the browser test needs a real browser; nothing is downloaded at run time).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

sync: $(STAMP)
	$(BIN)/python book/_ext/colab_cells.py
	$(BIN)/jupytext --to ipynb $(CHAPTERS_MD)

lint: $(STAMP)
	$(BIN)/ruff check .

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q --ignore=tests/test_render.py

# Not part of `make test` (the book build there runs every chapter once); for running a chapter by itself.
notebooks: $(STAMP)
	$(FRESH_RUNS) AVLIB_SCALE=$(SCALE) $(BIN)/python -m pytest -q --nbval-lax --nbval-cell-timeout=900 $(NOTEBOOKS)

render: $(STAMP) browser
	$(FRESH_RUNS) AVLIB_SCALE=$(SCALE) $(BIN)/python -m pytest -q -ra tests/test_render.py

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(FRESH_RUNS) AVLIB_SCALE=$(SCALE) $(BIN)/python -m pytest -q -ra --durations=15 tests

book: $(STAMP)
	$(FRESH_RUNS) AVLIB_SCALE=$(SCALE) $(BIN)/jupyter-book build . -W -n --keep-going
	@test -f _build/html/index.html && echo "Book built: _build/html/index.html"

clean:
	rm -rf _build
