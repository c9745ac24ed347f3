"""Superpixels of one slide into its output folder: the step the CLI and the workers share.

Reads the slide at the working resolution, finds tissue on a thumbnail, runs the tiled engine and
writes the label map, the table and, last, the manifest. A folder whose manifest matches the slide
and the options is finished and is skipped, which makes batches resumable.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from slidelabel import __version__
from slidelabel.errors import ParameterError
from slidelabel.pipelines.regions import SlideRegions
from slidelabel.pipelines.slic import SeedGrid
from slidelabel.pipelines.slides import LEVEL0_TOLERANCE, Slide, WorkingScale, mpp_for_magnification
from slidelabel.pipelines.superpixel_stats import SuperpixelStatistics, SuperpixelSummary
from slidelabel.pipelines.superpixels import ProgressFunction, SuperpixelEngine, SuperpixelParams
from slidelabel.pipelines.tissue import TissueMask, detect_tissue, mask_window, tissue_pixels
from slidelabel.pipelines.window_cache import WindowCache
from slidelabel.store.atomic import remove_temporaries
from slidelabel.store.label_map import LabelMapWriter
from slidelabel.store.superpixel_files import (
    LABELS_FILE,
    MANIFEST_FILE,
    TABLE_FILE,
    file_sha256,
    read_manifest,
    write_manifest,
)
from slidelabel.store.superpixel_table import SuperpixelTable, write_table

#: Changes whenever the same options would give different superpixels.
ALGORITHM = "slic-global-grid/1"
MANIFEST_FORMAT = "slidelabel-superpixels/1"
#: Objective power worked at when neither magnification nor mpp is given: 1 um per pixel.
DEFAULT_MAGNIFICATION = 10.0

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(um|µm|px)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Range:
    """The values a numeric option may take: ``low`` to ``high``, ``low`` itself excluded when
    ``low_open``."""

    low: float
    high: float
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def __str__(self) -> str:
        return f"{'above' if self.low_open else 'from'} {self.low:g} to {self.high:g}"

    def field(self) -> dict[str, float]:
        """The bounds as pydantic ``Field`` keywords."""
        return {"gt" if self.low_open else "ge": self.low, "le": self.high}


#: Where the numeric options must lie, so that one request cannot occupy a worker for hours:
#: SLIC settles within 10 iterations; a working tile's memory grows with its square.
OPTION_RANGES: dict[str, Range] = {
    "magnification": Range(0, 200),  # 0: the slide's own level 0
    "mpp": Range(0.05, 100),
    "compactness": Range(0, 1000, low_open=True),
    "iterations": Range(1, 100),
    "tile_size": Range(64, 8192),
    "base_mpp": Range(0.01, 100),
}
#: Where a superpixel side must lie in each unit; with the working resolution it must also give
#: at most :data:`MAX_STEP_PX` working pixels.
SIZE_RANGES: dict[str, Range] = {"um": Range(0.1, 5000), "px": Range(4, 512)}
MAX_STEP_PX = 512
_INTEGER_OPTIONS = ("iterations", "tile_size")
_OPTIONAL = ("magnification", "mpp", "base_mpp")


@dataclass(frozen=True)
class SuperpixelSize:
    """A superpixel side length in micrometres (``"um"``) or working pixels (``"px"``)."""

    value: float
    unit: str

    @classmethod
    def parse(cls, text: str) -> SuperpixelSize:
        """Read ``"50um"``, ``"50 µm"`` or ``"32px"``."""
        match = _SIZE.match(text)
        if not match or float(match.group(1)) <= 0:
            raise ParameterError(f"superpixel size {text!r} is not a positive number followed by um or px, e.g. 50um")
        unit = "px" if match.group(2).lower() == "px" else "um"
        return cls(float(match.group(1)), unit)

    def check(self) -> None:
        """:class:`ParameterError` when the size lies outside :data:`SIZE_RANGES`."""
        allowed = SIZE_RANGES.get(self.unit)
        if allowed is None:
            raise ParameterError(f"superpixel size unit {self.unit!r} is neither um nor px")
        if not (isinstance(self.value, (int, float)) and self.value in allowed):
            raise ParameterError(f"superpixel option size={self} is out of range: {self.unit} sizes go {allowed}")

    def __str__(self) -> str:
        # Positional, never exponent notation ("1e+06um" would not parse) and never rounded.
        return f"{np.format_float_positional(self.value, trim='-')}{self.unit}"


@dataclass(frozen=True)
class SuperpixelOptions:
    """What the user chooses. Resolution: ``mpp`` (um per working pixel) or ``magnification``
    (objective power, 0 = the slide's own level 0), :data:`DEFAULT_MAGNIFICATION` when neither
    is given; sizes per :class:`SuperpixelSize`."""

    magnification: float | None = None
    mpp: float | None = None
    size: SuperpixelSize = field(default_factory=lambda: SuperpixelSize(50.0, "um"))
    compactness: float = 20.0
    iterations: int = 5
    tile_size: int = 2048
    tissue_only: bool = True
    base_mpp: float | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        """Refuse options outside :data:`OPTION_RANGES` and :data:`SIZE_RANGES`, naming the
        option and its range (:class:`ParameterError`)."""
        for name, allowed in OPTION_RANGES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            kind = int if name in _INTEGER_OPTIONS else (int, float)
            number = isinstance(value, kind) and not isinstance(value, bool)
            if not (number and value in allowed):
                raise ParameterError(f"superpixel option {name}={value!r} is out of range: it goes {allowed}")
        if self.magnification is not None and self.mpp is not None:
            raise ParameterError("give either the superpixel option mpp or magnification, not both")
        if not isinstance(self.size, SuperpixelSize):
            raise ParameterError(f"superpixel option size={self.size!r} is not a size such as 50um or 32px")
        self.size.check()
        if not isinstance(self.tissue_only, bool):
            raise ParameterError(f"superpixel option tissue_only={self.tissue_only!r} must be true or false")
        if self.source is not None and not isinstance(self.source, str):
            raise ParameterError(f"superpixel option source={self.source!r} must be a slide reader's name")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["size"] = str(self.size)
        return d


@dataclass(frozen=True)
class SlideResult:
    """What happened to one slide: ``status`` is ``"done"`` or ``"skipped"`` (already finished)."""

    slide: Path
    folder: Path
    status: str
    superpixels: int
    seconds: float


def working_scale(slide: Slide, options: SuperpixelOptions) -> WorkingScale:
    """The working resolution of ``slide`` for ``options``."""
    if options.mpp is not None:
        return slide.working_scale(mpp=options.mpp)
    magnification = DEFAULT_MAGNIFICATION if options.magnification is None else options.magnification
    if magnification == 0:
        return slide.working_scale()
    return slide.working_scale(mpp=mpp_for_magnification(magnification))


def step_pixels(size: SuperpixelSize, scale: WorkingScale) -> int:
    """The seed step in working pixels for a superpixel side ``size``."""
    if size.unit == "px":
        step = round(size.value)
    elif scale.mpp is None:
        raise ParameterError(
            f"a superpixel size in um ({size}) needs the slide's pixel size; give it as the superpixel option "
            "base_mpp (--base-mpp on the command line) or a size in px"
        )
    else:
        step = round(size.value / scale.mpp)
    if step < 4:
        raise ParameterError(f"superpixel size {size} is {step} px at this resolution; it must be at least 4 px")
    if step > MAX_STEP_PX:
        raise ParameterError(f"superpixel size {size} is {step} px at this resolution; it must be at most "
                             f"{MAX_STEP_PX} px: choose a smaller size or a lower magnification")
    return step


def check_superpixel_count(scale: WorkingScale, step: int, *, limit: int | None, slide_name: str) -> int:
    """The number of seeds (the most superpixels) ``step`` gives on a slide of ``scale``;
    :class:`ParameterError` naming the size, the slide's working size and the bound when it
    passes ``limit`` (None: no bound). The engine holds about 90 bytes per seed of the grid."""
    seeds = SeedGrid(step, scale.height, scale.width).size
    if limit is not None and seeds > limit:
        raise ParameterError(
            f"superpixel options give slide {slide_name!r} up to {seeds:,} superpixels ({scale.width:,} x "
            f"{scale.height:,} working pixels in {step} px superpixels); at most {limit:,} are allowed per slide "
            "(SLIDELABEL_MAX_SUPERPIXELS_PER_SLIDE): choose a larger size or a lower magnification"
        )
    return seeds


def planned_scale(width: int, height: int, mpp: float | None, options: SuperpixelOptions) -> WorkingScale | None:
    """The working scale :func:`working_scale` will give a slide of level-0 ``width`` x ``height``
    px and ``mpp`` (None: unknown) without opening it, as :meth:`Slide.working_scale` rounds; None
    where the job itself must decide (no pixel size, or a target finer than level 0)."""
    mpp = options.base_mpp if options.base_mpp is not None else mpp
    target = options.mpp
    if target is None:
        magnification = DEFAULT_MAGNIFICATION if options.magnification is None else options.magnification
        target = None if magnification == 0 else mpp_for_magnification(magnification)
    if target is None:
        return WorkingScale(1.0, mpp, width, height)
    if mpp is None or target / mpp < 1.0 - LEVEL0_TOLERANCE:
        return None
    downsample = 2.0 ** round(math.log2(max(target / mpp, 1.0)))
    return WorkingScale(downsample, mpp * downsample, math.ceil(round(width / downsample, 6)),
                        math.ceil(round(height / downsample, 6)))


def check_planned_superpixels(width: int, height: int, mpp: float | None, options: SuperpixelOptions, *,
                              limit: int | None, slide_name: str) -> None:
    """Before a job is queued: :class:`ParameterError` when ``options`` give the slide a
    superpixel size outside the allowed steps or more superpixels than ``limit``, as far as its
    recorded size and pixel size tell (the job checks again on the slide itself)."""
    scale = planned_scale(width, height, mpp, options)
    if scale is None or (options.size.unit == "um" and scale.mpp is None):
        return
    try:
        step = step_pixels(options.size, scale)
    except ParameterError as error:
        raise ParameterError(f"slide {slide_name!r}: {error}") from None
    check_superpixel_count(scale, step, limit=limit, slide_name=slide_name)


def overview(slide: Slide) -> tuple[np.ndarray, float]:
    """A whole-slide RGB picture for tissue detection and its downsample (level-0 px per pixel).

    The scanner's stored thumbnail when it shows the whole slide (same aspect ratio as level 0,
    at least 512 px): decoding a pyramid level instead costs seconds on JPEG 2000 slides whose
    lowest level is large. Otherwise a thumbnail read from the pyramid.
    """
    if "thumbnail" in slide.info.associated_images:
        stored = slide.associated_image("thumbnail")
        height, width = stored.shape[:2]
        same_shape = abs(width / height - slide.info.width / slide.info.height) < 0.01 * width / height
        if same_shape and max(height, width) >= 512:
            return stored, slide.info.width / width
    return slide.thumbnail()


def _segment_mask(tissue: TissueMask, scale: WorkingScale, step: int) -> Callable[[int, int, int, int], np.ndarray]:
    """Tissue plus one superpixel around it, as a mask function in working pixels.

    The dilation happens on the thumbnail so that every window sees the same global mask.
    """
    grow = math.ceil(step * scale.downsample / tissue.downsample)
    dilated = ndimage.binary_dilation(tissue.mask, iterations=grow) if grow else tissue.mask
    grown = TissueMask(dilated, tissue.downsample, tissue.od_threshold)

    def mask(top: int, left: int, height: int, width: int) -> np.ndarray:
        return mask_window(grown, left, top, width, height, downsample=scale.downsample)

    return mask


def summary_table(summary: SuperpixelSummary, slide: Slide, scale: WorkingScale) -> SuperpixelTable:
    """The table in level-0 pixels: working pixel x covers level-0 pixels [x * ds, (x + 1) * ds)."""
    ds = scale.downsample
    low = np.floor(summary.bbox[:, :2] * ds).astype(np.int64)
    high = np.minimum(np.ceil(summary.bbox[:, 2:] * ds).astype(np.int64), [slide.info.width, slide.info.height])
    bbox = np.concatenate([low, high], axis=1)
    area_um2 = summary.area * scale.mpp**2 if scale.mpp is not None else None
    return SuperpixelTable(
        ids=np.arange(1, summary.area.size + 1, dtype=np.uint32),
        bbox_level0=bbox,
        centroid_level0=(summary.centroid + 0.5) * ds,
        area_px=summary.area,
        area_um2=area_um2,
        tissue_fraction=summary.tissue_fraction,
    )


def slide_record(slide: Slide, sha256: str) -> dict:
    """The manifest's ``slide`` record: the file (path, size, mtime, SHA-256) and its level 0."""
    stat = slide.path.stat()
    info = slide.info
    return {
        "path": str(slide.path.resolve()), "name": slide.path.name, "size_bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns, "sha256": sha256, "width": info.width, "height": info.height,
        "mpp": info.mpp, "mpp_source": info.mpp_source, "reader": info.source,
    }


