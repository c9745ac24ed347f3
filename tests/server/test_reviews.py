"""Reviews, effective labels, the review listing, bulk relabelling and agreement, through the API."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from slidelabel.services.reviews import effective_labels
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Role, Slide
from slidelabel.store.predictions import SlidePredictions, write_predictions

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py


def _slide_url(project: dict, slide_id: int, what: str) -> str:
    return f"/api/v1/projects/{project['id']}/slides/{slide_id}/{what}"


def _put(client, headers, project, slide_id, what, superpixels, category_id):
    response = client.put(_slide_url(project, slide_id, what), headers=headers,
                          json={"superpixels": superpixels, "category_id": category_id})
    assert response.status_code == 200, response.text
    return response.json()


def _listing(client, headers, project, status=200, **params):
    response = client.get(f"/api/v1/projects/{project['id']}/review", headers=headers, params=params)
    assert response.status_code == status, response.text
    return response.json()


def _user_id(client, headers) -> int:
    return client.get("/api/v1/auth/me", headers=headers).json()["id"]


def _second_slide(app, project: dict) -> int:
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name="second.svs", path="/nowhere/second.svs", width=10, height=10,
                      superpixels=50)
        session.add(slide)
        session.flush()
        return slide.id


@pytest.mark.parametrize("role, status", [(None, 404), (Role.viewer, 403), (Role.annotator, 403),
                                          (Role.reviewer, 200), (Role.owner, 200)])
def test_reviewing_needs_the_reviewer_role(client, project, member_headers, slide_row, role, status):
    headers = member_headers(role)
    tumour = project["categories"][0]["id"]
    response = client.put(_slide_url(project, slide_row, "reviews"), headers=headers,
                          json={"superpixels": [1, 2], "category_id": tumour})
    assert response.status_code == status, response.text
    response = client.post(f"/api/v1/projects/{project['id']}/review/relabel", headers=headers,
                           json={"items": [{"slide_id": slide_row, "superpixel": 3}], "category_id": tumour})
    assert response.status_code == status, response.text


def test_effective_labels_are_the_review_else_the_majority_else_the_latest(app, client, project, member_headers,
                                                                          slide_row):
    tumour, stroma, glass = (c["id"] for c in project["categories"])
    a, b, c = (member_headers(Role.annotator) for _ in range(3))
    reviewer = member_headers(Role.reviewer)
    other = _second_slide(app, project)
    _put(client, a, project, slide_row, "labels", [1, 2, 3, 5], tumour)
    _put(client, b, project, slide_row, "labels", [1], tumour)
    _put(client, c, project, slide_row, "labels", [1], stroma)  # 1: two tumour to one stroma
    _put(client, b, project, slide_row, "labels", [2, 6], stroma)  # 2: a tie, stroma the latest
    _put(client, c, project, slide_row, "labels", [6], glass)
    _put(client, b, project, slide_row, "labels", [6], tumour)  # 6: a tie; b's change makes tumour the latest
    _put(client, b, project, other, "labels", [7], glass)
    assert _put(client, reviewer, project, slide_row, "reviews", [3, 4, 5], glass) == {"changed": 3, "unchanged": 0}
    assert _put(client, reviewer, project, slide_row, "reviews", [5, 8], None) == {"changed": 1, "unchanged": 1}
    assert _put(client, reviewer, project, slide_row, "reviews", [3, 4], glass) == {"changed": 0, "unchanged": 2}

    with app.state.database.session() as session:
        effective = effective_labels(session, project["id"])
    assert set(effective) == {slide_row, other}
    superpixels, categories = effective[slide_row]
    assert superpixels.dtype == np.int64 and categories.dtype == np.int64
    assert dict(zip(superpixels.tolist(), categories.tolist())) == {
        1: tumour, 2: stroma, 3: glass, 4: glass, 5: tumour, 6: tumour}
    assert [v.tolist() for v in effective[other]] == [[7], [glass]]
    binary = client.get(_slide_url(project, slide_row, "labels.bin"), headers=a, params={"view": "effective"})
    array = np.frombuffer(binary.content, "<u4")
    assert array[1:8].tolist() == [tumour, stroma, glass, glass, tumour, tumour, 0]


def test_review_listing_filters_sorts_and_pages(app, client, project, member_headers, slide_row):
    tumour, stroma, _ = (c["id"] for c in project["categories"])
    a, b, reviewer = member_headers(Role.annotator), member_headers(Role.annotator), member_headers(Role.reviewer)
    other = _second_slide(app, project)
    _put(client, a, project, slide_row, "labels", [1, 2, 3], tumour)
    _put(client, b, project, slide_row, "labels", [3, 4], stroma)
    _put(client, b, project, other, "labels", [9], tumour)
    _put(client, reviewer, project, slide_row, "reviews", [3], stroma)

    everything = _listing(client, reviewer, project, limit=2)
    assert everything["total"] == 6 and len(everything["items"]) == 2
    assert everything["items"][0]["slide_id"] == other  # newest first
    oldest = _listing(client, reviewer, project, sort="updated_at")["items"]
    assert [(i["superpixel"], i["category_id"]) for i in oldest][:3] == [(1, tumour), (2, tumour), (3, tumour)]
    assert _listing(client, reviewer, project, offset=5)["items"][0]["superpixel"] == 1
    reviewed = _listing(client, reviewer, project, reviewed="true")
    assert reviewed["total"] == 2 and {i["reviewed_category_id"] for i in reviewed["items"]} == {stroma}
    assert _listing(client, reviewer, project, reviewed="false")["total"] == 4
    assert _listing(client, reviewer, project, slide_id=other)["total"] == 1
    mine = _listing(client, reviewer, project, user_id=_user_id(client, a), category_id=tumour)
    assert mine["total"] == 3 and {i["username"] for i in mine["items"]} == {mine["items"][0]["username"]}
    item = mine["items"][0]
    assert item["predicted_category_id"] is None and item["certainty"] is None
    for params in ({"mismatch": "true"}, {"sort": "-certainty"}):
        response = client.get(f"/api/v1/projects/{project['id']}/review", headers=reviewer, params=params)
        assert response.status_code == 422 and "no predictions yet" in response.json()["detail"]
    assert client.get(f"/api/v1/projects/{project['id']}/review", headers=reviewer,
                      params={"sort": "name"}).status_code == 422


def test_review_listing_with_the_latest_epochs_predictions(app, settings, client, project, member_headers, slide_row):
    tumour, stroma, glass = (c["id"] for c in project["categories"])
    annotator = member_headers(Role.annotator)
    other = _second_slide(app, project)
    _put(client, annotator, project, slide_row, "labels", [1, 2, 3], tumour)
    _put(client, annotator, project, other, "labels", [1], stroma)
    with app.state.database.session(write=True) as session:
        session.add_all([Epoch(project_id=project["id"], number=n) for n in (1, 2)])
    files = ProjectFiles(settings.data_dir, project["id"])
    probs = np.zeros((1000, 2), np.float32)
    probs[:3] = [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]
    write_predictions(files.predictions(2, slide_row), SlidePredictions(np.array([tumour, stroma]), probs))
    stale = np.tile([[0.0, 1.0]], (1000, 1)).astype(np.float32)
    write_predictions(files.predictions(1, slide_row), SlidePredictions(np.array([tumour, stroma]), stale))

    by_certainty = _listing(client, annotator, project, sort="-certainty")["items"]
    # Epoch 2's predictions, not epoch 1's; the second slide has none, so it sorts last.
    assert [(i["superpixel"], i["predicted_category_id"]) for i in by_certainty] == [
        (1, tumour), (2, stroma), (3, tumour), (1, None)]
    assert by_certainty[0]["certainty"] == pytest.approx(0.9, abs=1e-3)
    ascending = _listing(client, annotator, project, sort="certainty")["items"]
    assert [(i["slide_id"], i["superpixel"]) for i in ascending] == [(slide_row, 3), (slide_row, 2), (slide_row, 1),
                                                                      (other, 1)]
    mismatched = _listing(client, annotator, project, mismatch="true")
    assert mismatched["total"] == 1 and mismatched["items"][0]["superpixel"] == 2
    assert _listing(client, annotator, project, mismatch="false", limit=1)["total"] == 2
    assert glass not in {i["predicted_category_id"] for i in by_certainty}


def test_relabel_reviews_superpixels_of_several_slides(app, client, project, member_headers, slide_row):
    tumour, stroma, _ = (c["id"] for c in project["categories"])
    annotator, reviewer = member_headers(Role.annotator), member_headers(Role.reviewer)
    other = _second_slide(app, project)
    _put(client, annotator, project, slide_row, "labels", [1, 2], tumour)
    _put(client, annotator, project, other, "labels", [5], tumour)
    url = f"/api/v1/projects/{project['id']}/review/relabel"
    items = [{"slide_id": slide_row, "superpixel": 1}, {"slide_id": other, "superpixel": 5},
             {"slide_id": slide_row, "superpixel": 1}]
    response = client.post(url, headers=reviewer, json={"items": items, "category_id": stroma})
    assert response.status_code == 200 and response.json() == {"changed": 2, "unchanged": 0}
    reviewed = _listing(client, reviewer, project, reviewed="true")["items"]
    assert {(i["slide_id"], i["superpixel"], i["reviewed_category_id"]) for i in reviewed} == {
        (slide_row, 1, stroma), (other, 5, stroma)}
    # A bad item refuses the whole request: nothing of it is written.
    bad = [{"slide_id": slide_row, "superpixel": 2}, {"slide_id": other, "superpixel": 51}]
    response = client.post(url, headers=reviewer, json={"items": bad, "category_id": stroma})
    assert response.status_code == 422 and "1..50" in response.json()["detail"]
    assert _listing(client, reviewer, project, reviewed="true")["total"] == 2
    response = client.post(url, headers=reviewer, json={"items": [{"slide_id": 999, "superpixel": 1}],
                                                        "category_id": stroma})
    assert response.status_code == 404


def test_agreement_between_labellers(client, project, member_headers, slide_row):
    tumour, stroma, glass = (c["id"] for c in project["categories"])
    a, b, c = (member_headers(Role.annotator) for _ in range(3))
    rng = np.random.default_rng(3)
    first = rng.choice([tumour, stroma, glass], size=300)
    second = np.where(rng.random(300) < 0.7, first, rng.choice([tumour, stroma], size=300))
    for headers, ratings, offset in ((a, first, 0), (b, second, 0)):
        for category in (tumour, stroma, glass):
            ids = (np.flatnonzero(ratings == category) + 1 + offset).tolist()
            _put(client, headers, project, slide_row, "labels", ids, category)
    _put(client, c, project, slide_row, "labels", [999, 1000], tumour)
    _put(client, a, project, slide_row, "labels", [1000], tumour)

    response = client.get(f"/api/v1/projects/{project['id']}/agreement", headers=c)
    assert response.status_code == 200, response.text
    agreement = response.json()
    assert agreement["categories"] == [tumour, stroma, glass]
    counts = {u["user_id"]: u["labels"] for u in agreement["users"]}
    ids = [_user_id(client, h) for h in (a, b, c)]
    assert [counts[i] for i in ids] == [301, 300, 2]
    pairs = {(p["first_user_id"], p["second_user_id"]): p for p in agreement["pairs"]}
    assert set(pairs) == {(ids[0], ids[1]), (ids[0], ids[2])}  # b and c share no superpixel
    ab = pairs[(ids[0], ids[1])]
    assert ab["common"] == 300 and ab["agreed"] == int((first == second).sum())
    assert ab["kappa"] == pytest.approx(cohen_kappa_score(first, second))
    assert np.array(ab["confusion"]).sum() == 300 and np.array(ab["confusion"])[2, 2] == int(
        ((first == glass) & (second == glass)).sum())
    ac = pairs[(ids[0], ids[2])]
    assert ac["common"] == 1 and ac["kappa"] is None  # one shared superpixel, one category: undefined
