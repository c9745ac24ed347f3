"""Twenty-fourth attack: an HDF5 feature file's datasets may be links, which h5py follows: a
968-byte file whose coords and features linked to another HDF5 file of the server imported that
file's values (and told which paths exist), and a link to a FIFO blocked a worker past its cancel.
Now a dataset must be stored in the file itself; a link is refused without being followed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers import FEATURE_FORMATS, choose
from slidelabel.pipelines.importers.feature_sources import HistomicsFeatures, PatchFeatures


def _elsewhere(tmp_path: Path) -> Path:
    """Another HDF5 file of the server, with what a patch-feature file and a Histomics file hold."""
    victim = tmp_path / "elsewhere" / "victim.h5"
    victim.parent.mkdir()
    with h5py.File(victim, "w") as file:
        file["coords"] = np.zeros((4, 2), np.int64)
        file["coords"].attrs["patch_size_level0"] = 256
        file["features"] = np.ones((4, 3), np.float32)
        file["images"] = np.ones((4, 3), np.float32)
    return victim


def _linking(path: Path, links: dict[str, h5py.ExternalLink | h5py.SoftLink], **stored: np.ndarray) -> Path:
    with h5py.File(path, "w") as file:
        for name, value in stored.items():
            file[name] = value
        for name, link in links.items():
            file[name] = link
    return path


@pytest.mark.parametrize("reader, names", [(PatchFeatures, ["coords", "features"]), (HistomicsFeatures, ["images"])])
def test_datasets_linked_to_another_file_are_refused(tmp_path, reader, names):
    victim = _elsewhere(tmp_path)
    attack = _linking(tmp_path / "attack.h5", {name: h5py.ExternalLink(str(victim), name) for name in names})
    assert choose(FEATURE_FORMATS, attack, "auto").name == ("patches" if reader is PatchFeatures else "histomics")
    with pytest.raises(ParameterError, match=f"{names[0]} is a link to another file"):
        reader(attack)


def test_a_soft_link_is_refused(tmp_path):
    attack = _linking(tmp_path / "soft.h5", {"features": h5py.SoftLink("/stored")}, coords=np.zeros((4, 2)),
                      stored=np.ones((4, 3), np.float32))
    with pytest.raises(ParameterError, match="features is a link to another name"):
        PatchFeatures(attack)


def test_a_link_to_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    attack = _linking(tmp_path / "fifo-link.h5", {"coords": h5py.ExternalLink(str(fifo), "coords"),
                                                  "features": h5py.ExternalLink(str(fifo), "features")})
    refused: list[BaseException] = []
    reading = threading.Thread(target=lambda: refused.extend(_raised(PatchFeatures, attack)), daemon=True)
    reading.start()
    reading.join(timeout=20)
    if reading.is_alive():  # blocked opening the FIFO: open it for writing to let the thread go
        with open(fifo, "wb"):
            pass
        pytest.fail("the reader opened the FIFO a link named")
    assert refused and "link to another file" in str(refused[0])


def _raised(reader, path: Path) -> list[BaseException]:
    try:
        reader(path)
    except ParameterError as error:
        return [error]
    return []
