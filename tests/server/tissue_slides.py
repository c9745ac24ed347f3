"""Small real-tissue slides for cohort tests: MoNuSeg H&E crops (40x, 0.2527 um/px) tiled into a
mosaic and written as a tiled JPEG TIFF with its resolution, which the slide readers open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

MONUSEG_MPP = 0.2527


def write_tissue_slide(path: Path, monuseg: Path, *, rows: int, cols: int, first: int = 0) -> Path:
    """A ``rows * 1000`` x ``cols * 1000`` px slide of consecutive MoNuSeg images from ``first``."""
    images = sorted((monuseg / "images").glob("*.png"))
    tiles = [np.asarray(Image.open(images[(first + i) % len(images)]).convert("RGB")) for i in range(rows * cols)]
    rgb = np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="jpeg",
                     resolution=(1e4 / MONUSEG_MPP, 1e4 / MONUSEG_MPP), resolutionunit="CENTIMETER")
    return path
