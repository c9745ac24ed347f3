"""Exports of a slide's labels or predictions in the formats the field reads.

- **GeoJSON** for QuPath (0.4+): a FeatureCollection of ``Polygon``/``MultiPolygon`` features in
  level-0 pixels, ``properties.objectType`` (``"annotation"`` for a region per category,
  ``"detection"`` for a feature per segment) and ``properties.classification = {"name", "color":
  [r, g, b]}``, as QuPath writes and reads them.
- **Annotation JSON** for the Digital Slide Archive / HistomicsUI (large_image's annotation
  schema): closed ``polyline`` elements per region and, on request, the ``pixelmap`` element of
  the superpixels.
- **Mask TIFF** (:mod:`slidelabel.services.masks`): a category's value is its position + 1,
  which no other category of the project has (:func:`slidelabel.services.projects.add_category`).
- **Predictions CSV**: :mod:`slidelabel.services.prediction_csv`.

GeoJSON and annotation JSON are written to a file a feature at a time (:func:`write_geojson`,
:func:`write_annotation`), the same bytes as ``json.dumps`` of :func:`geojson` or
:func:`annotation` with compact separators: one shape per superpixel is traced a batch of nearby
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
from collections.abc import Hashable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from slidelabel.errors import ConflictError, NotFoundError, ParameterError
from slidelabel.services.epochs import get_epoch, slide_predictions
from slidelabel.services.masks import category_values, write_mask
from slidelabel.services.names import shown_input
from slidelabel.services.polygons import Polygon, label_map_polygons, nearby_batches
from slidelabel.services.reviews import effective_labels
from slidelabel.services.slides import slides_of
from slidelabel.services.turns import Turns
from slidelabel.store.json_pieces import compact, key_sorted, list_pieces, object_pieces, write_pieces
from slidelabel.store.json_pieces import write_pieces_atomic
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Category, Project, Slide
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, read_manifest
from slidelabel.store.superpixel_table import read_table

#: Stands for the Girder item id of the superpixel image in a ``pixelmap`` element when none is
#: given: 24 hex digits, as the schema demands, that no Girder item has. Replace it with the id of
#: the item holding the superpixel image (pixel value = superpixel id, RGB-encoded as
#: ``R + 256 G + 65536 B``, at the working level; the element's ``transform`` scales it to level 0).
PLACEHOLDER_GIRDER_ID = "0" * 24
_GIRDER_ID = re.compile(r"^[0-9a-f]{24}$")
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
#: Values of a pixelmap element encoded at once (a few hundred kB of text).
VALUES_PER_PIECE = 65_536


class Source(enum.StrEnum):
    labels = "labels"
    predictions = "predictions"


class ArchiveFormat(enum.StrEnum):
    """What a project-wide zip holds per slide."""

    geojson = "geojson"
    annotation = "annotation"
    mask = "mask"


class Elements(enum.StrEnum):
    """Which elements an annotation JSON holds."""

    polygons = "polygons"
    pixelmap = "pixelmap"
    both = "both"


@dataclass(frozen=True)
class SlideClasses:
    """The category of each classified superpixel of one slide, from labels or predictions.

    ``superpixels_M`` (int64 ids) and ``category_ids_M`` (int64) pair up; ``certainty_M`` is set
    for predictions. ``folder`` is the slide's superpixel folder, ``downsample`` level-0 pixels
    per working pixel and ``mpp`` micrometres per working pixel (None when unknown).
    """

    slide: Slide
    source: Source
    epoch: int | None
    superpixels_M: np.ndarray
    category_ids_M: np.ndarray
    certainty_M: np.ndarray | None
    folder: Path
    downsample: float
    mpp: float | None

    @property
    def count(self) -> int:
        """Superpixels of the slide (N)."""
        return int(self.slide.superpixels or 0)


_BUSY = (f"the server is busy with other exports (your own earlier one, or {EXPORTERS} at once) for over "
         f"{EXPORT_WAIT_S:.0f} s; try again in a minute")


def export_turn_waiting(holder: Hashable | None = None) -> AbstractAsyncContextManager[None]:
    """Holds one of the :data:`EXPORTERS` turns while an export is built and encoded, waited for on
    the event loop (no request thread is held); :class:`~slidelabel.errors.BusyError` when none
    frees within :data:`EXPORT_WAIT_S` seconds. ``holder`` (a user, a gallery link) holds at most
    :data:`EXPORTS_PER_HOLDER` turns at once."""
    return _EXPORTERS.waiting(EXPORT_WAIT_S, _BUSY, holder=holder)


def superpixel_folder(files: ProjectFiles, slide: Slide) -> tuple[Path, dict]:
    """The slide's finished superpixel folder and its manifest; :class:`ConflictError` before
    its superpixels are computed."""
    folder = files.superpixels(slide.id)
    manifest = read_manifest(folder / MANIFEST_FILE)
    if manifest is None or not slide.superpixels:
        raise ConflictError(f"slide {slide.name!r} has no superpixels yet: compute them before exporting it")
    return folder, manifest


def slide_classes(session: Session, files: ProjectFiles, slide: Slide, source: Source,
                  epoch: int | None = None) -> SlideClasses:
    """What ``slide``'s superpixels are by ``source``: its effective labels, or the predicted
    category of every predicted superpixel of ``epoch`` (the latest when None)."""
    folder, manifest = superpixel_folder(files, slide)
    certainty = None
    if source is Source.labels:
        empty = np.empty(0, np.int64)
        labels = effective_labels(session, slide.project_id, slide_id=slide.id)
        superpixels, categories = labels.get(slide.id, (empty, empty))
    else:
        epoch, predictions = slide_predictions(session, files.data_dir, slide.project_id, slide.id, epoch)
        predicted_N = predictions.predicted_N
        superpixels = np.flatnonzero(predicted_N) + 1
        categories, certainty = predicted_N[superpixels - 1], predictions.certainty_N[superpixels - 1]
    working = manifest["working"]
    return SlideClasses(slide, source, epoch if source is Source.predictions else None,
                        np.asarray(superpixels, np.int64), np.asarray(categories, np.int64), certainty, folder,
                        float(working["downsample"]), working.get("mpp"))


def dissolved_polygons(classes: SlideClasses, *, tolerance: float = 1.0) -> dict[int, list[Polygon]]:
    """Polygons in level-0 pixels keyed by category id, neighbouring superpixels of one category
    merged; ``tolerance`` in working pixels."""
    region_of_id = np.zeros(classes.count + 1, np.int64)
    region_of_id[classes.superpixels_M] = classes.category_ids_M
    return label_map_polygons(classes.folder / LABELS_FILE, region_of_id, downsample=classes.downsample,
                              tolerance=tolerance)


def superpixel_polygons(classes: SlideClasses, *, tolerance: float = 1.0) -> Iterator[dict[int, list[Polygon]]]:
    """One shape per classified superpixel in level-0 pixels, ``{row of classes.superpixels_M:
    parts}`` a batch of nearby superpixels at a time, each traced over its bounding window (see
    :func:`nearby_batches`): memory holds one batch's shapes on a fully labelled slide, and a
    few labels on a large slide read little of it. ``tolerance`` in working pixels."""
    if classes.superpixels_M.size == 0:
        return
    labels_path = classes.folder / LABELS_FILE
    box_M_4 = _working_boxes(classes)
    batches = nearby_batches(box_M_4)
    # Regions are numbered batch after batch, so each batch is one range of regions to trace.
    order_M = np.concatenate(batches)
    region_of_id = np.zeros(classes.count + 1, np.int64)
    region_of_id[classes.superpixels_M[order_M]] = np.arange(1, order_M.size + 1)
    start = 0
    for batch in batches:
        left, top = box_M_4[batch, :2].min(axis=0)
        right, bottom = box_M_4[batch, 2:].max(axis=0)
        traced = label_map_polygons(labels_path, region_of_id, downsample=classes.downsample, tolerance=tolerance,
                                    rows=(int(top) - 1, int(bottom) + 1), cols=(int(left) - 1, int(right) + 1),
                                    regions=(start + 1, start + batch.size + 1))
        yield {int(order_M[region - 1]): parts for region, parts in traced.items()}
        start += batch.size


def _working_boxes(classes: SlideClasses) -> np.ndarray:
    """``(M, 4)`` int64 boxes (``left, top, right, bottom``, working pixels, right and bottom
    exclusive) of the classified superpixels."""
    box_M_4 = read_table(classes.folder / TABLE_FILE).bbox_level0[classes.superpixels_M - 1] / classes.downsample
    return np.concatenate([np.floor(box_M_4[:, :2]), np.ceil(box_M_4[:, 2:])], axis=1).astype(np.int64)


def rgb(color: str) -> list[int]:
    """``#rrggbb`` as ``[r, g, b]``."""
    return [int(color[i:i + 2], 16) for i in (1, 3, 5)]


