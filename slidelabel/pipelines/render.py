"""Pictures of superpixels for people to look at."""

from __future__ import annotations

import cv2
import numpy as np

from slidelabel.pipelines.segmentation_quality import boundary_map

#: Boundary colour: yellow reads well on both haematoxylin and eosin.
BOUNDARY_RGB = (255, 230, 0)


def boundary_overlay(
    rgb: np.ndarray, labels: np.ndarray, *, color: tuple[int, int, int] = BOUNDARY_RGB, dim_background: float = 0.5
) -> np.ndarray:
    """Draw superpixel boundaries over an image.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 image.
    labels : (h, w) integer ids of the same region at any resolution (resampled by nearest
        neighbour); 0 = no superpixel.
    color : boundary colour.
    dim_background : brightness kept where there is no superpixel (1 = unchanged), so that the
        tissue that was segmented stands out.

    Returns
    -------
    (H, W, 3) uint8 image.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got {rgb.shape}")
    height, width = rgb.shape[:2]
    labels = labels.astype(np.int32)  # ids fit: a slide has far fewer than 2**31 superpixels
    if labels.shape != (height, width):
        labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
    out = rgb.copy()
    background = labels == 0
    out[background] = (out[background] * dim_background).astype(np.uint8)
    out[boundary_map(labels) & ~background] = color
    return out
