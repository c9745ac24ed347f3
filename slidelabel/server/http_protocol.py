"""The HTTP protocol and event loop ``slidelabel serve`` runs uvicorn with: bounds on slow, idle and
numerous connections, for a server often reached without a reverse proxy in front.

uvicorn alone waits forever for a request's head and for a body that stopped arriving, and accepts
connections until the process runs out of file descriptors; asyncio then logs a traceback for each
failed ``accept()``, thousands of lines a second (two clients holding 10,000 half-sent heads each
left other users unanswered and wrote 108 MB of log in 40 s). Here, in each API process:

- a request's head must arrive within ``head_timeout_s`` of the connection (or of its first byte on
  a kept-alive one): then 408 if part of it came, a plain close if nothing did;
- a request body that stops arriving for ``body_timeout_s`` while the server is reading it ends the
  connection (the route sees a client disconnect), and so does one that arrives slower than
  :data:`MIN_BODY_BYTES_PER_S`: each ``body_timeout_s`` of it (the first from the end of the head)
  must bring that many times as many bytes. Time when the route is not reading (uvicorn paused
  reading, or a client waits for ``100 Continue``) does not count;
- one client address holds at most ``per_address`` connections: past that a new one is answered
  503 and closed at once, costing nothing more;
- at ``total`` connections a new one takes the place of a connection whose address holds more
  connections than the new one's (so that a few addresses renewing their connections cannot keep
  others out): of the one that has waited longest for a request's head (half-sent or idle), which
  is closed; with none such, of the connection whose body has come slowest (bytes per second since
  it began, as ranked at most once per :data:`BODY_RANKING_INTERVAL_S`) among those the route is
  reading that have been in their body for :data:`BODY_RANKING_MIN_AGE_S` (or ``body_timeout_s``
  if shorter) at least; with none such either it is refused as above;
- a client that sends more than :data:`MAX_PIPELINED_BYTES` ahead of the answer to its request
  (pipelined while a route waits, listening for a disconnect) is closed;
- refused connections, failed accepts and uvicorn's per-request warnings are logged as at most one
  line per :data:`LOG_SUMMARY_INTERVAL_S`, saying how many there were.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import resource
from collections import Counter
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: At most one log line per this many seconds for each kind of repeated event (s).
LOG_SUMMARY_INTERVAL_S = 60.0
#: Most connections the kernel queues for ``accept()`` (uvicorn's ``backlog``): asyncio accepts as
#: many at once before any of them reaches the protocol, so as many descriptors are kept free.
ACCEPT_BACKLOG = 512
#: Share of the open-file limit kept for what is not a connection: the database, slide files,
#: uploads, pipes to the workers.
FILE_RESERVE_SHARE = 0.25
#: ``accept()`` failures for want of descriptors or memory (asyncio retries them a second later).
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Slowest average a request body may arrive at while the route reads it (bytes/s), checked over
#: each ``body_timeout_s`` window (60 KiB per default 60 s window). 1/64 of a poor 64 KB/s uplink,
#: so an honest upload over one is cut only if it brings under 2% of its rate for a whole window;
#: a client dripping a few bytes per window is closed after the first.
MIN_BODY_BYTES_PER_S = 1024
#: At the total bound, connections in their body are ranked by speed at most this often (s), so
#: that a flood of new connections costs one sort a second, not one scan each.
BODY_RANKING_INTERVAL_S = 1.0
#: A body may make room at the total bound once it has been arriving this long (s; or for
#: ``body_timeout_s`` if shorter): its rate is then measured over enough time that an honest upload
#: (128 KB in 2 s at 64 KB/s) ranks far above a drip. The twenty-fourth attack: bodies of 1 byte
#: held 50 s of a 60 s window, then reconnected, were never ranked, and at 400 connections another
#: user's ``/auth/me`` got 503 on 63 of 73 tries.
BODY_RANKING_MIN_AGE_S = 2.0
#: Most bytes a client may send ahead of the answer to its request (bytes): past that the
#: connection is closed. A route that listens for a disconnect while its answer is pending resumes
#: reading, and h11, paused on the pipelined next request, keeps all that comes; browsers do not
#: pipeline, and a pipelined head is at most h11's 16 KiB. The twenty-fourth attack: 12 connections
#: pipelining behind renders waiting for their turn took the server from 0.95 to 3.49 GB in 30 s.
MAX_PIPELINED_BYTES = 64 * 1024

logger = logging.getLogger("uvicorn.error")


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (children inherit it);
    return the soft limit now in force. The usual soft default, 1,024, is reached by that many
    open connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):  # e.g. above the kernel's nr_open: keep what there is
        return soft
    return target


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on one API process's connections (see the module's docstring)."""

    head_timeout_s: float
    body_timeout_s: float
    per_address: int
    """0: no bound per address."""
    total: int
    backlog: int = ACCEPT_BACKLOG
    min_body_bytes_per_s: float = MIN_BODY_BYTES_PER_S

    @classmethod
    def within(cls, *, open_files: int, head_timeout_s: float, body_timeout_s: float, per_address: int,
               total: int) -> ConnectionLimits:
        """These limits, with ``total`` lowered (and the accept backlog with a small ``open_files``)
        to leave :data:`FILE_RESERVE_SHARE` of ``open_files`` to files and the backlog's descriptors
        to connections being accepted, so that connections never take the last descriptor."""
        reserve = int(open_files * FILE_RESERVE_SHARE)
        backlog = max(min(ACCEPT_BACKLOG, reserve), 1)
        return cls(head_timeout_s=head_timeout_s, body_timeout_s=body_timeout_s, per_address=per_address,
                   total=max(min(total, open_files - reserve - backlog), 1), backlog=backlog)


