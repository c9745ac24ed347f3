"""Histomics Label's whole-slide superpixel method, re-implemented as a benchmark baseline.

HistomicsTK's ``SuperpixelSegmentation`` CLI (which Histomics Label runs) segments a slide tile by
tile: large_image yields tiles of ``tile_size + overlap`` pixels that overlap their neighbours by
``overlap``; in each tile the pixels already labelled by earlier tiles are masked out, SLIC-zero
runs on the rest with ``ceil(unlabelled_pixels / superpixel_size**2)`` segments, and every segment
that reaches into the part of the tile that no later tile covers (the tile minus half the overlap
on its right and bottom, as large_image reports it) is kept; the others are left to the next
tiles. This module does the same in our own code and stitches the result in memory, so run it on
modest regions only.

It inherits two properties of skimage's masked SLIC: a leftover piece smaller than half a
superpixel can share its id with another segment it does not touch (scikit-image issue #8295),
and the k-means seeding of a masked tile costs far more than the clustering on large tiles.

Use it from another benchmark script with ``benchmarks/`` on ``sys.path``::

    from histomics_baseline import histomics_superpixels

or on its own::

    .venv/bin/python benchmarks/histomics_baseline.py SLIDE --superpixel-size 64 \
        --region 0,0,2048,2048 --tile-size 1024 --overlap 256
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import large_image
import numpy as np
from skimage.segmentation import slic

_REGION_KEYS = ("left", "top", "width", "height")


def _check_options(
    superpixel_size: int, tile_size: int, overlap: int, magnification: float | None
) -> None:
    checks = [("superpixel_size", superpixel_size, 1), ("tile_size", tile_size, 1),
              ("overlap", overlap, 0)]
    for name, value, least in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if magnification is not None and not magnification > 0:
        raise ValueError(f"magnification must be > 0 or None, got {magnification!r}")


def _region_level0(region: dict | None, size_x: int, size_y: int) -> dict:
    """The region to segment in level-0 pixels, checked against the slide size."""
    if region is None:
        return {"left": 0, "top": 0, "width": size_x, "height": size_y}
    if sorted(region) != sorted(_REGION_KEYS):
        raise ValueError(f"region must have exactly the keys {_REGION_KEYS}, got {sorted(region)}")
    left, top, width, height = (int(region[key]) for key in _REGION_KEYS)
    inside = left >= 0 and top >= 0 and left + width <= size_x and top + height <= size_y
    if not inside or width < 1 or height < 1:
        raise ValueError(
            f"region {region} must be non-empty and inside the slide's "
            f"{size_x} x {size_y} level-0 pixels"
        )
    return {"left": left, "top": top, "width": width, "height": height}


def _kept_segments(segments_h_w: np.ndarray, tile: dict, overlap: int) -> np.ndarray:
    """Ids of the segments that reach the part of the tile no later tile covers."""
    position, extent = tile["tile_position"], tile["iterator_range"]
    # Computed rather than read from tile["tile_overlap"]: large_image reports it in mixed units
    # when it resamples tiles to a magnification that is not a pyramid level.
    right = 0 if position["region_x"] == extent["region_x_max"] - 1 else overlap // 2
    bottom = 0 if position["region_y"] == extent["region_y_max"] - 1 else overlap // 2
    core = segments_h_w[: segments_h_w.shape[0] - bottom, : segments_h_w.shape[1] - right]
    kept = np.unique(core)
    return kept[kept >= 0]


def histomics_superpixels(
    path: str,
    *,
    superpixel_size: int,
    tile_size: int = 4096,
    overlap: int = 800,
    magnification: float | None = None,
    region: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Superpixels of a slide region by Histomics Label's tiled SLIC-zero method.

    Parameters
    ----------
    path : str
        Slide file that large_image can open.
    superpixel_size : int
        Side, in output pixels, of the average superpixel: each tile asks SLIC for
        ``ceil(unlabelled_pixels / superpixel_size**2)`` segments.
    tile_size : int, optional
        Side of a tile's core in output pixels; tiles are read ``tile_size + overlap`` wide.
    overlap : int, optional
        Overlap between adjacent tiles in output pixels; 0 segments tiles independently.
    magnification : float or None, optional
        Objective magnification to segment at (large_image resamples); None reads level 0, the only
        choice for slides without magnification metadata.
    region : dict or None, optional
        ``{"left", "top", "width", "height"}`` in level-0 pixels; None is the whole slide.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        Superpixel ids 0..n-1 over the region at the chosen magnification; every pixel is labelled.
    timing : dict
        ``{"seconds": float, "megapixels": float}``: wall time of everything the method does
        (opening, reading and decoding tiles, segmenting, stitching) and ``H * W / 1e6``.

    Raises
    ------
    ValueError
        If a size is not a positive integer (``overlap`` may be 0), the region is malformed or
        outside the slide, or a magnification is asked of a slide that has none in its metadata.
    """
    _check_options(superpixel_size, tile_size, overlap, magnification)
    started = time.perf_counter()
    source = large_image.open(path)
    metadata = source.getMetadata()
    if magnification is not None and not metadata.get("magnification"):
        raise ValueError(f"{path} has no magnification in its metadata; use magnification=None")
    bounds = _region_level0(region, metadata["sizeX"], metadata["sizeY"])
    scale = 1.0 if magnification is None else magnification / metadata["magnification"]

    # The output size of a resampled region is large_image's to round, so the canvas gets a margin
    # and is cropped to the extent the tiles actually covered.
    canvas_shape = (math.ceil(bounds["height"] * scale) + 2, math.ceil(bounds["width"] * scale) + 2)
    labels_h_w = np.full(canvas_shape, -1, dtype=np.int32)
    extent_y = extent_x = 0
    n_found = 0
    iterator = source.tileIterator(
        format=large_image.constants.TILE_FORMAT_NUMPY,
        region={**bounds, "units": "base_pixels"},
        tile_size={"width": tile_size + overlap, "height": tile_size + overlap},
        tile_overlap={"x": overlap, "y": overlap},
        **({} if magnification is None else {"scale": {"magnification": magnification}}),
    )
    for tile in iterator:
        rgb_h_w_3 = tile["tile"][..., :3]
        height, width = rgb_h_w_3.shape[:2]
        y0 = round((tile["gy"] - bounds["top"]) * scale)
        x0 = round((tile["gx"] - bounds["left"]) * scale)
        window_h_w = labels_h_w[y0 : y0 + height, x0 : x0 + width]
        extent_y, extent_x = max(extent_y, y0 + height), max(extent_x, x0 + width)
        unset_h_w = window_h_w < 0
        n_unset = int(np.count_nonzero(unset_h_w))
        if n_unset == 0:
            continue
        segments_h_w = slic(
            rgb_h_w_3,
            n_segments=math.ceil(n_unset / superpixel_size**2),
            slic_zero=True,
            compactness=1,
            sigma=0,
            enforce_connectivity=True,
            start_label=0,
            # HistomicsTK passes no mask without overlap; skimage seeds differently with a mask.
            mask=unset_h_w if overlap else None,
        )
        kept = _kept_segments(segments_h_w, tile, overlap)
        # Index -1 (outside the mask) reads the last entry, which stays -1.
        new_ids = np.full(segments_h_w.max() + 2, -1, dtype=np.int32)
        new_ids[kept] = np.arange(n_found, n_found + kept.size, dtype=np.int32)
        tile_labels_h_w = new_ids[segments_h_w]
        keep_h_w = tile_labels_h_w >= 0
        window_h_w[keep_h_w] = tile_labels_h_w[keep_h_w]
        n_found += kept.size

    labels_h_w = labels_h_w[:extent_y, :extent_x]
    seconds = time.perf_counter() - started
    return labels_h_w, {"seconds": seconds, "megapixels": labels_h_w.size / 1e6}


