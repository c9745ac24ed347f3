"""``slidelabel serve``: the API (and web client), with an embedded worker unless a broker is given."""

from __future__ import annotations

import asyncio
import copy
import ctypes
import functools
import logging
import multiprocessing
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from slidelabel.cli.errors import user_errors
from slidelabel.cli.server_options import (
    PORTS,
    check_listen_address,
    server_options,
    settings_environment,
    settings_from,
)
from slidelabel.services.jobs import QUEUES
from slidelabel.settings import Settings

if TYPE_CHECKING:
    import uvicorn

#: prctl option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: Seconds a stopping server waits for open requests before ending them: a client that never
#: finishes (a slow upload) must not keep SIGTERM from stopping the server.
GRACEFUL_SHUTDOWN_S = 10
#: Niceness of the embedded workers: on the cores they share with the API, a labeller's tile or
#: queue request is answered first and jobs take the time it leaves.
WORKER_NICENESS = 10
#: Exit status of a server that did not start (uvicorn's).
STARTUP_FAILURE = 3


def _run_embedded_worker(settings: Settings, queue: str) -> None:
    """In a forked child: a process group of its own (ended whole, pool processes included), a
    lower priority (:data:`WORKER_NICENESS`), SIGTERM when the server process ends however it ends
    (uvicorn re-raises the signal that stopped it, which skips Python's clean-up), then the worker."""
    from celery.platforms import SecurityWarning

    from slidelabel.workers.app import run_worker

    os.setpgid(0, 0)
    os.nice(WORKER_NICENESS)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the finally clause of embedded_workers is the only clean-up
        pass
    # Celery's advice against running as root, once per worker: serve says it once itself.
    warnings.filterwarnings("ignore", category=SecurityWarning)
    run_worker(settings, queue, loglevel="warning", quiet=True)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


class EmbeddedWorkers:
    """The embedded worker processes; :meth:`stop` begins their stop (SIGTERM: Celery finishes the
    running job) the moment the server is told to stop, so that their grace runs alongside the
    API's wait for open requests, not after it (10 s, then 7-8 s more: 18.5 s for a stop the docs
    gave 10 s, sixteenth attack)."""

    def __init__(self, processes: list[multiprocessing.Process]) -> None:
        self.processes = processes
        self.deadline: float | None = None
        """When the workers' grace ends (monotonic s); None until :meth:`stop`."""

    def stop(self) -> None:
        """SIGTERM to each worker, once; safe in a signal handler."""
        if self.deadline is None:
            self.deadline = time.monotonic() + GRACEFUL_SHUTDOWN_S
            for process in self.processes:
                process.terminate()

    def reap(self) -> None:
        """:meth:`stop`, wait for the workers until :attr:`deadline`, then SIGKILL each worker's
        process group (its pool processes too) and reap it."""
        self.stop()
        for process in self.processes:
            process.join(timeout=max(self.deadline - time.monotonic(), 0))
            with suppress(ProcessLookupError):  # the group ended with its last process
                os.killpg(process.pid, signal.SIGKILL)
            process.join()


@contextmanager
def embedded_workers(settings: Settings) -> Iterator[EmbeddedWorkers]:
    """One worker per queue (a retrain never waits behind slide jobs), forked from this process
    after it has imported the job modules: the API, both workers and their pool processes share
    one copy of those modules' memory instead of three. On the way out (or from
    :meth:`EmbeddedWorkers.stop`, earlier) each worker gets SIGTERM (Celery finishes the running
    job) and :data:`GRACEFUL_SHUTDOWN_S`, then its whole process group SIGKILL: a job cut off runs
    again at the next start."""
    from slidelabel.workers.app import preload_jobs

    preload_jobs()
    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=_run_embedded_worker, args=(settings, queue), name=f"slidelabel worker {queue}")
               for queue in QUEUES]
    for process in workers:
        process.start()
        with suppress(OSError):  # set here too, so a SIGKILL of the group cannot miss a child not yet set up
            os.setpgid(process.pid, process.pid)
    embedded = EmbeddedWorkers(workers)
    try:
        yield embedded
    finally:
        embedded.reap()


class CutOffAtStop(logging.Filter):
    """uvicorn's log of a stop that ends requests still open after :data:`GRACEFUL_SHUTDOWN_S`:
    one line saying how many were cut off, not a traceback of each request's cancellation (about
    100 lines per export download held open)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            return False
        if isinstance(record.msg, str) and record.msg.startswith("Cancel %s running task(s)"):
            record.msg = f"stopping: %s request(s) still open after {GRACEFUL_SHUTDOWN_S} s were cut off"
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def log_config() -> dict:
    """uvicorn's logging configuration with :class:`CutOffAtStop` on its handlers (a dictionary:
    each API process configures its own logging from it)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["cut_off_at_stop"] = {"()": CutOffAtStop}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("cut_off_at_stop")
    return config


