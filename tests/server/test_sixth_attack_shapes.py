"""Sixth attack on the smart tool without a model (F1, F10).

F1: a viewer's ``GET .../shapes/scales`` (the smart tool's hover), ``GET .../shapes/grow`` and
``POST .../shapes/sam/suggest`` without SAM weights read a slide's whole feature array and z-scored
it with several N x D float temporaries per request, nothing shared and nothing bounding parallel
requests: 409,520 superpixels x 274 features took +2.5 GB per request, three in parallel +7.5 GB.
Now the column statistics come from the array (stored by its writer, or read once per version),
the distances to the seed are measured a chunk of rows at a time, a few seeds' distances are kept,
and at most ``region_growing.MEASURERS`` measures run at once (a request that waits too long is busy, 503).
The regions are those of the former implementation (kept here as the reference) on real features.

F10: without SAM weights the smart tool's note showed every member the server's home and cache
paths and a download command; now only the admin reads them, others a generic note.
"""

from __future__ import annotations

import shutil
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

from slidelabel.errors import BusyError, NotFoundError
from slidelabel.pipelines.features.extract import FORMAT, extract_slide_features, read_features
from slidelabel.services import region_growing
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels
from slidelabel.store.feature_files import chunk_rows, store_statistics
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Role


def former_feature_distances(feats_N_D: np.ndarray, seed: int) -> np.ndarray:
    """services.region_growing.feature_distances before the sixth attack: the reference of the results."""
    finite_N = np.isfinite(feats_N_D).all(axis=1)
    rows_M_D = feats_N_D[finite_N]
    scale_D = rows_M_D.std(axis=0)
    z_N_D = (feats_N_D - rows_M_D.mean(axis=0)) / np.where(scale_D > 0, scale_D, 1)
    return np.where(finite_N, np.linalg.norm(np.nan_to_num(z_N_D - z_N_D[seed - 1]), axis=1), np.inf)


