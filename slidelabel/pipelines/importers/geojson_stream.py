"""A GeoJSON file's Features read one at a time (:func:`features`): the coordinates of most straight
from the file's bytes (:mod:`.json_coordinates`), the rest of each Feature by :mod:`json`, whose
objects cost up to ~30 times their text, so every value it parses is bounded before it is parsed
(:data:`MAX_VALUE_CHARS`, :data:`MAX_FEATURE_CHARS`). What the Features mean is
:mod:`.geojson`'s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers.json_coordinates import DONE, INCOMPLETE, FeatureScanner

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
_WHITESPACE = " \t\n\r"
#: A truncated value breaks within this many characters of the end of the text given to json
#: (an unfinished number, literal or escape), but for an unterminated string.
_TRUNCATION_CHARS = 8
#: Stands for the coordinates the fast path read, in the rest of the Feature given to json.
_PLACEHOLDER_VALUE = "slidelabel: coordinates read"
_PLACEHOLDER = json.dumps(_PLACEHOLDER_VALUE)


class Reader:
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
            except ValueError:  # not JSON, or a number json refuses: value() says which
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
            except ValueError as error:  # an integer of more digits than Python converts (4,300)
                raise self.error(f"{where}: {error}") from None
            # A number at the very end of the buffer may continue in the next chunk.
            if end == len(self.buffer) and not self.eof and self._more_within(limit, where):
                continue
            if end - self.position > limit:
                raise self.too_long(where, limit)
            self.position = end
            return value

    def error(self, message: str) -> ParameterError:
        return not_geojson(self.path, message)

    def too_long(self, where: str, limit: int) -> ParameterError:
        advice = ("simplify its outline (e.g. shapely's simplify(0.5) or QuPath's Simplify shape) and keep no "
                  "properties but its classification" if limit == MAX_FEATURE_CHARS
                  else "drop what the import does not read: it reads the polygons and their classification only")
        return ParameterError(f"{self.path}: {where}: more than {limit:,} characters of JSON, the most read there; "
                              f"{advice}")


def not_geojson(path: Path, message: str) -> ParameterError:
    return ParameterError(f"{path} is not valid GeoJSON ({message}); export a FeatureCollection of "
                          f"polygons in level-0 pixel coordinates")


def features(path: Path) -> Iterator[tuple[object, tuple[np.ndarray, np.ndarray] | None]]:
    """The Features of a FeatureCollection or of a top-level list, one at a time, with their
    points where the fast path (:mod:`.json_coordinates`) read them."""
    try:
        file = open(path, encoding="utf-8")
    except OSError as error:
        raise ParameterError(f"cannot read {path}: {error.strerror or error}") from error
    with file:
        reader = Reader(path, file)
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


def _array(reader: Reader) -> Iterator[tuple[object, tuple[np.ndarray, np.ndarray] | None]]:
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
