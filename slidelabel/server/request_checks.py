"""Checks of every request before a route sees it, so that malformed input is a 4xx, never a 500.

JSON bodies must be plain data: finite numbers of at most 2^53 (JavaScript's exact integers; no
id or count of slidelabel comes near), valid Unicode without NUL characters (PostgreSQL cannot
store them), nesting at most :data:`MAX_DEPTH` deep, at most :data:`MAX_JSON_CONTAINERS` objects
and arrays; large bodies are checked off the event loop. A number in the path beyond any id names
nothing: 404. The body's size is bounded by FastAPI's ``max_body_size`` (``create_app``), which
sits outside this middleware, so what is read here is bounded too.
"""

from __future__ import annotations

import json
from email.message import Message

from anyio import CapacityLimiter, to_thread
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: Ids are 32-bit integers in PostgreSQL.
MAX_ID = 2**31 - 1
MAX_JSON_INT = 2**53 - 1
MAX_DEPTH = 64
#: JSON objects and arrays a body may hold: 10 MB of ``[{},{},...]`` parsed to 3.3 million
#: dictionaries (0.5 GB) and took 4.5 s to check (the eighth attack); a label batch is one array,
#: an imported annotation one per vertex (a million: about 100 MB parsed, 1.5 s to check).
MAX_JSON_CONTAINERS = 1_000_000
#: Bodies past this many bytes are parsed and checked in a worker thread, at most
#: :data:`LARGE_BODY_CHECKS` at once, so that the event loop keeps answering everyone else.
LARGE_BODY = 64 * 1024
LARGE_BODY_CHECKS = 2


class BadInput(ValueError):
    """Why a request body is refused."""


def _reject_constant(name: str) -> float:
    raise BadInput(f"{name} is not a JSON number; send finite numbers")


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise BadInput("text may not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("text must be valid Unicode (a lone surrogate was sent)") from None


def check_json(value: object) -> None:
    """Raise :class:`BadInput` unless ``value`` (parsed JSON) is plain data, as the module says."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadInput(f"JSON nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            continue
        elif isinstance(item, int):
            if abs(item) > MAX_JSON_INT:
                raise BadInput(f"integers must lie within +-{MAX_JSON_INT}")
        elif isinstance(item, dict):
            for key, member in item.items():
                _check_text(key)
                stack.append((member, depth + 1))
        else:
            stack.extend((member, depth + 1) for member in item)


def parse_json(body: bytes) -> object:
    """``body`` parsed as JSON and checked as the module says; :class:`BadInput` saying why not.
    For routes that parse a body whatever its Content-Type (this middleware checks only JSON ones)."""
    # Counted in C before anything is parsed: an upper bound (brackets inside strings count too).
    if (containers := body.count(b"{") + body.count(b"[")) > MAX_JSON_CONTAINERS:
        raise BadInput(f"the body holds up to {containers:,} JSON objects and arrays; at most "
                       f"{MAX_JSON_CONTAINERS:,} are taken (send large data as a file)")
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except BadInput:
        raise
    except RecursionError:  # the parser recurses per level: deeper than the stack, not MAX_DEPTH
        raise BadInput(f"JSON nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as error:  # UnicodeDecodeError too
        raise BadInput(f"the body is not valid JSON ({error})") from None
    check_json(value)
    return value


def _is_json(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    message = Message()
    message["content-type"] = headers.get(b"content-type", b"").decode("latin-1")
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _beyond_ids(path: str) -> bool:
    # ASCII digits only: "¹" is a digit to str.isdigit but no number to int().
    return any(part.isascii() and part.isdigit() and (len(part) > 10 or int(part) > MAX_ID) for part in path.split("/"))


class RequestChecks:
    """ASGI middleware applying the checks of this module."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.large_body_checks = CapacityLimiter(LARGE_BODY_CHECKS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _beyond_ids(scope["path"]):
            await JSONResponse({"detail": f"nothing here: ids go up to {MAX_ID}"}, status_code=404)(scope, receive, send)
            return
        if not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            if len(body) > LARGE_BODY:
                await to_thread.run_sync(parse_json, body, limiter=self.large_body_checks)
            elif body:
                parse_json(body)
        except BadInput as error:
            await JSONResponse({"detail": str(error)}, status_code=422)(scope, receive, send)
            return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
