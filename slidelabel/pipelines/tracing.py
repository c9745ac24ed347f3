"""Numba kernels that trace region boundaries along pixel edges (cracks) and simplify them.

Corners of pixels are keyed ``y * stride + x`` (``stride`` = map width + 1). A boundary *run* is a
straight stretch of pixel sides of one region facing one other value, directed so that the
region lies on its left: direction 0 right, 1 down, 2 left, 3 up (x right, y down). See
:mod:`slidelabel.services.polygons` for how the pieces fit together.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def tile_runs(window, top, left, stride, corner_rows, corner_cols, low, high):  # pragma: no cover
    """The boundary runs ``(keys, dirs, lengths, regions)`` of a haloed tile's pixels of regions
    in ``[low, high)`` and the keys of its nodes among its first ``corner_rows x corner_cols``
    corners. Runs are counted first, then stored, so memory is exactly what is kept."""
    counted = _runs(window, top, left, stride, low, high, np.empty(0, np.int64), np.empty(0, np.uint8),
                    np.empty(0, np.int32), np.empty(0, window.dtype), False)
    keys, dirs = np.empty(counted, np.int64), np.empty(counted, np.uint8)
    lengths, regions = np.empty(counted, np.int32), np.empty(counted, window.dtype)
    _runs(window, top, left, stride, low, high, keys, dirs, lengths, regions, True)
    is_node = np.zeros((corner_rows, corner_cols), np.bool_)
    for y in range(corner_rows):
        for x in range(corner_cols):
            a, b, c, d = window[y, x], window[y, x + 1], window[y + 1, x], window[y + 1, x + 1]
            distinct = 1 + (b != a) + (c != a and c != b) + (d != a and d != b and d != c)
            is_node[y, x] = distinct >= 3 or (a == d and b == c and a != b)
    ys, xs = np.nonzero(is_node)
    nodes = np.empty(ys.size, np.int64)
    for i in range(ys.size):
        nodes[i] = (ys[i] + top) * stride + xs[i] + left
    return keys, dirs, lengths, regions, nodes


@njit(cache=True, nogil=True)
def _runs(window, top, left, stride, low, high, keys, dirs, lengths, regions, fill):  # pragma: no cover
    """Count, and when ``fill`` store, the straight boundary runs of a haloed tile: maximal rows
    (columns) of pixels of one region whose top or bottom (left or right) side faces one other
    value. A run therefore ends at every node, where the value across changes. Columns are
    scanned as rows of the transposed tile, so that memory is read in order."""
    transposed = window.T.copy()
    n = 0
    for d in range(4):
        # Sides 0 (top) and 3 (left) face the previous row of the scanned array, 1 and 2 the next.
        scanned = window if d % 2 == 0 else transposed
        step = -1 if d == 0 or d == 3 else 1
        lines, length = scanned.shape[0] - 2, scanned.shape[1] - 2
        for line in range(lines):
            row, facing = scanned[line + 1], scanned[line + 1 + step]
            first = 0
            while first < length:
                r, other = row[first + 1], facing[first + 1]
                last = first
                while last + 1 < length and row[last + 2] == r and facing[last + 2] == other:
                    last += 1
                if low <= r < high and r != other:
                    if fill:
                        # Runs go right (down) over pixels first..last; sides 2 and 3 are walked
                        # backwards, so the region stays on the left.
                        if d == 0:
                            sx, sy = first, line
                        elif d == 1:
                            sx, sy = line + 1, first
                        elif d == 2:
                            sx, sy = last + 1, line + 1
                        else:
                            sx, sy = line, last + 1
                        keys[n] = (sy + top) * stride + sx + left
                        dirs[n], lengths[n], regions[n] = d, last - first + 1, r
                    n += 1
                first = last + 1
    return n


@njit(cache=True, nogil=True)
def link_runs(keys_E, dirs_E, lengths_E, regions_E, stride):  # pragma: no cover
    """``(next_E, sibling_E)``: the run following each run (same region, starting where it
    ends) and, at a corner the region touches diagonally, the other run leaving that corner (-1
    elsewhere).

    Runs ``(E,)`` are sorted by region then start key. Of two runs leaving a corner, the one
    turning left (around the same pixel) follows, which keeps diagonal neighbours apart.
    """
    n = keys_E.size
    next_E = np.empty(n, np.int64)
    sibling_E = np.full(n, -1, np.int64)
    dx = np.array([1, 0, -1, 0])
    dy = np.array([0, 1, 0, -1])
    start = 0
    while start < n:
        end = start
        while end < n and regions_E[end] == regions_E[start]:
            end += 1
        group = keys_E[start:end]
        for i in range(start, end):
            d = dirs_E[i]
            target = keys_E[i] + lengths_E[i] * (dx[d] + dy[d] * stride)
            j = start + np.searchsorted(group, target)
            if j + 1 < end and keys_E[j + 1] == target:
                sibling_E[j], sibling_E[j + 1] = j + 1, j
                if dirs_E[j] != (d + 1) % 4:
                    j += 1
            next_E[i] = j
        start = end
    return next_E, sibling_E


@njit(cache=True, nogil=True)
def chain_rings(next_E, sibling_E):  # pragma: no cover
    """Runs in ring order ``(E,)`` and ring offsets ``(R + 1,)``: the cycles of ``next_E``, each
    split where it comes back to a corner it left before (``sibling_E``), so no ring visits a
    corner twice; a split-off loop is a hole touching its shell there, or a part touching another."""
    n = next_E.size
    visited = np.zeros(n, np.bool_)
    position = np.full(n, -1, np.int64)
    stack = np.empty(n, np.int64)
    out = np.empty(n, np.int64)
    offsets = [0]
    filled = 0
    for first in range(n):
        if visited[first]:
            continue
        top, edge = 0, first
        while not visited[edge]:
            visited[edge] = True
            sibling = sibling_E[edge]
            if sibling >= 0 and position[sibling] >= 0:
                loop_start = position[sibling]
                for k in range(loop_start, top):
                    out[filled] = stack[k]
                    position[stack[k]] = -1
                    filled += 1
                offsets.append(filled)
                top = loop_start
            stack[top] = edge
            position[edge] = top
            top += 1
            edge = next_E[edge]
        for k in range(top):
            out[filled] = stack[k]
            position[stack[k]] = -1
            filled += 1
        offsets.append(filled)
    return out, np.array(offsets, np.int64)


@njit(cache=True, nogil=True)
def _douglas_peucker(xs, ys, tolerance, keep):  # pragma: no cover
    """Mark in ``keep`` the points of the polyline (``xs``, ``ys``) that Douglas-Peucker keeps;
    both ends are kept. Returns the number of kept points."""
    last = xs.size - 1
    keep[0] = keep[last] = True
    kept = 2
    stack = [(0, last)]
    while len(stack):
        a, b = stack.pop()
        dx, dy = xs[b] - xs[a], ys[b] - ys[a]
        norm = np.sqrt(dx * dx + dy * dy)
        best, best_distance = -1, -1.0
        for i in range(a + 1, b):
            ex, ey = xs[i] - xs[a], ys[i] - ys[a]
            distance = abs(dy * ex - dx * ey) / norm if norm > 0 else np.sqrt(ex * ex + ey * ey)
            if distance > best_distance:
                best, best_distance = i, distance
        if best >= 0 and best_distance > tolerance:
            keep[best] = True
            kept += 1
            stack.append((a, best))
            stack.append((best, b))
    return kept


@njit(cache=True, nogil=True)
def simplify_rings(xy_V_2, keys_V, offsets, node_V, corner_V, tolerance):  # pragma: no cover
    """Which ring vertices survive Douglas-Peucker at ``tolerance`` pixels, ``(V,)`` bool.

    ``xy_V_2`` and ``keys_V`` are the rings' vertices (ring ``r`` is ``offsets[r]:offsets[r + 1]``,
    not closed), ``node_V`` and ``corner_V`` flag nodes and corners among them. Every ring is cut into arcs at its
    nodes (a ring without nodes is one arc from its smallest corner back to it), and each arc is
    simplified in the direction that starts at its smaller end, so the two sides of a shared
    boundary give the same points. An arc keeps at least one inner point unless it is straight,
    and an arc that is a whole ring at least three points, so no ring collapses.

    Only corners (``corner_V``: the boundary turns there) and nodes decide anything, so the
    straight-through vertices where tile borders split runs change nothing."""
    keep_V = np.zeros(keys_V.size, np.bool_)
    for r in range(offsets.size - 1):
        start, end = offsets[r], offsets[r + 1]
        size = end - start
        cuts = np.nonzero(node_V[start:end])[0] + start
        if cuts.size == 0:
            corners = np.nonzero(corner_V[start:end])[0] + start
            cuts = np.array([corners[np.argmin(keys_V[corners])]])
        for c in range(cuts.size):
            a = cuts[c]
            length = (cuts[(c + 1) % cuts.size] - a) % size
            length = size if length == 0 else length
            index = np.empty(length + 1, np.int64)
            for i in range(length + 1):
                index[i] = start + (a - start + i) % size
            first, last = keys_V[index[0]], keys_V[index[-1]]
            if first == last:  # a loop: compare the corners next to its end instead
                after, before = 1, length - 1
                while not (corner_V[index[after]] or node_V[index[after]]):
                    after += 1
                while not (corner_V[index[before]] or node_V[index[before]]):
                    before -= 1
                first, last = keys_V[index[after]], keys_V[index[before]]
            if first > last:
                index = index[::-1].copy()
            xs, ys = xy_V_2[index, 0].astype(np.float64), xy_V_2[index, 1].astype(np.float64)
            keep = np.zeros(length + 1, np.bool_)
            kept = _douglas_peucker(xs, ys, tolerance, keep)
            if length == size and kept < 4:
                for i in range(length + 1):
                    keep[i] = keep[i] or corner_V[index[i]]
            elif kept == 2 and length >= 2:
                distance = np.abs((ys[-1] - ys[0]) * (xs[1:-1] - xs[0]) - (xs[-1] - xs[0]) * (ys[1:-1] - ys[0]))
                if distance.max() > 0:
                    keep[1 + np.argmax(distance)] = True
            for i in range(length + 1):
                if keep[i]:
                    keep_V[index[i]] = True
    return keep_V
