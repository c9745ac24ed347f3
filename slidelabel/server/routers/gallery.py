"""Gallery links: an owner publishes, lists and revokes them under ``/projects/{id}/gallery``;
anyone holding a link's token reads, without an account, exactly what its page draws under
``/gallery/{token}``: the project's name and legend, the shown slides' tiles, superpixel index
tiles and overlay, and the epochs' figures. Nothing there writes: any other method is a 405.

Errors of the public routes never name a server path or an API route: a slide that cannot be read
or has no superpixels or predictions yet is a 404 (409) in the page's own words.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from slidelabel.errors import ConflictError, NotFoundError, SlideError
from slidelabel.server.deps import (
    GalleryExportTurn,
    GalleryPageTurn,
    Owner,
    ReadSession,
    SettingsDep,
    WriteSession,
    release_connection,
)
from slidelabel.server.routers.tiles import JPEG, PNG, Render, rendered_in_turn
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.gallery import (
    GalleryCategory,
    GalleryEpoch,
    GalleryLinkCreate,
    GalleryLinkCreated,
    GalleryLinkPublic,
    GalleryPublic,
    GallerySlide,
)
from slidelabel.server.schemas.slides import TileMetadata
from slidelabel.services import gallery, tiles
from slidelabel.services.gallery import GalleryView
from slidelabel.services.slide_paths import slide_file
from slidelabel.settings import Settings
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import GalleryOverlay, Slide

router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}/gallery", tags=["gallery"])
public_router = APIRouter(route_class=CommitInRouteThread, prefix="/gallery", tags=["gallery"])

#: Revalidated at every use, so a revoked link stops showing even the images a browser kept.
GALLERY_CACHE = "private, no-cache"
#: What a gallery route allows.
READ_ONLY = "GET"


@router.post("", status_code=201)
def publish(body: GalleryLinkCreate, access: Owner, session: WriteSession) -> GalleryLinkCreated:
    """A new read-only link; its token is in this answer only."""
    published = gallery.publish(session, access, overlay=body.overlay, slide_ids=body.slide_ids)
    return GalleryLinkCreated(**GalleryLinkPublic.model_validate(published.link).model_dump(), token=published.token)


@router.get("")
def list_links(access: Owner, session: ReadSession) -> list[GalleryLinkPublic]:
    """The project's links, revoked ones included, newest first (without their tokens)."""
    return [GalleryLinkPublic.model_validate(link) for link in gallery.links_of(session, access.project.id)]


@router.delete("/{link_id}")
def revoke(link_id: int, access: Owner, session: WriteSession) -> GalleryLinkPublic:
    """Stop the link from opening anything, at once and for good."""
    return GalleryLinkPublic.model_validate(gallery.revoke(session, project_id=access.project.id, link_id=link_id))


def link_maker_check() -> gallery.MakerCheck | None:
    """How a link's maker is checked where another system keeps the accounts: none on slidelabel's
    own server; the Girder plugin overrides this dependency, as it overrides ``current_user``."""
    return None


def gallery_view(session: ReadSession,
                 token: Annotated[str, PathParam(max_length=256, description="the link's token")],
                 maker_check: Annotated[gallery.MakerCheck | None, Depends(link_maker_check)]) -> GalleryView:
    """What the token opens; the read transaction ends here, so that a request waiting for an
    export turn holds no database connection (15 such waits took SQLite's whole pool)."""
    view = gallery.resolve(session, token, maker_check=maker_check)
    release_connection(session)
    return view


def gallery_slide_view(session: ReadSession,
                       token: Annotated[str, PathParam(max_length=256, description="the link's token")],
                       slide_id: int,
                       maker_check: Annotated[gallery.MakerCheck | None, Depends(link_maker_check)]) -> GalleryView:
    """:func:`gallery_view` for a request about one slide: only that slide is read."""
    view = gallery.resolve(session, token, maker_check=maker_check, slide_id=slide_id)
    release_connection(session)
    return view


View = Annotated[GalleryView, Depends(gallery_view)]
SlideView = Annotated[GalleryView, Depends(gallery_slide_view)]


@contextmanager
def _shown_as(what: str) -> Iterator[None]:
    """Errors past the token and slide checks in words for someone outside the project."""
    try:
        yield
    except (SlideError, NotFoundError):
        raise NotFoundError(f"no {what} here") from None
    except ConflictError:
        raise ConflictError(f"no {what} yet: the slide is not prepared") from None


@public_router.get("/{token}")
def gallery_page(_turn: GalleryPageTurn, view: View, session: ReadSession) -> GalleryPublic:
    """What the page shows: the project's name, the legend, the shown slides and the epochs' figures."""
    return GalleryPublic(
        project=view.project.name, overlay=view.overlay,
        categories=[GalleryCategory.model_validate(c) for c in view.project.categories],
        slides=[GallerySlide.model_validate(slide) for slide in view.slides],
        epochs=[GalleryEpoch(number=epoch.number, labels=epoch.labels, created_at=epoch.created_at, metrics=metrics)
                for epoch, metrics in gallery.figure_epochs(session, view.project.id)])


@public_router.get("/{token}/slides/{slide_id}/tiles")
def tile_metadata(slide_id: int, view: SlideView) -> TileMetadata:
    slide = view.slide(slide_id)
    with _shown_as("image of this slide"):
        grid = tiles.TileGrid.of(tiles.slide_source(slide_file(slide)))
    return TileMetadata(levels=grid.levels, tile_width=grid.tile_width, tile_height=grid.tile_height,
                        width=grid.width, height=grid.height, mpp=slide.mpp)


