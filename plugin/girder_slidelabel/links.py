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
"""

from __future__ import annotations

from girder.models.folder import Folder
from girder.models.item import Item

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


def _mark_old_links(model, field: str) -> None:
    """Links made before :data:`LINKED_ON` held on every copy: each keeps its oldest document."""
    marked = {doc[field] for doc in model.find({field: {"$exists": True}, LINKED_ON: {"$exists": True}})}
    for doc in model.find({field: {"$exists": True}, LINKED_ON: {"$exists": False}}, sort=[("created", 1), ("_id", 1)]):
        if doc[field] not in marked:
            model.update({"_id": doc["_id"]}, {"$set": {LINKED_ON: doc["_id"]}})
            marked.add(doc[field])


def ensure_indexes() -> None:
    """Index the links (every request of a Girder user looks the folder link up); mark old links."""
    Folder().collection.create_index(PROJECT_LINK, sparse=True)
    Item().collection.create_index(SLIDE_LINK, sparse=True)
    _mark_old_links(Folder(), PROJECT_LINK)
    _mark_old_links(Item(), SLIDE_LINK)
