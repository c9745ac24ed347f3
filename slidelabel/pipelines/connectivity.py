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
def _flood(labels, width, start, piece, piece_id, stack, same_label):  # pragma: no cover
    """Flood-fill the 4-connected piece at flat index ``start``; its pixels end up in ``stack[:n]``.

    Arrays are flattened images of row length ``width``. With ``same_label`` the piece is the
    pixels of one label; otherwise it is the pixels that ``piece`` marks as -2 (holes).
    Returns the number of pixels n.
    """
    size = labels.size
    target = labels[start]
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
            if same_label:
                if piece[q] != -1 or labels[q] != target:
                    continue
            elif piece[q] != -2:
                continue
            piece[q] = piece_id
            stack[n] = q
            n += 1
    return n


@njit(cache=True, nogil=True)
def _label_pieces(labels, width):  # pragma: no cover
    """Pieces of equal positive labels: per-pixel piece index (-1 none), and per piece its label and size."""
    piece = np.full(labels.size, -1, np.int64)
    stack = np.empty(labels.size, np.int64)
    piece_label = []
    piece_size = []
    for start in range(labels.size):
        if labels[start] > 0 and piece[start] == -1:
            n = _flood(labels, width, start, piece, len(piece_label), stack, True)
            piece_label.append(labels[start])
            piece_size.append(n)
    return piece, np.array(piece_label, np.int64), np.array(piece_size, np.int64)


@njit(cache=True, nogil=True)
def _fill_holes(labels, width, mask, piece, keep, core):  # pragma: no cover
    """Final ids: kept pieces keep their label; each hole takes its longest-border neighbour.

    Also returns the bounding box (top, left, bottom, right; bottom/right exclusive) of the holes
    that touch ``core`` (top, left, bottom, right), or (-1, -1, -1, -1) when none does.
    """
    size = labels.size
    out = np.zeros(size, np.int64)
    for p in range(size):
        k = piece[p]
        if k >= 0 and keep[k]:
            out[p] = labels[p]
            piece[p] = -3  # owner
        elif mask[p]:
            piece[p] = -2  # hole, not yet filled
        else:
            piece[p] = -4  # outside
    stack = np.empty(size, np.int64)
    reach = np.array([-1, -1, -1, -1], np.int64)
    for start in range(size):
        if piece[start] != -2:
            continue
        n = _flood(labels, width, start, piece, -5, stack, False)
        neighbours = []
        top, left, bottom, right = size, width, -1, -1
        for i in range(n):
            p = stack[i]
            y, x = p // width, p % width
            top, bottom = min(top, y), max(bottom, y + 1)
            left, right = min(left, x), max(right, x + 1)
            if p >= width and piece[p - width] == -3:
                neighbours.append(out[p - width])
            if p + width < size and piece[p + width] == -3:
                neighbours.append(out[p + width])
            if x > 0 and piece[p - 1] == -3:
                neighbours.append(out[p - 1])
            if x < width - 1 and piece[p + 1] == -3:
                neighbours.append(out[p + 1])
        if top < core[2] and bottom > core[0] and left < core[3] and right > core[1]:
            if reach[0] < 0:
                reach[0], reach[1], reach[2], reach[3] = top, left, bottom, right
            else:
                reach[0], reach[1] = min(reach[0], top), min(reach[1], left)
                reach[2], reach[3] = max(reach[2], bottom), max(reach[3], right)
        if len(neighbours) == 0:
            continue
        ids = np.sort(np.array(neighbours, np.int64))
        best, best_count, run = ids[0], 0, 0
        for i in range(ids.size):
            run = run + 1 if i > 0 and ids[i] == ids[i - 1] else 1
            if run > best_count:  # strict: on a tie the lower id (seen first) stays
                best, best_count = ids[i], run
        for i in range(n):
            out[stack[i]] = best
    return out, reach


def connect(
    labels: np.ndarray, mask: np.ndarray, *, min_size: int = 1, core: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """Relabel ``labels`` so that each superpixel is one 4-connected piece of at least ``min_size``.

    Parameters
    ----------
    labels : (H, W) int64 ids; > 0 superpixel, 0 outside the mask, -1 mask pixel with no id.
    mask : (H, W) bool, the pixels that must belong to a superpixel when possible.
    min_size : smallest piece kept as a superpixel of its own, in pixels.
    core : (top, left, bottom, right) of the part of the window whose answer matters.

    Returns
    -------
    (H, W) int64 ids (0 where no superpixel), and the bounding box (top, left, bottom, right) of
    the holes that touch ``core`` (None when none does). A caller working on a window of a
    larger image needs that box to stay two seed steps inside the window for the answer in the
    core to be the same as for the whole image.
    """
    if labels.shape != mask.shape:
        raise ValueError(f"labels {labels.shape} and mask {mask.shape} differ in shape")
    height, width = labels.shape
    flat = np.ascontiguousarray(labels, np.int64).ravel()
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
    out, reach = _fill_holes(flat, width, np.ascontiguousarray(mask).ravel(), piece, keep, core_box)
    return out.reshape(height, width), (None if reach[0] < 0 else tuple(int(v) for v in reach))


def enforce_connectivity(labels: np.ndarray, mask: np.ndarray, *, min_size: int = 1) -> np.ndarray:
    """:func:`connect` for a whole image: just the relabelled (H, W) int64 ids."""
    return connect(labels, mask, min_size=min_size)[0]
