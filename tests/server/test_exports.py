"""Exports of labels and predictions on the real CMU slide, through the HTTP API."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
import zipfile
from pathlib import Path

import large_image
import numpy as np
import pytest
import tifffile
from matplotlib.path import Path as MplPath

from slidelabel.services.polygons import ring_area
from slidelabel.store.label_map import read_labels
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Label, Role, Slide
from slidelabel.store.predictions import SlidePredictions, write_predictions
from slidelabel.store.superpixel_files import LABELS_FILE, TABLE_FILE, read_manifest
from slidelabel.store.superpixel_table import read_table

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

SCHEMA = json.loads((Path(__file__).parent / "data" / "large_image_annotation_schema.json").read_text())



@pytest.fixture
def slide_id(app, settings, project: dict, cmu_slide: Path, cmu_superpixels: Path) -> int:
    """The CMU slide in ``project`` with its superpixel files in place."""
    count = read_table(cmu_superpixels / TABLE_FILE).ids.size
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name="CMU-computed.svs", path=str(cmu_slide), width=2220,
                      height=2967, mpp=0.499, superpixels=count)
        session.add(slide)
        session.flush()
        slide_id = slide.id
    shutil.copytree(cmu_superpixels, ProjectFiles(settings.data_dir, project["id"]).superpixels(slide_id))
    return slide_id


def spatial_classes(folder: Path, categories: list[dict]) -> np.ndarray:
    """A category id per superpixel ``(N,)`` that forms regions: glass where the superpixel is
    mostly glass, else tumour on the left half of the tissue and stroma on the right."""
    table = read_table(folder / TABLE_FILE)
    tumour, stroma, glass = (c["id"] for c in categories)
    x = table.centroid_level0[:, 0]
    classes = np.where(x < np.median(x), tumour, stroma)
    return np.where(table.tissue_fraction < 0.2, glass, classes)


@pytest.fixture
def predicted(app, settings, project: dict, slide_id: int) -> np.ndarray:
    """Epoch 1 with predictions for the CMU slide (:func:`spatial_classes`, random certainty,
    the last superpixel unpredicted); returns the predicted category id per superpixel."""
    files = ProjectFiles(settings.data_dir, project["id"])
    classes_N = spatial_classes(files.superpixels(slide_id), project["categories"])
    category_ids_C = np.array([c["id"] for c in project["categories"][:2]])
    rng = np.random.default_rng(0)
    probs_N_C = np.zeros((classes_N.size, 2), np.float32)
    top = rng.uniform(0.55, 1.0, classes_N.size)
    column = (classes_N == category_ids_C[1]).astype(int)
    probs_N_C[np.arange(classes_N.size), column] = top
    probs_N_C[np.arange(classes_N.size), 1 - column] = 1 - top
    probs_N_C[-1] = 0
    glass = classes_N == project["categories"][2]["id"]
    write_predictions(files.predictions(1, slide_id), SlidePredictions(category_ids_C, probs_N_C))
    with app.state.database.session(write=True) as session:
        session.add(Epoch(project_id=project["id"], number=1, labels=10, metrics={}))
    predicted_N = SlidePredictions(category_ids_C, probs_N_C).predicted_N
    assert glass.any() and (predicted_N[~glass] == classes_N[~glass]).all()
    return predicted_N


def url(project: dict, slide_id: int, path: str) -> str:
    return f"/api/v1/projects/{project['id']}/slides/{slide_id}{path}"


def slide_labels(app, slide_id: int, user_id: int | None = None) -> dict[int, int]:
    """``{superpixel: category id}`` of the slide's labels by ``user_id`` (None: the only labeller)."""
    with app.state.database.session() as session:
        query = session.query(Label).filter_by(slide_id=slide_id)
        labels = query if user_id is None else query.filter_by(user_id=user_id)
        return {label.superpixel: label.category_id for label in labels}


def timed_get(client, address: str, headers: dict, params: dict | None = None):
    start = time.perf_counter()
    response = client.get(address, headers=headers, params=params)
    assert response.status_code == 200, response.text
    print(f"{address.rsplit('/', 1)[-1]} {params}: {time.perf_counter() - start:.2f} s, {len(response.content)} bytes")
    return response


