"""Segments from images: a label mask (value = segment id) or a Histomics Label pixelmap.

Both are TIFFs (OME-TIFF, pyramidal or not) read window by window from their full-resolution
level, never whole. Their size fixes the downsample: the slide's level-0 size divided by the
image's, which must be a power of two (or be given, and then match).

A **Histomics Label pixelmap** (HistomicsTK's SuperpixelSegmentation with boundaries) is an RGB
image whose value ``v = R + 256 G + 65536 B`` is ``2 i`` inside segment ``i`` and ``2 i + 1``
on its outline, ``i`` being the 0-based row of the segment in the bounding-box CSV (one
``left,top,right,bottom`` line per segment, level-0 pixels). Pixels outside their segment's
box are background: HistomicsTK leaves unsegmented areas black, which reads as segment 0.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import tifffile
import zarr

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers.segments import (
    MAX_SEGMENTS,
    ImportOptions,
    SlideGeometry,
    check_downsample,
    working_size,
)
from slidelabel.pipelines.slide_files import SlideLimits, oversized_chunks, stored_chunks
from slidelabel.pipelines.superpixels import Tile, core_tiles
from slidelabel.pipelines.tiff_structure import open_tiff_file, structure_problem

TILE_SIZE = 2048
#: Tile side (px) that messages suggest for a mask or pixelmap stored in chunks too large to decode.
SUGGESTED_TILE = 512
#: Compressions a label image may be stored with: general-purpose and lossless, so a stored
#: chunk decodes to the size its tags say (a JPEG or PNG stream says its own).
LOSSLESS_CODECS = frozenset({tifffile.COMPRESSION.NONE, tifffile.COMPRESSION.LZW, tifffile.COMPRESSION.ADOBE_DEFLATE,
                             tifffile.COMPRESSION.DEFLATE, tifffile.COMPRESSION.PACKBITS, tifffile.COMPRESSION.LZMA,
                             tifffile.COMPRESSION.ZSTD})


class _TiffImage:
    """Level 0 of a TIFF as a lazily read array, sized to the slide's working grid."""

    def __init__(self, path: Path, geometry: SlideGeometry, options: ImportOptions) -> None:
        self.path = Path(path)
        try:
            self._tiff = open_tiff_file(self.path)
        except (tifffile.TiffFileError, OSError, ValueError, struct.error) as error:
            raise ParameterError(f"{self.path} is not a readable TIFF image ({error})") from None
        if problem := structure_problem(self._tiff):  # before tiff.series reads them
            self.close()
            raise ParameterError(f"{self.path} {problem}")
        try:
            series = self._tiff.series[0]
            level = series.levels[0]
            stored = [page for page in (level.keyframe, *level.pages) if isinstance(page, tifffile.TiffPage)]
        except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as error:
            raise ParameterError(f"{self.path} is not a readable TIFF image ({error})") from None
        self._check_chunks(stored, options.limits)  # before zarr decodes any
        try:
            self._store = series.aszarr(level=0)
            self.array = zarr.open_array(self._store, mode="r")
        except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as error:
            self.close()
            raise ParameterError(f"{self.path} is not a readable TIFF image ({error})") from None
        self.axes, self.dtype = series.axes, series.dtype
        height, width = self.array.shape[:2] if self.axes[:2] == "YX" else (0, 0)
        if not height:
            self.close()
            raise ParameterError(f"{self.path}: expected a 2-D image (axes YX or YXS), got axes {self.axes}")
        self.height, self.width = height, width
        found = geometry.width / width
        downsample = options.downsample
        self.downsample = check_downsample(downsample if downsample is not None else 2.0 ** round(math.log2(max(found, 1))), self.path)
        expected_h, expected_w = working_size(geometry, self.downsample)
        # A writer may round the reduced size down, so one pixel less than ours is the same level.
        if not (expected_w - 1 <= width <= expected_w and expected_h - 1 <= height <= expected_h):
            self.close()
            raise ParameterError(
                f"{self.path} is {width} x {height} px but the {geometry.width} x {geometry.height} px slide at "
                f"downsample {self.downsample:g} is {expected_w} x {expected_h} px: the image is of another level or "
                f"another slide (give --downsample for the level it is at)")

    def _check_chunks(self, pages: list[tifffile.TiffPage], limits: SlideLimits) -> None:
        """:class:`ParameterError` when a stored strip or tile of ``pages`` (level 0's) decodes to
        more than ``limits`` allow: zarr decodes each one whole (a 4 MB mask of one 32768 px tile
        took 4.5 GB of the worker); or when they are stored with an image codec (JPEG, PNG,
        WebP...), whose streams say their own size and are decoded at it whatever the tile's (256
        px tiles whose JPEG headers said 16000 px took 5.1 GB, eighteenth attack), and which no
        label image is stored with; headers only."""
        codec = next((page.compression for page in pages if page.compression not in LOSSLESS_CODECS), None)
        if codec is not None:
            self.close()
            raise ParameterError(
                f"{self.path} is compressed with {codec.name}: a label image is stored with a general-purpose "
                f"lossless compression ({', '.join(sorted(c.name.lower() for c in LOSSLESS_CODECS))}), e.g. "
                f"tifffile.imwrite(path, mask, tile=({SUGGESTED_TILE}, {SUGGESTED_TILE}), compression='zlib')")
        oversized = oversized_chunks(pages, limits)
        if oversized is None:
            return
        page, chunk_bytes = oversized
        self.close()
        raise ParameterError(
            f"{self.path} stores its {page.imagewidth} x {page.imagelength} px image in {stored_chunks(page)} of "
            f"{chunk_bytes / 2**20:,.0f} MB decoded each, more than the {limits.max_chunk_bytes // 2**20} MB this "
            f"server decodes at once (SLIDELABEL_MAX_DECODED_MB): write it tiled, e.g. in {SUGGESTED_TILE} x "
            f"{SUGGESTED_TILE} px tiles (tifffile.imwrite(path, mask, tile=({SUGGESTED_TILE}, {SUGGESTED_TILE}), "
            "compression='zlib'))")

    def window(self, tile: Tile) -> np.ndarray:
        """The pixels of a working-level tile, 0 beyond the image's edge."""
        part = self.array[tile.top : tile.top + tile.height, tile.left : tile.left + tile.width]
        if part.shape[:2] == (tile.height, tile.width):
            return part
        out = np.zeros((tile.height, tile.width) + part.shape[2:], part.dtype)
        out[: part.shape[0], : part.shape[1]] = part
        return out

    def close(self) -> None:
        self._tiff.close()


