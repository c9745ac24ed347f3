"""A Girder folder as a slidelabel project, and its large-image items as the project's slides.

Slides are read in place, from the file large_image's Girder tile source reads for the item
(:func:`item_slide_path`): no copy is made, and slidelabel's workers open that path with the same
readers as any slide. Why the path and not a Girder tile source in every worker: slidelabel's
jobs are keyed on slide files (a manifest records each file's size and SHA-256, so a re-run
skips finished work), and a worker that only needs the assetstore mounted, not a connection to
Girder's MongoDB, is simpler to run and scale. The cost: the items must be on a filesystem
assetstore (or a Girder mount) that the workers see at the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from girder.exceptions import FilePathException
from girder.models.folder import Folder
from girder_large_image.girder_tilesource import getGirderTileSource
from large_image.exceptions import TileSourceError

from girder_slidelabel.links import SUPERPIXELS_OF, link_folder, link_item, slide_of
from slidelabel.errors import SlidelabelError
from slidelabel.server.schemas.projects import ProjectCreate, ProjectPublic
from slidelabel.services.accounts import require_project_creation
from slidelabel.services.projects import create_project
from slidelabel.services.slides import Skipped, add_slide_file
from slidelabel.store.database import Database
from slidelabel.store.models import Role, User


@dataclass(frozen=True)
class FolderSlides:
    """What adding a folder's items did: slides added as ``{item id: slide id}``, and skipped
    items with the reason."""

    added: dict[str, int]
    skipped: list[Skipped]


def item_slide_path(item: dict) -> Path:
    """The file large_image's Girder tile source reads for a large-image ``item``."""
    source = getGirderTileSource(item)
    return Path(source._getLargeImagePath())


def add_folder_items(database: Database, folder: dict, project_id: int) -> FolderSlides:
    """Add every large-image item of ``folder`` (not of its subfolders) that is not yet a slide
    of the project; items that cannot be added are skipped with the reason."""
    added, skipped = {}, []
    for item in Folder().childItems(folder):
        if SUPERPIXELS_OF in item or slide_of(item) is not None:
            continue
        if "largeImage" not in item:
            skipped.append(Skipped(item["name"], "it is no large image (large_image has not made it one)"))
            continue
        try:
            slide = add_slide_file(database, project_id, item["name"], item_slide_path(item))
        except (SlidelabelError, TileSourceError, FilePathException, OSError) as error:  # e.g. an S3 item
            skipped.append(Skipped(item["name"], str(error)))
            continue
        link_item(item, slide.id)
        added[str(item["_id"])] = slide.id
    return FolderSlides(added, skipped)


def create_folder_project(database: Database, folder: dict, user: User, body: ProjectCreate, *,
                          open_creation: bool) -> ProjectPublic:
    """A new project on ``folder`` made by ``user`` (its owner), through the same code and the
    same right to create projects (``Settings.open_project_creation``) as ``POST /projects``,
    linked to the folder."""
    require_project_creation(user, open_creation=open_creation)
    with database.session(write=True) as session:
        project = ProjectPublic.of(create_project(
            session, session.merge(user), body.name, description=body.description, choices=body.choices(),
            superpixels=body.superpixels.chosen(), categories=body.new_categories()), Role.owner)
    link_folder(folder, project.id)
    return project
