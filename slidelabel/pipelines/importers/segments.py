"""Segments made elsewhere, rasterised tile by tile into the ids of a label map.

A :class:`SegmentSource` gives the *source ids* (1..``n_raw``) of each tile of the working grid;
:func:`rasterise` writes them to a :class:`~slidelabel.store.label_map.LabelMapWriter`, gathers
the per-segment statistics, and renumbers: the segments that kept at least one pixel become
1..N in source order, so the label map and table are exactly those of computed superpixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers.geojson import read_geojson
from slidelabel.pipelines.importers.polygons import PolygonSet, fill_polygons, self_crossing, tile_buckets
from slidelabel.pipelines.slide_files import SlideLimits
from slidelabel.pipelines.superpixel_stats import SuperpixelStatistics, SuperpixelSummary
from slidelabel.pipelines.superpixels import Block, Tile, core_tiles
from slidelabel.store.label_map import LabelMapWriter

#: The most segments a slide may have: the overlay packs ids into 24-bit RGB index tiles
#: (:func:`slidelabel.services.tiles.pack_ids`).
MAX_SEGMENTS = (1 << 24) - 1
#: A file where more than this share of the polygons lies wholly outside the slide is refused:
#: its coordinates are most likely in another level's pixels or belong to another slide.
MAX_OUTSIDE_SHARE = 0.1
#: The most vertices a GeoJSON file may hold, counted as it is read: 16 bytes each in memory
#: (1 GiB), 30 each for two million traced cells.
MAX_VERTICES = 1 << 26
#: Drawing a polygon visits each pixel of its bounding box (clipped to the slide) and, on each of
#: its rows, each of its edges. The polygons of a file may cost that many times the label map's
#: pixels (cells barely overlap; region annotations are a few layers deep) or :data:`MIN_DRAW_WORK`
#: on a small slide: 2,000 squares each covering a slide were each drawn over it all (13.2 Gpx).
MAX_DRAW_LAYERS = 16
MIN_DRAW_WORK = 1 << 30

#: Gives the bool (h, w) tissue pixels of a working-level tile.
TissueFunction = Callable[[Tile], np.ndarray]


@dataclass(frozen=True)
class SlideGeometry:
    """The slide segments are imported onto: level-0 ``width`` x ``height`` px."""

    width: int
    height: int


@dataclass(frozen=True)
class ImportOptions:
    """How to read a source: ``downsample`` (level-0 px per label-map px, a power of two; None:
    1 for polygons, the image's own for rasters), ``bboxes`` (Histomics Label's bounding-box CSV),
    ``even_odd`` (fill self-crossing polygons by the even-odd rule instead of refusing them) and
    ``limits`` (a raster's strips or tiles decode to at most ``limits.max_chunk_bytes`` each: a
    server's :func:`~slidelabel.services.slides.slide_limits`)."""

    downsample: float | None = None
    bboxes: Path | None = None
    even_odd: bool = False
    limits: SlideLimits = field(default_factory=SlideLimits)


class SegmentSource(Protocol):
    """Segments of one slide, read tile by tile at ``downsample``; ids 1..``n_raw``, 0 = none."""

    path: Path
    downsample: float
    n_raw: int
    tile_size: int
    counts: dict[str, int]

    def read_tile(self, tile: Tile) -> np.ndarray:
        """int32 (h, w) source ids of a working-level tile."""

    def source_ids(self, raw_M: np.ndarray) -> np.ndarray:
        """int64 ids the source itself gives the segments ``raw_M`` (a Feature's index in the
        file, a mask's value, a pixelmap's 0-based index)."""

    def class_names(self, raw_M: np.ndarray) -> list[str | None] | None:
        """The imported class of each of ``raw_M``, or None when the source has no classes."""

    def close(self) -> None:
        """Release open files."""


@dataclass
class Rasterised:
    """What :func:`rasterise` found: statistics of the kept segments (working px; ``seed_ids``
    are their source ids, ascending) and ``counts`` of what was dropped or clipped."""

    summary: SuperpixelSummary
    counts: dict[str, int] = field(default_factory=dict)


def check_downsample(downsample: float, path: Path) -> float:
    """``downsample`` when it is a power of two >= 1 (the pyramid steps label maps sit on)."""
    if not (downsample >= 1 and math.log2(downsample).is_integer()):
        raise ParameterError(f"{path}: downsample {downsample:g} is not a power of two (1, 2, 4, ...); "
                             f"slidelabel's label maps sit on the pyramid's power-of-two levels")
    return float(downsample)


def working_size(geometry: SlideGeometry, downsample: float) -> tuple[int, int]:
    """(height, width) of the label map at ``downsample``."""
    return math.ceil(geometry.height / downsample), math.ceil(geometry.width / downsample)


def rasterise(source: SegmentSource, writer: LabelMapWriter, *, geometry: SlideGeometry,
              tissue: TissueFunction, progress: Callable[[int, int], None] | None = None) -> Rasterised:
    """Write the source's segments to ``writer`` tile by tile (``source.tile_size`` working px),
    renumbered 1..N in source order, and finish it; ``tissue`` gives each tile's tissue pixels.

    Raises
    ------
    ParameterError
        No segment kept a pixel.
    """
    height, width = working_size(geometry, source.downsample)
    stats = SuperpixelStatistics(source.n_raw)
    tiles = core_tiles(height, width, source.tile_size)
    for done, tile in enumerate(tiles, 1):
        raw = source.read_tile(tile)
        if raw.any():
            stats.add(Block(tile, raw, tissue(tile)))
            writer.write_block(tile.top, tile.left, raw.astype(np.uint32, copy=False))
        if progress is not None:
            progress(done, len(tiles))
    summary = stats.summary()
    counts = dict(source.counts)
    if summary.area.size == 0:
        raise ParameterError(f"{source.path}: no segment covers a pixel of the slide "
                             f"({_describe(counts) or 'the source is empty'})")
    counts["no pixels"] = source.n_raw - summary.area.size - counts.get("outside the slide", 0)
    writer.finish(summary.lut(source.n_raw))
    return Rasterised(summary, {name: n for name, n in counts.items() if n})


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts.items() if n)


