"""Model files: one trained model written to, and read back from, one zip archive.

A model file (:func:`save_model`, :func:`load_model`) is one zip archive holding ``header.json``
(format version, model name, categories, feature extractor, metrics, classifier settings: readable
with any zip tool) and one ``.npy`` file per array, stored uncompressed and read with
``allow_pickle=False``. Nothing in it is unpickled, so loading a model file from elsewhere cannot
run code; what its members declare is held to the bytes the file has before any array is read.
"""

from __future__ import annotations

import contextlib
import json
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from slidelabel.errors import OutputError
from slidelabel.pipelines.models.base import Category, ClassifierState, TrainedModel
from slidelabel.store.atomic import atomic_path

__all__ = ["ModelFileError", "load_model", "read_header", "save_model"]

FILE_FORMAT = "slidelabel-model"
FILE_FORMAT_VERSION = 1
_HEADER = "header.json"


class ModelFileError(OutputError):
    """A model file cannot be read: not a model file, corrupt, or from a newer slidelabel."""


def save_model(model: TrainedModel, path: str | Path) -> None:
    """Write ``model`` to ``path`` as one zip archive, atomically (see the module docstring).

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    state = model.classifier.to_state()
    header = {
        "format": FILE_FORMAT,
        "format_version": FILE_FORMAT_VERSION,
        "model_name": model.model_name,
        "categories": [{"name": c.name, "excluded": c.excluded} for c in model.categories],
        "feature_extractor": model.feature_extractor,
        "metrics": model.metrics,
        "trained_classes": [int(k) for k in model.trained_classes],
        "classifier": state.config,
        "normalisation": model.normalisation,
        "temperature": float(model.temperature),
    }
    arrays = {f"classifier/{name}": array for name, array in state.arrays.items()}
    arrays |= {"feature_mean": model.feature_mean_D, "feature_scale": model.feature_scale_D}
    # Serialise the header first so an unserialisable metric leaves no temporary file behind.
    header_text = json.dumps(header, sort_keys=True, indent=2, allow_nan=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
                archive.writestr(_HEADER, header_text)
                for name, array in arrays.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from error


def read_header(path: str | Path) -> dict:
    """Return a model file's header (name, categories, extractor, metrics) without its arrays.

    Raises
    ------
    ModelFileError
        If ``path`` is not a slidelabel model file this version can read.
    """
    with _open_archive(path) as archive:
        return _header(archive, path)


def load_model(path: str | Path) -> TrainedModel:
    """Read a model written by :func:`save_model`.

    Raises
    ------
    ModelFileError
        If ``path`` is missing, not a slidelabel model file, corrupt, written by a newer
        slidelabel, or names a model that is not registered here.
    """
    from slidelabel.pipelines.models import MODELS  # the registry imports this module

    with _open_archive(path) as archive:
        header = _header(archive, path)
        _check_members(archive, path)
        try:
            arrays = {
                info.filename.removesuffix(".npy"): _read_npy(archive, info, path)
                for info in archive.infolist()
                if info.filename.endswith(".npy")
            }
            if header["model_name"] not in MODELS:
                raise ModelFileError(
                    f"{path}: model {header['model_name']!r} is not available here "
                    f"(registered: {', '.join(sorted(MODELS))})"
                )
            state = ClassifierState(
                header["classifier"],
                {k.removeprefix("classifier/"): v for k, v in arrays.items() if k.startswith("classifier/")},
            )
            return TrainedModel(
                model_name=header["model_name"],
                classifier=MODELS[header["model_name"]].from_state(state),
                categories=[Category(c["name"], bool(c["excluded"])) for c in header["categories"]],
                feature_extractor=header["feature_extractor"],
                metrics=header["metrics"],
                trained_classes=[int(k) for k in header["trained_classes"]],
                feature_mean_D=arrays["feature_mean"],
                feature_scale_D=arrays["feature_scale"],
                normalisation=str(header.get("normalisation", "none")),
                temperature=float(header.get("temperature", 1.0)),
            )
        except (KeyError, IndexError, ValueError, TypeError, OSError, zipfile.BadZipFile) as error:
            raise ModelFileError(f"{path}: corrupt slidelabel model file ({error!r})") from error


@contextlib.contextmanager
def _open_archive(path: str | Path) -> Iterator[zipfile.ZipFile]:
    """The model file ``path`` opened as a zip archive, once its directory is found no larger than
    a model file's (:func:`_check_directory`); :class:`ModelFileError` otherwise."""
    not_a_zip = f"{path}: not a slidelabel model file (not a zip archive)"
    try:
        file = open(path, "rb")  # not `with` here: only the opening's errors say the file is missing
    except FileNotFoundError as error:
        raise ModelFileError(f"{path}: no such model file") from error
    except OSError as error:
        raise ModelFileError(not_a_zip) from error
    with file:
        try:
            _check_directory(file, path)
            archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError) as error:
            raise ModelFileError(not_a_zip) from error
        with archive:
            yield archive


