"""A million imported cells on one slide: segment import and patch-feature import, time and memory.

Builds, in a scratch folder: a blank pyramidal slide (default 65,536 px square at 0.25 um/px, a
16 mm section at 40x), a GeoJSON of 1,000,000 nuclei whose outlines are real MoNuSeg nuclei
(connected components of the masks, traced with OpenCV), placed on a jittered grid, and a
TRIDENT-layout HDF5 of 1,048,576 patch features (64 px patches, 1024 dimensions). Each import runs
in a child process so that its peak resident memory is its own. Prints JSON.

    .venv/bin/python benchmarks/objects.py [--cells 1000000] [--dim 1024] [--downsample 2]
"""

from __future__ import annotations

import argparse
import json
import resource
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
            coords = ",".join(f"[{x:.1f},{y:.1f}]" for x, y in np.vstack([ring, ring[:1]]))
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
    with the child's peak resident memory and the part of it the imports of slidelabel took."""
    wrapped = ("import json, resource\n"
               "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
               "import slidelabel.services.feature_import, slidelabel.services.segment_import\n"
               "loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
               + code + "\nresult['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)"
               "\nresult['rss_after_imports_mb'] = round(loaded / 1024, 1)\nprint(json.dumps(result))")
    out = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--side", type=int, default=65_536, help="slide side in level-0 px")
    parser.add_argument("--patch", type=int, default=64, help="patch side in level-0 px (64: 1,048,576 patches)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--downsample", type=int, default=2, help="label map level (2: 20x, 0.5 um/px)")
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
    print(json.dumps({
        "slide_px": [args.side, args.side], "label_map_downsample": args.downsample, "cells": args.cells,
        "geojson_mb": round(cells.stat().st_size / 2**20, 1), "patches": patches, "patch_px_level0": args.patch,
        "h5_mb": round(h5.stat().st_size / 2**20, 1), "setup_seconds": round(setup, 1),
        "import_segments": segments, "import_features": features,
        "targets": {"import_segments_seconds": 120, "import_segments_peak_mb": 2048},
        "scratch": str(scratch),
    }, indent=2))


if __name__ == "__main__":
    main()
