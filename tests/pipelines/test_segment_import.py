"""Segments and features from other tools, on real shapes: MoNuSeg nuclei placed on the CMU slide."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features.extract import read_features
from slidelabel.pipelines.importers.segments import ImportOptions
from slidelabel.services.feature_import import import_features
from slidelabel.services.segment_import import import_segments
from slidelabel.store.label_map import read_labels
from slidelabel.store.segment_sources import SOURCES_FILE, read_segment_sources
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, read_manifest
from slidelabel.store.superpixel_table import read_table

#: Where the 1000 x 1000 MoNuSeg crop sits on the 2220 x 2967 px CMU slide (level-0 px).
LEFT, TOP = 300, 400


@pytest.fixture(scope="module")
def nuclei(monuseg_pair) -> np.ndarray:
    """int32 (1000, 1000) connected components of a MoNuSeg nuclei mask (0 = none)."""
    _, mask = monuseg_pair(0)
    _, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    return components.astype(np.int32)


def traced_features(components: np.ndarray, *, scale: float = 1.0) -> list[dict]:
    """One GeoJSON Feature per component, its contour through pixel centres, classed by parity;
    ``scale`` multiplies the level-0 coordinates (as a finer level's pixels would)."""
    features = []
    for k in range(1, components.max() + 1):
        contours, _ = cv2.findContours((components == k).astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        rings = [((c[:, 0, :] + 0.5 + (LEFT, TOP)) * scale).tolist() for c in contours if len(c) >= 3]
        if rings:
            rings = [r + [r[0]] for r in rings]
            features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": rings},
                             "properties": {"classification": {"name": "Tumor" if k % 2 else "Stroma"}}})
    return features


