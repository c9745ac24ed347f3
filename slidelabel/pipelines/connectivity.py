"""Make every superpixel one 4-connected component.

SLIC's assignment can leave a cluster in several pieces, leave pixels that no cluster reached and
make slivers at mask edges. Here each superpixel keeps its largest piece; everything else inside
the mask (other pieces, unreached pixels, pieces smaller than ``min_size``) is a *hole*, and each
4-connected hole joins the neighbouring superpixel it shares the longest border with (ties: lower
id). A hole with no neighbouring superpixel is dropped (id 0).

A decision about a pixel depends on the hole it lies in and on the superpixels around that hole,
which reach at most two seed steps beyond it; :func:`connect` reports how far the holes touching a
window's core extend, so that a caller can widen the window until the core's answer is exact.
"""

from __future__ import annotations

import numpy as np
from numba import njit

@njit(cache=True, nogil=True)
def _flood(size, width, start, piece, piece_id, stack):  # pragma: no cover
    """Flood-fill the 4-connected piece at flat index ``start``; its pixels end up in ``stack[:n]``.

    ``piece`` is a flattened image of ``size`` pixels and row length ``width``; the piece is the
    pixels it marks as -2 (holes). Returns the number of pixels n.
    """
    piece[start] = piece_id
    stack[0] = start
    n, head = 1, 0
    while head < n:
        p = stack[head]
        head += 1
        x = p % width
        for d in range(4):
            if d == 0:
                q = p - width
            elif d == 1:
                q = p + width
            elif d == 2:
                q = p - 1 if x > 0 else -1
            else:
                q = p + 1 if x < width - 1 else -1
            if q < 0 or q >= size:
                continue
            if piece[q] != -2:
                continue
            piece[q] = piece_id
            stack[n] = q
            n += 1
    return n


