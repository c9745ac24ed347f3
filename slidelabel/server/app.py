"""The FastAPI application: ``create_app(settings)`` wires the database, error mapping and the
routers under ``/api/v1``; OpenAPI docs are at ``/docs``; the web client is served at ``/``."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from slidelabel import __version__
from slidelabel.pipelines.memory import release_freed_memory
from slidelabel.server import errors
from slidelabel.server.request_checks import RequestChecks
from slidelabel.server.requests_per_address import RequestsPerAddress
from slidelabel.server.security_headers import SecurityHeaders
from slidelabel.server.response_cache import ResponseCache
from slidelabel.server.routers import (auth, cohorts, epochs, exports, gallery, jobs, labels, projects, reviews,
                                       segment_uploads, shapes, slides, tiles, users)
from slidelabel.services.login_limits import LoginThrottle
from slidelabel.services.uploads import sweep_unfinished_uploads
from slidelabel.settings import Settings
from slidelabel.store.database import Database, migrate
from slidelabel.store.export_folders import sweep_export_folders
from slidelabel.workers.app import declare_queues, make_celery

API_PREFIX = "/api/v1"
ROUTERS = (auth.router, users.router, projects.router, jobs.router, labels.router, reviews.router, slides.router,
           tiles.router, epochs.router, exports.router, shapes.router, segment_uploads.router,
           segment_uploads.imports_router, gallery.router, gallery.public_router, cohorts.router)
#: The web client's bundle, built from web_client/ by ``make web``.
WEB_CLIENT = Path(__file__).parent / "static"
#: Seconds between two returns of freed heap memory to the system (:func:`release_freed_memory`):
#: the request threads' malloc arenas otherwise keep the peak of every large response.
RELEASE_MEMORY_EVERY_S = 5.0

logger = logging.getLogger("uvicorn.error")


def _sweep_leftovers(data_dir: Path) -> None:
    """Remove the unfinished uploads and export folders of processes that ended (those of living
    ones, this server's or another's on the same data folder, are locked and stay): as each API
    process starts, so that one uvicorn starts in place of a killed one cleans up after it."""
    uploads, exports = sweep_unfinished_uploads(data_dir), sweep_export_folders(data_dir, own=False)
    removed = [f"{len(found)} {what}" for found, what in ((uploads, "unfinished upload(s)"),
                                                           (exports, "export folder(s)")) if found]
    if removed:
        logger.warning("removed %s that an ended server process left", " and ".join(removed))


async def _release_memory_periodically() -> None:
    while True:
        await asyncio.sleep(RELEASE_MEMORY_EVERY_S)
        await asyncio.to_thread(release_freed_memory)


def create_app(settings: Settings | None = None, *, database: Database | None = None) -> FastAPI:
    """The API over ``settings`` (default: from the environment). The schema is migrated to the
    newest version on creation; ``database`` lets a caller share an open one."""
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = database or Database(settings.database_url)
    migrate(database.engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await asyncio.to_thread(_sweep_leftovers, settings.data_dir)
        releasing = asyncio.create_task(_release_memory_periodically())
        yield
        releasing.cancel()
        with suppress(asyncio.CancelledError):
            await releasing
        database.dispose()

    app = FastAPI(title="slidelabel", version=__version__, lifespan=lifespan,
                  description="Active-learning labelling of whole-slide images by superpixels.",
                  max_body_size=settings.max_body_mb * 2**20)  # uploads: their own limit (routers/slides.py)
    app.add_middleware(RequestChecks)
    app.add_middleware(SecurityHeaders)
    # Outermost: a request past its address's bound costs nothing more.
    app.add_middleware(RequestsPerAddress, limit=settings.max_connections_per_address)
    app.state.settings = settings
    app.state.database = database
    app.state.celery = make_celery(settings)
    declare_queues(app.state.celery)
    app.state.responses = ResponseCache(settings.response_cache_mb * 2**20)
    app.state.login_throttle = LoginThrottle.from_settings(settings)
    errors.install(app)
    api = APIRouter(prefix=API_PREFIX)
    for router in ROUTERS:
        api.include_router(router)
    app.include_router(api)
    if (WEB_CLIENT / "index.html").is_file():  # after the API, so /api/v1 is never shadowed
        app.mount("/", StaticFiles(directory=WEB_CLIENT, html=True), name="web")
    return app


def app_from_environment() -> FastAPI:
    """The app over ``Settings()`` from ``SLIDELABEL_*`` variables: what each API process of
    ``slidelabel serve`` runs (uvicorn's factory)."""
    return create_app(Settings())
