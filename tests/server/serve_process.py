"""A real ``slidelabel serve`` started by a test: waiting until it answers, and ending it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def wait_until_serving(log_in: Callable[[], httpx.Response], process: subprocess.Popen, log: Path) -> None:
    """Return once ``log_in()`` answers 200 (up to 2 minutes); fail with the server's log when
    the server ends first."""
    for _ in range(240):
        try:
            if log_in().status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, log.read_text()
        time.sleep(0.5)
    raise AssertionError(f"the server did not answer within 2 minutes:\n{log.read_text()[-4000:]}")


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to the server's process group (its workers too), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
