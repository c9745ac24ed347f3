"""Exports of a slide's labels or predictions in the formats the field reads.

- **GeoJSON** for QuPath (0.4+): a FeatureCollection of ``Polygon``/``MultiPolygon`` features in
  level-0 pixels, ``properties.objectType`` (``"annotation"`` for a region per category,
  ``"detection"`` for a feature per segment) and ``properties.classification = {"name", "color":
  [r, g, b]}``, as QuPath writes and reads them.
- **Annotation JSON** for the Digital Slide Archive / HistomicsUI:
  :mod:`slidelabel.services.dsa_annotation`.
- **Mask TIFF** (:mod:`slidelabel.services.masks`): a category's value is its position + 1,
  which no other category of the project has (:func:`slidelabel.services.projects.add_category`).
- **Predictions CSV**: :mod:`slidelabel.services.prediction_csv`.

GeoJSON and annotation JSON are written to a file a feature at a time (:func:`write_geojson`,
:func:`~slidelabel.services.dsa_annotation.write_annotation`), the same bytes as ``json.dumps`` of
:func:`geojson` or :func:`~slidelabel.services.dsa_annotation.annotation` with compact separators: one shape per superpixel is traced a batch of nearby
superpixels at a time and put in legend order through a temporary file, so memory holds a batch
and a few arrays of the slide's superpixels, never the document (633,820 superpixels: 227 MB of
GeoJSON, +56 MB where the document built whole took +2.4 GB).

Labels are the effective labels (:func:`slidelabel.services.reviews.effective_labels`: a review,
else the majority of users' labels); predictions are those of an epoch, the latest by default,
over the categories as they are now: a category merged into another since the epoch reads as that
one (:meth:`slidelabel.store.predictions.SlidePredictions.merged`).
"""

from __future__ import annotations

import enum
import json
import re
import zipfile
from collections.abc import Hashable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from slidelabel.errors import ConflictError, NotFoundError
from slidelabel.services.dsa_annotation import annotation_pieces
from slidelabel.services.epochs import get_epoch
from slidelabel.services.masks import category_values, write_mask
from slidelabel.services.slide_classes import (
    Key,
    SlideClasses,
    Source,
    exported_shapes,
    in_order,
    rgb,
    slide_classes,
    texts_in_order,
)
from slidelabel.services.slides import slides_of
from slidelabel.services.turns import Turns
from slidelabel.store.json_pieces import list_pieces, object_pieces, write_pieces, write_pieces_atomic
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Project, Slide
from slidelabel.store.superpixel_files import LABELS_FILE

#: Exports that build at once in an API process. A slide of 134,091 imported cells exported one
#: shape per cell held 360 MB above the process for 16 s when the document was built whole, and a
#: viewer's parallel requests each did so at once (four: +1.06 GB); the others wait their turn, as
#: exports still take seconds of a core and label reads hundreds of MB.
EXPORTERS = 2
#: Seconds an export waits for its turn before it is answered 'busy' (503), so waiting requests
#: do not hold the API's threads for long.
EXPORT_WAIT_S = 10.0
#: Turns one holder (a user, a gallery link) may hold at once: one viewer's parallel exports wait
#: for each other, so they cannot keep every other user's export waiting.
EXPORTS_PER_HOLDER = 1
_EXPORTERS = Turns(EXPORTERS, per_holder=EXPORTS_PER_HOLDER)
#: Characters of a slide's name kept in its export files' names (:func:`file_stem`).
STEM_CHARS = 120
class ArchiveFormat(enum.StrEnum):
    """What a project-wide zip holds per slide."""

    geojson = "geojson"
    annotation = "annotation"
    mask = "mask"


_BUSY = (f"the server is busy with other exports (your own earlier one, or {EXPORTERS} at once) for over "
         f"{EXPORT_WAIT_S:.0f} s; try again in a minute")


def export_turn_waiting(holder: Hashable | None = None) -> AbstractAsyncContextManager[None]:
    """Holds one of the :data:`EXPORTERS` turns while an export is built and encoded, waited for on
    the event loop (no request thread is held); :class:`~slidelabel.errors.BusyError` when none
    frees within :data:`EXPORT_WAIT_S` seconds. ``holder`` (a user, a gallery link) holds at most
    :data:`EXPORTS_PER_HOLDER` turns at once."""
    return _EXPORTERS.waiting(EXPORT_WAIT_S, _BUSY, holder=holder)


def _coordinates(ring_K_2: np.ndarray, integral: bool) -> list:
    return ring_K_2.astype(np.int64).tolist() if integral else np.round(ring_K_2, 2).tolist()


