"""Colour statistics: RGB, CIELAB and haematoxylin / eosin / DAB optical densities."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numba
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

    CIELAB comes from OpenCV's 8-bit conversion (steps of 0.4 in L and 1 in a and b, far below
    the 32 histogram bins the statistics use, at a tenth of the float conversion's time). Optical
    density is ``-log10((I + 1) / 256)`` per RGB channel (the +1 keeps black finite), unmixed
    with the Ruifrok-Johnston stain matrix; negative densities are kept, as they say how far a
    pixel is from the stains.
    """
    if rgb_H_W_3.ndim != 3 or rgb_H_W_3.shape[2] != 3 or rgb_H_W_3.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb_H_W_3.shape} {rgb_H_W_3.dtype}")
    rgb = np.ascontiguousarray(rgb_H_W_3)
    lab8_H_W_3 = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    out_H_W_9 = np.empty((*rgb.shape[:2], 9), np.float32)
    _fill_channels(rgb.reshape(-1, 3), lab8_H_W_3.reshape(-1, 3), OD_OF_INTENSITY, _HED_FROM_OD, out_H_W_9.reshape(-1, 9))
    return out_H_W_9


@numba.njit(cache=True, nogil=True)
def _fill_channels(rgb_P_3, lab8_P_3, od_of_intensity, hed_from_od, out_P_9) -> None:
    for p in range(rgb_P_3.shape[0]):
        od = (od_of_intensity[rgb_P_3[p, 0]], od_of_intensity[rgb_P_3[p, 1]], od_of_intensity[rgb_P_3[p, 2]])
        for c in range(3):
            out_P_9[p, c] = rgb_P_3[p, c] / np.float32(255.0)
            out_P_9[p, 6 + c] = od[0] * hed_from_od[0, c] + od[1] * hed_from_od[1, c] + od[2] * hed_from_od[2, c]
        # OpenCV's 8-bit CIELAB: L scaled to 0-255, a and b offset by 128.
        out_P_9[p, 3] = lab8_P_3[p, 0] * np.float32(100.0 / 255.0)
        out_P_9[p, 4] = np.float32(lab8_P_3[p, 1]) - np.float32(128.0)
        out_P_9[p, 5] = np.float32(lab8_P_3[p, 2]) - np.float32(128.0)


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
