"""Where the plugin records which Girder documents stand for which slidelabel rows.

The links are fields of Girder documents that Girder's REST API never lets a user write (unlike
``meta``), so nobody can point a folder at another project to gain its role:

- a folder's :data:`PROJECT_LINK`: the slidelabel project labelled on the folder's items;
- an item's :data:`SLIDE_LINK`: its slide in that project;
- an item's :data:`SUPERPIXELS_OF`: the id of the slide item whose superpixel image it holds
  (for the ``pixelmap`` element of exported annotations); such items are never slides.
"""

from __future__ import annotations

from girder.models.folder import Folder

PROJECT_LINK = "slidelabelProjectId"
SLIDE_LINK = "slidelabelSlideId"
SUPERPIXELS_OF = "slidelabelSuperpixelsOf"


def linked_folder(project_id: int) -> dict | None:
    """The Girder folder of a slidelabel project, or None for a project made outside Girder."""
    return Folder().findOne({PROJECT_LINK: project_id})


def ensure_indexes() -> None:
    """Index the folder link: every request of a Girder user looks it up."""
    Folder().collection.create_index(PROJECT_LINK, sparse=True)
