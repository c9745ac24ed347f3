"""Nineteenth attack, two feature-import memory bombs (high):

- a Parquet table whose key column ``id`` held one 1 MB string repeated: counted as 8 bytes a row,
  a 24 KB file took the worker to 4.95 GB and the job ended "done"; the dictionary-typed variant
  (850 bytes) took 2.5 GB and ended "internal error: Take operation overflowed binary array
  capacity". Keys must now be integers, features numbers, both checked in the schema before a value
  is read, and a Parquet file's column chunks may not declare more uncompressed bytes than a file
  of its size may (:func:`check_declared`).
- a TRIDENT HDF5 whose ``features`` (20 x 512) was resizable with one gzip chunk of 600,000 x 512
  float32 (1.17 GB): a 1.2 MB file passed the declared-size check and every read of a run of rows
  inflated the whole chunk (1.39 GB). Every HDF5 dataset read is now refused when one chunk decodes
  to more than ``SlideLimits.max_chunk_bytes`` (``SLIDELABEL_MAX_DECODED_MB``, 128 MB by default),
  and must hold numbers.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers.feature_sources import HistomicsFeatures, PatchFeatures, Segments, TableFeatures
from slidelabel.pipelines.slide_files import SlideLimits

BIG = "1" + " " * (1 << 20)  # int(BIG) == 1: parsed as segment 1 before


def _segments(count: int = 10) -> Segments:
    return Segments(count, Path("/nonexistent"), 1.0, 1, 1, np.zeros((count, 4)), None)


def _written(source) -> list[tuple[np.ndarray, np.ndarray]]:
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    source.write(_segments(), lambda ids, feats: rows.append((ids, feats)), None)
    return rows


@pytest.mark.parametrize("dictionary", [False, True])
def test_a_parquet_text_key_is_refused_from_the_schema_naming_its_type(tmp_path, dictionary):
    rows = 1500
    ids = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array([BIG]))
    path = tmp_path / "text-key.parquet"
    pq.write_table(pa.table({"id": ids if dictionary else ids.cast(pa.string()), "f0": np.full(rows, 0.5)}), path,
                   compression="zstd")
    assert path.stat().st_size < 30_000
    kind = "dictionary<values=string" if dictionary else "string"
    # Before: accepted; 4.95 GB in the job, or 2.5 GB and an "internal error" (ArrowInvalid).
    with pytest.raises(ParameterError, match=rf"key column id is {kind}.*integer segment ids"):
        TableFeatures(path)


def test_a_csv_text_key_is_refused_naming_its_type(tmp_path):
    path = tmp_path / "text-key.csv"
    path.write_text("id,f0\n" + "".join(f"seg-{i},0.5\n" for i in range(3)))
    with pytest.raises(ParameterError, match=r"key column id is string.*integer segment ids"):
        TableFeatures(path)


def test_source_id_and_feature_columns_name_their_types(tmp_path):
    path = tmp_path / "source.parquet"
    pq.write_table(pa.table({"source_id": pa.array([1.5, 2.5]), "f0": [0.5, 0.5]}), path)
    with pytest.raises(ParameterError, match=r"key column source_id is double.*integer"):
        TableFeatures(path)
    pq.write_table(pa.table({"id": [1, 2], "f0": ["a", "b"], "f1": pa.array([[1.0], [2.0]])}), path)
    with pytest.raises(ParameterError, match=r"feature columns must be numbers.*f0 \(string\), f1 \(list<"):
        TableFeatures(path)


def test_parquet_column_chunks_may_not_declare_more_than_the_file_may(tmp_path, monkeypatch):
    """Values are fixed-width now, but the footer's uncompressed sizes are what pages inflate to:
    their sum is held to the same bound as rows x columns."""
    from slidelabel.pipelines.importers import feature_sources

    path = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"id": np.arange(1, 4), "f0": np.zeros(3)}), path)
    assert feature_sources.uncompressed_bytes(pq.read_metadata(path)) > 3 * 16  # headers count too
    monkeypatch.setattr(feature_sources, "uncompressed_bytes", lambda metadata: 500 << 20)
    with pytest.raises(ParameterError, match="declares 500 MiB"):
        TableFeatures(path)


def test_integer_keyed_tables_still_import(tmp_path):
    table = pa.table({"id": pa.array([1, 2, 2, 11], pa.int32()), "f0": pa.array([0.5, 1.0, 1.5, 2.0], pa.float32()),
                      "f1": pa.array([1, 2, 3, 4], pa.uint8())})
    pq.write_table(table, tmp_path / "ok.parquet", use_dictionary=True)
    pa_csv.write_csv(table, tmp_path / "ok.csv")
    for path in (tmp_path / "ok.parquet", tmp_path / "ok.csv"):
        (ids, feats), = _written(TableFeatures(path))
        assert ids.tolist() == [1, 2, 2] and feats.tolist() == [[0.5, 1], [1, 2], [1.5, 3]]


def _patch_file(path: Path, rows: int = 20, chunk_rows: int | None = 1, coords_chunk: int | None = None,
                feature_dtype: object = "f4") -> Path:
    """A TRIDENT file of ``rows`` patches, features (rows x 512) in chunks of ``chunk_rows`` rows
    (resizable), never written when the chunk is large: only the chunk's declared size matters."""
    with h5py.File(path, "w") as file:
        coords = file.create_dataset("coords", data=np.arange(rows * 2).reshape(rows, 2) * 256,
                                     chunks=None if coords_chunk is None else (coords_chunk, 2),
                                     maxshape=None if coords_chunk is None else (None, 2))
        coords.attrs["patch_size_level0"] = 256
        features = file.create_dataset("features", shape=(rows, 512), dtype=feature_dtype, compression="gzip",
                                       chunks=None if chunk_rows is None else (chunk_rows, 512), maxshape=(None, 512))
        if chunk_rows is not None and chunk_rows <= rows:
            features[:] = 0.5
    return path


