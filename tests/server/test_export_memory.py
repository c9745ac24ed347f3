"""One shape per superpixel exports are written a feature at a time. An attacker measured one
``GET .../export/geojson?dissolve=false`` of a slide of 635,000 superpixels (any viewer may ask):
196 MB in 29 s, the API process from 1.2 to 3.0 GB (two at once: 5.1 GB), as the whole document
was built as Python dicts and lists, then as one string, then as the response body. Now the
shapes are traced a batch of nearby superpixels at a time, each feature is encoded alone and the
document is written to a file that is sent a chunk at a time: memory holds a batch, not the
document (633,820 superpixels: +2,420 MB before, +56 MB now)."""

from __future__ import annotations

import json
import shutil
import tracemalloc
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.services import dsa_annotation, exports, polygons, slide_classes
from slidelabel.services.superpixels import (
    SuperpixelOptions,
    SuperpixelSize,
    compute_slide_superpixels,
)
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Category, Epoch, Project, Slide
from slidelabel.store.predictions import SlidePredictions, write_predictions
from slidelabel.store.superpixel_files import MANIFEST_FILE, TABLE_FILE, read_manifest
from slidelabel.store.superpixel_table import read_table

#: Bytes an export written a feature at a time may hold per superpixel of the slide: compact
#: arrays (its table, read once, and its superpixels' predictions, boxes and sort keys), where the
#: document's JSON text takes about 350 bytes a superpixel and, as Python objects, ten times that
#: (the peak before).
ARRAY_BYTES_PER_SUPERPIXEL = 200
#: Superpixels traced at once and the least window they are traced over (working pixels): the
#: batch, smaller here than the server's (2000, 512 x 512), so that a slide of 46,000 superpixels
#: shows what a slide of millions would.
BATCH_SUPERPIXELS, BATCH_WINDOW_PX = 200, 128 * 128
#: Bytes of one such batch being traced, and of a chunk of text, whatever the slide.
BATCH_BYTES = 4e6


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(polygons, "SUPERPIXELS_PER_PASS", BATCH_SUPERPIXELS)
    monkeypatch.setattr(polygons, "MIN_WINDOW_PX", BATCH_WINDOW_PX)


def bound(superpixels: int, size: int) -> float:
    """The most an export of ``superpixels`` may hold, checked to be below its ``size`` bytes."""
    most = BATCH_BYTES + ARRAY_BYTES_PER_SUPERPIXEL * superpixels
    assert most < size
    return most


@pytest.fixture(scope="module")
def small_superpixels(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    """The CMU sample cut into superpixels of 12 px at level 0 (about 46,000 of them)."""
    folder = tmp_path_factory.mktemp("cmu-small-superpixels") / "cmu"
    compute_slide_superpixels(cmu_slide, folder, SuperpixelOptions(magnification=0, size=SuperpixelSize(12, "px"),
                                                                   tissue_only=False))
    return folder


@pytest.fixture
def many_superpixels(app, settings, project: dict, cmu_slide: Path, small_superpixels: Path) -> tuple[int, int]:
    """A slide of ``small_superpixels`` whose every superpixel epoch 1 predicted: its id and its
    superpixels."""
    count = read_table(small_superpixels / TABLE_FILE).ids.size
    assert count > 40_000
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name="CMU-small.svs", path=str(cmu_slide), width=2220, height=2967,
                      mpp=0.499, superpixels=count)
        session.add(slide)
        session.add(Epoch(project_id=project["id"], number=1, labels=10, metrics={}))
        session.flush()
        slide_id = slide.id
    files = ProjectFiles(settings.data_dir, project["id"])
    shutil.copytree(small_superpixels, files.superpixels(slide_id))
    probs_N_C = np.random.default_rng(0).dirichlet([1.0, 1.0, 1.0], count).astype(np.float32)
    write_predictions(files.predictions(1, slide_id),
                      SlidePredictions(np.array([c["id"] for c in project["categories"]]), probs_N_C))
    return slide_id, count


@contextmanager
def peak_bytes() -> Iterator[list[int]]:
    """Peak bytes Python allocated (every thread) within the block, set in the list on leaving;
    the tracing kernels compiled before (numba's compiler takes some 10 MB once)."""
    polygons.array_polygons(np.array([[1, 1], [0, 2]], np.int32), rows=(0, 2), cols=(0, 2), regions=(1, 2))
    found = [0]
    tracemalloc.start()
    try:
        yield found
        found[0] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("path", ["export/geojson?dissolve=false&source=predictions",
                                  "export/annotation?dissolve=false&source=predictions&elements=both"])
