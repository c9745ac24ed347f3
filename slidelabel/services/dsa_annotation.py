"""Digital Slide Archive / HistomicsUI annotation JSON (large_image's annotation schema) of a
slide's labels or predictions: closed ``polyline`` elements per region and, on request, the
``pixelmap`` element of the superpixels, built whole (:func:`annotation`) or written an element at
a time (:func:`write_annotation`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.services.names import shown_input
from slidelabel.services.slide_classes import Key, SlideClasses, Source, exported_shapes, in_order, rgb, texts_in_order
from slidelabel.store.json_pieces import list_pieces, object_pieces, write_pieces_atomic
from slidelabel.store.models import Category, Project

#: Stands for the Girder item id of the superpixel image in a ``pixelmap`` element when none is
#: given: 24 hex digits, as the schema demands, that no Girder item has. Replace it with the id of
#: the item holding the superpixel image (pixel value = superpixel id, RGB-encoded as
#: ``R + 256 G + 65536 B``, at the working level; the element's ``transform`` scales it to level 0).
PLACEHOLDER_GIRDER_ID = "0" * 24
_GIRDER_ID = re.compile(r"^[0-9a-f]{24}$")
#: Values of a pixelmap element encoded at once (a few hundred kB of text).
VALUES_PER_PIECE = 65_536


class Elements(enum.StrEnum):
    """Which elements an annotation JSON holds."""

    polygons = "polygons"
    pixelmap = "pixelmap"
    both = "both"


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
    for (position, region), category, parts, extra in exported_shapes(classes, categories, dissolve):
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
    items = in_order(parts.polylines)
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
    items: Iterator[Iterable[str]] = texts_in_order(parts.polylines, spill)
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
