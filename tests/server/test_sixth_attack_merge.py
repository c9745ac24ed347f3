"""Sixth attack F9: merging a category of 1,322,148 labels took 423 s and +4.86 GB in the API.

``merge_categories`` loaded every label of the category as an ORM object and added one ORM
``LabelEvent`` per label, in one write transaction: on SQLite every other write of the server
waited behind it and got 503 after 60 s. It now writes the history with one ``INSERT ... SELECT``
and moves the labels and reviews with one ``UPDATE`` each, so its memory does not grow with the
labels and the write turn is held seconds.

The first test pins what a merge did before the change, row by row, on a small project whose
users' labels and reviews overlap in both categories.
"""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from slidelabel.services.accounts import create_user
from slidelabel.services.labels import locked_slide, set_labels
from slidelabel.services.projects import merge_categories
from slidelabel.store.models import Category, Label, LabelEvent, Review, User

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

API = "/api/v1"
#: Labels in the merged category of the memory test.
MANY = 200_000
#: Most Python memory the merge of :data:`MANY` labels may take (the ORM one took hundreds of MB).
MEMORY_BOUND_MB = 50


def _rows(session, model, *columns) -> list[tuple]:
    return sorted(tuple(row) for row in session.execute(select(*(getattr(model, c) for c in columns))))


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _labelled_project(app, project: dict, slide_id: int) -> dict[str, int]:
    """Two annotators and the admin labelling overlapping superpixels in tumour, stroma and glass
    (relabels and a removal in the history) and three reviews; ids by name."""
    tumour, stroma, glass = (c["id"] for c in project["categories"])
    with app.state.database.session(write=True) as session:
        ann = create_user(session, "ann", "user-password").id
        bob = create_user(session, "bob", "user-password").id
        admin = session.scalar(select(User.id).where(User.username == "admin"))
        slide = locked_slide(session, project["id"], slide_id)
        for user, superpixels, category, epoch in [
            (ann, [1, 2, 3, 4, 5], tumour, 0), (ann, [3, 4], stroma, 1), (ann, [6, 7], stroma, 1),
            (ann, [8], glass, 2), (ann, [9], tumour, 3),
            (bob, [1, 2, 3], stroma, 0), (bob, [4, 5, 6, 10], tumour, 1), (bob, [10], None, 2),
            (admin, [2, 4, 11], tumour, 4),
        ]:
            set_labels(session, slide, user, superpixels, category, epoch=epoch)
        for superpixel, category in [(1, tumour), (2, stroma), (7, tumour)]:
            session.add(Review(project_id=project["id"], slide_id=slide_id, superpixel=superpixel, reviewer_id=admin,
                               category_id=category))
    return {"tumour": tumour, "stroma": stroma, "glass": glass}


LABEL_COLUMNS = ("id", "project_id", "slide_id", "user_id", "superpixel", "category_id", "epoch", "updated_at")
EVENT_COLUMNS = ("id", "project_id", "slide_id", "user_id", "superpixel", "category_id", "previous_category_id",
                 "epoch", "at")
REVIEW_COLUMNS = ("id", "project_id", "slide_id", "superpixel", "reviewer_id", "category_id", "at")