class SummarisedLog:
    """One kind of repeated event, logged at most once per ``interval_s``: the first at once, the
    following ones counted and reported in one line when the interval ends."""

    def __init__(self, message: str, *, interval_s: float = LOG_SUMMARY_INTERVAL_S) -> None:
        self.message = message
        self.interval_s = interval_s
        self.count = 0
        self.latest = ""
        self.logged_at = -math.inf
        self.report: asyncio.TimerHandle | None = None

    def event(self, loop: asyncio.AbstractEventLoop, detail: str) -> None:
        now = loop.time()
        if self.report is None and now - self.logged_at >= self.interval_s:
            logger.warning("%s: %s", self.message, detail)
            self.logged_at = now
            return
        self.count += 1
        self.latest = detail
        if self.report is None:
            self.report = loop.call_at(self.logged_at + self.interval_s, self._report, loop)

    def _report(self, loop: asyncio.AbstractEventLoop) -> None:
        logger.warning("%s: %d more in the last %.0f s, the latest: %s", self.message, self.count,
                       self.interval_s, self.latest)
        self.count, self.report, self.logged_at = 0, None, loop.time()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's event loop (``uvicorn.run(loop=new_event_loop)``), whose errors for want of
    descriptors or memory (a failed ``accept()``) are summarised rather than logged one by one."""
    loop = asyncio.new_event_loop()
    out_of_resources = SummarisedLog("could not accept connections (out of file descriptors or memory)")

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in RESOURCE_ERRNOS:
            out_of_resources.event(loop, f"{context.get('message', 'event loop')}: {error.strerror}")
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    return loop


class OpenConnections:
    """One API process's connections, as the protocol instances of :class:`BoundedH11Protocol`
    count them (uvicorn's ``server_state.connections`` holds them all)."""

    def __init__(self) -> None:
        self.per_address: Counter[str] = Counter()
        self.waiting: dict[BoundedH11Protocol, None] = {}
        """Connections waiting for a request's head (half-sent or idle), longest waiting first."""
        self.in_body: dict[BoundedH11Protocol, None] = {}
        """Connections whose request body is arriving."""
        self.slowest_bodies: list[BoundedH11Protocol] = []
        """Of :attr:`in_body`, those that may make room, as last ranked: the slowest last."""
        self.ranked_at = -math.inf
        self.refused = SummarisedLog("refused connections over the limits (SLIDELABEL_MAX_CONNECTIONS*)")
        self.pipelined = SummarisedLog(f"closed connections that sent over {MAX_PIPELINED_BYTES} bytes ahead of "
                                       "an answer")
        self.made_room = SummarisedLog("at SLIDELABEL_MAX_CONNECTIONS: closed a connection waiting for a request "
                                       "head, or with the slowest body, to make room")
        self.warnings: dict[str, SummarisedLog] = {}

    def __getstate__(self) -> dict[str, Any]:  # an API process started by --http-workers counts its own
        return {}

    def __setstate__(self, _state: dict[str, Any]) -> None:
        self.__init__()


_STATUS = {408: b"408 Request Timeout", 503: b"503 Service Unavailable"}


def _plain_response(status: int, text: str) -> bytes:
    body = text.encode()
    return (b"HTTP/1.1 " + _STATUS[status] + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class _SummarisedWarnings:
    """A connection's logger whose warnings (one per bad request: "Invalid HTTP request received.")
    are summarised per message; everything else goes to the logger as it is."""

    def __init__(self, wrapped: logging.Logger, connections: OpenConnections, loop: asyncio.AbstractEventLoop) -> None:
        self._wrapped, self._connections, self._loop = wrapped, connections, loop

    def warning(self, message: str, *args: object) -> None:
        summary = self._connections.warnings.setdefault(message, SummarisedLog("uvicorn"))
        summary.event(self._loop, message % args if args else message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol within :class:`ConnectionLimits`; ``serve`` passes it as
    ``uvicorn.run(http=functools.partial(BoundedH11Protocol, limits=..., connections=OpenConnections()))``."""

    def __init__(self, *args: Any, limits: ConnectionLimits, connections: OpenConnections, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.open_connections = connections
        self.logger = _SummarisedWarnings(self.logger, connections, self.loop)  # type: ignore[assignment]
        self.address: str | None = None
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_data_at = 0.0
        """When the last bytes of a request body came (loop time, s)."""
        self.received = 0
        """Bytes received on this connection."""
        self.body_began_at = 0.0
        self.body_began_with = 0
        """When the request body being received began (loop time, s), and :attr:`received` then."""
        self.window_at = 0.0
        self.window_began_with = 0
        """The same for the body's current ``body_timeout_s`` window."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        if (self.limits.per_address and address is not None
                and self.open_connections.per_address[address] >= self.limits.per_address):
            self._refuse(f"{address} already holds {self.limits.per_address} connections")
            return
        if len(self.connections) > self.limits.total and not self._make_room():
            self._refuse(f"{self.limits.total} connections are open, none of them idle or with a slow body")
            return
        if address is not None:
            self.address = address
            self.open_connections.per_address[address] += 1
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        if self.address is not None:
            counts = self.open_connections.per_address
            counts[self.address] -= 1
            if counts[self.address] <= 0:
                del counts[self.address]
            self.address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # refused or timed out: what else it sends is not read
            return
        if self.head_timer is None and self.conn.their_state is h11.IDLE:
            self._wait_for_head()  # the first byte of a kept-alive connection's next request
        before = self.received  # a body's first window counts the bytes that ended its head
        self.received += len(data)
        super().data_received(data)
        if self._pipelined_too_much():
            return
        self.body_data_at = self.loop.time()
        self._follow_request(before)

    def _pipelined_too_much(self) -> bool:
        """Close the connection if its request is all in and h11 holds over :data:`MAX_PIPELINED_BYTES`
        received after it, waiting for the answer (see the module's docstring)."""
        if self.conn.their_state not in (h11.DONE, h11.MUST_CLOSE) or self.transport.is_closing():
            return False
        held = len(self.conn.trailing_data[0])
        if held <= MAX_PIPELINED_BYTES:
            return False
        self._stop_timers()
        self.transport.close()
        self.open_connections.pipelined.event(self.loop, f"{held} bytes from {self.address}")
        return True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE and self.head_timer is None:
            self.open_connections.waiting[self] = None  # idle until uvicorn's keep-alive timeout
        else:
            self._follow_request(self.received)  # a pipelined request, read from what was received

    def _follow_request(self, received_before: int) -> None:
        """After received bytes: stop the head's timer once the head is in; time the body while it
        is arriving (one timer per stall or window, not one per chunk of an upload)."""
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._stop_head_timer()
        if state is not h11.SEND_BODY or self.transport.is_closing():
            self._end_body()
        elif self not in self.open_connections.in_body:
            now = self.body_began_at = self.window_at = self.loop.time()
            self.body_began_with = self.window_began_with = received_before
            self.body_data_at = now
            self.open_connections.in_body[self] = None
            if self.body_timer is not None:
                self.body_timer.cancel()
            self.body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)

    def _end_body(self) -> None:
        self.open_connections.in_body.pop(self, None)
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def _route_not_reading(self) -> bool:
        return self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue)

    def _wait_for_head(self) -> None:
        self._stop_head_timer()
        self.open_connections.waiting[self] = None
        self.head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        self.open_connections.waiting.pop(self, None)
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _stop_timers(self) -> None:
        self._stop_head_timer()
        self._end_body()

    def _head_timed_out(self) -> None:
        self.head_timer = None
        self._close_waiting(f"no complete request head within {self.limits.head_timeout_s:g} s")

    def _close_waiting(self, reason: str) -> None:
        """Close a connection waiting for a request's head: 408 if part of one came."""
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:
            self.transport.write(_plain_response(408, reason))
        self.transport.close()

    def _body_timed_out(self) -> None:
        """At the end of a stall or of a window: close a body that stalled for ``body_timeout_s`` or
        whose window brought too few bytes."""
        self.body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            self._end_body()
            return
        now, window_s = self.loop.time(), self.limits.body_timeout_s
        if self._route_not_reading():  # the client is not late: its stall and window start again
            self.body_data_at = self.window_at = now
            self.window_began_with = self.received
        if now - self.body_data_at >= window_s:
            self.transport.close()
            return
        if now - self.window_at >= window_s:
            if self.received - self.window_began_with < self.limits.min_body_bytes_per_s * window_s:
                self.transport.close()
                return
            self.window_at, self.window_began_with = now, self.received
        self.body_timer = self.loop.call_at(min(self.body_data_at, self.window_at) + window_s, self._body_timed_out)

    def _body_rate(self, now: float) -> float:
        """Bytes per second since this connection's body began."""
        return (self.received - self.body_began_with) / max(now - self.body_began_at, 1e-9)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request's head, else the one whose
        body has come slowest (see the module's docstring); False if there is none."""
        connections = self.open_connections
        for protocol in connections.waiting:
            if protocol is not self and self._holds_fewer_than(protocol):
                protocol._close_waiting("the server is at its connection limit")
                connections.made_room.event(self.loop, f"one from {protocol.address}")
                return True
        now = self.loop.time()
        if now - connections.ranked_at >= BODY_RANKING_INTERVAL_S:
            connections.ranked_at = now
            min_age_s = min(BODY_RANKING_MIN_AGE_S, self.limits.body_timeout_s)
            measured = [protocol for protocol in connections.in_body if now - protocol.body_began_at >= min_age_s]
            connections.slowest_bodies = sorted(measured, key=lambda protocol: protocol._body_rate(now), reverse=True)
        for index in range(len(connections.slowest_bodies) - 1, -1, -1):
            protocol = connections.slowest_bodies[index]
            if (protocol is self or protocol not in connections.in_body or protocol.transport.is_closing()
                    or protocol._route_not_reading()):
                del connections.slowest_bodies[index]
                continue
            if not self._holds_fewer_than(protocol):
                continue
            del connections.slowest_bodies[index]
            rate = protocol._body_rate(now)
            protocol._end_body()
            protocol.transport.close()
            connections.made_room.event(self.loop, f"one from {protocol.address} whose body came at {rate:.0f} B/s")
            return True
        return False

    def _holds_fewer_than(self, other: BoundedH11Protocol) -> bool:
        """Whether this new connection's address holds fewer connections than ``other``'s, whose place
        it may then take at the total bound. The twenty-fourth attack: 3 addresses renewing 75 bodies
        at a bound of 60 took the room each one made, and another user's ``/auth/me`` got 503 on 20 of 20."""
        counts = self.open_connections.per_address
        return other.address is None or counts[other.address] > (counts[self.client[0]] if self.client else 0)

    def _refuse(self, reason: str) -> None:
        self.open_connections.refused.event(self.loop, reason)
        self.transport.write(_plain_response(503, "Too many open connections: close some, or try again later.\n"))
        self.transport.close()
