"""Login rate limits: failed logins counted per account and client address together, per
account over all addresses, and per client address.

The first limit is low and locks only the pair: someone failing an account's logins from their
address does not lock out its owner at another. The second is high, a bound on guessing one
password from many addresses. The third bounds guessing many accounts' passwords from one address.

The counts live in the memory of each API process (a server running N processes allows up to N
times the failures) and are bounded: at most :data:`MAX_TRACKED` keys of each kind,
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
    """The limits of one API process: per account and address, per account, per address."""

    pairs: LoginLimits
    accounts: LoginLimits
    addresses: LoginLimits

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginThrottle:
        window_s = settings.login_window_s
        return cls(LoginLimits(settings.login_failures_per_account, window_s),
                   LoginLimits(settings.login_failures_per_account_all_addresses, window_s),
                   LoginLimits(settings.login_failures_per_address, window_s))

    def check(self, username: str, address: str) -> None:
        """Raise :class:`TooManyAttemptsError` while this account from this address must wait."""
        account = _account(username)
        waits = [wait for wait in (self.pairs.retry_after(_pair(account, address)), self.accounts.retry_after(account),
                                   self.addresses.retry_after(address))
                 if wait is not None]
        if waits:
            wait = max(waits)
            raise TooManyAttemptsError(f"too many failed logins to this account or from this address: try again in "
                                       f"{math.ceil(wait)} s", retry_after_s=wait)

    def failed(self, username: str, address: str) -> None:
        account = _account(username)
        self.pairs.failed(_pair(account, address))
        self.accounts.failed(account)
        self.addresses.failed(address)

    def succeeded(self, username: str, address: str) -> None:
        """A successful login clears the failures of its account from its address (not those from
        other addresses, nor its address's on other accounts)."""
        self.pairs.succeeded(_pair(_account(username), address))


def _account(username: str) -> str:
    return username.strip()[:MAX_NAME]


def _pair(account: str, address: str) -> str:
    return f"{address}\n{account}"
