"""Where the plugin records which Girder documents stand for which slidelabel rows.

The links are fields of Girder documents that Girder's REST API never lets a user write (unlike
``meta``), so nobody can point a folder at another project to gain its role:

- a folder's :data:`PROJECT_LINK`: the slidelabel project labelled on the folder's items;
- an item's :data:`SLIDE_LINK`: its slide in that project;
- an item's :data:`SUPERPIXELS_OF`: the id of the slide item whose superpixel image it holds
  (for the ``pixelmap`` element of exported annotations); such items are never slides.

Girder's copies keep a document's fields, so a reader's own copy of a project's folder (of which
it is admin) or of a slide item would carry the link too. A link therefore also records the id
of the document it was made on (:data:`LINKED_ON`), and holds only there: a project has one
folder, a slide one item, and a copy (a new id) stands for nothing (:func:`project_of`,
:func:`slide_of`).

Links made before :data:`LINKED_ON` are marked once, at Girder's start (:func:`ensure_indexes`),
on the one document older than the row the link names: a folder exists before the project made
on it and an item before the slide added from it, while any copy is made after the link. Where
no such document is left (the original was deleted and only copies remain) or several are, none
is marked, so none grants anything, and a warning names the project or slide.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from girder.models.folder import Folder
from girder.models.item import Item
from sqlalchemy.orm import InstrumentedAttribute

from slidelabel.store.database import Database
from slidelabel.store.models import Project, Slide

logger = logging.getLogger(__name__)

PROJECT_LINK = "slidelabelProjectId"
SLIDE_LINK = "slidelabelSlideId"
SUPERPIXELS_OF = "slidelabelSuperpixelsOf"
#: The id of the document a link was made on.
LINKED_ON = "slidelabelLinkedOn"


def _linked(document: dict, field: str) -> int | None:
    return document.get(field) if document.get(LINKED_ON) == document["_id"] else None


def project_of(folder: dict) -> int | None:
    """The project of ``folder``; None for a folder without one and for a copy of a project's folder."""
    return _linked(folder, PROJECT_LINK)


def slide_of(item: dict) -> int | None:
    """The slide of ``item``; None for an item that is none and for a copy of a slide's item."""
    return _linked(item, SLIDE_LINK)


def link_folder(folder: dict, project_id: int) -> None:
    Folder().update({"_id": folder["_id"]}, {"$set": {PROJECT_LINK: project_id, LINKED_ON: folder["_id"]}})


def link_item(item: dict, slide_id: int) -> None:
    Item().update({"_id": item["_id"]}, {"$set": {SLIDE_LINK: slide_id, LINKED_ON: item["_id"]}})


def linked_folders(project_id: int | None = None) -> list[dict]:
    """The folders of Girder-linked projects (of ``project_id`` only: at most one)."""
    query = {PROJECT_LINK: {"$exists": True} if project_id is None else project_id}
    return [folder for folder in Folder().find(query) if project_of(folder) is not None]


def linked_folder(project_id: int) -> dict | None:
    """The Girder folder of a slidelabel project, or None for a project made outside Girder."""
    return next(iter(linked_folders(project_id)), None)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _mark_old_links(database: Database, model, field: str, made_at: InstrumentedAttribute[datetime]) -> None:
    """Mark each link made before :data:`LINKED_ON` on the one document carrying it that was made
    before the row it names (``made_at``: the project's or slide's time of creation); leave it
    unmarked where none or several were, with a warning: a copy left where the original was
    deleted grants nothing."""
    marked = {doc[field] for doc in model.find({field: {"$exists": True}, LINKED_ON: {"$exists": True}})}
    unmarked: dict[object, list[dict]] = {}
    for doc in model.find({field: {"$exists": True}, LINKED_ON: {"$exists": False}}):
        if doc[field] not in marked:
            unmarked.setdefault(doc[field], []).append(doc)
    if not unmarked:
        return
    with database.session() as session:
        for link, docs in unmarked.items():
            row = session.get(made_at.class_, link) if isinstance(link, int) else None
            older = [doc for doc in docs if row is not None and isinstance(doc.get("created"), datetime)
                     and _utc(doc["created"]) <= _utc(getattr(row, made_at.key))]
            if len(older) == 1:
                model.update({"_id": older[0]["_id"]}, {"$set": {LINKED_ON: older[0]["_id"]}})
            else:
                logger.warning("slidelabel %s %s: its link made before copies were told apart is on %d Girder %s "
                               "document(s), %d made before it; none is marked, so none stands for it",
                               made_at.class_.__name__.lower(), link, len(docs), model.name, len(older))


def ensure_indexes(database: Database) -> None:
    """Index the links (every request of a Girder user looks the folder link up); mark old links."""
    Folder().collection.create_index(PROJECT_LINK, sparse=True)
    Item().collection.create_index(SLIDE_LINK, sparse=True)
    _mark_old_links(database, Folder(), PROJECT_LINK, Project.created_at)
    _mark_old_links(database, Item(), SLIDE_LINK, Slide.added_at)
