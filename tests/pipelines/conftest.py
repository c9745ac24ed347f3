"""Fixtures of the pipelines' tests."""

from __future__ import annotations

import pytest
import tifffile


@pytest.fixture
def pages_built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pages tifffile builds (``[count]``); building many more than a check should
    raises at once, so a check that walks a loop fails instead of running for ever."""
    built = [0]
    build = tifffile.TiffPage.__init__

    def counted(self, *args, **kwargs):
        built[0] += 1
        if built[0] > 50:
            raise RuntimeError("tifffile built more than 50 pages of a file the checks should have refused")
        build(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffPage, "__init__", counted)
    return built
