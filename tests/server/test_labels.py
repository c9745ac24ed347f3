"""Labels through the HTTP API: batches, validation, roles, history, the binary array, counts."""

from __future__ import annotations

import time

import numpy as np
import pytest

from slidelabel.store.models import Role, Slide

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py


def _url(project: dict, slide_id: int, what: str = "labels") -> str:
    return f"/api/v1/projects/{project['id']}/slides/{slide_id}/{what}"


def _categories(project: dict) -> tuple[int, int, int]:
    tumour, stroma, glass = (c["id"] for c in project["categories"])
    return tumour, stroma, glass


def _put(client, headers, project, slide_id, superpixels, category_id, **extra):
    response = client.put(_url(project, slide_id), headers=headers,
                          json={"superpixels": superpixels, "category_id": category_id, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def _history(client, headers, project, **params):
    response = client.get(f"/api/v1/projects/{project['id']}/labels/history", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_only_changes_enter_the_history(client, project, member_headers, slide_row):
    tumour, stroma, _ = _categories(project)
    headers = member_headers(Role.annotator)
    assert _put(client, headers, project, slide_row, [1, 2, 3], tumour, epoch=2) == {"changed": 3, "unchanged": 0}
    assert _put(client, headers, project, slide_row, [2, 3, 4, 4], tumour) == {"changed": 1, "unchanged": 2}
    assert _put(client, headers, project, slide_row, [3], stroma) == {"changed": 1, "unchanged": 0}
    assert _put(client, headers, project, slide_row, [1, 5], None) == {"changed": 1, "unchanged": 1}

    events = _history(client, headers, project, slide_id=slide_row)
    assert [(e["superpixel"], e["previous_category_id"], e["category_id"]) for e in events] == [
        (1, tumour, None), (3, tumour, stroma), (4, None, tumour), (3, None, tumour), (2, None, tumour),
        (1, None, tumour)]
    assert events[-1]["epoch"] == 2 and events[0]["epoch"] == 0
    assert len(_history(client, headers, project, limit=2)) == 2
    labels = client.get(_url(project, slide_row), headers=headers).json()
    assert [(label["superpixel"], label["category_id"]) for label in labels] == [(2, tumour), (3, stroma), (4, tumour)]


@pytest.mark.parametrize("role, status", [(None, 404), (Role.viewer, 403), (Role.annotator, 200),
                                          (Role.reviewer, 200), (Role.owner, 200)])
def test_labelling_needs_the_annotator_role(client, project, member_headers, slide_row, role, status):
    response = client.put(_url(project, slide_row), headers=member_headers(role),
                          json={"superpixels": [1], "category_id": _categories(project)[0]})
    assert response.status_code == status, response.text


def test_bad_batches_are_refused_with_a_reason(app, client, project, admin_headers, slide_row):
    tumour, _, glass = _categories(project)
    for superpixels, text in (([0, 5], "superpixel 0"), ([5, 1001], "1..1000")):
        response = client.put(_url(project, slide_row), headers=admin_headers,
                              json={"superpixels": superpixels, "category_id": tumour})
        assert response.status_code == 422 and text in response.json()["detail"]
    response = client.put(_url(project, slide_row), headers=admin_headers,
                          json={"superpixels": [1], "category_id": 999})
    assert response.status_code == 422 and "category 999" in response.json()["detail"]
    assert client.put(_url(project, 999), headers=admin_headers,
                      json={"superpixels": [1], "category_id": tumour}).status_code == 404
    # Glass and artefacts are marked like any category; training leaves them out.
    assert _put(client, admin_headers, project, slide_row, [7], glass) == {"changed": 1, "unchanged": 0}
    with app.state.database.session(write=True) as session:
        fresh = Slide(project_id=project["id"], name="fresh.svs", path="/nowhere/fresh.svs", width=10, height=10)
        session.add(fresh)
        session.flush()
        fresh_id = fresh.id
    response = client.put(_url(project, fresh_id), headers=admin_headers,
                          json={"superpixels": [1], "category_id": tumour})
    assert response.status_code == 409 and "no superpixels yet" in response.json()["detail"]
    assert client.get(_url(project, fresh_id, "labels.bin"), headers=admin_headers).status_code == 409


def test_a_brush_of_5000_superpixels_is_one_quick_request(app, client, project, admin_headers):
    tumour, stroma, _ = _categories(project)
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name="big.svs", path="/nowhere/big.svs", width=10, height=10,
                      superpixels=50_000)
        session.add(slide)
        session.flush()
        slide_id = slide.id
    brush = np.random.default_rng(0).choice(np.arange(1, 50_001), size=5_000, replace=False).tolist()
    start = time.perf_counter()
    assert _put(client, admin_headers, project, slide_id, brush, tumour) == {"changed": 5000, "unchanged": 0}
    first = time.perf_counter() - start
    start = time.perf_counter()
    assert _put(client, admin_headers, project, slide_id, brush, stroma) == {"changed": 5000, "unchanged": 0}
    again = time.perf_counter() - start
    print(f"\n5,000-superpixel brush on {app.state.database.engine.dialect.name}: "
          f"new labels {first * 1000:.0f} ms, relabel {again * 1000:.0f} ms")
    assert first < 5 and again < 5
    assert len(_history(client, admin_headers, project, slide_id=slide_id, limit=10_000)) == 10_000
    array = np.frombuffer(client.get(_url(project, slide_id, "labels.bin"), headers=admin_headers).content, "<u4")
    assert array.size == 50_001 and (array[brush] == stroma).all() and np.count_nonzero(array) == 5000


def test_binary_array_holds_the_callers_labels_or_the_effective_ones(client, project, member_headers, slide_row):
    tumour, stroma, glass = _categories(project)
    first, second = member_headers(Role.annotator), member_headers(Role.reviewer)
    _put(client, first, project, slide_row, [1, 2, 1000], tumour)
    _put(client, second, project, slide_row, [2, 3], stroma)
    response = client.get(_url(project, slide_row, "labels.bin"), headers=first)
    assert response.headers["content-type"] == "application/octet-stream"
    mine = np.frombuffer(response.content, dtype="<u4")
    assert mine.size == 1001 and mine[[0, 1, 2, 3, 1000]].tolist() == [0, tumour, tumour, 0, tumour]
    assert np.count_nonzero(mine) == 3
    review = client.put(_url(project, slide_row, "reviews"), headers=second,
                        json={"superpixels": [1], "category_id": glass})
    assert review.status_code == 200
    effective = np.frombuffer(client.get(_url(project, slide_row, "labels.bin"), headers=first,
                                         params={"view": "effective"}).content, dtype="<u4")
    # 1: the review wins; 2: one vote each, the latest (stroma) wins; 3 and 1000: single labels.
    assert effective[[1, 2, 3, 1000]].tolist() == [glass, stroma, stroma, tumour]
    assert np.count_nonzero(effective) == 4


def test_labels_of_other_users_and_the_summary(client, project, member_headers, slide_row):
    tumour, stroma, _ = _categories(project)
    first, second = member_headers(Role.annotator), member_headers(Role.annotator)
    first_id = client.get("/api/v1/auth/me", headers=first).json()["id"]
    _put(client, first, project, slide_row, [1, 2, 3], tumour)
    _put(client, second, project, slide_row, [3, 4], stroma)
    everyone = client.get(_url(project, slide_row), headers=second, params={"user": "all"}).json()
    assert len(everyone) == 5
    theirs = client.get(_url(project, slide_row), headers=second, params={"user": str(first_id)}).json()
    assert {label["user_id"] for label in theirs} == {first_id} and len(theirs) == 3
    assert client.get(_url(project, slide_row), headers=second, params={"user": "bob"}).status_code == 422
    summary = client.get(f"/api/v1/projects/{project['id']}/labels/summary", headers=second).json()
    assert [(c["category_id"], c["labels"], c["reviews"]) for c in summary["categories"]] == [
        (tumour, 3, 0), (stroma, 2, 0), (project["categories"][2]["id"], 0, 0)]
    counts = {u["user_id"]: (u["labels"], u["by_category"]) for u in summary["users"]}
    assert counts[first_id] == (3, {str(tumour): 3})
