"""Reading whole-slide images through large_image.

Which reader opens a file is decided in :mod:`slidelabel.pipelines.slide_readers`; files are
checked before any reader sees them in :mod:`slidelabel.pipelines.slide_files`.

Coordinates: *level-0* pixels are the slide's full-resolution pixels; *working* pixels at a
``downsample`` d are level-0 pixels divided by d, so working pixel ``x`` covers level-0 pixels
``[x * d, (x + 1) * d)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import large_image.config
import numpy as np
from large_image import tilesource
from large_image.constants import TILE_FORMAT_NUMPY

from slidelabel.errors import (
    MissingMppError,
    ParameterError,
    SlideUnreadableError,
)
from slidelabel.pipelines.slide_files import check_slide_file
from slidelabel.pipelines.slide_readers import READ_ERRORS, list_sources, open_reader
from slidelabel.pipelines.tiff_tiles import TiffTiles, TileDecodeError, assemble_window

logger = logging.getLogger(__name__)

#: A target resolution this close to level 0 (relative) is taken as level 0 rather than refused:
#: scanners' nominal 20x ranges over about 0.49-0.51 um/px.
LEVEL0_TOLERANCE = 0.05
#: Magnification of a 1 um/px image: 20x is 0.5 um/px, 40x is 0.25 um/px.
_MAGNIFICATION_TIMES_MPP = 10.0


def mpp_for_magnification(magnification: float) -> float:
    """Micrometres per pixel of an objective magnification, ``10 / magnification`` (20x -> 0.5)."""
    if not magnification > 0:
        raise ParameterError(f"magnification must be > 0, got {magnification}")
    return _MAGNIFICATION_TIMES_MPP / magnification


def _working_size(size_level0: int, downsample: float) -> int:
    # Rounding first keeps 4096 / (4096 / 2048) from becoming 2048.0000001 and ceiling to 2049.
    return math.ceil(round(size_level0 / downsample, 6))


@dataclass(frozen=True)
class SlideInfo:
    """What a slide is: size, pyramid, pixel size and where it came from.

    ``mpp`` and ``mpp_y`` are micrometres per level-0 pixel along x and y (equal for square
    pixels; both None when unknown). ``mpp_source`` is ``"metadata"``, ``"user"`` (``base_mpp``
    given) or ``"none"``. ``magnification`` is the objective power of level 0 (from metadata, or
    ``10 / mpp`` when the user gave the mpp). ``levels`` counts the pyramid levels stored in the
    file; sizes are in level-0 pixels.
    """

    path: str
    source: str
    width: int
    height: int
    levels: int
    tile_width: int
    tile_height: int
    mpp: float | None
    mpp_y: float | None
    mpp_source: str
    magnification: float | None
    vendor: str | None
    associated_images: tuple[str, ...]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the fields (``associated_images`` as a list)."""
        fields = dataclasses.asdict(self)
        fields["associated_images"] = list(self.associated_images)
        return fields


@dataclass(frozen=True)
class WorkingScale:
    """A resolution to work at: ``downsample`` level-0 px per working px (>= 1), ``mpp`` um per
    working px (None when unknown) and the slide's ``width`` x ``height`` in working px."""

    downsample: float
    mpp: float | None
    width: int
    height: int


def _vendor(internal: dict) -> str | None:
    """Scanner vendor from a source's internal metadata: openslide's vendor, else the TIFF Make."""
    vendor = (internal.get("openslide") or {}).get("openslide.vendor")
    vendor = vendor or (internal.get("tiff") or {}).get("make")
    return str(vendor) if vendor else None


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    """RGB uint8 ``(h, w, 3)`` from large_image's numpy output: grey, grey+alpha, RGB or RGBA.

    Transparent pixels (openslide's outside-of-scan areas) are composited onto white, as glass.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    has_alpha = pixels.shape[2] in (2, 4)
    color = pixels[:, :, :-1] if has_alpha else pixels
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    if has_alpha and pixels[:, :, -1].min() < 255:
        alpha = pixels[:, :, -1:].astype(np.float32) / 255.0
        color = color * alpha + 255.0 * (1.0 - alpha)
        return np.rint(color).astype(np.uint8)
    return np.ascontiguousarray(color, dtype=np.uint8)


def _fit(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop or edge-pad ``rgb`` to exactly ``(height, width)``; large_image keeps the aspect
    ratio by flooring one side, and the working pixel straddling the slide edge is not read."""
    rgb = rgb[:height, :width]
    pad_h, pad_w = height - rgb.shape[0], width - rgb.shape[1]
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return rgb


@contextlib.contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn the readers' errors on a damaged file into a SlideUnreadableError naming ``what``."""
    try:
        yield
    except READ_ERRORS as error:
        raise SlideUnreadableError(path, f"cannot read {what}: {error}") from error


