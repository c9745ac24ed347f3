"""Imports of annotations drawn elsewhere as labels of a slide's superpixels.

Two formats, told apart by their shape:

- **GeoJSON** (QuPath's *Export objects as GeoJSON*): a FeatureCollection, a Feature or a list of
  Features with ``Polygon`` or ``MultiPolygon`` geometry in level-0 pixels; the category is
  ``properties.classification.name`` (QuPath 0.4+; ``names`` of a derived class are joined with
  ``": "`` as QuPath shows them).
- **Digital Slide Archive annotation JSON** (``{"name", "elements": [...]}``, a Girder document
  ``{"annotation": {...}}`` or a list of either): closed ``polyline``, ``rectangle``, ``ellipse``
  and ``circle`` elements by their ``group`` (else ``label.value``), and ``pixelmap`` elements by
  ``values`` (index = superpixel id, as slidelabel exports them) and ``categories[].label``.

A polygon labels every superpixel whose **centroid** lies inside it (and in none of its holes):
one point-in-polygon test per superpixel near the polygon, so a rough outline labels the
superpixels it mostly covers. Where shapes overlap, the later one in the file wins. The labels are
the importing user's, written through :func:`slidelabel.services.labels.set_labels`, so they enter
the label history like a brush stroke.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from slidelabel.errors import ConflictError, ParameterError, PermissionDeniedError
from slidelabel.services.access import ALLOWED, Action
from slidelabel.services.labels import set_labels
from slidelabel.services.names import look_alike_key, shown_input
from slidelabel.services.projects import add_category, category_ids_by_look, check_category_name, room_for_categories
from slidelabel.services.shape_centroids import Shape, assign_shapes
from slidelabel.services.slide_classes import superpixel_folder
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Project, Role, Slide, User
from slidelabel.store.superpixel_files import TABLE_FILE
from slidelabel.store.superpixel_table import read_table

_FORMATS = ("a GeoJSON FeatureCollection (QuPath: File > Export objects as GeoJSON) or a Digital Slide "
            "Archive annotation JSON ({\"name\": ..., \"elements\": [...]})")
_RGB = re.compile(r"^rgba?\((\d+),\s*(\d+),\s*(\d+)")
#: Sides of the polygon standing for a DSA circle or ellipse.
_CURVE_POINTS = 64
#: What a JSON value parsed into a Python type is called in JSON's words, for messages.
_JSON_TYPES = {bool: "boolean", int: "number", float: "number", list: "list", dict: "object"}
@dataclass(frozen=True)
class PixelLabels:
    """Categories by superpixel id from a pixelmap: ``names[values_S[s]]`` for superpixel ``s``
    (None for the first, "default" category: unlabelled)."""

    values_S: np.ndarray
    names: list[str | None]
    colors: list[str | None]


@dataclass
class Document:
    """What an upload holds: its format, shapes, pixelmaps and what was skipped, by reason."""

    format: str
    shapes: list[Shape] = field(default_factory=list)
    pixelmaps: list[PixelLabels] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass(frozen=True)
class ImportResult:
    """Superpixels labelled per category name, label changes, shapes that labelled none."""

    format: str
    shapes: int
    empty_shapes: int
    labelled: dict[str, int]
    changed: int
    unchanged: int
    created_categories: list[str]
    skipped: dict[str, int]


def parse_document(document: object) -> Document:
    """The shapes and pixelmaps of a GeoJSON or DSA annotation document (parsed JSON);
    :class:`ParameterError` saying what is wrong when it is neither."""
    items = document if isinstance(document, list) else [document]
    if items and all(isinstance(item, dict) and ("elements" in item or "annotation" in item) for item in items):
        parsed = Document("annotation")
        for item in items:
            body = item.get("annotation", item)
            if not isinstance(body, dict) or not isinstance(body.get("elements"), list):
                raise ParameterError(f"an annotation's 'elements' must be a list; send {_FORMATS}")
            for index, element in enumerate(body["elements"]):
                _dsa_element(parsed, element, index)
        return parsed
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        items = document.get("features")
        if not isinstance(items, list):
            raise ParameterError("the FeatureCollection's 'features' must be a list")
        if not items:
            raise ParameterError("the FeatureCollection has no features: nothing to import")
    if not all(isinstance(item, dict) and item.get("type") == "Feature" for item in items) or not items:
        raise ParameterError(f"expected {_FORMATS}; got {_describe(document)}")
    parsed = Document("geojson")
    for index, feature in enumerate(items):
        _feature(parsed, feature, index)
    return parsed


def _describe(document: object) -> str:
    if isinstance(document, dict):
        if "type" in document:
            return f"a JSON object with type {shown_input(document['type'])}"
        return f"a JSON object with keys {', '.join(shown_input(key) for key in sorted(map(str, document))[:6])}"
    if isinstance(document, list):
        return f"a JSON list of {len(document)} items, not all GeoJSON Features" if document else "an empty list"
    return f"a JSON {type(document).__name__}"


def _ring(points: object, where: str) -> np.ndarray:
    """A ring's ``(K, 2)`` x, y (a z or more dropped), checked to be at least a triangle."""
    try:
        ring = np.array([point[:2] for point in points], dtype=np.float64)
    except (TypeError, ValueError, IndexError):
        raise ParameterError(f"{where}: coordinates must be lists of [x, y] numbers") from None
    if ring.ndim != 2 or ring.shape[0] < 3 or ring.shape[1] != 2 or not np.isfinite(ring).all():
        raise ParameterError(f"{where}: a ring needs at least 3 points of finite [x, y] numbers")
    return ring