def _coordinates(ring_K_2: np.ndarray, integral: bool) -> list:
    return ring_K_2.astype(np.int64).tolist() if integral else np.round(ring_K_2, 2).tolist()


#: A shape's place in an export: the legend position of its category, then its region (the
#: category id when dissolved, else the superpixel id).
Key = tuple[int, int]


def _shapes(classes: SlideClasses, categories: dict[int, Category], dissolve: bool
            ) -> Iterator[tuple[Key, Category, list[Polygon], dict]]:
    """``(key, category, parts, extra properties)`` per exported region, batch after batch (not
    in key order). Merged categories read as their targets (:func:`slide_classes`); an id of
    no category is left out."""
    if dissolve:
        for category_id, parts in dissolved_polygons(classes).items():
            if (category := categories.get(category_id)) is not None:
                rows = np.flatnonzero(classes.category_ids_M == category_id)
                yield (category.position, category_id), category, parts, _extra(classes, "superpixels", rows.size, rows)
        return
    for traced in superpixel_polygons(classes):
        for row, parts in traced.items():
            if (category := categories.get(int(classes.category_ids_M[row]))) is not None:
                superpixel = int(classes.superpixels_M[row])
                yield (category.position, superpixel), category, parts, _extra(classes, "superpixel", superpixel,
                                                                               np.array([row]))


