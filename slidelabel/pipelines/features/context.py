"""``context``: the colour statistics of ``color`` plus haematoxylin texture around each pixel.

The texture is the filter bank of :mod:`~slidelabel.pipelines.features.filterbank` (smoothing,
gradient, Laplacian and difference of Gaussians, Hessian and structure-tensor eigenvalues at
sigma 1, 2, 4 and 8 px) run on the haematoxylin optical density instead of grey, so that it
describes chromatin and nuclear outlines rather than whatever is dark: at 8 px, a Gaussian's
reach (24 px) spans a nucleus and its surroundings at 40x. Each texture channel gives its mean
and standard deviation over the superpixel.

On MoNuSeg (16 px superpixels, ``random_forest``, 21 training and 9 test images) this adds about
0.01 macro F1 with all labels over ``color`` and nothing measurable with 100; see
``benchmarks/monuseg_quality.py`` and docs/learning.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from slidelabel.pipelines.features.base import PixelStatistics, SuperpixelPools, shape_features
from slidelabel.pipelines.features.color import CHANNELS as COLOUR_CHANNELS
from slidelabel.pipelines.features.color import ColorFeatures, colour_channels
from slidelabel.pipelines.features.filterbank import FILTERS, SIGMAS_PX, filter_stack, filterbank_margin
from slidelabel.pipelines.features.pooling import HistogramBins

TEXTURE_CHANNELS = tuple(f"haematoxylin_{f}_s{s:g}" for s in SIGMAS_PX for f in FILTERS)
_HAEMATOXYLIN = COLOUR_CHANNELS.index("od_haematoxylin")


def _colour_bins() -> HistogramBins:
    """The colour channels' bins, and none for the texture channels, whose percentiles are not
    read (their histograms took 78% of the pools: 8 KB per superpixel)."""
    return ColorFeatures().histogram_bins


@dataclass(frozen=True)
class ContextFeatures(PixelStatistics):
    """``color``'s 57 features (mean, std, 10th/50th/90th percentiles and 4 px ring mean of
    RGB, CIELAB and H / E / DAB optical densities; area and shape) followed by the mean and
    standard deviation of :data:`TEXTURE_CHANNELS`: 121 features."""

    name: str = "context"
    pixel_channels: tuple[str, ...] = COLOUR_CHANNELS + TEXTURE_CHANNELS
    margin_px: int = filterbank_margin(SIGMAS_PX)
    ring_px: int = 4
    percentiles: tuple[float, ...] = (10.0, 50.0, 90.0)
    histogram_bins: HistogramBins | None = field(default_factory=_colour_bins)
    shape: bool = True

    def channel_names(self) -> list[str]:
        colour = list(COLOUR_CHANNELS)
        names = [f"{c}_mean" for c in colour] + [f"{c}_std" for c in colour]
        names += [f"{c}_p{p:g}" for c in colour for p in self.percentiles]
        names += [f"{c}_ring{self.ring_px}_mean" for c in colour]
        names += ["log_area_px", "elongation", "boundary_fraction"]
        return names + [f"{c}_mean" for c in TEXTURE_CHANNELS] + [f"{c}_std" for c in TEXTURE_CHANNELS]

    def window_channels(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
        colour_H_W_9 = colour_channels(rgb_H_W_3)
        texture_H_W_T = filter_stack(colour_H_W_9[..., _HAEMATOXYLIN], sigmas=SIGMAS_PX)
        return np.concatenate([colour_H_W_9, texture_H_W_T], axis=2)

    def features(self, pools: SuperpixelPools) -> np.ndarray:
        n_colour = len(COLOUR_CHANNELS)
        means_M_K, stds_M_K = pools.pixels.means(), pools.pixels.stds()
        percentiles_M_K_Q = pools.pixels.percentiles(self.percentiles)[:, :n_colour]
        columns = [
            means_M_K[:, :n_colour], stds_M_K[:, :n_colour], percentiles_M_K_Q.reshape(len(means_M_K), -1),
            pools.ring.means()[:, :n_colour], shape_features(pools.shape),
            means_M_K[:, n_colour:], stds_M_K[:, n_colour:],
        ]
        return np.concatenate(columns, axis=1).astype(np.float32)
