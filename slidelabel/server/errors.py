"""slidelabel's exceptions as HTTP responses, in one place: ``{"detail": message}`` with the
status code of the error's class; an unexpected exception is logged and answered with a 500 that
shows no traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from slidelabel.errors import (
    AuthenticationError,
    BusyError,
    ConflictError,
    NotFoundError,
    OutputError,
    ParameterError,
    PermissionDeniedError,
    SlideError,
    SlidelabelError,
    TooLargeError,
)

logger = logging.getLogger(__name__)

#: Most specific first.
STATUS = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (TooLargeError, 413),
    (BusyError, 503),
    (ParameterError, 422),
    (SlideError, 422),
    (OutputError, 500),
    (SlidelabelError, 400),
)


def status_of(error: SlidelabelError) -> int:
    return next(code for kind, code in STATUS if isinstance(error, kind))


async def _slidelabel_error(_request: Request, error: SlidelabelError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, AuthenticationError) else None
    return JSONResponse({"detail": str(error)}, status_code=status_of(error), headers=headers)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(SlidelabelError, _slidelabel_error)
    app.add_exception_handler(Exception, _unexpected)
