"""A million imported cells in the browser: label-to-recoloured-overlay in Chromium, time to the
first overlay, the page's JS heap and the server's peak memory, against 200,000 cells (the size of
today's superpixel slides) as the baseline in the same run.

For each size, in a scratch folder: a blank pyramidal slide whose side grows with the square root
of the cell count (65,536 px for 1,000,000, the density of benchmarks/objects.py), a GeoJSON of
real MoNuSeg nucleus outlines on a jittered grid (benchmarks/objects.py's builders), imported with
:func:`~slidelabel.services.segment_import.import_segments` (the service the CLI calls) in a child
process; a project on an SQLite database whose slide has those cells as its segments; then
``slidelabel serve`` on it and benchmarks/objects_browser.mjs in headless Chromium (as the web
tests drive it): open the labelling view, label cells by click (the app's own ``label-to-overlay``
measure: the click to the end of the frame that shows the new colour) and by brush (a stroke's
mouse move to the end of its frame), read the JS heap. The server's peak resident memory is the
sum of the peaks (VmHWM) of the serve process and its workers, read before it stops.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/objects_browser.py [--cells 1000000] [--baseline 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objects import blank_slide, cells_geojson, child, nucleus_shapes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "benchmark", "benchmark-password"
RECOLOUR_TARGET_MS = 50


def slide_side(cells: int) -> int:
    """Level-0 side (px, a multiple of 256) giving ``cells`` the density of 1,000,000 on 65,536 px."""
    return max(4096, int(round(65_536 * (cells / 1_000_000) ** 0.5 / 256)) * 256)


def imported_cells(scratch: Path, cells: int, downsample: int) -> dict:
    """Slide, GeoJSON and imported segments of ``cells`` cells under ``scratch`` (kept between runs)."""
    side = slide_side(cells)
    scratch.mkdir(parents=True, exist_ok=True)
    slide, geojson, segments = scratch / "slide.tiff", scratch / "cells.geojson", scratch / "segments"
    if not slide.exists():
        blank_slide(slide, side)
    if not geojson.exists():
        cells_geojson(geojson, side, cells, nucleus_shapes())
    result: dict = {"slide_px": side}
    if not (segments / "manifest.json").exists():
        shutil.rmtree(segments, ignore_errors=True)
        result["import"] = child(
            "import time\n"
            "from slidelabel.services.segment_import import import_segments\n"
            "from slidelabel.pipelines.importers.segments import ImportOptions\n"
            f"t = time.perf_counter(); r = import_segments({str(slide)!r}, {str(geojson)!r}, {str(segments)!r},"
            f" options=ImportOptions(downsample={downsample}))\n"
            "result = {'seconds': round(time.perf_counter() - t, 1), 'segments': r.segments}")
    return result


def project_on(scratch: Path, data_dir: Path, side: int) -> tuple[int, int, int]:
    """A project in ``data_dir`` whose one slide has the segments of ``scratch``: (project, slide, cells)."""
    from slidelabel.services.accounts import create_user
    from slidelabel.services.projects import NewCategory, create_project
    from slidelabel.store.database import Database, migrate
    from slidelabel.store.layout import ProjectFiles
    from slidelabel.store.models import Slide
    from slidelabel.store.segment_sources import SOURCES_FILE, read_segment_sources

    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    database = Database(f"sqlite:///{data_dir / 'slidelabel.sqlite'}")
    migrate(database.engine)
    n = int(read_segment_sources(scratch / "segments" / SOURCES_FILE).ids_N.size)
    with database.session(write=True) as session:
        owner = create_user(session, USER, PASSWORD)
        project = create_project(session, owner, "cells", categories=[NewCategory("Tumor"), NewCategory("Lymphocyte")])
        slide = Slide(project_id=project.id, name="cells", path=str(scratch / "slide.tiff"), width=side,
                      height=side, mpp=0.25, superpixels=n)
        session.add(slide)
        session.flush()
        project_id, slide_id = project.id, slide.id
    database.dispose()
    files = ProjectFiles(data_dir, project_id)
    files.slide_dir(slide_id).mkdir(parents=True)
    files.superpixels(slide_id).symlink_to(scratch / "segments")
    return project_id, slide_id, n


def group_peak_rss_mb(group: int) -> dict:
    """Peak resident memory (VmHWM, MB) of each process of process group ``group`` (the server
    and its job workers) and their sum (shared pages counted once per process)."""
    peaks = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            hwm = next(line for line in (stat.parent / "status").read_text().splitlines() if line.startswith("VmHWM:"))
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            peaks.append({"command": " ".join(command.split()[1:5]), "peak_mb": round(int(hwm.split()[1]) / 1024, 1)})
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    return {"sum_mb": round(sum(p["peak_mb"] for p in peaks), 1), "processes": peaks}


def wait_for(url: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    """Returns once ``url`` answers; raises when ``server`` exits or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"slidelabel serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"slidelabel serve did not answer at {url} in {timeout_s} s")


def measure(scratch: Path, side: int, *, clicks: int, strokes: int) -> dict:
    """Serve the project on ``scratch`` and drive Chromium over it; the browser's figures plus the server's memory."""
    data_dir = scratch / "data"
    project_id, slide_id, n = project_on(scratch, data_dir, side)
    port_probe = __import__("socket").socket()
    port_probe.bind(("127.0.0.1", 0))
    port = port_probe.getsockname()[1]
    port_probe.close()
    admin = f"bench-{uuid.uuid4()}"
    log = open(data_dir / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "slidelabel.cli.main", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "SLIDELABEL_ADMIN_PASSWORD": admin})
    try:
        wait_for(f"http://127.0.0.1:{port}/", server)
        out = subprocess.run(
            ["node", str(REPO / "benchmarks" / "objects_browser.mjs"), f"http://127.0.0.1:{port}", USER, PASSWORD,
             str(project_id), str(slide_id), str(side), str(clicks), str(strokes)],
            cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
        peak = group_peak_rss_mb(server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    if out.returncode:
        raise RuntimeError(f"objects_browser.mjs failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}\n"
                           f"server log:\n{(data_dir / 'server.log').read_text()[-3000:]}")
    return {"segments": n, **json.loads(out.stdout.strip().splitlines()[-1]), "server_peak_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=200_000, help="cells of the baseline slide")
    parser.add_argument("--downsample", type=int, default=2, help="label map level (2: 20x, 0.5 um/px)")
    parser.add_argument("--clicks", type=int, default=20, help="cells labelled by click")
    parser.add_argument("--strokes", type=int, default=4, help="brush strokes")
    parser.add_argument("--scratch", type=Path, default=None, help="kept between runs: slides and imports are reused")
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="slidelabel-objects-browser-"))
    runs = {}
    for cells in dict.fromkeys([args.baseline, args.cells]):
        started = time.perf_counter()
        built = imported_cells(scratch / str(cells), cells, args.downsample)
        built["setup_seconds"] = round(time.perf_counter() - started, 1)
        runs[str(cells)] = {**built, **measure(scratch / str(cells), built["slide_px"], clicks=args.clicks, strokes=args.strokes)}
    target = runs[str(args.cells)]
    print(json.dumps({
        "runs": runs, "target_recolour_ms": RECOLOUR_TARGET_MS,
        "meets_target": {"click_p95": target["click_to_overlay_ms"]["p95"] < RECOLOUR_TARGET_MS,
                         "brush_p95": target["brush_to_overlay_ms"]["p95"] < RECOLOUR_TARGET_MS},
        "scratch": str(scratch),
    }, indent=2))


if __name__ == "__main__":
    main()
