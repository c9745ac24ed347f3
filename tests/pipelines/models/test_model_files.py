"""Model files: one zip with a readable JSON header, atomic writes, clear errors on bad files."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from model_data import CATEGORIES, labelled_set, query_feats

from slidelabel.pipelines.models import ModelFileError, load_model, read_header, save_model, train


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``name -> path`` of the linear and forest models saved once."""
    feats_N_D, labels_N = labelled_set()
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name in ("linear", "random_forest"):
        paths[name] = folder / f"{name}.slmodel"
        save_model(
            train(feats_N_D, labels_N, CATEGORIES, model=name, feature_extractor="color_stats"), paths[name]
        )
    return paths


def _rewrite(source, target, *, replace: dict[str, bytes]) -> None:
    """Copy the zip ``source`` to ``target`` with some members' bytes replaced."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, replace.get(name, old.read(name)))


def test_header_is_plain_json_readable_without_the_arrays(saved):
    with zipfile.ZipFile(saved["random_forest"]) as archive:
        header = json.loads(archive.read("header.json"))
        assert all(name.endswith(".npy") for name in archive.namelist() if name != "header.json")
    assert header["format"] == "slidelabel-model" and header["format_version"] == 1
    assert header["model_name"] == "random_forest"
    assert header["feature_extractor"] == "color_stats"
    assert header["categories"][3] == {"name": "blurry", "excluded": True}
    assert header["metrics"]["n_labels"]["tumour"] == 60
    assert read_header(saved["random_forest"]) == header


def test_save_replaces_atomically_and_leaves_no_temporary_file(saved, tmp_path):
    path = tmp_path / "model.slmodel"
    path.write_bytes(b"old")
    save_model(load_model(saved["linear"]), path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.slmodel"]
    np.testing.assert_array_equal(
        load_model(path).predict_proba(query_feats()),
        load_model(saved["linear"]).predict_proba(query_feats()),
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a zip archive"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "not a zip archive"),
        (json.dumps({"format": "slidelabel-model"}).encode(), "not a zip archive"),
    ],
)
def test_foreign_files_are_refused(tmp_path, content, message):
    path = tmp_path / "model.slmodel"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "absent.slmodel")


def test_zip_without_header_is_refused(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError, match="no header.json"):
        load_model(path)


def test_truncated_file_is_refused(saved, tmp_path):
    data = saved["linear"].read_bytes()
    path = tmp_path / "truncated.slmodel"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        load_model(path)


def test_newer_format_is_refused_with_advice(saved, tmp_path):
    header = read_header(saved["linear"]) | {"format_version": 99}
    path = tmp_path / "newer.slmodel"
    _rewrite(saved["linear"], path, replace={"header.json": json.dumps(header).encode()})
    with pytest.raises(ModelFileError, match="newer than this slidelabel reads"):
        load_model(path)


def test_unregistered_model_name_is_refused(saved, tmp_path):
    header = read_header(saved["linear"]) | {"model_name": "mlp_from_the_future"}
    path = tmp_path / "unknown.slmodel"
    _rewrite(saved["linear"], path, replace={"header.json": json.dumps(header).encode()})
    with pytest.raises(ModelFileError, match="'mlp_from_the_future' is not available here"):
        load_model(path)


class _Boom:
    """Unpickling this runs code: the test fails loudly if load_model ever unpickles."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('load_model unpickled an array')",))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_pickled_arrays_are_never_unpickled(saved, tmp_path):
    path = tmp_path / "evil.slmodel"
    evil = np.array([_Boom()], dtype=object)
    _rewrite(saved["linear"], path, replace={"classifier/weights.npy": _npy(evil)})
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(path)


def test_forest_with_a_dangling_child_is_refused(saved, tmp_path):
    with zipfile.ZipFile(saved["random_forest"]) as archive:
        left = np.lib.format.read_array(io.BytesIO(archive.read("classifier/left_child.npy")))
    left[0] = 10**9  # compiled prediction would read far outside the node array
    path = tmp_path / "dangling.slmodel"
    _rewrite(saved["random_forest"], path, replace={"classifier/left_child.npy": _npy(left)})
    with pytest.raises(ModelFileError, match="not a valid tree"):
        load_model(path)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return out.getvalue()


def test_a_member_declaring_more_than_it_holds_is_refused_before_it_is_read(saved, tmp_path):
    """Twentieth attack (the command line's --model): a 3.9 MB file whose compressed .npy declared
    25,000 x 20,000 float64 took 4.2 GB and 34 s before its error. Members are stored uncompressed
    (as save_model writes them) and hold what they declare."""
    bomb = _npy_header((25_000, 20_000)) + bytes(1 << 20)
    compressed = tmp_path / "compressed.slmodel"
    with zipfile.ZipFile(saved["linear"]) as old, zipfile.ZipFile(compressed, "w") as new:
        for name in old.namelist():
            data = bomb if name == "feature_mean.npy" else old.read(name)
            new.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if name == "feature_mean.npy" else None)
    with pytest.raises(ModelFileError, match="feature_mean.npy is compressed"):
        load_model(compressed)
    stored = tmp_path / "stored.slmodel"
    _rewrite(saved["linear"], stored, replace={"feature_mean.npy": bomb})
    with pytest.raises(ModelFileError, match=r"declares \(25000, 20000\) float64 \(4,000,000,000 bytes\) in 1,048,576"):
        load_model(stored)


def test_a_member_listed_many_times_is_refused_before_any_is_read(saved, tmp_path):
    """Twenty-first attack: a zip directory naming one stored 20 MB member 5,000 times made a
    21 MB file that took 66 s to load, each entry read again."""
    listed = tmp_path / "listed.slmodel"
    with zipfile.ZipFile(saved["linear"]) as old, zipfile.ZipFile(listed, "w") as new:
        for name in old.namelist():
            new.writestr(name, old.read(name))
        for _ in range(3):
            with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile's, writing the attack
                new.writestr("feature_mean.npy", old.read("feature_mean.npy"))
    with pytest.raises(ModelFileError, match="3 of them named twice"):
        load_model(listed)


def test_members_whose_data_overlap_are_refused_before_any_is_read(saved, tmp_path):
    """Twenty-second attack: member names each with a local header nested in the one before, so
    that all their data start at one stored array: 120 names read a 20 MB array 120 times (2.8 GB
    from a 21 MB file)."""
    import struct
    import zlib

    with zipfile.ZipFile(saved["linear"]) as model:
        header, array = model.read("header.json"), model.read("feature_mean.npy")
    names = [f"copy{i}.npy".encode() for i in range(5)]

    def local(name: bytes, data: bytes, extra: int) -> bytes:
        return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                           len(name), extra) + name

    def central(name: bytes, data: bytes, offset: int) -> bytes:
        return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                           len(name), 0, 0, 0, 0, 0, offset) + name

    body = local(b"header.json", header, 0) + header
    directory = central(b"header.json", header, 0)
    data_at = len(body) + sum(30 + len(name) for name in names)
    for name in names:  # each header's extra field runs over the next ones, to the one array
        directory += central(name, array, len(body))
        body += local(name, array, data_at - (len(body) + 30 + len(name)))
    body += array
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(names) + 1, len(names) + 1, len(directory), len(body), 0)
    path = tmp_path / "overlapping.slmodel"
    path.write_bytes(body + directory + end)
    with zipfile.ZipFile(path) as archive:
        assert archive.read("copy4.npy") == array  # zipfile reads every one of them
    with pytest.raises(ModelFileError, match="they overlap"):
        load_model(path)
