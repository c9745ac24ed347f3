"""The one exception hierarchy of slidelabel.

Every error a user can cause derives from :class:`SlidelabelError`; its message is written for the
user (what is wrong and what to do). The CLI maps these to exit codes in one place
(``slidelabel.cli.errors``); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class SlidelabelError(Exception):
    """Base of all user-facing errors; ``str(error)`` is the message to show."""


class ParameterError(SlidelabelError, ValueError):
    """An option or argument has a value slidelabel cannot use."""


class SlideError(SlidelabelError):
    """A slide cannot be used; ``path`` names the file."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class SlideNotFoundError(SlideError):
    """The slide file does not exist."""


class SlideUnreadableError(SlideError):
    """The file exists but is empty, truncated, not an image or in an unsupported format."""


class MissingMppError(SlideError):
    """The slide has no pixel size in its metadata and the operation needs one."""


class OutputError(SlidelabelError):
    """An output folder or file cannot be written or read back."""


class NotFoundError(SlidelabelError):
    """A project, slide, user or job does not exist, or the caller may not know it does."""


class PermissionDeniedError(SlidelabelError):
    """The caller is known but their role does not allow the action."""


class AuthenticationError(SlidelabelError):
    """No valid login: wrong password, or a missing or expired token."""


class ConflictError(SlidelabelError):
    """The request clashes with what exists (a taken name, a job already running)."""


class TooLargeError(SlidelabelError):
    """An upload is larger than the server accepts."""


class BusyError(SlidelabelError):
    """The server is too busy to take the request now; trying again later may succeed."""


class ClientGoneError(SlidelabelError):
    """The client hung up while its request waited for a turn at heavy work: the work is not done."""


class TooManyAttemptsError(SlidelabelError):
    """Too many failed attempts (logins) in a while; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class JobCancelled(SlidelabelError):
    """A running job stopped at its next progress report: it was cancelled, or it ran past its
    kind's time limit (then ``time_limit_s`` is that limit and the message names its setting)."""

    def __init__(self, message: str = "cancelled", *, time_limit_s: float | None = None) -> None:
        self.time_limit_s = time_limit_s
        super().__init__(message)
