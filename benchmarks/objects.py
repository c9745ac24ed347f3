"""A million imported cells on one slide: segment import, patch-feature import, retrain to queue
and the queue's latency, with time and memory.

Builds, in a scratch folder: a blank pyramidal slide (default 65,536 px square at 0.25 um/px, a
16 mm section at 40x), a GeoJSON of 1,000,000 nuclei whose outlines are real MoNuSeg nuclei
(connected components of the masks, traced with OpenCV), placed on a jittered grid, and a
TRIDENT-layout HDF5 of 1,048,576 patch features (64 px patches, 1024 dimensions). Then, each in a
child process so that its peak resident memory and CPU time are its own:

* ``import_segments`` and ``import_features`` (the services the CLI and the jobs call);
* ``learning``: a project on an SQLite database with the imported cells as its slide's segments
  and the imported features as its ``imported-uni-trident`` extractor, ``--labels`` cells
  labelled with their GeoJSON class; *retrain to queue* is one round of the loop at the project
  defaults (:func:`~slidelabel.services.learning_loop.run_epoch`: normalise, train, assess and
  calibrate, predict every cell, rank), the model, predictions and ranking written, and the first
  queue answer; *queue* times ``--requests`` calls of
  :func:`~slidelabel.services.queue.next_superpixels` (8 cards), labelling the first 4 cards of
  every 10th answer as a labeller would, against reading the project row (the baseline).

Prints JSON with the issue's targets next to the figures; CPU seconds are given too, since wall
time depends on who else uses the machine. The browser's recolour is measured by the web tests.

    .venv/bin/python benchmarks/objects.py [--cells 1000000] [--dim 1024] [--downsample 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import tifffile
from PIL import Image

MONUSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg-train"


def nucleus_shapes(limit_images: int = 6) -> list[np.ndarray]:
    """Outlines (K, 2) of real nuclei, relative to their bounding box."""
    shapes = []
    for path in sorted((MONUSEG / "masks").glob("*.png"))[:limit_images]:
        mask = np.asarray(Image.open(path)) > 127
        mask = mask if mask.ndim == 2 else mask[..., 0]
        count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
        for k in range(1, count):
            contours, _ = cv2.findContours((components == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            ring = contours[0][:, 0, :].astype(np.float64)
            if len(ring) >= 4 and np.ptp(ring, axis=0).max() < 60:
                shapes.append(ring - ring.min(axis=0) + 0.5)
    return shapes


def blank_slide(path: Path, side: int) -> None:
    """A pyramidal RGB TIFF of pale glass, 0.25 um/px."""
    tile = np.full((256, 256, 3), (236, 228, 234), np.uint8)
    levels = [side]
    while levels[-1] > 256:
        levels.append(levels[-1] // 2)
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        for level, size in enumerate(levels):
            tiles = (tile for _ in range((-(-size // 256)) ** 2))
            tiff.write(tiles, shape=(size, size, 3), dtype=np.uint8, tile=(256, 256), photometric="rgb",
                       compression="zlib", subifds=len(levels) - 1 if level == 0 else None,
                       subfiletype=1 if level else 0, resolution=(4e4 / 2**level, 4e4 / 2**level), resolutionunit="CENTIMETER")


def cells_geojson(path: Path, side: int, cells: int, shapes: list[np.ndarray], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    per_row = int(np.ceil(np.sqrt(cells)))
    step = side / per_row
    with open(path, "w") as file:
        file.write('{"type": "FeatureCollection", "features": [\n')
        for i in range(cells):
            row, col = divmod(i, per_row)
            ring = shapes[rng.integers(len(shapes))] + (col * step + rng.uniform(0, step / 4),
                                                        row * step + rng.uniform(0, step / 4))
            closed = np.vstack([ring, ring[:1]])
            coords = ",".join(["[%.1f,%.1f]"] * len(closed)) % tuple(closed.ravel().tolist())
            file.write(('' if i == 0 else ',\n') + '{"type":"Feature","geometry":{"type":"Polygon","coordinates":[['
                       + coords + ']]},"properties":{"classification":{"name":"' + ("Tumor" if i % 3 else "Lymphocyte") + '"}}}')
        file.write("\n]}\n")


def patches_h5(path: Path, side: int, patch: int, dim: int, seed: int = 0) -> int:
    corners = np.array([(x, y) for y in range(0, side, patch) for x in range(0, side, patch)], np.int64)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as file:
        coords = file.create_dataset("coords", data=corners)
        coords.attrs.update({"patch_size": patch, "patch_size_level0": patch, "level0_magnification": 40,
                             "target_magnification": 40, "overlap": 0, "name": "synthetic"})
        features = file.create_dataset("features", shape=(len(corners), dim), dtype=np.float32)
        for start in range(0, len(corners), 65_536):
            stop = min(start + 65_536, len(corners))
            features[start:stop] = rng.standard_normal((stop - start, dim), np.float32)
    return len(corners)


def child(code: str) -> dict:
    """Run ``code`` (which sets ``result``, a dict) in a fresh interpreter; returns ``result``
    with the child's peak resident memory, the part of it the imports of slidelabel took, and
    its CPU seconds (user + system, all threads)."""
    wrapped = ("import json, resource, sys\n"
               f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
               "import slidelabel.services.feature_import, slidelabel.services.segment_import\n"
               "loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
               + code + "\nusage = resource.getrusage(resource.RUSAGE_SELF)"
               "\nresult['peak_rss_mb'] = round(usage.ru_maxrss / 1024, 1)"
               "\nresult['cpu_seconds'] = round(usage.ru_utime + usage.ru_stime, 1)"
               "\nresult['rss_after_imports_mb'] = round(loaded / 1024, 1)\nprint(json.dumps(result))")
    out = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def learning_and_queue(scratch: Path, *, side: int, labels: int, requests: int, seed: int = 0) -> dict:
    """Retrain to queue and the queue's latency on the imported cells (see the module docstring)."""
    from sqlalchemy import insert

    from slidelabel.pipelines.models import Category, save_model
    from slidelabel.services.accounts import create_user
    from slidelabel.services.epochs import PredictionWriter
    from slidelabel.services.learning_loop import FileFeatures, LoopChoices, run_epoch
    from slidelabel.services.projects import NewCategory, ProjectChoices, create_project
    from slidelabel.services.queue import next_superpixels, ranking_of, write_ranking
    from slidelabel.store.database import Database, migrate
    from slidelabel.store.layout import ProjectFiles
    from slidelabel.store.models import Epoch, Label, Project, Slide
    from slidelabel.store.segment_sources import SOURCES_FILE, read_segment_sources

    data_dir = scratch / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    database = Database(f"sqlite:///{data_dir / 'slidelabel.db'}")
    migrate(database.engine)
    sources = read_segment_sources(scratch / "segments" / SOURCES_FILE)
    n = int(sources.ids_N.size)
    choices = ProjectChoices(extractor="imported-uni-trident")
    with database.session(write=True) as session:
        owner = create_user(session, "benchmark", "benchmark-password")
        project = create_project(session, owner, "cells", choices=choices,
                                 categories=[NewCategory("Tumor"), NewCategory("Lymphocyte")])
        slide = Slide(project_id=project.id, name="cells", path=str(scratch / "slide.tiff"), width=side, height=side,
                      mpp=0.25, superpixels=n)
        session.add(slide)
        session.flush()
        project_id, slide_id, user_id = project.id, slide.id, owner.id
        category_ids_C = np.array([c.id for c in project.categories])
    files = ProjectFiles(data_dir, project_id)
    files.slide_dir(slide_id).mkdir(parents=True)
    files.superpixels(slide_id).symlink_to(scratch / "segments")
    files.features(slide_id, choices.extractor).parent.mkdir()
    files.features(slide_id, choices.extractor).symlink_to(scratch / "features" / "uni-trident.zarr")

    def label(superpixels_M: np.ndarray, columns_M: np.ndarray) -> None:
        with database.session(write=True) as session:
            session.execute(insert(Label), [{"project_id": project_id, "slide_id": slide_id, "user_id": user_id,
                                             "superpixel": int(s), "category_id": int(category_ids_C[c])}
                                            for s, c in zip(superpixels_M, columns_M)])

    rng = np.random.default_rng(seed)
    labelled_M = np.sort(rng.choice(n, min(labels, n), replace=False)) + 1
    columns_M = (np.asarray(sources.class_names_N, dtype=object)[labelled_M - 1] == "Lymphocyte").astype(np.int64)
    label(labelled_M, columns_M)
    started = time.perf_counter()
    loop = LoopChoices(choices.extractor, choices.model, choices.strategy, choices.normalisation)
    staged = ProjectFiles(data_dir / "staged", project_id)
    staged.epoch_dir(0).mkdir(parents=True)
    outcome = run_epoch(FileFeatures({slide_id: files.features(slide_id, choices.extractor)}, loop.normalisation),
                        {slide_id: (labelled_M, columns_M)}, [Category("Tumor"), Category("Lymphocyte")], loop,
                        assessed=True, sink=PredictionWriter(staged, files, category_ids_C, None))
    learned = time.perf_counter()
    save_model(outcome.model, staged.model(0))
    pool, rows_R = outcome.pool, outcome.ranked_R
    probs_R_C = pool.probs_P_C[rows_R]
    write_ranking(staged.ranking(0), ranking_of(files, pool.slide_ids_P[rows_R], pool.superpixels_P[rows_R],
                                                outcome.scores_R, category_ids_C[probs_R_C.argmax(axis=1)],
                                                probs_R_C.max(axis=1)))
    files.epoch_dir(1).parent.mkdir(parents=True, exist_ok=True)
    staged.epoch_dir(0).rename(files.epoch_dir(1))
    with database.session(write=True) as session:
        session.add(Epoch(project_id=project_id, number=1, labels=int(labelled_M.size), metrics={}))
    with database.session() as session:
        first = next_superpixels(session, data_dir, session.get(Project, project_id), n=8)
    retrain_s = time.perf_counter() - started
    queue_ms, baseline_ms = [], []
    for request in range(requests):
        with database.session() as session:
            t0 = time.perf_counter()
            project = session.get(Project, project_id)
            _ = [c.id for c in project.categories]
            t1 = time.perf_counter()
            queue = next_superpixels(session, data_dir, project, n=8)
            t2 = time.perf_counter()
            session.expunge_all()
        baseline_ms.append(1000 * (t1 - t0))
        queue_ms.append(1000 * (t2 - t1))
        if request % 10 == 0 and queue.items:  # a labeller labels what was shown
            shown = np.array([item.superpixel for item in queue.items[:4]])
            label(shown, np.zeros(shown.size, np.int64))
    return {"segments": n, "dim": int(outcome.model.feature_mean_D.size),
            "labels": int(labelled_M.size), "model": loop.model, "strategy": loop.strategy,
            "normalisation": loop.normalisation, "learn_s": round(learned - started, 2),
            "retrain_to_queue_s": round(retrain_s, 2), "first_queue_items": len(first.items),
            "queue_p50_ms": round(float(np.percentile(queue_ms, 50)), 1),
            "queue_p95_ms": round(float(np.percentile(queue_ms, 95)), 1), "queue_requests": requests,
            "baseline_project_read_p95_ms": round(float(np.percentile(baseline_ms, 95)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--side", type=int, default=65_536, help="slide side in level-0 px")
    parser.add_argument("--patch", type=int, default=64, help="patch side in level-0 px (64: 1,048,576 patches)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--downsample", type=int, default=2, help="label map level (2: 20x, 0.5 um/px)")
    parser.add_argument("--labels", type=int, default=1000, help="cells labelled before the retrain")
    parser.add_argument("--requests", type=int, default=200, help="queue requests timed")
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="slidelabel-objects-"))
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    slide, cells, h5 = scratch / "slide.tiff", scratch / "cells.geojson", scratch / "patches.h5"
    if not slide.exists():
        blank_slide(slide, args.side)
    if not cells.exists():
        cells_geojson(cells, args.side, args.cells, nucleus_shapes())
    patches = patches_h5(h5, args.side, args.patch, args.dim) if not h5.exists() else None
    setup = time.perf_counter() - started
    segments = child(
        "import json, time\n"
        "from slidelabel.services.segment_import import import_segments\n"
        "from slidelabel.pipelines.importers.segments import ImportOptions\n"
        f"t = time.perf_counter(); r = import_segments({str(slide)!r}, {str(cells)!r}, {str(scratch / 'segments')!r},"
        f" options=ImportOptions(downsample={args.downsample}))\n"
        "result = {'seconds': round(time.perf_counter() - t, 1), 'segments': r.segments, 'dropped': r.dropped}")
    features = child(
        "import json, time\n"
        "from slidelabel.services.feature_import import import_features\n"
        f"t = time.perf_counter(); r = import_features({str(slide)!r}, {str(h5)!r}, {str(scratch / 'segments')!r},"
        f" {str(scratch / 'features')!r}, name='uni-trident')\n"
        "result = {'seconds': round(time.perf_counter() - t, 1), 'segments_with_features': r.segments, 'dim': r.dim}")
    learning = child(
        "from pathlib import Path\nfrom objects import learning_and_queue\n"
        f"result = learning_and_queue(Path({str(scratch)!r}), side={args.side}, labels={args.labels},"
        f" requests={args.requests})")
    print(json.dumps({
        "slide_px": [args.side, args.side], "label_map_downsample": args.downsample, "cells": args.cells,
        "geojson_mb": round(cells.stat().st_size / 2**20, 1), "patches": patches, "patch_px_level0": args.patch,
        "h5_mb": round(h5.stat().st_size / 2**20, 1), "setup_seconds": round(setup, 1),
        "import_segments": segments, "import_features": features, "learning": learning,
        "targets": {"import_segments_seconds": 120, "import_segments_peak_mb": 2048,
                    "import_features_peak_mb": 2048, "queue_p95_ms": 100, "retrain_to_queue_s": 20,
                    "recolour_ms": "50, measured by the web tests"},
        "meets_targets": {
            "import_segments": segments["seconds"] < 120 and segments["peak_rss_mb"] < 2048,
            "import_features_memory": features["peak_rss_mb"] < 2048,
            "queue_p95": learning["queue_p95_ms"] < 100, "retrain_to_queue": learning["retrain_to_queue_s"] < 20},
        "scratch": str(scratch),
    }, indent=2))


if __name__ == "__main__":
    main()
