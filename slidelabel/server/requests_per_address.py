"""A bound on one client address's requests in an API process at once.

The connection bound (``slidelabel/server/http_protocol.py``) counts open connections, but a
request goes on after its client hangs up: a client that sends a request on a fresh connection
and closes it at once holds no connection, and each request still waited for a thread and ran.
One viewer sent 9,200 exports so in 10 s (everyone's requests then waited up to 55 s), and
148,810 requests in a minute took the API to 7.8 GB and left it unanswering for minutes (the
seventeenth attack). Here every request counts against its address until its answer is done,
whether or not anyone still waits for it; past the bound a new one is answered 503 at once.
"""

from __future__ import annotations

from collections import Counter

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class RequestsPerAddress:
    """ASGI middleware: at most ``limit`` requests of one client address at once (0: no bound)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight: Counter[str] = Counter()  # the event loop's alone: no lock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limit:
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("",))[0]
        if self.in_flight[address] >= self.limit:
            busy = JSONResponse({"detail": f"your address has {self.limit} requests being answered already: wait "
                                           "for their answers (a request goes on after its client hangs up)"},
                                status_code=503, headers={"Retry-After": "1"})
            await busy(scope, receive, send)
            return
        self.in_flight[address] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[address] -= 1
            if not self.in_flight[address]:
                del self.in_flight[address]
