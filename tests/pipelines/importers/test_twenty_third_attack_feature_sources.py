"""Twenty-third attack, feature files that declare more than they are checked for:

- high: every attribute of a patch-feature HDF5's ``coords`` was kept whole in the import's
  provenance, so in the array's ``zarr.json``: a 64 MB file with an 8M-float attribute made a
  242 MB ``zarr.json`` (job 30 CPU-s, 1.53 GB) and each ``GET /projects/1/imports`` then took
  3.4-3.7 s (another user's requests up to 12.8 s). Only the attributes the import reads are read
  now, each a number of at most a few values, checked by its declared size before its value is
  read; the listing refuses a ``zarr.json`` far larger than an import writes before parsing it.
- medium: a Parquet file's size check trusted the footer's file-level ``num_rows``, which pyarrow
  never compares with its row groups: a 1.58 MB file claiming 1 row held 200M rows (4 CPU-s,
  270 MB, growing with the file). Rows are now the row groups' sum, and a file whose count
  disagrees with that sum is refused as damaged.
"""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from slidelabel.errors import OutputError, ParameterError
from slidelabel.pipelines.importers.feature_sources import (
    MAX_ARRAY_METADATA_BYTES,
    MAX_NAME_CHARS,
    PatchFeatures,
    TableFeatures,
)
from slidelabel.services.project_imports import slide_imports
from slidelabel.store.layout import ProjectFiles


def _patch_h5(path: Path, **attributes: object) -> Path:
    with h5py.File(path, "w", libver="latest") as file:  # attributes over 64 KB need "latest"
        coords = file.create_dataset("coords", data=np.array([[0, 0], [256, 0]], np.int64))
        file.create_dataset("features", data=np.ones((2, 4), np.float32))
        coords.attrs.update(attributes)
    return path


def test_only_the_coords_attributes_the_import_reads_reach_the_provenance(tmp_path):
    junk = np.random.default_rng(0).random(100_000)  # the attack's was 8M floats (a 242 MB zarr.json)
    path = _patch_h5(tmp_path / "junk.h5", patch_size_level0=256, level0_magnification=40, junk=junk, name="slide-1")
    source = PatchFeatures(path)
    try:
        assert source.patch_level0 == 256
        # Before: {"junk": [100,000 floats], "name": ..., ...} copied whole.
        assert source.provenance["coords_attributes"] == {"patch_size_level0": 256, "level0_magnification": 40}
    finally:
        source.close()


def test_clam_attributes_still_give_the_patch_side(tmp_path):
    path = _patch_h5(tmp_path / "clam.h5", patch_size=256, patch_level=1, downsample=np.array([4.0, 4.0]))
    source = PatchFeatures(path)
    try:
        assert source.patch_level0 == 1024
        assert source.provenance["coords_attributes"]["downsample"] == [4.0, 4.0]
    finally:
        source.close()


@pytest.mark.parametrize("value, what", [(np.arange(100_000, dtype=np.float64), "100,000 values"),
                                         ("256", "str")])
def test_an_oversized_or_text_attribute_the_import_needs_is_refused_naming_it(tmp_path, value, what):
    path = _patch_h5(tmp_path / "big.h5", patch_size_level0=value)
    # Before: an array read whole (float() of its first value failed with a traceback), or text accepted.
    with pytest.raises(ParameterError, match=rf"big\.h5: coords attribute patch_size_level0 .*{what}.*a number"):
        PatchFeatures(path)


def test_a_long_column_name_is_refused(tmp_path):
    path = tmp_path / "names.parquet"
    pq.write_table(pa.table({"id": [1, 2], "x" * (MAX_NAME_CHARS + 1): [0.5, 0.5]}), path)
    with pytest.raises(ParameterError, match=rf"names\.parquet: a column name of {MAX_NAME_CHARS + 1:,} characters"):
        TableFeatures(path)


def _lying_parquet(path: Path, rows: int) -> Path:
    """A Parquet file of ``rows`` repeated rows whose footer's file-level num_rows says 1 (the
    attack's make_lying.py: the varint rewritten in place, same length)."""
    table = pa.table({"id": pa.array(np.zeros(rows, np.int64)), "f0": pa.array(np.ones(rows, np.float32))})
    pq.write_table(table, path, row_group_size=rows, use_dictionary=True, compression="zstd")
    data = bytearray(path.read_bytes())
    footer = len(data) - 8 - struct.unpack("<I", data[-8:-4])[0]
    encoded, value = bytearray(b"\x16"), 2 * rows  # field 3 (i64, zigzag varint)
    while value >= 0x80:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    at = data.find(bytes(encoded), footer)
    assert at > 0
    width = len(encoded) - 1
    data[at + 1 : at + 1 + width] = bytes([0x82] + [0x80] * (width - 2) + [0x00])
    path.write_bytes(bytes(data))
    assert pq.read_metadata(path).num_rows == 1 and pq.read_metadata(path).row_group(0).num_rows == rows
    return path


def test_a_parquet_whose_row_count_disagrees_with_its_row_groups_is_refused(tmp_path):
    path = _lying_parquet(tmp_path / "lying.parquet", 1_000_000)
    # Before: accepted (1 row declared) and every row read.
    with pytest.raises(ParameterError, match=r"lying\.parquet: its footer counts 1 row.*1,000,000.*damaged"):
        TableFeatures(path)


def test_the_imports_listing_refuses_a_huge_array_metadata_before_parsing_it(tmp_path):
    files = ProjectFiles(tmp_path, 1)
    folder = files.slide_dir(1) / "features"
    array = zarr.create_array(folder / "imported-big.zarr", shape=(3, 2), dtype="float32")
    array.attrs["provenance"] = {"segments_with_features": 2}
    assert slide_imports(files, 1)[1][0].segments == 2
    # What an import before the fix could write (the attack's coords attribute).
    junk = {"junk": "x" * MAX_ARRAY_METADATA_BYTES}
    array.attrs["provenance"] = {"segments_with_features": 2, "coords_attributes": junk}
    # Before: parsed whole on every GET /imports (3.5 s for the attack's 242 MB).
    with pytest.raises(OutputError, match=r"array imported-big has .* bytes of metadata.*import the features again"):
        slide_imports(files, 1)
