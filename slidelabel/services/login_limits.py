"""Login rate limits: failed logins counted per account and per client address.

The counts live in the memory of each API process (a server running N processes allows up to N
times the failures) and are bounded: at most :data:`MAX_TRACKED` accounts and as many addresses,
the oldest dropped first. Behind a reverse proxy the client address is the proxy's unless the
server is told to trust its forwarded headers (``uvicorn --forwarded-allow-ips``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from slidelabel.errors import TooManyAttemptsError
from slidelabel.settings import Settings

#: Most accounts (and most addresses) whose failures are remembered, about 200 bytes each.
MAX_TRACKED = 10_000
#: Longest account name kept as a key (longer ones cannot exist), so keys stay small.
MAX_NAME = 151


class LoginLimits:
    """Failures per key in a window that starts at a key's first failure.

    Parameters
    ----------
    max_failures : int
        Failures within the window after which :meth:`retry_after` says to wait.
    window_s : float
        How long a run of failures counts (s).
    max_keys : int
        Most keys remembered; the oldest runs are forgotten first.
    clock : callable
        Seconds of a monotonic clock.
    """

    def __init__(self, max_failures: int, window_s: float, max_keys: int = MAX_TRACKED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window_s, self.max_keys, self._clock = max_failures, window_s, max_keys, clock
        self._runs: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (first failure, count)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._runs)

    def _current(self, key: str, now: float) -> tuple[float, int] | None:
        run = self._runs.get(key)
        if run is not None and now - run[0] >= self.window_s:
            del self._runs[key]
            return None
        return run

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None when it may now."""
        with self._lock:
            now = self._clock()
            run = self._current(key, now)
            return run[0] + self.window_s - now if run and run[1] >= self.max_failures else None

    def failed(self, key: str) -> None:
        """Count a failure of ``key``."""
        with self._lock:
            now = self._clock()
            run = self._current(key, now)
            if run is not None:
                self._runs[key] = (run[0], run[1] + 1)
                return
            # Runs are kept in the order they began: expired ones are at the front.
            while self._runs and (len(self._runs) >= self.max_keys
                                  or now - next(iter(self._runs.values()))[0] >= self.window_s):
                self._runs.popitem(last=False)
            self._runs[key] = (now, 1)

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key``."""
        with self._lock:
            self._runs.pop(key, None)


@dataclass(frozen=True)
class LoginThrottle:
    """The limits of one API process: per account name and per client address."""

    accounts: LoginLimits
    addresses: LoginLimits

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginThrottle:
        window_s = settings.login_window_s
        return cls(LoginLimits(settings.login_failures_per_account, window_s),
                   LoginLimits(settings.login_failures_per_address, window_s))

    def check(self, username: str, address: str) -> None:
        """Raise :class:`TooManyAttemptsError` while the account or the address must wait."""
        waits = [wait for wait in (self.accounts.retry_after(_account(username)), self.addresses.retry_after(address))
                 if wait is not None]
        if waits:
            wait = max(waits)
            raise TooManyAttemptsError(f"too many failed logins from this account or address: try again in "
                                       f"{math.ceil(wait)} s", retry_after_s=wait)

    def failed(self, username: str, address: str) -> None:
        self.accounts.failed(_account(username))
        self.addresses.failed(address)

    def succeeded(self, username: str) -> None:
        """A successful login clears its account's failures (not its address's)."""
        self.accounts.succeeded(_account(username))


def _account(username: str) -> str:
    return username.strip()[:MAX_NAME]
