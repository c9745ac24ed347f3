"""Superpixel features from the dense feature map of a neural encoder.

A :class:`DenseEncoder` runs once over a whole window (fully convolutionally) and gives one
``K``-vector per cell of ``stride_px x stride_px`` pixels, instead of once per superpixel crop.
:class:`DenseEmbedding` makes it a :class:`~slidelabel.pipelines.features.base.FeatureExtractor`:
every pixel takes the vector of the cell it lies in, so the driver's mean over a superpixel's
pixels is the area-weighted mean of the cells its mask covers (the masked-superpixel embedding),
and the mean over its context ring is that of the cells around it.

Memory: the per-pixel map of a block of 512 px plus margins is ``(512 + 2 margin)^2 K`` float32,
191 MB for EfficientNet-Lite0's 104 channels and 83 px margins; keep ``K`` near a hundred.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from slidelabel.pipelines.features.base import SuperpixelPools, shape_features
from slidelabel.pipelines.features.pooling import HistogramBins


class DenseEncoder(Protocol):
    """A network that maps an RGB window to a grid of ``channels``-vectors.

    Cell ``(i, j)`` describes the window's pixels ``[i s, (i + 1) s) x [j s, (j + 1) s)`` for
    ``s = stride_px``. Windows whose corners lie on multiples of ``grid_px`` of one image give the
    same vector for a cell whose pixels are at least ``margin_px`` inside both windows (up to
    float32 rounding): the cells are anchored to the image, not to the window.
    """

    name: str
    channels: int
    """``K``, vector length per cell."""
    stride_px: int
    """Side of a cell (px)."""
    grid_px: int
    """Alignment a window's corner needs for cells to be the same in every window (px), a multiple
    of ``stride_px`` (a network's total stride, when it taps several)."""
    margin_px: int
    """Context a cell needs on each side so that it does not see the window's edge (px)."""

    def encode(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
        """float32 ``(ceil(H / stride_px), ceil(W / stride_px), K)`` map of a uint8 ``(H, W, 3)`` window."""


def cells_to_pixels(cells_h_w_K: np.ndarray, stride_px: int, height: int, width: int) -> np.ndarray:
    """``(height, width, K)`` map in which each pixel has the vector of the ``stride_px`` cell it lies in.

    Examples
    --------
    >>> cells_to_pixels(np.arange(2.0).reshape(1, 2, 1), 2, 1, 3)[..., 0].tolist()
    [[0.0, 0.0, 1.0]]
    """
    if cells_h_w_K.shape[0] * stride_px < height or cells_h_w_K.shape[1] * stride_px < width:
        raise ValueError(f"{cells_h_w_K.shape[:2]} cells of {stride_px} px do not cover {height} x {width} px")
    rows_H = np.arange(height) // stride_px
    cols_W = np.arange(width) // stride_px
    # Rows first: the intermediate (H, w, K) is stride_px times smaller than the result.
    return np.take(np.take(cells_h_w_K, rows_H, axis=0), cols_W, axis=1)


@dataclass(frozen=True)
class DenseEmbedding:
    """Per superpixel: the mean of the encoder's map over its pixels, over its context ring of
    ``ring_px``, and log area, elongation and boundary fraction.

    The map is pooled at pixel resolution, so a superpixel that covers a quarter of one cell and
    all of another weighs them 1 : 4. Windows reach the encoder with their corner on its
    ``grid_px``, so tiling does not change the features.
    """

    name: str
    encoder: DenseEncoder
    ring_px: int = 8
    histogram_bins: HistogramBins | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.ring_px < 0:
            raise ValueError(f"{self.name}: ring_px must be >= 0, got {self.ring_px}")
        if self.encoder.grid_px % self.encoder.stride_px or self.encoder.margin_px < self.encoder.grid_px - 1:
            raise ValueError(f"{self.name}: the encoder's grid ({self.encoder.grid_px} px) must be a multiple of its "
                             f"stride ({self.encoder.stride_px} px) and its margin ({self.encoder.margin_px} px) "
                             "hold a window moved onto the grid")

    @property
    def margin_px(self) -> int:
        return self.encoder.margin_px

    @property
    def grid_px(self) -> int:
        return self.encoder.grid_px

    def channel_names(self) -> list[str]:
        channels = [f"{self.encoder.name}_{k:03d}" for k in range(self.encoder.channels)]
        names = [f"{c}_mean" for c in channels]
        if self.ring_px:
            names += [f"{c}_ring{self.ring_px}_mean" for c in channels]
        return names + ["log_area_px", "elongation", "boundary_fraction"]

    def window_channels(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
        if rgb_H_W_3.ndim != 3 or rgb_H_W_3.shape[2] != 3 or rgb_H_W_3.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb_H_W_3.shape} {rgb_H_W_3.dtype}")
        height, width = rgb_H_W_3.shape[:2]
        cells_h_w_K = self.encoder.encode(rgb_H_W_3)
        return cells_to_pixels(cells_h_w_K, self.encoder.stride_px, height, width).astype(np.float32, copy=False)

    def features(self, pools: SuperpixelPools) -> np.ndarray:
        columns = [pools.pixels.means()]
        if self.ring_px:
            columns.append(pools.ring.means())
        columns.append(shape_features(pools.shape))
        return np.concatenate(columns, axis=1).astype(np.float32)