def test_geojson_of_predictions_round_trips_as_labels(app, client, project, slide_id, predicted, member_headers,
                                                      settings):
    viewer, annotator = member_headers(Role.viewer), member_headers(Role.annotator)
    exported = timed_get(client, url(project, slide_id, "/export/geojson"), viewer, {"source": "predictions"})
    assert exported.headers["content-type"] == "application/geo+json"
    features = exported.json()["features"]
    assert [f["properties"]["classification"]["name"] for f in features] == ["tumour", "stroma"]
    response = client.post(url(project, slide_id, "/import"), headers=annotator, content=exported.content)
    assert response.status_code == 200, response.text
    report = response.json()
    labels = slide_labels(app, slide_id)
    ids = np.flatnonzero(predicted) + 1
    agree = np.mean([labels.get(int(s)) == predicted[s - 1] for s in ids])
    print(f"round trip: {agree:.1%} of {ids.size} predicted superpixels labelled as predicted; report {report}")
    # The rest: superpixels whose centroid lies outside their own region (a crescent-shaped
    # superpixel's centroid can fall in its neighbour) or within the 1 px simplification of it.
    assert agree >= 0.95
    assert report["format"] == "geojson" and report["changed"] == len(labels)
    assert sum(report["labelled"].values()) == len(labels)


def polygons_of(feature: dict) -> list[list[np.ndarray]]:
    geometry = feature["geometry"]
    parts = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    return [[np.asarray(ring, np.float64) for ring in rings] for rings in parts]


@pytest.mark.parametrize("dissolve", [True, False])
def test_polygons_are_valid_and_cover_the_superpixels(client, project, slide_id, predicted, admin_headers, settings,
                                                      dissolve):
    folder = ProjectFiles(settings.data_dir, project["id"]).superpixels(slide_id)
    table = read_table(folder / TABLE_FILE)
    downsample = read_manifest(folder / "manifest.json")["working"]["downsample"]
    features = timed_get(client, url(project, slide_id, "/export/geojson"), admin_headers,
                         {"source": "predictions", "dissolve": dissolve}).json()["features"]
    area, perimeter = {}, {}
    for feature in features:
        name = feature["properties"]["classification"]["name"]
        assert feature["properties"]["objectType"] == ("annotation" if dissolve else "detection")
        assert len(feature["properties"]["classification"]["color"]) == 3
        for shell, *holes in polygons_of(feature):
            for ring in (shell, *holes):
                assert len(ring) >= 4 and (ring[0] == ring[-1]).all()
                perimeter[name] = perimeter.get(name, 0) + np.hypot(*np.diff(ring, axis=0).T).sum()
            assert ring_area(shell) > 0 and all(ring_area(hole) < 0 for hole in holes)
            shell_vertices = {tuple(p) for p in shell.tolist()}
            for hole in holes:
                inside = MplPath(shell).contains_points(hole)
                assert all(inside[i] or tuple(p) in shell_vertices for i, p in enumerate(hole.tolist()))
            area[name] = area.get(name, 0) + ring_area(shell) + sum(ring_area(hole) for hole in holes)
    names = {c["id"]: c["name"] for c in project["categories"]}
    for name in area:
        members = np.array([names.get(int(c)) == name for c in predicted])
        exact = table.area_px[members].sum() * downsample**2
        # Simplification moves no boundary more than 1 working pixel.
        assert abs(area[name] - exact) <= perimeter[name] * downsample, (name, area[name], exact)
        assert abs(area[name] - exact) < 0.01 * exact
    if not dissolve:
        assert len(features) == np.count_nonzero(predicted)


def test_excluded_categories_are_flagged(app, client, project, slide_id, admin_headers):
    glass = project["categories"][2]
    tumour = project["categories"][0]
    client.put(url(project, slide_id, "/labels"), headers=admin_headers,
               json={"superpixels": [1, 2, 3], "category_id": glass["id"], "epoch": 0})
    client.put(url(project, slide_id, "/labels"), headers=admin_headers,
               json={"superpixels": [200], "category_id": tumour["id"], "epoch": 0})
    features = client.get(url(project, slide_id, "/export/geojson"), headers=admin_headers).json()["features"]
    flags = {f["properties"]["classification"]["name"]: f["properties"]["excluded"] for f in features}
    assert flags == {"tumour": False, "glass": True}
    per_superpixel = client.get(url(project, slide_id, "/export/geojson"), headers=admin_headers,
                                params={"dissolve": False}).json()["features"]
    assert sorted(f["properties"]["measurements"]["superpixel"] for f in per_superpixel) == [1, 2, 3, 200]