class MaskSource:
    """A label mask: integer pixel values are segment ids (0 = none), at most :data:`MAX_SEGMENTS`."""

    tile_size = TILE_SIZE

    def __init__(self, path: Path, geometry: SlideGeometry, options: ImportOptions) -> None:
        self.path = Path(path)
        self._image = _TiffImage(self.path, geometry, options)
        self.downsample = self._image.downsample
        if self._image.axes != "YX" or self._image.dtype.kind not in "iu":
            self.close()
            raise ParameterError(f"{self.path}: a label mask holds one channel of integers, got "
                                 f"{self._image.axes} {self._image.dtype}")
        self.n_raw = self._largest_id()
        self.counts: dict[str, int] = {}

    def _largest_id(self) -> int:
        """The largest id, checked against :data:`MAX_SEGMENTS` and for negative values."""
        largest = 0
        for tile in core_tiles(self._image.height, self._image.width, TILE_SIZE):
            block = self._image.window(tile)
            low, high = int(block.min()), int(block.max())
            if low < 0:
                self.close()
                raise ParameterError(f"{self.path}: segment ids must be >= 0, found {low}")
            if high > MAX_SEGMENTS:
                self.close()
                raise ParameterError(f"{self.path}: segment id {high:,} is beyond {MAX_SEGMENTS:,}, the most a label "
                                     f"map holds (24-bit ids); renumber the mask 1..N")
            largest = max(largest, high)
        return largest

    def read_tile(self, tile: Tile) -> np.ndarray:
        return self._image.window(tile).astype(np.int32)

    def source_ids(self, raw_M: np.ndarray) -> np.ndarray:
        return np.asarray(raw_M, np.int64)

    def class_names(self, raw_M: np.ndarray) -> None:
        return None

    def close(self) -> None:
        self._image.close()


