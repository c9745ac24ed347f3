"""Standard quality metrics of a superpixel segmentation against a ground-truth segmentation.

Boundary recall and precision, under-segmentation error (Neubert & Protzel 2012, "corrected" form)
and achievable segmentation accuracy, as used in superpixel benchmarks (Stutz et al. 2018). Every
function is pure: label images in, a number out. Label images are 2-D integer arrays of shape
``(H, W)`` in which equal values mean the same segment; the values themselves (order, gaps, sign)
do not matter.

Boundary convention: a pixel is a boundary pixel when its right or its bottom 4-neighbour carries
another label (see :func:`boundary_map`). Each change of label between two 4-adjacent pixels thus
marks exactly one pixel, the top or left one, for the ground truth and the superpixels alike, so
that a boundary is one pixel thick and a perfect segmentation matches it pixel for pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# The contingency table of USE and ASA is dense: superpixels x truth segments 8-byte counts. This
# bound (1 GiB) is far above a benchmark crop (2,500 x 600 segments = 12 MB) and keeps a mistaken
# call on a whole slide from exhausting memory.
_MAX_TABLE_ENTRIES = 2**27


def _check_label_image(name: str, labels: np.ndarray) -> None:
    if not isinstance(labels, np.ndarray) or labels.ndim != 2:
        shape = getattr(labels, "shape", None)
        raise ValueError(f"{name} must be a 2-D array (H, W), got shape {shape}")
    if labels.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(f"{name} must hold integer labels, got dtype {labels.dtype}")


def _check_pair(labels: np.ndarray, truth: np.ndarray) -> None:
    _check_label_image("labels", labels)
    _check_label_image("truth", truth)
    if labels.shape != truth.shape:
        raise ValueError(
            f"labels and truth must have the same shape, got {labels.shape} and {truth.shape}"
        )


def _check_tolerance(tolerance_px: int) -> None:
    if isinstance(tolerance_px, bool) or not isinstance(tolerance_px, (int, np.integer)):
        raise ValueError(f"tolerance_px must be an integer, got {tolerance_px!r}")
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """Boundary pixels of a label image.

    A pixel is a boundary pixel when its right or its bottom 4-neighbour has another label. Each
    label change between 4-adjacent pixels therefore marks one pixel (the left or the top one), and
    the last column and row are boundary pixels only through their in-image neighbour.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Label image; equal values are the same segment.

    Returns
    -------
    ndarray of bool, shape (H, W)
        True on boundary pixels.

    Examples
    --------
    >>> boundary_map(np.array([[0, 0, 1], [0, 0, 1]])).astype(int)
    array([[0, 1, 0],
           [0, 1, 0]])
    """
    _check_label_image("labels", labels)
    boundary_H_W = np.zeros(labels.shape, dtype=bool)
    boundary_H_W[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    boundary_H_W[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return boundary_H_W


def _fraction_near(boundary_H_W: np.ndarray, reference_H_W: np.ndarray, tolerance_px: int) -> float:
    """Fraction of ``boundary`` pixels within Chebyshev distance ``tolerance_px`` of ``reference``.
    """
    n_boundary = int(np.count_nonzero(boundary_H_W))
    # A square window of side 2t+1 is the Chebyshev ball of radius t; maximum_filter with `size`
    # runs as separable 1-D passes, so this is linear in the tolerance.
    near_H_W = ndimage.maximum_filter(reference_H_W, size=2 * tolerance_px + 1, mode="constant")
    return int(np.count_nonzero(boundary_H_W & near_H_W)) / n_boundary


def boundary_recall(labels: np.ndarray, truth: np.ndarray, *, tolerance_px: int = 2) -> float:
    """Fraction of ground-truth boundary pixels that lie near a superpixel boundary.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Superpixel label image.
    truth : ndarray of int, shape (H, W)
        Ground-truth segment label image (e.g. from :func:`truth_segments`).
    tolerance_px : int, optional
        Largest Chebyshev distance, in pixels, at which a superpixel boundary pixel still counts as
        hitting a truth boundary pixel; 0 asks for the same pixel.

    Returns
    -------
    float
        Recall in [0, 1], with boundaries as in :func:`boundary_map`.

    Raises
    ------
    ValueError
        If the shapes differ, the arrays are not 2-D integer images, ``tolerance_px`` is negative,
        or ``truth`` has a single segment (no boundary to recall).

    Examples
    --------
    >>> truth = np.array([[0, 0, 1, 1]] * 4)
    >>> boundary_recall(np.array([[0, 1, 1, 1]] * 4), truth, tolerance_px=1)
    1.0
    """
    _check_pair(labels, truth)
    _check_tolerance(tolerance_px)
    truth_boundary_H_W = boundary_map(truth)
    if not truth_boundary_H_W.any():
        raise ValueError("truth has a single segment, so boundary recall is undefined")
    return _fraction_near(truth_boundary_H_W, boundary_map(labels), tolerance_px)


def boundary_precision(labels: np.ndarray, truth: np.ndarray, *, tolerance_px: int = 2) -> float:
    """Fraction of superpixel boundary pixels that lie near a ground-truth boundary.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Superpixel label image.
    truth : ndarray of int, shape (H, W)
        Ground-truth segment label image.
    tolerance_px : int, optional
        Largest Chebyshev distance, in pixels, at which a truth boundary pixel still counts.

    Returns
    -------
    float
        Precision in [0, 1], with boundaries as in :func:`boundary_map`.

    Raises
    ------
    ValueError
        As :func:`boundary_recall`, and when ``labels`` is a single superpixel (no boundary).

    Examples
    --------
    >>> truth = np.array([[0, 0, 1, 1]] * 4)
    >>> boundary_precision(np.array([[0, 1, 2, 2]] * 4), truth, tolerance_px=0)
    0.5
    """
    _check_pair(labels, truth)
    _check_tolerance(tolerance_px)
    boundary_H_W = boundary_map(labels)
    if not boundary_H_W.any():
        raise ValueError("labels is a single superpixel, so boundary precision is undefined")
    return _fraction_near(boundary_H_W, boundary_map(truth), tolerance_px)


def _overlaps(labels: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts of every (superpixel, truth segment) pair, shape (n_superpixels, n_truth),
    and superpixel areas, shape (n_superpixels,)."""
    _check_pair(labels, truth)
    # Compact ids 0..n-1 whatever the input values (negative, sparse, huge).
    superpixels, superpixel_ids = np.unique(labels, return_inverse=True)
    segments, truth_ids = np.unique(truth, return_inverse=True)
    n_superpixels, n_truth = superpixels.size, segments.size
    if n_superpixels * n_truth > _MAX_TABLE_ENTRIES:
        raise ValueError(
            f"{n_superpixels} superpixels x {n_truth} truth segments is too large a contingency "
            f"table (limit {_MAX_TABLE_ENTRIES} entries); evaluate on smaller crops"
        )
    combined_ids = superpixel_ids.ravel().astype(np.int64) * n_truth + truth_ids.ravel()
    overlap_S_G = np.bincount(combined_ids, minlength=n_superpixels * n_truth).reshape(
        n_superpixels, n_truth
    )
    return overlap_S_G, overlap_S_G.sum(axis=1)


