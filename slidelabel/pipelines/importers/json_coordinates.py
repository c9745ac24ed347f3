"""A Feature's coordinates read straight from the bytes of a GeoJSON file, without a Python
float and list per point: the fast path of :mod:`.geojson`.

:func:`scan_feature` walks one JSON object from its ``{``, finds its end and the value of its
``"coordinates"`` key, and parses that value when it is what Polygons and MultiPolygons hold:
arrays nested to one depth, of rings of at least 3 points of exactly 2 plain numbers (no
exponent, at most 15 digits: then ``digits / 10**decimals`` is the correctly rounded double, the
value Python's ``float`` gives). Anything else (an exponent, a z, an empty or short ring, a
second ``"coordinates"``, a string escape in a key) answers :data:`OTHER`, and the caller parses
the Feature with :mod:`json`, so both paths give the same polygons and the same errors.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: :func:`scan_feature`'s status: parsed; the object does not end within the bytes given; not
#: for the fast path.
DONE, INCOMPLETE, OTHER = 0, 1, 2

_COORDINATES = np.frombuffer(b'"coordinates"', np.uint8)
_POWERS = 10.0 ** np.arange(16)


@njit(cache=True, nogil=True)
def _skip_space(codes, i):  # pragma: no cover
    n = codes.size
    while i < n and (codes[i] == 32 or codes[i] == 9 or codes[i] == 10 or codes[i] == 13):
        i += 1
    return i


@njit(cache=True, nogil=True)
def _number(codes, i, powers):  # pragma: no cover
    """(status, value, end) of the plain JSON number at ``i``."""
    n = codes.size
    negative = codes[i] == 45
    if negative:
        i += 1
    if i >= n:
        return INCOMPLETE, 0.0, i
    if not 48 <= codes[i] <= 57:
        return OTHER, 0.0, i
    if codes[i] == 48 and i + 1 < n and 48 <= codes[i + 1] <= 57:
        return OTHER, 0.0, i  # a leading zero: not JSON, json names the error
    mantissa, digits, decimals = 0, 0, 0
    while i < n and 48 <= codes[i] <= 57:
        mantissa, digits, i = mantissa * 10 + (codes[i] - 48), digits + 1, i + 1
    fraction = i < n and codes[i] == 46
    if fraction:
        i += 1
        start = i
        while i < n and 48 <= codes[i] <= 57:
            mantissa, digits, decimals, i = mantissa * 10 + (codes[i] - 48), digits + 1, decimals + 1, i + 1
        if i == start and i < n:
            return OTHER, 0.0, i
    if i >= n:
        return INCOMPLETE, 0.0, i
    if digits > 15 or codes[i] == 101 or codes[i] == 69:
        return OTHER, 0.0, i
    value = mantissa / powers[decimals]
    # "-0" is the integer 0 for json, "-0.0" the float -0.0.
    return DONE, (-value if negative and (fraction or mantissa) else value), i


@njit(cache=True, nogil=True)
def _coordinates(codes, i, xy, ring_len, powers):  # pragma: no cover
    """Parse the nested arrays at ``i`` (a '['): (status, end, leaf depth, points, rings)."""
    n = codes.size
    depth, leaf, points, rings = 0, -1, 0, 0
    counts = np.zeros(6, np.int64)
    while True:  # at the start of a value
        i = _skip_space(codes, i)
        if i >= n:
            return INCOMPLETE, i, 0, 0, 0
        if codes[i] == 91:  # [
            depth += 1
            if depth > 4:
                return OTHER, i, 0, 0, 0
            counts[depth] = 0
            i += 1
            continue
        if leaf == -1:
            leaf = depth
        if depth != leaf or counts[depth] > 1 or points >= xy.shape[0]:
            return OTHER, i, 0, 0, 0
        status, value, i = _number(codes, i, powers)
        if status != DONE:
            return status, i, 0, 0, 0
        xy[points, counts[depth]] = value
        while True:  # after a value
            i = _skip_space(codes, i)
            if i >= n:
                return INCOMPLETE, i, 0, 0, 0
            if codes[i] == 44:  # ,
                counts[depth] += 1
                i += 1
                break
            if codes[i] != 93:  # ]
                return OTHER, i, 0, 0, 0
            size = counts[depth] + 1
            if depth == leaf:
                if size != 2:
                    return OTHER, i, 0, 0, 0
                points += 1
            elif depth == leaf - 1:
                if size < 3 or rings >= ring_len.size:
                    return OTHER, i, 0, 0, 0
                ring_len[rings] = size
                rings += 1
            depth -= 1
            i += 1
            if depth == 0:
                return DONE, i, leaf, points, rings


@njit(cache=True, nogil=True)
def _scan(codes, start, key, xy, ring_len, powers):  # pragma: no cover
    n = codes.size
    if start >= n or codes[start] != 123:  # {
        return OTHER, start, 0, 0, 0, 0, 0
    depth, i = 0, start
    found, value_start, value_end, leaf, points, rings = False, 0, 0, 0, 0, 0
    while i < n:
        c = codes[i]
        if c == 34:  # a string: is it the key "coordinates"?
            j = i + 1
            while j < n and codes[j] != 34:
                j += 2 if codes[j] == 92 else 1
            if j >= n:
                return INCOMPLETE, i, 0, 0, 0, 0, 0
            is_key = j - i + 1 == key.size
            if is_key:
                for k in range(key.size):
                    if codes[i + k] != key[k]:
                        is_key = False
                        break
            i = j + 1
            if is_key:
                i = _skip_space(codes, i)
                if i >= n:
                    return INCOMPLETE, i, 0, 0, 0, 0, 0
                if codes[i] != 58:  # a value "coordinates", not a key
                    continue
                i = _skip_space(codes, i + 1)
                if i >= n:
                    return INCOMPLETE, i, 0, 0, 0, 0, 0
                if found or codes[i] != 91:
                    return OTHER, i, 0, 0, 0, 0, 0
                found, value_start = True, i
                status, i, leaf, points, rings = _coordinates(codes, i, xy, ring_len, powers)
                if status != DONE:
                    return status, i, 0, 0, 0, 0, 0
                value_end = i
            continue
        if c == 123 or c == 91:
            depth += 1
        elif c == 125 or c == 93:
            depth -= 1
            if depth == 0:
                if not found:
                    return OTHER, i + 1, 0, 0, 0, 0, 0
                return DONE, i + 1, value_start, value_end, leaf, points, rings
        i += 1
    return INCOMPLETE, i, 0, 0, 0, 0, 0


class FeatureScanner:
    """Scans Features with room for ``max_points`` points and ``max_rings`` rings each (a larger
    Feature takes the slow path)."""

    def __init__(self, max_points: int = 1 << 20, max_rings: int = 1 << 16) -> None:
        self.xy = np.empty((max_points, 2), np.float64)
        self.ring_len = np.empty(max_rings, np.int64)
        self._sizes = (0, 0)

    def scan(self, codes: np.ndarray, start: int) -> tuple[int, int, int, int, int]:
        """``(status, end, value_start, value_end, leaf depth)`` of the object at ``codes[start]``
        (uint8 bytes): with :data:`DONE`, it ends before ``end`` and its coordinates, at
        ``value_start:value_end``, are :attr:`points` (leaf depth 3: a Polygon's, 4: a
        MultiPolygon's)."""
        status, end, value_start, value_end, leaf, points, rings = _scan(
            codes, start, _COORDINATES, self.xy, self.ring_len, _POWERS)
        self._sizes = points, rings
        return status, end, value_start, value_end, leaf

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(V, 2) float64 x, y and (R,) int64 ring lengths of the last Feature scanned."""
        points, rings = self._sizes
        return self.xy[:points].copy(), self.ring_len[:rings].copy()
