"""Sixth attack, F12: a 2,064-byte HDF5 declaring features of shape (1, 2,000,000), never written
(gzip, fill value), made a feature import take 18.5 GB and the kernel kill the worker three times;
each attempt left a 3.27 GB scratch file behind. Now every feature reader refuses, before reading
a value, more than ``MAX_FEATURE_DIM`` features per row and a file declaring far more data than it
holds; a patch tile's cell sums are split so that they stay within ``CELL_BYTES``; and scratch
files of killed attempts go at the next attempt and at a worker's start."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers import patch_means
from slidelabel.pipelines.importers.feature_sources import (
    MAX_FEATURE_DIM, HistomicsFeatures, PatchFeatures, TableFeatures)
from slidelabel.services.feature_import import import_features
from slidelabel.services.segment_import import import_segments


def _bomb_h5(path: Path, rows: int, dim: int, dataset: str = "features") -> Path:
    """A patch-feature (or, with ``dataset="images"``, Histomics) file declaring ``rows`` x ``dim``
    float32 it never writes: a few kilobytes on disk."""
    with h5py.File(path, "w") as file:
        if dataset == "features":
            coords = file.create_dataset("coords", shape=(rows, 2), dtype="int64", chunks=(min(rows, 1 << 16), 2),
                                         compression="gzip", fillvalue=0)
            coords.attrs["patch_size_level0"] = 512
        file.create_dataset(dataset, shape=(rows, dim), dtype="float32", chunks=(1, min(dim, 1 << 20)),
                            compression="gzip", fillvalue=0.0)
    return path


def test_the_attack_file_is_refused_naming_the_dimension_and_the_cap(tmp_path):
    path = _bomb_h5(tmp_path / "bomb.h5", 1, 2_000_000)
    assert path.stat().st_size < 10_000
    with pytest.raises(ParameterError, match=rf"2,000,000 features per row.*{MAX_FEATURE_DIM:,}.*PCA"):
        PatchFeatures(path)  # before: accepted, 2 million feature names, then 18.5 GB in the job


@pytest.mark.parametrize("reader, dataset", [(PatchFeatures, "features"), (HistomicsFeatures, "images")])
def test_hdf5_readers_refuse_wide_rows_and_declared_data_out_of_proportion(tmp_path, reader, dataset):
    with pytest.raises(ParameterError, match=f"{MAX_FEATURE_DIM + 1:,} features per row"):
        reader(_bomb_h5(tmp_path / "wide.h5", 2, MAX_FEATURE_DIM + 1, dataset))
    # 20 million rows of 16 features: 1.6 GB declared (and 320 MB of coords read at once) in a few kB.
    with pytest.raises(ParameterError, match=r"declares 1,[25]\d\d MiB of features but the file holds [\d,]+ bytes"):
        reader(_bomb_h5(tmp_path / "long.h5", 20_000_000, 16, dataset))
    assert MAX_FEATURE_DIM >= 4 * 1536  # UNI2-h's 1,536, Virchow2's 2,560 and concatenations fit


def test_tables_refuse_wide_rows_and_parquet_declaring_rows_it_does_not_hold(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text("id," + ",".join(f"f{j}" for j in range(MAX_FEATURE_DIM + 1)) + "\n"
                    + "1," + ",".join("0" for _ in range(MAX_FEATURE_DIM + 1)) + "\n")
    with pytest.raises(ParameterError, match=f"{MAX_FEATURE_DIM + 1:,} features per row"):
        TableFeatures(wide)
    rows = 1 << 23  # constant columns: a run-length encoded file of a few kB declaring 128 MiB
    pq.write_table(pa.table({"id": pa.array(np.zeros(rows, np.int64)), "f": pa.array(np.zeros(rows))}),
                   tmp_path / "long.parquet", compression="zstd")
    with pytest.raises(ParameterError, match="declares 128 MiB"):
        TableFeatures(tmp_path / "long.parquet")
    assert TableFeatures(_small_table(tmp_path / "ok.parquet")).feature_names == ["f0", "f1"]


def _small_table(path: Path) -> Path:
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"id": np.arange(1, 3), "f0": rng.normal(size=2), "f1": rng.normal(size=2)}), path)
    return path


@pytest.fixture(scope="module")
def segments(cmu_slide, tmp_path_factory) -> Path:
    """Two square segments imported on the CMU slide."""
    root = tmp_path_factory.mktemp("segments")
    squares = [[[[x, 100], [x + 200, 100], [x + 200, 300], [x, 300], [x, 100]]] for x in (100, 400)]
    (root / "two.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": c}, "properties": {}} for c in squares]}))
    import_segments(cmu_slide, root / "two.geojson", root / "cmu")
    return root / "cmu"


def test_scratch_files_of_a_killed_attempt_go_at_the_next_attempt(cmu_slide, segments, tmp_path):
    out = tmp_path / "features"
    out.mkdir()
    rows = out / ".imported-bomb.0123456789abcdef.rows"  # a killed attempt's 3.27 GB (sparse) file
    rows.write_bytes(b"\0" * 4096)
    unfinished = out / ".imported-bomb.zarr.0123456789abcdef.tmp"
    (unfinished / "c").mkdir(parents=True)
    other = out / ".imported-other.fedcba9876543210.rows"  # another array's: not this import's to remove
    other.write_bytes(b"")
    with pytest.raises(ParameterError, match="features per row"):
        import_features(cmu_slide, _bomb_h5(tmp_path / "bomb.h5", 1, 2_000_000), segments, out, name="imported-bomb")
    assert not rows.exists() and not unfinished.exists() and other.exists()
    result = import_features(cmu_slide, _small_table(tmp_path / "ok.parquet"), segments, out, name="imported-ok")
    assert result.segments == 2 and sorted(p.name for p in out.iterdir()) == [other.name, "imported-ok.zarr"]


def _reference_sums(ids_H_W: np.ndarray, rect_P_4: np.ndarray, feats_P_D: np.ndarray) -> dict[int, np.ndarray]:
    """Per segment, the sum over its pixels of the features of each patch covering the pixel,
    and (last) how many cover it: pixel by pixel."""
    sums: dict[int, np.ndarray] = {}
    for (x0, y0, x1, y1), feats_D in zip(rect_P_4, feats_P_D):
        window = ids_H_W[y0:y1, x0:x1]
        for segment, count in zip(*np.unique(window[window > 0], return_counts=True)):
            sums.setdefault(int(segment), np.zeros(feats_P_D.shape[1] + 1))
            sums[int(segment)] += count * np.r_[feats_D, 1.0]
    return sums


def test_a_tile_of_patches_at_every_pixel_offset_stays_within_the_cell_budget(monkeypatch):
    """300 patches one pixel apart cut a tile into 400 x 400 cells: (cells x D + 1) float64 sums of
    11.5 MB for 8 features (2,000 patches of 1,024 features in a 2,048 px tile: 34 GB). They are
    now summed over groups of patches small enough for ``CELL_BYTES`` (1 MiB here)."""
    rng = np.random.default_rng(6)
    ids_H_W = rng.integers(0, 40, (700, 700)).astype(np.uint32)
    offsets = np.arange(300)
    rect_P_4 = np.stack([offsets, offsets, offsets + 100, offsets + 100], 1).astype(np.int64)
    feats_P_D = rng.normal(size=(300, 8)).astype(np.float32)
    monkeypatch.setattr(patch_means, "CELL_BYTES", 1 << 20)
    cells_seen = []
    cell_sums = patch_means._cell_sums

    def counting(cy0, cy1, cx0, cx1, feats, ny, nx):
        cells_seen.append(ny * nx * (feats.shape[1] + 1) * 8)
        return cell_sums(cy0, cy1, cx0, cx1, feats, ny, nx)

    monkeypatch.setattr(patch_means, "_cell_sums", counting)
    ids_m, num_m_D, den_m = patch_means._tile_sums(ids_H_W, rect_P_4, feats_P_D)
    assert max(cells_seen) <= 1 << 20  # before: one call of 26 MB
    reference = _reference_sums(ids_H_W, rect_P_4, feats_P_D)
    assert ids_m.tolist() == sorted(reference)
    np.testing.assert_allclose(np.c_[num_m_D, den_m], np.stack([reference[i] for i in sorted(reference)]), rtol=1e-9)
