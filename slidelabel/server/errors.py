"""slidelabel's exceptions as HTTP responses, in one place: ``{"detail": message}`` with the
status code of the error's class; an unexpected exception is logged and answered with a 500 that
shows no traceback.

A request can trip over its own project or slide being deleted by another request while it runs:
a file of the slide gone when read, a row referring to the deleted one refused by its foreign key
(``IntegrityError``), a row to update gone (``StaleDataError``). Where the project or slide its URL
names no longer exists, such an error is answered 404 saying so (the eighth attack: these were
500s). A server file that cannot be read or written (:class:`OutputError`) is named by its file
name only: the data folder is the admin's to see, in the server log."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import StaleDataError
from starlette.requests import ClientDisconnect

from slidelabel.errors import (
    AuthenticationError,
    BusyError,
    ClientGoneError,
    ConflictError,
    NotFoundError,
    OutputError,
    ParameterError,
    PermissionDeniedError,
    SlideError,
    SlidelabelError,
    TooLargeError,
    TooManyAttemptsError,
)
from slidelabel.pipelines.pinned_files import without_links
from slidelabel.services.shown_paths import names_only
from slidelabel.store.database import Database, foreign_key_violation
from slidelabel.store.models import Project, Slide

logger = logging.getLogger(__name__)

#: Most specific first.
STATUS = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (TooLargeError, 413),
    (TooManyAttemptsError, 429),
    (BusyError, 503),
    (ClientGoneError, 499),  # nginx's "client closed request": no one reads it
    (ParameterError, 422),
    (SlideError, 422),
    (OutputError, 500),
    (SlidelabelError, 400),
)


def status_of(error: SlidelabelError) -> int:
    return next(code for kind, code in STATUS if isinstance(error, kind))


def _id(value: str | None) -> int | None:
    """A path parameter as a database id; None when it is none (no id of 19 digits or more exists)."""
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 19 else None


def _deleted(database: Database, path_params: dict[str, str]) -> str | None:
    """What the request's URL names of a project and slide that no longer exists, said for the
    user; None while both exist, when the URL names none, or when the database cannot tell."""
    project_id, slide_id = _id(path_params.get("project_id")), _id(path_params.get("slide_id"))
    if project_id is None:
        return None
    try:
        with database.session() as session:
            if session.get(Project, project_id) is None:
                return f"project {project_id} was deleted while this request ran"
            slide = None if slide_id is None else session.get(Slide, slide_id)
            if slide_id is not None and (slide is None or slide.project_id != project_id):
                return f"slide {slide_id} was deleted while this request ran"
    except SQLAlchemyError:  # the original error stays the answer
        logger.warning("could not look up what a failed request refers to", exc_info=True)
    return None


async def _deleted_meanwhile(request: Request, error: Exception) -> JSONResponse | None:
    """A 404 saying which of the request's project or slide was deleted while it ran, when one
    was; None otherwise."""
    message = await run_in_threadpool(_deleted, request.app.state.database, request.path_params)
    if message is None:
        return None
    logger.info("%s %s: %s (%s: %s)", request.method, request.url.path, message, type(error).__name__, error)
    return JSONResponse({"detail": message}, status_code=404)


async def _slidelabel_error(request: Request, error: SlidelabelError) -> JSONResponse:
    if isinstance(error, (OutputError, SlideError)) and (deleted := await _deleted_meanwhile(request, error)):
        return deleted
    message = without_links(str(error)) if isinstance(error, SlideError) else str(error)
    if isinstance(error, OutputError):  # a server file: its folders are the admin's to see, in the log
        logger.error("%s %s: %s", request.method, request.url.path, message)
        message = names_only(message)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, AuthenticationError) else None
    if isinstance(error, TooManyAttemptsError):
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after_s)))}
    return JSONResponse({"detail": message}, status_code=status_of(error), headers=headers)


async def _refers_to_deleted(request: Request, error: IntegrityError) -> JSONResponse:
    """A write referring to a row another request deleted meanwhile (a foreign-key violation):
    404 when that was the URL's project or slide, else 409; other integrity errors are bugs."""
    if not foreign_key_violation(error):
        return await _unexpected(request, error)
    return await _deleted_meanwhile(request, error) or JSONResponse({"detail": (
        "something this request refers to (a category, a user, a slide) was deleted by another request "
        "meanwhile; reload and try again")}, status_code=409)


async def _changed_meanwhile(request: Request, error: StaleDataError) -> JSONResponse:
    """A row this request changes was deleted by another request after it was read."""
    return await _deleted_meanwhile(request, error) or JSONResponse({"detail": (
        "what this request changes was changed or deleted by another request meanwhile; reload and try again")},
        status_code=409)


async def _missing_file(request: Request, error: FileNotFoundError) -> JSONResponse:
    """A file gone while the request used it: deleted with its slide or project, or a bug."""
    return await _deleted_meanwhile(request, error) or await _unexpected(request, error)


#: Characters of a refused input shown back in a validation error.
ECHO_CHARS = 80


def _shown(value: object) -> object:
    """What a validation error shows of an input: short text or a finite number as is, anything
    else by its kind, so that a large body is never sent back."""
    if isinstance(value, bool) or value is None or (isinstance(value, (int, float)) and math.isfinite(value)):
        return value if not isinstance(value, int) or abs(value) < 2**53 else "a large integer"
    if isinstance(value, str):
        text = value if len(value) <= ECHO_CHARS else f"{value[:ECHO_CHARS]}... ({len(value)} characters)"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"a {type(value).__name__}"


async def _invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
    detail = [{"type": e.get("type"), "loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")),
               "input": _shown(e.get("input"))} for e in error.errors()[:20]]
    return JSONResponse({"detail": detail}, status_code=422)


async def _out_of_range(_request: Request, _error: Exception) -> JSONResponse:
    # A number the database cannot hold (an id of 2^63 in a query, say): the request's fault.
    return JSONResponse({"detail": "a number in the request is out of range"}, status_code=422)


async def _no_connection(_request: Request, _error: Exception) -> JSONResponse:
    # Every pooled database connection stayed taken for the pool's wait: the server is busy.
    return JSONResponse({"detail": "the server is busy (no database connection came free); try again"},
                        status_code=503)


async def _client_gone(request: Request, error: ClientDisconnect) -> Response:
    """A client that hung up while its body was read (an upload cut off): nothing went wrong here,
    and nothing is left of what it sent (see ``services/uploads.py``)."""
    logger.info("%s %s: the client hung up while sending its body", request.method, request.url.path)
    return Response(status_code=499)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(SlidelabelError, _slidelabel_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(DataError, _out_of_range)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(PoolTimeout, _no_connection)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(IntegrityError, _refers_to_deleted)
    app.add_exception_handler(StaleDataError, _changed_meanwhile)
    app.add_exception_handler(FileNotFoundError, _missing_file)
    app.add_exception_handler(Exception, _unexpected)