def _feature(parsed: Document, feature: dict, index: int) -> None:
    where = f"feature {index}"
    geometry = feature.get("geometry") if isinstance(feature.get("geometry"), dict) else {}
    properties = feature.get("properties") if isinstance(feature.get("properties"), dict) else {}
    classification = properties.get("classification")
    if geometry.get("type") not in ("Polygon", "MultiPolygon"):
        parsed.skip(f"{geometry.get('type') or 'no'} geometry (only Polygon and MultiPolygon label superpixels)")
        return
    name, color = _classification(classification, where)
    if name is None:
        parsed.skip("no classification")
        return
    polygons = geometry.get("coordinates")
    polygons = [polygons] if geometry["type"] == "Polygon" else polygons
    if not isinstance(polygons, list) or not all(isinstance(p, list) and p for p in polygons):
        raise ParameterError(f"{where}: {geometry['type']} coordinates must be lists of rings")
    for rings in polygons:
        shell, *holes = (_ring(ring, where) for ring in rings)
        parsed.shapes.append(Shape(name, color, shell, tuple(holes)))


def _class_name(value: object, where: str, field: str) -> str | None:
    """A class name as the file gives it: a string, or None when there is none (null, ""). Any
    other JSON (a number, a list, an object) is no class name: :class:`ParameterError` naming
    the feature or element, rather than a category named after its Python text."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ParameterError(f"{where}: its {field} must be a string (a class name); got a JSON "
                             f"{_JSON_TYPES.get(type(value), type(value).__name__)}")
    return value


def _classification(classification: object, where: str) -> tuple[str | None, str | None]:
    """QuPath's class name and ``#rrggbb`` colour (``color`` [r, g, b], or 0.2's packed ``colorRGB``)."""
    if isinstance(classification, str):
        return classification, None
    if not isinstance(classification, dict):
        return None, None
    name = _class_name(classification.get("name"), where, "classification name")
    if not name and isinstance(classification.get("names"), list):
        parts = [_class_name(part, where, "classification names") for part in classification["names"]]
        name = ": ".join(part for part in parts if part) or None
    color = classification.get("color")
    if isinstance(color, list) and len(color) >= 3 and all(isinstance(c, int) for c in color[:3]):
        hex_color = "#{:02x}{:02x}{:02x}".format(*(max(0, min(255, c)) for c in color[:3]))
    elif isinstance(classification.get("colorRGB"), int):
        hex_color = f"#{classification['colorRGB'] & 0xFFFFFF:06x}"
    else:
        hex_color = None
    return name, hex_color


def _dsa_color(element: dict, key: str) -> str | None:
    value = element.get(key)
    if not isinstance(value, str):
        return None
    if re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        return value.lower()
    match = _RGB.match(value)
    return "#{:02x}{:02x}{:02x}".format(*(min(255, int(c)) for c in match.groups())) if match else None


def _dsa_element(parsed: Document, element: object, index: int) -> None:
    where = f"element {index}"
    if not isinstance(element, dict):
        raise ParameterError(f"{where} is not a JSON object")
    kind = element.get("type")
    if kind == "pixelmap":
        _pixelmap(parsed, element, where)
        return
    label = element.get("label")
    name = (_class_name(element.get("group"), where, "group")
            or (_class_name(label.get("value"), where, "label value") if isinstance(label, dict) else None))
    if kind not in ("polyline", "rectangle", "ellipse", "circle") or (kind == "polyline" and not element.get("closed")):
        parsed.skip(f"{kind} element (only closed polylines, rectangles, ellipses, circles and pixelmaps label)")
        return
    if not name:
        parsed.skip("element without group or label")
        return
    color = _dsa_color(element, "lineColor") or _dsa_color(element, "fillColor")
    try:
        if kind == "polyline":
            shell = _ring(element["points"], where)
            holes = tuple(_ring(hole, where) for hole in element.get("holes") or ())
        else:
            shell, holes = _curve(element, kind), ()
    except ParameterError:
        raise
    except (KeyError, TypeError, ValueError, IndexError):
        raise ParameterError(f"{where}: a {kind} needs numeric 'points', or 'center' with 'width' and 'height' "
                             "or 'radius'") from None
    parsed.shapes.append(Shape(name, color, shell, holes))


def _curve(element: dict, kind: str) -> np.ndarray:
    """A rectangle, ellipse or circle as a polygon, rotated as large_image does (radians)."""
    cx, cy = float(element["center"][0]), float(element["center"][1])
    if kind == "circle":
        half_w = half_h = float(element["radius"])
    else:
        half_w, half_h = float(element["width"]) / 2, float(element["height"]) / 2
    if kind == "rectangle":
        x, y = np.array([-half_w, half_w, half_w, -half_w]), np.array([-half_h, -half_h, half_h, half_h])
    else:
        angles = np.linspace(0, 2 * math.pi, _CURVE_POINTS, endpoint=False)
        x, y = half_w * np.cos(angles), half_h * np.sin(angles)
    rotation = float(element.get("rotation") or 0)
    cos, sin = math.cos(rotation), math.sin(rotation)
    return np.column_stack([x * cos - y * sin + cx, x * sin + y * cos + cy])


def _pixelmap(parsed: Document, element: dict, where: str) -> None:
    values, legend = element.get("values"), element.get("categories")
    if not isinstance(values, list) or not isinstance(legend, list) or not all(isinstance(c, dict) for c in legend):
        raise ParameterError(f"{where}: a pixelmap needs a 'values' list and a 'categories' list of objects")
    try:
        values_S = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError):
        raise ParameterError(f"{where}: pixelmap values must be integers") from None
    if values_S.ndim != 1 or (values_S.size and (values_S.min() < 0 or values_S.max() >= len(legend))):
        raise ParameterError(f"{where}: pixelmap values must index its {len(legend)} categories")
    # The first category is the unlabelled "default" in HistomicsUI's superpixel pixelmaps.
    names = [None if i == 0 else _class_name(c.get("label"), f"{where}, category {i}", "label")
             for i, c in enumerate(legend)]
    parsed.pixelmaps.append(PixelLabels(values_S, names, [_dsa_color(c, "strokeColor") or _dsa_color(c, "fillColor")
                                                          for c in legend]))


@dataclass(frozen=True)
class ImportPlan:
    """An annotation file's labels worked out for a slide, before anything is written: the name
    each superpixel gets (``named_S[s]``: 1 + its index in ``names``, 0 none)."""

    parsed: Document
    names: list[str]
    named_S: np.ndarray
    empty_shapes: int


def plan_label_import(session: Session, files: ProjectFiles, slide: Slide, document: object) -> ImportPlan:
    """Parse an uploaded GeoJSON or DSA annotation and find the superpixels of each of its names
    on ``slide``: the costly part of an import (polygons x centroids), done without a write
    transaction, so that other users' writes never wait for it (:func:`apply_label_import`
    writes the result)."""
    parsed = parse_document(document)
    if not parsed.shapes and not parsed.pixelmaps:
        skipped = "; ".join(f"{count} with {reason}" for reason, count in parsed.skipped.items())
        raise ParameterError(f"nothing to import: no classified polygon or pixelmap ({skipped or 'the file is empty'})")
    for pixelmap in parsed.pixelmaps:
        if pixelmap.values_S.size != slide.superpixels + 1:
            raise ParameterError(f"a pixelmap has {pixelmap.values_S.size} values but slide {slide.name!r} has "
                                 f"{slide.superpixels} superpixels (values[0] is no superpixel): it was made for "
                                 "other superpixels")
    folder, _ = superpixel_folder(files, slide)
    names = list(dict.fromkeys([*(shape.name for shape in parsed.shapes),
                                *(name for pixelmap in parsed.pixelmaps for name in pixelmap.names if name)]))
    number = {name: i + 1 for i, name in enumerate(names)}
    named_S = np.zeros(slide.superpixels + 1, np.int64)
    empty = assign_shapes(named_S, parsed.shapes, read_table(folder / TABLE_FILE).centroid_level0, number)
    for pixelmap in parsed.pixelmaps:
        lookup = np.array([number[name] if name else 0 for name in pixelmap.names], np.int64)
        found_S = lookup[pixelmap.values_S]
        named_S[found_S != 0] = found_S[found_S != 0]
    return ImportPlan(parsed, names, named_S, empty)


def apply_label_import(session: Session, project: Project, slide: Slide, user: User, role: Role, plan: ImportPlan,
                       *, create_categories: bool = False) -> ImportResult:
    """Write a :func:`plan_label_import` as ``user``'s labels of ``slide``, which must be locked in
    this write session (:func:`slidelabel.services.labels.locked_slide`).

    Category names must match the project's (exactly); unknown ones are a
    :class:`ParameterError` listing them, unless ``create_categories`` (which needs the right to
    manage the project) adds them with the file's colour; :class:`ConflictError` when the slide's
    superpixels changed since the plan.
    """
    if plan.named_S.size != slide.superpixels + 1:
        raise ConflictError(f"slide {slide.name!r} got other superpixels during the import: import the file again")
    category_of, created = _categories(session, project, role, plan.parsed, create_categories)
    labelled, changed, unchanged = {}, 0, 0
    # The model version the labeller saw: the latest epoch, as if the shapes were brushed now.
    epoch = session.scalar(select(func.max(Epoch.number)).where(Epoch.project_id == project.id)) or 0
    for number in np.unique(plan.named_S[plan.named_S != 0]).tolist():
        name = plan.names[number - 1]
        superpixels = np.flatnonzero(plan.named_S == number)
        result = set_labels(session, slide, user.id, superpixels.tolist(), category_of[name], epoch=epoch)
        labelled[name] = labelled.get(name, 0) + int(superpixels.size)
        changed, unchanged = changed + result.changed, unchanged + result.unchanged
    return ImportResult(plan.parsed.format, len(plan.parsed.shapes), plan.empty_shapes, labelled, changed, unchanged,
                        created, plan.parsed.skipped)


def _categories(session: Session, project: Project, role: Role, parsed: Document, create: bool
                ) -> tuple[dict[str, int], list[str]]:
    """Category id by name for every name in ``parsed``, creating missing ones when allowed: all
    their names and their number (:data:`~slidelabel.services.projects.MAX_CATEGORIES`) are
    checked before the first is created, so a refused import creates none and ends at once. A name
    that looks like a category's ('Tumour' for 'tumour': :func:`category_ids_by_look`) is that
    category; of new names that look alike, the first is created."""
    by_look = category_ids_by_look(project.categories)
    colors = {shape.name: shape.color for shape in parsed.shapes}
    for pixelmap in parsed.pixelmaps:
        used = set(np.unique(pixelmap.values_S).tolist())
        colors.update((name, color) for i, (name, color) in enumerate(zip(pixelmap.names, pixelmap.colors))
                      if name and i in used)
    new = {look_alike_key(name): name for name in reversed(colors) if look_alike_key(name) not in by_look}
    missing = list(reversed(new.values()))
    if missing and not create:
        raise ParameterError(
            f"unknown categories {_some(missing)}; this project has {_some([c.name for c in project.categories])}. "
            "Rename them in the file, or add them with ?create_categories=true (owners only)")
    if missing and role not in ALLOWED[Action.manage]:
        raise PermissionDeniedError(f"only owners may add categories; you are {role.value}: ask an owner to add "
                                    f"{_some(missing)}")
    for name in missing:
        check_category_name(name)
    room_for_categories(session, project, len(missing))
    for name in missing:
        by_look[look_alike_key(name)] = add_category(session, project, name, color=colors[name]).id
    return {name: by_look[look_alike_key(name)] for name in colors}, missing


def _some(names: list[str], *, shown: int = 10) -> str:
    """The first ``shown`` of ``names``, quoted, and how many more: a file may name thousands."""
    listed = ", ".join(repr(name[:50]) for name in names[:shown])
    return listed + (f" and {len(names) - shown:,} more" if len(names) > shown else "")


