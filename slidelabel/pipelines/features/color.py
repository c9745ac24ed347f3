"""Colour statistics: RGB, CIELAB and haematoxylin / eosin / DAB optical densities."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from skimage.color import hed_from_rgb

from slidelabel.pipelines.features.base import PixelStatistics
from slidelabel.pipelines.features.pooling import HistogramBins
from slidelabel.pipelines.tissue import OD_OF_INTENSITY

CHANNELS = ("red", "green", "blue", "lab_l", "lab_a", "lab_b", "od_haematoxylin", "od_eosin", "od_dab")
#: Histogram ranges per channel, wide enough for H&E and IHC: RGB in [0, 1], L in [0, 100],
#: a and b as seen on H&E (MoNuSeg spans a -20..60, b -60..30), optical densities of the stains.
_LOW = np.array([0.0, 0.0, 0.0, 0.0, -30.0, -70.0, -0.3, -0.5, -0.3])
_HIGH = np.array([1.0, 1.0, 1.0, 100.0, 90.0, 40.0, 2.5, 1.0, 1.5])
#: Stain optical densities from RGB optical densities (Ruifrok & Johnston, as in scikit-image).
_HED_FROM_OD = hed_from_rgb.astype(np.float32)


def colour_channels(rgb_H_W_3: np.ndarray) -> np.ndarray:
    """float32 (H, W, 9): R, G, B in [0, 1]; CIELAB L (0-100), a, b; H, E, DAB optical densities.

    Optical density is ``-log10((I + 1) / 256)`` per RGB channel (the +1 keeps black finite),
    unmixed with the Ruifrok-Johnston stain matrix; negative densities are kept, as they say
    how far a pixel is from the stains.
    """
    if rgb_H_W_3.ndim != 3 or rgb_H_W_3.shape[2] != 3 or rgb_H_W_3.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb_H_W_3.shape} {rgb_H_W_3.dtype}")
    height, width = rgb_H_W_3.shape[:2]
    out_H_W_9 = np.empty((height, width, 9), np.float32)
    rgb = rgb_H_W_3.astype(np.float32) / 255.0
    out_H_W_9[..., :3] = rgb
    out_H_W_9[..., 3:6] = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    od_P_3 = OD_OF_INTENSITY[rgb_H_W_3.reshape(-1, 3)]
    out_H_W_9[..., 6:] = (od_P_3 @ _HED_FROM_OD).reshape(height, width, 3)
    return out_H_W_9


@dataclass(frozen=True)
class ColorFeatures(PixelStatistics):
    """Mean, std and 10th/50th/90th percentiles of :data:`CHANNELS`, their mean over a ring of
    ``ring_px`` around the superpixel, and its area and shape."""

    name: str = "color"
    pixel_channels: tuple[str, ...] = CHANNELS
    margin_px: int = 0
    ring_px: int = 4
    percentiles: tuple[float, ...] = (10.0, 50.0, 90.0)
    histogram_bins: HistogramBins | None = field(default_factory=lambda: HistogramBins(_LOW, _HIGH, 32))
    shape: bool = True

    def window_channels(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
        return colour_channels(rgb_H_W_3)
