"""Mapping of slidelabel errors to CLI messages and exit codes, in one place."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import click

from slidelabel.errors import ParameterError, SlideError, SlidelabelError, OutputError

#: Exit codes of the ``slidelabel`` command.
EXIT_OK = 0
EXIT_FAILED = 1  # some inputs failed, the others were processed
EXIT_USAGE = 2  # click's own code for bad usage; ParameterError uses it too
EXIT_SLIDE = 3
EXIT_OUTPUT = 4

F = TypeVar("F", bound=Callable[..., object])


def exit_code_for(error: SlidelabelError) -> int:
    """The exit code for a user-facing error."""
    if isinstance(error, ParameterError):
        return EXIT_USAGE
    if isinstance(error, SlideError):
        return EXIT_SLIDE
    if isinstance(error, OutputError):
        return EXIT_OUTPUT
    return EXIT_FAILED


def user_errors(command: F) -> F:
    """Turn a :class:`SlidelabelError` raised by ``command`` into a one-line message and exit code."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except SlidelabelError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(exit_code_for(error))

    return wrapper  # type: ignore[return-value]
