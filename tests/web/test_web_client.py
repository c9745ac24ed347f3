"""The web client: its bundle is built from the sources beside it, its unit tests (Vitest) pass,
and it works in a real browser: tests/web/e2e.mjs drives headless Debian Chromium (playwright-core)
against a real ``slidelabel serve`` on a real slide.

The node-based tests are skipped, saying why, when node, the client's node_modules, Chromium or
the sample slide is missing; ``make test`` installs Chromium and the node modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "web_client"
BUNDLE = REPO / "slidelabel" / "server" / "static"
SLIDE = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
CHROMIUM = Path(os.environ.get("SLIDELABEL_CHROMIUM", "/usr/bin/chromium"))
#: What web_client/scripts/sourceDigest.ts digests.
DIGESTED = ("src", "index.html", "package-lock.json", "vite.config.ts")


def source_digest(root: Path) -> str:
    """sha256 over ``relative/path\\0content\\0`` of the client's sources in sorted path order."""
    paths = sorted(
        p.relative_to(root).as_posix()
        for name in DIGESTED
        for p in ([root / name] if (root / name).is_file() else (root / name).rglob("*"))
        if p.is_file()
    )
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode() + b"\0" + (root / path).read_bytes() + b"\0")
    return digest.hexdigest()


def _node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (CLIENT / "node_modules" / "vitest").is_dir():
        return "web_client/node_modules is missing: run `make web`"
    return None


def test_bundle_is_built_from_these_sources() -> None:
    info = BUNDLE / "build-info.json"
    assert info.is_file(), "the web client is not built: run `make web`"
    assert json.loads(info.read_text())["source_sha256"] == source_digest(CLIENT), (
        "slidelabel/server/static/ was built from other sources than web_client/: run `make web` and commit it")


@pytest.mark.skipif(_node_missing() is not None, reason=_node_missing() or "")
def test_unit_tests() -> None:
    run = subprocess.run(["node", "node_modules/vitest/vitest.mjs", "run"], cwd=CLIENT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def _browser_missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if not SLIDE.is_file():
        return f"the sample slide {SLIDE} is missing"
    return _node_missing()


@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
def test_in_the_browser(tmp_path: Path) -> None:
    """Log in, create a project, add and prepare the slide, label by click and brush, undo, retrain,
    label eight guided cards by keys, filter in review, export GeoJSON (see e2e.mjs)."""
    screenshots = tmp_path / "screenshots"
    env = {**os.environ, "SLIDELABEL_E2E_SCREENSHOTS": str(screenshots), "SLIDELABEL_E2E_SLIDE": str(SLIDE),
           "SLIDELABEL_E2E_PYTHON": sys.executable}
    run = subprocess.run(["node", str(REPO / "tests" / "web" / "e2e.mjs")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    print(run.stdout[-6000:], run.stderr[-3000:])
    assert run.returncode == 0, f"the browser test failed (screenshots in {screenshots}):\n{run.stdout[-4000:]}"


@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
def test_shapes_and_learning_dashboard_in_the_browser(tmp_path: Path) -> None:
    """Polygon and lasso label exactly the superpixels the server says they cover, Alt subtracts,
    undo restores, a 500-vertex polygon over ~7,000 superpixels is timed, Shift-click grows to
    similar and Enter accepts; the dashboard draws calibration, learning curve and stopping
    sentence of seeded epochs; the project page changes the normalisation (see shapes.mjs)."""
    screenshots = tmp_path / "screenshots"
    env = {**os.environ, "SLIDELABEL_E2E_SCREENSHOTS": str(screenshots), "SLIDELABEL_E2E_SLIDE": str(SLIDE),
           "SLIDELABEL_E2E_PYTHON": sys.executable}
    run = subprocess.run(["node", str(REPO / "tests" / "web" / "shapes.mjs")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    print(run.stdout[-6000:], run.stderr[-3000:])
    assert run.returncode == 0, f"the browser test failed (screenshots in {screenshots}):\n{run.stdout[-4000:]}"


@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
def test_smart_tool_with_segment_anything_in_the_browser(tmp_path: Path) -> None:
    """With a tiny random SamModel as SLIDELABEL_SAM_MODEL, S embeds the view, a rest draws the
    mask's outline (rest to painted frame timed, median printed), the wheel and right-click cycle
    the scales, a click labels exactly the superpixels the server said the mask covers, undo takes
    them back (see smart_sam.mjs)."""
    screenshots = tmp_path / "screenshots"
    env = {**os.environ, "SLIDELABEL_E2E_SCREENSHOTS": str(screenshots), "SLIDELABEL_E2E_SLIDE": str(SLIDE),
           "SLIDELABEL_E2E_PYTHON": sys.executable}
    env.pop("SLIDELABEL_SAM_MODEL", None)  # the script makes the tiny model
    run = subprocess.run(["node", str(REPO / "tests" / "web" / "smart_sam.mjs")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    print(run.stdout[-6000:], run.stderr[-3000:])
    assert run.returncode == 0, f"the browser test failed (screenshots in {screenshots}):\n{run.stdout[-4000:]}"


@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
def test_gallery_link_in_the_browser(tmp_path: Path) -> None:
    """The owner publishes a read-only link on the project page; a browser context with no login
    opens it and sees the slide with the labels overlay, the legend and the epoch's figures,
    calling only the link's GET routes; writes through it are refused; once the owner revokes it,
    it says it was revoked or never existed (see gallery.mjs)."""
    screenshots = tmp_path / "screenshots"
    env = {**os.environ, "SLIDELABEL_E2E_SCREENSHOTS": str(screenshots), "SLIDELABEL_E2E_SLIDE": str(SLIDE),
           "SLIDELABEL_E2E_PYTHON": sys.executable}
    run = subprocess.run(["node", str(REPO / "tests" / "web" / "gallery.mjs")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    print(run.stdout[-6000:], run.stderr[-3000:])
    assert run.returncode == 0, f"the browser test failed (screenshots in {screenshots}):\n{run.stdout[-4000:]}"


@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
def test_imported_cells_and_features_in_the_browser(tmp_path: Path) -> None:
    """Upload a GeoJSON of MoNuSeg nuclei on the slide (classifications as labels) and TRIDENT
    patch features on the project page, see the segment count and what was dropped, choose the
    imported features, retrain, label cells in guided mode and export the classified cells as
    QuPath GeoJSON that matches the uploaded polygons (see imports.mjs)."""
    screenshots = tmp_path / "screenshots"
    env = {**os.environ, "SLIDELABEL_E2E_SCREENSHOTS": str(screenshots), "SLIDELABEL_E2E_SLIDE": str(SLIDE),
           "SLIDELABEL_E2E_PYTHON": sys.executable}
    run = subprocess.run(["node", str(REPO / "tests" / "web" / "imports.mjs")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    print(run.stdout[-6000:], run.stderr[-3000:])
    assert run.returncode == 0, f"the browser test failed (screenshots in {screenshots}):\n{run.stdout[-4000:]}"
