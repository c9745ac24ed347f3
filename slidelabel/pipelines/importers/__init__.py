"""Segments and features made by other tools, found by format name.

:data:`SEGMENT_FORMATS` and :data:`FEATURE_FORMATS` are :class:`~slidelabel.registry.Registry`
objects of :class:`Format` s: each declares, as large_image's tile sources do, whether it can read
a file (``can_read``) and with what ``priority``; ``"auto"`` picks the readable format of highest
priority. Packages may add formats under the entry-point groups ``slidelabel.segment_formats`` and
``slidelabel.feature_formats``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import tifffile

from slidelabel.errors import ParameterError
from slidelabel.registry import Registry

T = TypeVar("T")


@dataclass(frozen=True)
class Format(Generic[T]):
    """A file format: ``can_read(path)`` says cheaply whether it is one, ``open`` reads it (a feature
    format's ``open(path, *, limits)``: ``limits``, a
    :class:`~slidelabel.pipelines.slide_files.SlideLimits`, bounds what it decodes at once)."""

    name: str
    description: str
    priority: int
    can_read: Callable[[Path], bool]
    open: T


def choose(registry: Registry[Format], path: Path, name: str) -> Format:
    """The format ``name``, or for ``"auto"`` the readable one of highest priority."""
    if name != "auto":
        return registry.get(name)
    if not Path(path).is_file():
        raise ParameterError(f"{path} does not exist or is not a file")
    readable = [fmt for _, fmt in registry.items() if fmt.can_read(Path(path))]
    if not readable:
        raise ParameterError(f"{path}: not a {registry.kind} slidelabel reads ({', '.join(registry.names())}); "
                             f"name one with --format")
    return max(readable, key=lambda fmt: fmt.priority)


def _suffix(*suffixes: str) -> Callable[[Path], bool]:
    return lambda path: path.suffix.lower() in suffixes


def _tiff_samples(path: Path) -> tuple[int, str] | None:
    """(samples per pixel, dtype kind) of a TIFF's first image, None if it is no TIFF."""
    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            return page.samplesperpixel, page.dtype.kind
    except (tifffile.TiffFileError, OSError, ValueError, IndexError):
        return None


def _hdf5_with(dataset: str) -> Callable[[Path], bool]:
    def can_read(path: Path) -> bool:
        import h5py

        try:
            with h5py.File(path, "r") as file:
                # The name, not what it links to: a link to another file is never followed (and is
                # refused by the reader, saying why).
                return file.get(dataset, getlink=True) is not None
        except OSError:
            return False
    return can_read


def _add(registry: Registry[Format], fmt: Format) -> None:
    registry.add(fmt.name, fmt, description=fmt.description)


def _segment_formats(registry: Registry[Format]) -> None:
    from slidelabel.pipelines.importers.rasters import MaskSource, PixelmapSource
    from slidelabel.pipelines.importers.segments import GeoJsonSource

    _add(registry, Format("geojson", "GeoJSON polygons in level-0 px (QuPath, HoVer-Net, CellViT, StarDist)", 20,
                          _suffix(".geojson", ".json"), GeoJsonSource))
    _add(registry, Format("mask", "label-mask TIFF or OME-TIFF, value = segment id", 10,
                          lambda p: (_tiff_samples(p) or (0, ""))[0] == 1, MaskSource))
    _add(registry, Format("pixelmap", "Histomics Label pixelmap TIFF (2i fill, 2i+1 outline) with --bboxes", 10,
                          lambda p: (_tiff_samples(p) or (0, ""))[0] in (3, 4), PixelmapSource))


def _feature_formats(registry: Registry[Format]) -> None:
    from slidelabel.pipelines.importers.feature_sources import HistomicsFeatures, PatchFeatures, TableFeatures

    _add(registry, Format("patches", "TRIDENT / CLAM patch features (HDF5 coords + features)", 20,
                          lambda p: _suffix(".h5", ".hdf5")(p) and not _hdf5_with("images")(p), PatchFeatures))
    _add(registry, Format("histomics", "Histomics Label feature.h5 (images, used_indices)", 30,
                          lambda p: _suffix(".h5", ".hdf5")(p) and _hdf5_with("images")(p), HistomicsFeatures))
    _add(registry, Format("table", "Parquet or CSV table keyed by id or source_id", 10,
                          _suffix(".parquet", ".csv"), TableFeatures))


SEGMENT_FORMATS: Registry[Format] = Registry("segment format", "slidelabel.segment_formats", load=_segment_formats)
FEATURE_FORMATS: Registry[Format] = Registry("feature format", "slidelabel.feature_formats", load=_feature_formats)

__all__ = ["FEATURE_FORMATS", "SEGMENT_FORMATS", "Format", "choose"]
