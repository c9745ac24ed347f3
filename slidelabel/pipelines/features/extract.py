"""Features of every superpixel of an image (:func:`features_of_array`) or a slide
(:func:`extract_slide_features`, a Zarr array written whole or not at all), reading the pixels
once, tile by tile: pooled extractors through :mod:`~slidelabel.pipelines.features.tile_pooling`,
patch extractors through :mod:`~slidelabel.pipelines.features.patches`.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import numpy as np
import zarr

from slidelabel.errors import OutputError
from slidelabel.pipelines.features import get_extractor
from slidelabel.pipelines.features.base import FeatureExtractor, TileProgress
from slidelabel.pipelines.features.neighbourhood import NeighbourhoodFeatures, array_geometry, neighbourhood_features
from slidelabel.pipelines.features.patches import PatchExtractor, patch_image, patches_of_array, table_centroids
from slidelabel.pipelines.features.tile_pooling import pool_image
from slidelabel.pipelines.slides import Slide
from slidelabel.store.atomic import replace_folder
from slidelabel.store.feature_files import chunk_rows, store_statistics
from slidelabel.store.label_map import label_map_shape, read_labels
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, read_manifest, slide_sha256
from slidelabel.store.superpixel_table import read_table

FORMAT = "slidelabel-features/1"
#: What the pooled values mean, beyond the extractor's name: 2 since context rings are exact (an
#: array made before, with rings of two ids per pixel, is recomputed rather than resumed).
POOLING_VERSION = 2


def features_of_array(
    rgb_H_W_3: np.ndarray,
    labels_H_W: np.ndarray,
    *,
    extractor: str,
    n_superpixels: int | None = None,
    tile_size: int = 2048,
) -> np.ndarray:
    """Features of the superpixels of an image in memory.

    Parameters
    ----------
    rgb_H_W_3 : (H, W, 3) uint8 image.
    labels_H_W : (H, W) integer superpixel ids >= 0, 0 = no superpixel; each id connected.
    extractor : name of a registered extractor (:data:`slidelabel.pipelines.features.FEATURES`).
    n_superpixels : rows of the result (default: the largest id).
    tile_size : side of the tiles pooled one at a time (px); changes memory, not the result.

    Returns
    -------
    (N, D) float32: row ``i`` describes superpixel ``i + 1``; rows of ids absent from
    ``labels_H_W`` are NaN.

    Examples
    --------
    >>> rgb = np.full((32, 32, 3), 200, np.uint8)
    >>> labels = np.repeat([[1] * 16 + [2] * 16], 32, axis=0)
    >>> features_of_array(rgb, labels, extractor="color").shape
    (2, 57)
    """
    chosen = get_extractor(extractor)
    if rgb_H_W_3.ndim != 3 or rgb_H_W_3.shape[2] != 3 or rgb_H_W_3.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb_H_W_3.shape} {rgb_H_W_3.dtype}")
    if labels_H_W.shape != rgb_H_W_3.shape[:2] or labels_H_W.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers of shape {rgb_H_W_3.shape[:2]}, got {labels_H_W.shape} {labels_H_W.dtype}")
    if labels_H_W.size and labels_H_W.min() < 0:
        raise ValueError(f"superpixel ids must be >= 0, got {labels_H_W.min()}")
    n = int(labels_H_W.max(initial=0)) if n_superpixels is None else n_superpixels
    if isinstance(chosen, PatchExtractor):
        return patches_of_array(chosen, rgb_H_W_3, labels_H_W, n_superpixels=n, tile_size=tile_size)
    width = chosen.base_width if isinstance(chosen, NeighbourhoodFeatures) else len(chosen.channel_names())
    feats_N_D = np.full((n, width), np.nan, np.float32)

    def write_rows(ids_M: np.ndarray, feats_M_D: np.ndarray) -> None:
        feats_N_D[ids_M - 1] = feats_M_D

    pool_image(
        chosen, lambda t, l, h, w, used: rgb_H_W_3[t : t + h, l : l + w], lambda t, l, h, w: labels_H_W[t : t + h, l : l + w],
        height=labels_H_W.shape[0], width=labels_H_W.shape[1], n_superpixels=n, write_rows=write_rows,
        tile_size=tile_size,
    )
    if isinstance(chosen, NeighbourhoodFeatures):
        return chosen.with_neighbourhood(feats_N_D, *array_geometry(labels_H_W, n))
    return feats_N_D


def _attributes(extractor: FeatureExtractor, manifest: dict, sha256: str) -> dict:
    return {
        "format": FORMAT, "extractor": extractor.name, "feature_names": extractor.channel_names(),
        "superpixels": {key: manifest.get(key) for key in ("algorithm", "options", "working", "superpixels")},
        "slide_sha256": sha256, "pooling_version": POOLING_VERSION,
    }


def _stored_attributes(path: Path) -> dict | None:
    """Attributes of the feature array at ``path``; None if it is not one (or unreadable)."""
    try:
        attributes = dict(zarr.open_array(path, mode="r").attrs)
    except (OSError, ValueError, KeyError, zarr.errors.BaseZarrError):
        return None
    return attributes if attributes.get("format") == FORMAT else None


def extract_slide_features(
    slide_path: str | Path,
    superpixel_folder: str | Path,
    out_path: str | Path,
    *,
    extractor: str,
    tile_size: int = 2048,
    progress: TileProgress | None = None,
    base_mpp: float | None = None,
) -> Path:
    """Features of every superpixel of a slide into a Zarr array at ``out_path``.

    Reads the slide at the working level of ``superpixel_folder`` tile by tile, with the label
    map window of each tile. The (N, D) float32 array (row ``i`` = superpixel ``i + 1``, chunks
    of :data:`~slidelabel.store.feature_files.CHUNK_ROWS` rows) appears at ``out_path`` only when complete, with attributes
    ``format``, ``extractor``, ``feature_names``, ``superpixels`` (the folder's algorithm,
    options, working level and count) and ``slide_sha256``. When ``out_path`` already holds an
    array with the same attributes it is returned untouched.

    Parameters
    ----------
    base_mpp : level-0 pixel size (um) for slides without one; default: the folder's.
    progress : called with (tiles done, tiles in all) after each tile.

    Raises
    ------
    OutputError : the folder is unfinished, or ``out_path`` exists and is no feature array.
    ParameterError : unknown extractor, or ``slide_path`` is not the folder's slide.
    """
    chosen = get_extractor(extractor)
    slide_path, folder, out_path = Path(slide_path), Path(superpixel_folder), Path(out_path)
    manifest = read_manifest(folder / MANIFEST_FILE)
    if manifest is None:
        raise OutputError(f"{folder} holds no finished superpixels (no {MANIFEST_FILE})")
    attributes = _attributes(chosen, manifest, slide_sha256(slide_path, manifest))
    if out_path.exists():
        stored = _stored_attributes(out_path)
        if stored is None:
            raise OutputError(f"{out_path} exists and is not a slidelabel feature array; remove it or choose another path")
        if {key: stored.get(key) for key in attributes} == attributes:
            return out_path
    working, n = manifest["working"], int(manifest["superpixels"])
    height, width = label_map_shape(folder / LABELS_FILE)
    if (height, width) != (working["height"], working["width"]):
        raise OutputError(f"{folder / LABELS_FILE} is {width} x {height} px, the manifest says {working['width']} x {working['height']}")
    options = manifest.get("options", {})
    tmp = out_path.with_name(f".{out_path.name}.{secrets.token_hex(8)}.tmp")
    n_features = len(attributes["feature_names"])
    try:
        array = zarr.create_array(
            store=tmp, shape=(n, n_features), chunks=(chunk_rows(n, n_features), n_features),
            dtype="float32", fill_value=np.nan, attributes=attributes,
        )

        def write_rows(ids_M: np.ndarray, feats_M_D: np.ndarray) -> None:
            array.oindex[ids_M - 1, : feats_M_D.shape[1]] = feats_M_D

        with Slide(slide_path, base_mpp=base_mpp if base_mpp is not None else options.get("base_mpp"),
                   source=options.get("source")) as slide:
            read_rgb = lambda t, l, h, w, used=None: slide.read_region(l, t, w, h, downsample=working["downsample"],
                                                                       needed=used)
            read_ids = lambda t, l, h, w: read_labels(folder / LABELS_FILE, left=l, top=t, width=w, height=h)
            if isinstance(chosen, PatchExtractor):
                ids_M, centroid_M_2 = table_centroids(read_table(folder / TABLE_FILE), working["downsample"])
                patch_image(chosen, read_rgb, read_ids, ids_M=ids_M, centroid_M_2=centroid_M_2, height=height,
                            width=width, write_rows=write_rows, tile_size=tile_size, progress=progress)
            else:
                pool_image(chosen, read_rgb, read_ids, height=height, width=width, n_superpixels=n,
                           write_rows=write_rows, tile_size=tile_size, progress=progress)
        if isinstance(chosen, NeighbourhoodFeatures):
            _add_neighbourhood(chosen, array, read_table(folder / TABLE_FILE), working["downsample"])
        store_statistics(array)
        replace_folder(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_path


def _add_neighbourhood(extractor: NeighbourhoodFeatures, array: zarr.Array, table, downsample: float) -> None:
    """Fill the neighbourhood columns of ``array`` from its base columns and the superpixel table."""
    # Only the columns the neighbourhood reads, a chunk of rows at a time, and only its columns
    # written, a chunk at a time: whole-array reads and writes decoded every chunk at once, and
    # with_neighbourhood joined two copies of every row (1.6 GB for 409,520 superpixels, now 0.3).
    columns, rows = extractor.column_indices(), array.chunks[0]
    base_N_C = np.empty((array.shape[0], columns.size), np.float32)
    for start in range(0, array.shape[0], rows):
        base_N_C[start : start + rows] = array[start : start + rows][:, columns]
    _ids, centroid_N_2 = table_centroids(table, downsample)
    around_N_A = neighbourhood_features(base_N_C, centroid_N_2, table.area_px.astype(np.float64), radii=extractor.radii)
    del base_N_C
    for start in range(0, array.shape[0], rows):
        array[start : start + rows, extractor.base_width :] = around_N_A[start : start + rows]


def read_features(path: str | Path) -> np.ndarray:
    """(N, D) float32 features written by :func:`extract_slide_features`."""
    path = Path(path)
    if _stored_attributes(path) is None:
        raise OutputError(f"{path} is not a slidelabel feature array")
    return np.asarray(zarr.open_array(path, mode="r")[:], np.float32)
