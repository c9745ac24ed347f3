"""slidelabel's exceptions as HTTP responses, in one place: ``{"detail": message}`` with the
status code of the error's class; an unexpected exception is logged and answered with a 500 that
shows no traceback."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from sqlalchemy.exc import TimeoutError as PoolTimeout

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
    TooManyAttemptsError,
)

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
    (ParameterError, 422),
    (SlideError, 422),
    (OutputError, 500),
    (SlidelabelError, 400),
)


def status_of(error: SlidelabelError) -> int:
    return next(code for kind, code in STATUS if isinstance(error, kind))


async def _slidelabel_error(_request: Request, error: SlidelabelError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, AuthenticationError) else None
    if isinstance(error, TooManyAttemptsError):
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after_s)))}
    return JSONResponse({"detail": str(error)}, status_code=status_of(error), headers=headers)


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


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(SlidelabelError, _slidelabel_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(DataError, _out_of_range)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(PoolTimeout, _no_connection)
    app.add_exception_handler(Exception, _unexpected)