def test_a_merge_moves_labels_and_reviews_and_writes_the_history_as_before(app, client, admin_headers, project,
                                                                        slide_row):
    ids = _labelled_project(app, project, slide_row)
    tumour, stroma = ids["tumour"], ids["stroma"]
    database = app.state.database
    with database.session() as session:
        labels = _rows(session, Label, *LABEL_COLUMNS)
        events = _rows(session, LabelEvent, *EVENT_COLUMNS)
        reviews = _rows(session, Review, *REVIEW_COLUMNS)
        categories = _rows(session, Category, "id", "name", "color", "hotkey", "excluded", "position")
    before = datetime.now(UTC)
    response = client.post(f"{API}/projects/{project['id']}/categories/{tumour}/merge", headers=admin_headers,
                           json={"into": stroma})
    after = datetime.now(UTC)
    assert response.status_code == 200, response.text
    moved = [label for label in labels if label[5] == tumour]
    assert response.json() == {"moved_labels": len(moved)} and len(moved) == 10

    def into(category_id: int | None) -> int | None:
        return stroma if category_id == tumour else category_id

    def gone(category_id: int | None) -> int | None:  # the source's foreign keys in the history: SET NULL
        return None if category_id == tumour else category_id

    with database.session() as session:
        # Labels: the category changes; id, epoch and updated_at stay.
        assert _rows(session, Label, *LABEL_COLUMNS) == [(*l[:5], into(l[5]), *l[6:]) for l in labels]
        assert _rows(session, Review, *REVIEW_COLUMNS) == [(*r[:5], into(r[5]), r[6]) for r in reviews]
        assert _rows(session, Category, "id", "name", "color", "hotkey", "excluded", "position") == [
            c for c in categories if c[0] != tumour]
        history = _rows(session, LabelEvent, *EVENT_COLUMNS)
    old, new = history[:len(events)], history[len(events):]
    assert old == [(*e[:5], gone(e[5]), gone(e[6]), *e[7:]) for e in events]
    # One event per moved label, after every older one: into the target, its previous category
    # the deleted source (so NULL), the label's epoch, the time of the merge.
    assert sorted(e[1:8] for e in new) == sorted((*l[1:5], stroma, None, l[6]) for l in moved)
    assert all(before <= _utc(e[8]) <= after for e in new)


def _insert_many(session, project_id: int, slide_id: int, users: list[int], source: int, target: int) -> None:
    """:data:`MANY` labels in ``source`` split between ``users``, a tenth as many in ``target``
    and as many reviews of ``source``, written with set-based SQL."""
    series = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
    insert = series + ("INSERT INTO labels (project_id, slide_id, user_id, superpixel, category_id, epoch, updated_at) "
                       "SELECT :project, :slide, :user, :offset + i, :category, 1, :now FROM n")
    values = {"project": project_id, "slide": slide_id, "now": datetime.now(UTC)}
    each = MANY // len(users)
    for user in users:
        session.execute(text(insert), {**values, "user": user, "count": each, "offset": 0, "category": source})
        session.execute(text(insert), {**values, "user": user, "count": each // 10, "offset": each, "category": target})
    session.execute(text(series + "INSERT INTO reviews (project_id, slide_id, superpixel, reviewer_id, category_id, at) "
                                  "SELECT :project, :slide, i, :user, :category, :now FROM n"),
                    {**values, "user": users[0], "count": MANY // 10, "category": source})
    session.execute(text("UPDATE slides SET superpixels = :count WHERE id = :slide"), {**values, "count": MANY})


def test_merging_200000_labels_takes_memory_independent_of_their_number(app, project, slide_row):
    tumour, stroma = project["categories"][0]["id"], project["categories"][1]["id"]
    database = app.state.database
    with database.session(write=True) as session:
        users = [create_user(session, name, "user-password").id for name in ("ann", "bob")]
        _insert_many(session, project["id"], slide_row, users, tumour, stroma)
    tracemalloc.start()
    try:
        with database.session(write=True) as session:
            admin = session.scalar(select(User).where(User.username == "admin"))
            moved = merge_categories(session, session.get(Category, tumour), session.get(Category, stroma), admin)
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert moved == MANY
    assert peak_mb < MEMORY_BOUND_MB, f"the merge of {MANY:,} labels peaked at {peak_mb:.0f} MB of Python memory"
    with database.session() as session:
        counts = dict(session.execute(select(Label.category_id, func.count()).group_by(Label.category_id)).all())
        assert counts == {stroma: MANY + MANY // 10}
        assert session.scalar(select(func.count()).select_from(Review).where(Review.category_id == stroma)) == MANY // 10
        events = session.execute(select(LabelEvent.category_id, LabelEvent.previous_category_id, func.count())
                                 .group_by(LabelEvent.category_id, LabelEvent.previous_category_id)).all()
        assert [tuple(e) for e in events] == [(stroma, None, MANY)]
        assert session.get(Category, tumour) is None
