"""Segments made by other tools into a slide's superpixel folder: the step the CLI shares.

The folder gets the very files the superpixel job writes (``labels.tiff``, ``superpixels.parquet``,
``manifest.json``, last), so features, labels, the queue, overlays, reviews and exports treat the
imported segments as superpixels; plus :data:`~slidelabel.store.segment_sources.SOURCES_FILE`
(each segment's id in the source and its imported class). The source is read and checked before
anything is written; a failure later leaves no label map, table or manifest behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slidelabel import __version__
from slidelabel.pipelines.importers import SEGMENT_FORMATS, choose
from slidelabel.pipelines.importers.segments import ImportOptions, SlideGeometry, rasterise, working_size
from slidelabel.pipelines.slides import Slide, WorkingScale
from slidelabel.pipelines.tissue import detect_tissue, mask_window
from slidelabel.services.names import shown_input
from slidelabel.services.superpixels import MANIFEST_FORMAT, overview, slide_record, summary_table
from slidelabel.store.atomic import remove_temporaries
from slidelabel.store.label_map import LabelMapWriter
from slidelabel.store.segment_sources import SOURCES_FILE, SegmentSources, write_segment_sources
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, file_sha256, write_manifest
from slidelabel.store.superpixel_table import write_table

#: The manifest's ``algorithm`` for imported segments.
ALGORITHM = "imported-segments/1"
#: Classes an import's summary lists by name (the largest), and the characters of each name it shows.
SUMMARY_CLASSES, SUMMARY_NAME_CHARS = 20, 60


@dataclass(frozen=True)
class SegmentImportResult:
    """What an import wrote: ``segments`` kept, ``dropped`` (what was skipped, clipped or lost,
    by reason) and the imported ``classes`` with their segment counts."""

    folder: Path
    format: str
    segments: int
    dropped: dict[str, int]
    classes: dict[str, int]
    seconds: float

    def summary(self) -> str:
        """One line per fact, for people: the :data:`SUMMARY_CLASSES` largest classes, each name
        shortened to :data:`SUMMARY_NAME_CHARS`, then how many more (a file may hold thousands of
        classes with long names, and the summary is a job's message in every member's job list)."""
        lines = [f"{self.segments:,} segments ({self.format}) in {self.seconds:.1f} s -> {self.folder}"]
        lines += [f"  {count:,} {reason}" for reason, count in self.dropped.items()]
        largest = sorted(self.classes.items(), key=lambda item: -item[1])
        lines += [f"  class {shown_input(name, limit=SUMMARY_NAME_CHARS)}: {count:,} segments"
                  for name, count in largest[:SUMMARY_CLASSES]]
        rest = largest[SUMMARY_CLASSES:]
        if rest:
            lines.append(f"  and {len(rest):,} more classes ({sum(count for _, count in rest):,} segments)")
        return "\n".join(lines)


def file_record(path: Path) -> dict:
    """Path, name, size and SHA-256 of a source file, for the record."""
    stat = path.stat()
    return {"path": str(path.resolve()), "name": path.name, "size_bytes": stat.st_size,
            "sha256": file_sha256(path)}


def import_segments(
    slide_path: str | Path,
    source_path: str | Path,
    folder: str | Path,
    *,
    format: str = "auto",
    options: ImportOptions = ImportOptions(),
    base_mpp: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SegmentImportResult:
    """Import the segments of ``source_path`` for the slide at ``slide_path`` into ``folder``.

    Parameters
    ----------
    format : a name of :data:`~slidelabel.pipelines.importers.SEGMENT_FORMATS` or "auto".
    options : downsample, bounding boxes and even-odd filling (:class:`ImportOptions`).
    base_mpp : level-0 um per pixel for slides whose metadata lacks it.
    progress : called with (tiles done, tiles in all).

    Raises
    ------
    ParameterError : the source is unreadable, of another level or slide, or has no segment.
    SlideError : the slide cannot be opened.
    OutputError : the folder cannot be written.
    """
    started = time.perf_counter()
    slide_path, source_path, folder = Path(slide_path), Path(source_path), Path(folder)
    fmt = choose(SEGMENT_FORMATS, source_path, format)
    with Slide(slide_path, base_mpp=base_mpp) as slide:
        geometry = SlideGeometry(slide.info.width, slide.info.height)
        source = fmt.open(source_path, geometry, options)
        try:
            thumbnail, thumb_downsample = overview(slide)
            tissue = detect_tissue(thumbnail, downsample=thumb_downsample, mpp=slide.info.mpp)
            height, width = working_size(geometry, source.downsample)
            mpp = slide.info.mpp * source.downsample if slide.info.mpp else None
            scale = WorkingScale(source.downsample, mpp, width, height)
            created = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            (folder / MANIFEST_FILE).unlink(missing_ok=True)  # the folder is unfinished from here on
            remove_temporaries(folder)
            try:
                with LabelMapWriter(folder / LABELS_FILE, width=width, height=height, mpp=mpp) as writer:
                    found = rasterise(source, writer, geometry=geometry, progress=progress, tissue=lambda t: mask_window(
                        tissue, t.left, t.top, t.width, t.height, downsample=scale.downsample))
            except BaseException:
                if created and not any(folder.iterdir()):
                    folder.rmdir()
                raise
            raw_N = found.summary.seed_ids
            n = int(raw_N.size)
            class_names = source.class_names(raw_N)
            write_table(folder / TABLE_FILE, summary_table(found.summary, slide, scale))
            write_segment_sources(folder / SOURCES_FILE, SegmentSources(
                np.arange(1, n + 1, dtype=np.uint32), source.source_ids(raw_N), class_names))
            classes = _class_counts(class_names)
            seconds = time.perf_counter() - started
            write_manifest(folder / MANIFEST_FILE, {
                "format": MANIFEST_FORMAT,
                "algorithm": ALGORITHM,
                "slidelabel_version": __version__,
                "options": {"format": fmt.name, "downsample": source.downsample, "even_odd": options.even_odd,
                            "base_mpp": base_mpp, "source": None},
                "import": {"source": file_record(source_path),
                           "bboxes": None if options.bboxes is None else file_record(Path(options.bboxes)),
                           "dropped": found.counts, "classes": classes},
                "slide": slide_record(slide, file_sha256(slide_path)),
                "working": {"width": width, "height": height, "downsample": scale.downsample, "mpp": mpp,
                            "step_px": None, "tile_size": source.tile_size},
                "tissue": {"od_threshold": tissue.od_threshold, "fraction": tissue.fraction},
                "superpixels": n,
                "files": {"labels": LABELS_FILE, "table": TABLE_FILE, "sources": SOURCES_FILE},
                "seconds": round(seconds, 3),
            })
        finally:
            source.close()
    return SegmentImportResult(folder, fmt.name, n, found.counts, classes, seconds)


def _class_counts(class_names: list[str | None] | None) -> dict[str, int]:
    if class_names is None:
        return {}
    names, counts = np.unique(np.asarray([name for name in class_names if name is not None], dtype=object),
                              return_counts=True)
    return {str(name): int(count) for name, count in zip(names, counts)}