def read_bboxes(path: Path) -> np.ndarray:
    """(N, 4) float64 left, top, right, bottom per line of a bounding-box CSV (a header is skipped)."""
    path = Path(path)
    for skip in (0, 1):
        try:
            boxes = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=skip, dtype=np.float64)
        except ValueError:
            continue
        except OSError as error:
            raise ParameterError(f"cannot read the bounding boxes {path}: {error.strerror or error}") from None
        if boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            break
        return boxes
    raise ParameterError(f"{path}: expected one 'left,top,right,bottom' line of numbers per segment")


class PixelmapSource:
    """A Histomics Label pixelmap and its bounding boxes (see the module's docstring)."""

    tile_size = TILE_SIZE

    def __init__(self, path: Path, geometry: SlideGeometry, options: ImportOptions) -> None:
        self.path = Path(path)
        if options.bboxes is None:
            raise ParameterError(f"{self.path} is a Histomics Label pixelmap: give its bounding-box CSV with --bboxes")
        boxes = read_bboxes(options.bboxes)
        if len(boxes) > MAX_SEGMENTS:
            raise ParameterError(f"{options.bboxes} lists {len(boxes):,} segments; a slide holds at most {MAX_SEGMENTS:,}")
        self._image = _TiffImage(self.path, geometry, options)
        if self._image.axes != "YXS" or self._image.dtype != np.uint8 or self._image.array.shape[2] not in (3, 4):
            self.close()
            raise ParameterError(f"{self.path}: a pixelmap is an 8-bit RGB image, got {self._image.axes} {self._image.dtype}")
        self.downsample = self._image.downsample
        # Box of segment i in working pixels (1-based rows: row 0 stands for "no segment").
        d = self.downsample
        self._boxes = np.zeros((len(boxes) + 1, 4), np.int64)
        self._boxes[1:, :2] = np.floor(boxes[:, :2] / d)
        self._boxes[1:, 2:] = np.ceil(boxes[:, 2:] / d)
        self.n_raw = len(boxes)
        self.counts = {"pixels outside their segment's box": 0}
        self._bboxes_path = options.bboxes

    def read_tile(self, tile: Tile) -> np.ndarray:
        rgb = self._image.window(tile).astype(np.int32)
        raw = ((rgb[..., 0] | rgb[..., 1] << 8 | rgb[..., 2] << 16) >> 1) + 1
        if raw.max() > self.n_raw:
            raise ParameterError(f"{self.path}: pixel value {2 * (int(raw.max()) - 1)} means segment {int(raw.max()) - 1}, "
                                 f"but {self._bboxes_path} lists {self.n_raw} segments")
        rows = np.arange(tile.top, tile.top + tile.height)[:, None]
        cols = np.arange(tile.left, tile.left + tile.width)[None, :]
        box = self._boxes[raw]
        inside = (cols >= box[..., 0]) & (rows >= box[..., 1]) & (cols < box[..., 2]) & (rows < box[..., 3])
        self.counts["pixels outside their segment's box"] += int(raw.size - inside.sum())
        return np.where(inside, raw, 0).astype(np.int32)

    def source_ids(self, raw_M: np.ndarray) -> np.ndarray:
        return np.asarray(raw_M, np.int64) - 1

    def class_names(self, raw_M: np.ndarray) -> None:
        return None

    def close(self) -> None:
        self._image.close()
