"""The shape routes on the CMU sample's real superpixels: a polygon's covered superpixels, and
grow to similar from the latest epoch's predictions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from slidelabel.services import shapes
from slidelabel.services.superpixels import SuperpixelOptions, compute_slide_superpixels
from slidelabel.services.tiles import label_map, superpixel_table
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Role
from slidelabel.store.predictions import SlidePredictions, write_predictions


@pytest.fixture(scope="module")
def cmu_superpixels(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    folder = tmp_path_factory.mktemp("superpixels") / "cmu"
    compute_slide_superpixels(cmu_slide, folder, SuperpixelOptions())
    return folder


@pytest.fixture
def slide_url(app, project: dict, slide_row: int, cmu_superpixels: Path) -> str:
    shutil.copytree(cmu_superpixels, ProjectFiles(app.state.settings.data_dir, project["id"]).superpixels(slide_row))
    return f"/api/v1/projects/{project['id']}/slides/{slide_row}"


def test_cover_answers_the_superpixels_the_polygon_covers(client, member_headers, slide_url, cmu_superpixels):
    angles = np.linspace(0, 2 * np.pi, 500, endpoint=False)
    polygon = np.stack([1100 + 600 * np.cos(angles), 1500 + 400 * np.sin(3 * angles) + 300 * np.sin(angles)], axis=1)
    viewer = member_headers(Role.viewer)
    for downsample, level in ((1.0, 0), (3.5, 1), (16.0, 3)):
        response = client.post(f"{slide_url}/shapes/cover", headers=viewer,
                               json={"polygon_level0": polygon.tolist(), "downsample": downsample})
        assert response.status_code == 200, response.text
        table = superpixel_table(cmu_superpixels)
        expected = shapes.covered_superpixels(label_map(cmu_superpixels), table.bbox_level0, table.area_px, polygon,
                                              downsample=downsample)
        assert response.json() == {"superpixels": expected.superpixels.tolist(), "level": level}
        assert len(response.json()["superpixels"]) > 20


def test_cover_refuses_bad_shapes_and_outsiders(client, member_headers, slide_url):
    viewer = member_headers(Role.viewer)
    two = client.post(f"{slide_url}/shapes/cover", headers=viewer, json={"polygon_level0": [[0, 0], [5, 5]]})
    assert two.status_code == 422
    flat = client.post(f"{slide_url}/shapes/cover", headers=viewer,
                       json={"polygon_level0": [[0, 0], [5, 5], [9, 0]], "downsample": 0})
    assert flat.status_code == 422
    outsider = client.post(f"{slide_url}/shapes/cover", headers=member_headers(None),
                           json={"polygon_level0": [[0, 0], [500, 0], [0, 500]]})
    assert outsider.status_code in (403, 404)


def test_grow_follows_confident_predictions_of_the_seed_s_category(app, client, project, member_headers, slide_url,
                                                                     slide_row, cmu_superpixels):
    viewer = member_headers(Role.viewer)
    assert client.get(f"{slide_url}/shapes/grow", headers=viewer, params={"superpixel": 1}).status_code == 404
    tumour, stroma = (c["id"] for c in project["categories"][:2])
    table = superpixel_table(cmu_superpixels)
    n = table.ids.size
    # Tumour, certain, on the left half of the slide; stroma on the right.
    left = table.centroid_level0[:, 0] < 1110
    probs = np.where(left[:, None], [0.95, 0.05], [0.1, 0.9]).astype(np.float32)
    with app.state.database.session(write=True) as session:
        session.add(Epoch(project_id=project["id"], number=1, labels=10, metrics={}))
    write_predictions(ProjectFiles(app.state.settings.data_dir, project["id"]).predictions(1, slide_row),
                      SlidePredictions(np.array([tumour, stroma]), probs))
    seed = int(np.flatnonzero(left)[len(np.flatnonzero(left)) // 2]) + 1
    response = client.get(f"{slide_url}/shapes/grow", headers=viewer,
                          params={"superpixel": seed, "threshold": 0.9, "steps": 1000})
    assert response.status_code == 200, response.text
    grown = response.json()
    assert grown["basis"] == "predictions" and grown["epoch"] == 1 and grown["category_id"] == tumour
    assert grown["superpixels"][0] == seed and grown["steps"][0] == 0
    ids = np.array(grown["superpixels"])
    assert left[ids - 1].all() and len(ids) > 0.5 * left.sum()
    near = client.get(f"{slide_url}/shapes/grow", headers=viewer,
                      params={"superpixel": seed, "threshold": 0.9, "steps": 2}).json()
    assert set(near["superpixels"]) < set(grown["superpixels"]) and max(near["steps"]) == 2
    # Above the tumour's certainty nothing but the seed is taken.
    strict = client.get(f"{slide_url}/shapes/grow", headers=viewer, params={"superpixel": seed, "threshold": 0.96})
    assert strict.json()["superpixels"] == [seed]
    assert client.get(f"{slide_url}/shapes/grow", headers=viewer,
                      params={"superpixel": n + 1}).status_code == 422
    # The smart tool's three scales: nested regions, each the one grow gives at that scale.
    scales = client.get(f"{slide_url}/shapes/scales", headers=viewer, params={"superpixel": seed})
    assert scales.status_code == 200, scales.text
    regions = [set(region["superpixels"]) for region in scales.json()]
    assert len(regions) == len(shapes.SCALES) and regions[0] <= regions[1] <= regions[2] and len(regions[2]) > 1
    for region, (threshold, steps) in zip(regions, shapes.SCALES):
        assert region == set(client.get(f"{slide_url}/shapes/grow", headers=viewer, params={
            "superpixel": seed, "threshold": threshold, "steps": steps}).json()["superpixels"])
