"""What the web client draws: slide tiles, superpixel index tiles, the superpixel table and
pictures of single superpixels.

Tiles follow large_image's deep-zoom convention: level ``z`` runs from 0 (the whole slide in about
one tile) to ``levels - 1`` (level 0, full resolution), so tile ``(x, y)`` of level ``z`` covers
level-0 pixels ``[x * T * d, (x + 1) * T * d)`` for tile size ``T`` and downsample
``d = 2 ** (levels - 1 - z)``. Superpixel index tiles use the same grid, so the client overlays
them 1:1.

Caches, each bounded: open tile sources of pinned slide files, large_image's decoded tiles
(bounded in :mod:`slidelabel.pipelines.slide_readers`), and blocks of label maps, label-map
descriptions and superpixel tables. Cached entries are keyed by the file's modification time and
size: superpixel files are replaced by renaming, so a recomputed file is a new key.
"""

from __future__ import annotations

import functools
import io
import json
import math
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from large_image import tilesource
from large_image.constants import TILE_FORMAT_PIL
from PIL import Image
from scipy import ndimage

from slidelabel.errors import NotFoundError, SlideUnreadableError
from slidelabel.pipelines.pinned_files import PinnedFile
from slidelabel.pipelines.render import BOUNDARY_RGB
from slidelabel.pipelines.slide_readers import READ_ERRORS, open_reader
from slidelabel.services.turns import Turns
from slidelabel.store.label_map import read_labels
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, read_manifest
from slidelabel.store.superpixel_table import SuperpixelTable, read_table

JPEG_QUALITY = 90
#: Label-map blocks kept decoded: 128 blocks of 256 x 256 uint32 are 32 MB.
LABEL_BLOCKS = 128
LABEL_BLOCK_PX = 256
#: Superpixel tables kept in memory; a million superpixels take about 60 MB.
TABLES = 4
#: Largest picture side (px) of thumbnails and superpixel pictures.
MAX_PICTURE_PX = 2048
#: Superpixel pictures rendered at once per API process (0.2 s of CPU each at 1024 px), and by
#: one user: the others wait on the event loop. One viewer asking for 90 at once took all 40
#: request threads (others' requests 6-10 s, the API +2.7 GB: tenth attack).
PICTURES, PICTURES_PER_USER = 8, 3
#: Seconds a superpixel picture waits for its turn before it is answered busy (503).
PICTURE_WAIT_S = 30.0
_PICTURES = Turns(PICTURES, per_holder=PICTURES_PER_USER)
#: Renders that read more than a tile's worth of a stored level (thumbnails, low-zoom tiles
#: resampled from a larger level, and every render of a gallery link) at once per API process,
#: and for one user or all gallery links together: the others wait on the event loop. A 400 Mpx
#: tiled TIFF without a pyramid: the same thumbnail asked 8 times at once took 78 s of CPU and
#: +1.6 GB; 6 widths of 2 such slides 128 s and +2.2 GB (the twentieth attack). One a holder: with
#: two, one viewer and one link's visitor took all four, and another user's thumbnails waited 9-17
#: s or 30 s for a 503 (the twenty-third attack); now they leave two.
RENDERS, RENDERS_PER_HOLDER = 4, 1
#: Seconds a render waits for its turn before it is answered busy (503).
RENDER_WAIT_S = 30.0
_RENDERS = Turns(RENDERS, per_holder=RENDERS_PER_HOLDER)
#: A slide tile is rendered without a turn when it reads at most this many level-0-tile widths
#: of a stored level each way (2: at most 4 stored tiles for one sent).
CHEAP_TILE_SCALE = 2
#: A superpixel picture shows its bounding box enlarged by this factor, for context.
CONTEXT = 2.0
#: Smallest side of a superpixel picture's region (level-0 px), so that a tiny one is not a blur.
MIN_REGION_PX = 64
#: Rows of the superpixel table turned into JSON at a time (their Python numbers: a few MB).
JSON_ROWS = 16_384


def file_version(path: Path) -> str:
    """Modification time and size of ``path`` as a short string (a cache key and ETag part)."""
    try:
        stat = path.stat()
    except OSError as error:
        raise NotFoundError(f"{path.name} is missing on the server ({error.strerror})") from None
    return f"{stat.st_mtime_ns:x}-{stat.st_size:x}"