def _check_draw_work(path: Path, polygons: PolygonSet, drawn: np.ndarray, height: int, width: int,
                     downsample: float) -> None:
    """Refuse, before any pixel is drawn, polygons whose drawing would cost more than
    :data:`MAX_DRAW_LAYERS` times the label map's ``height`` x ``width`` pixels (rows and columns
    as :func:`~.polygons.fill_polygons` draws them)."""
    area = edge_work = 0.0
    vertices = 0
    for start in range(0, drawn.size, 1 << 20):  # a million polygons at a time: temporaries stay small
        which = drawn[start : start + (1 << 20)]
        bbox = polygons.bbox_P_4[which]
        rows = (np.clip(np.ceil(bbox[:, 3] / downsample - 0.5), 0, height)
                - np.clip(np.ceil(bbox[:, 1] / downsample - 0.5), 0, height)).clip(0)
        columns = (np.clip(np.ceil(bbox[:, 2] / downsample - 0.5), 0, width)
                   - np.clip(np.ceil(bbox[:, 0] / downsample - 0.5), 0, width)).clip(0)
        last_ring = polygons.polygon_ring_end_P[which] - 1
        first_ring = np.where(which > 0, polygons.polygon_ring_end_P[which - 1], 0) - 1
        first_vertex = np.where(first_ring >= 0, polygons.ring_end_R[first_ring], 0)
        polygon_vertices = (polygons.ring_end_R[last_ring] - first_vertex).astype(np.float64)
        area += float(rows @ columns)
        edge_work += float(rows @ polygon_vertices)
        vertices += int(polygon_vertices.sum())
    pixels = float(height) * width
    budget = max(MAX_DRAW_LAYERS * pixels, MIN_DRAW_WORK)
    if area + edge_work <= budget:
        return
    fix = (f"merge or drop overlapping polygons, or import at a larger --downsample (downsample {downsample:g} "
           f"draws {height:,} x {width:,} px)")
    if edge_work > area:
        raise ParameterError(
            f"{path}: drawing these polygons would test {edge_work:,.0f} edges row by row ({vertices:,} "
            f"vertices across their rows), more than the {budget:,.0f} allowed ({MAX_DRAW_LAYERS} times the label "
            f"map's {pixels:,.0f} pixels, at least {MIN_DRAW_WORK:,}); simplify the outlines (e.g. shapely's "
            f"simplify(0.5)), or {fix}")
    raise ParameterError(
        f"{path}: the bounding boxes of its {drawn.size:,} polygons cover {area:,.0f} pixels, {area / pixels:,.1f} "
        f"layers of the label map's {pixels:,.0f}; at most {budget / pixels:,.0f} are drawn here (cells barely overlap, "
        f"region annotations are a few layers deep): {fix}")


