"""Polygons from a GeoJSON file (QuPath's export; HoVer-Net, CellViT, StarDist converted), read
feature by feature so that a million cells never become a million-element JSON tree.

Accepted: a FeatureCollection, or a JSON list of Features (QuPath without "FeatureCollection"),
with ``Polygon`` or ``MultiPolygon`` geometries in level-0 pixels. A Feature's class is
``properties.classification.name`` (QuPath 0.4+; ``names`` of a derived class are joined with
": ") or a string ``properties.classification``. Features that are not polygons, empty or
invalid (a ring of fewer than 3 points, coordinates that are not finite numbers) are skipped and
counted in :attr:`GeoJsonPolygons.skipped`. The coordinates of most Features are parsed straight
from the file's bytes (:mod:`.json_coordinates`), the rest of each Feature by :mod:`json`, whose
objects cost up to ~30 times their text: every value it parses is bounded before it is parsed
(:data:`MAX_VALUE_CHARS`, :data:`MAX_FEATURE_CHARS`), as are the classes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers.json_coordinates import DONE, INCOMPLETE, FeatureScanner
from slidelabel.pipelines.importers.polygons import PolygonSet

#: Characters read from the file at a time, at least: a value longer than what is held is read in
#: reads as long as it, so that it is parsed again a few times rather than once per chunk.
_CHUNK_CHARS = 1 << 20
#: Most characters of a JSON value other than coordinates that json parses: a top-level value
#: besides "features", a Feature's properties, a list element that is not an object. A cell's
#: QuPath properties (class, colour, a hundred measurements) take a few kB; json's objects cost up to
#: 30 times their text (the twenty-third attack: 100 MB of empty lists under a top-level key held
#: 3 GB for 130 s, and in one Feature's properties 3 GB): twice this costs at most ~60 MB.
MAX_VALUE_CHARS = 1 << 20
#: Most characters of one Feature (its coordinates included): json parses a Feature whole when the
#: fast path cannot (an exponent, a z, over a million points), at ~8 times the text of coordinates
#: and up to ~30 times that of empty lists; at most twice this is parsed before a longer one is
#: refused (0.25 GB of coordinates, 1 GB of empty lists). A million points as QuPath writes them
#: (the fast path's capacity) take about 14 MiB.
MAX_FEATURE_CHARS = 16 << 20
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
_WHITESPACE = " \t\n\r"
#: A truncated value breaks within this many characters of the end of the text given to json
#: (an unfinished number, literal or escape), but for an unterminated string.
_TRUNCATION_CHARS = 8
#: Stands for the coordinates the fast path read, in the rest of the Feature given to json.
_PLACEHOLDER_VALUE = "slidelabel: coordinates read"
_PLACEHOLDER = json.dumps(_PLACEHOLDER_VALUE)


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
        ``max_vertices`` vertices, a value longer than :data:`MAX_VALUE_CHARS` or a Feature longer
        than :data:`MAX_FEATURE_CHARS` (the message names the key or the Feature), a class name
        longer than :data:`MAX_CLASS_NAME_CHARS` or more than :data:`MAX_CLASSES` classes.
    """
    path = Path(path)
    batches = _Batches(path, max_polygons, max_vertices)
    class_names: dict[str, int] = {}
    skipped: dict[str, int] = {}
    count = 0
    try:
        for index, (feature, points) in enumerate(_features(path)):
            count += 1
            reason, rings = (None, points) if points is not None else _rings(feature)
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                batches.count(0)
                continue
            name = _class_name(feature.get("properties"))
            batches.add(rings, index, _class_index(path, class_names, name, index))
    except RecursionError:  # json's parser (and str() of what it parsed) recurses once per level
        raise _not_geojson(path, "nested too deep: lists or objects hundreds of levels inside each other, where "
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


class _Reader:
    """Reads JSON values one at a time from a text file, refilling its buffer as needed. The buffer
    grows past a read only while the value at its start is within its bound, so json parses at most
    twice :data:`MAX_FEATURE_CHARS` for any value, and twice :data:`MAX_VALUE_CHARS` for a value
    outside the features that starts a read."""

    def __init__(self, path: Path, file) -> None:
        self.path, self.file = path, file
        self.buffer, self.position, self.eof = "", 0, False
        self.decoder = json.JSONDecoder()
        self.scanner = FeatureScanner()
        self.codes: np.ndarray | None = None

    def _more(self) -> bool:
        """Read on: at least :data:`_CHUNK_CHARS`, and as much as the unread part of the buffer
        holds, so that a long value is re-scanned a logarithmic number of times (linear work)."""
        if self.eof:
            return False
        chunk = self.file.read(max(_CHUNK_CHARS, len(self.buffer) - self.position))
        self.eof = not chunk
        self.buffer = self.buffer[self.position:] + chunk
        self.position = 0
        # The fast path reads bytes; in an ASCII buffer a byte is a character.
        self.codes = np.frombuffer(self.buffer.encode("ascii"), np.uint8) if self.buffer.isascii() else None
        return bool(chunk)

    def _more_within(self, limit: int, where: str) -> bool:
        """Read on (False at the end of the file) for a value at :attr:`position` that is not
        complete in the buffer; refused once the buffer holds more than ``limit`` characters of it."""
        if len(self.buffer) - self.position > limit:
            raise self.too_long(where, limit)
        return self._more()

    def feature(self, index: int) -> tuple[object, tuple[np.ndarray, np.ndarray] | None]:
        """The next value (element ``index`` of the features) and, when it is a Polygon or
        MultiPolygon Feature whose coordinates the fast path read, its (V, 2) points and (R,) ring
        lengths; else (the value, None)."""
        where = f"feature {index}"
        if self.peek() != "{":
            return self.value(MAX_VALUE_CHARS, where), None
        while self.codes is not None:
            status, end, value_start, value_end, leaf = self.scanner.scan(self.codes, self.position)
            if status == INCOMPLETE and self._more_within(MAX_FEATURE_CHARS, where):
                continue
            if status != DONE:
                break
            if end - self.position > MAX_FEATURE_CHARS:
                raise self.too_long(where, MAX_FEATURE_CHARS)
            if end - self.position - (value_end - value_start) > MAX_VALUE_CHARS:
                raise self.too_long(f"{where}'s properties (all but its coordinates)", MAX_VALUE_CHARS)
            rest = self.buffer[self.position : value_start] + _PLACEHOLDER + self.buffer[value_end:end]
            try:
                feature = json.loads(rest)
            except json.JSONDecodeError:
                break
            geometry = feature.get("geometry") if isinstance(feature, dict) else None
            if (isinstance(geometry, dict) and feature.get("type") == "Feature"
                    and geometry.get("coordinates") == _PLACEHOLDER_VALUE
                    and geometry.get("type") == ("Polygon" if leaf == 3 else "MultiPolygon")):
                self.position = end
                return feature, self.scanner.points()
            break
        return self.value(MAX_FEATURE_CHARS, where), None

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end of the file)."""
        while True:
            while self.position < len(self.buffer) and self.buffer[self.position] in _WHITESPACE:
                self.position += 1
            if self.position < len(self.buffer) or not self._more():
                return self.buffer[self.position : self.position + 1]

    def expect(self, characters: str) -> str:
        found = self.peek()
        if not found or found not in characters:
            raise self.error(f"expected one of {characters!r}, found {found or 'the end of the file'!r}")
        self.position += 1
        return found

    def value(self, limit: int, where: str) -> object:
        """The next JSON value, ``where`` in the file, of at most ``limit`` characters: the buffer
        grows only while the value may be within ``limit``, so a longer one is refused after json
        parsed no more than the buffer holds."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as error:
                truncated = (error.pos >= len(self.buffer) - _TRUNCATION_CHARS
                             or error.msg.startswith("Unterminated string"))
                if truncated and self._more_within(limit, where):
                    continue
                raise self.error(error.msg) from None
            # A number at the very end of the buffer may continue in the next chunk.
            if end == len(self.buffer) and not self.eof and self._more_within(limit, where):
                continue
            if end - self.position > limit:
                raise self.too_long(where, limit)
            self.position = end
            return value

    def error(self, message: str) -> ParameterError:
        return _not_geojson(self.path, message)

    def too_long(self, where: str, limit: int) -> ParameterError:
        advice = ("simplify its outline (e.g. shapely's simplify(0.5) or QuPath's Simplify shape) and keep no "
                  "properties but its classification" if limit == MAX_FEATURE_CHARS
                  else "drop what the import does not read: it reads the polygons and their classification only")
        return ParameterError(f"{self.path}: {where}: more than {limit:,} characters of JSON, the most read there; "
                              f"{advice}")