def _extra(classes: SlideClasses, name: str, value: int, rows: np.ndarray) -> dict:
    """``{name: value}`` and, for predictions, the mean ``certainty`` of ``rows``."""
    extra: dict = {name: int(value)}
    if classes.certainty_M is not None:
        extra["certainty"] = round(float(classes.certainty_M[rows].mean()), 4)
    return extra


def _in_order(keyed: Iterable[tuple[Key, dict]]) -> list[dict]:
    return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]


def _texts_in_order(keyed: Iterable[tuple[Key, dict]], spill: Path | None) -> Iterator[tuple[str]]:
    """The items' compact JSON texts in key order, through a temporary file in ``spill``
    (:func:`key_sorted`), as 1-tuples for :func:`list_pieces`."""
    return ((text,) for text in key_sorted(((*key, compact(item)) for key, item in keyed), folder=spill))


def _features(classes: SlideClasses, project: Project, dissolve: bool) -> Iterator[tuple[Key, dict]]:
    categories = {category.id: category for category in project.categories}
    integral = float(classes.downsample).is_integer()
    for key, category, parts, extra in _shapes(classes, categories, dissolve):
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
    return {"type": "FeatureCollection", "features": _in_order(_features(classes, project, dissolve))}


def geojson_pieces(classes: SlideClasses, project: Project, *, dissolve: bool = True,
                   spill: Path | None = None) -> Iterator[str]:
    """:func:`geojson`'s document as compact JSON text, a feature at a time (features are
    sorted through a temporary file in ``spill``, see :func:`key_sorted`)."""
    features = list_pieces(_texts_in_order(_features(classes, project, dissolve), spill))
    return object_pieces({"type": "FeatureCollection", "features": None}, {"features": features})


def write_geojson(path: Path, classes: SlideClasses, project: Project, *, dissolve: bool = True) -> None:
    """:func:`geojson`'s document as compact JSON at ``path``, atomically, written a feature at a
    time: memory holds a batch of traced superpixels, not the document (a slide of 633,820
    superpixels with ``dissolve=False``: 227 MB of JSON)."""
    write_pieces_atomic(path, geojson_pieces(classes, project, dissolve=dissolve, spill=path.parent))


@dataclass(frozen=True)
class _Annotation:
    """An annotation document in parts: ``head`` (every key but ``elements``), the polyline
    elements (made as they are iterated, not in order) and the pixelmap element, whose
    ``values`` is an int64 array ``(N + 1,)``."""

    head: dict
    polylines: Iterator[tuple[Key, dict]]
    pixelmap: dict | None


def _annotation(classes: SlideClasses, project: Project, dissolve: bool, elements: Elements,
                girder_id: str | None) -> _Annotation:
    if girder_id is not None and not _GIRDER_ID.match(girder_id):
        raise ParameterError(f"girder_id {shown_input(girder_id)} is not a Girder item id (24 lower-case hex digits)")
    polylines = iter(()) if elements is Elements.pixelmap else _polylines(classes, project, dissolve)
    pixelmap = (None if elements is Elements.polygons
                else _pixelmap(classes, project.categories, girder_id or PLACEHOLDER_GIRDER_ID))
    where = f"epoch {classes.epoch} predictions" if classes.source is Source.predictions else "effective labels"
    description = f"{where} of {classes.slide.name} exported by slidelabel from project {project.name!r}"
    if not girder_id and elements is not Elements.polygons:
        description += (f"; the pixelmap's girderId {PLACEHOLDER_GIRDER_ID} is a placeholder for the Girder item of "
                        "the superpixel image")
    attributes = {"project": project.name, "slide": classes.slide.name, "source": classes.source.value,
                  "epoch": classes.epoch, "downsample": classes.downsample}
    head = {"name": f"slidelabel {classes.source.value}", "description": description,
            "attributes": {"slidelabel": attributes}}
    return _Annotation(head, polylines, pixelmap)


