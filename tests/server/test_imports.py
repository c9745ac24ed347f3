"""Imports of QuPath GeoJSON and Digital Slide Archive annotations as labels, on the CMU slide."""

from __future__ import annotations

import numpy as np
import pytest
from test_exports import predicted, slide_id, slide_labels, url  # noqa: F401 - fixtures

from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import LabelEvent, Role
from slidelabel.store.superpixel_table import read_table

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py


@pytest.fixture
def centroids(settings, project, slide_id) -> np.ndarray:  # noqa: F811 - slide_id is the imported fixture
    """Level-0 centroids ``(N, 2)`` of the slide's superpixels."""
    return read_table(ProjectFiles(settings.data_dir, project["id"]).superpixels(slide_id) / "superpixels.parquet"
                      ).centroid_level0


def rectangle(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def feature(geometry: dict, classification: object) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": {"objectType": "annotation",
                                                                    "classification": classification}}


def inside(centroids: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> set[int]:
    x, y = centroids[:, 0], centroids[:, 1]
    return set((np.flatnonzero((x > x0) & (x < x1) & (y > y0) & (y < y1)) + 1).tolist())


def test_qupath_geojson_labels_superpixels_by_centroid(app, client, project, slide_id, centroids,  # noqa: F811
                                                       member_headers):
    annotator = member_headers(Role.annotator)
    document = {"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [rectangle(0, 0, 1100, 1500), rectangle(300, 300, 700, 900)]},
                {"name": "tumour", "color": [200, 0, 0]}),
        feature({"type": "MultiPolygon", "coordinates": [[rectangle(1200, 0, 2220, 700)],
                                                         [rectangle(1200, 2000, 2220, 2967)]]},
                {"name": "stroma", "colorRGB": -16711936}),
        # Overlaps the tumour shell: the later shape wins.
        feature({"type": "Polygon", "coordinates": [rectangle(0, 1200, 600, 1500)]}, {"names": ["glass"]}),
        feature({"type": "Point", "coordinates": [10, 10]}, {"name": "tumour"}),
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [rectangle(0, 0, 9, 9)]}, "properties": {}},
    ]}
    response = client.post(url(project, slide_id, "/import"), headers=annotator, json=document)
    assert response.status_code == 200, response.text
    glass = inside(centroids, 0, 1200, 600, 1500)
    tumour = inside(centroids, 0, 0, 1100, 1500) - inside(centroids, 300, 300, 700, 900) - glass
    stroma = inside(centroids, 1200, 0, 2220, 700) | inside(centroids, 1200, 2000, 2220, 2967)
    ids = {c["name"]: c["id"] for c in project["categories"]}
    expected = {**{s: ids["tumour"] for s in tumour}, **{s: ids["stroma"] for s in stroma},
                **{s: ids["glass"] for s in glass}}
    assert tumour and stroma and glass
    assert slide_labels(app, slide_id) == expected
    report = response.json()
    assert report["labelled"] == {"tumour": len(tumour), "stroma": len(stroma), "glass": len(glass)}
    assert report["shapes"] == 4 and report["empty_shapes"] == 0
    assert sum(report["skipped"].values()) == 2 and any("Point" in reason for reason in report["skipped"])
    again = client.post(url(project, slide_id, "/import"), headers=annotator, json=document).json()
    assert again["changed"] == 0 and again["unchanged"] == len(expected)
    with app.state.database.session() as session:
        assert session.query(LabelEvent).filter_by(slide_id=slide_id).count() == len(expected)


def test_dsa_annotation_round_trips(app, client, project, slide_id, predicted, admin_headers,  # noqa: F811
                                    member_headers):
    ids = np.flatnonzero(predicted) + 1
    for elements, at_least in (("pixelmap", 1.0), ("polygons", 0.95)):
        annotator = member_headers(Role.annotator)
        exported = client.get(url(project, slide_id, "/export/annotation"), headers=admin_headers,
                              params={"source": "predictions", "elements": elements})
        # As Girder returns it: the annotation wrapped in a document.
        response = client.post(url(project, slide_id, "/import"), headers=annotator,
                               json=[{"_id": "5f0000000000000000000000", "annotation": exported.json()}])
        assert response.status_code == 200, response.text
        assert response.json()["format"] == "annotation"
        labels = slide_labels(app, slide_id, client.get("/api/v1/auth/me", headers=annotator).json()["id"])
        agree = np.mean([labels.get(int(s)) == predicted[s - 1] for s in ids])
        print(f"DSA {elements}: {agree:.1%} of {ids.size} superpixels labelled as predicted")
        assert agree >= at_least


