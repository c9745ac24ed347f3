"""For tests whose code under test might open a FIFO named like a slide and wait there for a
writer: run it in a thread and fail, instead of hanging, when it waits."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

#: Seconds a call may take before it counts as waiting on the FIFO.
BLOCKED_S = 30

T = TypeVar("T")


def release(fifo: Path) -> None:
    """Let readers waiting on ``fifo`` go: open its other end (refused when none waits)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def within(call: Callable[[], T], fifo: Path, failure: str, seconds: float = BLOCKED_S) -> T:
    """``call()``'s result, or its error raised here; when it takes over ``seconds``, its
    readers of ``fifo`` are released and the test fails with ``failure``."""
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = call()
        except Exception as error:  # noqa: BLE001 - raised again in the test's thread
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        release(fifo)
        thread.join(seconds)
        pytest.fail(failure)
    if "error" in result:
        raise result["error"]
    return result["value"]
