"""Label masks: a pyramidal uint8 TIFF of categories at the working level, for tools that read
masks (QuPath pixel classifiers' training, ImageJ, large_image, deep-learning pipelines).

Level ``k`` of the mask is ``value_of_id[labels level k]``: the label map's own pyramid (every
second pixel, never averaged) renumbered, so no scratch copy is needed and memory stays at a band
of tiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from slidelabel.errors import OutputError
from slidelabel.store.atomic import atomic_path
from slidelabel.store.label_map import read_labels

#: As the label map: deflate with the horizontal predictor, readable by every TIFF reader.
_TIFF_OPTIONS = {"compression": "zlib", "predictor": True, "photometric": "minisblack"}
_TILE = 256


def category_values(superpixels_M: np.ndarray, category_ids_M: np.ndarray, position_of: dict[int, int],
                    count: int) -> np.ndarray:
    """Mask value per superpixel id ``(count + 1,)`` uint8: the category's position + 1, 0 for
    none (and for categories missing from ``position_of``). :class:`OutputError` when two
    categories share a position: the mask could not tell them apart."""
    if position_of and max(position_of.values()) > 254:
        raise OutputError("a uint8 mask holds category positions up to 254; this project has more categories")
    if len(set(position_of.values())) < len(position_of):
        raise OutputError("two categories of this project share a position, so a mask would give them one value; "
                          "the server separates them when it upgrades its database at start: restart it")
    lookup = np.array([position_of.get(c, -1) + 1 for c in category_ids_M.tolist()], np.uint8)
    values = np.zeros(count + 1, np.uint8)
    values[superpixels_M] = lookup
    return values


def write_mask(path: Path, labels_path: Path, value_of_id: np.ndarray, *, mpp: float | None) -> None:
    """Write ``value_of_id[labels]`` as a pyramidal tiled uint8 TIFF at ``path``, atomically.

    Parameters
    ----------
    path : Path
        Destination; its folder must exist.
    labels_path : Path
        The slide's ``labels.tiff``; the mask has its size and pyramid levels.
    value_of_id : ndarray, shape (N + 1,), uint8
        Mask value of each superpixel id (see :func:`category_values`).
    mpp : float or None
        Micrometres per working pixel, stored as resolution in pixels per centimetre on every
        level (large_image reports ``mm_x = mpp / 1000``); None writes none.

    Notes
    -----
    256 px tiles, BigTIFF, reduced levels as SubIFDs as in ``labels.tiff`` (docs/outputs.md);
    read a band of 256 label-map rows at a time.
    """
    value_of_id = np.asarray(value_of_id, np.uint8)
    shapes = _level_shapes(labels_path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tiff:
        for level, shape in enumerate(shapes):
            resolution = {} if mpp is None else {
                "resolution": (1e4 / (mpp * 2**level),) * 2, "resolutionunit": "CENTIMETER"}
            tiff.write(_tiles(labels_path, level, shape, value_of_id), shape=shape, dtype=np.uint8,
                       tile=(_TILE, _TILE), subifds=(len(shapes) - 1 or None) if level == 0 else None,
                       subfiletype=1 if level else 0, metadata=None, **_TIFF_OPTIONS, **resolution)


def _level_shapes(labels_path: Path) -> list[tuple[int, int]]:
    try:
        with tifffile.TiffFile(labels_path) as tiff:
            return [tuple(level.shape) for level in tiff.series[0].levels]
    except (OSError, tifffile.TiffFileError, IndexError) as error:
        raise OutputError(f"label map {labels_path} is not readable ({error})") from error


def _tiles(labels_path: Path, level: int, shape: tuple[int, int], value_of_id: np.ndarray) -> Iterator[np.ndarray]:
    height, width = shape
    for top in range(0, height, _TILE):
        ids = read_labels(labels_path, top=top, height=min(_TILE, height - top), level=level)
        if ids.size and int(ids.max()) >= value_of_id.size:
            raise OutputError(f"{labels_path} holds superpixel {int(ids.max())}, beyond the slide's "
                              f"{value_of_id.size - 1}")
        band = value_of_id[ids]
        for left in range(0, width, _TILE):
            yield band[:, left:left + _TILE]