def _features(classes: SlideClasses, project: Project, dissolve: bool) -> Iterator[tuple[Key, dict]]:
    categories = {category.id: category for category in project.categories}
    integral = float(classes.downsample).is_integer()
    for key, category, parts, extra in exported_shapes(classes, categories, dissolve):
        rings = [[_coordinates(p.shell_K_2, integral), *(_coordinates(h, integral) for h in p.holes)] for p in parts]
        geometry = ({"type": "Polygon", "coordinates": rings[0]} if len(rings) == 1
                    else {"type": "MultiPolygon", "coordinates": rings})
        yield key, {"type": "Feature", "geometry": geometry, "properties": {
            "objectType": "annotation" if dissolve else "detection", "classification": {"name": category.name, "color": rgb(category.color)},
            "excluded": category.excluded, "source": classes.source.value, "measurements": extra}}


def geojson(classes: SlideClasses, project: Project, *, dissolve: bool = True) -> dict:
    """A GeoJSON FeatureCollection for QuPath: one feature per category (``dissolve``) or per
    superpixel, ``Polygon`` or ``MultiPolygon`` in level-0 pixels, holes included, in legend
    order (then by superpixel id).

    Properties: ``objectType`` (``"annotation"`` when dissolved; else ``"detection"``, as QuPath
    holds cells and tiles: a million of them stay light there, where as many annotations would
    not), ``classification: {"name", "color": [r, g, b]}``,
    ``excluded`` (the category is never trained on), ``measurements`` (``superpixels`` or
    ``superpixel``, and the mean ``certainty`` for predictions) and ``source``.

    The whole document in memory (about ten times its JSON text): :func:`write_geojson` writes
    the same text a feature at a time.
    """
    return {"type": "FeatureCollection", "features": in_order(_features(classes, project, dissolve))}


def geojson_pieces(classes: SlideClasses, project: Project, *, dissolve: bool = True,
                   spill: Path | None = None) -> Iterator[str]:
    """:func:`geojson`'s document as compact JSON text, a feature at a time (features are
    sorted through a temporary file in ``spill``, see :func:`key_sorted`)."""
    features = list_pieces(texts_in_order(_features(classes, project, dissolve), spill))
    return object_pieces({"type": "FeatureCollection", "features": None}, {"features": features})


def write_geojson(path: Path, classes: SlideClasses, project: Project, *, dissolve: bool = True) -> None:
    """:func:`geojson`'s document as compact JSON at ``path``, atomically, written a feature at a
    time: memory holds a batch of traced superpixels, not the document (a slide of 633,820
    superpixels with ``dissolve=False``: 227 MB of JSON)."""
    write_pieces_atomic(path, geojson_pieces(classes, project, dissolve=dissolve, spill=path.parent))


def write_slide_mask(classes: SlideClasses, project: Project, path: Path) -> None:
    """The slide's category mask (position + 1, 0 = none) as a pyramidal uint8 TIFF at ``path``,
    atomically (:func:`slidelabel.services.masks.write_mask`)."""
    values = category_values(classes.superpixels_M, classes.category_ids_M,
                             {category.id: category.position for category in project.categories}, classes.count)
    write_mask(path, classes.folder / LABELS_FILE, values, mpp=classes.mpp)


def file_stem(slide: Slide) -> str:
    """A safe file name for a slide's exports: its id and its name without extension, in ASCII
    letters, digits, '.', '_' and '-', cut to :data:`STEM_CHARS` (with an export's suffix, a file
    name must stay within the 255 bytes file systems allow; slide names may have 255)."""
    return f"{slide.id}-{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(slide.name).stem)[:STEM_CHARS]}"


def write_archive(session: Session, files: ProjectFiles, project: Project, out: Path, archive_format: ArchiveFormat,
                  source: Source, *, epoch: int | None = None, dissolve: bool = True) -> None:
    """A zip at ``out`` with one export per slide of the project in ``archive_format``, and
    ``slidelabel.json`` listing the slides left out and why (no superpixels, no predictions).
    Masks are written next to ``out`` before being stored."""
    if source is Source.predictions:
        epoch = get_epoch(session, project.id, epoch).number
    skipped: dict[str, str] = {}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for slide in slides_of(session, project.id):
            try:
                classes = slide_classes(session, files, slide, source, epoch)
            except (ConflictError, NotFoundError) as error:
                skipped[slide.name] = str(error)
                continue
            stem = file_stem(slide)
            if archive_format is ArchiveFormat.mask:
                mask = out.with_name(f"{stem}.mask.tiff")
                write_slide_mask(classes, project, mask)
                archive.write(mask, mask.name, compress_type=zipfile.ZIP_STORED)
                mask.unlink()
            else:
                pieces = (geojson_pieces(classes, project, dissolve=dissolve, spill=out.parent)
                          if archive_format is ArchiveFormat.geojson
                          else annotation_pieces(classes, project, dissolve=dissolve, spill=out.parent))
                suffix = "geojson" if archive_format is ArchiveFormat.geojson else "annotation.json"
                # Zip64 from the start: the member's size is unknown until it is written.
                with archive.open(f"{stem}.{suffix}", "w", force_zip64=True) as member:
                    write_pieces(member, pieces)
        archive.writestr("slidelabel.json", json.dumps({"project": project.name, "source": source.value,
                                                        "epoch": epoch, "skipped": skipped}, indent=2))