def _not_geojson(path: Path, message: str) -> ParameterError:
    return ParameterError(f"{path} is not valid GeoJSON ({message}); export a FeatureCollection of "
                          f"polygons in level-0 pixel coordinates")


def _features(path: Path) -> Iterator[tuple[object, tuple[np.ndarray, np.ndarray] | None]]:
    """The Features of a FeatureCollection or of a top-level list, one at a time, with their
    points where the fast path (:mod:`.json_coordinates`) read them."""
    try:
        file = open(path, encoding="utf-8")
    except OSError as error:
        raise ParameterError(f"cannot read {path}: {error.strerror or error}") from error
    with file:
        reader = _Reader(path, file)
        try:
            opening = reader.expect("{[")
            if opening == "{":
                found = False
                while reader.peek() != "}":
                    key = reader.value(MAX_VALUE_CHARS, "a top-level key")
                    reader.expect(":")
                    if key == "features":
                        found = True
                        reader.expect("[")
                        yield from _array(reader)
                    else:
                        reader.value(MAX_VALUE_CHARS, f"the value of the top-level key {str(key)[:100]!r}")
                    if reader.expect(",}") == "}":
                        break
                if not found:
                    raise reader.error("no 'features' list")
            else:
                yield from _array(reader)
        except UnicodeDecodeError as error:
            raise ParameterError(f"{path} is not UTF-8 text ({error.reason}): not a GeoJSON file") from None


def _array(reader: _Reader) -> Iterator[tuple[object, tuple[np.ndarray, np.ndarray] | None]]:
    """The values of a JSON array whose '[' was read, with their points where the fast path read them."""
    if reader.peek() == "]":
        reader.position += 1
        return
    index = 0
    while True:
        yield reader.feature(index)
        if reader.expect(",]") == "]":
            return
        index += 1