def _parse_region(text: str) -> dict:
    values = [int(part) for part in text.split(",")]
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"region must be LEFT,TOP,WIDTH,HEIGHT, got {text!r}")
    return dict(zip(_REGION_KEYS, values))


def main(argv: list[str] | None = None) -> None:
    """Segment a slide region and print its size, superpixel count and timing as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide", type=Path)
    parser.add_argument("--superpixel-size", type=int, required=True, help="output pixels")
    parser.add_argument("--tile-size", type=int, default=4096)
    parser.add_argument("--overlap", type=int, default=800)
    parser.add_argument("--magnification", type=float, default=None, help="default: level 0")
    parser.add_argument(
        "--region", type=_parse_region, default=None, help="LEFT,TOP,WIDTH,HEIGHT (level 0)"
    )
    args = parser.parse_args(argv)
    labels, timing = histomics_superpixels(
        str(args.slide),
        superpixel_size=args.superpixel_size,
        tile_size=args.tile_size,
        overlap=args.overlap,
        magnification=args.magnification,
        region=args.region,
    )
    print(json.dumps({
        "shape": list(labels.shape),
        "superpixels": int(labels.max()) + 1,
        **timing,
        "mp_per_s": timing["megapixels"] / timing["seconds"],
    }))


if __name__ == "__main__":
    main()
