"""Polygons from a GeoJSON file (QuPath's export; HoVer-Net, CellViT, StarDist converted), read
feature by feature so that a million cells never become a million-element JSON tree.

Accepted: a FeatureCollection, or a JSON list of Features (QuPath without "FeatureCollection"),
with ``Polygon`` or ``MultiPolygon`` geometries in level-0 pixels. A Feature's class is
``properties.classification.name`` (QuPath 0.4+; ``names`` of a derived class are joined with
": ") or a string ``properties.classification``. Features that are not polygons, empty or
invalid (a ring of fewer than 3 points, coordinates that are not finite numbers) are skipped and
counted in :attr:`GeoJsonPolygons.skipped`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers.polygons import PolygonSet

#: Characters read from the file at a time.
_CHUNK_CHARS = 8 << 20
#: Features whose vertices are gathered into one array before the next batch starts.
_BATCH = 20_000
_WHITESPACE = " \t\n\r"


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
    """Accumulates rings feature by feature and packs them into arrays every :data:`_BATCH`."""

    def __init__(self) -> None:
        self.rings: list[np.ndarray] = []
        self.rings_per_polygon: list[int] = []
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, rings: list[np.ndarray]) -> None:
        self.rings.extend(rings)
        self.rings_per_polygon.append(len(rings))
        if len(self.rings_per_polygon) >= _BATCH:
            self.pack()

    def pack(self) -> None:
        if not self.rings_per_polygon:
            return
        lengths = np.fromiter((len(r) for r in self.rings), np.int64, len(self.rings))
        self.parts.append((np.concatenate(self.rings), lengths, np.asarray(self.rings_per_polygon, np.int64)))
        self.rings, self.rings_per_polygon = [], []

    def polygons(self) -> PolygonSet:
        self.pack()
        if not self.parts:
            empty = np.zeros(0, np.int64)
            return PolygonSet(np.zeros((0, 2)), empty, empty, np.zeros((0, 4)))
        xy = np.concatenate([p[0] for p in self.parts])
        ring_end = np.cumsum(np.concatenate([p[1] for p in self.parts]))
        polygon_ring_end = np.cumsum(np.concatenate([p[2] for p in self.parts]))
        self.parts = []
        first_vertex = np.concatenate([[0], ring_end[polygon_ring_end[:-1] - 1]])
        bbox = np.stack([np.minimum.reduceat(xy[:, 0], first_vertex), np.minimum.reduceat(xy[:, 1], first_vertex),
                         np.maximum.reduceat(xy[:, 0], first_vertex), np.maximum.reduceat(xy[:, 1], first_vertex)], 1)
        return PolygonSet(xy, ring_end, polygon_ring_end, bbox)


def read_geojson(path: Path) -> GeoJsonPolygons:
    """The polygons of the GeoJSON file at ``path``, in file order.

    Raises
    ------
    ParameterError
        The file is not JSON, or not a FeatureCollection or list of Features; the message names
        the file and, for broken JSON, the character where it breaks.
    """
    path = Path(path)
    batches = _Batches()
    feature_index: list[int] = []
    classes: list[int] = []
    class_names: dict[str, int] = {}
    skipped: dict[str, int] = {}
    count = 0
    for index, feature in enumerate(_features(path)):
        count += 1
        reason, rings = _rings(feature)
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        batches.add(rings)
        feature_index.append(index)
        name = _class_name(feature.get("properties"))
        classes.append(-1 if name is None else class_names.setdefault(name, len(class_names)))
    return GeoJsonPolygons(batches.polygons(), np.asarray(feature_index, np.int64), np.asarray(classes, np.int32),
                           list(class_names), count, skipped)


def _rings(feature: object) -> tuple[str | None, list[np.ndarray]]:
    """(None, the (K, 2) rings of all parts) or (why the feature is skipped, [])."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        return "not a GeoJSON Feature", []
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or not geometry.get("coordinates"):
        return "empty geometry", []
    kind = geometry.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        return f"{kind} geometry (not a polygon)", []
    parts = [geometry["coordinates"]] if kind == "Polygon" else geometry["coordinates"]
    rings = []
    for part in parts:
        if not isinstance(part, list):
            return "invalid geometry", []
        for ring in part:
            try:
                xy = np.asarray(ring, np.float64)
                if xy.ndim != 2 or xy.shape[1] < 2:
                    raise ValueError
            except (TypeError, ValueError):
                return "invalid geometry", []
            xy = xy[:, :2]
            if len(np.unique(xy, axis=0)) < 3 or not np.isfinite(xy).all():
                return "invalid geometry", []
            rings.append(xy)
    return (None, rings) if rings else ("empty geometry", [])


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
    """Reads JSON values one at a time from a text file, refilling its buffer as needed."""

    def __init__(self, path: Path, file) -> None:
        self.path, self.file = path, file
        self.buffer, self.position, self.eof = "", 0, False
        self.decoder = json.JSONDecoder()

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.file.read(_CHUNK_CHARS)
        self.eof = not chunk
        self.buffer = self.buffer[self.position:] + chunk
        self.position = 0
        return bool(chunk)

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

    def value(self) -> object:
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as error:
                if self._more():
                    continue
                raise self.error(error.msg) from None
            # A number at the very end of the buffer may continue in the next chunk.
            if end == len(self.buffer) and not self.eof and self._more():
                continue
            self.position = end
            return value

    def error(self, message: str) -> ParameterError:
        return ParameterError(f"{self.path} is not valid GeoJSON ({message}); export a FeatureCollection of "
                              f"polygons in level-0 pixel coordinates")


def _features(path: Path) -> Iterator[object]:
    """The Features of a FeatureCollection or of a top-level list, one at a time."""
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
                    key = reader.value()
                    reader.expect(":")
                    if key == "features":
                        found = True
                        reader.expect("[")
                        yield from _array(reader)
                    else:
                        reader.value()
                    if reader.expect(",}") == "}":
                        break
                if not found:
                    raise reader.error("no 'features' list")
            else:
                yield from _array(reader)
        except UnicodeDecodeError as error:
            raise ParameterError(f"{path} is not UTF-8 text ({error.reason}): not a GeoJSON file") from None


def _array(reader: _Reader) -> Iterator[object]:
    """The values of a JSON array whose '[' was read."""
    if reader.peek() == "]":
        reader.position += 1
        return
    while True:
        yield reader.value()
        if reader.expect(",]") == "]":
            return