def _stored(info: zipfile.ZipInfo, path: str | Path) -> None:
    """:class:`ModelFileError` unless the member is stored uncompressed, as :func:`save_model`
    writes every member: its bytes are then bytes of the file, and what it declares can be held to
    them (a 3.9 MB file whose compressed .npy declared 25,000 x 20,000 float64 took 4.2 GB before
    its error, the twentieth attack)."""
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
        raise ModelFileError(f"{path}: {info.filename} is compressed, and slidelabel writes model files uncompressed: "
                             "use the model file as slidelabel wrote it (export it again)")


#: Members a model file may have: its header and a few dozen arrays.
_MAX_MEMBERS = 1000
#: Bytes of a model file's zip directory: an entry is 46 bytes and its name (slidelabel's are under
#: 50 bytes), so 1 KB a member is ample. zipfile parses all of a directory's bytes, whatever count it
#: declares: 1,000,000 entries in 57 MB took 883 MB and 9.5 s before they were counted (the
#: twenty-third attack).
_MAX_DIRECTORY_BYTES = _MAX_MEMBERS * 1024


def _check_directory(file: BinaryIO, path: str | Path) -> None:
    """:class:`ModelFileError` for a zip whose end record declares more members, or a larger
    directory, than a model file has, read before zipfile parses that directory.

    The end record is found by zipfile's own reader of it (``_EndRecData``, zip64 included), so
    that the directory checked is the one zipfile goes on to parse.
    """
    end = zipfile._EndRecData(file)
    if end is None:
        raise zipfile.BadZipFile("no end of central directory record")
    members, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if members > _MAX_MEMBERS or size > _MAX_DIRECTORY_BYTES:
        raise ModelFileError(f"{path}: not a slidelabel model file (its zip directory lists {members:,} members in "
                             f"{size:,} bytes; a model file has at most {_MAX_MEMBERS:,} in {_MAX_DIRECTORY_BYTES:,})")


def _check_members(archive: zipfile.ZipFile, path: str | Path) -> None:
    """:class:`ModelFileError` for a file of more members than a model has, or one listing a name
    twice: the directory of a 21 MB file named one 20 MB member 5,000 times, and each was read
    (66 s; 100,000 under 30 MB would take 20 minutes, the twenty-first attack)."""
    names = archive.namelist()
    if len(names) > _MAX_MEMBERS or len(set(names)) != len(names):
        raise ModelFileError(f"{path}: not a slidelabel model file ({len(names):,} members, "
                             f"{len(names) - len(set(names)):,} of them named twice)")
    # Members whose data overlap (each local header nested in the one before, so that 120 names
    # read one 20 MB array each: 2.8 GB from a 21 MB file, the twenty-second attack) hold more
    # bytes together than the file has.
    stored, size = sum(info.compress_size for info in archive.infolist()), Path(path).stat().st_size
    if stored > size:
        raise ModelFileError(f"{path}: not a slidelabel model file (its members hold {stored:,} bytes together, "
                             f"more than its {size:,}: they overlap)")


#: Readers of a .npy header by format version.
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_npy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str | Path) -> np.ndarray:
    """The array of the .npy member ``info``, once its header's shape and type are found to fit in
    the member's bytes (:func:`_stored`); :class:`ModelFileError` otherwise."""
    _stored(info, path)
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _NPY_HEADERS:
            raise ModelFileError(f"{path}: {info.filename} is a .npy file of version {version}, which slidelabel "
                                 "does not read")
        shape, _, dtype = _NPY_HEADERS[version](member)
        data_bytes = info.file_size - member.tell()
    if dtype.hasobject:  # never unpickled: it could run code
        raise ModelFileError(f"{path}: corrupt slidelabel model file ({info.filename} holds Python objects)")
    declared = math.prod(shape) * dtype.itemsize
    if declared > data_bytes:
        raise ModelFileError(f"{path}: {info.filename} declares {shape} {dtype} ({declared:,} bytes) in {data_bytes:,} "
                             "bytes of data: the model file is damaged")
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


#: Bytes the header of a model file may have (names, categories and metrics: a few KB).
_MAX_HEADER_BYTES = 16 * 2**20


def _header(archive: zipfile.ZipFile, path: str | Path) -> dict:
    try:
        info = archive.getinfo(_HEADER)
        _stored(info, path)
        if info.file_size > _MAX_HEADER_BYTES:
            raise ModelFileError(f"{path}: its {_HEADER} has {info.file_size:,} bytes, more than a model's header may")
        header = json.loads(archive.read(_HEADER))
    except KeyError as error:
        raise ModelFileError(f"{path}: not a slidelabel model file (no {_HEADER})") from error
    except (ValueError, zipfile.BadZipFile, OSError) as error:
        raise ModelFileError(f"{path}: corrupt slidelabel model file ({error})") from error
    except RecursionError as error:  # 200,000 nested '[' in a 400 KB header (the twenty-third attack)
        raise ModelFileError(f"{path}: corrupt slidelabel model file (its {_HEADER} is nested deeper than "
                             "slidelabel reads)") from error
    if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
        raise ModelFileError(f"{path}: not a slidelabel model file (header format is not {FILE_FORMAT!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FILE_FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format {version!r} is newer than this slidelabel reads "
            f"({FILE_FORMAT_VERSION}); upgrade slidelabel"
        )
    return header