def undersegmentation_error(labels: np.ndarray, truth: np.ndarray) -> float:
    """Corrected under-segmentation error of Neubert & Protzel (2012).

    ``USE = (1 / N) * sum_G sum_{S : S & G != {}} min(|S & G|, |S - G|)`` over truth segments ``G``
    and superpixels ``S``, with ``N`` the number of pixels: every superpixel that straddles a truth
    boundary is charged the smaller of its parts inside and outside the segment.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Superpixel label image.
    truth : ndarray of int, shape (H, W)
        Ground-truth segment label image.

    Returns
    -------
    float
        Error in [0, 1): 0 when every superpixel lies inside one truth segment.

    Raises
    ------
    ValueError
        If the shapes differ, the arrays are not 2-D integer images, or the contingency table of
        superpixels x truth segments would exceed 2**27 entries.

    Examples
    --------
    >>> truth = np.array([[0, 0, 1, 1]] * 4)
    >>> undersegmentation_error(np.array([[0, 0, 0, 1]] * 4), truth)
    0.5
    """
    overlap_S_G, area_S = _overlaps(labels, truth)
    leak_S_G = np.minimum(overlap_S_G, area_S[:, None] - overlap_S_G)
    # Pairs that do not overlap contribute min(0, |S|) = 0, as the sum over S & G != {} asks.
    return float(leak_S_G.sum()) / labels.size


def achievable_segmentation_accuracy(labels: np.ndarray, truth: np.ndarray) -> float:
    """Achievable segmentation accuracy: the best pixel accuracy of labelling whole superpixels.

    ``ASA = (1 / N) * sum_S max_G |S & G|``: each superpixel is given the truth segment it overlaps
    most, and the score is the fraction of pixels this gets right.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Superpixel label image.
    truth : ndarray of int, shape (H, W)
        Ground-truth segment label image.

    Returns
    -------
    float
        Accuracy in (0, 1]: 1 when every superpixel lies inside one truth segment.

    Raises
    ------
    ValueError
        As :func:`undersegmentation_error`.

    Examples
    --------
    >>> truth = np.array([[0, 0, 1, 1]] * 4)
    >>> achievable_segmentation_accuracy(np.array([[0, 0, 0, 1]] * 4), truth)
    0.75
    """
    overlap_S_G, _ = _overlaps(labels, truth)
    return float(overlap_S_G.max(axis=1).sum()) / labels.size


def truth_segments(mask: np.ndarray, *, connectivity: int = 2) -> np.ndarray:
    """Ground-truth segments of a binary nuclei mask.

    Parameters
    ----------
    mask : ndarray of bool or int, shape (H, W)
        Nonzero on nuclei (MoNuSeg masks use 255), zero on background.
    connectivity : {1, 2}, optional
        Neighbourhood of nucleus pixels that belong together: 1 for 4-neighbours, 2 for
        8-neighbours (as :func:`skimage.measure.label`). Touching nuclei merge either way.

    Returns
    -------
    ndarray of int32, shape (H, W)
        0 on the whole background (one segment, connected or not) and 1..K on the K connected
        nuclei.

    Raises
    ------
    ValueError
        If ``mask`` is not a 2-D integer or boolean image or ``connectivity`` is not 1 or 2.

    Examples
    --------
    >>> truth_segments(np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0]]))
    array([[1, 0, 2],
           [0, 0, 0],
           [3, 3, 0]], dtype=int32)
    """
    _check_label_image("mask", mask)
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity!r}")
    structure = ndimage.generate_binary_structure(2, connectivity)
    segments_H_W, _ = ndimage.label(mask != 0, structure=structure)
    return segments_H_W.astype(np.int32, copy=False)


def count_superpixels(labels: np.ndarray) -> int:
    """Number of distinct labels in a label image.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Superpixel label image.

    Returns
    -------
    int
        How many different values ``labels`` holds (a label split into several pieces counts once).

    Examples
    --------
    >>> count_superpixels(np.array([[0, 0, 5], [7, 7, 5]]))
    3
    """
    _check_label_image("labels", labels)
    return int(np.unique(labels).size)
