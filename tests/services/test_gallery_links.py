"""Gallery links in the service: only owners publish, the token is shown once and stored as its
hash, a link opens its own project's chosen slides only, revoked and unknown tokens get one
answer, and the overlay is the slide's effective labels or the latest epoch's predictions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, text

from slidelabel.errors import NotFoundError, PermissionDeniedError
from slidelabel.services import gallery, labels, reviews
from slidelabel.services.access import Action, check_access
from slidelabel.services.accounts import create_user
from slidelabel.services.projects import NewCategory, create_project, set_member
from slidelabel.store.database import Database, migrate
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, GalleryLink, GalleryOverlay, Project, Role, Slide, User
from slidelabel.store.predictions import SlidePredictions, write_predictions

N = 1000


@pytest.fixture
def database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'slidelabel.sqlite'}")
    migrate(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def world(database: Database, cmu_slide: Path) -> dict:
    """Two projects of one owner, each with two slide rows on the CMU sample (N superpixels, no
    files), and an annotator of the first."""
    with database.session(write=True) as session:
        owner = create_user(session, "owner", "owner-password")
        annotator = create_user(session, "annotator", "annotator-password")
        ids: dict = {"owner": owner.id, "annotator": annotator.id}
        for name in ("shared", "private"):
            project = create_project(session, owner, name, categories=[NewCategory("tumour"), NewCategory("stroma")])
            slides = [Slide(project_id=project.id, name=f"{name}-{k}.svs", path=str(cmu_slide), width=2220,
                            height=2967, mpp=0.499, superpixels=N) for k in (1, 2)]
            session.add_all(slides)
            session.flush()
            ids[name] = {"id": project.id, "slides": [s.id for s in slides],
                         "categories": [c.id for c in project.categories]}
        set_member(session, session.get(Project, ids["shared"]["id"]), "annotator", Role.annotator)
    return ids


def _access(session, user_id: int, project_id: int):
    return check_access(session, session.get(User, user_id), project_id, Action.view)


def _publish(database: Database, world: dict, **options) -> gallery.Published:
    with database.session(write=True) as session:
        return gallery.publish(session, _access(session, world["owner"], world["shared"]["id"]), **options)


def test_only_an_owner_publishes_and_the_token_is_stored_as_its_hash(database, world):
    with database.session(write=True) as session:
        access = _access(session, world["annotator"], world["shared"]["id"])
        with pytest.raises(PermissionDeniedError, match="only an owner"):
            gallery.publish(session, access, overlay=GalleryOverlay.labels)
    published = _publish(database, world, overlay=GalleryOverlay.labels)
    assert len(published.token) >= 43  # 32 random bytes, URL-safe base64
    with database.engine.connect() as connection:
        rows = [tuple(map(str, row)) for row in connection.execute(text("SELECT * FROM gallery_links"))]
    assert rows and not any(published.token in value for row in rows for value in row)
    assert rows[0][2] == hashlib.sha256(published.token.encode()).hexdigest()


def test_a_link_opens_its_chosen_slides_of_its_own_project_only(database, world):
    first, second = world["shared"]["slides"]
    everything = _publish(database, world, overlay=GalleryOverlay.labels)
    chosen = _publish(database, world, overlay=GalleryOverlay.predictions, slide_ids=[second, second])
    with database.session() as session:
        assert [s.id for s in gallery.resolve(session, everything.token).slides] == [first, second]
        view = gallery.resolve(session, chosen.token)
        assert view.project.name == "shared" and view.overlay == GalleryOverlay.predictions
        assert [s.id for s in view.slides] == [second] and view.link.slide_ids == [second]
        for other in [first, *world["private"]["slides"]]:
            with pytest.raises(NotFoundError, match=f"no slide {other} in this gallery"):
                view.slide(other)
    with database.session(write=True) as session, pytest.raises(NotFoundError, match="no slide"):
        gallery.publish(session, _access(session, world["owner"], world["shared"]["id"]),
                        overlay=GalleryOverlay.labels, slide_ids=[world["private"]["slides"][0]])


def test_revoked_and_unknown_tokens_get_the_same_answer(database, world):
    published = _publish(database, world, overlay=GalleryOverlay.labels)
    with database.session(write=True) as session:
        with pytest.raises(NotFoundError, match="no gallery link"):
            gallery.revoke(session, project_id=world["private"]["id"], link_id=published.link.id)
        revoked = gallery.revoke(session, project_id=world["shared"]["id"], link_id=published.link.id)
        assert revoked.revoked_at is not None
    with database.session() as session:
        answers = []
        for token in (published.token, published.token[:-1] + "A", "", "x" * 300):
            with pytest.raises(NotFoundError) as error:
                gallery.resolve(session, token)
            answers.append(str(error.value))
        assert set(answers) == {gallery.UNKNOWN}
        assert [link.id for link in gallery.links_of(session, world["shared"]["id"])] == [published.link.id]


def test_the_overlay_is_the_effective_labels_or_the_latest_predictions(database, world, tmp_path):
    project = world["shared"]
    tumour, stroma = project["categories"]
    slide_id = project["slides"][0]
    with database.session(write=True) as session:
        slide = session.get(Slide, slide_id)
        labels.set_labels(session, slide, world["owner"], [1, 2, 3], tumour)
        labels.set_labels(session, slide, world["annotator"], [3], stroma)
        reviews.set_reviews(session, slide, world["owner"], [2], stroma)
    labelled = _publish(database, world, overlay=GalleryOverlay.labels)
    predicted = _publish(database, world, overlay=GalleryOverlay.predictions)
    with database.session() as session:
        view = gallery.resolve(session, labelled.token)
        found = gallery.slide_overlay(session, tmp_path, view, slide_id)
        values = np.frombuffer(found.content, "<u4")
        assert found.epoch is None and values.size == N + 1
        # 2 is reviewed as stroma; 3 is a tie of one label each: the latest (stroma) wins.
        assert values[:5].tolist() == [0, tumour, stroma, stroma, 0] and np.count_nonzero(values) == 3
        with pytest.raises(NotFoundError, match="no epoch"):
            gallery.slide_overlay(session, tmp_path, gallery.resolve(session, predicted.token), slide_id)
    rng = np.random.default_rng(0)
    probs_N_C = rng.dirichlet([1.0, 1.0], N).astype(np.float32)
    with database.session(write=True) as session:
        session.add_all([Epoch(project_id=project["id"], number=k, labels=10 * k,
                               metrics={"cv_balanced_accuracy": 0.5 + k / 10, "seconds": {"train": 1.0}})
                         for k in (1, 2)])
    write_predictions(ProjectFiles(tmp_path, project["id"]).predictions(2, slide_id),
                      SlidePredictions(np.array([tumour, stroma]), probs_N_C))
    with database.session() as session:
        view = gallery.resolve(session, predicted.token)
        found = gallery.slide_overlay(session, tmp_path, view, slide_id)
        expected = np.array([tumour, stroma])[probs_N_C.argmax(axis=1)]
        assert found.epoch == 2 and np.frombuffer(found.content, "<u4")[1:].tolist() == expected.tolist()
        figures = gallery.figure_epochs(session, project["id"])
        assert [(e.number, m) for e, m in figures] == [(1, {"cv_balanced_accuracy": 0.6}),
                                                         (2, {"cv_balanced_accuracy": 0.7})]


def test_a_deleted_project_takes_its_links_with_it(database, world):
    published = _publish(database, world, overlay=GalleryOverlay.labels)
    with database.session(write=True) as session:
        session.delete(session.get(Project, world["shared"]["id"]))
    with database.session() as session:
        assert session.scalars(select(GalleryLink)).all() == []
        with pytest.raises(NotFoundError, match="revoked or never existed"):
            gallery.resolve(session, published.token)
