"""Polygons from a GeoJSON file (QuPath's export; HoVer-Net, CellViT, StarDist converted), read
feature by feature so that a million cells never become a million-element JSON tree.

Accepted: a FeatureCollection, or a JSON list of Features (QuPath without "FeatureCollection"),
with ``Polygon`` or ``MultiPolygon`` geometries in level-0 pixels. A Feature's class is
``properties.classification.name`` (QuPath 0.4+; ``names`` of a derived class are joined with
": ") or a string ``properties.classification``. Features that are not polygons, empty or
invalid (a ring of fewer than 3 points, coordinates that are not finite numbers) are skipped and
counted in :attr:`GeoJsonPolygons.skipped`. Features are read one at a time, every JSON value
bounded before it is parsed (:mod:`.geojson_stream`), and so are the classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers.geojson_stream import features, not_geojson
from slidelabel.pipelines.importers.polygons import PolygonSet

#: Longest class name, as a project's category names (services/projects.py CATEGORY_NAME_CHARS):
#: the twenty-third attack's 60,000 names of 1,000 characters made a 58 MB manifest that every
#: listing of imports sent.
MAX_CLASS_NAME_CHARS = 100
#: Most distinct class names of a file, as a project's categories (services/projects.py MAX_CATEGORIES).
MAX_CLASSES = 255
#: Features whose vertices are gathered into one array before the next batch starts.
_BATCH = 20_000
#: How much a growing array grows when full: its memory is at most this share above what it holds.
_GROWTH = 1.25
@dataclass
class GeoJsonPolygons:
    """The polygons of a file and what was skipped.

    ``feature_index_P``: (P,) int64 index of each polygon's Feature in the file (0-based);
    ``class_P``: (P,) int32 index into ``class_names``, -1 without a class.
    """

    polygons: PolygonSet
    feature_index_P: np.ndarray
    class_P: np.ndarray
    class_names: list[str]
    features: int
    skipped: dict[str, int] = field(default_factory=dict)


class _Batches:
    """Gathers the rings of :data:`_BATCH` features as Python lists (or, from the fast path, as
    arrays), then converts and checks them all at once: a numpy call per ring would cost more than
    parsing the JSON."""

    def __init__(self, path: Path, max_polygons: int | None = None, max_vertices: int | None = None) -> None:
        self.path, self.max_polygons, self.max_vertices = path, max_polygons, max_vertices
        self.polygons_read = self.vertices_read = 0
        self.rings: list = []
        self.lengths: list[np.ndarray] = []
        self.fast = False
        self.rings_per_polygon: list[int] = []
        self.feature_index: list[int] = []
        self.classes: list[int] = []
        # x, y; ring lengths; rings per polygon; feature index; class; bounding box.
        self.out = [_Growing((2,), np.float64), _Growing((), np.int64), _Growing((), np.int64),
                    _Growing((), np.int64), _Growing((), np.int32), _Growing((4,), np.float64)]
        self.invalid = 0

    def count(self, vertices: int) -> None:
        """Count a polygon (or a Feature skipped) as it is read; past a bound, stop with an error
        before reading on."""
        self.polygons_read += 1
        self.vertices_read += vertices
        if self.max_polygons is not None and self.polygons_read > self.max_polygons:
            raise ParameterError(f"{self.path} holds more than {self.max_polygons:,} polygons (Features of other "
                                 f"kinds counted alike); a slide holds at most "
                                 f"{self.max_polygons:,} segments (24-bit ids): split the file or drop polygons")
        if self.max_vertices is not None and self.vertices_read > self.max_vertices:
            raise ParameterError(f"{self.path} holds more than {self.max_vertices:,} vertices (polygon "
                                 f"{self.polygons_read:,} passes the bound); simplify the outlines (e.g. shapely's "
                                 f"simplify(0.5) or QuPath's Simplify shape) and import them again")

    def add(self, rings: list[list] | tuple[np.ndarray, np.ndarray], feature_index: int, class_index: int) -> None:
        """Add a polygon's rings: lists of points, or (from the fast path) its (V, 2) points and
        (R,) ring lengths; a batch holds one kind or the other."""
        fast = isinstance(rings, tuple)
        self.count(len(rings[0]) if fast else sum(map(len, rings)))
        if self.rings_per_polygon and fast != self.fast:
            self.pack()
        self.fast = fast
        if fast:
            self.rings.append(rings[0])
            self.lengths.append(rings[1])
        else:
            self.rings.extend(rings)
        self.rings_per_polygon.append(len(rings[1]) if fast else len(rings))
        self.feature_index.append(feature_index)
        self.classes.append(class_index)
        if len(self.rings_per_polygon) >= _BATCH:
            self.pack()

    def pack(self) -> None:
        if not self.rings_per_polygon:
            return
        rings_per_polygon = np.asarray(self.rings_per_polygon, np.int64)
        if self.fast:
            xy, lengths = np.concatenate(self.rings), np.concatenate(self.lengths)
            bad_ring = np.zeros(lengths.size, bool)
        else:
            lengths = np.fromiter(map(len, self.rings), np.int64, len(self.rings))
            xy, bad_ring = _points(self.rings, lengths)
        first = np.cumsum(lengths) - lengths
        low_x, low_y = np.minimum.reduceat(xy[:, 0], first), np.minimum.reduceat(xy[:, 1], first)
        high_x, high_y = np.maximum.reduceat(xy[:, 0], first), np.maximum.reduceat(xy[:, 1], first)
        # Non-finite numbers, or a ring without area (all points on a line): invalid.
        bad_ring |= ~np.isfinite(low_x + low_y + high_x + high_y) | (high_x <= low_x) | (high_y <= low_y)
        polygon_of_ring = np.repeat(np.arange(rings_per_polygon.size), rings_per_polygon)
        bad_polygon = np.zeros(rings_per_polygon.size, bool)
        bad_polygon[polygon_of_ring[bad_ring]] = True
        keep_ring = ~bad_polygon[polygon_of_ring]
        keep_vertex = np.repeat(keep_ring, lengths)
        if not bad_polygon.all():  # an empty part would leave polygons() nothing to reduce
            first_ring = np.cumsum(rings_per_polygon) - rings_per_polygon
            bbox = np.stack([np.minimum.reduceat(low_x, first_ring), np.minimum.reduceat(low_y, first_ring),
                             np.maximum.reduceat(high_x, first_ring), np.maximum.reduceat(high_y, first_ring)], 1)
            batch = (xy[keep_vertex], lengths[keep_ring], rings_per_polygon[~bad_polygon],
                     np.asarray(self.feature_index, np.int64)[~bad_polygon],
                     np.asarray(self.classes, np.int32)[~bad_polygon], bbox[~bad_polygon])
            for out, array in zip(self.out, batch):
                out.extend(array)
        self.invalid += int(bad_polygon.sum())
        self.rings, self.lengths, self.rings_per_polygon, self.feature_index, self.classes = [], [], [], [], []

    def polygons(self) -> tuple[PolygonSet, np.ndarray, np.ndarray]:
        """The polygons, each one's feature index and class index."""
        self.pack()
        xy, lengths, per_polygon, feature_index, classes, bbox = (out.take() for out in self.out)
        ring_end = np.cumsum(lengths, out=lengths)
        polygon_ring_end = np.cumsum(per_polygon, out=per_polygon)
        return PolygonSet(xy, ring_end, polygon_ring_end, bbox), feature_index, classes


