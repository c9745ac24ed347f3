"""A category merge writes one label-history event per moved label, in the name of the label's
user: those events count against that user's history quota of the slide, and trim it, as a
labelling stroke's do (before, a merge wrote them uncounted, so a history could grow past its
quota and the count no longer matched what was stored)."""

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


def test_a_merge_counts_and_trims_each_users_history_as_strokes_do(app, client, monkeypatch, project, admin_headers,
                                                                   member_headers, slide_row):
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