@njit(cache=True, nogil=True)
def _root(parent, i):  # pragma: no cover
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def _label_pieces(labels, width):  # pragma: no cover
    """Pieces of equal positive labels by two-pass union-find labelling.

    Returns the per-pixel piece index (-1 none, pieces numbered in raster order of their first
    pixel), and per piece its label and size.
    """
    size = labels.size
    piece = np.full(size, -1, np.int32)
    parent = np.empty(size // 2 + 2, np.int32)
    n = 0
    for y in range(size // width):
        for x in range(width):
            p = y * width + x
            k = labels[p]
            if k <= 0:
                continue
            left = piece[p - 1] if x > 0 and labels[p - 1] == k else -1
            up = piece[p - width] if y > 0 and labels[p - width] == k else -1
            if left < 0 and up < 0:
                if n == parent.size:
                    grown = np.empty(2 * parent.size, np.int32)
                    grown[:n] = parent[:n]
                    parent = grown
                parent[n] = n
                piece[p] = n
                n += 1
            elif up < 0:
                piece[p] = left
            elif left < 0:
                piece[p] = up
            else:
                a, b = _root(parent, left), _root(parent, up)
                # The smaller root wins, so a piece's index is that of its first pixel in raster order.
                if a < b:
                    parent[b] = a
                elif b < a:
                    parent[a] = b
                piece[p] = min(a, b)
    final = np.empty(n, np.int32)
    count = 0
    for i in range(n):
        r = _root(parent, i)
        if r == i:
            final[i] = count
            count += 1
        else:
            final[i] = final[r]
    piece_label = np.zeros(count, np.int64)
    piece_size = np.zeros(count, np.int64)
    for p in range(size):
        if piece[p] >= 0:
            j = final[piece[p]]
            piece[p] = j
            piece_label[j] = labels[p]
            piece_size[j] += 1
    return piece, piece_label, piece_size


@njit(cache=True, nogil=True)
def _fill_holes(labels, width, mask, piece, keep, core):  # pragma: no cover
    """Relabel in place: kept pieces keep their label; each hole takes its longest-border neighbour.

    Returns the bounding box (top, left, bottom, right; bottom/right exclusive) of the holes that
    touch ``core`` (top, left, bottom, right), or (-1, -1, -1, -1) when none does.
    """
    size = labels.size
    n_holes = 0
    for p in range(size):
        k = piece[p]
        if k >= 0 and keep[k]:
            piece[p] = -3  # owner
        elif mask[p]:
            piece[p] = -2  # hole, not yet filled
            n_holes += 1
        else:
            piece[p] = -4  # outside
            labels[p] = 0
    stack = np.empty(n_holes, np.int32)
    reach = np.array([-1, -1, -1, -1], np.int64)
    for start in range(size):
        if piece[start] != -2:
            continue
        n = _flood(size, width, start, piece, -5, stack)
        neighbours = []
        top, left, bottom, right = size, width, -1, -1
        for i in range(n):
            p = stack[i]
            y, x = p // width, p % width
            top, bottom = min(top, y), max(bottom, y + 1)
            left, right = min(left, x), max(right, x + 1)
            if p >= width and piece[p - width] == -3:
                neighbours.append(labels[p - width])
            if p + width < size and piece[p + width] == -3:
                neighbours.append(labels[p + width])
            if x > 0 and piece[p - 1] == -3:
                neighbours.append(labels[p - 1])
            if x < width - 1 and piece[p + 1] == -3:
                neighbours.append(labels[p + 1])
        if top < core[2] and bottom > core[0] and left < core[3] and right > core[1]:
            if reach[0] < 0:
                reach[0], reach[1], reach[2], reach[3] = top, left, bottom, right
            else:
                reach[0], reach[1] = min(reach[0], top), min(reach[1], left)
                reach[2], reach[3] = max(reach[2], bottom), max(reach[3], right)
        best = 0  # a hole with no neighbouring superpixel is dropped
        if len(neighbours) > 0:
            ids = np.sort(np.array(neighbours, np.int32))
            best, best_count, run = ids[0], 0, 0
            for i in range(ids.size):
                run = run + 1 if i > 0 and ids[i] == ids[i - 1] else 1
                if run > best_count:  # strict: on a tie the lower id (seen first) stays
                    best, best_count = ids[i], run
        for i in range(n):
            labels[stack[i]] = best
    return reach


def connect(
    labels: np.ndarray, mask: np.ndarray, *, min_size: int = 1, core: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """Relabel ``labels`` so that each superpixel is one 4-connected piece of at least ``min_size``.

    Parameters
    ----------
    labels : (H, W) int32 ids; > 0 superpixel, 0 outside the mask, -1 mask pixel with no id.
        Relabelled in place (a window's worth of memory matters here); the result is this array.
    mask : (H, W) bool, the pixels that must belong to a superpixel when possible.
    min_size : smallest piece kept as a superpixel of its own, in pixels.
    core : (top, left, bottom, right) of the part of the window whose answer matters.

    Returns
    -------
    (H, W) int32 ids (0 where no superpixel), and the bounding box (top, left, bottom, right) of
    the holes that touch ``core`` (None when none does). A caller working on a window of a
    larger image needs that box to stay two seed steps inside the window for the answer in the
    core to be the same as for the whole image.
    """
    if labels.shape != mask.shape:
        raise ValueError(f"labels {labels.shape} and mask {mask.shape} differ in shape")
    height, width = labels.shape
    if labels.dtype != np.int32 or not labels.flags.c_contiguous:
        raise ValueError(f"labels must be a C-contiguous int32 array, got {labels.dtype}")
    flat = labels.ravel()
    piece, piece_label, piece_size = _label_pieces(flat, width)
    keep = np.zeros(piece_label.size, np.bool_)
    if piece_label.size:
        # Largest piece of each label first; equal sizes keep raster order of the pieces.
        order = np.lexsort((np.arange(piece_label.size), -piece_size, piece_label))
        first = np.ones(order.size, bool)
        first[1:] = piece_label[order[1:]] != piece_label[order[:-1]]
        keep[order[first]] = True
        keep &= piece_size >= min_size
    core_box = np.array(core if core is not None else (0, 0, height, width), np.int64)
    reach = _fill_holes(flat, width, np.ascontiguousarray(mask).ravel(), piece, keep, core_box)
    return labels, (None if reach[0] < 0 else tuple(int(v) for v in reach))


def enforce_connectivity(labels: np.ndarray, mask: np.ndarray, *, min_size: int = 1) -> np.ndarray:
    """:func:`connect` for a whole image, on a copy: the relabelled (H, W) int32 ids."""
    return connect(np.array(labels, np.int32), mask, min_size=min_size)[0]
