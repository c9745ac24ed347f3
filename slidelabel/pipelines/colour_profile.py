"""A slide's ICC colour profile applied through a table of every colour it has met.

large_image converts each tile from the slide's embedded profile to sRGB with LittleCMS
(perceptual intent): 26 ns per pixel, a quarter of reading the JPEG 2000 TCGA sample. The
transform of an 8-bit RGB pixel depends on its colour alone, so :class:`ProfileTable` transforms
each colour once, when a tile first shows it, and looks the rest up in a table of all 2^24.
Stained tissue has far fewer colours than pixels (the TCGA sample's 256 px tiles about 31,000 of
65,536, its 16 million pixels 506,000 in all), so the table fills within the first tiles:
a pass over that slide costs 18.7 ns per pixel while it fills and 2.8 ns afterwards, and the
pixels are the ones LittleCMS gives, exactly.

Memory: a 64 MB table per profile, kept for the life of the process (one
per distinct profile; a scanner's slides share theirs).
"""

from __future__ import annotations

import functools
import threading

import numba
import numpy as np
from PIL import Image, ImageCms

#: Distinct profiles whose tables are kept (each 64 MB).
CACHED_PROFILES = 2


def _codes(rgb_N_3: np.ndarray) -> np.ndarray:
    """int32 ``r << 16 | g << 8 | b`` of each pixel."""
    rgb_N_3 = rgb_N_3.astype(np.int32)
    return (rgb_N_3[:, 0] << 16) | (rgb_N_3[:, 1] << 8) | rgb_N_3[:, 2]


#: A table entry holds ``r << 16 | g << 8 | b`` of the transformed colour, with this bit set once
#: it is filled: one 32-bit load says both, so a thread never sees the flag without the colour.
_FILLED = np.uint32(1 << 24)


@numba.njit(cache=True, nogil=True)
def _look_up(rgb_P_3, table_C):  # pragma: no cover
    """Replace each pixel whose colour is in the table; the positions of the others."""
    left_out = np.empty(rgb_P_3.shape[0], np.int64)
    n = 0
    for p in range(rgb_P_3.shape[0]):
        entry = table_C[(np.int32(rgb_P_3[p, 0]) << 16) | (np.int32(rgb_P_3[p, 1]) << 8) | np.int32(rgb_P_3[p, 2])]
        if entry & _FILLED:
            rgb_P_3[p, 0], rgb_P_3[p, 1], rgb_P_3[p, 2] = (entry >> 16) & 255, (entry >> 8) & 255, entry & 255
        else:
            left_out[n] = p
            n += 1
    return left_out[:n]


class ProfileTable:
    """An ICC transform to sRGB, applied to uint8 RGB pixels by table; safe across threads."""

    def __init__(self, transform: ImageCms.ImageCmsTransform) -> None:
        self._transform = transform
        self._table_C = np.zeros(1 << 24, np.uint32)
        self._filling = threading.Lock()

    def apply(self, rgb_H_W_3: np.ndarray) -> None:
        """Transform a C-contiguous uint8 ``(H, W, 3)`` image in place."""
        if rgb_H_W_3.dtype != np.uint8 or rgb_H_W_3.ndim != 3 or rgb_H_W_3.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb_H_W_3.shape} {rgb_H_W_3.dtype}")
        pixels_P_3 = rgb_H_W_3.reshape(-1, 3)  # a view, or an error for a non-contiguous image
        new_N = _look_up(pixels_P_3, self._table_C)
        if not new_N.size:
            return
        new_pixels_N_3 = pixels_P_3[new_N]
        with self._filling:  # threads fill in turns; lookups do not wait
            codes = np.unique(_codes(new_pixels_N_3))
            codes = codes[(self._table_C[codes] & _FILLED) == 0]
            if codes.size:
                self._table_C[codes] = _codes(self._transformed(codes)).astype(np.uint32) | _FILLED
        left_out = _look_up(new_pixels_N_3, self._table_C)
        if left_out.size:
            raise RuntimeError(f"{left_out.size} colours missing from the profile table")
        pixels_P_3[new_N] = new_pixels_N_3

    def _transformed(self, codes_N: np.ndarray) -> np.ndarray:
        """uint8 (N, 3) sRGB of the colours ``codes_N``, by LittleCMS."""
        colours_1_N_3 = np.stack([codes_N >> 16, (codes_N >> 8) & 255, codes_N & 255], axis=1).astype(np.uint8)[None]
        image = Image.fromarray(colours_1_N_3)
        ImageCms.applyTransform(image, self._transform, inPlace=True)
        return np.asarray(image)[0]


@functools.lru_cache(maxsize=CACHED_PROFILES)
def _table_of(profile_bytes: bytes) -> ProfileTable:
    profile = ImageCms.ImageCmsProfile(ImageCms.core.profile_frombytes(profile_bytes))
    transform = ImageCms.buildTransformFromOpenProfiles(
        profile, ImageCms.createProfile("sRGB"), "RGB", "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL)
    return ProfileTable(transform)


def profile_table(profile: ImageCms.ImageCmsProfile) -> ProfileTable:
    """The (shared) table of ``profile``'s transform to sRGB, perceptual intent, as large_image
    applies it."""
    return _table_of(profile.tobytes())
