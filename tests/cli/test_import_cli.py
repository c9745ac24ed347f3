"""`slidelabel import-segments` and `import-features` as a user runs them: a round trip and bad input."""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
from click.testing import CliRunner

from slidelabel.cli.main import main
from slidelabel.pipelines.features.extract import read_features
from slidelabel.store.superpixel_files import MANIFEST_FILE, read_manifest


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_import_segments_then_features(cmu_slide, monuseg_pair, tmp_path):
    _, mask = monuseg_pair(1)
    count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    features = []
    for k in range(1, count):
        contours, _ = cv2.findContours((components == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        ring = (contours[0][:, 0, :] + 0.5 + 100).tolist()
        if len(ring) >= 3:
            features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]}})
    (tmp_path / "cells.geojson").write_text(json.dumps(features))  # QuPath's plain list of Features
    result = run("import-segments", cmu_slide, tmp_path / "cells.geojson", "--out", tmp_path / "sp", "--quiet")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "sp" / cmu_slide.stem
    n = read_manifest(folder / MANIFEST_FILE)["superpixels"]
    assert f"{n:,} segments (geojson)" in result.output and n > 0.9 * len(features)
    corners = np.array([(x, y) for y in range(0, 2967, 224) for x in range(0, 2220, 224)])
    with h5py.File(tmp_path / "uni.h5", "w") as file:
        file.create_dataset("coords", data=corners).attrs.update({"patch_size_level0": 224, "patch_size": 224})
        file["features"] = np.random.default_rng(0).normal(size=(len(corners), 16)).astype(np.float32)
    result = run("import-features", cmu_slide, tmp_path / "uni.h5", "--segments", folder, "--name", "uni-trident",
                 "--out", tmp_path / "features", "--quiet")
    assert result.exit_code == 0, result.output
    feats = read_features(tmp_path / "features" / "uni-trident.zarr")
    assert feats.shape == (n, 16) and np.isfinite(feats).all()


def test_bad_input_is_one_line_with_exit_code_2(cmu_slide, tmp_path):
    (tmp_path / "broken.geojson").write_text('{"type": "FeatureCollection", "features": [{"type": ')
    result = run("import-segments", cmu_slide, tmp_path / "broken.geojson", "--out", tmp_path / "sp", "--quiet")
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "broken.geojson is not valid GeoJSON" in line
    result = run("import-segments", cmu_slide, tmp_path / "none.geojson", "--out", tmp_path / "sp", "--quiet")
    assert result.exit_code == 2 and "none.geojson does not exist" in result.output
    assert not (tmp_path / "sp").exists()
