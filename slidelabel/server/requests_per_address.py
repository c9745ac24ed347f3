"""A bound on one client address's requests in an API process at once, and on one session's.

The connection bound (``slidelabel/server/http_protocol.py``) counts open connections, but a
request goes on after its client hangs up: a client that sends a request on a fresh connection
and closes it at once holds no connection, and each request still waited for a thread and ran.
One viewer sent 9,200 exports so in 10 s (everyone's requests then waited up to 55 s), and
148,810 requests in a minute took the API to 7.8 GB and left it unanswering for minutes (the
seventeenth attack). Here every request counts against its address until its answer is done,
whether or not anyone still waits for it; past the bound a new one is answered 503 at once.

The requests that carry one token (a session: ``Authorization: Bearer`` or ``?token=``) count
together too, from whatever addresses they come: one viewer's token sent from 200 addresses kept
another user's requests waiting 22 s and its tiles 54 s (the nineteenth attack). They are counted
before the token is checked, so a refused one costs no request thread.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: What a request past each bound is told.
_BUSY = {"address": "your address has {limit} requests being answered already: wait for their answers (a request "
                    "goes on after its client hangs up)",
         "session": "your session has {limit} requests being answered already: wait for their answers (a request "
                    "goes on after its client hangs up)"}


def _credential(scope: Scope) -> str | None:
    """The token a request carries (its Authorization header's, else its ``token`` query
    parameter), unchecked; None when it carries none."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else value.decode("latin-1")
    query = scope.get("query_string") or b""
    if b"token=" in query:
        return next(iter(parse_qs(query.decode("latin-1")).get("token", ())), None)
    return None


class RequestsPerAddress:
    """ASGI middleware: at most ``limit`` requests of one client address, and of one token, at
    once (0: no bound)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight: Counter[tuple[str, str]] = Counter()  # the event loop's alone: no lock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limit:
            await self.app(scope, receive, send)
            return
        keys = [("address", (scope.get("client") or ("",))[0])]
        if (credential := _credential(scope)) is not None:
            keys.append(("session", credential))
        if over := next((key for key in keys if self.in_flight[key] >= self.limit), None):
            busy = JSONResponse({"detail": _BUSY[over[0]].format(limit=self.limit)}, status_code=503,
                                headers={"Retry-After": "1"})
            await busy(scope, receive, send)
            return
        for key in keys:
            self.in_flight[key] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            for key in keys:
                self.in_flight[key] -= 1
                if not self.in_flight[key]:
                    del self.in_flight[key]
