"""Features of each superpixel's surroundings: what its neighbourhood looks like at several radii.

A pathologist tells tumour from stroma, necrosis or glands by the tissue around a spot, not by its
own 50 um. :func:`neighbourhood_features` gives every superpixel the area-weighted mean of chosen
features of the superpixels around it, under Gaussian windows whose standard deviations are
multiples of the superpixel size, and the share of each window that holds superpixels at all (near
the tissue's edge, part of it is glass).

How: the superpixels' area-weighted features are added into a grid of cells half a superpixel
wide, at their centroids; each window is a Gaussian filter of that grid (and of the areas), and a
superpixel reads the ratio at its own cell. The whole slide's table goes through it at once, so
there are no tile seams; the grid has about four cells per superpixel and holds
:data:`COLUMNS_AT_ONCE` features at a time, so a million superpixels need about 256 MB of grid
beyond the result. Cost: O(cells x radii) per column, independent of the radii's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features.base import FeatureExtractor, SuperpixelPools

#: Features filtered together: the grid holds cells x this many float32 values.
COLUMNS_AT_ONCE = 16
#: Grid cells per superpixel side.
CELLS_PER_SUPERPIXEL = 2


def neighbourhood_features(
    feats_N_D: np.ndarray,
    centroid_N_2: np.ndarray,
    area_N: np.ndarray,
    *,
    radii: tuple[float, ...] = (2.0, 4.0, 8.0),
    size_px: float | None = None,
) -> np.ndarray:
    """Means of ``feats_N_D`` around every superpixel, per radius, and how full each window is.

    Parameters
    ----------
    feats_N_D : (N, D) float features; rows with NaN (superpixels without pixels) are ignored as
        neighbours and get NaN rows.
    centroid_N_2 : (N, 2) ``x, y`` centroids in working pixels.
    area_N : (N,) areas in working pixels (the weights).
    radii : Gaussian standard deviations of the windows, in superpixel sizes.
    size_px : the superpixel size in working pixels; default the square root of the median area.

    Returns
    -------
    (N, len(radii) * (D + 1)) float32: per radius, the D weighted means, then the share of the
    window covered by superpixels (0-1).

    Examples
    --------
    >>> feats = np.array([[0.0], [1.0], [2.0]])
    >>> centroids = np.array([[0.0, 0.0], [10.0, 0.0], [100.0, 0.0]])
    >>> out = neighbourhood_features(feats, centroids, np.ones(3) * 100, radii=(1.0,))
    >>> out.shape
    (3, 2)
    """
    feats_N_D = np.asarray(feats_N_D, np.float32)
    n = feats_N_D.shape[0]
    if feats_N_D.ndim != 2 or np.shape(centroid_N_2) != (n, 2) or np.shape(area_N) != (n,):
        raise ParameterError(f"need (N, D) features, (N, 2) centroids and (N,) areas, got {feats_N_D.shape}, "
                             f"{np.shape(centroid_N_2)} and {np.shape(area_N)}")
    if not radii or min(radii) <= 0:
        raise ParameterError(f"radii must be positive superpixel sizes, got {radii}")
    out_N_R = np.full((n, len(radii) * (feats_N_D.shape[1] + 1)), np.nan, np.float32)
    valid_N = np.isfinite(feats_N_D).all(axis=1) & np.isfinite(centroid_N_2).all(axis=1)
    if not valid_N.any():
        return out_N_R
    area_V = np.asarray(area_N, np.float64)[valid_N]
    size = float(np.sqrt(np.median(area_V))) if size_px is None else float(size_px)
    cell = max(size / CELLS_PER_SUPERPIXEL, 1.0)
    cells_V_2 = np.floor(np.asarray(centroid_N_2, np.float64)[valid_N] / cell).astype(np.int64)
    cells_V_2 -= cells_V_2.min(axis=0)
    shape = tuple(int(v) + 1 for v in cells_V_2.max(axis=0)[::-1])  # rows (y), columns (x)
    flat_V = np.ravel_multi_index((cells_V_2[:, 1], cells_V_2[:, 0]), shape)
    # A cell's area is cell^2 working px: coverage is the filtered superpixel area over that.
    weight_grid = np.bincount(flat_V, area_V, minlength=int(np.prod(shape))).reshape(shape).astype(np.float32)
    sigmas = [r * size / cell for r in radii]
    width = feats_N_D.shape[1] + 1
    rows_V = np.flatnonzero(valid_N)
    weight_K_V = [_blurred(weight_grid[..., None], sigma)[flat_V, 0] for sigma in sigmas]
    for k, weight_V in enumerate(weight_K_V):
        out_N_R[rows_V, k * width + width - 1] = np.clip(weight_V / cell**2, 0.0, 1.0)
    for start in range(0, feats_N_D.shape[1], COLUMNS_AT_ONCE):
        block_V_B = feats_N_D[valid_N, start:start + COLUMNS_AT_ONCE] * area_V[:, None].astype(np.float32)
        grid = np.zeros((*shape, block_V_B.shape[1]), np.float32)
        np.add.at(grid.reshape(-1, block_V_B.shape[1]), flat_V, block_V_B)
        for k, (sigma, weight_V) in enumerate(zip(sigmas, weight_K_V)):
            filtered_V_B = _blurred(grid, sigma)[flat_V]
            out_N_R[rows_V, k * width + start:k * width + start + block_V_B.shape[1]] = (
                filtered_V_B / np.maximum(weight_V, 1e-6)[:, None])
    return out_N_R


def array_geometry(labels_H_W: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centroid_N_2, area_N)``: ``x, y`` centroids and areas (px) of superpixels 1..n of an
    image; NaN centroids for absent ids."""
    ids = labels_H_W.ravel().astype(np.int64)
    area_N = np.bincount(ids, minlength=n + 1)[1 : n + 1].astype(np.float64)
    rows, cols = np.indices(labels_H_W.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid_N_2 = np.stack([np.bincount(ids, cols.ravel(), n + 1)[1:], np.bincount(ids, rows.ravel(), n + 1)[1:]],
                                axis=1) / area_N[:, None]
    return centroid_N_2, area_N


def _blurred(grid_H_W_B: np.ndarray, sigma: float) -> np.ndarray:
    """``(H * W, B)``: each channel of the grid convolved with a Gaussian of ``sigma`` cells,
    zero outside (truncated at 3 sigma)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    out = np.empty_like(grid_H_W_B)
    for start in range(0, grid_H_W_B.shape[2], 4):  # OpenCV filters at most 4 channels at once well
        part = np.ascontiguousarray(grid_H_W_B[..., start:start + 4])
        blurred = cv2.GaussianBlur(part, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_CONSTANT)
        out[..., start:start + 4] = blurred.reshape(part.shape)
    return out.reshape(-1, grid_H_W_B.shape[2])


@dataclass(frozen=True)
class NeighbourhoodFeatures:
    """A pooled extractor's features followed by the :func:`neighbourhood_features` of those of
    its columns named in ``columns``, at ``radii`` superpixel sizes.

    The tile driver pools ``base`` as usual (:meth:`features` gives its columns only); the
    neighbourhood columns need every superpixel of the slide and are added afterwards by
    :meth:`with_neighbourhood` (``extract_slide_features`` and ``features_of_array`` do it)."""

    name: str
    base: FeatureExtractor
    columns: tuple[str, ...]
    radii: tuple[float, ...] = (2.0, 4.0, 8.0)

    def __getattr__(self, attribute: str):
        # margin_px, grid_px, ring_px, histogram_bins and window_channels are the base's.
        if attribute.startswith("__") or attribute == "base":
            raise AttributeError(attribute)
        return getattr(self.base, attribute)

    @property
    def base_width(self) -> int:
        return len(self.base.channel_names())

    def channel_names(self) -> list[str]:
        around = [*self.columns, "coverage"]
        return self.base.channel_names() + [f"around{r:g}_{c}" for r in self.radii for c in around]

    def features(self, pools: SuperpixelPools) -> np.ndarray:
        return self.base.features(pools)

    def column_indices(self) -> np.ndarray:
        names = self.base.channel_names()
        return np.array([names.index(c) for c in self.columns], np.int64)

    def with_neighbourhood(self, base_N_B: np.ndarray, centroid_N_2: np.ndarray, area_N: np.ndarray) -> np.ndarray:
        """``(N, D)``: the base features of every superpixel of an image or slide, then their
        neighbourhood columns (centroids and areas in working pixels)."""
        around_N_A = neighbourhood_features(base_N_B[:, self.column_indices()], centroid_N_2, area_N,
                                            radii=self.radii)
        return np.concatenate([base_N_B, around_N_A], axis=1).astype(np.float32)