class GeoJsonSource:
    """Polygons of a GeoJSON file, rasterised at ``options.downsample`` (default 1: level 0)."""

    tile_size = 2048

    def __init__(self, path: Path, geometry: SlideGeometry, options: ImportOptions) -> None:
        self.path = Path(path)
        self.downsample = check_downsample(options.downsample or 1.0, self.path)
        read = read_geojson(self.path, max_polygons=MAX_SEGMENTS, max_vertices=MAX_VERTICES)
        polygons = read.polygons
        self.counts = dict(read.skipped)
        if not polygons.size:
            raise ParameterError(f"{self.path}: no usable polygon ({_describe(self.counts) or 'no Features'}); "
                                 "a polygon needs rings of 3 or more points with finite level-0 pixel "
                                 "coordinates around an area")
        crossing = self_crossing(polygons)
        if crossing.any() and not options.even_odd:
            feature = int(read.feature_index_P[np.argmax(crossing)])
            raise ParameterError(
                f"{self.path}: {int(crossing.sum())} polygon(s) cross themselves, the first is feature {feature}; "
                f"repair them (e.g. shapely's make_valid) or pass --even-odd to fill them by the even-odd rule")
        self.counts["self-crossing, filled even-odd"] = int(crossing.sum())
        bbox = polygons.bbox_P_4
        outside = (bbox[:, 2] <= 0) | (bbox[:, 3] <= 0) | (bbox[:, 0] >= geometry.width) | (bbox[:, 1] >= geometry.height)
        if polygons.size and outside.mean() > MAX_OUTSIDE_SHARE:
            raise ParameterError(
                f"{self.path}: {int(outside.sum()):,} of {polygons.size:,} polygons lie outside the "
                f"{geometry.width} x {geometry.height} px slide; coordinates must be level-0 pixels of this slide")
        inside = ~outside
        clipped = inside & ((bbox[:, 0] < 0) | (bbox[:, 1] < 0) | (bbox[:, 2] > geometry.width) | (bbox[:, 3] > geometry.height))
        self.counts["outside the slide"] = int(outside.sum())
        self.counts["clipped at the slide's edge"] = int(clipped.sum())
        self.polygons, self.n_raw = polygons, polygons.size
        self._read = read
        height, width = working_size(geometry, self.downsample)
        drawn = np.flatnonzero(inside)
        _check_draw_work(self.path, polygons, drawn, height, width, self.downsample)
        tile_size = self.tile_size
        self._tiles_x = math.ceil(width / tile_size)
        starts, order = tile_buckets(bbox[drawn], downsample=self.downsample, tile_size=tile_size,
                                     tiles_x=self._tiles_x, tiles_y=math.ceil(height / tile_size))
        self._starts, self._drawn = starts, drawn[order]
        self._values = np.arange(1, polygons.size + 1, dtype=np.int32)
        self.overlap_px = 0

    def read_tile(self, tile: Tile) -> np.ndarray:
        size = self.tile_size
        if tile.height > size or tile.width > size or tile.top % size or tile.left % size:
            raise ValueError(f"tile {tile} is not on this source's {size} px grid")
        index = tile.top // size * self._tiles_x + tile.left // size
        ids = np.zeros((tile.height, tile.width), np.int32)
        which = self._drawn[self._starts[index] : self._starts[index + 1]]
        if which.size:
            self.overlap_px += fill_polygons(ids, self.polygons, which, self._values, top=tile.top, left=tile.left,
                                             downsample=self.downsample)
            self.counts["pixels drawn over an earlier polygon"] = self.overlap_px
        return ids

    def source_ids(self, raw_M: np.ndarray) -> np.ndarray:
        return self._read.feature_index_P[np.asarray(raw_M) - 1]

    def class_names(self, raw_M: np.ndarray) -> list[str | None] | None:
        if not self._read.class_names:
            return None
        names = np.asarray(self._read.class_names + [None], dtype=object)
        return names[self._read.class_P[np.asarray(raw_M) - 1]].tolist()

    def close(self) -> None:
        pass