def test_the_attack_chunk_is_refused_before_a_row_is_read(tmp_path):
    # The attack's 600,000 x 512 float32 chunk (1.17 GB), declared 20 x 512: 1,352 MB peak per read before.
    path = _patch_file(tmp_path / "chunk.h5", chunk_rows=600_000)
    with pytest.raises(ParameterError, match=r"features is stored in chunks of 600,000 x 512 float32, 1,172 MiB "
                                             r"decoded each, more than the 128 MiB .*SLIDELABEL_MAX_DECODED_MB"):
        PatchFeatures(path)
    # Just over the limit; and the limit a server sets.
    with pytest.raises(ParameterError, match="features is stored in chunks of 65,537 x 512"):
        PatchFeatures(_patch_file(tmp_path / "over.h5", chunk_rows=65_537))
    with pytest.raises(ParameterError, match=r"chunks of 2,000 x 512 float32, 4 MiB decoded each, more than the 1 MiB"):
        PatchFeatures(_patch_file(tmp_path / "small.h5", chunk_rows=2_000), limits=SlideLimits(max_chunk_bytes=1 << 20))


def test_coords_chunks_are_bounded_too(tmp_path):
    with pytest.raises(ParameterError, match=r"coords is stored in chunks of 9,000,000 x 2 int64"):
        PatchFeatures(_patch_file(tmp_path / "coords.h5", coords_chunk=9_000_000))


def test_patch_files_must_hold_numbers(tmp_path):
    path = tmp_path / "vlen.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("coords", data=np.zeros((2, 2), np.int64)).attrs["patch_size_level0"] = 256
        file.create_dataset("features", data=np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object),
                            dtype=h5py.string_dtype())
    with pytest.raises(ParameterError, match=r"features holds object values.*numbers"):
        PatchFeatures(path)


def test_small_chunks_and_contiguous_patch_files_still_read(tmp_path):
    for chunk_rows in (1, 64, None):
        source = PatchFeatures(_patch_file(tmp_path / f"ok{chunk_rows}.h5", chunk_rows=chunk_rows, coords_chunk=8))
        assert source._read(np.arange(20)).shape == (20, 512)
        source.close()


@pytest.mark.parametrize("dataset", ["images", "used_indices"])
def test_histomics_datasets_chunks_are_bounded(tmp_path, dataset):
    path = tmp_path / "feature.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("images", shape=(4, 16), dtype="f4", maxshape=(None, 16),
                            chunks=(9_000_000, 16) if dataset == "images" else (4, 16))
        file.create_dataset("used_indices", shape=(4,), dtype="i8", maxshape=(None,),
                            chunks=(40_000_000,) if dataset == "used_indices" else (4,))
    with pytest.raises(ParameterError, match=rf"{dataset} is stored in chunks of [\d,]+.*more than the 128 MiB"):
        HistomicsFeatures(path)


@pytest.mark.parametrize("layout", ["external", "virtual", "group"])
def test_datasets_stored_in_other_files_or_groups_are_refused(tmp_path, layout):
    """An external dataset would read a file of the server (its values then imported as features)."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(bytes(20 * 512 * 4))
    path = _patch_file(tmp_path / "patches.h5")
    with h5py.File(path, "a") as file:
        del file["features"]
        if layout == "external":
            file.create_dataset("features", shape=(20, 512), dtype="f4", external=[(str(outside), 0, 20 * 512 * 4)])
        elif layout == "virtual":
            virtual = h5py.VirtualLayout(shape=(20, 512), dtype="f4")
            virtual[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "features", shape=(20, 512))
            file.create_virtual_dataset("features", virtual)
        else:
            file.create_group("features")
    message = {"external": "stored in other files \\(external storage\\)", "virtual": "a virtual dataset",
               "group": "features is a Group, not a dataset"}[layout]
    with pytest.raises(ParameterError, match=message):
        PatchFeatures(path)