def schema_errors(value: object, schema: dict, where: str = "$") -> list[str]:
    """Errors of ``value`` against the JSON-schema keywords large_image's annotation schema uses
    (jsonschema is not a dependency); an unknown keyword fails the test instead of passing."""
    known = {"type", "properties", "required", "additionalProperties", "anyOf", "enum", "pattern", "minItems",
             "maxItems", "items", "minimum", "maximum", "exclusiveMinimum", "minLength", "$schema", "$comment",
             "description", "title", "name"}
    assert not set(schema) - known, set(schema) - known
    if "anyOf" in schema:
        results = [schema_errors(value, option, where) for option in schema["anyOf"]]
        if all(results):
            return min(results, key=len)
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    python = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    if types and not any(isinstance(value, python[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                         for t in types):
        return [f"{where}: {value!r:.40} is not {types}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: too short")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", -np.inf) or value > schema.get("maximum", np.inf):
            errors.append(f"{where}: {value} out of range")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{where}: {value} <= {schema['exclusiveMinimum']}")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", np.inf):
            errors.append(f"{where}: {len(value)} items")
        for i, item in enumerate(value if "items" in schema else []):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, dict):
        errors += [f"{where}: missing {key}" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            errors += [f"{where}: unexpected {key}" for key in value if key not in properties]
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(item, properties[key], f"{where}.{key}")
    return errors


def test_schema_check_catches_mistakes():
    good = {"name": "x", "elements": [{"type": "polyline", "points": [[0, 0, 0], [1, 0, 0]], "closed": True}]}
    assert schema_errors(good, SCHEMA) == []
    assert schema_errors({**good, "extra": 1}, SCHEMA)
    assert schema_errors({"name": "x", "elements": [{"type": "polyline", "points": [[0, 0]]}]}, SCHEMA)
    assert schema_errors({"name": "x", "elements": [{"type": "pixelmap", "girderId": "nope", "values": [],
                                                     "categories": [], "boundaries": False}]}, SCHEMA)


def test_annotation_json_is_valid_for_large_image(client, project, slide_id, predicted, admin_headers):
    for params, kinds in (({"source": "predictions", "elements": "both"}, {"polyline", "pixelmap"}),
                          ({"source": "predictions", "dissolve": False}, {"polyline"}),
                          ({"elements": "both", "girder_id": "0123456789abcdef01234567"}, {"pixelmap"})):
        document = timed_get(client, url(project, slide_id, "/export/annotation"), admin_headers, params).json()
        assert schema_errors(document, SCHEMA) == []
        assert {element["type"] for element in document["elements"]} == kinds
    pixelmap = next(e for e in client.get(url(project, slide_id, "/export/annotation"), headers=admin_headers,
                                          params={"source": "predictions", "elements": "pixelmap"}).json()["elements"])
    assert len(pixelmap["values"]) == predicted.size + 1 and pixelmap["values"][0] == 0
    legend = [c["label"] for c in pixelmap["categories"]]
    assert legend == ["default", "tumour", "stroma", "glass"]
    assert [legend[v] for v in pixelmap["values"][1:6]] == [
        {c["id"]: c["name"] for c in project["categories"]}.get(int(p), "default") for p in predicted[:5]]
    bad = client.get(url(project, slide_id, "/export/annotation"), headers=admin_headers, params={"girder_id": "x"})
    assert bad.status_code == 422 and "Girder item id" in bad.json()["detail"]


def test_mask_tiff_holds_the_predicted_categories(client, project, slide_id, predicted, admin_headers, settings,
                                                  tmp_path):
    response = timed_get(client, url(project, slide_id, "/export/mask.tiff"), admin_headers)
    path = tmp_path / "mask.tiff"
    path.write_bytes(response.content)
    folder = ProjectFiles(settings.data_dir, project["id"]).superpixels(slide_id)
    ids = read_labels(folder / LABELS_FILE)
    position = {c["id"]: c["position"] + 1 for c in project["categories"]}
    expected_N = np.array([0] + [position.get(int(p), 0) for p in predicted], np.uint8)
    with tifffile.TiffFile(path) as tiff:
        levels = tiff.series[0].levels
        mask = levels[0].asarray()
        assert mask.dtype == np.uint8 and mask.shape == ids.shape
        assert [level.shape for level in levels][1] == ((ids.shape[0] + 1) // 2, (ids.shape[1] + 1) // 2)
        x_resolution = tiff.pages[0].tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(1e4 / 0.998, rel=1e-3)
    rng = np.random.default_rng(1)
    ys, xs = rng.integers(0, ids.shape[0], 500), rng.integers(0, ids.shape[1], 500)
    assert (mask[ys, xs] == expected_N[ids[ys, xs]]).all()
    assert set(np.unique(mask)) == {0, 1, 2}
    source = large_image.open(str(path))
    metadata = source.getMetadata()
    assert (metadata["sizeX"], metadata["sizeY"]) == (ids.shape[1], ids.shape[0])
    assert metadata["mm_x"] == pytest.approx(0.998e-3, rel=1e-3)
    region, _ = source.getRegion(format=large_image.constants.TILE_FORMAT_NUMPY)
    assert (region[..., 0] == mask).all()


def test_predictions_csv_has_a_row_per_superpixel(client, project, slide_id, predicted, admin_headers):
    response = timed_get(client, url(project, slide_id, "/export/predictions.csv"), admin_headers)
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == predicted.size
    assert list(rows[0])[:12] == ["slide", "superpixel", "centroid_x", "centroid_y", "x_min", "y_min", "x_max",
                                  "y_max", "area_um2", "area_px_level0", "predicted", "certainty"]
    assert list(rows[0])[12:] == ["p_tumour", "p_stroma"]
    names = {c["id"]: c["name"] for c in project["categories"]}
    assert [row["predicted"] for row in rows] == [names.get(int(p), "") for p in predicted]
    first = rows[0]
    assert float(first["certainty"]) == pytest.approx(max(float(first["p_tumour"]), float(first["p_stroma"])), abs=1e-3)
    assert rows[-1]["certainty"] == "" and int(rows[-1]["superpixel"]) == predicted.size
    project_csv = client.get(f"/api/v1/projects/{project['id']}/export/predictions.csv", headers=admin_headers)
    assert project_csv.text == response.text


def test_project_zip_holds_a_file_per_slide(client, project, slide_id, predicted, admin_headers, slide_row):
    for archive_format, suffix in (("geojson", ".geojson"), ("mask", ".mask.tiff")):
        response = timed_get(client, f"/api/v1/projects/{project['id']}/export/{archive_format}.zip", admin_headers,
                             {"source": "predictions"})
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            names = archive.namelist()
            assert names == [f"{slide_id}-CMU-computed{suffix}", "slidelabel.json"]
            skipped = json.loads(archive.read("slidelabel.json"))["skipped"]
            assert list(skipped) == ["CMU-1-Small-Region.svs"] and "no superpixels" in skipped["CMU-1-Small-Region.svs"]


def test_missing_predictions_and_superpixels_are_explained(client, project, slide_id, slide_row, admin_headers):
    response = client.get(url(project, slide_id, "/export/geojson"), headers=admin_headers,
                          params={"source": "predictions"})
    assert response.status_code == 404 and "train" in response.json()["detail"]
    response = client.get(url(project, slide_row, "/export/mask.tiff"), headers=admin_headers,
                          params={"source": "labels"})
    assert response.status_code == 409 and "no superpixels yet" in response.json()["detail"]
    assert client.get(url(project, 999, "/export/geojson"), headers=admin_headers).status_code == 404


@pytest.mark.parametrize("role, export, imported", [(None, 404, 404), (Role.viewer, 200, 403),
                                                    (Role.annotator, 200, 200)])
def test_roles(client, project, slide_id, member_headers, role, export, imported):
    headers = member_headers(role)
    assert client.get(url(project, slide_id, "/export/geojson"), headers=headers).status_code == export
    document = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
        "classification": {"name": "tumour"}}, "geometry": {"type": "Polygon", "coordinates": [
            [[0, 0], [3000, 0], [3000, 3000], [0, 0]]]}}]}
    assert client.post(url(project, slide_id, "/import"), headers=headers, json=document).status_code == imported