def test_a_shape_per_superpixel_export_holds_a_batch_not_the_document(client, admin_headers, project,
                                                                        many_superpixels, small_batches, path):
    slide_id, superpixels = many_superpixels
    address = f"/api/v1/projects/{project['id']}/slides/{slide_id}/{path}"
    with peak_bytes() as peak, client.stream("GET", address, headers=admin_headers) as response:
        assert response.status_code == 200
        size = sum(len(chunk) for chunk in response.iter_bytes())
    print(f"{path}: {superpixels} superpixels, {size / 1e6:.1f} MB of JSON, peak {peak[0] / 1e6:.1f} MB allocated")
    assert peak[0] < bound(superpixels, size)


def test_a_project_zip_of_a_shape_per_superpixel_holds_a_batch_not_the_documents(app, settings, project,
                                                                                  many_superpixels, small_batches,
                                                                                  tmp_path):
    files = ProjectFiles(settings.data_dir, project["id"])
    out = tmp_path / "geojson.zip"
    with app.state.database.session() as session, peak_bytes() as peak:
        exports.write_archive(session, files, session.get(Project, project["id"]), out,
                              exports.ArchiveFormat.geojson, slide_classes.Source.predictions, dissolve=False)
    with zipfile.ZipFile(out) as archive:
        size = next(info.file_size for info in archive.infolist() if info.filename.endswith(".geojson"))
        assert json.loads(archive.read("slidelabel.json"))["skipped"] == {}
    print(f"geojson.zip: {size / 1e6:.1f} MB of JSON, peak {peak[0] / 1e6:.1f} MB allocated")
    assert peak[0] < bound(many_superpixels[1], size)


def _classes(folder: Path, downsample: float | None = None, certainty: bool = True) -> slide_classes.SlideClasses:
    """Two thirds of the superpixels of ``folder`` in random categories (one unknown id, left out)."""
    ids = read_table(folder / TABLE_FILE).ids.astype(np.int64)
    rng = np.random.default_rng(1)
    chosen_M = rng.permutation(ids)[: ids.size * 2 // 3]
    working = read_manifest(folder / MANIFEST_FILE)["working"]
    slide = Slide(id=1, project_id=1, name="CMU.svs", superpixels=int(ids.size))
    return slide_classes.SlideClasses(slide, slide_classes.Source.predictions if certainty else slide_classes.Source.labels, 2 if certainty else None,
                                chosen_M, rng.integers(10, 14, chosen_M.size),
                                rng.uniform(0.3, 1, chosen_M.size) if certainty else None, folder,
                                downsample or float(working["downsample"]), working.get("mpp"))


@pytest.fixture(scope="module")
def legend() -> Project:
    """Categories whose legend order is not their id order, one with a name JSON escapes."""
    return Project(name="p", categories=[Category(id=10, name="tumour", color="#ff0000", position=2),
                                         Category(id=11, name='strōma "b"', color="#00ff00", position=0),
                                         Category(id=12, name="glass", color="#0000ff", position=1, excluded=True)])


@pytest.mark.parametrize("dissolve", [False, True])
@pytest.mark.parametrize("downsample, certainty", [(None, True), (1.5, False)])
def test_the_written_exports_are_the_documents_json_byte_for_byte(cmu_superpixels, legend, tmp_path, dissolve,
                                                                  downsample, certainty):
    classes = _classes(cmu_superpixels, downsample, certainty)
    exports.write_geojson(tmp_path / "a.geojson", classes, legend, dissolve=dissolve)
    document = exports.geojson(classes, legend, dissolve=dissolve)
    known = int((classes.category_ids_M < 13).sum())  # 13 is no category: left out
    assert len(document["features"]) == (3 if dissolve else known) and known > 100
    assert (tmp_path / "a.geojson").read_text() == json.dumps(document, separators=(",", ":"))
    for elements in dsa_annotation.Elements:
        for girder_id in (None, "0123456789abcdef01234567"):
            dsa_annotation.write_annotation(tmp_path / "a.json", classes, legend, dissolve=dissolve, elements=elements,
                                     girder_id=girder_id)
            document = dsa_annotation.annotation(classes, legend, dissolve=dissolve, elements=elements, girder_id=girder_id)
            assert (tmp_path / "a.json").read_text() == json.dumps(document, separators=(",", ":"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.geojson", "a.json"]  # no temporary left


def test_a_bad_girder_id_leaves_no_file(cmu_superpixels, legend, tmp_path):
    with pytest.raises(ParameterError, match="girder_id"):
        dsa_annotation.write_annotation(tmp_path / "a.json", _classes(cmu_superpixels), legend, elements=dsa_annotation.Elements.both,
                                 girder_id="x")
    assert list(tmp_path.iterdir()) == []
