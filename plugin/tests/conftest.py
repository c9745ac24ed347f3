"""Fixtures of the plugin's tests: Girder 5 from pytest-girder on mongomock (``--mock-db``, set in
plugin/pyproject.toml), slidelabel on SQLite with jobs run in the test's process.

No MongoDB server can be installed where these tests run, so Girder runs on mongomock, which
needs three patches, each for something Girder does that mongomock does not: codec options with
a ``tzinfo`` (and a ``document_class``) it refuses, its own cursor type that Girder's REST layer
must recognise to turn results into lists, and ``Cursor.count``, which pymongo 4 dropped but
Girder's models still call. A real deployment uses MongoDB (docs/deploy.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import mongomock
import mongomock.codec_options
import pytest
from girder.api import rest

SLIDES = Path(__file__).resolve().parents[3] / "shared" / "data" / "slides"


def _patch_mongomock() -> None:
    supported = mongomock.codec_options.is_supported

    def is_supported(options):
        if not options:
            return None
        stripped = {k: v for k, v in options._asdict().items() if k not in ("tzinfo", "document_class")}
        return supported(mongomock.codec_options.CodecOptions(**stripped))

    mongomock.codec_options.is_supported = is_supported
    if mongomock.collection.Cursor not in rest._MONGO_CURSOR_TYPES:
        rest._MONGO_CURSOR_TYPES = (*rest._MONGO_CURSOR_TYPES, mongomock.collection.Cursor)
    if not hasattr(mongomock.collection.Cursor, "count"):
        mongomock.collection.Cursor.count = lambda self, with_limit_and_skip=False: len(
            self._compute_results(with_limit_and_skip))


_patch_mongomock()


@pytest.fixture(scope="session")
def cmu_slide() -> Path:
    """OpenSlide's CMU-1-Small-Region.svs (2220 x 2967 px, 0.499 um/px)."""
    path = SLIDES / "CMU-1-Small-Region.svs"
    if not path.exists():
        pytest.skip(f"needs the shared test data at {path}")
    return path


@pytest.fixture(autouse=True)
def slidelabel_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """slidelabel's settings for the plugin, set before the ``server`` fixture loads it: data and
    SQLite in the test's folder, an in-memory broker (the tests run jobs themselves) and no
    job-list thread (the tests mirror jobs by hand)."""
    data = tmp_path / "slidelabel"
    monkeypatch.setenv("SLIDELABEL_DATA_DIR", str(data))
    monkeypatch.setenv("SLIDELABEL_DB", f"sqlite:///{data / 'slidelabel.sqlite'}")
    monkeypatch.setenv("SLIDELABEL_BROKER", "memory://")
    monkeypatch.setenv("GIRDER_SLIDELABEL_JOB_MIRROR", "0")
    return data


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    """An HTTP client of the whole Girder server tree as a WSGI app (Girder's REST API and the
    routes grafted on it), as Girder's ASGI entry point serves it."""
    with httpx.Client(transport=httpx.WSGITransport(app=server.serverRoot), base_url="http://girder.test") as client:
        yield client