class Slide:
    """An open whole-slide image.

    Parameters
    ----------
    path : str or Path
        Slide file.
    base_mpp : float, optional
        Micrometres per level-0 pixel, overriding the metadata (for slides without it).
    source : str, optional
        Name of the large_image tile source to read with (see :func:`list_sources`); default:
        the first installed one that can open the file.

    Raises
    ------
    SlideNotFoundError
        The file does not exist.
    SlideUnreadableError
        A directory, empty, truncated, not an image, an unsupported format or pixel type.
    ParameterError
        Unknown source name or ``base_mpp <= 0``.
    """

    def __init__(
        self, path: str | Path, *, base_mpp: float | None = None, source: str | None = None
    ) -> None:
        self.path = Path(path)
        if base_mpp is not None and not base_mpp > 0:
            raise ParameterError(
                f"cannot open {self.path}: base mpp must be > 0 um/px, got {base_mpp}"
            )
        if source is not None and source not in list_sources():
            raise ParameterError(
                f"cannot open {self.path}: unknown slide reader {source!r}; "
                f"installed readers: {', '.join(list_sources())}"
            )
        check_slide_file(self.path)
        source_name, self._source = open_reader(self.path, source)
        self._direct: TiffTiles | None = None
        with _reading(self.path, "its metadata"):
            self.info = self._read_info(source_name, base_mpp)
        self._check_pixels()
        self._direct = self._open_direct()

    def _read_info(self, source_name: str, base_mpp: float | None) -> SlideInfo:
        metadata = self._source.getMetadata()
        mm_x, mm_y = metadata.get("mm_x"), metadata.get("mm_y")
        magnification = metadata.get("magnification")
        if base_mpp is not None:
            mpp, mpp_y, mpp_source = base_mpp, base_mpp, "user"
            magnification = _MAGNIFICATION_TIMES_MPP / base_mpp
        elif mm_x:
            mpp = round(mm_x * 1000.0, 6)
            mpp_y = round(mm_y * 1000.0, 6) if mm_y else mpp
            mpp_source = "metadata"
        else:
            mpp, mpp_y, mpp_source = None, None, "none"
        # large_image's "levels" counts virtual power-of-two levels; the stored ones are those
        # its own region reader treats as non-empty (no public accessor exists for this).
        stored_levels = sum(level is not None for level in self._source._nonemptyLevelsList())
        return SlideInfo(
            path=str(self.path),
            source=source_name,
            width=int(metadata["sizeX"]),
            height=int(metadata["sizeY"]),
            levels=stored_levels,
            tile_width=int(metadata["tileWidth"]),
            tile_height=int(metadata["tileHeight"]),
            mpp=mpp,
            mpp_y=mpp_y,
            mpp_source=mpp_source,
            magnification=float(magnification) if magnification else None,
            vendor=_vendor(self._source.getInternalMetadata() or {}),
            associated_images=tuple(self._source.getAssociatedImagesList()),
        )

    def _check_pixels(self) -> None:
        """Refuse non-8-bit or multispectral images, and decode one tile now so that a missing
        codec or a damaged file fails at open rather than in the middle of a job."""
        metadata = self._source.getMetadata()
        dtype, bands = metadata.get("dtype"), metadata.get("bandCount")
        if dtype != "uint8" or bands not in (1, 2, 3, 4):
            raise SlideUnreadableError(
                self.path, f"has {bands} channels of {dtype}; slidelabel reads 8-bit RGB slides"
            )
        # The last level-0 tile: a file cut short (if not a TIFF, checked already) loses it first.
        info = self.info
        left = (info.width - 1) // info.tile_width * info.tile_width
        top = (info.height - 1) // info.tile_height * info.tile_height
        self.read_region(left, top, info.width - left, info.height - top)

    def _open_direct(self) -> TiffTiles | None:
        """The fast read path for the levels of a tiled TIFF where it gives large_image's pixels.

        Each stored level is probed with one tile from its middle, decoded both ways; a level
        whose pixels differ (or a file that is no tiled TIFF) is left to large_image.
        """
        icc = self._reader.getICCProfiles(0) if large_image.config.getConfig("icc_correction") else None
        direct = TiffTiles.open(self.path, self.info.width, self.info.height, icc)
        if direct is None:
            return None
        for level in direct.levels():
            if level >= self._reader.levels:
                direct.drop_level(level)
                continue
            width, height = direct.stored_size(level)
            # One of large_image's tiles, from the middle (a window across tiles would read four).
            x0 = width // 2 // self.info.tile_width * self.info.tile_width
            y0 = height // 2 // self.info.tile_height * self.info.tile_height
            x1, y1 = min(x0 + self.info.tile_width, width), min(y0 + self.info.tile_height, height)
            try:
                same = np.array_equal(direct.window(level, x0, y0, x1, y1), self._tiled_window(level, x0, y0, x1, y1))
            except (TileDecodeError, *READ_ERRORS):
                same = False  # a damaged tile: reading it later says so, through large_image
            if not same:
                logger.debug("%s: level %d read directly differs from large_image's; not used", self.path, level)
                direct.drop_level(level)
        if not direct.levels():
            direct.close()
            return None
        return direct

    @property
    def _reader(self) -> tilesource.FileTileSource:
        if self._source is None:
            raise ValueError(f"{self.path} is closed")
        return self._source

    def require_mpp(self) -> float:
        """Micrometres per level-0 pixel; :class:`MissingMppError` when the slide has none."""
        if self.info.mpp is None:
            raise MissingMppError(
                self.path,
                "the slide has no pixel size (um per pixel) in its metadata; give its level-0 pixel size as "
                "the superpixel option base_mpp (--base-mpp on the command line), e.g. 0.25 for 40x or 0.5 "
                "for 20x scans",
            )
        return self.info.mpp

    def working_scale(
        self, *, mpp: float | None = None, magnification: float | None = None
    ) -> WorkingScale:
        """The scale that gives ``mpp`` um per pixel or ``magnification`` (at most one of them).

        Neither gives level 0. A magnification means ``10 / magnification`` um/px, so either
        needs the slide's mpp (:class:`MissingMppError`). A target finer than level 0 by more
        than :data:`LEVEL0_TOLERANCE` is a :class:`ParameterError`; a closer one is level 0.

        The downsample is the power of two nearest the target (10x on a 0.499 um/px scan is
        downsample 2, 0.998 um/px): the pyramid's own steps, whose tiles :meth:`read_region`
        assembles without resampling, so that overlapping windows agree on every pixel. The
        returned ``mpp`` is the one actually used.
        """
        if mpp is not None and magnification is not None:
            raise ParameterError("give at most one of mpp and magnification")
        if mpp is not None and not mpp > 0:
            raise ParameterError(f"mpp must be > 0 um/px, got {mpp}")
        info = self.info
        if mpp is None and magnification is None:
            return WorkingScale(1.0, info.mpp, info.width, info.height)
        target_mpp = mpp if mpp is not None else mpp_for_magnification(magnification)
        downsample = target_mpp / self.require_mpp()
        if downsample < 1.0 - LEVEL0_TOLERANCE:
            target = f"{target_mpp:g} um/px" + (f" ({magnification:g}x)" if magnification else "")
            raise ParameterError(
                f"{self.path}: target {target} is finer than the slide's level 0 "
                f"({info.mpp:g} um/px)"
            )
        downsample = 2.0 ** round(math.log2(max(downsample, 1.0)))
        return WorkingScale(
            downsample=downsample,
            mpp=info.mpp * downsample,
            width=_working_size(info.width, downsample),
            height=_working_size(info.height, downsample),
        )

    def read_region(
        self, left: int, top: int, width: int, height: int, *, downsample: float = 1.0,
        needed: np.ndarray | None = None,
    ) -> np.ndarray:
        """Pixels of a window given in working pixels of ``downsample``.

        Parameters
        ----------
        left, top : int
            Window corner in working pixels; may be negative or beyond the slide.
        width, height : int
            Window size in working pixels (>= 0).
        downsample : float
            Level-0 pixels per working pixel (>= 1). At a power of two (what
            :meth:`working_scale` gives) the window is assembled from large_image's tiles of that
            level, so overlapping windows agree exactly; at any other downsample large_image
            resamples the region as a whole.
        needed : numpy.ndarray, optional
            bool ``(height, width)``: the pixels the caller will use. Stored tiles that hold none
            of them are not decoded and come back white (glass around tissue, say); default all.

        Returns
        -------
        numpy.ndarray
            ``(height, width, 3)`` uint8 RGB of ``[left, left + width) x [top, top + height)``;
            parts outside the slide are white (255).
        """
        if width < 0 or height < 0:
            raise ParameterError(f"window size must be >= 0, got {width} x {height}")
        if not downsample >= 1.0:
            raise ParameterError(f"downsample must be >= 1, got {downsample}")
        if needed is not None and needed.shape != (height, width):
            raise ParameterError(f"needed must be ({height}, {width}), got {needed.shape}")
        rgb = np.full((height, width, 3), 255, np.uint8)
        x0, y0 = max(left, 0), max(top, 0)
        x1 = min(left + width, _working_size(self.info.width, downsample))
        y1 = min(top + height, _working_size(self.info.height, downsample))
        if x1 <= x0 or y1 <= y0:
            return rgb
        if needed is not None:
            needed = needed[y0 - top : y1 - top, x0 - left : x1 - left]
        log2 = math.log2(downsample)
        level = int(log2) if log2 == int(log2) and log2 < self._reader.levels else None
        stored = self._direct.stored_size(level) if self._direct and level is not None else None
        if stored is not None and x1 <= stored[0] and y1 <= stored[1]:
            try:
                pixels = self._direct.window(level, x0, y0, x1, y1, needed=needed)
            except TileDecodeError as error:
                raise SlideUnreadableError(self.path, f"cannot read {error}") from error
        elif level is not None:
            pixels = self._tiled_window(level, x0, y0, x1, y1, needed=needed)
        else:
            pixels = self._resampled_window(downsample, x0, y0, x1, y1)
        rgb[y0 - top : y1 - top, x0 - left : x1 - left] = pixels
        return rgb

    def _tiled_window(self, level: int, x0: int, y0: int, x1: int, y1: int, *,
                      needed: np.ndarray | None = None) -> np.ndarray:
        """RGB of ``[x0, x1) x [y0, y1)`` at downsample ``2**level``, assembled from large_image's
        tiles of that level: every pixel comes from one fixed tile, so any two windows agree on
        the pixels they share (large_image's regions are resampled as a whole and do not). Tiles
        with no ``needed`` pixel are white."""
        reader = self._reader
        z = reader.levels - 1 - level

        def part(tx: int, ty: int, rows: slice, cols: slice) -> np.ndarray:
            with _reading(self.path, f"tile ({tx}, {ty}) of level {z}"):
                tile = reader.getTile(tx, ty, z, numpyAllowed="always")
            return _to_rgb(np.asarray(tile)[rows, cols])

        return assemble_window(x0, y0, x1, y1, reader.tileWidth, reader.tileHeight, part, needed)

    def _resampled_window(self, downsample: float, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB of ``[x0, x1) x [y0, y1)`` at any ``downsample``, resampled by large_image (fine for
        thumbnails; windows of one slide need not agree exactly where they overlap)."""
        info = self.info
        base_left, base_top = math.floor(x0 * downsample), math.floor(y0 * downsample)
        base_width = min(math.ceil(x1 * downsample), info.width) - base_left
        base_height = min(math.ceil(y1 * downsample), info.height) - base_top
        # Never ask for more output pixels than the level-0 region holds at this downsample: a
        # ratio even slightly above 1/downsample makes large_image read the next finer level.
        out_width = max(1, min(x1 - x0, math.floor(round(base_width / downsample, 6))))
        out_height = max(1, min(y1 - y0, math.floor(round(base_height / downsample, 6))))
        region = {"left": base_left, "top": base_top, "width": base_width, "height": base_height}
        with _reading(self.path, f"level-0 region {region}"):
            pixels, _ = self._reader.getRegion(
                region={**region, "units": "base_pixels"},
                output={"maxWidth": out_width, "maxHeight": out_height},
                format=TILE_FORMAT_NUMPY,
            )
        return _fit(_to_rgb(pixels), y1 - y0, x1 - x0)

    def thumbnail(self, *, max_size: int = 2048) -> tuple[np.ndarray, float]:
        """The whole slide with its longer side at most ``max_size`` pixels (never upsampled).

        Returns
        -------
        rgb : numpy.ndarray
            ``(h, w, 3)`` uint8, the same pixels :meth:`read_region` gives at ``downsample``.
        downsample : float
            Level-0 pixels per thumbnail pixel (>= 1).
        """
        if max_size < 1:
            raise ParameterError(f"max_size must be >= 1, got {max_size}")
        info = self.info
        downsample = max(1.0, max(info.width, info.height) / max_size)
        width = _working_size(info.width, downsample)
        height = _working_size(info.height, downsample)
        return self.read_region(0, 0, width, height, downsample=downsample), downsample

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (label, macro, thumbnail...) as ``(h, w, 3)`` uint8 RGB."""
        if name not in self.info.associated_images:
            available = ", ".join(self.info.associated_images) or "none"
            raise ParameterError(
                f"{self.path} has no associated image {name!r}; it has: {available}"
            )
        with _reading(self.path, f"associated image {name!r}"):
            result = self._reader.getAssociatedImage(name, format=TILE_FORMAT_NUMPY)
        if result is None:
            raise SlideUnreadableError(self.path, f"cannot read associated image {name!r}")
        return _to_rgb(result[0])

    def close(self) -> None:
        """Let the readers go; large_image sources have no close, so this drops the reference."""
        self._source = None
        if self._direct is not None:
            self._direct.close()
            self._direct = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_slide(
    path: str | Path, *, base_mpp: float | None = None, source: str | None = None
) -> Slide:
    """Open a slide; see :class:`Slide` for the parameters and errors."""
    return Slide(path, base_mpp=base_mpp, source=source)
