"""Girder REST routes: what only Girder knows about, on Girder's own resources.

- ``POST /folder/{id}/slidelabel``: a project on the folder (folder admins who may create
  projects, as for ``POST /projects``), its large-image items added as slides;
  ``PUT /folder/{id}/slidelabel/slides`` adds items added since; ``GET /folder/{id}/slidelabel``:
  the folder's project id (readers).
- ``POST /item/{id}/slidelabel/annotation``: the slide's labels or predictions saved as a
  large_image annotation on the item (writers of the item who are members of its project).

A folder or item stands for a project or slide only where the link was made, never in a copy
(:mod:`girder_slidelabel.links`).

Everything else (labels, jobs, epochs, queue, tiles, exports) is slidelabel's own API, mounted
at ``/slidelabel/api/v1`` (see :mod:`girder_slidelabel`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from girder.api import access
from girder.api.describe import Description, autoDescribeRoute
from girder.api.rest import RestException, boundHandler, getCurrentUser
from girder.constants import AccessType
from girder.models.folder import Folder
from girder.models.item import Item
from pydantic import ValidationError

from girder_slidelabel.annotations import export_to_item
from girder_slidelabel.folders import add_folder_items, create_folder_project
from girder_slidelabel.links import project_of, slide_of
from girder_slidelabel.users import member, slidelabel_user
from slidelabel.errors import SlidelabelError
from slidelabel.server.errors import status_of
from slidelabel.server.schemas.projects import ProjectCreate
from slidelabel.services.dsa_annotation import Elements
from slidelabel.services.slide_classes import Source
from slidelabel.settings import Settings
from slidelabel.store.database import Database


@contextlib.contextmanager
def _as_rest_errors() -> Iterator[None]:
    """slidelabel's errors with the status codes its own API gives them."""
    try:
        yield
    except SlidelabelError as error:
        raise RestException(str(error), code=status_of(error)) from None


def _added(result) -> dict:
    return {"added": result.added, "skipped": [dataclasses.asdict(s) for s in result.skipped]}


def register(api_root, database: Database, settings: Settings) -> None:
    """Add the routes to Girder's ``folder`` and ``item`` resources."""

    @access.user
    @autoDescribeRoute(
        Description("Make a slidelabel project on this folder; its large-image items become its slides.")
        .modelParam("id", model=Folder, level=AccessType.ADMIN)
        .jsonParam("project", "The project, as slidelabel's POST /projects takes it (name, categories, "
                   "superpixels, extractor, model, strategy).", paramType="body", requireObject=True)
        .errorResponse("The folder has a project already.", 409))
    @boundHandler
    def create(self, folder: dict, project: dict) -> dict:
        if project_of(folder) is not None:
            raise RestException(f"this folder is slidelabel project {project_of(folder)} already", code=409)
        try:
            body = ProjectCreate.model_validate(project)
        except ValidationError as error:
            raise RestException(f"bad project: {error}", code=422) from None
        with _as_rest_errors():
            user = slidelabel_user(database, getCurrentUser())
            created = create_folder_project(database, folder, user, body,
                                            open_creation=settings.open_project_creation)
            added = add_folder_items(database, folder, created.id)
            return {"project": created.model_dump(mode="json"), **_added(added)}

    @access.user
    @autoDescribeRoute(
        Description("Add the folder's large-image items that are not slides of its project yet.")
        .modelParam("id", model=Folder, level=AccessType.ADMIN))
    @boundHandler
    def add_slides(self, folder: dict) -> dict:
        if project_of(folder) is None:
            raise RestException("this folder has no slidelabel project", code=404)
        with _as_rest_errors():
            member(database, getCurrentUser(), project_of(folder))  # refuses a disabled account
            return _added(add_folder_items(database, folder, project_of(folder)))

    @access.user
    @autoDescribeRoute(
        Description("The slidelabel project of this folder (projectId null when none).")
        .modelParam("id", model=Folder, level=AccessType.READ))
    @boundHandler
    def folder_project(self, folder: dict) -> dict:
        return {"projectId": project_of(folder)}

    @access.user
    @autoDescribeRoute(
        Description("Save the slide's labels or predictions as a large_image annotation on this item.")
        .modelParam("id", model=Item, level=AccessType.WRITE)
        .param("source", "labels (effective labels) or predictions", enum=[s.value for s in Source],
               default=Source.labels.value)
        .param("epoch", "epoch of the predictions (default: the latest)", dataType="integer", required=False)
        .param("elements", "pixelmap (superpixels coloured by category), polygons, or both",
               enum=[e.value for e in Elements], default=Elements.pixelmap.value))
    @boundHandler
    def annotate(self, item: dict, source: str, epoch: int | None, elements: str) -> dict:
        if slide_of(item) is None:
            raise RestException("this item is no slide of a slidelabel project", code=404)
        with _as_rest_errors():
            saved = export_to_item(database, settings.data_dir, item, slide_of(item), getCurrentUser(),
                                   source=Source(source), epoch=epoch, elements=Elements(elements))
        return {"_id": str(saved["_id"]), "name": saved["annotation"]["name"],
                "elements": len(saved["annotation"]["elements"])}

    api_root.folder.route("POST", (":id", "slidelabel"), create)
    api_root.folder.route("PUT", (":id", "slidelabel", "slides"), add_slides)
    api_root.folder.route("GET", (":id", "slidelabel"), folder_project)
    api_root.item.route("POST", (":id", "slidelabel", "annotation"), annotate)