def picture_turn_waiting(user_id: int | None = None) -> AbstractAsyncContextManager[None]:
    """A turn to render one superpixel picture, waited for on the event loop; ``user_id`` holds at
    most :data:`PICTURES_PER_USER` at once."""
    return _PICTURES.waiting(PICTURE_WAIT_S, f"superpixel pictures are busy (yours, or {PICTURES} at once) for over "
                                             f"{PICTURE_WAIT_S:.0f} s; try again", holder=user_id)


def render_turn_waiting(holder: Hashable | None = None, gone: Callable[[], Awaitable[bool]] | None = None
                        ) -> AbstractAsyncContextManager[None]:
    """A turn to render a thumbnail or a tile read from a larger stored level, waited for on the
    event loop; ``holder`` (a user id, a gallery link) holds at most :data:`RENDERS_PER_HOLDER`.
    A request whose client has hung up (``gone``, see :meth:`Turns.waiting`) renders nothing."""
    return _RENDERS.waiting(RENDER_WAIT_S, f"slide renders are busy (yours, or {RENDERS} at once) for over "
                                           f"{RENDER_WAIT_S:.0f} s; try again", holder=holder, gone=gone)


#: Open tile sources kept, one per pinned slide file (each holds its pin, hence a descriptor).
SOURCES = 32


@functools.lru_cache(maxsize=SOURCES)
def slide_source(slide: PinnedFile) -> tilesource.FileTileSource:
    """A tile source of the slide that encodes JPEG tiles, filled white past the slide's edge.

    This is what ``large_image.open`` does, with the reader chosen as the project opens slides
    (:data:`~slidelabel.pipelines.slide_readers.PREFERRED_READERS` first), reading the pinned
    file; kept while the pin is (large_image's own cache of sources is keyed by name).
    """
    return open_reader(slide.reader_path, None, encoding="JPEG", jpegQuality=JPEG_QUALITY, edge="#ffffff")[1]


@dataclass(frozen=True)
class TileGrid:
    """A slide's tile pyramid: ``levels``, tile size and the level-0 size in pixels."""

    levels: int
    tile_width: int
    tile_height: int
    width: int
    height: int

    @classmethod
    def of(cls, source: tilesource.FileTileSource) -> TileGrid:
        metadata = source.getMetadata()
        return cls(int(metadata["levels"]), int(metadata["tileWidth"]), int(metadata["tileHeight"]),
                   int(metadata["sizeX"]), int(metadata["sizeY"]))

    def downsample(self, z: int) -> float:
        """Level-0 pixels per pixel of level ``z``."""
        return 2.0 ** (self.levels - 1 - z)

    def check(self, z: int, x: int, y: int) -> None:
        """:class:`NotFoundError` for a tile outside the pyramid."""
        if not 0 <= z < self.levels:
            raise NotFoundError(f"no tile level {z}; levels are 0..{self.levels - 1}")
        columns = math.ceil(self.width / self.downsample(z) / self.tile_width)
        rows = math.ceil(self.height / self.downsample(z) / self.tile_height)
        if not (0 <= x < columns and 0 <= y < rows):
            raise NotFoundError(f"no tile ({x}, {y}) at level {z}; it has {columns} x {rows} tiles")


def slide_tile(source: tilesource.FileTileSource, z: int, x: int, y: int) -> bytes:
    """The JPEG of tile ``(x, y)`` of level ``z``."""
    TileGrid.of(source).check(z, x, y)
    try:
        return source.getTile(x, y, z)
    except READ_ERRORS as error:
        message = f"cannot read tile ({x}, {y}) of level {z}: {error}"
        raise SlideUnreadableError(source.largeImagePath, message) from None


