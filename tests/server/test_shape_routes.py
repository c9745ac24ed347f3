"""The shape routes on the CMU sample's real superpixels: a polygon's covered superpixels, and
grow to similar from the latest epoch's predictions."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

from slidelabel.services import region_growing, shapes, smart
from slidelabel.services.tiles import label_map, superpixel_table
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Role
from slidelabel.store.predictions import SlidePredictions, write_predictions


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
    assert len(regions) == len(region_growing.SCALES) and regions[0] <= regions[1] <= regions[2] and len(regions[2]) > 1
    for region, (threshold, steps) in zip(regions, region_growing.SCALES):
        assert region == set(client.get(f"{slide_url}/shapes/grow", headers=viewer, params={
            "superpixel": seed, "threshold": threshold, "steps": steps}).json()["superpixels"])


TINY_SAM = runpy.run_path(str(Path(__file__).parents[1] / "web" / "tiny_sam.py"))


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return TINY_SAM["save_tiny_sam"](tmp_path_factory.mktemp("sam") / "tiny")


def test_sam_embed_then_suggest_outlines_and_covered_superpixels(app, client, member_headers, slide_url,
                                                                cmu_superpixels, tiny_sam, monkeypatch):
    monkeypatch.setattr(app.state.settings, "sam_model", tiny_sam)
    monkeypatch.setattr(smart, "_EMBEDDINGS", smart._Embeddings(smart.EMBEDDINGS))  # as a fresh process
    viewer = member_headers(Role.viewer)
    region = [300.0, 400.0, 1900.0, 2500.0]
    first = client.post(f"{slide_url}/shapes/sam/embed", headers=viewer, json={"region_level0": region})
    assert first.status_code == 200, first.text
    assert first.json()["basis"] == "sam" and first.json()["region_level0"] == [300, 400, 1900, 2500]
    again = client.post(f"{slide_url}/shapes/sam/embed", headers=viewer, json={"region_level0": region}).json()
    assert again["cached"] and not first.json()["cached"]
    response = client.post(f"{slide_url}/shapes/sam/suggest", headers=viewer, json={
        "region_level0": region, "x_level0": 1100, "y_level0": 1500, "downsample": 6.0})
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["basis"] == "sam" and len(found["scales"]) == 3
    table = superpixel_table(cmu_superpixels)
    for scale in found["scales"]:
        outline = np.array(scale["outline_level0"])
        assert isinstance(scale["score"], float)
        if len(outline) == 0:  # an empty mask takes nothing
            assert scale["superpixels"] == []
            continue
        # The superpixels are the ones the outline (as answered, to 0.1 px) covers, at the level shown.
        expected = shapes.covered_superpixels(label_map(cmu_superpixels), table.bbox_level0, table.area_px, outline,
                                              downsample=6.0)
        assert scale["superpixels"] == expected.superpixels.tolist()
    assert any(scale["superpixels"] for scale in found["scales"])


@pytest.mark.parametrize("body", [
    {"region_level0": [100, 100, 50, 300], "x_level0": 60, "y_level0": 150},  # right < left
    {"region_level0": [0, 0, 1000], "x_level0": 60, "y_level0": 150},
    {"region_level0": [0, 0, 1e12, 1000], "x_level0": 60, "y_level0": 150},
    {"region_level0": [0, 0, 1000, 1000], "x_level0": -5, "y_level0": 150},
    {"region_level0": [0, 0, 1000, 1000], "x_level0": 5, "y_level0": 150, "downsample": 0},
    {"region_level0": [300, 400, 1900, 2500], "x_level0": 100, "y_level0": 100},  # outside the region
    {"region_level0": [5000, 5000, 6000, 6000], "x_level0": 5500, "y_level0": 5500},  # off the slide
])
def test_sam_suggest_refuses_bad_regions_and_points(app, client, member_headers, slide_url, tiny_sam, monkeypatch,
                                                    body):
    monkeypatch.setattr(app.state.settings, "sam_model", tiny_sam)
    response = client.post(f"{slide_url}/shapes/sam/suggest", headers=member_headers(Role.viewer), json=body)
    assert response.status_code == 422, response.text


def test_sam_routes_without_weights_are_classical_and_closed_to_outsiders(
        app, client, project, member_headers, slide_url, slide_row, cmu_superpixels, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("SLIDELABEL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("SLIDELABEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    viewer = member_headers(Role.viewer)
    region = {"region_level0": [300.0, 400.0, 1900.0, 2500.0]}
    embed = client.post(f"{slide_url}/shapes/sam/embed", headers=viewer, json=region).json()
    assert embed["basis"] == "classical" and "facebook/sam-vit-base" in embed["note"]
    # Classical: the regions of /scales, grown from the superpixel under the point.
    tumour, stroma = (c["id"] for c in project["categories"][:2])
    table = superpixel_table(cmu_superpixels)
    left = table.centroid_level0[:, 0] < 1110
    with app.state.database.session(write=True) as session:
        session.add(Epoch(project_id=project["id"], number=1, labels=10, metrics={}))
    write_predictions(ProjectFiles(app.state.settings.data_dir, project["id"]).predictions(1, slide_row),
                      SlidePredictions(np.array([tumour, stroma]), np.where(left[:, None], [0.95, 0.05], [0.1, 0.9])
                                       .astype(np.float32)))
    x, y = 800.0, 1500.0
    seed = int(label_map(cmu_superpixels).sample(np.array([x]), np.array([y]), 0)[0, 0])
    found = client.post(f"{slide_url}/shapes/sam/suggest", headers=viewer,
                        json={**region, "x_level0": x, "y_level0": y}).json()
    scales = client.get(f"{slide_url}/shapes/scales", headers=viewer, params={"superpixel": seed}).json()
    assert found["basis"] == "classical" and len(found["scales"]) == 3
    assert [s["superpixels"] for s in found["scales"]] == [sorted(s["superpixels"]) for s in scales]
    assert all(s["outline_level0"] == [] and s["score"] is None for s in found["scales"])
    outsider = member_headers(None)
    assert client.post(f"{slide_url}/shapes/sam/embed", headers=outsider, json=region).status_code in (403, 404)
    assert client.post(f"{slide_url}/shapes/sam/suggest", headers=outsider,
                       json={**region, "x_level0": x, "y_level0": y}).status_code in (403, 404)