def _polylines(classes: SlideClasses, project: Project, dissolve: bool) -> Iterator[tuple[Key, dict]]:
    categories = {category.id: category for category in project.categories}
    integral = float(classes.downsample).is_integer()
    for (position, region), category, parts, extra in _shapes(classes, categories, dissolve):
        r, g, b = rgb(category.color)
        for part in parts:
            element = {"type": "polyline", "closed": True, "points": _points(part.shell_K_2, integral),
                       "group": category.name, "label": {"value": category.name}, "lineColor": category.color,
                       "fillColor": f"rgba({r}, {g}, {b}, 0.25)", "user": {**extra, "excluded": category.excluded}}
            if part.holes:
                element["holes"] = [_points(hole, integral) for hole in part.holes]
            # A region's parts keep their order: the sort is stable.
            yield (position, region), element


def annotation(classes: SlideClasses, project: Project, *, dissolve: bool = True,
               elements: Elements = Elements.polygons, girder_id: str | None = None) -> dict:
    """A Digital Slide Archive annotation (large_image's annotation schema) in level-0 pixels.

    ``polygons``: a closed ``polyline`` element per region (``holes`` kept), ``group`` and
    ``label`` set to the category name, so HistomicsUI shows it without any plugin.
    ``pixelmap``: one element whose ``values[s]`` is the index in ``categories`` of superpixel
    ``s`` (0, the first category ``default``, for unclassified ones and for index 0, which is no
    superpixel); ``girderId`` is ``girder_id`` or :data:`PLACEHOLDER_GIRDER_ID`.

    The whole document in memory: :func:`write_annotation` writes the same text an element at a
    time.
    """
    parts = _annotation(classes, project, dissolve, elements, girder_id)
    items = _in_order(parts.polylines)
    if parts.pixelmap is not None:
        items.append({**parts.pixelmap, "values": parts.pixelmap["values"].tolist()})
    return {**parts.head, "elements": items}


def annotation_pieces(classes: SlideClasses, project: Project, *, dissolve: bool = True,
                      elements: Elements = Elements.polygons, girder_id: str | None = None,
                      spill: Path | None = None) -> Iterator[str]:
    """:func:`annotation`'s document as compact JSON text, an element at a time, the pixelmap's
    values :data:`VALUES_PER_PIECE` at a time (polylines are sorted through a temporary file in
    ``spill``, see :func:`key_sorted`); :class:`ParameterError` at once for a bad ``girder_id``."""
    parts = _annotation(classes, project, dissolve, elements, girder_id)
    items: Iterator[Iterable[str]] = _texts_in_order(parts.polylines, spill)
    if parts.pixelmap is not None:
        values_N = parts.pixelmap["values"]
        values = list_pieces((",".join(map(str, values_N[start:start + VALUES_PER_PIECE].tolist())),)
                             for start in range(0, values_N.size, VALUES_PER_PIECE))
        items = chain(items, [object_pieces(parts.pixelmap, {"values": values})])
    return object_pieces({**parts.head, "elements": None}, {"elements": list_pieces(items)})


def write_annotation(path: Path, classes: SlideClasses, project: Project, *, dissolve: bool = True,
                     elements: Elements = Elements.polygons, girder_id: str | None = None) -> None:
    """:func:`annotation`'s document as compact JSON at ``path``, atomically, written an element
    at a time: memory holds a batch of traced superpixels, not the document."""
    pieces = annotation_pieces(classes, project, dissolve=dissolve, elements=elements, girder_id=girder_id,
                               spill=path.parent)
    write_pieces_atomic(path, pieces)


def _points(ring_K_2: np.ndarray, integral: bool) -> list:
    """A closed ring as DSA points: ``[x, y, 0]``, the first point not repeated."""
    ring = ring_K_2[:-1]
    return np.column_stack([ring, np.zeros(len(ring))]).astype(np.int64 if integral else np.float64).round(2).tolist()


def _pixelmap(classes: SlideClasses, categories: list[Category], girder_id: str) -> dict:
    index_of = {category.id: i + 1 for i, category in enumerate(categories)}
    values_N = np.zeros(classes.count + 1, np.int64)
    values_N[classes.superpixels_M] = [index_of.get(c, 0) for c in classes.category_ids_M.tolist()]
    legend = [{"label": "default", "fillColor": "rgba(0, 0, 0, 0)", "strokeColor": "rgba(0, 0, 0, 1)"}]
    for category in categories:
        r, g, b = rgb(category.color)
        legend.append({"label": category.name, "fillColor": f"rgba({r}, {g}, {b}, 0.5)", "strokeColor": category.color})
    d = classes.downsample
    return {"type": "pixelmap", "girderId": girder_id, "boundaries": False, "values": values_N,
            "categories": legend, "transform": {"xoffset": 0, "yoffset": 0, "matrix": [[d, 0], [0, d]]},
            "user": {"superpixel_image": "pixel value = slidelabel superpixel id at the working level",
                     "excluded": [c.name for c in categories if c.excluded]}}


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
