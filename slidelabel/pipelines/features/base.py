"""What a feature extractor is, and the per-superpixel statistics shared by the built-in ones.

An extractor turns an RGB window into ``K`` per-pixel channels (:meth:`window_channels`); the
driver (:mod:`slidelabel.pipelines.features.tile_pooling`) pools them over each superpixel, over its
context ring and, for the superpixel's shape, over its pixel coordinates, and the extractor's
:meth:`features` turns those pools into its ``D`` features. Dense CNN feature maps fit the same
mould (:mod:`slidelabel.pipelines.features.dense`): their channels are the upsampled activations,
``margin_px`` the receptive field and ``grid_px`` the network's total stride.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from slidelabel.pipelines.features.pooling import HistogramBins, Pools

#: Reads a window (top, left, height, width) in working pixels.
WindowReader = Callable[[int, int, int, int], np.ndarray]
#: Receives finished rows: (ids_M, feats_M_D).
RowWriter = Callable[[np.ndarray, np.ndarray], None]
#: Called with (tiles done, tiles in all).
TileProgress = Callable[[int, int], None]

#: Pixel-coordinate channels pooled for the shape features: x, y, x + y (for the covariance of x
#: and y from variances alone) and "on a superpixel boundary" (0/1).
SHAPE_CHANNELS = 4


@dataclass(frozen=True)
class SuperpixelPools:
    """The pools of a set of superpixels: ``pixels`` over their own pixels (the extractor's
    channels), ``ring`` over their context rings (same channels, no histograms) and ``shape``
    over their own pixels (:data:`SHAPE_CHANNELS`, working-level coordinates)."""

    pixels: Pools
    ring: Pools
    shape: Pools

    def ids(self) -> np.ndarray:
        """Sorted ids that any of the three pools has seen."""
        return np.union1d(np.union1d(self.pixels.ids_M, self.ring.ids_M), self.shape.ids_M)


class FeatureExtractor(Protocol):
    """Turns pooled per-pixel channels into ``D`` features per superpixel."""

    name: str
    margin_px: int
    """Context a window needs on each side so that no channel sees the window's edge (px)."""
    grid_px: int
    """Windows reach :meth:`window_channels` with their top-left corner on a multiple of this in
    image px (1: anywhere), up to ``grid_px - 1`` px inside ``margin_px``."""
    ring_px: int
    """Width of the context ring around each superpixel (working px); 0 for none."""
    histogram_bins: HistogramBins | None
    """Bins of the per-channel histograms percentiles are read from; None keeps no histograms."""

    def channel_names(self) -> list[str]:
        """The ``D`` feature names, in column order."""

    def window_channels(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
        """float32 ``(H, W, K)`` per-pixel channels of an RGB uint8 window."""

    def features(self, pools: SuperpixelPools) -> np.ndarray:
        """float32 ``(M, D)`` features of the superpixels of ``pools`` (all aligned on one id set)."""


@dataclass(frozen=True)
class PixelStatistics:
    """Features as statistics of per-pixel channels: mean and standard deviation per channel,
    ``percentiles`` (0-100, from histograms) of every channel, the mean of every channel over the
    context ring and, with ``shape``, log area, elongation and boundary fraction.

    Subclasses name their channels in ``pixel_channels`` and implement ``window_channels``.
    """

    name: str
    pixel_channels: tuple[str, ...]
    margin_px: int
    ring_px: int = 0
    percentiles: tuple[float, ...] = ()
    histogram_bins: HistogramBins | None = None
    shape: bool = False
    grid_px: int = 1

    def __post_init__(self) -> None:
        if self.percentiles and self.histogram_bins is None:
            raise ValueError(f"{self.name}: percentiles need histogram bins")
        if self.margin_px < 0 or self.ring_px < 0:
            raise ValueError(f"{self.name}: margin_px and ring_px must be >= 0")

    def channel_names(self) -> list[str]:
        names = [f"{c}_mean" for c in self.pixel_channels] + [f"{c}_std" for c in self.pixel_channels]
        names += [f"{c}_p{p:g}" for c in self.pixel_channels for p in self.percentiles]
        if self.ring_px:
            names += [f"{c}_ring{self.ring_px}_mean" for c in self.pixel_channels]
        if self.shape:
            names += ["log_area_px", "elongation", "boundary_fraction"]
        return names

    def features(self, pools: SuperpixelPools) -> np.ndarray:
        columns = [pools.pixels.means(), pools.pixels.stds()]
        if self.percentiles:
            columns.append(pools.pixels.percentiles(self.percentiles).reshape(len(pools.pixels.ids_M), -1))
        if self.ring_px:
            columns.append(pools.ring.means())
        if self.shape:
            columns.append(shape_features(pools.shape))
        return np.concatenate(columns, axis=1).astype(np.float32)


def shape_features(shape: Pools) -> np.ndarray:
    """(M, 3) float64: log(1 + area in px), elongation (>= 1, the ratio of the principal axes of
    the pixel coordinates) and the fraction of pixels on the superpixel's boundary."""
    var_M_C = shape.stds() ** 2
    var_x, var_y = var_M_C[:, 0], var_M_C[:, 1]
    cov_xy = (var_M_C[:, 2] - var_x - var_y) / 2.0
    # A pixel is a unit square, whose coordinates vary by 1/12 along each axis: keeps one-pixel
    # lines finite.
    trace, det = var_x + var_y + 2.0 / 12.0, (var_x + 1 / 12.0) * (var_y + 1 / 12.0) - cov_xy**2
    gap = np.sqrt(np.maximum(trace**2 / 4.0 - det, 0.0))
    elongation = np.sqrt((trace / 2.0 + gap) / np.maximum(trace / 2.0 - gap, 1e-12))
    return np.stack([np.log1p(shape.counts_M), elongation, shape.means()[:, 3]], axis=1)
