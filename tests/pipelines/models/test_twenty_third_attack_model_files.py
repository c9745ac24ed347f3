"""Twenty-third attack on model files: a header asking for a larger network than the file's arrays,
a zip directory of a million entries, a header nested 200,000 deep. Each is refused, with a
:class:`ModelFileError`, before anything in proportion to what it asks for is built or parsed."""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from model_data import CATEGORIES, LABELLED

from slidelabel.pipelines.models import ModelFileError, load_model, read_header, save_model, train
from slidelabel.pipelines.models.auto import AutoClassifier


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory) -> Path:
    """A small cnn (widths 2, 3; 4 hidden units) on 8 px patches of 4 channels, saved."""
    rng = np.random.default_rng(0)
    feats_N_D = rng.normal(size=(60, 4 * 8 * 8)).astype(np.float32)
    labels_N = np.array(LABELLED)[np.arange(60) % 3]
    model = train(feats_N_D, labels_N, CATEGORIES, model="cnn", feature_extractor="patch", rng=rng,
                  model_options={"widths": (2, 3), "hidden": 4, "steps": 2}, cross_validate_model=False)
    path = tmp_path_factory.mktemp("cnn") / "cnn.slmodel"
    save_model(model, path)
    return path


def _with_header(source: Path, target: Path, header: dict) -> Path:
    """``target``: ``source`` with its header replaced."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, json.dumps(header) if name == "header.json" else old.read(name))
    return target


def _as_auto(header: dict) -> dict:
    """``header`` of a cnn as the ``auto`` model that chose it writes it."""
    auto = {"candidates": ["cnn"], "max_folds": 3, "time_budget_s": 1.0, "chosen": "cnn", "chosen_options": {},
            "trials": [], "chosen_config": header["classifier"]}
    return header | {"model_name": AutoClassifier.name, "classifier": auto}


def test_the_small_cnn_loads_as_saved(cnn_file: Path, tmp_path: Path) -> None:
    feats_N_D = np.random.default_rng(1).normal(size=(5, 256)).astype(np.float32)
    expected_N_K = load_model(cnn_file).predict_proba(feats_N_D)
    as_auto = _with_header(cnn_file, tmp_path / "auto.slmodel", _as_auto(read_header(cnn_file)))
    np.testing.assert_array_equal(load_model(as_auto).predict_proba(feats_N_D), expected_N_K)


@pytest.mark.parametrize("auto", [False, True])
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        # 2,000 blocks named by a file holding 2: the attack's 100,000 (303 KB) took 59 s and 1.87 GB.
        ({"widths": [1] * 2000}, r"2,000 convolution blocks, which have 12,004 arrays, and the file holds 16"),
        # A block of 8,000 channels: 2.9 GB from a 3 KB file in the attack.
        ({"widths": [2, 8000]}, r"trunk\.3\.weight has shape \(3, 2, 3, 3\), and the header's settings make it "
                                r"\(8000, 2, 3, 3\)"),
        # A hidden layer torch cannot even size: built first, it raised torch's RuntimeError.
        ({"hidden": 2**62}, r"corrupt slidelabel model file .*cnn arrays do not fit the network"),
        ({"channels": 10**6}, r"trunk\.0\.weight has shape \(2, 4, 3, 3\), and the header's settings make it "
                              r"\(2, 1000000, 3, 3\)"),
    ],
)
def test_a_cnn_header_asking_for_more_than_its_arrays_is_refused_before_building(
    cnn_file: Path, tmp_path: Path, settings: dict, message: str, auto: bool
) -> None:
    """Twenty-third attack: the network of the header's settings was built, then compared with
    the file's arrays: widths of 8,000 took 2.86 GB from a 3.2 KB file, 40,000 a torch traceback."""
    header = read_header(cnn_file)
    header["classifier"] |= settings
    path = _with_header(cnn_file, tmp_path / "large.slmodel", _as_auto(header) if auto else header)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def _directory_of(n_entries: int, *, entries_field: int) -> bytes:
    """A zip of one stored member listed ``n_entries`` times in its directory, whose end record
    (zip64) says ``entries_field`` entries."""
    data, name = b"{}", b"header.json"
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data), 2, 2, len(name), 0)
    entry = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, zlib.crc32(data), 2, 2, len(name),
                        0, 0, 0, 0, 0, 0) + name
    body = local + name + data
    directory = entry * n_entries
    end64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries_field, entries_field,
                        len(directory), len(body))
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body) + len(directory), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + directory + end64 + locator + end


@pytest.mark.parametrize(
    ("n_entries", "entries_field", "message"),
    [
        # The attack's 1,000,000 entries (57 MB) took 883 MB and 9.5 s to parse before being counted.
        (1001, 1001, r"its zip directory lists 1,001 members in 57,057 bytes"),
        # zipfile parses all the directory's bytes whatever the count says.
        (20_000, 3, r"its zip directory lists 3 members in 1,140,000 bytes"),
    ],
)
def test_a_zip_directory_larger_than_a_model_has_is_refused_before_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n_entries: int, entries_field: int, message: str
) -> None:
    path = tmp_path / "directory.slmodel"
    path.write_bytes(_directory_of(n_entries, entries_field=entries_field))

    def parsed(self: zipfile.ZipFile) -> None:
        raise AssertionError("zipfile parsed the directory")

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", parsed)
    for read in (load_model, read_header):
        with pytest.raises(ModelFileError, match=message):
            read(path)


def test_a_header_nested_deeper_than_json_reads_is_corrupt(tmp_path: Path) -> None:
    """Twenty-third attack: 200,000 nested '[' raised RecursionError, a traceback."""
    path = tmp_path / "deep.slmodel"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("header.json", "[" * 200_000 + "]" * 200_000)
    for read in (load_model, read_header):
        with pytest.raises(ModelFileError, match="corrupt slidelabel model file .*nested deeper than"):
            read(path)