def stored_scale(source: tilesource.FileTileSource, z: int) -> int:
    """Pixels of the stored level a tile of level ``z`` is read from, per pixel sent, each way:
    1 for a level stored as such, ``2 ** k`` for one resampled from the level ``k`` finer.

    Known for large_image's TIFF and OpenSlide readers; for another reader a level is taken to be
    resampled from level 0 (the pyramid is not known)."""
    directories = getattr(source, "_tiffDirectories", None)
    if isinstance(directories, list) and len(directories) == source.levels:
        finer = next((level for level in range(z, source.levels) if directories[level] is not None), None)
        if finer is not None:
            return 2 ** (finer - z)
    levels = getattr(source, "_svslevels", None)
    if isinstance(levels, list) and len(levels) == source.levels and isinstance(levels[z], dict):
        return max(1, int(levels[z].get("scale", 1)))
    return 2 ** (source.levels - 1 - z)


def tile_is_cheap(source: tilesource.FileTileSource, z: int) -> bool:
    """Whether a tile of level ``z`` reads at most :data:`CHEAP_TILE_SCALE` squared stored tiles."""
    return stored_scale(source, z) <= CHEAP_TILE_SCALE


#: Narrowest thumbnail rendered: asked-for widths round up to a power of two from it.
MIN_THUMBNAIL_PX = 64


def thumbnail_width(asked: int) -> int:
    """The width a thumbnail asked ``asked`` px wide is rendered at: the next power of two from
    :data:`MIN_THUMBNAIL_PX`, at most :data:`MAX_PICTURE_PX`.

    >>> [thumbnail_width(w) for w in (16, 64, 65, 256, 300, 2047)]
    [64, 64, 128, 256, 512, 2048]
    """
    return min(MAX_PICTURE_PX, max(MIN_THUMBNAIL_PX, 1 << (max(asked, 1) - 1).bit_length()))


def slide_thumbnail(source: tilesource.FileTileSource, width: int) -> bytes:
    """A JPEG of the whole slide ``width`` pixels wide (never wider than level 0)."""
    try:
        return source.getThumbnail(width=width)[0]
    except READ_ERRORS as error:
        raise SlideUnreadableError(source.largeImagePath, f"cannot read a thumbnail: {error}") from None


@functools.lru_cache(maxsize=LABEL_BLOCKS)
def _label_block(path: str, _version: str, level: int, block_y: int, block_x: int,
                 shape: tuple[int, int]) -> np.ndarray:
    """One :data:`LABEL_BLOCK_PX` block of a label-map level (smaller at its edges), read-only."""
    top, left = block_y * LABEL_BLOCK_PX, block_x * LABEL_BLOCK_PX
    block = read_labels(Path(path), left=left, top=top, level=level, width=min(LABEL_BLOCK_PX, shape[1] - left),
                        height=min(LABEL_BLOCK_PX, shape[0] - top))
    block.setflags(write=False)
    return block


