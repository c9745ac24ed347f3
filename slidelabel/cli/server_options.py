"""Options that ``serve`` and ``worker`` share: where the data, database and broker are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from slidelabel.settings import Settings


def server_options(command: Callable) -> Callable:
    """Add ``--data-dir``, ``--db`` and ``--broker`` (each overriding its ``SLIDELABEL_*``)."""
    for option in reversed((
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder of slidelabel's files [env SLIDELABEL_DATA_DIR; default ~/.local/share/slidelabel]."),
        click.option("--db", default=None, help="Database URL, e.g. postgresql://host/slidelabel [env SLIDELABEL_DB; default SQLite in the data folder]."),
        click.option("--broker", default=None, help="Celery broker URL, e.g. redis://host:6379/0 [env SLIDELABEL_BROKER; default SQLite in the data folder]."),
    )):
        command = option(command)
    return command


#: The ports a server may listen on (0, "any free port", would make the address it prints wrong).
PORTS = click.IntRange(1, 65535)


def check_listen_address(settings: Settings) -> None:
    """:class:`click.UsageError` unless a socket can listen on ``settings.host``:``settings.port``
    (a port out of range, a host that does not resolve or is not this machine's, a port in use or
    kept for root), tried and closed at once. Called before a server makes its data folder and
    admin user (sixteenth attack: ``--port 99999`` was a traceback from ``bind()`` after both)."""
    import socket

    host, port = settings.host, settings.port
    problem = None if PORTS.min <= port <= PORTS.max else f"the port must be {PORTS.min} to {PORTS.max}"
    if problem is None:
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as trial:
                trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's socket: a port
                trial.bind((host, port))                                       # in TIME_WAIT is free
        except (OSError, OverflowError, ValueError, TypeError) as error:  # gaierror is an OSError
            problem = getattr(error, "strerror", None) or str(error)
    if problem:
        raise click.UsageError(f"cannot listen on {host}:{port} ({problem}); give another --host or --port "
                               "(SLIDELABEL_HOST, SLIDELABEL_PORT)")


def settings_from(**overrides: object) -> Settings:
    """Settings from the environment with the given non-None command-line values on top."""
    chosen = {key: value for key, value in overrides.items() if value is not None and value != ()}
    return Settings(**chosen)


def settings_environment(settings: Settings) -> dict[str, str]:
    """``SLIDELABEL_*`` variables that give a child process the same settings: every field with a
    value (text as it is, other values as JSON, which ``Settings`` reads back), and the database and
    broker URLs that the defaults resolve to."""
    import json

    values = settings.model_dump(mode="json", exclude_none=True)
    environment = {f"SLIDELABEL_{name.upper()}": value if isinstance(value, str) else json.dumps(value)
                   for name, value in values.items()}
    return {**environment, "SLIDELABEL_DB": settings.database_url, "SLIDELABEL_BROKER": settings.broker_url}
