"""``slidelabel worker``: a Celery worker that runs slidelabel's jobs."""

from __future__ import annotations

import click

from slidelabel.cli.errors import user_errors
from slidelabel.cli.server_options import server_options, settings_from
from slidelabel.services.jobs import EPOCH_QUEUE, SLIDE_QUEUE


@click.command("worker")
@server_options
@click.option("--queues", default=f"{SLIDE_QUEUE},{EPOCH_QUEUE}", show_default=True,
              help=f"Queues to take jobs from: {SLIDE_QUEUE} (superpixels, features) and {EPOCH_QUEUE} (training).")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True, help="Jobs run at once.")
@click.option("--hostname", default=None,
              help="This worker's name (Celery's %h is the machine's name); default celery@MACHINE. Give each worker "
                   "of a machine its own; job logs say which worker ran them.")
@click.option("--loglevel", default="info", show_default=True)
@click.option("--quiet", is_flag=True, help="No start-up banner.")
@user_errors
def worker(queues: str, concurrency: int, hostname: str | None, loglevel: str, quiet: bool,
           **options: object) -> None:
    """Run jobs from the broker until stopped (Ctrl-C finishes the running job first)."""
    from slidelabel.workers.app import run_worker

    run_worker(settings_from(**options), queues, concurrency, hostname, loglevel, quiet)