def _link(view: SlideView) -> Hashable:
    """Who a gallery render waits in line for (:func:`gallery.render_turn_waiting`): the line of
    its link's maker (:func:`gallery.link_line`), as pages and overlays."""
    return gallery.link_line(view.link.created_by)


def _tile(slide_id: int, z: int, x: int, y: int, view: SlideView) -> Render:
    pinned = slide_file(view.slide(slide_id))
    with _shown_as(f"tile ({x}, {y}) of level {z}"):
        source = tiles.slide_source(pinned)
        tiles.TileGrid.of(source).check(z, x, y)
    return Render(pinned.version, (slide_id, z, x, y), lambda: tiles.slide_tile(source, z, x, y), heavy=True)


def _thumbnail(slide_id: int, view: SlideView, width: Annotated[int, Query(ge=16, le=512)] = 256) -> Render:
    pinned, shown = slide_file(view.slide(slide_id)), tiles.thumbnail_width(width)
    return Render(pinned.version, (slide_id, shown), lambda: tiles.slide_thumbnail(tiles.slide_source(pinned), shown),
                  heavy=True)


def _superpixels(settings: Settings, slide: Slide) -> Path:
    return ProjectFiles(settings.data_dir, slide.project_id).superpixels(slide.id)


def _index_tile(slide_id: int, z: int, x: int, y: int, view: SlideView, settings: SettingsDep) -> Render:
    slide = view.slide(slide_id)
    with _shown_as(f"superpixel tile ({x}, {y}) of level {z}"):
        labels = tiles.label_map(_superpixels(settings, slide))
    return Render(labels.version, (slide_id, z, x, y), lambda: tiles.superpixel_index_tile(
        labels, tiles.TileGrid.of(tiles.slide_source(slide_file(slide))), z, x, y), heavy=True)


# Every render of a link (not kept yet) takes a render turn held by the link: 99 connections asking
# for random tiles kept a logged-in user's /auth/me 0.14-0.63 s at the median, 5.3 s at most.
TileRender = Annotated[Render, rendered_in_turn(_tile, _link, gallery.render_turn_waiting)]
ThumbnailRender = Annotated[Render, rendered_in_turn(_thumbnail, _link, gallery.render_turn_waiting)]
IndexTileRender = Annotated[Render, rendered_in_turn(_index_tile, _link, gallery.render_turn_waiting)]


@public_router.get("/{token}/slides/{slide_id}/tiles/{z}/{x}/{y}.jpg", response_class=Response, responses=JPEG)
def slide_tile(slide_id: int, z: int, x: int, y: int, render: TileRender, request: Request) -> Response:
    """Tile (x, y) of level z, as the project's tile route serves it."""
    with _shown_as(f"tile ({x}, {y}) of level {z}"):
        return render.response(request, GALLERY_CACHE, "image/jpeg")


@public_router.get("/{token}/slides/{slide_id}/thumbnail.jpg", response_class=Response, responses=JPEG)
def slide_thumbnail(slide_id: int, render: ThumbnailRender, request: Request,
                    width: Annotated[int, Query(ge=16, le=512)] = 256) -> Response:
    """A picture of the whole slide for the slide picker, ``width`` rounded up to a power of two."""
    with _shown_as("thumbnail of this slide"):
        return render.response(request, GALLERY_CACHE, "image/jpeg")


@public_router.get("/{token}/slides/{slide_id}/superpixel-tiles/{z}/{x}/{y}.png", response_class=Response,
                   responses=PNG)
def superpixel_tile(slide_id: int, z: int, x: int, y: int, render: IndexTileRender, request: Request) -> Response:
    """Superpixel ids of tile (x, y) of level z packed in RGB, as the project's route serves them."""
    with _shown_as(f"superpixel tile ({x}, {y}) of level {z}"):
        return render.response(request, GALLERY_CACHE, "image/png")


@public_router.get("/{token}/slides/{slide_id}/overlay.bin", response_class=Response,
                   responses={200: {"content": {"application/octet-stream": {}},
                                    "description": "little-endian uint32 category id per superpixel id (0: none), "
                                                   "N + 1 values"}})
def overlay(slide_id: int, view: SlideView, _turn: GalleryExportTurn, session: ReadSession,
            settings: SettingsDep) -> Response:
    """The link's overlay of the slide: its labels (reviews, else the users' majority) or the
    latest epoch's predicted categories (``X-Epoch`` names the epoch). Built in an export turn:
    the majority reads every label row of the slide (4.8 million: about 30 s and 800 MB)."""
    view.slide(slide_id)
    with _shown_as("labels" if view.overlay == GalleryOverlay.labels else "predictions of this slide"):
        found = gallery.slide_overlay(session, settings.data_dir, view, slide_id)
    headers = {"Cache-Control": GALLERY_CACHE, "X-Overlay": view.overlay.value}
    if found.epoch is not None:
        headers["X-Epoch"] = str(found.epoch)
    return Response(found.content, media_type="application/octet-stream", headers=headers)


@public_router.api_route("/{rest:path}", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
def refuse_writes() -> JSONResponse:
    """Whatever the path, a gallery link changes nothing."""
    return JSONResponse({"detail": "a gallery link is read-only"}, status_code=405, headers={"Allow": READ_ONLY})
