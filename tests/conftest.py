"""Shared test settings: avlib's cache directory is a fresh temporary folder for every test (nothing is written to
the user's ~/.cache, and no test sees another's cache)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _avlib_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVLIB_CACHE", str(tmp_path_factory.mktemp("avlib-cache")))