def finished_manifest(folder: Path, slide_path: Path, options: SuperpixelOptions) -> dict | None:
    """The manifest of ``folder`` when it holds superpixels of this very slide file made with
    these options, else None."""
    manifest = read_manifest(folder / MANIFEST_FILE) if folder.exists() else None
    if manifest is None or manifest.get("algorithm") != ALGORITHM:
        return None
    if manifest.get("options") != options.as_dict():
        return None
    if not all((folder / name).exists() for name in (LABELS_FILE, TABLE_FILE)):
        return None
    recorded = manifest.get("slide", {})
    stat = slide_path.stat()
    if (recorded.get("size_bytes"), recorded.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
        return manifest
    # Touched or copied: the content decides.
    same = recorded.get("size_bytes") == stat.st_size and recorded.get("sha256") == file_sha256(slide_path)
    return manifest if same else None


def compute_slide_superpixels(
    slide_path: Path,
    folder: Path,
    options: SuperpixelOptions,
    *,
    workers: int = 1,
    progress: ProgressFunction | None = None,
    max_superpixels: int | None = None,
    cache_bytes: int | None = None,
) -> SlideResult:
    """Superpixels of one slide into ``folder`` (created); skipped when already finished there.

    ``max_superpixels``: :class:`ParameterError` before any work when the options give the slide
    more seeds than this (None: no bound). ``cache_bytes``: most disk the window cache between
    the passes may take (None: as much as the free space allows; 0: no cache, the slide is read
    twice)."""
    started = time.perf_counter()
    finished = finished_manifest(folder, slide_path, options)
    if finished is not None:
        return SlideResult(slide_path, folder, "skipped", finished.get("superpixels", 0), 0.0)
    with Slide(slide_path, base_mpp=options.base_mpp, source=options.source) as slide:
        scale = working_scale(slide, options)
        step = step_pixels(options.size, scale)
        check_superpixel_count(scale, step, limit=max_superpixels, slide_name=slide_path.name)
        params = SuperpixelParams(
            step=step, compactness=options.compactness, iterations=options.iterations,
            tile_size=max(options.tile_size, 2 * step),
        )
        thumbnail, thumb_downsample = overview(slide)
        tissue = detect_tissue(thumbnail, downsample=thumb_downsample, mpp=slide.info.mpp)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST_FILE).unlink(missing_ok=True)  # the folder is unfinished from here on
        remove_temporaries(folder)  # left by a run that was killed
        with WindowCache(folder, max_bytes=cache_bytes) as cache, LabelMapWriter(
            folder / LABELS_FILE, width=scale.width, height=scale.height, mpp=scale.mpp
        ) as writer:
            engine = SuperpixelEngine(
                SlideRegions(slide, scale), params,
                segment_mask=_segment_mask(tissue, scale, step) if options.tissue_only else None,
                tissue=lambda rgb: tissue_pixels(rgb, tissue.od_threshold),
                cache=cache,
            )
            stats = SuperpixelStatistics(engine.grid.size)
            for block in engine.blocks(workers=workers, progress=progress):
                stats.add(block)
                writer.write_block(block.tile.top, block.tile.left, block.labels.astype(np.uint32))
            summary = stats.summary()
            writer.finish(summary.lut(engine.grid.size))
        write_table(folder / TABLE_FILE, summary_table(summary, slide, scale))
        seconds = time.perf_counter() - started
        write_manifest(folder / MANIFEST_FILE, {
            "format": MANIFEST_FORMAT,
            "algorithm": ALGORITHM,
            "slidelabel_version": __version__,
            "options": options.as_dict(),
            "slide": slide_record(slide, file_sha256(slide_path)),
            "working": {"width": scale.width, "height": scale.height, "downsample": scale.downsample,
                        "mpp": scale.mpp, "step_px": step, "tile_size": params.tile_size},
            "tissue": {"od_threshold": tissue.od_threshold, "fraction": tissue.fraction},
            "superpixels": int(summary.area.size),
            "files": {"labels": LABELS_FILE, "table": TABLE_FILE},
            "seconds": round(seconds, 3),
        })
    return SlideResult(slide_path, folder, "done", int(summary.area.size), seconds)