def write_geojson(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture(scope="module")
def imported(cmu_slide, nuclei, tmp_path_factory) -> tuple[Path, list[dict]]:
    """The nuclei imported as GeoJSON: (segments folder, features written)."""
    root = tmp_path_factory.mktemp("imported")
    features = traced_features(nuclei)
    import_segments(cmu_slide, write_geojson(root / "nuclei.geojson", features), root / "cmu")
    return root / "cmu", features


def test_geojson_polygons_become_the_superpixel_files(imported, nuclei):
    folder, features = imported
    manifest = read_manifest(folder / MANIFEST_FILE)
    table = read_table(folder / TABLE_FILE)
    ids = read_labels(folder / LABELS_FILE)
    assert manifest["superpixels"] == table.ids.size == ids.max()
    window = ids[TOP : TOP + 1000, LEFT : LEFT + 1000]
    assert ids.sum() == window.sum()  # nothing drawn outside the crop
    agreement = ((window > 0) == (nuclei > 0)).mean()
    assert agreement > 0.95
    # Each segment is the component its source Feature was traced from.
    sources = read_segment_sources(folder / SOURCES_FILE)
    traced = np.flatnonzero(np.bincount(nuclei.ravel())[1:]) + 1
    assert sources.ids_N.size == table.ids.size
    component_of_segment = np.zeros(ids.max() + 1, np.int64)
    inside = window > 0
    component_of_segment[window[inside]] = nuclei[inside]
    owner = component_of_segment[1:]
    assert (owner > 0).all()
    assert (np.unique(owner).size / traced.size) > 0.95
    names = [features[s]["properties"]["classification"]["name"] for s in sources.source_ids_N]
    assert sources.class_names_N == names
    assert manifest["import"]["classes"] == {n: names.count(n) for n in sorted(set(names))}


def test_holes_overlaps_and_the_slide_edge(cmu_slide, tmp_path):
    square = [[100, 100], [140, 100], [140, 140], [100, 140], [100, 100]]
    hole = [[110, 110], [130, 110], [130, 130], [110, 130], [110, 110]]
    polygon = lambda *rings: {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": list(rings)}}
    features = [
        polygon([[200, 200], [210, 200], [210, 210], [200, 210], [200, 200]]),  # covered by the next: dropped
        polygon([[195, 195], [215, 195], [215, 215], [195, 215], [195, 195]]),
        polygon(square, hole),
        polygon([[2200, 10], [2240, 10], [2240, 30], [2200, 30], [2200, 10]]),  # half outside: clipped
        polygon([[5000, 10], [5040, 10], [5040, 30], [5000, 30], [5000, 10]]),  # outside: dropped
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": []}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}},
    ] + [polygon([[x, 300], [x + 8, 300], [x + 8, 308], [x, 308], [x, 300]]) for x in range(400, 800, 20)]
    result = import_segments(cmu_slide, write_geojson(tmp_path / "edge.geojson", features), tmp_path / "out")
    assert result.segments == 23
    assert result.dropped["no pixels"] == 1
    assert result.dropped["outside the slide"] == 1
    assert result.dropped["clipped at the slide's edge"] == 1
    assert result.dropped["empty geometry"] == 1 and result.dropped["Point geometry (not a polygon)"] == 1
    assert result.dropped["pixels drawn over an earlier polygon"] == 100
    ids = read_labels(tmp_path / "out" / LABELS_FILE)
    assert (ids[110:130, 110:130] == 0).all() and (ids[100:140, 100:140] > 0).sum() == 40 * 40 - 20 * 20
    assert (ids[10:30, 2200:2220] > 0).all()
    assert read_table(tmp_path / "out" / TABLE_FILE).area_px[0] == 400


def _mask_tiff(path: Path, mask: np.ndarray) -> Path:
    tifffile.imwrite(path, mask, tile=(256, 256), compression="zlib")
    return path


def test_label_mask_at_a_downsample(cmu_slide, nuclei, tmp_path):
    mask = np.zeros((2967 // 2 + 1, 2220 // 2), np.uint32)  # ceil(2967 / 2) x 2220 / 2
    mask[TOP // 2 : TOP // 2 + 500, LEFT // 2 : LEFT // 2 + 500] = nuclei[::2, ::2] * 7  # sparse ids
    result = import_segments(cmu_slide, _mask_tiff(tmp_path / "mask.ome.tif", mask), tmp_path / "out")
    ids = read_labels(tmp_path / "out" / LABELS_FILE)
    sources = read_segment_sources(tmp_path / "out" / SOURCES_FILE)
    assert read_manifest(tmp_path / "out" / MANIFEST_FILE)["working"]["downsample"] == 2
    lut = np.zeros(ids.max() + 1, np.int64)
    lut[sources.ids_N] = sources.source_ids_N
    assert ids.shape == mask.shape and np.array_equal(lut[ids], mask)
    assert result.segments == np.unique(mask).size - 1


def test_histomics_label_pixelmap(cmu_slide, nuclei, tmp_path):
    scale = 2
    small = nuclei[::scale, ::scale]
    height, width = -(-2967 // scale), 2220 // scale
    # As HistomicsTK writes them, every pixel is in a segment: here segment 0 is the background.
    index = np.zeros((height, width), np.int64)
    top, left = TOP // scale, LEFT // scale
    present = np.r_[0, np.unique(small[small > 0])]
    boxes = [[0, 0, 2220, 2967]]
    for i, k in enumerate(present[1:], 1):  # segment i is component k
        ys, xs = np.nonzero(small == k)
        inner = cv2.erode((small == k).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        region = index[top : top + 500, left : left + 500]
        region[small == k] = 2 * i + 1
        region[inner] = 2 * i
        boxes.append([(xs.min() + left) * scale, (ys.min() + top) * scale, (xs.max() + 1 + left) * scale,
                      (ys.max() + 1 + top) * scale])
    rgb = np.stack([index & 255, index >> 8 & 255, index >> 16 & 255], axis=-1).astype(np.uint8)
    tifffile.imwrite(tmp_path / "pixelmap.tiff", rgb, tile=(256, 256), photometric="rgb")
    np.savetxt(tmp_path / "boxes.csv", np.array(boxes), fmt="%d", delimiter=",")
    with pytest.raises(ParameterError, match="--bboxes"):
        import_segments(cmu_slide, tmp_path / "pixelmap.tiff", tmp_path / "out")
    result = import_segments(cmu_slide, tmp_path / "pixelmap.tiff", tmp_path / "out",
                             options=ImportOptions(bboxes=tmp_path / "boxes.csv"))
    assert result.format == "pixelmap" and result.segments == present.size
    ids = read_labels(tmp_path / "out" / LABELS_FILE)
    sources = read_segment_sources(tmp_path / "out" / SOURCES_FILE)
    component = np.zeros(ids.max() + 1, np.int64)
    component[sources.ids_N] = present[sources.source_ids_N]
    assert np.array_equal(component[ids[top : top + 500, left : left + 500]], small)
    assert (component[ids] == 0).sum() == (ids == ids[0, 0]).sum() == ids.size - (small > 0).sum()


def trident_h5(path: Path, corners_P_2: np.ndarray, feats_P_D: np.ndarray, patch: int, **extra) -> Path:
    """Patch features laid out as TRIDENT writes them (attributes on coords)."""
    with h5py.File(path, "w") as file:
        coords = file.create_dataset("coords", data=corners_P_2.astype(np.int64))
        coords.attrs.update({"patch_size": patch, "patch_size_level0": patch, "level0_magnification": 20,
                             "target_magnification": 20, "overlap": 0, "name": "CMU-1-Small-Region", **extra})
        features = file.create_dataset("features", data=feats_P_D.astype(np.float32))
        features.attrs.update({"name": "CMU-1-Small-Region"})
    return path


@pytest.mark.parametrize("step", [256, 128])  # no overlap, and TRIDENT's overlap of half a patch
def test_trident_patch_features_are_area_weighted_means(cmu_slide, imported, tmp_path, step):
    folder, _ = imported
    patch = 256
    corners = np.array([(x, y) for y in range(0, 2967, step) for x in range(0, 2220, step)])
    feats = np.random.default_rng(step).normal(size=(len(corners), 6))
    h5 = trident_h5(tmp_path / "cmu.h5", corners, feats, patch, overlap=patch - step)
    result = import_features(cmu_slide, h5, folder, tmp_path / "features", name="uni-trident")
    got = read_features(result.path)
    ids = read_labels(folder / LABELS_FILE)
    # By hand: every pixel adds the features of each patch containing its centre.
    ys, xs = np.nonzero(ids)
    num, den = np.zeros((ids.max() + 1, 6)), np.zeros(ids.max() + 1)
    columns = -(-2220 // step)
    for dy in range(patch // step):
        for dx in range(patch // step):
            gx, gy = xs // step - dx, ys // step - dy
            ok = (gx >= 0) & (gy >= 0) & (gx < columns) & (gy * columns + gx < len(corners))
            np.add.at(num, ids[ys[ok], xs[ok]], feats[gy[ok] * columns + gx[ok]])
            np.add.at(den, ids[ys[ok], xs[ok]], 1)
    np.testing.assert_allclose(got, num[1:] / den[1:, None], rtol=1e-5, atol=1e-6)
    attributes = dict(zarr.open_array(result.path, mode="r").attrs)
    assert attributes["extractor"] == "uni-trident" and attributes["provenance"]["patch_size_level0"] == patch
    assert attributes["superpixels"]["superpixels"] == got.shape[0]


def test_tables_and_histomics_features(cmu_slide, imported, tmp_path):
    folder, _ = imported
    sources = read_segment_sources(folder / SOURCES_FILE)
    n = sources.ids_N.size
    feats = np.random.default_rng(1).normal(size=(n, 3))
    table = pa.table({"source_id": sources.source_ids_N[::-1], **{f"m{j}": feats[::-1, j] for j in range(3)}})
    pq.write_table(table, tmp_path / "cells.parquet")
    got = read_features(import_features(cmu_slide, tmp_path / "cells.parquet", folder, tmp_path, name="morph").path)
    np.testing.assert_allclose(got, feats, rtol=1e-6)
    csv = "id,area\n" + "".join(f"{i},{i * 2.5}\n" for i in range(1, n + 1, 2))
    (tmp_path / "ids.csv").write_text(csv)
    got = read_features(import_features(cmu_slide, tmp_path / "ids.csv", folder, tmp_path, name="area").path)
    assert np.allclose(got[::2, 0], np.arange(1, n + 1, 2) * 2.5) and np.isnan(got[1::2, 0]).all()
    used = np.arange(0, n, 3)
    with h5py.File(tmp_path / "feature.h5", "w") as file:
        file["images"] = feats[used].astype(np.float32)
        file["used_indices"] = sources.source_ids_N[used]
    result = import_features(cmu_slide, tmp_path / "feature.h5", folder, tmp_path, name="hl")
    got = read_features(result.path)
    assert result.format == "histomics" and result.segments == used.size
    np.testing.assert_allclose(got[used], feats[used], rtol=1e-6)


def test_bad_sources_fail_with_one_line_and_write_nothing(cmu_slide, imported, nuclei, tmp_path):
    folder, features = imported
    out = tmp_path / "out"
    bowtie = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [40, 40], [40, 0], [0, 40], [0, 0]]]}}
    bad = write_geojson(tmp_path / "crossing.geojson", features[:5] + [bowtie])
    with pytest.raises(ParameterError, match=r"crossing\.geojson: 1 polygon\(s\) cross themselves, the first is feature 5"):
        import_segments(cmu_slide, bad, out)
    assert not out.exists()
    assert import_segments(cmu_slide, bad, out, options=ImportOptions(even_odd=True)).dropped[
        "self-crossing, filled even-odd"] == 1
    level1 = write_geojson(tmp_path / "level.geojson", traced_features(nuclei, scale=4))
    with pytest.raises(ParameterError, match="lie outside the 2220 x 2967 px slide"):
        import_segments(cmu_slide, level1, tmp_path / "level")
    huge = np.zeros((2967, 2220), np.uint32)
    huge[10:20, 10:20] = 1 << 24
    with pytest.raises(ParameterError, match="beyond 16,777,215"):
        import_segments(cmu_slide, _mask_tiff(tmp_path / "huge.tif", huge), tmp_path / "huge")
    assert not (tmp_path / "huge").exists() and not (tmp_path / "level").exists()
    with h5py.File(tmp_path / "nocoords.h5", "w") as file:
        file["features"] = np.zeros((4, 3), np.float32)
    with pytest.raises(ParameterError, match=r"nocoords\.h5 has no coords dataset"):
        import_features(cmu_slide, tmp_path / "nocoords.h5", folder, tmp_path / "f", name="x")
    feats = np.ones((12 * 9, 4))
    feats[50, 2] = np.nan
    corners = np.array([(x, y) for y in range(0, 2967, 256) for x in range(0, 2220, 256)])[: len(feats)]
    with pytest.raises(ParameterError, match=r"nan\.h5: row 50 holds NaN"):
        import_features(cmu_slide, trident_h5(tmp_path / "nan.h5", corners, feats, 256), folder, tmp_path / "f", name="x")
    assert list((tmp_path / "f").iterdir()) == []