def test_one_shape_per_superpixel_of_a_slide_with_no_labels_is_an_empty_export(client, project, slide_id,
                                                                                 admin_headers):
    params = {"source": "labels", "dissolve": False}
    response = client.get(url(project, slide_id, "/export/geojson"), headers=admin_headers, params=params)
    assert response.status_code == 200, response.text
    assert response.json()["features"] == []
    archive = client.get(f"/api/v1/projects/{project['id']}/export/annotation.zip", headers=admin_headers,
                         params=params)
    assert archive.status_code == 200, archive.text


@pytest.mark.parametrize("name", ["L" * 251 + ".svs", "é" * 125 + ".svs"], ids=["ascii", "two bytes a letter"])
def test_exports_of_a_slide_with_the_longest_name_are_written(app, client, project, slide_id, predicted, admin_headers,
                                                               name):
    """Sixteenth attack: a slide file named with 250 bytes (file systems allow 255) made every
    export of it a 500: its export file's name, the slide's with a suffix, was too long."""
    with app.state.database.session(write=True) as session:
        session.get(Slide, slide_id).name = name
    for export in ("geojson", "annotation", "mask.tiff", "predictions.csv"):
        answer = client.get(url(project, slide_id, f"/export/{export}"), headers=admin_headers,
                            params={"source": "predictions"} if export != "predictions.csv" else None)
        assert answer.status_code == 200, (export, answer.text)
        assert len(re.search(r'filename="?([^";]+)', answer.headers["content-disposition"])[1].encode()) <= 255
    archive = client.get(f"/api/v1/projects/{project['id']}/export/mask.zip", headers=admin_headers,
                         params={"source": "predictions"})
    assert archive.status_code == 200, archive.text
