"""Turns at heavy work in an API process: at most so many requests build an export, check a
password or compute a Segment Anything embedding at once, and one that waits too long for its
turn is answered busy (503).

Waiters stand in one line per holder (a user, a client address, a gallery link), and a free turn
goes to the holders in turn: the holder that has waited longest since its last turn first, its
waiters in the order they came. So a holder with many waiting requests gets one turn in each
round, like everyone else, instead of most of them (the sixteenth attack: with free turns going
to whoever looked first, two addresses with ten logins each kept a third client's login waiting
9 s at the median, and two viewers with eight exports each made a third's wait 10 s and fail).

A route waits with :meth:`Turns.waiting` on the event loop, not in one of the API's 40 request
threads: sixty parallel exports waiting in threads kept every other request of every user
waiting for a thread (the sixth attack: about 10 s)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager

from slidelabel.errors import BusyError, ClientGoneError

__all__ = ["Turns"]

#: Seconds between a waiter's looks for its turn.
POLL_S = 0.02
#: Requests of one holder that may wait for a turn at once; more are answered busy at once. One
#: viewer's token sent from 200 addresses kept thousands of exports waiting, each looking for its
#: turn every :data:`POLL_S`: another user's requests waited 22 s, its tiles 54 s (the
#: nineteenth attack).
WAITING_PER_HOLDER = 16


class _Anyone:
    """The holder of a request that names none: a line of its own."""


class Turns:
    """At most ``value`` turns held at once in this process, and at most ``per_holder`` of them by
    one named holder: one viewer's parallel exports then wait for each other, not everyone
    else's; at most ``waiting_per_holder`` of its requests wait, the others are answered busy.
    Free turns go round the waiting holders (see the module's docstring)."""

    def __init__(self, value: int, per_holder: int | None = None, waiting_per_holder: int = WAITING_PER_HOLDER) -> None:
        self.value = value
        self.per_holder = per_holder
        self.waiting_per_holder = waiting_per_holder
        self._lock = threading.Lock()
        self._free = value
        self._held: dict[Hashable, int] = {}
        #: Waiting holders in the order they are served (the longest waiting first), each with its
        #: waiters' tickets in the order they came.
        self._line: dict[Hashable, deque[object]] = {}

    @contextmanager
    def hold(self, wait_s: float, busy: str, holder: Hashable | None = None) -> Iterator[None]:
        """Holds a turn while the block runs, waiting in this thread; :class:`BusyError` saying
        ``busy`` when none comes within ``wait_s`` seconds."""
        holder = _Anyone() if holder is None else holder
        with self._in_line(holder, busy) as ticket:
            deadline = time.monotonic() + wait_s
            while not self._taken_by(holder, ticket, deadline, busy):
                time.sleep(POLL_S)
        try:
            yield
        finally:
            self._give_back(holder)

    @asynccontextmanager
    async def waiting(self, wait_s: float, busy: str, holder: Hashable | None = None,
                      gone: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[None]:
        """:meth:`hold` for a coroutine: waits on the event loop, looking for its turn every
        :data:`POLL_S` seconds, so no thread is held while waiting. ``gone`` says whether the
        request's client has hung up: then it leaves the line (:class:`ClientGoneError`) before its
        turn, or with it before the work begins. Without it (a request whose body a route reads
        itself must not be asked) a request whose client has gone waits and runs all the same:
        what bounds those is the bound on an address's requests at once
        (``slidelabel/server/requests_per_address.py``)."""
        holder = _Anyone() if holder is None else holder
        with self._in_line(holder, busy) as ticket:
            deadline = time.monotonic() + wait_s
            while not self._taken_by(holder, ticket, deadline, busy):
                if gone is not None and await gone():
                    raise ClientGoneError("the client hung up while its request waited for its turn")
                await asyncio.sleep(POLL_S)
        if gone is not None and await gone():
            self._give_back(holder)
            raise ClientGoneError("the client hung up while its request waited for its turn")
        try:
            yield
        finally:
            self._give_back(holder)

    def take_now(self, holder: Hashable | None = None) -> bool:
        """Take a turn at once if one is free and no one is waiting ahead; True when taken (give
        it back with :meth:`give_back`)."""
        holder = _Anyone() if holder is None else holder
        try:
            with self._in_line(holder, "") as ticket:
                return self._take(holder, ticket)
        except BusyError:
            return False

    def give_back(self, holder: Hashable | None = None) -> None:
        """Give back a turn taken with :meth:`take_now` for ``holder`` (None: for no holder)."""
        if holder is None:
            with self._lock:
                holder = next(held for held in self._held if isinstance(held, _Anyone))
        self._give_back(holder)

    @contextmanager
    def _in_line(self, holder: Hashable, busy: str) -> Iterator[object]:
        """A ticket in ``holder``'s line, out of the line again at the end (after its turn, or
        giving up: waiting past its time, a cancelled request); :class:`BusyError` saying ``busy``
        when :attr:`waiting_per_holder` of its tickets wait already."""
        ticket = object()
        with self._lock:
            tickets = self._line.setdefault(holder, deque())
            if len(tickets) >= self.waiting_per_holder:
                raise BusyError(busy)
            tickets.append(ticket)
        try:
            yield ticket
        finally:
            with self._lock:
                tickets = self._line.get(holder)
                if tickets is not None and ticket in tickets:  # not served
                    tickets.remove(ticket)
                    if not tickets:
                        del self._line[holder]

    def _taken_by(self, holder: Hashable, ticket: object, deadline: float, busy: str) -> bool:
        """Whether the ticket got its turn now; :class:`BusyError` saying ``busy`` when not and
        the ``deadline`` (monotonic s) has passed."""
        if self._take(holder, ticket):
            return True
        if time.monotonic() >= deadline:
            raise BusyError(busy)
        return False

    def _may_hold_more(self, holder: Hashable) -> bool:
        return self.per_holder is None or self._held.get(holder, 0) < self.per_holder

    def _take(self, holder: Hashable, ticket: object) -> bool:
        """Whether the ticket got a turn: one is free and it is the first waiter of the first
        holder in line that may hold one more; that holder then goes to the line's end."""
        with self._lock:
            if self._free == 0:
                return False
            first = next((waiting for waiting in self._line if self._may_hold_more(waiting)), None)
            if first != holder or self._line[holder][0] is not ticket:
                return False
            tickets = self._line.pop(holder)
            tickets.popleft()
            if tickets:
                self._line[holder] = tickets  # the end of the line: the others' turn first
            self._free -= 1
            self._held[holder] = self._held.get(holder, 0) + 1
            return True

    def _give_back(self, holder: Hashable) -> None:
        with self._lock:
            left = self._held.pop(holder) - 1
            if left:
                self._held[holder] = left
            self._free += 1
