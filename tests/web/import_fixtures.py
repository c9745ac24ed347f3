"""Files from other tools for the browser test of imports (tests/web/imports.mjs): a QuPath-style
GeoJSON of nucleus polygons and TRIDENT patch features of the CMU slide.

The polygons are the 4-connected components of a MoNuSeg nucleus mask, their outer contours
through pixel centres, placed at (LEFT, TOP) on the 2220 x 2967 px slide (level-0 px). Every
fifth has a QuPath ``classification``: tumour when its centre is in the crop's left half, else
stroma. Two more features are dropped by the import: a polygon wholly outside the slide and an
empty geometry. The HDF5 has TRIDENT's layout: ``coords`` (P, 2) int64 level-0 top-left corners
with ``patch_size`` / ``patch_size_level0`` / magnification attributes, ``features`` (P, D)
float32: the patch's mean nucleus fraction in the mask, its position and seeded noise; and an
HDF5 without ``coords``, which the import refuses.

    python tests/web/import_fixtures.py OUT_DIR    (prints a JSON summary of what it wrote)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
from PIL import Image

MONUSEG = Path(__file__).resolve().parents[3] / "shared" / "data" / "monuseg-train"
WIDTH, HEIGHT = 2220, 2967  # the CMU slide, level-0 px
LEFT, TOP = 300, 400
PATCH, DIMS = 256, 16


def nucleus_mask() -> np.ndarray:
    """(1000, 1000) bool nucleus mask of the first MoNuSeg image by name."""
    path = sorted((MONUSEG / "masks").glob("*.png"))[0]
    mask = np.asarray(Image.open(path)) > 127
    return mask if mask.ndim == 2 else mask[..., 0]


def cells(mask: np.ndarray) -> list[dict]:
    """GeoJSON Features of the nuclei, every fifth classified; then two that the import drops."""
    count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    features = []
    for k in range(1, count):
        contours, _ = cv2.findContours((components == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        ring_K_2 = contours[0][:, 0, :] + 0.5 + (LEFT, TOP)
        if len(ring_K_2) < 3:
            continue
        properties: dict = {"objectType": "detection"}
        if len(features) % 5 == 0:
            name = "tumour" if ring_K_2[:, 0].mean() < LEFT + mask.shape[1] / 2 else "stroma"
            properties["classification"] = {"name": name, "color": [200, 0, 0] if name == "tumour" else [0, 150, 0]}
        ring = ring_K_2.tolist()
        features.append({"type": "Feature", "properties": properties,
                         "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]}})
    outside = [[WIDTH + 500, 100], [WIDTH + 520, 100], [WIDTH + 520, 120], [WIDTH + 500, 100]]
    features.append({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [outside]}})
    features.append({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": []}})
    return features


def trident_features(mask: np.ndarray, path: Path) -> int:
    """Write the patch features as TRIDENT does; returns the number of patches."""
    on_slide = np.zeros((HEIGHT, WIDTH), np.float32)
    on_slide[TOP : TOP + mask.shape[0], LEFT : LEFT + mask.shape[1]] = mask
    corners_P_2 = np.array([(x, y) for y in range(0, HEIGHT, PATCH) for x in range(0, WIDTH, PATCH)], np.int64)
    feats_P_D = np.random.default_rng(14).normal(scale=0.1, size=(len(corners_P_2), DIMS)).astype(np.float32)
    for p, (x, y) in enumerate(corners_P_2):
        feats_P_D[p, 0] += on_slide[y : y + PATCH, x : x + PATCH].mean()
        feats_P_D[p, 1:3] += (x / WIDTH, y / HEIGHT)
    with h5py.File(path, "w") as file:
        coords = file.create_dataset("coords", data=corners_P_2)
        coords.attrs.update({"patch_size": PATCH, "patch_size_level0": PATCH, "level0_magnification": 20,
                             "target_magnification": 20, "overlap": 0, "name": "CMU-1-Small-Region"})
        file.create_dataset("features", data=feats_P_D).attrs.update({"name": "CMU-1-Small-Region"})
    return len(corners_P_2)


def main(out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    mask = nucleus_mask()
    features = cells(mask)
    (folder / "cells.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    patches = trident_features(mask, folder / "CMU-1-Small-Region.h5")
    with h5py.File(folder / "no-coords.h5", "w") as file:  # what the importer refuses, naming the cause
        file.create_dataset("features", data=np.zeros((4, DIMS), np.float32))
    classes: dict[str, int] = {}
    for feature in features:
        name = feature["properties"].get("classification", {}).get("name")
        if name:
            classes[name] = classes.get(name, 0) + 1
    print(json.dumps({"geojson": str(folder / "cells.geojson"), "h5": str(folder / "CMU-1-Small-Region.h5"),
                      "bad_h5": str(folder / "no-coords.h5"),
                      "polygons": len(features) - 2, "classes": classes, "patches": patches, "dims": DIMS}))


if __name__ == "__main__":
    main(*sys.argv[1:])
