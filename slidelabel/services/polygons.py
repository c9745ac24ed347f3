"""Polygons of superpixel regions, traced tile by tile over the label map.

A *region* is a set of pixels sharing one non-zero value of a region map (``region_of_id[ids]``
of the label map): a category, to dissolve neighbouring superpixels of one class into one shape,
or the superpixel id itself, for one shape per superpixel. Boundaries follow pixel edges (cracks),
so a polygon covers exactly the pixels of its region before simplification.

How it works, and why it needs little memory:

1. **Edges, tile by tile.** Each tile of the map (``tile_size`` square, with a one-pixel halo)
   yields the unit pixel edges between a region and anything else, directed so that the region
   lies on their left (positive shoelace area for outer rings in x-right, y-down numbers), and the
   *nodes*: pixel corners where three or more regions meet, or two meet diagonally. Only the
   tile is in memory; what is kept grows with the length of the boundaries (straight runs of
   edges, about 100 bytes each while rings are built), never with the slide's area. Tracing a
   range of regions at a time (``regions``, ``rows``) bounds it further.
2. **Rings.** Edges are chained end to start. Where a region touches itself diagonally, the
   chain turns around its own pixel, so regions are 4-connected; a ring that comes back to such a
   corner is split there, giving simple rings (a hole may touch its shell at one point, as the
   OGC rules allow).
3. **Simplification within a pixel.** Rings are cut at nodes into arcs, and each arc is simplified
   by Douglas-Peucker (``tolerance`` in working pixels) in a canonical direction, so the boundary
   two regions share is simplified once: neighbours neither overlap nor leave gaps.
4. **Holes.** Rings with negative area are holes; each goes to the smallest shell of its region
   that contains a pixel of the region next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.path import Path as MplPath

from slidelabel.pipelines.tracing import chain_rings, link_runs, simplify_rings, tile_runs
from slidelabel.store.label_map import label_map_shape, read_labels

#: Superpixels traced per pass for one shape per superpixel (a few tens of MB of boundaries).
SUPERPIXELS_PER_PASS = 2000
#: A pass's window may cover this many times its superpixels' boxes, and at least
#: MIN_WINDOW_PX working pixels, so that close neighbours share a pass.
WINDOW_SLACK = 4
MIN_WINDOW_PX = 512 * 512
#: Side (working pixels) of the grid cells whose row-major order passes take superpixels in.
BATCH_CELL_PX = 512
#: Centre of the pixel left of an edge of each direction, relative to the edge's start.
_INSIDE = ((0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5), (0.5, -0.5))


@dataclass(frozen=True)
class Polygon:
    """One connected part of a region, in level-0 pixels (x right, y down).

    ``shell_K_2`` is the closed outer ring (first point repeated last), ``holes`` closed inner
    rings. Shells have positive shoelace area on the (x, y) numbers (counter-clockwise as
    GeoJSON's right-hand rule reads them), holes negative.
    """

    shell_K_2: np.ndarray
    holes: tuple[np.ndarray, ...] = ()

    @property
    def area(self) -> float:
        """Area in level-0 pixels², holes subtracted."""
        return ring_area(self.shell_K_2) + sum(ring_area(hole) for hole in self.holes)


def ring_area(ring_K_2: np.ndarray) -> float:
    """Signed shoelace area of a closed ring ``(K, 2)``: positive for shells, negative for holes."""
    x, y = ring_K_2[:, 0], ring_K_2[:, 1]
    return float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 2


def label_map_polygons(labels_path: Path, region_of_id: np.ndarray, *, downsample: float,
                       tolerance: float = 1.0, tile_size: int = 2048, rows: tuple[int, int] | None = None,
                       cols: tuple[int, int] | None = None,
                       regions: tuple[int, int] | None = None) -> dict[int, list[Polygon]]:
    """Polygons of the regions of a superpixel label map, reading one tile at a time.

    Parameters
    ----------
    labels_path : Path
        A ``labels.tiff`` (uint32 superpixel ids at the working level).
    region_of_id : ndarray, shape (N + 1,), integer
        Region of each superpixel id (a category's position + 1, or the id itself); 0 leaves the
        superpixel out. Index 0 (no superpixel) should be 0.
    downsample : float
        Level-0 pixels per working pixel (the manifest's ``working.downsample``).
    tolerance : float
        Simplification tolerance in working pixels; 0 keeps every corner.
    tile_size : int
        Edge of the tiles read, in working pixels (16 MB of ids at 2048).
    rows : (int, int), optional
        Working rows ``[first, stop)`` to read; outside them there is no region. Give one row more
        on each side than the regions traced span, so that their corners are judged as in the
        whole map.
    cols : (int, int), optional
        Working columns ``[first, stop)`` to read, as ``rows``.
    regions : (int, int), optional
        Trace only regions ``low <= region < high``; the others still decide where shared
        boundaries are cut, so calls for different ranges simplify a boundary the same way.
        Memory grows with the boundaries traced, so batches of regions bound it.

    Returns
    -------
    dict
        ``{region: [Polygon, ...]}`` for every region traced, parts largest first.
    """
    region_of_id = np.asarray(region_of_id)
    if region_of_id.ndim != 1 or region_of_id.dtype.kind not in "iu":
        raise ValueError(f"region_of_id must be a 1-D integer array, got {region_of_id.ndim}-D {region_of_id.dtype}")
    # Half the memory per tile when the values allow it.
    region_of_id = region_of_id.astype(np.int32 if region_of_id.max(initial=0) < 2**31 else np.int64)
    height, width = label_map_shape(labels_path)

    def read(top: int, left: int, h: int, w: int) -> np.ndarray:
        ids = read_labels(labels_path, left=left, top=top, width=w, height=h)
        if ids.size and int(ids.max()) >= region_of_id.size:
            raise ValueError(f"{labels_path} holds superpixel {int(ids.max())} but region_of_id has "
                             f"{region_of_id.size} entries")
        return region_of_id[ids]

    return _trace(read, height, width, downsample=downsample, tolerance=tolerance, tile_size=tile_size, rows=rows,
                  cols=cols, regions=regions)


def array_polygons(regions_H_W: np.ndarray, *, downsample: float = 1.0, tolerance: float = 1.0,
                   tile_size: int = 2048, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None,
                   regions: tuple[int, int] | None = None) -> dict[int, list[Polygon]]:
    """:func:`label_map_polygons` of a region map already in memory (0 = no region).

    >>> parts = array_polygons(np.array([[1, 1], [0, 1]]), tolerance=0)
    >>> parts[1][0].area
    3.0
    """
    regions_H_W = np.asarray(regions_H_W)
    if regions_H_W.ndim != 2 or regions_H_W.dtype.kind not in "iu":
        raise ValueError(f"regions must be a 2-D integer array, got {regions_H_W.ndim}-D {regions_H_W.dtype}")
    height, width = regions_H_W.shape
    return _trace(lambda top, left, h, w: regions_H_W[top:top + h, left:left + w], height, width,
                  downsample=downsample, tolerance=tolerance, tile_size=tile_size, rows=rows, cols=cols,
                  regions=regions)


def _window(bounds: tuple[int, int] | None, size: int) -> tuple[int, int]:
    """``[first, stop)`` of ``bounds`` clipped to ``[0, size)``; the whole range when None."""
    return (0, size) if bounds is None else (max(bounds[0], 0), min(bounds[1], size))


def _trace(read: Callable[[int, int, int, int], np.ndarray], height: int, width: int, *, downsample: float,
           tolerance: float, tile_size: int, rows: tuple[int, int] | None, cols: tuple[int, int] | None,
           regions: tuple[int, int] | None) -> dict[int, list[Polygon]]:
    if not (np.isfinite(downsample) and downsample > 0):
        raise ValueError(f"downsample must be a positive number of level-0 pixels, got {downsample}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 working pixels, got {tolerance}")
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1 pixel, got {tile_size}")
    # Keys are corners' row-major indices within the window: their order, which decides how an
    # arc is simplified, is the same in every window that holds both ends.
    (first, stop), (x0, x1) = _window(rows, height), _window(cols, width)
    if first >= stop or x0 >= x1:
        return {}
    low, high = regions or (1, np.iinfo(np.int64).max)
    stride = x1 - x0 + 1
    keys_E, dirs_E, lengths_E, regions_E, nodes = _boundaries(
        lambda top, left, h, w: read(top + first, left + x0, h, w), stop - first, x1 - x0, tile_size, low, high)
    order = np.lexsort((keys_E, regions_E))
    keys_E, dirs_E, lengths_E, regions_E = keys_E[order], dirs_E[order], lengths_E[order], regions_E[order]
    del order  # memory grows with the runs: keep only what the next step needs
    ring_edges, offsets = chain_rings(*link_runs(keys_E, dirs_E, lengths_E, regions_E, stride))
    del lengths_E
    vertices = keys_E[ring_edges]
    xy_V_2 = np.stack([vertices % stride + x0, vertices // stride + first], axis=1)
    dirs_V = dirs_E[ring_edges]
    previous = np.arange(-1, vertices.size - 1)
    previous[offsets[:-1]] = offsets[1:] - 1
    keep_V = simplify_rings(xy_V_2, vertices, offsets, np.isin(vertices, nodes), dirs_V != dirs_V[previous],
                            float(tolerance))
    first_R = ring_edges[offsets[:-1]]
    inside_R_2 = _inside_points(keys_E[first_R], dirs_E[first_R], stride) + (x0, first)
    rings = _Rings(regions_E[first_R], xy_V_2, offsets, inside_R_2)
    return rings.polygons(keep_V, downsample)


def _boundaries(read: Callable[[int, int, int, int], np.ndarray], height: int, width: int, tile_size: int,
                low: int, high: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Directed straight boundary runs ``(keys_E, dirs_E, lengths_E, regions_E)`` of the regions
    in ``[low, high)`` (start corner, direction, length in pixels) and the node keys, a tile at a
    time; a corner's key is ``y * (width + 1) + x``."""
    stride = width + 1
    keys, dirs, lengths, regions, nodes = [], [], [], [], []
    for top in range(0, height, tile_size):
        for left in range(0, width, tile_size):
            h, w = min(tile_size, height - top), min(tile_size, width - left)
            window = _haloed(read, top, left, h, w, height, width)
            # Corners on the map's right and bottom edges belong to the last tile of the row/column.
            corners = (h + (top + h == height), w + (left + w == width))
            for found, edges in zip((keys, dirs, lengths, regions, nodes),
                                    tile_runs(window, top, left, stride, *corners, low, high)):
                found.append(edges)
    return tuple(np.concatenate(found) for found in (keys, dirs, lengths, regions, nodes))


def _haloed(read: Callable[[int, int, int, int], np.ndarray], top: int, left: int, h: int, w: int,
            height: int, width: int) -> np.ndarray:
    """The tile with one more pixel on each side, 0 beyond the map."""
    y0, x0 = max(top - 1, 0), max(left - 1, 0)
    y1, x1 = min(top + h + 1, height), min(left + w + 1, width)
    values = read(y0, x0, y1 - y0, x1 - x0)
    window = np.zeros((h + 2, w + 2), values.dtype)
    window[y0 - top + 1:y1 - top + 1, x0 - left + 1:x1 - left + 1] = values
    return window


def _inside_points(keys_R: np.ndarray, dirs_R: np.ndarray, stride: int) -> np.ndarray:
    """Centres ``(R, 2)`` of the region's pixels on the left of the given edges, working pixels."""
    offset = np.asarray(_INSIDE)[dirs_R]
    return np.stack([keys_R % stride, keys_R // stride], axis=1) + offset


class _Rings:
    """Traced rings: vertices ``xy_V_2`` (working pixels, not closed), ring ``r`` being
    ``offsets[r]:offsets[r + 1]``, its region and a pixel centre of the region beside it."""

    def __init__(self, regions_R: np.ndarray, xy_V_2: np.ndarray, offsets: np.ndarray, inside_R_2: np.ndarray) -> None:
        self.regions_R, self.xy_V_2, self.offsets, self.inside_R_2 = regions_R, xy_V_2, offsets, inside_R_2
        starts = offsets[:-1]
        following = np.arange(1, xy_V_2.shape[0] + 1)
        following[offsets[1:] - 1] = starts
        x, y = xy_V_2[:, 0].astype(np.float64), xy_V_2[:, 1].astype(np.float64)
        ring_V = np.repeat(np.arange(starts.size), np.diff(offsets))
        #: Exact signed area before simplification, working pixels².
        self.area_R = np.bincount(ring_V, x * y[following] - x[following] * y, minlength=starts.size) / 2
        self.box_R_4 = (np.stack([np.minimum.reduceat(x, starts), np.minimum.reduceat(y, starts),
                                  np.maximum.reduceat(x, starts), np.maximum.reduceat(y, starts)], axis=1)
                        if starts.size else np.empty((0, 4)))

    def polygons(self, keep_V: np.ndarray, downsample: float) -> dict[int, list[Polygon]]:
        """Shells (largest first) with their holes per region, simplified to ``keep_V``, in
        level-0 pixels."""
        closed = self._closed_rings(keep_V, downsample)
        holes_of = self._hole_owners()
        polygons: dict[int, list[Polygon]] = {}
        areas, regions = self.area_R.tolist(), self.regions_R.tolist()
        for r in np.lexsort((-self.area_R, self.regions_R)).tolist():
            if areas[r] > 0:
                holes = tuple(closed[h] for h in holes_of.get(r, ()))
                polygons.setdefault(regions[r], []).append(Polygon(closed[r], holes))
        return polygons

    def _closed_rings(self, keep_V: np.ndarray, downsample: float) -> list[np.ndarray]:
        kept = np.flatnonzero(keep_V)
        kept_offsets = np.searchsorted(kept, self.offsets)
        # Each ring's first kept vertex again after its last one.
        closing = np.insert(kept, kept_offsets[1:], kept[kept_offsets[:-1]])
        xy = self.xy_V_2[closing].astype(np.float64) * downsample
        bounds = (kept_offsets + np.arange(kept_offsets.size)).tolist()
        return [xy[start:end] for start, end in zip(bounds[:-1], bounds[1:])]

    def _hole_owners(self) -> dict[int, list[int]]:
        """``{shell: [holes]}``: each hole goes to the smallest shell of its region containing
        the region's pixel beside it (compared on the exact rings)."""
        shells = np.flatnonzero(self.area_R > 0)
        box, shell_regions = self.box_R_4[shells], self.regions_R[shells]
        paths: dict[int, MplPath] = {}
        owners: dict[int, list[int]] = {}
        for hole in np.flatnonzero(self.area_R < 0):
            x, y = self.inside_R_2[hole]
            candidates = shells[(shell_regions == self.regions_R[hole]) & (box[:, 0] < x) & (x < box[:, 2])
                                & (box[:, 1] < y) & (y < box[:, 3])]
            for shell in candidates[np.argsort(self.area_R[candidates])]:
                if shell not in paths:
                    paths[shell] = MplPath(self.xy_V_2[self.offsets[shell]:self.offsets[shell + 1]])
                if paths[shell].contains_point((x, y)):
                    owners.setdefault(int(shell), []).append(int(hole))
                    break
        return owners


def nearby_batches(box_M_4: np.ndarray) -> list[np.ndarray]:
    """Rows of ``box_M_4`` (``left, top, right, bottom`` in working pixels) in batches of at most
    :data:`SUPERPIXELS_PER_PASS` whose bounding window stays within :data:`WINDOW_SLACK` times
    their boxes' area (or :data:`MIN_WINDOW_PX`): dense superpixels read the map less than twice,
    scattered ones little more than their own boxes. Taken in row-major order of
    :data:`BATCH_CELL_PX` cells of their centres."""
    centre_M_2 = (box_M_4[:, :2] + box_M_4[:, 2:]) // 2 // BATCH_CELL_PX
    order = np.lexsort((np.arange(len(box_M_4)), centre_M_2[:, 0], centre_M_2[:, 1]))
    area_M = np.prod(box_M_4[:, 2:] - box_M_4[:, :2], axis=1).astype(np.float64)
    batches, current = [], []
    left = top = right = bottom = 0
    covered = 0.0
    for row in order.tolist():
        l, t, r, b = box_M_4[row].tolist()
        if current:
            grown = (max(right, r) - min(left, l)) * (max(bottom, b) - min(top, t))
            if len(current) >= SUPERPIXELS_PER_PASS or grown > max(WINDOW_SLACK * (covered + area_M[row]),
                                                                   MIN_WINDOW_PX):
                batches.append(np.array(current))
                current, covered = [], 0.0
        if not current:
            left, top, right, bottom = l, t, r, b
        left, top, right, bottom = min(left, l), min(top, t), max(right, r), max(bottom, b)
        current.append(row)
        covered += area_M[row]
    if current:
        batches.append(np.array(current))
    return batches
