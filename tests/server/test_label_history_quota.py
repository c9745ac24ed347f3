"""The label history has a quota per user and slide: a script flipping every superpixel's label
again and again (about 22 GB of history an hour before) keeps only its newest changes, while the
current labels, undo (the newest events) and other users' histories are untouched."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from slidelabel.services import label_history
from slidelabel.store.models import LabelEvent, LabelHistorySize, Role

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

SUPERPIXELS = 1000  # the slide_row fixture's


def _events(app, slide_id: int, user_id: int) -> tuple[int, int]:
    """``(events stored, events counted)`` of one user's history of a slide."""
    with app.state.database.session() as session:
        stored = session.scalar(select(func.count()).select_from(LabelEvent)
                                .where(LabelEvent.slide_id == slide_id, LabelEvent.user_id == user_id))
        counted = session.get(LabelHistorySize, (slide_id, user_id))
        return stored, counted.events if counted else 0


def test_a_flipping_annotators_history_stays_within_its_quota(app, client, monkeypatch, project, member_headers,
                                                               slide_row):
    monkeypatch.setattr(label_history, "HISTORY_SLACK", 0)
    quota = label_history.TRIM_FACTOR * SUPERPIXELS
    flipper, honest = member_headers(Role.annotator), member_headers(Role.annotator)
    ids = {name: client.get("/api/v1/auth/me", headers=headers).json()["id"]
           for name, headers in (("flipper", flipper), ("honest", honest))}
    tumour, stroma = (category["id"] for category in project["categories"][:2])
    url = f"/api/v1/projects/{project['id']}/slides/{slide_row}/labels"
    assert client.put(url, headers=honest, json={"superpixels": [1, 2, 3], "category_id": tumour}).status_code == 200

    written = 0
    for flip in range(7):
        category = (tumour, stroma)[flip % 2]
        response = client.put(url, headers=flipper, json={"superpixels": list(range(1, SUPERPIXELS + 1)),
                                                          "category_id": category})
        assert response.status_code == 200, response.text
        written += response.json()["changed"]
        stored, counted = _events(app, slide_row, ids["flipper"])
        assert stored == counted <= quota, f"after flip {flip}: {stored} events stored, {counted} counted"
    assert written == 7 * SUPERPIXELS
    assert stored >= SUPERPIXELS, "the trim deleted more than the quota's kept part"
    assert _events(app, slide_row, ids["honest"]) == (3, 3)

    newest = client.get(f"/api/v1/projects/{project['id']}/labels/history",
                        headers=flipper, params={"slide_id": slide_row, "limit": SUPERPIXELS}).json()
    assert {event["category_id"] for event in newest} == {tumour}, "undo lost the newest changes"
    labels = client.get(url, headers=flipper).json()
    assert len(labels) == SUPERPIXELS and {label["category_id"] for label in labels} == {tumour}


def test_a_merge_counts_and_trims_each_users_history_as_strokes_do(app, client, monkeypatch, project, admin_headers,
                                                                   member_headers, slide_row):
    """A category merge writes one event per moved label in the name of the label's user: they
    count against that user's quota of the slide, and trim it, as a stroke's do (before, 3000
    events were stored and 2000 counted against a quota of 2000)."""
    monkeypatch.setattr(label_history, "HISTORY_SLACK", 0)
    quota = label_history.TRIM_FACTOR * SUPERPIXELS
    annotator, other = member_headers(Role.annotator), member_headers(Role.annotator)
    ids = [client.get("/api/v1/auth/me", headers=headers).json()["id"] for headers in (annotator, other)]
    tumour, stroma, glass = (category["id"] for category in project["categories"][:3])
    base = f"/api/v1/projects/{project['id']}"
    url = f"{base}/slides/{slide_row}/labels"
    everything = list(range(1, SUPERPIXELS + 1))
    for category in (tumour, stroma):  # exactly the quota: not trimmed yet
        assert client.put(url, headers=annotator, json={"superpixels": everything, "category_id": category}
                          ).json()["changed"] == SUPERPIXELS
    assert client.put(url, headers=other, json={"superpixels": [1, 2, 3], "category_id": stroma}).status_code == 200
    assert _events(app, slide_row, ids[0]) == (quota, quota)

    response = client.post(f"{base}/categories/{stroma}/merge", headers=admin_headers, json={"into": glass})
    assert response.status_code == 200, response.text
    assert response.json() == {"moved_labels": SUPERPIXELS + 3}

    stored, counted = _events(app, slide_row, ids[0])
    assert stored == counted <= quota, f"after the merge: {stored} events stored, {counted} counted"
    assert stored >= SUPERPIXELS, "the trim deleted more than the quota's kept part"
    assert _events(app, slide_row, ids[1]) == (6, 6)  # three strokes, three moves
    newest = client.get(f"{base}/labels/history", headers=annotator,
                        params={"slide_id": slide_row, "limit": SUPERPIXELS}).json()
    assert {event["category_id"] for event in newest} == {glass}, "the trim lost the merge's events"
