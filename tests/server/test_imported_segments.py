"""Segments and features from other tools in a project, through the API: MoNuSeg nuclei traced as
GeoJSON polygons on the CMU slide, imported as a slide's segments (features computed on them),
labelled, trained, exported as GeoJSON and imported into a second project as segments and labels."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from slidelabel.services import job_runs
from slidelabel.store.label_map import read_labels
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Slide
from slidelabel.store.segment_sources import SOURCES_FILE, read_segment_sources
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, read_manifest

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

#: Where the 1000 x 1000 MoNuSeg crop sits on the 2220 x 2967 px CMU slide (level-0 px).
LEFT, TOP = 300, 400


@pytest.fixture(scope="module")
def nuclei_geojson(monuseg_pair) -> bytes:
    """A GeoJSON FeatureCollection of the nuclei of a MoNuSeg mask (4-connected components, their
    outer contours through pixel centres) placed at (LEFT, TOP) on the CMU slide."""
    _, mask = monuseg_pair(0)
    count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    features = []
    for k in range(1, count):
        contours, _ = cv2.findContours((components == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        ring = (contours[0][:, 0, :] + 0.5 + (LEFT, TOP)).tolist()
        if len(ring) >= 3:
            features.append({"type": "Feature", "properties": {},
                             "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]}})
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def url(project: dict, path: str = "") -> str:
    return f"/api/v1/projects/{project['id']}{path}"


def add_slide(app, project: dict, cmu_slide: Path) -> int:
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name=cmu_slide.name, path=str(cmu_slide), width=2220, height=2967,
                      mpp=0.499)
        session.add(slide)
        session.flush()
        return slide.id


def run_job(app, response) -> Job:
    """Run the job a route answered with, here; its row."""
    assert response.status_code == 202, response.text
    job_runs.run(app.state.database, app.state.settings, response.json()["id"])
    with app.state.database.session() as session:
        job = session.get(Job, response.json()["id"])
        session.expunge(job)
        return job


def import_segments(app, client, headers: dict, project: dict, slide_id: int, body: bytes) -> Job:
    response = client.post(url(project, f"/slides/{slide_id}/segments"), headers=headers,
                           files={"file": ("cells.geojson", body, "application/geo+json")})
    return run_job(app, response)


def labels_by_name(client, headers: dict, project: dict, slide_id: int) -> dict[int, str]:
    names = {c["id"]: c["name"] for c in project["categories"]}
    response = client.get(url(project, f"/slides/{slide_id}/labels"), headers=headers)
    assert response.status_code == 200, response.text
    return {item["superpixel"]: names[item["category_id"]] for item in response.json()}


def test_imported_segments_round_trip_through_a_second_project(app, client, settings, sender, admin_headers, project,
                                                               cmu_slide, nuclei_geojson):
    slide_id = add_slide(app, project, cmu_slide)
    job = import_segments(app, client, admin_headers, project, slide_id, nuclei_geojson)
    assert job.state == JobState.done, job.message
    assert "segments (geojson)" in job.message and "color features" in job.message
    files = ProjectFiles(settings.data_dir, project["id"])
    n_polygons = len(json.loads(nuclei_geojson)["features"])
    with app.state.database.session() as session:
        segments = session.get(Slide, slide_id).superpixels
    assert 0.9 * n_polygons <= segments <= n_polygons
    assert files.features(slide_id, "color").exists()

    # Preparing the project's slides keeps the imported segments (their features stay computed).
    before = read_labels(files.superpixels(slide_id) / LABELS_FILE)
    prepared = client.post(url(project, "/jobs/prepare"), headers=admin_headers)
    assert prepared.status_code == 202, prepared.text
    for submitted in prepared.json():
        job_runs.run(app.state.database, app.state.settings, submitted["id"])
    with app.state.database.session() as session:
        assert session.get(Job, prepared.json()[0]["id"]).state == JobState.done
        assert session.get(Slide, slide_id).superpixels == segments
    np.testing.assert_array_equal(read_labels(files.superpixels(slide_id) / LABELS_FILE), before)
    assert read_manifest(files.superpixels(slide_id) / MANIFEST_FILE)["algorithm"] == "imported-segments/1"

    # Label 40 nuclei in two categories, then train.
    categories = {c["name"]: c["id"] for c in project["categories"]}
    for name, ids in (("tumour", range(1, 41, 2)), ("stroma", range(2, 41, 2))):
        response = client.put(url(project, f"/slides/{slide_id}/labels"), headers=admin_headers,
                              json={"superpixels": list(ids), "category_id": categories[name]})
        assert response.status_code == 200, response.text
    epoch = run_job(app, client.post(url(project, "/epochs"), headers=admin_headers))
    assert epoch.state == JobState.done, epoch.message
    first = labels_by_name(client, admin_headers, project, slide_id)

    assert files.predictions(1, slide_id).exists()

    exported = client.get(url(project, f"/slides/{slide_id}/export/geojson"), headers=admin_headers,
                          params={"dissolve": "false"})
    assert exported.status_code == 200, exported.text

    response = client.post("/api/v1/projects", headers=admin_headers, json={
        "name": "again", "extractor": "color", "categories": [{"name": "tumour"}, {"name": "stroma"}]})
    assert response.status_code == 201, response.text
    second = response.json()
    second_slide = add_slide(app, second, cmu_slide)
    # This time from the server's slide folder.
    (settings.slide_folders[0] / "cells.geojson").write_bytes(exported.content)
    outside = client.post(url(second, f"/slides/{second_slide}/segments"), headers=admin_headers,
                          json={"path": str(settings.data_dir.parent / "cells.geojson")})
    assert outside.status_code == 403
    job = run_job(app, client.post(url(second, f"/slides/{second_slide}/segments"), headers=admin_headers,
                                   json={"path": str(settings.slide_folders[0] / "cells.geojson")}))
    assert job.state == JobState.done, job.message
    response = client.post(url(second, f"/slides/{second_slide}/import"), headers=admin_headers,
                           content=exported.content)
    assert response.status_code == 200, response.text
    again = labels_by_name(client, admin_headers, second, second_slide)

    # Each segment of the second project is one exported polygon: labelled as its class.
    second_files = ProjectFiles(settings.data_dir, second["id"])
    sources = read_segment_sources(second_files.superpixels(second_slide) / SOURCES_FILE)
    assert len(again) == sources.ids_N.size == len(first)
    assert all(again[int(s)] == sources.class_names_N[int(s) - 1] for s in sources.ids_N)
    # ... and covers the pixels of a superpixel of the first project with the same label.
    map1 = read_labels(files.superpixels(slide_id) / LABELS_FILE)
    map2 = read_labels(second_files.superpixels(second_slide) / LABELS_FILE)
    covered = []
    for superpixel, name in first.items():
        inside = map2[map1 == superpixel]
        majority = np.bincount(inside).argmax()
        assert majority and again[int(majority)] == name
        covered.append((inside == majority).mean())
    assert np.mean(covered) > 0.9  # a re-traced outline loses some edge pixels of the smallest nuclei

    # Segments of a labelled slide are not replaced; without labels they are, and the slide's
    # predictions of the old superpixels go.
    refused = client.post(url(project, f"/slides/{slide_id}/segments"), headers=admin_headers,
                          files={"file": ("cells.geojson", exported.content, "application/geo+json")})
    assert refused.status_code == 409 and "has labels" in refused.json()["detail"]
    response = client.put(url(project, f"/slides/{slide_id}/labels"), headers=admin_headers,
                          json={"superpixels": list(first), "category_id": None})
    assert response.status_code == 200, response.text
    job = import_segments(app, client, admin_headers, project, slide_id, exported.content)
    assert job.state == JobState.done, job.message
    assert not files.predictions(1, slide_id).exists() and files.features(slide_id, "color").exists()
    with app.state.database.session() as session:
        assert session.get(Slide, slide_id).superpixels == len(first)


def test_imported_features_become_a_project_extractor(app, client, settings, sender, admin_headers, project,
                                                       cmu_slide, nuclei_geojson, tmp_path):
    slide_id = add_slide(app, project, cmu_slide)
    assert import_segments(app, client, admin_headers, project, slide_id, nuclei_geojson).state == JobState.done
    with app.state.database.session() as session:
        n = session.get(Slide, slide_id).superpixels
    # A bad source fails its job with the cause, and the slide keeps its segments.
    failed = import_segments(app, client, admin_headers, project, slide_id, b'{"type": "FeatureCollection", "features": [')
    assert failed.state == JobState.failed and failed.message.startswith("cells.geojson is not valid GeoJSON")
    assert "\n" not in failed.message and str(settings.data_dir) not in failed.message
    folder = ProjectFiles(settings.data_dir, project["id"]).superpixels(slide_id)
    assert read_labels(folder / LABELS_FILE).max() == n
    ids = np.arange(1, n + 1)
    table = "id,area,parity\n" + "".join(f"{i},{i * 3.5},{i % 2}\n" for i in ids)
    bad = client.post(url(project, f"/slides/{slide_id}/features/uni"), headers=admin_headers,
                      files={"file": ("cells.csv", table.encode(), "text/csv")})
    assert bad.status_code == 422 and "imported-" in bad.json()["detail"]
    job = run_job(app, client.post(url(project, f"/slides/{slide_id}/features/imported-morph"), headers=admin_headers,
                                   files={"file": ("cells.csv", table.encode(), "text/csv")}))
    assert job.state == JobState.done, job.message
    assert f"{n:,} of {n:,} segments got 2 features" in job.message
    assert ProjectFiles(settings.data_dir, project["id"]).features(slide_id, "imported-morph").exists()
    response = client.patch(url(project), headers=admin_headers, json={"extractor": "imported-morph"})
    assert response.status_code == 200, response.text
    response = client.patch(url(project), headers=admin_headers, json={"extractor": "imported-Morph!"})
    assert response.status_code == 422


def test_classes_become_labels_and_the_imports_are_listed(app, client, settings, sender, admin_headers, project,
                                                           cmu_slide, nuclei_geojson):
    """QuPath classifications imported as the caller's labels (a class the project lacks becomes
    a category); GET /imports names the source, what was dropped and the imported features."""
    document = json.loads(nuclei_geojson)
    cells = document["features"]
    for k, feature in enumerate(cells[:30]):
        feature["properties"]["classification"] = {"name": ("tumour", "lymphocyte")[k % 2], "color": [200, 0, 0]}
    outside = {"type": "Polygon", "coordinates": [[[5000, 5000], [5010, 5000], [5010, 5010], [5000, 5000]]]}
    cells += [{"type": "Feature", "properties": {}, "geometry": outside},
              {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": []}}]
    slide_id = add_slide(app, project, cmu_slide)
    response = client.post(url(project, f"/slides/{slide_id}/segments"), headers=admin_headers, params={"labels": "true"},
                           files={"file": ("qupath cells.geojson", json.dumps(document).encode(), "application/geo+json")})
    job = run_job(app, response)
    assert job.state == JobState.done, job.message
    assert "labels: 15 lymphocyte, 15 tumour" in job.message
    response = client.get(url(project), headers=admin_headers)
    project = response.json()
    assert {c["name"] for c in project["categories"]} >= {"tumour", "stroma", "lymphocyte"}
    labelled = labels_by_name(client, admin_headers, project, slide_id)
    assert sorted(labelled.values()).count("tumour") == 15 and len(labelled) == 30

    listed = client.get(url(project, "/imports"), headers=admin_headers)
    assert listed.status_code == 200, listed.text
    (slide,) = listed.json()["slides"]
    segments = slide["segments"]
    assert segments["source"] == "qupath cells.geojson" and segments["format"] == "geojson"
    assert segments["classes"] == {"lymphocyte": 15, "tumour": 15}
    assert segments["dropped"]["outside the slide"] == 1 and segments["dropped"]["empty geometry"] == 1
    assert slide["features"] == [] and listed.json()["extractors"] == []

    n = segments["segments"]
    table = "id,area\n" + "".join(f"{i},{i * 2.0}\n" for i in range(1, n + 1))
    job = run_job(app, client.post(url(project, f"/slides/{slide_id}/features/imported-morph"), headers=admin_headers,
                                   files={"file": ("cells.csv", table.encode(), "text/csv")}))
    assert job.state == JobState.done, job.message
    listed = client.get(url(project, "/imports"), headers=admin_headers).json()
    assert listed["slides"][0]["features"] == [{"name": "imported-morph", "dimensions": 1, "segments": n}]
    assert listed["extractors"] == ["imported-morph"]


def test_an_uploaded_pixelmap_with_its_uploaded_bounding_boxes(app, client, settings, sender, admin_headers, project,
                                                                cmu_slide, monuseg_pair):
    """A Histomics Label pixelmap (2i fill, 2i+1 outline, at half resolution) of MoNuSeg nuclei:
    its bounding-box CSV is uploaded first (.../sources), then the pixelmap names it."""
    _, mask = monuseg_pair(0)
    count, components = cv2.connectedComponents(mask[::2, ::2].astype(np.uint8), connectivity=4)
    height, width, top, left = -(-2967 // 2), 2220 // 2, TOP // 2, LEFT // 2
    index = np.zeros((height, width), np.int64)  # segment 0: the background
    boxes = [[0, 0, 2220, 2967]]
    for k in range(1, count):
        ys, xs = np.nonzero(components == k)
        inner = cv2.erode((components == k).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        region = index[top : top + components.shape[0], left : left + components.shape[1]]
        region[components == k], region[inner] = 2 * k + 1, 2 * k
        boxes.append([2 * (xs.min() + left), 2 * (ys.min() + top), 2 * (xs.max() + 1 + left), 2 * (ys.max() + 1 + top)])
    rgb = np.stack([index & 255, index >> 8 & 255, index >> 16 & 255], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rgb, tile=(256, 256), photometric="rgb")
    csv = "".join(",".join(map(str, box)) + "\n" for box in boxes).encode()
    slide_id = add_slide(app, project, cmu_slide)
    segments = url(project, f"/slides/{slide_id}/segments")

    unknown = client.post(segments, headers=admin_headers, params={"bboxes": "0123456789abcdef-boxes.csv"},
                          files={"file": ("pixelmap.tiff", buffer.getvalue(), "image/tiff")})
    assert unknown.status_code == 422 and "upload it first" in unknown.json()["detail"]
    without = run_job(app, client.post(segments, headers=admin_headers,
                                       files={"file": ("pixelmap.tiff", buffer.getvalue(), "image/tiff")}))
    assert without.state == JobState.failed and "bboxes" in without.message and "\n" not in without.message
    kept = client.post(url(project, f"/slides/{slide_id}/sources"), headers=admin_headers,
                       files={"file": ("boxes.csv", csv, "text/csv")})
    assert kept.status_code == 201, kept.text
    name = kept.json()["name"]
    assert name.endswith("-boxes.csv") and "/" not in name
    job = run_job(app, client.post(segments, headers=admin_headers, params={"bboxes": name},
                                   files={"file": ("pixelmap.tiff", buffer.getvalue(), "image/tiff")}))
    assert job.state == JobState.done, job.message
    listed = client.get(url(project, "/imports"), headers=admin_headers).json()["slides"][0]["segments"]
    assert listed["format"] == "pixelmap" and listed["source"] == "pixelmap.tiff" and listed["segments"] == count
    ids = read_labels(ProjectFiles(settings.data_dir, project["id"]).superpixels(slide_id) / LABELS_FILE)
    # The nuclei are segments of their own: as many distinct ids over the crop as components + background.
    crop = ids[top : top + components.shape[0], left : left + components.shape[1]]
    assert np.unique(crop).size == count


def test_classes_past_the_category_limit_are_refused_all_at_once(app, client, settings, sender, admin_headers, project,
                                                                 cmu_slide, nuclei_geojson, monkeypatch):
    """Tenth attack: 300 classes against the 255-category limit were added one by one until one
    passed it, then all rolled back, and the message counted one new class ("1 new would make
    256"). The classes are counted first, as docs/server.md says."""
    from slidelabel.services import projects

    monkeypatch.setattr(projects, "MAX_CATEGORIES", len(project["categories"]) + 1)
    document = json.loads(nuclei_geojson)
    for k, feature in enumerate(document["features"][:30]):
        feature["properties"]["classification"] = {"name": ("tumour", "lymphocyte", "necrosis")[k % 3]}
    slide_id = add_slide(app, project, cmu_slide)
    job = run_job(app, client.post(url(project, f"/slides/{slide_id}/segments"), headers=admin_headers,
                                   params={"labels": "true"},
                                   files={"file": ("cells.geojson", json.dumps(document).encode(), "application/geo+json")}))
    assert job.state == JobState.done, job.message
    assert "classes not imported as labels" in job.message and "2 new" in job.message, job.message
    names = {c["name"] for c in client.get(url(project), headers=admin_headers).json()["categories"]}
    assert names == {c["name"] for c in project["categories"]}