def test_dsa_rectangles_and_ellipses(app, client, project, slide_id, centroids, admin_headers):  # noqa: F811
    document = {"name": "drawn", "elements": [
        # 400 wide, 1000 high once rotated by 90 degrees about its centre.
        {"type": "rectangle", "center": [600, 1000, 0], "width": 1000, "height": 400, "rotation": np.pi / 2,
         "group": "stroma", "lineColor": "rgb(0, 255, 0)"},
        {"type": "ellipse", "center": [1600, 2400, 0], "width": 400, "height": 400, "label": {"value": "tumour"}},
        {"type": "point", "center": [5, 5, 0], "group": "tumour"},
    ]}
    response = client.post(url(project, slide_id, "/import"), headers=admin_headers, json=document)
    assert response.status_code == 200, response.text
    x, y = centroids[:, 0], centroids[:, 1]
    ellipse = set((np.flatnonzero((x - 1600) ** 2 + (y - 2400) ** 2 < 200**2) + 1).tolist())
    ids = {c["name"]: c["id"] for c in project["categories"]}
    labels = slide_labels(app, slide_id)
    assert {s for s, c in labels.items() if c == ids["stroma"]} == inside(centroids, 400, 500, 800, 1500)
    # A 64-gon stands for the ellipse: centroids within a hair of the curve may differ.
    assert len({s for s, c in labels.items() if c == ids["tumour"]} ^ ellipse) <= 1
    assert response.json()["skipped"] == {
        "point element (only closed polylines, rectangles, ellipses, circles and pixelmaps label)": 1}


def test_unknown_categories_are_listed_or_created_by_owners(client, project, slide_id, member_headers,  # noqa: F811
                                                           admin_headers):
    document = {"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [rectangle(0, 0, 2220, 2967)]},
                {"name": "Necrosis", "color": [10, 20, 30]}),
        feature({"type": "Polygon", "coordinates": [rectangle(0, 0, 500, 500)]}, {"name": "tumour"})]}
    address = url(project, slide_id, "/import")
    response = client.post(address, headers=member_headers(Role.annotator), json=document)
    assert response.status_code == 422
    assert "'Necrosis'" in response.json()["detail"] and "'tumour', 'stroma', 'glass'" in response.json()["detail"]
    response = client.post(address, headers=member_headers(Role.annotator), json=document,
                           params={"create_categories": True})
    assert response.status_code == 403 and "owner" in response.json()["detail"]
    response = client.post(address, headers=member_headers(Role.owner), json=document,
                           params={"create_categories": True})
    assert response.status_code == 200, response.text
    assert response.json()["created_categories"] == ["Necrosis"]
    categories = client.get(f"/api/v1/projects/{project['id']}", headers=admin_headers).json()["categories"]
    assert {c["name"]: c["color"] for c in categories}["Necrosis"] == "#0a141e"


@pytest.mark.parametrize("body, message", [
    (b"QuPath export", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"42", "got a JSON int"),
    (b'{"type": "Point", "coordinates": [1, 2]}', "got a JSON object with type 'Point'"),
    (b'{"type": "FeatureCollection", "features": {}}', "'features' must be a list"),
    (b'{"type": "FeatureCollection", "features": []}', "has no features"),
    (b'[{"type": "Feature", "properties": {"classification": {"name": "tumour"}}, '
     b'"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, "a"], [2, 2]]]}}]', "feature 0: "),
    (b'[{"type": "Feature", "properties": {}, '
     b'"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 0]]]}}]', "nothing to import"),
    (b'{"elements": [{"type": "rectangle", "group": "tumour", "center": [1, 2, 0]}]}', "element 0: a rectangle needs"),
    (b'{"elements": [{"type": "pixelmap", "values": [0, 5], "categories": [{"fillColor": "#000000"}]}]}',
     "must index its 1 categories"),
    (b'{"elements": [{"type": "pixelmap", "values": [0, 1], "boundaries": false, "categories": '
     b'[{"fillColor": "#000000"}, {"label": "tumour", "fillColor": "#000000"}]}]}', "made for other superpixels"),
])
def test_bad_uploads_are_refused_with_a_message(client, project, slide_id, admin_headers, body, message):  # noqa: F811
    response = client.post(url(project, slide_id, "/import"), headers=admin_headers, content=body)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_an_imports_polygons_are_placed_outside_the_write_turn(app, client, project, slide_id, member_headers,  # noqa: F811
                                                                monkeypatch):
    """Seventh attack: an annotator's import placed 20,000 polygons inside its write transaction,
    so every write of every user of the server waited 54 s behind it."""
    from slidelabel.services import imports, shape_centroids

    turn = app.state.database._writes.kw["bind"].get_execution_options().get("write_turn")
    held: list[bool] = []
    assign = shape_centroids.assign_shapes

    def watched(*args, **kwargs):
        held.append(turn.locked() if turn is not None else False)
        return assign(*args, **kwargs)

    monkeypatch.setattr(imports, "assign_shapes", watched)
    document = {"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [rectangle(0, 0, 1100, 1500)]}, {"name": "tumour"})]}
    response = client.post(url(project, slide_id, "/import"), headers=member_headers(Role.annotator), json=document)
    assert response.status_code == 200, response.text
    assert held == [False]
