"""Readers of rectangular RGB windows at the working level, from a slide or from an array.

The superpixel engine only needs ``height``, ``width`` and ``read(top, left, height, width)``;
these two adapters give it a slide at a chosen downsample or an image already in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from slidelabel.pipelines.slides import Slide, WorkingScale


class RegionReader(Protocol):
    """A source of RGB windows in working-level pixels."""

    height: int
    width: int

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """RGB uint8 (height, width, 3); parts outside the image are white."""


class ArrayRegions:
    """Windows of an RGB image held in memory (tests, small images, MoNuSeg crops)."""

    def __init__(self, rgb: np.ndarray) -> None:
        if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
        self.rgb = rgb[..., :3]
        self.height, self.width = rgb.shape[:2]

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        out = np.full((height, width, 3), 255, np.uint8)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + height, self.height), min(left + width, self.width)
        if y1 > y0 and x1 > x0:
            out[y0 - top : y1 - top, x0 - left : x1 - left] = self.rgb[y0:y1, x0:x1]
        return out


class SlideRegions:
    """Windows of a slide at the downsample of a :class:`WorkingScale`."""

    def __init__(self, slide: Slide, scale: WorkingScale) -> None:
        self.slide = slide
        self.scale = scale
        self.height, self.width = scale.height, scale.width

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        return self.slide.read_region(left, top, width, height, downsample=self.scale.downsample)
