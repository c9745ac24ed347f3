"""What the web client draws of a slide: tiles, a thumbnail, superpixel index tiles, the superpixel
table and pictures of single superpixels. Images carry an ``ETag`` (the file's version), so a
client revalidates with ``If-None-Match`` and gets a 304 without the image being made again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from slidelabel.server.deps import (
    PictureTurn,
    ReadSession,
    SettingsDep,
    Viewer,
    export_turn_when,
    release_connection,
)
from slidelabel.server.response_cache import Flight
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.slides import SuperpixelTablePublic, TileMetadata
from slidelabel.services import tiles
from slidelabel.services.access import ProjectAccess
from slidelabel.services.slide_paths import slide_file
from slidelabel.services.slides import get_slide
from slidelabel.settings import Settings
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Slide

router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}/slides/{slide_id}", tags=["tiles"])

#: A slide file never changes under its id; an hour bounds what a reused id could show.
SLIDE_CACHE = "private, max-age=3600"
#: Superpixels change when recomputed: the client always revalidates (a 304 is cheap).
SUPERPIXEL_CACHE = "private, no-cache"
#: OpenAPI descriptions of image responses.
JPEG = {200: {"content": {"image/jpeg": {}}}}
PNG = {200: {"content": {"image/png": {}}}}


def _client_holds(request: Request, etag: str) -> bool:
    return request.headers.get("if-none-match") in (f'"{etag}"', f'W/"{etag}"')


def cached_response(request: Request, etag: str, cache_control: str, media_type: str, make: Callable[[], bytes], *,
                    read: tuple, flight: Flight | None = None) -> Response:
    """``make()`` as the response, or a 304 when the client holds the version ``etag``.

    The body is kept in the API's response cache under the route, ``read`` and ``etag``, so it is
    made once per version. ``read`` holds the values of every parameter the body depends on (path
    and query) as the route parsed them, never the URL's text: junk query parameters, a ``token``
    or ``05`` for ``5`` are the same body, so varying them makes nothing again. ``flight`` is the
    request's claim to make it (:func:`rendered_in_turn`).
    """
    headers = {"ETag": f'"{etag}"', "Cache-Control": cache_control}
    if _client_holds(request, etag):
        return Response(status_code=304, headers=headers)
    responses, key = request.app.state.responses, _key(request, read, etag)
    return Response(responses.get_or_make(key, make, flight), media_type=media_type, headers=headers)


def _key(request: Request, read: tuple, etag: str) -> tuple:
    return request.scope["route"].path_format, read, etag


@dataclass
class Render:
    """An image a route sends: its version (``etag``), the parameters it depends on (``read``, see
    :func:`cached_response`), how to make it and whether making it takes a render turn
    (:func:`~slidelabel.services.tiles.render_turn_waiting`). ``flight`` is set once the request
    has claimed making it."""

    etag: str
    read: tuple
    make: Callable[[], bytes]
    heavy: bool
    flight: Flight | None = None

    def response(self, request: Request, cache_control: str, media_type: str) -> Response:
        return cached_response(request, self.etag, cache_control, media_type, self.make, read=self.read,
                               flight=self.flight)


def rendered_in_turn(plan: Callable[..., Render], holder: Callable[..., Hashable],
                     waiting: Callable[..., AbstractAsyncContextManager[None]] = tiles.render_turn_waiting) -> Any:
    """A dependency giving the :class:`Render` the dependency ``plan`` describes, ready to make:
    a heavy one not kept yet is made by one request at a time (the others wait for its result on
    the event loop, holding no thread) in the turn ``waiting(holder, gone)`` gives ``holder`` (a
    dependency), held until the route returns; one whose client hung up while it waited is not
    made (``gone``: the request's disconnect check; a GET's empty body is all it may read). A kept
    one, a 304 and a cheap one take no turn."""
    # A default, not an Annotated type: annotations are strings here, read in the module's globals.
    async def hold(request: Request, render: Render = Depends(plan),  # noqa: B008
                   who: Hashable = Depends(holder)) -> AsyncIterator[Render]:  # noqa: B008
        if not render.heavy or _client_holds(request, render.etag):
            yield render
            return
        responses, key = request.app.state.responses, _key(request, render.read, render.etag)
        while True:
            await responses.settled(key)
            if key in responses:
                yield render
                return
            render.flight = responses.claim(key)
            if render.flight is not None:
                break
        try:
            async with waiting(who, gone=request.is_disconnected):
                yield render
        finally:
            responses.land(render.flight)

    return Depends(hold, scope="function")


def _viewer(access: Viewer) -> int:
    return access.user.id


def _slide(access: ProjectAccess, session: ReadSession, slide_id: int) -> Slide:
    return get_slide(session, access.project.id, slide_id)


def _superpixels(settings: Settings, slide: Slide) -> Path:
    return ProjectFiles(settings.data_dir, slide.project_id).superpixels(slide.id)


@router.get("/tiles")
def tile_metadata(slide_id: int, access: Viewer, session: ReadSession) -> TileMetadata:
    slide = _slide(access, session, slide_id)
    grid = tiles.TileGrid.of(tiles.slide_source(slide_file(slide)))
    return TileMetadata(levels=grid.levels, tile_width=grid.tile_width, tile_height=grid.tile_height,
                        width=grid.width, height=grid.height, mpp=slide.mpp)


def _tile(slide_id: int, z: int, x: int, y: int, access: Viewer, session: ReadSession) -> Render:
    pinned = slide_file(_slide(access, session, slide_id))
    release_connection(session)  # none held while waiting for a turn
    source = tiles.slide_source(pinned)
    tiles.TileGrid.of(source).check(z, x, y)
    return Render(pinned.version, (slide_id, z, x, y), lambda: tiles.slide_tile(source, z, x, y),
                  heavy=not tiles.tile_is_cheap(source, z))


def _thumbnail(slide_id: int, access: Viewer, session: ReadSession,
               width: Annotated[int, Query(ge=16, le=tiles.MAX_PICTURE_PX)] = 256) -> Render:
    pinned, shown = slide_file(_slide(access, session, slide_id)), tiles.thumbnail_width(width)
    release_connection(session)
    return Render(pinned.version, (slide_id, shown), lambda: tiles.slide_thumbnail(tiles.slide_source(pinned), shown),
                  heavy=True)


TileRender = Annotated[Render, rendered_in_turn(_tile, _viewer)]
ThumbnailRender = Annotated[Render, rendered_in_turn(_thumbnail, _viewer)]


@router.get("/tiles/{z}/{x}/{y}.jpg", response_class=Response, responses=JPEG)
def slide_tile(slide_id: int, z: int, x: int, y: int, render: TileRender, request: Request) -> Response:
    """Tile (x, y) of level z (0 = the whole slide in about one tile), white past the slide's edge;
    one resampled from a stored level more than twice as fine is rendered in a render turn."""
    return render.response(request, SLIDE_CACHE, "image/jpeg")


@router.get("/thumbnail.jpg", response_class=Response, responses=JPEG)
def slide_thumbnail(slide_id: int, render: ThumbnailRender, request: Request,
                    width: Annotated[int, Query(ge=16, le=tiles.MAX_PICTURE_PX)] = 256) -> Response:
    """A JPEG of the whole slide, ``width`` rounded up to a power of two from 64 (a browser scales
    it down): at most 6 renders a slide for the cache, where every width was one (2,000 widths
    rendered in parallel took a viewer's requests to +0.9 GB); each made once at a time, in a
    render turn (:data:`~slidelabel.services.tiles.RENDERS_PER_HOLDER` a user)."""
    return render.response(request, SLIDE_CACHE, "image/jpeg")


@router.get("/superpixel-tiles/{z}/{x}/{y}.png", response_class=Response, responses=PNG)
def superpixel_tile(slide_id: int, z: int, x: int, y: int, access: Viewer, session: ReadSession,
                    settings: SettingsDep, request: Request) -> Response:
    """The superpixel ids of slide tile (x, y) of level z as a lossless PNG: R = id & 255,
    G = (id >> 8) & 255, B = (id >> 16) & 255; 0 = no superpixel."""
    slide = _slide(access, session, slide_id)
    labels = tiles.label_map(_superpixels(settings, slide))
    return cached_response(request, labels.version, SUPERPIXEL_CACHE, "image/png", lambda: tiles.superpixel_index_tile(
        labels, tiles.TileGrid.of(tiles.slide_source(slide_file(slide))), z, x, y), read=(slide_id, z, x, y))


TableFormat = Annotated[Literal["json", "binary"], Query(alias="format")]


def _as_json(form: TableFormat = "json") -> bool:
    """Whether the table is asked for as JSON (a slide of 400,000 superpixels: 30 MB of text to
    build, in an export turn); the viewer reads the binary table."""
    return form == "json"


JsonTableTurn = Annotated[None, export_turn_when(_as_json)]


@router.get("/superpixels", response_model=SuperpixelTablePublic,
            responses={200: {"content": {"application/octet-stream": {}}}})
def superpixel_table(slide_id: int, access: Viewer, _turn: JsonTableTurn, session: ReadSession, settings: SettingsDep,
                     request: Request, form: TableFormat = "json") -> Response:
    """The superpixel table as JSON, or with ``format=binary`` as little-endian arrays one after
    the other: ids uint32[N], bbox_level0 int32[N, 4], centroid_level0 float32[N, 2], area_px
    uint32[N] (``X-Superpixels`` gives N)."""
    folder = _superpixels(settings, _slide(access, session, slide_id))
    table = tiles.superpixel_table(folder)
    binary = form == "binary"
    response = cached_response(request, f"{form}-{tiles.superpixels_version(folder)}", SUPERPIXEL_CACHE,
                               "application/octet-stream" if binary else "application/json",
                               lambda: tiles.table_binary(table) if binary else tiles.table_json(table),
                               read=(slide_id, form))
    response.headers["X-Superpixels"] = str(table.ids.size)
    if binary:
        response.headers["X-Layout"] = tiles.BINARY_LAYOUT
    return response


@router.get("/superpixels/{superpixel}/thumbnail.png", response_class=Response, responses=PNG)
def superpixel_picture(slide_id: int, superpixel: int, access: Viewer, _turn: PictureTurn, session: ReadSession,
                       settings: SettingsDep, request: Request,
                       size: Annotated[int, Query(ge=32, le=1024)] = 192) -> Response:
    """A size x size picture of the superpixel's neighbourhood with the superpixel outlined
    (rendered :data:`~slidelabel.services.tiles.PICTURES_PER_USER` at a time per user)."""
    slide = _slide(access, session, slide_id)
    folder = _superpixels(settings, slide)
    labels = tiles.label_map(folder)
    return cached_response(request, labels.version, SUPERPIXEL_CACHE, "image/png", lambda: tiles.superpixel_picture(
        tiles.slide_source(slide_file(slide)), labels, tiles.superpixel_table(folder), superpixel, size),
                           read=(slide_id, superpixel, size))
