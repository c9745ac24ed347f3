"""Seventh attack on issue 13: ``GET .../labels?user=all`` made an ORM object and a response
model per label: 843,580 labels (20 users on every superpixel of a slide) took 1.9 GB and 37 s
a request, two at a time. The JSON is now written a chunk of plain rows at a time."""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from slidelabel.server.schemas.labels import LabelPublic
from slidelabel.store.models import Label, Role, User

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

USERS, SUPERPIXELS = 5, 12_000


@pytest.fixture
def many_labels(app, project, slide_row, member_headers):
    """Every one of ``USERS`` annotators' label on each of ``SUPERPIXELS`` superpixels."""
    for _ in range(USERS):
        member_headers(Role.annotator)
    tumour = project["categories"][0]["id"]
    with app.state.database.session(write=True) as session:
        users = [user.id for user in session.query(User).order_by(User.id)][-USERS:]
        now = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)
        session.execute(insert(Label), [
            {"project_id": project["id"], "slide_id": slide_row, "user_id": user, "superpixel": superpixel,
             "category_id": tumour, "epoch": 0, "updated_at": now}
            for superpixel in range(1, SUPERPIXELS + 1) for user in users])
    return USERS * SUPERPIXELS


def test_every_label_of_a_slide_comes_as_before_in_memory_of_the_answers_size(app, client, project, slide_row,
                                                                             member_headers, many_labels):
    viewer = member_headers(Role.viewer)
    url = f"/api/v1/projects/{project['id']}/slides/{slide_row}/labels?user=all"
    tracemalloc.start()
    try:
        response = client.get(url, headers=viewer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    listed = response.json()
    assert len(listed) == many_labels
    assert [(label["superpixel"], label["user_id"]) for label in listed] == sorted(
        (label["superpixel"], label["user_id"]) for label in listed)
    with app.state.database.session() as session:
        first = session.query(Label).filter_by(slide_id=slide_row).order_by(Label.superpixel, Label.user_id).first()
        assert listed[0] == json.loads(LabelPublic.model_validate(first).model_dump_json())
    assert peak < 8 * len(response.content), f"{peak / 2**20:.0f} MB traced for a {len(response.content) / 2**20:.0f} MB answer"
