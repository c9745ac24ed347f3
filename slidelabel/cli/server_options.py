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
