"""The route class of every router: a sync route's sessions commit in the route's own thread.

A write session's transaction, and on SQLite the process's write turn, begins at its first
statement in the thread that runs the route (:mod:`slidelabel.store.database`). FastAPI checks a
sync route's answer in another request thread before the dependencies end, so a session committed
there would hold the turn while needing a second thread: with all 40 request threads waiting for
the turn, its holder never got one, and the server froze until the waits gave up (the seventh
attack: 60 concurrent label writes of one annotator, 30 s and 26 answers 500). Committing when the
route returns, in its own thread, releases the turn with no other thread needed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy.orm import Session


class CommitInRouteThread(APIRoute):
    """An :class:`APIRoute` whose sync endpoint commits its session arguments as it returns (a
    read session's commit only ends its read transaction). An error skips the commits: the
    dependencies then roll back."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _committing(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _committing(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)  # keeps the signature FastAPI reads the dependencies from
    def run(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        for value in kwargs.values():
            if isinstance(value, Session):
                value.commit()
        return result

    return run