class _Growing:
    """An array that batches are appended to in place: ``ndarray.resize`` reallocates, which for a
    large array remaps its pages rather than copying them, so memory stays near what it holds
    instead of doubling as a concatenation of all batches would."""

    def __init__(self, tail: tuple[int, ...], dtype: type) -> None:
        self.array = np.empty((0, *tail), dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        end = self.size + len(values)
        if end > len(self.array):
            self.array.resize((max(end, int(len(self.array) * _GROWTH) + 4096), *self.array.shape[1:]), refcheck=False)
        self.array[self.size : end] = values
        self.size = end

    def take(self) -> np.ndarray:
        """The array of what was appended (the object is spent)."""
        array, self.array = self.array, None
        array.resize((self.size, *array.shape[1:]), refcheck=False)
        return array


def _points(rings: list[list], lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, 2) float64 x, y of all rings' points and (R,) bool rings whose points are not numbers."""
    try:
        xy = np.array(list(chain.from_iterable(rings)), np.float64)
        if xy.ndim == 2 and xy.shape[1] == 2:
            return xy, np.zeros(len(rings), bool)
    except (TypeError, ValueError):
        pass
    # Some points have a z, or are not numbers: ring by ring.
    parts, bad = [], np.zeros(len(rings), bool)
    for r, ring in enumerate(rings):
        try:
            part = np.array([point[:2] for point in ring], np.float64)
            if part.shape != (len(ring), 2):
                raise ValueError
        except (TypeError, ValueError, IndexError):
            part, bad[r] = np.full((len(ring), 2), np.nan), True
        parts.append(part)
    return np.concatenate(parts), bad


def read_geojson(path: Path, *, max_polygons: int | None = None, max_vertices: int | None = None) -> GeoJsonPolygons:
    """The polygons of the GeoJSON file at ``path``, in file order; polygons and vertices are
    counted as they are read (invalid ones too), and reading stops past ``max_polygons`` or
    ``max_vertices``.

    Raises
    ------
    ParameterError
        The file is not JSON, nested deeper than the parser follows, or not a FeatureCollection or
        list of Features; the message names the file and, for broken JSON, the character where it
        breaks. It holds more than ``max_polygons`` polygons (skipped Features counted alike) or
        ``max_vertices`` vertices, a value longer than :data:`~.geojson_stream.MAX_VALUE_CHARS` or a Feature longer
        than :data:`~.geojson_stream.MAX_FEATURE_CHARS` (the message names the key or the Feature), a class name
        longer than :data:`MAX_CLASS_NAME_CHARS` or more than :data:`MAX_CLASSES` classes.
    """
    path = Path(path)
    batches = _Batches(path, max_polygons, max_vertices)
    class_names: dict[str, int] = {}
    skipped: dict[str, int] = {}
    count = 0
    try:
        for index, (feature, points) in enumerate(features(path)):
            count += 1
            reason, rings = (None, points) if points is not None else _rings(feature)
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                batches.count(0)
                continue
            name = _class_name(feature.get("properties"))
            batches.add(rings, index, _class_index(path, class_names, name, index))
    except RecursionError:  # json's parser (and str() of what it parsed) recurses once per level
        raise not_geojson(path, "nested too deep: lists or objects hundreds of levels inside each other, where "
                                "a MultiPolygon's coordinates need 4") from None
    polygons, feature_index, classes = batches.polygons()
    if batches.invalid:
        skipped["invalid geometry"] = skipped.get("invalid geometry", 0) + batches.invalid
    return GeoJsonPolygons(polygons, feature_index, classes, list(class_names), count, skipped)


def _rings(feature: object) -> tuple[str | None, list[list]]:
    """(None, the rings of all parts as lists of points) or (why the feature is skipped, [])."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        return "not a GeoJSON Feature", []
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or not geometry.get("coordinates"):
        return "empty geometry", []
    kind = geometry.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        return f"{kind} geometry (not a polygon)", []
    parts = [geometry["coordinates"]] if kind == "Polygon" else geometry["coordinates"]
    rings = [ring for part in parts if isinstance(part, list) for ring in part]
    if len(rings) != sum(len(part) if isinstance(part, list) else 1 for part in parts):
        return "invalid geometry", []
    if not all(isinstance(ring, list) and len(ring) >= 3 for ring in rings):
        return "invalid geometry", []
    return (None, rings) if rings else ("empty geometry", [])


def _class_index(path: Path, class_names: dict[str, int], name: str | None, index: int) -> int:
    """The index of ``name`` in ``class_names`` (added if new), -1 for None; a name longer than
    :data:`MAX_CLASS_NAME_CHARS`, or a class past :data:`MAX_CLASSES`, is refused."""
    if name is None:
        return -1
    if len(name) > MAX_CLASS_NAME_CHARS:
        raise ParameterError(f"{path}: feature {index}'s class name has {len(name):,} characters; a class becomes "
                             f"a project category, whose name has at most {MAX_CLASS_NAME_CHARS}: shorten it")
    found = class_names.setdefault(name, len(class_names))
    if found >= MAX_CLASSES:
        raise ParameterError(f"{path} holds more than {MAX_CLASSES} classes (feature {index} is the first past the "
                             f"bound); a class becomes a project category, of which a project has at most "
                             f"{MAX_CLASSES}: merge classes or import the polygons without classification")
    return found


def _class_name(properties: object) -> str | None:
    classification = properties.get("classification") if isinstance(properties, dict) else None
    if isinstance(classification, str):
        return classification or None
    if not isinstance(classification, dict):
        return None
    name = classification.get("name")
    if not name and isinstance(classification.get("names"), list):
        name = ": ".join(map(str, classification["names"]))
    return str(name) if name else None