@pytest.fixture(scope="module")
def cmu_tissue(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    """The CMU sample's superpixels at 16 um (about 3,000) and their real tissue features (274),
    laid out as slide 1 of project 1 under the returned data folder."""
    data_dir = tmp_path_factory.mktemp("sixth-shapes")
    files = ProjectFiles(data_dir, 1)
    compute_slide_superpixels(cmu_slide, files.superpixels(1), SuperpixelOptions(size=SuperpixelSize.parse("16um")))
    extract_slide_features(cmu_slide, files.superpixels(1), files.features(1, "tissue"), extractor="tissue")
    return data_dir


@pytest.fixture()
def no_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    def none_yet(*args, **kwargs):
        raise NotFoundError("no epoch yet")

    monkeypatch.setattr(region_growing, "slide_predictions", none_yet)


PROJECT, SLIDE = SimpleNamespace(id=1, extractor="tissue"), SimpleNamespace(id=1)
#: The smart tool's scales and grow's default and extremes.
SCALES = (*region_growing.SCALES, (0.8, 50), (0.0, 1000), (0.99, 1000))


def test_regions_grown_by_features_are_the_former_ones_on_real_features(cmu_tissue, no_epoch):
    files = ProjectFiles(cmu_tissue, 1)
    feats_N_D = read_features(files.features(1, "tissue"))
    adjacency = region_growing.slide_adjacency(files.superpixels(1))
    finite = np.flatnonzero(np.isfinite(feats_N_D).all(axis=1)) + 1
    assert finite.size > 2000 and feats_N_D.shape[1] == 274
    for seed in finite[np.linspace(0, finite.size - 1, 12).astype(int)]:
        former_N = former_feature_distances(feats_N_D, int(seed))
        assert np.allclose(region_growing.feature_distances(feats_N_D, int(seed)), former_N, rtol=1e-5, atol=1e-5)
        grown = region_growing.grow_at_scales(None, cmu_tissue, PROJECT, SLIDE, seed=int(seed), scales=SCALES)
        for found, (threshold, steps) in zip(grown, SCALES):
            ids, reached = region_growing.grow(adjacency, int(seed), region_growing.similar_by_features(former_N, 1 - threshold),
                                       max_steps=steps)
            assert found.basis == "features"
            assert np.array_equal(found.superpixels, ids) and np.array_equal(found.steps, reached)


def _synthetic(data_dir: Path, n: int, d: int) -> Path:
    """A feature array of ``n`` x ``d`` float32 laid out as a writer leaves it (chunks, format
    and statistics in its attributes), a few NaN rows, as slide 1 of project 1's tissue features."""
    path = ProjectFiles(data_dir, 1).features(1, "tissue")
    path.parent.mkdir(parents=True)
    array = zarr.create_array(store=path, shape=(n, d), chunks=(chunk_rows(n, d), d), dtype="float32",
                              fill_value=np.nan, attributes={"format": FORMAT})
    rng = np.random.default_rng(0)
    step = chunk_rows(n, d)
    for start in range(0, n, step):
        block = rng.normal(size=(min(step, n - start), d)).astype(np.float32)
        block[::997] = np.nan
        array[start:start + step] = block
    store_statistics(array)
    return path


def _chain(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Superpixels in a row (i's neighbours are i - 1 and i + 1) as the slide's adjacency."""
    neighbours = [[n_ for n_ in (i - 1, i + 1) if 1 <= n_ <= n] for i in range(1, n + 1)]
    indptr = np.cumsum([0, 0, *map(len, neighbours)]).astype(np.int64)
    adjacency = region_growing.Adjacency(indptr, np.concatenate(neighbours).astype(np.int32))
    monkeypatch.setattr(region_growing, "slide_adjacency", lambda folder: adjacency)


def test_one_scales_request_holds_memory_in_proportion_to_superpixels_not_features(tmp_path, monkeypatch, no_epoch):
    n, d = 120_000, 274
    _synthetic(tmp_path, n, d)
    _chain(monkeypatch, n)
    chunk_bytes = chunk_rows(n, d) * d * 4  # one stored chunk: the array is read one at a time
    tracemalloc.start()
    try:
        start = time.perf_counter()
        grown = region_growing.grow_at_scales(None, tmp_path, PROJECT, SLIDE, seed=5000)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [g.basis for g in grown] == ["features"] * 3 and grown[0].superpixels[0] == 5000
    # Before: the whole array read, copied and z-scored in float: about 5 x n x d x 4 = 660 MB.
    # tracemalloc counts every thread of the test process (a CI run's other tests' threads added
    # 18 MB once over 4 chunks): 6 chunks.
    assert peak < 40 * n + 6 * chunk_bytes, (peak, seconds)


def test_a_seed_s_distances_are_measured_once_and_parallel_measures_are_bounded(tmp_path, monkeypatch, no_epoch):
    n = 3000
    _synthetic(tmp_path, n, 16)
    _chain(monkeypatch, n)
    measure, running, most, calls = region_growing.feature_distances, [0], [0], []
    lock = threading.Lock()

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            calls.append(args[1])
        time.sleep(0.2)
        try:
            return measure(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(region_growing, "feature_distances", counted)
    seeds = [10, 20, 30, 40, 50, 60]
    with ThreadPoolExecutor(len(seeds)) as pool:
        list(pool.map(lambda seed: region_growing.grow_at_scales(None, tmp_path, PROJECT, SLIDE, seed=seed), seeds))
    assert sorted(calls) == seeds and most[0] <= region_growing.MEASURERS
    region_growing.grow_to_similar(None, tmp_path, PROJECT, SLIDE, seed=60, threshold=0.5, max_steps=10)
    assert sorted(calls) == seeds  # the hover's seed again: its distances are kept


def test_a_measure_that_waits_too_long_for_its_turn_is_busy(tmp_path, monkeypatch, no_epoch):
    _synthetic(tmp_path, 500, 8)
    _chain(monkeypatch, 500)
    monkeypatch.setattr(region_growing, "MEASURE_WAIT_S", 0.05)
    held = [region_growing._MEASURERS.take_now() for _ in range(region_growing.MEASURERS)]
    try:
        assert all(held)
        with pytest.raises(BusyError, match="busy"):
            region_growing.grow_at_scales(None, tmp_path, PROJECT, SLIDE, seed=123)
    finally:
        for _ in held:
            region_growing._MEASURERS.give_back()
    assert len(region_growing.grow_at_scales(None, tmp_path, PROJECT, SLIDE, seed=123)) == 3


@pytest.fixture
def slide_url(app, project: dict, slide_row: int, cmu_tissue: Path) -> str:
    shutil.copytree(ProjectFiles(cmu_tissue, 1).superpixels(1),
                    ProjectFiles(app.state.settings.data_dir, project["id"]).superpixels(slide_row))
    return f"/api/v1/projects/{project['id']}/slides/{slide_row}"


def test_without_weights_only_the_admin_reads_where_they_go(client, member_headers, admin_headers, slide_url,
                                                            tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("SLIDELABEL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("SLIDELABEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    region = {"region_level0": [300.0, 400.0, 1900.0, 2500.0]}
    off_the_slide = {**region, "x_level0": 5000.0, "y_level0": 5000.0}  # no superpixel there: nothing is read
    for role in (Role.viewer, Role.annotator, Role.owner):
        headers = member_headers(role)
        for note in (client.post(f"{slide_url}/shapes/sam/embed", headers=headers, json=region).json()["note"],
                     client.post(f"{slide_url}/shapes/sam/suggest", headers=headers, json=off_the_slide).json()["note"]):
            assert "Segment Anything weights" in note and "admin" in note
            assert str(tmp_path) not in note and "/" not in note.replace("facebook/sam-vit-base", "")
            assert "hf download" not in note
    admin = client.post(f"{slide_url}/shapes/sam/embed", headers=admin_headers, json=region).json()["note"]
    assert str(tmp_path / "models") in admin and "hf download facebook/sam-vit-base" in admin