def run_server(config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
    """``uvicorn.run`` of ``config`` that calls ``on_stop`` as soon as a signal tells the server to
    stop (before uvicorn's wait for open requests): in the one API process's signal handler, or
    in the supervisor of several."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            on_stop()
            super().handle_exit(sig, frame)

    class Supervisor(Multiprocess):
        def handle_term(self) -> None:
            on_stop()
            super().handle_term()

        def handle_int(self) -> None:
            on_stop()
            super().handle_int()

    # uvicorn stops on SIGTERM, then raises it again with this handler in place: an exception, so
    # that the caller's clean-up (workers, export folders) runs rather than the process dying
    # around it.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if config.workers > 1:
        Supervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = Server(config)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def bounded_connections(settings: Settings) -> dict[str, object]:
    """uvicorn's options for connections within the settings' limits (a head timeout, a body
    timeout, bounds per client address and in all, failed accepts logged once a minute), after
    raising this process's soft open-file limit to its hard limit (the API processes and workers
    inherit it)."""
    from slidelabel.server.http_protocol import (
        BoundedH11Protocol,
        ConnectionLimits,
        OpenConnections,
        new_event_loop,
        raise_open_file_limit,
    )

    limits = ConnectionLimits.within(
        open_files=raise_open_file_limit(), head_timeout_s=settings.request_head_timeout_s,
        body_timeout_s=settings.request_body_timeout_s, per_address=settings.max_connections_per_address,
        total=settings.max_connections)
    # No WebSockets (no route takes one): uvicorn hands an upgraded connection to a protocol that
    # gives back none of the bounds' counts, so 100 upgrade requests locked an address out.
    return {"http": functools.partial(BoundedH11Protocol, limits=limits, connections=OpenConnections()),
            "loop": new_event_loop, "backlog": limits.backlog, "ws": "none",
            "proxy_headers": bool(settings.forwarded_allow_ips), "forwarded_allow_ips": settings.forwarded_allow_ips}


@click.command("serve")
@server_options
@click.option("--host", default=None, help="Address to listen on [env SLIDELABEL_HOST; default 127.0.0.1].")
@click.option("--port", type=PORTS, default=None, help="Port [env SLIDELABEL_PORT; default 8000].")
@click.option("--slide-folder", "slide_folders", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A server folder projects may add slides from (repeatable) [env SLIDELABEL_SLIDE_FOLDERS].")
@click.option("--demo", is_flag=True, help="Create a demo project on a real sample slide.")
@click.option("--http-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="API processes; more use more cores for tiles and exports (each holds its own caches).")
@user_errors
def serve(demo: bool, http_workers: int, **options: object) -> None:
    """Serve the API at http://HOST:PORT/api/v1 (docs at /docs) with a local job worker."""
    import uvicorn

    from slidelabel.server.app import create_app
    from slidelabel.services.accounts import ensure_admin
    from slidelabel.services.uploads import sweep_unfinished_uploads
    from slidelabel.store.export_folders import sweep_export_folders

    settings = settings_from(**options)
    check_listen_address(settings)  # before the data folder and the admin user are made
    if demo:
        from slidelabel.services.demo_project import create_demo_project, demo_settings

        settings = demo_settings(settings)
    app = create_app(settings)
    with app.state.database.session(write=True) as session:
        password = ensure_admin(session, settings.admin_password)
    if password:
        click.echo(f"created the user 'admin' with password {password} (shown once; set SLIDELABEL_ADMIN_PASSWORD to choose it)")
    if demo:
        made = create_demo_project(app.state.database, app.state.celery, settings)
        click.echo(f"demo project {made.project_id} is being prepared; log in as {made.username} / {made.password}")
    app.state.database.dispose()
    if leftovers := sweep_unfinished_uploads(settings.data_dir):
        click.echo(f"removed {len(leftovers)} unfinished upload(s) that a stopped server left")
    if leftovers := sweep_export_folders(settings.data_dir):
        click.echo(f"removed {len(leftovers)} export folder(s) that a stopped server left")
    click.echo(f"slidelabel at http://{settings.host}:{settings.port}/ (API docs at /docs), data in {settings.data_dir}")
    if os.geteuid() == 0:
        click.echo("note: running as root; a server that reads slide folders is safer as a user of its own")
    # The API processes build their app from the environment: the same settings as here.
    os.environ.update(settings_environment(settings))
    config = uvicorn.Config("slidelabel.server.app:app_from_environment", factory=True, host=settings.host,
                            port=settings.port, workers=http_workers, log_level="warning", log_config=log_config(),
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **bounded_connections(settings))
    try:
        if settings.embedded_broker:
            with embedded_workers(settings) as workers:
                run_server(config, on_stop=workers.stop)
        else:
            click.echo("jobs go to the broker: start workers with 'slidelabel worker'")
            run_server(config, on_stop=lambda: None)
    finally:  # those of requests cut off, or of a killed API process; another server's in progress stay
        sweep_unfinished_uploads(settings.data_dir)
        sweep_export_folders(settings.data_dir)