@dataclass(frozen=True)
class LabelMap:
    """A slide's superpixel label map as tiles are cut from it.

    ``downsample`` is level-0 pixels per working pixel; ``shapes`` holds ``(height, width)`` of
    each pyramid level (level k is the working level downsampled by ``2 ** k``).
    """

    path: Path
    version: str
    downsample: float
    shapes: tuple[tuple[int, int], ...]

    def level_for(self, downsample: float) -> int:
        """The coarsest level no coarser than ``downsample`` level-0 px per pixel."""
        level = math.floor(math.log2(max(downsample / self.downsample, 1.0)) + 1e-9)
        return min(level, len(self.shapes) - 1)

    def window(self, level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
        """``(height, width)`` uint32 ids of a window inside ``level``, from cached blocks."""
        out = np.empty((height, width), np.uint32)
        for block_y in range(top // LABEL_BLOCK_PX, (top + height - 1) // LABEL_BLOCK_PX + 1):
            for block_x in range(left // LABEL_BLOCK_PX, (left + width - 1) // LABEL_BLOCK_PX + 1):
                block = _label_block(str(self.path), self.version, level, block_y, block_x, self.shapes[level])
                y0, x0 = block_y * LABEL_BLOCK_PX, block_x * LABEL_BLOCK_PX
                a_y, a_x = max(top, y0), max(left, x0)
                b_y, b_x = min(top + height, y0 + block.shape[0]), min(left + width, x0 + block.shape[1])
                out[a_y - top : b_y - top, a_x - left : b_x - left] = block[a_y - y0 : b_y - y0, a_x - x0 : b_x - x0]
        return out

    def sample(self, xs_level0: np.ndarray, ys_level0: np.ndarray, level: int) -> np.ndarray:
        """Ids at the level-0 points ``xs x ys`` (nearest neighbour on ``level``), 0 off the map.

        Parameters
        ----------
        xs_level0 : (W,) float, x of each output column in level-0 pixels (pixel centres).
        ys_level0 : (H,) float, y of each output row.

        Returns
        -------
        (H, W) uint32.
        """
        scale = self.downsample * 2**level
        height, width = self.shapes[level]
        ix, iy = np.floor(xs_level0 / scale).astype(np.int64), np.floor(ys_level0 / scale).astype(np.int64)
        on_x, on_y = (ix >= 0) & (ix < width), (iy >= 0) & (iy < height)
        out = np.zeros((iy.size, ix.size), np.uint32)
        if not (on_x.any() and on_y.any()):
            return out
        left, top = int(ix[on_x].min()), int(iy[on_y].min())
        window = self.window(level, left, top, int(ix[on_x].max()) + 1 - left, int(iy[on_y].max()) + 1 - top)
        out[np.ix_(on_y, on_x)] = window[np.ix_(iy[on_y] - top, ix[on_x] - left)]
        return out


@functools.lru_cache(maxsize=64)
def _label_map(folder: str, _version: str) -> LabelMap:
    manifest = read_manifest(Path(folder) / MANIFEST_FILE)
    path = Path(folder) / LABELS_FILE
    with tifffile.TiffFile(path) as tiff:
        shapes = tuple(tuple(level.shape) for level in tiff.series[0].levels)
    return LabelMap(path, file_version(path), float(manifest["working"]["downsample"]), shapes)


def _finished(folder: Path) -> Path:
    """The manifest of a finished superpixel folder; :class:`NotFoundError` otherwise."""
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        raise NotFoundError("the slide has no finished superpixels yet; compute them (POST .../superpixels) first")
    return manifest


def superpixels_version(folder: Path) -> str:
    """The version of a finished superpixel folder (its manifest is rewritten last by every run)."""
    return file_version(_finished(folder))


def label_map(folder: Path) -> LabelMap:
    """The label map of a finished superpixel folder."""
    return _label_map(str(folder), superpixels_version(folder))


@functools.lru_cache(maxsize=TABLES)
def _table(path: str, _version: str) -> SuperpixelTable:
    return read_table(Path(path))


def superpixel_table(folder: Path) -> SuperpixelTable:
    """The superpixel table of a finished superpixel folder."""
    return _table(str(folder / TABLE_FILE), superpixels_version(folder))


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def pack_ids(ids: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 with R = id & 255, G = (id >> 8) & 255, B = (id >> 16) & 255."""
    return np.stack([(ids >> shift) & 255 for shift in (0, 8, 16)], axis=-1).astype(np.uint8)


def superpixel_index_tile(labels: LabelMap, grid: TileGrid, z: int, x: int, y: int) -> bytes:
    """PNG of tile ``(x, y)`` of level ``z`` whose pixels are superpixel ids packed in RGB
    (:func:`pack_ids`); 0 where there is no superpixel or no slide."""
    grid.check(z, x, y)
    downsample = grid.downsample(z)
    xs = (x * grid.tile_width + np.arange(grid.tile_width) + 0.5) * downsample
    ys = (y * grid.tile_height + np.arange(grid.tile_height) + 0.5) * downsample
    ids = labels.sample(xs, ys, labels.level_for(downsample))
    ids[:, xs >= grid.width] = 0
    ids[ys >= grid.height, :] = 0
    return _png(pack_ids(ids))


def _json_list(values: np.ndarray | None, decimals: int | None = None) -> Iterator[bytes]:
    """``values`` (rounded to ``decimals``) as the compact JSON list ``json.dumps`` writes, made
    :data:`JSON_ROWS` rows at a time; ``null`` for None."""
    if values is None:
        yield b"null"
        return
    yield b"["
    for start in range(0, len(values), JSON_ROWS):
        rows = values[start:start + JSON_ROWS]
        rows = rows if decimals is None else np.round(rows, decimals)
        yield (b"," if start else b"") + json.dumps(rows.tolist(), separators=(",", ":"))[1:-1].encode()
    yield b"]"


def table_json(table: SuperpixelTable) -> bytes:
    """The table as JSON: ``ids``, ``bbox_level0`` ([x_min, y_min, x_max, y_max], max exclusive),
    ``centroid_level0`` ([x, y]), ``area_px`` (working px), ``area_um2`` (null if unknown) and
    ``tissue_fraction`` (0-1, share of the superpixel's pixels that are tissue).

    Written :data:`JSON_ROWS` rows at a time, so that besides the body (twice, while it is joined)
    only one block's Python numbers exist: made from whole columns' ``tolist()`` it held 8 times
    the body (409,520 superpixels: 245 MB for 30 MB; now 59 MB)."""
    columns = (("ids", table.ids, None), ("bbox_level0", table.bbox_level0, None),
               ("centroid_level0", table.centroid_level0, 2), ("area_px", table.area_px, None),
               ("area_um2", table.area_um2, 2), ("tissue_fraction", table.tissue_fraction, 3))
    parts = [b"{"]
    for number, (name, values, decimals) in enumerate(columns):
        parts.append(f'{"," if number else ""}"{name}":'.encode())
        parts.extend(_json_list(values, decimals))
    parts.append(b"}")
    return b"".join(parts)


#: Arrays of :func:`table_binary`, in order, little-endian.
BINARY_LAYOUT = "ids:uint32[N];bbox_level0:int32[N,4];centroid_level0:float32[N,2];area_px:uint32[N]"


def table_binary(table: SuperpixelTable) -> bytes:
    """The table as the arrays of :data:`BINARY_LAYOUT` one after the other (16 + 8 + 4 + 4
    bytes per superpixel), for clients that read them into typed arrays."""
    return b"".join(np.ascontiguousarray(array, dtype=dtype).tobytes() for array, dtype in (
        (table.ids, "<u4"), (table.bbox_level0, "<i4"), (table.centroid_level0, "<f4"), (table.area_px, "<u4")))


def superpixel_picture(source: tilesource.FileTileSource, labels: LabelMap, table: SuperpixelTable,
                       superpixel: int, size: int) -> bytes:
    """PNG ``size`` x ``size`` of a superpixel's neighbourhood (its bounding box enlarged
    :data:`CONTEXT` times, square) with the superpixel outlined; white beyond the slide."""
    if not 1 <= superpixel <= table.ids.size:
        raise NotFoundError(f"no superpixel {superpixel}; this slide has 1..{table.ids.size}")
    x_min, y_min, x_max, y_max = table.bbox_level0[superpixel - 1].tolist()
    side = max(x_max - x_min, y_max - y_min, MIN_REGION_PX / CONTEXT) * CONTEXT
    left, top = (x_min + x_max - side) / 2, (y_min + y_max - side) / 2
    per_pixel = side / size  # level-0 px per picture px
    grid = TileGrid.of(source)
    canvas = Image.new("RGB", (size, size), "white")
    inside = (max(left, 0), max(top, 0), min(left + side, grid.width), min(top + side, grid.height))
    box = [round((inside[0] - left) / per_pixel), round((inside[1] - top) / per_pixel),
           round((inside[2] - left) / per_pixel), round((inside[3] - top) / per_pixel)]
    if box[2] > box[0] and box[3] > box[1]:
        region = {"left": math.floor(inside[0]), "top": math.floor(inside[1]), "units": "base_pixels",
                  "right": math.ceil(inside[2]), "bottom": math.ceil(inside[3])}
        output = {"maxWidth": box[2] - box[0], "maxHeight": box[3] - box[1]}
        try:
            image, _ = source.getRegion(region=region, output=output, format=TILE_FORMAT_PIL)
        except READ_ERRORS as error:
            raise SlideUnreadableError(source.largeImagePath, f"cannot read region {region}: {error}") from None
        image = image.convert("RGBA").resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.BILINEAR)
        canvas.paste(image, box[:2], mask=image)  # transparent (unscanned) areas stay white
    centres = (np.arange(size) + 0.5) * per_pixel
    mask = labels.sample(left + centres, top + centres, labels.level_for(per_pixel)) == superpixel
    width = max(1, size // 96)
    outline = mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=1)
    rgb = np.asarray(canvas).copy()
    rgb[outline] = BOUNDARY_RGB
    return _png(rgb)
