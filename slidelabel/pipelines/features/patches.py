"""``patch``: the pixels around each superpixel as features, for models that look at images (``cnn``).

A patch is a ``side_px`` x ``side_px`` square of working pixels centred on the superpixel's
centroid, with the extractor's per-pixel image channels (R, G, B in [0, 1]) plus one channel that
is 1 on the superpixel's own pixels and 0 elsewhere, so a model sees both the context and which
part of it is to be classified. Pixels beyond the image are 0, mask included.

Patches are not pooled, so they have their own driver, :func:`patch_image`: it reads the image
once, tile by tile (each core tile with a margin of half a patch), and cuts out the patches of the
superpixels whose centroid lies in the tile's core. A patch depends only on the pixels, never on
the tiling, so any tile size gives the same features bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features.base import RowWriter, TileProgress, WindowReader
from slidelabel.pipelines.superpixels import Tile, core_tiles
from slidelabel.store.superpixel_table import SuperpixelTable

#: A centroid within this distance (px) below a half-pixel rounds up: the same pixel whether the
#: centroid comes from a label map or from the level-0 table (scaled there and back).
ROUNDING_SLACK_PX = 1e-6


@runtime_checkable
class PatchExtractor(Protocol):
    """Cuts a square patch of per-pixel channels plus the superpixel's mask around each superpixel.

    Features of one superpixel are ``(K + 1, side_px, side_px)`` float32 flattened in C order:
    channel, then row, then column; channel ``K`` is the mask.
    """

    name: str
    side_px: int
    """Side of the patch (working px)."""
    margin_px: int
    """Context the channels need around a window (px); 0 for per-pixel channels."""

    def channel_names(self) -> list[str]:
        """The ``D = (K + 1) * side_px**2`` feature names, in column order."""

    def window_channels(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
        """float32 ``(H, W, K)`` per-pixel channels of an RGB uint8 window."""


@dataclass(frozen=True)
class PatchFeatures:
    """R, G and B in [0, 1] and the superpixel's mask on a ``side_px`` square (see the module).

    Examples
    --------
    >>> PatchFeatures(side_px=2).channel_names()[:3]
    ['red_y0_x0', 'red_y0_x1', 'red_y1_x0']
    """

    name: str = "patch"
    side_px: int = 32
    image_channels: ClassVar[tuple[str, ...]] = ("red", "green", "blue")
    #: The channels are the pixels themselves: no context needed beyond the patch.
    margin_px: ClassVar[int] = 0

    def __post_init__(self) -> None:
        if int(self.side_px) != self.side_px or self.side_px < 1:
            raise ParameterError(f"{self.name}: side_px must be a positive integer, got {self.side_px!r}")

    def channel_names(self) -> list[str]:
        return [
            f"{channel}_y{row}_x{col}"
            for channel in (*self.image_channels, "mask")
            for row in range(self.side_px)
            for col in range(self.side_px)
        ]

    def window_channels(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
        return rgb_H_W_3.astype(np.float32) / np.float32(255)


def centre_pixels(centroid_M_2: np.ndarray) -> np.ndarray:
    """int64 ``(M, 2)`` (row, column) of the pixel nearest to each ``(x, y)`` centroid, in the
    convention where pixel ``(r, c)`` has its centre at ``x = c, y = r`` (working px)."""
    xy_M_2 = np.floor(np.asarray(centroid_M_2, np.float64) + 0.5 + ROUNDING_SLACK_PX).astype(np.int64)
    return xy_M_2[:, ::-1]


def table_centroids(table: SuperpixelTable, downsample: float) -> tuple[np.ndarray, np.ndarray]:
    """``(ids_M, centroid_M_2)``: the table's ids (int64) and ``(x, y)`` centroids in working px
    (pixel ``(r, c)`` centred at ``x = c, y = r``) at a working level of ``downsample``; the table
    has level-0 px, where working pixel ``x`` covers ``[x * downsample, (x + 1) * downsample)``."""
    return table.ids.astype(np.int64), table.centroid_level0 / downsample - 0.5


def cut_patches(
    channels_H_W_K: np.ndarray, labels_H_W: np.ndarray, ids_M: np.ndarray, corners_M_2: np.ndarray, side_px: int
) -> np.ndarray:
    """float32 ``(M, (K + 1) * side_px**2)`` patches whose top-left pixels are ``corners_M_2``
    (row, column in the arrays given, which must hold every patch whole), flattened as
    channel, row, column; the last channel is ``labels_H_W == ids_M[m]``."""
    offsets = np.arange(side_px)
    rows_M_S = corners_M_2[:, :1] + offsets
    cols_M_S = corners_M_2[:, 1:] + offsets
    image_M_S_S_K = channels_H_W_K[rows_M_S[:, :, None], cols_M_S[:, None, :]]
    mask_M_S_S = labels_H_W[rows_M_S[:, :, None], cols_M_S[:, None, :]] == ids_M[:, None, None]
    patches_M_C_S_S = np.concatenate(
        [image_M_S_S_K.transpose(0, 3, 1, 2), mask_M_S_S[:, None].astype(np.float32)], axis=1
    )
    return patches_M_C_S_S.reshape(len(ids_M), -1).astype(np.float32, copy=False)


def _padded(array: np.ndarray, window: Tile, wanted: Tile) -> np.ndarray:
    """``array`` (the pixels of ``window``) placed in zeros covering ``wanted`` (which holds it)."""
    out = np.zeros((wanted.height, wanted.width, *array.shape[2:]), array.dtype)
    top, left = window.top - wanted.top, window.left - wanted.left
    out[top : top + window.height, left : left + window.width] = array
    return out


def patch_image(
    extractor: PatchExtractor,
    read_rgb: WindowReader,
    read_ids: WindowReader,
    *,
    ids_M: np.ndarray,
    centroid_M_2: np.ndarray,
    height: int,
    width: int,
    write_rows: RowWriter,
    tile_size: int = 2048,
    progress: TileProgress | None = None,
) -> None:
    """Patches of the superpixels ``ids_M`` of a ``height`` x ``width`` image (working px),
    handed to ``write_rows`` tile by tile (each id once).

    ``centroid_M_2`` are their ``(x, y)`` centroids in working px (pixel ``(r, c)`` centred at
    ``x = c, y = r``); ``read_rgb`` gives uint8 (h, w, 3) and ``read_ids`` integer (h, w)
    superpixel ids of a window. Tiles without a centroid are not read.
    """
    if tile_size < 16:
        raise ParameterError(f"tile_size must be >= 16 px, got {tile_size}")
    ids_M = np.asarray(ids_M, np.int64)
    centre_M_2 = centre_pixels(centroid_M_2)
    if len(centre_M_2) != len(ids_M):
        raise ValueError(f"{len(ids_M)} ids but {len(centre_M_2)} centroids")
    outside_M = (centre_M_2 < 0).any(axis=1) | (centre_M_2[:, 0] >= height) | (centre_M_2[:, 1] >= width)
    if outside_M.any():
        bad = ids_M[outside_M][0]
        raise ValueError(f"superpixel {bad} has its centroid outside the {width} x {height} px image")
    half = extractor.side_px // 2
    # Patch rows run from centre - half to centre - half + side - 1 <= centre + half.
    margin = half + extractor.margin_px
    tiles = core_tiles(height, width, tile_size)
    tile_of_M = (centre_M_2[:, 0] // tile_size) * len(range(0, width, tile_size)) + centre_M_2[:, 1] // tile_size
    order_M = np.argsort(tile_of_M, kind="stable")
    starts = np.searchsorted(tile_of_M[order_M], np.arange(len(tiles) + 1))
    for index, tile in enumerate(tiles):
        members_m = order_M[starts[index] : starts[index + 1]]
        if members_m.size:
            window = tile.grown(margin, height, width)
            wanted = Tile(tile.top - margin, tile.left - margin, tile.height + 2 * margin, tile.width + 2 * margin)
            reading = (window.top, window.left, window.height, window.width)
            channels_h_w_k = _padded(extractor.window_channels(read_rgb(*reading)), window, wanted)
            labels_h_w = _padded(np.asarray(read_ids(*reading)), window, wanted)
            ids_m = ids_M[members_m]
            corners_m_2 = centre_M_2[members_m] - half - [wanted.top, wanted.left]
            write_rows(ids_m, cut_patches(channels_h_w_k, labels_h_w, ids_m, corners_m_2, extractor.side_px))
        if progress is not None:
            progress(index + 1, len(tiles))


def patches_of_array(
    extractor: PatchExtractor,
    rgb_H_W_3: np.ndarray,
    labels_H_W: np.ndarray,
    *,
    n_superpixels: int,
    tile_size: int = 2048,
) -> np.ndarray:
    """(N, D) float32 patches of the superpixels 1..N of an image in memory, centred on their
    centroids from ``labels_H_W``; rows of ids absent from it are NaN.

    The caller (:func:`~slidelabel.pipelines.features.extract.features_of_array`) has checked the
    shapes and types.
    """
    largest = int(labels_H_W.max(initial=0))
    if largest > n_superpixels:
        raise ValueError(f"superpixel id {largest} is above {n_superpixels}")
    flat = labels_H_W.ravel()
    rows_H_W, cols_H_W = np.indices(labels_H_W.shape)
    area_N = np.bincount(flat, minlength=n_superpixels + 1)[1:]
    sum_x_N = np.bincount(flat, weights=cols_H_W.ravel(), minlength=n_superpixels + 1)[1:]
    sum_y_N = np.bincount(flat, weights=rows_H_W.ravel(), minlength=n_superpixels + 1)[1:]
    present_N = area_N > 0
    centroid_M_2 = np.stack([sum_x_N[present_N], sum_y_N[present_N]], axis=1) / area_N[present_N, None]
    feats_N_D = np.full((n_superpixels, len(extractor.channel_names())), np.nan, np.float32)

    def write_rows(ids_m: np.ndarray, feats_m_D: np.ndarray) -> None:
        feats_N_D[ids_m - 1] = feats_m_D

    patch_image(
        extractor,
        lambda t, l, h, w: rgb_H_W_3[t : t + h, l : l + w],
        lambda t, l, h, w: labels_H_W[t : t + h, l : l + w],
        ids_M=np.flatnonzero(present_N) + 1, centroid_M_2=centroid_M_2, height=labels_H_W.shape[0],
        width=labels_H_W.shape[1], write_rows=write_rows, tile_size=tile_size,
    )
    return feats_N_D
